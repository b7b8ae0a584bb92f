"""Trainer selectors: deterministic given the seed, resumable from JSON state, and each doing
what its name says."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flame.config import SelectorSpec
from flame.errors import ConfigError
from flame.selection import Selector, make_selector, selector_names, statistical_utility
from flame_spec import SpecError, parse_job_spec

TRAINERS = [f"trainer-{i:02d}" for i in range(12)]
SPECS = [
    SelectorSpec(name="all"),
    SelectorSpec(name="random", kwargs={"k": 4}),
    SelectorSpec(name="fraction", kwargs={"f": 0.3}),
    SelectorSpec(name="fedbuff", kwargs={"c": 3}),
    SelectorSpec(name="oort", kwargs={"k": 4}),
]


def drive(selector: Selector, seed: int, rounds: range) -> list[list[str]]:
    """A run: each round some trainers are available, the chosen ones report back."""
    picks = []
    for rnd in rounds:
        rng = np.random.default_rng([seed, rnd])
        available = [t for t in TRAINERS if rng.random() < 0.85] or TRAINERS[:1]
        chosen = selector.select(list(rng.permutation(available)), rnd)
        picks.append(chosen)
        for t in chosen:
            if rng.random() < 0.8:  # some never report (they died or are still training)
                idx = int(t[-2:])
                selector.report(t, utility=float(idx * 10 + rng.random()), duration=1.0 + idx % 4)
    return picks


def test_every_documented_selector_is_registered() -> None:
    assert selector_names() == sorted(s.name for s in SPECS)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**63 - 1), run_seed=st.integers(0, 1000))
def test_selectors_are_deterministic_given_the_seed(
    spec: SelectorSpec, seed: int, run_seed: int
) -> None:
    a = drive(make_selector(spec, seed), run_seed, range(10))
    b = drive(make_selector(spec, seed), run_seed, range(10))
    assert a == b


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**63 - 1), run_seed=st.integers(0, 1000), split=st.integers(0, 12))
def test_a_resumed_selector_picks_what_the_undisturbed_one_would(
    spec: SelectorSpec, seed: int, run_seed: int, split: int
) -> None:
    undisturbed = drive(make_selector(spec, seed), run_seed, range(12))
    first = make_selector(spec, seed)
    before = drive(first, run_seed, range(split))
    checkpoint = json.loads(json.dumps(first.state()))  # plain JSON, as the checkpoint writes it
    resumed = make_selector(spec, seed=12345)  # the seed no longer matters: the state has the rng
    resumed.load_state(checkpoint)
    after = drive(resumed, run_seed, range(split, 12))
    assert before + after == undisturbed


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_candidate_order_does_not_matter(spec: SelectorSpec) -> None:
    a, b = make_selector(spec, 7), make_selector(spec, 7)
    for rnd in range(5):
        assert a.select(TRAINERS, rnd) == b.select(list(reversed(TRAINERS)), rnd)


def test_different_seeds_choose_differently() -> None:
    spec = SelectorSpec(name="random", kwargs={"k": 3})
    runs = {tuple(map(tuple, drive(make_selector(spec, s), 0, range(5)))) for s in range(5)}
    assert len(runs) > 1


def test_all_returns_every_candidate_once() -> None:
    sel = make_selector(SelectorSpec(name="all"), 0)
    assert sel.select(["b", "a", "b"], 0) == ["a", "b"]
    assert sel.select([], 1) == []


@settings(max_examples=50, deadline=None)
@given(k=st.integers(1, 15), n=st.integers(0, 12), seed=st.integers(0, 2**32 - 1))
def test_random_picks_k_distinct_available_trainers(k: int, n: int, seed: int) -> None:
    sel = make_selector(SelectorSpec(name="random", kwargs={"k": k}), seed)
    chosen = sel.select(TRAINERS[:n], 0)
    assert len(chosen) == min(k, n) == len(set(chosen))
    assert set(chosen) <= set(TRAINERS[:n])


def test_random_is_roughly_uniform() -> None:
    sel = make_selector(SelectorSpec(name="random", kwargs={"k": 3}), 1)
    counts = Counter(t for rnd in range(2000) for t in sel.select(TRAINERS, rnd))
    expected = 2000 * 3 / len(TRAINERS)
    assert all(abs(c - expected) < 0.15 * expected for c in counts.values())
    assert len(counts) == len(TRAINERS)


@pytest.mark.parametrize(
    ("f", "n", "want"), [(0.3, 10, 3), (0.01, 10, 1), (1.0, 7, 7), (0.5, 5, 2), (0.7, 10, 7)]
)
def test_fraction_selects_floor_f_n_and_at_least_one(f: float, n: int, want: int) -> None:
    sel = make_selector(SelectorSpec(name="fraction", kwargs={"f": f}), 0)
    assert len(sel.select(TRAINERS[:n], 0)) == want
    assert sel.select([], 1) == []


def test_fedbuff_keeps_at_most_c_in_flight_and_refills_on_report() -> None:
    sel = make_selector(SelectorSpec(name="fedbuff", kwargs={"c": 3}), 0)
    first = sel.select(TRAINERS, 0)
    assert len(first) == 3
    assert sel.select(TRAINERS, 0) == []  # all slots busy
    sel.report(first[0])
    second = sel.select(TRAINERS, 0)
    assert len(second) == 1 and second[0] not in first[1:]
    # A trainer in flight that disappears from the candidates (it died) frees its slot.
    alive = [t for t in TRAINERS if t != first[1]]
    third = sel.select(alive, 1)
    assert len(third) == 1 and first[1] not in third
    assert sel.state()["in_flight"] == sorted({first[2], second[0], third[0]})


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    c=st.integers(1, 6),
    events=st.lists(st.integers(0, 11), max_size=40),
)
def test_fedbuff_never_starts_a_trainer_twice(seed: int, c: int, events: list[int]) -> None:
    sel = make_selector(SelectorSpec(name="fedbuff", kwargs={"c": c}), seed)
    in_flight: set[str] = set()
    for e in events:
        chosen = sel.select(TRAINERS, 0)
        assert not set(chosen) & in_flight
        in_flight |= set(chosen)
        assert len(in_flight) <= c
        done = TRAINERS[e]
        sel.report(done)
        in_flight.discard(done)


def test_statistical_utility_is_n_times_rms_loss() -> None:
    assert statistical_utility([3.0, 4.0]) == pytest.approx(2 * np.sqrt(12.5))
    assert statistical_utility([]) == 0.0


def test_oort_explores_first_then_exploits_high_utility_fast_trainers() -> None:
    sel = make_selector(
        SelectorSpec(name="oort", kwargs={"k": 3, "epsilon": 1.0, "epsilon_decay": 1.0}),
        3,
    )
    seen: set[str] = set()
    for rnd in range(4):  # exploration visits unexplored trainers first
        chosen = sel.select(TRAINERS, rnd)
        assert not set(chosen) & seen
        seen |= set(chosen)
        for t in chosen:
            idx = int(t[-2:])
            # trainer-11 has the highest utility but is slow; 08..10 are useful and fast
            sel.report(t, utility=float(idx), duration=20.0 if idx == 11 else 1.0)
    counts = Counter(t for rnd in range(4, 204) for t in sel.select(TRAINERS, rnd))
    best = {"trainer-08", "trainer-09", "trainer-10"}
    assert sum(counts[t] for t in best) > 0.8 * sum(counts.values())
    assert counts["trainer-11"] < counts["trainer-10"]  # the duration penalty bites
    assert counts["trainer-00"] < counts["trainer-10"]


def test_oort_rejects_nonsense_feedback() -> None:
    sel = make_selector(SelectorSpec(name="oort", kwargs={"k": 2}), 0)
    with pytest.raises(ConfigError, match="utility"):
        sel.report("a", utility=float("nan"))
    with pytest.raises(ConfigError, match="duration"):
        sel.report("a", duration=-1.0)
    sel.report("a", utility=-3.0)  # e.g. a negative log-likelihood: ranked below higher ones
    sel.report("b", utility=2.0)
    assert sel.select(["a", "b"], 0) == ["a", "b"]  # k=2 takes both
    assert sel.state()["utility"] == {"a": -3.0, "b": 2.0}


@pytest.mark.parametrize(
    ("selector", "field"),
    [
        ({"name": "random"}, "selector.kwargs.k"),
        ({"name": "random", "kwargs": {"k": 0}}, "selector.kwargs.k"),
        ({"name": "random", "kwargs": {"k": "2"}}, "selector.kwargs.k"),
        ({"name": "fraction", "kwargs": {"f": 1.5}}, "selector.kwargs.f"),
        ({"name": "fedbuff", "kwargs": {"concurrency": 2}}, "selector.kwargs.c"),
        ({"name": "oort", "kwargs": {"k": 2, "epsilon": 2}}, "selector.kwargs.epsilon"),
        ({"name": "all", "kwargs": {"k": 2}}, "selector.kwargs.k"),
        ({"name": "best-effort"}, "selector.name"),
    ],
)
def test_bad_selectors_are_refused_by_the_job_spec_naming_the_field(
    selector: dict[str, object], field: str
) -> None:
    with pytest.raises(SpecError) as info:
        parse_job_spec({"selector": selector})
    assert field in info.value.fields


def test_loading_another_selectors_state_is_a_config_error() -> None:
    state = make_selector(SelectorSpec(name="random", kwargs={"k": 2}), 0).state()
    with pytest.raises(ConfigError, match="random"):
        make_selector(SelectorSpec(name="fraction", kwargs={"f": 0.5}), 0).load_state(state)
    broken = dict(state, rng={"state": "zz"})
    with pytest.raises(ConfigError, match="rng"):
        make_selector(SelectorSpec(name="random", kwargs={"k": 2}), 0).load_state(broken)
