"""``segmenter replay`` (real broker, real Redis) against the independent exact reference.

A long generated history (2,000 customers over eight months, with same-instant events and orders
exactly 7, 30 and 90 days apart on purpose) and a few small tie-heavy ones go through the real
pipeline as a user runs it; every customer's migrations must equal ``tests/exact_model.py``'s,
transition for transition, times equal to the millisecond, sequences 1..n.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings

from tests.exact_model import PACK, Migration, by_instant, expected_migrations, history, ms
from tests.unit.test_exact_history import small_histories

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def replay(docs: list[dict[str, Any]], workdir: Path, kafka: str, redis: str) -> Path:
    """Run ``segmenter replay`` on ``docs`` with the exact pack; the output file."""
    events = workdir / "events.jsonl"
    events.write_bytes(b"".join(orjson.dumps(doc) + b"\n" for doc in docs))
    out = workdir / "out.jsonl"
    env = dict(
        os.environ,
        SEGMENTER_KAFKA_BOOTSTRAP=kafka,
        SEGMENTER_REDIS_URL=redis,
        SEGMENTER_ALLOWED_LATENESS_S="0",
    )
    command = [sys.executable, "-m", "streams", "replay", "--events", str(events)]
    command += ["--rules", str(ROOT / PACK), "--out", str(out)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def read(out: Path) -> tuple[dict[str, list[Migration]], dict[str, list[int]]]:
    """Per customer: the migrations in the order written, and their sequence numbers."""
    got: dict[str, list[Migration]] = {}
    sequences: dict[str, list[int]] = {}
    for line in out.read_bytes().splitlines():
        event = orjson.loads(line)
        data = event["data"]
        subject = event["subject"]
        assert data["customer_id"] == subject
        got.setdefault(subject, []).append(
            (data["segment"], data["direction"], ms(event["time"]), data["trigger"]["kind"])
        )
        sequences.setdefault(subject, []).append(data["sequence"])
    return got, sequences


def compare(docs: list[dict[str, Any]], workdir: Path, kafka: str, redis: str) -> int:
    """Replay ``docs`` and assert equality with the reference; the number of migrations."""
    want = expected_migrations(docs)
    got, sequences = read(replay(docs, workdir, kafka, redis))
    for cid, moves in got.items():
        times = [m[2] for m in moves]
        assert times == sorted(times), f"{cid}: migrations out of time order"
        assert sequences[cid] == list(range(1, len(moves) + 1)), cid
    customers = sorted(set(want) | set(got))
    differing = [c for c in customers if by_instant(got.get(c, [])) != want.get(c, [])]
    shown = {
        c: {"replay": by_instant(got.get(c, [])), "reference": want.get(c)} for c in differing[:3]
    }
    assert not differing, f"{len(differing)} of {len(customers)} customers differ: {shown}"
    return sum(len(moves) for moves in want.values())


def test_a_long_history_replays_exactly(
    tmp_path: Path, kafka_bootstrap: str, redis_url: str
) -> None:
    docs = history(seed=2026, customers=2000, days=240)
    ties = len(docs) - len({(d["userId"], d["timestamp"]) for d in docs})
    assert len(docs) > 8000 and ties > 200, (len(docs), ties)
    total = compare(docs, tmp_path, kafka_bootstrap, redis_url)
    assert total > 10000


@settings(
    max_examples=2,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(docs=small_histories())
def test_tied_histories_replay_exactly(
    docs: list[dict[str, Any]],
    tmp_path_factory: pytest.TempPathFactory,
    kafka_bootstrap: str,
    redis_url: str,
) -> None:
    compare(docs, tmp_path_factory.mktemp("exact"), kafka_bootstrap, redis_url)
