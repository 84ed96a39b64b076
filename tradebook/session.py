"""A trading session for notebooks: one order path for paper and live, running in the background.

    session = tb.Session(store, calibrations=["BTCUSDT.BINANCE"], feed=feed, strategy=my_strategy)
    session.start()            # returns at once; the event loop runs in a background thread
    session.submit(signal)     # sizing -> router -> pre-trade risk -> order manager -> venue
    session.status(); session.orders(); session.fills(); session.positions()
    session.pause(); session.resume(); session.halt("why"); session.flatten("why"); session.stop()

The one rule, as in ib_async: the session's loop owns the order path; notebook cells
talk to it through these methods, which hand work to the loop and wait for the answer,
so a cell never races the loop.

Where its state lives (``state_dir``, next to the store by default): the order manager's
write-ahead journal, the paper venue's own journal (the venue is a separate "broker"
with its own books, reconciled against ours on every start), and the session journal
(how far the replay got, signal decisions, kill-switch changes). Killing the process at
any moment and starting a new session on the same store and state resumes the replay
where it stopped: intents already durable are not sent again (their client order ids
derive from them), fills the venue recorded are applied once, and positions agree with
the venue's.

Paper is the default and the only mode that needs nothing more: a live session needs a
live venue adapter, credentials from the environment and :meth:`Session.arm_live`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tradebook.config import SessionMode, TradebookConfig
from tradebook.data.feeds import FeedBatch, ReplayFeed
from tradebook.errors import ConfigError, OrderError, TradebookError
from tradebook.execution.journal import Journal
from tradebook.execution.oms import Alert, OrderManager
from tradebook.execution.risk import CircuitBreaker, KillSwitch, PreTradeRisk, ReferenceQuote, RiskAction, RiskContext
from tradebook.execution.router import OrderRouter, QuoteSnapshot, RouterConfig
from tradebook.execution.sizing import sizer_from_config
from tradebook.model.calendars import is_trading
from tradebook.model.instruments import Instrument
from tradebook.model.orders import Order, OrderIntent, OrderStatus, Signal
from tradebook.model.time import now_ns
from tradebook.portfolio import Portfolio
from tradebook.venues.base import VenuePort

log = logging.getLogger(__name__)

Strategy = Callable[[FeedBatch, "SessionView"], Iterable[Signal]]
_NS = 1_000_000_000
_VOL_WINDOW = 60  # batch-end mids kept per instrument for the volatility that widens offsets


class SessionState(StrEnum):
    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    FINISHED = "finished"  # the replay feed ran out
    STOPPED = "stopped"
    FAILED = "failed"


@dataclass(frozen=True)
class Decision:
    """What became of one signal (also of signals that produced no order)."""

    ts_ns: int
    strategy_id: str
    signal_id: str
    instrument_id: str
    outcome: str  # 'sent' | 'no order' | 'rejected' | 'deferred' | 'scheduled'
    reason: str
    client_order_ids: tuple[str, ...] = ()


@dataclass
class SessionView:
    """What a strategy may read while deciding: time, quotes, positions, equity (read-only by convention)."""

    now_ns: int
    quotes: Mapping[str, tuple[int, float, float, float, float]]
    positions: Mapping[str, Decimal]
    equity: Decimal
    working_orders: int


@dataclass
class _Scheduled:
    release_ts_ns: int
    parent: Any  # algos.ParentOrder
    child: Any  # algos.ScheduledChild
    signal: Signal


@dataclass
class _Deferred:
    intent: OrderIntent
    signal: Signal
    first_ts_ns: int
    attempts: int = 0


def router_config(config: TradebookConfig) -> RouterConfig:
    """The router's settings from the configuration file's ``router`` section."""
    r = config.router
    return RouterConfig(market_strength=r.signal_market_threshold, wide_spread_bps=r.wide_spread_bps,
                        twap_adv_fraction=r.twap_adv_fraction, passive_adv_fraction=r.passive_adv_fraction,
                        offset_bps=r.offset_bps, offset_vol_multiplier=r.offset_vol_multiplier,
                        twap_slices=r.twap_slices, twap_interval_s=r.twap_interval_s,
                        max_quote_age_s=config.risk.max_quote_age_ms / 1000)


class Session:
    """Paper (default) or live trading from a notebook, with the loop in a background thread.

    ``store``: an open :class:`~tradebook.store.Store` (the session writes to it).
    ``calibrations``: the fill models the paper venue uses (``'BTCUSDT.BINANCE@v1'`` or an
    instrument id for its latest calibration). ``feed``: a :class:`ReplayFeed` (recorded
    quotes at any speed); without one, the session is driven by :meth:`on_batch` calls.
    ``strategy``: called with each batch and a :class:`SessionView`, returns signals.
    ``adv``: average daily volume per instrument for the router (default: the calibrated
    completion model's estimate). ``sync=False`` skips fsync (throwaway research replays).
    """

    def __init__(
        self,
        store: Any,
        *,
        calibrations: Iterable[str] = (),
        config: TradebookConfig | None = None,
        feed: ReplayFeed | None = None,
        strategy: Strategy | None = None,
        state_dir: str | Path | None = None,
        venue: VenuePort | None = None,
        starting_cash: Decimal = Decimal("100000"),
        seed: int = 0,
        adv: Mapping[str, Decimal] | None = None,
        sync: bool = True,
        clock: Callable[[], int] | None = None,
    ) -> None:
        self.config = config or TradebookConfig()
        if self.config.session.mode is SessionMode.LIVE:
            raise ConfigError("session.mode is 'live': a session starts in paper; arm live trading explicitly "
                              "with Session.arm_live(venue, confirm=<account id>) once a live adapter is set up")
        self.store = store
        self.account_id = self.config.session.account_id
        self.state_dir = Path(state_dir) if state_dir is not None else Path(f"{store.path}.session")
        self.feed = feed
        self.strategy = strategy
        self._replay = feed is not None
        self._now = feed.start_ns if feed is not None else 0
        self._clock = clock or (self._replay_clock if self._replay else now_ns)
        names = list(calibrations)
        if venue is None:
            if not names:
                raise ConfigError("a paper session needs calibrations (e.g. ['BTCUSDT.BINANCE@v1']) for its "
                                  "fill models; run `tradebook calibrate` first")
            from tradebook.venues.paper import PaperVenue

            venue = PaperVenue.from_store(store, names, self.state_dir / "paper", account_id=self.account_id,
                                          starting_cash=Decimal(starting_cash), seed=seed, clock=self._clock,
                                          sync=sync)
        self.venue = venue
        self.instruments: dict[str, Instrument] = {}
        self._models: dict[str, Any] = {}
        for name in names:
            from tradebook.sim.fidelity import load_model

            model = load_model(store, name)
            self._models[model.instrument_id] = model
            self.instruments[model.instrument_id] = store.instrument(model.instrument_id)
        self.portfolio = Portfolio(Decimal(starting_cash), currency=self.config.risk.account_currency)
        self._journal = Journal(self.state_dir / "session.journal", sync=sync)
        self.oms = OrderManager(store, Journal(self.state_dir / "oms.journal", sync=sync), venue, self.portfolio,
                                mode="paper", clock=self._clock, instruments=self._instrument)
        self.kill_switch = KillSwitch()
        self.risk = PreTradeRisk(self.config.risk, self.kill_switch)
        self.breaker = CircuitBreaker.from_config(self.config.risk, self.kill_switch, venue.name)
        self.sizer = sizer_from_config(self.config)
        self.router = OrderRouter(router_config(self.config), instruments=self.instruments)
        self.adv = dict(adv or {})
        for instrument_id, model in self._models.items():
            completion = getattr(model, "completion", None)
            if instrument_id not in self.adv and completion is not None and math.isfinite(completion.adv_proxy):
                self.adv[instrument_id] = Decimal(repr(float(completion.adv_proxy)))
        self.decisions: list[Decision] = []
        self.alerts: list[Alert] = []
        self._quotes: dict[str, tuple[int, float, float, float, float]] = {}
        self._mids: dict[str, deque[float]] = {}
        self._scheduled: list[_Scheduled] = []
        self._deferred: list[_Deferred] = []
        self._day_start_ns = 0
        self._day_start_equity = self.portfolio.equity
        self._resume_ns = self._recover_session_journal()
        self.state = SessionState.CREATED
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._done = threading.Event()
        self._running = threading.Event()
        self._stop = threading.Event()

    # -- state that survives a restart ----------------------------------------------------
    def _recover_session_journal(self) -> int | None:
        resume = None
        for record in self._journal.records():
            if record["kind"] == "batch":
                resume = record["end_ns"]
                self._now = max(self._now, record["end_ns"])
            elif record["kind"] == "decision":
                self.decisions.append(Decision(**{**record["decision"],
                                                  "client_order_ids": tuple(record["decision"]["client_order_ids"])}))
            elif record["kind"] == "kill_switch":
                mode = record["mode"]
                if mode == "halted":
                    self.kill_switch.halt(record["reason"], record["ts_ns"])
                elif mode == "reduce_only":
                    self.kill_switch.reduce_only(record["reason"], record["ts_ns"])
                else:
                    self.kill_switch.resume(record["reason"], record["ts_ns"])
        return resume

    def _replay_clock(self) -> int:
        return self._now

    def _instrument(self, instrument_id: str) -> Instrument:
        instrument = self.instruments.get(instrument_id)
        if instrument is None:
            instrument = self.store.instrument(instrument_id)  # UnknownInstrumentError names the known ones
            self.instruments[instrument_id] = instrument
        return instrument

    # -- control (from notebook cells) ----------------------------------------------------
    def start(self, *, wait: bool = False, timeout: float | None = None) -> Session:
        """Connect, recover and reconcile, then run the feed in the background (``wait``: until it ends)."""
        if self._thread is not None:
            raise ConfigError(f"session already started (state {self.state}); start a new Session to run again")
        self._running.set()
        self._thread = threading.Thread(target=self._run, name="tradebook-session", daemon=True)
        self._thread.start()
        self._ready.wait(timeout=60)
        if self.error is not None:
            raise self.error
        if wait:
            self.wait(timeout)
        return self

    def wait(self, timeout: float | None = None) -> SessionState:
        """Block until the replay finishes or the session stops; re-raises a failure of the loop."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"session still {self.state} after {timeout} s")
        if self.error is not None:
            raise self.error
        return self.state

    def pause(self) -> None:
        """Stop consuming the feed; working orders stay working."""
        self._running.clear()
        if self.state is SessionState.RUNNING:
            self.state = SessionState.PAUSED

    def resume(self) -> None:
        self._running.set()
        if self.state is SessionState.PAUSED:
            self.state = SessionState.RUNNING

    def stop(self, timeout: float = 30) -> None:
        """Stop the loop, flush everything to the store, disconnect (working orders stay at the venue)."""
        self._stop.set()
        self._running.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.state not in (SessionState.FINISHED, SessionState.FAILED):
            self.state = SessionState.STOPPED

    def halt(self, reason: str = "halted by hand") -> None:
        """Kill switch: no new orders (working orders stay; see :meth:`flatten`)."""
        self._call(self._set_kill_switch("halted", reason))

    def reduce_only(self, reason: str = "reduce-only by hand") -> None:
        self._call(self._set_kill_switch("reduce_only", reason))

    def resume_trading(self, reason: str = "resumed by hand") -> None:
        self._call(self._set_kill_switch("normal", reason))

    def flatten(self, reason: str = "flatten by hand") -> list[Order]:
        """Kill switch: cancel every working order, close every position with market orders."""
        return self._call(self._flatten(reason))

    def submit(self, item: Signal | OrderIntent) -> list[Order]:
        """Send a signal (sized, routed, risk-checked) or a ready intent (risk-checked) through the order path."""
        if isinstance(item, Signal):
            return self._call(self._on_signal(item))
        if isinstance(item, OrderIntent):
            return self._call(self._send(item, None))
        raise OrderError(f"submit takes a Signal or an OrderIntent, got {type(item).__name__}")

    def arm_live(self, venue: VenuePort, *, confirm: str) -> None:
        """Live trading is never a default: it needs a live adapter and the account id typed as ``confirm``."""
        if not getattr(venue, "is_live", False):
            raise ConfigError(f"venue {venue.name!r} is not live; paper needs no arming")
        if confirm != venue.account_id:
            raise ConfigError(f"arming live trading needs confirm={venue.account_id!r} (the account id); "
                              f"got {confirm!r}")
        raise ConfigError("live adapters are not part of this release; the session stays in paper")

    # -- views ---------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        from tradebook.model.time import ns_to_iso

        return {
            "state": str(self.state), "mode": "paper", "venue": self.venue.name, "account": self.account_id,
            "session_time": ns_to_iso(self._clock()) if self._clock() else None,
            "kill_switch": str(self.kill_switch.mode), "breaker": str(self.breaker.state),
            "working_orders": len(self.oms.working_orders()), "orders": len(self.oms.orders()),
            "fills": len(self.oms.fills_frame()), "cash": self.portfolio.cash, "equity": self.portfolio.equity,
            "realised_pnl": self.portfolio.realised_pnl, "unrealised_pnl": self.portfolio.unrealised_pnl,
            "alerts": len(self.alerts) + len(self.oms.alerts()), "deferred": len(self._deferred),
            "scheduled_slices": len(self._scheduled),
        }

    def orders(self) -> pd.DataFrame:
        return self.oms.orders_frame()

    def fills(self) -> pd.DataFrame:
        return self.oms.fills_frame()

    def positions(self) -> pd.DataFrame:
        return self.portfolio.positions_frame()

    def decisions_frame(self) -> pd.DataFrame:
        return pd.DataFrame([d.__dict__ for d in self.decisions])

    # -- the loop --------------------------------------------------------------------------
    def _call(self, coroutine: Any, timeout: float = 60) -> Any:
        if self._loop is None or not self._thread or not self._thread.is_alive():
            coroutine.close()
            raise ConfigError(f"the session is not running (state {self.state}); call start() first")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:  # noqa: BLE001 - surfaced to the notebook by wait()/start()
            self.error = exc
            self.state = SessionState.FAILED
            log.exception("session loop failed")
        finally:
            self._ready.set()
            self._done.set()
            try:
                self.oms.close(flush=True)
            except TradebookError as exc:
                log.error("final flush failed: %s", exc)
            loop.run_until_complete(self.venue.close())
            loop.close()

    async def _main(self) -> None:
        await self.venue.connect(self.oms.on_event)
        self.oms.recover()
        self.oms.start()
        self.alerts.extend(await self.oms.reconcile())
        self.state = SessionState.RUNNING if self._running.is_set() else SessionState.PAUSED
        self._ready.set()
        if self.feed is None:
            while not self._stop.is_set():
                await asyncio.sleep(0.05)
            return
        for batch in self.feed.batches(from_ns=self._resume_ns):
            while not self._running.is_set() and not self._stop.is_set():
                await asyncio.sleep(0.02)
            if self._stop.is_set():
                return
            await self.on_batch(batch)
            await asyncio.sleep(0)  # let notebook calls in between batches
        self.oms.flush()
        self.state = SessionState.FINISHED

    async def on_batch(self, batch: FeedBatch) -> None:
        """One step of session time: market data to the venue, marks, due slices, the strategy, a checkpoint."""
        self._now = max(self._now, batch.start_ns)
        for instrument_id in sorted(set(batch.quotes) | set(batch.trades)):
            await self._feed_venue(instrument_id, batch)
        self._now = batch.end_ns - 1
        for instrument_id, quotes in batch.quotes.items():
            last = batch.last_quote(instrument_id)
            self._quotes[instrument_id] = last
            ts, bid, ask = last[0], last[1], last[2]
            if np.isfinite(bid) and np.isfinite(ask) and bid < ask:
                mid = (bid + ask) / 2
                self.portfolio.mark(instrument_id, Decimal(repr(mid)), ts)
                self._mids.setdefault(instrument_id, deque(maxlen=_VOL_WINDOW)).append(mid)
        await self._check_daily_loss()
        await self._release_due()
        if self.strategy is not None:
            view = SessionView(self._now, dict(self._quotes), self._net_positions(), self.portfolio.equity,
                               len(self.oms.working_orders()))
            for signal in self.strategy(batch, view) or ():
                await self._on_signal(signal)
        self._journal.append({"kind": "batch", "end_ns": batch.end_ns})

    async def _feed_venue(self, instrument_id: str, batch: FeedBatch) -> None:
        feed_quotes = getattr(self.venue, "on_quotes", None)
        if feed_quotes is None:
            return  # a live venue has its own market data
        quotes, trades = batch.quotes.get(instrument_id), batch.trades.get(instrument_id)
        if trades is None or not len(trades):
            if quotes is not None:
                self.venue.on_quotes(instrument_id, quotes.ts_ns, quotes.bid_px, quotes.ask_px, quotes.bid_sz,
                                     quotes.ask_sz)
            return
        # interleave in time order: quotes before trades at equal times (the simulator's rule)
        q_ts = quotes.ts_ns if quotes is not None else np.zeros(0, np.int64)
        cuts = np.unique(np.r_[q_ts, trades.ts_ns])
        qi = ti = 0
        for t in cuts:
            qj = int(np.searchsorted(q_ts, t, side="right"))
            tj = int(np.searchsorted(trades.ts_ns, t, side="right"))
            if qj > qi:
                self.venue.on_quotes(instrument_id, quotes.ts_ns[qi:qj], quotes.bid_px[qi:qj], quotes.ask_px[qi:qj],
                                     quotes.bid_sz[qi:qj], quotes.ask_sz[qi:qj])
                qi = qj
            if tj > ti:
                self.venue.on_trades(instrument_id, trades.ts_ns[ti:tj], trades.price[ti:tj], trades.size[ti:tj],
                                     trades.aggressor[ti:tj])
                ti = tj

    # -- the order path ----------------------------------------------------------------------
    def _record(self, signal: Signal, outcome: str, reason: str, orders: Iterable[Order] = ()) -> None:
        decision = Decision(self._now, signal.strategy_id, signal.signal_id, signal.instrument_id, outcome, reason,
                            tuple(o.client_order_id for o in orders))
        self.decisions.append(decision)
        self._journal.append({"kind": "decision", "decision": {**decision.__dict__,
                                                               "client_order_ids": list(decision.client_order_ids)}},
                             sync=False)

    def _reference(self, instrument_id: str) -> tuple[int, float, float, float, float] | None:
        return self._quotes.get(instrument_id)

    def _volatility_bps(self, instrument_id: str) -> float:
        mids = self._mids.get(instrument_id)
        if not mids or len(mids) < 3:
            return 0.0
        returns = np.diff(np.log(np.asarray(mids)))
        return float(np.std(returns) * 1e4)

    async def _on_signal(self, signal: Signal) -> list[Order]:
        instrument = self._instrument(signal.instrument_id)
        base = f"{signal.strategy_id}:{signal.signal_id}"
        existing = [o for o in self.oms.orders()
                    if o.intent.intent_id == base or o.intent.intent_id.startswith(base + ":")]
        if existing:  # a re-run cell or a replay resumed after a crash: this signal was handled
            return existing
        quote = self._reference(signal.instrument_id)
        if quote is None:
            self._record(signal, "rejected", f"no quote for {signal.instrument_id} yet")
            return []
        if not is_trading(instrument, self._now, extended_hours=self.config.session.extended_hours):
            self._record(signal, "rejected", f"{signal.instrument_id} is not trading at this time (exchange "
                                             "calendar; extended hours "
                                             f"{'on' if self.config.session.extended_hours else 'off'})")
            return []
        ts, bid, ask, bid_sz, ask_sz = quote
        try:
            snapshot = QuoteSnapshot.from_quote(signal.instrument_id, ts, bid, ask, bid_sz, ask_sz)
        except TradebookError as exc:
            self._record(signal, "rejected", f"reference quote unusable: {exc}")
            return []
        decision = self.sizer.size(signal, instrument, snapshot.mid, self.portfolio.equity)
        if decision.quantity is None:
            self._record(signal, "no order", decision.reason)
            return []
        try:
            plan = self.router.route(signal, decision.quantity, snapshot, instrument, account_id=self.account_id,
                                     adv=self.adv.get(signal.instrument_id),
                                     volatility_bps=self._volatility_bps(signal.instrument_id), ts_ns=self._now)
        except TradebookError as exc:
            self._record(signal, "rejected", f"router: {exc}")
            return []
        if plan.algo is not None:
            released = {intent.intent_id for intent in plan.intents}
            for child in plan.children:
                if plan.algo.child_id(child.index) not in released:
                    self._scheduled.append(_Scheduled(child.release_ts_ns, plan.algo, child, signal))
        orders = []
        for intent in plan.intents:
            orders.extend(await self._send(intent, signal))
        outcome = "sent" if any(o.status is not OrderStatus.REJECTED for o in orders) else "rejected"
        if not orders and plan.algo is not None:
            outcome = "scheduled"
        self._record(signal, outcome, f"{plan.rule}: {plan.explanation}", orders)
        return orders

    def _net_positions(self) -> dict[str, Decimal]:
        return {inst: qty for (acct, inst), qty in self.portfolio.net_positions(self.account_id).items()}

    def _risk_context(self, instrument_id: str) -> RiskContext:
        quote = self._reference(instrument_id)
        reference = None
        if quote is not None and all(np.isfinite(quote[1:3])):
            ts, bid, ask, bid_sz, ask_sz = quote
            reference = ReferenceQuote(Decimal(repr(bid)), Decimal(repr(ask)),
                                       Decimal(repr(bid_sz)) if bid_sz > 0 else None,
                                       Decimal(repr(ask_sz)) if ask_sz > 0 else None, ts)
        prices = {i: p for i in self.instruments if (p := self.portfolio.last_price(i)) is not None}
        return RiskContext(now_ns=self._now, equity=self.portfolio.equity, daily_pnl=self._daily_pnl(),
                           quote=reference, positions=self._net_positions(), prices=prices,
                           instruments=self.instruments)

    def _daily_pnl(self) -> Decimal:
        day = self._now // (86_400 * _NS) * 86_400 * _NS
        if day != self._day_start_ns:
            self._day_start_ns = day
            self._day_start_equity = self.portfolio.equity_at(day) if hasattr(self.portfolio, "equity_at") \
                else self.portfolio.equity
        return self.portfolio.equity - self._day_start_equity

    async def _send(self, intent: OrderIntent, signal: Signal | None) -> list[Order]:
        """Risk, breaker, then the order manager (which makes the intent durable before the venue sees it)."""
        try:
            existing = self.oms.order(intent.client_order_id)
        except OrderError:
            existing = None
        if existing is not None:
            return [existing]
        instrument = self._instrument(intent.instrument_id)
        decision = self.risk.check(intent, instrument, self._risk_context(intent.instrument_id))
        if decision.action is RiskAction.DEFER and signal is not None:
            self._deferred.append(_Deferred(intent, signal, self._now))  # tried again at the next steps
            return []
        if not decision.accepted:
            return [self.oms.reject(intent, f"risk {decision.check}: {decision.reason}")]
        if not self.breaker.allow(self._now):
            return [self.oms.reject(intent, f"circuit breaker open after venue failures ({self.venue.name})")]
        order = await self.oms.submit(intent)
        self.risk.record_sent(self._now)
        if order.status is OrderStatus.REJECTED and order.reason.startswith("venue error"):
            self.breaker.record_failure(self._now, order.reason)
        else:
            self.breaker.record_success(self._now)
        return [order]

    async def _release_due(self) -> None:
        due = [s for s in self._scheduled if s.release_ts_ns <= self._now]
        self._scheduled = [s for s in self._scheduled if s.release_ts_ns > self._now]
        for item in due:
            quote = self._reference(item.parent.intent.instrument_id)
            if quote is None:
                self._scheduled.append(replace(item, release_ts_ns=self._now + _NS))
                continue
            snapshot = QuoteSnapshot.from_quote(item.parent.intent.instrument_id, *quote)
            intent = self.router.price_child(item.parent, item.child, snapshot,
                                             adv=self.adv.get(item.parent.intent.instrument_id),
                                             volatility_bps=self._volatility_bps(item.parent.intent.instrument_id),
                                             ts_ns=self._now)
            await self._send(intent, item.signal)
        deferred, self._deferred = self._deferred, []
        for item in deferred:
            item.attempts += 1
            if item.attempts > 30:
                self.oms.reject(item.intent, "deferred for 30 steps: the spread or book never allowed it")
                continue
            await self._send(item.intent, item.signal)

    async def _check_daily_loss(self) -> None:
        tripped = self.risk.check_daily_loss(self._daily_pnl(), self._now)
        if tripped is not None and not tripped.accepted:
            self._journal.append({"kind": "kill_switch", "mode": "halted", "reason": tripped.reason,
                                  "ts_ns": self._now})

    async def _set_kill_switch(self, mode: str, reason: str) -> None:
        {"halted": self.kill_switch.halt, "reduce_only": self.kill_switch.reduce_only,
         "normal": self.kill_switch.resume}[mode](reason, self._now)
        self._journal.append({"kind": "kill_switch", "mode": mode, "reason": reason, "ts_ns": self._now})

    async def _flatten(self, reason: str) -> list[Order]:
        self.kill_switch.request_flatten(reason, self._now)
        self._journal.append({"kind": "kill_switch", "mode": "reduce_only", "reason": reason, "ts_ns": self._now})
        self._scheduled.clear()
        self._deferred.clear()
        orders = await self.oms.flatten(f"flatten:{self._now}", cancel_timeout_s=0.5)
        return orders
