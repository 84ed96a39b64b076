"""The paper venue's book: its orders, the order shapes it has conformed, and one slot per instrument.

And the conversions the fill path uses (the engine's floats to exact Decimals).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Context, Decimal, MAX_EMAX, MAX_PREC, MIN_EMIN, Rounded
from functools import lru_cache

from tradebook.model.instruments import AssetClass, Instrument, Side
from tradebook.model.orders import OrderStatus, OrderType, TimeInForce
from tradebook.sim import orders as sim_orders
from tradebook.sim.engine import SimEngine
from tradebook.sim.fill_model import FillModel
from tradebook.sim.orders import OrderSpec
from tradebook.venues.base import VenueOrderState
from tradebook.venues.paper_records import order_shape_terms

MARGINED = (AssetClass.FUTURE, AssetClass.FX_SPOT)
BPS = Decimal(10_000)
ZERO = Decimal(0)
SHAPE_CACHE_SIZE = 1024  # order shapes remembered per instrument
FILL_MEMO_SIZE = 4096  # fill sizes and prices remembered per instrument, each
# Exact arithmetic for the running sums of what working orders hold (never rounds: see PaperVenue._hold).
EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)


@dataclass(slots=True)
class VenueOrder:
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
    filled_qty: Decimal = ZERO
    notional: Decimal = ZERO
    fees: Decimal = ZERO
    n_fills: int = 0
    reason: str = ""
    cancel_pending: bool = False
    # a replace received and not yet answered: (quantity, limit, arrival ns); None fields unchanged
    replace_pending: tuple[Decimal | None, Decimal | None, int] | None = None
    engine_id: int | None = None
    engine_offset: Decimal = ZERO  # filled before the engine got the order (a restart): it holds the rest
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


class OrderShape:
    """One order shape of an instrument, conformed (PaperVenue._order_shape): what its orders share.

    ``spec``: the engine's order; ``quantity``, ``limit``, ``stop``: the conformed Decimals (None
    where not given); ``record_terms``: their part of the 'order' journal record, formatted once
    (:func:`~tradebook.venues.paper_records.order_shape_terms`).
    """

    __slots__ = ("spec", "quantity", "limit", "stop", "record_terms")

    def __init__(self, spec: OrderSpec, quantity: Decimal, limit: Decimal | None, stop: Decimal | None,
                 side: Side, order_type: OrderType, tif: TimeInForce) -> None:
        self.spec, self.quantity, self.limit, self.stop = spec, quantity, limit, stop
        self.record_terms = order_shape_terms(side, order_type, tif, quantity, limit, stop, int(spec.expire_ts_ns))


@dataclass(slots=True)
class InstrumentSlot:
    """One instrument's engine and the venue's bookkeeping of its requests and working orders."""

    instrument: Instrument
    model: FillModel
    engine: SimEngine | None = None  # set right after the slot: the engine's listeners are bound to it
    n_requests: int = 0  # mirrors the engine's request numbering (latency draws depend on it)
    last_request_ns: int = -sim_orders.NEVER_NS
    processed_ns: int = -sim_orders.NEVER_NS  # requests arriving at or before this have been processed
    orders: dict[int, VenueOrder] = field(default_factory=dict)  # engine order id -> the venue's order
    # What the fill path needs per fill, converted once:
    margined: bool = False
    fee_rates: tuple[Decimal, Decimal, Decimal] = (ZERO, ZERO, ZERO)  # (maker bps, taker bps, per unit)
    lot_dust: float = 0.0  # what the engine leaves of a completed order, at most
    ack_median_ns: int = 0  # submit-to-ack latency (the venue stamps requests with the engine's draws)
    latency_sigma: float = 0.0
    # Running sums over the working orders (PaperVenue._hold and _release), exact, so that the buying-power
    # and position checks of a new order do not rescan every working order:
    n_held: int = 0  # working orders
    buy_qty: Decimal = ZERO  # remaining of working buys
    sell_qty: Decimal = ZERO  # remaining of working sells
    reserved: Decimal = ZERO  # spot: notional + taker fee of working buys; margined: taker fees of priced orders
    unpriced: dict[str, VenueOrder] = field(default_factory=dict)  # margined, no reference: fee at today's price
    negative_terms: int = 0  # held values below zero (negative prices or fee rates): the sums prove nothing then
    shapes: dict[tuple, OrderShape] = field(default_factory=dict)  # what PaperVenue._order_shape made of each shape
    instrument_json: bytes = b""  # the instrument id as JSON text (the 'order' record)
    # the (reference price, quantity) objects of the last market order whose minimum notional was checked and met
    notional_met: tuple[Decimal | None, Decimal | None] = (None, None)
    # every order with a replace pending (and some answered since): _settle_replaces skips the scan without one
    replacing: dict[str, VenueOrder] = field(default_factory=dict)
    fill_quantities: dict[float, Decimal] = field(default_factory=dict)  # engine fill size -> lots, as a Decimal
    fill_prices: dict[float, Decimal] = field(default_factory=dict)  # engine fill price -> PaperVenue._fill_price


def decimal_of(value: float) -> Decimal:
    return Decimal(repr(float(value)))


@lru_cache(maxsize=64)
def price_steps(exponent: int) -> tuple[Decimal, Decimal]:
    """(a hundredth of the tick's precision, the tick's precision) for a tick written with ``exponent``."""
    return Decimal(1).scaleb(exponent - 2), Decimal(1).scaleb(exponent)


def remember(memo: dict[float, Decimal], raw: float, value: Decimal) -> None:
    """Keep ``value``, converted from the engine's float ``raw``, in a small per-instrument memo."""
    if not raw:
        return  # 0.0 and -0.0 are one key but write differently: never remembered
    if len(memo) >= FILL_MEMO_SIZE:
        memo.clear()
    memo[raw] = value


_DIGIT_TESTS: dict[int, Context] = {}  # precision -> a context that traps any rounding (see exact_enough)


def exact_enough(value: Decimal, prec: int) -> bool:
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
