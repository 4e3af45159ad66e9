"""Registry, validation, models, specs, training loop, checkpoints, claims."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import REPO
from neurorobust.claims import Claim, judge, load_claims, ours_for
from neurorobust.errors import InvalidParameterError, SpecError, UnknownNameError
from neurorobust.models import MODELS, create_model
from neurorobust.registry import Registry
from neurorobust.specs import canonical_experiment, eval_key, load_spec, parse_spec, renamed_configs, train_key
from neurorobust.training import fit, loss_fn, lr_at
from neurorobust.validation import Interval, Options, validate_params


# -- registry and validation ------------------------------------------------------------------
def test_registry_rejects_duplicates_unknown_names_and_keys():
    reg = Registry("thing")

    @reg.register("alpha", defaults={"k": 2})
    def alpha(k: int = 1) -> int:
        """Alpha thing."""
        return k

    assert reg.create("alpha") == 2 and reg.create("alpha", k=5) == 5
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("alpha")(alpha)
    with pytest.raises(UnknownNameError, match="Did you mean 'alpha'"):
        reg.get("alpah")
    with pytest.raises(InvalidParameterError, match="The 'j' parameter of thing 'alpha' must be one of 'k'"):
        reg.create("alpha", j=1)


def test_validation_messages_follow_one_wording():
    with pytest.raises(InvalidParameterError, match=r"The 'k' parameter of Net must be an int in \[1, inf\)\. Got 0"):
        validate_params("Net", {"k": Interval(int, 1, None)}, {"k": 0})
    with pytest.raises(InvalidParameterError, match=r"must be 'ce' or 'mse'\. Got 'l1' instead"):
        validate_params("f", {"loss": Options(["ce", "mse"])}, {"loss": "l1"})
    with pytest.raises(InvalidParameterError):
        validate_params("f", {"p": Interval(float, 0, 1)}, {"p": float("nan")})
    validate_params("f", {"p": Interval(float, 0, 1)}, {"p": 1})


# -- models -----------------------------------------------------------------------------------
def _shape_for(name: str) -> tuple[int, int, int]:
    return (3, 32, 32) if "vgg" in name else (1, 28, 28)


@pytest.mark.parametrize("name", MODELS.names())
def test_every_model_maps_images_to_finite_logits(name):
    shape = _shape_for(name)
    x = torch.rand(3, *shape, generator=torch.Generator().manual_seed(1))
    outs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = create_model(name, input_shape=shape, num_classes=10).eval()
        outs.append(model(x))
    assert outs[0].shape == (3, 10) and torch.isfinite(outs[0]).all()
    assert torch.equal(outs[0], outs[1])


@pytest.mark.parametrize("name", MODELS.names())
def test_every_model_refuses_a_wrong_image_shape(name):
    model = create_model(name, input_shape=_shape_for(name))
    with pytest.raises(InvalidParameterError, match="must be a float tensor of shape"):
        model(torch.rand(2, 1, 7, 7))


@pytest.mark.parametrize("name", MODELS.names())
def test_every_model_refuses_one_bad_parameter_value(name):
    with pytest.raises(InvalidParameterError):
        create_model(name, input_shape=_shape_for(name), num_classes=1)


def test_sleep_mlp_is_as_coded():
    m = create_model("sleep_mlp")
    assert all(layer.bias is None for layer in m.layers)
    assert [tuple(layer.weight.shape) for layer in m.layers] == [(1200, 784), (1200, 1200), (10, 1200)]
    assert max(float(layer.weight.detach().abs().max()) for layer in m.layers) <= 0.01
    m.eval()
    x = torch.rand(4, 1, 28, 28)
    assert (m(x) >= 0).all()  # ReLU output
    # non-inverted dropout: test-time hidden activations are scaled by 0.8
    h = torch.relu(m.layers[0](x.flatten(1)))
    assert torch.allclose(m.hidden_activations(x)[0], 0.8 * h)


# -- specs ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["baseline_mnist_cnn", "baseline_mnist_mlp"])
def test_shipped_configs_validate(name):
    spec = load_spec(REPO / "configs" / f"{name}.toml")
    assert spec.name == name and spec.data.name == "mnist"
    full = load_spec(REPO / "configs" / f"{name}.toml", full=True)
    assert full.evaluate.suite == "full" and full.evaluate.n == 1000
    assert train_key(spec) == train_key(full) and eval_key(spec) != eval_key(full)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("this is = not [toml", "not valid TOML"),
        ('[data]\nname = "no-such-dataset"', r"data\.name: unknown dataset 'no-such-dataset'; allowed: .*mnist"),
        ("[train]\nepochs = -3", r"train\.epochs: Input should be greater than or equal to 0 \(got -3\)"),
        ("[evaluate]\neps = [0.1, 1.5]", r"evaluate\.eps: every eps must be in \[0, 1\]"),
        ('[model]\nname = "resnet9000"', r"model\.name: unknown model 'resnet9000'"),
        ("[train]\nepoch = 3", r"train\.epoch: unknown key; allowed keys here: optimizer, lr"),
        ('[train]\nepochs = "many"', r"train\.epochs: Input should be a valid integer"),
        ('[train]\noptimizer = "lbfgs"', r"train\.optimizer: Input should be 'sgd', 'adam' or 'rmsprop'"),
        ("colour = 3", r"colour: unknown key; allowed keys here: name, description"),
    ],
)
def test_bad_specs_stop_with_file_and_key(tmp_path, text, match):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(SpecError, match=match) as info:
        load_spec(path)
    assert str(path) in str(info.value)


def test_missing_spec_file(tmp_path):
    with pytest.raises(SpecError, match="spec file not found"):
        load_spec(tmp_path / "nope.toml")


@pytest.mark.parametrize("text", ["", "# only a comment\n"])
def test_an_empty_spec_is_refused_not_run_with_defaults(tmp_path, text):
    path = tmp_path / "empty.toml"
    path.write_text(text)
    with pytest.raises(SpecError, match="the spec is empty"):
        load_spec(path)


RENAMED = {
    "mnist_cnn": "baseline_mnist_cnn",
    "mnist_mlp": "baseline_mnist_mlp",
    "sweep_demo": "baseline_digits_sweep",
    "sgbn_mnist": "stochastic_mnist_sgbn",
    "sgbn_cifar10": "stochastic_cifar10_sgbn",
    "sleep_search_mnist": "sleep_mnist_search",
    "cerebellum_sweeps": "cerebellum_mnist_sweeps",
}


@pytest.mark.parametrize(("old", "new"), sorted(RENAMED.items()))
def test_an_old_config_name_loads_the_renamed_config_with_a_warning(old, new):
    with pytest.warns(FutureWarning, match=f"{old} is now called {new}"):
        spec = load_spec(REPO / "configs" / f"{old}.toml")
    assert spec == load_spec(REPO / "configs" / f"{new}.toml")  # same spec, stored under the new name
    assert canonical_experiment(old) == new and canonical_experiment(f"{old}_full") == f"{new}_full"


def test_config_names_follow_family_dataset_and_aliases_are_only_aliases():
    families = ("sleep", "hebbian", "stochastic", "cerebellum", "foveation", "advtrain", "baseline", "combo")
    assert renamed_configs(REPO / "configs") == RENAMED
    for path in (REPO / "configs").glob("*.toml"):
        if path.stem not in RENAMED:
            assert path.stem.split("_")[0] in families, f"{path.name}: name it <family>_<dataset>[_<variant>]"
    assert canonical_experiment("stochastic_mnist") == "stochastic_mnist"


def test_an_alias_config_holds_nothing_else(tmp_path):
    (tmp_path / "old.toml").write_text('renamed_to = "new"\nseed = 3\n')
    with pytest.raises(SpecError, match="an alias config holds only"):
        load_spec(tmp_path / "old.toml")


def test_old_claims_file_names_load_the_renamed_files_and_are_not_counted_twice():
    from neurorobust.claims import claims_paths

    stems = [p.stem for p in claims_paths(REPO / "claims")]
    assert stems == ["cerebellum", "foveation", "hebbian", "sleep", "stochastic"]
    for old, new in (("kubo", "stochastic"), ("holzhausen", "hebbian")):
        with pytest.warns(FutureWarning, match=f"{old}.toml is now {new}.toml"):
            assert load_claims(REPO / "claims" / f"{old}.toml") == load_claims(REPO / "claims" / f"{new}.toml")


def test_train_key_ignores_evaluation_and_data_dir():
    a = parse_spec({"data": {"name": "digits"}})
    b = parse_spec({"data": {"name": "digits", "data_dir": "/x"}, "evaluate": {"n": 7}})
    c = parse_spec({"data": {"name": "digits"}, "train": {"epochs": 9}})
    assert train_key(a) == train_key(b) != train_key(c)
    assert eval_key(a) != eval_key(b)


def test_a_bumped_registry_version_changes_only_that_entrys_train_key():
    from dataclasses import replace

    from neurorobust.models import MODELS

    spec = parse_spec({"data": {"name": "digits"}, "model": {"name": "mlp"}})
    other = parse_spec({"data": {"name": "digits"}, "model": {"name": "cnn_mnist"}})
    before, other_before = train_key(spec), train_key(other)
    entry = MODELS._entries["mlp"]
    MODELS._entries["mlp"] = replace(entry, version=2)
    try:
        assert train_key(spec) != before
        assert train_key(other) == other_before
    finally:
        MODELS._entries["mlp"] = entry
    assert train_key(spec) == before


# -- training ---------------------------------------------------------------------------------
def test_lr_schedules_are_pure_functions():
    assert lr_at(5, base=0.1, epochs=10, schedule="constant") == 0.1
    assert lr_at(5, base=0.1, epochs=10, schedule="step", milestones=[3, 5, 8]) == pytest.approx(0.001)
    assert lr_at(5, base=0.1, epochs=10, schedule="cosine") == pytest.approx(0.05)
    assert lr_at(5, base=0.02, epochs=10, schedule="linear") == pytest.approx(0.01)


def test_loss_functions_match_their_formulas():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    y = torch.tensor([0])
    assert loss_fn(logits, y, "mse") == pytest.approx(((1 - 2.0) ** 2 + 0 + 1) / 3)
    assert loss_fn(logits, y, "mse-sum") == pytest.approx(0.5 * 2)
    assert loss_fn(logits, y, "ce") == pytest.approx(-math.log(math.exp(2) / (math.exp(2) + 1 + math.exp(-1))))


def test_fit_learns_digits_and_is_seeded():
    from neurorobust.data import load_dataset

    ds = load_dataset("digits")
    results = []
    for _ in range(2):
        torch.manual_seed(1)
        model = create_model("mlp", input_shape=(1, 8, 8), widths=(64,))
        model, hist = fit(
            model, ds.x_train, ds.y_train, lr=0.01, epochs=5, batch_size=64, seed=3, x_val=ds.x_test, y_val=ds.y_test
        )
        results.append(hist.final)
    assert results[0]["val_acc"] > 0.9
    assert results[0] == {**results[1], "seconds": results[0]["seconds"]}


def test_fit_refuses_nan_and_bad_parameters():
    model = create_model("mlp", input_shape=(1, 8, 8), widths=(8,))
    x = torch.rand(10, 1, 8, 8)
    x[3, 0, 2, 2] = float("nan")
    with pytest.raises(InvalidParameterError, match="finite values"):
        fit(model, x, torch.zeros(10, dtype=torch.long))
    with pytest.raises(InvalidParameterError, match="The 'epochs' parameter of fit"):
        fit(model, torch.rand(10, 1, 8, 8), torch.zeros(10, dtype=torch.long), epochs=-1)


def test_augment_batch_crops_and_flips_within_the_padded_image():
    from neurorobust.training import augment_batch

    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(augment_batch(x, "none", g), x)
    flips = [augment_batch(x, "flip", g) for _ in range(20)]
    assert all(torch.equal(f[i], x[i]) or torch.equal(f[i], x[i].flip(2)) for f in flips for i in range(2))
    assert any(not torch.equal(f, x) for f in flips)
    for _ in range(20):  # pad 1 on an 8-pixel image: every crop is the image shifted by at most 1 pixel
        out = augment_batch(x, "crop-flip", g)
        assert out.shape == x.shape
        for i in range(2):
            shifts = [
                torch.nn.functional.pad(x[i], (1, 1, 1, 1))[:, r : r + 8, c : c + 8] for r in range(3) for c in range(3)
            ]
            assert any(torch.equal(out[i], s) or torch.equal(out[i], s.flip(2)) for s in shifts)
    with pytest.raises(InvalidParameterError, match="augment"):
        augment_batch(x, "rotate", g)


def test_fit_calls_the_model_epoch_hook_and_adds_its_penalty():
    class Hooked(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 2)
            self.epochs_seen: list[int] = []

        def forward(self, x):
            return self.lin(x.flatten(1))

        def on_epoch_start(self, x, epoch):
            self.epochs_seen.append(epoch)

        def training_penalty(self, x, logits):
            return 100.0 * self.lin.weight.pow(2).sum()  # pulls every weight to zero

    torch.manual_seed(0)
    model = Hooked()
    x, y = torch.rand(32, 1, 2, 2), torch.randint(0, 2, (32,))
    fit(model, x, y, epochs=3, optimizer="sgd", momentum=0.0, lr=0.004, batch_size=8)
    assert model.epochs_seen == [0, 1, 2]
    assert float(model.lin.weight.abs().max()) < 0.05


@pytest.mark.slow
def test_cnn_one_epoch_reaches_97_percent_on_mnist():
    from neurorobust.data import load_dataset
    from neurorobust.training import predict_logits

    ds = load_dataset("mnist")
    torch.manual_seed(0)
    model, _ = fit(create_model("cnn_mnist"), ds.x_train, ds.y_train, epochs=1, batch_size=128, seed=0)
    acc = float((predict_logits(model, ds.x_test).argmax(1) == ds.y_test).float().mean())
    assert acc >= 0.97


# -- claims -----------------------------------------------------------------------------------
def test_a_claim_our_run_cannot_judge_says_not_judged_with_its_reason(tmp_path):
    from neurorobust.report.build import claims_table

    why = "control: the standard network was trained with a weaker recipe than the defence"
    kw = {"table": "T1", "dataset": "mnist", "metric": "accuracy", "experiment": "e", "model": "d"}
    direction = Claim(id="d", kind="direction", value=1.7, baseline_model="s", not_judged=why, **kw)
    absolute = Claim(id="a", value=40.0, not_judged=why, **kw)
    assert judge(direction, 70.0, 48.0).verdict == "not judged" and judge(direction, 70.0, 48.0).ours > 1.4
    assert judge(absolute, 40.0).verdict == "not judged"  # even when the number matches
    assert judge(absolute, None).verdict == "not run"
    # the shipped foveation claims against the Adam-trained control carry their reason into the report
    from neurorobust.claims import load_claims

    fov = {c.id: c for c in load_claims(REPO / "claims" / "foveation.toml").claims}
    assert fov["retinal-beats-standard-0.01"].not_judged.startswith("control:")
    row = {"experiment": "e", "dataset": "mnist", "metric": "accuracy", "attack": "clean", "eps": None, "params": {}}
    (tmp_path / "x.toml").write_text(
        'paper = "P"\nseed = "s"\n[[claims]]\nid = "a"\ntable = "T1"\ndataset = "mnist"\nmetric = "accuracy"\n'
        f'value = 40.0\nexperiment = "e"\nmodel = "d"\nnot_judged = "{why}"\n'
    )
    _, body = claims_table("e", [{**row, "model": "d", "value": 0.4, "run_id": 1}], claims_dir=tmp_path)
    assert body[0][8] == "not judged" and body[0][9] == f"not judged: {why}"


def test_claim_verdict_rules():
    c = Claim(id="a", table="T2", dataset="mnist", metric="accuracy", value=36.8, sd=2.0)
    assert judge(c, 40.7).verdict == "reproduced"  # within max(2 sd = 4, 3 points)
    assert judge(c, 41.0).verdict == "not reproduced"
    assert judge(c, None).verdict == "not run"
    nc = Claim(
        id="b",
        table="T1",
        dataset="caltech10",
        metric="accuracy",
        value=80.0,
        comparable=False,
        reason="ImageNet10 stand-in",
    )
    assert judge(nc, 80.0).verdict == "not comparable"
    q = Claim(id="q", table="abstract", dataset="cifar10", metric="alpha", kind="qualitative")
    assert judge(q, 1.0).verdict == "not judged"
    rel = Claim(
        id="r",
        table="T3",
        dataset="mnist",
        metric="median_min_eps",
        kind="relative",
        value=2.0,
        baseline_model="control",
        unit="raw",
    )
    assert judge(rel, 0.21, baseline=0.1).verdict == "reproduced"  # ratio 2.1: within 25% of 2
    assert judge(rel, 0.26, baseline=0.1).verdict == "not reproduced"
    assert judge(rel, 0.09, baseline=0.1).verdict == "not reproduced"  # wrong direction
    raw = Claim(id="s", table="T", dataset="mnist", metric="score", value=10.0, unit="raw")
    assert judge(raw, 10.29).verdict == "reproduced" and judge(raw, 10.31).verdict == "not reproduced"


def test_claims_file_loader_and_lookup(tmp_path):
    path = tmp_path / "paper.toml"
    path.write_text(
        'paper = "P"\nseed = "003"\n[[claims]]\nid = "x"\ntable = "Table 2"\ndataset = "mnist"\n'
        'metric = "accuracy"\nattack = "fgsm"\neps = 0.1\nvalue = 36.8\nexperiment = "e"\nmodel = "m"\n'
    )
    cf = load_claims(path)
    rows = [
        {
            "experiment": "e",
            "model": "m",
            "metric": "accuracy",
            "attack": "fgsm",
            "dataset": "mnist",
            "eps": 0.1,
            "value": 0.37,
            "run_id": 1,
        }
    ]
    assert ours_for(cf.claims[0], rows) == pytest.approx(37.0)
    path.write_text(
        'paper = "P"\nseed = "1"\n[[claims]]\nid = "x"\ntable = "T"\ndataset = "d"\nmetric = "m"\n'
        "comparable = false\nvalue = 1.0\n"
    )
    with pytest.raises(SpecError, match="say why a claim is not comparable"):
        load_claims(path)


def test_report_puts_claims_next_to_our_numbers(tmp_path):
    from neurorobust.report.build import claims_table

    (tmp_path / "paper.toml").write_text(
        'paper = "P"\nseed = "003"\n'
        '[[claims]]\nid = "a"\ntable = "Table 2"\nrow = "Base"\ndataset = "mnist"\nmetric = "accuracy"\n'
        'attack = "fgsm"\neps = 0.1\nvalue = 36.8\nexperiment = "e"\nmodel = "base"\n'
        '[[claims]]\nid = "b"\ntable = "Table 2"\ndataset = "mnist"\nmetric = "accuracy"\nattack = "pgd"\n'
        'eps = 0.1\nvalue = 14.8\nexperiment = "e"\nmodel = "base"\n'
        '[[claims]]\nid = "other"\ntable = "T"\ndataset = "mnist"\nmetric = "accuracy"\nvalue = 1.0\n'
        'experiment = "not-this-one"\n'
    )
    rows = [
        {
            "experiment": "e",
            "model": "base",
            "metric": "accuracy",
            "attack": "fgsm",
            "dataset": "mnist",
            "eps": 0.1,
            "value": 0.38,
            "run_id": 3,
        }
    ]
    _, body = claims_table("e", rows, tmp_path)
    assert [b[0] for b in body] == ["paper:a", "paper:b"]
    assert body[0][7] == "38" and body[0][8] == "reproduced"
    assert body[1][8] == "not run"
    assert claims_table("nothing", rows, tmp_path) is None


def test_relative_and_direction_claims():
    from neurorobust.claims import Claim, judge

    def claim(kind, value):
        return Claim(id="x", table="T1", dataset="mnist", metric="m", kind=kind, value=value, baseline_model="c")

    assert judge(claim("relative", 2.0), 0.2, 0.1).verdict == "reproduced"
    assert judge(claim("relative", 2.0), 0.3, 0.1).verdict == "not reproduced"  # ratio 3 is not "about 2"
    assert judge(claim("relative", 1.0), 0.11, 0.1).verdict == "reproduced"  # "no better than": within 25% of 1
    assert judge(claim("relative", 1.0), 0.2, 0.1).verdict == "not reproduced"
    assert judge(claim("direction", 2.0), 0.5, 0.1).verdict == "reproduced"  # any increase
    assert judge(claim("direction", 2.0), 0.09, 0.1).verdict == "not reproduced"
    assert judge(claim("direction", 0.5), 0.09, 0.1).verdict == "reproduced"
    with pytest.raises(ValueError, match="direction"):
        claim("direction", 1.0)


def test_eval_mode_restores_each_module_own_mode():
    """A model that keeps one dropout layer in train mode on purpose (MC dropout) comes back unchanged."""
    from neurorobust.attacks import ATTACKS
    from neurorobust.training import predict_logits

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10), torch.nn.Dropout(0.5))
    model.eval()
    model[2].train()
    x, y = torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.long)
    predict_logits(model, x)
    ATTACKS.create("pgd", steps=2)(model, x, y, eps=0.1)
    assert [m.training for m in model.modules()] == [False, False, False, True]
