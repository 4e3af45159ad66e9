"""Gradient-free attacks: Square (score-based, L∞) and Boundary (decision-based, L2)."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn

from ..modes import eval_mode
from ..validation import Interval, Options
from .base import Attack, _expand, _rand, _randint, _randn, attack_loss, draw_correct, draw_predictions, lp_norm

__all__ = ["BoundaryAttack", "SquareAttack"]


def _p_schedule(p_init: float, it: int, n_queries: int) -> float:
    """Fraction of pixels changed at iteration ``it`` (the authors' schedule, rescaled to 10,000)."""
    i = int(it / n_queries * 10000)
    for bound, div in (
        (8000, 512),
        (6000, 256),
        (4000, 128),
        (2000, 64),
        (1000, 32),
        (500, 16),
        (200, 8),
        (50, 4),
        (10, 2),
    ):
        if i > bound:
            return p_init / div
    return p_init


class SquareAttack(Attack):
    r"""Square attack (L∞): random search with square-shaped updates on the margin loss.

    Starting from vertical stripes :math:`x + \epsilon s`, :math:`s \in \{-1, 1\}^{C \times 1 \times W}`,
    each iteration draws a square window of side
    :math:`h = \max(1, \operatorname{round}(\sqrt{p_i H W}))` at a random position and sets the
    perturbation inside it to :math:`\pm\epsilon` per channel; the candidate is kept when it
    lowers the margin

    .. math::

        \ell(x') = Z_y(x') - \max_{j \ne y} Z_j(x')

    (a sample stops once :math:`\ell < 0`; on a random model, attacked through
    :class:`~neurorobust.attacks.wrappers.EOTModel`, the margin is that of the mean logits and a
    sample stops only once every draw is fooled, a candidate fooling more draws being kept first).
    :math:`p_i` starts at ``p_init`` and is halved at the authors' iterations 10, 50, 200, 500,
    1000, 2000, 4000, 6000, 8000 (scaled to ``queries``).

    Parameters
    ----------
    queries : int, default=5000
        Query budget per sample (including the initial one).
    p_init : float, default=0.8
    model_mode : {'eval', 'train'}, default='eval'

    References
    ----------
    Andriushchenko, M., Croce, F., Flammarion, N., Hein, M. (2020). Square Attack: a
    query-efficient black-box adversarial attack via random search. ECCV.
    :doi:`10.1007/978-3-030-58592-1_29`, :arxiv:`1912.00049`
    """

    key = "square"
    paper = (
        "Andriushchenko, Croce, Flammarion, Hein 2020, 'Square Attack: a query-efficient black-box "
        "adversarial attack via random search', ECCV, arXiv:1912.00049"
    )
    norm = "linf"
    tags = ("blackbox", "score", "linf")
    constraints: ClassVar[dict[str, Any]] = {
        "queries": Interval(int, 1, None),
        "p_init": Interval(float, 0, 1, closed="right"),
    }

    def __init__(self, *, queries: int = 5000, p_init: float = 0.8, model_mode: str = "eval") -> None:
        super().__init__(queries=queries, p_init=p_init, model_mode=model_mode)

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
        n, c, h, w = x.shape

        def margin(z: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """The margin of the (draw-averaged) logits and the fraction of draws still correct."""
            with torch.no_grad():
                logits = self._logits(model, z, idx)
                return -attack_loss("margin", logits, y[idx]), draw_correct(model, logits, y[idx])

        signs = torch.where(_rand((n, c, 1, w), generator, x) < 0.5, -1.0, 1.0).to(x.dtype)
        x_adv = (x + eps * signs).clamp(0.0, 1.0)
        everyone = torch.arange(n, device=x.device)
        loss, alive = margin(x_adv, everyone)
        rows_h = torch.arange(h, device=x.device)
        rows_w = torch.arange(w, device=x.device)
        for it in range(1, self.queries):
            # a sample stops once every draw is fooled (one draw for a deterministic model: margin < 0)
            idx = torch.nonzero(alive > 0).squeeze(1)
            if idx.numel() == 0:
                break
            na = idx.numel()
            p = _p_schedule(self.p_init, it, self.queries)
            side = min(max(round(math.sqrt(p * h * w)), 1), h, w)
            top = _randint(h - side + 1, (na,), generator, x.device)
            left = _randint(w - side + 1, (na,), generator, x.device)
            in_h = (rows_h[None, :] >= top[:, None]) & (rows_h[None, :] < top[:, None] + side)
            in_w = (rows_w[None, :] >= left[:, None]) & (rows_w[None, :] < left[:, None] + side)
            window = (in_h[:, :, None] & in_w[:, None, :])[:, None]  # (na, 1, h, w)
            new_sign = torch.where(_rand((na, c, 1, 1), generator, x) < 0.5, -1.0, 1.0).to(x.dtype)
            xa = x[idx]
            delta = torch.where(window, eps * new_sign, x_adv[idx] - xa)
            cand = (xa + delta).clamp(0.0, 1.0)
            new_loss, new_alive = margin(cand, idx)
            better = (new_alive < alive[idx]) | ((new_alive == alive[idx]) & (new_loss < loss[idx]))
            x_adv[idx[better]] = cand[better]
            loss[idx[better]] = new_loss[better]
            alive[idx[better]] = new_alive[better]
        return x_adv


class BoundaryAttack(Attack):
    r"""Boundary attack: a decision-based random walk along the decision boundary (L2).

    From an adversarial start :math:`\tilde x_0` (uniform noise, or the closest-to-``x`` point on
    the line to another image of the batch that the model assigns a different class,
    bisected with ``init_bisection`` steps), each step draws ``candidates`` Gaussian directions
    :math:`\eta` and, with :math:`d = \|\tilde x_k - x\|_2`,

    .. math::

        v &= \tilde x_k - x + \delta d\,\eta / \|\eta\|_2, \qquad
        o = x + d\, v / \|v\|_2
        \quad \text{(orthogonal step, on the sphere of radius } d) \\
        c &= x + (1 - \varepsilon)(o - x) \quad \text{(source step)}

    The closest adversarial candidate :math:`c` replaces :math:`\tilde x_k` when it is closer.
    Step adaptation as the sleep code (``BoundaryAttack.m``): :math:`\delta \times 0.9` when fewer
    than 30% of the orthogonal steps stay adversarial, :math:`\delta / 0.9` when more than 70%;
    :math:`\varepsilon` halved when no source step succeeds and doubled (at most 1) when one
    does; a sample stops when :math:`\varepsilon < 10^{-7}`.

    Parameters
    ----------
    steps : int, default=1000
    candidates : int, default=10
    delta : float, default=0.1
        Initial orthogonal step (relative to the distance).
    epsilon : float, default=1.0
        Initial source step (relative to the distance).
    init : {'noise', 'other-class'}, default='noise'
        Start from uniform noise (the paper) or from another image of the batch (the sleep
        code starts from a correctly classified image of another class).
    init_attempts : int, default=100
    init_bisection : int, default=10
    model_mode : {'eval', 'train'}, default='eval'

    A correctly classified point for which no adversarial start is found is returned unchanged and
    marked in ``result.extra["unattacked"]``; the evaluation counts and flags such points.

    References
    ----------
    Brendel, W., Rauber, J., Bethge, M. (2018). Decision-based adversarial attacks: reliable
    attacks against black-box machine learning models. ICLR. :arxiv:`1712.04248`
    """

    key = "boundary"
    paper = (
        "Brendel, Rauber, Bethge 2018, 'Decision-Based Adversarial Attacks: Reliable Attacks Against "
        "Black-Box Machine Learning Models', ICLR, arXiv:1712.04248"
    )
    bounded = False
    norm = "l2"
    tags = ("blackbox", "decision", "minimal", "l2")
    chunkable = False  # delegates (or pairs samples across the batch)
    constraints: ClassVar[dict[str, Any]] = {
        "steps": Interval(int, 1, None),
        "candidates": Interval(int, 1, None),
        "delta": Interval(float, 0, None, closed="neither"),
        "epsilon": Interval(float, 0, 1, closed="right"),
        "init": Options(("noise", "other-class")),
        "init_attempts": Interval(int, 1, None),
        "init_bisection": Interval(int, 0, None),
    }

    def __init__(
        self,
        *,
        steps: int = 1000,
        candidates: int = 10,
        delta: float = 0.1,
        epsilon: float = 1.0,
        init: str = "noise",
        init_attempts: int = 100,
        init_bisection: int = 10,
        model_mode: str = "eval",
    ) -> None:
        super().__init__(
            steps=steps,
            candidates=candidates,
            delta=delta,
            epsilon=epsilon,
            init=init,
            init_attempts=init_attempts,
            init_bisection=init_bisection,
            model_mode=model_mode,
        )

    def _is_adv(self, model: nn.Module, z: torch.Tensor, idx: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # on a random model (an EOTModel) adversarial means: no draw classifies z correctly
        return self._correct(model, z, y[idx], idx) == 0

    def _start(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n = x.shape[0]
        start = x.clone()
        found = torch.zeros(n, dtype=torch.bool, device=x.device)
        if self.init == "other-class":
            with eval_mode(model), torch.no_grad():
                preds = draw_predictions(model, self._logits(model, x))  # (draws, n): one row for a deterministic model
            perm = torch.argsort(_rand((n, n), generator, x), dim=1)  # random order of partners
            # a partner is a start for sample i when no draw classifies it as y_i
            never_y = (preds[:, perm] != y[None, :, None]).all(dim=0)
            ok = never_y & (perm != torch.arange(n, device=x.device)[:, None])
            has = ok.any(dim=1)
            partner = perm.gather(1, ok.to(torch.int8).argmax(dim=1, keepdim=True)).squeeze(1)
            start[has] = x[partner[has]]
            found |= has
        for _ in range(self.init_attempts):
            idx = torch.nonzero(~found).squeeze(1)
            if idx.numel() == 0:
                break
            noise = _rand((idx.numel(), *x.shape[1:]), generator, x)
            hit = self._is_adv(model, noise, idx, y)
            start[idx[hit]] = noise[hit]
            found[idx[hit]] = True
        # bisection on the line from x to the start: smallest blend that is still adversarial
        idx = torch.nonzero(found).squeeze(1)
        lo = torch.zeros(idx.numel(), device=x.device, dtype=x.dtype)
        hi = torch.ones_like(lo)
        for _ in range(self.init_bisection if idx.numel() else 0):
            mid = (lo + hi) / 2
            z = x[idx] + _expand(mid, x[idx]) * (start[idx] - x[idx])
            hit = self._is_adv(model, z, idx, y)
            hi = torch.where(hit, mid, hi)
            lo = torch.where(hit, lo, mid)
        if idx.numel():
            start[idx] = x[idx] + _expand(hi, x[idx]) * (start[idx] - x[idx])
        return start, found

    def _run(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        eps: float | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        n = x.shape[0]
        correct = self._correct(model, x, y) > 0
        x_adv, found = self._start(model, x, y, generator)
        # a correctly classified point whose start never left its class is returned unattacked: say so,
        # so that the evaluation counts and flags it instead of scoring it robust in silence
        self._extra["unattacked"] = correct & ~found
        x_adv = torch.where(_expand(correct, x), x_adv, x)
        delta = torch.full((n,), self.delta, device=x.device, dtype=x.dtype)
        epsilon = torch.full((n,), self.epsilon, device=x.device, dtype=x.dtype)
        k = self.candidates
        for _ in range(self.steps):
            idx = torch.nonzero(correct & found & (epsilon >= 1e-7)).squeeze(1)
            if idx.numel() == 0:
                break
            na = idx.numel()
            rows = idx.repeat_interleave(k)
            x0 = x[rows]
            diff = x_adv[rows] - x0
            dist = lp_norm(diff, "l2")
            eta = _randn((na * k, *x.shape[1:]), generator, x)
            eta = eta / _expand(lp_norm(eta, "l2").clamp_min(1e-12), eta) * _expand(delta[rows] * dist, eta)
            v = diff + eta
            v = v / _expand(lp_norm(v, "l2").clamp_min(1e-12), v) * _expand(dist, v)
            ortho = (x0 + v).clamp(0.0, 1.0)
            adv_o = self._is_adv(model, ortho, rows, y)
            cand = (x0 + _expand(1.0 - epsilon[rows], x0) * (ortho - x0)).clamp(0.0, 1.0)
            adv_c = self._is_adv(model, cand, rows, y)
            d_c = torch.where(adv_c, lp_norm(cand - x0, "l2"), torch.full_like(dist, math.inf)).reshape(na, k)
            best = d_c.argmin(dim=1)
            best_d = d_c.gather(1, best[:, None]).squeeze(1)
            accept = best_d < dist.reshape(na, k)[:, 0]
            chosen = cand.reshape(na, k, *x.shape[1:])[torch.arange(na, device=x.device), best]
            x_adv[idx[accept]] = chosen[accept]
            rate = adv_o.reshape(na, k).to(x.dtype).mean(dim=1)
            delta[idx] = torch.where(
                rate < 0.3, delta[idx] * 0.9, torch.where(rate > 0.7, delta[idx] / 0.9, delta[idx])
            )
            any_c = adv_c.reshape(na, k).any(dim=1)
            epsilon[idx] = torch.where(any_c, (epsilon[idx] * 2).clamp(max=1.0), epsilon[idx] / 2)
        return self._settle(model, x, y, x_adv, correct & found)

    def _settle(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor, active: torch.Tensor
    ) -> torch.Tensor:
        """Step back off the boundary where the walk ended on it.

        The walk converges onto the decision boundary, where the logit margin is ~1e-6: a point judged
        adversarial inside a batch of candidates can flip back when it is evaluated in a batch of another
        shape (BLAS rounding differs). Such points are moved outward along ``x_adv - x`` by a growing
        factor until the check in a batch of this shape agrees.
        """
        for attempt in range(12):
            everyone = torch.arange(len(x), device=x.device)
            idx = torch.nonzero(active & ~self._is_adv(model, x_adv, everyone, y)).squeeze(1)
            if idx.numel() == 0:
                break
            scale = 1.0 + 1e-5 * 2**attempt
            x_adv[idx] = (x[idx] + scale * (x_adv[idx] - x[idx])).clamp(0.0, 1.0)
        return x_adv
