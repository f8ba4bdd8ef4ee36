"""The catalogue on SQLite and on a real PostgreSQL: migrations, idempotent filing, one active run per rig.

Several acquisition agents and API nodes share one PostgreSQL catalogue, so what must hold
there is held by the database, and tested with two :class:`Catalogue` instances (two
engines, as two processes or machines would have):

* a cycle or artifact filed again — a retry, an outbox replay, the update once its cycle
  time is known, another agent replaying it — stays one row (UNIQUE ``uid``);
* of two run starts on one rig at once, exactly one wins; the other is a 409 ``RunError``;
* an API key created through one instance is accepted by another;
* a catalogue made by the version before migrations is upgraded in place, its data kept.
"""

from __future__ import annotations

import asyncio
import copy
import importlib.util
import pickle
import threading
from types import SimpleNamespace

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, func, inspect, select, text

from daq.bus import SampleBus
from daq.catalogue import Catalogue, CatalogueWriter
from daq.catalogue.keys import KeyStore
from daq.catalogue.migrations import BASELINE, HERE, head
from daq.catalogue.outbox import Outbox
from daq.catalogue.runs import RunError, RunManager
from daq.catalogue.store import legacy_cycle_uid
from daq.catalogue.tables import artifacts, cycles, meta, runs
from daq.cycles import CycleResult, RunArtifact

pytestmark = pytest.mark.timeout(120)

T0 = 1_795_000_000_000_000_000


@pytest.fixture
def opened(url):
    """Catalogues opened on ``url`` (closed after the test)."""
    cats: list[Catalogue] = []

    def open_(u: str = url) -> Catalogue:
        cats.append(Catalogue(u))
        return cats[-1]

    yield open_
    for c in cats:
        c.close()


def _cycle(no: int, t_ns: int, run: str = "", samples=None) -> CycleResult:
    return CycleResult("press-01", no, t_ns, "ok", {"peak_force_kN": 90_000.0 + no, "cycle_time_s": None}, [],
                       "press-1.0", f"{no:064x}", run, kind="screw_press", end_ns=t_ns + 10**8,
                       info={"part": no}, samples=samples)


def _count(cat: Catalogue, table) -> int:
    with cat.engine.connect() as c:
        return c.execute(select(func.count()).select_from(table)).scalar_one()


def _baseline():
    """The migration module of the schema as the version before migrations made it."""
    spec = importlib.util.spec_from_file_location("baseline", HERE / "versions" / f"{BASELINE}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# -- schema ------------------------------------------------------------------------------------
def test_migrated_schema_is_the_table_definitions_and_opening_twice_at_once_is_fine(url, opened):
    got: list[Catalogue | BaseException] = []
    barrier = threading.Barrier(3)

    def open_one():
        barrier.wait()
        try:
            got.append(opened())
        except BaseException as e:
            got.append(e)

    threads = [threading.Thread(target=open_one) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(isinstance(c, Catalogue) for c in got) and len(got) == 3, got
    with got[0].engine.connect() as c:
        assert c.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [head()]
        assert compare_metadata(MigrationContext.configure(c), meta) == []
    names = {ix["name"]: ix for ix in inspect(got[0].engine).get_indexes("runs")}
    assert names["one_active_run_per_rig"]["unique"]


# -- idempotent filing -----------------------------------------------------------------------------
def test_a_cycle_filed_three_times_is_one_row(url, opened, tmp_path):
    a, b = opened(), opened()  # b: another agent (or the same one after a restart) on the same database
    run = a.start_run("press-01", T0)
    c = _cycle(1, T0 + 5, str(run.id))
    cid = a.file_cycle(c)
    assert a.file_cycle(c) == cid  # a retry (the first answer was lost)
    box = Outbox(tmp_path / "outbox")  # an outbox replay: the pickled copy has the same uid
    box.put(c)
    replayed = next(box.items())
    assert replayed is not c and replayed.uid == c.uid
    assert b.file_cycle(replayed) == cid
    assert _count(a, cycles) == 1
    with a.engine.connect() as conn:
        assert conn.execute(select(cycles.c.uid)).scalar_one() == c.uid


def test_a_rejudged_cycle_updates_its_row(url, opened):
    cat = opened()
    run = cat.start_run("press-01", T0)
    samples = (T0 + np.arange(100, dtype=np.int64) * 100, {"force": np.linspace(0, 1, 100)})
    first = _cycle(1, T0 + 5, str(run.id), samples=samples)
    cid = cat.file_cycle(first)
    second = _cycle(2, T0 + 6 * 10**9, str(run.id))
    cat.file_cycle(second)
    # the next blow gives the first its cycle time, judged against a limit: published again, same object
    first.metrics["cycle_time_s"] = 6.0
    first.verdict, first.reasons = "nok", ["cycle_time_s = 6 above max 5"]
    assert cat.file_cycle(first) == cid
    assert cat.file_cycle(copy.deepcopy(first)) == cid
    total, rows = cat.cycles_of_run(run.id)
    assert total == 2 and _count(cat, cycles) == 2
    assert rows[0]["metrics"]["cycle_time_s"] == 6.0 and rows[0]["verdict"] == "nok"
    assert rows[0]["reasons"] == ["cycle_time_s = 6 above max 5"] and rows[0]["cycle_no"] == 1
    # a result made before results had uids (or by a tracker that made it anew) for a filed start
    again = _cycle(1, T0 + 5, str(run.id))
    again.metrics["cycle_time_s"] = 6.5
    assert again.uid != first.uid and cat.file_cycle(again) == cid
    assert _count(cat, cycles) == 2 and cat.cycle(cid)["metrics"]["cycle_time_s"] == 6.5
    assert cat.cycle(cid)["uid"] == first.uid  # the row keeps its identity
    t, ch = cat.cycle_samples(cid)
    assert np.array_equal(t, samples[0]) and ch["force"].tobytes() == samples[1]["force"].tobytes()


def test_artifacts_are_filed_once(url, opened, tmp_path):
    a, b = opened(), opened()
    run = a.start_run("srm-01", T0)
    art = RunArtifact("srm-01", str(run.id), "locked_rotor_characterisation", T0 + 10,
                      {"psi": [0.1, 0.2], "current": np.float64(3.5)})
    aid = a.file_artifact(art)
    assert a.file_artifact(art) == aid
    box = Outbox(tmp_path / "outbox")
    box.put(art)
    assert b.file_artifact(next(box.items())) == aid
    art.data["psi"] = [0.1, 0.25]
    assert b.file_artifact(art) == aid
    rows = a.artifacts_of_run(run.id)
    assert len(rows) == 1 and _count(a, artifacts) == 1
    assert rows[0]["data"] == {"psi": [0.1, 0.25], "current": 3.5} and rows[0]["uid"] == art.uid
    other = RunArtifact("srm-01", str(run.id), "locked_rotor_characterisation", T0 + 20, {"psi": []})
    assert a.file_artifact(other) != aid and _count(a, artifacts) == 2


def test_archive_round_trip_is_bit_identical(url, opened):
    a, b = opened(), opened()
    rng = np.random.default_rng(3)
    n = 5000
    t = T0 + np.cumsum(rng.integers(90_000, 110_000, n)).astype(np.int64)
    chans = {"force": rng.normal(50_000, 3_000, n), "stroke": np.round(rng.uniform(0, 300, n), 3),
             "odd": np.r_[np.nan, np.inf, -np.inf, -0.0, 5e-324, np.zeros(n - 5)]}
    cid = a.file_cycle(_cycle(1, int(t[0]), samples=(t, chans)))
    t2, c2 = b.cycle_samples(cid)
    assert t2.tobytes() == t.tobytes()
    assert sorted(c2) == sorted(chans)
    for k, v in chans.items():
        assert c2[k].tobytes() == v.tobytes(), k
    assert b.archive_bytes() > 0


# -- one active run per rig ---------------------------------------------------------------------
def test_two_catalogues_starting_a_run_on_one_rig_at_once_get_one_run(url, opened):
    a, b = opened(), opened()

    def start(cat, who, barrier, got, attempt):
        barrier.wait()
        try:
            got.append(cat.start_run("press-01", T0 + attempt, operator=who))
        except RunError as err:
            got.append(err)

    for attempt in range(5):
        barrier = threading.Barrier(2)
        got: list[object] = []
        threads = [threading.Thread(target=start, args=(cat, who, barrier, got, attempt))
                   for cat, who in ((a, "A"), (b, "B"))]
        for th in threads:
            th.start()
        for th in threads:
            th.join(60)
        won = [r for r in got if not isinstance(r, BaseException)]
        lost = [e for e in got if isinstance(e, RunError)]
        assert len(won) == 1 and len(lost) == 1, got
        assert lost[0].status == 409 and "still active" in str(lost[0]) and str(won[0].id) in str(lost[0])
        assert [r.id for r in b.active_runs()] == [won[0].id]
        a.stop_run(won[0].id, T0 + 10**9)
    assert _count(a, runs) == 5 and a.active_runs() == []
    other = b.start_run("press-02", T0)  # another rig is free all along
    assert other.active


async def test_two_run_managers_race_one_wins(url, opened):
    rig = SimpleNamespace(kind="screw_press", description="", limit_dicts=lambda: {}, devices=[])
    managers, writers = [], []
    for _ in range(2):
        cat = opened()
        bus = SampleBus()
        w = CatalogueWriter(cat, bus.subscribe("catalogue"))
        writers.append(w)
        managers.append(RunManager(cat, w, bus, None, {"press-01": rig}))
    try:
        got = await asyncio.gather(*(m.start("press-01", operator=str(k)) for k, m in enumerate(managers)),
                                   return_exceptions=True)
        won = [r for r in got if not isinstance(r, BaseException)]
        lost = [e for e in got if isinstance(e, BaseException)]
        assert len(won) == 1 and len(lost) == 1 and isinstance(lost[0], RunError), got
        assert lost[0].status == 409 and "still active" in str(lost[0])
        winner = managers[got.index(won[0])]
        loser = managers[1 - got.index(won[0])]
        assert "press-01" in winner.active and "press-01" not in loser.active
        await winner.stop(won[0].id)
        again = await loser.start("press-01")  # stopped elsewhere: this node may start one now
        assert again.active and again.id != won[0].id
    finally:
        for w in writers:
            w.close()


async def test_a_run_started_on_one_node_reaches_the_other_by_notification(postgres_url, tmp_path):
    """On PostgreSQL the node that starts or stops a run announces it (NOTIFY): the node acquiring
    the rig follows at once. Its poll is set to an hour here, so only the notification can have done it."""
    rig = SimpleNamespace(kind="screw_press", description="", limit_dicts=lambda: {}, devices=[])
    cats = [Catalogue(postgres_url) for _ in range(2)]
    buses = [SampleBus() for _ in range(2)]
    writers = [CatalogueWriter(c, b.subscribe("catalogue")) for c, b in zip(cats, buses, strict=True)]
    api_node, agent = (RunManager(c, w, b, None, {"press-01": rig})
                       for c, w, b in zip(cats, writers, buses, strict=True))
    seen = buses[1].subscribe("test")
    follower = asyncio.create_task(agent.follow_forever(interval_s=3600.0))

    async def until(cond, what):
        for _ in range(400):
            if cond():
                return
            await asyncio.sleep(0.025)
        raise AssertionError(f"{what} did not happen in 10 s")

    try:
        await asyncio.sleep(0.5)  # the listener is connected (it follows once on connecting)
        run = await api_node.start("press-01", operator="Ann")
        await until(lambda: "press-01" in agent.active, "the agent taking the run")
        assert agent.active["press-01"].id == run.id and agent.active["press-01"].operator == "Ann"
        await api_node.stop(run.id)
        await until(lambda: "press-01" not in agent.active, "the agent closing the run")
        events = []
        while not seen.queue.empty():
            item = seen.queue.get_nowait()
            if getattr(item, "kind", "") in ("run_start", "run_stop"):
                events.append((item.kind, item.fields["run_id"]))
        assert events == [("run_start", run.id), ("run_stop", run.id)]
    finally:
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)
        for w in writers:
            w.close()
        for c in cats:
            c.close()


# -- API keys -------------------------------------------------------------------------------------
def test_a_key_made_through_one_catalogue_is_accepted_by_another(url, opened):
    made, checked = KeyStore(opened()), KeyStore(opened())
    key, info = made.create("line 2 tablet", "operator")
    assert checked.verify(key) == info
    assert [k["name"] for k in checked.list()] == ["line 2 tablet"]
    assert made.revoke(info.id)
    assert KeyStore(opened()).verify(key) is None


# -- the outbox and cycle numbers ------------------------------------------------------------------
def test_cycle_numbers_go_on_after_those_waiting_in_the_outbox(url, opened, tmp_path):
    cat = opened()
    cat.file_cycle(_cycle(3, T0 + 3))
    box = Outbox(tmp_path / "outbox")
    box.put(_cycle(7, T0 + 7))
    w = CatalogueWriter(cat, SampleBus().subscribe("catalogue"), outbox=box)
    try:
        assert w.max_cycle_no("press-01") == 7 and w.max_cycle_no("other") == 0
    finally:
        w.close()


# -- upgrade in place --------------------------------------------------------------------------------
def test_a_catalogue_from_before_migrations_is_upgraded_in_place(url, opened):
    old = create_engine(url)
    tables = _baseline().tables()
    tables.create_all(old)  # exactly what the version before migrations made
    t = tables.tables
    samples_t = T0 + np.arange(50, dtype=np.int64)
    from daq.catalogue.store import pack_samples

    names, blob = pack_samples(samples_t, {"force": np.linspace(-1, 1, 50)})
    with old.begin() as c:
        c.execute(t["runs"].insert().values(id=1, rig="press-01", started_ns=T0, stopped_ns=T0 + 100, operator="A",
                                            part_number="P-1", lot="L1", serial="", notes="", extra={},
                                            started_by="", config={"limits": {}}))
        for rid, started in ((2, T0 + 200), (3, T0 + 300)):  # two active on one rig: only the newest went on
            c.execute(t["runs"].insert().values(id=rid, rig="press-02", started_ns=started, operator="", part_number="",
                                                lot="", serial="", notes="", extra={}, started_by="", config={}))
        c.execute(t["runs"].insert().values(id=4, rig="press-01", started_ns=T0 + 400, operator="B",
                                            part_number="P-2", lot="L2", serial="", notes="", extra={},
                                            started_by="", config={}))
        c.execute(t["cycles"].insert().values(id=1, rig="press-01", run_id=1, cycle_no=1, kind="screw_press",
                                              t_ns=T0 + 5, end_ns=T0 + 9, verdict="ok", reasons=[],
                                              metrics={"peak_force_kN": 90_000.0}, info={"part": 1},
                                              version="press-1.0", samples_sha256="ab" * 32))
        c.execute(t["cycle_samples"].insert().values(cycle_id=1, n=50, channels=names, codec="shuffle-zlib-1",
                                                     data=blob))
        for aid in (1, 2):  # filed twice (artifacts had no key before)
            c.execute(t["run_artifacts"].insert().values(id=aid, rig="press-01", run_id=1, name="summary",
                                                         t_ns=T0 + 50, data={"n": 1}))
    if old.dialect.name == "postgresql":  # explicit ids: move the sequences past them, as the old version would
        with old.begin() as c:
            for table in ("runs", "cycles", "run_artifacts"):
                c.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                               f"(SELECT max(id) FROM {table}))"))
    old.dispose()
    # an API key, made by the old version's key store on the old tables
    from daq.catalogue.keys import hash_key

    key = "rdq_0a0b0c0d_oldsecret"
    with create_engine(url).begin() as c:
        c.execute(t["api_keys"].insert().values(name="old desk", role="qa", prefix="0a0b0c0d", hash=hash_key(key),
                                                created_ns=T0))

    cat = opened()
    with cat.engine.connect() as c:
        assert c.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [head()]
        assert compare_metadata(MigrationContext.configure(c), meta) == []
    # data intact
    r1 = cat.run(1)
    assert (r1.rig, r1.started_ns, r1.stopped_ns, r1.operator, r1.lot, r1.config) == \
        ("press-01", T0, T0 + 100, "A", "L1", {"limits": {}})
    assert cat.run(2).stopped_ns == T0 + 300 and cat.run(3).active  # the older duplicate stopped at the newer's start
    assert sorted(r.id for r in cat.active_runs()) == [3, 4]
    row = cat.cycle(1)
    assert row["metrics"] == {"peak_force_kN": 90_000.0} and row["samples_sha256"] == "ab" * 32
    assert row["uid"] == legacy_cycle_uid("press-01", T0 + 5)
    t2, ch = cat.cycle_samples(1)
    assert np.array_equal(t2, samples_t) and ch["force"].tobytes() == np.linspace(-1, 1, 50).tobytes()
    arts = cat.artifacts_of_run(1)
    assert [a["id"] for a in arts] == [1, 2] and len({a["uid"] for a in arts}) == 2
    assert KeyStore(cat).verify(key).name == "old desk"
    # the new constraints hold
    with pytest.raises(RunError) as e:
        cat.start_run("press-01", T0 + 500)
    assert e.value.status == 409 and "run 4 is still active" in str(e.value)
    legacy = _cycle(1, T0 + 5, "1")  # pickled by the old version into an outbox: no uid at all
    del legacy.__dict__["uid"]
    legacy = pickle.loads(pickle.dumps(legacy))
    assert cat.file_cycle(legacy) == 1 and _count(cat, cycles) == 1
    old_art = RunArtifact("press-01", "1", "summary", T0 + 50, {"n": 2})  # likewise an artifact
    del old_art.__dict__["uid"]
    assert cat.file_artifact(old_art) == 1 and _count(cat, artifacts) == 2
    assert cat.artifacts_of_run(1)[0]["data"] == {"n": 2}
    new = cat.file_cycle(_cycle(2, T0 + 7, "1"))
    assert new == 2 and _count(cat, cycles) == 2
    uniques = {u["name"] for u in inspect(cat.engine).get_unique_constraints("cycles")}
    assert {"one_cycle_per_uid", "one_cycle_per_start"} <= uniques
    if cat.engine.dialect.name == "sqlite":
        with cat.engine.connect() as c:
            assert c.exec_driver_sql("PRAGMA foreign_key_check").all() == []
            assert c.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
    # opening it again changes nothing
    assert opened().run(4).operator == "B"
