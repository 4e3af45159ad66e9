"""The gradient-masking checklist: eight checks, each a stored result, and one verdict per defence.

Checks (DESIGN §5; Carlini et al. 2019, Athalye et al. 2018, Pintor et al. 2022), explained in
``docs/checks.md`` ("raised if / what to do"):

1. ``single-vs-iterative``: FGSM never leaves fewer points correct than PGD at the same eps.
2. ``monotone-in-eps``: robust accuracy falls (weakly) with eps; ``unbounded-attack``: an attack
   with eps covering the whole box fools (nearly) every point.
3. ``more-steps-restarts``: doubling PGD's steps and adding restarts changes robust accuracy by
   less than a tolerance.
4. ``black-box-vs-white-box``: a gradient-free attack (Square) and a transfer attack do not beat
   the white-box attacks on the same points.
5. ``eot-bpda``: a random model is attacked with EOT and a model with vanishing gradients has a
   BPDA surrogate.
6. ``unavailable-gradients``: the fraction of points whose input gradient is exactly zero.
7. Pintor et al.'s indicators of attack failure: ``silent-success``, ``incomplete-optimisation``,
   ``non-converging-attack``, ``transfer-failure`` (plus ``unavailable-gradients`` = 6 and
   ``unbounded-attack`` = 2).
8. ``randomness``: a model whose logits change between two identical forward passes is random;
   undeclared randomness is flagged, and every random model is judged on the mean over draws.

A failed check turns the verdict to ``masking suspected: <checks>`` and the reported robust
accuracy to the worst case over every attack run. A check that does not apply (e.g. transfer
failure without a surrogate) has ``passed=None`` and says why.

Each check is one function (after auto-attack's ``checks.py``): it takes the model's probe context
(:class:`ProbeContext`), the runs so far and its settings, and returns its :class:`CheckResult`, with
the probe runs that join the worst case and the rows they add (:class:`Checked`); the checks that
only judge numbers take those numbers. :func:`run_checklist` runs them in order. The attack suite
(:mod:`neurorobust.evaluation.attack_suite`) calls it; this module never imports the suite.

References
----------
N. Carlini et al. (2019). On evaluating adversarial robustness. :arxiv:`1902.06705`.
A. Athalye, N. Carlini, D. Wagner (2018). Obfuscated gradients give a false sense of security. ICML.
:arxiv:`1802.00420`.
M. Pintor et al. (2022). Indicators of attack failure: debugging and improving optimization of
adversarial examples. NeurIPS. :arxiv:`2106.09947`.
F. Croce, M. Hein (2020). Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks. ICML. :arxiv:`2003.01690` (auto-attack's checks).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..attacks import ATTACKS, BPDA, PGD, Attack, AttackResult, input_gradient
from ..modes import eval_mode
from ..specs import EvalSpec
from ..store import ResultRow
from .runs import AttackRun, acc_row, adv_correct, mean_loss, point_correct, wrap_attack

__all__ = [
    "MAX_THRESHOLD",
    "MIN_POINTS",
    "TOLERANCES",
    "CheckResult",
    "Checked",
    "PGDProbes",
    "ProbeContext",
    "black_box_vs_white_box",
    "detect_randomness",
    "effective_threshold",
    "eot_bpda",
    "incomplete_optimisation",
    "monotone_in_eps",
    "more_steps_restarts",
    "non_converging_attack",
    "pgd_without_eot",
    "randomness",
    "run_checklist",
    "silent_success",
    "single_vs_iterative",
    "transfer_failure",
    "unattacked_points",
    "unavailable_gradients",
    "unbounded_attack",
    "verdict",
    "within_threshold",
    "zero_gradient_fraction",
]

#: Thresholds of the checks (fractions of points unless stated); docs/checks.md explains each.
TOLERANCES = {
    "single-vs-iterative": 0.01,  # FGSM accuracy may not fall below PGD's by more than this
    "monotone-in-eps": 0.01,  # an increase of accuracy with eps larger than this is flagged
    "unbounded-attack": 0.01,  # at most this fraction of points may survive the unbounded attack
    "more-steps-restarts": 0.02,  # PGD with 2x steps and more restarts may not lower accuracy more
    "black-box-vs-white-box": 0.01,  # Square / transfer may not beat white-box by more than this
    "unavailable-gradients": 0.01,  # fraction of points with an all-zero input gradient
    "silent-success": 0.01,  # points fooled by an iterate but not by the returned point
    "incomplete-optimisation": 0.05,  # relative increase of mean loss from T to 2T steps
    "non-converging-attack": 0.05,  # points whose final loss is below their initial loss
    "transfer-failure": 0.5,  # target success below this fraction of the surrogate's success
    "randomness": 0.0,  # max |logit difference| between two identical forward passes
    "unattacked-points": 0.01,  # points a decision-based attack left unattacked (no adversarial start)
}


# Check values are fractions of whole points, computed as float32 means (1/10 is 0.100000001 in float32) or as
# differences of two of them; 1e-6 absorbs that rounding and stays far below one point of any n <= 100,000.
_ROUNDING = 1e-6

#: Checks that compare counts of points: their threshold is at least MIN_POINTS / n, so that one or
#: two borderline points cannot raise them (statistical noise, not masking). A threshold never grows past
#: MAX_THRESHOLD because the points are few (DESIGN §10): with fewer than MIN_POINTS / MAX_THRESHOLD = 100
#: points such a check is "not judged (too few points)", and the verdict says so.
MIN_POINTS = 2
MAX_THRESHOLD = 0.02
_COUNT_BASED = {
    "single-vs-iterative",
    "monotone-in-eps",
    "more-steps-restarts",
    "black-box-vs-white-box",
    "silent-success",
    "non-converging-attack",
    "unattacked-points",
}


def effective_threshold(name: str, n: int) -> float | None:
    """The threshold of check ``name`` on ``n`` points, or ``None`` when ``n`` is too small to judge it.

    ``TOLERANCES[name]``, raised to ``MIN_POINTS / n`` for the count-based checks; ``None`` where that
    would exceed both ``MAX_THRESHOLD`` and the tolerance itself (fewer than 100 points for a 1% or 2%
    tolerance, fewer than 40 for ``non-converging-attack``'s 5%). ``unbounded-attack`` allows one surviving
    point, ``max(1 / n, tolerance)``, but never more than ``MAX_THRESHOLD``: on fewer than 50 points no
    point may survive.
    """
    tol = TOLERANCES[name]
    n = max(n, 1)
    if name in _COUNT_BASED:
        # the threshold may be raised for few points up to MAX_THRESHOLD (a tolerance above it stays as it is)
        if MIN_POINTS / n > max(tol, MAX_THRESHOLD) + _ROUNDING:
            return None
        return max(tol, MIN_POINTS / n)
    if name == "unbounded-attack":
        return min(max(tol, 1 / n), MAX_THRESHOLD)
    return tol


def within_threshold(value: float, threshold: float | None) -> bool:
    """``value <= threshold`` up to float32 rounding; ``False`` when there is no threshold."""
    return threshold is not None and value <= threshold + _ROUNDING


@dataclass(frozen=True)
class CheckResult:
    """One check: ``passed`` is ``True``/``False``, or ``None`` when the check does not apply or could not be
    judged (``too_few_points``); ``advice`` says why."""

    name: str
    passed: bool | None
    value: float | None
    threshold: float | None
    advice: str = ""
    too_few_points: bool = False

    @property
    def failed(self) -> bool:
        return self.passed is False

    @property
    def not_judged(self) -> bool:
        """The check applies but had too few points to be judged."""
        return self.too_few_points

    @classmethod
    def judge(cls, name: str, value: float | None, n: int, advice: str) -> CheckResult:
        """Check ``name`` on ``n`` points: passed when ``value`` is within its :func:`effective_threshold`;
        ``None`` when there is no value, and not judged when ``n`` is too small for the threshold."""
        threshold = effective_threshold(name, n)
        if value is not None and threshold is None:
            needed = math.ceil(MIN_POINTS / max(TOLERANCES[name], MAX_THRESHOLD) - _ROUNDING)
            return cls(
                name,
                None,
                value,
                None,
                f"not judged: too few points ({n}; the check needs at least {needed} so that its threshold stays "
                f"at {100 * max(TOLERANCES[name], MAX_THRESHOLD):g}%). Raise evaluate.check_n (or n).",
                too_few_points=True,
            )
        return cls(name, None if value is None else within_threshold(value, threshold), value, threshold, advice)


def verdict(checks: list[CheckResult]) -> str:
    """``no masking found`` or ``masking suspected: <failed checks>``, followed by the checks that could not
    be judged (``; not judged (too few points): <checks>``)."""
    failed = [c.name for c in checks if c.failed]
    text = "masking suspected: " + ", ".join(failed) if failed else "no masking found"
    unjudged = [c.name for c in checks if c.not_judged]
    return text + ("; not judged (too few points): " + ", ".join(unjudged) if unjudged else "")


@torch.no_grad()
def detect_randomness(model: nn.Module, x: torch.Tensor, repeats: int = 3) -> float:
    """Largest |logit difference| between identical eval-mode forward passes (0 for a deterministic model;
    differences below 1e-5 of the logits' scale, i.e. non-deterministic kernels, count as 0)."""
    with eval_mode(model):
        first = model(x)
        diff = max(float((model(x) - first).abs().max()) for _ in range(repeats - 1))
    # below float rounding of the logits' scale: a deterministic model with non-deterministic kernels
    return diff if diff > 1e-5 * max(1.0, float(first.abs().max())) else 0.0


def zero_gradient_fraction(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str = "ce") -> tuple[float, float]:
    """(fraction of points whose input gradient is all zero, fraction of zero gradient entries).

    Measured on the raw model at the clean points, in eval mode (auto-attack's zero-gradient check,
    Pintor et al.'s "unavailable gradients").
    """
    with eval_mode(model):
        grad, _, _ = input_gradient(model, x, y, loss)
    flat = grad.flatten(1)
    zero = flat == 0
    return float(zero.all(1).float().mean()), float(zero.float().mean())


@dataclass
class ProbeContext:
    """What every check's probes share: the model, the evaluation subset and its probe points, the settings.

    ``clean``: per point of ``x``, the clean accuracy (mean over ``draws``); ``base``: the fields of every row.
    """

    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    spec: EvalSpec
    probe_idx: torch.Tensor
    clean: torch.Tensor
    draws: int = 1
    surrogate: nn.Module | None = None
    seed: int = 0
    base: dict[str, Any] = field(default_factory=dict)
    xp: torch.Tensor = field(init=False)
    yp: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.xp, self.yp = self.x[self.probe_idx], self.y[self.probe_idx]

    @property
    def norm(self) -> str:
        return self.spec.norm

    @property
    def eps_grid(self) -> list[float]:
        return sorted(self.spec.eps)

    @property
    def mid(self) -> float:
        """The middle eps of the grid, where the probes of checks 3, 4 and 7 run."""
        grid = self.eps_grid
        return grid[len(grid) // 2] if grid else (0.1 if self.norm == "linf" else 1.0)

    @property
    def stochastic(self) -> bool:
        return self.draws > 1

    @property
    def steps(self) -> int:
        """The steps T of the PGD probes."""
        return 20 if self.spec.suite != "full" else 100

    def wrapped(self, attack: Attack) -> Attack:
        return wrap_attack(attack, self.stochastic, self.surrogate, self.spec.eot_draws)

    def attack(self, attack: Attack, eps: float) -> tuple[AttackResult, torch.Tensor]:
        """``attack`` (with EOT/BPDA as needed) on the probe points: its result and per-point accuracy."""
        res = self.wrapped(attack)(self.model, self.xp, self.yp, eps=eps, generator=self.generator())
        if not isinstance(res, AttackResult):
            raise TypeError(f"{type(attack).__name__} returned {type(res).__name__} for one eps")
        correct = adv_correct(self.model, res, self.yp, self.stochastic, self.draws, self.spec.batch_size)
        return res, torch.minimum(correct, self.clean[self.probe_idx])

    def generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed)

    def run(
        self,
        label: str,
        key: str,
        eps: float,
        correct: torch.Tensor,
        res: AttackResult,
        idx: torch.Tensor | None = None,
        white_box: bool = True,
        adaptive: bool = True,
    ) -> AttackRun:
        """A probe's run (on the probe points unless ``idx``): its points count in the worst case like any attack's."""
        idx = self.probe_idx if idx is None else idx
        return AttackRun(label, key, eps, idx, correct, res, 0.0, white_box, adaptive, self.norm)

    def row(self, label: str, eps: float, acc: float, n: int, params: dict[str, Any]) -> ResultRow:
        return acc_row(self.base, label, eps, acc, n, params)

    def on_probe(self, run: AttackRun) -> torch.Tensor | None:
        """The run's own per-point accuracy on the probe points, or None when it did not attack them all (a cascaded
        attack skips points fooled before it: its accuracy there is not its own)."""
        pos = {int(i): k for k, i in enumerate(run.idx)}
        if not all(int(i) in pos for i in self.probe_idx):
            return None
        if run.attacked_mask is not None and not bool(run.attacked_mask[[pos[int(i)] for i in self.probe_idx]].all()):
            return None
        return run.correct[torch.tensor([pos[int(i)] for i in self.probe_idx])]


@dataclass
class Checked:
    """What one check produced: its result (``None``: nothing to judge), the probe runs that join the worst
    case, and the rows they add to the store."""

    result: CheckResult | None
    runs: list[AttackRun] = field(default_factory=list)
    rows: list[ResultRow] = field(default_factory=list)


# --- the checks, in the order they run ---------------------------------------------------------------------


def single_vs_iterative(ctx: ProbeContext, runs: list[AttackRun]) -> Checked:
    """1. FGSM never beats the best iterative attack on the probe points, at any eps of the grid.

    The suite's own adaptive runs that attacked every probe point are compared; where there is none, an
    FGSM (``check:fgsm``) or PGD-20 (``check:pgd-20``) probe stands in.
    """
    diffs, probes = [], []
    for eps in ctx.eps_grid:
        suite_runs = [r for r in [*runs, *probes] if r.adaptive and r.norm == ctx.norm and r.eps is not None]
        fgsm = [ctx.on_probe(r) for r in suite_runs if r.key == "fgsm" and math.isclose(r.eps or 0.0, eps)]
        iters = [
            ctx.on_probe(r)
            for r in suite_runs
            if r.key in ("pgd", "apgd-ce", "apgd-dlr", "apgd-t", "bim")
            and math.isclose(r.eps or 0.0, eps)  # an L2 run at a number equal to an L-inf eps is another attack
        ]
        fgsm_ok, iters_ok = [f for f in fgsm if f is not None], [i for i in iters if i is not None]
        if not fgsm_ok:
            probe = ATTACKS.create("fgsm", norm=ctx.norm)
            res, ok = ctx.attack(probe, eps)
            probes.append(ctx.run("check:fgsm", probe.key, eps, ok, res))
            fgsm_ok = [ok]
        if not iters_ok:  # else the suite's own iterative runs on the probe points (e.g. seed-paper PGD entries)
            probe = ATTACKS.create("pgd", norm=ctx.norm, steps=20)
            res, ok = ctx.attack(probe, eps)
            probes.append(ctx.run("check:pgd-20", probe.key, eps, ok, res))
            iters_ok = [ok]
        best_iter = torch.stack(iters_ok).min(0).values.mean()
        diffs.append(float(best_iter - fgsm_ok[0].mean()))
    result = CheckResult.judge(
        "single-vs-iterative",
        max(diffs) if diffs else None,
        len(ctx.probe_idx),
        "FGSM left fewer points correct than PGD: the iterative attack is not converging "
        "(gradient masking or a too-small step); try more steps, restarts, other losses.",
    )
    return Checked(result, probes)


def monotone_in_eps(worst_case: dict[float, float], eps_grid: list[float], n: int) -> CheckResult:
    """2. The suite's worst-case accuracy on ``n`` points does not rise with eps (needs two eps of the grid)."""
    curve = [worst_case[e] for e in sorted(eps_grid) if e in worst_case]
    if len(curve) < 2:
        return CheckResult(
            "monotone-in-eps",
            None,
            None,
            None,
            f"not applicable: the suite ran at {len(curve)} eps; monotonicity needs at least two",
        )
    return CheckResult.judge(
        "monotone-in-eps",
        max(b - a for a, b in itertools.pairwise(curve)),
        n,
        "Robust accuracy rises with eps: the attack fails at large eps, a sign of masking "
        "or of a broken attack. Try more steps, BPDA/EOT, a gradient-free attack.",
    )


def unbounded_attack(ctx: ProbeContext) -> Checked:
    """2. PGD with an eps covering the whole image (``check:unbounded-pgd``) fools (nearly) every probe point."""
    big = 1.0 if ctx.norm == "linf" else math.sqrt(ctx.x[0].numel())
    step_size = 0.05 if ctx.norm == "linf" else big / 20
    _, correct = ctx.attack(
        ATTACKS.create("pgd", norm=ctx.norm, steps=50, random_start=False, step_size=step_size), big
    )
    acc = float(correct.mean())
    result = CheckResult.judge(
        "unbounded-attack",
        acc,
        len(ctx.probe_idx),
        "An attack with eps covering the whole image does not fool every point: gradients are "
        "masked or the attack is broken (Pintor: unconstrained attack failure). Use BPDA/EOT.",
    )
    return Checked(result, rows=[ctx.row("check:unbounded-pgd", big, acc, len(ctx.probe_idx), {"steps": 50})])


@dataclass
class PGDProbes:
    """PGD on the probe points at the middle eps, shared by checks 3, 4 and 7: T steps (``t``), 2T steps
    continuing the same path (``t2``), T steps keeping the first iterate that fools (``early``), and 2T steps
    with restarts (``restarts``): each a result and the per-point accuracy it left."""

    steps: int
    t_res: AttackResult
    t_ok: torch.Tensor
    t2_res: AttackResult
    t2_ok: torch.Tensor
    early_ok: torch.Tensor
    restarts_ok: torch.Tensor
    runs: list[AttackRun] = field(default_factory=list)  # check:pgd-T-steps, check:pgd-early-stop

    @classmethod
    def measure(cls, ctx: ProbeContext) -> PGDProbes:
        mid, norm, steps = ctx.mid, ctx.norm, ctx.steps
        step_size = 2.5 * mid / steps  # Madry et al.'s rule, fixed so that the 2T run extends the T run
        t = PGD(norm=norm, steps=steps, step_size=step_size, random_start=False)
        t_res, t_ok = ctx.attack(t, mid)
        runs = [ctx.run("check:pgd-T-steps", t.key, mid, t_ok, t_res)]
        t2_res, t2_ok = ctx.attack(PGD(norm=norm, steps=2 * steps, step_size=step_size, random_start=False), mid)
        early = PGD(norm=norm, steps=steps, step_size=step_size, random_start=False, early_stop=True)
        early_res, early_ok = ctx.attack(early, mid)
        runs.append(ctx.run("check:pgd-early-stop", early.key, mid, early_ok, early_res))
        restarts = PGD(norm=norm, steps=2 * steps, restarts=2 if ctx.spec.suite != "full" else 6)
        _, restarts_ok = ctx.attack(restarts, mid)
        return cls(steps, t_res, t_ok, t2_res, t2_ok, early_ok, restarts_ok, runs)

    @property
    def stronger_ok(self) -> torch.Tensor:
        """Per point, the accuracy left by the stronger of the 2T-step and the restarted PGD."""
        return torch.minimum(self.t2_ok, self.restarts_ok)

    def losses(self, ctx: ProbeContext) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per probe point, the CE loss at the clean point, after T and after 2T steps."""
        loss0 = mean_loss(ctx.model, ctx.xp, ctx.yp, ctx.draws)
        return (
            loss0,
            mean_loss(ctx.model, self.t_res.x_adv, ctx.yp, ctx.draws),
            mean_loss(ctx.model, self.t2_res.x_adv, ctx.yp, ctx.draws),
        )


def more_steps_restarts(ctx: ProbeContext, runs: list[AttackRun], probes: PGDProbes) -> Checked:
    """3. Doubling PGD's steps and adding restarts (``check:pgd-2x-steps-restarts``) does not lower accuracy.

    Compared with the suite's own PGD on the probe points, else with what the white-box cascade reached there,
    else with the T-step probe.
    """
    mid, probe_idx = ctx.mid, ctx.probe_idx
    suite_pgd = [
        ctx.on_probe(r)
        for r in runs
        if r.key == "pgd"
        and not r.label.startswith("check:")
        and r.norm == ctx.norm
        and r.eps is not None
        and math.isclose(r.eps, mid)
    ]
    suite_pgd = [s for s in suite_pgd if s is not None]
    if suite_pgd:
        base_acc = float(suite_pgd[0].mean())
    else:
        reached = _cascade_on_probe(ctx, runs)
        base_acc = float(reached.mean()) if reached is not None else float(probes.t_ok.mean())
    stronger = probes.stronger_ok
    acc = float(stronger.mean())
    label = "check:pgd-2x-steps-restarts"
    result = CheckResult.judge(
        "more-steps-restarts",
        base_acc - acc,
        len(probe_idx),
        "Doubling PGD's steps and adding restarts lowered robust accuracy: the suite's attack "
        "had not converged. Report the stronger attack; use more steps/restarts (or APGD).",
    )
    run = ctx.run(label, "pgd", mid, stronger, probes.t2_res)
    return Checked(result, [run], [ctx.row(label, mid, acc, len(probe_idx), {"steps": 2 * probes.steps})])


def _cascade_on_probe(ctx: ProbeContext, runs: list[AttackRun]) -> torch.Tensor | None:
    """In a cascade no attack's own accuracy on the probes is known: what the white-box cascade as a whole reached
    there at the middle eps (did more steps and restarts find points that every white-box attack missed?)."""
    cascaded = [
        r
        for r in runs
        if r.cumulative is not None
        and r.white_box
        and r.norm == ctx.norm
        and r.eps is not None
        and math.isclose(r.eps, ctx.mid)
    ]
    if not cascaded:
        return None
    last = cascaded[-1]
    pos = {int(i): k for k, i in enumerate(last.idx)}
    if not all(int(i) in pos for i in ctx.probe_idx):
        return None
    return last.cumulative[torch.tensor([pos[int(i)] for i in ctx.probe_idx])]


def incomplete_optimisation(
    t_ok: torch.Tensor, t2_ok: torch.Tensor, loss_t: torch.Tensor, loss_t2: torch.Tensor
) -> CheckResult:
    """7. The loss on the points T steps did not fool stops rising from T to 2T steps (Pintor et al.), or the
    rise is not material: 2T steps fool fewer than ``max(MIN_POINTS, 2%)`` more points.

    ``t_ok``, ``t2_ok``: per probe point, accuracy after T and 2T steps; ``loss_t``, ``loss_t2``: the CE loss there.
    """
    n = len(t_ok)
    alive = t_ok > 0.5
    if alive.any():
        la, lb = float(loss_t[alive].mean()), float(loss_t2[alive].mean())
        incomplete = (lb - la) / max(abs(la), 1e-12)
    else:
        incomplete = 0.0
    tol = TOLERANCES["incomplete-optimisation"]
    # material only when the extra steps also fool more points than noise would explain (docs/checks.md)
    extra_fooled = float((t_ok - t2_ok).clamp(min=0).sum())
    material = extra_fooled >= max(MIN_POINTS, 0.02 * n)
    if incomplete > tol and n < MIN_POINTS / 0.02:
        # the materiality gate counts points: below 100 probes it would exceed 2% of them
        return CheckResult(
            "incomplete-optimisation",
            None,
            incomplete,
            None,
            f"not judged: too few points ({n}; the loss kept rising from T to 2T steps, and whether "
            "that is material needs at least 100 probe points). Raise evaluate.check_n.",
            too_few_points=True,
        )
    return CheckResult(
        "incomplete-optimisation",
        not (incomplete > tol and material),
        incomplete,
        tol,
        (
            f"The loss kept rising between T and 2T steps on points the attack had not fooled, and 2T steps "
            f"fooled {extra_fooled:.0f} more points: the attack stopped too early. Use more steps "
            "(Pintor et al. 2022)."
        )
        if material
        else f"loss still rising from T to 2T steps, but 2T steps fooled only {extra_fooled:.0f} more point(s) "
        f"(needs max({MIN_POINTS}, 2% of the probe points)): not material",
    )


def non_converging_attack(
    clean_ok: torch.Tensor, t_ok: torch.Tensor, loss0: torch.Tensor, loss_t: torch.Tensor
) -> CheckResult:
    """7. On the clean-correct probe points T steps did not fool, the attack never ends with a lower loss than
    it started with (``clean_ok``, ``t_ok``: per-point accuracy before and after; ``loss0``, ``loss_t``: CE loss)."""
    cc = clean_ok > 0.5
    worse = float(((loss_t < loss0 - 1e-6) & cc & (t_ok > 0.5)).float().sum()) / max(int(cc.sum()), 1)
    return CheckResult.judge(
        "non-converging-attack",
        worse,
        int(cc.sum()),
        "For these points the attack ended with a lower loss than it started with: the "
        "step size is too large or the loss surface is noisy. Lower the step, use EOT or APGD.",
    )


def silent_success(clean_ok: torch.Tensor, t_ok: torch.Tensor, early_ok: torch.Tensor) -> CheckResult:
    """7. No clean-correct probe point is fooled by an iterate (``early_ok``: PGD keeping the first iterate that
    fools) but not by the returned point (``t_ok``); judged on the mean over draws for a random model."""
    cc = clean_ok > 0.5
    silent = float(((early_ok < 0.5) & (t_ok >= 0.5) & cc).float().sum()) / max(int(cc.sum()), 1)
    return CheckResult.judge(
        "silent-success",
        silent,
        int(cc.sum()),
        "An iterate fooled the model but the returned point does not: keep the best iterate "
        "(early_stop=True, or restarts) (Pintor et al. 2022).",
    )


def black_box_vs_white_box(ctx: ProbeContext, runs: list[AttackRun], probes: PGDProbes) -> Checked:
    """4. No gradient-free (Square, Boundary) or transfer attack fools points that the white-box attacks missed.

    Where the suite ran no gradient-free attack of its norm at the middle eps, a probe does (``check:square-1000``,
    ``check:boundary-200``, on at most 100 probe points). Judged at every eps where a black-box attack ran, on the
    gap largest relative to its threshold.
    """
    mid, norm = ctx.mid, ctx.norm
    black = [r for r in runs if not r.white_box and r.eps is not None and math.isclose(r.eps, mid)]
    found = Checked(None)
    black_key = "square" if norm == "linf" else "boundary"
    if not any(r.key == black_key and r.norm == norm for r in black):
        found = _black_box_probe(ctx)
        black += found.runs
    white_probe = AttackRun(
        "check:pgd",
        "pgd",
        mid,
        ctx.probe_idx,
        torch.minimum(torch.minimum(probes.t_ok, probes.t2_ok), probes.restarts_ok),
        probes.t_res,
        0.0,
        norm=norm,
    )
    # every eps where a black-box or transfer attack ran, not only the middle one: a gap at a small
    # eps is masking too (e.g. ReLU outputs flattening the loss while Square still finds a way)
    black_all = black + [r for r in runs if not r.white_box and r.eps is not None and not math.isclose(r.eps, mid)]
    gaps = []
    for bb in black_all:
        if bb.norm != norm or bb.eps is None:
            continue
        per_point = ctx.clean.clone()
        same_eps = [
            r for r in runs if r.white_box and r.norm == norm and r.eps is not None and math.isclose(r.eps, bb.eps)
        ]
        for w in [*same_eps, *([white_probe] if math.isclose(bb.eps, mid) else [])]:
            per_point[w.idx] = torch.minimum(per_point[w.idx], w.correct)
        excess = float(per_point[bb.idx].mean() - bb.correct.mean())
        gaps.append((excess, len(bb.idx), bb.label, bb.eps))
    if not gaps:
        found.result = CheckResult(
            "black-box-vs-white-box", None, None, None, "not applicable: no black-box attack ran"
        )
        return found

    # judged on the gap that is largest relative to its own threshold (or the largest, where none can be judged)
    def margin(g: tuple[float, int, str, float]) -> float:
        t = effective_threshold("black-box-vs-white-box", g[1])
        return g[0] - (t if t is not None else 0.0)

    excess, n, label, eps = max(gaps, key=margin)
    found.result = CheckResult.judge(
        "black-box-vs-white-box",
        excess,
        n,
        "A gradient-free (Square, Boundary) or transfer attack fools points that the white-box attacks "
        f"missed: white-box gradients are unreliable (masking). Report the worst case; try BPDA. "
        f"Largest gap: {label} at eps={eps:g}.",
    )
    return found


def _black_box_probe(ctx: ProbeContext) -> Checked:
    """Square (L-inf, 1000 queries) or Boundary (L2, 200 steps) on at most 100 probe points at the middle eps."""
    mid = ctx.mid
    bb_idx = ctx.probe_idx[: min(100, len(ctx.probe_idx))]  # 100 points: enough to judge the check at 2%
    if ctx.norm == "linf":
        probe, label = ATTACKS.create("square", queries=1000), "check:square-1000"
    else:
        probe, label = ATTACKS.create("boundary", steps=200), "check:boundary-200"
    res = ctx.wrapped(probe)(ctx.model, ctx.x[bb_idx], ctx.y[bb_idx], eps=mid, generator=ctx.generator())
    if not isinstance(res, AttackResult):
        raise TypeError(f"{type(probe).__name__} returned {type(res).__name__} for one eps")
    correct = adv_correct(ctx.model, res, ctx.y[bb_idx], ctx.stochastic, ctx.draws, ctx.spec.batch_size)
    ok = torch.minimum(correct, ctx.clean[bb_idx])
    run = ctx.run(label, probe.key, mid, ok, res, idx=bb_idx, white_box=False)
    return Checked(None, [run], [ctx.row(label, mid, float(ok.mean()), len(bb_idx), {"attack": repr(probe)})])


def unattacked_points(runs: list[AttackRun]) -> CheckResult | None:
    """No attack left points unattacked for want of an adversarial start (judged on the run that left the largest
    fraction; ``None`` where no attack can leave points unattacked)."""
    unattacked = [
        (int(r.result.extra["unattacked"].sum()), r.attacked, r.label)
        for r in runs
        if "unattacked" in r.result.extra and r.eps is not None and not r.label.endswith("(projected)")
    ]
    if not unattacked:
        return None
    count, n_points, label = max(unattacked, key=lambda u: u[0] / max(u[1], 1))
    return CheckResult.judge(
        "unattacked-points",
        count / max(n_points, 1),
        n_points,
        f"{label} found no adversarial starting point for {count} of {n_points} points and left them "
        "as they were: they are not robust by merit. Use init='other-class' or more init_attempts.",
    )


def unavailable_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> CheckResult:
    """6. At most 1% of the points ``(x, y)`` have an all-zero input gradient (:func:`zero_gradient_fraction`)."""
    zero_points, zero_entries = zero_gradient_fraction(model, x, y)
    tol = TOLERANCES["unavailable-gradients"]
    return CheckResult(
        "unavailable-gradients",
        within_threshold(zero_points, tol),
        zero_points,
        tol,
        f"{100 * zero_points:.1f}% of points have an all-zero input gradient "
        f"({100 * zero_entries:.1f}% of entries): gradients are masked (quantisation, "
        "saturated softmax). Declare a BPDA surrogate; use margin-loss and gradient-free attacks.",
    )


def eot_bpda(ctx: ProbeContext, runs: list[AttackRun], gradients_available: bool) -> CheckResult:
    """5. Vanishing gradients have a BPDA surrogate, and on a random model every eps of the grid was attacked with
    EOT by the suite itself (the checklist's probes are always adaptive and would hide a single-draw suite)."""
    bpda_ok = gradients_available or ctx.surrogate is not None
    no_eot = (
        [
            e
            for e in ctx.eps_grid
            if not any(
                r.adaptive
                and not r.label.startswith("check:")
                and r.norm == ctx.norm
                and r.eps is not None
                and math.isclose(r.eps, e)
                for r in runs
            )
        ]
        if ctx.stochastic
        else []
    )
    if not bpda_ok:
        advice = (
            "Gradients vanish and no BPDA surrogate is declared: the white-box numbers are upper "
            "bounds. Declare one with neurorobust.declare(model, surrogate=...)."
        )
    elif no_eot:
        advice = (
            "The model is random but no attack of the suite at eps " + ", ".join(f"{e:g}" for e in no_eot) + " used "
            "EOT (only the checklist's probes did): the suite's numbers there are single-draw upper bounds. Add an "
            "adaptive attack (adaptive = true) there."
        )
    else:
        advice = (
            f"EOT ({ctx.spec.eot_draws} draws) {'used' if ctx.stochastic else 'not needed'}; BPDA "
            f"{'used' if ctx.surrogate is not None else 'not needed'}."
        )
    # the value: eps without EOT, plus 1 for a missing surrogate
    return CheckResult("eot-bpda", bpda_ok and not no_eot, float(len(no_eot)) + float(not bpda_ok), 0.0, advice)


def transfer_failure(ctx: ProbeContext) -> Checked:
    """7. Examples that fool the declared surrogate (PGD at the middle eps, ``check:surrogate-transfer``) fool the
    model at least half as often; not applicable without a surrogate."""
    tol = TOLERANCES["transfer-failure"]
    if ctx.surrogate is None:
        return Checked(
            CheckResult("transfer-failure", None, None, tol, "not applicable: no surrogate declared (no BPDA attack)")
        )
    mid, probe_idx = ctx.mid, ctx.probe_idx
    res = PGD(norm=ctx.norm, steps=ctx.steps)(ctx.surrogate, ctx.xp, ctx.yp, eps=mid, generator=ctx.generator())
    if not isinstance(res, AttackResult):
        raise TypeError("PGD returned a list for one eps")
    correct = point_correct(ctx.model, res.x_adv, ctx.yp, ctx.draws, ctx.spec.batch_size)
    target_correct = torch.minimum(correct, ctx.clean[probe_idx])
    run = ctx.run("check:surrogate-transfer", "transfer", mid, target_correct, res, white_box=False)
    cc = ctx.clean[probe_idx] > 0.5
    s_rate = float((res.success & cc).float().sum()) / max(int(cc.sum()), 1)
    t_rate = float(((target_correct < 0.5) & cc).float().sum()) / max(int(cc.sum()), 1)
    if s_rate == 0:
        result = CheckResult(
            "transfer-failure",
            None,
            None,
            tol,
            f"not judged: PGD fooled no point of the surrogate itself at eps={mid:g}, so nothing can be "
            "transferred; the BPDA numbers cannot be checked this way (try a larger eps).",
            too_few_points=True,
        )
    else:
        ratio = t_rate / s_rate
        result = CheckResult(
            "transfer-failure",
            ratio >= tol,
            ratio,
            tol,
            "Examples that fool the surrogate do not fool the model: the surrogate is a poor "
            "stand-in, so BPDA numbers are upper bounds. Improve the surrogate.",
        )
    return Checked(result, [run])


def randomness(logit_change: float, declared: bool, eot_draws: int) -> CheckResult:
    """8. A model whose logits change between identical passes (``logit_change`` > 0, :func:`detect_randomness`)
    declares it; either way a random model is judged on the mean over ``eot_draws`` draws."""
    ok = logit_change == 0 or declared
    if not ok:
        advice = (
            "The model is random at test time but does not declare it: judged on the mean over "
            f"{eot_draws} draws with EOT anyway; declare is_stochastic=True."
        )
    elif logit_change > 0:
        advice = f"random: EOT with {eot_draws} draws; accuracy is the mean over draws"
    else:
        advice = "deterministic"
    return CheckResult("randomness", ok, logit_change, TOLERANCES["randomness"], advice)


def pgd_without_eot(ctx: ProbeContext) -> Checked:
    """On a random model, PGD without EOT (``check:pgd-without-eot``, BPDA kept): the single-draw number EOT is
    compared with. No result of its own; nothing on a deterministic model."""
    if not ctx.stochastic:
        return Checked(None)
    mid, steps = ctx.mid, ctx.steps
    plain = PGD(norm=ctx.norm, steps=steps)
    attack = BPDA(attack=plain, surrogate=ctx.surrogate) if ctx.surrogate is not None else plain
    res = attack(ctx.model, ctx.xp, ctx.yp, eps=mid, generator=ctx.generator())
    if not isinstance(res, AttackResult):
        raise TypeError("PGD returned a list for one eps")
    ok = torch.minimum(
        point_correct(ctx.model, res.x_adv, ctx.yp, ctx.draws, ctx.spec.batch_size), ctx.clean[ctx.probe_idx]
    )
    label = "check:pgd-without-eot"
    run = ctx.run(label, "pgd", mid, ok, res, adaptive=False)
    return Checked(None, [run], [ctx.row(label, mid, float(ok.mean()), len(ctx.probe_idx), {"steps": steps})])


# --- the checklist -----------------------------------------------------------------------------------------


def run_checklist(
    ctx: ProbeContext,
    runs: list[AttackRun],
    worst_case: dict[float, float],
    *,
    logit_change: float,
    declared: bool,
    emit: Callable[[list[ResultRow]], None],
    tick: Callable[[str], None],
) -> list[CheckResult]:
    """Run the checks in order on the suite's ``runs`` and its ``worst_case`` curve (DESIGN §5).

    Every probe run at an eps of the grid is appended to ``runs`` (so it joins the worst case), and seen by the
    checks after it; the probes' rows go to ``emit``, and ``tick`` marks each of the six stages.
    """
    checks: list[CheckResult] = []

    def keep(done: Checked) -> None:
        runs.extend(done.runs)
        emit(done.rows)
        if done.result is not None:
            checks.append(done.result)

    keep(single_vs_iterative(ctx, runs))
    tick("check: single vs iterative")
    checks.append(monotone_in_eps(worst_case, ctx.eps_grid, len(ctx.y)))
    keep(unbounded_attack(ctx))
    tick("check: monotone / unbounded")
    probes = PGDProbes.measure(ctx)
    runs.extend(probes.runs)
    keep(more_steps_restarts(ctx, runs, probes))
    loss0, loss_t, loss_t2 = probes.losses(ctx)
    clean_ok = ctx.clean[ctx.probe_idx]
    checks.append(incomplete_optimisation(probes.t_ok, probes.t2_ok, loss_t, loss_t2))
    checks.append(non_converging_attack(clean_ok, probes.t_ok, loss0, loss_t))
    checks.append(silent_success(clean_ok, probes.t_ok, probes.early_ok))
    tick("check: steps, restarts, convergence")
    keep(black_box_vs_white_box(ctx, runs, probes))
    keep(Checked(unattacked_points(runs)))
    tick("check: black-box vs white-box")
    gradients = unavailable_gradients(ctx.model, ctx.xp, ctx.yp)
    checks += [gradients, eot_bpda(ctx, runs, bool(gradients.passed))]
    tick("check: gradients, EOT/BPDA")
    keep(transfer_failure(ctx))
    checks.append(randomness(logit_change, declared, ctx.spec.eot_draws))
    keep(pgd_without_eot(ctx))
    tick("check: randomness")
    return checks
