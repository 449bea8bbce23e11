"""``--jobs N``: N processes share an import by slot (identity groups never split).

The processes are forked once the history is sorted, so each reads the same sorted runs (in
memory or on disk) and keeps its own slots; each has its own connections, clocks and batches,
and commits its own checkpoint fields. The parent shows their progress and collects what
they applied and rejected; a process that fails fails the run, which then resumes from the
checkpoint when started again.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import dataclasses
import multiprocessing
import signal
from dataclasses import dataclass
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from tempfile import TemporaryDirectory

import orjson

from streams.importer.apply import Job, apply_job
from streams.importer.progress import Progress
from streams.importer.sorting import ExternalSorter
from streams.pipeline.processor import PipelineContext
from streams.settings import Settings
from streams.store.redis_store import RedisStore

PR_SET_PDEATHSIG = 1


class JobFailed(RuntimeError):
    """A job process did not finish."""


@dataclass
class _Share:
    """What a job process needs: settings, the pipeline, its job, and where to report."""

    settings: Settings
    ctx: PipelineContext
    job: Job
    sorter: ExternalSorter
    checkpoint: dict[str, int]
    counter: Synchronized[int]
    outcome: Path


async def run_jobs(
    settings: Settings,
    ctx: PipelineContext,
    template: Job,
    sorter: ExternalSorter,
    checkpoint: dict[str, int],
    jobs: int,
    meter: Progress,
) -> list[Job]:
    """Run ``jobs`` processes; returns each one's outcome."""
    fork = multiprocessing.get_context("fork")
    counters = [fork.Value("q", 0) for _ in range(jobs)]
    with TemporaryDirectory(prefix="segmenter-import-jobs-") as tmp:
        outcomes = [Path(tmp) / f"job-{n}.json" for n in range(jobs)]
        shares = [
            _Share(
                settings,
                ctx,
                dataclasses.replace(template, job=n, jobs=jobs),
                sorter,
                checkpoint,
                counters[n],
                outcomes[n],
            )
            for n in range(jobs)
        ]
        processes = [fork.Process(target=_child, args=(share,), daemon=True) for share in shares]
        for process in processes:
            process.start()
        while any(process.is_alive() for process in processes):
            meter.set(sum(int(counter.value) for counter in counters))
            await asyncio.sleep(0.2)
        meter.set(sum(int(counter.value) for counter in counters))
        failed = [n for n, process in enumerate(processes) if process.exitcode != 0]
        if failed:
            raise JobFailed(f"import job(s) {failed} failed; run the same command again to resume")
        return [_read(template, n, jobs, path) for n, path in enumerate(outcomes)]


def _read(template: Job, n: int, jobs: int, path: Path) -> Job:
    found = orjson.loads(path.read_bytes())
    job = dataclasses.replace(template, job=n, jobs=jobs)
    job.applied, job.skipped = found["applied"], found["skipped"]
    job.rejected = [(serial, message) for serial, message in found["rejected"]]
    return job


def _child(share: _Share) -> None:
    """One job process: a new event loop, its own Redis connections, its share of the run."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    asyncio.events._set_running_loop(None)  # the parent's loop, inherited by fork
    asyncio.run(_run(share))


async def _run(share: _Share) -> None:
    ctx, job, counter = share.ctx, share.job, share.counter
    lane = ctx.store.keys.lane.rstrip(":") if isinstance(ctx.store, RedisStore) else ""
    store = RedisStore.from_settings(share.settings, lane=lane)
    try:
        own = dataclasses.replace(ctx, store=store)

        def progress(count: int) -> None:
            with counter.get_lock():
                counter.value += count

        await apply_job(own, job, share.sorter.merged(), share.checkpoint, progress)
    finally:
        await store.close()
    outcome = {"applied": job.applied, "skipped": job.skipped, "rejected": job.rejected}
    share.outcome.write_bytes(orjson.dumps(outcome))
