"""Pydantic models of rule files: one segment a file, or one family of segments a file.

The condition tree is a discriminated union on ``type``. Every model forbids unknown fields, so
a typo is an error rather than a silently ignored key. The loader turns validation errors into
``RuleProblem`` lines with the file and line of the offending key.
"""

from __future__ import annotations

import itertools
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from streams.engine.durations import DURATION_PATTERN, parse_duration
from streams.engine.ops import (
    check_numeric_value,
    check_trait_value,
    compare,
    format_value,
    is_scalar,
    numeric_predicate,
    numeric_text,
    trait_predicate,
    trait_text,
    values_equal,
)

__all__ = [
    "CONDITION_MODELS",
    "AllCondition",
    "AnyCondition",
    "Condition",
    "FamilyFile",
    "FamilyMember",
    "InSegmentCondition",
    "Kind",
    "LifetimeCondition",
    "NotCondition",
    "RfmCondition",
    "RfmFile",
    "RfmSection",
    "SegmentFile",
    "check_numeric_value",
    "check_trait_value",
    "compare",
    "format_value",
    "numeric_predicate",
    "numeric_text",
    "trait_predicate",
    "trait_text",
    "values_equal",
]

SEGMENT_ID_PATTERN = r"^[a-z][a-z0-9_]*$"
"""Segment and family ids: lower case letters, digits and underscores, starting with a letter."""

Kind = Literal[
    "demographic",
    "firmographic",
    "behavioral",
    "value",
    "psychographic",
    "needs",
    "lifecycle",
    "rfm",
]
"""The marketing family of segmentation a segment belongs to."""

TraitOp = Literal[
    "eq", "ne", "lt", "le", "gt", "ge", "in", "not_in", "contains", "exists", "between"
]
"""Operators on a trait or an event property."""

NumericOp = Literal["eq", "ne", "lt", "le", "gt", "ge", "between"]
"""Operators on a number (window counts, sums, averages, lifetime metrics)."""

LifetimeMetric = Literal[
    "orders",
    "revenue",
    "average_order_value",
    "events",
    "days_since_first_seen",
    "days_since_last_seen",
    "predicted_value",
]
"""Lifetime metrics a ``lifetime`` condition may test (``predicted_value``: see value.py)."""

Scalar = str | int | float | bool | None
"""A JSON scalar."""

SegmentId = Annotated[str, Field(pattern=SEGMENT_ID_PATTERN, min_length=1, max_length=100)]
EventName = Annotated[str, Field(min_length=1, max_length=200)]


def _to_seconds(value: object) -> float:
    """Pydantic hook: a duration in seconds (``ValueError`` with a clear message otherwise)."""
    return parse_duration(value)


Duration = Annotated[
    float,
    BeforeValidator(_to_seconds),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": DURATION_PATTERN},
                {"type": "number", "exclusiveMinimum": 0},
            ],
            "description": "A duration: '30s', '15m', '1h', '7d', '2w', or a number of seconds.",
        }
    ),
]
"""A positive duration, stored as seconds."""


class _Strict(BaseModel):
    """Base of every rule model: unknown fields are errors, instances are immutable, numbers are
    finite (``.nan`` and ``.inf`` are refused)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class PropertyFilter(_Strict):
    """A test on one event property: ``{op: ge, value: 10}``."""

    op: TraitOp
    value: Any = None

    @model_validator(mode="after")
    def _value_fits_op(self) -> PropertyFilter:
        if self.op == "exists":
            if "value" in self.model_fields_set:
                raise ValueError("'exists' takes no 'value'; remove it")
        elif "value" not in self.model_fields_set:
            raise ValueError(f"'{self.op}' needs a 'value'")
        else:
            check_trait_value(self.op, self.value)
        return self


def _scalar_to_filter(value: object) -> object:
    """``category: shoes`` is shorthand for ``category: {op: eq, value: shoes}``."""
    if isinstance(value, dict):
        return value
    if is_scalar(value):
        return {"op": "eq", "value": value}
    raise ValueError("expected a value (equality) or a mapping {op: ..., value: ...}")


WhereValue = Annotated[
    PropertyFilter,
    BeforeValidator(_scalar_to_filter, json_schema_input_type=Scalar | PropertyFilter),
]
Where = dict[Annotated[str, Field(min_length=1)], WhereValue]


class _Condition(_Strict):
    """Fields every condition has."""

    label: str | None = Field(
        default=None, description="Replaces the generated reason text (values are kept)."
    )


class TraitCondition(_Condition):
    """A test on a profile trait by dotted path."""

    type: Literal["trait"]
    path: Annotated[str, Field(pattern=r"^[^.\s]+(\.[^.\s]+)*$")]
    op: TraitOp
    value: Any = None

    @field_validator("value", mode="after")
    @classmethod
    def _value_shape(cls, value: Any, info: ValidationInfo) -> Any:
        op = info.data.get("op")
        if op is not None:
            check_trait_value(op, value)
        return value

    @model_validator(mode="after")
    def _value_present(self) -> TraitCondition:
        if self.op != "exists" and "value" not in self.model_fields_set:
            raise ValueError(f"'{self.op}' needs a 'value'")
        return self


class _NumericTest(_Condition):
    """A comparison of a number with ``value`` (a number, or ``[low, high]`` for between)."""

    op: NumericOp
    value: float | tuple[float, float]

    @field_validator("value", mode="before")
    @classmethod
    def _value_shape(cls, value: Any, info: ValidationInfo) -> Any:
        op = info.data.get("op")
        if op is not None:
            check_numeric_value(op, value)
        return value


class _WindowCondition(_NumericTest):
    """Fields of the window conditions."""

    event: EventName
    within: Duration
    where: Where | None = None


class EventCountCondition(_WindowCondition):
    """How many times the event happened within the window."""

    type: Literal["event_count"]


class EventSumCondition(_WindowCondition):
    """The sum of a numeric property over the window's events."""

    type: Literal["event_sum"]
    property: Annotated[str, Field(min_length=1)]


class EventAverageCondition(_WindowCondition):
    """The average of a numeric property over the window's events (false with no events)."""

    type: Literal["event_average"]
    property: Annotated[str, Field(min_length=1)]


class RecencyCondition(_Condition):
    """When the event last happened: ``within`` D of now, or ``not_within`` D (or never)."""

    type: Literal["recency"]
    event: EventName
    within: Duration | None = None
    not_within: Duration | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> RecencyCondition:
        if (self.within is None) == (self.not_within is None):
            raise ValueError("expected exactly one of 'within' or 'not_within'")
        return self


class LifetimeCondition(_NumericTest):
    """A lifetime metric (orders, revenue, days since first/last seen...)."""

    type: Literal["lifetime"]
    metric: LifetimeMetric


PredictedMetric = Literal["p_alive", "expected_orders", "clv"]


class PredictedCondition(_NumericTest):
    """A prediction of the fitted customer-base models (``segmenter model fit``).

    ``p_alive``: the probability that the customer is still active (BG/NBD);
    ``expected_orders``: conversions expected ``within`` the coming window;
    ``clv``: the value expected over ``horizon`` (default 365d), discounted at 10% a year.
    Without a published model, or before the first conversion, the condition does not hold.
    """

    type: Literal["predicted"]
    metric: PredictedMetric
    within: Duration | None = Field(None, description="expected_orders: the coming window")
    horizon: Duration | None = Field(None, description="clv: the horizon (default 365d)")

    @model_validator(mode="after")
    def _windows(self) -> PredictedCondition:
        if self.metric == "expected_orders" and self.within is None:
            raise ValueError("expected_orders needs 'within' (the coming window, e.g. 90d)")
        if self.metric != "expected_orders" and self.within is not None:
            raise ValueError(f"'within' is for expected_orders, not {self.metric}")
        if self.metric != "clv" and self.horizon is not None:
            raise ValueError(f"'horizon' is for clv, not {self.metric}")
        return self


class InSegmentCondition(_Condition):
    """Holds when the customer is a member of another segment (after family resolution)."""

    type: Literal["in_segment"]
    segment: SegmentId


class AllCondition(_Condition):
    """Holds when every condition in ``of`` holds."""

    type: Literal["all"]
    of: Annotated[list[Condition], Field(min_length=1)]


class AnyCondition(_Condition):
    """Holds when at least one condition in ``of`` holds."""

    type: Literal["any"]
    of: Annotated[list[Condition], Field(min_length=1)]


class NotCondition(_Condition):
    """Holds when ``condition`` does not."""

    type: Literal["not"]
    condition: Condition


def _score_range(value: object) -> object:
    """``[low, high]`` of RFM scores: integers 1 to 5 with low <= high."""
    if (
        not isinstance(value, list | tuple)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        raise ValueError("expected [low, high]: two whole scores from 1 to 5")
    low, high = value
    if not 1 <= low <= high <= 5:
        raise ValueError("expected [low, high] with 1 <= low <= high <= 5")
    return (low, high)


ScoreRange = Annotated[
    tuple[int, int],
    BeforeValidator(_score_range),
    WithJsonSchema(
        {
            "type": "array",
            "items": {"type": "integer", "minimum": 1, "maximum": 5},
            "minItems": 2,
            "maxItems": 2,
            "description": "An inclusive range of scores [low, high], 1 <= low <= high <= 5.",
        }
    ),
]
"""An inclusive range of RFM scores."""


class RfmCondition(_Condition):
    """The customer's RFM scores (1..5 each) fall in the given inclusive ranges.

    False for a customer with no order. Boundaries come from the pack's ``rfm`` file.
    """

    type: Literal["rfm"]
    r: ScoreRange | None = None
    f: ScoreRange | None = None
    m: ScoreRange | None = None

    @model_validator(mode="after")
    def _some_score(self) -> RfmCondition:
        if self.r is None and self.f is None and self.m is None:
            raise ValueError("expected at least one of 'r', 'f' or 'm'")
        return self


Condition = Annotated[
    TraitCondition
    | EventCountCondition
    | EventSumCondition
    | EventAverageCondition
    | RecencyCondition
    | LifetimeCondition
    | PredictedCondition
    | InSegmentCondition
    | RfmCondition
    | AllCondition
    | AnyCondition
    | NotCondition,
    Field(discriminator="type"),
]

CONDITION_MODELS: dict[str, type[BaseModel]] = {
    "trait": TraitCondition,
    "event_count": EventCountCondition,
    "event_sum": EventSumCondition,
    "event_average": EventAverageCondition,
    "recency": RecencyCondition,
    "lifetime": LifetimeCondition,
    "in_segment": InSegmentCondition,
    "predicted": PredictedCondition,
    "rfm": RfmCondition,
    "all": AllCondition,
    "any": AnyCondition,
    "not": NotCondition,
}
"""Condition model by its ``type``."""

WindowCondition = EventCountCondition | EventSumCondition | EventAverageCondition

ConsentCategory = Annotated[str, Field(pattern=SEGMENT_ID_PATTERN, min_length=1, max_length=100)]


class _SegmentFields(_Strict):
    """Fields every segment has, in a segment file or inside a family file."""

    id: SegmentId
    name: Annotated[str, Field(min_length=1)]
    description: str = ""
    priority: int = 0
    family: SegmentId | None = None
    condition: Condition
    stay_condition: Condition | None = Field(
        default=None,
        description="For a customer already in the segment: membership holds while this holds"
        " (instead of 'condition'). Hysteresis: enter at >= 1000, stay while >= 900.",
    )
    min_dwell: Duration | None = Field(
        default=None,
        description="Once entered, the customer stays at least this long, whatever the condition.",
    )
    requires_consent: ConsentCategory | None = Field(
        default=None,
        description="The segment holds only when consent.<category> is true (e.g. marketing).",
    )
    holdout_percent: Annotated[float, Field(ge=0, le=50)] = Field(
        default=0.0,
        description="Share of members (0 to 50 percent) put in a stable control group.",
    )


class SegmentFile(_SegmentFields):
    """A file defining one segment."""

    model_config = ConfigDict(title="Segment file")

    kind: Kind


class FamilyMember(_SegmentFields):
    """A segment of a family file: ``kind`` and ``family`` default to the family's."""

    kind: Kind | None = None


class FamilyFile(_Strict):
    """A file defining a family of mutually exclusive segments."""

    model_config = ConfigDict(title="Family file")

    family: SegmentId
    name: Annotated[str, Field(min_length=1)]
    description: str = ""
    kind: Kind
    segments: Annotated[list[FamilyMember], Field(min_length=1)]

    @field_validator("segments", mode="after")
    @classmethod
    def _members_belong(cls, segments: list[FamilyMember], info: ValidationInfo) -> Any:
        family = info.data.get("family")
        for member in segments:
            if member.family is not None and family is not None and member.family != family:
                raise ValueError(
                    f"segment '{member.id}' sets family '{member.family}' inside family"
                    f" '{family}'; remove its 'family' field"
                )
        return segments


def _cut_points(value: object) -> object:
    """Four non-negative numbers in ascending order (equal neighbours allowed)."""
    if (
        not isinstance(value, list | tuple)
        or len(value) != 4
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    ):
        raise ValueError("expected a list of 4 numbers (the cut points between scores)")
    cuts = tuple(float(v) for v in value)
    if any(c < 0 or c != c for c in cuts):
        raise ValueError("expected cut points >= 0")
    if any(a > b for a, b in itertools.pairwise(cuts)):
        raise ValueError("expected cut points in ascending order")
    return cuts


CutPoints = Annotated[
    tuple[float, float, float, float],
    BeforeValidator(_cut_points),
    WithJsonSchema(
        {
            "type": "array",
            "items": {"type": "number", "minimum": 0},
            "minItems": 4,
            "maxItems": 4,
            "description": "Four ascending cut points between the scores 1|2|3|4|5.",
        }
    ),
]


class RfmSection(_Strict):
    """How RFM scores are computed: fixed cut points, or live quintiles of the population."""

    boundaries: Literal["live", "fixed"] = Field(
        default="fixed",
        description="'fixed': the cut points below; 'live': quintiles of the customer"
        " population, with the cut points below until live ones exist.",
    )
    recency_days: CutPoints
    frequency: CutPoints
    monetary: CutPoints


class PerformanceSection(_Strict):
    """What counts as a conversion when segments' performance is measured (segmenter report)."""

    conversion_event: str = Field(
        default="Order Completed", min_length=1, description="the track event that converts"
    )
    value_property: str = Field(
        default="revenue", min_length=1, description="its property that holds the value"
    )
    window_days: Annotated[float, Field(gt=0, le=400)] = Field(
        default=90, description="the longest performance window; the states keep that much"
    )


class PerformanceFile(_Strict):
    """A file configuring segment performance (at most one per pack; defaults without it)."""

    model_config = ConfigDict(title="Performance file")

    performance: PerformanceSection


class RfmFile(_Strict):
    """A file configuring RFM scoring (at most one per pack)."""

    model_config = ConfigDict(title="RFM file")

    rfm: RfmSection


for _model in (
    AllCondition,
    AnyCondition,
    NotCondition,
    _SegmentFields,
    SegmentFile,
    FamilyMember,
    FamilyFile,
):
    _model.model_rebuild()
