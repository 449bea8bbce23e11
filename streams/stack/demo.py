"""A demo that starts with a past: ``segmenter up --history MONTHS`` (what ``make run`` does).

On a first start (nothing kept in the data directory), once the worker and the API answer and
before the live generator starts: a shop's history of the generator's own customers (the same
ids, ``u<n>``) over the last ``MONTHS`` months is generated (:mod:`streams.generate.history`),
loaded with ``segmenter import`` (quiet: one ``import`` migration per changed membership), and
the models are fitted with ``segmenter model fit``, so the RFM grid, the lifecycle and value
tiers, the report's reach and the predictions card have something to show from the first
minute. A restart that kept its data skips all of it.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

from streams.generate.history import HistorySpec, write_history

IMPORT_TIMEOUT_S = 900.0


def history_spec(months: float, customers: int, now: datetime | None = None) -> HistorySpec:
    """The demo's history: ``customers`` customers over ``months`` months ending at the current
    hour, the generator's customers (same ids and seed)."""
    end = (now or datetime.now(UTC)).replace(minute=0, second=0, microsecond=0)
    return HistorySpec(customers=customers, months=months, end=end, seed=1)


def _run(argv: list[str], env: Mapping[str, str], say: Callable[[str], None], what: str) -> bool:
    command = [sys.executable, "-m", "streams", *argv]
    try:
        done = subprocess.run(command, env=dict(env), timeout=IMPORT_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        say(f"{what} failed ({exc}); going on without it")
        return False
    if done.returncode != 0:
        say(f"{what} exited with code {done.returncode}; going on without it")
        return False
    return True


def import_demo_history(
    months: float,
    customers: int,
    scratch: Path,
    env: Mapping[str, str],
    say: Callable[[str], None],
) -> bool:
    """Generate, import and fit (see the module); True when all three worked. Failures are
    reported and the stack goes on live."""
    path = scratch / "demo-history.jsonl"
    say(f"generating {months:g} months of history for {customers} customers...")
    try:
        count = write_history(history_spec(months, customers), path)
    except OSError as exc:
        say(f"could not write the demo history ({exc}); going on without it")
        return False
    say(f"importing {count} past events (segmenter import)...")
    try:
        if not _run(["import", str(path)], env, say, "the import"):
            return False
    finally:
        path.unlink(missing_ok=True)
    say("fitting the models on the imported customers (segmenter model fit)...")
    return _run(["model", "fit"], env, say, "the model fit")
