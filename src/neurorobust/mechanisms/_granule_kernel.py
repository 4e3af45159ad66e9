r"""Fused CPU kernels of the sparse granule layer and the Purkinje read-out (numba).

For a batch :math:`X \in \mathbb{R}^{B \times d}`, granule inputs ``idx`` (m, k), their weights
``w`` (m, k) and the read-out :math:`W \in \mathbb{R}^{m \times c}`, the forward kernel computes

.. math::

    a_{bj} = \sum_{q<k} w_{jq}\, X_{b,\,\mathrm{idx}_{jq}}, \qquad
    Y_{bc} = \sum_{j<m} \max(a_{bj}, 0)\, W_{jc}

in one pass over the cells, never materialising the (B, m) activations. ``X`` is passed
transposed, (d, B), so the k input columns of a cell are contiguous rows. Cells are taken in
blocks of ``R`` = 8: the block's activations (R, B) and read-out rows (R, c) sit in L1, and each
(c, B) accumulator element is loaded and stored once per block instead of once per cell, so the
read-out weights of a cell are read once and reused across the whole batch.

The backward kernel recomputes :math:`a` (cheaper than storing B x m floats) and, for the
incoming gradient :math:`G = \partial L / \partial Y` (B, c), gives

.. math::

    \frac{\partial L}{\partial X_{b i}} = \sum_{j, q:\ \mathrm{idx}_{jq} = i}
        w_{jq}\, \mathbb{1}[a_{bj} > 0]\, \sum_c G_{bc} W_{jc}, \qquad
    \frac{\partial L}{\partial W_{jc}} = \sum_b G_{bc} \max(a_{bj}, 0)

with per-thread input-gradient buffers (cells of different threads share inputs) summed at the
end. A cell silent on the whole batch is skipped after its activations are computed. A batch of one
(the paper's Table 7 trains at batch 1) has its own kernels that loop over cells only and keep the
(m,) activations for the backward pass. Work is
split into one contiguous block of cells per thread; the thread count follows
``torch.get_num_threads()`` (set by the caller), so a sweep worker with one torch thread runs the
kernel on one thread.

The kernels compile on first use (some seconds) and are cached on disk by numba (``cache=True``).
This module is imported lazily by :mod:`neurorobust.mechanisms.cerebellum`; when numba is not
installed, or the tensors live on a GPU, the torch path there is used instead.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

__all__ = ["backward", "backward1", "forward", "forward1", "set_threads"]

# numba's OpenMP threading layer and torch's OpenMP runtime do not mix: once numba started its OpenMP
# pool, every later torch op in the process took ~15 ms (measured: a 100k-element sqrt, 0.02 ms before).
# Its own workqueue pool has no such clash; an explicit NUMBA_THREADING_LAYER is respected.
if numba.config.THREADING_LAYER == "default":
    numba.config.THREADING_LAYER = "workqueue"

R = 8  # cells per block
_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}  # reassociation for vector sums; NaN/inf semantics kept


def set_threads(n: int) -> int:
    """Use ``n`` numba threads (clipped to numba's pool); returns the number in use."""
    n = max(1, min(int(n), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(n)
    return n


@njit(fastmath=_FASTMATH, nogil=True, inline="always", cache=True)
def _block_activity(xT, idx, w, W, j0, nj, H, Wl):  # pragma: no cover - compiled
    # H[r] = relu(a of cell j0 + r) over the batch, Wl[r] = its read-out row; returns the sum of H
    B = xT.shape[1]
    k = idx.shape[1]
    c = W.shape[1]
    total = xT[0, 0] * 0
    for r in range(R):
        if r < nj:
            j = j0 + r
            i0 = idx[j, 0]
            w0 = w[j, 0]
            for b in range(B):
                H[r, b] = w0 * xT[i0, b]
            for q in range(1, k):
                iq = idx[j, q]
                wq = w[j, q]
                for b in range(B):
                    H[r, b] += wq * xT[iq, b]
            for b in range(B):
                H[r, b] = max(H[r, b], 0)
                total += H[r, b]
            for cc in range(c):
                Wl[r, cc] = W[j, cc]
        else:
            for b in range(B):
                H[r, b] = 0
            for cc in range(c):
                Wl[r, cc] = 0
    return total


@njit(parallel=True, fastmath=_FASTMATH, nogil=True, cache=True)
def _forward(xT, idx, w, W, want_mean, nt):  # pragma: no cover - compiled
    B = xT.shape[1]
    m = idx.shape[0]
    c = W.shape[1]
    acc = np.zeros((nt, c, B), dtype=xT.dtype)
    hsum = np.zeros(m if want_mean else 1, dtype=xT.dtype)
    block = (m + nt - 1) // nt
    block = (block + R - 1) // R * R
    for t in prange(nt):
        H = np.zeros((R, B), dtype=xT.dtype)
        Wl = np.zeros((R, c), dtype=xT.dtype)
        lo = t * block
        hi = min(m, lo + block)
        for j0 in range(lo, hi, R):
            nj = min(R, hi - j0)
            total = _block_activity(xT, idx, w, W, j0, nj, H, Wl)
            if want_mean:
                for r in range(nj):
                    s = H[r, 0] * 0
                    for b in range(B):
                        s += H[r, b]
                    hsum[j0 + r] = s
            if total == 0:
                continue  # the whole block is silent on this batch
            for cc in range(c):
                for b in range(B):
                    s = acc[t, cc, b]
                    for r in range(R):
                        s += H[r, b] * Wl[r, cc]
                    acc[t, cc, b] = s
    out = np.zeros((B, c), dtype=xT.dtype)
    for t in range(nt):
        for cc in range(c):
            for b in range(B):
                out[b, cc] += acc[t, cc, b]
    return out, hsum


@njit(parallel=True, fastmath=_FASTMATH, nogil=True, cache=True)
def _backward(xT, idx, w, W, gT, want_x, want_w, nt):  # pragma: no cover - compiled
    d, B = xT.shape
    m, k = idx.shape
    c = W.shape[1]
    gx = np.zeros((nt if want_x else 1, d if want_x else 1, B), dtype=xT.dtype)
    gW = np.zeros((m if want_w else 1, c), dtype=xT.dtype)
    block = (m + nt - 1) // nt
    block = (block + R - 1) // R * R
    for t in prange(nt):
        H = np.zeros((R, B), dtype=xT.dtype)
        Wl = np.zeros((R, c), dtype=xT.dtype)
        Gr = np.zeros((R, B), dtype=xT.dtype)
        lo = t * block
        hi = min(m, lo + block)
        for j0 in range(lo, hi, R):
            nj = min(R, hi - j0)
            total = _block_activity(xT, idx, w, W, j0, nj, H, Wl)
            if total == 0:
                continue  # no gradient flows through silent cells; their read-out gradient is 0
            if want_w:
                for r in range(nj):
                    for cc in range(c):
                        s = H[r, 0] * 0
                        for b in range(B):
                            s += gT[cc, b] * H[r, b]
                        gW[j0 + r, cc] = s
            if not want_x:
                continue
            # Gr[r, b] = 1[a > 0] * sum_c G[b, c] W[j0 + r, c]
            if c == 10:  # the usual case, with a constant class loop the compiler unrolls (measured ~25% faster)
                for r in range(R):
                    for b in range(B):
                        s = gT[0, b] * Wl[r, 0]
                        for cc in range(1, 10):
                            s += gT[cc, b] * Wl[r, cc]
                        Gr[r, b] = s if H[r, b] > 0 else s * 0
            else:
                for r in range(R):
                    for b in range(B):
                        Gr[r, b] = 0
                    for cc in range(c):
                        wc = Wl[r, cc]
                        for b in range(B):
                            Gr[r, b] += gT[cc, b] * wc
                    for b in range(B):
                        Gr[r, b] = Gr[r, b] if H[r, b] > 0 else Gr[r, b] * 0
            for r in range(nj):
                j = j0 + r
                for q in range(k):
                    iq = idx[j, q]
                    wq = w[j, q]
                    for b in range(B):
                        gx[t, iq, b] += wq * Gr[r, b]
    if want_x:
        total_x = np.zeros((d, B), dtype=xT.dtype)
        for t in range(nt):
            for i in range(d):
                for b in range(B):
                    total_x[i, b] += gx[t, i, b]
    else:
        total_x = np.zeros((1, B), dtype=xT.dtype)
    return total_x, gW


@njit(parallel=True, fastmath=_FASTMATH, nogil=True, cache=True)
def _forward1(x, idx, w, W, nt):  # pragma: no cover - compiled
    # batch of one: loop over cells only; the (m,) activations are returned (they are the batch mean)
    m, k = idx.shape
    c = W.shape[1]
    h = np.empty(m, dtype=x.dtype)
    acc = np.zeros((nt, c), dtype=x.dtype)
    block = (m + nt - 1) // nt
    for t in prange(nt):
        lo = t * block
        hi = min(m, lo + block)
        for j in range(lo, hi):
            a = w[j, 0] * x[idx[j, 0]]
            for q in range(1, k):
                a += w[j, q] * x[idx[j, q]]
            a = max(a, 0)
            h[j] = a
            if a > 0:
                for cc in range(c):
                    acc[t, cc] += a * W[j, cc]
    out = np.zeros((1, c), dtype=x.dtype)
    for t in range(nt):
        for cc in range(c):
            out[0, cc] += acc[t, cc]
    return out, h


@njit(parallel=True, fastmath=_FASTMATH, nogil=True, cache=True)
def _backward1(x, idx, w, W, h, g, want_x, want_w, nt):  # pragma: no cover - compiled
    d = x.shape[0]
    m, k = idx.shape
    c = W.shape[1]
    gx = np.zeros((nt if want_x else 1, d if want_x else 1), dtype=x.dtype)
    gW = np.zeros((m if want_w else 1, c), dtype=x.dtype)
    block = (m + nt - 1) // nt
    for t in prange(nt):
        lo = t * block
        hi = min(m, lo + block)
        for j in range(lo, hi):
            a = h[j]
            if a <= 0:
                continue
            if want_w:
                for cc in range(c):
                    gW[j, cc] = a * g[cc]
            if want_x:
                s = g[0] * W[j, 0]
                for cc in range(1, c):
                    s += g[cc] * W[j, cc]
                for q in range(k):
                    gx[t, idx[j, q]] += w[j, q] * s
    total = np.zeros((1, d if want_x else 1), dtype=x.dtype)
    for t in range(gx.shape[0]):
        for i in range(gx.shape[1]):
            total[0, i] += gx[t, i]
    return total, gW


def forward1(x: np.ndarray, idx: np.ndarray, w: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Batch of one: ``(Y (1, c), activations h (m,))`` for ``x`` (d,)."""
    return _forward1(x, idx, w, W, numba.get_num_threads())


def backward1(
    x: np.ndarray,
    idx: np.ndarray,
    w: np.ndarray,
    W: np.ndarray,
    h: np.ndarray,
    g: np.ndarray,
    want_x: bool,
    want_w: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Batch of one: ``(dL/dX (1, d), dL/dW (m, c))`` from the saved activations ``h`` and ``g`` = dL/dY (c,)."""
    return _backward1(x, idx, w, W, h, g, want_x, want_w, numba.get_num_threads())


def forward(xT: np.ndarray, idx: np.ndarray, w: np.ndarray, W: np.ndarray, want_mean: bool) -> tuple[np.ndarray, ...]:
    """``(Y (B, c), per-cell activity sums (m,) or a dummy)`` for ``xT`` (d, B), ``idx``/``w`` (m, k), ``W`` (m, c)."""
    return _forward(xT, idx, w, W, want_mean, numba.get_num_threads())


def backward(
    xT: np.ndarray, idx: np.ndarray, w: np.ndarray, W: np.ndarray, gT: np.ndarray, want_x: bool, want_w: bool
) -> tuple[np.ndarray, np.ndarray]:
    """``(dL/dX transposed (d, B), dL/dW (m, c))`` for the incoming gradient ``gT`` (c, B); dummies when not wanted."""
    return _backward(xT, idx, w, W, gT, want_x, want_w, numba.get_num_threads())
