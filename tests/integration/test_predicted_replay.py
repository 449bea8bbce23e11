"""A ``predicted`` rule through ``segmenter replay``: time-triggered entries at the crossing.

Customers with repeat orders enter ``fading`` (p_alive below 0.5) when, with no new order,
their P(alive) falls below the threshold. The expected instant comes from a brute-force scan of
P(alive) over time (hour steps, then second steps), computed here from the paper's closed form.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from streams.stack.children import settings_env

pytestmark = pytest.mark.integration
R, ALPHA, A, B = 0.6, 25.0, 0.8, 2.5
DAY = 86400.0
RULE = """
id: fading
name: Fading
description: a repeat buyer who has probably stopped buying
kind: lifecycle
condition:
  type: all
  of:
    - {type: lifetime, metric: orders, op: ge, value: 2}
    - {type: predicted, metric: p_alive, op: lt, value: 0.5}
"""


def p_alive(x: int, t_x: float, age: float) -> float:
    """Equation (10) of Fader, Hardie and Lee (2005), in days."""
    return 1 / (1 + A / (B + x - 1) * ((ALPHA + age) / (ALPHA + t_x)) ** (R + x))


def crossing(orders: list[float]) -> float:
    """The first whole second after the last order at which P(alive) < 0.5 (brute force)."""
    first, last, x = orders[0], orders[-1], len(orders) - 1
    t_x = (last - first) / DAY

    def below(at: float) -> bool:
        return p_alive(x, t_x, (at - first) / DAY) < 0.5

    hour = last
    while not below(hour + 3600):
        hour += 3600
    second = float(int(hour))
    while not below(second):
        second += 1
    return second


def stamp(epoch: float) -> str:
    text = datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def test_predicted_entries_happen_at_the_threshold_crossing(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "fading.yaml").write_text(RULE)
    models = tmp_path / "models.json"
    models.write_bytes(
        orjson.dumps(
            {
                "fitted_at": "2026-01-01T00:00:00Z",
                "customers": 1000,
                "repeat_customers": 400,
                "unit": "days",
                "conversion_event": "Order Completed",
                "bgnbd": {"r": R, "alpha": ALPHA, "a": A, "b": B},
                "gamma_gamma": None,
            }
        )
    )
    start = datetime(2026, 1, 5, tzinfo=UTC).timestamp()
    history: dict[str, list[float]] = {}
    lines = []
    for c in range(12):
        user = f"f{c:02d}"
        times = [start + c * 3.5 * DAY + 0.123]
        for n in range(1 + c % 3):
            times.append(times[-1] + (4 + 7 * ((c + n) % 5)) * DAY + 3600.25 * n)
        history[user] = times
        for n, at in enumerate(times):
            doc = {
                "type": "track",
                "messageId": f"{user}-{n}",
                "userId": user,
                "timestamp": stamp(at),
                "event": "Order Completed",
                "properties": {"revenue": 50},
            }
            lines.append((at, orjson.dumps(doc)))
    end = datetime(2026, 11, 30, tzinfo=UTC).timestamp()
    tail = {"type": "page", "messageId": "late", "userId": "clock", "timestamp": stamp(end)}
    lines.append((end, orjson.dumps(tail)))
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(line for _, line in sorted(lines)) + b"\n")
    out = tmp_path / "out.jsonl"
    env = settings_env(kafka_bootstrap=kafka_bootstrap, redis_url=redis_url, rules=rules)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "streams",
            "replay",
            "--events",
            str(events),
            "--out",
            str(out),
            "--models",
            str(models),
        ],
        env=env,
        capture_output=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    entered = {}
    for line in out.read_bytes().splitlines():
        event = orjson.loads(line)
        data = event["data"]
        if data["segment"] == "fading" and data["direction"] == "entered":
            assert data["trigger"]["kind"] == "time"
            assert data["reason"]["values"]["p_alive"] < 0.5
            entered[data["customer_id"]] = datetime.fromisoformat(
                event["time"].replace("Z", "+00:00")
            ).timestamp()
    assert set(entered) == set(history)
    for user, times in history.items():
        expected = crossing(times)
        # To the second: the migration happens within the second the scan found.
        assert expected - 1 < entered[user] <= expected, (user, entered[user], expected)
