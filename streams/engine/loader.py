"""Load a rule pack: YAML files -> validated models -> a compiled ``RuleSet``.

Every problem (YAML syntax, schema, duplicate ids, unknown or cyclic ``in_segment`` references)
is reported with its file and line, and all of them are collected before ``RuleLoadError`` is
raised, so an analyst can fix a whole pack in one pass.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from streams.engine import model as m
from streams.engine.compile import CompiledCondition, Compiler
from streams.engine.compiled import NextChange, never
from streams.engine.condition_types import predicts
from streams.engine.inputs import segment_inputs, with_conversion
from streams.engine.membership import segment_condition
from streams.engine.nextdue import Earliest
from streams.engine.ordering import Node, evaluation_order
from streams.engine.problems import (
    LineDict,
    LineList,
    RuleLoadError,
    RuleProblem,
    parse_yaml,
    validation_problems,
)
from streams.engine.rfm import RfmBoundaries, RfmConfig
from streams.engine.ruleset import Conversion, RuleSet, SegmentInfo

RULE_SUFFIXES = (".yaml", ".yml")

__all__ = [
    "RULE_SUFFIXES",
    "RuleLoadError",
    "RuleProblem",
    "load_rules",
    "parse_rules",
    "rules_version",
]


@dataclass
class _Segment:
    """One segment as read from its file, before ordering and compilation."""

    info: SegmentInfo
    condition: m.Condition
    stay_condition: m.Condition | None
    line: int
    refs: list[tuple[str, int]]


@dataclass
class _File:
    """What one file gave: segments, problems, the family it defines, its rfm section."""

    segments: list[_Segment] = field(default_factory=list)
    problems: list[RuleProblem] = field(default_factory=list)
    family: str | None = None
    rfm: m.RfmSection | None = None
    rfm_lines: list[int] = field(default_factory=list)
    performance: m.PerformanceSection | None = None


def _refs(raw: Any) -> Iterator[tuple[str, int]]:
    """Every ``in_segment`` reference in a raw condition, with its line."""
    if isinstance(raw, LineDict):
        if raw.get("type") == "in_segment" and isinstance(raw.get("segment"), str):
            yield raw["segment"], raw.key_lines.get("segment", raw.line)
        for value in raw.values():
            yield from _refs(value)
    elif isinstance(raw, LineList):
        for item in raw:
            yield from _refs(item)


def _rfm_lines(raw: Any) -> Iterator[int]:
    """The line of every ``type: rfm`` condition in a raw segment."""
    if isinstance(raw, LineDict):
        if raw.get("type") == "rfm":
            yield raw.key_lines.get("type", raw.line)
        for value in raw.values():
            yield from _rfm_lines(value)
    elif isinstance(raw, LineList):
        for item in raw:
            yield from _rfm_lines(item)


def _segment(
    raw: LineDict, member: m.SegmentFile | m.FamilyMember, kind: str, family: str | None, file: str
) -> _Segment:
    info = SegmentInfo(
        member.id,
        member.name,
        member.description,
        kind,
        family,
        member.priority,
        file,
        requires_consent=member.requires_consent,
        holdout_percent=member.holdout_percent,
        min_dwell_s=member.min_dwell,
        has_stay_condition=member.stay_condition is not None,
    )
    refs = [*_refs(raw.get("condition")), *_refs(raw.get("stay_condition"))]
    return _Segment(info, member.condition, member.stay_condition, raw.line, refs)


def _top_model(data: LineDict) -> type[BaseModel]:
    if "rfm" in data and not {"id", "family", "segments"} & data.keys():
        return m.RfmFile
    if "performance" in data and not {"id", "family", "segments"} & data.keys():
        return m.PerformanceFile
    if "segments" in data or ("family" in data and "id" not in data):
        return m.FamilyFile
    return m.SegmentFile


def _read_file(file: str, text: bytes) -> _File:
    """Parse and validate one file."""
    data, problems = parse_yaml(text, file)
    result = _File(problems=problems)
    if problems and data is None:
        return result
    if data is None:
        expected = (
            "a segment (id, name, kind, condition), a family (family, name, kind, segments)"
            " or an rfm configuration (rfm)"
        )
        problems.append(RuleProblem(file, 1, f"empty file: expected {expected}"))
        return result
    if not isinstance(data, LineDict):
        problems.append(RuleProblem(file, 1, "expected a mapping: a segment or a family"))
        return result
    top = _top_model(data)
    try:
        parsed = top.model_validate(data)
    except ValidationError as exc:
        problems.extend(validation_problems(exc, data, file, top))
        return result
    result.rfm_lines = list(_rfm_lines(data))
    if isinstance(parsed, m.RfmFile):
        result.rfm = parsed.rfm
    elif isinstance(parsed, m.PerformanceFile):
        result.performance = parsed.performance
    elif isinstance(parsed, m.SegmentFile):
        result.segments.append(_segment(data, parsed, parsed.kind, parsed.family, file))
    else:
        assert isinstance(parsed, m.FamilyFile)
        for raw, member in zip(data["segments"], parsed.segments, strict=True):
            kind = member.kind or parsed.kind
            result.segments.append(_segment(raw, member, kind, parsed.family, file))
        result.family = parsed.family
    return result


def _rfm_config(section: m.RfmSection, file: str) -> RfmConfig:
    fixed = RfmBoundaries(section.recency_days, section.frequency, section.monetary)
    return RfmConfig(live=section.boundaries == "live", fixed=fixed, file=file)


def rules_version(files: Mapping[str, bytes]) -> str:
    """The rule pack's version: sha256 of its sorted (file name, bytes), first 16 hex digits."""
    digest = hashlib.sha256()
    for name, data in sorted(files.items()):
        digest.update(name.encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
    return digest.hexdigest()[:16]


def _unit_next_change(conditions: Sequence[CompiledCondition]) -> NextChange:
    """The earliest next change of a unit's segments (each distinct function once)."""
    fns = tuple(dict.fromkeys(c.next_change for c in conditions if c.next_change is not never))
    return Earliest(fns).at


def _compile(compiler: Compiler, seg: _Segment) -> CompiledCondition:
    """The segment's membership condition: its condition with consent, stay and dwell."""
    info = seg.info
    stay = None if seg.stay_condition is None else compiler.compile(seg.stay_condition)
    return segment_condition(
        info.id,
        compiler.compile(seg.condition),
        stay,
        info.min_dwell_s,
        info.requires_consent,
    )


@dataclass
class _Pack:
    """What all the files of a pack gave together, before ids and references are checked."""

    segments: list[_Segment] = field(default_factory=list)
    problems: list[RuleProblem] = field(default_factory=list)
    rfm: RfmConfig | None = None
    performance: tuple[m.PerformanceSection, str] | None = None


def _read_pack(blobs: Mapping[str, bytes], display: Mapping[str, str] | None) -> _Pack:
    """Read every file in name order; report a second rfm, performance or same family."""
    pack = _Pack()
    problems = pack.problems
    family_files: dict[str, str] = {}
    rfm_uses: list[tuple[str, int]] = []
    for name in sorted(blobs):
        shown = (display or {}).get(name, name)
        read = _read_file(shown, blobs[name])
        problems.extend(read.problems)
        rfm_uses.extend((shown, line) for line in read.rfm_lines)
        if read.rfm is not None:
            if pack.rfm is not None:
                message = f"rfm is already configured in {pack.rfm.file}"
                problems.append(RuleProblem(shown, 1, message))
            else:
                pack.rfm = _rfm_config(read.rfm, shown)
        if read.performance is not None:
            if pack.performance is not None:
                message = f"performance is already configured in {pack.performance[1]}"
                problems.append(RuleProblem(shown, 1, message))
            else:
                pack.performance = (read.performance, shown)
        family = read.family
        if family is not None:
            if family in family_files:
                problems.append(
                    RuleProblem(
                        shown, 1, f"family '{family}' is already defined in {family_files[family]}"
                    )
                )
            family_files.setdefault(family, shown)
        pack.segments.extend(read.segments)
    if pack.rfm is None:
        problems.extend(
            RuleProblem(file, line, "an 'rfm' condition needs an rfm file in the pack (rfm: ...)")
            for file, line in rfm_uses
        )
    return pack


def _segments_by_id(
    segments: Sequence[_Segment], problems: list[RuleProblem]
) -> dict[str, _Segment]:
    """Each id's first segment, in definition order; a problem for each later duplicate."""
    by_id: dict[str, _Segment] = {}
    for seg in segments:
        first = by_id.get(seg.info.id)
        if first is not None:
            problems.append(
                RuleProblem(
                    seg.info.file,
                    seg.line,
                    f"duplicate segment id '{seg.info.id}'"
                    f" (already defined at {first.info.file}:{first.line})",
                )
            )
        else:
            by_id[seg.info.id] = seg
    return by_id


def _unknown_references(by_id: Mapping[str, _Segment]) -> Iterator[RuleProblem]:
    """A problem for each ``in_segment`` reference to an id not in the pack, with a hint."""
    for seg in by_id.values():
        for target, line in seg.refs:
            if target not in by_id:
                close = difflib.get_close_matches(target, list(by_id), n=1, cutoff=0.6)
                hint = f", did you mean '{close[0]}'?" if close else ""
                yield RuleProblem(
                    seg.info.file, line, f"in_segment: unknown segment '{target}'{hint}"
                )


def _evaluation_order(
    by_id: Mapping[str, _Segment],
) -> tuple[list[str], list[tuple[str, int, str]]]:
    """The segment ids in evaluation order, and the cycles found (file, line, message)."""
    unique = list(by_id.values())
    nodes = [
        Node(
            s.info.id,
            s.info.family,
            s.info.file,
            s.line,
            [(t, ln) for t, ln in s.refs if t in by_id],
        )
        for s in unique
    ]
    return evaluation_order(nodes, {s.info.id: s.info.priority for s in unique})


def _inputs(
    by_id: Mapping[str, _Segment], ordered: Sequence[str], conversion_event: str
) -> dict[str, frozenset[str]]:
    """The inputs each segment reads, the conversion event included."""
    return {
        sid: with_conversion(
            segment_inputs(
                by_id[sid].condition,
                by_id[sid].stay_condition,
                by_id[sid].info.min_dwell_s,
                by_id[sid].info.requires_consent,
            ),
            conversion_event,
        )
        for sid in ordered
    }


def _conversion(compiler: Compiler, section: m.PerformanceSection) -> Conversion:
    """The pack's conversion (for performance reports), with its series registered."""
    return Conversion(
        event=section.conversion_event,
        value_property=section.value_property,
        window_s=section.window_days * 86400,
        series_id=compiler.register_series(
            section.conversion_event, None, section.window_days * 86400, section.value_property
        ),
    )


def _bind_next_changes(
    compiler: Compiler,
    rules: RuleSet,
    compiled: Sequence[tuple[SegmentInfo, CompiledCondition]],
) -> None:
    """Let ``in_segment`` delegate its next change to the segment's unit (itself or family)."""
    conditions = dict((info.id, cond) for info, cond in compiled)
    for info, _ in compiled:
        members = rules.families.get(info.family, (info.id,)) if info.family else (info.id,)
        compiler.bind_segment(info.id, _unit_next_change([conditions[s] for s in members]))


def parse_rules(
    files: Mapping[str, str | bytes], display: Mapping[str, str] | None = None
) -> RuleSet:
    """Build a rule set from file contents keyed by file name (processed in name order).

    ``display`` optionally maps a file name to the path shown in problems.

    Raises:
        RuleLoadError: listing every problem found.
    """
    blobs = {name: t.encode() if isinstance(t, str) else t for name, t in files.items()}
    pack = _read_pack(blobs, display)
    problems = pack.problems
    by_id = _segments_by_id(pack.segments, problems)
    problems.extend(_unknown_references(by_id))
    ordered, cycles = _evaluation_order(by_id)
    problems.extend(RuleProblem(file, line, msg) for file, line, msg in cycles)
    if problems:
        raise RuleLoadError(sorted(set(problems), key=lambda p: (p.file, p.line, p.message)))
    compiler = Compiler(pack.rfm)
    compiled = [(by_id[sid].info, _compile(compiler, by_id[sid])) for sid in ordered]
    section = pack.performance[0] if pack.performance is not None else m.PerformanceSection()
    inputs = _inputs(by_id, ordered, section.conversion_event)
    conversion = _conversion(compiler, section)
    predictive = any(
        predicts(c)
        for s in by_id.values()
        for c in (s.condition, s.stay_condition)
        if c is not None
    )
    rules = RuleSet.build(
        rules_version(blobs), compiled, compiler.series(), pack.rfm, inputs, conversion, predictive
    )
    _bind_next_changes(compiler, rules, compiled)
    return rules


def load_rules(directory: Path) -> RuleSet:
    """Load every ``*.yaml`` / ``*.yml`` file of ``directory`` (not recursive), by name.

    Raises:
        RuleLoadError: listing every problem found, each with its file and line.
    """
    if not directory.is_dir():
        raise RuleLoadError([RuleProblem(str(directory), 0, "rule directory not found")])
    paths = sorted(p for p in directory.iterdir() if p.suffix in RULE_SUFFIXES and p.is_file())
    files = {p.name: p.read_bytes() for p in paths}
    return parse_rules(files, {p.name: str(p) for p in paths})
