"""Following what every worker of a namespace must agree on: the rules, the live RFM
boundaries and the fitted models.

Every ``RULES_CHECK_S`` (on the worker's :class:`~streams.pipeline.timekeeping.Clock`) the
:class:`Follower` publishes the rule directory when its files changed, adopts a newly
published pack, recomputes the live RFM boundaries when they are due (the worker holding
partition 0 does) and adopts new ones, and adopts a newly published model fit. Each change goes
through ``swap``, which switches the context and backfills. An infrastructure error skips a duty
until the next check.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from streams.engine import RuleLoadError, RuleSet, parse_rules
from streams.engine.rfm import RfmBoundaries
from streams.models.published import FittedModels, ModelReader
from streams.pipeline import rulepack
from streams.pipeline.batches import Live
from streams.pipeline.retry import RETRIABLE
from streams.pipeline.rfm_live import (
    compute_boundaries,
    computed_at,
    live_boundaries,
    publish_boundaries,
)
from streams.pipeline.timekeeping import Clock
from streams.settings import Settings

log = logging.getLogger("segmenter.worker")

RULES_CHECK_S = 2.0

Swap = Callable[[RuleSet, RfmBoundaries | None, bool, FittedModels | None], Awaitable[None]]
"""``swap(rules, rfm, emit, models)``: evaluate under these from now on and backfill (``emit``:
with ``rule_change`` migrations; ``models`` None keeps the current ones)."""


@dataclass
class Follower:
    """The rules, RFM and models follower of one worker."""

    settings: Settings
    live: Live
    swap: Swap
    clock: Clock
    dir_signature: tuple[tuple[str, int, int], ...] = ()
    """The rule directory as last seen (published or found invalid)."""
    models: ModelReader = field(default_factory=ModelReader)
    last_check: float | None = None

    async def follow(self) -> None:
        """Follow the rules, RFM boundaries and models, when a check is due."""
        now = self.clock.now()
        if self.last_check is not None and now - self.last_check < RULES_CHECK_S:
            return
        self.last_check = now
        await _duty("following rule changes", self.follow_rules())
        await _duty("following RFM boundaries", self.follow_rfm())
        await _duty("following the fitted models", self.follow_models())

    async def follow_rules(self) -> None:
        """Publish a changed rule directory; adopt a newly published pack."""
        ctx = self.live.ctx
        store = ctx.store
        signature = rulepack.directory_signature(self.settings.rules)
        if signature != self.dir_signature:
            self.dir_signature = signature
            await self._publish_directory()
        if await rulepack.published_version(store) != ctx.rules.version:
            pack = await rulepack.published(store)
            if pack is not None:
                await self.swap(pack.rules, self.live.ctx.rfm, pack.emit, None)

    async def _publish_directory(self) -> None:
        """Publish the rule directory unless it is invalid or what is published already."""
        directory = self.settings.rules
        try:
            files = rulepack.read_directory(directory)
            rules = parse_rules(files)
        except (RuleLoadError, OSError) as exc:
            problems = getattr(exc, "problems", [exc])
            log.error(
                "rule files changed but are invalid; keeping %s: %s",
                self.live.ctx.rules.version,
                "; ".join(str(p) for p in problems),
            )
            return
        store = self.live.ctx.store
        if rules.version != await rulepack.published_version(store):
            await rulepack.publish(store, files, emit=True, now=self.clock.now())
            log.info("rule directory changed: published %s", rules.version)

    async def follow_rfm(self) -> None:
        """Recompute live boundaries when due (holder of partition 0), adopt new ones."""
        ctx = self.live.ctx
        config = ctx.rules.rfm
        if config is None or not config.live:
            return
        store = ctx.store
        if 0 in self.live.assigned:
            last = await computed_at(store)
            now = self.clock.now()
            if last is None or now - last >= self.settings.rfm_refresh_s:
                boundaries = await compute_boundaries(store, now)
                if boundaries is not None:
                    await publish_boundaries(store, boundaries, now)
                    log.info("RFM boundaries recomputed: %s", boundaries.to_dict())
        boundaries = await live_boundaries(store)
        current = self.live.ctx.rfm
        if boundaries is not None and (current is None or current.digest() != boundaries.digest()):
            await self.swap(self.live.ctx.rules, boundaries, True, None)

    async def follow_models(self) -> None:
        """Adopt a newly published model fit when the rules predict (then backfill)."""
        ctx = self.live.ctx
        if not ctx.rules.predictive:
            return
        models = await self.models.current(ctx.store)
        current = ctx.models
        if models is not None and (current is None or current.version != models.version):
            await self.swap(ctx.rules, ctx.rfm, True, models)


async def _duty(what: str, work: Awaitable[None]) -> None:
    """Run a periodic duty; an infrastructure error skips it until the next check."""
    try:
        await work
    except RETRIABLE as exc:
        log.warning("%s failed, will retry: %r", what, exc)


__all__ = ["RULES_CHECK_S", "Follower", "Swap"]
