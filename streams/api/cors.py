"""CORS for the routes browsers call from other origins (the collector, the visitor routes)."""

from __future__ import annotations

from collections.abc import Collection

from aiohttp import web


def cors_headers(request: web.Request, allowed: Collection[str]) -> dict[str, str] | None:
    """The CORS headers for the request's ``Origin`` among ``allowed`` (``*`` allows any);
    None when a page of that origin may not call the route. No ``Origin``, or the API's own,
    needs no header."""
    origin = request.headers.get("Origin")
    if origin is None or origin == f"{request.scheme}://{request.host}":
        return {}
    if "*" in allowed:
        return {"Access-Control-Allow-Origin": "*"}
    if origin.rstrip("/") in allowed:
        return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
    return None
