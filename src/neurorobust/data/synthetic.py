"""Generated datasets: the sleep paper's Patches toy set, and scikit-learn's 8x8 digits.

Patches (Tadros et al., ICLR 2020, Sec. 4): 4 classes of 10x10 binary images with 25 bright
pixels each. The authors' generator was not found in their code (seeds/NOTES.md §1), so ours is
documented here and in ``docs/data.md``:

* prototypes: a seeded permutation of the 100 pixels (``numpy.random.default_rng(seed)``);
  the first ``overlap`` pixels are bright in every class, and each class adds its own disjoint
  block of ``25 - overlap`` pixels, so classes share ``overlap`` of their 25 pixels;
* samples: a prototype with ``swaps`` of its bright pixels moved to random dark positions
  (so every image still has exactly 25 bright pixels); ``swaps`` is drawn uniformly in
  ``[0, max_swaps]`` per image;
* train and test are drawn with different seeds (``seed + 1`` and ``seed + 2``), balanced classes.
"""

from __future__ import annotations

import numpy as np

__all__ = ["make_patches", "patches_prototypes"]


def patches_prototypes(*, overlap: int = 10, bright: int = 25, seed: int = 0) -> np.ndarray:
    """The four class prototypes as a ``(4, 10, 10)`` uint8 array of 0/1."""
    if not 0 <= overlap < bright or overlap + 4 * (bright - overlap) > 100:
        raise ValueError("patches: need 0 <= overlap < bright and overlap + 4 (bright - overlap) <= 100")
    order = np.random.default_rng(seed).permutation(100)
    shared, own = order[:overlap], bright - overlap
    protos = np.zeros((4, 100), dtype=np.uint8)
    for c in range(4):
        protos[c, shared] = 1
        protos[c, order[overlap + c * own : overlap + (c + 1) * own]] = 1
    return protos.reshape(4, 10, 10)


def make_patches(
    n_per_class: int, *, seed: int, overlap: int = 10, max_swaps: int = 5, proto_seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``4 * n_per_class`` noisy patches: images ``(N, 10, 10)`` uint8 0/1 and labels ``(N,)``."""
    protos = patches_prototypes(overlap=overlap, seed=proto_seed).reshape(4, 100)
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(4, dtype=np.uint8), n_per_class)
    rng.shuffle(labels)
    images = protos[labels].copy()
    for img in images:
        k = int(rng.integers(0, max_swaps + 1))
        if k:
            on, off = np.flatnonzero(img), np.flatnonzero(img == 0)
            img[rng.choice(on, k, replace=False)] = 0
            img[rng.choice(off, k, replace=False)] = 1
    return images.reshape(-1, 10, 10), labels
