"""The attack suites (``quick``, ``seed-paper``, ``full``) and the checklist's probes (DESIGN §5).

:func:`run_attack_suite` attacks one model on one evaluation subset, judges random models on the
mean over draws, keeps per point the lowest accuracy over all attacks (worst case), runs the
gradient-masking checklist (:mod:`neurorobust.evaluation.checklist`) and returns rows, checks and
the verdict. Attacks are chosen automatically from the model's declarations (EOT for random
models, declared or detected; BPDA where a surrogate is declared).
"""

from __future__ import annotations

import itertools
import math
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..attacks import (
    ATTACKS,
    BPDA,
    EOT,
    PGD,
    Attack,
    AttackResult,
    attack_loss,
    is_stochastic,
    project,
    surrogate_of,
)
from ..attacks.wrappers import EOTModel
from ..data import balanced_subset
from ..errors import InvalidParameterError
from ..modes import eval_mode
from ..specs import AttackEntry, EvalSpec
from ..store import ResultRow
from .checklist import (
    MIN_POINTS,
    CheckResult,
    detect_randomness,
    effective_threshold,
    verdict,
    within_threshold,
    zero_gradient_fraction,
)
from .checklist import TOLERANCES as TOL
from .metrics import median_finite, median_min_eps, perturbation_score, robust_accuracy, wilson_interval

__all__ = ["AttackRun", "SuiteOutcome", "plan_suite", "point_correct", "run_attack_suite"]

ProgressFn = Callable[[dict[str, Any]], None]


@dataclass
class AttackRun:
    """One attack at one eps on a set of points of the evaluation subset."""

    label: str
    key: str
    eps: float | None
    idx: torch.Tensor
    correct: torch.Tensor  # per point: probability of a correct prediction after the attack (mean over draws)
    result: AttackResult
    seconds: float
    white_box: bool = True
    adaptive: bool = True  # False: run without the EOT/BPDA the model's declarations call for
    norm: str | None = None  # the attack's threat model, where it has one ("linf", "l2")
    cumulative: torch.Tensor | None = None  # in a cascade: per point, accuracy after this attack and those before
    attacked_mask: torch.Tensor | None = None  # which points of idx the attack attacked (fewer in a cascade)

    @property
    def attacked(self) -> int:
        """How many points of ``idx`` the attack attacked."""
        return len(self.idx) if self.attacked_mask is None else int(self.attacked_mask.sum())


@dataclass
class SuiteOutcome:
    """Everything an attack suite produced."""

    rows: list[ResultRow] = field(default_factory=list)
    runs: list[AttackRun] = field(default_factory=list)
    checks: list[CheckResult] = field(default_factory=list)
    verdict: str = ""
    worst_case: dict[float, float] = field(default_factory=dict)
    stochastic: bool = False


@dataclass
class _Planned:
    label: str
    attack: Attack
    eps: list[float] | None
    n: int | None
    white_box: bool = True
    adaptive: bool = True
    cascade: bool = False  # attack only the points still robust after the attacks before it (and the probes)


@torch.no_grad()
def point_correct(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, draws: int = 1, batch_size: int = 500
) -> torch.Tensor:
    """Per point, the fraction of ``draws`` eval-mode forward passes that predict ``y`` (DESIGN §5.8)."""
    with eval_mode(model):
        hits = torch.zeros(len(x))
        for _ in range(draws):
            preds = torch.cat([model(x[i : i + batch_size]).argmax(1).cpu() for i in range(0, len(x), batch_size)])
            hits += (preds == y.cpu()).float()
        return hits / draws


def _adv_correct(
    model: nn.Module, res: AttackResult, y: torch.Tensor, stochastic: bool, draws: int, batch_size: int
) -> torch.Tensor:
    """Per point, accuracy on ``res.x_adv``: the mean over ``draws`` for a random model (DESIGN §5.8),
    else the engine's recomputed success (clean errors count as fooled)."""
    return point_correct(model, res.x_adv, y, draws, batch_size) if stochastic else (~res.success).float()


def _num_classes(model: nn.Module, x: torch.Tensor) -> int:
    with eval_mode(model), torch.no_grad():
        return int(model(x[:1]).shape[1])


def plan_suite(
    spec: EvalSpec, num_classes: int, source_model: nn.Module | dict[str, nn.Module | None] | None = None
) -> list[_Planned]:
    """The attacks of ``spec.suite`` (before EOT/BPDA wrapping).

    ``source_model``: the transfer attack's source, or a dict of sources by transfer entry label
    (``""``: the default standard model) when entries name their own ``source``.
    """
    sources = source_model if isinstance(source_model, dict) else {"": source_model}
    source_model = sources.get("")
    norm = spec.norm

    def n_of(label: str, cap: int | None = None) -> int | None:
        # a suite attack runs on `limits[label]` points (never more than suite_n), else on suite_n (or n);
        # the subsets nest, so a capped attack covers a prefix of the others' points
        n = spec.suite_n
        if label in spec.limits:
            n = spec.limits[label] if n is None else min(n, spec.limits[label])
        return n if cap is None else min(cap, n) if n else cap

    plan: list[_Planned] = []
    cascade = spec.suite == "full" and spec.cascade
    if spec.suite in ("quick", "full"):
        plan.append(_Planned("fgsm", ATTACKS.create("fgsm", norm=norm), spec.eps, n_of("fgsm"), cascade=cascade))
    if spec.suite == "quick":
        plan.append(_Planned("pgd", ATTACKS.create("pgd", norm=norm, steps=20), spec.eps, n_of("pgd")))
    if spec.suite == "full":
        # AutoAttack's standard ensemble (APGD-CE, APGD-T, FAB-T, Square) plus ours; in a cascade the
        # white-box attacks run first and the black-box ones last, so that a black-box attack is only
        # ever tried on points that every white-box attack missed (its gap is the masking signal)
        white = [("apgd-ce", ATTACKS.create("apgd-ce", norm=norm, steps=100))]
        if num_classes >= 4:
            white.append(("apgd-t", ATTACKS.create("apgd-t", norm=norm, steps=100)))
        if num_classes >= 2:
            white.append(("fab-t", ATTACKS.create("fab-t", norm=norm, steps=100)))
        if num_classes >= 3:
            white.append(("apgd-dlr", ATTACKS.create("apgd-dlr", norm=norm, steps=100)))
        white.append(("pgd-100x5", ATTACKS.create("pgd", norm=norm, steps=100, restarts=5)))
        for label, attack in white:
            plan.append(_Planned(label, attack, spec.eps, n_of(label), cascade=cascade))
        if norm == "linf":
            square = ATTACKS.create("square", queries=5000)
            plan.append(_Planned("square", square, spec.eps, n_of("square", cap=200), white_box=False, cascade=cascade))
        else:  # Square is L-inf only: the decision-based Boundary attack is the L2 suite's gradient-free attack
            boundary = ATTACKS.create("boundary", steps=1000)
            plan.append(
                _Planned("boundary", boundary, spec.eps, n_of("boundary", cap=200), white_box=False, cascade=cascade)
            )
        if source_model is not None:
            inner = _source_wrap(ATTACKS.create("pgd", norm=norm, steps=100), source_model, spec)
            plan.append(
                _Planned(
                    "transfer",
                    ATTACKS.create("transfer", source_model=source_model, attack=inner),
                    spec.eps,
                    n_of("transfer"),
                    white_box=False,
                    cascade=cascade,
                )
            )
    for entry in spec.attacks:
        src = sources.get(entry.label or entry.name) if "source" in entry.params else source_model
        plan.append(_entry_to_plan(entry, spec, src))
    return plan


def _source_wrap(attack: Attack, source: nn.Module, spec: EvalSpec, adaptive: bool = True) -> Attack:
    """The attack run on a transfer source, with EOT/BPDA as the source's declarations call for."""
    if not adaptive:
        return attack
    return _wrap(attack, is_stochastic(source), surrogate_of(source), spec.eot_draws)


def _entry_to_plan(entry: AttackEntry, spec: EvalSpec, source_model: nn.Module | None) -> _Planned:
    params = dict(entry.params)
    if entry.name == "transfer":
        if source_model is None:
            raise InvalidParameterError(
                "source_model", "plan_suite", f"a trained source model for transfer entry {entry.label!r}", None
            )
        name = params.pop("attack", "pgd")
        inner_params = params.pop("attack_params", {})
        if "norm" in ATTACKS.get(name).parameters():
            inner_params = {"norm": spec.norm, **({"steps": 100} if name == "pgd" else {}), **inner_params}
        params.pop("source", None)
        params["source_model"] = source_model
        params["attack"] = _source_wrap(ATTACKS.create(name, **inner_params), source_model, spec, entry.adaptive)
    elif "norm" in ATTACKS.get(entry.name).parameters():
        params.setdefault("norm", spec.norm)  # an entry without a norm follows the suite's
    attack = ATTACKS.create(entry.name, **params)
    eps = entry.eps if entry.eps is not None else (spec.eps if attack.bounded else None)
    label = entry.label or entry.name
    n = entry.n if entry.n is not None else spec.limits.get(label)
    white_box = entry.name not in ("square", "boundary", "transfer")
    return _Planned(label, attack, eps, n, white_box=white_box, adaptive=entry.adaptive)


def _wrap(attack: Attack, stochastic: bool, surrogate: nn.Module | None, draws: int) -> Attack:
    if attack.key == "transfer":
        return attack  # crafted on the source model; judged on the target over draws by the suite
    if attack.key in ("square", "boundary"):
        # no gradient needed (no BPDA), but on a random model every margin, early stop and decision is
        # taken on the mean over draws (DESIGN §10): the attack sees the EOT model
        return EOT(attack=attack, draws=draws) if stochastic else attack
    wrapped: Attack = EOT(attack=attack, draws=draws) if stochastic else attack
    return BPDA(attack=wrapped, surrogate=surrogate) if surrogate is not None else wrapped


def _subset(y: torch.Tensor, n: int | None, seed: int) -> torch.Tensor:
    return balanced_subset(y, n, seed=seed) if n is not None and n < len(y) else torch.arange(len(y))


def run_attack_suite(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    spec: EvalSpec,
    *,
    base: dict[str, Any],
    seed: int = 0,
    progress: ProgressFn | None = None,
    sink: Callable[[list[ResultRow]], Any] | None = None,
    source_model: nn.Module | None = None,
) -> SuiteOutcome:
    """Run ``spec.suite`` and the checklist on ``(x, y)``; rows go to ``sink`` as they are measured.

    Parameters
    ----------
    model : nn.Module
        The defence; images in [0, 1] to logits.
    x, y : torch.Tensor
        The evaluation subset.
    spec : EvalSpec
        Suite name, eps grid, norm, extra attacks, checklist subset size and EOT draws.
    base : dict
        Fields shared by every row (experiment, model label, dataset, seed, approximate).
    seed : int, default=0
        Seeds each attack's generator.
    source_model : nn.Module, optional
        A standard model trained on the same data, for the transfer attack.
    """
    out = SuiteOutcome()
    probe_idx = _subset(y, spec.check_n, seed)
    randomness = detect_randomness(model, x[probe_idx][:100])
    declared = is_stochastic(model)
    out.stochastic = stochastic = declared or randomness > 0
    draws = spec.eot_draws if stochastic else 1
    surrogate = surrogate_of(model)
    clean = point_correct(model, x, y, draws, spec.batch_size)
    plan = plan_suite(spec, _num_classes(model, x), source_model)
    total = len(plan) + 6
    step = 0

    def tick(what: str) -> None:
        nonlocal step
        step += 1
        if progress is not None:
            progress({"stage": "attack", "step": step, "steps": total, "what": what})

    def emit(rows: list[ResultRow]) -> None:
        out.rows.extend(rows)
        if sink is not None and rows:
            sink(rows)

    needs_adaptive = stochastic or surrogate is not None
    # per eps, per point: the lowest accuracy any attack has left so far (the cascade's "still robust")
    reached: dict[float, torch.Tensor] = {}
    for item in plan:
        idx = _subset(y, item.n, seed)
        attack = _wrap(item.attack, stochastic, surrogate, spec.eot_draws) if item.adaptive else item.attack
        gen_seed = _attack_seed(seed, item.label)
        done = _run_cascaded(model, x, y, idx, attack, item, reached, clean, stochastic, draws, spec, gen_seed)
        rows: list[ResultRow] = []
        for eps, r, correct, seconds, attacked_mask in done:
            run = AttackRun(
                item.label,
                item.attack.key,
                eps,
                idx,
                correct,
                r,
                seconds,
                item.white_box,
                item.adaptive,
                getattr(item.attack, "norm", None) or "linf",  # the attacks' own default
                attacked_mask=attacked_mask,
            )
            out.runs.append(run)
            if eps is not None:
                prev = reached.get(eps, clean).clone()
                prev[idx] = torch.minimum(prev[idx], torch.minimum(correct, clean[idx]))
                reached[eps] = prev
                if item.cascade:
                    run.cumulative = prev[idx]
            rows += _rows_for(run, base, item.attack, stochastic, x[0].numel(), clean[idx])
            if eps is None and run.norm == spec.norm:
                # a minimal attack's points count in the worst case too: projected onto each ball of the grid
                out.runs += _projected(model, x[idx], y[idx], run, spec, clean[idx], stochastic, draws)
        emit(rows)
        tick(item.label)

    def worst_rows() -> list[ResultRow]:
        worst, covered, paper = _worst_case(out.runs, clean, spec.eps, spec.norm, needs_adaptive)
        out.worst_case = worst
        rows = []
        for e in sorted({*worst, *paper}):
            over = sorted({r.label for r in out.runs if r.eps is not None and math.isclose(r.eps, e)})
            if e in worst:
                rows.append(_acc_row(base, "worst-case", e, worst[e], covered[e], {"over": over}))
            if e in paper:
                # a random model (or one with a surrogate): points attacked only without EOT/BPDA are the paper's
                # protocol, shown as such over every point, never the leaderboard's worst case (DESIGN §10)
                acc, n = paper[e]
                rows.append(_acc_row(base, "worst-case-paper-protocol", e, acc, n, {"over": over}))
        return rows

    # the suite's own curve, for monotone-in-eps
    out.worst_case = _worst_case(out.runs, clean, spec.eps, spec.norm, needs_adaptive)[0]
    if not spec.checklist:  # e.g. a seed paper's single-draw table for every seed, checked on another variant
        out.verdict = "not checked (evaluate.checklist = false)"
        emit(worst_rows())
        return out
    checks = _checklist(
        model,
        x,
        y,
        spec,
        out,
        probe_idx=probe_idx,
        clean=clean,
        draws=draws,
        surrogate=surrogate,
        randomness=randomness,
        declared=declared,
        base=base,
        emit=emit,
        tick=tick,
        seed=seed,
    )
    out.checks = checks
    out.verdict = verdict(checks)
    # the reported number: worst case over the suite's attacks *and* every probe of the checklist
    emit(worst_rows())
    reported = {f"{eps:g}": round(acc, 5) for eps, acc in out.worst_case.items()}
    emit(
        [
            ResultRow(
                **base,
                attack="checklist",
                metric="masking_suspected",
                value=float(any(c.failed for c in checks)),
                n=len(probe_idx),
                params={
                    "verdict": out.verdict,
                    "reported_worst_case": reported,
                    "stochastic": stochastic,
                    "draws": draws,
                    "not_judged": [c.name for c in checks if c.not_judged],
                },
            )
        ]
    )
    return out


def _attack_seed(seed: int, label: str) -> int:
    """A generator seed per attack of a suite: attacks of one evaluation start from different random points
    (a shared seed gave APGD-DLR and PGD's first restart the same start), reproducibly."""
    return (seed * 1_000_003 + zlib.crc32(label.encode())) % 2**63


def _run_cascaded(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    idx: torch.Tensor,
    attack: Attack,
    item: _Planned,
    reached: dict[float, torch.Tensor],
    clean: torch.Tensor,
    stochastic: bool,
    draws: int,
    spec: EvalSpec,
    seed: int,
) -> list[tuple[float | None, AttackResult, torch.Tensor, float, torch.Tensor]]:
    """Run one planned attack on ``idx``: (eps, result, per-point accuracy on idx, seconds, which points of idx it
    attacked).

    Without a cascade every point of ``idx`` is attacked (one call for the whole eps list). In a cascade,
    per eps, only the points that some draw still classifies correctly after the attacks before it are
    attacked; the other points keep the accuracy already reached, so the run's per-point accuracy is the
    cascade's (the checklist then compares attacks point by point on probes of its own).
    """
    if not item.cascade or item.eps is None:
        start = time.perf_counter()
        res = attack(model, x[idx], y[idx], eps=item.eps, generator=torch.Generator().manual_seed(seed))
        seconds = time.perf_counter() - start
        results = res if isinstance(res, list) else [res]
        eps_list = item.eps if item.eps is not None else [None]
        everyone = torch.ones(len(idx), dtype=torch.bool)
        return [
            (e, r, _adv_correct(model, r, y[idx], stochastic, draws, spec.batch_size), seconds / len(results), everyone)
            for e, r in zip(eps_list, results, strict=True)
        ]
    todo_of = {e: reached.get(e, clean)[idx] > 0 for e in item.eps}
    if not attack.bounded:
        # a minimal attack runs once (on every point some eps still needs) and is projected onto each ball
        union = torch.stack(list(todo_of.values())).any(0)
        start = time.perf_counter()
        sub = idx[union]
        found = (
            attack(model, x[sub], y[sub], eps=list(item.eps), generator=torch.Generator().manual_seed(seed))
            if len(sub)
            else [None] * len(item.eps)
        )
        seconds = (time.perf_counter() - start) / len(item.eps)
        spread = [
            _cascade_result(model, x, y, idx, union, r, e, todo_of[e], reached, clean, stochastic, draws, spec)
            for e, r in zip(item.eps, found, strict=True)
        ]
        return [(*one, seconds, union) for one in spread]
    done = []
    for e in item.eps:
        todo = todo_of[e]
        sub = idx[todo]
        start = time.perf_counter()
        r = attack(model, x[sub], y[sub], eps=e, generator=torch.Generator().manual_seed(seed)) if len(sub) else None
        res_correct = _cascade_result(model, x, y, idx, todo, r, e, todo, reached, clean, stochastic, draws, spec)
        done.append((*res_correct, time.perf_counter() - start, todo))
    return done


def _cascade_result(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    idx: torch.Tensor,
    attacked: torch.Tensor,
    r: AttackResult | None,
    eps: float,
    needed: torch.Tensor,
    reached: dict[float, torch.Tensor],
    clean: torch.Tensor,
    stochastic: bool,
    draws: int,
    spec: EvalSpec,
) -> tuple[float, AttackResult, torch.Tensor]:
    """An attack's result on the ``attacked`` points of ``idx`` spread over all of ``idx``: (eps, result, accuracy).

    Points the cascade did not need at this eps keep the accuracy already reached there (and, in the result,
    the clean input and ``success``: they were fooled before); the others get the attack's own accuracy.
    """
    n = len(idx)
    correct = reached.get(eps, clean)[idx].clone()
    x_adv = x[idx].clone()
    distances = {k: torch.zeros(n) for k in ("l0", "l2", "linf")}
    success = torch.ones(n, dtype=torch.bool)
    queries = torch.zeros(n, dtype=torch.int64)
    clean_correct = clean[idx] > 0.5
    extra: dict[str, torch.Tensor] = {}
    norm = None
    if r is not None:
        own = _adv_correct(model, r, y[idx[attacked]], stochastic, draws, spec.batch_size)
        keep = needed[attacked]  # of the attacked points, those this eps still needed
        rows = torch.nonzero(attacked).squeeze(1)
        correct[rows[keep]] = own[keep]
        x_adv[attacked] = r.x_adv.to(x_adv.device)
        for k, v in r.distances.items():
            distances[k][attacked] = v.cpu().to(distances[k].dtype)
        success[attacked] = r.success.cpu()
        queries[attacked] = r.queries.cpu()
        if r.clean_correct is not None:
            clean_correct[attacked] = r.clean_correct.cpu()
        for k, v in r.extra.items():
            if v.shape[:1] == (int(attacked.sum()),):
                whole = torch.zeros((n, *v.shape[1:]), dtype=v.dtype)
                whole[attacked] = v.cpu()
                extra[k] = whole
        norm = r.norm
    return eps, AttackResult(x_adv, success, distances, queries, eps, norm, clean_correct, extra), correct


def _projected(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    run: AttackRun,
    spec: EvalSpec,
    clean: torch.Tensor,
    stochastic: bool,
    draws: int,
) -> list[AttackRun]:
    """A minimal (unbounded) attack's adversarials projected onto the eps ball of every grid eps, judged there:
    runs that only feed the worst case (a point inside the ball that fools the model is an adversarial)."""
    runs = []
    for e in spec.eps:
        x_p = project(run.result.x_adv.to(x.device), x, e, run.norm)
        correct = torch.minimum(point_correct(model, x_p, y, draws if stochastic else 1, spec.batch_size), clean)
        runs.append(
            AttackRun(
                f"{run.label} (projected)",
                run.key,
                e,
                run.idx,
                correct,
                run.result,
                0.0,
                run.white_box,
                run.adaptive,
                run.norm,
            )
        )
    return runs


def _acc_row(
    base: dict[str, Any],
    attack: str,
    eps: float | None,
    acc: float,
    n: int,
    params: dict[str, Any],
    metric: str = "accuracy",
    seconds: float | None = None,
) -> ResultRow:
    lo, hi = wilson_interval(round(acc * n), n)
    return ResultRow(
        **base,
        attack=attack,
        metric=metric,
        value=acc,
        n=n,
        eps=eps,
        params={**params, "ci95": [round(lo, 5), round(hi, 5)]},
        seconds=seconds,
    )


def _rows_for(
    run: AttackRun, base: dict[str, Any], attack: Attack, stochastic: bool, dim: int, clean_correct: torch.Tensor
) -> list[ResultRow]:
    r, n = run.result, len(run.idx)
    params = {
        "attack": repr(attack),
        **({"draws": "mean over draws"} if stochastic else {}),
        **({} if run.adaptive else {"adaptive": False}),  # run without the EOT/BPDA its declarations call for
        **(
            {"cascade": f"accuracy after this attack and the ones before it; {run.attacked} of {n} points attacked"}
            if run.attacked < n
            else {}
        ),
    }
    if "unattacked" in r.extra:
        unattacked = int(r.extra["unattacked"].sum())
        params["unattacked"] = unattacked  # no adversarial start found: left as they were, not robust by merit
    rows = []
    # a point misclassified before the attack is never robust, whatever the attack returned
    # (in a cascade the row is the accuracy after this attack and the ones before it)
    correct = torch.minimum(run.cumulative if run.cumulative is not None else run.correct, clean_correct)
    if run.eps is not None:
        rows.append(_acc_row(base, run.label, run.eps, float(correct.mean()), n, params, seconds=run.seconds))
        if stochastic:
            single = robust_accuracy(clean_correct > 0.5, r.success)
            rows.append(_acc_row(base, run.label, run.eps, single, n, params, metric="accuracy_single_draw"))
    cc = clean_correct > 0.5
    # in a cascade, distances and queries describe only the points this attack attacked
    att = run.attacked_mask if run.attacked_mask is not None else torch.ones(n, dtype=torch.bool)
    # on a random model: fooled = misclassified by most draws, and the success rate is the mean over draws
    fooled = (correct < 0.5) if stochastic else r.success
    succ = fooled & cc
    rate = (
        float((1 - correct)[cc].sum()) / max(int(cc.sum()), 1)
        if stochastic
        else float(succ.sum()) / max(int(cc.sum()), 1)
    )
    rows.append(
        ResultRow(
            **base, attack=run.label, metric="success_rate", value=rate, n=int(cc.sum()), eps=run.eps, params=params
        )
    )
    if "unattacked" in r.extra:
        rows.append(
            ResultRow(
                **base,
                attack=run.label,
                metric="unattacked_points",
                value=float(unattacked),
                n=n,
                eps=run.eps,
                params=params,
            )
        )
    if run.eps is None or not attack.bounded:
        for name in ("l2", "linf", "l0"):
            rows.append(
                ResultRow(
                    **base,
                    attack=run.label,
                    metric=f"median_{name}",
                    eps=run.eps,
                    n=int((succ & att).sum()),
                    value=median_finite(r.distances[name][succ & att]) if (succ & att).any() else None,
                    params=params,
                )
            )
        rows.append(
            ResultRow(
                **base,
                attack=run.label,
                metric="score_sq_l2_per_dim",
                eps=run.eps,
                n=int((succ & att).sum()),
                value=perturbation_score(r.distances["l2"][att], succ[att], dim),
                params=params,
            )
        )
    if "min_eps" in r.extra:
        # accuracy vs eps from the minimal eps: correct while no FGSM step up to eps fools the model
        # (monotone in eps; the paper's Fig. 1 curve), at every grid point of 0.01 up to max_eps
        min_eps = r.extra["min_eps"]
        top = float(getattr(attack, "max_eps", 0.4))
        for i in range(round(top / 0.01) + 1):
            e = round(i * 0.01, 4)
            acc = float(((min_eps > e + 1e-12) & cc).float().mean())
            rows.append(_acc_row(base, run.label, e, acc, n, {**params, "from": "min_eps"}))
        median, mean, excluded = median_min_eps(r.extra["min_eps"], cc)
        rows.append(
            ResultRow(
                **base,
                attack=run.label,
                metric="median_min_eps",
                value=median,
                n=int(cc.sum()),
                params={**params, "mean_min_eps": mean, "excluded_misclassified": excluded},
            )
        )
    rows.append(
        ResultRow(
            **base,
            attack=run.label,
            metric="mean_queries",
            value=float(r.queries[att].float().mean()) if att.any() else 0.0,
            n=int(att.sum()),
            eps=run.eps,
            params=params,
        )
    )
    return rows


def _worst_case(
    runs: list[AttackRun],
    clean: torch.Tensor,
    eps_grid: list[float],
    norm: str | None = None,
    require_adaptive: bool = False,
) -> tuple[dict[float, float], dict[float, int], dict[float, tuple[float, int]]]:
    """Per eps of the grid: the mean, over the points some attack of ``norm`` covered, of the lowest accuracy
    any attack or probe left (a point is never better than clean), and how many points that is.

    With ``require_adaptive`` (a random model, or one with a BPDA surrogate) only points that at least one
    adaptive run (EOT/BPDA as the declarations call for) attacked are counted; every run's adversarials
    still count on them. The third result then gives, per eps where some covered point saw only
    non-adaptive runs, (accuracy, points) over every covered point: the paper's protocol, never a worst case.
    """
    acc: dict[float, float] = {}
    count: dict[float, int] = {}
    paper: dict[float, tuple[float, int]] = {}
    for eps in eps_grid:
        per_point = torch.full_like(clean, float("nan"))
        adaptive = torch.zeros(len(clean), dtype=torch.bool)
        for run in runs:
            if run.eps is None or not math.isclose(run.eps, eps) or (norm is not None and run.norm != norm):
                continue
            current = torch.where(per_point[run.idx].isnan(), clean[run.idx], per_point[run.idx])
            per_point[run.idx] = torch.minimum(current, run.correct)
            if run.adaptive:
                adaptive[run.idx] = True
        covered = ~per_point.isnan()
        judged = covered & adaptive if require_adaptive else covered
        if judged.any():
            acc[eps], count[eps] = float(per_point[judged].mean()), int(judged.sum())
        if require_adaptive and bool((covered & ~adaptive).any()):
            paper[eps] = (float(per_point[covered].mean()), int(covered.sum()))
    return acc, count, paper


def _mean_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, draws: int) -> torch.Tensor:
    """Per-sample CE loss of the (draw-averaged) logits in eval mode."""
    with eval_mode(model), torch.no_grad():
        logits = (EOTModel(model, draws) if draws > 1 else model)(x)
    return attack_loss("ce", logits, y)


def _checklist(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    spec: EvalSpec,
    out: SuiteOutcome,
    *,
    probe_idx: torch.Tensor,
    clean: torch.Tensor,
    draws: int,
    surrogate: nn.Module | None,
    randomness: float,
    declared: bool,
    base: dict[str, Any],
    emit: Callable[[list[ResultRow]], None],
    tick: Callable[[str], None],
    seed: int,
) -> list[CheckResult]:
    """Run the checks (the probes use ``probe_idx``, ``spec.check_n`` points).

    Every adversarial example a probe finds at an eps of the grid joins ``out.runs`` and so the worst case.
    """
    checks: list[CheckResult] = []
    xp, yp = x[probe_idx], y[probe_idx]
    norm, eps_grid = spec.norm, sorted(spec.eps)
    mid = eps_grid[len(eps_grid) // 2] if eps_grid else (0.1 if norm == "linf" else 1.0)
    stochastic = draws > 1

    def wrapped(attack: Attack) -> Attack:
        return _wrap(attack, stochastic, surrogate, spec.eot_draws)

    def record(
        label: str,
        key: str,
        eps: float,
        idx: torch.Tensor,
        correct: torch.Tensor,
        res: AttackResult,
        white_box: bool = True,
        adaptive: bool = True,
    ) -> AttackRun:
        """A probe's points count in the worst case like any attack's."""
        run = AttackRun(label, key, eps, idx, correct, res, 0.0, white_box, adaptive, norm)
        out.runs.append(run)
        return run

    def attack_probe(
        attack: Attack, eps: float, label: str | None = None, xs: torch.Tensor = xp, ys: torch.Tensor = yp
    ) -> tuple[AttackResult, torch.Tensor]:
        res = wrapped(attack)(model, xs, ys, eps=eps, generator=torch.Generator().manual_seed(seed))
        if not isinstance(res, AttackResult):
            raise TypeError(f"{type(attack).__name__} returned {type(res).__name__} for one eps")
        correct = torch.minimum(_adv_correct(model, res, ys, stochastic, draws, spec.batch_size), clean[probe_idx])
        if label is not None:
            record(label, attack.key, eps, probe_idx, correct, res)
        return res, correct

    def on_probe(run: AttackRun) -> torch.Tensor | None:
        """The run's own per-point accuracy on the probe points, or None when it did not attack them all (a cascaded
        attack skips points fooled before it: its accuracy there is not its own)."""
        pos = {int(i): k for k, i in enumerate(run.idx)}
        if not all(int(i) in pos for i in probe_idx):
            return None
        if run.attacked_mask is not None and not bool(run.attacked_mask[[pos[int(i)] for i in probe_idx]].all()):
            return None
        return run.correct[torch.tensor([pos[int(i)] for i in probe_idx])]

    # 1. single-step never beats iterative
    diffs, n_single = [], len(probe_idx)
    for eps in eps_grid:
        suite_runs = [r for r in list(out.runs) if r.adaptive and r.norm == norm and r.eps is not None]
        fgsm = [on_probe(r) for r in suite_runs if r.key == "fgsm" and math.isclose(r.eps or 0.0, eps)]
        iters = [
            on_probe(r)
            for r in suite_runs
            if r.key in ("pgd", "apgd-ce", "apgd-dlr", "apgd-t", "bim")
            and math.isclose(r.eps or 0.0, eps)  # an L2 run at a number equal to an L-inf eps is another attack
        ]
        fgsm, iters = [f for f in fgsm if f is not None], [i for i in iters if i is not None]
        if not fgsm:
            fgsm = [attack_probe(ATTACKS.create("fgsm", norm=norm), eps, "check:fgsm")[1]]
        if not iters:  # else the suite's own iterative runs on the probe points (e.g. seed-paper PGD entries)
            iters = [attack_probe(ATTACKS.create("pgd", norm=norm, steps=20), eps, "check:pgd-20")[1]]
        best_iter = torch.stack(iters).min(0).values.mean()
        diffs.append(float(best_iter - fgsm[0].mean()))
    value = max(diffs) if diffs else None
    checks.append(
        CheckResult.judge(
            "single-vs-iterative",
            value,
            n_single,
            "FGSM left fewer points correct than PGD: the iterative attack is not converging "
            "(gradient masking or a too-small step); try more steps, restarts, other losses.",
        )
    )
    tick("check: single vs iterative")

    # 2. monotone in eps, and an unbounded attack fools everything
    curve = [out.worst_case[e] for e in eps_grid if e in out.worst_case]
    if len(curve) < 2:
        checks.append(
            CheckResult(
                "monotone-in-eps",
                None,
                None,
                None,
                f"not applicable: the suite ran at {len(curve)} eps; monotonicity needs at least two",
            )
        )
    else:
        rise = max(b - a for a, b in itertools.pairwise(curve))
        checks.append(
            CheckResult.judge(
                "monotone-in-eps",
                rise,
                len(y),
                "Robust accuracy rises with eps: the attack fails at large eps, a sign of masking "
                "or of a broken attack. Try more steps, BPDA/EOT, a gradient-free attack.",
            )
        )
    big = 1.0 if norm == "linf" else math.sqrt(x[0].numel())
    _, unb_correct = attack_probe(
        ATTACKS.create("pgd", norm=norm, steps=50, random_start=False, step_size=0.05 if norm == "linf" else big / 20),
        big,
    )
    unb_acc = float(unb_correct.mean())
    emit([_acc_row(base, "check:unbounded-pgd", big, unb_acc, len(probe_idx), {"steps": 50})])
    checks.append(
        CheckResult.judge(
            "unbounded-attack",
            unb_acc,
            len(probe_idx),
            "An attack with eps covering the whole image does not fool every point: gradients are "
            "masked or the attack is broken (Pintor: unconstrained attack failure). Use BPDA/EOT.",
        )
    )
    tick("check: monotone / unbounded")

    # 3, 7. more steps and restarts; incomplete optimisation, non-converging attack, silent success
    steps = 20 if spec.suite != "full" else 100
    step_size = 2.5 * mid / steps  # Madry et al.'s rule, fixed so that the 2T run extends the T run
    a_res, a_ok = attack_probe(
        PGD(norm=norm, steps=steps, step_size=step_size, random_start=False), mid, "check:pgd-T-steps"
    )
    b_res, b_ok = attack_probe(PGD(norm=norm, steps=2 * steps, step_size=step_size, random_start=False), mid)
    _, c_ok = attack_probe(
        PGD(norm=norm, steps=steps, step_size=step_size, random_start=False, early_stop=True),
        mid,
        "check:pgd-early-stop",
    )
    _, d_ok = attack_probe(PGD(norm=norm, steps=2 * steps, restarts=2 if spec.suite != "full" else 6), mid)
    suite_pgd = [
        on_probe(r)
        for r in out.runs
        if r.key == "pgd"
        and not r.label.startswith("check:")
        and r.norm == norm
        and r.eps is not None
        and math.isclose(r.eps, mid)
    ]
    suite_pgd = [s for s in suite_pgd if s is not None]
    # in a cascade no attack's own accuracy on the probes is known: compare with what the white-box cascade as a
    # whole reached there (did more steps and restarts find points that every white-box attack of the suite missed?)
    cascaded = [
        r
        for r in out.runs
        if r.cumulative is not None
        and r.white_box
        and r.norm == norm
        and r.eps is not None
        and math.isclose(r.eps, mid)
    ]
    reached_on_probe = None
    if cascaded:
        last = cascaded[-1]
        pos = {int(i): k for k, i in enumerate(last.idx)}
        if all(int(i) in pos for i in probe_idx):
            reached_on_probe = last.cumulative[torch.tensor([pos[int(i)] for i in probe_idx])]
    if suite_pgd:
        base_acc = float(suite_pgd[0].mean())
    elif reached_on_probe is not None:
        base_acc = float(reached_on_probe.mean())
    else:
        base_acc = float(a_ok.mean())
    drop = base_acc - float(torch.minimum(b_ok, d_ok).mean())
    record("check:pgd-2x-steps-restarts", "pgd", mid, probe_idx, torch.minimum(b_ok, d_ok), b_res)
    emit(
        [
            _acc_row(
                base,
                "check:pgd-2x-steps-restarts",
                mid,
                float(torch.minimum(b_ok, d_ok).mean()),
                len(probe_idx),
                {"steps": 2 * steps},
            )
        ]
    )
    checks.append(
        CheckResult.judge(
            "more-steps-restarts",
            drop,
            len(probe_idx),
            "Doubling PGD's steps and adding restarts lowered robust accuracy: the suite's attack "
            "had not converged. Report the stronger attack; use more steps/restarts (or APGD).",
        )
    )
    loss0 = _mean_loss(model, xp, yp, draws)
    loss_a, loss_b = _mean_loss(model, a_res.x_adv, yp, draws), _mean_loss(model, b_res.x_adv, yp, draws)
    alive = a_ok > 0.5
    if alive.any():
        la, lb = float(loss_a[alive].mean()), float(loss_b[alive].mean())
        incomplete = (lb - la) / max(abs(la), 1e-12)
    else:
        incomplete = 0.0
    # material only when the extra steps also fool more points than noise would explain (docs/checks.md)
    extra_fooled = float((a_ok - b_ok).clamp(min=0).sum())
    material = extra_fooled >= max(MIN_POINTS, 0.02 * len(probe_idx))
    if incomplete > TOL["incomplete-optimisation"] and len(probe_idx) < MIN_POINTS / 0.02:
        # the materiality gate counts points: below 100 probes it would exceed 2% of them
        checks.append(
            CheckResult(
                "incomplete-optimisation",
                None,
                incomplete,
                None,
                f"not judged: too few points ({len(probe_idx)}; the loss kept rising from T to 2T steps, and whether "
                "that is material needs at least 100 probe points). Raise evaluate.check_n.",
                too_few_points=True,
            )
        )
    else:
        checks.append(
            CheckResult(
                "incomplete-optimisation",
                not (incomplete > TOL["incomplete-optimisation"] and material),
                incomplete,
                TOL["incomplete-optimisation"],
                (
                    f"The loss kept rising between T and 2T steps on points the attack had not fooled, and 2T steps "
                    f"fooled {extra_fooled:.0f} more points: the attack stopped too early. Use more steps "
                    "(Pintor et al. 2022)."
                )
                if material
                else f"loss still rising from T to 2T steps, but 2T steps fooled only {extra_fooled:.0f} more point(s) "
                f"(needs max({MIN_POINTS}, 2% of the probe points)): not material",
            )
        )
    cc = clean[probe_idx] > 0.5
    worse = float(((loss_a < loss0 - 1e-6) & cc & alive).float().sum()) / max(int(cc.sum()), 1)
    checks.append(
        CheckResult.judge(
            "non-converging-attack",
            worse,
            int(cc.sum()),
            "For these points the attack ended with a lower loss than it started with: the "
            "step size is too large or the loss surface is noisy. Lower the step, use EOT or APGD.",
        )
    )
    # judged like every other number: on the mean over draws for a random model
    silent = float(((c_ok < 0.5) & (a_ok >= 0.5) & cc).float().sum()) / max(int(cc.sum()), 1)
    checks.append(
        CheckResult.judge(
            "silent-success",
            silent,
            int(cc.sum()),
            "An iterate fooled the model but the returned point does not: keep the best iterate "
            "(early_stop=True, or restarts) (Pintor et al. 2022).",
        )
    )
    tick("check: steps, restarts, convergence")

    # 4. black-box and transfer attacks do not beat white-box
    black = [r for r in out.runs if not r.white_box and r.eps is not None and math.isclose(r.eps, mid)]
    black_key = "square" if norm == "linf" else "boundary"
    if not any(r.key == black_key and r.norm == norm for r in black):
        bb_idx = probe_idx[: min(100, len(probe_idx))]  # 100 points: enough to judge the check at 2%
        probe = ATTACKS.create("square", queries=1000) if norm == "linf" else ATTACKS.create("boundary", steps=200)
        label = "check:square-1000" if norm == "linf" else "check:boundary-200"
        res = wrapped(probe)(model, x[bb_idx], y[bb_idx], eps=mid, generator=torch.Generator().manual_seed(seed))
        if not isinstance(res, AttackResult):
            raise TypeError(f"{type(probe).__name__} returned {type(res).__name__} for one eps")
        ok = torch.minimum(_adv_correct(model, res, y[bb_idx], stochastic, draws, spec.batch_size), clean[bb_idx])
        black.append(record(label, probe.key, mid, bb_idx, ok, res, white_box=False))
        emit([_acc_row(base, label, mid, float(ok.mean()), len(bb_idx), {"attack": repr(probe)})])
    white_probe = AttackRun(
        "check:pgd", "pgd", mid, probe_idx, torch.minimum(torch.minimum(a_ok, b_ok), d_ok), a_res, 0.0, norm=norm
    )
    # every eps where a black-box or transfer attack ran, not only the middle one: a gap at a small
    # eps is masking too (e.g. ReLU outputs flattening the loss while Square still finds a way)
    black_all = black + [r for r in out.runs if not r.white_box and r.eps is not None and not math.isclose(r.eps, mid)]
    black_all = [r for r in black_all if r.norm == norm]
    gaps = []
    for bb in black_all:
        assert bb.eps is not None
        per_point = clean.clone()
        same_eps = [
            r for r in out.runs if r.white_box and r.norm == norm and r.eps is not None and math.isclose(r.eps, bb.eps)
        ]
        for w in [*same_eps, *([white_probe] if math.isclose(bb.eps, mid) else [])]:
            per_point[w.idx] = torch.minimum(per_point[w.idx], w.correct)
        excess = float(per_point[bb.idx].mean() - bb.correct.mean())
        gaps.append((excess, len(bb.idx), bb.label, bb.eps))
    if gaps:
        # judged on the gap that is largest relative to its own threshold (or the largest, where none can be judged)
        def margin(g: tuple[float, int, str, float]) -> float:
            t = effective_threshold("black-box-vs-white-box", g[1])
            return g[0] - (t if t is not None else 0.0)

        worst_gap = max(gaps, key=margin)
        checks.append(
            CheckResult.judge(
                "black-box-vs-white-box",
                worst_gap[0],
                worst_gap[1],
                "A gradient-free (Square, Boundary) or transfer attack fools points that the white-box attacks "
                "missed: white-box gradients are unreliable (masking). Report the worst case; try BPDA. "
                f"Largest gap: {worst_gap[2]} at eps={worst_gap[3]:g}.",
            )
        )
    else:
        checks.append(
            CheckResult("black-box-vs-white-box", None, None, None, "not applicable: no black-box attack ran")
        )
    unattacked = [
        (int(r.result.extra["unattacked"].sum()), r.attacked, r.label)
        for r in out.runs
        if "unattacked" in r.result.extra and r.eps is not None and not r.label.endswith("(projected)")
    ]
    if unattacked:
        count, n_points, label = max(unattacked, key=lambda u: u[0] / max(u[1], 1))
        checks.append(
            CheckResult.judge(
                "unattacked-points",
                count / max(n_points, 1),
                n_points,
                f"{label} found no adversarial starting point for {count} of {n_points} points and left them "
                "as they were: they are not robust by merit. Use init='other-class' or more init_attempts.",
            )
        )
    tick("check: black-box vs white-box")

    # 5, 6. unavailable gradients and EOT/BPDA
    zero_points, zero_entries = zero_gradient_fraction(model, xp, yp)
    gradients_available = within_threshold(zero_points, TOL["unavailable-gradients"])
    checks.append(
        CheckResult(
            "unavailable-gradients",
            gradients_available,
            zero_points,
            TOL["unavailable-gradients"],
            f"{100 * zero_points:.1f}% of points have an all-zero input gradient "
            f"({100 * zero_entries:.1f}% of entries): gradients are masked (quantisation, "
            "saturated softmax). Declare a BPDA surrogate; use margin-loss and gradient-free attacks.",
        )
    )
    needs_bpda = not gradients_available
    bpda_ok = not needs_bpda or surrogate is not None
    # EOT half: on a random model, every eps of the grid must have been attacked with EOT (an adaptive run)
    # (the suite's own attacks: the checklist's probes are always adaptive and would hide a single-draw suite)
    no_eot = (
        [
            e
            for e in eps_grid
            if not any(
                r.adaptive
                and not r.label.startswith("check:")
                and r.norm == norm
                and r.eps is not None
                and math.isclose(r.eps, e)
                for r in out.runs
            )
        ]
        if stochastic
        else []
    )
    eot_ok = not no_eot
    if not bpda_ok:
        advice = (
            "Gradients vanish and no BPDA surrogate is declared: the white-box numbers are upper "
            "bounds. Declare one with neurorobust.declare(model, surrogate=...)."
        )
    elif not eot_ok:
        advice = (
            "The model is random but no attack of the suite at eps " + ", ".join(f"{e:g}" for e in no_eot) + " used "
            "EOT (only the checklist's probes did): the suite's numbers there are single-draw upper bounds. Add an "
            "adaptive attack (adaptive = true) there."
        )
    else:
        advice = (
            f"EOT ({spec.eot_draws} draws) {'used' if stochastic else 'not needed'}; BPDA "
            f"{'used' if surrogate is not None else 'not needed'}."
        )
    checks.append(
        CheckResult(
            "eot-bpda",
            bpda_ok and eot_ok,
            float(len(no_eot)) + float(not bpda_ok),  # eps without EOT, plus 1 for a missing surrogate
            0.0,
            advice,
        )
    )
    tick("check: gradients, EOT/BPDA")

    # 7. transfer failure (surrogate-based attacks only)
    if surrogate is not None:
        p = PGD(norm=norm, steps=steps)
        res_s = p(surrogate, xp, yp, eps=mid, generator=torch.Generator().manual_seed(seed))
        if not isinstance(res_s, AttackResult):
            raise TypeError("PGD returned a list for one eps")
        target_correct = torch.minimum(point_correct(model, res_s.x_adv, yp, draws, spec.batch_size), clean[probe_idx])
        record("check:surrogate-transfer", "transfer", mid, probe_idx, target_correct, res_s, white_box=False)
        on_target = target_correct < 0.5
        s_rate = float((res_s.success & cc).float().sum()) / max(int(cc.sum()), 1)
        t_rate = float((on_target & cc).float().sum()) / max(int(cc.sum()), 1)
        if s_rate == 0:
            checks.append(
                CheckResult(
                    "transfer-failure",
                    None,
                    None,
                    TOL["transfer-failure"],
                    f"not judged: PGD fooled no point of the surrogate itself at eps={mid:g}, so nothing can be "
                    "transferred; the BPDA numbers cannot be checked this way (try a larger eps).",
                    too_few_points=True,
                )
            )
        else:
            ratio = t_rate / s_rate
            checks.append(
                CheckResult(
                    "transfer-failure",
                    ratio >= TOL["transfer-failure"],
                    ratio,
                    TOL["transfer-failure"],
                    "Examples that fool the surrogate do not fool the model: the surrogate is a poor "
                    "stand-in, so BPDA numbers are upper bounds. Improve the surrogate.",
                )
            )
    else:
        checks.append(
            CheckResult(
                "transfer-failure",
                None,
                None,
                TOL["transfer-failure"],
                "not applicable: no surrogate declared (no BPDA attack)",
            )
        )

    # 8. randomness
    random_ok = randomness == 0 or declared
    checks.append(
        CheckResult(
            "randomness",
            random_ok,
            randomness,
            TOL["randomness"],
            "The model is random at test time but does not declare it: judged on the mean over "
            f"{spec.eot_draws} draws with EOT anyway; declare is_stochastic=True."
            if not random_ok
            else (
                f"random: EOT with {spec.eot_draws} draws; accuracy is the mean over draws"
                if randomness > 0
                else "deterministic"
            ),
        )
    )
    if stochastic:
        plain = PGD(norm=norm, steps=steps)
        res = (BPDA(attack=plain, surrogate=surrogate) if surrogate is not None else plain)(
            model, xp, yp, eps=mid, generator=torch.Generator().manual_seed(seed)
        )
        if not isinstance(res, AttackResult):
            raise TypeError("PGD returned a list for one eps")
        ok = torch.minimum(point_correct(model, res.x_adv, yp, draws, spec.batch_size), clean[probe_idx])
        record("check:pgd-without-eot", "pgd", mid, probe_idx, ok, res, adaptive=False)
        emit([_acc_row(base, "check:pgd-without-eot", mid, float(ok.mean()), len(probe_idx), {"steps": steps})])
    tick("check: randomness")
    return checks
