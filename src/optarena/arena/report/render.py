"""The report's two renderers: GitHub markdown and one self-contained HTML page.

Both escape every piece of text for their format (names come from the user's plan)."""
from __future__ import annotations

import base64
import html
import re

from .document import Doc

_MD_SPECIAL = re.compile(r"([\\`*\[\]|])")
_MD_UNDERSCORE = re.compile(r"(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")


def md_escape(text: str, line_start: bool = True) -> str:
    """Text shown literally in GitHub markdown, on one line.

    `&` and `<` become entities (so no raw HTML gets through), markdown punctuation is
    backslash-escaped (`_` only where it could open emphasis), and with `line_start` a leading
    character that would start a heading, quote or list is escaped too (not needed in table cells).
    """
    s = str(text).replace("&", "&amp;").replace("<", "&lt;")
    s = _MD_SPECIAL.sub(r"\\\1", s)
    s = _MD_UNDERSCORE.sub(r"\\_", s)
    s = " ".join(s.split())
    if line_start:
        if s[:1] in ("#", ">", "-", "+", "="):
            s = "\\" + s
        else:
            s = re.sub(r"^(\d+)([.)])(?=\s|$)", r"\1\\\2", s)
    return s


def render_md(doc: Doc, figure_paths: dict[str, str]) -> str:
    """GitHub markdown; figures linked by their relative paths."""
    out: list[str] = []
    for b in doc.blocks:
        if b.kind in ("h1", "h2", "h3"):
            out.append("#" * int(b.kind[1]) + " " + md_escape(b.text))
        elif b.kind == "p":
            out.append(md_escape(b.text))
        elif b.kind == "ul":
            out.append("\n".join("- " + md_escape(i) for i in b.items))
        elif b.kind == "figure":
            out.append(f"![{md_escape(b.text)}]({figure_paths[b.figure]})\n\n*{md_escape(b.text)}*")
        elif b.kind == "table" and b.table is not None:
            t = b.table
            align = t.align or ["l"] * len(t.columns)
            lines = ["| " + " | ".join(md_escape(c, False) for c in t.columns) + " |",
                     "|" + "|".join("---:" if a == "r" else ":---" for a in align) + "|"]
            for row in t.rows:
                lines.append("| " + " | ".join(md_escape(c, False) or " " for c in row) + " |")
            out.append("\n".join(lines))
            for note in t.notes:
                out.append("<sub>" + md_escape(note) + "</sub>")
    return "\n\n".join(out) + "\n"


_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; border-bottom: 2px solid #ddd; padding-bottom: .3em; }
h2 { font-size: 1.3em; margin-top: 1.8em; border-bottom: 1px solid #eee; padding-bottom: .2em; }
h3 { font-size: 1.1em; margin-top: 1.4em; }
.table-wrap { overflow-x: auto; margin: .6em 0; }
table { border-collapse: collapse; font-size: .9em; }
th, td { border: 1px solid #ddd; padding: .3em .6em; vertical-align: top; }
th { background: #f4f4f4; text-align: left; }
td.r { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr:nth-child(even) td { background: #fafafa; }
p.note { font-size: .85em; color: #555; margin: .2em 0 .8em; }
figure { margin: 1em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: .85em; color: #555; }
ul.meta { list-style: none; padding-left: 0; color: #444; }
"""


def render_html(doc: Doc, figures: dict[str, bytes]) -> str:
    """One self-contained HTML page: inline CSS, figures embedded as base64 PNG."""
    e = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{e(doc.title)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>"]
    in_section = False
    first_ul = True
    for b in doc.blocks:
        if b.kind == "h1":
            out.append(f"<header><h1>{e(b.text)}</h1></header>")
        elif b.kind == "h2":
            if in_section:
                out.append("</section>")
            anchor = re.sub(r"[^a-z0-9]+", "-", b.text.lower()).strip("-")
            out.append(f'<section id="{e(anchor)}">')
            out.append(f"<h2>{e(b.text)}</h2>")
            in_section = True
        elif b.kind == "h3":
            out.append(f"<h3>{e(b.text)}</h3>")
        elif b.kind == "p":
            out.append(f"<p>{e(b.text)}</p>")
        elif b.kind == "ul":
            cls = ' class="meta"' if first_ul and not in_section else ""
            first_ul = False
            out.append(f"<ul{cls}>" + "".join(f"<li>{e(i)}</li>" for i in b.items) + "</ul>")
        elif b.kind == "figure":
            data = base64.b64encode(figures[b.figure]).decode("ascii")
            out.append(f'<figure><img src="data:image/png;base64,{data}" alt="{e(b.text)}">'
                       f"<figcaption>{e(b.text)}</figcaption></figure>")
        elif b.kind == "table" and b.table is not None:
            t = b.table
            align = t.align or ["l"] * len(t.columns)
            rows = ['<div class="table-wrap"><table>', "<thead><tr>"
                    + "".join(f"<th>{e(c)}</th>" for c in t.columns) + "</tr></thead>", "<tbody>"]
            for row in t.rows:
                rows.append("<tr>" + "".join(
                    f'<td class="{"r" if a == "r" else "l"}">{e(c)}</td>' for c, a in zip(row, align)) + "</tr>")
            rows.append("</tbody></table></div>")
            out.append("\n".join(rows))
            for note in t.notes:
                out.append(f'<p class="note">{e(note)}</p>')
    if in_section:
        out.append("</section>")
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"
