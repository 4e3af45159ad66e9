"""Norm-bounded gradient attacks: FGSM, BIM, ILL and PGD, all one engine (:class:`IterativeGradient`).

FGSM is PGD with one step of size eps and no random start; BIM is PGD without random start and
step eps/T; ILL is BIM descending the loss of the least-likely class. ``norm`` is a parameter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import InvalidParameterError
from ..validation import AnyOf, Interval, Options, Type
from .base import (
    LOSSES,
    Attack,
    ascent_direction,
    attack_loss,
    input_gradient,
    project,
    require_classes,
    uniform_in_ball,
)

__all__ = ["BIM", "FGSM", "ILL", "PGD", "IterativeGradient"]

_GRAD_NORMS = ("linf", "l2")

_FGSM_PAPER = (
    "Goodfellow, Shlens, Szegedy 2015, 'Explaining and Harnessing Adversarial Examples', ICLR, arXiv:1412.6572"
)
_KURAKIN_PAPER = (
    "Kurakin, Goodfellow, Bengio 2017, 'Adversarial Examples in the Physical World', ICLR workshop, arXiv:1607.02533"
)
_PGD_PAPER = (
    "Madry, Makelov, Schmidt, Tsipras, Vladu 2018, 'Towards Deep Learning Models Resistant to "
    "Adversarial Attacks', ICLR, arXiv:1706.06083"
)


@dataclass(frozen=True)
class _Config:
    steps: int
    step_size: float | None
    rel_step_size: float
    random_start: bool
    restarts: int
    loss: str
    least_likely: bool
    early_stop: bool


class IterativeGradient(Attack):
    r"""Shared engine of the projected sign/normalised gradient attacks.

    One step, for the loss :math:`L` and the projection :math:`\Pi` onto the eps-ball and
    [0, 1] (:func:`~neurorobust.attacks.base.project`):

    .. math::

        x^{t+1} = \Pi\big(x^t + s\,\alpha\, d(\nabla_x L(x^t, y))\big), \qquad
        d(g) = \operatorname{sign}(g)\ (L_\infty), \quad d(g) = g/\|g\|_2\ (L_2)

    with :math:`s = +1` (untargeted, ascend the loss of the true label) or :math:`s = -1`
    (ILL, descend the loss of the least-likely class) and :math:`\alpha` the step size.
    Restarts keep, per sample, the best end point: a misclassified one if any, else the one
    with the highest loss.
    """

    def _config(self) -> _Config:  # pragma: no cover - overridden
        raise NotImplementedError

    def _run(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        eps: float | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        assert eps is not None  # bounded: the base guarantees an eps
        cfg = self._config()
        if cfg.loss == "dlr":
            require_classes(self, model, x, 3, "loss='dlr'")
        step = cfg.step_size if cfg.step_size is not None else cfg.rel_step_size * eps
        if cfg.least_likely:
            with torch.no_grad():
                target = self._logits(model, x).argmin(dim=1)
        else:
            target = y
        best: torch.Tensor | None = None
        best_key: torch.Tensor | None = None
        for _ in range(cfg.restarts):
            x_adv = self._descend(model, x, y, target, eps, step, cfg, generator)
            if cfg.restarts == 1:
                return x_adv
            with torch.no_grad():
                logits = self._logits(model, x_adv)
            # key: fooled first, then higher loss (sign-adjusted for ILL)
            loss = attack_loss(cfg.loss, logits, target) * (-1.0 if cfg.least_likely else 1.0)
            key = torch.where(logits.argmax(dim=1) != y, torch.full_like(loss, float("inf")), loss)
            if best is None or best_key is None:
                best, best_key = x_adv, key
            else:
                better = key > best_key
                best = torch.where(better[:, None, None, None], x_adv, best)
                best_key = torch.maximum(key, best_key)
        assert best is not None
        return best

    def _descend(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor,
        eps: float,
        step: float,
        cfg: _Config,
        generator: torch.Generator,
    ) -> torch.Tensor:
        norm = self.norm or "linf"
        x_adv = project(uniform_in_ball(x, eps, norm, generator), x, eps, norm) if cfg.random_start else x.clone()
        sign = -1.0 if cfg.least_likely else 1.0
        out = x_adv  # finished samples are written here when early stopping
        active: torch.Tensor | None = None  # indices still attacked (None: all)
        xs, ys, ts = x, y, target
        for _ in range(cfg.steps):
            idx = active

            def forward(z: torch.Tensor, idx: torch.Tensor | None = idx) -> torch.Tensor:
                return self._logits(model, z, idx)

            grad, logits, _ = input_gradient(forward, x_adv, ts, cfg.loss)
            if cfg.early_stop:
                # success is judged in eval mode: reuse this step's logits when they were taken in it
                pred = self._predict(model, x_adv, idx) if model.training else logits.argmax(dim=1)
                done = pred != ys
                if bool(done.any()):
                    rows = torch.arange(x.shape[0], device=x.device) if active is None else active
                    out = out.clone() if out is x_adv else out
                    out[rows[done]] = x_adv[done]
                    keep = ~done
                    active = rows[keep]
                    x_adv, grad = x_adv[keep], grad[keep]
                    xs, ys, ts = x[active], y[active], target[active]
                    if active.numel() == 0:
                        return out
            x_adv = project(x_adv + (sign * step) * ascent_direction(grad, norm), xs, eps, norm)
        if active is None:
            return x_adv
        out = out.clone() if out is x_adv else out
        out[active] = x_adv
        return out


_LOSS = Options(LOSSES)
_NORM = Options(_GRAD_NORMS)
_BOOL = Type(bool)
_OPT_STEP = AnyOf(Interval(float, 0, None, closed="neither"), Options((None,)))


class FGSM(IterativeGradient):
    r"""Fast gradient sign method: one step of size eps.

    .. math::

        x' = \operatorname{clip}_{[0,1]}\big(x + \epsilon\, \operatorname{sign}(\nabla_x L(x, y))\big)

    (for ``norm="l2"``, the fast gradient method :math:`x + \epsilon\, g/\|g\|_2`).

    Parameters
    ----------
    norm : {'linf', 'l2'}, default='linf'
    loss : {'ce', 'mse', 'margin', 'dlr'}, default='ce'
        ``'mse'`` is MSE on the one-hot label, as the sleep code's FGSM.
    model_mode : {'eval', 'train'}, default='eval'
        Mode of the model while the gradient is taken ('train' keeps dropout active).

    References
    ----------
    Goodfellow, I. J., Shlens, J., Szegedy, C. (2015). Explaining and harnessing adversarial
    examples. ICLR. :arxiv:`1412.6572`
    """

    key = "fgsm"
    paper = _FGSM_PAPER
    tags = ("gradient", "linf", "l2")
    constraints: ClassVar[dict[str, Any]] = {"norm": _NORM, "loss": _LOSS}

    def __init__(self, *, norm: str = "linf", loss: str = "ce", model_mode: str = "eval") -> None:
        super().__init__(norm=norm, loss=loss, model_mode=model_mode)

    def _config(self) -> _Config:
        return _Config(1, None, 1.0, False, 1, self.loss, False, False)


class BIM(IterativeGradient):
    r"""Basic iterative method (I-FGSM): T steps of size eps/T, projected each step.

    .. math::

        x^{0} = x, \qquad
        x^{t+1} = \Pi_{\epsilon}\big(x^t + \alpha\,\operatorname{sign}(\nabla_x L(x^t, y))\big),
        \quad \alpha = \epsilon / T

    Parameters
    ----------
    steps : int, default=10
        T.
    step_size : float or None, default=None
        Absolute step size :math:`\alpha`; ``None`` means eps / steps.
    norm : {'linf', 'l2'}, default='linf'
    loss : {'ce', 'mse', 'margin', 'dlr'}, default='ce'
    early_stop : bool, default=False
        Stop attacking a sample once it is misclassified (its current iterate is kept).
    model_mode : {'eval', 'train'}, default='eval'

    References
    ----------
    Kurakin, A., Goodfellow, I., Bengio, S. (2017). Adversarial examples in the physical world.
    ICLR workshop. :arxiv:`1607.02533`
    """

    key = "bim"
    paper = _KURAKIN_PAPER
    tags = ("gradient", "linf", "l2")
    constraints: ClassVar[dict[str, Any]] = {
        "steps": Interval(int, 1, None),
        "step_size": _OPT_STEP,
        "norm": _NORM,
        "loss": _LOSS,
        "early_stop": _BOOL,
    }
    _least_likely = False

    def __init__(
        self,
        *,
        steps: int = 10,
        step_size: float | None = None,
        norm: str = "linf",
        loss: str = "ce",
        early_stop: bool = False,
        model_mode: str = "eval",
    ) -> None:
        super().__init__(
            steps=steps,
            step_size=step_size,
            norm=norm,
            loss=loss,
            early_stop=early_stop,
            model_mode=model_mode,
        )

    def _config(self) -> _Config:
        return _Config(
            self.steps,
            self.step_size,
            1.0 / self.steps,
            False,
            1,
            self.loss,
            self._least_likely,
            self.early_stop,
        )


class ILL(BIM):
    r"""Iterative least-likely class method: BIM descending the loss of the least-likely class.

    .. math::

        y_{LL} = \arg\min_k p(k \mid x), \qquad
        x^{t+1} = \Pi_{\epsilon}\big(x^t - \alpha\,\operatorname{sign}(\nabla_x L(x^t, y_{LL}))\big)

    Success is still untargeted (the prediction differs from the true label). Parameters as
    :class:`BIM`.

    References
    ----------
    Kurakin, A., Goodfellow, I., Bengio, S. (2017). Adversarial examples in the physical world.
    ICLR workshop. :arxiv:`1607.02533`
    """

    key = "ill"
    _least_likely = True


class PGD(IterativeGradient):
    r"""Projected gradient descent with random start and restarts (L∞ or L2).

    .. math::

        x^{0} = \Pi(x + u),\ u \sim \mathcal{U}(B_\epsilon), \qquad
        x^{t+1} = \Pi\big(x^t + \alpha\, d(\nabla_x L(x^t, y))\big)

    Parameters
    ----------
    norm : {'linf', 'l2'}, default='linf'
    steps : int, default=40
    step_size : float or None, default=None
        Absolute step :math:`\alpha`. Mutually exclusive with ``rel_step_size``.
    rel_step_size : float or None, default=None
        Step as a fraction of eps; when both are ``None``, :math:`\alpha = 2.5\,\epsilon/T`
        (Madry et al.).
    random_start : bool, default=True
    restarts : int, default=1
        Independent runs; per sample the best (misclassified, else highest loss) is kept.
    loss : {'ce', 'mse', 'margin', 'dlr'}, default='ce'
    early_stop : bool, default=False
        Stop attacking a sample once it is misclassified (its current iterate is kept). Saves
        time; never lowers success.
    model_mode : {'eval', 'train'}, default='eval'

    References
    ----------
    Madry, A., Makelov, A., Schmidt, L., Tsipras, D., Vladu, A. (2018). Towards deep learning
    models resistant to adversarial attacks. ICLR. :arxiv:`1706.06083`
    """

    key = "pgd"
    paper = _PGD_PAPER
    tags = ("gradient", "linf", "l2")
    constraints: ClassVar[dict[str, Any]] = {
        "norm": _NORM,
        "steps": Interval(int, 1, None),
        "step_size": _OPT_STEP,
        "rel_step_size": _OPT_STEP,
        "random_start": _BOOL,
        "restarts": Interval(int, 1, None),
        "loss": _LOSS,
        "early_stop": _BOOL,
    }

    def __init__(
        self,
        *,
        norm: str = "linf",
        steps: int = 40,
        step_size: float | None = None,
        rel_step_size: float | None = None,
        random_start: bool = True,
        restarts: int = 1,
        loss: str = "ce",
        early_stop: bool = False,
        model_mode: str = "eval",
    ) -> None:
        super().__init__(
            norm=norm,
            steps=steps,
            step_size=step_size,
            rel_step_size=rel_step_size,
            random_start=random_start,
            restarts=restarts,
            loss=loss,
            early_stop=early_stop,
            model_mode=model_mode,
        )

    def _check_params(self) -> None:
        if self.step_size is not None and self.rel_step_size is not None:
            raise InvalidParameterError("rel_step_size", "PGD", "None when step_size is given", self.rel_step_size)

    def _config(self) -> _Config:
        rel = self.rel_step_size if self.rel_step_size is not None else 2.5 / self.steps
        return _Config(
            self.steps,
            self.step_size,
            rel,
            self.random_start,
            self.restarts,
            self.loss,
            False,
            self.early_stop,
        )
