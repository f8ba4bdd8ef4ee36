"""``WS /api/rigs/{rig}/live``: decimated readings (≤ 20 Hz) and cycle events."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from fastapi.exceptions import HTTPException
from fastapi.responses import JSONResponse

from api.auth import websocket_identity
from daq.catalogue.keys import role_at_least
from daq.config import canonical_origin

router = APIRouter(prefix="/api/rigs", tags=["live"])

#: Close codes: like HTTP 401/403/404, in the 4000 range WebSocket leaves to applications.
CLOSE_UNAUTHORISED, CLOSE_FORBIDDEN, CLOSE_NOT_FOUND = 4401, 4403, 4404


@router.websocket("/{rig}/live")
async def live(ws: WebSocket, rig: str) -> None:
    """Live readings and cycle verdicts of one rig, as JSON text messages.

    ``{"type": "readings", …}`` at most 20 times a second, ``{"type": "cycle", …}`` for
    each analysed cycle, ``{"type": "event", …}`` for faults and run changes.

    The key comes as ``Authorization: Bearer``, the page's cookie, or ``?key=``. Without
    a valid operator key the handshake is refused with HTTP 401 (403: role too small;
    404: no such rig); a server without that ASGI extension accepts and closes with
    4401/4403/4404 instead.

    A browser's handshake (one with ``Origin``) is refused with 403 unless the page came
    from this server (same host and port as ``Host``) or from ``[api] allowed_origins``.
    Clients that send no ``Origin`` (scripts, the CLI) are not browsers and pass.
    """
    service = ws.app.state.service
    refusal = await _refusal(ws, rig)
    if refusal is not None:
        status, code, reason = refusal
        if "websocket.http.response" in ws.scope.get("extensions", {}):
            # the handshake itself is refused with the HTTP status, as for any other route
            await ws.send_denial_response(JSONResponse({"detail": reason}, status_code=status))
        else:
            await ws.accept()
            await ws.close(code, reason)
        return
    await ws.accept()
    client = service.feed.subscribe(rig)
    reader = asyncio.create_task(_drain(ws))
    try:
        while not reader.done():
            getter = asyncio.create_task(client.queue.get())
            done, _ = await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                break
            await ws.send_text(getter.result().decode())
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        service.feed.unsubscribe(client)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader


async def _refusal(ws: WebSocket, rig: str) -> tuple[int, int, str] | None:
    """(HTTP status, close code, reason) when the handshake must be refused, else None."""
    service = ws.app.state.service
    origin = ws.headers.get("origin")
    if origin is not None and not origin_allowed(origin, ws.headers.get("host"),
                                                 service.settings.api.allowed_origins):
        # a page of another site would ride on the operator's cookie (cross-site WebSocket hijacking)
        return (403, CLOSE_FORBIDDEN, f"origin {origin[:60]!r} may not open the live feed "
                "(see [api] allowed_origins)")
    try:
        who = await websocket_identity(ws)
    except HTTPException:
        who = None
    if who is None:
        return (401, CLOSE_UNAUTHORISED, "an operator API key is required")
    if not role_at_least(who.role, "operator"):
        return (403, CLOSE_FORBIDDEN, "operator role required")
    if rig not in service.rigs:
        return (404, CLOSE_NOT_FOUND, f"no rig {rig!r}; rigs are: {', '.join(sorted(service.rigs))}")
    return None


def origin_allowed(origin: str, host: str | None, allowed: list[str]) -> bool:
    """Whether a handshake's ``Origin`` is this server itself (its ``Host``) or in ``allowed``.

    ``allowed`` holds canonical origins (:func:`daq.config.canonical_origin`). ``null``,
    a malformed origin or a malformed ``Host`` is refused.
    """
    try:
        canonical = canonical_origin(origin)
    except ValueError:
        return False
    if canonical in allowed:
        return True
    if not host or "@" in host:
        return False
    o, h = urlsplit(canonical), urlsplit("//" + host.strip())
    try:
        default = 443 if o.scheme == "https" else 80
        same = (h.hostname is not None and h.hostname == o.hostname
                and (h.port or default) == (o.port or default))
    except ValueError:  # a port that is not a number
        return False
    return same


async def _drain(ws: WebSocket) -> None:
    """Read (and ignore) what the client sends, to notice when it goes away."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while True:
            await ws.receive_text()
