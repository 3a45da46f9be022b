"""Tasks for ``lowp compare``: a model factory, an offline data set, a loss, a metric and default hyper-parameters.

Built in (all offline; sizes chosen for 2 CPU cores):

- ``digits-mlp``       scikit-learn's bundled 8×8 digits, fixed stratified 1437/360 split, MLP 64-128-64-10.
- ``mnist1d-mlp``      MNIST-1D (``mnist1d`` package, generated, standard 4000/1000 split), MLP 40-256-256-10
                       (published MLP baseline ≈ 68%).
- ``mnist1d-cnn``      MNIST-1D, 3-layer 1-D CNN (32 channels) + linear head (published CNN baseline ≈ 94%).
- ``resnet-mini``      digits 8×8 as images, a small residual CNN (two residual blocks with BatchNorm, 16 channels).
- ``tiny-transformer`` a 2-layer causal decoder (d=32, 2 heads) on a generated *sort* task: given 8 digits and a
                       separator, emit them sorted; metric = token accuracy on the 8 output positions (teacher
                       forcing). Its attention products go through ``lowp.ops.Matmul`` so recipes emulate them.
- ``tiny-transformer-accum`` the same model and data trained as one micro-batch of a large accumulated batch:
                       Adam, and the loss of each micro-batch (64 sequences, 512 target tokens) is its summed token
                       cross-entropy divided by the target-token count of the *global* batch, ``GLOBAL_TOKENS`` =
                       65,536 (128 micro-batches of 512 tokens, an ordinary language-model batch), as gradient
                       accumulation and data-parallel trainers normalise it. Only that one micro-batch is computed
                       per optimizer step (the other 127 would cost 127× the time on a CPU), so the backward pass
                       sees the gradient magnitudes of a 65k-token batch, 128× smaller than ``tiny-transformer``'s,
                       while FP32 training is that of plain 64-sequence batches (Adam's update does not depend on
                       the gradient's scale, ε = 1e-8 aside; measured: identical FP32 accuracy with and without the
                       division). The regime where FP8-E5M2 needs loss scaling (docs/results/numerics.md).

- ``tiny-gpt``         a decoder-only transformer (d 64, 2 layers, context 64, attention through
                       ``F.scaled_dot_product_attention``) on the bytes of ``pydoc_data.topics`` (Python's language
                       reference, shipped with Python), fixed 90/10 split; metric = validation loss in nats/token
                       (lower is better). ``tiny-gpt-hf``: the same on a Hugging Face GPT-2 built from a config
                       (needs ``transformers``). See ``lowp.experiments.textlm``.

The models are in ``lowp.experiments.models``, the data sets in ``lowp.experiments.data``; this module holds the
:class:`Task` type, its losses and metrics, and the registry. Users add their own with
``register_task(name, factory)``; ``factory()`` returns a :class:`Task` (or pass a Task). A task's data is
generated once per process and cached. ``lowp compare --task package.module:function`` imports a user's function returning a Task (``lowp.experiments.user_task``).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Callable

import torch
from torch import nn
import torch.nn.functional as F

# the data sets and models of the built-in tasks; SORT_LEN, SORT_VOCAB and StreamData are re-exported for users
from .data import SORT_LEN, SORT_VOCAB, StreamData, TaskData, digits_data, mnist1d_data, sort_data  # noqa: F401
from .models import ResNetMini, TinyDecoder, mlp, mnist1d_cnn


def classification_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the last axis of ``out``; targets equal to -100 are ignored (sequence tasks)."""
    return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1), ignore_index=-100)


def accuracy_counts(out: torch.Tensor, y: torch.Tensor) -> tuple[int, int]:
    """(correct, counted) of argmax predictions; targets equal to -100 are not counted."""
    pred = out.argmax(-1)
    keep = y != -100
    return int(((pred == y) & keep).sum()), int(keep.sum())


def token_loss_counts(out: torch.Tensor, y: torch.Tensor) -> tuple[float, int]:
    """(summed cross-entropy in nats, counted targets) over the last axis of ``out``; targets equal to -100 are not
    counted. As a metric: the mean loss per token (lower is better)."""
    keep = y != -100
    loss = F.cross_entropy(out.reshape(-1, out.shape[-1]).float(), y.reshape(-1), ignore_index=-100,
                           reduction="sum")
    return float(loss.detach()), int(keep.sum())


def model_logits(out: Any) -> torch.Tensor:
    """The logits of a model's output: the output itself when it is a tensor, else its ``.logits`` (an HF
    ``ModelOutput``, any object with that attribute, or a mapping with that key)."""
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if logits is None and isinstance(out, Mapping):
        logits = out.get("logits")
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"model output of type {type(out).__name__}: expected a Tensor or an object with .logits")
    return logits


def call_model(model: nn.Module, x: Any, labels: Any = None) -> Any:
    """``model(x)``, or ``model(**x)`` when ``x`` is a mapping (HF ``input_ids``, ``attention_mask``, ...); with
    ``labels`` given, also ``labels=labels``."""
    kw = {} if labels is None else {"labels": labels}
    if isinstance(x, Mapping):
        return model(**x, **kw)
    return model(x, **kw)


OPTIMIZERS = ("sgd", "adam")


@dataclasses.dataclass(frozen=True)
class Task:
    """A model + data + metric with default training hyper-parameters (SGD with momentum, cosine schedule, after a
    linear warm-up over ``warmup_steps`` steps when that is set).

    ``optimizer``: ``"sgd"`` (momentum ``momentum``) or ``"adam"`` (torch defaults: betas (0.9, 0.999), eps 1e-8;
    ``momentum`` unused); ``weight_decay`` is passed to either (L2). ``make_optimizer(params, lr)`` builds it.
    ``build_model()`` is called after ``torch.manual_seed(seed)``, so the initial weights depend only on the seed.

    **Data**: ``load_data()`` returns in-memory tensors (:class:`TaskData`) or a :class:`StreamData` of torch
    Datasets / DataLoader factories, streamed batch by batch (``lowp.experiments.data``). An epoch is one pass over
    the training data, or its first ``steps_per_epoch`` batches when that is set (required for a stream without a
    length). Evaluation reads the test data in batches of ``eval_batch_size``.

    **Model outputs** (one rule, :meth:`forward`): the model is called as ``model(x)`` (``model(**x)`` for a
    mapping ``x``), plus ``labels=y`` when ``pass_labels``. Its logits are the output itself if it is a tensor,
    else its ``.logits`` (HF-style ``ModelOutput``). The training loss is the output's ``.loss`` when
    ``pass_labels`` is set and the output has one (the model computes its own loss, e.g. HF's shifted causal-LM
    loss); otherwise ``loss_fn(logits, y)``. The metric always sees the logits.

    **Metric**: ``metric_counts(logits, y) -> (total, count)`` is summed over the test batches; the metric is
    Σ total / Σ count (accuracy: correct / counted; :func:`token_loss_counts`: mean cross-entropy per token).
    ``higher_is_better`` declares its direction (``direction`` is ``"max"`` or ``"min"``); ``metric_unit``
    ``"fraction"`` means a value in [0, 1] shown in percent with differences in percentage points, any other
    string (``"nats/token"``) is shown as is with that unit.
    """

    name: str
    build_model: Callable[[], nn.Module]
    load_data: Callable[[], TaskData]
    metric_name: str = "accuracy"
    epochs: int = 10
    lr: float = 0.05
    batch_size: int = 64
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine"
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = classification_loss
    metric_counts: Callable[[torch.Tensor, torch.Tensor], tuple[int, int]] = accuracy_counts
    description: str = ""
    optimizer: str = "sgd"
    higher_is_better: bool = True
    metric_unit: str = "fraction"
    steps_per_epoch: int | None = None
    eval_batch_size: int = 1000
    pass_labels: bool = False
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"task {self.name!r}: warmup_steps must be an int >= 0, got {self.warmup_steps!r}")
        if not isinstance(self.higher_is_better, bool):
            raise ValueError(f"task {self.name!r}: higher_is_better must be True or False, "
                             f"got {self.higher_is_better!r}")
        if not isinstance(self.metric_unit, str) or not self.metric_unit:
            raise ValueError(f"task {self.name!r}: metric_unit must be a non-empty string, got {self.metric_unit!r}")
        if self.steps_per_epoch is not None:
            v = self.steps_per_epoch
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"task {self.name!r}: steps_per_epoch must be a positive int or None, got {v!r}")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"task {self.name!r}: unknown schedule {self.schedule!r}; valid: cosine, constant")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"task {self.name!r}: unknown optimizer {self.optimizer!r}; "
                             f"valid: {', '.join(OPTIMIZERS)}")
        for f in ("epochs", "batch_size", "eval_batch_size"):
            v = getattr(self, f)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"task {self.name!r}: {f} must be a positive int, got {v!r}")
        if not self.lr > 0:
            raise ValueError(f"task {self.name!r}: lr must be > 0, got {self.lr!r}")

    def defaults(self) -> dict[str, Any]:
        """The serialisable description (everything but the callables)."""
        return {"name": self.name, "metric_name": self.metric_name, "epochs": self.epochs, "lr": self.lr,
                "batch_size": self.batch_size, "momentum": self.momentum, "weight_decay": self.weight_decay,
                "schedule": self.schedule, "optimizer": self.optimizer, "description": self.description,
                "higher_is_better": self.higher_is_better, "metric_unit": self.metric_unit,
                "steps_per_epoch": self.steps_per_epoch, "eval_batch_size": self.eval_batch_size,
                "pass_labels": self.pass_labels, "warmup_steps": self.warmup_steps}

    @property
    def direction(self) -> str:
        """``"max"`` (higher is better) or ``"min"``."""
        return "max" if self.higher_is_better else "min"

    def forward(self, model: nn.Module, x: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, training loss) of ``model`` on a batch, by the rule of the class docstring."""
        out = call_model(model, x, y if self.pass_labels else None)
        logits = model_logits(out)
        loss = getattr(out, "loss", None) if self.pass_labels else None
        if loss is None and self.pass_labels and isinstance(out, Mapping):
            loss = out.get("loss")
        return logits, (self.loss_fn(logits, y) if loss is None else loss)

    def make_optimizer(self, params, lr: float) -> torch.optim.Optimizer:
        """The base optimiser over ``params`` with peak learning rate ``lr`` (the training loop sets the schedule)."""
        if self.optimizer == "adam":
            return torch.optim.Adam(params, lr=lr, weight_decay=self.weight_decay)
        return torch.optim.SGD(params, lr=lr, momentum=self.momentum, weight_decay=self.weight_decay)


GLOBAL_TOKENS = 65536  # tiny-transformer-accum: target tokens of the global batch (128 micro-batches × 64 × 8)


def global_batch_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Token cross-entropy of one micro-batch, summed over its target tokens and divided by ``GLOBAL_TOKENS``, the
    target-token count of the global batch (gradient accumulation / data-parallel normalisation): with 512 target
    tokens per micro-batch, ``classification_loss(out, y) / 128``."""
    return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1), ignore_index=-100,
                           reduction="sum") / GLOBAL_TOKENS


# ----------------------------------------------------------------------------------------------------- registry

_REGISTRY: dict[str, Callable[[], Task] | Task] = {}


def register_task(name: str, factory: "Callable[[], Task] | Task", *, replace: bool = False) -> None:
    """Register a task under ``name``: ``factory()`` returns a :class:`Task` (or pass the Task itself).

    For ``lowp compare --jobs K`` with K > 1 the factory must be picklable (a module-level function)."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"a task name is a non-empty string, got {name!r}")
    if not (callable(factory) or isinstance(factory, Task)):
        raise TypeError(f"register_task({name!r}, ...): factory must be a Task or a callable returning one")
    if name in _REGISTRY and not replace:
        raise ValueError(f"task {name!r} is already registered (pass replace=True to override)")
    _REGISTRY[name] = factory


def task_names() -> list[str]:
    """Names of the registered tasks (built-in first)."""
    return list(_REGISTRY)


def is_task_path(name: str) -> bool:
    """Whether ``name`` is a user task path ``package.module:function`` or ``path/to/file.py:function`` (a name with
    a colon that is not registered)."""
    return isinstance(name, str) and ":" in name and name not in _REGISTRY


def task_factory(name: str) -> "Callable[[], Task] | Task":
    """The registered factory of ``name``, or the function a task path names (:func:`import_task_function`);
    ValueError listing the known names if neither."""
    if is_task_path(name):
        from .user_task import import_task_function

        return import_task_function(name)
    if name not in _REGISTRY:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(_REGISTRY)} "
                         "(or a path package.module:function)")
    return _REGISTRY[name]


def example_batch(task: Task, n: int = 8) -> tuple[tuple, dict]:
    """The first ``n`` training inputs of ``task`` as (positional, keyword) arguments of its model (a mapping
    batch, e.g. HF ``input_ids``/``attention_mask``, goes in as keywords)."""
    from .data import first_inputs

    x = first_inputs(task.load_data(), n)
    return ((), dict(x)) if isinstance(x, Mapping) else ((x,), {})


def get_task(name: str) -> Task:
    """The :class:`Task` registered as ``name``, or returned by the function of a task path."""
    f = task_factory(name)
    if isinstance(f, Task):
        return f
    if is_task_path(name):
        from .user_task import call_task_function

        return call_task_function(name, f)
    task = f()
    if not isinstance(task, Task):
        raise TypeError(f"task factory for {name!r} returned {type(task).__name__}, not a Task")
    return task


def _digits_mlp() -> Task:
    return Task("digits-mlp", lambda: mlp((64, 128, 64, 10)), digits_data, epochs=10, lr=0.05, batch_size=32,
                description="sklearn digits 8x8, MLP 64-128-64-10")


def _mnist1d_mlp() -> Task:
    return Task("mnist1d-mlp", lambda: mlp((40, 256, 256, 10)), mnist1d_data, epochs=20, lr=0.05, batch_size=64,
                description="MNIST-1D, MLP 40-256-256-10 (published MLP baseline ~68%)")


def _mnist1d_cnn() -> Task:
    return Task("mnist1d-cnn", mnist1d_cnn, mnist1d_data, epochs=10, lr=0.1, batch_size=64,
                description="MNIST-1D, 3-layer 1-D CNN, 32 channels (published CNN baseline ~94%)")


def _resnet_mini() -> Task:
    return Task("resnet-mini", ResNetMini, digits_data, epochs=8, lr=0.05, batch_size=32,
                description="sklearn digits 8x8, residual CNN (2 blocks, 16 channels, BatchNorm)")


def _tiny_transformer() -> Task:
    return Task("tiny-transformer", TinyDecoder, sort_data, metric_name="token_accuracy", epochs=6, lr=0.1,
                batch_size=64, description="causal decoder (2 layers, d=32, 2 heads) sorting 8 digits")


def _tiny_transformer_accum() -> Task:
    return Task("tiny-transformer-accum", TinyDecoder, sort_data, metric_name="token_accuracy", epochs=6, lr=0.003,
                batch_size=64, loss_fn=global_batch_loss, optimizer="adam",
                description="tiny-transformer as one 512-token micro-batch of a 65,536-token global batch "
                            "(loss summed / 65536), Adam")


def _tiny_gpt() -> Task:
    from .textlm import tiny_gpt_task  # textlm imports this module: loaded when the task is asked for

    return tiny_gpt_task()


def _tiny_gpt_hf() -> Task:
    from .textlm import tiny_gpt_hf_task

    return tiny_gpt_hf_task()


for _n, _f in [("digits-mlp", _digits_mlp), ("mnist1d-cnn", _mnist1d_cnn), ("mnist1d-mlp", _mnist1d_mlp),
               ("resnet-mini", _resnet_mini), ("tiny-transformer", _tiny_transformer),
               ("tiny-transformer-accum", _tiny_transformer_accum), ("tiny-gpt", _tiny_gpt),
               ("tiny-gpt-hf", _tiny_gpt_hf)]:
    register_task(_n, _f)
