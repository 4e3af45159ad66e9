"""Subnormal weights and CPU speed: why every neurorobust process calls ``torch.set_flush_denormal(True)``.

Run: ``python benchmarks/denormals.py [--checkpoint runs/checkpoints/KEY.safetensors]``. Side by side
in one run, it times forward + input-gradient passes (the inner loop of every gradient attack) of a
784-2000-10 MLP whose weights hold subnormal values, with subnormals kept and flushed. Without
``--checkpoint`` it builds such an MLP: random weights, 10% of the first layer set to 1e-40 (as weight
decay leaves the weights of MNIST's always-black border pixels); with one, it loads a trained MLP
(e.g. hebbian_mnist's ``backprop+l2``) and reports how many of its weights are subnormal.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn


def build(checkpoint: str | None) -> nn.Sequential:
    """The 784-2000-10 MLP, from ``checkpoint`` (hebbian MLP key names) or with planted subnormals."""
    net = nn.Sequential(nn.Linear(784, 2000), nn.ReLU(), nn.Linear(2000, 10))
    if checkpoint:
        from safetensors.torch import load_file

        sd = load_file(checkpoint)
        net[0].weight.data, net[2].weight.data = sd["hidden.weight"], sd["readout.weight"]
        net[2].bias.data = sd["readout.bias"]
        net[0].bias.data.zero_()
    else:
        gen = torch.Generator().manual_seed(0)
        w = net[0].weight.data
        w[torch.rand(w.shape, generator=gen) < 0.1] = 1e-40
    return net


def time_passes(net: nn.Module, x: torch.Tensor, passes: int) -> float:
    """Seconds for ``passes`` forward + input-gradient backward passes."""
    start = time.perf_counter()
    for _ in range(passes):
        xi = x.clone().requires_grad_(True)
        torch.autograd.grad(net(xi).logsumexp(1).sum(), xi)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--passes", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)
    net = build(args.checkpoint)
    sub = int(((net[0].weight.abs() < 1.2e-38) & (net[0].weight != 0)).sum())
    print(f"subnormal first-layer weights: {sub:,} of {net[0].weight.numel():,}; batch 100, {args.passes} passes")
    x = torch.rand(100, 784)
    results = {}
    for flush in (False, True):
        torch.set_flush_denormal(flush)
        time_passes(net, x, 2)
        results[flush] = time_passes(net, x, args.passes)
        print(f"flush_denormal={flush!s:<5}  {results[flush]:.3f} s")
    print(f"kept / flushed: {results[False] / results[True]:.1f}x")


if __name__ == "__main__":
    main()
