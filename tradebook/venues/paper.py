"""The paper venue: a broker with its own books, filling orders with the calibrated simulator.

:class:`PaperVenue` is the first adapter of the venue port
(:class:`tradebook.venues.base.VenuePort`). It behaves like a broker account, not like
a function of the order manager: it keeps its own durable state (every order it
received, by ``client_order_id``, every acknowledgement, fill, cancel and replace, and
the account's cash and positions) in a write-ahead :class:`~tradebook.store.journal.Journal`
in ``state_dir``, separate from the order manager's, so that after a crash the two can
be reconciled. Orders are filled by one :class:`~tradebook.sim.engine.SimEngine` per
instrument (seeded, so a replay is reproducible), with the FillModel's cost curve, fees
and latencies.

Time. The venue's clock is the market data: it advances with :meth:`PaperVenue.on_quotes`,
:meth:`~PaperVenue.on_trades`, :meth:`~PaperVenue.feed` (recorded frames) and
:meth:`~PaperVenue.advance_to`. A submit, cancel or replace is a request stamped with the
venue's current time; it reaches the matching engine after the model's submit-to-ack
latency, i.e. once later data (or ``advance_to``) has been given. Requests on one
connection arrive in the order they were sent (as over one TCP connection): a cancel or
replace whose latency draw would overtake its order's earlier request is stamped so that
it arrives just after it. Before any market data, a submit is stamped with the intent's
``ts_ns``. Events carry ``ts_event_ns`` = the simulated venue time of what happened
(arrival, match, expiry) and ``ts_init_ns`` = ``clock()`` (wall time by default).

Events. ``accepted`` when the order reaches the venue; ``filled`` for each execution,
with a :class:`~tradebook.model.orders.Fill` whose ``fill_id`` is ``"<venue_order_id>-<n>"``
(unique, deterministic); ``cancelled`` (on request; IOC/FOK remainders, reason given),
``expired`` (DAY orders at the session close), ``replaced``/``replace_rejected``,
``cancel_rejected``; ``rejected`` at submit for bad orders, with the reason. Every state
change is journaled, and made durable (one ``fdatasync`` for everything journaled since the
last one: group commit) *before* its event is delivered or a query answers, and events are delivered
after the engine has finished the call that produced them, so a handler may submit from
inside an event. Events produced while no handler is connected are not replayed later:
like a broker's stream, the venue's state (:meth:`~PaperVenue.fills`,
:meth:`~PaperVenue.open_orders`) is what reconciliation reads.

Refusals. An order the venue refuses never exists at the venue (as at Binance and
Alpaca, where a refused request creates no order): it gets a ``rejected`` event, nothing
is journaled and ``order_status`` does not know it. A ``client_order_id`` the venue has
already received is refused with ``rejected`` / 'duplicate client order id' (the event
has no ``venue_order_id``; the original order is untouched).

Accounts (decisions where the issue is silent):

- One cash balance in ``currency``. Instruments must be quoted in it; USD-pegged
  stablecoins (USDT, USDC) count as USD at par, so BTCUSDT trades from a USD account.
- Equities and crypto spot: a *cash account*. A buy needs cash for quantity x reference
  price x multiplier plus the taker fee, net of what working buys already reserve (the
  reference price is the limit, else the stop, else the ask in force at submit); a sell
  needs the position, net of working sells: no short selling. Refusal reason
  'insufficient buying power' / 'insufficient position'.
- Futures: margined; ``futures_initial_margin`` per contract (default 15,000 in the
  account currency, about CME's E-mini S&P 500 initial margin in 2024), charged on the
  largest absolute position the working orders could reach. FX spot: margined at
  ``fx_margin_rate`` of the notional (default 2%, the US retail limit of 50:1 on majors).
  Realised P&L and fees go to cash when a margined position is reduced.
- Equity = cash + spot positions and unrealised P&L of margined positions, marked at
  the mid of the last valid quote (the average entry price before any quote).
  Buying power = cash + unrealised margined P&L - cash reserved by working spot buys -
  initial margin of margined positions and working orders.
- Fees are computed in Decimal from the model's schedule on the fill's Decimal price and
  quantity. Fill prices are the engine's (a walk of the book gives an average price off
  the tick grid), kept to a hundredth of the tick's precision; quantities are on the lot.
- ``reduce_only`` orders that would not reduce the position are refused.

Restart. On construction the venue replays its journal: account, positions, fills and
orders come back as they were, and every working order is put back into a fresh engine
with its remaining quantity and current limit, at the last journaled venue time (its
arrival takes a new latency draw). What is lost: the queue position of a resting order
(it rejoins behind the touch as if newly arrived), and whether an untouched stop had
triggered (a stop with fills is resubmitted as what it became: market, or limit for a
stop-limit; one without fills waits for its trigger again). Pending cancels and
replaces the venue had received are sent again. Fills journaled but not delivered
before the crash are in :meth:`~PaperVenue.fills` for reconciliation.

How each operation, order type, time in force and status maps to the brokers
----------------------------------------------------------------------------

Operations (see also :mod:`tradebook.venues.base`):

| paper venue | Alpaca (alpaca-py ``TradingClient``) | ccxt (Binance spot) | Interactive Brokers (ib-async ``IB``) |
|---|---|---|---|
| ``submit`` | ``submit_order(<Market/Limit/Stop/StopLimit>OrderRequest(client_order_id=...))`` | ``create_order(symbol, type, side, amount, price, params={'newClientOrderId': ...})`` | ``placeOrder(contract, order)`` with ``order.orderRef`` = client order id |
| ``cancel`` | ``cancel_order_by_id(order_id)`` | ``cancel_order(id, symbol)`` (or ``params={'origClientOrderId': ...}``) | ``cancelOrder(order)`` |
| ``replace`` | ``replace_order_by_id(order_id, ReplaceOrderRequest(qty, limit_price, stop_price))`` | ``edit_order`` -> ``POST /api/v3/order/cancelReplace`` (atomic cancel + new: new exchange id, queue lost) | ``placeOrder`` again with the same ``orderId`` and changed fields |
| ``order_status`` | ``get_order_by_client_id`` | ``fetch_order(id, symbol, params={'origClientOrderId': ...})`` | ``trades()`` / ``reqCompletedOrders`` by ``orderRef`` |
| ``open_orders`` | ``get_orders(GetOrdersRequest(status=OPEN))`` | ``fetch_open_orders(symbol)`` | ``reqAllOpenOrders`` / ``openTrades()`` |
| ``positions`` | ``get_all_positions`` | ``fetch_balance`` (spot: base-asset balances) | ``reqPositions`` / ``positions()`` |
| ``account`` | ``get_account`` (cash, equity, buying_power) | ``fetch_balance`` (quote-asset free/used) | ``accountSummary`` (TotalCashValue, NetLiquidation, BuyingPower) |
| ``fills`` | ``get_activities`` (FILL) / ``TradingStream`` ``trade_updates`` | ``fetch_my_trades`` | ``reqExecutions`` / ``fills()`` |
| ``on_quotes``/``on_trades`` | ``StockDataStream``/``CryptoDataStream`` ``subscribe_quotes``/``subscribe_trades`` | ``watch_ticker``/``watch_trades`` (ccxt.pro), bookTicker | ``reqTickByTickData('BidAsk'/'AllLast')`` / ``reqMktData`` |

Order types:

| ours | Alpaca | ccxt (Binance spot) | IB |
|---|---|---|---|
| market | ``OrderType.MARKET`` (``MarketOrderRequest``) | ``'market'`` (MARKET) | ``MarketOrder`` (``'MKT'``) |
| limit | ``OrderType.LIMIT`` (``limit_price``) | ``'limit'`` (LIMIT + ``timeInForce``) | ``LimitOrder`` (``'LMT'``, ``lmtPrice``) |
| stop | ``OrderType.STOP`` (``stop_price``) | ``'market'`` + ``params={'stopLossPrice': p}`` (STOP_LOSS; triggers on the last trade price, not the quote) | ``StopOrder`` (``'STP'``, ``auxPrice``) |
| stop_limit | ``OrderType.STOP_LIMIT`` (``stop_price``, ``limit_price``) | ``'limit'`` + ``params={'stopLossPrice': p}`` (STOP_LOSS_LIMIT) | ``StopLimitOrder`` (``'STP LMT'``, ``auxPrice``, ``lmtPrice``) |

Time in force:

| ours | Alpaca | ccxt (Binance spot) | IB |
|---|---|---|---|
| day | ``TimeInForce.DAY`` (equities; crypto has none) | none: the adapter cancels at 00:00 UTC itself | ``tif='DAY'`` |
| gtc | ``TimeInForce.GTC`` | ``'GTC'`` | ``tif='GTC'`` |
| ioc | ``TimeInForce.IOC`` | ``'IOC'`` (remainder ends EXPIRED) | ``tif='IOC'`` |
| fok | ``TimeInForce.FOK`` | ``'FOK'`` (unfilled ends EXPIRED) | ``tif='FOK'`` |

Statuses (what each broker reports -> ours):

| ours | Alpaca ``OrderStatus`` | Binance ``status`` (ccxt unified) | IB ``orderStatus.status`` |
|---|---|---|---|
| pending | (ours only: durable, not sent) | - | - |
| submitted | ``pending_new``, ``accepted`` | ``PENDING_NEW`` (``open``) | ``PendingSubmit``, ``ApiPending`` |
| accepted | ``new`` | ``NEW`` (``open``) | ``PreSubmitted`` (held, e.g. untriggered stop), ``Submitted`` |
| partially_filled | ``partially_filled`` | ``PARTIALLY_FILLED`` (``open``, filled > 0) | ``Submitted`` with ``filled`` > 0 |
| filled | ``filled`` | ``FILLED`` (``closed``) | ``Filled`` |
| pending_cancel | ``pending_cancel`` | - (cancel answers synchronously) | ``PendingCancel`` |
| pending_replace | ``pending_replace`` | - (cancelReplace answers synchronously) | - (a modify keeps the status) |
| cancelled | ``canceled`` | ``CANCELED`` (``canceled``); IOC/FOK remainders ``EXPIRED`` | ``Cancelled``, ``ApiCancelled`` |
| expired | ``expired``, ``done_for_day`` | ``EXPIRED`` (``expired``) | ``Cancelled`` at the session end (no separate status) |
| rejected | ``rejected`` (or HTTP 403/422 at submit: no order) | ``REJECTED`` (or ``InsufficientFunds``/``InvalidOrder`` at submit: no order) | ``Inactive`` with an ``errorEvent`` |
| (replaced) | ``replaced`` (new order in ``replaced_by``) | new order id from cancelReplace | same ``orderId``, new ``openOrder`` fields |

Refusal reasons brokers give for what this venue refuses: duplicate id (Alpaca 422
'client_order_id must be unique', Binance -2010 'Duplicate order sent.', IB error 103
'Duplicate order id'); buying power (Alpaca 403 'insufficient buying power', Binance
-2010 'Account has insufficient balance', IB 201 'Order rejected'); tick/lot/notional
(Alpaca 422, Binance -1013 'Filter failure: PRICE_FILTER/LOT_SIZE/NOTIONAL', IB 110
'The price does not conform to the minimum price variation').
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, ROUND_HALF_EVEN, Context, Decimal, Rounded, getcontext
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tradebook.errors import (
    ConfigError,
    ConformanceError,
    DataError,
    OrderError,
    StoreError,
    TradebookError,
    UnknownInstrumentError,
)
from tradebook.store.journal import Journal, JournalCorruptError
from tradebook.store.records import encode_record
from tradebook.model.instruments import AssetClass, Instrument, Side, get_instrument, to_decimal
from tradebook.model.orders import (
    Fill,
    OrderEvent,
    OrderEventType,
    OrderIntent,
    OrderStatus,
    OrderType,
    TimeInForce,
)
from tradebook.model.time import now_ns
from tradebook.sim import orders as sim_orders
from tradebook.sim.engine import EngineOrder, SimEngine
from tradebook.sim.fill_model import FillModel
from tradebook.sim.orders import (
    LOT_DUST,
    OrderSpec,
    book_levels,
    conformed_order,
    quote_arrays,
    request_latency_ns,
    trade_arrays,
)
from tradebook.venues.base import (
    AccountState,
    BatchEventHandler,
    Capability,
    EventHandler,
    VenueOrderState,
    VenuePort,
)

JOURNAL_NAME = "paper_venue.journal"
DEFAULT_FUTURES_INITIAL_MARGIN = Decimal("15000")  # per contract; about CME E-mini S&P 500 in 2024
DEFAULT_FX_MARGIN_RATE = Decimal("0.02")  # 50:1, the US retail limit on major pairs
# Quote currencies worth one unit of the account currency (stablecoins at par).
PAR_CURRENCIES: dict[str, frozenset[str]] = {"USD": frozenset({"USD", "USDT", "USDC"})}
_MARGINED = (AssetClass.FUTURE, AssetClass.FX_SPOT)
_BPS = Decimal(10_000)
_ZERO = Decimal(0)
_SHAPE_CACHE_SIZE = 1024  # order shapes remembered per instrument
_TEXT_CACHE_SIZE = 4096  # strategy ids remembered as JSON text
_FILL_MEMO_SIZE = 4096  # fill sizes and prices remembered per instrument, each
# Exact arithmetic for the running sums of what working orders hold (never rounds: see PaperVenue._hold).
_EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)

try:  # what encode_record writes text with when orjson is there (the order path's records below)
    from orjson import dumps as _json_dumps
except ImportError:  # pragma: no cover - orjson comes with ccxt; the records then go through encode_record
    _json_dumps = None
# The order path's records (order, accepted, fill) are formatted without building a dict, to the bytes
# encode_record writes for that dict (tests/venues/test_paper.py holds them to it): keys in the same order,
# Decimals as {"$d":"<str>"} (str of a Decimal never needs escaping), ints within what orjson writes
# (64 bits) with %d, text through orjson itself. A value of any other kind sends the record the slow way.
_JSON_INT_MIN, _JSON_INT_MAX = -(1 << 63), (1 << 64) - 1
# The order record in two parts: what every order of one shape (_Shape) writes alike, formatted once, and the rest;
# built as bytes (orjson's output goes in as it is, and the record needs no encoding).
_ORDER_RECORD = (b'{"kind":"order","ts":%d,"client_order_id":%b,"venue_order_id":%b-%d","instrument_id":%b,%b,'
                 b'"reference_price":%b,"reduce_only":%b,"intent_id":%b,"strategy_id":%b}')
_ORDER_SHAPE_TERMS = ('"side":%s,"order_type":%s,"time_in_force":%s,"quantity":%s,"limit_price":%s,"stop_price":%s,'
                      '"expire_ts_ns":%d')
_ACCEPTED_RECORD = '{"kind":"accepted","ts":%d,"client_order_id":%s}'
_FILL_RECORD = ('{"kind":"fill","ts":%d,"client_order_id":%s,"fill_id":%s,"quantity":{"$d":"%s"},"price":{"$d":"%s"},'
                '"fee":{"$d":"%s"},"liquidity":"%s","ts_init_ns":%d,"cash":{"$d":"%s"},"position":{"$d":"%s"}}')


@dataclass(slots=True)
class _VenueOrder:
    """One order as the venue holds it (mutable: the venue's book, journaled on every change)."""

    client_order_id: str
    venue_order_id: str
    instrument_id: str
    side: Side
    order_type: OrderType
    time_in_force: TimeInForce
    quantity: Decimal
    limit_price: Decimal | None
    stop_price: Decimal | None
    expire_ts_ns: int
    reference_price: Decimal | None  # what a working buy reserves cash at
    received_ts_ns: int
    reduce_only: bool = False
    acked: bool = False
    done_status: OrderStatus | None = None
    filled_qty: Decimal = _ZERO
    notional: Decimal = _ZERO
    fees: Decimal = _ZERO
    n_fills: int = 0
    reason: str = ""
    cancel_pending: bool = False
    # a replace received and not yet answered: (quantity, limit, arrival ns); None fields unchanged
    replace_pending: tuple[Decimal | None, Decimal | None, int] | None = None
    engine_id: int | None = None
    engine_offset: Decimal = _ZERO  # filled before the engine got the order (a restart): it holds the rest
    last_arrival_ns: int = -sim_orders.NEVER_NS
    # while working: (remaining, terms, how many of them are negative) it adds to its instrument's running
    # sums (PaperVenue._hold)
    held: tuple[Decimal, tuple[Decimal, ...], int] | None = None

    @property
    def sign(self) -> int:
        return 1 if self.side is Side.BUY else -1

    @property
    def remaining(self) -> Decimal:
        return self.quantity - self.filled_qty

    @property
    def is_done(self) -> bool:
        return self.done_status is not None

    @property
    def status(self) -> OrderStatus:
        if self.done_status is not None:
            return self.done_status
        if self.cancel_pending:
            return OrderStatus.PENDING_CANCEL
        if self.replace_pending is not None:
            return OrderStatus.PENDING_REPLACE
        if not self.acked:
            return OrderStatus.SUBMITTED
        return OrderStatus.PARTIALLY_FILLED if self.filled_qty > 0 else OrderStatus.ACCEPTED

    def state(self) -> VenueOrderState:
        return VenueOrderState(
            client_order_id=self.client_order_id, venue_order_id=self.venue_order_id,
            instrument_id=self.instrument_id, status=self.status, quantity=self.quantity,
            filled_qty=self.filled_qty, avg_price=self.notional / self.filled_qty if self.filled_qty > 0 else None,
            limit_price=self.limit_price, stop_price=self.stop_price)


class _Shape:
    """One order shape of an instrument, conformed (PaperVenue._order_shape): what its orders share.

    ``spec``: the engine's order; ``quantity``, ``limit``, ``stop``: the conformed Decimals (None
    where not given); ``record_terms``: their part of the 'order' journal record, formatted once
    (None when a value is not one the fast path writes: those records go through encode_record).
    """

    __slots__ = ("spec", "quantity", "limit", "stop", "record_terms")

    def __init__(self, spec: OrderSpec, quantity: Decimal, limit: Decimal | None, stop: Decimal | None,
                 side: Side, order_type: OrderType, tif: TimeInForce) -> None:
        self.spec, self.quantity, self.limit, self.stop = spec, quantity, limit, stop
        expire = int(spec.expire_ts_ns)
        self.record_terms = None
        if _json_dumps is not None and _JSON_INT_MIN <= expire <= _JSON_INT_MAX \
                and quantity.__class__ is Decimal and (limit is None or limit.__class__ is Decimal) \
                and (stop is None or stop.__class__ is Decimal):
            self.record_terms = (_ORDER_SHAPE_TERMS % (
                _ENUM_JSON[side], _ENUM_JSON[order_type], _ENUM_JSON[tif], _decimal_json(quantity),
                _decimal_json(limit), _decimal_json(stop), expire)).encode()


@dataclass(slots=True)
class _Slot:
    """One instrument's engine and the venue's bookkeeping of its requests and working orders."""

    instrument: Instrument
    model: FillModel
    engine: SimEngine | None = None  # set right after the slot: the engine's listeners are bound to it
    n_requests: int = 0  # mirrors the engine's request numbering (latency draws depend on it)
    last_request_ns: int = -sim_orders.NEVER_NS
    processed_ns: int = -sim_orders.NEVER_NS  # requests arriving at or before this have been processed
    orders: dict[int, _VenueOrder] = field(default_factory=dict)  # engine order id -> the venue's order
    # What the fill path needs per fill, converted once:
    margined: bool = False
    fee_rates: tuple[Decimal, Decimal, Decimal] = (_ZERO, _ZERO, _ZERO)  # (maker bps, taker bps, per unit)
    lot_dust: float = 0.0  # what the engine leaves of a completed order, at most
    ack_median_ns: int = 0  # submit-to-ack latency (the venue stamps requests with the engine's draws)
    latency_sigma: float = 0.0
    # Running sums over the working orders (PaperVenue._hold and _release), exact, so that the buying-power
    # and position checks of a new order do not rescan every working order:
    n_held: int = 0  # working orders
    buy_qty: Decimal = _ZERO  # remaining of working buys
    sell_qty: Decimal = _ZERO  # remaining of working sells
    reserved: Decimal = _ZERO  # spot: notional + taker fee of working buys; margined: taker fees of priced orders
    unpriced: dict[str, _VenueOrder] = field(default_factory=dict)  # margined, no reference: fee at today's price
    negative_terms: int = 0  # held values below zero (negative prices or fee rates): the sums prove nothing then
    shapes: dict[tuple, _Shape] = field(default_factory=dict)  # what PaperVenue._order_shape made of each shape
    instrument_json: bytes = b""  # the instrument id as JSON text (the 'order' record)
    # the (reference price, quantity) objects of the last market order whose minimum notional was checked and met
    notional_met: tuple[Decimal | None, Decimal | None] = (None, None)
    # every order with a replace pending (and some answered since): _settle_replaces skips the scan without one
    replacing: dict[str, _VenueOrder] = field(default_factory=dict)
    fill_quantities: dict[float, Decimal] = field(default_factory=dict)  # engine fill size -> lots, as a Decimal
    fill_prices: dict[float, Decimal] = field(default_factory=dict)  # engine fill price -> PaperVenue._fill_price


_ENUM_JSON = {member: f'"{member.value}"' for enum in (Side, OrderType, TimeInForce) for member in enum}


def _json_text(text: str) -> bytes:
    """``text`` as orjson writes it. Plain printable ASCII without quotes or backslashes, which JSON writes
    as it is, is quoted here: orjson starts every call with a buffer of 1 kB from malloc, and on a heap
    that keeps growing (an order manager's pending records) those come from fresh pages: page faults
    that cost more than the whole record (about 2 per order in the replay bench)."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return b'"%b"' % text.encode()
    return _json_dumps(text)


def _json_str(text: str) -> str:
    """:func:`_json_text` as text."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return '"%s"' % text
    return _json_dumps(text).decode()


def _decimal_json(value: Decimal | None) -> str:
    """How encode_record writes a Decimal (or None) inside a record."""
    return "null" if value is None else '{"$d":"%s"}' % value


def _dec(value: float) -> Decimal:
    return Decimal(repr(float(value)))


@lru_cache(maxsize=64)
def _price_steps(exponent: int) -> tuple[Decimal, Decimal]:
    """(a hundredth of the tick's precision, the tick's precision) for a tick written with ``exponent``."""
    return Decimal(1).scaleb(exponent - 2), Decimal(1).scaleb(exponent)


def _remember(memo: dict[float, Decimal], raw: float, value: Decimal) -> None:
    """Keep ``value``, converted from the engine's float ``raw``, in a small per-instrument memo."""
    if not raw:
        return  # 0.0 and -0.0 are one key but write differently: never remembered
    if len(memo) >= _FILL_MEMO_SIZE:
        memo.clear()
    memo[raw] = value


_DIGIT_TESTS: dict[int, Context] = {}  # precision -> a context that traps any rounding (see _exact_enough)


def _exact_enough(value: Decimal, prec: int) -> bool:
    """Whether ``value``, written with its own exponent, has at most ``prec`` digits (see _surely_acceptable).

    Asked of the context: taking ``value`` to ``prec`` digits signals Rounded exactly when its
    coefficient has more (even if the digits cut are zeros); cheaper than counting its digits.
    """
    test = _DIGIT_TESTS.get(prec)
    if test is None:
        test = _DIGIT_TESTS[prec] = Context(prec=prec, Emax=MAX_EMAX, Emin=MIN_EMIN, traps=[Rounded])
    try:
        test.plus(value)
    except Rounded:
        return False
    return True


def stored_models(store: Any, calibrations: Iterable[str] | str) -> tuple[dict[str, FillModel], dict[str, Instrument]]:
    """The fill models of stored calibrations (``'BTCUSDT.BINANCE@v1'``, or an instrument id for its latest),
    with their instruments from the store; one calibration per instrument."""
    from tradebook.sim.fidelity import load_model

    names = [calibrations] if isinstance(calibrations, str) else list(calibrations)
    if not names:
        raise ConfigError("calibrations is empty; expected names like 'BTCUSDT.BINANCE@v1' or instrument ids")
    models: dict[str, FillModel] = {}
    instruments: dict[str, Instrument] = {}
    for name in names:
        model = load_model(store, name)
        if model.instrument_id in models:
            raise ConfigError(f"calibrations name {model.instrument_id} twice ({names}); expected one per "
                              "instrument")
        models[model.instrument_id] = model
        instruments[model.instrument_id] = store.instrument(model.instrument_id)
    return models, instruments


class PaperVenue(VenuePort):
    """A paper broker account filled by the calibrated simulator, with durable state of its own.

    ``models``: one FillModel per instrument id traded here (its fees and latency apply);
    ``instruments``: the instruments (bundled ones are looked up when not given);
    ``state_dir``: where the venue's journal lives (created if needed; an existing
    journal is recovered and its account wins over ``starting_cash``). ``clock()``
    stamps ``ts_init_ns`` (wall time by default). ``feed_has_trades``: per instrument,
    whether trades will be fed (resting orders then fill by the trade rule; without,
    by the quote rule); by default True except for FX spot. ``sync=False`` skips fsync
    (throwaway replays only).
    """

    name = "paper"
    is_live = False
    # a cash account: no shorting; quantities on the instrument's lot (whole shares for equities)
    capabilities = frozenset({Capability.SIMULATED, Capability.SUBMIT_MANY, Capability.NATIVE_REPLACE})

    def __init__(
        self,
        state_dir: str | Path,
        *,
        account_id: str = "paper",
        starting_cash: Decimal = Decimal("100000"),
        currency: str = "USD",
        models: Mapping[str, FillModel],
        instruments: Mapping[str, Instrument] | None = None,
        seed: int = 0,
        clock: Callable[[], int] | None = None,
        feed_has_trades: bool | Mapping[str, bool] | None = None,
        futures_initial_margin: Decimal | Mapping[str, Decimal] = DEFAULT_FUTURES_INITIAL_MARGIN,
        fx_margin_rate: Decimal = DEFAULT_FX_MARGIN_RATE,
        sync: bool = True,
    ) -> None:
        if not isinstance(account_id, str) or not account_id:
            raise ConfigError(f"account_id is {account_id!r}; expected a non-empty string")
        cash = to_decimal(starting_cash, "starting_cash")
        if cash < 0:
            raise ConfigError(f"starting_cash is {cash}; expected an amount >= 0")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ConfigError(f"seed is {seed!r}; expected an integer >= 0")
        if not models:
            raise ConfigError("models is empty; expected at least one FillModel (instrument id -> model)")
        self.account_id = account_id
        self.currency = str(currency).upper()
        self.seed = int(seed)
        self._clock = clock or now_ns
        self._fx_margin_rate = to_decimal(fx_margin_rate, "fx_margin_rate")
        self._futures_margin = futures_initial_margin
        self._slots: dict[str, _Slot] = {}
        for instrument_id, model in models.items():
            self._slots[instrument_id] = self._slot(instrument_id, model, instruments, feed_has_trades)

        self._lock = threading.RLock()
        self._handler: EventHandler | None = None
        self._outbox: deque[OrderEvent] = deque()
        self._delivering = False
        self._closed = False
        self._batch_handler: BatchEventHandler | None = None
        self._uncommitted = False  # journaled since the last commit
        self._unwritten: list[bytes] = []  # journal records of the current call, written at its end
        self._orders: dict[str, _VenueOrder] = {}  # every order received, by client order id
        self._working: dict[str, _VenueOrder] = {}  # the ones not done yet, in arrival order
        self._fills: list[Fill] = []
        self._cash = cash
        self._positions: dict[str, Decimal] = {}
        self._avg_price: dict[str, Decimal] = {}
        self._marks: dict[str, Decimal] = {}
        self._touch: dict[str, tuple[Decimal, Decimal]] = {}  # last valid (bid, ask)
        self._books: dict[str, tuple[int, float, float, float, float]] = {}  # quote at the last clean close
        self._now_ns: int | None = None
        self._next_order_number = 1
        self._text_json: dict[str, bytes] = {}  # strategy ids as JSON text (the 'order' record)
        # no margined instrument: no unrealised P&L to add to buying power (not even a loop over the positions)
        self._any_margined = any(slot.margined for slot in self._slots.values())

        self.state_dir = Path(state_dir)
        self._journal = Journal(self.state_dir / JOURNAL_NAME, sync=sync)
        if len(self._journal):
            self._recover()
        else:
            # Venue order ids (and the fill ids made from them) carry this book's own id:
            # two paper books of the same account name (another state_dir) in one store
            # must not produce the same fill id, or one's fills would shadow the other's.
            self.book_id = os.urandom(3).hex()
            self._write({"kind": "open", "account_id": account_id, "currency": self.currency,
                         "starting_cash": cash, "ts": 0, "book_id": self.book_id})
            self._write_out()
        self._order_id_prefix = self.order_id_prefix  # the book id is known now; once per order otherwise
        # the venue order ids as JSON text, but their closing quote: '"<prefix>' ('-<number>"' follows)
        self._order_id_json = _json_dumps(self._order_id_prefix)[:-1] if _json_dumps is not None else b""
        self._restore_working_orders()

    @property
    def order_id_prefix(self) -> str:
        """What this book's venue order ids start with: ``<account>-<book id>``."""
        return f"{self.account_id}-{self.book_id}" if self.book_id else self.account_id

    def _slot(self, instrument_id: str, model: FillModel, instruments: Mapping[str, Instrument] | None,
              feed_has_trades: bool | Mapping[str, bool] | None) -> _Slot:
        if not isinstance(model, FillModel):
            raise ConfigError(f"models[{instrument_id!r}] is a {type(model).__name__}; expected a FillModel")
        if model.instrument_id != instrument_id:
            raise ConfigError(f"models[{instrument_id!r}] is a fill model for {model.instrument_id}; "
                              "expected the key to be the model's instrument id")
        instrument = (instruments or {}).get(instrument_id) or get_instrument(instrument_id)
        allowed = PAR_CURRENCIES.get(self.currency, frozenset({self.currency}))
        if instrument.currency not in allowed:
            raise ConfigError(f"{instrument_id} is quoted in {instrument.currency}; this paper account holds "
                              f"{self.currency}; expected instruments quoted in {sorted(allowed)}")
        if isinstance(feed_has_trades, Mapping):
            has_trades = bool(feed_has_trades.get(instrument_id, instrument.asset_class is not AssetClass.FX_SPOT))
        elif feed_has_trades is None:
            has_trades = instrument.asset_class is not AssetClass.FX_SPOT
        else:
            has_trades = bool(feed_has_trades)
        fees, latency = model.fees, model.latency
        slot = _Slot(instrument=instrument, model=model, margined=instrument.asset_class in _MARGINED,
                     fee_rates=(_dec(fees.maker_bps), _dec(fees.taker_bps), _dec(fees.per_unit)),
                     lot_dust=LOT_DUST * float(instrument.lot_size),
                     ack_median_ns=int(latency.submit_to_ack_median_ns), latency_sigma=float(latency.sigma),
                     instrument_json=_json_dumps(instrument_id)
                     if _json_dumps is not None and instrument_id.__class__ is str else b"")
        slot.engine = SimEngine(model, instrument, seed=self.seed, feed_has_trades=has_trades,
                                on_fill_state=partial(self._on_engine_fill, slot),
                                on_status_state=partial(self._on_engine_status, slot))
        return slot

    @classmethod
    def from_store(cls, store: Any, calibrations: Iterable[str], state_dir: str | Path, **kwargs: Any) -> PaperVenue:
        """A paper venue with the stored calibrations (``'BTCUSDT.BINANCE@v1'``, or an instrument id for its latest).

        The instruments come from the store too. Other keyword arguments as for the constructor.
        """
        models, instruments = stored_models(store, calibrations)
        return cls(state_dir, models=models, instruments=instruments, **kwargs)

    # -- the port ------------------------------------------------------------------------
    async def connect(self, on_event: EventHandler, *, on_events: BatchEventHandler | None = None) -> None:
        if not callable(on_event):
            raise ConfigError(f"on_event is a {type(on_event).__name__}; expected a callable taking an OrderEvent")
        if on_events is not None and not callable(on_events):
            raise ConfigError(f"on_events is a {type(on_events).__name__}; expected a callable taking a list of "
                              "OrderEvents")
        with self._lock:
            self._check_open()
            self._handler = on_event
            self._batch_handler = on_events

    async def close(self) -> None:
        """Stop delivering events and close the journal; working orders stay in it for the next PaperVenue.

        A clean close also writes each book's quote in force (``book``): the next PaperVenue
        starts its engines from it, so an order in flight (received, not yet arrived at the
        matching engine) meets the same book after a restart as without one, instead of an
        empty book that would cancel a market order on arrival.
        """
        with self._lock:
            self._handler = self._batch_handler = None
            if not self._closed and self._working:
                for instrument_id, slot in self._slots.items():
                    quote = slot.engine.prevailing_quote() if slot.engine is not None else None
                    if quote is not None:
                        ts, bid, ask, bid_sz, ask_sz = quote
                        self._write({"kind": "book", "ts": int(ts), "instrument_id": instrument_id, "bid": bid,
                                     "ask": ask, "bid_sz": bid_sz, "ask_sz": ask_sz})
                self._write_out()
            self._commit()
            self._closed = True
            self._journal.close()

    async def submit(self, intent: OrderIntent) -> None:
        with self._lock:
            if self._closed or self._handler is None:
                self._check_connected()  # raises, saying which
            try:
                self._submit(intent)
            finally:
                if self._outbox or self._delivering:
                    self._deliver()
                else:
                    self._write_out()  # what _deliver does when there is nothing to deliver (an accepted order)

    async def submit_many(self, intents: Sequence[OrderIntent]) -> None:
        """:meth:`submit` of each intent in order, under one lock: the same events, journal records and
        refusals (a refused order does not stop the others), with the records written in one write
        and the events delivered together at the end.

        Bad input raises as :meth:`submit` does, after the intents before it were taken and their
        events delivered; the intents after it are not sent (as a loop of submits would stop there).
        """
        with self._lock:
            if self._closed or self._handler is None:
                self._check_connected()  # raises, saying which
            try:
                for intent in intents:
                    self._submit(intent)
            finally:
                if self._outbox or self._delivering:
                    self._deliver()
                else:
                    self._write_out()  # what _deliver does when there is nothing to deliver (accepted orders)

    async def cancel(self, client_order_id: str) -> None:
        with self._lock:
            self._check_connected()
            try:
                self._cancel(client_order_id)
            finally:
                self._deliver()

    async def replace(self, client_order_id: str, *, quantity: Decimal | None = None,
                      limit_price: Decimal | None = None, stop_price: Decimal | None = None) -> None:
        with self._lock:
            self._check_connected()
            try:
                self._replace(client_order_id, quantity, limit_price, stop_price)
            finally:
                self._deliver()

    async def order_status(self, client_order_id: str) -> VenueOrderState | None:
        with self._lock:
            self._commit()  # answers only from durable state
            order = self._orders.get(client_order_id)
            return order.state() if order is not None else None

    async def open_orders(self) -> list[VenueOrderState]:
        with self._lock:
            self._commit()  # answers only from durable state
            return [o.state() for o in self._working.values()]

    async def positions(self) -> dict[str, Decimal]:
        """Net signed position per instrument; flat instruments are left out."""
        with self._lock:
            self._commit()  # answers only from durable state
            return {k: v for k, v in self._positions.items() if v != 0}

    async def account(self) -> AccountState:
        with self._lock:
            self._commit()  # answers only from durable state
            return AccountState(account_id=self.account_id, currency=self.currency, cash=self._cash,
                                equity=self._equity(), buying_power=self._buying_power())

    async def fills(self, since_ns: int = 0) -> list[Fill]:
        with self._lock:
            self._commit()  # answers only from durable state
            return [f for f in self._fills if f.ts_event_ns >= since_ns]

    # -- market data (the venue's clock) -------------------------------------------------
    @property
    def now_ns(self) -> int | None:
        """The venue's time: the latest market data or ``advance_to`` seen (None before any)."""
        return self._now_ns

    def on_quotes(self, instrument_id: str, ts_ns, bid_px, ask_px, bid_sz, ask_sz, *,
                  levels: tuple | None = None) -> None:
        """L1 quotes for one instrument: scalars, or equal-length arrays in time order; ``levels``, where the
        feed carries the book, (bid_px, bid_sz, ask_px, ask_sz) behind each quote's touch (rows x levels),
        walked level by level before the calibrated implied ladder."""
        with self._lock:
            slot = self._data_slot(instrument_id)
            try:
                slot.engine.on_quotes(ts_ns, bid_px, ask_px, bid_sz, ask_sz, levels=levels)
                self._after_data(instrument_id, slot, ts_ns, bid_px, ask_px, bid_sz, ask_sz)
            finally:
                self._deliver()

    def on_trades(self, instrument_id: str, ts_ns, price, size, aggressor) -> None:
        """Trades for one instrument (aggressor +1 buyer, -1 seller, 0 unknown): scalars or arrays in time order."""
        with self._lock:
            slot = self._data_slot(instrument_id)
            try:
                slot.engine.on_trades(ts_ns, price, size, aggressor)
                self._after_data(instrument_id, slot, ts_ns)
            finally:
                self._deliver()

    def on_market_data(self, instrument_id: str, quotes: tuple | None, trades: tuple | None, *,
                       levels: tuple | None = None) -> None:
        """Quotes and trades of one stretch of time for one instrument, merged in time order (quotes first
        at equal times): the same as :meth:`on_quotes` and :meth:`on_trades` on their runs, in one call.

        ``quotes``: (ts_ns, bid_px, ask_px, bid_sz, ask_sz) arrays; ``trades``: (ts_ns, price,
        size, aggressor) arrays; either may be None or empty. ``levels``: a recorded top-N book behind each
        quote's touch, (bid_px, bid_sz, ask_px, ask_sz), rows x levels (:func:`tradebook.data.frames.book_levels`
        of a top-N frame): marketable orders walk it, resting ones take their queue ahead from it.
        """
        with self._lock:
            slot = self._data_slot(instrument_id)
            try:
                slot.engine.on_data(quotes, trades, levels=levels)
                last = max(int(quotes[0][-1]) if quotes is not None and len(quotes[0]) else -1,
                           int(trades[0][-1]) if trades is not None and len(trades[0]) else -1)
                if last >= 0:  # the venue's time: the last row of either; the touch: the last valid quote
                    has_quotes = quotes is not None and len(quotes[0])
                    self._after_data(instrument_id, slot, np.array((last,), np.int64),
                                     *(quotes[1:] if has_quotes else ()))
            finally:
                self._deliver()

    def feed(self, instrument_id: str, quotes: pd.DataFrame | None, trades: pd.DataFrame | None = None) -> None:
        """Replay recorded frames: quotes and trades merged in time order (quotes first at equal times)."""
        q = quote_arrays(quotes) if quotes is not None and len(quotes) else None
        t = trade_arrays(trades, quotes) if trades is not None and len(trades) else None
        if t is not None:
            t = (*t[:3], t[3].astype(np.float64))
        self.on_market_data(instrument_id, q, t, levels=book_levels(quotes) if q is not None else None)

    def advance_to(self, ts_ns: int) -> None:
        """Let venue time pass to ``ts_ns`` with no data: requests arrive and orders expire by then."""
        with self._lock:
            self._check_open()
            if isinstance(ts_ns, bool) or not isinstance(ts_ns, (int, np.integer)):
                raise DataError(f"advance_to ts_ns is {ts_ns!r}; expected int64 nanoseconds since the epoch, UTC")
            ts = int(ts_ns)
            if self._now_ns is not None and ts < self._now_ns:
                raise DataError(f"advance_to({ts}) goes backwards: the venue is at {self._now_ns}; "
                                "expected a later time")
            try:
                for slot in self._slots.values():
                    slot.engine.advance_to(ts)
                    slot.processed_ns = max(slot.processed_ns, ts)
                    self._now_ns = ts
                    self._settle_replaces(slot)
            finally:
                self._deliver()

    def _data_slot(self, instrument_id: str) -> _Slot:
        self._check_open()
        slot = self._slots.get(instrument_id)
        if slot is None:
            raise UnknownInstrumentError(f"no fill model for {instrument_id!r} at this paper venue; "
                                         f"configured: {sorted(self._slots)}")
        return slot

    def _after_data(self, instrument_id: str, slot: _Slot, ts_ns, *quote) -> None:
        one_row = ts_ns.__class__ is int or np.ndim(ts_ns) == 0  # the live-feed case
        if one_row:
            last = int(ts_ns)
        else:
            if not len(ts_ns):
                return
            last = int(ts_ns[-1])
        self._now_ns = last if self._now_ns is None else max(self._now_ns, last)
        # requests arriving before the last row were processed; one at that time waits for more data
        slot.processed_ns = max(slot.processed_ns, last - 1)
        if quote:
            bid, ask, bid_sz, ask_sz = quote
            if one_row and bid.__class__ is float and ask.__class__ is float and bid_sz.__class__ is float \
                    and ask_sz.__class__ is float:
                # one quote in Python floats: the validity test below without arrays
                if math.isfinite(bid) and math.isfinite(ask) and bid < ask and bid_sz > 0 and ask_sz > 0:
                    self._note_touch(instrument_id, bid, ask)
            else:
                if one_row:
                    quote = tuple((v,) for v in quote)
                bid, ask, bid_sz, ask_sz = (np.atleast_1d(np.asarray(v, dtype=np.float64)) for v in quote)
                with np.errstate(invalid="ignore"):
                    valid = np.flatnonzero(np.isfinite(bid) & np.isfinite(ask) & (bid < ask) & (bid_sz > 0)
                                           & (ask_sz > 0))
                if len(valid):
                    self._note_touch(instrument_id, bid[valid[-1]], ask[valid[-1]])
        self._settle_replaces(slot)

    def _note_touch(self, instrument_id: str, bid: float, ask: float) -> None:
        """The last valid quote: the reference of market orders and the mark of positions."""
        b, a = _dec(bid), _dec(ask)
        self._touch[instrument_id] = (b, a)
        self._marks[instrument_id] = (b + a) / 2

    # -- requests ------------------------------------------------------------------------
    def _reject(self, client_order_id: str, ts: int, reason: str, venue_order_id: str | None = None) -> None:
        self._outbox.append(OrderEvent(client_order_id, OrderEventType.REJECTED, ts, self._clock(),
                                       venue_order_id=venue_order_id, reason=reason))

    def _submit(self, intent: OrderIntent) -> None:
        if intent.__class__ is not OrderIntent and not isinstance(intent, OrderIntent):
            raise OrderError(f"submit takes an OrderIntent, got a {type(intent).__name__}")
        coid = intent.client_order_id
        base_ts = self._now_ns if self._now_ns is not None else int(intent.ts_ns)
        if coid in self._orders:
            self._reject(coid, base_ts, f"duplicate client order id {coid}: this venue already received it "
                                        f"(venue order {self._orders[coid].venue_order_id}); not traded twice")
            return
        instrument_id = intent.instrument_id
        slot = self._slots.get(instrument_id)
        if slot is None:
            self._reject(coid, base_ts, f"no fill model for instrument {instrument_id!r} at this paper "
                                        f"venue; configured: {sorted(self._slots)}")
            return
        # _request_ts without an order, inlined: never before earlier requests
        ts = base_ts if base_ts > slot.last_request_ns else slot.last_request_ns
        k = slot.n_requests
        try:
            # enum members as they are (what the conversions return for them), anything else converted
            side = intent.side if intent.side.__class__ is Side else Side(str(intent.side).lower())
            order_type = intent.order_type if intent.order_type.__class__ is OrderType else \
                OrderType(intent.order_type)
            tif = intent.time_in_force if intent.time_in_force.__class__ is TimeInForce else \
                TimeInForce(intent.time_in_force)
            shape = self._order_shape(slot, intent, side, order_type, tif, ts)
        except (OrderError, ConformanceError, ValueError) as exc:
            self._reject(coid, ts, f"{type(exc).__name__}: {exc}")
            return
        quantity, limit, stop = shape.quantity, shape.limit, shape.stop
        reference = limit if limit is not None else stop
        if reference is None:
            touch = self._touch.get(instrument_id)
            if touch is not None:
                reference = touch[1] if side is Side.BUY else touch[0]
        if order_type is OrderType.MARKET and reference is not None:
            met = slot.notional_met
            # the check depends on the two values alone: the same objects as the last order that met it pass
            if reference is not met[0] or quantity is not met[1]:
                try:
                    slot.instrument.check_notional(reference, quantity)
                except ConformanceError as exc:
                    self._reject(coid, ts, f"ConformanceError: {exc} (market order valued at {reference})")
                    return
                slot.notional_met = (reference, quantity)
        number = self._next_order_number
        # positional, in field order (keywords cost more than the rest of the construction):
        # client_order_id, venue_order_id, instrument_id, side, order_type, time_in_force, quantity,
        # limit_price, stop_price, expire_ts_ns, reference_price, received_ts_ns, reduce_only
        order = _VenueOrder(coid, f"{self._order_id_prefix}-{number}", instrument_id, side, order_type, tif,
                            quantity, limit, stop, int(shape.spec.expire_ts_ns), reference, ts,
                            bool(intent.reduce_only))
        # the running sums prove most orders acceptable (a spot buy's terms come back, held below as they are)
        proof = self._surely_acceptable(order, slot)
        if proof is False:
            refusal = self._refusal_by_scan(order, slot)
            if refusal:
                self._reject(coid, ts, refusal)
                return
        self._write_order(order, intent, shape, slot, number)
        self._next_order_number = number + 1
        self._orders[coid] = order
        self._working[coid] = order
        self._hold(order, slot, proof if proof.__class__ is tuple else None)
        # _send and _count_request, inlined: the engine draws the same latency for request k as the venue would;
        # a new order has filled nothing, so its engine offset stays zero
        oid = slot.engine.submit(shape.spec, ts)
        slot.n_requests = k + 1
        slot.last_request_ns = ts
        order.last_arrival_ns = max(order.last_arrival_ns, slot.engine.last_arrival_ns)
        order.engine_id = oid
        slot.orders[oid] = order

    def _write_order(self, order: _VenueOrder, intent: OrderIntent, shape: _Shape, slot: _Slot,
                     number: int) -> None:
        """Journal the venue's receipt of ``order`` (the 'order' record); ``number``: its venue order number."""
        ts, coid, instrument_id = order.received_ts_ns, order.client_order_id, order.instrument_id
        reference = order.reference_price
        intent_id, strategy_id = intent.intent_id, intent.strategy_id
        terms = shape.record_terms
        if terms is not None and _JSON_INT_MIN <= ts <= _JSON_INT_MAX and coid.__class__ is str \
                and instrument_id.__class__ is str and slot.instrument_json and intent_id.__class__ is str \
                and strategy_id.__class__ is str and (reference is None or reference.__class__ is Decimal):
            self._check_writable()
            strategy_json = self._text_json.get(strategy_id)
            if strategy_json is None:
                if len(self._text_json) >= _TEXT_CACHE_SIZE:
                    self._text_json.clear()
                strategy_json = self._text_json[strategy_id] = _json_dumps(strategy_id)
            self._unwritten.append(_ORDER_RECORD % (
                ts, _json_text(coid), self._order_id_json, number, slot.instrument_json, terms,
                b"null" if reference is None else ('{"$d":"%s"}' % reference).encode(),
                b"true" if order.reduce_only else b"false", _json_text(intent_id), strategy_json))
            self._uncommitted = True
            return
        self._write({"kind": "order", "ts": ts, "client_order_id": coid, "venue_order_id": order.venue_order_id,
                     "instrument_id": instrument_id, "side": order.side.value, "order_type": order.order_type.value,
                     "time_in_force": order.time_in_force.value, "quantity": order.quantity,
                     "limit_price": order.limit_price, "stop_price": order.stop_price,
                     "expire_ts_ns": order.expire_ts_ns, "reference_price": reference,
                     "reduce_only": order.reduce_only, "intent_id": intent_id, "strategy_id": strategy_id})

    @staticmethod
    def _order_shape(slot: _Slot, intent: OrderIntent, side: Side, order_type: OrderType, tif: TimeInForce,
                     ts: int) -> _Shape:
        """The engine's order and the conformed quantity, limit and stop of ``intent`` (:class:`_Shape`).

        Checked once for the engine and the books (:func:`~tradebook.sim.orders.conformed_order`).
        Orders of a shape seen before come from the slot's cache, as in
        :func:`~tradebook.sim.orders.order_maker`: for Decimal amounts the result depends on their
        values alone, and on nothing else but the instrument, except a DAY order's expiry
        (never cached). Refused shapes are never cached: they are checked, and refused, every time.
        The amounts are keyed by their text (one value may be written several ways: each gets its
        entry, with the same answer), which is cheaper than hashing a new Decimal.
        """
        quantity, limit, stop = intent.quantity, intent.limit_price, intent.stop_price
        key = None
        if tif is not TimeInForce.DAY and quantity.__class__ is Decimal and quantity.is_finite() \
                and (limit is None or (limit.__class__ is Decimal and limit.is_finite())) \
                and (stop is None or (stop.__class__ is Decimal and stop.is_finite())):
            key = (side, str(quantity), order_type, tif, None if limit is None else str(limit),
                   None if stop is None else str(stop))
            cached = slot.shapes.get(key)
            if cached is not None:
                return cached
        shape = _Shape(*conformed_order(slot.instrument, side, quantity, order_type.value, limit_px=limit,
                                        stop_px=stop, tif=tif.value, ts_ns=ts), side, order_type, tif)
        if key is not None:
            if len(slot.shapes) >= _SHAPE_CACHE_SIZE:
                slot.shapes.clear()  # sized orders rarely repeat: keep the cache small rather than clever
            slot.shapes[key] = shape
        return shape

    def _send(self, slot: _Slot, order: _VenueOrder, spec: OrderSpec, ts: int, k: int) -> None:
        oid = slot.engine.submit(spec, ts)
        self._count_request(slot, order, ts, k)
        order.engine_id = oid
        order.engine_offset = order.filled_qty
        slot.orders[oid] = order

    def _request_ts(self, slot: _Slot, base_ts: int, order: _VenueOrder | None = None) -> tuple[int, int]:
        """(stamp, request number) of the next request on ``slot``: never before earlier requests nor, for
        ``order``, arriving before its previous request (one connection delivers in order)."""
        ts = max(int(base_ts), slot.last_request_ns)
        k = slot.n_requests
        if order is not None:
            lag = self._latency(slot, k)
            if ts + lag < order.last_arrival_ns:
                ts = order.last_arrival_ns - lag
        return ts, k

    def _latency(self, slot: _Slot, k: int) -> int:
        return request_latency_ns(self.seed, k, 0, slot.ack_median_ns, slot.latency_sigma)

    def _count_request(self, slot: _Slot, order: _VenueOrder, ts: int, k: int) -> int:
        slot.n_requests = k + 1
        slot.last_request_ns = ts
        arrival = ts + self._latency(slot, k)
        order.last_arrival_ns = max(order.last_arrival_ns, arrival)
        return arrival

    def _cancel(self, client_order_id: str) -> None:
        order = self._orders.get(client_order_id)
        ts = self._now_ns if self._now_ns is not None else self._clock()
        if order is None:
            self._outbox.append(OrderEvent(client_order_id, OrderEventType.CANCEL_REJECTED, ts, self._clock(),
                                           reason=f"unknown client order id {client_order_id}: this venue never "
                                                  "received it"))
            return
        if order.is_done:
            self._outbox.append(OrderEvent(client_order_id, OrderEventType.CANCEL_REJECTED, ts, self._clock(),
                                           venue_order_id=order.venue_order_id,
                                           reason=f"order is already {order.done_status.value}"))
            return
        if order.cancel_pending:
            return  # asked already: the answer is on its way
        slot = self._slots[order.instrument_id]
        ts, k = self._request_ts(slot, ts, order)
        self._write({"kind": "cancel_request", "ts": ts, "client_order_id": client_order_id})
        order.cancel_pending = True
        slot.engine.cancel(order.engine_id, ts)
        self._count_request(slot, order, ts, k)

    def _replace(self, client_order_id: str, quantity, limit_price, stop_price) -> None:
        order = self._orders.get(client_order_id)
        ts = self._now_ns if self._now_ns is not None else self._clock()

        def refuse(reason: str) -> None:
            self._outbox.append(OrderEvent(client_order_id, OrderEventType.REPLACE_REJECTED, ts, self._clock(),
                                           venue_order_id=order.venue_order_id if order else None, reason=reason))

        if order is None:
            return refuse(f"unknown client order id {client_order_id}: this venue never received it")
        if order.is_done:
            return refuse(f"order is already {order.done_status.value}")
        if order.cancel_pending or order.replace_pending is not None:
            return refuse(f"order is {order.status.value}; wait for the answer before replacing it")
        if stop_price is not None:
            return refuse("the paper venue cannot move a stop price; cancel and submit a new order")
        if order.order_type not in (OrderType.LIMIT, OrderType.STOP_LIMIT):
            return refuse(f"a {order.order_type.value} order cannot be replaced; expected a limit or stop-limit "
                          "order (replace moves a limit price or quantity)")
        slot = self._slots[order.instrument_id]
        try:
            new_qty = slot.instrument.conform_quantity(quantity) if quantity is not None else None
            new_limit = slot.instrument.conform_price(limit_price) if limit_price is not None else None
        except ConformanceError as exc:
            return refuse(f"ConformanceError: {exc}")
        if new_qty == order.quantity:
            new_qty = None
        if new_limit == order.limit_price:
            new_limit = None
        if new_qty is None and new_limit is None:
            return refuse(f"the replace changes nothing (quantity {order.quantity}, limit {order.limit_price})")
        if new_qty is not None and new_qty <= order.filled_qty:
            return refuse(f"new quantity {new_qty} does not exceed the filled quantity {order.filled_qty}")
        trial = dataclasses.replace(order, quantity=new_qty or order.quantity,
                                    limit_price=new_limit or order.limit_price,
                                    reference_price=new_limit or order.reference_price,
                                    client_order_id=order.client_order_id + "#replace", held=None)
        refusal = self._refusal(trial, slot, replacing=order)
        if refusal:
            return refuse(refusal)
        ts, k = self._request_ts(slot, ts, order)
        try:
            slot.engine.replace(order.engine_id, ts, limit_px=float(new_limit) if new_limit is not None else None,
                                quantity=float(new_qty - order.engine_offset) if new_qty is not None else None)
        except (OrderError, ConformanceError, DataError) as exc:
            return refuse(f"{type(exc).__name__}: {exc}")
        # the engine has the request now: make it durable before anything can answer it
        arrival = self._count_request(slot, order, ts, k)
        self._write({"kind": "replace_request", "ts": ts, "client_order_id": client_order_id, "quantity": new_qty,
                     "limit_price": new_limit, "arrival_ns": arrival})
        order.replace_pending = (new_qty, new_limit, arrival)
        slot.replacing[client_order_id] = order
        return None

    # -- checks before an order exists ------------------------------------------------------
    def _refusal(self, order: _VenueOrder, slot: _Slot, replacing: _VenueOrder | None = None) -> str:
        """Why the account cannot take ``order`` (empty when it can).

        A new order the running sums prove acceptable is passed without rescanning the working
        orders; any other (a possible refusal, a replace, sums that cannot prove it) gets the full
        check, which also words the reason.
        """
        if replacing is None and self._surely_acceptable(order, slot):
            return ""
        return self._refusal_by_scan(order, slot, replacing)

    def _refusal_by_scan(self, order: _VenueOrder, slot: _Slot, replacing: _VenueOrder | None = None) -> str:
        """The full check: what the working orders (but ``replacing``) hold, summed afresh."""
        instrument = slot.instrument
        position = self._positions.get(order.instrument_id, _ZERO)
        if order.reduce_only:
            reduces = position * order.sign < 0 and order.remaining <= abs(position)
            if not reduces:
                return (f"reduce-only {order.side.value} of {order.remaining} would not reduce the position "
                        f"{position} in {order.instrument_id}")
        working = [o for o in self._working.values() if o is not replacing]
        if instrument.asset_class not in _MARGINED and order.side is Side.SELL:
            selling = sum((o.remaining for o in working if o.instrument_id == order.instrument_id
                           and o.side is Side.SELL), _ZERO)
            available = position - selling
            if order.remaining > available:
                return (f"insufficient position: selling {order.remaining} {order.instrument_id} with {available} "
                        f"available ({position} held, {selling} in working sells); a cash account cannot sell short")
            return ""
        if instrument.asset_class is not AssetClass.FUTURE and order.reference_price is None:
            return f"no quote yet for {order.instrument_id}: a market order cannot be valued against buying power"
        before = self._requirement(working)
        if instrument.asset_class in _MARGINED:
            needed = self._requirement([*working, order]) - before
        else:  # a spot buy reserves its own notional and fee, independent of the other orders
            price = order.reference_price or _ZERO
            needed = order.remaining * price * instrument.multiplier + self._fee(slot, order.remaining, price,
                                                                                 maker=False)
        available = self._cash + self._unrealised_margined() - before
        if needed > available:
            return (f"insufficient buying power: the order needs {needed:.2f} {self.currency}, "
                    f"{available:.2f} {self.currency} available")
        return ""

    def _surely_acceptable(self, order: _VenueOrder, slot: _Slot) -> bool | tuple[Decimal, Decimal]:
        """Truthy when the running sums prove the full check (:meth:`_refusal_by_scan`) passes ``order``.

        The same tests on the same values, with what the working orders hold taken from the exact
        running sums instead of a fresh sum. The full check sums in the decimal context (28
        digits) and would round only if the sum needed more digits: with every term >= 0 each of
        its partial sums has at most the digits of the exact total (no larger, no finer), so an
        exact total within the context's precision (:func:`_exact_enough`) means the full check
        sums without rounding, to the same value. False when it may refuse or this cannot be
        proved: the full check then runs. A spot buy's proof is its (notional, taker fee): the
        terms :meth:`_hold` adds for it, computed once.
        """
        remaining = order.remaining
        position = self._positions.get(order.instrument_id, _ZERO)
        if order.reduce_only and not (position * order.sign < 0 and remaining <= abs(position)):
            return False
        prec = getcontext().prec
        if not slot.margined and order.side is Side.SELL:  # a cash account sells what it holds
            selling = slot.sell_qty
            return not slot.negative_terms and _exact_enough(selling, prec) and not remaining > position - selling
        if slot.instrument.asset_class is not AssetClass.FUTURE and order.reference_price is None:
            return False
        before = self._held_requirement(prec)
        if before is None:
            return False
        if slot.margined:
            without = self._margined_requirement(slot, prec)
            with_order = self._margined_requirement(slot, prec, order)
            if without is None or with_order is None:
                return False
            if not _exact_enough(_EXACT.add(_EXACT.subtract(before, without), with_order), prec):
                return False
            needed = with_order - without
            return not needed > self._cash + self._unrealised_margined() - before
        # a spot buy reserves its own notional and fee, independent of the other orders
        price = order.reference_price or _ZERO
        terms = (remaining * price * slot.instrument.multiplier, self._fee(slot, remaining, price, maker=False))
        if terms[0] + terms[1] > self._cash + self._unrealised_margined() - before:
            return False
        return terms

    def _held_requirement(self, prec: int) -> Decimal | None:
        """:meth:`_requirement` of all working orders from the running sums (exact; None if not provable)."""
        total = _ZERO
        for slot in self._slots.values():
            if slot.negative_terms:
                return None
            if not slot.margined:
                total = _EXACT.add(total, slot.reserved)
            elif slot.n_held or self._positions.get(slot.instrument.instrument_id):
                requirement = self._margined_requirement(slot, prec)
                if requirement is None:
                    return None
                total = _EXACT.add(total, requirement)
        return total if _exact_enough(total, prec) else None

    def _margined_requirement(self, slot: _Slot, prec: int, extra: _VenueOrder | None = None) -> Decimal | None:
        """One margined instrument's part of :meth:`_requirement` (exact), with ``extra`` working too; None
        when the running sums cannot prove the full check's value."""
        instrument = slot.instrument
        instrument_id = instrument.instrument_id
        buys, sells = slot.buy_qty, slot.sell_qty
        if extra is not None:
            if extra.side is Side.BUY:
                buys = _EXACT.add(buys, extra.remaining)
            else:
                sells = _EXACT.add(sells, extra.remaining)
        if not (_exact_enough(buys, prec) and _exact_enough(sells, prec)):
            return None
        position = self._positions.get(instrument_id, _ZERO)
        reach = max(abs(position + buys), abs(position - sells))
        price = self._marks.get(instrument_id) or next(
            (o.reference_price for o in self._working.values()
             if o.instrument_id == instrument_id and o.reference_price is not None),
            extra.reference_price if extra is not None else None)
        terms = [reach * self._unit_margin(instrument, price)]
        terms.extend(self._fee(slot, o.remaining, price or _ZERO, maker=False) for o in slot.unpriced.values())
        if extra is not None:
            terms.append(self._fee(slot, extra.remaining, extra.reference_price or price or _ZERO, maker=False))
        total = slot.reserved
        for term in terms:
            if term < 0:
                return None
            total = _EXACT.add(total, term)
        return total

    def _hold(self, order: _VenueOrder, slot: _Slot, spot_buy_terms: tuple[Decimal, Decimal] | None = None) -> None:
        """Add a working order to its instrument's running sums, exactly as :meth:`_requirement` counts it.

        Called whenever an order starts working or its remaining quantity or reference price
        changes (after :meth:`_release`), so the sums always equal a fresh sum over the working
        orders. ``spot_buy_terms``: a spot buy's terms as :meth:`_surely_acceptable` computed them
        for the order as it is now.
        """
        remaining = order.remaining
        if order.side is Side.BUY:
            slot.buy_qty = _EXACT.add(slot.buy_qty, remaining)
        else:
            slot.sell_qty = _EXACT.add(slot.sell_qty, remaining)
        if slot.margined:
            if order.reference_price:
                terms: tuple[Decimal, ...] = (self._fee(slot, remaining, order.reference_price, maker=False),)
            else:
                terms = ()
                slot.unpriced[order.client_order_id] = order  # its fee depends on the price at the check
        elif order.side is Side.BUY:
            if spot_buy_terms is not None:
                terms = spot_buy_terms
            else:
                price = order.reference_price or _ZERO
                terms = (remaining * price * slot.instrument.multiplier, self._fee(slot, remaining, price, maker=False))
        else:
            terms = ()
        negative = remaining < 0
        for term in terms:
            slot.reserved = _EXACT.add(slot.reserved, term)
            negative += term < 0
        slot.negative_terms += negative
        slot.n_held += 1
        order.held = (remaining, terms, negative)

    def _release(self, order: _VenueOrder) -> None:
        """Take an order out of the running sums (what :meth:`_hold` added); nothing if it holds nothing."""
        if order.held is None:
            return
        slot = self._slots[order.instrument_id]
        remaining, terms, negative = order.held
        order.held = None
        if order.side is Side.BUY:
            slot.buy_qty = _EXACT.subtract(slot.buy_qty, remaining)
        else:
            slot.sell_qty = _EXACT.subtract(slot.sell_qty, remaining)
        if slot.unpriced:
            slot.unpriced.pop(order.client_order_id, None)
        for term in terms:
            slot.reserved = _EXACT.subtract(slot.reserved, term)
        slot.negative_terms -= negative
        slot.n_held -= 1

    def _fee(self, slot: _Slot, quantity: Decimal, price: Decimal, *, maker: bool) -> Decimal:
        rates = slot.fee_rates
        notional = abs(quantity * price * slot.instrument.multiplier)
        return notional * rates[0 if maker else 1] / _BPS + abs(quantity) * rates[2]

    def _unit_margin(self, instrument: Instrument, price: Decimal | None) -> Decimal:
        if instrument.asset_class is AssetClass.FUTURE:
            margin = self._futures_margin
            if isinstance(margin, Mapping):
                if instrument.instrument_id not in margin:
                    raise ConfigError(f"futures_initial_margin has no entry for {instrument.instrument_id}; "
                                      f"expected one per futures instrument, got {sorted(margin)}")
                margin = margin[instrument.instrument_id]
            return to_decimal(margin, "futures_initial_margin")
        return self._fx_margin_rate * (price or _ZERO) * instrument.multiplier

    def _requirement(self, working: list[_VenueOrder]) -> Decimal:
        """Cash reserved by working spot buys plus initial margin of margined positions and orders."""
        total = _ZERO
        by_instrument: dict[str, list[_VenueOrder]] = {}
        for order in working:
            by_instrument.setdefault(order.instrument_id, []).append(order)
        for instrument_id in set(by_instrument) | {k for k, v in self._positions.items() if v != 0}:
            slot = self._slots.get(instrument_id)
            if slot is None:
                continue
            instrument = slot.instrument
            orders = by_instrument.get(instrument_id, [])
            if instrument.asset_class in _MARGINED:
                position = self._positions.get(instrument_id, _ZERO)
                buys = sum((o.remaining for o in orders if o.side is Side.BUY), _ZERO)
                sells = sum((o.remaining for o in orders if o.side is Side.SELL), _ZERO)
                reach = max(abs(position + buys), abs(position - sells))
                price = self._marks.get(instrument_id) or next((o.reference_price for o in orders
                                                                 if o.reference_price is not None), None)
                total += reach * self._unit_margin(instrument, price)
                total += sum((self._fee(slot, o.remaining, o.reference_price or price or _ZERO, maker=False)
                              for o in orders), _ZERO)
            else:
                for o in orders:
                    if o.side is Side.BUY:
                        price = o.reference_price or _ZERO
                        total += o.remaining * price * instrument.multiplier
                        total += self._fee(slot, o.remaining, price, maker=False)
        return total

    def _unrealised_margined(self) -> Decimal:
        total = _ZERO
        if not self._any_margined:
            return total  # what the loop below sums when no position can be margined
        for instrument_id, position in self._positions.items():
            instrument = self._slots[instrument_id].instrument
            if position == 0 or instrument.asset_class not in _MARGINED:
                continue
            avg = self._avg_price[instrument_id]
            mark = self._marks.get(instrument_id, avg)
            total += (mark - avg) * position * instrument.multiplier
        return total

    def _equity(self) -> Decimal:
        equity = self._cash + self._unrealised_margined()
        for instrument_id, position in self._positions.items():
            instrument = self._slots[instrument_id].instrument
            if position != 0 and instrument.asset_class not in _MARGINED:
                mark = self._marks.get(instrument_id, self._avg_price.get(instrument_id, _ZERO))
                equity += position * mark * instrument.multiplier
        return equity

    def _buying_power(self, working: list[_VenueOrder] | None = None) -> Decimal:
        if working is None:
            working = list(self._working.values())
        return self._cash + self._unrealised_margined() - self._requirement(working)

    # -- engine callbacks: journal first, then queue the event ---------------------------
    def _on_engine_fill(self, slot: _Slot, engine_order: EngineOrder, row: tuple) -> None:
        """The engine filled ``engine_order``: ``row`` is the fill in ``FILL_COLUMNS`` order."""
        order = slot.orders[engine_order.oid]
        if order.replace_pending is not None:
            self._sync_replace(slot, order, engine_order)
        instrument = slot.instrument
        _, ts, _, _, raw_quantity, raw_price, liquidity, _ = row
        # the engine's floats as Decimals: the same few sizes and prices recur, so converted once each
        quantity = slot.fill_quantities.get(raw_quantity)
        if quantity is None:
            quantity = (_dec(raw_quantity) / instrument.lot_size).to_integral_value(ROUND_HALF_EVEN) \
                * instrument.lot_size
            _remember(slot.fill_quantities, raw_quantity, quantity)
        engine_left = engine_order.quantity - engine_order.filled
        if engine_left <= slot.lot_dust or quantity > order.remaining:
            quantity = order.remaining  # the engine completed the order: the Decimal books close exactly
        price = slot.fill_prices.get(raw_price)
        if price is None:
            price = self._fill_price(instrument, float(raw_price))
            _remember(slot.fill_prices, raw_price, price)
        maker = liquidity == "maker"
        fee = self._fee(slot, quantity, price, maker=maker)
        ts = int(ts)
        ts_init = self._clock()
        coid, fill_id, liquidity = order.client_order_id, f"{order.venue_order_id}-{order.n_fills + 1}", \
            "maker" if maker else "taker"
        fill = Fill(fill_id=fill_id, client_order_id=coid, instrument_id=order.instrument_id, side=order.side,
                    quantity=quantity, price=price, fee=fee, liquidity=liquidity, ts_event_ns=ts, ts_init_ns=ts_init)
        cash, position, avg = self._after_fill(instrument, order.sign, quantity, price, fee)
        # amounts here are Decimals by construction (Decimal arithmetic gives nothing else); ids and times checked
        if _json_dumps is not None and _JSON_INT_MIN <= ts <= _JSON_INT_MAX and ts_init.__class__ is int \
                and _JSON_INT_MIN <= ts_init <= _JSON_INT_MAX and coid.__class__ is str:
            self._check_writable()
            self._unwritten.append((_FILL_RECORD % (ts, _json_str(coid), _json_str(fill_id),
                                                    quantity, price, fee, liquidity, ts_init, cash, position)).encode())
            self._uncommitted = True
        else:
            self._write({"kind": "fill", "ts": ts, "client_order_id": coid, "fill_id": fill_id,
                         "quantity": quantity, "price": price, "fee": fee, "liquidity": liquidity,
                         "ts_init_ns": ts_init, "cash": cash, "position": position})
        self._apply_fill(order, fill, cash, position, avg)
        self._outbox.append(OrderEvent(coid, OrderEventType.FILLED, ts, ts_init, venue_order_id=order.venue_order_id,
                                       fill=fill))

    @staticmethod
    def _fill_price(instrument: Instrument, raw: float) -> Decimal:
        """The engine's float price as a Decimal: on the tick when it is one, else to a hundredth of its precision."""
        value = _dec(raw)
        tick = instrument.tick_for(abs(value)) if instrument.tick_schedule else instrument.tick_size
        fine_step, tick_step = _price_steps(tick.as_tuple().exponent)
        fine = value.quantize(fine_step, ROUND_HALF_EVEN)
        coarse = fine.quantize(tick_step, ROUND_HALF_EVEN)
        return coarse if coarse == fine else fine

    def _after_fill(self, instrument: Instrument, sign: int, quantity: Decimal, price: Decimal,
                    fee: Decimal) -> tuple[Decimal, Decimal, Decimal | None]:
        """(cash, position, average price) after a fill; nothing is changed."""
        instrument_id = instrument.instrument_id
        position = self._positions.get(instrument_id, _ZERO)
        avg = self._avg_price.get(instrument_id)
        signed = quantity * sign
        new_position = position + signed
        if instrument.asset_class in _MARGINED:
            cash = self._cash - fee
            if position != 0 and (position > 0) != (signed > 0):
                closing = min(abs(signed), abs(position))
                cash += (price - avg) * closing * (1 if position > 0 else -1) * instrument.multiplier
        else:
            cash = self._cash - signed * price * instrument.multiplier - fee
        if new_position == 0:
            new_avg = None
        elif position == 0 or (position > 0) == (signed > 0):
            new_avg = (avg or _ZERO) * abs(position) / abs(new_position) + price * quantity / abs(new_position)
        elif (new_position > 0) != (position > 0):
            new_avg = price  # crossed through flat: the rest is a new position at this price
        else:
            new_avg = avg  # reduced: the entry price of what is left does not change
        return cash, new_position, new_avg

    def _apply_fill(self, order: _VenueOrder, fill: Fill, cash: Decimal, position: Decimal,
                    avg: Decimal | None) -> None:
        self._cash = cash
        self._positions[fill.instrument_id] = position
        if avg is None:
            self._avg_price.pop(fill.instrument_id, None)
        else:
            self._avg_price[fill.instrument_id] = avg
        self._release(order)
        order.filled_qty += fill.quantity
        order.notional += fill.quantity * fill.price
        order.fees += fill.fee
        order.n_fills += 1
        self._fills.append(fill)
        if order.filled_qty >= order.quantity:
            self._finish(order, OrderStatus.FILLED, "")
        elif order.client_order_id in self._working:
            self._hold(order, self._slots[order.instrument_id])

    def _finish(self, order: _VenueOrder, status: OrderStatus, reason: str) -> None:
        order.done_status = status
        self._working.pop(order.client_order_id, None)
        self._release(order)
        order.reason = reason
        order.cancel_pending = False
        order.replace_pending = None

    def _on_engine_status(self, slot: _Slot, engine_order: EngineOrder) -> None:
        """The engine changed ``engine_order``'s status."""
        order = slot.orders[engine_order.oid]
        if order.replace_pending is not None:
            self._sync_replace(slot, order, engine_order)
        status = engine_order.status
        if status is sim_orders.OrderStatus.WORKING:
            if order.acked:
                return  # a recovered order arriving again: the venue acknowledged it before the restart
            ts = int(engine_order.arrival_ts)
            coid = order.client_order_id
            if _json_dumps is not None and _JSON_INT_MIN <= ts <= _JSON_INT_MAX and coid.__class__ is str:
                self._check_writable()
                self._unwritten.append((_ACCEPTED_RECORD % (ts, _json_str(coid))).encode())
                self._uncommitted = True
            else:
                self._write({"kind": "accepted", "ts": ts, "client_order_id": coid})
            order.acked = True
            self._outbox.append(OrderEvent(coid, OrderEventType.ACCEPTED, ts, self._clock(),
                                           venue_order_id=order.venue_order_id))
        elif status is sim_orders.OrderStatus.CANCELLED or status is sim_orders.OrderStatus.EXPIRED:
            if order.is_done:
                return
            ts = int(engine_order.done_ts)
            expired = status is sim_orders.OrderStatus.EXPIRED
            reason = self._end_reason(order, expired)
            self._write({"kind": "expired" if expired else "cancelled", "ts": ts,
                         "client_order_id": order.client_order_id, "reason": reason})
            self._finish(order, OrderStatus.EXPIRED if expired else OrderStatus.CANCELLED, reason)
            self._outbox.append(OrderEvent(order.client_order_id,
                                           OrderEventType.EXPIRED if expired else OrderEventType.CANCELLED,
                                           ts, self._clock(), venue_order_id=order.venue_order_id, reason=reason))
        # 'filled' needs nothing more: the fill that completed the order closed it

    @staticmethod
    def _end_reason(order: _VenueOrder, expired: bool) -> str:
        if expired:
            if order.time_in_force is TimeInForce.DAY:
                return "day order expired at the session close"
            return "expired at its expiry time"
        if order.cancel_pending:
            return "cancelled on request"
        if order.time_in_force is TimeInForce.IOC:
            return "IOC: the unfilled remainder was cancelled at arrival"
        if order.time_in_force is TimeInForce.FOK:
            return "FOK: the whole quantity could not be filled at arrival"
        return "cancelled by the venue"

    def _sync_replace(self, slot: _Slot, order: _VenueOrder, engine_order: EngineOrder | None = None) -> None:
        """Report a replace the engine has applied (it applies them silently) before anything after it.

        ``engine_order``: the engine's state of ``order`` when the caller has it at hand.
        """
        if order.replace_pending is None or order.engine_id is None:
            return
        new_qty, new_limit, arrival = order.replace_pending
        if engine_order is None:
            engine_order = slot.engine.order_state(order.engine_id)
        applied = (new_qty is None or engine_order.quantity == float(new_qty - order.engine_offset)) and \
            (new_limit is None or engine_order.limit == float(new_limit))
        if not applied:
            return
        self._write({"kind": "replaced", "ts": arrival, "client_order_id": order.client_order_id,
                     "quantity": new_qty, "limit_price": new_limit})
        self._apply_replace(order, new_qty, new_limit)
        self._outbox.append(OrderEvent(order.client_order_id, OrderEventType.REPLACED, arrival, self._clock(),
                                       venue_order_id=order.venue_order_id, quantity=order.quantity,
                                       limit_price=order.limit_price))

    def _apply_replace(self, order: _VenueOrder, new_qty: Decimal | None, new_limit: Decimal | None) -> None:
        self._release(order)
        if new_qty is not None:
            order.quantity = new_qty
        if new_limit is not None:
            order.limit_price = new_limit
            order.reference_price = new_limit
        order.replace_pending = None
        if order.client_order_id in self._working:
            self._hold(order, self._slots[order.instrument_id])

    def _settle_replaces(self, slot: _Slot) -> None:
        """After data: replaces the engine applied are reported; those it refused at arrival are rejected."""
        if not slot.replacing:
            return  # no replace pending on this instrument: no scan of the working orders on every quote
        for order in [o for o in self._working.values() if o.replace_pending is not None
                      and o.instrument_id == slot.instrument.instrument_id]:
            self._sync_replace(slot, order)
            if order.replace_pending is None or order.replace_pending[2] > slot.processed_ns:
                continue
            arrival = order.replace_pending[2]
            reason = (f"new quantity {order.replace_pending[0]} does not exceed the filled quantity "
                      f"{order.filled_qty} when the replace arrived")
            self._write({"kind": "replace_rejected", "ts": arrival, "client_order_id": order.client_order_id,
                         "reason": reason})
            order.replace_pending = None
            self._outbox.append(OrderEvent(order.client_order_id, OrderEventType.REPLACE_REJECTED, arrival,
                                           self._clock(), venue_order_id=order.venue_order_id, reason=reason))
        for coid in [c for c, o in slot.replacing.items() if o.replace_pending is None]:
            del slot.replacing[coid]  # answered (or finished)

    # -- durability ------------------------------------------------------------------------
    def _write(self, record: dict[str, Any]) -> None:
        self._check_writable()
        # Group commit: encoded now (a record that cannot be written fails here), written with
        # the rest of this call's records in one write when the call ends (a kill -9 after
        # that keeps them), made durable by _deliver's commit before any event derived from
        # them leaves the venue, and before any query answers.
        self._unwritten.append(encode_record(record))
        self._uncommitted = True

    def _check_writable(self) -> None:
        if self._closed:
            raise StoreError(f"paper venue {self.account_id} is closed; build a new PaperVenue on {self.state_dir} "
                             "to resume")

    def _write_out(self) -> None:
        """This call's records to the journal, one write, no fdatasync."""
        if self._unwritten and not self._closed:
            bodies, self._unwritten = self._unwritten, []
            self._journal.append_encoded(bodies, sync=False)

    def _commit(self) -> None:
        """Make every journaled change durable (one fdatasync) before the venue tells anyone about it."""
        # the venue is its journal's only writer: nothing written since the last commit, nothing to sync
        if self._uncommitted and not self._closed:
            self._write_out()
            self._journal.commit()
            self._uncommitted = False

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"paper venue {self.account_id} is closed; build a new PaperVenue on {self.state_dir} "
                             "to resume")

    def _check_connected(self) -> None:
        self._check_open()
        if self._handler is None:
            raise OrderError("paper venue not connected: call connect(on_event) before sending orders, so that "
                             "their answers have somewhere to go")

    def _deliver(self) -> None:
        if self._delivering:
            return  # a handler re-entered the venue: the outer loop delivers what it added
        self._delivering = True
        try:
            while self._outbox:
                self._commit()  # free unless something was journaled since (a handler may re-enter the venue)
                if self._batch_handler is not None:
                    events = list(self._outbox)
                    self._outbox.clear()
                    self._batch_handler(events)
                    continue
                event = self._outbox.popleft()
                if self._handler is not None:
                    self._handler(event)
        finally:
            self._delivering = False
            self._write_out()  # every public call ends here: its records reach the OS before it returns

    def _recover(self) -> None:
        """Rebuild the account, orders and fills from the journal (no event is delivered)."""
        records = iter(self._journal.records())
        header = next(records)
        if header.get("kind") != "open":
            raise JournalCorruptError(f"{self._journal.path}: the first record is {header.get('kind')!r}; "
                                      "expected the account's 'open' record")
        if header["account_id"] != self.account_id or header["currency"] != self.currency:
            raise ConfigError(f"{self._journal.path} holds account {header['account_id']} in {header['currency']}; "
                              f"expected {self.account_id} in {self.currency} (use another state_dir)")
        self._cash = header["starting_cash"]
        self.book_id = header.get("book_id", "")
        latest = 0
        for position, record in enumerate(records, start=2):
            latest = max(latest, int(record.get("ts", 0)))
            try:
                self._replay(record)
            except (KeyError, TypeError, ValueError) as exc:
                raise JournalCorruptError(f"{self._journal.path}: record {position} ({record.get('kind')!r}) "
                                          f"cannot be applied: {exc!r}") from exc
        self._now_ns = latest if latest > 0 else None

    def _replay(self, record: dict[str, Any]) -> None:
        kind = record["kind"]
        if kind == "book":  # the quote in force at a clean close (see close): the engine starts from it
            self._books[record["instrument_id"]] = (int(record["ts"]), float(record["bid"]), float(record["ask"]),
                                                    float(record["bid_sz"]), float(record["ask_sz"]))
            return
        if kind == "order":
            slot = self._slots.get(record["instrument_id"])
            if slot is None:
                raise ConfigError(f"{self._journal.path} holds orders for {record['instrument_id']}, which has no "
                                  f"fill model here; expected models for {record['instrument_id']} too")
            order = _VenueOrder(
                client_order_id=record["client_order_id"], venue_order_id=record["venue_order_id"],
                instrument_id=record["instrument_id"], side=Side(record["side"]),
                order_type=OrderType(record["order_type"]), time_in_force=TimeInForce(record["time_in_force"]),
                quantity=record["quantity"], limit_price=record["limit_price"], stop_price=record["stop_price"],
                expire_ts_ns=int(record["expire_ts_ns"]), reference_price=record["reference_price"],
                received_ts_ns=int(record["ts"]), reduce_only=bool(record["reduce_only"]))
            self._orders[order.client_order_id] = order
            self._working[order.client_order_id] = order
            self._hold(order, slot)
            self._next_order_number += 1
            return
        order = self._orders[record["client_order_id"]]
        if kind == "accepted":
            order.acked = True
        elif kind == "fill":
            slot = self._slots[order.instrument_id]
            fill = Fill(fill_id=record["fill_id"], client_order_id=order.client_order_id,
                        instrument_id=order.instrument_id, side=order.side, quantity=record["quantity"],
                        price=record["price"], fee=record["fee"], liquidity=record["liquidity"],
                        ts_event_ns=int(record["ts"]), ts_init_ns=int(record["ts_init_ns"]))
            cash, position, avg = self._after_fill(slot.instrument, order.sign, fill.quantity, fill.price, fill.fee)
            if cash != record["cash"] or position != record["position"]:
                raise JournalCorruptError(
                    f"{self._journal.path}: fill {fill.fill_id} recomputes to cash {cash} and position {position}, "
                    f"the journal says {record['cash']} and {record['position']}")
            self._apply_fill(order, fill, cash, position, avg)
        elif kind == "cancel_request":
            order.cancel_pending = True
        elif kind == "replace_request":
            order.replace_pending = (record["quantity"], record["limit_price"], int(record["arrival_ns"]))
            self._slots[order.instrument_id].replacing[order.client_order_id] = order
        elif kind == "replaced":
            self._apply_replace(order, record["quantity"], record["limit_price"])
        elif kind == "replace_rejected":
            order.replace_pending = None
        elif kind in ("cancelled", "expired"):
            self._finish(order, OrderStatus.CANCELLED if kind == "cancelled" else OrderStatus.EXPIRED,
                         record["reason"])
        else:
            raise JournalCorruptError(f"{self._journal.path}: unknown record kind {kind!r}")

    def _restore_working_orders(self) -> None:
        """Put recovered working orders back into the fresh engines (remaining quantity; queue place lost).

        After a clean close the engines first get the quote that was in force (``book``
        records), as without a restart; after a crash they start empty.
        """
        base = self._now_ns if self._now_ns is not None else 0
        if self._working:
            for instrument_id, (ts, bid, ask, bid_sz, ask_sz) in self._books.items():
                slot = self._slots.get(instrument_id)
                if slot is not None and ts <= base:
                    slot.engine.on_quotes(ts, bid, ask, bid_sz, ask_sz)
                    self._note_touch(instrument_id, bid, ask)
        for order in list(self._working.values()):
            slot = self._slots[order.instrument_id]
            order_type = order.order_type
            if order.filled_qty > 0 and order_type is OrderType.STOP:
                order_type = OrderType.MARKET  # it had triggered
            elif order.filled_qty > 0 and order_type is OrderType.STOP_LIMIT:
                order_type = OrderType.LIMIT
            has_limit = order_type in (OrderType.LIMIT, OrderType.STOP_LIMIT)
            has_stop = order_type in (OrderType.STOP, OrderType.STOP_LIMIT)
            # built directly: the order conformed when it arrived, and a remainder may sit below the minimum notional
            spec = OrderSpec(instrument_id=order.instrument_id, side=order.sign, quantity=float(order.remaining),
                             order_type=sim_orders.OrderType(order_type.value),
                             limit_px=float(order.limit_price) if has_limit else math.nan,
                             stop_px=float(order.stop_price) if has_stop else math.nan,
                             tif=sim_orders.TimeInForce(order.time_in_force.value), expire_ts_ns=order.expire_ts_ns)
            order.last_arrival_ns = -sim_orders.NEVER_NS
            ts, k = self._request_ts(slot, base)
            self._send(slot, order, spec, ts, k)
            if order.cancel_pending:
                ts, k = self._request_ts(slot, base, order)
                slot.engine.cancel(order.engine_id, ts)
                self._count_request(slot, order, ts, k)
            elif order.replace_pending is not None:
                self._resend_replace(slot, order, base)

    def _resend_replace(self, slot: _Slot, order: _VenueOrder, base: int) -> None:
        new_qty, new_limit, _ = order.replace_pending
        ts, k = self._request_ts(slot, base, order)
        try:
            # the engine's order holds only the remainder now: the same change, relative to it
            slot.engine.replace(order.engine_id, ts, limit_px=float(new_limit) if new_limit is not None else None,
                                quantity=float(new_qty - order.engine_offset) if new_qty is not None else None)
        except TradebookError as exc:
            self._write({"kind": "replace_rejected", "ts": ts, "client_order_id": order.client_order_id,
                         "reason": f"{type(exc).__name__}: {exc}"})
            order.replace_pending = None
            return
        arrival = self._count_request(slot, order, ts, k)
        order.replace_pending = (new_qty, new_limit, arrival)
        slot.replacing[order.client_order_id] = order
