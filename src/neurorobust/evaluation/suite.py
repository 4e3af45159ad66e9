"""Evaluation suites: clean accuracy, distortion curves and the attack suites (DESIGN §5).

``evaluate(model, dataset, spec)`` returns :class:`~neurorobust.store.ResultRow` s; the runner
writes them to the store. Every accuracy row carries n and its 95% Wilson interval in ``params``.
The evaluation subset is seeded and class-balanced (:func:`~neurorobust.data.balanced_subset`)
so every model of an experiment sees the same images.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..attacks import is_stochastic
from ..data import Dataset, balanced_subset, gaussian_blur, gaussian_noise
from ..errors import InvalidParameterError
from ..specs import EvalSpec
from ..store import ResultRow, ResultsStore
from ..training.loop import predict_logits
from ..types import ProgressFn
from .checklist import CheckResult
from .metrics import balanced_accuracy, class_balanced_mean, wilson_interval
from .runs import point_correct

__all__ = ["Evaluation", "accuracy_row", "evaluate", "evaluate_into_store", "evaluation_subset"]


@dataclass
class Evaluation:
    """Rows measured for one model, the checklist, its verdict and the worst-case robust accuracy."""

    rows: list[ResultRow] = field(default_factory=list)
    checks: list[CheckResult] = field(default_factory=list)
    verdict: str = "not checked (suite 'none')"
    worst_case: dict[float, float] = field(default_factory=dict)


def evaluation_subset(dataset: Dataset, spec: EvalSpec) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(indices, x, y)`` of the seeded, class-balanced test subset of size ``spec.n``."""
    idx = balanced_subset(dataset.y_test, spec.n, seed=spec.subset_seed)
    return idx, dataset.x_test[idx], dataset.y_test[idx]


def accuracy_row(
    base: dict[str, Any],
    correct: torch.Tensor,
    *,
    attack: str,
    metric: str = "accuracy",
    eps: float | None = None,
    params: dict[str, Any] | None = None,
    seconds: float | None = None,
) -> ResultRow:
    """A result row for an accuracy with n and its Wilson interval in ``params``."""
    n = int(correct.numel())
    total = float(correct.float().sum())  # a mean over draws makes per-point values fractional
    lo, hi = wilson_interval(round(total), n)
    return ResultRow(
        **base,
        attack=attack,
        metric=metric,
        value=total / n if n else float("nan"),
        n=n,
        eps=eps,
        params={**(params or {}), "ci95": [round(lo, 5), round(hi, 5)]},
        seconds=seconds,
    )


def evaluate(
    model: nn.Module,
    dataset: Dataset,
    spec: EvalSpec,
    *,
    experiment: str,
    label: str,
    seed: int = 0,
    progress: ProgressFn | None = None,
    sink: Callable[[list[ResultRow]], Any] | None = None,
    source_model: nn.Module | None = None,
    split: str = "test",
) -> Evaluation:
    """Clean accuracy, noise and blur curves, and the spec's attack suite, as result rows.

    Parameters
    ----------
    model : nn.Module
        Maps images in [0, 1] to logits.
    dataset : Dataset
    spec : EvalSpec
        Subset size, grids and suite.
    experiment, label : str
        Names stored with every row (experiment; model label).
    seed : int, default=0
        Seed of the noise draws and of the attacks' randomness.
    progress : callable, optional
        Called with ``{"stage": "evaluate", "step", "steps", "what"}``.
    sink : callable, optional
        Receives each finished group of rows at once (the runner writes them to the store), so a
        run killed half-way keeps what it measured.
    source_model : nn.Module, optional
        A standard model trained on the same data: the transfer attack's source (``full`` suite).
    split : {'test', 'val'}, default='test'
        Stored with every row: which split ``dataset.x_test`` holds (``'val'`` for a held-out
        validation view from :func:`~neurorobust.data.split_validation`).

    Returns
    -------
    Evaluation
        ``rows`` (also passed to ``sink``), the checklist, the verdict and the worst case per eps.
    """
    # the model's own randomness (dropout-active gradients, stochastic layers) draws from the global
    # generator: seed it here, under a fork, so the numbers do not depend on what ran before and the
    # caller's generator is left as it was
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        _, x, y = evaluation_subset(dataset, spec)
        if not torch.isfinite(x).all():
            raise InvalidParameterError("x", "evaluate", "finite images in [0, 1]", "a batch containing NaN or inf")
        if x.min() < 0 or x.max() > 1:
            raise InvalidParameterError(
                "x",
                "evaluate",
                "images with values in [0, 1] (normalise inside the model)",
                f"values in [{float(x.min()):.3g}, {float(x.max()):.3g}]",
            )
        base = {
            "split": split,
            "experiment": experiment,
            "model": label,
            "dataset": dataset.name,
            "seed": seed,
            "approximate": dataset.approximate,
        }
        rows: list[ResultRow] = []
        steps = 1 + len(spec.noise_sigmas) + len(spec.blur_sigmas)
        done = flushed = 0

        def tick(what: str) -> None:
            nonlocal done, flushed
            done += 1
            if sink is not None and len(rows) > flushed:
                sink(rows[flushed:])
                flushed = len(rows)
            if progress is not None:
                progress({"stage": "evaluate", "step": done, "steps": steps, "what": what})

        start = time.perf_counter()
        logits = predict_logits(model, x, spec.batch_size)
        if is_stochastic(model) and spec.eot_draws > 1:
            # one forward pass is one draw; a model that draws one mask per batch (DropConnect) would make the
            # clean row a single coin flip for the whole batch, so clean accuracy is the mean over draws, as the
            # attack rows' accuracy (DESIGN §5.8); the one pass stays as accuracy_single_draw
            mean_correct = point_correct(model, x, y, spec.eot_draws, spec.batch_size)
            params = {"draws": spec.eot_draws}
            seconds = time.perf_counter() - start
            rows.append(accuracy_row(base, mean_correct, attack="clean", params=params, seconds=seconds))
            rows.append(accuracy_row(base, logits.argmax(1) == y, attack="clean", metric="accuracy_single_draw"))
            balanced = class_balanced_mean(mean_correct, y)
        else:
            rows.append(accuracy_row(base, logits.argmax(1) == y, attack="clean", seconds=time.perf_counter() - start))
            balanced = balanced_accuracy(logits, y)
        rows.append(ResultRow(**base, attack="clean", metric="balanced_accuracy", value=balanced, n=len(y)))
        measure = getattr(model, "evaluation_rows", None)
        if callable(measure):  # model-declared measurements, e.g. the spectrum's alpha (mechanisms/spectra.py)
            rows += [ResultRow(**base, **fields) for fields in measure(dataset)]
        tick("clean")
        gen = torch.Generator().manual_seed(seed)
        corruptions: list[tuple[str, list[float], Callable[[float], torch.Tensor]]] = [
            ("noise", spec.noise_sigmas, lambda sigma: gaussian_noise(x, sigma, generator=gen)),
            ("blur", spec.blur_sigmas, lambda sigma: gaussian_blur(x, sigma)),
        ]
        for name, sigmas, corrupt in corruptions:
            for sigma in sigmas:
                start = time.perf_counter()
                pred = predict_logits(model, corrupt(sigma), spec.batch_size).argmax(1)
                seconds = time.perf_counter() - start
                rows.append(
                    accuracy_row(base, pred == y, attack=name, eps=sigma, params={"sigma": sigma}, seconds=seconds)
                )
                tick(f"{name} sigma={sigma}")
        result = Evaluation(rows=rows)
        if spec.suite != "none":
            from .attack_suite import run_attack_suite

            suite = run_attack_suite(
                model, x, y, spec, base=base, seed=seed, progress=progress, sink=sink, source_model=source_model
            )
            rows += suite.rows
            result.checks, result.verdict, result.worst_case = suite.checks, suite.verdict, suite.worst_case
        return result


def evaluate_into_store(
    store: ResultsStore,
    model: nn.Module,
    dataset: Dataset,
    spec: EvalSpec,
    *,
    experiment: str,
    label: str,
    run_spec: dict[str, Any],
    train_key: str | None = None,
    eval_key: str | None = None,
    **kwargs: Any,
) -> tuple[Evaluation, int]:
    """:func:`evaluate` as a run of ``store``: rows are written as they are measured, then the checks;
    the run ends ``done``, or ``failed`` with the error (rows measured before it stay). ``kwargs`` go
    to :func:`evaluate` (seed, progress, source_model, split)."""
    run_id = store.start_run(experiment, "evaluate", spec=run_spec, train_key=train_key, eval_key=eval_key)
    try:
        result = evaluate(
            model,
            dataset,
            spec,
            experiment=experiment,
            label=label,
            sink=lambda new: store.add_results(run_id, new),
            **kwargs,
        )
        if result.checks:
            store.add_checks(run_id, experiment, label, result.checks)
    except BaseException as exc:
        store.finish_run(run_id, "failed", f"{type(exc).__name__}: {exc}")
        raise
    store.finish_run(run_id, "done")
    return result, run_id
