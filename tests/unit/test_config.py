import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from daq.cli import main
from daq.config import ConfigError, load_rig, load_settings
from tests.conftest import ROOT

RIG = ROOT / "configs" / "rigs" / "screw-press.toml"


def _rig_with(tmp_path: Path, old: str, new: str) -> Path:
    text = RIG.read_text()
    assert old in text, old
    p = tmp_path / "rig.toml"
    p.write_text(text.replace(old, new, 1))
    return p


def _problems(path) -> list[str]:
    with pytest.raises(ConfigError) as e:
        load_rig(path)
    return e.value.problems


def test_shipped_configs_are_valid():
    s = load_settings(ROOT / "configs" / "demo.toml")
    assert [(r.name, r.kind) for r in s.rigs] == [("press-01", "screw_press"), ("srm-01", "srm_rig")]
    names = [r.name for r in s.rigs[0].devices[0].registers]  # the PLC's map in configs/rigs/screw-press.toml
    assert names == ["force", "position", "flywheel_speed", "motor_current", "motor_voltage", "die_temperature",
                     "state_running", "state_contact", "state_return", "state_fault", "plc_tick", "blow_count",
                     "motor_energy", "recipe"]
    srm = s.rigs[1]
    # configs/rigs/srm-rig.toml: five operating points (500…2500 rpm), then the locked-rotor step
    assert [(st.kind, st.speed_rpm) for st in srm.sequence] == [
        ("operating_point", 500), ("operating_point", 1000), ("operating_point", 1500),
        ("operating_point", 2000), ("operating_point", 2500), ("locked_rotor", 0)]
    streamed = [c.name for d in srm.devices if d.transport == "serial_stream" for c in d.channels]
    assert streamed == ["speed", "torque", "rotor_angle", *(f"phase_{x}_current" for x in "abcd"),
                        *(f"phase_{x}_voltage" for x in "abcd"), "dc_voltage", "dc_current"]


def test_srm_rig_errors_are_named(tmp_path):
    src = (ROOT / "configs" / "rigs" / "srm-rig.toml").read_text()
    p = tmp_path / "srm.toml"
    p.write_text(src.replace("unaligned_inductance_mH = 9.0", "unaligned_inductance_mH = 90.0")
                 .replace("speed_rpm = 2500", "speed_rpm = 25000")
                 .replace("efficiency = { min = 0.70 }", "peak_force_kN = { max = 1.0 }"))
    problems = _problems(p)
    assert f"{p}: parameters: aligned_inductance_mH must be above unaligned_inductance_mH" in problems
    assert any("limits: no such metric: peak_force_kN; metrics are speed_rpm" in x for x in problems)
    p.write_text(src.replace("speed_rpm = 2500", "speed_rpm = 25000"))
    assert _problems(p) == [f"{p}: (top level): sequence[4]: speed_rpm 25000 is over twice the rated "
                            "1500 rpm"]
    p.write_text(src.replace('kind = "srm_rig"', 'kind = "lathe"'))
    assert _problems(p) == [f"{p}: kind: must be one of screw_press, srm_rig, logger (got 'lathe')"]


def test_unknown_key_is_named_with_its_path(tmp_path):
    p = _rig_with(tmp_path, "poll_hz = 50", "poll_hz = 50\npoll_hertz = 50")
    assert _problems(p) == [f"{p}: devices[0] (press01_plc).poll_hertz: unknown key"]


def test_wrong_type_names_register_and_value(tmp_path):
    p = _rig_with(tmp_path, 'type = "float16"', 'type = "float33"')
    [msg] = _problems(p)
    assert msg.startswith(f"{p}: devices[0] (press01_plc).registers[4] (motor_voltage).type:")
    assert "'float33'" in msg


def test_overlapping_registers_are_refused(tmp_path):
    p = _rig_with(tmp_path, "address = 7\n", "address = 6\n")
    [msg] = _problems(p)
    assert "registers: [5] (die_temperature, holding 6) overlaps [4] (motor_voltage, holding 6..6)" in msg


def test_bits_of_one_register_do_not_overlap(tmp_path):
    load_rig(RIG)  # state word: four bits at holding 8


def test_same_bit_twice_overlaps(tmp_path):
    p = _rig_with(tmp_path, "bit = 1", "bit = 0")
    assert _problems(p) == [f"{p}: devices[0] (press01_plc).registers: [7] (state_contact, holding 8) overlaps "
                            "[6] (state_running, holding 8..8)"]


@pytest.mark.parametrize("rate", ["0", "-5", "5000"])
def test_impossible_poll_rates(tmp_path, rate):
    p = _rig_with(tmp_path, "poll_hz = 50", f"poll_hz = {rate}")
    [msg] = _problems(p)
    assert "devices[0] (press01_plc).poll_hz: must be > 0" in msg


def test_timeout_longer_than_fifty_periods(tmp_path):
    p = _rig_with(tmp_path, "timeout_s = 0.5", "timeout_s = 5")
    assert _problems(p) == [f"{p}: devices[0] (press01_plc): timeout_s 5 spans more than 50 poll periods at 50 Hz"]


def test_bit_needs_index_and_coil_needs_bit_type(tmp_path):
    p = _rig_with(tmp_path, "  bit = 0\n", "")
    assert _problems(p) == [f"{p}: devices[0] (press01_plc).registers[6] (state_running): type 'bit' in a "
                            "holding/input register needs 'bit' (0-15)"]
    p = _rig_with(tmp_path, 'register = "input"\n  address = 0\n  type = "uint32"',
                  'register = "coil"\n  address = 0\n  type = "uint32"')
    assert _problems(p) == [f"{p}: devices[0] (press01_plc).registers[11] (blow_count): a coil holds one bit: "
                            "type must be 'bit', not 'uint32'"]


def test_duplicate_channel_names(tmp_path):
    p = _rig_with(tmp_path, 'name = "position"', 'name = "force"')
    assert _problems(p) == [f"{p}: devices[0] (press01_plc).registers: [1]: name 'force' already used by [0]"]


def test_all_problems_of_all_files_are_collected(tmp_path):
    shutil.copy(ROOT / "configs" / "demo.toml", tmp_path / "demo.toml")
    (tmp_path / "rigs").mkdir()
    text = RIG.read_text().replace("poll_hz = 50", "poll_hz = 50\ncolour = 1").replace(
        'type = "float16"', 'type = "float33"')
    (tmp_path / "rigs" / "screw-press.toml").write_text(text)
    (tmp_path / "demo.toml").write_text((tmp_path / "demo.toml").read_text().replace(
        'rigs = ["rigs/screw-press.toml", "rigs/srm-rig.toml"]',
        'rigs = ["rigs/screw-press.toml", "rigs/missing.toml"]'))
    with pytest.raises(ConfigError) as e:
        load_settings(tmp_path / "demo.toml")
    text = "\n".join(e.value.problems)
    assert "colour: unknown key" in text and "float33" in text and "rigs/missing.toml: file not found" in text


def test_invalid_toml_names_the_place(tmp_path):
    p = tmp_path / "x.toml"
    p.write_text('name = "a"\nkind = \n')
    [msg] = _problems(p)
    assert msg.startswith(f"{p}: not valid TOML:") and "line 2" in msg


def test_check_exit_codes(tmp_path, capsys):
    assert main(["check", str(ROOT / "configs" / "demo.toml")]) == 0
    p = _rig_with(tmp_path, "port = 15020", "port = 99999")
    assert main(["check", str(p)]) == 2
    err = capsys.readouterr().err
    assert "devices[0] (press01_plc).port" in err and "Traceback" not in err


def test_check_as_a_command_prints_no_traceback(tmp_path):
    p = _rig_with(tmp_path, "unit_id = 1", 'unit_id = "one"')
    r = subprocess.run([sys.executable, "-m", "daq.cli", "check", str(p)], capture_output=True, text=True,
                       cwd=ROOT)
    assert r.returncode == 2
    assert "unit_id" in r.stderr and "Traceback" not in r.stderr


def test_poll_groups_split_the_register_map(tmp_path):
    rig = load_rig(RIG)
    plc = rig.devices[0]
    groups = {g: (hz, [f.name for f in fields]) for g, hz, fields in plc.poll_groups()}
    assert groups["slow"] == (1, ["blow_count", "motor_energy", "recipe"])
    assert groups[None] == (50, ["force", "position", "flywheel_speed", "motor_current", "motor_voltage",
                                 "die_temperature", "state_running", "state_contact", "state_return", "state_fault",
                                 "plc_tick"])


def test_unknown_poll_group(tmp_path):
    p = _rig_with(tmp_path, 'group = "slow"', 'group = "glacial"')
    assert _problems(p) == [f"{p}: devices[0] (press01_plc): registers[11] (blow_count): group 'glacial' is not in "
                            "groups (slow)"]


def test_overbooked_rs485_line(tmp_path):
    p = _rig_with(tmp_path, "poll_hz = 5\n", "poll_hz = 150\n")
    # dies at 150 Hz and lube at 2 Hz on one 115200-baud line: 113 % of its time, above the 80 % allowed
    assert _problems(p) == [f"{p}: (top level): serial line pty/press01-rs485 at 115200 baud is overbooked: its "
                            "units' poll rates need 113% of the line's time (at most 80%); lower poll_hz"]


def test_units_on_one_line_must_agree(tmp_path):
    p = _rig_with(tmp_path, "unit_id = 3\n", "unit_id = 2\n")
    assert _problems(p) == [f"{p}: (top level): two units on serial line pty/press01-rs485 share a unit_id"]
    p = _rig_with(tmp_path, "baudrate = 115200\nunit_id = 3", "baudrate = 57600\nunit_id = 3")
    assert _problems(p) == [f"{p}: (top level): units on serial line pty/press01-rs485 disagree on "
                            "baudrate/parity/stopbits"]


def test_stream_bandwidth_must_fit_the_baudrate(tmp_path):
    p = _rig_with(tmp_path, "baudrate = 4000000", "baudrate = 115200")
    # 10 000 frames/s × 32 bytes × 10 bits a byte (start, 8 data, stop)
    assert _problems(p) == [f"{p}: devices[1] (press01_amp): 10000 frames/s of 32 bytes need 3,200,000 baud; "
                            "baudrate is 115,200"]


def test_the_press_plc_is_timestamped_from_its_clock():
    from drivers.plc_time import TimeRegister

    plc = load_rig(RIG).devices[0]
    assert (plc.time_register, plc.time_unit_s, plc.time_wrap) == ("plc_tick", 0.001, None)
    # the fast group reads plc_tick with force, position, speed in one request; the slow group keeps midpoints
    assert plc.time_source(None) == TimeRegister("plc_tick", 0.001, 2**32, tolerance_s=1.5, latency_ns=800_000)
    assert plc.time_source("slow") is None
    srm = load_rig(ROOT / "configs" / "rigs" / "srm-rig.toml")
    assert all(getattr(d, "time_register", None) is None for d in srm.devices)  # no scan counter to use




@pytest.mark.parametrize(("old", "new", "problem"), [
    ('time_register = "plc_tick"', 'time_register = "plc_tock"',
     "time_register 'plc_tock' is not a register of this device"),
    ('time_register = "plc_tick"', 'time_register = "force"',
     "time_register 'force' is float32: it must be uint16, uint32 or uint64 (declare a signed counter as the "
     "unsigned type of its width)"),
    ('  unit = "ms"\n', '  unit = "ms"\n  scale = 0.001\n',
     "time_register 'plc_tick' must not have scale or offset: time_unit_s gives seconds per count"),
    ("time_unit_s = 0.001", "time_wrap = 100000",
     "time_register 'plc_tick' needs time_unit_s (seconds per count, e.g. 0.001 for a millisecond clock)"),
    ('time_register = "plc_tick"', 'time_wrap = 65536',
     "time_unit_s, time_wrap and latency_ms without time_register"),
    ("time_unit_s = 0.001", "time_unit_s = 0.001\ntime_wrap = 4294967297",
     "time_wrap 4294967297 is more than the 4294967296 values a uint32 holds"),
    ("time_unit_s = 0.001", "time_unit_s = 0.001\ntime_wrap = 2000",
     "time_register 'plc_tick' wraps every 2 s (time_wrap × time_unit_s); it must run at least 3 s "
     "(2 × (timeout_s + 1 s)) between wraps, or a wrap cannot be told from a late reply"),
    ("  address = 9\n", "  address = 20\n",
     "time_register 'plc_tick' must be read in one request with every register of the default poll group, "
     "which takes 2 requests (holding 0..8, holding 20..21): make them one contiguous block of ≤ 125 registers "
     "(max_gap bridges holes) or move the others to another group"),
    ('  name = "plc_tick"\n', '  name = "plc_tick"\n  group = "slow"\n',
     "time_register 'plc_tick' must be read in one request with every register of poll group 'slow', which takes "
     "4 requests (holding 9..10, input 0..1, input 4..7, input 10..15): make them one contiguous block of ≤ 125 "
     "registers (max_gap bridges holes) or move the others to another group"),
])
def test_time_register_errors_are_named(tmp_path, old, new, problem):
    p = _rig_with(tmp_path, old, new)
    assert _problems(p) == [f"{p}: devices[0] (press01_plc): {problem}"]


def test_time_unit_must_be_positive(tmp_path):
    p = _rig_with(tmp_path, "time_unit_s = 0.001", "time_unit_s = 0")
    assert _problems(p) == [f"{p}: devices[0] (press01_plc).time_unit_s: Input should be greater than 0 (got 0)"]


def test_a_calibrated_latency_goes_to_the_clock(tmp_path):
    p = _rig_with(tmp_path, "latency_ms = 0.8", "latency_ms = 0.85")
    assert load_rig(p).devices[0].time_source(None).latency_ns == 850_000


def test_a_gap_bridged_by_max_gap_is_one_request(tmp_path):
    p = _rig_with(tmp_path, "  address = 9\n", "  address = 20\n")
    p.write_text(p.read_text().replace("timeout_s = 0.5\n", "timeout_s = 0.5\nmax_gap = 11\n", 1))
    assert load_rig(p).devices[0].time_source(None).name == "plc_tick"
