"""What the tests of the C kernels (engine/*.c) share: skipping where there is no C compiler.
(The `kernel_only` fixture, failing a test if the compiled path runs, is in conftest.py.)"""
from __future__ import annotations

import shutil

import pytest

HAS_COMPILER = shutil.which("gcc") is not None or shutil.which("cc") is not None
needs_compiler = pytest.mark.skipif(not HAS_COMPILER, reason="no C compiler: the compiled path runs (tested elsewhere)")
