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
import os
import secrets
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson
from pydantic import SecretStr

from streams.settings import Settings
from streams.stack.demo import import_demo_history
from streams.stack.embedded import EmbeddedBroker, EmbeddedRedis, StackError, free_port
from streams.stack.persist import DataDir, data_dir_of, drain, prepare_store
from streams.stack.rotate import Rotation
from streams.stack.supervise import Child, StopFlag, Stopped, Supervisor
from streams.stack.topics import ensure_topics, topic_layout

__all__ = ["Child", "StopFlag", "Stopped", "Supervisor", "run_up"]

HEALTH_TIMEOUT_S = 60.0

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


@dataclass
class Infrastructure:
    """The broker and Redis the stack uses: embedded ones it started, or configured ones."""

    kafka_bootstrap: str = ""
    redis_url: str = ""
    broker: EmbeddedBroker | None = None
    redis: EmbeddedRedis | None = None

    def start(
        self, settings: Settings, stop: StopFlag | None = None, redis_dir: Path | None = None
    ) -> Infrastructure:
        """Start what is not configured. On failure, whatever started is left for :meth:`stop`.

        With ``redis_dir``, the embedded Redis keeps its data there (append-only file, fsync
        every second) and finds it again at the next start.
        """
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
            self.redis = (
                EmbeddedRedis()
                if redis_dir is None
                else EmbeddedRedis(workdir=redis_dir, appendonly=True, fsync="everysec")
            )
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
            "SEGMENTER_LOG_RESETS": "true" if infra.broker is not None else "false",
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


def _start_data(settings: Settings, data: DataDir, fresh: bool) -> Path | None:
    """Lock the data directory of the embedded Redis (emptied with ``fresh``); None when Redis
    is configured (``SEGMENTER_REDIS_URL``: its data is its own)."""
    if settings.redis_url:
        if fresh:
            raise StackError(
                "--fresh empties the embedded Redis only, and SEGMENTER_REDIS_URL is set"
            )
        return None
    if fresh:
        _say(f"--fresh: starting with an empty {data.redis}")
    data.open(fresh)
    return data.redis


@dataclass(frozen=True)
class Endpoints:
    """Where the stack's worker and API answer."""

    worker: str
    api: str


def _start_children(
    settings: Settings, infra: Infrastructure, supervisor: Supervisor, stop: StopFlag, port: int
) -> Endpoints:
    """The worker, then the API once the worker answers."""
    worker_port = free_port(settings.http_host)
    env = child_env(settings, infra, worker_port)
    supervisor.add(Child("worker", list(WORKER_COMMAND), env))
    found = Endpoints(http_base_url(settings, worker_port), http_base_url(settings, port))
    wait_for_health(f"{found.worker}/healthz", supervisor, stop)
    supervisor.add(Child("api", list(API_COMMAND), child_env(settings, infra, port)))
    wait_for_health(f"{found.api}/healthz", supervisor, stop, what="the API")
    return found


def _rotation(
    settings: Settings,
    infra: Infrastructure,
    supervisor: Supervisor,
    stop: StopFlag,
    where: Endpoints,
    destinations: list[str],
) -> Rotation | None:
    """How ``up`` bounds its embedded broker (None with a configured Kafka)."""
    broker = infra.broker
    if broker is None:
        return None

    def restart_broker() -> None:
        broker.stop()
        broker.start()
        create_topics(settings, infra.kafka_bootstrap)

    addresses = {"kafka_bootstrap": infra.kafka_bootstrap, "redis_url": infra.redis_url}
    return Rotation(
        settings=settings.model_copy(update=addresses),
        restart_broker=restart_broker,
        wait_api=lambda: wait_for_health(f"{where.api}/healthz", supervisor, stop, what="the API"),
        wait_worker=lambda: wait_for_health(f"{where.worker}/healthz", supervisor, stop),
        deliver_groups=[f"{settings.deliver_group}.{d}" for d in destinations],
        say=_say,
        next_check=time.monotonic() + settings.embedded_check_s,
    )


def _stop_stack(
    settings: Settings, infra: Infrastructure, supervisor: Supervisor, destinations: list[str]
) -> None:
    """Producers first (the generator, the API's collector), then wait for the worker to apply
    and send what the broker holds (it keeps nothing over a restart), then the rest."""
    supervisor.stop_named({"generator", "api"})
    if supervisor.running("worker") and infra.kafka_bootstrap and infra.redis_url:
        addresses = {"kafka_bootstrap": infra.kafka_bootstrap, "redis_url": infra.redis_url}
        groups = [f"{settings.deliver_group}.{d}" for d in destinations]
        left = drain(settings.model_copy(update=addresses), _say, groups)
        if left > 0:
            _warn(f"stopping with {left} records not yet applied or sent (lost with the broker)")
    supervisor.stop_all()


def run_up(
    settings: Settings,
    generate_rate: float | None,
    customers: int,
    fresh: bool = False,
    history_months: float | None = None,
) -> int:
    """Run the embedded stack until SIGINT/SIGTERM; 0 on a clean stop, 1 on a start-up error."""
    stop = StopFlag()
    stop.install()
    infra = Infrastructure()
    supervisor = Supervisor()
    data = DataDir(data_dir_of(settings))
    stack_file: Path | None = None
    destinations: list[str] = []
    try:
        if generate_rate is not None and generate_rate <= 0:
            raise StackError("--generate RATE must be positive")
        settings = with_visitor_secret(settings)
        port = pick_http_port(settings)
        destinations = configured_destinations(settings)
        redis_dir = _start_data(settings, data, fresh)
        remove_stack_file(Path(settings.state_dir) / "stack.json")  # left by a killed run
        infra.start(settings, stop, redis_dir)
        stop.check()
        addresses = {"redis_url": infra.redis_url, "kafka_bootstrap": infra.kafka_bootstrap}
        kept = prepare_store(settings.model_copy(update=addresses), infra.broker is not None)
        if redis_dir is not None:
            _say(kept.describe(data.path))
        create_topics(settings, infra.kafka_bootstrap)
        stop.check()
        where = _start_children(settings, infra, supervisor, stop, port)
        http_url = where.api
        env = child_env(settings, infra, free_port(settings.http_host))
        if history_months and kept.customers:
            _say("data kept from an earlier run: no demo history imported")
        elif history_months:
            import_demo_history(history_months, customers, data.path, env, _say)
        if destinations:
            supervisor.add(Child("deliver", list(DELIVER_COMMAND), env))
        if generate_rate is not None:
            argv = generator_command(generate_rate, customers)
            supervisor.add(Child("generator", argv, env, restart_on_success=False))
        stack_file = write_stack_file(
            Path(settings.state_dir), infra.kafka_bootstrap, infra.redis_url, http_url
        )
        print(banner(settings, infra, http_url, destinations), flush=True)
        rotation = _rotation(settings, infra, supervisor, stop, where, destinations)
        while True:
            supervisor.poll()
            if rotation is not None and rotation.due(time.monotonic()):
                rotation.rotate(supervisor, stop)
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
        _stop_stack(settings, infra, supervisor, destinations)
        remove_stack_file(stack_file)
        infra.stop()
        data.close()
        stop.restore()
