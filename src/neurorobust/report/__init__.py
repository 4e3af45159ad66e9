"""Reports built only from the results store: matplotlib figures, Markdown and static HTML."""

from .build import build_report, latest_rows

__all__ = ["build_report", "latest_rows"]
