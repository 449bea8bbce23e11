"""``segmenter bench --json``: a small run against the session's broker and Redis.

Only the shape of the report is checked: every figure present, positive and finite, latency
samples collected. Timing targets are never asserted (the machine may be busy).
"""

from __future__ import annotations

import math
import subprocess
import sys

import orjson
import pytest

from streams.benchmarks.history_bench import spec
from streams.generate.history import history_events
from streams.stack.children import settings_env

pytestmark = pytest.mark.integration

KEYS = (
    "throughput_ratio",
    "events_per_s",
    "ceiling_events_per_s",
    "p50_ms",
    "p99_ms",
    "bytes_per_customer",
    "api_p50_ms",
    "api_p99_ms",
    "api_rate",
    "timer_lateness_p99_ms",
    "events",
    "customers",
    "workers",
    "ceiling_cpu_us_per_event",
    "worker_cpu_us_per_event",
    "cpu_ratio",
    "live_cpu_workers_pct",
    "live_cpu_api_pct",
    "live_cpu_bench_pct",
    "deliver_per_s",
    "deliver_requests",
    "deliver_cpu_us_per_migration",
    "cluster_1_events_per_s",
    "cluster_1_cpu_us_per_event",
    "cluster_3_events_per_s",
    "cluster_3_cpu_us_per_event",
    "cluster_scaling_ratio",
    "visitor_p50_ms",
    "visitor_p99_ms",
    "visitor_api_kb_per_stream",
    "visitor_api_mb_per_1000",
    "visitor_api_cpu_pct",
    "collect_events_per_s",
    "collect_cpu_us_per_event",
    "collect_latency_rate",
    "collect_p50_ms",
    "collect_p99_ms",
    "collect_cpu_api_pct",
    "history_events",
    "history_worker_events_per_s",
    "history_worker_cpu_us_per_event",
)


@pytest.mark.timeout(200)
def test_small_bench_reports_every_figure(kafka_bootstrap: str, redis_url: str) -> None:
    env = settings_env(kafka_bootstrap=kafka_bootstrap, redis_url=redis_url, log_level="warning")
    args = [
        *("--events", "3000", "--customers", "1000"),
        *("--rate", "200", "--seconds", "2", "--api-rate", "100"),
        *("--workers", "2"),
        "--deliver",
        "--redis-cluster",
        *("--visitors", "300"),
        "--collect",
        *("--history", "100"),
    ]
    done = subprocess.run(
        [sys.executable, "-m", "streams", "bench", "--json", *args],
        env=env,
        capture_output=True,
        timeout=190,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    lines = done.stdout.decode().strip().splitlines()
    assert len(lines) == 1, done.stdout.decode()
    report = orjson.loads(lines[0])

    for key in KEYS:
        assert key in report, key
        value = report[key]
        assert isinstance(value, int | float), (key, value)
        assert math.isfinite(value) and value > 0, (key, value)
    assert report["events"] == 3000
    assert report["customers"] == 1000
    assert report["workers"] == 2
    assert 0 < report["throughput_ratio"] < 10
    assert report["latency_samples"] > 0
    assert report["latency_samples"] <= report["latency_sent"]
    assert report["p50_ms"] <= report["p99_ms"]
    assert report["timer_samples"] > 0
    assert report["customers_stored"] > 0
    # (h): every migration reached the receiver (it counts distinct ids), in batches of <= 500.
    assert report["deliver_migrations"] == 3000
    assert report["deliver_requests"] >= 3000 / 500
    # (i): every master of the 3-master cluster holds a share of the partitioned layout's keys
    assert len(report["cluster_1_key_share"]) == 1
    shares = report["cluster_3_key_share"]
    assert len(shares) == 3 and all(share > 0 for share in shares), shares
    # (j): every stream opened, and every sampled visitor's stream got its segment change
    assert report["visitors"] == report["visitor_streams"] == 300
    assert report["visitor_samples"] == report["visitor_sent"] == 300
    assert report["visitor_p50_ms"] <= report["visitor_p99_ms"]
    # (k): every batch of the throughput phase was accepted, and the latency phase answered
    assert report["collect_events"] == 3000 - 8 * 100  # the 8 warm-up batches are not counted
    assert report["collect_errors"] == 0
    assert report["collect_latency_samples"] > 0
    assert report["collect_p50_ms"] <= report["collect_p99_ms"]
    # (m): the whole shop-shaped history was drained (no peer asked: no peer figures)
    assert report["history_events"] == sum(1 for _ in history_events(spec(100)))
    assert report["history_customers"] == 100
    assert report["history_peer_cpu_ratio"] is None
    # The session's broker and Redis were not started by the bench: no CPU figure for them.
    assert report["live_cpu_broker_pct"] is None
    assert report["live_cpu_redis_pct"] is None


PEER_KEYS = (
    "history_peer_cpu_us_per_event",
    "history_peer_cpu_ratio",
    "peer_worker_events_per_s",
    "peer_worker_cpu_us_per_event",
    "peer_events_per_s",
    "peer_cpu_us_per_event",
    "peer_cpu_ratio",
    "peer_throughput_ratio",
)


@pytest.mark.timeout(120)
def test_small_bench_with_the_peer_reports_the_ratios(kafka_bootstrap: str, redis_url: str) -> None:
    pytest.importorskip("quixstreams", reason="--peer needs the 'bench' extra (Quix Streams)")
    env = settings_env(kafka_bootstrap=kafka_bootstrap, redis_url=redis_url, log_level="warning")
    args = [
        *("--events", "2000", "--customers", "1000"),
        *("--rate", "100", "--seconds", "1", "--api-rate", "20"),
        *("--history", "100"),
    ]
    done = subprocess.run(
        [sys.executable, "-m", "streams", "bench", "--json", "--peer", *args],
        env=env,
        capture_output=True,
        timeout=110,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    report = orjson.loads(done.stdout.decode().strip().splitlines()[-1])
    for key in PEER_KEYS:
        value = report[key]
        assert isinstance(value, int | float), (key, value)
        assert math.isfinite(value) and value > 0, (key, value)
    # both sides read every event; the figures come from different processes
    assert 0 < report["peer_cpu_ratio"] < 100
    assert 0 < report["peer_throughput_ratio"] < 100
