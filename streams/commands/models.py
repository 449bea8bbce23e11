"""Commands about customer-base models: ``model fit|publish`` and ``discover``.

Each command imports what it needs when it runs (``segmenter --help`` stays fast)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from streams.settings import Settings


def _cmd_model(args: argparse.Namespace, settings: Settings) -> int:
    from streams.models.fit_command import run_model_fit, run_model_publish

    if args.model_command == "publish":
        return run_model_publish(settings, args.file)
    return run_model_fit(settings, args.calibration_end, args.json)


def _cmd_discover(args: argparse.Namespace, settings: Settings) -> int:
    from streams.models.discover_command import run_discover

    return run_discover(settings, Path(args.out), args.k, args.seed, args.json)


def _add_model(sub: Any) -> None:
    """``segmenter model``."""
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


def _add_discover(sub: Any) -> None:
    """``segmenter discover``."""
    discover = sub.add_parser(
        "discover", help="cluster customers and write one draft rule file per cluster"
    )
    discover.add_argument("--out", required=True, help="directory for the draft rule files")
    discover.add_argument("--k", type=int, help="clusters (default: best silhouette in 4..8)")
    discover.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    discover.add_argument("--json", action="store_true", help="the summary as JSON")
    discover.set_defaults(func=_cmd_discover)


def register(sub: Any) -> None:
    """Add this module's commands to ``segmenter``'s subparsers."""
    _add_model(sub)
    _add_discover(sub)
