"""Commands about rule packs: ``rules check|schema|apply`` and ``rfm refresh``.

Each command imports what it needs when it runs (``segmenter --help`` stays fast)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from streams.settings import Settings


def _cmd_rules(args: argparse.Namespace, settings: Settings) -> int:
    from streams.engine.checking import check_rules, rules_json_schema

    if args.rules_command == "apply":
        from streams.rules_apply import run_rules_apply

        directory = Path(args.dir) if args.dir else None
        return run_rules_apply(settings, directory, emit=not args.no_emit, wait=args.wait)
    if args.rules_command == "schema":
        import orjson

        sys.stdout.write(orjson.dumps(rules_json_schema(), option=orjson.OPT_INDENT_2).decode())
        sys.stdout.write("\n")
        return 0
    code, lines = check_rules(Path(args.dir) if args.dir else settings.rules)
    out = sys.stdout if code == 0 else sys.stderr
    for line in lines:
        print(line, file=out)
    return code


def _cmd_rfm(args: argparse.Namespace, settings: Settings) -> int:
    from streams.rules_apply import run_rfm_refresh

    return run_rfm_refresh(settings)


def _add_rules(sub: Any) -> None:
    """``segmenter rules``."""
    rules = sub.add_parser("rules", help="check rule files or print their JSON Schema")
    rules_sub = rules.add_subparsers(dest="rules_command", required=True, metavar="SUBCOMMAND")
    check = rules_sub.add_parser("check", help="validate rule files (exit 1 on any error)")
    check.add_argument("dir", nargs="?", help="rule directory (default SEGMENTER_RULES)")
    rules_sub.add_parser("schema", help="print the JSON Schema of a rule file")
    apply = rules_sub.add_parser(
        "apply", help="validate and activate rule files; follow the backfill with a progress bar"
    )
    apply.add_argument("dir", nargs="?", help="rule directory (default SEGMENTER_RULES)")
    apply.add_argument("--no-emit", action="store_true", help="backfill without migrations")
    apply.add_argument(
        "--wait", type=float, default=30.0, help="give up following after S idle seconds"
    )
    rules.set_defaults(func=_cmd_rules)


def _add_rfm(sub: Any) -> None:
    """``segmenter rfm``."""
    rfm = sub.add_parser("rfm", help="RFM boundaries")
    rfm_sub = rfm.add_subparsers(dest="rfm_command", required=True, metavar="SUBCOMMAND")
    rfm_sub.add_parser("refresh", help="recompute the live RFM quintile boundaries now")
    rfm.set_defaults(func=_cmd_rfm)


def register(sub: Any) -> None:
    """Add this module's commands to ``segmenter``'s subparsers."""
    _add_rules(sub)
    _add_rfm(sub)
