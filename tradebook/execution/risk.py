"""Pre-trade risk, the kill switch and the venue circuit breaker.

:class:`PreTradeRisk` decides, for one conformed :class:`~tradebook.model.orders.OrderIntent`,
whether it may go now (``accept``), must wait for a better book (``defer``) or must not go
(``reject``). It runs every check in this fixed order and answers with the first failure,
so the reason a notebook shows is always the most fundamental one:

1. ``kill_switch``   halted: everything is rejected; reduce-only: only orders that reduce
                     the position (without flipping it) pass.
   ``restricted``    the instrument is restricted (:meth:`PreTradeRisk.restrict`, e.g. by an
                     alert on its cost): only orders that reduce its position pass.
   ``unresolved``    the instrument has an order whose outcome at the venue is unknown
                     (a timeout or a drop after sending, ``ctx.unresolved_instruments``):
                     nothing new for it, reducing or not, until reconciliation settles it.
2. ``quote``         the reference quote: none, crossed or locked, or older than
                     ``max_quote_age_ms`` -> reject ("stale or crossed quote").
3. ``price_collar``  a limit price more than ``price_collar_bps`` from the mid on the
                     aggressive side (buy above, sell below), or a stop price that far on the
                     side where it would trigger at once (buy stop below, sell stop above)
                     -> reject. A protective stop far from the market is not a fat finger.
4. ``spread``        spread wider than ``max_spread_bps`` or far touch (price x size x
                     multiplier) thinner than ``min_touch_notional`` -> ``spread_action``
                     (defer or reject). Unknown touch sizes (quotes made from bars) skip the
                     thin-book half.
5. ``max_position``  absolute position after the order above the instrument's quantity or
                     notional limit -> reject.
6. ``exposure``      gross notional per asset class and overall after the order above its
                     limit -> reject. The order's instrument is valued at the order's limit
                     price, else at the far touch (or the stop price when farther); other
                     positions at ``ctx.prices``. Notional converts to the account currency
                     (``par_currencies`` 1:1, others through ``ctx.fx_rates``).
7. ``order_rate``    ``max_orders_per_minute`` already sent in the last 60 s -> reject.
8. ``daily_loss``    today's P&L at or below ``-daily_loss_limit`` -> reject, and the kill
                     switch is set to halted.
9. ``pdt``           an equity margin account under ``pdt_equity_threshold`` that already
                     made ``max_day_trades`` day trades in ``pdt_window_days`` business days
                     -> the next day trade is rejected.

Orders that reduce the absolute position are never blocked by the position and exposure
limits (5, 6): cutting risk must always be possible. A malformed intent (no limit price on a
limit order, a price off the tick, NaN or non-positive size) is not a risk decision: it raises
OrderError or ConformanceError.

An accepted order counts toward the order rate only when the order manager calls
:meth:`PreTradeRisk.record_sent` (a deferred or never-sent order must not eat the budget).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum

from tradebook.config import PositionLimit, RiskConfig, SpreadAction
from tradebook.errors import OrderError
from tradebook.model.instruments import BUNDLED_INSTRUMENTS, AssetClass, Instrument, Side, get_instrument
from tradebook.model.orders import OrderIntent, OrderType
from tradebook.model.quotes import ReferenceQuote
from tradebook.model.time import NS_PER_SECOND


RATE_WINDOW_NS = 60 * NS_PER_SECOND
BPS = Decimal(10_000)
CHECK_ORDER = ("kill_switch", "restricted", "unresolved", "quote", "price_collar", "spread", "max_position",
               "exposure", "order_rate", "daily_loss", "pdt")
STALE_OR_CROSSED = "stale or crossed quote"


# -- values -----------------------------------------------------------------------------------
_NEW_DICT: dict = {}  # RiskContext's default for its mappings: a new empty dict each time, like default_factory


@dataclass(frozen=True, init=False)
class RiskContext:
    """What the risk checks need to know at ``now_ns``, gathered by the caller (portfolio, feed, venue).

    ``positions`` are signed (long > 0) per instrument id; ``prices`` mark them for
    notional; ``instruments`` resolves ids of held positions to their asset class and
    multiplier (None: the bundled registry). ``recent_order_ts_ns``, when given, replaces
    the checker's own record of sent orders (e.g. restored from the order log after a
    restart). ``equity`` is the account's equity (also the PDT equity); ``daily_pnl`` is
    realised + unrealised since the start of the trading day. ``is_day_trade``: this order
    would close (or open and close) a position opened the same day.
    """

    now_ns: int
    equity: Decimal
    daily_pnl: Decimal
    quote: ReferenceQuote | None
    positions: Mapping[str, Decimal] = field(default_factory=dict)
    prices: Mapping[str, Decimal] = field(default_factory=dict)
    instruments: Mapping[str, Instrument] | None = None
    recent_order_ts_ns: tuple[int, ...] | None = None
    day_trades_last_5_days: int = 0
    margin_account: bool | None = None  # None: risk.equity_margin_account from the config
    is_day_trade: bool = False
    fx_rates: Mapping[str, Decimal] = field(default_factory=dict)  # currency -> account currency per unit
    # instruments with an order in an unknown state (OrderManager.blocked_instruments())
    unresolved_instruments: frozenset[str] | set[str] = frozenset()

    def __init__(self, now_ns: int, equity: Decimal, daily_pnl: Decimal, quote: ReferenceQuote | None,
                 positions: Mapping[str, Decimal] = _NEW_DICT, prices: Mapping[str, Decimal] = _NEW_DICT,
                 instruments: Mapping[str, Instrument] | None = None,
                 recent_order_ts_ns: tuple[int, ...] | None = None, day_trades_last_5_days: int = 0,
                 margin_account: bool | None = None, is_day_trade: bool = False,
                 fx_rates: Mapping[str, Decimal] = _NEW_DICT,
                 unresolved_instruments: frozenset[str] | set[str] = frozenset()) -> None:
        # one per order: straight into __dict__ (a frozen dataclass's own __init__ sets its 13
        # fields one object.__setattr__ call at a time)
        state = self.__dict__
        state["now_ns"] = now_ns
        state["equity"] = equity
        state["daily_pnl"] = daily_pnl
        state["quote"] = quote
        state["positions"] = {} if positions is _NEW_DICT else positions
        state["prices"] = {} if prices is _NEW_DICT else prices
        state["instruments"] = instruments
        state["recent_order_ts_ns"] = recent_order_ts_ns
        state["day_trades_last_5_days"] = day_trades_last_5_days
        state["margin_account"] = margin_account
        state["is_day_trade"] = is_day_trade
        state["fx_rates"] = {} if fx_rates is _NEW_DICT else fx_rates
        state["unresolved_instruments"] = unresolved_instruments


class RiskAction(StrEnum):
    ACCEPT = "accept"
    REJECT = "reject"
    DEFER = "defer"


@dataclass(frozen=True)
class RiskDecision:
    action: RiskAction
    check: str  # which check decided (one of CHECK_ORDER), "all" when accepted
    reason: str

    @property
    def accepted(self) -> bool:
        return self.action is _ACCEPT


# -- kill switch --------------------------------------------------------------------------------
class KillSwitchMode(StrEnum):
    NORMAL = "normal"
    HALTED = "halted"  # no new orders at all
    REDUCE_ONLY = "reduce_only"  # only orders that reduce a position


@dataclass(frozen=True)
class KillSwitchTransition:
    ts_ns: int
    from_mode: KillSwitchMode
    to_mode: KillSwitchMode
    flatten_requested: bool
    reason: str


class KillSwitch:
    """Trading's master switch: normal, halted or reduce-only, plus a flatten request.

    The switch holds state; the order manager acts on it (cancels working orders and
    closes positions when ``flatten_requested``, then calls :meth:`flatten_done`).
    :meth:`request_flatten` also sets reduce-only, so the closing orders pass risk while
    nothing new opens. Every change is appended to :attr:`transitions` with its time and
    reason and passed to subscribers. Thread-safe: a notebook cell may halt while the
    session's loop checks orders.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._mode = _NORMAL
        self._flatten = False
        self._reason = ""
        self._transitions: list[KillSwitchTransition] = []
        self._subscribers: list[Callable[[KillSwitchTransition], None]] = []

    @property
    def mode(self) -> KillSwitchMode:
        return self._mode

    @property
    def flatten_requested(self) -> bool:
        return self._flatten

    @property
    def reason(self) -> str:
        """Why the switch is in its current mode."""
        return self._reason

    @property
    def transitions(self) -> tuple[KillSwitchTransition, ...]:
        with self._lock:
            return tuple(self._transitions)

    def subscribe(self, callback: Callable[[KillSwitchTransition], None]) -> None:
        """Call ``callback(transition)`` on every change (the order manager cancels on halt/flatten)."""
        self._subscribers.append(callback)

    def halt(self, reason: str, ts_ns: int | None = None) -> None:
        self._set(_HALTED, self._flatten, reason, ts_ns)

    def reduce_only(self, reason: str, ts_ns: int | None = None) -> None:
        self._set(_REDUCE_ONLY, self._flatten, reason, ts_ns)

    def resume(self, reason: str = "resumed by hand", ts_ns: int | None = None) -> None:
        """Back to normal trading; clears a pending flatten request."""
        self._set(_NORMAL, False, reason, ts_ns)

    def request_flatten(self, reason: str, ts_ns: int | None = None) -> None:
        """Ask for every working order cancelled and every position closed; switches to reduce-only."""
        self._set(_REDUCE_ONLY, True, reason, ts_ns)

    def flatten_done(self, reason: str = "flat", ts_ns: int | None = None) -> None:
        """The order manager is flat: the request is cleared, the mode (reduce-only) stays."""
        self._set(self._mode, False, reason, ts_ns)

    def _set(self, mode: KillSwitchMode, flatten: bool, reason: str, ts_ns: int | None) -> None:
        if not isinstance(reason, str) or not reason.strip():
            raise OrderError("a kill switch change needs a reason (it goes into the transition log)")
        ts = time.time_ns() if ts_ns is None else int(ts_ns)
        with self._lock:
            if mode == self._mode and flatten == self._flatten:
                return  # already there: the first reason stands
            transition = KillSwitchTransition(ts, self._mode, mode, flatten, reason)
            self._mode, self._flatten, self._reason = mode, flatten, reason
            self._transitions.append(transition)
        for callback in list(self._subscribers):
            callback(transition)


# -- circuit breaker ----------------------------------------------------------------------------
class BreakerState(StrEnum):
    CLOSED = "closed"  # calls go through
    OPEN = "open"  # calls refused until the cool-down has passed
    HALF_OPEN = "half_open"  # one trial call in flight; its outcome closes or reopens


@dataclass(frozen=True)
class BreakerTransition:
    ts_ns: int
    from_state: BreakerState
    to_state: BreakerState
    reason: str


class CircuitBreaker:
    """Stops calling a venue that keeps failing; tries again after a cool-down.

    Closed -> open after ``failures`` consecutive failures. Once ``cooldown_s`` has passed,
    :meth:`allow` lets exactly one call through (half-open); its success closes the
    breaker, its failure reopens it for another cool-down. When the breaker opens and
    ``kill_switch`` is given with ``trip_kill_switch``, trading is halted ("repeated venue
    failures"); closing the breaker does not resume trading: a person decides that.
    Times are explicit int64 ns so replay and tests drive it with their own clock.
    """

    def __init__(self, failures: int = 5, cooldown_s: float = 30.0, *, kill_switch: KillSwitch | None = None,
                 trip_kill_switch: bool = True, venue: str = "venue") -> None:
        if isinstance(failures, bool) or not isinstance(failures, int) or failures < 1:
            raise OrderError(f"CircuitBreaker failures {failures!r}: expected an integer >= 1")
        if isinstance(cooldown_s, bool) or not isinstance(cooldown_s, (int, float)) or not cooldown_s > 0:
            raise OrderError(f"CircuitBreaker cooldown_s {cooldown_s!r}: expected a positive number of seconds")
        self.failures = failures
        self.cooldown_ns = int(round(cooldown_s * NS_PER_SECOND))
        self.kill_switch = kill_switch
        self.trip_kill_switch = trip_kill_switch
        self.venue = venue
        self._lock = threading.Lock()
        self._state = _CLOSED
        self._consecutive = 0
        self._opened_at: int | None = None
        self._trial_in_flight = False
        self._transitions: list[BreakerTransition] = []

    @classmethod
    def from_config(cls, risk: RiskConfig, kill_switch: KillSwitch | None = None,
                    venue: str = "venue") -> CircuitBreaker:
        return cls(risk.breaker_failures, risk.breaker_cooldown_s, kill_switch=kill_switch,
                   trip_kill_switch=risk.breaker_trips_kill_switch, venue=venue)

    @property
    def state(self) -> BreakerState:
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._consecutive

    @property
    def transitions(self) -> tuple[BreakerTransition, ...]:
        with self._lock:
            return tuple(self._transitions)

    def allow(self, ts_ns: int) -> bool:
        """Whether a call to the venue may be made at ``ts_ns`` (half-open: the one trial only)."""
        if self._state is _CLOSED:
            return True  # one read needs no lock: a failure landing now is ordered after this call either way
        with self._lock:
            if self._state is _CLOSED:
                return True
            if self._state is _OPEN:
                assert self._opened_at is not None
                if ts_ns - self._opened_at < self.cooldown_ns:
                    return False
                self._move(ts_ns, _HALF_OPEN,
                           f"cool-down of {self.cooldown_ns / NS_PER_SECOND:g} s passed: one trial call")
                self._trial_in_flight = True
                return True
            if self._trial_in_flight:
                return False
            self._trial_in_flight = True
            return True

    def record_success(self, ts_ns: int) -> None:
        if self._state is _CLOSED and self._consecutive == 0:
            return  # nothing to reset (the usual case); a failure landing now is ordered after this success
        with self._lock:
            self._consecutive = 0
            if self._state is _HALF_OPEN:
                self._trial_in_flight = False
                self._opened_at = None
                self._move(ts_ns, _CLOSED, "trial call succeeded")
            # a late success while open (a call made before it opened) proves little: stay open

    def record_failure(self, ts_ns: int, reason: str = "") -> None:
        trip = None
        with self._lock:
            self._consecutive += 1
            detail = f" (last: {reason})" if reason else ""
            if self._state is _HALF_OPEN:
                self._trial_in_flight = False
                self._opened_at = ts_ns
                trip = f"repeated venue failures: {self.venue} failed its trial call after the cool-down{detail}"
                self._move(ts_ns, _OPEN, trip)
            elif self._state is _CLOSED and self._consecutive >= self.failures:
                self._opened_at = ts_ns
                trip = (f"repeated venue failures: {self.venue} failed {self._consecutive} consecutive calls"
                        f"{detail}")
                self._move(ts_ns, _OPEN, trip)
        if trip is not None and self.kill_switch is not None and self.trip_kill_switch:
            self.kill_switch.halt(trip, ts_ns)

    def _move(self, ts_ns: int, to: BreakerState, reason: str) -> None:
        self._transitions.append(BreakerTransition(ts_ns, self._state, to, reason))
        self._state = to


# enum members read on the order path, as module constants: on Python 3.11 ``Side.BUY`` is a
# descriptor call on the enum class (~60 ns), paid several times per order
_BUY = Side.BUY
_SELL = Side.SELL
_REJECT = RiskAction.REJECT
_ACCEPT = RiskAction.ACCEPT
_HALTED = KillSwitchMode.HALTED
_REDUCE_ONLY = KillSwitchMode.REDUCE_ONLY
_NORMAL = KillSwitchMode.NORMAL
_CLOSED = BreakerState.CLOSED
_HALF_OPEN = BreakerState.HALF_OPEN
_OPEN = BreakerState.OPEN
_EQUITY = AssetClass.EQUITY


# -- pre-trade risk -----------------------------------------------------------------------------
def reduces_position(position: Decimal, side: Side, quantity: Decimal) -> bool:
    """Whether the order shrinks the absolute position without flipping it."""
    if position > 0:
        return side is _SELL and quantity <= position
    if position < 0:
        return side is _BUY and quantity <= -position
    return False


def _bps(value: Decimal) -> str:
    return f"{float(value):.1f} bps"


_ZERO = Decimal(0)
_ONE = Decimal(1)
_NEEDS_LIMIT = frozenset({OrderType.LIMIT, OrderType.STOP_LIMIT})
_NEEDS_STOP = frozenset({OrderType.STOP, OrderType.STOP_LIMIT})
_ACCEPTED = RiskDecision(RiskAction.ACCEPT, "all", f"passed {len(CHECK_ORDER)} checks")  # frozen: one for all


class _Limits:
    """What the checks read from a RiskConfig, converted once (a RiskConfig is frozen)."""

    __slots__ = ("config", "collar_bps", "max_spread_bps", "spread_action", "spread_verdict", "max_quote_age_ns",
                 "position_limits", "class_limits", "par_currencies")

    def __init__(self, config: RiskConfig) -> None:
        self.config = config
        self.collar_bps = Decimal(repr(config.price_collar_bps))
        self.max_spread_bps = Decimal(repr(config.max_spread_bps))
        self.spread_action = RiskAction.DEFER if config.spread_action is SpreadAction.DEFER else _REJECT
        self.spread_verdict = "deferred" if self.spread_action is RiskAction.DEFER else "rejected"
        self.max_quote_age_ns = config.max_quote_age_ms * 1_000_000
        self.position_limits: dict[str, PositionLimit] = {}  # instrument id -> its limit, filled as asked
        self.class_limits = dict(config.max_exposure_per_asset_class)
        # currencies counted 1:1: the account's and its par currencies (what PreTradeRisk._fx answers _ONE for)
        self.par_currencies = frozenset((config.account_currency, *config.par_currencies))

    def position_limit(self, instrument_id: str) -> PositionLimit:
        limit = self.position_limits.get(instrument_id)
        if limit is None:
            limit = self.position_limits[instrument_id] = self.config.max_position.limit_for(instrument_id)
        return limit


class PreTradeRisk:
    """The pre-trade checks of one account (see the module docstring for their order)."""

    def __init__(self, config: RiskConfig | None = None, kill_switch: KillSwitch | None = None) -> None:
        self.config = RiskConfig() if config is None else config
        self.kill_switch = KillSwitch() if kill_switch is None else kill_switch
        self._sent: deque[int] = deque()
        self._lock = threading.Lock()
        self._limits = _Limits(self.config)
        self._restricted: dict[str, str] = {}  # instrument -> why only orders that reduce its position may go

    # -- per-instrument restriction ----------------------------------------------------------
    def restrict(self, instrument_id: str, reason: str) -> None:
        """Only orders that reduce the position in ``instrument_id`` pass, until :meth:`unrestrict` (an alert's
        restriction: its realised cost far above the modelled one)."""
        self._restricted = {**self._restricted, instrument_id: reason}

    def unrestrict(self, instrument_id: str) -> None:
        self._restricted = {k: v for k, v in self._restricted.items() if k != instrument_id}

    @property
    def restricted(self) -> dict[str, str]:
        """Instruments that only take reducing orders now, with why."""
        return dict(self._restricted)

    def _limits_now(self) -> _Limits:
        """The converted limits of the current config (rebuilt if ``config`` was swapped)."""
        limits = self._limits
        if limits.config is not self.config:
            limits = self._limits = _Limits(self.config)
        return limits

    # -- the order-rate record -------------------------------------------------------------
    def record_sent(self, ts_ns: int) -> None:
        """An accepted order left for the venue at ``ts_ns``: it counts toward the order rate."""
        ts_ns = int(ts_ns)
        start = ts_ns - RATE_WINDOW_NS
        with self._lock:
            sent = self._sent
            sent.append(ts_ns)
            while sent[0] <= start:  # _prune, inlined: once per order (the new entry stays, it is after start)
                sent.popleft()

    def orders_in_window(self, now_ns: int, recent: tuple[int, ...] | None = None) -> int:
        """Orders sent in the 60 s up to ``now_ns`` (from ``recent`` if given, else those recorded)."""
        start = now_ns - RATE_WINDOW_NS
        if recent is not None:
            return sum(1 for t in recent if start < t <= now_ns)
        with self._lock:
            sent = self._sent
            while sent and sent[0] <= start:  # _prune, inlined: once per order
                sent.popleft()
            if not sent or sent[-1] <= now_ns:
                return len(sent)  # the usual case: nothing recorded after now; no walk over the window
            return sum(1 for t in sent if t <= now_ns)

    def _prune(self, now_ns: int) -> None:
        start = now_ns - RATE_WINDOW_NS
        while self._sent and self._sent[0] <= start:
            self._sent.popleft()

    # -- the checks ---------------------------------------------------------------------------
    def check(self, intent: OrderIntent, instrument: Instrument, ctx: RiskContext) -> RiskDecision:
        """Run every check in order; the first failure decides, else accept."""
        self._validate(intent, instrument)
        limits = self._limits
        if limits.config is not self.config:
            limits = self._limits_now()  # the config was swapped: convert the new one
        quantity = intent.quantity
        signed = quantity if intent.side is _BUY else -quantity
        position = ctx.positions.get(instrument.instrument_id, _ZERO)
        # reduces_position(position, side, quantity), inlined: flat (the usual case) never reduces
        reducing = False if not position else reduces_position(position, intent.side, quantity)
        # the checks that find nothing to check in the usual case (switch normal, a market order,
        # a non-equity instrument) are entered only when they have something to decide
        decision = None
        if self.kill_switch.mode is not _NORMAL:
            decision = self._check_kill_switch(intent, instrument, position, reducing)
        if decision is None and self._restricted and not reducing and instrument.instrument_id in self._restricted:
            decision = RiskDecision(_REJECT, "restricted", f"{instrument.instrument_id} is restricted to reducing "
                                    f"orders ({self._restricted[instrument.instrument_id]}): {intent.side} "
                                    f"{intent.quantity} would not reduce the position {position:+}")
        if decision is None and ctx.unresolved_instruments and instrument.instrument_id in ctx.unresolved_instruments:
            # a second order could double what the first may have done at the venue
            decision = RiskDecision(_REJECT, "unresolved", f"{instrument.instrument_id} has an order whose outcome "
                                    "at the venue is unknown; no new order until reconciliation settles it")
        if decision is None:
            decision = self._check_quote(instrument, ctx, limits)
        if decision is not None:
            return decision
        quote = ctx.quote
        assert quote is not None
        mid = quote.mid
        if intent.limit_price is not None or intent.stop_price is not None:
            decision = self._check_collar(intent, instrument, mid, limits)
        decision = decision or self._check_spread(intent, instrument, quote, mid, limits)
        if decision is not None:
            return decision
        if not reducing:
            ref_price = self._reference_price(intent, quote)
            decision = self._check_position(intent, instrument, position, signed, ref_price, limits) or \
                self._check_exposure(instrument, ctx, position, signed, ref_price, limits)
            if decision is not None:
                return decision
        # all three run: the daily loss check halts the kill switch even when the rate check refuses
        rate = self._check_rate(ctx)
        daily_loss = None if self.config.daily_loss_limit is None else self.check_daily_loss(ctx.daily_pnl, ctx.now_ns)
        pdt = self._check_pdt(instrument, ctx) if instrument.asset_class is _EQUITY else None
        return rate or daily_loss or pdt or _ACCEPTED

    def check_daily_loss(self, daily_pnl: Decimal, ts_ns: int) -> RiskDecision | None:
        """Reject (and halt) when today's P&L has reached the loss limit; the session also calls it on marks."""
        limit = self.config.daily_loss_limit
        if limit is None or daily_pnl > -limit:
            return None
        reason = f"daily loss limit: P&L today {daily_pnl} <= -{limit} {self.config.account_currency}"
        if self.kill_switch.mode is not _HALTED:
            self.kill_switch.halt(reason, ts_ns)
        return RiskDecision(_REJECT, "daily_loss", f"{reason}; kill switch halted")

    @staticmethod
    def _validate(intent: OrderIntent, instrument: Instrument) -> None:
        if intent.instrument_id != instrument.instrument_id:
            raise OrderError(f"intent {intent.intent_id} is for {intent.instrument_id}, checked against "
                             f"{instrument.instrument_id}")
        quantity = intent.quantity
        if not (quantity.__class__ is Decimal or isinstance(quantity, Decimal)) or not quantity.is_finite() \
                or quantity <= 0:
            raise OrderError(f"intent {intent.intent_id}: quantity {quantity!r} must be a positive finite Decimal")
        instrument.conform_quantity(quantity)  # on the lot, at or above the minimum
        needs_limit = intent.order_type in _NEEDS_LIMIT
        needs_stop = intent.order_type in _NEEDS_STOP
        if not (needs_limit or needs_stop or intent.limit_price is not None or intent.stop_price is not None):
            return  # a market order without prices: nothing more to check
        for name, needed, price in (("limit_price", needs_limit, intent.limit_price),
                                    ("stop_price", needs_stop, intent.stop_price)):
            if needed and price is None:
                raise OrderError(f"intent {intent.intent_id}: a {intent.order_type} order needs a {name}")
            if price is not None:
                if not isinstance(price, Decimal):
                    raise OrderError(f"intent {intent.intent_id}: {name} {price!r} must be a Decimal")
                instrument.conform_price(price)  # on the tick (ConformanceError names the neighbours)
        if needs_limit:
            instrument.check_notional(intent.limit_price, quantity)  # type: ignore[arg-type]

    def _check_kill_switch(self, intent: OrderIntent, instrument: Instrument, position: Decimal,
                           reducing: bool) -> RiskDecision | None:
        mode = self.kill_switch.mode
        if mode is _HALTED:
            return RiskDecision(_REJECT, "kill_switch", f"kill switch halted: {self.kill_switch.reason}")
        if mode is _REDUCE_ONLY and not reducing:
            return RiskDecision(_REJECT, "kill_switch",
                                f"kill switch reduce-only ({self.kill_switch.reason}): {intent.side} "
                                f"{intent.quantity} {instrument.instrument_id} would not reduce the position "
                                f"{position:+}")
        return None

    def _check_quote(self, instrument: Instrument, ctx: RiskContext, limits: _Limits) -> RiskDecision | None:
        quote = ctx.quote
        if quote.__class__ is ReferenceQuote and quote.prices_valid and \
                ctx.now_ns - quote.ts_ns <= limits.max_quote_age_ns:
            return None  # the usual case: the price checks below pass (kept per quote), and it is fresh
        iid = instrument.instrument_id
        problem = None
        if quote is None:
            problem = f"no quote for {iid} to check the order against"
        elif not (quote.bid.is_finite() and quote.ask.is_finite()) or quote.bid <= 0 or quote.ask <= 0:
            problem = f"{iid} quote bid {quote.bid} / ask {quote.ask} is not a positive price pair"
        elif quote.bid > quote.ask:
            problem = f"{iid} quote is crossed: bid {quote.bid} > ask {quote.ask}"
        elif quote.bid == quote.ask:
            problem = f"{iid} quote is locked: bid {quote.bid} = ask {quote.ask}"
        else:
            age_ns = ctx.now_ns - quote.ts_ns
            if age_ns > limits.max_quote_age_ns:
                problem = (f"{iid} quote is {age_ns / NS_PER_SECOND:.3f} s old, older than "
                           f"max_quote_age_ms {self.config.max_quote_age_ms}")
        if problem is None:
            return None
        return RiskDecision(_REJECT, "quote", f"{STALE_OR_CROSSED}: {problem}")

    @staticmethod
    def _check_collar(intent: OrderIntent, instrument: Instrument, mid: Decimal,
                      limits: _Limits) -> RiskDecision | None:
        if intent.limit_price is None and intent.stop_price is None:
            return None  # a market order: no price to be far from the mid
        collar = limits.collar_bps
        buy = intent.side is _BUY
        if intent.limit_price is not None:
            # distance in the aggressive direction: above mid for a buy, below for a sell
            distance = (intent.limit_price - mid if buy else mid - intent.limit_price) / mid * BPS
            if distance > collar:
                where = "above" if buy else "below"
                return RiskDecision(_REJECT, "price_collar",
                                    f"price collar: {intent.side} limit {intent.limit_price} is {_bps(distance)} "
                                    f"{where} mid {mid} of {instrument.instrument_id}; collar {collar} bps")
        if intent.stop_price is not None:
            # a stop far on its triggering side fires at once: buy stop below mid, sell stop above
            distance = (mid - intent.stop_price if buy else intent.stop_price - mid) / mid * BPS
            if distance > collar:
                where = "below" if buy else "above"
                return RiskDecision(_REJECT, "price_collar",
                                    f"price collar: {intent.side} stop {intent.stop_price} is {_bps(distance)} "
                                    f"{where} mid {mid} of {instrument.instrument_id} and would trigger at once; "
                                    f"collar {collar} bps")
        return None

    def _check_spread(self, intent: OrderIntent, instrument: Instrument, quote: ReferenceQuote, mid: Decimal,
                      limits: _Limits) -> RiskDecision | None:
        # a ReferenceQuote keeps its spread: the same expression, over the same mid
        spread = quote.spread_bps if quote.__class__ is ReferenceQuote else (quote.ask - quote.bid) / mid * BPS
        max_spread = limits.max_spread_bps
        action, verdict = limits.spread_action, limits.spread_verdict
        if spread > max_spread:
            return RiskDecision(action, "spread", f"spread {_bps(spread)} on {instrument.instrument_id} "
                                                  f"(bid {quote.bid}, ask {quote.ask}) > max {max_spread} bps: "
                                                  f"{verdict}")
        buy = intent.side is _BUY
        size, price, touch = (quote.ask_sz, quote.ask, "ask") if buy else (quote.bid_sz, quote.bid, "bid")
        if size is not None:
            notional = price * size * instrument.multiplier
            if notional < self.config.min_touch_notional:
                return RiskDecision(action, "spread",
                                    f"thin book on {instrument.instrument_id}: {touch} {size} @ {price} = {notional} "
                                    f"{instrument.currency} < min_touch_notional {self.config.min_touch_notional}: "
                                    f"{verdict}")
        return None

    @staticmethod
    def _reference_price(intent: OrderIntent, quote: ReferenceQuote) -> Decimal:
        if intent.limit_price is not None:
            return intent.limit_price
        far = quote.ask if intent.side is _BUY else quote.bid
        if intent.stop_price is not None:
            return max(far, intent.stop_price)  # a stop fills around its trigger: value it at the larger
        return far

    def _fx(self, currency: str, ctx: RiskContext) -> Decimal | None:
        if currency == self.config.account_currency or currency in self.config.par_currencies:
            return _ONE
        return ctx.fx_rates.get(currency)

    @staticmethod
    def _check_position(intent: OrderIntent, instrument: Instrument, position: Decimal, signed: Decimal,
                        ref_price: Decimal, limits: _Limits) -> RiskDecision | None:
        iid = instrument.instrument_id
        limit = limits.position_limits.get(iid)
        if limit is None:
            limit = limits.position_limit(iid)
        after = abs(position + signed)
        if limit.quantity is not None and after > limit.quantity:
            return RiskDecision(_REJECT, "max_position",
                                f"max position: {iid} position after the order would be {after} > limit "
                                f"{limit.quantity} (now {position:+}, {intent.side} {intent.quantity})")
        if limit.notional is not None:
            notional = instrument.notional(ref_price, after)
            if notional > limit.notional:
                return RiskDecision(_REJECT, "max_position",
                                    f"max position: {iid} position after the order would be {after} x {ref_price} = "
                                    f"{notional} {instrument.currency} > limit {limit.notional} "
                                    f"(now {position:+}, {intent.side} {intent.quantity})")
        return None

    def _check_exposure(self, instrument: Instrument, ctx: RiskContext, position: Decimal, signed: Decimal,
                        ref_price: Decimal, limits: _Limits) -> RiskDecision | None:
        registry = BUNDLED_INSTRUMENTS if ctx.instruments is None else ctx.instruments
        account = self.config.account_currency
        currency = instrument.currency
        # self._fx(currency, ctx), answered from the converted limits for the account and par currencies
        fx = _ONE if currency in limits.par_currencies else ctx.fx_rates.get(currency)
        if fx is None:
            return RiskDecision(_REJECT, "exposure", f"exposure: no rate from {instrument.currency} to "
                                                               f"{account} in the risk context")
        per_class: dict[AssetClass, Decimal] = {}
        for iid, held in ctx.positions.items():
            if iid == instrument.instrument_id or held == 0:
                continue
            other = get_instrument(iid, registry)
            mark, rate = ctx.prices.get(iid), self._fx(other.currency, ctx)
            if mark is None or rate is None:
                missing = "no price" if mark is None else f"no rate from {other.currency} to {account}"
                return RiskDecision(_REJECT, "exposure",
                                    f"exposure: {missing} for the held position {held:+} {iid}; cannot value it")
            per_class[other.asset_class] = per_class.get(other.asset_class, _ZERO) + \
                other.notional(mark, abs(held)) * rate
        asset_class = instrument.asset_class
        # instrument.notional(ref_price, |position after|), inlined: the same product
        order_notional = abs(ref_price) * abs(position + signed) * instrument.multiplier * fx
        class_total = per_class[asset_class] = per_class.get(asset_class, _ZERO) + order_notional
        class_limit = limits.class_limits.get(asset_class)
        if class_limit is not None and class_total > class_limit:
            return RiskDecision(_REJECT, "exposure",
                                f"exposure: {asset_class} gross notional after the order would be "
                                f"{class_total:.2f} {account} > limit {class_limit}")
        gross = sum(per_class.values(), _ZERO)
        gross_limit = self.config.max_gross_exposure
        if gross_limit is not None and gross > gross_limit:
            return RiskDecision(_REJECT, "exposure",
                                f"exposure: gross notional after the order would be {gross:.2f} {account} > limit "
                                f"{gross_limit}")
        return None

    def _check_rate(self, ctx: RiskContext) -> RiskDecision | None:
        sent = self.orders_in_window(ctx.now_ns, ctx.recent_order_ts_ns)
        limit = self.config.max_orders_per_minute
        if sent >= limit:
            return RiskDecision(_REJECT, "order_rate",
                                f"order rate: {sent} orders sent in the last 60 s, max_orders_per_minute {limit}")
        return None

    def _check_pdt(self, instrument: Instrument, ctx: RiskContext) -> RiskDecision | None:
        cfg = self.config
        margin = cfg.equity_margin_account if ctx.margin_account is None else ctx.margin_account
        if (instrument.asset_class is not _EQUITY or not margin or not ctx.is_day_trade
                or ctx.equity >= cfg.pdt_equity_threshold or ctx.day_trades_last_5_days < cfg.max_day_trades):
            return None
        return RiskDecision(_REJECT, "pdt",
                            f"pattern day trader rule: {ctx.day_trades_last_5_days} day trades in the last "
                            f"{cfg.pdt_window_days} business days and equity {ctx.equity} < "
                            f"{cfg.pdt_equity_threshold} in a margin account; this would be day trade "
                            f"{ctx.day_trades_last_5_days + 1} (max {cfg.max_day_trades})")
