"""The order book, positions and cash a sandbox server keeps, in neutral words; servers render them.

One rule for every broker: a market order fills at the touch (buy at the ask, sell at the
bid); a limit order fills at its limit or better once the touch crosses it; a stop (or
stop-limit) waits until the touch reaches its stop price, then works as a market (or
limit) order. ``max_fill_qty`` caps each execution, so a large order fills in parts, one
part per price update. Everything here runs under one lock: servers call it from their
event loop, tests call ``set_price`` from their own thread.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

from tradebook.errors import OrderError

ZERO = Decimal(0)

# neutral statuses; each server says them in its own broker's words
NEW, PARTIALLY_FILLED, FILLED = "new", "partially_filled", "filled"
CANCELED, REJECTED, EXPIRED, REPLACED = "canceled", "rejected", "expired", "replaced"
OPEN_STATUSES = frozenset({NEW, PARTIALLY_FILLED})


def now_ns() -> int:
    return time.time_ns()


@dataclass
class BookFill:
    fill_id: str
    order_id: str
    qty: Decimal
    price: Decimal
    fee: Decimal
    maker: bool
    ts_ns: int
    seq: int = 0  # executions in the order they happened, across the book


@dataclass
class BookOrder:
    """An order as the venue holds it; ``order_id`` is the venue's id, ``client_order_id`` the client's."""

    order_id: str
    client_order_id: str
    symbol: str
    side: str  # 'buy' | 'sell'
    order_type: str  # 'market' | 'limit' | 'stop' | 'stop_limit'
    time_in_force: str  # the broker's word, kept as given
    qty: Decimal
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    status: str = NEW
    filled_qty: Decimal = ZERO
    filled_notional: Decimal = ZERO
    created_ns: int = field(default_factory=now_ns)
    updated_ns: int = 0
    filled_ns: int | None = None
    canceled_ns: int | None = None
    expired_ns: int | None = None
    replaced_ns: int | None = None
    replaced_by: str | None = None
    replaces: str | None = None
    extended_hours: bool = False
    post_only: bool = False
    triggered: bool = False
    fills: list[BookFill] = field(default_factory=list)
    number: int = 0  # a venue's integer id (Binance), in order of arrival

    def __post_init__(self) -> None:
        self.updated_ns = self.updated_ns or self.created_ns

    @property
    def remaining(self) -> Decimal:
        return self.qty - self.filled_qty

    @property
    def avg_price(self) -> Decimal | None:
        return self.filled_notional / self.filled_qty if self.filled_qty else None

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES


# (order, event, fill) -> None; event is one of the neutral statuses, or 'fill'
Listener = Callable[[BookOrder, str, BookFill | None], None]


class Book:
    """Orders, positions and cash of one sandbox account; fills by the rule in the module docstring."""

    def __init__(self, *, cash: Decimal = Decimal(100_000), fee_rate: Decimal = ZERO,
                 max_fill_qty: Decimal | None = None) -> None:
        self.lock = threading.RLock()
        self.cash = Decimal(cash)
        self.fee_rate = Decimal(fee_rate)
        self.max_fill_qty = max_fill_qty
        self.orders: dict[str, BookOrder] = {}
        self.by_client_id: dict[str, BookOrder] = {}
        self.positions: dict[str, Decimal] = {}
        self.cost: dict[str, Decimal] = {}  # signed cost of each open position (average entry times quantity)
        self.prices: dict[str, tuple[Decimal, Decimal]] = {}
        self.listeners: list[Listener] = []
        self._numbers = itertools.count(1)
        self._executions = itertools.count(1)

    # -- queries -------------------------------------------------------------------------
    def get(self, order_id: str) -> BookOrder | None:
        with self.lock:
            return self.orders.get(order_id)

    def get_by_client_id(self, client_order_id: str) -> BookOrder | None:
        with self.lock:
            return self.by_client_id.get(client_order_id)

    def open_orders(self, symbol: str | None = None) -> list[BookOrder]:
        with self.lock:
            return [o for o in self.orders.values() if o.is_open and (symbol is None or o.symbol == symbol)]

    def last_price(self, symbol: str) -> Decimal | None:
        quote = self.prices.get(symbol)
        return (quote[0] + quote[1]) / 2 if quote else None

    # -- commands ------------------------------------------------------------------------
    def add(self, order: BookOrder, *, match: bool = True, reuse_closed_ids: bool = False) -> BookOrder:
        """Take a new order and fill what the current price allows.

        Its client id must be new, or (``reuse_closed_ids``, as Binance) held only by closed orders.
        """
        with self.lock:
            held = self.by_client_id.get(order.client_order_id)
            if held is not None and not (reuse_closed_ids and not held.is_open):
                raise OrderError(f"client order id {order.client_order_id} is already held")
            order.number = next(self._numbers)
            self.orders[order.order_id] = order
            self.by_client_id[order.client_order_id] = order
            self._emit(order, NEW, None)
            if match:
                self._match(order, arriving=True)
            return order

    def cancel(self, order: BookOrder, *, status: str = CANCELED) -> None:
        with self.lock:
            if not order.is_open:
                raise OrderError(f"order {order.order_id} is {order.status}, not open")
            order.status = status
            order.updated_ns = now_ns()
            if status == EXPIRED:
                order.expired_ns = order.updated_ns
            else:
                order.canceled_ns = order.updated_ns
            self._emit(order, status, None)

    def replace(self, order: BookOrder, new: BookOrder) -> BookOrder:
        """End ``order`` as replaced by ``new`` (which keeps its fills so far) and match ``new``."""
        with self.lock:
            if not order.is_open:
                raise OrderError(f"order {order.order_id} is {order.status}, not open")
            order.status = REPLACED
            order.replaced_ns = order.updated_ns = now_ns()
            order.replaced_by = new.order_id
            new.replaces = order.order_id
            new.number = next(self._numbers)
            self.orders[new.order_id] = new
            self.by_client_id[new.client_order_id] = new
            self._emit(order, REPLACED, None)
            self._match(new, arriving=True)
            return new

    def set_price(self, symbol: str, bid: Decimal, ask: Decimal) -> list[BookFill]:
        """A new touch for ``symbol``; fills every open order it crosses (one part each)."""
        bid, ask = Decimal(str(bid)), Decimal(str(ask))
        if bid > ask:
            raise OrderError(f"{symbol}: bid {bid} above ask {ask}")
        with self.lock:
            self.prices[symbol] = (bid, ask)
            fills = []
            for order in sorted(self.open_orders(symbol), key=lambda o: o.number):
                fill = self._match(order, arriving=False)
                if fill is not None:
                    fills.append(fill)
            return fills

    def fill(self, order: BookOrder, qty: Decimal, price: Decimal, *, maker: bool = False,
             force: bool = False) -> BookFill:
        """Execute ``qty`` of ``order`` at ``price``; ``force`` fills an order that is no longer open
        (a fill racing a cancel, as venues do)."""
        with self.lock:
            if not (order.is_open or force):
                raise OrderError(f"order {order.order_id} is {order.status}, not open")
            qty = min(qty, order.remaining)
            if qty <= 0:
                raise OrderError(f"order {order.order_id} has nothing left to fill")
            ts = now_ns()
            fee = (qty * price * self.fee_rate).quantize(Decimal("0.00000001"))
            fill = BookFill(str(uuid.uuid4()), order.order_id, qty, price, fee, maker, ts, next(self._executions))
            order.fills.append(fill)
            order.filled_qty += qty
            order.filled_notional += qty * price
            order.updated_ns = ts
            if order.is_open or force:
                order.status = FILLED if order.remaining == 0 else PARTIALLY_FILLED
            if order.remaining == 0:
                order.filled_ns = ts
            signed = qty if order.side == "buy" else -qty
            self._book_position(order.symbol, signed, price)
            self.cash -= signed * price + fee
            self._emit(order, "fill", fill)
            return fill

    # -- the fill rule ---------------------------------------------------------------------
    def _match(self, order: BookOrder, *, arriving: bool) -> BookFill | None:
        quote = self.prices.get(order.symbol)
        if quote is None or not order.is_open:
            return None
        bid, ask = quote
        touch = ask if order.side == "buy" else bid
        if order.order_type in ("stop", "stop_limit") and not order.triggered:
            reached = touch >= order.stop_price if order.side == "buy" else touch <= order.stop_price
            if not reached:
                return None
            order.triggered = True
        price = touch
        maker = False
        if order.order_type in ("limit", "stop_limit"):
            limit = order.limit_price
            crossed = touch <= limit if order.side == "buy" else touch >= limit
            if not crossed:
                return None
            # a limit that crosses on arrival takes the touch; one the touch moved through later
            # fills at its own limit, as the maker
            if not arriving:
                price, maker = limit, True
        qty = order.remaining if self.max_fill_qty is None else min(order.remaining, self.max_fill_qty)
        return self.fill(order, qty, price, maker=maker)

    def _book_position(self, symbol: str, signed_qty: Decimal, price: Decimal) -> None:
        before = self.positions.get(symbol, ZERO)
        after = before + signed_qty
        cost = self.cost.get(symbol, ZERO)
        if before == 0 or (before > 0) == (signed_qty > 0):
            cost += signed_qty * price  # opening or adding
        elif (after > 0) == (before > 0) and after != 0:
            cost = cost * after / before  # reducing: the average entry stays
        else:
            cost = after * price  # closed or flipped: what is left opened at this price
        if after == 0:
            self.positions.pop(symbol, None)
            self.cost.pop(symbol, None)
        else:
            self.positions[symbol] = after
            self.cost[symbol] = cost

    def _emit(self, order: BookOrder, event: str, fill: BookFill | None) -> None:
        for listener in list(self.listeners):
            listener(order, event, fill)
