"""The README's Python examples run as written (in order, sharing one namespace)."""
from __future__ import annotations

import re
from pathlib import Path

import optarena

README = (Path(__file__).parents[1] / "README.md").read_text()


def test_readme_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert len(blocks) >= 3
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)


def test_readme_table_lists_every_optimizer():
    for name in optarena.available():
        assert f"| `{name}` |" in README, name
