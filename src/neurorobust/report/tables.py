"""Text helpers every report uses: Markdown and HTML tables, percentages, mean ± sd over seeds."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

from ..evaluation.metrics import mean_sd

__all__ = ["html_table", "markdown_table", "mean_sd_text", "pct"]


def markdown_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table (cells are used as given)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def html_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    """An HTML table with every cell escaped."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def pct(v: float | None) -> str:
    """A fraction as a percentage with two decimals; ``—`` for a missing value."""
    return "—" if v is None else f"{100 * v:.2f}"


def mean_sd_text(values: Sequence[float], *, digits: int = 3, scale: float = 1.0, sd_digits: int | None = None) -> str:
    """``mean ± sd`` over seeds (``mean`` alone for one value, ``—`` for none), each value times ``scale``.

    Infinite or NaN values follow :func:`~neurorobust.evaluation.metrics.mean_sd`: the mean is shown
    as it is (``inf``/``nan``) and the undefined sd is left out.
    """
    if not values:
        return "—"
    mean, sd = mean_sd([scale * v for v in values])
    sd_digits = digits if sd_digits is None else sd_digits
    shown = f"{mean:.{digits}g}" if not math.isfinite(mean) else f"{mean:.{digits}f}"
    if len(values) > 1 and math.isfinite(sd):
        shown += f" ± {sd:.{sd_digits}f}"
    return shown
