"""What the attack suite and the gradient-masking checks share: one attack's run on a set of points,
per-point accuracy over draws, the EOT/BPDA wrapping a model calls for, and accuracy rows.

:mod:`~neurorobust.evaluation.checklist` and :mod:`~neurorobust.evaluation.attack_suite` both
import this module; it imports neither.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..attacks import BPDA, EOT, Attack, AttackResult, EOTModel, attack_loss
from ..modes import eval_mode
from ..store import ResultRow
from .metrics import wilson_interval

__all__ = ["AttackRun", "acc_row", "adv_correct", "mean_loss", "point_correct", "wrap_attack"]


@dataclass
class AttackRun:
    """One attack at one eps on a set of points of the evaluation subset."""

    label: str
    key: str
    eps: float | None
    idx: torch.Tensor
    correct: torch.Tensor  # per point: probability of a correct prediction after the attack (mean over draws)
    result: AttackResult
    seconds: float
    white_box: bool = True
    adaptive: bool = True  # False: run without the EOT/BPDA the model's declarations call for
    norm: str | None = None  # the attack's threat model, where it has one ("linf", "l2")
    cumulative: torch.Tensor | None = None  # in a cascade: per point, accuracy after this attack and those before
    attacked_mask: torch.Tensor | None = None  # which points of idx the attack attacked (fewer in a cascade)
    within_eps: bool = True  # False: eps was a step size (a paper's protocol); never in a worst case or a check

    @property
    def attacked(self) -> int:
        """How many points of ``idx`` the attack attacked."""
        return len(self.idx) if self.attacked_mask is None else int(self.attacked_mask.sum())


@torch.no_grad()
def point_correct(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, draws: int = 1, batch_size: int = 500
) -> torch.Tensor:
    """Per point, the fraction of ``draws`` eval-mode forward passes that predict ``y`` (DESIGN §5.8)."""
    with eval_mode(model):
        hits = torch.zeros(len(x))
        for _ in range(draws):
            preds = torch.cat([model(x[i : i + batch_size]).argmax(1).cpu() for i in range(0, len(x), batch_size)])
            hits += (preds == y.cpu()).float()
        return hits / draws


def adv_correct(
    model: nn.Module, res: AttackResult, y: torch.Tensor, stochastic: bool, draws: int, batch_size: int
) -> torch.Tensor:
    """Per point, accuracy on ``res.x_adv``: the mean over ``draws`` for a random model (DESIGN §5.8),
    else the engine's recomputed success (clean errors count as fooled)."""
    return point_correct(model, res.x_adv, y, draws, batch_size) if stochastic else (~res.success).float()


def wrap_attack(attack: Attack, stochastic: bool, surrogate: nn.Module | None, draws: int) -> Attack:
    """``attack`` with the EOT (random model) and BPDA (declared surrogate) that the model calls for."""
    if attack.key == "transfer":
        return attack  # crafted on the source model; judged on the target over draws by the suite
    if attack.key in ("square", "boundary"):
        # no gradient needed (no BPDA), but on a random model every margin, early stop and decision is
        # taken on the mean over draws (DESIGN §10): the attack sees the EOT model
        return EOT(attack=attack, draws=draws) if stochastic else attack
    wrapped: Attack = EOT(attack=attack, draws=draws) if stochastic else attack
    return BPDA(attack=wrapped, surrogate=surrogate) if surrogate is not None else wrapped


def mean_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, draws: int) -> torch.Tensor:
    """Per-sample CE loss of the (draw-averaged) logits in eval mode."""
    with eval_mode(model), torch.no_grad():
        logits = (EOTModel(model, draws) if draws > 1 else model)(x)
    return attack_loss("ce", logits, y)


def acc_row(
    base: dict[str, Any],
    attack: str,
    eps: float | None,
    acc: float,
    n: int,
    params: dict[str, Any],
    metric: str = "accuracy",
    seconds: float | None = None,
) -> ResultRow:
    """A row for accuracy ``acc`` on ``n`` points, with its 95% Wilson interval in ``params``."""
    lo, hi = wilson_interval(round(acc * n), n)
    return ResultRow(
        **base,
        attack=attack,
        metric=metric,
        value=acc,
        n=n,
        eps=eps,
        params={**params, "ci95": [round(lo, 5), round(hi, 5)]},
        seconds=seconds,
    )
