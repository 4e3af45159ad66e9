"""Sweeps on the local and Ray backends, resumable from the store, and the leaderboard (also in a real browser)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from neurorobust.errors import SpecError
from neurorobust.experiments.sweep import expand_sweep, run_sweep, sample_space
from neurorobust.report.leaderboard import COLUMNS, leaderboard_rows, write_leaderboard
from neurorobust.specs import load_spec, parse_spec
from neurorobust.store import ResultsStore

TINY = """
description = "tiny sweep"
[data]
name = "digits"
[model]
name = "mlp"
params = { widths = [16] }
[train]
epochs = 3
batch_size = 64
lr = 0.02
[evaluate]
suite = "quick"
n = 60
check_n = 30
eps = [0.1]
noise_sigmas = [0.0]
blur_sigmas = []
[sweep]
seeds = [0, 1]
grid = { "model.params.widths" = [[8], [16]], "train.lr" = [0.01, 0.03] }
"""


@pytest.fixture
def tiny_sweep(tmp_path):
    path = tmp_path / "tiny_sweep.toml"
    path.write_text(TINY)
    return path


def _row_sets(store: ResultsStore) -> dict:
    """(model, seed) -> sorted (attack, metric, eps, value) of the done runs."""
    out: dict = {}
    for run in store.runs(status="done"):
        rows = store.results(run_id=run["id"])
        key = (rows[0]["model"], rows[0]["seed"])
        assert key not in out, f"duplicate run for {key}"
        out[key] = sorted((r["attack"], r["metric"], r["eps"] or 0.0, round(r["value"] or 0.0, 6)) for r in rows)
    return out


def test_grid_expansion_labels_and_seeds(tiny_sweep):
    variants = expand_sweep(load_spec(tiny_sweep))
    assert len(variants) == 8
    labels = {v.spec.label for v in variants}
    assert labels == {f"mlp[widths={w},lr={lr}]" for w in (8, 16) for lr in (0.01, 0.03)}
    assert sorted({v.spec.seed for v in variants}) == [0, 1]
    assert len({v.eval_key for v in variants}) == 8
    assert all(v.spec.sweep is None for v in variants)


@pytest.mark.parametrize(
    ("sweep", "match"),
    [
        ('[sweep]\ngrid = { "train.lr" = [] }', "grid values must be non-empty"),
        ("[sweep]\nseeds = [1, 1]", "distinct"),
        ('[sweep.search]\nspace = { "train.lr" = { low = 0.1, high = 0.01 } }', "'low' must be below 'high'"),
        ('[sweep.search]\nspace = { "train.lr" = { low = 0.0, high = 0.1, log = true } }', "log range needs low > 0"),
        ('[sweep.search]\nspace = { "train.lr" = { low = 0.01 } }', "needs 'low' and 'high'"),
        ('[sweep.search]\nspace = { "train.lr" = { low = 0.01, high = 0.1 } }', "never on the test split"),
    ],
)
def test_bad_sweeps_are_clear_errors(tmp_path, sweep, match):
    path = tmp_path / "bad.toml"
    path.write_text('[data]\nname = "digits"\n' + sweep + "\n")
    with pytest.raises(SpecError, match=match):
        load_spec(path)


def test_a_grid_value_that_makes_a_bad_spec_names_the_variant(tmp_path):
    spec = parse_spec({"data": {"name": "digits"}, "sweep": {"grid": {"train.epochs": [1, -2]}}})
    with pytest.raises(SpecError, match=r"(?s)sweep variant \{'train.epochs': -2\}.*train\.epochs"):
        expand_sweep(spec)


def test_random_search_samples_are_seeded_and_in_range():
    spec = parse_spec(
        {
            "data": {"name": "digits", "validation": 200},
            "evaluate": {"split": "val"},
            "sweep": {
                "search": {
                    "samples": 5,
                    "space": {
                        "train.lr": {"low": 1e-3, "high": 1e-1, "log": True},
                        "train.optimizer": {"choices": ["adam", "sgd"]},
                    },
                }
            },
        }
    )
    variants = expand_sweep(spec)
    assert len(variants) == 5
    lrs = [v.spec.train.lr for v in variants]
    assert all(1e-3 <= lr <= 1e-1 for lr in lrs) and len(set(lrs)) == 5
    assert sample_space(spec.sweep.search.space, 5, 0) == sample_space(spec.sweep.search.space, 5, 0)
    assert all(v.spec.evaluate.split == "val" for v in variants)


def test_local_sweep_runs_each_variant_once_and_resumes(tiny_sweep, tmp_path):
    spec = load_spec(tiny_sweep)
    with ResultsStore(tmp_path / "r.db") as st:
        report = run_sweep(spec, store=st, backend="local", workers=2, runs_dir=tmp_path / "runs")
        assert (report.total, report.done, report.failed) == (8, 8, 0)
        sets = _row_sets(st)
        assert len(sets) == 8
        again = run_sweep(spec, store=st, backend="local", workers=2, runs_dir=tmp_path / "runs")
        assert (again.skipped, again.done) == (8, 0)
        assert _row_sets(st) == sets
        board = leaderboard_rows(st)
        assert len(board) == 4 and {b["seeds"] for b in board} == {2}
        for b in board:  # leaderboard numbers are the store's
            clean = [r["value"] for r in st.results(model=b["defence"], attack="clean", metric="accuracy")]
            assert b["clean acc (%)"] == pytest.approx(100 * sum(clean) / len(clean), abs=0.01)


def test_a_failed_run_is_recorded_and_the_sweep_goes_on(tmp_path):
    spec = parse_spec(
        {
            "name": "failing",
            "data": {"name": "digits"},
            "model": {"name": "mlp", "params": {"widths": [8]}},
            "train": {"epochs": 1},
            "evaluate": {"suite": "none", "n": 50, "noise_sigmas": [0.0], "blur_sigmas": []},
            # a width of 0 is refused by the model when the worker builds it
            "sweep": {"grid": {"model.params.widths": [[8], [0]]}},
        }
    )
    with ResultsStore(tmp_path / "r.db") as st:
        report = run_sweep(spec, store=st, backend="local", workers=1, runs_dir=tmp_path / "runs")
        assert (report.done, report.failed) == (1, 1)
        (failed,) = st.runs(status="failed")
        assert "InvalidParameterError" in failed["message"] and "widths" in failed["message"]
        assert st.results(run_id=failed["id"]) == []


def test_sweep_killed_part_way_resumes_without_duplicates_or_losses(tiny_sweep, tmp_path):
    env = {**os.environ, "NEURO_STORE": str(tmp_path / "r.db"), "NEURO_RUNS": str(tmp_path / "runs")}
    cmd = [sys.executable, "-m", "neurorobust.cli", "sweep", str(tiny_sweep), "--workers", "2"]
    proc = subprocess.Popen(
        cmd, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 240
    done = 0
    while time.time() < deadline and done < 3:
        time.sleep(0.5)
        if (tmp_path / "r.db").exists():
            with ResultsStore(tmp_path / "r.db") as st:
                done = len(st.runs(status="done"))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 3 <= done < 8, f"could not kill the sweep part-way ({done} runs done)"
    with ResultsStore(tmp_path / "r.db") as st:
        before = _row_sets(st)
    out = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "already in the store" in out.stdout
    with ResultsStore(tmp_path / "r.db") as st:
        after = _row_sets(st)
        assert len(st.runs(status="done")) == 8
    assert len(after) == 8
    assert all(after[k] == v for k, v in before.items())  # nothing lost or rewritten


def _pool_workers(pid: int) -> set[int]:
    """Children of ``pid`` that are pool workers (not multiprocessing's resource tracker), from /proc."""
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we looked
        if ppid == pid and b"resource_tracker" not in cmdline:
            out.add(int(stat.parent.name))
    return out


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_workers_of_a_sweep_stopped_with_sigterm_exit_with_it(tiny_sweep, tmp_path):
    env = {**os.environ, "NEURO_STORE": str(tmp_path / "r.db"), "NEURO_RUNS": str(tmp_path / "runs")}
    cmd = [sys.executable, "-m", "neurorobust.cli", "sweep", str(tiny_sweep), "--workers", "2"]
    proc = subprocess.Popen(
        cmd, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    workers: set[int] = set()
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len(workers) < 2:
            time.sleep(0.5)
            workers = _pool_workers(proc.pid)
        assert len(workers) >= 2, "the sweep did not start its two workers"
        proc.send_signal(signal.SIGTERM)  # the parent only, as `kill PID` does
        proc.wait(timeout=30)
        deadline = time.time() + 20
        while time.time() < deadline and any(Path(f"/proc/{p}").exists() for p in workers):
            time.sleep(0.5)
        alive = [p for p in workers if Path(f"/proc/{p}").exists()]
        assert not alive, f"workers {alive} outlived their sweep"
    finally:
        if proc.poll() is None:
            proc.kill()
        for p in workers:  # never leave a test's orphans on the cores
            if Path(f"/proc/{p}").exists():
                os.kill(p, signal.SIGKILL)


def test_ray_backend_gives_the_same_rows_as_local(tiny_sweep, tmp_path):
    pytest.importorskip("ray", reason="the Ray extra is not installed (pip install 'neurorobust[ray]')")
    spec = load_spec(tiny_sweep)
    with ResultsStore(tmp_path / "local.db") as st:
        run_sweep(spec, store=st, backend="local", workers=2, runs_dir=tmp_path / "runs")
        local = _row_sets(st)
    with ResultsStore(tmp_path / "ray.db") as st:
        report = run_sweep(spec, store=st, backend="ray", workers=2, runs_dir=tmp_path / "runs_ray")
        assert report.done == 8
        ray_rows = _row_sets(st)
    assert ray_rows == local


def test_store_merge_adds_runs_once(tiny_sweep, tmp_path):
    spec = load_spec(tiny_sweep)
    spec = spec.model_copy(update={"sweep": spec.sweep.model_copy(update={"seeds": [0]})})
    with ResultsStore(tmp_path / "a.db") as st:
        run_sweep(spec, store=st, backend="local", workers=2, runs_dir=tmp_path / "runs")
    env = {**os.environ, "COLUMNS": "250"}
    cmd = [sys.executable, "-m", "neurorobust.cli", "store", "merge", str(tmp_path / "b.db"), str(tmp_path / "a.db")]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "4 runs added" in out.stdout, out.stdout + out.stderr
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert "0 runs added, 4 already" in out.stdout
    with ResultsStore(tmp_path / "a.db") as a, ResultsStore(tmp_path / "b.db") as b:
        assert _row_sets(a) == _row_sets(b)
        assert len(a.checks()) == len(b.checks())


def _browser():
    """Headless Chromium through selenium; skipped only where the browser cannot be installed."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        msg = "chromium/chromium-driver missing: apt-get install chromium chromium-driver (make test installs them)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))


def test_html_leaderboard_and_report_in_a_real_browser(tiny_sweep, tmp_path):
    from selenium.webdriver.common.by import By

    from neurorobust.report import build_report

    spec = load_spec(tiny_sweep)
    with ResultsStore(tmp_path / "r.db") as st:
        run_sweep(spec, store=st, backend="local", workers=2, runs_dir=tmp_path / "runs")
        board_dir = write_leaderboard(st, tmp_path / "leaderboard")
        report_dir = build_report(st, "tiny_sweep", tmp_path / "reports")
    assert (board_dir / "leaderboard.csv").read_text().splitlines()[0].split(",")[0] == COLUMNS[0]
    driver = _browser()
    try:
        driver.get((board_dir / "index.html").as_uri())
        col = COLUMNS.index("clean acc (%)")

        def column() -> list[float]:
            return [
                float(r.find_elements(By.TAG_NAME, "td")[col].get_attribute("data-value"))
                for r in driver.find_elements(By.CSS_SELECTOR, "#leaderboard tbody tr")
            ]

        assert len(column()) == 4
        header = driver.find_elements(By.CSS_SELECTOR, "#leaderboard th")[col]
        header.click()
        assert column() == sorted(column())
        header.click()
        assert column() == sorted(column(), reverse=True)
        driver.get((report_dir / "index.html").as_uri())
        images = driver.find_elements(By.TAG_NAME, "img")
        assert len(images) >= 3
        for img in images:  # every figure loads
            assert driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img)
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
    finally:
        driver.quit()


def test_bayesian_search_on_ray_records_trials_and_resumes(tmp_path):
    pytest.importorskip("ray", reason="the Ray extra is not installed (pip install 'neurorobust[ray]')")
    pytest.importorskip("optuna", reason="Bayesian search needs optuna (pip install 'neurorobust[ray]')")
    raw = {
        "name": "bayes",
        "data": {"name": "digits", "validation": 200},
        "model": {"name": "mlp", "params": {"widths": [16]}},
        "train": {"epochs": 2, "batch_size": 64},
        "evaluate": {
            "suite": "quick",
            "split": "val",
            "n": 40,
            "check_n": 20,
            "eps": [0.1],
            "noise_sigmas": [],
            "blur_sigmas": [],
        },
        "sweep": {
            "seeds": [0],
            "search": {
                "method": "bayes",
                "samples": 3,
                "space": {"train.lr": {"low": 1e-3, "high": 1e-1, "log": True}},
                "objective": {"attack": "pgd", "eps": 0.1},
            },
        },
    }
    with pytest.raises(SpecError, match="needs --backend ray"), ResultsStore(tmp_path / "x.db") as st:
        run_sweep(parse_spec(raw), store=st, backend="local", runs_dir=tmp_path / "runs")
    with ResultsStore(tmp_path / "r.db") as st:
        report = run_sweep(parse_spec(raw), store=st, backend="ray", workers=2, runs_dir=tmp_path / "runs")
        assert report.done == 3 and report.best is not None
        rows = st.results()
        assert {r["split"] for r in rows} == {"val"}  # tuned on the validation split, never on test
        raw["sweep"]["search"]["samples"] = 4
        again = run_sweep(parse_spec(raw), store=st, backend="ray", workers=2, runs_dir=tmp_path / "runs")
        assert (again.skipped, again.done) == (3, 1)
        assert len(st.runs(status="done")) == 4


VARIANTS = """
[data]
name = "digits"
[model]
name = "mlp"
params = { widths = [16] }
[evaluate]
suite = "quick"
n = 60
[sweep]
seeds = [0, 1]
grid = { "train.lr" = [0.01, 0.02] }
[[sweep.variants]]
label = "plain"
[[sweep.variants]]
label = "wide"
model.params = { widths = [32] }
evaluate = { n = 40 }
full = { evaluate = { n = 360 } }
[[sweep.variants]]
label = "once"
seeds = [5]
"""


def test_named_variants_merge_their_overrides_and_seeds(tmp_path):
    path = tmp_path / "variants.toml"
    path.write_text(VARIANTS)
    variants = expand_sweep(load_spec(path))
    assert len(variants) == 2 * 2 + 2 * 2 + 2 * 1
    by_label = {}
    for v in variants:
        by_label.setdefault(v.spec.label.split("[")[0], []).append(v.spec)
    assert {s.seed for s in by_label["once"]} == {5}
    wide = by_label["wide"][0]
    assert wide.model.params == {"widths": [32]} and wide.evaluate.n == 40 and wide.evaluate.suite == "quick"
    assert by_label["plain"][0].model.params == {"widths": [16]}
    assert variants[0].overrides["variant"] == "plain"
    full = {v.spec.label.split("[")[0]: v.spec for v in expand_sweep(load_spec(path, full=True))}
    assert full["wide"].evaluate.n == 360 and full["plain"].evaluate.n == 60


@pytest.mark.parametrize(
    ("variants", "match"),
    [
        ('[[sweep.variants]]\nmodel = { name = "mlp" }', "non-empty 'label'"),
        ('[[sweep.variants]]\nlabel = "a"\n[[sweep.variants]]\nlabel = "a"', "unique"),
        ('[[sweep.variants]]\nlabel = "a"\nseed = 3', "cannot override"),
        ('[[sweep.variants]]\nlabel = "a"\nseeds = []', "seeds must be a non-empty list"),
    ],
)
def test_bad_variants_are_clear_errors(tmp_path, variants, match):
    path = tmp_path / "bad.toml"
    path.write_text('[data]\nname = "digits"\n[sweep]\nseeds = [0]\n' + variants + "\n")
    with pytest.raises(SpecError, match=match):
        load_spec(path)


def test_objective_respects_min_clean_and_eps_free_metrics():
    from neurorobust.experiments.sweep import _objective
    from neurorobust.specs import ObjectiveSpec

    rows = [
        {"attack": "clean", "metric": "accuracy", "eps": None, "value": 0.75},
        {"attack": "fgsm-min", "metric": "median_min_eps", "eps": None, "value": 0.2},
    ]
    goal = ObjectiveSpec(attack="fgsm-min", metric="median_min_eps", mode="max")
    assert _objective(rows, goal) == 0.2  # no eps on the row: matches the objective's default eps
    assert _objective(rows, goal.model_copy(update={"min_clean": 0.8})) is None  # lost its task: not a candidate
    assert _objective(rows, goal.model_copy(update={"min_clean": 0.7})) == 0.2


def test_leaderboard_ranks_mechanisms_against_reference_defences(store):
    from neurorobust.store import ResultRow

    def record(experiment, model, curve, dataset="mnist"):
        rows = [ResultRow(experiment, model, dataset, "clean", "accuracy", 0.98, n=100, seed=0)]
        rows += [
            ResultRow(experiment, model, dataset, "worst-case", "accuracy", v, n=100, eps=e, seed=0)
            for e, v in curve.items()
        ]
        rows.append(
            ResultRow(
                experiment,
                model,
                dataset,
                "checklist",
                "masking_suspected",
                0.0,
                seed=0,
                params={"verdict": "no masking found"},
            )
        )
        store.record_run(
            experiment,
            "sweep",
            spec={"evaluate": {"suite": "full"}},
            train_key=model,
            eval_key=experiment + model,
            rows=rows,
            model=model,
        )

    record("advtrain_mnist", "pgd-at", {0.1: 0.95, 0.2: 0.9, 0.3: 0.85})
    record("advtrain_mnist", "trades", {0.1: 0.94, 0.2: 0.88, 0.3: 0.80})
    record("sleep_mnist", "sleep-A", {0.05: 0.7, 0.1: 0.3, 0.2: 0.05, 0.3: 0.0})
    record("hebbian_mnist", "kh", {0.01: 0.97, 0.03: 0.96, 0.1: 0.72})  # a finer grid: gap at the shared 0.1
    record("hebbian_coarse", "kh", {0.01: 0.4})  # no eps in common with any reference: no gap
    # 8/255 written two ways by two configs is one eps
    record("advtrain_cifar10", "pgd-at", {0.00784: 0.6, 0.03137: 0.4}, dataset="cifar10")
    record("cerebellum_cifar10", "cerebellum", {0.00784314: 0.2, 0.0313725: 0.0}, dataset="cifar10")
    rows = leaderboard_rows(store)
    board = {(b["experiment"], b["defence"]): b for b in rows}  # the names above are unique but for published
    assert board[("cerebellum_cifar10", "cerebellum")]["gap to best reference (pts)"] == "-40.0 vs pgd-at"
    assert board[("hebbian_mnist", "kh")]["gap to best reference (pts)"] == "-23.0 vs pgd-at at eps 0.1"
    assert board[("hebbian_coarse", "kh")]["gap to best reference (pts)"] is None
    sleep = board[("sleep_mnist", "sleep-A")]
    assert sleep["kind"] == "mechanism" and sleep["at eps"] == "0.2"
    assert sleep["gap to best reference (pts)"] == "-85.0 vs pgd-at"
    assert board[("advtrain_mnist", "trades")]["gap to best reference (pts)"] == "-2.0 vs pgd-at"
    assert board[("advtrain_mnist", "pgd-at")]["kind"] == "reference"
    published = [b for b in rows if b["kind"] == "published" and b["dataset"] == "mnist"]
    assert len(published) == 1 and published[0]["worst-case (%)"] == 89.0
    assert "not comparable" in published[0]["verdict"]


def test_a_variants_numbers_do_not_depend_on_what_its_worker_ran_before(tmp_path, one_thread):
    import torch

    from neurorobust.experiments.sweep import run_variant

    # DeepFool with dropout active in its gradients (as the sleep code attacks) draws from the global
    # generator; a worker that ran something else first must still give the same numbers
    spec = parse_spec(
        {
            "name": "seeded",
            "data": {"name": "digits"},
            "model": {"name": "sleep_mlp", "params": {"widths": [32], "input_shape": [1, 8, 8]}},
            "train": {"epochs": 1, "optimizer": "adam", "lr": 1e-2},
            "evaluate": {
                "suite": "seed-paper",
                "n": 40,
                "noise_sigmas": [],
                "blur_sigmas": [],
                "checklist": False,
                "attacks": [{"name": "deepfool", "adaptive": False, "params": {"steps": 10, "model_mode": "train"}}],
            },
        }
    ).model_dump(mode="json")
    first = run_variant(spec, str(tmp_path), "seeded")
    torch.rand(1000)  # what another variant would have consumed
    second = run_variant(spec, str(tmp_path), "seeded")
    assert first["error"] is None and second["error"] is None
    rows = [[(r["attack"], r["metric"], r["value"]) for r in out["rows"]] for out in (first, second)]
    assert any(a == "deepfool" for a, _, _ in rows[0])
    assert rows[0] == rows[1]


def test_a_sweep_worker_flushes_subnormal_floats(tmp_path, one_thread):
    """Weight decay leaves subnormal weights that made one hebbian_mnist variant 7x slower (sweep.py)."""
    import torch

    from neurorobust.experiments.sweep import run_variant

    spec = parse_spec(
        {
            "name": "denormal",
            "data": {"name": "digits"},
            "model": {"name": "mlp", "params": {"widths": [16], "input_shape": [1, 8, 8]}},
            "train": {"epochs": 1},
            "evaluate": {"suite": "none", "n": 20, "noise_sigmas": [], "blur_sigmas": []},
        }
    ).model_dump(mode="json")
    torch.set_flush_denormal(False)
    tiny = torch.tensor([1e-39])
    assert float(tiny * 1.0) != 0.0  # subnormals are kept by default
    try:
        assert run_variant(spec, str(tmp_path), "denormal")["error"] is None
        assert float(tiny * 1.0) == 0.0
    finally:
        torch.set_flush_denormal(False)


def test_a_broken_pool_records_one_short_traceback_per_lost_run():
    from concurrent.futures.process import BrokenProcessPool

    from neurorobust.experiments.sweep import crashed_payload

    # one exception object, re-raised for every pending future as a broken pool does
    exc = BrokenProcessPool("A process in the process pool was terminated abruptly")
    payloads = []
    for _ in range(3):
        try:
            raise exc
        except BrokenProcessPool as caught:
            payloads.append(crashed_payload(caught))
    assert payloads[0]["traceback"] == payloads[2]["traceback"]
    assert payloads[2]["traceback"].count("BrokenProcessPool") == 1
    assert payloads[2]["error"].startswith("worker died: BrokenProcessPool")
