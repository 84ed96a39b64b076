"""How exact numbers read in reprs, tables and frames: rounded for people, exact inside.

Prices show at the instrument's tick precision, quantities at its lot precision and
money (cash, P&L, fees, equity) at the tick's precision with at least cents. Rounding is
for display only: the order and accounting path keeps its exact ``Decimal`` values.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

from tradebook.errors import UnknownInstrumentError
from tradebook.model.instruments import get_instrument

MONEY_MIN_PLACES = 2  # cents at least, whatever the tick
_MAX_PLACES = 12  # the store's DECIMAL(38, 12): nothing finer exists


def _places(step: Decimal) -> int:
    exponent = step.normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def price_places(instrument_id: str | None) -> int | None:
    """Decimal places of the instrument's finest tick; None for an instrument this process does not know."""
    if instrument_id is None:
        return None
    try:
        instrument = get_instrument(instrument_id)
    except UnknownInstrumentError:
        return None
    ticks = [instrument.tick_size, *(tick for _, tick in instrument.tick_schedule)]
    return max(_places(t) for t in ticks)


def quantity_places(instrument_id: str | None) -> int | None:
    """Decimal places of the instrument's lot; None for an instrument this process does not know."""
    if instrument_id is None:
        return None
    try:
        return _places(get_instrument(instrument_id).lot_size)
    except UnknownInstrumentError:
        return None


def money_places(instrument_id: str | None) -> int:
    """Places for money in the instrument's currency: the tick's, and at least cents."""
    places = price_places(instrument_id)
    return max(MONEY_MIN_PLACES, places if places is not None else MONEY_MIN_PLACES)


def round_decimal(value: Decimal | None, places: int | None) -> Decimal | None:
    """``value`` rounded half-even to ``places`` (None: trailing zeros dropped); None stays None."""
    if value is None:
        return None
    if not isinstance(value, Decimal):
        value = Decimal(str(value))
    if not value.is_finite():
        return value
    try:
        if places is None:
            rounded = value.quantize(Decimal(1).scaleb(-_MAX_PLACES), rounding=ROUND_HALF_EVEN).normalize()
            # normalize() writes 100 as 1E+2: back to a plain integer exponent
            return rounded.quantize(Decimal(1)) if rounded == rounded.to_integral_value() else rounded
        return value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN)
    except InvalidOperation:  # too many digits for the context: show it as it is
        return value


def fee_places(instrument_id: str | None) -> int:
    """Places for fees: two more than money, since a fee is a small fraction of a notional."""
    return money_places(instrument_id) + 2


def format_decimal(value: Decimal | float | int | None, places: int | None = None, *, thousands: bool = False,
                   trim: bool = False) -> str:
    """A number as people read it: rounded to ``places``, optional thousands separators, '-' for None.

    ``trim`` drops trailing zeros after rounding (quantities: 0.01, not 0.01000).
    """
    if value is None:
        return "-"
    rounded = round_decimal(value if isinstance(value, Decimal) else Decimal(str(value)), places)
    assert rounded is not None
    if trim and rounded.is_finite() and rounded != rounded.to_integral_value():
        rounded = rounded.normalize()
    elif trim and rounded.is_finite():
        rounded = rounded.quantize(Decimal(1))
    return f"{rounded:,f}" if thousands else f"{rounded:f}"


def html_table(rows: Iterable[tuple[str, str]], caption: str = "") -> str:
    """A two-column key/value table for ``_repr_html_`` (values escaped, numbers right-aligned)."""
    body = "".join(
        f"<tr><th style='text-align:left'>{html.escape(str(key))}</th>"
        f"<td style='text-align:right'>{html.escape(str(value))}</td></tr>"
        for key, value in rows)
    title = f"<caption style='text-align:left'>{html.escape(caption)}</caption>" if caption else ""
    return f"<table class='tradebook'>{title}<tbody>{body}</tbody></table>"
