"""``PipelineContext``: everything a batch needs (rules, store, clock, time mode), passed
explicitly."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from streams.engine import RuleSet
from streams.engine.facts import SeriesSpec
from streams.engine.rfm import RfmBoundaries
from streams.models.predictor import Predictor
from streams.models.published import FittedModels
from streams.pipeline.metrics import Metrics
from streams.pipeline.routing import partition_for
from streams.pipeline.state_cache import StateCache
from streams.pipeline.timekeeping import (
    Clock,
    QuietPartitions,
    TimeMode,
    WallClock,
    time_mode,
)
from streams.settings import Settings
from streams.state.customer import CustomerState
from streams.state.facts import StateFacts
from streams.store.base import Store


@dataclass(frozen=True)
class PipelineContext:
    """Everything a batch needs, passed explicitly."""

    settings: Settings
    rules: RuleSet
    store: Store
    input_partitions: int
    specs_by_event: dict[str, list[SeriesSpec]]
    metrics: Metrics
    rfm: RfmBoundaries | None = None
    """Live RFM boundaries (only when the rule pack asks for live ones)."""
    clock: Clock = field(default_factory=WallClock)
    """The wall clock (processing time, and the lateness of timers)."""
    mode: TimeMode = field(default_factory=lambda: time_mode("processing", 0.0))
    """Event or processing time (``SEGMENTER_CLOCK``)."""
    quiet: QuietPartitions = field(default_factory=QuietPartitions)
    """Event time: when each partition's clock last moved (to settle quiet partitions)."""
    version: str = ""
    """What memberships are evaluated under: the rule version, plus live RFM boundaries."""
    predictor: Predictor | None = None
    """The published customer-base models, for rules with ``predicted`` conditions."""
    state_cache: StateCache | None = None
    """The worker's decoded states between batches (None: every batch reads the store)."""

    @classmethod
    def create(
        cls,
        settings: Settings,
        rules: RuleSet,
        store: Store,
        input_partitions: int,
        metrics: Metrics | None = None,
        rfm: RfmBoundaries | None = None,
        clock: Clock | None = None,
        quiet: QuietPartitions | None = None,
        models: FittedModels | None = None,
        state_cache: StateCache | None = None,
    ) -> PipelineContext:
        """Index the rule set's series for the hot path."""
        by_event: dict[str, list[SeriesSpec]] = {}
        for spec in rules.series:
            by_event.setdefault(spec.event, []).append(spec)
        live = rfm if rules.rfm is not None and rules.rfm.live else None
        conversion = rules.conversion
        predictor = (
            Predictor(models, conversion.event)
            if models is not None and conversion is not None and rules.predictive
            else None
        )
        version = rules.version if live is None else f"{rules.version}+{live.digest()}"
        if predictor is not None:
            version = f"{version}+m{predictor.version}"
        return cls(
            settings=settings,
            rules=rules,
            store=store,
            input_partitions=input_partitions,
            specs_by_event=by_event,
            metrics=metrics or Metrics(),
            rfm=live,
            clock=clock or WallClock(),
            mode=time_mode(settings.clock, settings.allowed_lateness_s),
            quiet=quiet or QuietPartitions(),
            version=version,
            predictor=predictor,
            state_cache=state_cache,
        )

    def with_rules(
        self,
        rules: RuleSet,
        rfm: RfmBoundaries | None,
        models: FittedModels | None = None,
    ) -> PipelineContext:
        """The same pipeline (store, metrics, clock) with other rules, RFM boundaries or models
        (``models`` None keeps the current ones)."""
        return PipelineContext.create(
            self.settings,
            rules,
            self.store,
            self.input_partitions,
            self.metrics,
            rfm,
            self.clock,
            self.quiet,
            models if models is not None else self.models,
            self.state_cache,
        )

    @property
    def models(self) -> FittedModels | None:
        """The models the pipeline predicts with (None without predictive rules)."""
        return self.predictor.models if self.predictor is not None else None

    def facts(self, state: CustomerState, now: float) -> StateFacts:
        """The rule engine's view of ``state`` at ``now``."""
        return StateFacts(state, now, self.rfm, self.predictor)

    def home_partition(self, customer_id: str) -> int:
        """The input partition that owns a customer (its events, timers and state changes)."""
        if self.input_partitions <= 1:
            return 0
        return partition_for(customer_id.encode(), self.input_partitions)

    def redact(self, values: dict[str, Any]) -> dict[str, Any]:
        """Reason values with personal traits (``SEGMENTER_PERSONAL_TRAITS``) masked.

        A value under a personal path is replaced; a value holding one (a rule on ``address``
        when ``address.street`` is personal) is copied with the personal parts replaced.
        """
        personal = tuple(self.settings.personal_traits)
        if not personal:
            return dict(values)
        return {key: _mask(key, value, personal) for key, value in values.items()}


REDACTED = "[redacted]"
_PLAIN, _PERSONAL, _HOLDS_PERSONAL = 0, 1, 2


@lru_cache(maxsize=4096)
def _path_kind(path: str, personal: tuple[str, ...]) -> int:
    """Whether ``path`` is personal (under a personal trait), holds one, or neither (a rule
    pack's reasons name a few paths, asked about for every migration)."""
    if any(path == p or path.startswith(p + ".") for p in personal):
        return _PERSONAL
    if any(p.startswith(path + ".") for p in personal):
        return _HOLDS_PERSONAL
    return _PLAIN


def _mask(path: str, value: Any, personal: tuple[str, ...]) -> Any:
    """``value`` found at ``path`` with every personal trait inside it replaced."""
    kind = _path_kind(path, personal)
    if kind == _PERSONAL:
        return REDACTED
    if kind == _HOLDS_PERSONAL and isinstance(value, dict):
        return {k: _mask(f"{path}.{k}", v, personal) for k, v in value.items()}
    return value
