"""Papers' claims, machine-readable (``claims/NAME.toml``), and the verdict rule of DESIGN §7.

A claims file::

    paper = "Liu, Li, Chen - Evaluating adversarial robustness in simulated cerebellum"
    seed = "003"

    [[claims]]
    id = "t2-base-fgsm-0.1"          # unique within the file
    table = "Table 2"                # table or figure
    row = "Base"
    dataset = "mnist"
    metric = "accuracy"              # our metric name in the store
    attack = "fgsm"                  # our attack key ("clean", "noise", "blur", or a registry key)
    settings = { loss = "mse" }      # the paper's attack settings, for the reader
    eps = 0.1
    norm = "linf"
    value = 36.8                     # in `unit`
    sd = 0.0
    unit = "percent"                 # percent | fraction | raw
    kind = "absolute"                # absolute | relative | direction | qualitative
    headline = true                  # false for the other of two disagreeing tables (footnoted)
    footnote = ""
    comparable = true                # false where our setting differs (stand-in data, reduced scale)
    reason = ""                      # why not comparable
    experiment = "cerebellum_mnist"  # where our number is in the store
    model = "rc+ltd"
    baseline_model = ""              # relative claims: ours = model / baseline_model

Verdicts
--------
* **reproduced**: absolute claims, ``|ours - value| <= max(2 sd, tol)`` with ``tol`` = 3 points for
  percent, 0.03 for fraction and ``max(2 sd, 3% of |value|)`` for raw metrics (our reading of
  "3 points" for non-percentages, stated in docs); relative claims ("about doubles"): the ratio
  ``ours_model / ours_baseline`` has the claimed direction and is within 25% of ``value`` (a claimed
  ratio of 1, "no better than", is within 25% of 1); direction claims ("increases", "reduces",
  no magnitude given): the ratio lies on the same side of 1 as ``value`` (e.g. 2 for "increases",
  0.5 for "reduces");
* **not reproduced**: otherwise;
* **not judged**: qualitative claims without numbers;
* **not comparable**: ``comparable = false`` (our number is still shown);
* **not run**: no number of ours in the store yet.
"""

from __future__ import annotations

import math
import tomllib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import SpecError
from .specs import canonical_experiment, renamed_to

__all__ = ["Claim", "ClaimsFile", "Verdict", "claims_paths", "judge", "load_claims", "ours_for"]


class Claim(BaseModel):
    """One claim of a paper."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    table: str
    row: str = ""
    dataset: str
    metric: str
    attack: str = "clean"
    settings: dict[str, Any] = Field(default_factory=dict)
    eps: float | None = None
    norm: Literal["linf", "l2", "l0", "none"] = "none"
    value: float | None = None
    sd: float = Field(default=0.0, ge=0)
    unit: Literal["percent", "fraction", "raw"] = "percent"
    kind: Literal["absolute", "relative", "direction", "qualitative"] = "absolute"
    headline: bool = True
    footnote: str = ""
    comparable: bool = True
    reason: str = ""
    #: Why our run cannot judge this claim although it measures the same quantity (e.g. a control trained with a
    #: weaker recipe than the defence, a network trained far short of the paper's epochs): the verdict is then
    #: "not judged", our number is still shown, and this reason goes with it.
    not_judged: str = ""
    experiment: str = ""
    model: str = ""
    baseline_model: str = ""
    text: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> Claim:
        if self.kind != "qualitative" and self.value is None:
            raise ValueError("absolute and relative claims need a value")
        if self.kind in ("relative", "direction") and not self.baseline_model:
            raise ValueError(f"{self.kind} claims need baseline_model")
        if self.kind == "direction" and self.value == 1:
            raise ValueError("a direction claim's value must be above 1 (increases) or below 1 (reduces)")
        if not self.comparable and not self.reason:
            raise ValueError("say why a claim is not comparable (reason)")
        return self


class ClaimsFile(BaseModel):
    """A paper's claims file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    paper: str
    seed: str
    claims: list[Claim]

    @model_validator(mode="after")
    def _unique(self) -> ClaimsFile:
        ids = [c.id for c in self.claims]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise ValueError(f"duplicate claim ids: {sorted(dup)}")
        return self


Verdict = Literal["reproduced", "not reproduced", "not judged", "not comparable", "not run"]


@dataclass(frozen=True)
class Judgement:
    """A claim, our number (in the claim's unit) and the verdict."""

    claim: Claim
    ours: float | None
    verdict: Verdict
    tolerance: float | None


def claims_paths(folder: str | Path | None = None) -> list[Path]:
    """The claims files, sorted: ``folder``'s ``*.toml``; by default ``./claims`` when it exists (a
    checkout's working directory), else the installed repository's ``claims/``."""
    if folder is None:
        from .data.search import REPO_ROOT

        folder = Path("claims") if Path("claims").is_dir() else REPO_ROOT / "claims"
    return [p for p in sorted(Path(folder).glob("*.toml")) if _renamed_to(p) is None]


def _renamed_to(path: Path) -> str | None:
    """The new name in an alias claims file (``renamed_to = "NEW"``, the old name kept one release)."""
    try:
        return renamed_to(tomllib.loads(path.read_text(encoding="utf-8")))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError):
        return None


def load_claims(path: str | Path) -> ClaimsFile:
    """Read and validate ``claims/NAME.toml``; errors name the file and key path. An old name
    (``claims/kubo.toml``) loads the renamed file with a warning."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: claims file not found.")
    renamed = _renamed_to(path)
    if renamed is not None:
        warnings.warn(
            f"{path.name} is now {renamed}.toml; the old name goes away in the next release.",
            FutureWarning,
            stacklevel=2,
        )
        path = path.with_name(f"{renamed}.toml")
    try:
        return ClaimsFile.model_validate(tomllib.loads(path.read_text(encoding="utf-8")))
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: not valid TOML ({exc}).") from None
    except ValidationError as err:
        probs = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise SpecError(f"{path}: invalid claims file: {probs}") from None


def _tolerance(claim: Claim) -> float:
    if claim.value is None:
        raise SpecError(f"claim {claim.id!r}: a {claim.kind} claim needs a value")
    base = {"percent": 3.0, "fraction": 0.03}.get(claim.unit, 0.03 * abs(claim.value))
    return max(2 * claim.sd, base)


def judge(claim: Claim, ours: float | None, baseline: float | None = None) -> Judgement:
    """Verdict for ``claim`` given our number (and our baseline's, for relative claims).

    ``ours`` and ``baseline`` are in the claim's unit (percent claims: pass percent).

    Examples
    --------
    >>> c = Claim(id="a", table="T2", dataset="mnist", metric="accuracy", value=36.8)
    >>> judge(c, 38.0).verdict
    'reproduced'
    >>> judge(c, 45.0).verdict
    'not reproduced'
    """
    if claim.kind == "qualitative":
        return Judgement(claim, ours, "not judged", None)
    if ours is None or (isinstance(ours, float) and math.isnan(ours)):
        return Judgement(claim, ours, "not run", None)
    if claim.value is None:
        raise SpecError(f"claim {claim.id!r}: a {claim.kind} claim needs a value")
    if claim.kind in ("relative", "direction"):
        if baseline is None or baseline == 0:
            return Judgement(claim, None, "not run", None)
        ratio = ours / baseline
        if claim.not_judged:
            return Judgement(claim, ratio, "not judged", None)
        if math.isnan(ratio):  # e.g. both infinite: no minimal eps found for either model
            return Judgement(claim, ratio, "not judged", None)
        if not claim.comparable:
            return Judgement(claim, ratio, "not comparable", None)
        same_direction = (ratio - 1) * (claim.value - 1) > 0 or claim.value == 1
        if claim.kind == "direction":
            return Judgement(claim, ratio, "reproduced" if same_direction else "not reproduced", None)
        ok = same_direction and abs(ratio - claim.value) <= 0.25 * abs(claim.value)
        return Judgement(claim, ratio, "reproduced" if ok else "not reproduced", 0.25 * abs(claim.value))
    if not claim.comparable:
        return Judgement(claim, ours, "not comparable", None)
    if claim.not_judged:
        return Judgement(claim, ours, "not judged", None)
    tol = _tolerance(claim)
    return Judgement(claim, ours, "reproduced" if abs(ours - claim.value) <= tol else "not reproduced", tol)


def ours_for(claim: Claim, rows: list[dict[str, Any]], model: str | None = None) -> float | None:
    """Our number for ``claim`` among store rows (latest run per seed, mean over seeds), in the claim's unit."""
    model = model or claim.model
    # a store may predate a config's rename: compare current names, computed once per experiment
    current = {e: canonical_experiment(e) for e in {r["experiment"] for r in rows}}
    match = [
        r
        for r in rows
        if current[r["experiment"]] == claim.experiment
        and r["model"] == model
        and r["metric"] == claim.metric
        and r["attack"] == claim.attack
        and r["dataset"] == claim.dataset
        and (claim.eps is None or (r["eps"] is not None and abs(r["eps"] - claim.eps) < 1e-9))
    ]
    latest: dict[Any, dict[str, Any]] = {}
    for r in match:  # the latest run of each seed, then the mean over seeds
        if r.get("seed") not in latest or r["run_id"] > latest[r.get("seed")]["run_id"]:
            latest[r.get("seed")] = r
    values = [r["value"] for r in latest.values() if r["value"] is not None]
    if not values:
        return None
    value = sum(values) / len(values)
    return 100 * value if claim.unit == "percent" else value
