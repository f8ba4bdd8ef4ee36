"""The audit trail and the sign-off lock on SQLite and on a real PostgreSQL.

* two :class:`Catalogue` instances (two engines, as two API nodes) appending at once from
  several threads leave one unforked chain, numbered without gaps;
* ``daq audit verify`` (a subprocess) exits 0 on an intact trail, 1 naming the entry altered or
  deleted with plain SQL;
* a run start records its metadata and config hash, and a limit change since the rig's previous
  run; revisions, signatures and the lock of an approved run's metadata and results hold.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading

import pytest
from sqlalchemy import text

from daq.catalogue import Catalogue
from daq.catalogue.audit import AuditTrail, config_sha256, record_run_start
from daq.catalogue.store import ResultLockedError, RunError
from daq.cycles import CycleResult
from tests.integration.helpers import press_settings

pytestmark = pytest.mark.timeout(120)

DAQ = [sys.executable, "-m", "daq.cli"]
T0 = 1_700_000_000_000_000_000


@pytest.fixture
def cat(url):
    c = Catalogue(url)
    yield c
    c.close()


def _sql(cat: Catalogue, sql: str, **params) -> None:
    with cat.engine.begin() as c:
        c.execute(text(sql), params)


def test_two_nodes_appending_at_once_leave_one_chain(url, cat):
    other = Catalogue(url)
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def append(c: Catalogue, who: str) -> None:
        barrier.wait()
        try:
            for i in range(25):
                AuditTrail(c).append(who, "run_edited", f"run {i}", before={"n": i}, after={"n": i + 1})
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=append, args=(c, f"node{n}-t{t}"))
               for n, c in enumerate((cat, other)) for t in range(2)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(100)
    finally:
        other.close()
    assert errors == []
    res = AuditTrail(cat).verify()
    assert (res.ok, res.entries, res.first_broken) == (True, 100, None), res.reason
    total, rows = AuditTrail(cat).entries(limit=1000, newest_first=False)
    assert total == 100 and [r["id"] for r in rows] == list(range(1, 101))
    by_actor = {}
    for r in rows:
        by_actor.setdefault(r["actor"], []).append(r["details"]["before"]["n"])
    assert by_actor == {f"node{n}-t{t}": list(range(25)) for n in range(2) for t in range(2)}


def _config(tmp_path, url: str) -> str:
    settings = press_settings(tmp_path, "http://127.0.0.1:9", "unused")
    with open(settings.path, "a") as f:
        f.write(f'\n[catalogue]\nurl = "{url}"\n')
    return str(settings.path)


def _verify(cfg: str) -> subprocess.CompletedProcess:
    return subprocess.run([*DAQ, "audit", "verify", "--config", cfg], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ))


def _fill(cat: Catalogue, n: int) -> None:
    for i in range(n):
        AuditTrail(cat).append("qa-desk", "signature", f"run {i + 1}", details={"meaning": "approved"})


def test_daq_audit_verify_names_an_altered_entry(url, cat, tmp_path):
    cfg = _config(tmp_path, url)
    _fill(cat, 6)
    ok = _verify(cfg)
    head = AuditTrail(cat).verify().head_sha256
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, f"audit trail intact: 6 entries, head sha256 {head}\n", "")
    _sql(cat, "UPDATE audit_log SET details = :d WHERE id = 4", d='{"meaning":"rejected"}')
    bad = _verify(cfg)
    assert (bad.returncode, bad.stdout) == (1, "")
    assert bad.stderr == ("rigdaq: audit trail BROKEN at entry 4 (altered): entry 4 was altered: its content "
                          "does not match its hash\n")


def test_daq_audit_verify_names_a_deleted_entry(url, cat, tmp_path):
    cfg = _config(tmp_path, url)
    _fill(cat, 5)
    _sql(cat, "DELETE FROM audit_log WHERE id = 3")  # (an intact trail exits 0: the test above)
    bad = _verify(cfg)
    assert (bad.returncode, bad.stdout) == (1, "")
    assert bad.stderr == ("rigdaq: audit trail BROKEN at entry 3 (deleted): entry 3 was deleted: the numbers "
                          "jump from 2 to 4\n")


def test_a_run_start_records_its_config_hash_and_a_limit_change(cat):
    limits_a = {"peak_force_kN": {"max": 100_000.0}}
    limits_b = {"peak_force_kN": {"max": 95_000.0}}
    one = cat.start_run("press-01", T0, operator="Zoë", lot="L1", config={"kind": "screw_press", "limits": limits_a})
    record_run_start(cat, one, "test-engineer")
    cat.stop_run(one.id, T0 + 10)
    two = cat.start_run("press-01", T0 + 20, lot="L2", config={"kind": "screw_press", "limits": limits_a})
    record_run_start(cat, two, "test-engineer")
    cat.stop_run(two.id, T0 + 30)
    three = cat.start_run("press-01", T0 + 40, lot="L3", config={"kind": "screw_press", "limits": limits_b})
    record_run_start(cat, three, "test-engineer")
    _, rows = AuditTrail(cat).entries(newest_first=False)
    assert [(r["action"], r["target"]) for r in rows] == [
        ("run_start", f"run {one.id}"), ("run_start", f"run {two.id}"), ("run_start", f"run {three.id}"),
        ("limits_changed", "rig press-01")]
    canon = json.dumps({"kind": "screw_press", "limits": limits_a}, sort_keys=True, separators=(",", ":"))
    assert rows[0]["details"] == {
        "started_ns": T0, "config_sha256": hashlib.sha256(canon.encode()).hexdigest(),
        "after": {"rig": "press-01", "operator": "Zoë", "part_number": "", "lot": "L1", "serial": "", "notes": "",
                  "extra": {}, "revision": 1}}
    assert rows[2]["details"]["config_sha256"] == config_sha256({"kind": "screw_press", "limits": limits_b})
    assert rows[3]["details"] == {"before": limits_a, "after": limits_b, "previous_run": two.id, "run": three.id}
    assert all(r["actor"] == "test-engineer" for r in rows)


def _cycle(run_id: int, verdict: str = "ok", peak: float = 90_000.0) -> CycleResult:
    return CycleResult("press-01", 1, T0 + 5, verdict, {"peak_force_kN": peak}, [], "press-1.1", "ab" * 32,
                       str(run_id), kind="screw_press", end_ns=T0 + 6, info={},
                       uid="00000000-cafe-4bad-8bad-111111111111")


def test_revisions_signatures_and_the_lock(cat):
    run = cat.start_run("press-01", T0, operator="A", lot="L1")
    assert (run.revision, run.supersedes, run.approved) == (1, None, False)
    before, after, run = cat.edit_run(run.id, {"lot": "L2", "operator": "A"})  # active: edited in place
    assert (before, after, run.lot, run.revision) == ({"lot": "L1"}, {"lot": "L2"}, "L2", 1)
    with pytest.raises(RunError, match="nothing to change") as e:
        cat.edit_run(run.id, {"lot": "L2"})
    assert e.value.status == 422
    with pytest.raises(RunError, match="still active") as e:
        cat.add_signature(run.id, 1, signer="q", role="qa", key_id=3, meaning="approved", reason="r", signed_ns=T0,
                          content_sha256="c" * 64)
    assert e.value.status == 409
    cid = cat.file_cycle(_cycle(run.id))
    cat.stop_run(run.id, T0 + 100)
    sig = cat.add_signature(run.id, 1, signer="q", role="qa", key_id=3, meaning="approved", reason="fine",
                            signed_ns=T0 + 200, content_sha256="c" * 64)
    assert cat.signatures_of_run(run.id) == [{
        "id": sig["id"], "run_id": run.id, "revision": 1, "signer": "q", "role": "qa", "meaning": "approved",
        "reason": "fine", "signed_at": "2023-11-14T22:13:20.000+00:00", "signed_ns": T0 + 200,
        "content_sha256": "c" * 64}]
    assert cat.run(run.id).approved and cat.list_runs()[1][0].approved
    with pytest.raises(RunError, match=f"run {run.id} is locked: revision 1 was approved by q") as e:
        cat.edit_run(run.id, {"lot": "L3"})
    assert e.value.status == 409
    with pytest.raises(RunError, match="was approved by q"):
        cat.add_signature(run.id, 1, signer="q", role="qa", key_id=3, meaning="rejected", reason="r",
                          signed_ns=T0, content_sha256="c" * 64)
    # results are locked: an identical replay is fine, a changed result is refused and recorded
    assert cat.file_cycle(_cycle(run.id)) == cid
    with pytest.raises(ResultLockedError, match="approved and locked"):
        cat.file_cycle(_cycle(run.id, "nok", 101_000.0))
    assert (cat.cycle(cid)["verdict"], cat.cycle(cid)["metrics"]) == ("ok", {"peak_force_kN": 90_000.0})
    _, rows = AuditTrail(cat).entries()
    assert [(r["actor"], r["action"], r["target"]) for r in rows] == [("service", "result_refused", f"run {run.id}")]
    assert rows[0]["details"]["refused"]["verdict"] == "nok"
    # a new revision: the old values stay recorded, the new one is unsigned
    with pytest.raises(RunError, match="needs a reason"):
        cat.revise_run(run.id, {"lot": "L3"}, "eng", " ", T0 + 300)
    before, after, rev = cat.revise_run(run.id, {"lot": "L3"}, "eng", "typo in the lot", T0 + 300)
    assert (before, after, rev.lot, rev.revision, rev.supersedes, rev.approved) == (
        {"lot": "L2"}, {"lot": "L3"}, "L3", 2, 1, False)
    assert [{k: r[k] for k in ("revision", "supersedes", "created_by", "reason", "before", "after")}
            for r in cat.revisions_of_run(run.id)] == [
        {"revision": 2, "supersedes": 1, "created_by": "eng", "reason": "typo in the lot", "before": {"lot": "L2"},
         "after": {"lot": "L3"}}]
    with pytest.raises(RunError, match="at revision 2 now, not 1"):
        cat.add_signature(run.id, 1, signer="q", role="qa", key_id=3, meaning="approved", reason="r",
                          signed_ns=T0, content_sha256="c" * 64)
    cat.file_cycle(_cycle(run.id, "nok", 101_000.0))  # unlocked while revision 2 is unsigned
    cat.add_signature(run.id, 2, signer="q", role="qa", key_id=3, meaning="approved", reason="again",
                      signed_ns=T0 + 400, content_sha256="d" * 64)
    assert [(s["revision"], s["content_sha256"]) for s in cat.signatures_of_run(run.id)] == [(1, "c" * 64),
                                                                                              (2, "d" * 64)]
    assert cat.run(run.id).approved and cat.approval(run.id)["reason"] == "again"


def test_a_change_and_its_audit_entry_are_filed_together_or_not_at_all(cat):
    from daq.catalogue.keys import KeyStore

    run = cat.start_run("press-01", T0, lot="L1")

    def fails(conn, before, after, revision, supersedes):
        AuditTrail(cat).append("eng", "run_edited", f"run {run.id}", before=before, after=after, conn=conn)
        raise RuntimeError("audit store full")

    with pytest.raises(RuntimeError, match="audit store full"):
        cat.edit_run(run.id, {"lot": "L2"}, fails)
    assert cat.run(run.id).lot == "L1" and AuditTrail(cat).entries()[0] == 0

    def records(conn, before, after, revision, supersedes):
        AuditTrail(cat).append("eng", "run_edited", f"run {run.id}", before=before, after=after, conn=conn,
                               details={"revision": revision})

    cat.edit_run(run.id, {"lot": "L2"}, records)
    store = KeyStore(cat)
    _, info = store.create("desk-3", "qa", "cli:alice")
    assert store.revoke(info.id, "cli:bob") and not store.revoke(info.id, "cli:bob")
    _, rows = AuditTrail(cat).entries(newest_first=False)
    assert [(r["actor"], r["action"], r["target"], r["details"]) for r in rows] == [
        ("eng", "run_edited", f"run {run.id}", {"before": {"lot": "L1"}, "after": {"lot": "L2"}, "revision": 1}),
        ("cli:alice", "key_created", f"key {info.id}",
         {"after": {"id": info.id, "name": "desk-3", "role": "qa", "prefix": store.list()[0]["prefix"]}}),
        ("cli:bob", "key_revoked", f"key {info.id}",
         {"before": {"revoked_ns": None}, "after": {"revoked_ns": store.list()[0]["revoked_ns"]},
          "name": "desk-3", "role": "qa"})]
    assert AuditTrail(cat).verify().ok


def test_a_run_start_or_stop_and_its_audit_entries_are_filed_together_or_not_at_all(cat):
    """The run manager records a run's start and stop in the transaction that makes the change."""

    def fails(conn, run):
        record_run_start(cat, run, "eng", conn=conn)
        raise RuntimeError("audit store full")

    with pytest.raises(RuntimeError, match="audit store full"):
        cat.start_run("press-01", T0, lot="L1", record=fails)
    assert cat.active_runs() == [] and AuditTrail(cat).entries()[0] == 0

    run = cat.start_run("press-01", T0, lot="L1", record=lambda conn, r: record_run_start(cat, r, "eng", conn=conn))

    def stop_fails(conn, stopped):
        AuditTrail(cat).append("eng", "run_stop", f"run {stopped.id}", conn=conn)
        raise RuntimeError("audit store full")

    with pytest.raises(RuntimeError, match="audit store full"):
        cat.stop_run(run.id, T0 + 10, record=stop_fails)
    assert cat.run(run.id).active
    stopped = cat.stop_run(run.id, T0 + 10, record=lambda conn, r: AuditTrail(cat).append(
        "eng", "run_stop", f"run {r.id}", conn=conn, details={"stopped_ns": r.stopped_ns}))
    assert stopped.stopped_ns == T0 + 10
    again = cat.stop_run(run.id, T0 + 20, record=lambda conn, r: AuditTrail(cat).append("eng", "x", "y", conn=conn))
    assert again.stopped_ns == T0 + 10  # already stopped: nothing changed, nothing recorded
    _, rows = AuditTrail(cat).entries(newest_first=False)
    assert [(r["action"], r["target"]) for r in rows] == [("run_start", f"run {run.id}"), ("run_stop", f"run {run.id}")]
    assert rows[1]["details"] == {"stopped_ns": T0 + 10} and AuditTrail(cat).verify().ok


def test_a_certificate_that_changes_while_it_is_signed_is_not_signed(cat):
    """The content hash is computed again under the signing's lock: a change that slipped in between
    the signer's look and the lock refuses the signature, and nothing is filed or recorded."""
    run = cat.start_run("press-01", T0, lot="L1")
    cat.stop_run(run.id, T0 + 10)
    with pytest.raises(RunError) as refused:
        cat.add_signature(run.id, 1, signer="Ann QA", role="qa", key_id=1, meaning="approved", reason="ok",
                          signed_ns=T0 + 20, content_sha256="aa" * 32, recheck=lambda: "bb" * 32,
                          record=lambda conn, sig: AuditTrail(cat).append("Ann QA", "signature", "x", conn=conn))
    assert refused.value.status == 409
    assert str(refused.value) == (f"the certificate changed since you reviewed it: content sha256 {'aa' * 32} "
                                  f"became {'bb' * 32}; review it again")
    assert cat.signatures_of_run(run.id) == [] and AuditTrail(cat).entries()[0] == 0
    got = cat.add_signature(run.id, 1, signer="Ann QA", role="qa", key_id=1, meaning="approved", reason="ok",
                            signed_ns=T0 + 30, content_sha256="aa" * 32, recheck=lambda: "aa" * 32)
    assert [s["id"] for s in cat.signatures_of_run(run.id)] == [got["id"]] and cat.approval(run.id)["id"] == got["id"]
