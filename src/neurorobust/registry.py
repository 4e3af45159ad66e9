"""Name -> constructor registries, one per kind (after timm's ``register_model``).

Each entry keeps the constructor, its default parameters (as data, next to the constructor)
and the paper it comes from. ``create(name, **overrides)`` rejects keys the constructor does
not take; an unknown name lists close matches.

Examples
--------
>>> from neurorobust.registry import Registry
>>> SHAPES = Registry("shape")
>>> @SHAPES.register("square", defaults={"side": 2}, paper="Euclid, Elements")
... def square(side: int = 1) -> int:
...     '''A square's area.'''
...     return side * side
>>> SHAPES.create("square")
4
>>> SHAPES.create("square", side=3)
9
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidParameterError, UnknownNameError

__all__ = ["Entry", "Registry", "signature_of"]


def signature_of(
    target: Callable[..., Any], *, drop: tuple[str, ...] = (), returns: Any = inspect.Signature.empty
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: give a thin registered constructor that forwards ``**kwargs`` the signature of ``target``.

    timm's ``register_model`` functions forward their keywords instead of copying the network's
    parameters; the copied ``__signature__`` (less ``drop``, e.g. the parameters the forwarder fixes
    itself) lets :meth:`Registry.create` list the defaults and reject any key ``target`` does not take.

    >>> class Net:
    ...     def __init__(self, width: int = 8, depth: int = 2) -> None: ...
    >>> @signature_of(Net, drop=("depth",))
    ... def net(**kwargs): return Net(depth=3, **kwargs)
    >>> str(inspect.signature(net))
    '(width: int = 8)'
    """

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        sig = inspect.signature(target)
        params = [p for p in sig.parameters.values() if p.name not in drop]
        fn.__signature__ = sig.replace(parameters=params, return_annotation=returns)  # type: ignore[attr-defined]
        return fn

    return decorate


@dataclass(frozen=True)
class Entry:
    """One registered constructor with its defaults and provenance."""

    name: str
    constructor: Callable[..., Any]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    paper: str | None = None
    tags: tuple[str, ...] = ()
    #: Bumped when a fix changes what the constructor builds or trains; part of the train key when > 1.
    version: int = 1

    @property
    def summary(self) -> str:
        """First line of the constructor's docstring."""
        doc = inspect.getdoc(self.constructor) or ""
        return doc.splitlines()[0] if doc else ""

    def parameters(self) -> dict[str, Any]:
        """The constructor's keyword parameters with their effective defaults."""
        params: dict[str, Any] = {}
        for p in inspect.signature(self.constructor).parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            params[p.name] = p.default if p.default is not inspect.Parameter.empty else None
        params.update(self.defaults)
        return params


class Registry:
    """A registry of constructors of one kind (datasets, models, mechanisms, attacks, ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(
        self,
        name: str,
        *,
        defaults: Mapping[str, Any] | None = None,
        paper: str | None = None,
        tags: tuple[str, ...] = (),
        version: int = 1,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator registering ``fn`` under ``name``; a duplicate name raises ``ValueError``.

        ``version``: bump it when a fix changes what ``fn`` builds or how it trains, so that cached
        checkpoints and results of this entry alone stop matching (others stay valid).
        """

        def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            entry = Entry(name, fn, dict(defaults or {}), paper, tuple(tags), int(version))
            self._check_defaults(entry)
            self._entries[name] = entry
            return fn

        return decorator

    def get(self, name: str) -> Entry:
        """The entry for ``name``; an unknown name raises :class:`UnknownNameError` with suggestions."""
        try:
            return self._entries[name]
        except KeyError:
            close = difflib.get_close_matches(str(name), self._entries, n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise UnknownNameError(
                f"Unknown {self.kind} {name!r}.{hint} Known: {', '.join(sorted(self._entries))}. "
                f"Run `neurorobust list {self.kind}s` for details."
            ) from None

    def create(self, name: str, **overrides: Any) -> Any:
        """Build ``name`` with its registered defaults updated by ``overrides``."""
        entry = self.get(name)
        accepted = self._accepted(entry)
        unknown = sorted(set(overrides) - set(accepted)) if accepted is not None else []
        if unknown:
            raise InvalidParameterError(
                unknown[0],
                f"{self.kind} {name!r}",
                "one of " + ", ".join(repr(a) for a in sorted(accepted or ())),
                overrides[unknown[0]],
            )
        kwargs = {**entry.defaults, **overrides}
        return entry.constructor(**kwargs)

    def names(self, pattern: str | None = None, *, tag: str | None = None) -> list[str]:
        """Sorted names, optionally filtered by a wildcard ``pattern`` and a ``tag``."""
        out = [
            n
            for n, e in self._entries.items()
            if (pattern is None or fnmatch.fnmatch(n, pattern)) and (tag is None or tag in e.tags)
        ]
        return sorted(out)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries[n] for n in sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def _accepted(entry: Entry) -> list[str] | None:
        params = inspect.signature(entry.constructor).parameters.values()
        if any(p.kind is p.VAR_KEYWORD for p in params):
            return None
        return [p.name for p in params if p.kind is not p.VAR_POSITIONAL]

    def _check_defaults(self, entry: Entry) -> None:
        accepted = self._accepted(entry)
        if accepted is None:
            return
        extra = set(entry.defaults) - set(accepted)
        if extra:
            raise ValueError(f"defaults of {self.kind} {entry.name!r} name unknown parameters {sorted(extra)}")
