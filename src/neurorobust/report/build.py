"""``neurorobust report``: ``reports/<name>/report.md`` and ``index.html`` from the store (and,
for foveation experiments, the checkpoint cache's networks for their figures).

For each experiment: a table of clean accuracy per model (n, 95% CI, approximate flag), one
figure per perturbation (noise, blur, each attack) with one line per model, the per-attack
table, the gradient-masking checklist per model where one was run, and the paper's claims next
to our numbers where a claims file maps to the experiment.
"""

from __future__ import annotations

import html
import re
import time
from pathlib import Path
from typing import Any

from ..evaluation.metrics import mean_sd
from ..specs import canonical_experiment
from ..store import ResultsStore
from .families import ReportContext, reporters
from .figures import curve_figure
from .tables import html_table, markdown_table, pct

__all__ = ["build_report", "copy_figures", "latest_rows"]


def latest_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (model, dataset, split, attack, metric, eps): the latest run's value of each seed,
    averaged over seeds (``params["seeds"]`` and ``params["sd"]`` added when there are several)."""
    per_seed: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        key = (r["model"], r["dataset"], r["split"], r["attack"], r["metric"], r["eps"], r["seed"])
        if key not in per_seed or r["run_id"] >= per_seed[key]["run_id"]:
            per_seed[key] = r
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for key, r in per_seed.items():
        groups.setdefault(key[:-1], []).append(r)
    out = []
    for group in groups.values():
        newest = max(group, key=lambda r: r["run_id"])
        values = [r["value"] for r in group if r["value"] is not None]
        if len(group) > 1 and values:
            mean, sd = mean_sd(values)
            params = {k: v for k, v in newest["params"].items() if k != "ci95"}
            newest = {**newest, "value": mean, "params": {**params, "seeds": len(values), "sd": round(sd, 5)}}
        out.append(newest)
    return sorted(out, key=lambda r: (r["model"], r["attack"], r["metric"], r["eps"] or 0.0))


def _safe_name(text: str) -> str:
    """A file name that is also a plain relative URL (no ':' that a browser would read as a scheme)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def _sections(store: ResultsStore, experiment: str, outdir: Path) -> list[tuple[str, str, Any]]:
    """(kind, title, payload) items shared by the Markdown and HTML renderers."""
    rows = latest_rows(store.results(experiment=experiment, done_only=True))
    items: list[tuple[str, str, Any]] = []
    clean = [r for r in rows if r["attack"] == "clean" and r["metric"] == "accuracy"]
    body = []
    for r in clean:
        lo, hi = r["params"].get("ci95", [None, None])
        approx = "yes (JPEG CIFAR-10)" if r["approximate"] else "no"
        body.append([r["model"], r["dataset"], pct(r["value"]), f"[{pct(lo)}, {pct(hi)}]", str(r["n"]), approx])
    items.append(
        ("table", "Clean accuracy (%)", (["model", "dataset", "accuracy", "95% CI", "n", "approximate"], body))
    )
    attacks = sorted({r["attack"] for r in rows if r["attack"] != "clean" and r["eps"] is not None})
    for attack in attacks:
        probe = attack.startswith("check:")  # one point per probe: a table, no figure
        fig = None if probe else curve_figure(rows, attack, outdir / f"{_safe_name(attack)}.png")
        if fig is not None:
            items.append(("figure", f"Accuracy under {attack}", fig.name))
        sub = [r for r in rows if r["attack"] == attack and r["metric"] == "accuracy"]
        eps_values = sorted({r["eps"] for r in sub})
        models = sorted({r["model"] for r in sub})
        table = []
        for m in models:
            by_eps = {r["eps"]: r["value"] for r in sub if r["model"] == m}
            table.append([m] + [pct(by_eps.get(e)) for e in eps_values])
        label = "sigma" if attack in ("noise", "blur") else "eps"
        items.append(
            ("table", f"{attack}: accuracy (%) by {label}", (["model"] + [f"{label}={e:g}" for e in eps_values], table))
        )
    minimal = minimal_attacks_table(rows)
    if minimal is not None:
        items.append(("table", "Minimal-perturbation attacks (mean ± sd over seeds)", minimal))
    other = [r for r in rows if r["metric"] not in ("accuracy",) and r["attack"] not in ("clean", "checklist")]
    if other:
        body = [
            [
                r["model"],
                r["attack"],
                r["metric"],
                "—" if r["eps"] is None else f"{r['eps']:g}",
                "—" if r["value"] is None else f"{r['value']:.4g}",
                str(r["n"]),
            ]
            for r in other
        ]
        items.append(("table", "Other metrics", (["model", "attack", "metric", "eps", "value", "n"], body)))
    ctx = ReportContext(experiment=experiment, store=store, outdir=outdir, rows=rows)
    for reporter in reporters():  # each paper's own tables and figures (report/families/)
        if reporter.applies(ctx):
            items += reporter.items(ctx)
    claims = claims_table(experiment, rows)
    if claims is not None:
        items.append(("table", "Paper claims next to our numbers", claims))
    verdicts = [r for r in rows if r["attack"] == "checklist"]
    if verdicts:
        body = []
        for r in verdicts:
            worst = [w for w in rows if w["attack"] == "worst-case" and w["model"] == r["model"]]
            paper = [w for w in rows if w["attack"] == "worst-case-paper-protocol" and w["model"] == r["model"]]
            curve = ", ".join(
                [f"{w['eps']:g}: {pct(w['value'])}" for w in sorted(worst, key=lambda w: w["eps"])]
                # eps attacked only without the EOT/BPDA the model calls for: the paper's protocol, not a worst case
                + [
                    f"{w['eps']:g}: {pct(w['value'])} (paper's protocol only)"
                    for w in sorted(paper, key=lambda w: w["eps"])
                ]
            )
            body.append(
                [
                    r["model"],
                    r["params"].get("verdict", ""),
                    curve,
                    "mean over draws" if r["params"].get("stochastic") else "deterministic",
                ]
            )
        items.append(
            (
                "table",
                "Verdict and worst-case robust accuracy (%) by eps",
                (["model", "verdict", "worst case over all attacks", "judged on"], body),
            )
        )
    checks = store.checks(experiment=experiment, done_only=True)
    if checks:
        latest: dict[tuple[str, str], dict[str, Any]] = {}
        for c in checks:
            latest[(c["model"], c["name"])] = c
        body = [
            [
                c["model"],
                c["name"],
                ("not judged" if (c["advice"] or "").startswith("not judged") else "n/a")
                if c["passed"] is None
                else ("pass" if c["passed"] else "FAIL"),
                "—" if c["value"] is None else f"{c['value']:.4g}",
                "—" if c["threshold"] is None else f"{c['threshold']:.4g}",
                c["advice"] or "",
            ]
            for c in sorted(latest.values(), key=lambda c: (c["model"], c["name"]))
        ]
        items.append(
            (
                "table",
                "Gradient-masking checklist (docs/checks.md)",
                (["model", "check", "result", "value", "threshold", "advice"], body),
            )
        )
    return items


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.4g}"


_MINIMAL_METRICS = ("median_min_eps", "score_sq_l2_per_dim", "median_l2", "success_rate")


def minimal_attacks_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]] | None:
    """Model x (attack, metric) for the unbounded attacks (minimal eps, perturbation scores, success
    rates), from :func:`latest_rows` output (means over seeds, with their sd); ``None`` if there are none."""
    picked = [r for r in rows if r["eps"] is None and r["metric"] in _MINIMAL_METRICS and r["value"] is not None]
    if not picked:
        return None
    order = {m: i for i, m in enumerate(_MINIMAL_METRICS)}
    columns = sorted({(r["attack"], r["metric"]) for r in picked}, key=lambda c: (c[0], order[c[1]]))
    cells: dict[tuple[str, str, str], str] = {}
    for r in picked:
        sd = r["params"].get("sd")
        shown = f"{r['value']:.4g}" + (f" ± {sd:.2g}" if sd and sd == sd else "")
        cells[(r["model"], r["attack"], r["metric"])] = shown
    clean = {r["model"]: r["value"] for r in rows if r["attack"] == "clean" and r["metric"] == "accuracy"}
    models = sorted({r["model"] for r in picked})
    header = ["model", "clean acc (%)"] + [f"{a} {m}" for a, m in columns]
    body = [[m, pct(clean.get(m))] + [cells.get((m, a, k), "—") for a, k in columns] for m in models]
    return header, body


def paper_values(experiment: str, claims_dir: Path | None = None) -> dict[tuple[str, str, float | None], float]:
    """``{(model, attack, eps): value}`` of the absolute accuracy claims mapped to ``experiment`` (in %)."""
    from ..claims import claims_paths, load_claims

    out: dict[tuple[str, str, float | None], float] = {}
    for path in claims_paths(claims_dir):
        for c in load_claims(path).claims:
            mapped = c.experiment == canonical_experiment(experiment)
            if mapped and c.kind == "absolute" and c.metric == "accuracy" and c.value is not None:
                out[(c.model, c.attack, c.eps)] = c.value * (100 if c.unit == "fraction" else 1)
    return out


def claims_table(
    experiment: str, rows: list[dict[str, Any]], claims_dir: Path | None = None
) -> tuple[list[str], list[list[str]]] | None:
    """Paper claims mapped to ``experiment`` with ours and the verdict (DESIGN §7), or ``None``."""
    from ..claims import claims_paths, judge, load_claims, ours_for

    body = []
    for path in claims_paths(claims_dir):
        cf = load_claims(path)
        for c in cf.claims:
            if c.experiment != canonical_experiment(experiment):
                continue
            ours = ours_for(c, rows)
            base = ours_for(c, rows, model=c.baseline_model) if c.kind in ("relative", "direction") else None
            j = judge(c, ours, base)
            shown = _fmt(j.ours)
            if base is not None and ours is not None:
                shown = f"ratio {_fmt(j.ours)} ({_fmt(ours)} / {_fmt(base)})"
            note = c.reason if not c.comparable else (c.footnote or ("" if c.headline else "not the headline table"))
            if c.not_judged:
                note = f"not judged: {c.not_judged}"
            body.append(
                [
                    f"{path.stem}:{c.id}",
                    f"{c.table} {c.row}".strip(),
                    c.model + (f" / {c.baseline_model}" if c.baseline_model else ""),
                    c.metric,
                    c.attack,
                    "—" if c.eps is None else f"{c.eps:g}",
                    (
                        "×"
                        if c.kind == "relative"
                        else ">1"
                        if c.kind == "direction" and (c.value or 0) > 1
                        else "<1"
                        if c.kind == "direction"
                        else ""
                    )
                    + _fmt(c.value) * (c.kind != "direction")
                    + (f" ± {c.sd:g}" if c.sd else ""),
                    shown,
                    j.verdict,
                    note,
                ]
            )
    if not body:
        return None
    return ["claim", "table / row", "model", "metric", "attack", "eps", "paper", "ours", "verdict", "note"], body


def build_report(
    store: ResultsStore, name: str, outdir: str | Path = "reports", *, experiments: list[str] | None = None
) -> Path:
    """Write ``<outdir>/<name>/report.md`` and ``index.html``; returns the report folder.

    Parameters
    ----------
    store : ResultsStore
    name : str
        Report name (folder); also the experiment shown unless ``experiments`` is given.
    outdir : path, default='reports'
    experiments : list of str, optional
        Experiments to include (default: ``[name]``, or every experiment for ``name='all'``).
    """
    from ..errors import StoreError

    folder = Path(outdir) / name
    folder.mkdir(parents=True, exist_ok=True)
    if experiments is None:
        experiments = store.experiments() if name == "all" else [name]
    known = set(store.experiments())
    missing = [e for e in experiments if e not in known]
    if missing or not experiments:
        raise StoreError(
            f"No results for experiment(s) {missing or experiments} in {store.path}. "
            f"Known experiments: {', '.join(sorted(known)) or 'none yet (run `neurorobust evaluate SPEC`)'}."
        )
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    md = [f"# neurorobust report: {name}", "", f"Built {stamp} from `{store.path}`.", ""]
    body_html = [
        f"<h1>neurorobust report: {html.escape(name)}</h1>",
        f"<p>Built {stamp} from <code>{html.escape(str(store.path))}</code>.</p>",
    ]
    from .leaderboard import leaderboard_html, leaderboard_markdown, leaderboard_rows

    board = leaderboard_rows(store, experiments)
    md += ["## Leaderboard", "", leaderboard_markdown(board)]
    body_html += ["<h2>Leaderboard</h2><p>Click a column header to sort.</p>", leaderboard_html(board)]
    for exp in experiments:
        sub = folder if len(experiments) == 1 else folder / exp
        prefix = "" if len(experiments) == 1 else f"{exp}/"
        md += [f"## Experiment `{exp}`", ""]
        body_html.append(f"<h2>Experiment <code>{html.escape(exp)}</code></h2>")
        for kind, title, payload in _sections(store, exp, sub):
            md += [f"### {title}", ""]
            body_html.append(f"<h3>{html.escape(title)}</h3>")
            if kind == "table":
                md += [markdown_table(*payload), ""]
                body_html.append(html_table(*payload))
            else:
                md += [f"![{title}]({prefix}{payload})", ""]
                body_html.append(f'<img src="{html.escape(prefix + payload)}" alt="{html.escape(title)}">')
    (folder / "report.md").write_text("\n".join(md))
    style = (
        "body{font-family:sans-serif;max-width:980px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;"
        "text-align:right}th{background:#f0f0f0}img{max-width:100%}th[title]{cursor:pointer}"
    )
    (folder / "index.html").write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>neurorobust: {html.escape(name)}</title>"
        f"<style>{style}</style></head><body>{''.join(body_html)}</body></html>\n"
    )
    return folder


def copy_figures(folder: str | Path, experiments: list[str], dest: str | Path) -> list[Path]:
    """Copy the figures of a report built by :func:`build_report` to ``dest/<experiment>_<file>``.

    This is how the docs' figures are made (``neurorobust report NAME --figures-to docs/figures``):
    from the same reporters as the report, never from separate scripts. Returns the files written.
    """
    import shutil

    folder, dest = Path(folder), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for exp in experiments:
        source = folder if len(experiments) == 1 else folder / exp
        for fig in sorted(source.glob("*.png")):
            target = dest / f"{exp}_{fig.name}"
            shutil.copyfile(fig, target)
            written.append(target)
    return written
