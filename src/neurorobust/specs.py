"""Experiment specs: TOML files validated by pydantic before any work (DESIGN §1, STYLE.md §12).

A spec file holds only overrides of the defaults below. An unknown key, a wrong type or an
impossible value stops the run with one :class:`~neurorobust.errors.SpecError` naming the file,
the key path and what is allowed.

Example (``configs/baseline_mnist_cnn.toml``)::

    description = "Two-conv CNN on MNIST"
    [model]
    name = "cnn_mnist"
    [train]
    epochs = 2
"""

from __future__ import annotations

import functools
import hashlib
import json
import tomllib
import warnings
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import SpecError

__all__ = [
    "CACHE_VERSION",
    "AdversarialSpec",
    "AttackEntry",
    "DataSpec",
    "EvalSpec",
    "ExperimentSpec",
    "MechanismSpec",
    "ModelSpec",
    "RangeSpec",
    "SearchSpec",
    "SweepSpec",
    "TrainSpec",
    "canonical_experiment",
    "configs_dir",
    "eval_key",
    "load_spec",
    "parse_spec",
    "renamed_configs",
    "renamed_to",
    "train_key",
]

#: Bump when a fix changes results: old checkpoints and result rows stop matching.
CACHE_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _registered(kind: str, name: str) -> str:
    from .registry import Registry

    registry: Registry
    if kind == "dataset":
        from .data import DATASETS

        registry = DATASETS
    elif kind == "model":
        from .models import MODELS

        registry = MODELS
    elif kind == "mechanism":
        from .mechanisms import MECHANISMS

        registry = MECHANISMS
    else:  # attack
        from .attacks import ATTACKS

        registry = ATTACKS
    if name not in registry:
        raise ValueError(f"unknown {kind} {name!r}; allowed: {', '.join(registry.names())}")
    return name


class DataSpec(_Strict):
    """Which dataset, and optional training subset."""

    name: str = "mnist"
    data_dir: str | None = None
    train_subset: int | None = Field(default=None, ge=1, description="train on a seeded balanced subset")
    validation: int = Field(default=0, ge=0, description="hold out this many training images (seeded, balanced)")

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        return _registered("dataset", v)


class ModelSpec(_Strict):
    """Registered model name and constructor overrides."""

    name: str = "cnn_mnist"
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        return _registered("model", v)


class MechanismSpec(_Strict):
    """Registered mechanism applied to the trained model, and its parameters."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        return _registered("mechanism", v)


class AdversarialSpec(_Strict):
    """Adversarial training in the training loop (``training/adversarial.py``)."""

    method: Literal["pgd", "trades", "fgsm-rs"] = "pgd"
    eps: float = Field(gt=0, le=1, description="L-inf radius (images in [0, 1])")
    steps: int = Field(default=10, ge=1)
    step_size: float | None = Field(default=None, gt=0)
    beta: float = Field(default=6.0, ge=0, description="TRADES trade-off")
    check_every: int = Field(default=1, ge=0, description="fgsm-rs: epochs between catastrophic-overfitting checks")
    check_n: int = Field(default=256, ge=1)
    warmup_epochs: float = Field(default=0.0, ge=0, description="epochs over which eps ramps up from 0")


class TrainSpec(_Strict):
    """Settings of the one training loop (``training/loop.py``)."""

    optimizer: Literal["sgd", "adam", "rmsprop"] = "adam"
    lr: float = Field(default=1e-3, gt=0, le=10)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0)
    l1: float = Field(default=0.0, ge=0, description="L1 penalty on all weights (Kubo's thesis)")
    loss: Literal["ce", "mse", "mse-sum"] = "ce"
    batch_size: int = Field(default=128, ge=1)
    epochs: int = Field(default=2, ge=0)
    schedule: Literal["constant", "step", "cosine", "linear"] = "constant"
    milestones: list[int] = Field(default_factory=list)
    gamma: float = Field(default=0.1, gt=0, le=1)
    temperature: float = Field(default=1.0, gt=0, description="softmax temperature of the ce loss (distillation)")
    adversarial: AdversarialSpec | None = None
    augment: Literal["none", "flip", "crop-flip"] = Field(
        default="none", description="random training augmentation (crop-flip: pad W/8, random crop, h-flip)"
    )

    @field_validator("milestones")
    @classmethod
    def _sorted(cls, v: list[int]) -> list[int]:
        if any(m < 1 for m in v) or v != sorted(v):
            raise ValueError("milestones must be increasing epoch numbers >= 1")
        return v


_TRANSFER_SOURCE_KEYS = ("model", "mechanism", "train", "data", "seed")


def _check_transfer_params(params: dict[str, Any]) -> None:
    """A transfer entry's params: ``source`` (spec overrides of the source model), ``attack``, ``attack_params``."""
    from .attacks import ATTACKS

    unknown = sorted(set(params) - {"source", "attack", "attack_params"})
    if unknown:
        raise ValueError(
            f"transfer takes no parameters but 'source' (overrides of this spec for the source model: "
            f"{', '.join(_TRANSFER_SOURCE_KEYS)}), 'attack' and 'attack_params' (got {unknown}); without "
            "them it runs 100-step PGD in the suite's norm on a standard model trained on the same data"
        )
    source = params.get("source", {})
    if not isinstance(source, dict) or set(source) - set(_TRANSFER_SOURCE_KEYS):
        raise ValueError(f"transfer 'source' must be a table with keys among {list(_TRANSFER_SOURCE_KEYS)}")
    if "name" in source.get("data", {}):
        raise ValueError("a transfer source is trained on the target's dataset: do not set source.data.name")
    attack = params.get("attack", "pgd")
    if not isinstance(attack, str) or attack in ("transfer", "eot", "bpda"):
        raise ValueError(f"transfer 'attack' must name a gradient attack run on the source (got {attack!r})")
    _registered("attack", attack)
    try:
        ATTACKS.create(attack, **params.get("attack_params", {}))
    except Exception as exc:
        raise ValueError(f"transfer attack_params: {exc}") from None


class AttackEntry(_Strict):
    """One attack of a suite: registry key, hyperparameters, eps grid and subset size.

    ``adaptive = false`` attacks the model as it is, without the EOT/BPDA wrappers its declarations
    call for (one random draw, its own gradients): the seed papers' setting, shown next to ours.
    A ``transfer`` entry may name its ``source`` model as overrides of this spec (e.g. another
    variant's ``model`` and ``train`` tables; same seed and data unless given), the ``attack`` run
    on it (default ``pgd``, 100 steps) and ``attack_params``.
    """

    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    eps: list[float] | None = Field(default=None, description="default: the suite's eps grid")
    n: int | None = Field(default=None, ge=1, description="subset size for this attack (default: n)")
    label: str | None = Field(default=None, description="name in the store (default: the key)")
    adaptive: bool = Field(
        default=True,
        description="False: attack the model as it is (one draw, its own gradients; no EOT/BPDA), as seed papers did",
    )

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        return _registered("attack", v)

    @model_validator(mode="after")
    def _params_fit(self) -> AttackEntry:
        from .attacks import ATTACKS

        if self.name in ("eot", "bpda"):
            raise ValueError(
                f"{self.name!r} is a wrapper chosen automatically from the model's declarations "
                "(neurorobust.declare(model, stochastic=..., surrogate=...)); list the attack itself"
            )
        if self.name == "transfer":
            _check_transfer_params(self.params)
            return self
        try:
            ATTACKS.create(self.name, **self.params)
        except Exception as exc:  # the attack's own validation says what is wrong
            raise ValueError(str(exc)) from None
        return self


class EvalSpec(_Strict):
    """Evaluation settings: the attack suite, subset size, eps and distortion grids."""

    suite: Literal["none", "quick", "seed-paper", "full"] = "quick"
    split: Literal["test", "val"] = Field(default="test", description="'val' needs data.validation > 0")
    n: int = Field(default=500, ge=1, description="evaluation subset size (seeded, class-balanced)")
    subset_seed: int = 0
    norm: Literal["linf", "l2"] = "linf"
    eps: list[float] = Field(default_factory=lambda: [0.05, 0.1, 0.2, 0.3])
    noise_sigmas: list[float] = Field(default_factory=lambda: [0.0, 0.1, 0.2, 0.3, 0.5, 0.7])
    blur_sigmas: list[float] = Field(default_factory=lambda: [0.0, 0.5, 1.0, 1.5, 2.0, 3.0])
    attacks: list[AttackEntry] = Field(default_factory=list, description="extra attacks (seed-paper suite)")
    batch_size: int = Field(default=500, ge=1)
    suite_n: int | None = Field(
        default=None, ge=1, description="subset size for the suite's own attacks (default: n); extra attacks set theirs"
    )
    limits: dict[str, int] = Field(
        default_factory=dict,
        description="subset size per attack label: entries without their own n and the suite's own attacks",
    )
    check_n: int = Field(default=200, ge=10, description="subset size of the checklist's probes")
    checklist: bool = Field(default=True, description="run the gradient-masking checklist after the attacks")
    eot_draws: int = Field(default=20, ge=1, description="EOT draws and evaluation draws for random models")
    cascade: bool = Field(
        default=True,
        description="full suite: each attack attacks only the points still robust after the ones before it "
        "(and the checklist's probe points); false gives every attack's own table on every point",
    )

    @field_validator("eps")
    @classmethod
    def _eps(cls, v: list[float], info: Any) -> list[float]:
        if info.data.get("norm", "linf") == "linf" and any(not (0 <= e <= 1) for e in v):
            raise ValueError("every eps must be in [0, 1] for L-inf (images live in [0, 1])")
        if any(e < 0 for e in v):
            raise ValueError("every eps must be >= 0")
        return v

    @field_validator("noise_sigmas", "blur_sigmas")
    @classmethod
    def _nonneg(cls, v: list[float]) -> list[float]:
        if any(s < 0 for s in v):
            raise ValueError("sigmas must be >= 0")
        return v

    @field_validator("attacks", mode="before")
    @classmethod
    def _names_to_entries(cls, v: Any) -> Any:
        return [{"name": a} if isinstance(a, str) else a for a in v] if isinstance(v, list) else v

    @model_validator(mode="after")
    def _positive_limits(self) -> EvalSpec:
        # labels are not checked against the attacks run: a base spec's limits are defaults for the
        # entries its variants add (sleep_mnist's jsma / boundary)
        bad = {k: v for k, v in self.limits.items() if isinstance(v, bool) or v < 1}
        if bad:
            raise ValueError(f"every limit must be an int >= 1 (a subset size); got {bad}")
        return self


class RangeSpec(_Strict):
    """A search dimension: a float range (optionally log-uniform), an int range, or choices."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _valid(self) -> RangeSpec:
        if self.choices is not None:
            if not self.choices or self.low is not None or self.high is not None:
                raise ValueError("give either a non-empty 'choices' list or 'low' and 'high'")
            return self
        if self.low is None or self.high is None:
            raise ValueError("a range needs 'low' and 'high' (or 'choices')")
        if not self.low < self.high:
            raise ValueError(f"'low' must be below 'high' (got low={self.low}, high={self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0 (got {self.low})")
        return self


class ObjectiveSpec(_Strict):
    """What a search optimises: one stored metric of one attack at one eps, on the validation split."""

    attack: str = "pgd"
    metric: str = "accuracy"
    eps: float | None = 0.1
    mode: Literal["max", "min"] = "max"
    min_clean: float | None = Field(
        default=None, ge=0, le=1, description="a trial whose clean accuracy is below this does not count"
    )


class SearchSpec(_Strict):
    """A random or Bayesian search over ranges (Bayesian needs the Ray backend)."""

    method: Literal["random", "bayes"] = "random"
    samples: int = Field(default=8, ge=1)
    space: dict[str, RangeSpec]
    objective: ObjectiveSpec = Field(default_factory=ObjectiveSpec)
    seed: int = 0

    @field_validator("space")
    @classmethod
    def _nonempty(cls, v: dict[str, RangeSpec]) -> dict[str, RangeSpec]:
        if not v:
            raise ValueError("the search space is empty")
        return v


class SweepSpec(_Strict):
    """Named variants, a grid (lists for any dotted key) and/or a search, each run for every seed.

    ``variants`` is a list of tables, each a ``label`` plus overrides of the spec (merged into it:
    tables key by key, lists replaced), e.g. the four defences of the sleep paper, each with its
    own mechanism and attacks; a variant's own ``seeds`` replace the sweep's, and its own ``full``
    table is merged in with ``FULL=1``. The grid and search apply to every variant.
    """

    seeds: list[int] = Field(default_factory=lambda: [0])
    variants: list[dict[str, Any]] = Field(default_factory=list)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    search: SearchSpec | None = None

    @field_validator("variants")
    @classmethod
    def _labelled(cls, v: list[dict[str, Any]]) -> list[dict[str, Any]]:
        labels = [str(item.get("label", "")) for item in v]
        if any(not label for label in labels):
            raise ValueError("every variant needs a non-empty 'label'")
        dup = sorted({label for label in labels if labels.count(label) > 1})
        if dup:
            raise ValueError(f"variant labels must be unique (repeated: {dup})")
        bad = [k for item in v for k in item if k in ("sweep", "seed", "name")]
        if bad:
            raise ValueError(f"a variant cannot override {sorted(set(bad))} (use 'seeds' for its own seed list)")
        for item in v:
            seeds = item.get("seeds")
            if seeds is not None and (
                not isinstance(seeds, list) or not seeds or any(not isinstance(x, int) or x < 0 for x in seeds)
            ):
                raise ValueError(f"variant {item['label']!r}: seeds must be a non-empty list of integers >= 0")
        return v

    @field_validator("grid")
    @classmethod
    def _lists(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        empty = [k for k, vals in v.items() if not vals]
        if empty:
            raise ValueError(f"grid values must be non-empty lists (empty: {empty})")
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if not v or any(s < 0 for s in v) or len(set(v)) != len(v):
            raise ValueError("seeds must be a non-empty list of distinct integers >= 0")
        return v


_SUITE_LABELS = {
    "none": set(),
    "quick": {"fgsm", "pgd"},
    "seed-paper": set(),
    "full": {"fgsm", "pgd-100x5", "apgd-ce", "apgd-t", "fab-t", "apgd-dlr", "square", "boundary", "transfer"},
}


def suite_labels(spec: EvalSpec) -> set[str]:
    """Every ``attack`` name the evaluation of ``spec`` stores rows under (objectives must be one)."""
    always = {"clean", "noise", "blur"} | ({"worst-case"} if spec.suite != "none" else set())
    return always | _SUITE_LABELS[spec.suite] | {a.label or a.name for a in spec.attacks}


class ExperimentSpec(_Strict):
    """A whole experiment: data -> model (+ mechanism) -> train -> evaluate."""

    name: str = "experiment"
    description: str = ""
    label: str = Field(default="", description="model label in the store (default: model[+mechanism])")
    seed: int = Field(default=0, ge=0)
    data: DataSpec = Field(default_factory=DataSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    mechanism: MechanismSpec | None = None
    mechanisms: list[MechanismSpec] = Field(
        default_factory=list,
        description="a stack of mechanisms applied in order to the trained model ([[mechanisms]]); one entry "
        "is the same as `mechanism` (same train key)",
    )
    train: TrainSpec = Field(default_factory=TrainSpec)
    evaluate: EvalSpec = Field(default_factory=EvalSpec)
    twin: str = Field(
        default="",
        description="a combination's twin: the label of the variant of this experiment that differs from it only "
        "by the mechanism (same data, training budget and evaluation); the leaderboard gives their paired gap",
    )
    full: dict[str, Any] = Field(default_factory=dict, description="overrides applied with FULL=1 (paper scale)")
    reductions: str = Field(default="", description="what the 30-minute tier reduces, stated in reports")
    sweep: SweepSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_way_to_stack(cls, raw: Any) -> Any:
        # `[[mechanisms]]` with one entry is `mechanism`: normalised so that its train key (and the cached
        # checkpoint) is the one a `[mechanism]` table gives; both at once would be ambiguous
        if not isinstance(raw, dict) or not raw.get("mechanisms"):
            return raw
        if raw.get("mechanism"):
            raise ValueError("give either `mechanism` or `[[mechanisms]]` (a stack applied in order), not both")
        stack = raw["mechanisms"]
        if isinstance(stack, list) and len(stack) == 1:
            return {**{k: v for k, v in raw.items() if k != "mechanisms"}, "mechanism": stack[0]}
        return raw

    @property
    def stack(self) -> list[MechanismSpec]:
        """The mechanisms applied to the trained model, in order (empty, ``[mechanism]`` or ``mechanisms``)."""
        return list(self.mechanisms) if self.mechanisms else ([self.mechanism] if self.mechanism else [])

    def without_last_mechanism(self) -> ExperimentSpec:
        """The spec whose trained model the last mechanism of :attr:`stack` acts on (cached under its own key)."""
        rest = self.stack[:-1]
        if len(rest) <= 1:
            return self.model_copy(update={"mechanism": rest[0] if rest else None, "mechanisms": []})
        return self.model_copy(update={"mechanism": None, "mechanisms": rest})

    @model_validator(mode="after")
    def _validation_split(self) -> ExperimentSpec:
        if self.evaluate.split == "val" and self.data.validation == 0:
            raise ValueError("evaluate.split = 'val' needs data.validation > 0 (held-out training images)")
        if self.sweep and self.sweep.search:
            labels = suite_labels(self.evaluate)
            if self.sweep.search.objective.attack not in labels:
                raise ValueError(
                    f"sweep.search.objective.attack {self.sweep.search.objective.attack!r} is not measured by "
                    f"suite {self.evaluate.suite!r}; choose one of {sorted(labels)}"
                )
        if self.sweep and self.sweep.search and self.evaluate.split != "val":
            raise ValueError(
                "a search tunes on a validation split, never on the test split: set data.validation "
                "(e.g. 5000) and evaluate.split = 'val'"
            )
        return self


def _format_validation_error(path: str, err: ValidationError) -> str:
    lines = [f"{path}: invalid spec ({err.error_count()} problem(s)):"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            parent = e["loc"][:-1]
            model: type[BaseModel] = ExperimentSpec
            for part in parent:
                field = model.model_fields.get(str(part))
                ann = getattr(field, "annotation", None) if field else None
                model = next(
                    (a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)),
                    model,
                )
            msg = f"unknown key; allowed keys here: {', '.join(model.model_fields)}"
        elif e["type"] == "literal_error":
            msg = f"{msg} (got {e.get('input')!r})"
        elif "input" in e and e["type"] != "missing" and e["loc"] and not isinstance(e["input"], dict):
            msg = f"{msg} (got {e['input']!r})"
        lines.append(f"  - {loc}: {msg}")
    return "\n".join(lines)


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _variants_tier(raw: dict[str, Any], full: bool) -> dict[str, Any]:
    """Merge each sweep variant's own ``full`` table into it (``full=True``) or drop it."""
    sweep = raw.get("sweep")
    if not isinstance(sweep, dict) or not isinstance(sweep.get("variants"), list):
        return raw
    variants = []
    for v in sweep["variants"]:
        if isinstance(v, dict) and "full" in v:
            extra, v = v["full"], {k: x for k, x in v.items() if k != "full"}
            if full and isinstance(extra, dict):
                v = _deep_merge(v, extra)
        variants.append(v)
    return {**raw, "sweep": {**sweep, "variants": variants}}


def parse_spec(raw: dict[str, Any], *, source: str = "<spec>", full: bool = False) -> ExperimentSpec:
    """Validate a spec from a dict; ``full=True`` applies its ``[full]`` table (paper scale)."""
    raw = _variants_tier(raw, full)
    try:
        spec = ExperimentSpec.model_validate(raw)
        if full and spec.full:
            merged = _deep_merge({k: v for k, v in raw.items() if k != "full"}, spec.full)
            spec = ExperimentSpec.model_validate({**merged, "full": spec.full})
    except ValidationError as err:
        raise SpecError(_format_validation_error(source, err)) from None
    return spec


def configs_dir() -> Path:
    """The experiment configs: ``./configs`` when it exists (a checkout's working directory), else the
    installed repository's ``configs/``."""
    from .data.search import REPO_ROOT

    local = Path("configs")
    return local if local.is_dir() else REPO_ROOT / "configs"


def load_spec(path: str | Path, *, full: bool = False) -> ExperimentSpec:
    """Read and validate a TOML spec; the spec's ``name`` defaults to the file's stem.

    Raises
    ------
    SpecError
        Missing file, TOML syntax error, unknown key, wrong type or impossible value.
    """
    path = Path(path)
    raw = _read_toml(path)
    renamed = _renamed_to(raw, path)
    if renamed is not None:  # a config's old name, kept for one release (docs/architecture.md, "Names")
        target = path.with_name(f"{renamed}.toml")
        warnings.warn(
            f"{path.stem} is now called {renamed}: use `{renamed}` (configs/{renamed}.toml); "
            f"the old name goes away in the next release.",
            FutureWarning,
            stacklevel=2,
        )
        path, raw = target, _read_toml(target)
    if not raw:
        raise SpecError(
            f"{path}: the spec is empty. Give at least [data] and [model] (see configs/baseline_mnist_cnn.toml "
            "and docs/specs.md)."
        )
    raw.setdefault("name", path.stem)
    return parse_spec(raw, source=str(path), full=full)


def _read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise SpecError(f"{path}: spec file not found. Specs live in configs/; run `neurorobust list experiments`.")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: not valid TOML ({exc}). Fix the syntax and run again.") from None
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not a UTF-8 text file.") from None


def renamed_to(raw: dict[str, Any]) -> str | None:
    """The new name when ``raw`` (a parsed TOML file) is an alias for a renamed config or claims file: a file
    holding ``renamed_to = "NEW"`` and nothing else; ``None`` for any other file."""
    value = raw.get("renamed_to")
    return value if isinstance(value, str) and set(raw) == {"renamed_to"} else None


def _renamed_to(raw: dict[str, Any], path: Path) -> str | None:
    """:func:`renamed_to`, refusing a file that names ``renamed_to`` beside other keys."""
    if "renamed_to" in raw and renamed_to(raw) is None:
        raise SpecError(f'{path}: an alias config holds only `renamed_to = "NEW_NAME"`.')
    return renamed_to(raw)


def renamed_configs(folder: str | Path | None = None) -> dict[str, str]:
    """``{old name: new name}`` of the alias configs in ``folder`` (default :func:`configs_dir`)."""
    path = Path(folder or configs_dir()).resolve()
    return dict(_renamed_in(str(path), path.stat().st_mtime_ns if path.is_dir() else 0))


@functools.lru_cache(maxsize=8)
def _renamed_in(folder: str, mtime_ns: int) -> tuple[tuple[str, str], ...]:
    """Cached per folder and modification time: claims matching asks for every row of a store."""
    out = {}
    for path in sorted(Path(folder).glob("*.toml")):
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError):
            continue
        new = renamed_to(raw)
        if new is not None:
            out[path.stem] = new
    return tuple(out.items())


def canonical_experiment(name: str) -> str:
    """An experiment's current name: stores written before a config was renamed hold the old one
    (``sgbn_mnist`` -> ``stochastic_mnist_sgbn``, and its FULL tier ``sgbn_mnist_full`` likewise)."""
    renamed = renamed_configs()
    base, suffix = (name[: -len("_full")], "_full") if name.endswith("_full") else (name, "")
    if name in renamed:
        return renamed[name]
    return renamed[base] + suffix if base in renamed else name


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def train_key(spec: ExperimentSpec) -> str:
    """Hash of data, model, mechanism, training settings, seed and :data:`CACHE_VERSION`."""
    d = spec.model_dump(mode="json")
    data = {k: v for k, v in d["data"].items() if k != "data_dir"}
    # options added later hash only when set, so adding one leaves existing checkpoints valid
    train = {
        k: v
        for k, v in d["train"].items()
        if not ((k == "adversarial" and v is None) or (k == "augment" and v == "none"))
    }
    if train.get("adversarial") and not train["adversarial"].get("warmup_epochs"):
        train["adversarial"] = {k: v for k, v in train["adversarial"].items() if k != "warmup_epochs"}
    parts = [data, d["model"], d["mechanism"], train, d["seed"], CACHE_VERSION]
    if d["mechanisms"]:  # a stack of two or more (one is normalised to `mechanism`): hashed only when set
        parts.append({"mechanisms": d["mechanisms"]})
    versions = _entry_versions(spec)
    if versions:  # only entries whose version was bumped: every other key stays as it was
        parts.append(versions)
    return _digest(parts)


def _entry_versions(spec: ExperimentSpec) -> dict[str, int]:
    """Registry versions > 1 of the spec's model and mechanism (a fix that changed their results)."""
    from .mechanisms import MECHANISMS
    from .models import MODELS

    out: dict[str, int] = {}
    version = MODELS.get(spec.model.name).version
    if version > 1:
        out["model"] = version
    for i, m in enumerate(spec.stack):
        version = MECHANISMS.get(m.name).version
        if version > 1:
            # a single mechanism keeps the key it always had
            out["mechanism" if len(spec.stack) == 1 else f"mechanism{i}"] = version
    return out


def eval_key(spec: ExperimentSpec) -> str:
    """Train key plus the evaluation settings: changing the suite never retrains."""
    evaluate = spec.model_dump(mode="json")["evaluate"]
    # options added later hash only when set, so adding one leaves existing result rows valid
    evaluate["attacks"] = [{k: v for k, v in a.items() if not (k == "adaptive" and v)} for a in evaluate["attacks"]]
    if evaluate.get("checklist") is True:
        del evaluate["checklist"]
    return _digest([train_key(spec), evaluate])
