"""The deliverer's pure parts: destination files, signatures, identifiers, pacing, selection."""

from __future__ import annotations

import asyncio
import itertools
import random
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from streams.console import TailFilter, parse_events, readable
from streams.deliver.config import (
    DestinationLoadError,
    Retry,
    WebhookFile,
    check_destinations,
    load_destinations,
)
from streams.deliver.identifiers import normalize_email, normalize_phone, sha256_hex
from streams.deliver.pacing import Backoff, RateLimit, retry_after_seconds
from streams.deliver.records import Record, Selector
from streams.deliver.signing import sign, verify
from streams.events.intake import completed

KINDS = {"big_spender": "value", "buyer": "value", "canadians": "demographic"}


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(text)
    return directory


def test_a_valid_webhook_file_loads_with_defaults(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HOOK_SECRET", "x")
    d = write(
        tmp_path,
        "h.yaml",
        "id: crm\ntype: webhook\nurl: https://crm.example/hook\n"
        "secret_env: HOOK_SECRET\nkinds: [value]\n",
    )
    [dest] = load_destinations(d, KINDS)
    assert isinstance(dest.spec, WebhookFile)
    assert dest.spec.directions == ["entered", "exited"]
    assert dest.spec.batch.max_records == 100 and dest.spec.start_from == "latest"
    assert dest.dead_letter_topic() == "segmenter.deliver.crm.dlq"
    assert dest.secret() == b"x"
    code, lines = check_destinations(d, KINDS)
    assert code == 0 and lines == ["OK: 1 destinations: crm (webhook)"]


def test_problems_are_reported_with_file_and_line(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("NOPE_SECRET", raising=False)
    write(tmp_path, "a.yaml", "id: a\ntype: webhok\nurl: http://x\n")
    write(
        tmp_path,
        "b.yaml",
        "id: b\ntype: audience_file\ndirectory: out\nidentifiers: [email, fax]\nbatchh: 3\n",
    )
    write(tmp_path, "c.yaml", "id: c\ntype: webhook\nurl: ftp://x\nsecret_env: NOPE_SECRET\n")
    write(tmp_path, "d.yaml", "id: d\ntype: webhook\nurl: http://x\nsegments: [nobody]\n")
    write(tmp_path, "e.yaml", "id: d\ntype: webhook\nurl: http://y\n")
    code, lines = check_destinations(tmp_path, KINDS)
    assert code == 1
    text = "\n".join(lines)
    assert (
        f"{tmp_path}/a.yaml:2: unknown destination type 'webhok', did you mean 'webhook'?" in text
    )
    assert f"{tmp_path}/b.yaml:4: identifiers[1]: invalid value 'fax'" in text
    assert f"{tmp_path}/b.yaml:5: unknown field 'batchh'" in text
    assert f"{tmp_path}/c.yaml:3: url: expected an http:// or https:// URL" in text
    assert f"{tmp_path}/d.yaml: segments: unknown segment 'nobody'" in text
    assert "id 'd' is also used by" in text


def test_an_unset_secret_is_a_problem(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("NOPE_SECRET", raising=False)
    write(tmp_path, "c.yaml", "id: c\ntype: webhook\nurl: http://x\nsecret_env: NOPE_SECRET\n")
    with pytest.raises(DestinationLoadError, match="NOPE_SECRET is unset"):
        load_destinations(tmp_path)


def test_no_files_is_an_error_for_check_and_nothing_for_load(tmp_path: Path) -> None:
    assert load_destinations(tmp_path / "missing") == []
    code, lines = check_destinations(tmp_path)
    assert code == 1 and "no destination files" in lines[0]


def test_signature_is_hmac_sha256_rfc4231_case_2() -> None:
    # RFC 4231, test case 2: key "Jefe", data "what do ya want for nothing?".
    expected = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    assert sign(b"Jefe", b"what do ya want for nothing?") == f"sha256={expected}"
    assert verify(b"Jefe", b"what do ya want for nothing?", f"sha256={expected}")
    assert not verify(b"Jefe", b"what do ya want for nothing!", f"sha256={expected}")
    assert not verify(b"Jefe", b"x", None)


def test_sha256_matches_the_fips_180_2_vectors() -> None:
    assert sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert sha256_hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert (
        sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")
        == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
    )


def test_normalized_identifiers_hash_to_the_ad_platforms_published_examples() -> None:
    # The UID2 normalization and encoding guide: "user@example.com" -> SHA-256 hex b4c9a289...
    email = normalize_email("  USER@Example.COM ")
    assert email is not None
    assert sha256_hex(email) == "b4c9a289323b21a01c3e940f150eb9b8c542587f1abfd8f0e1cc1ffc5e475514"
    # The X Ads API custom-audience guide: handle @AdsAPI normalized to "adsapi" -> 49e0be2a...
    assert (
        sha256_hex("adsapi") == "49e0be2aeccfb51a8dee4c945c8a70a9ac500cf6f5cb08112575f74db9b1470d"
    )


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("  Ada.Lovelace@Example.COM ", "ada.lovelace@example.com"),
        ("no-at-sign", None),
        (42, None),
        ("a@b", None),
    ],
)
def test_email_normalization(raw: object, normal: str | None) -> None:
    assert normalize_email(raw) == normal


@pytest.mark.parametrize(
    ("raw", "country", "normal"),
    [
        ("(555) 123-4567", "1", "+15551234567"),
        ("+44 20 7946 0958", "1", "+442079460958"),
        ("0044 20 7946 0958", "1", "+442079460958"),
        ("020 7946 0958", "44", "+442079460958"),
        ("12", "1", None),
        ("+1234567890123456", "1", None),
        (None, "1", None),
    ],
)
def test_phone_normalization_to_e164(raw: object, country: str, normal: str | None) -> None:
    assert normalize_phone(raw, country) == normal


def test_backoff_doubles_up_to_the_cap_with_full_jitter_and_honours_retry_after() -> None:
    backoff = Backoff(Retry(initial_backoff_s=1, max_backoff_s=8), random.Random(7))
    for attempt, ceiling in [(1, 1), (2, 2), (3, 4), (4, 8), (9, 8)]:
        delays = [backoff.delay(attempt) for _ in range(300)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.9  # the whole range is used
    assert all(backoff.delay(1, retry_after=30) >= 30 for _ in range(50))


def test_retry_after_in_seconds_or_as_an_http_date() -> None:
    assert retry_after_seconds("120") == 120
    now = datetime(2026, 12, 4, 10, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("Fri, 04 Dec 2026 10:00:30 GMT", now) == 30
    assert retry_after_seconds("Fri, 04 Dec 2026 09:00:00 GMT", now) == 0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


def test_rate_limit_spaces_requests_on_an_injected_clock() -> None:
    clock = [0.0]

    async def sleep(seconds: float) -> None:
        clock[0] += seconds

    limit = RateLimit(5.0, monotonic=lambda: clock[0], sleep=sleep)

    async def take(n: int) -> list[float]:
        times = []
        for _ in range(n):
            await limit.acquire()
            times.append(clock[0])
        return times

    times = asyncio.run(take(15))
    assert times[:5] == [0.0] * 5  # a burst of one second's worth
    assert times[-1] == pytest.approx(2.0)  # then 5 a second
    assert all(b - a == pytest.approx(0.2) for a, b in itertools.pairwise(times[5:]))


def record(segment: str, direction: str, customer: str = "u1", sequence: int = 1) -> Record:
    value = orjson.dumps(
        {"customer_id": customer, "segment": segment, "direction": direction, "sequence": sequence}
    )
    return Record.of(0, sequence, customer.encode(), value, [("ce_id", b"id%d" % sequence)])


def test_selection_by_segment_kind_and_direction(tmp_path: Path) -> None:
    d = write(
        tmp_path,
        "h.yaml",
        "id: h\ntype: webhook\nurl: http://x\nkinds: [demographic]\n"
        "segments: [buyer]\ndirections: [entered]\n",
    )
    [dest] = load_destinations(d, KINDS)
    selector = Selector.of(dest, KINDS)
    assert selector.takes(record("canadians", "entered"))
    assert selector.takes(record("buyer", "entered"))
    assert not selector.takes(record("big_spender", "entered"))
    assert not selector.takes(record("buyer", "exited"))


def test_send_completes_and_validates_events() -> None:
    now = datetime(2026, 12, 4, 10, 0, 0, 123000, tzinfo=UTC)
    filled = completed({"type": "track", "userId": "ada", "event": "X"}, now)
    assert filled["timestamp"] == "2026-12-04T10:00:00.123Z" and len(filled["messageId"]) == 36
    texts = [
        '{"type":"track","userId":"ada","event":"X","properties":{}}',
        "{nope",
        '{"type":"track","event":"X"}',
        "   ",
    ]
    good, bad_json, bad_schema = parse_events(texts, 32 * 1024)
    assert isinstance(good, tuple) and good[0] == b"ada"
    assert isinstance(bad_json, str) and bad_json.startswith("event 2: not JSON")
    assert isinstance(bad_schema, str) and "userId" in bad_schema


def test_tail_lines_and_filters() -> None:
    event = {
        "time": "2026-01-01T10:00:00.000Z",
        "data": {
            "customer_id": "ada",
            "segment": "big_spender",
            "direction": "entered",
            "from_segment": "buyer",
            "to_segment": "big_spender",
            "sequence": 2,
            "trigger": {"kind": "event", "event": "Order Completed"},
            "reason": {"rule": "revenue >= 1000", "values": {"revenue": 1200}},
        },
    }
    assert readable(event) == (
        "2026-01-01T10:00:00.000Z  ada  +big_spender  #2  [event: Order Completed]"
        "  (buyer -> big_spender)  revenue >= 1000  {revenue=1200}"
    )
    assert TailFilter(frozenset({"big_spender"})).keeps(event["data"])
    assert not TailFilter(frozenset(), frozenset({"bob"})).keeps(event["data"])


def test_the_shipped_example_destinations_pass_the_check(monkeypatch, capsys) -> None:
    from streams.cli import main

    repo = Path(__file__).resolve().parents[2]
    monkeypatch.setenv("WEBHOOK_SECRET", "example")
    monkeypatch.setenv("SEGMENTER_RULES", str(repo / "rules"))
    assert main(["destinations", "check", str(repo / "deploy" / "destinations")]) == 0
    assert capsys.readouterr().out.startswith("OK: 3 destinations")
    monkeypatch.delenv("WEBHOOK_SECRET")
    assert main(["destinations", "check", str(repo / "deploy" / "destinations")]) == 1
    assert "WEBHOOK_SECRET is unset" in capsys.readouterr().err
