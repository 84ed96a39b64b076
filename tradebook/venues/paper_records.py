"""The paper venue's journal records: their kinds and how each is written.

The paper venue keeps its book in a :class:`~tradebook.store.journal.Journal` of its own, in
the format of :mod:`tradebook.store.records`. Kinds: ``open`` (the account: id, currency,
starting cash, book id), ``order`` (an order received), ``accepted``, ``fill`` (with the cash
and position after it, checked on replay), ``cancel_request``, ``replace_request``,
``replaced``, ``replace_rejected``, ``cancelled``, ``expired`` and ``book`` (the quote in force
at a clean close). :mod:`tradebook.venues.paper_journal` reads them back.

The three written once or more per order (``order``, ``accepted``, ``fill``) are formatted
without building a dict, to exactly the bytes :func:`~tradebook.store.records.encode_record`
writes for that dict (``tests/venues/test_paper.py`` holds them to it), with the primitives of
:mod:`tradebook.store.records`; a value of any other kind than those sends the record the
plain way, through ``encode_record``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

from tradebook.model.instruments import Side
from tradebook.model.orders import OrderType, TimeInForce
from tradebook.store.records import (
    FAST_FORMATTING,
    JSON_INT_MAX,
    JSON_INT_MIN,
    decimal_json,
    encode_record,
    json_str,
    json_text,
)

if TYPE_CHECKING:
    from tradebook.venues.paper_orders import VenueOrder

TEXT_CACHE_SIZE = 4096  # strategy ids remembered as JSON text

_ENUM_JSON = {member: f'"{member.value}"' for enum in (Side, OrderType, TimeInForce) for member in enum}
# The order record in two parts: what every order of one shape writes alike (order_shape_terms,
# formatted once per shape), and the rest; built as bytes (the record needs no encoding).
_ORDER_RECORD = (b'{"kind":"order","ts":%d,"client_order_id":%b,"venue_order_id":%b-%d","instrument_id":%b,%b,'
                 b'"reference_price":%b,"reduce_only":%b,"intent_id":%b,"strategy_id":%b}')
_ORDER_SHAPE_TERMS = ('"side":%s,"order_type":%s,"time_in_force":%s,"quantity":%s,"limit_price":%s,"stop_price":%s,'
                      '"expire_ts_ns":%d')
_ACCEPTED_RECORD = '{"kind":"accepted","ts":%d,"client_order_id":%s}'
_FILL_RECORD = ('{"kind":"fill","ts":%d,"client_order_id":%s,"fill_id":%s,"quantity":{"$d":"%s"},"price":{"$d":"%s"},'
                '"fee":{"$d":"%s"},"liquidity":"%s","ts_init_ns":%d,"cash":{"$d":"%s"},"position":{"$d":"%s"}}')


def _fast_int(value: object) -> bool:
    return value.__class__ is int and JSON_INT_MIN <= value <= JSON_INT_MAX


def order_shape_terms(side: Side, order_type: OrderType, tif: TimeInForce, quantity: Decimal,
                      limit: Decimal | None, stop: Decimal | None, expire: int) -> bytes | None:
    """The part of an ``order`` record that every order of one shape writes alike; None when a value
    is not one the fast path writes (those orders' records go through encode_record)."""
    if FAST_FORMATTING and JSON_INT_MIN <= expire <= JSON_INT_MAX and quantity.__class__ is Decimal \
            and (limit is None or limit.__class__ is Decimal) and (stop is None or stop.__class__ is Decimal):
        return (_ORDER_SHAPE_TERMS % (
            _ENUM_JSON[side], _ENUM_JSON[order_type], _ENUM_JSON[tif], decimal_json(quantity),
            decimal_json(limit), decimal_json(stop), expire)).encode()
    return None


def text_json(text: str) -> bytes:
    """An id as JSON text, for the caches the fast path keeps (empty without the fast path or for non-text)."""
    return json_text(text) if FAST_FORMATTING and text.__class__ is str else b""


def order_record(order: VenueOrder, number: int, intent_id: str, strategy_id: str, terms: bytes | None,
                 instrument_json: bytes, order_id_json: bytes, strategy_json: dict[str, bytes]) -> bytes:
    """The ``order`` record of ``order``, received as venue order ``number``.

    ``terms``: its shape's :func:`order_shape_terms`; ``instrument_json``, ``order_id_json``: the
    instrument id and the venue order id prefix as JSON text (the prefix without its closing
    quote); ``strategy_json``: a cache of strategy ids as JSON text, filled here.
    """
    ts, coid, reference = order.received_ts_ns, order.client_order_id, order.reference_price
    if terms is not None and JSON_INT_MIN <= ts <= JSON_INT_MAX and coid.__class__ is str \
            and order.instrument_id.__class__ is str and instrument_json and intent_id.__class__ is str \
            and strategy_id.__class__ is str and (reference is None or reference.__class__ is Decimal):
        strategy = strategy_json.get(strategy_id)
        if strategy is None:
            if len(strategy_json) >= TEXT_CACHE_SIZE:
                strategy_json.clear()
            strategy = strategy_json[strategy_id] = json_text(strategy_id)
        return _ORDER_RECORD % (
            ts, json_text(coid), order_id_json, number, instrument_json, terms,
            b"null" if reference is None else ('{"$d":"%s"}' % reference).encode(),
            b"true" if order.reduce_only else b"false", json_text(intent_id), strategy)
    return encode_record({
        "kind": "order", "ts": ts, "client_order_id": coid, "venue_order_id": order.venue_order_id,
        "instrument_id": order.instrument_id, "side": order.side.value, "order_type": order.order_type.value,
        "time_in_force": order.time_in_force.value, "quantity": order.quantity, "limit_price": order.limit_price,
        "stop_price": order.stop_price, "expire_ts_ns": order.expire_ts_ns, "reference_price": reference,
        "reduce_only": order.reduce_only, "intent_id": intent_id, "strategy_id": strategy_id})


def accepted_record(ts: int, client_order_id: str) -> bytes:
    if FAST_FORMATTING and JSON_INT_MIN <= ts <= JSON_INT_MAX and client_order_id.__class__ is str:
        return (_ACCEPTED_RECORD % (ts, json_str(client_order_id))).encode()
    return encode_record({"kind": "accepted", "ts": ts, "client_order_id": client_order_id})


def fill_record(ts: int, client_order_id: str, fill_id: str, quantity: Decimal, price: Decimal, fee: Decimal,
                liquidity: str, ts_init: int, cash: Decimal, position: Decimal) -> bytes:
    """A ``fill`` record, with the account's cash and the instrument's position after it."""
    # amounts here are Decimals by construction (Decimal arithmetic gives nothing else); ids and times checked
    if FAST_FORMATTING and JSON_INT_MIN <= ts <= JSON_INT_MAX and _fast_int(ts_init) \
            and client_order_id.__class__ is str:
        return (_FILL_RECORD % (ts, json_str(client_order_id), json_str(fill_id), quantity, price, fee, liquidity,
                                ts_init, cash, position)).encode()
    return encode_record({"kind": "fill", "ts": ts, "client_order_id": client_order_id, "fill_id": fill_id,
                          "quantity": quantity, "price": price, "fee": fee, "liquidity": liquidity,
                          "ts_init_ns": ts_init, "cash": cash, "position": position})
