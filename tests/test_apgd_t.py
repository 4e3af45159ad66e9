"""APGD: the reference's checkpoints, restarts of random models, NaN models; APGD-T (targeted DLR)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from neurorobust.attacks import APGD, APGDT, ATTACKS, EOT
from neurorobust.attacks.apgd import _checkpoints
from neurorobust.errors import InvalidParameterError, ModelOutputError

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_cnn(seed: int = 0, classes: int = 10) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, classes))


def clean_batch(model: nn.Module, n: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images labelled with the model's own predictions (all clean-correct)."""
    x = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return x, model(x).argmax(1)


# ------------------------------------------------------------------------------------------
# Checkpoints
# ------------------------------------------------------------------------------------------

# Hand simulation of fra31/auto-attack autopgd_base.py: the first window is
# k = n_iter_2 = max(int(0.22 n), 1) steps; a counter of steps reaches k, the step size is checked and
# the counter restarts with k = max(k - size_decr, n_iter_min), size_decr = max(int(0.03 n), 1),
# n_iter_min = max(int(0.06 n), 1). A check happens after the iterations where the counter meets k.
REFERENCE_CHECKPOINTS = {
    # n_iter_2 = int(2.2) = 2, n_iter_min = max(int(0.6), 1) = 1, size_decr = max(int(0.3), 1) = 1:
    # windows 2, 1, 1, ...
    10: [2, 3, 4, 5, 6, 7, 8, 9, 10],
    # int(4.4) = 4, max(int(1.2), 1) = 1, max(int(0.6), 1) = 1: windows 4, 3, 2, 1, 1, ...
    20: [4, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20],
    # int(11.0) = 11, int(3.0) = 3, max(int(1.5), 1) = 1: windows 11, 10, 9, 8, 7 (next 6 would end at 51)
    50: [11, 21, 30, 38, 45],
    # 22, 6, 3: windows 22, 19, 16, 13, 10, 7, 6, 6 (next ends at 105)
    100: [22, 41, 57, 70, 80, 87, 93, 99],
    # 220, 60, 30: windows 220, 190, 160, 130, 100, 70, 60, 60 (next ends at 1050)
    1000: [220, 410, 570, 700, 800, 870, 930, 990],
}


@pytest.mark.parametrize("steps", sorted(REFERENCE_CHECKPOINTS))
def test_checkpoints_are_the_reference_ones(steps: int) -> None:
    got = _checkpoints(steps)
    assert got == REFERENCE_CHECKPOINTS[steps]
    assert all(type(w) is int for w in got)


def test_checkpoints_of_tiny_runs() -> None:
    assert _checkpoints(1) == [1]
    assert _checkpoints(3) == [1, 2, 3]


# ------------------------------------------------------------------------------------------
# Restarts
# ------------------------------------------------------------------------------------------


def test_later_restarts_attack_only_the_points_not_yet_fooled() -> None:
    model = tiny_cnn()
    x, y = clean_batch(model)
    steps = 4
    one = APGD(steps=steps)(model, x, y, eps=0.03, generator=torch.Generator().manual_seed(0))
    many = APGD(steps=steps, restarts=3)(model, x, y, eps=0.03, generator=torch.Generator().manual_seed(0))
    assert bool(one.success.any()) and bool((~many.success).any())
    # the first restart is the same run: what it fooled stays fooled and is not attacked again
    assert bool(many.success[one.success].all())
    assert bool((many.queries[one.success] == steps + 1).all())
    assert bool((many.queries[~many.success] == 3 * (steps + 1)).all())


class TwoBasins(nn.Module):
    """A random 2-class model of 1-pixel images; with eps = 0.25 around 0.5, ``t = 4 (x - 0.5)`` spans [-1, 1].

    Logit of class 1 minus class 0: ``-2t - 1`` for ``t <= 0`` (noise-free; ``t = -1`` fools every
    draw) and ``t - 1.5`` plus a spike of 10 in a quarter of the draws for ``t > 0``: there the mean
    of 8 draws is misclassified whenever one draw spikes, yet 3/4 of the draws stay correct. The
    gradient never crosses ``t = 0``, so the sign of a run's random start decides its basin.
    """

    is_stochastic = True

    def __init__(self) -> None:
        super().__init__()
        self.gen = torch.Generator().manual_seed(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = 4.0 * (x.flatten(1).mean(1) - 0.5)
        spike = (torch.rand(t.shape, generator=self.gen) < 0.25).to(x.dtype) * 10.0
        d = torch.where(t <= 0, -2.0 * t - 1.0, t - 1.5 + spike)
        return torch.stack([torch.zeros_like(d), d], dim=1)


def test_random_model_keeps_the_restart_with_fewer_correct_draws() -> None:
    model = TwoBasins()
    n = 32
    x, y = torch.full((n, 1, 1, 1), 0.5), torch.zeros(n, dtype=torch.long)
    attack = EOT(attack=APGD(steps=5, restarts=4), draws=8)
    res = attack(model, x, y, eps=0.25, generator=torch.Generator().manual_seed(0))
    left = res.x_adv.flatten() < 0.5  # the basin where no draw is correct
    with torch.no_grad():
        accuracy = torch.stack([model(res.x_adv).argmax(1) == y for _ in range(200)]).float().mean()
    # A run starting at t > 0 ends where the mean logits are misclassified but 3/4 of the draws are not;
    # keeping the first such restart (judged on the mean logits) would leave about half the points there.
    # Judged on the draws, a point is attacked again until a restart reaches t < 0 (each does with prob. 1/2).
    assert float(left.float().mean()) >= 0.85
    assert float(accuracy) <= 0.15
    # a point that the first restart sent to t < 0 is not attacked again: 6 forward passes of 8 draws
    assert bool((res.queries[left] >= 6 * 8).all()) and int(res.queries.min()) == 6 * 8
    assert bool((res.queries > 6 * 8).any())


# ------------------------------------------------------------------------------------------
# NaN models
# ------------------------------------------------------------------------------------------


class NaNAbove(nn.Module):
    """Linear logits, NaN for an input with a pixel above 0.95 (reachable from the clean [0.85, 0.9] images)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = tiny_cnn()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.net(x)
        bad = (x.flatten(1) > 0.95).any(1)
        return torch.where(bad[:, None], torch.full_like(z, float("nan")), z)


@pytest.mark.parametrize("attack", [APGD(steps=3), APGD(steps=3, loss="dlr"), APGDT(steps=3, n_target_classes=2)])
def test_nan_logits_raise_model_output_error(attack: APGD) -> None:
    model = NaNAbove()
    x = 0.85 + 0.05 * torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = model(x).argmax(1)
    with pytest.raises(ModelOutputError, match="NaN"):
        attack(model, x, y, eps=0.1)


# ------------------------------------------------------------------------------------------
# APGD-T
# ------------------------------------------------------------------------------------------


def test_apgd_t_is_registered_and_documented() -> None:
    attack = ATTACKS.create("apgd-t")
    assert isinstance(attack, APGDT) and attack.key == "apgd-t"
    assert attack.steps == 100 and attack.restarts == 1 and attack.n_target_classes == 9
    assert repr(attack) == "APGDT()"
    doc = APGDT.__doc__ or ""
    assert ".. math::" in doc and "2003.01690" in doc
    assert ATTACKS.get("apgd-t").paper == APGD.paper


def test_apgd_t_at_least_as_strong_as_apgd_ce_and_inside_the_ball() -> None:
    model = tiny_cnn()
    x, y = clean_batch(model)
    eps = 0.03
    gen = torch.Generator().manual_seed(0)
    ce = APGD(steps=20)(model, x, y, eps=eps, generator=gen)
    t = APGDT(steps=20)(model, x, y, eps=eps, generator=torch.Generator().manual_seed(0))
    assert t.robust_accuracy <= ce.robust_accuracy + 0.02
    assert t.robust_accuracy < 1.0
    assert float(t.distances["linf"].max()) <= eps * (1 + 1e-5) + 1e-6
    assert float(t.x_adv.min()) >= 0.0 and float(t.x_adv.max()) <= 1.0
    l2 = APGDT(norm="l2", steps=10, n_target_classes=3)(model, x, y, eps=0.3)
    assert float(l2.distances["l2"].max()) <= 0.3 * (1 + 1e-5) + 1e-6


def test_apgd_t_cascades_over_clipped_targets() -> None:
    model = tiny_cnn(classes=4)
    x, y = clean_batch(model, n=6)
    y[0] = (y[0] + 1) % 4  # misclassified before the attack: never attacked
    steps = 3
    # eps 0: nothing is fooled, so each of the 4 - 1 = 3 targets (9 clipped) attacks every other point
    res = APGDT(steps=steps)(model, x, y, eps=0.0)
    assert int(res.queries[0]) == 1 and torch.equal(res.x_adv[0], x[0])
    assert bool((res.queries[1:] == 1 + 3 * (steps + 1)).all())
    # a large eps: the points fooled with the first target are not attacked with the others
    big = APGDT(steps=steps)(model, x, y, eps=0.5)
    fooled_first = big.queries == 1 + (steps + 1)
    assert bool(fooled_first.any()) and bool(big.success[fooled_first].all())


def test_apgd_t_needs_four_classes() -> None:
    model = tiny_cnn(classes=3)
    x, y = clean_batch(model, n=4)
    with pytest.raises(InvalidParameterError, match=r"at least 4 classes for the targeted DLR loss\b.*with 3"):
        ATTACKS.create("apgd-t", steps=2)(model, x, y, eps=0.1)
    with pytest.raises(InvalidParameterError, match="n_target_classes"):
        APGDT(n_target_classes=0)
