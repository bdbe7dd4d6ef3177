"""`arena run`: create the plan's studies, work them (with optional local helper processes),
then collect the results and write `results.json`, `report.md` and `report.html`."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from .io import jsonable, write_json
from .plan import Plan, create_studies, load_plan
from .report.format import NOISE_MARK, UNDER_TUNED
from .report.verdict import against_runner_up
from .results import collect, lost_results
from .resultsfile import NOT_RUN, read_results
from .storage import ArenaError, open_storage, redact
from .workloads import get_workload
from .workloads.base import DatasetMissingError
from .worker import Worker, finished_configs


def preflight(plan: Plan) -> None:
    """Build every workload once, so a missing dataset stops the run before any training."""
    for w in plan.workloads:
        try:
            get_workload(w).build(0)
        except DatasetMissingError as err:
            raise ArenaError(f"workload {w!r}: {err}") from None


class Progress:
    """Progress over the plan's configurations, when `enabled`: rich's live bar on a terminal;
    otherwise (a log file, a pipe, where a live bar prints nothing) a plain line each time a study
    is seen finished (by any worker), else at most every `interval` seconds on the next event,
    with counts, ETA and the last configuration finished.
    The total is done + pending each time: a tuning study may finish under its budget, so it can
    shrink while running."""

    def __init__(self, worker: Worker, enabled: bool = True, *, interval: float = 30.0,
                 clock: Callable[[], float] = time.monotonic):  # fmt: skip
        self.worker, self.enabled, self.interval, self.clock = worker, enabled, interval, clock
        self.bar: Any = None
        self.plain = False
        self.finished = 0  # studies seen finished
        self.last = ""  # the last configuration this worker finished, in words
        self.started = self.printed = 0.0
        self.done_at_start = 0

    def counts(self) -> tuple[int, int, int]:
        """(configurations finished, configurations still to run, studies finished), by every worker
        of the run, in one pass over the studies."""
        left = [self.worker.left(s) for s in self.worker.specs]
        done = sum(len(finished_configs(self.worker.study(s.name))) for s in self.worker.specs)
        return done, sum(left), left.count(0)

    def __enter__(self) -> "Progress":
        if not self.enabled:
            return self
        done, pending, _ = self.counts()
        if sys.stdout.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn
            from rich.progress import TimeElapsedColumn, TimeRemainingColumn

            self.bar = Bar(TextColumn("[bold]{task.description:<44}"), BarColumn(), MofNCompleteColumn(),
                           TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())  # fmt: skip
            self.bar.__enter__()
            self.task = self.bar.add_task("arena", total=done + pending, completed=done)
        else:
            self.plain, self.started, self.done_at_start = True, self.clock(), done
            self.line(done, pending)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)
        elif self.plain and exc[0] is None:
            self.line(*self.counts()[:2])

    def __call__(self, kind: str, info: dict[str, Any]) -> None:
        if self.bar is not None:
            self.update_bar(kind, info)
        elif self.plain:
            self.update_plain(kind, info)

    def update_bar(self, kind: str, info: dict[str, Any]) -> None:
        if kind == "start":
            text = f"{info['kind']} {info['workload']} / {info['optimizer']} #{info['config']}"
            self.bar.update(self.task, description=text)
        elif kind in ("done", "error", "requeued", "idle"):
            if kind == "idle":
                self.bar.update(self.task, description="waiting for other workers")
            done, pending, _ = self.counts()
            self.bar.update(self.task, total=done + pending, completed=done)
        if kind == "error":
            self.bar.console.print(f"[red]error[/red] {info['study']} #{info.get('config')}: {info['error']}")

    def update_plain(self, kind: str, info: dict[str, Any]) -> None:
        counts = None
        if kind in ("done", "error"):
            self.last = f"{info['kind']} {info['workload']} / {info['optimizer']} #{info.get('config')}"
            if kind == "error":
                print(f"error {info['study']} #{info.get('config')}: {info['error']}", flush=True)
            counts = self.counts()
        due = kind != "start" and self.clock() - self.printed >= self.interval
        if (counts is not None and counts[2] > self.finished) or due:
            done, pending, self.finished = counts or self.counts()
            self.line(done, pending, "waiting for other workers" if kind == "idle" else "")

    def line(self, done: int, pending: int, note: str = "") -> None:
        """One plain progress line: `[elapsed] done/total configurations done, eta ... — last: ...`."""
        now = self.clock()
        elapsed = now - self.started
        rate = (done - self.done_at_start) / elapsed if elapsed > 0 else 0.0
        eta = self.hms(pending / rate) if rate > 0 else ("0:00" if pending == 0 else "?")
        text = f"[{self.hms(elapsed):>5}] {done}/{done + pending} configurations done, eta {eta}"
        text += f" — last: {self.last}" if self.last else ""
        print(text + (f" ({note})" if note else ""), flush=True)
        self.printed = now

    @staticmethod
    def hms(seconds: float) -> str:
        """4:05, or 1:02:03 past an hour."""
        m, s = divmod(int(round(seconds)), 60)
        return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


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
    AdamW's target, ms per training step, state B/param, the under-tuned flags; then the winner
    and whether it is beyond seed noise, the profile scores and the speedups."""
    r = read_results(results)
    lines = []
    for w in r.workloads.values():
        steps = f"{w.steps} steps, " if w.steps is not None else ""
        lines.append(f"\n{w.name}: {w.metric} ({'higher' if w.higher_is_better else 'lower'} is better), "
                     f"{steps}target {_fmt(w.target)}")  # fmt: skip
        lines.append(f"  {'optimizer':<10} {'final (mean ± std)':>22} {'':1} {'steps→target':>12} {'ms/step':>8} {'B/param':>8}")
        for run in w.ranking:
            if run.mean is None:
                final = NOT_RUN if run.status == NOT_RUN else "failed"
            else:
                final = f"{_fmt(run.mean)} ± {_fmt(run.std, 2)}"
                if run.n is not None and run.n < len(run.seeds):  # the others diverged or failed
                    final += f" ({run.n}/{len(run.seeds)})"
            flag = f"  {UNDER_TUNED}: {', '.join(run.tuned.reasons())}" if run.under_tuned else ""
            lines.append(f"  {run.optimizer:<10} {final:>22} {NOISE_MARK if run.noise_mark else '':1} "
                         f"{_fmt(run.steps_to_target, 5):>12} {_fmt(run.step_ms, 3):>8} "
                         f"{_fmt(run.state_bytes_per_param, 3):>8}{flag}")  # fmt: skip
        winner = f"{w.winner.optimizer}, {against_runner_up(w)}" if w.winner else "none (no optimizer finished)"
        lines.append(f"  winner: {winner}")
    if r.profiles is not None and r.profiles.score:
        scores = r.profiles.score
        lines.append("\nperformance-profile score (area on [1, 4], 1 = fastest to target everywhere): "
                     + ", ".join(f"{o} {scores[o]:.2f}" if scores.get(o) is not None else f"{o} {_fmt(None)}"
                                 for o in r.profiles.order(r.optimizers) if o in scores))  # fmt: skip
    for w, entry in r.speedup.items():
        if entry.fit is None or entry.note:
            lines.append(f"data-equivalent speedup over AdamW on {w}: none ({entry.note or 'no fit'})")
            continue
        values = ", ".join(f"{o} {_fmt(s.value, 3) if s.value is not None else '>max' if s.beyond else 'n/a'}"
                           for o, s in entry.values.items())  # fmt: skip
        lines.append(f"data-equivalent speedup over AdamW on {w} (>max: beyond AdamW's asymptote): {values}")
    return "\n".join(lines)
