"""Simulated orders and the matching rules both faces of the simulator share.

The paper venue runs the event-driven engine (:mod:`tradebook.sim.engine`) on a live
or recorded feed; research replays many orders fast with the vectorized path
(:mod:`tradebook.sim.vectorized`). They are two implementations of the rules below
and must produce the same fills on the same orders and data (a test checks it).
The two compiled primitives at the bottom (liquidity taking and latency draws) are
shared, so a fill price or a latency never differs for implementation reasons.

Matching rules
--------------
Feed. L1 quotes (``ts_ns``, ``bid_px``, ``ask_px``, ``bid_sz``, ``ask_sz``) and,
where the data has them, trades (``ts_ns``, ``price``, ``size``, ``aggressor`` +1
buy / -1 sell / 0 unknown). Events are taken in time order; at equal times quotes
come before trades. A quote is *valid* when both sides are finite, ``bid < ask``
and both sizes are positive.

Requests. Submit, cancel and replace requests are numbered ``k = 0, 1, 2, ...`` in
the order they are made. Request ``k`` made at ``ts`` reaches the venue at
``arrival = ts + latency_ns(seed, k, 0, ...)`` (submit-to-acknowledgement). Market
data stamped ``<= arrival`` is processed before the request. Fills carry their
matching time ``ts_ns`` and ``report_ts_ns = ts_ns + latency_ns(seed, k, 1, ...)``
(acknowledgement-to-fill) where ``k`` is the order's submit request.

Taking liquidity (market orders, marketable limits, triggered stops) happens at a
valid quote through :func:`take_liquidity`: at most ``max_take_over_touch`` times the
touch size per quote, priced by the fitted cost curve (median ratio of cost to the
half-spread for the size over the touch), never better than the far touch's
opposite side (a buy never below the bid), never through a limit, in whole lots.
A remainder keeps taking at each later valid quote (that is how large orders fill
in parts and take time), unless it is IOC (remainder cancelled at arrival) or FOK
(cancelled unfilled when the whole quantity cannot be taken at arrival). A market
order meeting no valid quote waits for one; an IOC or FOK one is cancelled.

Limit orders. A buy limit with ``limit >= ask`` at arrival is marketable and takes
(taker). Whatever is left, or a limit not marketable at arrival, *rests* (maker)
from the first moment it is not marketable, with the queue ahead set then from the
prevailing quote: the bid size if ``limit == bid``, 0 if ``limit > bid`` (it is the
new best price), unknown if ``limit < bid`` (depth behind the touch is not in L1).
A resting order fills at its limit price:

- feeds with trades: when a trade prints through the limit (a trade below a buy
  limit, any aggressor) the whole remainder fills; trades at the limit with the
  aggressor on the other side (sellers, for a resting buy) first consume the queue
  ahead, then fill the order (partial fills, whole lots; the last fill completes
  it). With an unknown queue only trades through count. Cancellations ahead are not
  credited. This is :func:`tradebook.sim.truth.passive_outcomes`' rule, so replaying
  a recorded path the engine agrees with it.
- feeds without trades (FX): the whole remainder fills when the opposite touch
  reaches the limit (``ask <= limit`` for a buy).

Stops. A buy stop triggers at the first valid quote (at arrival or later) with
``ask >= stop``; a sell stop when ``bid <= stop``. A stop then takes like a market
order at that quote; a stop-limit becomes a limit order arriving at that instant.

Time in force. DAY orders expire at the end of the instrument's session
(:func:`day_expiry_ns`); GTC never; an order expires before any event stamped at or
after its expiry. Cancel: a working order is cancelled when the request arrives
(too late if it has completed). Replace: at arrival the order takes the new limit
(and quantity, a new total that must exceed what has filled), loses its queue place
and is treated as newly arrived (it may be marketable now).

Fees per fill come from the model's venue fees by liquidity role.

Two consequences worth knowing. A taker buy never fills below the bid in force nor a
taker sell above the ask; a maker fills at its own limit, and on feeds whose quote and
trade streams are not in sync (Binance bookTicker against trades) a trade can print
through a resting limit while the quote still shows the touch beyond it, so a maker buy
can fill below the *recorded* bid: the trades are the truth there (the passive rule).
With ``base_slippage_bps > 0`` a limit exactly at the far touch counts as marketable
but cannot take (the slippage puts the price past the limit), so it keeps waiting to
take rather than resting with a queue place; calibrated models have no base slippage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from enum import IntEnum, StrEnum

import numba
import numpy as np
import pandas as pd

from tradebook.errors import OrderError
from tradebook.model.instruments import Instrument, Side

# A price this close (relative) to another is the same price: float prices from CSVs.
PRICE_RTOL = 1e-9


class OrderType(StrEnum):
    MARKET = "market"
    LIMIT = "limit"
    STOP = "stop"
    STOP_LIMIT = "stop_limit"


class TimeInForce(StrEnum):
    DAY = "day"
    GTC = "gtc"
    IOC = "ioc"
    FOK = "fok"


class OrderStatus(StrEnum):
    PENDING = "pending"  # submitted, not yet at the venue
    WORKING = "working"  # at the venue, not complete
    FILLED = "filled"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    REJECTED = "rejected"


class Liquidity(IntEnum):
    TAKER = 0
    MAKER = 1


# Integer codes for the compiled path (same order as the enums above).
ORDER_TYPE_CODE = {t: i for i, t in enumerate(OrderType)}
TIF_CODE = {t: i for i, t in enumerate(TimeInForce)}


@dataclass(frozen=True)
class OrderSpec:
    """A validated order: quantities and prices already on the instrument's grids.

    Build it with :func:`make_order`, which refuses bad input with OrderError or
    ConformanceError. Prices and quantity are floats for the simulator's arithmetic;
    they are exact multiples of the tick and lot (conformed as Decimals first).
    """

    instrument_id: str
    side: int  # +1 buy, -1 sell
    quantity: float
    order_type: OrderType = OrderType.MARKET
    limit_px: float = math.nan
    stop_px: float = math.nan
    tif: TimeInForce = TimeInForce.GTC
    expire_ts_ns: int = -1  # -1: never (GTC); set for DAY by make_order


def _side(side: Side | str | int | float) -> int:
    # +1/-1 also as floats: a side column holding NaN on cancel rows is float64
    if isinstance(side, (int, float, np.integer, np.floating)) and not isinstance(side, bool) and side in (1, -1):
        return int(side)
    text = str(side).strip().lower()
    if text in ("buy", "b"):
        return 1
    if text in ("sell", "s"):
        return -1
    raise OrderError(f"side is {side!r}; expected 'buy' or 'sell' (or +1 / -1)")


def _positive_quantity(quantity, instrument: Instrument) -> Decimal:
    if isinstance(quantity, float) and not math.isfinite(quantity):
        raise OrderError(f"{instrument.instrument_id}: quantity is {quantity!r}; expected a positive finite number")
    try:
        value = Decimal(str(quantity))
    except Exception as exc:  # noqa: BLE001 - any unparsable input is the caller's error
        raise OrderError(f"{instrument.instrument_id}: quantity {quantity!r} is not a number") from exc
    if not value.is_finite() or value <= 0:
        raise OrderError(f"{instrument.instrument_id}: quantity is {quantity!r}; expected a positive finite number")
    return instrument.conform_quantity(value)


def make_order(
    instrument: Instrument,
    side: Side | str | int,
    quantity: float | Decimal | str,
    order_type: OrderType | str = OrderType.MARKET,
    *,
    limit_px: float | Decimal | str | None = None,
    stop_px: float | Decimal | str | None = None,
    tif: TimeInForce | str = TimeInForce.GTC,
    ts_ns: int | None = None,
) -> OrderSpec:
    """Validate and conform an order for ``instrument``; DAY orders need ``ts_ns`` to set their expiry.

    Refuses (never rounds): NaN, infinite, zero or negative quantities; quantities
    off the lot grid or below the minimum; prices off the tick grid; a limit order
    without a limit price or a market order with one; a notional below the minimum.
    """
    try:
        kind = OrderType(str(order_type).lower())
    except ValueError:
        raise OrderError(f"order type {order_type!r} unknown; expected one of {[t.value for t in OrderType]}") from None
    try:
        time_in_force = TimeInForce(str(tif).lower())
    except ValueError:
        raise OrderError(f"time in force {tif!r} unknown; expected one of {[t.value for t in TimeInForce]}") from None
    direction = _side(side)
    qty = _positive_quantity(quantity, instrument)
    needs_limit = kind in (OrderType.LIMIT, OrderType.STOP_LIMIT)
    needs_stop = kind in (OrderType.STOP, OrderType.STOP_LIMIT)
    if needs_limit != (limit_px is not None):
        raise OrderError(f"{kind.value} order {'needs' if needs_limit else 'takes no'} limit price"
                         f"{'' if needs_limit else f', got {limit_px!r}'}")
    if needs_stop != (stop_px is not None):
        raise OrderError(f"{kind.value} order {'needs' if needs_stop else 'takes no'} stop price"
                         f"{'' if needs_stop else f', got {stop_px!r}'}")
    limit = instrument.conform_price(limit_px) if needs_limit else None
    stop = instrument.conform_price(stop_px) if needs_stop else None
    reference = limit if limit is not None else stop
    if reference is not None:
        instrument.check_notional(reference, qty)
    expire = -1
    if time_in_force == TimeInForce.DAY:
        if ts_ns is None:
            raise OrderError("a DAY order needs ts_ns (the submit time) to know which session it lives in")
        expire = day_expiry_ns(instrument, ts_ns)
    return OrderSpec(
        instrument_id=instrument.instrument_id,
        side=direction,
        quantity=float(qty),
        order_type=kind,
        limit_px=float(limit) if limit is not None else math.nan,
        stop_px=float(stop) if stop is not None else math.nan,
        tif=time_in_force,
        expire_ts_ns=expire,
    )


def day_expiry_ns(instrument: Instrument, ts_ns: int) -> int:
    """When a DAY order submitted at ``ts_ns`` expires: the next regular-session close.

    Always-open venues (crypto) close the day at 00:00 UTC. Sessions that run past
    midnight (CME Globex, spot FX) close at their local close time on the next day
    whose close lies after ``ts_ns``.
    """
    hours = instrument.trading_hours
    t = pd.Timestamp(int(ts_ns), unit="ns", tz="UTC")
    if hours.always_open:
        return int((t.normalize() + pd.Timedelta(days=1)).value)
    local = t.tz_convert(hours.timezone)
    for days in range(0, 8):
        day = (local.normalize() + pd.Timedelta(days=days)).tz_localize(None)
        close = pd.Timestamp.combine(day.date(), hours.close).tz_localize(hours.timezone)
        if close.value > t.value and close.weekday() in _close_weekdays(hours):
            return int(close.value)
    raise OrderError(f"{instrument.instrument_id}: no session close within a week of {t.isoformat()}")


def _close_weekdays(hours) -> set[int]:
    # a session opening on day d and running past midnight closes on d + 1
    if hours.close > hours.open:
        return set(hours.open_weekdays)
    return {(d + 1) % 7 for d in hours.open_weekdays}


# -- shared compiled primitives -------------------------------------------------------
@dataclass(frozen=True)
class TakeParams:
    """The fill model's marketable-cost table as plain arrays for compiled code."""

    edges: np.ndarray  # size-over-touch bucket edges, float64, len n+1
    ratios: np.ndarray  # median cost / half-spread per bucket, float64, len n, non-decreasing
    slippage_bps: float  # base slippage added to every taker fill
    max_take_over_touch: float  # most one quote can give, in touch sizes
    lot: float  # fills are whole lots


@numba.njit(cache=True, nogil=True)
def take_liquidity(side, remaining, limit, bid, ask, bid_sz, ask_sz,
                   edges, ratios, slippage_bps, max_take_over_touch, lot):  # pragma: no cover - compiled
    """(quantity, price) a taker order gets at one quote; (0, nan) when nothing.

    ``limit`` is NaN for market orders. The price is the mid plus the fitted cost for
    the size taken; a buy never pays below the bid nor above its limit (sell mirrored).
    """
    if not (bid < ask) or not (bid_sz > 0.0) or not (ask_sz > 0.0) or remaining <= 0.0:
        return 0.0, np.nan
    touch = ask_sz if side > 0 else bid_sz
    mid = 0.5 * (bid + ask)
    half = 0.5 * (ask - bid)
    qty = min(remaining, touch * max_take_over_touch)
    qty = math.floor(qty / lot * (1.0 + 1e-12)) * lot
    if qty < remaining and remaining - qty < 1e-9 * lot:
        qty = remaining
    n = len(ratios)
    while qty > 0.0:
        x = qty / touch
        b = 0
        while b + 1 < n and x >= edges[b + 1]:
            b += 1
        # from the near touch, so a fill at ratio 1 is exactly the touch price
        far = ask if side > 0 else bid
        price = far + side * (half * (ratios[b] - 1.0) + mid * slippage_bps * 1e-4)
        if side > 0 and price < bid:
            price = bid
        if side < 0 and price > ask:
            price = ask
        if math.isnan(limit) or (side > 0 and price <= limit * (1.0 + 1e-12)) \
                or (side < 0 and price >= limit * (1.0 - 1e-12)):
            return qty, price
        # too dear at this size: try the largest size of the bucket below
        if b == 0:
            return 0.0, np.nan
        smaller = math.floor(edges[b] * touch / lot * (1.0 - 1e-12)) * lot
        if smaller >= qty:
            smaller = qty - lot
        qty = smaller
    return 0.0, np.nan


@numba.njit(cache=True, nogil=True)
def _splitmix64(x):  # pragma: no cover - compiled
    x = (x + np.uint64(0x9E3779B97F4A7C15))
    z = x
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@numba.njit(cache=True, nogil=True)
def latency_ns(seed, request, stream, median_ns, sigma):  # pragma: no cover - compiled
    """Lognormal latency for request number ``request`` (stream 0: submit-to-ack, 1: ack-to-fill).

    Counter-based (a hash of seed, request and stream), so a latency does not depend
    on the order in which an implementation draws them: both faces get the same ones.
    """
    if sigma <= 0.0:
        return np.int64(median_ns)
    key = _splitmix64(np.uint64(seed) * np.uint64(1000003) + np.uint64(request) * np.uint64(4) + np.uint64(stream))
    a = _splitmix64(key)
    b = _splitmix64(a)
    u1 = (np.float64(a >> np.uint64(11)) + 0.5) / 9007199254740992.0
    u2 = (np.float64(b >> np.uint64(11)) + 0.5) / 9007199254740992.0
    z = math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)
    return np.int64(median_ns * math.exp(sigma * z))
