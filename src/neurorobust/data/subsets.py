"""Seeded, class-balanced evaluation subsets (DESIGN §4).

CIFAR-10 and caltech10 are stored sorted by class, so "the first n test images" is never a
fair subset. ``balanced_subset`` draws the same indices for the same (labels, n, seed), so every
model of an experiment is evaluated on the same images.
"""

from __future__ import annotations

import numpy as np
import torch

from ..validation import Interval, validate_params

__all__ = ["balanced_subset"]


def balanced_subset(labels: torch.Tensor | np.ndarray, n: int | None, seed: int = 0) -> torch.Tensor:
    """Indices of a class-balanced subset of size ``min(n, len(labels))``, sorted ascending.

    Classes are visited round-robin, each contributing its next (seeded-shuffled) sample, so
    every class gets ``n // C`` or one more unless it runs out, in which case the others fill in.

    Parameters
    ----------
    labels : tensor or array of shape (N,)
        Integer class labels.
    n : int or None
        Subset size; ``None`` or ``n >= N`` returns all indices.
    seed : int, default=0
        Seed of the per-class shuffles.

    Examples
    --------
    >>> idx = balanced_subset(torch.tensor([0, 0, 0, 0, 1, 1]), 4, seed=0)
    >>> torch.bincount(torch.tensor([0, 0, 0, 0, 1, 1])[idx]).tolist()
    [2, 2]
    """
    y = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if n is None or n >= len(y):
        return torch.arange(len(y))
    validate_params("balanced_subset", {"n": Interval(int, 1, None)}, {"n": n})
    rng = np.random.default_rng(seed)
    pools = [rng.permutation(np.flatnonzero(y == c)).tolist() for c in np.unique(y)]
    chosen: list[int] = []
    while len(chosen) < n:
        for pool in pools:
            if pool and len(chosen) < n:
                chosen.append(pool.pop())
    return torch.as_tensor(sorted(chosen), dtype=torch.long)
