"""The console end to end in headless Chromium: log in, see every card, place and release a hold.

Drives Chromium over the DevTools protocol as tests/liveview/test_liveview_browser.py
does (its ``chromium`` and ``Cdp``); screenshots land in the test's tmp dir.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.recording.packethub import PacketHub
from tests.support.browser import CHROMIUM, Cdp, chromium
from tests.support.console_fake import HOSTILE, TOKEN, FakeData, console_server, live_hub

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium)"
)

UNTIL = """
window.until = async (check, ms = 15000) => {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const v = check();
    if (v) return v;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('timed out: ' + check);
};
true
"""

SEEN = """
(async () => {
  await until(() => window.consoleState && consoleState.refreshes > 0);
  await until(() => consoleState.timelines > 0);
  await until(() => document.querySelectorAll('#doctor li').length > 0);
  const still = document.querySelector('.source[data-id="cam-lab"] img.still');
  await until(() => still.complete && still.naturalWidth > 0);
  const bars = {};
  document.querySelectorAll('figure.timeline').forEach((f) => {
    bars[f.dataset.location] = f.querySelectorAll('svg rect.bar').length;
  });
  const card = (id) => document.querySelector(`.source[data-id="${id}"]`);
  return {
    error: consoleState.lastError,
    overview: document.querySelector('#overview').textContent,
    sources: [...document.querySelectorAll('.source')].map((c) => c.dataset.id),
    camX: card('cam-x').textContent,
    stillWidth: still.naturalWidth,
    live: card('cam-lab').querySelector('a.live')?.getAttribute('href'),
    bars,
    events: document.querySelectorAll('#events li').length,
    doctor: [...document.querySelectorAll('#doctor li')].map((li) => li.className),
    holds: document.querySelector('#holds').textContent,
    pwned: window.pwned ?? null,
    injected: document.querySelectorAll('main img:not(.still), main script').length,
  };
})()
"""

PLACE = """
(async () => {
  const form = document.querySelector('#hold-form');
  document.querySelector('#place').open = true;
  const f = form.elements;
  f.kind.value = 'incident';
  f.location.value = 'gate';
  f.from.value = '2026-12-04T07:00:00';
  f.to.value = '2026-12-04T09:30:00';
  f.reason.value = 'incident 2026-117';
  f.by.value = 'installer';
  form.requestSubmit();
  const out = form.querySelector('.result');
  await until(() => out.textContent.startsWith('placed') ? out.textContent : null);
  const gate = () => document.querySelector('figure.timeline[data-location="gate"]');
  await until(() => gate().querySelectorAll('svg rect.hold').length === 1);
  await until(() => document.querySelectorAll('#holds li.hold').length === 1);
  return {
    result: out.textContent,
    shaded: gate().querySelectorAll('svg rect.hold').length,
    shadedLab: document.querySelector('figure.timeline[data-location="lab"]')
      .querySelectorAll('svg rect.hold').length,
    listed: document.querySelector('#holds li.hold').dataset.id,
  };
})()
"""

RELEASE = """
(async () => {
  const li = document.querySelector('#holds li.hold');
  li.querySelector('.rel-by').value = 'installer';
  li.querySelector('.rel-reason').value = 'case closed';
  li.querySelector('button.release').click();
  await until(() => document.querySelectorAll('#holds li.hold').length === 0);
  const gate = document.querySelector('figure.timeline[data-location="gate"]');
  await until(() => gate.querySelectorAll('svg rect.hold').length === 0);
  return document.querySelector('#holds').textContent;
})()
"""

PHONE = """
(async () => {
  await until(() => document.querySelectorAll('.source').length === 2);
  const still = document.querySelector('.source[data-id="cam-lab"] img.still');
  await until(() => still.complete && still.naturalWidth > 0);
  await until(() => consoleState.timelines > 0);
  const cards = [...document.querySelectorAll('.card')];
  const widths = cards.map((c) => c.getBoundingClientRect().right);
  return {
    scroll: document.documentElement.scrollWidth,
    inner: window.innerWidth,
    widest: Math.max(...widths),
  };
})()
"""


@pytest.fixture(scope="module")
def hub() -> Iterator[PacketHub]:
    with live_hub() as hub:
        yield hub


def _save(path: Path, png_b64: str) -> int:
    return path.write_bytes(base64.b64decode(png_b64))


async def _shot(cdp: Cdp, path: Path) -> None:
    shot = await cdp.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
    assert _save(path, shot["data"]) > 5000


async def _open(cdp: Cdp, url: str) -> None:
    await cdp.evaluate("window.leaving = true")
    await cdp.call("Page.navigate", url=url)
    await _settle(cdp)


async def _settle(cdp: Cdp) -> None:
    # Wait for the new document (the old one had `leaving`), then give it until().
    for _ in range(200):
        if await cdp.evaluate("!window.leaving && document.readyState === 'complete'"):
            break
        await asyncio.sleep(0.05)
    await cdp.evaluate(UNTIL)


async def test_console_in_chromium(hub: PacketHub, tmp_path: Path) -> None:
    assert await hub.wait_codec("cam-lab", "video", 10) is not None
    data = FakeData(hub=hub)
    async with console_server(data) as base, chromium(tmp_path) as cdp:
        await cdp.call("Page.enable")
        # Without the token: the login form, not the console.
        await _open(cdp, f"{base}/console")
        assert await cdp.evaluate("!!document.querySelector('form input[name=token]')")
        assert not await cdp.evaluate("!!document.querySelector('#overview')")
        # The form trades the token for a session cookie, then shows the console.
        await cdp.evaluate(
            "window.leaving = true;"
            f"document.querySelector('input[name=token]').value = {TOKEN!r};"
            "document.querySelector('form').submit(); true"
        )
        await _settle(cdp)
        assert await cdp.evaluate("location.pathname") == "/console", await cdp.evaluate(
            "document.body.innerText"
        )
        assert await cdp.evaluate("document.cookie") == ""  # HttpOnly: not for scripts
        seen = await cdp.evaluate(SEEN)
        await _shot(cdp, tmp_path / "console.png")
        assert seen["error"] is None, seen
        assert "degraded" in seen["overview"] and "401 Unauthorized" in seen["overview"]
        assert seen["sources"] == ["cam-lab", "cam-x"]
        assert "failed" in seen["camX"] and "401 Unauthorized" in seen["camX"]
        assert seen["stillWidth"] == 640 and seen["live"] == "/"
        assert seen["bars"] == {"gate": 6, "lab": 1}
        assert seen["events"] == 5
        assert seen["doctor"] == ["ok", "ok", "fail"]
        # Reasons are text: the hostile one shows literally and runs nothing.
        assert HOSTILE in seen["camX"] and seen["pwned"] is None and seen["injected"] == 0
        assert "no active holds" in seen["holds"]

        placed = await cdp.evaluate(PLACE)
        await _shot(cdp, tmp_path / "console-hold.png")
        assert placed["shaded"] == 1 and placed["shadedLab"] == 0
        assert placed["result"] == f"placed {placed['listed']}"
        request = next(c[1] for c in data.calls if c[0] == "place_hold")
        assert request.location == "gate" and request.by == "installer"

        released = await cdp.evaluate(RELEASE)
        assert "no active holds" in released
        release = next(c[1] for c in data.calls if c[0] == "release_hold")
        assert release.hold_id == placed["listed"] and release.reason == "case closed"

        # A phone: one column, nothing wider than the screen.
        await cdp.call(
            "Emulation.setDeviceMetricsOverride",
            width=390,
            height=844,
            deviceScaleFactor=2,
            mobile=True,
        )
        await _open(cdp, f"{base}/console")
        phone = await cdp.evaluate(PHONE)
        await _shot(cdp, tmp_path / "console-phone.png")
        assert phone["scroll"] <= phone["inner"] + 1, phone
        assert phone["widest"] <= phone["inner"] + 1, phone
