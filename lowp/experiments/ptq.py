"""Post-training quantization runs (``lowp ptq``): train (or load) the FP32 model of a task, quantize it
post-training with one method over a grid of options (``lowp.techniques``: INT8 PTQ, FGQ ternary, cluster
ternary/4-bit, ternary residual), evaluate, and write DIR/results.json, DIR/results.md and DIR/ptq.png
(``lowp.experiments.ptq_report``).

The FP32 model is trained by the training loop of ``lowp compare`` (``lowp.experiments.train.train_epochs``) with
the task's own optimiser, learning-rate schedule and hyper-parameters, the model built right after
``torch.manual_seed(seed)`` and the data order from a generator seeded with ``seed``; the model stays a plain torch
model (no ``lowp.emulate``: FP32 is the reference the quantizers start from). It is cached in DIR, keyed by
everything that determines it (``lowp.experiments.ptq_cache``). Metrics are those of ``lowp compare``
(``lowp.experiments.train.evaluate``).

As in ``lowp compare``'s results.json, ``metric`` and ``fp32_metric`` are fractions in [0, 1] (correct / counted,
``metric_name`` from the task) and ``fp32_delta`` = metric − fp32_metric; results.md and the plot show them in
percent (Δ in percentage points). Each configuration also records how close its test outputs are to the FP32
model's, independently of the labels (:func:`fidelity`): ``fp32_agreement`` (fraction of test predictions equal to
FP32's) and ``output_rel_error`` (||out − out_fp32||² / ||out_fp32||²). With ``execute`` (``lowp ptq --exec``) the
real BF16/INT8 execution paths run too (:func:`exec_rows`): their metric and measured speed against FP32.
"""
from __future__ import annotations

import dataclasses
import itertools
import os
import statistics
import sys
import tempfile
import time
from typing import Any, Callable

import torch
from torch import nn

from .data import TaskData, eval_batches
from .ptq_cache import cache_key, cache_path, load_cached, save_cached
from .ptq_report import write_outputs
from .tasks import Task, call_model, get_task, model_logits
from .train import RunSettings, evaluate, prepare_run, train_epochs

METHODS = ("int8", "fgq", "cluster", "ternary-residual")
MAX_SEED = 2**63 - 2  # torch seeds are 64-bit; the calibration subset uses seed + 1


@dataclasses.dataclass(frozen=True)
class PTQSettings:
    """One ``lowp ptq`` run: the task and FP32 training (``epochs`` None: the task's), the calibration subset, the
    method and the grid of its options (every combination of the tuple-valued options of the method is one
    configuration). ``group`` None: 4 for ``fgq``, 64 for ``ternary-residual``. ``edge_bits`` 0: the first and last
    layers are ternary too (ternary methods)."""

    method: str
    out: str
    task: str = "digits-mlp"
    epochs: int | None = None
    retrain: bool = False
    seed: int = 0
    calib_samples: int = 512
    calibration: tuple[str, ...] = ("minmax",)
    act_bits: tuple[int, ...] = (8,)
    weight_bits: int = 8
    granularity: tuple[str, ...] = ("channel",)
    asymmetric: tuple[bool, ...] = (False,)
    skip_first: bool = False
    skip_last: bool = False
    group: tuple[int, ...] | None = None
    ternary_method: str = "optimal"
    edge_bits: int = 8
    cluster: tuple[int, ...] = (4,)
    kind: tuple[str, ...] = ("ternary",)
    terms: tuple[int, ...] = (1, 2, 3)
    max_terms: int = 4
    budget_bytes: int | None = None
    block: int | None = None
    execute: bool = False
    exec_repeats: int = 5

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown PTQ method {self.method!r}; valid: {', '.join(METHODS)}")
        for f in dataclasses.fields(self):  # lists (argparse nargs) become tuples: the settings stay immutable
            v = getattr(self, f.name)
            if isinstance(v, list):
                object.__setattr__(self, f.name, tuple(v))

    @classmethod
    def from_mapping(cls, d: Any) -> "PTQSettings":
        """The settings from a mapping (or an ``argparse.Namespace``) holding at least ``method`` and ``out``;
        other keys are ignored."""
        d = vars(d) if not isinstance(d, dict) else d
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @property
    def groups(self) -> tuple[int, ...]:
        if self.group is not None:
            return self.group
        return (4,) if self.method == "fgq" else (64,)

    @property
    def edge(self) -> int | None:
        return None if self.edge_bits == 0 else self.edge_bits


# ------------------------------------------------------------------------------------------------ configurations

def configurations(s: PTQSettings) -> list[tuple[dict[str, Any], Callable]]:
    """(options, quantizer(model, calib) -> model) for every combination of the method's options; each config
    validates its options (bits, groups, ...)."""
    from ..techniques import cluster as C, fgq as F, ptq as P, ternary_residual as R
    out = []
    if s.method == "int8":
        for gran, cal, asym, ab in itertools.product(s.granularity, s.calibration, s.asymmetric, s.act_bits):
            cfg = P.PTQConfig(weight_bits=s.weight_bits, weight_granularity=gran, weight_symmetric=not asym,
                              act_bits=ab, act_symmetric=not asym, calibration=cal,
                              skip_first=s.skip_first, skip_last=s.skip_last)
            out.append((cfg.to_dict(), lambda m, c, cfg=cfg: P.ptq_int8(m, c, cfg)))
    elif s.method == "fgq":
        for n, ab in itertools.product(s.groups, s.act_bits):
            cfg = F.FGQConfig(group=n, method=s.ternary_method, act_bits=ab, calibration=s.calibration[0],
                              edge_bits=s.edge)
            out.append((cfg.to_dict(), lambda m, c, cfg=cfg: F.fgq(m, c, cfg)))
    elif s.method == "cluster":
        for n, kind, ab in itertools.product(s.cluster, s.kind, s.act_bits):
            cfg = C.ClusterConfig(cluster=n, kind=kind, method=s.ternary_method, act_bits=ab,
                                  calibration=s.calibration[0], edge_bits=s.edge)
            out.append((cfg.to_dict(), lambda m, c, cfg=cfg: C.cluster_quantize(m, c, cfg)))
    else:
        for r, n, ab in itertools.product(s.terms, s.groups, s.act_bits):
            cfg = R.ResidualConfig(group=n, method=s.ternary_method, terms=r, max_terms=max(r, s.max_terms),
                                   budget_bytes=s.budget_bytes, block=s.block, act_bits=ab,
                                   calibration=s.calibration[0], edge_bits=s.edge)
            out.append((cfg.to_dict(), lambda m, c, cfg=cfg: R.ternary_residual(m, c, cfg)))
    return out


def label(method: str, o: dict[str, Any]) -> str:
    """The short name of a configuration in the table and the plot."""
    if method == "int8":
        return (f"w{o['weight_bits']}-{o['weight_granularity']}-{o['calibration']}-a{o['act_bits']}"
                + ("-asym" if not o["weight_symmetric"] else ""))
    if method == "fgq":
        return f"N={o['group']} a{o['act_bits']}"
    if method == "cluster":
        return f"{o['kind']} N={o['cluster']} a{o['act_bits']}"
    return f"r={o['terms']} N={o['group']} a{o['act_bits']}" + (f" budget={o['budget_bytes']}" if o["budget_bytes"] else "")


# ----------------------------------------------------------------------------------------- training, evaluation

def train_fp32(task: Task, epochs: int, seed: int) -> nn.Module:
    """The FP32 model of ``task``: ``train_epochs`` (the loop of ``lowp compare``) with the task's optimiser and
    hyper-parameters, seed ``seed``, ``epochs`` epochs, under ``lowp.LowpOptimizer`` with the ``fp32`` recipe (no
    rounding, no loss scaling) and without ``lowp.emulate``. Returned in eval mode. A non-finite training loss is a
    ValueError."""
    from ..recipes.optim import LowpOptimizer

    settings = RunSettings(task.name, seed, epochs, task.lr, task.batch_size)
    task, recipe, data, model = prepare_run(task, "fp32", settings)
    base = task.make_optimizer(model.parameters(), settings.lr)
    state = train_epochs(task, data, settings, model, LowpOptimizer(base, recipe), base)
    if state.diverged_at is not None:
        d = state.diverged_at
        raise ValueError(f"FP32 training of task {task.name!r} diverged (loss {d['loss']} at epoch {d['epoch']}, "
                         f"step {d['step']}); post-training quantization needs a trained FP32 model")
    return model.eval()


@torch.no_grad()
def eval_outputs(model: nn.Module, task: Task, data: TaskData) -> torch.Tensor:
    """The model's logits on the whole test set (eval mode, batches of the task's ``eval_batch_size``)."""
    model.eval()
    return torch.cat([model_logits(call_model(model, xb)) for xb, _ in eval_batches(data, task.eval_batch_size)])


def fidelity(out: torch.Tensor, ref: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """How close a quantized model's test outputs ``out`` are to the FP32 model's ``ref``, independently of the
    labels: ``fp32_agreement`` = fraction of counted test positions (targets ≠ −100) whose top-1 prediction equals
    the FP32 model's; ``output_rel_error`` = ||out − ref||² / ||ref||²."""
    keep = y != -100 if y.shape == out.shape[:-1] else torch.ones(out.shape[:-1], dtype=torch.bool)
    same = (out.argmax(-1) == ref.argmax(-1)) & keep
    err = float(((out.double() - ref.double()) ** 2).sum() / ((ref.double() ** 2).sum()).clamp(min=1e-300))
    return {"fp32_agreement": int(same.sum()) / max(int(keep.sum()), 1), "output_rel_error": err}


# -------------------------------------------------------------------------------------------------------- the run

def ptq_task(name: str) -> tuple[Task, TaskData]:
    """The task and its in-memory data; a task that streams its data is a ValueError (PTQ calibrates on and
    evaluates tensors)."""
    task = get_task(name)
    data = task.load_data()
    if not isinstance(data, TaskData):
        raise ValueError(f"task {name!r} streams its data ({type(data).__name__}); lowp ptq needs a task with "
                         "in-memory tensors (TaskData)")
    return task, data


def validate(s: PTQSettings) -> tuple[Task, TaskData, list]:
    """The validation pass, before anything is written or trained: numbers in range, every configuration of the
    grid, the task, the output folder (created, and probed for writing). Returns (task, data, configurations)."""
    if isinstance(s.seed, bool) or not 0 <= s.seed <= MAX_SEED:
        raise ValueError(f"--seed must be an integer in 0..{MAX_SEED}, got {s.seed}")
    if s.calib_samples < 1:
        raise ValueError(f"--calib-samples must be positive, got {s.calib_samples}")
    if s.exec_repeats < 1:
        raise ValueError(f"--exec-repeats must be positive, got {s.exec_repeats}")
    if s.edge_bits != 0 and not 2 <= s.edge_bits <= 16:
        raise ValueError(f"--edge-bits must be 0 (ternary too) or in 2..16, got {s.edge_bits}")
    confs = configurations(s)
    task, data = ptq_task(s.task)
    if os.path.exists(s.out) and not os.path.isdir(s.out):
        raise ValueError(f"output path {s.out!r} exists and is not a directory")
    try:
        os.makedirs(s.out, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".probe-", dir=s.out)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ValueError(f"cannot write to output directory {s.out!r}: {e.strerror or e}") from None
    return task, data, confs


def run_ptq(s: PTQSettings) -> dict[str, Any]:
    """Validate, then (holding the lock on ``s.out``) load or train the FP32 model, quantize it with every
    configuration, evaluate, write the outputs and print the table. Returns the results (as in results.json)."""
    from .io import locked_dir

    task, data, confs = validate(s)
    with locked_dir(s.out, "lowp ptq"):
        return _run(s, task, data, confs)


def fp32_model(s: PTQSettings, task: Task, epochs: int) -> nn.Module:
    """The cached FP32 model of these settings, or a freshly trained one (then cached)."""
    key = cache_key(task, epochs, s.seed)
    path = cache_path(s.out, key)
    torch.manual_seed(s.seed)  # the same RNG state after a load as after training (one model built after the seed)
    model = task.build_model()
    why = "--retrain" if s.retrain else ("absent" if not os.path.exists(path) else load_cached(path, key, model))
    if why is None:
        print(f"loaded FP32 model from {path}")
        return model.eval()
    if why not in ("absent", "--retrain"):
        print(f"lowp ptq: warning: discarding the FP32 model cache {path}: {why}; retraining", file=sys.stderr)
    t0 = time.time()
    model = train_fp32(task, epochs, s.seed)
    save_cached(path, key, model)
    print(f"trained FP32 {task.name} in {time.time() - t0:.1f}s -> {path}")
    return model


def _time_eval(model: nn.Module, task: Task, data: TaskData, repeats: int) -> float:
    """Median wall time (s) of the model's forward pass over the whole test set (eval batches)."""
    batches = [xb for xb, _ in eval_batches(data, task.eval_batch_size)]
    ts = []
    with torch.inference_mode():
        for _ in range(repeats + 1):  # the first pass warms up (prepacking, oneDNN primitives)
            t0 = time.perf_counter()
            for xb in batches:
                call_model(model, xb)
            ts.append(time.perf_counter() - t0)
    return statistics.median(ts[1:])


def exec_rows(s: PTQSettings, task: Task, data: TaskData, model: nn.Module, ref: torch.Tensor,
              quantized: list[tuple[str, dict, nn.Module]]) -> list[dict[str, Any]]:
    """``--exec``: the real low-precision execution paths of ``lowp.techniques.lowp_exec``, measured: BF16 (every
    Linear/Conv in bfloat16 on oneDNN) and INT8 with dynamic per-tensor activation scales (``Int8Linear``: int8
    weights per channel, fbgemm or ``torch._int_mm``) from the FP32 model, and INT8 with the calibrated static
    activation scale of each int8 configuration with 8-bit symmetric weights per channel and activations. Each row:
    the test metric, the fidelity to FP32, and the median time of a forward pass over the test set against the FP32
    model's in the same process (``speedup`` = FP32 time / its time; the threads torch uses are recorded)."""
    from ..techniques.lowp_exec import to_bf16, to_int8

    cands = [("bf16 (oneDNN)", to_bf16(model)), ("int8 dynamic (fbgemm/_int_mm)", to_int8(model, static=False))]
    for lab, opts, q in quantized:
        if (opts.get("weight_bits") == 8 and opts.get("act_bits") == 8 and opts.get("weight_symmetric")
                and opts.get("act_symmetric") and opts.get("weight_granularity") == "channel"):
            cands.append((f"int8 static ({lab})", to_int8(q, static=True)))
    t_fp32 = _time_eval(model, task, data, s.exec_repeats)
    rows = []
    for lab, m in cands:
        t = _time_eval(m, task, data, s.exec_repeats)
        rows.append({"label": lab, "metric": evaluate(m, task, data),
                     **fidelity(eval_outputs(m, task, data), ref, data.y_test),
                     "time_s": t, "fp32_time_s": t_fp32, "speedup": t_fp32 / t, "threads": torch.get_num_threads()})
    return rows


def _run(s: PTQSettings, task: Task, data: TaskData, confs: list) -> dict[str, Any]:
    from ..techniques.ptq import model_stats

    epochs = task.epochs if s.epochs is None else s.epochs
    model = fp32_model(s, task, epochs)
    fp32 = evaluate(model, task, data)
    ref = eval_outputs(model, task, data)
    g = torch.Generator().manual_seed(s.seed + 1)
    cal_idx = torch.randperm(len(data.y_train), generator=g)[: s.calib_samples]
    calib = list(data.x_train[cal_idx].split(128))
    res = {"task": task.name, "method": s.method, "seed": s.seed, "epochs": epochs, "lr": task.lr,
           "batch_size": task.batch_size, "metric_name": task.metric_name,
           "fp32_metric": fp32, "fp32_bytes": 4 * sum(p.numel() for p in model.parameters()),
           "calib_samples": len(cal_idx), "configs": []}
    quantized = []
    for opts, fn in confs:
        t0 = time.time()
        q = fn(model, calib)
        acc = evaluate(q, task, data)
        fid = fidelity(eval_outputs(q, task, data), ref, data.y_test)
        st = model_stats(q)
        res["configs"].append({"method": s.method, "label": label(s.method, opts), "options": opts,
                               "metric": acc, "fp32_metric": fp32, "fp32_delta": acc - fp32, **fid,
                               "weight_bits": st["weight_bits"],
                               "size_bytes": st["size_bytes"], "mults": st["mults"], "macs": st["macs"],
                               "mult_fraction_replaced": st["mult_fraction_replaced"],
                               "wall_s": time.time() - t0})
        if s.execute:
            quantized.append((res["configs"][-1]["label"], opts, q))
    if s.execute:
        res["exec"] = exec_rows(s, task, data, model, ref, quantized)
    print(write_outputs(s.out, res))
    return res
