"""Load a rule pack: YAML files -> validated models -> a compiled ``RuleSet``.

Every problem (YAML syntax, schema, duplicate ids, unknown or cyclic ``in_segment`` references)
is reported with its file and line, and all of them are collected before ``RuleLoadError`` is
raised, so an analyst can fix a whole pack in one pass.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from streams.engine import model as m
from streams.engine.compile import CompiledCondition, Compiler
from streams.engine.facts import Facts
from streams.engine.ruleset import Node, RuleSet, SegmentInfo, evaluation_order

RULE_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True, slots=True)
class RuleProblem:
    """One problem in a rule pack; ``line`` is 1-based (0 when it concerns the whole file)."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return (
            f"{self.file}:{self.line}: {self.message}"
            if self.line
            else f"{self.file}: {self.message}"
        )


class RuleLoadError(Exception):
    """The rule pack has problems; ``problems`` lists all of them, by file and line."""

    def __init__(self, problems: Sequence[RuleProblem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class _LineDict(dict[Any, Any]):
    """A YAML mapping that remembers its own line and the line of each key."""

    line: int
    key_lines: dict[Any, int]


class _LineList(list[Any]):
    """A YAML sequence that remembers its own line and the line of each item."""

    line: int
    item_lines: list[int]


class _LineLoader(yaml.SafeLoader):
    """A safe YAML loader whose mappings and sequences carry line numbers."""

    duplicate_keys: list[tuple[int, str]]


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> _LineDict:
    loader.flatten_mapping(node)
    result = _LineDict()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError as exc:
            raise yaml.constructor.ConstructorError(
                None, None, "found an unhashable mapping key", key_node.start_mark
            ) from exc
        line = key_node.start_mark.line + 1
        if key in result:
            loader.duplicate_keys.append((line, f"duplicate key {key!r} in the same mapping"))
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = line
    return result


def _construct_sequence(loader: _LineLoader, node: yaml.SequenceNode) -> _LineList:
    result = _LineList(loader.construct_object(child, deep=True) for child in node.value)
    result.line = node.start_mark.line + 1
    result.item_lines = [child.start_mark.line + 1 for child in node.value]
    return result


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def parse_yaml(text: str | bytes, file: str) -> tuple[Any, list[RuleProblem]]:
    """Parse one YAML document with line numbers; return (data or None, problems)."""
    loader = _LineLoader(text)
    loader.duplicate_keys = []
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        detail = ": ".join(str(x) for x in (exc.context, exc.problem) if x)
        return None, [RuleProblem(file, line, f"YAML syntax error: {detail}")]
    except yaml.YAMLError as exc:
        return None, [RuleProblem(file, 1, f"YAML error: {exc}")]
    finally:
        loader.dispose()
    return data, [RuleProblem(file, line, msg) for line, msg in loader.duplicate_keys]


def _walk(data: Any, loc: Sequence[int | str]) -> tuple[int, list[int | str], Any]:
    """Follow a pydantic error location through the YAML data.

    Returns the line of the deepest node reached, the location parts that were real keys or
    indices (pydantic also inserts union tags and validator names, which are skipped), and the
    parent container of the last part reached.
    """
    current = data
    line = getattr(data, "line", 1)
    walked: list[int | str] = []
    parent: Any = data
    for part in loc:
        if isinstance(current, _LineDict) and part in current:
            line = current.key_lines.get(part, line)
            parent, current = current, current[part]
        elif isinstance(current, _LineList) and isinstance(part, int) and part < len(current):
            line = current.item_lines[part]
            parent, current = current, current[part]
        else:
            continue
        walked.append(part)
    return line, walked, parent


def _dotted(parts: Sequence[int | str]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _suggest(word: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    if close:
        return f", did you mean '{close[0]}'?"
    return f"; expected one of: {', '.join(options)}"


def _fields_of(parent: Any, walked: Sequence[int | str], top: type[BaseModel]) -> list[str]:
    """The field names allowed in the mapping at ``walked`` (for 'did you mean')."""
    if not walked:
        return list(top.model_fields)
    kind = parent.get("type") if isinstance(parent, dict) else None
    if isinstance(kind, str) and kind in m.CONDITION_MODELS:
        return list(m.CONDITION_MODELS[kind].model_fields)
    if len(walked) >= 2 and walked[-2] == "where":
        return list(m.PropertyFilter.model_fields)
    if top is m.FamilyFile and len(walked) == 2 and walked[0] == "segments":
        return list(m.FamilyMember.model_fields)
    return []


def _message(error: Any, data: Any, top: type[BaseModel]) -> tuple[int, str, str]:
    """(line, path, message) for one pydantic error."""
    loc: tuple[int | str, ...] = tuple(error["loc"])
    kind: str = error["type"]
    ctx: dict[str, Any] = error.get("ctx") or {}
    if kind in ("extra_forbidden", "missing"):
        line, walked, _ = _walk(data, loc[:-1])
        field = str(loc[-1])
        path = _dotted(walked)
        if kind == "missing":
            return line, path, f"missing required field '{field}'"
        line, _, parent = _walk(data, loc)
        fields = _fields_of(parent, walked, top)
        hint = _suggest(field, fields) if fields else ""
        return line, path, f"unknown field '{field}'{hint}"
    line, walked, _ = _walk(data, loc)
    path = _dotted(walked)
    given = error.get("input")
    if kind == "union_tag_invalid":
        tags = re.findall(r"'([^']+)'", str(ctx.get("expected_tags", "")))
        return (
            line,
            path,
            f"unknown condition type '{ctx.get('tag')}'{_suggest(str(ctx.get('tag')), tags)}",
        )
    if kind == "union_tag_not_found":
        return line, path, f"a condition needs a 'type': one of {', '.join(m.CONDITION_MODELS)}"
    if kind == "literal_error":
        options = re.findall(r"'([^']+)'", str(ctx.get("expected", "")))
        return line, path, f"invalid value {given!r}{_suggest(str(given), options)}"
    if kind == "string_pattern_mismatch" and walked and walked[-1] in ("id", "family", "segment"):
        return (
            line,
            path,
            (
                f"invalid id {given!r}: expected lower case letters, digits and underscores,"
                " starting with a letter"
            ),
        )
    text = str(error["msg"]).removeprefix("Value error, ").replace("Input should be", "expected")
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        text = f"expected a mapping, got {type(given).__name__}"
    elif kind in ("list_type", "tuple_type"):
        text = f"expected a list, got {type(given).__name__}"
    elif (
        not kind.startswith("value_error")
        and given is not None
        and not isinstance(given, dict | list)
    ):
        text += f", got {given!r}"
    return line, path, text


def validation_problems(
    exc: ValidationError, data: Any, file: str, top: type[BaseModel]
) -> list[RuleProblem]:
    """Turn a pydantic error into problems with lines; one per location, clearest first."""
    best: dict[tuple[int, str, str], tuple[int, str]] = {}
    for error in exc.errors():
        line, path, text = _message(error, data, top)
        loc_key = (
            line,
            path,
            str(error["loc"][-1]) if error["type"] in ("extra_forbidden", "missing") else "",
        )
        rank = 1 if error["type"] == "none_required" else 0
        if loc_key not in best or rank < best[loc_key][0]:
            best[loc_key] = (rank, f"{path}: {text}" if path else text)
    return [RuleProblem(file, key[0], text) for key, (_, text) in best.items()]


@dataclass
class _Segment:
    """One segment as read from its file, before ordering and compilation."""

    info: SegmentInfo
    condition: m.Condition
    line: int
    refs: list[tuple[str, int]]


def _refs(raw: Any) -> Iterator[tuple[str, int]]:
    """Every ``in_segment`` reference in a raw condition, with its line."""
    if isinstance(raw, _LineDict):
        if raw.get("type") == "in_segment" and isinstance(raw.get("segment"), str):
            yield raw["segment"], raw.key_lines.get("segment", raw.line)
        for value in raw.values():
            yield from _refs(value)
    elif isinstance(raw, _LineList):
        for item in raw:
            yield from _refs(item)


def _read_file(file: str, text: bytes) -> tuple[list[_Segment], list[RuleProblem], str | None]:
    """Parse and validate one file: (segments, problems, family id if a family file)."""
    data, problems = parse_yaml(text, file)
    if problems and data is None:
        return [], problems, None
    if data is None:
        expected = (
            "a segment (id, name, kind, condition) or a family (family, name, kind, segments)"
        )
        return [], [*problems, RuleProblem(file, 1, f"empty file: expected {expected}")], None
    if not isinstance(data, _LineDict):
        return (
            [],
            [*problems, RuleProblem(file, 1, "expected a mapping: a segment or a family")],
            None,
        )
    family_file = "segments" in data or ("family" in data and "id" not in data)
    top: type[BaseModel] = m.FamilyFile if family_file else m.SegmentFile
    try:
        parsed = top.model_validate(data)
    except ValidationError as exc:
        return [], [*problems, *validation_problems(exc, data, file, top)], None
    if isinstance(parsed, m.SegmentFile):
        info = SegmentInfo(
            parsed.id,
            parsed.name,
            parsed.description,
            parsed.kind,
            parsed.family,
            parsed.priority,
            file,
        )
        return (
            [_Segment(info, parsed.condition, data.line, list(_refs(data.get("condition"))))],
            problems,
            None,
        )
    assert isinstance(parsed, m.FamilyFile)
    segments = []
    for raw, member in zip(data["segments"], parsed.segments, strict=True):
        info = SegmentInfo(
            member.id,
            member.name,
            member.description,
            member.kind or parsed.kind,
            parsed.family,
            member.priority,
            file,
        )
        segments.append(
            _Segment(info, member.condition, raw.line, list(_refs(raw.get("condition"))))
        )
    return segments, problems, parsed.family


def rules_version(files: Mapping[str, bytes]) -> str:
    """The rule pack's version: sha256 of its sorted (file name, bytes), first 16 hex digits."""
    digest = hashlib.sha256()
    for name, data in sorted(files.items()):
        digest.update(name.encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
    return digest.hexdigest()[:16]


def _unit_next_change(conditions: Sequence[CompiledCondition]) -> Any:
    fns = tuple(c.next_change for c in conditions)

    def next_change(facts: Facts) -> float | None:
        found = [t for t in (fn(facts) for fn in fns) if t is not None]
        return min(found) if found else None

    return next_change


def parse_rules(
    files: Mapping[str, str | bytes], display: Mapping[str, str] | None = None
) -> RuleSet:
    """Build a rule set from file contents keyed by file name (processed in name order).

    ``display`` optionally maps a file name to the path shown in problems.

    Raises:
        RuleLoadError: listing every problem found.
    """
    blobs = {name: t.encode() if isinstance(t, str) else t for name, t in files.items()}
    problems: list[RuleProblem] = []
    segments: list[_Segment] = []
    family_files: dict[str, str] = {}
    for name in sorted(blobs):
        shown = (display or {}).get(name, name)
        found, file_problems, family = _read_file(shown, blobs[name])
        problems.extend(file_problems)
        if family is not None:
            if family in family_files:
                problems.append(
                    RuleProblem(
                        shown, 1, f"family '{family}' is already defined in {family_files[family]}"
                    )
                )
            family_files.setdefault(family, shown)
        segments.extend(found)
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
    unique = list(by_id.values())
    for seg in unique:
        for target, line in seg.refs:
            if target not in by_id:
                close = difflib.get_close_matches(target, list(by_id), n=1, cutoff=0.6)
                hint = f", did you mean '{close[0]}'?" if close else ""
                problems.append(
                    RuleProblem(
                        seg.info.file, line, f"in_segment: unknown segment '{target}'{hint}"
                    )
                )
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
    ordered, cycles = evaluation_order(nodes, {s.info.id: s.info.priority for s in unique})
    problems.extend(RuleProblem(file, line, msg) for file, line, msg in cycles)
    if problems:
        raise RuleLoadError(sorted(set(problems), key=lambda p: (p.file, p.line, p.message)))
    compiler = Compiler()
    compiled = [(by_id[sid].info, compiler.compile(by_id[sid].condition)) for sid in ordered]
    rules = RuleSet.build(rules_version(blobs), compiled, compiler.series())
    conditions = dict((info.id, cond) for info, cond in compiled)
    for info, _ in compiled:
        members = rules.families.get(info.family, (info.id,)) if info.family else (info.id,)
        compiler.bind_segment(info.id, _unit_next_change([conditions[s] for s in members]))
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
