"""Evaluation: metrics, the attack suites, and the gradient-masking checklist (DESIGN §5)."""

from . import metrics

__all__ = ["metrics"]
