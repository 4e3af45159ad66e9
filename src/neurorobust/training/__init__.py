"""Training: the one loop (:func:`fit`) and safetensors checkpoints."""

from .checkpoint import checkpoint_paths, load_checkpoint, save_checkpoint
from .loop import History, augment_batch, fit, loss_fn, lr_at, predict_logits

__all__ = [
    "History",
    "augment_batch",
    "checkpoint_paths",
    "fit",
    "load_checkpoint",
    "loss_fn",
    "lr_at",
    "predict_logits",
    "save_checkpoint",
]
