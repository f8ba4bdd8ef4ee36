"""Roles by API key: ``Authorization: Bearer <key>`` (or the operator page's cookie).

401 without a key or with one that is unknown or revoked; 403 when the key's role is
too small. Roles nest: operator < engineer < qa < admin.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import Depends, HTTPException, Request, WebSocket

from daq.catalogue.keys import KeyInfo, KeyStore, role_at_least

COOKIE = "rigdaq_key"
ADMIN_WITHOUT_AUTH = KeyInfo(0, "auth disabled", "admin")


def _presented_key(headers, cookies, query) -> str | None:
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return cookies.get(COOKIE) or query.get("key")


async def identify(app, key: str | None) -> KeyInfo | None:
    """The key's owner, checked off the event loop (scrypt takes milliseconds)."""
    service = app.state.service
    if not service.settings.auth.enabled:
        return ADMIN_WITHOUT_AUTH
    store: KeyStore | None = service.keys
    if store is None:
        raise HTTPException(503, "the service is still starting: keys cannot be checked yet")
    if not key:
        return None
    return await asyncio.to_thread(store.verify, key)


def require(role: str):
    """A dependency: the caller's key, which must have at least ``role``."""

    async def check(request: Request) -> KeyInfo:
        key = _presented_key(request.headers, request.cookies, {})
        who = await identify(request.app, key)
        if who is None:
            detail = "an API key is required: Authorization: Bearer <key>" if not key else \
                "unknown or revoked API key"
            raise HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})
        if not role_at_least(who.role, role):
            raise HTTPException(403, f"this needs the {role} role; key {who.name!r} has {who.role}")
        return who

    check.__name__ = f"require_{role}"
    return check


async def websocket_identity(ws: WebSocket) -> KeyInfo | None:
    """Who opened a WebSocket: header, cookie or ``?key=`` (browsers cannot set headers there)."""
    key = _presented_key(ws.headers, ws.cookies, ws.query_params)
    return await identify(ws.app, key)


Operator = Annotated[KeyInfo, Depends(require("operator"))]
Engineer = Annotated[KeyInfo, Depends(require("engineer"))]
QA = Annotated[KeyInfo, Depends(require("qa"))]
Admin = Annotated[KeyInfo, Depends(require("admin"))]
