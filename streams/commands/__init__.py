"""The ``segmenter`` commands, a module per area, each with a ``register(sub)`` that adds its
parsers and handlers (see :func:`streams.cli.build_parser`)."""

from streams.commands import bench, data, look, models, rules, stack

REGISTERS = (
    stack.register,
    rules.register,
    data.register,
    look.register,
    models.register,
    bench.register,
)
"""In the order ``segmenter --help`` lists the commands."""
