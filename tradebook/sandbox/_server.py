"""What every HTTP sandbox server shares: an aiohttp app on 127.0.0.1 in a background thread, and faults.

``start()`` binds a free port (or the one given) and returns once the server answers;
``stop()`` releases every held request, closes every connection and joins the thread,
each within a timeout. ``restart()`` drops every connection and comes back on the same
port, as a venue's gateway does after a restart. Faults are armed by kind and count
(``server.fault(kind, times=2)``) and each request that meets one uses it up.
"""

from __future__ import annotations

import asyncio
import threading
from abc import ABC, abstractmethod
from collections import Counter
from enum import StrEnum
from typing import Any

from tradebook.errors import SandboxError

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
HISTORY = 10_000  # requests and stream messages a server remembers (the latest)
HOLD_MAX_S = 120.0  # a held ("never answered") request is let go by stop() or after this, whichever is first


class FaultPlan:
    """Armed faults by kind: ``arm`` adds uses, ``take`` spends one (True) or finds none (False)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: Counter[str] = Counter()
        self.options: dict[str, dict[str, Any]] = {}
        self.spent: Counter[str] = Counter()  # what each kind did, for tests to check

    def arm(self, kind: StrEnum, times: int = 1, **options: Any) -> None:
        if times < 1:
            raise SandboxError(f"fault {kind}: times must be at least 1, got {times}")
        with self._lock:
            self._armed[kind] += times
            self.options[kind] = options

    def take(self, kind: StrEnum) -> dict[str, Any] | None:
        """The armed fault's options (a dict, maybe empty) when one is spent, else None."""
        with self._lock:
            if self._armed[kind] <= 0:
                return None
            self._armed[kind] -= 1
            self.spent[kind] += 1
            return dict(self.options.get(kind, {}))

    def armed(self, kind: StrEnum) -> int:
        with self._lock:
            return self._armed[kind]

    def clear(self) -> None:
        with self._lock:
            self._armed.clear()


class BackgroundServer(ABC):
    """An aiohttp application served from its own thread and event loop; subclasses build the app."""

    name = "sandbox"

    def __init__(self, *, port: int = 0) -> None:
        self._requested_port = port
        self.port: int | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: Any = None
        self._release: asyncio.Event | None = None
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self.session = 1  # bumped by restart(): a new gateway session
        self.faults = FaultPlan()

    # -- subclass hooks ------------------------------------------------------------------
    @abstractmethod
    def build_app(self) -> Any:  # -> aiohttp.web.Application
        """The venue's routes: every sandbox answers its own protocol."""

    async def on_disconnect_all(self) -> None:
        """Close long-lived connections (websockets); called by restart() and stop()."""

    # -- life cycle ----------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        if self.port is None:
            raise SandboxError(f"{self.name} server is not started")
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> BackgroundServer:
        if self._thread is not None:
            raise SandboxError(f"{self.name} server already started on port {self.port}")
        self._started.clear()
        self._thread = threading.Thread(target=self._run, name=f"tradebook-sandbox-{self.name}", daemon=True)
        self._thread.start()
        if not self._started.wait(START_TIMEOUT_S):
            raise SandboxError(f"{self.name} server did not start within {START_TIMEOUT_S} s")
        if self._start_error is not None:
            self._thread = None
            raise SandboxError(f"{self.name} server failed to start: {self._start_error}") from self._start_error
        return self

    def stop(self) -> None:
        if self._thread is None or self.loop is None:
            return
        future = asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop)
        try:
            future.result(STOP_TIMEOUT_S)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(STOP_TIMEOUT_S)
            self._thread = None

    def restart(self) -> None:
        """Drop every connection and listen again on the same port as a new session."""
        self.call(self._restart())

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def call(self, coro: Any, timeout: float = STOP_TIMEOUT_S) -> Any:
        """Run a coroutine on the server's loop from another thread and wait for it."""
        if self.loop is None or self._thread is None:
            raise SandboxError(f"{self.name} server is not started")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def schedule(self, coro: Any) -> None:
        """Run a coroutine on the server's loop soon, from any thread (the book's listeners run on either)."""
        loop = self.loop
        if loop is None or loop.is_closed():
            coro.close()
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            loop.create_task(coro)
        else:
            asyncio.run_coroutine_threadsafe(coro, loop)

    async def hold(self) -> None:
        """Wait until stop() (or HOLD_MAX_S): a request accepted and never answered."""
        assert self._release is not None
        try:
            await asyncio.wait_for(self._release.wait(), HOLD_MAX_S)
        except asyncio.TimeoutError:
            pass

    # -- inside the thread ------------------------------------------------------------------
    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._listen(self._requested_port))
        except BaseException as exc:  # reported to start()
            self._start_error = exc
            self._started.set()
            self.loop.close()
            return
        self._started.set()
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    async def _listen(self, port: int) -> None:
        from aiohttp import web

        self._release = asyncio.Event()
        self._runner = web.AppRunner(self.build_app(), handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _shutdown(self) -> None:
        if self._release is not None:
            self._release.set()
        await self.on_disconnect_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _restart(self) -> None:
        await self._shutdown()
        self.session += 1
        await self._listen(self.port or 0)


def serve_from_command_line(server: BackgroundServer, argv: list[str] | None, prog: str) -> int:
    """``python -m tradebook.sandbox.<broker> [--port N] [--price SYMBOL=BID/ASK ...]``: serve until Ctrl-C."""
    import argparse
    import time

    parser = argparse.ArgumentParser(prog=prog, description=f"A local {server.name} API on 127.0.0.1 "
                                     "(tradebook's sandbox); Ctrl-C stops it.")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one)")
    parser.add_argument("--price", action="append", default=[], metavar="SYMBOL=BID/ASK",
                        help="a starting touch, e.g. SPY=450.00/450.02 (repeatable)")
    args = parser.parse_args(argv)
    prices = []
    for text in args.price:
        symbol, _, quote = text.partition("=")
        bid, _, ask = quote.partition("/")
        if not (symbol and bid and ask):
            parser.error(f"--price {text!r}: expected SYMBOL=BID/ASK, e.g. SPY=450.00/450.02")
        prices.append((symbol, bid, ask))
    server._requested_port = args.port
    server.start()
    try:
        for symbol, bid, ask in prices:
            server.set_price(symbol, bid, ask)  # type: ignore[attr-defined]
        print(f"{server.name} sandbox listening on {server.base_url}", flush=True)
        stream_url = getattr(server, "stream_url", None)
        if stream_url:
            print(f"stream: {stream_url}", flush=True)
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()
