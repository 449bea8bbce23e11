"""The OpenAPI description of the visitor routes (merged into ``GET /openapi.json``)."""

from __future__ import annotations

from typing import Any

from streams.api.openapi import _op
from streams.api.openapi_schemas import _INT, _STR, _list, _obj, _ref

SCHEMAS: dict[str, Any] = {
    "VisitorTokenRequest": _obj({"customer_id": {**_STR, "minLength": 1, "maxLength": 512}}),
    "VisitorToken": _obj(
        {
            "token": {**_STR, "description": "an HS256 JSON Web Token for this customer only"},
            "expires_at": {**_STR, "format": "date-time"},
        }
    ),
    "VisitorSegments": _obj(
        {
            "segments": _list(_STR),
            "sequence": {**_INT, "description": "the last migration's sequence (0: none yet)"},
        }
    ),
}

SECURITY: dict[str, Any] = {
    "visitorToken": {
        "type": "apiKey",
        "in": "query",
        "name": "token",
        "description": "a visitor token from POST /v1/visitor/tokens (one customer, short-lived)",
    }
}

_TOKEN = {
    "token": {"schema": _STR, "description": "a visitor token (required)"},
    "customer_id": {
        "schema": _STR,
        "description": "optional: refused with 401 unless it is the token's customer",
    },
}


def _visitor_op(summary: str, schema: str | None, media: str = "application/json") -> Any:
    """A route authorised by a visitor token (not the API key)."""
    operation = _op(summary, schema, query=_TOKEN, auth=False, media=media)
    operation["security"] = [{"visitorToken": []}]
    error = {"content": {"application/json": {"schema": _ref("Error")}}}
    operation["responses"]["401"] = {
        "description": "missing, malformed, expired, forged or another customer's token",
        **error,
    }
    operation["responses"]["403"] = {"description": "origin not allowed", **error}
    operation["responses"]["503"] = {"description": "visitor tokens off, or busy", **error}
    return operation


def visitor_paths() -> dict[str, Any]:
    """The paths of the visitor routes and the demo page."""
    tokens = _op(
        "A visitor token for one customer (call it from the site's backend)", "VisitorToken"
    )
    tokens["requestBody"] = {
        "required": True,
        "content": {"application/json": {"schema": _ref("VisitorTokenRequest")}},
    }
    tokens["responses"]["400"] = {"description": "no valid customer_id"}
    tokens["responses"]["503"] = {"description": "SEGMENTER_VISITOR_SECRET is not set"}
    stream = _visitor_op(
        "Server-Sent Events of the visitor's segment changes: `snapshot`, `entered`, `exited`"
        " (`id` = sequence); resumes with the Last-Event-ID header or `last_event_id`",
        None,
        media="text/event-stream",
    )
    stream["parameters"].append(
        {
            "name": "last_event_id",
            "in": "query",
            "required": False,
            "schema": _INT,
            "description": "as the Last-Event-ID header (which wins)",
        }
    )
    preflight = _op("CORS preflight", None, auth=False)
    preflight["responses"] = {"204": {"description": "allowed"}, "403": {"description": "not"}}
    return {
        "/v1/visitor/tokens": {"post": tokens},
        "/v1/visitor/segments": {
            "get": _visitor_op("The visitor's segment ids", "VisitorSegments"),
            "options": preflight,
        },
        "/v1/visitor/stream": {"get": stream, "options": preflight},
        "/demo": {"get": _op("Live content swap demo", None, auth=False, media="text/html")},
    }
