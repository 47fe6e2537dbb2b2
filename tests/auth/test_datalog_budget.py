"""The Datalog time budget is wall-clock (Biscuit's): an overrun that cost
this thread little CPU (it was preempted) is tried once more; one that burned
the budget is refused at once."""

from __future__ import annotations

import time

import biscuit_auth as bz
import pytest

from aspen.auth.verifier import MAX_DATALOG_TIME, within_budget

OVERRUN = MAX_DATALOG_TIME.total_seconds() * 1.2


def _limits_error() -> bz.AuthorizationError:
    return bz.AuthorizationError("authorization failed: execution limits")


def test_a_preempted_evaluation_is_tried_again():
    calls = []

    def evaluate() -> str:
        calls.append(1)
        if len(calls) == 1:
            time.sleep(OVERRUN)  # wall time passes, this thread's CPU time does not
            raise _limits_error()
        return "allowed"

    assert within_budget(evaluate) == "allowed" and len(calls) == 2


def test_an_evaluation_that_burns_the_budget_is_not():
    calls = []

    def evaluate() -> str:
        calls.append(1)
        end = time.thread_time() + OVERRUN
        while time.thread_time() < end:
            pass
        raise _limits_error()

    with pytest.raises(bz.AuthorizationError):
        within_budget(evaluate)
    assert len(calls) == 1


def test_other_failures_are_not_retried_and_a_second_overrun_stands():
    calls = []

    def denied() -> None:
        calls.append(1)
        raise bz.AuthorizationError("authorization failed: no policy matched")

    with pytest.raises(bz.AuthorizationError):
        within_budget(denied)
    assert len(calls) == 1

    def always_preempted() -> None:
        calls.append(1)
        time.sleep(OVERRUN)
        raise _limits_error()

    with pytest.raises(bz.AuthorizationError):
        within_budget(always_preempted)
    assert len(calls) == 3
