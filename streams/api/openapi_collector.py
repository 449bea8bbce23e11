"""The collector's part of the OpenAPI document: Segment's tracking API (docs/events.md)."""

from __future__ import annotations

from typing import Any

from streams.api.collector import ALL_ROUTES
from streams.api.tracking import MAX_BATCH_EVENTS, MAX_BODY_BYTES

_EVENT = {
    "type": "object",
    "description": "a Segment Spec event (docs/events.md); the single routes set its type",
    "additionalProperties": True,
}
SCHEMAS: dict[str, Any] = {
    "SegmentEvent": _EVENT,
    "SegmentBatch": {
        "type": "object",
        "properties": {
            "batch": {"type": "array", "items": _EVENT, "maxItems": MAX_BATCH_EVENTS},
            "sentAt": {"type": "string", "format": "date-time"},
            "context": {"type": "object"},
            "writeKey": {"type": "string"},
        },
        "required": ["batch"],
    },
    "Accepted": {
        "type": "object",
        "properties": {"success": {"const": True}},
        "required": ["success"],
    },
    "Refused": {
        "type": "object",
        "properties": {
            "success": {"const": False},
            "code": {"type": "string"},
            "message": {"type": "string"},
            "accepted": {"type": "integer", "description": "events of the request produced"},
            "errors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "index": {"type": "integer"},
                        "messageId": {"type": ["string", "null"]},
                        "kind": {"type": "string"},
                        "message": {"type": "string"},
                    },
                },
            },
        },
        "required": ["success", "code", "message"],
    },
}
SECURITY: dict[str, Any] = {
    "writeKey": {
        "type": "http",
        "scheme": "basic",
        "description": "a key of SEGMENTER_WRITE_KEYS as the user name (or 'writeKey' in the body)",
    }
}


def _refused(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Refused"}}},
    }


def _post(route: str, name: str) -> dict[str, Any]:
    schema = "SegmentBatch" if route == "batch" else "SegmentEvent"
    summary = (
        f"Segment's tracking API: {'a batch of events' if route == 'batch' else 'one ' + route}"
        + (f" (analytics.js's path for /v1/{route})" if name != route else "")
    )
    return {
        "summary": summary,
        "security": [{"writeKey": []}],
        "requestBody": {
            "required": True,
            "description": f"JSON, optionally gzip-compressed; at most {MAX_BODY_BYTES} bytes",
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
        },
        "responses": {
            "200": {
                "description": "every event is in Kafka (acknowledged by all in-sync replicas)",
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Accepted"}}
                },
            },
            "400": _refused("refused request, or refused events (the others were produced)"),
            "401": _refused("no write key, or a wrong one: nothing produced"),
            "403": _refused("a browser origin not in SEGMENTER_COLLECTOR_ORIGINS"),
            "404": _refused("this process does not collect (a worker)"),
            "503": _refused("Kafka did not confirm: retry (Retry-After)"),
        },
    }


def _preflight() -> dict[str, Any]:
    return {
        "summary": "CORS preflight of a browser origin",
        "security": [],
        "responses": {
            "204": {"description": "allowed: the CORS headers"},
            "403": {"description": "origin not allowed"},
        },
    }


def collector_paths() -> dict[str, Any]:
    """Every collector path with its operations."""
    return {
        f"/v1/{name}": {"post": _post(route, name), "options": _preflight()}
        for name, route in ALL_ROUTES.items()
    }
