"""Declarative parameter constraints, checked in one place (after scikit-learn's ``_param_validation``).

Each public constructor declares a ``dict`` mapping parameter name to a constraint;
:func:`validate_params` checks the values and raises :class:`InvalidParameterError` with the
one wording of STYLE.md §7. Tests match the constraint keys against the signatures.

Examples
--------
>>> from neurorobust.validation import Interval, validate_params
>>> validate_params("Demo", {"k": Interval(int, 1, None)}, {"k": 3})
>>> validate_params("Demo", {"k": Interval(int, 1, None)}, {"k": 0})
Traceback (most recent call last):
...
neurorobust.errors.InvalidParameterError: The 'k' parameter of Demo must be an int in [1, inf). Got 0 instead.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

from .errors import InvalidParameterError

__all__ = ["Interval", "Options", "Sequence", "Type", "validate_params"]


class Constraint:
    """A predicate over one parameter value with a human description."""

    def is_satisfied_by(self, value: Any) -> bool:  # pragma: no cover - interface
        raise NotImplementedError

    def describe(self) -> str:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass(frozen=True)
class Interval(Constraint):
    """A number of ``kind`` (int or float) in an interval; ``None`` bounds are infinite."""

    kind: type
    low: float | None
    high: float | None
    closed: str = "both"  # "both", "left", "right", "neither"

    def is_satisfied_by(self, value: Any) -> bool:
        if isinstance(value, bool):
            return False
        if self.kind is int and not isinstance(value, Integral):
            return False
        if self.kind is float and not isinstance(value, Real):
            return False
        v = float(value)
        if math.isnan(v):
            return False
        left_ok = self.low is None or (v >= self.low if self.closed in ("both", "left") else v > self.low)
        right_ok = self.high is None or (v <= self.high if self.closed in ("both", "right") else v < self.high)
        return left_ok and right_ok

    def describe(self) -> str:
        lo = "-inf" if self.low is None else _num(self.low)
        hi = "inf" if self.high is None else _num(self.high)
        lb = "[" if self.closed in ("both", "left") and self.low is not None else "("
        rb = "]" if self.closed in ("both", "right") and self.high is not None else ")"
        article = "an" if self.kind is int else "a"
        return f"{article} {self.kind.__name__} in {lb}{lo}, {hi}{rb}"


@dataclass(frozen=True)
class Options(Constraint):
    """One of a fixed set of values (usually strings)."""

    values: tuple

    def __init__(self, values: Iterable[Any]) -> None:
        object.__setattr__(self, "values", tuple(values))

    def is_satisfied_by(self, value: Any) -> bool:
        return any(value == v and type(value) is type(v) for v in self.values)

    def describe(self) -> str:
        items = [repr(v) for v in self.values]
        if len(items) == 1:
            return items[0]
        return ", ".join(items[:-1]) + " or " + items[-1]


@dataclass(frozen=True)
class Type(Constraint):
    """An instance of a type (or a tuple of types); ``None`` allowed when ``optional``."""

    kinds: tuple
    optional: bool = False

    def __init__(self, *kinds: type, optional: bool = False) -> None:
        object.__setattr__(self, "kinds", kinds)
        object.__setattr__(self, "optional", optional)

    def is_satisfied_by(self, value: Any) -> bool:
        if value is None:
            return self.optional
        if bool not in self.kinds and isinstance(value, bool):
            return False
        return isinstance(value, self.kinds)

    def describe(self) -> str:
        names = " or ".join(f"a {k.__name__}" for k in self.kinds)
        return names + (" or None" if self.optional else "")


@dataclass(frozen=True)
class Sequence(Constraint):
    """A non-empty list or tuple whose items all satisfy ``item``."""

    item: Constraint
    min_len: int = 1

    def is_satisfied_by(self, value: Any) -> bool:
        return (
            isinstance(value, list | tuple)
            and len(value) >= self.min_len
            and all(self.item.is_satisfied_by(v) for v in value)
        )

    def describe(self) -> str:
        return f"a list of at least {self.min_len} item(s), each {self.item.describe()}"


@dataclass(frozen=True)
class AnyOf(Constraint):
    """Satisfied when any of the given constraints is."""

    options: tuple

    def __init__(self, *options: Constraint) -> None:
        object.__setattr__(self, "options", options)

    def is_satisfied_by(self, value: Any) -> bool:
        return any(c.is_satisfied_by(value) for c in self.options)

    def describe(self) -> str:
        return " or ".join(c.describe() for c in self.options)


def validate_params(caller: str, constraints: Mapping[str, Constraint], values: Mapping[str, Any]) -> None:
    """Raise :class:`InvalidParameterError` for the first value that breaks its constraint.

    Parameters
    ----------
    caller : str
        Name used in the message, e.g. ``"CerebellumNet"``.
    constraints : mapping of str to Constraint
        The declared constraints; parameters without one are not checked.
    values : mapping of str to object
        The parameter values, usually ``locals()`` of ``__init__`` filtered to the constraint keys.
    """
    for name, constraint in constraints.items():
        if name in values and not constraint.is_satisfied_by(values[name]):
            raise InvalidParameterError(name, caller, constraint.describe(), values[name])


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))
