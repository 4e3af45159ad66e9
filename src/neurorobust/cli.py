"""The ``neurorobust`` command line (typer); the only place that renders rich output.

Every :class:`~neurorobust.errors.NeuroRobustError` becomes one line on stderr and exit code 2,
never a traceback. Ctrl-C stops cleanly: rows already measured are in the store.
"""

from __future__ import annotations

import os
import sys
import tomllib
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from .errors import NeuroRobustError, SpecError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Biologically inspired adversarial robustness: train, attack, check for masking, report.",
)
data_app = typer.Typer(no_args_is_help=True, help="Datasets: where they are, and downloads for users with internet.")
app.add_typer(data_app, name="data")
store_app = typer.Typer(
    no_args_is_help=True, help="The results store: merge stores from several machines, export the shipped snapshot."
)
app.add_typer(store_app, name="store")

#: Terminal tables fit this many columns whatever the terminal reports; every row stays in the store and report.
TABLE_WIDTH = 100
# at least TABLE_WIDTH wide, so that a pipe's 80 columns do not fold the tables letter by letter
console = Console(width=max(TABLE_WIDTH, Console().width))
err_console = Console(stderr=True)

StoreOpt = Annotated[
    Path | None, typer.Option("--store", help="SQLite results store (default: $NEURO_STORE or runs/results.db).")
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Recompute even when a cached checkpoint / result exists.")]
FullOpt = Annotated[bool, typer.Option("--full", help=r"Paper scale: apply the spec's \[full] overrides (hours).")]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="Look here first for datasets.")]


def _configs_dir() -> Path:
    from .specs import configs_dir

    return configs_dir()


class _RichProgress:
    """Renders progress events from the library as rich progress bars."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=err_console,
            transient=False,
        )
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> _RichProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)  # type: ignore[arg-type]

    def __call__(self, event: dict[str, Any]) -> None:
        stage = event.get("stage")
        if stage == "train":
            key = f"train-{event['epoch']}"
            if key not in self.tasks:
                self.tasks[key] = self.progress.add_task(
                    f"train epoch {event['epoch']}/{event['epochs']}", total=event["steps"], info=""
                )
            self.progress.update(self.tasks[key], completed=event["step"], info=f"loss {event['loss']:.4f}")
        elif stage == "epoch":
            key = f"train-{event['epoch']}"
            if key in self.tasks:
                self.progress.update(
                    self.tasks[key], info=f"loss {event['loss']:.4f} acc {100 * event['train_acc']:.2f}%"
                )
        elif stage in ("evaluate", "attack", "sweep"):
            key = stage
            if key not in self.tasks:
                self.tasks[key] = self.progress.add_task(stage, total=event["steps"], info="")
            self.progress.update(
                self.tasks[key], completed=event["step"], total=event["steps"], info=str(event.get("what", ""))
            )


def _summary_table(title: str, rows: list[Any]) -> Table:
    """One line per model: clean, each distortion and attack at its largest strength, the worst case there.

    The terminal gets the headline; the store, the report and its CSV keep every row.
    """
    rs = [r if isinstance(r, dict) else r.__dict__ for r in rows]
    models = list(dict.fromkeys(r["model"] for r in rs))
    strongest: dict[str, float] = {}
    for r in rs:
        if r["metric"] == "accuracy" and r["eps"] is not None and not r["attack"].startswith("worst-case-paper"):
            strongest[r["attack"]] = max(strongest.get(r["attack"], r["eps"]), r["eps"])
    attacks = sorted(strongest, key=lambda a: (a == "worst-case", a not in ("noise", "blur"), a))
    table = Table(title=title, caption="accuracy (%); every row and eps: reports/<name>/report.md", width=TABLE_WIDTH)
    table.add_column("model", overflow="fold")
    table.add_column("clean", justify="right")
    for a in attacks:
        label = "worst case" if a == "worst-case" else a
        table.add_column(f"{label} {'σ' if a in ('noise', 'blur') else 'ε'}={strongest[a]:g}", justify="right")
    for m in models:
        cells = [m, _pct_cell(rs, m, "clean", None)]
        cells += [_pct_cell(rs, m, a, strongest[a]) for a in attacks]
        table.add_row(*(Text(c) for c in cells))  # labels such as mlp[lr=0.01] are not rich markup
    return table


#: The leaderboard columns a terminal shows (store column -> header); the files keep all of them.
TERMINAL_COLUMNS = {
    "defence": "defence",
    "dataset": "dataset",
    "clean acc (%)": "clean %",
    "worst-case (%)": "worst %",
    "at eps": "eps",
    "verdict": "verdict",
    "gap to best reference (pts)": "gap",
}


def _pct_cell(rows: list[dict[str, Any]], model: str, attack: str, eps: float | None) -> str:
    for r in rows:
        if r["model"] == model and r["attack"] == attack and r["metric"] == "accuracy" and r["eps"] == eps:
            return "—" if r["value"] is None else f"{100 * r['value']:.1f}"
    return ""


@app.command("list")
def list_cmd(
    kind: Annotated[
        str, typer.Argument(help="datasets, models, mechanisms, attacks, distortions, experiments or all")
    ] = "all",
) -> None:
    """List what is registered (name, summary, paper)."""
    from .attacks import ATTACKS
    from .data import DATASETS, DISTORTIONS
    from .mechanisms import MECHANISMS
    from .models import MODELS
    from .specs import renamed_to

    registries = {
        "datasets": DATASETS,
        "models": MODELS,
        "mechanisms": MECHANISMS,
        "attacks": ATTACKS,
        "distortions": DISTORTIONS,
    }
    kinds = [*registries, "experiments"] if kind == "all" else [kind]
    for k in kinds:
        if k == "experiments":
            from .errors import StoreError
            from .experiments.estimate import tier_times
            from .experiments.runner import default_runs_dir
            from .store import default_store_path, open_results

            table = Table(
                title="experiments (configs/*.toml; `neurorobust repro NAME`)",
                caption="time: measured from the store's finished runs (yours and the shipped results), else the "
                "last `repro NAME --estimate`",
            )
            table.add_column("name")
            table.add_column("description")
            table.add_column("30-min tier")
            table.add_column("FULL=1")
            listed = []
            for path in sorted(_configs_dir().glob("*.toml")):
                try:
                    raw = tomllib.loads(path.read_text())
                    new = renamed_to(raw)
                    desc = (
                        raw.get("description", "")
                        if new is None
                        else f"old name of {new} (works until the next release)"
                    )
                except tomllib.TOMLDecodeError:
                    new, desc = "", "(invalid TOML)"
                listed.append((path, str(desc), new is None))
            try:  # measured times from your store merged over the shipped results, as the leaderboard reads them
                results, _ = open_results(default_store_path())
            except StoreError:
                results = None
            times = tier_times(
                [path for path, _, timed in listed if timed],
                store_path=default_store_path(),
                runs_dir=default_runs_dir(),
                store=results,
            )
            if results is not None:
                results.close()
            for path, desc, _ in listed:
                tiers = times.get(path.stem, {})
                table.add_row(path.stem, desc, tiers.get("default", ""), tiers.get("full", ""))
            console.print(table)
            continue
        if k not in registries:
            raise SpecError(f"Unknown kind {k!r}; use one of: {', '.join([*registries, 'experiments', 'all'])}.")
        table = Table(title=k)
        for col in ("name", "summary", "paper"):
            table.add_column(col, overflow="fold")
        for entry in registries[k]:
            table.add_row(entry.name, entry.summary, entry.paper or "")
        if not len(registries[k]):
            table.add_row("(none yet)", "", "")
        console.print(table)


@data_app.command("info")
def data_info(
    name: Annotated[str | None, typer.Argument(help="dataset (default: all)")] = None, data_dir: DataDirOpt = None
) -> None:
    """Where each dataset is found, its size, shape and caveats."""
    from .data import DATASETS, INFOS, locate_dataset
    from .errors import DataError

    names = [DATASETS.get(name).name] if name else DATASETS.names()
    table = Table(title="datasets")
    for col in ("name", "found at", "train", "test", "shape", "classes", "notes"):
        table.add_column(col, overflow="fold")
    for n in names:
        info = INFOS[n]
        try:
            where = str(locate_dataset(n, data_dir) or "generated")
        except DataError:
            where = f"[red]missing[/red]: {info.how_to_get}"
        note = ("approximate: " if info.approximate else "") + info.note
        table.add_row(
            n,
            where,
            f"{info.n_train:,}",
            f"{info.n_test:,}",
            "x".join(map(str, info.shape)),
            str(len(info.classes)),
            note,
        )
    console.print(table)


@data_app.command("download")
def data_download(name: str, data_dir: DataDirOpt = None) -> None:
    """Download NAME (mnist, fashion-mnist, cifar10) and verify its md5s. Needs internet."""
    from .data import DATASETS
    from .data.download import download_dataset

    DATASETS.get(name)
    folder = download_dataset(name, data_dir, progress=lambda msg: err_console.print(msg))
    console.print(f"{name}: ready in {folder}")


def _run(
    spec_path: Path,
    *,
    store: Path | None,
    force: bool,
    full: bool,
    evaluate: bool,
    suite: str | None = None,
    n: int | None = None,
    experiment: str | None = None,
) -> Any:
    from .experiments.runner import run_experiment
    from .specs import load_spec, parse_spec
    from .store import ResultsStore

    spec = load_spec(spec_path, full=full)
    overrides = {k: v for k, v in (("suite", suite), ("n", n)) if v is not None}
    if overrides:
        raw = spec.model_dump(mode="json")
        raw["evaluate"].update(overrides)
        spec = parse_spec(raw, source=f"{spec_path} (with command-line overrides)")
    with ResultsStore(store) as st, _RichProgress() as progress:
        outcome = run_experiment(
            spec, store=st, experiment=experiment, force=force, evaluate_model=evaluate, progress=progress
        )
        return outcome, st.path


@app.command()
def train(spec: Path, force: ForceOpt = False, full: FullOpt = False, store: StoreOpt = None) -> None:
    """Train the model of SPEC (a TOML file); a cached checkpoint with the same train key is reused, and an
    interrupted run resumes from its last save (runs/checkpoints/<train key>.partial.pt)."""
    outcome, _ = _run(spec, store=store, force=force, full=full, evaluate=False)
    hist = outcome.history[-1] if outcome.history else {}
    state = "loaded from cache" if outcome.train_cached else "trained"
    acc = f", last epoch train accuracy {100 * hist['train_acc']:.2f}%" if "train_acc" in hist else ""
    console.print(f"{outcome.spec.name}: {state} (train key {outcome.train_key}){acc}")


@app.command()
def evaluate(
    spec: Annotated[Path | None, typer.Argument(help="an experiment spec (configs/NAME.toml); or use --model")] = None,
    suite: Annotated[str | None, typer.Option(help="quick, seed-paper, full or none (default: the spec's)")] = None,
    n: Annotated[int | None, typer.Option(help="evaluation subset size (default: the spec's)")] = None,
    experiment: Annotated[str | None, typer.Option(help="experiment name in the store (default: spec name)")] = None,
    force: ForceOpt = False,
    full: FullOpt = False,
    store: StoreOpt = None,
    model: Annotated[
        str | None, typer.Option(help="your model instead of a spec: FILE.py:FUNCTION returning an nn.Module")
    ] = None,
    weights: Annotated[Path | None, typer.Option(help="with --model: its weights (.safetensors only)")] = None,
    data: Annotated[
        str | None, typer.Option(help="with --model: a dataset name, an .npz (x, y) or a folder of class folders")
    ] = None,
    eps: Annotated[
        list[float] | None, typer.Option(help="with --model: attack budgets (repeat: --eps 0.1 --eps 0.3)")
    ] = None,
    norm: Annotated[str, typer.Option(help="with --model: linf or l2")] = "linf",
    stochastic: Annotated[bool, typer.Option(help="with --model: it is random at test time (EOT)")] = False,
    surrogate: Annotated[
        str | None, typer.Option(help="with --model: FILE.py:FUNCTION returning a differentiable stand-in (BPDA)")
    ] = None,
) -> None:
    """Train (or load) SPEC's model, evaluate it and write every row to the store; or evaluate your own
    model: `neurorobust evaluate --model mine.py:build --data mnist --eps 0.1 --suite quick`."""
    if model is not None or spec is None:
        if spec is not None:
            raise SpecError("Give a spec or --model, not both.")
        if model is None:
            raise SpecError("Give a spec (configs/NAME.toml) or --model FILE.py:FUNCTION with --data.")
        _evaluate_user_model(model, weights, data, eps, norm, suite, n, stochastic, surrogate, experiment, store)
        return
    outcome, path = _run(
        spec, store=store, force=force, full=full, evaluate=True, suite=suite, n=n, experiment=experiment
    )
    console.print(
        _summary_table(
            f"{outcome.spec.name}" + (" (cached results)" if outcome.eval_cached else ""),
            [r for r in outcome.rows if _is_headline(r)],
        )
    )
    _print_checklist(outcome)
    console.print(
        f"results in {path} (run {outcome.run_id}); `neurorobust report {experiment or outcome.spec.name}` draws them"
    )


def _evaluate_user_model(
    ref: str,
    weights: Path | None,
    data: str | None,
    eps: list[float] | None,
    norm: str,
    suite: str | None,
    n: int | None,
    stochastic: bool,
    surrogate: str | None,
    experiment: str | None,
    store: Path | None,
) -> None:
    """``evaluate --model``: a user's nn.Module on a dataset, like a spec's evaluation (rows, verdict, report)."""
    from types import SimpleNamespace

    from .api import declare
    from .api import evaluate as evaluate_model
    from .data.user import as_dataset
    from .models.user import check_model_output, load_user_model
    from .report import build_report
    from .store import ResultsStore, default_store_path

    if data is None:
        raise SpecError("--model needs --data: a dataset name (mnist, cifar10, ...), an .npz file or an image folder.")
    net = load_user_model(ref, weights)
    dataset = as_dataset(data)
    label = ref.rpartition(":")[2]
    check_model_output(net, dataset.x_test[:2], dataset.num_classes, label)
    if stochastic or surrogate:
        stand_in = load_user_model(surrogate, what="--surrogate") if surrogate else None
        declare(net, stochastic=stochastic or None, surrogate=stand_in)
    name = experiment or f"user_{Path(ref.rpartition(':')[0]).stem}_{label}"
    settings: dict[str, Any] = {"norm": norm}
    if eps:
        settings["eps"] = eps
    if n is not None:
        settings["n"] = n
    path = store or default_store_path()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with ResultsStore(path) as st:
        result = evaluate_model(
            net, dataset, suite=suite or "quick", store=st, experiment=name, label=label, **settings
        )
        folder = build_report(st, name, "reports")
    outcome = SimpleNamespace(
        spec=SimpleNamespace(name=name), checks=result.checks, rows=result.rows, verdict=result.verdict
    )
    console.print(_summary_table(name, [r for r in result.rows if _is_headline(r)]))
    _print_checklist(outcome)
    if not result.checks:
        console.print(f"verdict: [bold]{result.verdict or 'not checked'}[/bold]")
    console.print(f"results in {path}; report: {folder / 'report.md'}")


def _print_checklist(outcome: Any) -> None:
    """The verdict and worst case in a line or two, then only the checks that failed, with their advice.

    Every check (passed, n/a, not judged) with its value and threshold is in the report and the store."""
    checks = [c if isinstance(c, dict) else c.__dict__ for c in getattr(outcome, "checks", None) or []]
    if not checks:
        return
    worst = [r for r in outcome.rows if (r if isinstance(r, dict) else r.__dict__)["attack"] == "worst-case"]
    curve = ", ".join(f"eps={_get(r, 'eps'):g}: {100 * _get(r, 'value'):.1f}%" for r in worst)
    console.print(
        Text.assemble(
            (f"{outcome.spec.name}: ", "bold"),
            "verdict: ",
            (str(outcome.verdict), "bold"),
            f"; worst-case robust accuracy {curve}" if curve else "",
        ),
        soft_wrap=True,  # one line: the terminal wraps it, grep finds it
    )
    for c in checks:
        if c["passed"] is False:
            console.print(Text(f"  FAIL {c['name']}: {c['advice'] or ''}", style="red"), soft_wrap=True)


def _get(row: Any, key: str) -> Any:
    return row[key] if isinstance(row, dict) else getattr(row, key)


@app.command()
def repro(
    name: str,
    full: FullOpt = False,
    force: ForceOpt = False,
    store: StoreOpt = None,
    out: Annotated[Path, typer.Option(help="report folder root")] = Path("reports"),
    estimate: Annotated[
        bool,
        typer.Option(
            "--estimate", help="Time a few training steps of every planned run and print the total; train nothing."
        ),
    ] = False,
) -> None:
    """Reproduce an experiment: run configs/NAME.toml, then write reports/NAME/.

    Started again after a kill or Ctrl-C, it goes on where it stopped: finished models load from the
    checkpoint cache, an unfinished training run resumes from its last save (every epoch, and every 10
    minutes within one), finished evaluations come from the store."""
    from .report import build_report
    from .specs import load_spec
    from .store import ResultsStore

    path = _configs_dir() / f"{name}.toml"
    if not path.is_file():
        known = ", ".join(p.stem for p in sorted(_configs_dir().glob("*.toml")))
        raise SpecError(f"No experiment {name!r}: {path} does not exist. Known: {known}.")
    spec = load_spec(path, full=full)
    if estimate:
        _print_estimate(spec, full=full)
        return
    if spec.sweep is not None:  # several runs: the sweep machinery resumes a killed FULL=1 run
        store_path = _sweep(spec, store=store, backend="local", workers=None, address=None, force=force)
    else:
        outcome, store_path = _run(path, store=store, force=force, full=full, evaluate=True)
        console.print(_summary_table(name, [r for r in outcome.rows if _is_headline(r)]))
        _print_checklist(outcome)
    with ResultsStore(store_path) as st:
        folder = build_report(st, spec.name, out)
        _print_paper_tables(st, spec.name)
    console.print(f"report: {folder / 'index.html'}")


def _print_estimate(spec: Any, *, full: bool) -> None:
    """``repro --estimate``: a table of the planned training runs with their measured s/step, and the total.

    Nothing is trained to completion, saved or written to the store; only the totals are cached for
    ``neurorobust list experiments`` (``<runs>/estimates.json``)."""
    from .experiments.estimate import estimate_spec, format_seconds, save_estimate
    from .experiments.runner import default_runs_dir

    def timing(event: dict[str, Any]) -> None:
        err_console.print(f"timing {event['step']}/{event['steps']}: {event['what']}", highlight=False)

    est = estimate_spec(spec, full=full, runs_dir=default_runs_dir(), progress=timing)
    tier = "FULL=1" if full else "30-minute tier"
    table = Table(
        title=f"{spec.name} ({tier}): estimated training time on this machine",
        caption="s/step: measured over a few steps after a warm-up; estimate = s/step x steps",
        width=TABLE_WIDTH,
    )
    for col in ("run", "seed", "role", "steps", "s/step", "estimate", "note"):
        table.add_column(col, overflow="fold", justify="right" if col in ("seed", "steps", "s/step") else "left")
    for r in est.runs:
        per_step = "—" if r.seconds_per_step is None else f"{r.seconds_per_step:.3f}"
        cells = (r.label, str(r.seed), r.role, f"{r.steps:,}", per_step, format_seconds(r.seconds), r.note)
        table.add_row(*(Text(c) for c in cells))
    console.print(table)
    total = f"total training: {format_seconds(est.total_seconds)} of compute"
    if est.workers > 1:
        total += f", about {format_seconds(est.wall_seconds)} on {est.workers} workers"
    if not est.complete:
        total += " (plus the parts marked not estimated / not timed)"
    console.print(total)
    for note in est.notes:
        console.print(note)
    save_estimate(est, default_runs_dir())


def _print_paper_tables(st: Any, experiment: str) -> None:
    """The minimal-attack table and the paper's claims next to ours, as the report has them."""
    from .report.build import claims_table, latest_rows, minimal_attacks_table

    rows = latest_rows(st.results(experiment=experiment, done_only=True))
    out = console if console.is_terminal else Console(width=260)  # logs: one line per row, not folded columns
    for title, table in (
        ("Minimal-perturbation attacks (mean ± sd over seeds)", minimal_attacks_table(rows)),
        ("Paper claims next to our numbers", claims_table(experiment, rows)),
    ):
        if table is None:
            continue
        header, body = table
        t = Table(title=title, show_lines=False)
        for h in header:
            t.add_column(h, overflow="fold")
        for row in body:
            t.add_row(*row)
        out.print(t)


def _sweep(
    spec: Any,
    *,
    store: Path | None,
    backend: str,
    workers: int | None,
    address: str | None,
    force: bool,
    experiment: str | None = None,
) -> Path:
    from .experiments.runner import default_runs_dir
    from .experiments.sweep import run_sweep
    from .store import ResultsStore

    with ResultsStore(store) as st, _RichProgress() as progress:
        report = run_sweep(
            spec,
            store=st,
            backend=backend,
            workers=workers,
            address=address,
            experiment=experiment,
            runs_dir=default_runs_dir(),
            force=force,
            progress=progress,
        )
        path = st.path
    console.print(
        f"sweep {spec.name} ({backend}): {report.total} runs, {report.skipped} already in the store, "
        f"{report.done} done, {report.failed} failed, {report.seconds:.1f} s"
    )
    for label, error in report.failures:
        console.print(Text(f"  failed: {label}: {error}", style="red"))
    if report.best:
        console.print(f"best: {report.best}")
    return path


@app.command()
def sweep(
    spec: Path,
    backend: Annotated[str, typer.Option(help="local (process pool) or ray")] = "local",
    workers: Annotated[int | None, typer.Option(help="parallel workers (default: the cores)")] = None,
    address: Annotated[str | None, typer.Option(help="Ray cluster address ('auto' joins a running one)")] = None,
    experiment: Annotated[str | None, typer.Option(help="experiment name in the store (default: spec name)")] = None,
    force: ForceOpt = False,
    full: FullOpt = False,
    store: StoreOpt = None,
) -> None:
    r"""Run SPEC's \[sweep] grid or search; only runs missing from the store are run, and a variant killed while
    training resumes from its last save (resumable)."""
    from .specs import load_spec

    if backend not in ("local", "ray"):
        raise SpecError(f"--backend must be 'local' or 'ray', got {backend!r}.")
    if workers is not None and workers < 1:
        raise SpecError(f"--workers must be >= 1, got {workers}.")
    _sweep(
        load_spec(spec, full=full),
        store=store,
        backend=backend,
        workers=workers,
        address=address,
        force=force,
        experiment=experiment,
    )


NoShippedOpt = Annotated[
    bool,
    typer.Option(
        "--no-shipped",
        help="Read only your store; by default the shipped results (results/snapshot.jsonl) are used where your "
        "store is missing or empty, and under your runs otherwise.",
    ),
]


def _open_results(store: Path | None, no_shipped: bool) -> tuple[Any, str]:
    """The store to report from (yours, the shipped snapshot, or yours merged over it); prints which."""
    from .store import open_results

    st, source = open_results(store, shipped=not no_shipped)
    console.print(f"results: {source}", highlight=False)
    return st, source


@app.command()
def leaderboard(
    store: StoreOpt = None,
    out: Annotated[Path, typer.Option(help="folder for leaderboard.csv, leaderboard.md and index.html")] = Path(
        "reports/leaderboard"
    ),
    site: Annotated[
        Path | None,
        typer.Option(
            "--site",
            help="write the static site here instead (index.html: sortable, filterable table and plots; "
            "defences/*.html: checklist, curve, spec); open DIR/index.html, no server needed",
        ),
    ] = None,
    no_shipped: NoShippedOpt = False,
) -> None:
    """Every defence in the store: clean accuracy, paper claim, ours, worst case, masking verdict, seeds."""
    from .report.combinations import combination_rows
    from .report.leaderboard import COLUMNS, leaderboard_rows, write_leaderboard
    from .report.site import write_site

    st, source = _open_results(store, no_shipped)
    with st:
        board = leaderboard_rows(st)
        combos = combination_rows(st)
        folder = write_site(st, site, source=source) if site is not None else write_leaderboard(st, out)
    table = Table(
        title=f"leaderboard ({len(board)} defences)",
        caption=f"all {len(COLUMNS)} columns: leaderboard.csv / .md / index.html",
        width=TABLE_WIDTH,
    )
    for col, header in TERMINAL_COLUMNS.items():
        table.add_column(header, overflow="fold", justify="left" if col in ("defence", "verdict") else "right")
    for b in board:
        # the verdict's headline; the checks it could not judge are in the files
        shown = {**b, "verdict": str(b["verdict"] or "").split(";")[0]}
        table.add_row(*(Text("—" if shown[c] is None or shown[c] == "" else str(shown[c])) for c in TERMINAL_COLUMNS))
    console.print(table, width=TABLE_WIDTH)
    if combos:
        pairs = Table(title="combined with adversarial training (paired on the same images)", width=TABLE_WIDTH)
        for header in ("combination", "twin (AT only)", "eps", "gap (pts)", "95% interval", "finding"):
            pairs.add_column(header, overflow="fold")
        for c in combos:
            pairs.add_row(
                c["combination"],
                c["twin (AT only)"],
                c["eps"],
                f"{c['paired gap (pts)']:+.1f}",
                c["95% interval (pts)"],
                c["finding"],
            )
        console.print(pairs, width=TABLE_WIDTH)
    if site is not None:
        pages = len(list((folder / "defences").glob("*.html")))
        console.print(f"site: {folder / 'index.html'} and {pages} defence pages (open index.html in a browser)")
    else:
        console.print(f"written: {folder / 'leaderboard.csv'}, {folder / 'leaderboard.md'}, {folder / 'index.html'}")


@store_app.command("export")
def store_export(
    store: StoreOpt = None,
    to: Annotated[Path, typer.Option("--to", help="the snapshot file (JSON Lines)")] = Path("results/snapshot.jsonl"),
) -> None:
    """Write every finished run of the store (spec, versions, rows, checks) to a text snapshot (`make snapshot`)."""
    from .store import ResultsStore, default_store_path, export_snapshot

    path = store or default_store_path()
    if not Path(path).is_file():
        raise SpecError(f"No results store at {path}. Name one with --store or $NEURO_STORE.")
    with ResultsStore(path) as st:
        n = export_snapshot(st, to)
    console.print(f"{to}: {n} finished runs from {path} ({to.stat().st_size / 1e6:.1f} MB)", highlight=False)


@store_app.command("merge")
def store_merge(target: Path, sources: list[Path]) -> None:
    """Merge the finished runs of SOURCES into TARGET (runs already there are skipped)."""
    from .store import ResultsStore

    for src in sources:
        if not src.is_file():
            raise SpecError(f"{src}: no such results store.")
    with ResultsStore(target) as st:
        for src in sources:
            added, skipped = st.merge(src)
            console.print(f"{src}: {added} runs added, {skipped} already in {target}")


@app.command()
def report(
    name: Annotated[str, typer.Argument(help="experiment name, or 'all'")] = "all",
    store: StoreOpt = None,
    out: Annotated[Path, typer.Option(help="report folder root")] = Path("reports"),
    figures_to: Annotated[
        Path | None,
        typer.Option(help="also copy every figure to DIR/<experiment>_<file> (the docs: docs/figures)"),
    ] = None,
    no_shipped: NoShippedOpt = False,
) -> None:
    """Write reports/NAME/report.md and index.html (figures, tables, checklist) from the store.

    Every paper's figures come from its reporter (report/families/); ``--figures-to docs/figures``
    regenerates the docs' figures from the same code."""
    from .report import build_report
    from .report.build import copy_figures
    from .store import default_store_path

    st, source = _open_results(store, no_shipped)
    with st:
        user = store or default_store_path()
        if name != "all" and name not in st.experiments() and not Path(user).is_file():
            # the user asked for their own experiment and has no store: say that, not what the snapshot lacks
            st.close()
            raise SpecError(
                f"No results store at {user}, and the {source} hold no experiment {name!r}. "
                "Run `neurorobust evaluate SPEC` or `make demo` first."
            )
        folder = build_report(st, name, out)
        experiments = st.experiments() if name == "all" else [name]
    console.print(f"report: {folder / 'report.md'} and {folder / 'index.html'}")
    if figures_to is not None:
        copied = copy_figures(folder, experiments, figures_to)
        console.print(f"{len(copied)} figures copied to {figures_to}/")


@app.command("spectrum")
def spectrum_cmd(
    spec: Path,
    layer: Annotated[str, typer.Option("--layer", help="sub-module whose output is measured (e.g. hidden)")],
    variant: Annotated[str | None, typer.Option(help="sweep variant label (default: every variant)")] = None,
    seed: Annotated[int | None, typer.Option(help="seed (default: each variant's first)")] = None,
    samples: Annotated[int, typer.Option(help="images of the evaluated split")] = 10000,
    ranks: Annotated[str, typer.Option(help="rank range of the fit, LOW-HIGH")] = "11-500",
    out: Annotated[Path, typer.Option(help="folder for the plot")] = Path("reports/spectra"),
    full: FullOpt = False,
) -> None:
    """Alpha of a layer's covariance spectrum for SPEC's model(s) (trained or loaded from the cache), and a plot."""
    from .experiments.spectra import spectra_of_spec
    from .report.families.hebbian import plot_spectra
    from .specs import load_spec

    try:
        lo, hi = (int(r) for r in ranks.split("-"))
    except ValueError:
        raise SpecError(f"--ranks must read LOW-HIGH, e.g. 11-500; got {ranks!r}.") from None
    if samples < 2:
        raise SpecError(f"--samples must be >= 2, got {samples}.")
    loaded = load_spec(spec, full=full)
    with _RichProgress() as progress:
        results = spectra_of_spec(
            loaded, layer, variant=variant, seed=seed, samples=samples, ranks=(lo, hi), progress=progress
        )
    table = Table(title=f"{loaded.name}: spectrum of {layer!r} (alpha = -slope of log lambda_n/lambda_1 vs log n)")
    for col in ("model", "seed", "alpha", "fit se", "ranks", "R^2", "samples", "units", "warnings"):
        table.add_column(col, overflow="fold")
    for label, (vspec, res) in results.items():
        table.add_row(
            *(
                Text(c)
                for c in (
                    label,
                    str(vspec.seed),
                    f"{res.alpha:.4f}",
                    f"{res.fit.alpha_se:.4f}",
                    f"{res.fit.ranks[0]}-{res.fit.ranks[1]}",
                    f"{res.fit.r2:.4f}",
                    str(res.samples),
                    str(res.units),
                    "; ".join(res.warnings),
                )
            )
        )
    console.print(table)
    path = plot_spectra(
        {label: res for label, (_, res) in results.items()},
        out / f"{loaded.name}_{layer.replace('.', '_')}.png",
        title=f"{loaded.name}: {layer}",
    )
    console.print(f"plot: {path}")


@app.command()
def demo(
    store: StoreOpt = None,
    out: Annotated[Path, typer.Option(help="report folder root")] = Path("reports"),
    force: ForceOpt = False,
) -> None:
    """Train the MNIST MLP and CNN, evaluate both (clean, noise, blur, quick attacks), write reports/demo/."""
    from .report import build_report
    from .store import ResultsStore

    rows: list[Any] = []
    store_path = None
    for name in ("baseline_mnist_mlp", "baseline_mnist_cnn"):
        outcome, store_path = _run(
            _configs_dir() / f"{name}.toml", store=store, force=force, full=False, evaluate=True, experiment="demo"
        )
        rows += outcome.rows
        _print_checklist(outcome)
    console.print(_summary_table("demo: MNIST MLP vs CNN", [r for r in rows if _is_headline(r)]))
    with ResultsStore(store_path) as st:
        folder = build_report(st, "demo", out)
    console.print(f"report: {folder / 'report.md'} and {folder / 'index.html'}")


_HEADLINE_METRICS = {"accuracy", "median_min_eps", "score_sq_l2_per_dim", "median_l0", "median_l2"}


def _is_headline(row: Any) -> bool:
    """Rows worth a line in the terminal (the store and the report keep all of them)."""
    r = row if isinstance(row, dict) else row.__dict__
    return r["metric"] in _HEADLINE_METRICS and not r["attack"].startswith("check:")


def main() -> None:
    """Entry point: run the app, turning our errors into one clear message and exit code 2."""
    from .experiments.sweep import flush_denormals

    flush_denormals()
    try:
        app()
    except NeuroRobustError as exc:
        err_console.print(Text("error: ", style="bold red") + Text(str(exc)), highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        _interrupted()
    except SystemExit as exc:
        if exc.code == 130:  # typer turns Ctrl-C into exit code 130 before we see KeyboardInterrupt
            _interrupted()
        raise


def _interrupted() -> None:
    err_console.print("interrupted: rows measured so far are in the results store; run again to resume.")
    # Every row is already committed (WAL) and the locks were released as the interrupt unwound the stack. A normal
    # exit here sometimes died of the SIGINT itself (exit status -2 in about one run of five, on 0843c56 too, once
    # the interrupt had reached torch's C code): leave with 130 at once, as a shell expects after Ctrl-C.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)


if __name__ == "__main__":
    main()
