"""One registration per condition type: how it compiles, what it reads, what it contains.

As in Apache Unomi, a condition is data (a ``type`` and its parameters) and each type has one
descriptor, :class:`ConditionType`. The compiler, the input analysis
(:func:`condition_inputs`) and the loader's question "does this pack predict?"
(:func:`predicts`) all go through :func:`condition_type`; a new type is one entry of
:data:`TYPES` (plus its model in :mod:`streams.engine.model` and, when it compiles to
something new, a method of the compiler). A condition whose type is not registered is an error,
never compiled as something else. :func:`type_name` is an exhaustive ``match`` over the rule
schema's union that mypy checks, and the tests check that :data:`TYPES` covers that union.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar, assert_never

from streams.engine import model as m
from streams.engine.compiled import CompiledCondition

if TYPE_CHECKING:
    from streams.engine.compile import Compiler

ORDER_EVENT = "Order Completed"
PREDICTED = "predicted"
"""Stands for the pack's conversion event until the loader knows it (``with_conversion``)."""
_ORDER_METRICS = frozenset({"orders", "revenue", "average_order_value", "predicted_value"})

C = TypeVar("C")


def _none(_cond: Any) -> Sequence[m.Condition]:
    return ()


@dataclass(frozen=True)
class ConditionType(Generic[C]):
    """Everything the engine knows of one condition type."""

    name: str
    """The ``type`` of the YAML condition."""
    model: type[C]
    compile: Callable[[Compiler, C], CompiledCondition]
    inputs: Callable[[C], frozenset[str]]
    """The tokens the condition itself reads (its children's are added by the walk)."""
    children: Callable[[C], Sequence[m.Condition]] = _none
    predicts: bool = False
    """True when it reads the fitted models' predictions."""


def _trait_inputs(cond: m.TraitCondition) -> frozenset[str]:
    head = cond.path.split(".", 1)[0]
    return frozenset({"consent"} if head == "consent" else {f"trait:{head}"})


def _event_inputs(
    cond: m.EventCountCondition | m.EventSumCondition | m.EventAverageCondition,
) -> frozenset[str]:
    return frozenset({f"event:{cond.event}", "time"})


def _recency_inputs(cond: m.RecencyCondition) -> frozenset[str]:
    return frozenset({f"event:{cond.event}", "time"})


def _lifetime_inputs(cond: m.LifetimeCondition) -> frozenset[str]:
    metric = str(cond.metric)
    if metric in _ORDER_METRICS:
        extra = {"seen", "time"} if metric == "predicted_value" else set()
        return frozenset({f"event:{ORDER_EVENT}", *extra})
    if metric == "events":
        return frozenset({"events"})
    return frozenset({"seen", "time"})


def _of(cond: m.AllCondition | m.AnyCondition) -> Sequence[m.Condition]:
    return cond.of


def _nothing(_cond: Any) -> frozenset[str]:
    return frozenset()


TYPES: tuple[ConditionType[Any], ...] = (
    ConditionType("trait", m.TraitCondition, lambda c, x: c.trait(x), _trait_inputs),
    ConditionType("event_count", m.EventCountCondition, lambda c, x: c.count(x), _event_inputs),
    ConditionType("event_sum", m.EventSumCondition, lambda c, x: c.sum(x), _event_inputs),
    ConditionType("event_average", m.EventAverageCondition, lambda c, x: c.sum(x), _event_inputs),
    ConditionType("recency", m.RecencyCondition, lambda c, x: c.recency(x), _recency_inputs),
    ConditionType("lifetime", m.LifetimeCondition, lambda c, x: c.lifetime(x), _lifetime_inputs),
    ConditionType(
        "predicted",
        m.PredictedCondition,
        lambda c, x: c.predicted(x),
        lambda _x: frozenset({PREDICTED, "time"}),
        predicts=True,
    ),
    ConditionType(
        "in_segment",
        m.InSegmentCondition,
        lambda c, x: c.in_segment(x),
        lambda x: frozenset({f"member:{x.segment}"}),
    ),
    ConditionType(
        "rfm",
        m.RfmCondition,
        lambda c, x: c.rfm(x),
        lambda _x: frozenset({f"event:{ORDER_EVENT}", "time"}),
    ),
    ConditionType("all", m.AllCondition, lambda c, x: c.all_of(x), _nothing, _of),
    ConditionType("any", m.AnyCondition, lambda c, x: c.any_of(x), _nothing, _of),
    ConditionType(
        "not", m.NotCondition, lambda c, x: c.not_of(x), _nothing, lambda x: (x.condition,)
    ),
)
"""Every condition type, once."""

_BY_MODEL: dict[type, ConditionType[Any]] = {t.model: t for t in TYPES}


class UnknownConditionType(TypeError):
    """A condition of a type that has no registration."""


def condition_type(cond: object) -> ConditionType[Any]:
    """The registration of ``cond``'s type (:class:`UnknownConditionType` when it has none)."""
    found = _BY_MODEL.get(type(cond))
    if found is None:
        raise UnknownConditionType(f"no condition type is registered for {type(cond).__name__}")
    return found


def walk(cond: m.Condition) -> Iterator[m.Condition]:
    """``cond`` and every condition inside it, depth first."""
    yield cond
    for child in condition_type(cond).children(cond):
        yield from walk(child)


def condition_inputs(cond: m.Condition) -> frozenset[str]:
    """The tokens a condition tree reads."""
    return frozenset().union(*(condition_type(c).inputs(c) for c in walk(cond)))


def predicts(cond: m.Condition) -> bool:
    """Whether a condition tree reads a prediction."""
    return any(condition_type(c).predicts for c in walk(cond))


def type_name(cond: m.Condition) -> str:
    """The YAML ``type`` of ``cond``: a ``match`` over the whole rule schema that mypy checks
    for exhaustiveness (a new member of the union without a case fails ``make lint``)."""
    match cond:
        case m.TraitCondition():
            return "trait"
        case m.EventCountCondition():
            return "event_count"
        case m.EventSumCondition():
            return "event_sum"
        case m.EventAverageCondition():
            return "event_average"
        case m.RecencyCondition():
            return "recency"
        case m.LifetimeCondition():
            return "lifetime"
        case m.PredictedCondition():
            return "predicted"
        case m.InSegmentCondition():
            return "in_segment"
        case m.RfmCondition():
            return "rfm"
        case m.AllCondition():
            return "all"
        case m.AnyCondition():
            return "any"
        case m.NotCondition():
            return "not"
        case _:
            assert_never(cond)
