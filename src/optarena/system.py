"""What this machine's CPU is: its name (for reports and benchmark records) and its feature flags
(for the native code's cache key). One reader of /proc/cpuinfo; elsewhere, what `platform` knows."""
from __future__ import annotations

import functools
import platform


@functools.lru_cache(maxsize=None)
def _cpuinfo() -> dict[str, str]:
    """The first CPU's /proc/cpuinfo fields (empty where there is none: not Linux)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break  # the first processor's block ends here
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_name() -> str:
    """The CPU's model name ("AMD EPYC"), else the platform's processor or machine name."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (avx2, avx512f, avx512_bf16, ...); empty where they are not known."""
    return frozenset(_cpuinfo().get("flags", "").split())
