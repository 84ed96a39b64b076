"""The session's event loop in its background thread: the one way in for notebook cells (``_call``), the
step of session time (``on_batch``), the kill switch and flatten, and the orderly end whatever happens."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import numpy as np

from tradebook.alerts import AlertCenter
from tradebook.data.feeds import FeedBatch
from tradebook.errors import SessionError, SessionTimeoutError, TradebookError
from tradebook.model.orders import Order, OrderStatus
from tradebook.model.time import ns_to_iso
from tradebook.runtime import tune_gc
from tradebook.session_parts.state import _NS, VOLATILITY_WINDOW, SessionState, SessionView
from tradebook.venues.base import Capability

log = logging.getLogger(__name__)


UNRESOLVED_RECONCILE_S = 1.0  # a session without a feed asks a broker about unresolved orders this often
UNRESOLVED_RECONCILE_TIMEOUT_S = 30.0  # and gives one round of asking this long
BUS_CLOSE_TIMEOUT_S = 5.0  # at stop, how long the bus's subscribers get to finish their queued events


class SessionLoop:
    """The loop and its plumbing (a part of Session: it reads and moves the session's state)."""

    def _call(self, coroutine: Any, timeout: float = 60) -> Any:
        """Run ``coroutine`` on the session's loop and return its result: a cell's one way in.

        Never waits on a loop that has ended or ends meanwhile (a SessionError at once),
        and a call the loop does not finish in ``timeout`` s is a SessionTimeoutError
        saying what it waited for.
        """
        what = sys._getframe(1).f_code.co_name  # the public method a cell called: submit, halt, step, ...
        if self._thread is None or self._loop is None:
            coroutine.close()
            raise SessionError(f"{what}: the session is not running (state {self.state}); call start() first")
        if self._loop_ended.is_set():
            coroutine.close()
            raise SessionError(f"{what}: {self._ended_text()}")

        async def guarded() -> Any:
            if not self._accepting:  # the loop stopped taking calls after this one was handed over
                coroutine.close()
                raise SessionError(f"{what}: {self._ended_text()}")
            return await coroutine

        try:
            future = asyncio.run_coroutine_threadsafe(guarded(), self._loop)
        except RuntimeError:  # the loop was closed in between
            coroutine.close()
            raise SessionError(f"{what}: {self._ended_text()}") from None
        deadline = time.monotonic() + timeout
        while not future.done():
            if self._loop_ended.is_set() and not future.done():
                future.cancel()
                concurrent.futures.wait([future], timeout=1)
                if not future.done() or future.cancelled():
                    raise SessionError(f"{what}: {self._ended_text()}")
                break
            if time.monotonic() > deadline:
                future.cancel()
                raise SessionTimeoutError(f"{what} did not finish within {timeout} s: the session loop is busy "
                                          f"(state {self.state}, session time {self._time_text()}); nothing was "
                                          "cancelled that had started")
            concurrent.futures.wait([future], timeout=0.05)
        return future.result()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        restore_gc: Callable[[], None] = lambda: None  # noqa: E731
        try:
            restore_gc = tune_gc() if self.config.session.tune_gc else restore_gc
            loop.run_until_complete(self._main())
        except BaseException as exc:  # noqa: BLE001 - surfaced to the notebook by wait()/start()
            self._fail(exc, "its event loop")
        finally:
            # Every step runs whatever the one before did: the session always ends, says why, and lets
            # go of its state folder, and wait() returns.
            self._accepting = False
            self._loop_ended.set()
            if self._stop.is_set() and self.state in (SessionState.RUNNING, SessionState.PAUSED):
                self.state = SessionState.STOPPED  # said now: the bus closes with the journals
            steps: tuple[tuple[str, Callable[[], Any]], ...] = (
                ("the final flush to the store", lambda: self.oms.close(flush=True)),
                ("the TCA of the session's fills", self._tca.finish),
                (f"closing the venue {self.venue.name}", lambda: loop.run_until_complete(self._close_venue())),
                ("closing the journals", lambda: self._close_files(release=False)),
                ("closing the event loop", loop.close),
                ("restoring the garbage collector", restore_gc),
                ("letting other processes read the store", self._release_store),
            )
            for what, step in steps:
                try:
                    step()
                except BaseException as exc:  # noqa: BLE001 - the next steps must run
                    self._fail(exc, what)
            self._state_lock.release()
            self._ready.set()  # a start() that failed returns once everything is let go
            self._done.set()

    def _release_store(self) -> None:
        """The store goes back to what it was before start(): read-only again for a lazy writer (tb.open_store),
        so `tradebook info` or a dashboard in another process can read it once the session is over."""
        self.store.announce(getattr(self, "_store_purpose", ""))
        self.store.release_writer()

    def _fail(self, exc: BaseException, during: str) -> None:
        """Record a failure: the first one is the session's error (a TradebookError naming what failed)."""
        log.error("%s: %s: %s", during, type(exc).__name__, exc, exc_info=exc)
        if self.error is None:
            if isinstance(exc, TradebookError):
                self.error = exc
            else:
                error = SessionError(f"paper run {self._run_label()} failed in {during}: {type(exc).__name__}: {exc}")
                error.__cause__ = exc
                self.error = error
        self.state = SessionState.FAILED

    async def _close_venue(self) -> None:
        if not getattr(self, "_venue_closed", False):  # also on a half-built session
            self._venue_closed = True
            await self.venue.close()
            set_aside = getattr(self, "_paper", None)
            if set_aside is not None:  # the paper venue an armed session never connected: its files
                await set_aside[0].close()

    def _close_files(self, *, release: bool = True) -> None:
        """Close what this session opened in its state folder (journals, a venue never connected), then
        (``release``) its lock. Safe on a half-built session and when called again."""
        dashboard = getattr(self, "_dashboard", None)
        if dashboard is not None:  # it reads through this session's store, which closes now
            dashboard.stop()
        set_aside = getattr(self, "_paper", None)
        for journal in (getattr(getattr(self, "oms", None), "journal", None), getattr(self, "_journal", None),
                        set_aside[1].journal if set_aside is not None else None):
            if journal is not None:
                journal.close()
        bus = getattr(self, "bus", None)
        if bus is not None:  # subscribers finish what is queued; one that hangs is left behind, logged
            bus.close(BUS_CLOSE_TIMEOUT_S)
        center = getattr(self, "alert_center", None)
        if center is not None:  # its sinks get as long again to deliver what the bus's last events raised
            center.close(BUS_CLOSE_TIMEOUT_S)
        venue = getattr(self, "venue", None)
        if venue is not None and self._thread_never_ran() and not getattr(self, "_venue_closed", False):
            # the loop never ran to close it; a thread of its own, since a notebook's loop may be running here
            closer = threading.Thread(target=lambda: asyncio.run(self._close_venue()), name="tradebook-close")
            closer.start()
            closer.join(10)
        lock = getattr(self, "_state_lock", None)
        if release and lock is not None:
            lock.release()

    def _thread_never_ran(self) -> bool:
        return getattr(self, "_thread", None) is None

    def _is_paper_venue(self) -> bool:
        from tradebook.venues.paper import PaperVenue

        return isinstance(self.venue, PaperVenue)

    def _run_label(self) -> str:
        return repr(self.run) if getattr(self, "run", None) is not None else f"in {self.state_dir}"

    def _run_argument(self) -> str:
        return f"run={self.run!r}" if self.run is not None else f"state_dir={str(self.state_dir)!r}"

    def _time_text(self) -> str:
        return ns_to_iso(self._now) if self._now else "not started"

    def _ended_text(self) -> str:
        why = f" ({type(self.error).__name__}: {self.error})" if self.error is not None else ""
        return (f"paper run {self._run_label()} has ended{why}, state {self.state} at session time "
                f"{self._time_text()}; its orders, fills and positions stay readable; to trade again build "
                f"tb.Session(..., {self._run_argument()}) (add reset=True to start it over)")

    async def _main(self) -> None:
        await self._connect_venue()
        self.oms.recover()
        self.oms.start()
        self.alert_center = AlertCenter(
            self.store, self.config.alerts, account_id=self.account_id, currency=self.config.risk.account_currency,
            risk=self.risk, models=self._models, daily_pnl=self._daily_pnl,
            venue_health=lambda: (self.venue.name, self.venue_health())).attach(self.bus)
        self.alerts.extend(await self.oms.reconcile())
        self._decide_unsent()
        self._reconciled_day = self._now // (86_400 * _NS) if self._now else -1
        self.state = SessionState.RUNNING if self._running.is_set() else SessionState.PAUSED
        self._accepting = True
        self._ready.set()
        if self.feed is None:
            loop = asyncio.get_running_loop()
            asked = loop.time()
            while not self._stop.is_set():
                await asyncio.sleep(0.02)
                # a broker's unresolved orders are asked about by id, without waiting for market data
                if self.oms.unresolved() and Capability.SIMULATED not in self.venue.capabilities \
                        and loop.time() - asked >= UNRESOLVED_RECONCILE_S:
                    asked = loop.time()
                    await self._reconcile_now()
            return
        for batch in self.feed.batches(from_ns=self._resume_ns):
            while not self._running.is_set() and not self._stop.is_set():
                await asyncio.sleep(0.02)
            if self._stop.is_set():
                return
            await self.on_batch(batch)
            if self._pause_at is not None and self._now >= self._pause_at:
                self._pause_at = None
                self.pause()  # wait_until(..., pause=True): hold session time here
            await asyncio.sleep(0)  # let notebook calls in between batches
        self.oms.flush()
        self._journal.append({"kind": "finished", "end_ns": self._last_end_ns})  # for tb.paper.runs
        self.state = SessionState.FINISHED

    async def on_batch(self, batch: FeedBatch) -> None:
        """One step of session time: market data to the venue, marks, due slices, the strategy, a checkpoint."""
        self._now = max(self._now, batch.start_ns)
        for instrument_id in sorted(set(batch.quotes) | set(batch.trades)):
            await self._feed_venue(instrument_id, batch)
        self._now = max(self._now, batch.end_ns - 1)
        self._last_end_ns = max(self._last_end_ns, batch.end_ns)
        if Capability.SIMULATED in self.venue.capabilities:
            venue_now = self.venue.now_ns
            if venue_now is None or venue_now < self._now:
                # nothing happened until the batch's end: requests arrive, orders expire
                self.venue.advance_to(self._now)
        day = self._now // (86_400 * _NS)
        if self.oms.unresolved() or day != self._reconciled_day:
            # orders in an unknown state block their instrument, and books are compared once a
            # session day: ask the venue
            self._reconciled_day = day
            self.alerts.extend(await self.oms.reconcile())
            self._decide_unsent()
        for instrument_id in batch.quotes:
            last = batch.last_quote(instrument_id)
            if last is None:
                continue
            self._quotes[instrument_id] = last
            ts, bid, ask = last[0], last[1], last[2]
            if np.isfinite(bid) and np.isfinite(ask) and 0 < bid < ask:
                self._publisher.quote(instrument_id, int(ts), float(bid), float(ask))
                mid = (bid + ask) / 2
                self.portfolio.mark(instrument_id, Decimal(repr(mid)), ts)
                self._mids.setdefault(instrument_id, deque(maxlen=VOLATILITY_WINDOW)).append(mid)
        self._sample_equity()
        self._check_daily_loss()
        await self._close_positions_if_flattening()
        await self._release_due()
        if self.strategy is not None:
            view = SessionView(self._now, dict(self._quotes), self._net_positions(), self.portfolio.equity,
                               self.oms.working_count())
            # A simulated venue hears a step's orders together, after one durable write of them all:
            # nothing happens at the venue between the signals of one step of market data.
            caps = self.venue.capabilities
            self._staging = Capability.SIMULATED in caps and Capability.SUBMIT_MANY in caps
            try:
                for signal in self.strategy(batch, view) or ():
                    await self._on_signal(signal, raise_errors=False)
            finally:
                self._staging = False
                await self._send_staged()
        # Not fdatasync'd (a kill -9 keeps it): a marker lost to a power failure replays its
        # batch, whose signals are decided once (orders and decisions are deduplicated).
        self._journal.append({"kind": "batch", "end_ns": batch.end_ns}, sync=False)

    async def _feed_venue(self, instrument_id: str, batch: FeedBatch) -> None:
        if Capability.SIMULATED not in self.venue.capabilities:
            return  # a live venue has its own market data
        feed = self.venue.on_market_data
        quotes, trades = batch.quotes.get(instrument_id), batch.trades.get(instrument_id)
        # one call: the venue merges them in time order, quotes before trades at equal times
        data = ((quotes.ts_ns, quotes.bid_px, quotes.ask_px, quotes.bid_sz, quotes.ask_sz) if quotes is not None
                else None,
                (trades.ts_ns, trades.price, trades.size, trades.aggressor) if trades is not None and len(trades)
                else None)
        levels = getattr(quotes, "levels", None)
        if levels is not None:  # a recorded top-N book: the venue walks it level by level
            feed(instrument_id, *data, levels=levels)
        else:
            feed(instrument_id, *data)

    def _sample_equity(self) -> None:
        """Remember equity at the first step of each minute of session time (for the equity curve)."""
        minute = self._now // (60 * _NS)
        if not self._equity_curve or self._equity_curve[-1][0] // (60 * _NS) != minute:
            p = self.portfolio
            self._equity_curve.append((self._now, p.equity, p.cash, p.realised_pnl, p.unrealised_pnl))

    def _check_daily_loss(self) -> None:
        self.risk.check_daily_loss(self._daily_pnl(), self._now)  # halts the kill switch (journaled) once

    async def _set_kill_switch(self, mode: str, reason: str) -> None:
        {"halted": self.kill_switch.halt, "reduce_only": self.kill_switch.reduce_only,
         "normal": self.kill_switch.resume}[mode](reason, self._now)
        if mode == "normal" and self._flatten_request is not None:
            self._flatten_request = None
            self._journal.append({"kind": "flatten_done", "reason": reason, "ts_ns": self._now})

    async def _flatten(self, reason: str) -> list[Order]:
        request_id = f"flatten:{self._now}"
        self.kill_switch.request_flatten(reason, self._now)
        self._flatten_request = (request_id, reason)
        self._journal.append({"kind": "flatten", "request_id": request_id, "reason": reason, "ts_ns": self._now})
        for parent_id in sorted({s.parent.parent_id for s in self._scheduled}):
            why = f"flatten ({reason}): the slices not yet released were cancelled"
            self._parents[parent_id].stopped_reason = why
            self._journal.append({"kind": "algo_stopped", "parent_id": parent_id, "ts_ns": self._now, "reason": why,
                                  "cancelled": [s.parent.child_id(s.child.index) for s in self._scheduled
                                                if s.parent.parent_id == parent_id]})
        self._scheduled.clear()
        dropped, self._deferred = self._deferred, []
        for entry in dropped:  # never sent: recorded as refused, so the deferral has an end in the log
            self.oms.reject(entry.intent, f"flatten ({reason}): a deferred order is not sent")
        cancelled = await self.oms.cancel_all()
        closing = await self._close_positions_if_flattening()
        return [*cancelled, *closing]

    async def _close_positions_if_flattening(self) -> list[Order]:
        """The flatten's closing orders, once every cancel it asked for has been answered."""
        if self._flatten_request is None:
            return []
        if any(o.status is OrderStatus.PENDING_CANCEL for o in self.oms.working_orders()):
            return []  # the venue answers at its next step of time
        request_id, reason = self._flatten_request
        orders = await self.oms.flatten(request_id, cancel_timeout_s=0)
        self._flatten_request = None
        self.kill_switch.flatten_done(f"flatten sent {len(orders)} closing order(s)", self._now)
        self._journal.append({"kind": "flatten_done", "reason": reason, "ts_ns": self._now})
        return orders
