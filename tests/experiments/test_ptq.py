"""The PTQ runner (``lowp.experiments.ptq``): its FP32 model is that of an independent plain SGD loop bit for bit,
its settings, the cache key and the fidelity measures."""
import math

import pytest
import torch

from lowp.experiments import tasks as T
from lowp.experiments.data import StreamData
from lowp.experiments.ptq import PTQSettings, configurations, fidelity, ptq_task, train_fp32
from lowp.experiments.ptq_cache import cache_key

pytestmark = pytest.mark.usefixtures("one_thread")  # restored after each test


def _reference_sgd(task: T.Task, epochs: int, seed: int) -> torch.nn.Module:
    """Plain FP32 training written out here, independently of the training loop: SGD with momentum, the learning
    rate 0.5·lr·(1 + cos(π·step/total)) set before each step, a permutation per epoch from a generator seeded with
    ``seed``, the model built right after ``torch.manual_seed(seed)``."""
    d = task.load_data()
    torch.manual_seed(seed)
    model = task.build_model()
    opt = torch.optim.SGD(model.parameters(), lr=task.lr, momentum=task.momentum, weight_decay=task.weight_decay)
    g = torch.Generator().manual_seed(seed)
    n = len(d.y_train)
    total, step = epochs * math.ceil(n / task.batch_size), 0
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(n, generator=g).split(task.batch_size):
            for pg in opt.param_groups:
                pg["lr"] = 0.5 * task.lr * (1 + math.cos(math.pi * step / total))
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(d.x_train[idx]), d.y_train[idx]).backward()
            opt.step()
            step += 1
    return model.eval()


def _small() -> T.Task:
    def data():
        d = T.digits_data()
        return T.TaskData(d.x_train[:300], d.y_train[:300], d.x_test, d.y_test)
    return T.Task("ptq-small", lambda: T.mlp((64, 32, 10)), data, epochs=2, lr=0.05, batch_size=32,
                  weight_decay=1e-4)


def test_fp32_model_is_the_plain_sgd_loops_bit_for_bit():
    task = _small()
    got, ref = train_fp32(task, 2, seed=3), _reference_sgd(task, 2, seed=3)
    assert not got.training
    sd_got, sd_ref = got.state_dict(), ref.state_dict()
    assert list(sd_got) == list(sd_ref)
    for k in sd_ref:
        assert torch.equal(sd_got[k], sd_ref[k]), k
    other = train_fp32(task, 2, seed=4)  # the seed matters: the comparison above is not vacuous
    assert not torch.equal(other.state_dict()["1.weight"], sd_ref["1.weight"])


def test_exec_repeats_must_be_positive(tmp_path):
    from lowp.experiments.ptq import validate

    with pytest.raises(ValueError, match="--exec-repeats must be positive, got 0"):
        validate(PTQSettings(method="int8", out=str(tmp_path), execute=True, exec_repeats=0))


def test_settings_validate_and_default_groups():
    with pytest.raises(ValueError, match="unknown PTQ method 'int9'"):
        PTQSettings(method="int9", out="x")
    s = PTQSettings.from_mapping({"method": "fgq", "out": "x", "act_bits": [4, 8], "unrelated": 1})
    assert s.act_bits == (4, 8) and s.groups == (4,)
    assert PTQSettings(method="ternary-residual", out="x").groups == (64,)
    assert len(configurations(s)) == 2
    assert len(configurations(PTQSettings(method="int8", out="x", calibration=("minmax", "entropy"),
                                          granularity=("channel", "tensor")))) == 4


def test_streaming_task_refused():
    task = T.Task("ptq-stream", lambda: T.mlp((64, 10)),
                  lambda: StreamData(lambda bs, g: iter(()), lambda bs, g: iter(())), steps_per_epoch=1)
    T.register_task("ptq-stream", task, replace=True)
    try:
        with pytest.raises(ValueError, match="'ptq-stream' streams its data"):
            ptq_task("ptq-stream")
    finally:
        T._REGISTRY.pop("ptq-stream")


def test_cache_key_names_what_determines_the_model():
    sgd = T.get_task("digits-mlp")
    key = cache_key(sgd, 3, 0)
    assert key["optimizer"] == "sgd" and key["schedule"] == "cosine" and (key["epochs"], key["seed"]) == (3, 0)
    adam = T.Task("digits-mlp", sgd.build_model, sgd.load_data, epochs=sgd.epochs, lr=sgd.lr,
                  batch_size=sgd.batch_size, optimizer="adam")
    assert cache_key(adam, 3, 0) != key


def test_fidelity_counts_only_scored_positions():
    ref = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]])  # (batch 1, 3 positions, 2 classes)
    out = torch.tensor([[[0.0, 1.0], [0.0, 2.0], [2.0, 0.0]]])
    y = torch.tensor([[-100, 1, 0]])  # the first position (where out disagrees) is not scored
    f = fidelity(out, ref, y)
    assert f["fp32_agreement"] == 1.0
    assert f["output_rel_error"] == pytest.approx((1 + 1 + 1 + 1) / 3)
    f = fidelity(out[0], ref[0], torch.tensor([0, 1, 0]))  # (3 samples, 2 classes)
    assert f["fp32_agreement"] == pytest.approx(2 / 3)


def test_exec_runs_the_real_paths_and_times_them(tmp_path):
    """``--exec``: BF16, dynamic INT8 and the static INT8 of the eligible config run for real; the static INT8
    model computes what the fake-quantized config computes (same metric here), and every row carries a measured
    time against FP32's."""
    from lowp.experiments.ptq import run_ptq
    res = run_ptq(PTQSettings(method="int8", out=str(tmp_path), epochs=1, execute=True, exec_repeats=1,
                              calibration=("minmax",), granularity=("channel", "tensor")))
    labels = [e["label"] for e in res["exec"]]
    # only the per-channel symmetric config has a real INT8 kernel: the per-tensor one gets no static row
    assert labels == ["bf16 (oneDNN)", "int8 dynamic (fbgemm/_int_mm)", "int8 static (w8-channel-minmax-a8)"]
    static = res["exec"][2]
    fake = next(c for c in res["configs"] if c["label"] == "w8-channel-minmax-a8")
    assert abs(static["metric"] - fake["metric"]) <= 1 / 360 + 1e-12  # at most one test sample flips (float32 dequant)
    for e in res["exec"]:
        assert e["time_s"] > 0 and e["fp32_time_s"] > 0 and e["speedup"] == e["fp32_time_s"] / e["time_s"]
        assert 0.5 <= e["metric"] <= 1.0 and e["fp32_agreement"] > 0.9
    assert "Real execution" in (tmp_path / "results.md").read_text()
