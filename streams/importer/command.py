"""``segmenter import SOURCE... [--map COL=...] [--emit-history] [--json]`` (docs/import.md).

1. The sources are resolved and digested: the digest names the run. A run already done is
   not done again (importing the same file twice changes nothing).
2. One pass reads every row, rejects bad ones (``file:line: message``, to stderr and the reject
   file) and sorts the rest by time out of core (:mod:`.scan`, :mod:`.sorting`).
3. History older than what the namespace has already seen is refused (or, with
   ``--allow-late``, applied under the late-event policy).
4. One or more jobs apply the records through the worker's pipeline (:mod:`.apply`), each
   batch one commit with the run's checkpoint: a killed import resumes where it stopped.
5. The end: timers through the namespace's now, one ``import`` migration per changed
   membership, sent to Kafka (:mod:`.finish`).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import orjson
from aiokafka.errors import KafkaError
from redis.exceptions import RedisError

from streams.engine import RuleSet, load_rules
from streams.importer.apply import Job, apply_job
from streams.importer.finish import announce, send, settle
from streams.importer.jobs import JobFailed
from streams.importer.mapping import ColumnMap, MappingError
from streams.importer.progress import Progress
from streams.importer.scan import Scan, origin, scan
from streams.importer.sorting import ExternalSorter
from streams.importer.sources import Format, Source, SourceError, digest, resolve
from streams.models.published import ModelReader
from streams.pipeline import rulepack
from streams.pipeline.gc_policy import quiet_collector
from streams.pipeline.logic import Emission
from streams.pipeline.processor import PipelineContext
from streams.pipeline.rfm_live import live_boundaries
from streams.settings import Settings
from streams.stack.discovery import with_running_stack
from streams.stack.kafka_security import client_kwargs
from streams.stack.topics import ensure_segmenter_topics
from streams.store.base import ConflictError
from streams.store.redis_store import LayoutError, RedisStore


class ImportError_(Exception):
    """The import cannot go on (one clear line; exit 1)."""


@dataclass
class Options:
    """The command line of ``segmenter import``."""

    sources: list[str]
    maps: list[str] = field(default_factory=list)
    format: Format | None = None
    emit_history: bool = False
    as_json: bool = False
    rejects: Path = Path("segmenter-import.rejects")
    allow_late: bool = False
    jobs: int = 1
    batch: int = 2000
    sort_run: int = 200_000
    quiet: bool = False


@dataclass
class Outcome:
    """What ``--json`` prints."""

    events: int = 0
    seconds: float = 0.0
    customers: int = 0
    rejected: int = 0
    run: str = ""
    migrations: int = 0
    skipped: int = 0
    already_imported: bool = False
    end: float | None = None

    def document(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "seconds": round(self.seconds, 3),
            "events_per_s": round(self.events / self.seconds, 1) if self.seconds > 0 else 0.0,
            "customers": self.customers,
            "rejected": self.rejected,
            "run": self.run,
            "import_migrations": self.migrations,
            "skipped": self.skipped,
            "already_imported": self.already_imported,
            "end": self.end,
        }


def _say(text: str) -> None:
    print(f"segmenter import: {text}", file=sys.stderr, flush=True)


def run_import(settings: Settings, options: Options) -> int:
    """0 imported (or already), 1 the import could not be done, 2 no Redis/Kafka to import to."""
    settings = with_running_stack(settings)
    if not settings.redis_url or not settings.kafka_bootstrap:
        _say(
            "set SEGMENTER_REDIS_URL and SEGMENTER_KAFKA_BOOTSTRAP, or run it beside"
            " `segmenter up` (it imports into that stack's namespace)"
        )
        return 2
    quiet_collector(settings.gc_young_threshold)
    try:
        mapping = ColumnMap.parse(options.maps) if options.maps else None
        with tempfile.TemporaryDirectory(prefix="segmenter-import-") as work:
            outcome = asyncio.run(_import(settings, options, mapping, Path(work)))
    except (MappingError, SourceError, ImportError_, LayoutError, JobFailed) as exc:
        _say(str(exc))
        return 1
    except (ConflictError, RedisError, KafkaError, OSError) as exc:
        _say(f"stopped by {exc!r}; what is committed stays: run the same command to resume")
        return 1
    except KeyboardInterrupt:
        _say("interrupted; run the same command again to resume")
        return 130
    if options.as_json:
        print(orjson.dumps(outcome.document()).decode())
    elif outcome.already_imported:
        print(f"already imported (run {outcome.run}): nothing changed")
    else:
        doc = outcome.document()
        print(
            f"imported {doc['events']:,} events of {doc['customers']:,} customers in"
            f" {doc['seconds']:.1f}s ({doc['events_per_s']:,.0f} events/s);"
            f" {doc['rejected']:,} rejected; {doc['import_migrations']:,} import migrations"
        )
    return 0


@dataclass
class _Context:
    settings: Settings
    options: Options
    store: RedisStore
    ctx: PipelineContext
    partitions: int
    run: str = ""


async def _import(
    settings: Settings, options: Options, mapping: ColumnMap | None, work: Path
) -> Outcome:
    started = time.monotonic()
    sources = resolve(options.sources, options.format, work)
    shape = [*options.maps, f"format={options.format}", f"emit={options.emit_history}"]
    run = digest(sources, shape)
    env = await _open(settings, options, run)
    try:
        record = await _run_record(env.store, run)
        if record.get("state") == "done":
            return Outcome(run=run, already_imported=True, end=_float(record.get("end")))
        with ExitStack() as stack:
            sorter = stack.enter_context(ExternalSorter(work, options.sort_run))
            rejects = stack.enter_context(_Rejects(options.rejects, options.quiet))
            found = _scan(sources, mapping, env.partitions, sorter, rejects.write, options)
            outcome = await _apply(env, record, sources, sorter, found, rejects)
        outcome.seconds = time.monotonic() - started
        return outcome
    finally:
        await env.store.close()


async def _open(settings: Settings, options: Options, run: str) -> _Context:
    """The namespace's store (with the run's own outbox lane), rules, models and partitions."""
    assert settings.kafka_bootstrap is not None
    partitions = await ensure_segmenter_topics(
        settings.kafka_bootstrap, settings, client_kwargs(settings)
    )
    store = RedisStore.from_settings(settings, lane=f"import:{run}")
    await store.check_layout()
    rules = await _rules(store, settings)
    rfm = await live_boundaries(store) if rules.rfm is not None and rules.rfm.live else None
    models = await ModelReader().current(store)
    history = settings.model_copy(update={"clock": "event", "idle_settle_s": 0.0})
    ctx = PipelineContext.create(history, rules, store, partitions, rfm=rfm, models=models)
    return _Context(settings, options, store, ctx, partitions, run)


async def _rules(store: RedisStore, settings: Settings) -> RuleSet:
    """The rules the workers apply: the published pack, else the rule directory."""
    pack = await rulepack.published(store)
    return pack.rules if pack is not None else load_rules(settings.rules)


def _scan(
    sources: Sequence[Source],
    mapping: ColumnMap | None,
    partitions: int,
    sorter: ExternalSorter,
    reject: Callable[[str], None],
    options: Options,
) -> Scan:
    meter = Progress("reading", quiet=options.quiet)
    found = scan(sources, mapping, partitions, sorter, reject, meter.set)
    meter.set(found.events + found.rejected)
    meter.close()
    return found


async def _apply(
    env: _Context,
    record: dict[str, Any],
    sources: Sequence[Source],
    sorter: ExternalSorter,
    found: Scan,
    rejects: _Rejects,
) -> Outcome:
    """Steps 3 to 5 of the module docstring."""
    options, store, run = env.options, env.store, env.run
    if found.last is None:
        raise ImportError_(f"no event to import ({found.rejected:,} rows rejected)")
    before = await _clocks_before(env, record, found)
    end = _end(env.settings, found.last, before)
    emission: Emission = "publish" if options.emit_history else "record"
    await _write_record(
        store, run, {"state": "running", "clocks": before, "end": end, **_names(sources)}
    )
    job = Job(
        run=run,
        job=0,
        jobs=1,
        identities=found.identities,
        clocks=before,
        emission=emission,
        batch=options.batch,
        keep_before=True,
    )
    meter = Progress("importing", total=found.events, quiet=options.quiet)
    checkpoint = await store.run_progress(run)
    if options.jobs > 1:
        from streams.importer.jobs import run_jobs

        results = await run_jobs(
            env.settings, env.ctx, job, sorter, checkpoint, options.jobs, meter
        )
    else:
        await apply_job(env.ctx, job, sorter.merged(), checkpoint, meter.add)
        results = [job]
    meter.close()
    for done in results:
        for serial, message in done.rejected:
            rejects.write(f"{origin(sources, serial)}: {message}")
    migrations = await _finish(env, end, emission)
    await _write_record(store, run, {"state": "done"})
    await store.run_forget(run)
    return Outcome(
        events=sum(done.applied for done in results),
        customers=len(found.customers),
        rejected=rejects.count,
        run=run,
        migrations=migrations,
        skipped=sum(done.skipped for done in results),
        end=end,
    )


async def _finish(env: _Context, end: float, emission: Emission) -> int:
    """Timers through the end, the ``import`` migrations (quiet runs), then send them."""
    options, store, run = env.options, env.store, env.run
    await settle(env.ctx, run, end, keep_before=True)
    meter = Progress("announcing", quiet=options.quiet)
    migrations = await announce(env.ctx, store, run, end, meter.add, emission == "record")
    meter.close()
    assert env.settings.kafka_bootstrap is not None
    await send(store, env.settings.kafka_bootstrap, env.partitions, **client_kwargs(env.settings))
    return migrations


async def _clocks_before(env: _Context, record: dict[str, Any], found: Scan) -> dict[int, float]:
    """The partitions' clocks before the run (kept in its record, so a resumed run starts from
    the same ones), after checking that the history is not older than what they have seen."""
    if "clocks" in record:
        return {int(p): float(c) for p, c in record["clocks"].items()}
    clocks = await env.store.clocks()
    lateness = env.settings.allowed_lateness_s
    late = {p: at for p, at in found.first.items() if p in clocks and at < clocks[p] - lateness}
    if late and not env.options.allow_late:
        p = min(late, key=lambda q: late[q] - clocks[q])
        raise ImportError_(
            f"namespace {env.settings.namespace!r} has already seen events up to"
            f" {_iso(clocks[p])} on partition {p}, and this history starts at {_iso(late[p])}:"
            " imported behind what a deployment has processed, it could only count under the"
            " late-event policy (lifetime totals and traits, not windows). Import history"
            " before the workers process live events (docs/import.md#cut-over), or pass"
            " --allow-late to apply it under that policy"
        )
    return clocks


def _end(settings: Settings, last: float, clocks: dict[int, float]) -> float:
    """The namespace's now once the history is in: its clock (event clock), else the wall
    clock (processing clock), never before the history's last instant."""
    if settings.clock == "event":
        return max([last, *clocks.values()])
    return max(last, int(time.time() * 1000) / 1000)


def _names(sources: Sequence[Source]) -> dict[str, Any]:
    return {"sources": [source.name for source in sources]}


def _iso(at: float) -> str:
    from streams.events.models import iso

    return iso(at)


def _float(value: Any) -> float | None:
    return float(value) if value is not None else None


async def _run_record(store: RedisStore, run: str) -> dict[str, Any]:
    raw = await store.client.get(store.keys.import_run(run))
    return dict(orjson.loads(raw)) if raw else {}


async def _write_record(store: RedisStore, run: str, fields: dict[str, Any]) -> None:
    """Update the run's record (a small JSON document)."""
    record = await _run_record(store, run)
    record.update(fields, updated_at=time.time())
    await store.client.set(store.keys.import_run(run), orjson.dumps(record))


class _Rejects:
    """Rejected rows: ``file:line: message`` to the reject file (created on the first), and
    the first few to stderr."""

    SHOWN = 10

    def __init__(self, path: Path, quiet: bool) -> None:
        self.path = path
        self.quiet = quiet
        self.count = 0
        self.sink: TextIO | None = None

    def __enter__(self) -> _Rejects:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.sink is not None:
            self.sink.close()
        if self.count > self.SHOWN and not self.quiet:
            _say(f"{self.count - self.SHOWN:,} more rejected rows in {self.path}")
        elif self.count:
            _say(f"{self.count:,} rejected rows written to {self.path}")

    def write(self, line: str) -> None:
        self.count += 1
        if self.sink is None:
            self.sink = self.path.open("w", encoding="utf-8")
        self.sink.write(line + "\n")
        if self.count <= self.SHOWN and not self.quiet:
            print(line, file=sys.stderr)
