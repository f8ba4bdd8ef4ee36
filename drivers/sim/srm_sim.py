"""The simulated SRM test rig on its wire protocols: controller on Modbus RTU, analyser stream."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from drivers.sim.rig import PlcFace, RigSimulator, RtuFace, StreamFace
from drivers.sim.srm import SrmMotor
from drivers.sim.srm_rig import RigMechanics, SeqStep, SrmRigModel
from drivers.sim.truth import TruthSink

log = logging.getLogger(__name__)


class SrmRigSimulator(RigSimulator):
    """The motor, dynamometer and test sequence behind the rig controller and the analyser.

    The controller's ``command`` register (if the map has it, writable) starts (1) or
    stops (2) the test sequence. ``stream_buffer_s`` and ``truth_sink``: as
    :class:`RigSimulator`.
    """

    task_name = "srm-sim"

    def __init__(self, motor: SrmMotor, sequence: list[SeqStep], rate_hz: float,
                 plcs: list[PlcFace] = (), streams: list[StreamFace] = (), rtus: list[RtuFace] = (),
                 seed: int = 1, clock_ppm: float = 0.0, record: bool = False,
                 mech: RigMechanics | None = None, autostart: bool = True,
                 counter_file: Path | None = None, stream_buffer_s: float = 2.0,
                 truth_sink: TruthSink | None = None, *, opcuas: list = ()):
        model = SrmRigModel(motor, sequence, rate_hz, mech, seed=seed, autostart=autostart)
        super().__init__(model, plcs, streams, rtus, seed, 0.005, clock_ppm, record, counter_file,
                         stream_buffer_s, truth_sink, opcuas=opcuas)
        self._commands = {}
        for faces in (plcs, rtus):
            for face in faces:
                for f in face.fields:
                    if f.name == "command" and f.writable:
                        self._commands[(face.unit_id, f.table, f.address)] = face.name
        for _, server in self.lines.values():
            server.on_write = self._on_write
        for server in self.servers.values():
            server.on_write = self._on_write

    def _on_write(self, unit: int, table: str, address: int, registers: list[int]) -> None:
        if (unit, table, address) in self._commands and registers:
            log.info("srm rig: controller command %d", registers[0])
            self.model.command(int(registers[0]))

    async def prepare(self) -> None:
        """Solve the sequence's operating points (in a worker thread)."""
        if self._prepared:
            return
        t0 = time.monotonic()
        await asyncio.to_thread(self.model.prepare)
        self._prepared = True
        log.info("srm rig: %d operating points solved in %.2f s", len(self.model.points),
                 time.monotonic() - t0)
