"""The ``segmenter`` command line (also ``python -m streams``).

Each command imports what it needs when it runs, so ``segmenter --help`` stays fast and importing
this module has no side effects.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

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


def _cmd_explain(args: argparse.Namespace, settings: Settings) -> int:
    from streams.explain import run_explain

    return run_explain(settings, args.customer_id)


def _cmd_rfm(args: argparse.Namespace, settings: Settings) -> int:
    from streams.rules_apply import run_rfm_refresh

    return run_rfm_refresh(settings)


def _cmd_erase(args: argparse.Namespace, settings: Settings) -> int:
    from streams.erase import run_erase

    return run_erase(settings, args.customer_id)


def _cmd_soak(args: argparse.Namespace, settings: Settings) -> int:
    from streams.stack.soak import run_soak

    return run_soak(settings, args.minutes, args.rate, args.sample_s, args.json)


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


def _cmd_redis_layout(args: argparse.Namespace, settings: Settings) -> int:
    from streams.stack.discovery import with_running_stack
    from streams.store.relayout import run_relayout

    return run_relayout(with_running_stack(settings), args.to)


def _cmd_model(args: argparse.Namespace, settings: Settings) -> int:
    from streams.models.fit_command import run_model_fit, run_model_publish

    if args.model_command == "publish":
        return run_model_publish(settings, args.file)
    return run_model_fit(settings, args.calibration_end, args.json)


def _cmd_discover(args: argparse.Namespace, settings: Settings) -> int:
    from streams.models.discover_command import run_discover

    return run_discover(settings, Path(args.out), args.k, args.seed, args.json)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    parser = argparse.ArgumentParser(
        prog="segmenter",
        description="Real-time customer segmentation: Segment-spec events in, migrations out.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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

    worker = sub.add_parser("worker", help="one stream-processing worker")
    worker.set_defaults(func=_cmd_worker)

    api = sub.add_parser("api", help="the HTTP API and dashboard alone (reads Redis)")
    api.set_defaults(func=_cmd_api)

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

    explain = sub.add_parser("explain", help="a customer's state, segments and why")
    explain.add_argument("customer_id")
    explain.set_defaults(func=_cmd_explain)

    rfm = sub.add_parser("rfm", help="RFM boundaries")
    rfm_sub = rfm.add_subparsers(dest="rfm_command", required=True, metavar="SUBCOMMAND")
    rfm_sub.add_parser("refresh", help="recompute the live RFM quintile boundaries now")
    rfm.set_defaults(func=_cmd_rfm)

    erase = sub.add_parser("erase", help="forget a customer: profile, aliases, memberships")
    erase.add_argument("customer_id")
    erase.set_defaults(func=_cmd_erase)

    deliver = sub.add_parser("deliver", help="send migrations to the configured destinations")
    deliver.add_argument(
        "--destinations", metavar="DIR", help="destination files (default SEGMENTER_DESTINATIONS)"
    )
    deliver.set_defaults(func=_cmd_deliver)

    destinations = sub.add_parser("destinations", help="check destination files")
    dest_sub = destinations.add_subparsers(
        dest="destinations_command", required=True, metavar="SUBCOMMAND"
    )
    dest_check = dest_sub.add_parser("check", help="validate destination files (exit 1 on error)")
    dest_check.add_argument("dir", nargs="?", help="directory (default SEGMENTER_DESTINATIONS)")
    destinations.set_defaults(func=_cmd_destinations)

    send = sub.add_parser("send", help="send events (JSON) onto the input topic")
    send.add_argument(
        "event",
        nargs="?",
        help="one event as JSON; without it (or with -), JSON lines from stdin",
    )
    send.set_defaults(func=_cmd_send)

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

    report = sub.add_parser(
        "report", help="every segment: size, share, growth, reach, overlap, performance, flags"
    )
    report.add_argument("--json", action="store_true", help="one JSON object")
    report.add_argument(
        "--window", help="performance window, e.g. 30d (default SEGMENTER_REPORT_WINDOW_DAYS)"
    )
    report.set_defaults(func=_cmd_report)

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

    model = sub.add_parser("model", help="customer-base models (BG/NBD and Gamma-Gamma)")
    model_sub = model.add_subparsers(dest="model_command", required=True, metavar="SUBCOMMAND")
    fit = model_sub.add_parser("fit", help="fit on the stored customers and publish")
    fit.add_argument(
        "--calibration-end",
        metavar="DATE",
        help="fit on the history before DATE and compare predictions with what followed",
    )
    fit.add_argument("--json", action="store_true", help="one JSON object")
    publish = model_sub.add_parser("publish", help="make a fit from a JSON file the current one")
    publish.add_argument("file", help="a `model fit --json` output, or GET /v1/models")
    model.set_defaults(func=_cmd_model)

    discover = sub.add_parser(
        "discover", help="cluster customers and write one draft rule file per cluster"
    )
    discover.add_argument("--out", required=True, help="directory for the draft rule files")
    discover.add_argument("--k", type=int, help="clusters (default: best silhouette in 4..8)")
    discover.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    discover.add_argument("--json", action="store_true", help="the summary as JSON")
    discover.set_defaults(func=_cmd_discover)

    soak = sub.add_parser(
        "soak", help="the embedded stack under steady traffic: broker CPU and memory over time"
    )
    soak.add_argument("--minutes", type=float, default=10.0, help="how long (default 10)")
    soak.add_argument("--rate", type=float, default=50.0, help="events/s (default 50)")
    soak.add_argument("--sample-s", type=float, default=60.0, help="seconds between samples")
    soak.add_argument("--json", action="store_true", help="one JSON object at the end")
    soak.set_defaults(func=_cmd_soak)
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``segmenter`` script."""
    args = build_parser().parse_args(argv)
    try:
        settings = Settings()
    except Exception as exc:  # pydantic.ValidationError: bad environment
        print(f"segmenter: bad configuration: {exc}", file=sys.stderr)
        return 2
    code: int = args.func(args, settings)
    return code
