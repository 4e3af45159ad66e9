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
    single_draw_random,
    uniform_in_ball,
)

__all__ = ["BIM", "FGSM", "ILL", "PGD", "IterativeGradient", "KuboBIM", "KuboILL"]

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
    Every iterate is judged: per sample the attack returns the first iterate that fools the model
    (on a random model, attacked through :class:`~neurorobust.attacks.wrappers.EOTModel`, the
    iterate that the fewest draws classify correctly), else the last iterate. Restarts attack only
    the samples some draw still classifies correctly and keep, per sample, the restart with the
    lowest fraction of correct draws, ties broken by the higher loss.
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
        eps = self._required_eps(eps)
        cfg = self._config()
        if cfg.loss == "dlr":
            require_classes(self, model, x, 3, "loss='dlr'")
        step = cfg.step_size if cfg.step_size is not None else cfg.rel_step_size * eps
        if cfg.least_likely:
            with torch.no_grad():
                target = self._logits(model, x).argmin(dim=1)
        else:
            target = y
        best, best_frac, best_loss = self._descend(model, x, y, target, eps, step, cfg, generator, None)
        for _ in range(cfg.restarts - 1):
            # later restarts attack only the points that some draw still classifies correctly
            todo = torch.nonzero(best_frac > 0).squeeze(1)
            if todo.numel() == 0:
                break
            x_r, frac, loss = self._descend(model, x[todo], y[todo], target[todo], eps, step, cfg, generator, todo)
            better = (frac < best_frac[todo]) | ((frac == best_frac[todo]) & (loss > best_loss[todo]))
            rows = todo[better]
            best[rows], best_frac[rows], best_loss[rows] = x_r[better], frac[better], loss[better]
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
        rows: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One run from a (random) start; returns per sample the point kept, its draw-correct fraction and loss.

        The point kept is the first iterate with the lowest fraction of draws classifying it correctly
        (:func:`~neurorobust.attacks.base.draw_correct`; for a deterministic model: the first iterate that
        fools it), else the last iterate. ``rows`` are the samples' indices in the attacked batch (for
        query counting); ``None`` means all of it.
        """
        norm = self.norm or "linf"
        sign = -1.0 if cfg.least_likely else 1.0
        n = x.shape[0]
        x_adv = project(uniform_in_ball(x, eps, norm, generator), x, eps, norm) if cfg.random_start else x.clone()
        kept = x_adv.clone()
        kept_frac = torch.full((n,), float("inf"), device=x.device, dtype=x.dtype)
        kept_loss = torch.full((n,), -float("inf"), device=x.device, dtype=x.dtype)
        active = torch.arange(n, device=x.device)  # samples still attacked
        xs, ys, ts = x, y, target

        random = hasattr(model, "last_draws")  # an EOT model: "fooled" is judged on the attack's own draws

        def judge(z: torch.Tensor, logits: torch.Tensor | None, last: bool) -> torch.Tensor:
            """Record ``z`` where it beats the kept point (the last iterate also wins ties); return fractions."""
            qidx = active if rows is None else rows[active]
            if logits is None:
                with torch.no_grad():
                    logits = self._logits(model, z, qidx)
            frac = self._correct(model, z, ys, qidx, logits)
            loss = attack_loss(cfg.loss, logits, ts) * sign
            old = kept_frac[active]
            win = frac < old
            if random:  # fresh draws may disagree with the attack's: among equals keep the higher loss
                win |= (frac == old) & (loss > kept_loss[active])
            elif last:  # the last iterate wins ties (higher loss), except against an earlier fooling one
                win |= (frac == old) & (frac > 0)
            rows_w = active[win]
            kept[rows_w], kept_frac[rows_w], kept_loss[rows_w] = z[win], frac[win], loss[win]
            return frac

        for _ in range(cfg.steps):
            qidx = active if rows is None else rows[active]

            def forward(z: torch.Tensor, qidx: torch.Tensor = qidx) -> torch.Tensor:
                return self._logits(model, z, qidx)

            grad, logits, _ = input_gradient(forward, x_adv, ts, cfg.loss)
            frac = judge(x_adv, logits, last=False)
            if cfg.early_stop:
                keep = frac > 0  # a random model's point is done when every draw is fooled
                if not bool(keep.all()):
                    active, x_adv, grad = active[keep], x_adv[keep], grad[keep]
                    xs, ys, ts = x[active], y[active], target[active]
                    if active.numel() == 0:
                        return kept, kept_frac, kept_loss
            x_adv = project(x_adv + (sign * step) * ascent_direction(grad, norm), xs, eps, norm)
        if single_draw_random(model):
            # one draw of a random model says little: keep the last iterate (the loss-ascent end point); judge it
            # only where restarts must be compared
            kept[active] = x_adv
            kept_frac[active] = float("inf")
            if cfg.restarts > 1:
                judge(x_adv, None, last=True)
        elif cfg.restarts > 1 or hasattr(model, "last_draws"):
            judge(x_adv, None, last=True)  # restarts compare runs, and a random model's draws may still improve
        else:
            # one deterministic run needs no extra forward pass: the last iterate replaces the kept one unless
            # an earlier iterate already fooled the model (ties between fooling iterates keep the first)
            last = active[kept_frac[active] > 0]
            kept[last] = x_adv[kept_frac[active] > 0]
        return kept, kept_frac, kept_loss


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
        Stop attacking a sample once it is misclassified (on a random model: by every draw); the
        fooling iterate is kept.
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
        Stop attacking a sample once it is misclassified (on a random model: by every draw). Saves
        time; never lowers success (the first fooling iterate is kept either way).
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


_KUBO_THESIS = "Kubo 2019, Learning stochastic weight masking to resist adversarial attacks (PhD thesis), eq. 2.27"


class KuboBIM(Attack):
    r"""The thesis' BIM as Kubo wrote it (eq. 2.27): ``steps`` steps of size eps, clipped only at the end.

    .. math::

        x^{0} = x, \qquad x^{t} = x^{t-1} + \epsilon\,\operatorname{sign}(\nabla_x L(x^{t-1}, y)),
        \qquad x_{adv} = \operatorname{clip}_{[0,1]}(x^{T})

    Here eps is the per-step size (the thesis' x-axis), not a budget: the perturbation can reach
    ``steps`` × eps in L∞, so this attack's rows are the thesis' protocol, labelled as such, and never
    enter a worst case at eps, a cascade or a gradient-masking check (:attr:`within_eps` is ``False``).
    Our :class:`BIM` takes eps/T steps inside the eps ball. The thesis keeps the last iterate; so does this.

    Parameters
    ----------
    steps : int, default=10
        T (the thesis: 10).
    loss : {'ce', 'mse', 'margin', 'dlr'}, default='ce'
    model_mode : {'eval', 'train'}, default='eval'
    """

    key = "bim-kubo"
    paper = _KUBO_THESIS + " (BIM, eps = step size, clipped at the end)"
    tags = ("gradient", "linf", "paper-protocol")
    norm = "linf"
    within_eps = False
    constraints: ClassVar[dict[str, Any]] = {"steps": Interval(int, 1, None), "loss": _LOSS}
    _least_likely = False

    def __init__(self, *, steps: int = 10, loss: str = "ce", model_mode: str = "eval") -> None:
        super().__init__(steps=steps, loss=loss, model_mode=model_mode)

    def budget(self, eps: float | None) -> float | None:
        """``steps`` × eps: the farthest the unprojected steps can go."""
        return None if eps is None else eps * self.steps

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
        if self._least_likely:
            with torch.no_grad():
                target = self._logits(model, x).argmin(dim=1)
        else:
            target = y
        sign = -1.0 if self._least_likely else 1.0
        x_adv = x.clone()
        for _ in range(self.steps):
            grad, _, _ = input_gradient(lambda z: self._logits(model, z), x_adv, target, self.loss)
            x_adv = x_adv + sign * eps * grad.sign()  # no projection and no clipping between steps (eq. 2.27)
        return x_adv.clamp(0.0, 1.0)


class KuboILL(KuboBIM):
    r"""The thesis' ILL (iterative least-likely class) as written: :class:`KuboBIM` descending the loss of
    the class the clean input makes least likely, :math:`x^{t} = x^{t-1} - \epsilon\,\operatorname{sign}
    (\nabla_x L(x^{t-1}, y_{LL}))`. Success is untargeted."""

    key = "ill-kubo"
    paper = _KUBO_THESIS + " (ILL, eps = step size, clipped at the end)"
    _least_likely = True
