"""Where Interactive Brokers' vocabulary stops: order types, actions, time in force, statuses, error codes.

The IB adapter parses with these functions and nothing else speaks IB's words (ib-async
keeps them as plain strings: ``Order.orderType``, ``Order.action``, ``Order.tif``,
``OrderStatus.status``, ``Execution.side``). Every IB value is mapped or refused with
:class:`~tradebook.errors.VenueMappingError` naming it and what is expected instead; so
is every tradebook value sent the other way.

Statuses: IB's working statuses (``PreSubmitted``, ``Submitted``, ``ApiUpdate`` and
ib-async's own ``ValidationError``, a warning on an order that is still live) resolve by
what has filled: ``accepted``, ``partially_filled`` or ``filled``. Two tradebook statuses
have no IB word of their own and are sent as the one IB shows: ``pending_replace`` (a
modification leaves the order ``Submitted``) and ``expired`` (IB ends an expired DAY order
as ``Cancelled``); read back they are ``accepted``/``partially_filled`` and ``cancelled``
(:data:`LOSSY_STATUSES`). An IB ``Cancelled`` may carry fills: the filled quantity is kept
apart from the status.

Errors: IB reports rejections, cancels and refusals as numbered error messages;
:func:`ib_error_kind` gives the code's meaning as an :class:`IbErrorKind` (a decision code,
never the text) and :func:`event_for_ib_error` the lifecycle event it stands for.

Parsing and building: :func:`fill_from_ib` makes a tradebook Fill of an ib-async
``Execution`` (the fill id is IB's ``execId``, the client order id travels as ``orderRef``),
:func:`event_from_ib_status` the lifecycle event of a status report, and :func:`ib_order`
the ib-async ``Order`` for a tradebook order (ib-async is imported there only).

Refusals and contracts: :func:`reject_code_for_ib_error` gives the RejectCode value for an
IB error code (the adapter raises it with IB's code as ``venue_code``); :func:`ib_contract`
the ib-async Contract for a tradebook instrument (stock: SMART with its primary exchange;
future: CME with the month from its local symbol and its multiplier; FX: IDEALPRO),
:func:`instrument_id_from_ib` the way back and :func:`instrument_from_ib` an instrument's grid
from IB's contract details.

Client ids (:func:`ib_client_id`): one TWS or gateway serves several API connections, each
with its own client id. TWS sends an order's live events (``openOrder``, ``orderStatus``,
``execDetails``) only to the client id that placed it, and ``reqOpenOrders`` /
``reqExecutions`` answer that client id's orders; pacing (50 messages a second) and
market-data lines count per connection. So tradebook uses three ids per account, one per
job: ``orders`` (the only connection that places and cancels, and the one reconciled on
reconnect), ``data`` (contract details, history: bursts that must not delay order
messages) and ``feed`` (streaming quotes, reconnected on its own). Id 0 is avoided: TWS
binds manual orders to it.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from tradebook.errors import ConfigError, VenueMappingError
from tradebook.model.instruments import Side
from tradebook.model.orders import Fill, OrderEventType, OrderStatus, OrderType, RejectCode, TimeInForce

_ZERO = Decimal(0)
_WORKING = "working"  # resolved by the filled quantity

_ORDER_TYPES = {OrderType.MARKET: "MKT", OrderType.LIMIT: "LMT", OrderType.STOP: "STP",
                OrderType.STOP_LIMIT: "STP LMT"}
# IB order types tradebook does not model, with why (the common ones; any other is unknown)
_ORDER_TYPES_REFUSED = {
    "TRAIL": "tradebook has no trailing stops", "TRAIL LIMIT": "tradebook has no trailing stops",
    "MOC": "at-the-close orders are not modelled", "LOC": "at-the-close orders are not modelled",
    "MIT": "market-if-touched orders are not modelled", "LIT": "limit-if-touched orders are not modelled",
    "REL": "pegged (relative) orders are not modelled", "PEG MKT": "pegged orders are not modelled",
    "PEG MID": "pegged orders are not modelled", "PEG BEST": "pegged orders are not modelled",
    "PEG BENCH": "pegged orders are not modelled", "MIDPRICE": "IB's midprice order type is not modelled",
    "VOL": "volatility orders are not modelled", "BOX TOP": "box-top orders are not modelled",
    "MKT PRT": "market-with-protection orders are not modelled",
}
_SIDES = {Side.BUY: "BUY", Side.SELL: "SELL"}
# other words IB uses for a side: execution sides, and the institutional short/long sales
_SIDES_FROM_OTHER = {"BOT": Side.BUY, "SLD": Side.SELL, "SSHORT": Side.SELL, "SLONG": Side.SELL}
_TIME_IN_FORCE = {TimeInForce.DAY: "DAY", TimeInForce.GTC: "GTC", TimeInForce.IOC: "IOC", TimeInForce.FOK: "FOK"}
_TIME_IN_FORCE_REFUSED = {
    "OPG": "at-the-open orders are not modelled", "GTD": "good-till-date is not modelled (use GTC and cancel)",
    "DTC": "day-till-cancelled is not modelled", "AUC": "auction orders are not modelled",
}

# every status ib-async knows (ib_async.OrderStatus); tests hold this to the library's list
_STATUS_FROM: dict[str, OrderStatus | str] = {
    "ApiPending": OrderStatus.SUBMITTED,  # handed to the API, not yet at IB's server
    "PendingSubmit": OrderStatus.SUBMITTED,  # sent, not yet acknowledged
    "PreSubmitted": _WORKING,  # accepted, waiting (a stop not triggered, outside regular hours)
    "Submitted": _WORKING,
    "ApiUpdate": _WORKING,
    "ValidationError": _WORKING,  # ib-async's own: a warning on an order that stays live
    "PendingCancel": OrderStatus.PENDING_CANCEL,
    "Cancelled": OrderStatus.CANCELLED,
    "ApiCancelled": OrderStatus.CANCELLED,  # cancelled before it reached IB's server
    "Filled": OrderStatus.FILLED,
    "Inactive": OrderStatus.REJECTED,  # received, then refused (or held by IB's risk checks)
}
_STATUS_TO = {
    OrderStatus.SUBMITTED: "PendingSubmit", OrderStatus.ACCEPTED: "Submitted",
    OrderStatus.PARTIALLY_FILLED: "Submitted", OrderStatus.FILLED: "Filled",
    OrderStatus.PENDING_CANCEL: "PendingCancel", OrderStatus.PENDING_REPLACE: "Submitted",
    OrderStatus.CANCELLED: "Cancelled", OrderStatus.REJECTED: "Inactive", OrderStatus.EXPIRED: "Cancelled",
}
# tradebook's own states, which IB never shows (keyed by value: a StrEnum member finds its string)
_STATUS_TO_REFUSED = {
    "pending": "a pending order has not left tradebook: IB has never seen it",
    "unresolved": "an unresolved order's state at IB is unknown until reconciliation asks IB for it",
}
TRADEBOOK_ONLY_STATUSES = frozenset(_STATUS_TO_REFUSED)
# tradebook statuses that do not come back as themselves through IB's words (see the module docstring)
LOSSY_STATUSES = frozenset({OrderStatus.PENDING_REPLACE, OrderStatus.EXPIRED})


# the lifecycle step a status report stands for; None: no step (ours, a fill's echo, or a warning)
_EVENTS_FROM_STATUS: dict[str, OrderEventType | None] = {
    "ApiPending": None, "PendingSubmit": None,  # our own send, not yet answered
    "PreSubmitted": OrderEventType.ACCEPTED, "Submitted": OrderEventType.ACCEPTED,
    "ApiUpdate": None, "ValidationError": None,  # the order stands; a warning is in the trade's log
    "PendingCancel": None,  # our cancel request, echoed
    "Cancelled": OrderEventType.CANCELLED, "ApiCancelled": OrderEventType.CANCELLED,
    "Filled": None,  # fills come as executions (execDetails), each with its id; the status adds nothing
    "Inactive": OrderEventType.REJECTED,
}
# execDetails' lastLiquidity: 1 added, 2 removed, 3 routed out (and took elsewhere)
_LIQUIDITY = {1: "maker", 2: "taker", 3: "taker"}


class IbErrorKind(StrEnum):
    """What an IB error code means for an order or the connection (decided by code, never by text)."""

    ORDER_REJECTED = "order_rejected"  # a new order refused: it does not exist at IB
    DUPLICATE_ORDER_ID = "duplicate_order_id"  # the order id was used: the first order stands
    ORDER_CANCELLED = "order_cancelled"  # IB cancelled it (on request, at expiry, or on its own)
    CANCEL_REJECTED = "cancel_rejected"  # the cancel did not apply: the order is done or unknown
    MODIFY_REJECTED = "modify_rejected"  # the modification did not apply: the order stands as it was
    PACING = "pacing"  # too many messages a second: the message was dropped (an order so refused is not live)
    NO_SECURITY = "no_security"  # the contract is not known (on an order: refused)
    CONNECTIVITY = "connectivity"  # the link between the client, TWS and IB changed: reconcile
    WARNING = "warning"  # information; the order (if any) is unchanged
    UNCLASSIFIED = "unclassified"  # a code not listed here: read its text; treat as a refusal of the request


_ERROR_KINDS: dict[int, IbErrorKind] = {
    100: IbErrorKind.PACING,
    103: IbErrorKind.DUPLICATE_ORDER_ID,
    104: IbErrorKind.MODIFY_REJECTED, 105: IbErrorKind.MODIFY_REJECTED, 329: IbErrorKind.MODIFY_REJECTED,
    110: IbErrorKind.ORDER_REJECTED,  # price off the tick (ib-async cancels a new order on it)
    200: IbErrorKind.NO_SECURITY,
    201: IbErrorKind.ORDER_REJECTED, 203: IbErrorKind.ORDER_REJECTED, 383: IbErrorKind.ORDER_REJECTED,
    387: IbErrorKind.ORDER_REJECTED, 434: IbErrorKind.ORDER_REJECTED,
    202: IbErrorKind.ORDER_CANCELLED,
    161: IbErrorKind.CANCEL_REJECTED, 10147: IbErrorKind.CANCEL_REJECTED, 10148: IbErrorKind.CANCEL_REJECTED,
    326: IbErrorKind.CONNECTIVITY, 502: IbErrorKind.CONNECTIVITY, 504: IbErrorKind.CONNECTIVITY,
    1100: IbErrorKind.CONNECTIVITY, 1101: IbErrorKind.CONNECTIVITY, 1102: IbErrorKind.CONNECTIVITY,
    2110: IbErrorKind.CONNECTIVITY,
    165: IbErrorKind.WARNING, 321: IbErrorKind.WARNING, 399: IbErrorKind.WARNING, 404: IbErrorKind.WARNING,
    10167: IbErrorKind.WARNING,
}
_EVENTS_FOR_ERRORS = {
    IbErrorKind.ORDER_REJECTED: OrderEventType.REJECTED, IbErrorKind.NO_SECURITY: OrderEventType.REJECTED,
    IbErrorKind.ORDER_CANCELLED: OrderEventType.CANCELLED, IbErrorKind.CANCEL_REJECTED: OrderEventType.CANCEL_REJECTED,
    IbErrorKind.MODIFY_REJECTED: OrderEventType.REPLACE_REJECTED, IbErrorKind.PACING: OrderEventType.REJECTED,
}  # DUPLICATE_ORDER_ID takes no step: the order that holds the id stands; reconcile it


class IbClientRole(StrEnum):
    """The jobs that get their own API connection (client id) to one TWS or gateway."""

    ORDERS = "orders"
    DATA = "data"
    FEED = "feed"


DEFAULT_BASE_CLIENT_ID = 10
CLIENT_ID_OFFSETS = {IbClientRole.ORDERS: 0, IbClientRole.DATA: 1, IbClientRole.FEED: 2}
_MAX_CLIENT_ID = 2**31 - 1


def ib_client_id(role: IbClientRole | str, base: int = DEFAULT_BASE_CLIENT_ID) -> int:
    """The client id of ``role`` for an account whose ids start at ``base`` (orders, data, feed: base, +1, +2).

    Two tradebook sessions on one TWS need bases at least 3 apart.
    """
    try:
        role = IbClientRole(role)
    except ValueError:
        raise ConfigError(f"unknown IB client role {role!r}; expected one of {[r.value for r in IbClientRole]}"
                          ) from None
    if isinstance(base, bool) or not isinstance(base, int) or not 1 <= base <= _MAX_CLIENT_ID - 2:
        raise ConfigError(f"IB base client id must be an int from 1 to {_MAX_CLIENT_ID - 2} (0 is TWS's manual-"
                          f"order client), got {base!r}")
    return base + CLIENT_ID_OFFSETS[role]


def _to(kind: str, value: object, table: dict, refused: dict | None = None) -> str:
    try:
        return table[value]
    except (KeyError, TypeError):
        pass
    if refused and value in refused:
        raise VenueMappingError(f"tradebook {kind} {value!s} has no IB counterpart: {refused[value]}")
    raise VenueMappingError(f"not a tradebook {kind}: {value!r}; expected one of {sorted(map(str, table))}")


def _from(kind: str, value: object, table: dict, refused: dict[str, str]) -> object:
    for ours, theirs in table.items():
        if theirs == value:
            return ours
    if isinstance(value, str) and value in refused:
        raise VenueMappingError(f"IB {kind} {value!r}: {refused[value]}")
    raise VenueMappingError(f"unknown IB {kind} {value!r}; expected one of {sorted(table.values())}")


# -- order types, actions, time in force -----------------------------------------------------------
def order_type_to_ib(order_type: OrderType) -> str:
    """IB's ``Order.orderType`` for a tradebook order type."""
    return _to("order type", order_type, _ORDER_TYPES)


def order_type_from_ib(value: str) -> OrderType:
    return _from("order type", value, _ORDER_TYPES, _ORDER_TYPES_REFUSED)  # type: ignore[return-value]


def side_to_ib(side: Side) -> str:
    """IB's ``Order.action`` for a side."""
    return _to("side", side, _SIDES)


def side_from_ib(value: str) -> Side:
    """An order action (BUY, SELL, SSHORT, SLONG) or an execution side (BOT, SLD) as a tradebook side."""
    if isinstance(value, str) and value in _SIDES_FROM_OTHER:
        return _SIDES_FROM_OTHER[value]
    try:
        return _from("side", value, _SIDES, {})  # type: ignore[return-value]
    except VenueMappingError:
        raise VenueMappingError(f"unknown IB side {value!r}; expected one of "
                                f"{sorted([*_SIDES.values(), *_SIDES_FROM_OTHER])}") from None


def time_in_force_to_ib(time_in_force: TimeInForce) -> str:
    return _to("time in force", time_in_force, _TIME_IN_FORCE)


def time_in_force_from_ib(value: str) -> TimeInForce:
    """IB's ``Order.tif``; an empty one is IB's default, DAY."""
    return _from("time in force", value or "DAY", _TIME_IN_FORCE, _TIME_IN_FORCE_REFUSED)  # type: ignore[return-value]


# -- statuses and errors -------------------------------------------------------------------------------
def order_status_from_ib(value: str, *, filled_qty: Decimal = _ZERO, quantity: Decimal | None = None) -> OrderStatus:
    """The tradebook status of an IB order status; working statuses resolve by ``filled_qty`` of ``quantity``."""
    target = _STATUS_FROM.get(value) if isinstance(value, str) else None
    if target is None:
        raise VenueMappingError(f"unknown IB order status {value!r}; expected one of {sorted(_STATUS_FROM)}")
    if target != _WORKING:
        return target  # type: ignore[return-value]
    if quantity is not None and filled_qty >= quantity > 0:
        return OrderStatus.FILLED
    return OrderStatus.PARTIALLY_FILLED if filled_qty > 0 else OrderStatus.ACCEPTED


def order_status_to_ib(status: OrderStatus) -> str:
    """The IB status an order in this tradebook status shows (for checks and the sandbox)."""
    return _to("order status", status, _STATUS_TO, _STATUS_TO_REFUSED)


def ib_order_statuses() -> frozenset[str]:
    """Every IB order status this module maps."""
    return frozenset(_STATUS_FROM)


def ib_error_kind(code: int) -> IbErrorKind:
    """What IB error ``code`` means; TWS's 2100-2199 are notices (market-data farm up/down, ...)."""
    if isinstance(code, bool) or not isinstance(code, int):
        raise VenueMappingError(f"an IB error code is an int, got {code!r}")
    if code in _ERROR_KINDS:
        return _ERROR_KINDS[code]
    return IbErrorKind.WARNING if 2100 <= code < 2200 else IbErrorKind.UNCLASSIFIED


def event_for_ib_error(code: int) -> OrderEventType | None:
    """The lifecycle event an order error stands for, or None (connectivity, warnings, duplicates: no step).

    A new order refused for pacing is REJECTED: it never became live, so sending it again
    later cannot trade twice.
    """
    return _EVENTS_FOR_ERRORS.get(ib_error_kind(code))


def event_from_ib_status(value: str) -> OrderEventType | None:
    """The lifecycle event an IB order status report stands for, or None when it is no step.

    A repeated ``Submitted`` (after a modify or a reconnect) is a repeated ACCEPTED, which the
    lifecycle takes as no change; ``Filled`` is None because fills arrive as executions.
    """
    if not isinstance(value, str) or value not in _EVENTS_FROM_STATUS:
        raise VenueMappingError(f"unknown IB order status {value!r}; expected one of {sorted(_EVENTS_FROM_STATUS)}")
    return _EVENTS_FROM_STATUS[value]


# -- what ib-async returns and takes ---------------------------------------------------------------------
def _decimal(value: float | int | str) -> Decimal:
    # ib-async keeps prices and quantities as floats: taken by their repr, the shortest text that is that float
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


def _ns(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise VenueMappingError(f"IB execution time {moment!r} has no time zone; expected an aware datetime")
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1_000


def fill_from_ib(execution: Any, commission_report: Any | None = None, *, instrument_id: str,
                 ts_init_ns: int) -> Fill:
    """A tradebook Fill from ib-async's ``Execution`` (and its ``CommissionReport`` when it has come).

    The fill id is IB's ``execId``, so a repeated execDetails or the same execution seen again
    by ``reqExecutions`` after a reconnect is one fill; the client order id is the order's
    ``orderRef`` (where tradebook writes it). The fee is the commission report's commission,
    0 until it arrives (IB sends it after the execution); liquidity comes from
    ``lastLiquidity`` (1 maker; 2 and 3, routed out, taker; unknown: taker, the costlier side).
    """
    missing = [name for name in ("execId", "orderRef", "side", "time") if not getattr(execution, name, None)]
    if missing:
        raise VenueMappingError(f"IB execution {getattr(execution, 'execId', '?')!r} lacks {', '.join(missing)} "
                                "(an order without orderRef was not placed by tradebook)")
    if not execution.shares > 0 or not execution.price > 0:
        raise VenueMappingError(f"IB execution {execution.execId!r} has shares {execution.shares} and price "
                                f"{execution.price}; expected both positive")
    fee = _ZERO
    if commission_report is not None and commission_report.execId:
        if commission_report.execId != execution.execId:
            raise VenueMappingError(f"IB commission report for {commission_report.execId!r} given with execution "
                                    f"{execution.execId!r}")
        fee = _decimal(commission_report.commission)
    return Fill(execution.execId, execution.orderRef, instrument_id, side_from_ib(execution.side),
                _decimal(execution.shares), _decimal(execution.price), fee,
                _LIQUIDITY.get(execution.lastLiquidity, "taker"), _ns(execution.time), ts_init_ns)


def ib_order(*, side: Side, quantity: Decimal, order_type: OrderType, time_in_force: TimeInForce,
             client_order_id: str, limit_price: Decimal | None = None, stop_price: Decimal | None = None,
             outside_rth: bool = False) -> Any:
    """ib-async's ``Order`` for a tradebook order: the client order id travels as ``orderRef``.

    Prices and quantities go as floats (ib-async types them so) made from the Decimals' text;
    a Decimal that a float cannot hold exactly is refused rather than sent rounded.
    """
    from ib_async import Order

    needs = {OrderType.LIMIT: ("limit_price",), OrderType.STOP: ("stop_price",),
             OrderType.STOP_LIMIT: ("limit_price", "stop_price")}.get(OrderType(order_type), ())
    prices = {"limit_price": limit_price, "stop_price": stop_price}
    for name in needs:
        if prices[name] is None:
            raise VenueMappingError(f"a {order_type} order needs {name}")
    for name, value in (("quantity", quantity), *prices.items()):
        if value is not None and _decimal(float(value)) != value:
            raise VenueMappingError(f"{name} {value} does not survive IB's float: expected at most 15 digits")
    fields: dict[str, Any] = {"action": side_to_ib(side), "totalQuantity": float(quantity),
                              "orderType": order_type_to_ib(order_type), "tif": time_in_force_to_ib(time_in_force),
                              "orderRef": client_order_id, "outsideRth": outside_rth}
    if "limit_price" in needs:
        fields["lmtPrice"] = float(limit_price)  # type: ignore[arg-type]
    if "stop_price" in needs:
        fields["auxPrice"] = float(stop_price)  # type: ignore[arg-type]
    return Order(**fields)


# -- refusals as RejectCode values -----------------------------------------------------------------------
# RejectCode values (tradebook.model.orders.RejectCode) by IB error code.
_REJECT_CODES: dict[int, str] = {
    100: "rate_limited", 103: "duplicate_client_id", 110: "invalid_price", 200: "unknown_instrument",
    203: "unsupported_order", 383: "invalid_quantity", 387: "unsupported_order", 434: "invalid_quantity",
    104: "too_late_to_cancel", 161: "unknown_order", 10147: "unknown_order", 10148: "too_late_to_cancel",
}


def reject_code_for_ib_error(code: int) -> RejectCode:
    """The RejectCode value for an IB refusal; 201 ('Order rejected - reason: ...') and unlisted codes are venue_other.

    Decided by code: IB's 201 carries its reason only as text (margin, permissions,
    price checks), which is kept as the rejection's prose, not parsed.
    """
    ib_error_kind(code)  # refuses a non-int
    return RejectCode(_REJECT_CODES.get(code, RejectCode.VENUE_OTHER))


# -- instruments and contracts -----------------------------------------------------------------------------
# market identifier codes (ISO 10383, tradebook's instrument ids) <-> IB's primary exchange names
_PRIMARY_EXCHANGES = {"XNAS": "NASDAQ", "XNYS": "NYSE", "ARCX": "ARCA", "BATS": "BATS", "XASE": "AMEX",
                      "IEXG": "IEX"}
_FUTURE_EXCHANGES = {"GLBX": "CME"}  # tradebook's futures venue (Databento's dataset) -> IB's exchange
_MONTH_CODES = "FGHJKMNQUVXZ"  # January .. December


def _future_month(local_symbol: str, root: str, today: datetime | None) -> str:
    """IB's lastTradeDateOrContractMonth (YYYYMM) of a futures local symbol like ESH7 (root ES)."""
    code = local_symbol[len(root):]
    if len(code) not in (2, 3) or code[0] not in _MONTH_CODES or not code[1:].isdigit():
        raise VenueMappingError(f"futures symbol {local_symbol!r} is not root + month code + year (e.g. ESH7)")
    month = _MONTH_CODES.index(code[0]) + 1
    year = (today or datetime.now().astimezone()).year
    if len(code) == 3:
        return f"{year // 100 * 100 + int(code[1:])}{month:02d}"
    # one year digit: the year ending in it nearest to today (ESH4 read in 2026 is 2024, ESH7 is 2027)
    base = year - year % 10 + int(code[1])
    candidates = (base - 10, base, base + 10)
    return f"{min(candidates, key=lambda y: abs(y - year))}{month:02d}"


def ib_contract(instrument: Any, *, today: datetime | None = None) -> Any:
    """ib-async's Contract for a tradebook Instrument.

    An FX pair is ``Forex`` on IDEALPRO (base currency as symbol, quantities in it). A US
    equity is ``Stock(symbol, "SMART", currency)`` routed smart with its primary
    exchange (from the instrument's venue MIC); a future is ``Future`` on IB's exchange for
    its venue (GLBX: CME) with the contract month read off the local symbol (ESH7: 202703),
    its multiplier and local symbol. Other asset classes are refused.
    """
    from ib_async import Future, Stock

    kind = str(getattr(instrument, "asset_class", ""))
    if kind == "equity":
        primary = _PRIMARY_EXCHANGES.get(instrument.venue)
        if primary is None:
            raise VenueMappingError(f"{instrument.instrument_id}: venue {instrument.venue!r} has no IB primary "
                                    f"exchange; expected one of {sorted(_PRIMARY_EXCHANGES)}")
        return Stock(instrument.symbol, "SMART", instrument.currency, primaryExchange=primary)
    if kind == "future":
        exchange = _FUTURE_EXCHANGES.get(instrument.venue)
        if exchange is None:
            raise VenueMappingError(f"{instrument.instrument_id}: futures venue {instrument.venue!r} has no IB "
                                    f"exchange; expected one of {sorted(_FUTURE_EXCHANGES)}")
        root = instrument.symbol.rstrip("0123456789")[:-1]
        return Future(root, _future_month(instrument.symbol, root, today), exchange,
                      localSymbol=instrument.symbol, multiplier=format(instrument.multiplier.normalize(), "f"),
                      currency=instrument.currency)
    if kind == "fx_spot":
        from ib_async import Forex

        if not instrument.base_currency:
            raise VenueMappingError(f"{instrument.instrument_id}: an FX pair needs its base currency")
        return Forex(symbol=instrument.base_currency, currency=instrument.currency, exchange="IDEALPRO")
    raise VenueMappingError(f"{getattr(instrument, 'instrument_id', instrument)!r}: asset class {kind!r} is not "
                            "traded through IB here; expected equity, future or fx_spot")


def instrument_id_from_ib(contract: Any) -> str:
    """The tradebook instrument id of an IB contract (stock: SYMBOL.MIC by primary exchange; future: LOCAL.GLBX)."""
    if contract.secType == "STK":
        for mic, name in _PRIMARY_EXCHANGES.items():
            if name == contract.primaryExchange:
                return f"{contract.symbol}.{mic}"
        raise VenueMappingError(f"IB stock {contract.symbol!r} has primary exchange {contract.primaryExchange!r}; "
                                f"expected one of {sorted(_PRIMARY_EXCHANGES.values())}")
    if contract.secType == "FUT":
        for venue, name in _FUTURE_EXCHANGES.items():
            if name == contract.exchange and contract.localSymbol:
                return f"{contract.localSymbol}.{venue}"
        raise VenueMappingError(f"IB future {contract.localSymbol or contract.symbol!r} on {contract.exchange!r}; "
                                f"expected a local symbol on one of {sorted(_FUTURE_EXCHANGES.values())}")
    if contract.secType == "CASH":  # several tradebook FX instruments (one per data source) trade as one pair
        raise VenueMappingError(f"IB FX pair {contract.symbol}{contract.currency} maps to no single tradebook "
                                "instrument; look it up by symbol among the venue's instruments")
    raise VenueMappingError(f"IB contract type {contract.secType!r} is not mapped; expected STK or FUT")


def instrument_from_ib(details: Any, template: Any) -> Any:
    """``template`` (a tradebook Instrument) with its order grid from IB's ContractDetails.

    tick from ``minTick``, lot from ``sizeIncrement`` (``minSize`` the minimum), multiplier
    from the contract's; the description names the source.
    """
    from dataclasses import replace

    tick = _decimal(details.minTick) if details.minTick and details.minTick > 0 else None
    if tick is None:
        raise VenueMappingError(f"IB contract details for {template.instrument_id} carry no minTick")
    lot = _decimal(details.sizeIncrement) if details.sizeIncrement and details.sizeIncrement > 0 \
        else template.lot_size
    minimum = _decimal(details.minSize) if details.minSize and details.minSize > 0 else lot
    multiplier = _decimal(details.contract.multiplier) if details.contract.multiplier else template.multiplier
    source = (f"IB contract details (conId {details.contract.conId}): tick from minTick, lot from sizeIncrement, "
              "minimum from minSize, multiplier from the contract")
    return replace(template, tick_size=tick, lot_size=lot, min_quantity=minimum, multiplier=multiplier,
                   tick_schedule=template.tick_schedule if tick == template.tick_size else (),
                   description=f"{details.longName or template.description}; {source}")
