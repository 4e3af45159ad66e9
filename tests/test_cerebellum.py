"""Cerebellum family (Liu, Li & Chen): granule layer, LTD, Purkinje read-out, fused kernel, heads, configs."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from neurorobust.data import load_dataset
from neurorobust.errors import InvalidParameterError
from neurorobust.mechanisms import MECHANISMS
from neurorobust.mechanisms.cerebellum import (
    LTD,
    CerebellumNet,
    FrozenEncoder,
    GranuleLayer,
    cerebellum_head,
    draw_granule_inputs,
    fused_available,
    synapse_budget_width,
)
from neurorobust.models import MODELS, create_model
from neurorobust.specs import load_spec
from neurorobust.training import fit
from neurorobust.training.loop import predict_logits

REPO = Path(__file__).resolve().parents[1]
needs_numba = pytest.mark.skipif(not fused_available(), reason="numba not installed (a core dependency)")


def _twins(**kw):
    """The same network (same J, W, mu) on each backend."""
    torch.manual_seed(0)
    nets = {"torch": CerebellumNet(backend="torch", **kw)}
    for b in ("dense", "fused"):
        if b == "fused" and not fused_available():
            continue
        nets[b] = CerebellumNet(backend=b, **kw)
        nets[b].load_state_dict(nets["torch"].state_dict())
    return nets


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("shape", [dict(input_shape=(1, 5, 6), m=300, k=3), dict(m=2000, k=4)])
def test_sparse_paths_equal_the_dense_masked_matmul(one_thread, mode, shape):
    nets = _twins(ltd=True, **shape)
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(50, *nets["torch"].input_shape, generator=gen)
    target = torch.randn(50, 10, generator=gen)
    mu0 = torch.rand(nets["torch"].m, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for n in nets.values():  # a non-zero mu, so LTD's term is exercised
            n.ltd.mu.copy_(mu0)
    out = {}
    for name, net in nets.items():
        getattr(net, mode)()
        xr = x.clone().requires_grad_(True)
        y = net(xr)
        gx, gw = torch.autograd.grad(((y - target) ** 2).sum(), (xr, net.readout))
        out[name] = (y.detach(), gx, gw, net.ltd.mu.clone())
    ref = out["dense"]
    assert ref[1].abs().sum() > 0 and ref[2].abs().sum() > 0  # gradients are not trivially zero
    for name, got in out.items():
        for a, b, what in zip(got, ref, ("logits", "input gradient", "read-out gradient", "mu"), strict=True):
            scale = b.abs().max().item() + 1e-12
            assert (a - b).abs().max().item() <= 1e-4 * scale + 1e-6, f"{name}: {what}"
    assert torch.equal(ref[3], mu0) == (mode == "eval")  # mu moves in training only


@needs_numba
def test_fused_read_out_gradient_is_zero_on_blocks_silent_on_the_whole_batch(one_thread):
    # one lit pixel: most blocks of cells (256 at batch 50) see only dark pixels and are skipped by the
    # kernel, which must still write their (zero) read-out gradient rather than leave memory unset
    nets = _twins(m=3000, k=4, ltd=False)
    x = torch.zeros(50, 1, 28, 28)
    x[:, 0, 14, 14] = torch.rand(50, generator=torch.Generator().manual_seed(3)) + 0.5
    grads = {}
    for name in ("dense", "fused"):
        net = nets[name].train()
        grads[name] = torch.autograd.grad((net(x) * torch.arange(10)).sum(), net.readout)[0]
    silent = grads["dense"].abs().sum(1) == 0
    assert silent.sum() > 2000 and (~silent).sum() > 0  # mostly silent cells, some active
    torch.testing.assert_close(grads["fused"], grads["dense"], rtol=1e-4, atol=1e-6)


@needs_numba
def test_fused_kernel_batch_one_and_odd_sizes(one_thread):
    for classes in (10, 3):  # the kernel unrolls the class loop for 10 classes; 3 takes the generic loop
        nets = _twins(input_shape=(1, 7, 7), num_classes=classes, m=37, k=5, ltd=False)  # m not a multiple of 8
        x = torch.rand(1, 1, 7, 7).requires_grad_(True)
        for mode in ("eval", "train"):  # train: the read-out gradient at batch 1 (Table 7)
            grads = []
            for net in (nets["dense"], nets["fused"]):
                getattr(net, mode)()
                y = net(x)
                g = torch.autograd.grad((y * torch.arange(classes)).sum(), (x, net.readout))
                grads.append((y, *g))
            torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)
    nets = _twins(input_shape=(1, 7, 7), m=37, k=5, ltd=True)
    for net in (nets["torch"], nets["fused"]):
        net.train()
        for i in range(5):
            net(torch.rand(1, 1, 7, 7, generator=torch.Generator().manual_seed(i)))
    torch.testing.assert_close(nets["torch"].ltd.mu, nets["fused"].ltd.mu)


def test_k_inputs_per_cell_with_and_without_replacement():
    d, m, k = 20, 5000, 10
    idx, w = draw_granule_inputs(d, m, k, generator=torch.Generator().manual_seed(0))
    assert idx.shape == (m, k) and w.shape == (m, k) and idx.dtype == torch.int64
    assert int(idx.min()) >= 0 and int(idx.max()) < d
    distinct = torch.tensor([len(set(row.tolist())) for row in idx])
    assert (distinct < k).float().mean() > 0.5  # with replacement (as coded) duplicates are common here
    assert w.std().item() == pytest.approx(1 / math.sqrt(k), rel=0.05)
    idx_u, _ = draw_granule_inputs(d, m, k, unique=True, generator=torch.Generator().manual_seed(0))
    assert all(len(set(row.tolist())) == k for row in idx_u)
    layer = GranuleLayer(784, 1000, 4, seed=3)
    assert layer.inputs.shape == (1000, 4)
    # a duplicated input adds its weights: the dense J has the sum in that entry
    dense = layer.dense()
    j = 0
    for i in set(layer.inputs[j].tolist()):
        assert dense[i, j].item() == pytest.approx(layer.weights[j][layer.inputs[j] == i].sum().item())
    assert int((dense[:, j] != 0).sum()) == len(set(layer.inputs[j].tolist()))


def test_fc_base_is_lecun_normal_and_seeded():
    a, b = GranuleLayer(784, 5970, fc=True, seed=0), GranuleLayer(784, 5970, fc=True, seed=0)
    assert torch.equal(a.weight, b.weight)
    assert a.weight.shape == (784, 5970)
    assert a.weight.std().item() == pytest.approx(1 / math.sqrt(784), rel=0.02)
    assert not torch.equal(GranuleLayer(784, 100, 4, seed=0).inputs, GranuleLayer(784, 100, 4, seed=1).inputs)


def test_only_the_purkinje_readout_trains(one_thread):
    torch.manual_seed(0)
    net = create_model("cerebellum", m=3000, k=4)
    assert [n for n, _ in net.named_parameters()] == ["readout"]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    data = load_dataset("mnist")
    fit(net, data.x_train[:500], data.y_train[:500], optimizer="rmsprop", lr=0.5 / 3000, loss="mse", batch_size=50)
    after = net.state_dict()
    assert torch.equal(before["granule.inputs"], after["granule.inputs"])
    assert torch.equal(before["granule.weights"], after["granule.weights"])
    assert not torch.equal(before["readout"], after["readout"])
    assert not torch.equal(before["ltd.mu"], after["ltd.mu"])  # mu moved in training
    mu = after["ltd.mu"].clone()
    predict_logits(net, data.x_test[:100])
    assert torch.equal(net.ltd.mu, mu)  # ... and is frozen in eval


def test_ltd_mu_converges_to_the_mean_activity(one_thread):
    gen = torch.Generator().manual_seed(0)
    means = torch.rand(40, generator=gen) * 3
    ltd = LTD(40, beta=0.99).train()
    for _ in range(3000):  # stationary stream: h ~ means * U(0, 2), mean = means
        ltd(means * 2 * torch.rand(50, 40, generator=gen))
    torch.testing.assert_close(ltd.mu, means, rtol=0.03, atol=0.01)
    # the same inside the network (fused or torch path): mu -> E[relu(J^T x)] over the stream
    torch.manual_seed(0)
    net = CerebellumNet(input_shape=(1, 4, 4), m=64, k=3, beta=0.95).train()
    x_stream = torch.rand(4000, 1, 4, 4, generator=gen)
    for i in range(0, 4000, 50):
        net(x_stream[i : i + 50])
    expected = net.granule(x_stream.flatten(1)).mean(0)
    torch.testing.assert_close(net.ltd.mu, expected, rtol=0.05, atol=0.01)
    h = torch.relu(torch.randn(8, 40))
    ltd.eval()
    torch.testing.assert_close(ltd(h), h - ltd.mu)


@pytest.mark.parametrize(
    ("kwargs", "name", "match"),
    [
        (dict(m=100, k=785), "k", r"\[1, d\] = \[1, 784\]"),
        (dict(m=0), "m", r"in \[1, inf\)"),
        (dict(m=-5), "m", r"in \[1, inf\)"),
        (dict(m=10, beta=1.0), "beta", r"in \(0, 1\)"),
        (dict(m=10, beta=0.0), "beta", r"in \(0, 1\)"),
        (dict(m=10, k=0), "k", r"in \[1, inf\)"),
        (dict(m=10, backend="gpu"), "backend", "'auto', 'fused', 'torch' or 'dense'"),
    ],
)
def test_bad_parameters_give_one_clear_error(kwargs, name, match):
    with pytest.raises(InvalidParameterError, match=match) as err:
        create_model("cerebellum", **kwargs)
    assert err.value.name == name
    assert str(err.value).startswith(f"The '{name}' parameter of ")


def test_bad_inputs_and_components():
    with pytest.raises(InvalidParameterError, match="beta"):
        LTD(10, beta=1.5)
    with pytest.raises(InvalidParameterError, match=r"\[1, d\]"):
        draw_granule_inputs(5, 10, 6)
    net = CerebellumNet(m=50, k=2)
    with pytest.raises(InvalidParameterError, match=r"shape \(N, 1, 28, 28\)"):
        net(torch.rand(2, 784))
    with pytest.raises(InvalidParameterError, match="feature size"):
        CerebellumNet(m=10, encoder=torch.nn.Flatten())
    with pytest.raises(InvalidParameterError, match="encoder"):
        cerebellum_head(torch.nn.Linear(3, 3), SimpleNamespace(x_train=None), m=10)


def test_synapse_budget_widths_are_the_papers():
    assert [synapse_budget_width(k) for k in (784, 200, 50, 10, 4, 2, 1)] == [
        5970,
        21818,
        68571,
        160000,
        200000,
        218182,
        228571,
    ]


def test_backend_choice():
    assert CerebellumNet(m=10, fc=True).path() == "dense"
    assert CerebellumNet(m=10, k=200).path() == "dense"
    assert CerebellumNet(m=10, k=4, backend="torch").path() == "torch"
    assert CerebellumNet(m=10, k=4).path() == ("fused" if fused_available() else "torch")


def test_end_to_end_mnist_one_epoch_beats_90_percent(one_thread):
    """m = 10,000 granule cells (k = 4, LTD), 1 epoch on the whole training set, the paper's recipe."""
    data = load_dataset("mnist")
    torch.manual_seed(0)
    net = create_model("cerebellum", m=10_000, k=4)
    fit(net, data.x_train, data.y_train, optimizer="rmsprop", lr=0.5 / 10_000, loss="mse", batch_size=50, epochs=1)
    acc = (predict_logits(net, data.x_test).argmax(1) == data.y_test).float().mean().item()
    assert acc > 0.90, acc


def test_head_on_a_frozen_encoder_trains_only_the_head(one_thread):
    torch.manual_seed(0)
    vgg = create_model("vgg_cifar", width=0.0625)
    gen = torch.Generator().manual_seed(0)
    data = SimpleNamespace(
        x_train=torch.rand(200, 3, 32, 32, generator=gen),
        y_train=torch.arange(200) % 10,
        input_shape=(3, 32, 32),
        num_classes=10,
    )
    fit(vgg, data.x_train, data.y_train, epochs=1, batch_size=50)
    enc_before = {k: v.clone() for k, v in vgg.encoder.state_dict().items()}
    head = cerebellum_head(vgg, data, m=500, k=4, epochs=2, seed=0)
    assert isinstance(head.encoder, FrozenEncoder)
    assert [n for n, p in head.named_parameters() if p.requires_grad] == ["readout"]
    for k, v in head.encoder.encoder.state_dict().items():  # trunk (incl. batch-norm statistics) unchanged
        assert torch.equal(v, enc_before[k]), k
    assert head.d == vgg.encoder.out_features == 256 // 16 * 16
    x = data.x_train[:4].clone().requires_grad_(True)
    (g,) = torch.autograd.grad(head(x).sum(), x)
    assert g.abs().sum() > 0  # attacks see trunk + head
    # the runner rebuilds the head's architecture to load its checkpoint
    built = MECHANISMS.get("cerebellum_head").constructor.architecture(vgg, data, m=500, k=4, seed=0)
    built.load_state_dict(head.state_dict())
    torch.testing.assert_close(predict_logits(built, data.x_train[:8]), predict_logits(head, data.x_train[:8]))
    assert head.mechanism_report["lr"] == pytest.approx(0.5 / 500)


def test_registry_and_configs():
    assert "cerebellum" in MODELS and "cerebellum_head" in MECHANISMS
    for name in ("cerebellum_mnist", "cerebellum_mnist_sweeps", "cerebellum_cifar10"):
        for full in (False, True):
            spec = load_spec(REPO / "configs" / f"{name}.toml", full=full)
            assert spec.reductions
            assert spec.sweep is not None and spec.sweep.variants


def test_registered_cerebellum_forwards_to_the_net_and_rejects_unknown_keys():
    entry = MODELS.get("cerebellum")
    assert entry.parameters() == {
        "input_shape": (1, 28, 28),
        "num_classes": 10,
        "m": 200_000,
        "k": 4,
        "ltd": True,
        "fc": False,
        "beta": 0.99,
        "unique": False,
        "seed": None,
        "backend": "auto",
    }
    assert entry.summary.startswith("Granule layer") and entry.paper.startswith("Liu, Li, Chen")
    net = MODELS.create("cerebellum", m=50, k=3, ltd=False, seed=0)
    assert isinstance(net, CerebellumNet) and (net.m, net.k, net.ltd) == (50, 3, None)
    for bad in ("mm", "encoder", "d"):  # encoder and d are the head's, not a config's
        with pytest.raises(InvalidParameterError, match=bad):
            MODELS.create("cerebellum", **{bad: 1})
    with pytest.raises(InvalidParameterError, match="epoch"):
        MECHANISMS.create("cerebellum_head", epoch=3)


def test_head_architecture_takes_the_heads_parameters():
    trunk = create_model("vgg_cifar", width=0.0625)
    net = cerebellum_head.architecture(trunk, None, m=64, k=3, ltd=False, epochs=4, lr=0.1, seed=1)
    again = cerebellum_head.architecture(trunk, None, m=64, k=3, ltd=False, seed=1)
    assert (net.m, net.k, net.ltd, net.granule.fc) == (64, 3, None, False)
    assert torch.equal(net.granule.inputs, again.granule.inputs)  # J from the seed
    default = cerebellum_head.architecture(trunk, None, m=64)
    assert default.k == 4 and default.ltd is not None and default.ltd.beta == 0.99


def _store_row(model, attack, eps, value, seed=0):
    from neurorobust.store import ResultRow

    return ResultRow("cerebellum_mnist_sweeps", model, "mnist", attack, "accuracy", value, n=200, eps=eps, seed=seed)


def test_every_sweep_label_parses_and_the_sweep_report_has_its_tables_and_figures(tmp_path):
    from neurorobust.experiments.sweep import expand_sweep
    from neurorobust.report.build import latest_rows
    from neurorobust.report.families import REPORTERS, ReportContext
    from neurorobust.report.families.cerebellum import parse_sweep_label, sweep_report_items
    from neurorobust.specs import load_spec
    from neurorobust.store import ResultsStore

    for full in (False, True):  # the report finds the sweep's models by their labels: every label must parse
        for v in expand_sweep(load_spec(REPO / "configs" / "cerebellum_mnist_sweeps.toml", full=full)):
            assert parse_sweep_label(v.spec.label) is not None, v.spec.label
    assert parse_sweep_label("rc+ltd k=4 m=50000 b1 (reduced, full suite)") == {
        "kind": "rc",
        "ltd": True,
        "k": 4,
        "m": 50000,
        "batch": 1,
        "tier": "reduced, full suite",
    }
    assert parse_sweep_label("cerebellum") is None

    # two seeds of each number, in a real store: the tables show their mean in % with one decimal
    values = {
        ("fc m=1000", "clean", None): (0.94, 0.95),
        ("fc m=1000", "pgd-0.01", 0.1): (0.07, 0.09),
        ("fc m=5000", "pgd-0.01", 0.1): (0.15, 0.16),
        ("fc+ltd m=5000", "fgsm", 0.3): (0.30, 0.40),
        ("rc+ltd k=4 m=50000", "pgd-0.01", 0.1): (0.40, 0.40),
        ("rc k=4 m=200000", "worst-case", 0.1): (0.02, 0.03),
        ("rc k=4 m=50000 b1", "clean", None): (0.90, 0.90),
        ("base", "pgd-0.01", 0.1): (0.5, 0.5),
    }
    with ResultsStore(tmp_path / "results.db") as store:
        for i, ((model, attack, eps), pair) in enumerate(values.items()):
            rows = [_store_row(model, attack, eps, v, seed) for seed, v in enumerate(pair)]
            store.record_run("cerebellum_mnist_sweeps", "sweep", spec={}, train_key=str(i), eval_key=str(i), rows=rows)
        rows = latest_rows(store.results(experiment="cerebellum_mnist_sweeps", done_only=True))
        ctx = ReportContext("cerebellum_mnist_sweeps", store, tmp_path / "report", rows)
        reporter = REPORTERS.create("cerebellum")
        assert reporter.applies(ctx)
        items = reporter.items(ctx)

    mean = {key: f"{100 * sum(pair) / 2:.1f}" for key, pair in values.items()}
    paper = ctx.paper_values  # claims/cerebellum.toml: Table 6 and 7 rows of these labels
    tables = {title.split(":")[0]: payload for kind, title, payload in items if kind == "table"}
    assert "Table 7" in tables  # the paper's Table 7 next to ours
    width_header, width = tables["Width sweep, fully connected granule layer"]
    assert [r[0] for r in width] == ["fc m=1000", "fc m=5000", "fc+ltd m=5000"]
    col = {name: i for i, name in enumerate(width_header)}
    assert width[0][col["clean"]] == f"{mean[('fc m=1000', 'clean', None)]} / {paper[('fc m=1000', 'clean', None)]:g}"
    assert width[0][col["PGD (0.01) 0.1"]] == f"8.0 / {paper[('fc m=1000', 'pgd-0.01', 0.1)]:g}" == "8.0 / 9"
    assert width[1][col["PGD (0.01) 0.1"]].startswith(mean[("fc m=5000", "pgd-0.01", 0.1)] + " / ")
    assert width[2][col["PGD (0.01) 0.3"]] == f"— / {paper[('fc+ltd m=5000', 'pgd-0.01', 0.3)]:g}"
    assert width[2][col["m"]] == "5,000" and width[2][col["LTD"]] == "yes"
    sparse_header, sparse = tables["Sparsity sweep at a fixed synapse budget"]
    col = {name: i for i, name in enumerate(sparse_header)}
    assert [r[0] for r in sparse] == ["rc k=4 m=200000", "rc+ltd k=4 m=50000"]
    assert sparse[0][col["worst case 0.1"]] == "2.5"  # the paper has no worst case
    assert sparse[1][col["PGD (0.01) 0.1"]] == "40.0"  # no claim for this label
    batch_header, batch = tables["Training batch 50 vs batch 1 (Table 7)"]
    assert batch == [["rc k=4 m=50000 b1", "1", "90.0"] + ["—"] * (len(batch_header) - 3)]

    # the paper's tables, a row per model with a number: ours (paper) verdict mark
    t6_header, t6 = tables["Table 6"]
    by_model = {r[0]: dict(zip(t6_header, r, strict=True)) for r in t6}
    assert set(by_model) == {"fc m=1000", "fc m=5000", "fc+ltd m=5000"}  # rc k=4 m=200000: no claimed number run
    assert by_model["fc m=1000"]["pgd-0.01 0.1"] == "8.0 (9) ✓"
    assert by_model["fc m=1000"]["clean"] == f"94.5 ({paper[('fc m=1000', 'clean', None)]:g}) ✓"
    assert by_model["fc+ltd m=5000"]["fgsm 0.3"].startswith("35.0 (")
    assert "reproduced" in by_model["fc m=1000"]["verdicts"]

    figures = [payload for kind, _, payload in items if kind == "figure"]
    assert figures == ["robust_vs_width_k.png", "accuracy_vs_width.png", "accuracy_vs_k.png"]
    for name in figures:
        assert (tmp_path / "report" / name).stat().st_size > 10_000
    assert sweep_report_items([dataclasses.asdict(_store_row("base", "clean", None, 0.9))], tmp_path) == []


def test_the_paper_table_of_an_unswept_experiment(tmp_path):
    from neurorobust.report.families import REPORTERS, ReportContext
    from neurorobust.report.families.cerebellum import paper_table_items
    from neurorobust.store import ResultsStore

    def row(model, attack, eps, value):
        return {
            "experiment": "cerebellum_mnist",
            "model": model,
            "dataset": "mnist",
            "attack": attack,
            "metric": "accuracy",
            "eps": eps,
            "value": value,
            "run_id": 1,
            "seed": None,
            "params": {},
        }

    rows = [row("cerebellum", "clean", None, 0.975), row("cerebellum", "fgsm", 0.3, 0.1)]
    with ResultsStore(tmp_path / "results.db") as store:
        ctx = ReportContext("cerebellum_mnist", store, tmp_path, rows)
        reporter = REPORTERS.create("cerebellum")
        assert reporter.applies(ctx)  # claims/cerebellum.toml maps Table 2 to it
        items = reporter.items(ctx)
        assert not reporter.applies(ReportContext("baseline_mnist_cnn", store, tmp_path, rows))
    assert [kind for kind, _, _ in items if kind == "figure"] == []
    tables = {title.split(" (")[0]: payload for kind, title, payload in items if kind == "table"}
    header, body = tables["Table 2: ours"]
    assert header[:3] == ["model", "paper row", "clean"] and "fgsm 0.3" in header
    (only,) = body  # the other models have no number of ours yet
    cells = dict(zip(header, only, strict=True))
    assert cells["model"] == "cerebellum" and cells["clean"].startswith("97.5 (")
    assert cells["fgsm 0.3"].startswith("10.0 (") and cells["pgd-0.01 0.1"].startswith("— (")  # not run
    header, body = tables["Table 2: relative and textual claims"]
    assert header[0] == "claim" and {r[2] for r in body} <= {"relative", "direction", "qualitative"}
    assert paper_table_items([], rows) == []
