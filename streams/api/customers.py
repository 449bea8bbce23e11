"""Customer views shared by the HTTP API and ``segmenter explain``."""

from __future__ import annotations

import time
from typing import Any

from streams.engine import RuleSet
from streams.events.models import iso
from streams.models.predictor import History, Predictor
from streams.models.published import FittedModels
from streams.state.customer import CustomerState
from streams.state.facts import StateFacts
from streams.store.base import Store


async def load_customer(store: Store, customer_id: str) -> CustomerState | None:
    """The customer's state, or None when unknown or erased."""
    stored = await store.get_state(customer_id)
    return CustomerState.from_json(stored.data) if stored is not None else None


def features(state: CustomerState) -> dict[str, Any]:
    """Key lifetime features of a customer."""
    return {
        "orders": state.orders,
        "revenue": state.revenue,
        "average_order_value": round(state.revenue / state.orders, 2) if state.orders else None,
        "events": state.events,
        "first_seen": iso(state.first_seen) if state.first_seen is not None else None,
        "last_seen": iso(state.last_seen) if state.last_seen is not None else None,
    }


async def customer_view(
    store: Store,
    rules: RuleSet,
    customer_id: str,
    models: FittedModels | None = None,
    now: float | None = None,
) -> dict[str, Any] | None:
    """``GET /v1/customers/{id}`` (with ``predictions`` when a model is published)."""
    state = await load_customer(store, customer_id)
    if state is None:
        return None
    predictions = None
    conversion = rules.conversion
    if models is not None and conversion is not None:
        history = History.of(state, conversion.event)
        if history is not None:
            predictor = Predictor(models, conversion.event)
            predictions = predictor.predictions(history, now or time.time())
    return {
        "customer_id": state.customer_id,
        "segments": sorted(state.members),
        "primary_segment": state.primary,
        "traits": state.traits,
        "features": features(state),
        "rule_version": rules.version,
        "predictions": predictions,
    }


async def explain_view(
    store: Store,
    rules: RuleSet,
    customer_id: str,
    now: float,
    models: FittedModels | None = None,
) -> dict[str, Any] | None:
    """``GET /v1/customers/{id}/explain``: for every segment, whether it holds and why."""
    state = await load_customer(store, customer_id)
    if state is None:
        return None
    conversion = rules.conversion
    predictor = (
        Predictor(models, conversion.event)
        if models is not None and conversion is not None
        else None
    )
    explained = rules.explain(StateFacts(state, now, None, predictor))
    return {
        "customer_id": state.customer_id,
        "evaluated_at": iso(now),
        "segments": [
            {
                "segment": info.id,
                "member": info.id in state.members,
                "holds_now": explained[info.id].holds,
                "rule": explained[info.id].reason.rule,
                "values": explained[info.id].reason.values,
            }
            for info in rules.segments
        ],
        "features": features(state),
    }
