"""Estimates before work: how long a spec's training will take on this machine, measured, not guessed.

:func:`estimate_spec` lists every training run a spec plans (each sweep variant and seed, the control
network a mechanism starts from, the transfer attack's source models), builds each model and its data
as the run would, and times a few steps of the real training step (:func:`~neurorobust.training.fit`
on a few batches, adversarial objective included) after one warm-up step; the estimate is that time
per step times the planned steps. Runs whose checkpoint exists cost nothing; an unfinished run
counts only the steps it has left. Nothing is saved: no checkpoint, no training state, no result.

What is not estimated is said so: a mechanism's own phase (sleep, a cerebellum head, distillation,
fine-tuning), work a model does in its ``on_epoch_start`` hook (the Krotov-Hopfield layer's
unsupervised learning), and the evaluation.

:func:`tier_times` gives ``neurorobust list experiments`` each tier's time without building any model:
the measured durations of the store's finished runs, else the last cached estimate
(``<runs_dir>/estimates.json``, written by ``neurorobust repro NAME --estimate``).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import platform
import statistics
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..data import Dataset, balanced_subset, load_dataset
from ..specs import ExperimentSpec, canonical_experiment, eval_key, load_spec, train_key
from ..store import ResultsStore
from ..training import checkpoint_paths, fit
from ..training.adversarial import AdversarialObjective
from ..training.checkpoint import load_train_state, partial_state_path
from ..types import ProgressFn
from .runner import build_model, default_runs_dir, fit_settings, model_label, stage_datasets, transfer_source_specs
from .sweep import expand_sweep

__all__ = [
    "ESTIMATES_FILE",
    "MAX_TIMED_STEPS",
    "MIN_TIMED_SECONDS",
    "SpecEstimate",
    "TrainingEstimate",
    "estimate_spec",
    "format_seconds",
    "planned_training",
    "save_estimate",
    "tier_times",
]

#: The cached estimates, under the runs folder: ``{experiment: {"default" | "full": {...}}}``.
ESTIMATES_FILE = "estimates.json"

#: Training steps are timed for at least this long (beyond ``timed_steps``), so that the median step
#: spans more than a moment of a shared machine's load; and at most this many steps.
MIN_TIMED_SECONDS = 2.0
MAX_TIMED_STEPS = 50


@dataclass
class TrainingEstimate:
    """The estimate of one planned training run (``seconds`` is ``None`` where it is not estimated)."""

    label: str
    seed: int
    role: str  # "train", "control", "transfer source", "mechanism"
    train_key: str
    steps: int = 0  # optimiser steps still to do
    seconds_per_step: float | None = None
    seconds: float | None = None
    note: str = ""


@dataclass
class SpecEstimate:
    """Every planned training run of a spec, and the totals."""

    name: str
    full: bool
    workers: int
    runs: list[TrainingEstimate] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def total_seconds(self) -> float:
        """The estimated compute time, summed over the runs (the unestimated ones count nothing)."""
        return sum(r.seconds or 0.0 for r in self.runs)

    @property
    def wall_seconds(self) -> float:
        """The total spread over the workers that run a sweep's variants side by side."""
        return self.total_seconds / max(1, self.workers)

    @property
    def complete(self) -> bool:
        """Whether every planned run has an estimate (no mechanism phase, no hook left out)."""
        return all(r.seconds is not None and "not timed" not in r.note for r in self.runs)


def planned_training(spec: ExperimentSpec) -> list[tuple[str, ExperimentSpec]]:
    """The training runs ``spec`` plans, in order, once each by train key: ``(role, spec)`` with role
    ``train`` (a variant's own network), ``control`` (the network a mechanism starts from), ``mechanism``
    (the mechanism's phase on it) or ``transfer source``."""
    planned: dict[str, tuple[str, ExperimentSpec]] = {}
    for variant in expand_sweep(spec):
        run = variant.spec
        if run.mechanism is not None:
            control = run.model_copy(update={"mechanism": None})
            planned.setdefault(train_key(control), ("control", control))
            planned.setdefault(train_key(run), ("mechanism", run))
        else:
            planned.setdefault(train_key(run), ("train", run))
        for source in transfer_source_specs(run).values():
            planned.setdefault(train_key(source), ("transfer source", source))
    return list(planned.values())


def estimate_spec(
    spec: ExperimentSpec,
    *,
    full: bool = False,
    runs_dir: str | Path | None = None,
    workers: int | None = None,
    timed_steps: int = 5,
    progress: ProgressFn | None = None,
) -> SpecEstimate:
    """Time a few training steps of every run ``spec`` plans and scale them to the planned steps.

    Parameters
    ----------
    spec : ExperimentSpec
        As loaded for the tier to estimate (``load_spec(path, full=...)``).
    full : bool, default=False
        Only recorded with the estimate (the spec is already the tier's).
    runs_dir : path, optional
        The runs folder whose ``checkpoints/`` hold finished and unfinished runs (default:
        :func:`~neurorobust.experiments.runner.default_runs_dir`); nothing is written there.
    workers : int, optional
        The sweep's parallel workers (default: the cores); each times its steps on one thread, as
        a sweep worker trains. A spec without a sweep trains in one process on every thread.
    timed_steps : int, default=5
        Steps timed at least, after a warm-up step (more until :data:`MIN_TIMED_SECONDS` passed).
    progress : callable, optional
        Receives ``{"stage": "estimate", "step", "steps", "what"}`` before each run is timed.
    """
    folder = Path(runs_dir or default_runs_dir()) / "checkpoints"
    pool = workers or os.cpu_count() or 1
    # `repro` and `sweep` run a spec with a [sweep] table on a process pool, one torch thread per worker
    # when there are several workers; a spec without one trains in this process on every thread
    one_thread = spec.sweep is not None and pool > 1
    out = SpecEstimate(spec.name, full, min(pool, len(expand_sweep(spec))) if spec.sweep is not None else 1)
    plan = planned_training(spec)
    datasets: dict[tuple[Any, ...], Dataset] = {}
    before = torch.get_num_threads()
    if one_thread:
        torch.set_num_threads(1)
    try:
        for i, (role, run) in enumerate(plan):
            if progress is not None:
                progress({"stage": "estimate", "step": i + 1, "steps": len(plan), "what": model_label(run)})
            out.runs.append(_estimate_run(role, run, folder, datasets, timed_steps))
    finally:
        torch.set_num_threads(before)
    out.notes.append("evaluation: not estimated (its attacks' time is not timed here)")
    return out


def _estimate_run(
    role: str, run: ExperimentSpec, folder: Path, datasets: dict[tuple[Any, ...], Dataset], timed_steps: int
) -> TrainingEstimate:
    key = train_key(run)
    est = TrainingEstimate(model_label(run), run.seed, role, key)
    if all(p.is_file() for p in checkpoint_paths(folder, key)):
        est.seconds, est.note = 0.0, "cached"
        return est
    if role == "mechanism":
        est.note = f"mechanism {run.mechanism.name if run.mechanism else ''}: not estimated"
        return est
    data_key = (run.data.name, str(run.data.data_dir), run.data.validation, run.evaluate.split)
    if data_key not in datasets:
        datasets[data_key] = stage_datasets(run, load_dataset(run.data.name, run.data.data_dir))[0]
    data = datasets[data_key]
    settings = fit_settings(run)
    n = min(run.data.train_subset or len(data.y_train), len(data.y_train))
    held = 0
    if settings.get("adversarial"):
        objective = AdversarialObjective(**{k: v for k, v in settings["adversarial"].items() if v is not None})
        held = objective.check_n if objective.check_every else 0
    per_epoch = math.ceil(max(0, n - held) / settings["batch_size"])
    done = _steps_done(partial_state_path(folder, key), per_epoch)
    if done is None:
        est.seconds, est.note = 0.0, "trained, checkpoint not yet written"
        return est
    est.steps = max(0, per_epoch * settings["epochs"] - done)
    if done:
        est.note = f"resumes after {done} steps"
    if est.steps == 0:
        est.seconds = 0.0
        return est
    model = build_model(run, data)
    est.seconds_per_step, before_first = _time_steps(model, data, run, settings, held, timed_steps)
    est.seconds = est.seconds_per_step * est.steps
    if callable(getattr(model, "on_epoch_start", None)) and before_first > max(0.5, 2 * est.seconds_per_step):
        # work the hook does on the whole training set (e.g. KH learning) cannot be scaled from a few batches
        est.note = "plus its on_epoch_start work (not timed)"
    return est


def _steps_done(partial: Path, per_epoch: int) -> int | None:
    """Steps an unfinished run has saved (0 when it has no training state, ``None`` when it has finished)."""
    state = load_train_state(partial) if partial.is_file() else None
    if state is None:
        return 0
    if state.get("finished"):
        return None
    step = (state.get("partial") or {}).get("step", 0)
    return int(state.get("epochs_done", 0)) * per_epoch + int(step)


def _time_steps(
    model: torch.nn.Module,
    data: Dataset,
    run: ExperimentSpec,
    settings: dict[str, Any],
    held: int,
    timed_steps: int,
) -> tuple[float, float]:
    """Seconds per training step, the median over at least ``timed_steps`` steps after a warm-up step, and
    over more (up to :data:`MAX_TIMED_STEPS`) until :data:`MIN_TIMED_SECONDS` have passed; and the seconds
    before the first step beyond one step's time (the model's ``on_epoch_start`` hook)."""
    batch = settings["batch_size"]
    steps = max(timed_steps, MAX_TIMED_STEPS)
    idx = balanced_subset(data.y_train, (1 + steps) * batch + held, seed=run.seed)
    stamps: list[float] = []

    def stamp(event: dict[str, Any]) -> None:
        if event.get("stage") != "train":
            return
        stamps.append(time.perf_counter())
        if len(stamps) > timed_steps and stamps[-1] - stamps[0] >= MIN_TIMED_SECONDS:
            raise _Timed

    # one epoch of these batches, stopped when timed; the schedule at epoch 0 is what it is
    start = time.perf_counter()
    with contextlib.suppress(_Timed):
        fit(model, data.x_train[idx], data.y_train[idx], **{**settings, "epochs": 1}, progress=stamp)
    if len(stamps) < 2:
        return float("nan"), 0.0
    # the median step: one step slowed by another process on a shared machine does not scale up to hours
    step = statistics.median(b - a for a, b in itertools.pairwise(stamps))
    return step, stamps[0] - start - step


class _Timed(Exception):  # noqa: N818 - a signal that stops the timing run, not an error
    """Raised from the progress hook once enough steps are timed."""


def format_seconds(seconds: float | None) -> str:
    """``45 s``, ``12.3 min``, ``3.2 h``; an em dash for ``None``."""
    if seconds is None or math.isnan(seconds):
        return "—"
    if seconds < 90:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def save_estimate(estimate: SpecEstimate, runs_dir: str | Path | None = None) -> Path:
    """Cache the estimate's totals in ``<runs_dir>/estimates.json`` (read by :func:`tier_times`); atomic."""
    path = Path(runs_dir or default_runs_dir()) / ESTIMATES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        cached = json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError:
        cached = {}
    cached.setdefault(estimate.name, {})["full" if estimate.full else "default"] = {
        "seconds": estimate.total_seconds,
        "wall_seconds": estimate.wall_seconds,
        "workers": estimate.workers,
        "complete": estimate.complete,
        "runs": len(estimate.runs),
        "at": time.time(),
        "host": platform.node(),
    }
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(json.dumps(cached, indent=2, sort_keys=True))
    os.replace(tmp, path)
    return path


def tier_times(
    configs: list[Path],
    *,
    store_path: str | Path | None = None,
    runs_dir: str | Path | None = None,
    store: ResultsStore | None = None,
) -> dict[str, dict[str, str]]:
    """Each experiment's time per tier (``default``, ``full``), as text, without building a model.

    Measured: the durations of the store's finished runs of that experiment and tier (a tier's runs
    are known by their eval keys), plus the training time saved in each run's checkpoint where the
    run's own duration is its evaluation only; "(k of n runs)" when only some are done. Else the
    cached estimate of ``neurorobust repro NAME --estimate`` ("est."), else "not measured".
    """
    runs_dir = Path(runs_dir or default_runs_dir())
    try:
        cached = json.loads((runs_dir / ESTIMATES_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        cached = {}
    stored: dict[str, list[dict[str, Any]]] = {}
    store_file = Path(store_path) if store_path is not None else None
    if store is not None:  # an open store, e.g. the user's merged over the shipped results
        for run in store.runs(status="done"):
            stored.setdefault(canonical_experiment(run["name"]), []).append(run)
    elif store_file is not None and store_file.is_file():
        with ResultsStore(store_file) as st:
            for run in st.runs(status="done"):
                stored.setdefault(canonical_experiment(run["name"]), []).append(run)
    out: dict[str, dict[str, str]] = {}
    for path in configs:
        out[path.stem] = {}
        for tier in ("default", "full"):
            try:
                with warnings.catch_warnings():  # a listing, not a run: the config's own warnings come with `repro`
                    warnings.simplefilter("ignore")
                    spec = load_spec(path, full=tier == "full")
                    keys = {v.eval_key for v in expand_sweep(spec)} if spec.sweep is not None else {eval_key(spec)}
            except Exception:  # a broken or Bayesian config: listed without a time
                out[path.stem][tier] = "—"
                continue
            out[path.stem][tier] = _tier_text(
                stored.get(spec.name, []), keys, cached.get(spec.name, {}).get(tier), runs_dir
            )
    return out


def _tier_text(runs: list[dict[str, Any]], keys: set[str], cached: dict[str, Any] | None, runs_dir: Path) -> str:
    latest: dict[str, dict[str, Any]] = {}
    for run in sorted(runs, key=lambda r: r["id"]):  # the latest run of each key, as the report shows it
        if run["eval_key"] in keys and run["ended_at"] is not None:
            latest[run["eval_key"]] = run
    if latest:
        seconds = 0.0
        for run in latest.values():
            seconds += run["ended_at"] - run["started_at"]
            if run["kind"] != "sweep":  # a sweep run's duration includes its training; an evaluate run's does not
                seconds += _train_seconds(runs_dir, run["train_key"])
        part = "" if len(latest) == len(keys) else f" ({len(latest)} of {len(keys)} runs)"
        return f"{format_seconds(seconds)} measured{part}"
    if cached:
        what = "" if cached.get("complete") else ", training only"
        return f"~{format_seconds(cached.get('wall_seconds'))} est.{what}"
    return "not measured"


def _train_seconds(runs_dir: Path, key: str | None) -> float:
    if not key:
        return 0.0
    try:
        meta = json.loads(checkpoint_paths(runs_dir / "checkpoints", key)[1].read_text())
    except (OSError, json.JSONDecodeError):
        return 0.0
    return float(meta.get("train_seconds") or 0.0)
