"""``segmenter bench``: the performance harness.

Each command imports what it needs when it runs (``segmenter --help`` stays fast)."""

from __future__ import annotations

import argparse
from typing import Any

from streams.settings import Settings


def _cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    from streams.bench import Phases, run_bench

    return run_bench(
        settings,
        as_json=args.json,
        events=args.events,
        customers=args.customers,
        rate=args.rate,
        seconds=args.seconds,
        api_rate=args.api_rate,
        workers=args.workers,
        visitors=args.visitors,
        phases=Phases(
            peer=args.peer,
            deliver=args.deliver,
            cluster=args.redis_cluster,
            collect=args.collect,
            import_jobs=args.import_jobs if args.history_import else 0,
            history=args.history,
        ),
    )


def _add_bench(sub: Any) -> None:
    """``segmenter bench``."""
    bench = sub.add_parser("bench", help="the performance harness")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.add_argument(
        "--events", type=int, default=100_000, help="events for (a) and (b) (default 100000)"
    )
    bench.add_argument(
        "--customers", type=int, default=100_000, help="synthetic customers (default 100000)"
    )
    bench.add_argument(
        "--rate", type=float, default=1000.0, help="events/s of the latency phase (default 1000)"
    )
    bench.add_argument(
        "--seconds", type=float, default=10.0, help="length of the latency phase (default 10)"
    )
    bench.add_argument(
        "--api-rate", type=float, default=500.0, help="API lookups/s during it (default 500)"
    )
    bench.add_argument(
        "--workers", type=int, default=1, help="workers sharing the input in (b)-(f) (default 1)"
    )
    bench.add_argument(
        "--peer",
        action="store_true",
        help="add (g): a plain Quix Streams app on the same events (the 'bench' extra)",
    )
    bench.add_argument(
        "--deliver",
        action="store_true",
        help="add (h): migrations through `segmenter deliver` to a local webhook receiver",
    )
    bench.add_argument(
        "--redis-cluster",
        action="store_true",
        help="add (i): 2 workers on the partitioned layout over a 1- and a 3-master Redis Cluster",
    )
    bench.add_argument(
        "--visitors",
        type=int,
        nargs="?",
        const=10_000,
        default=0,
        metavar="N",
        help="add (j): N open visitor streams (default 10000), events for a sample at 200/s",
    )
    bench.add_argument(
        "--collect",
        action="store_true",
        help="add (k): the HTTP collector of one `segmenter api` process, batches of 100",
    )
    bench.add_argument(
        "--import",
        dest="history_import",
        action="store_true",
        help="add (l): segmenter import of a generated two-year history of 1,000 customers",
    )
    bench.add_argument(
        "--import-jobs", type=int, default=2, help="(l): processes sharing the import (2)"
    )
    bench.add_argument(
        "--history",
        type=int,
        nargs="?",
        const=20_000,
        default=0,
        metavar="N",
        help="add (m): a shop-shaped history of N customers (default 20000) over 18 months in"
        " event time, through the worker and (with --peer) the Quix Streams peer",
    )
    bench.set_defaults(func=_cmd_bench)


def register(sub: Any) -> None:
    """Add this module's commands to ``segmenter``'s subparsers."""
    _add_bench(sub)
