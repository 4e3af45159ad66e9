"""Reference defences: PGD adversarial training, TRADES and fast FGSM training with its overfitting check."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from neurorobust.attacks import PGD
from neurorobust.data import load_dataset
from neurorobust.errors import InvalidParameterError
from neurorobust.models import create_model
from neurorobust.training import fit
from neurorobust.training.adversarial import AdversarialObjective, catastrophic_overfitting, trades_loss


def _pgd_accuracy(model, x, y, eps):
    attack = PGD(norm="linf", steps=10, step_size=eps / 4)
    return attack(model, x, y, eps=eps, generator=torch.Generator().manual_seed(0)).robust_accuracy


def test_one_pgd_training_epoch_raises_pgd_accuracy_on_the_training_batch(one_thread):
    data = load_dataset("digits")
    x, y = data.x_train, data.y_train
    accs = {}
    for name, adversarial in (("standard", None), ("pgd-at", {"method": "pgd", "eps": 0.25, "steps": 5})):
        torch.manual_seed(0)
        model = create_model("mlp", input_shape=(1, 8, 8), widths=(64,))
        fit(model, x, y, lr=3e-3, batch_size=32, epochs=1, seed=0, adversarial=adversarial)
        accs[name] = _pgd_accuracy(model, x[:300], y[:300], 0.25)
    assert accs["pgd-at"] > accs["standard"] + 0.05, accs  # measured: 0.7% vs 9.7%


def test_trades_loss_is_ce_at_beta_zero_and_grows_with_beta():
    gen = torch.Generator().manual_seed(0)
    clean = torch.randn(16, 10, generator=gen)
    adv = clean + torch.randn(16, 10, generator=gen)
    y = torch.randint(10, (16,), generator=gen)
    assert trades_loss(clean, adv, y, 0.0).item() == pytest.approx(F.cross_entropy(clean, y).item())
    values = [trades_loss(clean, adv, y, b).item() for b in (0.0, 1.0, 6.0)]
    assert values[0] < values[1] < values[2]
    assert trades_loss(clean, clean, y, 6.0).item() == pytest.approx(F.cross_entropy(clean, y).item(), abs=1e-6)


def test_trades_training_runs_through_the_loop(one_thread):
    data = load_dataset("digits")
    torch.manual_seed(0)
    model = create_model("mlp", input_shape=(1, 8, 8), widths=(32,))
    _, history = fit(
        model,
        data.x_train[:256],
        data.y_train[:256],
        batch_size=64,
        epochs=1,
        adversarial={"method": "trades", "eps": 0.1, "steps": 3, "beta": 6.0},
    )
    assert history.final["loss"] > 0 and history.stopped == ""


def test_overfitting_check_on_accuracy_sequences():
    assert not catastrophic_overfitting([0.4])
    assert not catastrophic_overfitting([0.4, 0.45, 0.38])
    assert catastrophic_overfitting([0.4, 0.45, 0.05])


class _Collapsing(AdversarialObjective):
    """fgsm-rs whose held-out PGD accuracy follows a script: a constructed collapse at epoch 3."""

    script: tuple[float, ...] = (0.5, 0.6, 0.02, 0.7)

    def heldout_pgd_accuracy(self, model, x, y):
        self.calls = getattr(self, "calls", 0) + 1
        return self.script[self.calls - 1]


@pytest.mark.parametrize(
    ("script", "best_epoch"),
    [((0.5, 0.6, 0.02, 0.7), 2), ((0.5, 0.4, 0.02, 0.7), 1)],  # the decline may begin before the drop
)
def test_fast_training_stops_and_keeps_the_best_weights_before_a_collapse(one_thread, script, best_epoch):
    data = load_dataset("digits")
    torch.manual_seed(0)
    model = create_model("mlp", input_shape=(1, 8, 8), widths=(16,))
    snapshots = []
    objective = _Collapsing("fgsm-rs", 0.1, check_n=64)
    objective.script = script
    _, history = fit(
        model,
        data.x_train,
        data.y_train,
        batch_size=128,
        epochs=4,
        adversarial=objective,
        progress=lambda e: snapshots.append(model.layers[0].weight.detach().clone()) if e["stage"] == "epoch" else None,
    )
    assert len(history.epochs) == 3 and history.epochs[-1]["collapsed"] == 1.0
    assert "catastrophic overfitting after epoch 3" in history.stopped
    assert f"kept the weights of epoch {best_epoch}" in history.stopped
    assert not torch.equal(snapshots[0], snapshots[1])
    assert torch.equal(model.layers[0].weight, snapshots[best_epoch - 1])  # the best epoch's weights are back


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"method": "free", "eps": 0.1}, "method"),
        ({"method": "pgd", "eps": 0.0}, "eps"),
        ({"method": "pgd", "eps": 2.0}, "eps"),
        ({"method": "pgd", "eps": 0.1, "steps": 0}, "steps"),
        ({"method": "trades", "eps": 0.1, "beta": -1.0}, "beta"),
        ({"method": "pgd", "eps": 0.1, "warmup_epochs": -1.0}, "warmup_epochs"),
    ],
)
def test_bad_adversarial_settings_are_refused(kwargs, name):
    with pytest.raises(InvalidParameterError, match=f"'{name}' parameter of AdversarialObjective"):
        AdversarialObjective(**kwargs)


def test_adversarial_training_in_a_spec():
    from neurorobust.errors import SpecError
    from neurorobust.specs import parse_spec

    spec = parse_spec({"train": {"adversarial": {"method": "trades", "eps": 0.3, "steps": 40, "beta": 6.0}}})
    assert spec.train.adversarial.beta == 6.0
    with pytest.raises(SpecError, match=r"train\.adversarial\.method"):
        parse_spec({"train": {"adversarial": {"method": "free", "eps": 0.3}}})


def test_eps_warmup_ramps_the_training_radius_batch_by_batch(one_thread):
    objective = AdversarialObjective("pgd", 0.3, steps=2, warmup_epochs=2.0)
    seen = []
    for progress in (0.0, 0.5, 1.0, 2.0, 3.5):
        objective.progress = progress
        seen.append(objective.current_eps())
    assert seen == pytest.approx([0.0, 0.075, 0.15, 0.3, 0.3])
    assert AdversarialObjective("pgd", 0.3).current_eps() == 0.3  # no warm-up: eps from the first batch

    # the loop drives the ramp: after one epoch of 4 batches the last batch saw progress 0.75
    data = load_dataset("digits")
    torch.manual_seed(0)
    model = create_model("mlp", input_shape=(1, 8, 8), widths=(16,))
    objective = AdversarialObjective("pgd", 0.3, steps=2, warmup_epochs=1.0)
    fit(model, data.x_train[:128], data.y_train[:128], batch_size=32, epochs=1, adversarial=objective)
    assert objective.progress == pytest.approx(0.75)
    assert objective.current_eps() == pytest.approx(0.225)
    # at the spec level the ramp is a setting; 0 leaves existing train keys unchanged
    from neurorobust.specs import parse_spec, train_key

    base = {"train": {"adversarial": {"method": "pgd", "eps": 0.3}}}
    ramp = {"train": {"adversarial": {"method": "pgd", "eps": 0.3, "warmup_epochs": 1.0}}}
    zero = {"train": {"adversarial": {"method": "pgd", "eps": 0.3, "warmup_epochs": 0.0}}}
    assert train_key(parse_spec(base)) == train_key(parse_spec(zero)) != train_key(parse_spec(ramp))


def test_a_diverging_training_stops_with_one_clear_error(one_thread):
    from neurorobust.errors import TrainingDivergedError

    data = load_dataset("digits")
    torch.manual_seed(0)
    model = create_model("mlp", input_shape=(1, 8, 8), widths=(16,))
    with pytest.raises(TrainingDivergedError, match=r"training diverged: the loss is (nan|inf) at epoch 1.*lower the"):
        fit(model, data.x_train, data.y_train, optimizer="sgd", lr=1e30, epochs=1, batch_size=64)
