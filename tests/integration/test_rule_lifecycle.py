"""Rule lifecycle with a real worker: `rules apply` backfills with progress; hot reload."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.integration.harness import (
    TEST_RULES,
    Deployment,
    consume_until,
    keyed,
    order,
    produce,
    write_rules,
)

pytestmark = pytest.mark.integration


def kinds(records) -> list[tuple[str, str, str, str]]:  # type: ignore[no-untyped-def]
    out = []
    for record in records:
        data = orjson.loads(record.value)
        out.append(
            (data["customer_id"], data["segment"], data["direction"], data["trigger"]["kind"])
        )
    return out


async def test_rules_apply_backfills_while_events_keep_flowing(
    deployment: Deployment, tmp_path: Path
) -> None:
    await deployment.create_topics()
    worker = deployment.worker()
    customers = [f"r{n}" for n in range(60)]
    try:
        await produce(
            deployment.kafka,
            deployment.input,
            keyed([order(f"{c}-1", c, 600.0) for c in customers]),
        )
        await consume_until(
            deployment.kafka,
            deployment.migrations,
            lambda r: len(r) >= len(customers),
            worker=worker,
        )
        lower = {
            **TEST_RULES,
            "value.yaml": TEST_RULES["value.yaml"].replace("value: 1000", "value: 500"),
        }
        v2 = write_rules(tmp_path / "v2", lower)
        apply = subprocess.Popen(
            [sys.executable, "-m", "streams", "rules", "apply", str(v2), "--wait", "60"],
            env=deployment.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        late = [f"late{n}" for n in range(30)]
        await produce(
            deployment.kafka, deployment.input, keyed([order(f"{c}-1", c, 50.0) for c in late])
        )
        out, err = await asyncio.to_thread(apply.communicate, timeout=120)
        assert apply.returncode == 0, err
        assert "published rule_version=" in out and "backfill complete" in out
        finished = re.findall(r"\[#{30}\] (\d+)/(\d+) customers", err)
        assert finished and finished[-1][0] == finished[-1][1], err
        assert int(finished[-1][1]) >= len(customers)
        got = await consume_until(
            deployment.kafka,
            deployment.migrations,
            lambda r: (
                sum(1 for k in kinds(r) if k[3] == "rule_change") >= 2 * len(customers)
                and sum(1 for k in kinds(r) if k[0].startswith("late")) >= len(late)
            ),
            worker=worker,
            timeout=90,
            settle=1.0,
        )
        changes = [k for k in kinds(got) if k[3] == "rule_change"]
        assert sorted((c, s, d) for c, s, d, _ in changes) == sorted(
            [(c, "buyer", "exited") for c in customers]
            + [(c, "big_spender", "entered") for c in customers]
        )
        assert {k[0] for k in kinds(got) if k[0].startswith("late")} == set(late), "no event lost"
    finally:
        worker.stop()


async def test_a_changed_rule_file_is_hot_reloaded(deployment: Deployment) -> None:
    await deployment.create_topics()
    worker = deployment.worker()
    try:
        await produce(deployment.kafka, deployment.input, keyed([order("h-1", "hot", 300.0)]))
        await consume_until(
            deployment.kafka, deployment.migrations, lambda r: len(r) >= 1, worker=worker
        )
        (deployment.rules / "modest.yaml").write_text(
            "id: modest\nname: Modest\ndescription: spent 200 or more\nkind: value\n"
            "condition: {type: lifetime, metric: revenue, op: ge, value: 200}\n"
        )
        got = await consume_until(
            deployment.kafka,
            deployment.migrations,
            lambda r: ("hot", "modest", "entered", "rule_change") in kinds(r),
            worker=worker,
            timeout=60,
        )
        data = [orjson.loads(r.value) for r in got if b'"modest"' in r.value]
        assert data[0]["rule_version"] != orjson.loads(got[0].value)["rule_version"]
    finally:
        worker.stop()
