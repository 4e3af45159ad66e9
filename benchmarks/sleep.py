"""Sleep phase benchmark: the authors' single chain on the MNIST network (Tadros et al. 2020).

Run: ``python benchmarks/sleep.py`` (``make bench`` runs every benchmark). Trains the sleep MLP as
coded (784-1200-1200-10, 2 epochs, ~30 s), then times

* our chain (sparse column gathers for the currents, STDP on the rows of units that spiked) over
  the whole sleep of parameter sets A (27,105 steps) and B (3,365 steps): seconds, time per step,
  spikes per second; target: set A under 60 s on 2 cores (DESIGN §8);
* side by side, on the first ``--compare-steps`` steps of set A, a dense reference written the way
  the MATLAB code reads (dense matrix-vector currents, the STDP factor over whole masked
  matrices), with the largest weight difference between the two (same input spikes).
"""

from __future__ import annotations

import argparse
import time

import torch

from neurorobust.data import load_dataset
from neurorobust.mechanisms.sleep import PRESETS, encode_input, scale_factors, sleep, stdp_factor
from neurorobust.models import create_model
from neurorobust.training import fit


def dense_reference(weights, x, alphas, betas, p, steps, seed, chunk=1000):
    """The chain written densely, as ``sleepnn_old.m`` reads (for timing and agreement only)."""
    gen = torch.Generator().manual_seed(seed)
    mem = [torch.zeros(w.shape[0]) for w in weights]
    for c0 in range(0, steps, chunk):
        n = min(chunk, steps - c0)
        inputs = encode_input(x[torch.arange(c0, c0 + n) % len(x)], p["f_max"], 0.001, gen)
        for t in range(n):
            pre = inputs[t]
            for layer, w in enumerate(weights):
                mem[layer] = 0.999 * mem[layer] + alphas[layer] * (w @ pre.float())
                post = mem[layer] >= betas[layer]
                f = stdp_factor(w)
                mask_post = post[:, None].float()
                w += mask_post * (pre[None, :].float() * p["inc"] * f - (~pre)[None, :].float() * p["dec"] * f)
                mem[layer][post] = 0.0
                pre = post
    return weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--compare-steps", type=int, default=1000)
    args = parser.parse_args()
    data = load_dataset("mnist")
    torch.manual_seed(0)
    net = create_model("sleep_mlp")
    t = time.perf_counter()
    fit(
        net, data.x_train, data.y_train, optimizer="sgd", lr=0.1, momentum=0.5, loss="mse-sum", batch_size=100, epochs=2
    )
    print(f"trained the control MLP in {time.perf_counter() - t:.1f} s (torch threads: {torch.get_num_threads()})")
    print(f"{'set':<4} {'steps':>6} {'seconds':>8} {'ms/step':>8} {'spikes':>9} {'spikes/s':>10}  target")
    for name in ("A", "B"):
        slept = sleep(net, data, preset=name, seed=0)
        r = slept.sleep_report
        total = sum(r.spikes)
        ok = "PASS (< 60 s)" if r.seconds < 60 else "FAIL (>= 60 s)"
        print(
            f"{name:<4} {r.steps:>6} {r.seconds:>8.2f} {1000 * r.seconds / r.steps:>8.3f} {total:>9} "
            f"{r.spikes_per_second:>10.0f}  {ok if name == 'A' else ''}"
        )
        print(f"     spikes per layer (input first): {r.spikes}")

    steps = args.compare_steps
    p = {**PRESETS["A"], "steps": steps}
    factors, _ = scale_factors(net, data.x_train)
    alphas = [f * p["alpha_scale"] for f in factors]
    x = data.x_train.flatten(1)
    t = time.perf_counter()
    ours = sleep(net, data, preset="A", steps=steps, seed=0)
    ours_s = time.perf_counter() - t
    weights = [layer.weight.data.clone() for layer in net.layers]
    t = time.perf_counter()
    dense = dense_reference(weights, x, alphas, list(p["thresholds"]), p, steps, seed=0)
    dense_s = time.perf_counter() - t
    diff = max(float((a.weight.detach() - b).abs().max()) for a, b in zip(ours.layers, dense, strict=True))
    print(
        f"\nfirst {steps} steps of set A, side by side (ours includes the scale-factor pass):\n"
        f"  ours {ours_s:.2f} s, dense reference {dense_s:.2f} s, ratio {dense_s / ours_s:.1f}x; "
        f"max |W_ours - W_dense| = {diff:.2e}"
    )


if __name__ == "__main__":
    main()
