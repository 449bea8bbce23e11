"""Commands that look at a running stack: ``explain``, ``send``, ``tail``, ``report``.

Each command imports what it needs when it runs (``segmenter --help`` stays fast)."""

from __future__ import annotations

import argparse
from typing import Any

from streams.settings import Settings


def _cmd_explain(args: argparse.Namespace, settings: Settings) -> int:
    from streams.explain import run_explain

    return run_explain(settings, args.customer_id)


def _cmd_send(args: argparse.Namespace, settings: Settings) -> int:
    from streams.console import run_send

    return run_send(settings, args.event)


def _cmd_tail(args: argparse.Namespace, settings: Settings) -> int:
    from streams.console import run_tail

    return run_tail(
        settings,
        segments=args.segment or [],
        customers=args.customer or [],
        as_json=args.json,
        from_beginning=args.from_beginning,
        count=args.count,
        idle_exit_s=args.idle_exit,
    )


def _cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    from streams.report_cli import run_report

    return run_report(settings, as_json=args.json, window=args.window)


def _add_explain(sub: Any) -> None:
    """``segmenter explain``."""
    explain = sub.add_parser("explain", help="a customer's state, segments and why")
    explain.add_argument("customer_id")
    explain.set_defaults(func=_cmd_explain)


def _add_send(sub: Any) -> None:
    """``segmenter send``."""
    send = sub.add_parser("send", help="send events (JSON) onto the input topic")
    send.add_argument(
        "event",
        nargs="?",
        help="one event as JSON; without it (or with -), JSON lines from stdin",
    )
    send.set_defaults(func=_cmd_send)


def _add_tail(sub: Any) -> None:
    """``segmenter tail``."""
    tail = sub.add_parser("tail", help="print live migrations")
    tail.add_argument("--segment", action="append", help="only this segment (repeatable)")
    tail.add_argument("--customer", action="append", help="only this customer (repeatable)")
    tail.add_argument("--json", action="store_true", help="CloudEvents JSON, one a line")
    tail.add_argument(
        "--from-beginning", action="store_true", help="start at the oldest kept migration"
    )
    tail.add_argument("--count", type=int, help="exit after N migrations")
    tail.add_argument(
        "--idle-exit", type=float, metavar="S", help="exit after S seconds with no migration"
    )
    tail.set_defaults(func=_cmd_tail)


def _add_report(sub: Any) -> None:
    """``segmenter report``."""
    report = sub.add_parser(
        "report", help="every segment: size, share, growth, reach, overlap, performance, flags"
    )
    report.add_argument("--json", action="store_true", help="one JSON object")
    report.add_argument(
        "--window", help="performance window, e.g. 30d (default SEGMENTER_REPORT_WINDOW_DAYS)"
    )
    report.set_defaults(func=_cmd_report)


def register(sub: Any) -> None:
    """Add this module's commands to ``segmenter``'s subparsers."""
    _add_explain(sub)
    _add_send(sub)
    _add_tail(sub)
    _add_report(sub)
