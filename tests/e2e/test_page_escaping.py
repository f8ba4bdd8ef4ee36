"""The operator page shows what the server sends as text, never as HTML (real browser, running service).

Event messages, verdict reasons and rig descriptions carry text from devices, analysis
and config files; markup in them must appear literally and create no element.
"""

from __future__ import annotations

import re
import time
import uuid
from types import SimpleNamespace

import pytest
from playwright.sync_api import expect

from daq.config import load_settings
from daq.events import Event
from tests.e2e.conftest import signed_in_page
from tests.integration.helpers import ServiceThread, keys_for, press_settings

DESCRIPTION = """<img src=x onerror="window.__pwned='description'"> press & <b>co</b>"""
MESSAGE = """plc01 <img src=x onerror="window.__pwned='event'"> lost & <b>found</b>"""
REASONS = ["""<img src=x onerror="window.__pwned='reason'">peak_force_kN 99 above max 80""",
           "second <b>reason</b> <script>window.__pwned='script'</script>"]


@pytest.fixture(scope="module")
def running(tmp_path_factory, influxd):
    tmp = tmp_path_factory.mktemp("e2e_escaping")
    press_settings(tmp, influxd.url, f"t_{uuid.uuid4().hex[:12]}")
    rig = tmp / "rigs" / "screw-press.toml"
    text = rig.read_text()
    new = re.sub(r'^description = ".*"$', f"description = '''{DESCRIPTION}'''", text, count=1, flags=re.M)
    assert new != text
    rig.write_text(new)
    settings = load_settings(tmp / "demo.toml")
    assert settings.rigs[0].description == DESCRIPTION
    st = ServiceThread(settings)
    st.keys = keys_for(st.service)
    yield st
    st.stop()


def _live_page(running, browser):
    page = signed_in_page(running, browser)
    card = page.locator("#rig-press-01")
    expect(card.locator('.keys [data-channel="force"] .val')).not_to_have_text("—", timeout=10_000)  # the feed is live
    deadline = time.monotonic() + 10
    while not running.service.feed.clients.get("press-01") and time.monotonic() < deadline:
        time.sleep(0.05)
    return page.context, page, card


def test_rig_description_is_text(running, browser):
    ctx, _page, card = _live_page(running, browser)
    small = card.locator("h2 small")
    expect(small).to_be_visible()
    assert small.evaluate("e => e.textContent") == DESCRIPTION
    assert small.evaluate("e => e.children.length") == 0
    assert card.locator("h2 img").count() == 0
    ctx.close()


def test_event_messages_are_text(running, browser):
    ctx, page, card = _live_page(running, browser)
    running.loop.call_soon_threadsafe(running.service.feed.event, Event(
        "device_fault", MESSAGE, rig="press-01", device="press01_plc", level="error"))
    line = card.locator(".events > div", has_text="plc01")
    expect(line).to_have_count(1, timeout=10_000)
    text = line.evaluate("e => e.textContent")
    assert text.endswith(f" device_fault: {MESSAGE}"), text
    assert line.evaluate("e => [e.className, e.children.length]") == ["error", 0]
    assert card.locator(".events img").count() == 0 and card.locator(".events b").count() == 0
    assert page.evaluate("() => window.__pwned === undefined")
    ctx.close()


def test_verdict_reasons_are_text_one_per_line(running, browser):
    ctx, page, _card = _live_page(running, browser)
    # real blows keep arriving: record the box as it is right after our cycle is drawn
    page.evaluate("""() => {
      window.__seen = null;
      const box = document.querySelector('#rig-press-01 .verdict');
      new MutationObserver(() => {
        if (window.__seen || !box.textContent.includes('blow 999999:')) return;
        const reasons = box.querySelector('.reasons');
        window.__seen = {head: box.querySelector('b').textContent, cls: box.className,
                         reasons: [...reasons.childNodes].map(n => n.nodeName === '#text' ? n.textContent : n.nodeName),
                         imgs: box.querySelectorAll('img').length, scripts: box.querySelectorAll('script').length};
      }).observe(box, {childList: true, subtree: true, characterData: true});
    }""")
    cycle = SimpleNamespace(rig="press-01", id=0, cycle_no=999999, kind="screw_press", t_ns=time.time_ns(),
                            verdict="nok", reasons=REASONS, run=None, metrics={"peak_force_kN": 99.0})
    running.loop.call_soon_threadsafe(running.service.feed.cycle, cycle)
    seen = page.wait_for_function("() => window.__seen", timeout=10_000).json_value()
    assert seen == {"head": "blow 999999: NOK", "cls": "verdict v-nok",
                    "reasons": [REASONS[0], "BR", REASONS[1]], "imgs": 0, "scripts": 0}
    assert page.evaluate("() => window.__pwned === undefined")
    ctx.close()
