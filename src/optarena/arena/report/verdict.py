"""The report's opening: per workload the winner, whether it is beyond seed noise, the
under-tuned flags that concern it, and what this run can and cannot tell."""
from __future__ import annotations

from ..resultsfile import NOT_RUN, Results, WorkloadResult
from .document import Doc, Table
from .format import MISSING, NOISE_MARK, UNDER_TUNED, fmt_num


def verdict_section(doc: Doc, results: Results) -> None:
    doc.h2("Verdict")
    rows = [[w.name, _winner(w), against_runner_up(w), _flags(w)] for w in results.workloads.values()]
    doc.table(Table(["Workload", "Winner (mean final)", "Against the runner-up", UNDER_TUNED.capitalize()], rows,
                    ["l", "l", "l", "l"],
                    ["Beyond seed noise: a two-sided Welch t-test of the per-seed final metrics of the winner "
                     "and the runner-up gives p < 0.05. Cannot tell: fewer than two finished seeds on a side, "
                     "or no spread across seeds."]))  # fmt: skip
    doc.h3("What this run can and cannot tell")
    doc.p(_scope(results))


def against_runner_up(w: WorkloadResult) -> str:
    """The winner against the runner-up, in words."""
    v = w.verdict
    if v.winner is None:
        return "no optimizer finished"
    if v.runner_up is None:
        return "no runner-up finished"
    other, p = v.runner_up.optimizer, f"p = {fmt_num(v.p_value, 2)}"
    if v.beyond_noise is True:
        return f"beyond seed noise against {other} ({p})"
    if v.beyond_noise is False:
        return f"within seed noise of {other} ({p}): no clear winner"
    if min(len(v.winner.finals), len(v.runner_up.finals)) < 2:
        return f"cannot tell against {other} (fewer than two finished seeds)"
    return f"cannot tell against {other} (no spread across seeds)"


def _winner(w: WorkloadResult) -> str:
    return MISSING if w.winner is None else f"{w.winner.optimizer} ({fmt_num(w.winner.mean)})"


def _flags(w: WorkloadResult) -> str:
    flagged = w.verdict.flagged
    parts = [f"{r.optimizer}: {', '.join(r.tuned.reasons())}" for r in flagged]
    below = [r for r in w.under_tuned if r not in flagged]
    if below:
        parts.append(f"{len(below)} more below: {', '.join(r.optimizer for r in below)}")
    if parts:
        return "; ".join(parts)
    return "none" if w.tuning_known else "not recorded"


def _scope(results: Results) -> str:
    ws, s = list(results.workloads.values()), results.settings
    text = [f"This run compares {len(results.optimizers)} optimizers on {len(ws)} workloads"
            f"{f' ({results.suite} suite)' if results.suite else ''}."]
    if s.tuning:
        text.append(f"Every optimizer was tuned on every workload by the same procedure: {s.tuning.rstrip('.')}.")
    elif s.trials is not None:
        text.append(f"Every optimizer was tuned on every workload with the same budget of {s.trials} trials.")
    seeds = len(s.seeds)
    text.append(f"The best configuration was rerun on {seeds or 'several'} seeds. With so few seeds the test "
                f"against seed noise has little power: {NOISE_MARK} (within seed noise) is common and means "
                "\"no evidence of a difference\", not \"equal\".")  # fmt: skip
    steps = sorted(w.steps for w in ws if w.steps is not None)
    if steps:
        span = f"{steps[0]}" if steps[0] == steps[-1] else f"{steps[0]} to {steps[-1]}"
        short = "The quick suite's budgets are short" if results.suite == "quick" else "Budgets are"
        text.append(f"{short} ({span} steps per run): a ranking here is of this training length and may "
                    "change with longer training.")  # fmt: skip
    flagged, total = results.under_tuned, sum(1 for w in ws for r in w.runs.values() if r.status != NOT_RUN)
    if not results.tuning_known:
        text.append("This results file does not record where the tuned values lie in their searched ranges, "
                    "so under-tuning cannot be ruled out.")  # fmt: skip
    elif flagged:
        text.append(f"{len(flagged)} of {total} results are marked \"{UNDER_TUNED}\": a best value lies at the "
                    "edge of what was searched, so a wider search could do better and their rank is no "
                    "verdict on the method.")  # fmt: skip
    else:
        text.append("No tuned value lies at the edge of its searched range.")
    unconverged = sum(1 for w in ws for r in w.runs.values() if r.tuned is not None and r.tuned.converged is False)
    if unconverged:
        text.append(f"{unconverged} of {total} tunings stopped at their budget before converging, so a larger "
                    "budget could change their results.")  # fmt: skip
    text.append("Each workload is one small task: the run tells which optimizer did best here, with this "
                "budget, not which is best in general.")  # fmt: skip
    return " ".join(text)
