"""``segmenter discover`` on planted groups that a real worker stored.

Four groups with different behavior (loyal buyers, browsers who never buy, lapsed one-time
buyers, brand-new buyers) go through the worker. Discovery must recover them (adjusted Rand
index >= 0.8), and its draft rules, checked by ``segmenter rules check`` and evaluated here
with the rule engine on the stored customers, must select each group with precision and recall
>= 0.8.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson
import pytest
from sklearn.metrics import adjusted_rand_score

from streams.api.queries import iter_states
from streams.engine import load_rules
from streams.models.discovery import discover, features
from streams.state.facts import StateFacts
from streams.store.redis_store import RedisStore
from tests.integration.harness import Deployment, event, keyed, produce

pytestmark = pytest.mark.integration
DAY = 86400.0
NOW = time.time()
GROUP = 50


def stamp(epoch: float) -> str:
    text = datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def planted(seed: int) -> tuple[list[dict[str, object]], dict[str, str]]:
    rng = np.random.default_rng(seed)
    docs: list[dict[str, object]] = []
    group_of: dict[str, str] = {}

    def add(user: str, kind: str, at: float, n: int, **fields: object) -> None:
        docs.append(event(kind, f"{user}-{n}", user, stamp(at), **fields))

    for c in range(GROUP):
        user = f"loyal{c:02d}"
        group_of[user] = "loyal"
        orders = int(rng.integers(6, 10))
        times = sorted(NOW - rng.uniform(1, 60, size=orders) * DAY)
        times[-1] = NOW - rng.uniform(0.2, 3) * DAY
        for n, at in enumerate(times):
            add(
                user,
                "track",
                at,
                n,
                event="Order Completed",
                properties={"revenue": float(rng.uniform(100, 200))},
            )
    for c in range(GROUP):
        user = f"browse{c:02d}"
        group_of[user] = "browsers"
        for n in range(int(rng.integers(25, 36))):
            add(user, "page", NOW - rng.uniform(0.1, 10) * DAY, n, name="Home")
    for c in range(GROUP):
        user = f"lapsed{c:02d}"
        group_of[user] = "lapsed"
        start = NOW - rng.uniform(150, 250) * DAY
        for n in range(int(rng.integers(1, 3))):
            add(
                user,
                "track",
                start + n * DAY,
                n,
                event="Order Completed",
                properties={"revenue": float(rng.uniform(30, 60))},
            )
    for c in range(GROUP):
        user = f"new{c:02d}"
        group_of[user] = "new"
        start = NOW - rng.uniform(1, 8) * DAY
        add(user, "page", start, 0, name="Home")
        add(
            user,
            "track",
            start + 3600,
            1,
            event="Order Completed",
            properties={"revenue": float(rng.uniform(40, 80))},
        )
    docs.sort(key=lambda d: str(d["timestamp"]))
    return docs, group_of


def test_discovery_recovers_planted_groups_and_drafts_rules_for_them(
    deployment: Deployment, tmp_path: Path
) -> None:
    asyncio.run(deployment.create_topics())
    docs, group_of = planted(seed=3)
    worker = deployment.worker()
    try:
        asyncio.run(produce(deployment.kafka, deployment.input, keyed(docs)))
        import redis

        client = redis.Redis.from_url(deployment.redis)
        deadline = time.monotonic() + 120
        while sum(
            int(v) + 1 for v in client.hgetall(f"{deployment.prefix}:offsets").values()
        ) < len(docs):
            assert time.monotonic() < deadline and worker.alive(), worker.log_tail()
            time.sleep(0.5)
    finally:
        worker.stop()

    out = tmp_path / "drafts"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "streams",
            "discover",
            "--k",
            "4",
            "--seed",
            "7",
            "--out",
            str(out),
            "--json",
        ],
        env=deployment.env(),
        capture_output=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr.decode()
    summary = orjson.loads(done.stdout)
    assert summary["k"] == 4 and len(list(out.glob("*.yaml"))) == 4
    checked = subprocess.run(
        [sys.executable, "-m", "streams", "rules", "check", str(out)],
        capture_output=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stderr.decode()
    for path in out.glob("*.yaml"):
        assert path.read_text().startswith("# Draft from `segmenter discover`")

    async def stored() -> list:  # type: ignore[type-arg]
        store = RedisStore.from_url(deployment.redis, deployment.prefix)
        try:
            return [s async for s in iter_states(store)]
        finally:
            await store.close()

    states = asyncio.run(stored())
    assert {s.customer_id for s in states} == set(group_of)
    now = time.time()
    found = discover(states, features("Order Completed", None), now, 4, 7)
    truth = [group_of[cid] for cid in found.customers]
    assert adjusted_rand_score(truth, found.labels) >= 0.8
    # The same seed gives the same clustering.
    again = discover(states, features("Order Completed", None), now, 4, 7)
    assert again.labels == found.labels

    drafts = load_rules(out)
    members: dict[str, set[str]] = {sid: set() for sid in drafts.ids}
    for state in states:
        for sid in drafts.evaluate(StateFacts(state, now)).members:
            members[sid].add(state.customer_id)
    for group in ("loyal", "browsers", "lapsed", "new"):
        wanted = {cid for cid, g in group_of.items() if g == group}
        best = max(members.values(), key=lambda got: len(got & wanted) / len(got | wanted))
        precision = len(best & wanted) / len(best)
        recall = len(best & wanted) / len(wanted)
        assert precision >= 0.8 and recall >= 0.8, (group, precision, recall)
