"""The OpenAPI document of the HTTP API."""

from __future__ import annotations

from typing import Any

from streams import __version__


def _get(summary: str, params: list[str] | None = None, auth: bool = True) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "responses": {"200": {"description": "OK"}},
    }
    if params:
        operation["parameters"] = [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
            for p in params
        ]
    if auth:
        operation["responses"]["401"] = {"description": "missing or wrong API key"}
    return {"get": operation}


def openapi_document() -> dict[str, Any]:
    """OpenAPI 3.1 description of every route."""
    customer = _get("A customer's segments, primary segment, traits and features", ["id"])
    customer["get"]["responses"]["404"] = {"description": "unknown or erased customer"}
    explain = _get("For every segment: whether it holds, the deciding clause, the values", ["id"])
    explain["get"]["responses"]["404"] = {"description": "unknown or erased customer"}
    members = _get("A page of a segment's members", ["id"])
    members["get"]["parameters"].append(
        {"name": "cursor", "in": "query", "required": False, "schema": {"type": "integer"}}
    )
    return {
        "openapi": "3.1.0",
        "info": {"title": "Segmenter API", "version": __version__},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": {
            "/v1/customers/{id}": customer,
            "/v1/customers/{id}/explain": explain,
            "/v1/segments": _get("Every segment with its live size"),
            "/v1/segments/{id}/members": members,
            "/healthz": _get("Liveness and readiness", auth=False),
            "/metrics": _get("Prometheus metrics", auth=False),
            "/openapi.json": _get("This document", auth=False),
        },
    }
