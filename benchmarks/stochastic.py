"""Training throughput of SGBN against the plain CNN of the same main network (Kubo 2019, thesis ch. 4).

Run: ``python benchmarks/stochastic.py`` (``make bench`` runs every benchmark). Side by side in one run, with
the thesis' batch sizes (MNIST 50, CIFAR-10 128) and Adam, it times ``--steps`` training steps of

* MNIST: the plain CNN (``sgbn_cnn``), CNN-BIN, SGBN with the thesis' full gates (5x5x32x1 and 5x5x64x32
  masks) and with the reduced channel-level gates of the 30-minute tier, and Kubo's chapter-3 1CNN with
  stochastic binary neurons (STE, REINFORCE);
* CIFAR-10 (random images of its shape): the plain CNN and SGBN with reduced gates (the full CIFAR-10
  gates, ~360M parameters, are timed with ``--cifar-full``; about 13 h per run);

and prints samples per second, the slowdown against the plain CNN, and the training time one run of the
thesis' scale would take at that speed (MNIST: 25 epochs of 60,000 images; CIFAR-10: 40 epochs of 50,000;
chapter 3: 30 epochs of 60,000), so the FULL=1 times follow (x 10 seeds). ``--repro`` also times
``neurorobust repro stochastic_mnist`` (the 30-minute tier; target: under 30 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import torch

from neurorobust.models import count_parameters, create_model

CASES = [
    # label, model, params, input shape, batch, thesis epochs x training images (one run)
    ("CNN (plain, MNIST)", "sgbn_cnn", {}, (1, 28, 28), 50, 25 * 60_000),
    ("CNN-BIN", "sgbn_cnn_bin", {}, (1, 28, 28), 50, 25 * 60_000),
    ("SGBN, full gates", "sgbn", {"mask": "full"}, (1, 28, 28), 50, 25 * 60_000),
    ("SGBN, reduced gates", "sgbn", {"mask": "channel"}, (1, 28, 28), 50, 25 * 60_000),
    ("STE-1CNN (ch. 3)", "kubo_sbn_1cnn", {"activation": "ste"}, (1, 28, 28), 100, 30 * 60_000),
    ("REINFORCE-1CNN (ch. 3)", "kubo_sbn_1cnn", {"activation": "reinforce"}, (1, 28, 28), 100, 30 * 60_000),
    ("CNN (plain, CIFAR-10)", "sgbn_cnn", {}, (3, 32, 32), 128, 40 * 50_000),
    ("SGBN, reduced gates, CIFAR-10", "sgbn", {"mask": "channel"}, (3, 32, 32), 128, 40 * 50_000),
]


def throughput(name: str, params: dict, shape: tuple[int, ...], batch: int, steps: int) -> tuple[float, int]:
    """Training samples per second (Adam, cross-entropy) after two warm-up steps, and the parameter count."""
    torch.manual_seed(0)
    model = create_model(name, input_shape=shape, **params).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.rand(batch, *shape), torch.randint(0, 10, (batch,))
    for i in range(steps + 2):
        if i == 2:
            start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * batch / (time.perf_counter() - start), count_parameters(model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="timed training steps per model")
    parser.add_argument("--cifar-full", action="store_true", help="also time SGBN with the full CIFAR-10 gates")
    parser.add_argument("--repro", action="store_true", help="also time `neurorobust repro stochastic_mnist`")
    args = parser.parse_args()
    cases = list(CASES)
    if args.cifar_full:
        cases.append(("SGBN, full gates, CIFAR-10", "sgbn", {"mask": "full"}, (3, 32, 32), 128, 40 * 50_000))
    print(f"torch threads: {torch.get_num_threads()}; {args.steps} timed Adam steps per model")
    header = f"{'model':<31} {'params':>12} {'batch':>5} {'samples/s':>10} {'vs plain CNN':>13}"
    print(f"{header} {'one thesis-scale run':>21}")
    plain: dict[tuple[int, ...], float] = {}
    for label, name, params, shape, batch, samples in cases:
        rate, n_params = throughput(name, params, shape, batch, args.steps)
        if label.startswith("CNN (plain"):
            plain[shape] = rate
        ratio = plain[shape] / rate if shape in plain else float("nan")
        hours = samples / rate / 3600
        print(f"{label:<31} {n_params:>12,} {batch:>5} {rate:>10.0f} {ratio:>12.1f}x {hours:>19.1f} h")
    if args.repro:
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "neurorobust.cli", "repro", "stochastic_mnist"], check=False)
        minutes = (time.perf_counter() - start) / 60
        status = "ok" if done.returncode == 0 else f"exit {done.returncode}"
        print(f"neurorobust repro stochastic_mnist: {minutes:.1f} min ({status}; target < 30 min on 2 cores)")


if __name__ == "__main__":
    main()
