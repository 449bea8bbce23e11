"""``segmenter soak`` in a short form: ``segmenter up`` under steady traffic, sampled, with a
small broker limit so that broker generations follow one another within the run.

What is asserted does not depend on the machine's speed: the soak reports a sample per
interval, the broker was replaced (more than one broker process seen), and what the broker
holds stays bounded by the limit plus what arrives between two checks. The CPU curve itself is
the soak's figure for docs/benchmarks.md, not a test's threshold.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import orjson
import pytest

from tests.e2e.stack import REPO, segmenter_command

pytestmark = pytest.mark.e2e
LIMIT = 1500
RATE = 100


def test_soak_reports_samples_and_bounds_the_broker(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGMENTER_")}
    env.update(
        {
            "SEGMENTER_RULES": str(REPO / "rules"),
            "SEGMENTER_EMBEDDED_MAX_RECORDS": str(LIMIT),
            "SEGMENTER_EMBEDDED_CHECK_S": "2",
        }
    )
    argv = [*segmenter_command(), "soak", "--minutes", "0.75", "--sample-s", "10"]
    done = subprocess.run(
        [*argv, "--rate", str(RATE), "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    report = orjson.loads(done.stdout)
    samples = report["samples"]
    assert len(samples) >= 3  # one every 10 s, plus the time each sample takes
    assert [s["minute"] for s in samples] == sorted(s["minute"] for s in samples)
    assert report["broker_generations"] >= 2, "the broker was never replaced"
    # unbounded, 45 s at 100 events/s would leave about 5,800; bounded: the limit plus what
    # arrives between two checks
    assert report["records_held_max"] < LIMIT + RATE * 2 * 4, report
    assert all(s["broker_rss_mb"] > 0 for s in samples)
    assert report["broker_cpu_first_pct"] is not None
