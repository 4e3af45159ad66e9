"""Kubo (PhD thesis, 2019): stochastic neurons (ch. 3) and SGBN gates (ch. 4), the thesis' tables next to ours.

The reporter applies to every experiment that a claims file of the thesis (its ``paper`` names Kubo)
maps claims to. Chapter-3 experiments (claims of Tables / Figs 3.x) get the networks' table (train and
test accuracy, FGSM with one draw and with EOT/BPDA, PGD-20, worst case, checklist) and the figures
``binary.png``, ``dropout.png``, ``l1.png``, ``l2.png``; chapter-4 experiments get Table 4.11, BIM and
ILL (Fig. 4.4), the transfer table (Table 4.8) and the figures ``fgsm_one_draw.png``,
``bim_one_draw.png``, ``ill_one_draw.png`` (not ``fgsm.png``: that is the report's own figure of the
``fgsm`` attack). Both end with the claims table and the DESIGN §7 rule applied at the experiment's
(reduced) scale. ``neurorobust report NAME --figures-to docs/figures`` writes docs/stochastic.md's
figures as ``docs/figures/<experiment>_<file>``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...claims import Claim, claims_paths, judge, load_claims
from ...plotting import plt
from ...specs import canonical_experiment
from ..figures import distinct_styles, save_with_legend
from ..tables import mean_sd_text
from . import ReportContext, Reporter, ReportItem, register_reporter

__all__ = ["StochasticReporter", "thesis_claims"]

#: The thesis' claims files are those whose ``paper`` starts with its author.
AUTHOR = "Kubo"
_BINARY = ("-1CNN", "-MLP", "-2CNN")  # chapter 3's binary-neuron networks
_EOT = " [EOT/BPDA]"
_SGBN_ORDER = ("SGBN", "1W-SGBN", "SGBN (DT)", "SGBN ±1", "SGBN shuffled", "BNN+PGD", "BNN (ST)+PGD", "SAP", "CNN-BIN")

Row = dict[str, Any]
ClaimIndex = dict[tuple[str, str, float | None], Claim]


def thesis_claims(experiment: str, claims_dir: Path | None = None) -> list[tuple[str, Claim]]:
    """``(claims file stem, claim)`` of the thesis' claims mapped to ``experiment``."""
    out: list[tuple[str, Claim]] = []
    for path in claims_paths(claims_dir):
        cf = load_claims(path)
        if cf.paper.startswith(AUTHOR):
            out += [(path.stem, c) for c in cf.claims if c.experiment == canonical_experiment(experiment)]
    return out


def _chapters(claims: list[tuple[str, Claim]]) -> set[int]:
    """The thesis chapters the claims come from (first number of "Table 4.11", "§3.2.4 / Fig. 3.9", ...)."""
    found = (re.search(r"(\d+)\.\d", c.table) for _, c in claims)
    return {int(m.group(1)) for m in found if m}


def _index(claims: list[tuple[str, Claim]]) -> ClaimIndex:
    return {
        (c.model, c.attack, None if c.eps is None else round(c.eps, 4)): c for _, c in claims if c.kind == "absolute"
    }


def _cell(rows: list[Row], model: str, attack: str, eps: float | None, metric: str = "accuracy") -> str:
    """Our accuracy in % (``mean ± sd`` over seeds when there are several), ``—`` when not run."""
    for r in rows:
        if r["model"] != model or r["attack"] != attack or r["metric"] != metric or r["value"] is None:
            continue
        if (eps is None) != (r["eps"] is None) or (eps is not None and abs(r["eps"] - eps) > 1e-9):
            continue
        sd, seeds = r["params"].get("sd"), r["params"].get("seeds", 1)
        return f"{100 * r['value']:.1f}" + (f" ± {100 * sd:.1f}" if seeds > 1 and sd is not None else "")
    return "—"


def _thesis(claims: ClaimIndex, model: str, attack: str, eps: float | None) -> str:
    c = claims.get((model, attack, None if eps is None else round(eps, 4)))
    return "—" if c is None else f"{c.value:g}" + (f" ± {c.sd:g}" if c.sd else "")


def _verdicts(rows: list[Row]) -> dict[str, str]:
    return {r["model"]: r["params"].get("verdict", "") for r in rows if r["attack"] == "checklist"}


def _curves(
    rows: list[Row],
    models: list[str],
    attack: str | Callable[[str], str],
    path: Path,
    title: str,
    styles: Callable[[str], str] | None = None,
) -> str | None:
    """Accuracy against eps, one line per model with a ± sd band; the file name, or ``None`` if nothing to draw."""
    fig, ax = plt.subplots(figsize=(5.8, 3.9), dpi=110)
    ax.set_prop_cycle(distinct_styles())
    drawn = 0
    for model in models:
        att = attack(model) if callable(attack) else attack
        pts = sorted(
            (r["eps"], r["value"], r["params"].get("sd") or 0.0)
            for r in rows
            if r["model"] == model and r["attack"] == att and r["metric"] == "accuracy" and r["eps"] is not None
        )
        if not pts:
            continue
        drawn += 1
        xs, ys, sds = zip(*pts, strict=True)
        style = (styles(model),) if styles else ()
        line = ax.plot(xs, [100 * v for v in ys], *style, marker="o", ms=3, label=model)[0]
        lo = [100 * (v - s) for v, s in zip(ys, sds, strict=True)]
        hi = [100 * (v + s) for v, s in zip(ys, sds, strict=True)]
        ax.fill_between(xs, lo, hi, alpha=0.12, color=line.get_color())
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("FGSM eps" if "fgsm" in title.lower() else "eps")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=9)
    save_with_legend(fig, ax, path, len(models), fontsize=7, beside_fontsize=7)
    plt.close(fig)
    return path.name


def _train_accuracy(ctx: ReportContext) -> dict[str, list[float]]:
    """Per model label, the last epoch's (running) training accuracy of each seed, from the checkpoints."""
    out: dict[str, dict[int, float]] = {}
    for run in ctx.store.runs(name=ctx.experiment):
        if run["status"] != "done" or not run.get("train_key"):
            continue
        info = Path(ctx.checkpoints_dir) / "checkpoints" / f"{run['train_key']}.json"
        if not info.is_file():
            continue
        meta = json.loads(info.read_text())
        history = meta.get("history") or []
        spec = json.loads(run["spec"]) if isinstance(run["spec"], str) else run["spec"]
        label = spec.get("label")
        if history and "train_acc" in history[-1] and label:
            out.setdefault(label, {})[meta.get("spec", {}).get("seed", 0)] = history[-1]["train_acc"]
    return {k: list(v.values()) for k, v in out.items()}


def _figure(items: list[ReportItem], title: str, name: str | None) -> None:
    if name is not None:
        items.append(("figure", title, name))


def _chapter3(ctx: ReportContext, claims: ClaimIndex) -> list[ReportItem]:
    exp, rows, out = ctx.experiment, ctx.rows, ctx.outdir
    verdict = _verdicts(rows)
    train = _train_accuracy(ctx)
    models = sorted({r["model"] for r in rows if not r["model"].endswith(_EOT.strip())})
    body = []
    for m in sorted(models, key=lambda s: (not s.endswith(_BINARY), s)):
        e = m + _EOT
        body.append(
            [
                m,
                mean_sd_text(train.get(m, []), digits=1, scale=100),
                _cell(rows, m, "clean", None),
                _thesis(claims, m, "clean", None),
                _cell(rows, m, "fgsm-1draw", 0.09),
                _cell(rows, m, "fgsm-1draw", 0.13),
                _cell(rows, m, "fgsm-1draw", 0.25),
                _thesis(claims, m, "fgsm-1draw", 0.25),
                _cell(rows, e, "fgsm", 0.25),
                _cell(rows, e, "pgd-20", 0.25),
                _cell(rows, e, "worst-case", 0.25),
                verdict.get(e, "—"),
            ]
        )
    header = [
        "network", "train acc (last epoch)", "test acc", "thesis test", "FGSM 1 draw, eps .09", ".13", ".25",
        "thesis .25", "FGSM EOT/BPDA .25", "PGD-20 EOT/BPDA .25", "worst case .25", "checklist (seed 0)",
    ]  # fmt: skip
    items: list[ReportItem] = [
        ("table", f"{exp}: chapter-3 networks (accuracy %, mean ± sd over seeds)", (header, body))
    ]
    binary = [m for m in models if m.endswith(_BINARY)]
    _figure(
        items,
        "FGSM accuracy of the binary-neuron networks, one draw (solid) and EOT/BPDA (dashed)",
        _curves(
            rows,
            binary + [m + _EOT for m in binary],
            lambda m: "fgsm" if m.endswith(_EOT) else "fgsm-1draw",
            out / "binary.png",
            f"{exp}: FGSM, one draw (solid) and EOT/BPDA (dashed)",
            styles=lambda m: "--" if m.endswith(_EOT) else "-",
        ),
    )
    groups = {
        "dropout": [m for m in models if m == "1CNN" or "dropout" in m],
        "l1": [m for m in models if m == "1CNN" or " L1 " in m],
        "l2": [m for m in models if m == "1CNN" or " L2 " in m],
    }
    for name, ms in groups.items():
        title = f"{exp}: FGSM (one draw), {name}"
        _figure(
            items,
            f"FGSM (one draw) of the 1CNN with {name.replace('l', 'L')}",
            _curves(rows, ms, "fgsm-1draw", out / f"{name}.png", title),
        )
    return items


def _chapter4(ctx: ReportContext, claims: ClaimIndex) -> list[ReportItem]:
    exp, rows, out = ctx.experiment, ctx.rows, ctx.outdir
    verdict = _verdicts(rows)
    models = [m for m in sorted({r["model"] for r in rows}) if not m.endswith(_EOT.strip())]
    models.sort(key=lambda m: next((i for i, o in enumerate(_SGBN_ORDER) if m.startswith(o)), 99))
    body = []
    for m in models:
        e = m + _EOT
        row = [m, _cell(rows, m, "clean", None) + " (" + _thesis(claims, m, "clean", None) + ")"]
        for eps in (0.1, 0.2, 0.3):
            row.append(_cell(rows, m, "fgsm-1draw", eps) + " (" + _thesis(claims, m, "fgsm-1draw", eps) + ")")
        row += [_cell(rows, e, "fgsm", 0.3), _cell(rows, e, "worst-case", 0.3), verdict.get(e, "—")]
        body.append(row)
    header = [
        "network", "clean (thesis)", "FGSM 1 draw .1 (thesis)", ".2 (thesis)", ".3 (thesis)",
        "FGSM EOT/BPDA .3", "worst case .3", "checklist (seed 0)",
    ]  # fmt: skip
    items: list[ReportItem] = [("table", f"{exp}: Table 4.11 (accuracy %, mean ± sd over seeds)", (header, body))]
    title = f"{exp}: FGSM, one draw"
    _figure(
        items,
        "FGSM on the chapter-4 models, one draw",
        _curves(rows, models, "fgsm-1draw", out / "fgsm_one_draw.png", title),
    )
    iterative = [m for m in models if _cell(rows, m, "bim-thesis-1draw", 0.1) != "—"]
    if iterative:
        body = [
            [m]
            + [_cell(rows, m, f"{a}-thesis-1draw", eps) for a in ("bim", "ill") for eps in (0.06, 0.1)]
            + [_cell(rows, m + _EOT, a, eps) for a in ("bim", "ill") for eps in (0.06, 0.1)]
            + [_thesis(claims, m, "bim-thesis-1draw", 0.06), _thesis(claims, m, "bim-thesis-1draw", 0.1)]
            for m in iterative
        ]
        # the thesis' BIM/ILL (eps = step size, eq. 2.27) on one draw; ours (eps-ball, eps/T steps) with EOT/BPDA
        header = ["network"] + [f"{a} as the thesis, 1 draw {eps:g}" for a in ("BIM", "ILL") for eps in (0.06, 0.1)]
        header += [f"{a} EOT/BPDA {eps:g}" for a in ("BIM", "ILL") for eps in (0.06, 0.1)]
        header += ["thesis BIM .06", "thesis BIM .1"]
        items.append(("table", f"{exp}: BIM and ILL, T = 10 (Fig. 4.4)", (header, body)))
        for a in ("bim", "ill"):
            title = f"{exp}: {a.upper()} as the thesis (T = 10, eps = step size), one draw"
            _figure(items, title, _curves(rows, iterative, f"{a}-thesis-1draw", out / f"{a}_one_draw.png", title))
    sources = ["SGBN", "SAP", "BNN+PGD", "CNN-BIN", "CNN"]
    src_labels = {s: next((m for m in models if m.split(" (reduced")[0] == s), s) for s in sources}
    body = []
    for m in models:
        cells = [
            _cell(rows, m, f"transfer from {src_labels[s]} (1 draw)", 0.3)
            + f" ({_thesis(claims, m, f'transfer from {src_labels[s]} (1 draw)', 0.3)})"
            for s in sources
        ]
        eot = [_cell(rows, m + _EOT, f"transfer from {src_labels[s]}", 0.3) for s in sources]
        if any(c != "— (—)" for c in cells):
            body.append([m, *cells, " / ".join(eot)])
    if body:
        header = ["target \\ source", *sources, "EOT/BPDA on the source (same order)"]
        items.append(
            ("table", f"{exp}: FGSM eps 0.3 transferred between models (Table 4.8; ours (thesis))", (header, body))
        )
    return items


def _claims_at_scale(ctx: ReportContext, claims: list[tuple[str, Claim]]) -> list[ReportItem]:
    """The claims table with one more column: the DESIGN §7 rule applied at this (reduced) scale."""
    from ..build import claims_table  # build imports the reporters

    table = claims_table(ctx.experiment, ctx.rows)
    if table is None:
        return []
    by_id = {f"{stem}:{c.id}": (stem, c) for stem, c in claims}
    body = []
    for row in table[1]:
        stem, c = by_id.get(row[0], ("", None))
        at_scale = ""
        if c is not None and row[8] == "not comparable" and c.kind == "absolute" and row[7] != "—":
            at_scale = judge(c.model_copy(update={"comparable": True, "reason": ""}), float(row[7])).verdict
        body.append([row[0].removeprefix(f"{stem}:"), *row[1:3], *row[4:9], at_scale or "—"])
    header = [
        "claim",
        "table / row",
        "model",
        "attack",
        "eps",
        "thesis",
        "ours",
        "verdict",
        "rule applied at this scale",
    ]
    return [
        ("table", f"Claims of the thesis for {ctx.experiment}, with the rule applied at this scale", (header, body))
    ]


@register_reporter("stochastic", paper="Kubo, Learning stochastic weight masking to resist adversarial attacks, 2019")
class StochasticReporter(Reporter):
    """The thesis' tables next to ours and its figures, for experiments its claims map to."""

    def applies(self, ctx: ReportContext) -> bool:
        return bool(thesis_claims(ctx.experiment))

    def items(self, ctx: ReportContext) -> list[ReportItem]:
        claims = thesis_claims(ctx.experiment)
        index = _index(claims)
        chapters = _chapters(claims)
        items: list[ReportItem] = []
        if 3 in chapters:
            items += _chapter3(ctx, index)
        if 4 in chapters:
            items += _chapter4(ctx, index)
        return items + _claims_at_scale(ctx, claims)
