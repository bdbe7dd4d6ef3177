"""The report's method cards: per method its paper, reference, capabilities, the search the arena
ran for it and the arguments it holds fixed (`results["methods"]`)."""
from __future__ import annotations

from ..resultsfile import MethodCard, Results
from .document import Doc
from .format import MISSING, fmt_num, fmt_params


def cards_section(doc: Doc, results: Results) -> None:
    doc.h2("Methods")
    if not results.methods:
        doc.p("This results file records no method cards.")
        return
    doc.p("One card per method: where it comes from, what it can do, and the search the arena ran for "
          "it (each axis: its centre, grid and where the range comes from); fixed arguments keep the "
          "card's values in every run.")  # fmt: skip
    names = [o for o in results.optimizers if o in results.methods]
    for o in names + [o for o in results.methods if o not in names]:
        card = results.methods[o]
        doc.h3(o if card.name == o else f"{card.name} ({o})")
        doc.ul(_items(card))


def _yes(x: bool | None) -> str:
    return MISSING if x is None else ("yes" if x else "no")


def _items(card: MethodCard) -> list[str]:
    caps = card.capabilities
    search = [f"Search {name}: centre {fmt_num(a.center, 3)}, grid {a.grid or MISSING}; source: {a.source or MISSING}"
              for name, a in card.search.items()]  # fmt: skip
    return [
        f"Class: {card.cls or MISSING}",
        f"Paper: {card.paper or MISSING}",
        f"Reference: {card.reference or MISSING}",
        f"Capabilities: matrix-only {_yes(caps.matrix_only)}, needs create_graph {_yes(caps.needs_create_graph)}, "
        f"fused kernel {caps.fused or MISSING}, state precisions {', '.join(caps.state_precisions) or MISSING}",
        *(search or [f"Search: {MISSING}"]),
        f"Fixed: {fmt_params(card.fixed)}",
    ]
