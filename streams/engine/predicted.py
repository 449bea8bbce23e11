"""The ``predicted`` condition: a model prediction compared with a threshold.

Predictions fall as time passes without a conversion, so the condition has exact due times:
the first canonical instant after now at which the comparison's result changes. For ``p_alive``
that instant comes from a closed form, for the others from bisection (see
``streams.models.predictor``); the instant is then checked against the comparison itself, so a
threshold met exactly is decided as the operator says.
"""

from __future__ import annotations

from streams.engine import model as m
from streams.engine.compiled import CompiledCondition, EvalContext, Reason
from streams.engine.durations import format_duration
from streams.engine.facts import Facts
from streams.engine.instants import ceil_instant
from streams.engine.ops import numeric_check, numeric_predicate, numeric_text

MS = 0.001


def _subject(cond: m.PredictedCondition) -> str:
    if cond.metric == "expected_orders" and cond.within is not None:
        return f"predicted expected_orders within {format_duration(cond.within)}"
    if cond.metric == "clv":
        return f"predicted clv over {format_duration(cond.horizon or 365 * 86400)}"
    return "predicted p_alive"


def compile_predicted(cond: m.PredictedCondition) -> CompiledCondition:
    """A ``predicted`` condition."""
    metric = cond.metric
    horizon = cond.within if metric == "expected_orders" else cond.horizon
    pred = numeric_predicate(cond.op, cond.value)
    check, bound = numeric_check(cond.op, cond.value)
    subject = _subject(cond)
    text = f"{subject} {numeric_text(cond.op, cond.value)}"
    key = subject.removeprefix("predicted ").replace(" ", "_")
    thresholds = cond.value if isinstance(cond.value, tuple) else (cond.value,)

    def test(ctx: EvalContext) -> bool:
        v = ctx.facts.prediction(metric, horizon)
        return v is not None and check(v, bound)

    def explain(ctx: EvalContext) -> tuple[bool, Reason]:
        v = ctx.facts.prediction(metric, horizon)
        return v is not None and pred(v), Reason(text, {key: v})

    def next_change(facts: Facts) -> float | None:
        now_value = facts.prediction(metric, horizon)
        if now_value is None:
            return None
        holds = check(now_value, bound)
        best: float | None = None
        for threshold in thresholds:
            crossing = facts.prediction_crossing(metric, horizon, threshold)
            if crossing is None:
                continue
            instant = max(ceil_instant(crossing), round(facts.now + MS, 3))
            later = facts.prediction(metric, horizon, instant)
            if later is not None and check(later, bound) == holds:
                instant = round(instant + MS, 3)
            if best is None or instant < best:
                best = instant
        return best

    return CompiledCondition(test, explain, next_change, frozenset(), ())
