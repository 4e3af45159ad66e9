"""Switching a model to eval mode and back, module by module.

``model.train(flag)`` resets every submodule to ``flag``; a model that keeps, say, a dropout
submodule in train mode on purpose (MC dropout) would come back changed. :func:`eval_mode` saves
and restores each module's own mode instead; it is the one place the package switches modes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

__all__ = ["eval_mode", "restore_modes", "save_modes", "set_eval"]


def save_modes(model: nn.Module) -> list[tuple[nn.Module, bool]]:
    """Every module of ``model`` with its current ``training`` flag."""
    return [(m, m.training) for m in model.modules()]


def restore_modes(saved: list[tuple[nn.Module, bool]]) -> None:
    """Put back the flags :func:`save_modes` recorded."""
    for module, training in saved:
        module.training = training


def set_eval(model: nn.Module) -> None:
    """Put ``model`` in eval mode, except the dropout layers of a model that declares ``is_stochastic``.

    A user who declares a model random (``neurorobust.declare(model, stochastic=True)``) with its dropout
    layers in train mode (MC dropout) makes that randomness part of the defence: switching it off would
    evaluate another, deterministic model.
    """
    modules = list(model.modules())
    # the declaration may sit on a wrapped model (an attack's EOT/BPDA wrapper around the user's model)
    declared = any(getattr(m, "is_stochastic", False) is True for m in modules)
    keep = [m for m in modules if m.training and isinstance(m, nn.modules.dropout._DropoutNd)] if declared else []
    model.eval()
    for module in keep:
        module.training = True


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``with eval_mode(model):`` runs the block in eval mode (:func:`set_eval`) and restores each module's
    own mode."""
    saved = save_modes(model)
    set_eval(model)
    try:
        yield model
    finally:
        restore_modes(saved)
