"""The Ray backend of sweeps: core tasks for grids and random searches, Ray Tune + Optuna for Bayesian search.

Imported only when ``--backend ray`` is asked for (``pip install neurorobust[ray]``). Workers run
:func:`~neurorobust.experiments.sweep.run_variant` and send rows back to the driver, which alone writes
to SQLite; on a cluster, ``runs_dir`` (the checkpoint cache) should be a path every node can reach.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from typing import Any

from ..errors import NeuroRobustError
from ..specs import ExperimentSpec, ObjectiveSpec
from ..store import ResultsStore
from .sweep import SweepReport, Variant, _objective, _variant, crashed_payload, run_variant

__all__ = ["ray_session", "run_bayes", "run_ray_tasks"]


class ray_session:  # noqa: N801 - used as a context manager, reads like a function
    """Start (or join, with ``address``) Ray for the duration of a ``with`` block."""

    def __init__(self, workers: int, address: str | None) -> None:
        self.workers, self.address, self.started = workers, address, False

    def __enter__(self) -> ray_session:
        try:
            import ray
        except ImportError:
            raise NeuroRobustError(
                "The Ray backend needs Ray: pip install 'neurorobust[ray]' (ray[tune]==2.60.0)."
            ) from None
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
            try:
                if self.address:
                    ray.init(address=self.address, **kwargs)
                else:
                    ray.init(num_cpus=self.workers, **kwargs)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = f"the Ray cluster at {self.address!r}" if self.address else "a local Ray instance"
                raise NeuroRobustError(
                    f"Could not start or join {where}: {exc}. Check `ray status` on the head node."
                ) from None
            self.started = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self.started:
            import ray

            ray.shutdown()


def run_ray_tasks(
    jobs: list[tuple[Variant, dict[str, Any]]],
    runs_dir: str,
    experiment: str,
    workers: int,
    address: str | None,
    on_result: Callable[[Variant, dict[str, Any]], None],
) -> None:
    """One Ray task (1 CPU, 1 torch thread) per variant; results are handed to ``on_result`` as they finish."""
    import ray

    with ray_session(workers, address):
        task = ray.remote(num_cpus=1)(run_variant)
        pending = {task.remote(spec_json, runs_dir, experiment, 1): v for v, spec_json in jobs}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                try:
                    payload = ray.get(ref)
                except Exception as exc:  # worker crashed or was killed by Ray's memory monitor
                    payload = crashed_payload(exc)
                on_result(pending.pop(ref), payload)


def _previous_points(store: ResultsStore, experiment: str, spec: ExperimentSpec) -> tuple[list[dict], list[float]]:
    """Configurations a killed Bayesian search already finished (for every seed), with their objectives."""
    if spec.sweep is None or spec.sweep.search is None:
        raise NeuroRobustError(f"{spec.name}: a search needs a [sweep.search] table")
    objective = spec.sweep.search.objective
    by_config: dict[str, list[float]] = {}
    configs: dict[str, dict[str, Any]] = {}
    for run in store.runs(name=experiment, status="done", kind="sweep"):
        overrides = run["spec"].get("overrides") or {}
        if set(overrides) != set(spec.sweep.search.space):
            continue
        value = _objective(store.results(run_id=run["id"]), objective)
        if value is not None:
            key = json.dumps(overrides, sort_keys=True)
            by_config.setdefault(key, []).append(value)
            configs[key] = overrides
    keys = [k for k, v in by_config.items() if len(v) >= len(spec.sweep.seeds)]
    return [configs[k] for k in keys], [sum(by_config[k]) / len(by_config[k]) for k in keys]


def _bayes_trial(
    config: dict[str, Any],
    *,
    base: dict[str, Any],
    seeds: list[int],
    runs_dir: str,
    experiment: str,
    name: str,
    objective: dict[str, Any],
) -> None:
    """One Bayesian-search trial: every seed of one configuration; reports the mean objective."""
    from ray import tune

    goal = ObjectiveSpec(**objective)
    payloads, values = [], []
    for seed in seeds:
        variant = _variant(base, dict(config), seed, name)
        payload = run_variant(variant.spec.model_dump(mode="json"), runs_dir, experiment, 1)
        payloads.append(payload)
        values.append(_objective(payload["rows"], goal))
    finite = [v for v in values if v is not None]
    score = sum(finite) / len(finite) if finite else (-math.inf if goal.mode == "max" else math.inf)
    tune.report({"objective": score, "payloads": json.dumps(payloads, default=str)})


def run_bayes(
    spec: ExperimentSpec,
    *,
    store: ResultsStore,
    workers: int,
    address: str | None,
    experiment: str,
    runs_dir: str,
    report: SweepReport,
    record: Callable[..., None],
    progress: Callable[[dict[str, Any]], None] | None,
) -> None:
    """Bayesian search (Ray Tune with Optuna's TPE sampler); each trial runs every seed and reports the
    mean objective on the validation split. Finished trials are recorded as they complete; after a
    kill, the trials already in the store seed the sampler and only the rest are run."""
    try:
        from ray import tune
        from ray.tune.search.optuna import OptunaSearch
    except ImportError:
        raise NeuroRobustError("Bayesian search needs Ray Tune and Optuna: pip install 'neurorobust[ray]'.") from None
    if spec.sweep is None or spec.sweep.search is None:
        raise NeuroRobustError(f"{spec.name}: a search needs a [sweep.search] table")
    search, seeds = spec.sweep.search, list(spec.sweep.seeds)
    base = spec.model_dump(mode="json")
    space: dict[str, Any] = {}
    for key, r in search.space.items():
        if r.choices is not None:
            space[key] = tune.choice(r.choices)
        elif r.integer:
            low, high = int(r.low), int(r.high) + 1  # type: ignore[arg-type]
            space[key] = tune.lograndint(low, high) if r.log else tune.randint(low, high)
        else:
            space[key] = tune.loguniform(r.low, r.high) if r.log else tune.uniform(r.low, r.high)
    points, rewards = _previous_points(store, experiment, spec)
    report.total = search.samples * len(seeds)
    report.skipped = len(points) * len(seeds)
    remaining = search.samples - len(points)
    if remaining <= 0:
        return
    objective = search.objective

    trainable = functools.partial(
        _bayes_trial,
        base=base,
        seeds=seeds,
        runs_dir=runs_dir,
        experiment=experiment,
        name=spec.name,
        objective=objective.model_dump(),
    )

    class Recorder(tune.Callback):
        """Records each finished trial in the driver's store as it completes (state is not pickled:
        Tune pickles its run config for restores, and a SQLite connection cannot be)."""

        def __init__(self, hook: Callable[[Any, dict], None]) -> None:
            self.hook: Callable[[Any, dict], None] | None = hook

        def __getstate__(self) -> dict[str, Any]:
            return {"hook": None}

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            if self.hook is not None:
                self.hook(trial, result)

    def on_trial(trial: Any, result: dict) -> None:
        for seed, payload in zip(seeds, json.loads(result["payloads"]), strict=True):
            record(store, experiment, _variant(base, dict(trial.config), seed, spec.name), payload, report)
        if progress is not None:
            progress(
                {
                    "stage": "sweep",
                    "step": report.done + report.failed,
                    "steps": remaining * len(seeds),
                    "what": f"done {report.done} failed {report.failed}",
                }
            )

    searcher = OptunaSearch(
        metric="objective",
        mode=objective.mode,
        seed=search.seed,
        points_to_evaluate=points or None,
        evaluated_rewards=rewards or None,
    )
    with ray_session(workers, address):
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": 1}),
            param_space=space,
            tune_config=tune.TuneConfig(search_alg=searcher, num_samples=remaining, max_concurrent_trials=workers),
            run_config=tune.RunConfig(
                storage_path=f"{runs_dir}/ray_tune", name=experiment, verbose=0, callbacks=[Recorder(on_trial)]
            ),
        )
        grid = tuner.fit()
    best = grid.get_best_result(metric="objective", mode=objective.mode)
    report.best = {"config": best.config, "objective": best.metrics.get("objective")}
