"""The order manager's checks: an intent before it is written, a fill before it is booked, an instrument blocked by
an order in an unknown state."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from tradebook.errors import OrderError
from tradebook.execution.oms_common import LIMIT_TYPES, MARKET, ORDER_TYPES, SIDES, STOP_TYPES, TIMES_IN_FORCE
from tradebook.model.instruments import Instrument, get_instrument
from tradebook.model.orders import Fill, Order, OrderIntent


def instrument_lookup(instruments) -> Callable[[str], Instrument]:
    if instruments is None:
        return get_instrument
    if callable(instruments) and not isinstance(instruments, Mapping):
        return instruments
    return lambda instrument_id: get_instrument(instrument_id, dict(instruments))


def intent_label(intent: OrderIntent) -> str:
    """How an error message names an intent."""
    return f"intent {intent.intent_id!r}"


def check_decimal(value: Any, name: str, where: str, *, positive: bool = True) -> None:
    if not isinstance(value, Decimal):
        raise OrderError(f"{where}: {name} must be a Decimal, got {type(value).__name__} {value!r}")
    if not value.is_finite():
        raise OrderError(f"{where}: {name} must be finite, got {value}")
    if positive and value <= 0:
        raise OrderError(f"{where}: {name} must be positive, got {value}")


class OrderChecks:
    """What an intent and a fill must satisfy. Part of :class:`~tradebook.execution.oms.OrderManager`: it works on the
    manager's state (set up in ``OrderManager.__init__``) under its lock, like the rest of the class.
    """

    def _instrument(self, instrument_id: str) -> Instrument:
        instrument = self._instrument_cache.get(instrument_id)
        if instrument is None:
            instrument = self._lookup(instrument_id)
            self._instrument_cache[instrument_id] = instrument
        return instrument

    def _validate_intent(self, intent: OrderIntent) -> Instrument:
        # Once per order: each check first tries what every valid intent passes, and the
        # message's "intent '...'" is built only when one fails
        intent_id = intent.intent_id
        if not intent_id or not intent.strategy_id:
            raise OrderError(f"{intent_label(intent)}: intent_id and strategy_id must not be empty")
        if intent.account_id != self.venue.account_id:
            raise OrderError(f"{intent_label(intent)}: account {intent.account_id!r} is not the venue's account "
                             f"{self.venue.account_id!r}")
        instrument_id = intent.instrument_id
        instrument = self._instrument(instrument_id)
        if intent.side not in SIDES:
            raise OrderError(f"{intent_label(intent)}: side must be buy or sell, got {intent.side!r}")
        order_type = intent.order_type
        if order_type not in ORDER_TYPES or intent.time_in_force not in TIMES_IN_FORCE:
            raise OrderError(f"{intent_label(intent)}: unknown order type {intent.order_type!r} or time in force "
                             f"{intent.time_in_force!r}")
        ts_ns = intent.ts_ns
        if not isinstance(ts_ns, int) or isinstance(ts_ns, bool) or ts_ns < 0:
            raise OrderError(f"{intent_label(intent)}: ts_ns must be int ns since the epoch, got {intent.ts_ns!r}")
        quantity = intent.quantity
        if quantity.__class__ is not Decimal or not quantity.is_finite() or quantity <= 0:
            check_decimal(quantity, "quantity", intent_label(intent))  # raises unless a valid Decimal subclass
        instrument.conform_quantity(quantity)
        limit_price, stop_price = intent.limit_price, intent.stop_price
        if order_type is not MARKET or limit_price is not None or stop_price is not None:
            # a market order without prices has nothing to check here
            where = intent_label(intent)
            needs_limit = order_type in LIMIT_TYPES
            needs_stop = order_type in STOP_TYPES
            for name, price, needed in (("limit_price", limit_price, needs_limit),
                                        ("stop_price", stop_price, needs_stop)):
                if needed and price is None:
                    raise OrderError(f"{where}: a {intent.order_type} order needs a {name}")
                if not needed and price is not None:
                    raise OrderError(f"{where}: a {intent.order_type} order takes no {name}, got {price}")
                if price is not None:
                    check_decimal(price, name, where, positive=False)
                    instrument.conform_price(price)
        stop_loss = intent.stop_loss
        if stop_loss is not None:
            check_decimal(stop_loss, "stop_loss", intent_label(intent), positive=False)
            instrument.conform_price(stop_loss)
        reference = limit_price or stop_price or self.portfolio.last_price(instrument_id)
        if reference is not None and not intent.reduce_only:  # closing a position is never refused for size
            instrument.check_notional(reference, quantity)
        return instrument

    def _check_fill(self, order: Order, fill: Fill) -> None:
        intent = order.intent
        if fill.instrument_id != intent.instrument_id or fill.side != intent.side:
            raise OrderError(f"fill {fill.fill_id} ({fill.side} {fill.instrument_id}) does not match order "
                             f"{order.client_order_id} ({order.intent.side} {order.intent.instrument_id})")
        quantity, price, fee = fill.quantity, fill.price, fill.fee
        if not (quantity.__class__ is Decimal and price.__class__ is Decimal and fee.__class__ is Decimal
                and quantity.is_finite() and price.is_finite() and fee.is_finite()):
            # the walk with messages only for what is not a plain finite Decimal: a subclass passes, the rest raise
            for name in ("quantity", "price", "fee"):
                value = getattr(fill, name)
                if not isinstance(value, Decimal) or not value.is_finite():
                    raise OrderError(f"fill {fill.fill_id}: {name} must be a finite Decimal, got {value!r}")

    def _check_not_blocked(self, instrument_id: str) -> None:
        if not self._unresolved:  # the usual case: every order's state is known
            return
        blocking = sorted(c for c in self._unresolved if self._orders[c].intent.instrument_id == instrument_id)
        if blocking:
            raise OrderError(f"no new order for {instrument_id}: order(s) {', '.join(blocking)} are in an unknown "
                             "state after a fault; run reconcile() to resolve them first")
