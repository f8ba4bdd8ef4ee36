"""The simulated screw press PLC: the physics model behind a Modbus TCP register image."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from drivers.registers import RegisterField
from drivers.sim.modbus_server import ModbusSimServer, RegisterImage
from drivers.sim.press import PressParameters, ScrewPressModel

log = logging.getLogger(__name__)


class ScrewPressSimulator:
    """Runs the press model in real time and serves its PLC registers.

    The PLC scan updates the register image every ``scan_s`` (default 5 ms). With
    ``record=True`` every published image is kept in ``history`` (plc_tick → values)
    so tests can compare what was acquired with what was shown.
    """

    def __init__(self, params: PressParameters, fields: list[RegisterField], host: str,
                 port: int, unit_id: int = 1, seed: int = 1, scan_s: float = 0.005,
                 record: bool = False, recipe: str = "DIE-A113"):
        self.model = ScrewPressModel(params, seed=seed)
        self.image = RegisterImage(fields)
        self.server = ModbusSimServer(self.image, host, port, unit_id)
        self.scan_s = scan_s
        self.recipe = recipe
        self.history: dict[int, dict] | None = {} if record else None
        self._task: asyncio.Task | None = None
        self.last: dict = {}
        self._steps_per_ms = round(1e-3 / self.model.dt)

    @property
    def endpoint(self) -> str:
        """``host:port`` the PLC answers on."""
        return f"{self.server.host}:{self.server.port}"

    def _publish(self, sample: dict) -> None:
        m = self.model
        values = {name: float(arr[-1]) for name, arr in sample.items()}
        values.update(m.state_bits)
        values["blow_count"] = m.blow_count
        values["plc_tick"] = m.step_count // self._steps_per_ms
        values["motor_energy"] = m.energy_J / 1e3
        values["recipe"] = self.recipe
        self.image.set(values)
        self.last = values
        if self.history is not None:
            self.history[values["plc_tick"]] = values

    async def _run(self) -> None:
        start = time.monotonic() - self.model.step_count * self.model.dt
        while True:
            due = int((time.monotonic() - start) / self.model.dt)
            # whole PLC milliseconds only, so one plc_tick always shows one image
            n = (due - self.model.step_count) // self._steps_per_ms * self._steps_per_ms
            if n > 0:
                self._publish(self.model.advance(min(n, 20_000)))
            await asyncio.sleep(self.scan_s)

    def pause(self) -> None:
        """Freeze the model: the PLC keeps answering with the last image (a stuck device)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def resume(self) -> None:
        """Let the model run on from where it was paused."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"press-sim {self.endpoint}")

    async def start(self) -> None:
        """Publish the initial image, start serving and start the model clock."""
        self._publish(self.model.advance(self._steps_per_ms))
        await self.server.start()
        self._task = asyncio.create_task(self._run(), name=f"press-sim {self.endpoint}")

    async def stop(self) -> None:
        """Stop the model and the server."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.server.stop()
