"""Holzhausen et al.: representation spectra (alpha) and robustness against alpha.

Everything drawn here comes from stored rows (the alpha rows of
:func:`~neurorobust.mechanisms.spectra.alpha_rows` hold the normalised spectrum) or from a model
handed in: :func:`plot_spectra` (also what ``neurorobust spectrum`` draws), :func:`plot_weights`
(the hidden units' synapses of a ``kh_net`` / ``shlp``), and the report's section,
:func:`report_items` = the alpha table (:func:`alpha_table`) and the figures of
:func:`report_figures` (``spectra.png``, ``alpha_robustness.png``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from ...errors import InvalidParameterError
from ...mechanisms.spectra import ZERO, PowerLawFit, SpectrumResult
from ...plotting import plt
from ..tables import mean_sd_text
from . import ReportContext, Reporter, ReportItem, register_reporter

__all__ = ["HebbianReporter", "alpha_table", "plot_spectra", "plot_weights", "report_figures", "report_items"]

_Key = tuple[str, str, float | None]  # (attack, metric, eps)
_ALPHA: _Key = ("spectrum", "alpha", None)


@register_reporter("hebbian", paper="Holzhausen et al. (Krotov & Hopfield 2019 learning rule)")
class HebbianReporter(Reporter):
    """Spectra, alpha table and robustness against alpha, for experiments with ``spectrum`` rows."""

    def applies(self, ctx: ReportContext) -> bool:
        return any(r["attack"] == "spectrum" for r in ctx.rows)

    def items(self, ctx: ReportContext) -> list[ReportItem]:
        return report_items(ctx.raw_rows, ctx.outdir)


# --------------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------------
def plot_spectra(
    spectra: Mapping[str, SpectrumResult | tuple[Sequence[float], PowerLawFit]], path: str | Path, *, title: str = ""
) -> Path:
    """Log-log lambda_n / lambda_1 against n, one curve per label, each with its fitted line (dashed,
    over the fitted ranks) and a 1/n reference."""
    fig, ax = plt.subplots(figsize=(5.8, 4.2), dpi=110)
    for i, (label, item) in enumerate(spectra.items()):
        if isinstance(item, SpectrumResult):
            values, fit = item.normalised().tolist(), item.fit
        else:
            values, fit = list(item[0]), item[1]
        n = [j + 1 for j, v in enumerate(values) if v > ZERO]  # numerically zero eigenvalues are not drawn
        color = f"C{i % 10}"
        ax.loglog(n, [values[j - 1] for j in n], color=color, lw=1.2, label=f"{label}: alpha = {fit.alpha:.2f}")
        lo, hi = fit.ranks
        xs = [lo, hi]
        ax.loglog(xs, [math.exp(fit.intercept) * r ** (-fit.alpha) for r in xs], color=color, ls="--", lw=1.5)
    ax.loglog([1, 1000], [1, 1e-3], color="grey", ls=":", lw=1, label="1/n")
    ax.set_xlabel("rank n")
    ax.set_ylabel("lambda_n / lambda_1")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    ax.set_title(title or "covariance spectra (dashed: fit over the fitted ranks)")
    fig.tight_layout()
    return _save(fig, path)


def plot_weights(model: nn.Module, path: str | Path, *, rows: int = 5, cols: int = 10, title: str = "") -> Path:
    """Draw the first ``rows x cols`` units' synapses of a ``kh_net`` (or the hidden weights of a
    ``shlp``) as images, blue-white-red with a symmetric scale per unit."""
    layer = getattr(model, "hidden", None)
    weight = getattr(layer, "weight", None)
    shape = getattr(model, "input_shape", None)
    if weight is None or shape is None:
        raise InvalidParameterError("model", "plot_weights", "a kh_net or shlp model", model)
    c, h, w = shape
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.9, rows * 0.9 + 0.4), dpi=100, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= weight.shape[0]:
            continue
        img = weight[i].detach().cpu().reshape(c, h, w)
        if c == 1:
            scale = float(img.abs().max()) or 1.0
            ax.imshow(img[0].numpy(), cmap="bwr", vmin=-scale, vmax=scale)
        else:  # colour: min-max per unit, as the authors draw theirs
            img = img.permute(1, 2, 0)
            ax.imshow(((img - img.min()) / max(float(img.max() - img.min()), 1e-12)).numpy())
    fig.suptitle(title or "hidden units' synapses", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------------
# The report's section
# --------------------------------------------------------------------------------------------------
def _per_seed(rows: list[dict[str, Any]]) -> dict[tuple[str, int | None], dict[_Key, dict[str, Any]]]:
    """(model, seed) -> (attack, metric, eps) -> the latest row."""
    out: dict[tuple[str, int | None], dict[_Key, dict[str, Any]]] = {}
    for r in rows:
        cell = out.setdefault((r["model"], r["seed"]), {})
        key = (r["attack"], r["metric"], r["eps"])
        if key not in cell or r["run_id"] >= cell[key]["run_id"]:
            cell[key] = r
    return out


def report_figures(rows: list[dict[str, Any]], outdir: str | Path) -> list[tuple[str, Path]]:
    """Figures for a report from stored rows (every seed): the spectra with their fitted lines (the
    lowest seed of each model), and clean and worst-case robust accuracy against alpha (one point
    per model and seed, one panel per eps). Empty when no ``spectrum`` rows are present."""
    with_alpha = {k: v for k, v in _per_seed(rows).items() if _ALPHA in v}
    if not with_alpha:
        return []
    outdir = Path(outdir)
    figures: list[tuple[str, Path]] = []
    first: dict[str, tuple[int | None, dict[str, Any]]] = {}
    for (model, seed), cell in sorted(with_alpha.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
        first.setdefault(model, (seed, cell[_ALPHA]))
    curves = {}
    for model, (_seed, row) in first.items():
        p = row["params"]
        if p.get("spectrum"):
            fit = PowerLawFit(
                row["value"],
                p.get("alpha_se", float("nan")),
                p.get("intercept", 0.0),
                p.get("r2", 0.0),
                tuple(p["ranks"]),
                0,
            )
            curves[model] = (p["spectrum"], fit)
    if curves:
        figures.append(
            ("Covariance spectra of the hidden pre-activations", plot_spectra(curves, outdir / "spectra.png"))
        )
    eps_values = sorted(
        {k[2] for cell in with_alpha.values() for k in cell if k[0] == "worst-case" and k[2] is not None}
    )
    panels: list[tuple[str, _Key]] = [("clean accuracy", ("clean", "accuracy", None))]
    panels += [(f"worst case, eps = {e:g}", ("worst-case", "accuracy", e)) for e in eps_values[:4]]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.3), dpi=110, squeeze=False)
    models = sorted({m for m, _ in with_alpha})
    for ax, (title, key) in zip(axes[0], panels, strict=True):
        for i, model in enumerate(models):
            pts = [
                (cell[_ALPHA]["value"], 100 * cell[key]["value"])
                for (m, _s), cell in with_alpha.items()
                if m == model and key in cell and cell[key]["value"] is not None
            ]
            if pts:
                ax.scatter(*zip(*pts, strict=True), color=f"C{i % 10}", s=22, label=model)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("alpha")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy (%)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=min(4, max(1, len(labels))))
    fig.tight_layout(rect=(0, 0.08 + 0.04 * (len(labels) // 4), 1, 1))
    path = _save(fig, outdir / "alpha_robustness.png")
    figures.append(("Clean and worst-case robust accuracy against alpha (every model and seed)", path))
    return figures


def alpha_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]] | None:
    """Per model: seeds, alpha (mean ± sd over seeds), the fit's standard error, clean and worst-case
    robust accuracy (%) at every eps, and the masking verdicts; ``None`` without spectrum rows."""
    cells = {k: v for k, v in _per_seed(rows).items() if _ALPHA in v}
    if not cells:
        return None
    eps_values = sorted({k[2] for cell in cells.values() for k in cell if k[0] == "worst-case" and k[2] is not None})
    header = ["model", "seeds", "alpha", "fit se", "clean acc (%)"] + [f"worst case eps={e:g} (%)" for e in eps_values]
    header.append("verdict")
    body = []
    for model in sorted({m for m, _ in cells}):
        seeds = [cell for (m, _s), cell in cells.items() if m == model]

        def values(key: _Key, of: list[dict[_Key, dict[str, Any]]] = seeds) -> list[float]:
            return [c[key]["value"] for c in of if key in c and c[key]["value"] is not None]

        verdicts = sorted(
            {
                c[("checklist", "masking_suspected", None)]["params"].get("verdict", "")
                for c in seeds
                if ("checklist", "masking_suspected", None) in c
            }
        )
        body.append(
            [
                model,
                str(len(seeds)),
                mean_sd_text(values(_ALPHA)),
                mean_sd_text(values(("spectrum", "alpha_fit_se", None))),
                mean_sd_text(values(("clean", "accuracy", None)), digits=1, scale=100.0),
            ]
            + [mean_sd_text(values(("worst-case", "accuracy", e)), digits=1, scale=100.0) for e in eps_values]
            + ["; ".join(verdicts) or "—"]
        )
    return header, body


def report_items(rows: list[dict[str, Any]], outdir: str | Path) -> list[ReportItem]:
    """The report's spectrum section, as ``(kind, title, payload)`` items: the alpha table and the
    figures of :func:`report_figures` (file names relative to ``outdir``)."""
    items: list[ReportItem] = []
    table = alpha_table(rows)
    if table is not None:
        items.append(("table", "Alpha of the hidden pre-activations, clean and worst-case robust accuracy", table))
    items += [("figure", title, path.name) for title, path in report_figures(rows, outdir)]
    return items
