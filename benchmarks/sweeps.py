"""Sweep benchmark: speed-up of a 16-run grid on 2 workers vs 1 (local pool and Ray), and Ray's per-task overhead.

Run: ``python benchmarks/sweeps.py`` (needs the Ray extra for the Ray rows). Each measurement uses a fresh
checkpoint cache and store, so nothing is reused between them; figures are printed side by side.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from neurorobust.experiments.sweep import run_sweep
from neurorobust.specs import parse_spec
from neurorobust.store import ResultsStore

GRID = {
    "name": "bench_sweep",
    "data": {"name": "digits"},
    "model": {"name": "mlp", "params": {"widths": [64]}},
    "train": {"epochs": 30, "batch_size": 32},
    "evaluate": {"suite": "none", "n": 360, "noise_sigmas": [0.0, 0.2, 0.4], "blur_sigmas": [0.0, 1.0]},
    "sweep": {"seeds": [0, 1, 2, 3], "grid": {"train.lr": [0.001, 0.003], "model.params.widths": [[32], [64]]}},
}


def _time_sweep(backend: str, workers: int) -> float:
    spec = parse_spec(GRID)
    with tempfile.TemporaryDirectory() as tmp, ResultsStore(Path(tmp) / "r.db") as st:
        start = time.perf_counter()
        report = run_sweep(spec, store=st, backend=backend, workers=workers, runs_dir=Path(tmp) / "runs")
        seconds = time.perf_counter() - start
        assert report.done == 16, report
    return seconds


def _ray_overhead(n: int = 200) -> tuple[float, float]:
    import ray

    from neurorobust.experiments.ray_backend import ray_session

    def noop(i: int) -> int:
        return i

    start = time.perf_counter()
    with ray_session(2, None):
        started = time.perf_counter() - start
        task = ray.remote(num_cpus=1)(noop)
        ray.get([task.remote(i) for i in range(10)])  # warm the workers
        t = time.perf_counter()
        ray.get([task.remote(i) for i in range(n)])
        per_task = (time.perf_counter() - t) / n
    return started, per_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray measurements")
    args = parser.parse_args()
    rows = []
    backends = ["local"] + ([] if args.no_ray else ["ray"])
    for backend in backends:
        one = _time_sweep(backend, 1)
        two = _time_sweep(backend, 2)
        rows.append((backend, one, two))
    print("16-run grid (digits MLP, 30 epochs each, no attacks), wall seconds incl. start-up")
    print(f"{'backend':<8}{'1 worker':>10}{'2 workers':>11}{'speed-up':>10}")
    for backend, one, two in rows:
        print(f"{backend:<8}{one:>10.1f}{two:>11.1f}{one / two:>9.2f}x")
    if not args.no_ray:
        started, per_task = _ray_overhead()
        print(
            f"\nRay: local 2-CPU instance start {started:.1f} s; per-task overhead {1000 * per_task:.2f} ms "
            "(200 no-op tasks on 2 workers, after warm-up)"
        )


if __name__ == "__main__":
    main()
