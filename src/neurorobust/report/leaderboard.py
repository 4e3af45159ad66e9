"""The leaderboard: one row per defence in the store, with its masking verdict.

A defence is an (experiment, model label, dataset) triple. Per defence: clean accuracy (mean ± sd
over seeds), the paper's claimed number and ours under the paper's attack (from ``claims/*.toml``
where a headline claim maps to it), the worst-case robust accuracy over every attack run at the
reference eps (the claim's eps, else the middle eps of the worst-case curve) and the whole curve
— from the ``full`` suite when one was run, otherwise marked with the suite used — the verdict,
and the seeds. Written as CSV, Markdown and a sortable HTML table.
"""

from __future__ import annotations

import csv
import html
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from ..evaluation.metrics import mean_sd
from ..specs import canonical_experiment
from ..store import ResultsStore
from .tables import markdown_table

__all__ = [
    "COLUMNS",
    "leaderboard_html",
    "leaderboard_markdown",
    "leaderboard_rows",
    "write_leaderboard",
    "write_leaderboard_csv",
]

COLUMNS = [
    "experiment",
    "defence",
    "kind",
    "dataset",
    "clean acc (%)",
    "paper claim",
    "ours (paper's attack)",
    "worst-case (%)",
    "at eps",
    "worst-case curve (eps: %)",
    "suite",
    "verdict",
    "gap to best reference (pts)",
    "seeds",
    "spread (sd, %)",
]

#: Experiments whose defences are the reference defences (adversarial training, ``configs/advtrain_*``).
REFERENCE_PREFIX = "advtrain_"

#: Published reference numbers (not measured here): robust accuracy against the authors' strongest attack.
PUBLISHED = [
    {
        "defence": "Madry et al. 2018 PGD-AT (published)",
        "dataset": "mnist",
        "eps": 0.3,
        "value": 89.0,
        "note": (
            "not comparable: their CNN (conv32-conv64-fc1024), 100-step PGD with restarts; our rows use other networks"
        ),
    },
    {
        "defence": "Madry et al. 2018 PGD-AT (published)",
        "dataset": "cifar10",
        "eps": 8 / 255,
        "value": 45.8,
        "note": "not comparable: their wide ResNet on the original CIFAR-10; ours is a VGG trunk on the JPEG copy",
    },
]


def _headline_claims() -> dict[tuple[str, str], Any]:
    from ..claims import claims_paths, load_claims

    out = {}
    for path in claims_paths():
        for c in load_claims(path).claims:
            if c.headline and c.kind == "absolute" and c.attack not in ("clean", "noise", "blur"):
                out.setdefault((c.experiment, c.model), c)
    return out


def leaderboard_rows(
    store: ResultsStore, experiments: list[str] | None = None, *, private: bool = False
) -> list[dict[str, Any]]:
    """One dict per defence (keys: :data:`COLUMNS`), sorted by experiment then worst case (best first).

    Experiments stored under an old config name count as the renamed one (``sgbn_mnist`` is
    ``stochastic_mnist_sgbn``): one row per defence, the latest run per seed whatever its name.

    Parameters
    ----------
    store : ResultsStore
    experiments : list of str, optional
        Experiment names as stored (default: all).
    private : bool, default=False
        Also keep ``_curve`` (the worst-case curve, ``{eps: robust accuracy %}``) and ``_runs`` (ids of
        the runs whose rows the row shows) on each defence, for the static site; CSV and Markdown
        writers leave them off.
    """
    from ..claims import judge, ours_for

    rows = store.results(done_only=True)
    runs = {r["id"]: r for r in store.runs()}
    claims = _headline_claims()
    names: dict[str, str] = {}  # canonical_experiment reads the configs folder: once per distinct name
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if experiments is None or r["experiment"] in experiments:
            exp = names.setdefault(r["experiment"], canonical_experiment(r["experiment"]))
            groups[(exp, r["model"], r["dataset"])].append(r)
    board = []
    for (exp, model, dataset), rs in sorted(groups.items()):
        test = [r for r in rs if r["split"] == "test"] or rs
        suite_of = {r["run_id"]: _suite(runs.get(r["run_id"])) for r in test}
        suites = set(suite_of.values())
        # the full suite where one was run, else the newest run's suite; rows of other suites are set aside
        chosen = "full" if "full" in suites else suite_of[max(r["run_id"] for r in test)]
        latest = _latest_per_seed([r for r in test if suite_of[r["run_id"]] == chosen])
        suite = chosen
        clean = [r["value"] for r in latest if r["attack"] == "clean" and r["metric"] == "accuracy"]
        worst = [r for r in latest if r["attack"] == "worst-case" and r["metric"] == "accuracy"]
        claim = claims.get((exp, model))
        eps_ref = claim.eps if claim is not None and claim.eps is not None else _reference_eps(worst)
        at_eps = [
            r["value"]
            for r in worst
            if eps_ref is not None and r["eps"] is not None and math.isclose(r["eps"], eps_ref)
        ]
        verdicts = sorted({r["params"].get("verdict", "") for r in latest if r["attack"] == "checklist"})
        if not worst and any(r["attack"] == "worst-case-paper-protocol" for r in latest):
            # a random model attacked only without EOT/BPDA: its single-draw numbers are never ranked as a worst case
            verdicts.append("no adaptive attack: paper's protocol only, not ranked")
        seeds = sorted({r["seed"] for r in latest if r["seed"] is not None})
        c_mean, c_sd = mean_sd(clean) if clean else (float("nan"), float("nan"))
        w_mean = mean_sd(at_eps)[0] if at_eps else None
        paper = ours = ""
        if claim is not None:
            ours_value = ours_for(claim, latest)
            j = judge(claim, ours_value)
            paper = f"{claim.value:g}" + (f" ± {claim.sd:g}" if claim.sd else "") + f" ({claim.table})"
            ours = "—" if ours_value is None else f"{ours_value:.4g} ({j.verdict})"
        board.append(
            {
                "experiment": exp,
                "defence": model,
                "kind": "reference" if exp.startswith(REFERENCE_PREFIX) else "mechanism",
                "dataset": dataset,
                "clean acc (%)": None if math.isnan(c_mean) else round(100 * c_mean, 2),
                "paper claim": paper,
                "ours (paper's attack)": ours,
                "worst-case (%)": None if w_mean is None else round(100 * w_mean, 2),
                "at eps": "" if eps_ref is None else f"{eps_ref:g}",
                "worst-case curve (eps: %)": _curve(worst),
                "suite": suite,
                "verdict": "; ".join(v for v in verdicts if v) or "not checked",
                "gap to best reference (pts)": None,
                "seeds": len(seeds),
                "spread (sd, %)": None if math.isnan(c_sd) else round(100 * c_sd, 2),
                "_curve": _curve_values(worst),
                "_eps": None if eps_ref is None else _eps_key(eps_ref),
                "_runs": sorted({r["run_id"] for r in latest}),
            }
        )
    _reference_gaps(board)
    if any(b["kind"] == "reference" for b in board):
        board += _published_rows({b["dataset"] for b in board})
    for b in board:
        b.pop("_eps", None)
        if not private:
            b.pop("_curve", None)
            b.pop("_runs", None)
    board.sort(key=lambda b: (b["experiment"], -(b["worst-case (%)"] or -1.0)))
    return board


def _eps_key(eps: float) -> float:
    """eps to 3 significant digits: configs write 8/255 as 0.03137 or 0.0313725, and both are one eps."""
    return float(f"{eps:.3g}")


def _curve_values(worst: list[dict[str, Any]]) -> dict[float, float]:
    by_eps: dict[float, list[float]] = defaultdict(list)
    for r in worst:
        if r["eps"] is not None and r["value"] is not None:
            by_eps[_eps_key(r["eps"])].append(r["value"])
    return {e: 100 * sum(v) / len(v) for e, v in by_eps.items()}


def _reference_gaps(board: list[dict[str, Any]]) -> None:
    """Per defence: its worst case minus the best reference defence's on the same dataset at the same eps.

    At the defence's reference eps when a reference was attacked there, else at the largest eps both
    curves share (named in the cell): a mechanism evaluated on a finer grid than the references
    (Hebbian MNIST: 0.01 / 0.03 / 0.1 against 0.1 / 0.2 / 0.3) still gets its gap, at a common eps.
    "Best" is the best of the references attacked at that eps; eps match to 3 significant digits."""
    for b in board:
        if b["worst-case (%)"] is None or b["_eps"] is None:
            continue
        refs = [
            r
            for r in board
            if r["kind"] == "reference"
            and r["dataset"] == b["dataset"]
            and r is not b
            and not (b["kind"] == "reference" and r["defence"] == b["defence"])
        ]
        at_eps = b["_eps"]
        shared = {e for r in refs for e in r["_curve"] if e in b["_curve"]}
        if not shared:
            continue
        eps = at_eps if at_eps in b["_curve"] and any(at_eps in r["_curve"] for r in refs) else max(shared)
        best, name = max((r["_curve"][eps], r["defence"]) for r in refs if eps in r["_curve"])
        where = "" if eps == at_eps else f" at eps {eps:g}"
        b["gap to best reference (pts)"] = f"{b['_curve'][eps] - best:+.1f} vs {name}{where}"


def _published_rows(datasets: set[str]) -> list[dict[str, Any]]:
    rows = []
    for p in PUBLISHED:
        if p["dataset"] not in datasets:
            continue
        rows.append(
            {c: None for c in COLUMNS}
            | {
                "experiment": "published",
                "defence": p["defence"],
                "kind": "published",
                "dataset": p["dataset"],
                "worst-case (%)": p["value"],
                "at eps": f"{p['eps']:.4g}",
                "suite": "their strongest attack",
                "verdict": p["note"],
                "seeds": 0,
            }
        )
    return rows


def _suite(run: dict[str, Any] | None) -> str:
    return (run or {}).get("spec", {}).get("evaluate", {}).get("suite", "?")


def _latest_per_seed(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (seed, attack, metric, eps): the row of the latest run."""
    best: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        key = (r["seed"], r["attack"], r["metric"], r["eps"])
        if key not in best or r["run_id"] > best[key]["run_id"]:
            best[key] = r
    return list(best.values())


def _reference_eps(worst: list[dict[str, Any]]) -> float | None:
    """The middle eps of the worst-case curve (the checklist probes there too)."""
    eps = sorted({r["eps"] for r in worst if r["eps"] is not None})
    return eps[len(eps) // 2] if eps else None


def _curve(worst: list[dict[str, Any]]) -> str:
    by_eps: dict[float, list[float]] = defaultdict(list)
    for r in worst:
        if r["eps"] is not None and r["value"] is not None:
            by_eps[r["eps"]].append(r["value"])
    return " · ".join(f"{e:g}: {100 * sum(v) / len(v):.1f}" for e, v in sorted(by_eps.items()))


def _cell(v: Any) -> str:
    return "—" if v is None or v == "" else str(v)


def leaderboard_markdown(board: list[dict[str, Any]]) -> str:
    return markdown_table(COLUMNS, [[_cell(b[c]) for c in COLUMNS] for b in board]) + "\n"


_SORT_JS = """
document.querySelectorAll('table.sortable').forEach(function (table) {
  table.querySelectorAll('th').forEach(function (th, col) {
    th.addEventListener('click', function () {
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      var asc = th.getAttribute('data-order') !== 'asc';
      table.querySelectorAll('th').forEach(function (h) { h.removeAttribute('data-order'); });
      th.setAttribute('data-order', asc ? 'asc' : 'desc');
      rows.sort(function (a, b) {
        var x = a.cells[col].getAttribute('data-value'), y = b.cells[col].getAttribute('data-value');
        var nx = parseFloat(x), ny = parseFloat(y);
        var cmp = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
        return asc ? cmp : -cmp;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


def leaderboard_html(board: list[dict[str, Any]]) -> str:
    """A sortable HTML table (click a header to sort; numbers sort numerically) and its script."""
    head = "".join(f'<th title="click to sort">{html.escape(c)}</th>' for c in COLUMNS)
    body = []
    for b in board:
        cells = []
        for c in COLUMNS:
            v = b[c]
            value = "" if v is None else str(v)
            cells.append(f'<td data-value="{html.escape(value)}">{html.escape(_cell(v))}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f'<table class="sortable" id="leaderboard"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table><script>{_SORT_JS}</script>"
    )


def write_leaderboard_csv(board: list[dict[str, Any]], path: str | Path) -> None:
    """Write the :data:`COLUMNS` of ``board`` as CSV (private keys such as ``_curve`` are left out)."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(board)


def write_leaderboard(store: ResultsStore, outdir: str | Path = "reports/leaderboard") -> Path:
    """Write ``leaderboard.csv``, ``leaderboard.md`` and ``index.html`` into ``outdir``; returns it."""
    folder = Path(outdir)
    folder.mkdir(parents=True, exist_ok=True)
    board = leaderboard_rows(store)
    write_leaderboard_csv(board, folder / "leaderboard.csv")
    from .combinations import combination_markdown, combination_rows

    combos = combination_markdown(combination_rows(store))
    (folder / "leaderboard.md").write_text(
        "# neurorobust leaderboard\n\n" + leaderboard_markdown(board) + "\n" + combos
    )
    style = (
        "body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px}th{background:#f0f0f0;cursor:pointer}"
        "th[data-order=asc]::after{content:' \\25B2'}th[data-order=desc]::after{content:' \\25BC'}"
    )
    (folder / "index.html").write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>neurorobust leaderboard</title>"
        f"<style>{style}</style></head><body><h1>neurorobust leaderboard</h1>"
        f"<p>{len(board)} defences from <code>{html.escape(str(store.path))}</code>. Click a column to sort.</p>"
        f"{leaderboard_html(board)}</body></html>\n"
    )
    return folder
