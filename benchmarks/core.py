"""Core pipeline benchmark: loading MNIST (time, peak memory) and training throughput of the MLP and CNN.

Run: ``python benchmarks/core.py`` (``make bench`` runs every benchmark). Each measurement runs in a
fresh subprocess so that peak RSS belongs to it alone; figures are printed as one table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap

LOAD = textwrap.dedent(
    """
    import json, resource, time
    import torch
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    from neurorobust.data import load_dataset
    ds = load_dataset("mnist")
    secs = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tensor_mb = sum(t.numel() * t.element_size() for t in (ds.x_train, ds.y_train, ds.x_test, ds.y_test)) / 2**20
    print(json.dumps({"seconds": secs, "peak_mb": peak / 1024, "delta_mb": (peak - base) / 1024,
                      "tensor_mb": tensor_mb}))
    """
)

TRAIN = textwrap.dedent(
    """
    import json, sys, time
    import torch
    from neurorobust.data import load_dataset
    from neurorobust.models import create_model
    from neurorobust.training import fit
    name, n, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    ds = load_dataset("mnist")
    x, y = ds.x_train[:n], ds.y_train[:n]
    torch.manual_seed(0)
    model = create_model(name)
    fit(model, x[:batch * 4], y[:batch * 4], epochs=1, batch_size=batch)  # warm-up
    t = time.perf_counter()
    fit(model, x, y, epochs=1, batch_size=batch)
    secs = time.perf_counter() - t
    print(json.dumps({"images_per_s": n / secs, "seconds": secs, "threads": torch.get_num_threads()}))
    """
)


def _run(code: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=10_000, help="training images per throughput measurement")
    args = parser.parse_args()
    load = _run(LOAD)
    print("MNIST load (60,000 + 10,000 images, md5-checked, to float32 tensors)")
    print(
        f"  seconds {load['seconds']:.2f} | peak RSS {load['peak_mb']:.0f} MiB "
        f"(+{load['delta_mb']:.0f} MiB for loading; tensors {load['tensor_mb']:.0f} MiB)"
    )
    print(f"\nTraining throughput, one epoch over {args.n:,} MNIST images (Adam, cross-entropy)")
    print(f"{'model':<12}{'batch':>7}{'images/s':>12}{'seconds':>10}{'threads':>9}")
    rates = {}
    for name, batch in (("mlp", 100), ("cnn_mnist", 128)):
        r = _run(TRAIN, name, str(args.n), str(batch))
        rates[name] = r["images_per_s"]
        print(f"{name:<12}{batch:>7}{r['images_per_s']:>12.0f}{r['seconds']:>10.2f}{r['threads']:>9}")
    print(f"\nratio mlp / cnn_mnist throughput: {rates['mlp'] / rates['cnn_mnist']:.1f}x")


if __name__ == "__main__":
    main()
