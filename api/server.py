"""Serve the app with uvicorn inside an existing event loop; the caller owns the signals."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import uvicorn


class _NoSignals(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):
        yield


class ApiServer:
    """uvicorn for ``app`` on ``host:port``; ``start`` returns once it listens."""

    def __init__(self, app, host: str, port: int):
        self.host, self.port = host, port
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
