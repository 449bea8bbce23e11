"""Fitted model parameters in Redis (``<ns>:meta:models``), versioned, read live by the API.

The document: ``{"version", "fitted_at", "customers", "repeat_customers", "unit": "days",
"conversion_event", "bgnbd": {r, alpha, a, b}, "gamma_gamma": {p, q, v}, "clv": {...}}``.
Each fit gets a new version; readers compare versions and switch when it changes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from streams.models.formulas import BgNbd, GammaGamma
from streams.store.base import Store

META = "models"
CLV_HORIZON_DAYS = 365.0
ANNUAL_DISCOUNT = 0.10
PREDICTION_DAYS = 90.0


@dataclass(frozen=True)
class FittedModels:
    """One published fit."""

    version: str
    document: dict[str, Any]
    bgnbd: BgNbd
    spend: GammaGamma | None

    @classmethod
    def of(cls, document: dict[str, Any]) -> FittedModels:
        """Read a published document."""
        bg = document["bgnbd"]
        gg = document.get("gamma_gamma")
        spend = GammaGamma(gg["p"], gg["q"], gg["v"]) if gg else None
        model = BgNbd(bg["r"], bg["alpha"], bg["a"], bg["b"])
        return cls(str(document["version"]), document, model, spend)


def version_of(document: dict[str, Any]) -> str:
    """A short digest of the parameters and the fit time."""
    raw = orjson.dumps(
        {k: document.get(k) for k in ("bgnbd", "gamma_gamma", "fitted_at")},
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(raw).hexdigest()[:12]


async def publish(store: Store, document: dict[str, Any]) -> str:
    """Store a fit as the current one; return its version."""
    document = {**document, "version": version_of(document)}
    await store.meta_set(META, orjson.dumps(document))
    return str(document["version"])


class ModelReader:
    """Reads the published fit, re-parsing only when the stored bytes change."""

    def __init__(self) -> None:
        self._raw: bytes | None = None
        self._models: FittedModels | None = None

    async def current(self, store: Store) -> FittedModels | None:
        """The current fit, or None before the first one."""
        raw = await store.meta_get(META)
        if raw != self._raw:
            self._raw = raw
            self._models = FittedModels.of(orjson.loads(raw)) if raw else None
        return self._models
