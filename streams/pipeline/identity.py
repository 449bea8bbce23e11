"""Identity operations on a batch's working set: merging profiles and erasing customers.

* Merge (``alias``, or ``identify`` carrying both ids): the merged-away profile exits its
  segments (``trigger.kind = merge``), is folded into the survivor, and its key becomes a
  redirect, so later events for the old id land on the survivor. Chains resolve through the
  redirects; a merge that would invert an existing one (a cycle) or exceed
  ``SEGMENTER_MAX_IDENTITIES`` is refused to the DLQ with the reason.
* Erase: the profile and every alias key are deleted, every segment is exited
  (``trigger.kind = erasure``, no personal data), and each id's digest is recorded with the
  erasure time so that replayed older events do not re-create the profile.

Concurrency: a merge writes the other profile's key with a version check, so a worker applying
events to that profile at the same time (on another partition) fails its commit, reloads, sees
the redirect and re-routes its event. In the partitioned Redis layout the two profiles can live
in different slots: the merge then first *claims* the other profile (its key becomes a redirect
that keeps its data, marked ``handing_over``), and writes the bare redirect only after the
survivor's commit (see :mod:`streams.store.redis_store`). A claim found without its merge (a
crash between the steps) is merged again when the event is redelivered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from streams.events.models import BaseEvent, event_name
from streams.pipeline.context import PipelineContext
from streams.pipeline.migrations import Trigger
from streams.state.customer import CustomerState
from streams.state.merge import merge_profiles
from streams.store.base import Claim, CommitBatch

MAX_HOPS = 64


@dataclass(frozen=True, slots=True)
class Refused:
    """An event the pipeline will not apply: it goes to the DLQ with this reason."""

    kind: str
    message: str


class Profiles(Protocol):
    """What identity operations need of a batch (the working set provides it)."""

    ctx: PipelineContext
    states: dict[str, CustomerState | None]
    commit: CommitBatch
    versions: dict[str, int]
    suppressed: dict[str, float]
    unconditional: set[str]

    def touch(self, customer_id: str, partition: int) -> None:
        """Mark a customer changed."""
        ...

    def close(self, partition: int, state: CustomerState) -> None:
        """Publish the customer's open instant now."""
        ...

    def catch_up(self, partition: int, state: CustomerState, now: float) -> None:
        """Fire the customer's timers due before ``now`` (and close an earlier instant)."""
        ...

    def settle(
        self, partition: int, state: CustomerState, now: float, trigger: Trigger, when: float
    ) -> None:
        """Evaluate a customer at ``now`` and publish its changes."""
        ...

    def exit_all(
        self,
        partition: int,
        state: CustomerState,
        trigger: Trigger,
        when: float,
        now: float,
        reason: str,
    ) -> None:
        """Take the customer out of every segment now and publish it."""
        ...


def resolve(work: Profiles, customer_id: str) -> str:
    """Follow redirects from ``customer_id`` to the surviving profile's id."""
    current = customer_id
    for _ in range(MAX_HOPS):
        state = work.states.get(current)
        if state is None or state.merged_into is None:
            return current
        current = state.merged_into
    return current


def merge(
    work: Profiles,
    partition: int,
    named: str,
    root: str,
    other: str,
    event: BaseEvent,
    now: float,
) -> Refused | None:
    """Merge ``other`` (and its profile) into ``root``, the surviving profile."""
    ctx = work.ctx
    handed = _handing_over(work, root, other)
    other_root = other if handed else resolve(work, other)
    if other_root == root:
        if named != root and other == root:
            return Refused("identity", f"alias cycle: {named!r} is already merged into {other!r}")
        return None
    survivor = work.states.get(root) or CustomerState(customer_id=root)
    old = work.states.get(other_root)
    count = 1 + len(survivor.aliases) + 1 + (len(old.aliases) if old else 0)
    limit = ctx.settings.max_identities
    if count > limit:
        return Refused(
            "identity",
            f"merging {other!r} into {root!r} would give {count} identifiers; the limit is {limit}",
        )
    trigger = Trigger("merge", event.messageId, event_name(event) or event.type)
    work.close(partition, survivor)
    work.touch(root, partition)
    work.touch(other_root, partition)
    claimed = CustomerState.from_json(old.to_json()) if old else CustomerState(other_root)
    claimed.merged_into, claimed.handing_over = root, True
    work.commit.claims[other_root] = Claim(work.versions.get(other_root, 0), claimed.to_json())
    if old is None:
        work.states[other_root] = CustomerState.redirect(other_root, root, 0)
        survivor.aliases.append(other_root)
        work.states[root] = survivor
        return None
    work.catch_up(partition, old, now)
    work.exit_all(partition, old, trigger, event.ts, now, f"merged into {root}")
    merged = merge_profiles(survivor, old, ctx.settings.dedupe_depth)
    work.states[root] = merged
    work.states[other_root] = CustomerState.redirect(other_root, root, old.sequence)
    work.settle(partition, merged, now, trigger, event.ts)
    return None


def _handing_over(work: Profiles, root: str, other: str) -> bool:
    """True when ``root``'s claim on ``other`` is all that was committed of their merge (a crash
    came between the two steps of a hand-over): ``other`` then gets back the profile it had
    before the claim (none, when it had none), and the merge is applied again."""
    state = work.states.get(other)
    survivor = work.states.get(root)
    if (
        state is None
        or not state.handing_over
        or state.merged_into != root
        or (survivor is not None and other in survivor.aliases)
    ):
        return False
    before = CustomerState.from_json(state.to_json())
    before.merged_into, before.handing_over = None, False
    work.states[other] = None if before == CustomerState(other) else before
    return True


def erase(
    work: Profiles, partition: int, event: BaseEvent, named: str, root: str, now: float
) -> None:
    """Forget the customer: exits, deleted keys (aliases too), and suppression records."""
    state = work.states.get(root)
    ids = {named, root}
    if state is not None:
        ids.update(state.aliases)
        trigger = Trigger("erasure", event.messageId, "erase")
        work.exit_all(partition, state, trigger, event.ts, now, "customer erased")
    for cid in sorted(ids):
        if cid not in work.states:
            work.unconditional.add(cid)
        work.states[cid] = None
        work.touch(cid, partition)
        work.commit.suppress[cid] = event.ts
        work.suppressed[cid] = event.ts
