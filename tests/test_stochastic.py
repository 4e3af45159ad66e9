"""Stochastic binary neurons (STE, REINFORCE, DBN), SGBN gates and baselines (Kubo 2019, thesis ch. 3-4)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import REPO
from neurorobust.attacks import ATTACKS, EOT
from neurorobust.errors import InvalidParameterError, SpecError
from neurorobust.evaluation.attack_suite import point_correct
from neurorobust.mechanisms import MECHANISMS
from neurorobust.mechanisms.sgbn import GatedConv2d, StochasticActivationPruning, binary_gate
from neurorobust.mechanisms.stochastic import (
    ExpectedValue,
    StochasticBinary,
    StochasticNet,
    TestTimeDropout,
    annealed_slope,
    recover_sample_loss,
    reinforce_gradient,
)
from neurorobust.models import create_model
from neurorobust.specs import eval_key, parse_spec
from neurorobust.training import fit


def test_ste_gradient_is_the_derivative_of_the_annealed_sigmoid():
    layer = StochasticBinary("ste").train()
    layer.slope.fill_(2.5)
    a = torch.linspace(-3, 3, 61, requires_grad=True)
    w = torch.linspace(0.5, 1.5, 61)
    torch.manual_seed(0)
    h = layer(a)
    assert set(h.detach().unique().tolist()) <= {0.0, 1.0}
    (w * h).sum().backward()
    s = torch.sigmoid(2.5 * a.detach())
    assert torch.allclose(a.grad, w * 2.5 * s * (1 - s), atol=1e-6)  # d sigma(m a) / da, eq 2.13
    # the samples fire with probability sigma(m a)
    many = layer(torch.full((200_000,), 0.3)).mean().item()
    assert many == pytest.approx(1 / (1 + math.exp(-0.75)), abs=0.005)


def test_annealed_slope_follows_the_thesis_schedule_through_the_training_loop(one_thread):
    assert [annealed_slope(e) for e in range(0, 200, 25)] == [min(5.0, 1 + 0.04 * e) for e in range(0, 200, 25)]
    assert annealed_slope(3, start=2.0, rate=0.5, max_slope=3.0) == 3.0
    net = create_model("kubo_sbn_mlp", input_shape=(1, 8, 8), hidden=16)
    x, y = torch.rand(64, 1, 8, 8), torch.randint(0, 10, (64,))
    fit(net, x, y, epochs=4, batch_size=32)
    assert float(net.binary.slope) == pytest.approx(1 + 0.04 * 3)  # set before the 4th (0-based 3rd) epoch
    reinforce = create_model("kubo_sbn_mlp", input_shape=(1, 8, 8), activation="reinforce")
    fit(reinforce, x, y, epochs=3, batch_size=32)
    assert float(reinforce.binary.slope) == 1.0  # the thesis anneals the soft STE only


def test_reinforce_estimator_is_unbiased_on_one_unit():
    torch.manual_seed(0)
    a = 0.4
    p = torch.sigmoid(torch.tensor(a))
    n = 400_000
    h = (torch.rand(n) < p).float()

    def loss_of(h):
        return 3 * (h - 0.2) ** 2 + 0.5

    exact = float(p * (1 - p) * (loss_of(torch.tensor(1.0)) - loss_of(torch.tensor(0.0))))  # dE[L]/da
    for baseline in (False, True):
        g = reinforce_gradient(h[:, None], p.expand(n, 1), loss_of(h), baseline=baseline).squeeze(1)
        se = float(g.std()) / math.sqrt(n)
        assert abs(float(g.mean()) - exact) < 4 * se + 1e-4, (baseline, float(g.mean()), exact)
    # the baseline lowers the variance (the point of eq 2.15)
    plain = reinforce_gradient(h[:, None], p.expand(n, 1), loss_of(h), baseline=False)
    based = reinforce_gradient(h[:, None], p.expand(n, 1), loss_of(h), baseline=True)
    assert based.var() < 0.5 * plain.var()


def test_reinforce_through_autograd_matches_the_exact_gradient_of_the_expected_loss():
    torch.manual_seed(1)

    class Toy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.tensor(0.4))
            self.binary = StochasticBinary("reinforce")

        def forward(self, x):
            h = self.binary(self.w * x.flatten(1)[:, :1])
            return torch.cat([2.0 * h, torch.zeros_like(h)], dim=1)

    net = StochasticNet(Toy()).train()
    n = 200_000
    x, y = torch.ones(n, 1, 1, 1), torch.zeros(n, dtype=torch.long)
    F.cross_entropy(net(x), y).backward()  # the training loss: a batch mean
    p = torch.sigmoid(torch.tensor(0.4))
    l1, l0 = F.cross_entropy(torch.tensor([[2.0, 0.0]]), y[:1]), math.log(2)
    exact = float(p * (1 - p) * (l1 - l0))
    assert float(net.net.w.grad) == pytest.approx(exact, abs=0.004)


def test_reinforce_needs_the_loss_tap_and_says_so():
    layer = StochasticBinary("reinforce").train()
    a = torch.randn(4, 3, requires_grad=True)
    with pytest.raises(RuntimeError, match="StochasticNet"):
        layer(a).sum().backward()


def test_per_sample_loss_is_recovered_from_the_logit_gradient():
    z = torch.randn(6, 4, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    for reduction, scale in (("mean", 1 / 6), ("sum", 1.0)):
        (g,) = torch.autograd.grad(F.cross_entropy(z, y, reduction=reduction), z)
        loss, s = recover_sample_loss(z, g)
        assert torch.allclose(loss, F.cross_entropy(z, y, reduction="none"), atol=1e-5)
        assert torch.allclose(s, torch.full((6,), scale), rtol=1e-4)
    margin = z.gather(1, y[:, None]).squeeze(1) - z[:, 0]  # linear in the logits: exact first-order value
    (g,) = torch.autograd.grad(margin.sum(), z)
    loss, _ = recover_sample_loss(z, g)
    assert torch.allclose(loss, margin.detach(), atol=1e-5)


def test_dbn_rounds_deterministically_and_declares_a_surrogate():
    net = create_model("kubo_sbn_mlp", input_shape=(1, 8, 8), activation="dbn", hidden=12).eval()
    x = torch.rand(5, 1, 8, 8)
    assert torch.equal(net(x), net(x)) and not net.is_stochastic
    a = net.hidden(net.features(x))
    assert torch.allclose(net(x), net.out(torch.round(torch.sigmoid(a))))
    surrogate = net.bpda_surrogate()
    assert isinstance(surrogate, ExpectedValue)
    assert torch.allclose(surrogate(x), net.out(torch.sigmoid(a)), atol=1e-6)
    relu = create_model("kubo_sbn_mlp", input_shape=(1, 8, 8), activation="relu")
    assert relu.bpda_surrogate is None and not relu.is_stochastic  # nothing to approximate


def test_test_time_dropout_is_random_and_declared():
    net = create_model("kubo_sbn_mlp", input_shape=(1, 8, 8), activation="relu", dropout=0.5, test_dropout=True)
    net.eval()
    x = torch.rand(4, 1, 8, 8)
    assert net.is_stochastic and not torch.equal(net(x), net(x))
    assert net.bpda_surrogate is None  # dropout is differentiable: EOT only
    off = create_model("kubo_sbn_mlp", input_shape=(1, 8, 8), activation="relu", dropout=0.5).eval()
    assert not off.is_stochastic and torch.equal(off(x), off(x))
    assert isinstance(net.dropout, TestTimeDropout)


def test_gate_masks_are_binary_with_the_shapes_of_the_conv_weights():
    torch.manual_seed(0)
    x = torch.rand(3, 1, 28, 28)
    net = create_model("sgbn").eval()
    convs = [m for m in net.modules() if isinstance(m, GatedConv2d) and m.gate is not None]
    masks = net.gate_masks(x)
    assert (
        [tuple(m.shape) for m in masks]
        == [(3, *c.weight.shape) for c in convs]
        == [
            (3, 32, 1, 5, 5),
            (3, 64, 32, 5, 5),
        ]
    )
    assert all(set(m.unique().tolist()) <= {0.0, 1.0} for m in masks)
    assert all(0.2 < float(m.mean()) < 0.8 for m in masks)  # sigmoid of small initial logits: about half on
    reduced = create_model("sgbn", mask="channel").eval()
    shapes = [tuple(m.shape) for m in reduced.gate_masks(x)]
    assert shapes == [(3, 32, 1, 1, 1), (3, 64, 32, 1, 1)]  # broadcast over the kernel window
    pm1 = create_model("sgbn", mask="channel", gate_values="pm1").eval()
    assert all(set(m.unique().tolist()) <= {-1.0, 1.0} for m in pm1.gate_masks(x))
    dt = create_model("sgbn", mask="channel", gate="dt").eval()
    soft = dt.gate_masks(x)[1]
    assert not dt.convs[1].gate.binarise.is_stochastic and float(soft.min()) > 0 and float(soft.max()) < 1
    cifar = create_model("sgbn", input_shape=(3, 32, 32), mask="channel").eval()
    assert [tuple(m.shape) for m in cifar.gate_masks(torch.rand(2, 3, 32, 32))] == [
        (2, 128, 64, 1, 1),
        (2, 128, 128, 1, 1),
    ]


def test_gated_conv_applies_each_input_its_own_filters():
    torch.manual_seed(0)
    net = create_model("sgbn", mask="channel").eval()
    conv = net.convs[1]
    x = torch.rand(4, 32, 14, 14)
    torch.manual_seed(3)
    out = conv(x)
    torch.manual_seed(3)
    mask = conv.mask(x)
    for i in range(4):
        ref = F.conv2d(x[i : i + 1], conv.weight * mask[i], conv.bias, stride=2, padding=2)
        assert torch.allclose(out[i : i + 1], ref, atol=1e-5)
    third = create_model("sgbn", input_shape=(3, 32, 32), mask="channel").eval().convs[2]  # 2x2 output: mixed partials
    x = torch.rand(3, 128, 6, 6)
    torch.manual_seed(4)
    out = third(x)
    torch.manual_seed(4)
    mask = third.mask(x)
    for i in range(3):
        assert torch.allclose(out[i : i + 1], F.conv2d(x[i : i + 1], third.weight * mask[i], third.bias), atol=1e-5)


def test_hard_ste_passes_the_gradient_of_the_probabilities():
    q = torch.tensor([0.1, 0.5, 0.9], requires_grad=True)
    h = binary_gate(q)
    assert set(h.detach().tolist()) <= {0.0, 1.0}
    h.sum().backward()
    assert torch.equal(q.grad, torch.ones(3))


def test_sap_keeps_the_expected_activations():
    torch.manual_seed(0)
    h = torch.randn(1, 60) * torch.linspace(0.1, 2.0, 60)
    for exact in (False, True):  # the marginal sampler and the authors' r draws with replacement
        sap = StochasticActivationPruning(frac=0.5, exact=exact).eval()
        draws = sap(h.expand(40_000, 60))
        assert (draws == 0).float().mean() > 0.2  # it prunes
        assert torch.allclose(draws.mean(0), h[0], atol=0.05 * float(h.abs().max()))
        p = h.abs() / h.abs().sum()
        kept = (draws != 0).float().mean(0)
        assert torch.allclose(kept, 1 - (1 - p[0]) ** 30, atol=0.02)  # r = 0.5 * 60 draws
    with torch.no_grad():
        sap.train()
        assert torch.equal(sap(h), h)  # at test time only, as Dhillon et al. apply it


def test_shuffle_gates_mechanism_permutes_masks_and_survives_a_reload(tmp_path):
    from neurorobust.training.checkpoint import load_checkpoint, save_checkpoint

    net = create_model("sgbn", mask="channel", gate="dt", dense="relu").eval()
    shuffled = MECHANISMS.create("shuffle_gates", model=net)
    x = torch.rand(16, 1, 28, 28)
    assert torch.equal(net(x), net(x))  # deterministic gates, no shuffling
    h = torch.rand(16, 32, 14, 14)
    plain = net.convs[1].mask(h)
    torch.manual_seed(0)
    permuted = shuffled.convs[1].mask(h)
    torch.manual_seed(0)
    assert torch.allclose(permuted, plain[torch.randperm(16)])  # each input gets another input's mask
    assert not torch.equal(shuffled(x), net(x))
    save_checkpoint(tmp_path, "k", shuffled, {})
    fresh = create_model("sgbn", mask="channel", gate="dt", dense="relu")
    load_checkpoint(tmp_path, "k", fresh)
    assert bool(fresh.convs[1].shuffle) and not bool(net.convs[1].shuffle)
    with pytest.raises(InvalidParameterError, match="gate modules"):
        MECHANISMS.create("shuffle_gates", model=create_model("sgbn_cnn"))


def test_every_family_member_declares_how_to_attack_it():
    expect = {  # name -> (stochastic in eval mode, BPDA surrogate declared)
        "sgbn": (True, True),
        "sgbn_cnn": (False, False),
        "sgbn_cnn_bin": (True, True),
        "sgbn_sap": (True, True),
        "sgbn_dropconnect": (True, True),
        "sgbn_random_mask": (True, True),
        "sgbn_adaptive_dropout": (True, True),
        "sgbn_bnn": (False, True),
    }
    for name, (stochastic, surrogate) in expect.items():
        net = create_model(name, **({"mask": "channel"} if name == "sgbn" else {})).eval()
        assert net.is_stochastic is stochastic, name
        assert (net.bpda_surrogate is not None) is surrogate, name
        if surrogate:
            s = net.bpda_surrogate()
            x = torch.rand(4, 1, 28, 28)
            assert torch.equal(s(x), s(x)), name  # the expected value is deterministic
    assert create_model("sgbn_bnn", quantize="stoch").eval().is_stochastic


def test_bnn_binarises_weights_to_plus_minus_alpha():
    net = create_model("sgbn_bnn").eval()
    w = net.convs[1].weight
    b = net.quant[1](w)
    alpha = w.abs().flatten(1).mean(1)
    assert torch.allclose(b.abs(), alpha[:, None, None, None].expand_as(b))
    assert torch.equal(torch.sign(b), torch.where(w >= 0, 1.0, -1.0))
    stoch = create_model("sgbn_bnn", quantize="stoch").eval().quant[1]
    w2 = w.detach()[:2]  # two output units (1,600 weights): enough for the mean, 30x fewer draws
    torch.manual_seed(0)
    draws = torch.stack([stoch(w2) for _ in range(4000)]).mean(0)
    a = alpha[:2, None, None, None]
    assert torch.allclose(draws, a * (w2 / a).clamp(-1, 1), atol=0.06 * float(alpha.max()))  # E[alpha b]


def test_eot_attack_is_stronger_than_one_sample_on_a_stochastic_toy(one_thread):
    from neurorobust.data import load_dataset

    data = load_dataset("digits")
    torch.manual_seed(0)
    net = create_model("kubo_sbn_mlp", input_shape=data.input_shape, activation="reinforce", hidden=64)
    fit(net, data.x_train, data.y_train, epochs=40, batch_size=64, lr=3e-3, seed=0)
    x, y = data.x_test[:300], data.y_test[:300]
    clean = float(point_correct(net, x, y, draws=20).mean())
    assert clean > 0.6
    gen = torch.Generator().manual_seed(0)
    fgsm = ATTACKS.create("fgsm")
    single = fgsm(net, x, y, eps=0.15, generator=gen)
    eot = EOT(attack=fgsm, draws=20)(net, x, y, eps=0.15, generator=gen)
    acc_single = float(point_correct(net, single.x_adv, y, draws=20).mean())
    acc_eot = float(point_correct(net, eot.x_adv, y, draws=20).mean())
    # one REINFORCE draw gives a score-function gradient of one sample; 20 draws average it (measured 0.56 vs 0.33)
    assert acc_eot < acc_single - 0.1, (clean, acc_single, acc_eot)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: StochasticBinary("sigmoid"), "estimator"),
        (lambda: StochasticBinary("ste", slope=-1.0), "slope"),
        (lambda: StochasticBinary("ste", slope=6.0), "slope"),
        (lambda: annealed_slope(-1), "epoch"),
        (lambda: create_model("kubo_sbn_1cnn", activation="tanh"), "activation"),
        (lambda: create_model("sgbn", mask="pixel"), "mask"),
        (lambda: create_model("sgbn", mask_p=(0.5,)), "mask_p"),
        (lambda: create_model("sgbn_dropconnect", mask_p=(0.5, 1.5)), "mask_p"),
        (lambda: create_model("sgbn", widths=(32,)), "widths"),
        (lambda: create_model("sgbn_cnn", shared_weights=True), "shared_weights"),
        (lambda: create_model("sgbn", gate="soft"), "gate"),
        (lambda: create_model("sgbn_cnn", masking="gate"), "masking"),
        (lambda: create_model("sgbn_bnn", quantize="ternary"), "quantize"),
        (lambda: StochasticActivationPruning(frac=0.0), "frac"),
        (lambda: StochasticNet("not a module"), "net"),
    ],
)
def test_bad_parameters_give_one_clear_error(build, match):
    with pytest.raises(InvalidParameterError, match=f"'{match}' parameter"):
        build()


def test_bad_transfer_entries_stop_the_spec():
    base = {"data": {"name": "digits"}, "model": {"name": "kubo_sbn_mlp"}}
    for params, match in (
        ({"sources": {}}, "no parameters but 'source'"),
        ({"source": {"evaluate": {}}}, "keys among"),
        ({"source": {"data": {"name": "mnist"}}}, "dataset"),
        ({"source": {}, "attack": "transfer"}, "gradient attack"),
        ({"source": {}, "attack": "fgsm", "attack_params": {"steps": 3}}, "attack_params"),
    ):
        raw = {**base, "evaluate": {"attacks": [{"name": "transfer", "params": params}]}}
        with pytest.raises(SpecError, match=match):
            parse_spec(raw)


def test_single_draw_and_eot_rows_and_a_named_transfer_source(tmp_path, one_thread):
    from neurorobust.experiments.runner import run_experiment
    from neurorobust.store import ResultsStore

    ste = {"name": "kubo_sbn_mlp", "params": {"hidden": 32}}
    raw = {
        "name": "sbn_tiny",
        "data": {"name": "digits"},
        "model": ste,
        "train": {"epochs": 8, "batch_size": 64, "lr": 3e-3},
        "evaluate": {
            "suite": "seed-paper",
            "n": 120,
            "check_n": 40,
            "eot_draws": 4,
            "eps": [0.1, 0.3],
            "noise_sigmas": [0.0],
            "blur_sigmas": [0.0],
            "attacks": [
                {"name": "fgsm", "label": "fgsm-single-draw", "adaptive": False},
                {"name": "fgsm"},
                {
                    "name": "transfer",
                    "label": "transfer-from-relu",
                    "eps": [0.3],
                    "params": {
                        "source": {"model": {"name": "kubo_sbn_mlp", "params": {"activation": "relu"}}},
                        "attack": "fgsm",
                    },
                },
            ],
        },
    }
    spec = parse_spec(raw)
    stripped = {**raw, "evaluate": {**raw["evaluate"], "attacks": [dict(a) for a in raw["evaluate"]["attacks"]]}}
    stripped["evaluate"]["attacks"][1]["adaptive"] = True  # the default does not change the eval key
    assert eval_key(parse_spec(stripped)) == eval_key(spec)
    with ResultsStore(tmp_path / "r.db") as store:
        out = run_experiment(spec, store=store, runs_dir=tmp_path)
        rows = {(r.attack, r.metric, r.eps): r for r in out.rows}
        single = rows[("fgsm-single-draw", "accuracy", 0.3)]
        adaptive = rows[("fgsm", "accuracy", 0.3)]
        assert single.params["adaptive"] is False and "adaptive" not in adaptive.params
        # EOT (4 draws here) queries the model once per draw, for the gradient and to judge the step's end point on
        # the draws (the start may be the point fewer draws classify correctly); the single-draw FGSM once
        assert rows[("fgsm-single-draw", "mean_queries", 0.3)].value == 1
        assert rows[("fgsm", "mean_queries", 0.3)].value == 2 * 4
        assert ("transfer-from-relu", "accuracy", 0.3) in rows
        # the source is a model of its own, trained once and cached under its own key
        assert len(list((tmp_path / "checkpoints").glob("*.safetensors"))) == 2
        assert out.verdict


@pytest.mark.parametrize("name", ["stochastic_mnist", "sgbn_mnist", "sgbn_cifar10"])
def test_kubo_configs_validate_and_every_transfer_source_is_a_variant(name):
    from neurorobust.experiments.runner import named_source_spec
    from neurorobust.experiments.sweep import expand_sweep
    from neurorobust.specs import load_spec, train_key

    for full in (False, True):
        spec = load_spec(REPO / "configs" / f"{name}.toml", full=full)
        variants = expand_sweep(spec)
        trained = {train_key(v.spec) for v in variants}
        for v in variants:
            for a in v.spec.evaluate.attacks:
                if a.name == "transfer":  # Table 4.8: sources are the experiment's own networks, same seed
                    assert train_key(named_source_spec(v.spec, a.params["source"])) in trained, (v.spec.label, a.label)
        labels = {v.spec.label for v in variants}
        assert any(label.endswith("[EOT/BPDA]") for label in labels)
        # an EOT/BPDA variant attacks the same trained network as its single-draw partner (same train key)
        keys = {(v.spec.label, v.spec.seed): train_key(v.spec) for v in variants}
        for (label, seed), key in keys.items():
            if label.endswith(" [EOT/BPDA]"):
                partner = label.removesuffix(" [EOT/BPDA]")
                partners = [
                    k
                    for (lab, s), k in keys.items()
                    if s == seed and lab.split(" (reduced")[0] == partner.split(" (reduced")[0]
                ]
                assert key in partners, label
        if name.startswith("sgbn"):
            masks = {v.spec.model.params.get("mask") for v in variants if v.spec.model.name == "sgbn"}
            assert masks == ({"full"} if full else {"channel"})  # the reduced gate is the 30-minute tier only
    assert load_spec(REPO / "configs" / f"{name}.toml").reductions.startswith("30-minute tier")


def test_pgd_phase_trains_a_copy_with_the_mixed_adversarial_loss(one_thread):
    from neurorobust.data import load_dataset
    from neurorobust.mechanisms.sgbn import MixedPGDObjective

    data = load_dataset("mnist")
    torch.manual_seed(0)
    net = create_model("sgbn_bnn").eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    tuned = MECHANISMS.create(
        "pgd_phase", model=net, data=data, eps=0.3, steps=2, step_size=0.15, epochs=1, n=200, train={"batch_size": 50}
    )
    assert tuned is not net and all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())
    assert not torch.equal(tuned.convs[1].weight, net.convs[1].weight)
    assert "MixedPGDObjective(eps=0.3, steps=2" in tuned.mechanism_report["pgd_phase"]
    # the loss is tau * CE(clean) + (1 - tau) * CE(adversarial): tau = 1 is plain cross-entropy
    x, y = data.x_train[:20], data.y_train[:20]
    loss, logits = MixedPGDObjective(0.3, steps=1, step_size=0.3, tau=1.0)(tuned.train(), x, y, torch.Generator())
    assert torch.allclose(loss, F.cross_entropy(logits, y))
    with pytest.raises(InvalidParameterError, match="'tau' parameter"):
        MECHANISMS.create("pgd_phase", model=net, data=data, tau=1.5)


class _OneCoinPerBatch(nn.Module):
    """Right on the whole batch or wrong on the whole batch, one coin per forward pass (as DropConnect's
    one mask per batch can be): a single pass makes clean accuracy 0 or 1, the mean over draws about 0.5."""

    is_stochastic = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        right = bool(torch.rand(()) < 0.5)
        logits = torch.zeros(len(x), 2)
        logits[:, 0 if right else 1] = 1.0
        return logits + 0.0 * x.flatten(1)[:, :1]


def test_clean_accuracy_of_a_random_model_is_the_mean_over_draws_and_keeps_the_single_draw():
    from neurorobust.data import Dataset, DatasetInfo
    from neurorobust.evaluation import suite
    from neurorobust.specs import EvalSpec

    info = DatasetInfo(shape=(1, 4, 4), n_train=8, n_test=200, classes=("a", "b"))
    x, y = torch.rand(200, 1, 4, 4), torch.zeros(200, dtype=torch.long)
    data = Dataset("coin", x[:8], y[:8], x, y, info)
    spec = EvalSpec(suite="none", n=200, eot_draws=40, noise_sigmas=[], blur_sigmas=[])
    rows = {
        r.metric: r
        for r in suite.evaluate(_OneCoinPerBatch(), data, spec, experiment="e", label="m").rows
        if r.attack == "clean"
    }
    assert rows["accuracy_single_draw"].value in (0.0, 1.0)
    assert 0.25 < rows["accuracy"].value < 0.75 and rows["accuracy"].params["draws"] == 40
    assert rows["balanced_accuracy"].value == pytest.approx(rows["accuracy"].value)  # one class: the same mean
    one = EvalSpec(suite="none", n=200, eot_draws=1, noise_sigmas=[], blur_sigmas=[])
    rows = [r for r in suite.evaluate(_OneCoinPerBatch(), data, one, experiment="e", label="m").rows]
    assert {r.metric for r in rows if r.attack == "clean"} == {"accuracy", "balanced_accuracy"}
