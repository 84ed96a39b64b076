"""A server on its own event loop in a daemon thread: started and stopped within a timeout, never hanging.

The dashboard (:mod:`.server`) and the read API served alone (:mod:`.api`) both run a
tornado server beside a notebook or the CLI: :class:`LoopThread` starts the loop's
thread, builds the server on it, returns once it listens (or raises why it could not)
and stops it from any thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from tradebook.errors import MonitorServerError

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


def url_host(address: str) -> str:
    """The host part of a URL for a server bound to ``address`` (a wildcard is reached at 127.0.0.1 here)."""
    if address in ("", "0.0.0.0"):
        return "127.0.0.1"
    if address == "::":
        return "[::1]"
    return f"[{address}]" if ":" in address and not address.startswith("[") else address


class LoopThread:
    """Runs ``make()`` on a new asyncio loop in a daemon thread, then the loop until :meth:`stop`.

    ``make`` builds and starts the server (on the loop's thread, where tornado wants it) and
    returns it; ``what`` names the server in errors.
    """

    def __init__(self, make: Callable[[], Any], *, what: str, name: str,
                 start_timeout_s: float = START_TIMEOUT_S) -> None:
        self.what = what
        self.server: Any = None
        self._make = make
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        if not self._ready.wait(start_timeout_s):
            raise MonitorServerError(f"{what} did not start within {start_timeout_s:.0f} s")
        if self._error is not None:
            self._thread.join(STOP_TIMEOUT_S)
            raise MonitorServerError(f"{what} could not start: {self._error}") from self._error

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            self.server = self._make()
        except BaseException as exc:  # noqa: BLE001 - handed to the constructor's caller, which raises it
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and not self._stopped

    def stop(self, shut: Callable[[Any], None]) -> None:
        """Call ``shut(server)`` on the loop, end the loop and join its thread (twice is fine)."""
        if self._stopped:
            return
        self._stopped = True
        loop = self._loop
        if loop is None or loop.is_closed() or not self._thread.is_alive():
            return

        def end() -> None:
            try:
                shut(self.server)
            finally:
                loop.stop()

        loop.call_soon_threadsafe(end)
        self._thread.join(STOP_TIMEOUT_S)
        if self._thread.is_alive():
            raise MonitorServerError(f"{self.what} did not stop within {STOP_TIMEOUT_S:.0f} s")


__all__ = ["LoopThread", "url_host"]
