"""Instruments in the store: registered from the bundled registry or given, compared with what is stored, read back.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import pandas as pd

from tradebook.errors import StoreError, UnknownInstrumentError
from tradebook.model.instruments import AssetClass, BUNDLED_INSTRUMENTS, Instrument, TradingHours


def _hours_to_json(hours: TradingHours) -> str:
    return json.dumps({
        "timezone": hours.timezone,
        "open": hours.open.isoformat(),
        "close": hours.close.isoformat(),
        "open_weekdays": sorted(hours.open_weekdays),
        "extended_open": hours.extended_open.isoformat() if hours.extended_open else None,
        "extended_close": hours.extended_close.isoformat() if hours.extended_close else None,
        "calendar": hours.calendar,
        "always_open": hours.always_open,
    }, sort_keys=True)


def _hours_from_json(text: str) -> TradingHours:
    import datetime as dt

    raw = json.loads(text)

    def t(value: str | None) -> dt.time | None:
        return dt.time.fromisoformat(value) if value else None

    return TradingHours(
        timezone=raw["timezone"],
        open=t(raw["open"]),
        close=t(raw["close"]),
        open_weekdays=frozenset(raw["open_weekdays"]),
        extended_open=t(raw["extended_open"]),
        extended_close=t(raw["extended_close"]),
        calendar=raw["calendar"],
        always_open=raw["always_open"],
    )


def instrument_row(instrument: Instrument) -> list[Any]:
    return [
        instrument.instrument_id,
        instrument.symbol,
        instrument.venue,
        str(instrument.asset_class),
        instrument.currency,
        instrument.base_currency,
        instrument.tick_size,
        json.dumps([[str(p), str(t)] for p, t in instrument.tick_schedule]),
        instrument.lot_size,
        instrument.min_quantity,
        instrument.min_notional,
        instrument.multiplier,
        _hours_to_json(instrument.trading_hours),
        instrument.description,
    ]


def _shown(value: Any) -> str:
    """A stored value for a message: Decimals without DECIMAL(38, 12)'s trailing zeros."""
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    return str(value)


def _same_instrument_row(old: tuple, new: list[Any]) -> bool:
    return all((Decimal(a) == b) if isinstance(b, Decimal) else a == b for a, b in zip(old, new))


def _instrument_from_row(row: dict[str, Any]) -> Instrument:
    def exact(value: Any) -> Decimal:
        # DECIMAL(38, 12) pads to 12 places; strip them without turning 50 into 5E+1
        number = Decimal(value).normalize()
        return number.quantize(Decimal(1)) if number.as_tuple().exponent > 0 else number

    return Instrument(
        instrument_id=row["instrument_id"],
        symbol=row["symbol"],
        venue=row["venue"],
        asset_class=AssetClass(row["asset_class"]),
        currency=row["currency"],
        base_currency=row["base_currency"],
        tick_size=exact(row["tick_size"]),
        tick_schedule=tuple((Decimal(p), Decimal(t)) for p, t in json.loads(row["tick_schedule"])),
        lot_size=exact(row["lot_size"]),
        min_quantity=exact(row["min_quantity"]),
        min_notional=exact(row["min_notional"]),
        multiplier=exact(row["multiplier"]),
        trading_hours=_hours_from_json(row["trading_hours"]),
        description=row["description"],
    )


class InstrumentTables:
    """Register and read instruments. Part of :class:`~tradebook.store.store.Store`: it works on the store's connection
    (``con``, ``transaction``, ``query``) like the rest of the class.
    """

    def register_instruments(self, instruments: Iterable[Instrument] | None = None, *,
                             replace: bool = True) -> int:
        """Insert or update instrument specifications (the bundled ones when none given); returns how many changed.

        With ``replace=False`` an instrument stored with a different specification is
        refused (StoreError naming the fields that differ) and nothing is written.
        """
        instruments = list(BUNDLED_INSTRUMENTS.values() if instruments is None else instruments)
        for instrument in instruments:
            if not isinstance(instrument, Instrument):
                raise StoreError(f"register_instruments takes Instrument objects (tb.Instrument or "
                                 f"tb.instrument_from_dict), got {type(instrument).__name__}")
        if self.read_only:
            self._require_writer()  # raises
        with self._lock:  # unchanged specs write nothing: a lazy writer stays read-only
            existing = {row[0]: row for row in self.con.execute("SELECT * FROM instruments").fetchall()}
        if all(i.instrument_id in existing and _same_instrument_row(existing[i.instrument_id], instrument_row(i))
               for i in instruments):
            return 0
        changed = 0
        with self.transaction() as con:
            existing = {row[0]: row for row in con.execute("SELECT * FROM instruments").fetchall()}
            for instrument in instruments:
                row = instrument_row(instrument)
                old = existing.get(instrument.instrument_id)
                if old is not None and _same_instrument_row(old, row):
                    continue
                if old is not None and not replace:
                    self._unregistered(instrument)  # raises, naming the fields that differ
                if old is not None:
                    con.execute("DELETE FROM instruments WHERE instrument_id = ?", [instrument.instrument_id])
                con.execute(f"INSERT INTO instruments VALUES ({', '.join('?' * len(row))})", row)
                changed += 1
        return changed

    def _unregistered(self, instrument: Instrument) -> Instrument | None:
        """``instrument`` when the store lacks it, None when it holds the same; StoreError when it differs."""
        with self._lock:
            stored = self.con.execute("SELECT * FROM instruments WHERE instrument_id = ?",
                                      [instrument.instrument_id]).fetchone()
            if stored is None:
                return instrument
            row = instrument_row(instrument)
            if _same_instrument_row(stored, row):
                return None
            columns = [d[0] for d in self.con.description]
        differ = [f"{name} {_shown(a)} -> {_shown(b)}" for name, a, b in zip(columns, stored, row)
                  if not _same_instrument_row((a,), [b])]
        raise StoreError(
            f"{instrument.instrument_id} is already registered in {self.path} with another specification "
            f"({'; '.join(differ)}); nothing was written. Use another instrument id, or "
            "store.register_instruments([...]) to replace it on purpose")

    def _bundled_if_unregistered(self, instrument_id: str) -> Instrument | None:
        """None when the store holds ``instrument_id``; the bundled one to register with the data otherwise."""
        known = self.con.execute("SELECT 1 FROM instruments WHERE instrument_id = ?", [instrument_id]).fetchone()
        if known is not None:
            return None
        if instrument_id not in BUNDLED_INSTRUMENTS:
            raise UnknownInstrumentError(
                f"instrument {instrument_id!r} is not registered in {self.path}; define it (tb.instrument_from_dict, "
                "or tradebook load --instrument-file) and register it with store.register_instruments([...])"
            )
        return BUNDLED_INSTRUMENTS[instrument_id]

    def _ensure_instrument(self, instrument_id: str) -> None:
        with self._lock:
            missing = self._bundled_if_unregistered(instrument_id)
        if missing is not None:
            self.register_instruments([missing])

    def instrument(self, instrument_id: str) -> Instrument:
        with self._lock:
            row = self.con.execute("SELECT * FROM instruments WHERE instrument_id = ?", [instrument_id]).fetchone()
            if row is None:
                known = [r[0] for r in self.con.execute("SELECT instrument_id FROM instruments ORDER BY 1").fetchall()]
                raise UnknownInstrumentError(f"unknown instrument {instrument_id!r} in {self.path}; known: {known}")
            columns = [d[0] for d in self.con.description]
        return _instrument_from_row(dict(zip(columns, row)))

    def instruments(self) -> pd.DataFrame:
        return self.query("SELECT * FROM instruments ORDER BY instrument_id")
