"""``segmenter replay`` through the real pipeline: contract output, and byte-identical twice."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.integration.harness import event, order, write_rules

pytestmark = pytest.mark.integration


def replay(
    events: Path, rules: Path, out: Path, kafka: str, redis: str
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, SEGMENTER_KAFKA_BOOTSTRAP=kafka, SEGMENTER_REDIS_URL=redis)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "streams",
            "replay",
            "--events",
            str(events),
            "--rules",
            str(rules),
            "--out",
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_replay_writes_structured_cloudevents_identically_twice(
    tmp_path: Path, kafka_bootstrap: str, redis_url: str
) -> None:
    rules = write_rules(tmp_path / "rules")
    docs = [
        event(
            "identify",
            "i1",
            "ada",
            "2025-03-01T09:00:00+01:00",
            traits={"address": {"country": "CA"}},
        ),
        order("o1", "ada", 200.0, "2025-03-02T10:00:00Z"),
        order("o2", "bob", 1500.0, "2025-03-02T11:00:00Z"),
        order("o3", "ada", 900.0, "2025-04-01T10:00:00Z"),
        event(
            "identify", "i2", "ada", "2025-05-01T09:00:00Z", traits={"address": {"country": "FR"}}
        ),
        event("erase", "e1", "bob", "2025-06-01T00:00:00Z"),
    ]
    events = tmp_path / "events.jsonl"
    lines = [orjson.dumps(d) for d in docs] + [b"not json at all"]
    events.write_bytes(b"\n".join(lines) + b"\n")

    first = replay(events, rules, tmp_path / "a.jsonl", kafka_bootstrap, redis_url)
    assert first.returncode == 0, first.stderr
    second = replay(events, rules, tmp_path / "b.jsonl", kafka_bootstrap, redis_url)
    assert second.returncode == 0, second.stderr
    out_a = (tmp_path / "a.jsonl").read_bytes()
    assert out_a == (tmp_path / "b.jsonl").read_bytes()

    emitted = [orjson.loads(line) for line in out_a.splitlines()]
    summary = [(e["subject"], e["data"]["segment"], e["data"]["direction"]) for e in emitted]
    assert summary == [
        ("ada", "canadians", "entered"),
        ("ada", "buyer", "entered"),
        ("bob", "big_spender", "entered"),
        ("ada", "buyer", "exited"),
        ("ada", "big_spender", "entered"),
        ("ada", "canadians", "exited"),
        ("bob", "big_spender", "exited"),
    ]
    first_event = emitted[0]
    for attribute in ("specversion", "id", "type", "source", "subject", "time", "data"):
        assert attribute in first_event
    assert first_event["specversion"] == "1.0"
    assert first_event["type"] == "segmenter.segment.entered"
    assert first_event["time"] == "2025-03-01T08:00:00.000Z"
    assert emitted[-1]["data"]["trigger"]["kind"] == "erasure"
    assert "1 events" not in first.stderr and "7 events" in first.stderr


def test_replay_reports_a_missing_file(
    tmp_path: Path, kafka_bootstrap: str, redis_url: str
) -> None:
    result = replay(
        tmp_path / "nope.jsonl", tmp_path, tmp_path / "out.jsonl", kafka_bootstrap, redis_url
    )
    assert result.returncode == 1
    assert "cannot read" in result.stderr and "nope.jsonl" in result.stderr
