"""``segmenter up`` keeps its data over a stop: Ctrl-C, a SIGKILL of the whole stack, and
``--fresh``, as a user runs them in one working directory.

After each restart the customers, their segments and the segment sizes are what they were; the
next event is counted once (the embedded broker's new log starts again at offset 0, and that
must not be mistaken for records already applied); an event sent again with the same
``messageId`` after a restart is not counted twice. ``--fresh`` starts empty.
"""

from __future__ import annotations

import signal
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests import events
from tests.e2e.stack import UpStack, up_stacks, user_env, wait_until

pytestmark = pytest.mark.e2e
__all__ = ["up_stacks"]  # the fixture


def order(customer: str, revenue: float, message_id: str) -> dict[str, Any]:
    """An order stamped by ``segmenter send`` on arrival."""
    return events.order(message_id, customer, revenue, ts=None)


def orders_of(stack: UpStack, customer: str) -> int | None:
    status, body = stack.get(f"/v1/customers/{customer}")
    return int(body["features"]["orders"]) if status == 200 else None


def sizes(stack: UpStack) -> dict[str, int]:
    status, body = stack.get("/v1/segments")
    assert status == 200
    return {s["id"]: s["size"] for s in body["segments"]}


def test_up_keeps_customers_over_a_stop_a_kill_and_forgets_with_fresh(
    tmp_path: Path, up_stacks: list[UpStack]
) -> None:
    env = user_env()
    ada, bob = f"ada-{uuid.uuid4().hex[:6]}", f"bob-{uuid.uuid4().hex[:6]}"
    first, second = str(uuid.uuid4()), str(uuid.uuid4())

    stack = UpStack(tmp_path, env).wait_ready()
    assert "(empty)" in stack.output()
    stack.send(order(ada, 120.0, first), order(bob, 40.0, str(uuid.uuid4())))
    wait_until(lambda: orders_of(stack, ada) == 1 and orders_of(stack, bob) == 1, what="orders")
    before = sizes(stack)
    assert stack.stop(signal.SIGINT) == 0, stack.output()[-2000:]

    stack = UpStack(tmp_path, env).wait_ready()
    assert "kept 2 customers" in stack.output()
    assert orders_of(stack, ada) == 1 and orders_of(stack, bob) == 1
    assert sizes(stack) == before
    # the new log's first record (offset 0 again) is applied, and the old event sent again is not
    stack.send(order(ada, 80.0, second), order(ada, 120.0, first))
    wait_until(lambda: orders_of(stack, ada) == 2, what="the order after the restart")
    status, body = stack.get(f"/v1/customers/{ada}")
    assert body["features"]["revenue"] == 200.0, "the repeated messageId was counted again"
    time.sleep(2.5)  # the append-only file is written to disk every second
    stack.kill()

    stack = UpStack(tmp_path, env).wait_ready()
    status, body = stack.get(f"/v1/customers/{ada}")
    assert status == 200 and body["features"]["orders"] == 2
    assert body["features"]["revenue"] == 200.0
    assert stack.stop(signal.SIGTERM) == 0

    stack = UpStack(tmp_path, env, "--fresh").wait_ready()
    assert orders_of(stack, ada) is None and orders_of(stack, bob) is None
    assert sum(sizes(stack).values()) == 0
    assert stack.stop() == 0
