"""Spec -> stages: data, model (+ mechanism), train (cached by train key), evaluate, store (DESIGN §1).

Each stage is a plain function of the previous stage's output; :func:`run_experiment` only calls
them in order. Checkpoints live in ``<runs_dir>/checkpoints/<train_key>.{safetensors,json}``; a
training run that has not finished keeps its state in ``<train_key>.partial.pt`` beside them and the
next run of the same train key resumes from it (:func:`~neurorobust.training.fit`, ``resume_path``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import Dataset, balanced_subset, load_dataset, split_validation
from ..errors import SpecError
from ..evaluation.suite import Evaluation, evaluate_into_store
from ..mechanisms import MECHANISMS
from ..models import create_model
from ..specs import ExperimentSpec, _deep_merge, eval_key, parse_spec, train_key
from ..store import ResultRow, ResultsStore
from ..training import fit, load_checkpoint, save_checkpoint
from ..training.checkpoint import partial_state_path
from ..training.loop import predict_logits
from ..types import ProgressFn

__all__ = [
    "RunOutcome",
    "build_model",
    "checkpoint_model",
    "default_runs_dir",
    "evaluate_stage",
    "fit_settings",
    "load_trained_variant",
    "model_label",
    "run_experiment",
    "train_stage",
    "transfer_source_specs",
]


def default_runs_dir() -> Path:
    """``$NEURO_RUNS``, else ``runs/`` under the current directory."""
    return Path(os.environ.get("NEURO_RUNS", "runs"))


def model_label(spec: ExperimentSpec) -> str:
    """The label stored with result rows: ``spec.label``, else the model name plus its mechanisms if any."""
    return spec.label or "+".join([spec.model.name, *(m.name for m in spec.stack)])


def stage_datasets(spec: ExperimentSpec, dataset: Dataset) -> tuple[Dataset, Dataset]:
    """(training view, evaluation view): with ``data.validation`` the held-out images leave the training
    set, and ``evaluate.split = 'val'`` evaluates on them instead of the test split."""
    if not spec.data.validation:
        return dataset, dataset
    held = split_validation(dataset, spec.data.validation)
    return held, held if spec.evaluate.split == "val" else dataset


@dataclass
class RunOutcome:
    """What one run produced."""

    spec: ExperimentSpec
    model: nn.Module
    train_key: str
    eval_key: str
    history: list[dict[str, float]] = field(default_factory=list)
    rows: list[ResultRow] | list[dict[str, Any]] = field(default_factory=list)
    checks: list[Any] = field(default_factory=list)
    verdict: str = ""
    train_cached: bool = False
    eval_cached: bool = False
    run_id: int | None = None
    checkpoint: Path | None = None


def build_model(spec: ExperimentSpec, dataset: Dataset) -> nn.Module:
    """The spec's model for this dataset's input shape and class count (seeded init)."""
    torch.manual_seed(spec.seed)  # parameter init draws from the global generator; seed it for repeatability
    params = {"input_shape": dataset.input_shape, "num_classes": dataset.num_classes, **spec.model.params}
    return create_model(spec.model.name, **params)


def checkpoint_model(spec: ExperimentSpec, dataset: Dataset) -> nn.Module:
    """An untrained model of the shape the spec's checkpoint holds: the spec's model, wrapped by its
    mechanism's ``architecture(model, data, **params)`` where the mechanism declares one (e.g. a
    distilled network or a cerebellum head around the trained encoder)."""
    model = build_model(spec, dataset)
    for mechanism in spec.stack:  # each wraps the model the one before it returned
        build = getattr(MECHANISMS.get(mechanism.name).constructor, "architecture", None)
        if build is not None:
            model = build(model, dataset, **{"seed": spec.seed, **mechanism.params})
    return model


def load_trained_variant(
    config: str | Path | ExperimentSpec,
    label: str,
    *,
    seed: int = 0,
    runs_dir: str | Path | None = None,
    required: bool = True,
) -> nn.Module | None:
    """The trained network of sweep variant ``label`` (seed ``seed``) of ``config``, from the checkpoint
    cache, in eval mode; nothing is trained.

    Parameters
    ----------
    config : path or ExperimentSpec
        An experiment config (``configs/NAME.toml``) or a parsed spec.
    label : str
        The variant's label (``[[sweep.variants]] label``).
    seed : int, default=0
    runs_dir : path, optional
        The runs folder holding ``checkpoints/`` (default: :func:`default_runs_dir`).
    required : bool, default=True
        A variant that is not trained yet raises :class:`~neurorobust.errors.SpecError` saying which
        ``make repro`` trains it; with ``required=False`` it returns ``None`` instead.
    """
    from ..experiments.sweep import expand_sweep
    from ..specs import load_spec

    spec = config if isinstance(config, ExperimentSpec) else load_spec(config)
    variants = {(v.spec.label, v.spec.seed): v.spec for v in expand_sweep(spec)}
    chosen = variants.get((label, seed))
    if chosen is None:
        known = ", ".join(sorted({str(k[0]) for k in variants}))
        raise SpecError(f"{spec.name}: no variant {label!r} with seed {seed}; variants: {known}")
    model = checkpoint_model(chosen, load_dataset(chosen.data.name, chosen.data.data_dir))
    folder = Path(runs_dir or default_runs_dir()) / "checkpoints"
    if load_checkpoint(folder, train_key(chosen), model) is None:
        if not required:
            return None
        raise SpecError(f"{label} (seed {seed}) is not trained yet: run `make repro NAME={spec.name}` first")
    return model.eval()


def train_stage(
    spec: ExperimentSpec,
    dataset: Dataset,
    *,
    runs_dir: Path | None = None,
    force: bool = False,
    progress: ProgressFn | None = None,
) -> tuple[nn.Module, dict[str, Any], bool]:
    """Train (or load from the checkpoint cache) and apply the mechanism; returns (model, meta, cached).

    A finished checkpoint is loaded, never trained again. An unfinished one (a run killed or interrupted
    while training) goes on from ``<train_key>.partial.pt``, its last save (every epoch, and every 10
    minutes within one), to the weights an uninterrupted run would have; ``force`` starts afresh. The
    mechanism's own phase (sleep, a cerebellum head, KH learning before the first epoch) is not
    resumable: it runs again whole.
    """
    folder = (runs_dir or default_runs_dir()) / "checkpoints"
    key = train_key(spec)
    model = checkpoint_model(spec, dataset)
    meta = None if force else load_checkpoint(folder, key, model)
    if meta is None and not force:
        # held until this call returns: a second sweep worker needing the same key waits, then loads it
        guard = _training_lock(folder, key)  # noqa: F841
        meta = load_checkpoint(folder, key, model)
    cached = meta is not None
    partial = partial_state_path(folder, key)
    if meta is None:
        if force:
            partial.unlink(missing_ok=True)
        x, y = dataset.x_train, dataset.y_train
        if spec.data.train_subset:
            idx = balanced_subset(y, spec.data.train_subset, seed=spec.seed)
            x, y = x[idx], y[idx]
        start = time.perf_counter()
        history: list[dict[str, float]] = []
        if spec.stack:
            # the last mechanism acts on the very network the spec without it trained (cached under its own key:
            # the control run, or the stack's earlier mechanisms applied in order)
            model, base_meta, _ = train_stage(
                spec.without_last_mechanism(), dataset, runs_dir=runs_dir, progress=progress
            )
            history = base_meta.get("history", [])
            mechanism = spec.stack[-1]
            params = dict(mechanism.params)
            accepted = MECHANISMS.get(mechanism.name).parameters()
            if "train" in accepted:
                params.setdefault("train", fit_settings(spec))
            if "seed" in accepted:
                params.setdefault("seed", spec.seed)
            model = MECHANISMS.create(mechanism.name, model=model, data=dataset, **params)
        else:
            model, fitted = fit(model, x, y, **fit_settings(spec), progress=progress, resume_path=partial)
            history = fitted.epochs
            start -= fitted.seconds_before  # a resumed run counts the time of its earlier sessions too
        test_acc = float((predict_logits(model, dataset.x_test).argmax(1) == dataset.y_test).float().mean())
        meta = {
            "train_key": key,
            "spec": spec.model_dump(mode="json"),
            "history": history,
            "mechanism": _mechanism_info(model),
            "test_accuracy": test_acc,
            "train_seconds": time.perf_counter() - start,
        }
        save_checkpoint(folder, key, model, meta)
        partial.unlink(missing_ok=True)  # the checkpoint holds the finished run now
    model.eval()
    return model, meta, cached


def _training_lock(folder: Path, key: str) -> Any:
    """An exclusive lock on ``<key>.lock`` (released when the returned file object is closed or collected)."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / f"{key}.lock", "w")  # noqa: SIM115 - the caller holds it open
    fcntl.flock(handle, fcntl.LOCK_EX)
    return handle


def fit_settings(spec: ExperimentSpec) -> dict[str, Any]:
    """The spec's ``[train]`` table as keyword arguments of :func:`~neurorobust.training.fit` (plus the seed)."""
    return {**spec.train.model_dump(), "seed": spec.seed}


def _mechanism_info(model: nn.Module) -> dict[str, Any] | None:
    report = getattr(model, "sleep_report", None) or getattr(model, "mechanism_report", None)
    if report is None:
        return None
    return report.as_dict() if hasattr(report, "as_dict") else dict(report)


def source_spec(spec: ExperimentSpec) -> ExperimentSpec:
    """The transfer attack's source: the same data and model, standard training (no mechanism, no
    adversarial training), another seed."""
    train = spec.train.model_copy(update={"adversarial": None})
    return spec.model_copy(update={"mechanism": None, "mechanisms": [], "seed": spec.seed + 1, "train": train})


def named_source_spec(spec: ExperimentSpec, overrides: dict[str, Any]) -> ExperimentSpec:
    """A transfer entry's own ``source``: this spec's data, training and seed, no mechanism, with the
    entry's overrides (``model``, ``mechanism``, ``train``, ``data``, ``seed``) merged in; same train
    key as a sweep variant with the same settings, so that variant's checkpoint is the source."""
    raw = spec.model_dump(mode="json")
    raw = {k: v for k, v in raw.items() if k not in ("sweep", "full", "evaluate", "label", "reductions")}
    raw["mechanism"], raw["mechanisms"], raw["twin"] = None, [], ""
    if "model" in overrides:
        raw["model"] = {"params": {}}  # the source names its own model; the target's params do not carry over
    merged = _deep_merge(raw, overrides)
    return parse_spec({**merged, "name": spec.name}, source=f"{spec.name}: transfer source {overrides}")


def transfer_source(
    spec: ExperimentSpec, train_data: Dataset, *, runs_dir: Path | None = None, progress: ProgressFn | None = None
) -> nn.Module | dict[str, nn.Module | None] | None:
    """The trained (cached) source model when the suite has a transfer attack, else ``None``; a dict of
    sources by entry label (``""``: the standard one) when transfer entries name their own ``source``."""
    specs = transfer_source_specs(spec)
    trained: dict[str, nn.Module | None] = {"": None}
    for label, src in specs.items():
        trained[label], _, _ = train_stage(src, train_data, runs_dir=runs_dir, progress=progress)
    if set(specs) <= {""}:
        return trained[""]
    return trained


def transfer_source_specs(spec: ExperimentSpec) -> dict[str, ExperimentSpec]:
    """The specs of the transfer attack's source models that ``spec``'s evaluation trains, by entry label
    (``""``: the standard source, :func:`source_spec`); empty when the suite has no transfer attack."""
    specs = {}
    if spec.evaluate.suite == "full" or any(
        a.name == "transfer" and "source" not in a.params for a in spec.evaluate.attacks
    ):
        specs[""] = source_spec(spec)
    for entry in spec.evaluate.attacks:
        if entry.name != "transfer" or "source" not in entry.params:
            continue
        src = named_source_spec(spec, entry.params["source"])
        if src.data.name != spec.data.name:
            raise SpecError(f"{spec.name}: transfer source {entry.label!r} must use dataset {spec.data.name!r}")
        specs[entry.label or entry.name] = src
    return specs


def evaluate_stage(
    spec: ExperimentSpec,
    model: nn.Module,
    dataset: Dataset,
    *,
    store: ResultsStore,
    experiment: str | None = None,
    force: bool = False,
    progress: ProgressFn | None = None,
    runs_dir: Path | None = None,
    train_data: Dataset | None = None,
) -> tuple[Evaluation | None, list[dict[str, Any]], int]:
    """Evaluate and write rows and checks to the store as they are measured.

    A finished run with the same eval key (and experiment) is reused: then the first element is
    ``None`` and the stored rows come back. ``train_data`` (default ``dataset``) trains the transfer
    attack's source model.
    """
    ekey = eval_key(spec)
    experiment = experiment or spec.name
    if not force:
        done = store.finished_run(ekey, experiment=experiment)
        if done is not None:
            return None, store.results(run_id=done["id"]), done["id"]
    source = transfer_source(spec, train_data or dataset, runs_dir=runs_dir, progress=progress)
    result, run_id = evaluate_into_store(
        store,
        model,
        dataset,
        spec.evaluate,
        experiment=experiment,
        label=model_label(spec),
        run_spec=spec.model_dump(mode="json"),
        train_key=train_key(spec),
        eval_key=ekey,
        seed=spec.seed,
        progress=progress,
        source_model=source,
        split=spec.evaluate.split,
    )
    return result, [], run_id


def run_experiment(
    spec: ExperimentSpec,
    *,
    store: ResultsStore | None,
    runs_dir: Path | None = None,
    experiment: str | None = None,
    force: bool = False,
    evaluate_model: bool = True,
    progress: ProgressFn | None = None,
) -> RunOutcome:
    """Run every stage of ``spec`` in order and return what it produced."""
    train_data, eval_data = stage_datasets(spec, load_dataset(spec.data.name, spec.data.data_dir))
    model, meta, cached = train_stage(spec, train_data, runs_dir=runs_dir, force=force, progress=progress)
    out = RunOutcome(spec, model, train_key(spec), eval_key(spec), history=meta.get("history", []), train_cached=cached)
    if evaluate_model:
        if store is None:
            raise ValueError("run_experiment: evaluating needs a results store")
        result, stored, run_id = evaluate_stage(
            spec,
            model,
            eval_data,
            store=store,
            experiment=experiment,
            force=force,
            progress=progress,
            runs_dir=runs_dir,
            train_data=train_data,
        )
        out.run_id = run_id
        if result is None:
            out.rows, out.eval_cached = stored, True
            out.checks = store.checks(run_id=run_id)
            verdicts = [r["params"].get("verdict") for r in stored if r["attack"] == "checklist"]
            out.verdict = verdicts[0] if verdicts else ""
        else:
            out.rows, out.checks, out.verdict = result.rows, result.checks, result.verdict
    return out
