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
    net = create_model("kubo_sbn_mlp", input_shape=(1, 8, 8), activation="relu", dropout=0.5, dropout_at_test=True)
    net.eval()
    x = torch.rand(4, 1, 8, 8)
    assert net.is_stochastic and not torch.equal(net(x), net(x))
    assert net.bpda_surrogate is None  # dropout is differentiable: EOT only
    off = create_model("kubo_sbn_mlp", input_shape=(1, 8, 8), activation="relu", dropout=0.5).eval()
    assert not off.is_stochastic and torch.equal(off(x), off(x))
    assert isinstance(net.dropout, TestTimeDropout)


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


@pytest.mark.parametrize("name", ["stochastic_mnist", "stochastic_mnist_sgbn", "stochastic_cifar10_sgbn"])
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


def test_kubo_registrations_forward_to_the_network_and_refuse_unknown_keys():
    from neurorobust.models import MODELS

    net = create_model("kubo_sbn_1cnn", hidden=12, activation="dbn", dropout=0.5, dropout_at_test=True)
    assert (net.hidden.out_features, net.activation, net.binary.estimator) == (12, "dbn", "dbn")
    assert MODELS.get("kubo_sbn_2cnn").parameters()["n_conv"] == 2 and MODELS.get("kubo_sbn_mlp").parameters() == {
        "input_shape": (1, 28, 28),
        "num_classes": 10,
        "n_conv": 0,
        "hidden": 100,
        "activation": "ste",
        "dropout": 0.0,
        "dropout_at_test": False,
        "slope_rate": 0.04,
        "max_slope": 5.0,
        "binary_at_test": True,
    }
    with pytest.raises(InvalidParameterError, match="'hiden' parameter of model 'kubo_sbn_mlp'"):
        create_model("kubo_sbn_mlp", hiden=10)


def test_mechanism_modules_know_nothing_of_reports():
    from test_architecture import upward_imports

    for name in ("stochastic", "sgbn"):
        text = (REPO / "src" / "neurorobust" / "mechanisms" / f"{name}.py").read_text()
        assert "__main__" not in text, name  # no script: the report is report/families/stochastic.py
        assert upward_imports(text, f"neurorobust.mechanisms.{name}") == []
        assert "data.search" not in text and "REPO_ROOT" not in text, name  # claims are the report's business


def _kubo_store_rows(store, tmp_path):
    """A tiny chapter-3 store: two seeds of REINFORCE-1CNN and 1CNN, an EOT/BPDA variant, a checklist verdict."""
    import json

    from neurorobust.store import ResultRow

    values = {  # (model, attack, eps) -> per-seed accuracy
        ("REINFORCE-1CNN", "clean", None): [0.91, 0.93],
        ("REINFORCE-1CNN", "fgsm-1draw", 0.09): [0.85, 0.88],
        ("REINFORCE-1CNN", "fgsm-1draw", 0.25): [0.6, 0.7],
        ("1CNN", "clean", None): [0.95, 0.94],
        ("1CNN", "fgsm-1draw", 0.25): [0.001, 0.0],
        ("1CNN dropout 50%", "fgsm-1draw", 0.25): [0.002],
        ("REINFORCE-1CNN [EOT/BPDA]", "fgsm", 0.25): [0.283],
    }
    (tmp_path / "checkpoints").mkdir()
    for seed in (0, 1):
        for i, label in enumerate(("REINFORCE-1CNN", "1CNN", "1CNN dropout 50%", "REINFORCE-1CNN [EOT/BPDA]")):
            rows = [
                ResultRow("stochastic_mnist", m, "mnist", a, "accuracy", v[seed], n=100, eps=e, seed=seed)
                for (m, a, e), v in values.items()
                if m == label and seed < len(v)
            ]
            if label.endswith("[EOT/BPDA]") and seed == 0:
                params = {"verdict": "masking suspected: incomplete-optimisation"}
                rows.append(
                    ResultRow(
                        "stochastic_mnist", label, "mnist", "checklist", "masking_suspected", 1.0, params=params, seed=0
                    )
                )
            if not rows:
                continue
            key = f"train-{i}-{seed}"
            meta = {"spec": {"seed": seed}, "history": [{"train_acc": 0.5}, {"train_acc": 0.9 + 0.02 * seed}]}
            (tmp_path / "checkpoints" / f"{key}.json").write_text(json.dumps(meta))
            store.record_run(
                "stochastic_mnist", "evaluate", spec={"label": label}, train_key=key, eval_key=None, rows=rows
            )
    return values


def test_stochastic_reporter_tables_show_the_store_rows_and_the_thesis_claims(store, tmp_path):
    from neurorobust.report.build import latest_rows
    from neurorobust.report.families import REPORTERS, ReportContext, reporters
    from neurorobust.report.families.stochastic import thesis_claims

    values = _kubo_store_rows(store, tmp_path)
    rows = latest_rows(store.results(experiment="stochastic_mnist", done_only=True))
    out = tmp_path / "report"
    ctx = ReportContext("stochastic_mnist", store, out, rows, runs_dir=tmp_path)
    reporter = REPORTERS.create("stochastic")
    assert any(r.name == "stochastic" for r in reporters()) and reporter.applies(ctx)
    for other in ("cerebellum_mnist", "no_such_experiment"):
        assert not reporter.applies(ReportContext(other, store, out, []))
    assert reporter.applies(ReportContext("stochastic_mnist_sgbn", store, out, []))
    items = reporter.items(ctx)
    tables = {title: payload for kind, title, payload in items if kind == "table"}
    header, body = tables["stochastic_mnist: chapter-3 networks (accuracy %, mean ± sd over seeds)"]
    table = {row[0]: dict(zip(header, row, strict=True)) for row in body}
    assert list(table) == ["REINFORCE-1CNN", "1CNN", "1CNN dropout 50%"]  # binary networks first, no EOT rows

    def shown(model, attack, eps):  # mean ± sample sd over the store's per-seed rows, in %
        per_seed = [
            r["value"]
            for r in store.results(experiment="stochastic_mnist", model=model, attack=attack)
            if r["eps"] == eps
        ]
        assert per_seed == values[(model, attack, eps)]
        mean = sum(per_seed) / len(per_seed)
        if len(per_seed) == 1:
            return f"{100 * mean:.1f}"
        sd = math.sqrt(sum((v - mean) ** 2 for v in per_seed) / (len(per_seed) - 1))
        return f"{100 * mean:.1f} ± {100 * sd:.1f}"

    reinforce = table["REINFORCE-1CNN"]
    assert reinforce["test acc"] == shown("REINFORCE-1CNN", "clean", None) == "92.0 ± 1.4"
    assert reinforce["FGSM 1 draw, eps .09"] == shown("REINFORCE-1CNN", "fgsm-1draw", 0.09)
    assert reinforce[".25"] == shown("REINFORCE-1CNN", "fgsm-1draw", 0.25) == "65.0 ± 7.1"
    assert reinforce["FGSM EOT/BPDA .25"] == shown("REINFORCE-1CNN [EOT/BPDA]", "fgsm", 0.25) == "28.3"
    assert reinforce["PGD-20 EOT/BPDA .25"] == "—" and reinforce[".13"] == "—"
    assert reinforce["checklist (seed 0)"] == "masking suspected: incomplete-optimisation"
    assert reinforce["train acc (last epoch)"] == "91.0 ± 1.4"  # last epoch's train_acc of both seeds' checkpoints
    assert table["1CNN"]["test acc"] == shown("1CNN", "clean", None)
    assert table["1CNN dropout 50%"][".25"] == shown("1CNN dropout 50%", "fgsm-1draw", 0.25) == "0.2"
    # the thesis' columns are the claims file's numbers for this experiment
    claims = {(c.model, c.attack, c.eps): c for _, c in thesis_claims("stochastic_mnist") if c.kind == "absolute"}
    clean = claims[("REINFORCE-1CNN", "clean", None)]
    assert reinforce["thesis test"] == f"{clean.value:g} ± {clean.sd:g}"
    fgsm = claims[("REINFORCE-1CNN", "fgsm-1draw", 0.25)]
    assert reinforce["thesis .25"] == f"{fgsm.value:g} ± {fgsm.sd:g}" and table["1CNN"]["thesis .25"] == "—"
    # the claims table with the rule applied at this scale
    (claims_title,) = [t for t in tables if t.startswith("Claims of the thesis")]
    head, claim_rows = tables[claims_title]
    by_id = {r[0]: dict(zip(head, r, strict=True)) for r in claim_rows}
    row = by_id["ch3-reinforce-1cnn-fgsm-0.25-tier"]
    assert row["verdict"] == "not comparable" and float(row["ours"]) == pytest.approx(65.0)
    assert row["rule applied at this scale"] == "not reproduced"  # |65 - 78.2| > max(2 * 2.4, 3)
    figures = [payload for kind, _, payload in items if kind == "figure"]
    assert figures == ["binary.png", "dropout.png", "l1.png", "l2.png"]
    assert all((out / f).is_file() for f in figures)


def test_stochastic_reporter_chapter_4_tables_and_figures(store, tmp_path):
    from neurorobust.report.build import latest_rows
    from neurorobust.report.families import REPORTERS, ReportContext
    from neurorobust.store import ResultRow

    sgbn, exp = "SGBN (reduced gate)", "stochastic_mnist_sgbn"
    values = {
        (sgbn, "clean", None): [0.96],
        (sgbn, "fgsm-1draw", 0.1): [0.5],
        (sgbn, "fgsm-1draw", 0.3): [0.07, 0.09],
        (sgbn, "bim-thesis-1draw", 0.1): [0.377],
        (sgbn, "ill-thesis-1draw", 0.1): [0.665],
        ("CNN", "fgsm-1draw", 0.3): [0.01],
        ("CNN", f"transfer from {sgbn} (1 draw)", 0.3): [0.279],
    }
    for seed in (0, 1):
        rows = [
            ResultRow(exp, m, "mnist", a, "accuracy", v[seed], n=100, eps=e, seed=seed)
            for (m, a, e), v in values.items()
            if seed < len(v)
        ]
        store.record_run(exp, "evaluate", spec={}, train_key=None, eval_key=None, rows=rows)
    rows = latest_rows(store.results(experiment=exp, done_only=True))
    ctx = ReportContext(exp, store, tmp_path, rows)
    items = REPORTERS.create("stochastic").items(ctx)
    tables = {title: payload for kind, title, payload in items if kind == "table"}
    header, body = tables[f"{exp}: Table 4.11 (accuracy %, mean ± sd over seeds)"]
    table = {row[0]: dict(zip(header, row, strict=True)) for row in body}
    assert list(table) == [sgbn, "CNN"]
    assert table[sgbn][".3 (thesis)"].startswith("8.0 ± 1.4 (")  # mean ± sd of 0.07 and 0.09
    assert table[sgbn]["FGSM 1 draw .1 (thesis)"].startswith("50.0 (")
    header, body = tables[f"{exp}: BIM and ILL, T = 10 (Fig. 4.4)"]
    (bim,) = body  # the one model with BIM rows
    assert dict(zip(header, bim, strict=True))["BIM as the thesis, 1 draw 0.1"] == "37.7"
    header, body = tables[f"{exp}: FGSM eps 0.3 transferred between models (Table 4.8; ours (thesis))"]
    assert {r[0]: r[1] for r in body}["CNN"] == "27.9 (—)"  # ours from SGBN (the thesis has no CNN target)
    figures = [payload for kind, _, payload in items if kind == "figure"]
    assert figures == ["fgsm_one_draw.png", "bim_one_draw.png", "ill_one_draw.png"]
    assert all((tmp_path / f).is_file() for f in figures)
