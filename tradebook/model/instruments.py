"""Instruments: what can be traded, and the grid every price and quantity must sit on.

Prices and quantities on the order path are ``Decimal``: tick and lot arithmetic must
be exact (``0.1 + 0.2`` is not a multiple of ``0.1`` in binary floating point, and an
order rejected by a venue for one ulp off the tick is a real failure mode). Analytics
use float64 arrays; conversion happens at the edge with :func:`to_decimal`.
"""

from __future__ import annotations

import datetime as dt
import difflib
import enum
import math
import numbers
from dataclasses import dataclass, field
from decimal import (ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Clamped, Context, Decimal, DecimalException,
                     DivisionByZero, Inexact, InvalidOperation, Overflow, Rounded, Subnormal, Underflow, getcontext)
from typing import Literal
from zoneinfo import ZoneInfo

from tradebook.errors import ConformanceError, UnknownInstrumentError

Rounding = Literal["reject", "nearest", "down", "up", "passive"]


class AssetClass(enum.StrEnum):
    EQUITY = "equity"
    CRYPTO_SPOT = "crypto_spot"
    FUTURE = "future"
    FX_SPOT = "fx_spot"


class Side(enum.StrEnum):
    BUY = "buy"
    SELL = "sell"


class cached_value:
    """A read-only attribute computed on first read and then kept in the instance's ``__dict__``.

    ``functools.cached_property`` without its lock: on Python 3.11 every first read takes a
    per-property RLock (~0.3 us), paid several times per order on the order path. Used only
    on frozen values, where two threads racing on a first read just compute the same value
    twice. A constructor that already knows the value may put it in ``__dict__`` itself.
    """

    def __init__(self, compute) -> None:  # type: ignore[no-untyped-def]
        self.compute = compute
        self.name = compute.__name__
        self.__doc__ = compute.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, instance, owner=None):  # type: ignore[no-untyped-def]
        if instance is None:
            return self
        value = instance.__dict__[self.name] = self.compute(instance)
        return value


# enum members read on the order path, as module constants: on Python 3.11 ``Side.BUY`` is a
# descriptor call on the enum class (~60 ns), paid several times per order
_FUTURE = AssetClass.FUTURE

def to_decimal(value: Decimal | int | float | str, what: str = "value") -> Decimal:
    """Convert a number to an exact Decimal; floats go through their shortest repr.

    ``Decimal(0.1)`` would carry the binary error (0.1000000000000000055...);
    ``Decimal(repr(0.1))`` is the 0.1 the user typed.
    """
    # the order path's two cases first (exact types: a bool or a numpy float takes the long way)
    kind = value.__class__
    if kind is Decimal:
        if value.is_finite():
            return value
        raise ConformanceError(f"{what} must be finite, got {value!r}")
    if kind is float:
        if math.isfinite(value):
            return Decimal(repr(value))
        raise ConformanceError(f"{what} must be finite, got {value!r}")
    if isinstance(value, bool):
        raise ConformanceError(f"{what} must be a number, got the bool {value!r}")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, numbers.Integral):
        result = Decimal(int(value))  # numpy integers too: exact, never through float
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ConformanceError(f"{what} must be finite, got {value!r}")
        result = Decimal(repr(float(value)))  # float(): numpy floats repr as 'np.float64(...)'
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except InvalidOperation as exc:
            raise ConformanceError(f"{what} must be a number, got {value!r}") from exc
    else:
        # numpy scalars and the like: go through float's repr, which is exact for float64
        try:
            return to_decimal(float(value), what)  # type: ignore[arg-type]
        except (TypeError, ValueError) as exc:
            raise ConformanceError(f"{what} must be a number, got {type(value).__name__}") from exc
    if not result.is_finite():
        raise ConformanceError(f"{what} must be finite, got {value!r}")
    return result


# Prices and quantities of the order path are stored as DECIMAL(38, 12): at most 26 digits
# before the point. On a tick or lot grid they are computed exactly in Decimal's default
# 28 significant digits, so a grid with p decimal places allows 28 - p digits before the
# point (BTC's 0.00001 lot: 23). Larger ones are refused before any grid arithmetic (a
# quantize past 28 digits would raise decimal.InvalidOperation).
MAX_INTEGER_DIGITS = 26
EXACT_DIGITS = 28
# below this many digits before the point no grid of the store's 12 places can overflow: the hot path's only test
_CHECK_BOUNDS_FROM = EXACT_DIGITS - 12


def amount_bound(places: int = 0) -> int:
    """How many digits before the point an amount on a grid of ``places`` decimal places may have."""
    return min(MAX_INTEGER_DIGITS, EXACT_DIGITS - max(places, 0))


def check_amount(value: Decimal, what: str, grid: Decimal | None = None) -> Decimal:
    """``value`` (a finite Decimal) if the store can hold it (and ``grid`` arithmetic stays exact), else a
    ConformanceError naming the bounds."""
    places = -grid.as_tuple().exponent if grid is not None else 0
    digits = amount_bound(places)
    if value.adjusted() >= digits:
        on_grid = f"on the {grid} grid, exact to {EXACT_DIGITS} digits; " if digits < MAX_INTEGER_DIGITS else ""
        raise ConformanceError(f"{what} {value} is out of bounds: expected a number below 1E+{digits} in absolute "
                               f"value ({on_grid}stored as DECIMAL(38, 12): at most {MAX_INTEGER_DIGITS} digits "
                               "before the point, 12 after)")
    return value


@dataclass(frozen=True, slots=True)
class TradingHours:
    """When an instrument trades, in exchange-local time.

    A session opens at ``open`` on each weekday in ``open_weekdays`` (Monday = 0) and
    closes at ``close``; when ``close <= open`` the session runs past midnight (CME
    Globex opens Sunday 17:00 CT). ``extended_open``/``extended_close`` bound the
    extended session for equities. ``calendar`` names the exchange calendar whose
    holidays apply (holidays are applied by the session layer, not here).
    """

    timezone: str
    open: dt.time
    close: dt.time
    open_weekdays: frozenset[int] = frozenset({0, 1, 2, 3, 4})
    extended_open: dt.time | None = None
    extended_close: dt.time | None = None
    calendar: str = ""
    always_open: bool = False

    def is_open(self, ts_ns: int, *, extended: bool = False) -> bool:
        """Whether ``ts_ns`` falls in a session (weekday rules only, no holidays)."""
        if self.always_open:
            return True
        opens, closes = self.open, self.close
        if extended and self.extended_open is not None and self.extended_close is not None:
            opens, closes = self.extended_open, self.extended_close
        # integer arithmetic: a float of ns-since-epoch cannot tell 09:29:59.999999999 from 09:30
        seconds, nanos = divmod(int(ts_ns), 1_000_000_000)
        local = dt.datetime.fromtimestamp(seconds, tz=ZoneInfo(self.timezone)).replace(microsecond=nanos // 1000)
        t, weekday = local.time(), local.weekday()
        if closes > opens:
            return weekday in self.open_weekdays and opens <= t < closes
        # overnight session: opened today, or opened yesterday and not yet closed
        if weekday in self.open_weekdays and t >= opens:
            return True
        return (weekday - 1) % 7 in self.open_weekdays and t < closes


US_EQUITY_HOURS = TradingHours(
    timezone="America/New_York",
    open=dt.time(9, 30),
    close=dt.time(16, 0),
    extended_open=dt.time(4, 0),
    extended_close=dt.time(20, 0),
    calendar="XNYS",
)
# CME Globex equity index futures: Sunday-Friday 17:00-16:00 Chicago, one-hour daily halt.
CME_GLOBEX_HOURS = TradingHours(
    timezone="America/Chicago",
    open=dt.time(17, 0),
    close=dt.time(16, 0),
    open_weekdays=frozenset({6, 0, 1, 2, 3}),
    calendar="CMES",
)
# Spot FX: Sunday 17:00 New York to Friday 17:00 New York.
FX_HOURS = TradingHours(
    timezone="America/New_York",
    open=dt.time(17, 0),
    close=dt.time(17, 0),
    open_weekdays=frozenset({6, 0, 1, 2, 3}),
    calendar="24/5",
)
CRYPTO_HOURS = TradingHours(timezone="UTC", open=dt.time(0), close=dt.time(0), always_open=True, calendar="24/7")


# conform_quantity remembers the quantities it has conformed, per instrument (the order path
# conforms the same quantity at sizing, routing, risk and the order manager). A remembered
# result is only ever one the default context computed exactly: every step (divide, round to
# integral, multiply, quantize) exact, so no rounding happened and no flag was raised. It is
# reused only while the thread's context has the default settings that could change such a
# result (precision, exponent range, clamping; rounding too, to keep the condition plain);
# in any other context conform_quantity computes as it always did.
_DEFAULT_PREC, _DEFAULT_EMAX, _DEFAULT_EMIN = 28, 999_999, -999_999
# the default settings, with every signal trapped: a computation that rounds or signals anything raises here
_EXACT_CONTEXT = Context(prec=_DEFAULT_PREC, rounding=ROUND_HALF_EVEN, Emin=_DEFAULT_EMIN, Emax=_DEFAULT_EMAX,
                         clamp=0, flags=[], traps=[Clamped, DivisionByZero, Inexact, InvalidOperation, Overflow,
                                                   Rounded, Subnormal, Underflow])
_MAX_REMEMBERED_QUANTITIES = 4096  # per instrument; the memo starts over when full


class _InstrumentMemo:
    """A slot for what an instrument remembers; not a dataclass field (not in repr, eq, hash or pickles)."""

    __slots__ = ("_conformed_quantities",)


@dataclass(frozen=True, slots=True)
class Instrument(_InstrumentMemo):
    """A tradable instrument and its order grid.

    ``tick_schedule`` holds (price threshold, tick) pairs for venues whose tick
    depends on price (US equities quote in $0.0001 below $1, $0.01 above); when
    empty, ``tick_size`` applies everywhere. Quantities are in the venue's unit
    (shares, base currency, contracts); ``multiplier`` turns price x quantity into
    the notional in ``currency``.
    """

    instrument_id: str
    symbol: str
    venue: str
    asset_class: AssetClass
    currency: str
    tick_size: Decimal
    lot_size: Decimal
    min_quantity: Decimal
    trading_hours: TradingHours
    min_notional: Decimal = Decimal(0)
    multiplier: Decimal = Decimal(1)
    base_currency: str | None = None
    description: str = ""
    tick_schedule: tuple[tuple[Decimal, Decimal], ...] = field(default=())

    def __post_init__(self) -> None:
        for name in ("tick_size", "lot_size", "min_quantity", "min_notional", "multiplier"):
            value = getattr(self, name)
            if not isinstance(value, Decimal):
                raise ConformanceError(f"{self.instrument_id}: {name} must be a Decimal, got {type(value).__name__}")
        if self.tick_size <= 0 or self.lot_size <= 0 or self.multiplier <= 0:
            raise ConformanceError(f"{self.instrument_id}: tick_size, lot_size and multiplier must be positive")
        if self.min_quantity < 0 or self.min_notional < 0:
            raise ConformanceError(f"{self.instrument_id}: min_quantity and min_notional must not be negative")

    # -- prices -------------------------------------------------------------------
    def tick_for(self, price: Decimal) -> Decimal:
        """The tick that applies at ``price``."""
        tick = self.tick_size
        for threshold, schedule_tick in self.tick_schedule:
            if price >= threshold:
                tick = schedule_tick
        return tick

    def conform_price(
        self,
        price: Decimal | int | float | str,
        *,
        rounding: Rounding = "reject",
        side: Side | str | None = None,
    ) -> Decimal:
        """Return ``price`` on the tick grid, or raise ConformanceError.

        ``rounding``: ``reject`` (default) refuses an off-tick price; ``nearest``,
        ``down`` and ``up`` round; ``passive`` rounds a buy down and a sell up, so
        the conformed price is never worse than the one asked for.
        """
        if price.__class__ is Decimal and price.is_finite():  # the order path: no conversion, no label
            value = price
        else:
            value = to_decimal(price, f"{self.instrument_id} price")
        if value <= 0 and self.asset_class is not _FUTURE:
            raise ConformanceError(f"{self.instrument_id}: price must be positive, got {value}")
        tick = self.tick_for(abs(value)) if self.tick_schedule else self.tick_size
        if value.adjusted() >= _CHECK_BOUNDS_FROM:
            check_amount(value, f"{self.instrument_id}: price", tick)
        steps = value / tick
        whole = steps.to_integral_value()
        if steps == whole:
            return (whole * tick).quantize(tick)
        mode = _resolve_rounding(rounding, side, "price")
        if mode is None:
            raise ConformanceError(
                f"{self.instrument_id}: price {value} is not a multiple of the tick {tick}; "
                f"nearest valid prices are {_floor(steps) * tick} and {(_floor(steps) + 1) * tick}"
            )
        conformed = (steps.to_integral_value(rounding=mode) * tick).quantize(tick)
        if conformed <= 0 < value:
            raise ConformanceError(
                f"{self.instrument_id}: price {value} rounds to {conformed}, below the smallest tick {tick}"
            )
        return conformed

    # -- quantities ---------------------------------------------------------------
    def conform_quantity(
        self,
        quantity: Decimal | int | float | str,
        *,
        rounding: Literal["reject", "down", "nearest"] = "reject",
    ) -> Decimal:
        """Return a positive ``quantity`` on the lot grid and at or above the minimum."""
        if quantity.__class__ is Decimal and quantity.is_finite():  # the order path: no conversion, no label
            try:
                conformed = self._conformed_quantities.get(quantity)  # an equal Decimal conforms alike
            except AttributeError:  # nothing remembered yet (or an unpickled copy): _remember_quantity starts it
                conformed = None
            if conformed is not None:
                context = getcontext()
                if (context.prec == _DEFAULT_PREC and context.rounding == ROUND_HALF_EVEN
                        and context.Emax == _DEFAULT_EMAX and context.Emin == _DEFAULT_EMIN and context.clamp == 0):
                    return conformed
            value = quantity
        else:
            value = to_decimal(quantity, f"{self.instrument_id} quantity")
        if value.adjusted() >= _CHECK_BOUNDS_FROM:
            check_amount(value, f"{self.instrument_id}: quantity", self.lot_size)
        if value <= 0:
            raise ConformanceError(f"{self.instrument_id}: quantity must be positive, got {value}")
        lot = self.lot_size
        steps = value / lot
        lots = steps.to_integral_value()
        if steps != lots:
            if rounding == "reject":
                raise ConformanceError(
                    f"{self.instrument_id}: quantity {value} is not a multiple of the lot size {lot}"
                )
            lots = steps.to_integral_value(rounding=ROUND_FLOOR if rounding == "down" else ROUND_HALF_EVEN)
        conformed = (lots * lot).quantize(lot)
        if conformed < self.min_quantity or conformed == 0:
            raise ConformanceError(
                f"{self.instrument_id}: quantity {conformed} is below the minimum {self.min_quantity}"
            )
        if steps == lots and quantity.__class__ is Decimal:
            self._remember_quantity(quantity, conformed)
        return conformed

    def _remember_quantity(self, quantity: Decimal, conformed: Decimal) -> None:
        """Remember an on-lot ``quantity``'s result if the default context computes it exactly."""
        exact = _EXACT_CONTEXT.copy()  # its own flags: misses are rare, and callers may be on several threads
        lot = self.lot_size
        try:
            steps = exact.divide(quantity, lot)
            if steps != steps.to_integral_value(context=exact):
                return
            result = exact.multiply(steps, lot).quantize(lot, context=exact)
        except DecimalException:
            return  # it rounds or signals somewhere: always computed
        if result != conformed or result.as_tuple() != conformed.as_tuple():
            return  # (another context computed the caller's result)
        try:
            remembered = self._conformed_quantities
        except AttributeError:
            remembered = {}
            object.__setattr__(self, "_conformed_quantities", remembered)
        if len(remembered) >= _MAX_REMEMBERED_QUANTITIES:
            remembered.clear()
        remembered[quantity] = result

    def notional(self, price: Decimal, quantity: Decimal) -> Decimal:
        return abs(price) * quantity * self.multiplier

    def check_notional(self, price: Decimal, quantity: Decimal) -> None:
        """Refuse an order whose notional is below the venue's minimum."""
        notional = abs(price) * quantity * self.multiplier  # self.notional, inlined: once per order per stage
        if notional < self.min_notional:
            raise ConformanceError(
                f"{self.instrument_id}: notional {notional} {self.currency} is below the minimum "
                f"{self.min_notional} {self.currency}"
            )

    def conform_order(
        self,
        price: Decimal | int | float | str,
        quantity: Decimal | int | float | str,
        *,
        side: Side | str,
        rounding: Rounding = "reject",
    ) -> tuple[Decimal, Decimal]:
        """Conform price and quantity together, then check the minimum notional."""
        conformed_price = self.conform_price(price, rounding=rounding, side=side)
        conformed_qty = self.conform_quantity(quantity, rounding="reject" if rounding == "reject" else "down")
        self.check_notional(conformed_price, conformed_qty)
        return conformed_price, conformed_qty


def _floor(value: Decimal) -> Decimal:
    return value.to_integral_value(rounding=ROUND_FLOOR)


def _resolve_rounding(rounding: str, side: Side | str | None, what: str) -> str | None:
    if rounding == "reject":
        return None
    if rounding == "nearest":
        return ROUND_HALF_EVEN
    if rounding == "down":
        return ROUND_FLOOR
    if rounding == "up":
        return ROUND_CEILING
    if rounding == "passive":
        if side is None:
            raise ConformanceError(f"passive {what} rounding needs a side (buy or sell)")
        return ROUND_FLOOR if Side(str(side).lower()) is Side.BUY else ROUND_CEILING
    raise ConformanceError(f"unknown rounding {rounding!r}; expected reject, nearest, down, up or passive")


# -- the bundled instruments ---------------------------------------------------------
_US_EQUITY_TICKS = ((Decimal(0), Decimal("0.0001")), (Decimal(1), Decimal("0.01")))


def _us_equity(symbol: str, mic: str, description: str) -> Instrument:
    return Instrument(
        instrument_id=f"{symbol}.{mic}",
        symbol=symbol,
        venue=mic,
        asset_class=AssetClass.EQUITY,
        currency="USD",
        tick_size=Decimal("0.01"),
        tick_schedule=_US_EQUITY_TICKS,
        lot_size=Decimal(1),
        min_quantity=Decimal(1),
        trading_hours=US_EQUITY_HOURS,
        description=description,
    )


def _es_future(symbol: str, description: str) -> Instrument:
    return Instrument(
        instrument_id=f"{symbol}.GLBX",
        symbol=symbol,
        venue="GLBX",
        asset_class=AssetClass.FUTURE,
        currency="USD",
        tick_size=Decimal("0.25"),
        lot_size=Decimal(1),
        min_quantity=Decimal(1),
        multiplier=Decimal(50),
        trading_hours=CME_GLOBEX_HOURS,
        description=description,
    )


BUNDLED_INSTRUMENTS: dict[str, Instrument] = {
    inst.instrument_id: inst
    for inst in (
        _us_equity("SPY", "ARCX", "SPDR S&P 500 ETF Trust"),
        _us_equity("AAPL", "XNAS", "Apple Inc. common stock"),
        _us_equity("IBM", "XNYS", "International Business Machines common stock"),
        _us_equity("BAC", "XNYS", "Bank of America Corp. common stock"),
        _us_equity("AIG", "XNYS", "American International Group common stock"),
        _us_equity("QQQ", "XNAS", "Invesco QQQ Trust"),
        _us_equity("IWM", "ARCX", "iShares Russell 2000 ETF"),
        # Binance spot filters: PRICE_FILTER tickSize, LOT_SIZE stepSize/minQty, NOTIONAL minNotional.
        Instrument(
            instrument_id="BTCUSDT.BINANCE",
            symbol="BTCUSDT",
            venue="BINANCE",
            asset_class=AssetClass.CRYPTO_SPOT,
            currency="USDT",
            base_currency="BTC",
            tick_size=Decimal("0.01"),
            lot_size=Decimal("0.00001"),
            min_quantity=Decimal("0.00001"),
            min_notional=Decimal(5),
            trading_hours=CRYPTO_HOURS,
            description="Bitcoin / Tether spot on Binance",
        ),
        # Coinbase Exchange product BTC-USD: quote_increment, base_increment, min_market_funds.
        Instrument(
            instrument_id="BTC-USD.COINBASE",
            symbol="BTC-USD",
            venue="COINBASE",
            asset_class=AssetClass.CRYPTO_SPOT,
            currency="USD",
            base_currency="BTC",
            tick_size=Decimal("0.01"),
            lot_size=Decimal("0.00000001"),
            min_quantity=Decimal("0.00000001"),
            min_notional=Decimal(1),
            trading_hours=CRYPTO_HOURS,
            description="Bitcoin / US dollar spot on Coinbase",
        ),
        _es_future("ESH4", "E-mini S&P 500 futures, March 2024"),
        _es_future("ESU4", "E-mini S&P 500 futures, September 2024"),
        # Spot FX in fractional pips; 1,000 units (a micro lot) is the smallest ticket at both venues.
        Instrument(
            instrument_id="EURUSD.DUKASCOPY",
            symbol="EURUSD",
            venue="DUKASCOPY",
            asset_class=AssetClass.FX_SPOT,
            currency="USD",
            base_currency="EUR",
            tick_size=Decimal("0.00001"),
            lot_size=Decimal(1000),
            min_quantity=Decimal(1000),
            trading_hours=FX_HOURS,
            description="Euro / US dollar spot, Dukascopy ECN",
        ),
        Instrument(
            instrument_id="EURUSD.FXCM",
            symbol="EURUSD",
            venue="FXCM",
            asset_class=AssetClass.FX_SPOT,
            currency="USD",
            base_currency="EUR",
            tick_size=Decimal("0.00001"),
            lot_size=Decimal(1000),
            min_quantity=Decimal(1000),
            trading_hours=FX_HOURS,
            description="Euro / US dollar spot, FXCM retail aggregated feed",
        ),
    )
}


def get_instrument(instrument_id: str, registry: dict[str, Instrument] | None = None) -> Instrument:
    """Look up an instrument by id (``SYMBOL.VENUE``), suggesting close matches."""
    registry = BUNDLED_INSTRUMENTS if registry is None else registry
    try:
        return registry[instrument_id]
    except KeyError:
        close = difflib.get_close_matches(instrument_id, registry, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(sorted(registry))}"
        raise UnknownInstrumentError(f"unknown instrument {instrument_id!r}{hint}") from None
