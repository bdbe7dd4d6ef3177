"""The human report of an arena run: report.md and a self-contained report.html.

`write_report(results, out_dir)` reads a results dict (the content of results.json) through the
typed reader and writes, atomically:

- `report.html`: one file with inline CSS and the figures embedded as base64 PNG; it links to
  nothing outside itself, so it can be mailed or archived as is;
- `report.md`: the same content as GitHub markdown, with the figures written next to it as
  `figures/*.png` and linked relatively.

The parts: `sections` (with `verdict` and `cards`) builds a neutral `document` from the reader's
`Results`, `figures` draws the plots, `render` writes markdown and HTML, `format` prints numbers.
"""
from __future__ import annotations

from pathlib import Path

from ..io import write_atomic
from ..resultsfile import read_results
from .figures import NAMES, draw
from .render import render_html, render_md
from .sections import build

__all__ = ["write_report"]

FIGURE_DIR = "figures"


def write_report(results: dict, out_dir: str | Path) -> dict[str, Path]:
    """Write report.md (+ figures/*.png) and a self-contained report.html into `out_dir`.

    Returns {"md": path of report.md, "html": path of report.html}. All files are written
    atomically; figures this run does not draw are removed from `figures/` so that a reused
    directory holds no stale plot.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    typed = read_results(results)
    figures = draw(typed)
    doc = build(typed, set(figures))

    fig_dir = out_dir / FIGURE_DIR
    for name in NAMES:
        path = fig_dir / f"{name}.png"
        if name in figures:
            write_atomic(path, figures[name])
        elif path.exists():
            path.unlink()
    paths = {name: f"{FIGURE_DIR}/{name}.png" for name in figures}
    md_path = write_atomic(out_dir / "report.md", render_md(doc, paths))
    html_path = write_atomic(out_dir / "report.html", render_html(doc, figures))
    return {"md": md_path, "html": html_path}
