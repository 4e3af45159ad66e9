"""The targeted Fast Adaptive Boundary attack (``fab-t``) and its hyperplane-box projection."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn

from ..modes import eval_mode
from ..validation import Interval, Options
from .base import Attack, _expand, _flat, _rand, _randn, draw_correct, input_gradient, lp_norm, target_classes

__all__ = ["FAB", "project_hyperplane_box"]

_PAPER = (
    "Croce, Hein 2020, 'Minimally distorted adversarial examples with a fast adaptive boundary "
    "attack', ICML, arXiv:1907.02044"
)


def project_hyperplane_box(t: torch.Tensor, w: torch.Tensor, b: torch.Tensor, norm: str) -> torch.Tensor:
    r"""Smallest step from ``t`` onto the hyperplane :math:`\langle w, z\rangle + b = 0` inside the box [0, 1].

    Solves, per row, exactly (no iteration)

    .. math::

        \delta^* = \arg\min_{\delta}\ \|\delta\|_p \quad \text{s.t.}\quad
        \langle w, t + \delta\rangle + b = 0,\quad t + \delta \in [0, 1]^d

    for :math:`p \in \{\infty, 2\}`. With the sign chosen so that
    :math:`f = \langle w, t\rangle + b \ge 0`, coordinate :math:`i` moves against :math:`w_i` by at
    most :math:`c_i` (:math:`t_i` when :math:`w_i > 0`, :math:`1 - t_i` when :math:`w_i < 0`), and
    the optimum is

    .. math::

        \delta_i = -\operatorname{sign}(w_i)\min(\lambda, c_i)\ (L_\infty), \qquad
        \delta_i = -\operatorname{sign}(w_i)\min(\mu |w_i|, c_i)\ (L_2)

    with :math:`\lambda` (:math:`\mu`) the root of the increasing, piecewise-linear
    :math:`F(\lambda) = \sum_i |w_i|\min(\lambda, c_i) = f` (:math:`\sum_i |w_i| \min(\mu|w_i|, c_i) = f`;
    the :math:`L_2` form is the KKT solution :math:`\delta = \operatorname{clip}(-\mu w)`). The
    root is found by sorting the breakpoints (:math:`c_i`, resp. :math:`c_i/|w_i|`), evaluating
    :math:`F` at all of them with cumulative sums and solving the one linear piece that crosses
    :math:`f`. When the box does not meet the hyperplane (:math:`F(\infty) < f`) the result is the
    box corner nearest to it, :math:`\delta_i = -\operatorname{sign}(w_i) c_i`.

    Parameters
    ----------
    t : torch.Tensor of shape (N, D)
        Points in [0, 1].
    w : torch.Tensor of shape (N, D)
        Normals of the hyperplanes (one per row; zero rows give a zero step).
    b : torch.Tensor of shape (N,)
        Offsets.
    norm : {'linf', 'l2'}

    Returns
    -------
    torch.Tensor of shape (N, D)
        The step :math:`\delta^*`; ``t + delta`` lies in the box.
    """
    if norm not in ("linf", "l2"):
        raise ValueError(f"unknown norm {norm!r}")
    f = (w * t).sum(dim=1) + b
    sgn = torch.where(f >= 0, 1.0, -1.0).to(w.dtype)
    w = w * sgn[:, None]  # now <w, t> + b >= 0: step against w
    f = f.abs()
    a = w.abs()
    cap = torch.where(w > 0, t, 1.0 - t).clamp_min(0.0)
    cap = torch.where(a > 0, cap, torch.zeros_like(cap))
    m = a * cap  # what coordinate i contributes once saturated
    if norm == "linf":
        s, r = a, cap  # F(lam) = sum min(lam * s_i, m_i); breakpoints r_i = m_i / s_i
    else:
        s = a * a
        r = torch.where(a > 0, cap / a.clamp_min(torch.finfo(a.dtype).tiny), torch.zeros_like(a))
    rs, order = r.sort(dim=1)
    ms, ss = m.gather(1, order), s.gather(1, order)
    cm, cs = ms.cumsum(dim=1), ss.cumsum(dim=1)
    total_s = cs[:, -1:]
    at_breaks = cm + rs * (total_s - cs)  # F at each sorted breakpoint
    k = (at_breaks < f[:, None]).sum(dim=1)  # the piece (r_{k-1}, r_k] holding the root
    feasible = k < t.shape[1]
    kk = k.clamp(max=t.shape[1] - 1)[:, None]
    m_before = (cm - ms).gather(1, kk).squeeze(1)  # saturated mass before the piece
    s_after = (total_s - cs + ss).gather(1, kk).squeeze(1)  # slope on the piece
    lam = torch.where(s_after > 0, (f - m_before) / s_after.clamp_min(torch.finfo(a.dtype).tiny), 0.0)
    lam = torch.minimum(lam.clamp_min(0.0), rs.gather(1, kk).squeeze(1))
    step = torch.minimum(lam[:, None] * (1.0 if norm == "linf" else a), cap)
    step = torch.where(feasible[:, None], step, cap)
    return -torch.sign(w) * step


class FAB(Attack):
    r"""Targeted Fast Adaptive Boundary attack (FAB-T, as in AutoAttack's standard version).

    For the true class :math:`y` and a target :math:`t`, with :math:`f = z_t - z_y` and
    :math:`C = [0, 1]^d`, each iteration linearises the decision boundary at :math:`x^{(k)}`,

    .. math::

        \pi_k = \{z : f(x^{(k)}) + \langle \nabla f(x^{(k)}), z - x^{(k)}\rangle = 0\},

    projects both the iterate and the original point onto it inside the box
    (:func:`project_hyperplane_box`),

    .. math::

        \delta^{(k)} = \operatorname{proj}_p(x^{(k)}, \pi_k \cap C) - x^{(k)}, \qquad
        \delta^{(k)}_{\mathrm{orig}} = \operatorname{proj}_p(x_{\mathrm{orig}}, \pi_k \cap C) - x_{\mathrm{orig}},

    and takes a step biased towards the original point, with overshoot :math:`\eta`:

    .. math::

        \alpha &= \min\Big(\frac{\|\delta^{(k)}\|_p}{\|\delta^{(k)}\|_p + \|\delta^{(k)}_{\mathrm{orig}}\|_p},
        \ \alpha_{\max}\Big) \\
        x^{(k+1)} &= \operatorname{clip}_{C}\Big((1-\alpha)\big(x^{(k)} + \eta\,\delta^{(k)}\big)
        + \alpha\big(x_{\mathrm{orig}} + \eta\,\delta^{(k)}_{\mathrm{orig}}\big)\Big).

    When :math:`x^{(k+1)}` is adversarial it is recorded if it is the smallest so far and the
    iterate moves back, :math:`x^{(k+1)} \leftarrow (1-\beta)\,x_{\mathrm{orig}} + \beta\, x^{(k+1)}`.
    One gradient (of :math:`z_t - z_y`) and one prediction per iteration.

    The targets are the ``n_target_classes`` highest clean logits other than :math:`y` (classes
    ranked 2 to ``n_target_classes + 1`` of a correctly classified input), attacked in turn, each
    with ``restarts`` runs, on the samples not yet fooled within eps (a cascade, as AutoAttack).
    The first run of each target starts at :math:`x_{\mathrm{orig}}`, later ones on the sphere of
    radius :math:`\epsilon/2`. ``eps`` sets only that radius and the cascade: the attack returns,
    per sample, its smallest adversarial (the base projects it onto the eps-ball) or the clean
    input when none was found. On a random model (:class:`~neurorobust.attacks.wrappers.EOTModel`)
    a point counts as adversarial only when every draw is fooled
    (:func:`~neurorobust.attacks.base.draw_correct`).

    Parameters
    ----------
    norm : {'linf', 'l2'}, default='linf'
    steps : int, default=100
        Iterations per run.
    restarts : int, default=1
        Runs per target class.
    n_target_classes : int, default=9
        Clipped to the number of classes minus one.
    alpha_max : float, default=0.1
        Largest weight :math:`\alpha_{\max}` of the step from the original point.
    eta : float, default=1.05
        Overshoot :math:`\eta` of the projection steps.
    beta : float, default=0.9
        Backward step :math:`\beta` after an adversarial iterate.
    model_mode : {'eval', 'train'}, default='eval'
        Mode of the model while gradients are taken (predictions are always in eval mode).

    References
    ----------
    Croce, F., Hein, M. (2020). Minimally distorted adversarial examples with a fast adaptive
    boundary attack. ICML. :arxiv:`1907.02044`
    """

    key = "fab-t"
    paper = _PAPER
    tags = ("gradient", "targeted", "linf", "l2")
    constraints: ClassVar[dict[str, Any]] = {
        "norm": Options(("linf", "l2")),
        "steps": Interval(int, 1, None),
        "restarts": Interval(int, 1, None),
        "n_target_classes": Interval(int, 1, None),
        "alpha_max": Interval(float, 0, 1),
        "eta": Interval(float, 1, None),
        "beta": Interval(float, 0, 1, closed="right"),
    }

    def __init__(
        self,
        *,
        norm: str = "linf",
        steps: int = 100,
        restarts: int = 1,
        n_target_classes: int = 9,
        alpha_max: float = 0.1,
        eta: float = 1.05,
        beta: float = 0.9,
        model_mode: str = "eval",
    ) -> None:
        super().__init__(
            norm=norm,
            steps=steps,
            restarts=restarts,
            n_target_classes=n_target_classes,
            alpha_max=alpha_max,
            eta=eta,
            beta=beta,
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
        norm = self.norm or "linf"
        with eval_mode(model), torch.no_grad():
            logits = self._logits(model, x)
            todo = draw_correct(model, logits, y) > 0
        n_targets = min(self.n_target_classes, logits.shape[1] - 1)
        best = x.clone()
        best_norm = torch.full((x.shape[0],), math.inf, dtype=x.dtype, device=x.device)
        if n_targets < 1:
            return best
        targets = target_classes(logits, y, n_targets)
        for j in range(n_targets):
            for r in range(self.restarts):
                active = torch.nonzero(todo & ~(best_norm <= eps)).squeeze(1)
                if active.numel() == 0:
                    return best
                x0 = x[active]
                start = x0 if r == 0 else self._random_start(x0, eps / 2.0, norm, generator)
                adv, dist = self._single(model, x0, y[active], targets[active, j], start, active, norm)
                better = dist < best_norm[active]
                best[active[better]] = adv[better]
                best_norm[active[better]] = dist[better]
        return best

    @staticmethod
    def _random_start(x0: torch.Tensor, radius: float, norm: str, generator: torch.Generator) -> torch.Tensor:
        """A point on the ``norm`` sphere of ``radius`` around ``x0``, clipped to the box."""
        if norm == "linf":
            u = 2.0 * _rand(x0.shape, generator, x0) - 1.0
            u = u / _expand(lp_norm(u, "linf").clamp_min(1e-12), u)
        else:
            u = _randn(x0.shape, generator, x0)
            u = u / _expand(lp_norm(u, "l2").clamp_min(1e-12), u)
        return (x0 + radius * u).clamp(0.0, 1.0)

    def _single(
        self,
        model: nn.Module,
        x0: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor,
        x1: torch.Tensor,
        idx: torch.Tensor,
        norm: str,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One FAB run towards ``target``: the smallest adversarial found and its norm (inf if none)."""
        m = x0.shape[0]
        pair = torch.stack([y, target], dim=1)

        def forward(z: torch.Tensor) -> torch.Tensor:
            return self._logits(model, z, idx)

        def margin(out: torch.Tensor, pair: torch.Tensor) -> torch.Tensor:
            return out.gather(1, pair[:, 1:]).squeeze(1) - out.gather(1, pair[:, :1]).squeeze(1)

        adv = x0.clone()
        adv_norm = torch.full((m,), math.inf, dtype=x0.dtype, device=x0.device)
        x0f = _flat(x0)
        for _ in range(self.steps):
            grad, _, f = input_gradient(forward, x1, pair, margin)
            w = _flat(grad)
            b = f - (w * _flat(x1)).sum(dim=1)  # the hyperplane <w, z> + b = 0
            d = project_hyperplane_box(torch.cat([_flat(x1), x0f]), torch.cat([w, w]), torch.cat([b, b]), norm)
            d = d.reshape((2 * m, *x0.shape[1:]))
            d1, d2 = d[:m], d[m:]
            a1 = lp_norm(d1, norm).clamp_min(1e-8)
            a2 = lp_norm(d2, norm).clamp_min(1e-8)
            alpha = _expand((a1 / (a1 + a2)).clamp(0.0, self.alpha_max), x0)
            x1 = ((1.0 - alpha) * (x1 + self.eta * d1) + alpha * (x0 + self.eta * d2)).clamp(0.0, 1.0)
            with eval_mode(model), torch.no_grad():
                fooled = draw_correct(model, self._logits(model, x1, idx), y) == 0
            if bool(fooled.any()):
                dist = lp_norm(x1 - x0, norm)
                better = fooled & (dist < adv_norm)
                adv = torch.where(_expand(better, x0), x1, adv)
                adv_norm = torch.where(better, dist, adv_norm)
                x1 = torch.where(_expand(fooled, x0), x0 + self.beta * (x1 - x0), x1)
        return adv, adv_norm
