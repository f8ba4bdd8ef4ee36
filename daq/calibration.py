"""Instruments and their calibration: which sensor measures a channel, and whether it may still be used.

A rig file names the sensor behind a channel in ``[[instruments]]`` (serial, model, sensitivity
with its unit, calibration date, due date, certificate number). A calibration is

* ``valid`` more than :data:`DUE_SOON_DAYS` days before its due date,
* ``due_soon`` from :data:`DUE_SOON_DAYS` days before the due date up to and including the
  due date itself (``/api/health`` lists it, and a low-priority alarm is raised),
* ``overdue`` from the day after the due date: a run on that rig is refused (HTTP 409) unless
  the rig file says ``calibration_policy = "warn"``.

Days are counted on the UTC calendar.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from daq.schema import Name, Strict

#: a calibration is "due soon" this many days before its due date
DUE_SOON_DAYS = 14

Status = Literal["valid", "due_soon", "overdue"]


def _as_date(v: object) -> dt.date:
    """A TOML date (``2026-03-02``) or the same as a string; anything else is a clear error."""
    if isinstance(v, dt.datetime):
        raise ValueError(f"must be a date YYYY-MM-DD without a time (got {v.isoformat()!r})")
    if isinstance(v, dt.date):
        return v
    if isinstance(v, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", v.strip()):
        try:
            return dt.date.fromisoformat(v.strip())
        except ValueError as e:
            raise ValueError(f"must be a date YYYY-MM-DD: {e} (got {v!r})") from None
    raise ValueError(f"must be a date YYYY-MM-DD (got {v!r})")


class Instrument(Strict):
    """The sensor behind one channel, with its calibration."""

    channel: Name = Field(description="the channel it measures (as named under the device)")
    device: Name | None = Field(default=None, description="the device of that channel; needed only when "
                                "two devices of the rig have a channel of that name")
    serial: str = Field(min_length=1, max_length=100, description="the sensor's serial number")
    model: str = Field(default="", max_length=200, description="manufacturer and type")
    sensitivity: float = Field(description="sensitivity or calibration factor from the certificate")
    unit: str = Field(default="", max_length=32, description="unit of the sensitivity, e.g. mV/V or pC/kN")
    calibrated_on: dt.date
    due_on: dt.date = Field(description="the calibration is valid up to and including this day")
    certificate: str = Field(min_length=1, max_length=200, description="calibration certificate number")

    @field_validator("calibrated_on", "due_on", mode="before")
    @classmethod
    def _date(cls, v: object) -> dt.date:
        return _as_date(v)

    @model_validator(mode="after")
    def _order(self) -> Instrument:
        if self.due_on <= self.calibrated_on:
            raise ValueError(f"due_on {self.due_on} must be after calibrated_on {self.calibrated_on} "
                             f"(sensor {self.serial})")
        return self


def today_utc() -> dt.date:
    """Today on the UTC calendar."""
    return dt.datetime.now(dt.UTC).date()


def days_left(due_on: dt.date, today: dt.date) -> int:
    """Days from ``today`` to the due date (0 on the due date, negative once overdue)."""
    return (due_on - today).days


def status_of(due_on: dt.date, today: dt.date) -> Status:
    """``valid`` (more than 14 days left), ``due_soon`` (14 … 0 days left) or ``overdue`` (past the due date)."""
    left = days_left(due_on, today)
    if left < 0:
        return "overdue"
    return "due_soon" if left <= DUE_SOON_DAYS else "valid"


def instrument_record(inst: Instrument, today: dt.date) -> dict:
    """One instrument as a run's config keeps it (and the certificate lists it)."""
    return {"channel": inst.channel, "device": inst.device, "serial": inst.serial, "model": inst.model,
            "sensitivity": inst.sensitivity, "unit": inst.unit, "calibrated_on": inst.calibrated_on.isoformat(),
            "due_on": inst.due_on.isoformat(), "certificate": inst.certificate,
            "status": status_of(inst.due_on, today)}


def instruments_of(rig, today: dt.date) -> list[dict]:
    """Every instrument of a rig with its calibration status on ``today``."""
    return [instrument_record(i, today) for i in getattr(rig, "instruments", [])]


def overdue(rig, today: dt.date) -> list[Instrument]:
    """The rig's instruments whose calibration is overdue on ``today``."""
    return [i for i in getattr(rig, "instruments", []) if status_of(i.due_on, today) == "overdue"]


def overdue_message(rig_name: str, late: list[Instrument], today: dt.date) -> str:
    """What a refused (or warned) run start says: channel, sensor serial and due date of each."""
    parts = [f"channel {i.channel} ({i.device}): sensor {i.serial} was due for calibration on {i.due_on} "
             f"({-days_left(i.due_on, today)} days ago)" for i in late]
    return f"{rig_name}: calibration overdue: " + "; ".join(parts)


def warnings(rigs, today: dt.date) -> list[dict]:
    """Calibrations due within 14 days or overdue: ``{rig, channel, serial, due_on, days_left}``, soonest first."""
    out = []
    for rig in rigs:
        for i in getattr(rig, "instruments", []):
            if status_of(i.due_on, today) != "valid":
                out.append({"rig": rig.name, "channel": i.channel, "serial": i.serial,
                            "due_on": i.due_on.isoformat(), "days_left": days_left(i.due_on, today)})
    return sorted(out, key=lambda w: (w["days_left"], w["rig"], w["channel"]))


def check_instruments(instruments: list[Instrument], devices) -> list[str]:
    """Problems of a rig's ``[[instruments]]`` against its devices; fills in each one's ``device``."""
    channels: dict[str, list[str]] = {}
    for d in devices:
        for ch in d.channel_units():
            channels.setdefault(ch, []).append(d.name)
    problems: list[str] = []
    seen: dict[tuple[str, str], int] = {}
    for n, inst in enumerate(instruments):
        where = f"instruments[{n}] (sensor {inst.serial})"
        owners = channels.get(inst.channel, [])
        if inst.device is not None:
            if inst.device not in {d.name for d in devices}:
                problems.append(f"{where}.device: no device {inst.device!r}; devices: "
                                f"{', '.join(d.name for d in devices)}")
                continue
            if inst.device not in owners:
                problems.append(f"{where}.channel: device {inst.device} has no channel {inst.channel!r}")
                continue
        elif not owners:
            problems.append(f"{where}.channel: no channel {inst.channel!r} on this rig; channels: "
                            f"{', '.join(sorted(channels))}")
            continue
        elif len(owners) > 1:
            problems.append(f"{where}.channel: {inst.channel!r} is a channel of {' and '.join(owners)}: "
                            f"name one with device = \"…\"")
            continue
        else:
            inst.device = owners[0]
        key = (inst.device, inst.channel)
        if key in seen:
            problems.append(f"{where}.channel: {inst.device}.{inst.channel} already has a sensor "
                            f"(instruments[{seen[key]}])")
        seen[key] = n
    return problems
