"""The ``segmenter`` command line (also ``python -m streams``).

Each command imports what it needs when it runs, so ``segmenter --help`` stays fast and importing
this module has no side effects.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from streams.settings import Settings


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    from streams.commands import REGISTERS

    parser = argparse.ArgumentParser(
        prog="segmenter",
        description="Real-time customer segmentation: Segment-spec events in, migrations out.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in REGISTERS:
        register(sub)
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
