"""The operator page in a real browser (Debian's chromium via Playwright) against a running service."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import signed_in_page
from tests.integration.helpers import check_press_verdict, running_press


@pytest.fixture(scope="module")
def running(tmp_path_factory, influxd):
    st = running_press(tmp_path_factory.mktemp("e2e"), influxd.url)
    yield st
    st.stop()


def test_operator_signs_in_and_sees_live_values_and_the_verdict(running, browser):
    page = browser.new_page()
    r = page.goto(running.base + "/")
    assert r.status == 401
    page.fill("#k", "rdq_00000000_wrong")
    page.click("button[type=submit]")
    expect(page.locator("#k")).to_be_visible()  # a wrong key: still the sign-in page
    page.fill("#k", running.keys["operator"])
    page.click("button[type=submit]")
    card = page.locator("#rig-press-01")
    expect(card).to_be_visible(timeout=10_000)
    force = card.locator('[data-channel="sample"] .val')
    expect(force).to_be_visible(timeout=10_000)
    first = force.inner_text()
    page.wait_for_timeout(500)
    assert force.inner_text() != first  # values move: the WebSocket feed is live
    verdict = card.locator(".verdict")
    expect(verdict).to_contain_text("peak_force_kN", timeout=15_000)  # a live cycle event: a blow every 4.6 s
    shown = page.evaluate("""() => {
        const box = document.querySelector("#rig-press-01 .verdict"), reasons = box.querySelector(".reasons");
        return {cls: box.className, head: box.querySelector("b").textContent,
                metrics: Object.fromEntries([...box.querySelectorAll(".metrics span")].map(
                    s => [s.firstChild.textContent.trim(), s.querySelector("b").textContent])),
                reasons: reasons ? reasons.innerText.split("\\n") : []};
    }""")
    word = re.fullmatch(r"blow \d+: (OK|NOK)", shown["head"]).group(1).lower()
    assert shown["cls"] == f"verdict v-{word}"
    # the verdict the shipped limits give this blow: ok up to 100 MN, else nok naming the peak force
    # (tests/integration/helpers.py); the page shows the peak to the kN
    check_press_verdict(word, shown["reasons"], {"peak_force_kN": float(shown["metrics"]["peak_force_kN"])})
    expect(card.locator("h2 .state")).to_have_text("ok")  # every device of the rig answers
    page.close()


def test_an_operator_key_cannot_fetch_reports_from_the_page_session(running, browser):
    page = signed_in_page(running, browser)
    status = page.evaluate("async () => (await fetch('api/runs/1/report')).status")
    assert status == 403
    page.context.close()
