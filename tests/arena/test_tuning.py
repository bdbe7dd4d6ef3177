"""The tuning procedure (arena/tuning.py) on synthetic objectives: it finds the grid optimum, extends
past a winning edge, flags what the budget left at an edge, and never repeats or overspends."""
from __future__ import annotations

import math

import pytest

import optarena
from optarena.arena import tuning
from optarena.cards import Axis, Card

LR = Axis(1e-3, 2.0, sweep=1)
WD = Axis(0.1, 4.0)
BETA = Axis(0.9, 2.0, scale="one_minus", low=0.0, high=0.999)


def tune(axes, loss, budget, higher=False):
    """Run the procedure to its end against `loss(point)`; returns the finished runs in order."""
    done = []
    batch = tuning.first_round(axes, budget)
    while batch:
        assert not {tuple(p) for p in batch} & {p for p, _ in done}, "a point was proposed twice"
        done += [(p, loss(p)) for p in batch]
        batch = tuning.next_round(axes, done, budget, higher)
    assert len(done) <= budget
    return done


def test_the_first_round_sweeps_lr_around_the_card_centre():
    axes = {"lr": LR, "weight_decay": WD}
    assert tuning.first_round(axes, 6) == [(-1, 0), (0, 0), (1, 0)]
    assert tuning.first_round(axes, 2) == [(0, 0)]  # too small a budget for a sweep: the centre
    assert tuning.values(axes, (-1, 2)) == {"lr": 5e-4, "weight_decay": pytest.approx(1.6)}
    with pytest.raises(ValueError, match=r"budget must be an integer in \[1, inf\)"):
        tuning.first_round(axes, 0)


def test_a_winning_edge_is_extended_until_the_optimum_is_inside():
    axes = {"lr": LR, "weight_decay": WD}
    loss = lambda p: (p[0] - 4) ** 2 + 0.1 * p[1] ** 2  # noqa: E731 - the best lr is 16x the centre
    done = tune(axes, loss, budget=12)
    summary = tuning.summary(axes, done, 12, higher_is_better=False)
    assert done[tuning.best(done, False)][0] == (4, 0)
    assert summary["axes"]["lr"]["best"] == pytest.approx(16e-3) and summary["axes"]["lr"]["edge"] is None
    assert summary["converged"] and not summary["under_tuned"]
    # the same search cut short: the best lr is the largest tried, and it says so
    short = tune(axes, loss, budget=4)
    cut = tuning.summary(axes, short, 4, higher_is_better=False)
    assert [p[0] for p, _ in short] == [-1, 0, 1, 2]
    assert cut["axes"]["lr"]["edge"] == "high" and cut["edges"] == ["lr"] and cut["under_tuned"]
    assert not cut["converged"] and cut["axes"]["weight_decay"] == {"values": [0.1], "best": 0.1, "edge": None,
                                                                     "searched": False}


def test_lr_is_searched_coarse_to_fine():
    axes = {"lr": Axis(1e-3, 2.0, sweep=1, stride=2), "weight_decay": WD}
    assert tuning.first_round(axes, 6) == [(-2, 0), (0, 0), (2, 0)]  # the centre and x4 either side
    done = tune(axes, lambda p: (p[0] - 5) ** 2 + p[1] ** 2, budget=20)
    assert [p[0] for p, _ in done[:7]] == [-2, 0, 2, 4, 6, 3, 5]  # x4 past the winning edge, then x2 around the best
    assert done[tuning.best(done, False)][0] == (5, 0)
    assert tuning.summary(axes, done, 20, False)["converged"]
    # with the quick suite's budget the optimum 32x away is bracketed at x4 resolution, and not flagged
    short = tune(axes, lambda p: (p[0] - 5) ** 2, budget=6)
    assert [p[0] for p, _ in short] == [-2, 0, 2, 4, 6] and not tuning.summary(axes, short, 6, False)["under_tuned"]


def test_a_search_where_every_run_failed_is_flagged_at_its_low_edge():
    axes = {"lr": LR, "weight_decay": WD}
    done = tune(axes, lambda p: math.nan, budget=4)
    summary = tuning.summary(axes, done, 4, False)
    assert summary["axes"]["lr"]["edge"] == "low" and summary["axes"]["lr"]["best"] == LR.value(-2)
    assert summary["under_tuned"] and summary["edges"] == ["lr"]


def test_coordinate_descent_reaches_the_grid_optimum_of_every_axis():
    axes = {"lr": LR, "weight_decay": WD, "betas[0]": BETA}
    target = (2, -1, 1)
    loss = lambda p: sum((a - b) ** 2 * w for a, b, w in zip(p, target, (1.0, 0.5, 0.25)))  # noqa: E731
    done = tune(axes, loss, budget=40)
    best = done[tuning.best(done, False)][0]
    assert best == target
    summary = tuning.summary(axes, done, 40, higher_is_better=False)
    assert summary["converged"] and summary["edges"] == [] and summary["trials"] == len(done) < 40
    assert summary["axes"]["betas[0]"]["best"] == pytest.approx(0.95)


def test_maximizing_and_ties_go_to_the_earlier_configuration():
    axes = {"lr": LR}
    done = tune(axes, lambda p: 1.0 if p[0] >= 0 else 0.5, budget=6, higher=True)  # a plateau from the centre up
    assert tuning.best(done, True) == 1  # the centre, the first of the tied points
    assert tuning.summary(axes, done, 6, True)["axes"]["lr"]["edge"] is None  # both sides of the centre were tried


def test_when_every_run_fails_the_search_goes_to_smaller_learning_rates():
    axes = {"lr": LR, "weight_decay": WD}
    done = tune(axes, lambda p: 1.0 if p[0] <= -3 else math.inf, budget=6)
    assert [p[0] for p, _ in done][:5] == [-1, 0, 1, -2, -3]
    assert done[tuning.best(done, False)][0][0] == -3


def test_an_axis_is_not_started_without_budget_for_both_neighbours():
    axes = {"lr": LR, "weight_decay": WD}
    done = tune(axes, lambda p: p[0] ** 2 + 0.01 * p[1], budget=4)  # lr settled after 3; 1 left, wd needs 2
    assert len(done) == 3 and not tuning.summary(axes, done, 4, False)["under_tuned"]


def test_a_hard_bound_is_not_an_edge():
    axes = {"lr": LR, "betas[0]": Axis(0.9, 10.0, scale="one_minus", low=0.0, high=0.99)}
    done = tune(axes, lambda p: p[0] ** 2 - p[1], budget=10)  # wants beta1 as close to 1 as allowed
    summary = tuning.summary(axes, done, 10, False)
    assert summary["axes"]["betas[0]"]["best"] == pytest.approx(0.99)
    assert summary["axes"]["betas[0]"]["edge"] is None and summary["converged"]


def test_axes_and_cards_refuse_what_they_cannot_search():
    with pytest.raises(ValueError, match=r"factor must be a finite number in \(1, inf\)"):
        Axis(1e-3, 1.0)
    with pytest.raises(ValueError, match=r"centre in \(0, inf\)"):
        Axis(0.0)
    with pytest.raises(ValueError, match=r"centre in \[0, 1\)"):
        Axis(1.0, scale="one_minus")
    with pytest.raises(ValueError, match="outside"):
        Axis(0.5, low=0.6)
    with pytest.raises(ValueError, match=r"stride must be an integer in \[1, inf\)"):
        Axis(0.5, stride=0)
    with pytest.raises(ValueError, match="must start with 'lr'"):
        Card("x", optarena.AdamW, "", "", {"weight_decay": WD, "lr": LR})
    with pytest.raises(ValueError, match="must start with 'lr'"):
        Card("x", optarena.AdamW, "", "", {"lr": LR, "weight_decay": Axis(0.1, sweep=1)})


@pytest.mark.parametrize("name", optarena.available())
def test_every_registered_method_has_a_card_with_sources(name):
    card = optarena.card(name)
    assert card.name == name and card.cls is optarena.get(name)
    assert card.paper and card.reference
    assert list(card.search)[0] == "lr" and (card.search["lr"].sweep, card.search["lr"].stride) == (1, 2)
    assert all(axis.source for axis in card.search.values())  # every centre says where it comes from
    described = card.describe()
    assert set(described["search"]) == set(card.search) and described["class"] == card.cls.__name__
    assert card.matrix_only == card.rule.matrix_only


def test_the_arena_refuses_a_method_without_a_card():
    from optarena.arena.errors import ArenaError
    from optarena.arena.plan import make_plan
    from optarena.registry import _CARDS, _REGISTRY

    class Plain(optarena.AdamW):
        pass

    optarena.register("plain_adamw_test", Plain)
    try:
        with pytest.raises(ValueError, match="'plain_adamw_test' has no card"):
            optarena.card("plain_adamw_test")
        with pytest.raises(ArenaError, match="has no card"):
            make_plan("quick", optimizers=["plain_adamw_test"])
        with pytest.raises(ValueError, match="card must describe"):
            optarena.register("other_test", Plain, card=optarena.card("adamw"))
    finally:
        _REGISTRY.pop("plain_adamw_test", None), _CARDS.pop("plain_adamw_test", None), _REGISTRY.pop("other_test", None)
