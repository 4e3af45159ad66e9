"""The Jacobian-based saliency map attack (JSMA), an L0 attack."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn

from ..validation import Interval, Options
from .base import Attack, _flat, input_gradient

__all__ = ["JSMA"]


class JSMA(Attack):
    r"""Jacobian-based saliency map attack, towards the second-highest class.

    With target :math:`t` (the highest-scoring class other than the prediction, fixed at the
    clean input), :math:`\alpha_p = \partial Z_t / \partial x_p` and
    :math:`\beta_p = \sum_{j \ne t} \partial Z_j / \partial x_p`, the saliency of pixel
    :math:`p` is

    .. math::

        S^+_p = \alpha_p |\beta_p|\ [\alpha_p > 0,\ \beta_p < 0], \qquad
        S^-_p = |\alpha_p| \beta_p\ [\alpha_p < 0,\ \beta_p > 0]

    ``mode="single"`` (the sleep code's ``SaliencyMap.m``): each iteration changes the one pixel
    with the largest :math:`\max(S^+_p, S^-_p)` by :math:`\pm\theta(\max x - \min x)` (up for
    :math:`S^+`, down for :math:`S^-`; when every saliency is 0, the largest
    :math:`|\alpha_p - \beta_p|` in its sign's direction); a pixel leaves the search domain
    when it reaches the image's min or max or after ``max_changes`` changes.
    ``mode="pair"`` (Papernot et al.'s increasing attack): the pair :math:`(p, q)` maximising
    :math:`(\alpha_p + \alpha_q)|\beta_p + \beta_q|` with :math:`\alpha_p + \alpha_q > 0`,
    :math:`\beta_p + \beta_q < 0` is increased by the same step. A sample stops when
    misclassified or after ``max_iter`` iterations. The perturbation's L0 is reported in
    ``distances["l0"]``; with an eps the base keeps the ``int(eps)`` largest changes.

    Parameters
    ----------
    theta : float, default=0.1
        Step as a fraction of the image's value range.
    max_iter : int, default=500
    max_changes : int, default=7
        Changes allowed per pixel.
    mode : {'single', 'pair'}, default='single'
    model_mode : {'eval', 'train'}, default='eval'
        'train' keeps dropout active in the gradients, as the sleep code.

    References
    ----------
    Papernot, N., McDaniel, P., Jha, S., Fredrikson, M., Celik, Z. B., Swami, A. (2016). The
    limitations of deep learning in adversarial settings. IEEE EuroS&P.
    :doi:`10.1109/EuroSP.2016.36`, :arxiv:`1511.07528`
    """

    key = "jsma"
    paper = (
        "Papernot, McDaniel, Jha, Fredrikson, Celik, Swami 2016, 'The Limitations of Deep Learning in "
        "Adversarial Settings', IEEE EuroS&P, doi:10.1109/EuroSP.2016.36, arXiv:1511.07528"
    )
    bounded = False
    norm = "l0"
    tags = ("minimal", "l0")
    constraints: ClassVar[dict[str, Any]] = {
        "theta": Interval(float, 0, 1, closed="right"),
        "max_iter": Interval(int, 1, None),
        "max_changes": Interval(int, 1, None),
        "mode": Options(("single", "pair")),
    }

    def __init__(
        self,
        *,
        theta: float = 0.1,
        max_iter: int = 500,
        max_changes: int = 7,
        mode: str = "single",
        model_mode: str = "eval",
    ) -> None:
        super().__init__(theta=theta, max_iter=max_iter, max_changes=max_changes, mode=mode, model_mode=model_mode)

    def _run(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        eps: float | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        with torch.no_grad():
            logits0 = self._logits(model, x)
        pred0 = logits0.argmax(dim=1)
        target = logits0.scatter(1, pred0[:, None], -math.inf).argmax(dim=1)
        flat_x = _flat(x)
        lo, hi = flat_x.amin(dim=1, keepdim=True), flat_x.amax(dim=1, keepdim=True)
        step = self.theta * (hi - lo)
        adv = flat_x.clone()
        mask = torch.ones_like(adv, dtype=torch.bool)
        counts = torch.zeros_like(adv, dtype=torch.int64)
        active = torch.nonzero(self._predict(model, x) == y).squeeze(1)
        shape = x.shape[1:]

        def scores(out: torch.Tensor, tt: torch.Tensor) -> torch.Tensor:
            # rows [0, na): Z_t; rows [na, 2na): sum_{j != t} Z_j
            na = out.shape[0] // 2
            z_t = out.gather(1, tt[:, None]).squeeze(1)
            return torch.cat([z_t[:na], out[na:].sum(1) - z_t[na:]])

        for _ in range(self.max_iter):
            if active.numel() == 0:
                break
            na = active.numel()
            rows = torch.cat([active, active])
            xa = adv[active].reshape((na, *shape))
            grad, out, _ = input_gradient(
                lambda z, rows=rows: self._logits(model, z, rows),
                torch.cat([xa, xa]),
                torch.cat([target[active], target[active]]),
                scores,
            )
            # success is judged in eval mode; reuse the logits when they were taken in it
            pred = self._predict(model, xa, active) if model.training else out[:na].argmax(dim=1)
            still = pred == y[active]
            g = _flat(grad)
            a_all, b_all = g[:na], g[na:]
            keep = torch.nonzero(still).squeeze(1)
            active, a, b = active[keep], a_all[keep], b_all[keep]
            if active.numel() == 0:
                break
            if self.mode == "single":
                self._single_step(adv, mask, counts, active, a, b, lo, hi, step)
            else:
                self._pair_step(adv, mask, counts, active, a, b, lo, hi, step)
            done = ~mask[active].any(dim=1)
            active = active[~done]
        return adv.reshape(x.shape)

    def _single_step(
        self,
        adv: torch.Tensor,
        mask: torch.Tensor,
        counts: torch.Tensor,
        active: torch.Tensor,
        a: torch.Tensor,
        b: torch.Tensor,
        lo: torch.Tensor,
        hi: torch.Tensor,
        step: torch.Tensor,
    ) -> None:
        cur, msk = adv[active], mask[active]
        can_up = msk & (cur < hi[active])
        can_down = msk & (cur > lo[active])
        s_up = torch.where((a > 0) & (b < 0) & can_up, a * (-b), torch.zeros_like(a))
        s_down = torch.where((a < 0) & (b > 0) & can_down, (-a) * b, torch.zeros_like(a))
        score = torch.maximum(s_up, s_down)
        direction = torch.where(s_up >= s_down, 1.0, -1.0)
        # fallback when no pixel has a proper saliency: largest |alpha - beta| in its direction
        d = a - b
        fb_ok = torch.where(d > 0, can_up, can_down)
        fb_score = torch.where(fb_ok, d.abs(), torch.full_like(d, -1.0))
        none = score.amax(dim=1) <= 0
        score = torch.where(none[:, None], fb_score, score)
        direction = torch.where(none[:, None], d.sign(), direction)
        idx = score.argmax(dim=1)
        ar = torch.arange(active.numel(), device=adv.device)
        sgn = direction[ar, idx]
        self._apply(adv, mask, counts, active, idx, sgn, lo, hi, step)

    def _pair_step(
        self,
        adv: torch.Tensor,
        mask: torch.Tensor,
        counts: torch.Tensor,
        active: torch.Tensor,
        a: torch.Tensor,
        b: torch.Tensor,
        lo: torch.Tensor,
        hi: torch.Tensor,
        step: torch.Tensor,
    ) -> None:
        ok = mask[active] & (adv[active] < hi[active])
        big = torch.finfo(a.dtype).max
        first, second = [], []
        for i in range(active.numel()):  # (P, P) per sample keeps memory bounded
            ai = torch.where(ok[i], a[i], torch.full_like(a[i], -big / 4))
            bi = torch.where(ok[i], b[i], torch.full_like(b[i], big / 4))
            sa, sb = ai[:, None] + ai[None, :], bi[:, None] + bi[None, :]
            s = torch.where((sa > 0) & (sb < 0), sa * sb.abs(), torch.zeros_like(sa))
            s.fill_diagonal_(0)
            flat = int(s.argmax())
            p, q = divmod(flat, s.shape[1])
            if float(s.reshape(-1)[flat]) <= 0:  # no admissible pair: best single pixel twice
                p = q = int(torch.where(ok[i], a[i] - b[i], torch.full_like(a[i], -big)).argmax())
            first.append(p)
            second.append(q)
        dev = adv.device
        ones = torch.ones(active.numel(), device=dev, dtype=adv.dtype)
        self._apply(adv, mask, counts, active, torch.tensor(first, device=dev), ones, lo, hi, step)
        distinct = torch.tensor(first, device=dev) != torch.tensor(second, device=dev)
        sel = torch.nonzero(distinct).squeeze(1)
        if sel.numel():
            self._apply(adv, mask, counts, active[sel], torch.tensor(second, device=dev)[sel], ones[sel], lo, hi, step)

    def _apply(
        self,
        adv: torch.Tensor,
        mask: torch.Tensor,
        counts: torch.Tensor,
        active: torch.Tensor,
        idx: torch.Tensor,
        sgn: torch.Tensor,
        lo: torch.Tensor,
        hi: torch.Tensor,
        step: torch.Tensor,
    ) -> None:
        lo_a, hi_a = lo[active, 0], hi[active, 0]
        new = (adv[active, idx] + sgn * step[active, 0]).clamp(lo_a, hi_a)
        adv[active, idx] = new
        counts[active, idx] += 1
        out = (new <= lo_a) | (new >= hi_a) | (counts[active, idx] >= self.max_changes)
        mask[active[out], idx[out]] = False
