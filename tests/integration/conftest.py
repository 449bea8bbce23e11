"""Fixtures of the integration tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.harness import Deployment, write_rules


@pytest.fixture
def deployment(
    kafka_bootstrap: str, redis_url: str, topic_prefix: str, tmp_path: Path
) -> Deployment:
    """A pipeline of this test's own: topics, namespace, group and the test rule pack."""
    return Deployment(kafka_bootstrap, redis_url, topic_prefix, write_rules(tmp_path / "rules"))
