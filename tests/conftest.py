"""Fixtures shared by the test modules."""
from __future__ import annotations

import pytest

from optarena.engine import kernels


@pytest.fixture
def kernel_only(monkeypatch):
    """A C kernel (engine/*.c) must take every tensor: the compiled path would fail the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("the compiled path ran where a C kernel should have taken the tensor")

    monkeypatch.setattr(kernels, "_compiled", refuse)
