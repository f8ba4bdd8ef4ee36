"""The plant topology, as scripts/plant-demo runs it: two agents, two API nodes, real servers.

PostgreSQL (the shared catalogue), mosquitto (live data), influxd (line and central
databases), ``daq agent`` for the press (line 1) and for the SRM rig (line 2), and two
``daq api`` nodes, each a real process.
"""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import create_engine, text

from daq.catalogue import Catalogue
from daq.reports.certificate import build_report
from tests.plant import running_plant

pytestmark = [pytest.mark.plant, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def plant(postgres, influxd, tmp_path_factory):
    with running_plant(postgres, influxd.url, tmp_path_factory.mktemp("plant"), api_nodes=2) as p:
        yield p


def _until(cond, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while True:
        got = cond()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out: {what}"
        time.sleep(0.25)


def _cycles(plant, rig: str) -> list[tuple[int, str]]:
    engine = create_engine(plant.pg_url)
    try:
        with engine.connect() as c:
            rows = c.execute(text("SELECT cycle_no, uid FROM cycles WHERE rig = :rig ORDER BY cycle_no"),
                             {"rig": rig}).all()
    finally:
        engine.dispose()
    return [(int(n), u) for n, u in rows]


def test_qa_on_an_api_node_gets_both_agents_runs_and_the_single_box_certificates(plant):
    api = plant.api("api1")
    runs = {}
    for rig in ("press-01", "srm-01"):
        r = api.post("/api/runs", json={"rig": rig, "operator": "QA test", "part_number": "P-1"})
        assert r.status_code == 201, r.text
        runs[rig] = r.json()["id"]
    # the agents take the runs from the catalogue and file cycles into them
    for rig, agent in (("press-01", "agent-line1"), ("srm-01", "agent-line2")):
        _until(lambda a=agent, g=rig: plant.nodes[a].health()["active_runs"].get(g) == runs[g], 10, f"{rig} run")
    _until(lambda: all(api.get(f"/api/runs/{i}").json()["cycles"] for i in runs.values()), 60, "a cycle each")
    for run_id in runs.values():
        assert api.post(f"/api/runs/{run_id}/stop").status_code == 200
    listed = {r["id"]: r for r in api.get("/api/runs").json()["runs"]}
    assert {listed[i]["rig"] for i in runs.values()} == {"press-01", "srm-01"}
    # the certificate the API node serves is what the single-box path builds from the same catalogue
    time.sleep(2.5)  # the agents close the runs and file their last results (they follow within 1 s)
    cat = Catalogue(plant.pg_url)
    try:
        for run_id in runs.values():
            served = plant.api("api2").get(f"/api/runs/{run_id}/report", params={"format": "json"}).json()
            local = build_report(cat, run_id, None)
            assert served == local
            assert served["summary"]["cycles"] >= 1
    finally:
        cat.close()


def test_two_api_nodes_starting_one_rig_at_once_one_wins(plant):
    barrier = threading.Barrier(2)

    def start(node: str):
        with plant.api(node) as c:
            barrier.wait()
            return c.post("/api/runs", json={"rig": "press-01", "operator": node})

    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(start, ["api1", "api2"]))
    assert sorted(a.status_code for a in answers) == [201, 409]
    won = next(a for a in answers if a.status_code == 201).json()["id"]
    assert "still active" in next(a for a in answers if a.status_code == 409).json()["detail"]
    assert plant.api().post(f"/api/runs/{won}/stop").status_code == 200


def _analysed(node, rig: str) -> int:
    """The agent's count of cycles analysed on ``rig`` (its /metrics)."""
    for line in httpx.get(node.base + "/metrics", timeout=5.0).text.splitlines():
        if line.startswith(f'rigdaq_cycles_analysed_total{{rig="{rig}"}}'):
            return int(float(line.split()[-1]))
    raise AssertionError(f"no rigdaq_cycles_analysed_total for {rig}")


def test_postgres_away_for_20_s_every_cycle_is_filed_exactly_once(plant):
    agent = plant.nodes["agent-line1"]
    before = _analysed(agent, "press-01")
    restarts = agent.health()["task_restarts"]
    plant.postgres.halt()
    try:
        time.sleep(20.0)  # the press blows every 6 s: cycles wait in the agent's outbox
        during = _analysed(agent, "press-01")
        assert during > before and agent.health()["catalogue"]["last_error"]  # blows, and the outage seen
    finally:
        plant.postgres.resume()
    _until(lambda: agent.health()["catalogue"]["last_error"] is None, 60, "the outbox drained")

    def filed_exactly_once():
        # every cycle the agent analysed is in the catalogue once: numbers 1…N, each with its own uid
        n = _analysed(agent, "press-01")
        rows = _cycles(plant, "press-01")
        return [k for k, _ in rows] == list(range(1, n + 1)) and len({u for _, u in rows}) == n and rows

    _until(filed_exactly_once, 30, "every cycle filed once, those of the outage included")
    assert agent.health()["task_restarts"] == restarts  # the outage restarted no task


def test_one_agent_killed_and_restarted_leaves_the_other_alone_and_files_nothing_twice(plant):
    line1, line2 = plant.nodes["agent-line1"], plant.nodes["agent-line2"]
    h0 = line1.health()
    line2.stop(signal.SIGKILL)
    time.sleep(2.0)
    line2.start()
    h1 = line1.health()
    # line 1 went on polling, healthy, with no task of its restarted meanwhile
    assert h1["devices"][0]["polls"] > h0["devices"][0]["polls"] and h1["status"] == "ok"
    assert h1["task_restarts"] == h0["task_restarts"]
    assert [d["missing_samples"] for d in h1["devices"]] == [d["missing_samples"] for d in h0["devices"]]
    rows = _cycles(plant, "srm-01")
    assert len({n for n, _ in rows}) == len(rows) == len({u for _, u in rows})


def test_the_live_feed_resumes_by_itself_after_the_broker_restarts(plant):
    api = plant.nodes["api1"]
    received = api.health()["mqtt_live"]["received"]
    plant.broker.restart()
    _until(lambda: api.health()["mqtt_live"]["received"] > received + 20, 30, "live data again")
    _until(lambda: plant.nodes["agent-line1"].health()["mqtt"]["connected"], 30, "the agent reconnected")
