"""Mechanism registry: functions or modules that turn or wrap a model (DESIGN §3).

Each mechanism issue (sleep, hebbian, stochastic, sgbn, cerebellum, foveation) registers its
mechanisms here; a spec's ``[mechanism]`` table names one. Empty until those land.
"""

from __future__ import annotations

from ..registry import Registry

__all__ = ["MECHANISMS"]

MECHANISMS = Registry("mechanism")

from ..training import adversarial as _adversarial  # noqa: E402,F401  (registers "finetune")
from . import distillation as _distillation  # noqa: E402,F401  (registers "distillation")
from . import sleep as _sleep  # noqa: E402,F401  (registers "sleep")
