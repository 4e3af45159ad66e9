"""The SQLite results store: round trip, a reader during a write, and a run killed half-way."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from neurorobust.errors import StoreError
from neurorobust.store import SCHEMA_VERSION, ResultRow, ResultsStore


def test_round_trip(store):
    run = store.start_run("exp", "evaluate", spec={"a": 1}, train_key="t", eval_key="e")
    store.add_results(
        run,
        [
            ResultRow(
                "exp", "cnn", "mnist", "pgd", "accuracy", 0.5, n=100, eps=0.3, params={"steps": 40}, seed=2, seconds=1.5
            )
        ],
    )
    store.finish_run(run)
    (row,) = store.results(experiment="exp")
    assert row["value"] == 0.5 and row["params"] == {"steps": 40} and row["eps"] == 0.3 and row["n"] == 100
    (r,) = store.runs(id=run)
    assert r["status"] == "done" and r["spec"] == {"a": 1} and "torch" in r["packages"] and r["ended_at"]
    assert store.finished_run("e")["id"] == run
    with pytest.raises(StoreError, match="cannot filter results by"):
        store.results(colour="red")


def test_schema_version_and_wal(tmp_path):
    path = tmp_path / "r.db"
    ResultsStore(path).close()
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.execute("PRAGMA user_version=99")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="schema version 99"):
        ResultsStore(path)


def test_not_a_database_is_a_clear_error(tmp_path):
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a usable SQLite results store"):
        ResultsStore(path)


WRITER = textwrap.dedent(
    """
    import sys, time
    from neurorobust.store import ResultsStore, ResultRow
    store = ResultsStore(sys.argv[1])
    run = store.start_run("exp", "evaluate", spec={})
    for i in range(10_000):
        store.add_results(run, [ResultRow("exp", "m", "mnist", "pgd", "accuracy", i / 10_000, n=1, eps=i)])
        print(i, flush=True)
        time.sleep(0.01)
    """
)


def test_reader_during_write_and_kill_mid_run(tmp_path):
    path = tmp_path / "r.db"
    ResultsStore(path).close()
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(30):  # wait until the writer has committed some rows
            proc.stdout.readline()
        reader = ResultsStore(path)
        counts = []
        for _ in range(5):  # a second process reads while the first keeps writing
            counts.append(len(reader.results(experiment="exp")))
            time.sleep(0.05)
        assert counts[0] >= 25 and counts[-1] > counts[0]
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    reader = ResultsStore(path)
    rows = reader.results(experiment="exp")
    (run,) = reader.runs()
    assert run["status"] == "running"  # killed: never finished, but everything written is there
    assert len(rows) >= counts[-1]
    assert [r["eps"] for r in rows] == list(range(len(rows)))  # no gap, no torn row
    assert reader._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_reports_read_finished_runs_only_and_average_seeds(store):
    from neurorobust.report.build import latest_rows

    for seed, value in ((0, 0.5), (1, 0.7)):
        run = store.start_run("e", "evaluate", spec={})
        store.add_results(run, [ResultRow("e", "m", "mnist", "pgd", "accuracy", value, n=10, eps=0.1, seed=seed)])
        store.finish_run(run)
    killed = store.start_run("e", "evaluate", spec={})  # never finished
    store.add_results(killed, [ResultRow("e", "m", "mnist", "pgd", "accuracy", 0.0, n=10, eps=0.1, seed=0)])
    assert len(store.results(experiment="e")) == 3
    rows = latest_rows(store.results(experiment="e", done_only=True))
    (row,) = rows
    assert row["value"] == pytest.approx(0.6) and row["params"]["seeds"] == 2
    assert row["params"]["sd"] == pytest.approx(0.14142, abs=1e-4)


def test_a_checkpoint_of_another_architecture_is_treated_as_missing(tmp_path, caplog):
    from torch import nn

    from neurorobust.training import load_checkpoint, save_checkpoint

    save_checkpoint(tmp_path, "k", nn.Linear(3, 2), {"a": 1})
    assert load_checkpoint(tmp_path, "k", nn.Linear(3, 2)) == {"a": 1}
    with caplog.at_level("WARNING"):
        assert load_checkpoint(tmp_path, "k", nn.Sequential(nn.Linear(3, 2))) is None
    assert "another architecture" in caplog.text and "0.weight" in caplog.text
