"""Test data shared by unit and integration tests."""

from __future__ import annotations

BIG_SPENDERS = """
id: big
name: Big
description: revenue of at least 1000
kind: value
condition: {type: lifetime, metric: revenue, op: ge, value: 1000}
"""
"""One segment on lifetime revenue (the rule-change tests lower its threshold to 500)."""

TEST_RULES = {
    "value.yaml": """
family: value
name: Value
description: value by lifetime revenue
kind: value
segments:
  - id: big_spender
    name: Big spender
    description: revenue of at least 1000
    priority: 20
    condition: {type: lifetime, metric: revenue, op: ge, value: 1000}
  - id: buyer
    name: Buyer
    description: at least one order
    priority: 10
    condition: {type: lifetime, metric: orders, op: ge, value: 1}
""",
    "canada.yaml": """
id: canadians
name: Canadians
description: lives in Canada
kind: demographic
condition: {type: trait, path: address.country, op: eq, value: CA}
""",
}
