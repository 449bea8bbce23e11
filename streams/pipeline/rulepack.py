"""The active rule pack, published in Redis so that every worker runs the same rules.

``segmenter rules apply`` (or a worker noticing that its rule directory changed) validates the
files and publishes them under the store's ``rules`` meta value. Workers poll the published
version; on a change they swap their rules and backfill every customer they own
(:mod:`streams.pipeline.backfill`), emitting ``rule_change`` migrations unless the pack was
applied with ``--no-emit``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from streams.engine import RuleSet, parse_rules
from streams.engine.loader import RULE_SUFFIXES
from streams.store.base import Store

PACK = "rules"


@dataclass(frozen=True)
class Pack:
    """A published rule pack."""

    rules: RuleSet
    files: dict[str, str]
    emit: bool
    published_at: float


def read_directory(directory: Path) -> dict[str, str]:
    """The rule files of a directory, by name."""
    return {
        path.name: path.read_text()
        for path in sorted(directory.iterdir())
        if path.is_file() and path.suffix in RULE_SUFFIXES
    }


def directory_signature(directory: Path) -> tuple[tuple[str, int, int], ...]:
    """Names, sizes and modification times: changes when any rule file changes."""
    try:
        return tuple(
            (p.name, p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(directory.iterdir())
            if p.is_file() and p.suffix in RULE_SUFFIXES
        )
    except OSError:
        return ()


def newest_change(directory: Path) -> float:
    """When a rule file of the directory last changed (0 for none)."""
    return max((mtime / 1e9 for _, _, mtime in directory_signature(directory)), default=0.0)


async def publish(
    store: Store, files: dict[str, str], emit: bool, now: float | None = None
) -> RuleSet:
    """Validate ``files`` (raising ``RuleLoadError``) and make them the active pack, published
    at ``now`` (the system clock when None)."""
    rules = parse_rules(files)
    doc = {
        "version": rules.version,
        "files": files,
        "emit": emit,
        "published_at": time.time() if now is None else now,
    }
    await store.meta_set(PACK, orjson.dumps(doc))
    return rules


async def published(store: Store) -> Pack | None:
    """The active pack, or None before anything was published."""
    raw = await store.meta_get(PACK)
    if raw is None:
        return None
    doc = orjson.loads(raw)
    return Pack(
        rules=parse_rules(doc["files"]),
        files=doc["files"],
        emit=bool(doc.get("emit", True)),
        published_at=float(doc.get("published_at", 0.0)),
    )


async def published_version(store: Store) -> str | None:
    """The active pack's version, without compiling it."""
    raw = await store.meta_get(PACK)
    return None if raw is None else str(orjson.loads(raw)["version"])
