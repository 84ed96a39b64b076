"""Keeping a running session's TCA current, off its order path.

A session subscribes :meth:`TcaUpdater.on_flushed` to its bus's ``"flushed"`` events (the
store's copy of the order journal caught up): the update runs on the bus's thread for this
subscriber, at most once per ``min_interval_s`` of wall time and never more than a tenth of
the time (an update that took 0.3 s waits 3 s before the next: an update reads every fill
to find the new ones, and the machine is shared with the session). A flush that comes too soon
is not dropped: a timer runs the update when it is due, so the last fills of a burst followed by
a quiet market get their rows within the interval, not only at the end. :meth:`TcaUpdater.finish`
runs a last one when the session stops; no update starts after it, so the session may let go of
the store. A failing update never reaches the order path: it is handed to ``on_error`` (the
session raises an alert, which says it; without one it is a warning) and logged in one line, the
traceback at debug level (a notebook shows no traceback from a background step); the decision
notes it could not write wait for the next one. Fills a calibration cannot price (no predicted
cost) are said once per instrument and reason, at info level, not at every update.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from tradebook.tca.recorder import TcaRecorder
from tradebook.tca.update import TcaUpdate, update_tca

log = logging.getLogger(__name__)


def calibration_ids(store: Any, names: Iterable[str]) -> dict[str, str]:
    """instrument_id -> calibration id of the stored calibrations ``names`` ('X@v2', or an instrument: its latest)."""
    out = {}
    for name in names:
        record = store.calibration(str(name))
        out[record.instrument_id] = record.calibration_id
    return out


class TcaUpdater:
    """Runs :func:`update_tca` for a session: after flushes (throttled) and once more at the end; never raises."""

    def __init__(self, store: Any, recorder: TcaRecorder, *, calibrations: Mapping[str, str] | None = None,
                 on_error: Callable[[str], None] | None = None, min_interval_s: float = 1.0) -> None:
        self.store = store
        self.recorder = recorder
        self.calibrations = dict(calibrations or {})
        self.on_error = on_error
        self.min_interval_s = min_interval_s
        self.last: TcaUpdate | None = None
        self.failures = 0
        self._lock = threading.Lock()
        self._next_due = float("-inf")  # monotonic seconds
        self._flushed = False  # the store took order-path records since the last update
        self._closed = False
        self._trailing: threading.Timer | None = None  # the update a too-early flush left for later
        self._unpriced_said: set[tuple[str, str]] = set()  # (instrument_id, reason) already logged

    def flushed(self, journal: str = "", position: int = 0, records: int = 0) -> None:
        """The order manager's flush listener (called in its flush, before the bus hears): there is work to do."""
        self._flushed = True

    def on_flushed(self, event: Any = None) -> None:
        """A bus callback: update unless the last one is too recent (see the module docstring; the end catches up)."""
        self._flushed = True
        wait = self._next_due - time.monotonic()
        if wait > 0:
            self._schedule_trailing(wait)
            return
        self.update_now()

    def _schedule_trailing(self, wait: float) -> None:
        with self._lock:
            if self._closed or (self._trailing is not None and self._trailing.is_alive()):
                return
            self._trailing = threading.Timer(wait, self._trailing_update)
            self._trailing.daemon = True
            self._trailing.name = "tca-trailing-update"
            self._trailing.start()

    def _trailing_update(self) -> None:
        if self._flushed:
            self.update_now()

    def update_now(self) -> TcaUpdate | None:
        """One update now (waiting for one in progress); None when it failed or the updater is finished."""
        with self._lock:
            if self._closed:
                return None
            started = time.monotonic()
            flushed, self._flushed = self._flushed, False
            try:
                self.last = update_tca(self.store, recorder=self.recorder, calibrations=self.calibrations)
            except Exception as exc:  # noqa: BLE001 - TCA must never break the session that runs it
                self._flushed = self._flushed or flushed  # still to do
                self.failures += 1
                message = f"TCA update failed ({type(exc).__name__}: {exc}); orders and fills are unaffected"
                log.log(logging.INFO if self.on_error is not None else logging.WARNING, message)
                log.debug("TCA update failed", exc_info=exc)
                if self.on_error is not None:
                    try:
                        self.on_error(message)
                    except Exception:  # noqa: BLE001
                        log.exception("TCA: the error callback failed")
                return None
            finally:
                self._next_due = started + max(self.min_interval_s, 10 * (time.monotonic() - started))
            self._say_unpriced(self.last.unpriced)
            return self.last

    def _say_unpriced(self, unpriced: Mapping[str, str]) -> None:
        for instrument_id, reason in unpriced.items():
            if (instrument_id, reason) not in self._unpriced_said:
                self._unpriced_said.add((instrument_id, reason))
                log.info("TCA: fills of %s have no predicted cost (realised costs are computed): %s",
                         instrument_id, reason)

    def finish(self) -> TcaUpdate | None:
        """The last update (after the session's final flush), if anything was flushed or noted since the previous
        one (a session that sent nothing costs nothing at its end); later flush events do nothing."""
        with self._lock:
            trailing, self._trailing = self._trailing, None
        if trailing is not None:
            trailing.cancel()
        result = self.update_now() if self._flushed or len(self.recorder) else None
        with self._lock:
            self._closed = True
            trailing, self._trailing = self._trailing, None  # one a flush left meanwhile would find it closed
        if trailing is not None:
            trailing.cancel()
        return result


__all__ = ["TcaUpdater", "calibration_ids"]
