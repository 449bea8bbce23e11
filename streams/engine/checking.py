"""The functions behind ``segmenter rules check [DIR]`` and ``segmenter rules schema``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from streams.engine.loader import RULE_SUFFIXES, RuleLoadError, load_rules
from streams.engine.model import FamilyFile, PerformanceFile, RfmFile, SegmentFile


def check_rules(directory: Path) -> tuple[int, list[str]]:
    """Validate a rule pack: (exit code, lines to print).

    On success the one line is ``OK: N segments in M files, rule_version=V``; on failure there
    is one ``path:line: message`` line per problem and the exit code is 1.
    """
    try:
        rules = load_rules(directory)
    except RuleLoadError as exc:
        return 1, [str(problem) for problem in exc.problems]
    files = sorted(
        {info.file for info in rules.segments} | ({rules.rfm.file} if rules.rfm else set())
    )
    if not files:
        suffixes = ", ".join(f"*{s}" for s in RULE_SUFFIXES)
        return 1, [f"{directory}: no rule files ({suffixes}) found"]
    return 0, [
        f"OK: {len(rules.segments)} segments in {len(files)} files, rule_version={rules.version}"
    ]


def rules_json_schema() -> dict[str, Any]:
    """The JSON Schema of a rule file (one segment, one family, or the rfm configuration)."""
    adapter: TypeAdapter[SegmentFile | FamilyFile | RfmFile | PerformanceFile] = TypeAdapter(
        SegmentFile | FamilyFile | RfmFile | PerformanceFile
    )
    schema = adapter.json_schema()
    choices = schema.pop("anyOf")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Segmenter rule file",
        "description": (
            "One segment, one family of mutually exclusive segments, the RFM configuration,"
            " or the performance configuration."
        ),
        "oneOf": choices,
        **schema,
    }
