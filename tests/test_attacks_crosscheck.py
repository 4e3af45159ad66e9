"""Cross-checks of our attacks against torchattacks 3.5.1 and foolbox 3.3.4 on one small CNN.

The CNN is trained for a few seconds on scikit-learn's 8x8 digits (``load_dataset("digits")``);
every comparison uses the same model and inputs.
"""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from neurorobust.attacks import ATTACKS, FGSM, PGD, CarliniWagnerL2, DeepFool
from neurorobust.data import load_dataset

fb = pytest.importorskip("foolbox")
torchattacks = pytest.importorskip("torchattacks")


@functools.cache
def _trained_state() -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    ds = load_dataset("digits")
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = _cnn()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = ds.x_train, ds.y_train
    for _ in range(15):
        perm = torch.randperm(x.shape[0], generator=g)
        for i in range(0, x.shape[0], 64):
            idx = perm[i : i + 64]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        correct = model(ds.x_test).argmax(1) == ds.y_test
    xs, ys = ds.x_test[correct][:200], ds.y_test[correct][:200]
    return {k: v.clone() for k, v in model.state_dict().items()}, xs, ys


def _cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 16, 10),
    )


@pytest.fixture
def setup() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A fresh copy of the trained CNN and 200 correctly classified test digits."""
    state, x, y = _trained_state()
    model = _cnn()
    model.load_state_dict(state)
    model.eval()
    return model, x, y


pytestmark = pytest.mark.usefixtures("one_thread")


def test_clean_accuracy_is_high_enough_to_be_meaningful() -> None:
    _, x, _ = _trained_state()
    assert x.shape[0] == 200


def test_fgsm_identical_to_torchattacks_and_foolbox(setup) -> None:
    model, x, y = setup
    eps = 0.1
    ours = FGSM()(model, x, y, eps=eps)
    ta = torchattacks.FGSM(model, eps=eps)(x, y)
    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    _, fb_adv, _ = fb.attacks.FGSM()(fmodel, x, y, epsilons=eps)
    assert torch.allclose(ours.x_adv, ta, atol=1e-6, rtol=0)
    assert torch.allclose(ours.x_adv, fb_adv, atol=1e-6, rtol=0)


def test_pgd_without_random_start_matches_torchattacks(setup) -> None:
    model, x, y = setup
    eps, alpha, steps = 0.1, 0.01, 20
    ours = PGD(steps=steps, step_size=alpha, random_start=False)(model, x, y, eps=eps)
    ta = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=False)(x, y)
    with torch.no_grad():
        ta_acc = float((model(ta).argmax(1) == y).float().mean())
    assert abs(ours.robust_accuracy - ta_acc) <= 0.01
    assert 0.0 < ta_acc < 1.0  # a non-trivial operating point


def _median_l2(adv: torch.Tensor, x: torch.Tensor, ok: torch.Tensor) -> float:
    return float((adv - x).flatten(1).norm(dim=1)[ok].median())


def test_deepfool_median_l2_close_to_foolbox(setup) -> None:
    model, x, y = setup
    ours = DeepFool(steps=50, overshoot=0.02, candidates=10)(model, x, y)
    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    raw, _, fb_ok = fb.attacks.L2DeepFoolAttack(steps=50, candidates=10, overshoot=0.02)(fmodel, x, y, epsilons=None)
    assert float(ours.success.float().mean()) >= 0.99 and float(fb_ok.float().mean()) >= 0.99
    ours_med = float(ours.distances["l2"][ours.success].median())
    fb_med = _median_l2(raw, x, fb_ok)
    assert abs(ours_med - fb_med) <= 0.10 * fb_med


def test_cw_median_l2_close_to_foolbox(setup) -> None:
    model, x, y = setup
    x, y = x[:100], y[:100]
    kw = {"binary_search_steps": 5, "steps": 100, "initial_const": 1e-2, "abort_early": True}
    ours = CarliniWagnerL2(lr=0.01, kappa=0.0, **kw)(model, x, y)
    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    raw, _, fb_ok = fb.attacks.L2CarliniWagnerAttack(stepsize=0.01, confidence=0.0, **kw)(fmodel, x, y, epsilons=None)
    both = ours.success & fb_ok
    assert float(both.float().mean()) >= 0.9
    ours_med = float(ours.distances["l2"][both].median())
    fb_med = _median_l2(raw, x, both)
    assert abs(ours_med - fb_med) <= 0.10 * fb_med


def test_unbounded_pgd_reaches_full_success(setup) -> None:
    model, x, y = setup
    res = PGD(steps=20, step_size=0.1, random_start=False)(model, x, y, eps=1.0)
    assert float(res.success.float().mean()) >= 0.99


def test_apgd_and_square_are_at_least_competitive(setup) -> None:
    model, x, y = setup
    x, y = x[:100], y[:100]
    eps = 0.1
    pgd = PGD(steps=20)(model, x, y, eps=eps)
    apgd = ATTACKS.create("apgd-ce", steps=20)(model, x, y, eps=eps)
    dlr = ATTACKS.create("apgd-dlr", steps=20)(model, x, y, eps=eps)
    assert apgd.robust_accuracy <= pgd.robust_accuracy + 0.03
    assert dlr.robust_accuracy <= pgd.robust_accuracy + 0.1
    square = ATTACKS.create("square", queries=300)(model, x, y, eps=0.3)
    assert square.robust_accuracy <= 0.5
    assert int(square.queries.max()) <= 300
