"""The linearizability checker itself: it accepts valid concurrent
histories and rejects each kind of violation the coordination tests look for."""

from __future__ import annotations

from tests.coordination.linearizability import (
    INF,
    Op,
    check,
    counter_step,
    lock_step,
    queue_step,
    semaphore_step,
)


def test_counter_overlapping_adds_linearize_and_a_lost_one_does_not():
    ok = [Op(1, 0, 2, "add", 1, 2), Op(2, 1, 3, "add", 1, 1), Op(0, 4, 5, "get", None, 2)]
    assert check(ok, 0, counter_step)
    lost = [Op(1, 0, 2, "add", 1, 1), Op(2, 1, 3, "add", 1, 1)]
    assert not check(lost, 0, counter_step)
    # a killed add may or may not have happened
    assert check([Op(1, 0, INF, "add", 1), Op(0, 5, 6, "get", None, 1)], 0, counter_step)
    assert check([Op(1, 0, INF, "add", 1), Op(0, 5, 6, "get", None, 0)], 0, counter_step)


def test_lock_rejects_two_holders_and_decreasing_tokens():
    step = lock_step({})
    sequential = [Op(1, 0, 1, "acquire", None, 5), Op(1, 2, 3, "release", 5, True), Op(2, 4, 5, "acquire", None, 9)]
    assert check(sequential, (None, None, 0), step)
    both = [Op(1, 0, 1, "acquire", None, 5), Op(2, 2, 3, "acquire", None, 7), Op(1, 4, 5, "release", 5, True)]
    assert not check(both, (None, None, 0), step)
    backwards = [Op(1, 0, 1, "acquire", None, 9), Op(1, 2, 3, "release", 9, True), Op(2, 4, 5, "acquire", None, 5)]
    assert not check(backwards, (None, None, 0), step)


def test_lock_of_a_killed_holder_expires_only_after_the_kill():
    history = [Op(1, 0, 1, "acquire", None, 5), Op(2, 2, 3, "acquire", None, 7)]
    assert check(history, (None, None, 0), lock_step({1: 2.5}))
    assert not check(history, (None, None, 0), lock_step({1: 10.0}))  # still alive when 2 took it


def test_semaphore_rejects_over_admission():
    step = semaphore_step(2, {})
    fine = [Op(1, 0, 1, "acquire", None, 11), Op(2, 0, 1, "acquire", None, 12), Op(3, 2, 3, "acquire", None, None)]
    assert check(fine, (), step)
    over = [*fine[:2], Op(3, 2, 3, "acquire", None, 13)]
    assert not check(over, (), step)
    refused_while_free = [Op(1, 0, 1, "acquire", None, None)]
    assert not check(refused_while_free, (), step)


def test_queue_rejects_double_delivery_and_accepts_redelivery_after_a_kill():
    history = [Op(1, 0, 1, "enqueue", None, 1), Op(1, 2, 3, "dequeue", None, 1), Op(2, 4, 5, "dequeue", None, 1)]
    assert not check(history, ((), ()), queue_step({}, history))
    assert check(history, ((), ()), queue_step({1: 3.5}, history))
    empty_with_item = [Op(1, 0, 1, "enqueue", None, 1), Op(2, 2, 3, "dequeue", None, None)]
    assert not check(empty_with_item, ((), ()), queue_step({}, empty_with_item))
