"""The shipped AsyncAPI document: up to date, well formed, and matching what the code produces."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import yaml

from streams.api.asyncapi import asyncapi_document, render, validate
from streams.engine import parse_rules
from streams.pipeline.outbox import OutboxEntry
from streams.pipeline.processor import Record, process_batch
from streams.settings import Settings
from streams.store.memory import MemoryStore
from tests.kit import pinned_context
from tests.unit.test_api import DOCS, RULES

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "docs" / "asyncapi.yaml"


def test_committed_document_equals_the_generated_one() -> None:
    assert SHIPPED.read_text() == render(), (
        "docs/asyncapi.yaml is stale: run `python -m streams.api.asyncapi > docs/asyncapi.yaml`"
    )


def test_document_shape() -> None:
    doc = yaml.safe_load(SHIPPED.read_text())
    assert doc["asyncapi"] == "3.0.0"
    addresses = {c["address"] for c in doc["channels"].values()}
    assert addresses == {
        "segmenter.events",
        "segmenter.migrations",
        "segmenter.events.dlq",
        "segmenter.deliver.{destination}.dlq",
    }
    schemas = doc["components"]["schemas"]
    for name in ("SegmentEvent", "MigrationData", "MigrationHeaders", "DeadLetterHeaders"):
        assert name in schemas

    # every local $ref resolves
    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            found = [node["$ref"]] if "$ref" in node else []
            return found + [r for v in node.values() for r in refs(v)]
        if isinstance(node, list):
            return [r for v in node for r in refs(v)]
        return []

    for ref in refs(doc):
        target: Any = doc
        for part in ref.lstrip("#/").split("/"):
            assert part in target, ref
            target = target[part]
    assert isinstance(schemas["SegmentEvent"]["discriminator"], str)
    assert doc == orjson.loads(orjson.dumps(asyncapi_document()))


async def test_processor_output_matches_the_schemas() -> None:
    settings = Settings()
    store = MemoryStore()
    ctx = pinned_context(parse_rules(RULES), settings, store)
    recs = [
        Record("segmenter.events", 0, i, d["userId"].encode(), orjson.dumps(d))
        for i, d in enumerate(DOCS)
    ]
    recs.append(Record("segmenter.events", 0, len(recs), b"x", b"{oops"))
    await process_batch(ctx, recs)
    doc = yaml.safe_load(SHIPPED.read_text())
    schemas = doc["components"]["schemas"]
    entries = [OutboxEntry.decode(raw) for raw in store.outboxes[0]]
    migrations = [e for e in entries if e.topic == settings.migrations_topic]
    dead = [e for e in entries if e.topic == settings.dlq_topic]
    assert migrations and dead
    for entry in migrations:
        value = orjson.loads(entry.value or b"")
        assert validate(value, schemas["MigrationData"], doc) == []
        headers = {k: v.decode() for k, v in entry.headers}
        assert validate(headers, schemas["MigrationHeaders"], doc) == []
    for entry in dead:
        headers = {k: v.decode() for k, v in entry.headers}
        assert validate(headers, schemas["DeadLetterHeaders"], doc) == []
    for event in DOCS:
        assert validate(event, schemas["SegmentEvent"], doc) == []


def test_validator_reports_problems() -> None:
    doc = yaml.safe_load(SHIPPED.read_text())
    schema = doc["components"]["schemas"]["MigrationData"]
    good = {
        "customer_id": "u1",
        "segment": "s",
        "direction": "entered",
        "family": None,
        "from_segment": None,
        "to_segment": "s",
        "trigger": {"kind": "time", "message_id": None, "event": None},
        "reason": {"rule": "r", "values": {}},
        "rule_version": "v",
        "holdout": False,
        "sequence": 1,
    }
    assert validate(good, schema, doc) == []
    assert validate({**good, "direction": "sideways"}, schema, doc)
    assert validate({**good, "extra": 1}, schema, doc)
    assert validate({k: v for k, v in good.items() if k != "sequence"}, schema, doc)
    assert validate(
        {**good, "trigger": {"kind": "magic", "message_id": None, "event": None}}, schema, doc
    )
    assert validate({**good, "sequence": True}, schema, doc)
