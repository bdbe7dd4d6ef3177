"""Native kernels in C, built with the system's C compiler on first use and loaded with ctypes.

* `codec8.c`: the 8-bit codec, bit-exact with the torch implementation in `quantize.py` (tests
  compare them), 5-10x faster on CPU: one pass per block instead of a dozen tensor-wide ops.
* `adamp.c`: AdamP's and SGDP's fused step for float32 CPU tensors (`rules/adamp.py`): two passes
  over memory (moments and row sums, then the projected update) where inductor emits three.
* `diffgrad.c`: diffGrad's fused step for float32 CPU tensors (`rules/diffgrad.py`): one pass, with
  a vectorizable exp for its sigmoid.
* `lion.c`: Lion's fused step for float32 CPU tensors (`rules/lion.py`): one pass.

Each library is built once per source, compiler flags and CPU (their hash is in the file name) into
`$OPTARENA_CACHE` (default `~/.cache/optarena`), atomically, so concurrent processes are safe.
Without a compiler (or with `OPTARENA_NATIVE=0`) `load()` returns None and the torch path runs.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from ..system import cpu_flags, cpu_name

_P, _I64, _I32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
# Per library (the C file next to this one, without `.c`): each function's (argtypes, restype).
SIGNATURES: dict[str, dict[str, tuple[list, type | None]]] = {
    "codec8": {
        "optarena_decode": ([_P, _P, _P, _P, _I64, _I32], None),
        "optarena_encode": ([_P, _P, _P, _P, _I64, _I32], None),
    },
    "adamp": {
        # p, g, exp_avg, exp_avg_sq, rows, cols, scalars (double[10]), flags, threads -> view or -1
        "optarena_adamp_step": ([_P, _P, _P, _P, _I64, _I64, _P, _I32, _I32], ctypes.c_int),
        # p, g, momentum_buffer, rows, cols, scalars (double[10]), flags, threads -> view or -1
        "optarena_sgdp_step": ([_P, _P, _P, _I64, _I64, _P, _I32, _I32], ctypes.c_int),
    },
    "diffgrad": {
        # p, g, exp_avg, exp_avg_sq, previous_grad, numel, scalars (double[7]), flags, threads
        "optarena_diffgrad_step": ([_P, _P, _P, _P, _P, _I64, _P, _I32, _I32], None),
    },
    "lion": {
        # p, g, exp_avg, numel, scalars (double[6]), threads
        "optarena_lion_step": ([_P, _P, _P, _I64, _P, _I32], None),
    },
}


def takes(p, *others) -> bool:
    """Whether the C kernels take these tensors: non-empty, contiguous, float32, on CPU, one shape."""
    return p.numel() > 0 and all(
        t.device.type == "cpu" and t.dtype == torch.float32 and t.shape == p.shape and t.is_contiguous()
        for t in (p, *others)
    )


def run_step(library: str, function: str, p, g, state, sizes, scalars, *flags) -> bool:
    """Run a C fused step: `function` of `library` on the pointers of `p`, `g` and the `state`
    tensors (in that order), then `sizes`, `scalars` (a double array), `flags` and torch's thread
    count. False, with nothing done, where the kernels do not take these tensors (`takes`), the
    library cannot be built, or the function declines (a negative int result: e.g. out of memory
    before anything was written); the caller's compiled path then runs. True after marking `p` and
    the state as written (they change behind autograd's back)."""
    if not takes(p, g, *state) or (lib := load(library)) is None:
        return False
    values = (ctypes.c_double * len(scalars))(*scalars)
    result = getattr(lib, function)(
        *(t.data_ptr() for t in (p, g, *state)), *sizes, values, *flags, torch.get_num_threads()
    )
    if isinstance(result, int) and result < 0:
        return False
    torch.autograd.graph.increment_version([p, *state])
    return True


def _source(name: str) -> Path:
    return Path(__file__).with_name(f"{name}.c")


def _cache_dir() -> Path:
    return Path(os.environ.get("OPTARENA_CACHE") or Path.home() / ".cache" / "optarena")


FLAGS = ["-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-shared", "-fPIC"]


def _cpu() -> bytes:
    """What `-march=native` compiles for: the CPU's model and feature flags. Part of the cache key,
    so a cache shared between machines (an NFS home) never hands one CPU a library built for
    another's instructions."""
    return " ".join([cpu_name(), *sorted(cpu_flags())]).encode()


def _build(source: Path, target: Path) -> bool:
    compiler = shutil.which(os.environ.get("CC", "gcc")) or shutil.which("cc")
    if compiler is None:
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".so")
    os.close(fd)
    cmd = [compiler, *FLAGS, str(source), "-o", tmp]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            return False
        os.replace(tmp, target)
        return True
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@functools.lru_cache(maxsize=None)
def load(name: str = "codec8") -> ctypes.CDLL | None:
    """The library built from `<name>.c` (one of `SIGNATURES`), its functions typed, or None where
    it cannot be built (the torch path then runs)."""
    source = _source(name)
    if os.environ.get("OPTARENA_NATIVE", "1") == "0" or sys.platform == "win32" or not source.exists():
        return None
    key = [source.read_bytes(), os.uname().machine.encode(), " ".join(FLAGS).encode(), _cpu()]
    digest = hashlib.sha256(b"\0".join(key)).hexdigest()[:16]
    target = _cache_dir() / f"{name}-{digest}.so"
    if not target.exists() and not _build(source, target):
        return None
    try:
        lib = ctypes.CDLL(str(target))
    except OSError:
        return None
    for function, (argtypes, restype) in SIGNATURES[name].items():
        getattr(lib, function).argtypes = argtypes
        getattr(lib, function).restype = restype
    return lib
