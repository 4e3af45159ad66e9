"""Granule layer + Purkinje read-out benchmark (Liu, Li & Chen's cerebellum; DESIGN §8).

Run: ``python benchmarks/cerebellum.py`` (``make bench`` runs every benchmark; hold the shared CPU
lock). At d = 784, m = 200,000, k = 4, batch 50, 10 classes it times, side by side in one run and
on the same J and W:

* ``fused``: our numba kernel (granule sums, ReLU and read-out in one pass; backward recomputes
  the activations), the default on CPU;
* ``torch-slots``: our plain torch reference path (one (B, m) gather per input slot, autograd);
* ``torch-gather``: the plain torch gather ``x[:, idx]`` of a (B, m, k) tensor, autograd;
* ``dense``: the torch dense masked matmul ``relu(x @ J) @ W`` with J a dense (d, m) matrix.

For each: forward + input-gradient backward (what an attack step does, the read-out frozen) and a
training step's forward + read-out-gradient backward, median of ``--reps`` runs after a warm-up;
the ratio to dense (target: fused >= 10x faster than dense on the attack step), the achieved
memory bandwidth (bytes each pass must at least move: x, indices, weights, read-out, outputs and
for dense the d x m matrix, over the time) and the peak extra resident memory of one step
(Linux ``VmHWM`` after resetting it). Then the fused-vs-dense crossover over k at the paper's
synapse budget m = 4.8M / (k + 20), which sets ``FUSED_MAX_K``, and the batch-1 training step
of Table 7.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from neurorobust.mechanisms.cerebellum import CerebellumNet, fused_available, synapse_budget_width


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def peak_extra(fn: Callable[[], object]) -> int | None:
    """Peak resident memory above the current one while ``fn`` runs (Linux), in bytes."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        return None
    base = _status("VmRSS")
    fn()
    return max(0, _status("VmHWM") - base)


def timed(fn: Callable[[], object], reps: int) -> float:
    fn()  # warm-up (and numba compilation)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


class GatherNet(CerebellumNet):
    """The plain torch gather of the issue text: ``x[:, idx]`` (B, m, k) times the weights, summed."""

    def granule_readout(self, f):
        h = torch.relu((f[:, self.granule.inputs] * self.granule.weights).sum(-1))
        return h @ self.readout, None


def build(kind: str, m: int, k: int, state: dict | None) -> CerebellumNet:
    cls = GatherNet if kind == "torch-gather" else CerebellumNet
    backend = {"fused": "fused", "torch-slots": "torch", "torch-gather": "torch", "dense": "dense"}[kind]
    net = cls(m=m, k=k, ltd=False, backend=backend)
    if state is not None:
        net.load_state_dict(state)
    return net.eval()


def attack_step(net: CerebellumNet, x: torch.Tensor, y: torch.Tensor) -> Callable[[], torch.Tensor]:
    net.readout.requires_grad_(False)

    def step() -> torch.Tensor:
        xr = x.detach().requires_grad_(True)
        loss = ((net(xr) - y) ** 2).mean()
        (g,) = torch.autograd.grad(loss, xr)
        return g

    return step


def train_step(net: CerebellumNet, x: torch.Tensor, y: torch.Tensor) -> Callable[[], torch.Tensor]:
    def step() -> torch.Tensor:
        net.readout.requires_grad_(True)
        loss = ((net(x) - y) ** 2).mean()
        (g,) = torch.autograd.grad(loss, net.readout)
        return g

    return step


def min_bytes(kind: str, b: int, d: int, m: int, k: int, c: int, train: bool) -> int:
    """Bytes a forward + backward must at least move (float32 / int32), read once each pass."""
    once = b * d * 4 + m * k * 8 + m * c * 4  # x, indices + weights, read-out
    if kind == "dense":
        once = b * d * 4 + d * m * 4 + m * c * 4 + 2 * b * m * 4  # x, J, W, h written and read
    out = (m * c * 4) if train else (b * d * 4)
    return 2 * once + out + b * c * 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--m", type=int, default=200_000)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--no-sweep", action="store_true", help="skip the k crossover and batch-1 tables")
    args = parser.parse_args()
    d, c, b, m, k = 784, 10, args.batch, args.m, args.k
    if not fused_available():
        raise SystemExit("numba is not installed: pip install numba (a core dependency)")
    print(
        f"granule layer + read-out: d={d}, m={m:,}, k={k}, batch {b}, c={c}; torch threads {torch.get_num_threads()}, "
        f"cpus {os.cpu_count()}"
    )
    torch.manual_seed(0)
    ref = CerebellumNet(m=m, k=k, ltd=False)
    state = ref.state_dict()
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(b, 1, 28, 28, generator=gen)
    y = torch.nn.functional.one_hot(torch.randint(0, c, (b,), generator=gen), c).float()
    kinds = ["fused", "torch-slots", "torch-gather", "dense"]
    results: dict[str, dict[str, float | int | None]] = {}
    grads: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for kind in kinds:
        net = build(kind, m, k, state)
        att, trn = attack_step(net, x, y), train_step(net, x, y)
        t_att, t_trn = timed(att, args.reps), timed(trn, args.reps)
        results[kind] = {
            "attack": t_att,
            "train": t_trn,
            "mem_attack": peak_extra(att),
            "mem_train": peak_extra(trn),
            "gbs_attack": min_bytes(kind, b, d, m, k, c, False) / t_att / 1e9,
            "gbs_train": min_bytes(kind, b, d, m, k, c, True) / t_trn / 1e9,
        }
        grads[kind] = (att(), trn())
        del net
    dense_t = results["dense"]
    print(
        f"\n{'implementation':<14} {'attack step':>12} {'vs dense':>9} {'GB/s':>6} {'peak MB':>8}   "
        f"{'train step':>11} {'vs dense':>9} {'GB/s':>6} {'peak MB':>8}   max |grad diff| vs dense (x, W)"
    )

    def mb(v: float | int | None) -> str:
        return f"{v / 2**20:8.1f}" if v is not None else "     n/a"

    for kind in kinds:
        r = results[kind]
        gx = (grads[kind][0] - grads["dense"][0]).abs().max().item()
        gw = (grads[kind][1] - grads["dense"][1]).abs().max().item()
        print(
            f"{kind:<14} {1e3 * r['attack']:>9.1f} ms {dense_t['attack'] / r['attack']:>8.1f}x {r['gbs_attack']:>6.1f} "
            f"{mb(r['mem_attack'])}   {1e3 * r['train']:>8.1f} ms {dense_t['train'] / r['train']:>8.1f}x "
            f"{r['gbs_train']:>6.1f} {mb(r['mem_train'])}   {gx:.1e}, {gw:.1e}"
        )
    ratio = dense_t["attack"] / results["fused"]["attack"]
    verdict = "PASS" if ratio >= 10 else f"MISS (by {10 / ratio:.2f}x: {ratio:.1f}x of the 10x target)"
    print(f"\ntarget: fused >= 10x faster than the dense masked matmul (forward + input gradient): {ratio:.1f}x")
    print(f"        {verdict}")
    print(
        "GB/s counts the bytes each pass must at least move (indices, weights, read-out, x, outputs; dense: the "
        "d x m matrix and the B x m activations); the fused kernel recomputes activations instead of storing them."
    )
    if args.no_sweep:
        return

    print("\nfused vs dense over k at the synapse budget m = 4.8M / (k + 20), batch 50, attack step:")
    print(f"{'k':>4} {'m':>8} {'fused ms':>9} {'dense ms':>9} {'dense/fused':>12}")
    for kk in (1, 2, 4, 10, 50, 200, 784):
        mm = synapse_budget_width(kk)
        torch.manual_seed(0)
        st = CerebellumNet(m=mm, k=kk, ltd=False).state_dict()
        tf = timed(attack_step(build("fused", mm, kk, st), x, y), 3)
        td = timed(attack_step(build("dense", mm, kk, st), x, y), 3)
        print(f"{kk:>4} {mm:>8} {1e3 * tf:>9.1f} {1e3 * td:>9.1f} {td / tf:>11.1f}x")

    print("\nbatch-1 training step (Table 7: forward, read-out gradient, RMSprop update), m = 200,000, k = 4, LTD:")
    x1, y1 = x[:1], y[:1]
    for kind in ("fused", "dense"):
        torch.manual_seed(0)
        net = CerebellumNet(m=200_000, k=4, backend=kind).train()
        opt = torch.optim.RMSprop(net.parameters(), lr=0.5 / 200_000, alpha=0.99, eps=1e-8)

        def one(net: CerebellumNet = net, opt: torch.optim.Optimizer = opt) -> None:
            loss = ((net(x1) - y1) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        t1 = timed(one, args.reps * 3)
        print(f"  {kind:<6} {1e3 * t1:7.2f} ms/step -> 10 epochs of 60,000 images: {t1 * 600_000 / 3600:.1f} h")


if __name__ == "__main__":
    main()
