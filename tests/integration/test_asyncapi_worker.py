"""A real worker's output validated against the shipped AsyncAPI document."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import yaml

from streams.api.asyncapi import validate
from tests.integration.harness import (
    Deployment,
    consume_until,
    event,
    keyed,
    order,
    produce,
    write_rules,
)

pytestmark = pytest.mark.integration

SHIPPED = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.yaml"


async def test_worker_output_matches_the_asyncapi_document(
    kafka_bootstrap: str, redis_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    doc = yaml.safe_load(SHIPPED.read_text())
    schemas = doc["components"]["schemas"]
    deployment = Deployment(kafka_bootstrap, redis_url, topic_prefix, write_rules(tmp_path / "r"))
    await deployment.create_topics()
    worker = deployment.worker()
    try:
        docs = [
            event(
                "identify",
                "i1",
                "ada",
                "2026-01-01T09:00:00Z",
                traits={"address": {"country": "CA"}},
            ),
            order("o1", "ada", 200.0, "2026-01-01T10:00:00Z"),
            order("o2", "ada", 900.0, "2026-01-02T10:00:00Z"),
            order("o3", "bob", 50.0, "2026-01-01T10:00:00Z"),
        ]
        for d in docs:
            assert validate(d, schemas["SegmentEvent"], doc) == []
        await produce(deployment.kafka, deployment.input, keyed(docs))
        await produce(deployment.kafka, deployment.input, [(b"x", b"{oops")], partition=1)
        got = await consume_until(
            deployment.kafka, deployment.migrations, lambda r: len(r) >= 5, worker=worker
        )
        for record in got:
            value = orjson.loads(record.value)
            assert validate(value, schemas["MigrationData"], doc) == [], value
            headers = {k: v.decode() for k, v in record.headers}
            assert validate(headers, schemas["MigrationHeaders"], doc) == [], headers
            assert headers["ce_type"].endswith(value["direction"])
            assert record.key == value["customer_id"].encode()
        directions = {orjson.loads(r.value)["direction"] for r in got}
        assert directions == {"entered", "exited"}
        dead = await consume_until(
            deployment.kafka, deployment.dlq, lambda r: len(r) >= 1, worker=worker
        )
        for record in dead:
            headers = {k: v.decode() for k, v in record.headers}
            assert validate(headers, schemas["DeadLetterHeaders"], doc) == [], headers
            assert record.value == b"{oops"
    finally:
        worker.stop()
