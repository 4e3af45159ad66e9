"""The pipeline through the CLI and the Python API: train (cached), evaluate, store, report."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import neurorobust
from conftest import REPO
from neurorobust.errors import InvalidParameterError
from neurorobust.report import build_report
from neurorobust.store import ResultsStore


def nr(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "NEURO_RUNS": str(cwd / "runs"), "NEURO_STORE": str(cwd / "results.db"), "COLUMNS": "200"}
    proc = subprocess.run(
        [sys.executable, "-m", "neurorobust.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"neurorobust {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_list_shows_every_registry(tmp_path):
    out = nr("list", "datasets", cwd=tmp_path).stdout
    for name in ("mnist", "fashion-mnist", "patches", "digits", "cifar10", "caltech10"):
        assert name in out
    out = nr("list", "models", cwd=tmp_path).stdout
    assert "cnn_mnist" in out and "sleep_mlp" in out and "kubo_2cnn" in out
    out = nr("list", "experiments", cwd=REPO).stdout
    assert "baseline_mnist_cnn" in out and "baseline_mnist_mlp" in out


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("this is = not [toml\n", "not valid TOML"),
        ('[data]\nname = "no-such-dataset"\n[train]\nepochs = -3\n', "unknown dataset 'no-such-dataset'"),
        (None, "spec file not found"),
    ],
)
def test_bad_specs_give_one_clear_error_and_no_traceback(tmp_path, content, match):
    spec = tmp_path / "bad.toml"
    if content is not None:
        spec.write_text(content)
    proc = nr("train", str(spec), cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert match in proc.stderr and "Traceback" not in proc.stderr + proc.stdout


def test_unknown_names_and_missing_store_are_clear_errors(tmp_path):
    proc = nr("data", "info", "mnsit", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "Did you mean 'mnist'" in proc.stderr and "Traceback" not in proc.stderr
    proc = nr("report", "nothing", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "No results store" in proc.stderr
    proc = nr("repro", "no_such_experiment", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "Known: " in proc.stderr


def test_train_caches_evaluate_stores_report_draws(tmp_path, tiny_spec_file):
    first = nr("train", str(tiny_spec_file), cwd=tmp_path).stdout
    assert "tiny: trained" in first
    second = nr("train", str(tiny_spec_file), cwd=tmp_path).stdout
    assert "tiny: loaded from cache" in second
    assert len(list((tmp_path / "runs" / "checkpoints").glob("*.safetensors"))) == 1
    forced = nr("train", str(tiny_spec_file), "--force", cwd=tmp_path).stdout
    assert "tiny: trained" in forced

    out = nr("evaluate", str(tiny_spec_file), cwd=tmp_path).stdout
    assert "clean" in out and "noise" in out and "blur" in out
    with ResultsStore(tmp_path / "results.db") as st:
        rows = st.results(experiment="tiny")
        clean = [r for r in rows if r["attack"] == "clean" and r["metric"] == "accuracy"]
        assert len(clean) == 1 and clean[0]["n"] == 200 and clean[0]["value"] > 0.8
        lo, hi = clean[0]["params"]["ci95"]
        assert lo < clean[0]["value"] < hi
        assert {r["attack"] for r in rows} == {"clean", "noise", "blur"}
        assert st.runs()[0]["code_version"]

    again = nr("evaluate", str(tiny_spec_file), cwd=tmp_path).stdout
    assert "cached results" in again

    nr("report", "tiny", "--figures-to", "docs_figures", cwd=tmp_path)
    folder = tmp_path / "reports" / "tiny"
    md = (folder / "report.md").read_text()
    assert (folder / "noise.png").read_bytes()[:4] == b"\x89PNG" and (folder / "blur.png").stat().st_size > 5000
    assert "<table>" in (folder / "index.html").read_text()
    # the numbers in the report are the store's: clean accuracy and every noise sigma, in %
    with ResultsStore(tmp_path / "results.db") as st:
        rows = st.results(experiment="tiny")
    clean_row = next(r for r in rows if r["attack"] == "clean")
    assert f"| {clean_row['model']} | {clean_row['dataset']} | {100 * clean_row['value']:.2f} |" in md
    noise = sorted((r for r in rows if r["attack"] == "noise"), key=lambda r: r["eps"])
    noise_section = md.split("### noise: accuracy (%) by sigma")[1].split("###")[0]
    noise_line = next(line for line in noise_section.splitlines() if line.startswith(f"| {clean_row['model']} |"))
    assert noise_line.split("|")[2:-1] == [f" {100 * r['value']:.2f} " for r in noise]
    # the docs' figures are the report's, copied under the experiment's name
    assert sorted(p.name for p in (tmp_path / "docs_figures").iterdir()) == ["tiny_blur.png", "tiny_noise.png"]


def test_api_evaluate_declare_and_nan(tmp_path):
    ds = neurorobust.data.load_dataset("digits")
    torch.manual_seed(0)
    model = neurorobust.models.create_model("mlp", input_shape=(1, 8, 8), widths=(16,))
    neurorobust.declare(model, stochastic=True, surrogate=torch.nn.Identity())
    assert model.is_stochastic and isinstance(model.bpda_surrogate(), torch.nn.Identity)
    rows = neurorobust.evaluate(
        model,
        ds,
        suite="none",
        n=50,
        noise_sigmas=[0.0],
        blur_sigmas=[],
        store=tmp_path / "r.db",
        experiment="api-test",
    ).rows
    assert rows[0].attack == "clean" and rows[0].n == 50
    with ResultsStore(tmp_path / "r.db") as st:
        assert len(st.results(experiment="api-test")) == len(rows)
        folder = build_report(st, "api-test", tmp_path / "reports")
        assert (folder / "report.md").exists()
    bad = ds.x_test.clone()
    bad[0, 0, 0, 0] = float("nan")
    broken = neurorobust.data.Dataset("digits", ds.x_train, ds.y_train, bad, ds.y_test, ds.info)
    with pytest.raises(InvalidParameterError, match="NaN"):
        neurorobust.evaluate(model, broken, suite="none", n=400)


def test_ctrl_c_stops_cleanly_with_a_hint(tmp_path):
    import signal
    import time

    spec = tmp_path / "long.toml"
    spec.write_text('[data]\nname = "digits"\n[model]\nname = "mlp"\n[train]\nepochs = 1000\nbatch_size = 8\n')
    env = {**os.environ, "NEURO_RUNS": str(tmp_path / "runs"), "NEURO_STORE": str(tmp_path / "r.db")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "neurorobust.cli", "train", str(spec)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a shell's background job (`make test &`, nohup) ignores SIGINT and its children inherit that, so
        # Python would never raise KeyboardInterrupt: give the child the terminal's default, as a user's has
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.time() + 120
        # the training lock is taken after the data are loaded (sklearn's digits: a lazy import that takes
        # seconds on a busy machine; a Ctrl-C inside a C extension's import is an ImportError, not ours)
        while not list((tmp_path / "runs").glob("checkpoints/*.lock")) and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()  # never leave a 1,000-epoch training behind on the cores
            proc.wait()
    assert proc.returncode == 130
    assert "interrupted" in err and "Traceback" not in out + err


def test_a_curve_of_a_sweeps_many_variants_keeps_its_legend_readable(tmp_path):
    """Thirty models: the legend goes beside the axes and the figure widens, instead of squashing the axes."""
    import warnings

    from PIL import Image

    from neurorobust.report.figures import curve_figure

    rows = [
        {
            "attack": "fgsm",
            "metric": "accuracy",
            "model": f"variant {m}",
            "eps": e,
            "value": 0.9 - e - m / 100,
            "params": {},
        }
        for m in range(30)
        for e in (0.1, 0.2, 0.3)
    ]
    few = [r for r in rows if r["model"] in {"variant 0", "variant 1"}]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib's "tight layout not applied" warning fails the test
        many_path = curve_figure(rows, "fgsm", tmp_path / "many.png")
        few_path = curve_figure(few, "fgsm", tmp_path / "few.png")
    assert many_path is not None and few_path is not None
    assert Image.open(many_path).size[0] > Image.open(few_path).size[0]


MODEL_FILE = """
import torch.nn as nn


def build_model():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))


def three_classes():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 3))


def raises():
    raise RuntimeError("no GPU here")
"""


def test_evaluate_a_users_model_file_with_weights_on_their_own_data(tmp_path):
    import numpy as np
    import torch.nn as tnn
    from safetensors.torch import save_file

    (tmp_path / "mine.py").write_text(MODEL_FILE)
    ds = neurorobust.data.load_dataset("digits")
    x = (ds.x_test[:40].numpy() * 255).astype(np.uint8)[:, 0]  # (N, H, W) uint8: the loader adds the channel
    np.savez(tmp_path / "mine.npz", x=x, y=ds.y_test[:40].numpy())
    from neurorobust.training import fit

    torch.manual_seed(0)
    trained = tnn.Sequential(tnn.Flatten(), tnn.Linear(64, 10))
    fit(trained, ds.x_train, ds.y_train, epochs=5, batch_size=64, lr=0.1, seed=0)
    save_file(trained.state_dict(), str(tmp_path / "w.safetensors"))

    args = ["--model", "mine.py:build_model", "--weights", "w.safetensors", "--data", "mine.npz"]
    out = nr("evaluate", *args, "--eps", "0.1", "--suite", "quick", "--n", "20", cwd=tmp_path).stdout
    assert "verdict:" in out and "worst-case robust accuracy eps=0.1" in out
    with ResultsStore(tmp_path / "results.db") as st:
        rows = st.results(experiment="user_mine_build_model")
    clean = next(r for r in rows if r["attack"] == "clean")
    # the weights were loaded: a trained linear read-out, not a fresh init at chance (~10%)
    assert clean["n"] == 20 and clean["value"] >= 0.7
    assert (tmp_path / "reports" / "user_mine_build_model" / "report.md").is_file()
    assert any(r["attack"] == "worst-case" and r["eps"] == 0.1 for r in rows)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "mine.py:nope", "--data", "digits"], "has no function 'nope'; callables there: build_model"),
        (["--model", "mine.py:three_classes", "--data", "digits"], r"must return logits of shape \(N, 10\)"),
        (["--model", "mine.py:raises", "--data", "digits"], "raised RuntimeError: no GPU here"),
        (["--model", "mine.py:build_model", "--data", "digits", "--weights", "w.pt"], "not a .safetensors file"),
        (["--model", "mine.py:build_model", "--data", "nothing.npz"], "no such file"),
        (["--model", "mine.py:build_model"], "--model needs --data"),
        (["--model", "mine.py", "--data", "digits"], "takes FILE.py:FUNCTION"),
    ],
)
def test_evaluate_model_refuses_bad_input_with_one_message(tmp_path, args, message):
    import re

    (tmp_path / "mine.py").write_text(MODEL_FILE)
    proc = nr("evaluate", *args, "--eps", "0.1", "--n", "20", cwd=tmp_path, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stdout + proc.stderr
    assert re.search(message, proc.stdout + proc.stderr), proc.stdout + proc.stderr


def test_user_data_is_checked_and_read_from_npz_arrays_or_image_folders(tmp_path):
    import numpy as np
    from PIL import Image

    from neurorobust.data.user import as_dataset, load_user_data
    from neurorobust.errors import DataError

    x = np.random.default_rng(0).random((6, 8, 8, 3)).astype(np.float32)  # channels last
    d = as_dataset((x, np.array([0, 1, 2, 0, 1, 2])))
    assert tuple(d.x_test.shape) == (6, 3, 8, 8) and d.num_classes == 3 and len(d.x_train) == 0
    for bad_x, bad_y, match in [
        (x * 2, [0, 1, 2, 0, 1, 2], r"must lie in \[0, 1\]"),
        (np.full((6, 8, 8), np.nan, np.float32), [0] * 6, "NaN"),
        (x, [0, 1], "one label per image"),
        (x, [0.5] * 6, "integer class labels"),
        (np.zeros((6, 8), np.float32), [0] * 6, "must be images"),
    ]:
        with pytest.raises(DataError, match=match):
            as_dataset((bad_x, np.asarray(bad_y)))
    for k, name in enumerate(("cat", "dog")):
        (tmp_path / "imgs" / name).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((5, 7), 40 * (k + i), np.uint8)).save(tmp_path / "imgs" / name / f"{i}.png")
    d = load_user_data(tmp_path / "imgs")
    assert d.classes == ("cat", "dog") and tuple(d.x_test.shape) == (4, 1, 5, 7)
    assert d.y_test.tolist() == [0, 0, 1, 1] and float(d.x_test[3].max()) == pytest.approx(80 / 255)
    Image.fromarray(np.zeros((9, 9), np.uint8)).save(tmp_path / "imgs" / "dog" / "big.png")
    with pytest.raises(DataError, match="differ in size"):
        load_user_data(tmp_path / "imgs")
