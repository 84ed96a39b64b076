"""Signals, order intents, orders and their lifecycle, fills and order events.

The lifecycle is a transition table: applying an event looks up (current status,
event) in :data:`TRANSITIONS` and raises :class:`IllegalTransitionError` when the
pair is not there, so a bug surfaces at the first wrong step rather than in a
position report days later. No order reaches ``filled`` without having been
``submitted``: ``pending`` (intent durable, not yet sent) only leads to
``submitted`` or to ``rejected`` (refused before it left). A send whose outcome is unknown
(a timeout or a dropped connection after sending) leaves the order ``unresolved`` until the
venue is asked about it; a fill that arrives after a cancel or an expiry (a real race at
every venue) is booked, and the order ends ``filled`` when it completes it, else stays
cancelled (expired) with its filled quantity updated, as NautilusTrader's table has it.

Money and quantities on the order path are :class:`~decimal.Decimal`: tick and lot
arithmetic must be exact, and position and P&L sums must not drift. Times are int64
UTC nanoseconds; events carry the venue's time (``ts_event_ns``) and ours
(``ts_init_ns``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from tradebook.errors import OrderError
from tradebook.model.instruments import Side, cached_value


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
    PENDING = "pending"  # intent durable, not sent yet
    SUBMITTED = "submitted"  # sent; the venue has not answered
    ACCEPTED = "accepted"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    PENDING_CANCEL = "pending_cancel"
    PENDING_REPLACE = "pending_replace"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    EXPIRED = "expired"
    # sent, outcome unknown (timeout, drop): the venue is asked by client order id. Last: the
    # compiled simulator indexes statuses by their position (tradebook.sim.orders.STATUS_NAMES).
    UNRESOLVED = "unresolved"


TERMINAL_STATUSES = frozenset({OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED, OrderStatus.EXPIRED})


class OrderEventType(StrEnum):
    SUBMITTED = "submitted"  # we sent it
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    FILLED = "filled"  # a fill (partial or complete: the quantities decide)
    CANCEL_REQUESTED = "cancel_requested"
    CANCELLED = "cancelled"
    CANCEL_REJECTED = "cancel_rejected"
    REPLACE_REQUESTED = "replace_requested"
    REPLACED = "replaced"
    REPLACE_REJECTED = "replace_rejected"
    EXPIRED = "expired"
    OUTCOME_UNKNOWN = "outcome_unknown"  # we sent it and cannot tell whether it arrived


class RejectCode(StrEnum):
    """Why an order was rejected, where a program acts on it (the order's ``reason`` is the prose).

    Venue adapters map their broker's refusals onto these in their mapping modules (and keep the
    broker's own code as text), whether the refusal is raised from a call
    (:class:`~tradebook.errors.VenueRejectedError`) or arrives later as a ``rejected`` event.
    """

    # Made durable as ``submitted``, but the process stopped before the venue received it: on
    # restart the venue does not know it, so it is rejected and never resent under its id (the
    # id could still arrive late from a network buffer on a live venue). A session records a
    # "not sent" decision for its signal; the same signal sent again goes under a new id. A
    # protective stop is sent again by reconcile itself, as ``<entry>:stop:resend:<n>``.
    NEVER_REACHED_VENUE = "never_reached_venue"
    # The venue answered and refused.
    DUPLICATE_CLIENT_ID = "duplicate_client_id"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    INVALID_PRICE = "invalid_price"
    INVALID_QUANTITY = "invalid_quantity"
    MIN_NOTIONAL = "min_notional"
    RATE_LIMITED = "rate_limited"
    MARKET_CLOSED = "market_closed"
    UNKNOWN_ORDER = "unknown_order"
    TOO_LATE_TO_CANCEL = "too_late_to_cancel"
    UNKNOWN_INSTRUMENT = "unknown_instrument"
    NOT_SHORTABLE = "not_shortable"
    UNSUPPORTED_ORDER = "unsupported_order"
    VENUE_OTHER = "venue_other"


S, E = OrderStatus, OrderEventType
# The working status an order returns to when a pending cancel/replace is answered:
# resolved by what has filled (see next_status).
_WORKING = "working"
_FILL = "fill"

TRANSITIONS: dict[tuple[OrderStatus, OrderEventType], str] = {
    (S.PENDING, E.SUBMITTED): S.SUBMITTED,
    (S.PENDING, E.REJECTED): S.REJECTED,  # refused by risk or by us before it left
    (S.PENDING, E.CANCELLED): S.CANCELLED,  # cancelled before it was sent (halt, flatten)
    (S.SUBMITTED, E.ACCEPTED): S.ACCEPTED,
    (S.SUBMITTED, E.REJECTED): S.REJECTED,
    (S.SUBMITTED, E.FILLED): _FILL,  # some venues fill a market order without a separate ack
    (S.SUBMITTED, E.CANCEL_REQUESTED): S.PENDING_CANCEL,
    (S.SUBMITTED, E.CANCELLED): S.CANCELLED,
    (S.SUBMITTED, E.EXPIRED): S.EXPIRED,
    (S.SUBMITTED, E.OUTCOME_UNKNOWN): S.UNRESOLVED,
    # unresolved: whatever the venue (or reconciliation) says next settles it
    (S.UNRESOLVED, E.OUTCOME_UNKNOWN): S.UNRESOLVED,
    (S.UNRESOLVED, E.ACCEPTED): S.ACCEPTED,
    (S.UNRESOLVED, E.REJECTED): S.REJECTED,
    (S.UNRESOLVED, E.FILLED): _FILL,
    (S.UNRESOLVED, E.CANCELLED): S.CANCELLED,
    (S.UNRESOLVED, E.EXPIRED): S.EXPIRED,
}
# Refused after it was acknowledged (Alpaca: received, then the exchange refuses it; a stop refused
# when it triggers), as NautilusTrader's table has it. Nothing traded: a partly filled order that
# ends early is cancelled or expired, not rejected.
TRANSITIONS[S.ACCEPTED, E.REJECTED] = S.REJECTED
for _status in (S.ACCEPTED, S.PARTIALLY_FILLED):
    TRANSITIONS.update({
        (_status, E.ACCEPTED): _status,  # a repeated ack (after reconnect) changes nothing
        (_status, E.FILLED): _FILL,
        (_status, E.CANCEL_REQUESTED): S.PENDING_CANCEL,
        (_status, E.REPLACE_REQUESTED): S.PENDING_REPLACE,
        (_status, E.CANCELLED): S.CANCELLED,
        (_status, E.EXPIRED): S.EXPIRED,
    })
TRANSITIONS.update({
    (S.PENDING_CANCEL, E.CANCELLED): S.CANCELLED,
    (S.PENDING_CANCEL, E.CANCEL_REJECTED): _WORKING,
    (S.PENDING_CANCEL, E.FILLED): _FILL,  # fills race the cancel; the order stays pending-cancel until answered
    (S.PENDING_CANCEL, E.ACCEPTED): S.PENDING_CANCEL,
    (S.PENDING_CANCEL, E.EXPIRED): S.EXPIRED,
    (S.PENDING_REPLACE, E.REPLACED): _WORKING,
    (S.PENDING_REPLACE, E.REPLACE_REJECTED): _WORKING,
    (S.PENDING_REPLACE, E.FILLED): _FILL,
    (S.PENDING_REPLACE, E.ACCEPTED): S.PENDING_REPLACE,
    (S.PENDING_REPLACE, E.CANCELLED): S.CANCELLED,
    (S.PENDING_REPLACE, E.EXPIRED): S.EXPIRED,
})
# A cancel or replace that lost the race against a fill or an expiry is answered with a
# rejection after the order has finished: it changes nothing.
TRANSITIONS.update({(_done, _event): _done for _done in TERMINAL_STATUSES
                    for _event in (E.CANCEL_REJECTED, E.REPLACE_REJECTED)})
# A fill that raced a cancel or an expiry and lost: booked (the venue traded), see next_status.
TRANSITIONS.update({(S.CANCELLED, E.FILLED): _FILL, (S.EXPIRED, E.FILLED): _FILL})
del _status


_ZERO = Decimal(0)
# enum members read on the order path, as module constants: on Python 3.11 ``Side.BUY`` is a
# descriptor call on the enum class (~60 ns), paid several times per order
_PENDING_CANCEL = S.PENDING_CANCEL
_PENDING_REPLACE = S.PENDING_REPLACE
_FILLED = S.FILLED
_CANCELLED, _EXPIRED = S.CANCELLED, S.EXPIRED
_PARTIALLY_FILLED = S.PARTIALLY_FILLED
_ACCEPTED = S.ACCEPTED
_FILLED_EVENT, _REPLACED_EVENT = E.FILLED, E.REPLACED
# the events whose reason an order keeps (why it was rejected, cancelled or expired)
_EVENTS_WITH_REASON = frozenset({E.REJECTED, E.CANCELLED, E.EXPIRED, E.CANCEL_REJECTED, E.REPLACE_REJECTED,
                                 E.OUTCOME_UNKNOWN})


class IllegalTransitionError(OrderError):
    """An event that the order's current status does not allow (a bug or a confused venue)."""


def next_status(status: OrderStatus, event: OrderEventType, *, filled_qty: Decimal, quantity: Decimal) -> OrderStatus:
    """The status after ``event``; ``filled_qty`` is the cumulative fill *after* the event."""
    return _next_status(status, event, filled_qty, quantity)


def _next_status(status: OrderStatus, event: OrderEventType, filled_qty: Decimal, quantity: Decimal) -> OrderStatus:
    # next_status with positional arguments: Order.apply calls it three times per order
    if status.__class__ is not OrderStatus or event.__class__ is not OrderEventType:  # the hot path has members
        status, event = OrderStatus(status), OrderEventType(event)
    target = TRANSITIONS.get((status, event))
    if target is None:
        raise IllegalTransitionError(f"order in status {status} cannot take event {event}; allowed: "
                                     f"{sorted(e.value for (s, e) in TRANSITIONS if s == status) or 'none (final)'}")
    if filled_qty > quantity:
        raise IllegalTransitionError(f"fills of {filled_qty} exceed the order quantity {quantity}")
    if target == _FILL:
        if status is _PENDING_CANCEL or status is _PENDING_REPLACE or status is _CANCELLED or status is _EXPIRED:
            return _FILLED if filled_qty == quantity else status
        return _FILLED if filled_qty == quantity else _PARTIALLY_FILLED
    if target == _WORKING:
        return _PARTIALLY_FILLED if filled_qty > 0 else _ACCEPTED
    return target if target.__class__ is OrderStatus else OrderStatus(target)


# -- what flows along the order path --------------------------------------------------------
@dataclass(frozen=True)
class Signal:
    """A strategy's wish to trade: direction, conviction and the statistics sizing needs.

    ``strength`` in [0, 1] (above 0.9 the router sends a market order); ``win_rate``,
    ``avg_win`` and ``avg_loss`` (positive returns per trade) feed Half-Kelly sizing;
    ``signal_id`` must be unique per strategy: the intent id, and so the client order
    id, derive from it, so a re-run notebook cell cannot send the same order twice. The
    same id with other terms (side, instrument, quantity, strength, statistics, urgency,
    stop) is refused by a session, naming both. ``ts_ns``: when it was decided, int64 UTC
    ns (a session refuses one after its session time or older than
    ``session.max_signal_age_s``), or None for the session's time. ``quantity`` and
    ``stop_loss`` may be floats: taken by their repr (``0.01`` is ``Decimal('0.01')``),
    then held to the instrument's lot and tick, never rounded.
    """

    strategy_id: str
    signal_id: str
    instrument_id: str
    side: Side
    ts_ns: int | None
    strength: float = 0.5
    win_rate: float | None = None
    avg_win: float | None = None
    avg_loss: float | None = None
    urgency: str = "normal"  # 'low' | 'normal' | 'high'
    stop_loss: Decimal | float | None = None  # attach a protective stop at this price to the entry
    quantity: Decimal | float | None = None  # set to bypass sizing (an explicit order size)


def client_order_id_for(intent_id: str, account_id: str) -> str:
    """A venue-safe client order id derived from the account and the intent id: 32 chars of [0-9a-z].

    Scoped by account, as venues scope them: two paper runs (two accounts) of one store
    may trade the same strategy and signal ids without sharing an order id.

    Fits every venue's rules (Binance: at most 36 of ``[.A-Z:/a-z0-9_-]``; Alpaca: at
    most 128; IB: ``orderRef`` text). Derived, never random, so sending an intent twice
    is refused by the venue as a duplicate instead of trading twice.
    """
    key = f"{account_id}\x1f{intent_id}".encode()
    return "tb" + hashlib.blake2b(key, digest_size=15).hexdigest()


# OrderIntent, Fill and OrderEvent are built several times per order on the hot path. A frozen
# dataclass's generated __init__ sets each field with its own object.__setattr__ call (~2 us for
# an intent's 15 fields); theirs below store straight into __dict__ (item assignment: cheaper
# than one update(**kwargs), which builds a dict to copy), with the same parameters, order and
# defaults as the fields (tests/model/test_orders.py holds them to it).
@dataclass(frozen=True, init=False)
class OrderIntent:
    """An order the path has decided to send, before risk has passed it: conformed and durable first."""

    intent_id: str
    strategy_id: str
    account_id: str
    instrument_id: str
    side: Side
    quantity: Decimal
    order_type: OrderType
    time_in_force: TimeInForce
    ts_ns: int
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    parent_id: str | None = None  # the parent intent of an algo child (TWAP/VWAP slice, retry)
    reduce_only: bool = False
    stop_loss: Decimal | None = None  # protective stop submitted once the entry fills
    reason: str = ""  # why this order (router rule, algo slice, retry n, flatten)

    def __init__(self, intent_id: str, strategy_id: str, account_id: str, instrument_id: str, side: Side,
                 quantity: Decimal, order_type: OrderType, time_in_force: TimeInForce, ts_ns: int,
                 limit_price: Decimal | None = None, stop_price: Decimal | None = None, parent_id: str | None = None,
                 reduce_only: bool = False, stop_loss: Decimal | None = None, reason: str = "") -> None:
        state = self.__dict__
        state["intent_id"] = intent_id
        state["strategy_id"] = strategy_id
        state["account_id"] = account_id
        state["instrument_id"] = instrument_id
        state["side"] = side
        state["quantity"] = quantity
        state["order_type"] = order_type
        state["time_in_force"] = time_in_force
        state["ts_ns"] = ts_ns
        state["limit_price"] = limit_price
        state["stop_price"] = stop_price
        state["parent_id"] = parent_id
        state["reduce_only"] = reduce_only
        state["stop_loss"] = stop_loss
        state["reason"] = reason

    @cached_value
    def client_order_id(self) -> str:
        # hashed once per intent: the id derives from account and intent id, and an intent is frozen
        return client_order_id_for(self.intent_id, self.account_id)


@dataclass(frozen=True, init=False)
class Fill:
    """One execution: ``fill_id`` is the venue's execution id, unique per venue."""

    fill_id: str
    client_order_id: str
    instrument_id: str
    side: Side
    quantity: Decimal
    price: Decimal
    fee: Decimal
    liquidity: str  # 'maker' | 'taker'
    ts_event_ns: int
    ts_init_ns: int

    def __init__(self, fill_id: str, client_order_id: str, instrument_id: str, side: Side, quantity: Decimal,
                 price: Decimal, fee: Decimal, liquidity: str, ts_event_ns: int, ts_init_ns: int) -> None:
        state = self.__dict__
        state["fill_id"] = fill_id
        state["client_order_id"] = client_order_id
        state["instrument_id"] = instrument_id
        state["side"] = side
        state["quantity"] = quantity
        state["price"] = price
        state["fee"] = fee
        state["liquidity"] = liquidity
        state["ts_event_ns"] = ts_event_ns
        state["ts_init_ns"] = ts_init_ns

    def __repr__(self) -> str:
        from tradebook.model.formatting import fee_places, format_decimal, price_places, quantity_places
        from tradebook.model.time import ns_to_iso

        instrument = self.instrument_id
        return (f"<Fill {self.fill_id} {self.client_order_id[:8]}.. {str(self.side).upper()} "
                f"{format_decimal(self.quantity, quantity_places(instrument), trim=True)} {instrument} @ "
                f"{format_decimal(self.price, price_places(instrument))} fee "
                f"{format_decimal(self.fee, fee_places(instrument), trim=True)} {self.liquidity} "
                f"{ns_to_iso(self.ts_event_ns)}>")


@dataclass(frozen=True, init=False)
class OrderEvent:
    """Something that happened to an order, at the venue or on our side."""

    client_order_id: str
    event_type: OrderEventType
    ts_event_ns: int
    ts_init_ns: int
    venue_order_id: str | None = None
    fill: Fill | None = None
    reason: str = ""
    quantity: Decimal | None = None  # replace: the new total quantity
    limit_price: Decimal | None = None  # replace: the new limit
    stop_price: Decimal | None = None
    code: RejectCode | None = None  # a rejection's code (the reason is the prose); None on other events

    def __init__(self, client_order_id: str, event_type: OrderEventType, ts_event_ns: int, ts_init_ns: int,
                 venue_order_id: str | None = None, fill: Fill | None = None, reason: str = "",
                 quantity: Decimal | None = None, limit_price: Decimal | None = None,
                 stop_price: Decimal | None = None, code: RejectCode | None = None) -> None:
        state = self.__dict__
        state["client_order_id"] = client_order_id
        state["event_type"] = event_type
        state["ts_event_ns"] = ts_event_ns
        state["ts_init_ns"] = ts_init_ns
        state["venue_order_id"] = venue_order_id
        state["fill"] = fill
        state["reason"] = reason
        state["quantity"] = quantity
        state["limit_price"] = limit_price
        state["stop_price"] = stop_price
        state["code"] = None if code is None else RejectCode(code)  # a journal gives the value as text


_NO_FILLS: frozenset[str] = frozenset()
_new_object = object.__new__


@dataclass(frozen=True, init=False)
class Order:
    """An order's current state: its intent plus what the venue has said so far."""

    intent: OrderIntent
    status: OrderStatus = OrderStatus.PENDING
    filled_qty: Decimal = _ZERO
    avg_price: Decimal | None = None
    fees: Decimal = _ZERO
    venue_order_id: str | None = None
    quantity: Decimal | None = None  # current total quantity (a replace may change it); None = the intent's
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    last_ts_ns: int = 0
    reason: str = ""  # why it was rejected, cancelled or expired
    fill_ids: frozenset[str] = _NO_FILLS

    def __init__(self, intent: OrderIntent, status: OrderStatus = OrderStatus.PENDING, filled_qty: Decimal = _ZERO,
                 avg_price: Decimal | None = None, fees: Decimal = _ZERO, venue_order_id: str | None = None,
                 quantity: Decimal | None = None, limit_price: Decimal | None = None,
                 stop_price: Decimal | None = None, last_ts_ns: int = 0, reason: str = "",
                 fill_ids: frozenset[str] = _NO_FILLS) -> None:
        # one per order (see OrderIntent's constructor for why straight into __dict__)
        state = self.__dict__
        state["intent"] = intent
        state["status"] = status
        state["filled_qty"] = filled_qty
        state["avg_price"] = avg_price
        state["fees"] = fees
        state["venue_order_id"] = venue_order_id
        state["quantity"] = quantity
        state["limit_price"] = limit_price
        state["stop_price"] = stop_price
        state["last_ts_ns"] = last_ts_ns
        state["reason"] = reason
        state["fill_ids"] = fill_ids

    @cached_value
    def client_order_id(self) -> str:
        # the intent's (cached there too); apply() carries it to the next state with the rest of __dict__
        return self.intent.client_order_id

    @property
    def total_quantity(self) -> Decimal:
        return self.quantity if self.quantity is not None else self.intent.quantity

    @property
    def remaining(self) -> Decimal:
        return self.total_quantity - self.filled_qty

    @property
    def is_done(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def apply(self, event: OrderEvent) -> Order:
        """The order after ``event``; IllegalTransitionError if the lifecycle forbids it.

        A fill already applied (same ``fill_id``) is ignored: venues repeat fills after a
        reconnect, and counting one twice would double a position.
        """
        client_order_id = self.client_order_id
        if event.client_order_id != client_order_id:
            raise OrderError(f"event for {event.client_order_id} applied to order {client_order_id}")
        kind = event.event_type
        if kind.__class__ is not OrderEventType:  # a plain string: the member, or ValueError as before
            kind = OrderEventType(kind)
        filled = self.filled_qty
        # a shallow copy, then the changes: what dataclasses.replace returns, without re-running
        # __init__ over every field (3 applies per order on the hot path)
        updated = _new_object(Order)
        state = updated.__dict__
        state.update(self.__dict__)
        if kind is _FILLED_EVENT:
            fill = event.fill
            if fill is None:
                raise OrderError(f"{client_order_id}: a filled event without its fill")
            fill_id, quantity, fill_ids = fill.fill_id, fill.quantity, self.fill_ids
            if fill_id in fill_ids:
                return self
            if quantity <= 0:
                raise OrderError(f"{client_order_id}: fill {fill_id} has quantity {quantity}")
            before = filled
            filled = before + quantity
            notional = (self.avg_price or _ZERO) * before + fill.price * quantity
            state["filled_qty"] = filled
            state["avg_price"] = notional / filled
            state["fees"] = self.fees + fill.fee
            # the first fill (most orders have one): a one-element set, without the union's temporary set
            state["fill_ids"] = fill_ids | {fill_id} if fill_ids else frozenset((fill_id,))
        total = self.quantity if self.quantity is not None else self.intent.quantity
        if kind is _REPLACED_EVENT:
            total = event.quantity if event.quantity is not None else total
            state["quantity"] = total
            if event.limit_price is not None:
                state["limit_price"] = event.limit_price
            if event.stop_price is not None:
                state["stop_price"] = event.stop_price
        status = self.status
        target = TRANSITIONS.get((status, kind))
        if target.__class__ is OrderStatus and status.__class__ is OrderStatus and not filled > total:
            state["status"] = target  # a plain step (submitted, accepted...): what _next_status answers
        else:  # fills and cancel/replace answers resolve by the quantities; an illegal step raises there
            state["status"] = _next_status(status, kind, filled, total)
        if event.ts_event_ns > self.last_ts_ns:
            state["last_ts_ns"] = event.ts_event_ns
        if event.venue_order_id:
            state["venue_order_id"] = event.venue_order_id
        if event.reason and kind in _EVENTS_WITH_REASON:
            state["reason"] = event.reason
        return updated

    def __repr__(self) -> str:
        # one line a notebook can scan: id, what was asked, where it stands
        from tradebook.model.formatting import format_decimal, price_places, quantity_places

        intent = self.intent
        instrument = intent.instrument_id
        qty, px = quantity_places(instrument), price_places(instrument)
        limit = self.limit_price if self.limit_price is not None else intent.limit_price
        stop = self.stop_price if self.stop_price is not None else intent.stop_price
        parts = [f"<Order {self.client_order_id[:8]}.. {str(intent.side).upper()} "
                 f"{format_decimal(self.total_quantity, qty, trim=True)} {instrument} {str(intent.order_type).upper()}"]
        if limit is not None:
            parts.append(format_decimal(limit, px))
        if stop is not None:
            parts.append(f"stop {format_decimal(stop, px)}")
        parts.append(str(self.status).upper())
        if self.filled_qty:
            parts.append(f"{format_decimal(self.filled_qty, qty, trim=True)} @ {format_decimal(self.avg_price, px)}")
        if self.reason and self.status in TERMINAL_STATUSES:
            parts.append(f"({self.reason})")
        return " ".join(parts) + ">"
