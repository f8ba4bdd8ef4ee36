"""Calibration dates (daq.calibration): status by days left, health warnings, refusal text, config errors."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest

from daq.calibration import days_left, overdue, overdue_message, status_of, warnings
from daq.config import ConfigError, load_rig
from tests.conftest import ROOT

TODAY = dt.date(2026, 11, 28)
PRESS = ROOT / "configs" / "rigs" / "screw-press.toml"


@pytest.mark.parametrize(("days", "status"), [(15, "valid"), (14, "due_soon"), (1, "due_soon"), (0, "due_soon"),
                                              (-1, "overdue"), (-400, "overdue")])
def test_status_by_days_to_the_due_date(days, status):
    due = TODAY + dt.timedelta(days=days)
    assert days_left(due, TODAY) == days
    assert status_of(due, TODAY) == status


def _rig(tmp_path: Path, due: dict[str, str], policy: str | None = None):
    """The shipped press with the due dates of some sensors (by channel) changed."""
    text = PRESS.read_text()
    for channel, date in due.items():
        head, sep, rest = text.partition(f'[[instruments]]\nchannel = "{channel}"\n')
        assert sep, channel
        rest = re.sub(r"^due_on = \S+$", f"due_on = {date}", rest, count=1, flags=re.M)
        text = head + sep + rest
    if policy:
        text = text.replace('calibration_policy = "refuse"', f'calibration_policy = "{policy}"')
    p = tmp_path / "press.toml"
    p.write_text(text)
    return load_rig(p)


def test_the_shipped_rigs_are_calibrated_for_years():
    for name in ("screw-press.toml", "srm-rig.toml"):
        rig = load_rig(ROOT / "configs" / "rigs" / name)
        assert rig.calibration_policy == "refuse"
        assert rig.instruments
        assert all(days_left(i.due_on, TODAY) > 365 for i in rig.instruments), name


def test_warnings_list_due_soon_and_overdue_sensors_soonest_first(tmp_path):
    rig = _rig(tmp_path, {"force_1": "2026-12-13", "force_2": "2026-12-12", "force_3": "2026-11-28",
                          "position": "2026-11-27"})
    assert warnings([rig], TODAY) == [
        {"rig": "press-01", "channel": "position", "serial": "HEID-LC415-38812207", "due_on": "2026-11-27",
         "days_left": -1},
        {"rig": "press-01", "channel": "force_3", "serial": "HBM-C6A-2611045", "due_on": "2026-11-28",
         "days_left": 0},
        {"rig": "press-01", "channel": "force_2", "serial": "HBM-C6A-2611044", "due_on": "2026-12-12",
         "days_left": 14},
    ]  # force_1, 15 days ahead, is not yet due
    assert [i.channel for i in overdue(rig, TODAY)] == ["position"]
    assert overdue_message("press-01", overdue(rig, TODAY), TODAY) == (
        "press-01: calibration overdue: channel position (press01_amp): sensor HEID-LC415-38812207 was due for "
        "calibration on 2026-11-27 (1 days ago)")


def _bad(tmp_path: Path, old: str, new: str) -> list[str]:
    p = tmp_path / "bad.toml"
    text = PRESS.read_text()
    assert old in text
    p.write_text(text.replace(old, new, 1))
    with pytest.raises(ConfigError) as e:
        load_rig(p)
    return e.value.problems


def test_config_errors_name_the_file_and_the_field(tmp_path):
    p = tmp_path / "bad.toml"
    assert _bad(tmp_path, "due_on = 2029-10-12", "due_on = 2025-10-12") == [
        f"{p}: instruments[0]: due_on 2025-10-12 must be after calibrated_on 2026-10-12 (sensor HBM-C6A-2611043)"]
    assert _bad(tmp_path, "calibrated_on = 2026-10-12", 'calibrated_on = "12.10.2026"') == [
        f"{p}: instruments[0].calibrated_on: must be a date YYYY-MM-DD (got '12.10.2026')"]
    assert _bad(tmp_path, "due_on = 2029-10-12", 'due_on = "2029-02-30"') == [
        f"{p}: instruments[0].due_on: must be a date YYYY-MM-DD: day is out of range for month (got '2029-02-30')"]
    assert _bad(tmp_path, 'channel = "force_1"', 'channel = "force_9"')[0].startswith(
        f"{p}: (top level): instruments[0] (sensor HBM-C6A-2611043).channel: no channel 'force_9' on this rig; "
        "channels: blow_count, ")
    assert _bad(tmp_path, 'device = "press01_amp"              # the PLC has a position channel too', "") == [
        f"{p}: (top level): instruments[4] (sensor HEID-LC415-38812207).channel: 'position' is a channel of "
        "press01_plc and press01_amp: name one with device = \"…\""]
    assert _bad(tmp_path, 'calibration_policy = "refuse"', 'calibration_policy = "ignore"') == [
        f"{p}: calibration_policy: Input should be 'refuse' or 'warn' (got 'ignore')"]
