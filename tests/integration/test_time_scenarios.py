"""Named time-driven scenarios of the default rule pack, through one real ``segmenter replay``.

One history, three customers:

* ``ada`` orders twice; ``lapsed`` comes exactly 90 days after the *last* order;
* ``cy`` adds to the cart and never checks out; ``cart_abandoner`` comes exactly one hour after
  the add, and goes when the add's hour bucket leaves the 1-day window;
* ``ed`` views five pages on five days; ``frequent_visitor`` (>= 5 Page Viewed within 7d, day
  buckets) comes with the fifth view and goes when the first view's day bucket ages out:
  at midnight 8 days after the first view's day, not 7 days after the view itself.

A last page view 120 days in moves the watermark past every due time.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import yaml

from tests.events import page, track

pytestmark = pytest.mark.integration

PACK = Path(__file__).resolve().parents[2] / "rules"
T0 = datetime(2025, 3, 3, 10, 10, tzinfo=UTC)


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_the_rules_say_what_these_scenarios_assume() -> None:
    visitor = yaml.safe_load((PACK / "frequent_visitor.yaml").read_text())
    assert visitor["condition"] == {
        "type": "event_count",
        "event": "Page Viewed",
        "within": "7d",
        "op": "ge",
        "value": 5,
    }
    lifecycle = yaml.safe_load((PACK / "lifecycle.yaml").read_text())
    lapsed = next(s for s in lifecycle["segments"] if s["id"] == "lapsed")
    assert {"type": "recency", "event": "Order Completed", "not_within": "90d"} in lapsed[
        "condition"
    ]["of"]


def test_lapsed_cart_abandoner_and_an_aging_window_at_their_exact_times(
    tmp_path: Path, kafka_bootstrap: str, redis_url: str
) -> None:
    add = T0 + timedelta(days=1, hours=2)  # 2025-03-04 12:10
    first_view = T0 + timedelta(days=2, hours=5, minutes=20)  # 2025-03-05 15:30
    docs = [
        track("o1", "ada", "Order Completed", T0, revenue=40),
        track("o2", "ada", "Order Completed", T0 + timedelta(days=10), revenue=25),
        track("a1", "cy", "Product Added", add, price=20),
        *(page(f"v{i}", "ed", first_view + timedelta(days=i)) for i in range(5)),
        page("v9", "ed", T0 + timedelta(days=120)),
    ]
    docs.sort(key=lambda d: d["timestamp"])
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"".join(orjson.dumps(d) + b"\n" for d in docs))
    out = tmp_path / "out.jsonl"
    env = dict(os.environ, SEGMENTER_KAFKA_BOOTSTRAP=kafka_bootstrap, SEGMENTER_REDIS_URL=redis_url)
    command = [sys.executable, "-m", "streams", "replay", "--events", str(events)]
    command += ["--rules", str(PACK), "--out", str(out)]
    result = subprocess.run(
        command,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    emitted = [orjson.loads(line) for line in out.read_bytes().splitlines()]

    def moves(subject: str, segment: str) -> list[tuple[str, str, str]]:
        return [
            (e["data"]["direction"], e["time"], e["data"]["trigger"]["kind"])
            for e in emitted
            if e["subject"] == subject and e["data"]["segment"] == segment
        ]

    last_order = T0 + timedelta(days=10)
    assert moves("ada", "lapsed") == [("entered", iso(last_order + timedelta(days=90)), "time")]
    lapsed = next(e for e in emitted if e["subject"] == "ada" and e["data"]["segment"] == "lapsed")
    assert lapsed["type"] == "segmenter.segment.entered"
    assert lapsed["data"]["from_segment"] == "at_risk"
    assert lapsed["data"]["trigger"] == {"kind": "time", "message_id": None, "event": None}

    # exact windows: the add leaves the 1-day window exactly one day after it
    assert moves("cy", "cart_abandoner") == [
        ("entered", iso(add + timedelta(hours=1)), "time"),
        ("exited", iso(add + timedelta(days=1)), "time"),
    ]

    # the first view leaves the 7-day window exactly seven days after it
    fifth_view = first_view + timedelta(days=4)
    assert moves("ed", "frequent_visitor") == [
        ("entered", iso(fifth_view), "event"),
        ("exited", iso(first_view + timedelta(days=7)), "time"),
    ]
    entered = next(
        e for e in emitted if e["subject"] == "ed" and e["data"]["segment"] == "frequent_visitor"
    )
    assert entered["data"]["trigger"] == {
        "kind": "event",
        "message_id": "v4",
        "event": "Page Viewed",
    }
