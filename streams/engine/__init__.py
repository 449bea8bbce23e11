"""The pure rule engine: load a rule pack, evaluate customers' facts, compute transitions.

No I/O happens here except ``load_rules`` reading the rule files.
"""

from streams.engine.checking import check_rules, rules_json_schema
from streams.engine.compile import Reason
from streams.engine.durations import DurationError, format_duration, parse_duration
from streams.engine.facts import LIFETIME_METRICS, MISSING, Facts, SeriesSpec
from streams.engine.loader import RuleLoadError, RuleProblem, load_rules, parse_rules, rules_version
from streams.engine.membership import is_holdout
from streams.engine.rfm import (
    RfmBoundaries,
    RfmConfig,
    next_rfm_change,
    quintile_boundaries,
    rfm_scores,
)
from streams.engine.ruleset import (
    REMOVED_RULE,
    Evaluation,
    RuleSet,
    SegmentExplanation,
    SegmentInfo,
    Transition,
)

__all__ = [
    "LIFETIME_METRICS",
    "MISSING",
    "REMOVED_RULE",
    "DurationError",
    "Evaluation",
    "Facts",
    "Reason",
    "RfmBoundaries",
    "RfmConfig",
    "RuleLoadError",
    "RuleProblem",
    "RuleSet",
    "SegmentExplanation",
    "SegmentInfo",
    "SeriesSpec",
    "Transition",
    "check_rules",
    "format_duration",
    "is_holdout",
    "load_rules",
    "next_rfm_change",
    "parse_duration",
    "parse_rules",
    "quintile_boundaries",
    "rfm_scores",
    "rules_json_schema",
    "rules_version",
]
