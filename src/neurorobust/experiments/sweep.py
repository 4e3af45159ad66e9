"""Sweeps: grids, random and Bayesian searches over specs, on a local process pool or on Ray.

A spec's ``[sweep]`` table declares a grid (lists for any dotted key) and/or a search (ranges),
each run for every seed. Every variant is a complete spec keyed by its train and eval keys
(DESIGN §1), so a sweep killed and restarted runs only what is missing: finished models load from
the checkpoint cache, and a variant killed while training resumes from its last saved training state
(``<train_key>.partial.pt``, every epoch and every 10 minutes within one). Workers return their rows
to the driver, which alone writes to SQLite, one transaction per run (:meth:`ResultsStore.record_run`):
a run is in the store whole or not at all. A failed run is recorded with its error and the sweep
goes on.

Backends
--------
``local``
    A process pool sized to the cores, one torch thread per worker; grid and random search.
``ray``
    Ray core tasks (``num_cpus=1`` each); ``address="auto"`` joins an existing cluster. Bayesian
    search uses Ray Tune with Optuna's TPE sampler (``pip install neurorobust[ray]``).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidParameterError, SpecError
from ..specs import ExperimentSpec, ObjectiveSpec, RangeSpec, _deep_merge, eval_key, parse_spec, train_key
from ..store import ResultsStore, code_version, package_versions
from ..types import ProgressFn

__all__ = ["SweepReport", "Variant", "expand_sweep", "run_sweep", "run_variant"]


@dataclass(frozen=True)
class Variant:
    """One run of a sweep: a complete spec (no ``[sweep]`` table) and what was overridden."""

    spec: ExperimentSpec
    overrides: dict[str, Any]

    @property
    def train_key(self) -> str:
        return train_key(self.spec)

    @property
    def eval_key(self) -> str:
        return eval_key(self.spec)


@dataclass
class SweepReport:
    """What a sweep did: counts, failures (label, error) and wall time."""

    total: int = 0
    skipped: int = 0
    done: int = 0
    failed: int = 0
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)
    best: dict[str, Any] | None = None


def _set_path(raw: dict[str, Any], path: str, value: Any) -> None:
    node = raw
    parts = path.split(".")
    for part in parts[:-1]:
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            raise SpecError(f"sweep key {path!r}: {part!r} is not a table in the spec")
        node = nxt
    node[parts[-1]] = value


def _short(path: str) -> str:
    return path.replace("model.params.", "").replace("mechanism.params.", "").replace("train.", "")


def _variant(
    base: dict[str, Any], overrides: dict[str, Any], seed: int, source: str, named: dict[str, Any] | None = None
) -> Variant:
    raw = {k: v for k, v in base.items() if k not in ("sweep", "full")}
    raw = _deep_copy(raw)
    if named:
        raw = _deep_merge(raw, _deep_copy(named))
    for path, value in overrides.items():
        _set_path(raw, path, value)
    raw["seed"] = seed
    label = raw.get("label") or raw.get("model", {}).get("name", "cnn_mnist")
    if not raw.get("label") and raw.get("mechanism"):
        label += f"+{raw['mechanism']['name']}"
    elif not raw.get("label") and raw.get("mechanisms"):
        label += "".join(f"+{m['name']}" for m in raw["mechanisms"] if isinstance(m, dict) and "name" in m)
    if overrides:
        label += "[" + ",".join(f"{_short(k)}={_fmt(v)}" for k, v in sorted(overrides.items())) + "]"
    raw["label"] = label
    what = (named or {}).get("label") or overrides or "base"
    spec = parse_spec(raw, source=f"{source} (sweep variant {what}, seed {seed})")
    return Variant(spec, {**({"variant": named["label"]} if named else {}), **overrides})


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return "x".join(_fmt(x) for x in v)
    return str(v)


def _deep_copy(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _deep_copy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_deep_copy(v) for v in obj]
    return obj


def sample_space(space: dict[str, RangeSpec], n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` seeded random points of a search space (log-uniform where ``log``)."""
    rng = np.random.default_rng(seed)
    points = []
    for _ in range(n):
        point: dict[str, Any] = {}
        for key, r in sorted(space.items()):
            if r.choices is not None:
                point[key] = r.choices[int(rng.integers(len(r.choices)))]
                continue
            if r.low is None or r.high is None:
                raise SpecError(f"[sweep.search] {key}: give choices, or low and high")
            if r.log:
                value = float(math.exp(rng.uniform(math.log(r.low), math.log(r.high))))
            else:
                value = float(rng.uniform(r.low, r.high))
            point[key] = round(value) if r.integer else value
        points.append(point)
    return points


def expand_sweep(spec: ExperimentSpec) -> list[Variant]:
    """Every variant of a grid or random search, times every seed (no sweep: the spec itself).

    Raises
    ------
    SpecError
        A grid or search value that makes an invalid spec (the message names the key), or a
        Bayesian search (which is adaptive: use :func:`run_sweep` with ``backend='ray'``).
    """
    base = spec.model_dump(mode="json", exclude_defaults=False)
    sweep = spec.sweep
    if sweep is None:
        return [_variant(base, {}, spec.seed, spec.name)]
    combos: list[dict[str, Any]] = [{}]
    if sweep.grid:
        keys = sorted(sweep.grid)
        combos = [dict(zip(keys, values, strict=True)) for values in itertools.product(*(sweep.grid[k] for k in keys))]
    if sweep.search is not None:
        if sweep.search.method == "bayes":
            raise SpecError(f"{spec.name}: a Bayesian search is adaptive; run it with --backend ray")
        points = sample_space(sweep.search.space, sweep.search.samples, sweep.search.seed)
        combos = [{**c, **p} for c in combos for p in points]
    named: list[dict[str, Any] | None] = list(sweep.variants) or [None]
    variants = [
        _variant(base, c, seed, spec.name, {k: x for k, x in v.items() if k != "seeds"} if v else None)
        for v in named
        for c in combos
        for seed in ((v or {}).get("seeds") or sweep.seeds)
    ]
    labels = {v.spec.label for v in variants}
    for v in variants:
        if v.spec.twin and v.spec.twin not in labels:
            raise SpecError(
                f"{spec.name}: variant {v.spec.label!r} names twin {v.spec.twin!r}, which is no variant of this "
                f"experiment (variants: {', '.join(sorted(labels))})"
            )
    return variants


def run_variant(
    spec_json: dict[str, Any], runs_dir: str, experiment: str, threads: int | None = None
) -> dict[str, Any]:
    """Train (cached) and evaluate one variant; returns rows and checks as plain data (never raises).

    This is what a worker runs (process pool or Ray task): it touches no SQLite file.
    """
    started = time.time()
    try:
        import torch

        if threads:
            torch.set_num_threads(threads)
        flush_denormals()
        from ..data import load_dataset
        from ..evaluation.suite import evaluate
        from .runner import model_label, stage_datasets, train_stage, transfer_source

        spec = parse_spec(spec_json, source="<sweep variant>")
        train_data, eval_data = stage_datasets(spec, load_dataset(spec.data.name, spec.data.data_dir))
        model, _, _ = train_stage(spec, train_data, runs_dir=Path(runs_dir))
        source = transfer_source(spec, train_data, runs_dir=Path(runs_dir))
        result = evaluate(
            model,
            eval_data,
            spec.evaluate,
            experiment=experiment,
            label=model_label(spec),
            seed=spec.seed,
            source_model=source,
            split=spec.evaluate.split,
        )
        return {
            "rows": [asdict(r) for r in result.rows],
            "checks": [asdict(c) for c in result.checks],
            "error": None,
            "started": started,
            "host": os.uname().nodename,
            "code": code_version(),
            "packages": package_versions(),
        }
    except Exception as exc:  # a failed run is recorded and the sweep goes on
        return {
            "rows": [],
            "checks": [],
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(),
            "started": started,
            "host": os.uname().nodename,
        }


def crashed_payload(exc: BaseException) -> dict[str, Any]:
    """The payload of a run whose worker died before it could report (recorded as failed, retried next time)."""
    return {
        "rows": [],
        "checks": [],
        "error": f"worker died: {type(exc).__name__}: {exc}",
        # without the local frames: a broken pool re-raises one exception object for every pending
        # future, and its traceback grows by these frames each time (the causes keep the worker's)
        "traceback": "".join(traceback.format_exception(type(exc), exc, None)),
        "started": time.time(),
    }


def _objective(rows: list[dict[str, Any]], objective: ObjectiveSpec) -> float | None:
    """The objective's value among a run's rows; ``None`` when absent or when the run's clean accuracy
    is below ``objective.min_clean`` (a search never picks a network that lost its task)."""
    if objective.min_clean is not None:
        clean = [r["value"] for r in rows if r["attack"] == "clean" and r["metric"] == "accuracy"]
        if not clean or clean[0] is None or clean[0] < objective.min_clean:
            return None
    for r in rows:
        if (
            r["attack"] == objective.attack
            and r["metric"] == objective.metric
            # a metric without an eps (a minimal eps, a score) matches whatever eps the objective names
            and (objective.eps is None or r["eps"] is None or math.isclose(r["eps"], objective.eps))
        ):
            return r["value"]
    return None


def flush_denormals() -> None:
    """Make this process's CPU kernels treat subnormal floats as zero (``torch.set_flush_denormal``).

    Weight decay leaves weights that only ever decay (those of MNIST's always-black border pixels) at
    subnormal values, ~1e-40; on x86 every multiply with one takes a slow microcode path. Measured here:
    a 2,000-unit MLP trained with L2 1e-3 had 141,175 subnormal weights and its full attack suite took
    2,105 s against 212-399 s for the same network without L2. Flushing changes values below 1.2e-38
    only. Our own processes (the CLI and every sweep worker) call this; in your own scripts, call
    ``torch.set_flush_denormal(True)`` yourself.
    """
    import torch

    torch.set_flush_denormal(True)


def _init_worker(threads: int | None, parent: int) -> None:
    import threading

    import torch

    if threads:
        torch.set_num_threads(threads)

    def exit_with_parent() -> None:
        # a sweep stopped by SIGTERM or SIGKILL cannot shut its pool down: without this its workers ran
        # on as orphans, holding both cores; their unfinished runs are re-run by the next sweep
        while True:
            time.sleep(2.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=exit_with_parent, name="exit-with-parent", daemon=True).start()


def run_sweep(
    spec: ExperimentSpec,
    *,
    store: ResultsStore,
    backend: str = "local",
    workers: int | None = None,
    address: str | None = None,
    experiment: str | None = None,
    runs_dir: str | os.PathLike[str] = "runs",
    force: bool = False,
    progress: ProgressFn | None = None,
) -> SweepReport:
    """Run every variant of ``spec`` that the store does not hold yet, and record each as it finishes.

    Parameters
    ----------
    spec : ExperimentSpec
        With or without a ``[sweep]`` table.
    store : ResultsStore
        Written by this (driver) process only.
    backend : {'local', 'ray'}, default='local'
    workers : int, optional
        Parallel workers (default: the number of cores; with Ray and an address, the cluster's CPUs).
    address : str, optional
        Ray cluster address (``"auto"`` joins the running cluster); default starts a local instance.
    experiment : str, optional
        Experiment name in the store (default: the spec's name).
    runs_dir : path, default='runs'
        Checkpoint cache shared by the workers (a shared path on a cluster).
    force : bool, default=False
        Rerun variants already in the store.
    progress : callable, optional
        Receives ``{"stage": "sweep", "step", "steps", "what"}`` after each run.
    """
    if backend not in ("local", "ray"):
        raise InvalidParameterError("backend", "run_sweep", "'local' or 'ray'", backend)
    experiment = experiment or spec.name
    runs_dir = str(Path(runs_dir).resolve())
    workers = workers or os.cpu_count() or 1
    report = SweepReport()
    start = time.perf_counter()
    if spec.sweep is not None and spec.sweep.search is not None and spec.sweep.search.method == "bayes":
        if backend != "ray":
            raise SpecError(
                f"{spec.name}: Bayesian search needs --backend ray (the local backend does grid and random search)"
            )
        from .ray_backend import run_bayes

        run_bayes(
            spec,
            store=store,
            workers=workers,
            address=address,
            experiment=experiment,
            runs_dir=runs_dir,
            report=report,
            record=_record,
            progress=progress,
        )
        report.seconds = time.perf_counter() - start
        return report
    variants = expand_sweep(spec)
    report.total = len(variants)
    pending = [v for v in variants if force or store.finished_run(v.eval_key, experiment=experiment) is None]
    report.skipped = report.total - len(pending)

    def on_result(variant: Variant, payload: dict[str, Any]) -> None:
        _record(store, experiment, variant, payload, report)
        if progress is not None:
            remaining = len(pending) - report.done - report.failed
            progress(
                {
                    "stage": "sweep",
                    "step": report.done + report.failed,
                    "steps": len(pending),
                    "what": f"done {report.done} failed {report.failed} remaining {remaining}",
                }
            )

    if pending:
        jobs = [(v, v.spec.model_dump(mode="json")) for v in pending]
        if backend == "local":
            _run_local(jobs, runs_dir, experiment, workers, on_result)
        else:
            from .ray_backend import run_ray_tasks

            run_ray_tasks(jobs, runs_dir, experiment, workers, address, on_result)
    if spec.sweep is not None and spec.sweep.search is not None:
        report.best = best_variant(store, variants, experiment, spec.sweep.search.objective)
    report.seconds = time.perf_counter() - start
    return report


def best_variant(
    store: ResultsStore, variants: list[Variant], experiment: str, objective: ObjectiveSpec
) -> dict[str, Any] | None:
    """The searched variant with the best objective (mean over its seeds), from the store."""
    scores: dict[str, list[float]] = {}
    overrides: dict[str, dict[str, Any]] = {}
    for v in variants:
        run = store.finished_run(v.eval_key, experiment=experiment)
        value = _objective(store.results(run_id=run["id"]), objective) if run is not None else None
        key = json.dumps(v.overrides, sort_keys=True, default=str)
        overrides[key] = v.overrides
        if value is not None:
            scores.setdefault(key, []).append(value)
    if not scores:
        return None
    pick = (max if objective.mode == "max" else min)(scores, key=lambda k: sum(scores[k]) / len(scores[k]))
    return {"config": overrides[pick], "objective": sum(scores[pick]) / len(scores[pick]), "seeds": len(scores[pick])}


def _record(
    store: ResultsStore, experiment: str, variant: Variant, payload: dict[str, Any], report: SweepReport
) -> None:
    failed = payload["error"] is not None
    store.record_run(
        experiment,
        "sweep",
        spec={**variant.spec.model_dump(mode="json"), "overrides": variant.overrides},
        train_key=variant.train_key,
        eval_key=variant.eval_key,
        rows=payload["rows"],
        checks=payload["checks"],
        model=variant.spec.label,
        status="failed" if failed else "done",
        message=payload.get("traceback", "") if failed else "",
        started_at=payload.get("started"),
        code=payload.get("code"),
        packages=payload.get("packages"),
        host=payload.get("host"),
    )
    if failed:
        report.failed += 1
        report.failures.append((variant.spec.label + f" (seed {variant.spec.seed})", payload["error"]))
    else:
        report.done += 1


def _run_local(
    jobs: list[tuple[Variant, dict[str, Any]]],
    runs_dir: str,
    experiment: str,
    workers: int,
    on_result: Callable[[Variant, dict[str, Any]], None],
) -> None:
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    threads = 1 if workers > 1 else None
    with ProcessPoolExecutor(
        max_workers=min(workers, len(jobs)),
        mp_context=get_context("spawn"),
        initializer=_init_worker,
        initargs=(threads, os.getpid()),
    ) as pool:
        futures = {pool.submit(run_variant, spec_json, runs_dir, experiment, threads): v for v, spec_json in jobs}
        for fut in as_completed(futures):
            try:
                payload = fut.result()
            except Exception as exc:  # a worker died (killed, out of memory): record it, go on
                payload = crashed_payload(exc)
            on_result(futures[fut], payload)
