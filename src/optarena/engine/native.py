"""Native kernels in C, built with the system's C compiler on first use and loaded with ctypes.

* `codec8.c`: the 8-bit codec, bit-exact with the torch implementation in `quantize.py` (tests
  compare them), 5-10x faster on CPU: one pass per block instead of a dozen tensor-wide ops.
* `adamp.c`: AdamP's and SGDP's fused step for float32 CPU tensors (`rules/adamp.py`): two passes
  over memory (moments and row sums, then the projected update) where inductor emits three.
* `diffgrad.c`: diffGrad's fused step for float32 CPU tensors (`rules/diffgrad.py`): one pass, with
  a vectorizable exp for its sigmoid.
* `lion.c`: Lion's fused step for float32 CPU tensors (`rules/lion.py`): one pass.

Each fused step's entry point has one spec here, a `Kernel` (`ADAMP`, `SGDP`, `DIFFGRAD`, `LION`):
its tensors, sizes and the names of its scalars in the C order, from which its ctypes signature is
built; `run_step` takes a rule's scalars by name and checks them against it (tests check the C
signatures against the specs).

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from ..system import cpu_flags, cpu_name

_P, _I64, _I32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int


@dataclass(frozen=True)
class Kernel:
    """One C entry point of a fused step, the one place its arguments are spelled out: `symbol` in
    `engine/<library>.c`, called as `symbol(p, g, state..., sizes..., scalars..., [flags,] threads)`
    with `tensors` data pointers (p, g, then the state), `sizes` int64 counts, one double per name of
    `scalars`, in order (the C parameters have these names; a test parses the C signature against
    this spec), an int of flags where `flags`, and torch's thread count. `declines`: the function
    returns an int, negative where it did nothing (e.g. out of memory)."""

    library: str
    symbol: str
    tensors: int
    sizes: int
    scalars: tuple[str, ...]
    flags: bool = False
    declines: bool = False

    @property
    def argtypes(self) -> list:
        flags = [_I32] if self.flags else []
        return [_P] * self.tensors + [_I64] * self.sizes + [ctypes.c_double] * len(self.scalars) + flags + [_I32]

    def values(self, scalars: Mapping[str, Any]) -> list[float]:
        """This kernel's scalars, in its order, from a rule's `scalars(group, step)` (names it does
        not take, e.g. the switches that become flags, are left out); ValueError naming the kernel,
        the names it takes and those given where one is missing."""
        try:
            return [float(scalars[name]) for name in self.scalars]
        except KeyError:
            missing = [name for name in self.scalars if name not in scalars]
            raise ValueError(
                f"{self.symbol} (engine/{self.library}.c) takes the scalars {list(self.scalars)}; "
                f"given {list(scalars)}, without {missing}"
            ) from None


# Names as the rules' `scalars(group, step)` spell them.
_ADAM_MOMENTS = ("beta1", "beta2", "one_minus_beta1", "one_minus_beta2", "eps")
ADAMP = Kernel(
    "adamp", "optarena_adamp_step", tensors=4, sizes=2, flags=True, declines=True,
    scalars=(*_ADAM_MOMENTS, "bias_correction2_sqrt", "neg_step_size", "decay", "decay_projected", "delta"),
)  # fmt: skip
SGDP = Kernel(
    "adamp", "optarena_sgdp_step", tensors=3, sizes=2, flags=True, declines=True,
    scalars=("momentum", "take", "eps", "neg_lr", "decay", "decay_projected", "delta"),
)  # fmt: skip
DIFFGRAD = Kernel(
    "diffgrad", "optarena_diffgrad_step", tensors=5, sizes=1, flags=True,
    scalars=(*_ADAM_MOMENTS, "weight_decay", "neg_step_size"),
)  # fmt: skip
LION = Kernel(
    "lion", "optarena_lion_step", tensors=3, sizes=1,
    scalars=("decay", "neg_lr", "beta1", "one_minus_beta1", "beta2", "one_minus_beta2"),
)  # fmt: skip
KERNELS = (ADAMP, SGDP, DIFFGRAD, LION)

# Per library (the C file next to this one, without `.c`): each function's (argtypes, restype).
SIGNATURES: dict[str, dict[str, tuple[list, type | None]]] = {
    "codec8": {
        "optarena_decode": ([_P, _P, _P, _P, _I64, _I32], None),
        "optarena_encode": ([_P, _P, _P, _P, _I64, _I32], None),
    },
}
for _k in KERNELS:
    SIGNATURES.setdefault(_k.library, {})[_k.symbol] = (_k.argtypes, ctypes.c_int if _k.declines else None)


def takes(p, *others) -> bool:
    """Whether the C kernels take these tensors: non-empty, contiguous, float32, on CPU, one shape."""
    return p.numel() > 0 and all(
        t.device.type == "cpu" and t.dtype == torch.float32 and t.shape == p.shape and t.is_contiguous()
        for t in (p, *others)
    )


def run_step(kernel: Kernel, p, g, state, sizes, scalars: Mapping[str, Any], *flags) -> bool:
    """Run a C fused step: `kernel` on the pointers of `p`, `g` and the `state` tensors (in that
    order), then `sizes`, the kernel's scalars taken by name from `scalars` (a rule's
    `scalars(group, step)`; `Kernel.values`), `flags` and torch's thread count. ValueError, before
    anything else, where the arguments do not fit the kernel's spec. False, with nothing done, where
    the kernels do not take these tensors (`takes`), the library cannot be built, or the function
    declines (a negative int result: e.g. out of memory before anything was written); the caller's
    compiled path then runs. True after marking `p` and the state as written (they change behind
    autograd's back)."""
    values = kernel.values(scalars)
    if (2 + len(state), len(sizes), len(flags)) != (kernel.tensors, kernel.sizes, int(kernel.flags)):
        raise ValueError(
            f"{kernel.symbol} takes {kernel.tensors} tensors, {kernel.sizes} sizes and {int(kernel.flags)} flags; "
            f"given {2 + len(state)}, {len(sizes)} and {len(flags)}"
        )
    if not takes(p, g, *state) or (lib := load(kernel.library)) is None:
        return False
    result = getattr(lib, kernel.symbol)(
        *(t.data_ptr() for t in (p, g, *state)), *sizes, *values, *flags, torch.get_num_threads()
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
