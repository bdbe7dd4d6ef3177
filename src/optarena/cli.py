"""The `optarena` command line: `optarena demo` and `optarena arena run|plan|worker|report|dashboard`.

`main(argv)` returns the exit status instead of exiting: 0 on success, 2 on a usage error
(unknown optimizer name, missing optional dependency, bad value, damaged storage), 130 after
Ctrl-C (one line on stderr saying how to continue, no traceback). argparse itself still raises
`SystemExit` for `--help` (status 0) and for malformed arguments (status 2).
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Callable, Sequence

from . import __version__

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for a command stopped by Ctrl-C


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _valid_optimizers() -> list[str]:
    from .registry import available

    return available()


def _valid_workloads() -> list[str]:
    from .arena.workloads import WORKLOADS

    return list(WORKLOADS)


def _names(what: str, example: str, valid: Callable[[], list[str]]) -> Callable[[str], list[str]]:
    """An argparse type for a comma-separated list of `what` names; an empty list is an error
    that names what the option expects (and the valid names, when they can be listed)."""

    def parse(text: str) -> list[str]:
        names = [part.strip() for part in text.split(",") if part.strip()]
        if not names:
            try:
                choices = f"; valid {what}s: {', '.join(valid())}"
            except ImportError:  # the arena extra is missing: the command reports that itself
                choices = ""
            raise argparse.ArgumentTypeError(f"expected comma-separated {what} names, e.g. {example}, got {text!r}"
                                             f"{choices}")  # fmt: skip
        return names

    return parse


_optimizer_list = _names("optimizer", "adamw,sgd", _valid_optimizers)
_workload_list = _names("workload", "rosenbrock,charlm", _valid_workloads)


def build_parser() -> argparse.ArgumentParser:
    from . import demo

    parser = argparse.ArgumentParser(
        prog="optarena",
        description="Optimizers from the recent literature, and a fair arena to compare them.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = commands.add_parser(
        "demo",
        help="train a small MLP on the digits dataset with every optimizer at its defaults",
        description=(
            "Train the arena's digits-mlp workload (MLP 64 -> 128 -> 128 -> 10 on scikit-learn's bundled "
            "digits, fixed stratified 80/20 train/validation split, batch 64) with each registered "
            "optimizer at its documented defaults, through the arena's training loop (warm-up, then "
            "cosine lr decay), from the same initial weights and with the same batch order, then print "
            "validation loss and accuracy, the recent training loss, the median time per step and the "
            f"optimizer state per parameter. Needs scikit-learn: {demo.INSTALL_HINT}."
        ),
    )
    p.add_argument(
        "--optimizers",
        type=_optimizer_list,
        default=None,
        metavar="A,B",
        help="comma-separated optimizer names (default: all registered)",
    )
    p.add_argument("--steps", type=_positive_int, default=demo.DEFAULT_STEPS, help="training steps (default: %(default)s)")
    p.add_argument("--seed", type=int, default=demo.DEFAULT_SEED, help="seed for init and data order (default: %(default)s)")
    p.add_argument(
        "--threads", type=_positive_int, default=demo.DEFAULT_THREADS, help="torch.set_num_threads value (default: %(default)s)"
    )
    p.set_defaults(handler=_cmd_demo)
    _add_arena(commands)
    return parser


def _add_arena(commands: argparse._SubParsersAction) -> None:
    arena = commands.add_parser(
        "arena",
        help="fair, tuned comparison of optimizers on CPU workloads",
        description="Tune every optimizer with the same budget on each workload, rerun the best "
        "configuration on several seeds, and write results.json, report.md and report.html.",
    )
    sub = arena.add_subparsers(dest="arena_command", metavar="ACTION", required=True)

    def common(p: argparse.ArgumentParser, out: bool = True) -> None:
        p.add_argument("--storage", default=None, metavar="URL",
                       help="Optuna storage: journal:PATH (default: OUT/studies.journal), sqlite:///PATH, "
                       "postgresql://user:pass@host/db")  # fmt: skip
        p.add_argument("--name", default=None, help="name of the run inside the storage (default for run/plan: the "
                       "suite and a hash of the plan, so the same command continues the same run; for worker/report: "
                       "the storage's only run)")  # fmt: skip
        if out:
            p.add_argument("--out", default="runs/arena", help="run folder for the storage file and the report "
                           "(default: %(default)s)")  # fmt: skip

    for action, text in (("run", "plan, work and report (continues an interrupted run)"),
                         ("plan", "only create the studies, for workers started elsewhere")):  # fmt: skip
        p = sub.add_parser(action, help=text, description=text)
        p.add_argument("--suite", choices=["quick", "standard"], default="quick", help="budgets (default: quick)")
        p.add_argument("--optimizers", type=_optimizer_list, default=None, metavar="A,B", help="default: all registered")
        p.add_argument("--workloads", type=_workload_list, default=None, metavar="A,B", help="default: all")
        p.add_argument("--trials", type=_positive_int, default=None, help="tuning trials per optimizer and workload")
        p.add_argument("--seeds", type=_positive_int, default=None, help="seeds the best configuration is rerun on")
        p.add_argument("--threads", type=_positive_int, default=1, help="torch threads per run (default: 1)")
        p.add_argument("--steps", type=_positive_int, default=None, help="override every workload's step budget")
        common(p)
        if action == "run":
            p.add_argument("--jobs", type=_positive_int, default=1, help="local worker processes (default: 1)")
            p.add_argument("--quiet", action="store_true", help="no progress bar")
        p.set_defaults(handler=_cmd_arena)
    p = sub.add_parser("worker", help="join a run in a shared storage and work until it is finished")
    common(p, out=False)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_cmd_arena)
    p = sub.add_parser("report", help="write results.json and the report of a run from its storage")
    common(p)
    p.set_defaults(handler=_cmd_arena)
    text = "open optuna-dashboard on a run's storage (needs: pip install optuna-dashboard)"
    p = sub.add_parser("dashboard", help=text, description=text)
    p.add_argument("--storage", default=None, metavar="URL", help="Optuna storage of the run (default: "
                   "OUT/studies.journal)")  # fmt: skip
    p.add_argument("--out", default="runs/arena", help="run folder whose journal to open (default: %(default)s)")
    p.add_argument("--port", type=_positive_int, default=8080, help="port to serve on (default: %(default)s)")
    p.set_defaults(handler=_cmd_dashboard)


def _cmd_arena(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .demo import MissingDependencyError

    try:
        from .arena import plan as plans
        from .arena import runner
        from .arena.storage import default_url, open_storage
    except ImportError as err:
        raise MissingDependencyError(f"the arena needs {err.name!r}: pip install 'optarena[arena]'") from None

    out = Path(getattr(args, "out", None) or "runs/arena")
    url = args.storage or (default_url(out) if args.arena_command != "worker" else None)
    if url is None:
        raise ValueError("arena worker needs --storage URL (the storage the run was planned in)")
    if args.arena_command == "worker":
        ran = runner.work(url, args.name, progress=not args.quiet)
        print(f"worker finished: ran {ran} trial(s)")
        return EXIT_OK
    if args.arena_command == "report":
        storage = open_storage(url)
        plan = plans.load_plan(storage, args.name)
        files = runner.finish(storage, plan, url, out)["files"]
        print(f"report: {files['html']}")
        return EXIT_OK
    plan = plans.make_plan(args.suite, optimizers=args.optimizers, workloads=args.workloads, trials=args.trials,
                           seeds=args.seeds, threads=args.threads, name=args.name,
                           steps=args.steps)  # fmt: skip
    if args.arena_command == "plan":
        storage = open_storage(url)
        runner.preflight(plan)
        plans.create_studies(storage, plan)
        print(f"planned run {plan.name!r} in {url}: start workers with\n"
              f"  optarena arena worker --storage {url} --name {plan.name}")  # fmt: skip
        return EXIT_OK
    done = runner.run_arena(plan, url, out, jobs=args.jobs, progress=not args.quiet)
    print(runner.summary(done["results"]))
    print(f"\nresults: {done['files']['results']}")
    print(f"report:  {done['files']['md']}")
    print(f"report:  {done['files']['html']}")
    return EXIT_OK


def _cmd_dashboard(args: argparse.Namespace) -> int:
    """Serve optuna-dashboard on the run's storage until Ctrl-C (which is how it stops: exit 0)."""
    from pathlib import Path

    from .demo import MissingDependencyError

    try:
        from optuna_dashboard import run_server
    except ImportError:
        raise MissingDependencyError("the dashboard needs optuna-dashboard: pip install optuna-dashboard") from None
    try:
        from .arena.storage import DEFAULT_FILE, default_url, open_storage, redact
    except ImportError as err:
        raise MissingDependencyError(f"the arena needs {err.name!r}: pip install 'optarena[arena]'") from None

    out = Path(args.out)
    if args.storage is None and not (out / DEFAULT_FILE).is_file():
        raise ValueError(f"no run in {out}: no {DEFAULT_FILE} there (give --out RUN_FOLDER or --storage URL)")
    url = args.storage or default_url(out)
    storage = open_storage(url)
    print(f"optuna-dashboard on {redact(url)}: http://localhost:{args.port}/ (Ctrl-C to stop)", flush=True)
    try:
        run_server(storage, host="localhost", port=args.port)
    except KeyboardInterrupt:
        pass
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from . import demo

    names = demo.resolve_optimizers(args.optimizers)  # unknown names fail before any work
    print(demo.header(names, args.steps, args.seed, args.threads), flush=True)
    start = time.perf_counter()
    rows = demo.run_demo(names, steps=args.steps, seed=args.seed, threads=args.threads)
    print()
    print(demo.format_table(rows))
    print(f"\ntotal {time.perf_counter() - start:.1f} s")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line on `argv` (default: `sys.argv[1:]`); returns the exit status."""
    from .arena.errors import ArenaError
    from .demo import MissingDependencyError

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return args.handler(args)
    except (ValueError, MissingDependencyError, ArenaError) as exc:
        print(f"optarena {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:  # the worker has handed its trial back; finished results are stored
        print(f"{_prog(args)}: {_INTERRUPTED.get(getattr(args, 'arena_command', None), 'interrupted')}",
              file=sys.stderr, flush=True)  # fmt: skip
        return EXIT_INTERRUPTED


_INTERRUPTED = {
    "run": "interrupted; rerun the same command to continue",
    "plan": "interrupted; rerun the same command to finish creating the run",
    "worker": "interrupted; rerun the same command to continue",
    "report": "interrupted; rerun the same command to write the report",
}


def _prog(args: argparse.Namespace) -> str:
    return " ".join(["optarena", args.command] + ([args.arena_command] if getattr(args, "arena_command", None) else []))


if __name__ == "__main__":
    sys.exit(main())
