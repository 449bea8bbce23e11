"""The import's first pass: CSV mapping errors, rejected rows, content ids, the out-of-core
sort, and the history generator (no servers)."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from streams.generate.history import HistorySpec, customer_events, history_events, write_history
from streams.importer.mapping import ColumnMap, MappingError
from streams.importer.scan import scan, split_payload
from streams.importer.sorting import ExternalSorter
from streams.importer.sources import Source

HEADER = "Order,Customer,Date,Total,Channel\n"


def run_scan(tmp_path: Path, text: str, maps: list[str]) -> tuple[list[dict], list[str]]:
    path = tmp_path / "orders.csv"
    path.write_text(text)
    rejected: list[str] = []
    with ExternalSorter(tmp_path, 3) as sorter:
        scan([Source(path, "csv", "orders.csv")], ColumnMap.parse(maps), 8, sorter, rejected.append)
        events = [orjson.loads(split_payload(payload)[1]) for _, _, payload in sorter.merged()]
    return events, rejected


MAP = 'customer_id=Customer,time=Date,event="Order Completed",revenue=Total,message_id=Order'


def test_a_mapped_export_becomes_order_events_in_time_order(tmp_path: Path) -> None:
    text = HEADER + "o3,ada,2024-03-05,30.5,web\no1,bob,2024-01-02T10:00:00Z,12,shop\n"
    text += 'o2,ada,2024-02-01 09:30:00,"1,200.00",web\n'
    events, rejected = run_scan(tmp_path, text, [MAP])
    assert rejected == []
    assert [(e["userId"], e["messageId"], e["properties"]["revenue"]) for e in events] == [
        ("bob", "o1", 12.0), ("ada", "o2", 1200.0), ("ada", "o3", 30.5),
    ]  # fmt: skip
    assert events[2]["timestamp"] == "2024-03-05T00:00:00+00:00"  # a date is midnight UTC
    assert {e["event"] for e in events} == {"Order Completed"}


def test_bad_rows_are_rejected_with_file_line_and_the_rest_imported(tmp_path: Path) -> None:
    text = HEADER + "o1,ada,yesterday,10,web\no2,,2024-01-01,10,web\no3,bob,2024-01-01,ten,web\n"
    text += "o4,cy,2024-01-01\no5,dee,2024-01-02,5,web\n"
    events, rejected = run_scan(tmp_path, text, [MAP])
    assert [e["userId"] for e in events] == ["dee"]
    assert rejected[0].startswith("orders.csv:2: time: expected an ISO 8601 date or time")
    assert "'yesterday'" in rejected[0]
    assert rejected[1] == "orders.csv:3: customer_id: expected a customer id, found an empty value"
    assert rejected[2] == "orders.csv:4: revenue: expected a number, found 'ten'"
    assert rejected[3] == "orders.csv:5: expected 5 columns, found 3"


@pytest.mark.parametrize(
    ("maps", "message"),
    [
        (["customer_id=Customer,event=X"], "--map needs time=COLUMN"),
        (["time=Date,event=X"], "--map needs customer_id=COLUMN"),
        (
            ["customer_id=Client,time=Date,event=X"],
            "unknown column 'Client' (mapped to customer_id)",
        ),
        (["customer_id=Customer,time=Date"], 'event="Event Name"'),
        (["customer_id=Customer,time=Date,event=X,colour=Channel"], "unknown target 'colour'"),
        (["customer_id=Customer,time=Date,event=X,time=Order"], "'time' is mapped twice"),
        (["customer_id"], "expected TARGET=COLUMN"),
    ],
)
def test_mapping_errors_are_clear(tmp_path: Path, maps: list[str], message: str) -> None:
    with pytest.raises(MappingError) as caught:
        run_scan(tmp_path, HEADER + "o1,ada,2024-01-01,10,web\n", maps)
    assert message in str(caught.value)
    if "unknown column" in message or "needs" in message:
        assert "columns: Order, Customer, Date, Total, Channel" in str(caught.value)


def test_a_row_without_an_id_gets_one_from_its_content(tmp_path: Path) -> None:
    maps = ['customer_id=Customer,time=Date,event="Order Completed",revenue=Total']
    text = HEADER + "o1,ada,2024-01-01,10,web\no2,ada,2024-01-01,10,web\no3,ada,2024-01-01,11,web\n"
    first, _ = run_scan(tmp_path, text, maps)
    again, _ = run_scan(tmp_path, HEADER + "o3,ada,2024-01-01,11,web\n", maps)
    ids = [e["messageId"] for e in first]
    assert ids[0] == ids[1] != ids[2] and again[0]["messageId"] == ids[2]


def test_the_out_of_core_sort_equals_sorting_in_memory(tmp_path: Path) -> None:
    rng = random.Random(3)
    records = [(rng.randrange(50), serial, b"x%d" % serial) for serial in range(2000)]
    with ExternalSorter(tmp_path, 64) as sorter:
        for record in records:
            sorter.add(*record)
        assert len(sorter.runs) == 31 and not sorter.in_order
        assert list(sorter.merged()) == sorted(records)
    with ExternalSorter(tmp_path, 64) as sorter:
        for record in sorted(records):
            sorter.add(*record)
        assert sorter.in_order and list(sorter.merged()) == sorted(records)


def test_the_generated_history_is_shop_shaped_and_the_same_for_a_seed(tmp_path: Path) -> None:
    spec = HistorySpec(customers=300, months=24, end=datetime(2026, 1, 1, tzinfo=UTC), seed=4)
    events = history_events(spec)
    path = tmp_path / "h.jsonl"
    assert write_history(spec, path, run_events=1000) == len(events)
    assert path.read_bytes() == b"".join(orjson.dumps(e) + b"\n" for e in events)
    stamps = [e["timestamp"] for e in events]
    assert stamps == sorted(stamps) and 60 < len(events) / 300 < 130
    orders = Counter(e["userId"] for e in events if e.get("event") == "Order Completed")
    assert 0.6 < len(orders) / 300 < 0.85
    assert sum(1 for n in orders.values() if n <= 5) / len(orders) > 0.7  # mostly 1 to 5
    names = Counter(e.get("event") or e["type"] for e in events)
    assert names["Product Added"] > names["Checkout Started"] > names["Order Completed"]
    assert names["identify"] > 250 and names["consent"] > 200 and names["Email Opened"] > 0
    ties = len(events) - len(
        {(e.get("userId") or e.get("anonymousId"), e["timestamp"]) for e in events}
    )
    assert ties > 30
    months = Counter(
        int(s[5:7])
        for s, e in zip(stamps, events, strict=True)
        if e.get("event") == "Order Completed"
    )
    assert months[11] + months[12] > months[5] + months[6]  # the season
    assert [e for _, _, e in customer_events(spec)][:5] == [e for _, _, e in customer_events(spec)][
        :5
    ]
