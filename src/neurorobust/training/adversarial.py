r"""Adversarial training and fine-tuning, all through the one training loop (:func:`~neurorobust.training.fit`).

**Adversarial training** (the reference defences every mechanism is ranked against):

* ``pgd`` — Madry et al. (2018): :math:`\min_\theta \mathbb{E}\,\max_{\|\delta\|_\infty\le\epsilon}
  \mathrm{CE}(f_\theta(x+\delta), y)`, the inner maximum by PGD with a random start; the
  network trains on the adversarial batch only.
* ``trades`` — Zhang et al. (2019):
  :math:`\mathrm{CE}(f(x), y) + \beta\,\mathrm{KL}\big(p(x)\,\|\,p(x')\big)`, with
  :math:`x'` maximising the KL term (start :math:`x + 0.001\,\mathcal N(0, I)`, signed-gradient
  steps, projection), :math:`p` the softmax.
* ``fgsm-rs`` — Wong, Rice & Kolter (2020) "fast is better than free": one FGSM step of
  :math:`1.25\,\epsilon` from a uniform random start. Known to overfit catastrophically (PGD
  accuracy collapses within an epoch); :func:`fit` therefore measures PGD accuracy on a held-out
  batch after every epoch and stops, going back to the weights of the best epoch on it, when it collapses
  (:func:`catastrophic_overfitting`).

In a spec: ``[train] adversarial = { method = "pgd", eps = 0.3, steps = 40, step_size = 0.01 }``.

**Adversarial fine-tuning**: train on, then fine-tune on examples of one attack or distortion.

The sleep paper's second baseline (Tadros et al. 2020, Sec. 4; as coded in
``save_*_results.m``, seeds/NOTES.md §1): starting from the trained control network, the first
``n`` training images (5,000 in the code) are replaced by their attacked or distorted versions,
and the network is trained on that set (``n`` perturbed + the rest clean) for 2 more epochs at a
reduced learning rate (0.05 instead of 0.1), with its other training settings unchanged.

Perturbations (``on``):

* ``fgsm`` as coded: :math:`x' = \mathrm{clip}(x + u \odot \mathrm{sign}\nabla_x L, 0, 1)` with
  :math:`u \sim U(0, 0.1)` drawn **per pixel** and :math:`L` the training loss;
* ``deepfool``, ``jsma`` (or any registered minimal attack): the attack's output, with the
  attack's parameters from ``attack_params`` (the evaluation's settings, so the fine-tuned
  model is tuned on what it is tested on);
* ``noise``, ``blur``: each image gets a sigma drawn uniformly from ``sigmas`` (the evaluation
  grid without 0); the authors' fine-tuning levels are not in their code.

A fine-tuned model is tested on what it was tuned on, as in the paper.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks import ATTACKS, PGD, input_gradient, project
from ..data import gaussian_blur, gaussian_noise
from ..errors import InvalidParameterError
from ..modes import eval_mode
from ..validation import Interval, Options, validate_params
from .loop import fit

__all__ = [
    "ADVERSARIAL_METHODS",
    "FINETUNE_ON",
    "AdversarialObjective",
    "catastrophic_overfitting",
    "finetune",
    "perturb_for_finetuning",
    "trades_loss",
]

FINETUNE_ON = ("fgsm", "deepfool", "jsma", "noise", "blur")

_DEFAULT_SIGMAS = {"noise": (0.316, 0.548, 0.707, 0.837, 0.949), "blur": (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0)}


def perturb_for_finetuning(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    on: str,
    *,
    loss: str = "mse",
    attack_params: dict[str, Any] | None = None,
    sigmas: Sequence[float] | None = None,
    seed: int = 0,
    batch_size: int = 500,
) -> torch.Tensor:
    """The perturbed copies of ``x`` that fine-tuning on ``on`` trains with (see the module docstring)."""
    if on not in FINETUNE_ON:
        raise InvalidParameterError("on", "perturb_for_finetuning", f"one of {', '.join(FINETUNE_ON)}", on)
    gen = torch.Generator().manual_seed(seed)
    if on in ("noise", "blur"):
        grid = list(sigmas or _DEFAULT_SIGMAS[on])
        pick = torch.randint(len(grid), (len(x),), generator=gen)
        out = x.clone()
        for i, sigma in enumerate(grid):
            sel = pick == i
            if sel.any():
                out[sel] = (
                    gaussian_noise(x[sel], sigma, generator=gen) if on == "noise" else gaussian_blur(x[sel], sigma)
                )
        return out
    if on == "fgsm":
        parts = []
        with eval_mode(model):
            for i in range(0, len(x), batch_size):
                xb, yb = x[i : i + batch_size], y[i : i + batch_size]
                grad = input_gradient(model, xb, yb, "ce" if loss == "ce" else "mse")[0]
                u = torch.rand(xb.shape, generator=gen) * 0.1
                parts.append((xb + u * grad.sign()).clamp(0, 1))
        return torch.cat(parts)
    attack = ATTACKS.create(on, **(attack_params or {}))
    parts = []
    for i in range(0, len(x), batch_size):
        res = attack(model, x[i : i + batch_size], y[i : i + batch_size], eps=None, generator=gen)
        parts.append(res.x_adv.detach().clamp(0, 1))
    return torch.cat(parts)


def finetune(
    model: nn.Module,
    data: Any = None,
    *,
    on: str = "fgsm",
    n: int = 5000,
    lr: float = 0.05,
    epochs: int = 2,
    attack_params: dict[str, Any] | None = None,
    sigmas: Sequence[float] | None = None,
    train: dict[str, Any] | None = None,
    seed: int = 0,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> nn.Module:
    """Fine-tune a copy of ``model`` on ``n`` perturbed training images plus the clean rest.

    Parameters
    ----------
    model : nn.Module
        The trained control network (not modified).
    data : Dataset
        Its training split is used (the first ``n`` images are perturbed, as coded).
    on : {'fgsm', 'deepfool', 'jsma', 'noise', 'blur'}, default='fgsm'
        What to fine-tune on (the fine-tuned model is tested on the same).
    n : int, default=5000
        How many training images are replaced by perturbed ones (the code: 5,000).
    lr : float, default=0.05
        Fine-tuning learning rate (the control trains at 0.1).
    epochs : int, default=2
    attack_params : dict, optional
        Parameters of the attack for ``deepfool`` / ``jsma`` (use the evaluation's).
    sigmas : sequence of float, optional
        Sigma grid for ``noise`` / ``blur`` (default: the evaluation grids without 0).
    train : dict, optional
        The control's training settings (:func:`~neurorobust.training.fit` keywords); the runner
        passes the spec's ``[train]`` table. ``lr`` and ``epochs`` above replace its own.
    seed : int, default=0
        Seeds the perturbations and the shuffling.
    """
    validate_params(
        "finetune",
        {
            "on": Options(FINETUNE_ON),
            "n": Interval(int, 1, None),
            "lr": Interval(float, 0, None, closed="neither"),
            "epochs": Interval(int, 1, None),
        },
        locals(),
    )
    if data is None or not hasattr(data, "x_train"):
        raise InvalidParameterError("data", "finetune", "a Dataset with a training split", data)
    settings = {**(train or {}), "lr": lr, "epochs": epochs}
    settings.setdefault("seed", seed)
    x, y = data.x_train, data.y_train
    n = min(n, len(x))
    tuned = copy.deepcopy(model)
    x_new = x.clone()
    x_new[:n] = perturb_for_finetuning(
        tuned, x[:n], y[:n], on, loss=settings.get("loss", "ce"), attack_params=attack_params, sigmas=sigmas, seed=seed
    )
    tuned, history = fit(tuned, x_new, y, **settings, progress=progress)
    changed = (x_new[:n] - x[:n]).flatten(1)
    tuned.mechanism_report = {  # type: ignore[assignment]
        "on": on,
        "n": n,
        "mean_l2_of_perturbation": float(changed.norm(dim=1).mean()),
        "history": history.epochs,
    }
    return tuned


ADVERSARIAL_METHODS = ("pgd", "trades", "fgsm-rs")


def trades_loss(logits_clean: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, beta: float) -> torch.Tensor:
    r"""TRADES, batch mean: :math:`\mathrm{CE}(z, y) + \beta\,\mathrm{KL}(p(z)\,\|\,p(z'))`, :math:`p` the softmax."""
    ce = F.cross_entropy(logits_clean, y)
    kl = F.kl_div(F.log_softmax(logits_adv, 1), F.softmax(logits_clean, 1), reduction="batchmean")
    return ce + beta * kl


def catastrophic_overfitting(pgd_accuracies: Sequence[float], *, drop: float = 0.2) -> bool:
    """``True`` when the latest held-out PGD accuracy fell more than ``drop`` (absolute) below the best
    before it: the sudden collapse of FGSM training (Wong et al. 2020, Sec. 5)."""
    if len(pgd_accuracies) < 2:
        return False
    return max(pgd_accuracies[:-1]) - pgd_accuracies[-1] > drop


class AdversarialObjective:
    r"""The batch loss of adversarial training, plugged into :func:`~neurorobust.training.fit`.

    Parameters
    ----------
    method : {'pgd', 'trades', 'fgsm-rs'}
    eps : float
        L-inf radius of the training perturbation (images in [0, 1]).
    steps : int, default=10
        Inner iterations (PGD, TRADES); ``fgsm-rs`` takes one step.
    step_size : float, optional
        Inner step; default ``2.5 eps / steps`` (PGD), ``eps / 4`` (TRADES, as its MNIST code:
        0.01 for eps 0.3 at 40 steps is close), ``1.25 eps`` (fgsm-rs).
    beta : float, default=6.0
        TRADES trade-off (Zhang et al. use 6 on CIFAR-10 and MNIST).
    check_every : int, default=1
        Epochs between catastrophic-overfitting checks (``fgsm-rs``; 0 disables).
    check_n : int, default=256
        Held-out training images of that check (removed from training).
    warmup_epochs : float, default=0
        Epochs over which the training radius (and the inner step) ramps linearly from 0 to
        ``eps``, batch by batch (:math:`\epsilon_t = \epsilon \min(1, t / t_w)`, t in epochs).
        PGD-AT and fast FGSM-AT at eps 0.3 on MNIST from scratch otherwise stay at chance (measured:
        loss 2.30 for 3 epochs with Kubo's 2CNN and Adam 1e-3); an eps ramp is the usual remedy
        (Gowal et al. 2018, *On the effectiveness of interval bound propagation*; Wong et al. 2020).
    """

    #: Training progress in epochs, set by :func:`~neurorobust.training.fit` before every batch.
    progress: float = 0.0

    def __init__(
        self,
        method: str,
        eps: float,
        *,
        steps: int = 10,
        step_size: float | None = None,
        beta: float = 6.0,
        check_every: int = 1,
        check_n: int = 256,
        warmup_epochs: float = 0.0,
    ) -> None:
        validate_params(
            "AdversarialObjective",
            {
                "method": Options(ADVERSARIAL_METHODS),
                "eps": Interval(float, 0, 1, closed="right"),
                "steps": Interval(int, 1, None),
                "step_size": Interval(float, 0, None, closed="neither"),
                "beta": Interval(float, 0, None),
                "check_every": Interval(int, 0, None),
                "check_n": Interval(int, 1, None),
                "warmup_epochs": Interval(float, 0, None),
            },
            {k: v for k, v in locals().items() if k != "self" and v is not None},
        )
        self.method, self.eps, self.steps, self.beta = method, float(eps), int(steps), float(beta)
        self.check_every, self.check_n = check_every if method == "fgsm-rs" else 0, check_n
        if method == "fgsm-rs":
            self.steps, self.step_size = 1, float(step_size or 1.25 * eps)
        elif method == "trades":
            self.step_size = float(step_size or eps / 4)
        else:
            self.step_size = float(step_size or 2.5 * eps / steps)
        self.warmup_epochs = float(warmup_epochs)
        self._inner = PGD(norm="linf", steps=self.steps, step_size=self.step_size, random_start=True)

    def current_eps(self) -> float:
        """The training radius at :attr:`progress` (``eps`` once the warm-up is over)."""
        if self.warmup_epochs <= 0:
            return self.eps
        return self.eps * min(1.0, self.progress / self.warmup_epochs)

    def __repr__(self) -> str:
        return (
            f"AdversarialObjective(method={self.method!r}, eps={self.eps:g}, steps={self.steps}, "
            f"step_size={self.step_size:g}, beta={self.beta:g}"
            + (f", warmup_epochs={self.warmup_epochs:g})" if self.warmup_epochs else ")")
        )

    def _trades_point(
        self, model: nn.Module, x: torch.Tensor, generator: torch.Generator, eps: float, step_size: float
    ) -> torch.Tensor:
        with eval_mode(model), torch.no_grad():
            target = F.softmax(model(x), 1)
        x_adv = (x + 0.001 * torch.randn(x.shape, generator=generator)).clamp(0, 1)

        def kl(logits: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
            return F.kl_div(F.log_softmax(logits, 1), p, reduction="none").sum(1)

        with eval_mode(model):
            for _ in range(self.steps):
                grad = input_gradient(model, x_adv, target, kl)[0]
                x_adv = project(x_adv + step_size * grad.sign(), x, eps, "linf").detach()
        return x_adv

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch loss, logits for the running accuracy) on one training batch; ``model`` is in train mode."""
        eps = self.current_eps()
        if eps <= 0:  # the first batch of a warm-up: a clean step
            logits = model(x)
            return F.cross_entropy(logits, y), logits
        step_size = self.step_size * eps / self.eps
        if self.method == "trades":
            x_adv = self._trades_point(model, x, generator, eps, step_size)
            logits = model(x)
            return trades_loss(logits, model(x_adv), y, self.beta), logits
        inner = (
            self._inner
            if eps == self.eps
            else PGD(norm="linf", steps=self.steps, step_size=step_size, random_start=True)
        )
        x_adv = inner(model, x, y, eps=eps, generator=generator).x_adv.detach()
        logits = model(x_adv)  # Madry / Wong: train on the adversarial batch only
        return F.cross_entropy(logits, y), logits

    @torch.no_grad()
    def heldout_pgd_accuracy(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
        """PGD-10 (step eps/4) accuracy on the held-out batch: the catastrophic-overfitting probe."""
        probe = PGD(norm="linf", steps=10, step_size=self.eps / 4, random_start=True)
        with torch.enable_grad():
            res = probe(model, x, y, eps=self.eps, generator=torch.Generator().manual_seed(0))
        return res.robust_accuracy
