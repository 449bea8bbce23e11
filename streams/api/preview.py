"""``POST /v1/segments/preview``: what a draft segment would do to the current customers.

The draft is one segment rule file (YAML, or JSON of the same shape). It is compiled with the
engine's loader (:func:`~streams.engine.parse_rules`), never activated, and evaluated against
every stored customer state (scanned in pages). ``in_segment`` references to segments of the
active pack are resolved by compiling the draft together with the active rule files.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams.api.queries import iter_states
from streams.engine import RuleLoadError, RuleProblem, RuleSet, parse_rules
from streams.engine.loader import RULE_SUFFIXES
from streams.engine.problems import MAX_FILE_BYTES, parse_yaml
from streams.state.facts import StateFacts
from streams.store.base import Store

DRAFT_FILE = "draft.yaml"
MAX_DRAFT_BYTES = MAX_FILE_BYTES
MAX_EVAL_ERRORS = 20
COMPILE_TIMEOUT_S = 5.0
"""How long compiling a draft may take (off the event loop) before the preview is refused."""


class PreviewTimeout(Exception):
    """Compiling the draft took longer than :data:`COMPILE_TIMEOUT_S`."""


class DraftError(Exception):
    """The draft cannot be compiled: ``lines`` are ``file:line: message`` texts."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        super().__init__("\n".join(lines))


@dataclass
class Preview:
    """The outcome of a preview."""

    segment: str
    size: int = 0
    would_enter: int = 0
    would_leave: int = 0
    scanned: int = 0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The response body."""
        return {
            "segment": self.segment,
            "size": self.size,
            "would_enter": self.would_enter,
            "would_leave": self.would_leave,
            "scanned": self.scanned,
            "errors": self.errors,
            "warnings": self.warnings,
        }


def _draft_id(text: str) -> str | None:
    data, problems = parse_yaml(text, DRAFT_FILE)
    if problems:
        raise DraftError([str(p) for p in problems])
    if isinstance(data, dict) and "segments" in data:
        raise DraftError(
            [f"{DRAFT_FILE}:1: expected a single segment (id, name, kind, condition), not a family"]
        )
    return str(data["id"]) if isinstance(data, dict) and "id" in data else None


def _only_unknown_refs(problems: list[RuleProblem]) -> bool:
    return bool(problems) and all("in_segment: unknown segment" in p.message for p in problems)


def _active_files(active: RuleSet, rules_dir: Path, draft_id: str | None) -> dict[str, bytes]:
    """The active pack's files, minus the file that defines only ``draft_id`` (it is replaced)."""
    if not rules_dir.is_dir():
        return {}
    files = {
        p.name: p.read_bytes()
        for p in sorted(rules_dir.iterdir())
        if p.suffix in RULE_SUFFIXES and p.is_file()
    }
    if draft_id is not None and draft_id in active:
        replaced = Path(active.segment(draft_id).file).name
        if [s.id for s in active.segments if Path(s.file).name == replaced] == [draft_id]:
            files.pop(replaced, None)
    return files


def compile_draft(text: str, active: RuleSet, rules_dir: Path) -> tuple[RuleSet, str]:
    """The draft's rule set and its segment id.

    Raises:
        DraftError: with ``file:line: message`` lines from the loader.
    """
    if len(text.encode("utf-8", "surrogatepass")) > MAX_DRAFT_BYTES:
        raise DraftError([f"{DRAFT_FILE}:0: draft larger than {MAX_DRAFT_BYTES} bytes"])
    draft_id = _draft_id(text)
    try:
        rules = parse_rules({DRAFT_FILE: text})
    except RuleLoadError as exc:
        if not _only_unknown_refs(exc.problems):
            raise DraftError([str(p) for p in exc.problems]) from exc
        files: dict[str, str | bytes] = dict(_active_files(active, rules_dir, draft_id))
        files[f"~{DRAFT_FILE}"] = text
        display = {f"~{DRAFT_FILE}": DRAFT_FILE}
        try:
            rules = parse_rules(files, display)
        except RuleLoadError as inner:
            raise DraftError([str(p) for p in inner.problems]) from inner
        if draft_id is None or draft_id not in rules:
            raise DraftError([str(p) for p in exc.problems]) from exc
        return rules, draft_id
    if len(rules.segments) != 1:
        raise DraftError([f"{DRAFT_FILE}:1: expected exactly one segment"])
    return rules, rules.segments[0].id


def _untracked(draft: RuleSet, active: RuleSet) -> list[str]:
    kept = {spec.id: spec for spec in active.series}
    notes = []
    for spec in draft.series:
        have = kept.get(spec.id)
        if have is None:
            notes.append(
                f"the active rules keep no time series of '{spec.event}' with this filter: "
                "windowed conditions on it read as empty until the draft is activated"
            )
        elif have.horizon_s < spec.horizon_s or set(spec.sum_props) - set(have.sum_props):
            notes.append(
                f"the active rules keep a shorter (or sum-less) series of '{spec.event}': "
                "windows beyond it read as partial"
            )
    return notes


async def run_preview(
    store: Store, active: RuleSet, text: str, rules_dir: Path, now: float | None = None
) -> Preview:
    """Evaluate the draft over every stored customer and compare with current membership.

    The draft is compiled in a thread, so the event loop keeps serving other requests, and
    refused with :class:`PreviewTimeout` after :data:`COMPILE_TIMEOUT_S`.
    """
    try:
        draft, segment = await asyncio.wait_for(
            asyncio.to_thread(compile_draft, text, active, rules_dir), COMPILE_TIMEOUT_S
        )
    except TimeoutError as exc:
        raise PreviewTimeout(
            f"compiling the draft took longer than {COMPILE_TIMEOUT_S:g}s"
        ) from exc
    at = time.time() if now is None else now
    existing = segment in active
    preview = Preview(segment=segment, warnings=_untracked(draft, active))
    async for state in iter_states(store):
        preview.scanned += 1
        try:
            member = segment in draft.evaluate(StateFacts(state, at)).members
        except Exception as exc:  # a state the draft cannot read: report, keep going
            if len(preview.errors) < MAX_EVAL_ERRORS:
                preview.errors.append(f"customer {state.customer_id}: {exc!r}")
            continue
        current = existing and segment in state.members
        preview.size += member
        preview.would_enter += member and not current
        preview.would_leave += current and not member
    return preview
