"""The export worker: ``python -m daq.export``.

It reads an :class:`ExportPlan` as JSON on stdin, writes the file and prints one JSON
line: the summary, or ``{"error", "status"}`` (exit 1).
"""

from __future__ import annotations

import json
import logging
import sys

from daq.export import ExportError, ExportPlan, export_run


def main() -> int:
    """Run one export."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    plan = ExportPlan.from_json(sys.stdin.read())
    try:
        summary = export_run(plan)
    except ExportError as e:
        print(json.dumps({"error": str(e), "status": e.status}))
        return 1
    except OSError as e:
        print(json.dumps({"error": f"cannot write {plan.output}: {e.strerror or e}", "status": 500}))
        return 1
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
