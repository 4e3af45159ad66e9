"""Exceptions with one wording for every invalid input (STYLE.md §7).

Every user-facing error in neurorobust is a subclass of :class:`NeuroRobustError`;
the CLI catches that base class and prints its message without a traceback.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "DataError",
    "InvalidParameterError",
    "ModelOutputError",
    "NeuroRobustError",
    "SpecError",
    "StoreError",
    "TrainingDivergedError",
    "UnknownNameError",
    "describe_value",
]


class NeuroRobustError(Exception):
    """Base class of every error that the CLI reports as one clear message."""


class InvalidParameterError(NeuroRobustError, ValueError, TypeError):
    """A parameter has a wrong type or an impossible value.

    The message always reads ``The 'p' parameter of Caller must be <allowed>. Got <repr> instead.``
    """

    def __init__(self, name: str, caller: str, allowed: str, got: Any) -> None:
        self.name, self.caller, self.allowed, self.got = name, caller, allowed, got
        super().__init__(f"The {name!r} parameter of {caller} must be {allowed}. Got {describe_value(got)} instead.")


class UnknownNameError(NeuroRobustError, KeyError):
    """A registry lookup by an unknown name; the message lists close matches."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


class DataError(NeuroRobustError):
    """A dataset is missing, corrupt or malformed; the message says what to fix."""


class SpecError(NeuroRobustError):
    """An experiment spec is unreadable or invalid; the message names file and key path."""


class StoreError(NeuroRobustError):
    """The results store cannot be opened or has an incompatible schema."""


class ModelOutputError(NeuroRobustError):
    """A model returned NaN or infinite logits (or an attack's input gradient through it was NaN).

    A point where a model's output is not a number is never counted as robust: the evaluation stops
    with one message naming the model, so that the user can fix the model instead of reading an
    inflated robust accuracy.
    """

    def __init__(self, model: Any, what: str) -> None:
        name = model if isinstance(model, str) else type(model).__name__
        super().__init__(
            f"The model {name} {what}. A NaN or infinite output is never scored as robust: fix the model "
            "(e.g. a log of zero, a division by zero, an overflow in a custom layer) and evaluate again."
        )


class TrainingDivergedError(NeuroRobustError):
    """The training loss became NaN or infinite; nothing is saved (a diverged model is not a result)."""


def describe_value(value: Any) -> str:
    """Short repr for error messages: tensors and arrays by shape, long strings cut."""
    shape = getattr(value, "shape", None)
    if shape is not None and hasattr(value, "dtype"):
        return f"{type(value).__name__} of shape {tuple(shape)} and dtype {value.dtype}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
