"""The report's sections, built from the typed results into one `Doc`, verdict first."""
from __future__ import annotations

from ..resultsfile import NOT_RUN, MethodRun, Results, WorkloadResult
from .cards import cards_section
from .document import Doc, Table
from .format import MISSING, NOISE_MARK, UNDER_TUNED, fmt_date, fmt_num, fmt_params, fmt_speedup, fmt_steps
from .verdict import verdict_section

_PROPERTY_TITLES = {
    "effective_rank": "Effective rank",
    "activation_kurtosis": "Activation kurtosis",
    "tail_error": "Tail error",
}


def build(results: Results, figures: set[str]) -> Doc:
    """The whole report; `figures` names the figures that were drawn."""
    doc = Doc(f"optarena arena report: {results.suite or '?'} suite")
    doc.ul(_meta(results))
    verdict_section(doc, results)
    _how_to_read(doc, results)
    doc.h2("Results per workload")
    for w in results.workloads.values():
        doc.h3(w.name)
        doc.p(_describe(w))
        doc.table(workload_table(results, w))
    if "curves" in figures:
        doc.figure("curves", "Metric curves of the tuned configurations: mean over seeds, the band "
                             "spans min to max; dashed: the target.")  # fmt: skip
    _optimum(doc, results)
    _profiles(doc, results, "profiles" in figures)
    _speedup(doc, results, "speedup" in figures)
    _properties(doc, results)
    doc.h2("Failed and diverged runs")
    failures = _failures(results)
    if failures:
        doc.ul(failures)
    else:
        doc.p("None: every seed of every tuned configuration finished.")
    cards_section(doc, results)
    return doc


def _meta(results: Results) -> list[str]:
    meta = [f"Suite: {results.suite or '?'}", f"Date: {fmt_date(results.created)}"]
    m = results.machine
    if m is not None:
        text = m.cpu or "unknown CPU"
        text += f", {m.threads} threads" if m.threads is not None else ""
        text += f", torch {m.torch}" if m.torch else ""
        text += f", Python {m.python}" if m.python else ""
        meta.append(f"Machine: {text}")
    s = results.settings
    seeds = f"seeds {', '.join(str(x) for x in s.seeds) or MISSING}"
    if s.tuning:
        meta.append(f"Tuning: {s.tuning.rstrip('.')}; {seeds}")
    elif s.trials is not None or s.seeds:
        trials = s.trials if s.trials is not None else MISSING
        meta.append(f"Tuning: {trials} trials per optimizer and workload; {seeds}")
    meta.append(f"Optimizers: {', '.join(results.optimizers) or MISSING}; "
                f"workloads: {', '.join(results.workloads) or MISSING}")  # fmt: skip
    return meta


def _how_to_read(doc: Doc, results: Results) -> None:
    s = results.settings
    if s.tuning:
        effort = f"by the same procedure ({s.tuning.rstrip('.')})"
    else:
        effort = "with the same number of tuning trials" + (f" ({s.trials})" if s.trials is not None else "")
    doc.h2("How to read this")
    doc.p(f"Every optimizer is tuned on every workload {effort}, so no optimizer gets more tuning effort "
          f"than another. The best configuration is then rerun on {len(s.seeds) or 'several'} seeds. The "
          "reported metric is the one at the end of training, after the learning rate has decayed to zero; "
          "tables show the mean ± standard deviation over the seeds that finished, best first. The target of "
          "a workload is tuned AdamW's median final metric; steps to target count the training steps until an "
          f"optimizer first reaches it ({MISSING} when it never does). {NOISE_MARK} after a mean marks an "
          "optimizer whose difference to AdamW is within seed noise. \"May be under-tuned\" marks a row whose "
          "best hyperparameter lies at the edge of the values tried: its optimum may lie outside the search, "
          "so its rank is not a verdict on the method. Timings are medians: ms/step is a whole training step, "
          "opt-step ms only the optimizer's update.")  # fmt: skip


def _describe(w: WorkloadResult) -> str:
    desc = [w.description.rstrip(".")] if w.description else []
    desc.append(f"metric: {w.metric} ({'higher' if w.higher_is_better else 'lower'} is better)")
    if w.steps is not None:
        desc.append(f"{w.steps} steps")
    desc.append(f"target: {fmt_num(w.target)}")
    return "; ".join(desc) + "."


def _final_cell(run: MethodRun, seeds_total: int) -> tuple[str, bool]:
    """The final-metric cell and whether it shows only some of the seeds."""
    if run.status == NOT_RUN:
        return NOT_RUN, False
    if not run.ok:
        return ("failed" if run.status == "failed" else f"failed ({run.status})"), False
    if run.mean is None:
        return MISSING, False
    cell = fmt_num(run.mean)
    if run.std is not None and not (run.n is not None and run.n < 2):
        cell += f" ± {fmt_num(run.std, 2)}"
    partial = run.n is not None and 0 < seeds_total and run.n < seeds_total
    if partial:
        cell += f" ({run.n}/{seeds_total} seeds)"
    return cell + (f" {NOISE_MARK}" if run.noise_mark else ""), partial


def _tuning_cell(run: MethodRun, note: int) -> str:
    t = run.tuned
    if t is None:
        return MISSING
    if t.under_tuned:
        return f"{UNDER_TUNED} (note {note})"
    parts = [] if t.trials is None else [f"{t.trials} of {t.budget} trials" if t.budget else f"{t.trials} trials"]
    return ", ".join(parts + (["converged"] if t.converged else [])) or "ok"


def _under_tuned_note(run: MethodRun, note: int) -> str:
    t = run.tuned
    tried = [f"{a.name} {fmt_num(a.values[0], 3)} to {fmt_num(a.values[-1], 3)} (best {fmt_num(a.best, 3)})"
             for name in t.edges if (a := t.axes.get(name)) is not None and a.values]  # fmt: skip
    return (f"Note {note}, {run.optimizer}: {', '.join(t.reasons())}" + (f"; tried {', '.join(tried)}" if tried else "")
            + ". Its optimum may lie outside the values tried.")  # fmt: skip


def _best_params(run: MethodRun) -> str:
    if run.best_params or run.tuned is None:
        return fmt_params(run.best_params)
    return fmt_params({a.name: a.best for a in run.tuned.axes.values() if a.best is not None})


def workload_table(results: Results, w: WorkloadResult) -> Table:
    """One row per optimizer, best first: final metric, tuning, cost and best hyperparameters."""
    tuning = any(r.tuned is not None for r in w.ranking)  # older files record no tuning: no column of dashes
    extra = ["Tuning"] if tuning else []
    columns = ["Optimizer", f"Final {w.metric} {'↑' if w.higher_is_better else '↓'} (mean ± std)", *extra,
               "Steps to target", "ms/step", "Opt-step ms", "State B/param", "Best hyperparameters"]  # fmt: skip
    rows, flagged, partial = [], [], False
    for run in w.ranking:
        final, some = _final_cell(run, len(results.settings.seeds))
        partial |= some
        if run.under_tuned:
            flagged.append(_under_tuned_note(run, len(flagged) + 1))
        cells = [_tuning_cell(run, len(flagged))] if tuning else []
        rows.append([run.optimizer, final, *cells, fmt_steps(run.steps_to_target), fmt_num(run.step_ms, 3),
                     fmt_num(run.opt_step_ms, 3), fmt_num(run.state_bytes_per_param, 3), _best_params(run)])  # fmt: skip
    notes = []
    if any(r.noise_mark for r in w.ranking if r.finished):
        notes.append(f"{NOISE_MARK}: the difference to AdamW's mean final {w.metric} is within seed noise (not "
                     "significant across the seeds). No mark: the difference is significant, for better or worse, "
                     "or was not tested (AdamW itself, failed runs, fewer than two seeds, no spread).")  # fmt: skip
    if partial:
        notes.append("(k/n seeds): only k of the n seeds finished; the others diverged or errored.")
    align = ["l", "r"] + ["l"] * len(extra) + ["r", "r", "r", "r", "l"]
    return Table(columns, rows, align, notes + flagged)


def _optimum(doc: Doc, results: Results) -> None:
    """Where the global optimum is certified: each optimizer's distance to it, the solver as reference."""
    known = [w for w in results.workloads.values() if w.optimum is not None and w.optimum.value is not None]
    if not known:
        return
    doc.h2("Distance to the global optimum")
    doc.p("On these workloads the global optimum of the training objective is known: a convex program over "
          "every hyperplane arrangement pattern of the data equals the network's nonconvex training problem "
          "(Pilanci & Ergen 2020; Bai et al. 2022), and its dual gives a certified lower bound. The gap is an "
          "optimizer's mean final objective minus that optimum; 0 is the best any method can do.")  # fmt: skip
    for w in known:
        opt = w.optimum
        doc.h3(w.name)
        rows = [[f"{opt.solver or 'certified optimum'} (reference)", fmt_num(opt.value, 8), "0", "0",
                 f"lower bound {fmt_num(opt.lower_bound, 8)}, width {opt.width if opt.width is not None else MISSING}, "
                 f"{fmt_num(opt.seconds, 3)} s"]]  # fmt: skip
        for run in w.ranking:
            if run.status == NOT_RUN:
                continue
            rows.append([run.optimizer, fmt_num(run.mean, 8), fmt_num(run.gap, 3), fmt_num(run.relative_gap, 3),
                         UNDER_TUNED if run.under_tuned else ""])  # fmt: skip
        doc.table(Table(["Method", f"Final {w.metric}", "Gap", "Relative gap", "Note"], rows,
                        ["l", "r", "r", "r", "l"]))  # fmt: skip


def _profiles(doc: Doc, results: Results, figure: bool) -> None:
    doc.h2("Performance profiles")
    prof = results.profiles
    names = prof.order(results.optimizers) if prof is not None else []
    if not names:
        doc.p("No performance profiles were computed.")
        return
    doc.p(f"ρ(τ) is the fraction of workloads on which an optimizer's cost ({prof.cost}) is within τ times "
          "the best optimizer's on that workload; ρ(1) is the fraction it wins, and a workload it never "
          "solves counts against it at every τ. Higher curves and scores are better.")  # fmt: skip
    lo = fmt_num(prof.taus[0], 3) if prof.taus else "1"
    hi = fmt_num(prof.taus[-1], 3) if prof.taus else MISSING
    rows = []
    for o in names:
        r = prof.rho.get(o, ())
        rows.append([o, fmt_num(prof.score.get(o), 3), fmt_num(r[0], 3) if r else MISSING,
                     fmt_num(r[-1], 3) if r else MISSING])  # fmt: skip
    doc.table(Table(["Optimizer", "Score", f"ρ(τ={lo})", f"ρ(τ={hi})"], rows, ["l", "r", "r", "r"]))
    if figure:
        doc.figure("profiles", "Performance profiles; the legend gives each optimizer's score.")


def _speedup(doc: Doc, results: Results, figure: bool) -> None:
    doc.h2("Speedup over AdamW")
    doc.p("Data-equivalent speedup: how many times more steps AdamW would need to match the optimizer's final "
          "loss, from a power-law fit of AdamW's loss at growing budgets. 1 means as good as AdamW.")  # fmt: skip
    entries = results.speedup
    if not entries:
        doc.p("No speedup estimate was made in this run.")
        return
    opts = list(results.optimizers)
    opts += [o for e in entries.values() for o in e.values if o not in opts]
    rows = [[o] + [fmt_speedup(e.values[o]) if o in e.values else MISSING for e in entries.values()]
            for o in dict.fromkeys(opts) if any(o in e.values for e in entries.values())]  # fmt: skip
    doc.table(Table(["Optimizer"] + list(entries), rows, ["l"] + ["r"] * len(entries),
                    ["Nx: the optimizer's final loss at budget T equals AdamW's at N·T (from the fit below); "
                     ">max: better than anything the AdamW fit reaches at any budget; n/a: not available "
                     "(failed run, or no usable fit)."]))  # fmt: skip
    items = []
    for w, e in entries.items():
        parts = []
        if e.budgets:
            parts.append(f"AdamW budgets {', '.join(fmt_steps(b) for b in e.budgets)} steps")
        if e.adamw_losses:
            parts.append(f"AdamW losses {', '.join(fmt_num(x, 4) for x in e.adamw_losses)}")
        if e.fit is not None:
            parts.append(f"fit L(T) = {fmt_num(e.fit['alpha'], 3)} · T^-{fmt_num(e.fit['exponent'], 3)} + "
                         f"{fmt_num(e.fit['beta'], 3)}")  # fmt: skip
        else:
            parts.append("no fit")
        if e.note:
            parts.append(f"note: {e.note}")
        items.append(f"{w}: " + "; ".join(parts))
    doc.ul(items)
    if figure:
        doc.figure("speedup", "Speedup over AdamW (dashed: 1, no speedup); hatched bars are beyond the fit "
                              "(>max) or not available (n/a).")  # fmt: skip


def _properties(doc: Doc, results: Results) -> None:
    doc.h2("Solution properties")
    rows_of = [(w.name, r) for w in results.workloads.values()
               if any(v is not None for r in w.ranking for v in r.properties.values()) for r in w.ranking]  # fmt: skip
    keys = list(dict.fromkeys(k for _, r in rows_of for k, v in r.properties.items() if v is not None))
    if not keys:
        doc.p("No solution properties were recorded.")
        return
    titles = list(_PROPERTY_TITLES)
    keys.sort(key=lambda k: (titles.index(k) if k in titles else len(titles), k))
    doc.p("Properties of the trained solutions, averaged over seeds: effective rank of the weight matrices, "
          "excess kurtosis of hidden activations, and the error on the tail of the data, where the workload "
          "defines them.")  # fmt: skip
    columns = ["Workload", "Optimizer"] + [_PROPERTY_TITLES.get(k, k.replace("_", " ").capitalize()) for k in keys]
    rows = [[w, r.optimizer] + [fmt_num(r.properties.get(k), 4) for k in keys] for w, r in rows_of]
    doc.table(Table(columns, rows, ["l", "l"] + ["r"] * len(keys)))


def _failures(results: Results) -> list[str]:
    items = []
    for w in results.workloads.values():
        for run in w.runs.values():
            if run.status == NOT_RUN:
                continue
            bad = [s for s in run.seeds if s.status != "ok"]
            if not run.ok:
                detail = ", ".join(f"seed {s.seed}: {s.status}" for s in bad)
                items.append(f"{run.optimizer} on {w.name}: {run.status}" + (f" ({detail})" if detail else ""))
            else:
                items += [f"{run.optimizer} on {w.name}, seed {s.seed}: {s.status}" for s in bad]
    return items
