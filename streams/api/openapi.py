"""The OpenAPI 3.1 document of the HTTP API (served at ``GET /openapi.json``)."""

from __future__ import annotations

from typing import Any

from streams import __version__

_STR = {"type": "string"}
_INT = {"type": "integer"}
_NUM = {"type": "number"}
_NULLABLE_STR = {"type": ["string", "null"]}
_NULLABLE_NUM = {"type": ["number", "null"]}


def _obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": required or list(props)}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _list(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": item}


SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "properties": {"error": _STR, "errors": _list(_STR)},
        "required": ["error"],
    },
    "Features": _obj(
        {
            "orders": _INT,
            "revenue": _NUM,
            "average_order_value": _NULLABLE_NUM,
            "events": _INT,
            "first_seen": _NULLABLE_STR,
            "last_seen": _NULLABLE_STR,
        }
    ),
    "Customer": _obj(
        {
            "customer_id": _STR,
            "segments": _list(_STR),
            "primary_segment": _NULLABLE_STR,
            "traits": {"type": "object"},
            "features": _ref("Features"),
            "rule_version": _STR,
            "predictions": {
                "type": ["object", "null"],
                "description": "with a published model and at least one order: p_alive,"
                " expected_orders_90d, clv_365d (10% a year discount), model_version",
            },
        }
    ),
    "Explanation": _obj(
        {
            "customer_id": _STR,
            "evaluated_at": _STR,
            "segments": _list(
                _obj(
                    {
                        "segment": _STR,
                        "member": {"type": "boolean"},
                        "holds_now": {"type": "boolean"},
                        "rule": {"type": "string", "description": "the clause that decided"},
                        "values": {"type": "object", "description": "the values it read"},
                    }
                )
            ),
            "features": _ref("Features"),
        }
    ),
    "Segment": _obj(
        {
            "id": _STR,
            "name": _STR,
            "description": _STR,
            "kind": _STR,
            "family": _NULLABLE_STR,
            "priority": _INT,
            "size": _INT,
        }
    ),
    "SegmentList": _obj({"rule_version": _STR, "at": _STR, "segments": _list(_ref("Segment"))}),
    "SegmentSummary": {
        "allOf": [
            _ref("Segment"),
            _obj(
                {
                    "members": _INT,
                    "summary": _obj(
                        {
                            "sampled": _INT,
                            "average_lifetime_revenue": _NULLABLE_NUM,
                            "average_order_value": _NULLABLE_NUM,
                            "average_orders": _NULLABLE_NUM,
                            "top_traits": _list(
                                _obj({"trait": _STR, "value": _STR, "count": _INT, "share": _NUM})
                            ),
                        }
                    ),
                }
            ),
        ]
    },
    "Members": _obj(
        {"segment": _STR, "members": _list(_STR), "next_cursor": {"type": ["integer", "null"]}}
    ),
    "Preview": _obj(
        {
            "segment": _STR,
            "size": _INT,
            "would_enter": _INT,
            "would_leave": _INT,
            "scanned": _INT,
            "errors": _list(_STR),
            "warnings": _list(_STR),
        }
    ),
    "Matrix": _obj(
        {
            "day": _STR,
            "segments": _list(_obj({"id": _STR, "name": _STR})),
            "cells": _list(
                _obj(
                    {
                        "from": {"type": "string", "description": "segment id, '-' for none"},
                        "to": {"type": "string", "description": "segment id, '-' for none"},
                        "count": _INT,
                    }
                )
            ),
            "total": _INT,
        }
    ),
    "RfmGrid": _obj(
        {
            "method": _STR,
            "sampled": _INT,
            "scored": _INT,
            "without_orders": _INT,
            "bounds": _obj({"recency_days": _list(_NUM), "orders": _list(_NUM)}),
            "grid": {
                "description": "grid[r-1][f-1]: customers with recency score r, frequency f",
                **_list(_list(_INT)),
            },
        }
    ),
    "Destinations": _obj(
        {
            "destinations": _list(
                _obj(
                    {
                        "id": _STR,
                        "delivered": _NUM,
                        "retried": _NUM,
                        "dead_lettered": _NUM,
                        "requests": _NUM,
                        "skipped": _NUM,
                        "lag": _NUM,
                        "updated_at": _NUM,
                    }
                )
            )
        }
    ),
    "History": _obj(
        {
            "segment": _STR,
            "granularity": _STR,
            "points": _list(
                _obj(
                    {
                        "start": _STR,
                        "end": _STR,
                        "entered": _INT,
                        "exited": _INT,
                        "size": _INT,
                    }
                )
            ),
        }
    ),
    "Overlap": _obj(
        {
            "segments": _list(_STR),
            "pairs": _list(
                _obj(
                    {
                        "a": _STR,
                        "b": _STR,
                        "a_size": _INT,
                        "b_size": _INT,
                        "both": _INT,
                        "jaccard": _NUM,
                    }
                )
            ),
        }
    ),
    "Performance": {
        "type": "object",
        "description": "members vs comparison_group (holdout or non_members); rate: the"
        " two-proportion z-test, value: Welch's t-test; each with a 95% interval (ci95)",
        "required": ["segment", "members", "comparison_group", "comparison", "rate", "value"],
        "properties": {
            "segment": _STR,
            "window_days": _NUM,
            "members": {"type": "object"},
            "comparison_group": {"enum": ["holdout", "non_members"]},
            "comparison": {"type": "object"},
            "rate": {"type": ["object", "null"]},
            "value": {"type": ["object", "null"]},
        },
    },
    "Report": {
        "type": "object",
        "required": ["customers", "segments", "flags"],
        "properties": {
            "customers": _INT,
            "active_primary_segments": _INT,
            "flags": _list({"type": "object"}),
            "segments": _list({"type": "object"}),
        },
    },
    "Predictions": _obj(
        {
            "segment": _STR,
            "model_version": _STR,
            "sampled": _INT,
            "without_orders": _INT,
            "p_alive_bins": {
                **_list(_INT),
                "description": "members with P(alive) in [i/10, (i+1)/10)",
            },
            "expected_orders_90d": _obj(
                {"mean": _NULLABLE_NUM, "median": _NULLABLE_NUM, "total": _NUM}
            ),
        }
    ),
    "Models": {
        "type": "object",
        "required": ["version", "fitted_at", "customers", "bgnbd"],
        "properties": {
            "version": _STR,
            "fitted_at": _STR,
            "customers": _INT,
            "repeat_customers": _INT,
            "unit": _STR,
            "conversion_event": _STR,
            "bgnbd": _obj({"r": _NUM, "alpha": _NUM, "a": _NUM, "b": _NUM}),
            "gamma_gamma": {"type": ["object", "null"]},
        },
    },
    "Health": {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}, "redis": {"type": "boolean"}},
        "required": ["ok"],
    },
}


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
    """The document without the visitor routes."""
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
    health = _op("Liveness and readiness (503 when not ready)", "Health", auth=False)
    health["responses"]["503"] = {
        "description": "Redis unreachable, or no progress although partitions are assigned",
        "content": {"application/json": {"schema": _ref("Health")}},
    }
    matrix = _op(
        "Moves between segments on a day",
        "Matrix",
        query={"day": {"schema": {**_STR, "format": "date"}, "description": "UTC, default today"}},
    )
    matrix["responses"]["400"] = {"description": "malformed day"}
    members = _op(
        "A page of a segment's members",
        "Members",
        path=["id"],
        query={
            "cursor": {"schema": _INT, "description": "from the previous page's next_cursor"},
            "limit": {"schema": {**_INT, "minimum": 1, "maximum": 1000, "default": 100}},
        },
        not_found="unknown segment",
    )
    bad = {
        "description": "a bad parameter",
        "content": {"application/json": {"schema": _ref("Error")}},
    }
    window = {
        "window": {
            "schema": _STR,
            "description": "e.g. 30d; default SEGMENTER_REPORT_WINDOW_DAYS, at most the pack's"
            " performance window_days",
        }
    }
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
    history["responses"]["400"] = bad
    overlap = _op(
        "Members in both and the Jaccard index of pairs of segments (exact)",
        "Overlap",
        query={"segments": {"schema": _STR, "description": "comma-separated ids; default all"}},
        not_found="unknown segment",
    )
    overlap["responses"]["400"] = bad
    performance = _op(
        "Conversion and value per member against the holdout (or non-members), with lift",
        "Performance",
        path=["id"],
        query=window,
        not_found="unknown segment",
    )
    performance["responses"]["400"] = bad
    report = _op("Every segment against MIDAS, with flags", "Report", query=window)
    report["responses"]["400"] = bad
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
            "/v1/segments/preview": {"post": preview},
            "/v1/segments/{id}": {
                "get": _op(
                    "A segment with a summary over up to 1000 sampled members",
                    "SegmentSummary",
                    path=["id"],
                    not_found="unknown segment",
                )
            },
            "/v1/segments/{id}/members": {"get": members},
            "/v1/segments/{id}/history": {"get": history},
            "/v1/segments/{id}/performance": {"get": performance},
            "/v1/segments/overlap": {"get": overlap},
            "/v1/report": {"get": report},
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
            "/v1/migrations/matrix": {"get": matrix},
            "/v1/rfm/grid": {"get": _op("Recency x frequency quintile grid", "RfmGrid")},
            "/v1/destinations": {
                "get": _op("Each delivery destination's counters and lag", "Destinations")
            },
            "/healthz": {"get": health},
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
        },
    }
