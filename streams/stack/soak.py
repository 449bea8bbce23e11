"""``segmenter soak --minutes N``: ``segmenter up`` under steady synthetic traffic, sampled.

Runs ``segmenter up --generate RATE --fresh`` in a scratch directory (its own data directory,
the embedded broker and Redis, the worker, the API, the generator: what a user runs, broker
generations included), then every ``--sample-s`` seconds reads from ``/proc`` the CPU (percent
of one core over the interval) and resident memory of the broker, the worker and the API, and
how many records the broker holds. It prints one line a sample and, at the end, the comparison
that matters for a stack left running: the broker's mean CPU over the last five minutes against
its first five (the first and last fifth of a run shorter than ten minutes), its busiest
minute, and its memory at the start, the end and its most (``--json``: one object).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from streams.benchmarks.cpu import cpu_seconds
from streams.settings import Settings
from streams.stack.rotate import records_held
from streams.stack.supervise import StopFlag, Stopped

READY_TIMEOUT_S = 180.0
SWAP_WAIT_S = 10.0
"""How long a sample waits for a broker while ``up`` replaces it (there is none for a moment)."""


@dataclass(frozen=True)
class Sample:
    """One interval of the soak."""

    minute: float
    broker_cpu_pct: float
    broker_rss_mb: float
    worker_cpu_pct: float
    api_cpu_pct: float
    records_held: int
    broker_pid: int


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Meter:
    """CPU percent of one process between two readings."""

    def __init__(self, pid: int, since: float | None = None) -> None:
        """Measure from now, or (``since``: a process that started after that instant, a new
        broker generation) all the CPU it used since it started, over the time since ``since``."""
        self.pid = pid
        self.cpu = 0.0 if since is not None else cpu_seconds(pid) or 0.0
        self.at = since if since is not None else time.monotonic()

    def percent(self) -> float:
        """CPU used since the last call, as a percent of one core."""
        cpu, at = cpu_seconds(self.pid) or self.cpu, time.monotonic()
        used = 100.0 * (cpu - self.cpu) / max(at - self.at, 1e-9)
        self.cpu, self.at = cpu, at
        return round(used, 2)


def _window_mean(samples: list[Sample], first: bool) -> float:
    """The broker's mean CPU over the first (or last) five minutes of samples, or over the
    first (last) fifth of a run shorter than ten minutes."""
    span = samples[-1].minute
    if span >= 10.0:
        chosen = [s for s in samples if (s.minute <= 5.0 if first else s.minute > span - 5.0)]
    else:
        fifth = max(1, len(samples) // 5)
        chosen = samples[:fifth] if first else samples[-fifth:]
    return sum(s.broker_cpu_pct for s in chosen) / len(chosen)


def summary(samples: list[Sample]) -> dict[str, Any]:
    """The soak's verdict: the broker's CPU over the last five minutes against the first five
    (``broker_cpu_ratio``), its busiest minute, its memory at the start and the end."""
    if not samples:
        return {"samples": []}
    early, late = _window_mean(samples, True), _window_mean(samples, False)
    last = samples[-1]
    return {
        "samples": [asdict(s) for s in samples],
        "broker_cpu_first_pct": round(early, 2),
        "broker_cpu_last_pct": round(late, 2),
        "broker_cpu_ratio": round(late / early, 3) if early > 0 else None,
        "broker_cpu_max_pct": max(s.broker_cpu_pct for s in samples),
        "broker_rss_mb_first": round(samples[0].broker_rss_mb, 1),
        "broker_rss_mb_last": round(last.broker_rss_mb, 1),
        "broker_rss_mb_max": max(s.broker_rss_mb for s in samples),
        "records_held_last": last.records_held,
        "records_held_max": max(s.records_held for s in samples),
        "broker_generations": len({s.broker_pid for s in samples if s.broker_pid}),
    }


def _pids(parent: int) -> dict[str, int]:
    """The broker, worker and API processes under ``up`` (by their command lines)."""
    found: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if ppid != parent:
            continue
        line = b" ".join(argv)
        for role, mark in (
            ("broker", b"tansu"),
            ("worker", b"streams worker"),
            ("api", b"streams api"),
        ):
            if mark in line:
                found[role] = int(entry.name)
    return found


class Stack:
    """``segmenter up`` in a scratch directory."""

    def __init__(self, workdir: Path, rate: float, rules: Path) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("SEGMENTER_KAFKA_BOOTSTRAP",)}
        env.update({"SEGMENTER_HTTP_PORT": "0", "SEGMENTER_RULES": str(rules.resolve())})
        self.workdir = workdir
        self.log = (workdir / "up.log").open("wb")
        argv = [sys.executable, "-m", "streams", "up", "--fresh", "--generate", f"{rate:g}"]
        self.proc = subprocess.Popen(
            argv, cwd=workdir, env=env, stdout=self.log, stderr=subprocess.STDOUT
        )

    def ready(self, stop: StopFlag) -> Settings:
        """Wait for ``stack.json``; the stack's settings (its broker's address)."""
        stack_file = self.workdir / ".segmenter" / "stack.json"
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not stack_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = (self.workdir / "up.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"segmenter up did not start:\n{tail}")
            stop.sleep(0.5)
        return Settings(kafka_bootstrap=orjson.loads(stack_file.read_bytes())["kafka_bootstrap"])

    def stop(self) -> None:
        """SIGINT ``up`` and wait for it."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def _running(parent: int, stop: StopFlag) -> tuple[dict[str, int], float]:
    """The processes under ``up`` and the broker's resident MB, once there is a broker to
    measure: a sample that falls in a broker swap waits for the new one (up to
    :data:`SWAP_WAIT_S`) rather than report no memory."""
    deadline = time.monotonic() + SWAP_WAIT_S
    while True:
        pids = _pids(parent)
        broker_mb = rss_mb(pids.get("broker", 0))
        if broker_mb > 0 or time.monotonic() >= deadline:
            return pids, broker_mb
        stop.sleep(0.2)


def _sample(
    stack: Stack, settings: Settings, meters: dict[str, Meter], minute: float, stop: StopFlag
) -> Sample:
    pids, broker_mb = _running(stack.proc.pid, stop)
    for role, pid in pids.items():
        if role not in meters or meters[role].pid != pid:
            previous = meters[role].at if role in meters else None
            meters[role] = Meter(pid, since=previous)  # a new broker generation, or a restart
    pct = {
        role: meters[role].percent() if role in meters else 0.0
        for role in ("broker", "worker", "api")
    }
    return Sample(
        minute=round(minute, 2),
        broker_cpu_pct=pct["broker"],
        broker_rss_mb=round(broker_mb, 1),
        worker_cpu_pct=pct["worker"],
        api_cpu_pct=pct["api"],
        records_held=records_held(settings),
        broker_pid=pids.get("broker", 0),
    )


def _measure(
    stack: Stack, settings: Settings, minutes: float, every: float, stop: StopFlag
) -> list[Sample]:
    meters = {role: Meter(pid) for role, pid in _pids(stack.proc.pid).items()}
    started, samples = time.monotonic(), []
    try:
        while time.monotonic() - started < minutes * 60:
            stop.sleep(min(every, minutes * 60 - (time.monotonic() - started)))
            minute = (time.monotonic() - started) / 60
            sample = _sample(stack, settings, meters, minute, stop)
            samples.append(sample)
            print(f"soak: {orjson.dumps(asdict(sample)).decode()}", file=sys.stderr, flush=True)
    except Stopped:
        print("soak: stopped early", file=sys.stderr, flush=True)
    return samples


def run_soak(settings: Settings, minutes: float, rate: float, every: float, as_json: bool) -> int:
    """Run the soak; 0 when it ran, 1 when the stack would not start."""
    if settings.kafka_bootstrap:
        print(
            "segmenter soak: it measures the embedded broker; unset SEGMENTER_KAFKA_BOOTSTRAP",
            file=sys.stderr,
        )
        return 2
    stop = StopFlag()
    stop.install()
    with tempfile.TemporaryDirectory(prefix="segmenter-soak-") as scratch:
        stack = Stack(Path(scratch), rate, settings.rules)
        try:
            result = summary(_measure(stack, stack.ready(stop), minutes, every, stop))
        except (RuntimeError, Stopped) as exc:
            print(f"segmenter soak: {exc or 'stopped'}", file=sys.stderr)
            return 1
        finally:
            stop.restore()
            stack.stop()
    if as_json:
        print(orjson.dumps(result).decode())
    else:
        for key, value in result.items():
            if key != "samples":
                print(f"{key:>22}  {value}")
    return 0
