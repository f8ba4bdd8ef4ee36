"""Simulated equipment for rigs marked ``simulate = true``, built from their rig files.

Developer option: with the environment variable ``RIGDAQ_SIM_TRUTH=DIR`` set, every
simulator built here (by ``daq run`` or ``daq sim``) records the true time of each sample
it shows into ``DIR`` (:mod:`drivers.sim.truth`; used by ``bench/timing.py``). Not a
product setting: it is meant for benchmark-length runs.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from daq.acquisition.transports import device_path, transport_of
from daq.config import Rig
from daq.rigs import kind_of
from drivers.sim.faults import Scheduled
from drivers.sim.rig import RigSimulator

__all__ = ["TRUTH_ENV", "build_simulator", "counter_origin_file", "device_path"]

log = logging.getLogger(__name__)


def counter_origin_file(rig: Rig, data_dir: Path) -> Path:
    """Where the rig's simulated instruments keep their sample counters' origin.

    Shared by ``daq run`` and ``daq sim``: whichever runs the simulator, a restart
    continues each stream's counter as a real instrument that kept running would.
    """
    return data_dir / "sim" / f"{rig.name}.json"


TRUTH_ENV = "RIGDAQ_SIM_TRUTH"


def build_simulator(rig: Rig, data_dir: Path, record: bool = False,
                    truth_dir: Path | None = None) -> RigSimulator:
    """The rig's simulator: one model, a face per device, where the rig file says.

    ``truth_dir`` (default: ``$RIGDAQ_SIM_TRUTH`` if set): record the true sample times there.
    """
    faces: dict[str, list] = {}
    for dev in rig.devices:
        face = transport_of(dev).sim_face(dev, data_dir)
        if face is None:
            raise ValueError(f"{rig.name}/{dev.name}: transport {dev.transport} cannot be simulated")
        faces.setdefault(face[0], []).append(face[1])
    sim = kind_of(rig).simulator(rig, faces, data_dir, record, counter_origin_file(rig, data_dir))
    if truth_dir is None and os.environ.get(TRUTH_ENV):
        truth_dir = Path(os.environ[TRUTH_ENV])
    if truth_dir is not None:
        log.warning("%s: recording true sample times in %s (developer option %s)", rig.name, truth_dir,
                    TRUTH_ENV)
        sim.set_truth_sink(truth_dir)
    sim.faults.schedule = [Scheduled(f.device, f.kind, f.at_s, f.duration_s)
                           for f in rig.simulation.faults]
    return sim
