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
import functools
import logging
import math
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tradebook.alerts import AlertCenter
from tradebook.config import SessionMode, TradebookConfig, load_config
from tradebook.data.feeds import FeedBatch, ReplayFeed
from tradebook.errors import (
    ConfigError,
    DataError,
    OrderError,
    SessionError,
    SessionTimeoutError,
    UnknownInstrumentError,
)
from tradebook.execution.algos import RetryPolicy
from tradebook.execution.bus import EventBus
from tradebook.execution.publisher import SessionPublisher
from tradebook import paper
from tradebook.paper import new_run as new_run_id
from tradebook.paper import oms_journal_name
from tradebook.execution.oms import Alert, OrderManager
from tradebook.store.journal import Journal
from tradebook.execution.risk import CircuitBreaker, KillSwitch, KillSwitchMode, PreTradeRisk
from tradebook.execution.router import OrderRouter, RouterConfig
from tradebook.execution.sizing import sizer_from_config
from tradebook.model.instruments import Instrument
from tradebook.model.orders import Order, OrderIntent, Signal
from tradebook.model.quotes import QuoteSnapshot
from tradebook.model.time import NS_PER_SECOND, ns_to_iso
from tradebook.portfolio import Portfolio
from tradebook.progress import Bar, progress_enabled
from tradebook.session_parts.algos import AlgoRunner
from tradebook.session_parts.live import LiveVenue
from tradebook.session_parts.loop import SessionLoop
from tradebook.session_parts.recovery import SessionRecovery
from tradebook.session_parts.signals import SignalPipeline
from tradebook.session_parts.state import (
    MAX_DEFERRED_STEPS,
    SIGNAL_CLOCK_TOLERANCE_NS,
    AlgoParent,
    AlgoStatus,
    Decision,
    DecisionCode,
    DecisionOutcome,
    DeferredOrder,
    ScheduledSlice,
    SessionState,
    SessionView,
    WatchedSlice,
)
from tradebook.venues.base import Capability, VenueHealth, VenuePort
from tradebook.tca import TcaRecorder, TcaUpdater, calibration_ids
from tradebook.views import SessionStatus, readable

log = logging.getLogger(__name__)

Strategy = Callable[[FeedBatch, "SessionView"], Iterable[Signal]]

# what notebooks, the CLI and tests import from here (the parts live in tradebook.session_parts)
__all__ = ["MAX_DEFERRED_STEPS", "SIGNAL_CLOCK_TOLERANCE_NS", "AlgoStatus", "Decision", "DecisionCode",
           "DecisionOutcome", "Session", "SessionState", "SessionView", "Strategy", "new_run_id",
           "oms_journal_name", "router_config"]


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


class Session(SessionLoop, SignalPipeline, AlgoRunner, SessionRecovery, LiveVenue):
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
        self.alert_center: AlertCenter | None = None  # the alert rules, while the session runs (see _main)
        # TCA: the mid each order was priced against, and the update after each store flush (off the order path)
        self.tca = TcaRecorder()
        self._tca = TcaUpdater(store, self.tca, calibrations=calibration_ids(store, names),
                               on_error=self._tca_failed)
        self.bus.subscribe("tca", self._tca.on_flushed, kinds=("flushed",))
        self.oms.subscribe(on_flush=self._tca.flushed)  # at once, so the final update never misses the last flush
        self._quotes: dict[str, tuple[int, float, float, float, float]] = {}
        self._snapshots: dict[str, tuple[tuple, QuoteSnapshot]] = {}  # the last quote priced, per instrument
        self._staging = False  # during a strategy step on a simulated venue: orders are sent together
        self._volatility: dict[str, tuple[tuple, float]] = {}  # per instrument: (mids' state, bps)
        self._mids: dict[str, deque[float]] = {}
        self._scheduled: list[ScheduledSlice] = []
        self._children: dict[str, WatchedSlice] = {}
        self._parents: dict[str, AlgoParent] = {}  # algo parents by parent id, in the order they started
        self._refused: set[str] = set()  # client order ids refused before they left (hours, breaker, risk)
        self._reconciled_day = -1
        self.retry_policy = RetryPolicy(max_retries=self.config.router.max_retries)
        self._deferred: list[DeferredOrder] = []
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

    # -- views ---------------------------------------------------------------------------------
    def venue_health(self, timeout: float = 10.0) -> VenueHealth:
        """Ask the venue now whether it can take orders (connected, authenticated, not rate limited), and why."""
        return self._call(asyncio.wait_for(self.venue.health(), timeout), timeout + 1)

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
        ``server.stop()`` ends it, and so does the session's stop (``tradebook dashboard`` serves the
        closed store). Asked again, it gives the one already serving; with other keywords it
        replaces it. Keywords: those of :func:`tradebook.monitor.server.serve_monitor`.
        """
        from tradebook.monitor.server import serve_monitor  # presentation, loaded only when asked for

        current = getattr(self, "_dashboard", None)
        if current is not None and current.running:
            if not kwargs:
                return current
            current.stop()
        self._dashboard = serve_monitor(self, **kwargs)
        return self._dashboard

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

    def _tca_failed(self, message: str) -> None:
        """A TCA update failed (on the bus's thread or at the end): an alert, never an error on the order path."""
        alert = Alert(self._now, "tca_failed", message)
        self.alerts.append(alert)
        self._publisher.alert(alert, journaled=False)


def _positive_decimal(value: Any, what: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (Decimal, int, float)):
        raise ConfigError(f"{what} is {value!r}; expected a positive number")
    number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if not number.is_finite() or number <= 0:
        raise ConfigError(f"{what} is {value!r}; expected a positive finite number")
    return number
