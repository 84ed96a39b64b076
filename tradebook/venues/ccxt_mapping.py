"""Where ccxt's vocabulary stops: unified order types, sides, time in force and statuses, and Binance's own words.

ccxt unifies exchanges into a few words: an order is ``market`` or ``limit``, a stop is
either with a ``triggerPrice``; statuses are ``open``, ``closed``, ``canceled``,
``canceling``, ``rejected`` and ``expired``. ``open`` covers accepted and partially
filled, so the filled quantity decides. Binance's raw words (``order['info']``) say more
(``PARTIALLY_FILLED``, ``TAKE_PROFIT``...) and are mapped too. Every value is mapped or
refused with :class:`~tradebook.errors.VenueMappingError` naming it and the choices; so
is every tradebook value sent the other way.

Crypto exchanges have no DAY orders: a DAY order is refused (send GTC). Market orders
carry no time in force (Binance answers -1106 to one).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tradebook.errors import VenueMappingError
from tradebook.model.instruments import Side
from tradebook.model.orders import Fill, OrderStatus, OrderType, RejectCode, TimeInForce

_ZERO = Decimal(0)
_WORKING = "working"  # accepted or partially filled, by the filled quantity

CCXT_ORDER_TYPES = ("market", "limit")
CCXT_ORDER_STATUSES = ("open", "closed", "canceled", "canceling", "rejected", "expired")
CCXT_TIME_IN_FORCE = ("GTC", "IOC", "FOK", "PO")

_SIDES = {Side.BUY: "buy", Side.SELL: "sell"}
_TIME_IN_FORCE = {TimeInForce.GTC: "GTC", TimeInForce.IOC: "IOC", TimeInForce.FOK: "FOK"}
_TIME_IN_FORCE_REFUSED = {TimeInForce.DAY: "crypto exchanges have no DAY orders; send GTC (and cancel at your close)"}
# post-only rests like GTC; tradebook has no post-only flag, so it reads as GTC
_TIME_IN_FORCE_FROM = {"GTC": TimeInForce.GTC, "IOC": TimeInForce.IOC, "FOK": TimeInForce.FOK, "PO": TimeInForce.GTC,
                       "GTX": TimeInForce.GTC}

_STATUS_FROM = {"open": _WORKING, "closed": OrderStatus.FILLED, "canceled": OrderStatus.CANCELLED,
                "canceling": OrderStatus.PENDING_CANCEL, "rejected": OrderStatus.REJECTED,
                "expired": OrderStatus.EXPIRED}
_STATUS_TO = {OrderStatus.SUBMITTED: "open", OrderStatus.ACCEPTED: "open", OrderStatus.PARTIALLY_FILLED: "open",
              OrderStatus.PENDING_REPLACE: "open", OrderStatus.FILLED: "closed",
              OrderStatus.PENDING_CANCEL: "canceling", OrderStatus.CANCELLED: "canceled",
              OrderStatus.REJECTED: "rejected", OrderStatus.EXPIRED: "expired"}
# keyed by value: tradebook's own states, which no exchange reports
_OWN_STATUSES = {"pending": "a pending order has not left tradebook: the exchange has never seen it",
                 "unresolved": "tradebook does not know whether the exchange holds it; reconciliation asks the "
                               "exchange by client order id"}

# Binance spot's own words (order['info'] of ccxt, or the REST API itself)
BINANCE_ORDER_STATUSES = ("NEW", "PENDING_NEW", "PARTIALLY_FILLED", "FILLED", "CANCELED", "PENDING_CANCEL",
                          "REJECTED", "EXPIRED", "EXPIRED_IN_MATCH")
_BINANCE_STATUS_FROM = {"NEW": _WORKING, "PENDING_NEW": _WORKING, "PARTIALLY_FILLED": OrderStatus.PARTIALLY_FILLED,
                        "FILLED": OrderStatus.FILLED, "CANCELED": OrderStatus.CANCELLED,
                        "PENDING_CANCEL": OrderStatus.PENDING_CANCEL, "REJECTED": OrderStatus.REJECTED,
                        "EXPIRED": OrderStatus.EXPIRED, "EXPIRED_IN_MATCH": OrderStatus.EXPIRED}
_BINANCE_STATUS_TO = {OrderStatus.SUBMITTED: "PENDING_NEW", OrderStatus.ACCEPTED: "NEW",
                      OrderStatus.PARTIALLY_FILLED: "PARTIALLY_FILLED", OrderStatus.FILLED: "FILLED",
                      OrderStatus.PENDING_CANCEL: "PENDING_CANCEL", OrderStatus.CANCELLED: "CANCELED",
                      OrderStatus.REJECTED: "REJECTED", OrderStatus.EXPIRED: "EXPIRED"}
_BINANCE_STATUS_TO_REFUSED = {
    **_OWN_STATUSES,
    "pending_replace": "Binance spot has no replace in flight (cancel-replace is one request)",
}
BINANCE_ORDER_TYPES = ("MARKET", "LIMIT", "LIMIT_MAKER", "STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT",
                       "TAKE_PROFIT_LIMIT")
_BINANCE_TYPES_TO = {OrderType.MARKET: "MARKET", OrderType.LIMIT: "LIMIT", OrderType.STOP: "STOP_LOSS",
                     OrderType.STOP_LIMIT: "STOP_LOSS_LIMIT"}
_BINANCE_TYPES_FROM = {"MARKET": OrderType.MARKET, "LIMIT": OrderType.LIMIT, "LIMIT_MAKER": OrderType.LIMIT,
                       "STOP_LOSS": OrderType.STOP, "STOP_LOSS_LIMIT": OrderType.STOP_LIMIT}
_TAKE_PROFIT = ("a take-profit triggers as the price moves in the order's favour; tradebook's stops trigger "
                "against it. Cancel it or manage it at the exchange")
_BINANCE_TYPES_REFUSED = {"TAKE_PROFIT": _TAKE_PROFIT, "TAKE_PROFIT_LIMIT": _TAKE_PROFIT}


def _choices(values: Any) -> list[str]:
    return sorted(str(v) for v in values)


def _unknown(kind: str, value: Any, choices: Any) -> VenueMappingError:
    return VenueMappingError(f"unknown {kind} {value!r}; expected one of {_choices(choices)}")


def _not_ours(kind: str, value: Any, table: Mapping[Any, Any]) -> VenueMappingError:
    return VenueMappingError(f"not a tradebook {kind}: {value!r}; expected one of {_choices(table)}")


def _resolve(target: Any, filled: Decimal, amount: Decimal | None) -> OrderStatus:
    if target != _WORKING:
        return target
    if amount is not None and filled >= amount > 0:
        return OrderStatus.FILLED
    return OrderStatus.PARTIALLY_FILLED if filled > 0 else OrderStatus.ACCEPTED


# -- ccxt unified words -------------------------------------------------------------------------------
@dataclass(frozen=True)
class CcxtOrderArgs:
    """The arguments of ``exchange.create_order(symbol, type, side, amount, price, params)`` for one order."""

    type: str
    side: str
    amount: Decimal
    price: Decimal | None
    params: dict[str, Any] = field(default_factory=dict)


def create_order_args(*, order_type: OrderType, side: Side, quantity: Decimal, time_in_force: TimeInForce,
                      client_order_id: str, limit_price: Decimal | None = None,
                      stop_price: Decimal | None = None) -> CcxtOrderArgs:
    """ccxt's create_order arguments: a stop is a market (stop-limit: limit) order with ``triggerPrice``.

    The client order id always goes (ccxt makes one up with a broker prefix otherwise, and
    a resend could not be recognised). Amount and prices stay Decimals: pass them through
    ``exchange.amount_to_precision`` / ``price_to_precision`` or as strings.
    """
    ccxt_type = order_type_to_ccxt(order_type)
    params: dict[str, Any] = {"clientOrderId": client_order_id}
    needs_limit = order_type in (OrderType.LIMIT, OrderType.STOP_LIMIT)
    needs_stop = order_type in (OrderType.STOP, OrderType.STOP_LIMIT)
    for name, value, needed in (("limit_price", limit_price, needs_limit), ("stop_price", stop_price, needs_stop)):
        if needed and value is None:
            raise VenueMappingError(f"a {order_type} order needs {name}")
        if not needed and value is not None:
            raise VenueMappingError(f"a {order_type} order takes no {name} (got {value})")
    if needs_stop:
        params["triggerPrice"] = stop_price
    if ccxt_type == "limit":
        params["timeInForce"] = time_in_force_to_ccxt(time_in_force)
    elif time_in_force not in (TimeInForce.DAY, TimeInForce.IOC, TimeInForce.GTC):
        # a market order takes what the book has now: IOC by nature; DAY/GTC change nothing for it
        raise VenueMappingError(f"a market order on a crypto exchange takes no time in force {time_in_force}; "
                                "use a limit order for FOK")
    return CcxtOrderArgs(ccxt_type, side_to_ccxt(side), quantity, limit_price if needs_limit else None, params)


def order_type_to_ccxt(order_type: OrderType) -> str:
    """ccxt's unified type: ``market`` for market and stop, ``limit`` for limit and stop-limit."""
    table = {OrderType.MARKET: "market", OrderType.STOP: "market", OrderType.LIMIT: "limit",
             OrderType.STOP_LIMIT: "limit"}
    try:
        return table[order_type]
    except (KeyError, TypeError):
        raise _not_ours("order type", order_type, table) from None


def order_type_from_ccxt(value: str, *, trigger_price: Any = None) -> OrderType:
    """A unified type and the order's ``triggerPrice`` (a stop when set)."""
    if value not in CCXT_ORDER_TYPES:
        raise _unknown("ccxt order type", value, CCXT_ORDER_TYPES)
    stop = trigger_price is not None
    if value == "market":
        return OrderType.STOP if stop else OrderType.MARKET
    return OrderType.STOP_LIMIT if stop else OrderType.LIMIT


def order_type_from_ccxt_order(order: Mapping[str, Any]) -> OrderType:
    """A ccxt order's tradebook type; Binance's raw type is read first when ``info`` carries it."""
    info = order.get("info") or {}
    raw = info.get("type") or info.get("o")  # REST order, or the user stream's executionReport
    if isinstance(raw, str) and raw.upper() in BINANCE_ORDER_TYPES:
        return order_type_from_binance(raw)
    return order_type_from_ccxt(order["type"], trigger_price=order.get("triggerPrice"))


def side_to_ccxt(side: Side) -> str:
    try:
        return _SIDES[side]
    except (KeyError, TypeError):
        raise _not_ours("side", side, _SIDES) from None


def side_from_ccxt(value: str) -> Side:
    for ours, theirs in _SIDES.items():
        if value == theirs:
            return ours
    raise _unknown("ccxt side", value, _SIDES.values())


def time_in_force_to_ccxt(time_in_force: TimeInForce) -> str:
    if time_in_force in _TIME_IN_FORCE_REFUSED:
        raise VenueMappingError(f"time in force {time_in_force}: {_TIME_IN_FORCE_REFUSED[time_in_force]}")
    try:
        return _TIME_IN_FORCE[time_in_force]
    except (KeyError, TypeError):
        raise _not_ours("time in force", time_in_force, list(TimeInForce)) from None


def time_in_force_from_ccxt(value: str) -> TimeInForce:
    """GTC, IOC, FOK; post-only (PO, Binance's GTX) rests like GTC."""
    try:
        return _TIME_IN_FORCE_FROM[value]
    except (KeyError, TypeError):
        raise _unknown("ccxt time in force", value, _TIME_IN_FORCE_FROM) from None


def order_status_from_ccxt(value: str, *, filled: Decimal = _ZERO, amount: Decimal | None = None) -> OrderStatus:
    """A unified status; ``open`` resolves by ``filled`` of ``amount``.

    ``closed`` short of the amount (some exchanges end an order so) is CANCELLED: the rest
    will not fill, and the fills made stay booked.
    """
    target = _STATUS_FROM.get(value) if isinstance(value, str) else None
    if target is None:
        raise _unknown("ccxt order status", value, CCXT_ORDER_STATUSES)
    if target is OrderStatus.FILLED and amount is not None and filled < amount:
        return OrderStatus.CANCELLED
    return _resolve(target, filled, amount)


def order_status_to_ccxt(status: OrderStatus) -> str:
    if isinstance(status, str) and status in _OWN_STATUSES:
        raise VenueMappingError(f"order status {status}: {_OWN_STATUSES[status]}")
    try:
        return _STATUS_TO[status]
    except (KeyError, TypeError):
        raise _not_ours("order status", status, list(OrderStatus)) from None


def order_status_from_ccxt_order(order: Mapping[str, Any]) -> OrderStatus:
    """A ccxt order's tradebook status; Binance's raw status is read first when ``info`` carries it."""
    filled = _decimal(order.get("filled")) or _ZERO
    amount = _decimal(order.get("amount"))
    info = order.get("info") or {}
    raw = info.get("status") or info.get("X")  # REST order, or the user stream's executionReport
    if isinstance(raw, str) and raw in BINANCE_ORDER_STATUSES:
        return order_status_from_binance(raw, filled=filled, amount=amount)
    return order_status_from_ccxt(order["status"], filled=filled, amount=amount)


# -- Binance's own words ------------------------------------------------------------------------------
def order_status_from_binance(value: str, *, filled: Decimal = _ZERO, amount: Decimal | None = None) -> OrderStatus:
    target = _BINANCE_STATUS_FROM.get(value) if isinstance(value, str) else None
    if target is None:
        raise _unknown("Binance order status", value, BINANCE_ORDER_STATUSES)
    return _resolve(target, filled, amount)


def order_status_to_binance(status: OrderStatus) -> str:
    if isinstance(status, str) and status in _BINANCE_STATUS_TO_REFUSED:
        raise VenueMappingError(f"order status {status}: {_BINANCE_STATUS_TO_REFUSED[status]}")
    try:
        return _BINANCE_STATUS_TO[status]
    except (KeyError, TypeError):
        raise _not_ours("order status", status, list(OrderStatus)) from None


def order_type_from_binance(value: str) -> OrderType:
    word = value.upper() if isinstance(value, str) else value
    if word in _BINANCE_TYPES_REFUSED:
        raise VenueMappingError(f"Binance order type {value!r}: {_BINANCE_TYPES_REFUSED[word]}")
    try:
        return _BINANCE_TYPES_FROM[word]
    except (KeyError, TypeError):
        raise _unknown("Binance order type", value, BINANCE_ORDER_TYPES) from None


def order_type_to_binance(order_type: OrderType) -> str:
    try:
        return _BINANCE_TYPES_TO[order_type]
    except (KeyError, TypeError):
        raise _not_ours("order type", order_type, _BINANCE_TYPES_TO) from None


# -- parsing what ccxt returns -------------------------------------------------------------------------
def _decimal(value: Any) -> Decimal | None:
    # ccxt gives floats: their shortest repr is the exchange's string for prices and sizes
    return None if value is None else Decimal(str(value))


def fill_from_ccxt_trade(trade: Mapping[str, Any], *, client_order_id: str, instrument_id: str,
                         ts_init_ns: int) -> Fill:
    """A tradebook Fill from a ccxt trade (``fetch_my_trades``); the fill id is the exchange's trade id.

    The fee is the trade's ``fee.cost`` in whatever currency the exchange charged it
    (Binance may charge the base asset or BNB): a fee in another currency than the
    quote is refused, so it is never booked as quote money.
    """
    missing = [k for k in ("id", "side", "amount", "price", "timestamp") if trade.get(k) is None]
    if missing:
        raise VenueMappingError(f"ccxt trade for {client_order_id} lacks {', '.join(missing)}")
    fee = trade.get("fee") or {}
    fee_cost = _decimal(fee.get("cost")) or _ZERO
    quote = str(trade.get("symbol") or "").partition("/")[2].partition(":")[0]
    if fee_cost and quote and fee.get("currency") not in (None, quote):
        raise VenueMappingError(f"trade {trade['id']} of {client_order_id}: fee {fee_cost} {fee.get('currency')} "
                                f"is not in the quote currency {quote}; convert it before booking")
    liquidity = trade.get("takerOrMaker") or "taker"
    if liquidity not in ("maker", "taker"):
        raise _unknown("ccxt takerOrMaker", liquidity, ("maker", "taker"))
    return Fill(str(trade["id"]), client_order_id, instrument_id, side_from_ccxt(trade["side"]),
                _decimal(trade["amount"]), _decimal(trade["price"]), fee_cost, liquidity,
                int(trade["timestamp"]) * 1_000_000, ts_init_ns)


def instrument_spec_from_ccxt_market(market: Mapping[str, Any], *, venue: str) -> dict[str, Any]:
    """An instrument definition (for ``instrument_from_dict``) from a ccxt spot market's precision and limits.

    tick = ``precision.price``, lot = ``precision.amount`` (ccxt's TICK_SIZE mode, which
    binance uses), minimum size = ``limits.amount.min``, minimum notional =
    ``limits.cost.min``; the source of each is in ``description``.
    """
    if not market.get("spot"):
        raise VenueMappingError(f"market {market.get('symbol')!r} is not spot; only spot markets map to instruments")
    precision, limits = market.get("precision") or {}, market.get("limits") or {}
    tick, lot = _decimal(precision.get("price")), _decimal(precision.get("amount"))
    if tick is None or lot is None:
        raise VenueMappingError(f"market {market.get('symbol')!r} lacks precision.price or precision.amount")
    spec: dict[str, Any] = {
        "instrument_id": f"{market['id']}.{venue}", "asset_class": "crypto_spot", "currency": market["quote"],
        "base_currency": market["base"], "tick": str(tick), "lot": str(lot), "calendar": "24/7",
        "description": f"{market['symbol']} on {venue}: tick from precision.price, lot from precision.amount, "
                       "minimum size from limits.amount.min, minimum notional from limits.cost.min",
    }
    min_size = _decimal((limits.get("amount") or {}).get("min"))
    if min_size:
        spec["min_size"] = str(min_size)
    min_notional = _decimal((limits.get("cost") or {}).get("min"))
    if min_notional:
        spec["min_notional"] = str(min_notional)
    return spec


# -- the user data stream (Binance executionReport, as ccxt.pro's watch_orders carries it in order['info']) --------
BINANCE_EXECUTION_TYPES = ("NEW", "TRADE", "CANCELED", "REPLACED", "REJECTED", "EXPIRED", "TRADE_PREVENTION",
                           "AMENDMENT")


def client_order_id_from_binance_report(report: Mapping[str, Any]) -> str:
    """The order's own client id: a cancel's report carries the cancel request's id in ``c``, the order's in ``C``."""
    original = report.get("C")
    if report.get("x") == "CANCELED" and original:
        return str(original)
    return str(report.get("c") or "")


def fill_from_binance_report(report: Mapping[str, Any], *, symbol: str, client_order_id: str, instrument_id: str,
                             ts_init_ns: int) -> Fill | None:
    """The execution an executionReport with ``x == 'TRADE'`` carries (trade id ``t``, as REST's myTrades), or None."""
    if report.get("x") != "TRADE":
        return None
    trade = {"id": report.get("t"), "side": str(report.get("S") or "").lower(), "amount": report.get("l"),
             "price": report.get("L"), "timestamp": report.get("T"), "symbol": symbol,
             "fee": {"cost": report.get("n"), "currency": report.get("N")},
             "takerOrMaker": "maker" if report.get("m") else "taker"}
    if trade["id"] is None or int(trade["id"]) < 0:
        raise VenueMappingError(f"executionReport TRADE for {client_order_id} has no trade id: {report.get('t')!r}")
    return fill_from_ccxt_trade(trade, client_order_id=client_order_id, instrument_id=instrument_id,
                                ts_init_ns=ts_init_ns)


# -- ccxt's exceptions to the port's errors --------------------------------------------------------------
_VENUE_CODE = re.compile(r'"code"\s*:\s*"?(-?\d+)')
_SIGNATURE = re.compile(r"(signature=)[0-9a-fA-F]+")


def binance_code(exc: BaseException) -> str | None:
    """The exchange's own error code in a ccxt exception's message (ccxt puts the reply body there), or None."""
    found = _VENUE_CODE.search(str(exc))
    return found.group(1) if found else None


def _reject_code(exc: Any, ccxt: Any) -> tuple[str, str]:
    """(RejectCode value, why) for an exception where the exchange answered and refused."""
    text = str(exc)
    if "Duplicate order sent" in text or isinstance(exc, ccxt.DuplicateOrderId):
        return "duplicate_client_id", "the exchange already holds this client order id (open)"
    if isinstance(exc, ccxt.InsufficientFunds):
        return "insufficient_funds", "not enough balance"
    if isinstance(exc, ccxt.MarketClosed) or "Market is closed" in text:
        return "market_closed", "the market is closed"
    if isinstance(exc, ccxt.OrderNotFound):
        return "unknown_order", "the exchange does not know the order (or it is no longer open)"
    if isinstance(exc, ccxt.BadSymbol):
        return "unknown_instrument", "the exchange does not list the symbol"
    if "NOTIONAL" in text:
        return "min_notional", "price times quantity outside the NOTIONAL filter"
    if "LOT_SIZE" in text:
        return "invalid_quantity", "quantity outside the LOT_SIZE filter (step or bounds)"
    if "PRICE_FILTER" in text:
        return "invalid_price", "price outside the PRICE_FILTER (tick or bounds)"
    if isinstance(exc, (ccxt.DDoSProtection, ccxt.RateLimitExceeded)):
        return "rate_limited", "rate limited (429)"
    if isinstance(exc, ccxt.NotSupported):
        return "unsupported_order", "the exchange does not support this"
    return "venue_other", "refused"


# Binance's orderRejectReason (the ``r`` of an executionReport) -> RejectCode
_BINANCE_REJECT_REASONS = {
    "UNKNOWN_INSTRUMENT": RejectCode.UNKNOWN_INSTRUMENT, "MARKET_CLOSED": RejectCode.MARKET_CLOSED,
    "PRICE_QTY_EXCEED_HARD_LIMITS": RejectCode.INVALID_PRICE, "UNKNOWN_ORDER": RejectCode.UNKNOWN_ORDER,
    "DUPLICATE_ORDER": RejectCode.DUPLICATE_CLIENT_ID, "INSUFFICIENT_BALANCE": RejectCode.INSUFFICIENT_FUNDS,
    "UNKNOWN_ACCOUNT": RejectCode.VENUE_OTHER, "ACCOUNT_INACTIVE": RejectCode.VENUE_OTHER,
    "ACCOUNT_CANNOT_SETTLE": RejectCode.VENUE_OTHER,
}


def reject_code_from_binance_reason(reason: str | None) -> RejectCode:
    """The RejectCode of a rejection an exchange reports on the order itself (Binance's ``r``), else venue_other."""
    return _BINANCE_REJECT_REASONS.get(reason or "", RejectCode.VENUE_OTHER)


def venue_error_from_ccxt(exc: BaseException, *, action: str, secrets: tuple[str, ...] = (),
                          venue_code: str | None = None) -> Exception:
    """The port's error for a ccxt exception raised by ``action`` (e.g. "submit tb1234 BUY 0.01 BTC/USDT").

    - the connection was refused before anything was sent (aiohttp's ClientConnectorError under
      ccxt's ExchangeNotAvailable), or the exchange said "timestamp outside recvWindow" (-1021,
      InvalidNonce: checked before anything else) -> :class:`NotSentError`;
    - a timeout (RequestTimeout), a dropped reply (other NetworkError), a garbled reply
      (BadResponse) or anything not from ccxt -> :class:`OutcomeUnknownError`: it may have arrived;
    - the exchange answered and refused (ExchangeError, 429) -> :class:`VenueRejectedError`
      with a RejectCode value and Binance's own code (``"-2010"``).

    ``venue_code``: the exchange's code when the caller read it from the reply (ccxt leaves it out
    of some messages); otherwise it is read from the message. ``secrets`` (the API key and
    secret) and request signatures are scrubbed from the message.
    """
    import ccxt

    from tradebook.errors import NotSentError, OutcomeUnknownError, VenueRejectedError

    text = _SIGNATURE.sub(r"\1<hidden>", str(exc))
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<hidden>")
    where = f"{action}: {type(exc).__name__}: {text}"
    if isinstance(exc, ccxt.InvalidNonce):
        return NotSentError(f"{where} (the exchange refused the request's timestamp; clocks resynchronised)")
    if isinstance(exc, (ccxt.DDoSProtection, ccxt.RateLimitExceeded)):
        code, why = _reject_code(exc, ccxt)
        return VenueRejectedError(f"{where} ({why})", code=code, venue_code=venue_code or binance_code(exc) or "429")
    if isinstance(exc, ccxt.ExchangeNotAvailable) and _refused_before_sending(exc):
        return NotSentError(f"{where} (the connection was refused: nothing was sent)")
    if isinstance(exc, (ccxt.NetworkError, ccxt.BadResponse)) or not isinstance(exc, ccxt.BaseError):
        return OutcomeUnknownError(f"{where} (the request may have reached the exchange)")
    if isinstance(exc, ccxt.ExchangeError):
        code, why = _reject_code(exc, ccxt)
        return VenueRejectedError(f"{where} ({why})", code=code, venue_code=venue_code or binance_code(exc))
    return OutcomeUnknownError(f"{where} (the request may have reached the exchange)")


def _refused_before_sending(exc: BaseException) -> bool:
    try:
        from aiohttp import ClientConnectorError
    except ImportError:  # pragma: no cover - ccxt's async support needs aiohttp
        return False
    cause = exc.__cause__
    # a connect that timed out may have half-opened; only a refused or unreachable connect is certain
    return isinstance(cause, ClientConnectorError) and not isinstance(cause, TimeoutError)
