"""Spectra of a spec's trained networks: :func:`spectra_of_spec` (what ``neurorobust spectrum`` runs).

The measurement itself (covariance spectrum, alpha) is :mod:`neurorobust.mechanisms.spectra`; this
module only picks the spec's sweep variants and trains them with the runner, or loads them from
its checkpoint cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..data import balanced_subset, load_dataset
from ..errors import SpecError
from ..mechanisms.spectra import DEFAULT_RANKS, SpectrumResult, layer_module, layer_spectrum
from ..types import ProgressFn
from .runner import build_model, stage_datasets, train_stage
from .sweep import expand_sweep

__all__ = ["spectra_of_spec"]


def spectra_of_spec(
    spec: Any,
    layer: str,
    *,
    variant: str | None = None,
    seed: int | None = None,
    samples: int = 10000,
    ranks: tuple[int, int] = DEFAULT_RANKS,
    runs_dir: str | Path | None = None,
    progress: ProgressFn | None = None,
) -> dict[str, tuple[Any, SpectrumResult]]:
    """The spectrum of ``layer`` for the model of ``spec`` (each sweep variant, or the one named
    ``variant``), trained with the runner's :func:`~neurorobust.experiments.runner.train_stage` or
    loaded from its checkpoint cache, over ``samples`` images of the evaluated split.

    Returns ``{label: (variant spec, SpectrumResult)}`` (label with `` seed S`` when several seeds).
    The layer name is checked on a freshly built model before anything is trained.
    """
    variants = [v.spec for v in expand_sweep(spec)]
    if variant is not None:
        labels = sorted({v.label for v in variants})
        variants = [v for v in variants if v.label == variant]
        if not variants:
            raise SpecError(
                f"{spec.name}: no sweep variant labelled {variant!r}; labels: {', '.join(map(repr, labels))}"
            )
    if seed is not None:
        variants = [v for v in variants if v.seed == seed]
        if not variants:
            raise SpecError(f"{spec.name}: no run with seed {seed}")
    else:  # the first seed of each variant
        firsts: dict[str, Any] = {}
        for v in variants:
            firsts.setdefault(v.label, v)
        variants = list(firsts.values())
    out: dict[str, tuple[Any, SpectrumResult]] = {}
    datasets: dict[tuple[str, int], tuple[Any, Any]] = {}
    for v in variants:
        key = (v.data.name, v.data.validation)
        if key not in datasets:
            datasets[key] = stage_datasets(v, load_dataset(v.data.name, v.data.data_dir))
        train_data, eval_data = datasets[key]
        layer_module(build_model(v, train_data), layer)  # a bad layer name fails before any training
        model, _, _ = train_stage(v, train_data, runs_dir=Path(runs_dir) if runs_dir else None, progress=progress)
        x = eval_data.x_test
        if samples < len(x):
            x = x[balanced_subset(eval_data.y_test, samples, seed=0)]
        label = v.label or v.model.name
        out[label] = (
            v,
            layer_spectrum(model, x, layer, ranks=ranks),
        )
    return out
