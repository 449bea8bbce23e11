"""``segmenter up`` as a user runs it, checked with ``kcat`` as an independent Kafka client.

Start ``up`` in a scratch directory, wait for ``.segmenter/stack.json``, produce Segment events
with kcat, read the migrations (CloudEvents headers, key, JSON value) and the DLQ with kcat, then
SIGTERM ``up`` and check that it exits 0 and leaves nothing behind.

kcat needs librdkafka >= 2.1 to talk to the embedded Tansu broker (2.0.x misreads the tagged
fields of its ApiVersions response). When the system librdkafka is older, the test uses the one
bundled with the ``confluent-kafka`` wheel if that is installed. Without a usable kcat the test
is skipped, except under CI (``CI`` set), where it fails.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.e2e.stack import UpStack, up_stacks, user_env
from tests.integration.test_up_stack import alive, children_of

pytestmark = pytest.mark.e2e
__all__ = ["up_stacks"]  # the fixture

MIGRATIONS_TIMEOUT_S = 60.0


def unusable(reason: str) -> None:
    """Skip on a developer's machine, fail under CI."""
    if os.environ.get("CI"):
        pytest.fail(f"kcat e2e test cannot run under CI: {reason}")
    pytest.skip(reason)


def bundled_librdkafka(scratch: Path) -> dict[str, str] | None:
    """An environment that makes kcat load the newer librdkafka of the confluent-kafka wheel."""
    spec = importlib.util.find_spec("confluent_kafka")
    if spec is None or not spec.submodule_search_locations:
        return None
    libs = Path(next(iter(spec.submodule_search_locations))).parent / "confluent_kafka.libs"
    found = sorted(libs.glob("librdkafka*.so*"))
    if not found:
        return None
    scratch.mkdir(parents=True, exist_ok=True)
    link = scratch / "librdkafka.so.1"
    if not link.exists():
        link.symlink_to(found[0])
    return {"LD_LIBRARY_PATH": f"{scratch}{os.pathsep}{libs}"}


class Kcat:
    """kcat against one broker."""

    def __init__(self, binary: str, bootstrap: str, env: dict[str, str]) -> None:
        self.binary, self.bootstrap, self.env = binary, bootstrap, env

    def run(self, *args: str, data: bytes | None = None, timeout: float = 30) -> bytes:
        proc = subprocess.run(
            [self.binary, "-b", self.bootstrap, *args],
            input=data,
            capture_output=True,
            timeout=timeout,
            env=self.env,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr.decode(errors="replace").strip()[-800:])
        return proc.stdout

    def works(self) -> str | None:
        """None when kcat can list the broker's metadata, else why not."""
        try:
            self.run("-L", "-m", "10", timeout=20)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            return str(exc).strip().splitlines()[-1][:300]
        return None

    def produce(self, topic: str, keyed: list[tuple[str, bytes]]) -> None:
        lines = b"".join(key.encode() + b"|" + value + b"\n" for key, value in keyed)
        self.run("-P", "-t", topic, "-K", "|", data=lines)

    def consume(self, topic: str) -> list[dict[str, Any]]:
        out = self.run("-C", "-t", topic, "-o", "beginning", "-e", "-J", "-q")
        return [orjson.loads(line) for line in out.splitlines() if line.strip()]


def headers_of(message: dict[str, Any]) -> dict[str, str]:
    flat = message.get("headers") or []
    return dict(zip(flat[0::2], flat[1::2], strict=True))


def accepts(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture
def stack(
    tmp_path: Path, up_stacks: list[UpStack]
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """``segmenter up`` running in ``tmp_path`` (killed with its children if the test fails)."""
    if shutil.which("kcat") is None:
        unusable("kcat is not installed (apt-get install kcat)")
    running = UpStack(tmp_path, user_env()).wait_ready()
    yield running.proc, tmp_path


def test_up_with_kcat(stack: tuple[subprocess.Popen[bytes], Path]) -> None:
    proc, workdir = stack
    stack_file = workdir / ".segmenter" / "stack.json"
    info = orjson.loads(stack_file.read_bytes())
    bootstrap = info["kafka_bootstrap"]
    kids = children_of(proc.pid)
    assert len(kids) >= 3  # broker, Redis, worker

    kcat = Kcat(shutil.which("kcat") or "kcat", bootstrap, dict(os.environ))
    problem = kcat.works()
    if problem is not None:
        extra = bundled_librdkafka(workdir / "rdkafka")
        if extra is not None:
            kcat.env.update(extra)
            problem = kcat.works()
    if problem is not None:
        unusable(
            "kcat cannot talk to the embedded broker: its librdkafka is older than 2.1 and no "
            f"newer one was found (install the confluent-kafka wheel): {problem}"
        )

    customer = f"e2e-{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    identify = {
        "type": "identify",
        "messageId": f"{customer}-1",
        "timestamp": now,
        "userId": customer,
        "traits": {"address": {"country": "CA", "city": "Toronto"}, "age": 30},
    }
    order = {
        "type": "track",
        "event": "Order Completed",
        "messageId": f"{customer}-2",
        "timestamp": now,
        "userId": customer,
        "properties": {"order_id": "o1", "revenue": 1500, "total": 1500, "currency": "USD"},
    }
    invalid = b'{"type": "track", "userId": "' + customer.encode() + b'", oops'
    kcat.produce(
        "segmenter.events",
        [(customer, orjson.dumps(identify)), (customer, orjson.dumps(order)), (customer, invalid)],
    )

    wanted = {("north_america", "entered"), ("high_value", "entered")}
    mine: list[dict[str, Any]] = []
    got: set[tuple[str, str]] = set()
    deadline = time.monotonic() + MIGRATIONS_TIMEOUT_S
    while time.monotonic() < deadline:
        mine = [m for m in kcat.consume("segmenter.migrations") if m.get("key") == customer]
        got = {
            (orjson.loads(m["payload"])["segment"], orjson.loads(m["payload"])["direction"])
            for m in mine
        }
        if wanted <= got:
            break
        time.sleep(1.0)
    assert wanted <= got, f"migrations for {customer}: {sorted(got)}"

    sequences = []
    for message in mine:
        value = orjson.loads(message["payload"])
        headers = headers_of(message)
        assert message["key"] == customer
        assert headers["ce_specversion"] == "1.0"
        assert headers["ce_type"] == f"segmenter.segment.{value['direction']}"
        assert headers["ce_subject"] == customer
        assert headers["ce_id"] and headers["ce_source"] and headers["ce_time"]
        assert headers["content-type"] == "application/json"
        assert value["customer_id"] == customer
        assert value["direction"] in ("entered", "exited")
        sequences.append(value["sequence"])
    sequences.sort()
    assert sequences == list(range(sequences[0], sequences[0] + len(sequences)))

    dead: list[dict[str, Any]] = []
    deadline = time.monotonic() + MIGRATIONS_TIMEOUT_S
    while time.monotonic() < deadline:
        dead = [m for m in kcat.consume("segmenter.events.dlq") if m["payload"] == invalid.decode()]
        if dead:
            break
        time.sleep(1.0)
    assert len(dead) == 1, "the invalid message is on the DLQ, unchanged"
    assert len(headers_of(dead[0])) >= 3  # error, source topic, partition, offset

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    assert not stack_file.exists()
    assert not accepts(bootstrap)
    assert not [pid for pid in kids if alive(pid)]
