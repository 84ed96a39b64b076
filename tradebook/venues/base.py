"""The venue port: what every adapter (paper, Alpaca, ccxt exchanges, Interactive Brokers) implements.

The order manager talks to a venue only through this interface, so paper and live
share everything above it. It is asynchronous: every broker SDK is (or wraps) network
I/O, and the session runs one event loop in the background.

Contract, the one rule: a venue never decides on its own what an order *is*. It takes
an order with its ``client_order_id`` (derived from the intent, see
:func:`tradebook.model.orders.client_order_id_for`) and must refuse a second order with
the same id as a duplicate, never trade it twice. Everything it learns about orders
comes back as :class:`~tradebook.model.orders.OrderEvent` through the handler given to
:meth:`VenuePort.connect`, with ``ts_event_ns`` (the venue's clock) and ``ts_init_ns``
(ours).

| method | Alpaca (alpaca-py) | ccxt (binance) | Interactive Brokers (ib-async) |
|---|---|---|---|
| submit | ``submit_order`` (client_order_id) | ``create_order`` (params.newClientOrderId) | ``placeOrder`` (order.orderRef) |
| cancel | ``cancel_order_by_id`` | ``cancel_order`` | ``cancelOrder`` |
| replace | ``replace_order_by_id`` | cancel + new (spot has no amend) | ``placeOrder`` with the same orderId |
| order_status | ``get_order_by_client_id`` | ``fetch_order`` (origClientOrderId) | ``openTrades``/``reqCompletedOrders`` by orderRef |
| open_orders | ``get_orders(status=open)`` | ``fetch_open_orders`` | ``reqAllOpenOrders`` |
| positions | ``get_all_positions`` | ``fetch_balance`` (spot: balances) | ``reqPositions`` |
| account | ``get_account`` | ``fetch_balance`` | ``accountSummary`` |
| fills | ``get_activities(FILL)`` / stream ``trade_updates`` | ``fetch_my_trades`` | ``reqExecutions`` |

Errors: ``submit``, ``cancel`` and ``replace`` raise only :class:`~tradebook.errors.VenueError`
subclasses, never an SDK's exception: :class:`~tradebook.errors.NotSentError` when the
request certainly did not reach the venue (safe to send again under the same id),
:class:`~tradebook.errors.VenueRejectedError` when the venue answered and refused (with a
``RejectCode`` and the broker's own code), :class:`~tradebook.errors.OutcomeUnknownError`
when it may have arrived (timeout, drop after sending): the order manager then holds the
order ``unresolved`` and asks :meth:`VenuePort.order_status` instead of resending.

Threads: the handler given to :meth:`VenuePort.connect` may be called from any thread or
task (a stream reader, a poller); the receiver marshals events onto its own loop, keeping
the order in which one venue delivered them.

Capabilities: what a venue can do beyond the port is declared in
:attr:`VenuePort.capabilities` (:class:`Capability`), never probed with ``getattr``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from tradebook.model.instruments import Instrument
from tradebook.model.orders import Fill, OrderEvent, OrderIntent, OrderStatus

EventHandler = Callable[[OrderEvent], None]
BatchEventHandler = Callable[[list[OrderEvent]], None]


class Capability(StrEnum):
    """What a venue can do beyond the port's required methods (``VenuePort.capabilities``)."""

    # Takes market data and time: ``advance_to(ts_ns)``, ``now_ns`` (a property), ``on_market_data(...)``
    # (the paper venue). A live venue has its own clock and market.
    SIMULATED = "simulated"
    SUBMIT_MANY = "submit_many"  # ``submit_many(intents)``: one call for a batch, in order
    NATIVE_REPLACE = "native_replace"  # replace keeps the order (no cancel + new under the hood)
    FRACTIONAL = "fractional"  # quantities below one share/contract
    EXTENDED_HOURS = "extended_hours"  # orders outside the regular session
    STREAMING_FILLS = "streaming_fills"  # fills pushed by a stream, not only polled
    SHORTING = "shorting"  # sells beyond the position are allowed


@dataclass(frozen=True)
class VenueHealth:
    """Whether a venue can take orders now; ``reason`` says why not (or what was checked)."""

    ok: bool
    reason: str

    def __bool__(self) -> bool:
        return self.ok


@dataclass(frozen=True)
class VenueOrderState:
    """What the venue says about one order (reconciliation compares it with the order manager's view)."""

    client_order_id: str
    venue_order_id: str | None
    instrument_id: str
    status: OrderStatus
    quantity: Decimal
    filled_qty: Decimal
    avg_price: Decimal | None
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None


@dataclass(frozen=True)
class AccountState:
    account_id: str
    currency: str
    cash: Decimal
    equity: Decimal
    buying_power: Decimal
    pattern_day_trader: bool = False
    day_trades_last_5_days: int = 0


class VenuePort(ABC):
    """One broker or exchange account, as the order manager sees it."""

    name: str  # "paper", "alpaca", "binance", "ibkr"
    account_id: str
    is_live: bool = False  # paper venues and broker paper accounts are False
    capabilities: frozenset[Capability] = frozenset()
    # How long after a send the venue's order lookup may still miss an order it received
    # (eventually consistent REST views): an unresolved order not found is rejected only after it.
    order_visibility_grace_ns: int = 0

    @abstractmethod
    async def connect(self, on_event: EventHandler, *, on_events: BatchEventHandler | None = None) -> None:
        """Open the session; from now on every order event goes to ``on_event``.

        ``on_events`` (optional): a handler for several events at once. A venue whose
        events come in bursts (the paper venue answers a whole batch of market data at
        once) may hand a burst to it as one list, in order, so the receiver can make them
        durable with one write; a venue that streams events one by one ignores it.
        """

    async def submit_many(self, intents: Sequence[OrderIntent]) -> None:
        """The same as ``submit`` for each in order, in one call (declared by ``Capability.SUBMIT_MANY``)."""
        for intent in intents:
            await self.submit(intent)

    @abstractmethod
    async def close(self) -> None:
        """Stop event delivery and release the connection (working orders stay working)."""

    @abstractmethod
    async def submit(self, intent: OrderIntent) -> None:
        """Send an order; the answer (accepted, rejected, filled) arrives as events."""

    @abstractmethod
    async def cancel(self, client_order_id: str) -> None:
        """Ask to cancel; ``cancelled`` or ``cancel_rejected`` arrives as an event."""

    @abstractmethod
    async def replace(self, client_order_id: str, *, quantity: Decimal | None = None,
                      limit_price: Decimal | None = None, stop_price: Decimal | None = None) -> None:
        """Ask to change a working order; ``replaced`` or ``replace_rejected`` arrives as an event."""

    @abstractmethod
    async def order_status(self, client_order_id: str) -> VenueOrderState | None:
        """The venue's view of one order, or None when it never received it."""

    @abstractmethod
    async def open_orders(self) -> list[VenueOrderState]:
        """Every order the venue holds as working."""

    @abstractmethod
    async def positions(self) -> dict[str, Decimal]:
        """Net position per instrument id (signed: negative is short)."""

    @abstractmethod
    async def account(self) -> AccountState:
        """Cash, equity and buying power."""

    @abstractmethod
    async def fills(self, since_ns: int = 0) -> list[Fill]:
        """Every fill the venue recorded at or after ``since_ns`` (reconciliation re-applies missing ones)."""

    async def instruments(self) -> list[Instrument]:
        """The instruments this venue trades, from its market metadata (tick, lot, minimum size and notional).

        Each names where its rules came from in ``Instrument.description`` (e.g. "binance
        exchangeInfo: tick from PRICE_FILTER, ..."). The paper venue has none of its own:
        its instruments come from the calibrations.
        """
        raise NotImplementedError(f"venue {self.name!r} publishes no instrument metadata")

    async def health(self) -> VenueHealth:
        """Whether the venue can take orders now (connected, authenticated, not rate limited), with why."""
        return VenueHealth(True, f"venue {self.name!r} has no health check of its own")
