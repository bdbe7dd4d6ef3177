"""`arena run`: create the plan's studies, work them (with optional local helper processes),
then collect the results and write `results.json`, `report.md` and `report.html`."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .io import jsonable, write_json
from .plan import Plan, create_studies, load_plan
from .results import collect, lost_results
from .storage import ArenaError, open_storage, redact
from .workloads import get_workload
from .workloads.base import DatasetMissingError
from .worker import Worker


def preflight(plan: Plan) -> None:
    """Build every workload once, so a missing dataset stops the run before any training."""
    for w in plan.workloads:
        try:
            get_workload(w).build(0)
        except DatasetMissingError as err:
            raise ArenaError(f"workload {w!r}: {err}") from None


class Progress:
    """Rich progress over the plan's configurations (ETA from the finished ones)."""

    def __init__(self, worker: Worker, enabled: bool = True):
        self.worker, self.enabled, self.bar = worker, enabled, None
        self.total = sum(len(s.configs) for s in worker.specs)

    def __enter__(self) -> "Progress":
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn
            from rich.progress import TimeElapsedColumn, TimeRemainingColumn

            self.bar = Bar(TextColumn("[bold]{task.description:<44}"), BarColumn(), MofNCompleteColumn(),
                           TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())  # fmt: skip
            self.bar.__enter__()
            self.task = self.bar.add_task("arena", total=self.total, completed=self.total - self.worker.pending())
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def __call__(self, kind: str, info: dict[str, Any]) -> None:
        if self.bar is None:
            return
        if kind == "start":
            text = f"{info['kind']} {info['workload']} / {info['optimizer']} #{info['config']}"
            self.bar.update(self.task, description=text)
        elif kind in ("done", "error", "requeued", "idle"):
            if kind == "idle":
                self.bar.update(self.task, description="waiting for other workers")
            self.bar.update(self.task, completed=self.total - self.worker.pending())
        if kind == "error":
            self.bar.console.print(f"[red]error[/red] {info['study']} #{info['config']}: {info['error']}")


def spawn_workers(url: str, name: str, count: int, logs: Path) -> list[subprocess.Popen]:
    logs.mkdir(parents=True, exist_ok=True)
    procs = []
    for k in range(count):
        log = open(logs / f"worker-{k + 1}.log", "ab")
        cmd = [sys.executable, "-m", "optarena", "arena", "worker", "--storage", url, "--name", name, "--quiet"]
        # a session of their own: a terminal Ctrl-C reaches this process, which hands it on once
        procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ),
                                      start_new_session=True))  # fmt: skip
    return procs


def run_arena(plan: Plan, url: str, out: Path, *, jobs: int = 1, progress: bool = True) -> dict[str, Any]:
    """Run (or continue) `plan` against the storage at `url`; returns results and the files written."""
    if jobs < 1:
        raise ArenaError(f"jobs must be an integer in [1, inf), got {jobs}")
    if jobs > 1 and url.startswith("sqlite"):
        raise ArenaError("sqlite storage serves one process at a time: use --jobs 1, a journal: file or PostgreSQL")
    storage = open_storage(url)
    preflight(plan)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    create_studies(storage, plan)
    started = time.perf_counter()
    worker = Worker(storage, plan)
    helpers = spawn_workers(url, plan.name, jobs - 1, out / "logs")
    try:
        with Progress(worker, enabled=progress) as bar:
            worker.on_event = bar
            worker.run()
        for proc in helpers:
            proc.wait()
    finally:
        for proc in helpers:
            if proc.poll() is None:
                proc.send_signal(2)  # SIGINT: each hands its trial back before exiting
        for proc in helpers:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    return finish(storage, plan, url, out, {"jobs": jobs, "seconds": round(time.perf_counter() - started, 1)})


def finish(storage: Any, plan: Plan, url: str, out: Path, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Collect the results of `plan` and write results.json and the report under `out`.

    Never replaces a report of the same run that holds results the storage has lost (a damaged
    or replaced journal): `ArenaError`, and the files stay as they were. An unfinished run is
    reported with a warning on stderr."""
    from .report import write_report

    results = collect(storage, plan, {"storage": redact(url), **(settings or {})})
    out = Path(out)
    _refuse_losing_results(out / "results.json", results, url)
    pending = Worker(storage, plan).pending()
    if pending:
        total = sum(len(s.configs) for s in plan.studies())
        print(f"optarena: warning: the run {plan.name!r} is not finished ({pending} of {total} configurations still "
              "to run): the report shows what is done, and optimizers without a finished seed appear as failed; "
              "finish it with `optarena arena run` (same arguments) or `optarena arena worker`",
              file=sys.stderr, flush=True)  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", jsonable(results))
    files = write_report(results, out)
    return {"results": results, "files": {"results": out / "results.json", **files}}


def _refuse_losing_results(path: Path, results: dict[str, Any], url: str) -> None:
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # none yet, or unreadable: nothing worth keeping
        return
    lost = lost_results(old, results) if isinstance(old, dict) else []
    if lost:
        more = f" and {len(lost) - 3} more" if len(lost) > 3 else ""
        raise ArenaError(
            f"not writing the report: {path} holds {len(lost)} result(s) of run {results['settings']['name']!r} "
            f"that the storage {redact(url)} no longer has ({', '.join(lost[:3])}{more}), so the storage lost work "
            f"(a damaged or replaced journal); {path.name}, report.md and report.html are left as they were. Redo "
            "the lost work with `optarena arena run` (same arguments), or write this report elsewhere with --out"
        )


def work(url: str, name: str | None, *, progress: bool = True) -> int:
    """`arena worker`: join the run `name` (None: the storage's only run) at `url` until it is finished."""
    storage = open_storage(url)
    plan = load_plan(storage, name)
    preflight(plan)
    worker = Worker(storage, plan)
    with Progress(worker, enabled=progress) as bar:
        worker.on_event = bar
        return worker.run()


def _fmt(x: Any, digits: int = 4) -> str:
    return "—" if x is None else f"{x:.{digits}g}"


def summary(results: dict[str, Any]) -> str:
    """A plain-text table per workload: optimizers best first, final metric mean ± std over the
    seeds that finished ("(k/n)" when some diverged; ≈: within seed noise of AdamW), steps to
    AdamW's target, ms per training step, state B/param."""
    lines = []
    for w in results["workloads"]:
        info, runs = results["workload_info"][w], results["runs"][w]
        sign = -1 if info["higher_is_better"] else 1
        order = sorted(runs, key=lambda o: (runs[o]["final"]["mean"] is None, sign * (runs[o]["final"]["mean"] or 0)))
        lines.append(f"\n{w}: {info['metric']} ({'higher' if info['higher_is_better'] else 'lower'} is better), "
                     f"{info['steps']} steps, target {_fmt(results['targets'].get(w))}")  # fmt: skip
        lines.append(f"  {'optimizer':<10} {'final (mean ± std)':>22} {'':1} {'steps→target':>12} {'ms/step':>8} {'B/param':>8}")
        for o in order:
            run = runs[o]
            mean, std = run["final"]["mean"], run["final"]["std"]
            final = "failed" if mean is None else f"{_fmt(mean)} ± {_fmt(std, 2)}"
            if mean is not None and run["final"]["n"] < len(run["seeds"]):  # the others diverged or failed
                final += f" ({run['final']['n']}/{len(run['seeds'])})"
            mark = "≈" if run["vs_adamw"]["within_noise"] and o != "adamw" else ""
            steps = _fmt(run["steps_to_target"], 5)
            lines.append(f"  {o:<10} {final:>22} {mark:1} {steps:>12} {_fmt(run['step_ms'], 3):>8} "
                         f"{_fmt(run['state_bytes_per_param'], 3):>8}")  # fmt: skip
    scores = results["profiles"]["score"]
    lines.append("\nperformance-profile score (area on [1, 4], 1 = fastest to target everywhere): "
                 + ", ".join(f"{o} {scores[o]:.2f}" for o in sorted(scores, key=lambda o: -scores[o])))  # fmt: skip
    for w, entry in results.get("speedup", {}).items():
        if entry.get("fit") is None or entry.get("note"):
            lines.append(f"data-equivalent speedup over AdamW on {w}: none ({entry.get('note') or 'no fit'})")
            continue
        def cell(o: str, v: float | None) -> str:
            if v is not None:
                return _fmt(v, 3)
            return ">max" if results["runs"][w][o]["final"]["mean"] is not None else "n/a"

        values = ", ".join(f"{o} {cell(o, v)}" for o, v in entry["speedup"].items())
        lines.append(f"data-equivalent speedup over AdamW on {w} (>max: beyond AdamW's asymptote): {values}")
    return "\n".join(lines)
