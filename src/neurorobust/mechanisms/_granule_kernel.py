r"""Fused CPU kernels of the sparse granule layer and the Purkinje read-out (numba).

For a batch :math:`X \in \mathbb{R}^{B \times d}`, granule inputs ``idx`` (m, k), their weights
``w`` (m, k) and the read-out :math:`W \in \mathbb{R}^{m \times c}`, the forward kernel computes

.. math::

    a_{bj} = \sum_{q<k} w_{jq}\, X_{b,\,\mathrm{idx}_{jq}}, \qquad
    Y_{bc} = \sum_{j<m} \max(a_{bj}, 0)\, W_{jc}

in one pass over the cells, never materialising the (B, m) activations. ``X`` is passed
transposed, (d, B), so the k input columns of a cell are contiguous rows. Cells are taken in
blocks of ``rb`` (:func:`block_size`, 128 at batch 50): the block's activations (rb, B) are
gathered into a buffer that stays in L1/L2, and the read-out is one small BLAS product per block
(``W_block^T @ H_block`` into a thread-local (c, B) accumulator), so each cell's read-out row is
read once and reused across the whole batch, and no per-cell reductions are left to the scalar
loops (the BLAS products measured 2x faster than hand-written loops for the read-out gradient).

The backward kernel recomputes :math:`a` (cheaper than storing B x m floats) and, for the
incoming gradient :math:`G = \partial L / \partial Y` (B, c), gives

.. math::

    \frac{\partial L}{\partial X_{b i}} = \sum_{j, q:\ \mathrm{idx}_{jq} = i}
        w_{jq}\, \mathbb{1}[a_{bj} > 0]\, \sum_c G_{bc} W_{jc}, \qquad
    \frac{\partial L}{\partial W_{jc}} = \sum_b G_{bc} \max(a_{bj}, 0)

with per-thread input-gradient buffers (cells of different threads share inputs) summed at the
end. A block silent on the whole batch is skipped after its activations are computed. A batch of one
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

__all__ = ["backward", "backward1", "block_size", "forward", "forward1", "set_threads"]

# numba's OpenMP threading layer and torch's OpenMP runtime do not mix: once numba started its OpenMP
# pool, every later torch op in the process took ~15 ms (measured: a 100k-element sqrt, 0.02 ms before).
# Its own workqueue pool has no such clash; an explicit NUMBA_THREADING_LAYER is respected.
if numba.config.THREADING_LAYER == "default":
    numba.config.THREADING_LAYER = "workqueue"

_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}  # reassociation for vector sums; NaN/inf semantics kept


def set_threads(n: int) -> int:
    """Use ``n`` numba threads (clipped to numba's pool); returns the number in use."""
    n = max(1, min(int(n), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(n)
    return n


def block_size(batch: int, classes: int) -> int:
    """Cells per block: small enough that each block product stays under OpenBLAS's threading threshold
    (m n k < 262,144), so BLAS runs single-threaded inside our threads; between 8 and 256."""
    return int(max(8, min(256, 262_144 // max(1, batch * classes))))


@njit(fastmath=_FASTMATH, nogil=True, cache=True)
def _block_activity(xT, idx, w, j0, nj, H, hsum, want_sum):  # pragma: no cover - compiled
    # H[r] = relu(a of cell j0 + r) over the batch for r < nj; returns the sum of H[:nj]; with want_sum,
    # hsum[j0 + r] = the sum of H[r] over the batch (taken in the ReLU pass, which sums H[r] anyway)
    B = xT.shape[1]
    k = idx.shape[1]
    total = xT[0, 0] * 0
    for r in range(nj):
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
        row = xT[0, 0] * 0
        for b in range(B):
            H[r, b] = max(H[r, b], 0)
            row += H[r, b]
        if want_sum:
            hsum[j0 + r] = row
        total += row
    return total


@njit(parallel=True, fastmath=_FASTMATH, nogil=True, cache=True)
def _forward(xT, idx, w, W, want_mean, nt, rb):  # pragma: no cover - compiled
    B = xT.shape[1]
    m = idx.shape[0]
    c = W.shape[1]
    acc = np.zeros((nt, c, B), dtype=xT.dtype)
    hsum = np.zeros(m if want_mean else 1, dtype=xT.dtype)
    block = (m + nt - 1) // nt
    block = (block + rb - 1) // rb * rb
    for t in prange(nt):
        H = np.zeros((rb, B), dtype=xT.dtype)
        lo = t * block
        hi = min(m, lo + block)
        for j0 in range(lo, hi, rb):
            nj = min(rb, hi - j0)
            total = _block_activity(xT, idx, w, j0, nj, H, hsum, want_mean)
            if total == 0:
                continue  # the whole block is silent on this batch
            # (c, B) += W_block^T (c, nj) @ H_block (nj, B): a small single-threaded BLAS product
            acc[t] += np.dot(W[j0 : j0 + nj].T, H[:nj])
    out = np.zeros((B, c), dtype=xT.dtype)
    for t in range(nt):
        for cc in range(c):
            for b in range(B):
                out[b, cc] += acc[t, cc, b]
    return out, hsum


@njit(parallel=True, fastmath=_FASTMATH, nogil=True, cache=True)
def _backward(xT, idx, w, W, gT, want_x, want_w, nt, rb):  # pragma: no cover - compiled
    d, B = xT.shape
    m, k = idx.shape
    c = W.shape[1]
    G = np.ascontiguousarray(gT.T)  # (B, c)
    gx = np.zeros((nt if want_x else 1, d if want_x else 1, B), dtype=xT.dtype)
    gW = np.empty((m if want_w else 1, c), dtype=xT.dtype)  # every block writes its rows (silent ones: 0)
    block = (m + nt - 1) // nt
    block = (block + rb - 1) // rb * rb
    for t in prange(nt):
        H = np.zeros((rb, B), dtype=xT.dtype)
        lo = t * block
        hi = min(m, lo + block)
        for j0 in range(lo, hi, rb):
            nj = min(rb, hi - j0)
            total = _block_activity(xT, idx, w, j0, nj, H, H[0], False)
            if total == 0:  # no gradient flows through silent cells; their read-out gradient is 0
                if want_w:
                    gW[j0 : j0 + nj] = 0
                continue
            if want_w:  # dL/dW_block (nj, c) = H_block (nj, B) @ G (B, c)
                gW[j0 : j0 + nj] = np.dot(H[:nj], G)
            if not want_x:
                continue
            # Gr (nj, B) = W_block (nj, c) @ G^T (c, B), masked by the ReLU, scattered to the cells' inputs
            Gr = np.dot(W[j0 : j0 + nj], gT)
            for r in range(nj):
                j = j0 + r
                for b in range(B):
                    Gr[r, b] = Gr[r, b] if H[r, b] > 0 else Gr[r, b] * 0
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
    rb = block_size(xT.shape[1], W.shape[1])
    return _forward(xT, idx, w, W, want_mean, numba.get_num_threads(), rb)


def backward(
    xT: np.ndarray, idx: np.ndarray, w: np.ndarray, W: np.ndarray, gT: np.ndarray, want_x: bool, want_w: bool
) -> tuple[np.ndarray, np.ndarray]:
    """``(dL/dX transposed (d, B), dL/dW (m, c))`` for the incoming gradient ``gT`` (c, B); dummies when not wanted."""
    rb = block_size(xT.shape[1], W.shape[1])
    return _backward(xT, idx, w, W, gT, want_x, want_w, numba.get_num_threads(), rb)
