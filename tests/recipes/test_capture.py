"""lowp.emulate reaches GEMM-like calls made anywhere in a model's code (lowp/recipes/capture.py).

Per captured op the oracle is the plain torch op applied to ``lowp.quantize``d operands, with each role rounded
where the recipe says (a small straight-through function written here: forward Q_fwd, backward Q_bwd), compared bit
for bit forward and backward."""
import copy
import gc

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

import lowp
from lowp.recipes import emulated_layers
from lowp.recipes.emulate import capture_state

ROLE_FMT = dict(input="e4m3", weight="e5m2", output="e3m4", grad_output="e5m2", grad_input="bf16",
                grad_weight="fp16")
ATT = "e4m3"


@pytest.fixture(autouse=True)
def _eager(monkeypatch):
    monkeypatch.setenv("LOWP_COMPILE", "0")


def recipe(attention=ATT, **kw):
    return lowp.Recipe(name="roles", attention=attention, **{**ROLE_FMT, **kw})


class RQ(torch.autograd.Function):
    """Oracle role rounding: forward lowp.quantize(x, f), backward lowp.quantize(g, b)."""

    @staticmethod
    def forward(ctx, x, f, b):
        ctx.b = b
        return lowp.quantize(x, f) if f else x.clone()

    @staticmethod
    def backward(ctx, g):
        return (lowp.quantize(g, ctx.b) if ctx.b else g), None, None


def rq(x, f, b):
    return RQ.apply(x, f, b)


def X(x):   # input operand
    return rq(x, ROLE_FMT["input"], ROLE_FMT["grad_input"])


def W(w):   # weight operand
    return rq(w, ROLE_FMT["weight"], ROLE_FMT["grad_weight"])


def A_in(x):  # attention, left operand
    return rq(x, ATT, ROLE_FMT["grad_input"])


def A_w(x):   # attention, right operand
    return rq(x, ATT, ROLE_FMT["grad_weight"])


def Y(y):
    return rq(y, ROLE_FMT["output"], ROLE_FMT["grad_output"])


def bits_equal(a, b):
    return a.shape == b.shape and torch.equal(torch.nan_to_num(a).view(torch.int32),
                                              torch.nan_to_num(b).view(torch.int32))


class MyLinear(nn.Linear):  # a user subclass: keeps its own forward, still captured
    def forward(self, x):
        return F.linear(x, self.weight, self.bias) * 1.0


class Conv1DHF(nn.Module):  # HF GPT-2 style: y = addmm(b, x, W) with W of shape (in, out)
    def __init__(self, i, o):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(i, o) * 0.2)
        self.bias = nn.Parameter(torch.randn(o) * 0.1)

    def forward(self, x):
        return torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight).reshape(*x.shape[:-1], -1)


class Func(nn.Module):
    """Calls ``fn(x, *params)``; params registered so they are weights."""

    def __init__(self, fn, *shapes):
        super().__init__()
        self.fn = fn
        self.ps = nn.ParameterList([nn.Parameter(torch.randn(*s) * 0.3) for s in shapes])

    def forward(self, *xs):
        return self.fn(*xs, *self.ps)


def _grads(module, inputs, dy):
    module.zero_grad()
    inputs = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in inputs]
    y = module(*inputs)
    y.backward(dy)
    return y.detach(), [t.grad for t in inputs if t.is_floating_point()], [p.grad for p in module.parameters()]


def _oracle(fn, inputs, params, dy):
    inputs = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in inputs]
    params = [p.detach().clone().requires_grad_() for p in params]
    y = fn(inputs, params)
    y.backward(dy)
    return y.detach(), [t.grad for t in inputs if t.is_floating_point()], [p.grad for p in params]


torch.manual_seed(0)
OPS = {
    "linear-subclass": (lambda: MyLinear(6, 5), [(3, 4, 6)],
                        lambda i, p: Y(F.linear(X(i[0]), W(p[0]), p[1])) * 1.0),
    "addmm (HF Conv1D)": (lambda: Conv1DHF(6, 5), [(3, 4, 6)],
                          lambda i, p: Y(torch.addmm(p[1], X(i[0]).reshape(-1, 6), W(p[0]))).reshape(3, 4, 5)),
    "matmul x@W": (lambda: Func(lambda x, w: x @ w, (6, 5)), [(2, 3, 6)],
                   lambda i, p: Y(X(i[0]) @ W(p[0]))),
    "matmul W@x": (lambda: Func(lambda x, w: torch.matmul(w, x), (5, 6)), [(2, 6, 3)],
                   lambda i, p: Y(W(p[0]) @ X(i[0]))),
    "linear of a weight view": (lambda: Func(lambda x, w: F.linear(x, w.t()), (6, 5)), [(4, 6)],
                                lambda i, p: Y(F.linear(X(i[0]), W(p[0].t())))),
    "bmm (no weight: attention)": (lambda: Func(lambda a, b: torch.bmm(a, b)), [(2, 3, 6), (2, 6, 4)],
                                   lambda i, p: Y(torch.bmm(A_in(i[0]), A_w(i[1])))),
    "baddbmm": (lambda: Func(lambda m, a, b: torch.baddbmm(m, a, b, alpha=0.5)), [(2, 3, 4), (2, 3, 6), (2, 6, 4)],
                lambda i, p: Y(torch.baddbmm(i[0], A_in(i[1]), A_w(i[2]), alpha=0.5))),
    "tensor.mm": (lambda: Func(lambda a, w: a.mm(w), (6, 4)), [(3, 6)], lambda i, p: Y(X(i[0]).mm(W(p[0])))),
    "einsum": (lambda: Func(lambda a, w: torch.einsum("bik,nk->bin", a, w), (5, 6)), [(2, 3, 6)],
               lambda i, p: Y(torch.einsum("bik,nk->bin", X(i[0]), W(p[0])))),
    "F.conv1d": (lambda: Func(lambda x, w: F.conv1d(x, w, padding=1), (5, 4, 3)), [(2, 4, 9)],
                 lambda i, p: Y(F.conv1d(X(i[0]), W(p[0]), padding=1))),
    "F.conv2d same": (lambda: Func(lambda x, w: F.conv2d(x, w, padding="same"), (4, 3, 3, 3)), [(2, 3, 6, 5)],
                      lambda i, p: Y(F.conv2d(X(i[0]), W(p[0]), padding="same"))),
    "F.conv3d": (lambda: Func(lambda x, w: F.conv3d(x, w, stride=2), (4, 2, 2, 2, 2)), [(1, 2, 5, 5, 5)],
                 lambda i, p: Y(F.conv3d(X(i[0]), W(p[0]), stride=2))),
}


@pytest.mark.parametrize("name", list(OPS))
def test_captured_op_matches_quantized_oracle(name):
    make, shapes, ref = OPS[name]
    torch.manual_seed(1)
    mod = make()
    inputs = [torch.randn(*s) for s in shapes]
    plain = copy.deepcopy(mod)
    with torch.no_grad():
        dy = torch.randn_like(plain(*inputs))
    lowp.emulate(mod, recipe())
    y, gi, gp = _grads(mod, inputs, dy)
    ry, rgi, rgp = _oracle(ref, inputs, list(plain.parameters()), dy)
    assert bits_equal(y, ry)
    assert all(bits_equal(a, b) for a, b in zip(gi, rgi))
    assert all(bits_equal(a, b) for a, b in zip(gp, rgp))
    assert not torch.equal(y, plain(*inputs).detach())  # the rounding is not vacuous
    assert capture_state(mod).contexts  # a captured context exists
    lowp.restore(mod)
    assert torch.equal(mod(*inputs), plain(*inputs))


def test_embedding_functional():
    torch.manual_seed(2)
    mod = Func(lambda i, w: F.embedding(i, w), (11, 6))
    idx = torch.tensor([[1, 3, 3], [0, 10, 1]])
    dy = torch.randn(2, 3, 6)
    w0 = mod.ps[0].detach().clone()
    lowp.emulate(mod, recipe())
    y = mod(idx)
    y.backward(dy)
    wr = w0.clone().requires_grad_()
    yr = Y(F.embedding(idx, W(wr)))
    yr.backward(dy)
    assert bits_equal(y.detach(), yr.detach()) and bits_equal(mod.ps[0].grad, wr.grad)


def _sdpa_oracle(q, k, v, mask=None, causal=False, scale=None):
    e = q.shape[-1]
    s = Y(A_in(q) @ A_w(k.transpose(-2, -1))) * (scale if scale is not None else e ** -0.5)
    if causal:
        # additive, as torch's math attention: -inf above the diagonal, 0 elsewhere
        s = s + torch.zeros(q.shape[-2], k.shape[-2]).masked_fill(~torch.ones(q.shape[-2], k.shape[-2],
                                                                               dtype=torch.bool).tril(), float("-inf"))
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else s + mask
    p = torch._safe_softmax(s, -1)
    return Y(A_in(p) @ A_w(v))


@pytest.mark.parametrize("kind", ["none", "causal", "padding", "float-mask", "scale"])
def test_sdpa_matches_decomposed_oracle(kind):
    torch.manual_seed(3)
    q, k, v = (torch.randn(2, 3, 5, 8) for _ in range(3))
    mask = None
    kw = {}
    if kind == "padding":
        mask = torch.ones(2, 1, 1, 5, dtype=torch.bool)
        mask[1, ..., 3:] = False  # the second sequence has 2 padded keys
        kw = dict(attn_mask=mask)
    elif kind == "float-mask":
        mask = torch.randn(5, 5)
        kw = dict(attn_mask=mask)
    elif kind == "causal":
        kw = dict(is_causal=True)
    elif kind == "scale":
        kw = dict(scale=0.3)
    mod = Func(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, **kw))
    lowp.emulate(mod, recipe())
    dy = torch.randn(2, 3, 5, 8)
    y, g, _ = _grads(mod, [q, k, v], dy)
    qs, ks, vs = (t.clone().requires_grad_() for t in (q, k, v))
    yr = _sdpa_oracle(qs, ks, vs, mask, kind == "causal", kw.get("scale"))
    yr.backward(dy)
    assert bits_equal(y, yr.detach())
    for a, b in zip(g, (qs.grad, ks.grad, vs.grad)):
        assert bits_equal(a, b)
    names = set(capture_state(mod).contexts)
    assert names == {"sdpa.qk", "sdpa.pv"}
    # close to torch's own attention (the formats are coarse: a loose check that the math is the same)
    ref = F.scaled_dot_product_attention(q, k, v, **kw)
    assert (y - ref).abs().max() < 0.5


def test_sdpa_fully_masked_row_is_zero_like_torch():
    q = torch.randn(1, 1, 3, 4)
    mask = torch.ones(3, 3, dtype=torch.bool)
    mask[0] = False
    mod = Func(lambda a: F.scaled_dot_product_attention(a, a, a, attn_mask=mask))
    lowp.emulate(mod, lowp.get_recipe("bf16"))
    y = mod(q)
    assert torch.equal(y[0, 0, 0], torch.zeros(4)) and torch.isfinite(y).all()


def test_attention_none_keeps_native_sdpa_bit_identical():
    torch.manual_seed(4)
    q = torch.randn(2, 2, 6, 8)
    mod = Func(lambda a: F.scaled_dot_product_attention(a, a, a, is_causal=True))
    lowp.emulate(mod, recipe(attention=None))
    assert torch.equal(mod(q), F.scaled_dot_product_attention(q, q, q, is_causal=True))
    c = lowp.coverage(mod, q)
    assert [r.reason for r in c.rows] == ["attention kept in high precision (recipe.attention is None)"] * 2


def test_multihead_attention_is_captured_by_parts():
    torch.manual_seed(5)
    mha = nn.MultiheadAttention(16, 2, batch_first=True)
    x = torch.randn(2, 5, 16)
    for need_weights in (False, True):
        m = copy.deepcopy(mha)
        lowp.emulate(m, "bf16")
        seen = []
        from lowp.ops import observe
        with observe.observing(lambda layer, role, a, aq, fmt: seen.append((layer, role, aq))):
            y, _ = m(x, x, x, need_weights=need_weights)
        layers = {s[0] for s in seen}
        assert "in_proj" in layers and "out_proj" in layers
        assert any(("sdpa.qk" in n or "bmm" in n) for n in layers)
        for _, role, aq in seen:
            assert torch.equal(aq, aq.bfloat16().float())
        plain = mha(x, x, x, need_weights=need_weights)[0]
        assert not torch.equal(y, plain) and (y - plain).abs().max() < 0.05


# ------------------------------------------------------------------------------------------------ robustness
class Tiny(nn.Module):
    def __init__(self, d=64):
        super().__init__()
        self.proj = Conv1DHF(d, d)
        self.fc = nn.Linear(d, d)

    def forward(self, x):
        h = self.proj(x)
        a = F.scaled_dot_product_attention(h, h, h, is_causal=True)
        return self.fc(a)


def _step(m, x):
    m.zero_grad()
    y = m(x)
    y.square().mean().backward()
    return y.detach(), [p.grad.clone() for p in m.parameters()]


def test_fp32_recipe_bit_identical_with_captured_ops():
    torch.manual_seed(6)
    plain = Tiny()
    emu = lowp.emulate(copy.deepcopy(plain), "fp32")
    x = torch.randn(2, 8, 64)
    y0, g0 = _step(plain, x)
    y1, g1 = _step(emu, x)
    assert torch.equal(y0, y1) and all(torch.equal(a, b) for a, b in zip(g0, g1))


class Counting(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.n += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("compiled", [False, True])
def test_user_modes_flop_counter_and_function_mode(compiled, monkeypatch):
    """Under FlopCounterMode (a dispatch mode) or a user's TorchFunctionMode the compiled kernels cannot run: the
    eager ones give the same bits (compiled=True uses tensors above the compiled-path threshold)."""
    from torch.utils.flop_counter import FlopCounterMode

    monkeypatch.setenv("LOWP_COMPILE", "1" if compiled else "0")
    torch.manual_seed(7)
    m = lowp.emulate(Tiny(d=64), "fp8-hybrid")
    x = torch.randn(16, 64, 64)  # 65536 elements: the compiled path when allowed
    y0, g0 = _step(m, x)
    with FlopCounterMode(display=False) as fc:
        y1, g1 = _step(m, x)
    assert fc.get_total_flops() > 0
    with Counting() as cm:
        y2, g2 = _step(m, x)
    assert cm.n > 0
    with torch.profiler.profile() as prof:
        y3, g3 = _step(m, x)
    assert len(prof.key_averages()) > 0
    for y, g in ((y1, g1), (y2, g2), (y3, g3)):
        assert torch.equal(y, y0) and all(torch.equal(a, b) for a, b in zip(g, g0))


def test_no_grad_and_inference_mode():
    torch.manual_seed(8)
    m = lowp.emulate(Tiny(), "bf16")
    x = torch.randn(2, 8, 64)
    y0 = m(x).detach()
    with torch.no_grad():
        y1 = m(x)
    with torch.inference_mode():
        y2 = m(x)
    assert torch.equal(y0, y1) and torch.equal(y0, y2)


class Block(nn.Module):
    def __init__(self, d=64):
        super().__init__()
        self.proj = Conv1DHF(d, d)

    def forward(self, x):
        h = self.proj(x)
        return F.scaled_dot_product_attention(h, h, h, is_causal=True)


class Stack(nn.Module):
    def __init__(self, ckpt=None):
        super().__init__()
        self.block = Block()
        self.fc = nn.Linear(64, 64)
        self.ckpt = ckpt

    def forward(self, x):
        from torch.utils.checkpoint import checkpoint

        h = self.block(x) if self.ckpt is None else checkpoint(self.block, x, use_reentrant=self.ckpt)
        return self.fc(h)


def test_activation_checkpointing_recomputes_emulated():
    """A checkpointed module call is recomputed emulated (its forward hooks fire again), reentrant or not: the
    gradients are bit-identical to the emulated run without checkpointing."""
    torch.manual_seed(9)
    base = Stack()
    x = torch.randn(2, 8, 64, requires_grad=True)
    ref = lowp.emulate(copy.deepcopy(base), "bf16")
    y0, g0 = _step(ref, x)
    for reentrant in (False, True):
        m = copy.deepcopy(base)
        m.ckpt = reentrant
        lowp.emulate(m, "bf16")
        y1, g1 = _step(m, x)
        assert torch.equal(y0, y1) and all(torch.equal(a, b) for a, b in zip(g0, g1)), reentrant
    _, gp = _step(copy.deepcopy(base), x)
    assert not all(torch.equal(a, b) for a, b in zip(g0, gp))  # emulation was not vacuous


def test_ddp_wrapped_model(tmp_path):
    import torch.distributed as dist

    torch.manual_seed(10)
    base = Tiny()
    x = torch.randn(2, 8, 64)
    ref = lowp.emulate(copy.deepcopy(base), "bf16")
    y0, g0 = _step(ref, x)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)
    ddp = wrapped = None
    try:
        ddp = nn.parallel.DistributedDataParallel(lowp.emulate(copy.deepcopy(base), "bf16"))
        y1, g1 = _step(ddp, x)
        wrapped = lowp.emulate(nn.parallel.DistributedDataParallel(copy.deepcopy(base)), "bf16")
        y2, g2 = _step(wrapped, x)
        captured = "module.proj" in capture_state(wrapped).contexts
    finally:
        # the DDP wrappers (their reducers hold the process group) go before the group: a ProcessGroupGloo last
        # released after destroy_process_group once hung CI in its destructor (joining its worker threads)
        del ddp, wrapped
        gc.collect()
        dist.destroy_process_group()
    for y, g in ((y1, g1), (y2, g2)):
        assert torch.equal(y, y0) and all(torch.equal(a, b) for a, b in zip(g, g0))
    assert captured


def test_restore_removes_every_hook_and_scripted_models_are_refused():
    m = Tiny()
    lowp.emulate(m, "bf16")
    assert any(len(mod._forward_pre_hooks) for mod in m.modules())
    lowp.restore(m)
    assert not any(len(mod._forward_pre_hooks) or len(mod._forward_hooks) for mod in m.modules())
    assert capture_state(m) is None
    with pytest.raises(TypeError, match="TorchScript module"):
        lowp.emulate(torch.jit.script(nn.Linear(2, 2)), "bf16")
    with pytest.raises(TypeError, match="TorchScript module 'inner'"):
        outer = nn.Sequential()
        outer.add_module("inner", torch.jit.trace(nn.Linear(2, 2), torch.randn(1, 2)))
        lowp.emulate(outer, "bf16")


def test_emulate_is_atomic():
    from lowp.recipes import extensions

    m = Tiny()

    def boom(model, recipe, args):
        raise RuntimeError("transform failed")

    extensions.register_transform("test-boom", boom)
    try:
        with pytest.raises(RuntimeError, match="transform failed"):
            lowp.emulate(m, lowp.Recipe(input="bf16", transforms=("test-boom",)))
    finally:
        extensions.unregister_technique("test-boom")
    assert type(m.fc) is nn.Linear and capture_state(m) is None and not emulated_layers(m)
    assert not any(len(mod._forward_pre_hooks) for mod in m.modules())
    with pytest.raises(ValueError, match="unknown model transform"):
        lowp.emulate(m, lowp.Recipe(input="bf16", transforms=("nope",)))
    assert type(m.fc) is nn.Linear


def test_exempt_patterns_reach_captured_ops():
    m = Tiny()
    lowp.emulate(m, lowp.get_recipe("bf16").replace(exempt=("proj",)))
    c = lowp.coverage(m, torch.randn(2, 8, 64))
    rows = {r.name: r for r in c.rows}
    assert not rows["proj"].fwd_emulated and "exempt" in rows["proj"].reason
    assert rows["fc"].fwd_emulated and rows["sdpa.qk"].fwd_emulated
