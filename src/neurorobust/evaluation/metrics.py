"""The one metrics module: every number the seeds report, each with its source.

All functions take plain tensors (or arrays) and return Python floats, so they are trivially
testable and independent of how the predictions were produced.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

__all__ = [
    "accuracy",
    "adversarial_accuracy",
    "balanced_accuracy",
    "decode_points",
    "encode_points",
    "mean_sd",
    "median_finite",
    "median_min_eps",
    "paired_difference",
    "perturbation_score",
    "robust_accuracy",
    "wilson_interval",
]


def _np(a: torch.Tensor | np.ndarray | Sequence[float]) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def accuracy(pred: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of ``pred == y`` (``pred`` may be logits (N, K) or labels (N,))."""
    if pred.dim() == 2:
        pred = pred.argmax(1)
    return float((pred == y).float().mean()) if len(y) else float("nan")


def balanced_accuracy(pred: torch.Tensor, y: torch.Tensor) -> float:
    """Mean per-class recall (for imbalanced sets such as caltech10; foveation, DESIGN §9)."""
    if pred.dim() == 2:
        pred = pred.argmax(1)
    return class_balanced_mean((pred == y).float(), y)


def class_balanced_mean(correct: torch.Tensor, y: torch.Tensor) -> float:
    """Mean over classes of the per-point correctness ``correct`` (0/1, or a mean over draws) of each class."""
    recalls = [float(correct[y == c].float().mean()) for c in torch.unique(y)]
    return float(np.mean(recalls)) if recalls else float("nan")


def wilson_interval(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval for a proportion k/n (DESIGN §4).

    .. math:: \\frac{\\hat p + z^2/2n \\pm z\\sqrt{\\hat p(1-\\hat p)/n + z^2/4n^2}}{1 + z^2/n}

    Examples
    --------
    >>> lo, hi = wilson_interval(50, 100)
    >>> round(lo, 3), round(hi, 3)
    (0.404, 0.596)
    """
    if n <= 0:
        return (float("nan"), float("nan"))
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def robust_accuracy(clean_correct: torch.Tensor, success: torch.Tensor) -> float:
    """Fraction of all inputs that are classified correctly *and* survive the attack."""
    return float((clean_correct & ~success).float().mean())


def adversarial_accuracy(n_clean_errors: int, n_successes: int, n: int) -> float:
    """Foveation thesis: ``1 - (M + A) / N`` with M clean errors and A successful attacks."""
    return 1.0 - (n_clean_errors + n_successes) / n if n else float("nan")


def median_finite(values: torch.Tensor | np.ndarray) -> float:
    """Median over finite values (``inf`` = never fooled counts as larger than all others)."""
    v = _np(values).astype(float)
    v = v[~np.isnan(v)]
    return float(np.median(v)) if v.size else float("nan")


def median_min_eps(min_eps: torch.Tensor, clean_correct: torch.Tensor) -> tuple[float, float, int]:
    """Sleep paper: median (and mean) minimal FGSM eps over clean-correct inputs.

    Inputs misclassified before the attack are excluded and counted (DESIGN §9). Inputs never
    fooled within the eps grid carry ``inf`` and enter the median as larger than all others; the
    mean is taken over finite values only.

    Returns
    -------
    (median, mean_of_finite, n_excluded)
    """
    e = _np(min_eps).astype(float)[_np(clean_correct).astype(bool)]
    finite = e[np.isfinite(e)]
    median = float(np.median(e)) if e.size else float("nan")
    return median, float(finite.mean()) if finite.size else float("nan"), int((~_np(clean_correct)).sum())


def perturbation_score(l2: torch.Tensor, success: torch.Tensor, dim: int) -> float:
    """Sleep paper's score for DeepFool / C&W / Boundary: median of ||delta||_2^2 / N over successes.

    .. math:: S_A = \\operatorname{median}_i \\; \\lVert x_i^{adv} - x_i \\rVert_2^2 / N
    """
    d = _np(l2).astype(float)[_np(success).astype(bool)]
    return float(np.median(d**2) / dim) if d.size else float("nan")


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation over seeds (sd = 0 for one value).

    An infinite value (e.g. a median minimal eps when most points are never fooled) makes the mean
    infinite and the sd undefined (``nan``), without a floating-point warning.
    """
    v = np.asarray(values, dtype=float)
    if not np.isfinite(v).all():
        return float(v.sum()) if not np.isnan(v).any() else float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


#: Levels of a per-point accuracy in :func:`encode_points` (one hex digit: 0/15 .. 15/15).
POINT_LEVELS = 15


def encode_points(values: torch.Tensor | np.ndarray | Sequence[float]) -> str:
    """Per-point accuracies in [0, 1] (NaN: not judged) as one hex digit each, ``.`` for NaN.

    A deterministic model's points are 0 or 1 (``0``/``f``); a random model's are the mean over draws,
    rounded to 1/15. Stored with worst-case rows so that two models evaluated on the same images can
    be compared point by point (:func:`paired_difference`).
    """
    v = _np(values).astype(float)
    if v.size and np.nanmax(np.abs(v - 0.5), initial=0.0) > 0.5 + 1e-6:
        raise ValueError("per-point accuracies must lie in [0, 1]")
    return "".join("." if math.isnan(a) else format(round(a * POINT_LEVELS), "x") for a in v)


def decode_points(code: str) -> np.ndarray:
    """The inverse of :func:`encode_points`: floats in [0, 1], NaN for ``.``."""
    try:
        return np.array([math.nan if c == "." else int(c, 16) / POINT_LEVELS for c in code], dtype=float)
    except ValueError as err:
        raise ValueError(f"not a per-point code (hex digits and '.'): {code[:40]!r}") from err


def paired_difference(
    a: torch.Tensor | np.ndarray | Sequence[float],
    b: torch.Tensor | np.ndarray | Sequence[float],
    z: float = 1.959964,
) -> tuple[float, float, float, int]:
    """Mean of ``a - b`` over the points judged in both (NaN elsewhere), its 95% interval and the count.

    The interval is the normal one of the mean paired difference, :math:`\\bar d \\pm z\\, s_d/\\sqrt n`
    (the same images attacked on both models, so the per-image differences are the unit); with fewer
    than two points the interval is ``(nan, nan)``.
    """
    x, y = _np(a).astype(float), _np(b).astype(float)
    if x.shape != y.shape:
        raise ValueError(f"paired points need equal lengths (got {x.shape} and {y.shape})")
    both = ~(np.isnan(x) | np.isnan(y))
    d = x[both] - y[both]
    n = int(d.size)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(d.mean())
    if n < 2:
        return mean, math.nan, math.nan, n
    half = z * float(d.std(ddof=1)) / math.sqrt(n)
    return mean, mean - half, mean + half, n
