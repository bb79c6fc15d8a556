"""One training loop for every stage that trains the policy (pretraining, SFT, rejection-sampling
fine-tuning, distillation): config, optimizer and schedule, batches, checkpoints, engines, MFU.
No Prefect or MLflow here; tracking goes through `tasks.tracking.MetricLogger`."""

from tasks.training.checkpoint import latest_checkpoint, load_weights, read_config, save_weights
from tasks.training.config import TrainConfig
from tasks.training.data import TokenBatches, eval_batches
from tasks.training.loop import train

__all__ = [
    "TrainConfig",
    "TokenBatches",
    "eval_batches",
    "train",
    "latest_checkpoint",
    "load_weights",
    "save_weights",
    "read_config",
]
