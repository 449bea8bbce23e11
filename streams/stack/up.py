"""``segmenter up``: the embedded stack supervisor.

Starts, in order: the broker (embedded Tansu unless ``SEGMENTER_KAFKA_BOOTSTRAP`` is set), a Redis
server (embedded unless ``SEGMENTER_REDIS_URL`` is set), the topics, one worker child
(``python -m streams worker``), the API child, the deliverer (``python -m streams deliver``) when
``SEGMENTER_DESTINATIONS`` holds destination files, and, with ``--generate RATE``, the
synthetic traffic generator child. Once the worker answers ``GET /healthz`` it prints the
addresses and writes them to ``<state_dir>/stack.json``. Children that die are restarted with
backoff; five quick crashes in a row stop the stack with an error. SIGINT and SIGTERM stop
everything in reverse order and remove ``stack.json``.

The pieces (:class:`Infrastructure`, :func:`create_topics`, :func:`write_stack_file`,
:class:`Child`, :class:`Supervisor`, :func:`wait_for_health`) are usable on their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import orjson
from pydantic import SecretStr

from streams.settings import Settings
from streams.stack.embedded import EmbeddedBroker, EmbeddedRedis, StackError, free_port
from streams.stack.topics import ensure_topics, topic_layout

HEALTH_TIMEOUT_S = 60.0
QUICK_CRASH_S = 10.0
MAX_QUICK_CRASHES = 5
STOP_TIMEOUT_S = 10.0
_PR_SET_PDEATHSIG = 1

WORKER_COMMAND: list[str] = [sys.executable, "-m", "streams", "worker"]
API_COMMAND: list[str] = [sys.executable, "-m", "streams", "api"]
DELIVER_COMMAND: list[str] = [sys.executable, "-m", "streams", "deliver"]
"""How ``up`` starts its worker (a module attribute so tests can substitute a stand-in)."""


def generator_command(rate: float, customers: int) -> list[str]:
    """How ``up`` starts the traffic generator."""
    argv = [sys.executable, "-m", "streams", "generate"]
    return [*argv, "--rate", f"{rate:g}", "--customers", str(customers)]


def _say(message: str) -> None:
    print(f"segmenter up: {message}", flush=True)


def _warn(message: str) -> None:
    print(f"segmenter up: {message}", file=sys.stderr, flush=True)


class Stopped(Exception):
    """Raised inside ``run_up`` when SIGINT/SIGTERM arrived during start-up."""


class StopFlag:
    """Turns SIGINT and SIGTERM into a flag that the supervisor loop polls."""

    def __init__(self) -> None:
        self.stopping = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def install(self) -> None:
        """Catch SIGINT and SIGTERM (restored by :meth:`restore`)."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        """Put back the handlers that were there before :meth:`install`."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def check(self) -> None:
        """Raise :class:`Stopped` if a stop was requested."""
        if self.stopping:
            raise Stopped

    def sleep(self, seconds: float) -> None:
        """Sleep up to ``seconds``, waking early (and raising :class:`Stopped`) on a signal."""
        deadline = time.monotonic() + seconds
        while True:
            self.check()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.1))


@dataclass
class Infrastructure:
    """The broker and Redis the stack uses: embedded ones it started, or configured ones."""

    kafka_bootstrap: str = ""
    redis_url: str = ""
    broker: EmbeddedBroker | None = None
    redis: EmbeddedRedis | None = None

    def start(self, settings: Settings, stop: StopFlag | None = None) -> Infrastructure:
        """Start what is not configured. On failure, whatever started is left for :meth:`stop`."""
        if settings.kafka_bootstrap:
            self.kafka_bootstrap = settings.kafka_bootstrap
        else:
            _say("starting the embedded Kafka broker (Tansu)...")
            self.broker = EmbeddedBroker()
            self.kafka_bootstrap = self.broker.start()
        if stop is not None:
            stop.check()
        if settings.redis_url:
            self.redis_url = settings.redis_url
        else:
            _say("starting the embedded Redis server...")
            self.redis = EmbeddedRedis()
            self.redis_url = self.redis.start()
        return self

    def stop(self) -> None:
        """Stop the embedded servers this object started: Redis first, then the broker."""
        if self.redis is not None:
            self.redis.stop()
            self.redis = None
        if self.broker is not None:
            self.broker.stop()
            self.broker = None


def create_topics(settings: Settings, bootstrap: str, timeout: float = 30.0) -> None:
    """Create the segmenter's topics on ``bootstrap`` (a :class:`StackError` when it cannot)."""
    try:
        asyncio.run(ensure_topics(bootstrap, topic_layout(settings), timeout=timeout))
    except Exception as exc:
        raise StackError(f"could not create the topics on {bootstrap}: {exc}") from exc


def pick_http_port(settings: Settings) -> int:
    """``settings.http_port``, or a free port when it is 0; a busy port is a :class:`StackError`."""
    if settings.http_port == 0:
        return free_port(settings.http_host)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((settings.http_host, settings.http_port))
        except OSError as exc:
            raise StackError(
                f"HTTP port {settings.http_port} on {settings.http_host} is busy ({exc.strerror}): "
                "set SEGMENTER_HTTP_PORT to another port, or 0 for a free one"
            ) from exc
    return settings.http_port


def http_base_url(settings: Settings, port: int) -> str:
    """Where clients reach the HTTP API (loopback when it listens on every interface)."""
    host = "127.0.0.1" if settings.http_host in ("0.0.0.0", "", "::") else settings.http_host
    return f"http://{host}:{port}"


def write_stack_file(state_dir: Path, kafka_bootstrap: str, redis_url: str, http_url: str) -> Path:
    """Write ``{"kafka_bootstrap", "redis_url", "http_url"}`` to ``state_dir/stack.json``."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / "stack.json"
    payload = {"kafka_bootstrap": kafka_bootstrap, "redis_url": redis_url, "http_url": http_url}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_bytes(orjson.dumps(payload, option=orjson.OPT_INDENT_2) + b"\n")
    tmp.replace(path)
    return path


def remove_stack_file(path: Path | None) -> None:
    """Remove the stack file if it is there."""
    if path is not None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """In the child: get SIGTERM when the parent dies (Linux), even if it is SIGKILLed."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


@dataclass
class Child:
    """A supervised child process in its own process group, restarted with backoff."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str]
    restart_on_success: bool = True
    quick_crash_s: float = QUICK_CRASH_S
    max_quick_crashes: int = MAX_QUICK_CRASHES
    log: Callable[[str], None] = _warn
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    pids: list[int] = field(default_factory=list)
    quick_crashes: int = 0
    started_at: float = 0.0
    restart_at: float | None = None
    done: bool = False

    def start(self) -> None:
        """Start the process (its own session and process group)."""
        self.proc = subprocess.Popen(
            list(self.argv),
            env=dict(self.env),
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        self.pids.append(self.proc.pid)
        self.started_at = time.monotonic()
        self.restart_at = None

    def poll(self) -> None:
        """Restart the process when it has died and its backoff is over.

        Raises :class:`StackError` after ``max_quick_crashes`` crashes in a row, each within
        ``quick_crash_s`` of its start.
        """
        now = time.monotonic()
        if self.done:
            return
        if self.restart_at is not None:
            if now >= self.restart_at:
                self.start()
            return
        if self.proc is None or self.proc.poll() is None:
            return
        code = self.proc.returncode
        if code == 0 and not self.restart_on_success:
            self.log(f"{self.name} finished")
            self.done = True
            return
        if now - self.started_at < self.quick_crash_s:
            self.quick_crashes += 1
        else:
            self.quick_crashes = 1
        if self.quick_crashes >= self.max_quick_crashes:
            raise StackError(
                f"the {self.name} crashed {self.quick_crashes} times in a row "
                f"(last exit code {code}); giving up, see its output above"
            )
        delay = min(0.5 * 2 ** (self.quick_crashes - 1), 10.0)
        self.log(f"{self.name} exited with code {code}; restarting in {delay:g}s")
        self.restart_at = now + delay

    @property
    def running(self) -> bool:
        """True while the current process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM the process group, SIGKILL it after ``timeout`` seconds, and reap it."""
        self.done = True
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.log(f"{self.name} did not stop within {timeout:g}s; killing it")
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait(timeout=timeout)
        # Anything the child left in its group goes too.
        _signal_group(proc.pid, signal.SIGKILL)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


@dataclass
class Supervisor:
    """Children in start order; :meth:`poll` restarts the dead, :meth:`stop_all` ends them all."""

    children: list[Child] = field(default_factory=list)

    def add(self, child: Child) -> Child:
        """Start ``child`` and supervise it."""
        self.children.append(child)
        child.start()
        return child

    def poll(self) -> None:
        """Restart dead children (a :class:`StackError` when one keeps crashing)."""
        for child in self.children:
            child.poll()

    def stop_all(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop the children in reverse start order."""
        for child in reversed(self.children):
            child.stop(timeout)


def healthy(url: str, timeout: float = 1.0) -> bool:
    """True when ``GET url`` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_for_health(
    url: str,
    supervisor: Supervisor,
    stop: StopFlag,
    timeout: float = HEALTH_TIMEOUT_S,
    what: str = "the worker",
) -> None:
    """Wait until ``url`` answers 200, printing a dot a second and restarting crashed children."""
    print(f"segmenter up: waiting for {what} ({url}) ", end="", flush=True)
    deadline = time.monotonic() + timeout
    next_dot = time.monotonic() + 1.0
    try:
        while not healthy(url):
            supervisor.poll()
            if time.monotonic() > deadline:
                raise StackError(f"{what} did not answer {url} within {timeout:.0f}s")
            if time.monotonic() >= next_dot:
                print(".", end="", flush=True)
                next_dot += 1.0
            stop.sleep(0.2)
    finally:
        print(flush=True)


def child_env(settings: Settings, infra: Infrastructure, http_port: int) -> dict[str, str]:
    """The environment of the children: ours, plus the stack's addresses and settings."""
    env = dict(os.environ)
    env.update(
        {
            "SEGMENTER_KAFKA_BOOTSTRAP": infra.kafka_bootstrap,
            "SEGMENTER_REDIS_URL": infra.redis_url,
            "SEGMENTER_HTTP_PORT": str(http_port),
            "SEGMENTER_HTTP_HOST": settings.http_host,
            "SEGMENTER_RULES": str(settings.rules),
            "SEGMENTER_INPUT_TOPIC": settings.input_topic,
            "SEGMENTER_MIGRATIONS_TOPIC": settings.migrations_topic,
            "SEGMENTER_DLQ_TOPIC": settings.dlq_topic,
            "SEGMENTER_DESTINATIONS": str(Path(settings.destinations).resolve()),
            "PYTHONUNBUFFERED": "1",
        }
    )
    if settings.visitor_secret is not None:
        env["SEGMENTER_VISITOR_SECRET"] = settings.visitor_secret.get_secret_value()
    return env


def with_visitor_secret(settings: Settings) -> Settings:
    """``settings`` with a random visitor-token key when none is set: the stack's processes
    share it, and its tokens end with the stack (set ``SEGMENTER_VISITOR_SECRET`` to keep
    them valid over restarts)."""
    if settings.visitor_secret is not None:
        return settings
    return settings.model_copy(update={"visitor_secret": SecretStr(secrets.token_urlsafe(32))})


def banner(
    settings: Settings, infra: Infrastructure, http_url: str, destinations: Sequence[str] = ()
) -> str:
    """The lines printed once the stack is ready."""
    topics = ", ".join(topic_layout(settings))
    deliver = (
        f"  deliver:   {', '.join(destinations)}   (from {settings.destinations}/)\n"
        if destinations
        else ""
    )
    keys = len(settings.write_key_list())
    collect = (
        f"{keys} write key{'s' if keys > 1 else ''} from SEGMENTER_WRITE_KEYS"
        if keys
        else "off until SEGMENTER_WRITE_KEYS is set"
    )
    return (
        "segmenter is up\n"
        f"  kafka:     {infra.kafka_bootstrap}   (topics {topics})\n"
        f"  redis:     {infra.redis_url}\n"
        f"  http:      {http_url}/  (dashboard) · {http_url}/v1/segments\n"
        f"  collect:   {http_url}/v1/batch  (Segment's tracking API; {collect})\n"
        f"  demo:      {http_url}/demo?customer=<id>  (live content swap)\n"
        f"{deliver}"
        "Ctrl-C to stop."
    )


def configured_destinations(settings: Settings) -> list[str]:
    """The ids of the destination files ``up`` delivers to (a :class:`StackError` if invalid).

    The rule pack is read only when there are destination files (to check their segment ids);
    a pack that does not load is the worker's to report.
    """
    from streams.deliver.config import (
        DESTINATION_SUFFIXES,
        DestinationLoadError,
        load_destinations,
    )
    from streams.engine import RuleLoadError, load_rules

    directory = Path(settings.destinations)
    if not directory.is_dir() or not any(
        p.suffix in DESTINATION_SUFFIXES for p in directory.iterdir()
    ):
        return []
    try:
        kinds: dict[str, str] | None = {
            info.id: info.kind for info in load_rules(settings.rules).segments
        }
    except RuleLoadError:
        kinds = None
    try:
        found = load_destinations(directory, kinds)
    except DestinationLoadError as exc:
        problems = "\n".join(str(p) for p in exc.problems)
        raise StackError(f"cannot deliver to the destinations:\n{problems}") from exc
    return [d.id for d in found]


def run_up(settings: Settings, generate_rate: float | None, customers: int) -> int:
    """Run the embedded stack until SIGINT/SIGTERM; 0 on a clean stop, 1 on a start-up error."""
    stop = StopFlag()
    stop.install()
    infra = Infrastructure()
    supervisor = Supervisor()
    stack_file: Path | None = None
    try:
        if generate_rate is not None and generate_rate <= 0:
            raise StackError("--generate RATE must be positive")
        settings = with_visitor_secret(settings)
        port = pick_http_port(settings)
        destinations = configured_destinations(settings)
        infra.start(settings, stop)
        stop.check()
        create_topics(settings, infra.kafka_bootstrap)
        stop.check()
        worker_port = free_port(settings.http_host)
        env = child_env(settings, infra, worker_port)
        supervisor.add(Child("worker", list(WORKER_COMMAND), env))
        wait_for_health(f"{http_base_url(settings, worker_port)}/healthz", supervisor, stop)
        api_env = child_env(settings, infra, port)
        http_url = http_base_url(settings, port)
        supervisor.add(Child("api", list(API_COMMAND), api_env))
        wait_for_health(f"{http_url}/healthz", supervisor, stop, what="the API")
        if destinations:
            supervisor.add(Child("deliver", list(DELIVER_COMMAND), env))
        if generate_rate is not None:
            argv = generator_command(generate_rate, customers)
            supervisor.add(Child("generator", argv, env, restart_on_success=False))
        stack_file = write_stack_file(
            Path(settings.state_dir), infra.kafka_bootstrap, infra.redis_url, http_url
        )
        print(banner(settings, infra, http_url, destinations), flush=True)
        while True:
            supervisor.poll()
            stop.sleep(0.2)
    except Stopped:
        _say("stopping...")
        return 0
    except StackError as exc:
        _warn(str(exc))
        return 1
    except OSError as exc:
        _warn(f"cannot start the stack: {exc}")
        return 1
    finally:
        stop.stopping = False  # a second Ctrl-C must not interrupt the shutdown
        supervisor.stop_all()
        remove_stack_file(stack_file)
        infra.stop()
        stop.restore()
