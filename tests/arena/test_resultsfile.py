"""The typed reader of results.json: tolerant of anything missing, and the one place rankings,
marks, verdicts, under-tuned flags and speedup labels are derived."""
from __future__ import annotations

import copy
import math

from optarena.arena.resultsfile import NOT_RUN, read_results
from results_sample import OPTIMIZERS, TUNING, WORKLOADS, sample_results, tuned_results  # tests/arena is on sys.path


def _one(data: dict, workload: str, optimizer: str):
    return read_results(data).workloads[workload].runs[optimizer]


def test_an_empty_or_malformed_dict_reads_as_empty():
    for data in ({}, {"runs": [], "workloads": None, "profiles": "x", "speedup": 3, "methods": [1]}, None):
        r = read_results(data)
        assert r.workloads == {} and r.optimizers == () and r.profiles is None and r.speedup == {} and r.methods == {}
        assert r.settings.trials is None and r.settings.seeds == () and r.settings.tuning is None
        assert r.machine is None and r.suite is None and r.tuning_known


def test_null_numbers_and_missing_fields():
    data = {"workloads": ["w"], "optimizers": ["a", "b"],
            "runs": {"w": {"a": {"status": "failed", "final": None, "seeds": [{"seed": 1, "final": None}, "junk"],
                                 "step_ms": math.nan, "best_params": None, "vs_adamw": None},
                           "c": {"final": {"mean": True, "std": "1", "n": 2.5}}}}}  # fmt: skip
    r = read_results(data)
    assert r.optimizers == ("a", "b", "c")  # the suite's names, then those the runs add
    w = r.workloads["w"]
    assert w.metric == "metric" and not w.higher_is_better and w.steps is None and w.target is None
    a, b, c = w.runs["a"], w.runs["b"], w.runs["c"]
    assert a.status == "failed" and a.mean is None and a.step_ms is None and a.best_params == {}
    assert [s.seed for s in a.seeds] == [1] and a.finals == [] and a.tuned is None
    assert b.status == NOT_RUN and b.seeds == ()
    assert c.ok and (c.mean, c.std, c.n) == (None, None, None) and not c.finished  # bools and strings are no numbers
    assert [x.optimizer for x in w.ranking] == ["a", "b", "c"]  # none finished: suite order
    assert w.winner is None and w.verdict.runner_up is None and w.verdict.beyond_noise is None


def test_ranking_is_best_first_with_failed_and_missing_last():
    res = sample_results()
    del res["runs"]["mlp_digits"]["adamw"]
    r = read_results(res)
    assert r.optimizers == tuple(OPTIMIZERS) and list(r.workloads) == WORKLOADS
    assert [x.optimizer for x in r.workloads["rosenbrock"].ranking] == ["lion", "adamw", "muon"]  # lower is better
    mlp = r.workloads["mlp_digits"]
    assert [x.optimizer for x in mlp.ranking] == ["muon", "lion", "adamw"]  # higher is better; not run last
    assert mlp.runs["adamw"].status == NOT_RUN and mlp.runs["adamw"].seeds == ()


def test_noise_mark_is_never_on_adamw():
    res = sample_results()
    res["runs"]["rosenbrock"]["adamw"]["vs_adamw"] = {"p_value": 1.0, "within_noise": True}
    r = read_results(res)
    lion = r.workloads["rosenbrock"].runs["lion"]
    assert lion.noise_mark and lion.p_vs_baseline == 0.41
    assert not r.workloads["rosenbrock"].runs["adamw"].noise_mark
    assert not r.workloads["mlp_digits"].runs["lion"].noise_mark  # significant


def test_verdict_against_the_runner_up():
    r = read_results(sample_results())
    rb = r.workloads["rosenbrock"].verdict
    assert (rb.winner.optimizer, rb.runner_up.optimizer) == ("lion", "adamw")
    assert rb.beyond_noise is None and rb.p_value is None  # lion kept one seed: cannot tell
    mlp = r.workloads["mlp_digits"].verdict
    assert (mlp.winner.optimizer, mlp.runner_up.optimizer, mlp.beyond_noise) == ("muon", "adamw", False)
    assert 0.05 <= mlp.p_value < 0.2
    res = sample_results()
    for seed, final in zip(res["runs"]["mlp_digits"]["adamw"]["seeds"], (0.91, 0.915)):
        seed["final"] = final
    clear = read_results(res).workloads["mlp_digits"].verdict
    assert clear.beyond_noise is True and clear.p_value < 0.05
    for o in ("adamw", "lion"):
        res["runs"]["mlp_digits"][o]["status"] = "failed"
    alone = read_results(res).workloads["mlp_digits"].verdict
    assert alone.winner.optimizer == "muon" and alone.runner_up is None and alone.beyond_noise is None


def test_tuning_details_and_under_tuned_flags():
    r = read_results(tuned_results())
    assert r.settings.tuning == TUNING and r.tuning_known
    lion = r.workloads["mlp_digits"].runs["lion"].tuned
    assert lion.under_tuned and lion.edges == ("lr", "weight_decay") and lion.budget == 6 and lion.converged
    assert lion.axes["lr"].values == (1e-4, 3e-4) and lion.axes["lr"].best == 3e-4 and lion.axes["lr"].edge == "high"
    assert lion.reasons() == ["lr at high edge", "weight_decay at low edge"]
    muon = r.workloads["rosenbrock"].runs["muon"].tuned
    assert not muon.under_tuned and not muon.axes["lr"].searched and muon.reasons() == []
    assert [x.optimizer for x in r.under_tuned] == ["lion", "lion"]
    assert [x.optimizer for x in r.workloads["rosenbrock"].verdict.flagged] == ["lion"]  # the winner
    assert r.workloads["mlp_digits"].verdict.flagged == ()  # lion is last there
    assert [x.optimizer for x in r.workloads["mlp_digits"].under_tuned] == ["lion"]
    assert not read_results(sample_results()).tuning_known  # an older file


def test_the_file_decides_under_tuned_and_reasons_cover_a_bare_flag():
    res = tuned_results()
    t = res["runs"]["rosenbrock"]["adamw"]["tuned"]
    t["edges"] = ["lr"]  # at an edge but not flagged (e.g. a hard bound): the tuner's call
    assert not _one(res, "rosenbrock", "adamw").under_tuned
    t.update(edges=[], under_tuned=True, converged=False)
    assert _one(res, "rosenbrock", "adamw").tuned.reasons() == ["tuning stopped before it converged"]
    t.update(axes="junk", edges=["beta"], under_tuned="yes")
    tuned = _one(res, "rosenbrock", "adamw").tuned
    assert tuned.axes == {} and not tuned.under_tuned and tuned.reasons() == ["beta at an edge of its search"]


def test_speedup_labels():
    res = sample_results()
    entry = res["speedup"]["mlp_digits"]
    entry["speedup"].update({"adamw": math.inf, "ghost": None})
    r = read_results(res)
    s = r.speedup["mlp_digits"].values
    assert (s["lion"].value, s["lion"].beyond) == (0.62, False)
    assert s["muon"].beyond and s["adamw"].beyond  # null with a usable fit and a finished run; +inf
    assert not s["ghost"].beyond and s["ghost"].value is None  # no such run: not available
    entry["note"] = "budgets too small for a data-scaling fit"  # a fit at its search bound is no fit
    assert not read_results(res).speedup["mlp_digits"].values["muon"].beyond
    res = sample_results()
    res["runs"]["mlp_digits"]["muon"]["status"] = "failed"
    assert not read_results(res).speedup["mlp_digits"].values["muon"].beyond


def test_profiles_order_and_properties():
    res = sample_results()
    res["profiles"]["score"]["lion"] = None
    r = read_results(res)
    assert r.profiles.order(r.optimizers) == ["adamw", "muon", "lion"]  # no score last
    assert r.profiles.taus[0] == 1.0 and r.profiles.cost == "steps_to_target"
    props = r.workloads["mlp_digits"].runs["muon"].properties
    assert props == {"effective_rank": 12.5, "activation_kurtosis": 3.15, "tail_error": 0.2}
    res = copy.deepcopy(sample_results())
    run = res["runs"]["mlp_digits"]["muon"]
    run["properties"] = {"effective_rank": None}
    assert _one(res, "mlp_digits", "muon").properties["effective_rank"] == 13.0  # seeds: 12.5, 13.5
    assert _one(sample_results(), "rosenbrock", "adamw").properties == {
        "effective_rank": None, "activation_kurtosis": None, "tail_error": None}


def test_method_cards_tolerate_missing_fields():
    res = tuned_results()
    res["methods"]["lion"] = {"capabilities": None, "search": {"lr": None}}
    r = read_results(res)
    muon = r.methods["muon"]
    assert (muon.name, muon.cls, muon.capabilities.matrix_only) == ("Muon", "optarena.Muon", True)
    assert muon.search["lr"].center == 0.02 and muon.fixed == {"eps": 1e-8}
    lion = r.methods["lion"]
    assert lion.name == "lion" and lion.paper is None and lion.capabilities.state_precisions == ()
    assert lion.search["lr"].center is None and lion.fixed == {}


def test_curves_keep_their_points_with_nan_for_a_missing_value():
    res = sample_results()
    res["runs"]["rosenbrock"]["adamw"]["seeds"][0]["curve"] = [[0, 1.0], [10, None], [None, 3.0], "x", [20, math.inf]]
    curve = _one(res, "rosenbrock", "adamw").seeds[0].curve
    assert curve[0] == (0.0, 1.0) and curve[1][0] == 10.0 and math.isnan(curve[1][1]) and len(curve) == 3
