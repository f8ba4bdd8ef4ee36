"""API keys: roles, creation, hashed storage (scrypt) and verification.

A key looks like ``rdq_<prefix>_<secret>``. Only the prefix (to find the row) and a
salted scrypt hash of the whole key are stored; the key itself is shown once, when it
is created. Verified keys are remembered for a few seconds (by SHA-256 of the key) so
that a busy client does not pay scrypt on every request; a revocation takes effect
within that time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import select

from daq.catalogue.audit import AuditTrail
from daq.catalogue.store import Catalogue
from daq.catalogue.tables import api_keys

ROLES = ("operator", "engineer", "qa", "admin")
SCRYPT = {"n": 2**14, "r": 8, "p": 1}
CACHE_S = 5.0


def role_at_least(role: str, needed: str) -> bool:
    """Whether ``role`` may do what ``needed`` may."""
    return ROLES.index(role) >= ROLES.index(needed)


def hash_key(key: str, salt: bytes | None = None) -> str:
    """``scrypt$n$r$p$salt$hash`` (base64) of a key."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(key.encode(), salt=salt, dklen=32, **SCRYPT)
    b64 = base64.b64encode
    return f"scrypt${SCRYPT['n']}${SCRYPT['r']}${SCRYPT['p']}${b64(salt).decode()}${b64(digest).decode()}"


def check_key(key: str, stored: str) -> bool:
    """Whether ``key`` matches a stored hash (constant-time compare)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    got = hashlib.scrypt(key.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=32)
    return hmac.compare_digest(got, base64.b64decode(digest))


@dataclass(frozen=True)
class KeyInfo:
    """Who a verified key belongs to."""

    id: int
    name: str
    role: str


class KeyStore:
    """Keys in the catalogue database."""

    def __init__(self, catalogue: Catalogue):
        self.catalogue = catalogue
        self._cache: dict[bytes, tuple[KeyInfo, float]] = {}

    def create(self, name: str, role: str, by: str = "service") -> tuple[str, KeyInfo]:
        """A new key: (the key, shown only now; its info). ``by``: who created it (the audit trail's actor)."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)} (got {role!r})")
        if not name.strip():
            raise ValueError("a key needs a name (who or what uses it)")
        prefix = secrets.token_hex(4)
        key = f"rdq_{prefix}_{secrets.token_urlsafe(24)}"
        digest = hash_key(key)
        with self.catalogue.write_lock() as c:  # the key and its audit entry: both or neither
            kid = c.execute(api_keys.insert().values(name=name, role=role, prefix=prefix, hash=digest,
                                                     created_ns=time.time_ns())).inserted_primary_key[0]
            AuditTrail(self.catalogue).append(by, "key_created", f"key {kid}", conn=c,
                                              after={"id": kid, "name": name, "role": role, "prefix": prefix})
        return key, KeyInfo(kid, name, role)

    def list(self) -> list[dict]:
        """Every key (no hashes), oldest first."""
        with self.catalogue.engine.connect() as c:
            rows = c.execute(select(api_keys.c.id, api_keys.c.name, api_keys.c.role, api_keys.c.prefix,
                                    api_keys.c.created_ns, api_keys.c.revoked_ns)
                             .order_by(api_keys.c.id)).mappings().all()
        return [dict(r) for r in rows]

    def revoke(self, key_id: int, by: str = "service") -> bool:
        """Revoke a key; False if there is no such active key. ``by``: who revoked it (for the audit trail)."""
        now = time.time_ns()
        with self.catalogue.write_lock() as c:  # the revocation and its audit entry: both or neither
            n = c.execute(api_keys.update().where((api_keys.c.id == key_id) & api_keys.c.revoked_ns.is_(None))
                          .values(revoked_ns=now)).rowcount
            if n > 0:
                row = c.execute(select(api_keys.c.name, api_keys.c.role).where(api_keys.c.id == key_id)).first()
                AuditTrail(self.catalogue).append(by, "key_revoked", f"key {key_id}", conn=c,
                                                  before={"revoked_ns": None}, after={"revoked_ns": now},
                                                  details={"name": row.name, "role": row.role})
        self._cache.clear()
        return n > 0

    def verify(self, key: str, fresh: bool = False) -> KeyInfo | None:
        """The key's owner and role, or None for an unknown, malformed or revoked key.

        ``fresh``: ask the catalogue, not the few seconds' memory of verified keys (signing does:
        a key revoked on another node signs nothing after its revocation).
        """
        fp = hashlib.sha256(key.encode()).digest()
        hit = self._cache.get(fp)
        now = time.monotonic()
        if hit and hit[1] > now and not fresh:
            return hit[0]
        parts = key.split("_")
        if len(parts) < 3 or parts[0] != "rdq" or len(key) > 200:
            return None
        with self.catalogue.engine.connect() as c:
            rows = c.execute(select(api_keys).where((api_keys.c.prefix == parts[1])
                                                    & api_keys.c.revoked_ns.is_(None))).mappings().all()
        for row in rows:
            if check_key(key, row["hash"]):
                info = KeyInfo(row["id"], row["name"], row["role"])
                self._cache[fp] = (info, now + CACHE_S)
                return info
        return None
