"""Vectorized face of the paper-fill simulator: one compiled pass over the merged event stream.

Research replays many orders over long histories; this module does it in a single
numba loop over quotes, trades and request arrivals merged in time order (quotes
before trades at equal times, market data stamped at or before an arrival before
the request), with every order's state in arrays. It implements the matching rules
written in :mod:`tradebook.sim.orders` (read them there: they are the contract) and
must give the same fills as the event engine (:mod:`tradebook.sim.engine`) on the
same orders and data; both take liquidity through
:func:`~tradebook.sim.walk.walk_book` (the whole model) or
:func:`~tradebook.sim.orders.take_liquidity` (a cost curve alone) and draw latencies with
:func:`~tradebook.sim.orders.latency_ns`, so prices and times never differ for
implementation reasons.

Two entry points:

- :func:`replay_vectorized` - frames in, :class:`~tradebook.sim.orders.SimResult` out,
  with the same input checks as the engine;
- :func:`replay_arrays` - the compiled core on plain arrays (trusted input: no checks),
  what benchmarks and bulk research drive.

Decisions where the rules leave room (the engine should make the same ones):
a cancel or replace reaching the venue before its order does has no effect (the
venue does not know the order yet); a replace whose new quantity does not exceed
what has filled is ignored; IOC and FOK apply when an order becomes active (its
arrival, or its trigger for stops); a limit order meeting no valid quote waits for
one (IOC/FOK: cancelled); on feeds without trades a resting order fills at the
first *valid* quote whose opposite touch reaches its limit; an expired order is
done at its expiry time; a request row's ``expire_ts_ns`` >= 0 overrides the time in
force's expiry (good till that time); invalid quotes (crossed, locked, one-sided,
without sizes, non-finite) are skipped: nothing takes, triggers or fills at them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numba
import numpy as np
import pandas as pd

from tradebook.model.instruments import Instrument
from tradebook.sim import orders as contract
from tradebook.sim.fill_model import FillModel
from tradebook.sim.truth import check_quote_fill_rule, quote_fill_rule_of
from tradebook.sim.orders import (  # noqa: F401 - ACTION_CODE, STATUS_NAMES re-exported
    ACTION_CODE,
    ACTIONS,
    LOT_DUST,
    NEVER_NS,
    ORDER_TYPE_CODE,
    PRICE_RTOL,
    STATUS_NAMES,
    TIF_CODE,
    OrderStatus,
    OrderType,
    TimeInForce,
    latency_ns,
    queue_ahead,
    queue_ahead_book,
    take_liquidity,
    trade_at_limit,
    book_levels,
)
from tradebook.sim.walk import (
    TOUCH_STATE,
    fold_touch_unit,
    touch_unit_at,
    walk_book,
    walk_holds_without_unit,
    walk_params,
)

# Compiled-code constants (module-level ints are frozen into the compiled functions).
_SUBMIT, _CANCEL, _REPLACE = (ACTION_CODE[a] for a in ACTIONS)
_MARKET, _LIMIT, _STOP, _STOP_LIMIT = (ORDER_TYPE_CODE[t] for t in OrderType)
_DAY, _GTC, _IOC, _FOK = (TIF_CODE[t] for t in TimeInForce)
_PENDING, _WORKING, _FILLED, _CANCELLED, _EXPIRED, _REJECTED = range(len(OrderStatus))
_PH_NONE, _PH_TAKING, _PH_RESTING, _PH_STOP = 0, 1, 2, 3  # what an order at the venue is waiting for
# int64 order state columns
_I_SIDE, _I_TYPE, _I_TIF, _I_EXPIRE, _I_SUBMIT_K, _I_STATUS, _I_PHASE, _I_TRIGGERED, _I_ARRIVAL, _I_DONE, \
    _I_REPORT_LATENCY, _I_TAKE_TS, _I_TAKES = range(13)
# float64 order state columns
_F_QTY, _F_LIMIT, _F_STOP, _F_REMAINING, _F_FILLED, _F_NOTIONAL, _F_QUEUE, _F_DEPLETED = range(8)
# float64 parameter slots
_P_SLIPPAGE, _P_MAX_TAKE, _P_LOT, _P_MAKER_BPS, _P_TAKER_BPS, _P_PER_UNIT, _P_MULTIPLIER, _P_QUOTE_THROUGH = range(8)


# -- plain-array containers -----------------------------------------------------------
@dataclass(frozen=True)
class QuoteArrays:
    ts_ns: np.ndarray  # int64, non-decreasing
    bid_px: np.ndarray
    ask_px: np.ndarray
    bid_sz: np.ndarray
    ask_sz: np.ndarray
    # a top-N feed's levels behind the touch (bid_px, bid_sz, ask_px, ask_sz), rows x levels; None: L1
    levels: tuple | None = None


@dataclass(frozen=True)
class TradeArrays:
    ts_ns: np.ndarray  # int64, non-decreasing
    price: np.ndarray
    size: np.ndarray
    aggressor: np.ndarray  # int8: +1 buyer, -1 seller, 0 unknown


@dataclass(frozen=True)
class RequestArrays:
    """One row per request, in request-number order (k = row); orders are numbered 0..n-1.

    Submit rows carry the order's conformed fields; replace rows the new quantity and
    limit (NaN = unchanged); cancel rows only ``ts_ns``, ``action`` and ``order``.
    """

    ts_ns: np.ndarray  # int64, non-decreasing
    action: np.ndarray  # int8: 0 submit, 1 cancel, 2 replace
    order: np.ndarray  # int64 order number
    side: np.ndarray  # int8 +1 / -1
    order_type: np.ndarray  # int8 ORDER_TYPE_CODE
    tif: np.ndarray  # int8 TIF_CODE
    quantity: np.ndarray
    limit_px: np.ndarray
    stop_px: np.ndarray
    expire_ts_ns: np.ndarray  # int64, -1 = never


@dataclass(frozen=True)
class ArrayParams:
    """What the compiled core needs from a FillModel and an Instrument."""

    edges: np.ndarray
    ratios: np.ndarray
    slippage_bps: float
    max_take_over_touch: float
    lot: float
    maker_bps: float
    taker_bps: float
    per_unit_fee: float
    multiplier: float
    ack_median_ns: int
    fill_median_ns: int
    latency_sigma: float
    # the whole model's walk (:class:`~tradebook.sim.walk.WalkParams`); ``walk`` empty: the cost curve prices
    walk_offsets: np.ndarray = field(default_factory=lambda: np.zeros(0))
    walk_sizes: np.ndarray = field(default_factory=lambda: np.zeros(0))
    # tick, refill/ns, refill unit, improvement share and ratio; empty: no walk
    walk: np.ndarray = field(default_factory=lambda: np.zeros(0))
    walk_unit_tau_ns: int = 0  # > 0: ladder sizes in the recent touch size, with this memory
    # resting orders on a feed without trades fill when the far touch passes the limit (True) or reaches it
    quote_through: bool = False

    @classmethod
    def from_model(cls, model: FillModel, instrument: Instrument, quote_fill_rule: str | None = None) -> ArrayParams:
        take = model.take_params(float(instrument.lot_size))
        walk = walk_params(model, instrument)
        ladder = {} if walk is None else dict(
            walk_offsets=walk.offsets_ticks, walk_sizes=walk.sizes,
            walk=np.array([walk.tick, walk.refill_per_ns, walk.refill_unit, walk.improve_share, walk.improve_ratio]),
            walk_unit_tau_ns=walk.unit_tau_ns)
        return cls(**ladder,
            edges=take.edges, ratios=take.ratios, slippage_bps=take.slippage_bps,
            max_take_over_touch=take.max_take_over_touch, lot=take.lot,
            maker_bps=float(model.fees.maker_bps), taker_bps=float(model.fees.taker_bps),
            per_unit_fee=float(model.fees.per_unit), multiplier=float(instrument.multiplier),
            ack_median_ns=int(model.latency.submit_to_ack_median_ns),
            fill_median_ns=int(model.latency.ack_to_fill_median_ns), latency_sigma=float(model.latency.sigma),
            quote_through=(check_quote_fill_rule(quote_fill_rule) if quote_fill_rule is not None
                           else quote_fill_rule_of(model, instrument)) == "through",
        )


@dataclass(frozen=True)
class FillArrays:
    """Fills sorted by (ts_ns, submit request, sequence)."""

    order: np.ndarray
    ts_ns: np.ndarray
    report_ts_ns: np.ndarray
    quantity: np.ndarray
    price: np.ndarray
    maker: np.ndarray  # bool
    fee: np.ndarray


@dataclass(frozen=True)
class OrderArrays:
    """Final state per order number: status codes index ``STATUS_NAMES``; -1 = no time."""

    status: np.ndarray
    filled_qty: np.ndarray
    avg_price: np.ndarray
    arrival_ts_ns: np.ndarray
    done_ts_ns: np.ndarray
    quantity: np.ndarray  # after replaces
    limit_px: np.ndarray  # after replaces


def replay_arrays(quotes: QuoteArrays, trades: TradeArrays | None, requests: RequestArrays, params: ArrayParams,
                  *, seed: int = 0, feed_has_trades: bool | None = None) -> tuple[FillArrays, OrderArrays]:
    """The compiled replay on plain arrays (trusted input; :func:`replay_vectorized` checks frames).

    ``trades`` None (or empty) selects the quote rule for resting orders (feeds without trades),
    unless ``feed_has_trades`` says the feed had trades (all of them left out as not liquidity:
    resting orders then wait for trades, as in the event engine).
    """
    has_trades = trades is not None and len(trades.ts_ns) > 0 if feed_has_trades is None else bool(feed_has_trades)
    if trades is None:
        trades = TradeArrays(np.zeros(0, np.int64), np.zeros(0), np.zeros(0), np.zeros(0, np.int8))
    n_orders = int(requests.order.max()) + 1 if len(requests.order) else 0
    levels = quotes.levels if quotes.levels is not None and len(params.walk) else \
        tuple(np.empty((len(quotes.ts_ns), 0)) for _ in range(4))
    float_params = np.array([params.slippage_bps, params.max_take_over_touch, params.lot, params.maker_bps,
                             params.taker_bps, params.per_unit_fee, params.multiplier,
                             1.0 if params.quote_through else 0.0], dtype=np.float64)
    # The walk's state; None for the touch-only model (no walk): the kernel is then compiled without the
    # walk's branches and state (numba prunes ``ws is None`` at compile time), as fast as before the walk.
    walk_state = None if not len(params.walk) else (
        np.asarray(params.walk_offsets, np.float64), np.asarray(params.walk_sizes, np.float64),
        np.asarray(params.walk, np.float64), np.empty(len(params.walk_sizes) + 1 + levels[0].shape[1]),
        np.empty(len(params.walk_sizes) + 1 + levels[0].shape[1]), np.int64(seed),
        # the recent touch size: quote rows, state, its time, (row in force + 1, rows folded), memory
        (quotes.ts_ns, quotes.bid_sz, quotes.ask_sz), np.zeros(TOUCH_STATE), np.zeros(1, np.int64),
        np.zeros(2, np.int64), float(params.walk_unit_tau_ns), levels)
    fill_int, fill_float, n_fills, order_int, order_float = _replay(
        quotes.ts_ns, quotes.bid_px, quotes.ask_px, quotes.bid_sz, quotes.ask_sz,
        trades.ts_ns, trades.price, trades.size, trades.aggressor.astype(np.int8), has_trades,
        requests.ts_ns, requests.action, requests.order, requests.side, requests.order_type, requests.tif,
        requests.quantity, requests.limit_px, requests.stop_px, requests.expire_ts_ns, n_orders,
        params.edges, params.ratios, float_params,
        np.int64(params.ack_median_ns), np.int64(params.fill_median_ns), float(params.latency_sigma), np.int64(seed),
        walk_state)
    fill_int, fill_float = fill_int[:n_fills], fill_float[:n_fills]
    order_col = fill_int[:, 0]
    submit_k = order_int[order_col, _I_SUBMIT_K] if n_fills else np.zeros(0, np.int64)
    rank = np.lexsort((np.arange(n_fills), submit_k, fill_int[:, 1]))
    fill_int, fill_float = fill_int[rank], fill_float[rank]
    fills = FillArrays(order=fill_int[:, 0].copy(), ts_ns=fill_int[:, 1].copy(), report_ts_ns=fill_int[:, 2].copy(),
                       quantity=fill_float[:, 0].copy(), price=fill_float[:, 1].copy(),
                       maker=fill_float[:, 2] > 0.5, fee=fill_float[:, 3].copy())
    filled = order_float[:, _F_FILLED]
    with np.errstate(invalid="ignore", divide="ignore"):
        avg = np.where(filled > 0, order_float[:, _F_NOTIONAL] / np.where(filled > 0, filled, 1.0), np.nan)
    orders = OrderArrays(status=order_int[:, _I_STATUS].copy(), filled_qty=filled.copy(), avg_price=avg,
                         arrival_ts_ns=order_int[:, _I_ARRIVAL].copy(), done_ts_ns=order_int[:, _I_DONE].copy(),
                         quantity=order_float[:, _F_QTY].copy(), limit_px=order_float[:, _F_LIMIT].copy())
    return fills, orders


# -- compiled core --------------------------------------------------------------------
@numba.njit(cache=True, nogil=True)
def _record_fill(oi, of, fi, ff, n, o, ts, qty, px, maker, p):  # pragma: no cover - compiled
    if n == fi.shape[0]:
        fi2 = np.empty((2 * n + 16, fi.shape[1]), dtype=np.int64)
        ff2 = np.empty((2 * n + 16, ff.shape[1]), dtype=np.float64)
        fi2[:n] = fi[:n]
        ff2[:n] = ff[:n]
        fi, ff = fi2, ff2
    fi[n, 0] = o
    fi[n, 1] = ts
    fi[n, 2] = ts + oi[o, _I_REPORT_LATENCY]
    ff[n, 0] = qty
    ff[n, 1] = px
    ff[n, 2] = 1.0 if maker else 0.0
    notional = qty * px * p[_P_MULTIPLIER]
    bps = p[_P_MAKER_BPS] if maker else p[_P_TAKER_BPS]
    ff[n, 3] = abs(notional) * bps / 1e4 + abs(qty) * p[_P_PER_UNIT]
    of[o, _F_FILLED] += qty
    of[o, _F_NOTIONAL] += qty * px
    of[o, _F_REMAINING] -= qty
    if of[o, _F_REMAINING] <= LOT_DUST * p[_P_LOT]:
        of[o, _F_REMAINING] = 0.0
        oi[o, _I_STATUS] = _FILLED
        oi[o, _I_DONE] = ts
        oi[o, _I_PHASE] = _PH_NONE
    return fi, ff, n + 1


@numba.njit(cache=True, nogil=True)
def _end(oi, o, ts, status):  # pragma: no cover - compiled
    oi[o, _I_STATUS] = status
    oi[o, _I_DONE] = ts
    oi[o, _I_PHASE] = _PH_NONE


@numba.njit(cache=True, nogil=True)
def _has_limit(oi, o):  # pragma: no cover - compiled
    t = oi[o, _I_TYPE]
    return t == _LIMIT or t == _STOP_LIMIT


@numba.njit(cache=True, nogil=True)
def _marketable(side, limit, bid, ask):  # pragma: no cover - compiled
    return (side > 0 and limit >= ask) or (side < 0 and limit <= bid)


@numba.njit(cache=True, nogil=True, inline="always")  # inlined: a call passes the walk's state
def _walk(oi, of, o, ts, bid, ask, bid_sz, ask_sz, p, ws):  # pragma: no cover - compiled
    # walk_book for order o at the quote: (fills in ws[3], ws[4], depletion after)
    offsets, sizes, walk, out_qty, out_px, seed, rows, state, state_ts, cursor, tau, levels = ws
    side = oi[o, _I_SIDE]
    row = cursor[0] - 1  # the quote in force (walks happen only once a valid one has been)
    real_px = levels[2][row] if side > 0 else levels[0][row]
    real_sz = levels[3][row] if side > 0 else levels[1][row]
    unit = 1.0
    if tau > 0.0:
        if walk_holds_without_unit(side, of[o, _F_REMAINING], bid, ask, bid_sz, ask_sz, ts, of[o, _F_DEPLETED],
                                   oi[o, _I_TAKE_TS], walk, real_px, real_sz):
            unit = 0.0  # the walk ends before the implied ladder: same fills for any recent touch size
        else:  # the recent touch size: fold the quotes up to the one in force (lazily: only walks that need it)
            if cursor[0] > cursor[1]:
                fold_touch_unit(rows[0], rows[1], rows[2], cursor[1], cursor[0], state, state_ts, tau)
                cursor[1] = cursor[0]
            unit = touch_unit_at(state, state_ts, ts, tau)
    limit = of[o, _F_LIMIT] if _has_limit(oi, o) else np.nan
    return walk_book(oi[o, _I_SIDE], of[o, _F_REMAINING], limit, bid, ask, bid_sz, ask_sz, ts, of[o, _F_DEPLETED],
                     oi[o, _I_TAKE_TS], seed, oi[o, _I_SUBMIT_K], oi[o, _I_TAKES], offsets, sizes, unit, walk,
                     p[_P_SLIPPAGE], p[_P_LOT], out_qty, out_px, real_px, real_sz)


@numba.njit(cache=True, nogil=True, inline="always")  # inlined: a call passes the walk's state
def _walk_fills(oi, of, fi, ff, n, o, ts, k, depleted, p, ws):  # pragma: no cover - compiled
    of[o, _F_DEPLETED] = depleted
    oi[o, _I_TAKE_TS] = ts
    oi[o, _I_TAKES] += 1
    out_qty, out_px = ws[3], ws[4]
    for i in range(k):
        fi, ff, n = _record_fill(oi, of, fi, ff, n, o, ts, out_qty[i], out_px[i], False, p)
    return fi, ff, n


@numba.njit(cache=True, nogil=True, inline="always")  # inlined: a call passes the walk's state
def _take(oi, of, fi, ff, n, o, ts, bid, ask, bid_sz, ask_sz, edges, ratios, p, ws):  # pragma: no cover
    if ws is not None:  # pruned at compile time for the touch-only model (ws None)
        k, depleted = _walk(oi, of, o, ts, bid, ask, bid_sz, ask_sz, p, ws)
        if k:
            fi, ff, n = _walk_fills(oi, of, fi, ff, n, o, ts, k, depleted, p, ws)
        return fi, ff, n
    limit = of[o, _F_LIMIT] if _has_limit(oi, o) else np.nan
    qty, px = take_liquidity(oi[o, _I_SIDE], of[o, _F_REMAINING], limit, bid, ask, bid_sz, ask_sz,
                             edges, ratios, p[_P_SLIPPAGE], p[_P_MAX_TAKE], p[_P_LOT])
    if qty > 0.0:
        fi, ff, n = _record_fill(oi, of, fi, ff, n, o, ts, qty, px, False, p)
    return fi, ff, n


@numba.njit(cache=True, nogil=True, inline="always")  # inlined: a call passes the walk's state
def _rest(oi, of, o, bid, ask, bid_sz, ask_sz, ws):  # pragma: no cover - compiled
    # queue ahead from the quote that made the order passive (and the book behind it where the feed has one)
    oi[o, _I_PHASE] = _PH_RESTING
    side = oi[o, _I_SIDE]
    if ws is None:  # the touch-only model: the queue at the touch
        of[o, _F_QUEUE] = queue_ahead(side, of[o, _F_LIMIT], bid, ask, bid_sz, ask_sz)
        return
    levels = ws[11]
    row = ws[9][0] - 1
    if levels[0].shape[1] == 0 or row < 0:
        of[o, _F_QUEUE] = queue_ahead(side, of[o, _F_LIMIT], bid, ask, bid_sz, ask_sz)
    else:
        of[o, _F_QUEUE] = queue_ahead_book(side, of[o, _F_LIMIT], bid, ask, bid_sz, ask_sz,
                                           levels[0][row] if side > 0 else levels[2][row],
                                           levels[1][row] if side > 0 else levels[3][row])


@numba.njit(cache=True, nogil=True, inline="always")  # inlined: a call passes the walk's state
def _step_taking(oi, of, fi, ff, n, o, ts, bid, ask, bid_sz, ask_sz, edges, ratios, p, ws):  # pragma: no cover
    # An active order at a valid quote: take while marketable, rest from the first moment it is not.
    if _has_limit(oi, o) and not _marketable(oi[o, _I_SIDE], of[o, _F_LIMIT], bid, ask):
        _rest(oi, of, o, bid, ask, bid_sz, ask_sz, ws)
        return fi, ff, n
    return _take(oi, of, fi, ff, n, o, ts, bid, ask, bid_sz, ask_sz, edges, ratios, p, ws)


@numba.njit(cache=True, nogil=True, inline="always")  # inlined: a call passes the walk's state
def _activate(oi, of, fi, ff, n, o, ts, valid, bid, ask, bid_sz, ask_sz, edges, ratios, p, ws):  # pragma: no cover
    # The order becomes active at ts (arrival, replace, or a stop's trigger): IOC and FOK decide here.
    tif = oi[o, _I_TIF]
    if not valid:
        if tif == _IOC or tif == _FOK:
            _end(oi, o, ts, _CANCELLED)
        else:
            oi[o, _I_PHASE] = _PH_TAKING
        return fi, ff, n
    if tif == _FOK:
        side = oi[o, _I_SIDE]
        limit = of[o, _F_LIMIT] if _has_limit(oi, o) else np.nan
        if not math.isnan(limit) and not _marketable(side, limit, bid, ask):
            _end(oi, o, ts, _CANCELLED)
            return fi, ff, n
        if ws is not None:
            k, depleted = _walk(oi, of, o, ts, bid, ask, bid_sz, ask_sz, p, ws)
            got = 0.0
            for i in range(k):
                got += ws[3][i]
            if k == 0 or of[o, _F_REMAINING] - got > LOT_DUST * p[_P_LOT]:
                _end(oi, o, ts, _CANCELLED)
                return fi, ff, n
            return _walk_fills(oi, of, fi, ff, n, o, ts, k, depleted, p, ws)
        qty, px = take_liquidity(side, of[o, _F_REMAINING], limit, bid, ask, bid_sz, ask_sz,
                                 edges, ratios, p[_P_SLIPPAGE], p[_P_MAX_TAKE], p[_P_LOT])
        if not (qty > 0.0) or of[o, _F_REMAINING] - qty > LOT_DUST * p[_P_LOT]:
            _end(oi, o, ts, _CANCELLED)
            return fi, ff, n
        return _record_fill(oi, of, fi, ff, n, o, ts, of[o, _F_REMAINING], px, False, p)
    oi[o, _I_PHASE] = _PH_TAKING
    fi, ff, n = _step_taking(oi, of, fi, ff, n, o, ts, bid, ask, bid_sz, ask_sz, edges, ratios, p, ws)
    if tif == _IOC and oi[o, _I_STATUS] == _WORKING:
        _end(oi, o, ts, _CANCELLED)
    return fi, ff, n


@numba.njit(cache=True, nogil=True)
def _stop_triggered(oi, of, o, valid, bid, ask):  # pragma: no cover - compiled
    if not valid:
        return False
    stop = of[o, _F_STOP]
    return (oi[o, _I_SIDE] > 0 and ask >= stop) or (oi[o, _I_SIDE] < 0 and bid <= stop)


@numba.njit(cache=True, nogil=True, inline="always")  # inlined: a call passes the walk's state
def _arrive(oi, of, fi, ff, n, o, ts, valid, bid, ask, bid_sz, ask_sz, edges, ratios, p, ws):  # pragma: no cover
    t = oi[o, _I_TYPE]
    if (t == _STOP or t == _STOP_LIMIT) and oi[o, _I_TRIGGERED] == 0:
        if not _stop_triggered(oi, of, o, valid, bid, ask):
            oi[o, _I_PHASE] = _PH_STOP
            return fi, ff, n
        oi[o, _I_TRIGGERED] = 1
    return _activate(oi, of, fi, ff, n, o, ts, valid, bid, ask, bid_sz, ask_sz, edges, ratios, p, ws)


@numba.njit(cache=True, nogil=True)
def _watch(oi, of, live, n_live, has_trades, watch):  # pragma: no cover - compiled
    # What makes a valid quote matter to the live orders, in ``watch``: [orders taking,
    # lowest buy stop, highest sell stop, highest resting buy limit, lowest resting sell
    # limit] (the last two only on feeds without trades; neutral values when none).
    watch[0], watch[1], watch[2], watch[3], watch[4] = 0.0, np.inf, -np.inf, -np.inf, np.inf
    for i in range(n_live):
        o = live[i]
        phase = oi[o, _I_PHASE]
        buy = oi[o, _I_SIDE] > 0
        if phase == _PH_TAKING:
            watch[0] += 1.0
        elif phase == _PH_STOP:
            if buy:
                watch[1] = min(watch[1], of[o, _F_STOP])
            else:
                watch[2] = max(watch[2], of[o, _F_STOP])
        elif phase == _PH_RESTING and not has_trades:
            if buy:
                watch[3] = max(watch[3], of[o, _F_LIMIT])
            else:
                watch[4] = min(watch[4], of[o, _F_LIMIT])


@numba.njit(cache=True, nogil=True)
def _drop_live(live, slot, i, n_live):  # pragma: no cover - compiled
    # live[i] leaves the live orders: the last one takes its place; returns the new count
    o = live[i]
    n_live -= 1
    live[i] = live[n_live]
    slot[live[i]] = i
    slot[o] = -1
    return n_live


@numba.njit(cache=True, nogil=True)
def _quote_matters(bid, ask, bid_sz, ask_sz, watch):  # pragma: no cover - compiled
    if not (bid < ask and bid_sz > 0.0 and ask_sz > 0.0 and math.isfinite(bid) and math.isfinite(ask)):
        return False
    return watch[0] > 0.0 or ask >= watch[1] or bid <= watch[2] or ask <= watch[3] or bid >= watch[4]


@numba.njit(cache=True, nogil=True)
def _replay(q_ts, q_bid, q_ask, q_bid_sz, q_ask_sz,
            t_ts, t_px, t_sz, t_aggressor, has_trades,
            r_ts, r_action, r_order, r_side, r_type, r_tif, r_qty, r_limit, r_stop, r_expire, n_orders,
            edges, ratios, p, ack_median, fill_median, sigma, seed, ws):  # pragma: no cover - compiled
    n_q, n_t, n_r = len(q_ts), len(t_ts), len(r_ts)
    lot = p[_P_LOT]
    oi = np.zeros((n_orders, 13), dtype=np.int64)
    of = np.full((n_orders, 8), np.nan)
    oi[:, _I_ARRIVAL] = -1
    oi[:, _I_DONE] = -1
    oi[:, _I_STATUS] = _PENDING
    # request arrivals, and the order in which the venue sees them (arrival, then request number)
    arrival = np.empty(n_r, dtype=np.int64)
    for k in range(n_r):
        arrival[k] = r_ts[k] + latency_ns(seed, k, 0, ack_median, sigma)
        if r_action[k] == _SUBMIT:
            o = r_order[k]
            oi[o, _I_SIDE] = r_side[k]
            oi[o, _I_TYPE] = r_type[k]
            oi[o, _I_TIF] = r_tif[k]
            oi[o, _I_EXPIRE] = r_expire[k]
            oi[o, _I_SUBMIT_K] = k
            oi[o, _I_REPORT_LATENCY] = latency_ns(seed, k, 1, fill_median, sigma)
            of[o, _F_QTY] = r_qty[k]
            of[o, _F_LIMIT] = r_limit[k]
            of[o, _F_STOP] = r_stop[k]
            of[o, _F_REMAINING] = r_qty[k]
            of[o, _F_FILLED] = 0.0
            of[o, _F_NOTIONAL] = 0.0
            of[o, _F_DEPLETED] = 0.0
    by_arrival = np.argsort(arrival, kind="mergesort")

    fi = np.empty((max(16, n_r), 3), dtype=np.int64)
    ff = np.empty((max(16, n_r), 4), dtype=np.float64)
    n = 0
    live = np.empty(max(1, n_orders), dtype=np.int64)  # orders at the venue, not complete
    slot = np.full(max(1, n_orders), -1, dtype=np.int64)
    n_live = 0
    next_expiry = NEVER_NS
    watch = np.empty(5)  # see _watch
    _watch(oi, of, live, 0, has_trades, watch)
    bid = ask = bid_sz = ask_sz = np.nan
    valid = False
    iq = it = ir = 0
    while iq < n_q or it < n_t or ir < n_r:
        tq = q_ts[iq] if iq < n_q else NEVER_NS
        tt = t_ts[it] if it < n_t else NEVER_NS
        tr = arrival[by_arrival[ir]] if ir < n_r else NEVER_NS
        if iq < n_q and tq <= tt and tq <= tr:
            kind, ts = 0, tq
        elif it < n_t and tt <= tr:
            kind, ts = 1, tt
        else:
            kind, ts = 2, tr

        if ts >= next_expiry:  # orders expire before any event stamped at or after their expiry
            i = 0
            next_expiry = NEVER_NS
            while i < n_live:
                o = live[i]
                e = oi[o, _I_EXPIRE]
                if 0 <= e <= ts:
                    _end(oi, o, e, _EXPIRED)
                    n_live = _drop_live(live, slot, i, n_live)
                    continue
                if e >= 0 and e < next_expiry:
                    next_expiry = e
                i += 1
            _watch(oi, of, live, n_live, has_trades, watch)

        if kind == 0:
            if watch[0] == 0.0:
                # No order is taking: skip the quotes no order acts on, up to the next trade,
                # arrival or expiry (the last one skipped is the quote in force then).
                bound = tt if tt < tr else tr
                if next_expiry - 1 < bound:
                    bound = next_expiry - 1
                j = iq
                if watch[1] == np.inf and watch[2] == -np.inf and watch[3] == -np.inf and watch[4] == np.inf:
                    while j + 1 < n_q and q_ts[j + 1] <= bound:  # no order looks at quotes at all
                        j += 1
                else:
                    while j + 1 < n_q and q_ts[j + 1] <= bound and not _quote_matters(
                            q_bid[j], q_ask[j], q_bid_sz[j], q_ask_sz[j], watch):
                        j += 1
                iq = j
                ts = q_ts[iq]
            bid, ask, bid_sz, ask_sz = q_bid[iq], q_ask[iq], q_bid_sz[iq], q_ask_sz[iq]
            valid = bid < ask and bid_sz > 0.0 and ask_sz > 0.0 and math.isfinite(bid) and math.isfinite(ask)
            iq += 1
            if ws is not None:
                ws[9][0] = iq  # the quote rows in force from here: [0, iq)
            if not valid:
                continue
            i = 0
            while i < n_live:
                o = live[i]
                phase = oi[o, _I_PHASE]
                if phase == _PH_TAKING:
                    fi, ff, n = _step_taking(oi, of, fi, ff, n, o, ts, bid, ask, bid_sz, ask_sz, edges, ratios, p,
                                             ws)
                elif phase == _PH_STOP:
                    if _stop_triggered(oi, of, o, valid, bid, ask):
                        oi[o, _I_TRIGGERED] = 1
                        fi, ff, n = _activate(oi, of, fi, ff, n, o, ts, valid, bid, ask, bid_sz, ask_sz,
                                              edges, ratios, p, ws)
                elif phase == _PH_RESTING and not has_trades:
                    # no trades in the feed: the opposite touch passing (or reaching) the limit fills the remainder
                    side, limit = oi[o, _I_SIDE], of[o, _F_LIMIT]
                    if p[_P_QUOTE_THROUGH] > 0.5:
                        tol = PRICE_RTOL * abs(limit)
                        hit = (side > 0 and ask < limit - tol) or (side < 0 and bid > limit + tol)
                    else:
                        hit = (side > 0 and ask <= limit) or (side < 0 and bid >= limit)
                    if hit:
                        fi, ff, n = _record_fill(oi, of, fi, ff, n, o, ts, of[o, _F_REMAINING], limit, True, p)
                if oi[o, _I_STATUS] != _WORKING:
                    n_live = _drop_live(live, slot, i, n_live)
                    continue
                i += 1
            _watch(oi, of, live, n_live, has_trades, watch)
        elif kind == 1:
            px, size, aggressor = t_px[it], t_sz[it], t_aggressor[it]
            it += 1
            i = 0
            while i < n_live:
                o = live[i]
                if oi[o, _I_PHASE] == _PH_RESTING:
                    side, limit = oi[o, _I_SIDE], of[o, _F_LIMIT]
                    tol = PRICE_RTOL * abs(limit)
                    if (side > 0 and px < limit - tol) or (side < 0 and px > limit + tol):
                        # printed through the limit: the order would have been hit first
                        fi, ff, n = _record_fill(oi, of, fi, ff, n, o, ts, of[o, _F_REMAINING], limit, True, p)
                    elif abs(px - limit) <= tol and aggressor == -side and not math.isnan(of[o, _F_QUEUE]):
                        of[o, _F_QUEUE], qty = trade_at_limit(size, of[o, _F_QUEUE], of[o, _F_REMAINING], lot)
                        if qty > 0.0:
                            fi, ff, n = _record_fill(oi, of, fi, ff, n, o, ts, qty, limit, True, p)
                    if oi[o, _I_STATUS] != _WORKING:
                        n_live = _drop_live(live, slot, i, n_live)
                        continue
                i += 1
        else:
            k = by_arrival[ir]
            ir += 1
            o = r_order[k]
            action = r_action[k]
            if action == _SUBMIT:
                oi[o, _I_ARRIVAL] = ts
                e = oi[o, _I_EXPIRE]
                if 0 <= e <= ts:
                    _end(oi, o, e, _EXPIRED)
                    continue
                oi[o, _I_STATUS] = _WORKING
                fi, ff, n = _arrive(oi, of, fi, ff, n, o, ts, valid, bid, ask, bid_sz, ask_sz, edges, ratios, p, ws)
                if oi[o, _I_STATUS] == _WORKING:
                    slot[o] = n_live
                    live[n_live] = o
                    n_live += 1
                    if 0 <= e < next_expiry:
                        next_expiry = e
            elif oi[o, _I_STATUS] == _WORKING:  # a cancel or replace for an order the venue works
                if action == _CANCEL:
                    _end(oi, o, ts, _CANCELLED)
                else:
                    new_qty, new_limit = r_qty[k], r_limit[k]
                    if not math.isnan(new_qty):
                        if new_qty - of[o, _F_FILLED] <= LOT_DUST * lot:
                            continue  # must exceed what has filled: the replace is refused
                        of[o, _F_QTY] = new_qty
                        of[o, _F_REMAINING] = new_qty - of[o, _F_FILLED]
                    if not math.isnan(new_limit):
                        of[o, _F_LIMIT] = new_limit
                    of[o, _F_QUEUE] = np.nan
                    fi, ff, n = _arrive(oi, of, fi, ff, n, o, ts, valid, bid, ask, bid_sz, ask_sz, edges, ratios,
                                        p, ws)
                if oi[o, _I_STATUS] != _WORKING:
                    n_live = _drop_live(live, slot, slot[o], n_live)
            _watch(oi, of, live, n_live, has_trades, watch)
    return fi, ff, n, oi, of


# -- frames in, SimResult out ----------------------------------------------------------
def replay_vectorized(model: FillModel, instrument: Instrument | str, quotes: pd.DataFrame,
                      trades: pd.DataFrame | None, requests: pd.DataFrame, *, seed: int = 0,
                      quote_fill_rule: str | None = None) -> contract.SimResult:
    """Replay ``requests`` against ``quotes`` (and ``trades``, None for feeds without) in one compiled pass.

    Same checks as the event engine: empty or all-invalid quotes, times going backwards
    and missing columns raise DataError; unknown order_ref, unknown actions and bad
    quantities OrderError; prices off the tick grid or sizes off the lot grid
    ConformanceError (through :func:`tradebook.sim.orders.make_order`).
    """
    instrument = contract.checked_instrument(model, instrument, seed)
    quote_set = quote_arrays_from(quotes)
    trade_set = trade_arrays_from(trades, quotes) if trades is not None and len(trades) else None
    request_set, table = request_arrays_from(requests, instrument)
    fills, orders = replay_arrays(quote_set, trade_set, request_set,
                                  ArrayParams.from_model(model, instrument, quote_fill_rule), seed=seed,
                                  feed_has_trades=trade_set is not None)  # as replay(): a frame with rows
    refs = table["order_ref"]
    side = table["side"]
    fill_frame = pd.DataFrame({
        "order_ref": refs[fills.order],
        "ts_ns": fills.ts_ns,
        "report_ts_ns": fills.report_ts_ns,
        "side": side[fills.order],
        "quantity": fills.quantity,
        "price": fills.price,
        "liquidity": np.where(fills.maker, "maker", "taker"),
        "fee": fills.fee,
    })
    order_frame = pd.DataFrame({
        "order_ref": refs,
        "side": side,
        "order_type": table["order_type"],
        "tif": table["tif"],
        "quantity": orders.quantity,
        "limit_px": orders.limit_px,
        "stop_px": table["stop_px"],
        "status": np.asarray(STATUS_NAMES, dtype=object)[orders.status],
        "filled_qty": orders.filled_qty,
        "avg_price": orders.avg_price,
        "submit_ts_ns": table["submit_ts_ns"],
        "arrival_ts_ns": orders.arrival_ts_ns,
        "done_ts_ns": orders.done_ts_ns,
    })
    return contract.SimResult(fills=fill_frame, orders=order_frame)


def quote_arrays_from(quotes: pd.DataFrame) -> QuoteArrays:
    """Checked quote arrays (with a top-N book's levels behind the touch): refuses empty frames, frames with no
    valid quote and times going backwards."""
    return QuoteArrays(*contract.quote_arrays(quotes), levels=book_levels(quotes))


def trade_arrays_from(trades: pd.DataFrame, quotes: pd.DataFrame) -> TradeArrays:
    """Checked trade arrays; the aggressor from ``aggressor`` (+1/-1/0), ``aggressor_side`` or inferred."""
    return TradeArrays(*contract.trade_arrays(trades, quotes))


def request_arrays_from(requests: pd.DataFrame, instrument: Instrument) -> tuple[RequestArrays, dict[str, np.ndarray]]:
    """Validate requests (via make_order) and number them: k = row after a stable sort by ts_ns.

    Returns the arrays for the compiled core and, per order number, its ``order_ref``,
    ``side``, ``order_type``, ``tif``, ``stop_px`` and ``submit_ts_ns`` for the report.
    """
    ordered = contract.requests_frame(requests)
    n = len(ordered)
    ts = ordered["ts_ns"].to_numpy()
    action = np.zeros(n, np.int8)
    order = np.zeros(n, np.int64)
    side = np.zeros(n, np.int8)
    kind = np.zeros(n, np.int8)
    tif = np.zeros(n, np.int8)
    qty = np.full(n, np.nan)
    limit = np.full(n, np.nan)
    stop = np.full(n, np.nan)
    expire = np.full(n, -1, np.int64)
    specs: dict[object, tuple[int, object]] = {}  # order_ref -> (order number, OrderSpec)
    submit_ts: list[int] = []
    make = contract.order_maker(instrument)
    for k, row in enumerate(ordered.itertuples(index=False)):
        ref = row.order_ref
        name = contract.request_action(k, row.action, ref, specs)
        action[k] = ACTION_CODE[name]
        if name == "submit":
            spec = make(row)
            specs[ref] = (len(specs), spec)
            submit_ts.append(int(ts[k]))
            side[k], kind[k], tif[k] = spec.side, ORDER_TYPE_CODE[spec.order_type], TIF_CODE[spec.tif]
            qty[k], limit[k], stop[k], expire[k] = spec.quantity, spec.limit_px, spec.stop_px, spec.expire_ts_ns
        elif name == "replace":
            what = f"request {k}: replace of order_ref {ref!r}"
            qty[k], limit[k] = contract.checked_replace(instrument, specs[ref][1], row.limit_px, row.quantity,
                                                        int(ts[k]), what)
        order[k] = specs[ref][0]
    table = _order_table(specs, submit_ts)
    return RequestArrays(ts, action, order, side, kind, tif, qty, limit, stop, expire), table


def _order_table(specs: dict, submit_ts: list[int]) -> dict[str, np.ndarray]:
    rows = sorted(specs.items(), key=lambda item: item[1][0])
    refs = contract.order_refs([ref for ref, _ in rows])
    return {
        "order_ref": refs,
        "side": np.array([spec.side for _, (_, spec) in rows], dtype=np.int64),
        "order_type": np.array([spec.order_type.value for _, (_, spec) in rows], dtype=object),
        "tif": np.array([spec.tif.value for _, (_, spec) in rows], dtype=object),
        "stop_px": np.array([spec.stop_px for _, (_, spec) in rows], dtype=np.float64),
        "submit_ts_ns": np.array(submit_ts, dtype=np.int64),
    }
