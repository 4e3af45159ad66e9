"""Kubo (PhD thesis, 2019): stochastic neurons (ch. 3) and SGBN gates (ch. 4)."""

from __future__ import annotations

from . import ReportContext, Reporter, ReportItem, register_reporter


@register_reporter("stochastic", paper="Kubo, Learning stochastic weight masking to resist adversarial attacks, 2019")
class StochasticReporter(Reporter):
    """The thesis' tables next to ours (to be moved here from mechanisms/stochastic.py)."""

    def applies(self, ctx: ReportContext) -> bool:
        return False

    def items(self, ctx: ReportContext) -> list[ReportItem]:
        return []
