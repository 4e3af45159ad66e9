"""Per-paper reporters: the tables and figures one paper's experiments add to a report.

A reporter is a small class registered in :data:`REPORTERS` under the paper's one name (the
name its claims file, docs page and configs use: docs/architecture.md). :func:`~neurorobust.report.build.build_report`
asks every registered reporter, in registration order, whether it applies to an experiment
(:meth:`Reporter.applies`) and appends the items it returns (:meth:`Reporter.items`). Mechanism
modules know nothing of reports; everything a figure needs comes from the store, the experiment's
config and the checkpoint cache through :class:`ReportContext`.

Adding a paper: write ``report/families/<paper>.py`` with a ``Reporter`` subclass decorated
``@register_reporter("<family>", paper="Author et al. YEAR")`` and import it below.

Examples
--------
>>> from neurorobust.report.families import REPORTERS
>>> sorted(REPORTERS.names())[:2]
['cerebellum', 'foveation']
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from ...registry import Registry

__all__ = ["REPORTERS", "ReportContext", "ReportItem", "Reporter", "register_reporter", "reporters"]

#: ``(kind, title, payload)``: kind ``"table"`` with payload ``(header, body)``, or kind ``"figure"``
#: with payload the figure's file name inside the report folder.
ReportItem = tuple[str, str, Any]

REPORTERS = Registry("reporter")
_ORDER: list[str] = []  # registration order (the registry itself lists names sorted)


@dataclass
class ReportContext:
    """What a reporter may read: one experiment's rows, its store, its config and its output folder.

    Attributes
    ----------
    experiment : str
        The experiment's name (``configs/<experiment>.toml`` when it came from a config).
    store : ResultsStore
    outdir : Path
        Where figures go; items name figures relative to it.
    rows : list of dict
        The latest finished row per (model, attack, metric, eps), averaged over seeds
        (:func:`~neurorobust.report.build.latest_rows`).
    runs_dir : Path, optional
        The runs folder whose ``checkpoints/`` hold the trained networks (default: ``$NEURO_RUNS`` or ``runs/``).
    """

    experiment: str
    store: Any
    outdir: Path
    rows: list[dict[str, Any]]
    runs_dir: Path | None = None

    @cached_property
    def raw_rows(self) -> list[dict[str, Any]]:
        """Every finished row of the experiment, one per seed and run (for per-seed statistics)."""
        return self.store.results(experiment=self.experiment, done_only=True)

    @property
    def config(self) -> Path | None:
        """``configs/<experiment>.toml`` when it exists and still parses, else ``None``."""
        from ...specs import configs_dir

        return configs_dir() / f"{self.experiment}.toml" if self.spec is not None else None

    @cached_property
    def spec(self) -> Any | None:
        """The parsed :class:`~neurorobust.specs.ExperimentSpec` of ``configs/<experiment>.toml``, or ``None``
        when there is no such config or it no longer parses (the rest of the report still builds)."""
        from ...errors import NeuroRobustError
        from ...specs import configs_dir, load_spec

        path = configs_dir() / f"{self.experiment}.toml"
        if not path.is_file():
            return None
        try:
            return load_spec(path)
        except NeuroRobustError:
            return None

    @cached_property
    def paper_values(self) -> dict[tuple[str, str, float | None], float]:
        """``{(model, attack, eps): value in %}`` of the absolute accuracy claims mapped to the experiment."""
        from ..build import paper_values

        return paper_values(self.experiment)

    @property
    def checkpoints_dir(self) -> Path:
        """The runs folder to load trained networks from: :attr:`runs_dir`, else the runner's
        (``$NEURO_RUNS`` or ``runs/``, where ``neurorobust repro`` saved them)."""
        from ...experiments.runner import default_runs_dir

        return self.runs_dir if self.runs_dir is not None else default_runs_dir()


class Reporter:
    """One paper's contribution to a report. Subclasses override :meth:`applies` and :meth:`items`."""

    #: The paper's one name (the registry key), set by :func:`register_reporter`.
    name: str = ""

    def applies(self, ctx: ReportContext) -> bool:
        """Whether this paper has anything to add to ``ctx.experiment``'s report."""
        raise NotImplementedError

    def items(self, ctx: ReportContext) -> list[ReportItem]:
        """The tables and figures (figures written under ``ctx.outdir``) this paper adds."""
        raise NotImplementedError


def register_reporter(name: str, *, paper: str) -> Any:
    """Class decorator: register a :class:`Reporter` subclass under the paper's name."""

    def deco(cls: type[Reporter]) -> type[Reporter]:
        cls.name = name
        REPORTERS.register(name, paper=paper)(cls)
        _ORDER.append(name)
        return cls

    return deco


def reporters() -> list[Reporter]:
    """One instance of every registered reporter, in registration order."""
    return [REPORTERS.create(name) for name in _ORDER]


# Registration order is the order of the sections in a report.
from . import hebbian as _hebbian  # noqa: E402,F401,I001  (order = section order)
from . import cerebellum as _cerebellum  # noqa: E402,F401
from . import foveation as _foveation  # noqa: E402,F401
from . import stochastic as _stochastic  # noqa: E402,F401
from . import sleep as _sleep  # noqa: E402,F401
