"""``lowp compare --tensorboard DIR``: per-epoch scalars of every run through ``torch.utils.tensorboard`` (the
optional ``tensorboard`` package: ``pip install lowp[tensorboard]``). One event-file folder per run,
``DIR/<recipe>/seed<k>``, so TensorBoard overlays recipes and seeds; tags ``train/loss``, ``test/<metric>``,
``train/skipped_steps`` and ``train/loss_scale`` (when the recipe scales the loss), against the epoch."""
from __future__ import annotations

import os

from . import io


def check_tensorboard(logdir: str) -> None:
    """A one-line ValueError when ``torch.utils.tensorboard`` cannot be imported or ``logdir`` is not a folder."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise ValueError("--tensorboard needs the tensorboard package: pip install tensorboard "
                         "(or pip install 'lowp[tensorboard]')") from None
    if os.path.exists(logdir) and not os.path.isdir(logdir):
        raise ValueError(f"tensorboard directory {logdir!r} exists and is not a directory")


def run_logdir(logdir: str, recipe: str, seed: int) -> str:
    return os.path.join(logdir, io.safe_filename(recipe), f"seed{seed}")


def write_run(logdir: str, res) -> str:
    """Write the per-epoch scalars of one :class:`RunResult`; returns its event folder."""
    from torch.utils.tensorboard import SummaryWriter

    path = run_logdir(logdir, res.recipe, res.seed)
    w = SummaryWriter(log_dir=path)
    try:
        for h in res.history:
            step = int(h["epoch"])
            for tag, key in (("train/loss", "train_loss"), (f"test/{res.metric_name}", "test_metric"),
                             ("train/skipped_steps", "skipped_steps"), ("train/loss_scale", "loss_scale")):
                v = h.get(key)
                if v is not None:
                    w.add_scalar(tag, float(v), step)
        if res.step_s is not None:
            w.add_scalar("time/step_s", float(res.step_s), 0)
    finally:
        w.close()
    return path
