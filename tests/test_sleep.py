"""Sleep mechanism (Tadros et al. 2020), distillation and adversarial fine-tuning baselines."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from neurorobust.attacks import ATTACKS
from neurorobust.data import load_dataset
from neurorobust.errors import InvalidParameterError
from neurorobust.mechanisms import MECHANISMS
from neurorobust.mechanisms.distillation import distill
from neurorobust.mechanisms.sleep import (
    PRESETS,
    encode_input,
    scale_factors,
    sleep,
    snn_predict,
    stdp_factor,
    stdp_update,
)
from neurorobust.models import create_model
from neurorobust.training import fit
from neurorobust.training.adversarial import finetune, perturb_for_finetuning
from neurorobust.training.loop import predict_logits

SLEEP_TRAIN = dict(optimizer="sgd", lr=0.1, momentum=0.5, loss="mse-sum", batch_size=100)


@pytest.fixture(scope="module")
def patches_net():
    """A sleep-style MLP trained on Patches as the authors train theirs (MSE, ReLU output, SGD)."""
    data = load_dataset("patches")
    torch.manual_seed(0)
    net = create_model("sleep_mlp", input_shape=(1, 10, 10), num_classes=4, widths=(64, 64))
    fit(net, data.x_train, data.y_train, **SLEEP_TRAIN, epochs=30, seed=0)
    return net, data


def test_stdp_rule_on_a_hand_computed_case():
    w = torch.tensor([[0.0, -0.002, 0.01], [0.005, 0.0, -0.01]])
    pre = torch.tensor([True, False, True])
    post = torch.tensor([True, False])
    inc, dec = 0.1, 0.05
    expected = w.clone()

    # post 0 spiked: potentiate from spiking pre 0 and 2, depress from silent pre 1; post 1 untouched
    def s(v):
        return 2.0 * (1.0 - 1.0 / (1.0 + math.exp(-v / 0.001)))  # the authors' sigmoid

    expected[0, 0] = 0.0 + inc * s(0.0)  # = +0.1 (sigma*(0) = 1)
    expected[0, 1] = -0.002 - dec * s(-0.002)  # sigma*(-0.002) = 2 sigmoid(2) = 1.7616
    expected[0, 2] = 0.01 + inc * s(0.01)  # positive weights barely move: sigma*(0.01) = 9.1e-5
    stdp_update(w, pre, post, inc, dec)
    assert torch.allclose(w, expected, atol=1e-7)
    assert w[0, 0].item() == pytest.approx(0.1)
    assert w[0, 1].item() == pytest.approx(-0.002 - 0.05 * 1.761594, abs=1e-6)
    assert stdp_factor(torch.tensor([-1.0, 0.0, 1.0])).tolist() == pytest.approx([2.0, 1.0, 0.0], abs=1e-6)


def test_no_post_spike_changes_nothing():
    w = torch.randn(3, 4) * 0.01
    before = w.clone()
    stdp_update(w, torch.ones(4, dtype=torch.bool), torch.zeros(3, dtype=torch.bool), 0.1, 0.1)
    assert torch.equal(w, before)


@pytest.mark.parametrize(("x", "f_max", "p"), [(0.5, 200.0, 0.2), (0.25, 39.037119, 2 * 0.001 * 39.037119 * 0.25)])
def test_input_spike_probability_matches_the_formula(x, f_max, p):
    gen = torch.Generator().manual_seed(0)
    spikes = encode_input(torch.full((200_000,), x), f_max, 0.001, gen)
    assert spikes.float().mean().item() == pytest.approx(p, abs=4 * math.sqrt(p * (1 - p) / 200_000) + 1e-4)


def test_input_spike_probability_saturates_at_one():
    spikes = encode_input(torch.full((10_000,), 0.9), 1000.0, 0.001, torch.Generator().manual_seed(0))
    assert spikes.all()  # p = min(1, 2 * 0.001 * 1000 * 0.9) = 1


def test_scale_factors_follow_the_coded_recursion(patches_net):
    net, data = patches_net
    factors, lambdas = scale_factors(net, data.x_train)
    l1, l2, l3 = lambdas
    assert factors == pytest.approx([1 / l1, l1 / l2, l2 / (l1 * l3)])
    acts = net.hidden_activations(data.x_train)
    assert l1 >= float(acts[0].detach().max()) and l1 >= float(net.layers[0].weight.detach().max())


def test_conversion_preserves_predictions_on_patches(patches_net):
    net, data = patches_net
    ann = predict_logits(net, data.x_test).argmax(1)
    assert (ann == data.y_test).float().mean() > 0.9  # the ANN learned the task
    snn = snn_predict(net, data.x_test, steps=300, data=data.x_train)
    agreement = (snn == ann).float().mean().item()
    assert agreement > 0.95, agreement


def test_sleep_changes_weights_only_through_the_rule(patches_net):
    net, data = patches_net
    before = {k: v.clone() for k, v in net.state_dict().items()}
    slept = sleep(net, data, preset="patches", steps=2000, seed=0)
    assert {k: v.shape for k, v in slept.state_dict().items()} == {k: v.shape for k, v in before.items()}
    assert all(layer.bias is None for layer in slept.layers)
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())  # the input model is untouched
    report = slept.sleep_report
    assert report.steps == 2000 and len(report.spikes) == 4 and report.spikes[0] > 0
    changed = [not torch.equal(a.weight, b.weight) for a, b in zip(slept.layers, net.layers, strict=True)]
    # a layer changes iff some of its post units spiked (STDP acts only on rows of spiking units)
    assert changed == [s > 0 for s in report.spikes[1:]]


def test_sleep_is_seeded(patches_net):
    net, data = patches_net
    a = sleep(net, data, preset="patches", steps=500, seed=3)
    b = sleep(net, data, preset="patches", steps=500, seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"f_max": -1.0}, "f_max"),
        ({"thresholds": (1.0, 0.0, 1.0)}, "thresholds"),
        ({"thresholds": (1.0, 1.0)}, "thresholds"),
        ({"steps": 0}, "steps"),
        ({"decay": 1.5}, "decay"),
        ({"preset": "C"}, "preset"),
    ],
)
def test_bad_sleep_parameters_are_refused(patches_net, kwargs, name):
    net, data = patches_net
    with pytest.raises(InvalidParameterError, match=f"'{name}' parameter of sleep"):
        sleep(net, data, preset=kwargs.pop("preset", "patches"), **kwargs)


@pytest.mark.parametrize(
    "model",
    [
        nn.Sequential(nn.Flatten(), nn.Linear(100, 8, bias=True), nn.ReLU(), nn.Linear(8, 4, bias=False)),
        nn.Sequential(nn.Flatten(), nn.Linear(100, 8, bias=False), nn.Tanh(), nn.Linear(8, 4, bias=False)),
        nn.Sequential(nn.Conv2d(1, 2, 3)),
    ],
)
def test_models_that_cannot_be_converted_are_refused(model):
    data = load_dataset("patches")
    with pytest.raises(InvalidParameterError, match="'model' parameter of sleep"):
        sleep(model, data, preset="patches", thresholds=(1.0, 1.0), steps=10)


def test_sleep_refuses_images_outside_the_unit_range(patches_net):
    net, _ = patches_net
    with pytest.raises(InvalidParameterError, match=r"images in \[0, 1\]"):
        sleep(net, x=torch.full((5, 1, 10, 10), 2.0), preset="patches", steps=10)


def test_sleep_accepts_a_plain_sequential():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(100, 16, bias=False), nn.ReLU(), nn.Linear(16, 4, bias=False))
    slept = sleep(
        model,
        x=torch.rand(30, 1, 10, 10),
        f_max=200.0,
        inc=0.01,
        dec=0.001,
        thresholds=(0.5, 0.5),
        alpha_scale=1.0,
        steps=300,
    )
    assert isinstance(slept, nn.Sequential) and slept.sleep_report.steps == 300


def test_sleep_measurably_changes_fgsm_minimal_eps_on_patches(patches_net):
    net, data = patches_net
    slept = sleep(net, data, preset="patches", steps=6000, seed=0)
    attack = ATTACKS.create("fgsm-min", loss="mse", max_eps=1.0, grid_step=0.01)
    x, y = data.x_test[:200], data.y_test[:200]
    med = []
    for model in (net, slept):
        res = attack(model, x, y, generator=torch.Generator().manual_seed(0))
        ok = ~res.extra["clean_misclassified"]
        med.append(float(res.extra["min_eps"][ok].median()))
    assert abs(med[1] - med[0]) >= 0.01, med  # at least two grid steps of the minimal-eps search


def test_presets_have_one_threshold_per_layer_of_the_paper_network():
    for name in ("A", "B"):
        assert len(PRESETS[name]["thresholds"]) == 3
    assert PRESETS["A"]["steps"] == 27105 and PRESETS["B"]["steps"] == 3365


# --- distillation ------------------------------------------------------------------------------


def test_distillation_trains_a_student_at_temperature(one_thread):
    data = load_dataset("patches")
    torch.manual_seed(0)
    teacher = create_model("sleep_mlp", input_shape=(1, 10, 10), num_classes=4, widths=(32,), output_activation="none")
    tr = dict(optimizer="adam", lr=1e-3, loss="ce", batch_size=50, epochs=10, temperature=20.0)
    fit(teacher, data.x_train, data.y_train, **tr)
    student = distill(teacher, data, temperature=20.0, train=tr)
    assert student is not teacher
    assert not torch.equal(student.student.layers[0].weight, teacher.layers[0].weight)
    acc = (predict_logits(student, data.x_test).argmax(1) == data.y_test).float().mean()
    assert acc > 0.8
    # trained at T, used at T = 1: logits much larger than a T = 1 network's
    logits = predict_logits(student, data.x_test)
    assert logits.abs().max() > 20
    # attacks go backward through logits / T (same weights), where the softmax does not saturate
    surrogate = student.bpda_surrogate()
    with torch.no_grad():
        assert torch.allclose(surrogate(data.x_test[:50]), logits[:50] / 20.0, atol=1e-5)


def test_relu_output_mlp_declares_its_pre_relu_outputs_as_bpda_surrogate():
    torch.manual_seed(0)
    net = create_model("sleep_mlp", input_shape=(1, 10, 10), num_classes=4, widths=(16,))
    net.eval()
    x = torch.rand(64, 1, 10, 10)
    surrogate = net.bpda_surrogate()
    with torch.no_grad():
        pre = surrogate(x)
        assert torch.equal(net(x), torch.relu(pre))
        assert (pre < 0).any()  # dead outputs exist: the ReLU would zero their gradients
    net.layers[0].weight.data.mul_(2.0)  # the surrogate shares the weights (sleep changes them in place)
    with torch.no_grad():
        assert torch.equal(net(x), torch.relu(surrogate(x)))
    linear = create_model("sleep_mlp", input_shape=(1, 10, 10), num_classes=4, output_activation="none")
    assert linear.bpda_surrogate() is None


def test_distillation_refuses_a_teacher_not_trained_at_its_temperature():
    net = create_model("sleep_mlp", input_shape=(1, 10, 10), num_classes=4, widths=(8,), output_activation="none")
    with pytest.raises(InvalidParameterError, match=r"train\.temperature"):
        distill(net, load_dataset("patches"), temperature=50.0, train={"loss": "ce", "temperature": 1.0})
    with pytest.raises(InvalidParameterError, match="'temperature' parameter of distill"):
        distill(net, load_dataset("patches"), temperature=0.0)


def test_soft_label_loss_at_temperature():
    from neurorobust.training.loop import loss_fn

    z = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    soft = torch.tensor([[0.75, 0.25], [0.5, 0.5]])
    expected = -(soft * torch.log_softmax(z / 2.0, 1)).sum(1).mean()
    assert loss_fn(z, soft, "ce", temperature=2.0).item() == pytest.approx(expected.item())


# --- adversarial fine-tuning -----------------------------------------------------------------


def test_fgsm_finetuning_perturbation_is_as_coded(patches_net):
    net, data = patches_net
    x, y = data.x_train[:64], data.y_train[:64]
    xp = perturb_for_finetuning(net, x, y, "fgsm", loss="mse", seed=0)
    delta = xp - x
    assert delta.abs().max() <= 0.1 + 1e-6 and xp.min() >= 0 and xp.max() <= 1
    # per-pixel random magnitudes, not one eps per image
    assert delta[delta != 0].abs().unique().numel() > 50


@pytest.mark.parametrize("on", ["noise", "blur", "deepfool"])
def test_finetune_returns_a_tuned_copy(patches_net, on):
    net, data = patches_net
    small = type(data)(**{**data.__dict__, "x_train": data.x_train[:400], "y_train": data.y_train[:400]})
    tuned = finetune(net, small, on=on, n=100, epochs=1, train=dict(SLEEP_TRAIN), attack_params={"steps": 20})
    assert tuned.mechanism_report["on"] == on and tuned.mechanism_report["mean_l2_of_perturbation"] > 0
    assert not torch.equal(tuned.layers[0].weight, net.layers[0].weight)


def test_finetune_refuses_unknown_targets(patches_net):
    net, data = patches_net
    with pytest.raises(InvalidParameterError, match="'on' parameter of finetune"):
        finetune(net, data, on="cw")


def test_mechanisms_are_registered():
    assert {"sleep", "distillation", "finetune"} <= set(MECHANISMS.names())


def test_bpda_on_a_distilled_network_computes_its_loss_on_the_rescaled_logits():
    from torch import nn

    from neurorobust.attacks.wrappers import BPDAModel
    from neurorobust.mechanisms.distillation import DistilledNetwork

    torch.manual_seed(0)
    linear = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    linear[1].weight.data.mul_(1e4)  # logits ~1e4: the softmax saturates, float32 CE gradients are exactly 0
    net = DistilledNetwork(linear, temperature=1e4)
    x = torch.rand(8, 1, 2, 2, requires_grad=True)
    y = net(x).argmax(1)

    def grad(model: nn.Module) -> torch.Tensor:
        xg = x.detach().clone().requires_grad_(True)
        torch.nn.functional.cross_entropy(model(xg), y).backward()
        return xg.grad

    assert grad(net).abs().max() == 0  # the masking the surrogate has to undo
    wrapped = BPDAModel(net, net.bpda_surrogate())
    assert grad(wrapped).abs().min() > 0
    with torch.no_grad():
        assert torch.equal(wrapped(x).argmax(1), y)  # same decisions


def _sleep_spec():
    from neurorobust.specs import parse_spec

    return parse_spec(
        {
            "name": "sleep_tiny",
            "data": {"name": "patches"},
            "model": {"name": "sleep_mlp", "params": {"widths": [16]}},
            "train": {"epochs": 1},
            "sweep": {
                "seeds": [0, 1],
                "variants": [
                    {"label": "control"},
                    {"label": "control (full suite)", "seeds": [0]},
                    {"label": "distillation", "mechanism": {"name": "distillation"}},
                    {"label": "sleep", "mechanism": {"name": "sleep", "params": {"thresholds": [1.0, 1.0]}}},
                    {
                        "label": "sleep (full suite)",
                        "seeds": [0],
                        "mechanism": {"name": "sleep", "params": {"thresholds": [1.0, 1.0]}},
                    },
                ],
            },
        }
    )


def test_sleep_reporter_draws_the_cached_control_and_sleep_weights(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from neurorobust.experiments.runner import checkpoint_model
    from neurorobust.report.families import REPORTERS
    from neurorobust.report.families import sleep as sleep_reporter
    from neurorobust.specs import train_key
    from neurorobust.training.checkpoint import save_checkpoint

    spec = _sleep_spec()
    variants = sleep_reporter.weight_variants(spec)
    assert [label for label, _ in variants] == ["control", "sleep"]  # seed 0, one per trained network
    assert sleep_reporter.weight_variants(spec.model_copy(update={"sweep": None})) == []  # no sleep variant
    drawn = {}

    def capture(weights, path):
        drawn.update(weights)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"png")
        return path

    monkeypatch.setattr(sleep_reporter, "weight_histogram_figure", capture)
    ctx = SimpleNamespace(experiment="sleep_tiny", spec=spec, checkpoints_dir=tmp_path, outdir=tmp_path / "report")
    reporter = REPORTERS.create("sleep")
    assert reporter.applies(ctx) and not reporter.applies(SimpleNamespace(spec=None))
    data = load_dataset("patches")
    assert reporter.items(ctx) == [
        (
            "table",
            "Weight histograms: networks not in the checkpoint cache",
            (
                ["variant", "note"],
                [[label, "not trained yet: run `make repro NAME=sleep_tiny` first"] for label in ("control", "sleep")],
            ),
        )
    ]

    saved = {}
    for label, variant in variants[:1]:  # the control only: the sleep network is still missing
        torch.manual_seed(3)
        model = checkpoint_model(variant, data)
        save_checkpoint(tmp_path / "checkpoints", train_key(variant), model, {})
        saved[label] = [layer.weight.detach().clone() for layer in model.layers]
    items = reporter.items(ctx)
    assert items[0] == ("figure", "Weights of the control and the slept networks (seed 0, log counts)", "weights.png")
    assert items[1][2][1] == [["sleep", "not trained yet: run `make repro NAME=sleep_tiny` first"]]
    assert list(drawn) == ["control"] and (tmp_path / "report" / "weights.png").is_file()
    assert [w.shape for w in drawn["control"]] == [(16, 100), (4, 16)]
    assert all(torch.equal(torch.from_numpy(a), b) for a, b in zip(drawn["control"], saved["control"], strict=True))

    _, variant = variants[1]  # now the sleep network too, drawn for real
    save_checkpoint(tmp_path / "checkpoints", train_key(variant), checkpoint_model(variant, data), {})
    monkeypatch.undo()
    items = reporter.items(ctx)
    assert [kind for kind, _, _ in items] == ["figure"]
    assert (tmp_path / "report" / "weights.png").stat().st_size > 10_000
