"""Adversarial attacks: one batched engine, one base class, one registry (DESIGN §3, §5).

``ATTACKS.create(name, **params)`` builds an attack; calling it,
``attack(model, x, y, eps=..., generator=...)``, returns an :class:`AttackResult` (or a list of
them for a list of eps). See ``docs/attacks.md``.

Examples
--------
>>> import torch
>>> from torch import nn
>>> from neurorobust.attacks import ATTACKS
>>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
>>> x, y = torch.rand(6, 1, 2, 2), torch.zeros(6, dtype=torch.long)
>>> results = ATTACKS.create("fgsm")(model, x, y, eps=[0.0, 0.1])
>>> [r.eps for r in results]
[0.0, 0.1]
"""

from __future__ import annotations

from ..registry import Registry
from .apgd import APGD, APGDDLR, APGDT
from .base import (
    Attack,
    AttackResult,
    ascent_direction,
    attack_loss,
    input_gradient,
    lp_norm,
    project,
)
from .blackbox import BoundaryAttack, SquareAttack
from .fab import FAB
from .gradient import BIM, FGSM, ILL, PGD, IterativeGradient, KuboBIM, KuboILL
from .minimal import CarliniWagnerL2, DeepFool, FGSMMin
from .sparse import JSMA
from .transfer import Transfer
from .wrappers import BPDA, EOT, BPDAModel, EOTModel, auto_wrap, is_stochastic, surrogate_of

__all__ = [
    "APGD",
    "APGDDLR",
    "APGDT",
    "ATTACKS",
    "BIM",
    "BPDA",
    "EOT",
    "FAB",
    "FGSM",
    "ILL",
    "JSMA",
    "PGD",
    "Attack",
    "AttackResult",
    "BPDAModel",
    "BoundaryAttack",
    "CarliniWagnerL2",
    "DeepFool",
    "EOTModel",
    "FGSMMin",
    "IterativeGradient",
    "KuboBIM",
    "KuboILL",
    "SquareAttack",
    "Transfer",
    "ascent_direction",
    "attack_loss",
    "auto_wrap",
    "input_gradient",
    "is_stochastic",
    "lp_norm",
    "project",
    "surrogate_of",
]

ATTACKS = Registry("attack")

for _cls in (
    FGSM,
    FGSMMin,
    BIM,
    ILL,
    KuboBIM,
    KuboILL,
    PGD,
    APGD,
    APGDDLR,
    APGDT,
    FAB,
    SquareAttack,
    DeepFool,
    JSMA,
    CarliniWagnerL2,
    BoundaryAttack,
    Transfer,
    EOT,
    BPDA,
):
    ATTACKS.register(_cls.key, paper=_cls.paper, tags=_cls.tags)(_cls)
del _cls
