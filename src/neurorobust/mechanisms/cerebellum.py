r"""Cerebellum: a sparse random granule layer, LTD centring and a Purkinje read-out (Liu, Li & Chen).

Marr-Albus model of the cerebellar cortex as a two-layer rate network (the paper's eqs. 1-4).
Mossy-fibre inputs :math:`x \in \mathbb{R}^d` drive :math:`m` granule cells, each with
:math:`k` random inputs; long-term depression (LTD) at the parallel-fibre/Purkinje synapses is a
moving-average centring of the granule activity; a linear Purkinje read-out is the only learned
layer:

.. math::

    h = \max(J^{\top} x,\ 0), \qquad
    J_{ij} \sim \tfrac{1}{\sqrt{k}}\,\mathcal{N}(0, 1) \text{ for the } k \text{ inputs } i \text{ of cell } j,
    \ 0 \text{ otherwise}

.. math::

    \hat y = W^{\top} z, \qquad z = h - \mu, \qquad
    \mu_t = \beta\,\mu_{t-1} + (1 - \beta)\,\bar h_t

.. math::

    l = \tfrac{1}{B c} \sum_{b, j} (\hat y_{bj} - y_{bj})^2, \qquad
    \Delta W \propto -\partial l / \partial W = -e^{\top} z, \quad e = \hat y - y

Legend: ``d`` inputs, ``m`` granule cells, ``k`` inputs per cell, ``c`` classes; :math:`J` is
fixed (buffers, never trained); :math:`\bar h_t` is the batch mean of the ReLU output; ``beta``
is the LTD factor (0.99). As coded by the authors (``seeds/NOTES.md`` §3): the k inputs of a cell
are drawn **with replacement** (``unique=True`` draws without); the fully connected "Base" granule
layer (``fc=True``) is a dense :math:`d \times m` matrix with LeCun-normal :math:`\mathcal{N}(0, 1/d)`
init; :math:`\mu` is subtracted *after* the ReLU, starts at 0, is updated in training only
(before it is subtracted, from the current batch), gets no gradient and is frozen in eval and
under attack (a constant, so it leaves input gradients unchanged); neither layer has a bias.
Training: MSE to one-hot averaged over batch x classes, RMSprop (alpha 0.99, eps 1e-8),
lr = 0.5 / m, batch 50, 10 epochs (Table 4). We keep the last model, not the best-on-test one the
code keeps (DESIGN §9). The Purkinje init is not in the paper; we use ``nn.Linear``'s
:math:`\mathcal{U}(-1/\sqrt{m}, 1/\sqrt{m})`.

Efficiency. :math:`J` is stored as an (m, k) index tensor and (m, k) weights, never as a dense
:math:`d \times m` matrix. On CPU with numba the granule layer and the read-out run as one fused
kernel (:mod:`neurorobust.mechanisms._granule_kernel`) that never materialises the (B, m)
activations, with a backward pass for the input gradient (attacks) and the read-out gradient
(training). The plain torch path (``backend="torch"``) is the reference the kernel is tested
against, and is used on a GPU or without numba. ``backend="dense"`` multiplies by the dense
masked matrix (duplicates summed): the slow reference of the benchmark, and the faster choice for
large k.

References
----------
Y. Liu, B. Li, Q. Chen. Evaluating adversarial robustness in simulated cerebellum (pre-registered
proposal and results). Authors' code: github.com/liuyuezhang/cerebellum.
D. Marr (1969). A theory of cerebellar cortex. J. Physiol. 202:437-470.
J. S. Albus (1971). A theory of cerebellar function. Math. Biosci. 10:25-61.
A. Litwin-Kumar, K. D. Harris, R. Axel, H. Sompolinsky, L. F. Abbott (2017). Optimal degrees of
synaptic connectivity. Neuron 93:1153-1164.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import InvalidParameterError
from ..models import MODELS
from ..models.base import ImageModel
from ..registry import signature_of
from ..training.loop import fit
from ..types import ProgressFn
from ..validation import Constraint, Interval, Options, Type, validate_params
from . import MECHANISMS

__all__ = [
    "BACKENDS",
    "FUSED_MAX_K",
    "LTD",
    "CerebellumNet",
    "FrozenEncoder",
    "GranuleLayer",
    "cerebellum",
    "cerebellum_head",
    "draw_granule_inputs",
    "fused_available",
    "synapse_budget_width",
]

_PAPER = "Liu, Li, Chen: Evaluating adversarial robustness in simulated cerebellum (granule layer, LTD, as coded)"
BACKENDS = ("auto", "fused", "torch", "dense")
#: ``backend="auto"`` uses the fused kernel up to this many inputs per cell, the dense masked matmul above
FUSED_MAX_K = 64

_kernel: Any = None


def fused_available() -> bool:
    """True when numba is installed, i.e. the fused CPU kernel can run."""
    global _kernel
    if _kernel is None:
        try:
            from . import _granule_kernel as kernel
        except ImportError:  # numba missing: the torch path serves
            _kernel = False
        else:
            _kernel = kernel
    return _kernel is not False


def synapse_budget_width(k: int, budget: float = 4.8e6, num_classes: int = 10) -> int:
    """Granule cells at a fixed synapse budget: ``m = round(budget / (k + 2 c))`` (the paper's sparsity sweep).

    >>> [synapse_budget_width(k) for k in (1, 4, 784)]
    [228571, 200000, 5970]
    """
    validate_params("synapse_budget_width", {"k": Interval(int, 1, None)}, {"k": k})
    return round(budget / (k + 2 * num_classes))


def draw_granule_inputs(
    d: int, m: int, k: int, *, unique: bool = False, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Random inputs of ``m`` granule cells: ``(indices (m, k) int64, weights (m, k) float32)``.

    Indices are drawn uniformly from ``range(d)``, with replacement as the authors' code does
    (a cell may list an input twice: its weights then add), or without (``unique=True``);
    weights are :math:`\mathcal{N}(0, 1)/\sqrt{k}`.
    """
    validate_params(
        "draw_granule_inputs",
        {"d": Interval(int, 1, None), "m": Interval(int, 1, None), "k": Interval(int, 1, None)},
        {"d": d, "m": m, "k": k},
    )
    if k > d:
        raise InvalidParameterError("k", "draw_granule_inputs", f"an int in [1, d] = [1, {d}]", k)
    if unique:
        if k == d:
            idx = torch.arange(d).repeat(m, 1)
        elif m * d > 50_000_000:  # the argsort of an (m, d) matrix gets large: draw blocks of cells
            blocks = [
                torch.rand(min(4096, m - i), d, generator=generator).argsort(dim=1)[:, :k] for i in range(0, m, 4096)
            ]
            idx = torch.cat(blocks)
        else:
            idx = torch.rand(m, d, generator=generator).argsort(dim=1)[:, :k]
    else:
        idx = torch.randint(0, d, (m, k), generator=generator)
    weights = torch.randn(m, k, generator=generator) / math.sqrt(k)
    return idx.to(torch.int64).contiguous(), weights.contiguous()


class GranuleLayer(nn.Module):
    r"""Fixed random granule layer :math:`h = \max(J^{\top} x, 0)`, sparse (k inputs per cell) or dense.

    Parameters
    ----------
    d : int
        Number of inputs (mossy fibres).
    m : int
        Number of granule cells.
    k : int, default=4
        Inputs per cell, in [1, d] (ignored when ``fc``).
    fc : bool, default=False
        Fully connected: a dense (d, m) matrix with :math:`\mathcal{N}(0, 1/d)` entries (the paper's Base).
    unique : bool, default=False
        Draw each cell's inputs without replacement (the authors' code draws with replacement).
    seed : int or None, default=None
        Seeds the draw of :math:`J`; ``None`` draws from torch's global generator (the runner
        seeds it with the spec's seed, so seeds 0 and 123 give different layers).

    Attributes
    ----------
    inputs : torch.Tensor of shape (m, k), int64
        Input indices of each cell (sparse layer; a buffer).
    weights : torch.Tensor of shape (m, k)
        Their weights (a buffer).
    weight : torch.Tensor of shape (d, m)
        The dense matrix (``fc=True`` only; a buffer).

    Shapes
    ------
    ``forward``: (N, d) -> (N, m).

    Examples
    --------
    >>> layer = GranuleLayer(784, 1000, k=4, seed=0)
    >>> layer.inputs.shape, layer(torch.rand(3, 784)).shape
    (torch.Size([1000, 4]), torch.Size([3, 1000]))
    """

    _parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "d": Interval(int, 1, None),
        "m": Interval(int, 1, None),
        "k": Interval(int, 1, None),
        "fc": Type(bool),
        "unique": Type(bool),
        "seed": Type(int, optional=True),
    }

    def __init__(
        self, d: int, m: int, k: int = 4, *, fc: bool = False, unique: bool = False, seed: int | None = None
    ) -> None:
        validate_params("GranuleLayer", self._parameter_constraints, locals())
        if not fc and k > d:
            raise InvalidParameterError("k", "GranuleLayer", f"an int in [1, d] = [1, {d}] (inputs per cell)", k)
        super().__init__()
        self.d, self.m, self.fc, self.unique = int(d), int(m), bool(fc), bool(unique)
        self.k = self.d if fc else int(k)
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        if fc:
            self.register_buffer("weight", torch.randn(d, m, generator=gen) / math.sqrt(d))
        else:
            idx, w = draw_granule_inputs(d, m, k, unique=unique, generator=gen)
            self.register_buffer("inputs", idx)
            self.register_buffer("weights", w)
        self._idx32: tuple[Any, torch.Tensor] | None = None

    def extra_repr(self) -> str:
        return f"d={self.d}, m={self.m}, " + ("fc=True" if self.fc else f"k={self.k}, unique={self.unique}")

    def inputs32(self) -> torch.Tensor:
        """The indices as a contiguous int32 tensor (cached; what the fused kernel reads)."""
        key = (self.inputs.data_ptr(), self.inputs._version)
        if self._idx32 is None or self._idx32[0] != key:
            self._idx32 = (key, self.inputs.to(torch.int32).contiguous())
        return self._idx32[1]

    def dense(self) -> torch.Tensor:
        """:math:`J` as a dense (d, m) matrix (duplicate inputs of a cell summed)."""
        if self.fc:
            return self.weight
        J = torch.zeros(self.d, self.m, dtype=self.weights.dtype, device=self.weights.device)
        cols = torch.arange(self.m, device=J.device)[:, None].expand(-1, self.k)
        J.index_put_((self.inputs, cols), self.weights, accumulate=True)
        return J

    def preactivation(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`J^{\\top} x` for (N, d) ``x`` by the plain torch path (one (N, m) gather per input slot)."""
        if self.fc:
            return x @ self.weight
        w = self.weights.to(x.dtype)
        a = x[:, self.inputs[:, 0]] * w[:, 0]
        for q in range(1, self.k):
            a = a + x[:, self.inputs[:, q]] * w[:, q]
        return a

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.d:
            raise InvalidParameterError("x", "GranuleLayer", f"a tensor of shape (N, {self.d})", x)
        return torch.relu(self.preactivation(x))


class LTD(nn.Module):
    r"""Long-term depression as a moving-average centring of the granule activity: :math:`z = h - \mu`.

    In training, before subtracting, :math:`\mu \leftarrow \beta\mu + (1 - \beta)\,\bar h` with
    :math:`\bar h` the batch mean of ``h`` (no gradient); in eval :math:`\mu` is frozen.

    Parameters
    ----------
    m : int
        Number of granule cells.
    beta : float, default=0.99
        Moving-average factor, in (0, 1).

    Examples
    --------
    >>> ltd = LTD(3, beta=0.5).train()
    >>> _ = ltd(torch.ones(2, 3))
    >>> ltd.mu
    tensor([0.5000, 0.5000, 0.5000])
    """

    _parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "m": Interval(int, 1, None),
        "beta": Interval(float, 0, 1, closed="neither"),
    }

    def __init__(self, m: int, beta: float = 0.99) -> None:
        validate_params("LTD", self._parameter_constraints, locals())
        super().__init__()
        self.beta = float(beta)
        self.register_buffer("mu", torch.zeros(m))

    def extra_repr(self) -> str:
        return f"m={self.mu.numel()}, beta={self.beta}"

    @torch.no_grad()
    def update(self, batch_mean: torch.Tensor) -> None:
        """:math:`\\mu \\leftarrow \\beta\\mu + (1 - \\beta)\\,\\bar h` (training only)."""
        self.mu.mul_(self.beta).add_(batch_mean.to(self.mu.dtype), alpha=1 - self.beta)

    def reset_state(self) -> None:
        """Set :math:`\\mu` back to 0."""
        self.mu.zero_()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.update(h.detach().mean(0))
        return h - self.mu


class FrozenEncoder(nn.Module):
    """A trained feature extractor kept in eval mode with its parameters frozen (never trained).

    ``train()`` leaves it in eval mode, so batch-norm statistics never move when the head trains;
    input gradients still flow through it (attacks see the whole model).
    """

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        self.encoder.eval()

    def train(self, mode: bool = True) -> FrozenEncoder:
        super().train(False)
        self.encoder.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x).flatten(1)


class _FusedGranuleReadout(torch.autograd.Function):
    """:math:`Y = \\max(J^{\\top}X, 0)\\,W` and the per-cell activity sums in one fused CPU pass."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, readout: torch.Tensor, idx32: torch.Tensor, w: torch.Tensor, want_sum: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        _kernel.set_threads(torch.get_num_threads())
        W = readout.detach().numpy()
        ctx.W, ctx.idx, ctx.w, ctx.single = W, idx32.numpy(), w.numpy(), x.shape[0] == 1
        if ctx.single:  # batch of one (Table 7): a loop over cells, activations kept for the backward pass
            ctx.x1 = x.detach().reshape(-1).contiguous().numpy()
            y, hsum = _kernel.forward1(ctx.x1, ctx.idx, ctx.w, W)
            ctx.h = hsum
        else:
            ctx.xT = x.detach().T.contiguous().numpy()
            y, hsum = _kernel.forward(ctx.xT, ctx.idx, ctx.w, W, bool(want_sum))
        hsum_t = torch.from_numpy(hsum)
        ctx.mark_non_differentiable(hsum_t)
        return torch.from_numpy(y), hsum_t

    @staticmethod
    def backward(ctx: Any, gy: torch.Tensor, _: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        want_x, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if not (want_x or want_w):
            return None, None, None, None, None
        _kernel.set_threads(torch.get_num_threads())
        dtype = torch.float32 if ctx.W.dtype.itemsize == 4 else torch.float64
        if ctx.single:
            g = gy.to(dtype).reshape(-1).contiguous().numpy()
            gx1, gW = _kernel.backward1(ctx.x1, ctx.idx, ctx.w, ctx.W, ctx.h, g, bool(want_x), bool(want_w))
            gx = torch.from_numpy(gx1) if want_x else None
        else:
            gT = gy.to(dtype).T.contiguous().numpy()
            gxT, gW = _kernel.backward(ctx.xT, ctx.idx, ctx.w, ctx.W, gT, bool(want_x), bool(want_w))
            gx = torch.from_numpy(gxT).T if want_x else None
        return gx, (torch.from_numpy(gW) if want_w else None), None, None, None


class CerebellumNet(ImageModel):
    r"""Encoder -> granule layer -> optional LTD -> linear Purkinje read-out (no biases).

    Parameters
    ----------
    input_shape : tuple of int, default=(1, 28, 28)
        Image shape (C, H, W); the encoder maps it to d features (identity + flatten by default).
    num_classes : int, default=10
    m : int, default=200_000
        Granule cells.
    k : int, default=4
        Inputs per granule cell (ignored when ``fc``).
    ltd : bool, default=True
        Subtract the LTD moving average :math:`\mu` before the read-out.
    fc : bool, default=False
        Fully connected granule layer (the paper's Base).
    beta : float, default=0.99
        LTD factor.
    unique : bool, default=False
        Inputs of a cell without replacement.
    seed : int or None, default=None
        Seeds :math:`J`; ``None`` uses torch's global generator.
    encoder : nn.Module or None, default=None
        Feature extractor (e.g. :class:`FrozenEncoder` of a trained VGG trunk for CIFAR-10).
    d : int or None, default=None
        Feature size; required with an ``encoder``, else the number of pixels.
    backend : {'auto', 'fused', 'torch', 'dense'}, default='auto'
        ``auto``: the fused numba kernel on CPU for sparse layers with k <= 64 (when numba is
        installed), the dense masked matmul for larger k, torch otherwise.

    Attributes
    ----------
    readout : nn.Parameter of shape (m, num_classes)
        The Purkinje weights :math:`W` (the only parameter).

    Examples
    --------
    >>> net = CerebellumNet(m=500, k=4, seed=0)
    >>> net(torch.rand(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    >>> [name for name, _ in net.named_parameters()]
    ['readout']
    """

    is_stochastic = False

    _parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "num_classes": Interval(int, 2, None),
        "m": Interval(int, 1, None),
        "k": Interval(int, 1, None),
        "ltd": Type(bool),
        "fc": Type(bool),
        "beta": Interval(float, 0, 1, closed="neither"),
        "unique": Type(bool),
        "seed": Type(int, optional=True),
        "d": Type(int, optional=True),
        "backend": Options(BACKENDS),
    }

    def __init__(
        self,
        input_shape: Sequence[int] = (1, 28, 28),
        num_classes: int = 10,
        *,
        m: int = 200_000,
        k: int = 4,
        ltd: bool = True,
        fc: bool = False,
        beta: float = 0.99,
        unique: bool = False,
        seed: int | None = None,
        encoder: nn.Module | None = None,
        d: int | None = None,
        backend: str = "auto",
    ) -> None:
        validate_params("CerebellumNet", self._parameter_constraints, locals())
        super().__init__(input_shape, num_classes)
        if encoder is not None and d is None:
            raise InvalidParameterError("d", "CerebellumNet", "the encoder's feature size (an int >= 1)", d)
        pixels = math.prod(self.input_shape)
        d = int(d) if d is not None else pixels
        if d < 1:
            raise InvalidParameterError("d", "CerebellumNet", "an int >= 1", d)
        if not fc and k > d:
            raise InvalidParameterError("k", "CerebellumNet", f"an int in [1, d] = [1, {d}] (inputs per cell)", k)
        self.encoder = encoder
        self.d = d
        self.backend = backend
        self.granule = GranuleLayer(d, m, k, fc=fc, unique=unique, seed=seed)
        self.ltd = LTD(m, beta) if ltd else None
        bound = 1.0 / math.sqrt(m)
        self.readout = nn.Parameter(torch.empty(m, num_classes).uniform_(-bound, bound))

    @property
    def m(self) -> int:
        return self.granule.m

    @property
    def k(self) -> int:
        return self.granule.k

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The granule layer's inputs (N, d): the encoder's output, or the flattened image."""
        self.check_input(x)
        f = self.encoder(x) if self.encoder is not None else x.flatten(1)
        if f.dim() != 2 or f.shape[1] != self.d:
            raise InvalidParameterError("encoder", "CerebellumNet", f"a module mapping images to (N, {self.d})", f)
        return f

    def path(self, x: torch.Tensor | None = None) -> str:
        """Which implementation ``forward`` uses: 'fused', 'torch' or 'dense'."""
        if self.granule.fc:
            return "dense"
        if self.backend != "auto":
            if self.backend == "fused" and not fused_available():
                raise InvalidParameterError(
                    "backend", "CerebellumNet", "'auto', 'torch' or 'dense' (numba is not installed)", "fused"
                )
            return self.backend
        on_cpu = self.readout.device.type == "cpu" and (x is None or x.device.type == "cpu")
        if on_cpu and self.granule.k <= FUSED_MAX_K and fused_available():
            return "fused"
        return "dense" if self.granule.k > FUSED_MAX_K else "torch"

    def granule_readout(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(max(J^T f, 0) W, batch mean of max(J^T f, 0) or None)``: the raw read-out before LTD."""
        want_mean = self.ltd is not None and self.training
        path = self.path(f)
        if path == "fused":
            dtype = self.readout.dtype
            y, hsum = _FusedGranuleReadout.apply(
                f.to(dtype).contiguous(),
                self.readout,
                self.granule.inputs32(),
                self.granule.weights.to(dtype).contiguous(),
                want_mean,
            )
            return y, (hsum / f.shape[0] if want_mean else None)
        h = torch.relu(f @ self._dense_j()) if path == "dense" and not self.granule.fc else self.granule(f)
        return h @ self.readout, (h.detach().mean(0) if want_mean else None)

    def _dense_j(self) -> torch.Tensor:
        key = (self.granule.inputs.data_ptr(), self.granule.inputs._version, self.granule.weights._version)
        cached = getattr(self, "_dense_cache", None)
        if cached is None or cached[0] != key:
            cached = (key, self.granule.dense())
            object.__setattr__(self, "_dense_cache", cached)  # not a buffer: rebuilt from the indices
        return cached[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, mean = self.granule_readout(self.features(x))
        if self.ltd is None:
            return y
        if mean is not None:
            self.ltd.update(mean)  # training: mu moves first, from this batch, as coded
        return y - self.ltd.mu.to(y.dtype) @ self.readout

    def reset_state(self) -> None:
        """LTD's :math:`\\mu` back to 0."""
        if self.ltd is not None:
            self.ltd.reset_state()


# ------------------------------------------------------------------------------------ registry


@MODELS.register("cerebellum", paper=_PAPER)
@signature_of(CerebellumNet, drop=("encoder", "d"), returns=nn.Module)
def cerebellum(input_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10, **kwargs: Any) -> nn.Module:
    """Granule layer (k random inputs per cell, or fully connected) + optional LTD + Purkinje read-out.

    Table 2: Base = ``fc=True, m=5970, ltd=False``; Base + LTD = ``fc=True, m=5970``; Base + RC =
    ``k=4, m=200000, ltd=False``; Cerebellum = ``k=4, m=200000`` (the defaults). Train with
    ``loss = "mse"``, ``optimizer = "rmsprop"``, ``lr = 0.5 / m``, batch 50, 10 epochs. Parameters:
    :class:`CerebellumNet`'s but ``encoder`` and ``d``.
    """
    return CerebellumNet(input_shape, num_classes, **kwargs)


_HEAD_CONSTRAINTS: dict[str, Constraint] = {
    "m": Interval(int, 1, None),
    "k": Interval(int, 1, None),
    "ltd": Type(bool),
    "fc": Type(bool),
    "beta": Interval(float, 0, 1, closed="neither"),
    "unique": Type(bool),
    "epochs": Interval(int, 0, None),
    "batch_size": Interval(int, 1, None),
    "augment": Options(["none", "flip", "crop-flip"]),
    "train_subset": Type(int, optional=True),
    "seed": Interval(int, 0, None),
}


def _encoder_of(model: nn.Module) -> tuple[nn.Module, int]:
    enc = getattr(model, "encoder", None)
    d = getattr(enc, "out_features", None)
    if enc is None or d is None:
        raise InvalidParameterError(
            "model",
            "cerebellum_head",
            "a trained model with an 'encoder' that has 'out_features' (e.g. vgg_cifar)",
            type(model).__name__,
        )
    return enc, int(d)


#: The parameters of ``cerebellum_head`` that shape the :class:`CerebellumNet` it trains.
_HEAD_NET_PARAMS = ("m", "k", "ltd", "fc", "beta", "unique")


def _head_architecture(model: nn.Module, data: Any = None, *, seed: int = 0, **params: Any) -> CerebellumNet:
    """The untrained head on a frozen copy of ``model``'s encoder, from ``cerebellum_head``'s parameters
    (its training settings are ignored; the granule layer's defaults are :class:`CerebellumNet`'s)."""
    import copy

    enc, d = _encoder_of(model)
    input_shape = getattr(model, "input_shape", None) or tuple(data.input_shape)
    num_classes = int(getattr(model, "num_classes", 0) or data.num_classes)
    net = {k: v for k, v in params.items() if k in _HEAD_NET_PARAMS}
    # J is drawn from the seed (the runner's global seed may be another), without resetting the
    # caller's global generator
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CerebellumNet(input_shape, num_classes, **net, seed=None, encoder=FrozenEncoder(copy.deepcopy(enc)), d=d)


@MECHANISMS.register("cerebellum_head", paper=_PAPER + "; CIFAR-10 heads on a frozen VGG trunk")
def cerebellum_head(
    model: nn.Module,
    data: Any = None,
    *,
    m: int = 200_000,
    k: int = 4,
    ltd: bool = True,
    fc: bool = False,
    beta: float = 0.99,
    unique: bool = False,
    epochs: int = 10,
    batch_size: int = 50,
    lr: float | None = None,
    augment: str = "crop-flip",
    train_subset: int | None = None,
    adversarial: dict[str, Any] | None = None,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> nn.Module:
    """A granule head on the frozen encoder of a trained model, trained through the one loop.

    The paper's CIFAR-10 models: the trained VGG's 8-conv trunk is frozen and maps an image to
    d = 4096 features; a granule layer + optional LTD + Purkinje read-out is trained on them with
    MSE to one-hot, RMSprop, lr = 0.5 / m, batch 50, 10 epochs and the same augmentation as the
    trunk (random crop + flip). The whole model (trunk + head) is what attacks see.

    Parameters
    ----------
    model : nn.Module
        The trained control, with an ``encoder`` exposing ``out_features`` (``vgg_cifar``).
    data : Dataset
        Its training images train the head.
    m, k, ltd, fc, beta, unique
        As :class:`CerebellumNet`. The paper's CIFAR Base is ``fc=True, m=1166``.
    epochs : int, default=10
    batch_size : int, default=50
    lr : float or None, default=None
        RMSprop learning rate; ``None`` means 0.5 / m.
    augment : {'none', 'flip', 'crop-flip'}, default='crop-flip'
    train_subset : int or None, default=None
        Train on a seeded class-balanced subset of this many images (the 30-minute tier).
    adversarial : dict or None, default=None
        Train the head adversarially: the settings of the one loop's adversarial objective (``method``,
        ``eps``, ``steps``, ``step_size``, ...; :class:`~neurorobust.training.adversarial.AdversarialObjective`).
        The examples are crafted against the whole model (frozen trunk + head), so a head on an adversarially
        trained trunk is itself trained on that trunk's adversarial examples (``configs/combo_cifar10.toml``);
        not part of the paper.
    seed : int, default=0
        Seeds :math:`J`, the shuffling and the augmentation.

    Returns
    -------
    CerebellumNet
        With ``mechanism_report`` (head settings, training history, seconds).
    """
    validate_params(
        "cerebellum_head",
        _HEAD_CONSTRAINTS,
        {k_: v for k_, v in locals().items() if k_ in _HEAD_CONSTRAINTS},
    )
    if lr is not None and not (isinstance(lr, float | int) and not isinstance(lr, bool) and lr > 0):
        raise InvalidParameterError("lr", "cerebellum_head", "a float > 0 or None (0.5 / m)", lr)
    if data is None or not hasattr(data, "x_train"):
        raise InvalidParameterError("data", "cerebellum_head", "a Dataset with training images", data)
    head = _head_architecture(model, data, m=m, k=k, ltd=ltd, fc=fc, beta=beta, unique=unique, seed=seed)
    x, y = data.x_train, data.y_train
    if train_subset is not None and train_subset < len(y):
        from ..data import balanced_subset

        idx = balanced_subset(y, train_subset, seed=seed)
        x, y = x[idx], y[idx]
    rate = float(lr) if lr is not None else 0.5 / m
    start = time.perf_counter()
    head, history = fit(
        head,
        x,
        y,
        optimizer="rmsprop",
        lr=rate,
        loss="mse",
        batch_size=batch_size,
        epochs=epochs,
        augment=augment,
        adversarial=adversarial,
        seed=seed,
        progress=progress,
    )
    seconds = time.perf_counter() - start
    head.mechanism_report = {  # type: ignore[assignment]
        "m": m,
        "k": head.k,
        "ltd": ltd,
        "fc": fc,
        "lr": rate,
        "epochs": epochs,
        "train_images": len(y),
        "train_seconds": seconds,
        "history": history.epochs,
        "encoder_frozen": True,
        "adversarial": adversarial,
    }
    head.eval()
    return head


cerebellum_head.architecture = _head_architecture  # type: ignore[attr-defined]  # builds the shape to load a checkpoint into
