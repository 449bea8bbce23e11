"""``python -m streams``: the same as the ``segmenter`` command."""

from streams.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
