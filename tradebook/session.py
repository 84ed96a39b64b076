"""A trading session for notebooks: one order path for paper and live, running in the background.

    session = tb.Session(store, calibrations=["BTCUSDT.BINANCE"], feed=feed, strategy=my_strategy)
    session.start()            # returns at once; the event loop runs in a background thread
    session.submit(signal)     # sizing -> router -> pre-trade risk -> order manager -> venue
    session.status(); session.orders(); session.fills(); session.positions()
    session.pause(); session.resume(); session.halt("why"); session.flatten("why"); session.stop()

The one rule, as in ib_async: the session's loop owns the order path; notebook cells
talk to it through these methods, which hand work to the loop and wait for the answer,
so a cell never races the loop.

Where its state lives (the paper run's folder ``<store path>.runs/<run>/``, or ``state_dir``;
see :mod:`tradebook.paper` for runs, reset and the one-session lock): the order manager's
write-ahead journal, the paper venue's own journal (the venue is a separate "broker"
with its own books, reconciled against ours on every start), and the session journal
(how far the replay got, signal decisions, kill-switch changes). Killing the process at
any moment and starting a new session on the same store and state resumes the replay
where it stopped: intents already durable are not sent again (their client order ids
derive from them), fills the venue recorded are applied once, and positions agree with
the venue's.

Session time is the market data's time: the end of the last batch processed (a replay
feed's batches, or those a notebook or test hands to :meth:`Session.step` when there is
no feed). Every order-path timestamp, risk check and algo release uses it, so a replay
of recorded quotes behaves as it did live, only faster.

What a notebook hands in is checked before anything is written: :meth:`Session.submit`
raises a :class:`~tradebook.errors.TradebookError` naming what was wrong (a NaN or
negative size, an unknown or uncalibrated instrument, a price off the tick, a reference
quote that is missing, crossed or stale) and stores nothing. A signal a *strategy*
yields in the loop with the same faults is not allowed to stop the session: it is
recorded as a ``rejected`` decision with the reason. Rules of the market and of risk are
not errors: an order refused by pre-trade risk, the kill switch or the breaker is stored
as a rejected order with its reason and never sent; a signal outside the exchange's
hours is recorded as a rejected decision.

Paper is the default and the only mode that needs nothing more. Where each asset class
would trade comes from the configuration (``routing``, built by
:func:`tradebook.venues.factory.build_venues`); an asset class with no adapter, with
``TRADEBOOK_FORCE_PAPER=true`` or whose adapter cannot be built trades on paper, and the
status (``routes``), an alert and the store say so. A broker account trades only once
:meth:`Session.arm_live` names it and repeats its account id, before :meth:`start`; if it
then fails its health check at connect, the session trades on paper and says so.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import math
import numbers
import os
import sys
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tradebook.config import SessionMode, TradebookConfig, load_config
from tradebook.data.feeds import FeedBatch, ReplayFeed
from tradebook.errors import (
    ConfigError,
    DataError,
    OrderError,
    SessionError,
    SessionTimeoutError,
    TradebookError,
    UnknownInstrumentError,
)
from tradebook.execution.algos import Escalation, ParentOrder, RetryPolicy, ScheduledChild, TwapSchedule, VwapSchedule
from tradebook.execution.bus import EventBus, SessionPublisher
from tradebook import paper
from tradebook.paper import new_run as new_run_id  # noqa: F401 (notebooks import it from here)
from tradebook.paper import oms_journal_name
from tradebook.runtime import tune_gc
from tradebook.execution.oms import Alert, OrderManager
from tradebook.store.journal import Journal
from tradebook.store.records import intent_from_record, intent_to_record
from tradebook.execution.risk import (
    STALE_OR_CROSSED,
    BreakerState,
    CircuitBreaker,
    KillSwitch,
    KillSwitchMode,
    KillSwitchTransition,
    PreTradeRisk,
    ReferenceQuote,
    RiskAction,
    RiskContext,
)
from tradebook.execution.router import OrderRouter, QuoteSnapshot, RouterConfig
from tradebook.execution.sizing import sizer_from_config
from tradebook.model.calendars import is_trading
from tradebook.model.instruments import MAX_INTEGER_DIGITS, Instrument, Side, check_amount, to_decimal
from tradebook.model.orders import Order, OrderIntent, OrderStatus, Signal, client_order_id_for
from tradebook.model.time import NS_PER_SECOND, ns_to_iso
from tradebook.portfolio import Portfolio
from tradebook.progress import Bar, progress_enabled
from tradebook.venues.base import Capability, VenuePort
from tradebook.views import SessionStatus, readable

log = logging.getLogger(__name__)

Strategy = Callable[[FeedBatch, "SessionView"], Iterable[Signal]]
_NS = NS_PER_SECOND
_VOL_WINDOW = 60  # batch-end mids kept per instrument for the volatility that widens offsets
MAX_DEFERRED_STEPS = 30  # a deferred order is retried this many steps, then rejected
# A signal may be stamped this far ahead of session time (a strategy's clock read a moment
# after the step's end); further ahead it comes from the future and is refused.
SIGNAL_CLOCK_TOLERANCE_NS = 1 * NS_PER_SECOND
BUS_CLOSE_TIMEOUT_S = 5.0  # at stop, how long the bus's subscribers get to finish their queued events


class SessionState(StrEnum):
    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    FINISHED = "finished"  # the replay feed ran out
    STOPPED = "stopped"
    FAILED = "failed"


class DecisionOutcome(StrEnum):
    """What became of a signal (the values are the words the decisions frame always showed)."""

    SENT = "sent"
    NO_ORDER = "no order"
    REJECTED = "rejected"
    DEFERRED = "deferred"
    SCHEDULED = "scheduled"
    NOT_SENT = "not sent"  # its order was durable but never reached the venue (see DecisionCode.NEVER_REACHED_VENUE)
    STOPPED = "stopped"  # an algo parent whose remaining slices were cancelled


class DecisionCode(StrEnum):
    """Why, as a code a program can branch on (``Decision.reason`` is the prose for people)."""

    ROUTED = "routed"  # sized, routed and passed to the order manager
    SIZED_TO_NOTHING = "sized_to_nothing"
    BAD_INPUT = "bad_input"  # a strategy's malformed signal
    NO_USABLE_QUOTE = "no_usable_quote"  # missing, crossed or stale reference quote
    MARKET_HOURS = "market_hours"
    REFUSED = "refused"  # every order it produced was refused (risk, kill switch, breaker)
    SPREAD_DEFERRED = "spread_deferred"
    ALGO_SCHEDULED = "algo_scheduled"
    RECOVERED = "recovered"  # decided again after a restart from orders already durable
    SIGNAL_ID_CONFLICT = "signal_id_conflict"  # the id was decided before for a different signal
    SIGNAL_FROM_FUTURE = "signal_from_future"
    SIGNAL_TOO_OLD = "signal_too_old"
    NEVER_REACHED_VENUE = "never_reached_venue"
    SLICE_REFUSED = "slice_refused"  # an algo slice was refused: the parent's remaining slices are cancelled


@dataclass(frozen=True)
class Decision:
    """What became of one signal (also of signals that produced no order)."""

    ts_ns: int
    strategy_id: str
    signal_id: str
    instrument_id: str
    outcome: str  # a DecisionOutcome
    reason: str
    client_order_ids: tuple[str, ...] = ()
    code: str = ""  # a DecisionCode ("" in records written before codes)

    def __repr__(self) -> str:
        orders = f" -> {', '.join(c[:8] + '..' for c in self.client_order_ids)}" if self.client_order_ids else ""
        code = f" [{self.code}]" if self.code else ""
        return (f"<Decision {self.strategy_id}/{self.signal_id} {self.instrument_id} {self.outcome}{code}"
                f"{orders}: {self.reason}>")


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
class _Child:
    """An algo slice at the venue, watched so that a rejected or unfilled one is retried."""

    intent: OrderIntent
    signal: Signal | None
    released_ts_ns: int
    interval_s: float
    attempt: int = 0  # retries so far
    cancelling: bool = False  # cancelled for a retry; the retry goes once the venue confirms


class AlgoStatus(StrEnum):
    """Where an algo parent (TWAP/VWAP) stands; :meth:`Session.parents` shows it."""

    WORKING = "working"  # slices still due or working at the venue
    DONE = "done"  # every slice released and finished
    STOPPED = "stopped"  # a slice was refused: the slices not yet released were cancelled (see Session._stop_algo)


@dataclass
class _Parent:
    parent: Any  # algos.ParentOrder
    ts_ns: int
    stopped_reason: str | None = None


@dataclass
class _Deferred:
    intent: OrderIntent
    signal: Signal | None  # None: an intent submitted as it was
    first_ts_ns: int
    reason: str  # why the spread filter held it
    attempts: int = 0


def _algo_record(parent: ParentOrder, children: Iterable[ScheduledChild], ts_ns: int) -> dict[str, Any]:
    schedule = parent.schedule
    if isinstance(schedule, TwapSchedule):
        described: dict[str, Any] = {"type": "twap", "slices": schedule.slices, "interval_s": schedule.interval_s}
    else:
        described = {"type": "vwap", "duration_minutes": schedule.duration_minutes,
                     "weights": [[m, w] for m, w in enumerate(schedule.minute_weights) if w > 0]}
    return {"kind": "algo", "ts_ns": ts_ns, "parent": intent_to_record(parent.intent), "schedule": described,
            "reference_price": parent.reference_price,
            "children": [[c.index, c.release_ts_ns, c.quantity] for c in children]}


def _number_text(value: Any) -> str:
    if value is None:
        return "None"
    if value.__class__ is float:
        return repr(value)
    if isinstance(value, Decimal):
        return format(value.normalize(), "f") if value.is_finite() else str(value)
    try:
        return repr(float(value))  # numpy floats too: 0.95, not np.float64(0.95)
    except (TypeError, ValueError):
        return repr(value)


def _signal_terms(signal: Signal) -> str:
    """What a signal asks for, as one comparable line: side, instrument, quantity, strength, sizing
    statistics, urgency and stop. Its ids and time are left out: a re-run carries them anew."""
    n = _number_text
    return (f"{signal.side} {signal.instrument_id} quantity={n(signal.quantity)} strength={n(signal.strength)} "
            f"win_rate={n(signal.win_rate)} avg_win={n(signal.avg_win)} avg_loss={n(signal.avg_loss)} "
            f"urgency={signal.urgency} stop_loss={n(signal.stop_loss)}")


def _decimal_intent(intent: OrderIntent) -> OrderIntent:
    """``intent`` as a notebook typed it, checked where the order manager would fail on it (OrderError), with
    float quantity and prices made Decimal by their repr (0.01 is Decimal('0.01')) and a side given as text
    made a Side."""
    where = f"intent {intent.intent_id!r}"
    for name in ("intent_id", "strategy_id", "account_id", "instrument_id"):
        value = getattr(intent, name)
        if not isinstance(value, str) or not value:
            raise OrderError(f"{where}: {name} is {value!r}; expected a non-empty string")
    if intent.parent_id is not None and not isinstance(intent.parent_id, str):
        raise OrderError(f"{where}: parent_id is {intent.parent_id!r}; expected the parent's intent id (a string) "
                         "or None")
    if not isinstance(intent.reduce_only, bool):
        raise OrderError(f"{where}: reduce_only is {intent.reduce_only!r}; expected True or False")
    changes: dict[str, Any] = {}
    if not isinstance(intent.side, Side):
        if intent.side not in ("buy", "sell"):
            raise OrderError(f"{where}: side is {intent.side!r}; expected Side.BUY or Side.SELL")
        changes["side"] = Side(intent.side)
    floats = {name: value for name in ("quantity", "limit_price", "stop_price", "stop_loss")
              if isinstance(value := getattr(intent, name), float)}
    if not floats:
        return replace(intent, **changes) if changes else intent
    for name, value in floats.items():
        if not math.isfinite(value):
            raise OrderError(f"{where}: {name} is {value!r}; expected a finite number (a Decimal, or a float "
                             "taken by its repr)")
        floats[name] = to_decimal(value, f"{where}: {name}")
    return replace(intent, **floats, **changes)


def _attempt_number(intent_id: str, marker: str) -> int:
    """n of an intent id ending ``:<marker>:<n>`` (a retry or a resend), else 0."""
    head, sep, tail = intent_id.rpartition(f":{marker}:")
    return int(tail) if sep and tail.isdigit() else 0


def router_config(config: TradebookConfig) -> RouterConfig:
    """The router's settings from the configuration file's ``router`` section."""
    r = config.router
    return RouterConfig(market_strength=r.signal_market_threshold, wide_spread_bps=r.wide_spread_bps,
                        twap_adv_fraction=r.twap_adv_fraction, passive_adv_fraction=r.passive_adv_fraction,
                        offset_bps=r.offset_bps, offset_vol_multiplier=r.offset_vol_multiplier,
                        twap_slices=r.twap_slices, twap_interval_s=r.twap_interval_s,
                        max_quote_age_s=config.risk.max_quote_age_ms / 1000)


def _releases_state_on_failure(init: Callable[..., None]) -> Callable[..., None]:
    """A Session whose construction fails lets go of its state folder at once (its lock and files).

    Not left to garbage collection: a notebook keeps the failed cell's traceback, and with
    it the half-built session, so the folder would stay locked until the kernel restarts.
    """
    @functools.wraps(init)
    def wrapper(self: Session, *args: Any, **kwargs: Any) -> None:
        try:
            init(self, *args, **kwargs)
        except BaseException:
            self._close_files()
            raise
    return wrapper


UNRESOLVED_RECONCILE_S = 1.0  # a session without a feed asks a broker about unresolved orders this often
UNRESOLVED_RECONCILE_TIMEOUT_S = 30.0  # and gives one round of asking this long


class Session:
    """Paper (default) or live trading from a notebook, with the loop in a background thread.

    ``store``: an open :class:`~tradebook.store.Store` (the session writes to it).
    ``calibrations``: the fill models the paper venue uses (``'BTCUSDT.BINANCE@v1'`` or an
    instrument id for its latest calibration); their instruments are the ones the session
    trades. ``feed``: a :class:`ReplayFeed` (recorded quotes at any speed); without one,
    the session is driven by :meth:`step` (or the coroutine :meth:`on_batch`).
    ``strategy``: called with each batch and a :class:`SessionView`, returns signals.
    ``adv``: average daily volume per instrument for the router (default: the calibrated
    completion model's estimate). ``volume_profiles``: intraday volume shares by minute of
    day per instrument (:func:`~tradebook.execution.algos.intraday_volume_profile`); an
    instrument with one is worked by VWAP instead of TWAP when the router slices (see
    :meth:`_vwap_schedule`). ``sync=False`` skips fsync (throwaway research replays).
    ``clock``: int64 UTC ns for order-path timestamps; default session time (see the
    module docstring). ``config``: a :class:`~tradebook.config.TradebookConfig` or the path
    of a YAML file; default :func:`~tradebook.config.load_config` (``$TRADEBOOK_CONFIG`` or
    a ``tradebook.yaml`` in the working directory or up to its project root, then the
    ``TRADEBOOK_*`` variables).

    ``run``: the paper run (see :mod:`tradebook.paper`): its state folder is
    ``<store path>.runs/<run>/`` and its account id is the run name; the same name again
    resumes it, ``reset=True`` starts it over (its state and its rows in the store are
    removed first), a new name (``tb.paper.new_run()``) starts fresh. Without ``run`` nor
    ``state_dir`` the run is ``"default"``. ``state_dir`` names the folder explicitly
    (the account is then ``config.session.account_id``). One session per state folder:
    a second one, in this process or another, is refused here naming the holder.
    """

    @_releases_state_on_failure
    def __init__(
        self,
        store: Any,
        *,
        calibrations: Iterable[str] = (),
        config: TradebookConfig | str | Path | None = None,
        feed: ReplayFeed | None = None,
        strategy: Strategy | None = None,
        state_dir: str | Path | None = None,
        venue: VenuePort | None = None,
        starting_cash: Decimal = Decimal("100000"),
        seed: int = 0,
        adv: Mapping[str, Decimal] | None = None,
        volume_profiles: Mapping[str, pd.Series] | None = None,
        sync: bool = True,
        clock: Callable[[], int] | None = None,
        run: str | None = None,
        reset: bool = False,
    ) -> None:
        # everything a caller hands in is checked before anything is created on disk
        # no config: the workspace's YAML file and TRADEBOOK_* variables, as the CLI and notebooks read them
        self.config = load_config(config) if config is None or isinstance(config, (str, Path)) else config
        if not isinstance(self.config, TradebookConfig):
            raise ConfigError(f"config must be a TradebookConfig (tradebook.load_config(path) reads one), "
                              f"got {type(config).__name__}")
        if self.config.session.mode is SessionMode.LIVE:
            raise ConfigError("session.mode is 'live': a session starts in paper; arm live trading explicitly "
                              "with Session.arm_live(venue, confirm=<account id>) once a live adapter is set up")
        if isinstance(starting_cash, bool) or not isinstance(starting_cash, (Decimal, int)) \
                or not Decimal(starting_cash).is_finite() or Decimal(starting_cash) < 0:
            raise ConfigError(f"starting_cash is {starting_cash!r}; expected a finite Decimal >= 0")
        if feed is not None and not isinstance(feed, ReplayFeed):
            raise ConfigError(f"feed must be a ReplayFeed (or None to drive the session with step()), "
                              f"got {type(feed).__name__}")
        if strategy is not None and not callable(strategy):
            raise ConfigError(f"strategy must be callable as strategy(batch, view), got {type(strategy).__name__}")
        names = [calibrations] if isinstance(calibrations, str) else list(calibrations)
        if venue is None and not names:
            raise ConfigError("a paper session needs calibrations (e.g. ['BTCUSDT.BINANCE@v1']) for its "
                              "fill models; run `tradebook calibrate` first")
        self.adv = {i: _positive_decimal(v, f"adv[{i!r}]") for i, v in (adv or {}).items()}
        self.volume_profiles = dict(volume_profiles or {})
        for instrument_id, profile in self.volume_profiles.items():
            if not isinstance(profile, pd.Series) or profile.empty:
                raise ConfigError(f"volume_profiles[{instrument_id!r}] must be a non-empty pandas Series of volume "
                                  "shares by minute of day (see algos.intraday_volume_profile)")
        self.store = store
        self.run = paper.check_run_name(run) if run is not None else None if state_dir is not None \
            else paper.DEFAULT_RUN
        self.account_id = self.run if self.run is not None else self.config.session.account_id
        self.state_dir = Path(state_dir) if state_dir is not None else paper.run_dir(store.path, self.run)
        if reset and (self.run is None or venue is not None):
            raise ConfigError("reset=True resets a named paper run (run='name', with the paper venue); "
                              f"got run={run!r}{' and a venue' if venue is not None else ''}")
        self.feed = feed
        self.strategy = strategy
        # order, fill, alert, session, flushed and quote events for subscribers (TCA, alerts, dashboards)
        self.bus = EventBus()
        self._replay = feed is not None
        self._now = feed.start_ns if feed is not None else 0
        self._last_end_ns = 0
        self._clock = clock or self._session_clock
        self.instruments: dict[str, Instrument] = {}
        self._models: dict[str, Any] = {}
        from tradebook.venues.paper import PaperVenue, stored_models

        if names:  # unknown calibration or instrument: an error before anything is written
            self._models, self.instruments = stored_models(store, names)
        if not reset and not (self.state_dir / paper.OMS_JOURNAL).exists():
            copied = store.journal_position(oms_journal_name(store.path, self.state_dir))
            if copied:  # the folder was deleted by hand: the store still holds the run's rows
                how = (f"tb.Session(..., run={self.run!r}, reset=True) or tb.paper.reset(store, {self.run!r})"
                       if self.run is not None else "another state_dir")
                raise SessionError(f"paper run {self._run_label()}: the store holds {copied} records of its order "
                                   f"journal but {self.state_dir} has none (was the folder deleted?); to start the "
                                   f"run over, reset it: {how}")
        # the one writer of this folder from here on; nothing was written to it before
        self._state_lock = paper.StateLock(self.state_dir, self.run or str(self.state_dir))
        if reset:
            removed = paper.reset_locked(store, self.run, self.state_dir, self._state_lock)
            log.info("paper run %s reset: removed %s", self.run, removed)
        self._starting_cash = Decimal(starting_cash)
        self._sync = sync
        self.routing = None
        if venue is None:
            from tradebook.venues.factory import build_venues

            # where the configuration would send each traded asset class (adapters built, not connected)
            self.routing = build_venues(self.config, asset_classes={i.asset_class for i in self.instruments.values()})
            venue = PaperVenue(self.state_dir / "paper", models=self._models, instruments=self.instruments,
                               account_id=self.account_id, starting_cash=Decimal(starting_cash), seed=seed,
                               clock=self._clock, sync=sync)
        self.venue = venue
        self.portfolio = Portfolio(Decimal(starting_cash), currency=self.config.risk.account_currency)
        self._journal = Journal(self.state_dir / "session.journal", sync=sync)
        self.oms_journal_name = oms_journal_name(store.path, self.state_dir)
        self.oms = OrderManager(store, Journal(self.state_dir / "oms.journal", sync=sync), venue, self.portfolio,
                                mode="paper", clock=self._clock, instruments=self._instrument,
                                journal_name=self.oms_journal_name)
        self._publisher = SessionPublisher(self.bus, self._clock)
        self._publisher.attach(self.oms)
        self.kill_switch = KillSwitch()
        self.risk = PreTradeRisk(self.config.risk, self.kill_switch)
        self.breaker = CircuitBreaker.from_config(self.config.risk, self.kill_switch, venue.name)
        self.sizer = sizer_from_config(self.config)
        self.router = OrderRouter(router_config(self.config), instruments=self.instruments)
        for instrument_id, model in self._models.items():
            completion = getattr(model, "completion", None)
            if instrument_id not in self.adv and completion is not None and math.isfinite(completion.adv_proxy) \
                    and completion.adv_proxy > 0:
                self.adv[instrument_id] = Decimal(repr(float(completion.adv_proxy)))
        self.decisions: list[Decision] = []
        self._decided: set[tuple[str, str]] = set()
        self._terms: dict[tuple[str, str], str] = {}  # what each decided signal asked for (_signal_terms)
        self._unsent_decided: set[str] = set()  # orders that never reached the venue, with their decision written
        self.alerts: list[Alert] = []
        self._quotes: dict[str, tuple[int, float, float, float, float]] = {}
        self._snapshots: dict[str, tuple[tuple, QuoteSnapshot]] = {}  # the last quote priced, per instrument
        self._staging = False  # during a strategy step on a simulated venue: orders are sent together
        self._volatility: dict[str, tuple[tuple, float]] = {}  # per instrument: (mids' state, bps)
        self._mids: dict[str, deque[float]] = {}
        self._scheduled: list[_Scheduled] = []
        self._children: dict[str, _Child] = {}
        self._parents: dict[str, _Parent] = {}  # algo parents by parent id, in the order they started
        self._refused: set[str] = set()  # client order ids refused before they left (hours, breaker, risk)
        self._reconciled_day = -1
        self.retry_policy = RetryPolicy(max_retries=self.config.router.max_retries)
        self._deferred: list[_Deferred] = []
        self._flatten_request: tuple[str, str] | None = None  # (request id, reason) until closing orders are out
        self._equity_curve: list[tuple[int, Decimal, Decimal, Decimal, Decimal]] = []  # one point a minute
        self._day_start_ns = 0
        self._day_start_equity = self.portfolio.equity
        self._resume_ns = self._recover_session_journal()
        # every kill-switch change (by hand, daily loss, the breaker) is journaled: a restart keeps it
        self.kill_switch.subscribe(self._journal_kill_switch)
        self.kill_switch.subscribe(self._publisher.kill_switch)
        self.state = SessionState.CREATED
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._done = threading.Event()
        self._running = threading.Event()
        self._stop = threading.Event()
        self._accepting = False  # the loop takes calls from cells (set and cleared on the loop's thread)
        self._loop_ended = threading.Event()  # the loop will run no more calls
        self._was_reset = False
        self._venue_closed = False
        self._pause_at: int | None = None  # wait_until(..., pause=True): pause once session time gets here
        self._paper: tuple[VenuePort, OrderManager, Portfolio, CircuitBreaker] | None = None  # set by arm_live
        self._armed_fallback: str | None = None  # why an armed venue was left for paper at connect
        self._announce_fallbacks()

    @property
    def state(self) -> SessionState:
        return self._state

    @state.setter
    def state(self, state: SessionState) -> None:
        changed = getattr(self, "_state", None) is not state
        self._state = state
        publisher = getattr(self, "_publisher", None)
        if changed and publisher is not None:
            publisher.state(state)

    # -- state that survives a restart ----------------------------------------------------
    def _recover_session_journal(self) -> int | None:
        self._finished_cleanly = False
        resume = None
        algos: list[dict[str, Any]] = []
        stopped: dict[str, str] = {}  # algo parents whose remaining slices were cancelled, with why
        deferred: dict[str, _Deferred] = {}  # deferrals by client order id, with the steps tried since
        for record in self._journal.records():
            kind = record["kind"]
            if kind == "batch":
                for entry in deferred.values():
                    entry.attempts += 1
                resume = record["end_ns"]
                self._now = max(self._now, record["end_ns"] - 1)
                self._last_end_ns = max(self._last_end_ns, record["end_ns"])
                self._finished_cleanly = False  # a later feed went on
            elif kind == "decision":
                decision = Decision(**{**record["decision"],
                                       "client_order_ids": tuple(record["decision"]["client_order_ids"])})
                self.decisions.append(decision)
                self._decided.add((decision.strategy_id, decision.signal_id))
                if record.get("terms") is not None:  # records before terms were kept compare as the same signal
                    self._terms.setdefault((decision.strategy_id, decision.signal_id), record["terms"])
                if decision.code == DecisionCode.NEVER_REACHED_VENUE:
                    self._unsent_decided.update(decision.client_order_ids)
            elif kind == "kill_switch":
                mode, reason, ts = record["mode"], record["reason"], record["ts_ns"]
                if mode == "halted":
                    self.kill_switch.halt(reason, ts)
                elif mode == "reduce_only":
                    self.kill_switch.reduce_only(reason, ts)
                else:
                    self.kill_switch.resume(reason, ts)
            elif kind == "flatten":
                self._flatten_request = (record["request_id"], record["reason"])
                self.kill_switch.request_flatten(record["reason"], record["ts_ns"])
            elif kind == "flatten_done":
                self._flatten_request = None
                self.kill_switch.flatten_done(record["reason"], record["ts_ns"])
            elif kind == "finished":  # the replay ran out and everything was flushed (not a kill at its end)
                self._finished_cleanly = True
            elif kind == "algo":
                algos.append(record)
            elif kind == "algo_stopped":
                stopped[record["parent_id"]] = record["reason"]
            elif kind == "deferred":
                intent = intent_from_record(record["intent"])
                deferred.setdefault(intent.client_order_id, _Deferred(intent, None, record["ts_ns"], record["reason"],
                                                                      attempts=-1))  # its own step is no retry
        known = {o.client_order_id for o in self.oms.orders()}  # sent or refused since: settled
        self._deferred = [entry for coid, entry in deferred.items() if coid not in known]
        for record in algos:
            self._restore_algo(record, stopped)
        return resume

    def _restore_algo(self, record: dict[str, Any], stopped: Mapping[str, str]) -> None:
        """Bring back an algo's slices not sent yet (none once it was stopped), and watch the latest attempt of
        those sent."""
        parent_intent = intent_from_record(record["parent"])
        instrument = self._instrument(parent_intent.instrument_id)
        schedule = record["schedule"]
        if schedule["type"] == "twap":
            plan_schedule: Any = TwapSchedule(slices=int(schedule["slices"]), interval_s=float(schedule["interval_s"]))
        else:
            profile = pd.Series({int(m): float(w) for m, w in schedule["weights"]})
            plan_schedule = VwapSchedule(duration_minutes=int(schedule["duration_minutes"]), profile=profile)
        parent = ParentOrder(parent_intent, plan_schedule, instrument, record.get("reference_price"))
        self._parents[parent.parent_id] = _Parent(parent, int(record["ts_ns"]), stopped.get(parent.parent_id))
        interval = float(getattr(plan_schedule, "interval_s", 60.0))
        by_intent = {o.intent.intent_id: o for o in self.oms.orders() if o.intent.parent_id == parent.parent_id}
        for index, release_ts, quantity in record["children"]:
            child_id = parent.child_id(int(index))
            if child_id not in by_intent:
                if parent.parent_id in stopped:
                    continue  # cancelled when a slice was refused
                self._scheduled.append(_Scheduled(int(release_ts), parent, ScheduledChild(int(index), int(release_ts),
                                                                                         quantity), None))
                continue
            attempts = [o for i, o in by_intent.items() if i == child_id or i.startswith(child_id + ":retry:")]
            latest = max(attempts, key=lambda o: _attempt_number(o.intent.intent_id, "retry"))
            if latest.status is not OrderStatus.FILLED:
                retries = _attempt_number(latest.intent.intent_id, "retry")
                self._children[latest.client_order_id] = _Child(latest.intent, None, latest.intent.ts_ns, interval,
                                                                retries)

    def _journal_kill_switch(self, transition: KillSwitchTransition) -> None:
        if transition.to_mode is not transition.from_mode:
            self._journal.append({"kind": "kill_switch", "mode": str(transition.to_mode),
                                  "reason": transition.reason, "ts_ns": transition.ts_ns})

    def _session_clock(self) -> int:
        return self._now

    def _instrument(self, instrument_id: str) -> Instrument:
        instrument = self.instruments.get(instrument_id)
        if instrument is None:
            instrument = self.store.instrument(instrument_id)  # UnknownInstrumentError names the known ones
            self.instruments[instrument_id] = instrument
        return instrument

    def _tradable(self, instrument_id: str) -> Instrument:
        """The instrument of an order or signal: one this session has a fill model (calibration) for."""
        if self._models and instrument_id not in self._models:
            raise UnknownInstrumentError(f"{instrument_id!r} is not traded in this session: expected one of "
                                         f"{sorted(self._models)} (the instruments of its calibrations)")
        return self._instrument(instrument_id)

    # -- control (from notebook cells) ----------------------------------------------------
    START_TIMEOUT_S = 60  # connect, recover and reconcile

    def start(self, *, wait: bool = False, timeout: float | None = None) -> Session:
        """Connect, recover and reconcile, then run the feed in the background (``wait``: until it ends).

        A run whose replay is already over (the feed has nothing after where the run
        stopped) is refused here, saying what to do; a kill switch carried over from an
        earlier session of the run is warned about (and shown in :meth:`status`).
        """
        if self._thread is not None or self._was_reset or self.state is not SessionState.CREATED:
            raise SessionError(f"this Session was already started or ended (state {self.state}); build a new "
                               f"tb.Session({self._run_argument()}) to go on")
        # (a run killed after its last step is started: its recovery and final flush are still to do)
        if self.feed is not None and self._finished_cleanly and self._resume_ns >= self.feed.end_ns:
            self.state = SessionState.FINISHED
            self._close_files()
            over = f"tb.Session(..., run={self.run!r}, reset=True)" if self.run is not None else "a new state_dir"
            raise SessionError(
                f"paper run {self._run_label()} already replayed this feed (it stopped at "
                f"{ns_to_iso(self._resume_ns)}; the feed ends at {ns_to_iso(self.feed.end_ns - 1)}), so there is "
                f"nothing left to replay: start it over with {over}, start a fresh run with "
                "run=tb.paper.new_run(), or give a feed that goes on after it")
        if self.kill_switch.mode is not KillSwitchMode.NORMAL:
            refused = "new orders are refused" if self.kill_switch.mode is KillSwitchMode.HALTED \
                else "only orders that reduce a position pass"
            message = (f"paper run {self._run_label()} starts with its kill switch {self.kill_switch.mode} "
                       f"(carried over from an earlier session: {self.kill_switch.reason}); {refused} "
                       "until session.resume_trading(), or reset the run to start it over")
            log.info(message)  # the warning is what a notebook shows; once is enough
            warnings.warn(message, stacklevel=2)
        paper.clean_flush_leftovers()  # temporary folders of a flush a kill interrupted
        # another process's lock error names this session while it writes the store
        self._store_purpose = getattr(self.store, "purpose", "")
        self.store.announce(f"a paper session (run {self._run_label()})")
        self._running.set()
        self._thread = threading.Thread(target=self._run, name="tradebook-session", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout=self.START_TIMEOUT_S):
            self._stop.set()
            raise SessionTimeoutError(
                f"start: connecting to {self.venue.name}, recovering the journals and reconciling did not finish "
                f"within {self.START_TIMEOUT_S} s (state {self.state}); the session is being stopped")
        if self.error is not None:
            raise self.error
        if wait:
            self.wait(timeout)
        return self

    @property
    def now_ns(self) -> int:
        """Session time (int64 UTC ns): the end of the market data processed so far (see the module doc)."""
        return self._now

    def wait(self, timeout: float | None = None, *, progress: bool | None = None) -> SessionState:
        """Block until the replay finishes or the session stops; re-raises a failure of the loop.

        ``progress``: a bar of the replayed market time while waiting (None: only when a
        person watches, see :mod:`tradebook.progress`).
        """
        if self._thread is None:  # never started: nothing will end it
            if self.state is SessionState.CREATED:
                raise SessionError(f"wait: the session is not running (state {self.state}); call start() first")
            return self.state
        if self.feed is not None and progress_enabled(progress):
            timeout = self._wait_with_bar(timeout)
        if not self._done.wait(timeout):
            feed_end = f"; the feed ends at {ns_to_iso(self.feed.end_ns - 1)}" if self.feed is not None else ""
            paused = " (paused: session.resume() lets it go on)" if self.state is SessionState.PAUSED else ""
            raise SessionTimeoutError(f"waited {timeout} s for the session to end; it is still {self.state}{paused} "
                                      f"at session time {self._time_text()}{feed_end}")
        if self.error is not None:
            raise self.error
        return self.state

    def _wait_with_bar(self, timeout: float | None) -> float | None:
        """Wait for the end with a bar of replayed seconds; returns what is left of ``timeout``."""
        start, end = self.feed.start_ns, self.feed.end_ns
        deadline = None if timeout is None else time.monotonic() + timeout
        with Bar(total=round((end - start) / NS_PER_SECOND, 1), desc="replay", unit="s", progress=True) as bar:
            shown = 0.0
            while not self._done.wait(0.1) and (deadline is None or time.monotonic() < deadline):
                replayed = round(max(0, min(end, self._now) - start) / NS_PER_SECOND, 1)
                bar.update(replayed - shown)
                shown = replayed
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    def wait_until(self, ts_ns: int, timeout: float | None = 60, *, pause: bool = False) -> SessionState:
        """Block until session time reaches ``ts_ns`` (int64 UTC ns) or the session ends.

        ``pause=True`` also holds the replay there (paused after the step that reaches
        ``ts_ns``), so that cells can submit at that session time; :meth:`resume` goes on.
        A replay paused before ``ts_ns`` is resumed by ``pause=True`` (replay up to there
        and hold again) and refused at once without it (its time would never come).
        """
        if isinstance(ts_ns, bool) or not isinstance(ts_ns, (int, np.integer)):
            raise ConfigError(f"wait_until takes int64 UTC ns (tb.to_ns('2024-08-08T23:56:00Z')), got {ts_ns!r}")
        ts_ns = int(ts_ns)
        if self._thread is None:  # its time would never move
            raise SessionError(f"wait_until: the session is not running (state {self.state}); call start() first")
        if pause:
            if self.feed is None:
                raise ConfigError("wait_until(pause=True) holds a replay; a session without a feed moves only "
                                  "when step() is called")
            self._pause_at = ts_ns
        if self._now < ts_ns and self._thread is not None and not self._running.is_set() \
                and not self._done.is_set():
            if not pause:
                raise SessionError(f"wait_until: the replay is paused at {self._time_text()} and would never reach "
                                   f"{ns_to_iso(ts_ns)}: resume() it first, or wait_until(..., pause=True) to "
                                   "replay up to there and hold")
            self.resume()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._done.is_set() and (self._now < ts_ns or (pause and self._running.is_set())):
            if deadline is not None and time.monotonic() > deadline:
                raise SessionTimeoutError(f"waited {timeout} s for session time {ns_to_iso(ts_ns)}; it is at "
                                          f"{self._time_text()} (state {self.state})")
            self._done.wait(0.01)
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
        """Stop the loop, flush everything to the store, disconnect (working orders stay at the venue).

        Releases the run's state folder. A session never started just lets go of it.
        """
        self._stop.set()
        self._running.set()
        if self._thread is None:
            self._close_files()
        else:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise SessionTimeoutError(f"stop: the session loop did not end within {timeout} s (state "
                                          f"{self.state}, session time {self._time_text()}); it stops after its "
                                          "current step, and keeps the state folder until then")
        if self.state not in (SessionState.FINISHED, SessionState.FAILED):
            self.state = SessionState.STOPPED

    def reset(self) -> dict[str, int]:
        """Start this paper run over: remove its state folder and its rows in the store (see :func:`tb.paper.reset`).

        Only on a session that is not running (never started, or ended); this Session
        is done afterwards: build a new one with the same ``run`` to trade in it again.
        Returns the rows removed per table.
        """
        if self._thread is not None and not self._done.is_set():
            raise SessionError(f"paper run {self._run_label()} is {self.state}: stop() it before reset()")
        if self.run is None or not self._is_paper_venue():
            raise SessionError("reset() resets a named paper run (tb.Session(..., run='name')); this session "
                               f"has state_dir={str(self.state_dir)!r} and venue {self.venue.name!r}")
        self._close_files(release=False)
        lock = self._state_lock if self._state_lock.held else paper.StateLock(self.state_dir, self.run)
        try:
            removed = paper.reset_locked(self.store, self.run, self.state_dir, lock)
        finally:
            lock.release()
        self._was_reset = True
        if self.state is SessionState.CREATED:
            self.state = SessionState.STOPPED
        return removed

    def step(self, batch: FeedBatch, timeout: float = 60) -> None:
        """A session without a feed: process one batch of market data now, and return when it is done.

        The batch moves session time to its end: the venue sees its quotes and trades,
        positions are marked, due algo slices and deferred orders go, the strategy runs.
        Batches must come in time order.
        """
        if self.feed is not None:
            raise ConfigError("this session replays its feed; step() drives a session started without one")
        if not isinstance(batch, FeedBatch):
            raise DataError(f"step takes a FeedBatch, got {type(batch).__name__}")
        if batch.end_ns <= batch.start_ns or batch.start_ns < self._last_end_ns:
            raise DataError(f"batch [{batch.start_ns}, {batch.end_ns}) starts before the end of the last one "
                            f"({self._last_end_ns}) or is empty; expected batches in time order")
        self._call(self.on_batch(batch), timeout)

    def halt(self, reason: str = "halted by hand") -> None:
        """Kill switch: no new orders (working orders stay; see :meth:`flatten`)."""
        self._call(self._set_kill_switch("halted", reason))

    def reduce_only(self, reason: str = "reduce-only by hand") -> None:
        """Kill switch: only orders that reduce a position pass."""
        self._call(self._set_kill_switch("reduce_only", reason))

    def resume_trading(self, reason: str = "resumed by hand") -> None:
        """Kill switch back to normal (also after the breaker or the daily loss limit halted trading)."""
        self._call(self._set_kill_switch("normal", reason))

    def flatten(self, reason: str = "flatten by hand") -> list[Order]:
        """Kill switch: cancel every working order, then close every position with market orders.

        Sets reduce-only. The closing orders go as soon as no cancel is unanswered: at
        once when nothing was working, else at the next step of session time (the
        venue answers cancels as its time moves). Returns the orders asked to cancel
        and the closing orders sent so far; all of them are in :meth:`orders`.
        """
        return self._call(self._flatten(reason))

    def cancel_orders(self, strategy_id: str | None = None, reason: str = "cancelled by hand") -> list[Order]:
        """Cancel the working orders of ``strategy_id`` (of every strategy when None); returns those asked.

        The venue answers as its time moves (PENDING_CANCEL until then). Algo slices not yet
        released are not touched; the promotion gate's reversion calls this (``reason`` is logged).
        """
        async def cancel() -> list[Order]:
            chosen = [o for o in self.oms.working_orders()
                      if strategy_id is None or o.intent.strategy_id == strategy_id]
            log.info("cancel_orders %s: %d working order(s): %s", strategy_id or "(all)", len(chosen), reason)
            return [await self.oms.cancel(o.client_order_id) for o in chosen]

        return self._call(cancel())

    def submit(self, item: Signal | OrderIntent) -> list[Order]:
        """Send a signal (sized, routed, risk-checked) or a ready intent (risk-checked) through the order path.

        Returns the orders it produced (none when the signal sized to nothing, was deferred
        by the spread filter or fell outside market hours: see :meth:`decisions_frame`).
        Bad input raises and stores nothing (see the module docstring).
        """
        if isinstance(item, Signal):
            return self._call(self._on_signal(item, raise_errors=True))
        if isinstance(item, OrderIntent):
            return self._call(self._submit_intent(item))
        raise OrderError(f"submit takes a Signal or an OrderIntent, got {type(item).__name__}")

    def arm_live(self, venue_or_account: VenuePort | str, *, confirm: str) -> None:
        """Trade on a broker account from :meth:`start` on: never a default, one account per call.

        ``venue_or_account``: an adapter (:class:`VenuePort`), or the name or account id of a
        venue the configuration routes to (built by the factory). ``confirm`` must repeat the
        account id exactly. Only before :meth:`start`; every instrument of the session must
        trade on that venue. The account's orders get their own journal in the state
        folder (``oms-<venue>-<account>.journal``); the paper run's stays as it is. At
        connect the venue must pass its health check, else the session trades on paper
        and its status, an alert and the store say why.
        """
        if self.state is not SessionState.CREATED or self._thread is not None:
            raise SessionError(f"arm_live before start(): this session is {self.state}")
        if self._paper is not None:
            raise SessionError(f"this session is armed already ({self.venue.name}, account {self.venue.account_id})")
        venue = self._venue_to_arm(venue_or_account)
        if Capability.SIMULATED in venue.capabilities:
            raise SessionError(f"venue {venue.name!r} is simulated: paper trading needs no arming")
        if not isinstance(confirm, str) or confirm != venue.account_id:
            raise SessionError(f"arming {venue.name} needs confirm={venue.account_id!r} (its account id, typed "
                               f"out); got {confirm!r}")
        if self.routing is not None and isinstance(venue_or_account, str):
            elsewhere = sorted(i for i, inst in self.instruments.items()
                               if self.routing.route_for(inst.asset_class).venue is not venue)
            if elsewhere:
                raise SessionError(f"{', '.join(elsewhere)} do not trade on {venue.name}: a session trades on one "
                                   "venue; build one session per venue")
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{venue.name}-{venue.account_id}")
        journal_file = self.state_dir / f"oms-{safe}.journal"
        portfolio = Portfolio(self._starting_cash, currency=self.config.risk.account_currency)
        oms = OrderManager(self.store, Journal(journal_file, sync=self._sync), venue, portfolio,
                           mode="live" if venue.is_live else "paper", clock=self._clock, instruments=self._instrument,
                           journal_name=f"{self.oms_journal_name}.{safe}")
        self._paper = (self.venue, self.oms, self.portfolio, self.breaker)
        self._paper_account = self.account_id
        self.venue, self.oms, self.portfolio, self.account_id = venue, oms, portfolio, venue.account_id
        self._publisher.attach(oms)
        self.breaker = CircuitBreaker.from_config(self.config.risk, self.kill_switch, venue.name)
        oms.alert("armed", f"{venue.name} account {venue.account_id} armed "
                           f"({'LIVE' if venue.is_live else 'broker paper'} endpoint); confirmed by hand")
        log.warning("session armed on %s account %s (live=%s)", venue.name, venue.account_id, venue.is_live)

    def _venue_to_arm(self, venue_or_account: VenuePort | str) -> VenuePort:
        if isinstance(venue_or_account, VenuePort):
            return venue_or_account
        if not isinstance(venue_or_account, str):
            raise SessionError(f"arm_live takes a VenuePort or a venue name or account id, got "
                               f"{type(venue_or_account).__name__}")
        routes = list(self.routing.routes.values()) if self.routing is not None else []
        for route in routes:
            if route.venue is not None and venue_or_account in (route.venue_name, route.venue.account_id):
                return route.venue
        for route in routes:
            if route.wanted == venue_or_account and route.fallback is not None:
                raise SessionError(f"{venue_or_account} cannot be armed: {route.reason}")
        built = sorted({f"{r.venue_name} (account {r.venue.account_id})" for r in routes if r.venue is not None})
        raise SessionError(f"no venue {venue_or_account!r} is routed for this session's instruments; "
                           f"routed: {', '.join(built) or 'none (set routing and venues in the configuration)'}")

    def _announce_fallbacks(self) -> None:
        """Asset classes that trade on paper although the configuration routes venues: an alert each (once)."""
        if self.routing is None or not (self.config.routing or self.routing.forced_paper):
            return  # a plain paper session: nothing was asked for that it does not get
        known = {(a.kind, a.message) for a in self.oms.alerts()}
        classes = {i.asset_class for i in self.instruments.values()}
        for route in self.routing.fallbacks(classes):
            message = f"{route.asset_class} orders go to the paper venue: {route.reason}"
            if ("paper_fallback", message) not in known:
                self.oms.alert("paper_fallback", message)

    def _routes_text(self) -> str | None:
        if self._armed_fallback is not None:
            return f"paper: {self._armed_fallback}"
        if self._paper is not None:
            return f"{self.venue.name} (account {self.venue.account_id})"
        if self.routing is None:
            return None
        classes = sorted({i.asset_class for i in self.instruments.values()})
        routes = self.routing.routes
        return "; ".join(f"{c}: paper ({routes[c].venue_name} routed, not armed)" if routes[c].venue is not None
                         else f"{c}: {routes[c].describe()}" for c in classes) or None

    async def _reconcile_now(self) -> None:
        try:
            self.alerts.extend(await asyncio.wait_for(self.oms.reconcile(), UNRESOLVED_RECONCILE_TIMEOUT_S))
        except Exception as exc:  # noqa: BLE001 - tried again at the next interval; the order stays blocked
            log.warning("reconciling unresolved orders with %s failed: %s", self.venue.name, exc)
            return
        self._decide_unsent()

    async def _compare_instruments(self, timeout_s: float) -> None:
        """The broker's own rules for the session's instruments (its market metadata) against ours: an alert per
        instrument it does not list or whose tick, lot, minimum size or notional differ (orders off its rules
        would be refused there)."""
        try:
            listed = await asyncio.wait_for(self.venue.instruments(), timeout_s)
        except NotImplementedError:
            return
        except Exception as exc:  # noqa: BLE001 - the check is advisory; trading goes on, said once
            self.oms.alert("instruments_unread", f"{self.venue.name}: its instrument list could not be read: {exc}")
            return
        theirs = {i.instrument_id: i for i in listed}
        for instrument_id, ours in sorted(self.instruments.items()):
            venue_instrument = theirs.get(instrument_id)
            if venue_instrument is None:
                self.oms.alert("instrument_not_listed", f"{instrument_id} is not among {self.venue.name}'s "
                                                        "instruments: its orders may be refused")
                continue
            differ = [f"{name} {getattr(ours, name)} here, {getattr(venue_instrument, name)} there"
                      for name in ("tick_size", "lot_size", "min_quantity", "min_notional")
                      if getattr(ours, name) != getattr(venue_instrument, name)]
            if differ:
                self.oms.alert("instrument_rules_differ", f"{instrument_id} at {self.venue.name}: {'; '.join(differ)} "
                                                          f"({venue_instrument.description})")

    async def _connect_venue(self) -> None:
        """Connect the session's venue; an armed one must pass its health check, else paper takes over."""
        self.oms.bind_loop()  # a venue's stream or poller thread may deliver events from now on
        if self._paper is None:
            await self.venue.connect(self.oms.on_event, on_events=self.oms.on_events)
            return
        from tradebook.venues.factory import DEFAULT_HEALTH_TIMEOUT_S

        try:
            await asyncio.wait_for(self.venue.connect(self.oms.on_event, on_events=self.oms.on_events),
                                   DEFAULT_HEALTH_TIMEOUT_S * 2)
            health = await asyncio.wait_for(self.venue.health(), DEFAULT_HEALTH_TIMEOUT_S)
            ok, why = bool(health), health.reason
        except Exception as exc:  # noqa: BLE001 - a venue that cannot connect or report is not healthy
            ok, why = False, f"{type(exc).__name__}: {exc}"
        if ok:
            await self._compare_instruments(DEFAULT_HEALTH_TIMEOUT_S)
            return
        armed = self.venue
        try:
            await asyncio.wait_for(armed.close(), DEFAULT_HEALTH_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - leaving it is what matters; say what went wrong
            log.warning("closing %s after its failed health check: %s", armed.name, exc)
        self.oms.close(flush=True)
        self.venue, self.oms, self.portfolio, self.breaker = self._paper
        self.account_id = self._paper_account
        self._paper = None
        self._armed_fallback = f"{armed.name} account {armed.account_id} failed its health check: {why}"
        self.oms.alert("paper_fallback", f"orders go to the paper venue: {self._armed_fallback}")
        self.oms.bind_loop()
        await self.venue.connect(self.oms.on_event, on_events=self.oms.on_events)

    # -- views ---------------------------------------------------------------------------------
    def status(self) -> SessionStatus:
        """Where the session stands: a read-only mapping of exact values (``status()["state"]``), shown as a table."""
        now = self._clock()
        return SessionStatus({
            "state": str(self.state), "mode": "live" if self.venue.is_live else "paper", "venue": self.venue.name,
            "account": self.account_id,
            "routes": self._routes_text(),
            "session_time": ns_to_iso(now) if now else None,
            "run": self.run, "kill_switch": str(self.kill_switch.mode),
            "kill_switch_reason": self.kill_switch.reason, "breaker": str(self.breaker.state),
            **self.oms.counts(), "cash": self.portfolio.cash, "equity": self.portfolio.equity,
            "realised_pnl": self.portfolio.realised_pnl, "unrealised_pnl": self.portfolio.unrealised_pnl,
            "alerts": len(self.alerts) + len(self.oms.alerts()), "deferred": len(self._deferred),
            "scheduled_slices": len(self._scheduled),
        }, self._display_instrument())

    def __repr__(self) -> str:
        status = self.status()
        return (f"<Session {status['mode']} {status['state']} {', '.join(self.instruments) or 'no instruments'} "
                f"account {status['account']} state {self.state_dir} at {status['session_time'] or '-'}: "
                f"equity {status.shown('equity')}, kill switch {status['kill_switch']}>")

    def _repr_html_(self) -> str:
        return self.status()._repr_html_()

    def dashboard(self, **kwargs: Any) -> Any:
        """Serve the monitoring dashboard and the read API over this session, from its process; returns the server.

        ``server.url`` is where to open it (127.0.0.1 unless ``address=`` and ``token=``),
        ``server.stop()`` ends it. Keywords: those of :func:`tradebook.monitor.server.serve_monitor`.
        """
        from tradebook.monitor.server import serve_monitor  # presentation, loaded only when asked for

        return serve_monitor(self, **kwargs)

    def controls(self, *, interval_s: float = 1.0) -> Any:
        """Notebook controls (ipywidgets): state, P&L and counts, refreshed every ``interval_s`` while it runs, and
        pause, resume, halt and flatten, each done only after a confirmation (see :mod:`tradebook.widgets`)."""
        from tradebook.widgets import session_controls  # presentation, loaded only when asked for

        return session_controls(self, interval_s=interval_s)

    def _display_instrument(self) -> str | None:
        # money in views is rounded to the traded instrument's precision (the first one, when several)
        return next(iter(self.instruments), None)

    def orders(self) -> pd.DataFrame:
        """One row per order (exact Decimals; shown rounded to each instrument's tick and lot)."""
        return readable(self.oms.orders_frame(), self._display_instrument())

    def fills(self) -> pd.DataFrame:
        """One row per fill (exact Decimals; shown rounded)."""
        return readable(self.oms.fills_frame(), self._display_instrument())

    def positions(self) -> pd.DataFrame:
        """One row per position (exact Decimals: realised P&L keeps every digit; shown rounded)."""
        return readable(self.portfolio.positions_frame(), self._display_instrument())

    def decisions_frame(self) -> pd.DataFrame:
        columns = ["ts_ns", "strategy_id", "signal_id", "instrument_id", "outcome", "code", "reason",
                   "client_order_ids"]
        return pd.DataFrame([d.__dict__ for d in self.decisions], columns=columns)

    def equity_frame(self) -> pd.DataFrame:
        """Equity, cash and P&L once a minute of session time (and now), as float64 for plots and analysis."""
        p = self.portfolio
        points = [*self._equity_curve]
        if self._now and (not points or points[-1][0] != self._now):
            points.append((self._now, p.equity, p.cash, p.realised_pnl, p.unrealised_pnl))
        frame = pd.DataFrame(points, columns=["ts_ns", "equity", "cash", "realised_pnl", "unrealised_pnl"])
        for column in ("equity", "cash", "realised_pnl", "unrealised_pnl"):
            frame[column] = frame[column].astype("float64")
        frame.insert(0, "time", pd.to_datetime(frame["ts_ns"].astype("int64"), unit="ns", utc=True).dt.floor("us"))
        return frame

    def scheduled(self) -> pd.DataFrame:
        """Algo slices not released yet: parent, child id, release time, quantity."""
        rows = [(s.parent.parent_id, s.parent.child_id(s.child.index), s.release_ts_ns, s.child.quantity)
                for s in sorted(self._scheduled, key=lambda s: (s.release_ts_ns, s.child.index))]
        return pd.DataFrame(rows, columns=["parent_id", "intent_id", "release_ts_ns", "quantity"])

    def parents(self) -> pd.DataFrame:
        """Algo parents (TWAP/VWAP): status (working, done, stopped), slices scheduled and working, why stopped."""
        scheduled: dict[str, int] = {}
        for item in self._scheduled:
            scheduled[item.parent.parent_id] = scheduled.get(item.parent.parent_id, 0) + 1
        working: dict[str, int] = {}
        for child in self._children.values():
            working[child.intent.parent_id] = working.get(child.intent.parent_id, 0) + 1
        rows = []
        for parent_id, state in self._parents.items():
            intent = state.parent.intent
            if state.stopped_reason is not None:
                status = AlgoStatus.STOPPED
            elif scheduled.get(parent_id) or working.get(parent_id):
                status = AlgoStatus.WORKING
            else:
                status = AlgoStatus.DONE
            rows.append((parent_id, intent.instrument_id, str(intent.side), intent.quantity, state.ts_ns, str(status),
                         scheduled.get(parent_id, 0), working.get(parent_id, 0), state.stopped_reason or ""))
        return pd.DataFrame(rows, columns=["parent_id", "instrument_id", "side", "quantity", "ts_ns", "status",
                                           "slices_scheduled", "slices_working", "reason"])

    # -- the loop --------------------------------------------------------------------------
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
        set_aside = getattr(self, "_paper", None)
        for journal in (getattr(getattr(self, "oms", None), "journal", None), getattr(self, "_journal", None),
                        set_aside[1].journal if set_aside is not None else None):
            if journal is not None:
                journal.close()
        bus = getattr(self, "bus", None)
        if bus is not None:  # subscribers finish what is queued; one that hangs is left behind, logged
            bus.close(BUS_CLOSE_TIMEOUT_S)
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
                self._mids.setdefault(instrument_id, deque(maxlen=_VOL_WINDOW)).append(mid)
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

    # -- checks of what comes in -----------------------------------------------------------------
    def _check_signal(self, signal: Signal) -> tuple[Signal, Instrument]:
        """The signal's own fields (not the market's), OrderError / ConformanceError / UnknownInstrumentError
        naming the fault; returns the signal with a float quantity or stop made Decimal (by its repr)."""
        if not isinstance(signal, Signal):
            raise OrderError(f"a strategy must yield Signals, got {type(signal).__name__}")
        for name in ("strategy_id", "signal_id"):
            value = getattr(signal, name)
            if not isinstance(value, str) or not value.strip():
                raise OrderError(f"signal {name} is {value!r}: expected a non-empty string (the client order id "
                                 "derives from strategy_id and signal_id)")
        where = f"signal {signal.strategy_id}:{signal.signal_id}"
        if not isinstance(signal.instrument_id, str) or not signal.instrument_id:
            raise OrderError(f"{where}: instrument_id is {signal.instrument_id!r}; expected an instrument id string "
                             "such as 'BTCUSDT.BINANCE'")
        side = signal.side
        if not isinstance(side, Side):
            if side not in ("buy", "sell"):
                raise OrderError(f"{where}: side is {side!r}; expected Side.BUY or Side.SELL ('buy' or 'sell')")
            side = Side(side)  # typed as text: the Side it names
        # exact types first (the usual case costs a class test each); the rest through the ABCs
        ts_ns = signal.ts_ns
        if ts_ns is not None and not (ts_ns.__class__ is int or (
                not isinstance(ts_ns, bool) and isinstance(ts_ns, numbers.Integral))) or (ts_ns or 0) < 0:
            raise OrderError(f"{where}: ts_ns is {ts_ns!r}; expected int nanoseconds since the epoch (UTC), "
                             "e.g. tb.to_ns('2024-08-08T23:56:00Z'), or None for the session's time")
        strength = signal.strength
        if not (strength.__class__ is float or (not isinstance(strength, bool)
                                                and isinstance(strength, numbers.Real))) \
                or not math.isfinite(strength) or not 0 <= strength <= 1:
            raise OrderError(f"{where}: strength is {strength!r}; expected a number in [0, 1]")
        for value, name in ((signal.win_rate, "win_rate"), (signal.avg_win, "avg_win"), (signal.avg_loss, "avg_loss")):
            if value is not None and not (value.__class__ is float or (
                    not isinstance(value, bool) and isinstance(value, numbers.Real))) or (
                    value is not None and not math.isfinite(value)):
                raise OrderError(f"{where}: {name} is {value!r}; expected a finite number or None")
        if signal.urgency not in ("low", "normal", "high"):
            raise OrderError(f"{where}: urgency is {signal.urgency!r}; expected 'low', 'normal' or 'high'")
        quantity = signal.quantity
        if quantity.__class__ is Decimal and quantity.is_finite() and 0 < quantity and \
                quantity.adjusted() < MAX_INTEGER_DIGITS:
            pass  # the usual explicit size: nothing to convert
        elif quantity is not None:
            if isinstance(quantity, bool) or not isinstance(quantity, (Decimal, int, float)):
                raise OrderError(f"{where}: quantity is {quantity!r}; expected a Decimal (exact units; a float is "
                                 "taken by its repr)")
            if isinstance(quantity, float) and not math.isfinite(quantity):
                raise OrderError(f"{where}: quantity is {quantity!r}; expected a Decimal (or float) that is positive "
                                 "and finite")
            if not isinstance(quantity, Decimal):
                quantity = to_decimal(quantity, f"{where}: quantity")  # by its repr: 0.01 is Decimal('0.01')
            if not quantity.is_finite() or quantity <= 0:
                raise OrderError(f"{where}: quantity is {quantity}; expected a positive finite Decimal")
            check_amount(quantity, f"{where}: quantity")
        stop_loss = signal.stop_loss
        if stop_loss is not None:
            if isinstance(stop_loss, bool) or not isinstance(stop_loss, (Decimal, int, float)):
                raise OrderError(f"{where}: stop_loss is {stop_loss!r}; expected a Decimal price (or float) or None")
            stop_loss = to_decimal(stop_loss, f"{where}: stop_loss")  # ConformanceError when not finite
            check_amount(stop_loss, f"{where}: stop_loss")
        if quantity is not signal.quantity or stop_loss is not signal.stop_loss or side is not signal.side or \
                (ts_ns.__class__ is not int and ts_ns is not None):
            signal = replace(signal, quantity=quantity, stop_loss=stop_loss, side=side,
                             ts_ns=None if ts_ns is None else int(ts_ns))
        return signal, self._tradable(signal.instrument_id)

    def _signal_time_problem(self, signal: Signal) -> tuple[DecisionCode, str] | None:
        """Why a new signal's time does not fit session time (from the future, or older than
        ``session.max_signal_age_s``), or None. Not judged before the first market data."""
        if signal.ts_ns is None or not self._now:
            return None
        if signal.ts_ns > self._now + SIGNAL_CLOCK_TOLERANCE_NS:
            return (DecisionCode.SIGNAL_FROM_FUTURE,
                    f"signal time {ns_to_iso(signal.ts_ns)} is after session time {ns_to_iso(self._now)} (by "
                    f"{(signal.ts_ns - self._now) / _NS:.3f} s); expected a signal at or before session time "
                    "(a replay's time is its market data's; pass ts_ns=None for session time)")
        max_age_s = self.config.session.max_signal_age_s
        if self._now - signal.ts_ns > max_age_s * _NS:
            return (DecisionCode.SIGNAL_TOO_OLD,
                    f"signal time {ns_to_iso(signal.ts_ns)} is {(self._now - signal.ts_ns) / _NS:.3f} s before "
                    f"session time {ns_to_iso(self._now)}; expected at most session.max_signal_age_s {max_age_s} s")
        return None

    def _reference_snapshot(self, instrument_id: str) -> QuoteSnapshot:
        """The last quote of ``instrument_id`` as a usable reference: DataError when missing, crossed or stale."""
        quote = self._quotes.get(instrument_id)
        if quote is None:
            raise DataError(f"{STALE_OR_CROSSED}: no quote for {instrument_id} yet at {ns_to_iso(self._now)}; "
                            "expected market data before the first order")
        ts, bid, ask, bid_sz, ask_sz = quote
        if not (np.isfinite(bid) and np.isfinite(ask)) or bid <= 0 or ask <= 0 or bid >= ask:
            kind = "locked" if bid == ask else "crossed" if bid > ask else "invalid"
            raise DataError(f"{STALE_OR_CROSSED}: the last {instrument_id} quote ({ns_to_iso(ts)}) is {kind}: "
                            f"bid {bid} / ask {ask}; expected bid < ask to price an order against")
        max_age_ns = self.config.risk.max_quote_age_ms * 1_000_000
        if self._now - ts > max_age_ns:
            raise DataError(f"{STALE_OR_CROSSED}: the last {instrument_id} quote is {(self._now - ts) / _NS:.3f} s "
                            f"old at {ns_to_iso(self._now)}; expected at most risk.max_quote_age_ms "
                            f"{self.config.risk.max_quote_age_ms} ms")
        snapshot = QuoteSnapshot.from_quote(instrument_id, ts, bid, ask,
                                            max(bid_sz, 0.0) if np.isfinite(bid_sz) else 0,
                                            max(ask_sz, 0.0) if np.isfinite(ask_sz) else 0)
        self._snapshots[instrument_id] = (quote, snapshot)  # the risk checks reuse its Decimals
        return snapshot

    def _hours_problem(self, instrument: Instrument) -> str | None:
        extended = self.config.session.extended_hours
        if is_trading(instrument, self._now, extended_hours=extended):
            return None
        calendar = instrument.trading_hours.calendar or "trading hours"
        return (f"market hours: {instrument.instrument_id} is not trading at {ns_to_iso(self._now)} "
                f"(exchange calendar {calendar}; extended hours {'on' if extended else 'off'})")

    # -- the order path ----------------------------------------------------------------------
    def _record(self, signal: Signal, outcome: DecisionOutcome, reason: str, orders: Iterable[Order] = (), *,
                code: DecisionCode, terms: str | None = None) -> None:
        """Journal a decision. ``terms``: what the signal asked for (kept to refuse a later signal under the
        same id with other terms); None for a decision that must not define the id (a conflict)."""
        self._journal_decision(Decision(self._now, signal.strategy_id, signal.signal_id, signal.instrument_id,
                                        outcome, reason, tuple(o.client_order_id for o in orders), code), terms)

    def _journal_decision(self, decision: Decision, terms: str | None) -> None:
        self.decisions.append(decision)
        key = (decision.strategy_id, decision.signal_id)
        self._decided.add(key)
        if terms is not None:
            self._terms.setdefault(key, terms)
        self._journal.append({"kind": "decision", "decision": {**decision.__dict__,
                                                               "client_order_ids": list(decision.client_order_ids)},
                              "terms": terms}, sync=False)

    def _volatility_bps(self, instrument_id: str) -> float:
        mids = self._mids.get(instrument_id)
        if not mids or len(mids) < 3:
            return 0.0
        cached = self._volatility.get(instrument_id)
        if cached is not None and cached[0] == (len(mids), mids[-1], self._last_end_ns):
            return cached[1]  # the mids have not moved since: every signal of a step shares it
        returns = np.diff(np.log(np.asarray(mids)))
        volatility = float(np.std(returns) * 1e4)
        self._volatility[instrument_id] = ((len(mids), mids[-1], self._last_end_ns), volatility)
        return volatility

    def _vwap_schedule(self, instrument_id: str, quantity: Decimal) -> VwapSchedule | None:
        """VWAP for an instrument with a volume profile: longer for larger orders.

        ``router.vwap_min_minutes`` at the slicing threshold (``twap_adv_fraction`` of ADV),
        one more minute per further fifth of the threshold, at most ``vwap_max_minutes``.
        """
        profile = self.volume_profiles.get(instrument_id)
        adv = self.adv.get(instrument_id)
        if profile is None or adv is None:
            return None
        r = self.config.router
        threshold = adv * Decimal(repr(r.twap_adv_fraction))
        extra = int((quantity / threshold - 1) * 5) if quantity > threshold else 0
        return VwapSchedule(min(max(r.vwap_min_minutes + extra, r.vwap_min_minutes), r.vwap_max_minutes), profile)

    async def _on_signal(self, signal: Signal, *, raise_errors: bool) -> list[Order]:
        """Size, route and send one signal. ``raise_errors``: a notebook's submit (bad input raises, nothing
        stored); else a strategy's signal, whose faults are recorded as a rejected decision.

        A signal id names one signal: the same id with the same terms (:func:`_signal_terms`) is a
        re-run and returns the earlier orders, sending nothing; with other terms it is refused
        (OrderError from submit, a ``signal_id_conflict`` decision either way), naming both.
        """
        try:
            signal, instrument = self._check_signal(signal)
        except TradebookError as exc:
            if raise_errors or not isinstance(signal, Signal):
                raise
            self._record(signal, DecisionOutcome.REJECTED, f"{type(exc).__name__}: {exc}", code=DecisionCode.BAD_INPUT,
                         terms=_signal_terms(signal))
            return []
        key = (signal.strategy_id, signal.signal_id)
        base = f"{signal.strategy_id}:{signal.signal_id}"
        terms = _signal_terms(signal)
        existing: list[Order] = []
        if self._has_order_for(base) or self._has_order_for(f"{base}:slice:1"):
            # rare (a re-run cell, a resumed replay): only then look at every order of this signal
            existing = [o for o in self.oms.orders()
                        if o.intent.intent_id == base or o.intent.intent_id.startswith(base + ":")]
        known = self._terms.get(key)
        if known is None and existing:  # orders durable, decision not written (or written before terms were kept)
            entries = [o.intent for o in existing if not o.intent.intent_id.endswith(":stop")] or [existing[0].intent]
            if any(i.side != signal.side or i.instrument_id != signal.instrument_id for i in entries):
                known = f"{entries[0].side} {entries[0].instrument_id} (read from its orders)"
        if known is not None and known != terms:
            message = (f"signal {base} was decided before as [{known}]; this one is [{terms}]: expected the same "
                       "terms (a re-run, which sends nothing) or a new signal_id for a changed signal")
            self._record(signal, DecisionOutcome.REJECTED, message, code=DecisionCode.SIGNAL_ID_CONFLICT)
            if raise_errors:
                raise OrderError(message)
            return []
        routed = signal
        resend = self._resend_number(existing) if existing else 0
        if resend:  # its orders never reached the venue: this signal goes again, under a new id
            routed = replace(signal, signal_id=f"{signal.signal_id}:resend:{resend}")
        elif existing:  # a re-run cell or a replay resumed after a crash: this signal was handled
            if key not in self._decided:
                # the process stopped after the orders were durable and before the decision was written
                outcome = DecisionOutcome.SENT if any(o.status is not OrderStatus.REJECTED for o in existing) \
                    else DecisionOutcome.REJECTED
                self._record(signal, outcome, "recovered after a restart: its orders were already durable", existing,
                             code=DecisionCode.RECOVERED, terms=terms)
            return existing
        elif key in self._decided:
            return []  # decided before (no order, deferred, rejected): deciding again would repeat it
        late = self._signal_time_problem(signal)
        if late is not None:
            code, why = late
            if raise_errors:
                raise OrderError(f"signal {base}: {why}")
            self._record(signal, DecisionOutcome.REJECTED, why, code=code, terms=terms)
            return []
        hours = self._hours_problem(instrument)
        if hours is not None:
            self._record(signal, DecisionOutcome.REJECTED, hours, code=DecisionCode.MARKET_HOURS, terms=terms)
            return []
        try:
            snapshot = self._reference_snapshot(signal.instrument_id)
            decision = self.sizer.size(routed, instrument, snapshot.mid, self.portfolio.equity)
            if decision.quantity is None:
                self._record(signal, DecisionOutcome.NO_ORDER, decision.reason, code=DecisionCode.SIZED_TO_NOTHING,
                             terms=terms)
                return []
            plan = self.router.route(routed, decision.quantity, snapshot, instrument, account_id=self.account_id,
                                     adv=self.adv.get(signal.instrument_id),
                                     volatility_bps=self._volatility_bps(signal.instrument_id), ts_ns=self._now,
                                     schedule=self._vwap_schedule(signal.instrument_id, decision.quantity))
        except TradebookError as exc:
            if raise_errors:
                raise
            self._record(signal, DecisionOutcome.REJECTED, f"{type(exc).__name__}: {exc}", terms=terms,
                         code=DecisionCode.NO_USABLE_QUOTE if isinstance(exc, DataError) else DecisionCode.BAD_INPUT)
            return []
        if plan.algo is not None:
            # durable before any slice goes: a restart releases the slices still due
            self._journal.append(_algo_record(plan.algo, plan.children, self._now))
            self._parents[plan.algo.parent_id] = _Parent(plan.algo, self._now)
            released = {intent.intent_id for intent in plan.intents}
            for child in plan.children:
                if plan.algo.child_id(child.index) not in released:
                    self._scheduled.append(_Scheduled(child.release_ts_ns, plan.algo, child, routed))
        orders: list[Order] = []
        deferred = False
        refused_slice: Order | None = None
        for intent in plan.intents:
            sent = await self._send(intent, routed)
            deferred = deferred or not sent
            orders.extend(sent)
            if plan.algo is not None:
                refused_slice = self._watch_children(sent, intent, routed, plan.algo) or refused_slice
        why = f"sizing: {decision.reason}; router {plan.rule}: {plan.explanation}"
        if resend:
            why = f"sent again as {routed.signal_id} (its earlier order never reached the venue); {why}"
        if plan.algo is not None and not orders and not deferred:
            outcome, code = DecisionOutcome.SCHEDULED, DecisionCode.ALGO_SCHEDULED
        elif deferred and not orders:
            outcome, code = DecisionOutcome.DEFERRED, DecisionCode.SPREAD_DEFERRED
            why = f"{why}; {self._deferred[-1].reason if self._deferred else 'deferred'}"
        elif any(o.status is not OrderStatus.REJECTED for o in orders):
            outcome, code = DecisionOutcome.SENT, DecisionCode.ROUTED
        else:
            outcome, code = DecisionOutcome.REJECTED, DecisionCode.REFUSED
            why = f"{why}; {'; '.join(o.reason for o in orders)}"
        self._record(signal, outcome, why, orders, code=code, terms=terms)
        if refused_slice is not None:
            self._stop_algo(refused_slice)
        return orders

    def _resend_number(self, existing: list[Order]) -> int:
        """The resend a signal's orders call for: n for ``<signal_id>:resend:<n>``, or 0 (nothing to send).

        The rule: when every order of a signal was made durable but never reached the venue
        (rejected on restart with :attr:`RejectCode.NEVER_REACHED_VENUE`, never resent under its
        own id), the same signal (same id and terms), from a strategy's next step or a re-run
        cell, is decided again and sent under ``<signal_id>:resend:1`` (then ``:resend:2``...),
        so its client order id is new. Algo slices are not resent this way: the slice retries
        handle a slice the venue never received.
        """
        unsent = self.oms.never_reached_venue()
        if not unsent:
            return 0
        entries = [o for o in existing if not o.intent.intent_id.endswith(":stop")]
        if not entries or any(o.intent.parent_id is not None for o in entries):
            return 0
        lost = set(unsent)
        if not all(o.client_order_id in lost for o in entries):
            return 0
        return 1 + max(_attempt_number(o.intent.intent_id, "resend") for o in entries)

    def _decide_unsent(self) -> None:
        """A "not sent" decision for each order reconciliation found never reached the venue (once each).

        The signal's earlier decision said "sent"; this one says what became of it, and that
        the same signal sent again goes under a new id (see :meth:`_resend_number`).
        """
        for coid in self.oms.never_reached_venue():
            if coid in self._unsent_decided:
                continue
            self._unsent_decided.add(coid)
            intent = self.oms.order(coid).intent
            base_id, _, _ = intent.intent_id.partition(":resend:")
            stop = base_id.endswith(":stop") and intent.parent_id is not None
            # a protective stop belongs to its entry's signal
            decided_as = client_order_id_for(intent.parent_id, intent.account_id) if stop else coid
            earlier = next((d for d in reversed(self.decisions) if decided_as in d.client_order_ids), None)
            if earlier is not None:
                strategy_id, signal_id = earlier.strategy_id, earlier.signal_id
            else:  # decided in the moment the process stopped: its id is the intent's
                strategy_id = intent.strategy_id
                signal_id = base_id.removeprefix(f"{strategy_id}:").removesuffix(":stop")
            resend = _attempt_number(intent.intent_id, "resend") + 1
            again = f"{base_id}:resend:{resend}"
            reason = (f"order {coid} ({intent.intent_id}) was made durable but never reached {self.venue.name} "
                      f"(the process stopped first); rejected, not resent under its id; "
                      + (f"the order manager sends the protective stop again as {again}" if stop else
                         f"the same signal sent again goes as {signal_id}:resend:{resend}"))
            self._journal_decision(Decision(self._now, strategy_id, signal_id, intent.instrument_id,
                                            DecisionOutcome.NOT_SENT, reason, (coid,),
                                            DecisionCode.NEVER_REACHED_VENUE), None)
            log.warning("not sent: %s", reason)

    async def _submit_intent(self, intent: OrderIntent) -> list[Order]:
        """A ready intent from a notebook: checked like a signal's (bad input raises, nothing stored).

        Float quantities and prices are taken by their repr (``61000.5`` is ``Decimal('61000.5')``),
        then held to the lot and tick like any other.
        """
        intent = _decimal_intent(intent)
        instrument = self._tradable(intent.instrument_id)
        try:
            return [self.oms.order(intent.client_order_id)]  # sent before: nothing new
        except OrderError:
            pass
        self._reference_snapshot(intent.instrument_id)
        self.risk.check(intent, instrument, self._risk_context(intent.instrument_id))  # malformed: raises
        return await self._send(intent, None)

    def _has_order_for(self, intent_id: str) -> bool:
        try:
            self.oms.order_for_intent(intent_id)
        except OrderError:
            return False
        return True

    def _net_positions(self) -> dict[str, Decimal]:
        return self.portfolio.net_positions_by_instrument(self.account_id)

    def _risk_context(self, instrument_id: str) -> RiskContext:
        quote = self._quotes.get(instrument_id)
        reference = None
        cached = self._snapshots.get(instrument_id)
        if cached is not None and cached[0] is quote:  # the router priced this very quote: same Decimals
            reference = ReferenceQuote.from_snapshot(cached[1])
        elif quote is not None and all(np.isfinite(quote[1:3])):
            ts, bid, ask, bid_sz, ask_sz = quote
            reference = ReferenceQuote(Decimal(repr(bid)), Decimal(repr(ask)),
                                       Decimal(repr(bid_sz)) if np.isfinite(bid_sz) and bid_sz > 0 else None,
                                       Decimal(repr(ask_sz)) if np.isfinite(ask_sz) and ask_sz > 0 else None, ts)
        return RiskContext(now_ns=self._now, equity=self.portfolio.equity, daily_pnl=self._daily_pnl(),
                           quote=reference, positions=self._net_positions(),
                           prices=self.portfolio.last_prices(self.instruments), instruments=self.instruments,
                           unresolved_instruments=self.oms.blocked_instruments())

    def _daily_pnl(self) -> Decimal:
        day = self._now // (86_400 * _NS) * 86_400 * _NS
        if day != self._day_start_ns:
            self._day_start_ns = day
            self._day_start_equity = self.portfolio.equity_at(day)
        return self.portfolio.equity - self._day_start_equity

    def _breaker_open(self) -> bool:
        """The breaker refuses calls now (looked at without using up a half-open trial)."""
        state = self.breaker.state
        if state is BreakerState.HALF_OPEN:
            return True  # its one trial is in flight
        if state is BreakerState.OPEN:
            opened = self.breaker.transitions[-1].ts_ns
            return self._now - opened < self.breaker.cooldown_ns
        return False

    async def _send(self, intent: OrderIntent, signal: Signal | None, deferred: _Deferred | None = None) -> list[Order]:
        """Hours, breaker, risk, then the order manager (which makes the intent durable before the venue sees it).

        Returns [] when the spread filter deferred the order (it is tried again at the next steps).
        """
        try:
            return [self.oms.order(intent.client_order_id)]
        except OrderError:
            pass
        instrument = self._instrument(intent.instrument_id)
        hours = self._hours_problem(instrument)
        if hours is not None:
            return [self._refuse(intent, hours)]
        if self._breaker_open():
            return [self._refuse(intent, f"circuit breaker open after repeated venue failures "
                                         f"({self.venue.name}): {self.breaker.transitions[-1].reason}")]
        decision = self.risk.check(intent, instrument, self._risk_context(intent.instrument_id))
        if decision.action is RiskAction.DEFER:
            if deferred is None:
                deferred = _Deferred(intent, signal, self._now, decision.reason)
                # journaled: a restart retries it instead of forgetting the signal it came from
                self._journal.append({"kind": "deferred", "intent": intent_to_record(intent), "ts_ns": self._now,
                                      "reason": decision.reason})
            deferred.reason = decision.reason
            self._deferred.append(deferred)  # the same entry: its attempts keep counting
            log.info("deferred %s: %s", intent.intent_id, decision.reason)
            return []
        if not decision.accepted:
            return [self._refuse(intent, f"risk {decision.check}: {decision.reason}")]
        if not self.breaker.allow(self._now):  # the half-open trial went to another order meanwhile
            return [self._refuse(intent, f"circuit breaker open after repeated venue failures "
                                         f"({self.venue.name})")]
        if self._staging and self.breaker.state is BreakerState.CLOSED:
            order = self.oms.stage(intent)  # sent with the step's other orders (_send_staged)
            self.risk.record_sent(self._now)
            return [order]
        order = await self.oms.submit(intent)
        self.risk.record_sent(self._now)
        self._record_venue_outcome(order)
        return [order]

    def _refuse(self, intent: OrderIntent, reason: str) -> Order:
        """Record ``intent`` as refused before it left (never sent), remembered as a refusal (not a venue's)."""
        order = self.oms.reject(intent, reason)
        self._refused.add(order.client_order_id)
        return order

    async def _send_staged(self) -> None:
        for order in await self.oms.send_staged():
            self._record_venue_outcome(order)

    def _record_venue_outcome(self, order: Order) -> None:
        # the venue refused it, it never left, or its fate is unknown: a venue failure for the breaker
        failed = order.status is OrderStatus.UNRESOLVED or order.status is OrderStatus.REJECTED and (
            order.reason.startswith("venue error") or self.oms.rejection_code(order.client_order_id) is not None)
        if failed:
            self.breaker.record_failure(self._now, order.reason or str(order.status))
        else:
            self.breaker.record_success(self._now)

    async def _release_due(self) -> None:
        due = sorted((s for s in self._scheduled if s.release_ts_ns <= self._now),
                     key=lambda s: (s.release_ts_ns, s.child.index))
        self._scheduled = [s for s in self._scheduled if s.release_ts_ns > self._now]
        for item in due:
            if self._parents.get(item.parent.parent_id, _Parent(None, 0)).stopped_reason is not None:
                continue  # an earlier slice of this step was refused: this one is cancelled with the rest
            instrument_id = item.parent.intent.instrument_id
            try:
                snapshot = self._reference_snapshot(instrument_id)
                intent = self.router.price_child(item.parent, item.child, snapshot,
                                                 adv=self.adv.get(instrument_id),
                                                 volatility_bps=self._volatility_bps(instrument_id),
                                                 ts_ns=self._now)
            except DataError as exc:  # no usable quote right now: the slice waits a second
                log.info("slice %s waits: %s", item.parent.child_id(item.child.index), exc)
                self._scheduled.append(replace(item, release_ts_ns=self._now + _NS))
                continue
            refused = self._watch_children(await self._send(intent, item.signal), intent, item.signal, item.parent)
            if refused is not None:
                self._stop_algo(refused)
        await self._retry_children()
        deferred, self._deferred = self._deferred, []
        for entry in deferred:
            entry.attempts += 1
            if entry.attempts > MAX_DEFERRED_STEPS:
                self.oms.reject(entry.intent, f"deferred for {MAX_DEFERRED_STEPS} steps: the spread or book never "
                                              "allowed it")
                continue
            await self._send(entry.intent, entry.signal, entry)

    def _watch_children(self, orders: list[Order], intent: OrderIntent, signal: Signal | None,
                        parent: Any) -> Order | None:
        """Watch the slices sent (retried if the venue rejects them or they stay unfilled); returns a slice
        refused before it left (hours, breaker, risk, kill switch), whose parent must stop."""
        interval = float(getattr(parent.schedule, "interval_s", 60.0))
        refused = None
        for order in orders:
            if order.client_order_id in self._refused:  # final: retrying cannot help, and neither can the rest
                refused = order
            else:
                self._children[order.client_order_id] = _Child(intent, signal, self._now, interval)
        return refused

    def _stop_algo(self, refused: Order) -> None:
        """The rule for a refused slice: its parent stops.

        When pre-trade risk (the kill switch included), market hours or the breaker refuses
        a slice (or a slice's retry), the parent's slices not yet released are cancelled,
        never sent, even after the refusal's cause is gone (a halted kill switch resumed):
        the strategy decides again with a new signal. Slices already working at the venue
        were accepted when sent and are left to finish (a halt keeps working orders; a
        flatten cancels them). The stop is journaled (a restart does not release the
        cancelled slices), alerted, recorded as a ``stopped`` decision of the parent's
        signal, and :meth:`parents` shows the parent ``stopped`` with the reason.
        """
        parent_id = refused.intent.parent_id
        state = self._parents.get(parent_id) if parent_id else None
        if state is None or state.stopped_reason is not None:
            return
        cancelled = sorted((s for s in self._scheduled if s.parent.parent_id == parent_id),
                           key=lambda s: s.child.index)
        self._scheduled = [s for s in self._scheduled if s.parent.parent_id != parent_id]
        undone = sum((Decimal(s.child.quantity) for s in cancelled), Decimal(0))
        reason = (f"slice {refused.intent.intent_id} refused ({refused.reason}); {len(cancelled)} slice(s) not yet "
                  f"released cancelled ({undone} undone)")
        state.stopped_reason = reason
        self._journal.append({"kind": "algo_stopped", "parent_id": parent_id, "ts_ns": self._now, "reason": reason,
                              "cancelled": [state.parent.child_id(s.child.index) for s in cancelled]})
        alert = Alert(self._now, "algo_stopped", f"{parent_id}: {reason}")
        self.alerts.append(alert)
        self._journal.append({"kind": "alert", "ts_ns": alert.ts_ns, "alert_kind": alert.kind,
                              "message": alert.message})
        intent = state.parent.intent
        signal_id = parent_id[len(intent.strategy_id) + 1:] if parent_id.startswith(intent.strategy_id + ":") \
            else parent_id
        self._journal_decision(Decision(self._now, intent.strategy_id, signal_id, intent.instrument_id,
                                        DecisionOutcome.STOPPED, reason, (refused.client_order_id,),
                                        DecisionCode.SLICE_REFUSED), None)
        log.warning("algo %s stopped: %s", parent_id, reason)

    async def _retry_children(self) -> None:
        """Re-price and resend algo slices the venue rejected or that outlived their interval unfilled.

        At most ``router.max_retries`` times each (one tick more aggressive per try, see
        :class:`RetryPolicy`); then the slice is escalated: an alert, and the rest of it is
        left undone rather than chased.
        """
        for coid, child in list(self._children.items()):
            order = self.oms.order(coid)
            if order.status is OrderStatus.FILLED:
                del self._children[coid]
                continue
            if order.status is OrderStatus.UNRESOLVED:
                continue  # its fate at the venue is unknown: reconciliation settles it, nothing is resent blind
            rejected_by_venue = order.status is OrderStatus.REJECTED and not order.reason.startswith("risk")
            finished_short = order.status in (OrderStatus.CANCELLED, OrderStatus.EXPIRED) and order.remaining > 0
            if not (rejected_by_venue or finished_short):
                if not order.is_done and not child.cancelling and self.retry_policy.is_unfilled(
                        child.released_ts_ns, self._now, interval_s=child.interval_s):
                    child.cancelling = True
                    await self.oms.cancel(coid)
                continue
            del self._children[coid]
            instrument = self._instrument(order.intent.instrument_id)
            try:
                snapshot = self._reference_snapshot(instrument.instrument_id)
            except DataError:
                self._children[coid] = child  # no usable quote now: look again next step
                continue
            attempt = child.attempt + 1
            outcome = self.retry_policy.retry(child.intent, attempt, snapshot, self._now, instrument=instrument,
                                              quantity=order.remaining,
                                              reason="rejected" if rejected_by_venue else "unfilled")
            if isinstance(outcome, Escalation):
                alert = Alert(self._now, "escalation", f"{outcome.intent_id}: {outcome.reason} after "
                                                       f"{outcome.attempts} retries; {order.remaining} left undone")
                self.alerts.append(alert)
                self._journal.append({"kind": "alert", "ts_ns": alert.ts_ns, "alert_kind": alert.kind,
                                      "message": alert.message})
                log.warning("escalation: %s", alert.message)
                continue
            for retried in await self._send(outcome, child.signal):
                if retried.client_order_id in self._refused:
                    self._stop_algo(retried)
                else:
                    self._children[retried.client_order_id] = _Child(outcome, child.signal, self._now,
                                                                     child.interval_s, attempt)

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


def _positive_decimal(value: Any, what: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (Decimal, int, float)):
        raise ConfigError(f"{what} is {value!r}; expected a positive number")
    number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if not number.is_finite() or number <= 0:
        raise ConfigError(f"{what} is {value!r}; expected a positive finite number")
    return number
