"""``daq run`` for ``bench/soak.py``, plus one observation: what it acquired, written at its clean stop.

    python -m bench.soak_daq run CONFIG        # exactly ``daq run CONFIG``

The process runs ``daq.cli.main`` unchanged. The only addition: after
``Service.stop()`` has returned (acquisition cancelled, its last partial blocks
published, storage drained), the samples each acquisition counted, the supervised task
restarts and what storage still held are written as JSON to ``$RIGDAQ_SOAK_FINAL``.
Outside the process the final counts cannot be read: ``/api/health`` is gone by then,
and a reading taken before SIGTERM misses the polls that happen between it and the
stop. Nothing here changes what the service does.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from daq import cli
from daq.service import Service

_stop = Service.stop


async def _stop_and_record(self: Service) -> None:
    await _stop(self)
    target = os.environ.get("RIGDAQ_SOAK_FINAL")
    if not target:
        return
    w = self.writer
    final = {
        "pid": os.getpid(),
        "devices": {a.status.device: int(a.status.samples) for a in self.acquisitions},
        "missing_samples": {a.status.device: int(a.status.missing_samples) for a in self.acquisitions},
        "task_restarts": self.supervisor.restarts,
        "tasks": {t.name: {"restarts": t.restarts, "last_error": t.last_error}
                  for t in self.supervisor.status.values() if t.restarts},
        "dropped_lines": w.stats.dropped_lines if w else None,
        "rejected_lines": w.stats.rejected_lines if w else None,
        "spool_lines_left": w.spool.lines if w else None,
        "spool_held_in_memory": sum(b.lines for b in w.spool.batches if b.in_memory) if w else None,
        "catalogue_outbox_left": (len(self.catalogue_writer.outbox)
                                  if self.catalogue_writer and self.catalogue_writer.outbox else 0),
    }
    tmp = Path(target).with_suffix(".tmp")
    tmp.write_text(json.dumps(final))
    tmp.replace(target)


Service.stop = _stop_and_record

if __name__ == "__main__":
    sys.exit(cli.main())
