"""The audit trail's hash chain (SQLite file): append, verify, and tampering found and named exactly."""

from __future__ import annotations

import hashlib
import itertools
import json

import pytest
from sqlalchemy import text

from daq.catalogue import Catalogue
from daq.catalogue.audit import GENESIS, AuditTrail, canonical, entry_hash


@pytest.fixture
def cat(tmp_path):
    c = Catalogue(f"sqlite:///{tmp_path}/audit.sqlite")
    yield c
    c.close()


def _fill(cat: Catalogue, n: int = 6) -> AuditTrail:
    trail = AuditTrail(cat)
    for i in range(1, n + 1):
        assert trail.append(f"user{i % 2}", "run_edited", f"run {i}", before={"lot": f"L{i}"},
                            after={"lot": f"L{i + 1}"}, details={"revision": 1}) == i
    return trail


def _sql(cat: Catalogue, sql: str, **params) -> None:
    with cat.engine.begin() as c:
        c.execute(text(sql), params)


def test_entries_are_chained_with_the_documented_hash(cat):
    trail = _fill(cat, 3)
    total, rows = trail.entries(newest_first=False)
    assert total == 3 and [r["id"] for r in rows] == [1, 2, 3]
    first = rows[0]
    assert first["prev_sha256"] == GENESIS == "0" * 64
    assert first["details"] == {"before": {"lot": "L1"}, "after": {"lot": "L2"}, "revision": 1}
    stored = '{"after":{"lot":"L2"},"before":{"lot":"L1"},"revision":1}'
    body = json.dumps({"id": 1, "t_ns": first["t_ns"], "actor": "user1", "action": "run_edited",
                       "target": "run 1", "details": stored}, sort_keys=True, separators=(",", ":"))
    assert first["sha256"] == hashlib.sha256(f"{GENESIS}\n{body}".encode()).hexdigest()
    assert canonical({"b": 1, "a": "ü"}) == '{"a":"ü","b":1}'
    for prev, row in itertools.pairwise(rows):
        assert row["prev_sha256"] == prev["sha256"]
        assert row["sha256"] == entry_hash(prev["sha256"], row["id"], row["t_ns"], row["actor"], row["action"],
                                           row["target"], canonical(row["details"]))
    res = trail.verify()
    assert (res.ok, res.entries, res.first_broken, res.kind, res.head_sha256) == (True, 3, None, None,
                                                                                  rows[-1]["sha256"])


def test_an_empty_trail_is_intact(cat):
    res = AuditTrail(cat).verify()
    assert (res.ok, res.entries, res.first_broken, res.reason) == (True, 0, None, "0 entries intact")


def test_filters_and_order(cat):
    trail = _fill(cat, 6)
    trail.append("service", "service_start", "node a", details={"role": "all"})
    total, rows = trail.entries(actor="user1")
    assert total == 3 and [r["id"] for r in rows] == [5, 3, 1]
    total, rows = trail.entries(action="service_start")
    assert total == 1 and rows[0]["details"] == {"role": "all"}
    total, rows = trail.entries(target="run 4")
    assert total == 1 and rows[0]["id"] == 4
    total, rows = trail.entries(limit=2, offset=1, newest_first=False)
    assert total == 7 and [r["id"] for r in rows] == [2, 3]
    t4 = rows[1]["t_ns"] + 1  # entry 3's time + 1 ns: entries 4 on
    total, rows = trail.entries(since_ns=t4, newest_first=False)
    assert [r["id"] for r in rows] == [4, 5, 6, 7]
    total, rows = trail.entries(until_ns=t4, newest_first=False)
    assert [r["id"] for r in rows] == [1, 2, 3]


def test_an_altered_entry_is_named(cat):
    trail = _fill(cat)
    _sql(cat, "UPDATE audit_log SET details = :d WHERE id = 4", d='{"after":{"lot":"X"},"before":{"lot":"L4"}}')
    res = trail.verify()
    assert (res.ok, res.entries, res.first_broken, res.kind) == (False, 6, 4, "altered")
    assert res.reason == "entry 4 was altered: its content does not match its hash"


def test_an_altered_actor_is_named(cat):
    trail = _fill(cat)
    _sql(cat, "UPDATE audit_log SET actor = 'someone else' WHERE id = 2")
    res = trail.verify()
    assert (res.ok, res.first_broken, res.kind) == (False, 2, "altered")


def test_a_deleted_entry_is_named(cat):
    trail = _fill(cat)
    _sql(cat, "DELETE FROM audit_log WHERE id = 3")
    res = trail.verify()
    assert (res.ok, res.entries, res.first_broken, res.kind) == (False, 5, 3, "deleted")
    assert res.reason == "entry 3 was deleted: the numbers jump from 2 to 4"


def test_deleted_newest_entries_are_named(cat):
    trail = _fill(cat)
    _sql(cat, "DELETE FROM audit_log WHERE id >= 5")
    res = trail.verify()
    assert (res.ok, res.first_broken, res.kind) == (False, 5, "deleted")
    assert res.reason == "entry 5-6 was deleted: the trail recorded 6 entries, the newest is 4"


def test_a_deleted_head_is_named_and_the_next_append_records_it(cat):
    trail = _fill(cat)
    _sql(cat, "DELETE FROM audit_log WHERE id >= 5")
    _sql(cat, "DELETE FROM audit_head")  # the newest entries cut off, and the head that counted them
    res = trail.verify()
    assert (res.ok, res.entries, res.first_broken, res.kind) == (False, 4, 4, "deleted")
    assert res.reason == ("the trail's head (its record of the newest entry) was deleted: entries after 4 "
                          "may have been cut off")
    assert trail.append("eng", "run_edited", "run 9") == 6  # entry 5 records the rebuilt head
    _, rows = trail.entries(newest_first=False)
    assert [(r["id"], r["actor"], r["action"]) for r in rows[4:]] == [(5, "audit", "audit_head_rebuilt"),
                                                                       (6, "eng", "run_edited")]
    assert rows[4]["details"] == {"after_entry": 4, "why": "the head row was missing"}
    res = trail.verify()  # the head is back, the break stays named
    assert (res.ok, res.entries, res.first_broken, res.kind) == (False, 6, 5, "deleted")
    assert res.reason == ("entry 5 records that the trail's head was found deleted: entries before it may "
                          "have been cut off")


def test_a_deletion_with_the_later_entries_renumbered_is_found(cat):
    trail = _fill(cat)
    _sql(cat, "DELETE FROM audit_log WHERE id = 3")
    for i in (4, 5, 6):
        _sql(cat, "UPDATE audit_log SET id = :new WHERE id = :old", new=i - 1, old=i)
    _sql(cat, "UPDATE audit_head SET seq = 5")
    res = trail.verify()
    assert (res.ok, res.first_broken, res.kind) == (False, 3, "altered")  # its number is in its hash


def test_reordered_entries_are_found(cat):
    trail = _fill(cat)
    _sql(cat, "UPDATE audit_log SET id = 100 WHERE id = 2")
    _sql(cat, "UPDATE audit_log SET id = 2 WHERE id = 5")
    _sql(cat, "UPDATE audit_log SET id = 5 WHERE id = 100")
    res = trail.verify()
    assert (res.ok, res.first_broken, res.kind) == (False, 2, "altered")


def test_an_entry_inserted_past_the_head_is_named(cat):
    trail = _fill(cat, 3)
    with cat.engine.connect() as c:
        last = c.execute(text("SELECT sha256 FROM audit_log WHERE id = 3")).scalar_one()
    forged = entry_hash(last, 4, 1, "x", "key_created", "key 9", "{}")
    _sql(cat, "INSERT INTO audit_log VALUES (4, 1, 'x', 'key_created', 'key 9', '{}', :p, :s)", p=last, s=forged)
    res = trail.verify()
    assert (res.ok, res.first_broken, res.kind) == (False, 4, "inserted")


def test_an_entry_rehashed_after_alteration_is_named_by_the_broken_link(cat):
    trail = _fill(cat)
    with cat.engine.connect() as c:
        row = c.execute(text("SELECT * FROM audit_log WHERE id = 3")).mappings().one()
    forged = entry_hash(row["prev_sha256"], 3, row["t_ns"], row["actor"], row["action"], row["target"], "{}")
    _sql(cat, "UPDATE audit_log SET details = '{}', sha256 = :s WHERE id = 3", s=forged)
    res = trail.verify()
    assert (res.ok, res.first_broken, res.kind) == (False, 3, "altered")
    assert res.reason == "entry 3 was altered (and its hash recomputed): entry 4 no longer links to it"


def test_appends_go_on_after_verify_and_reopen(cat, tmp_path):
    _fill(cat, 2)
    again = Catalogue(f"sqlite:///{tmp_path}/audit.sqlite")
    try:
        assert AuditTrail(again).append("service", "service_stop", "node a") == 3
    finally:
        again.close()
    assert AuditTrail(cat).verify().entries == 3 and AuditTrail(cat).verify().ok
