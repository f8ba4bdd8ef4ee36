"""What each rig kind declares for the operator page (``RigKind.operator_layout``), on the shipped rig files."""

from __future__ import annotations

import pytest

from daq.config import load_rig
from daq.rigs import kind_of
from daq.rigs.kind import Lamp
from tests.conftest import ROOT


def layout(name: str) -> dict:
    rig = load_rig(ROOT / "configs" / "rigs" / name)
    return kind_of(rig).operator_layout(rig)


def test_press_layout():
    assert layout("screw-press.toml") == {
        "kind": "screw_press", "cycle_noun": "blow",
        "key": [{"channel": "force", "label": "force", "unit": "kN"},
                {"channel": "position", "label": "position", "unit": "mm"},
                {"channel": "flywheel_speed", "label": "flywheel speed", "unit": "rpm"}],
        "metrics": [
            {"metric": "peak_force_kN", "label": "last blow: peak force", "unit": "kN", "min": None, "max": 100000.0},
            {"metric": "blow_energy_kJ", "label": "last blow: blow energy", "unit": "kJ", "min": None, "max": None},
            {"metric": "forming_energy_kJ", "label": "last blow: forming energy", "unit": "kJ", "min": 1500.0,
             "max": None}],
        "states": [{"channel": "state_running", "label": "running", "tone": "active", "values": []},
                   {"channel": "state_contact", "label": "contact", "tone": "active", "values": []},
                   {"channel": "state_return", "label": "return stroke", "tone": "active", "values": []},
                   {"channel": "state_fault", "label": "fault", "tone": "bad", "values": []},
                   {"channel": "lube_pump_running", "label": "lube pump", "tone": "ok", "values": []}],
        "diagnostics": ["sample", "plc_tick", "blow_count", "motor_energy"],
        "trends": [
            {"channels": ["force"], "unit": "kN", "span_s": 20.0, "title": "force",
             "lines": [{"label": "peak_force_kN max", "kind": "limit", "value": 100000.0, "channel": None}]},
            {"channels": ["position"], "unit": "mm", "span_s": 20.0, "title": "position",
             "lines": [{"label": "die face", "kind": "reference", "value": 600.0, "channel": None}]},
            {"channels": ["flywheel_speed"], "unit": "rpm", "span_s": 20.0, "title": "flywheel speed",
             "lines": [{"label": "blow speed", "kind": "setpoint", "value": 90.0, "channel": None}]}]}


def test_motor_layout_shows_the_step_and_its_set_points():
    got = layout("srm-rig.toml")
    assert got["cycle_noun"] == "step"
    assert [k["channel"] for k in got["key"]] == ["speed", "torque", "step", "speed_setpoint", "torque_setpoint"]
    assert [(k["unit"]) for k in got["key"]] == ["rpm", "N·m", "", "rpm", "N·m"]
    assert got["metrics"] == [
        {"metric": "efficiency", "label": "last step: efficiency", "unit": "", "min": 0.7, "max": None},
        {"metric": "mean_torque_Nm", "label": "last step: mean torque", "unit": "N·m", "min": None, "max": None}]
    assert got["states"] == [
        {"channel": "state", "label": "controller", "tone": "active",
         "values": [{"value": 0, "label": "idle", "tone": "off"}, {"value": 1, "label": "ramp", "tone": "active"},
                    {"value": 2, "label": "hold", "tone": "ok"},
                    {"value": 3, "label": "locked rotor", "tone": "active"},
                    {"value": 4, "label": "sequence done", "tone": "ok"}]},
        {"channel": "sequence_running", "label": "sequence running", "tone": "active", "values": []}]
    assert got["diagnostics"] == ["sample", "command"]
    assert got["trends"] == [
        {"channels": ["speed"], "unit": "rpm", "span_s": 20.0, "title": "speed",
         "lines": [{"label": "speed setpoint", "kind": "setpoint", "value": None, "channel": "speed_setpoint"}]},
        {"channels": ["torque"], "unit": "N·m", "span_s": 20.0, "title": "torque",
         "lines": [{"label": "torque setpoint", "kind": "setpoint", "value": None, "channel": "torque_setpoint"}]}]


def test_logger_declares_nothing_so_every_channel_is_a_key_value():
    got = layout("lab-logger.toml")
    rig = load_rig(ROOT / "configs" / "rigs" / "lab-logger.toml")
    channels = [c for d in rig.devices for c in d.channel_units() if c != "sample"]
    assert [k["channel"] for k in got["key"]] == channels
    assert len(channels) == 17
    assert got["cycle_noun"] is None and got["metrics"] == [] and got["states"] == []
    assert got["diagnostics"] == ["sample"]
    # one trend per unit of the key values, at most four, in the order the units first appear
    assert [(t["unit"], t["channels"]) for t in got["trends"]] == [
        ("°C", ["tc1", "tc2", "tc3", "tc4", "tc5", "tc6", "tc7", "tc8", "ambient_temperature"]),
        ("V", ["voltage"]), ("A", ["current"]), ("W", ["power"])]
    assert {t["span_s"] for t in got["trends"]} == {120.0}
    assert got["trends"][0]["title"] == "tc1 … ambient temperature"


def test_declared_channels_a_rig_lacks_are_left_out(tmp_path):
    text = (ROOT / "configs" / "rigs" / "screw-press.toml").read_text()
    # a PLC calling its flywheel speed and fault bit otherwise
    for old, new in (('name = "flywheel_speed"', 'name = "flywheel_rpm"'), ('name = "state_fault"', 'name = "fault"')):
        assert text.count(old) == 1
        text = text.replace(old, new)
    (tmp_path / "press.toml").write_text(text)
    rig = load_rig(tmp_path / "press.toml")
    got = kind_of(rig).operator_layout(rig)
    assert [k["channel"] for k in got["key"]] == ["force", "position"]
    assert [s["channel"] for s in got["states"]] == ["state_running", "state_contact", "state_return",
                                                     "lube_pump_running"]
    assert [t["channels"] for t in got["trends"]] == [["force"], ["position"]]


def test_a_lamp_tone_must_be_known():
    with pytest.raises(ValueError, match="lamp 'fault': tone 'purple' is not one of ok, active, warn, bad, off"):
        Lamp("fault", "purple")
    with pytest.raises(ValueError, match="tone 'blinking'"):
        Lamp("mode", values=((0, "idle", "blinking"),))
