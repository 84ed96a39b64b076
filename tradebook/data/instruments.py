"""Your own instruments: an instrument definition from a dict, a small YAML/JSON file or CLI arguments.

A definition names what every order must conform to::

    instrument_id: DOGEUSDT.BINANCE     # SYMBOL.VENUE
    asset_class: crypto_spot            # equity, crypto_spot, future or fx_spot
    currency: USDT                      # prices and notional are in it
    tick: "0.00001"                     # price grid
    lot: "1"                            # quantity grid
    min_size: "1"                       # smallest quantity (default: one lot)
    min_notional: "1"                   # smallest price x quantity x multiplier (default 0)
    calendar: 24/7                      # XNYS, CMES, 24/5 or 24/7 (default: the asset class's usual one)

Optional: ``multiplier`` (default 1), ``base_currency``, ``description``, and ``hours``
(``{timezone, open, close, weekdays}``) instead of a named calendar. Numbers may be
written as text (exact) or numbers; a float goes through its shortest repr. Register
the result with ``store.register_instruments([instrument])``, or pass it to a loader
(``load_quotes(path, instrument)``) and :meth:`Store.ingest` registers it.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

from tradebook.errors import ConformanceError, DataError
from tradebook.model.instruments import (CME_GLOBEX_HOURS, CRYPTO_HOURS, FX_HOURS, US_EQUITY_HOURS, AssetClass,
                                         Instrument, TradingHours, to_decimal)

MAX_DEFINITION_BYTES = 64_000  # a definition is a few lines; anything bigger is the wrong file

CALENDARS: dict[str, TradingHours] = {
    "XNYS": US_EQUITY_HOURS,
    "CMES": CME_GLOBEX_HOURS,
    "24/5": FX_HOURS,
    "24/7": CRYPTO_HOURS,
}
_DEFAULT_CALENDAR = {
    AssetClass.EQUITY: "XNYS",
    AssetClass.FUTURE: "CMES",
    AssetClass.FX_SPOT: "24/5",
    AssetClass.CRYPTO_SPOT: "24/7",
}
# accepted spellings -> Instrument field
_KEYS = {
    "instrument_id": "instrument_id", "symbol": "symbol", "venue": "venue", "asset_class": "asset_class",
    "currency": "currency", "base_currency": "base_currency", "description": "description",
    "tick": "tick_size", "tick_size": "tick_size",
    "lot": "lot_size", "lot_size": "lot_size",
    "min_size": "min_quantity", "min_quantity": "min_quantity",
    "min_notional": "min_notional", "multiplier": "multiplier",
    "calendar": "calendar", "hours": "hours",
}
_REQUIRED = ("instrument_id", "asset_class", "currency", "tick_size", "lot_size")
# bounds of the store's DECIMAL(38, 12): a grid finer or coarser cannot be stored exactly
_SMALLEST = Decimal("1e-12")
_LARGEST = Decimal("1e12")


def instrument_from_dict(spec: Mapping[str, Any], *, source: str = "<definition>") -> Instrument:
    """An :class:`Instrument` from a definition (see the module doc); DataError naming what is wrong otherwise."""
    if not isinstance(spec, Mapping):
        raise DataError(f"an instrument definition is a mapping of keys to values, got {type(spec).__name__}",
                        source=source)
    fields: dict[str, Any] = {}
    for key, value in spec.items():
        name = _KEYS.get(str(key).strip().lower().replace("-", "_"))
        if name is None:
            raise DataError(f"unknown key {key!r} in the instrument definition; expected some of "
                            f"{sorted(set(_KEYS))}", source=source)
        if name in fields:
            raise DataError(f"{key!r} is given twice (as another spelling of {name}); give it once", source=source)
        if value is not None:
            fields[name] = value
    if "instrument_id" not in fields and "symbol" in fields and "venue" in fields:
        fields["instrument_id"] = f"{fields['symbol']}.{fields['venue']}"
    missing = [k for k in _REQUIRED if k not in fields]
    if missing:
        names = {"tick_size": "tick", "lot_size": "lot"}
        raise DataError(f"the instrument definition lacks {', '.join(names.get(m, m) for m in missing)}; expected at "
                        "least instrument_id (SYMBOL.VENUE), asset_class, currency, tick and lot", source=source)
    instrument_id = _text(fields, "instrument_id", source)
    symbol, dot, venue = instrument_id.rpartition(".")
    if not dot or not symbol or not venue or any(c.isspace() for c in instrument_id):
        raise DataError(f"instrument_id {instrument_id!r} is not SYMBOL.VENUE (e.g. DOGEUSDT.BINANCE)", source=source)
    symbol = _text(fields, "symbol", source) if "symbol" in fields else symbol
    venue = _text(fields, "venue", source) if "venue" in fields else venue
    try:
        asset_class = AssetClass(str(fields["asset_class"]).strip().lower())
    except ValueError:
        raise DataError(f"asset_class {fields['asset_class']!r} is not one of "
                        f"{', '.join(a.value for a in AssetClass)}", source=source) from None
    currency = _text(fields, "currency", source).upper()
    tick = _amount(fields, "tick_size", "tick", source, positive=True)
    lot = _amount(fields, "lot_size", "lot", source, positive=True)
    min_quantity = _amount(fields, "min_quantity", "min_size", source) if "min_quantity" in fields else lot
    min_notional = _amount(fields, "min_notional", "min_notional", source) if "min_notional" in fields else Decimal(0)
    multiplier = _amount(fields, "multiplier", "multiplier", source, positive=True) \
        if "multiplier" in fields else Decimal(1)
    if min_quantity % lot != 0:
        raise DataError(f"min_size {min_quantity} is not a multiple of the lot {lot}", source=source)
    hours = _hours(fields, asset_class, source)
    try:
        return Instrument(
            instrument_id=instrument_id, symbol=symbol, venue=venue, asset_class=asset_class, currency=currency,
            base_currency=_text(fields, "base_currency", source).upper() if "base_currency" in fields else None,
            tick_size=tick, lot_size=lot, min_quantity=min_quantity, min_notional=min_notional,
            multiplier=multiplier, trading_hours=hours,
            description=_text(fields, "description", source) if "description" in fields else "")
    except ConformanceError as exc:
        raise DataError(str(exc), source=source) from exc


def load_instrument_file(path: str | Path) -> Instrument:
    """An instrument from a small YAML or JSON file (JSON when it ends in .json)."""
    path = Path(path)
    source = str(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_DEFINITION_BYTES + 1)
    except OSError as exc:
        raise DataError(f"cannot read the instrument definition: {exc.strerror or exc}", source=source) from exc
    if len(raw) > MAX_DEFINITION_BYTES:
        raise DataError(f"larger than {MAX_DEFINITION_BYTES:,} bytes; expected an instrument definition of a few "
                        "lines", source=source)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"byte {exc.start} is not UTF-8; expected a UTF-8 text file (YAML or JSON)", source=source,
                        line=line) from None
    if path.suffix.lower() == ".json":
        try:
            spec = json.loads(text, object_pairs_hook=_unique_pairs)
        except json.JSONDecodeError as exc:
            raise DataError(f"not valid JSON: {exc.msg}", source=source, line=exc.lineno) from None
        except ValueError as exc:  # a duplicate key
            raise DataError(str(exc), source=source) from None
    else:
        spec = _read_yaml(text, source)
    return instrument_from_dict(spec, source=source)


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"key {key!r} is given twice; give it once")
        seen[key] = value
    return seen


def _read_yaml(text: str, source: str) -> Any:
    import yaml

    class Loader(yaml.SafeLoader):
        """SafeLoader that refuses duplicate keys; numbers stay text so that 0.1 is exactly 0.1."""

    def mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if key in out:
                raise DataError(f"key {key!r} is given twice; give it once", source=source,
                                line=key_node.start_mark.line + 1)
            out[key] = loader.construct_object(value_node, deep=True)
        return out

    Loader.add_constructor("tag:yaml.org,2002:map", mapping)
    Loader.add_constructor("tag:yaml.org,2002:float", lambda loader, node: str(node.value))
    Loader.add_constructor("tag:yaml.org,2002:int", lambda loader, node: str(node.value))
    try:
        return yaml.load(text, Loader=Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise DataError(f"not valid YAML: {exc.problem or exc}", source=source,
                        line=mark.line + 1 if mark else None) from None
    except (yaml.YAMLError, RecursionError) as exc:
        raise DataError(f"not valid YAML: {' '.join(str(exc).split())[:200]}", source=source) from None


def _text(fields: Mapping[str, Any], name: str, source: str) -> str:
    value = fields[name]
    if not isinstance(value, str) or not value.strip() or len(value) > 200:
        raise DataError(f"{name} is {value!r}; expected non-empty text", source=source)
    return value.strip()


def _amount(fields: Mapping[str, Any], name: str, shown: str, source: str, *, positive: bool = False) -> Decimal:
    value = fields[name]
    if isinstance(value, bool) or not isinstance(value, (str, int, float, Decimal)):
        raise DataError(f"{shown} is {value!r}; expected a number", source=source)
    try:
        number = to_decimal(value.replace("_", "") if isinstance(value, str) else value, shown)
    except ConformanceError:
        raise DataError(f"{shown} is {value!r}; expected a number", source=source) from None
    if number < 0 or (positive and number == 0):
        raise DataError(f"{shown} is {number}; expected a number {'> 0' if positive else '>= 0'}", source=source)
    if number != 0 and (abs(number) < _SMALLEST or abs(number) > _LARGEST or number % _SMALLEST != 0):
        raise DataError(f"{shown} is {number}; expected at most 12 decimal places and at most {_LARGEST:,.0f} "
                        "(the store keeps DECIMAL(38, 12))", source=source)
    return number.normalize() if number == number.to_integral_value() else number


def _hours(fields: Mapping[str, Any], asset_class: AssetClass, source: str) -> TradingHours:
    if "hours" in fields and "calendar" in fields:
        raise DataError("give calendar or hours, not both", source=source)
    if "hours" not in fields:
        name = str(fields.get("calendar", _DEFAULT_CALENDAR[asset_class])).strip().upper()
        if name not in CALENDARS:
            raise DataError(f"calendar {fields.get('calendar')!r} is not one of {', '.join(CALENDARS)}; or give "
                            "hours: {timezone, open, close, weekdays}", source=source)
        return CALENDARS[name]
    hours = fields["hours"]
    allowed = {"timezone", "open", "close", "weekdays", "calendar"}
    if not isinstance(hours, Mapping) or not {"timezone", "open", "close"} <= set(hours) or set(hours) - allowed:
        raise DataError(f"hours is {hours!r}; expected timezone, open and close (HH:MM), and optionally weekdays "
                        "(0 = Monday) and calendar", source=source)
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    timezone = str(hours["timezone"])
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise DataError(f"hours.timezone {timezone!r} is not an IANA time zone (e.g. America/New_York)",
                        source=source) from None

    def clock(key: str) -> dt.time:
        value = str(hours[key]).strip()
        try:
            return dt.time.fromisoformat(value)
        except ValueError:
            raise DataError(f"hours.{key} {value!r} is not a time of day; expected HH:MM", source=source) from None

    weekdays = hours.get("weekdays", [0, 1, 2, 3, 4])
    try:
        days = frozenset(int(d) for d in weekdays)
    except (TypeError, ValueError):
        days = frozenset({-1})
    if not days or not days <= set(range(7)):
        raise DataError(f"hours.weekdays {weekdays!r}; expected a list of 0 (Monday) to 6 (Sunday)", source=source)
    return TradingHours(timezone=timezone, open=clock("open"), close=clock("close"), open_weekdays=days,
                        calendar=str(hours.get("calendar", "")))
