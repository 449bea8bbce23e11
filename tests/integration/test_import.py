"""``segmenter import`` against the real broker and Redis, compared with ``segmenter replay``.

One generated shop history (with same-instant ties and identity merges) is replayed once (its
Redis namespace kept) and imported once; the tests compare the two namespaces field by field,
read what the import published, import it again, kill an import and resume it, cut over to a
live worker, and fit the models on an imported history drawn from them.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import redis
from scipy.optimize import minimize
from scipy.special import gammaln

from streams.deliver.config import DEFAULT_TRIGGERS
from streams.deliver.records import Record as Delivered
from streams.deliver.records import Selector
from streams.generate.history import HistorySpec, write_history
from streams.state.customer import CustomerState
from streams.store.redis_store import RedisStore
from tests.integration.harness import consume_until, produce

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
END = datetime(2026, 1, 1, tzinfo=UTC)
DAY = 86400.0


def env_for(kafka: str, redis_url: str, namespace: str, **extra: str) -> dict[str, str]:
    """A namespace of its own, with topics of its own, on the event clock."""
    return dict(
        os.environ,
        SEGMENTER_KAFKA_BOOTSTRAP=kafka,
        SEGMENTER_REDIS_URL=redis_url,
        SEGMENTER_NAMESPACE=namespace,
        SEGMENTER_CLOCK="event",
        SEGMENTER_RULES=str(ROOT / "rules"),
        SEGMENTER_INPUT_TOPIC=f"{namespace}.events",
        SEGMENTER_MIGRATIONS_TOPIC=f"{namespace}.migrations",
        SEGMENTER_DLQ_TOPIC=f"{namespace}.dlq",
        SEGMENTER_MEMBERSHIPS_TOPIC=f"{namespace}.memberships",
        SEGMENTER_SESSION_TIMEOUT_S="4",
        SEGMENTER_LOG_LEVEL="warning",
        **extra,
    )


def segmenter(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "streams", *args]
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


def import_json(path: Path, env: dict[str, str], cwd: Path, *extra: str) -> dict[str, Any]:
    done = segmenter("import", str(path), "--json", *extra, env=env, cwd=cwd)
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(orjson.loads(done.stdout))


async def dump(redis_url: str, namespace: str) -> dict[str, Any]:
    """Everything the comparison reads of a namespace: states, member sets, sizes, history."""
    store = RedisStore.from_url(redis_url, namespace)
    try:
        states: dict[str, CustomerState] = {}
        cursor = 0
        while True:
            cursor, ids = await store.scan_customers(cursor, 500)
            for cid in ids:
                stored = await store.get_state(cid)
                if stored is not None:
                    states[cid] = CustomerState.from_json(stored.data)
            if cursor == 0:
                break
        sizes = await store.segment_sizes()
        members = {
            segment: sorted(
                m.decode() for m in await store.client.smembers(store.keys.members(segment))
            )
            for segment in sizes
        }
        history = await store.history()
        return {"states": states, "sizes": sizes, "members": members, "history": history}
    finally:
        await store.close()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("import")


@pytest.fixture(scope="module")
def history_file(workdir: Path) -> Path:
    path = workdir / "history.jsonl"
    write_history(HistorySpec(customers=110, months=12, end=END, seed=23), path)
    return path


@pytest.fixture(scope="module")
def replayed(
    history_file: Path, workdir: Path, kafka_bootstrap: str, redis_url: str
) -> dict[str, Any]:
    namespace = f"r{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, SEGMENTER_KAFKA_BOOTSTRAP=kafka_bootstrap, SEGMENTER_REDIS_URL=redis_url)
    done = segmenter(
        "replay", "--events", str(history_file), "--rules", str(ROOT / "rules"),
        "--out", str(workdir / "replay.jsonl"), "--keep", namespace, env=env, cwd=workdir,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return asyncio.run(dump(redis_url, namespace))


@pytest.fixture(scope="module")
def imported(
    history_file: Path, workdir: Path, kafka_bootstrap: str, redis_url: str
) -> tuple[str, dict[str, str], dict[str, Any]]:
    namespace = f"i{uuid.uuid4().hex[:8]}"
    env = env_for(kafka_bootstrap, redis_url, namespace)
    return namespace, env, import_json(history_file, env, workdir)


def lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def test_an_import_ends_where_a_replay_of_the_file_ends(
    history_file: Path, replayed: dict[str, Any], imported: Any, redis_url: str
) -> None:
    namespace, _env, outcome = imported
    docs = lines(history_file)
    ties = len(docs) - len(
        {(d.get("userId") or d.get("anonymousId"), d["timestamp"]) for d in docs}
    )
    merges = sum(1 for d in docs if d["type"] == "identify" and "anonymousId" in d)
    assert ties > 20 and merges > 3, (ties, merges)
    ids = {d.get("userId") or d.get("anonymousId") for d in docs}
    assert (outcome["events"], outcome["rejected"], outcome["customers"]) == (
        len(docs),
        0,
        len(ids),
    )
    got = asyncio.run(dump(redis_url, namespace))
    want = replayed
    assert set(got["states"]) == set(want["states"])
    differing = [
        cid
        for cid, state in want["states"].items()
        # a quiet import numbers only the migrations it publishes: the sequence differs
        if replace(got["states"][cid], sequence=0, imported_until=None)
        != replace(state, sequence=0)
    ]
    assert not differing, (differing[:3], got["states"][differing[0]], want["states"][differing[0]])
    assert got["sizes"] == want["sizes"] and got["members"] == want["members"]
    assert got["history"] == want["history"], (namespace, sorted(set(got["states"]))[:1])
    assert len(got["history"].hours) > 100


def test_only_import_migrations_are_published_and_webhooks_skip_them(
    replayed: dict[str, Any], imported: Any, kafka_bootstrap: str
) -> None:
    namespace, _env, outcome = imported
    final = {cid: set(s.members) for cid, s in replayed["states"].items() if s.members}
    expected = sum(len(m) for m in final.values())
    records = asyncio.run(
        consume_until(
            kafka_bootstrap, f"{namespace}.migrations", lambda r: len(r) >= expected, settle=1.0
        )
    )
    assert len(records) == expected == outcome["import_migrations"]
    published: dict[str, set[str]] = defaultdict(set)
    for record in records:
        data = orjson.loads(record.value)
        headers = dict(record.headers)
        assert data["trigger"]["kind"] == "import" and data["direction"] == "entered"
        assert headers["ce_time"].decode() == datetime.fromtimestamp(outcome["end"], UTC).isoformat(
            timespec="milliseconds"
        ).replace("+00:00", "Z")
        published[data["customer_id"]].add(data["segment"])
        assert data["reason"]["rule"]
    assert published == final
    webhook = Selector(None, frozenset({"entered", "exited"}), frozenset(DEFAULT_TRIGGERS))
    asking = Selector(
        None, frozenset({"entered", "exited"}), frozenset({*DEFAULT_TRIGGERS, "import"})
    )
    delivered = [
        Delivered.of(r.partition, r.offset, r.key, r.value, list(r.headers)) for r in records
    ]
    assert not any(webhook.takes(r) for r in delivered)
    assert all(asking.takes(r) for r in delivered)


def test_importing_twice_changes_nothing(
    history_file: Path, imported: Any, redis_url: str, workdir: Path
) -> None:
    namespace, env, _outcome = imported
    before = asyncio.run(dump(redis_url, namespace))
    again = import_json(history_file, env, workdir)
    assert again["already_imported"] is True and again["events"] == 0
    assert asyncio.run(dump(redis_url, namespace)) == before


def test_a_killed_import_resumes_to_the_same_end(
    history_file: Path, imported: Any, kafka_bootstrap: str, redis_url: str, workdir: Path
) -> None:
    reference_ns, _env, outcome = imported
    namespace = f"k{uuid.uuid4().hex[:8]}"
    env = env_for(kafka_bootstrap, redis_url, namespace)
    command = [sys.executable, "-m", "streams", "import", str(history_file), "--batch", "50"]
    child = subprocess.Popen(command, env=env, cwd=workdir, stderr=subprocess.DEVNULL)
    client = redis.Redis.from_url(redis_url)
    progress = f"{namespace}:import:{outcome['run']}:progress"
    deadline = time.monotonic() + 120
    while int(client.hlen(progress)) < 3 and time.monotonic() < deadline:
        assert child.poll() is None, "the import ended before it could be killed"
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    half = asyncio.run(dump(redis_url, namespace))
    assert len(half["states"]) > 0, "nothing was committed before the kill"
    resumed = import_json(history_file, env, workdir)
    assert resumed["skipped"] > 0 and resumed["events"] + resumed["skipped"] == outcome["events"]
    got = asyncio.run(dump(redis_url, namespace))
    want = asyncio.run(dump(redis_url, reference_ns))
    assert got == want
    client.close()


def test_cut_over_counts_overlapping_events_once_and_applies_later_ones(
    history_file: Path, imported: Any, kafka_bootstrap: str, redis_url: str
) -> None:
    namespace, env, outcome = imported
    docs = lines(history_file)
    buyers = sorted({d["userId"] for d in docs if d.get("event") == "Order Completed"})[:4]
    overlap = [d for d in docs[-400:]]  # the tail of the history, on the live topic too
    end = outcome["end"]
    later = [
        {
            "type": "track", "messageId": f"live-{cid}", "userId": cid, "event": "Order Completed",
            "timestamp": datetime.fromtimestamp(end + 3600 * (n + 1), UTC).isoformat(),
            "properties": {"revenue": 10.0},
        }
        for n, cid in enumerate(buyers)
    ]  # fmt: skip
    before = asyncio.run(dump(redis_url, namespace))["states"]
    items = [
        ((d.get("userId") or d.get("anonymousId")).encode(), orjson.dumps(d))
        for d in [*overlap, *later]
    ]
    asyncio.run(produce(kafka_bootstrap, f"{namespace}.events", items))
    worker = subprocess.Popen(
        [sys.executable, "-m", "streams", "worker"],
        env={**env, "SEGMENTER_HTTP_PORT": "0", "SEGMENTER_IDLE_SETTLE_S": "1"},
        stderr=subprocess.DEVNULL,
    )
    try:
        asyncio.run(
            consume_until(
                kafka_bootstrap,
                f"{namespace}.migrations",
                lambda r: (
                    sum(orjson.loads(x.value)["trigger"]["kind"] == "event" for x in r)
                    >= len(buyers)
                ),
                timeout=90,
            )
        )
        after = asyncio.run(_wait_orders(redis_url, namespace, before, buyers))
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    for cid, state in after.items():
        old = before.get(cid)
        if cid in buyers:
            assert old is not None and state.orders == old.orders + 1
            assert state.revenue == pytest.approx(old.revenue + 10.0)
        else:  # only events the import applied already: nothing counted twice
            assert old is not None and (state.orders, state.events) == (old.orders, old.events)


async def _wait_orders(
    redis_url: str, namespace: str, before: dict[str, CustomerState], buyers: list[str]
) -> dict[str, CustomerState]:
    deadline = time.monotonic() + 60
    while True:
        states = (await dump(redis_url, namespace))["states"]
        if all(states[c].orders > before[c].orders for c in buyers) or time.monotonic() > deadline:
            return states
        await asyncio.sleep(0.3)


def test_model_fit_on_an_imported_history_recovers_its_parameters(
    workdir: Path, kafka_bootstrap: str, redis_url: str
) -> None:
    spec = HistorySpec(
        customers=2500, months=24, end=END, seed=5, buyers=1.0, browsing=False, season=0.0,
        anonymous=0.0, merged=0.0, consent=0.0, day_precision=0.0,
    )  # fmt: skip
    path = workdir / "orders.jsonl"
    write_history(spec, path)
    namespace = f"m{uuid.uuid4().hex[:8]}"
    env = env_for(kafka_bootstrap, redis_url, namespace)
    import_json(path, env, workdir)
    done = segmenter("model", "fit", "--json", env=env, cwd=workdir)
    assert done.returncode == 0, done.stderr[-2000:]
    fitted = orjson.loads(done.stdout)
    orders: dict[str, list[tuple[float, float]]] = defaultdict(list)
    clock = 0.0
    for doc in lines(path):
        at = datetime.fromisoformat(doc["timestamp"]).timestamp()
        clock = max(clock, at)
        if doc.get("event") == "Order Completed":
            orders[doc["userId"]].append((at, doc["properties"]["revenue"]))
    x = np.array([len(o) - 1 for o in orders.values()], dtype=float)
    t_x = np.array([(o[-1][0] - o[0][0]) / DAY for o in orders.values()])
    age = np.array([(clock - o[0][0]) / DAY for o in orders.values()])  # T to the namespace's clock
    bg = _scipy_bgnbd(x, t_x, age)
    for n, name in enumerate(("r", "alpha", "a", "b")):
        assert fitted["bgnbd"][name] == pytest.approx(bg[n], rel=0.01), name
        assert fitted["bgnbd"][name] == pytest.approx(getattr(spec, name), rel=0.3), name
    repeat = [
        (len(o) - 1, sum(v for _, v in o[1:]) / (len(o) - 1)) for o in orders.values() if len(o) > 1
    ]
    gg = _scipy_gamma_gamma(
        np.array([n for n, _ in repeat], float), np.array([m for _, m in repeat])
    )
    for n, name in enumerate(("p", "q", "v")):
        assert fitted["gamma_gamma"][name] == pytest.approx(gg[n], rel=0.02), name
    mean = lambda p, q, v: p * v / (q - 1)  # noqa: E731
    assert mean(*gg) == pytest.approx(mean(spec.p, spec.q, spec.v), rel=0.15)


def _scipy_bgnbd(x: np.ndarray, t_x: np.ndarray, age: np.ndarray) -> np.ndarray:
    """BG/NBD by maximum likelihood, written here from the paper's equation (6)."""

    def negative(logs: np.ndarray) -> float:
        r, alpha, a, b = np.exp(logs)
        head = gammaln(r + x) - gammaln(r) + r * math.log(alpha)
        beta = gammaln(a + b) + gammaln(b + x) - gammaln(b) - gammaln(a + b + x)
        alive = -(r + x) * np.log(alpha + age)
        with np.errstate(divide="ignore"):
            dropped = np.where(
                x > 0,
                np.log(a) - np.log(np.maximum(b + x - 1, 1e-300)) - (r + x) * np.log(alpha + t_x),
                -np.inf,
            )
        return -float(np.sum(head + beta + np.logaddexp(alive, dropped)))

    found = minimize(negative, np.log([0.5, 30.0, 1.0, 2.0]), method="Nelder-Mead",
                     options={"maxiter": 20000, "xatol": 1e-9, "fatol": 1e-10})  # fmt: skip
    return np.exp(found.x)


def _scipy_gamma_gamma(n: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Gamma-Gamma on the repeat orders (x of them averaging m), by maximum likelihood."""

    def negative(logs: np.ndarray) -> float:
        p, q, v = np.exp(logs)
        return -float(np.sum(
            gammaln(p * n + q) - gammaln(p * n) - gammaln(q) + q * np.log(v)
            + (p * n - 1) * np.log(m) + p * n * np.log(n) - (p * n + q) * np.log(n * m + v)
        ))  # fmt: skip

    best = None
    for start in ((1.0, 2.0, float(m.mean())), (5.0, 5.0, float(m.mean()) * 4)):
        found = minimize(negative, np.log(start), method="Nelder-Mead",
                         options={"maxiter": 20000, "xatol": 1e-9, "fatol": 1e-10})  # fmt: skip
        best = found if best is None or found.fun < best.fun else best
    assert best is not None
    return np.exp(best.x)
