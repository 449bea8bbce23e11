"""Commands that run the segmenter: ``up``, ``worker``, ``api``, ``deliver``,
``destinations``, ``soak``.

Each command imports what it needs when it runs (``segmenter --help`` stays fast)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from streams.settings import Settings


def _cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    from streams.stack.up import run_up

    if args.data_dir is not None:
        settings = settings.model_copy(update={"data_dir": args.data_dir})
    return run_up(
        settings,
        generate_rate=args.generate,
        customers=args.customers,
        fresh=args.fresh,
        history_months=args.history,
    )


def _cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from streams.pipeline.worker import run_worker

    return run_worker(settings)


def _cmd_api(args: argparse.Namespace, settings: Settings) -> int:
    from streams.api.server import run_api

    return run_api(settings)


def _cmd_soak(args: argparse.Namespace, settings: Settings) -> int:
    from streams.stack.soak import run_soak

    return run_soak(settings, args.minutes, args.rate, args.sample_s, args.json)


def _cmd_deliver(args: argparse.Namespace, settings: Settings) -> int:
    from streams.deliver.process import run_deliver

    return run_deliver(settings, Path(args.destinations) if args.destinations else None)


def _cmd_destinations(args: argparse.Namespace, settings: Settings) -> int:
    from streams.deliver.config import check_destinations
    from streams.engine import RuleLoadError, load_rules

    try:
        kinds = {info.id: info.kind for info in load_rules(settings.rules).segments}
    except RuleLoadError:
        kinds = None  # `rules check` reports those; the destination files are still checked
    directory = Path(args.dir) if args.dir else settings.destinations
    code, lines = check_destinations(directory, kinds)
    out = sys.stdout if code == 0 else sys.stderr
    for line in lines:
        print(line, file=out)
    return code


def _add_up(sub: Any) -> None:
    """``segmenter up``."""
    up = sub.add_parser("up", help="embedded stack: broker, Redis, worker, HTTP API and dashboard")
    up.add_argument("--generate", type=float, metavar="RATE", help="add synthetic events/s")
    up.add_argument(
        "--customers", type=int, default=1000, help="synthetic customers (default 1000)"
    )
    up.add_argument(
        "--data-dir",
        type=Path,
        help="where the embedded Redis keeps its data (default SEGMENTER_DATA_DIR, "
        ".segmenter/data)",
    )
    up.add_argument(
        "--fresh", action="store_true", help="start with empty data (removes what was kept)"
    )
    up.add_argument(
        "--history",
        type=float,
        metavar="MONTHS",
        help="on a first start, import MONTHS of synthetic history of the --customers and fit "
        "the models before going live (make run: 12)",
    )
    up.set_defaults(func=_cmd_up)


def _add_worker(sub: Any) -> None:
    """``segmenter worker``."""
    worker = sub.add_parser("worker", help="one stream-processing worker")
    worker.set_defaults(func=_cmd_worker)


def _add_api(sub: Any) -> None:
    """``segmenter api``."""
    api = sub.add_parser("api", help="the HTTP API and dashboard alone (reads Redis)")
    api.set_defaults(func=_cmd_api)


def _add_soak(sub: Any) -> None:
    """``segmenter soak``."""
    soak = sub.add_parser(
        "soak", help="the embedded stack under steady traffic: broker CPU and memory over time"
    )
    soak.add_argument("--minutes", type=float, default=10.0, help="how long (default 10)")
    soak.add_argument("--rate", type=float, default=50.0, help="events/s (default 50)")
    soak.add_argument("--sample-s", type=float, default=60.0, help="seconds between samples")
    soak.add_argument("--json", action="store_true", help="one JSON object at the end")
    soak.set_defaults(func=_cmd_soak)


def _add_deliver(sub: Any) -> None:
    """``segmenter deliver``."""
    deliver = sub.add_parser("deliver", help="send migrations to the configured destinations")
    deliver.add_argument(
        "--destinations", metavar="DIR", help="destination files (default SEGMENTER_DESTINATIONS)"
    )
    deliver.set_defaults(func=_cmd_deliver)


def _add_destinations(sub: Any) -> None:
    """``segmenter destinations``."""
    destinations = sub.add_parser("destinations", help="check destination files")
    dest_sub = destinations.add_subparsers(
        dest="destinations_command", required=True, metavar="SUBCOMMAND"
    )
    dest_check = dest_sub.add_parser("check", help="validate destination files (exit 1 on error)")
    dest_check.add_argument("dir", nargs="?", help="directory (default SEGMENTER_DESTINATIONS)")
    destinations.set_defaults(func=_cmd_destinations)


def register(sub: Any) -> None:
    """Add this module's commands to ``segmenter``'s subparsers."""
    _add_up(sub)
    _add_worker(sub)
    _add_api(sub)
    _add_soak(sub)
    _add_deliver(sub)
    _add_destinations(sub)
