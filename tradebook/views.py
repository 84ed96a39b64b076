"""What a session shows a person: frames and a status that keep exact values and display them rounded.

A :class:`ReadableFrame` is a plain DataFrame (indexing, ``to_dict``, comparisons see the
exact ``Decimal`` values) whose notebook and text display round prices to the
instrument's tick, quantities to its lot and money to its currency's precision
(:mod:`tradebook.model.formatting`). A :class:`SessionStatus` is a read-only mapping
(``status()["state"]``) with the same exact values and a one-table ``_repr_html_``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any

import pandas as pd

from tradebook.model.formatting import (
    fee_places,
    format_decimal,
    html_table,
    money_places,
    price_places,
    quantity_places,
)

PRICE_COLUMNS = frozenset({"limit_price", "stop_price", "avg_price", "price", "mark_price", "stop_loss"})
QUANTITY_COLUMNS = frozenset({"quantity", "filled_qty", "remaining", "position"})
MONEY_COLUMNS = frozenset({"market_value", "unrealised_pnl", "realised_pnl", "cash", "equity", "notional"})
FEE_COLUMNS = frozenset({"fee", "fees"})
MONEY_KEYS = MONEY_COLUMNS  # status keys shown as money


def _places_for(column: str, instrument_id: str | None) -> tuple[int | None, bool]:
    """(decimal places, trim trailing zeros) for a column of an instrument's row."""
    if column in PRICE_COLUMNS:
        return price_places(instrument_id), False
    if column in QUANTITY_COLUMNS:
        return quantity_places(instrument_id), True
    if column in FEE_COLUMNS:
        return fee_places(instrument_id), False  # a column of fees lines up: 5.0000 beside 4.9929
    return money_places(instrument_id), False


def rounded_for_display(frame: pd.DataFrame, instrument_id: str | None = None) -> pd.DataFrame:
    """A plain copy of ``frame`` whose Decimal money, price and quantity cells are rounded strings per row's instrument.

    The instrument comes from the row's ``instrument_id`` column, else ``instrument_id``.
    Other columns (and non-Decimal cells) are left as they are.
    """
    shown = pd.DataFrame(frame).copy()
    if shown.empty:
        return shown
    columns = [c for c in shown.columns
               if c in PRICE_COLUMNS | QUANTITY_COLUMNS | MONEY_COLUMNS | FEE_COLUMNS]
    instruments = (shown["instrument_id"].tolist() if "instrument_id" in shown.columns
                   else [instrument_id] * len(shown))
    for column in columns:
        values = shown[column].tolist()
        if not any(isinstance(v, Decimal) for v in values):
            continue
        cells = []
        for value, instrument in zip(values, instruments):
            if isinstance(value, Decimal):
                places, trim = _places_for(column, instrument if isinstance(instrument, str) else None)
                cells.append(format_decimal(value, places, trim=trim))
            else:
                cells.append(value)
        shown[column] = pd.Series(cells, index=shown.index, dtype=object)
    return shown


class ReadableFrame(pd.DataFrame):
    """A DataFrame of exact values that displays money, prices and quantities rounded (see the module doc)."""

    _metadata = ["display_instrument_id"]
    display_instrument_id: str | None = None

    @property
    def _constructor(self) -> type[ReadableFrame]:
        return ReadableFrame

    def _display_copy(self) -> pd.DataFrame:
        return rounded_for_display(pd.DataFrame(self), self.display_instrument_id)

    def __repr__(self) -> str:
        return repr(self._display_copy())

    def _repr_html_(self) -> str | None:
        return self._display_copy()._repr_html_()

    def exact(self) -> pd.DataFrame:
        """The same data as a plain DataFrame (its display unrounded)."""
        return pd.DataFrame(self)


def readable(frame: pd.DataFrame, instrument_id: str | None = None) -> ReadableFrame:
    """``frame`` as a :class:`ReadableFrame` (same data, rounded display)."""
    result = ReadableFrame(frame)
    result.display_instrument_id = instrument_id
    return result


class SessionStatus(Mapping[str, Any]):
    """A session's status: a read-only mapping of exact values, shown as a small rounded table.

    ``status["cash"]`` is the exact ``Decimal``; ``repr`` and ``_repr_html_`` round money to
    the currency of ``instrument_id`` (the session's first instrument).
    """

    def __init__(self, values: Mapping[str, Any], instrument_id: str | None = None) -> None:
        self._values = dict(values)
        self._instrument_id = instrument_id

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __eq__(self, other: object) -> bool:
        return dict(self._values) == (dict(other) if isinstance(other, Mapping) else other)

    __hash__ = None  # type: ignore[assignment]  # a mutable-looking mapping: not hashable, like dict

    def shown(self, key: str) -> str:
        """One value as displayed: money rounded, None as '-'."""
        value = self._values[key]
        if isinstance(value, Decimal):
            places = money_places(self._instrument_id) if key in MONEY_KEYS else None
            return format_decimal(value, places, thousands=key in MONEY_KEYS)
        return "-" if value is None else str(value)

    def __repr__(self) -> str:
        return "SessionStatus(" + ", ".join(f"{k}={self.shown(k)}" for k in self._values) + ")"

    def _repr_html_(self) -> str:
        return html_table(((key, self.shown(key)) for key in self._values), caption="session status")
