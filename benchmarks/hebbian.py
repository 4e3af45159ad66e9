"""Krotov-Hopfield unsupervised learning benchmark: 2,000 hidden units on MNIST (Krotov & Hopfield 2019).

Run: ``python benchmarks/hebbian.py`` (``make bench`` runs every benchmark). Measures, side by side
in one run, unsupervised epochs per second (60,000 L3-normalised training images, mini-batches of
100, the MNIST preset p = 3, k = 7, Delta = 0.4) of

* ``ours``: the batched update that touches only the rows of units that won or came k-th
  (:func:`neurorobust.mechanisms.hebbian.sparse_step`, what ``KrotovHopfieldLayer.learn`` runs);
* ``dense batched``: the authors' vectorised form (``kh_increment`` over the whole weight matrix,
  then the normalised step), as both Krotov's notebook and ``FKHL3.train_step`` compute it;
* ``per-sample loop``: the straightforward loop over the samples of each mini-batch
  (``kh_increment_loop``), same arithmetic, timed on ``--loop-batches`` mini-batches and scaled
  to an epoch;

with the largest weight difference between ours and the dense form after the same steps. With
``--repro`` it also times ``neurorobust repro hebbian_mnist --force`` (30-minute target; run it
through the shared CPU lock).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import torch

from neurorobust.data import load_dataset
from neurorobust.mechanisms.hebbian import (
    PRESETS,
    LpNormalise,
    kh_increment,
    kh_increment_loop,
    normalised_step,
    signed_power,
    sparse_step,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=1, help="epochs timed for ours and the dense form")
    parser.add_argument("--loop-batches", type=int, default=20, help="mini-batches timed for the per-sample loop")
    parser.add_argument("--repro", action="store_true", help="also time `neurorobust repro hebbian_mnist --force`")
    args = parser.parse_args()
    cfg = PRESETS["mnist"]
    p, k, delta, batch, lr = cfg["p"], cfg["k"], cfg["delta"], cfg["unsup_batch"], cfg["unsup_lr"]
    v = LpNormalise(p)(load_dataset("mnist").x_train.flatten(1))
    steps = len(v) // batch
    w0 = torch.randn(cfg["hidden"], v.shape[1], generator=torch.Generator().manual_seed(0))
    order = torch.randperm(len(v), generator=torch.Generator().manual_seed(1))
    print(f"MNIST, {cfg['hidden']} hidden units, p={p:g}, k={k}, Delta={delta:g}, batch {batch}, {steps} steps/epoch")
    print(f"torch threads: {torch.get_num_threads()}")

    ours = w0.clone()
    metric = signed_power(ours, p)
    t = time.perf_counter()
    for _ in range(args.epochs):
        for s in range(steps):
            sparse_step(ours, metric, v[order[s * batch : (s + 1) * batch]], lr, p=p, k=k, delta=delta)
    t_ours = (time.perf_counter() - t) / args.epochs

    dense = w0.clone()
    t = time.perf_counter()
    for _ in range(args.epochs):
        for s in range(steps):
            normalised_step(
                dense, kh_increment(dense, v[order[s * batch : (s + 1) * batch]], p=p, k=k, delta=delta), lr
            )
    t_dense = (time.perf_counter() - t) / args.epochs
    diff = float((ours - dense).abs().max())

    loop = w0.clone()
    t = time.perf_counter()
    for s in range(args.loop_batches):
        normalised_step(loop, kh_increment_loop(loop, v[order[s * batch : (s + 1) * batch]], p=p, k=k, delta=delta), lr)
    t_loop = (time.perf_counter() - t) / args.loop_batches * steps

    print(f"{'implementation':<18} {'s/epoch':>9} {'epochs/s':>9} {'vs loop':>8}")
    for name, sec in (("ours (sparse)", t_ours), ("dense batched", t_dense), ("per-sample loop", t_loop)):
        print(f"{name:<18} {sec:>9.2f} {1 / sec:>9.4f} {t_loop / sec:>7.1f}x")
    print(
        f"ours vs dense batched: {t_dense / t_ours:.2f}x faster; max |W_ours - W_dense| after the same steps {diff:.2e}"
    )
    print(
        "1,000 epochs (the authors' schedule) at this speed: "
        f"{1000 * t_ours / 3600:.2f} h (ours), {1000 * t_loop / 3600:.1f} h (loop)"
    )
    if args.repro:
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "neurorobust.cli", "repro", "hebbian_mnist", "--force"], check=True)
        minutes = (time.perf_counter() - t) / 60
        print(f"make repro NAME=hebbian_mnist (--force): {minutes:.1f} min (target: under 30)")


if __name__ == "__main__":
    main()
