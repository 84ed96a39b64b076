"""Sizing: how many units a signal should trade, conformed to the instrument's grid.

A sizer answers with a :class:`SizingDecision`: a quantity, or ``None`` and the reason
there is no order (no edge, too small for the venue's minimum). Either way the reason is
recorded, so a notebook can show why a signal did not trade.

Quantities are rounded *down* to the lot (never more risk than asked for), then checked
against the instrument's minimum quantity and minimum notional. A signal that carries
an explicit ``quantity`` bypasses sizing but is still conformed, strictly: an off-lot or
too-small explicit size is an error (the user asked for exactly that), not a silent
rounding.

Half-Kelly: with win rate ``p``, ``q = 1 - p`` and payoff ratio ``b = avg_win / avg_loss``,
the Kelly fraction is ``f* = (p·b − q) / b``; half of it is staked, capped at ``cap`` of
equity per position: quantity = equity · min(f*/2, cap) / (price · multiplier). The
statistics are floats in the signal; the arithmetic runs in Decimal from their shortest
repr, so p = 0.55 and b = 1.5 give f* = 0.25 exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from typing import Protocol

from tradebook.config import SizingConfig, SizingMethod, TradebookConfig
from tradebook.errors import OrderError
from tradebook.model.instruments import Instrument
from tradebook.model.orders import Signal


@dataclass(frozen=True, init=False)
class SizingDecision:
    """A sizer's answer: ``quantity`` None means no order, and ``reason`` says why."""

    quantity: Decimal | None
    reason: str
    kelly_fraction: float | None = None  # the full Kelly f* when Half-Kelly sized it

    def __init__(self, quantity: Decimal | None, reason: str, kelly_fraction: float | None = None) -> None:
        # one per signal: straight into __dict__ (a frozen dataclass's own __init__ sets field by field)
        state = self.__dict__
        state["quantity"] = quantity
        state["reason"] = reason
        state["kelly_fraction"] = kelly_fraction


class Sizer(Protocol):
    def size(self, signal: Signal, instrument: Instrument, price: Decimal, equity: Decimal) -> SizingDecision: ...


# -- shared checks ------------------------------------------------------------------------
def _check_inputs(signal: Signal, instrument: Instrument, price: Decimal, equity: Decimal) -> None:
    if signal.instrument_id != instrument.instrument_id:
        raise OrderError(f"signal {signal.signal_id} is for {signal.instrument_id}, sized against "
                         f"{instrument.instrument_id}: expected the signal's instrument")
    if not (price.__class__ is Decimal or isinstance(price, Decimal)) or not price.is_finite() or price <= 0:
        raise OrderError(f"{instrument.instrument_id}: sizing price {price!r} must be a positive finite Decimal")
    if not (equity.__class__ is Decimal or isinstance(equity, Decimal)) or not equity.is_finite():
        raise OrderError(f"{instrument.instrument_id}: equity {equity!r} must be a finite Decimal")


def _explicit(signal: Signal, instrument: Instrument, price: Decimal) -> SizingDecision:
    """A quantity the user gave: conform strictly (off-lot or too small raises ConformanceError)."""
    quantity = signal.quantity
    if quantity.__class__ is not Decimal:  # an int (or a Decimal subclass) becomes a plain Decimal
        if isinstance(quantity, bool) or not isinstance(quantity, (Decimal, int)):
            raise OrderError(f"signal {signal.signal_id}: quantity {quantity!r} must be a Decimal")
        quantity = Decimal(quantity)
    if not quantity.is_finite() or quantity <= 0:
        raise OrderError(f"signal {signal.signal_id}: quantity {quantity} must be positive and finite")
    conformed = instrument.conform_quantity(quantity, rounding="reject")
    instrument.check_notional(price, conformed)
    # !s: a Decimal's str() is its format(), without the slower trip through __format__
    return SizingDecision(conformed, f"explicit quantity {conformed!s} from the signal (sizing bypassed)")


def conform_sized_quantity(instrument: Instrument, quantity: Decimal, price: Decimal, why: str) -> SizingDecision:
    """Round ``quantity`` down to the lot; no order (with the reason) below the minimum size or notional."""
    if quantity <= 0:
        return SizingDecision(None, f"{why}: quantity {quantity} <= 0: no order")
    lots = (quantity / instrument.lot_size).to_integral_value(rounding=ROUND_FLOOR)
    conformed = (lots * instrument.lot_size).quantize(instrument.lot_size)
    if conformed <= 0 or conformed < instrument.min_quantity:
        return SizingDecision(None, f"{why}: {_fmt(quantity)} rounds down to {conformed} at lot "
                                    f"{instrument.lot_size}, below the minimum quantity {instrument.min_quantity}: "
                                    "no order")
    notional = instrument.notional(price, conformed)
    if notional < instrument.min_notional:
        return SizingDecision(None, f"{why}: notional {notional} {instrument.currency} of {conformed} at {price} is "
                                    f"below the minimum {instrument.min_notional} {instrument.currency}: no order")
    return SizingDecision(conformed, f"{why}: {_fmt(quantity)} -> {conformed} (lot {instrument.lot_size})")


def _fmt(value: Decimal) -> str:
    return f"{value:.6g}" if abs(value) < 1 else f"{value.quantize(Decimal('0.0001'), rounding=ROUND_FLOOR)}"


def _no_equity(equity: Decimal) -> SizingDecision | None:
    if equity <= 0:
        return SizingDecision(None, f"equity {equity} <= 0: nothing to size from, no order")
    return None


# -- sizers ---------------------------------------------------------------------------------
class HalfKellySizer:
    """Half of the Kelly fraction of equity, capped at ``cap`` of equity per position."""

    def __init__(self, cap: float = 0.05) -> None:
        if isinstance(cap, bool) or not isinstance(cap, (int, float)) or not 0 < cap <= 1:
            raise OrderError(f"HalfKellySizer cap {cap!r}: expected a fraction of equity in (0, 1]")
        self.cap = Decimal(repr(float(cap)))

    def kelly_fraction(self, signal: Signal) -> Decimal:
        """f* = (p·b − q)/b from the signal's statistics; OrderError if they are missing or invalid."""
        stats = {"win_rate": signal.win_rate, "avg_win": signal.avg_win, "avg_loss": signal.avg_loss}
        missing = [name for name, value in stats.items() if value is None]
        if missing:
            raise OrderError(f"signal {signal.signal_id}: Half-Kelly sizing needs win_rate, avg_win and avg_loss; "
                             f"missing {', '.join(missing)} (or give the signal a quantity to bypass sizing)")
        for name, value in stats.items():
            if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)) or not math.isfinite(value):
                raise OrderError(f"signal {signal.signal_id}: {name} = {value!r}: expected a finite number")
        p = _exact(signal.win_rate)
        avg_win, avg_loss = _exact(signal.avg_win), _exact(signal.avg_loss)
        if not 0 < p < 1:
            raise OrderError(f"signal {signal.signal_id}: win_rate = {signal.win_rate!r}: expected a probability "
                             "strictly between 0 and 1")
        if avg_loss <= 0:
            raise OrderError(f"signal {signal.signal_id}: avg_loss = {signal.avg_loss!r}: expected a positive "
                             "average loss (a magnitude)")
        if avg_win <= 0:
            raise OrderError(f"signal {signal.signal_id}: avg_win = {signal.avg_win!r}: expected a positive "
                             "average win")
        return _kelly(p, avg_win, avg_loss)

    def size(self, signal: Signal, instrument: Instrument, price: Decimal, equity: Decimal) -> SizingDecision:
        _check_inputs(signal, instrument, price, equity)
        if signal.quantity is not None:
            return _explicit(signal, instrument, price)
        f_star = self.kelly_fraction(signal)
        kelly = float(f_star)
        if f_star <= 0:
            return SizingDecision(None, f"kelly fraction {kelly:.4g} <= 0: no edge", kelly)
        if (none := _no_equity(equity)) is not None:
            return SizingDecision(None, none.reason, kelly)
        half = f_star / 2
        fraction = _half_kelly(f_star, self.cap)
        capped = f" capped at {self.cap}" if half > self.cap else ""
        raw = equity * fraction / (price * instrument.multiplier)
        why = f"half Kelly {float(half):.4g} (f*={kelly:.4g}){capped} of equity {equity} at {price}"
        decision = conform_sized_quantity(instrument, raw, price, why)
        return SizingDecision(decision.quantity, decision.reason, kelly)


def _kelly(p: Decimal, avg_win: Decimal, avg_loss: Decimal) -> Decimal:
    """f* = (p·b − q)/b with b = avg_win/avg_loss (avg_loss > 0, avg_win > 0: checked by the callers)."""
    b = avg_win / avg_loss
    return (p * b - (1 - p)) / b


def _half_kelly(f_star: Decimal, cap: Decimal) -> Decimal:
    """The staked fraction: min(f*/2, cap), 0 when there is no edge (f* <= 0)."""
    if f_star <= 0:
        return Decimal(0)
    return min(f_star / 2, cap)


def half_kelly_fraction(win_rate: float, avg_win: float, avg_loss: float, cap: float = 0.05) -> float:
    """The fraction of equity to stake: min(f*/2, cap), 0 when f* <= 0 (the rule HalfKellySizer applies).

    ``win_rate`` in [0, 1], ``avg_win`` and ``avg_loss`` magnitudes >= 0 (a backtest's own statistics, so
    the edges are defined rather than refused: no losing trade at all (avg_loss 0) means f* = p, no winning
    trade (avg_win 0 or win_rate 0) means no edge). Arithmetic in Decimal from the floats' shortest repr, as
    the sizer does, so research and sessions stake the same fraction.
    """
    stats = {"win_rate": win_rate, "avg_win": avg_win, "avg_loss": avg_loss, "cap": cap}
    for name, value in stats.items():
        if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)) or not math.isfinite(value):
            raise OrderError(f"half_kelly_fraction: {name} = {value!r}: expected a finite number")
    if not 0 <= win_rate <= 1:
        raise OrderError(f"half_kelly_fraction: win_rate = {win_rate!r}: expected a probability in [0, 1]")
    if avg_win < 0 or avg_loss < 0:
        raise OrderError(f"half_kelly_fraction: avg_win = {avg_win!r}, avg_loss = {avg_loss!r}: expected "
                         "magnitudes >= 0 (the average loss as a positive number)")
    if not 0 < cap <= 1:
        raise OrderError(f"half_kelly_fraction: cap = {cap!r}: expected a fraction of equity in (0, 1]")
    p, win, loss = _exact(win_rate), _exact(avg_win), _exact(avg_loss)
    if win == 0 or p == 0:
        return 0.0
    f_star = p if loss == 0 else _kelly(p, win, loss)
    return float(_half_kelly(f_star, _exact(cap)))


class FixedQuantitySizer:
    """The same quantity for every signal (rounded down to the lot)."""

    def __init__(self, quantity: Decimal) -> None:
        if isinstance(quantity, bool) or not isinstance(quantity, (Decimal, int)):
            raise OrderError(f"FixedQuantitySizer quantity {quantity!r}: expected a Decimal")
        quantity = Decimal(quantity)
        if not quantity.is_finite() or quantity <= 0:
            raise OrderError(f"FixedQuantitySizer quantity {quantity}: expected a positive finite Decimal")
        self.quantity = quantity

    def size(self, signal: Signal, instrument: Instrument, price: Decimal, equity: Decimal) -> SizingDecision:
        _check_inputs(signal, instrument, price, equity)
        if signal.quantity is not None:
            return _explicit(signal, instrument, price)
        return conform_sized_quantity(instrument, self.quantity, price, f"fixed quantity {self.quantity}")


class PercentOfEquitySizer:
    """``fraction`` of equity per order (0.02 = 2 %), at ``price``."""

    def __init__(self, fraction: float) -> None:
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float, Decimal)) or not 0 < fraction <= 1:
            raise OrderError(f"PercentOfEquitySizer fraction {fraction!r}: expected a fraction of equity in (0, 1]")
        self.fraction = _exact(fraction)

    def size(self, signal: Signal, instrument: Instrument, price: Decimal, equity: Decimal) -> SizingDecision:
        _check_inputs(signal, instrument, price, equity)
        if signal.quantity is not None:
            return _explicit(signal, instrument, price)
        if (none := _no_equity(equity)) is not None:
            return none
        raw = equity * self.fraction / (price * instrument.multiplier)
        return conform_sized_quantity(instrument, raw, price,
                                      f"{self.fraction} of equity {equity} at {price}")


AnySizer = HalfKellySizer | FixedQuantitySizer | PercentOfEquitySizer


def sizer_from_config(cfg: SizingConfig | TradebookConfig) -> AnySizer:
    """The sizer the configuration names (``sizing.method``); accepts the whole config or its sizing section."""
    sizing = cfg.sizing if isinstance(cfg, TradebookConfig) else cfg
    if sizing.method is SizingMethod.HALF_KELLY:
        return HalfKellySizer(sizing.kelly_cap)
    if sizing.method is SizingMethod.FIXED:
        return FixedQuantitySizer(sizing.fixed_quantity)
    return PercentOfEquitySizer(_exact(sizing.percent) / 100)


def _exact(value: float | int | Decimal) -> Decimal:
    """A float's shortest repr as a Decimal: 0.55 stays 0.55, not 0.55000000000000004440892..."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int):
        return Decimal(value)
    return Decimal(repr(float(value)))


__all__ = [
    "FixedQuantitySizer", "HalfKellySizer", "PercentOfEquitySizer", "Sizer", "SizingDecision",
    "conform_sized_quantity", "half_kelly_fraction", "sizer_from_config",
]
