"""The operator page of a plant's API node (real chromium): both agents' rigs live through MQTT."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.plant import running_plant

pytestmark = [pytest.mark.plant, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def plant(postgres, influxd, tmp_path_factory):
    with running_plant(postgres, influxd.url, tmp_path_factory.mktemp("plant-page"), api_nodes=1) as p:
        yield p


def test_the_api_node_page_shows_both_lines_live_through_mqtt(plant, browser):
    base = plant.nodes["api1"].base
    ctx = browser.new_context()
    ctx.add_cookies([{"name": "rigdaq_key", "value": plant.key, "url": base}])
    page = ctx.new_page()
    assert page.goto(base + "/").status == 200
    for rig, channel in (("press-01", "flywheel_speed"), ("srm-01", "speed")):
        value = page.locator(f'#rig-{rig} .keys [data-channel="{channel}"] .val')  # a key value, shown large
        expect(value).to_be_visible(timeout=60_000)
        expect(value).not_to_have_text("—", timeout=60_000)
        first = value.inner_text()
        expect(value).not_to_have_text(first, timeout=20_000)  # it moves: fed live from the broker
    # a blow analysed on line 1's agent reaches the page through MQTT
    expect(page.locator("#rig-press-01 .verdict > b")).to_contain_text("blow ", timeout=60_000)
    ctx.close()
