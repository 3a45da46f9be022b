"""lowp.experiments (see docs/architecture.md): tasks (``tasks``), the training loop (``train``), the comparison
(``compare``: ``lowp.compare``), its configuration (``config``) and report (``report``)."""
from .config import CompareConfig, RecipeEntry, load_config, parse_config
from .data import StreamData
from .tasks import Task, TaskData, get_task, register_task, task_names, token_loss_counts
from .train import RunResult, RunSettings, train_run

__all__ = ["Task", "TaskData", "StreamData", "token_loss_counts", "get_task", "register_task", "task_names",
           "RunSettings", "RunResult", "train_run", "CompareConfig", "RecipeEntry", "load_config", "parse_config"]
