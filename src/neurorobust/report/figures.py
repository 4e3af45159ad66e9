"""Matplotlib figures: accuracy against a perturbation strength, one line per model."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from ..plotting import plt  # the Agg backend: files only, never a window

__all__ = ["curve_figure", "weight_histogram_figure"]

_XLABEL = {"noise": "Gaussian noise sigma", "blur": "Gaussian blur sigma"}


def distinct_styles() -> Any:
    """A property cycle of 40 distinct (line style, colour) pairs: ten colours solid, then dashed, dotted, dash-dot,
    so that a sweep's many variants do not share a look (matplotlib's default repeats after ten)."""
    from cycler import cycler

    return cycler(linestyle=["-", "--", ":", "-."]) * cycler(color=plt.get_cmap("tab10").colors)


def save_with_legend(
    fig: Any, ax: Any, path: Path, n_series: int, *, fontsize: float = 8, beside_fontsize: float = 6
) -> None:
    """Save ``fig`` to ``path`` with ``ax``'s legend inside the axes for up to 8 series, else beside them
    (a sweep's dozens of variants: the axes keep their size and the figure widens)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if n_series <= 8:
        ax.legend(fontsize=fontsize)
        fig.tight_layout()
        fig.savefig(path)
    else:
        ax.legend(fontsize=beside_fontsize, loc="upper left", bbox_to_anchor=(1.01, 1.0), ncol=1 + n_series // 25)
        fig.savefig(path, bbox_inches="tight")


def curve_figure(rows: list[dict[str, Any]], attack: str, path: Path, *, metric: str = "accuracy") -> Path | None:
    """Plot ``metric`` against ``eps`` for every model in ``rows`` of ``attack``; ``None`` if nothing to plot.

    The shaded band is the 95% Wilson interval stored with each row.
    """
    series: dict[str, list[tuple[float, float, float, float]]] = defaultdict(list)
    for r in rows:
        if r["attack"] == attack and r["metric"] == metric and r["eps"] is not None and r["value"] is not None:
            lo, hi = r["params"].get("ci95", [r["value"], r["value"]])
            series[r["model"]].append((r["eps"], r["value"], lo, hi))
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=110)
    ax.set_prop_cycle(distinct_styles())
    for model, pts in sorted(series.items()):
        pts.sort()
        xs, ys, los, his = zip(*pts, strict=True)
        ax.plot(xs, [100 * v for v in ys], marker="o", ms=3, label=model)
        ax.fill_between(xs, [100 * v for v in los], [100 * v for v in his], alpha=0.15)
    ax.set_xlabel(_XLABEL.get(attack, f"{attack} eps"))
    ax.set_ylabel(f"{metric.replace('_', ' ')} (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.set_title(f"{attack}: {metric.replace('_', ' ')} vs strength")
    save_with_legend(fig, ax, path, len(series))
    plt.close(fig)
    return path


def weight_histogram_figure(weights: dict[str, list[Any]], path: Path, *, bins: int = 120) -> Path:
    """One panel per weight layer, one histogram per model (e.g. before and after sleep), log counts.

    ``weights`` maps a model label to its weight tensors (or arrays), input layer first.
    """
    import numpy as np

    n_layers = max(len(ws) for ws in weights.values())
    fig, axes = plt.subplots(1, n_layers, figsize=(4.2 * n_layers, 3.4), dpi=110, squeeze=False)
    for layer in range(n_layers):
        ax = axes[0][layer]
        values = {m: np.asarray(ws[layer]).ravel() for m, ws in weights.items() if layer < len(ws)}
        lo = min(float(v.min()) for v in values.values())
        hi = max(float(v.max()) for v in values.values())
        edges = np.linspace(lo, hi, bins + 1)
        for model, v in values.items():
            ax.hist(v, bins=edges, histtype="step", label=model, log=True)
        ax.set_title(f"layer {layer + 1} weights")
        ax.set_xlabel("weight")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("count (log)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
