"""The gradient-masking checklist: eight checks, each a stored result, and one verdict per defence.

Checks (DESIGN §5; Carlini et al. 2019, Athalye et al. 2018, Pintor et al. 2022), explained in
``docs/checks.md`` ("raised if / what to do"):

1. ``single-vs-iterative``: FGSM never leaves fewer points correct than PGD at the same eps.
2. ``monotone-in-eps``: robust accuracy falls (weakly) with eps; ``unbounded-attack``: an attack
   with eps covering the whole box fools (nearly) every point.
3. ``more-steps-restarts``: doubling PGD's steps and adding restarts changes robust accuracy by
   less than a tolerance.
4. ``black-box-vs-white-box``: a gradient-free attack (Square) and a transfer attack do not beat
   the white-box attacks on the same points.
5. ``eot-bpda``: a random model is attacked with EOT and a model with vanishing gradients has a
   BPDA surrogate.
6. ``unavailable-gradients``: the fraction of points whose input gradient is exactly zero.
7. Pintor et al.'s indicators of attack failure: ``silent-success``, ``incomplete-optimisation``,
   ``non-converging-attack``, ``transfer-failure`` (plus ``unavailable-gradients`` = 6 and
   ``unbounded-attack`` = 2).
8. ``randomness``: a model whose logits change between two identical forward passes is random;
   undeclared randomness is flagged, and every random model is judged on the mean over draws.

A failed check turns the verdict to ``masking suspected: <checks>`` and the reported robust
accuracy to the worst case over every attack run. A check that does not apply (e.g. transfer
failure without a surrogate) has ``passed=None`` and says why.

References
----------
N. Carlini et al. (2019). On evaluating adversarial robustness. :arxiv:`1902.06705`.
A. Athalye, N. Carlini, D. Wagner (2018). Obfuscated gradients give a false sense of security. ICML.
:arxiv:`1802.00420`.
M. Pintor et al. (2022). Indicators of attack failure: debugging and improving optimization of
adversarial examples. NeurIPS. :arxiv:`2106.09947`.
F. Croce, M. Hein (2020). Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks. ICML. :arxiv:`2003.01690` (auto-attack's checks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..modes import eval_mode

__all__ = [
    "MAX_THRESHOLD",
    "MIN_POINTS",
    "TOLERANCES",
    "CheckResult",
    "detect_randomness",
    "effective_threshold",
    "verdict",
    "within_threshold",
    "zero_gradient_fraction",
]

#: Thresholds of the checks (fractions of points unless stated); docs/checks.md explains each.
TOLERANCES = {
    "single-vs-iterative": 0.01,  # FGSM accuracy may not fall below PGD's by more than this
    "monotone-in-eps": 0.01,  # an increase of accuracy with eps larger than this is flagged
    "unbounded-attack": 0.01,  # at most this fraction of points may survive the unbounded attack
    "more-steps-restarts": 0.02,  # PGD with 2x steps and more restarts may not lower accuracy more
    "black-box-vs-white-box": 0.01,  # Square / transfer may not beat white-box by more than this
    "unavailable-gradients": 0.01,  # fraction of points with an all-zero input gradient
    "silent-success": 0.01,  # points fooled by an iterate but not by the returned point
    "incomplete-optimisation": 0.05,  # relative increase of mean loss from T to 2T steps
    "non-converging-attack": 0.05,  # points whose final loss is below their initial loss
    "transfer-failure": 0.5,  # target success below this fraction of the surrogate's success
    "randomness": 0.0,  # max |logit difference| between two identical forward passes
    "unattacked-points": 0.01,  # points a decision-based attack left unattacked (no adversarial start)
}


# Check values are fractions of whole points, computed as float32 means (1/10 is 0.100000001 in float32) or as
# differences of two of them; 1e-6 absorbs that rounding and stays far below one point of any n <= 100,000.
_ROUNDING = 1e-6

#: Checks that compare counts of points: their threshold is at least MIN_POINTS / n, so that one or
#: two borderline points cannot raise them (statistical noise, not masking). A threshold never grows past
#: MAX_THRESHOLD because the points are few (DESIGN §10): with fewer than MIN_POINTS / MAX_THRESHOLD = 100
#: points such a check is "not judged (too few points)", and the verdict says so.
MIN_POINTS = 2
MAX_THRESHOLD = 0.02
_COUNT_BASED = {
    "single-vs-iterative",
    "monotone-in-eps",
    "more-steps-restarts",
    "black-box-vs-white-box",
    "silent-success",
    "non-converging-attack",
    "unattacked-points",
}


def effective_threshold(name: str, n: int) -> float | None:
    """The threshold of check ``name`` on ``n`` points, or ``None`` when ``n`` is too small to judge it.

    ``TOLERANCES[name]``, raised to ``MIN_POINTS / n`` for the count-based checks; ``None`` where that
    would exceed both ``MAX_THRESHOLD`` and the tolerance itself (fewer than 100 points for a 1% or 2%
    tolerance, fewer than 40 for ``non-converging-attack``'s 5%). ``unbounded-attack`` allows one surviving
    point, ``max(1 / n, tolerance)``, but never more than ``MAX_THRESHOLD``: on fewer than 50 points no
    point may survive.
    """
    tol = TOLERANCES[name]
    n = max(n, 1)
    if name in _COUNT_BASED:
        # the threshold may be raised for few points up to MAX_THRESHOLD (a tolerance above it stays as it is)
        if MIN_POINTS / n > max(tol, MAX_THRESHOLD) + _ROUNDING:
            return None
        return max(tol, MIN_POINTS / n)
    if name == "unbounded-attack":
        return min(max(tol, 1 / n), MAX_THRESHOLD)
    return tol


def within_threshold(value: float, threshold: float | None) -> bool:
    """``value <= threshold`` up to float32 rounding; ``False`` when there is no threshold."""
    return threshold is not None and value <= threshold + _ROUNDING


@dataclass(frozen=True)
class CheckResult:
    """One check: ``passed`` is ``True``/``False``, or ``None`` when the check does not apply or could not be
    judged (``too_few_points``); ``advice`` says why."""

    name: str
    passed: bool | None
    value: float | None
    threshold: float | None
    advice: str = ""
    too_few_points: bool = False

    @property
    def failed(self) -> bool:
        return self.passed is False

    @property
    def not_judged(self) -> bool:
        """The check applies but had too few points to be judged."""
        return self.too_few_points

    @classmethod
    def judge(cls, name: str, value: float | None, n: int, advice: str) -> CheckResult:
        """Check ``name`` on ``n`` points: passed when ``value`` is within its :func:`effective_threshold`;
        ``None`` when there is no value, and not judged when ``n`` is too small for the threshold."""
        threshold = effective_threshold(name, n)
        if value is not None and threshold is None:
            needed = math.ceil(MIN_POINTS / max(TOLERANCES[name], MAX_THRESHOLD) - _ROUNDING)
            return cls(
                name,
                None,
                value,
                None,
                f"not judged: too few points ({n}; the check needs at least {needed} so that its threshold stays "
                f"at {100 * max(TOLERANCES[name], MAX_THRESHOLD):g}%). Raise evaluate.check_n (or n).",
                too_few_points=True,
            )
        return cls(name, None if value is None else within_threshold(value, threshold), value, threshold, advice)


def verdict(checks: list[CheckResult]) -> str:
    """``no masking found`` or ``masking suspected: <failed checks>``, followed by the checks that could not
    be judged (``; not judged (too few points): <checks>``)."""
    failed = [c.name for c in checks if c.failed]
    text = "masking suspected: " + ", ".join(failed) if failed else "no masking found"
    unjudged = [c.name for c in checks if c.not_judged]
    return text + ("; not judged (too few points): " + ", ".join(unjudged) if unjudged else "")


@torch.no_grad()
def detect_randomness(model: nn.Module, x: torch.Tensor, repeats: int = 3) -> float:
    """Largest |logit difference| between identical eval-mode forward passes (0 for a deterministic model;
    differences below 1e-5 of the logits' scale, i.e. non-deterministic kernels, count as 0)."""
    with eval_mode(model):
        first = model(x)
        diff = max(float((model(x) - first).abs().max()) for _ in range(repeats - 1))
    # below float rounding of the logits' scale: a deterministic model with non-deterministic kernels
    return diff if diff > 1e-5 * max(1.0, float(first.abs().max())) else 0.0


def zero_gradient_fraction(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str = "ce") -> tuple[float, float]:
    """(fraction of points whose input gradient is all zero, fraction of zero gradient entries).

    Measured on the raw model at the clean points, in eval mode (auto-attack's zero-gradient check,
    Pintor et al.'s "unavailable gradients").
    """
    from ..attacks import input_gradient

    with eval_mode(model):
        grad, _, _ = input_gradient(model, x, y, loss)
    flat = grad.flatten(1)
    zero = flat == 0
    return float(zero.all(1).float().mean()), float(zero.float().mean())
