"""The operator page in a real browser (Debian's chromium via Playwright) against a running service."""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import signed_in_page
from tests.integration.helpers import bearer, check_press_verdict


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
    speed = card.locator('.keys [data-channel="flywheel_speed"] .val')
    expect(speed).not_to_have_text("—", timeout=10_000)
    expect(speed).not_to_have_text(speed.inner_text(), timeout=10_000)  # values move: the WebSocket feed is live
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


# -- readable from three metres ---------------------------------------------------------------------

KEY_CHANNELS = ["force", "position", "flywheel_speed"]
KEY_METRICS = ["peak_force_kN", "blow_energy_kJ", "forming_energy_kJ"]
#: the key values' digits (CSS clamp(52px, 3.4vw, 64px)): 64 px on a 1920 screen, 52 px on a 1280 panel PC
KEY_FONT_PX = {1920: 64.0, 1280: 52.0}


def _page_at(running, browser, width: int, height: int):
    ctx = browser.new_context(viewport={"width": width, "height": height})
    ctx.add_cookies([{"name": "rigdaq_key", "value": running.keys["operator"], "url": running.base}])
    page = ctx.new_page()
    assert page.goto(running.base + "/").status == 200
    card = page.locator("#rig-press-01")
    for ch in KEY_CHANNELS:
        expect(card.locator(f'.keys [data-channel="{ch}"] .val')).not_to_have_text("—", timeout=15_000)
    for m in KEY_METRICS:  # the last blow's figures: live, or from GET /api/rigs before the first live blow
        expect(card.locator(f'.keys [data-metric="{m}"] .val')).not_to_have_text("—", timeout=15_000)
    expect(card.locator('figure[data-channels="force"] .ref.limit')).to_have_count(1, timeout=10_000)
    return ctx, page, card


def _screenshot(page, tmp_path_factory, name: str):
    """The whole page as PNG under the session's basetemp, in ``test-output/``; its path printed."""
    out = tmp_path_factory.getbasetemp() / "test-output"
    out.mkdir(exist_ok=True)
    shot = out / f"{name}.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")
    assert shot.stat().st_size > 0


def _geometry(page, rig: str) -> dict:
    """Where the rig card's key tiles, lamps and trends sit, the key values' font size, the page's width."""
    return page.evaluate("""rig => {
      const box = e => { const r = e.getBoundingClientRect(); return {x: r.left, y: r.top, r: r.right, b: r.bottom}; };
      const card = document.getElementById("rig-" + rig);
      return {
        first: document.body.firstElementChild.id,
        scrollWidth: document.scrollingElement.scrollWidth, innerWidth: innerWidth,
        keys: [...card.querySelectorAll(".keys .key")].map(k => {
          const reading = k.querySelector(".reading"), val = k.querySelector(".val");
          return {name: k.dataset.channel || k.dataset.metric, box: box(k), val: box(val),
                  clipped: reading.scrollWidth > reading.clientWidth, font: parseFloat(getComputedStyle(val).fontSize)};
        }),
        lamps: [...card.querySelectorAll(".lamps .lamp-item")].map(l => ({name: l.dataset.state, box: box(l)})),
        trends: [...card.querySelectorAll(".trends figure")].map(f => ({name: f.dataset.channels, box: box(f)})),
        units: [...card.querySelectorAll(".trends .axis-unit")].map(t => t.textContent),
        verdict: card.querySelector(".verdict").hidden ? null
          : parseFloat(getComputedStyle(card.querySelector(".verdict > b")).fontSize),
      };
    }""", rig)


def _check_nothing_cut_off(m: dict, width: int) -> None:
    assert m["first"] == "alarms"  # active alarms on top (filled by /static/alarms.js)
    assert m["scrollWidth"] <= m["innerWidth"] == width, "a horizontal scrollbar"
    for k in m["keys"]:
        assert k["font"] == KEY_FONT_PX[width], k
        assert not k["clipped"], f"{k['name']}: its value is cut off in its tile"
        assert k["box"]["x"] <= k["val"]["x"] and k["val"]["r"] <= k["box"]["r"], k
    items = m["keys"] + m["lamps"] + m["trends"]
    for it in items:
        assert it["box"]["x"] >= 0 and it["box"]["r"] <= width, f"{it['name']} sticks out of the viewport: {it['box']}"
    for i, a in enumerate(items):
        for b in items[i + 1:]:
            apart = (a["box"]["r"] <= b["box"]["x"] or b["box"]["r"] <= a["box"]["x"]
                     or a["box"]["b"] <= b["box"]["y"] or b["box"]["b"] <= a["box"]["y"])
            assert apart, f"{a['name']} overlaps {b['name']}: {a['box']} {b['box']}"


@pytest.mark.parametrize(("width", "height"), [(1920, 1080), (1280, 800)])
def test_nothing_is_cut_off_and_key_values_are_large(running, browser, tmp_path_factory, width, height):
    ctx, page, _card = _page_at(running, browser, width, height)
    _screenshot(page, tmp_path_factory, f"operator-page-{width}x{height}")
    m = _geometry(page, "press-01")
    assert [k["name"] for k in m["keys"]] == KEY_CHANNELS + KEY_METRICS
    assert [lamp["name"] for lamp in m["lamps"]] == ["state_running", "state_contact", "state_return", "state_fault",
                                                      "lube_pump_running"]
    assert [t["name"] for t in m["trends"]] == KEY_CHANNELS
    assert m["units"] == ["[kN]", "[mm]", "[rpm]"]
    assert m["verdict"] == 40.0
    _check_nothing_cut_off(m, width)
    ctx.close()


def test_key_values_move_and_states_are_lamps(running, browser):
    ctx, page, card = _page_at(running, browser, 1920, 1080)
    page.evaluate("""() => {   // what the running lamp showed: it goes on and off with every blow
      window.__running = new Set();
      const item = document.querySelector('#rig-press-01 [data-state="state_running"]');
      new MutationObserver(() => window.__running.add(item.dataset.on))
        .observe(item, {attributes: true, subtree: true, attributeFilter: ["data-on", "class"]});
    }""")
    for ch in KEY_CHANNELS:  # force, ram position and flywheel speed all change within a blow (every 4.6 s)
        value = card.locator(f'.keys [data-channel="{ch}"] .val')
        expect(value).not_to_have_text(value.inner_text(), timeout=10_000)
    page.wait_for_function("() => window.__running.size === 2", timeout=15_000)
    lamps = page.evaluate("""() => Object.fromEntries([...document.querySelectorAll('#rig-press-01 .lamp-item')]
        .map(l => [l.dataset.state, {label: l.querySelector('.label').textContent,
                                     cls: l.querySelector('.lamp').className}]))""")
    assert {k: v["label"] for k, v in lamps.items()} == {
        "state_running": "running", "state_contact": "contact", "state_return": "return stroke",
        "state_fault": "fault", "lube_pump_running": "lube pump"}
    assert lamps["state_fault"]["cls"] == "lamp off tone-bad"  # the simulated press has no fault
    assert lamps["lube_pump_running"]["cls"] == "lamp on tone-ok"  # its lube pump always runs
    assert re.fullmatch(r"lamp (on|off) tone-active", lamps["state_running"]["cls"])
    assert not re.search(r"\b(true|false)\b", card.inner_text())  # no raw booleans anywhere
    ctx.close()


def test_counters_and_diagnostics_are_folded_away(running, browser):
    ctx, _page, card = _page_at(running, browser, 1920, 1080)
    diag = card.locator("details.diagnostics")
    for ch in ("sample", "plc_tick", "blow_count", "motor_energy"):
        tile = diag.locator(f'[data-channel="{ch}"]')
        expect(tile).to_have_count(1, timeout=10_000)
        expect(tile).to_be_hidden()
        assert card.locator(f'.keys [data-channel="{ch}"], .secondary [data-channel="{ch}"]').count() == 0
    assert diag.evaluate("d => d.open") is False
    diag.locator("summary").click()
    tick = diag.locator('[data-channel="plc_tick"] .val')
    expect(tick).to_be_visible()
    expect(tick).not_to_have_text(tick.inner_text(), timeout=5_000)  # the PLC's clock keeps counting
    # each device (the PLC's slow poll group too) with its state: "press01_plc: ok", or its last error after it
    devices = diag.locator(".devices li").evaluate_all("ls => ls.map(l => l.textContent.split(':')[0])")
    assert devices == ["press01_plc", "press01_plc/slow", "press01_amp", "press01_dies", "press01_lube"]
    ctx.close()


def test_trends_have_units_a_time_scale_and_the_limits(running, browser):
    ctx, _page, card = _page_at(running, browser, 1920, 1080)
    force = card.locator('figure[data-channels="force"]')
    expect(force.locator("path.series")).to_have_count(1, timeout=10_000)
    assert force.locator(".axis-unit").text_content() == "[kN]"
    assert force.locator(".x-ticks text").all_text_contents() == ["−20 s", "−15 s", "−10 s", "−5 s", "now"]
    assert re.fullmatch(r"\d\d:\d\d:\d\d", force.locator(".clock").text_content())
    limit = force.locator(".ref.limit")
    assert limit.evaluate("e => [e.dataset.label, e.dataset.value]") == ["peak_force_kN max", "100000"]
    # the limit line sits at the height of the y axis' 100k tick: drawn in the axis' own scale
    ticks = dict(zip(force.locator(".y-ticks text").all_text_contents(),
                     force.locator(".y-ticks text").evaluate_all("ts => ts.map(t => +t.getAttribute('y') - 4)"),
                     strict=True))
    assert "100k" in ticks
    assert float(limit.get_attribute("y1")) == pytest.approx(ticks["100k"], abs=0.01)
    assert limit.get_attribute("y1") == limit.get_attribute("y2")
    for channel, cls, label, value, unit in (("position", "reference", "die face", "600", "[mm]"),
                                             ("flywheel_speed", "setpoint", "blow speed", "90", "[rpm]")):
        fig = card.locator(f'figure[data-channels="{channel}"]')
        assert fig.locator(".axis-unit").text_content() == unit
        assert fig.locator(f".ref.{cls}").evaluate("e => [e.dataset.label, e.dataset.value]") == [label, value]
    ctx.close()


def test_the_layout_comes_from_the_api_and_static_assets_need_no_key(running):
    import httpx

    from daq.rigs import kind_of

    rig = running.service.rigs["press-01"]
    with httpx.Client(base_url=running.base, timeout=5) as http:
        r = http.get("/api/rigs/press-01/layout", headers=bearer(running.keys["operator"]))
        assert r.status_code == 200
        assert r.json() == {"rig": "press-01", **kind_of(rig).operator_layout(rig)}
        r = http.get("/api/rigs/press-02/layout", headers=bearer(running.keys["operator"]))
        assert (r.status_code, r.json()) == (404, {"detail": "no rig 'press-02'; rigs are: press-01"})
        assert http.get("/api/rigs/press-01/layout").status_code == 401
        for _ in range(50):  # the last blow's metrics, as the service holds them (a blow may land in between)
            last = running.service.last_cycle.get("press-01")
            summary = http.get("/api/rigs", headers=bearer(running.keys["operator"])).json()[0]
            if last is not None and summary["last_cycle"] == last.cycle_no:
                break
            time.sleep(0.1)
        assert summary["last_metrics"] == last.metrics
        assert list(summary["last_metrics"]) == list(rig.METRICS)
        for name, ctype in (("page.js", "text/javascript"), ("page.css", "text/css")):
            r = http.get(f"/static/{name}")  # no key: scripts and styles hold no data
            assert (r.status_code, r.headers["content-type"].split(";")[0]) == (200, ctype)
        for name in ("index.html", "login.html", "..%2Fapp.py", "nothing.js"):
            r = http.get(f"/static/{name}")
            assert r.status_code == 404, name
        assert http.get("/static/index.html").json() == {"detail": "no static asset 'index.html'"}


# -- a kind that declares nothing: the logger --------------------------------------------------------

@pytest.fixture(scope="module")
def running_logger(tmp_path_factory, influxd):
    import uuid

    from daq.config import load_settings
    from daq.storage.influxd import free_port
    from tests.conftest import ROOT
    from tests.integration.helpers import ServiceThread, keys_for

    tmp = tmp_path_factory.mktemp("e2e_logger")
    (tmp / "rigs").mkdir()
    rig = (ROOT / "configs" / "rigs" / "lab-logger.toml").read_text()
    assert rig.count("port = 15030") == 1
    (tmp / "rigs" / "lab-logger.toml").write_text(rig.replace("port = 15030", f"port = {free_port()}"))
    (tmp / "demo.toml").write_text(f"""
[service]
data_dir = "var"
rigs = ["rigs/lab-logger.toml"]
[api]
port = {free_port()}
[storage.influxdb]
url = "{influxd.url}"
database = "t_{uuid.uuid4().hex[:12]}"
commit_interval_s = 0.2
""")
    st = ServiceThread(load_settings(tmp / "demo.toml"))
    st.keys = keys_for(st.service)
    yield st
    st.stop()


LOGGER_KEYS = ["tc1", "tc2", "tc3", "tc4", "tc5", "tc6", "tc7", "tc8", "voltage", "current", "power", "power_factor",
               "frequency", "energy", "ambient_temperature", "humidity", "pressure"]


@pytest.mark.parametrize(("width", "height"), [(1920, 1080), (1280, 800)])
def test_a_logger_shows_every_channel_as_a_key_value(running_logger, browser, tmp_path_factory, width, height):
    ctx = browser.new_context(viewport={"width": width, "height": height})
    ctx.add_cookies([{"name": "rigdaq_key", "value": running_logger.keys["operator"], "url": running_logger.base}])
    page = ctx.new_page()
    assert page.goto(running_logger.base + "/").status == 200
    card = page.locator("#rig-lab-01")
    for ch in LOGGER_KEYS:
        expect(card.locator(f'.keys [data-channel="{ch}"] .val')).not_to_have_text("—", timeout=15_000)
    expect(card.locator(".trends path.series")).to_have_count(12, timeout=10_000)  # 9 temperatures, V, A, W
    _screenshot(page, tmp_path_factory, f"operator-page-logger-{width}x{height}")
    m = _geometry(page, "lab-01")
    assert [k["name"] for k in m["keys"]] == LOGGER_KEYS
    assert m["lamps"] == []
    assert [t["name"] for t in m["trends"]] == ["tc1 tc2 tc3 tc4 tc5 tc6 tc7 tc8 ambient_temperature", "voltage",
                                                "current", "power"]
    assert m["units"] == ["[°C]", "[V]", "[A]", "[W]"]
    assert m["verdict"] is None  # no cycles, so no verdict box
    _check_nothing_cut_off(m, width)
    assert card.locator('details.diagnostics [data-channel="sample"]').count() == 1  # the room sensor's counter
    ctx.close()
