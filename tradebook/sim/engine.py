"""Event-driven face of the paper-fill simulator: orders filled against a feed as it arrives.

Why this file is long: :class:`SimEngine` is one state machine (working orders, the quote
in force, the walk's state, listeners) run in a hot loop; its methods share that state, and
splitting the class would spread one reading of the matching rules over several files.

:class:`SimEngine` is what the paper venue runs on a live or recorded feed: submit,
cancel and replace requests go in with their timestamps, quotes and trades go in as
they arrive (one row or a batch of rows at a time), fills come out. It implements the
matching rules written in :mod:`tradebook.sim.orders` (the contract; read them there)
and gives the same fills as the vectorized face (:mod:`tradebook.sim.vectorized`),
because both take liquidity with the same compiled primitives
(:func:`~tradebook.sim.walk.walk_book` for the whole model, which walks the
L1-implied book, :func:`~tradebook.sim.orders.take_liquidity` for a cost curve alone)
and draw latencies with :func:`~tradebook.sim.orders.latency_ns`. :func:`replay` runs the engine
over recorded frames and returns a :class:`SimResult`.

Speed: a batch of quotes is not walked row by row in Python. A compiled scan
(:func:`_next_event`) finds the next row at which anything can happen to a working
order (a valid quote while an order is taking, a stop's trigger, a quote through a
resting limit on a feed without trades, a trade at or through a resting limit that
fills it) and stops before the next request arrival or expiry; Python handles that
event and the scan goes on. Trades at a resting limit that only shorten the queue
ahead are applied inside the scan.

Readings of the rules where they leave room (the vectorized face makes the same ones):

- Invalid quotes (crossed, locked, one-sided, no sizes) are skipped: nothing takes,
  triggers, rests or fills at them. An order that becomes active with no valid quote
  in force waits for the next valid one (IOC and FOK are cancelled instead); a limit
  order is then marketable or rests with its queue from that quote.
- IOC and FOK apply when an order becomes active: its arrival (or a replace), or for
  stops the trigger. A triggered stop-limit is a limit order arriving at the trigger
  quote: marketable there, or resting with its queue from that quote.
- Queue at a resting limit: trades at the limit with the other side as aggressor
  shorten the queue ahead one trade at a time; the part of a trade beyond the queue
  fills the order in whole lots (floored per trade; the last fill completes it).
  Prices are "at" the limit within ``PRICE_RTOL`` (relative); marketable, stop and
  quote-through tests compare exactly (prices are on the tick grid).
- A cancel or replace reaching the venue before its order does has no effect (the
  venue does not know the order yet); one reaching a completed order is too late.
  A replace whose new quantity does not exceed what has filled is ignored. Only limit
  and stop-limit orders can be replaced (their limit and/or quantity).
- An order expires at its expiry time (``done_ts_ns`` is the expiry), before any
  event stamped at or after it; an order arriving at or after its expiry is expired.
- A feed without trades (``feed_has_trades=False``; in :func:`replay`, ``trades``
  None or empty) fills resting orders by the quote rule only: ``quote_fill_rule``
  ``"through"`` (the far touch strictly past the limit; the default for spot FX) or
  ``"touch"`` (reaching it; the default elsewhere), see :func:`tradebook.sim.truth.quote_fill_rule_of`.
- Fees: ``|quantity * price * multiplier|`` times the role's bps, plus the per-unit
  charge. Fills are listed by (ts_ns, order), in the order they happened.
- :func:`replay` processes every request (also those arriving after the last data
  row, against the last quote) and ends at the later of the last data row and the
  last arrival. A request row's ``expire_ts_ns`` >= 0 overrides the order's expiry
  (a good-till-time order); -1 or empty keeps the time in force's own.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable

import numba
import numpy as np
import pandas as pd

from tradebook.errors import ConfigError, DataError, OrderError
from tradebook.model.instruments import Instrument, get_instrument
from tradebook.sim.book import as_ns_array
from tradebook.sim.fill_model import FillModel
from tradebook.sim.truth import check_quote_fill_rule, quote_fill_rule_of
from tradebook.sim.orders import (  # noqa: F401 - frame helpers and columns re-exported for compatibility
    ACTIONS,
    FILL_COLUMNS,
    LOT_DUST,
    NEVER_NS,
    ORDER_COLUMNS,
    PRICE_RTOL,
    REQUEST_COLUMNS,
    OrderSpec,
    OrderStatus,
    OrderType,
    SimResult,
    TimeInForce,
    check_non_decreasing,
    checked_instrument,
    checked_replace,
    is_given,
    latency_ns,
    order_maker,
    order_refs,
    quote_arrays,
    request_action,
    request_latency_ns,
    requests_frame,
    queue_ahead,
    queue_ahead_book,
    take_liquidity,
    trade_arrays,
    trade_at_limit,
    book_levels,
)
from tradebook.sim.walk import TOUCH_STATE, fold_touch_unit, touch_unit_at, walk_book, walk_params

# What a working order waits for (its phase).
_NONE, _TAKING, _RESTING, _STOP = 0, 1, 2, 3


# -- compiled scan ----------------------------------------------------------------------
@numba.njit(cache=True, nogil=True)
def _next_event(q_ts, q_bid, q_ask, q_bid_sz, q_ask_sz, t_ts, t_px, t_sz, t_aggressor, iq, it, bound,
                thresholds, resting):  # pragma: no cover - compiled
    """First quote (kind 0) or trade (kind 1) stamped before ``bound`` that needs Python; kind 2: none.

    Quotes and trades are merged in time order, quotes first at equal times.
    ``thresholds``: [any order taking, lowest buy stop, highest sell stop, highest
    resting buy limit, lowest resting sell limit] (the last two for feeds without
    trades; neutral values when there is none). ``resting``: one row per resting
    order on a feed with trades, (side, limit, queue ahead or NaN); trades that only
    shorten a queue are applied here (column 2 is updated in place).
    """
    n_q, n_t, m = len(q_ts), len(t_ts), resting.shape[0]
    taking = thresholds[0] > 0.5
    buy_stop, sell_stop, buy_limit, sell_limit = thresholds[1], thresholds[2], thresholds[3], thresholds[4]
    never = np.iinfo(np.int64).max
    while True:
        tq = q_ts[iq] if iq < n_q else never
        tt = t_ts[it] if it < n_t else never
        if iq < n_q and tq <= tt:
            if tq >= bound:
                return 2, iq, it
            bid, ask = q_bid[iq], q_ask[iq]
            if bid < ask and q_bid_sz[iq] > 0.0 and q_ask_sz[iq] > 0.0 and math.isfinite(bid) \
                    and math.isfinite(ask):
                if taking or ask >= buy_stop or bid <= sell_stop or ask <= buy_limit or bid >= sell_limit:
                    return 0, iq, it
            iq += 1
        elif it < n_t:
            if tt >= bound:
                return 2, iq, it
            px, size, aggressor = t_px[it], t_sz[it], t_aggressor[it]
            act = False
            for r in range(m):
                side, limit, queue = resting[r, 0], resting[r, 1], resting[r, 2]
                tol = PRICE_RTOL * abs(limit)
                if (side > 0 and px < limit - tol) or (side < 0 and px > limit + tol):
                    act = True
                    break
                if abs(px - limit) <= tol and aggressor == -side and not math.isnan(queue):
                    if not (queue > 0.0 and size <= queue):
                        act = True
                        break
            if act:
                return 1, iq, it
            for r in range(m):
                side, limit, queue = resting[r, 0], resting[r, 1], resting[r, 2]
                if abs(px - limit) <= PRICE_RTOL * abs(limit) and aggressor == -side and not math.isnan(queue):
                    resting[r, 2] = queue - size
            it += 1
        else:
            return 2, iq, it


# -- order state --------------------------------------------------------------------------
class EngineOrder:
    """One order's live state inside the engine (what :meth:`SimEngine.order` reports as a dict).

    Listeners given ``on_fill_state``/``on_status_state`` read it (``oid``, ``side``,
    ``quantity``, ``limit``, ``stop``, ``filled``, ``remaining``, ``status``,
    ``arrival_ts``, ``done_ts``...) during the call; they must never change it.
    """

    __slots__ = ("oid", "k", "side", "order_type", "has_limit", "tif", "quantity", "limit", "stop", "expire",
                 "remaining", "filled", "notional", "queue", "phase", "triggered", "status", "submit_ts", "arrival_ts",
                 "done_ts", "report_latency", "slot", "depleted", "take_ts", "takes")

    def __init__(self, oid: int, k: int, spec: OrderSpec, ts_ns: int, report_latency: int) -> None:
        self.oid, self.k = oid, k
        self.side = spec.side
        self.order_type = spec.order_type
        self.has_limit = spec.order_type in (OrderType.LIMIT, OrderType.STOP_LIMIT)  # the type never changes
        self.tif = spec.tif
        self.quantity = spec.quantity
        self.limit = spec.limit_px
        self.stop = spec.stop_px
        self.expire = spec.expire_ts_ns
        self.remaining = spec.quantity
        self.filled = 0.0
        self.notional = 0.0
        self.queue = math.nan
        self.phase = _NONE
        self.triggered = False
        self.status = OrderStatus.PENDING
        self.submit_ts, self.arrival_ts, self.done_ts = ts_ns, -1, -1
        self.report_latency = report_latency
        self.slot = -1
        # the walk's state: units of the book this order has taken and not yet seen refill, when, how often
        self.depleted = 0.0
        self.take_ts = 0
        self.takes = 0

    def record(self) -> dict:
        return {
            "order_id": self.oid, "side": self.side, "order_type": self.order_type.value, "tif": self.tif.value,
            "quantity": self.quantity, "limit_px": self.limit, "stop_px": self.stop, "status": self.status.value,
            "filled_qty": self.filled, "avg_price": self.notional / self.filled if self.filled > 0 else math.nan,
            "submit_ts_ns": self.submit_ts, "arrival_ts_ns": self.arrival_ts, "done_ts_ns": self.done_ts,
        }


def _as_float_array(values, what: str, n: int | None) -> np.ndarray:
    if values.__class__ is float and n == 1:
        return np.array((values,))  # one row of a live feed: what the conversion below makes of it
    array = np.atleast_1d(np.asarray(values, dtype=np.float64))
    if array.ndim != 1:
        raise DataError(f"{what} must be a scalar or a 1-D array, got shape {array.shape}")
    if n is not None and len(array) != n:
        raise DataError(f"{what} has {len(array)} values for {n} timestamps; expected one per ts_ns")
    return array


_INT64_MIN = int(np.iinfo(np.int64).min)
_MAX_LEVELS = 256  # most levels behind the touch a top-N feed may carry to the walk
_EMPTY_I64 = np.zeros(0, np.int64)
_EMPTY_F64 = np.zeros(0, np.float64)
_NO_QUOTES = (_EMPTY_I64, _EMPTY_F64, _EMPTY_F64, _EMPTY_F64, _EMPTY_F64)  # a _run with trades only
_NO_TRADES = (_EMPTY_I64, _EMPTY_F64, _EMPTY_F64, _EMPTY_F64)  # ... with quotes only
# The scan's inputs when no order works (what _rebuild computes then); the scan never writes to either:
# thresholds are read only, and a resting table without rows has nothing to update.
_NEUTRAL_THRESHOLDS = np.array([0.0, math.inf, -math.inf, -math.inf, math.inf])
_NO_RESTING = np.zeros((0, 3))


class SimEngine:
    """Fills orders for one instrument against quotes and trades as they arrive.

    Requests (:meth:`submit`, :meth:`cancel`, :meth:`replace`) are numbered 0, 1, 2...
    in the order they are made and reach the venue after their submit-to-ack latency;
    market data stamped at or before an arrival is processed before it, so a request
    waits until data stamped later arrives or :meth:`advance_to` says time has passed.
    Timestamps never go backwards: data batches are non-decreasing and start at or
    after the last data or :meth:`advance_to` time; requests are stamped at or after
    the last request and the last data. ``on_fill(fill)`` and ``on_status(order)``,
    when given, are called with a fill's record and an order's record as they happen.
    ``on_fill_state(order, fill_row)`` and ``on_status_state(order)`` are called at the
    same moments (before the record callbacks) with the live :class:`EngineOrder` and the
    fill's row (a tuple in ``FILL_COLUMNS`` order): no dict is built per event, for a
    caller on the order path (the paper venue).
    """

    def __init__(self, model: FillModel, instrument: Instrument | str, *, seed: int = 0,
                 feed_has_trades: bool = True, on_fill: Callable[[dict], None] | None = None,
                 on_status: Callable[[dict], None] | None = None,
                 on_fill_state: Callable[[EngineOrder, tuple], None] | None = None,
                 on_status_state: Callable[[EngineOrder], None] | None = None,
                 quote_fill_rule: str | None = None) -> None:
        instrument = checked_instrument(model, instrument, seed)
        self.model = model
        self.instrument = instrument
        self.seed = int(seed)
        self.feed_has_trades = bool(feed_has_trades)
        # resting orders on a feed without trades: 'through' (the far touch passes the limit) or
        # 'touch' (reaches it); None: the model's, by default 'through' for spot FX (truth.quote_fill_rule_of)
        self.quote_fill_rule = (check_quote_fill_rule(quote_fill_rule) if quote_fill_rule is not None
                                else quote_fill_rule_of(model, instrument))
        self._quote_through = self.quote_fill_rule == "through"
        self._on_fill, self._on_status = on_fill, on_status
        self._on_fill_state, self._on_status_state = on_fill_state, on_status_state
        self._instrument_id = instrument.instrument_id
        take = model.take_params(float(instrument.lot_size))
        self._take_args = (take.edges, take.ratios, take.slippage_bps, take.max_take_over_touch, take.lot)
        self._lot = take.lot
        # the whole model: marketable orders walk the L1-implied book (None: the cost curve prices them)
        self.walk = walk_params(model, instrument)
        if self.walk is not None:
            walk = self.walk
            self._walk_args = (walk.offsets_ticks, walk.sizes,
                               np.array([walk.tick, walk.refill_per_ns, walk.refill_unit, walk.improve_share,
                                         walk.improve_ratio]), take.slippage_bps, take.lot,
                               np.empty(len(walk.sizes) + 1 + _MAX_LEVELS),
                               np.empty(len(walk.sizes) + 1 + _MAX_LEVELS))
        # the instrument's recent touch size (the ladder's unit when the depth profile carries), from every
        # quote this engine sees: folded row by row as takes need it and at the end of each batch
        self._unit_tau = self.walk.unit_tau_ns if self.walk is not None else 0
        self._touch_state, self._touch_ts = np.zeros(TOUCH_STATE), np.zeros(1, np.int64)
        self._batch: tuple | None = None
        self._folded = 0  # rows of the current batch already folded
        self._row = -1  # the current batch's row in force (-1: none of this batch)
        # a top-N feed's levels behind the touch: the current batch's (bid_px, bid_sz, ask_px, ask_sz) rows, and
        # the levels of the quote in force when no row of the batch is (the last row of an earlier batch)
        self._levels: tuple | None = None
        self._held_levels = (_EMPTY_F64, _EMPTY_F64, _EMPTY_F64, _EMPTY_F64)
        self._multiplier = float(instrument.multiplier)
        fees = model.fees
        self._maker_bps, self._taker_bps, self._per_unit = float(fees.maker_bps), float(fees.taker_bps), \
            float(fees.per_unit)
        lat = model.latency
        self._ack_median, self._fill_median, self._sigma = int(lat.submit_to_ack_median_ns), \
            int(lat.ack_to_fill_median_ns), float(lat.sigma)
        # without spread every draw is the median (what request_latency_ns gives then): no call per request
        self._fixed_latency = self._sigma <= 0.0

        self._orders: list[EngineOrder] = []
        self._n_requests = 0
        self._pending: list[tuple] = []  # heap of (arrival, k, action, order id, new quantity, new limit)
        self._expiries: list[tuple[int, int]] = []  # heap of (expiry, order id) of working orders
        self._active: dict[int, EngineOrder] = {}  # working orders at the venue
        self._fills: list[tuple] = []
        self._clock = -NEVER_NS  # latest data / advance_to time seen
        self._last_request_ts = -NEVER_NS
        self.last_arrival_ns = -NEVER_NS  # when the latest request reaches the venue (its caller's mirror reads it)
        self._bid = self._ask = self._bid_sz = self._ask_sz = math.nan
        self._valid = False
        self._dirty = True
        self._thresholds = np.zeros(5)
        self._resting = np.zeros((0, 3))
        self._resting_orders: list[EngineOrder] = []

    # -- requests ------------------------------------------------------------------------
    def _request_time(self, ts_ns: int) -> int:
        if ts_ns.__class__ is int:
            ts = ts_ns  # the paper venue's case: what the checks and the conversion below pass and give
        else:
            if isinstance(ts_ns, bool) or not isinstance(ts_ns, (int, np.integer)):
                raise DataError(f"request ts_ns is {ts_ns!r}; expected int64 nanoseconds since the epoch, UTC")
            ts = int(ts_ns)
        if ts < self._last_request_ts or ts < self._clock:
            raise DataError(f"request at ts_ns {ts} goes backwards: requests up to {self._last_request_ts} and "
                            f"market data up to {self._clock} were already given; expected a later time")
        return ts

    def _enqueue(self, ts: int, action: str, oid: int, quantity: float = math.nan, limit: float = math.nan) -> int:
        k = self._n_requests
        self._n_requests += 1
        self._last_request_ts = ts
        arrival = ts + (self._ack_median if self._fixed_latency else
                        request_latency_ns(self.seed, k, 0, self._ack_median, self._sigma))
        heapq.heappush(self._pending, (arrival, k, action, oid, quantity, limit))
        self.last_arrival_ns = arrival
        return k

    def submit(self, order: OrderSpec, ts_ns: int) -> int:
        """Submit ``order`` (built by :func:`~tradebook.sim.orders.make_order`) at ``ts_ns``; returns its id."""
        if order.__class__ is not OrderSpec and not isinstance(order, OrderSpec):
            raise OrderError(f"order is a {type(order).__name__}; expected an OrderSpec from make_order()")
        if order.instrument_id != self._instrument_id:
            raise OrderError(f"order is for {order.instrument_id}; this engine fills {self.instrument.instrument_id}")
        # _request_time, inlined for the paper venue's case (an int at or after earlier requests and data)
        if ts_ns.__class__ is int and ts_ns >= self._last_request_ts and ts_ns >= self._clock:
            ts = ts_ns
        else:
            ts = self._request_time(ts_ns)  # converts, or raises saying why
        oid = len(self._orders)
        k = self._n_requests
        if self._fixed_latency:
            report, arrival = self._fill_median, ts + self._ack_median
        else:
            report = request_latency_ns(self.seed, k, 1, self._fill_median, self._sigma)
            arrival = ts + request_latency_ns(self.seed, k, 0, self._ack_median, self._sigma)
        self._orders.append(EngineOrder(oid, k, order, ts, report))
        # _enqueue, inlined
        self._n_requests = k + 1
        self._last_request_ts = ts
        heapq.heappush(self._pending, (arrival, k, "submit", oid, math.nan, math.nan))
        self.last_arrival_ns = arrival
        return oid

    def _known(self, order_id: int) -> EngineOrder:
        if isinstance(order_id, bool) or not isinstance(order_id, (int, np.integer)) \
                or not 0 <= int(order_id) < len(self._orders):
            raise OrderError(f"order id {order_id!r} unknown; expected one returned by submit() "
                             f"(0..{len(self._orders) - 1})")
        return self._orders[int(order_id)]

    def cancel(self, order_id: int, ts_ns: int) -> None:
        """Request the cancellation of ``order_id`` at ``ts_ns`` (too late if it completes before arriving)."""
        order = self._known(order_id)
        self._enqueue(self._request_time(ts_ns), "cancel", order.oid)

    def replace(self, order_id: int, ts_ns: int, *, limit_px: float | None = None,
                quantity: float | None = None) -> None:
        """Request a new limit and/or total quantity for a limit or stop-limit order, at ``ts_ns``."""
        order = self._known(order_id)
        ts = self._request_time(ts_ns)
        new_quantity, new_limit = self._checked_replace(order, limit_px, quantity, ts)
        self._enqueue(ts, "replace", order.oid, new_quantity, new_limit)

    def _checked_replace(self, order: EngineOrder, limit_px, quantity, ts_ns: int) -> tuple[float, float]:
        current = OrderSpec(self.instrument.instrument_id, order.side, order.quantity, order.order_type,
                            limit_px=order.limit, stop_px=order.stop, tif=order.tif)
        return checked_replace(self.instrument, current, limit_px, quantity, ts_ns, f"replace of order {order.oid}")

    # -- market data ---------------------------------------------------------------------
    def _data_time(self, ts_ns, what: str) -> np.ndarray:
        if ts_ns.__class__ is int and _INT64_MIN <= ts_ns <= NEVER_NS:
            ts = np.array((ts_ns,), np.int64)  # one row of a live feed: what as_ns_array makes of it
        else:
            ts = as_ns_array(ts_ns, f"{what} ts_ns")
        if len(ts) > 1:
            check_non_decreasing(ts, what)
        if len(ts) and ts[0] < self._clock:
            raise DataError(f"{what} ts_ns {int(ts[0])} goes backwards: data or advance_to up to {self._clock} "
                            "was already processed; expected non-decreasing ts_ns")
        return ts

    def on_quotes(self, ts_ns, bid_px, ask_px, bid_sz, ask_sz, *, levels: tuple | None = None) -> None:
        """Process L1 quotes: scalars for one quote, or equal-length 1-D arrays for a batch in time order.

        ``levels``, where the feed carries the book: (bid_px, bid_sz, ask_px, ask_sz) of the
        levels behind the touch, each rows x levels (:func:`~tradebook.sim.orders.book_levels`
        of a top-N frame); marketable orders walk them and resting orders queue behind them
        (with the whole model; a cost curve alone ignores them).
        """
        rows = self._quote_rows(ts_ns, bid_px, ask_px, bid_sz, ask_sz)
        self._run(*rows, *_NO_TRADES, levels=self._checked_levels(levels, len(rows[0])))

    def _checked_levels(self, levels: tuple | None, n: int) -> tuple | None:
        if levels is None or self.walk is None:
            return None
        if not isinstance(levels, tuple) or len(levels) != 4:
            raise DataError("levels must be a tuple (bid_px, bid_sz, ask_px, ask_sz) of rows x levels arrays")
        arrays = tuple(np.ascontiguousarray(np.atleast_2d(np.asarray(a, dtype=np.float64))) for a in levels)
        shape = arrays[0].shape
        if any(a.shape != shape for a in arrays) or shape[0] != n or shape[1] > _MAX_LEVELS:
            raise DataError(f"levels have shapes {[a.shape for a in arrays]}; expected four arrays of {n} rows "
                            f"(one per quote) x the same number of levels (at most {_MAX_LEVELS})")
        return arrays

    def on_trades(self, ts_ns, price, size, aggressor) -> None:
        """Process trades (aggressor +1 buyer, -1 seller, 0 unknown): scalars or 1-D arrays in time order."""
        self._require_trades()
        self._run(*_NO_QUOTES, *self._trade_rows(ts_ns, price, size, aggressor))

    def on_data(self, quotes: tuple | None, trades: tuple | None, *, levels: tuple | None = None) -> None:
        """Quotes and trades of one stretch of time at once, merged here (quotes first at equal times).

        ``quotes``: (ts_ns, bid_px, ask_px, bid_sz, ask_sz) arrays; ``trades``: (ts_ns, price,
        size, aggressor) arrays; either may be None. The same fills as calling
        :meth:`on_quotes` and :meth:`on_trades` on the runs of each in time order, in one pass.
        ``levels``: the book behind each quote's touch, as for :meth:`on_quotes`.
        """
        has_trades = trades is not None and len(trades[0])
        if has_trades:
            self._require_trades()
        q_rows = self._quote_rows(*quotes) if quotes is not None else _NO_QUOTES
        t_rows = self._trade_rows(*trades) if has_trades else _NO_TRADES
        if len(q_rows[0]) or len(t_rows[0]):
            self._run(*q_rows, *t_rows, levels=self._checked_levels(levels, len(q_rows[0])) if len(q_rows[0])
                      else None)

    def _require_trades(self) -> None:
        if not self.feed_has_trades:
            raise ConfigError("this engine was built with feed_has_trades=False (resting orders fill by the quote "
                              "rule); expected no trades, or build it with feed_has_trades=True")

    def _quote_rows(self, ts_ns, bid_px, ask_px, bid_sz, ask_sz) -> tuple[np.ndarray, ...]:
        """Checked quote columns: (ts, bid, ask, bid size, ask size) arrays."""
        ts = self._data_time(ts_ns, "quotes")
        n = len(ts)
        return (ts, *(_as_float_array(v, name, n) for v, name in
                      ((bid_px, "bid_px"), (ask_px, "ask_px"), (bid_sz, "bid_sz"), (ask_sz, "ask_sz"))))

    def _trade_rows(self, ts_ns, price, size, aggressor) -> tuple[np.ndarray, ...]:
        """Checked trade columns: (ts, price, size, aggressor) arrays."""
        ts = self._data_time(ts_ns, "trades")
        n = len(ts)
        px = _as_float_array(price, "price", n)
        sz = _as_float_array(size, "size", n)
        side = _as_float_array(aggressor, "aggressor", n)
        if not np.isin(side, (-1.0, 0.0, 1.0)).all():
            raise DataError("trade aggressor must be +1 (buyer), -1 (seller) or 0 (unknown)")
        return ts, px, sz, side

    def prevailing_quote(self) -> tuple[int, float, float, float, float] | None:
        """(engine time, bid, ask, bid size, ask size) of the quote in force, or None before a valid one."""
        if not self._valid:
            return None
        return self._clock, self._bid, self._ask, self._bid_sz, self._ask_sz

    def advance_to(self, ts_ns: int) -> None:
        """Let time pass to ``ts_ns`` with no new data: requests arriving and orders expiring by then are processed."""
        if isinstance(ts_ns, bool) or not isinstance(ts_ns, (int, np.integer)):
            raise DataError(f"advance_to ts_ns is {ts_ns!r}; expected int64 nanoseconds since the epoch, UTC")
        ts = int(ts_ns)
        if ts < self._clock:
            raise DataError(f"advance_to({ts}) goes backwards: data or advance_to up to {self._clock} was already "
                            "processed; expected a later time")
        while True:
            arrival = self._pending[0][0] if self._pending else NEVER_NS
            expiry = self._next_expiry()
            if min(arrival, expiry) > ts or min(arrival, expiry) == NEVER_NS:
                break
            self._time_event(arrival, expiry)
        self._clock = ts

    # -- the loop ------------------------------------------------------------------------
    def _next_expiry(self) -> int:
        heap = self._expiries
        while heap and self._orders[heap[0][1]].status is not OrderStatus.WORKING:
            heapq.heappop(heap)
        return heap[0][0] if heap else NEVER_NS

    def _run(self, q_ts, q_bid, q_ask, q_bid_sz, q_ask_sz, t_ts, t_px, t_sz, t_aggressor,
             levels: tuple | None = None) -> None:
        n_q, n_t = len(q_ts), len(t_ts)
        iq = it = 0
        applied = -1  # last quote row made the prevailing quote
        self._row = -1
        if n_q:
            self._levels = levels
        if self._unit_tau:
            self._batch, self._folded = (q_ts, q_bid_sz, q_ask_sz), 0
        pending = self._pending
        next_row_ts = None  # stamp of row (iq, it), as an int; None after either moves
        while True:
            arrival = pending[0][0] if pending else NEVER_NS
            expiry = self._next_expiry() if self._expiries else NEVER_NS
            bound = expiry if expiry <= arrival else min(arrival + 1, NEVER_NS)
            if self._dirty:
                self._rebuild()
            if next_row_ts is None:
                next_row_ts = min(int(q_ts[iq]) if iq < n_q else NEVER_NS, int(t_ts[it]) if it < n_t else NEVER_NS)
            if next_row_ts >= bound:
                kind = 2  # what the scan answers at once when the next row is at or after the bound
            else:
                kind, iq, it = _next_event(q_ts, q_bid, q_ask, q_bid_sz, q_ask_sz, t_ts, t_px, t_sz, t_aggressor,
                                           iq, it, bound, self._thresholds, self._resting)
                next_row_ts = None
            if kind == 0:
                self._set_quote(q_bid[iq], q_ask[iq], q_bid_sz[iq], q_ask_sz[iq])
                applied = self._row = iq
                self._on_quote(int(q_ts[iq]))
                iq += 1
            elif kind == 1:
                self._on_trade(int(t_ts[it]), float(t_px[it]), float(t_sz[it]), int(t_aggressor[it]))
                it += 1
            else:
                if iq - 1 > applied:
                    applied = iq - 1
                    self._set_quote(q_bid[applied], q_ask[applied], q_bid_sz[applied], q_ask_sz[applied])
                if iq >= n_q and it >= n_t:
                    break
                self._row = applied
                self._time_event(arrival, expiry)  # the next data row is stamped at or after it
        if self._unit_tau:
            if n_q > self._folded:
                fold_touch_unit(q_ts, q_bid_sz, q_ask_sz, self._folded, n_q, self._touch_state, self._touch_ts,
                                float(self._unit_tau))
            self._batch = None
        if n_q:
            if levels is not None:
                self._held_levels = tuple(np.array(side[n_q - 1]) for side in levels)
            else:
                self._held_levels = (_EMPTY_F64, _EMPTY_F64, _EMPTY_F64, _EMPTY_F64)
            self._levels = None
        self._row = -1
        last = max(int(q_ts[-1]) if n_q else -NEVER_NS, int(t_ts[-1]) if n_t else -NEVER_NS)
        self._clock = max(self._clock, last)

    def _set_quote(self, bid, ask, bid_sz, ask_sz) -> None:
        self._bid, self._ask, self._bid_sz, self._ask_sz = float(bid), float(ask), float(bid_sz), float(ask_sz)
        self._valid = bid < ask and bid_sz > 0.0 and ask_sz > 0.0 and math.isfinite(bid) and math.isfinite(ask)

    def _rebuild(self) -> None:
        # Thresholds of the compiled scan from the working orders' phases.
        if not self._active and not self._resting_orders:
            # nothing working (a market order filled on arrival): the neutral scan, without building arrays
            self._thresholds, self._resting = _NEUTRAL_THRESHOLDS, _NO_RESTING
            self._dirty = False
            return
        taking, buy_stop, sell_stop, buy_limit, sell_limit = 0.0, math.inf, -math.inf, -math.inf, math.inf
        resting: list[EngineOrder] = []
        for order in self._active.values():
            if order.phase == _TAKING:
                taking = 1.0
            elif order.phase == _STOP:
                if order.side > 0:
                    buy_stop = min(buy_stop, order.stop)
                else:
                    sell_stop = max(sell_stop, order.stop)
            elif order.phase == _RESTING:
                if self.feed_has_trades:
                    resting.append(order)
                elif order.side > 0:
                    buy_limit = max(buy_limit, order.limit)
                else:
                    sell_limit = min(sell_limit, order.limit)
        for order in self._resting_orders:  # queues live in the array while an order rests
            if order.slot >= 0:
                order.queue = float(self._resting[order.slot, 2])
                order.slot = -1
        table = np.empty((len(resting), 3))
        for slot, order in enumerate(resting):
            order.slot = slot
            table[slot] = (order.side, order.limit, order.queue)
        self._thresholds = np.array([taking, buy_stop, sell_stop, buy_limit, sell_limit])
        self._resting = table
        self._resting_orders = resting
        self._dirty = False

    def _time_event(self, arrival: int, expiry: int) -> None:
        if expiry <= arrival:
            _, oid = heapq.heappop(self._expiries)
            self._finish(self._orders[oid], OrderStatus.EXPIRED, expiry)
            return
        arrival, k, action, oid, quantity, limit = heapq.heappop(self._pending)
        order = self._orders[oid]
        if action == "submit":
            order.arrival_ts = arrival
            if 0 <= order.expire <= arrival:
                self._finish(order, OrderStatus.EXPIRED, order.expire)
                return
            order.status = OrderStatus.WORKING  # then the listeners, as _finish calls them
            if self._on_status_state is not None:
                self._on_status_state(order)
            if self._on_status is not None:
                self._on_status(order.record())
            self._arrive(order, arrival)
            if order.status is OrderStatus.WORKING:
                self._active[oid] = order
                self._dirty = True
                if order.expire >= 0:
                    heapq.heappush(self._expiries, (order.expire, oid))
            return
        if order.status is not OrderStatus.WORKING:
            return  # too late (completed) or too early (the venue does not know the order yet)
        if action == "cancel":
            self._finish(order, OrderStatus.CANCELLED, arrival)
            return
        if not math.isnan(quantity):
            if quantity - order.filled <= LOT_DUST * self._lot:
                return  # the new total must exceed what has filled: refused
            order.quantity = quantity
            order.remaining = quantity - order.filled
        if not math.isnan(limit):
            order.limit = limit
        self._leave_phase(order)
        self._arrive(order, arrival)

    # -- matching ------------------------------------------------------------------------
    def _leave_phase(self, order: EngineOrder) -> None:
        if order.phase == _RESTING and order.slot >= 0:
            order.slot = -1
        order.phase = _NONE
        order.queue = math.nan
        self._dirty = True

    def _arrive(self, order: EngineOrder, ts: int) -> None:
        if order.order_type in (OrderType.STOP, OrderType.STOP_LIMIT) and not order.triggered:
            if not self._stop_triggered(order):
                order.phase = _STOP
                return
            order.triggered = True
        self._activate(order, ts)

    def _stop_triggered(self, order: EngineOrder) -> bool:
        if not self._valid:
            return False
        return (order.side > 0 and self._ask >= order.stop) or (order.side < 0 and self._bid <= order.stop)

    def _marketable(self, order: EngineOrder) -> bool:
        return (order.side > 0 and order.limit >= self._ask) or (order.side < 0 and order.limit <= self._bid)

    def _take_quote(self, order: EngineOrder) -> tuple[float, float]:
        limit = order.limit if order.has_limit else math.nan
        return take_liquidity(order.side, order.remaining, limit, self._bid, self._ask, self._bid_sz, self._ask_sz,
                              *self._take_args)

    def _activate(self, order: EngineOrder, ts: int) -> None:
        # The order becomes active at ts (arrival, replace or a stop's trigger): IOC and FOK decide here.
        tif = order.tif
        if not self._valid:
            if tif in (TimeInForce.IOC, TimeInForce.FOK):
                self._finish(order, OrderStatus.CANCELLED, ts)
            else:
                order.phase = _TAKING
            return
        if tif is TimeInForce.FOK:
            if order.has_limit and not self._marketable(order):
                self._finish(order, OrderStatus.CANCELLED, ts)
                return
            if self.walk is not None:
                n, depleted = self._walk_quote(order, ts)
                out_qty, out_px = self._walk_args[5], self._walk_args[6]
                if n == 0 or order.remaining - float(out_qty[:n].sum()) > LOT_DUST * self._lot:
                    self._finish(order, OrderStatus.CANCELLED, ts)
                    return
                self._walk_fills(order, ts, n, depleted)
                return
            qty, price = self._take_quote(order)
            if not qty > 0.0 or order.remaining - qty > LOT_DUST * self._lot:
                self._finish(order, OrderStatus.CANCELLED, ts)
                return
            self._fill(order, ts, order.remaining, price, maker=False)
            return
        order.phase = _TAKING
        self._step_taking(order, ts)
        if tif is TimeInForce.IOC and order.status is OrderStatus.WORKING:
            self._finish(order, OrderStatus.CANCELLED, ts)

    def _step_taking(self, order: EngineOrder, ts: int) -> None:
        # At a valid quote: take while marketable, rest from the first moment it is not.
        if order.has_limit:
            if not self._marketable(order):
                self._rest(order)
                return
            limit = order.limit
        else:
            limit = math.nan
        if self.walk is not None:
            n, depleted = self._walk_quote(order, ts)
            if n:
                self._walk_fills(order, ts, n, depleted)
            return
        # _take_quote, inlined: once per order and quote while it takes
        qty, price = take_liquidity(order.side, order.remaining, limit, self._bid, self._ask, self._bid_sz,
                                    self._ask_sz, *self._take_args)
        if qty > 0.0:
            self._fill(order, ts, qty, price, maker=False)

    def _walk_quote(self, order: EngineOrder, ts: int) -> tuple[int, float]:
        # (fills written to the scratch arrays, the order's depletion after them) at the quote in force
        offsets, sizes, walk, slippage, lot, out_qty, out_px = self._walk_args
        unit = self._touch_unit(ts) if self._unit_tau else 1.0
        if self._levels is not None and self._row >= 0:
            levels = self._levels
            row = self._row
            px, sz = (levels[2][row], levels[3][row]) if order.side > 0 else (levels[0][row], levels[1][row])
        else:
            held = self._held_levels
            px, sz = (held[2], held[3]) if order.side > 0 else (held[0], held[1])
        return walk_book(order.side, order.remaining, order.limit if order.has_limit else math.nan, self._bid,
                         self._ask, self._bid_sz, self._ask_sz, ts, order.depleted, order.take_ts, self.seed, order.k,
                         order.takes, offsets, sizes, unit, walk, slippage, lot, out_qty, out_px, px, sz)

    def _touch_unit(self, ts: int) -> float:
        # the recent touch size at ts, from every quote up to the one in force
        tau = float(self._unit_tau)
        if self._batch is not None and self._row + 1 > self._folded:
            q_ts, q_bid_sz, q_ask_sz = self._batch
            fold_touch_unit(q_ts, q_bid_sz, q_ask_sz, self._folded, self._row + 1, self._touch_state, self._touch_ts,
                            tau)
            self._folded = self._row + 1
        return float(touch_unit_at(self._touch_state, self._touch_ts, ts, tau))

    def _walk_fills(self, order: EngineOrder, ts: int, n: int, depleted: float) -> None:
        order.depleted, order.take_ts, order.takes = depleted, ts, order.takes + 1
        out_qty, out_px = self._walk_args[5], self._walk_args[6]
        fills = [(float(out_qty[i]), float(out_px[i])) for i in range(n)]  # the listeners may walk again
        for qty, price in fills:
            self._fill(order, ts, qty, price, maker=False)

    def _rest(self, order: EngineOrder) -> None:
        # queue ahead from the quote that made the order passive
        if self._levels is None and self._held_levels[0].size == 0:
            order.queue = float(queue_ahead(order.side, order.limit, self._bid, self._ask, self._bid_sz,
                                            self._ask_sz))
        else:  # the feed carries the book: the queue behind the touch from its levels
            if self._levels is not None and self._row >= 0:
                levels, row = self._levels, self._row
                px, sz = (levels[0][row], levels[1][row]) if order.side > 0 else (levels[2][row], levels[3][row])
            else:
                held = self._held_levels
                px, sz = (held[0], held[1]) if order.side > 0 else (held[2], held[3])
            order.queue = float(queue_ahead_book(order.side, order.limit, self._bid, self._ask, self._bid_sz,
                                                 self._ask_sz, px, sz))
        order.phase = _RESTING
        order.slot = -1
        self._dirty = True

    def _on_quote(self, ts: int) -> None:
        for order in list(self._active.values()):
            phase = order.phase
            if phase == _TAKING:
                self._step_taking(order, ts)
            elif phase == _STOP:
                if self._stop_triggered(order):
                    order.triggered = True
                    self._dirty = True
                    self._activate(order, ts)
            elif phase == _RESTING and not self.feed_has_trades:
                limit = order.limit
                if self._quote_through:  # the far touch strictly past the limit (a tick, on the grid)
                    tol = PRICE_RTOL * abs(limit)
                    hit = (order.side > 0 and self._ask < limit - tol) or (order.side < 0 and self._bid > limit + tol)
                else:
                    hit = (order.side > 0 and self._ask <= limit) or (order.side < 0 and self._bid >= limit)
                if hit:
                    self._fill(order, ts, order.remaining, limit, maker=True)

    def _on_trade(self, ts: int, price: float, size: float, aggressor: int) -> None:
        table = self._resting
        for order in list(self._resting_orders):
            if order.phase != _RESTING or order.slot < 0 or order.status is not OrderStatus.WORKING:
                continue
            side, limit, slot = order.side, order.limit, order.slot
            tol = PRICE_RTOL * abs(limit)
            if (side > 0 and price < limit - tol) or (side < 0 and price > limit + tol):
                # printed through the limit: the order would have been hit first
                self._fill(order, ts, order.remaining, limit, maker=True)
                continue
            queue = table[slot, 2]
            if abs(price - limit) <= tol and aggressor == -side and not math.isnan(queue):
                table[slot, 2], qty = trade_at_limit(size, queue, order.remaining, self._lot)
                if qty > 0.0:
                    self._fill(order, ts, qty, limit, maker=True)

    def _fill(self, order: EngineOrder, ts: int, qty: float, price: float, *, maker: bool) -> None:
        notional = qty * price * self._multiplier
        bps = self._maker_bps if maker else self._taker_bps
        fee = abs(notional) * bps / 1e4 + abs(qty) * self._per_unit
        row = (order.oid, ts, ts + order.report_latency, order.side, qty, price, "maker" if maker else "taker", fee)
        self._fills.append(row)
        order.filled += qty
        order.notional += qty * price
        order.remaining -= qty
        if self._on_fill_state is not None:
            self._on_fill_state(order, row)
        if self._on_fill is not None:
            self._on_fill(dict(zip(FILL_COLUMNS, row)))
        if order.remaining <= LOT_DUST * self._lot:
            order.remaining = 0.0
            self._finish(order, OrderStatus.FILLED, ts)

    def _finish(self, order: EngineOrder, status: OrderStatus, ts: int) -> None:
        order.done_ts = ts
        if order.phase != _NONE:
            self._leave_phase(order)
        if self._active.pop(order.oid, None) is not None:
            self._dirty = True
        order.status = status  # then the listeners (a status change is reported here and at arrival)
        if self._on_status_state is not None:
            self._on_status_state(order)
        if self._on_status is not None:
            self._on_status(order.record())

    # -- results -------------------------------------------------------------------------
    @property
    def fills(self) -> pd.DataFrame:
        """Every fill so far, by (ts_ns, order_id): ``FILL_COLUMNS``."""
        frame = pd.DataFrame.from_records(self._fills, columns=list(FILL_COLUMNS)) if self._fills else \
            pd.DataFrame({c: pd.Series(dtype=d) for c, d in zip(FILL_COLUMNS, _FILL_DTYPES)})
        frame = frame.astype(dict(zip(FILL_COLUMNS, _FILL_DTYPES)))
        return frame.sort_values(["ts_ns", "order_id"], kind="stable").reset_index(drop=True)

    @property
    def orders(self) -> pd.DataFrame:
        """Every order's current state: ``ORDER_COLUMNS`` (times -1 where not reached)."""
        frame = pd.DataFrame([o.record() for o in self._orders], columns=list(ORDER_COLUMNS))
        return frame.astype(dict(zip(ORDER_COLUMNS, _ORDER_DTYPES)))

    def order(self, order_id: int) -> dict:
        """One order's current state (the fields of :attr:`orders`)."""
        return self._known(order_id).record()

    def order_state(self, order_id: int) -> EngineOrder:
        """One order's live state (read it, never change it): :meth:`order` without building a dict."""
        return self._known(order_id)


_FILL_DTYPES = ("int64", "int64", "int64", "int64", "float64", "float64", "str", "float64")
_ORDER_DTYPES = ("int64", "int64", "str", "str", "float64", "float64", "float64", "str", "float64",
                 "float64", "int64", "int64", "int64")


# -- frames in, SimResult out ----------------------------------------------------------------
def replay(model: FillModel, instrument: Instrument | str, quotes: pd.DataFrame, trades: pd.DataFrame | None,
           requests: pd.DataFrame, *, seed: int = 0, quote_fill_rule: str | None = None) -> SimResult:
    """Run the event engine over recorded ``quotes`` (and ``trades``; None for a feed without) and ``requests``.

    ``requests`` has ``REQUEST_COLUMNS`` (see :func:`requests_frame`); fills and orders
    come back keyed by ``order_ref``. Every request is checked before anything runs:
    DataError for unusable frames (empty or no valid quote, times going backwards,
    missing columns), OrderError for unknown actions or order_refs and bad quantities,
    ConformanceError for prices or sizes off the instrument's grids.
    """
    if isinstance(instrument, str):
        instrument = get_instrument(instrument)
    q = quote_arrays(quotes)
    has_trades = trades is not None and len(trades) > 0
    t = _engine_trades(trades, quotes) if has_trades else _NO_TRADES
    table = requests_frame(requests)
    engine = SimEngine(model, instrument, seed=seed, feed_has_trades=has_trades, quote_fill_rule=quote_fill_rule)
    refs: list = []
    ids: dict = {}
    make = order_maker(instrument)
    for k, row in enumerate(table.itertuples(index=False)):
        ref = row.order_ref
        action = request_action(k, row.action, ref, ids)
        if action == "submit":
            ids[ref] = engine.submit(make(row), int(row.ts_ns))
            refs.append(ref)
        elif action == "cancel":
            engine.cancel(ids[ref], int(row.ts_ns))
        else:
            engine.replace(ids[ref], int(row.ts_ns), limit_px=row.limit_px if is_given(row.limit_px) else None,
                           quantity=row.quantity if is_given(row.quantity) else None)
    levels = book_levels(quotes) if engine.walk is not None else None
    if levels is not None and levels[0].shape[1] > _MAX_LEVELS:
        raise DataError(f"quotes carry {levels[0].shape[1]} levels behind the touch; expected at most {_MAX_LEVELS}")
    engine._run(*q, *t, levels=levels)
    last_arrival = max((entry[0] for entry in engine._pending), default=-NEVER_NS)
    engine.advance_to(max(engine._clock, last_arrival))
    ref_array = order_refs(refs)
    fills = engine.fills
    fills.insert(0, "order_ref", ref_array[fills.pop("order_id").to_numpy()] if len(fills) else
                 pd.Series(dtype=ref_array.dtype))
    orders = engine.orders
    orders.insert(0, "order_ref", ref_array[orders.pop("order_id").to_numpy()] if len(orders) else
                  pd.Series(dtype=ref_array.dtype))
    return SimResult(fills=fills, orders=orders)


def _engine_trades(trades: pd.DataFrame, quotes: pd.DataFrame) -> tuple[np.ndarray, ...]:
    # the compiled scan and on_trades take the aggressor as float64
    ts, price, size, aggressor = trade_arrays(trades, quotes)
    return ts, price, size, aggressor.astype(np.float64)
