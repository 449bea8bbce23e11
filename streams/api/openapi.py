"""The OpenAPI 3.1 document of the HTTP API (served at ``GET /openapi.json``)."""

from __future__ import annotations

from typing import Any

from streams import __version__
from streams.api.openapi_schemas import _INT, _STR, SCHEMAS, _ref


def _op(
    summary: str,
    schema: str | None,
    *,
    path: list[str] | None = None,
    query: dict[str, dict[str, Any]] | None = None,
    auth: bool = True,
    not_found: str | None = None,
    media: str = "application/json",
) -> dict[str, Any]:
    """One operation with its parameters and responses."""
    ok: dict[str, Any] = {"description": "OK"}
    if schema is not None:
        ok["content"] = {media: {"schema": _ref(schema)}}
    elif media != "application/json":
        ok["content"] = {media: {"schema": _STR}}
    error = {"content": {"application/json": {"schema": _ref("Error")}}}
    operation: dict[str, Any] = {"summary": summary, "responses": {"200": ok}}
    params = [{"name": p, "in": "path", "required": True, "schema": _STR} for p in (path or [])]
    params += [
        {"name": n, "in": "query", "required": False, **spec} for n, spec in (query or {}).items()
    ]
    if params:
        operation["parameters"] = params
    if auth:
        operation["security"] = [{"bearer": []}]
        operation["responses"]["401"] = {"description": "missing or wrong API key", **error}
    else:
        operation["security"] = []
    if not_found:
        operation["responses"]["404"] = {"description": not_found, **error}
    return operation


def openapi_document() -> dict[str, Any]:
    """OpenAPI 3.1 description of every route."""
    from streams.api import openapi_collector, openapi_visitor  # they build on this module

    doc = _core_document()
    components = doc["components"]
    components["schemas"] = {
        **components["schemas"],
        **openapi_visitor.SCHEMAS,
        **openapi_collector.SCHEMAS,
    }
    components["securitySchemes"] = {
        **components["securitySchemes"],
        **openapi_visitor.SECURITY,
        **openapi_collector.SECURITY,
    }
    doc["paths"].update(openapi_visitor.visitor_paths())
    doc["paths"].update(openapi_collector.collector_paths())
    return doc


def _core_document() -> dict[str, Any]:
    """The document without the visitor and collector routes."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Segmenter API",
            "version": __version__,
            "description": "Real-time customer segments: lookups, explanations, previews, and a"
            " Segment-compatible collector of events.",
        },
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "the value of SEGMENTER_API_KEY (only when it is set)",
                },
            },
            "schemas": SCHEMAS,
        },
        "paths": {
            **_customer_and_segment_paths(),
            **_analytics_paths(),
            **_operations_paths(),
        },
    }


def _bad_parameter() -> dict[str, Any]:
    """The 400 response of a route with a parameter it can reject."""
    return {
        "description": "a bad parameter",
        "content": {"application/json": {"schema": _ref("Error")}},
    }


def _report_window() -> dict[str, dict[str, Any]]:
    """The ``window`` query parameter of the performance and report routes."""
    return {
        "window": {
            "schema": _STR,
            "description": "e.g. 30d; default SEGMENTER_REPORT_WINDOW_DAYS, at most the pack's"
            " performance window_days",
        }
    }


def _preview_operation() -> dict[str, Any]:
    """``POST /v1/segments/preview``: a draft segment file in, what it would do out."""
    preview = _op("What a draft segment would do (not activated)", "Preview")
    preview["requestBody"] = {
        "required": True,
        "description": "one segment rule file: YAML text, or JSON of the same shape",
        "content": {"application/yaml": {"schema": _STR}, "application/json": {"schema": {}}},
    }
    preview["responses"]["422"] = {
        "description": "invalid draft: `errors` has `file:line: message` lines",
        "content": {"application/json": {"schema": _ref("Error")}},
    }
    return preview


def _members_operation() -> dict[str, Any]:
    """``GET /v1/segments/{id}/members``: a page of members, with its cursor."""
    return _op(
        "A page of a segment's members",
        "Members",
        path=["id"],
        query={
            "cursor": {"schema": _INT, "description": "from the previous page's next_cursor"},
            "limit": {"schema": {**_INT, "minimum": 1, "maximum": 1000, "default": 100}},
        },
        not_found="unknown segment",
    )


def _customer_and_segment_paths() -> dict[str, Any]:
    """The lookups: a customer, its explanation, the segments, their members, a preview."""
    return {
        "/v1/customers/{id}": {
            "get": _op(
                "A customer's segments, primary segment, traits and features",
                "Customer",
                path=["id"],
                not_found="unknown or erased customer",
            )
        },
        "/v1/customers/{id}/explain": {
            "get": _op(
                "For every segment: whether it holds, the deciding clause, the values",
                "Explanation",
                path=["id"],
                not_found="unknown or erased customer",
            )
        },
        "/v1/segments": {"get": _op("Every segment with its live size", "SegmentList")},
        "/v1/segments/preview": {"post": _preview_operation()},
        "/v1/segments/{id}": {
            "get": _op(
                "A segment with a summary over up to 1000 sampled members",
                "SegmentSummary",
                path=["id"],
                not_found="unknown segment",
            )
        },
        "/v1/segments/{id}/members": {"get": _members_operation()},
    }


def _history_operation() -> dict[str, Any]:
    """``GET /v1/segments/{id}/history``: size, entered and exited per hour or day."""
    history = _op(
        "A segment's size, entered and exited per hour or day",
        "History",
        path=["id"],
        query={
            "granularity": {"schema": {"enum": ["hour", "day"], "default": "hour"}},
            "since": {"schema": {**_STR, "format": "date-time"}},
            "until": {"schema": {**_STR, "format": "date-time"}},
        },
        not_found="unknown segment",
    )
    history["responses"]["400"] = _bad_parameter()
    return history


def _performance_operation() -> dict[str, Any]:
    """``GET /v1/segments/{id}/performance``: members against the holdout, with lift."""
    performance = _op(
        "Conversion and value per member against the holdout (or non-members), with lift",
        "Performance",
        path=["id"],
        query=_report_window(),
        not_found="unknown segment",
    )
    performance["responses"]["400"] = _bad_parameter()
    return performance


def _overlap_operation() -> dict[str, Any]:
    """``GET /v1/segments/overlap``: pairs of segments, their common members and Jaccard."""
    overlap = _op(
        "Members in both and the Jaccard index of pairs of segments (exact)",
        "Overlap",
        query={"segments": {"schema": _STR, "description": "comma-separated ids; default all"}},
        not_found="unknown segment",
    )
    overlap["responses"]["400"] = _bad_parameter()
    return overlap


def _report_operation() -> dict[str, Any]:
    """``GET /v1/report``: every segment against MIDAS."""
    report = _op("Every segment against MIDAS, with flags", "Report", query=_report_window())
    report["responses"]["400"] = _bad_parameter()
    return report


def _matrix_operation() -> dict[str, Any]:
    """``GET /v1/migrations/matrix``: the moves between segments on a day."""
    matrix = _op(
        "Moves between segments on a day",
        "Matrix",
        query={"day": {"schema": {**_STR, "format": "date"}, "description": "UTC, default today"}},
    )
    matrix["responses"]["400"] = {"description": "malformed day"}
    return matrix


def _analytics_paths() -> dict[str, Any]:
    """History, performance, overlap, the report, predictions, models, moves, RFM, delivery."""
    return {
        "/v1/segments/{id}/history": {"get": _history_operation()},
        "/v1/segments/{id}/performance": {"get": _performance_operation()},
        "/v1/segments/overlap": {"get": _overlap_operation()},
        "/v1/report": {"get": _report_operation()},
        "/v1/segments/{id}/predictions": {
            "get": _op(
                "A sample of a segment's members by P(alive), and their expected orders",
                "Predictions",
                path=["id"],
                not_found="unknown segment, or no model fitted yet",
            )
        },
        "/v1/models": {
            "get": _op(
                "The published BG/NBD and Gamma-Gamma fit: parameters, fit time, data size",
                "Models",
                not_found="no model fitted yet",
            )
        },
        "/v1/migrations/matrix": {"get": _matrix_operation()},
        "/v1/rfm/grid": {"get": _op("Recency x frequency quintile grid", "RfmGrid")},
        "/v1/destinations": {
            "get": _op("Each delivery destination's counters and lag", "Destinations")
        },
    }


def _health_operation() -> dict[str, Any]:
    """``GET /healthz``: liveness and readiness, no API key."""
    health = _op("Liveness and readiness (503 when not ready)", "Health", auth=False)
    health["responses"]["503"] = {
        "description": "Redis unreachable, or no progress although partitions are assigned",
        "content": {"application/json": {"schema": _ref("Health")}},
    }
    return health


def _operations_paths() -> dict[str, Any]:
    """The routes without an API key: health, metrics, this document, the pages, assets."""
    return {
        "/healthz": {"get": _health_operation()},
        "/metrics": {"get": _op("Prometheus metrics", None, auth=False, media="text/plain")},
        "/openapi.json": {"get": _op("This document", None, auth=False)},
        "/": {"get": _op("The dashboard", None, auth=False, media="text/html")},
        "/report": {"get": _op("The MIDAS report page", None, auth=False, media="text/html")},
        "/static/{name}": {
            "get": _op(
                "Dashboard assets and segmenter.js",
                None,
                path=["name"],
                auth=False,
                media="application/javascript",
                not_found="no such file",
            )
        },
    }
