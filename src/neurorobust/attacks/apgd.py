"""Auto-PGD with the cross-entropy (``apgd-ce``) or the DLR loss (``apgd-dlr``)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from ..validation import Interval, Options
from .base import Attack, _expand, ascent_direction, input_gradient, project, require_classes, uniform_in_ball

__all__ = ["APGD", "APGDDLR"]

_PAPER = (
    "Croce, Hein 2020, 'Reliable evaluation of adversarial robustness with an ensemble of diverse "
    "parameter-free attacks', ICML, arXiv:2003.01690"
)


def _checkpoints(steps: int) -> list[int]:
    r"""Iterations :math:`w_j = \lceil p_j N \rceil` with :math:`p_0 = 0, p_1 = 0.22`,
    :math:`p_{j+1} = p_j + \max(p_j - p_{j-1} - 0.03, 0.06)`."""
    p = [0.0, 0.22]
    while p[-1] < 1.0:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return sorted({int(-(-q * steps // 1)) for q in p[1:] if q < 1.0 and q * steps >= 1})


class APGD(Attack):
    r"""Auto-PGD: step-size-free PGD with momentum and step halving at checkpoints.

    With :math:`\eta^{(k)}` the per-sample step (initially :math:`2\epsilon`) and
    :math:`\alpha = 0.75` (1 at the first step):

    .. math::

        z^{(k+1)} &= \Pi\big(x^{(k)} + \eta^{(k)} d(\nabla L(x^{(k)}))\big) \\
        x^{(k+1)} &= \Pi\big(x^{(k)} + \alpha (z^{(k+1)} - x^{(k)}) + (1-\alpha)(x^{(k)} - x^{(k-1)})\big)

    At each checkpoint :math:`w_j` the step is halved and the iterate reset to the best point
    so far where (1) the loss increased in fewer than :math:`\rho = 0.75` of the steps since
    the last checkpoint, or (2) the step was not halved at the last checkpoint and the best
    loss has not improved since.

    Parameters
    ----------
    norm : {'linf', 'l2'}, default='linf'
    steps : int, default=100
    restarts : int, default=1
        Random restarts; per sample the best (misclassified, else highest loss) is kept.
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
        assert eps is not None
        if self.loss == "dlr":
            require_classes(self, model, x, 3, "loss='dlr'")
        best = x.clone()
        best_key = torch.full((x.shape[0],), -float("inf"), device=x.device, dtype=x.dtype)
        for _ in range(self.restarts):
            x_adv, key = self._once(model, x, y, eps, generator)
            better = key > best_key
            best = torch.where(_expand(better, x), x_adv, best)
            best_key = torch.maximum(key, best_key)
        return best

    def _once(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        norm = self.norm or "linf"

        def forward(z: torch.Tensor) -> torch.Tensor:
            return self._logits(model, z)

        def grad_at(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            g, logits, loss = input_gradient(forward, z, y, self.loss)
            return g, logits.argmax(dim=1) != y, loss

        x_adv = project(uniform_in_ball(x, eps, norm, generator), x, eps, norm)
        grad, fooled, loss = grad_at(x_adv)
        eta = torch.full_like(loss, 2.0 * eps)
        x_best, loss_best, grad_best = x_adv.clone(), loss.clone(), grad.clone()
        x_best_adv, any_adv = x_adv.clone(), fooled.clone()
        x_prev = x_adv
        checkpoints = set(_checkpoints(self.steps))
        last_check = 0
        increases = torch.zeros_like(loss)
        loss_best_last = loss_best.clone()
        reduced_last = torch.ones_like(fooled)
        loss_prev = loss
        for k in range(self.steps):
            alpha = 0.75 if k > 0 else 1.0
            z = project(x_adv + _expand(eta, x) * ascent_direction(grad, norm), x, eps, norm)
            x_new = project(x_adv + alpha * (z - x_adv) + (1 - alpha) * (x_adv - x_prev), x, eps, norm)
            x_prev, x_adv = x_adv, x_new
            grad, fooled, loss = grad_at(x_adv)
            x_best_adv = torch.where(_expand(fooled, x), x_adv, x_best_adv)
            any_adv |= fooled
            increases += (loss > loss_prev).to(loss.dtype)
            loss_prev = loss
            improved = loss > loss_best
            x_best = torch.where(_expand(improved, x), x_adv, x_best)
            grad_best = torch.where(_expand(improved, x), grad, grad_best)
            loss_best = torch.where(improved, loss, loss_best)
            if k + 1 in checkpoints:
                window = k + 1 - last_check
                osc = increases < self.rho * window
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
        out = torch.where(_expand(any_adv, x), x_best_adv, x_best)
        key = torch.where(any_adv, torch.full_like(loss_best, float("inf")), loss_best)
        return out, key


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
