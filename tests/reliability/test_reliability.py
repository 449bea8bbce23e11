"""The full reliability run (``make test-reliability``; parameters: ``RELIABILITY_*``)."""

from __future__ import annotations

import pytest

from tests.reliability.run_reliability import Config, describe, run

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]


async def test_reliability_under_kills_and_a_redis_crash() -> None:
    result = await run(Config.from_env(), log=lambda line: print(line, flush=True))
    print(describe(result))
    print(result.summary, flush=True)
    assert result.lost == 0, describe(result)
    assert result.duplicates_after_dedupe == 0, describe(result)
    assert result.dlq == result.malformed, describe(result)
    assert result.memberships_equal, describe(result)
    assert not result.order_mismatches, describe(result)
    assert result.value_mismatches == 0, describe(result)
    assert not result.sequence_gaps, describe(result)
    assert result.kills >= 1 and result.redis_restarts == 1, describe(result)
