"""neurorobust: biologically inspired mechanisms for adversarial robustness, evaluated honestly.

Subpackages: :mod:`~neurorobust.data`, :mod:`~neurorobust.models`, :mod:`~neurorobust.mechanisms`,
:mod:`~neurorobust.training`, :mod:`~neurorobust.attacks`, :mod:`~neurorobust.evaluation`,
:mod:`~neurorobust.experiments`, :mod:`~neurorobust.report`; the Python API is :mod:`neurorobust.api`.
"""

from __future__ import annotations

__version__ = "0.1.0"

from . import mechanisms as _mechanisms  # noqa: F401  (mechanism modules register their models too)
from .api import declare, evaluate, load, train

__all__ = ["__version__", "declare", "evaluate", "load", "train"]
