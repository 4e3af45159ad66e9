"""Burhanpurkar: the thesis' Tables 1-2 and the fixation, STN and multi-gaze figures."""

from __future__ import annotations

from ...mechanisms.foveation import report_items
from . import ReportContext, Reporter, ReportItem, register_reporter


@register_reporter("foveation", paper="Burhanpurkar, Adversarial robustness via biologically inspired mechanisms")
class FoveationReporter(Reporter):
    """For experiments whose config's model is ``foveated``."""

    def applies(self, ctx: ReportContext) -> bool:
        return ctx.spec is not None and ctx.spec.model.name == "foveated"

    def items(self, ctx: ReportContext) -> list[ReportItem]:
        thesis = bool(ctx.paper_values)  # the thesis' numbers only where a claims file maps to them
        return report_items(ctx.config, ctx.rows, ctx.outdir, str(ctx.store.path), thesis=thesis)
