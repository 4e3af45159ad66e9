r"""Adversarial fine-tuning: train on, then fine-tune on examples of one attack or distortion.

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
from torch import nn

from ..attacks import ATTACKS, input_gradient
from ..data import gaussian_blur, gaussian_noise
from ..errors import InvalidParameterError
from ..mechanisms import MECHANISMS
from ..modes import eval_mode
from ..validation import Interval, Options, validate_params
from .loop import fit

__all__ = ["FINETUNE_ON", "finetune", "perturb_for_finetuning"]

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


@MECHANISMS.register("finetune", paper="Tadros et al. 2020, ICLR (adversarial fine-tuning baseline, as coded)")
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
