"""Foveation benchmark: training and PGD-20 throughput of every front-end vs the standard backbone.

Run: ``python benchmarks/foveation.py`` (``make bench`` runs every benchmark; ``--size 32`` for the
CIFAR-10 ResNet-20 setting, ``--width 64`` for the paper-scale backbone). For each model of
``configs/foveation_<data>.toml`` (30-minute tier geometry) it times, side by side in one process on
random images:

* training: Adam steps on batches of ``--batch`` images in train mode (one random fixation per
  image or batch, as the models train), images per second;
* PGD-20 (L-inf, eps 0.005, step eps/12, no early stop so every model does the same 20 gradient
  steps), images per second, in eval mode (five fixations with averaged logits; STN and multi-gaze:
  five branches);

and prints both with their ratio to the standard backbone (the cost of foveation), plus the
parameter counts. Timings are the median of ``--repeats`` runs after one warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from neurorobust.attacks import PGD
from neurorobust.models import count_parameters, create_model


def models(size: int, width: int) -> list[tuple[str, dict]]:
    """The 30-minute tier's variants (configs/foveation_*.toml) for images of side ``size``."""
    small = size == 32
    stn = {"glimpse": 16} if small else {"glimpse": 45}
    gaze = {"glimpse": 16} if small else {"glimpse": 64}
    return [
        ("standard", {"frontend": "none"}),
        ("coarse", {"frontend": "coarse"}),
        ("retinal-discrete", {"frontend": "retinal", "sampling": "discrete"}),
        ("retinal-bilinear", {"frontend": "retinal", "sampling": "bilinear"}),
        ("cortical", {"frontend": "cortical"}),
        ("stn-affine", {"frontend": "stn", "transform": "affine", **stn}),
        ("stn-attention", {"frontend": "stn", "transform": "attention", **stn}),
        ("multigaze", {"frontend": "multigaze", **gaze}),
    ]


def _median_rate(fn, images: int, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return images / statistics.median(times)


def bpda_probe(config: str, n: int) -> None:
    """PGD-20 (eps/12, early stop) on the trained ``retinal-discrete`` network of ``config`` (seed 0, from the
    checkpoint cache): its exact input gradient vs BPDA through the straight-through bilinear sampler."""
    from neurorobust.attacks.wrappers import BPDA
    from neurorobust.data import balanced_subset, load_dataset
    from neurorobust.experiments.runner import load_trained_variant
    from neurorobust.mechanisms.foveation import _StraightThroughView
    from neurorobust.specs import load_spec

    spec = load_spec(config)
    data = load_dataset(spec.data.name, spec.data.data_dir)
    net = load_trained_variant(spec, "retinal-discrete", required=False)
    if net is None:
        raise SystemExit(f"retinal-discrete of {config} is not trained yet: run `neurorobust repro` first")
    idx = balanced_subset(data.y_test, n, seed=0)
    x, y = data.x_test[idx], data.y_test[idx]
    pgd = PGD(steps=20, rel_step_size=1 / 12, random_start=False, early_stop=True)
    for eps in (0.005, 0.01):
        exact = pgd(net, x, y, eps=eps, generator=torch.Generator().manual_seed(0))
        bpda = BPDA(attack=pgd, surrogate=_StraightThroughView(net))(
            net, x, y, eps=eps, generator=torch.Generator().manual_seed(0)
        )
        print(f"eps {eps}: exact-gradient PGD-20 {exact.robust_accuracy:.3f}  BPDA {bpda.robust_accuracy:.3f}  n={n}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bpda-probe", metavar="CONFIG", help="only compare exact vs BPDA gradients (see bpda_probe)")
    parser.add_argument("--probe-n", type=int, default=50)
    parser.add_argument("--size", type=int, default=128, choices=[32, 128])
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--attack-batch", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.bpda_probe:
        bpda_probe(args.bpda_probe, args.probe_n)
        return
    backbone = "resnet20" if args.size == 32 else "resnet18"
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 3, args.size, args.size, generator=gen)
    y = torch.randint(0, 10, (args.batch,), generator=gen)
    xa, ya = x[: args.attack_batch], y[: args.attack_batch]
    pgd = PGD(steps=20, rel_step_size=1 / 12, random_start=False)
    print(
        f"foveation benchmark: {backbone} width {args.width}, {args.size} px, train batch {args.batch}, "
        f"PGD-20 batch {args.attack_batch}, torch threads {torch.get_num_threads()}"
    )
    print(f"{'model':<18} {'params':>9} {'train img/s':>12} {'ratio':>7} {'PGD-20 img/s':>13} {'ratio':>7}")
    base_train = base_pgd = None
    # one untimed pass through every kernel first, so the first model timed is not the one paying for it
    warm = create_model("foveated", input_shape=(3, args.size, args.size), backbone=backbone, width=args.width)
    F.cross_entropy(warm.train()(x), y).backward()
    pgd(warm.eval(), xa, ya, eps=0.005, generator=torch.Generator().manual_seed(0))
    for label, params in models(args.size, args.width):
        torch.manual_seed(0)
        net = create_model(
            "foveated", input_shape=(3, args.size, args.size), backbone=backbone, width=args.width, **params
        )
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)

        def train_step(net=net, opt=opt) -> None:
            net.train()
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        def attack(net=net) -> None:
            net.eval()
            pgd(net, xa, ya, eps=0.005, generator=torch.Generator().manual_seed(0))

        train = _median_rate(train_step, len(x), args.repeats)
        rate = _median_rate(attack, len(xa), max(1, args.repeats - 1))
        base_train = base_train or train
        base_pgd = base_pgd or rate
        print(
            f"{label:<18} {count_parameters(net):>9,} {train:>12.1f} {train / base_train:>6.2f}x "
            f"{rate:>13.2f} {rate / base_pgd:>6.2f}x",
            flush=True,
        )


if __name__ == "__main__":
    main()
