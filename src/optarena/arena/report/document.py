"""The report as neutral blocks of plain text (headings, paragraphs, lists, tables, figures).

Sections build a `Doc` once; each renderer escapes every piece of text for its own format, so
optimizer and workload names never reach an output unescaped.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]]
    align: list[str] | None = None  # "l" or "r" per column
    notes: list[str] = field(default_factory=list)


@dataclass
class Block:
    kind: str  # "h1" "h2" "h3" "p" "table" "figure" "ul"
    text: str = ""
    table: Table | None = None
    items: list[str] = field(default_factory=list)
    figure: str = ""  # key into the figures dict


class Doc:
    def __init__(self, title: str) -> None:
        self.title = title
        self.blocks: list[Block] = [Block("h1", title)]

    def h2(self, text: str) -> None:
        self.blocks.append(Block("h2", text))

    def h3(self, text: str) -> None:
        self.blocks.append(Block("h3", text))

    def p(self, text: str) -> None:
        self.blocks.append(Block("p", text))

    def ul(self, items: Iterable[str]) -> None:
        self.blocks.append(Block("ul", items=list(items)))

    def table(self, table: Table) -> None:
        self.blocks.append(Block("table", table=table))

    def figure(self, key: str, caption: str) -> None:
        self.blocks.append(Block("figure", caption, figure=key))
