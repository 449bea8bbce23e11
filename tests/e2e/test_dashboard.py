"""The dashboard in headless Chromium against the whole stack, started as ``make run`` starts it.

Start ``up`` with the arguments of the Makefile's ``run`` target (a year of imported history,
fitted models, live synthetic traffic) in a scratch directory, wait for ``.segmenter/stack.json``,
open ``/`` in headless Chromium driven over the DevTools protocol (a websocket), wait until the
page reports ``data-ready="1"``, check that every chart drew SVG elements from live data, and
save a screenshot to ``tests/e2e/artifacts/dashboard.png``.

Needs the Debian packages ``chromium`` (and ``chromium-driver``). Without them the test is
skipped, except under CI (``CI`` set), where it fails.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests.e2e.browser import Browser, open_page
from tests.e2e.stack import UpStack, up_stacks, user_env

pytestmark = pytest.mark.e2e
__all__ = ["up_stacks"]  # the fixture

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "tests" / "e2e" / "artifacts"
MODEL = {
    "fitted_at": "2026-01-01T00:00:00Z",
    "customers": 1000,
    "repeat_customers": 300,
    "unit": "days",
    "conversion_event": "Order Completed",
    "bgnbd": {"r": 0.6, "alpha": 25.0, "a": 0.8, "b": 2.5},
    "gamma_gamma": {"p": 6.0, "q": 4.0, "v": 15.0},
}
"""A model document the test publishes with `segmenter model publish`."""
STACK_DIR: list[Path] = []
"""The running stack's working directory (where `segmenter` commands find it; it also holds
``model.json``, a model document the test publishes with `segmenter model publish`)."""
PAGE_TIMEOUT_S = 90.0


def make_run_args() -> list[str]:
    """The arguments ``make run`` gives ``segmenter up`` (read from the Makefile: the test runs
    what a user runs)."""
    found = re.search(
        r"^run:.*\n\t\$\(BIN\)/segmenter up (.*)$", (REPO / "Makefile").read_text(), re.M
    )
    assert found, "the Makefile's run target no longer calls segmenter up"
    return found.group(1).split()


@pytest.fixture
def stack(tmp_path: Path, up_stacks: list[UpStack]) -> Iterator[str]:
    """``segmenter up`` as ``make run`` starts it, in ``tmp_path``; yields the HTTP URL.

    With an audience-file destination in ``destinations/``, so ``up`` runs the deliverer too.
    """
    (tmp_path / "destinations").mkdir()
    (tmp_path / "destinations" / "ads.yaml").write_text(
        f"id: ads\ntype: audience_file\ndirectory: {tmp_path / 'audiences'}\n"
        "kinds: [value, lifecycle]\nbatch: {max_records: 200, linger_ms: 200}\n"
    )
    running = UpStack(tmp_path, user_env(), *make_run_args()).wait_ready()
    STACK_DIR[:] = [tmp_path]
    (tmp_path / "model.json").write_bytes(orjson.dumps(MODEL))
    yield running.http_url
    running.stop(signal.SIGTERM)


STATE_JS = """JSON.stringify({
  ready: document.body.dataset.ready,
  lines: document.querySelectorAll('#sizes path.series').length,
  links: document.querySelectorAll('#sankey path.link').length,
  sankeyEmpty: document.querySelectorAll('#sankey text.empty').length,
  cells: document.querySelectorAll('#rfm rect.cell').length,
  filledCells: [...document.querySelectorAll('#rfm rect.cell title')].filter(
    t => !t.textContent.endsWith(': 0 customers')).length,
  rfmScored: Number(document.body.dataset.rfmScored || 0),
  matrixTotal: Number(document.body.dataset.matrixTotal || 0),
  rows: document.querySelectorAll('#sizetable tbody tr').length,
  sizes: [...document.querySelectorAll('#sizetable td.num')].map(td => td.textContent),
  explained: document.body.dataset.explained || '',
  explainRows: document.querySelectorAll('#customer tbody tr').length,
  destinations: [...document.querySelectorAll('#desttable tbody tr')].map(
    tr => [...tr.querySelectorAll('td')].map(td => td.textContent)),
  historyLines: document.querySelectorAll('#history path.series').length,
  historyPoints: Number(document.body.dataset.historyPoints || 0),
  overlapCells: document.querySelectorAll('#overlap rect.cell').length,
  predBars: document.querySelectorAll('#predictions rect.bar').length,
  predMeta: document.getElementById('predmeta').textContent,
  predCounted: Number(document.body.dataset.predCounted || 0),
})"""

REPORT_JS = """JSON.stringify({
  ready: document.body.dataset.ready,
  review: document.querySelectorAll('#review tbody tr').length,
  perf: document.querySelectorAll('#perf tbody tr').length,
  sizes: [...document.querySelectorAll('#review tbody tr')].map(tr => tr.children[1].textContent),
  reach: [...document.querySelectorAll('#review tbody tr')].map(tr => tr.children[6].textContent),
})"""


async def wait_for(browser: Browser, check: Any, timeout: float) -> dict[str, Any]:
    return await browser.wait_json(STATE_JS, check, timeout, what="dashboard")


async def first_member(url: str) -> str:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/v1/segments") as response:
            segments = (await response.json())["segments"]
        biggest = max(segments, key=lambda s: s["size"])
        async with session.get(f"{url}/v1/segments/{biggest['id']}/members?limit=1") as response:
            return str((await response.json())["members"][0])


def demo_lines(up: UpStack) -> str:
    """What ``up`` said of its demo history (generation, import, fit): why a card is empty."""
    lines = up.output().splitlines()
    wanted = (
        "segmenter up:",
        "segmenter import:",
        "segmenter model fit:",
        "imported ",
        "fitted on ",
    )
    return "\n".join(line for line in lines if line.startswith(wanted))[-3000:]


def charts_drawn(s: dict[str, Any]) -> bool:
    """Sizes, their lines, the RFM grid and the flow diagram (or its empty note) are drawn."""
    has_sizes = any(v not in ("0", "") for v in s["sizes"])
    sankey_ok = s["links"] > 0 or (s["matrixTotal"] == 0 and s["sankeyEmpty"] == 1)
    return bool(
        s["ready"] == "1"
        and s["lines"] > 0
        and has_sizes
        and s["cells"] == 25
        and s["rfmScored"] > 0
        and sankey_ok
    )


async def show_predictions(browser: Browser) -> dict[str, Any]:
    """Pick the buyers' segment in the predictions card; its state once the bins are drawn."""
    await browser.evaluate(
        "document.getElementById('predseg').value = 'predicted_low'; refreshPredictions(); 1"
    )
    return await wait_for(browser, lambda s: s["predBars"] == 10 and s["predCounted"] > 0, 40)


async def screenshot(browser: Browser, name: str) -> None:
    """The whole page as ``ARTIFACTS/<name>``."""
    shot = await browser.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / name).write_bytes(base64.b64decode(shot["data"]))


async def check_overview(browser: Browser, up: UpStack) -> None:
    """The charts, the imported year in the RFM grid, and the stack's own fit's predictions."""
    state = await wait_for(browser, charts_drawn, PAGE_TIMEOUT_S)
    assert state["rows"] > 0
    assert state["filledCells"] >= 10, state
    try:
        state = await show_predictions(browser)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nsegmenter up said:\n{demo_lines(up)}") from None
    if state["matrixTotal"] == 0:  # the worker may not record the matrix yet: wait a little
        with contextlib.suppress(AssertionError):
            await wait_for(browser, lambda s: s["links"] > 0, 20)


async def check_cards(browser: Browser, stack: str) -> None:
    """A customer's explanation, the destination's row, the size history and the overlaps."""
    customer = await first_member(stack)
    await browser.evaluate(
        f"document.getElementById('cid').value = {orjson.dumps(customer).decode()};"
        "document.querySelector('#search button').click(); 1"
    )
    state = await wait_for(browser, lambda s: s["explainRows"] > 0, 30)
    assert state["explained"] == customer

    state = await wait_for(
        browser,
        lambda s: len(s["destinations"]) == 1 and s["destinations"][0][1] not in ("0", ""),
        30,
    )
    assert state["destinations"][0][0] == "ads"

    state = await wait_for(browser, lambda s: s["historyLines"] == 1 and s["overlapCells"] >= 4, 40)
    assert state["historyPoints"] >= 1


async def check_published_model(browser: Browser) -> None:
    """Publish a model as a user would (``segmenter model publish``); the card draws it."""
    published = subprocess.run(
        [sys.executable, "-m", "streams", "model", "publish", "model.json"],
        cwd=STACK_DIR[0],
        env={k: v for k, v in os.environ.items() if not k.startswith("SEGMENTER_")},
        capture_output=True,
        timeout=60,
    )
    assert published.returncode == 0, published.stderr.decode()
    # A segment of buyers: its members fall into the P(alive) bins.
    state = await show_predictions(browser)
    assert "members sampled" in state["predMeta"]

    await browser.evaluate("window.scrollTo(0, 0); 1")
    await screenshot(browser, "dashboard.png")
    assert state["links"] > 0, f"no migrations drawn in the Sankey diagram: {state}"


async def check_report(browser: Browser, stack: str) -> None:
    """The report page: the review and performance tables, sizes, and reach."""
    await browser.call("Page.navigate", url=f"{stack}/report")
    report = await browser.wait_json(
        REPORT_JS, lambda r: r.get("ready") == "1", PAGE_TIMEOUT_S, what="report"
    )
    assert report["review"] > 0 and report["perf"] > 0
    assert any(size not in ("0", "") for size in report["sizes"])
    reached = [r for r in report["reach"] if r not in ("", "—", "0%")]
    assert len(reached) >= len(report["reach"]) // 2, f"consented members reach: {report}"
    await screenshot(browser, "report.png")


async def test_dashboard_renders_live_data(
    stack: str, tmp_path: Path, up_stacks: list[UpStack]
) -> None:
    browser = await open_page(tmp_path, f"{stack}/")
    try:
        await check_overview(browser, up_stacks[-1])
        await check_cards(browser, stack)
        await check_published_model(browser)
        await check_report(browser, stack)
    finally:
        await browser.close()
