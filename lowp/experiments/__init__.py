"""lowp.experiments (see docs/architecture.md): tasks (``tasks``), the training loop (``train``), the comparison
(``compare``: ``lowp.compare``), its configuration (``config``) and report (``report``)."""
from .config import CompareConfig, RecipeEntry, load_config, parse_config
from .tasks import Task, TaskData, get_task, register_task, task_names
from .train import RunResult, RunSettings, train_run

__all__ = ["Task", "TaskData", "get_task", "register_task", "task_names", "RunSettings", "RunResult", "train_run",
           "CompareConfig", "RecipeEntry", "load_config", "parse_config"]
