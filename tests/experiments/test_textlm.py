"""tiny-gpt and tiny-gpt-hf (lowp.experiments.textlm): the text and its split are fixed and deterministic, the windows
are next-token pairs, a 2-step training run works and reports a validation loss (lower is better), the HF variant
is a GPT2LMHeadModel built from a config, and it errors clearly without transformers."""
import dataclasses
import importlib.util
import math

import pytest
import torch
import torch.nn.functional as F

from lowp.experiments import tasks as T
from lowp.experiments import textlm as L
from lowp.experiments.data import TrainSource, eval_batches
from lowp.experiments.train import RunSettings, train_run

HAS_HF = importlib.util.find_spec("transformers") is not None


def test_text_and_split_are_fixed():
    from pydoc_data.topics import topics

    text = "".join(topics[k] for k in sorted(topics)).encode("utf-8")
    tok = L.pydoc_tokens()
    assert tok.dtype == torch.int64 and len(tok) == len(text) and bytes(tok.to(torch.uint8).tolist()) == text
    train, val = L.text_split()
    assert len(val) == int(len(tok) * 0.1) and len(train) + len(val) == len(tok)
    assert torch.equal(torch.cat([train, val]), tok)  # a cut, no shuffling: validation is the last 10%
    train2, val2 = L.text_split(L.pydoc_tokens.__wrapped__())  # recomputed, not the cache
    assert torch.equal(train, train2) and torch.equal(val, val2)


def test_windows_are_next_token_pairs():
    tok = torch.arange(100)
    ds = L.WindowDataset(tok, 8, stride=8)
    assert len(ds) == (100 - 9) // 8 + 1 == 12
    x, y = ds[3]
    assert torch.equal(x, tok[24:32]) and torch.equal(y, tok[25:33])
    items = ds.__getitems__([0, 11, 3])
    assert all(torch.equal(a, b) for (a, _), b in zip(items, [ds[0][0], ds[11][0], ds[3][0]]))
    assert all(torch.equal(a, b) for (_, a), b in zip(items, [ds[0][1], ds[11][1], ds[3][1]]))
    with pytest.raises(IndexError):
        ds[12]
    with pytest.raises(ValueError, match="needs at least 9 tokens"):
        L.WindowDataset(torch.arange(8), 8)
    data = L.pydoc_data()
    train, val = L.text_split()
    assert len(data.train) == len(train) - L.CONTEXT  # every start position
    # validation: the non-overlapping windows of the validation part, read in order
    xs = torch.cat([x.reshape(-1) for x, _ in eval_batches(data, 100)])
    assert torch.equal(xs, val[:len(xs)]) and len(xs) == len(data.test) * L.CONTEXT


def test_random_training_windows_depend_only_on_the_seed():
    src = TrainSource(L.pydoc_data())
    a = [src.fetch(i)[0] for i in src.epoch(4, torch.Generator().manual_seed(0), 3)]
    b = [src.fetch(i)[0] for i in src.epoch(4, torch.Generator().manual_seed(0), 3)]
    assert len(a) == 3 and all(torch.equal(u, v) for u, v in zip(a, b))
    assert src.steps_per_epoch(32, L.STEPS_PER_EPOCH) == L.STEPS_PER_EPOCH


def test_task_metric_is_validation_loss_lower_is_better():
    t = T.get_task("tiny-gpt")
    assert t.metric_name == "val_loss" and t.direction == "min" and t.metric_unit == "nats/token"
    assert t.metric_counts is T.token_loss_counts
    torch.manual_seed(0)
    m = t.build_model()
    x, y = next(eval_batches(t.load_data(), 4))
    assert x.shape == y.shape == (4, L.CONTEXT)
    logits = m(x)
    assert logits.shape == (4, L.CONTEXT, L.VOCAB)
    s, n = t.metric_counts(logits, y)
    # an untrained model (weights N(0, 0.02)) predicts nearly uniformly over 256 bytes
    assert n == 4 * L.CONTEXT and s / n == pytest.approx(math.log(256), abs=0.05)


def test_model_uses_sdpa_causally():
    torch.manual_seed(0)
    m = L.TinyGPT(d=16, heads=2, layers=1, context=8)
    x = torch.randint(0, 256, (2, 8))
    full = m(x)
    x2 = x.clone()
    x2[:, 5:] = (x2[:, 5:] + 1) % 256
    assert torch.allclose(m(x2)[:, :5], full[:, :5])  # the future does not leak
    with pytest.raises(ValueError, match="exceeds the context"):
        m(torch.zeros(1, 9, dtype=torch.int64))
    calls = []

    class Spy(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            calls.append(func)
            return func(*args, **(kwargs or {}))

    with Spy():
        m(x)
    assert F.scaled_dot_product_attention in calls and F.linear in calls


def _short(task, steps=2):
    # two steps and an evaluation on the first 128 validation windows
    full = task.load_data

    def data():
        d = full()
        return dataclasses.replace(d, test=torch.utils.data.Subset(d.test, range(128)))

    return dataclasses.replace(task, steps_per_epoch=steps, epochs=1, load_data=data)


@pytest.mark.parametrize("recipe", ["fp32", "bf16"])
def test_two_step_training_run(recipe):
    t = _short(T.get_task("tiny-gpt"))
    res = train_run(t, recipe, RunSettings("tiny-gpt", 0, 1, t.lr, t.batch_size), progress=False)
    assert res.error is None and res.steps == 2 and not res.diverged
    assert res.metric_name == "val_loss" and 4.0 < res.metric < math.log(256) + 0.1


@pytest.mark.skipif(not HAS_HF, reason="transformers not installed (pip install 'lowp[hf]')")
def test_hf_variant_is_a_gpt2_from_a_config_and_trains():
    from transformers import GPT2LMHeadModel

    t = T.get_task("tiny-gpt-hf")
    assert (t.metric_name, t.direction, t.steps_per_epoch) == ("val_loss", "min", L.STEPS_PER_EPOCH)
    m = t.build_model()
    assert isinstance(m, GPT2LMHeadModel) and m.config.n_embd == L.D_MODEL and m.config.vocab_size == 256
    t = _short(t)
    res = train_run(t, "fp32", RunSettings("tiny-gpt-hf", 0, 1, t.lr, t.batch_size), progress=False)
    assert res.error is None and res.steps == 2 and 4.0 < res.metric < math.log(256) + 0.1


def test_hf_variant_errors_clearly_without_transformers(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == "transformers" else real(name, *a, **k))
    with pytest.raises(ValueError, match=r"task 'tiny-gpt-hf' needs transformers.*pip install 'lowp\[hf\]'"):
        T.get_task("tiny-gpt-hf")
    monkeypatch.setitem(__import__("sys").modules, "transformers", None)  # import fails
    with pytest.raises(ValueError, match="needs transformers"):
        L.hf_gpt2()
