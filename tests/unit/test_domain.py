"""The prediction state machine and the surfaces' status vocabularies."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from predictd.api.fashn import STATUSES as FASHN_STATUS
from predictd.core.domain import (
    NATIVE_STATUS,
    TERMINAL,
    TRANSITIONS,
    Page,
    Status,
    can_transition,
    new_id,
    sources_of,
)


def test_terminal_states_are_final() -> None:
    for status in TERMINAL:
        assert TRANSITIONS[status] == frozenset()


def test_every_state_has_a_name_on_both_surfaces() -> None:
    assert set(NATIVE_STATUS) == set(Status) == set(FASHN_STATUS)
    assert NATIVE_STATUS[Status.QUEUED] == "pending"
    assert FASHN_STATUS[Status.QUEUED] == "in_queue"
    assert FASHN_STATUS[Status.TIMED_OUT] == "time_out"
    assert NATIVE_STATUS[Status.TIMED_OUT] == "failed"


def test_sources_of_is_the_inverse_of_transitions() -> None:
    for target in Status:
        for source in Status:
            assert (source in sources_of(target)) == can_transition(source, target)


@given(st.lists(st.sampled_from(list(Status)), max_size=30))
def test_any_walk_through_legal_moves_never_leaves_a_terminal_state(moves: list[Status]) -> None:
    state = Status.QUEUED
    for target in moves:
        if can_transition(state, target):
            assert state not in TERMINAL
            state = target
    if state in TERMINAL:
        assert not any(can_transition(state, t) for t in Status)


def test_ids_are_unique_and_time_ordered() -> None:
    ids = [new_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert [i[:12] for i in ids] == sorted(i[:12] for i in ids)


def test_last_page_rounds_up_and_is_at_least_one() -> None:
    assert Page([], 0, 1, 20).last_page == 1
    assert Page([], 20, 1, 20).last_page == 1
    assert Page([], 21, 1, 20).last_page == 2
