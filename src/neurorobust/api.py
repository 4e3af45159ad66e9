"""The Python API: :func:`train`, :func:`evaluate`, :func:`declare`, :func:`load`.

Examples
--------
>>> import neurorobust.api as nr                                     # doctest: +SKIP
>>> outcome = nr.train("configs/baseline_mnist_cnn.toml")                      # doctest: +SKIP
>>> rows = nr.evaluate(outcome.model, "mnist", suite="quick", n=200)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from .data import Dataset, load_dataset
from .data.user import as_dataset
from .errors import InvalidParameterError, SpecError
from .evaluation.suite import Evaluation, evaluate_into_store
from .evaluation.suite import evaluate as _evaluate
from .experiments.runner import RunOutcome, default_runs_dir, run_experiment, train_stage
from .specs import EvalSpec, ExperimentSpec, load_spec, parse_spec
from .store import ResultsStore

__all__ = ["declare", "evaluate", "load", "train"]


def _as_spec(spec: ExperimentSpec | str | os.PathLike[str] | dict[str, Any], full: bool = False) -> ExperimentSpec:
    if isinstance(spec, ExperimentSpec):
        return spec
    if isinstance(spec, dict):
        return parse_spec(spec)
    if isinstance(spec, str | os.PathLike):
        return load_spec(spec, full=full)
    raise InvalidParameterError("spec", "neurorobust.api", "an ExperimentSpec, a dict or a path to a TOML file", spec)


def train(
    spec: ExperimentSpec | str | os.PathLike[str] | dict[str, Any],
    *,
    force: bool = False,
    runs_dir: str | os.PathLike[str] | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> RunOutcome:
    """Train the spec's model (or load it from the checkpoint cache) without evaluating it.

    Parameters
    ----------
    spec : ExperimentSpec, dict or path
        The experiment; a path is read with :func:`~neurorobust.specs.load_spec`.
    force : bool, default=False
        Retrain even when a checkpoint with the same train key exists.
    runs_dir : path, optional
        Where checkpoints go (default ``$NEURO_RUNS`` or ``runs/``).
    progress : callable, optional
        Receives progress events (see :func:`neurorobust.training.fit`).
    """
    s = _as_spec(spec)
    return run_experiment(
        s,
        store=None,
        runs_dir=Path(runs_dir) if runs_dir else None,
        force=force,  # type: ignore[arg-type]
        evaluate_model=False,
        progress=progress,
    )


def evaluate(
    model: nn.Module,
    data: Dataset | str | os.PathLike[str] | tuple[Any, Any],
    *,
    suite: str = "quick",
    store: ResultsStore | str | os.PathLike[str] | None = None,
    experiment: str = "api",
    label: str | None = None,
    seed: int = 0,
    progress: Callable[[dict[str, Any]], None] | None = None,
    source_model: nn.Module | None = None,
    **eval_settings: Any,
) -> Evaluation:
    """Evaluate any model on images in [0, 1]: clean, noise, blur and the named attack suite.

    Parameters
    ----------
    model : nn.Module
        Your model; declare randomness or non-differentiable parts with :func:`declare`.
    data : Dataset, str, path or (x, y)
        A loaded dataset, a registered name, your own images (an ``.npz`` with ``x`` and ``y``, or a folder
        with one sub-folder of images per class), or ``(x, y)`` arrays; see :mod:`neurorobust.data.user`.
    suite : {'none', 'quick', 'seed-paper', 'full'}, default='quick'
    store : ResultsStore or path, optional
        When given, rows are written to it as they are measured.
    experiment, label : str
        Names stored with the rows (label defaults to the model's class name).
    seed : int, default=0
    source_model : nn.Module, optional
        A standard model trained on the same data, for the transfer attack of the ``full`` suite.
    **eval_settings
        Any field of :class:`~neurorobust.specs.EvalSpec` (``n``, ``eps``, ``noise_sigmas`` ...).

    Returns
    -------
    Evaluation
        ``.rows`` (result rows), ``.checks`` (the masking checklist), ``.verdict``, ``.worst_case``.
    """
    from pydantic import ValidationError

    try:
        espec = EvalSpec(suite=suite, **eval_settings)  # type: ignore[arg-type]
    except ValidationError as err:
        raise SpecError(f"evaluate(): invalid settings: {err.errors()[0]['loc']}: {err.errors()[0]['msg']}") from None
    dataset = as_dataset(data)
    label = label or type(model).__name__
    if store is None:
        return _evaluate(
            model,
            dataset,
            espec,
            experiment=experiment,
            label=label,
            seed=seed,
            progress=progress,
            source_model=source_model,
        )
    st = store if isinstance(store, ResultsStore) else ResultsStore(store)
    result, _ = evaluate_into_store(
        st,
        model,
        dataset,
        espec,
        experiment=experiment,
        label=label,
        run_spec={"evaluate": espec.model_dump(mode="json"), "label": label},
        seed=seed,
        progress=progress,
        source_model=source_model,
    )
    return result


def declare(
    model: nn.Module, *, stochastic: bool | None = None, surrogate: nn.Module | Callable[[], nn.Module] | None = None
) -> nn.Module:
    """Declare how to attack someone else's model: random at test time, and/or a BPDA surrogate.

    Sets ``model.is_stochastic`` (attacks then use EOT with 20 draws, and robust accuracy is the
    mean over 20 draws) and ``model.bpda_surrogate()`` (attacks then use BPDA: forward through the
    model, backward through the surrogate). Returns the same model.
    """
    if stochastic is not None:
        model.is_stochastic = bool(stochastic)  # type: ignore[assignment]
    if surrogate is not None:
        if isinstance(surrogate, nn.Module):
            module = surrogate
            model.bpda_surrogate = lambda: module  # type: ignore[method-assign, assignment]
        elif callable(surrogate):
            model.bpda_surrogate = surrogate  # type: ignore[method-assign, assignment]
        else:
            raise InvalidParameterError("surrogate", "declare", "an nn.Module or a callable returning one", surrogate)
    return model


def load(spec: ExperimentSpec | str | os.PathLike[str], *, runs_dir: str | os.PathLike[str] | None = None) -> nn.Module:
    """The trained model of ``spec`` from the checkpoint cache; trains it first if absent."""
    s = _as_spec(spec)
    dataset = load_dataset(s.data.name, s.data.data_dir)
    model, _, _ = train_stage(s, dataset, runs_dir=Path(runs_dir) if runs_dir else default_runs_dir())
    return model
