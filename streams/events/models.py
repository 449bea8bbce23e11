"""Pydantic models of the Segment-spec input events (plus ``erase`` and ``consent``).

Unknown top-level fields (``context``, ``integrations``, ``sentAt``...) are accepted and ignored,
as Segment sources send many; the fields below are checked strictly.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cached_property, lru_cache
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from streams.engine.instants import in_range, instant_of

Id = Annotated[str, Field(min_length=1, max_length=256)]


class BaseEvent(BaseModel):
    """Fields every event carries."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    type: str
    messageId: Id
    timestamp: AwareDatetime
    userId: Id | None = None
    anonymousId: Id | None = None
    context: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _needs_an_id(self) -> BaseEvent:
        if self.userId is None and self.anonymousId is None:
            raise ValueError("expected 'userId' or 'anonymousId', found neither")
        return self

    @model_validator(mode="after")
    def _time_in_range(self) -> BaseEvent:
        try:
            instant = self.ts
        except (OverflowError, ValueError):
            instant = float("nan")
        if not in_range(instant):
            raise ValueError(
                "timestamp: expected an instant from 1970-01-01T00:00:00Z to before"
                f" 3000-01-01T00:00:00Z once converted to UTC, found {self.timestamp.isoformat()}"
            )
        return self

    @property
    def customer_id(self) -> str:
        """The id the event is about: ``userId`` when known, else ``anonymousId``."""
        return self.userId if self.userId is not None else str(self.anonymousId)

    @cached_property
    def ts(self) -> float:
        """Event time as epoch seconds, truncated to the millisecond (a canonical instant)."""
        return instant_of(self.timestamp)


class TrackEvent(BaseEvent):
    """Something the customer did: ``event`` names it, ``properties`` describe it."""

    type: Literal["track"]
    event: Annotated[str, Field(min_length=1, max_length=200)]
    properties: dict[str, Any] = Field(default_factory=dict)


class IdentifyEvent(BaseEvent):
    """Who the customer is: ``traits`` are merged into the profile (latest wins)."""

    type: Literal["identify"]
    traits: dict[str, Any] = Field(default_factory=dict)


class PageEvent(BaseEvent):
    """A web page view; counted as the event ``Page Viewed``."""

    type: Literal["page"]
    name: str | None = None
    properties: dict[str, Any] = Field(default_factory=dict)


class ScreenEvent(BaseEvent):
    """A mobile screen view; counted as the event ``Screen Viewed``."""

    type: Literal["screen"]
    name: str | None = None
    properties: dict[str, Any] = Field(default_factory=dict)


class AliasEvent(BaseEvent):
    """``previousId`` and ``userId`` are the same person."""

    type: Literal["alias"]
    previousId: Id


class GroupEvent(BaseEvent):
    """The customer belongs to an account; its ``traits`` become the ``company.*`` traits."""

    type: Literal["group"]
    groupId: Id
    traits: dict[str, Any] = Field(default_factory=dict)


class EraseEvent(BaseEvent):
    """Forget the customer: delete the profile and leave every segment."""

    type: Literal["erase"]


class ConsentEvent(BaseEvent):
    """Consent given or withdrawn per category.

    Example: ``{"categoryPreferences": {"marketing": false}}``.
    """

    type: Literal["consent"]
    categoryPreferences: dict[str, bool]


Event = Annotated[
    TrackEvent
    | IdentifyEvent
    | PageEvent
    | ScreenEvent
    | AliasEvent
    | GroupEvent
    | EraseEvent
    | ConsentEvent,
    Field(discriminator="type"),
]

EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)

EVENT_TYPES = ("track", "identify", "page", "screen", "alias", "group", "erase", "consent")


def event_name(event: BaseEvent) -> str | None:
    """The name under which an event is counted: the track ``event``, ``Page Viewed``..."""
    if isinstance(event, TrackEvent):
        return event.event
    if isinstance(event, PageEvent):
        return "Page Viewed"
    if isinstance(event, ScreenEvent):
        return "Screen Viewed"
    return None


def event_properties(event: BaseEvent) -> dict[str, Any]:
    """The properties of a counted event (empty for the others)."""
    if isinstance(event, TrackEvent | PageEvent | ScreenEvent):
        return event.properties
    return {}


@lru_cache(maxsize=4096)
def iso(ts: float) -> str:
    """Format epoch seconds as an RFC 3339 UTC timestamp with milliseconds.

    Cached: a migration formats its time twice (``ce_time``, the flow matrix's day), and the
    migrations of one event share it.
    """
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
