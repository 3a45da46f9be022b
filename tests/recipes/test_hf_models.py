"""Unmodified Hugging Face models (built from small configs, nothing downloaded): every GEMM reached.

The measurement is independent of lowp's coverage report: a TorchDispatchMode records every aten GEMM of one
forward+backward step (torch's FLOP formulas) and checks that its operands lie on the recipe's grid — BF16
values for ``bf16``; at most 256 distinct values per operand (one FP8 code set times one per-tensor scale) for
``fp8-hybrid``. Products with reduction length 1 (outer products such as Llama's rotary angles) are not GEMMs and
are left out, as lowp leaves them (documented in lowp/recipes/capture.py)."""
import copy

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import lowp
from lowp.recipes.coverage import gemm_flops

transformers = pytest.importorskip("transformers")
aten = torch.ops.aten

OPERANDS = {aten.mm: (0, 1), aten.bmm: (0, 1), aten.addmm: (1, 2), aten.baddbmm: (1, 2),
            aten.convolution: (0, 1), aten.convolution_backward: (0, 1, 2)}


def on_grid(recipe: str, t: torch.Tensor) -> bool:
    if recipe == "bf16":
        return bool((t.to(torch.bfloat16).float() == t).all())
    return t.unique().numel() <= 256


class GemmAudit(TorchDispatchMode):
    def __init__(self, recipe):
        super().__init__()
        self.recipe = recipe
        self.total = self.on = 0
        self.off = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        fl = gemm_flops(func, args, kwargs, out)
        if fl is None:
            return out
        pk = func._overloadpacket
        if pk in (aten.mm, aten.bmm) and args[0].shape[-1] == 1:
            return out  # outer product
        self.total += fl
        idx = OPERANDS.get(pk)
        ok = idx is not None and all(on_grid(self.recipe, args[i]) for i in idx if isinstance(args[i], torch.Tensor))
        if ok:
            self.on += fl
        else:
            self.off.append((str(pk), fl))
        return out


def _small(name, attn="sdpa"):
    T = transformers
    torch.manual_seed(0)
    if name == "gpt2":
        cfg = T.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=97, n_positions=32, bos_token_id=0,
                           eos_token_id=0)
        cfg._attn_implementation = attn
        m = T.GPT2LMHeadModel(cfg)
        ids = torch.randint(0, 97, (2, 12))
        mask = torch.ones(2, 12, dtype=torch.long)
        mask[1, :3] = 0  # left padding
        return m, dict(input_ids=ids, attention_mask=mask, labels=ids)
    if name == "llama":
        cfg = T.LlamaConfig(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                            num_key_value_heads=2, vocab_size=97, max_position_embeddings=32)
        cfg._attn_implementation = attn
        m = T.LlamaForCausalLM(cfg)
        ids = torch.randint(0, 97, (2, 12))
        return m, dict(input_ids=ids, labels=ids)
    if name == "bert":
        cfg = T.BertConfig(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                           vocab_size=97, max_position_embeddings=32)
        cfg._attn_implementation = attn
        m = T.BertForSequenceClassification(cfg)
        mask = torch.ones(2, 12, dtype=torch.long)
        mask[0, 9:] = 0  # right padding
        return m, dict(input_ids=torch.randint(0, 97, (2, 12)), attention_mask=mask, labels=torch.tensor([0, 1]))
    cfg = T.ViTConfig(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                      image_size=32, patch_size=8, num_labels=3)
    cfg._attn_implementation = attn
    m = T.ViTForImageClassification(cfg)
    return m, dict(pixel_values=torch.randn(2, 3, 32, 32), labels=torch.tensor([0, 2]))


MODELS = [("gpt2", "sdpa"), ("gpt2", "eager"), ("llama", "sdpa"), ("bert", "sdpa"), ("vit", "sdpa")]


@pytest.mark.parametrize("recipe", ["bf16", "fp8-hybrid"])
@pytest.mark.parametrize("name,attn", MODELS)
def test_every_gemm_flop_is_emulated(name, attn, recipe):
    model, batch = _small(name, attn)
    model.train()
    lowp.emulate(model, recipe)
    audit = GemmAudit(recipe)
    with audit:
        model(**batch).loss.backward()
    assert audit.total > 0
    assert audit.off == [], f"GEMMs off the {recipe} grid: {audit.off[:5]}"
    cov = lowp.coverage(model, **batch)
    assert cov.emulated_fraction == 1.0, cov.table()
    assert cov.measured_flops == audit.total  # lowp's own count of the same step agrees
    assert cov.total_flops == audit.total
    names = {r.name for r in cov.rows}
    if name == "gpt2":
        assert {"transformer.h.0.attn.c_attn", "lm_head"} <= names
        assert ("transformer.h.0.attn.sdpa.qk" in names) == (attn == "sdpa")


@pytest.mark.parametrize("name,attn", MODELS)
def test_plain_model_is_mostly_fp32_before_emulation(name, attn):
    """The audit is not vacuous: without lowp, the GEMM operands are not on the BF16 grid."""
    model, batch = _small(name, attn)
    audit = GemmAudit("bf16")
    with audit:
        model(**batch).loss.backward()
    assert audit.on < audit.total


@pytest.mark.parametrize("name,attn", MODELS)
def test_fp32_recipe_bit_identical(name, attn):
    plain, batch = _small(name, attn)
    emu = lowp.emulate(copy.deepcopy(plain), "fp32")
    res = []
    for m in (plain, emu):
        m.train()
        torch.manual_seed(123)  # same dropout masks
        out = m(**batch)
        out.loss.backward()
        res.append((out.logits.detach(), [p.grad for p in m.parameters()]))
    (a, ga), (b, gb) = res
    assert torch.equal(a, b)
    assert all(torch.equal(x, y) for x, y in zip(ga, gb))


def test_hf_gradient_checkpointing_is_emulated():
    model, batch = _small("gpt2")
    model.config.attn_pdrop = model.config.resid_pdrop = model.config.embd_pdrop = 0.0
    for mod in model.modules():
        if isinstance(mod, torch.nn.Dropout):
            mod.p = 0.0
    ck = copy.deepcopy(model)
    ck.gradient_checkpointing_enable()
    grads = []
    for m in (model, ck):
        m.train()
        lowp.emulate(m, "bf16")
        m(**batch).loss.backward()
        grads.append([p.grad for p in m.parameters()])
    assert all(torch.equal(x, y) for x, y in zip(*grads))
