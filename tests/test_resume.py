"""Resumable training: a run killed mid-epoch goes on from its last save to the weights of an
uninterrupted run, bit for bit on CPU; a finished run is never trained again; estimates train nothing."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file, save_file

from neurorobust.data import balanced_subset, load_dataset
from neurorobust.models import create_model
from neurorobust.training import fit
from neurorobust.training.checkpoint import checkpoint_paths, partial_state_path

SETTINGS = {"epochs": 3, "batch_size": 64, "lr": 1e-3, "seed": 7}


@pytest.fixture
def mnist_512():
    """512 real MNIST training images, class-balanced."""
    data = load_dataset("mnist")
    idx = balanced_subset(data.y_train, 512, seed=0)
    return data.x_train[idx].clone(), data.y_train[idx].clone()


def fresh_model() -> torch.nn.Module:
    # dropout draws from the global generator: the resumed run must restore it, not just the loop's own
    torch.manual_seed(0)
    return create_model("mlp", input_shape=(1, 28, 28), num_classes=10, widths=[64], dropout=0.2)


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


class Interrupt:
    """A progress hook that raises KeyboardInterrupt (Ctrl-C) after training step ``step`` of epoch ``epoch``."""

    def __init__(self, epoch: int, step: int) -> None:
        self.epoch, self.step = epoch, step

    def __call__(self, event: dict) -> None:
        if event["stage"] == "train" and (event["epoch"], event["step"]) == (self.epoch, self.step):
            raise KeyboardInterrupt


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"augment": "flip", "adversarial": {"method": "pgd", "eps": 0.1, "steps": 2}, "schedule": "cosine"},
        {"adversarial": {"method": "fgsm-rs", "eps": 0.1, "check_n": 64}},  # its held-out check keeps state too
    ],
    ids=["dropout", "pgd-at+flip+cosine", "fgsm-rs"],
)
def test_a_run_interrupted_mid_epoch_resumes_to_the_uninterrupted_weights(tmp_path, one_thread, mnist_512, extra):
    x, y = mnist_512
    reference, _ = fit(fresh_model(), x, y, **SETTINGS, **extra)
    expected = weights(reference)

    state = tmp_path / "run.partial.pt"
    with pytest.raises(KeyboardInterrupt):  # stopped after step 3 of epoch 2
        fit(fresh_model(), x, y, **SETTINGS, **extra, resume_path=state, save_every_s=0, progress=Interrupt(2, 3))
    assert state.is_file()
    torch.manual_seed(12345)  # whatever the global generator holds now, the resumed run restores its own
    model, history = fit(fresh_model(), x, y, **SETTINGS, **extra, resume_path=state, save_every_s=0)

    assert history.resumed.startswith("epoch 2, step 4 of ")  # 8 steps; 7 when fgsm-rs holds 64 images out
    assert [r["epoch"] for r in history.epochs] == [1, 2, 3]
    assert_same_weights(weights(model), expected)


@pytest.mark.parametrize(
    "params",
    [
        {"regulariser": "spectral", "strength": 1.0},  # its eigenbasis (on_epoch_start) is not in the state dict
        {"regulariser": "jacobian", "strength": 0.1},  # its projections come from a generator the model keeps
    ],
    ids=["spectral", "jacobian"],
)
def test_a_regularised_model_resumes_mid_epoch_to_the_uninterrupted_weights(tmp_path, one_thread, mnist_512, params):
    x, y = mnist_512

    def shlp() -> torch.nn.Module:
        torch.manual_seed(0)
        return create_model("shlp", hidden=128, **params)

    expected = weights(fit(shlp(), x, y, **SETTINGS)[0])
    state = tmp_path / "run.partial.pt"
    with pytest.raises(KeyboardInterrupt):
        fit(shlp(), x, y, **SETTINGS, resume_path=state, save_every_s=0, progress=Interrupt(2, 3))
    model, history = fit(shlp(), x, y, **SETTINGS, resume_path=state, save_every_s=0)
    assert history.resumed == "epoch 2, step 4 of 8"
    assert_same_weights(weights(model), expected)


def test_a_run_resumes_from_its_last_epoch_when_no_mid_epoch_save_was_due(tmp_path, one_thread, mnist_512):
    x, y = mnist_512
    expected = weights(fit(fresh_model(), x, y, **SETTINGS)[0])
    state = tmp_path / "run.partial.pt"
    with pytest.raises(KeyboardInterrupt):
        fit(fresh_model(), x, y, **SETTINGS, resume_path=state, save_every_s=3600, progress=Interrupt(2, 5))
    model, history = fit(fresh_model(), x, y, **SETTINGS, resume_path=state)
    assert history.resumed == "epoch 2, step 1"  # the 5 steps of epoch 2 were lost, as promised: no more
    assert_same_weights(weights(model), expected)


def test_a_finished_state_is_loaded_and_not_trained_again(tmp_path, one_thread, mnist_512):
    x, y = mnist_512
    state = tmp_path / "run.partial.pt"
    trained, first = fit(fresh_model(), x, y, **SETTINGS, resume_path=state)
    steps: list[dict] = []
    again, history = fit(fresh_model(), x, y, **SETTINGS, resume_path=state, progress=steps.append)
    assert not [e for e in steps if e["stage"] == "train"]
    assert history.resumed == "finished after epoch 3" and history.epochs == first.epochs
    assert_same_weights(weights(again), weights(trained))


def test_a_state_written_with_other_settings_is_ignored_with_a_warning(tmp_path, one_thread, mnist_512, caplog):
    x, y = mnist_512
    state = tmp_path / "run.partial.pt"
    fit(fresh_model(), x, y, **{**SETTINGS, "epochs": 1}, resume_path=state)
    expected = weights(fit(fresh_model(), x, y, **{**SETTINGS, "lr": 1e-2})[0])
    with caplog.at_level(logging.WARNING, logger="neurorobust.training.loop"):
        model, history = fit(fresh_model(), x, y, **{**SETTINGS, "lr": 1e-2}, resume_path=state)
    assert "other settings or data" in caplog.text and history.resumed == ""
    assert_same_weights(weights(model), expected)


def test_a_process_killed_with_sigkill_resumes_to_the_uninterrupted_weights(tmp_path, one_thread, mnist_512):
    x, y = mnist_512
    expected = weights(fit(fresh_model(), x, y, **SETTINGS)[0])
    save_file({"x": x.contiguous(), "y": y.contiguous()}, str(tmp_path / "data.safetensors"))
    state = tmp_path / "run.partial.pt"
    script = textwrap.dedent(
        f"""
        import os, signal, torch
        from safetensors.torch import load_file
        from neurorobust.models import create_model
        from neurorobust.training import fit
        torch.set_num_threads(1)
        data = load_file({str(tmp_path / "data.safetensors")!r})
        torch.manual_seed(0)
        model = create_model("mlp", input_shape=(1, 28, 28), num_classes=10, widths=[64], dropout=0.2)
        def kill(event):  # kill -9 in the middle of epoch 2, after step 5's save
            if event["stage"] == "train" and (event["epoch"], event["step"]) == (2, 5):
                os.kill(os.getpid(), signal.SIGKILL)
        fit(model, data["x"], data["y"], **{SETTINGS!r}, resume_path={str(state)!r}, save_every_s=0, progress=kill)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    assert not list(tmp_path.glob("*.tmp"))  # the atomic write left no half file behind
    model, history = fit(fresh_model(), x, y, **SETTINGS, resume_path=state, save_every_s=0)
    assert history.resumed == "epoch 2, step 6 of 8"
    assert_same_weights(weights(model), expected)


def test_the_runner_resumes_an_interrupted_run_and_never_trains_a_finished_one(
    tmp_path, one_thread, tiny_spec_file, monkeypatch
):
    from neurorobust.experiments import runner
    from neurorobust.specs import load_spec, train_key

    spec = load_spec(tiny_spec_file)
    data = load_dataset(spec.data.name)
    key = train_key(spec)
    reference, _, _ = runner.train_stage(spec, data, runs_dir=tmp_path / "uninterrupted")

    def stop_after_epoch_1(event: dict) -> None:
        if event["stage"] == "epoch" and event["epoch"] == 1:  # the epoch's state is saved before this event
            raise KeyboardInterrupt

    runs = tmp_path / "runs"
    folder = runs / "checkpoints"
    with pytest.raises(KeyboardInterrupt):
        runner.train_stage(spec, data, runs_dir=runs, progress=stop_after_epoch_1)
    assert partial_state_path(folder, key).is_file() and not checkpoint_paths(folder, key)[0].exists()

    model, meta, cached = runner.train_stage(spec, data, runs_dir=runs)
    assert not cached and meta["train_key"] == key == train_key(spec)  # resuming leaves the key as it was
    assert not partial_state_path(folder, key).exists()  # deleted once the checkpoint is written
    assert_same_weights(weights(model), weights(reference))
    assert [r["epoch"] for r in meta["history"]] == [1, 2, 3]

    # a finished run is loaded: fit is never called, the checkpoint is not rewritten
    stamp = os.stat(checkpoint_paths(folder, key)[0]).st_mtime_ns

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(runner, "fit", no_training)
    again, _, cached = runner.train_stage(spec, data, runs_dir=runs)
    assert cached and os.stat(checkpoint_paths(folder, key)[0]).st_mtime_ns == stamp
    assert_same_weights(weights(again), weights(reference))
    assert_same_weights(load_file(str(checkpoint_paths(folder, key)[0])), weights(reference))


def test_repro_estimate_times_every_planned_run_and_writes_no_model(tmp_path, tiny_spec_file):
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "tiny.toml").write_text(tiny_spec_file.read_text())
    env = {**os.environ, "NEURO_RUNS": str(tmp_path / "runs"), "NEURO_STORE": str(tmp_path / "r.db"), "COLUMNS": "200"}
    cli = [sys.executable, "-m", "neurorobust.cli"]
    proc = subprocess.run(
        [*cli, "repro", "tiny", "--estimate"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    steps = 3 * -(-len(load_dataset("digits").y_train) // 64)  # 3 epochs of batches of 64
    assert f"{steps:,}" in proc.stdout and "total training:" in proc.stdout
    assert "evaluation: not estimated" in proc.stdout
    # nothing trained to the end, saved or stored: only the cached totals for `list experiments`
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.parent != configs and p != tiny_spec_file]
    assert [p.relative_to(tmp_path).as_posix() for p in written] == ["runs/estimates.json"]
    listing = subprocess.run(
        [*cli, "list", "experiments"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert "est." in listing.stdout and "not measured" in listing.stdout  # the FULL tier was not estimated


def test_list_experiments_shows_the_measured_time_of_finished_runs(tmp_path, one_thread, tiny_spec_file):
    from neurorobust.experiments.estimate import tier_times
    from neurorobust.experiments.runner import run_experiment
    from neurorobust.specs import load_spec
    from neurorobust.store import ResultsStore

    assert tier_times([tiny_spec_file], store_path=tmp_path / "none.db", runs_dir=tmp_path)["tiny"] == {
        "default": "not measured",
        "full": "not measured",
    }
    with ResultsStore(tmp_path / "r.db") as st:
        run_experiment(load_spec(tiny_spec_file), store=st, runs_dir=tmp_path / "runs")
    times = tier_times([tiny_spec_file], store_path=tmp_path / "r.db", runs_dir=tmp_path / "runs")["tiny"]
    assert times["default"].endswith(" measured")
    # the FULL tier has no [full] table here: the same runs, so the same measured time
    assert times["full"] == times["default"]
