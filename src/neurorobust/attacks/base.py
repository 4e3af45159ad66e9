"""The attack base class, its result type and the shared batched engine (DESIGN §3, STYLE §1-3).

Every attack subclasses :class:`Attack` and implements only ``_run``. The final base
``__call__`` validates the inputs, freezes the model (eval mode, parameters'
``requires_grad`` off; both restored in ``try/finally``), projects the subclass's output onto
the eps-ball and the image box [0, 1], recomputes success from the model's own predictions and
measures distances. Every forward pass goes through :meth:`Attack._logits`, which counts
queries per sample.

The engine helpers below (:func:`input_gradient`, :func:`project`, :func:`ascent_direction`,
:func:`attack_loss`, :func:`lp_norm`) are shared by all attacks: one gradient routine and one
projection per norm.

Examples
--------
>>> import torch
>>> from torch import nn
>>> from neurorobust.attacks import PGD
>>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
>>> x, y = torch.rand(5, 1, 2, 2), torch.tensor([0, 1, 2, 0, 1])
>>> result = PGD(steps=5)(model, x, y, eps=0.1, generator=torch.Generator().manual_seed(0))
>>> tuple(result.x_adv.shape), result.success.dtype, float(result.distances["linf"].max()) <= 0.1 + 1e-6
((5, 1, 2, 2), torch.bool, True)
"""

from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, final, overload

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidParameterError, ModelOutputError
from ..modes import eval_mode, restore_modes, save_modes, set_eval
from ..validation import Constraint, Options, validate_params

__all__ = [
    "LOSSES",
    "NORMS",
    "Attack",
    "AttackResult",
    "ascent_direction",
    "attack_loss",
    "check_finite",
    "draw_correct",
    "draw_predictions",
    "input_gradient",
    "lp_norm",
    "project",
    "require_classes",
    "single_draw_random",
    "target_classes",
    "uniform_in_ball",
]

NORMS: Final = ("linf", "l2", "l0")
LOSSES: Final = ("ce", "mse", "margin", "dlr")
MODEL_MODES: Final = ("eval", "train")


class _Text:
    """A value whose repr is plain text, for error messages about tensors' contents."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


# --------------------------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------------------------


@dataclass
class AttackResult:
    """What one attack run at one eps returns.

    Attributes
    ----------
    x_adv : torch.Tensor of shape (N, C, H, W)
        Adversarial examples, inside the eps-ball (for bounded attacks or when eps is given)
        and inside [0, 1].
    success : torch.Tensor of shape (N,), dtype bool
        ``True`` where the model (in eval mode) misclassifies ``x_adv``; recomputed by the base
        class, never taken from the attack. Inputs misclassified before the attack count as
        successes (see ``clean_correct``).
    distances : dict of str to torch.Tensor of shape (N,)
        ``"l0"`` (number of changed entries), ``"l2"`` and ``"linf"`` of ``x_adv - x``.
    queries : torch.Tensor of shape (N,), dtype int64
        Forward passes per sample the attack used (the final success check is not counted).
    eps : float or None
        The eps of this result; ``None`` for an unbounded minimal attack.
    norm : str or None
        The norm ``eps`` is measured in (``"linf"``, ``"l2"`` or ``"l0"``).
    clean_correct : torch.Tensor of shape (N,), dtype bool or None
        Whether the model classified the clean input correctly.
    extra : dict of str to torch.Tensor
        Per-sample extras of an attack, e.g. ``min_eps`` for ``fgsm-min``.
    """

    x_adv: torch.Tensor
    success: torch.Tensor
    distances: dict[str, torch.Tensor]
    queries: torch.Tensor
    eps: float | None = None
    norm: str | None = None
    clean_correct: torch.Tensor | None = None
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def robust_accuracy(self) -> float:
        """Fraction of samples still classified correctly after the attack."""
        return float((~self.success).float().mean()) if self.success.numel() else float("nan")


# --------------------------------------------------------------------------------------------
# Engine helpers (shared by every attack)
# --------------------------------------------------------------------------------------------


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1)


def _expand(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a per-sample vector (N,) to broadcast against ``like`` (N, ...)."""
    return v.reshape((-1,) + (1,) * (like.dim() - 1))


def lp_norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-sample norm of ``delta`` (N, ...): ``"linf"``, ``"l2"`` or ``"l0"`` (count of non-zeros)."""
    flat = _flat(delta)
    if norm == "linf":
        return flat.abs().amax(dim=1) if flat.shape[1] else flat.new_zeros(flat.shape[0])
    if norm == "l2":
        return flat.norm(p=2, dim=1)
    if norm == "l0":
        return (flat != 0).sum(dim=1).to(delta.dtype)
    raise ValueError(f"unknown norm {norm!r}")


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float | None, norm: str | None) -> torch.Tensor:
    r"""Project ``x_adv`` onto the ``norm`` ball of radius ``eps`` around ``x``, then onto [0, 1].

    .. math::

        \Pi(x') = \operatorname{clip}_{[0,1]}\big(x + \operatorname{proj}_{\|\delta\|\le\epsilon}(x' - x)\big)

    L∞ clips each coordinate to ``[-eps, eps]``; L2 rescales ``delta`` by
    ``min(1, eps / ||delta||_2)``; L0 keeps the ``int(eps)`` largest ``|delta|`` entries. Clipping to
    the box afterwards never leaves the ball (it only shrinks ``|delta_i|``, as ``x`` is in the box).
    ``eps=None`` (unbounded) only clips to the box.
    """
    if eps is None or norm is None:
        return x_adv.clamp(0.0, 1.0)
    if norm == "linf":
        lo = (x - eps).clamp_(min=0.0)
        hi = (x + eps).clamp_(max=1.0)
        return torch.minimum(torch.maximum(x_adv, lo), hi)
    delta = x_adv - x
    if norm == "l2":
        n = lp_norm(delta, "l2")
        factor = torch.where(n > eps, eps / n.clamp_min(1e-12), torch.ones_like(n))
        delta = delta * _expand(factor, delta)
    elif norm == "l0":
        k = int(eps)
        flat = _flat(delta)
        if k < flat.shape[1]:
            keep = torch.zeros_like(flat, dtype=torch.bool)
            if k > 0:
                keep.scatter_(1, flat.abs().topk(k, dim=1).indices, True)
            delta = (flat * keep).reshape(delta.shape)
    else:
        raise ValueError(f"unknown norm {norm!r}")
    return (x + delta).clamp(0.0, 1.0)


def ascent_direction(grad: torch.Tensor, norm: str) -> torch.Tensor:
    r"""Steepest-ascent direction: :math:`\operatorname{sign}(g)` for L∞, :math:`g/\|g\|_2` for L2."""
    if norm == "linf":
        return grad.sign()
    n = lp_norm(grad, "l2").clamp_min(1e-12)
    return grad / _expand(n, grad)


def uniform_in_ball(x: torch.Tensor, eps: float, norm: str, generator: torch.Generator) -> torch.Tensor:
    """A random start: ``x`` plus a uniform sample of the ``norm`` ball of radius ``eps``."""
    if norm == "linf":
        u = _rand(x.shape, generator, x)
        return x + eps * (2.0 * u - 1.0)
    g = _randn(x.shape, generator, x)
    d = _flat(g).shape[1]
    r = _rand((x.shape[0],), generator, x).pow(1.0 / d) * eps
    return x + g / _expand(lp_norm(g, "l2").clamp_min(1e-12), g) * _expand(r, g)


def _rand(shape: Sequence[int], generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """U[0, 1) from ``generator`` (on its own device), moved to ``like``'s device and dtype."""
    return torch.rand(tuple(shape), generator=generator, device=generator.device).to(like.device, like.dtype)


def _randn(shape: Sequence[int], generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    return torch.randn(tuple(shape), generator=generator, device=generator.device).to(like.device, like.dtype)


def _randint(high: int, shape: Sequence[int], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.randint(high, tuple(shape), generator=generator, device=generator.device).to(device)


def attack_loss(name: str, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r"""Per-sample loss the attacker maximises.

    ``"ce"``: cross-entropy. ``"mse"``: :math:`\tfrac{1}{K}\sum_k (z_k - e_{y,k})^2` on the one-hot
    label, as the sleep and cerebellum code. ``"margin"``: :math:`\max_{j\ne y} z_j - z_y` (C&W).
    ``"dlr"`` (Croce & Hein 2020, needs at least 3 classes):

    .. math::

        \mathrm{DLR}(z, y) = -\frac{z_y - \max_{j\ne y} z_j}{z_{\pi_1} - z_{\pi_3} + 10^{-12}}

    with :math:`\pi` the classes sorted by decreasing logit.
    """
    if name == "ce":
        return F.cross_entropy(logits, y, reduction="none")
    if name == "mse":
        onehot = F.one_hot(y, logits.shape[1]).to(logits.dtype)
        return (logits - onehot).pow(2).mean(dim=1)
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(dim=1)
    if name == "margin":
        return other - z_y
    if name == "dlr":
        top = logits.topk(3, dim=1).values
        return -(z_y - other) / (top[:, 0] - top[:, 2] + 1e-12)
    raise ValueError(f"unknown loss {name!r}")


def unwrapped(model: Any) -> Any:
    """The user's model inside the EOT/BPDA wrappers (for messages)."""
    while getattr(model, "wraps_model", False):
        model = model.model
    return model


def check_finite(model: Any, logits: Any, what: str = "returned NaN or infinite logits") -> None:
    """Raise :class:`~neurorobust.errors.ModelOutputError` naming the model unless ``logits`` is all finite.

    A NaN output is never a robust point: ``argmax`` of NaN logits is class 0, so a NaN model would
    otherwise be scored about 1/K robust.
    """
    if isinstance(logits, torch.Tensor) and logits.is_floating_point() and not bool(torch.isfinite(logits).all()):
        bad = int((~torch.isfinite(logits)).any(dim=-1).sum()) if logits.dim() > 1 else 1
        raise ModelOutputError(unwrapped(model), f"{what} for {bad} of {logits.shape[0]} inputs")


def draw_predictions(model: Any, logits: torch.Tensor) -> torch.Tensor:
    """The predicted class of every draw behind ``logits``, shape (draws, N): an
    :class:`~neurorobust.attacks.wrappers.EOTModel`'s per-draw predictions, else ``argmax(logits)`` as one draw."""
    record = getattr(model, "last_draws", None)
    if record is not None and logits.dim() == 2:
        ptr, preds = record
        if ptr == logits.data_ptr() and preds.shape[1] == logits.shape[0]:
            return preds
    return logits.argmax(dim=1)[None, :]


def target_classes(logits: torch.Tensor, y: torch.Tensor, n: int) -> torch.Tensor:
    """The ``n`` classes other than the label by decreasing logit, shape (N, n): AutoAttack's targets for APGD-T
    and FAB-T (ranks 2, 3, ... when the label is the top class)."""
    return logits.scatter(1, y[:, None], -float("inf")).topk(n, dim=1).indices


def single_draw_random(model: Any) -> bool:
    """True for a model that declares itself random but is attacked on one draw (no EOT wrapper): there
    "fooled" is a coin flip, so an attack must not keep an earlier iterate for it."""
    return not hasattr(model, "last_draws") and bool(getattr(unwrapped(model), "is_stochastic", False))


def draw_correct(model: Any, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r"""Per sample, the fraction of the model's random draws that predict ``y``, as a float in [0, 1].

    For an :class:`~neurorobust.attacks.wrappers.EOTModel` whose last forward pass produced
    ``logits``, this is :math:`\frac{1}{n}\sum_i [\arg\max_k f_k(x;\omega_i) = y]` over its ``n`` draws
    (DESIGN §10: on a random model every decision of an attack is taken on the mean over draws);
    for any other model (one draw) it is ``argmax(logits) == y``. A sample is fooled when this is 0.
    """
    return (draw_predictions(model, logits) == y[None, :]).to(logits.dtype).mean(dim=0)


LossFn = Callable[[Any, torch.Tensor], torch.Tensor]


def input_gradient(
    forward: Callable[[torch.Tensor], Any],
    x: torch.Tensor,
    y: torch.Tensor,
    loss: str | LossFn,
) -> tuple[torch.Tensor, Any, torch.Tensor]:
    r"""Gradient of the summed per-sample ``loss`` with respect to the input only.

    The one gradient routine of the package: ``torch.autograd.grad(loss.sum(), x)``, so no
    parameter gradient is ever accumulated.

    Parameters
    ----------
    forward : callable
        Maps ``x`` to the model output (usually :meth:`Attack._logits` bound to a model).
    x : torch.Tensor
        The point; a detached copy is made to require grad.
    y : torch.Tensor
        Labels (or anything ``loss`` takes as its second argument).
    loss : str or callable
        A name of :func:`attack_loss` or ``loss(output, y) -> (N,)``.

    Returns
    -------
    grad : torch.Tensor
        :math:`\nabla_x \sum_i L_i`, same shape as ``x``.
    output : object
        ``forward(x)``, detached when it is a tensor.
    values : torch.Tensor of shape (N,)
        The per-sample losses, detached.
    """
    xg = x.detach().requires_grad_(True)
    with torch.enable_grad():
        out = forward(xg)
        values = attack_loss(loss, out, y) if isinstance(loss, str) else loss(out, y)
        (grad,) = torch.autograd.grad(values.sum(), xg)
    if not bool(torch.isfinite(grad).all()):
        raise ModelOutputError(
            unwrapped(forward) if isinstance(forward, nn.Module) else "under attack",
            f"gave a NaN or infinite input gradient for {int((~torch.isfinite(grad)).flatten(1).any(1).sum())} "
            f"of {grad.shape[0]} inputs",
        )
    if isinstance(out, torch.Tensor):
        out = out.detach()
    return grad, out, values.detach()


# --------------------------------------------------------------------------------------------
# The base class
# --------------------------------------------------------------------------------------------

_COMMON: dict[str, Constraint] = {"model_mode": Options(MODEL_MODES)}


class Attack(ABC):
    """Base class of every attack; subclasses implement :meth:`_run` only.

    Class attributes a subclass sets: ``key`` (registry name), ``paper`` (citation),
    ``bounded`` (``True`` when the attack needs an eps; ``False`` for minimal attacks, which
    return their smallest adversarial and are projected only when an eps is given),
    ``constraints`` (parameter constraints, checked in ``__init__``) and ``tags``.

    Calling an attack
    -----------------
    ``attack(model, x, y, *, eps=None, generator=None)``: ``eps`` is one float, returning one
    :class:`AttackResult`, or a list of floats, returning a list of results in the same order
    (a bounded attack runs once per eps; a minimal attack runs once and is projected onto
    each ball). ``generator`` is a :class:`torch.Generator` (a fresh one seeded 0 when
    omitted); the global RNG is never used.
    """

    key: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    bounded: bool = True
    #: ``False`` for an attack whose eps is a step size rather than a budget (a paper's protocol, e.g.
    #: ``bim-kubo``): its adversarials may leave the eps ball (see :meth:`budget`), so they never enter a
    #: worst case at eps, a cascade or a check.
    within_eps: ClassVar[bool] = True
    tags: ClassVar[tuple[str, ...]] = ()
    constraints: ClassVar[dict[str, Constraint]] = {}

    norm: str | None = None
    model_mode: str = "eval"
    #: Attacks whose samples are independent run in micro-batches of ``chunk_size`` samples on
    #: CPU (cache blocking: a 64-image MNIST CNN step fits the caches better than 250).
    #: Results are deterministic for a given chunk size; set ``attack.chunk_size = None`` to
    #: run the whole batch at once.
    chunkable: ClassVar[bool] = True
    chunk_size: int | None = 64

    def __init__(self, **params: Any) -> None:
        validate_params(type(self).__name__, {**_COMMON, **self.constraints}, params)
        self._params: dict[str, Any] = dict(params)
        for name, value in params.items():
            setattr(self, name, value)
        self._queries: torch.Tensor | None = None
        self._extra: dict[str, torch.Tensor] = {}
        self._last_queries = torch.zeros(0, dtype=torch.int64)
        self._check_params()

    def _check_params(self) -> None:  # noqa: B027 - optional hook, not abstract
        """Cross-parameter rules (raise :class:`InvalidParameterError`); none by default."""

    # ---------------------------------------------------------------- repr / params
    def get_params(self) -> dict[str, Any]:
        """The hyperparameters given to ``__init__`` (with their values)."""
        return dict(self._params)

    def __repr__(self) -> str:
        sig = inspect.signature(type(self).__init__).parameters
        shown = []
        for name, value in self._params.items():
            p = sig.get(name)
            if p is not None and p.default is not inspect.Parameter.empty and _same(p.default, value):
                continue
            shown.append(f"{name}={_short(value)}")
        return f"{type(self).__name__}({', '.join(shown)})"

    # ---------------------------------------------------------------- forward choke point
    def _logits(
        self, model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, idx: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The one forward call of every attack: ``model(x)``, counting one query per row.

        ``idx`` gives the sample indices the rows of ``x`` belong to (several rows may belong
        to one sample, e.g. candidates); ``None`` means row ``i`` is sample ``i``.
        """
        if self._queries is not None:
            if idx is None:
                if x.shape[0] == self._queries.shape[0]:
                    self._queries += 1
                else:  # an expanded batch of whole copies
                    self._queries += x.shape[0] // max(self._queries.shape[0], 1)
            else:
                idx = idx.to(self._queries.device)
                self._queries.index_add_(0, idx, torch.ones_like(idx, dtype=self._queries.dtype))
        out = model(x)
        check_finite(model, out)
        return out

    def _predict(self, model: nn.Module, x: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted classes of ``x`` in eval mode (the mode success is judged in), counted as queries."""
        with eval_mode(model), torch.no_grad():
            return self._logits(model, x, idx).argmax(dim=1)

    def _correct(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        idx: torch.Tensor | None = None,
        logits: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Per sample, the fraction of draws that classify ``x`` as ``y`` in eval mode (:func:`draw_correct`).

        ``logits`` taken at ``x`` in eval mode are reused (no extra query); otherwise, or when the model is
        attacked in train mode, one counted eval-mode forward pass is made.
        """
        if logits is None or model.training:
            with eval_mode(model), torch.no_grad():
                logits = self._logits(model, x, idx)
        return draw_correct(model, logits, y)

    def _add_queries(self, queries: torch.Tensor) -> None:
        """Add per-sample queries spent elsewhere (an inner attack)."""
        if self._queries is not None:
            self._queries += queries.to(self._queries.device, self._queries.dtype)

    # ---------------------------------------------------------------- the subclass hook
    @abstractmethod
    def _run(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        eps: float | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """Return adversarial examples for ``x`` (N, C, H, W); the base projects and checks them."""

    # ---------------------------------------------------------------- final __call__
    @overload
    def __call__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        eps: float | None = None,
        generator: torch.Generator | None = None,
    ) -> AttackResult: ...

    @overload
    def __call__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        eps: Sequence[float],
        generator: torch.Generator | None = None,
    ) -> list[AttackResult]: ...

    @final
    def __call__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        eps: float | Sequence[float] | None = None,
        generator: torch.Generator | None = None,
    ) -> AttackResult | list[AttackResult]:
        """Attack ``model`` at ``x`` with labels ``y``; see the class docstring."""
        caller = f"{type(self).__name__}.__call__"
        self._check_inputs(caller, model, x, y)
        eps_list, single = self._check_eps(caller, eps)
        if generator is None:
            generator = torch.Generator(device=x.device if x.device.type != "mps" else "cpu").manual_seed(0)
        elif not isinstance(generator, torch.Generator):
            raise InvalidParameterError("generator", caller, "a torch.Generator or None", generator)
        x = x.detach()
        y = y.detach()
        with _Frozen(model, self.model_mode):
            with torch.no_grad():
                set_eval(model)
                clean_logits = model(x)
                check_finite(model, clean_logits)
                if self.model_mode == "train":
                    model.train(True)
                else:
                    set_eval(model)
            n_classes = clean_logits.shape[-1]
            if int(y.max()) >= n_classes:
                raise InvalidParameterError(
                    "y",
                    caller,
                    f"an int64 tensor of labels in [0, {n_classes - 1}] for a model with {n_classes} classes",
                    _Text(f"labels up to {int(y.max())}"),
                )
            clean_correct = clean_logits.argmax(dim=1) == y
            results: list[AttackResult] = []
            if self.bounded:
                for e in eps_list:
                    raw, extra = self._run_counted(model, x, y, e, generator)
                    results.append(self._finish(model, x, y, raw, e, clean_correct, extra))
            else:
                raw, extra = self._run_counted(model, x, y, None, generator)
                queries = self._last_queries
                for e in eps_list:
                    self._last_queries = queries.clone()
                    results.append(self._finish(model, x, y, raw, e, clean_correct, extra))
        return results[0] if single else results

    def _required_eps(self, eps: float | None) -> float:
        """``eps`` for a bounded attack's ``_run`` (the base always passes one; a direct caller may not)."""
        if eps is None:
            raise InvalidParameterError("eps", type(self).__name__, "a number (a bounded attack needs an eps)", eps)
        return eps

    def budget(self, eps: float | None) -> float | None:
        """The radius the result is projected onto for ``eps``: ``eps`` itself for every attack bounded by
        it; larger for an attack whose eps is a per-step size (:attr:`within_eps` ``False``)."""
        return eps

    # ---------------------------------------------------------------- internals of __call__
    def _run_counted(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        eps: float | None,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        queries = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
        chunk = self.chunk_size if (self.chunkable and self.chunk_size and x.device.type == "cpu") else None
        n = x.shape[0]
        bounds = [(i, min(i + chunk, n)) for i in range(0, n, chunk)] if chunk else [(0, n)]
        parts: list[torch.Tensor] = []
        extras: list[dict[str, torch.Tensor]] = []
        try:
            for lo, hi in bounds:
                self._queries = queries[lo:hi]  # a view: counts land in ``queries``
                self._extra = {}
                raw = self._run(model, x[lo:hi], y[lo:hi], eps=eps, generator=generator)
                if not isinstance(raw, torch.Tensor) or raw.shape != x[lo:hi].shape:
                    raise RuntimeError(f"{type(self).__name__}._run returned {type(raw).__name__}, not a tensor like x")
                parts.append(raw.detach())
                extras.append(self._extra)
        finally:
            self._last_queries = queries
            self._queries = None
        extra = {k: torch.cat([e[k] for e in extras]) for k in extras[0]} if extras else {}
        return (parts[0] if len(parts) == 1 else torch.cat(parts)), extra

    def _finish(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        raw: torch.Tensor,
        eps: float | None,
        clean_correct: torch.Tensor,
        extra: Mapping[str, torch.Tensor],
    ) -> AttackResult:
        norm = self.norm
        if not bool(torch.isfinite(raw).all()):
            raise ModelOutputError(model, f"led {type(self).__name__} to NaN or infinite adversarial inputs")
        x_adv = project(raw, x, self.budget(eps), norm)
        with eval_mode(model), torch.inference_mode():
            logits = model(x_adv)
            check_finite(model, logits)
            pred = logits.argmax(dim=1)
        delta = x_adv - x
        distances = {n: lp_norm(delta, n) for n in ("l0", "l2", "linf")}
        return AttackResult(
            x_adv=x_adv,
            success=pred != y,
            distances=distances,
            queries=self._last_queries,
            eps=eps,
            norm=norm,
            clean_correct=clean_correct,
            extra=dict(extra),
        )

    def _check_inputs(self, caller: str, model: Any, x: Any, y: Any) -> None:
        if not isinstance(model, nn.Module):
            raise InvalidParameterError("model", caller, "an nn.Module mapping images to logits", model)
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() != 4:
            raise InvalidParameterError("x", caller, "a float tensor of shape (N, C, H, W)", x)
        if x.shape[0] == 0:
            raise InvalidParameterError("x", caller, "a non-empty batch", x)
        if not bool(torch.isfinite(x).all()):
            bad = int((~torch.isfinite(x)).sum())
            raise InvalidParameterError(
                "x",
                caller,
                "a tensor of finite values (no NaN or inf)",
                _Text(f"a tensor with {bad} NaN/inf values"),
            )
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise InvalidParameterError(
                "x", caller, "a tensor with values in [0, 1]", _Text(f"values in [{lo:.4g}, {hi:.4g}]")
            )
        if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or y.shape != (x.shape[0],):
            raise InvalidParameterError(
                "y", caller, f"an int64 tensor of labels of shape ({x.shape[0]},) (one per image)", y
            )
        if y.device != x.device:
            raise InvalidParameterError("y", caller, f"a tensor on the device of x ({x.device})", y)
        if int(y.min()) < 0:
            raise InvalidParameterError("y", caller, "an int64 tensor of labels >= 0", _Text(f"label {int(y.min())}"))

    def _check_eps(self, caller: str, eps: Any) -> tuple[list[float | None], bool]:
        def ok(e: Any) -> bool:
            return isinstance(e, int | float) and not isinstance(e, bool) and math.isfinite(e) and e >= 0

        if eps is None:
            if self.bounded:
                raise InvalidParameterError(
                    "eps",
                    caller,
                    f"a float >= 0 or a list of them ({type(self).__name__} is norm-bounded)",
                    None,
                )
            return [None], True
        if ok(eps):
            return [float(eps)], True
        if isinstance(eps, list | tuple) and eps and all(ok(e) for e in eps):
            return [float(e) for e in eps], False
        raise InvalidParameterError("eps", caller, "a float >= 0, a non-empty list of them or None", eps)


def require_classes(attack: Attack, model: nn.Module, x: torch.Tensor, k: int, why: str) -> int:
    """Raise :class:`InvalidParameterError` unless ``model`` has at least ``k`` classes; return the count."""
    with torch.no_grad():
        n = int(model(x[:1]).shape[-1])
    if n < k:
        raise InvalidParameterError(
            "model",
            f"{type(attack).__name__}.__call__",
            f"a model with at least {k} classes for {why}",
            _Text(f"a model with {n} classes"),
        )
    return n


class _Frozen:
    """Context manager: set the model's mode, switch parameters' requires_grad off; restore all.

    In train mode (dropout active during the attack) buffers such as BatchNorm running
    statistics are restored too, so attacking never changes the model.
    """

    def __init__(self, model: nn.Module, mode: str) -> None:
        self.model, self.mode = model, mode

    def __enter__(self) -> None:
        m = self.model
        self.modes = save_modes(m)
        params = list(m.parameters())
        self.flags = [(p, p.requires_grad) for p in params]
        self.buffers = [(b, b.detach().clone()) for b in m.buffers()] if self.mode == "train" else []
        for p in params:
            p.requires_grad_(False)
        if self.mode == "train":
            m.train(True)
        else:
            set_eval(m)

    def __exit__(self, *exc: object) -> None:
        for p, flag in self.flags:
            p.requires_grad_(flag)
        with torch.no_grad():
            for b, saved in self.buffers:
                b.copy_(saved)
        restore_modes(self.modes)


def _same(a: Any, b: Any) -> bool:
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:  # tensors, modules: compare by identity
        return a is b


def _short(value: Any) -> str:
    if isinstance(value, Attack):
        return repr(value)
    if isinstance(value, nn.Module):
        return f"<{type(value).__name__}>"
    if isinstance(value, float):
        return f"{value:g}"
    return repr(value)
