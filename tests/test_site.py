"""The shipped snapshot of the results store and the static leaderboard site (issue "For users", part 2).

Export/load round trip and determinism, one clear error for a corrupt snapshot, the user's store merged
over the shipped results (the user's newer runs win), the site in a real browser (sort, filter, plot,
defence pages), and the CLI of a fresh clone: ``neurorobust leaderboard --site`` with no store at all.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from neurorobust.errors import StoreError
from neurorobust.report.leaderboard import leaderboard_rows
from neurorobust.report.site import family_of, write_site
from neurorobust.store import (
    ResultRow,
    ResultsStore,
    export_snapshot,
    load_snapshot,
    open_results,
    shipped_snapshot_path,
)

CHECKS = [
    {"name": "single-vs-iterative", "passed": True, "value": -0.02, "threshold": 0.01, "advice": "FGSM < PGD <ok>"},
    {"name": "unbounded-attack", "passed": False, "value": 0.2, "threshold": 0.01, "advice": "use BPDA & EOT"},
]


def _record(
    st: ResultsStore,
    name: str,
    model: str,
    dataset: str,
    clean: float,
    curve: dict[float, float],
    *,
    seed: int = 0,
    eval_key: str | None = None,
    started_at: float = 1000.0,
    checks: list[dict] | tuple = (),
) -> int:
    """One finished run the way a sweep records it: clean accuracy, the worst-case curve, the checklist."""
    rows = [ResultRow(name, model, dataset, "clean", "accuracy", clean, n=100, seed=seed)]
    rows += [
        ResultRow(name, model, dataset, "worst-case", "accuracy", v, n=100, eps=e, seed=seed) for e, v in curve.items()
    ]
    verdict = "masking suspected: unbounded-attack" if checks else "no masking found"
    rows.append(
        ResultRow(name, model, dataset, "checklist", "masking_suspected", 0.0, params={"verdict": verdict}, seed=seed)
    )
    return st.record_run(
        name,
        "sweep",
        spec={"name": name, "label": model, "seed": seed, "evaluate": {"suite": "full", "eps": sorted(curve)}},
        train_key=f"t-{name}-{model}-{seed}",
        eval_key=eval_key or f"e-{name}-{model}-{seed}",
        rows=rows,
        checks=checks,
        model=model,
        started_at=started_at,
        code="abc1234",
        packages={"torch": "2.13.0", "python": "3.11"},
        host="test-host",
    )


@pytest.fixture
def small_store(tmp_path):
    """Five defences on two datasets, one under an old config name (sgbn_mnist), one reference defence."""
    with ResultsStore(tmp_path / "small.db") as st:
        _record(st, "sleep_mnist", "sleep (test)", "mnist", 0.95, {0.1: 0.40, 0.2: 0.20, 0.3: 0.05}, checks=CHECKS)
        _record(st, "sleep_mnist", "control (test)", "mnist", 0.095, {0.1: 0.08, 0.2: 0.02, 0.3: 0.0}, started_at=1001)
        _record(st, "advtrain_mnist", "PGD-AT (test)", "mnist", 0.85, {0.1: 0.9, 0.2: 0.7, 0.3: 0.5}, started_at=1002)
        _record(st, "sgbn_mnist", "SGBN (test)", "mnist", 0.9, {0.1: 0.3, 0.2: 0.1, 0.3: 0.0}, started_at=1003)
        _record(st, "hebbian_fashion", "KH <test>", "fashion", 0.8, {0.1: 0.3, 0.2: 0.1}, started_at=1004)
        yield st


def _without_ids(rows: list[dict]) -> list[dict]:
    return sorted(
        ({k: v for k, v in r.items() if k not in ("id", "run_id")} for r in rows), key=lambda r: repr(sorted(r.items()))
    )


# -- (a) round trip, determinism --------------------------------------------------------------------------------


def test_export_load_round_trip_and_byte_identical(small_store, tmp_path):
    first, second, again = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    assert export_snapshot(small_store, first) == 5
    export_snapshot(small_store, second)
    assert first.read_bytes() == second.read_bytes()
    lines = first.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 5 and lines[0].startswith('{"checks": [')  # one run a line, keys sorted
    assert [line.split('"name": ')[-1][:20] for line in lines] == sorted(
        line.split('"name": ')[-1][:20] for line in lines
    )
    with load_snapshot(first) as loaded:
        assert len(loaded.runs()) == 5 and len(loaded.results()) == len(small_store.results()) == 5 * 5 - 1
        assert len(loaded.checks()) == 2
        assert _without_ids(loaded.results()) == _without_ids(small_store.results())
        assert _without_ids(loaded.checks()) == _without_ids(small_store.checks())
        assert _without_ids(loaded.runs()) == _without_ids(small_store.runs())
        (sleep,) = loaded.runs(name="sleep_mnist", eval_key="e-sleep_mnist-sleep (test)-0")
        assert sleep["spec"]["evaluate"]["eps"] == [0.1, 0.2, 0.3] and sleep["code_version"] == "abc1234"
        assert sleep["host"] == "test-host" and sleep["packages"] == {"python": "3.11", "torch": "2.13.0"}
        # a loaded snapshot exports to the same bytes: nothing is lost or reformatted on the way
        export_snapshot(loaded, again)
    assert again.read_bytes() == first.read_bytes()


def test_unfinished_runs_are_not_exported(small_store, tmp_path):
    run = small_store.start_run("sleep_mnist", "evaluate", spec={})
    small_store.add_results(run, [ResultRow("sleep_mnist", "half", "mnist", "clean", "accuracy", 0.5)])
    assert export_snapshot(small_store, tmp_path / "s.jsonl") == 5
    assert '"half"' not in (tmp_path / "s.jsonl").read_text()


# -- (b) a corrupt snapshot ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ('{"name": "sleep_mnist", "kind": ', "not valid JSON"),
        ('{"name": "x", "kind": "sweep", "started_at": 1.0, "results": [], "checks": []}', "needs the key 'spec'"),
        ("[1, 2]", "a run is a JSON object"),
    ],
)
def test_corrupt_snapshot_line_is_one_clear_error(small_store, tmp_path, line, says):
    path = tmp_path / "snap.jsonl"
    export_snapshot(small_store, path)
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[2] = line
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(StoreError) as err:
        load_snapshot(path)
    message = str(err.value)
    assert f"{path}, line 3: " in message and says in message and "\n" not in message


def test_missing_snapshot_names_the_file(tmp_path):
    with pytest.raises(StoreError, match=r"no-such\.jsonl: no such snapshot file"):
        load_snapshot(tmp_path / "no-such.jsonl")


def test_cli_reports_a_corrupt_shipped_snapshot_without_traceback(tmp_path, monkeypatch, capsys):
    from neurorobust import cli, store

    bad = tmp_path / "snapshot.jsonl"
    bad.write_text('{"name": "a"}\nnot json\n', encoding="utf-8")
    monkeypatch.setattr(store, "shipped_snapshot_path", lambda: bad)
    monkeypatch.setenv("NEURO_STORE", str(tmp_path / "none.db"))
    monkeypatch.setattr(sys, "argv", ["neurorobust", "leaderboard", "--site", str(tmp_path / "site")])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "line 1: a run needs the key 'kind'" in err and "Traceback" not in err


# -- (c) the user's store over the shipped results ------------------------------------------------------------------


def _clean(board: list[dict], experiment: str, defence: str) -> float:
    (row,) = [b for b in board if b["experiment"] == experiment and b["defence"] == defence]
    return row["clean acc (%)"]


@pytest.mark.parametrize("same_eval_key", [False, True])
def test_user_store_merges_over_the_snapshot(small_store, tmp_path, monkeypatch, same_eval_key):
    snapshot = tmp_path / "snapshot.jsonl"
    export_snapshot(small_store, snapshot)
    monkeypatch.setattr("neurorobust.store.shipped_snapshot_path", lambda: snapshot)
    user_path = tmp_path / "user" / "results.db"
    with ResultsStore(user_path) as user:
        key = "e-sleep_mnist-sleep (test)-0" if same_eval_key else "mine"
        # a re-run of the same defence and seed (newer), and one under the renamed config's new name
        _record(
            user,
            "sleep_mnist",
            "sleep (test)",
            "mnist",
            0.97,
            {0.1: 0.5, 0.2: 0.3, 0.3: 0.1},
            eval_key=key,
            started_at=2000,
        )
        _record(user, "stochastic_mnist_sgbn", "SGBN (test)", "mnist", 0.91, {0.1: 0.35}, started_at=2001)
    before = hashlib.sha256(user_path.read_bytes()).hexdigest()

    st, source = open_results(user_path)
    with st:
        assert source.startswith(f"your store ({user_path}, 2 runs) + shipped results (")
        board = leaderboard_rows(st)
        assert _clean(board, "sleep_mnist", "sleep (test)") == 97.0  # the user's newer run wins
        assert _clean(board, "stochastic_mnist_sgbn", "SGBN (test)") == 91.0  # over the old name's run too
        assert _clean(board, "sleep_mnist", "control (test)") == 9.5  # the snapshot's other defences stay
        (sleep,) = [b for b in board if b["defence"] == "sleep (test)"]
        assert sleep["worst-case (%)"] == 30.0 and sleep["seeds"] == 1
        assert len(st.runs()) == (6 if same_eval_key else 7)  # the replaced snapshot run is gone
    assert hashlib.sha256(user_path.read_bytes()).hexdigest() == before  # the user's store is never written
    with ResultsStore(user_path) as user:
        assert len(user.runs()) == 2

    st, source = open_results(user_path, shipped=False)
    with st:
        assert source == f"your store ({user_path}, 2 runs)" and len(st.runs()) == 2


def test_no_store_or_empty_store_reads_the_snapshot(small_store, tmp_path, monkeypatch):
    snapshot = tmp_path / "snapshot.jsonl"
    export_snapshot(small_store, snapshot)
    monkeypatch.setattr("neurorobust.store.shipped_snapshot_path", lambda: snapshot)
    missing = tmp_path / "none" / "results.db"
    st, source = open_results(missing)
    with st:
        assert source == f"shipped results ({snapshot}, 5 runs)" and len(st.runs()) == 5
    assert not missing.exists() and not missing.parent.exists()
    with ResultsStore(tmp_path / "empty.db"):
        pass
    st, source = open_results(tmp_path / "empty.db")
    with st:
        assert source.startswith("shipped results") and len(st.runs()) == 5
    with pytest.raises(StoreError, match="--no-shipped"):
        open_results(missing, shipped=False)


def test_old_names_count_as_their_family(small_store):
    board = leaderboard_rows(small_store)
    assert {b["experiment"] for b in board} >= {"stochastic_mnist_sgbn", "sleep_mnist", "hebbian_fashion"}
    assert "sgbn_mnist" not in {b["experiment"] for b in board}
    assert family_of("sgbn_mnist") == ("stochastic", "Kubo 2019")
    assert family_of("mnist_cnn")[0] == "baseline" and family_of("advtrain_cifar10")[0] == "advtrain"


# -- (d) the site in a real browser ---------------------------------------------------------------------------------


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
    options.add_argument("--window-size=1400,1000")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))


def test_site_in_a_real_browser(small_store, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    site = write_site(small_store, tmp_path / "site", source="a test store")
    index = (site / "index.html").read_text()
    assert "KH &lt;test&gt;" in index and "KH <test>" not in index  # every text escaped
    assert "http://" not in index.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in index
    driver = _browser()
    try:
        driver.get((site / "index.html").as_uri())
        headers = [th.text for th in driver.find_elements(By.CSS_SELECTOR, "#leaderboard th")]
        col = headers.index("clean (%)")

        def visible(column: int) -> list[str]:
            return [
                r.find_elements(By.TAG_NAME, "td")[column].get_attribute("data-value")
                for r in driver.find_elements(By.CSS_SELECTOR, "#leaderboard tbody tr")
                if r.is_displayed()
            ]

        # five measured defences and Madry et al.'s published MNIST number (a reference defence ran on MNIST)
        assert len(visible(col)) == 6
        header = driver.find_elements(By.CSS_SELECTOR, "#leaderboard th")[col]
        header.click()
        numbers = [float(v) for v in visible(col) if v]
        assert numbers == [9.5, 80.0, 85.0, 90.0, 95.0]  # numeric, not text order ("9.5" > "85" as text)
        assert visible(col)[-1] == ""  # the published row has no clean accuracy: blanks last
        header.click()
        assert [float(v) for v in visible(col) if v] == [95.0, 90.0, 85.0, 80.0, 9.5]
        defence = headers.index("defence")
        driver.find_elements(By.CSS_SELECTOR, "#leaderboard th")[defence].click()
        assert visible(defence) == sorted(visible(defence), key=str.lower) or visible(defence) == sorted(
            visible(defence)
        )

        Select(driver.find_element(By.ID, "dataset-filter")).select_by_value("fashion")
        assert visible(defence) == ["KH <test>"]
        assert driver.find_element(By.ID, "shown").text == "1"
        Select(driver.find_element(By.ID, "dataset-filter")).select_by_value("mnist")
        Select(driver.find_element(By.ID, "family-filter")).select_by_value("sleep")
        assert sorted(visible(defence)) == ["control (test)", "sleep (test)"]
        Select(driver.find_element(By.ID, "family-filter")).select_by_value("stochastic")
        assert visible(defence) == ["SGBN (test)"]  # stored as sgbn_mnist, shown under its family
        Select(driver.find_element(By.ID, "dataset-filter")).select_by_value("")
        Select(driver.find_element(By.ID, "family-filter")).select_by_value("")
        assert len(visible(defence)) == 6

        images = driver.find_elements(By.CSS_SELECTOR, "figure img")
        assert sorted(Path(urlparse(i.get_attribute("src")).path).name for i in images) == ["fashion.png", "mnist.png"]
        for img in images:
            assert driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img)

        links = [a.get_attribute("href") for a in driver.find_elements(By.CSS_SELECTOR, "#leaderboard tbody a")]
        assert len(links) == 5  # the published number has no page
        for href in links:
            assert href.startswith("file://") and Path(unquote(urlparse(href).path)).is_file(), href
        shot = tmp_path / "leaderboard.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 1000
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []

        (sleep_link,) = [h for h in links if "sleep-test" in h and "control" not in h]
        driver.get(sleep_link)
        page = driver.find_element(By.TAG_NAME, "body").text
        assert "neurorobust repro sleep_mnist" in page and "Tadros et al. 2020" in page
        assert "unbounded-attack" in page and "failed" in page and "use BPDA & EOT" in page
        assert "masking suspected: unbounded-attack" in page
        assert '"suite": "full"' in driver.find_element(By.TAG_NAME, "pre").text + page
        assert [r.text for r in driver.find_elements(By.CSS_SELECTOR, "svg circle")] == ["", "", ""]
        driver.find_element(By.LINK_TEXT, "← leaderboard").click()
        assert driver.current_url == (site / "index.html").as_uri()
    finally:
        driver.quit()


# -- (e) a fresh clone's CLI ------------------------------------------------------------------------------------------


def test_cli_site_of_a_fresh_clone_uses_the_shipped_snapshot(tmp_path):
    snapshot = shipped_snapshot_path()
    if snapshot is None:
        pytest.skip("results/snapshot.jsonl is absent (an installed wheel): nothing shipped to show")
    runs = sum(1 for line in snapshot.read_text(encoding="utf-8").splitlines() if line.strip())
    env = {**os.environ, "NEURO_STORE": str(tmp_path / "no-store.db"), "COLUMNS": "120"}
    cmd = [sys.executable, "-m", "neurorobust.cli", "leaderboard", "--site", str(tmp_path / "site")]
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert f"results: shipped results ({snapshot}, {runs} runs)" in out.stdout
    assert not (tmp_path / "no-store.db").exists()
    index = (tmp_path / "site" / "index.html").read_text()
    rows = index.count("<tr data-dataset=")
    assert rows > 0 and 'data-family="stochastic"' in index
    pages = list((tmp_path / "site" / "defences").glob("*.html"))
    assert len(pages) == index.count('href="defences/') and len(pages) > 0
