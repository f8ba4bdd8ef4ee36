"""The simulated screw press: its model, plus the PLC's counters and recipe.

:class:`ScrewPressSimulator` shows the press model (:mod:`drivers.sim.press`) behind a PLC
(Modbus TCP or OPC UA), RS-485 units and a 10 kHz force amplifier stream.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from drivers.sim.press import PressParameters, ScrewPressModel
from drivers.sim.rig import OpcUaFace, PlcFace, RigSimulator, RtuFace, StreamFace
from drivers.sim.truth import TruthSink


class ScrewPressSimulator(RigSimulator):
    """The screw press: its model, plus the PLC's counters, recipe and auxiliary units."""

    task_name = "press-sim"

    def __init__(self, params: PressParameters, plcs: list[PlcFace] = (),
                 streams: list[StreamFace] = (), rtus: list[RtuFace] = (), seed: int = 1,
                 scan_s: float = 0.005, clock_ppm: float = 0.0, record: bool = False,
                 recipe: str = "DIE-A113", counter_file: Path | None = None,
                 stream_buffer_s: float = 2.0, truth_sink: TruthSink | None = None, *,
                 opcuas: list[OpcUaFace] = ()):
        self.recipe = recipe
        super().__init__(ScrewPressModel(params, seed=seed), plcs, streams, rtus, seed, scan_s,
                         clock_ppm, record, counter_file, stream_buffer_s, truth_sink, opcuas=opcuas)

    def _register_values(self, values: dict) -> dict:
        m = self.model
        out: dict = dict(m.state_bits)
        out.update(blow_count=m.blow_count, motor_energy=m.energy_J / 1e3, recipe=self.recipe)
        out.update(self._auxiliaries({**values, **out}))
        return out

    def _auxiliaries(self, v: dict) -> dict:
        """Die heater controller and lube unit, derived from the model's state."""
        die = v["die_temperature"]
        return {
            "upper_die_temperature": die + 3.0,
            "lower_die_temperature": die - 4.0,
            "die_heater_power": min(100.0, max(0.0, (260.0 - die) * 8.0)),
            "oil_temperature": 42.0 + 8.0 * (1 - np.exp(-self.model.blow_count / 40.0)),
            "oil_pressure": 180.0 if v["state_running"] else 35.0,
            "lube_pump_running": True,
        }
