"""Matrix-method speed: GEMM rate, Newton-Schulz efficiency, Muon/NorMuon vs torch.optim.Muon, SOAP, Conda.

    python benchmarks/matrix_speed.py --json runs/matrix_speed.json [--only muon,normuon,soap,conda] [--steps K]

Shape set (issue 4): 4 fp32 matrices of 1024x1024 and 2 of 1024x4096 (12,582,912 parameters), with
seeded random values and seeded random gradients that are set once and never change. Everything is
measured in one process, one after another:

1. GEMM rate. The matmul shapes the Newton-Schulz iteration performs on this shape set, one of each
   (`(m x n) @ (n x m)`, `(m x m) @ (m x m)`, `(m x m) @ (m x n)` for every distinct matrix shape
   `m x n` oriented with `m <= n`: here 1024x1024 @ 1024x1024, 1024x4096 @ 4096x1024 and
   1024x1024 @ 1024x4096), timed as one set in float32 and in bfloat16; rate = 2*m*k*n summed over
   the set / median set time (GFLOP = 1e9 floating-point operations).
2. Newton-Schulz (`optarena.rules.orthogonalize.newton_schulz`, 5 steps) on every gradient, in
   float32 and bfloat16. FLOPs of the 5 quintic iterations, counted exactly from the algorithm with
   X oriented to `m x n`, `m <= n`; per iteration
       A = X X^T            2 m^2 n
       c A                  m^2
       (c A) A              2 m^3
       B = b A + (c A) A    2 m^2       (add with alpha: a multiply and an add per element)
       B X                  2 m^2 n
       X = a X + B X        2 m n
   i.e. 4 m^2 n + 2 m^3 + 3 m^2 + 2 m n per iteration (the cast and the normalization before the
   loop are not counted). Achieved GFLOP/s = FLOPs / median time. Each pass over all matrices is
   preceded by a GEMM set of the same dtype, and `fraction_of_gemm` is the median over these rounds
   of (pass GFLOP/s / GEMM-set GFLOP/s) (target >= 0.8): this VM's speed moves with outside load.
   The same with `method="gram"` (keys `float32_gram`, `bfloat16_gram`): still counted with the
   standard iteration's FLOPs, so its rate is an effective one (it does about 60% of them here).
3. Muon: `optarena.Muon` with fused False/True, ns_dtype float32/bfloat16 and ns_method
   standard/gram, `optarena.NorMuon` in the same eight configurations, and `torch.optim.Muon` (lr 0.02 and momentum 0.95 as ours, its own
   defaults otherwise: weight_decay 0.1, nesterov, 5 steps; its iteration always runs in bfloat16),
   stepped round-robin (one step of each per round) so that bursts of outside load hit all alike.
   `ratio_vs_torch` is the median of per-round ratios ours/torch; NorMuon's `ratio_vs_muon` the
   median of per-round ratios against Muon in the same configuration.
4. SOAP (defaults; its first step only builds the preconditioner, with an eigendecomposition of
   each factor, and falls in the warm-up) and Conda (`update_proj_gap=200`: the SVD of the first
   step falls in the warm-up), `fused=True`, each on its own.

Every optimizer gets a fresh copy of the parameters, runs 2 warm-up steps (compilation happens there
and is reported as `warmup_s`) and then `--steps` timed `step()` calls (SOAP: `--soap-steps`);
figures are medians in ms. State bytes per parameter are measured after the run: the sum of `nbytes`
over the tensors in `opt.state[p]` divided by the number of parameters. The script exits 0 even when
a target is missed: it is a benchmark, not a test.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

import optarena

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import machine_info, round_robin, seeded_pairs, write_json  # noqa: E402
from optarena.rules.orthogonalize import NS_DTYPES, NS_METHODS, newton_schulz
from optarena.arena.train import state_bytes
from optarena.system import cpu_flags

MATRIX_METHODS = ("muon", "normuon", "soap", "conda")
# `--shapes small` is a hidden option for the smoke test (tests/test_matrix_speed_smoke.py).
SHAPES = {
    "issue4": [(1024, 1024)] * 4 + [(1024, 4096)] * 2,
    "small": [(32, 32)] * 2 + [(32, 64)],
}
WARMUP = 2
NS_STEPS = 5
LR, MOMENTUM = 0.02, 0.95
CONDA_GAP = 200
MUON_CONFIGS = [(fused, dtype, method) for method in NS_METHODS for fused in (False, True) for dtype in ("float32", "bfloat16")]
TARGETS = {
    "ns.float32.fraction_of_gemm": (">=", 0.8),
    "ns.bfloat16.fraction_of_gemm": (">=", 0.8),
    "muon.best.ratio_vs_torch": ("<=", 0.75),
    "normuon.same_config.ratio_vs_muon": ("<=", 1.1),
}


def with_method(name: str, method: str) -> str:
    """`name`, suffixed with the Newton-Schulz method unless it is the reference's (standard)."""
    return name if method == "standard" else f"{name}_{method}"


def config_name(fused: bool, dtype: str, method: str = "standard") -> str:
    return with_method(f"{'fused' if fused else 'eager'}_{dtype}", method)


def oriented(shape) -> tuple[int, int]:
    return (min(shape), max(shape))


def ns_flops(shape, steps: int = NS_STEPS) -> int:
    """Exact FLOPs of `steps` quintic iterations on an m x n matrix (m <= n after orientation)."""
    m, n = oriented(shape)
    return steps * (4 * m * m * n + 2 * m**3 + 3 * m * m + 2 * m * n)


def gemm_set(shapes) -> list[tuple[int, int, int]]:
    """(m, k, n) of the distinct matmuls Newton-Schulz performs on these shapes."""
    out = []
    for m, n in sorted({oriented(s) for s in shapes}):
        for mkn in ((m, n, m), (m, m, m), (m, m, n)):
            if mkn not in out:
                out.append(mkn)
    return out


def measure_gemm(shapes, dtype: torch.dtype, warmup: int, reps: int) -> dict:
    gen = torch.Generator().manual_seed(1)
    mats = [(torch.randn(m, k, generator=gen).to(dtype), torch.randn(k, n, generator=gen).to(dtype))
            for m, k, n in gemm_set(shapes)]  # fmt: skip
    flops = sum(2 * a.shape[0] * a.shape[1] * b.shape[1] for a, b in mats)
    times = []
    for i in range(warmup + reps):
        start = time.perf_counter()
        for a, b in mats:
            torch.mm(a, b)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    ms = statistics.median(times) * 1e3
    return {"set": [list(mkn) for mkn in gemm_set(shapes)], "flops": flops, "ms": ms,
            "gflops": flops / (ms * 1e-3) / 1e9, "times_ms": [round(t * 1e3, 3) for t in times]}  # fmt: skip


def measure_ns(master, dtype_name: str, gemm_gflops: float, warmup: int, reps: int, method: str = "standard") -> dict:
    dtype = NS_DTYPES[dtype_name]
    grads = [g for _, g in master]
    per_shape: dict[tuple, list[float]] = {}
    set_times = []
    for i in range(warmup + reps):
        total = 0.0
        for g in grads:
            start = time.perf_counter()
            newton_schulz(g, NS_STEPS, dtype, method)
            t = time.perf_counter() - start
            total += t
            if i >= warmup:
                per_shape.setdefault(tuple(g.shape), []).append(t)
        if i >= warmup:
            set_times.append(total)
    flops = sum(ns_flops(g.shape) for g in grads)
    ms = statistics.median(set_times) * 1e3
    gflops = flops / (ms * 1e-3) / 1e9
    shapes = {}
    for shape, ts in per_shape.items():
        shape_ms = statistics.median(ts) * 1e3
        shapes["x".join(map(str, shape))] = {
            "count": sum(1 for g in grads if tuple(g.shape) == shape),
            "flops": ns_flops(shape),
            "ms": shape_ms,
            "gflops": ns_flops(shape) / (shape_ms * 1e-3) / 1e9,
        }
    return {"flops": flops, "ms": ms, "gflops": gflops, "fraction_of_gemm": gflops / gemm_gflops,
            "per_shape": shapes, "times_ms": [round(t * 1e3, 3) for t in set_times]}  # fmt: skip


def measure_ns_paired(master, shapes, dtype_name: str, reps: int, method: str = "standard") -> dict:
    """Newton-Schulz passes alternating with GEMM sets of the same dtype: the machine's speed moves
    with outside load, so `fraction_of_gemm` is the median of per-round ratios. For `method="gram"`
    the FLOPs are still the standard iteration's: its rate is an effective one (it does fewer)."""
    ns_runs, gemm_runs = [], []
    for i in range(reps):
        gemm_runs.append(measure_gemm(shapes, NS_DTYPES[dtype_name], 1 if i == 0 else 0, 1))
        ns_runs.append(measure_ns(master, dtype_name, gemm_runs[-1]["gflops"], 1 if i == 0 else 0, 1, method))
    out = measure_ns_summary(ns_runs)
    out["fraction_of_gemm"] = statistics.median(r["fraction_of_gemm"] for r in ns_runs)
    out["paired_gemm_gflops"] = statistics.median(r["gflops"] for r in gemm_runs)
    out["fraction_of_gemm_times"] = [round(r["fraction_of_gemm"], 4) for r in ns_runs]
    return out


def measure_ns_summary(runs: list[dict]) -> dict:
    ms = statistics.median(r["ms"] for r in runs)
    flops = runs[0]["flops"]
    shapes = {}
    for key, first in runs[0]["per_shape"].items():
        shape_ms = statistics.median(r["per_shape"][key]["ms"] for r in runs)
        shapes[key] = {**first, "ms": shape_ms, "gflops": first["flops"] / (shape_ms * 1e-3) / 1e9}
    return {"flops": flops, "ms": ms, "gflops": flops / (ms * 1e-3) / 1e9, "per_shape": shapes,
            "times_ms": [round(r["ms"], 3) for r in runs]}  # fmt: skip


def measure(master, builders: dict, warmup: int, steps: int, progress: bool = True) -> dict:
    """`round_robin`, then state bytes and the median step time of each run."""
    runs = round_robin(master, builders, warmup, steps, progress)
    n = sum(v.numel() for v, _ in master)
    for run in runs.values():
        opt, params = run.pop("opt"), run.pop("params")
        run["state_bytes"] = state_bytes(opt)
        run["state_bytes_per_param"] = run["state_bytes"] / n
        run["ms_per_step"] = statistics.median(run["times_ms"])
        run["times_ms"] = [round(t, 3) for t in run["times_ms"]]
        if not all(torch.isfinite(p).all() for p in params):
            run["nonfinite_params"] = True
    return runs


def paired_ratio(ours: list[float], theirs: list[float]) -> float:
    return statistics.median(a / b for a, b in zip(ours, theirs))


def matmul_flags() -> list[str]:
    """The CPU features that decide the GEMM rates here."""
    return [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in cpu_flags()]


def target(value: float | None, key: str, note: str) -> dict:
    op, threshold = TARGETS[key]
    passed = None if value is None else (value <= threshold if op == "<=" else value >= threshold)
    return {"value": value, "op": op, "threshold": threshold, "pass": passed, "note": note}


def evaluate_targets(result: dict) -> dict:
    out = {}
    for dtype, r in result["newton_schulz"].items():
        if f"ns.{dtype}.fraction_of_gemm" not in TARGETS:  # the gram method's effective rates
            continue
        out[f"ns.{dtype}.fraction_of_gemm"] = target(r["fraction_of_gemm"], f"ns.{dtype}.fraction_of_gemm",
                                                    f"Newton-Schulz {dtype} GFLOP/s over the {dtype} GEMM rate")
    muon = result["optimizers"].get("muon")
    if muon:
        best = min(muon["configs"], key=lambda c: muon["configs"][c]["ratio_vs_torch"])
        muon["best_config"] = best
        out["muon.best.ratio_vs_torch"] = target(muon["configs"][best]["ratio_vs_torch"], "muon.best.ratio_vs_torch",
                                                 f"optarena.Muon {best} / torch.optim.Muon, paired per round")
        normuon = result["optimizers"].get("normuon")
        if normuon and best in normuon["configs"]:
            out["normuon.same_config.ratio_vs_muon"] = target(
                normuon["configs"][best]["ratio_vs_muon"], "normuon.same_config.ratio_vs_muon",
                f"NorMuon / Muon, both {best}, paired per round")
    return out


def print_report(result: dict) -> None:
    m = result["machine"]
    print(f"\n{result['params']:,} fp32 params as {result['shapes_desc']}; torch {m['torch']}, {m['threads']} threads, "
          f"{m['cpu']}; load {m['loadavg_start']:.2f} -> {m['loadavg_end']:.2f}")
    print("\nGEMM rate (NS matmul set):")
    for dtype, g in result["gemm"].items():
        print(f"  {dtype:<9} {g['gflops']:8.1f} GFLOP/s  ({g['flops'] / 1e9:.2f} GFLOP in {g['ms']:.1f} ms)")
    if result["newton_schulz"]:
        print("\nNewton-Schulz, 5 iterations on every matrix:")
        for dtype, r in result["newton_schulz"].items():
            shapes = ", ".join(f"{k}: {v['ms']:.0f} ms {v['gflops']:.0f} GFLOP/s" for k, v in r["per_shape"].items())
            print(f"  {dtype:<9} {r['ms']:8.1f} ms  {r['gflops']:7.1f} GFLOP/s  {r['fraction_of_gemm']:.2f} of GEMM  "
                  f"({r['flops'] / 1e9:.1f} GFLOP; {shapes})")
    cols = ("optimizer", "config", "ms/step", "ratio", "  vs", "B/param", "warm-up s")
    widths = (18, 18, 10, 7, 22, 9, 10)

    def line(values):
        return "".join(f"{v:<{w}}" if i < 2 or i == 4 else f"{v:>{w}}" for i, (v, w) in
                       enumerate(zip(values, widths)))  # fmt: skip

    print("\n" + line(cols))
    print("-" * sum(widths))
    for name, r in result["optimizers"].items():
        for cfg, c in r.get("configs", {r.get("config", "defaults"): r}).items():
            ratio, vs = "", ""
            if "ratio_vs_torch" in c:
                ratio, vs = f"{c['ratio_vs_torch']:.2f}", "  torch.optim.Muon"
            elif "ratio_vs_muon" in c:
                ratio, vs = f"{c['ratio_vs_muon']:.2f}", f"  muon {cfg}"
            print(line((r.get("label", name), cfg, f"{c['ms_per_step']:.1f}", ratio, vs,
                        f"{c['state_bytes_per_param']:.3f}", f"{c['warmup_s']:.1f}")))  # fmt: skip
    print("ratio = median of per-round time ratios (round-robin); warm-up s: 2 steps, compilation included")
    for note in result["notes"]:
        print(f"note: {note}")
    print("\ntargets:")
    for key, t in result["targets"].items():
        verdict = "n/a" if t["pass"] is None else ("PASS" if t["pass"] else "FAIL")
        print(f"  {key} {t['op']} {t['threshold']}: {t['value']:.3f}  {verdict}  ({t['note']})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--json", required=True, help="where to write the results")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(MATRIX_METHODS)} (default: all)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per optimizer (>= 5)")
    parser.add_argument("--soap-steps", type=int, default=5, help="timed SOAP steps (>= 1; SOAP is slow)")
    parser.add_argument("--ns-reps", type=int, default=5, help="timed Newton-Schulz passes per dtype")
    parser.add_argument("--gemm-reps", type=int, default=7, help="timed GEMM sets per dtype")
    parser.add_argument("--shapes", choices=sorted(SHAPES), default="issue4", help=argparse.SUPPRESS)
    # Hidden, for the smoke test: skip every fused (compiled) configuration.
    parser.add_argument("--eager-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    small = args.shapes != "issue4"
    if args.steps < 5 and not small:
        parser.error("--steps must be at least 5")
    if min(args.steps, args.soap_steps, args.ns_reps, args.gemm_reps) < 1:
        parser.error("step and repetition counts must be at least 1")
    names = list(MATRIX_METHODS) if not args.only else [n.strip().lower() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(names) - set(MATRIX_METHODS))
    if unknown:
        parser.error(f"unknown matrix method(s) {unknown}; choose from {MATRIX_METHODS}")

    load_start = os.getloadavg()[0]
    shapes = SHAPES[args.shapes]
    master = seeded_pairs(shapes)
    n = sum(v.numel() for v, _ in master)
    desc = " + ".join(f"{shapes.count(s)} x {s[0]}x{s[1]}" for s in dict.fromkeys(shapes))
    notes = []

    print("GEMM rate: float32, bfloat16 ...", flush=True)
    gemm = {d: measure_gemm(shapes, NS_DTYPES[d], 2, args.gemm_reps) for d in ("float32", "bfloat16")}
    ns = {}
    if {"muon", "normuon"} & set(names):
        print("Newton-Schulz: float32, bfloat16, standard and gram, each pass paired with a GEMM set ...", flush=True)
        ns = {with_method(d, m): measure_ns_paired(master, shapes, d, args.ns_reps, m)
              for m in NS_METHODS for d in ("float32", "bfloat16")}

    rows = {}
    builders = {}
    mode = "eager" if args.eager_only else "fused"
    configs = [(f, d, m) for f, d, m in MUON_CONFIGS if not (f and args.eager_only)]
    if "muon" in names:
        builders["torch"] = lambda ps: torch.optim.Muon(ps, lr=LR, momentum=MOMENTUM)
        for fused, dtype, method in configs:
            builders[("muon", fused, dtype, method)] = (lambda ps, f=fused, d=dtype, m=method: optarena.Muon(
                ps, lr=LR, momentum=MOMENTUM, fused=f, ns_dtype=d, ns_method=m))
    if "normuon" in names:
        for fused, dtype, method in configs:
            builders[("normuon", fused, dtype, method)] = (lambda ps, f=fused, d=dtype, m=method: optarena.NorMuon(
                ps, lr=LR, momentum=MOMENTUM, fused=f, ns_dtype=d, ns_method=m))
    if builders:
        print(f"Muon/NorMuon round-robin ({len(builders)} optimizers, {args.steps} rounds) ...", flush=True)
        runs = measure(master, {str(k): b for k, b in builders.items()}, WARMUP, args.steps)
        if "muon" in names:
            t = runs[str("torch")]
            rows["torch_muon"] = {"label": "torch.optim.Muon", **t}
            notes.append("torch.optim.Muon: lr 0.02, momentum 0.95, its defaults otherwise (weight_decay 0.1, "
                         "nesterov, 5 NS steps, NS always in bfloat16)")
        for name in ("muon", "normuon"):
            if name not in names:
                continue
            per_config = {}
            for fused, dtype, method in configs:
                r = runs[str((name, fused, dtype, method))]
                if name == "muon":
                    r["ratio_vs_torch"] = paired_ratio(r["times_ms"], runs["torch"]["times_ms"])
                elif "muon" in names:
                    r["ratio_vs_muon"] = paired_ratio(r["times_ms"], runs[str(("muon", fused, dtype, method))]["times_ms"])
                per_config[config_name(fused, dtype, method)] = r
            rows[name] = {"label": f"optarena.{'Muon' if name == 'muon' else 'NorMuon'}", "configs": per_config}
    if "soap" in names:
        print(f"SOAP ({args.soap_steps} timed steps) ...", flush=True)
        rows["soap"] = {"label": "optarena.SOAP", "config": f"{mode}, defaults", **measure(
            master, {"soap": lambda ps: optarena.create("soap", ps, fused=not args.eager_only)}, WARMUP, args.soap_steps)["soap"]}
        notes.append(f"SOAP: {args.soap_steps} timed steps; the first step (eigh of each factor, no update) is "
                     f"in the warm-up, and the QR basis refresh (every 10 updates) falls outside the timed window")
    if "conda" in names:
        print(f"Conda ({args.steps} timed steps) ...", flush=True)
        rows["conda"] = {"label": "optarena.Conda", "config": f"{mode}, gap={CONDA_GAP}", **measure(
            master, {"conda": lambda ps: optarena.create("conda", ps, fused=not args.eager_only, update_proj_gap=CONDA_GAP)},
            WARMUP, args.steps)["conda"]}  # fmt: skip
        notes.append(f"Conda: update_proj_gap={CONDA_GAP}; the SVD of step 1 is in the warm-up")

    result = {
        "machine": machine_info(load_start, cpu_flags=matmul_flags()),
        "shapes": [list(s) for s in shapes],
        "shapes_desc": desc,
        "params": n,
        "warmup_steps": WARMUP,
        "steps": args.steps,
        "soap_steps": args.soap_steps,
        "gemm": gemm,
        "newton_schulz": ns,
        "optimizers": rows,
        "notes": notes,
    }
    result["targets"] = evaluate_targets(result)
    write_json(args.json, result)
    print_report(result)
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
