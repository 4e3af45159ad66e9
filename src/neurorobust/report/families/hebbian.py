"""Holzhausen et al.: representation spectra (alpha) and robustness against alpha."""

from __future__ import annotations

from ...mechanisms.spectra import report_items
from . import ReportContext, Reporter, ReportItem, register_reporter


@register_reporter("hebbian", paper="Holzhausen et al. (Krotov & Hopfield 2019 learning rule)")
class HebbianReporter(Reporter):
    """Spectra, alpha table and robustness against alpha, for experiments with ``spectrum`` rows."""

    def applies(self, ctx: ReportContext) -> bool:
        return any(r["attack"] == "spectrum" for r in ctx.rows)

    def items(self, ctx: ReportContext) -> list[ReportItem]:
        return report_items(ctx.raw_rows, ctx.outdir)
