"""The results store: one SQLite file (stdlib ``sqlite3``, WAL mode, versioned schema).

Tables
------
runs
    One row per train/evaluate/repro run: resolved spec, keys, status, code version (git commit),
    package versions, start and end time.
results
    One row per measured number: run id, experiment, model label, dataset, split, attack or
    distortion, its parameters, eps, metric, value, n, seed, seconds.
checks
    The gradient-masking checklist: run id, model label, check name, passed, value, threshold, advice.

Every ``add_*`` call commits at once, so a process killed mid-run loses nothing already written;
WAL lets another process read while one writes.
"""

from __future__ import annotations

import json
import os
import platform
import sqlite3
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import StoreError, describe_value

__all__ = [
    "SCHEMA_VERSION",
    "ResultRow",
    "ResultsStore",
    "code_version",
    "default_store_path",
    "export_snapshot",
    "load_snapshot",
    "open_results",
    "package_versions",
    "shipped_snapshot_path",
]

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    train_key TEXT,
    eval_key TEXT,
    spec TEXT NOT NULL,
    status TEXT NOT NULL,
    code_version TEXT,
    packages TEXT,
    host TEXT,
    started_at REAL NOT NULL,
    ended_at REAL,
    message TEXT DEFAULT ''
);
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER NOT NULL REFERENCES runs(id),
    experiment TEXT NOT NULL,
    model TEXT NOT NULL,
    dataset TEXT NOT NULL,
    split TEXT NOT NULL DEFAULT 'test',
    attack TEXT NOT NULL,
    params TEXT NOT NULL DEFAULT '{}',
    eps REAL,
    metric TEXT NOT NULL,
    value REAL,
    n INTEGER,
    seed INTEGER,
    seconds REAL,
    approximate INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS checks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER NOT NULL REFERENCES runs(id),
    experiment TEXT NOT NULL,
    model TEXT NOT NULL,
    name TEXT NOT NULL,
    passed INTEGER,
    value REAL,
    threshold REAL,
    advice TEXT DEFAULT '',
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS results_by_experiment ON results(experiment, model, attack, metric);
CREATE INDEX IF NOT EXISTS runs_by_key ON runs(eval_key, status);
"""


@dataclass
class ResultRow:
    """One measured number, ready for the ``results`` table."""

    experiment: str
    model: str
    dataset: str
    attack: str
    metric: str
    value: float | None
    n: int | None = None
    eps: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    split: str = "test"
    seed: int | None = None
    seconds: float | None = None
    approximate: bool = False


def default_store_path() -> Path:
    """``$NEURO_STORE``, else ``runs/results.db`` under the current directory."""
    return Path(os.environ.get("NEURO_STORE", Path("runs") / "results.db"))


def code_version() -> str:
    """The git commit of the source tree (``+dirty`` if modified), or ``unknown``."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    """Versions of the packages that change numbers (torch, numpy, neurorobust, python)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("neurorobust", "torch", "numpy", "scipy", "scikit-learn"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "absent"
    return out


_INSERT_RESULT = (
    "INSERT INTO results (run_id, experiment, model, dataset, split, attack, params, eps, metric, value,"
    " n, seed, seconds, approximate, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
_INSERT_CHECK = (
    "INSERT INTO checks (run_id, experiment, model, name, passed, value, threshold, advice, created_at)"
    " VALUES (?,?,?,?,?,?,?,?,?)"
)


def _result_tuple(run_id: int, row: ResultRow | Mapping[str, Any], now: float) -> tuple[Any, ...]:
    r = asdict(row) if isinstance(row, ResultRow) else dict(row)
    value = r.get("value")
    return (
        run_id,
        r["experiment"],
        r["model"],
        r["dataset"],
        r.get("split", "test"),
        r["attack"],
        json.dumps(r.get("params") or {}, sort_keys=True, default=str),
        r.get("eps"),
        r["metric"],
        None if value is None else float(value),
        r.get("n"),
        r.get("seed"),
        r.get("seconds"),
        int(bool(r.get("approximate"))),
        now,
    )


def _check_tuple(run_id: int, experiment: str, model: str, c: Any, now: float) -> tuple[Any, ...]:
    get = c.get if isinstance(c, Mapping) else lambda k: getattr(c, k)
    passed = get("passed")
    return (
        run_id,
        experiment,
        model,
        get("name"),
        None if passed is None else int(bool(passed)),
        get("value"),
        get("threshold"),
        get("advice"),
        now,
    )


@dataclass(frozen=True)
class _StoredCheck:
    """A check read back from a store (for merges)."""

    name: str
    passed: bool | None
    value: float | None
    threshold: float | None
    advice: str
    model: str


class ResultsStore:
    """A results store at ``path`` (created on first use).

    Parameters
    ----------
    path : path, optional
        SQLite file; defaults to :func:`default_store_path`.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> store = ResultsStore(pathlib.Path(tempfile.mkdtemp()) / "r.db")
    >>> run = store.start_run("demo", "evaluate", spec={})
    >>> store.add_results(run, [ResultRow("demo", "cnn", "mnist", "clean", "accuracy", 0.99, n=100)])
    1
    >>> store.finish_run(run)
    >>> store.results(experiment="demo")[0]["value"]
    0.99
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else default_store_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            self._conn.row_factory = sqlite3.Row
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA busy_timeout=30000")
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                self._conn.executescript(_SCHEMA)
                self._conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            elif version != SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path}: schema version {version}, this neurorobust reads {SCHEMA_VERSION}; "
                    "use a new store file (--store) or the matching neurorobust version."
                )
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: not a usable SQLite results store ({exc}).") from None

    # -- writing -------------------------------------------------------------------------------
    def start_run(
        self,
        name: str,
        kind: str,
        *,
        spec: Mapping[str, Any],
        train_key: str | None = None,
        eval_key: str | None = None,
    ) -> int:
        """Record a run as ``running`` and return its id."""
        cur = self._conn.execute(
            "INSERT INTO runs (name, kind, train_key, eval_key, spec, status, code_version, packages, host, started_at)"
            " VALUES (?, ?, ?, ?, ?, 'running', ?, ?, ?, ?)",
            (
                name,
                kind,
                train_key,
                eval_key,
                json.dumps(spec, sort_keys=True, default=str),
                code_version(),
                json.dumps(package_versions()),
                platform.node(),
                time.time(),
            ),
        )
        return int(cur.lastrowid or 0)

    def finish_run(self, run_id: int, status: str = "done", message: str = "") -> None:
        """Mark a run ``done`` or ``failed`` with an end time."""
        self._conn.execute(
            "UPDATE runs SET status=?, ended_at=?, message=? WHERE id=?", (status, time.time(), message, run_id)
        )

    def add_results(self, run_id: int, rows: Iterable[ResultRow | Mapping[str, Any]]) -> int:
        """Insert rows in one committed transaction; returns how many."""
        now = time.time()
        data = [_result_tuple(run_id, r, now) for r in rows]
        with self._conn:
            self._conn.execute("BEGIN")
            self._conn.executemany(_INSERT_RESULT, data)
        return len(data)

    def add_checks(self, run_id: int, experiment: str, model: str, checks: Iterable[Any]) -> None:
        """Insert checklist results (objects with name, passed, value, threshold, advice)."""
        now = time.time()
        with self._conn:
            self._conn.execute("BEGIN")
            self._conn.executemany(_INSERT_CHECK, [_check_tuple(run_id, experiment, model, c, now) for c in checks])

    def record_run(
        self,
        name: str,
        kind: str,
        *,
        spec: Mapping[str, Any],
        train_key: str | None,
        eval_key: str | None,
        rows: Iterable[ResultRow | Mapping[str, Any]],
        checks: Iterable[Any] = (),
        model: str = "",
        status: str = "done",
        message: str = "",
        started_at: float | None = None,
        ended_at: float | None = None,
        code: str | None = None,
        packages: Mapping[str, str] | None = None,
        host: str | None = None,
    ) -> int:
        """Insert a finished run with its rows and checks in **one** transaction (sweep drivers).

        A process killed at any moment leaves either the whole run or nothing, so a restarted sweep
        never duplicates or half-writes a run.
        """
        now = time.time()
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            cur = self._conn.execute(
                "INSERT INTO runs (name, kind, train_key, eval_key, spec, status, code_version, packages, host,"
                " started_at, ended_at, message) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    name,
                    kind,
                    train_key,
                    eval_key,
                    json.dumps(spec, sort_keys=True, default=str),
                    status,
                    code or code_version(),
                    json.dumps(packages or package_versions()),
                    host or platform.node(),
                    started_at or now,
                    ended_at or now,
                    message,
                ),
            )
            run_id = int(cur.lastrowid or 0)
            self._conn.executemany(_INSERT_RESULT, [_result_tuple(run_id, r, now) for r in rows])
            self._conn.executemany(
                _INSERT_CHECK, [_check_tuple(run_id, name, getattr(c, "model", model), c, now) for c in checks]
            )
        return run_id

    def merge(self, other: str | os.PathLike[str], *, replace: bool = False) -> tuple[int, int]:
        """Copy the finished runs of another store (with their rows and checks) into this one.

        Runs already here (same name, eval key and status ``done``) are skipped, so merging twice
        adds nothing. Returns ``(runs added, runs skipped)``.

        ``replace=True`` instead deletes such runs here and copies the other store's: merged over a
        shipped snapshot, a user's re-run of the same evaluation must win, and the copied run gets
        a newer id (the leaderboard keeps the latest run per seed by id).
        """
        src = ResultsStore(other)
        added = skipped = 0
        try:
            for run in src.runs(status="done"):
                if run["eval_key"] and self.finished_run(run["eval_key"], experiment=run["name"]) is not None:
                    if not replace:
                        skipped += 1
                        continue
                    self._delete_runs(run["eval_key"], run["name"])
                self.record_run(
                    run["name"],
                    run["kind"],
                    spec=run["spec"],
                    train_key=run["train_key"],
                    eval_key=run["eval_key"],
                    rows=src.results(run_id=run["id"]),
                    checks=[
                        _StoredCheck(
                            **{k: c[k] for k in ("name", "passed", "value", "threshold", "advice")}, model=c["model"]
                        )
                        for c in src.checks(run_id=run["id"])
                    ],
                    status="done",
                    message=run["message"] or "",
                    started_at=run["started_at"],
                    ended_at=run["ended_at"],
                    code=run["code_version"],
                    packages=run["packages"],
                    host=run["host"],
                )
                added += 1
        finally:
            src.close()
        return added, skipped

    def _delete_runs(self, eval_key: str, name: str) -> None:
        """Delete the finished runs with this eval key and name, with their rows and checks."""
        ids = [
            r[0]
            for r in self._conn.execute(
                "SELECT id FROM runs WHERE eval_key=? AND name=? AND status='done'", (eval_key, name)
            )
        ]
        marks = ",".join("?" * len(ids))
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            for table in ("results", "checks"):
                self._conn.execute(f"DELETE FROM {table} WHERE run_id IN ({marks})", ids)
            self._conn.execute(f"DELETE FROM runs WHERE id IN ({marks})", ids)

    # -- reading -------------------------------------------------------------------------------
    def _select(
        self, table: str, filters: Mapping[str, Any], order: str = "id", done_only: bool = False
    ) -> list[dict[str, Any]]:
        allowed = {r[1] for r in self._conn.execute(f"PRAGMA table_info({table})")}
        unknown = set(filters) - allowed
        if unknown:
            raise StoreError(f"cannot filter {table} by {sorted(unknown)}; columns are {sorted(allowed)}")
        clauses = [f"{k} = ?" for k in filters]
        if done_only:
            clauses.append("run_id IN (SELECT id FROM runs WHERE status = 'done')")
        where = " AND ".join(clauses)
        sql = f"SELECT * FROM {table}" + (f" WHERE {where}" if where else "") + f" ORDER BY {order}"
        rows = [dict(r) for r in self._conn.execute(sql, tuple(filters.values()))]
        for r in rows:
            for key in ("params", "spec", "packages"):
                if key in r and isinstance(r[key], str):
                    r[key] = json.loads(r[key])
        return rows

    def results(self, *, done_only: bool = False, **filters: Any) -> list[dict[str, Any]]:
        """Result rows matching equality filters on any column (e.g. ``experiment="demo"``).

        ``done_only=True`` keeps rows of finished runs only (reports, leaderboard, claims): a run
        that failed or was killed half-way keeps its rows in the store, but they are not shown.
        """
        return self._select("results", filters, done_only=done_only)

    def runs(self, **filters: Any) -> list[dict[str, Any]]:
        """Run rows matching equality filters."""
        return self._select("runs", filters)

    def checks(self, *, done_only: bool = False, **filters: Any) -> list[dict[str, Any]]:
        """Checklist rows matching equality filters (``done_only``: of finished runs only)."""
        return self._select("checks", filters, done_only=done_only)

    def finished_run(self, eval_key: str, experiment: str | None = None) -> dict[str, Any] | None:
        """The latest ``done`` run with this eval key (and experiment name), if any (evaluation cache)."""
        sql = "SELECT * FROM runs WHERE eval_key=? AND status='done'"
        args: tuple[Any, ...] = (eval_key,)
        if experiment is not None:
            sql, args = sql + " AND name=?", (*args, experiment)
        rows = self._conn.execute(sql + " ORDER BY id DESC LIMIT 1", args).fetchall()
        return dict(rows[0]) if rows else None

    def experiments(self) -> list[str]:
        """Names of experiments that have result rows."""
        return [r[0] for r in self._conn.execute("SELECT DISTINCT experiment FROM results ORDER BY experiment")]

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- the shipped snapshot ----------------------------------------------------------------------
# A text copy of a store's finished runs, committed to git so that a fresh clone has results: JSON Lines,
# one run a line with its rows nested, keys sorted, runs sorted by (name, start), floats as JSON's repr
# writes them (exact round trip). Store-local ids are left out: they would change every line on re-export.

_RUN_FIELDS = (
    "name",
    "kind",
    "train_key",
    "eval_key",
    "spec",
    "status",
    "code_version",
    "packages",
    "host",
    "started_at",
    "ended_at",
    "message",
)
_RESULT_FIELDS = (
    "experiment",
    "model",
    "dataset",
    "split",
    "attack",
    "params",
    "eps",
    "metric",
    "value",
    "n",
    "seed",
    "seconds",
    "approximate",
    "created_at",
)
_CHECK_FIELDS = ("experiment", "model", "name", "passed", "value", "threshold", "advice", "created_at")
#: Keys a snapshot line must hold (the others may be absent or null), with their JSON types.
_REQUIRED = {
    "run": {"name": str, "kind": str, "spec": dict, "started_at": (int, float), "results": list, "checks": list},
    "result": {"experiment": str, "model": str, "dataset": str, "attack": str, "metric": str},
    "check": {"experiment": str, "model": str, "name": str},
}
#: Values of columns a snapshot line may leave out (the store's own defaults).
_RESULT_DEFAULTS: dict[str, Any] = {"split": "test", "params": {}, "approximate": 0, "created_at": 0.0}
_CHECK_DEFAULTS: dict[str, Any] = {"advice": "", "created_at": 0.0}


def shipped_snapshot_path() -> Path | None:
    """The repository's ``results/snapshot.jsonl``, or ``None`` where it is absent (an installed wheel)."""
    path = Path(__file__).resolve().parents[2] / "results" / "snapshot.jsonl"
    return path if path.is_file() else None


def export_snapshot(store: ResultsStore, path: str | os.PathLike[str]) -> int:
    """Write every finished run of ``store`` (spec, versions, host, times, rows, checks) to a JSON Lines file.

    The file is deterministic: the same store gives the same bytes, so a re-export diffs run by run.
    It is written to a temporary file first and then renamed, so an interrupted export leaves the old
    snapshot whole. Returns the number of runs written.
    """
    rows: dict[int, list[dict[str, Any]]] = {}
    for r in store.results(done_only=True):
        rows.setdefault(r["run_id"], []).append({k: r[k] for k in _RESULT_FIELDS})
    checks: dict[int, list[dict[str, Any]]] = {}
    for c in store.checks(done_only=True):
        checks.setdefault(c["run_id"], []).append({k: c[k] for k in _CHECK_FIELDS})
    runs = sorted(store.runs(status="done"), key=lambda r: (r["name"], r["started_at"], r["eval_key"] or "", r["id"]))
    lines = [
        json.dumps(
            {k: run[k] for k in _RUN_FIELDS}
            | {"results": rows.get(run["id"], []), "checks": checks.get(run["id"], [])},
            sort_keys=True,
            ensure_ascii=False,
        )
        for run in runs
    ]
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.tmp.{os.getpid()}")
    tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    os.replace(tmp, target)
    return len(lines)


def _snapshot_error(path: Path, lineno: int, what: str) -> StoreError:
    return StoreError(
        f"{path}, line {lineno}: {what}. The snapshot is corrupt: restore it (git checkout {path.name}) "
        "or write it again from a store (`make snapshot`)."
    )


def _checked(obj: Any, what: str, path: Path, lineno: int) -> dict[str, Any]:
    """``obj`` when it is a JSON object holding the keys :data:`_REQUIRED` names for ``what``, with their types."""
    if not isinstance(obj, dict):
        raise _snapshot_error(path, lineno, f"a {what} is a JSON object, not {type(obj).__name__}")
    for key, kind in _REQUIRED[what].items():
        if not isinstance(obj.get(key), kind) or isinstance(obj.get(key), bool):
            raise _snapshot_error(path, lineno, f"a {what} needs the key {key!r} (got {describe_value(obj.get(key))})")
    return obj


def _read_snapshot(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """``(line, run)`` for every run of a snapshot file, each checked (one error naming the file and line)."""
    if not path.is_file():
        raise StoreError(f"{path}: no such snapshot file. Write one with `neurorobust store export --to {path}`.")
    runs = []
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise _snapshot_error(path, lineno, "not UTF-8 text") from None
            if not line.strip():
                continue
            try:
                run = json.loads(line)
            except json.JSONDecodeError as exc:
                raise _snapshot_error(path, lineno, f"not valid JSON ({exc.msg}, column {exc.colno})") from None
            _checked(run, "run", path, lineno)
            for r in run["results"]:
                _checked(r, "result", path, lineno)
            for c in run["checks"]:
                _checked(c, "check", path, lineno)
            runs.append((lineno, run))
    return runs


def load_snapshot(path: str | os.PathLike[str], into: str | os.PathLike[str] = ":memory:") -> ResultsStore:
    """A results store holding the runs of a snapshot written by :func:`export_snapshot`.

    Parameters
    ----------
    path : path
        The JSON Lines snapshot.
    into : path, default=':memory:'
        The SQLite store to import into (a new or empty one); by default an in-memory store.

    Every value is kept as written (times, code version, packages, host). Runs get ids in the order
    they finished, so the latest run per seed is the one it was in the store they came from. The
    returned store's ``path`` names the snapshot (reports print it as their source).

    Raises
    ------
    StoreError
        The snapshot is missing, or a line is not a run (the message names the file and the line).
    """
    source = Path(path)
    runs = _read_snapshot(source)
    store = ResultsStore(into)
    conn = store._conn
    try:
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            for lineno, run in sorted(runs, key=lambda item: _finish_order(item[1])):
                try:
                    _insert_run(conn, run)
                except (sqlite3.Error, TypeError, ValueError) as exc:
                    raise _snapshot_error(source, lineno, f"a value cannot be stored ({exc})") from None
    except StoreError:
        store.close()
        raise
    if str(into) == ":memory:":
        store.path = source
    return store


def _finish_order(run: Mapping[str, Any]) -> tuple[float, float]:
    """Sort key giving runs the ids a store gave them: a store numbers a run when it is recorded, which
    for a sweep's runs (written whole at their end) is the order they finished, not the one they started."""
    ended = run.get("ended_at")
    return (ended if isinstance(ended, (int, float)) else run["started_at"], run["started_at"])


def _insert(table: str, fields: tuple[str, ...]) -> str:
    return f"INSERT INTO {table} ({', '.join(fields)}) VALUES ({','.join('?' * len(fields))})"


_INSERT_SNAPSHOT_RUN = _insert("runs", _RUN_FIELDS)
_INSERT_SNAPSHOT_RESULT = _insert("results", ("run_id", *_RESULT_FIELDS))
_INSERT_SNAPSHOT_CHECK = _insert("checks", ("run_id", *_CHECK_FIELDS))


def _insert_run(conn: sqlite3.Connection, run: Mapping[str, Any]) -> None:
    """Insert one snapshot run with its rows and checks (inside the caller's transaction)."""
    cur = conn.execute(_INSERT_SNAPSHOT_RUN, [_column(run, k, "done" if k == "status" else None) for k in _RUN_FIELDS])
    run_id = cur.lastrowid
    conn.executemany(
        _INSERT_SNAPSHOT_RESULT,
        [(run_id, *(_column(r, k, _RESULT_DEFAULTS.get(k)) for k in _RESULT_FIELDS)) for r in run["results"]],
    )
    conn.executemany(
        _INSERT_SNAPSHOT_CHECK,
        [(run_id, *(_column(c, k, _CHECK_DEFAULTS.get(k)) for k in _CHECK_FIELDS)) for c in run["checks"]],
    )


def _column(row: Mapping[str, Any], key: str, default: Any) -> Any:
    """A snapshot value as its SQLite column holds it (the JSON columns as text, as the store writes them)."""
    value = row.get(key, default)
    if value is None:
        value = default
    if key in ("spec", "params"):
        return json.dumps(value if value is not None else {}, sort_keys=True, default=str)
    if key == "packages":
        return None if value is None else json.dumps(value)
    return value


def _finished_runs(path: Path) -> int:
    """How many finished runs a store file holds, read without writing to it (0 for an empty file)."""
    try:
        conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
        try:
            return int(conn.execute("SELECT COUNT(*) FROM runs WHERE status='done'").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return 0
        raise StoreError(f"{path}: not a usable SQLite results store ({exc}).") from None
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path}: not a usable SQLite results store ({exc}).") from None


def open_results(path: str | os.PathLike[str] | None = None, *, shipped: bool = True) -> tuple[ResultsStore, str]:
    """The store that reports and the leaderboard read, and one line saying where its runs come from.

    Parameters
    ----------
    path : path, optional
        The user's store (default :func:`default_store_path`).
    shipped : bool, default=True
        Use the shipped snapshot (:func:`shipped_snapshot_path`): alone when the user's store is
        missing or holds no finished run; otherwise the user's store is merged over it (its runs
        replace the snapshot's runs of the same evaluation and, being newer, win per seed). The
        merge goes into an in-memory copy of the snapshot: the user's store is never written.

    Returns
    -------
    store : ResultsStore
        Its ``path`` (which reports print as their source) is the user's store, or the snapshot when
        only the shipped results are read.
    source : str
        e.g. ``shipped results (results/snapshot.jsonl, 117 runs)``.

    Raises
    ------
    StoreError
        No store with results and no shipped snapshot to fall back on.
    """
    user = Path(path) if path is not None else default_store_path()
    finished = _finished_runs(user) if user.is_file() else 0
    snapshot = shipped_snapshot_path() if shipped else None
    if snapshot is None:
        if not user.is_file():
            why = "--no-shipped was given" if not shipped else "no shipped snapshot (results/snapshot.jsonl) here"
            raise StoreError(
                f"No results store at {user} and {why}. "
                "Run `neurorobust evaluate SPEC` or `neurorobust sweep SPEC` first."
            )
        return ResultsStore(user), f"your store ({user}, {finished} runs)"
    where = _shown(snapshot)
    store = load_snapshot(snapshot)
    shipped_runs = len(store.runs())
    if not finished:
        return store, f"shipped results ({where}, {shipped_runs} runs)"
    store.merge(user, replace=True)
    store.path = user  # reports name their source by the store's path: the user's runs are what they asked about
    return store, f"your store ({user}, {finished} runs) + shipped results ({where}, {shipped_runs} runs)"


def _shown(path: Path) -> str:
    """``path`` relative to the current directory when it is under it (``results/snapshot.jsonl``)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
