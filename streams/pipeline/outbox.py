"""Messages waiting to be sent: encoded into the Redis outbox in the same Lua call as the state.

Every message the worker produces (migrations, DLQ records, re-routed input) is first committed to
the outbox of its input partition together with the state change that caused it, then sent, then
trimmed. A crash between commit and send resends the same bytes, so nothing is lost and the
deterministic ``ce_id`` lets subscribers drop the duplicate.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import orjson


def _pack(data: bytes | None) -> str | None:
    if data is None:
        return None
    try:
        return "u" + data.decode("utf-8")
    except UnicodeDecodeError:
        return "b" + base64.b64encode(data).decode("ascii")


def _unpack(text: str | None) -> bytes | None:
    if text is None:
        return None
    if text[0] == "u":
        return text[1:].encode("utf-8")
    return base64.b64decode(text[1:])


def _document(
    topic: str,
    partition: int | None,
    key: str | None,
    value: str | None,
    headers: Sequence[Sequence[str | None]],
) -> bytes:
    """The outbox's encoding of one message whose parts are packed already (see :func:`_pack`)."""
    return orjson.dumps({"t": topic, "p": partition, "k": key, "v": value, "h": headers})


def text_record(topic: str, key: str, value: str, headers: Iterable[tuple[str, str]]) -> bytes:
    """``OutboxEntry(topic, key, value, headers).encode()`` of a message whose parts are all
    text, built without encoding each part to bytes and decoding it again (a migration's
    CloudEvent: the worker writes about one per event)."""
    packed = [[name, "u" + text] for name, text in headers]
    return _document(topic, None, "u" + key, "u" + value, packed)


class OutboxEntry(NamedTuple):
    """One Kafka message to send: topic, optional fixed partition, key, value, headers.

    A named tuple: the sender decodes one per message it sends, and a tuple is cheaper to make
    than a frozen dataclass (0.5 against 0.8 us; decoding a migration's entry 3.9 against 4.7
    us)."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    partition: int | None = None

    def encode(self) -> bytes:
        """Binary-safe JSON for the outbox list."""
        return _document(
            self.topic,
            self.partition,
            _pack(self.key),
            _pack(self.value),
            [[name, _pack(value)] for name, value in self.headers],
        )

    @classmethod
    def decode(cls, raw: bytes) -> OutboxEntry:
        """Inverse of :meth:`encode`."""
        doc = orjson.loads(raw)
        return cls(
            topic=doc["t"],
            key=_unpack(doc["k"]),
            value=_unpack(doc["v"]),
            headers=tuple([(name, _unpack(value) or b"") for name, value in doc["h"]]),
            partition=doc["p"],
        )
