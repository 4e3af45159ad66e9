"""Tables and figures of ``docs/cerebellum.md`` from the results store (reads the store only).

Run from the repository root after the reproductions::

    .venv/bin/python docs/cerebellum_figures.py [--store runs/results.db] [--out docs/figures]

Prints, per paper table, our number next to the paper's with the claims machinery's verdict
(``claims/cerebellum.toml``; mean over the seeds in the store), the full-suite worst case and the
checklist verdict per model, and writes ``cerebellum_width.png`` (robust accuracy vs m, FC and FC +
LTD) and ``cerebellum_k.png`` (vs k at the synapse budget, RC and RC + LTD; batch 50 and batch 1),
with the paper's Table 6 / 7 values dashed.
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from neurorobust.claims import judge, load_claims, ours_for
from neurorobust.report.build import latest_rows
from neurorobust.store import ResultsStore

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = ("cerebellum_mnist", "cerebellum_sweeps", "cerebellum_cifar10", "advtrain_mnist", "advtrain_cifar10")


def _eps(e: float) -> str:
    return f"{round(e * 255)}/255" if e < 0.05 else f"{e:g}"


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.1f}"


def claims_by_table(rows: list[dict[str, Any]]) -> dict[str, list[tuple[Any, float | None, str]]]:
    cf = load_claims(REPO / "claims" / "cerebellum.toml")
    out: dict[str, list[tuple[Any, float | None, str]]] = defaultdict(list)
    for c in cf.claims:
        ours = ours_for(c, rows)
        base = ours_for(c, rows, model=c.baseline_model) if c.kind in ("relative", "direction") else None
        j = judge(c, ours, base)
        out[c.table].append((c, j.ours, j.verdict))
    return out


MARK = {"reproduced": "✓", "not reproduced": "✗", "not comparable": "nc", "not run": "", "not judged": "nj"}
CELLS = [
    ("clean", None),
    ("fgsm", 0),
    ("fgsm", 1),
    ("pgd-0.01", 0),
    ("pgd-0.01", 1),
    ("pgd-0.1", 0),
    ("pgd-0.1", 1),
]


def print_tables(rows: list[dict[str, Any]]) -> None:
    """One Markdown table per paper table: a row per model, each cell 'ours (paper) verdict mark'."""
    for table, items in claims_by_table(rows).items():
        absolute = [it for it in items if it[0].kind == "absolute"]
        if absolute:
            eps_grid = sorted({c.eps for c, _, _ in absolute if c.eps is not None})
            print(f"\n### {table}  (cell: ours (paper) mark; ✓ reproduced, ✗ not reproduced, nc not comparable)\n")
            cols = [a if e is None else f"{a} {_eps(eps_grid[e])}" for a, e in CELLS]
            head = ["model", "paper row", *cols, "verdicts"]
            print("| " + " | ".join(head) + " |")
            print("|" + "---|" * len(head))
            by_model: dict[str, dict[tuple[str, float | None], tuple[Any, float | None, str]]] = defaultdict(dict)
            for c, ours, verdict in absolute:
                by_model[c.model][(c.attack, c.eps)] = (c, ours, verdict)
            for model, cells in by_model.items():
                if all(v[1] is None for v in cells.values()):
                    continue  # not run yet (e.g. a FULL=1 row in the 30-minute tier)
                out, counts = [], defaultdict(int)
                for attack, e in CELLS:
                    hit = cells.get((attack, None if e is None else eps_grid[e]))
                    if hit is None:
                        out.append("")
                        continue
                    c, ours, verdict = hit
                    counts[verdict] += 1
                    out.append(f"{_fmt(ours)} ({c.value:g}) {MARK[verdict]}".strip())
                row = next(iter(cells.values()))[0].row
                summary = ", ".join(f"{n} {v}" for v, n in sorted(counts.items()))
                print(f"| {model} | {row} | " + " | ".join(out) + f" | {summary} |")
        other = [it for it in items if it[0].kind != "absolute"]
        for c, ours, verdict in other:
            shown = "—" if ours is None else f"{ours:.2f}"
            print(f"- {table} {c.id}: paper {c.value} ({c.kind}), ours {shown}: **{verdict}** — {c.text}")


def print_suite(rows: list[dict[str, Any]], experiment: str) -> None:
    sel = [r for r in rows if r["experiment"] == experiment]
    worst = [r for r in sel if r["attack"] == "worst-case" and r["metric"] == "accuracy"]
    verdicts = {r["model"]: r["params"].get("verdict", "") for r in sel if r["attack"] == "checklist"}
    if not worst:
        return
    print(f"\n### {experiment}: full suite worst case (robust accuracy %) and checklist verdict\n")
    eps_list = sorted({r["eps"] for r in worst})
    print("| model | " + " | ".join(f"eps {e:g}" for e in eps_list) + " | verdict |")
    print("|---|" + "---|" * len(eps_list) + "---|")
    for model in sorted({r["model"] for r in worst}):
        vals = {r["eps"]: 100 * r["value"] for r in worst if r["model"] == model}
        cells = " | ".join(_fmt(vals.get(e)) for e in eps_list)
        print(f"| {model} | {cells} | {verdicts.get(model, '')} |")
    per_attack = defaultdict(dict)
    for r in sel:
        if r["metric"] == "accuracy" and r["eps"] is not None and "(full suite)" in r["model"]:
            per_attack[(r["model"], r["attack"])][r["eps"]] = 100 * r["value"]
    if per_attack:
        print("\n| model | attack | " + " | ".join(f"eps {e:g}" for e in eps_list) + " |")
        print("|---|---|" + "---|" * len(eps_list))
        for (model, attack), vals in sorted(per_attack.items()):
            print(f"| {model} | {attack} | " + " | ".join(_fmt(vals.get(e)) for e in eps_list) + " |")


_LABEL = re.compile(r"^(fc|fc\+ltd|rc|rc\+ltd)(?: k=(\d+))? m=(\d+)(?: (b1))?(?: \((\w+)\))?$")


def _series(rows: list[dict[str, Any]], attack: str, eps: float | None) -> dict[str, list[tuple[int, int, float]]]:
    out: dict[str, list[tuple[int, int, float]]] = defaultdict(list)
    for r in rows:
        if r["experiment"] != "cerebellum_sweeps" or r["metric"] != "accuracy" or r["attack"] != attack:
            continue
        if eps is not None and (r["eps"] is None or abs(r["eps"] - eps) > 1e-9):
            continue
        m = _LABEL.match(r["model"])
        if not m:
            continue
        kind, k, width, b1, tier = m.groups()
        name = kind + (" batch 1" if b1 else "") + (f" ({tier})" if tier else "")
        out[name].append((int(width), int(k) if k else 784, 100 * r["value"]))
    return out


def _paper(items: list[tuple[Any, float | None, str]], attack: str, eps: float | None) -> dict[str, list]:
    out: dict[str, list[tuple[int, int, float]]] = defaultdict(list)
    for c, _, _ in items:
        if c.attack != attack or (eps is not None and (c.eps is None or abs(c.eps - eps) > 1e-9)):
            continue
        m = _LABEL.match(c.model)
        if not m or m.group(5):
            continue
        kind, k, width, b1, _ = m.groups()
        out[kind + (" batch 1" if b1 else "")].append((int(width), int(k) if k else 784, c.value))
    return out


PANELS = [("clean", None), ("fgsm", 0.1), ("fgsm", 0.3), ("pgd-0.01", 0.1), ("pgd-0.01", 0.3), ("pgd-0.1", 0.1)]


def figures(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    claims = claims_by_table(rows)
    paper_items = claims.get("Table 6", []) + claims.get("Table 7", [])
    written = []
    for what, kinds, xi, xlabel, fname in (
        ("width", ("fc", "fc+ltd"), 0, "granule cells m (log)", "cerebellum_width.png"),
        ("sparsity", ("rc", "rc+ltd"), 1, "inputs per granule cell k (log), m = 4.8M / (k + 20)", "cerebellum_k.png"),
    ):
        fig, axes = plt.subplots(2, 3, figsize=(12, 6.5), dpi=100, sharex=True)
        any_data = False
        for ax, (attack, eps) in zip(axes.flat, PANELS, strict=True):
            ours = _series(rows, attack, eps)
            paper = _paper(paper_items, "pgd-0.01" if attack.startswith("pgd") else attack, eps)
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
            for i, (name, pts) in enumerate(sorted(paper.items())):
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
        fig.suptitle(f"MNIST, robust accuracy vs {what} (ours solid, paper dashed; PGD paper values: its one column)")
        fig.tight_layout(rect=(0, 0.08, 1, 0.96))
        if any_data:
            path = out / fname
            path.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(path)
            written.append(path)
        plt.close(fig)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", default="runs/results.db")
    parser.add_argument("--out", default=str(REPO / "docs" / "figures"))
    args = parser.parse_args()
    with ResultsStore(args.store) as st:
        rows = []
        for exp in (
            "cerebellum_mnist",
            "cerebellum_sweeps",
            "cerebellum_cifar10",
            "advtrain_mnist",
            "advtrain_cifar10",
        ):
            rows += latest_rows(st.results(experiment=exp, done_only=True))
    print_tables(rows)
    for exp in ("cerebellum_mnist", "cerebellum_sweeps", "cerebellum_cifar10", "advtrain_mnist", "advtrain_cifar10"):
        print_suite(rows, exp)
    for path in figures(rows, Path(args.out)):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
