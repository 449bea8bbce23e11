"""Pydantic models of rule files: one segment a file, or one family of segments a file.

The condition tree is a discriminated union on ``type``. Every model forbids unknown fields, so
a typo is an error rather than a silently ignored key. The loader turns validation errors into
``RuleProblem`` lines with the file and line of the offending key.
"""

from __future__ import annotations

from collections.abc import Callable
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
from streams.engine.facts import MISSING

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
]
"""Lifetime metrics a ``lifetime`` condition may test."""

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


def _is_scalar(value: object) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_trait_value(op: str, value: object) -> None:
    """Check that ``value`` has the shape ``op`` expects; raise ``ValueError`` if not."""
    if op == "exists":
        raise ValueError("'exists' takes no 'value'; remove it")
    if op == "between":
        if (
            not isinstance(value, list)
            or len(value) != 2
            or not all(_is_scalar(v) and v is not None for v in value)
        ):
            raise ValueError("'between' expects a list of two values [low, high]")
        return
    if op in ("in", "not_in"):
        if not isinstance(value, list) or not value or not all(_is_scalar(v) for v in value):
            raise ValueError(f"'{op}' expects a non-empty list of values")
        return
    if op in ("lt", "le", "gt", "ge"):
        if not (_is_number(value) or isinstance(value, str)):
            raise ValueError(f"'{op}' expects a number or a string")
        return
    if not _is_scalar(value):
        raise ValueError(f"'{op}' expects a single value (string, number, boolean or null)")


def check_numeric_value(op: str, value: object) -> None:
    """Check a numeric comparison's value: a number, or ``[low, high]`` for ``between``."""
    if op == "between":
        if not isinstance(value, list) or len(value) != 2 or not all(map(_is_number, value)):
            raise ValueError("'between' expects a list of two numbers [low, high]")
        if value[0] > value[1]:
            raise ValueError("'between' expects [low, high] with low <= high")
        return
    if not _is_number(value):
        raise ValueError(f"'{op}' expects a number")


_SYMBOLS = {"eq": "=", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}


def format_value(value: object) -> str:
    """A value as reason text: ``1000.0`` -> ``1000``, ``["CA", "US"]`` -> ``[CA, US]``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return str(value)


def trait_text(path: str, op: str, value: object) -> str:
    """The clause ``path op value`` as reason text (``address.country in [CA, US]``)."""
    if op == "exists":
        return f"{path} exists"
    if op == "between" and isinstance(value, list | tuple):
        return f"{path} between {format_value(value[0])} and {format_value(value[1])}"
    if op in _SYMBOLS:
        return f"{path} {_SYMBOLS[op]} {format_value(value)}"
    return f"{path} {op.replace('_', ' ')} {format_value(value)}"


def numeric_text(op: str, value: float | tuple[float, float]) -> str:
    """The comparison part of a numeric clause (``>= 1``, ``between 1 and 99``)."""
    if isinstance(value, tuple):
        return f"between {format_value(value[0])} and {format_value(value[1])}"
    return f"{_SYMBOLS[op]} {format_value(value)}"


def values_equal(a: object, b: object) -> bool:
    """Equality that never mixes types: ``1 == 1.0`` but ``1 != True`` and ``1 != "1"``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _is_number(a) and _is_number(b):
        return a == b
    return type(a) is type(b) and a == b


def compare(a: object, b: object) -> int | None:
    """-1, 0 or 1 for two numbers or two strings; ``None`` when they are not comparable."""
    if _is_number(a) and _is_number(b):
        x, y = float(a), float(b)  # type: ignore[arg-type]
    elif isinstance(a, str) and isinstance(b, str):
        return (a > b) - (a < b)
    else:
        return None
    if x != x or y != y:
        return None
    return (x > y) - (x < y)


def trait_predicate(op: str, value: Any) -> Callable[[Any], bool]:
    """A predicate applying ``op value`` to a trait or property (``MISSING`` when absent).

    A missing value makes every op false except ``ne`` and ``not_in`` (true); values of
    incompatible types never compare (false, never an exception).
    """
    if op == "exists":
        return lambda a: a is not MISSING and a is not None
    if op == "eq":
        return lambda a: values_equal(a, value)
    if op == "ne":
        return lambda a: a is MISSING or not values_equal(a, value)
    if op in ("in", "not_in"):
        options = tuple(value)
        if op == "in":
            return lambda a: any(values_equal(a, o) for o in options)
        return lambda a: a is MISSING or not any(values_equal(a, o) for o in options)
    if op == "contains":
        return lambda a: _contains(a, value)
    if op == "between":
        low, high = value

        def between(a: Any) -> bool:
            lo, hi = compare(a, low), compare(a, high)
            return lo is not None and hi is not None and lo >= 0 and hi <= 0

        return between
    wanted = _ORDER[op]
    return lambda a: compare(a, value) in wanted


_ORDER: dict[str, frozenset[int | None]] = {
    "lt": frozenset({-1}),
    "le": frozenset({-1, 0}),
    "gt": frozenset({1}),
    "ge": frozenset({0, 1}),
}


def _contains(actual: object, item: object) -> bool:
    if isinstance(actual, str):
        return isinstance(item, str) and item in actual
    if isinstance(actual, list | tuple):
        return any(values_equal(x, item) for x in actual)
    return False


def numeric_predicate(op: str, value: float | tuple[float, float]) -> Callable[[float], bool]:
    """A predicate applying ``op value`` to a number (a count, sum, average or metric)."""
    if isinstance(value, tuple):
        low, high = value
        return lambda x: low <= x <= high
    v = float(value)
    tests: dict[str, Callable[[float], bool]] = {
        "eq": lambda x: x == v,
        "ne": lambda x: x != v,
        "lt": lambda x: x < v,
        "le": lambda x: x <= v,
        "gt": lambda x: x > v,
        "ge": lambda x: x >= v,
    }
    return tests[op]


class _Strict(BaseModel):
    """Base of every rule model: unknown fields are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


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
    if _is_scalar(value):
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


Condition = Annotated[
    TraitCondition
    | EventCountCondition
    | EventSumCondition
    | EventAverageCondition
    | RecencyCondition
    | LifetimeCondition
    | InSegmentCondition
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
    "all": AllCondition,
    "any": AnyCondition,
    "not": NotCondition,
}
"""Condition model by its ``type``."""

WindowCondition = EventCountCondition | EventSumCondition | EventAverageCondition


class SegmentFile(_Strict):
    """A file defining one segment."""

    model_config = ConfigDict(title="Segment file")

    id: SegmentId
    name: Annotated[str, Field(min_length=1)]
    description: str = ""
    kind: Kind
    priority: int = 0
    family: SegmentId | None = None
    condition: Condition


class FamilyMember(_Strict):
    """A segment of a family file: ``kind`` and ``family`` default to the family's."""

    id: SegmentId
    name: Annotated[str, Field(min_length=1)]
    description: str = ""
    kind: Kind | None = None
    priority: int = 0
    family: SegmentId | None = None
    condition: Condition


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


for _model in (AllCondition, AnyCondition, NotCondition, SegmentFile, FamilyMember, FamilyFile):
    _model.model_rebuild()
