"""Reference defences benchmark: epoch time of adversarial training vs standard training on MNIST.

Run: ``python benchmarks/reference.py [--n 10000]`` (``make bench`` runs every benchmark). Kubo's
2CNN, Adam, batch 100, one epoch over ``n`` training images for each of: standard training,
PGD-AT with 7 inner steps (Madry et al.), TRADES with 7 inner steps (Zhang et al.) and fast
FGSM-AT (Wong et al.), side by side in one run; prints seconds, images/s and the ratio to
standard training. ``make repro NAME=advtrain_mnist`` times the whole reproduction (its wall time
is printed by the sweep summary).
"""

from __future__ import annotations

import argparse
import time

import torch

from neurorobust.data import load_dataset
from neurorobust.models import create_model
from neurorobust.training import fit

SETTINGS = {
    "standard": None,
    "pgd-at (7 steps)": {"method": "pgd", "eps": 0.3, "steps": 7},
    "trades (7 steps)": {"method": "trades", "eps": 0.3, "steps": 7, "beta": 6.0},
    "fgsm-rs": {"method": "fgsm-rs", "eps": 0.3, "check_every": 0},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=10_000, help="training images per epoch")
    args = parser.parse_args()
    data = load_dataset("mnist")
    x, y = data.x_train[: args.n], data.y_train[: args.n]
    print(f"one epoch over {args.n} MNIST images, kubo_2cnn, batch 100, torch threads {torch.get_num_threads()}")
    print(f"{'method':<18} {'seconds':>8} {'images/s':>9} {'x standard':>11}")
    base = None
    for name, adversarial in SETTINGS.items():
        torch.manual_seed(0)
        model = create_model("kubo_2cnn")
        fit(model, x[:200], y[:200], batch_size=100, epochs=1, adversarial=adversarial)  # warm-up
        start = time.perf_counter()
        fit(model, x, y, batch_size=100, epochs=1, adversarial=adversarial)
        secs = time.perf_counter() - start
        base = base or secs
        print(f"{name:<18} {secs:>8.2f} {args.n / secs:>9.0f} {secs / base:>10.1f}x")


if __name__ == "__main__":
    main()
