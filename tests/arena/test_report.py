"""The arena's human report (report.md, report.html), the run summary, and the atomic JSON/file
writing, on the hand-built results of tests/arena/results_sample.py."""
from __future__ import annotations

import base64
import copy
import json
import math
import os
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from optarena.arena.io import finite_or_none, jsonable, write_atomic, write_json  # noqa: E402
from optarena.arena.report import write_report  # noqa: E402
from optarena.arena.runner import summary  # noqa: E402
from results_sample import OPTIMIZERS, TUNING, WORKLOADS, sample_results, tuned_results  # noqa: E402 (on sys.path)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class TagCollector(HTMLParser):
    """Checks nesting of container tags and collects every start tag with its attributes."""

    CONTAINERS = {"table", "thead", "tbody", "tr", "section", "div", "ul", "figure", "header", "html", "body", "head"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.starts: list[tuple[str, dict]] = []
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.starts.append((tag, dict(attrs)))
        if tag in self.CONTAINERS:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in self.CONTAINERS:
            if not self.stack or self.stack[-1] != tag:
                self.errors.append(f"unbalanced </{tag}> (open: {self.stack})")
            else:
                self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def _parse(text: str) -> TagCollector:
    p = TagCollector()
    p.feed(text)
    p.close()
    return p


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    paths = write_report(sample_results(), out)
    return out, paths


def test_writes_markdown_and_html(report):
    out, paths = report
    assert set(paths) == {"md", "html"}
    assert paths["md"] == out / "report.md" and paths["html"] == out / "report.html"
    assert paths["md"].stat().st_size > 0 and paths["html"].stat().st_size > 0


def test_html_is_balanced_self_contained_and_names_everything(report):
    _, paths = report
    text = paths["html"].read_text(encoding="utf-8")
    p = _parse(text)
    assert not p.errors and not p.stack, (p.errors, p.stack)
    tags = [t for t, _ in p.starts]
    for tag in ("table", "section", "div"):
        assert tags.count(tag) > 0
    body = "".join(p.text)
    for name in OPTIMIZERS + WORKLOADS:
        assert name in body
    # nothing external: no scripts, stylesheets or remote sources
    assert "script" not in tags and "link" not in tags
    for _, attrs in p.starts:
        for key in ("src", "href"):
            value = attrs.get(key) or ""
            assert not value.startswith(("http://", "https://", "//")), value
    assert "http://" not in text and "https://" not in text
    imgs = [a["src"] for t, a in p.starts if t == "img"]
    assert len(imgs) == 3  # curves, profiles, speedup
    for src in imgs:
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix)
        assert base64.b64decode(src[len(prefix):], validate=True).startswith(PNG_SIGNATURE)


def test_html_content(report):
    _, paths = report
    body = "".join(_parse(paths["html"].read_text(encoding="utf-8")).text)
    assert "≈" in body  # lion is within noise of AdamW on rosenbrock, and the footnote explains it
    assert "within seed noise" in body
    assert ">max" in body and "0.62x" in body  # infinite speedup (null with a fit) and a finite one
    assert "muon on rosenbrock: failed" in body
    assert "lion on rosenbrock, seed 2: diverged" in body
    assert "lr=0.0123" in body and "lr=1.23e-5" in body  # 3 significant digits, compact exponent
    assert "2026-11-22 05:00 UTC" in body and "Test CPU" in body


def test_summary_rows_are_best_first(report):
    _, paths = report
    md = paths["md"].read_text(encoding="utf-8")

    def order(section: str) -> list[str]:
        block = md.split(f"### {section}\n", 1)[1].split("\n#", 1)[0]
        return [line.split("|")[1].strip() for line in block.splitlines()
                if line.startswith("| ") and line.split("|")[1].strip() in OPTIMIZERS]

    assert order("rosenbrock") == ["lion", "adamw", "muon"]  # lower f is better; failed last
    assert order("mlp_digits") == ["muon", "adamw", "lion"]  # higher accuracy is better


def test_markdown_names_everything_and_links_existing_figures(report):
    out, paths = report
    md = paths["md"].read_text(encoding="utf-8")
    for name in OPTIMIZERS:
        assert name in md
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(links) == 3
    for link in links:
        assert not link.startswith(("http://", "https://", "/"))
        f = out / link
        assert f.is_file() and f.read_bytes().startswith(PNG_SIGNATURE)
    assert "|:---|" in md  # GitHub table alignment row
    assert "—" in md  # lion's missed target on mlp_digits


def test_names_are_escaped(tmp_path):
    res = sample_results()
    bad_opt, bad_w = "li<b>on&co", "rosen<i>brock"
    res["optimizers"] = [bad_opt if o == "lion" else o for o in res["optimizers"]]
    res["workloads"] = [bad_w if w == "rosenbrock" else w for w in res["workloads"]]
    res["workload_info"][bad_w] = res["workload_info"].pop("rosenbrock")
    res["targets"][bad_w] = res["targets"].pop("rosenbrock")
    res["runs"][bad_w] = res["runs"].pop("rosenbrock")
    for per_w in res["runs"].values():
        per_w[bad_opt] = per_w.pop("lion")
    for key in ("rho", "score"):
        res["profiles"][key][bad_opt] = res["profiles"][key].pop("lion")
    res["speedup"]["mlp_digits"]["speedup"][bad_opt] = res["speedup"]["mlp_digits"]["speedup"].pop("lion")
    paths = write_report(res, tmp_path)
    text = paths["html"].read_text(encoding="utf-8")
    assert "<b>" not in text and "<i>" not in text and "on&co" not in text
    assert "li&lt;b&gt;on&amp;co" in text and "rosen&lt;i&gt;brock" in text
    p = _parse(text)
    assert not p.errors and not p.stack
    body = "".join(p.text)
    assert bad_opt in body and bad_w in body  # the parsed text shows the names literally
    md = paths["md"].read_text(encoding="utf-8")
    assert "<b>" not in md and "<i>" not in md


def test_degenerate_results(tmp_path):
    """No profiles, no speedup, no properties, and an optimizer failed everywhere."""
    res = sample_results()
    res["speedup"] = {}
    res["profiles"] = {}
    for per_w in res["runs"].values():
        per_w["muon"] = copy.deepcopy(res["runs"]["rosenbrock"]["muon"])
        for run in per_w.values():
            run["properties"] = {}
            for s in run["seeds"]:
                s["properties"] = {}
    paths = write_report(res, tmp_path)
    text = paths["html"].read_text(encoding="utf-8")
    p = _parse(text)
    assert not p.errors and not p.stack
    imgs = [a["src"] for t, a in p.starts if t == "img"]
    assert len(imgs) == 1  # only the curves
    body = "".join(p.text)
    assert "No speedup estimate" in body and "No performance profiles" in body
    assert "No solution properties" in body
    assert "muon on mlp_digits: failed" in body
    assert sorted(os.listdir(tmp_path / "figures")) == ["curves.png"]


def test_rewrite_replaces_and_leaves_no_temp_files(tmp_path):
    res = sample_results()
    write_report(res, tmp_path)
    res["suite"] = "standard"
    paths = write_report(res, tmp_path)
    assert "standard suite" in paths["md"].read_text(encoding="utf-8")
    assert sorted(os.listdir(tmp_path)) == ["figures", "report.html", "report.md"]
    assert sorted(os.listdir(tmp_path / "figures")) == ["curves.png", "profiles.png", "speedup.png"]


def test_write_atomic_replaces_content_without_temp_files(tmp_path):
    target = tmp_path / "sub" / "file.txt"
    write_atomic(target, "old content that is longer")
    write_atomic(target, "new")
    assert target.read_text() == "new"
    write_atomic(target, b"\x00bytes")
    assert target.read_bytes() == b"\x00bytes"
    assert os.listdir(target.parent) == ["file.txt"]
    with pytest.raises(TypeError):
        write_atomic(target, 123)  # type: ignore[arg-type]
    assert os.listdir(target.parent) == ["file.txt"] and target.read_bytes() == b"\x00bytes"


def test_jsonable_and_write_json_round_trip(tmp_path):
    obj = {"a": math.inf, "b": [math.nan, (1, 2.5, -math.inf)], "c": {"d": (True, None, "x")},
           "p": Path("x/y")}
    clean = jsonable(obj)
    assert clean == {"a": None, "b": [None, [1, 2.5, None]], "c": {"d": [True, None, "x"]}, "p": "x/y"}
    json.dumps(clean, allow_nan=False)  # strict JSON accepts it
    path = write_json(tmp_path / "r.json", obj)
    assert json.loads(path.read_text()) == clean
    assert list(json.loads(path.read_text())) == ["a", "b", "c", "p"]  # insertion order kept
    res = sample_results()
    res["runs"]["mlp_digits"]["muon"]["final"]["std"] = math.nan
    write_json(tmp_path / "results.json", res)
    back = json.loads((tmp_path / "results.json").read_text())
    assert back["runs"]["mlp_digits"]["muon"]["final"]["std"] is None
    assert back["speedup"]["mlp_digits"]["speedup"]["muon"] is None
    assert sorted(os.listdir(tmp_path)) == ["r.json", "results.json"]


def test_finite_or_none_is_strict():
    assert [finite_or_none(x) for x in (None, True, "1.5", [1], math.inf, -math.inf, math.nan)] == [None] * 7
    assert finite_or_none(3) == 3.0 and isinstance(finite_or_none(3), float)
    assert finite_or_none(-2.5) == -2.5


def _section(md: str, heading: str) -> str:
    return md.split(heading + "\n", 1)[1].split("\n## ", 1)[0]


def _row(block: str, first: str) -> str:
    return next(line for line in block.splitlines() if line.startswith(f"| {first} |"))


@pytest.fixture(scope="module")
def tuned_md(tmp_path_factory):
    return write_report(tuned_results(), tmp_path_factory.mktemp("tuned"))["md"].read_text(encoding="utf-8")


def test_report_opens_with_the_verdict(tuned_md):
    headings = [line for line in tuned_md.splitlines() if line.startswith("#")]
    assert headings[:3] == ["# optarena arena report: quick suite", "## Verdict", "### What this run can and cannot tell"]
    verdict = _section(tuned_md, "## Verdict")
    rosenbrock = _row(verdict, "rosenbrock")
    assert "lion (0.0005)" in rosenbrock  # lower is better
    assert "cannot tell against adamw (fewer than two finished seeds)" in rosenbrock  # lion kept one seed
    assert "lion: lr at high edge" in rosenbrock  # the winner's flag is in the verdict
    mlp = _row(verdict, "mlp_digits")
    assert "muon (0.9725)" in mlp and "within seed noise of adamw (p = 0.13)" in mlp
    assert "1 more below: lion" in mlp  # lion is last there, and flagged
    scope = verdict.split("### What this run can and cannot tell\n", 1)[1]
    for words in ("3 optimizers on 2 workloads (quick suite)", TUNING, "rerun on 2 seeds",
                  "≈ (within seed noise) is common", "quick suite's budgets are short (200 to 300 steps",
                  '2 of 6 results are marked "may be under-tuned"',
                  "1 of 6 tunings stopped at their budget before converging"):  # fmt: skip
        assert words in scope, words


def test_a_clear_winner_is_beyond_seed_noise(tmp_path):
    res = tuned_results()
    for seed, final in zip(res["runs"]["mlp_digits"]["adamw"]["seeds"], (0.91, 0.915)):
        seed["final"] = final
    res["runs"]["mlp_digits"]["adamw"]["final"]["mean"] = 0.9125
    md = write_report(res, tmp_path)["md"].read_text(encoding="utf-8")
    assert "beyond seed noise against adamw (p = 0.0" in _row(_section(md, "## Verdict"), "mlp_digits")


def test_under_tuned_rows_are_marked_with_their_edges(tuned_md):
    block = tuned_md.split("### mlp_digits\n", 1)[1].split("\n#", 1)[0]
    header = next(line for line in block.splitlines() if line.startswith("| Optimizer"))
    assert "| Tuning |" in header
    assert "may be under-tuned (note 1)" in _row(block, "lion")
    assert "5 of 6 trials, converged" in _row(block, "muon") and "may be under" not in _row(block, "muon")
    assert ("Note 1, lion: lr at high edge, weight_decay at low edge; tried lr 0.0001 to 0.0003 (best 0.0003), "
            "weight_decay 0.1 to 1 (best 0.1). Its optimum may lie outside the values tried.") in block
    assert "lr=0.0003, weight_decay=1" in _row(block, "lion")  # the best hyperparameters of the row


def test_method_cards(tuned_md):
    methods = _section(tuned_md, "## Methods")
    assert [line for line in methods.splitlines() if line.startswith("### ")] == [
        "### AdamW (adamw)", "### Lion (lion)", "### Muon (muon)"]
    muon = methods.split("### Muon (muon)\n", 1)[1]
    for item in ("- Class: optarena.Muon", "- Paper: The Muon paper (2024)", "- Reference: github.com/example/Muon",
                 "- Capabilities: matrix-only yes, needs create_graph no, fused kernel c, state precisions fp32, bf16",
                 "- Search lr: centre 0.02, grid x2 steps, log; source: Muon paper, table 3", "- Fixed: eps=1e-8"):  # fmt: skip
        assert item in muon, item


def test_a_file_without_tuning_details_says_so(report):
    _, paths = report
    md = paths["md"].read_text(encoding="utf-8")
    assert "| Tuning |" not in md  # no column of dashes
    assert "under-tuning cannot be ruled out" in md and "not recorded" in _row(_section(md, "## Verdict"), "rosenbrock")
    assert "This results file records no method cards." in md


def test_summary_rows_best_first_with_marks_flags_and_winner():
    text = summary(tuned_results())
    rosenbrock, mlp = text.split("\nmlp_digits: ")
    rows = [line.split()[0] for line in rosenbrock.splitlines()[3:6]]
    assert rows == ["lion", "adamw", "muon"]
    lion = rosenbrock.splitlines()[3]
    assert "(1/2) ≈" in lion and lion.endswith("may be under-tuned: lr at high edge")
    assert "  muon                       failed" in rosenbrock
    assert "  winner: lion, cannot tell against adamw (fewer than two finished seeds)" in rosenbrock
    assert [line.split()[0] for line in mlp.splitlines()[2:5]] == ["muon", "adamw", "lion"]
    assert "  winner: muon, within seed noise of adamw (p = 0.13): no clear winner" in mlp
    assert "performance-profile score (area on [1, 4], 1 = fastest to target everywhere): adamw 0.88, lion 0.50, muon 0.50" in mlp
    assert "on mlp_digits (>max: beyond AdamW's asymptote): lion 0.62, muon >max" in mlp


def test_summary_survives_an_empty_or_partial_file():
    assert summary({}) == ""
    res = sample_results()
    res["profiles"], res["speedup"] = None, {"rosenbrock": {"fit": None, "note": "the speedup fit needs a loss"}}
    del res["runs"]["mlp_digits"]["lion"]
    text = summary(res)
    assert "  lion                      not run" in text
    assert "data-equivalent speedup over AdamW on rosenbrock: none (the speedup fit needs a loss)" in text
    assert "performance-profile" not in text


def test_distance_to_a_certified_optimum(tmp_path):
    res = sample_results()
    res["optimum"] = {"rosenbrock": {"value": 4e-4, "lower_bound": 3.9999e-4, "solver": "convex exact", "width": 7,
                                     "seconds": 1.5}}
    for o, gap in (("adamw", 8e-4), ("lion", 3e-4), ("muon", None)):
        res["runs"]["rosenbrock"][o]["gap"] = {"absolute": gap, "relative": None if gap is None else gap / 4e-4}
    md = write_report(res, tmp_path)["md"].read_text(encoding="utf-8")
    block = _section(md, "## Distance to the global optimum")
    assert "### rosenbrock" in block and "mlp_digits" not in block  # only where an optimum is known
    assert _row(block, "convex exact (reference)").split("|")[2:5] == [" 0.0004 ", " 0 ", " 0 "]
    assert "lower bound 0.00039999, width 7, 1.5 s" in block
    assert [c.strip() for c in _row(block, "lion").split("|")[3:5]] == ["0.0003", "0.75"]
    assert [c.strip() for c in _row(block, "adamw").split("|")[3:5]] == ["0.0008", "2"]
    assert _row(block, "muon").split("|")[3].strip() == "—"  # failed: no gap
    assert "## Distance to the global optimum" not in write_report(sample_results(), tmp_path / "none")["md"].read_text()
