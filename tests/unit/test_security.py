"""Security details: origins allowed on the live feed, secrets kept out of output, open-API warning."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from api.routes.live import origin_allowed
from api.server import ApiServer, is_loopback
from daq.cli import _startup_lines, main, masked_url
from daq.config import ConfigError, canonical_origin, load_settings
from daq.storage.influxd import free_port
from tests.conftest import ROOT

RIG = ROOT / "configs" / "rigs" / "screw-press.toml"


def _service_file(tmp_path: Path, extra: str = "", api: str = "") -> Path:
    p = tmp_path / "service.toml"
    p.write_text(f"""
[service]
data_dir = "var"
rigs = ["{RIG}"]

[api]
port = 8080
{api}
{extra}
""")
    return p


# --- [api] allowed_origins ---------------------------------------------------------------

def test_allowed_origins_are_stored_canonical(tmp_path):
    p = _service_file(tmp_path, api='allowed_origins = ["HTTPS://HMI.Plant.example:443/", '
                                    '"http://10.0.0.5:8080", "http://[::1]:80"]')
    assert load_settings(p).api.allowed_origins == ["https://hmi.plant.example", "http://10.0.0.5:8080",
                                                    "http://[::1]"]
    assert load_settings(_service_file(tmp_path)).api.allowed_origins == []


def test_bad_allowed_origins_are_each_named(tmp_path):
    p = _service_file(tmp_path, api='allowed_origins = ["http://ok.example", "ftp://files.example", '
                                    '"https://hmi.example/page", "http://h:99999", "*"]')
    with pytest.raises(ConfigError) as e:
        load_settings(p)
    assert e.value.problems == [
        f"{p}: api.allowed_origins: [1]: must be an origin like https://hmi.example.com:8443 "
        f"(got 'ftp://files.example'); "
        f"[2]: an origin is scheme://host[:port] only, without path, query or user "
        f"(got 'https://hmi.example/page'); "
        f"[3]: bad port in 'http://h:99999'; "
        f"[4]: must be an origin like https://hmi.example.com:8443 (got '*')"]


def test_canonical_origin_refuses_user_info():
    with pytest.raises(ValueError, match="without path, query or user"):
        canonical_origin("https://user:pw@hmi.example")


@pytest.mark.parametrize(("origin", "host", "allowed", "ok"), [
    ("http://127.0.0.1:8080", "127.0.0.1:8080", [], True),           # the page this server served
    ("http://RigDAQ.plant:8080", "rigdaq.plant:8080", [], True),     # host names are case-insensitive
    ("http://rigdaq.plant", "rigdaq.plant:80", [], True),            # default port, written or not
    ("https://rigdaq.plant", "rigdaq.plant", [], True),
    ("http://[::1]:8080", "[::1]:8080", [], True),
    ("http://evil.example", "127.0.0.1:8080", [], False),            # another site
    ("http://127.0.0.1:8081", "127.0.0.1:8080", [], False),          # another port is another origin
    ("https://rigdaq.plant", "rigdaq.plant:80", [], False),          # https's default port is 443
    ("http://localhost:8080", "127.0.0.1:8080", [], False),          # not the host the request was sent to
    ("null", "127.0.0.1:8080", [], False),                           # sandboxed frames, file:// pages
    ("http://127.0.0.1:8080", None, [], False),                      # no Host to compare with
    ("http://127.0.0.1:8080", "user@127.0.0.1:8080", [], False),
    ("http://127.0.0.1:8080", "127.0.0.1:port", [], False),
    ("http://127.0.0.1:8080/x", "127.0.0.1:8080", [], False),        # not an origin
    ("https://hmi.plant.example", "127.0.0.1:8080", ["https://hmi.plant.example"], True),
    ("https://HMI.plant.example:443", "127.0.0.1:8080", ["https://hmi.plant.example"], True),
    ("http://hmi.plant.example", "127.0.0.1:8080", ["https://hmi.plant.example"], False),
])
def test_origin_allowed(origin, host, allowed, ok):
    assert origin_allowed(origin, host, allowed) is ok


# --- binding beyond loopback with API keys off ------------------------------------------

@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.3.2.1", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("LOCALHOST.", True), ("::ffff:127.0.0.1", True),
    ("0.0.0.0", False), ("::", False), ("", False), ("192.168.10.4", False), ("10.0.0.1", False),
    ("fe80::1", False), ("rigdaq.plant.example", False), ("128.0.0.1", False),
])
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


def _app(settings):
    return SimpleNamespace(state=SimpleNamespace(service=SimpleNamespace(settings=settings)))


def _bind(settings, host: str, caplog) -> tuple[list[logging.LogRecord], int]:
    caplog.clear()
    server = ApiServer(_app(settings), host, free_port())
    with caplog.at_level(logging.WARNING, logger="api.server"):
        server.bind()
    try:
        return [r for r in caplog.records if r.name == "api.server"], server.port
    finally:
        server.sock.close()


def test_open_api_without_keys_is_warned_about_naming_address_and_fix(tmp_path, caplog):
    p = _service_file(tmp_path, extra="[auth]\nenabled = false")
    settings = load_settings(p)
    records, port = _bind(settings, "0.0.0.0", caplog)
    assert [(r.levelno, r.getMessage()) for r in records] == [(
        logging.WARNING,
        f"API KEYS ARE OFF ([auth] enabled = false) and the API listens on 0.0.0.0:{port}, which other "
        "machines may reach: anyone who can connect is admin (starts and stops runs, reads every result, "
        f"creates keys). Set [auth] enabled = true in {p} and create keys with "
        "`daq keys create --role operator --name NAME`, or set [api] host = \"127.0.0.1\" to serve this "
        "machine only.")]


def test_no_warning_on_loopback_or_with_keys_on(tmp_path, caplog):
    off = load_settings(_service_file(tmp_path, extra="[auth]\nenabled = false"))
    assert _bind(off, "127.0.0.1", caplog)[0] == []
    on = load_settings(_service_file(tmp_path))
    assert on.auth.enabled is True
    assert _bind(on, "0.0.0.0", caplog)[0] == []


# --- no passwords printed by the CLI -----------------------------------------------------

@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql+psycopg://rig:s3cret@db.plant:5432/rigdaq", "postgresql+psycopg://rig:***@db.plant:5432/rigdaq"),
    ("postgresql://rig:s3c@ret@db.plant/rigdaq", "postgresql://rig:***@db.plant/rigdaq"),
    ("http://admin:s3cret@influx.plant:8086", "http://admin:***@influx.plant:8086"),
    ("not a scheme://rig:s3cret@db.plant/x", "not a scheme://rig:***@db.plant/x"),
    ("sqlite:////var/lib/rigdaq/a@b.sqlite", "sqlite:////var/lib/rigdaq/a@b.sqlite"),
    ("postgresql://rig@db.plant/rigdaq", "postgresql://rig@db.plant/rigdaq"),
])
def test_masked_url(url, shown):
    assert masked_url(url) == shown


def test_daq_run_banner_masks_the_catalogue_password(tmp_path):
    url = "postgresql+psycopg://rig:s3cret@db.plant:5432/rigdaq"
    settings = load_settings(_service_file(tmp_path, extra=f'[catalogue]\nurl = "{url}"'))
    lines = _startup_lines(settings)
    assert lines[1].endswith("(catalogue postgresql+psycopg://rig:***@db.plant:5432/rigdaq)")
    assert not any("s3cret" in line for line in lines)


def test_catalogue_error_masks_the_password(tmp_path, capsys):
    p = _service_file(tmp_path, extra='[catalogue]\nurl = "nosuchdialect://rig:s3cret@db.plant/rigdaq"')
    assert main(["keys", "list", "--config", str(p)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rigdaq: cannot open the catalogue at nosuchdialect://rig:***@db.plant/rigdaq: ")
    assert "s3cret" not in err
