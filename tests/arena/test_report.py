"""The arena's human report (report.md, report.html) and its atomic JSON/file writing.

`sample_results()` builds a realistic results dict (schema "optarena.arena.results/1") for three
optimizers on two workloads, with the awkward cases the report must survive: a failed run with
null numbers, a missed target (null steps_to_target), a diverged seed, an infinite speedup stored
as null, and a workload without solution properties.
"""
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

from optarena.arena.io import jsonable, write_atomic, write_json  # noqa: E402
from optarena.arena.report import write_report  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
OPTIMIZERS = ["adamw", "lion", "muon"]
WORKLOADS = ["rosenbrock", "mlp_digits"]


def _curve(steps: int, start: float, end: float, n: int = 6) -> list[list[float]]:
    pts = []
    for i in range(n + 1):
        s = steps * i // n
        frac = i / n
        pts.append([s, start * (end / start) ** frac])  # geometric: lines up on log axes
    return pts


def _seed(seed: int, steps: int, start: float, end: float, *, props: bool, status: str = "ok",
          step_ms: float = 1.2) -> dict:
    curve = _curve(steps, start, end) if status == "ok" else _curve(steps // 2, start, start * 3, n=3)
    return {
        "seed": seed, "status": status, "final": curve[-1][1] if status == "ok" else None,
        "curve": curve, "train_loss": [[s, abs(v) + 0.01] for s, v in curve],
        "step_ms": step_ms, "opt_step_ms": step_ms / 4, "state_bytes_per_param": 8.0,
        "properties": ({"effective_rank": 11.5 + seed, "activation_kurtosis": 2.1 * seed, "tail_error": 0.2}
                       if props and status == "ok" else {}),
    }


def _run(steps: int, start: float, ends: list[float], *, props: bool, params: dict,
         steps_to_target: float | None, p: float | None, within: bool | None,
         statuses: tuple[str, ...] = ("ok", "ok")) -> dict:
    seeds = [_seed(i + 1, steps, start, e, props=props, status=st) for i, (e, st) in enumerate(zip(ends, statuses))]
    finals = [s["final"] for s in seeds if s["final"] is not None]
    mean = sum(finals) / len(finals) if finals else None
    std = (math.sqrt(sum((f - mean) ** 2 for f in finals) / (len(finals) - 1)) if len(finals) > 1 else 0.0) if finals else None
    ok = bool(finals)
    return {
        "status": "ok" if ok else "failed",
        "best_params": params,
        "tuning": [{"number": k, "params": params, "value": (ends[0] * (1 + k) if ok else None),
                    "state": "COMPLETE" if ok else "FAIL"} for k in range(3)],
        "seeds": seeds,
        "final": {"mean": mean, "std": std, "n": len(finals)},
        "steps_to_target": steps_to_target,
        "step_ms": 1.234 if ok else None, "opt_step_ms": 0.3087 if ok else None,
        "state_bytes_per_param": 8.0 if ok else None,
        "vs_adamw": {"p_value": p, "within_noise": within},
        "properties": ({"effective_rank": 12.5, "activation_kurtosis": 3.15, "tail_error": 0.2}
                       if props and ok else {"effective_rank": None, "activation_kurtosis": None, "tail_error": None}),
    }


def sample_results() -> dict:
    """3 optimizers x 2 workloads: muon fails on rosenbrock, lion misses the mlp target, one of
    lion's rosenbrock seeds diverged, muon's mlp speedup is infinite (null); rosenbrock records
    no solution properties."""
    rb, mlp = 200, 300
    runs = {
        "rosenbrock": {
            "adamw": _run(rb, 10.0, [1e-3, 1.4e-3], props=False, params={"lr": 0.0123456, "weight_decay": 0.0},
                          steps_to_target=180.0, p=None, within=None),
            "lion": _run(rb, 10.0, [5e-4, 9e-4], props=False, params={"lr": 1.234e-5, "betas": [0.9, 0.99]},
                         steps_to_target=120.0, p=0.41, within=True, statuses=("ok", "diverged")),
            "muon": _run(rb, 10.0, [1.0, 1.0], props=False, params={"lr": 0.02, "momentum": 0.95},
                         steps_to_target=None, p=None, within=None, statuses=("diverged", "diverged")),
        },
        "mlp_digits": {
            "adamw": _run(mlp, 0.1, [0.95, 0.96], props=True, params={"lr": 3e-3, "weight_decay": 0.1},
                          steps_to_target=260.0, p=None, within=None),
            "lion": _run(mlp, 0.1, [0.90, 0.91], props=True, params={"lr": 3e-4, "weight_decay": 1.0},
                         steps_to_target=None, p=0.003, within=False),
            "muon": _run(mlp, 0.1, [0.97, 0.975], props=True, params={"lr": 0.02, "nesterov": True},
                         steps_to_target=150.0, p=0.01, within=False),
        },
    }
    return {
        "schema": "optarena.arena.results/1",
        "created": "2026-11-22T05:00:00+00:00",
        "suite": "quick",
        "machine": {"cpu": "Test CPU @ 2.0GHz", "threads": 2, "torch": "2.13.0", "python": "3.11.7"},
        "settings": {"trials": 3, "seeds": [1, 2], "storage": "sqlite:///arena.db"},
        "optimizers": list(OPTIMIZERS),
        "workloads": list(WORKLOADS),
        "workload_info": {
            "rosenbrock": {"metric": "f", "higher_is_better": False, "steps": rb,
                           "description": "The 2-D Rosenbrock valley."},
            "mlp_digits": {"metric": "val_accuracy", "higher_is_better": True, "steps": mlp,
                           "description": "An MLP on 8x8 digits."},
        },
        "targets": {"rosenbrock": 1.2e-3, "mlp_digits": 0.955},
        "runs": runs,
        "profiles": {
            "taus": [1.0, 1.5, 2.0, 3.0, 4.0],
            "rho": {"adamw": [0.0, 1.0, 1.0, 1.0, 1.0], "lion": [0.5, 0.5, 0.5, 0.5, 0.5],
                    "muon": [0.5, 0.5, 0.5, 0.5, 0.5]},
            "score": {"adamw": 0.875, "lion": 0.5, "muon": 0.5},
            "cost": "steps_to_target",
        },
        "speedup": {
            "mlp_digits": {"budgets": [300, 600, 1200], "adamw_losses": [0.21, 0.16, 0.13],
                           "fit": {"alpha": 5.1, "exponent": 0.62, "beta": 0.1},
                           "speedup": {"lion": 0.62, "muon": None}, "note": None},
        },
    }


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
