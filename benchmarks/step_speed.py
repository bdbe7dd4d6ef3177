"""Optimizer step speed: every registered optimizer against torch.optim.AdamW(fused=True).

    python benchmarks/step_speed.py --json runs/step_speed.json [--only adamw,lion] [--params N] [--steps K]

N fp32 parameters are split into 20 equal tensors (1000x1000 each for the default 20M; 2-D where
N/20 factors, else 1-D), with seeded random values and seeded random gradients that are set once
and never change. Each optimizer gets a fresh copy of the parameters and is built at its default
hyperparameters; it runs warm-up steps (compilation happens there and is reported separately
as `compile_s`), then times single `step()` calls and reports the median in ms.

Per optimizer, three variants are timed:

* `ms_per_step`: `fused=True, nonfinite="propagate"`, like-for-like with torch's fused kernel
  (which checks nothing);
* `ms_per_step_checked`: `fused=True` with the default `nonfinite="raise"` (the non-finite check
  costs one extra read of all gradients);
* `ms_per_step_eager`: `fused=False, nonfinite="propagate"`, the eager reference path.

Byte model (effective bandwidth = bytes / median step time, GB = 1e9 bytes):

    bytes per step = 2 * param bytes   (parameters read and written)
                   + 1 * grad bytes    (gradients read)
                   + 2 * state bytes   (every state tensor read and written)

State bytes are measured after warm-up as the sum of `nbytes` over the tensors in
`opt.state[p].values()` for all parameters (so a 0-d step tensor counts, a Python int does not).
The same model is applied to torch's baseline. It is a lower bound on real traffic: temporaries the
kernel may spill and the non-finite check's extra gradient read are not counted.

Timing is round-robin: the fused, the checked and a torch baseline optimizer each take one step
per round, so that bursts of load from other processes hit all three alike. The ratios of an
optimizer are medians of per-round ratios against the baseline steps interleaved with its own
(time ratio = ours / torch; bandwidth ratio = (our bytes / torch bytes) / time ratio, i.e. ours
GB/s over torch GB/s); `torch_ms_per_step_paired` is the median of those baseline steps, and the
baseline's reported `ms_per_step` the median of all its timed steps. Eager runs alone.
The script exits 0 even when a target is missed: it is a benchmark, not a test.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys

import torch

import optarena
from optarena.arena.train import state_bytes

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import machine_info, round_robin, seeded_pairs, write_json  # noqa: E402

N_TENSORS = 20
WARMUP = 3
EAGER_STEPS = 3
# Matrix methods do matmuls or decompositions per step (seconds at 20 x 1000x1000): they are not
# bandwidth-bound and get their own shape set and GEMM-rate benchmark (issue 4); name them with --only.
MATRIX_METHODS = ("muon", "normuon", "soap", "conda")
# (optimizer, metric, comparison, threshold) from the issues (2: the foundation, 3: elementwise methods).
TARGETS = [
    ("adamw", "ratio_vs_torch_fused_adamw", "<=", 1.1),
    ("lion", "bandwidth_ratio_vs_torch_fused_adamw", ">=", 0.8),
    ("adan", "bandwidth_ratio_vs_torch_fused_adamw", ">=", 0.8),
    ("diffgrad", "bandwidth_ratio_vs_torch_fused_adamw", ">=", 0.8),
    ("adamp", "bandwidth_ratio_vs_torch_fused_adamw", ">=", 0.6),
    ("sgdp", "bandwidth_ratio_vs_torch_fused_adamw", ">=", 0.6),
]


def tensor_shape(numel: int) -> tuple[int, ...]:
    """The most square 2-D shape with `numel` elements, or 1-D when numel is prime."""
    rows = max(d for d in range(1, math.isqrt(numel) + 1) if numel % d == 0)
    return (rows, numel // rows) if rows > 1 else (numel,)


def make_master(n: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """20 (value, gradient) pairs of equal fp32 tensors, seeded."""
    if n < N_TENSORS or n % N_TENSORS:
        raise SystemExit(f"--params must be a positive multiple of {N_TENSORS}, got {n}")
    shape = tensor_shape(n // N_TENSORS)
    return seeded_pairs([shape] * N_TENSORS, seed)


def byte_model(opt: torch.optim.Optimizer, params: list[torch.Tensor]) -> tuple[int, int]:
    """(bytes moved per step, state bytes) under the documented model."""
    param_bytes = sum(p.nbytes for p in params)
    grad_bytes = sum(p.grad.nbytes for p in params)
    state = state_bytes(opt)
    return 2 * param_bytes + grad_bytes + 2 * state, state


def measure(master, builders: dict, warmup: int, steps: int) -> dict:
    """`round_robin`, then the byte model and the median step time of each run."""
    runs = round_robin(master, builders, warmup, steps)
    for run in runs.values():
        run["bytes"], run["state_bytes"] = byte_model(run.pop("opt"), run.pop("params"))
        run["ms"] = statistics.median(run["times_ms"])
    return runs


def gbps(nbytes: int, ms: float) -> float:
    return nbytes / (ms * 1e-3) / 1e9


def evaluate_targets(optimizers: dict) -> dict:
    out = {}
    for name, metric, op, threshold in TARGETS:
        if name not in optimizers:
            continue
        value = optimizers[name][metric]
        passed = value <= threshold if op == "<=" else value >= threshold
        out[f"{name}.{metric}"] = {"value": value, "op": op, "threshold": threshold, "pass": passed}
    return out


def print_report(result: dict) -> None:
    base, machine = result["baseline"], result["machine"]
    print(f"\n{result['params']:,} fp32 params in {N_TENSORS} tensors; torch {machine['torch']}, "
          f"{machine['threads']} threads, {machine['cpu']}; load {machine['loadavg_start']:.2f} -> "
          f"{machine['loadavg_end']:.2f}")
    cols = ("optimizer", "ms/step", "GB/s", "torch ms", "time x", "bw x", "B/param", "checked", "eager", "warm-up s")
    widths = (18, 9, 8, 9, 8, 7, 8, 9, 9, 10)

    def line(values):
        return f"{values[0]:<{widths[0]}}" + "".join(f"{v:>{w}}" for v, w in zip(values[1:], widths[1:]))

    print(line(cols))
    print("-" * sum(widths))
    print(line(("torch AdamW fused", f"{base['ms_per_step']:.2f}", f"{base['gbps']:.1f}", "", "1.00", "1.00",
                f"{base['state_bytes_per_param']:.1f}", "", "", f"{base['warmup_s']:.1f}")))
    for name, r in result["optimizers"].items():
        print(line((name, f"{r['ms_per_step']:.2f}", f"{r['gbps']:.1f}", f"{r['torch_ms_per_step_paired']:.2f}",
                    f"{r['ratio_vs_torch_fused_adamw']:.2f}", f"{r['bandwidth_ratio_vs_torch_fused_adamw']:.2f}",
                    f"{r['state_bytes_per_param']:.1f}", f"{r['ms_per_step_checked']:.2f}",
                    f"{r['ms_per_step_eager']:.2f}", f"{r['compile_s']:.1f}")))
    print("torch ms = torch's steps interleaved with this optimizer's; time x = ours/torch time; bw x = ours/torch\n"
          "GB/s; checked = nonfinite='raise'; eager = fused=False; warm-up s includes compilation")
    print("\ntargets:")
    for key, t in result["targets"].items():
        print(f"  {key} {t['op']} {t['threshold']}: {t['value']:.3f}  {'PASS' if t['pass'] else 'FAIL'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--json", required=True, help="where to write the results")
    parser.add_argument(
        "--only", help="comma-separated optimizer names (default: all registered but the matrix methods)"
    )
    parser.add_argument("--params", type=int, default=20_000_000, help="number of fp32 parameters")
    parser.add_argument("--steps", type=int, default=9, help="timed steps per measurement (>= 7)")
    parser.add_argument("--eager-steps", type=int, default=EAGER_STEPS, help="timed steps for the eager path")
    args = parser.parse_args(argv)
    if args.steps < 7:
        parser.error("--steps must be at least 7")
    if args.eager_steps < 1:
        parser.error("--eager-steps must be at least 1")
    default = [n for n in optarena.available() if n not in MATRIX_METHODS]
    names = default if not args.only else [n.strip().lower() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(names) - set(optarena.available()))
    if unknown:
        parser.error(f"unknown optimizer(s) {unknown}; available: {optarena.available()}")

    load_start = os.getloadavg()[0]
    master = make_master(args.params)
    n = sum(v.numel() for v, _ in master)
    torch_adamw = lambda ps: torch.optim.AdamW(ps, fused=True)  # noqa: E731
    print("baseline: torch.optim.AdamW(fused=True) ...", flush=True)
    base = measure(master, {"torch": torch_adamw}, WARMUP, args.steps)["torch"]
    base_samples = list(base["times_ms"])

    rows = {}
    for name in names:
        print(f"{name}: fused (compiles on first use), fused + non-finite check, eager ...", flush=True)
        runs = measure(master, {
            "fused": lambda ps: optarena.create(name, ps, fused=True, nonfinite="propagate"),
            "checked": lambda ps: optarena.create(name, ps, fused=True),
            "torch": torch_adamw,
        }, WARMUP, args.steps)  # fmt: skip
        eager = measure(master, {"eager": lambda ps: optarena.create(name, ps, nonfinite="propagate")},
                        1, args.eager_steps)["eager"]
        base_samples += runs["torch"]["times_ms"]
        fused, paired = runs["fused"], runs["torch"]
        # Median of per-round time ratios: a burst of outside load that slows one round slows both.
        ratio = statistics.median(ours / theirs for ours, theirs in zip(fused["times_ms"], paired["times_ms"]))
        rows[name] = {
            "ms_per_step": fused["ms"],
            "gbps": gbps(fused["bytes"], fused["ms"]),
            "ratio_vs_torch_fused_adamw": ratio,
            "bandwidth_ratio_vs_torch_fused_adamw": fused["bytes"] / paired["bytes"] / ratio,
            "torch_ms_per_step_paired": paired["ms"],
            "bytes_per_step": fused["bytes"],
            "state_bytes_per_param": fused["state_bytes"] / n,
            "ms_per_step_checked": runs["checked"]["ms"],
            "ms_per_step_eager": eager["ms"],
            "compile_s": fused["warmup_s"],
            "times_ms": [round(t, 3) for t in fused["times_ms"]],
            "checked_times_ms": [round(t, 3) for t in runs["checked"]["times_ms"]],
        }

    base_ms = statistics.median(base_samples)
    result = {
        "machine": machine_info(load_start),
        "params": n,
        "tensors": N_TENSORS,
        "steps": args.steps,
        "eager_steps": args.eager_steps,
        "baseline": {
            "name": "torch.optim.AdamW(fused=True)",
            "ms_per_step": base_ms,
            "gbps": gbps(base["bytes"], base_ms),
            "bytes_per_step": base["bytes"],
            "state_bytes_per_param": base["state_bytes"] / n,
            "warmup_s": base["warmup_s"],
            "timed_steps": len(base_samples),
        },
        "optimizers": rows,
    }
    result["targets"] = evaluate_targets(result["optimizers"])
    write_json(args.json, result)
    print_report(result)
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
