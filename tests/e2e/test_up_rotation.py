"""``segmenter up`` bounds its embedded broker: past ``SEGMENTER_EMBEDDED_MAX_RECORDS`` it
drains the stack and starts a new broker generation, and nothing sent meanwhile is lost.

Orders for new customers go in with ``segmenter send`` (a client that writes to Kafka directly,
which ``up`` cannot pause) before, during and after a rotation, each sent again until ``send``
succeeds (the same ``messageId``: counted once). At the end every customer has exactly its one
order, the broker holds less than everything ever sent, and a webhook destination received a
``high_value`` entry for every customer.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests import events
from tests.e2e.stack import UpStack, segmenter_command, up_stacks, user_env, wait_until
from tests.receiver import Receiver

pytestmark = pytest.mark.e2e
__all__ = ["up_stacks"]
SECRET = "rotation-secret"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver(SECRET.encode()).start()
    yield started
    started.stop()


def order(customer: str) -> dict[str, Any]:
    """A big order, stamped by ``segmenter send`` on arrival."""
    return events.order(f"order-{customer}", customer, 1500, ts=None)


def send_until_accepted(stack: UpStack, events: list[dict[str, Any]]) -> None:
    """``segmenter send`` as a careful client: the same events again until they are accepted."""
    lines = b"".join(orjson.dumps(e) + b"\n" for e in events)
    for _ in range(30):
        done = subprocess.run(
            [*segmenter_command(), "send"],
            cwd=stack.cwd,
            env=stack.env,
            input=lines,
            capture_output=True,
            timeout=60,
        )
        if done.returncode == 0:
            return
        time.sleep(1.0)
    pytest.fail(f"send never succeeded: {done.stderr.decode()}")


def test_a_new_broker_generation_loses_nothing(
    tmp_path: Path, receiver: Receiver, up_stacks: list[UpStack]
) -> None:
    (tmp_path / "destinations").mkdir()
    (tmp_path / "destinations" / "hook.yaml").write_text(
        f"id: hook\ntype: webhook\nurl: {receiver.url}\nsecret_env: HOOK_SECRET\n"
        "segments: [high_value]\nbatch: {max_records: 100, linger_ms: 100}\n"
    )
    env = user_env(
        SEGMENTER_EMBEDDED_MAX_RECORDS="1000", SEGMENTER_EMBEDDED_CHECK_S="1", HOOK_SECRET=SECRET
    )
    stack = UpStack(tmp_path, env).wait_ready()
    run = uuid.uuid4().hex[:6]
    first = [f"r{run}-{i}" for i in range(700)]
    send_until_accepted(stack, [order(c) for c in first])  # with migrations: over 1,000
    late: list[str] = []
    deadline = time.monotonic() + 90
    while "broker generation 2 ready" not in stack.output() or len(late) < 20:
        assert time.monotonic() < deadline, stack.output()[-3000:]
        batch = [f"r{run}-late-{len(late) + i}" for i in range(5)]
        send_until_accepted(stack, [order(c) for c in batch])
        late += batch
        time.sleep(0.2)
    everyone = first + late

    def all_counted() -> bool:
        status, body = stack.get("/v1/segments")
        sizes = {s["id"]: s["size"] for s in body["segments"]} if status == 200 else {}
        return sizes.get("high_value", 0) >= len(everyone)

    wait_until(all_counted, timeout=120, what="every order applied")
    for customer in [*first[:5], *late]:
        status, body = stack.get(f"/v1/customers/{customer}")
        assert status == 200, customer
        assert body["features"]["orders"] == 1, (customer, body["features"])
    status, body = stack.get("/v1/segments")
    assert {s["id"]: s["size"] for s in body["segments"]}["high_value"] == len(everyone)

    def delivered() -> set[str]:
        return {
            i["data"]["customer_id"]
            for i in receiver.items()
            if i["data"]["segment"] == "high_value" and i["data"]["direction"] == "entered"
        }

    deadline = time.monotonic() + 120
    while not delivered() >= set(everyone):
        missing = sorted(set(everyone) - delivered())
        assert time.monotonic() < deadline, (len(missing), missing[:10], len(receiver.items()))
        time.sleep(0.5)
    assert receiver.bad_signatures == 0
    assert stack.stop() == 0
