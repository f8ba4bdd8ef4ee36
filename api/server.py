"""Serve the app with uvicorn inside an existing event loop; the caller owns the signals."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket

import uvicorn

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` serves this machine only (127.0.0.0/8, ::1, localhost).

    Anything else, including ``0.0.0.0``, ``::``, ``""`` and other host names, may be
    reachable from the network.
    """
    h = host.strip().strip("[]").rstrip(".").lower()
    if h == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(h)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def open_without_auth_warning(host: str, port: int, config: object = None) -> str:
    """What to log when the API serves ``host:port`` beyond loopback with API keys off."""
    where = f" in {config}" if config else ""
    return (f"API KEYS ARE OFF ([auth] enabled = false) and the API listens on {host}:{port}, "
            "which other machines may reach: anyone who can connect is admin (starts and stops "
            "runs, reads every result, creates keys). Set [auth] enabled = true" + where +
            " and create keys with `daq keys create --role operator --name NAME`, or set "
            "[api] host = \"127.0.0.1\" to serve this machine only.")


def _settings(app):
    service = getattr(getattr(app, "state", None), "service", None)
    return getattr(service, "settings", None)


class _NoSignals(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):
        yield


class ApiServer:
    """uvicorn for ``app`` on ``host:port``; ``start`` returns once it listens.

    Binding beyond loopback while the app's settings have API keys off logs a warning.
    """

    def __init__(self, app, host: str, port: int):
        self.app, self.host, self.port = app, host, port
        self.server = _NoSignals(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                                lifespan="on"))
        self.task: asyncio.Task | None = None
        self.sock: socket.socket | None = None

    def bind(self) -> None:
        """Take the listening socket now; raises OSError naming the address when it is busy.

        Binding here rather than in uvicorn: uvicorn would sys.exit() on a busy port.
        """
        if self.sock is not None:
            return
        # proto IPPROTO_TCP, not 0: asyncio turns Nagle off (TCP_NODELAY) only on accepted
        # sockets whose proto says TCP; with Nagle on, a response written in two parts
        # waits ≈40 ms for the client's delayed ACK
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as e:
            sock.close()
            raise OSError(f"the API cannot listen on {self.host}:{self.port}: {e.strerror} "
                          "(port in use? set [api] port)") from None
        sock.listen(128)
        self.sock = sock
        settings = _settings(self.app)
        if settings is not None and not settings.auth.enabled and not is_loopback(self.host):
            port = sock.getsockname()[1]  # the one the OS chose for port 0
            log.warning("%s", open_without_auth_warning(self.host, port, settings.path))

    async def start(self, timeout_s: float = 10.0) -> None:
        """Start serving (binding first if needed); returns once it listens."""
        self.bind()
        self.task = asyncio.create_task(self.server.serve(sockets=[self.sock]), name="api")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not self.server.started:
            if self.task.done() or loop.time() > deadline:
                with contextlib.suppress(BaseException):
                    await self.task
                raise OSError(f"the API did not start on {self.host}:{self.port}")
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        """Stop accepting, finish open requests, return."""
        self.server.should_exit = True
        if self.task is not None:
            with contextlib.suppress(BaseException):
                await self.task
