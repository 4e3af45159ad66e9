"""Matplotlib set up once for the whole package: files only, never a window (the Agg backend).

Every module that draws imports ``plt`` from here instead of selecting a backend itself.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

__all__ = ["plt"]
