"""Task data beyond in-memory tensors (lowp.experiments.data) and HF-style model outputs (Task.forward): a map-style
Dataset over the same tensors trains bit-identically to TaskData; DataLoader factories and IterableDatasets stream
batch by batch; steps_per_epoch caps an epoch; a model returning ``.logits`` trains as the plain model does, and
with ``pass_labels`` the model's own ``.loss`` is the training loss."""
import dataclasses

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from lowp.experiments import tasks as T
from lowp.experiments.data import StreamData, TaskData, TrainSource, eval_batches
from lowp.experiments.train import RunSettings, train_run


def small_digits() -> TaskData:
    d = T.digits_data()
    return TaskData(d.x_train[:300], d.y_train[:300], d.x_test[:100], d.y_test[:100])


def tensor_task(**kw) -> T.Task:
    return T.Task("t-tensors", lambda: T.mlp((64, 32, 10)), small_digits, epochs=2, lr=0.05, batch_size=32, **kw)


class PairDataset(Dataset):
    """Map-style, one sample per __getitem__ (no __getitems__)."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def dataset_data() -> StreamData:
    d = small_digits()
    return StreamData(PairDataset(d.x_train, d.y_train), TensorDataset(d.x_test, d.y_test))


def _history(task, seed=0):
    res = train_run(task, "fp32", RunSettings(task.name, seed, task.epochs, task.lr, task.batch_size), progress=False)
    assert res.error is None, res.error
    return [(h["train_loss"], h["test_metric"]) for h in res.history], res.steps


def test_map_style_dataset_trains_like_tensors():
    ref = _history(tensor_task())
    got = _history(dataclasses.replace(tensor_task(), name="t-ds", load_data=dataset_data))
    assert got == ref  # same permutation, same batches, same bits
    assert ref[1] == 2 * 10  # ceil(300 / 32) steps per epoch


def test_steps_per_epoch_caps_epochs():
    hist, steps = _history(dataclasses.replace(tensor_task(), steps_per_epoch=3))
    assert steps == 6 and len(hist) == 2
    src = TrainSource(small_digits())
    assert src.steps_per_epoch(32) == 10 and src.steps_per_epoch(32, 3) == 3 and src.steps_per_epoch(32, 50) == 10


def test_dataloader_factory_streams_and_is_deterministic():
    d = small_digits()
    calls = []

    def train(bs, gen):
        calls.append(bs)
        return DataLoader(TensorDataset(d.x_train, d.y_train), batch_size=bs, shuffle=True, generator=gen)

    def test(bs, gen):
        return DataLoader(TensorDataset(d.x_test, d.y_test), batch_size=bs)

    task = dataclasses.replace(tensor_task(), name="t-factory", load_data=lambda: StreamData(train, test))
    a, b = _history(task), _history(task)
    assert a == b and a[1] == 20
    assert all(bs == 32 for bs in calls)
    # shuffled by the loop's generator: a different seed gives a different run
    assert _history(task, seed=1)[0] != a[0]


class Stream(IterableDataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __iter__(self):
        return iter(zip(self.x, self.y))


def test_iterable_dataset_needs_steps_or_length():
    d = small_digits()
    data = StreamData(Stream(d.x_train, d.y_train), Stream(d.x_test, d.y_test))
    task = dataclasses.replace(tensor_task(), name="t-iter", load_data=lambda: data)
    with pytest.raises(ValueError, match="no length; set the task's steps_per_epoch"):
        TrainSource(data, "t-iter").steps_per_epoch(32)
    hist, steps = _history(dataclasses.replace(task, steps_per_epoch=4))
    assert steps == 8 and 0 < hist[-1][1] <= 1
    xs = torch.cat([x for x, _ in eval_batches(data, 30)])
    assert torch.equal(xs, d.x_test)


def test_stream_data_rejects_other_things():
    with pytest.raises(TypeError, match="StreamData.train must be"):
        StreamData([1, 2, 3], lambda bs, g: [])

    class NoLen(Dataset):
        def __getitem__(self, i):
            return i

    with pytest.raises(TypeError, match="needs __len__"):
        StreamData(NoLen(), lambda bs, g: [])
    task = dataclasses.replace(tensor_task(), load_data=lambda: {"x": 1})
    res = train_run(task, "fp32", RunSettings(task.name, 0, 1, 0.05, 32), progress=False)
    assert "not a TaskData or StreamData" in res.error


@dataclasses.dataclass
class Out:
    logits: torch.Tensor
    loss: torch.Tensor | None = None


class HFStyle(nn.Module):
    """The MLP of tensor_task returning an HF-like output; with labels, ``.loss`` is ``scale`` × cross-entropy."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.net, self.scale = T.mlp((64, 32, 10)), scale

    def forward(self, x, labels=None):
        logits = self.net(x)
        loss = None if labels is None else self.scale * nn.functional.cross_entropy(logits, labels)
        return Out(logits, loss)


def test_hf_style_logits_train_like_the_plain_model():
    ref = _history(tensor_task())
    got = _history(dataclasses.replace(tensor_task(), name="t-hf", build_model=HFStyle))
    # same initial weights (same seed, same parameter shapes and order), same logits, same loss
    assert got == ref


def test_pass_labels_trains_on_the_models_loss():
    task = dataclasses.replace(tensor_task(), name="t-hf-loss", build_model=lambda: HFStyle(scale=0.0),
                               pass_labels=True)
    hist, _ = _history(task)
    assert all(h[0] == 0.0 for h in hist)  # the model's .loss (0 × CE) was used, not loss_fn
    m, x, y = HFStyle(scale=2.0), small_digits().x_train[:8], small_digits().y_train[:8]
    logits, loss = task.forward(m, x, y)
    assert logits.shape == (8, 10)
    assert float(loss.detach()) == float(2.0 * nn.functional.cross_entropy(m.net(x), y).detach())
    logits, loss = dataclasses.replace(task, pass_labels=False).forward(m, x, y)
    # without labels: loss_fn(logits, y)
    assert float(loss.detach()) == float(nn.functional.cross_entropy(logits, y).detach())


def test_model_logits_rule():
    t = torch.ones(2, 3)
    assert T.model_logits(t) is t
    assert T.model_logits(Out(t)) is t
    assert T.model_logits({"logits": t}) is t
    with pytest.raises(TypeError, match="expected a Tensor or an object with .logits"):
        T.model_logits((t,))


def test_mapping_inputs_are_keyword_arguments():
    class KW(nn.Module):
        def forward(self, input_ids, attention_mask=None, labels=None):
            return input_ids.float() * attention_mask

    x = {"input_ids": torch.tensor([[1, 2]]), "attention_mask": torch.tensor([[1.0, 0.0]])}
    assert torch.equal(T.call_model(KW(), x), torch.tensor([[1.0, 0.0]]))


def test_direction_and_new_fields_validated():
    assert tensor_task().direction == "max"
    assert tensor_task(higher_is_better=False).direction == "min"
    with pytest.raises(ValueError, match="higher_is_better must be True or False"):
        tensor_task(higher_is_better="min")
    with pytest.raises(ValueError, match="steps_per_epoch must be a positive int"):
        tensor_task(steps_per_epoch=0)
    with pytest.raises(ValueError, match="eval_batch_size must be a positive int"):
        tensor_task(eval_batch_size=0)
    d = tensor_task(higher_is_better=False, metric_unit="nats/token").defaults()
    assert (d["higher_is_better"], d["metric_unit"]) == (False, "nats/token")


def test_token_loss_counts_is_summed_cross_entropy():
    torch.manual_seed(0)
    out, y = torch.randn(2, 5, 7), torch.randint(0, 7, (2, 5))
    y[0, 0] = -100
    s, n = T.token_loss_counts(out, y)
    keep = y != -100
    assert n == int(keep.sum()) == 9
    ref = -torch.log_softmax(out.double(), -1).gather(-1, y.clamp(min=0)[..., None])[..., 0][keep].sum()
    assert s == pytest.approx(float(ref), rel=1e-6)


def test_warmup_then_cosine():
    from lowp.experiments.train import _lr_at

    t = tensor_task(warmup_steps=4)
    assert [_lr_at(t, 1.0, s, 100) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert _lr_at(t, 1.0, 50, 100) == pytest.approx(0.5) and _lr_at(t, 1.0, 100, 100) == pytest.approx(0.0)
    assert _lr_at(tensor_task(), 1.0, 0, 100) == 1.0  # no warm-up by default: the schedule of every other task
    with pytest.raises(ValueError, match="warmup_steps must be an int >= 0"):
        tensor_task(warmup_steps=-1)
