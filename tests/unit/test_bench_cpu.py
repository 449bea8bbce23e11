"""The bench's CPU figures: read from /proc for the run's processes, None when unknowable."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from streams.benchmarks.common import BenchConfig, Throughput
from streams.benchmarks.cpu import SELF, CpuMeter, cpu_seconds, per_event_us
from streams.benchmarks.live import LiveReport
from streams.benchmarks.memory import MemoryReport
from streams.benchmarks.report import results, table

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

BURN = "import time\nend = time.process_time() + 3.0\nwhile time.process_time() < end: pass\n"


def _burn(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


@linux_only
def test_a_busy_child_is_charged_and_an_idle_one_is_not() -> None:
    busy = subprocess.Popen([sys.executable, "-c", BURN + "time.sleep(5)"])
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    try:
        time.sleep(0.1)
        meter = CpuMeter({"busy": [busy.pid], "idle": [idle.pid], "gone": [2**22 + 7]})
        meter.start()
        _burn(0.1)
        time.sleep(0.6)
        used = meter.used()
        share = meter.percent()
    finally:
        busy.kill()
        idle.kill()
        busy.wait()
        idle.wait()
    busy_s, idle_s, own_s, busy_pct = used["busy"], used["idle"], used[SELF], share["busy"]
    assert busy_s is not None and busy_s >= 0.1
    assert idle_s is not None and idle_s < 0.05
    assert used["gone"] is None
    assert own_s is not None and own_s >= 0.09
    assert busy_pct is not None and 10 < busy_pct <= 150
    assert share["gone"] is None


@linux_only
def test_cpu_seconds_of_this_process_grows_with_work() -> None:
    import os

    before = cpu_seconds(os.getpid())
    _burn(0.05)
    after = cpu_seconds(os.getpid())
    assert before is not None and after is not None
    assert after - before >= 0.03


def test_per_event_figure_is_none_when_unknown() -> None:
    assert per_event_us(None, 100) is None
    assert per_event_us(0.5, 0) is None
    assert per_event_us(0.5, 1000) == pytest.approx(500.0)


def _figures(live_cpu: dict[str, float | None]) -> dict[str, object]:
    live = LiveReport(sent=10, send_seconds=1.0, latencies=[5.0, 7.0], cpu_pct=live_cpu)
    memory = MemoryReport(customers=3, state=600.0, membership=150.0, timers=50.0)
    return results(
        BenchConfig(events=1000, customers=100),
        Throughput(20_000.0, 25.0),
        Throughput(4_000.0, 200.0),
        memory,
        live,
    )


def test_report_derives_the_cpu_ratio_and_lists_each_process_share() -> None:
    figures = _figures({"workers": 55.0, "broker": 47.5, "bench": 30.0})
    assert figures["throughput_ratio"] == pytest.approx(0.2)
    assert figures["cpu_ratio"] == pytest.approx(0.125)
    assert figures["worker_cpu_us_per_event"] == 200.0
    assert figures["live_cpu_broker_pct"] == 47.5
    assert figures["live_cpu_redis_pct"] is None
    text = table(figures, BenchConfig(events=1000, customers=100))
    assert "CPU while the live load ran, % of one core: workers 55.0, broker 47.5" in text
    assert "redis" not in text.splitlines()[-1]


def test_report_without_cpu_readings_says_nothing_about_them() -> None:
    figures = _figures({})
    assert figures["live_cpu_workers_pct"] is None
    assert "CPU while the live load ran" not in table(figures, BenchConfig())
