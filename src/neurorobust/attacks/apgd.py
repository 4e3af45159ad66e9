"""Auto-PGD with the cross-entropy (``apgd-ce``), the DLR (``apgd-dlr``) or the targeted DLR loss (``apgd-t``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import ModelOutputError
from ..validation import Interval, Options
from .base import (
    Attack,
    _expand,
    ascent_direction,
    draw_correct,
    input_gradient,
    project,
    require_classes,
    target_classes,
    uniform_in_ball,
    unwrapped,
)

__all__ = ["APGD", "APGDDLR", "APGDT"]

_PAPER = (
    "Croce, Hein 2020, 'Reliable evaluation of adversarial robustness with an ensemble of diverse "
    "parameter-free attacks', ICML, arXiv:2003.01690"
)

#: a per-sample loss: a name of :func:`~neurorobust.attacks.base.attack_loss` or ``loss(logits, y) -> (N,)``
_Loss = str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _checkpoints(steps: int) -> list[int]:
    r"""Iterations after which APGD checks its step size, as the AutoAttack reference counts them.

    The first window has :math:`\ell_0 = \max(\lfloor 0.22 N \rfloor, 1)` steps; each next one is
    :math:`\ell_{j+1} = \max(\ell_j - \max(\lfloor 0.03 N \rfloor, 1),\ \max(\lfloor 0.06 N \rfloor, 1))`
    steps, and the checkpoints are the partial sums :math:`w_j = \ell_0 + \dots + \ell_j \le N`
    (integers throughout; the products are Python floats as in the reference, e.g. for
    :math:`N = 100`: 22, 41, 57, 70, 80, 87, 93, 99).
    """
    first = max(int(0.22 * steps), 1)
    shortest = max(int(0.06 * steps), 1)
    shrink = max(int(0.03 * steps), 1)
    out: list[int] = []
    at, length = 0, first
    while at + length <= steps:
        at += length
        out.append(at)
        length = max(length - shrink, shortest)
    return out


def _targeted_dlr(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    r"""Targeted DLR: :math:`-(z_y - z_t) / (z_{\pi_1} - (z_{\pi_3} + z_{\pi_4})/2 + 10^{-12})`, at least 4 classes."""
    top = logits.topk(4, dim=1).values
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    z_t = logits.gather(1, target[:, None]).squeeze(1)
    return -(z_y - z_t) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


def _better(
    frac: torch.Tensor, loss: torch.Tensor, best_frac: torch.Tensor, best_loss: torch.Tensor, random: bool = False
) -> torch.Tensor:
    """Where (``frac``, ``loss``) beats the kept point: fewer correct draws, or as many and a higher loss.

    On a deterministic model a point with no correct draw left is final (the first fooling iterate is kept). On a
    random model (an EOT model) 0 correct draws among the attack's draws says less than it seems: fresh draws
    may still classify the point correctly, so a later iterate with a higher loss still replaces it.
    """
    tie = (frac == best_frac) & (loss > best_loss)
    return (frac < best_frac) | (tie if random else tie & (best_frac > 0))


class APGD(Attack):
    r"""Auto-PGD: step-size-free PGD with momentum and step halving at checkpoints.

    With :math:`\eta^{(k)}` the per-sample step (initially :math:`2\epsilon`) and
    :math:`\alpha = 0.75` (1 at the first step):

    .. math::

        z^{(k+1)} &= \Pi\big(x^{(k)} + \eta^{(k)} d(\nabla L(x^{(k)}))\big) \\
        x^{(k+1)} &= \Pi\big(x^{(k)} + \alpha (z^{(k+1)} - x^{(k)}) + (1-\alpha)(x^{(k)} - x^{(k-1)})\big)

    The checkpoints :math:`w_j` are those of the AutoAttack reference (windows of
    :math:`\max(\lfloor 0.22N \rfloor, 1)` steps, shrinking by :math:`\max(\lfloor 0.03N \rfloor, 1)` down to
    :math:`\max(\lfloor 0.06N \rfloor, 1)`; 22, 41, 57, 70, 80, 87, 93, 99 for :math:`N = 100`). At each
    checkpoint the step is halved and the iterate reset to the highest-loss point so far where
    (1) the loss increased in at most :math:`\rho\,(w_j - w_{j-1})` of the steps since the last
    checkpoint (:math:`\rho = 0.75`), or (2) the step was not halved at the last checkpoint and the
    best loss has not improved since.

    Every iterate is judged on the logits its gradient step computed: per sample the attack keeps
    the iterate that the fewest draws of the model classify correctly (on a random model attacked
    through :class:`~neurorobust.attacks.wrappers.EOTModel`, the fraction over its draws; on a
    deterministic model, the first iterate that fools it), ties broken by the higher loss.

    Parameters
    ----------
    norm : {'linf', 'l2'}, default='linf'
    steps : int, default=100
    restarts : int, default=1
        Random restarts. The first attacks every sample, later ones only the samples some draw
        still classifies correctly; per sample the restart with the lowest fraction of correct
        draws is kept, ties broken by the higher loss.
    loss : {'ce', 'dlr'}, default='ce'
        ``'dlr'`` needs a model with at least 3 classes.
    rho : float, default=0.75
    model_mode : {'eval', 'train'}, default='eval'

    References
    ----------
    Croce, F., Hein, M. (2020). Reliable evaluation of adversarial robustness with an ensemble
    of diverse parameter-free attacks. ICML. :arxiv:`2003.01690`
    """

    key = "apgd-ce"
    paper = _PAPER
    tags = ("gradient", "linf", "l2")
    constraints: ClassVar[dict[str, Any]] = {
        "norm": Options(("linf", "l2")),
        "steps": Interval(int, 1, None),
        "restarts": Interval(int, 1, None),
        "loss": Options(("ce", "dlr")),
        "rho": Interval(float, 0, 1),
    }

    def __init__(
        self,
        *,
        norm: str = "linf",
        steps: int = 100,
        restarts: int = 1,
        loss: str = "ce",
        rho: float = 0.75,
        model_mode: str = "eval",
    ) -> None:
        super().__init__(norm=norm, steps=steps, restarts=restarts, loss=loss, rho=rho, model_mode=model_mode)

    def _run(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        eps: float | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        eps = self._required_eps(eps)
        if self.loss == "dlr":
            require_classes(self, model, x, 3, "loss='dlr'")
        best = x.clone()
        # above any fraction: the first restart's point is always taken (never the clean input)
        best_frac = torch.full((x.shape[0],), 2.0, device=x.device, dtype=x.dtype)
        best_loss = torch.full_like(best_frac, -float("inf"))
        for r in range(self.restarts):
            # later restarts attack only the samples that some draw still classifies correctly
            todo = None if r == 0 else torch.nonzero(best_frac > 0).squeeze(1)
            if todo is not None and todo.numel() == 0:
                break
            self._improve(model, x, y, eps, generator, todo, self.loss, best, best_frac, best_loss)
        return best

    def _improve(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        eps: float,
        generator: torch.Generator,
        todo: torch.Tensor | None,
        loss: _Loss,
        best: torch.Tensor,
        best_frac: torch.Tensor,
        best_loss: torch.Tensor,
    ) -> None:
        """One run on the samples ``todo`` (``None``: all); update ``best*`` in place where it did better."""
        xs, ys = (x, y) if todo is None else (x[todo], y[todo])
        x_r, frac, val = self._once(model, xs, ys, eps, generator, todo, loss)
        rows = torch.arange(x.shape[0], device=x.device) if todo is None else todo
        win = _better(frac, val, best_frac[rows], best_loss[rows], hasattr(model, "last_draws"))
        rows = rows[win]
        best[rows], best_frac[rows], best_loss[rows] = x_r[win], frac[win], val[win]

    def _once(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        eps: float,
        generator: torch.Generator,
        rows: torch.Tensor | None,
        loss: _Loss,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One APGD run from a random start; per sample the iterate kept, its draw-correct fraction and loss.

        ``rows`` are the samples' indices in the attacked batch (for query counting); ``None`` means all.
        """
        norm = self.norm or "linf"

        def forward(z: torch.Tensor) -> torch.Tensor:
            return self._logits(model, z, rows)

        def grad_at(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            g, logits, values = input_gradient(forward, z, y, loss)
            if not bool(torch.isfinite(values).all()):
                # a NaN loss compares False with everything and would silently keep an older point
                bad = int((~torch.isfinite(values)).sum())
                raise ModelOutputError(
                    unwrapped(model), f"gave a NaN or infinite attack loss for {bad} of {values.shape[0]} inputs"
                )
            return g, draw_correct(model, logits, y), values

        x_adv = project(uniform_in_ball(x, eps, norm, generator), x, eps, norm)
        grad, frac, val = grad_at(x_adv)
        eta = torch.full_like(val, 2.0 * eps)
        x_best, loss_best, grad_best = x_adv.clone(), val.clone(), grad.clone()
        kept, kept_frac, kept_loss = x_adv.clone(), frac.clone(), val.clone()
        x_prev = x_adv
        checkpoints = set(_checkpoints(self.steps))
        last_check = 0
        increases = torch.zeros_like(val)
        loss_best_last = loss_best.clone()
        reduced_last = torch.ones_like(val, dtype=torch.bool)
        loss_prev = val
        for k in range(self.steps):
            alpha = 0.75 if k > 0 else 1.0
            z = project(x_adv + _expand(eta, x) * ascent_direction(grad, norm), x, eps, norm)
            x_new = project(x_adv + alpha * (z - x_adv) + (1 - alpha) * (x_adv - x_prev), x, eps, norm)
            x_prev, x_adv = x_adv, x_new
            grad, frac, val = grad_at(x_adv)
            win = _better(frac, val, kept_frac, kept_loss, hasattr(model, "last_draws"))
            kept = torch.where(_expand(win, x), x_adv, kept)
            kept_frac = torch.where(win, frac, kept_frac)
            kept_loss = torch.where(win, val, kept_loss)
            increases += (val > loss_prev).to(val.dtype)
            loss_prev = val
            improved = val > loss_best
            x_best = torch.where(_expand(improved, x), x_adv, x_best)
            grad_best = torch.where(_expand(improved, x), grad, grad_best)
            loss_best = torch.where(improved, val, loss_best)
            if k + 1 in checkpoints:
                window = k + 1 - last_check
                osc = increases <= self.rho * window  # the reference's test: at most rho of the steps
                no_gain = ~reduced_last & (loss_best_last >= loss_best)
                cut = osc | no_gain
                reduced_last = cut
                loss_best_last = loss_best.clone()
                increases.zero_()
                last_check = k + 1
                if bool(cut.any()):
                    eta = torch.where(cut, eta / 2.0, eta)
                    x_adv = torch.where(_expand(cut, x), x_best, x_adv)
                    grad = torch.where(_expand(cut, x), grad_best, grad)
        return kept, kept_frac, kept_loss


class APGDDLR(APGD):
    r"""APGD with the difference-of-logits-ratio loss (``loss='dlr'``); see :class:`APGD`.

    .. math::

        \mathrm{DLR}(z, y) = -\frac{z_y - \max_{j\ne y} z_j}{z_{\pi_1} - z_{\pi_3} + 10^{-12}}

    with :math:`\pi` the classes sorted by decreasing logit; it is invariant to shifts and
    rescalings of the logits and needs at least 3 classes (a clear error otherwise).

    References
    ----------
    Croce, F., Hein, M. (2020). Reliable evaluation of adversarial robustness with an ensemble
    of diverse parameter-free attacks. ICML. :arxiv:`2003.01690`
    """

    key = "apgd-dlr"

    def __init__(
        self,
        *,
        norm: str = "linf",
        steps: int = 100,
        restarts: int = 1,
        loss: str = "dlr",
        rho: float = 0.75,
        model_mode: str = "eval",
    ) -> None:
        super().__init__(norm=norm, steps=steps, restarts=restarts, loss=loss, rho=rho, model_mode=model_mode)


class APGDT(APGD):
    r"""Targeted APGD on the targeted DLR loss (``apgd-t``), as in AutoAttack; see :class:`APGD`.

    For each target class :math:`t` in turn, the classes other than the label ranked 2, 3, ...,
    ``n_target_classes`` + 1 by the clean logits, APGD maximises

    .. math::

        \mathrm{DLR}_t(z, y) = -\frac{z_y - z_t}{z_{\pi_1} - \tfrac{1}{2}(z_{\pi_3} + z_{\pi_4}) + 10^{-12}}

    with :math:`\pi` the classes sorted by decreasing logit (shift- and scale-invariant; needs at
    least 4 classes, a clear error otherwise). Each target runs ``restarts`` times and attacks only
    the samples that no earlier run fooled (on a random model: that some draw still classifies
    correctly); samples misclassified before the attack are not attacked. Per sample the run with
    the lowest fraction of correct draws is kept, ties broken by the higher loss.

    Parameters
    ----------
    norm : {'linf', 'l2'}, default='linf'
    steps : int, default=100
    restarts : int, default=1
        Runs per target class.
    n_target_classes : int, default=9
        Clipped to the number of classes minus one.
    rho : float, default=0.75
    model_mode : {'eval', 'train'}, default='eval'

    References
    ----------
    Croce, F., Hein, M. (2020). Reliable evaluation of adversarial robustness with an ensemble
    of diverse parameter-free attacks. ICML. :arxiv:`2003.01690`
    """

    key = "apgd-t"
    constraints: ClassVar[dict[str, Any]] = {
        "norm": Options(("linf", "l2")),
        "steps": Interval(int, 1, None),
        "restarts": Interval(int, 1, None),
        "n_target_classes": Interval(int, 1, None),
        "rho": Interval(float, 0, 1),
    }

    def __init__(
        self,
        *,
        norm: str = "linf",
        steps: int = 100,
        restarts: int = 1,
        n_target_classes: int = 9,
        rho: float = 0.75,
        model_mode: str = "eval",
    ) -> None:
        Attack.__init__(
            self,
            norm=norm,
            steps=steps,
            restarts=restarts,
            n_target_classes=n_target_classes,
            rho=rho,
            model_mode=model_mode,
        )

    def _run(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        eps: float | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        eps = self._required_eps(eps)
        n_classes = require_classes(self, model, x, 4, "the targeted DLR loss of apgd-t")
        n_targets = min(self.n_target_classes, n_classes - 1)
        with torch.no_grad():
            clean = self._logits(model, x)
        best = x.clone()
        best_frac = draw_correct(model, clean, y).clone()
        best_loss = torch.full_like(best_frac, -float("inf"))
        ranked = target_classes(clean, y, n_targets)
        for t in range(n_targets):
            for _ in range(self.restarts):
                todo = torch.nonzero(best_frac > 0).squeeze(1)
                if todo.numel() == 0:
                    return best
                target = ranked[todo, t]

                def loss(logits: torch.Tensor, ys: torch.Tensor, target: torch.Tensor = target) -> torch.Tensor:
                    return _targeted_dlr(logits, ys, target)

                self._improve(model, x, y, eps, generator, todo, loss, best, best_frac, best_loss)
        return best
