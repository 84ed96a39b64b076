"""Where Alpaca's vocabulary stops: order types, sides, time in force, statuses and trade events, both ways.

The Alpaca adapter parses with these functions and nothing else speaks Alpaca's words.
Every value of alpaca-py's enums is either mapped or refused with
:class:`~tradebook.errors.VenueMappingError` naming it and what is taken instead; so is
every tradebook value sent the other way. Functions take alpaca-py enum members or their
plain strings (a ``TradeUpdate.event`` arrives as either).

Statuses Alpaca holds while an order is still working (``new``, ``accepted``,
``pending_new``, ``held``, ``done_for_day``, ``replaced`` ...) resolve by what has
filled: ``accepted``, ``partially_filled`` or ``filled``. An order ``replaced`` at Alpaca
lives on under the id in ``replaced_by``, so for tradebook it is still working.

Also here: Alpaca's refusals as RejectCode values (:func:`reject_code_from_alpaca`; Alpaca
answers most of them 422 with one of two codes, so its message decides), its exchange
names as MICs, and the client order ids of replacing orders (tradebook's id with ``.r<n>``).
"""

from __future__ import annotations

from decimal import Decimal
from enum import Enum
from typing import Any

from tradebook.errors import VenueMappingError
from tradebook.model.instruments import Side
from tradebook.model.orders import Fill, OrderEvent, OrderEventType, OrderStatus, OrderType, RejectCode, TimeInForce

_ZERO = Decimal(0)
_WORKING = "working"  # resolved by the filled quantity

_ORDER_TYPES = {OrderType.MARKET: "market", OrderType.LIMIT: "limit", OrderType.STOP: "stop",
                OrderType.STOP_LIMIT: "stop_limit"}
_ORDER_TYPES_REFUSED = {"trailing_stop": "tradebook has no trailing stops; cancel it or manage it at Alpaca"}
_SIDES = {Side.BUY: "buy", Side.SELL: "sell"}
_TIME_IN_FORCE = {TimeInForce.DAY: "day", TimeInForce.GTC: "gtc", TimeInForce.IOC: "ioc", TimeInForce.FOK: "fok"}
_TIME_IN_FORCE_REFUSED = {"opg": "at-the-open orders are not modelled by tradebook",
                          "cls": "at-the-close orders are not modelled by tradebook"}

# Alpaca order status -> tradebook status (or _WORKING: accepted / partially_filled / filled by quantity)
_STATUS_FROM = {
    "new": _WORKING, "accepted": _WORKING, "pending_new": _WORKING, "accepted_for_bidding": _WORKING,
    "pending_review": _WORKING, "held": _WORKING, "stopped": _WORKING, "suspended": _WORKING,
    "calculated": _WORKING, "done_for_day": _WORKING, "replaced": _WORKING,
    "partially_filled": OrderStatus.PARTIALLY_FILLED, "filled": OrderStatus.FILLED,
    "pending_cancel": OrderStatus.PENDING_CANCEL, "pending_replace": OrderStatus.PENDING_REPLACE,
    "canceled": OrderStatus.CANCELLED, "expired": OrderStatus.EXPIRED, "rejected": OrderStatus.REJECTED,
}
_STATUS_TO = {
    OrderStatus.SUBMITTED: "pending_new", OrderStatus.ACCEPTED: "new",
    OrderStatus.PARTIALLY_FILLED: "partially_filled", OrderStatus.FILLED: "filled",
    OrderStatus.PENDING_CANCEL: "pending_cancel", OrderStatus.PENDING_REPLACE: "pending_replace",
    OrderStatus.CANCELLED: "canceled", OrderStatus.REJECTED: "rejected", OrderStatus.EXPIRED: "expired",
}
# keyed by value: tradebook's own states, which no venue reports
_STATUS_TO_REFUSED = {"pending": "a pending order has not left tradebook: Alpaca has never seen it",
                      "unresolved": "tradebook does not know whether Alpaca holds it; reconciliation asks Alpaca "
                                    "by client order id"}

# trade_updates events -> lifecycle events; None: Alpaca reports a state, the lifecycle takes no step
_EVENTS_FROM: dict[str, OrderEventType | None] = {
    "new": OrderEventType.ACCEPTED, "accepted": OrderEventType.ACCEPTED, "pending_new": OrderEventType.ACCEPTED,
    "fill": OrderEventType.FILLED, "partial_fill": OrderEventType.FILLED,
    "canceled": OrderEventType.CANCELLED, "expired": OrderEventType.EXPIRED, "rejected": OrderEventType.REJECTED,
    "replaced": OrderEventType.REPLACED, "order_cancel_rejected": OrderEventType.CANCEL_REJECTED,
    "order_replace_rejected": OrderEventType.REPLACE_REJECTED,
    "pending_cancel": None, "pending_replace": None, "restated": None, "done_for_day": None, "calculated": None,
    "stopped": None, "suspended": None, "held": None,
}
_EVENTS_REFUSED = {
    "trade_bust": "a busted trade undoes a fill; reconcile the order and positions by REST",
    "trade_correct": "a corrected trade changes a fill; reconcile the order and positions by REST",
}
_EVENTS_TO = {
    OrderEventType.ACCEPTED: "new", OrderEventType.FILLED: "fill", OrderEventType.CANCELLED: "canceled",
    OrderEventType.EXPIRED: "expired", OrderEventType.REJECTED: "rejected", OrderEventType.REPLACED: "replaced",
    OrderEventType.CANCEL_REQUESTED: "pending_cancel", OrderEventType.REPLACE_REQUESTED: "pending_replace",
    OrderEventType.CANCEL_REJECTED: "order_cancel_rejected", OrderEventType.REPLACE_REJECTED: "order_replace_rejected",
}
_EVENTS_TO_REFUSED = {"submitted": "'submitted' is tradebook's own step (sent, not yet answered)",
                      "outcome_unknown": "'outcome_unknown' is tradebook's own step (sent, no answer either way)"}


def _word(value: Any) -> str:
    # an alpaca-py enum member or its string
    return str(value.value if isinstance(value, Enum) else value)


def _refuse(kind: str, value: Any, known: dict[Any, Any], refused: dict[Any, str]) -> VenueMappingError:
    word = _word(value)
    if word in refused or value in refused:
        return VenueMappingError(f"Alpaca {kind} {word!r}: {refused.get(word) or refused[value]}")
    return VenueMappingError(f"unknown Alpaca {kind} {word!r}; expected one of {sorted(map(_word, known))}")


def _to(kind: str, value: Any, table: dict[Any, str], refused: dict[Any, str] | None = None) -> str:
    try:
        return table[value]
    except (KeyError, TypeError):
        pass
    if refused and value in refused:
        raise VenueMappingError(f"tradebook {kind} {_word(value)!r} has no Alpaca counterpart: {refused[value]}")
    raise VenueMappingError(f"not a tradebook {kind}: {value!r}; expected one of {sorted(map(str, table))}")


def _from(kind: str, value: Any, table: dict[Any, str], refused: dict[str, str]) -> Any:
    word = _word(value)
    for ours, theirs in table.items():
        if theirs == word:
            return ours
    raise _refuse(kind, word, {v: k for k, v in table.items()}, refused)


# -- order types, sides, time in force ---------------------------------------------------------------
def order_type_to_alpaca(order_type: OrderType) -> str:
    """Alpaca's ``type`` for a tradebook order type (alpaca-py ``OrderType`` has the same strings)."""
    return _to("order type", order_type, _ORDER_TYPES)


def order_type_from_alpaca(value: Any) -> OrderType:
    return _from("order type", value, _ORDER_TYPES, _ORDER_TYPES_REFUSED)


def side_to_alpaca(side: Side) -> str:
    return _to("side", side, _SIDES)


def side_from_alpaca(value: Any) -> Side:
    return _from("side", value, _SIDES, {})


def time_in_force_to_alpaca(time_in_force: TimeInForce) -> str:
    return _to("time in force", time_in_force, _TIME_IN_FORCE)


def time_in_force_from_alpaca(value: Any) -> TimeInForce:
    return _from("time in force", value, _TIME_IN_FORCE, _TIME_IN_FORCE_REFUSED)


# -- statuses and events -----------------------------------------------------------------------------
def order_status_from_alpaca(value: Any, *, filled_qty: Decimal = _ZERO, quantity: Decimal | None = None
                             ) -> OrderStatus:
    """The tradebook status of an Alpaca order; working statuses resolve by ``filled_qty`` of ``quantity``."""
    word = _word(value)
    target = _STATUS_FROM.get(word)
    if target is None:
        raise _refuse("order status", word, _STATUS_FROM, {})
    if target != _WORKING:
        return target
    if quantity is not None and filled_qty >= quantity > 0:
        return OrderStatus.FILLED
    return OrderStatus.PARTIALLY_FILLED if filled_qty > 0 else OrderStatus.ACCEPTED


def order_status_to_alpaca(status: OrderStatus) -> str:
    """The Alpaca status a venue order in this tradebook status shows (for checks and the sandbox)."""
    return _to("order status", status, _STATUS_TO, _STATUS_TO_REFUSED)


def event_from_alpaca(value: Any) -> OrderEventType | None:
    """The lifecycle event of a ``trade_updates`` event, or None when Alpaca reports a state and nothing happens."""
    word = _word(value)
    if word in _EVENTS_FROM:
        return _EVENTS_FROM[word]
    raise _refuse("trade update event", word, _EVENTS_FROM, _EVENTS_REFUSED)


def event_to_alpaca(event: OrderEventType, *, complete: bool = True) -> str:
    """The trade_updates event for a lifecycle event; a fill that leaves quantity open is ``partial_fill``."""
    word = _to("order event", event, _EVENTS_TO, _EVENTS_TO_REFUSED)
    return "partial_fill" if word == "fill" and not complete else word


# -- parsing what alpaca-py returns ------------------------------------------------------------------
def _decimal(value: Any) -> Decimal | None:
    # alpaca-py keeps prices and quantities as the API's strings (or floats in trade updates)
    return None if value is None else Decimal(str(value))


def _ns(moment: Any) -> int:
    if moment.tzinfo is None:
        raise VenueMappingError(f"Alpaca time {moment!r} has no time zone; expected UTC")
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1_000


def order_event_from_trade_update(update: Any, *, instrument_id: str, ts_init_ns: int,
                                  client_order_id: str | None = None) -> OrderEvent | None:
    """A tradebook OrderEvent from alpaca-py's ``TradeUpdate`` (None for state-only events).

    A fill carries the update's ``execution_id`` as its fill id (so a repeated message
    is one fill), its price and quantity as Decimals, no fee (Alpaca charges none on the
    update) and ``taker`` liquidity (Alpaca does not say; the costlier side is assumed).
    A replacement's event names the new venue order id (its new terms are not in the update).
    ``client_order_id`` overrides the update's (a replacing order carries its own id at
    Alpaca; tradebook knows it under the id of the order it replaced).
    """
    kind = event_from_alpaca(update.event)
    if kind is None:
        return None
    order = update.order
    coid = client_order_id or order.client_order_id
    ts_event_ns = _ns(update.timestamp)
    fill = None
    venue_order_id = str(order.id)
    quantity = limit_price = stop_price = None
    if kind is OrderEventType.FILLED:
        if update.execution_id is None or update.qty is None or update.price is None:
            raise VenueMappingError(f"Alpaca {_word(update.event)} for {order.client_order_id} lacks its "
                                    "execution_id, qty or price")
        fill = Fill(str(update.execution_id), coid, instrument_id, side_from_alpaca(order.side),
                    _decimal(update.qty), _decimal(update.price), _ZERO, "taker", ts_event_ns, ts_init_ns)
    elif kind is OrderEventType.REPLACED:
        # the update carries the replaced (old) order: the new terms are not in it. The adapter adds
        # them from the replace reply, or the order manager from its own request
        venue_order_id = str(order.replaced_by) if order.replaced_by else venue_order_id
    reason = ""
    if kind in (OrderEventType.REJECTED, OrderEventType.CANCELLED, OrderEventType.EXPIRED):
        reason = f"alpaca:{_word(update.event)}"
    # a 'rejected' update carries the order, not why (Alpaca's order has no reject reason): the code says so
    code = RejectCode.VENUE_OTHER if kind is OrderEventType.REJECTED else None
    return OrderEvent(coid, kind, ts_event_ns, ts_init_ns, venue_order_id=venue_order_id, fill=fill, reason=reason,
                      quantity=quantity, limit_price=limit_price, stop_price=stop_price, code=code)


def fill_from_activity(activity: Any, *, client_order_id: str, instrument_id: str, ts_init_ns: int) -> Fill:
    """A tradebook Fill from a FILL account activity (``GET /v2/account/activities/FILL``).

    The REST fallback for fills the stream did not deliver: the activity id is
    ``<time>::<execution id>`` and the fill id is the execution id, the same the stream's
    fill event carries, so a fill seen both ways is applied once. ``activity`` is
    alpaca-py's ``TradeActivity`` or the raw dict; the caller maps its ``order_id`` to
    the client order id.
    """
    get = activity.get if isinstance(activity, dict) else lambda name: getattr(activity, name, None)
    kind = _word(get("activity_type"))
    if kind != "FILL":
        raise VenueMappingError(f"Alpaca activity {get('id')!r} is {kind!r}, not a FILL")
    missing = [k for k in ("id", "price", "qty", "side", "transaction_time") if get(k) is None]
    if missing:
        raise VenueMappingError(f"Alpaca FILL activity {get('id')!r} lacks {', '.join(missing)}")
    moment = get("transaction_time")
    if isinstance(moment, str):
        from datetime import datetime

        moment = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    execution_id = str(get("id")).rpartition("::")[2]
    return Fill(execution_id, client_order_id, instrument_id, side_from_alpaca(get("side")), _decimal(get("qty")),
                _decimal(get("price")), _ZERO, "taker", _ns(moment), ts_init_ns)


def order_request(*, symbol: str, side: Side, quantity: Decimal, order_type: OrderType,
                  time_in_force: TimeInForce, client_order_id: str, limit_price: Decimal | None = None,
                  stop_price: Decimal | None = None, extended_hours: bool = False) -> Any:
    """alpaca-py's request object for an order (MarketOrderRequest, LimitOrderRequest, ...).

    Quantities and prices go as floats (alpaca-py types them so) built from the Decimals'
    text; Alpaca's own rules (fractional only for DAY market and limit orders, extended
    hours only for DAY limit orders) are left to Alpaca to answer 422 with its code.
    """
    from alpaca.trading import requests as alpaca_requests

    fields: dict[str, Any] = {"symbol": symbol, "qty": float(quantity), "side": side_to_alpaca(side),
                              "time_in_force": time_in_force_to_alpaca(time_in_force),
                              "client_order_id": client_order_id, "extended_hours": extended_hours or None}
    needs = {OrderType.LIMIT: ("limit_price",), OrderType.STOP: ("stop_price",),
             OrderType.STOP_LIMIT: ("limit_price", "stop_price")}.get(order_type, ())
    prices = {"limit_price": limit_price, "stop_price": stop_price}
    for name in needs:
        if prices[name] is None:
            raise VenueMappingError(f"a {order_type} order needs {name}")
        fields[name] = float(prices[name])
    for name in set(prices) - set(needs):
        if prices[name] is not None:
            raise VenueMappingError(f"a {order_type} order takes no {name} (got {prices[name]})")
    classes = {OrderType.MARKET: alpaca_requests.MarketOrderRequest, OrderType.LIMIT: alpaca_requests.LimitOrderRequest,
               OrderType.STOP: alpaca_requests.StopOrderRequest,
               OrderType.STOP_LIMIT: alpaca_requests.StopLimitOrderRequest}
    order_type_to_alpaca(order_type)  # refuses what is not an order type
    return classes[order_type](**{k: v for k, v in fields.items() if v is not None})


# -- refusals and failures -----------------------------------------------------------------------------
# RejectCode values (tradebook.model.orders.RejectCode) by the words of Alpaca's message.
# Alpaca answers most refusals 422 with code 40010001 or 42210000 whatever the cause, so the
# message tells them apart: this table is the one place that reads Alpaca's prose.
_REJECT_BY_MESSAGE: tuple[tuple[str, str], ...] = (
    ("client_order_id must be unique", "duplicate_client_id"),
    ("buying power", "insufficient_funds"),
    ("insufficient qty", "insufficient_funds"),
    ("not shortable", "not_shortable"),
    ("cannot be sold short", "not_shortable"),
    ("asset", "unknown_instrument"),  # 'asset "X" not found', 'asset not found for X'
    ("already in", "too_late_to_cancel"),  # 'order is already in "filled" state'
    ("fractional", "unsupported_order"),
    ("extended hours", "unsupported_order"),
    ("notional", "unsupported_order"),
    ("order type", "unsupported_order"),
    ("time_in_force", "unsupported_order"),
    ("market is closed", "market_closed"),
    ("qty", "invalid_quantity"),
    ("limit_price", "invalid_price"),
    ("stop_price", "invalid_price"),
    ("price", "invalid_price"),
)
RETRYABLE_STATUSES = frozenset({429})  # refused before it was looked at: sent again after the wait


def reject_code_from_alpaca(status: int | None, code: Any, message: str) -> RejectCode:
    """The RejectCode for an Alpaca refusal (HTTP status, Alpaca's code, its message)."""
    if status == 429:
        return RejectCode.RATE_LIMITED
    if status == 404:
        return RejectCode.UNKNOWN_ORDER
    text = (message or "").lower()
    for needle, ours in _REJECT_BY_MESSAGE:
        if needle in text:
            return RejectCode(ours)
    if str(code) == "40310000":  # Alpaca's 'forbidden' for an order: buying power, day-trading rules
        return RejectCode.INSUFFICIENT_FUNDS
    return RejectCode.VENUE_OTHER


def api_error_parts(exc: Any) -> tuple[int | None, str | None, str]:
    """(HTTP status, Alpaca's code, message) of an alpaca-py ``APIError`` whose body may not be JSON."""
    status = getattr(exc, "status_code", None)
    try:
        code, message = exc.code, exc.message
    except (ValueError, KeyError, TypeError, AttributeError):
        return status, None, str(exc)[:300]
    return status, None if code is None else str(code), str(message)


def retry_after_s(exc: Any, default: float) -> float:
    """The wait an Alpaca 429 asks for (its ``Retry-After`` header, seconds), else ``default``."""
    response = getattr(exc, "response", None)
    value = None if response is None else response.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else default
    except ValueError:
        return default


def connection_never_opened(exc: BaseException) -> bool:
    """Whether a ``requests`` failure happened before the request left (refused, unresolvable, connect timeout)."""
    import requests

    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    if not isinstance(exc, requests.exceptions.ConnectionError):
        return False
    from urllib3.exceptions import NameResolutionError, NewConnectionError

    seen: set[int] = set()
    pending: list[Any] = [exc]
    while pending:  # the cause sits in args, __cause__ or a MaxRetryError's reason
        item = pending.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, (NewConnectionError, NameResolutionError, ConnectionRefusedError)):
            return True
        if isinstance(item, BaseException):
            pending.extend([item.__cause__, item.__context__, getattr(item, "reason", None),
                            *[a for a in item.args if isinstance(a, BaseException)]])
    return False


# -- exchanges and replacement ids ---------------------------------------------------------------------
# Alpaca's exchange names -> ISO 10383 MICs, which tradebook's equity instrument ids end with
EXCHANGE_MICS = {"ARCA": "ARCX", "NYSEARCA": "ARCX", "NASDAQ": "XNAS", "NYSE": "XNYS", "AMEX": "XASE",
                 "BATS": "BATS", "OTC": "OTCM", "CRYPTO": "CRYPTO"}


def mic_from_alpaca(exchange: Any) -> str:
    word = _word(exchange)
    if word not in EXCHANGE_MICS:
        raise VenueMappingError(f"unknown Alpaca exchange {word!r}; expected one of {sorted(EXCHANGE_MICS)}")
    return EXCHANGE_MICS[word]


# A replace at Alpaca makes a new order that needs a client order id of its own: tradebook's id
# with a numbered suffix, so after a restart the replacement still names the tradebook order.
_REPLACEMENT = ".r"


def replacement_client_order_id(client_order_id: str, number: int) -> str:
    if number < 1:
        raise VenueMappingError(f"replacement number must be at least 1, got {number}")
    return f"{root_client_order_id(client_order_id)}{_REPLACEMENT}{number}"


def root_client_order_id(alpaca_client_order_id: str) -> str:
    """Tradebook's client order id for an Alpaca order (a replacement's suffix removed)."""
    root, sep, number = alpaca_client_order_id.rpartition(_REPLACEMENT)
    return root if sep and root and number.isdigit() else alpaca_client_order_id


def replacement_number(alpaca_client_order_id: str) -> int:
    root, sep, number = alpaca_client_order_id.rpartition(_REPLACEMENT)
    return int(number) if sep and root and number.isdigit() else 0


def order_state_from_alpaca(order: Any, *, client_order_id: str, instrument_id: str) -> Any:
    """The port's VenueOrderState of an alpaca-py ``Order`` (working statuses resolved by what has filled)."""
    from tradebook.venues.base import VenueOrderState

    quantity = _decimal(order.qty) or _ZERO
    filled = _decimal(order.filled_qty) or _ZERO
    return VenueOrderState(client_order_id, str(order.id), instrument_id,
                           order_status_from_alpaca(order.status, filled_qty=filled, quantity=quantity),
                           quantity, filled, _decimal(order.filled_avg_price), _decimal(order.limit_price),
                           _decimal(order.stop_price))
