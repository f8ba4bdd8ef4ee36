"""daq.state.CrashState: the heartbeat and the commit thread both write the state file."""

import json
import threading

from daq.state import CrashState


def test_a_heartbeat_never_writes_counters_older_than_a_commit_wrote(tmp_path):
    state = CrashState(tmp_path / "service.state")
    safe = {"amp": 100}  # the writer's safe counters
    asked, go = threading.Event(), threading.Event()

    def heartbeat_counters():  # the heartbeat's copy, taken before the commit below moves on
        copy = dict(safe)
        asked.set()
        go.wait(10)
        return copy

    def commit():
        safe["amp"] = 200
        state.write(lambda: dict(safe))

    beat = threading.Thread(target=state.write, args=(heartbeat_counters,))
    beat.start()
    asked.wait(10)
    late = threading.Thread(target=commit)
    late.start()
    late.join(0.3)  # a commit that could write now (the copy taken outside the lock) has written
    go.set()
    beat.join(10)
    late.join(10)
    assert json.loads(state.path.read_text())["counters"] == {"amp": 200}
