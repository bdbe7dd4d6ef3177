"""Pieces the benchmark scripts share: seeded parameters with fixed gradients, what the machine is, atomic JSON."""
from __future__ import annotations

import json
import os
import platform
from datetime import datetime, timezone
import tempfile
import time

import torch

from optarena.system import cpu_name


def seeded_pairs(shapes, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(value, gradient) fp32 pairs of the given shapes, seeded."""
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(s, generator=gen), torch.randn(s, generator=gen)) for s in shapes]


def fresh_params(master) -> list[torch.Tensor]:
    """A private copy of the parameters with their (fixed) gradients attached."""
    params = []
    for value, grad in master:
        p = value.clone().requires_grad_(True)
        p.grad = grad.clone()
        params.append(p)
    return params


def round_robin(master, builders: dict, warmup: int, steps: int, progress: bool = False) -> dict:
    """Time several optimizers round-robin (one step of each per round), so that load from other
    processes hits them alike; each gets its own parameter copy and is warmed up first.

    Returns, per builder key, `opt`, `params`, `warmup_s` (compilation included) and `times_ms`.
    """
    runs = {}
    for key, build in builders.items():
        params = fresh_params(master)
        opt = build(params)
        start = time.perf_counter()
        for _ in range(warmup):
            opt.step()
        runs[key] = {"opt": opt, "params": params, "warmup_s": time.perf_counter() - start, "times_ms": []}
        if progress:
            print(f"  {key}: warm-up {runs[key]['warmup_s']:.1f} s", flush=True)
    for _ in range(steps):
        for run in runs.values():
            start = time.perf_counter()
            run["opt"].step()
            run["times_ms"].append((time.perf_counter() - start) * 1e3)
    return runs


def machine_info(load_start: float, **extra) -> dict:
    """What the figures were measured on, with the 1-minute load average at the start and end
    (other processes on the machine make timings noisy)."""
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": cpu_name(),
        **extra,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "loadavg_start": load_start,
        "loadavg_end": os.getloadavg()[0],
    }


def write_json(path: str, data: dict) -> None:
    """Write atomically: a temporary file in the same directory, then os.replace."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
