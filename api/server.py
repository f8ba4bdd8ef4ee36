"""Serve the app with uvicorn inside an existing event loop; the caller owns the signals."""

from __future__ import annotations

import asyncio
import contextlib

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

    async def start(self, timeout_s: float = 10.0) -> None:
        """Start serving; raises OSError when it cannot listen."""
        self.task = asyncio.create_task(self.server.serve(), name="api")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not self.server.started:
            if self.task.done() or loop.time() > deadline:
                with contextlib.suppress(BaseException):
                    await self.task
                raise OSError(f"the API cannot listen on {self.host}:{self.port} (port in use?)")
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        """Stop accepting, finish open requests, return."""
        self.server.should_exit = True
        if self.task is not None:
            with contextlib.suppress(BaseException):
                await self.task
