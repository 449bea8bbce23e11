"""Finding a running stack: configured settings first, else ``.segmenter/stack.json``."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

import orjson

from streams.settings import Settings


def stack_file(settings: Settings) -> Path:
    """Where ``segmenter up`` writes the addresses of the stack it runs."""
    return settings.state_dir / "stack.json"


def with_running_stack(settings: Settings) -> Settings:
    """``settings`` with Kafka, Redis and HTTP filled in from a running ``segmenter up``."""
    path = stack_file(settings)
    if (settings.kafka_bootstrap and settings.redis_url) or not path.exists():
        return settings
    try:
        stack = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return settings
    update: dict[str, object] = {}
    if not settings.kafka_bootstrap and stack.get("kafka_bootstrap"):
        update["kafka_bootstrap"] = stack["kafka_bootstrap"]
    if not settings.redis_url and stack.get("redis_url"):
        update["redis_url"] = stack["redis_url"]
    return settings.model_copy(update=update)


@contextlib.contextmanager
def broker_lock(settings: Settings, exclusive: bool = False) -> Iterator[None]:
    """Hold ``<state_dir>/broker.lock`` while producing to a running ``segmenter up``'s broker
    (shared), or while ``up`` replaces that broker (exclusive): a record that ``send`` got
    acknowledged is then never one of the old broker's last instant. Without a running stack
    (no ``stack.json``), nothing is locked."""
    if not exclusive and not stack_file(settings).exists():
        yield
        return
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    with (settings.state_dir / "broker.lock").open("ab") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
