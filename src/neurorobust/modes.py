"""Switching a model to eval mode and back, module by module.

``model.train(flag)`` resets every submodule to ``flag``; a model that keeps, say, a dropout
submodule in train mode on purpose (MC dropout) would come back changed. :func:`eval_mode` saves
and restores each module's own mode instead; it is the one place the package switches modes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

__all__ = ["eval_mode", "restore_modes", "save_modes"]


def save_modes(model: nn.Module) -> list[tuple[nn.Module, bool]]:
    """Every module of ``model`` with its current ``training`` flag."""
    return [(m, m.training) for m in model.modules()]


def restore_modes(saved: list[tuple[nn.Module, bool]]) -> None:
    """Put back the flags :func:`save_modes` recorded."""
    for module, training in saved:
        module.training = training


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``with eval_mode(model):`` runs the block in eval mode and restores each module's own mode."""
    saved = save_modes(model)
    model.eval()
    try:
        yield model
    finally:
        restore_modes(saved)
