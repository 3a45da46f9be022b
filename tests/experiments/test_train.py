"""The training loop: seeded and reproducible, identical start for every recipe, divergence detected."""
import math

import torch
from torch import nn

from lowp.experiments import tasks as T
from lowp.experiments.train import RunResult, RunSettings, train_run


def _tiny() -> T.Task:
    def data():
        d = T.digits_data()
        return T.TaskData(d.x_train[:256], d.y_train[:256], d.x_test, d.y_test)
    return T.Task("tiny", lambda: T.mlp((64, 64, 10)), data, epochs=2, lr=0.1, batch_size=64)


def test_seeded_reproducible_and_learns():
    s = RunSettings("tiny", seed=1, epochs=3, lr=0.1, batch_size=16)
    a, b = train_run(_tiny(), "fp32", s, progress=False), train_run(_tiny(), "fp32", s, progress=False)
    assert a.history == b.history and a.steps == b.steps == 48
    assert a.metric > 0.5 and not a.diverged and a.error is None
    assert a.history[2]["train_loss"] < a.history[0]["train_loss"]
    c = train_run(_tiny(), "fp32", RunSettings("tiny", seed=2, epochs=3, lr=0.1, batch_size=16), progress=False)
    assert c.history != a.history


def test_fp32_recipe_is_plain_torch():
    """The same seed gives the same run with the fp32 recipe as with a plain SGD loop written here."""
    task, s = _tiny(), RunSettings("tiny", seed=0, epochs=1, lr=0.1, batch_size=64)
    r = train_run(task, "fp32", s, progress=False)
    d = task.load_data()
    torch.manual_seed(0)
    m = task.build_model()
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    order = torch.randperm(256, generator=torch.Generator().manual_seed(0))
    losses = []
    for i, st in enumerate(range(0, 256, 64)):
        for g in opt.param_groups:
            g["lr"] = 0.5 * 0.1 * (1 + math.cos(math.pi * i / 4))
        idx = order[st:st + 64]
        opt.zero_grad()
        loss = nn.functional.cross_entropy(m(d.x_train[idx]), d.y_train[idx])
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert r.history[0]["train_loss"] == sum(losses) / 4


def test_divergence_detected():
    def data():
        d = T.digits_data()
        return T.TaskData(d.x_train, d.y_train, d.x_test, d.y_test)
    # gradient descent on a quadratic loss with a step far above 2/curvature grows the weights geometrically
    boom = T.Task("boom", lambda: nn.Linear(64, 10), data, epochs=3, lr=100.0, batch_size=64, schedule="constant",
                  loss_fn=lambda out, y: (out ** 2).mean())
    r = train_run(boom, "fp32", RunSettings("boom", 0, 3, 100.0, 64), progress=False)
    assert r.diverged and r.error is None and r.diverged_at is not None
    assert r.steps < 3 * 23
    assert RunResult.from_dict(r.to_dict()) == r


def test_error_in_run_is_reported_not_raised():
    bad = T.Task("bad", lambda: nn.Linear(3, 10), _tiny().load_data, epochs=1)  # wrong input size
    r = train_run(bad, "fp32", RunSettings("bad", 0, 1, 0.1, 64), progress=False)
    assert r.error and r.error.startswith("RuntimeError") and r.metric is None and r.status == "error"


def test_train_epochs_parallel_plug():
    """The loop's data-parallel plug: a skipped batch advances the learning-rate schedule but not ``steps``; the
    plug picks the samples and the loss value that is logged and checked for divergence."""
    from lowp.experiments.train import SingleProcess, _lr_at, apply_recipe, prepare_run, train_epochs

    s = RunSettings("tiny", seed=0, epochs=1, lr=0.1, batch_size=100)  # 256 samples: batches of 100, 100, 56
    seen = []

    class Half(SingleProcess):
        def local_batch(self, idx):
            return None if len(idx) < 100 else idx[:50]

        def global_loss(self, loss, n):
            seen.append(n)
            return 2 * float(loss.detach())

    task, recipe, data, model = prepare_run(_tiny(), "fp32", s)
    model, opt, base = apply_recipe(model, recipe, lambda p: task.make_optimizer(p, s.lr))
    st = train_epochs(task, data, s, model, opt, base, parallel=Half())
    assert st.steps == 2 and seen == [50, 50] and st.diverged_at is None and len(st.history) == 1
    assert base.param_groups[0]["lr"] == _lr_at(task, 0.1, 2, 3)  # set for the skipped third batch
    assert st.history[0]["train_loss"] > 0

    task, recipe, data, model = prepare_run(_tiny(), "fp32", s)
    model, opt, base = apply_recipe(model, recipe, lambda p: task.make_optimizer(p, s.lr))
    assert train_epochs(task, data, s, model, opt, base).history == list(train_run(_tiny(), "fp32", s,
                                                                                   progress=False).history)


def test_step_timing_counts_compilation_of_later_steps_as_first_use():
    from lowp.experiments.train import WARM_STEPS, step_timing

    times = [5.0, 1.0, 1.0] + [1.0] * 10
    times[7] = 4.0  # a kernel first needed at step 7 compiled for 3 s
    compile_s = [4.0, 0.0, 0.0] + [0.0] * 10
    compile_s[7] = 3.0
    t = step_timing(times, compile_s)
    assert WARM_STEPS == 3 and t["step_s"] == 1.0
    assert t["first_use_s"] == (5.0 + 1.0 + 1.0 - 3 * 1.0) + 3.0  # warm-up of the first steps + later compilation
    assert step_timing(times)["first_use_s"] == 4.0  # without compile times: the first steps only
    assert step_timing([]) == {"first_use_s": None, "step_s": None}
