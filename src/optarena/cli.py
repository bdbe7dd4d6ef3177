"""The `optarena` command line: `optarena demo` (and, later, `optarena arena ...`).

`main(argv)` returns the exit status instead of exiting: 0 on success, 2 on a usage error
(unknown optimizer name, missing optional dependency, bad value). argparse itself still raises
`SystemExit` for `--help` (status 0) and for malformed arguments (status 2).
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Sequence

from . import __version__

EXIT_OK = 0
EXIT_USAGE = 2


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _name_list(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected comma-separated optimizer names, e.g. adamw,sgd")
    return names


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
            "Train an MLP (64 -> 128 -> 10, ReLU) on scikit-learn's bundled digits dataset "
            "(standardized, seeded stratified 80/20 train/validation split) with each registered "
            "optimizer at its documented defaults, from the same initial weights and with the same "
            "batch order, then print validation loss and accuracy, last training loss and the median "
            f"time per step. Needs scikit-learn: {demo.INSTALL_HINT}."
        ),
    )
    p.add_argument(
        "--optimizers",
        type=_name_list,
        default=None,
        metavar="A,B",
        help="comma-separated optimizer names (default: all registered)",
    )
    p.add_argument("--steps", type=_positive_int, default=demo.DEFAULT_STEPS, help="training steps (default: %(default)s)")
    p.add_argument(
        "--batch-size", type=_positive_int, default=demo.DEFAULT_BATCH_SIZE, help="batch size (default: %(default)s)"
    )
    p.add_argument("--seed", type=int, default=demo.DEFAULT_SEED, help="seed for split, init and data order (default: %(default)s)")
    p.add_argument(
        "--threads", type=_positive_int, default=demo.DEFAULT_THREADS, help="torch.set_num_threads value (default: %(default)s)"
    )
    p.set_defaults(handler=_cmd_demo)
    return parser


def _cmd_demo(args: argparse.Namespace) -> int:
    from . import demo

    names = demo.resolve_optimizers(args.optimizers)  # unknown names fail before any work
    print(
        f"digits MLP 64-{demo.HIDDEN}-10 (ReLU), {args.steps} steps x batch {args.batch_size}, "
        f"seed {args.seed}, {args.threads} thread(s); each optimizer at its documented defaults: "
        + ", ".join(names),
        flush=True,
    )
    start = time.perf_counter()
    rows = demo.run_demo(names, steps=args.steps, batch_size=args.batch_size, seed=args.seed, threads=args.threads)
    print()
    print(demo.format_table(rows))
    print(f"\ntotal {time.perf_counter() - start:.1f} s")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line on `argv` (default: `sys.argv[1:]`); returns the exit status."""
    from .demo import MissingDependencyError

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return args.handler(args)
    except (ValueError, MissingDependencyError) as exc:
        print(f"optarena {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
