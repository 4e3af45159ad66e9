"""Checkpoints as safetensors (weights and buffers) + JSON (spec, history, metrics); no pickle.

``runs/checkpoints/<train_key>.safetensors`` and ``.json`` side by side. Writes go to a temporary
file and are renamed, so a killed process never leaves a half-written checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import DataError

__all__ = ["checkpoint_paths", "load_checkpoint", "save_checkpoint"]

logger = logging.getLogger(__name__)


def checkpoint_paths(folder: str | Path, key: str) -> tuple[Path, Path]:
    """The ``(.safetensors, .json)`` paths of checkpoint ``key`` in ``folder``."""
    folder = Path(folder)
    return folder / f"{key}.safetensors", folder / f"{key}.json"


def save_checkpoint(folder: str | Path, key: str, model: nn.Module, meta: dict[str, Any]) -> Path:
    """Write the model's state dict and ``meta`` atomically; returns the weights path."""
    weights, info = checkpoint_paths(folder, key)
    weights.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    # unique temporary names: sweep workers may write the same key (e.g. a shared transfer source) at once
    tag = f".{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    tmp_w, tmp_j = weights.with_suffix(tag + ".safetensors"), info.with_suffix(tag + ".json")
    save_file(state, str(tmp_w))
    tmp_j.write_text(json.dumps(meta, indent=2, default=str))
    os.replace(tmp_w, weights)
    os.replace(tmp_j, info)  # the JSON lands last: its presence marks a complete checkpoint
    return weights


def load_checkpoint(folder: str | Path, key: str, model: nn.Module) -> dict[str, Any] | None:
    """Load checkpoint ``key`` into ``model``; returns its metadata.

    ``None`` when there is none, or when its tensors do not fit ``model`` (a checkpoint written before
    a mechanism changed its architecture): the caller retrains, and a warning names the file.
    """
    weights, info = checkpoint_paths(folder, key)
    if not (weights.is_file() and info.is_file()):
        return None
    try:
        state = load_file(str(weights))
        meta = json.loads(info.read_text())
    except Exception as exc:  # safetensors raises its own error types
        raise DataError(f"{weights}: cannot read checkpoint ({exc}); delete it or rerun with --force.") from None
    try:
        model.load_state_dict(state)
    except RuntimeError:  # missing/unexpected keys or shapes: written for another architecture
        theirs, ours = set(state), set(model.state_dict())
        diff = sorted(theirs ^ ours)[:3] or ["tensor shapes"]
        logger.warning(
            "%s was written for another architecture (differs in %s); it will be retrained", weights, ", ".join(diff)
        )
        return None
    model.eval()
    return meta
