"""The e2e tier runs against the same real influxd as the integration tier, in Debian's chromium."""

import shutil

import pytest
from playwright.sync_api import sync_playwright

from tests.integration.conftest import influxd, postgres  # noqa: F401  (fixtures)
from tests.integration.helpers import running_press

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser():
    if not shutil.which("chromium"):
        pytest.fail("chromium is not installed: apt-get install chromium (scripts/setup does it)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--headless"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def running(tmp_path_factory, influxd):  # noqa: F811  (influxd: the imported fixture)
    """The simulated press with its API and one key per role, for a module's page tests
    (a module with another rig file defines its own)."""
    st = running_press(tmp_path_factory.mktemp("e2e"), influxd.url)
    yield st
    st.stop()


def signed_in_page(running, browser, role: str = "operator"):
    """The operator page, opened with ``role``'s key in the sign-in cookie (200 checked)."""
    ctx = browser.new_context()
    ctx.add_cookies([{"name": "rigdaq_key", "value": running.keys[role], "url": running.base}])
    page = ctx.new_page()
    assert page.goto(running.base + "/").status == 200
    return page
