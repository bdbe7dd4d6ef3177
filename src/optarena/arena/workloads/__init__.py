"""The arena's workloads, by name: small CPU tasks from a 2-D function to a transformer LM.

Each module defines one `WORKLOAD` (see `base.Workload`); `WORKLOADS` lists them in a fixed
order, from the cheapest and most synthetic to the real-data ones and the tail-memory probe.
"""
from __future__ import annotations

from . import charlm, digits_mlp, fmnist_cnn, noisy_quadratic, rosenbrock, zipf_memory
from .base import DatasetMissingError, Task, Workload

WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        rosenbrock.WORKLOAD,
        noisy_quadratic.WORKLOAD,
        digits_mlp.WORKLOAD,
        fmnist_cnn.WORKLOAD,
        charlm.WORKLOAD,
        zipf_memory.WORKLOAD,
    )
}


def get_workload(name: str) -> Workload:
    """The workload registered as `name`; `ValueError` listing the valid names otherwise."""
    try:
        return WORKLOADS[name]
    except KeyError:
        raise ValueError(f"unknown workload {name!r}; valid names: {', '.join(WORKLOADS)}") from None


__all__ = ["WORKLOADS", "get_workload", "Workload", "Task", "DatasetMissingError"]
