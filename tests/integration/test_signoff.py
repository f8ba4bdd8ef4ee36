"""QA sign-off over real HTTP on a running service: signatures, re-authentication, the lock, revisions, audit.

One service (simulated press, real influxd) for the module; each test starts and stops runs of its
own through the API and checks what was recorded exactly: the signature's fields, the run's
revision and approval, and the audit trail's entries for that run, in order.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime

import httpx
import pytest

from daq.catalogue.audit import config_sha256
from daq.catalogue.store import ResultLockedError
from daq.cycles import CycleResult
from tests.integration.helpers import bearer, running_press

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def api(tmp_path_factory, influxd):
    st = running_press(tmp_path_factory.mktemp("signoff"), influxd.url)
    st.http = httpx.Client(base_url=st.base, timeout=30)
    st.key_ids = {k["name"]: k["id"] for k in st.service.keys.list()}
    yield st
    st.http.close()
    st.stop()


def _h(api, role: str) -> dict:
    return bearer(api.keys[role])


def _run(api, **meta) -> int:
    r = api.http.post("/api/runs", headers=_h(api, "engineer"), json={"rig": "press-01", **meta})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _stop(api, run_id: int) -> None:
    """Stop a run, and wait until the blows analysed before are filed (the certificate is final then)."""
    r = api.http.post(f"/api/runs/{run_id}/stop", headers=_h(api, "engineer"))
    assert r.status_code == 200, r.text
    writer = api.service.catalogue_writer
    for _ in range(300):
        if writer.sub.queue.empty() and writer._current is None:
            return
        time.sleep(0.05)
    raise AssertionError("the catalogue writer did not catch up in 15 s")


def _reviewed(api, run_id: int) -> str:
    r = api.http.get(f"/api/runs/{run_id}/report", params={"format": "json"}, headers=_h(api, "qa"))
    assert r.status_code == 200, r.text
    return r.headers["x-content-sha256"]


def _sign(api, run_id: int, role: str = "qa", key: str | None = None, **body) -> httpx.Response:
    body.setdefault("meaning", "approved")
    body.setdefault("reason", "all blows within limits")
    return api.http.post(f"/api/runs/{run_id}/signatures", headers=_h(api, role),
                         json={"key": api.keys[role] if key is None else key, **body})


def _actions(api, target: str) -> list[tuple[str, str]]:
    page = api.http.get("/api/audit", params={"target": target, "order": "oldest", "limit": 1000},
                        headers=_h(api, "qa")).json()
    return [(e["actor"], e["action"]) for e in page["entries"]]


def test_approve_records_exactly_who_what_when_and_the_certificate_hash(api):
    rid = _run(api, operator="Zoë", part_number="P-1", lot="L-1", serial="S-1")
    _stop(api, rid)
    reviewed = _reviewed(api, rid)
    r = _sign(api, rid, content_sha256=reviewed, reason="  capability adequate  ")
    assert r.status_code == 201, r.text
    sig = r.json()
    signed_at = datetime.fromtimestamp(sig["signed_ns"] / 1e9, UTC).isoformat(timespec="milliseconds")
    assert sig == {"id": sig["id"], "run_id": rid, "revision": 1, "signer": "test-qa", "role": "qa",
                   "key_id": api.key_ids["test-qa"], "meaning": "approved", "reason": "capability adequate",
                   "signed_at": signed_at, "signed_ns": sig["signed_ns"], "content_sha256": reviewed}
    assert api.http.get(f"/api/runs/{rid}/signatures", headers=_h(api, "qa")).json() == [sig]
    assert api.service.catalogue.signatures_of_run(rid) == [{k: v for k, v in sig.items() if k != "key_id"}]
    run = api.http.get(f"/api/runs/{rid}", headers=_h(api, "operator")).json()
    assert (run["revision"], run["supersedes"], run["approved"]) == (1, None, True)
    assert _actions(api, f"run {rid}") == [("test-engineer", "run_start"), ("test-engineer", "run_stop"),
                                           ("test-qa", "signature")]
    entries = api.http.get("/api/audit", params={"target": f"run {rid}", "order": "oldest"},
                           headers=_h(api, "admin")).json()["entries"]
    cfg = api.service.catalogue.run(rid).config
    assert entries[0]["details"] == {
        "started_ns": run["started_ns"], "config_sha256": config_sha256(cfg),
        "after": {"rig": "press-01", "operator": "Zoë", "part_number": "P-1", "lot": "L-1", "serial": "S-1",
                  "notes": "", "extra": {}, "revision": 1}}
    assert entries[2]["details"] == {k: v for k, v in sig.items() if k not in ("run_id", "signed_at")}
    # a second approval of the same revision is refused: a change needs a new revision
    again = _sign(api, rid, role="admin")
    assert again.status_code == 409 and "was approved by test-qa" in again.json()["detail"]


def test_wrong_reauthentication_active_run_and_stale_review_are_refused(api):
    rid = _run(api, lot="L-2")
    active = _sign(api, rid)
    assert (active.status_code, active.json()["detail"]) == (
        409, f"run {rid} is still active: stop it before signing its certificate")
    _stop(api, rid)
    wrong = _sign(api, rid, key="rdq_00000000_not-my-key")
    assert wrong.status_code == 401
    assert wrong.json()["detail"] == ("re-authentication failed: the API key given with the signature is missing, "
                                      "unknown or revoked")
    other = _sign(api, rid, key=api.keys["admin"])
    assert other.status_code == 403
    assert other.json()["detail"] == ("re-authentication failed: the API key given with the signature is not the "
                                      "key of this request (key 'test-qa' must sign with itself)")
    weak = _sign(api, rid, role="engineer")
    assert (weak.status_code, weak.json()["detail"]) == (403, "this needs the qa role; key 'test-engineer' has "
                                                              "engineer")
    stale = _sign(api, rid, content_sha256="0" * 64)
    current = _reviewed(api, rid)
    assert stale.status_code == 409
    assert stale.json()["detail"] == (f"the certificate changed since you reviewed it: you reviewed content sha256 "
                                      f"{'0' * 64}, it is {current} now; review it again")
    blank = _sign(api, rid, reason="   ")
    assert blank.status_code == 422 and "needs a reason" in blank.json()["detail"]
    missing = _sign(api, 999_999)
    assert (missing.status_code, missing.json()["detail"]) == (404, "no run 999999")
    rejected = _sign(api, rid, meaning="rejected", reason="lot number not on the traveller")
    assert rejected.status_code == 201 and rejected.json()["meaning"] == "rejected"
    run = api.http.get(f"/api/runs/{rid}", headers=_h(api, "operator")).json()
    assert (run["revision"], run["approved"]) == (1, False)
    approved = _sign(api, rid, role="admin", reason="traveller corrected")
    assert approved.status_code == 201 and (approved.json()["signer"], approved.json()["role"]) == ("test-admin",
                                                                                                     "admin")
    assert [(s["meaning"], s["signer"]) for s in api.http.get(f"/api/runs/{rid}/signatures",
                                                              headers=_h(api, "qa")).json()] == [
        ("rejected", "test-qa"), ("approved", "test-admin")]
    assert _actions(api, f"run {rid}") == [
        ("test-engineer", "run_start"), ("test-engineer", "run_stop"), ("test-qa", "signature_failed"),
        ("test-qa", "signature_failed"), ("test-qa", "signature"), ("test-admin", "signature")]
    failed = api.http.get("/api/audit", params={"target": f"run {rid}", "action": "signature_failed",
                                                "order": "oldest"}, headers=_h(api, "qa")).json()["entries"]
    assert [e["details"] for e in failed] == [
        {"why": wrong.json()["detail"], "meaning": "approved"},
        {"why": other.json()["detail"], "meaning": "approved", "presented_key_id": api.key_ids["test-admin"]}]


def test_approval_locks_metadata_and_results_until_a_new_revision_is_signed(api):
    rid = _run(api, operator="Ann", lot="L-3")
    edit = api.http.patch(f"/api/runs/{rid}", headers=_h(api, "engineer"), json={"lot": "L-3a"})
    assert edit.status_code == 200 and (edit.json()["lot"], edit.json()["revision"]) == ("L-3a", 1)
    _stop(api, rid)
    first = _reviewed(api, rid)
    assert _sign(api, rid, content_sha256=first).status_code == 201
    locked = api.http.patch(f"/api/runs/{rid}", headers=_h(api, "engineer"), json={"lot": "L-3b"})
    assert locked.status_code == 409
    assert locked.json()["detail"].startswith(f"run {rid} is locked: revision 1 was approved by test-qa at ")
    assert locked.json()["detail"].endswith(f"To change it, make a new revision (POST /api/runs/{rid}/revisions "
                                            "with the changes and a reason); it is then unsigned until signed again")
    noreason = api.http.post(f"/api/runs/{rid}/revisions", headers=_h(api, "engineer"), json={"lot": "L-3b"})
    assert noreason.status_code == 422
    rev = api.http.post(f"/api/runs/{rid}/revisions", headers=_h(api, "engineer"),
                        json={"lot": "L-3b", "reason": "heat number from the mill certificate"})
    assert rev.status_code == 201, rev.text
    run = rev.json()
    assert (run["lot"], run["operator"], run["revision"], run["supersedes"], run["approved"]) == (
        "L-3b", "Ann", 2, 1, False)
    revs = api.http.get(f"/api/runs/{rid}/revisions", headers=_h(api, "qa")).json()
    assert [{k: v for k, v in r.items() if k not in ("created", "created_ns")} for r in revs] == [
        {"run_id": rid, "revision": 2, "supersedes": 1, "created_by": "test-engineer",
         "reason": "heat number from the mill certificate", "before": {"lot": "L-3a"}, "after": {"lot": "L-3b"}}]
    second = _reviewed(api, rid)
    assert second != first
    assert _sign(api, rid, content_sha256=first).status_code == 409  # reviewed revision 1's certificate
    signed = _sign(api, rid, content_sha256=second, reason="revision 2 reviewed")
    assert signed.status_code == 201 and (signed.json()["revision"], signed.json()["content_sha256"]) == (2, second)
    assert [(s["revision"], s["content_sha256"]) for s in api.http.get(
        f"/api/runs/{rid}/signatures", headers=_h(api, "qa")).json()] == [(1, first), (2, second)]
    # a result filed into the approved run: an identical replay stays one row, a changed one is refused
    cat = api.service.catalogue
    cycle = CycleResult("press-01", 9_999, 1_000_000_000, "ok", {"peak_force_kN": 95_000.0}, [], "press-1.1",
                        "ab" * 32, str(rid), kind="screw_press", end_ns=1_100_000_000)
    with pytest.raises(ResultLockedError):
        cat.file_cycle(cycle)  # a new result in an approved run is a change too
    assert 9_999 not in [c["cycle_no"] for c in cat.cycles_of_run(rid, 10_000)[1]]
    assert _actions(api, f"run {rid}") == [
        ("test-engineer", "run_start"), ("test-engineer", "run_edited"), ("test-engineer", "run_stop"),
        ("test-qa", "signature"), ("test-engineer", "run_revised"), ("test-qa", "signature"),
        ("service", "result_refused")]
    edited, revised = (api.http.get("/api/audit", params={"target": f"run {rid}", "action": a},
                                    headers=_h(api, "qa")).json()["entries"][0]["details"]
                       for a in ("run_edited", "run_revised"))
    assert edited == {"before": {"lot": "L-3"}, "after": {"lot": "L-3a"}, "revision": 1}
    assert revised == {"before": {"lot": "L-3a"}, "after": {"lot": "L-3b"}, "revision": 2, "supersedes": 1,
                       "reason": "heat number from the mill certificate"}


def test_audit_filters_and_roles(api):
    for role in ("operator", "engineer"):
        r = api.http.get("/api/audit", headers=_h(api, role))
        assert (r.status_code, r.json()["detail"]) == (403, f"this needs the qa role; key 'test-{role}' has {role}")
        assert api.http.get("/api/audit/verify", headers=_h(api, role)).status_code == 403
    assert api.http.get("/api/audit").status_code == 401
    made = api.http.post("/api/keys", headers=_h(api, "admin"), json={"name": "audit-probe", "role": "operator"})
    assert made.status_code == 201
    kid = made.json()["id"]
    assert api.http.delete(f"/api/keys/{kid}", headers=_h(api, "admin")).status_code == 204
    page = api.http.get("/api/audit", params={"target": f"key {kid}"}, headers=_h(api, "qa")).json()
    assert (page["total"], page["order"]) == (2, "newest")
    assert [(e["actor"], e["action"]) for e in page["entries"]] == [("test-admin", "key_revoked"),
                                                                     ("test-admin", "key_created")]
    assert page["entries"][1]["details"] == {"after": {"id": kid, "name": "audit-probe", "role": "operator",
                                                       "prefix": made.json()["prefix"]}}
    created = api.http.get("/api/audit", params={"action": "key_created", "actor": "service", "order": "oldest"},
                           headers=_h(api, "qa")).json()
    assert [e["details"]["after"]["name"] for e in created["entries"]] == [
        "test-operator", "test-engineer", "test-qa", "test-admin"]
    everything = api.http.get("/api/audit", params={"order": "oldest", "limit": 1000},
                              headers=_h(api, "admin")).json()
    ids = [e["id"] for e in everything["entries"]]
    assert ids == list(range(1, everything["total"] + 1))
    assert (everything["entries"][0]["actor"], everything["entries"][0]["action"]) == ("service", "service_start")
    assert {k: everything["entries"][0]["details"][k] for k in ("role",)} == {"role": "all"}
    mid = everything["entries"][2]
    since = api.http.get("/api/audit", params={"since": mid["time"].replace("+00:00", "Z"), "order": "oldest",
                                               "limit": 2, "offset": 0}, headers=_h(api, "qa")).json()
    assert [e["id"] for e in since["entries"]] == [e["id"] for e in everything["entries"]
                                                   if e["t_ns"] >= mid["t_ns"] // 1_000_000 * 1_000_000][:2]
    until = api.http.get("/api/audit", params={"until": "2000-01-01T00:00:00Z"}, headers=_h(api, "qa")).json()
    assert (until["total"], until["entries"]) == (0, [])
    paged = api.http.get("/api/audit", params={"limit": 2, "offset": 1}, headers=_h(api, "qa")).json()
    assert [e["id"] for e in paged["entries"]] == [everything["total"] - 1, everything["total"] - 2]
    check = api.http.get("/api/audit/verify", headers=_h(api, "qa")).json()
    n = everything["total"]
    assert check == {"ok": True, "entries": n, "first_broken": None, "kind": None, "reason": f"{n} entries intact",
                     "head_sha256": everything["entries"][-1]["sha256"]}
    bad = api.http.get("/api/audit", params={"limit": 0}, headers=_h(api, "qa"))
    assert bad.status_code == 422 and bad.json()["detail"]


def test_daq_sign_from_the_command_line(api):
    rid = _run(api, lot="L-5")
    _stop(api, rid)
    cfg = str(api.settings.path)
    env = {k: v for k, v in os.environ.items() if k not in ("RIGDAQ_KEY", "RIGDAQ_API_KEY")}

    def daq(*args, key: str | None = None):
        e = dict(env, RIGDAQ_KEY=key) if key else env
        return subprocess.run([sys.executable, "-m", "daq.cli", *args], capture_output=True, text=True, timeout=60,
                              env=e)

    weak = daq("sign", str(rid), "--meaning", "approved", "--reason", "ok", "--config", cfg, key=api.keys["engineer"])
    assert (weak.returncode, weak.stderr) == (1, f"rigdaq: run {rid} not signed: signing needs the qa role; key "
                                                 "'test-engineer' has engineer\n")
    ok = daq("sign", str(rid), "--meaning", "rejected", "--reason", "wrong die", "--config", cfg, key=api.keys["qa"])
    assert ok.returncode == 0, ok.stderr
    sig = api.service.catalogue.signatures_of_run(rid)[0]
    assert ok.stdout == (f"run {rid} revision 1: rejected by test-qa (qa) at {sig['signed_at']}, certificate "
                         f"content sha256 {_reviewed(api, rid)}\n")
    assert (sig["signer"], sig["meaning"], sig["reason"]) == ("test-qa", "rejected", "wrong die")
    nokey = daq("sign", str(rid), "--meaning", "approved", "--reason", "ok", "--config", cfg)
    assert (nokey.returncode, nokey.stderr) == (2, "rigdaq: signing needs your API key (qa or admin): --key KEY or "
                                                   "RIGDAQ_KEY\n")
    assert _actions(api, f"run {rid}") == [("test-engineer", "run_start"), ("test-engineer", "run_stop"),
                                           ("test-engineer", "signature_failed"), ("test-qa", "signature")]


def test_a_locked_catalogue_is_a_503_with_retry_after_not_a_500(api):
    """Another process holds the SQLite catalogue's write lock past the busy timeout: writes get 503."""
    import sqlite3

    from sqlalchemy.engine import make_url

    path = make_url(api.service.settings.catalogue_url).database
    hold = sqlite3.connect(path, timeout=1, isolation_level=None)
    hold.execute("BEGIN EXCLUSIVE")
    try:
        r = api.http.post("/api/keys", headers=_h(api, "admin"), json={"name": "while locked", "role": "operator"})
    finally:
        hold.execute("ROLLBACK")
        hold.close()
    assert r.status_code == 503 and r.headers["retry-after"] == "5", r.text
    assert r.json()["detail"] == "the catalogue is unavailable (database is locked); try again shortly"
    again = api.http.post("/api/keys", headers=_h(api, "admin"), json={"name": "after the lock", "role": "operator"})
    assert again.status_code == 201, again.text
