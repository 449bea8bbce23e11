"""Property: ``segmenter replay`` through the real broker and Redis emits the reference model's
migrations (subject, segment, direction, time, trigger kind), for random histories."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings

from tests.reference_model import Migration, fold, to_ms
from tests.unit.test_time_properties import PACK, History, expected, histories

pytestmark = pytest.mark.integration


def replay(
    events: Path, rules: Path, out: Path, kafka: str, redis: str, lateness_s: float
) -> subprocess.CompletedProcess[str]:
    """Run ``segmenter replay`` as a user would."""
    env = dict(
        os.environ,
        SEGMENTER_KAFKA_BOOTSTRAP=kafka,
        SEGMENTER_REDIS_URL=redis,
        SEGMENTER_ALLOWED_LATENESS_S=str(lateness_s),
    )
    command = [sys.executable, "-m", "streams", "replay", "--events", str(events)]
    command += ["--rules", str(rules), "--out", str(out)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)


def replayed(
    history: History, workdir: Path, kafka: str, redis: str
) -> tuple[dict[str, list[Migration]], dict[str, list[int]]]:
    """The replay's migrations and sequence numbers per customer, in the order emitted."""
    rules = workdir / "rules"
    rules.mkdir(parents=True, exist_ok=True)
    for name, text in PACK.items():
        (rules / name).write_text(text)
    events = workdir / "events.jsonl"
    events.write_bytes(b"".join(orjson.dumps(doc) + b"\n" for doc in history.events))
    out = workdir / "out.jsonl"
    result = replay(events, rules, out, kafka, redis, history.lateness_s)
    assert result.returncode == 0, result.stderr
    migrations: dict[str, list[Migration]] = {}
    sequences: dict[str, list[int]] = {}
    for line in out.read_bytes().splitlines():
        event: dict[str, Any] = orjson.loads(line)
        data = event["data"]
        subject = event["subject"]
        assert data["customer_id"] == subject
        migrations.setdefault(subject, []).append(
            (data["segment"], data["direction"], to_ms(event["time"]), data["trigger"]["kind"])
        )
        sequences.setdefault(subject, []).append(data["sequence"])
    return migrations, sequences


@settings(
    max_examples=3,
    deadline=None,
    derandomize=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
        HealthCheck.filter_too_much,
    ],
)
@given(history=histories(max_steps=8, reorder=False))
def test_replay_migrations_equal_the_reference_model(
    history: History, tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str, redis_url: str
) -> None:
    model = expected(history)
    time_driven = [m for ms in model.migrations.values() for m in ms if m[3] == "time"]
    # every replayed example must exercise timers (the replay is the slow part, not this filter)
    assume(len(time_driven) >= 2 and len(history.events) >= 6)
    got, sequences = replayed(
        history, tmp_path_factory.mktemp("replay"), kafka_bootstrap, redis_url
    )
    want = {cid: stream for cid, stream in model.migrations.items() if stream}
    assert got == want
    for cid, stream in got.items():
        assert fold(stream) == model.final[cid]
        assert sequences[cid] == list(range(1, len(stream) + 1))
