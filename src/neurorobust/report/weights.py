"""Weight histograms of trained variants of a spec, from the checkpoint cache (no training).

``python -m neurorobust.report.weights configs/sleep_mnist.toml control sleep-A sleep-B --out F.png``
plots each variant's weight layers (seed 0 unless ``--seed``) as histograms side by side, e.g.
before and after sleep (Tadros et al. 2020 argue sleep widens the weight distribution). The
variants must have been trained (``make repro NAME=...``); a missing checkpoint is an error that
says so.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from torch import nn

from ..errors import NeuroRobustError

__all__ = ["variant_weights"]


def variant_weights(config: str | Path, labels: list[str], *, seed: int = 0, runs_dir: Path | None = None) -> dict:
    """``{label: [weight tensors]}`` of the named sweep variants of ``config``, loaded from checkpoints."""
    from ..data import load_dataset
    from ..experiments.runner import checkpoint_model, default_runs_dir
    from ..experiments.sweep import expand_sweep
    from ..specs import load_spec, train_key
    from ..training import load_checkpoint

    variants = {(v.spec.label, v.spec.seed): v.spec for v in expand_sweep(load_spec(config))}
    folder = (runs_dir or default_runs_dir()) / "checkpoints"
    out = {}
    for label in labels:
        spec = variants.get((label, seed))
        if spec is None:
            known = sorted({k[0] for k in variants})
            raise NeuroRobustError(f"{config}: no variant {label!r} with seed {seed}; variants: {', '.join(known)}")
        model = checkpoint_model(spec, load_dataset(spec.data.name, spec.data.data_dir))
        if load_checkpoint(folder, train_key(spec), model) is None:
            raise NeuroRobustError(
                f"{label} (seed {seed}) is not trained yet: run `make repro NAME={Path(config).stem}` first"
            )
        out[label] = [m.weight.detach() for m in model.modules() if isinstance(m, nn.Linear)]
    return out


def main(argv: list[str] | None = None) -> None:
    from .figures import weight_histogram_figure

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("config")
    parser.add_argument("labels", nargs="+")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        path = weight_histogram_figure(variant_weights(args.config, args.labels, seed=args.seed), args.out)
    except NeuroRobustError as exc:
        raise SystemExit(f"error: {exc}") from None
    print(path)


if __name__ == "__main__":
    main()
