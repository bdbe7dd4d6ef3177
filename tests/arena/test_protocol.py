"""The arena's protocol pieces: search spaces, plans, the schedule, one training run, bad input."""
from __future__ import annotations

import math

import optuna
import pytest
import torch

import optarena
from optarena.arena.errors import ArenaError
from optarena.arena.plan import SUITES, create_studies, load_plan, make_plan, tuning_points
from optarena.arena.storage import open_storage
from optarena.arena.train import build_optimizer, lr_factor, method_defaults, state_bytes_per_param, train
from optarena.arena.workloads import WORKLOADS, get_workload
from optarena.engine.search import Tunable, default_values, optimizer_kwargs


@pytest.mark.parametrize("name", optarena.available())
def test_every_optimizer_declares_a_search_space_around_its_defaults(name):
    rule = optarena.get(name).rule
    assert "lr" in rule.search_space and rule.search_space["lr"].log
    lr = rule.search_space["lr"]
    assert lr.low <= method_defaults(name)["lr"] <= lr.high  # the documented default is inside
    points = tuning_points(name, 5, seed=0)
    assert points[0] == default_values(rule.search_space, method_defaults(name))
    for point in points:
        assert set(point) == set(rule.search_space)
        for key, value in point.items():
            assert rule.search_space[key].low <= value <= rule.search_space[key].high
    assert points == tuning_points(name, 5, seed=0)  # deterministic
    assert len({tuple(p.values()) for p in points}) == 5  # distinct configurations


def test_every_point_builds_an_optimizer():
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8), torch.nn.Linear(8, 2))
    for name in optarena.available():
        for point in tuning_points(name, 3, seed=1):
            opt = build_optimizer(name, model, point)
            groups = opt.param_groups
            assert any(math.isclose(g["lr"], point["lr"]) for g in groups)
            if "aux_kwargs.lr" in point:  # the AdamW part of the split gets its own searched lr
                assert any(g.get("rule") == "adamw" and math.isclose(g["lr"], point["aux_kwargs.lr"]) for g in groups)
            if "betas[0]" in point:
                assert all(g["betas"][0] == point["betas[0]"] for g in groups if g.get("rule") is None)


def test_conda_is_compared_with_its_projection_on():
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
    opt = build_optimizer("conda", model, tuning_points("conda", 1, 0)[0])
    assert all(g["update_proj_gap"] == 10 for g in opt.param_groups)


def test_search_keys_map_to_constructor_arguments():
    kwargs = optimizer_kwargs({"lr": 0.1, "betas[0]": 0.8, "aux_kwargs.lr": 0.01}, {"betas": (0.9, 0.999)})
    assert kwargs == {"lr": 0.1, "betas": (0.8, 0.999), "aux_kwargs": {"lr": 0.01}}
    with pytest.raises(ValueError, match=r"betas\[5\]"):
        optimizer_kwargs({"betas[5]": 0.8}, {"betas": (0.9, 0.999)})
    assert Tunable(1e-4, 1e-2, log=True).at(0.5) == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="low > 0"):
        Tunable(0.0, 1.0, log=True)


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
    assert plan.optimizers == optarena.available() and plan.workloads == list(WORKLOADS)
    assert plan.trials == SUITES["quick"]["trials"]


def test_plan_budget_is_equal_for_every_optimizer():
    plan = make_plan("quick", workloads=["rosenbrock", "charlm"], trials=3, seeds=2)
    specs = plan.studies()
    tune = [s for s in specs if s.kind == "tune"]
    assert {len(s.configs) for s in tune} == {3}
    assert {s.configs[0]["steps"] for s in tune if s.workload == "charlm"} == {get_workload("charlm").budget("quick")}
    finals = [s for s in specs if s.kind == "final"]
    assert {tuple(c["seed"] for c in s.configs) for s in finals} == {(1, 2)}
    scale = [s for s in specs if s.kind == "scale"]
    assert [s.workload for s in scale] == ["charlm"] and scale[0].optimizer == "adamw"
    assert sorted({c["factor"] for c in scale[0].configs}) == SUITES["quick"]["scale"]["charlm"]


def test_studies_are_created_once_and_a_different_plan_is_refused(tmp_path):
    storage = open_storage(f"journal:{tmp_path / 's.journal'}")
    plan = make_plan("quick", optimizers=["adamw"], workloads=["rosenbrock"], trials=2, seeds=1)
    create_studies(storage, plan)
    create_studies(storage, plan)  # a rerun continues: nothing enqueued twice
    study = optuna.load_study(storage=storage, study_name=plan.study_name("rosenbrock", "adamw", "tune"))
    assert len(study.trials) == 2
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
