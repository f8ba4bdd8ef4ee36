"""Events: run start/stop, alarms, device faults and data gaps (InfluxDB measurement ``events``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass(slots=True)
class Event:
    """Something that happened, with where and why.

    ``kind`` is a short machine name (``device_fault``, ``device_recovered``,
    ``data_gap``, ``storage_fault``, ``queue_overflow`` …); ``message`` says it for people.
    """

    kind: str
    message: str
    rig: str = ""
    device: str = ""
    level: str = "info"
    t_ns: int = field(default_factory=time.time_ns)
    fields: dict[str, float | int | str] = field(default_factory=dict)
