"""Control records: a watermark the segmenter itself puts on the input topic.

``segmenter replay`` ends its input with one: header ``segmenter.control: watermark``, value
``{"until": <epoch seconds>}``: everything up to and including ``until`` is over, so every open
instant is published and every timer due by then fires. Anyone who can write to the input topic
could otherwise fire every timer of a partition at once, so a control record is trusted only
when

* it carries ``segmenter.control-signature``: the hex HMAC-SHA256 of its value under
  ``SEGMENTER_CONTROL_SECRET`` (``replay`` makes one for its own worker; unset, no control record
  is trusted), and
* its ``until`` is a finite instant no later than the partition's clock (the latest event time
  of the partition in event time, the batch's clock reading in processing time): a control
  record settles what has happened, it never moves time forward.

Anything else goes to the DLQ with kind ``control``.
"""

from __future__ import annotations

import hashlib
import hmac
import math

import orjson

from streams.engine.instants import in_range
from streams.events.decode import DecodeFailure

CONTROL_HEADER = "segmenter.control"
SIGNATURE_HEADER = "segmenter.control-signature"
Headers = tuple[tuple[str, bytes], ...]


def signature(value: bytes, secret: str) -> bytes:
    """The signature header's value for a control record's ``value``."""
    return hmac.new(secret.encode(), value, hashlib.sha256).hexdigest().encode()


def control_record(until: float, secret: str) -> tuple[bytes, Headers]:
    """The value and headers of a signed watermark up to ``until``."""
    value = orjson.dumps({"until": until})
    return value, ((CONTROL_HEADER, b"watermark"), (SIGNATURE_HEADER, signature(value, secret)))


def is_control(headers: Headers) -> bool:
    """Whether a record says it is a control record (signed or not)."""
    return any(name == CONTROL_HEADER for name, _ in headers)


def read_control(
    value: bytes | None, headers: Headers, secret: str | None
) -> float | DecodeFailure:
    """The ``until`` of a control record, or why it is refused (kind ``control``).

    The bound against the partition's clock is checked when it is applied, where the clock is
    known (:func:`beyond_clock`).
    """
    kind = next((v for name, v in headers if name == CONTROL_HEADER), b"")
    if kind != b"watermark":
        return DecodeFailure("control", f"unknown control record {kind[:40]!r}")
    if secret is None:
        return DecodeFailure(
            "control", "control records are refused: SEGMENTER_CONTROL_SECRET is unset"
        )
    given = next((v for name, v in headers if name == SIGNATURE_HEADER), None)
    if given is None or not hmac.compare_digest(given, signature(value or b"", secret)):
        return DecodeFailure("control", "control record without a valid signature")
    try:
        until = orjson.loads(value or b"")["until"]
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        return DecodeFailure("control", f'expected {{"until": <epoch seconds>}}: {exc!r}')
    if isinstance(until, bool) or not isinstance(until, int | float):
        return DecodeFailure("control", f"until: expected a number, found {until!r}")
    until = float(until)
    if not (math.isfinite(until) and in_range(until)):
        return DecodeFailure(
            "control", f"until: expected an instant from 1970 to 3000, found {until}"
        )
    return until


def beyond_clock(until: float, clock: float | None) -> DecodeFailure | None:
    """A refusal when ``until`` is past the partition's ``clock`` (or it has none)."""
    if clock is None or until > clock:
        return DecodeFailure(
            "control", f"until {until} is past the partition's clock ({clock}): time never jumps"
        )
    return None
