"""The arena end to end, through its command line: real (tiny) runs, real files, real outcomes."""
from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest

from optarena.arena.plan import make_plan
from optarena.arena.runner import run_arena
from optarena.cli import main

pytestmark = pytest.mark.slow


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.stack, self.text, self.images = [], [], 0

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images += 1
        elif tag not in ("meta", "br", "hr", "link", "col", "input"):
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in ("meta", "br", "hr", "link", "col", "input", "img"):
            return
        assert self.stack and self.stack[-1] == tag, f"unbalanced </{tag}> after {self.stack[-3:]}"
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def test_tuned_adamw_learns_digits():
    plan = make_plan("quick", optimizers=["adamw"], workloads=["digits-mlp"], seeds=2)
    import tempfile

    with tempfile.TemporaryDirectory() as out:
        done = run_arena(plan, f"journal:{out}/s.journal", out, progress=False)
    run = done["results"]["runs"]["digits-mlp"]["adamw"]
    assert run["final"]["n"] == 2
    assert run["final"]["mean"] >= 0.95


def test_arena_run_writes_a_report_naming_every_optimizer(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["arena", "run", "--optimizers", "adamw,lion,muon", "--workloads", "rosenbrock,noisy-quadratic",
            "--trials", "3", "--seeds", "2", "--steps", "30", "--out", str(out), "--jobs", "2", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"report:  {out / 'report.html'}" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["schema"] == "optarena.arena.results/2"
    assert results["optimizers"] == ["adamw", "lion", "muon"]
    for w in ("rosenbrock", "noisy-quadratic"):
        for o in results["optimizers"]:
            run = results["runs"][w][o]
            assert len(run["tuning"]) == 3 and len(run["seeds"]) == 2  # a budget of 3: the lr sweep
            assert [t["point"][0] for t in run["tuning"]] == [-2, 0, 2]
            assert run["tuned"]["under_tuned"] == bool(run["tuned"]["edges"])
            finished = [(t["value"], t["config"], t["params"]) for t in run["tuning"] if t["value"] is not None]
            assert run["best_params"] == min(finished)[2]  # lower is better on both; ties to the earlier
            assert {s["seed"] for s in run["seeds"]} == {1, 2}
            assert run["best_params"] is not None
    # AdamW is its own target: it reaches it, and its profile ratio on each workload is finite
    assert results["runs"]["noisy-quadratic"]["adamw"]["steps_to_target"] is not None
    speed = results["speedup"]["noisy-quadratic"]
    assert speed["budgets"] == [30, 60, 120] and len(speed["adamw_losses"]) == 3
    assert set(speed["speedup"]) == {"adamw", "lion", "muon"}
    if speed["fit"] is not None and speed["note"] is None:  # AdamW measured against its own fit: about 1
        assert speed["speedup"]["adamw"] == pytest.approx(1.0, rel=0.2)
    html = (out / "report.html").read_text()
    tags = _Tags()
    tags.feed(html)
    assert tags.stack == [] and tags.images >= 2
    text = " ".join(tags.text)
    md = (out / "report.md").read_text()
    for name in ("adamw", "lion", "muon", "rosenbrock", "noisy-quadratic"):
        assert name in text and name in md
    # rerunning the same command continues (here: nothing left) and rewrites the report
    assert main(argv) == 0
    assert json.loads((out / "results.json").read_text())["runs"]["rosenbrock"]["adamw"]["seeds"] == results["runs"]["rosenbrock"]["adamw"]["seeds"]


def test_bad_input_fails_before_any_training(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["arena", "run", "--optimizers", "adamw,adamx", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "unknown optimizer(s) adamx; valid optimizers: adamp, adamw" in err
    assert main(["arena", "run", "--workloads", "imagenet", "--out", str(out)]) == 2
    assert "valid workloads: rosenbrock, noisy-quadratic, digits-mlp" in capsys.readouterr().err
    assert main(["arena", "run", "--storage", "mysql:/broken", "--out", str(out)]) == 2
    assert "malformed storage URL" in capsys.readouterr().err
    assert not (out / "results.json").exists()
    assert main(["arena", "worker", "--storage", f"journal:{tmp_path / 'empty.journal'}", "--name", "nothing"]) == 2
    assert "no arena run named 'nothing'" in capsys.readouterr().err
