"""Each check of the gradient-masking checklist on its own (evaluation/checklist.py), on made-up numbers and runs:
one input that passes, one that fails, and where the check has one, the input it cannot judge.

The probes that need attacks are not run here: the suite's runs are built by hand, as the attack suite would
hand them over (tests/test_checklist.py runs the whole checklist on real models).
"""

from __future__ import annotations

import torch
from torch import nn

from neurorobust.attacks import AttackResult
from neurorobust.evaluation.checklist import (
    CheckResult,
    PGDProbes,
    ProbeContext,
    black_box_vs_white_box,
    eot_bpda,
    incomplete_optimisation,
    monotone_in_eps,
    more_steps_restarts,
    non_converging_attack,
    randomness,
    silent_success,
    single_vs_iterative,
    transfer_failure,
    unattacked_points,
    unavailable_gradients,
)
from neurorobust.evaluation.runs import AttackRun
from neurorobust.specs import EvalSpec

N = 200  # enough points that every count-based check is judged at its own tolerance


def _result(n: int = N, **extra: torch.Tensor) -> AttackResult:
    return AttackResult(
        torch.zeros(n, 1, 2, 2),
        torch.zeros(n, dtype=torch.bool),
        {k: torch.zeros(n) for k in ("l0", "l2", "linf")},
        torch.zeros(n, dtype=torch.long),
        0.2,
        "linf",
        None,
        dict(extra),
    )


def _run(label: str, key: str, eps: float, correct: torch.Tensor, **kwargs) -> AttackRun:
    return AttackRun(
        label, key, eps, torch.arange(len(correct)), correct, _result(len(correct)), 0.0, norm="linf", **kwargs
    )


def _ctx(n: int = N, draws: int = 1, surrogate: nn.Module | None = None, **spec) -> ProbeContext:
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    x, y = torch.rand(n, 1, 2, 2), torch.arange(n) % 3
    spec = EvalSpec(**{"eps": [0.1, 0.2, 0.3], "check_n": n, "n": n, **spec})
    base = {"experiment": "e", "model": "m", "dataset": "d"}
    return ProbeContext(model, x, y, spec, torch.arange(n), torch.ones(n), draws, surrogate, base=base)


def _probes(t_ok: torch.Tensor, t2_ok: torch.Tensor | None = None, early_ok: torch.Tensor | None = None) -> PGDProbes:
    t2_ok = t_ok if t2_ok is None else t2_ok
    early_ok = t_ok if early_ok is None else early_ok
    return PGDProbes(20, _result(), t_ok, _result(), t2_ok, early_ok, t2_ok)


def test_monotone_in_eps_passes_a_falling_curve_and_fails_a_rising_one():
    grid = [0.1, 0.2, 0.3]
    passed = monotone_in_eps({0.1: 0.8, 0.2: 0.5, 0.3: 0.2}, grid, N)
    assert passed.passed is True and passed.value < 0
    failed = monotone_in_eps({0.1: 0.8, 0.2: 0.5, 0.3: 0.6}, grid, N)
    assert failed.failed and abs(failed.value - 0.1) < 1e-9
    single = monotone_in_eps({0.1: 0.8}, grid, N)
    assert single.passed is None and "at least two" in single.advice and not single.not_judged
    few = monotone_in_eps({0.1: 0.8, 0.2: 0.9}, grid, 20)
    assert few.passed is None and few.not_judged


def test_incomplete_optimisation_needs_a_rising_loss_and_material_extra_points():
    t_ok = torch.ones(N)
    loss_t = torch.ones(N)
    assert incomplete_optimisation(t_ok, t_ok, loss_t, loss_t).passed is True  # the loss stopped rising
    fooled_more = t_ok.clone()
    fooled_more[:10] = 0.0  # 2T steps fool 10 more points (>= max(2, 2% of 200))
    rising = incomplete_optimisation(t_ok, fooled_more, loss_t, 2 * loss_t)
    assert rising.failed and rising.value == 1.0 and "stopped too early" in rising.advice
    not_material = incomplete_optimisation(t_ok, t_ok, loss_t, 2 * loss_t)
    assert not_material.passed is True and "not material" in not_material.advice
    few = incomplete_optimisation(torch.ones(50), torch.ones(50), torch.ones(50), 2 * torch.ones(50))
    assert few.passed is None and few.not_judged and "at least 100 probe points" in few.advice


def test_non_converging_attack_flags_points_that_end_below_their_starting_loss():
    clean_ok, t_ok = torch.ones(N), torch.ones(N)
    loss0 = torch.ones(N)
    assert non_converging_attack(clean_ok, t_ok, loss0, 2 * loss0).passed is True
    lower = loss0.clone()
    lower[:20] = 0.5  # 10% of the clean-correct, unfooled points end lower than they started
    check = non_converging_attack(clean_ok, t_ok, loss0, lower)
    assert check.failed and abs(check.value - 0.1) < 1e-9
    assert non_converging_attack(torch.ones(20), torch.ones(20), torch.ones(20), torch.zeros(20)).not_judged


def test_silent_success_flags_iterates_that_fooled_but_were_not_returned():
    clean_ok, t_ok = torch.ones(N), torch.ones(N)
    assert silent_success(clean_ok, t_ok, t_ok).passed is True
    early = t_ok.clone()
    early[:10] = 0.0
    check = silent_success(clean_ok, t_ok, early)
    assert check.failed and abs(check.value - 0.05) < 1e-9
    # a point misclassified before the attack is never a silent success
    assert silent_success(torch.zeros(N), t_ok, early).value == 0.0


def test_unattacked_points_is_judged_only_where_an_attack_can_leave_points():
    assert unattacked_points([_run("pgd", "pgd", 0.2, torch.ones(N))]) is None
    left = torch.zeros(N, dtype=torch.bool)
    run = _run("boundary", "boundary", 0.2, torch.ones(N), white_box=False)
    run.result = _result(unattacked=left)
    assert unattacked_points([run]).passed is True
    left[:30] = True
    check = unattacked_points([run])
    assert check.failed and check.value == 30 / N and "boundary found no adversarial starting point" in check.advice
    projected = _run("boundary (projected)", "boundary", 0.2, torch.ones(N))
    projected.result = _result(unattacked=left)
    assert unattacked_points([projected]) is None  # a projection repeats its attack's points


def test_randomness_must_be_declared():
    assert randomness(0.0, False, 20) == CheckResult("randomness", True, 0.0, 0.0, "deterministic")
    undeclared = randomness(0.3, False, 20)
    assert undeclared.failed and "declare is_stochastic=True" in undeclared.advice
    assert randomness(0.3, True, 20).passed is True


def test_unavailable_gradients_on_a_linear_and_a_quantised_model():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    x, y = torch.rand(50, 1, 2, 2), torch.arange(50) % 3
    assert unavailable_gradients(model, x, y).passed is True

    class Rounded(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return model(torch.round(x * 3) / 3)

    check = unavailable_gradients(Rounded(), x, y)
    assert check.failed and check.value == 1.0


def test_eot_bpda_asks_for_eot_at_every_eps_of_a_random_model_and_a_surrogate_for_vanishing_gradients():
    ctx = _ctx(draws=4)
    suite = [_run("pgd", "pgd", e, torch.ones(N)) for e in (0.1, 0.2, 0.3)]
    assert eot_bpda(ctx, suite, gradients_available=True).passed is True
    # only the checklist's probes were adaptive at 0.3
    runs = [
        *suite[:2],
        _run("pgd", "pgd", 0.3, torch.ones(N), adaptive=False),
        _run("check:x", "pgd", 0.3, suite[0].correct),
    ]
    check = eot_bpda(ctx, runs, gradients_available=True)
    assert check.failed and check.value == 1.0 and "at eps 0.3 used EOT" in check.advice
    no_surrogate = eot_bpda(_ctx(), suite, gradients_available=False)
    assert no_surrogate.failed and "no BPDA surrogate" in no_surrogate.advice
    assert eot_bpda(_ctx(surrogate=nn.Identity()), suite, gradients_available=False).passed is True


def test_single_vs_iterative_compares_the_suites_own_runs_on_the_probe_points():
    ctx = _ctx()
    fooled, robust = torch.zeros(N), torch.ones(N)
    honest = [r for e in ctx.eps_grid for r in (_run("fgsm", "fgsm", e, robust), _run("pgd", "pgd", e, fooled))]
    done = single_vs_iterative(ctx, honest)
    assert done.result.passed is True and done.result.value == -1.0 and done.runs == []  # no probe needed
    masked = [r for e in ctx.eps_grid for r in (_run("fgsm", "fgsm", e, fooled), _run("pgd", "pgd", e, robust))]
    assert single_vs_iterative(ctx, masked).result.failed


def test_more_steps_restarts_compares_with_the_suites_pgd():
    ctx = _ctx()
    suite = [_run("pgd", "pgd", ctx.mid, torch.ones(N))]
    same = more_steps_restarts(ctx, suite, _probes(torch.ones(N)))
    assert same.result.passed is True and same.result.value == 0.0
    assert [r.label for r in same.runs] == [row.attack for row in same.rows] == ["check:pgd-2x-steps-restarts"]
    stronger = torch.ones(N)
    stronger[:20] = 0.0
    check = more_steps_restarts(ctx, suite, _probes(torch.ones(N), t2_ok=stronger)).result
    assert check.failed and abs(check.value - 0.1) < 1e-6


def test_black_box_vs_white_box_flags_a_gradient_free_attack_that_beats_the_white_box_ones():
    ctx = _ctx()
    robust, fooled = torch.ones(N), torch.zeros(N)
    square_fails = [_run("pgd", "pgd", ctx.mid, robust), _run("square", "square", ctx.mid, robust, white_box=False)]
    done = black_box_vs_white_box(ctx, square_fails, _probes(robust))
    assert done.result.passed is True and done.runs == []  # the suite's Square ran: no probe
    square_wins = [_run("pgd", "pgd", ctx.mid, robust), _run("square", "square", ctx.mid, fooled, white_box=False)]
    check = black_box_vs_white_box(ctx, square_wins, _probes(robust)).result
    assert check.failed and check.value == 1.0 and "Largest gap: square at eps=0.2" in check.advice
    # the white-box probes count as white-box attacks: had PGD found the points, there would be no gap
    assert black_box_vs_white_box(ctx, square_wins, _probes(fooled)).result.passed is True


def test_transfer_failure_needs_a_surrogate():
    done = transfer_failure(_ctx())
    assert done.result.passed is None and "no surrogate declared" in done.result.advice and done.runs == []
