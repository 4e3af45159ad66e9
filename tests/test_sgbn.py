"""SGBN gates, the chapter-4 baselines (SAP, DropConnect, random masks, adaptive dropout, BNN) and the
shuffling and PGD-phase mechanisms (Kubo 2019, thesis ch. 4; mechanisms/sgbn.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from neurorobust.errors import InvalidParameterError
from neurorobust.mechanisms import MECHANISMS
from neurorobust.mechanisms.sgbn import GatedConv2d, StochasticActivationPruning, binary_gate
from neurorobust.mechanisms.stochastic import expected_mode
from neurorobust.models import create_model


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
    assert torch.allclose(draws, a * (w2 / a).clamp(-1, 1), atol=0.06 * float(alpha.max().detach()))  # E[alpha b]


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


@pytest.mark.parametrize(("mask", "window"), [("full", (5, 5)), ("channel", (1, 1))])
def test_a_gate_gives_each_input_one_mask_per_weight_or_per_channel(mask, window):
    torch.manual_seed(0)
    net = create_model("sgbn", mask=mask).eval()
    conv = net.convs[1]
    gate_out = conv.gate(torch.rand(5, 32, 14, 14))
    assert tuple(gate_out.shape) == (5, 64, 32, *window)
    assert conv.gate.fc3.out_features == 64 * 32 * window[0] * window[1]  # one logistic unit per masked entry
    assert conv.gate.mask_shape == (64, 32, *window)


def test_gates_are_deterministic_in_eval_when_they_do_not_sample():
    torch.manual_seed(0)
    x = torch.rand(6, 1, 28, 28)
    dt = create_model("sgbn", mask="channel", gate="dt", dense="relu").eval()
    assert not dt.is_stochastic
    assert torch.equal(dt(x), dt(x)) and torch.equal(dt.gate_masks(x)[0], dt.gate_masks(x)[0])
    st = create_model("sgbn", mask="channel").eval()
    assert st.is_stochastic
    assert not torch.equal(st.gate_masks(x)[0], st.gate_masks(x)[0])  # sampled binary gates
    with expected_mode(st):  # the BPDA surrogate's expected values: no sampling
        assert torch.equal(st(x), st(x))
        q = st.convs[0].gate.probabilities(x)
        assert torch.allclose(st.gate_masks(x)[0], q)


def test_the_loss_gradient_reaches_the_gate_parameters():
    torch.manual_seed(0)
    for gate in ("st", "dt"):
        net = create_model("sgbn", mask="channel", gate=gate).train()
        x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
        F.cross_entropy(net(x), y).backward()
        for conv in net.convs:
            grads = [p.grad for p in conv.gate.parameters()]
            assert all(g is not None for g in grads), gate
            assert float(conv.gate.fc3.weight.grad.abs().sum()) > 0, gate  # through the hard STE (or the soft mask)
            assert float(conv.gate.conv.weight.grad.abs().sum()) > 0, gate


def test_bnn_without_a_dense_hidden_layer_feeds_the_output_layer():
    cifar = create_model("sgbn_bnn", input_shape=(3, 32, 32)).eval()
    assert cifar.hidden is None and cifar(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    small = create_model("sgbn_bnn", hidden=5).eval()
    assert small.hidden.out_features == 5 and small(torch.rand(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: create_model("sgbn", mask="pixel"), "mask"),
        (lambda: create_model("sgbn", mask_p=(0.5,)), "mask_p"),
        (lambda: create_model("sgbn_dropconnect", mask_p=(0.5, 1.5)), "mask_p"),
        (lambda: create_model("sgbn", widths=(32,)), "widths"),
        (lambda: create_model("sgbn_cnn", shared_weights=True), "shared_weights"),
        (lambda: create_model("sgbn", gate="soft"), "gate"),
        (lambda: create_model("sgbn", gate_hidden=0), "gate_hidden"),
        (lambda: create_model("sgbn_cnn", masking="gate"), "masking"),  # fixed by the registered name
        (lambda: create_model("sgbn_bnn", quantize="ternary"), "quantize"),
        (lambda: create_model("sgbn_bnn", gate="st"), "gate"),  # not a BNN parameter
        (lambda: create_model("sgbn", bogus=1), "bogus"),
        (lambda: StochasticActivationPruning(frac=0.0), "frac"),
    ],
)
def test_bad_parameters_give_one_clear_error(build, match):
    with pytest.raises(InvalidParameterError, match=f"'{match}' parameter"):
        build()
