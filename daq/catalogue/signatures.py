"""Electronic signatures of run certificates (QA sign-off), in the spirit of 21 CFR Part 11 §11.50/§11.70/§11.200.

A ``qa`` (or ``admin``) key approves or rejects a stopped run's certificate, with a reason. At the
signing the signer re-authenticates: the API key is given again with the signature (it must be
the very key the request is made with), so a signature is one deliberate act of the key's owner,
not something a left-open session or a script holding a cookie does. A wrong re-authentication is
refused and recorded in the audit trail (``signature_failed``).

The signature binds to the certificate's ``content_sha256`` computed here at signing time
(:func:`daq.reports.certificate.build_report`); a signer passing the hash they reviewed is refused
if the certificate has changed since. A signature names the run revision it signs; once a revision
is approved the run's metadata and results are locked (:meth:`Catalogue.edit_run` refuses, filing a
changed result is refused) until a new revision (:meth:`Catalogue.revise_run`) is made and signed.
"""

from __future__ import annotations

import time

from daq.catalogue.audit import AuditTrail
from daq.catalogue.keys import KeyInfo, KeyStore, role_at_least
from daq.catalogue.store import Catalogue, RunError

MEANINGS = ("approved", "rejected")


class SigningError(RunError):
    """A signing refused: ``status`` is the HTTP status (401/403 re-authentication, 404, 409, 422)."""


def _fail(catalogue: Catalogue, actor: str, run_id: int, why: str, status: int, **extra) -> SigningError:
    AuditTrail(catalogue).append(actor, "signature_failed", f"run {run_id}", details={"why": why, **extra})
    return SigningError(why, status)


def sign_run(catalogue: Catalogue, keys: KeyStore, run_id: int, *, key: str, meaning: str, reason: str,
             requester: KeyInfo | None = None, reviewed_sha256: str | None = None,
             rigs: dict | None = None, actor: str | None = None) -> dict:
    """Sign revision N (the current one) of a stopped run's certificate; the signature as filed.

    ``key``: the re-authentication (the API key given again); ``requester``: who made the request
    (the key must be theirs; None from the command line, where ``key`` is the only credential).
    Raises :class:`SigningError` with the HTTP status to answer.
    """
    from daq.reports.certificate import ReportError, build_report  # reports sit on the catalogue

    if meaning not in MEANINGS:
        raise SigningError(f"meaning must be one of {', '.join(MEANINGS)} (got {meaning!r})", 422)
    reason = reason.strip()
    if not reason:
        raise SigningError("a signature needs a reason (why approved or rejected)", 422)
    run = catalogue.run(run_id)
    if run is None:
        raise SigningError(f"no run {run_id}", 404)
    who = requester.name if requester is not None and requester.id else (actor or "unknown")
    info = keys.verify(key, fresh=True) if key else None
    if info is None:
        raise _fail(catalogue, who, run_id, "re-authentication failed: the API key given with the signature is "
                    "missing, unknown or revoked", 401, meaning=meaning)
    if requester is not None and requester.id and info.id != requester.id:
        raise _fail(catalogue, who, run_id, "re-authentication failed: the API key given with the signature is "
                    f"not the key of this request (key {requester.name!r} must sign with itself)", 403,
                    meaning=meaning, presented_key_id=info.id)
    if not role_at_least(info.role, "qa"):
        raise _fail(catalogue, info.name, run_id, f"signing needs the qa role; key {info.name!r} has {info.role}",
                    403, meaning=meaning)
    if run.active:
        raise SigningError(f"run {run_id} is still active: stop it before signing its certificate", 409)

    def current() -> str:
        try:
            return build_report(catalogue, run_id, rigs)["content_sha256"]
        except ReportError as e:
            raise SigningError(str(e), 404) from None

    content = current()
    if reviewed_sha256 is not None and reviewed_sha256 != content:
        raise SigningError(f"the certificate changed since you reviewed it: you reviewed content sha256 "
                           f"{reviewed_sha256}, it is {content} now; review it again", 409)

    def record(conn, sig: dict) -> None:  # in the signature's own transaction
        AuditTrail(catalogue).append(info.name, "signature", f"run {run_id}", conn=conn,
                                     details={k: v for k, v in sig.items() if k not in ("run_id", "signed_at")})

    try:
        return catalogue.add_signature(run_id, run.revision, signer=info.name, role=info.role, key_id=info.id,
                                       meaning=meaning, reason=reason, signed_ns=time.time_ns(),
                                       content_sha256=content, recheck=current, record=record)
    except SigningError:
        raise
    except RunError as e:
        raise SigningError(str(e), e.status) from None
