"""The worker's retries and exits, in process: one :class:`RetryPolicy` with an injected sleep
(the test records the waits instead of sleeping), errors that end the worker as typed
exceptions, and only the entry turning them into exit codes."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from streams.pipeline import worker
from streams.pipeline.retry import (
    EXIT_CONFIG,
    EXIT_INFRASTRUCTURE,
    EXIT_SOFTWARE,
    BatchLoopFailed,
    ConfigMismatch,
    GaveUp,
    RetryPolicy,
)
from streams.store.base import ConflictError


class Flaky:
    """Fails with each of ``errors`` in turn, then answers ``result``."""

    def __init__(self, errors: list[BaseException], result: str = "done") -> None:
        self.errors, self.result, self.calls = list(errors), result, 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.result


def policy(attempts: int = 8, longest: float = 5.0) -> tuple[RetryPolicy, list[float]]:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    return RetryPolicy(attempts, longest, sleep=sleep), waits


def test_infrastructure_errors_wait_doubling_up_to_the_longest_then_succeed() -> None:
    retry, waits = policy(longest=1.0)
    flaky = Flaky([RedisConnectionError("down")] * 4)
    assert asyncio.run(retry.run(flaky, "infrastructure error")) == "done"
    assert flaky.calls == 5
    assert waits == [0.2, 0.4, 0.8, 1.0]


def test_a_persistent_error_gives_up_after_the_budget_without_ending_the_process(
    caplog: Any,
) -> None:
    retry, waits = policy(attempts=3)
    flaky = Flaky([OSError("refused")] * 10)
    with pytest.raises(GaveUp) as raised:
        asyncio.run(retry.run(flaky, "cannot start yet"))
    assert raised.value.code == EXIT_INFRASTRUCTURE == 75
    assert flaky.calls == 3 and len(waits) == 3
    logged = [r.getMessage() for r in caplog.records]
    assert [m.split(": ")[0] for m in logged] == [
        f"cannot start yet (attempt {n}/3)" for n in (1, 2, 3)
    ]


def test_a_conflict_is_applied_again_at_once_and_counts_as_an_attempt() -> None:
    retry, waits = policy(attempts=3)
    seen: list[BaseException] = []
    flaky = Flaky([ConflictError("c1"), ConflictError("c1")])
    result = asyncio.run(
        retry.run(flaky, "x", again_at_once=(ConflictError,), on_error=seen.append)
    )
    assert result == "done" and waits == [] and len(seen) == 2
    with pytest.raises(GaveUp):
        asyncio.run(retry.run(Flaky([ConflictError("c")] * 3), "x", again_at_once=(ConflictError,)))


def test_errors_that_are_not_the_infrastructures_pass_through_at_once() -> None:
    retry, waits = policy()
    flaky = Flaky([ValueError("a bug")])
    with pytest.raises(ValueError):
        asyncio.run(retry.run(flaky, "x"))
    assert flaky.calls == 1 and waits == []


def test_each_fatal_error_names_its_exit_code() -> None:
    assert (GaveUp().code, ConfigMismatch().code, BatchLoopFailed().code) == (75, 78, 70)
    assert (EXIT_INFRASTRUCTURE, EXIT_CONFIG, EXIT_SOFTWARE) == (75, 78, 70)


def test_the_entrys_exit_request_keeps_the_first_code_and_stops_like_sigterm(
    monkeypatch: Any, tmp_path: Any
) -> None:
    signals: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: signals.append((pid, sig)))
    monkeypatch.setattr(worker, "STOP_GRACE_S", 3600.0)
    exits = worker.ExitRequest(str(tmp_path))
    exits(ConfigMismatch("layout"))
    exits(GaveUp("later"))
    assert exits.code == EXIT_CONFIG, "the first fatal error decides"
    assert signals == [(os.getpid(), signal.SIGTERM)], "one clean stop, the way SIGTERM does"
