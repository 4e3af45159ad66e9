"""Burhanpurkar: the thesis' Tables 1-2 and the fixation, STN and multi-gaze figures.

Everything the foveation report shows is drawn here, from the store (the tables), the experiment's
config and the checkpoint cache's trained networks (the figures); the networks themselves live in
:mod:`neurorobust.mechanisms.foveation`, which knows nothing of reports.

``neurorobust report NAME --figures-to docs/figures`` copies the figures into the docs
(``foveation_caltech10_foveation_fixations.png``, ``foveation_caltech10_pgd20.png``, ...).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...data import balanced_subset, load_dataset
from ...experiments.runner import default_runs_dir, load_trained_variant
from ...experiments.sweep import expand_sweep
from ...mechanisms.foveation import CorticalSampler, RetinalSampler, coarse_size, five_points, fixation_offset
from ...plotting import plt
from ...specs import load_spec
from ...store import ResultsStore
from ..figures import curve_figure
from ..tables import markdown_table
from . import ReportContext, Reporter, ReportItem, register_reporter

__all__ = ["THESIS_TABLES", "FoveationReporter", "paper_tables", "save_figures", "tables_markdown"]

THESIS_TABLES = {
    "Table 1": {
        "standard": [89.2, 79.6, 24.4, 3.0, 0.02, 0.00],
        "coarse": [91.2, 80.8, 16.4, 1.20, 0.01, 0.00],
        "retinal-discrete": [90.0, 82.8, 41.0, 9.0, 0.2, 0.00],
        "cortical": [87.8, 82.0, 42.8, 11.8, 1.00, 0.00],
    },
    "Table 2": {
        "standard": [88.2, 79.6, 24.4, 3.0, 0.2, 0.00],
        "retinal-discrete": [90.0, 82.8, 41.0, 9.0, 0.2, 0.00],
        "retinal-bilinear": [89.8, 85.4, 45.0, 12.6, 0.4, 0.00],
    },
}
"""Burhanpurkar (2021) Tables 1-2 (ImageNet10, 20-step PGD): standard accuracy, then adversarial accuracy (%) at
eps 0.001, 0.005, 0.01, 0.02, 0.05 (images in [0, 1])."""

_GRID = (0.001, 0.005, 0.01, 0.02, 0.05)

#: The report's figure captions, by the figure's file name without ``foveation_`` and ``.png``.
_CAPTIONS = {
    "fixations": "Fixations: retinal (discrete, bilinear), coarse crops, cortical scales, warped checkerboard",
    "stn": "Parallel spatial transformers: glimpse boxes on test images",
    "multigaze": "Multi-gaze: predicted fixation points (x: the initial five)",
}


@register_reporter("foveation", paper="Burhanpurkar, Adversarial robustness via biologically inspired mechanisms")
class FoveationReporter(Reporter):
    """For experiments whose config's model is ``foveated``: Tables 1-2 and the figures of the trained networks."""

    def applies(self, ctx: ReportContext) -> bool:
        return ctx.spec is not None and ctx.spec.model.name == "foveated"

    def items(self, ctx: ReportContext) -> list[ReportItem]:
        """The thesis' Tables 1-2 next to ours (ours only where no claims file maps to the experiment), then
        the fixation, STN-box and multi-gaze figures (:func:`save_figures`, without its accuracy curves,
        which the report draws for every attack). A figure that cannot be drawn (missing data, a checkpoint
        that no longer loads) leaves the tables in place and one table saying why."""
        thesis = bool(ctx.paper_values)  # the thesis' numbers only where a claims file maps to them
        items: list[ReportItem] = [
            ("table", title, (header, body)) for title, header, body in paper_tables(ctx.rows, thesis=thesis)
        ]
        # the runs folder the experiment was trained into: the report's own, else $NEURO_RUNS (or runs/)
        runs_dir = ctx.runs_dir if ctx.runs_dir is not None else default_runs_dir()
        try:
            paths = save_figures(ctx.config, ctx.outdir, prefix="foveation", runs_dir=runs_dir, curves=False)
        except Exception as err:  # the tables above need only the store: keep them and say why figures are missing
            logging.getLogger(__name__).warning("foveation figures skipped: %s", err)
            return [*items, ("table", "Foveation figures skipped", (["reason"], [[f"{type(err).__name__}: {err}"]]))]
        for path in paths:
            kind = Path(path).stem.removeprefix("foveation_")
            items.append(("figure", _CAPTIONS.get(kind, kind), Path(path).name))
        return items


# --------------------------------------------------------------------------------------------- tables


def paper_tables(
    rows: list[dict[str, Any]], attack: str = "pgd20", eps_scale: float = 1.0, *, thesis: bool = True
) -> list[tuple[str, list[str], list[list[str]]]]:
    """Tables 1-2 with ours next to the thesis' (``ours / thesis``) from :func:`~neurorobust.report.build.latest_rows`
    output, plus every other model (ours only): clean and balanced accuracy, adversarial accuracy by eps, mean
    (± sd) over seeds, n and the seed count; as ``(title, header, body)``. The thesis' numbers are shown only
    for ``attack="pgd20"`` (its tables are 20-step L-inf PGD) and ``thesis=True`` (``False`` for experiments
    the thesis has no numbers for, e.g. CIFAR-10: every model then goes in one table of ours). ``eps_scale``
    maps the grid to the stored eps (L2 attacks: the grid times sqrt(input dimension))."""

    def cell(model: str, att: str, metric: str, eps: float | None) -> tuple[float | None, dict[str, Any]]:
        for r in rows:
            same_eps = (eps is None and r["eps"] is None) or (
                eps is not None and r["eps"] is not None and abs(r["eps"] - eps) < 1e-6 * max(1.0, eps)
            )
            if r["model"] == model and r["attack"] == att and r["metric"] == metric and same_eps:
                return r["value"], r
        return None, {}

    def fmt(v: float | None, r: dict[str, Any]) -> str:
        if v is None:
            return "—"
        sd = r.get("params", {}).get("sd")
        return f"{100 * v:.1f}" + (f" ± {100 * sd:.1f}" if sd else "")

    def row(model: str, paper: list[float] | None) -> list[str]:
        clean, r0 = cell(model, "clean", "accuracy", None)
        bal, rb = cell(model, "clean", "balanced_accuracy", None)
        cells = [fmt(clean, r0) + (f" / {paper[0]:g}" if paper else ""), fmt(bal, rb)]
        n = seeds = "—"
        for k, e in enumerate(_GRID):
            v, r = cell(model, attack, "accuracy", e * eps_scale)
            cells.append(fmt(v, r) + (f" / {paper[k + 1]:g}" if paper else ""))
            if r:
                n, seeds = str(r["n"]), str(r.get("params", {}).get("seeds", 1))
        return [model, *cells, n, seeds]

    header = ["model", "clean", "balanced", *[f"eps {e:g}" for e in _GRID], "n", "seeds"]
    models = sorted({r["model"] for r in rows if r["attack"] == attack})
    compare = attack == "pgd20" and thesis
    out = []
    for title, table in THESIS_TABLES.items() if compare else ():
        present = [(m, paper) for m, paper in table.items() if m in models]
        if present:
            out.append((f"{title} (ours / thesis, %; {attack})", header, [row(m, p) for m, p in present]))
    others = [m for m in models if not compare or not any(m in t for t in THESIS_TABLES.values())]
    if others:
        title = f"{'Other models' if compare else 'All models'} (ours only, %; {attack})"
        out.append((title, header, [row(m, None) for m in others]))
    return out


def tables_markdown(
    experiment: str,
    store: str | Path | None = None,
    attack: str = "pgd20",
    eps_scale: float = 1.0,
    thesis: bool | None = None,
) -> str:
    """Markdown of :func:`paper_tables` for ``experiment`` read from the store (default: the user's store);
    ``thesis`` defaults to whether a claims file maps to the experiment (caltech10 yes, CIFAR-10 no)."""
    from ..build import latest_rows, paper_values  # report.build imports this package: not at the top

    if thesis is None:
        thesis = bool(paper_values(experiment))
    with ResultsStore(store) as st:
        rows = latest_rows(st.results(experiment=experiment, done_only=True))
    out = []
    for title, header, body in paper_tables(rows, attack, eps_scale, thesis=thesis):
        out += [f"**{title}**\n", markdown_table(header, body), ""]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------- figures


def save_figures(
    config: str | Path,
    out_dir: str | Path,
    *,
    prefix: str = "foveation",
    runs_dir: str | Path | None = None,
    store: str | Path | None = None,
    n_images: int = 4,
    curves: bool = True,
) -> list[str]:
    """The figures of an experiment config (``configs/foveation_*.toml``); returns the files written.

    ``<prefix>_fixations.png``: five retinal fixations (discrete and bilinear), the coarse crops and
    the cortical scales of a test image, and a checkerboard warped both ways (thesis Fig. 8);
    ``<prefix>_stn.png`` and ``<prefix>_multigaze.png``: the boxes of the trained transformers and the
    predicted gazes on test images (when those networks are in the checkpoint cache of ``runs_dir``,
    default :func:`~neurorobust.experiments.runner.default_runs_dir`); ``<prefix>_pgd20.png`` and
    ``<prefix>_pgd5.png``: adversarial accuracy vs eps from the store (unless ``curves=False``).
    """
    spec = load_spec(config)
    data = load_dataset(spec.data.name, spec.data.data_dir)
    x = data.x_test[balanced_subset(data.y_test, 10, seed=0)[:n_images]]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [_save(_fixations_figure(x[:1]), out / f"{prefix}_fixations.png")]

    labels = {v.spec.label for v in expand_sweep(spec) if v.spec.seed == 0}

    def trained(label: str) -> nn.Module | None:  # seed 0 of a variant the config has, if trained
        return load_trained_variant(spec, label, runs_dir=runs_dir, required=False) if label in labels else None

    stn = [(label, net) for label in ("stn-affine", "stn-attention") if (net := trained(label)) is not None]
    if stn:
        written.append(_save(_stn_figure(stn, x), out / f"{prefix}_stn.png"))
    gaze_net = trained("multigaze")
    if gaze_net is not None:
        written.append(_save(_multigaze_figure(gaze_net, x), out / f"{prefix}_multigaze.png"))

    if curves:  # adversarial accuracy vs eps, from the store
        from ..build import latest_rows  # report.build imports this package: not at the top

        with ResultsStore(store) as st:
            rows = latest_rows(st.results(experiment=spec.name, done_only=True))
        for attack in ("pgd20", "pgd5"):
            done = curve_figure(rows, attack, out / f"{prefix}_{attack}.png")
            if done is not None:
                written.append(str(done))
    return written


def _save(fig: Any, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return str(path)


def _show(ax: Any, img: torch.Tensor) -> None:
    ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy())
    ax.axis("off")


def _fixations_figure(img: torch.Tensor) -> Any:
    """One test image's five retinal fixations, coarse crops and cortical scales, and a warped checkerboard."""
    size = img.shape[-1]
    g_ret, g_coarse, g_cort = (fixation_offset(f, size) for f in ("retinal", "coarse", "cortical"))
    pts = five_points(g_ret)
    rows = 4
    fig, axes = plt.subplots(rows, 6, figsize=(13, 2.3 * rows), dpi=90)
    _show(axes[0][0], img[0])
    axes[0][0].set_title("test image, 5 points", fontsize=8)
    c = (size - 1) / 2
    axes[0][0].scatter(c + pts[:, 1], c + pts[:, 0], c="red", s=12)
    for row, sampling in ((0, "discrete"), (1, "bilinear")):
        sampler = RetinalSampler(size, sampling)
        for k in range(5):
            ax = axes[row][k + 1]
            _show(ax, sampler(img, pts[k : k + 1])[0])
            ax.set_title(f"retinal {sampling} {tuple(int(v) for v in pts[k].tolist())}", fontsize=7)
    crop = coarse_size(size)
    _show(axes[1][0], img[0])
    for p in five_points(g_coarse).tolist():
        top, left = (size - crop) / 2 + p[0], (size - crop) / 2 + p[1]
        axes[1][0].add_patch(plt.Rectangle((left - 0.5, top - 0.5), crop, crop, fill=False, ec="yellow", lw=0.8))
    axes[1][0].set_title(f"coarse crops ({crop} px)", fontsize=8)
    cort = CorticalSampler(size)
    scales = cort(img, [0, 0])
    _show(axes[2][0], img[0])
    axes[2][0].set_title(f"cortical crops at (0, 0), offset {g_cort}", fontsize=8)
    for side in cort.sides:
        axes[2][0].add_patch(
            plt.Rectangle(((size - side) / 2 - 0.5, (size - side) / 2 - 0.5), side, side, fill=False, ec="cyan", lw=0.8)
        )
    for k, s in enumerate(scales):
        _show(axes[2][k + 1], s[0])
        axes[2][k + 1].set_title(f"scale {cort.sides[k]} px / r={cort.radii[k]}", fontsize=7)
    for k in range(len(scales) + 1, 6):
        axes[2][k].axis("off")
    board = ((torch.arange(size)[:, None] // 8 + torch.arange(size)[None, :] // 8) % 2).float()
    board = board.expand(1, 3, size, size)
    gaze = torch.tensor([[-float(g_ret), float(g_ret)]])
    _show(axes[3][0], board[0])
    axes[3][0].scatter([c + g_ret], [c - g_ret], c="red", s=12)
    axes[3][0].set_title("checkerboard, gaze", fontsize=8)
    for k, sampling in enumerate(("discrete", "bilinear")):
        _show(axes[3][k + 1], RetinalSampler(size, sampling)(board, gaze)[0])
        axes[3][k + 1].set_title(f"retinal {sampling}", fontsize=8)
    for k in range(3, 6):
        axes[3][k].axis("off")
    return fig


def _stn_figure(nets: list[tuple[str, nn.Module]], x: torch.Tensor) -> Any:
    """The glimpse boxes of each trained transformer network on the test images ``x``."""
    from matplotlib.patches import Polygon

    size = x.shape[-1]
    fig, axes = plt.subplots(len(nets), len(x), figsize=(2.6 * len(x), 2.7 * len(nets)), dpi=90, squeeze=False)
    corners = torch.tensor([[-1.0, -1.0, 1.0], [1.0, -1.0, 1.0], [1.0, 1.0, 1.0], [-1.0, 1.0, 1.0]])
    for r, (label, net) in enumerate(nets):
        with torch.no_grad():
            theta = net.thetas(x)  # type: ignore[operator]
        for i in range(len(x)):
            ax = axes[r][i]
            _show(ax, x[i])
            for k in range(theta.shape[1]):
                xy = corners @ theta[i, k].T  # normalised (x, y) of the glimpse's corners
                pix = (xy + 1) * size / 2 - 0.5
                ax.add_patch(Polygon(pix.numpy(), closed=True, fill=False, ec=f"C{k}", lw=1))
            ax.set_title(f"{label}", fontsize=8)
    return fig


def _multigaze_figure(net: nn.Module, x: torch.Tensor) -> Any:
    """The trained multi-gaze network's gaze points on the test images ``x`` (x: the five initial points)."""
    size = x.shape[-1]
    c = (size - 1) / 2
    pts = five_points(fixation_offset("retinal", size))
    with torch.no_grad():
        gz = net.gaze(x)  # type: ignore[operator]
    fig, axes = plt.subplots(1, len(x), figsize=(2.6 * len(x), 2.8), dpi=90, squeeze=False)
    for i in range(len(x)):
        ax = axes[0][i]
        _show(ax, x[i])
        ax.scatter(c + gz[i, :, 1], c + gz[i, :, 0], c=[f"C{k}" for k in range(gz.shape[1])], s=18)
        ax.scatter(c + pts[:, 1], c + pts[:, 0], marker="x", c="white", s=10, lw=0.6)
        ax.set_title("multi-gaze (x: initial)", fontsize=8)
    return fig
