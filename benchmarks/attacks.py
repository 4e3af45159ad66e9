"""Attack-engine throughput: PGD-L∞ on the MNIST CNN, ours vs a plain loop, torchattacks and foolbox.

PGD-L∞, 40 steps of 0.01, eps 0.3, no random start, on the first ``--n`` MNIST test images
(default 1,000) and ``create_model("cnn_mnist")`` (trained for one epoch with a plain loop on
the first 20,000 training images, cached under ``~/.cache/neurorobust``). Every method runs
in this one process on the same inputs and batches (``--batch``, default 250) and includes
its final robust-accuracy forward pass. Printed: images/s, our speed-up over each, robust
accuracy, and achieved GFLOP/s against a measured 2048x2048 matmul peak.

Run: ``python benchmarks/attacks.py [--n 1000] [--batch 250] [--repeats 1]``.

``--autoattack`` runs instead the side-by-side of our ``full`` suite (cascade on) and AutoAttack's
``standard`` version (pyautoattack 0.2.0) on the seeded class-balanced evaluation subset of ``--n``
MNIST test images (default 500): a plain and a PGD-trained (eps 0.3) small CNN (``--arch``, default
``kubo_1cnn``, both cached), at eps 0.3. Printed: robust accuracy, wall time and the time ratio
ours / AutoAttack, for our suite with the gradient-masking checklist on (what ``evaluate`` runs) and
off (``checklist=False``: the attacks alone). The issue's target: ours <= AutoAttack's robust accuracy
in <= 0.5x its time. Run: ``python benchmarks/attacks.py --autoattack [--n 500] [--arch kubo_1cnn]``.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from neurorobust.attacks import PGD
from neurorobust.data import load_dataset
from neurorobust.models import create_model

EPS, STEP, STEPS = 0.3, 0.01, 40
AA_EPS = 0.3  # the AutoAttack comparison's eps (and the PGD-trained model's training eps)


def cached_model() -> nn.Module:
    """The MNIST CNN trained for one epoch on 20k images (plain Adam loop), cached as safetensors."""
    from safetensors.torch import load_file, save_file

    model = create_model("cnn_mnist")
    cache = (
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "neurorobust" / "bench_cnn_mnist.safetensors"
    )
    if cache.exists():
        model.load_state_dict(load_file(str(cache)))
    else:
        ds = load_dataset("mnist")
        g = torch.Generator().manual_seed(0)
        torch.manual_seed(0)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        model.train()
        x, y = ds.x_train[:20000], ds.y_train[:20000]
        perm = torch.randperm(x.shape[0], generator=g)
        for i in range(0, x.shape[0], 128):
            idx = perm[i : i + 128]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        cache.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(cache))
    return model.eval()


def forward_flops(model: nn.Module, shape: tuple[int, ...]) -> float:
    """FLOPs (2 x multiply-adds) of one forward pass of one image, from Conv2d and Linear layers."""
    total = 0.0

    def hook(m: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(m, nn.Conv2d):
            k = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
            total += 2.0 * out[0].numel() * k
        elif isinstance(m, nn.Linear):
            total += 2.0 * m.in_features * m.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    with torch.no_grad():
        model(torch.zeros(1, *shape))
    for h in handles:
        h.remove()
    return total


def matmul_peak(size: int = 2048, reps: int = 5) -> float:
    """Best-of-``reps`` GFLOP/s of a ``size`` x ``size`` float32 matmul."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2.0 * size**3 / best / 1e9


def plain_loop(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """A plain PyTorch PGD loop, as commonly written (parameters keep requires_grad)."""
    x_adv = x.clone()
    for _ in range(STEPS):
        x_adv.requires_grad_(True)
        loss = nn.functional.cross_entropy(model(x_adv), y)
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = x_adv.detach() + STEP * grad.sign()
        x_adv = torch.min(torch.max(x_adv, x - EPS), x + EPS).clamp(0, 1)
    return x_adv


def run_interleaved(
    methods: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]],
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batch: int,
    repeats: int,
) -> dict[str, tuple[float, float]]:
    """Per method: total time (best of ``repeats``) and robust accuracy.

    Methods run round-robin on each batch, so a change in machine load (a shared CPU) hits all
    of them alike. ``attack`` returns a success mask (bool) or adversarial examples.
    """
    best = dict.fromkeys(methods, float("inf"))
    robust = dict.fromkeys(methods, 0.0)
    for _ in range(repeats):
        spent = dict.fromkeys(methods, 0.0)
        correct = dict.fromkeys(methods, 0)
        for i in range(0, x.shape[0], batch):
            xb, yb = x[i : i + batch], y[i : i + batch]
            for name, attack in methods.items():
                t = time.perf_counter()
                out = attack(xb, yb)
                if out.dtype == torch.bool:
                    correct[name] += int((~out).sum())
                else:
                    with torch.inference_mode():
                        correct[name] += int((model(out).argmax(1) == yb).sum())
                spent[name] += time.perf_counter() - t
        for name in methods:
            best[name] = min(best[name], spent[name])
            robust[name] = correct[name] / x.shape[0]
    return {name: (best[name], robust[name]) for name in methods}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=None, help="images (default 1000; 500 with --autoattack)")
    parser.add_argument("--batch", type=int, default=250)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--skip", nargs="*", default=[], help="methods to skip")
    parser.add_argument("--suite-only", action="store_true", help="only time the quick suite")
    parser.add_argument("--autoattack", action="store_true", help="only our full suite vs AutoAttack standard")
    parser.add_argument("--arch", default="kubo_1cnn", help="model of the --autoattack comparison")
    args = parser.parse_args()
    if args.autoattack:
        versus_autoattack(args.n or 500, args.arch)
        return
    args.n = args.n or 1000
    if args.suite_only:
        time_quick_suite(cached_model())
        return
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning)

    model = cached_model()
    ds = load_dataset("mnist")
    x, y = ds.x_test[: args.n].contiguous(), ds.y_test[: args.n].contiguous()
    with torch.inference_mode():
        clean = float((model(x).argmax(1) == y).float().mean())
    peak = matmul_peak()
    flops_img = forward_flops(model, tuple(x.shape[1:]))
    # one PGD step = forward + input-only backward (about 2 forwards); plus one final forward
    flops_attack = flops_img * (STEPS * 2 + 1)

    ours = PGD(steps=STEPS, step_size=STEP, random_start=False)
    ours_whole = PGD(steps=STEPS, step_size=STEP, random_start=False)
    ours_whole.chunk_size = None
    ours_es = PGD(steps=STEPS, step_size=STEP, random_start=False, early_stop=True)
    methods: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
        "ours (PGD)": lambda xb, yb: ours(model, xb, yb, eps=EPS).success,
        "ours (PGD, chunk_size=None)": lambda xb, yb: ours_whole(model, xb, yb, eps=EPS).success,
        "ours (PGD, early_stop=True)": lambda xb, yb: ours_es(model, xb, yb, eps=EPS).success,
        "plain PyTorch loop": lambda xb, yb: plain_loop(model, xb, yb),
    }
    try:
        import torchattacks

        ta = torchattacks.PGD(model, eps=EPS, alpha=STEP, steps=STEPS, random_start=False)
        methods["torchattacks.PGD 3.5.1"] = lambda xb, yb: ta(xb, yb)
        chunk = ours.chunk_size or args.batch
        methods[f"torchattacks.PGD, batch {chunk}"] = lambda xb, yb: torch.cat(
            [ta(xb[i : i + chunk], yb[i : i + chunk]) for i in range(0, xb.shape[0], chunk)]
        )
    except ImportError:
        pass
    try:
        import foolbox as fb

        fmodel = fb.PyTorchModel(model, bounds=(0, 1))
        fpgd = fb.attacks.LinfPGD(abs_stepsize=STEP, steps=STEPS, random_start=False)
        methods["foolbox LinfPGD 3.3.4"] = lambda xb, yb: fpgd(fmodel, xb, yb, epsilons=EPS)[2]
    except ImportError:
        pass

    # warm-up: one full batch each (oneDNN builds its kernels per input shape on first use)
    for f in methods.values():
        f(x[: args.batch], y[: args.batch])
    # baselines first, ours last (a method run right after foolbox was measured slow on a shared CPU)
    order = sorted(methods, key=lambda k: (not k.startswith("foolbox"), k.startswith("ours")))
    methods = {k: methods[k] for k in order if k not in args.skip}
    results = run_interleaved(methods, model, x, y, args.batch, args.repeats)

    t_ours = results["ours (PGD)"][0]
    print(
        f"PGD-Linf eps={EPS}, {STEPS} steps of {STEP}, no random start; MNIST test n={args.n}, "
        f"batch {args.batch}, clean accuracy {clean:.4f}"
    )
    print(
        f"ours runs micro-batches of {ours.chunk_size} inside each batch (Attack.chunk_size); "
        f"the 'batch {ours.chunk_size}' row gives torchattacks the same blocking"
    )
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, matmul 2048 peak {peak:.1f} GFLOP/s, "
        f"model {flops_img / 1e6:.2f} MFLOP/forward/image"
    )
    header = (
        f"{'method':34s} {'time s':>8s} {'img/s':>8s} {'ours/this':>9s} {'robust acc':>10s} "
        f"{'GFLOP/s':>8s} {'% peak':>7s}"
    )
    print(header)
    print("-" * len(header))
    for name, (t, robust) in results.items():
        gflops = flops_attack * args.n / t / 1e9
        print(
            f"{name:34s} {t:8.2f} {args.n / t:8.1f} {t / t_ours:9.2f} {robust:10.4f} {gflops:8.1f} "
            f"{100 * gflops / peak:6.1f}%"
        )
    print(
        "ours/this = this method's time / ours (>1: ours is faster). GFLOP/s counts a step as 2 forwards "
        "(forward + input-only backward) plus one final forward; the early-stop row as if it ran all steps."
    )
    agreement(model, x, y, args.batch)
    time_quick_suite(model)


def time_quick_suite(model: nn.Module) -> None:
    """Wall time of the ``quick`` suite (FGSM + PGD-20 at 4 eps on 500 images, plus the checklist)."""
    import neurorobust

    start = time.perf_counter()
    result = neurorobust.evaluate(model, "mnist", suite="quick", n=500, noise_sigmas=[], blur_sigmas=[])
    seconds = time.perf_counter() - start
    curve = ", ".join(f"{e:g}: {100 * a:.1f}%" for e, a in result.worst_case.items())
    print(
        f"quick suite on this CNN (n=500, eps 0.05/0.1/0.2/0.3, checklist on 200): {seconds:.1f} s; "
        f"verdict: {result.verdict}; worst case {curve}"
    )


def agreement(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int, eps: float = 0.1) -> None:
    """Robust accuracy where it is not trivially 0: the same PGD at a smaller eps, ours vs torchattacks."""
    ours = PGD(steps=STEPS, step_size=STEP, random_start=False)
    ours_acc = (
        torch.cat([~ours(model, x[i : i + batch], y[i : i + batch], eps=eps).success for i in range(0, len(x), batch)])
        .float()
        .mean()
    )
    line = f"agreement at eps={eps} (same PGD): robust accuracy ours {float(ours_acc):.4f}"
    try:
        import torchattacks

        ta = torchattacks.PGD(model, eps=eps, alpha=STEP, steps=STEPS, random_start=False)
        adv = torch.cat([ta(x[i : i + batch], y[i : i + batch]) for i in range(0, len(x), batch)])
        with torch.inference_mode():
            ta_acc = (model(adv).argmax(1) == y).float().mean()
        line += f", torchattacks {float(ta_acc):.4f}, difference {100 * abs(float(ours_acc - ta_acc)):.2f} points"
    except ImportError:
        pass
    print(line)


def cached_trained(arch: str, adversarial: bool) -> nn.Module:
    """``create_model(arch)`` trained on the first 20,000 MNIST training images, cached as safetensors.

    Plain: one epoch of Adam (``fit`` defaults, batch 128). PGD-trained (Madry): three epochs of PGD-10 at
    eps 0.3, the radius ramped up over the first epoch (from scratch it otherwise stays near chance);
    about 2 minutes for ``kubo_1cnn`` on 2 cores (clean ~95%, PGD-40 at 0.3 ~40% on 500 test images).
    """
    from safetensors.torch import load_file, save_file

    from neurorobust.training import fit

    model = create_model(arch)
    name = f"bench_{arch}{'_pgd0.3' if adversarial else ''}.safetensors"
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "neurorobust" / name
    if cache.exists():
        model.load_state_dict(load_file(str(cache)))
        return model.eval()
    ds = load_dataset("mnist")
    x, y = ds.x_train[:20000], ds.y_train[:20000]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if adversarial:
            adv = {"method": "pgd", "eps": AA_EPS, "steps": 10, "warmup_epochs": 1.0}
            fit(model, x, y, epochs=3, batch_size=100, seed=0, adversarial=adv)
        else:
            fit(model, x, y, epochs=1, batch_size=128, seed=0)
    cache.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(cache))
    return model.eval()


def versus_autoattack(n: int = 500, arch: str = "kubo_1cnn", eps: float = AA_EPS) -> None:
    """Our ``full`` suite (cascade on; checklist on and off) vs AutoAttack ``standard`` on the same images.

    The images are ``evaluate``'s own: the seeded class-balanced subset of ``n`` test images
    (:func:`~neurorobust.evaluation.suite.evaluation_subset`). AutoAttack runs first (seed 0, batch = n),
    then ours with ``checklist=False`` (the attacks alone), then ours as ``evaluate`` runs it by default
    (checklist on its default ``check_n`` = 200 probe points); the difference of the two is the checklist's
    cost. Times are wall clock in this process, at torch's default thread count.
    """
    import logging

    import neurorobust
    from neurorobust.evaluation.suite import evaluation_subset
    from neurorobust.specs import EvalSpec

    try:
        from pyautoattack import AutoAttack
    except ImportError:
        print("pyautoattack is not installed (pip install pyautoattack==0.2.0): no AutoAttack comparison")
        return
    logging.getLogger("auto-attack").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=UserWarning)
    ds = load_dataset("mnist")
    _, x, y = evaluation_subset(ds, EvalSpec(suite="full", n=n))
    print(
        f"our full suite (cascade) vs AutoAttack standard (pyautoattack 0.2.0): Linf eps={eps}, MNIST test "
        f"n={n} (seeded class-balanced subset), {arch}, torch {torch.__version__}, threads {torch.get_num_threads()}"
    )
    table: list[tuple[str, str, float, float, float]] = []  # model, method, robust acc, seconds, clean
    notes: list[str] = []
    for label, adversarial in (("cnn", False), ("pgd-trained cnn", True)):
        model = cached_trained(arch, adversarial)
        with torch.inference_mode():
            clean = float((model(x).argmax(1) == y).float().mean())
        aa = AutoAttack(model, norm="Linf", eps=eps, version="standard", device="cpu", seed=0)
        start = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            x_adv, _ = aa.run_standard_evaluation(x, y, batch_size=n)
        t_aa = time.perf_counter() - start
        with torch.inference_mode():
            acc_aa = float((model(x_adv).argmax(1) == y).float().mean())
        table.append((label, "AutoAttack standard", acc_aa, t_aa, clean))
        for method, checklist in (("ours full, checklist off", False), ("ours full, checklist on", True)):
            start = time.perf_counter()
            result = neurorobust.evaluate(
                model, ds, suite="full", n=n, eps=[eps], noise_sigmas=[], blur_sigmas=[], checklist=checklist
            )
            seconds = time.perf_counter() - start
            table.append((label, method, result.worst_case[eps], seconds, clean))
            if checklist:
                per_attack = ", ".join(
                    f"{r.attack} {r.seconds:.1f}s" + (f" ({c})" if (c := r.params.get("cascade")) else "")
                    for r in result.rows
                    if r.metric == "accuracy" and r.seconds is not None and r.eps is not None
                )
                notes.append(f"{label}: ours per attack (checklist-on run): {per_attack}; verdict: {result.verdict}")
    header = (
        f"{'model':16s} {'method':26s} {'clean':>6s} {'robust acc':>10s} {'time s':>8s} {'ours/AA time':>12s} "
        f"{'target met':>10s}"
    )
    print(header)
    print("-" * len(header))
    for label, method, acc, seconds, clean in table:
        acc_aa, t_aa = next((a, t) for m, meth, a, t, _ in table if m == label and meth.startswith("AutoAttack"))
        ratio = seconds / t_aa
        met = "" if method.startswith("AutoAttack") else ("yes" if acc <= acc_aa and ratio <= 0.5 else "no")
        print(f"{label:16s} {method:26s} {clean:6.3f} {acc:10.4f} {seconds:8.1f} {ratio:12.2f} {met:>10s}")
    print(
        "target: ours robust acc <= AutoAttack's in <= 0.5x its time. Ours includes a clean forward pass and the "
        "randomness probe; with n > 200 our Square attack covers a class-balanced 200 of the n points (its cap)."
    )
    for line in notes:
        print(line)


if __name__ == "__main__":
    main()
