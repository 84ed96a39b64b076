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
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from tradebook.model.orders import Fill, OrderEvent, OrderIntent, OrderStatus

EventHandler = Callable[[OrderEvent], None]
BatchEventHandler = Callable[[list[OrderEvent]], None]


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

    @abstractmethod
    async def connect(self, on_event: EventHandler, *, on_events: BatchEventHandler | None = None) -> None:
        """Open the session; from now on every order event goes to ``on_event``.

        ``on_events`` (optional): a handler for several events at once. A venue whose
        events come in bursts (the paper venue answers a whole batch of market data at
        once) may hand a burst to it as one list, in order, so the receiver can make them
        durable with one write; a venue that streams events one by one ignores it.
        """

    # Optional: ``async def submit_many(self, intents: Sequence[OrderIntent]) -> None``, the
    # same as ``submit`` for each in order in one call (the paper venue has it); the order
    # manager uses it for a batch of staged orders when the venue has it.

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
