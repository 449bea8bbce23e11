"""A migration's outbox record: the bytes the sender turns back into the contract's CloudEvent."""

from __future__ import annotations

import orjson

from streams.pipeline.migrations import Migration, Trigger, ce_id
from streams.pipeline.outbox import OutboxEntry

SOURCE = "urn:segmenter:test"


def migration(customer: str, **values: object) -> Migration:
    return Migration(
        customer_id=customer,
        segment="lapsed",
        direction="entered",
        family="lifecycle",
        from_segment="recent_buyer",
        to_segment=None,
        trigger=Trigger("time"),
        reason_rule="orders >= 1 and no Order Completed within 90d",
        reason_values=dict(values),
        rule_version="v1",
        sequence=7,
        time=1_700_000_000.25,
    )


def test_the_record_carries_the_cloudevent_of_the_contract() -> None:
    moved = migration("kund-ø-1", orders=3, seen={"b", "a"}, last="2023-11-14")
    entry = OutboxEntry.decode(moved.outbox_record("segmenter.migrations", SOURCE))
    assert entry.topic == "segmenter.migrations" and entry.partition is None
    assert entry.key == "kund-ø-1".encode()
    headers = dict(entry.headers)
    assert headers["ce_id"] == ce_id("kund-ø-1", 7, "lapsed", "entered").encode()
    assert headers["ce_type"] == b"segmenter.segment.entered"
    assert headers["ce_source"] == SOURCE.encode()
    assert headers["ce_subject"] == "kund-ø-1".encode()
    assert headers["ce_time"] == b"2023-11-14T22:13:20.250Z"
    assert headers["content-type"] == b"application/json"
    assert entry.value is not None
    data = orjson.loads(entry.value)
    assert data["reason"]["values"] == {"orders": 3, "seen": ["a", "b"], "last": "2023-11-14"}
    assert data["customer_id"] == "kund-ø-1"
    assert (data["sequence"], data["from_segment"]) == (7, "recent_buyer")


def test_the_record_is_what_the_sender_decodes_and_the_outbox_encodes() -> None:
    """The record is in ``OutboxEntry``'s own encoding (decoding and encoding again gives the
    same bytes), whatever the customer id and reason values hold."""
    cases = {"a": {}, "ü\u00a0x": {"n": 1.5}, "b": {"s": {2, 1}}}
    for customer, values in cases.items():
        record = migration(customer, **values).outbox_record("t", SOURCE)
        entry = OutboxEntry.decode(record)
        assert entry.encode() == record
        assert entry.key == customer.encode() and entry.topic == "t"
        assert dict(entry.headers)["ce_id"] == ce_id(customer, 7, "lapsed", "entered").encode()
        assert entry.value is not None
        expected = {k: sorted(v) if isinstance(v, set) else v for k, v in values.items()}
        assert orjson.loads(entry.value)["reason"]["values"] == expected
