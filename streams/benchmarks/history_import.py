"""(l) ``segmenter bench --import``: how fast ``segmenter import`` loads a shop's history.

A generated two-year history of 1,000 customers (about 90,000 events, the default rule pack;
:mod:`streams.generate.history`) is imported by a ``segmenter import --json --jobs N`` child into
a fresh event-clock namespace with topics of its own, on the bench's broker and Redis; the
figures are what the import itself reports (events applied over the whole command: reading,
sorting, applying, settling, announcing and sending).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from streams.benchmarks.common import BenchError, Infra, say
from streams.generate.history import HistorySpec, write_history

SPEC = HistorySpec(customers=1000, months=24, end=datetime(2026, 1, 1, tzinfo=UTC), seed=1)


def import_topics(infra: Infra) -> list[str]:
    """The topics of (l)."""
    prefix = f"{infra.prefix}.import"
    return [f"{prefix}.{name}" for name in ("events", "migrations", "dlq", "memberships")]


def run_import(infra: Infra, jobs: int, timeout: float) -> dict[str, Any]:
    """Generate the history, import it, and return the ``import_*`` figures."""
    events, migrations, dlq, memberships = import_topics(infra)
    with tempfile.TemporaryDirectory(prefix="segmenter-bench-import-") as tmp:
        path = Path(tmp) / "history.jsonl"
        count = write_history(SPEC, path)
        say(f"(l) import: {count:,} events of {SPEC.customers:,} customers, {jobs} jobs")
        env = dict(
            os.environ,
            SEGMENTER_KAFKA_BOOTSTRAP=infra.bootstrap,
            SEGMENTER_REDIS_URL=infra.redis_url,
            SEGMENTER_NAMESPACE=f"{infra.namespace}-import",
            SEGMENTER_CLOCK="event",
            SEGMENTER_RULES=str(infra.settings.rules.resolve()),
            SEGMENTER_INPUT_TOPIC=events,
            SEGMENTER_MIGRATIONS_TOPIC=migrations,
            SEGMENTER_DLQ_TOPIC=dlq,
            SEGMENTER_MEMBERSHIPS_TOPIC=memberships,
        )
        command = [sys.executable, "-m", "streams", "import", str(path), "--json"]
        command += ["--jobs", str(jobs), "--rejects", str(Path(tmp) / "rejects")]
        done = subprocess.run(
            command, env=env, cwd=tmp, capture_output=True, text=True, timeout=timeout
        )
    if done.returncode != 0:
        raise BenchError(f"the import failed: {done.stderr.strip().splitlines()[-1:]}")
    found = orjson.loads(done.stdout)
    return {
        "import_events": found["events"],
        "import_customers": found["customers"],
        "import_seconds": found["seconds"],
        "import_events_per_s": found["events_per_s"],
        "import_jobs": jobs,
        "import_migrations": found["import_migrations"],
    }
