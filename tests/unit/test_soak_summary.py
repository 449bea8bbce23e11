"""The soak's verdict from its samples, against figures worked out by hand."""

from __future__ import annotations

from streams.stack.soak import Sample, summary


def sample(minute: float, cpu: float, rss: float, held: int, pid: int) -> Sample:
    return Sample(minute, cpu, rss, 10.0, 2.0, held, pid)


def test_a_sawtooth_compares_its_last_five_minutes_with_its_first_five() -> None:
    # 12 minutes: the broker grows for 6 minutes, then a new generation starts over
    cpu = [8, 10, 12, 14, 16, 18, 8, 10, 12, 14, 16, 18]
    samples = [
        sample(m + 1, c, 20.0 + 4 * (m % 6), 1000 * (m % 6 + 1), 1 + m // 6)
        for m, c in enumerate(cpu)
    ]
    verdict = summary(samples)
    assert verdict["broker_cpu_first_pct"] == (8 + 10 + 12 + 14 + 16) / 5  # minutes 1-5
    assert verdict["broker_cpu_last_pct"] == (10 + 12 + 14 + 16 + 18) / 5  # minutes 8-12
    assert verdict["broker_cpu_ratio"] == round(14 / 12, 3)
    assert verdict["broker_cpu_max_pct"] == 18
    assert verdict["broker_generations"] == 2
    assert verdict["records_held_max"] == 6000 and verdict["broker_rss_mb_max"] == 40.0


def test_a_short_run_compares_its_first_and_last_fifths() -> None:
    samples = [sample(0.5 * (i + 1), 10.0 + i, 20.0, 100 * i, 7) for i in range(10)]
    verdict = summary(samples)
    assert verdict["broker_cpu_first_pct"] == 10.5  # samples 1-2
    assert verdict["broker_cpu_last_pct"] == 18.5  # samples 9-10
    assert verdict["broker_generations"] == 1
