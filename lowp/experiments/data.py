"""A task's data: in-memory tensors (:class:`TaskData`) or streamed sources (:class:`StreamData`), and the batches
the training loop and the evaluation draw from them.

A streamed source (the ``train`` or ``test`` of a :class:`StreamData`) is one of:

- a **map-style** ``torch.utils.data.Dataset`` (``__len__`` and ``__getitem__(i) -> (x, y)``): like tensors, each
  training epoch visits it in the order of ``torch.randperm(len, generator)``, ``batch_size`` samples at a time,
  fetched with ``__getitems__`` when the dataset has it (else one ``__getitem__`` per sample) and stacked with
  ``default_collate``; evaluation reads it in order. Data-parallel runs shard its index batches like tensors.
- an ``IterableDataset``: batched by ``DataLoader(ds, batch_size)`` in the dataset's own order, re-iterated from
  its start every epoch;
- a **DataLoader factory** ``f(batch_size, generator) -> iterable of (x, y) batches`` (e.g.
  ``lambda bs, g: DataLoader(ds, batch_size=bs, shuffle=True, generator=g)``), called once per training epoch with
  the loop's generator (seeded with the run's seed, so every recipe sees the same batches) and once per
  evaluation with the evaluation batch size and a generator seeded 0.

Inputs ``x`` may be tensors or mappings of tensors (passed to the model as keyword arguments, e.g. HF
``input_ids``/``attention_mask``). Nothing is held in memory beyond one batch unless the source holds it.

The built-in tasks' data sets (all offline, generated or shipped with a package, cached once per process):
:func:`digits_data` (scikit-learn's 8×8 digits), :func:`mnist1d_data` (MNIST-1D) and :func:`sort_data` (the
generated sorting sequences of the tiny transformers).
"""
from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset
from torch.utils.data._utils.collate import default_collate

DataLoaderFactory = Callable[[int, torch.Generator], Iterable]


@dataclasses.dataclass(frozen=True)
class TaskData:
    """Train and test tensors of a task (inputs float32 or int64, targets int64)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


@dataclasses.dataclass(frozen=True)
class StreamData:
    """Train and test data streamed batch by batch (see the module docstring for the kinds of source)."""

    train: Any
    test: Any

    def __post_init__(self) -> None:
        for name in ("train", "test"):
            src = getattr(self, name)
            if isinstance(src, IterableDataset) or _map_style(src):
                continue
            if isinstance(src, Dataset):
                raise TypeError(f"StreamData.{name}: a map-style Dataset needs __len__ "
                                f"({type(src).__name__} has none)")
            if not callable(src):
                raise TypeError(f"StreamData.{name} must be a torch Dataset, an IterableDataset or a DataLoader "
                                f"factory f(batch_size, generator), got {type(src).__name__}")


def head(x: Any, n: int = 1) -> Any:
    """The first ``n`` samples of a batch (a tensor or a mapping of tensors)."""
    if isinstance(x, Mapping):
        return {k: head(v, n) for k, v in x.items()}
    return x[:n]


def batch_len(y: Any) -> int:
    """Samples in a batch, from its targets (a tensor or a mapping of tensors)."""
    if isinstance(y, Mapping):
        y = next(iter(y.values()))
    return len(y)


def _map_style(src: Any) -> bool:
    return isinstance(src, Dataset) and not isinstance(src, IterableDataset) and hasattr(src, "__len__")


def _fetch(ds: Any, idx: torch.Tensor) -> tuple[Any, Any]:
    ids = idx.tolist()
    items = ds.__getitems__(ids) if hasattr(ds, "__getitems__") else [ds[i] for i in ids]
    x, y = default_collate(items)
    return x, y


class TrainSource:
    """The training side of a task's data, as the loop sees it.

    ``indexed``: batches are index tensors (tensors, map-style Dataset) that the loop may shard (data-parallel) and
    then ``fetch``; otherwise batches are ``(x, y)`` as the stream yields them. ``steps_per_epoch(bs, limit)``: the
    batches of one epoch (``limit``, the task's ``steps_per_epoch``, caps it)."""

    def __init__(self, data: TaskData | StreamData, task_name: str = "?") -> None:
        if isinstance(data, TaskData):
            self.src, self.indexed, self.n = data, True, len(data.x_train)
        elif isinstance(data, StreamData):
            self.src = data.train
            self.indexed = _map_style(self.src)
            self.n = len(self.src) if self.indexed else None
        else:
            raise TypeError(f"task {task_name!r}: load_data() returned {type(data).__name__}, "
                            "not a TaskData or StreamData")
        self.task_name = task_name

    def steps_per_epoch(self, batch_size: int, limit: int | None = None) -> int:
        if self.indexed:
            full = math.ceil(self.n / batch_size)
            return full if limit is None else min(full, limit)
        if limit is not None:
            return limit
        try:
            return len(self._stream(batch_size, torch.Generator().manual_seed(0)))
        except TypeError:
            raise ValueError(f"task {self.task_name!r}: its training stream has no length; set the task's "
                             "steps_per_epoch") from None

    def _stream(self, batch_size: int, gen: torch.Generator) -> Iterable:
        if isinstance(self.src, IterableDataset):
            return DataLoader(self.src, batch_size=batch_size)
        return self.src(batch_size, gen)

    def epoch(self, batch_size: int, gen: torch.Generator, limit: int | None = None) -> Iterator[Any]:
        """One epoch: index tensors (``indexed``) or ``(x, y)`` batches, at most ``limit`` of them."""
        if self.indexed:
            order = torch.randperm(self.n, generator=gen)
            for k, i in enumerate(range(0, self.n, batch_size)):
                if limit is not None and k >= limit:
                    return
                yield order[i:i + batch_size]
            return
        for k, batch in enumerate(self._stream(batch_size, gen)):
            if limit is not None and k >= limit:
                return
            yield batch

    def fetch(self, idx: torch.Tensor) -> tuple[Any, Any]:
        """The samples ``idx`` of an indexed source as one batch ``(x, y)``."""
        if isinstance(self.src, TaskData):
            return self.src.x_train[idx], self.src.y_train[idx]
        return _fetch(self.src, idx)

    def sample(self) -> Any | None:
        """One training input (batch of 1) for the techniques' epoch reports; None for a stream."""
        if isinstance(self.src, TaskData):
            return self.src.x_train[:1]
        if self.indexed:
            return _fetch(self.src, torch.tensor([0]))[0]
        return None


def eval_batches(data: TaskData | StreamData, batch: int) -> Iterator[tuple[Any, Any]]:
    """The test set as ``(x, y)`` batches of at most ``batch`` samples, in order."""
    if isinstance(data, TaskData):
        for i in range(0, len(data.x_test), batch):
            yield data.x_test[i:i + batch], data.y_test[i:i + batch]
        return
    src = data.test
    if _map_style(src):
        for i in range(0, len(src), batch):
            yield _fetch(src, torch.arange(i, min(i + batch, len(src))))
    elif isinstance(src, IterableDataset):
        yield from DataLoader(src, batch_size=batch)
    else:
        yield from src(batch, torch.Generator().manual_seed(0))


def first_inputs(data: TaskData | StreamData, n: int) -> Any:
    """The inputs of the first ``n`` training samples (a map-style Dataset's first ``n`` items; a stream's first
    batch of ``n``): an example batch for analyses of the model's GEMMs."""
    if isinstance(data, TaskData):
        return data.x_train[:n]
    src = TrainSource(data)
    if src.indexed:
        return src.fetch(torch.arange(min(n, src.n)))[0]
    return next(iter(src.epoch(n, torch.Generator().manual_seed(0), 1)))[0]


# ---------------------------------------------------------------------------------------------------- data sets

@functools.lru_cache(maxsize=None)
def digits_data() -> TaskData:
    """scikit-learn digits, pixels scaled to [0, 1], fixed stratified split (360 test images, random_state=0)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    xtr, xte, ytr, yte = train_test_split(x, d.target, test_size=360, random_state=0, stratify=d.target)
    t = torch.from_numpy
    return TaskData(t(xtr), t(ytr.astype(np.int64)), t(xte), t(yte.astype(np.int64)))


@functools.lru_cache(maxsize=None)
def mnist1d_data() -> TaskData:
    """MNIST-1D generated offline with the package's default arguments (seed 42): 4000 train, 1000 test, length 40."""
    from mnist1d.data import get_dataset_args, make_dataset

    d = make_dataset(get_dataset_args())
    f = lambda a: torch.tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    i = lambda a: torch.tensor(np.asarray(a), dtype=torch.int64)  # noqa: E731
    return TaskData(f(d["x"]), i(d["y"]), f(d["x_test"]), i(d["y_test"]))


SORT_LEN, SORT_VOCAB = 8, 10  # digits 0..9, separator token 10


@functools.lru_cache(maxsize=None)
def sort_data(n_train: int = 4000, n_test: int = 1000, seed: int = 1234) -> TaskData:
    """Sequence task: ``x = [a_1..a_8, SEP, s_1..s_7]``, target the next token, counted only on the 8 sorted outputs
    ``s_1..s_8`` (other positions are -100). Generated with a fixed NumPy seed."""
    rng = np.random.default_rng(seed)

    def make(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        a = rng.integers(0, SORT_VOCAB, size=(n, SORT_LEN))
        s = np.sort(a, axis=1)
        seq = np.concatenate([a, np.full((n, 1), SORT_VOCAB), s], axis=1)  # length 17
        x, y = seq[:, :-1], seq[:, 1:].copy()
        y[:, : SORT_LEN - 1] = -100  # no loss on predicting the (random) input digits
        y[:, SORT_LEN - 1] = -100     # nor on the separator
        return torch.tensor(x, dtype=torch.int64), torch.tensor(y, dtype=torch.int64)

    xtr, ytr = make(n_train)
    xte, yte = make(n_test)
    return TaskData(xtr, ytr, xte, yte)
