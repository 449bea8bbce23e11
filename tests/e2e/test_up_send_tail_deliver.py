"""``segmenter up`` with a destination, driven with ``segmenter send`` and ``segmenter tail``.

As a user runs it: a destination file in ``destinations/`` of the working directory, ``up``
starts the deliverer beside the worker; ``send`` puts events on the input topic (no Kafka tool
needed), ``tail`` prints the live migrations, and a real local HTTP receiver gets them, signed.
"""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.e2e.stack import UpStack, segmenter_command, up_stacks, user_env
from tests.integration.test_up_stack import alive, children_of
from tests.receiver import Receiver

pytestmark = pytest.mark.e2e
__all__ = ["up_stacks"]  # the fixture
SECRET = "e2e-secret"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver(SECRET.encode()).start()
    yield started
    started.stop()


@pytest.fixture
def up(
    tmp_path: Path, receiver: Receiver, up_stacks: list[UpStack]
) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, str]]]:
    (tmp_path / "destinations").mkdir()
    (tmp_path / "destinations" / "hook.yaml").write_text(
        f"id: hook\ntype: webhook\nurl: {receiver.url}\nsecret_env: HOOK_SECRET\n"
        "batch: {max_records: 50, linger_ms: 100}\n"
    )
    stack = UpStack(tmp_path, user_env(HOOK_SECRET=SECRET)).wait_ready()
    yield stack.proc, stack.env


def test_send_tail_and_deliver_beside_up(
    up: tuple[subprocess.Popen[bytes], dict[str, str]], receiver: Receiver, tmp_path: Path
) -> None:
    proc, env = up
    log = (tmp_path / "up-0.log").read_text(errors="replace")
    assert "deliver:   hook" in log
    customer = f"e2e-{uuid.uuid4().hex[:8]}"
    tail = subprocess.Popen(
        [*segmenter_command(), "tail", "--json", "--customer", customer, "--idle-exit", "6"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    time.sleep(2)  # tail starts at the end of the topic: let it get there first
    identify = {"type": "identify", "userId": customer, "traits": {"address": {"country": "CA"}}}
    order = {
        "type": "track",
        "userId": customer,
        "event": "Order Completed",
        "properties": {"revenue": 1500},
    }
    lines = orjson.dumps(identify) + b"\n" + orjson.dumps(order) + b"\n"
    sent = subprocess.run(
        [*segmenter_command(), "send"],
        cwd=tmp_path,
        env=env,
        input=lines,
        capture_output=True,
        timeout=60,
    )
    assert sent.returncode == 0, sent.stderr.decode()
    assert sent.stdout.decode().count("sent ") == 2
    bad = subprocess.run(
        [*segmenter_command(), "send", '{"type": "track", "event": "X"}'],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert bad.returncode == 1 and "userId" in bad.stderr.decode()

    out, err = tail.communicate(timeout=60)
    assert tail.returncode == 0, err.decode()
    printed = [orjson.loads(line) for line in out.decode().splitlines()]
    moves = {(e["data"]["segment"], e["data"]["direction"]) for e in printed}
    assert {("north_america", "entered"), ("high_value", "entered")} <= moves
    assert all(e["subject"] == customer and e["specversion"] == "1.0" for e in printed)

    deadline = time.monotonic() + 60
    wanted = {e["id"] for e in printed}
    while not wanted <= {i["id"] for i in receiver.items()}:
        assert time.monotonic() < deadline, "".join(
            p.read_text(errors="replace") for p in tmp_path.glob("up-*.log")
        )[-3000:]
        time.sleep(0.3)
    assert receiver.bad_signatures == 0

    kids = children_of(proc.pid)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    assert not [pid for pid in kids if alive(pid)]
