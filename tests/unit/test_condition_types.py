"""Every condition type of the rule schema is registered once, and an unregistered one is an
error (never compiled as something else)."""

from __future__ import annotations

import typing

import pytest

from streams.engine import model as m
from streams.engine.condition_types import (
    TYPES,
    UnknownConditionType,
    condition_inputs,
    condition_type,
    predicts,
    type_name,
)


def schema_models() -> set[type]:
    union = typing.get_args(m.Condition)[0]  # Annotated[Union[...], Field(...)]
    return set(typing.get_args(union))


def test_every_type_of_the_schema_is_registered_once_under_its_yaml_name() -> None:
    assert {t.model for t in TYPES} == schema_models()
    assert len({t.name for t in TYPES}) == len(TYPES) == len(schema_models())
    for t in TYPES:
        declared = typing.get_args(t.model.model_fields["type"].annotation)
        assert declared == (t.name,), t.model
        assert m.CONDITION_MODELS.get(t.name, t.model) is t.model


def test_an_unregistered_condition_is_an_error() -> None:
    class Odd(m.TraitCondition):
        pass

    odd = Odd(type="trait", path="a", op="exists")
    with pytest.raises(UnknownConditionType, match="Odd"):
        condition_type(odd)


def condition(doc: dict[str, object]) -> m.Condition:
    holder = m.SegmentFile.model_validate(
        {"id": "s", "name": "S", "kind": "behavioral", "condition": doc}
    )
    return holder.condition


def test_inputs_and_predictions_walk_the_tree() -> None:
    tree = condition(
        {
            "type": "all",
            "of": [
                {"type": "trait", "path": "address.country", "op": "exists"},
                {
                    "type": "not",
                    "condition": {
                        "type": "predicted",
                        "metric": "p_alive",
                        "op": "lt",
                        "value": 0.3,
                    },
                },
                {"type": "recency", "event": "Page Viewed", "within": "1d"},
            ],
        }
    )
    assert condition_inputs(tree) == {"trait:address", "predicted", "time", "event:Page Viewed"}
    assert predicts(tree) is True
    assert type_name(tree) == "all"
    plain = condition({"type": "in_segment", "segment": "vip"})
    assert condition_inputs(plain) == {"member:vip"} and predicts(plain) is False
