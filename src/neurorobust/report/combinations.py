"""Mechanisms combined with adversarial training: each combination against its AT-only twin, paired per image.

A combination is a sweep variant whose spec names a ``twin``: the variant of the same experiment that differs
from it only by the mechanism (``configs/combo_*.toml``). Both are evaluated by the same suite on the same test
images (the worst-case rows carry a digest of the images and each image's worst-case accuracy), so their gap
at each eps is a paired difference: the mean over images of (combination - twin), with the normal 95% interval
of that mean (:func:`~neurorobust.evaluation.metrics.paired_difference`). Seeds are pooled image by image
(seed s of the combination with seed s of its twin). A gain is claimed only where the interval excludes zero;
a combination whose single-draw (non-adaptive, paper's protocol) worst case beats the twin while its adaptive
gap does not is marked so.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np

from ..evaluation.metrics import decode_points, paired_difference
from ..store import ResultsStore
from .tables import markdown_table

__all__ = ["COMBINATION_COLUMNS", "combination_markdown", "combination_rows"]

COMBINATION_COLUMNS = [
    "experiment",
    "combination",
    "twin (AT only)",
    "dataset",
    "eps",
    "clean: combination / twin (%)",
    "worst case: combination / twin (%)",
    "paired gap (pts)",
    "95% interval (pts)",
    "images",
    "finding",
    "verdict (combination)",
]


def _latest(rows: list[dict[str, Any]]) -> dict[tuple[Any, ...], dict[str, Any]]:
    """The newest row per (experiment, model, seed, attack, eps)."""
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in sorted(rows, key=lambda r: (r["run_id"], r["id"])):
        eps = None if r["eps"] is None else float(f"{r['eps']:.3g}")
        out[(r["experiment"], r["model"], r["seed"], r["attack"], eps)] = r
    return out


def _twins(store: ResultsStore) -> dict[tuple[str, str], str]:
    """(experiment, label) -> twin label, from the stored specs of finished runs."""
    out = {}
    for run in store.runs(status="done"):
        spec = run.get("spec") or {}
        if isinstance(spec, dict) and spec.get("twin") and spec.get("label"):
            out[(spec.get("name", ""), spec["label"])] = spec["twin"]
    return out


def combination_rows(store: ResultsStore, experiments: list[str] | None = None) -> list[dict[str, Any]]:
    """One dict per (combination, eps) with :data:`COMBINATION_COLUMNS`, for every combination in the store
    whose twin was evaluated on the same images."""
    twins = _twins(store)
    suites = {
        run["id"]: (run.get("spec") or {}).get("evaluate", {}).get("suite", "")
        for run in store.runs(status="done")
        if isinstance(run.get("spec"), dict)
    }
    rows = [r for r in store.results(done_only=True) if experiments is None or r["experiment"] in experiments]
    latest = _latest(rows)
    verdicts: dict[tuple[str, str], set[str]] = defaultdict(set)
    for (exp, model, _seed, attack, _eps), r in latest.items():
        if attack == "checklist":
            verdicts[(exp, model)].add(str(r["params"].get("verdict", "")))
    out = []
    for (exp, combo), twin in sorted(twins.items()):
        per_eps: dict[float, dict[str, Any]] = defaultdict(lambda: {"a": [], "b": [], "pa": [], "pb": []})
        clean: dict[str, list[float]] = {"a": [], "b": []}
        for (e, model, seed, attack, eps), r in latest.items():
            if e != exp or model != combo:
                continue
            other = latest.get((exp, twin, seed, attack, eps))
            if other is None:
                continue
            if attack == "clean" and r["metric"] == "accuracy":
                clean["a"].append(r["value"])
                clean["b"].append(other["value"])
            elif attack == "worst-case" and eps is not None:
                pa, pb = r["params"].get("points"), other["params"].get("points")
                same_images = r["params"].get("images") and r["params"].get("images") == other["params"].get("images")
                if not (pa and pb and same_images and len(pa) == len(pb)):
                    continue  # older rows, or other images: no pairing
                per_eps[eps]["a"].append(decode_points(pa))
                per_eps[eps]["b"].append(decode_points(pb))
                per_eps[eps].setdefault("suites", set()).update({suites.get(r["run_id"]), suites.get(other["run_id"])})
            elif attack == "worst-case-paper-protocol" and eps is not None:
                per_eps[eps]["pa"].append(r["value"])
                twin_worst = latest.get((exp, twin, seed, "worst-case", eps))
                if twin_worst is not None:
                    per_eps[eps]["pb"].append(twin_worst["value"])
        for eps, d in sorted(per_eps.items()):
            if not d["a"]:
                continue
            a, b = np.concatenate(d["a"]), np.concatenate(d["b"])
            gap, lo, hi, n = paired_difference(a, b)
            if n == 0:
                continue
            out.append(
                {
                    "experiment": exp,
                    "combination": combo,
                    "twin (AT only)": twin,
                    "dataset": next(r["dataset"] for r in rows if r["experiment"] == exp),
                    "eps": f"{eps:g}",
                    "clean: combination / twin (%)": _pair(clean["a"], clean["b"]),
                    "worst case: combination / twin (%)": _pair(
                        [float(np.nanmean(x)) for x in d["a"]], [float(np.nanmean(x)) for x in d["b"]]
                    ),
                    "paired gap (pts)": round(100 * gap, 1),
                    "95% interval (pts)": "—" if math.isnan(lo) else f"[{100 * lo:.1f}, {100 * hi:.1f}]",
                    "images": n,
                    "finding": _finding(lo, hi, d["pa"], d["pb"], d.get("suites", set())),
                    "verdict (combination)": "; ".join(sorted(v for v in verdicts.get((exp, combo), set()) if v))
                    or "not checked",
                }
            )
    return out


def _pair(a: list[float], b: list[float]) -> str:
    if not a or not b:
        return "—"
    return f"{100 * float(np.mean(a)):.1f} / {100 * float(np.mean(b)):.1f}"


def _finding(lo: float, hi: float, paper_combo: list[float], twin_worst: list[float], suites: set[Any]) -> str:
    if math.isnan(lo):
        return "too few images"
    if suites != {"full"}:
        # a gain is claimed only under the full adaptive suite
        lighter = ", ".join(sorted(str(x) for x in suites - {"full"}))
        return f"not judged: suite {lighter}, not the full suite"
    if lo > 0:
        return "gain (interval excludes 0)"
    if hi < 0:
        return "loss (interval excludes 0)"
    if paper_combo and twin_worst and float(np.mean(paper_combo)) > float(np.mean(twin_worst)):
        return "no difference; a gain only under the non-adaptive (single-draw) attacks"
    return "no difference"


def combination_markdown(rows: list[dict[str, Any]]) -> str:
    """The combinations section of the leaderboard as Markdown (empty string when there is none)."""
    if not rows:
        return ""
    head = (
        "## Combined with adversarial training\n\n"
        "Each mechanism trained with adversarial training against its AT-only twin (same data, budget and "
        "evaluation), on the same images: the paired gap is the mean per-image difference in worst-case "
        "accuracy (combination - twin) with its 95% interval; a gain is claimed only where the interval "
        "excludes 0.\n\n"
    )
    return head + markdown_table(COMBINATION_COLUMNS, [[str(r[c]) for c in COMBINATION_COLUMNS] for r in rows]) + "\n"
