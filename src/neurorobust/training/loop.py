"""The one training loop (after nanoGPT's ``train.py``): read it top to bottom.

``fit(model, x, y, ...)`` trains in place with minibatch SGD / Adam / RMSprop on cross-entropy or
MSE-on-one-hot, a pure learning-rate schedule, optional L1 and weight decay, seeded shuffling,
and reports progress through a callback; it returns the model and a per-epoch history.

With ``resume_path`` it keeps its state in that file (every epoch, and mid-epoch every
``save_every_s``) and a later call with the same path goes on where the last save left off, with
the weights an uninterrupted run would have had (:class:`_StateSaver`).
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidParameterError, TrainingDivergedError
from ..modes import eval_mode
from ..types import ProgressFn
from ..validation import Interval, Options, validate_params
from .checkpoint import load_train_state, save_train_state

logger = logging.getLogger(__name__)

__all__ = ["History", "ProgressFn", "augment_batch", "fit", "loss_fn", "lr_at", "predict_logits"]


@dataclass
class History:
    """Per-epoch records: ``{"epoch", "lr", "loss", "train_acc", "val_acc", "seconds"}``."""

    epochs: list[dict[str, float]] = field(default_factory=list)
    stopped: str = ""  # why training stopped early, if it did
    resumed: str = ""  # where a resumed run picked up, e.g. "epoch 2, step 3 of 8"
    seconds_before: float = 0.0  # training time spent by earlier calls of a resumed run

    @property
    def final(self) -> dict[str, float]:
        return self.epochs[-1] if self.epochs else {}


def lr_at(
    epoch: int, *, base: float, epochs: int, schedule: str, milestones: list[int] | None = None, gamma: float = 0.1
) -> float:
    """Learning rate for 0-based ``epoch`` (a pure function of its arguments).

    ``constant``: base. ``step``: base * gamma^(number of milestones <= epoch).
    ``cosine``: base * (1 + cos(pi * epoch / epochs)) / 2. ``linear``: base * (1 - epoch / epochs),
    the Krotov-Hopfield decay.
    """
    if schedule == "constant":
        return base
    if schedule == "step":
        return base * gamma ** sum(1 for m in (milestones or []) if epoch >= m)
    if schedule == "cosine":
        return base * 0.5 * (1 + math.cos(math.pi * epoch / max(1, epochs)))
    if schedule == "linear":
        return base * (1 - epoch / max(1, epochs))
    raise InvalidParameterError("schedule", "lr_at", "'constant', 'step', 'cosine' or 'linear'", schedule)


def loss_fn(logits: torch.Tensor, y: torch.Tensor, kind: str = "ce", temperature: float = 1.0) -> torch.Tensor:
    """Training loss: ``ce`` cross-entropy of ``softmax(logits / temperature)``; ``mse`` mean over batch
    and classes of (logit - onehot)^2 (cerebellum code); ``mse-sum`` 1/2 sum over classes, mean over
    batch (sleep code). ``y`` holds integer labels, or (N, K) probabilities (soft labels, as
    defensive distillation's student learns from)."""
    if kind == "ce":
        return F.cross_entropy(logits / temperature, y)
    onehot = y.to(logits.dtype) if y.dim() == 2 else F.one_hot(y, logits.shape[1]).to(logits.dtype)
    if kind == "mse":
        return F.mse_loss(logits, onehot)
    if kind == "mse-sum":
        return 0.5 * (logits - onehot).pow(2).sum(1).mean()
    raise InvalidParameterError("loss", "loss_fn", "'ce', 'mse' or 'mse-sum'", kind)


def augment_batch(x: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """Random training augmentation of a batch, drawn per image from ``generator``.

    ``none``: unchanged. ``flip``: horizontal flip with probability 1/2. ``crop-flip``: zero-pad by
    ``max(1, W // 8)`` pixels (4 for 32 x 32, the usual CIFAR-10 recipe), take a random crop of the
    original size, then flip as above.
    """
    if kind == "none":
        return x
    n, _, h, w = x.shape
    if kind == "crop-flip":
        pad = max(1, w // 8)
        padded = F.pad(x, (pad, pad, pad, pad))
        top = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        left = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        rows = (top[:, None] + torch.arange(h)[None, :]).to(x.device)  # (n, h)
        cols = (left[:, None] + torch.arange(w)[None, :]).to(x.device)  # (n, w)
        batch = torch.arange(n, device=x.device)[:, None, None]
        x = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    elif kind != "flip":
        raise InvalidParameterError("augment", "augment_batch", "'none', 'flip' or 'crop-flip'", kind)
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(3), x)


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Logits of ``model`` on ``x`` in eval mode (mode restored afterwards)."""
    with eval_mode(model):
        device = next((p.device for p in model.parameters()), x.device)
        return torch.cat([model(x[i : i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)])


def _objective(adversarial: Any) -> Any:
    if adversarial is None:
        return None
    from .adversarial import AdversarialObjective

    if isinstance(adversarial, AdversarialObjective):
        return adversarial
    if isinstance(adversarial, dict):
        return AdversarialObjective(**{k: v for k, v in adversarial.items() if v is not None})
    raise InvalidParameterError("adversarial", "fit", "None, a dict of AdversarialObjective settings", adversarial)


def _make_optimizer(name: str, params: Any, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.RMSprop(params, lr=lr, alpha=0.99, eps=1e-8, momentum=0.0, weight_decay=weight_decay)


_CONSTRAINTS = {
    "optimizer": Options(["sgd", "adam", "rmsprop"]),
    "lr": Interval(float, 0, None, closed="neither"),
    "loss": Options(["ce", "mse", "mse-sum"]),
    "batch_size": Interval(int, 1, None),
    "epochs": Interval(int, 0, None),
    "weight_decay": Interval(float, 0, None),
    "l1": Interval(float, 0, None),
    "temperature": Interval(float, 0, None, closed="neither"),
    "augment": Options(["none", "flip", "crop-flip"]),
    "save_every_s": Interval(float, 0, None),
}


def fit(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    optimizer: str = "adam",
    lr: float = 1e-3,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    l1: float = 0.0,
    loss: str = "ce",
    batch_size: int = 128,
    epochs: int = 2,
    schedule: str = "constant",
    milestones: list[int] | None = None,
    gamma: float = 0.1,
    seed: int = 0,
    temperature: float = 1.0,
    adversarial: Any = None,
    augment: str = "none",
    x_val: torch.Tensor | None = None,
    y_val: torch.Tensor | None = None,
    progress: ProgressFn | None = None,
    resume_path: str | Path | None = None,
    save_every_s: float = 600.0,
) -> tuple[nn.Module, History]:
    """Train ``model`` in place and return it with its :class:`History`.

    Parameters
    ----------
    model : nn.Module
        Maps (N, C, H, W) images in [0, 1] to logits.
    x : torch.Tensor of shape (N, C, H, W)
        Training images in [0, 1].
    y : torch.Tensor of shape (N,) or (N, K)
        Integer labels, or class probabilities (soft labels).
    optimizer : {'sgd', 'adam', 'rmsprop'}, default='adam'
    lr : float, default=1e-3
        Base learning rate; ``schedule`` scales it per epoch (:func:`lr_at`).
    momentum : float, default=0.9
        SGD momentum.
    weight_decay : float, default=0.0
        L2 penalty (through the optimizer).
    l1 : float, default=0.0
        L1 penalty ``l1 * sum |w|`` over all weight tensors with more than one dimension.
    loss : {'ce', 'mse', 'mse-sum'}, default='ce'
        See :func:`loss_fn`.
    batch_size : int, default=128
    epochs : int, default=2
    schedule : {'constant', 'step', 'cosine', 'linear'}, default='constant'
    milestones : list of int, optional
        Epochs at which ``step`` multiplies the rate by ``gamma``.
    gamma : float, default=0.1
    seed : int, default=0
        Seeds the shuffling generator (and ``torch.manual_seed`` is *not* touched).
    temperature : float, default=1.0
        Softmax temperature of the ``ce`` loss (defensive distillation trains at T = 50).
    adversarial : dict or AdversarialObjective, optional
        Adversarial training (:mod:`neurorobust.training.adversarial`): PGD (Madry et al.), TRADES
        or fast FGSM with a random start, e.g. ``{"method": "pgd", "eps": 0.3, "steps": 40}``;
        replaces ``loss``. The fast variant holds out a batch of the training images and stops
        when PGD accuracy on it collapses, with the weights of its best epoch on that batch
        (history: ``heldout_pgd_acc``, ``collapsed``, ``stopped``).
    augment : {'none', 'flip', 'crop-flip'}, default='none'
        Random augmentation of each training batch (:func:`augment_batch`).
    x_val, y_val : torch.Tensor, optional
        Held-out data whose accuracy is recorded each epoch.
    progress : callable, optional
        Called with ``{"stage": "train", "epoch", "epochs", "step", "steps", "loss", "acc"}``.
    resume_path : path, optional
        A file for the run's state: weights, optimiser state, the generators' states (shuffling,
        augmentation, adversarial objective, the global torch generator that dropout draws from, and
        any ``torch.Generator`` a module keeps), epoch, step, the epoch's shuffle and the history. It
        is written atomically at the end of every epoch, mid-epoch when ``save_every_s`` passed since
        the last write, and once more, marked finished, when training ends. When the file exists,
        training goes on from it (a finished one is loaded, not trained again) and ends with the same
        weights as an uninterrupted run (bit for bit on CPU). A file written with other settings, data
        or another architecture is ignored with a warning. The caller deletes it once the weights are
        saved elsewhere (the runner does).
    save_every_s : float, default=600.0
        With ``resume_path``: the longest time between two writes within an epoch (0: after every step).

    Notes
    -----
    Mechanisms that need more than a loss on the logits declare it on the model, and the loop
    calls it: ``model.on_epoch_start(x, epoch)`` before each epoch (e.g. the spectral regulariser
    recomputes its eigenbasis on the training set), and ``model.training_penalty(xb, logits)`` adds
    a scalar to each batch's loss (spectral, Jacobian penalties); one with a third positional parameter
    also gets the batch's labels, ``training_penalty(xb, logits, yb)`` (auxiliary classifier losses).
    Only parameters with ``requires_grad`` are optimised, so frozen layers (buffers or
    ``requires_grad=False``) stay fixed.
    """
    validate_params("fit", _CONSTRAINTS, locals())
    _check_data(x, y)
    objective = _objective(adversarial)
    gen = torch.Generator().manual_seed(seed)
    x, y, watch = _hold_out(x, y, objective, gen)
    params = [p for p in model.parameters() if p.requires_grad]
    trainer = _Trainer(
        model=model,
        params=params,
        opt=_make_optimizer(optimizer, params, lr, momentum, weight_decay),
        objective=objective,
        loss=loss,
        temperature=temperature,
        l1=l1,
        augment=augment,
        batch_size=batch_size,
        epochs=epochs,
        device=next((p.device for p in model.parameters()), torch.device("cpu")),
        gen=gen,
        adv_gen=torch.Generator().manual_seed(seed + 1),
        aug_gen=torch.Generator().manual_seed(seed + 2),
        penalty=getattr(model, "training_penalty", None),
        penalty_labels=_takes_labels(getattr(model, "training_penalty", None)),
        progress=progress,
    )
    history = History()
    epoch_hook = getattr(model, "on_epoch_start", None)
    saver = None
    if resume_path is not None:
        settings = {
            "optimizer": optimizer,
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "l1": l1,
            "loss": loss,
            "batch_size": batch_size,
            "epochs": epochs,
            "schedule": schedule,
            "milestones": milestones,
            "gamma": gamma,
            "seed": seed,
            "temperature": temperature,
            "augment": augment,
        }
        saver = _StateSaver(
            Path(resume_path), save_every_s, trainer, history, watch, _fingerprint(settings, objective, x, y)
        )
    first, partial = (0, None) if saver is None else saver.resume(x, epoch_hook)
    for epoch in range(first, epochs):
        if partial is None:  # a resumed epoch's hook ran already: the saver replayed it
            if callable(epoch_hook):
                epoch_hook(x, epoch)
            if saver is not None:
                saver.epoch_started(callable(epoch_hook))
        rate = lr_at(epoch, base=lr, epochs=epochs, schedule=schedule, milestones=milestones, gamma=gamma)
        record = _train_epoch(trainer, x, y, epoch, rate, partial, None if saver is None else saver.after_step)
        partial = None
        if x_val is not None and y_val is not None:
            record["val_acc"] = (predict_logits(model, x_val).argmax(1) == y_val).float().mean().item()
        stop = watch.after_epoch(model, epoch, record) if watch is not None else ""
        history.epochs.append(record)
        history.stopped = stop
        if saver is not None:
            saver.save(epoch + 1, None, finished=bool(stop) or epoch + 1 == epochs)
        if progress is not None:
            progress({"stage": "epoch", **record, "epochs": epochs})
        if stop:
            break
    model.eval()
    return model, history


def _check_data(x: torch.Tensor, y: torch.Tensor) -> None:
    """Refuse training data :func:`fit` cannot use: not (N, C, H, W), unmatched labels, NaN or inf."""
    if x.dim() != 4 or len(x) != len(y):
        raise InvalidParameterError("x", "fit", "a (N, C, H, W) tensor with as many rows as y", x)
    if y.dim() == 2 and not y.is_floating_point():
        raise InvalidParameterError("y", "fit", "integer labels (N,) or float class probabilities (N, K)", y)
    if not torch.isfinite(x).all():
        raise InvalidParameterError("x", "fit", "finite values (no NaN or inf)", "a tensor containing NaN/inf")


@dataclass
class _Trainer:
    """What every training step of one :func:`fit` shares: the model, its optimiser, the loss and the generators
    (``gen`` shuffles, ``adv_gen`` drives the adversarial objective, ``aug_gen`` the augmentation)."""

    model: nn.Module
    params: list[nn.Parameter]
    opt: torch.optim.Optimizer
    objective: Any
    loss: str
    temperature: float
    l1: float
    augment: str
    batch_size: int
    epochs: int
    device: torch.device
    gen: torch.Generator
    adv_gen: torch.Generator
    aug_gen: torch.Generator
    penalty: Any = None  # the model's training_penalty(xb, logits), if it declares one
    penalty_labels: bool = False  # it takes the labels too: training_penalty(xb, logits, yb)
    progress: ProgressFn | None = None


@dataclass
class _EpochState:
    """Where an epoch stands: its shuffle, the steps done and the running sums of its record (what a
    mid-epoch save keeps, so that a resumed epoch draws the same batches)."""

    epoch: int
    order: torch.Tensor
    steps: int
    step: int = 0
    loss_sum: float = 0.0
    correct: int = 0
    seconds: float = 0.0


def _train_epoch(
    t: _Trainer,
    x: torch.Tensor,
    y: torch.Tensor,
    epoch: int,
    rate: float,
    state: _EpochState | None = None,
    after_step: Callable[[_EpochState], None] | None = None,
) -> dict[str, float]:
    """One epoch at learning rate ``rate`` over a fresh seeded shuffle of ``(x, y)``, or from where ``state``
    (a resumed epoch) stands; ``after_step`` sees the state after every step. The epoch's record."""
    for group in t.opt.param_groups:
        group["lr"] = rate
    t.model.train()
    if state is None:
        order = torch.randperm(len(x), generator=t.gen)
        state = _EpochState(epoch, order, math.ceil(len(x) / t.batch_size))
    start, total_loss, correct = time.perf_counter() - state.seconds, state.loss_sum, state.correct
    order, steps = state.order, state.steps
    for step in range(state.step, steps):
        idx = order[step * t.batch_size : (step + 1) * t.batch_size]
        xb, yb = augment_batch(x[idx], t.augment, t.aug_gen).to(t.device), y[idx].to(t.device)
        batch_loss, logits = _batch_loss(t, xb, yb, epoch + step / steps)
        loss_value = batch_loss.item()  # one device sync per step, for the check and the records
        if not math.isfinite(loss_value):
            raise TrainingDivergedError(
                f"training diverged: the loss is {loss_value} at epoch {epoch + 1}, step {step + 1} "
                f"of {steps} (lr {rate:g}{', ' + t.objective.method if t.objective is not None else ''}); "
                "lower the learning rate, or ramp adversarial eps in with warmup_epochs"
            )
        t.opt.zero_grad(set_to_none=True)
        batch_loss.backward()
        t.opt.step()
        total_loss += loss_value * len(idx)
        correct += (logits.argmax(1) == (yb.argmax(1) if yb.dim() == 2 else yb)).sum().item()
        if after_step is not None:
            state.step, state.loss_sum, state.correct = step + 1, total_loss, correct
            state.seconds = time.perf_counter() - start
            after_step(state)
        if t.progress is not None:
            t.progress(
                {
                    "stage": "train",
                    "epoch": epoch + 1,
                    "epochs": t.epochs,
                    "step": step + 1,
                    "steps": steps,
                    "loss": loss_value,
                }
            )
    return {
        "epoch": epoch + 1,
        "lr": rate,
        "loss": total_loss / len(x),
        "train_acc": correct / len(x),
        "seconds": time.perf_counter() - start,
    }


def _takes_labels(penalty: Any) -> bool:
    """Whether a model's ``training_penalty`` takes a third positional argument, the batch's labels (looked
    up once per :func:`fit`, not per batch; two-argument penalties are called as before)."""
    if not callable(penalty):
        return False
    params = inspect.signature(penalty).parameters.values()
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
    return len(positional) > 2 or any(p.kind is p.VAR_POSITIONAL for p in positional)


def _batch_loss(t: _Trainer, xb: torch.Tensor, yb: torch.Tensor, progress: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss of one batch (adversarial objective or ``loss``, plus the model's penalty and L1) and its logits;
    ``progress``: epochs done so far, fractional (drives the adversarial eps warm-up)."""
    if t.objective is not None:
        t.objective.progress = progress  # drives the eps warm-up
        batch_loss, logits = t.objective(t.model, xb, yb, t.adv_gen)
    else:
        logits = t.model(xb)
        batch_loss = loss_fn(logits, yb, t.loss, t.temperature)
    if callable(t.penalty):
        batch_loss = batch_loss + (t.penalty(xb, logits, yb) if t.penalty_labels else t.penalty(xb, logits))
    if t.l1:
        batch_loss = batch_loss + t.l1 * sum(p.abs().sum() for p in t.params if p.dim() > 1)
    return batch_loss, logits


def _hold_out(
    x: torch.Tensor, y: torch.Tensor, objective: Any, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, _HeldOutCheck | None]:
    """Fast adversarial training (an objective with ``check_every``) holds out ``check_n`` training images for its
    collapse check: ``(x, y)`` without them and the check (``None`` for any other training)."""
    if objective is None or not objective.check_every:
        return x, y, None
    held = torch.randperm(len(x), generator=gen)
    check = _HeldOutCheck(objective, x[held[: objective.check_n]], y[held[: objective.check_n]])
    return x[held[objective.check_n :]], y[held[objective.check_n :]], check


@dataclass
class _HeldOutCheck:
    """Wong et al.'s early stopping of fast adversarial training: PGD accuracy on a held-out batch every
    ``check_every`` epochs, and the weights of the epoch where it was best."""

    objective: Any
    x: torch.Tensor
    y: torch.Tensor
    checked: list[float] = field(default_factory=list)
    best_state: dict[str, torch.Tensor] | None = None
    best_epoch: int = 0

    def after_epoch(self, model: nn.Module, epoch: int, record: dict[str, float]) -> str:
        """Check after 0-based ``epoch`` if one is due (adding ``heldout_pgd_acc`` and ``collapsed`` to ``record``):
        why training stops when it collapsed (the best epoch's weights are loaded back), else ``""``."""
        if (epoch + 1) % self.objective.check_every != 0:
            return ""
        from .adversarial import catastrophic_overfitting

        self.checked.append(self.objective.heldout_pgd_accuracy(model, self.x, self.y))
        record["heldout_pgd_acc"] = self.checked[-1]
        collapsed = catastrophic_overfitting(self.checked)
        if collapsed and self.best_state is not None:
            # Wong et al.'s early stopping: back to the epoch with the best held-out PGD accuracy
            # (the decline can start epochs before the drop that trips the check)
            model.load_state_dict(self.best_state)
        elif not collapsed and self.checked[-1] >= max(self.checked):
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            self.best_epoch = epoch + 1
        record["collapsed"] = float(collapsed)
        if not collapsed:
            return ""
        return (
            f"catastrophic overfitting after epoch {epoch + 1}: held-out PGD accuracy fell from "
            f"{max(self.checked[:-1]):.3f} to {self.checked[-1]:.3f}; kept the weights of epoch {self.best_epoch}, "
            "the best on the held-out batch"
        )


def _fingerprint(settings: dict[str, Any], objective: Any, x: torch.Tensor, y: torch.Tensor) -> str:
    """What a saved training state must match to be resumed: the settings, the adversarial objective and
    the data's shapes and label counts (a cheap guard; the runner's file names carry the train key too)."""
    adversarial = None
    if objective is not None:
        adversarial = {k: v for k, v in sorted(vars(objective).items()) if isinstance(v, (bool, int, float, str))}
        adversarial.pop("progress", None)  # set anew before every batch
    labels = torch.bincount(y).tolist() if y.dim() == 1 and not y.is_floating_point() else None
    data = {"x": list(x.shape), "y": list(y.shape), "labels": labels}
    return json.dumps({**settings, "adversarial": adversarial, "data": data}, sort_keys=True, default=str)


def _module_generators(model: nn.Module) -> dict[str, torch.Generator]:
    """The ``torch.Generator`` s that the model's modules keep as attributes (e.g. a Jacobian penalty's
    projections), by ``module:attribute``: their states are part of a resumable training state."""
    found = {}
    for name, module in model.named_modules():
        for attr, value in vars(module).items():
            if isinstance(value, torch.Generator):
                found[f"{name}:{attr}"] = value
    return found


@dataclass
class _StateSaver:
    """Saves and restores everything one :func:`fit` needs to go on where it stopped (``resume_path``).

    The state: weights and buffers, optimiser state, the shuffling, augmentation and adversarial
    generators, the global torch generator (dropout and stochastic layers draw from it; CUDA's too on a
    GPU), the modules' own generators, the epochs done with their history, the fast-AT held-out check
    and, mid-epoch, the epoch's shuffle, steps done and running sums. When the model has an
    ``on_epoch_start`` hook, a mid-epoch save also keeps the weights the epoch started from, so that a
    resume replays the hook on them (a spectral regulariser's eigenbasis is not in the state dict).
    """

    path: Path
    every_s: float
    trainer: _Trainer
    history: History
    watch: _HeldOutCheck | None
    fingerprint: str
    last: float = field(default_factory=time.monotonic)
    started: float = field(default_factory=time.perf_counter)
    epoch_start: dict[str, torch.Tensor] | None = None

    def epoch_started(self, has_hook: bool) -> None:
        """Called when an epoch starts, after the model's hook: keep its weights if a hook must be replayed."""
        if has_hook:
            self.epoch_start = {k: v.detach().clone() for k, v in self.trainer.model.state_dict().items()}

    def after_step(self, state: _EpochState) -> None:
        """Save mid-epoch when ``every_s`` passed since the last save (the epoch's last step is saved by fit)."""
        if state.step < state.steps and time.monotonic() - self.last >= self.every_s:
            self.save(state.epoch, state)

    def save(self, epochs_done: int, partial: _EpochState | None, *, finished: bool = False) -> None:
        """Write the state after ``epochs_done`` whole epochs (and ``partial``'s steps of the next one)."""
        t = self.trainer
        state: dict[str, Any] = {
            "version": 1,
            "fingerprint": self.fingerprint,
            "epochs_done": epochs_done,
            "finished": finished,
            "model": t.model.state_dict(),
            "optimizer": t.opt.state_dict(),
            "rng": self._rng_states(),
            "history": self.history.epochs,
            "stopped": self.history.stopped,
            "seconds": self.history.seconds_before + time.perf_counter() - self.started,
            "held_out": None,
            "partial": None,
        }
        if self.watch is not None:
            state["held_out"] = {
                "checked": self.watch.checked,
                "best_state": self.watch.best_state,
                "best_epoch": self.watch.best_epoch,
            }
        if partial is not None:
            state["partial"] = {
                "order": partial.order,
                "steps": partial.steps,
                "step": partial.step,
                "loss_sum": partial.loss_sum,
                "correct": partial.correct,
                "seconds": partial.seconds,
                "epoch_start": self.epoch_start,
            }
        save_train_state(self.path, state)
        self.last = time.monotonic()

    def resume(self, x: torch.Tensor, epoch_hook: Any) -> tuple[int, _EpochState | None]:
        """Load the saved state if there is one that fits: (first epoch to train, the resumed epoch's state)."""
        t = self.trainer
        state = load_train_state(self.path)
        if state is None:
            return 0, None
        if state.get("version") != 1 or state.get("fingerprint") != self.fingerprint:
            logger.warning("%s was written with other settings or data; training starts from scratch", self.path)
            return 0, None
        ours = {k: tuple(v.shape) for k, v in t.model.state_dict().items()}
        if ours != {k: tuple(v.shape) for k, v in state["model"].items()}:
            logger.warning("%s was written for another architecture; training starts from scratch", self.path)
            return 0, None
        saved = state["partial"]
        if saved is not None and saved["epoch_start"] is not None and callable(epoch_hook):
            # the hook's by-products (an eigenbasis) are not in the state dict: make them again from the same weights
            t.model.load_state_dict(saved["epoch_start"])
            epoch_hook(x, state["epochs_done"])
            self.epoch_start = saved["epoch_start"]
        t.model.load_state_dict(state["model"])
        t.opt.load_state_dict(state["optimizer"])
        self._set_rng_states(state["rng"])  # after the replayed hook, which may have drawn from them
        self.history.epochs[:] = state["history"]
        self.history.stopped = state["stopped"]
        self.history.seconds_before = float(state["seconds"])
        if self.watch is not None and state["held_out"] is not None:
            self.watch.checked = list(state["held_out"]["checked"])
            self.watch.best_state = state["held_out"]["best_state"]
            self.watch.best_epoch = int(state["held_out"]["best_epoch"])
        done = int(state["epochs_done"])
        if state["finished"]:
            self.history.resumed = f"finished after epoch {done}"
            return t.epochs, None
        if saved is None:
            self.history.resumed = f"epoch {done + 1}, step 1"
            logger.info("%s: resuming at epoch %d of %d", self.path, done + 1, t.epochs)
            return done, None
        resumed = _EpochState(
            done,
            saved["order"],
            int(saved["steps"]),
            int(saved["step"]),
            float(saved["loss_sum"]),
            int(saved["correct"]),
            float(saved["seconds"]),
        )
        self.history.resumed = f"epoch {done + 1}, step {resumed.step + 1} of {resumed.steps}"
        logger.info("%s: resuming at epoch %d of %d, step %d", self.path, done + 1, t.epochs, resumed.step + 1)
        return done, resumed

    def _rng_states(self) -> dict[str, Any]:
        t = self.trainer
        return {
            "shuffle": t.gen.get_state(),
            "adversarial": t.adv_gen.get_state(),
            "augment": t.aug_gen.get_state(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if t.device.type == "cuda" else [],
            "modules": {k: g.get_state() for k, g in _module_generators(t.model).items()},
        }

    def _set_rng_states(self, rng: dict[str, Any]) -> None:
        t = self.trainer
        t.gen.set_state(rng["shuffle"])
        t.adv_gen.set_state(rng["adversarial"])
        t.aug_gen.set_state(rng["augment"])
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and t.device.type == "cuda":
            torch.cuda.set_rng_state_all(rng["cuda"])
        generators = _module_generators(t.model)
        for key, value in rng["modules"].items():
            if key in generators:
                generators[key].set_state(value)
