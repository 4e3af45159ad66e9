"""EOT and BPDA: attacking stochastic and non-differentiable models (Athalye et al. 2018).

A model declares what it is: ``is_stochastic = True`` when its forward pass is random, and a
method ``bpda_surrogate() -> nn.Module`` returning a differentiable stand-in (same inputs and
logits) when its forward pass has no useful gradient. A model whose surrogate makes the same
decisions (e.g. the logits divided by a temperature) also sets ``bpda_surrogate_values = True``:
the attack's loss is then computed on the surrogate's values too, since a loss evaluated on
saturated real logits has a zero gradient whatever the surrogate's Jacobian. :func:`auto_wrap` reads the
declarations and wraps an attack accordingly; :class:`EOT` and :class:`BPDA` can also be used
directly around any gradient attack.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import InvalidParameterError
from ..validation import Interval, Type
from .base import Attack, AttackResult

__all__ = ["BPDA", "EOT", "BPDAModel", "EOTModel", "auto_wrap", "is_stochastic", "surrogate_of"]

_ATHALYE = (
    "Athalye, Carlini, Wagner 2018, 'Obfuscated Gradients Give a False Sense of Security: "
    "Circumventing Defenses to Adversarial Examples', ICML, arXiv:1802.00420"
)


def is_stochastic(model: nn.Module) -> bool:
    """The model's declaration ``is_stochastic`` (``False`` when absent)."""
    return bool(getattr(model, "is_stochastic", False))


def surrogate_of(model: nn.Module) -> nn.Module | None:
    """The model's declared differentiable stand-in, ``model.bpda_surrogate()``, or ``None``."""
    fn = getattr(model, "bpda_surrogate", None)
    return fn() if callable(fn) else None


class EOTModel(nn.Module):
    r"""Expectation over transformation: the mean of ``draws`` forward passes.

    .. math::

        \bar f(x) = \frac{1}{n} \sum_{i=1}^{n} f(x; \omega_i)

    so :math:`\nabla_x \bar f` is the average gradient over draws (the model's own randomness
    :math:`\omega` is drawn by the model). Draws run one after another so a model that draws
    one random value per batch stays correct.
    """

    wraps_model = True

    def __init__(self, model: nn.Module, draws: int) -> None:
        super().__init__()
        self.model = model
        self.draws = draws
        #: (data pointer of the last output, per-draw predictions of shape (draws, N)): lets an attack
        #: judge success on the mean over draws (:func:`~neurorobust.attacks.base.draw_correct`)
        self.last_draws: tuple[int, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = self.model(x)
        preds = [total.detach().argmax(dim=-1)]
        for _ in range(self.draws - 1):
            out = self.model(x)
            preds.append(out.detach().argmax(dim=-1))
            total = total + out
        mean = total / self.draws
        self.last_draws = (mean.data_ptr(), torch.stack(preds))
        return mean


class BPDAModel(nn.Module):
    r"""Backward pass differentiable approximation (straight-through).

    .. math::

        \tilde f(x) = g(x) + \operatorname{stopgrad}\big(f(x) - g(x)\big)

    The forward value is the real model's :math:`f(x)`; the gradient is the surrogate's
    :math:`\nabla_x g(x)`. When the model declares ``bpda_surrogate_values = True`` (its surrogate
    has the same arg-max, e.g. rescaled logits) the value is :math:`g(x)` as well, so that a loss on
    saturated logits does not zero the gradient before it reaches :math:`\nabla_x g`.
    """

    wraps_model = True

    def __init__(self, model: nn.Module, surrogate: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.surrogate = surrogate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.surrogate(x)
        if getattr(self.model, "bpda_surrogate_values", False):
            return s
        with torch.no_grad():
            real = self.model(x)
        return s + (real - s).detach()


class _Wrapper(Attack):
    """Shared parts of EOT and BPDA: bounded-ness and norm follow the inner attack."""

    chunkable = False  # delegates (or pairs samples across the batch)

    def _adopt(self, attack: Attack) -> None:
        self.bounded = attack.bounded
        self.norm = attack.norm
        self.within_eps = attack.within_eps  # type: ignore[misc]

    def budget(self, eps: float | None) -> float | None:
        """The inner attack's projection radius (an eps-sized-step attack keeps its larger one)."""
        return self.attack.budget(eps)

    def _inner_run(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        eps: float | None,
        generator: torch.Generator,
        query_factor: int = 1,
    ) -> torch.Tensor:
        res = self.attack(model, x, y, eps=eps, generator=generator)
        if not isinstance(res, AttackResult):
            raise InvalidParameterError("attack", type(self).__name__, "an attack that returns an AttackResult", res)
        self._add_queries(res.queries * query_factor)
        self._extra.update(res.extra)
        return res.x_adv


class EOT(_Wrapper):
    r"""Run ``attack`` against :class:`EOTModel` (the mean of ``draws`` stochastic forward passes).

    .. math::

        \nabla_x \mathbb{E}_\omega\, f(x; \omega) \approx \nabla_x \frac{1}{n}\sum_{i=1}^{n} f(x; \omega_i)

    Any gradient attack becomes an EOT attack: every forward pass it makes is the mean logits of
    ``draws`` draws, so its loss gradient averages the draws' logit Jacobians (for a loss
    linear in the logits, e.g. ``"margin"`` within one argmax region, exactly the mean of
    the per-draw loss gradients). Queries count each draw. Success is judged by the base class
    on one draw of the real model; judge stochastic models over many draws in evaluation
    (DESIGN §5.8).

    Parameters
    ----------
    attack : Attack
    draws : int, default=20

    References
    ----------
    Athalye, A., Engstrom, L., Ilyas, A., Kwok, K. (2018). Synthesizing robust adversarial
    examples. ICML. :arxiv:`1707.07397`. Athalye, A., Carlini, N., Wagner, D. (2018).
    Obfuscated gradients give a false sense of security. ICML. :arxiv:`1802.00420`
    """

    key = "eot"
    paper = "Athalye, Engstrom, Ilyas, Kwok 2018, 'Synthesizing Robust Adversarial Examples', ICML, arXiv:1707.07397"
    tags = ("wrapper",)
    constraints: ClassVar[dict[str, Any]] = {"attack": Type(Attack), "draws": Interval(int, 1, None)}

    def __init__(self, *, attack: Attack, draws: int = 20) -> None:
        super().__init__(attack=attack, draws=draws)
        self._adopt(attack)

    def _run(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        eps: float | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        return self._inner_run(EOTModel(model, self.draws), x, y, eps, generator, self.draws)


class BPDA(_Wrapper):
    r"""Run ``attack`` against :class:`BPDAModel`: the real forward pass, the surrogate's gradient.

    .. math::

        \tilde f(x) = g(x) + \operatorname{stopgrad}\big(f(x) - g(x)\big), \qquad
        \nabla_x \tilde f = \nabla_x g

    The surrogate :math:`g` is ``surrogate`` when given, else the model's ``bpda_surrogate()``; a model
    without one raises :class:`~neurorobust.errors.InvalidParameterError`.

    Parameters
    ----------
    attack : Attack
    surrogate : nn.Module or None, default=None

    References
    ----------
    Athalye, A., Carlini, N., Wagner, D. (2018). Obfuscated gradients give a false sense of
    security: circumventing defenses to adversarial examples. ICML. :arxiv:`1802.00420`
    """

    key = "bpda"
    paper = _ATHALYE
    tags = ("wrapper",)
    constraints: ClassVar[dict[str, Any]] = {
        "attack": Type(Attack),
        "surrogate": Type(nn.Module, optional=True),
    }

    def __init__(self, *, attack: Attack, surrogate: nn.Module | None = None) -> None:
        super().__init__(attack=attack, surrogate=surrogate)
        self._adopt(attack)

    def _run(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        eps: float | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        surrogate = self.surrogate if self.surrogate is not None else surrogate_of(model)
        if surrogate is None:
            raise InvalidParameterError(
                "model", "BPDA.__call__", "a model declaring bpda_surrogate() (or BPDA(surrogate=...))", model
            )
        return self._inner_run(BPDAModel(model, surrogate), x, y, eps, generator)


def auto_wrap(attack: Attack, model: nn.Module, *, draws: int = 20) -> Attack:
    """Wrap ``attack`` as the model's declarations require.

    A declared surrogate gives :class:`BPDA`, ``is_stochastic`` gives :class:`EOT` with ``draws``,
    both give ``BPDA(attack=EOT(attack=attack))`` (forward through the real stochastic model,
    gradients through the surrogate, averaged over draws); neither returns ``attack`` unchanged.
    """
    wrapped = attack
    if is_stochastic(model):
        wrapped = EOT(attack=wrapped, draws=draws)
    if callable(getattr(model, "bpda_surrogate", None)):
        wrapped = BPDA(attack=wrapped)
    return wrapped
