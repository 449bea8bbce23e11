"""``GET /metrics``: the worker's counters in the Prometheus text exposition format (0.0.4)."""

from __future__ import annotations

from collections.abc import Mapping

from streams.pipeline.metrics import Metrics

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.6f}"


class Exposition:
    """Builds the text: one ``# HELP``/``# TYPE`` block per metric family."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(
        self,
        name: str,
        kind: str,
        help_text: str,
        samples: list[tuple[Mapping[str, str], float]],
    ) -> None:
        """A metric family with its samples (labels, value)."""
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            rendered = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            self.lines.append(
                f"{name}{{{rendered}}} {_number(value)}" if rendered else f"{name} {_number(value)}"
            )

    def single(self, name: str, kind: str, help_text: str, value: float) -> None:
        """A metric family with one unlabelled sample."""
        self.family(name, kind, help_text, [({}, value)])

    def text(self) -> str:
        """The exposition, newline-terminated."""
        return "\n".join(self.lines) + "\n"


_COUNTERS = (
    ("segmenter_events_total", "counter", "Input events applied", "events"),
    ("segmenter_batches_total", "counter", "Batches committed", "batches"),
    ("segmenter_dlq_total", "counter", "Messages sent to the DLQ", "dlq"),
    ("segmenter_duplicates_total", "counter", "Duplicate messageIds", "duplicates"),
    ("segmenter_redelivered_total", "counter", "Redelivered records", "redelivered"),
    ("segmenter_rerouted_total", "counter", "Events re-sent to their partition", "forwarded"),
    ("segmenter_late_events_total", "counter", "Events beyond lateness", "late"),
    ("segmenter_timers_fired_total", "counter", "Timers fired", "timers_fired"),
    (
        "segmenter_state_cache_hits_total",
        "counter",
        "Customer states taken from the worker's state cache",
        "state_cache_hits",
    ),
    (
        "segmenter_state_cache_misses_total",
        "counter",
        "Customer states read from Redis",
        "state_cache_misses",
    ),
    (
        "segmenter_quarantined_total",
        "counter",
        "Customers whose processing failed in a batch (their events went to the DLQ)",
        "quarantined",
    ),
    (
        "segmenter_unreadable_states_total",
        "counter",
        "Stored customer states that could not be read (skipped by shared views)",
        "unreadable_states",
    ),
    (
        "segmenter_timer_delay_max_seconds",
        "gauge",
        "Largest delay between a timer's due time and its firing",
        "timer_lateness_max",
    ),
    (
        "segmenter_rule_eval_seconds_total",
        "counter",
        "Time spent evaluating rules",
        "eval_seconds",
    ),
)
"""The worker's single-valued metrics: name, type, help, :class:`Metrics` field."""


def render(
    m: Metrics,
    segment_sizes: Mapping[str, int],
    segment_ids: list[str],
    lag: Mapping[int, int] | None,
    up: bool,
    delivery: Mapping[str, Mapping[str, float]] | None = None,
) -> str:
    """Every metric of one worker.

    Rates (events per second) are derived by Prometheus: ``rate(segmenter_events_total[1m])``.
    """
    out = Exposition()
    out.single("segmenter_up", "gauge", "1 when the store answers and the worker runs", up)
    for name, kind, help_text, field in _COUNTERS:
        out.single(name, kind, help_text, getattr(m, field))
    out.family(
        "segmenter_migrations_total",
        "counter",
        "Migration events by segment, direction and trigger kind",
        [
            ({"segment": s, "direction": d, "trigger": t}, count)
            for (s, d, t), count in sorted(m.migrations_by.items())
        ],
    )
    out.family(
        "segmenter_segment_size",
        "gauge",
        "Live member count of each segment",
        [({"segment": sid}, segment_sizes.get(sid, 0)) for sid in segment_ids],
    )
    if lag is not None:
        out.family(
            "segmenter_consumer_lag",
            "gauge",
            "Records behind the end of each assigned input partition",
            [({"partition": str(p)}, n) for p, n in sorted(lag.items())],
        )
    if delivery:
        _delivery(out, delivery)
    return out.text()


_DELIVERY = (
    ("delivered", "counter", "Migrations delivered to each destination"),
    ("retried", "counter", "Requests to each destination that failed and were tried again"),
    ("dead_lettered", "counter", "Migrations sent to each destination's dead-letter topic"),
    ("requests", "counter", "Requests made to each destination (every attempt)"),
    ("lag", "gauge", "Migrations each destination has not yet delivered or dead-lettered"),
)


def _delivery(out: Exposition, delivery: Mapping[str, Mapping[str, float]]) -> None:
    """``segmenter_delivery_*``: one family per figure, one sample per destination."""
    ordered = sorted(delivery.items())
    for figure, kind, help_text in _DELIVERY:
        suffix = "_total" if kind == "counter" else ""
        out.family(
            f"segmenter_delivery_{figure}{suffix}",
            kind,
            help_text,
            [({"destination": d}, values.get(figure, 0.0)) for d, values in ordered],
        )
