"""The live WebSocket refuses browser handshakes from other sites (403), over real HTTP.

A page on another site could otherwise open the feed riding on the operator's cookie
(cross-site WebSocket hijacking). Same origin, allow-listed origins and clients that send
no ``Origin`` (scripts, the CLI) pass.
"""

from __future__ import annotations

import json
import uuid

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from daq.config import load_settings
from tests.integration.helpers import ServiceThread, bearer, keys_for, press_settings

HMI = "https://hmi.plant.example"


@pytest.fixture(scope="module")
def api(tmp_path_factory, influxd):
    tmp = tmp_path_factory.mktemp("ws_origin")
    press_settings(tmp, influxd.url, f"t_{uuid.uuid4().hex[:12]}")
    conf = tmp / "demo.toml"
    text = conf.read_text()
    conf.write_text(text.replace("[api]\n", f'[api]\nallowed_origins = ["{HMI}:443/"]\n', 1))
    settings = load_settings(conf)
    assert settings.api.allowed_origins == [HMI]
    st = ServiceThread(settings)
    st.keys = keys_for(st.service)
    st.url = st.base.replace("http", "ws", 1) + "/api/rigs/press-01/live"
    yield st
    st.stop()


def _first_message(api, origin: str | None, headers: dict | None = None) -> dict:
    with connect(api.url, origin=origin, additional_headers=headers or bearer(api.keys["operator"]),
                 open_timeout=5) as ws:
        return json.loads(ws.recv(timeout=5))


def _refused(api, origin: str | None, headers: dict | None = None) -> tuple[int, dict]:
    with pytest.raises(InvalidStatus) as refused:
        connect(api.url, origin=origin, additional_headers=headers or bearer(api.keys["operator"]),
                open_timeout=5)
    response = refused.value.response
    return response.status_code, json.loads(response.body)


def test_no_origin_is_not_a_browser_and_passes(api):
    msg = _first_message(api, None)
    assert msg["type"] == "readings" and msg["rig"] == "press-01"


def test_the_servers_own_origin_passes(api):
    port = api.settings.api.port
    assert _first_message(api, f"http://127.0.0.1:{port}")["type"] == "readings"
    cookie = {"Cookie": f"rigdaq_key={api.keys['operator']}"}  # what the operator page sends
    assert _first_message(api, f"http://127.0.0.1:{port}", cookie)["type"] == "readings"


def test_an_allow_listed_origin_passes(api):
    assert _first_message(api, HMI)["type"] == "readings"


@pytest.mark.parametrize("origin", ["http://evil.example", "http://127.0.0.1:{other}", "http://localhost:{port}",
                                    "http://hmi.plant.example", "null"])
def test_a_foreign_origin_is_refused_with_403_even_with_a_valid_key(api, origin):
    port = api.settings.api.port
    origin = origin.format(port=port, other=port + 1)
    cookie = {"Cookie": f"rigdaq_key={api.keys['admin']}"}
    status, body = _refused(api, origin, cookie)
    assert status == 403
    assert body == {"detail": f"origin {origin!r} may not open the live feed (see [api] allowed_origins)"}


def test_a_foreign_origin_without_a_key_is_refused_for_its_origin(api):
    status, body = _refused(api, "http://evil.example", {"X-Nothing": "1"})
    assert (status, body["detail"]) == (403, "origin 'http://evil.example' may not open the live feed "
                                             "(see [api] allowed_origins)")
    status, body = _refused(api, f"http://127.0.0.1:{api.settings.api.port}", {"X-Nothing": "1"})
    assert (status, body["detail"]) == (401, "an operator API key is required")
