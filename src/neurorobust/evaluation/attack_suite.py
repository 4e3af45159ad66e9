"""The attack suites (``quick``, ``seed-paper``, ``full``) and the checklist's probes (DESIGN §5).

:func:`run_attack_suite` attacks one model on one evaluation subset, judges random models on the
mean over draws, keeps per point the lowest accuracy over all attacks (worst case), runs the
gradient-masking checklist (:mod:`neurorobust.evaluation.checklist`) and returns rows, checks and
the verdict. Attacks are chosen automatically from the model's declarations (EOT for random
models, declared or detected; BPDA where a surrogate is declared).
"""

from __future__ import annotations

import functools
import hashlib
import math
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..attacks import ATTACKS, Attack, AttackResult, is_stochastic, project, surrogate_of
from ..data import balanced_subset
from ..errors import InvalidParameterError
from ..modes import eval_mode
from ..specs import AttackEntry, EvalSpec
from ..store import ResultRow
from ..types import ProgressFn
from .checklist import CheckResult, ProbeContext, detect_randomness, run_checklist, verdict
from .metrics import encode_points, median_finite, median_min_eps, perturbation_score, robust_accuracy
from .runs import AttackRun, acc_row, adv_correct, point_correct, wrap_attack

__all__ = ["AttackRun", "SuiteOutcome", "plan_suite", "point_correct", "run_attack_suite"]


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
    return wrap_attack(attack, is_stochastic(source), surrogate_of(source), spec.eot_draws)


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
    target = _Target(model, x, y, spec, seed, base, clean, stochastic, draws, surrogate)
    plan = plan_suite(spec, _num_classes(model, x), source_model)
    report = _Report(out, sink, progress, total=len(plan) + 6)
    for item in plan:
        runs, rows = _run_planned(target, item)
        out.runs += runs
        report.emit(rows)
        report.tick(item.label)
    # the suite's own curve, for monotone-in-eps
    out.worst_case = _worst_case(out.runs, clean, spec.eps, spec.norm, target.needs_adaptive)[0]
    if not spec.checklist:  # e.g. a seed paper's single-draw table for every seed, checked on another variant
        out.verdict = "not checked (evaluate.checklist = false)"
        report.emit(_worst_rows(out, target))
        return out
    ctx = ProbeContext(model, x, y, spec, probe_idx, clean, draws, surrogate, seed, base)
    # a step-size-eps protocol row (within_eps False) is no evidence about the eps ball: the checks never see it;
    # the probes they append to the list they get join the worst case
    bounded = [r for r in out.runs if r.within_eps]
    before = len(bounded)
    out.checks = run_checklist(
        ctx,
        bounded,
        out.worst_case,
        logit_change=randomness,
        declared=declared,
        emit=report.emit,
        tick=report.tick,
    )
    out.runs += bounded[before:]
    out.verdict = verdict(out.checks)
    # the reported number: worst case over the suite's attacks *and* every probe of the checklist
    report.emit(_worst_rows(out, target))
    report.emit([_checklist_row(out, base, len(probe_idx), draws)])
    return out


@dataclass
class _Target:
    """The model under attack and what every attack of the suite shares; ``reached``: per eps, per point, the lowest
    accuracy any attack has left so far (the cascade's "still robust")."""

    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    spec: EvalSpec
    seed: int
    base: dict[str, Any]
    clean: torch.Tensor  # per point, the clean accuracy (mean over draws)
    stochastic: bool  # declared or detected: judged on the mean over draws, attacked with EOT
    draws: int
    surrogate: nn.Module | None
    reached: dict[float, torch.Tensor] = field(default_factory=dict)

    @functools.cached_property
    def images(self) -> str:
        """A digest of the evaluated images and labels: equal digests, the same images in the same order."""
        h = hashlib.sha256(self.x.detach().cpu().contiguous().numpy().tobytes())
        h.update(self.y.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    @property
    def needs_adaptive(self) -> bool:
        """Only runs with EOT/BPDA make the worst case (a random model, or one with a surrogate)."""
        return self.stochastic or self.surrogate is not None


@dataclass
class _Report:
    """Hands rows to ``out`` and the sink as they are measured, and counts the suite's steps for ``progress``."""

    out: SuiteOutcome
    sink: Callable[[list[ResultRow]], Any] | None
    progress: ProgressFn | None
    total: int
    step: int = 0

    def emit(self, rows: list[ResultRow]) -> None:
        self.out.rows.extend(rows)
        if self.sink is not None and rows:
            self.sink(rows)

    def tick(self, what: str) -> None:
        self.step += 1
        if self.progress is not None:
            self.progress({"stage": "attack", "step": self.step, "steps": self.total, "what": what})


def _run_planned(t: _Target, item: _Planned) -> tuple[list[AttackRun], list[ResultRow]]:
    """One planned attack, cascaded or on every point of its subset: its runs (one per eps, plus a minimal attack's
    projections onto the grid) and their rows. Updates ``t.reached``."""
    idx = _subset(t.y, item.n, t.seed)
    attack = wrap_attack(item.attack, t.stochastic, t.surrogate, t.spec.eot_draws) if item.adaptive else item.attack
    gen_seed = _attack_seed(t.seed, item.label)
    done = _run_cascaded(
        t.model, t.x, t.y, idx, attack, item, t.reached, t.clean, t.stochastic, t.draws, t.spec, gen_seed
    )
    runs: list[AttackRun] = []
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
            within_eps=item.attack.within_eps,
        )
        runs.append(run)
        if eps is not None and run.within_eps:
            reached = _reach(t, eps, idx, correct)
            if item.cascade:
                run.cumulative = reached
        rows += _rows_for(run, t.base, item.attack, t.stochastic, t.x[0].numel(), t.clean[idx])
        if eps is None and run.norm == t.spec.norm:
            # a minimal attack's points count in the worst case too: projected onto each ball of the grid
            runs += _projected(t.model, t.x[idx], t.y[idx], run, t.spec, t.clean[idx], t.stochastic, t.draws)
    return runs, rows


def _reach(t: _Target, eps: float, idx: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
    """Lower ``t.reached[eps]`` on ``idx`` to ``correct`` (never above clean); the new values on ``idx``."""
    prev = t.reached.get(eps, t.clean).clone()
    prev[idx] = torch.minimum(prev[idx], torch.minimum(correct, t.clean[idx]))
    t.reached[eps] = prev
    return prev[idx]


def _worst_rows(out: SuiteOutcome, t: _Target) -> list[ResultRow]:
    """The worst case per eps over ``out.runs`` (stored in ``out.worst_case``) as rows, with the paper-protocol rows
    of a model that needs EOT/BPDA."""
    worst, covered, paper = _worst_case(out.runs, t.clean, t.spec.eps, t.spec.norm, t.needs_adaptive)
    out.worst_case = worst
    rows = []
    for e in sorted({*worst, *paper}):
        over = sorted({r.label for r in out.runs if r.within_eps and r.eps is not None and math.isclose(r.eps, e)})
        if e in worst:
            # per point (hex, '.' = not counted) over the evaluated images, with a digest of those images: two
            # models evaluated on the same images are compared point by point (paired intervals, combinations)
            points, judged, _ = _worst_points(out.runs, t.clean, e, t.spec.norm, t.needs_adaptive)
            per_point = {"points": encode_points(torch.where(judged, points, torch.nan)), "images": t.images}
            rows.append(acc_row(t.base, "worst-case", e, worst[e], covered[e], {"over": over, **per_point}))
        if e in paper:
            # a random model (or one with a surrogate): points attacked only without EOT/BPDA are the paper's
            # protocol, shown as such over every point, never the leaderboard's worst case (DESIGN §10)
            acc, n = paper[e]
            rows.append(acc_row(t.base, "worst-case-paper-protocol", e, acc, n, {"over": over}))
    return rows


def _checklist_row(out: SuiteOutcome, base: dict[str, Any], n: int, draws: int) -> ResultRow:
    """The checklist's own row: whether masking is suspected, with the verdict and the reported worst case."""
    return ResultRow(
        **base,
        attack="checklist",
        metric="masking_suspected",
        value=float(any(c.failed for c in out.checks)),
        n=n,
        params={
            "verdict": out.verdict,
            "reported_worst_case": {f"{eps:g}": round(acc, 5) for eps, acc in out.worst_case.items()},
            "stochastic": out.stochastic,
            "draws": draws,
            "not_judged": [c.name for c in out.checks if c.not_judged],
        },
    )


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
            (e, r, adv_correct(model, r, y[idx], stochastic, draws, spec.batch_size), seconds / len(results), everyone)
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
        own = adv_correct(model, r, y[idx[attacked]], stochastic, draws, spec.batch_size)
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


def _rows_for(
    run: AttackRun, base: dict[str, Any], attack: Attack, stochastic: bool, dim: int, clean_correct: torch.Tensor
) -> list[ResultRow]:
    r, n = run.result, len(run.idx)
    params = {
        "attack": repr(attack),
        **({"draws": "mean over draws"} if stochastic else {}),
        **({} if run.adaptive else {"adaptive": False}),  # run without the EOT/BPDA its declarations call for
        # eps was the step size (a paper's protocol): the perturbation may reach steps x eps
        **(
            {} if run.within_eps else {"eps_is_step_size": True, "max_linf": round(float(r.distances["linf"].max()), 5)}
        ),
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
        rows.append(acc_row(base, run.label, run.eps, float(correct.mean()), n, params, seconds=run.seconds))
        if stochastic:
            single = robust_accuracy(clean_correct > 0.5, r.success)
            rows.append(acc_row(base, run.label, run.eps, single, n, params, metric="accuracy_single_draw"))
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
            rows.append(acc_row(base, run.label, e, acc, n, {**params, "from": "min_eps"}))
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
        per_point, judged, covered = _worst_points(runs, clean, eps, norm, require_adaptive)
        if judged.any():
            acc[eps], count[eps] = float(per_point[judged].mean()), int(judged.sum())
        if require_adaptive and bool((covered & ~judged).any()):
            paper[eps] = (float(per_point[covered].mean()), int(covered.sum()))
    return acc, count, paper


def _worst_points(
    runs: list[AttackRun], clean: torch.Tensor, eps: float, norm: str | None, require_adaptive: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """At one eps: per point the lowest accuracy any run left (NaN where none attacked it), the points that count
    in the worst case (attacked, and by an adaptive run where ``require_adaptive``), and the points attacked."""
    per_point = torch.full_like(clean, float("nan"))
    adaptive = torch.zeros(len(clean), dtype=torch.bool)
    for run in runs:
        if not run.within_eps or run.eps is None or not math.isclose(run.eps, eps):
            continue  # an attack whose eps is a step size may leave the ball: never part of a worst case
        if norm is not None and run.norm != norm:
            continue
        current = torch.where(per_point[run.idx].isnan(), clean[run.idx], per_point[run.idx])
        per_point[run.idx] = torch.minimum(current, run.correct)
        if run.adaptive:
            adaptive[run.idx] = True
    covered = ~per_point.isnan()
    return per_point, (covered & adaptive if require_adaptive else covered), covered
