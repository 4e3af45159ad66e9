"""The leaderboard as a static site: a sortable, filterable table, a plot per dataset, a page per defence.

``neurorobust leaderboard --site DIR`` writes it from the results store (or the shipped snapshot):

* ``index.html``: one row per defence (:func:`~neurorobust.report.leaderboard.leaderboard_rows`), with
  its family and paper; click a header to sort (numbers numerically), filter by dataset and family;
  under the table the worst-case robust accuracy against eps, one PNG per dataset.
* ``defences/<slug>.html``: a defence's headline numbers, verdict, the checklist of its latest run,
  its worst-case curve and the spec to re-run it.
* ``leaderboard.csv`` and ``leaderboard.md``: the full table.

CSS and JavaScript are inline, the plots sit beside the pages and every link is relative, so the
site works from ``file://`` with no network (no CDN). All text goes through :func:`html.escape`.
"""

from __future__ import annotations

import html
import json
import re
import time
from collections import defaultdict
from functools import cache
from pathlib import Path
from typing import Any

from ..plotting import plt  # the Agg backend: files only, never a window
from ..specs import canonical_experiment, configs_dir
from ..store import ResultsStore
from .combinations import COMBINATION_COLUMNS, combination_markdown, combination_rows
from .figures import distinct_styles, save_with_legend
from .leaderboard import leaderboard_markdown, leaderboard_rows, write_leaderboard_csv

__all__ = ["FAMILIES", "family_of", "write_site"]

#: Family (the prefix of a config name, ``<family>_<dataset>[_<variant>]``) -> the paper it reproduces.
FAMILIES: dict[str, str] = {
    "advtrain": "reference defences (Madry et al. 2018 PGD-AT, Zhang et al. 2019 TRADES)",
    "baseline": "plain networks, no defence",
    "cerebellum": "Liu, Li & Chen",
    "combo": "mechanisms combined with PGD-AT (ours: docs/combinations.md)",
    "foveation": "Burhanpurkar 2021",
    "hebbian": "Holzhausen et al.",
    "sleep": "Tadros et al. 2020",
    "stochastic": "Kubo 2019",
}

#: (header, leaderboard key, numeric sort) of the site's table, left to right.
_COLUMNS: list[tuple[str, str, bool]] = [
    ("defence", "defence", False),
    ("family", "_family", False),
    ("paper", "_paper", False),
    ("dataset", "dataset", False),
    ("clean (%)", "clean acc (%)", True),
    ("paper's claim", "paper claim", True),
    ("ours (paper's attack)", "ours (paper's attack)", True),
    ("worst case (%)", "worst-case (%)", True),
    ("verdict", "verdict", False),
    ("gap to best reference (pts)", "gap to best reference (pts)", True),
]

_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


@cache
def family_of(experiment: str) -> tuple[str, str]:
    """``(family, paper)`` of an experiment name; old config names count as their new one.

    Examples
    --------
    >>> family_of("sleep_mnist")
    ('sleep', 'Tadros et al. 2020')
    >>> family_of("sgbn_mnist")  # renamed to stochastic_mnist_sgbn
    ('stochastic', 'Kubo 2019')
    """
    if experiment == "published":
        return "published", "published numbers, not measured here"
    family = canonical_experiment(experiment).split("_", 1)[0]
    return (family, FAMILIES[family]) if family in FAMILIES else ("other", "")


def write_site(store: ResultsStore, outdir: str | Path = "site", *, source: str = "") -> Path:
    """Write the static leaderboard site into ``outdir``; returns ``outdir``.

    Parameters
    ----------
    store : ResultsStore
    outdir : path, default='site'
    source : str, default=''
        Where the runs come from (shown under the title), e.g. ``shipped results (results/snapshot.jsonl, 117 runs)``.
    """
    folder = Path(outdir)
    (folder / "defences").mkdir(parents=True, exist_ok=True)
    (folder / "plots").mkdir(parents=True, exist_ok=True)
    board = leaderboard_rows(store, private=True)
    slugs: set[str] = set()
    for b in board:
        b["_family"], b["_paper"] = family_of(b["experiment"])
        if b["kind"] == "published":
            b["_paper"] = b["defence"]
        # published numbers have no run and no page
        b["_slug"] = None if b["kind"] == "published" else _unique_slug(b, slugs)
    write_leaderboard_csv(board, folder / "leaderboard.csv")
    combos = combination_rows(store)
    (folder / "leaderboard.md").write_text(
        "# neurorobust leaderboard\n\n" + leaderboard_markdown(board) + "\n" + combination_markdown(combos),
        encoding="utf-8",
    )
    plots = _dataset_plots(board, folder / "plots")
    runs = {r["id"]: r for r in store.runs()}
    checks: dict[tuple[int, str], list[dict[str, Any]]] = defaultdict(list)
    for c in store.checks(done_only=True):
        checks[(c["run_id"], c["model"])].append(c)
    pages = set()
    for b in board:
        if b["_slug"] is not None:
            page = folder / "defences" / f"{b['_slug']}.html"
            page.write_text(_defence_page(b, runs, checks), encoding="utf-8")
            pages.add(page.name)
    # pages and plots of defences no longer on the board would be stale: the site holds this build only
    for old in (folder / "defences").glob("*.html"):
        if old.name not in pages:
            old.unlink()
    for old in (folder / "plots").glob("*.png"):
        if old.name not in {p.name for p in plots.values()}:
            old.unlink()
    (folder / "index.html").write_text(_index_page(board, plots, source, combos), encoding="utf-8")
    return folder


def _unique_slug(b: dict[str, Any], taken: set[str]) -> str:
    base = _slug(f"{b['experiment']}-{b['defence']}-{b['dataset']}") or "defence"
    slug, i = base, 2
    while slug in taken:
        slug, i = f"{base}-{i}", i + 1
    taken.add(slug)
    return slug


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _esc(value: Any) -> str:
    return html.escape("—" if value is None or value == "" else str(value))


def _leading_number(value: Any) -> str:
    """The number a cell sorts by: the value itself, or the first number of a text like ``"+3.2 vs PGD-AT"``."""
    if isinstance(value, (int, float)):
        return f"{value:g}"
    match = _NUMBER.search(str(value or ""))
    return match.group(0) if match else ""


# -- index.html ---------------------------------------------------------------------------------------------------

_STYLE = (
    "body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;font-size:14px}"
    "td,th{border:1px solid #ccc;padding:3px 8px;vertical-align:top}th{background:#f0f0f0}"
    "#leaderboard th{cursor:pointer}"
    "th[data-order=asc]::after{content:' \\25B2'}th[data-order=desc]::after{content:' \\25BC'}"
    "td small{color:#666}.filters{margin:1em 0}.filters label{margin-right:1.5em}"
    "figure{margin:2em 0}figure img{max-width:100%}pre{background:#f6f6f6;padding:1em;overflow-x:auto}"
    ".pass{color:#070}.fail{color:#b00}"
)

_SCRIPT = """
(function () {
  var table = document.getElementById('leaderboard');
  var body = table.tBodies[0];
  var heads = table.tHead.rows[0].cells;
  Array.prototype.forEach.call(heads, function (th, col) {
    th.addEventListener('click', function () {
      var numeric = th.getAttribute('data-type') === 'num';
      var asc = th.getAttribute('data-order') !== 'asc';
      Array.prototype.forEach.call(heads, function (h) { h.removeAttribute('data-order'); });
      th.setAttribute('data-order', asc ? 'asc' : 'desc');
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[col].getAttribute('data-value'), y = b.cells[col].getAttribute('data-value');
        if (numeric) {
          var nx = parseFloat(x), ny = parseFloat(y);
          if (isNaN(nx) || isNaN(ny)) { return isNaN(nx) - isNaN(ny); }  /* blanks last, both ways */
          return asc ? nx - ny : ny - nx;
        }
        return asc ? x.localeCompare(y) : y.localeCompare(x);
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
  var dataset = document.getElementById('dataset-filter');
  var family = document.getElementById('family-filter');
  function filter() {
    var shown = 0;
    Array.prototype.forEach.call(body.rows, function (r) {
      var ok = (!dataset.value || r.getAttribute('data-dataset') === dataset.value) &&
               (!family.value || r.getAttribute('data-family') === family.value);
      r.style.display = ok ? '' : 'none';
      if (ok) { shown += 1; }
    });
    document.querySelectorAll('figure[data-dataset]').forEach(function (f) {
      f.style.display = (!dataset.value || f.getAttribute('data-dataset') === dataset.value) ? '' : 'none';
    });
    document.getElementById('shown').textContent = shown;
  }
  dataset.addEventListener('change', filter);
  family.addEventListener('change', filter);
})();
"""


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>{body}</body></html>\n"
    )


def _select(ident: str, label: str, values: list[str]) -> str:
    options = "".join(f'<option value="{html.escape(v)}">{html.escape(v)}</option>' for v in values)
    return f'<label>{label} <select id="{ident}"><option value="">all</option>{options}</select></label>'


def _cell(b: dict[str, Any], key: str, numeric: bool) -> str:
    value = b.get(key)
    sort_value = _leading_number(value) if numeric else ("" if value is None else str(value))
    text = _esc(value)
    if key == "defence":
        name = html.escape(str(value))
        text = f'<a href="defences/{b["_slug"]}.html">{name}</a>' if b["_slug"] else name
        text += f"<br><small>{html.escape(str(b['experiment']))}</small>"
    elif key == "worst-case (%)" and value is not None and b.get("at eps"):
        text += f" <small>at eps {html.escape(str(b['at eps']))}</small>"
    return f'<td data-value="{html.escape(sort_value)}">{text}</td>'


def _index_page(
    board: list[dict[str, Any]], plots: dict[str, Path], source: str, combos: list[dict[str, Any]] | None = None
) -> str:
    head = "".join(
        f'<th title="click to sort"{" data-type=num" if numeric else ""}>{html.escape(header)}</th>'
        for header, _, numeric in _COLUMNS
    )
    rows = [
        f'<tr data-dataset="{html.escape(str(b["dataset"]))}" data-family="{html.escape(b["_family"])}">'
        + "".join(_cell(b, key, numeric) for _, key, numeric in _COLUMNS)
        + "</tr>"
        for b in board
    ]
    measured = sum(b["kind"] != "published" for b in board)
    published = len(board) - measured
    figures = "".join(
        f'<figure data-dataset="{html.escape(dataset)}"><img src="plots/{html.escape(path.name)}" '
        f'alt="worst-case robust accuracy against eps on {html.escape(dataset)}">'
        f"<figcaption>{html.escape(dataset)}: worst-case robust accuracy (every attack run, per point) against "
        "eps, one curve per defence, mean over seeds.</figcaption></figure>"
        for dataset, path in sorted(plots.items())
    )
    body = (
        "<h1>neurorobust leaderboard</h1>"
        f"<p>{measured} measured defences from {_esc(source or 'the results store')}"
        + (f" and {published} published reference numbers" if published else "")
        + ". Click a column header to sort; a defence's "
        "name opens its page (checklist, curve, the spec to re-run it). The full table: "
        '<a href="leaderboard.csv">leaderboard.csv</a>, <a href="leaderboard.md">leaderboard.md</a>.</p>'
        '<div class="filters">'
        + _select("dataset-filter", "dataset", sorted({str(b["dataset"]) for b in board}))
        + _select("family-filter", "family", sorted({b["_family"] for b in board}))
        + f'<span>showing <span id="shown">{len(board)}</span> of {len(board)}</span></div>'
        f'<table id="leaderboard"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
        f"<h2>Robust accuracy against eps</h2>{figures or '<p>No worst-case curve in the store yet.</p>'}"
        + _combinations_html(combos or [])
        + f"<script>{_SCRIPT}</script>"
    )
    return _page("neurorobust leaderboard", body)


def _dataset_plots(board: list[dict[str, Any]], folder: Path) -> dict[str, Path]:
    """One PNG per dataset: every defence's worst-case curve (robust accuracy % against eps)."""
    by_dataset: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for b in board:
        if b.get("_curve"):
            by_dataset[str(b["dataset"])].append(b)
    out = {}
    for dataset, defences in sorted(by_dataset.items()):
        fig, ax = plt.subplots(figsize=(6.5, 4.2), dpi=100)
        ax.set_prop_cycle(distinct_styles())
        for b in defences:
            eps = sorted(b["_curve"])
            ax.plot(eps, [b["_curve"][e] for e in eps], marker="o", ms=3, label=f"{b['defence']} ({b['experiment']})")
        ax.set_xlabel("eps")
        ax.set_ylabel("worst-case robust accuracy (%)")
        ax.set_ylim(-2, 102)
        ax.set_title(f"{dataset}: worst case over every attack")
        path = folder / f"{_slug(dataset) or 'dataset'}.png"
        save_with_legend(fig, ax, path, len(defences))
        plt.close(fig)
        out[dataset] = path
    return out


# -- defences/<slug>.html -----------------------------------------------------------------------------------------


def _when(t: float | None) -> str:
    return "—" if t is None else time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t))


def _table(header: list[str], rows: list[list[str]]) -> str:
    """A table of already-escaped cells."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _curve_svg(curve: dict[float, float]) -> str:
    """A small inline SVG of a worst-case curve (no image file, no script)."""
    w, h, left, bottom, pad = 420, 240, 44, 30, 12
    eps = sorted(curve)
    top = max(eps) or 1.0

    def x(e: float) -> float:
        return left + (w - left - pad) * e / top

    def y(v: float) -> float:
        return pad + (h - bottom - pad) * (1 - v / 100)

    points = " ".join(f"{x(e):.1f},{y(curve[e]):.1f}" for e in eps)
    ticks = "".join(
        f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v}</text>'
        f'<line x1="{left}" x2="{w - pad}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#eee"/>'
        for v in (0, 25, 50, 75, 100)
    )
    xticks = "".join(f'<text x="{x(e):.1f}" y="{h - bottom + 16}" text-anchor="middle">{e:g}</text>' for e in eps)
    dots = "".join(f'<circle cx="{x(e):.1f}" cy="{y(curve[e]):.1f}" r="3"/>' for e in eps)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-size="11" '
        'role="img" aria-label="worst-case robust accuracy (%) against eps">'
        f'{ticks}<line x1="{left}" x2="{left}" y1="{pad}" y2="{h - bottom}" stroke="#888"/>'
        f'<line x1="{left}" x2="{w - pad}" y1="{h - bottom}" y2="{h - bottom}" stroke="#888"/>{xticks}'
        f'<polyline points="{points}" fill="none" stroke="#1f77b4" stroke-width="2"/><g fill="#1f77b4">{dots}</g>'
        f'<text x="{(left + w) / 2:.0f}" y="{h - 2}" text-anchor="middle">eps</text></svg>'
    )


def _defence_page(
    b: dict[str, Any], runs: dict[int, dict[str, Any]], checks: dict[tuple[int, str], list[dict[str, Any]]]
) -> str:
    run_ids = b.get("_runs") or []
    latest = runs.get(max(run_ids)) if run_ids else None
    # the checklist of the latest run that ran one for this defence (the latest run may be another seed's)
    checked = max((i for i in run_ids if (i, b["defence"]) in checks), default=None)
    title = f"{b['defence']} ({b['experiment']}, {b['dataset']})"
    headline = (
        "<table><tbody>"
        + "".join(
            f"<tr><th>{html.escape(k)}</th><td>{_esc(v)}</td></tr>"
            for k, v in [
                ("experiment", b["experiment"]),
                ("family", b["_family"]),
                ("paper", b["_paper"]),
                ("dataset", b["dataset"]),
                ("clean accuracy (%)", b["clean acc (%)"]),
                ("spread over seeds (sd, %)", b["spread (sd, %)"]),
                ("seeds", b["seeds"]),
                ("paper's claim", b["paper claim"]),
                ("ours under the paper's attack", b["ours (paper's attack)"]),
                ("worst case (%)", b["worst-case (%)"]),
                ("at eps", b["at eps"]),
                ("gap to the best reference (pts)", b["gap to best reference (pts)"]),
                ("suite", b["suite"]),
            ]
        )
        + "</tbody></table>"
    )
    verdicts = [v for v in str(b["verdict"] or "").split("; ") if v]
    verdict = "<ul>" + "".join(f"<li>{html.escape(v)}</li>" for v in verdicts) + "</ul>" if verdicts else "<p>—</p>"
    if checked is None:
        checklist = "<p>No masking checklist was run for this defence.</p>"
    else:
        rows = [
            [
                html.escape(str(c["name"])),
                {1: '<span class="pass">passed</span>', 0: '<span class="fail">failed</span>'}.get(
                    c["passed"], "not judged"
                ),
                _esc(None if c["value"] is None else f"{c['value']:.4g}"),
                _esc(None if c["threshold"] is None else f"{c['threshold']:.4g}"),
                _esc(c["advice"]),
            ]
            for c in checks[(checked, b["defence"])]
        ]
        checklist = f"<p>From run {checked} ({_when(runs[checked]['started_at'])}).</p>" + _table(
            ["check", "result", "value", "threshold", "advice"], rows
        )
    curve = b.get("_curve") or {}
    if curve:
        points = [[f"{e:g}", f"{curve[e]:.1f}"] for e in sorted(curve)]
        curve_html = _curve_svg(curve) + _table(["eps", "worst-case robust accuracy (%)"], points)
    else:
        curve_html = "<p>No worst-case curve: no attack suite ran on this defence.</p>"
    name = html.escape(str(b["experiment"]))
    has_config = (configs_dir() / f"{b['experiment']}.toml").is_file()
    rerun = f"<pre>neurorobust repro {name}</pre>" + (
        "" if has_config else f"<p>(There is no <code>configs/{name}.toml</code> here: the spec below is what ran.)</p>"
    )
    if latest is not None:
        spec = json.dumps(latest["spec"], indent=2, sort_keys=True, default=str)
        rerun += (
            f"<p>The stored spec of its latest run ({latest['id']}, {html.escape(str(latest['kind']))}, started "
            f"{_when(latest['started_at'])}, code {_esc(latest['code_version'])}, on {_esc(latest['host'])}; "
            f"packages {_esc(json.dumps(latest['packages'], sort_keys=True))}):</p><pre>{html.escape(spec)}</pre>"
        )
    body = (
        '<p><a href="../index.html">&larr; leaderboard</a></p>'
        f"<h1>{html.escape(title)}</h1>{headline}<h2>Verdict</h2>{verdict}"
        f"<h2>Masking checklist</h2>{checklist}<h2>Worst-case curve</h2>{curve_html}"
        f"<h2>The spec to re-run it</h2>{rerun}"
    )
    return _page(title, body)


def _combinations_html(combos: list[dict[str, Any]]) -> str:
    """The "combined with adversarial training" section: each combination against its AT-only twin."""
    intro = (
        "<h2 id='combinations'>Combined with adversarial training</h2><p>Each mechanism trained with adversarial "
        "training against its AT-only twin (same data, training budget and evaluation), on the same images: the "
        "paired gap is the mean per-image difference in worst-case accuracy (combination - twin) with its 95% "
        "interval; a gain is claimed only where the interval excludes 0.</p>"
    )
    if not combos:
        return intro + "<p>No combination in these results yet (<code>make repro NAME=combo_mnist</code>).</p>"
    return intro + _table(
        [html.escape(c) for c in COMBINATION_COLUMNS], [[_esc(r[c]) for c in COMBINATION_COLUMNS] for r in combos]
    )
