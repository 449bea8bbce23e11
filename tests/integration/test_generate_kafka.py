"""``run_generate`` against the real broker: paced count, keys = customer ids, JSON values."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from streams.events.models import EVENT_ADAPTER
from streams.generate.runner import run_generate
from streams.settings import Settings
from streams.stack.topics import ensure_topics

pytestmark = pytest.mark.integration


async def consume_all(
    bootstrap: str, topic: str, expected: int, timeout: float = 30.0
) -> list[Any]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    records = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        idle = 0
        while asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            got = [r for part in batch.values() for r in part]
            records += got
            idle = 0 if got else idle + 1
            if len(records) >= expected and idle >= 3:
                break
    finally:
        await consumer.stop()
    return records


async def test_generate_produces_paced_keyed_json(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = f"{topic_prefix}.events"
    await ensure_topics(kafka_bootstrap, {topic: 3})
    settings = Settings(kafka_bootstrap=kafka_bootstrap, input_topic=topic, state_dir=tmp_path)
    rate, duration = 400.0, 6.0

    code = await run_generate(settings, rate=rate, customers=50, duration=duration, seed=11)

    assert code == 0
    out = capsys.readouterr().out
    assert "events sent" in out  # progress line after 5 s, and the final summary
    records = await consume_all(kafka_bootstrap, topic, expected=int(rate * duration))
    assert abs(len(records) - rate * duration) <= 0.05 * rate * duration
    for record in records:
        event = orjson.loads(record.value)
        parsed = EVENT_ADAPTER.validate_python(event)
        assert record.key == parsed.customer_id.encode()
    assert len({r.key for r in records}) > 10
    assert len({orjson.loads(r.value)["messageId"] for r in records}) == len(records)


async def test_generate_uses_the_stack_file_and_stops_on_sigterm(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    import signal
    import sys

    topic = f"{topic_prefix}.events"
    await ensure_topics(kafka_bootstrap, {topic: 1})
    (tmp_path / "stack.json").write_bytes(orjson.dumps({"kafka_bootstrap": kafka_bootstrap}))
    env = {
        "SEGMENTER_STATE_DIR": str(tmp_path),
        "SEGMENTER_INPUT_TOPIC": topic,
        "PATH": "/usr/bin:/bin",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streams",
        "generate",
        "--rate",
        "200",
        "--customers",
        "20",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    first = await asyncio.wait_for(proc.stdout.readline(), 20)
    assert kafka_bootstrap.encode() in first
    await asyncio.sleep(2.0)
    proc.send_signal(signal.SIGTERM)
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode()
    assert b"done" in out and b"Traceback" not in err
    records = await consume_all(kafka_bootstrap, topic, expected=200)
    assert len(records) >= 200
