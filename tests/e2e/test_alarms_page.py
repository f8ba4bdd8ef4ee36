"""The alarm panel on the operator page, in a real browser: an alarm appears, is acknowledged with a comment, clears."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from daq.catalogue.audit import AuditTrail
from tests.e2e.conftest import signed_in_page


def test_an_alarm_appears_is_acknowledged_on_the_page_and_clears(running, browser):
    sim = running.service.simulators["press-01"]

    async def amplifier(connected: bool):
        if connected:
            sim.faults.clear("press01_amp")
        else:
            sim.faults.inject("press01_amp", "disconnect")

    page = signed_in_page(running, browser)
    panel = page.locator("#alarms")
    expect(panel.locator(".al-none")).to_be_visible(timeout=10_000)
    # the panel is the first thing on the page
    assert page.evaluate("() => document.body.firstElementChild.id") == "alarms"

    gauge = page.locator(".ch[data-channel='force_1']")  # the amplifier's alone (the PLC sends force too)
    expect(gauge).to_have_count(1, timeout=20_000)
    expect(gauge).not_to_have_class(re.compile(r"\bstale\b"), timeout=15_000)
    running.call(amplifier(False))
    # its values stay on the page, dimmed once the newest is more than 3 s old
    expect(gauge).to_have_class(re.compile(r"\bstale\b"), timeout=20_000)
    assert re.fullmatch(r"force_1: no new value for \d+ s", gauge.get_attribute("title"))
    row = panel.locator("li[data-alarm-id]")
    expect(row).to_have_count(1, timeout=15_000)
    expect(row).to_have_attribute("data-state", "active_unacked")
    expect(row).to_have_attribute("data-priority", "high")
    expect(row.locator(".al-msg")).to_contain_text("press-01/press01_amp is down: ")
    expect(panel.locator(".al-head small")).to_have_text("1 active, 1 to acknowledge")

    row.locator(".al-ack").click()  # without a comment: refused on the page
    expect(row.locator(".al-fail")).to_have_text("a comment is required")
    row.locator(".al-comment").fill("amplifier cable pulled for the test")
    row.locator(".al-ack").click()
    expect(row).to_have_attribute("data-state", "active_acked", timeout=10_000)
    expect(row.locator(".al-acked")).to_contain_text("acknowledged by test-operator")
    expect(row.locator(".al-acked")).to_contain_text(": amplifier cable pulled for the test")
    expect(panel.locator(".al-head small")).to_have_text("1 active, 0 to acknowledge")

    alarm_id = int(row.get_attribute("data-alarm-id"))
    running.call(amplifier(True))
    expect(panel.locator("li[data-alarm-id]")).to_have_count(0, timeout=20_000)
    expect(panel.locator(".al-none")).to_be_visible()
    expect(gauge).not_to_have_class(re.compile(r"\bstale\b"), timeout=20_000)
    assert gauge.get_attribute("title") == "force_1"

    a = running.service.catalogue.alarm(alarm_id)
    assert (a.key, a.state, a.acked_by, a.ack_comment) == (
        "device:press-01/press01_amp", "cleared", "test-operator", "amplifier cable pulled for the test")
    assert a.raised_ns < a.acked_ns < a.cleared_ns
    total, entries = AuditTrail(running.service.catalogue).entries(action="alarm_ack")
    assert total == 1
    assert (entries[0]["actor"], entries[0]["target"], entries[0]["details"]) == (
        "test-operator", f"alarm {alarm_id}", {"before": {"state": "active_unacked"},
                                               "after": {"state": "active_acked",
                                                         "comment": "amplifier cable pulled for the test"}})
    page.context.close()
