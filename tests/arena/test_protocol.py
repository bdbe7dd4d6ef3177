"""The arena's protocol pieces: method cards' axes, plans, the schedule, one training run, bad input."""
from __future__ import annotations

import dataclasses
import math

import optuna
import pytest
import torch

import optarena
from optarena.arena.errors import ArenaError
from optarena.arena import tuning
from optarena.arena.plan import SUITES, create_studies, load_plan, make_plan
from optarena.arena.storage import open_storage
from optarena.arena.train import build_optimizer, lr_factor, state_bytes_per_param, train
from optarena.arena.workloads import WORKLOADS, get_workload


@pytest.mark.parametrize("name", optarena.available())
def test_every_point_of_the_first_round_builds_the_optimizer_it_names(name):
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8), torch.nn.Linear(8, 2))
    axes = optarena.card(name).search
    for point in tuning.first_round(axes, 6) + [tuple(1 for _ in axes)]:
        values = tuning.values(axes, point)
        groups = build_optimizer(name, model, values).param_groups
        assert any(math.isclose(g["lr"], values["lr"]) for g in groups)
        if "aux_kwargs.lr" in values:  # the AdamW part of the split gets its own searched lr
            assert any(g.get("rule") == "adamw" and math.isclose(g["lr"], values["aux_kwargs.lr"]) for g in groups)
        if "betas[0]" in values:
            assert all(g["betas"][0] == values["betas[0]"] for g in groups if g.get("rule") is None)
        if "weight_decay" in values:
            assert any(math.isclose(g["weight_decay"], values["weight_decay"]) for g in groups)


def test_conda_is_compared_with_its_projection_on():
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
    opt = build_optimizer("conda", model, {"lr": 1e-3})
    assert all(g["update_proj_gap"] == 10 for g in opt.param_groups)


def test_schedule_warms_up_then_decays_to_zero():
    steps = 100  # warm-up: 5 steps
    assert [lr_factor(s, steps) for s in range(5)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert lr_factor(99, steps) == pytest.approx(0.0, abs=1e-12)  # the last update runs at lr 0... almost
    mid = 5 + (95 // 2)  # halfway through the cosine: (s - 5 + 1) / 95 = 0.5 at s = 51.5
    assert lr_factor(mid, steps) == pytest.approx(0.5 * (1 + math.cos(math.pi * (mid - 4) / 95)))
    values = [lr_factor(s, steps) for s in range(5, 100)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_plan_names_are_checked_and_listed():
    with pytest.raises(ArenaError, match="unknown optimizer.*nope.*valid optimizers: .*adamw"):
        make_plan("quick", optimizers=["adamw", "nope"])
    with pytest.raises(ArenaError, match="unknown workload.*mnist.*valid workloads: .*digits-mlp"):
        make_plan("quick", workloads=["mnist"])
    with pytest.raises(ArenaError, match="unknown suite"):
        make_plan("huge")
    with pytest.raises(ArenaError, match=r"trials must be an integer in \[1, inf\)"):
        make_plan("quick", trials=0)
    plan = make_plan("quick")
    assert plan.optimizers == [m for m in optarena.methods() if any(optarena.card(m).applies_to(w) for w in WORKLOADS)]
    assert plan.workloads == list(WORKLOADS)
    assert plan.trials == SUITES["quick"]["trials"]


def test_plan_budget_is_equal_for_every_optimizer():
    plan = make_plan("quick", workloads=["rosenbrock", "noisy-quadratic", "charlm"], trials=3, seeds=2)
    specs = plan.studies()
    tune = [s for s in specs if s.kind == "tune"]
    assert {s.budget for s in tune} == {3} and {len(s.configs) for s in tune} == {3}  # the lr sweep first
    assert {tuple(c["point"][0] for c in s.configs) for s in tune} == {(-2, 0, 2)}  # the centre and x4 either side
    assert {s.configs[0]["steps"] for s in tune if s.workload == "charlm"} == {get_workload("charlm").budget("quick")}
    finals = [s for s in specs if s.kind == "final"]
    assert {tuple(c["seed"] for c in s.configs) for s in finals} == {(1, 2)}
    scale = [s for s in specs if s.kind == "scale"]
    assert [s.workload for s in scale] == ["noisy-quadratic"] and scale[0].optimizer == "adamw"
    assert sorted({c["factor"] for c in scale[0].configs}) == SUITES["quick"]["scale"]["noisy-quadratic"]


def test_studies_are_created_once_and_a_different_plan_is_refused(tmp_path):
    storage = open_storage(f"journal:{tmp_path / 's.journal'}")
    plan = make_plan("quick", optimizers=["adamw"], workloads=["rosenbrock"], trials=2, seeds=1)
    create_studies(storage, plan)
    create_studies(storage, plan)  # a rerun continues: nothing enqueued twice
    study = optuna.load_study(storage=storage, study_name=plan.study_name("rosenbrock", "adamw", "tune"))
    assert len(study.trials) == 1  # a budget of 2 starts with the centre alone (a sweep needs 3)
    assert load_plan(storage, plan.name) == plan == load_plan(storage, None)  # the only run
    assert plan.name.startswith("quick-") and plan.name == make_plan(
        "quick", optimizers=["adamw"], workloads=["rosenbrock"], trials=2, seeds=1).name  # same command, same run
    named = make_plan("quick", optimizers=["adamw"], workloads=["rosenbrock"], trials=2, seeds=1, name="mine")
    create_studies(storage, named)
    other = make_plan("quick", optimizers=["adamw"], workloads=["rosenbrock"], trials=3, seeds=1, name="mine")
    with pytest.raises(ArenaError, match="different plan"):
        create_studies(storage, other)
    changed = make_plan("quick", optimizers=["adamw"], workloads=["rosenbrock"], trials=3, seeds=1)
    assert changed.name != plan.name  # without --name, changed arguments make a new run beside the old
    create_studies(storage, changed)
    with pytest.raises(ArenaError, match=f"no arena run named 'x'; runs there: mine, {min(plan.name, changed.name)}"):
        load_plan(storage, "x")
    with pytest.raises(ArenaError, match="holds 3 arena runs.*name one with --name"):
        load_plan(storage, None)


def test_malformed_storage_urls_are_refused(tmp_path):
    for url in ("", "ftp://x", "just-a-name"):
        with pytest.raises(ArenaError, match="storage"):
            open_storage(url)
    with pytest.raises(ArenaError, match="directory"):
        open_storage(f"journal:{tmp_path}")


def test_a_run_records_what_the_report_needs():
    record = train(get_workload("digits-mlp"), "adamw", {"lr": 3e-3, "weight_decay": 0.01, "betas[0]": 0.9},
                   seed=1, steps=40, evals=4)  # fmt: skip
    assert record["status"] == "ok" and record["steps_done"] == 40
    assert [s for s, _ in record["curve"]] == [10, 20, 30, 40]
    assert record["final"] == record["curve"][-1][1] == record["metrics"]["val_accuracy"]
    assert 0.5 < record["final"] <= 1.0
    assert record["state_bytes_per_param"] == 8.0  # exp_avg + exp_avg_sq in fp32
    assert record["step_ms"] > record["opt_step_ms"] > 0
    props = record["properties"]
    assert 1.0 <= props["effective_rank"] <= 128 and math.isfinite(props["activation_kurtosis"])


def test_divergence_is_a_result_not_a_crash():
    record = train(get_workload("rosenbrock"), "sgd", {"lr": 1.0, "weight_decay": 0.0, "momentum": 0.9},
                   seed=0, steps=50)  # fmt: skip
    assert record["status"] == "diverged" and record["final"] is None
    assert record["steps_done"] < 50


def test_state_bytes_count_every_state_tensor():
    model = torch.nn.Linear(10, 10)
    opt = optarena.create("lion", model.parameters())
    model(torch.ones(2, 10)).sum().backward()
    opt.step()
    assert state_bytes_per_param(opt) == 4.0  # one fp32 momentum


def test_concurrent_creation_of_one_run_enqueues_each_configuration_once(tmp_path):
    import threading

    url = f"journal:{tmp_path / 's.journal'}"
    plan = make_plan("quick", optimizers=["adamw", "sgd"], workloads=["rosenbrock", "zipf-memory"], trials=3, seeds=2)
    errors = []

    def create():
        try:
            create_studies(open_storage(url), plan)
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=create) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    storage = open_storage(url)
    for spec in plan.studies():
        configs = [t.user_attrs["config"] for t in optuna.load_study(storage=storage, study_name=spec.name).trials]
        assert sorted(configs) == [c["config"] for c in spec.configs], spec.name


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")  # train sets grads to None
def test_a_method_whose_card_needs_create_graph_is_trained_with_it():
    from optarena.registry import _CARDS, _REGISTRY

    seen = []

    class NeedsGraph(optarena.AdamW):
        def step(self, closure=None):
            seen.append(all(p.grad.requires_grad for g in self.param_groups for p in g["params"]))
            return super().step(closure)

    card = dataclasses.replace(optarena.card("adamw"), name="graph_test", cls=NeedsGraph, needs_create_graph=True)
    optarena.register("graph_test", NeedsGraph, card=card)
    try:
        record = train(get_workload("digits-mlp"), "graph_test", {"lr": 1e-3}, seed=0, steps=3, evals=1)
        plain = train(get_workload("digits-mlp"), "adamw", {"lr": 1e-3}, seed=0, steps=3, evals=1)
    finally:
        _REGISTRY.pop("graph_test"), _CARDS.pop("graph_test")
    assert record["status"] == "ok" and seen == [True, True, True]  # gradients carry their graph
    assert record["final"] == plain["final"]  # and the update is AdamW's


def test_a_trainer_card_runs_in_the_arena_where_it_applies(tmp_path, monkeypatch):
    """A method that is not an optimizer enters through its card: trained by its own function,
    on its workloads only, untuned when it declares nothing to tune, and left out of the profiles."""
    from optarena.arena.results import collect
    from optarena.arena.worker import Worker
    from optarena.cards import Card
    from optarena.registry import _CARDS

    calls = []

    def oracle(task, values, *, steps, seed):
        calls.append((values, steps, seed))
        with torch.no_grad():
            task.model.x.fill_(1.0)  # Rosenbrock's minimum

    card = Card("oracle_test", None, "a test", "none", {}, fixed={"knob": 3}, trainer=oracle, workloads=("rosenbrock",))
    optarena.register_trainer(card)
    try:
        with pytest.raises(ValueError, match="already registered"):
            optarena.register_trainer(dataclasses.replace(card, name="adamw"))
        plan = make_plan("quick", optimizers=["adamw", "oracle_test"], workloads=["rosenbrock", "noisy-quadratic"],
                         trials=3, seeds=2, steps=40, name="trainer")  # fmt: skip
        assert [s.name for s in plan.studies() if s.optimizer == "oracle_test"] == [
            "trainer:rosenbrock:oracle_test:tune", "trainer:rosenbrock:oracle_test:final"]
        with pytest.raises(ArenaError, match="oracle_test runs only on the workload.s. rosenbrock"):
            make_plan("quick", optimizers=["oracle_test"], workloads=["noisy-quadratic"])
        assert "oracle_test" not in make_plan("quick", workloads=["noisy-quadratic"]).optimizers
        storage = open_storage(f"journal:{tmp_path / 's.journal'}")
        create_studies(storage, plan)
        Worker(storage, plan).run()
        known = {"value": 0.0, "lower_bound": 0.0, "solver": "by hand"}  # Rosenbrock's minimum, as a certified optimum
        monkeypatch.setitem(WORKLOADS, "rosenbrock", dataclasses.replace(WORKLOADS["rosenbrock"], optimum=lambda: known))
        results = collect(storage, plan)
    finally:
        _CARDS.pop("oracle_test")
    assert calls == [({"knob": 3}, 40, 0), ({"knob": 3}, 40, 1), ({"knob": 3}, 40, 2)]  # one tuning run, 2 seeds
    run = results["runs"]["rosenbrock"]["oracle_test"]
    assert run["final"]["mean"] == 0.0 and run["tuned"]["trials"] == 1 and not run["tuned"]["under_tuned"]
    assert run["step_ms"] is not None and [s["curve"] for s in run["seeds"]] == [[[40, 0.0]], [[40, 0.0]]]
    assert "oracle_test" not in results["runs"]["noisy-quadratic"]
    assert set(results["profiles"]["score"]) == {"adamw"}
    assert results["methods"]["oracle_test"]["capabilities"]["fused"] == "not an optimizer"
    from optarena.arena.resultsfile import read_results

    typed = read_results(results)
    assert "oracle_test" not in typed.workloads["noisy-quadratic"].runs  # not "not run" where it does not apply
    assert typed.workloads["rosenbrock"].winner.optimizer == "oracle_test"
    assert results["optimum"] == {"rosenbrock": known}  # and the distance of every run to it
    assert run["gap"] == {"absolute": 0.0, "relative": None}
    adamw = results["runs"]["rosenbrock"]["adamw"]
    assert adamw["gap"]["absolute"] == adamw["final"]["mean"] > 0 and "gap" not in results["runs"]["noisy-quadratic"]["adamw"]
