"""Commands that move data: ``replay``, ``generate``, ``import``, ``erase``, ``redis-layout``.

Each command imports what it needs when it runs (``segmenter --help`` stays fast)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from streams.settings import Settings


def _cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    from streams.replay import run_replay

    if args.rules:
        settings = settings.model_copy(update={"rules": Path(args.rules)})
    models = Path(args.models) if args.models else None
    return run_replay(
        settings, events=Path(args.events), out=Path(args.out), models=models, keep=args.keep
    )


def _cmd_generate(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from streams.generate.runner import run_generate

    if args.history:
        from streams.generate.runner import run_generate_history

        return run_generate_history(args.customers, args.months, args.seed, args.end, args.out)
    if args.rate is None:
        print("segmenter generate: --rate is required (or --history --out FILE)", file=sys.stderr)
        return 2

    return asyncio.run(
        run_generate(
            settings,
            rate=args.rate,
            customers=args.customers,
            duration=args.duration,
            seed=args.seed,
        )
    )


def _cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    from streams.importer.command import Options, run_import

    options = Options(
        sources=args.sources,
        maps=args.map or [],
        format=args.format,
        emit_history=args.emit_history,
        as_json=args.json,
        rejects=Path(args.rejects),
        allow_late=args.allow_late,
        jobs=args.jobs,
        batch=args.batch,
        sort_run=args.sort_run,
    )
    return run_import(settings, options)


def _cmd_erase(args: argparse.Namespace, settings: Settings) -> int:
    from streams.erase import run_erase

    return run_erase(settings, args.customer_id)


def _cmd_redis_layout(args: argparse.Namespace, settings: Settings) -> int:
    from streams.stack.discovery import with_running_stack
    from streams.store.relayout import run_relayout

    return run_relayout(with_running_stack(settings), args.to)


def _add_replay(sub: Any) -> None:
    """``segmenter replay``."""
    replay = sub.add_parser("replay", help="run events through the real pipeline in event time")
    replay.add_argument("--events", required=True, help="input events, one JSON object a line")
    replay.add_argument("--rules", help="rule directory (default SEGMENTER_RULES)")
    replay.add_argument("--out", required=True, help="where to write the migrations (JSONL)")
    replay.add_argument("--models", help="a fitted-models JSON document for `predicted` conditions")
    replay.add_argument(
        "--keep",
        metavar="NAMESPACE",
        help="keep the run's Redis keys under this namespace (its customers, sizes, history)",
    )
    replay.set_defaults(func=_cmd_replay)


def _add_generate(sub: Any) -> None:
    """``segmenter generate``."""
    generate = sub.add_parser(
        "generate", help="synthetic customers' events onto the input topic, or a shop's history"
    )
    generate.add_argument("--rate", type=float, help="events per second (live)")
    generate.add_argument("--customers", type=int, required=True, help="number of customers")
    generate.add_argument("--duration", type=float, help="seconds to run (default: until Ctrl-C)")
    generate.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    generate.add_argument(
        "--history", action="store_true", help="write a shop-shaped history to --out instead"
    )
    generate.add_argument("--months", type=float, default=24.0, help="history: months (24)")
    generate.add_argument(
        "--end", help="history: its end, ISO 8601 (default: the current hour, UTC)"
    )
    generate.add_argument("--out", help="history: the JSON-lines file to write")
    generate.set_defaults(func=_cmd_generate)


def _add_import(sub: Any) -> None:
    """``segmenter import``."""
    imports = sub.add_parser(
        "import", help="load history into the live namespace, in event time, quietly"
    )
    imports.add_argument("sources", nargs="+", metavar="SOURCE", help="files, globs, or - (stdin)")
    imports.add_argument(
        "--map",
        action="append",
        metavar="TARGET=COLUMN,...",
        help='CSV/Parquet columns, e.g. customer_id=Customer,time=Date,event="Order Completed"',
    )
    imports.add_argument(
        "--format", choices=["jsonl", "csv", "parquet"], help="when the file name does not say"
    )
    imports.add_argument(
        "--emit-history",
        action="store_true",
        help="publish every historical migration (for analytics) instead of one per change",
    )
    imports.add_argument("--json", action="store_true", help="one JSON object on stdout")
    imports.add_argument(
        "--rejects",
        default="segmenter-import.rejects",
        metavar="FILE",
        help="where rejected rows go, file:line: message (default segmenter-import.rejects)",
    )
    imports.add_argument(
        "--allow-late",
        action="store_true",
        help="apply history older than the namespace's clock under the late-event policy",
    )
    imports.add_argument("--jobs", type=int, default=1, help="processes sharing the work (1)")
    imports.add_argument("--batch", type=int, default=2000, help="events per commit (2000)")
    imports.add_argument(
        "--sort-run", type=int, default=200_000, help="events sorted in memory at once (200000)"
    )
    imports.set_defaults(func=_cmd_import)


def _add_erase(sub: Any) -> None:
    """``segmenter erase``."""
    erase = sub.add_parser("erase", help="forget a customer: profile, aliases, memberships")
    erase.add_argument("customer_id")
    erase.set_defaults(func=_cmd_erase)


def _add_redis_layout(sub: Any) -> None:
    """``segmenter redis-layout``."""
    layout = sub.add_parser(
        "redis-layout", help="move the namespace's Redis keys to the other layout (docs/scaling.md)"
    )
    layout_sub = layout.add_subparsers(dest="layout_command", required=True)
    migrate = layout_sub.add_parser(
        "migrate", help="copy every key into the single or partitioned layout (stop workers first)"
    )
    migrate.add_argument(
        "--to",
        required=True,
        choices=["single", "partitioned"],
        help="partitioned: one key group per input partition (SEGMENTER_INPUT_PARTITIONS)",
    )
    migrate.set_defaults(func=_cmd_redis_layout)


def register(sub: Any) -> None:
    """Add this module's commands to ``segmenter``'s subparsers."""
    _add_replay(sub)
    _add_generate(sub)
    _add_import(sub)
    _add_erase(sub)
    _add_redis_layout(sub)
