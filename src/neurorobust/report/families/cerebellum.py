"""Liu, Li & Chen: the cerebellum's sweep tables and figures, and the paper's tables next to ours.

For an experiment with sweep-labelled models (``configs/cerebellum_mnist_sweeps.toml``: width m, sparsity
k at the synapse budget, batch 50 vs batch 1) the reporter adds three tables, a figure of robust
accuracy at eps 0.1 vs m and vs k (``robust_vs_width_k.png``) and two six-panel figures of accuracy
vs m and vs k under every paper attack with the paper's Table 6 / 7 values dashed
(``accuracy_vs_width.png``, ``accuracy_vs_k.png``). For every experiment that
``claims/cerebellum.toml`` maps claims to, it adds one table per paper table: a row per model, each
cell "ours (paper) mark" with the claims machinery's verdict, plus the relative and textual claims.

``neurorobust report cerebellum_mnist_sweeps --figures-to docs/figures`` copies the figures to
``docs/figures/cerebellum_sweeps_<file>`` for docs/cerebellum.md.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from ...claims import claims_paths, judge, load_claims, ours_for
from ...plotting import plt
from ...specs import canonical_experiment
from . import ReportContext, Reporter, ReportItem, register_reporter

__all__ = [
    "SWEEP_LABEL",
    "CerebellumReporter",
    "accuracy_vs_sweep_figures",
    "paper_table_items",
    "parse_sweep_label",
    "sweep_report_items",
]

#: Labels of ``configs/cerebellum_mnist_sweeps.toml``: "fc m=5000", "rc+ltd k=4 m=50000 b1 (reduced)", ...
SWEEP_LABEL = re.compile(
    r"^(?P<kind>fc|rc)(?P<ltd>\+ltd)? (?:k=(?P<k>\d+) )?m=(?P<m>\d+)(?: b(?P<batch>\d+))?(?: \((?P<tier>[^)]*)\))?$"
)

#: File names of the figures inside the report folder (docs: ``cerebellum_sweeps_<file>``).
SUMMARY_FIGURE = "robust_vs_width_k.png"
WIDTH_FIGURE = "accuracy_vs_width.png"
SPARSITY_FIGURE = "accuracy_vs_k.png"

_SWEEP_COLUMNS = (
    ("clean", None, "clean"),
    ("fgsm", 0.1, "FGSM 0.1"),
    ("pgd-0.01", 0.1, "PGD (0.01) 0.1"),
    ("pgd-0.1", 0.1, "PGD (0.1) 0.1"),
    ("worst-case", 0.1, "worst case 0.1"),
    ("pgd-0.01", 0.3, "PGD (0.01) 0.3"),
)


def parse_sweep_label(label: str) -> dict[str, Any] | None:
    """``{"kind", "ltd", "k", "m", "batch", "tier"}`` of a cerebellum sweep label, or ``None``.

    >>> parse_sweep_label("rc+ltd k=4 m=50000 b1 (reduced)")["k"]
    4
    """
    match = SWEEP_LABEL.match(label)
    if match is None:
        return None
    g = match.groupdict()
    return {
        "kind": g["kind"],
        "ltd": g["ltd"] is not None,
        "k": int(g["k"]) if g["k"] else None,
        "m": int(g["m"]),
        "batch": int(g["batch"]) if g["batch"] else None,
        "tier": g["tier"],
    }


@register_reporter("cerebellum", paper="Liu, Li & Chen, Evaluating adversarial robustness in simulated cerebellum")
class CerebellumReporter(Reporter):
    """Sweep tables and figures (at least three sweep-labelled models: width, k, batch) and the paper's
    tables next to ours (experiments that ``claims/cerebellum.toml`` maps claims to)."""

    def applies(self, ctx: ReportContext) -> bool:
        return _is_sweep(ctx.rows) or bool(_claims_of(self.name, ctx.experiment))

    def items(self, ctx: ReportContext) -> list[ReportItem]:
        items: list[ReportItem] = []
        if _is_sweep(ctx.rows):
            items += sweep_report_items(ctx.rows, ctx.outdir, ctx.paper_values)
            items += accuracy_vs_sweep_figures(ctx.rows, ctx.outdir, ctx.paper_values)
        items += paper_table_items(_claims_of(self.name, ctx.experiment), ctx.rows)
        return items


def _is_sweep(rows: list[dict[str, Any]]) -> bool:
    return sum(parse_sweep_label(m) is not None for m in {r["model"] for r in rows}) >= 3


def _claims_of(family: str, experiment: str) -> list[Any]:
    """The claims of ``claims/<family>.toml`` mapped to ``experiment``."""
    name = canonical_experiment(experiment)
    return [c for p in claims_paths() if p.stem == family for c in load_claims(p).claims if c.experiment == name]


# ------------------------------------------------------------------------------------ sweep tables


def sweep_report_items(
    rows: list[dict[str, Any]], outdir: str | Path, paper: dict[tuple[str, str, float | None], float] | None = None
) -> list[ReportItem]:
    """The report's width / sparsity / batch section for the cerebellum sweeps (Table 6, Fig. 2, Table 7).

    ``rows`` are the report's per-model rows (seeds averaged); ``paper`` maps (model label, attack, eps)
    to the paper's accuracy in % (from ``claims/cerebellum.toml``). Returns ``(kind, title, payload)``
    items: three tables (width m, sparsity k at the synapse budget, batch 50 vs batch 1) and a figure
    of robust accuracy vs m and vs k (:data:`SUMMARY_FIGURE` in ``outdir``); empty when no row has a
    sweep label. Models evaluated with the full suite only ("(..., full suite)") join the batch table.
    """
    paper = paper or {}
    value: dict[tuple[str, str, float | None], float] = {}
    labels: dict[str, dict[str, Any]] = {}
    for r in rows:
        info = parse_sweep_label(r["model"])
        if info is None or r["metric"] != "accuracy" or r["value"] is None:
            continue
        labels[r["model"]] = info
        value[(r["model"], r["attack"], r["eps"])] = 100 * r["value"]
    if not labels:
        return []

    def cell(label: str, attack: str, eps: float | None) -> str:
        ours = value.get((label, attack, eps))
        theirs = paper.get((label, attack, eps))
        text = "—" if ours is None else f"{ours:.1f}"
        return text + (f" / {theirs:g}" if theirs is not None else "")

    header_tail = [name for _, _, name in _SWEEP_COLUMNS]
    items: list[ReportItem] = []
    plain = {lab: i for lab, i in labels.items() if i["batch"] is None and (i["tier"] in (None, "reduced"))}
    width = sorted((i["ltd"], i["m"], lab) for lab, i in plain.items() if i["kind"] == "fc")
    sparse = sorted((i["ltd"], i["k"], lab) for lab, i in plain.items() if i["kind"] == "rc")
    batch = sorted((i["batch"] or 0, i["tier"] or "", lab) for lab, i in labels.items() if i["batch"] is not None)
    note = (
        " (ours / the paper's Table 6 or 7 row of that name; reduced rows are not comparable: fewer epochs, smaller m)"
    )
    if width:
        body = [
            [lab, "yes" if ltd else "no", f"{m:,}"] + [cell(lab, a, e) for a, e, _ in _SWEEP_COLUMNS]
            for ltd, m, lab in width
        ]
        items.append(
            (
                "table",
                "Width sweep, fully connected granule layer: accuracy (%)" + note,
                (["model", "LTD", "m", *header_tail], body),
            )
        )
    if sparse:
        body = [
            [lab, "yes" if ltd else "no", str(k), f"{labels[lab]['m']:,}"]
            + [cell(lab, a, e) for a, e, _ in _SWEEP_COLUMNS]
            for ltd, k, lab in sparse
        ]
        items.append(
            (
                "table",
                "Sparsity sweep at a fixed synapse budget: accuracy (%)" + note,
                (["model", "LTD", "k", "m", *header_tail], body),
            )
        )
    if batch:
        columns = [*_SWEEP_COLUMNS, ("apgd-dlr", 0.1, "APGD-DLR 0.1"), ("square", 0.1, "Square 0.1")]
        body = [[lab, str(b)] + [cell(lab, a, e) for a, e, _ in columns] for b, _, lab in batch]
        items.append(
            (
                "table",
                "Training batch 50 vs batch 1 (Table 7): accuracy (%)" + note,
                (["model", "batch"] + [name for _, _, name in columns], body),
            )
        )
    fig = _sweep_figure(width, sparse, value, paper, Path(outdir) / SUMMARY_FIGURE)
    if fig is not None:
        items.append(("figure", "Robust accuracy at eps 0.1 vs width m and vs inputs per cell k", fig.name))
    return items


def _sweep_figure(
    width: list[tuple[bool, int, str]],
    sparse: list[tuple[bool, int, str]],
    value: dict[tuple[str, str, float | None], float],
    paper: dict[tuple[str, str, float | None], float],
    path: Path,
) -> Path | None:
    panels = [
        (p, x)
        for p, x in (
            (width, "granule cells m (fully connected)"),
            (sparse, "inputs per cell k (m at a fixed synapse budget)"),
        )
        if p
    ]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.9), dpi=110, squeeze=False)
    for ax, (points, xlabel) in zip(axes[0], panels, strict=True):
        for ltd, colour in ((False, "tab:blue"), (True, "tab:red")):
            series = [(x, lab) for l_, x, lab in points if l_ == ltd]
            if not series:
                continue
            name = "+ LTD" if ltd else "no LTD"
            for attack, style, what in (
                ("pgd-0.01", "-o", "PGD (0.01), ours"),
                ("worst-case", ":s", "worst case, ours"),
            ):
                pts = [(x, value[(lab, attack, 0.1)]) for x, lab in series if (lab, attack, 0.1) in value]
                if pts:
                    ax.plot(*zip(*pts, strict=True), style, color=colour, ms=4, label=f"{name}: {what}")
            pts = [(x, paper[(lab, "pgd-0.01", 0.1)]) for x, lab in series if (lab, "pgd-0.01", 0.1) in paper]
            if pts:
                ax.plot(
                    *zip(*pts, strict=True),
                    "--^",
                    color=colour,
                    mfc="none",
                    ms=5,
                    alpha=0.7,
                    label=f"{name}: PGD, paper",
                )
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("accuracy at eps 0.1 (%)")
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


# ------------------------------------------------------- accuracy vs m and vs k under every paper attack

#: (attack, eps) of the six panels of :func:`accuracy_vs_sweep_figures`.
_PANELS = [("clean", None), ("fgsm", 0.1), ("fgsm", 0.3), ("pgd-0.01", 0.1), ("pgd-0.01", 0.3), ("pgd-0.1", 0.1)]
_FULL_INPUTS = 784  # k of a fully connected MNIST granule layer (x axis of the sparsity figure)


def _series_name(info: dict[str, Any], *, with_tier: bool) -> str | None:
    """'fc+ltd', 'rc batch 1', 'rc (reduced)'...; ``None`` for labels these figures leave out (other
    batch sizes, tiers that are not one word such as "(reduced, full suite)")."""
    tier = info["tier"]
    if info["batch"] not in (None, 1) or (tier is not None and not re.fullmatch(r"\w+", tier)):
        return None
    if tier is not None and not with_tier:
        return None
    name = info["kind"] + ("+ltd" if info["ltd"] else "") + (" batch 1" if info["batch"] else "")
    return name + (f" ({tier})" if tier and with_tier else "")


def _points(
    values: dict[tuple[str, str, float | None], float], attack: str, eps: float | None, *, with_tier: bool
) -> dict[str, list[tuple[int, int, float]]]:
    """``{series name: [(m, k, accuracy %)]}`` of the sweep-labelled entries of ``values`` at (attack, eps)."""
    out: dict[str, list[tuple[int, int, float]]] = defaultdict(list)
    for (model, a, e), v in values.items():
        if a != attack or (eps is not None and (e is None or abs(e - eps) > 1e-9)):
            continue
        info = parse_sweep_label(model)
        name = None if info is None else _series_name(info, with_tier=with_tier)
        if name is not None:
            out[name].append((info["m"], info["k"] or _FULL_INPUTS, v))  # type: ignore[index]
    return out


def accuracy_vs_sweep_figures(
    rows: list[dict[str, Any]], outdir: str | Path, paper: dict[tuple[str, str, float | None], float] | None = None
) -> list[ReportItem]:
    """Two figures of six panels (clean, FGSM, PGD at eps 0.1 and 0.3): accuracy vs width m (FC, FC +
    LTD) in :data:`WIDTH_FIGURE` and vs k at the synapse budget (RC, RC + LTD, batch 50 and batch 1) in
    :data:`SPARSITY_FIGURE`, ours solid, the paper's Table 6 / 7 values (``paper``, in %) dashed; the
    paper's one PGD column is drawn in both PGD panels. A figure without any of our points is left out."""
    paper = paper or {}
    ours_values = {
        (r["model"], r["attack"], r["eps"]): 100 * r["value"]
        for r in rows
        if r["metric"] == "accuracy" and r["value"] is not None
    }
    datasets = sorted({str(r.get("dataset", "")) for r in rows} - {""})
    where = "MNIST" if datasets == ["mnist"] else ", ".join(datasets)
    items: list[ReportItem] = []
    for what, kinds, xi, xlabel, fname in (
        ("width", ("fc", "fc+ltd"), 0, "granule cells m (log)", WIDTH_FIGURE),
        ("sparsity", ("rc", "rc+ltd"), 1, "inputs per granule cell k (log), m = 4.8M / (k + 20)", SPARSITY_FIGURE),
    ):
        fig, axes = plt.subplots(2, 3, figsize=(12, 6.5), dpi=100, sharex=True)
        any_data = False
        for ax, (attack, eps) in zip(axes.flat, _PANELS, strict=True):
            ours = _points(ours_values, attack, eps, with_tier=True)
            theirs = _points(paper, "pgd-0.01" if attack.startswith("pgd") else attack, eps, with_tier=False)
            for i, (name, pts) in enumerate(sorted(ours.items())):
                if not any(name.startswith(k + " ") or name == k for k in kinds) or (
                    what == "width" and "batch 1" in name
                ):
                    continue
                pts.sort(key=lambda p: p[xi])
                ax.plot(
                    [p[xi] for p in pts], [p[2] for p in pts], marker="o", ms=3, label=f"ours: {name}", color=f"C{i}"
                )
                any_data = True
            for i, (name, pts) in enumerate(sorted(theirs.items())):
                if name.split(" ")[0] not in kinds:
                    continue
                pts.sort(key=lambda p: p[xi])
                ax.plot(
                    [p[xi] for p in pts], [p[2] for p in pts], ls="--", lw=1, color=f"C{i + 5}", label=f"paper: {name}"
                )
            ax.set_xscale("log")
            ax.set_title(attack + ("" if eps is None else f", eps {eps:g}"), fontsize=9)
            ax.set_ylim(-2, 102)
            ax.grid(alpha=0.3)
        for ax in axes[1]:
            ax.set_xlabel(xlabel, fontsize=8)
        axes[0, 0].set_ylabel("accuracy (%)")
        axes[1, 0].set_ylabel("accuracy (%)")
        handles, labels = axes[0, 0].get_legend_handles_labels()
        for ax in axes.flat[1:]:
            for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
                if lab not in labels:
                    handles.append(h)
                    labels.append(lab)
        fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=7)
        fig.suptitle(f"{where}, robust accuracy vs {what} (ours solid, paper dashed; PGD paper values: its one column)")
        fig.tight_layout(rect=(0, 0.08, 1, 0.96))
        if any_data:
            path = Path(outdir) / fname
            path.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(path)
            items.append(("figure", f"Accuracy vs {what} under each paper attack (paper's Table 6 / 7 dashed)", fname))
        plt.close(fig)
    return items


# ------------------------------------------------------------------- the paper's tables next to ours

_MARK = {"reproduced": "✓", "not reproduced": "✗", "not comparable": "nc", "not run": "", "not judged": "nj"}
#: Columns of a paper-table matrix: (attack, index into the table's sorted eps values).
_CELLS = [
    ("clean", None),
    ("fgsm", 0),
    ("fgsm", 1),
    ("pgd-0.01", 0),
    ("pgd-0.01", 1),
    ("pgd-0.1", 0),
    ("pgd-0.1", 1),
]


def _eps_text(e: float) -> str:
    return f"{round(e * 255)}/255" if e < 0.05 else f"{e:g}"


def paper_table_items(claims: list[Any], rows: list[dict[str, Any]]) -> list[ReportItem]:
    """One table per paper table of ``claims``: a row per model with a number of ours, each cell
    "ours (paper) mark" (✓ reproduced, ✗ not reproduced, nc not comparable, nj not judged), the last
    column the count of each verdict; then one table of the table's relative and textual claims.

    ``rows`` are the report's rows (seeds averaged); ours is :func:`~neurorobust.claims.ours_for`
    in % with one decimal, as judged by :func:`~neurorobust.claims.judge`.
    """
    by_table: dict[str, list[tuple[Any, float | None, str]]] = defaultdict(list)
    for c in claims:
        ours = ours_for(c, rows)
        base = ours_for(c, rows, model=c.baseline_model) if c.kind in ("relative", "direction") else None
        j = judge(c, ours, base)
        by_table[c.table].append((c, j.ours, j.verdict))
    items: list[ReportItem] = []
    for table, judged in by_table.items():
        absolute = [it for it in judged if it[0].kind == "absolute"]
        eps_grid = sorted({c.eps for c, _, _ in absolute if c.eps is not None})
        cells = [(a, e) for a, e in _CELLS if e is None or e < len(eps_grid)]
        by_model: dict[str, dict[tuple[str, float | None], tuple[Any, float | None, str]]] = defaultdict(dict)
        for c, ours, verdict in absolute:
            by_model[c.model][(c.attack, c.eps)] = (c, ours, verdict)
        body = []
        for model, hits in by_model.items():
            if all(v[1] is None for v in hits.values()):
                continue  # not run yet (e.g. a FULL=1 row in the 30-minute tier)
            out, counts = [], defaultdict(int)
            for attack, e in cells:
                hit = hits.get((attack, None if e is None else eps_grid[e]))
                if hit is None:
                    out.append("")
                    continue
                c, ours, verdict = hit
                counts[verdict] += 1
                out.append(f"{'—' if ours is None else f'{ours:.1f}'} ({c.value:g}) {_MARK[verdict]}".strip())
            row = next(iter(hits.values()))[0].row
            body.append([model, row, *out, ", ".join(f"{n} {v}" for v, n in sorted(counts.items()))])
        if body:
            header = ["model", "paper row"]
            header += [a if e is None else f"{a} {_eps_text(eps_grid[e])}" for a, e in cells]
            items.append(
                (
                    "table",
                    f"{table}: ours (paper) per model (✓ reproduced, ✗ not reproduced, nc not comparable)",
                    ([*header, "verdicts"], body),
                )
            )
        other = [
            [c.id, f"{c.value}", c.kind, "—" if ours is None else f"{ours:.2f}", verdict, c.text]
            for c, ours, verdict in judged
            if c.kind != "absolute"
        ]
        if other:
            header = ["claim", "paper", "kind", "ours", "verdict", "claim text"]
            items.append(("table", f"{table}: relative and textual claims", (header, other)))
    return items
