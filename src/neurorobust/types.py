"""Small type aliases shared by every layer (this module imports nothing from the package)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["ProgressFn"]

#: A progress callback: called with one event dict (``{"event": ..., ...}``) per step of long work.
ProgressFn = Callable[[dict[str, Any]], None]
