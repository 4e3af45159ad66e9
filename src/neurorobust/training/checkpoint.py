"""Checkpoints as safetensors (weights and buffers) + JSON (spec, history, metrics); no pickle.

``runs/checkpoints/<train_key>.safetensors`` and ``.json`` side by side. Writes go to a temporary
file and are renamed, so a killed process never leaves a half-written checkpoint.

An unfinished training run keeps its state (weights, optimiser, generator states, epoch, step,
history) beside them in ``<train_key>.partial.pt`` (:func:`partial_state_path`): a ``torch.save``
of tensors, numbers, strings, lists and dicts only, read back with ``torch.load(weights_only=True)``,
so no pickled code runs. The runner deletes it once the finished checkpoint is written.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import DataError

__all__ = [
    "checkpoint_paths",
    "load_checkpoint",
    "load_train_state",
    "partial_state_path",
    "save_checkpoint",
    "save_train_state",
]

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


def partial_state_path(folder: str | Path, key: str) -> Path:
    """Where an unfinished training run of ``key`` keeps its resumable state: ``<folder>/<key>.partial.pt``."""
    return Path(folder) / f"{key}.partial.pt"


def save_train_state(path: str | Path, state: dict[str, Any]) -> None:
    """Write a training state atomically: a temporary file in the same folder, then :func:`os.replace`.

    A kill at any moment leaves either the previous state or the new one, never half of one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only left behind when the write itself failed


def load_train_state(path: str | Path) -> dict[str, Any] | None:
    """The training state at ``path``; ``None`` when there is none or it cannot be read (a warning names the
    file, and the run starts again from scratch)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a foreign or damaged file
        logger.warning("%s cannot be read (%s); training starts from scratch", path, exc)
        return None
    if not isinstance(state, dict):
        logger.warning("%s holds no training state; training starts from scratch", path)
        return None
    return state
