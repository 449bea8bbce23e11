"""Audience files and profile sync, checked against an independent computation.

The expected audience is computed here from the input (traits and consent, normalized and
hashed with :mod:`hashlib` by hand) and the migrations the worker emitted; the files are read
back with this module's own reader, following the documented order.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import time
from pathlib import Path

import orjson
import pytest

from streams.stack.children import Child
from tests.integration.harness import Deployment, consume_until, event, keyed, produce
from tests.receiver import Receiver

pytestmark = pytest.mark.integration
SECRET = b"profile-secret"


def read_audience(directory: Path) -> set[tuple[str, str]]:
    """Rebuild an audience: the newest full file, then later numbers, remove before add."""
    files = sorted(directory.glob("*.csv"))
    fulls = [p for p in files if p.stem.endswith("-full")]
    assert fulls, f"no full export in {directory}"
    start = int(fulls[-1].stem.split("-")[0])
    rank = {"full": 0, "remove": 1, "add": 2}
    rows: set[tuple[str, str]] = set()
    for path in sorted(
        (p for p in files if int(p.stem.split("-")[0]) >= start),
        key=lambda p: (int(p.stem.split("-")[0]), rank[p.stem.split("-")[1]]),
    ):
        with path.open() as handle:
            reader = csv.reader(handle)
            assert next(reader) == ["email_sha256", "phone_sha256"]
            body = {(row[0], row[1]) for row in reader}
        rows = rows - body if path.stem.endswith("-remove") else rows | body
    return rows


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def customer_docs(c: int, phase: int) -> list[dict[str, object]]:
    """Traits, consent and country of customer ``c``; phase 2 moves some of them."""
    user = f"p{c}"
    ts = f"2026-02-0{phase}T10:00:{c % 60:02d}Z"
    country = "CA"
    if phase == 2 and c % 4 == 1:
        country = "US"
    traits: dict[str, object] = {"address": {"country": country}}
    if c % 3 != 2:
        traits["email"] = f"  Person.{c}@Example.COM "
    if c % 2 == 0:
        traits["phone"] = f"(555) 010-{c:04d}"
    docs = [event("identify", f"id{c}-{phase}", user, ts, traits=traits)]
    if phase == 1 and c % 5 != 4:
        docs.append(event("consent", f"co{c}", user, ts, categoryPreferences={"marketing": True}))
    if phase == 2 and c % 7 == 3:
        docs.append(event("erase", f"er{c}", user, f"2026-02-02T11:00:{c % 60:02d}Z"))
    return docs


def expected_audience(customers: int, migrations: list[dict[str, object]]) -> set[tuple[str, str]]:
    """Members of ``canadians`` at the end (from the migrations) with consent, hashed here."""
    inside: dict[str, bool] = {}
    for m in migrations:
        if m["segment"] == "canadians":
            inside[str(m["customer_id"])] = m["direction"] == "entered"
    rows = set()
    for c in range(customers):
        if not inside.get(f"p{c}") or c % 5 == 4:
            continue
        email = sha(f"person.{c}@example.com") if c % 3 != 2 else ""
        phone = sha(f"+1555010{c:04d}") if c % 2 == 0 else ""
        if email or phone:
            rows.add((email, phone))
    return rows


def test_audience_files_and_profile_sync_match_an_independent_computation(
    deployment: Deployment, tmp_path: Path
) -> None:
    customers = 60
    asyncio.run(deployment.create_topics())
    out = tmp_path / "audiences"
    destinations = tmp_path / "destinations"
    destinations.mkdir()
    (destinations / "ads.yaml").write_text(
        f"id: ads\ntype: audience_file\ndirectory: {out}\nsegments: [canadians]\n"
        "batch: {max_records: 25, linger_ms: 50}\n"
    )
    receiver = Receiver(SECRET, faults=["ok", "500"]).start()
    (destinations / "crm.yaml").write_text(
        f"id: crm\ntype: profile_sync\nurl: {receiver.url}\nsecret_env: CRM_SECRET\n"
        "start_from: earliest\nbatch: {max_records: 10, linger_ms: 50}\n"
        "retry: {initial_backoff_s: 0.05, max_backoff_s: 0.2}\n"
    )
    worker = deployment.worker()
    env = deployment.env(destinations=destinations, deliver_group=f"{deployment.prefix}-dl")
    env["CRM_SECRET"] = SECRET.decode()
    deliver: Child | None = None
    try:
        phase1 = [d for c in range(customers) for d in customer_docs(c, 1)]
        asyncio.run(produce(deployment.kafka, deployment.input, keyed(phase1)))
        asyncio.run(
            consume_until(deployment.kafka, deployment.migrations, lambda r: len(r) >= 60, settle=2)
        )
        deliver = Child(["deliver"], env).start()
        deadline = time.monotonic() + 60
        while not list((out / "canadians").glob("*-full.csv")):
            assert time.monotonic() < deadline, deliver.log_tail(40)
            assert deliver.alive(), deliver.log_tail(40)
            time.sleep(0.2)
        phase2 = [d for c in range(customers) for d in customer_docs(c, 2)]
        asyncio.run(produce(deployment.kafka, deployment.input, keyed(phase2)))
        migrations = settled(deployment)
        expected = expected_audience(customers, migrations)
        deadline = time.monotonic() + 60
        while read_audience(out / "canadians") != expected:
            assert time.monotonic() < deadline, (
                read_audience(out / "canadians") ^ expected,
                deliver.log_tail(40),
            )
            time.sleep(0.3)
        final_segments: dict[str, set[str]] = {}
        for m in migrations:
            segs = final_segments.setdefault(str(m["customer_id"]), set())
            if m["direction"] == "entered":
                segs.add(str(m["segment"]))
            else:
                segs.discard(str(m["segment"]))

        def latest_profiles() -> dict[str, list[str]]:
            latest: dict[str, list[str]] = {}
            for item in receiver.items():
                latest[item["customer_id"]] = item["segments"]
            return latest

        deadline = time.monotonic() + 60
        while {c: sorted(s) for c, s in final_segments.items()} != latest_profiles():
            assert time.monotonic() < deadline, deliver.log_tail(40)
            time.sleep(0.3)
    finally:
        if deliver is not None:
            deliver.stop()
        worker.stop()
        receiver.stop()
    assert expected, "the scenario must leave someone in the audience"
    assert any(f.stem.endswith("-remove") for f in (out / "canadians").glob("*.csv"))
    assert receiver.bad_signatures == 0
    erased = [p for p in receiver.items() if p["deleted"]]
    assert {p["customer_id"] for p in erased} == {f"p{c}" for c in range(customers) if c % 7 == 3}
    assert all(p["segments"] == [] for p in erased)


def settled(deployment: Deployment, quiet_s: float = 1.5) -> list[dict[str, object]]:
    """Every migration so far, once none came for ``quiet_s``."""

    def read(at_least: int) -> list[dict[str, object]]:
        records = asyncio.run(
            consume_until(
                deployment.kafka, deployment.migrations, lambda r: len(r) >= at_least, settle=1
            )
        )
        return [orjson.loads(r.value) for r in records]

    seen = read(1)
    while True:
        time.sleep(quiet_s)
        now = read(len(seen))
        if len(now) == len(seen):
            return now
        seen = now
