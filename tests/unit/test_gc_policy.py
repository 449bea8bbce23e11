"""The worker's garbage-collector policy: start-up objects frozen, young collections rarer."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from streams.pipeline.gc_policy import quiet_collector
from streams.settings import Settings


@pytest.fixture
def restored_collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_collector")
def test_quiet_collector_freezes_what_lives_and_raises_the_young_threshold() -> None:
    gc.unfreeze()
    quiet_collector(Settings().gc_young_threshold)
    assert gc.get_threshold() == (50_000, 10, 10)
    assert gc.get_freeze_count() > 1_000  # the modules imported so far, at least


@pytest.mark.usefixtures("restored_collector")
def test_zero_leaves_pythons_collector_alone() -> None:
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    quiet_collector(0)
    assert gc.get_threshold() == (700, 10, 10)
    assert gc.get_freeze_count() == 0
