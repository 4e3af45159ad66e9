"""FAB-T: the exact hyperplane-box projection, known answers on linear models, strength and contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linprog, minimize
from torch import nn

from neurorobust.attacks import ATTACKS, FAB, FGSM, EOTModel
from neurorobust.attacks.fab import project_hyperplane_box
from neurorobust.errors import InvalidParameterError

pytestmark = pytest.mark.usefixtures("one_thread")


def random_problems(n: int, d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Points in [0, 1]^d and hyperplanes through a random point of the box (so always feasible)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(n, d, generator=g, dtype=torch.float64)
    w = torch.randn(n, d, generator=g, dtype=torch.float64)
    w[torch.rand(n, d, generator=g) < 0.15] = 0.0  # some coordinates the hyperplane ignores
    t[torch.rand(n, d, generator=g) < 0.1] = 1.0  # some points on the faces of the box
    b = -(w * torch.rand(n, d, generator=g, dtype=torch.float64)).sum(dim=1)
    return t, w, b


def reference_linf(t: np.ndarray, w: np.ndarray, b: float) -> float:
    """min ||d||_inf s.t. <w, t + d> + b = 0, t + d in [0, 1], as a linear program in (d, lam)."""
    d = t.size
    cost = np.r_[np.zeros(d), 1.0]
    a_ub = np.vstack([np.c_[np.eye(d), -np.ones(d)], np.c_[-np.eye(d), -np.ones(d)]])
    res = linprog(
        cost,
        A_ub=a_ub,
        b_ub=np.zeros(2 * d),
        A_eq=np.r_[w, 0.0][None],
        b_eq=[-(w @ t + b)],
        bounds=[*zip(-t, 1.0 - t, strict=True), (0.0, None)],
        method="highs",
    )
    assert res.status == 0
    return float(res.fun)


def reference_l2(t: np.ndarray, w: np.ndarray, b: float) -> float:
    """min ||d||_2 s.t. <w, t + d> + b = 0, t + d in [0, 1], by SLSQP on the quadratic program."""
    res = minimize(
        lambda v: v @ v,
        np.zeros(t.size),
        jac=lambda v: 2.0 * v,
        bounds=list(zip(-t, 1.0 - t, strict=True)),
        constraints=[{"type": "eq", "fun": lambda v: w @ (t + v) + b, "jac": lambda v: w}],
        method="SLSQP",
        options={"ftol": 1e-15, "maxiter": 1000},
    )
    assert res.success
    return float(np.sqrt(res.fun))


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_lands_on_the_hyperplane_inside_the_box_and_is_as_short_as_a_solver(norm: str) -> None:
    t, w, b = random_problems(120, 6)
    d = project_hyperplane_box(t, w, b, norm)
    z = t + d
    assert float(((w * z).sum(dim=1) + b).abs().max()) < 1e-12
    assert float(z.min()) >= 0.0 and float(z.max()) <= 1.0
    reference = reference_linf if norm == "linf" else reference_l2
    ours = d.abs().amax(dim=1) if norm == "linf" else d.norm(dim=1)
    best = torch.tensor([reference(t[i].numpy(), w[i].numpy(), float(b[i])) for i in range(t.shape[0])])
    # feasible, so never shorter than the optimum; and never longer than the solver's optimum
    assert float((ours - best.to(ours.dtype)).abs().max()) < 1e-7


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_in_high_dimension_matches_the_unconstrained_formula_when_the_box_is_slack(norm: str) -> None:
    # points near the centre, hyperplanes close by: the box never binds, so the closed form
    # |f| / ||w||_1 (linf) or |f| / ||w||_2 (l2) is the exact distance
    g = torch.Generator().manual_seed(1)
    t = 0.5 + 0.1 * (torch.rand(16, 784, generator=g) - 0.5)
    w = torch.randn(16, 784, generator=g)
    f = 0.05 * torch.randn(16, generator=g) * w.abs().sum(dim=1) / 784**0.5
    b = f - (w * t).sum(dim=1)
    d = project_hyperplane_box(t, w, b, norm)
    z = t + d
    dual = 1 if norm == "linf" else 2
    exact = f.abs() / w.norm(p=dual, dim=1)
    ours = d.abs().amax(dim=1) if norm == "linf" else d.norm(dim=1)
    assert float(((w * z).sum(dim=1) + b).abs().max() / f.abs().max()) < 1e-4
    assert float(z.min()) >= 0.0 and float(z.max()) <= 1.0
    assert torch.allclose(ours, exact, rtol=1e-4, atol=0.0)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_returns_the_nearest_box_corner_when_the_hyperplane_misses_the_box(norm: str) -> None:
    t = torch.tensor([[0.2, 0.7, 0.5], [0.9, 0.1, 0.4]], dtype=torch.float64)
    w = torch.tensor([[1.0, -2.0, 0.0], [-1.0, 1.0, 3.0]], dtype=torch.float64)
    b = torch.tensor([10.0, -20.0], dtype=torch.float64)  # <w, z> + b keeps its sign on the whole box
    z = t + project_hyperplane_box(t, w, b, norm)
    # the corner minimising |<w, z> + b|; coordinates with w_i = 0 stay put
    assert torch.equal(z, torch.tensor([[0.0, 1.0, 0.5], [0.0, 1.0, 1.0]], dtype=torch.float64))


def test_projection_of_a_zero_normal_or_a_point_on_the_plane_is_no_step() -> None:
    t = torch.rand(3, 5, generator=torch.Generator().manual_seed(0))
    w = torch.zeros(3, 5)
    w[1] = torch.tensor([1.0, -1.0, 2.0, 0.0, 0.5])
    b = torch.tensor([0.3, -(w[1] * t[1]).sum().item(), 0.0])
    for norm in ("linf", "l2"):
        d = project_hyperplane_box(t, w, b, norm)
        assert bool(torch.isfinite(d).all()) and float(d.abs().max()) < 1e-6


# ------------------------------------------------------------------------------------------
# Known answers on a linear classifier
# ------------------------------------------------------------------------------------------


def linear_case(classes: int = 10, n: int = 32) -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A linear model, inputs near the centre of the box, and the logit margins and weight differences."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, classes))
    with torch.no_grad():  # the boundaries pass near the centre of the box
        model[1].bias.copy_(-0.5 * model[1].weight.sum(dim=1) + 0.1 * model[1].bias)
    g = torch.Generator().manual_seed(1)
    x = 0.5 + 0.2 * (torch.rand(n, 1, 4, 4, generator=g) - 0.5)  # in [0.4, 0.6]
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    return model, x, y, model[1].weight.detach()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_finds_the_nearest_target_boundary_of_a_linear_model_within_one_percent(norm: str) -> None:
    model, x, y, weight = linear_case()
    with torch.no_grad():
        logits = model(x)
    margin = logits.gather(1, y[:, None]) - logits  # (N, K) >= 0
    dual = 1 if norm == "linf" else 2
    # distance to the boundary z_k = z_y: |margin_k| / ||w_k - w_y||_dual (box inactive, checked below)
    dist = margin / (weight[None] - weight[y][:, None]).norm(p=dual, dim=2)
    dist = dist.scatter(1, y[:, None], float("inf"))
    nearest = dist.min(dim=1).values
    first_target = logits.scatter(1, y[:, None], -float("inf")).argmax(dim=1)
    to_first = dist.gather(1, first_target[:, None]).squeeze(1)
    assert float(nearest.max()) < 0.25  # no coordinate moves by 0.4 even with overshoot: the box never binds

    res = FAB(norm=norm)(model, x, y, eps=1.0)  # eps=1: the first target class fools every sample
    assert bool(res.success.all())
    found = res.distances[norm]
    assert float((found / nearest).min()) >= 1.0 - 1e-5  # never closer than the exact minimum
    assert float((found / to_first).max()) <= 1.01  # the first target's boundary, within 1%
    assert int((to_first == nearest).sum()) >= 24  # and that is the nearest boundary for most inputs


def test_cascade_attacks_every_target_and_counts_two_queries_per_iteration() -> None:
    model, x, y, _ = linear_case(classes=4, n=6)
    y_wrong = y.clone()
    y_wrong[0] = (y[0] + 1) % 4  # misclassified before the attack: not attacked
    res = FAB(steps=7)(model, x, y_wrong, eps=0.0)  # eps=0: nothing counts as fooled, all 3 targets run
    assert res.queries.tolist() == [1] + [1 + 3 * 7 * 2] * 5
    assert float(res.distances["linf"].max()) == 0.0
    few = FAB(steps=7, n_target_classes=20)(model, x, y, eps=0.0)
    assert few.queries.tolist() == [1 + 3 * 7 * 2] * 6  # clipped to the 3 classes other than y


class TwoFaced(nn.Module):
    """A 'random' model that alternates between two linear faces: a +s and a -s bias on class 0."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(16, 3)
        with torch.no_grad():  # three classes meeting near the centre of the box
            self.lin.weight.mul_(4.0)
            self.lin.bias.copy_(-0.5 * self.lin.weight.sum(dim=1))
        self.register_buffer("shift", torch.tensor([0.5, 0.0, 0.0]))
        self.calls = 0

    def face(self, x: torch.Tensor, k: int) -> torch.Tensor:
        return self.lin(x.flatten(1)) + (self.shift if k == 0 else -self.shift)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.face(x, self.calls % 2)


def test_on_a_random_model_an_adversarial_must_fool_every_draw() -> None:
    inner = TwoFaced()
    model = EOTModel(inner, draws=2)  # each forward pass sees both faces; the mean is the bare linear model
    g = torch.Generator().manual_seed(2)
    x = torch.rand(40, 1, 4, 4, generator=g)
    with torch.no_grad():
        y = inner.lin(x.flatten(1)).argmax(dim=1)
        both_right = (inner.face(x, 0).argmax(1) == y) & (inner.face(x, 1).argmax(1) == y)
    x, y = x[both_right], y[both_right]
    res = FAB(steps=30)(model, x, y, eps=1.0)
    moved = res.distances["linf"] > 0
    assert int(moved.sum()) >= len(y) // 2
    assert torch.equal(res.x_adv[~moved], x[~moved])  # no adversarial for every draw: the clean input
    with torch.no_grad():
        for k in (0, 1):
            assert not bool((inner.face(res.x_adv, k).argmax(dim=1) == y)[moved].any())


# ------------------------------------------------------------------------------------------
# Strength on a small CNN, parameters and registry
# ------------------------------------------------------------------------------------------


def trained_cnn() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A tiny CNN fitted for a few steps to a random linear teacher on random 8x8 images."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(256, 1, 8, 8, generator=g)
    teacher = torch.randn(64, 10, generator=g)
    y = (x.flatten(1) @ teacher).argmax(dim=1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(80):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    return model, x[:40], y[:40]


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.02), ("l2", 0.2)])
def test_robust_accuracy_under_fab_is_at_most_fgsm_and_points_stay_in_the_ball(norm: str, eps: float) -> None:
    model, x, y = trained_cnn()
    fgsm = FGSM(norm=norm)(model, x, y, eps=eps)
    fab = FAB(norm=norm, steps=50)(model, x, y, eps=eps, generator=torch.Generator().manual_seed(0))
    assert fab.clean_correct is not None and 0.5 <= float(fab.clean_correct.float().mean()) < 1.0
    assert fab.robust_accuracy <= fgsm.robust_accuracy + 1 / len(y)
    assert fab.robust_accuracy < float(fab.clean_correct.float().mean())  # it does find adversarials
    assert float(fab.distances[norm].max()) <= eps * (1 + 1e-5) + 1e-6
    assert float(fab.x_adv.min()) >= 0.0 and float(fab.x_adv.max()) <= 1.0
    with torch.no_grad():
        assert torch.equal(fab.success, model(fab.x_adv).argmax(dim=1) != y)


def test_random_restarts_are_seeded_and_never_lose_adversarials() -> None:
    model, x, y = trained_cnn()
    x, y = x[:16], y[:16]
    one = FAB(steps=10, n_target_classes=2)(model, x, y, eps=0.02, generator=torch.Generator().manual_seed(0))
    runs = [
        FAB(steps=10, n_target_classes=2, restarts=2)(model, x, y, eps=0.02, generator=torch.Generator().manual_seed(3))
        for _ in range(2)
    ]
    assert torch.equal(runs[0].x_adv, runs[1].x_adv)
    assert bool((runs[0].success | ~one.success).all())


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"norm": "l1"}, r"The 'norm' parameter of FAB must be 'linf' or 'l2'\. Got 'l1' instead\."),
        ({"steps": 0}, r"The 'steps' parameter of FAB must be an int in \[1, inf\)\. Got 0 instead\."),
        ({"restarts": 0}, r"The 'restarts' parameter of FAB must be an int in \[1, inf\)"),
        ({"n_target_classes": 0}, r"The 'n_target_classes' parameter of FAB must be an int in \[1, inf\)"),
        ({"alpha_max": 1.5}, r"The 'alpha_max' parameter of FAB must be a float in \[0, 1\]"),
        ({"eta": 0.5}, r"The 'eta' parameter of FAB must be a float in \[1, inf\)"),
        ({"beta": 0.0}, r"The 'beta' parameter of FAB must be a float in \(0, 1\]"),
    ],
)
def test_bad_parameters_raise_one_clear_error(params: dict, match: str) -> None:
    with pytest.raises(InvalidParameterError, match=match):
        FAB(**params)


def test_registry_creates_fab_t_with_the_autoattack_defaults() -> None:
    attack = ATTACKS.create("fab-t")
    assert isinstance(attack, FAB) and attack.bounded and repr(attack) == "FAB()"
    assert attack.get_params() == {
        "norm": "linf",
        "steps": 100,
        "restarts": 1,
        "n_target_classes": 9,
        "alpha_max": 0.1,
        "eta": 1.05,
        "beta": 0.9,
        "model_mode": "eval",
    }
    assert "1907.02044" in ATTACKS.get("fab-t").paper
    l2 = ATTACKS.create("fab-t", norm="l2", steps=3)
    assert l2.norm == "l2" and l2.steps == 3
