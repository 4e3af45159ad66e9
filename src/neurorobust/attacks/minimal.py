"""Minimal-perturbation attacks: smallest-eps FGSM, DeepFool (L2) and Carlini-Wagner L2.

These attacks are unbounded (``bounded = False``): they return, per sample, the smallest
adversarial they find. Called with an eps (or a list), the base projects the result onto each
ball, so the same run gives a whole robustness curve.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn

from ..validation import Interval, Options, Type
from .base import LOSSES, Attack, _expand, _flat, input_gradient, lp_norm

__all__ = ["CarliniWagnerL2", "DeepFool", "FGSMMin"]


class FGSMMin(Attack):
    r"""Smallest eps along the FGSM direction at the clean input that misclassifies.

    With :math:`d = \operatorname{sign}(\nabla_x L(x, y))` taken once at the clean input, the
    per-sample minimal eps is

    .. math::

        \epsilon^*(x) = \min\{\epsilon \in [0, \epsilon_{\max}] :
        \arg\max_k f_k(\operatorname{clip}_{[0,1]}(x + \epsilon d)) \ne y\}

    found as the first crossing on the grid ``grid_step, 2 grid_step, ..., max_eps`` (the sleep
    code's 0:0.005:0.4) refined by ``refine_steps`` bisections between the last grid point that
    does not fool the model and the first that does. ``extra["min_eps"]`` holds
    :math:`\epsilon^*`; inputs misclassified before the attack get 0 and
    ``extra["clean_misclassified"] = True``; inputs never fooled up to ``max_eps`` get ``inf``.
    On a random model attacked through :class:`~neurorobust.attacks.wrappers.EOTModel` a point
    counts as misclassified when most draws misclassify it (the mean over draws, not one draw).

    Parameters
    ----------
    max_eps : float, default=0.4
    grid_step : float, default=0.005
    refine_steps : int, default=10
        Bisection steps; the tolerance is ``grid_step / 2**refine_steps``.
    loss : {'ce', 'mse', 'margin', 'dlr'}, default='ce'
        ``'mse'`` (one-hot) as the sleep code.
    model_mode : {'eval', 'train'}, default='eval'

    References
    ----------
    Goodfellow, I. J., Shlens, J., Szegedy, C. (2015). Explaining and harnessing adversarial
    examples. ICLR. :arxiv:`1412.6572`. Grid as coded by Tadros, T., Krishnan, G. P.,
    Ramyaa, R., Bazhenov, M. (2020). Biologically inspired sleep algorithm for increased
    generalization and adversarial robustness in deep neural networks. ICLR.
    """

    key = "fgsm-min"
    paper = (
        "Goodfellow, Shlens, Szegedy 2015, ICLR, arXiv:1412.6572; minimal-eps grid as coded by "
        "Tadros, Krishnan, Ramyaa, Bazhenov 2020, ICLR"
    )
    bounded = False
    norm = "linf"
    tags = ("minimal", "linf")
    constraints: ClassVar[dict[str, Any]] = {
        "max_eps": Interval(float, 0, 1, closed="right"),
        "grid_step": Interval(float, 0, 1, closed="right"),
        "refine_steps": Interval(int, 0, 60),
        "loss": Options(LOSSES),
    }

    def __init__(
        self,
        *,
        max_eps: float = 0.4,
        grid_step: float = 0.005,
        refine_steps: int = 10,
        loss: str = "ce",
        model_mode: str = "eval",
    ) -> None:
        super().__init__(
            max_eps=max_eps, grid_step=grid_step, refine_steps=refine_steps, loss=loss, model_mode=model_mode
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
        grad, _, _ = input_gradient(lambda z: self._logits(model, z), x, y, self.loss)
        d = grad.sign()
        # on a random model (an EOTModel) a point counts as fooled when most draws are fooled
        clean_wrong = self._correct(model, x, y) < 0.5

        def fools(idx: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
            z = (x[idx] + _expand(e, x[idx]) * d[idx]).clamp(0.0, 1.0)
            return self._correct(model, z, y[idx], idx) < 0.5

        n = x.shape[0]
        lo = torch.zeros(n, dtype=x.dtype, device=x.device)
        hi = torch.full((n,), math.inf, dtype=x.dtype, device=x.device)
        n_grid = math.floor(self.max_eps / self.grid_step + 1e-9)
        for i in range(1, n_grid + 1):
            idx = torch.nonzero(torch.isinf(hi) & ~clean_wrong).squeeze(1)
            if idx.numel() == 0:
                break
            e = torch.full((idx.numel(),), i * self.grid_step, dtype=x.dtype, device=x.device)
            hit = fools(idx, e)
            hi[idx[hit]] = e[hit]
            lo[idx[~hit]] = e[~hit]
        found = torch.nonzero(torch.isfinite(hi) & ~clean_wrong).squeeze(1)
        for _ in range(self.refine_steps if found.numel() else 0):
            mid = (lo[found] + hi[found]) / 2
            hit = fools(found, mid)
            hi[found] = torch.where(hit, mid, hi[found])
            lo[found] = torch.where(hit, lo[found], mid)
        hi[clean_wrong] = 0.0
        self._extra["min_eps"] = hi
        self._extra["clean_misclassified"] = clean_wrong
        step = torch.where(torch.isfinite(hi), hi, torch.zeros_like(hi))
        return (x + _expand(step, x) * d).clamp(0.0, 1.0)


class DeepFool(Attack):
    r"""DeepFool (L2): iterated linearisation of the closest decision boundary.

    At iterate :math:`x_i`, for the candidate classes :math:`k \ne y` (the ``candidates``
    highest at the clean input), with :math:`f_k = z_k - z_y` and :math:`w_k = \nabla_x f_k(x_i)`:

    .. math::

        \hat k = \arg\min_k \frac{|f_k(x_i)|}{\|w_k\|_2}, \qquad
        r_i = \frac{|f_{\hat k}(x_i)| + 10^{-4}\|w_{\hat k}\|_2}{\|w_{\hat k}\|_2^2}\, w_{\hat k}

    ``overshoot_mode="additive"`` (Moosavi-Dezfooli et al., foolbox):
    :math:`x_{i+1} = x_0 + (1 + \eta)\sum_{j \le i} r_j`; ``"multiplicative"`` (the sleep code's
    ``x_perturbed + 1.05 * perturbation``): :math:`x_{i+1} = x_i + (1 + \eta)\, r_i`, so the
    overshoot compounds. A sample stops once misclassified. The one-hot MSE "class losses" of
    the sleep code give the same differences :math:`f_k = z_k - z_y`, so no loss option is needed.

    Parameters
    ----------
    steps : int, default=50
        Maximum iterations (the sleep code: 99).
    overshoot : float, default=0.02
        :math:`\eta` (the sleep code: 0.05 with ``overshoot_mode="multiplicative"``).
    overshoot_mode : {'additive', 'multiplicative'}, default='additive'
    candidates : int, default=10
        Number of classes considered (including the true one).
    clip : bool, default=True
        Clip iterates to [0, 1] (the sleep code does not; the base clips the final output).
    model_mode : {'eval', 'train'}, default='eval'
        'train' keeps dropout active in the gradients, as the sleep code.

    References
    ----------
    Moosavi-Dezfooli, S.-M., Fawzi, A., Frossard, P. (2016). DeepFool: a simple and accurate
    method to fool deep neural networks. CVPR. :arxiv:`1511.04599`
    """

    key = "deepfool"
    paper = (
        "Moosavi-Dezfooli, Fawzi, Frossard 2016, 'DeepFool: a simple and accurate method to fool deep "
        "neural networks', CVPR, arXiv:1511.04599"
    )
    bounded = False
    norm = "l2"
    tags = ("minimal", "l2")
    constraints: ClassVar[dict[str, Any]] = {
        "steps": Interval(int, 1, None),
        "overshoot": Interval(float, 0, None),
        "overshoot_mode": Options(("additive", "multiplicative")),
        "candidates": Interval(int, 2, None),
        "clip": Type(bool),
    }

    def __init__(
        self,
        *,
        steps: int = 50,
        overshoot: float = 0.02,
        overshoot_mode: str = "additive",
        candidates: int = 10,
        clip: bool = True,
        model_mode: str = "eval",
    ) -> None:
        super().__init__(
            steps=steps,
            overshoot=overshoot,
            overshoot_mode=overshoot_mode,
            candidates=candidates,
            clip=clip,
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
        with torch.no_grad():
            logits0 = self._logits(model, x)
        n_cls = logits0.shape[1]
        m = min(self.candidates, n_cls) - 1  # classes other than y
        others = logits0.scatter(1, y[:, None], -math.inf).topk(m, dim=1).indices  # (N, m)
        x_adv, r_tot = x.clone(), torch.zeros_like(x)
        active = torch.nonzero(self._predict(model, x) == y).squeeze(1)
        factor = 1.0 + self.overshoot

        def diff(out: torch.Tensor, pair: torch.Tensor) -> torch.Tensor:
            return out.gather(1, pair[:, 1:]).squeeze(1) - out.gather(1, pair[:, :1]).squeeze(1)

        for _ in range(self.steps):
            if active.numel() == 0:
                break
            na = active.numel()
            rows = active.repeat_interleave(m)
            pairs = torch.stack([y[rows], others[active].reshape(-1)], dim=1)
            xr = x_adv[rows]
            grad, _, f = input_gradient(lambda z, rows=rows: self._logits(model, z, rows), xr, pairs, diff)
            w = _flat(grad).reshape(na, m, -1)
            wn = w.norm(dim=2)
            f = f.reshape(na, m)
            best = (f.abs() / (wn + 1e-8)).argmin(dim=1)
            ar = torch.arange(na, device=x.device)
            w_b, wn_b, f_b = w[ar, best], wn[ar, best], f[ar, best]
            r = ((f_b.abs() + 1e-4 * wn_b) / (wn_b.pow(2) + 1e-12))[:, None] * w_b
            r = r.reshape((na, *x.shape[1:]))
            if self.overshoot_mode == "additive":
                r_tot[active] += r
                new = x[active] + factor * r_tot[active]
            else:
                new = x_adv[active] + factor * r
            x_adv[active] = new.clamp(0.0, 1.0) if self.clip else new
            still = self._predict(model, x_adv[active], active) == y[active]
            active = active[still]
        return x_adv


class CarliniWagnerL2(Attack):
    r"""Carlini & Wagner's L2 attack: Adam in tanh space with a binary search over c.

    With :math:`x'(w) = \tfrac12(\tanh w + 1)` and :math:`Z` the logits, minimise per sample

    .. math::

        \|x'(w) - x\|_2^2 + c \cdot \max\big(Z_y(x'(w)) - \max_{j \ne y} Z_j(x'(w)) + \kappa,\ 0\big)

    by Adam (learning rate ``lr``) from :math:`w_0 = \operatorname{artanh}(2x - 1)`. After each
    of the ``binary_search_steps`` runs, :math:`c` is bisected between the largest failing and
    the smallest succeeding value (multiplied by 10 while none succeeded). The smallest
    adversarial found over all runs is returned.

    Parameters
    ----------
    binary_search_steps : int, default=9
    steps : int, default=1000
        Adam steps per binary-search step (the sleep code: 20 x 1000, lr 5e-3, c0 0.01).
    lr : float, default=0.01
    initial_const : float, default=1e-3
    kappa : float, default=0.0
        Confidence margin.
    abort_early : bool, default=True
        Stop a run when the total loss has not decreased by 0.01% over a tenth of the steps.
    model_mode : {'eval', 'train'}, default='eval'

    References
    ----------
    Carlini, N., Wagner, D. (2017). Towards evaluating the robustness of neural networks.
    IEEE Symposium on Security and Privacy. :doi:`10.1109/SP.2017.49`, :arxiv:`1608.04644`
    """

    key = "cw"
    paper = (
        "Carlini, Wagner 2017, 'Towards Evaluating the Robustness of Neural Networks', IEEE S&P, "
        "doi:10.1109/SP.2017.49, arXiv:1608.04644"
    )
    bounded = False
    norm = "l2"
    tags = ("minimal", "l2")
    constraints: ClassVar[dict[str, Any]] = {
        "binary_search_steps": Interval(int, 1, None),
        "steps": Interval(int, 1, None),
        "lr": Interval(float, 0, None, closed="neither"),
        "initial_const": Interval(float, 0, None, closed="neither"),
        "kappa": Interval(float, 0, None),
        "abort_early": Type(bool),
    }

    def __init__(
        self,
        *,
        binary_search_steps: int = 9,
        steps: int = 1000,
        lr: float = 0.01,
        initial_const: float = 1e-3,
        kappa: float = 0.0,
        abort_early: bool = True,
        model_mode: str = "eval",
    ) -> None:
        super().__init__(
            binary_search_steps=binary_search_steps,
            steps=steps,
            lr=lr,
            initial_const=initial_const,
            kappa=kappa,
            abort_early=abort_early,
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
        n = x.shape[0]
        w0 = torch.atanh((2.0 * x - 1.0) * (1 - 1e-6))
        best_adv, best_l2 = x.clone(), torch.full((n,), math.inf, device=x.device, dtype=x.dtype)
        lo = torch.zeros(n, device=x.device, dtype=x.dtype)
        hi = torch.full((n,), math.inf, device=x.device, dtype=x.dtype)
        const = torch.full((n,), self.initial_const, device=x.device, dtype=x.dtype)
        b1, b2 = 0.9, 0.999
        check_every = max(self.steps // 10, 1)

        def forward(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            xa = (torch.tanh(w) + 1.0) / 2.0
            return self._logits(model, xa), xa

        for _ in range(self.binary_search_steps):
            c = const.clone()

            def objective(
                out: tuple[torch.Tensor, torch.Tensor], yy: torch.Tensor, c: torch.Tensor = c
            ) -> torch.Tensor:
                logits, xa = out
                z_y = logits.gather(1, yy[:, None]).squeeze(1)
                other = logits.scatter(1, yy[:, None], -math.inf).amax(dim=1)
                return _flat(xa - x).pow(2).sum(1) + c * (z_y - other + self.kappa).clamp_min(0.0)

            w = w0.clone()
            m, v = torch.zeros_like(w), torch.zeros_like(w)
            found = torch.zeros(n, dtype=torch.bool, device=x.device)
            prev = math.inf
            for t in range(1, self.steps + 1):
                grad, (logits, xa), loss = input_gradient(forward, w, y, objective)
                logits, xa = logits.detach(), xa.detach()
                z_y = logits.gather(1, y[:, None]).squeeze(1)
                other = logits.scatter(1, y[:, None], -math.inf).amax(dim=1)
                fooled = (logits.argmax(dim=1) != y) & (other - z_y >= self.kappa)
                l2 = lp_norm(xa - x, "l2")
                better = fooled & (l2 < best_l2)
                best_adv = torch.where(_expand(better, x), xa, best_adv)
                best_l2 = torch.where(better, l2, best_l2)
                found |= fooled
                m = b1 * m + (1 - b1) * grad
                v = b2 * v + (1 - b2) * grad.pow(2)
                w = w - self.lr * (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + 1e-8)
                if self.abort_early and t % check_every == 0:
                    total = float(loss.sum())
                    if total > prev * 0.9999:
                        break
                    prev = total
            hi = torch.where(found, torch.minimum(hi, c), hi)
            lo = torch.where(found, lo, torch.maximum(lo, c))
            const = torch.where(torch.isfinite(hi), (lo + hi) / 2.0, c * 10.0)
        return best_adv
