"""Atomic file writes and strict JSON for the arena's outputs.

Every file the arena writes (results.json, reports, figures) goes through `write_atomic`: the
bytes land in a temporary file in the destination directory, are flushed and fsynced, and then
`os.replace` swaps it in. A reader therefore sees either the old file or the complete new one,
never a torn write, even if the process is killed halfway.

JSON is written strictly (`allow_nan=False`): the results schema spells "infinite / not a
number / not available" as null, and `jsonable` performs that conversion; `finite_or_none` is
the one reading of a number the other way (writing results and reading them back agree on it).
"""
from __future__ import annotations

import json
import math
import numbers
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["finite_or_none", "write_atomic", "write_json", "jsonable"]


def finite_or_none(x: Any) -> float | None:
    """`x` as a finite float, or None: None, bools, strings and other non-numbers, inf and nan all
    give None (a bool is not a measurement, and JSON's null stands for every missing number)."""
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        return None
    v = float(x)
    return v if math.isfinite(v) else None


def write_atomic(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write `data` to `path` atomically (temp file in the same directory + fsync + os.replace).

    `str` data is encoded as UTF-8. Missing parent directories are created. Returns the path.
    """
    path = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    elif not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be str or bytes, got {type(data).__name__}")
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600 files; give the result the usual permissions (umask applied).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(directory)
    return path


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable where the platform allows fsync on a directory (POSIX)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def jsonable(x: Any) -> Any:
    """A copy of `x` that strict JSON accepts: non-finite floats become None, tuples become lists.

    Recurses into dicts, lists and tuples; numpy scalars and arrays are converted to Python
    values; `Path` becomes `str`. Dict keys are kept (JSON turns non-str keys into strings).
    """
    if x is None or isinstance(x, (bool, str)):
        return x
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, int):
        return x
    if isinstance(x, dict):
        return {k if isinstance(k, (str, int, float, bool)) or k is None else str(k): jsonable(v)
                for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    # numpy / torch scalars and arrays, without importing either
    tolist = getattr(x, "tolist", None)
    if callable(tolist):
        return jsonable(tolist())
    item = getattr(x, "item", None)
    if callable(item):
        return jsonable(item())
    return x


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write `obj` as indented JSON (insertion order kept) atomically; inf/nan become null."""
    text = json.dumps(jsonable(obj), indent=2, allow_nan=False, ensure_ascii=False)
    return write_atomic(path, text + "\n")
