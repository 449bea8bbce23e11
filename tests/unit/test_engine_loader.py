"""Loading rule packs: every problem with its file and line; check_rules; the JSON Schema."""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import pytest

from streams.engine import (
    RuleLoadError,
    RuleProblem,
    check_rules,
    load_rules,
    parse_rules,
    rules_json_schema,
)
from tests.unit.fakes_facts import segment

REPO_RULES = Path(__file__).resolve().parents[2] / "rules"


def problems_of(**files: str) -> list[RuleProblem]:
    with pytest.raises(RuleLoadError) as caught:
        parse_rules({f"{k}.yaml": textwrap.dedent(v) for k, v in files.items()})
    return caught.value.problems


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def test_unknown_field_suggests_the_closest_one(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "big.yaml",
        """\
        id: big
        name: Big
        kind: value
        condition:
          type: lifetime
          metric: revenue
          op: ge
          valeu: 3
        """,
    )
    with pytest.raises(RuleLoadError) as caught:
        load_rules(tmp_path)
    assert RuleProblem(str(path), 8, "condition: unknown field 'valeu', did you mean 'value'?") in (
        caught.value.problems
    )


def test_wrong_values_are_reported_with_path_line_and_expectation() -> None:
    problems = problems_of(
        fam="""\
        family: tiers
        name: Tiers
        kind: value
        segments:
          - id: gold
            name: Gold
            priority: high
            condition: {type: lifetime, metric: revnue, op: ge, value: 1}
          - id: silver
            nmae: Silver
            condition:
              type: recency
              event: Order Completed
              within: 3 days
          - id: Bronze
            name: Bronze
            condition: {type: evnt_count, event: A}
        """
    )
    by_line = {p.line: p.message for p in problems}
    assert all(p.file == "fam.yaml" for p in problems)
    assert "segments[0].priority: expected a valid integer" in by_line[7]
    assert "'high'" in by_line[7]
    assert (
        by_line[8]
        == "segments[0].condition.metric: invalid value 'revnue', did you mean 'revenue'?"
    )
    assert by_line[10] == "segments[1]: unknown field 'nmae', did you mean 'name'?"
    assert by_line[9] == "segments[1]: missing required field 'name'"
    assert by_line[14].startswith("segments[1].condition.within: expected a duration like '30s'")
    assert by_line[15].startswith("segments[2].id: invalid id 'Bronze'")
    assert by_line[17] == (
        "segments[2].condition: unknown condition type 'evnt_count', did you mean 'event_count'?"
    )


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        (
            "{type: recency, event: A}",
            "condition: expected exactly one of 'within' or 'not_within'",
        ),
        ("{type: trait, path: a, op: exists, value: 1}", "'exists' takes no 'value'"),
        ("{type: trait, path: a, op: eq}", "'eq' needs a 'value'"),
        ("{type: trait, path: a, op: in, value: x}", "'in' expects a non-empty list"),
        ("{type: trait, path: a, op: between, value: [1]}", "'between' expects a list of two"),
        ("{type: trait, path: a, op: like, value: 1}", "invalid value 'like'"),
        (
            "{type: event_count, event: A, within: 1d, op: between, value: [3, 1]}",
            "low <= high",
        ),
        ("{type: event_count, event: A, within: 0s, op: ge, value: 1}", "greater than zero"),
        ("{type: event_count, event: A, within: 1d, op: ge, value: lots}", "expects a number"),
        ("{type: event_count, event: A, within: 1d, op: contains, value: 1}", "invalid value"),
        ("{type: all, of: []}", "condition.of: "),
        ("{event: A}", "a condition needs a 'type'"),
        (
            "{type: event_count, event: A, within: 1d, op: ge, value: 1, where: {p: [1]}}",
            "condition.where.p: expected a value (equality) or a mapping",
        ),
    ],
)
def test_condition_errors(condition: str, message: str) -> None:
    [problem] = problems_of(x=segment("x", condition))
    assert problem.file == "x.yaml"
    assert problem.line == 4
    assert message in problem.message


def test_yaml_syntax_error_has_its_line() -> None:
    problems = problems_of(bad="id: a\nname: [x\nkind: value\n")
    assert [(p.file, p.line) for p in problems] == [("bad.yaml", 3)]
    assert problems[0].message.startswith("YAML syntax error: ")


def test_empty_and_non_mapping_files() -> None:
    problems = problems_of(empty="", listing="- a\n- b\n")
    assert [(p.file, p.line) for p in problems] == [("empty.yaml", 1), ("listing.yaml", 1)]
    assert "empty file" in problems[0].message
    assert "expected a mapping" in problems[1].message


def test_duplicate_ids_and_keys() -> None:
    problems = problems_of(
        a=segment("dup", "{type: trait, path: a, op: exists}"),
        b="\n"
        + segment("dup", "{type: trait, path: a, op: exists}").replace(
            "name: dup", "name: dup\nname: again"
        ),
    )
    assert problems == [
        RuleProblem("b.yaml", 2, "duplicate segment id 'dup' (already defined at a.yaml:1)"),
        RuleProblem("b.yaml", 4, "duplicate key 'name' in the same mapping"),
    ]


def test_unknown_in_segment_target() -> None:
    problems = problems_of(
        a=segment("a", "{type: in_segment, segment: vip}"),
        b=segment("b", "\n  type: not\n  condition:\n    type: in_segment\n    segment: nothing"),
        vips=segment("vips", "{type: trait, path: a, op: exists}"),
    )
    assert problems == [
        RuleProblem("a.yaml", 4, "in_segment: unknown segment 'vip', did you mean 'vips'?"),
        RuleProblem("b.yaml", 8, "in_segment: unknown segment 'nothing'"),
    ]


def test_cycles_are_rejected_with_file_and_line() -> None:
    problems = problems_of(
        a=segment("a", "{type: in_segment, segment: b}"),
        b=segment(
            "b",
            "\n  type: any\n  of:\n    - {type: trait, path: x, op: exists}\n"
            "    - {type: in_segment, segment: a}",
        ),
        c=segment("c", "{type: in_segment, segment: c}"),
        d=segment("d", "{type: in_segment, segment: a}"),
    )
    assert problems == [
        RuleProblem("a.yaml", 4, "in_segment 'b' creates a cycle: a -> b -> a"),
        RuleProblem("c.yaml", 4, "in_segment 'c' creates a cycle: c -> c"),
    ]


FAMILY = """\
family: f
name: F
kind: value
segments:
  - {id: f1, name: x, condition: {type: trait, path: a, op: exists}}
  - {id: f2, name: x, condition: {type: in_segment, segment: reader}}
"""


def test_cycles_through_family_members_are_rejected() -> None:
    # f1's membership depends on f2's condition (same family), which reads 'reader'
    problems = problems_of(fam=FAMILY, reader=segment("reader", "{type: in_segment, segment: f1}"))
    assert problems == [
        RuleProblem(
            "fam.yaml", 6, "in_segment 'reader' creates a cycle: family f -> reader -> family f"
        )
    ]


def test_family_members_cannot_read_each_other() -> None:
    fam = FAMILY.replace("segment: reader", "segment: f3")
    problems = problems_of(
        fam=fam, sibling=segment("f3", "{type: in_segment, segment: f1}", family="f")
    )
    assert [(p.file, p.line) for p in problems] == [("fam.yaml", 6)]
    assert (
        "family f -> family f (members of a family cannot read each other)" in problems[0].message
    )


def test_all_problems_of_all_files_are_reported(tmp_path: Path) -> None:
    write(
        tmp_path,
        "a.yaml",
        "id: a\nname: A\nkind: valu\ncondition: {type: trait, path: a, op: exists}\n",
    )
    write(tmp_path, "b.yml", "id: b\nname: [\n")
    write(tmp_path, "notes.txt", "not a rule file")
    code, lines = check_rules(tmp_path)
    assert code == 1
    assert lines[0] == f"{tmp_path / 'a.yaml'}:3: kind: invalid value 'valu', did you mean 'value'?"
    assert lines[1].startswith(f"{tmp_path / 'b.yml'}:")
    assert len(lines) == 2


def test_check_rules_on_the_default_pack() -> None:
    code, lines = check_rules(REPO_RULES)
    assert code == 0, lines
    rules = load_rules(REPO_RULES)
    files = len(list(REPO_RULES.glob("*.yaml")))
    assert lines == [
        f"OK: {len(rules.segments)} segments in {files} files, rule_version={rules.version}"
    ]


def test_check_rules_on_missing_or_empty_directory(tmp_path: Path) -> None:
    assert check_rules(tmp_path / "nope") == (1, [f"{tmp_path / 'nope'}: rule directory not found"])
    code, lines = check_rules(tmp_path)
    assert code == 1 and "no rule files" in lines[0]


def test_version_depends_on_names_and_bytes(tmp_path: Path) -> None:
    text = segment("a", "{type: trait, path: a, op: exists}")
    write(tmp_path, "a.yaml", text)
    first = load_rules(tmp_path).version
    # computed here from the documented recipe: sha256 over each sorted (name, length, bytes)
    expected = hashlib.sha256()
    data = text.encode()
    expected.update(b"a.yaml\0" + str(len(data)).encode() + b"\0" + data)
    assert first == expected.hexdigest()[:16]
    assert load_rules(tmp_path).version == first
    write(tmp_path, "a.yaml", text + "# comment\n")
    assert load_rules(tmp_path).version != first


def test_json_schema_structure() -> None:
    schema = rules_json_schema()
    assert schema["oneOf"] == [
        {"$ref": "#/$defs/SegmentFile"},
        {"$ref": "#/$defs/FamilyFile"},
        {"$ref": "#/$defs/RfmFile"},
        {"$ref": "#/$defs/PerformanceFile"},
    ]
    defs = schema["$defs"]
    for name in ("SegmentFile", "FamilyFile", "FamilyMember", "TraitCondition", "NotCondition"):
        assert name in defs
    segment_file = defs["SegmentFile"]
    assert segment_file["additionalProperties"] is False
    assert set(segment_file["required"]) == {"id", "name", "kind", "condition"}
    assert segment_file["properties"]["condition"]["discriminator"]["propertyName"] == "type"
    kinds = segment_file["properties"]["kind"]["enum"]
    assert "rfm" in kinds and "lifecycle" in kinds
    within = defs["EventCountCondition"]["properties"]["within"]
    assert {c.get("type") for c in within["anyOf"]} == {"string", "number"}


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ("{type: recency, event: x, within: 1.8e+305}", "at most 1000 years"),
        ("{type: recency, event: x, within: 400000d}", "at most 1000 years"),
        ("{type: lifetime, metric: orders, op: ge, value: .nan}", "finite"),
        ("{type: trait, path: a, op: in, value: [1, .inf]}", "expects a non-empty list"),
    ],
)
def test_rules_check_reports_out_of_range_values_as_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], condition: str, message: str
) -> None:
    """``segmenter rules check`` answers ``file:line: message`` (exit 1), never a traceback."""
    from streams.cli import main

    (tmp_path / "x.yaml").write_text(segment("x", condition))
    assert main(["rules", "check", str(tmp_path)]) == 1
    out = capsys.readouterr().err
    assert f"{tmp_path / 'x.yaml'}:4: " in out or out.startswith("x.yaml:4: "), out
    assert message in out
    assert "Traceback" not in out
