"""Training-step benchmark of the models the reproduction tiers spend their time in (DESIGN §10 targets).

Run: ``python benchmarks/training.py [--quick]`` (``make bench`` runs every benchmark; hold the shared
CPU lock). For each model it times one training step as the tiers train it (forward, loss with its
adversarial objective if any, backward, optimiser step; the same model size, batch and optimiser as
the config named), median of ``--reps`` steps after a warm-up, on random inputs, and side by side in
one run:

* ``default``: contiguous (NCHW) tensors on every torch thread (``--threads``, default 2);
* ``1 thread``: the same on one thread (what each worker of a sweep's process pool uses);
* ``channels-last``: model and inputs in ``torch.channels_last`` (convolutional models only);
* ``compile``: ``torch.compile(model)``, only where a C++ compiler is found (``g++``); compile time is
  reported apart and not in the step time. ``--quick`` compiles the first model only.

The variants' steps are taken in turn (default, 1 thread, channels-last, compile, default, ...), so
that the load of other processes on a shared machine falls on each alike; the ratios are still
indicative only there (two threads suffer most when another process holds a core).

Ratios are the default's step time over the variant's (above 1: the variant is faster). Models:

* Kubo's 2CNN with PGD-AT (7 inner steps of 0.1071, eps 0.3; ``advtrain_mnist``), the stochastic family's net;
* the quarter-width VGG trunk (``vgg_cifar``, width 0.25; ``cerebellum_cifar10``), batch 128, CIFAR-10 size;
* the foveation ResNet-20 backbone (``resnet20``, width 16; ``foveation_cifar10``), batch 128;
* the Krotov-Hopfield layer: its unsupervised step (``hebbian_mnist``'s preset: 2,000 units, batch 100)
  and the read-out's supervised step (``kh_net``);
* the cerebellum network (granule layer k = 4, m = 200,000, LTD, RMSprop on MSE, batch 50; ``cerebellum_mnist``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from neurorobust.models import create_model
from neurorobust.training.adversarial import AdversarialObjective
from neurorobust.training.loop import loss_fn

MNIST, CIFAR = (1, 28, 28), (3, 32, 32)
VARIANTS = ("default", "1-thread", "channels-last", "compile")


@dataclass
class Case:
    """One model's training step as a tier trains it."""

    label: str
    build: Callable[[], nn.Module]
    shape: tuple[int, ...]
    batch: int
    optimizer: str = "adam"
    lr: float = 1e-3
    loss: str = "ce"
    adversarial: dict | None = None
    conv: bool = True  # channels-last applies
    kh_unsupervised: bool = False  # time the KH layer's own learning step instead of backprop


def cases(quick: bool) -> list[Case]:
    pgd = {"method": "pgd", "eps": 0.3, "steps": 7, "step_size": 0.1071}
    return [
        Case("kubo_2cnn + PGD-AT (7 steps)", lambda: create_model("kubo_2cnn"), MNIST, 100, adversarial=pgd),
        Case(
            "vgg_cifar width 0.25",
            lambda: create_model("vgg_cifar", input_shape=CIFAR, width=0.25),
            CIFAR,
            128,
        ),
        Case(
            "resnet20 width 16",
            lambda: create_model("resnet20", input_shape=CIFAR, width=16),
            CIFAR,
            128,
        ),
        Case(
            "KH layer, unsupervised step",
            lambda: create_model("kh_net", preset="mnist"),
            MNIST,
            100,
            conv=False,
            kh_unsupervised=True,
        ),
        Case("kh_net read-out step", lambda: create_model("kh_net", preset="mnist"), MNIST, 100, conv=False),
        Case(
            "cerebellum k=4 m=200,000",
            lambda: create_model("cerebellum", k=4, m=200_000),
            MNIST,
            50,
            optimizer="rmsprop",
            lr=2.5e-6,
            loss="mse",
            conv=False,
        ),
    ]


def make_step(case: Case, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """One training step of ``case`` on the batch ``(x, y)``, as ``fit`` takes it."""
    if case.kh_unsupervised:
        layer = model.hidden
        v = model.normalise(x.flatten(1))

        def kh_step() -> None:
            layer.step(v, 0.04)

        return kh_step
    params = [p for p in model.parameters() if p.requires_grad]
    if case.optimizer == "rmsprop":
        opt: torch.optim.Optimizer = torch.optim.RMSprop(params, lr=case.lr, alpha=0.99, eps=1e-8)
    else:
        opt = torch.optim.Adam(params, lr=case.lr)
    objective = AdversarialObjective(**case.adversarial) if case.adversarial else None
    gen = torch.Generator().manual_seed(1)
    model.train()

    def step() -> None:
        if objective is not None:
            loss, _ = objective(model, x, y, gen)
        else:
            loss = loss_fn(model(x), y, case.loss)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def build_variant(case: Case, variant: str, threads: int) -> tuple[Callable[[], None], float]:
    """The step of ``case`` in ``variant`` (warmed up; compiled for ``compile``) and the compile seconds."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = case.build()
    if isinstance(getattr(model, "learned", None), torch.Tensor):
        model.learned.fill_(True)  # the read-out's steps, not the hook's unsupervised phase
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(case.batch, *case.shape, generator=gen)
    y = torch.randint(0, 10, (case.batch,), generator=gen)
    if variant == "channels-last":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if variant == "compile":
        model = torch.compile(model)
    step = make_step(case, model, x, y)
    t = time.perf_counter()
    step()  # warm-up; compiles the train-mode graph (and the attack's eval-mode one)
    return step, (time.perf_counter() - t if variant == "compile" else 0.0)


def measure(case: Case, variants: dict[str, int], reps: int) -> dict[str, tuple[float, float]]:
    """Median seconds per step (and compile seconds) of each variant (name: threads), their steps taken in
    turn, so that another process's load on a shared machine falls on every variant alike."""
    steps = {name: build_variant(case, name.split(" ")[0], threads) for name, threads in variants.items()}
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(reps):
        for name, (step, _) in steps.items():
            torch.set_num_threads(variants[name])
            t = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t)
    return {name: (statistics.median(times[name]), steps[name][1]) for name in variants}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 steps each, compile the first model only (~2 min)")
    parser.add_argument("--reps", type=int, default=None, help="timed steps per measurement (default 7; quick 3)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the default layout")
    args = parser.parse_args()
    reps = args.reps or (3 if args.quick else 7)
    compiler = shutil.which("g++")
    torch.set_flush_denormal(True)  # as the CLI and every sweep worker run
    print(
        f"training step, median of {reps} after a warm-up, random inputs; default: {args.threads} torch threads, "
        f"NCHW; cpus {os.cpu_count()}; torch {torch.__version__}"
    )
    if compiler is None:
        print("torch.compile: skipped, no C++ compiler")
    header = f"{'model':<30}{'batch':>6}{'s/step':>9}{'img/s':>8}  {'1 thread':>9}{'ch-last':>9}{'compile':>9}"
    print("\n" + header + "   compile time")
    start = time.perf_counter()
    for i, case in enumerate(cases(args.quick)):
        variants = {"default": args.threads, "1-thread": 1}
        if case.conv:
            variants["channels-last"] = args.threads
        if compiler is not None and not case.kh_unsupervised and (not args.quick or i == 0):
            variants["compile"] = args.threads
        try:
            result = measure(case, variants, reps)
        except Exception as exc:  # an inductor failure is a result too: say so, measure without it
            print(f"  torch.compile failed for {case.label}: {type(exc).__name__}: {str(exc)[:160]}")
            variants.pop("compile", None)
            result = measure(case, variants, reps)
        torch.set_num_threads(args.threads)
        base = result["default"][0]
        cells = [f"{base / result[v][0]:>8.2f}x" if v in result else f"{'—':>9}" for v in VARIANTS[1:]]
        compile_s = f"{result['compile'][1]:.0f} s" if "compile" in result else ""
        print(f"{case.label:<30}{case.batch:>6}{base:>9.3f}{case.batch / base:>8.0f}  {''.join(cells)}   {compile_s}")
    print(f"\n{time.perf_counter() - start:.0f} s in all; ratios: default s/step over the variant's (>1: faster)")


if __name__ == "__main__":
    main()
