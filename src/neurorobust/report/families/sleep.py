"""Tadros et al. 2020: sleep's weight histograms (to be moved here from report/weights.py)."""

from __future__ import annotations

from . import ReportContext, Reporter, ReportItem, register_reporter


@register_reporter("sleep", paper="Tadros, Krishnan, Ramyaa & Bazhenov, ICLR 2020")
class SleepReporter(Reporter):
    """Weight histograms before and after sleep."""

    def applies(self, ctx: ReportContext) -> bool:
        return False

    def items(self, ctx: ReportContext) -> list[ReportItem]:
        return []
