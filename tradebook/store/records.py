"""The journal record codec: the one home of how order-path records are written and read.

A journal line is ``<crc32 hex8> <json>\\n`` (:func:`journal_line`): compact JSON, Decimals
as ``{"$d": "<exact text>"}`` so amounts survive exactly. :func:`encode_record` and
:func:`decode_record` turn a record into its body and back; :class:`~tradebook.store.journal.Journal`
frames, checks and makes them durable.

Two journals hold records in this format:

- the order manager's (:mod:`tradebook.execution.oms`), whose kinds (:class:`RecordKind`) and
  values are built and read back here: ``intent``, ``event``, ``orphan``, ``illegal``,
  ``duplicate``, ``alert``, ``rejection_code``, ``adjustment``. The store parses them in DuckDB
  by :data:`RECORD_SCHEMA`, derived from the same field lists;
- the paper venue's book (:mod:`tradebook.venues.paper_journal`), which formats its hottest
  records without building a dict, with the primitives here (:func:`json_text`,
  :func:`decimal_json`) to exactly the bytes :func:`encode_record` writes.

Old journals replay: a record decodes by its field names, and a field added later is
optional when read (``tests/store/test_records.py`` replays a journal written before this
module existed).

Encoding uses orjson when it is installed (a dependency of ccxt; about 6x faster than
the json module on these records), else the json module; both write the same compact
JSON. One difference: orjson writes a NaN or infinite float as ``null`` where json
refuses it; the order path writes no floats (amounts are Decimals, times ints), and
checking every record for them would cost more than the encoding saves.
"""

from __future__ import annotations

import dataclasses
import json
import zlib
from decimal import Decimal
from enum import StrEnum
from typing import Any

from tradebook.errors import StoreError
from tradebook.model.instruments import Side
from tradebook.model.orders import (
    Fill,
    Order,
    OrderEvent,
    OrderEventType,
    OrderIntent,
    OrderType,
    TimeInForce,
    client_order_id_for,
)

try:  # about 1 us a record instead of 6: the order path writes several records per order
    import orjson as _orjson
except ImportError:  # pragma: no cover - orjson comes with ccxt
    _orjson = None


# -- the line and its body ---------------------------------------------------------------------
BODY_OFFSET = 9  # where a line's body starts: after the 8 hex digits of its checksum and a space


def _encode_default(value: Any) -> Any:
    # json calls this only for what it cannot write itself: Decimals, exactly, as text
    if isinstance(value, Decimal):
        return {"$d": str(value)}
    raise TypeError(f"journal records hold JSON values and Decimals, not {type(value).__name__}: {value!r}")


def _decode_object(value: dict[str, Any]) -> Any:
    if len(value) == 1 and "$d" in value:
        return Decimal(value["$d"])
    return value


_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False, default=_encode_default)


def encode_record(record: dict[str, Any]) -> bytes:
    """A record as the journal writes it (compact JSON, Decimals as ``{"$d": "..."}``), without checksum or newline."""
    try:
        if _orjson is None:
            return _ENCODER.encode(record).encode("utf-8")
        # an exact-size copy: orjson writes into a 1 kB buffer and shrinks it in place, and a
        # writer that keeps its records until the store has them (the order manager) would pin
        # those chunks and fault in fresh heap pages for every record (measured: ~2.5 a record)
        return bytes(memoryview(_orjson.dumps(record, default=_encode_default)))
    except (TypeError, ValueError) as exc:  # orjson.JSONEncodeError is a TypeError
        raise StoreError(f"journal records hold JSON values and Decimals only; refused {record!r}: {exc}") from exc


def decode_record(body: bytes) -> dict[str, Any]:
    """The record :func:`encode_record` wrote, Decimals restored."""
    return json.loads(body, object_hook=_decode_object)


def journal_line(body: bytes) -> bytes:
    """A record body as one journal line: checksum, a space, the body, a newline."""
    return b"%08x %b\n" % (zlib.crc32(body), body)


def line_checks_out(line: bytes) -> bool:
    """Whether ``line`` (without its newline) is a whole record: its checksum matches its body."""
    if len(line) <= BODY_OFFSET or line[BODY_OFFSET - 1:BODY_OFFSET] != b" ":
        return False
    try:
        return int(line[:BODY_OFFSET - 1], 16) == zlib.crc32(line[BODY_OFFSET:])
    except ValueError:
        return False


# -- formatting without a dict (the paper venue's hot records) -----------------------------------
# Writers that format a record by hand must write the bytes encode_record writes for its dict:
# keys in the same order, Decimals with decimal_json (str of a Decimal never needs escaping),
# ints within what orjson writes (64 bits) with %d, text with json_text. Without orjson they
# go through encode_record (FAST_FORMATTING is False).
FAST_FORMATTING = _orjson is not None
JSON_INT_MIN, JSON_INT_MAX = -(1 << 63), (1 << 64) - 1


def json_text(text: str) -> bytes:
    """``text`` as encode_record writes it (a JSON string); needs orjson (:data:`FAST_FORMATTING`).

    Plain printable ASCII without quotes or backslashes, which JSON writes as it is, is quoted
    here: orjson starts every call with a buffer of 1 kB from malloc, and on a heap that keeps
    growing (an order manager's pending records) those come from fresh pages: page faults that
    cost more than the whole record (about 2 per order in the replay bench).
    """
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return b'"%b"' % text.encode()
    return _orjson.dumps(text)


def json_str(text: str) -> str:
    """:func:`json_text` as text."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return '"%s"' % text
    return _orjson.dumps(text).decode()


def decimal_json(value: Decimal | None) -> str:
    """How encode_record writes a Decimal (or None) inside a record."""
    return "null" if value is None else '{"$d":"%s"}' % value


# -- the order manager's records ---------------------------------------------------------------
class RecordKind(StrEnum):
    """The kinds of record in an order manager's journal (the ``kind`` key of each)."""

    INTENT = "intent"  # an order is created: its intent, when, and the ids its row needs
    EVENT = "event"  # an OrderEvent (fills included); ``state``: the order's final row, when it finished it
    ORPHAN = "orphan"  # an event for an order we do not know
    ILLEGAL = "illegal"  # an event the lifecycle refused (audit only), with the ``error``
    DUPLICATE = "duplicate"  # the venue refused a copy of an order it holds: unresolved until reconciled
    ALERT = "alert"  # something a human should look at
    REJECTION_CODE = "rejection_code"  # why an order was rejected, where a program must tell it apart
    ADJUSTMENT = "adjustment"  # a position adopted from the venue, as a synthetic fill


_INTENT_FIELDS = tuple(f.name for f in dataclasses.fields(OrderIntent))
_EVENT_FIELDS = tuple(f.name for f in dataclasses.fields(OrderEvent) if f.name != "fill")
_FILL_FIELDS = tuple(f.name for f in dataclasses.fields(Fill))


def intent_to_record(intent: OrderIntent) -> dict[str, Any]:
    """An intent as a journal value (the journal keeps its Decimals exact); :func:`intent_from_record` reverses it."""
    # spelled out, not a loop over fields: once per order on the hot path (checked against the fields below)
    return {"intent_id": intent.intent_id, "strategy_id": intent.strategy_id, "account_id": intent.account_id,
            "instrument_id": intent.instrument_id, "side": intent.side, "quantity": intent.quantity,
            "order_type": intent.order_type, "time_in_force": intent.time_in_force, "ts_ns": intent.ts_ns,
            "limit_price": intent.limit_price, "stop_price": intent.stop_price, "parent_id": intent.parent_id,
            "reduce_only": intent.reduce_only, "stop_loss": intent.stop_loss, "reason": intent.reason}


def intent_from_record(data: dict[str, Any]) -> OrderIntent:
    return OrderIntent(**{**data, "side": Side(data["side"]), "order_type": OrderType(data["order_type"]),
                          "time_in_force": TimeInForce(data["time_in_force"])})


def fill_to_record(fill: Fill) -> dict[str, Any]:
    # spelled out, not a loop over fields: this runs for every fill on the hot path
    return {"fill_id": fill.fill_id, "client_order_id": fill.client_order_id, "instrument_id": fill.instrument_id,
            "side": fill.side, "quantity": fill.quantity, "price": fill.price, "fee": fill.fee,
            "liquidity": fill.liquidity, "ts_event_ns": fill.ts_event_ns, "ts_init_ns": fill.ts_init_ns}


def fill_from_record(data: dict[str, Any]) -> Fill:
    return Fill(**{**data, "side": Side(data["side"])})


def event_to_record(event: OrderEvent) -> dict[str, Any]:
    # spelled out (3 events per order on the hot path); every OrderEvent field, checked below at import
    fill = event.fill
    return {"client_order_id": event.client_order_id, "event_type": event.event_type,
            "ts_event_ns": event.ts_event_ns, "ts_init_ns": event.ts_init_ns, "venue_order_id": event.venue_order_id,
            "reason": event.reason, "quantity": event.quantity, "limit_price": event.limit_price,
            "stop_price": event.stop_price, "code": event.code,
            "fill": fill_to_record(fill) if fill is not None else None}


def event_from_record(data: dict[str, Any]) -> OrderEvent:
    """The event :func:`event_to_record` wrote (records written before ``code`` existed decode with none)."""
    fill = data.get("fill")
    return OrderEvent(**{**data, "event_type": OrderEventType(data["event_type"]),
                         "fill": fill_from_record(fill) if fill is not None else None})


# the spelled-out encoders must keep up with the dataclasses: a field they missed would not be journaled
if list(event_to_record(OrderEvent("x", OrderEventType.SUBMITTED, 0, 0))) != [*_EVENT_FIELDS, "fill"] or \
        list(fill_to_record(Fill("f", "x", "i", Side.BUY, Decimal(1), Decimal(1), Decimal(0), "taker", 0, 0))) \
        != list(_FILL_FIELDS) or list(intent_to_record(OrderIntent("i", "s", "a", "x", Side.BUY, Decimal(1),
                                                                  OrderType.MARKET, TimeInForce.DAY, 0))) \
        != list(_INTENT_FIELDS):  # pragma: no cover - a guard for whoever adds a field
    raise ImportError("records.event_to_record/fill_to_record/intent_to_record do not match "
                      "OrderEvent/Fill/OrderIntent's fields; update them")


def order_state(order: Order, created: int) -> dict[str, Any]:
    """What changes in an order's ``orders`` row, Decimals as plain text (DuckDB casts it exactly).

    Rides on the ``event`` record that finished the order (``state``), and on the rows the
    order manager hands the store for orders still working.
    """
    intent = order.intent
    limit = order.limit_price if order.limit_price is not None else intent.limit_price
    stop = order.stop_price if order.stop_price is not None else intent.stop_price
    return {"quantity": format(order.total_quantity, "f"),
            "limit_price": None if limit is None else format(limit, "f"),
            "stop_price": None if stop is None else format(stop, "f"),
            "venue_order_id": order.venue_order_id, "status": order.status.value,
            "filled_quantity": format(order.filled_qty, "f"),
            "avg_fill_price": None if order.avg_price is None else format(order.avg_price, "f"),
            "ts_last": max(order.last_ts_ns, created), "reason": order.reason, "fees": format(order.fees, "f")}


def intent_record(intent: OrderIntent, created: int) -> bytes:
    """The record of a new order: its intent, when it was created, and the ids its row needs."""
    record = {"kind": "intent", "ts": created, "client_order_id": intent.client_order_id,
              "intent": intent_to_record(intent)}
    if intent.parent_id is not None:
        record["parent_order_id"] = client_order_id_for(intent.parent_id, intent.account_id)
    return encode_record(record)


def event_record(event: OrderEvent, state: dict[str, Any] | None = None) -> bytes:
    """An event's record; ``state``: the order's final row (:func:`order_state`) when the event finished it."""
    if state is None:
        return encode_record({"kind": "event", "event": event_to_record(event)})
    return encode_record({"kind": "event", "event": event_to_record(event), "state": state})


def orphan_record(event: OrderEvent) -> bytes:
    return encode_record({"kind": "orphan", "event": event_to_record(event)})


def illegal_record(event: OrderEvent, error: str) -> bytes:
    return encode_record({"kind": "illegal", "event": event_to_record(event), "error": error})


def duplicate_record(event: OrderEvent) -> bytes:
    return encode_record({"kind": "duplicate", "event": event_to_record(event)})


def alert_record(ts_ns: int, kind: str, message: str) -> bytes:
    return encode_record({"kind": "alert", "alert": {"ts_ns": ts_ns, "kind": kind, "message": message}})


def rejection_code_record(client_order_id: str, code: str) -> bytes:
    return encode_record({"kind": "rejection_code", "client_order_id": client_order_id, "code": str(code)})


def adjustment_record(account_id: str, strategy_id: str, fill: Fill) -> bytes:
    return encode_record({"kind": "adjustment", "account_id": account_id, "strategy_id": strategy_id,
                          "fill": fill_to_record(fill)})


# -- their shape, for readers that parse them by type (the store's copy into DuckDB) -------------
# Types: "text", "int", "bool", "decimal" ({"$d": "<text>"}), "decimal_text" (a Decimal as plain
# text: the rows the store casts exactly), or a nested shape. Keys a reader does not list are ignored.
FILL_SCHEMA: dict[str, Any] = {
    "fill_id": "text", "client_order_id": "text", "instrument_id": "text", "side": "text", "quantity": "decimal",
    "price": "decimal", "fee": "decimal", "liquidity": "text", "ts_event_ns": "int", "ts_init_ns": "int"}
INTENT_SCHEMA: dict[str, Any] = {
    "intent_id": "text", "strategy_id": "text", "account_id": "text", "instrument_id": "text", "side": "text",
    "order_type": "text", "time_in_force": "text", "quantity": "decimal", "limit_price": "decimal",
    "stop_price": "decimal", "reduce_only": "bool", "stop_loss": "decimal", "reason": "text"}
EVENT_SCHEMA: dict[str, Any] = {
    "client_order_id": "text", "event_type": "text", "ts_event_ns": "int", "ts_init_ns": "int",
    "venue_order_id": "text", "reason": "text", "quantity": "decimal", "limit_price": "decimal",
    "stop_price": "decimal", "code": "text", "fill": FILL_SCHEMA}
ORDER_STATE_SCHEMA: dict[str, Any] = {
    "quantity": "decimal_text", "limit_price": "decimal_text", "stop_price": "decimal_text",
    "venue_order_id": "text", "status": "text", "filled_quantity": "decimal_text",
    "avg_fill_price": "decimal_text", "ts_last": "int", "reason": "text", "fees": "decimal_text"}
# every key of every kind, one shape: the union of what the kinds above write
RECORD_SCHEMA: dict[str, Any] = {
    "kind": "text", "ts": "int", "client_order_id": "text", "intent": INTENT_SCHEMA, "parent_order_id": "text",
    "state": ORDER_STATE_SCHEMA, "event": EVENT_SCHEMA, "error": "text", "code": "text",
    "alert": {"ts_ns": "int", "kind": "text", "message": "text"},
    "account_id": "text", "strategy_id": "text", "fill": FILL_SCHEMA}
