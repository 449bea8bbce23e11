"""Rule files as YAML with line numbers, and pydantic errors as ``RuleProblem`` lines."""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from streams.engine import model as m


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


class LineDict(dict[Any, Any]):
    """A YAML mapping that remembers its own line and the line of each key."""

    line: int
    key_lines: dict[Any, int]


class LineList(list[Any]):
    """A YAML sequence that remembers its own line and the line of each item."""

    line: int
    item_lines: list[int]


MAX_FILE_BYTES = 64 * 1024
"""The largest rule (or destination) file, and draft, the loader reads."""
MAX_DEPTH = 48
"""The deepest nesting of YAML mappings and sequences (an ``all`` inside an ``any`` is two)."""
MAX_NODES = 20_000
"""The most YAML nodes (scalars, mappings, sequences) in one file."""


class _LineLoader(yaml.SafeLoader):
    """A safe YAML loader whose mappings and sequences carry line numbers, with limits: no
    anchors or aliases (``&a`` / ``*a``, whose expansion can make a few hundred bytes into
    gigabytes), at most :data:`MAX_DEPTH` levels and :data:`MAX_NODES` nodes."""

    duplicate_keys: list[tuple[int, str]]
    depth = 0
    nodes = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.composer.ComposerError(
                None, None, "anchors and aliases (&name, *name) are not allowed", event.start_mark
            )
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise yaml.composer.ComposerError(
                None, None, f"more than {MAX_NODES} values in one file", event.start_mark
            )
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {MAX_DEPTH} levels", event.start_mark
                )
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    result = LineDict()
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


def _construct_sequence(loader: _LineLoader, node: yaml.SequenceNode) -> LineList:
    result = LineList(loader.construct_object(child, deep=True) for child in node.value)
    result.line = node.start_mark.line + 1
    result.item_lines = [child.start_mark.line + 1 for child in node.value]
    return result


def _construct_int(loader: _LineLoader, node: yaml.ScalarNode) -> int:
    """An integer of at most 100 digits (Python refuses to read past 4,300; no rule needs 100)."""
    if sum(ch.isdigit() for ch in str(node.value)) > 100:
        raise yaml.constructor.ConstructorError(
            None, None, "found an integer of more than 100 digits", node.start_mark
        )
    return int(yaml.SafeLoader.construct_yaml_int(loader, node))


_LineLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def parse_yaml(text: str | bytes, file: str) -> tuple[Any, list[RuleProblem]]:
    """Parse one YAML document with line numbers; return (data or None, problems).

    Refused with a problem instead: more than :data:`MAX_FILE_BYTES`, anything but UTF-8,
    anchors and aliases, nesting deeper than :data:`MAX_DEPTH`, more than :data:`MAX_NODES`
    values, and integers of more than 100 digits.
    """
    size = len(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text)
    if size > MAX_FILE_BYTES:
        return None, [RuleProblem(file, 0, f"larger than {MAX_FILE_BYTES} bytes ({size})")]
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            return None, [
                RuleProblem(file, 0, f"expected UTF-8 text: {exc.reason} at byte {exc.start}")
            ]
    try:
        loader = _LineLoader(text)  # reads the whole text: refuses unprintable characters
    except yaml.YAMLError as exc:
        return None, [RuleProblem(file, 1, f"YAML error: {exc}".replace("\n", " "))]
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
    except RecursionError:  # a pathological document the limits above did not catch
        return None, [RuleProblem(file, 1, f"YAML error: nested deeper than {MAX_DEPTH} levels")]
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
        if isinstance(current, LineDict) and part in current:
            line = current.key_lines.get(part, line)
            parent, current = current, current[part]
        elif isinstance(current, LineList) and isinstance(part, int) and part < len(current):
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
    if top is m.RfmFile and list(walked) == ["rfm"]:
        return list(m.RfmSection.model_fields)
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
