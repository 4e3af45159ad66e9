"""Transfer attack: craft on a source (surrogate) model, evaluate on the target."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import InvalidParameterError
from ..validation import Type
from .base import Attack, AttackResult
from .gradient import PGD

__all__ = ["Transfer"]


class Transfer(Attack):
    r"""Adversarial examples crafted on ``source_model`` by ``attack``, judged on the target model.

    .. math::

        x' = \mathcal{A}(f_{\text{source}}, x, y), \qquad
        \text{success} = [\arg\max_k f_{\text{target},k}(x') \ne y]

    The target model is queried only by the base class's success check, so ``queries`` is 0;
    ``extra["source_success"]`` says whether the example fooled the source model. Bounded
    or minimal, and the norm, follow the inner attack.

    Parameters
    ----------
    source_model : nn.Module
        The surrogate, e.g. a standard model trained on the same data.
    attack : Attack or None, default=None
        The attack run on the surrogate; ``None`` means ``PGD()`` (L∞, 40 steps).

    References
    ----------
    Papernot, N., McDaniel, P., Goodfellow, I. (2016). Transferability in machine learning: from
    phenomena to black-box attacks using adversarial samples. :arxiv:`1605.07277`
    """

    key = "transfer"
    paper = (
        "Papernot, McDaniel, Goodfellow 2016, 'Transferability in Machine Learning: from Phenomena to "
        "Black-Box Attacks using Adversarial Samples', arXiv:1605.07277"
    )
    tags = ("transfer",)
    chunkable = False  # delegates (or pairs samples across the batch)
    constraints: ClassVar[dict[str, Any]] = {
        "source_model": Type(nn.Module),
        "attack": Type(Attack, optional=True),
    }

    def __init__(self, *, source_model: nn.Module, attack: Attack | None = None) -> None:
        super().__init__(source_model=source_model, attack=attack)
        self._inner: Attack = attack if attack is not None else PGD()
        self.bounded = self._inner.bounded
        self.norm = self._inner.norm

    def _run(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        eps: float | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        res = self._inner(self.source_model, x, y, eps=eps, generator=generator)
        if not isinstance(res, AttackResult):
            raise InvalidParameterError("attack", type(self).__name__, "an attack that returns an AttackResult", res)
        self._extra["source_success"] = res.success
        return res.x_adv
