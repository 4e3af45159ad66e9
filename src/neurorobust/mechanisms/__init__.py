"""Mechanism registry: functions or modules that turn or wrap a model (DESIGN §3).

Each mechanism issue (sleep, hebbian, stochastic, sgbn, cerebellum, foveation) registers its
mechanisms here; a spec's ``[mechanism]`` table names one.
"""

from __future__ import annotations

from ..registry import Registry

__all__ = ["MECHANISMS"]

MECHANISMS = Registry("mechanism")

from ..training.adversarial import finetune as _finetune  # noqa: E402

# Adversarial fine-tuning lives with the training loop (it is training, not a mechanism); the sleep
# paper's baseline registers it here so that the mechanism layer sits above training, never beside it.
MECHANISMS.register("finetune", paper="Tadros et al. 2020, ICLR (adversarial fine-tuning baseline, as coded)")(
    _finetune
)
from . import cerebellum as _cerebellum  # noqa: E402,F401
from . import distillation as _distillation  # noqa: E402,F401  (registers "distillation")
from . import foveation as _foveation  # noqa: E402,F401
from . import hebbian as _hebbian  # noqa: E402,F401
from . import sgbn as _sgbn  # noqa: E402,F401
from . import sleep as _sleep  # noqa: E402,F401  (registers "sleep")
from . import spectra as _spectra  # noqa: E402,F401
from . import stochastic as _stochastic  # noqa: E402,F401
