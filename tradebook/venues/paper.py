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

Parts. This module holds the port (requests, queries, market data) and the account's
assembly; :class:`PaperVenue` inherits the rest, one module per job: the account checks
(:mod:`~tradebook.venues.paper_account`), the bridge to the matching engines
(:mod:`~tradebook.venues.paper_engine`), the journal and recovery
(:mod:`~tradebook.venues.paper_journal`, records written by :mod:`~tradebook.venues.paper_records`),
and the book's orders and per-instrument slots (:mod:`~tradebook.venues.paper_orders`).

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
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tradebook.errors import ConfigError, ConformanceError, DataError, OrderError, StoreError, UnknownInstrumentError
from tradebook.model.instruments import AssetClass, Instrument, Side, get_instrument, to_decimal
from tradebook.model.orders import Fill, OrderEvent, OrderEventType, OrderIntent, OrderType, TimeInForce
from tradebook.model.time import now_ns
from tradebook.sim.engine import SimEngine
from tradebook.sim.fill_model import FillModel
from tradebook.sim.orders import LOT_DUST, book_levels, quote_arrays, trade_arrays
from tradebook.store.journal import Journal
from tradebook.venues.base import AccountState, BatchEventHandler, Capability, EventHandler, VenueOrderState, VenuePort
from tradebook.venues.paper_account import PaperAccount
from tradebook.venues.paper_engine import EngineBridge
from tradebook.venues.paper_journal import PaperJournal
from tradebook.venues.paper_orders import InstrumentSlot, MARGINED, VenueOrder, decimal_of
from tradebook.venues.paper_records import text_json

JOURNAL_NAME = "paper_venue.journal"
DEFAULT_FUTURES_INITIAL_MARGIN = Decimal("15000")  # per contract; about CME E-mini S&P 500 in 2024
DEFAULT_FX_MARGIN_RATE = Decimal("0.02")  # 50:1, the US retail limit on major pairs
# Quote currencies worth one unit of the account currency (stablecoins at par).
PAR_CURRENCIES: dict[str, frozenset[str]] = {"USD": frozenset({"USD", "USDT", "USDC"})}


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


class PaperVenue(PaperAccount, EngineBridge, PaperJournal, VenuePort):
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
        self._slots: dict[str, InstrumentSlot] = {}
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
        self._orders: dict[str, VenueOrder] = {}  # every order received, by client order id
        self._working: dict[str, VenueOrder] = {}  # the ones not done yet, in arrival order
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
        self._order_id_json = text_json(self._order_id_prefix)[:-1]
        self._restore_working_orders()

    @property
    def order_id_prefix(self) -> str:
        """What this book's venue order ids start with: ``<account>-<book id>``."""
        return f"{self.account_id}-{self.book_id}" if self.book_id else self.account_id

    def _slot(self, instrument_id: str, model: FillModel, instruments: Mapping[str, Instrument] | None,
              feed_has_trades: bool | Mapping[str, bool] | None) -> InstrumentSlot:
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
        slot = InstrumentSlot(instrument=instrument, model=model, margined=instrument.asset_class in MARGINED,
                     fee_rates=(decimal_of(fees.maker_bps), decimal_of(fees.taker_bps), decimal_of(fees.per_unit)),
                     lot_dust=LOT_DUST * float(instrument.lot_size),
                     ack_median_ns=int(latency.submit_to_ack_median_ns), latency_sigma=float(latency.sigma),
                     instrument_json=text_json(instrument_id))
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

    def _data_slot(self, instrument_id: str) -> InstrumentSlot:
        self._check_open()
        slot = self._slots.get(instrument_id)
        if slot is None:
            raise UnknownInstrumentError(f"no fill model for {instrument_id!r} at this paper venue; "
                                         f"configured: {sorted(self._slots)}")
        return slot

    def _after_data(self, instrument_id: str, slot: InstrumentSlot, ts_ns, *quote) -> None:
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
        b, a = decimal_of(bid), decimal_of(ask)
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
        order = VenueOrder(coid, f"{self._order_id_prefix}-{number}", instrument_id, side, order_type, tif,
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

        # 'filled' needs nothing more: the fill that completed the order closed it

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

