"""The component schemas of the OpenAPI document, and the helpers that build schemas.

Kept apart from :mod:`streams.api.openapi` (the operations and paths) so that each module
stays short; :mod:`streams.api.openapi_visitor` builds its schemas with the same helpers.
"""

from __future__ import annotations

from typing import Any

_STR = {"type": "string"}
_INT = {"type": "integer"}
_NUM = {"type": "number"}
_NULLABLE_STR = {"type": ["string", "null"]}
_NULLABLE_NUM = {"type": ["number", "null"]}


def _obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    """An object schema with ``props``; every property is required unless ``required`` says."""
    return {"type": "object", "properties": props, "required": required or list(props)}


def _ref(name: str) -> dict[str, str]:
    """A reference to the component schema ``name``."""
    return {"$ref": f"#/components/schemas/{name}"}


def _list(item: dict[str, Any]) -> dict[str, Any]:
    """An array schema of ``item``."""
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
