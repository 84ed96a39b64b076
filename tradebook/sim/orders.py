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
buy / -1 sell / 0 unknown), only prints that are liquidity (no off-exchange reports,
no non-regular sale conditions: :func:`tradebook.sim.truth.liquidity_mask`). Events
are taken in time order; at equal times quotes come before trades. A quote is *valid*
when both sides are finite, ``bid < ask`` and both sizes are positive.

Requests. Submit, cancel and replace requests are numbered ``k = 0, 1, 2, ...`` in
the order they are made. Request ``k`` made at ``ts`` reaches the venue at
``arrival = ts + latency_ns(seed, k, 0, ...)`` (submit-to-acknowledgement). Market
data stamped ``<= arrival`` is processed before the request. Fills carry their
matching time ``ts_ns`` and ``report_ts_ns = ts_ns + latency_ns(seed, k, 1, ...)``
(acknowledgement-to-fill) where ``k`` is the order's submit request.

Taking liquidity (market orders, marketable limits, triggered stops) happens at a
valid quote, in one of two ways:

- a model with a depth profile (the whole model, :func:`~tradebook.sim.walk.walk_params`): the order walks
  the quote's touch and then the calibrated L1-implied book behind it
  (:func:`~tradebook.sim.walk.implied_ladder`: levels a whole number of ticks beyond the touch), one fill
  per level reached (whole lots, floored cumulatively), never through a limit
  (:func:`~tradebook.sim.walk.walk_book`). What it took is gone from the book for that order and refills
  at the completion model's rate (one typical touch per median refill time; at the
  next quote without a completion model); an order that has emptied the book takes
  again only when ``min(remainder, typical touch)`` is back. On equities the part of
  a take at the touch prints inside the spread with the calibrated probability and
  improvement, a seeded draw per order and take (:func:`~tradebook.sim.walk.walk_draw`);
- a model without one (the cost curve alone, today's touch-only form): at most
  ``max_take_over_touch`` times the touch size per quote, priced by the fitted cost
  curve (median ratio of cost to the half-spread for the size over the touch)
  through :func:`take_liquidity`, in one fill.

Either way a buy never fills below the bid (a sell above the ask), never through a
limit, in whole lots. A remainder keeps taking at later valid quotes (that is how
large orders fill in parts and take time), unless it is IOC (remainder cancelled at
arrival) or FOK (cancelled unfilled when the whole quantity cannot be taken at
arrival: the walk's book or the curve's cap is too small, or the limit is in the
way). A market order meeting no valid quote waits for one; an IOC or FOK one is
cancelled. Where the feed carries the book (a top-N frame: ``bid_px_1``, ``ask_sz_1``...,
given to :func:`tradebook.sim.engine.replay` or
:func:`tradebook.sim.vectorized.replay_vectorized`; :func:`book_levels`) the walk takes
the recorded levels behind the touch first and the implied ladder only beyond the
deepest of them, and a limit resting behind the touch takes its queue ahead from the
recorded levels (:func:`queue_ahead_book`: the size at its price, nothing on an empty
price inside the book, unknown beyond it). The live engine takes the same levels in
``on_quotes``/``on_data(levels=...)``; the paper venue passes them on where a session's
feed carries a top-N book (``ReplayFeed`` keeps a top-N frame's levels in its batches,
``PaperVenue.on_market_data(levels=...)``, ``PaperVenue.feed`` of a top-N frame). An L2
diff stream is not rebuilt into levels by the engine (rebuild it into a top-N frame
first, :mod:`tradebook.sim.book`). The recent touch size that sizes the implied ladder
is folded from the quotes only when a walk reaches beyond the touch and the recorded
levels (:func:`~tradebook.sim.walk.walk_holds_without_unit`); the fold is row by row, so the fills are the
same as folding every quote at once.

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
  trades *through* the limit (``ask < limit``, a tick past it, for a buy): the
  default for spot FX; with the model's ``quote_fill_rule="touch"`` (the default for
  the other asset classes, whose feeds carry trades) already when it reaches the
  limit (``ask <= limit``). :func:`tradebook.sim.truth.quote_fill_rule_of` decides.

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
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import replace as dataclass_replace
from decimal import Decimal
from enum import IntEnum, StrEnum

import numba
import numpy as np
import pandas as pd

from tradebook.data.frames import book_levels  # noqa: F401 - re-exported: the faces read a top-N frame's levels
from tradebook.data.frames import aggressor_from_column, quote_columns
from tradebook.errors import ConfigError, DataError, OrderError
from tradebook.model.instruments import Instrument, Side, get_instrument
from tradebook.model.orders import OrderType, TimeInForce
from tradebook.sim.book import as_ns_array
from tradebook.sim.truth import liquidity_trades, trade_sides

# A price this close (relative) to another is the same price: float prices from CSVs.
PRICE_RTOL = 1e-9
# No time yet / never: the largest int64 nanosecond stamp.
NEVER_NS = int(np.iinfo(np.int64).max)
# A remainder below this many lots is float dust: the order is complete.
LOT_DUST = 1e-9
# Trade size beyond the queue, in lots, is floored with this slack (float dust from queue arithmetic).
LOT_SLACK = 1e-6


class OrderStatus(StrEnum):
    """A simulated order's state at the simulated venue (the order manager's lifecycle is richer:
    :class:`tradebook.model.orders.OrderStatus`)."""

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
STATUS_NAMES = tuple(s.value for s in OrderStatus)  # status code -> name

# Request frames, and what both faces return: one row per order request, fill and order.
ACTIONS = ("submit", "cancel", "replace")
ACTION_CODE = {a: i for i, a in enumerate(ACTIONS)}
REQUEST_COLUMNS = ("ts_ns", "action", "order_ref", "side", "quantity", "order_type", "limit_px", "stop_px", "tif",
                   "expire_ts_ns")
FILL_COLUMNS = ("order_id", "ts_ns", "report_ts_ns", "side", "quantity", "price", "liquidity", "fee")
ORDER_COLUMNS = ("order_id", "side", "order_type", "tif", "quantity", "limit_px", "stop_px", "status", "filled_qty",
                 "avg_price", "submit_ts_ns", "arrival_ts_ns", "done_ts_ns")


@dataclass(frozen=True)
class SimResult:
    """Fills and final order states of a replay, keyed by the caller's ``order_ref``."""

    fills: pd.DataFrame
    orders: pd.DataFrame


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
    if side.__class__ is Side:  # the order path's case: what the text test below gives for it
        return 1 if side is Side.BUY else -1
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
    return conformed_order(instrument, side, quantity, order_type, limit_px=limit_px, stop_px=stop_px, tif=tif,
                           ts_ns=ts_ns)[0]


_ORDER_TYPES = {t.value: t for t in OrderType}
_TIMES_IN_FORCE = {t.value: t for t in TimeInForce}


def conformed_order(
    instrument: Instrument,
    side: Side | str | int,
    quantity: float | Decimal | str,
    order_type: OrderType | str = OrderType.MARKET,
    *,
    limit_px: float | Decimal | str | None = None,
    stop_px: float | Decimal | str | None = None,
    tif: TimeInForce | str = TimeInForce.GTC,
    ts_ns: int | None = None,
) -> tuple[OrderSpec, Decimal, Decimal | None, Decimal | None]:
    """:func:`make_order`, also giving the conformed quantity, limit and stop as Decimals (None where not given).

    They are what ``instrument.conform_quantity``/``conform_price`` return for the same input,
    for a caller that keeps Decimal books (the paper venue) and would otherwise conform twice.
    """
    kind = _ORDER_TYPES.get(str(order_type).lower())  # OrderType(name), without the enum call
    if kind is None:
        raise OrderError(f"order type {order_type!r} unknown; expected one of {[t.value for t in OrderType]}")
    time_in_force = _TIMES_IN_FORCE.get(str(tif).lower())
    if time_in_force is None:
        raise OrderError(f"time in force {tif!r} unknown; expected one of {[t.value for t in TimeInForce]}")
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
    spec = OrderSpec(
        instrument_id=instrument.instrument_id,
        side=direction,
        quantity=float(qty),
        order_type=kind,
        limit_px=float(limit) if limit is not None else math.nan,
        stop_px=float(stop) if stop is not None else math.nan,
        tif=time_in_force,
        expire_ts_ns=expire,
    )
    return spec, qty, limit, stop


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


# -- frames in: the checks both faces make ---------------------------------------------
def checked_instrument(model, instrument: Instrument | str, seed) -> Instrument:
    """``instrument`` (looked up when given by id) after checking the fill ``model`` is for it and ``seed`` >= 0."""
    if isinstance(instrument, str):
        instrument = get_instrument(instrument)
    if model.instrument_id != instrument.instrument_id:
        raise ConfigError(f"fill model is for {model.instrument_id}; expected one for {instrument.instrument_id}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed is {seed!r}; expected an integer >= 0")
    return instrument


def is_given(value) -> bool:
    """False for an empty cell (None, pd.NA, NaN), True for anything else."""
    if value is None or value is pd.NA:
        return False
    try:
        return not (isinstance(value, (float, np.floating)) and math.isnan(value))
    except TypeError:
        return True


def check_non_decreasing(ts: np.ndarray, what: str) -> None:
    """DataError naming the first row where ``ts`` goes backwards."""
    backwards = np.flatnonzero(np.diff(ts) < 0)
    if len(backwards):
        row = int(backwards[0]) + 1
        raise DataError(f"{what} ts_ns goes backwards at row {row} ({ts[row - 1]} then {ts[row]}); "
                        "expected non-decreasing ts_ns")


def quote_arrays(quotes: pd.DataFrame) -> tuple[np.ndarray, ...]:
    """(ts_ns, bid_px, ask_px, bid_sz, ask_sz) from an L1 frame or a top-N book; refuses unusable quote sets."""
    if not isinstance(quotes, pd.DataFrame):
        raise DataError(f"quotes is a {type(quotes).__name__}; expected a pandas DataFrame")
    columns = quote_columns(quotes)
    if "ts_ns" not in quotes.columns:
        raise DataError(f"quotes frame lacks ts_ns; found {list(quotes.columns)}")
    if not len(quotes):
        raise DataError("quotes frame is empty; expected at least one valid quote (finite bid < ask, sizes > 0)")
    ts = as_ns_array(quotes["ts_ns"].to_numpy(), "quotes ts_ns")
    check_non_decreasing(ts, "quotes")
    values = []
    for name in ("bid_px", "ask_px", "bid_sz", "ask_sz"):
        column = columns[name]
        if column not in quotes.columns:
            raise DataError(f"quotes frame lacks {column}; expected bid/ask prices and sizes")
        values.append(quotes[column].to_numpy(dtype=np.float64, na_value=np.nan))
    bid, ask, bid_sz, ask_sz = values
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(bid) & np.isfinite(ask) & (bid < ask) & (bid_sz > 0) & (ask_sz > 0)
    if not valid.any():
        raise DataError(f"none of the {len(ts)} quotes is valid (all crossed, locked, one-sided or without sizes); "
                        "expected at least one with finite bid < ask and positive sizes")
    return ts, bid, ask, bid_sz, ask_sz


def trade_arrays(trades: pd.DataFrame, quotes: pd.DataFrame) -> tuple[np.ndarray, ...]:
    """(ts_ns, price, size, aggressor int8) with the aggressor from ``aggressor``, ``aggressor_side`` or inferred.

    Only prints that are liquidity enter the feed (:func:`tradebook.sim.truth.liquidity_mask`:
    off-exchange reports and non-regular sale conditions are left out, as in calibration).
    """
    if not isinstance(trades, pd.DataFrame):
        raise DataError(f"trades is a {type(trades).__name__}; expected a pandas DataFrame")
    missing = [c for c in ("ts_ns", "price", "size") if c not in trades.columns]
    if missing:
        raise DataError(f"trades frame lacks {missing}; expected columns ts_ns, price, size (and an aggressor)")
    trades = liquidity_trades(trades)
    ts = as_ns_array(trades["ts_ns"].to_numpy(), "trades ts_ns")
    check_non_decreasing(ts, "trades")
    if "aggressor" in trades.columns:
        aggressor = trades["aggressor"].to_numpy(dtype=np.float64, na_value=0.0)
        if not np.isin(aggressor, (-1.0, 0.0, 1.0)).all():
            raise DataError("trades aggressor must be +1 (buyer), -1 (seller) or 0 (unknown)")
        aggressor = aggressor.astype(np.int8)
    elif "aggressor_side" in trades.columns:
        aggressor = aggressor_from_column(trades)
    else:
        aggressor = trade_sides(trades, quotes)
    return (ts, trades["price"].to_numpy(dtype=np.float64, na_value=np.nan),
            trades["size"].to_numpy(dtype=np.float64, na_value=np.nan), aggressor)


def requests_frame(requests: pd.DataFrame | list[dict]) -> pd.DataFrame:
    """Requests with every ``REQUEST_COLUMNS`` column (defaults filled), stably sorted by ``ts_ns``.

    Row position after the sort is the request number ``k``. Needs ``ts_ns``, ``action``
    and ``order_ref``; refuses unknown columns and empty or non-integer times (DataError).
    """
    frame = pd.DataFrame(requests) if not isinstance(requests, pd.DataFrame) else requests
    missing = [c for c in ("ts_ns", "action", "order_ref") if c not in frame.columns]
    if missing:
        raise DataError(f"requests frame lacks {missing}; expected columns {list(REQUEST_COLUMNS)}")
    unknown = [c for c in frame.columns if c not in REQUEST_COLUMNS]
    if unknown:
        raise DataError(f"requests frame has unknown columns {unknown}; expected {list(REQUEST_COLUMNS)}")
    if frame["ts_ns"].isna().any():
        raise DataError("requests ts_ns has empty values; expected int64 UTC ns for every request")
    ts = as_ns_array(frame["ts_ns"].to_numpy(), "requests ts_ns")
    out = pd.DataFrame({"ts_ns": ts})
    defaults = {"action": None, "order_ref": None, "side": None, "quantity": math.nan, "order_type": "market",
                "limit_px": math.nan, "stop_px": math.nan, "tif": "gtc", "expire_ts_ns": -1}
    for name in REQUEST_COLUMNS[1:]:
        out[name] = frame[name].to_numpy() if name in frame.columns else defaults[name]
    out["expire_ts_ns"] = pd.to_numeric(out["expire_ts_ns"]).fillna(-1).astype(np.int64)
    return out.sort_values("ts_ns", kind="stable").reset_index(drop=True)


def request_action(k: int, action, ref, submitted) -> str:
    """The checked action name of request ``k`` for ``ref``; ``submitted``: the order_refs submitted before it."""
    name = str(action).strip().lower()
    if name not in ACTION_CODE:
        raise OrderError(f"request {k} (order_ref {ref!r}): action {action!r} unknown; expected one of "
                         f"{list(ACTIONS)}")
    if not is_given(ref):
        raise OrderError(f"request {k}: order_ref is empty; expected the caller's id of the order")
    if name == "submit":
        if ref in submitted:
            raise OrderError(f"request {k}: order_ref {ref!r} submitted twice; expected one submit per order")
    elif ref not in submitted:
        raise OrderError(f"request {k}: {name} for order_ref {ref!r}, which was not submitted before it; "
                         "expected the order_ref of an earlier submit")
    return name


def order_refs(refs: list) -> np.ndarray:
    """The caller's order_refs as an array: int64 when they all are integers, else as given (object)."""
    array = np.asarray(refs, dtype=object)
    try:
        return array.astype(np.int64)
    except (TypeError, ValueError):
        return array  # non-integer refs are kept as given


def order_maker(instrument: Instrument) -> Callable:
    """``make(row) -> OrderSpec`` for a submit row of :func:`requests_frame` (its ``expire_ts_ns`` >= 0 wins)."""
    # make_order does Decimal work per call; most orders of a replay repeat a few shapes.
    cache: dict[tuple, OrderSpec] = {}

    def make(row) -> OrderSpec:
        side = row.side
        if isinstance(side, (float, np.floating)) and side in (1.0, -1.0):
            side = int(side)  # a side column holding NaN on cancel rows is float
        order_type = row.order_type if is_given(row.order_type) else OrderType.MARKET
        tif = row.tif if is_given(row.tif) else TimeInForce.GTC
        limit = row.limit_px if is_given(row.limit_px) else None
        stop = row.stop_px if is_given(row.stop_px) else None
        key = (side, row.quantity, str(order_type), limit, stop, str(tif))
        day = str(tif).strip().lower() == TimeInForce.DAY.value
        try:
            spec = None if day else cache.get(key)
        except TypeError:  # unhashable input: no caching
            spec, key = None, None
        if spec is None:
            spec = make_order(instrument, side, row.quantity, order_type, limit_px=limit, stop_px=stop, tif=tif,
                              ts_ns=int(row.ts_ns))
            if not day and key is not None:
                cache[key] = spec
        expire = int(row.expire_ts_ns)
        if expire >= 0:
            spec = dataclass_replace(spec, expire_ts_ns=expire)
        return spec

    return make


def checked_replace(instrument: Instrument, order: OrderSpec, limit_px, quantity, ts_ns: int,
                    what: str) -> tuple[float, float]:
    """(new total quantity, new limit) of a replace of ``order``, NaN where unchanged; OrderError when it cannot be.

    ``what`` names the replace in messages (e.g. "replace of order 3").
    """
    given_qty, given_limit = is_given(quantity), is_given(limit_px)
    if not (given_qty or given_limit):
        raise OrderError(f"{what} changes nothing; expected a new limit_px or quantity")
    if order.order_type not in (OrderType.LIMIT, OrderType.STOP_LIMIT):
        raise OrderError(f"{what}, a {order.order_type.value} order; expected a limit or stop-limit order "
                         "(replace moves a limit price)")
    checked = make_order(instrument, order.side, quantity if given_qty else order.quantity, order.order_type,
                         limit_px=limit_px if given_limit else order.limit_px,
                         stop_px=None if math.isnan(order.stop_px) else order.stop_px, tif=order.tif, ts_ns=ts_ns)
    return (checked.quantity if given_qty else math.nan), (checked.limit_px if given_limit else math.nan)


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
def queue_ahead(side, limit, bid, ask, bid_sz, ask_sz):  # pragma: no cover - compiled
    """Queue ahead of an order starting to rest at ``limit``, from the quote in force.

    The touch size when it joins the touch, nothing when it improves it, NaN (unknown)
    behind it: depth behind the touch is not in L1.
    """
    touch = bid if side > 0 else ask
    if abs(limit - touch) <= PRICE_RTOL * abs(touch):
        return bid_sz if side > 0 else ask_sz
    if side * (limit - touch) > 0.0:
        return 0.0
    return np.nan


@numba.njit(cache=True, nogil=True)
def queue_ahead_book(side, limit, bid, ask, bid_sz, ask_sz, level_px, level_sz):  # pragma: no cover - compiled
    """:func:`queue_ahead`, with the recorded levels behind the touch on the order's own side where the feed has them.

    Behind the touch: the size recorded at the limit's price; nothing when the limit lies
    on an empty price inside the recorded depth; unknown (NaN) beyond it or on L1.
    """
    queue = queue_ahead(side, limit, bid, ask, bid_sz, ask_sz)
    if not math.isnan(queue) or len(level_px) == 0:
        return queue
    touch = bid if side > 0 else ask
    deepest = touch
    for r in range(len(level_px)):
        px = level_px[r]
        if not (level_sz[r] > 0.0 and side * (deepest - px) > 0.0):
            continue  # not a level behind the ones before it
        if abs(px - limit) <= PRICE_RTOL * abs(limit):
            return level_sz[r]
        deepest = px
    if side * (limit - deepest) > 0.0:
        return 0.0  # an empty price inside the recorded book
    return np.nan


@numba.njit(cache=True, nogil=True)
def trade_at_limit(size, queue, remaining, lot):  # pragma: no cover - compiled
    """(queue left, quantity filled) when a trade of ``size`` prints at a resting order's limit.

    For a trade with the aggressor on the other side and a known ``queue`` ahead: the
    trade consumes the queue first, the part beyond it fills the order in whole lots
    (floored with ``LOT_SLACK``; a remainder under ``LOT_DUST`` lots completes it).
    """
    extra = size
    if queue > 0.0:
        if size <= queue:
            return queue - size, 0.0
        extra = size - queue
        queue = 0.0
    if not extra > 0.0:
        return queue, 0.0
    qty = min(math.floor(extra / lot + LOT_SLACK) * lot, remaining)
    if remaining - qty <= LOT_DUST * lot:
        qty = remaining
    return queue, qty


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


def request_latency_ns(seed: int, request: int, stream: int, median_ns: int, sigma: float) -> int:
    """:func:`latency_ns` as a Python int, without the compiled call when latency has no spread.

    ``sigma <= 0`` gives the median itself (what the compiled function returns then), so a
    request on a zero-spread model costs no dispatch into compiled code.
    """
    if sigma <= 0.0:
        return int(median_ns)
    return int(latency_ns(seed, request, stream, median_ns, sigma))
