"""Liu, Li & Chen: the cerebellum's width / sparsity / batch sweep tables and figure."""

from __future__ import annotations

from ...mechanisms.cerebellum import parse_sweep_label, sweep_report_items
from . import ReportContext, Reporter, ReportItem, register_reporter


@register_reporter("cerebellum", paper="Liu, Li & Chen, Evaluating adversarial robustness in simulated cerebellum")
class CerebellumReporter(Reporter):
    """The sweep tables, for experiments with at least three sweep-labelled models (width, k, batch)."""

    def applies(self, ctx: ReportContext) -> bool:
        return sum(parse_sweep_label(m) is not None for m in {r["model"] for r in ctx.rows}) >= 3

    def items(self, ctx: ReportContext) -> list[ReportItem]:
        return sweep_report_items(ctx.rows, ctx.outdir, ctx.paper_values)
