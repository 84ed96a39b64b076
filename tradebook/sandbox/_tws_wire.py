"""The TWS API's wire format as ib-async 2.1 reads it at server version 176: message ids and bodies.

Every message is a 4-byte big-endian length and NUL-terminated text fields; an unset
number is an empty field (or IB's ``UNSET_DOUBLE``). The bodies below list their fields in
the order ib-async's ``decoder.py`` unpacks them (``openOrder`` still carries ``faProfile``
below version 177; ``execDetails`` has no ``pendingPriceRevision`` below 178); a field
miscounted here shifts every later one, so tests read them back through the real client.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from enum import IntEnum
from typing import Any

SERVER_VERSION = 176  # ib-async 2.1 accepts 157..178; its decoder was checked against 176 here
UNSET_DOUBLE = "1.7976931348623157e+308"


class In(IntEnum):
    """Message ids the server reads (client → TWS)."""

    REQ_MKT_DATA = 1
    CANCEL_MKT_DATA = 2
    PLACE_ORDER = 3
    CANCEL_ORDER = 4
    REQ_OPEN_ORDERS = 5
    REQ_ACCOUNT_UPDATES = 6
    REQ_EXECUTIONS = 7
    REQ_IDS = 8
    REQ_CONTRACT_DETAILS = 9
    REQ_AUTO_OPEN_ORDERS = 15
    REQ_ALL_OPEN_ORDERS = 16
    REQ_CURRENT_TIME = 49
    REQ_GLOBAL_CANCEL = 58
    REQ_POSITIONS = 61
    REQ_ACCOUNT_SUMMARY = 62
    CANCEL_ACCOUNT_SUMMARY = 63
    CANCEL_POSITIONS = 64
    START_API = 71
    REQ_ACCOUNT_UPDATES_MULTI = 76
    CANCEL_ACCOUNT_UPDATES_MULTI = 77
    REQ_COMPLETED_ORDERS = 99


class Out(IntEnum):
    """Message ids the server writes (TWS → client)."""

    TICK_PRICE = 1
    ORDER_STATUS = 3
    ERROR = 4
    OPEN_ORDER = 5
    ACCOUNT_VALUE = 6
    PORTFOLIO_VALUE = 7
    ACCOUNT_UPDATE_TIME = 8
    NEXT_VALID_ID = 9
    CONTRACT_DATA = 10
    EXECUTION_DATA = 11
    MANAGED_ACCOUNTS = 15
    CURRENT_TIME = 49
    CONTRACT_DATA_END = 52
    OPEN_ORDER_END = 53
    ACCOUNT_DOWNLOAD_END = 54
    EXECUTION_DATA_END = 55
    COMMISSION_REPORT = 59
    POSITION = 61
    POSITION_END = 62
    ACCOUNT_SUMMARY = 63
    ACCOUNT_SUMMARY_END = 64
    ACCOUNT_UPDATE_MULTI = 73
    ACCOUNT_UPDATE_MULTI_END = 74
    COMPLETED_ORDER = 101
    TICK_SNAPSHOT_END = 57
    COMPLETED_ORDERS_END = 102


# Error codes with the texts TWS uses (https://ibkrcampus.com/campus/ibkr-api-page/twsapi-doc/#api-error-codes)
ERR_PACING = 100  # Max rate of messages per second has been exceeded
ERR_DUPLICATE_ID = 103
ERR_MODIFY_DONE = 104
ERR_PRICE_TICK = 110
ERR_NO_SECURITY = 200
ERR_REJECTED = 201
ERR_CANCELLED = 202
ERR_CLIENT_ID_IN_USE = 326
ERR_CANCEL_NOT_FOUND = 10147
ERR_CANCEL_DONE = 10148
ERR_BAD_MESSAGE = 321  # Error validating request (a message the server could not read)

TICK_BID, TICK_ASK = 1, 2
UNLIMITED_SIZE = 1_000_000  # the size shown for a quote set without one (a size of 0 reads as "no quote")

ORDER_TYPES = frozenset({"MKT", "LMT", "STP", "STP LMT"})
TIMES_IN_FORCE = frozenset({"DAY", "GTC", "IOC", "FOK"})
DONE = frozenset({"Filled", "Cancelled", "Inactive"})


@dataclass(frozen=True)
class TwsContract:
    """A contract the server knows (what ``reqContractDetails`` answers and orders must name)."""

    con_id: int
    symbol: str
    sec_type: str  # STK, FUT, ...
    exchange: str  # where orders are routed: SMART, CME, ...
    currency: str = "USD"
    primary_exchange: str = ""
    local_symbol: str = ""
    trading_class: str = ""
    multiplier: str = ""  # IB sends it as text; "" for stocks
    last_trade_date: str = ""  # YYYYMMDD for futures
    min_tick: Decimal = Decimal("0.01")
    size_increment: Decimal = Decimal("1")
    long_name: str = ""
    time_zone: str = "US/Eastern"

    @property
    def factor(self) -> Decimal:
        return Decimal(self.multiplier) if self.multiplier else Decimal(1)

    def fields(self, *, exchange: bool = True) -> list[Any]:
        """conId .. tradingClass as openOrder/execDetails/position carry them (updatePortfolio: no exchange)."""
        head = [self.con_id, self.symbol, self.sec_type, self.last_trade_date, 0, "", self.multiplier]
        venue = [self.exchange] if exchange else [self.primary_exchange or self.exchange]
        return head + venue + [self.currency, self.local_symbol or self.symbol, self.trading_class or self.symbol]


DEFAULT_CONTRACTS = (
    TwsContract(265598, "AAPL", "STK", "SMART", primary_exchange="NASDAQ", trading_class="NMS",
                long_name="APPLE INC"),
    TwsContract(756733, "SPY", "STK", "SMART", primary_exchange="ARCA", trading_class="SPY",
                long_name="SPDR S&P 500 ETF TRUST"),
    TwsContract(637533641, "ES", "FUT", "CME", local_symbol="ESH7", trading_class="ES", multiplier="50",
                last_trade_date="20270319", min_tick=Decimal("0.25"), long_name="E-mini S&P 500",
                time_zone="US/Central"),
)


@dataclass
class TwsOrder:
    """An order as the server holds it (copies are handed out by :meth:`TwsServer.orders`)."""

    client_id: int
    order_id: int
    perm_id: int
    contract: TwsContract
    action: str  # BUY | SELL
    quantity: Decimal
    order_type: str
    tif: str
    account: str
    order_ref: str
    lmt_price: Decimal | None = None
    aux_price: Decimal | None = None
    outside_rth: bool = False
    status: str = "Submitted"
    filled: Decimal = Decimal(0)
    avg_price: Decimal = Decimal(0)
    last_fill_price: Decimal = Decimal(0)
    triggered: bool = False
    silent: bool = False  # scripted: accepted, never answered on this connection
    completed_time: str = ""

    @property
    def remaining(self) -> Decimal:
        return self.quantity - self.filled if self.status not in DONE else Decimal(0)

    @property
    def done(self) -> bool:
        return self.status in DONE


@dataclass(frozen=True)
class TwsExecution:
    exec_id: str
    order_id: int
    client_id: int
    perm_id: int
    con_id: int
    side: str  # BOT | SLD
    shares: Decimal
    price: Decimal
    cum_qty: Decimal
    avg_price: Decimal
    order_ref: str
    account: str
    exchange: str
    time: str  # "YYYYMMDD HH:MM:SS UTC", as execDetails carries it
    commission: Decimal
    realized_pnl: Decimal | None



def text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")  # no exponent, no trailing zeros
    if isinstance(value, IntEnum):
        return str(int(value))
    return str(value)


def encode(fields: Iterable[Any]) -> bytes:
    body = "".join(text(f) + "\0" for f in fields).encode()
    return struct.pack(">I", len(body)) + body


def decimal(text: str) -> Decimal | None:
    if text in ("", UNSET_DOUBLE, "1.7976931348623157E308") or text.startswith("1.797693134862315"):
        return None
    return Decimal(text)


def now_text() -> str:
    return datetime.now(UTC).strftime("%Y%m%d %H:%M:%S UTC")


def order_status(order: TwsOrder) -> list[Any]:
    return [Out.ORDER_STATUS, order.order_id, order.status, order.filled,
            order.quantity - order.filled if not order.done else Decimal(0), order.avg_price, order.perm_id,
            0, order.last_fill_price, order.client_id, "", ""]


def execution(req_id: int, ex: TwsExecution, contract: TwsContract) -> list[Any]:
    return [Out.EXECUTION_DATA, req_id, ex.order_id, *contract.fields(), ex.exec_id, ex.time, ex.account,
            ex.exchange, ex.side, ex.shares, ex.price, ex.perm_id, ex.client_id, 0, ex.cum_qty, ex.avg_price,
            ex.order_ref, "", "", "", 2]  # lastLiquidity 2: removed liquidity


def commission(ex: TwsExecution) -> list[Any]:
    return [Out.COMMISSION_REPORT, 1, ex.exec_id, ex.commission, "USD",
            UNSET_DOUBLE if ex.realized_pnl is None else ex.realized_pnl, "", ""]


def _order_head(order: TwsOrder) -> list[Any]:
    return [order.action, order.quantity, order.order_type, order.lmt_price, order.aux_price, order.tif, "",
            order.account, "O", 0, order.order_ref]


def open_order(order: TwsOrder) -> list[Any]:
    return [Out.OPEN_ORDER, order.order_id, *order.contract.fields(), *_order_head(order),
            order.client_id, order.perm_id, order.outside_rth, 0, 0, "", "", "", "", "", "",
            # modelCode .. deltaNeutralAuxPrice (29)
            "", "", "", "", "", 0, "", -1, 0, "", "", "", "", "", "", 0, 0, 0, "", 0, 0, 0, "", 0, 0, "", 0,
            "", "",
            0, 0, "", "", "", "", "",  # continuousUpdate .. comboLegsDescrip
            0, 0, 0,  # combo legs, order combo legs, smart combo routing params
            "", "", "",  # scale init, subs, increment
            "",  # hedgeType
            0, "", "", 0, 0,  # optOutSmartRouting, clearing account/intent, notHeld, no delta-neutral
            "",  # algoStrategy
            0, 0, order.status, "", "", "", "", "", "", "", "", "", "", "", "", "", "", 0, 0,
            0,  # conditions
            "", "", "", "", "", "", "", 0, "", "", "", "", 0, 0, "", 0,  # adjusted .. usePriceMgmtAlgo
            "", "", 0,  # duration, postToAts, autoCancelParent
            "", "", "", "", ""]  # minTradeQty .. midOffsetAtHalf


def tick_price(req_id: int, tick_type: int, price: Decimal, size: Decimal | None) -> list[Any]:
    """A bid or ask with its size (tickPrice: ib-async reads price and size from one message)."""
    return [Out.TICK_PRICE, 6, req_id, tick_type, price, UNLIMITED_SIZE if size is None else size, 0]


def completed_order(order: TwsOrder) -> list[Any]:
    return [Out.COMPLETED_ORDER, *order.contract.fields(), *_order_head(order), order.perm_id,
            order.outside_rth, 0, 0, "", "", "", "", "",
            # modelCode .. deltaNeutralAuxPrice (23)
            "", "", "", "", "", 0, "", -1, "", "", "", "", "", "", 0, 0, "", 0, 0, "", 0, "", "",
            0, 0, "", "", "",  # continuousUpdate .. comboLegsDescrip
            0, 0, 0, "", "", "", "",  # legs, order legs, params, scale x3, hedgeType
            "", "", 0, 0, "",  # clearing account/intent, notHeld, no delta-neutral, algoStrategy
            0, order.status, 0, 0,  # solicited, status, randomize size/price
            0,  # conditions
            "", "", "", 0, 0, "", order.filled, 0, 0, "", 0, 0, 0,  # trailStopPrice .. parentPermId
            order.completed_time, order.status,  # completedTime, completedStatus
            "", "", "", "", ""]


def contract_details(req_id: int, c: TwsContract) -> list[Any]:
    return [Out.CONTRACT_DATA, req_id, c.symbol, c.sec_type, c.last_trade_date, 0, "", c.exchange, c.currency,
            c.local_symbol or c.symbol, c.trading_class or c.symbol, c.trading_class or c.symbol, c.con_id,
            c.min_tick, c.multiplier, "ACTIVETIM,LMT,MKT,STP,STPLMT", c.exchange, 1, 0, c.long_name,
            c.primary_exchange, c.last_trade_date[:6], "", "", "", c.time_zone, "", "", "", "",
            0, 1, "", "", "26", c.last_trade_date, "COMMON" if c.sec_type == "STK" else "",
            c.size_increment, c.size_increment, c.size_increment]  # minSize, sizeIncrement, suggested
