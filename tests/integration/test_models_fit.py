"""``segmenter model fit`` on customers a real worker stored, against an independent computation.

Orders drawn from the BG/NBD story go through the worker (real broker, real Redis). The command
must read the same summaries this test computes from the input (orders, first and last order,
revenue), publish the fit (``GET /v1/models``), serve predictions that match the paper's closed
forms computed here with SciPy, and report a calibration table whose counts and actual means
match the input.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from scipy.special import hyp2f1

from streams.api.http import HttpServer
from streams.engine import load_rules
from streams.models.fitting import Summary, fit_bgnbd
from streams.pipeline.metrics import Metrics
from streams.settings import Settings
from streams.stack.children import Child
from streams.store.redis_store import RedisStore
from tests.integration.harness import Deployment, consume_until, event, keyed, produce

pytestmark = pytest.mark.integration
DAY = 86400.0
NOW = time.time()


def stamp(epoch: float) -> str:
    text = datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def orders(customers: int, seed: int) -> dict[str, list[tuple[float, float]]]:
    """Each customer's orders (time, revenue): BG/NBD purchases, Gamma-Gamma values."""
    rng = np.random.default_rng(seed)
    found: dict[str, list[tuple[float, float]]] = {}
    for c in range(customers):
        start = NOW - rng.uniform(20, 85) * DAY
        rate, drop = rng.gamma(0.9, 1 / 9.0), rng.beta(0.8, 2.5)
        times, t = [start], start
        while True:
            t += rng.exponential(1 / rate) * DAY
            if t > NOW - 3600:
                break
            times.append(t)
            if rng.random() < drop:
                break
        # Whole milliseconds, as the pipeline keeps them.
        found[f"m{c:04d}"] = [(round(x, 3), float(round(rng.gamma(5.0, 12.0), 2))) for x in times]
    return found


def settle(deployment: Deployment, worker: Child, expected_orders: int) -> None:
    """Wait until the worker applied every order (its offsets cover the input)."""
    import redis

    client = redis.Redis.from_url(deployment.redis)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        offsets = client.hgetall(f"{deployment.prefix}:offsets")
        if sum(int(v) + 1 for v in offsets.values()) >= expected_orders:
            return
        assert worker.alive(), worker.log_tail()
        time.sleep(0.5)
    raise AssertionError("the worker did not apply every order")


def test_model_fit_reads_the_stored_customers_and_publishes(
    deployment: Deployment, tmp_path: Path
) -> None:
    asyncio.run(deployment.create_topics())
    history = orders(400, seed=5)
    docs = [
        event(
            "track",
            f"{cid}-{n}",
            cid,
            stamp(at),
            event="Order Completed",
            properties={"revenue": revenue},
        )
        for cid, items in history.items()
        for n, (at, revenue) in enumerate(items)
    ]
    docs.sort(key=lambda d: str(d["timestamp"]))
    worker = deployment.worker()
    try:
        asyncio.run(produce(deployment.kafka, deployment.input, keyed(docs)))
        settle(deployment, worker, len(docs))
        asyncio.run(consume_until(deployment.kafka, deployment.migrations, lambda r: bool(r)))
    finally:
        worker.stop()

    env = deployment.env()
    done = subprocess.run(
        [sys.executable, "-m", "streams", "model", "fit", "--json"],
        env=env,
        capture_output=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr.decode()
    fitted = orjson.loads(done.stdout)
    # an event-clock namespace: its now is its clock, the latest order applied
    now = max(at for items in history.values() for at, _ in items)
    rows = [
        (
            len(items),
            (items[-1][0] - items[0][0]) / DAY,
            (now - items[0][0]) / DAY,
            sum(v for _, v in items),
        )
        for items in history.values()
    ]
    assert fitted["customers"] == len(rows)
    assert fitted["repeat_customers"] == sum(1 for r in rows if r[0] > 1)
    mine = fit_bgnbd(Summary.of(rows))
    for name in ("r", "alpha", "a", "b"):
        assert fitted["bgnbd"][name] == pytest.approx(getattr(mine, name), rel=2e-3), name

    settings = Settings(redis_url=deployment.redis, namespace=deployment.prefix, clock="event")
    body = asyncio.run(api(settings, deployment, ["m0001", "m0002", "m0003", "m0010"]))
    assert body["models"]["version"] == fitted["version"]
    r, alpha, a, b = (fitted["bgnbd"][k] for k in ("r", "alpha", "a", "b"))
    for cid, view in body["customers"].items():
        items = history[cid]
        x = len(items) - 1
        t_x = (items[-1][0] - items[0][0]) / DAY
        age = (now - items[0][0]) / DAY  # predictions as of the namespace's clock
        odds = a / (b + x - 1) * ((alpha + age) / (alpha + t_x)) ** (r + x) if x > 0 else 0.0
        got = view["predictions"]
        assert got["p_alive"] == pytest.approx(1 / (1 + odds), rel=1e-4)
        t = 90.0
        expected = (
            (a + b + x - 1)
            / (a - 1)
            * (
                1
                - ((alpha + age) / (alpha + age + t)) ** (r + x)
                * hyp2f1(r + x, b + x, a + b + x - 1, t / (alpha + age + t))
            )
            / (1 + odds)
        )
        assert got["expected_orders_90d"] == pytest.approx(expected, rel=1e-3)
        assert got["clv_365d"] > 0

    end = NOW - 30 * DAY
    calibrated = subprocess.run(
        [
            sys.executable,
            "-m",
            "streams",
            "model",
            "fit",
            "--json",
            "--calibration-end",
            datetime.fromtimestamp(end, UTC).isoformat(),
        ],
        env=env,
        capture_output=True,
        timeout=300,
    )
    assert calibrated.returncode == 0, calibrated.stderr.decode()
    table = orjson.loads(calibrated.stdout)["calibration"]["groups"]
    groups: dict[str, list[int]] = {}
    for items in history.values():
        before = [at for at, _ in items if at < end]
        if not before:
            continue
        key = str(min(len(before) - 1, 7)) + ("+" if len(before) - 1 >= 7 else "")
        groups.setdefault(key, []).append(sum(1 for at, _ in items if at >= end))
    assert {g["repeat_purchases"]: g["customers"] for g in table} == {
        k: len(v) for k, v in groups.items()
    }
    for g in table:
        assert g["actual"] == pytest.approx(np.mean(groups[g["repeat_purchases"]]))
        assert g["predicted"] >= 0
    # The calibration run publishes nothing: the models are still the full fit.
    again = asyncio.run(api(settings, deployment, []))
    assert again["models"]["version"] == fitted["version"]


async def api(settings: Settings, deployment: Deployment, ids: list[str]) -> dict[str, Any]:
    store = RedisStore.from_settings(settings)

    async def health() -> dict[str, Any]:
        return {"ok": True}

    server = HttpServer(settings, load_rules(deployment.rules), store, Metrics(), health)
    found: dict[str, Any] = {"customers": {}}
    async with TestClient(TestServer(server.application())) as client:
        response = await client.get("/v1/models")
        assert response.status == 200, await response.text()
        found["models"] = await response.json()
        for cid in ids:
            asked = time.time()
            response = await client.get(f"/v1/customers/{cid}")
            assert response.status == 200
            found["customers"][cid] = {**(await response.json()), "asked_at": asked}
    await store.close()
    return found
