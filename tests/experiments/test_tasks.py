"""Tasks: registry, data shapes, models, and the attention matmuls being emulated."""
import dataclasses

import pytest
import torch

import lowp
from lowp.experiments import tasks as T
from lowp.experiments.config import RecipeEntry
from lowp.experiments.train import RunSettings, train_run


def test_builtin_names_and_exports():
    for n in ("digits-mlp", "mnist1d-cnn", "mnist1d-mlp", "tiny-transformer", "resnet-mini", "tiny-transformer-accum"):
        assert n in lowp.task_names()
    assert lowp.register_task is T.register_task


def test_unknown_task_lists_known():
    with pytest.raises(ValueError, match="unknown task 'nope'.*digits-mlp"):
        T.get_task("nope")


def test_register_task_user_task_and_duplicate(monkeypatch):
    monkeypatch.setattr(T, "_REGISTRY", dict(T._REGISTRY))  # leave the process-wide registry as it was
    task = T.Task("t-user", lambda: torch.nn.Linear(64, 10), T.digits_data, epochs=1)
    T.register_task("t-user", task, replace=True)
    assert T.get_task("t-user") is task
    with pytest.raises(ValueError, match="already registered"):
        T.register_task("t-user", task)
    with pytest.raises(TypeError):
        T.register_task("t-bad", 3)
    T.register_task("t-bad2", lambda: "not a task", replace=True)
    with pytest.raises(TypeError, match="not a Task"):
        T.get_task("t-bad2")


def test_task_validates_defaults():
    with pytest.raises(ValueError, match="epochs"):
        T.Task("x", lambda: None, T.digits_data, epochs=0)
    with pytest.raises(ValueError, match="schedule"):
        T.Task("x", lambda: None, T.digits_data, schedule="step")
    with pytest.raises(ValueError, match="unknown optimizer 'lamb'.*sgd, adam"):
        T.Task("x", lambda: None, T.digits_data, optimizer="lamb")


def test_task_optimizer():
    params = [torch.nn.Parameter(torch.zeros(2))]
    sgd = T.get_task("digits-mlp").make_optimizer(params, 0.5)
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.9
    adam = T.get_task("tiny-transformer-accum").make_optimizer(params, 0.003)
    assert isinstance(adam, torch.optim.Adam) and adam.param_groups[0]["lr"] == 0.003
    assert T.get_task("tiny-transformer-accum").defaults()["optimizer"] == "adam"


def test_digits_split_fixed():
    d = T.digits_data()
    assert d.x_train.shape == (1437, 64) and d.x_test.shape == (360, 64)
    assert float(d.x_train.max()) <= 1.0 and d.y_test.dtype == torch.int64
    assert sorted(set(d.y_test.tolist())) == list(range(10))


def test_sort_data_targets():
    d = T.sort_data()
    x, y = d.x_train[:5], d.y_train[:5]
    assert x.shape == (5, 16) and y.shape == (5, 16)
    assert (y[:, :7] == -100).all() and (y[:, 7] == -100).all()
    for i in range(5):
        assert y[i, 8:].tolist() == sorted(x[i, :8].tolist())
        assert x[i, 8] == T.SORT_VOCAB


@pytest.mark.parametrize("name,shape", [("digits-mlp", (4, 64)), ("mnist1d-cnn", (4, 40)), ("mnist1d-mlp", (4, 40)),
                                        ("resnet-mini", (4, 64))])
def test_models_forward(name, shape):
    torch.manual_seed(0)
    m = T.get_task(name).build_model()
    assert m(torch.randn(*shape)).shape == (4, 10)


def test_transformer_attention_is_emulated():
    torch.manual_seed(0)
    m = T.get_task("tiny-transformer").build_model()
    x = T.sort_data().x_train[:4]
    ref = m(x)
    assert ref.shape == (4, 16, T.SORT_VOCAB + 1)
    lowp.emulate(m, "bf16")
    layers = lowp.recipes.emulated_layers(m)
    assert "blocks.0.attn.score" in layers and "blocks.1.attn.mix" in layers
    out = m(x)
    assert not torch.equal(out, ref)  # bf16 rounding changes the logits
    assert (out - ref).abs().max() < 0.5
    lowp.restore(m)
    assert torch.equal(m(x), ref)


def test_accuracy_counts_ignores_masked():
    out = torch.tensor([[[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]]])
    y = torch.tensor([[1, 1, -100]])
    assert T.accuracy_counts(out, y) == (1, 2)


def _small_accum_task(n_train: int = 128) -> T.Task:
    """tiny-transformer-accum on the first ``n_train`` training and 64 test sequences (a few steps, ~1 s)."""
    d = T.sort_data()
    small = T.TaskData(d.x_train[:n_train], d.y_train[:n_train], d.x_test[:64], d.y_test[:64])
    return dataclasses.replace(T.get_task("tiny-transformer-accum"), load_data=lambda: small)


def test_accum_task_loss_is_global_batch_share_and_trains_one_step():
    task = T.get_task("tiny-transformer-accum")
    assert task.optimizer == "adam" and task.batch_size * T.SORT_LEN * 128 == T.GLOBAL_TOKENS
    d = T.sort_data()
    torch.manual_seed(0)
    m = task.build_model()
    out = m(d.x_train[:64])
    # a full micro-batch (512 target tokens) is 1/128 of the global batch: the mean token loss / 128
    torch.testing.assert_close(task.loss_fn(out, d.y_train[:64]), T.classification_loss(out, d.y_train[:64]) / 128)
    r = train_run(_small_accum_task(64), "fp32", RunSettings(task.name, 0, 1, task.lr, 64), progress=False)
    assert r.error is None and r.steps == 1 and not r.diverged


def test_accum_task_unscaled_e5m2_flushes_gradients_scaled_does_not(monkeypatch):
    """The run of docs/results/numerics.md in small (2 steps): the numerics records that the compare report draws
    show most nonzero back-propagated errors (grad_input) flushed to zero without loss scaling, almost none with."""
    monkeypatch.setenv("LOWP_COMPILE", "0")
    task = _small_accum_task()
    s = RunSettings(task.name, 0, 1, task.lr, 64)

    def flushed(recipe: str) -> float:
        r = train_run(task, RecipeEntry(recipe).resolve(), s, progress=False, numerics_every=1)
        assert r.error is None and r.numerics
        rs = [x for x in r.numerics if x["role"] == "grad_input"]
        return sum(x["underflow"] * x["n"] for x in rs) / sum(x["n"] for x in rs)

    lost, kept = flushed("fp8-e5m2-noscale"), flushed("fp8-e5m2")
    print(f"grad_input flushed to zero: no loss scaling {lost:.1%}, enhanced loss scaling {kept:.1%}")
    assert lost > 0.3
    assert kept < 0.02
