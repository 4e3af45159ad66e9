"""Holzhausen et al.: representation spectra (alpha) and robustness against alpha.

Everything drawn here comes from stored rows (the alpha rows of
:func:`~neurorobust.mechanisms.spectra.alpha_rows` hold the normalised spectrum) or from a model
handed in: :func:`plot_spectra` (also what ``neurorobust spectrum`` draws), :func:`plot_weights`
(the hidden units' synapses of a ``kh_net`` / ``shlp``), and the report's section,
:func:`report_items` = the alpha table (:func:`alpha_table`), the Krotov-Hopfield layer's convergence
and the verdict it allows on "alpha near 1" (:func:`convergence_table`), the authors' attack protocol
(:func:`authors_tables`: FGSM and PGD-20 sweeps, relative accuracy, the noise sweep, the median
||dx||_2 at each image's first fooling eps) and the figures of :func:`report_figures`
(``spectra.png``, ``alpha_robustness.png``).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from ...errors import InvalidParameterError
from ...mechanisms.spectra import ZERO, PowerLawFit, SpectrumResult
from ...plotting import plt
from ..tables import mean_sd_text
from . import ReportContext, Reporter, ReportItem, register_reporter

__all__ = [
    "AUTHORS_ATTACKS",
    "HebbianReporter",
    "alpha_table",
    "authors_tables",
    "convergence_table",
    "plot_spectra",
    "plot_weights",
    "report_figures",
    "report_items",
]

_Key = tuple[str, str, float | None]  # (attack, metric, eps)
_ALPHA: _Key = ("spectrum", "alpha", None)
_GAUSSIAN_ALPHA: _Key = ("spectrum-gaussian", "alpha", None)
_CONVERGED: _Key = ("kh-convergence", "converged_fraction", None)
_LAYER_CONVERGED: _Key = ("kh-convergence", "layer_converged", None)
_CLEAN: _Key = ("clean", "accuracy", None)
#: The attack labels of the authors' protocol rows (configs/hebbian_*.toml) and their names in the report.
AUTHORS_ATTACKS = {"fgsm-authors": "FGSM", "pgd20-authors": "PGD-20"}
#: The label of FGSM's first fooling eps per image (``fgsm-min``), whose median ||dx||_2 the authors report.
FIRST_FOOLING = "fgsm-min-authors"
#: Epochs shown in the convergence table's per-epoch cell (those within the run, and always its last).
_SHOWN_EPOCHS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


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
    """Per model: seeds, alpha (mean ± sd over seeds), the fit's standard error, alpha on N(0, 1) images
    (when measured), clean and worst-case robust accuracy (%) at every eps, and the masking verdicts;
    ``None`` without spectrum rows."""
    cells = {k: v for k, v in _per_seed(rows).items() if _ALPHA in v}
    if not cells:
        return None
    eps_values = sorted({k[2] for cell in cells.values() for k in cell if k[0] == "worst-case" and k[2] is not None})
    gaussian = any(_GAUSSIAN_ALPHA in cell for cell in cells.values())
    header = ["model", "seeds", "alpha", "fit se"] + (["alpha N(0, 1)"] if gaussian else []) + ["clean acc (%)"]
    header += [f"worst case eps={e:g} (%)" for e in eps_values]
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
            ]
            + ([mean_sd_text(values(_GAUSSIAN_ALPHA))] if gaussian else [])
            + [mean_sd_text(values(_CLEAN), digits=1, scale=100.0)]
            + [mean_sd_text(values(("worst-case", "accuracy", e)), digits=1, scale=100.0) for e in eps_values]
            + ["; ".join(verdicts) or "—"]
        )
    return header, body


def convergence_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]] | None:
    """Per model with a Krotov-Hopfield layer: seeds, its unsupervised epochs, the fraction of units on
    the sphere after the last epoch (%, mean ± sd over seeds), whether the layer converged by the
    authors' criterion (every seed: more than 90% of units within 0.01 of R), the fraction after
    some epochs (mean over seeds), alpha on test and on N(0, 1) images, and what may be said of
    "alpha near 1": not judged while any seed's layer has not converged. ``None`` without
    ``kh-convergence`` rows."""
    cells = {k: v for k, v in _per_seed(rows).items() if _CONVERGED in v}
    if not cells:
        return None
    header = [
        "model",
        "seeds",
        "KH epochs",
        "converged units, last epoch (%)",
        "layer converged (> 90%)",
        "converged units by epoch (%)",
        "alpha",
        "alpha N(0, 1)",
        "alpha near 1",
    ]
    body = []
    for model in sorted({m for m, _ in cells}):
        seeds = [cell for (m, _s), cell in cells.items() if m == model]
        fractions = [c[_CONVERGED]["value"] for c in seeds]
        params = [c[_CONVERGED]["params"] for c in seeds]
        epochs = sorted({p.get("epochs") for p in params}, key=str)
        passed = [c[_LAYER_CONVERGED]["value"] >= 0.5 for c in seeds if _LAYER_CONVERGED in c]
        verdict = "yes" if passed and all(passed) else "no" if passed else "—"
        if len(passed) > 1 and 0 < sum(passed) < len(passed):
            verdict = f"{sum(passed)} of {len(passed)} seeds"
        histories = [p.get("history") or [] for p in params]
        by_epoch = "— (not kept: a checkpoint older than the history)"
        if all(histories) and len({len(h) for h in histories}) == 1:
            n = len(histories[0])
            shown = sorted({e for e in _SHOWN_EPOCHS if e <= n} | {n})
            by_epoch = ", ".join(f"{e}: {100 * statistics.mean(h[e - 1] for h in histories):.1f}" for e in shown)
        alphas = [c[_ALPHA]["value"] for c in seeds if _ALPHA in c]
        if passed and all(passed):
            near_one = f"judged on a converged layer: alpha {mean_sd_text(alphas)}"
        else:
            last = "/".join(str(e) for e in epochs)
            near_one = (
                f"not judged: the KH layer has not converged ({mean_sd_text(fractions, digits=1, scale=100.0)}% "
                f"of units at epoch {last}; the authors require more than 90%)"
            )
        body.append(
            [
                model,
                str(len(seeds)),
                "/".join(str(e) for e in epochs),
                mean_sd_text(fractions, digits=1, scale=100.0),
                verdict,
                by_epoch,
                mean_sd_text(alphas),
                mean_sd_text([c[_GAUSSIAN_ALPHA]["value"] for c in seeds if _GAUSSIAN_ALPHA in c]),
                near_one,
            ]
        )
    return header, body


_Table = tuple[list[str], list[list[str]]]
_Cells = dict[tuple[str, int | None], dict[_Key, dict[str, Any]]]


def authors_tables(rows: list[dict[str, Any]]) -> list[tuple[str, _Table]]:
    """The authors' protocol rows as ``(title, (header, body))`` tables; empty without them.

    One table per attack of :data:`AUTHORS_ATTACKS` and one for the Gaussian noise sweep (shown with
    them): per model, the relative accuracy (robust / clean, %) at each eps or sigma, with the
    accuracy (%) in parentheses, each the mean over seeds. For an attack, the relative accuracy is
    the fraction of the clean-correct images it does not fool (1 - ``success_rate``: the authors
    attack only those); for noise, the noisy accuracy over the clean accuracy on the same images. Then
    per model the median ||dx||_2 and the median eps of FGSM's first fooling eps per image
    (:data:`FIRST_FOOLING`), with how many of the clean-correct images it fooled.
    """
    cells = _per_seed(rows)
    attacks = [a for a in AUTHORS_ATTACKS if any(k[0] == a for cell in cells.values() for k in cell)]
    tables = []
    for attack in [*attacks, *(["noise"] if attacks else [])]:
        name, unit = AUTHORS_ATTACKS.get(attack, "Gaussian noise"), "eps" if attack != "noise" else "sigma"
        title = (
            f"The authors' protocol, {name}: relative accuracy (robust / clean, %) and accuracy (%) at their {unit} "
            "in pixel units (their L3-normalised values times the median test-image L3 norm)"
        )
        tables.append((title, _sweep_table(cells, attack, unit)))
    first = _first_fooling_table(cells)
    if first is not None:
        title = (
            "The authors' protocol: median ||dx||_2 (pixel units) of FGSM's adversarial at each image's first "
            "fooling eps, over the images it fools up to their largest eps (fooled / clean-correct)"
        )
        tables.append((title, first))
    return tables


def _sweep_table(cells: _Cells, attack: str, unit: str) -> _Table:
    """Per model with rows of ``attack``: relative accuracy (accuracy) in % at each eps, means over seeds."""
    keys = {k for cell in cells.values() for k in cell if k[:2] == (attack, "accuracy")}
    eps_values = sorted(k[2] for k in keys if k[2] is not None)
    header = ["model", "seeds"] + [f"{unit}={e:.3g}" for e in eps_values]
    body = []
    for model in sorted({m for (m, _s), cell in cells.items() if any(k[0] == attack for k in cell)}):
        seeds = [cell for (m, _s), cell in cells.items() if m == model and any(k[0] == attack for k in cell)]
        row = [model, str(len(seeds))]
        for e in eps_values:
            acc = [c[(attack, "accuracy", e)]["value"] for c in seeds if (attack, "accuracy", e) in c]
            rel = [v for v in (_relative(c, attack, e) for c in seeds) if v is not None]
            row.append(f"{100 * statistics.mean(rel):.1f} ({100 * statistics.mean(acc):.1f})" if rel and acc else "—")
        body.append(row)
    return header, body


def _relative(cell: dict[_Key, dict[str, Any]], attack: str, eps: float) -> float | None:
    """Robust / clean accuracy of one seed: 1 - success rate for an attack (its success rate is over the
    clean-correct images), the noisy over the clean accuracy for noise; ``None`` when not stored."""
    if attack != "noise":
        r = cell.get((attack, "success_rate", eps))
        return None if r is None or r["value"] is None else 1.0 - r["value"]
    noisy, clean = cell.get(("noise", "accuracy", eps)), cell.get(_CLEAN)
    if noisy is None or clean is None or not clean["value"]:
        return None
    return noisy["value"] / clean["value"]


def _first_fooling_table(cells: _Cells) -> _Table | None:
    """Per model: median ||dx||_2 and median eps of :data:`FIRST_FOOLING` (mean ± sd over seeds), and per
    seed the images it fooled out of the clean-correct ones; ``None`` without its rows."""
    l2, eps, rate = ((FIRST_FOOLING, m, None) for m in ("median_l2", "median_min_eps", "success_rate"))
    first = {k: v for k, v in cells.items() if l2 in v}
    if not first:
        return None
    body = []
    for model in sorted({m for m, _ in first}):
        seeds = [cell for (m, _s), cell in first.items() if m == model]
        fooled = [f"{c[l2]['n']}/{c[rate]['n']}" if rate in c else str(c[l2]["n"]) for c in seeds]
        body.append(
            [
                model,
                str(len(seeds)),
                mean_sd_text([c[l2]["value"] for c in seeds if c[l2]["value"] is not None]),
                mean_sd_text([c[eps]["value"] for c in seeds if eps in c and c[eps]["value"] is not None], digits=4),
                ", ".join(fooled),
            ]
        )
    return ["model", "seeds", "median ||dx||_2", "median first fooling eps", "images fooled"], body


def report_items(rows: list[dict[str, Any]], outdir: str | Path) -> list[ReportItem]:
    """The report's spectrum section, as ``(kind, title, payload)`` items: the alpha table, the
    Krotov-Hopfield convergence table, the authors' protocol tables and the figures of
    :func:`report_figures` (file names relative to ``outdir``)."""
    items: list[ReportItem] = []
    table = alpha_table(rows)
    if table is not None:
        items.append(("table", "Alpha of the hidden pre-activations, clean and worst-case robust accuracy", table))
    convergence = convergence_table(rows)
    if convergence is not None:
        items.append(
            (
                "table",
                "Krotov-Hopfield layer: units within 0.01 of the sphere ||W||_p = R after each unsupervised "
                "epoch (the authors' convergence criterion), and what it allows on alpha near 1",
                convergence,
            )
        )
    items += [("table", title, payload) for title, payload in authors_tables(rows)]
    items += [("figure", title, path.name) for title, path in report_figures(rows, outdir)]
    return items
