"""What every HTTP route shares at the door: the API key, bounded parameters and bodies, and
errors that are answers (4xx, 503) rather than tracebacks.

* ``Authorization: Bearer <key>``: the scheme is case-insensitive and may be followed by one or
  more spaces (RFC 7235); the key itself is compared in constant time.
* Query parameters that are numbers are ASCII digits within a stated range; outside it the
  answer is 400 with the range.
* A request body must arrive within :data:`BODY_TIMEOUT_S` (408 after that); a request whose
  headers never complete is closed by the server's keep-alive timeout
  (:data:`IDLE_TIMEOUT_S`).
* Redis unreachable: 503 with ``Retry-After``, never a 500. A customer state that cannot be read
  is that customer's error, not every caller's.
* A malformed request line or header is logged as one line, not a traceback.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from redis.exceptions import BusyLoadingError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from streams.state.customer import StateDecodeError

log = logging.getLogger("segmenter.http")

BODY_TIMEOUT_S = 10.0
"""How long a request body may take to arrive."""
IDLE_TIMEOUT_S = 30.0
"""How long a connection may sit without a complete request (half-sent headers included)."""
LINGER_S = 1.0
"""How long the server reads what is left of a refused request's body before it closes."""
MAX_CURSOR = 2**63 - 1
"""The largest member-page cursor (Redis cursors are unsigned 64-bit; ours stay below 2**63)."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(data: Any, status: int = 200, **headers: str) -> web.Response:
    """A JSON response."""
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )


class BadRequest(Exception):
    """A parameter or body the route cannot use; the message says why (answered 400)."""


def bearer_matches(header: str, key: str) -> bool:
    """Whether an ``Authorization`` header carries ``key`` as a bearer token."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(token.lstrip(" ").encode(), key.encode())


def query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter in ``[low, high]`` (ASCII digits), or :class:`BadRequest`."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    digits = raw[1:] if raw.startswith("-") else raw
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 20:
        raise BadRequest(f"{name}: expected a whole number from {low} to {high}, got {raw[:40]!r}")
    value = int(raw)
    if not low <= value <= high:
        raise BadRequest(f"{name}: expected a whole number from {low} to {high}, got {value}")
    return value


async def read_body(request: web.Request, timeout: float | None = None) -> bytes:
    """The whole request body, or :class:`web.HTTPRequestTimeout` when it does not arrive in
    ``timeout`` seconds (default :data:`BODY_TIMEOUT_S`; a client that sends half a body holds
    nothing for long)."""
    timeout = BODY_TIMEOUT_S if timeout is None else timeout
    try:
        return await asyncio.wait_for(request.read(), timeout)
    except TimeoutError:
        raise web.HTTPRequestTimeout(
            text=orjson.dumps({"error": f"the body did not arrive within {timeout:g}s"}).decode(),
            content_type="application/json",
        ) from None


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answers for what a handler cannot do: 400, 503 (Redis down) and a customer's unreadable
    state (500 for that customer alone; shared views skip such states)."""
    try:
        return await handler(request)
    except BadRequest as exc:
        return json_response({"error": str(exc)}, 400)
    except (RedisConnectionError, RedisTimeoutError, BusyLoadingError) as exc:
        log.warning("%s %s: Redis unavailable (%r)", request.method, request.path, exc)
        return json_response(
            {"error": "the store (Redis) is unavailable"}, 503, **{"Retry-After": "2"}
        )
    except StateDecodeError as exc:
        log.error("%s %s: %s", request.method, request.path, exc)
        return json_response({"error": "this customer's stored state cannot be read"}, 500)


class OneLineBadRequests(logging.Filter):
    """Logs a malformed request (bad request line, header, chunk) as one warning line: it is the
    client's fault, and a traceback per probe would flood the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite a record about a malformed request; pass every other one unchanged."""
        found = record.exc_info[1] if record.exc_info else None
        if isinstance(found, HttpProcessingError):
            record.msg = "bad request from a client: %s"
            record.args = (str(found.message or found).splitlines()[0][:200],)
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def quiet_bad_requests() -> None:
    """Install :class:`OneLineBadRequests` on aiohttp's server logger (once)."""
    server = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, OneLineBadRequests) for f in server.filters):
        server.addFilter(OneLineBadRequests())
