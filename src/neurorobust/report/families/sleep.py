"""Tadros et al. 2020: weight histograms of the control and the slept networks, from the checkpoint cache.

For an experiment whose config has variants with the ``sleep`` mechanism, the reporter loads the
trained networks of seed 0 (the control, i.e. the variants without a mechanism, and every sleep
variant; variants that share a trained network, such as ``sleep-A (full suite)``, once) and draws
their weight layers as histograms side by side (``weights.png``): Tadros et al. argue that sleep
widens the weight distribution. Nothing is trained: a variant missing from the cache is listed in
a note (``make repro NAME=<experiment>`` trains it).

``neurorobust report sleep_mnist --figures-to docs/figures`` copies the figure to
``docs/figures/sleep_mnist_weights.png`` for docs/sleep.md.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ...errors import NeuroRobustError
from ...experiments.runner import load_trained_variant
from ...experiments.sweep import expand_sweep
from ...specs import train_key
from ...training.checkpoint import checkpoint_paths
from ..figures import weight_histogram_figure
from . import ReportContext, Reporter, ReportItem, register_reporter

__all__ = ["WEIGHTS_FIGURE", "SleepReporter", "weight_variants"]

#: The figure's file name inside the report folder (docs: ``<experiment>_weights.png``).
WEIGHTS_FIGURE = "weights.png"


def weight_variants(spec: Any, *, seed: int = 0) -> list[tuple[str, Any]]:
    """``[(label, variant spec)]`` of ``spec``'s control (no mechanism) and sleep variants with ``seed``,
    control first, one per trained network (the first label of variants that share a train key);
    empty when the spec has no sleep variant or cannot be expanded."""
    try:
        variants = [v for v in expand_sweep(spec) if v.spec.seed == seed]
    except NeuroRobustError:  # e.g. a Bayesian search: nothing to expand here
        return []
    controls = [v for v in variants if v.spec.mechanism is None]
    slept = [v for v in variants if v.spec.mechanism is not None and v.spec.mechanism.name == "sleep"]
    if not slept:
        return []
    out, seen = [], set()
    for v in controls + slept:
        if v.train_key not in seen:
            seen.add(v.train_key)
            out.append((v.spec.label, v.spec))
    return out


@register_reporter("sleep", paper="Tadros, Krishnan, Ramyaa & Bazhenov, ICLR 2020")
class SleepReporter(Reporter):
    """Weight histograms before (control) and after sleep, for configs with ``sleep`` variants."""

    def applies(self, ctx: ReportContext) -> bool:
        return ctx.spec is not None and bool(weight_variants(ctx.spec))

    def items(self, ctx: ReportContext) -> list[ReportItem]:
        folder = ctx.checkpoints_dir / "checkpoints"
        weights: dict[str, list[Any]] = {}
        missing: list[list[str]] = []
        for label, spec in weight_variants(ctx.spec):
            files = checkpoint_paths(folder, train_key(spec))
            model = None
            if all(f.is_file() for f in files):  # the cache is looked at first: no dataset is loaded for nothing
                try:
                    model = load_trained_variant(ctx.spec, label, seed=0, runs_dir=ctx.checkpoints_dir, required=False)
                except NeuroRobustError as exc:  # e.g. its dataset is missing: the rest of the report still builds
                    missing.append([label, f"not loaded: {exc}"])
                    continue
            if model is None:
                missing.append([label, f"not trained yet: run `make repro NAME={ctx.experiment}` first"])
                continue
            weights[label] = [m.weight.detach().cpu().numpy() for m in model.modules() if isinstance(m, nn.Linear)]
        items: list[ReportItem] = []
        if weights:
            weight_histogram_figure(weights, ctx.outdir / WEIGHTS_FIGURE)
            title = "Weights of the control and the slept networks (seed 0, log counts)"
            items.append(("figure", title, WEIGHTS_FIGURE))
        if missing:
            title = "Weight histograms: networks not in the checkpoint cache"
            items.append(("table", title, (["variant", "note"], missing)))
        return items
