"""The TWS sandbox's answers to a client's synchronous requests: the handshake (``startApi``, ids, time),
positions, open and completed orders, executions, account values and summaries, contract details and
market data. :class:`~tradebook.sandbox.tws.TwsServer` takes them in as a part; its orders, fills and
faults stay there.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from tradebook.sandbox import _tws_wire as wire
from tradebook.sandbox._tws_wire import (
    ERR_CLIENT_ID_IN_USE,
    ERR_NO_SECURITY,
    TICK_ASK,
    TICK_BID,
    In,
    Out,
    TwsContract,
    TwsOrder,
)


@dataclass
class Touch:
    """A quote set by set_price: the best bid and ask, with the size each offers (None: unlimited)."""

    bid: Decimal
    ask: Decimal
    bid_size: Decimal | None
    ask_size: Decimal | None


@dataclass
class Connection:
    """One client connection: its writer, client id, and what it subscribed to."""

    writer: asyncio.StreamWriter
    client_id: int | None = None
    positions: bool = False
    account_updates: bool = False
    market_data: dict[int, int] = field(default_factory=dict)  # reqId -> conId of streamed quotes
    times: deque = field(default_factory=deque)


class TwsRequests:
    """Request handlers of the TWS sandbox (a part of TwsServer: they read its orders, account and contracts)."""

    def _start_api(self, conn: Connection, fields: list[str]) -> None:
        client_id = int(fields[2])
        if any(c.client_id == client_id for c in self._conns):
            self._error(conn, -1, ERR_CLIENT_ID_IN_USE,
                        "Unable to connect as the client id is already in use. Retry with a unique client id.")
            conn.writer.close()
            return
        conn.client_id = client_id
        for order in self._orders.values():  # a new connection of this client hears its orders again
            if order.client_id == client_id:
                order.silent = False
        self._send(conn, Out.NEXT_VALID_ID, 1, self._next_id)
        self._send(conn, Out.MANAGED_ACCOUNTS, 1, self.account)

    def _req_ids(self, conn: Connection, fields: list[str]) -> None:
        self._send(conn, Out.NEXT_VALID_ID, 1, self._next_id)

    def _req_current_time(self, conn: Connection, fields: list[str]) -> None:
        self._send(conn, Out.CURRENT_TIME, 1, int(time.time()))

    def _req_positions(self, conn: Connection, fields: list[str]) -> None:
        conn.positions = True
        for con_id, pos in self._account.positions.items():
            self._send(conn, Out.POSITION, 3, self.account, *self._contracts[con_id].fields(), pos.quantity,
                       pos.avg_cost)
        self._send(conn, Out.POSITION_END, 1)

    def _cancel_positions(self, conn: Connection, fields: list[str]) -> None:
        conn.positions = False

    def _visible(self, conn: Connection, order: TwsOrder) -> bool:
        return conn.client_id in (order.client_id, self.master_client_id)

    def _req_open_orders(self, conn: Connection, fields: list[str]) -> None:
        everyone = int(fields[0]) == In.REQ_ALL_OPEN_ORDERS
        for order in self._orders.values():
            if not order.done and (everyone or self._visible(conn, order)):
                self._send_open_order(conn, order)
                self._send_status(conn, order)
        self._send(conn, Out.OPEN_ORDER_END, 1)

    def _req_completed_orders(self, conn: Connection, fields: list[str]) -> None:
        for order in self._orders.values():
            if order.done:
                self._send_completed_order(conn, order)
        self._send(conn, Out.COMPLETED_ORDERS_END)

    def _req_executions(self, conn: Connection, fields: list[str]) -> None:
        _, _, req_id, client_id, account, since, symbol, sec_type, exchange, side = (fields + [""] * 10)[:10]
        for ex in self._executions:
            con = self._contracts[ex.con_id]
            if not (conn.client_id in (ex.client_id, self.master_client_id)
                    and (not client_id or int(client_id) in (0, ex.client_id))
                    and account in ("", ex.account) and symbol in ("", con.symbol)
                    and sec_type in ("", con.sec_type) and exchange in ("", ex.exchange)
                    and side in ("", ex.side, {"BOT": "BUY", "SLD": "SELL"}[ex.side])
                    and (not since or ex.time[:17] >= since.replace("-", " ")[:17])):
                continue
            self._send_execution(conn, int(req_id), ex)
            self._send_commission(conn, ex)
        self._send(conn, Out.EXECUTION_DATA_END, 1, req_id)

    def _account_values(self) -> list[tuple[str, Decimal | str, str]]:
        return self._account.values(self._mark, self._contracts)

    def _mark(self, con_id: int) -> Decimal:
        quote = self._quotes.get(con_id)
        return self._account.mark(con_id, None if quote is None else (quote.bid + quote.ask) / 2,
                                  self._contracts[con_id])

    def _req_account_updates(self, conn: Connection, fields: list[str]) -> None:
        conn.account_updates = fields[2] == "1"
        if conn.account_updates:
            self._send_account(conn)

    def _send_account(self, conn: Connection) -> None:
        for key, value, currency in self._account_values():
            self._send(conn, Out.ACCOUNT_VALUE, 2, key, value, currency, self.account)
        for con_id, pos in self._account.positions.items():
            mark = self._mark(con_id)
            factor = self._contracts[con_id].factor
            self._send(conn, Out.PORTFOLIO_VALUE, 8, *self._contracts[con_id].fields(exchange=False), pos.quantity,
                       mark, pos.quantity * mark * factor, pos.avg_cost,
                       pos.quantity * (mark * factor - pos.avg_cost), pos.realized, self.account)
        self._send(conn, Out.ACCOUNT_UPDATE_TIME, 1, datetime.now(UTC).strftime("%H:%M"))
        self._send(conn, Out.ACCOUNT_DOWNLOAD_END, 1, self.account)

    def _req_account_updates_multi(self, conn: Connection, fields: list[str]) -> None:
        req_id, model = fields[2], fields[4]
        for key, value, currency in self._account_values():
            self._send(conn, Out.ACCOUNT_UPDATE_MULTI, 1, req_id, self.account, model, key, value, currency)
        self._send(conn, Out.ACCOUNT_UPDATE_MULTI_END, 1, req_id)

    def _req_account_summary(self, conn: Connection, fields: list[str]) -> None:
        req_id, tags = fields[2], set(fields[4].split(","))
        for key, value, currency in self._account_values():
            if key in tags:
                self._send(conn, Out.ACCOUNT_SUMMARY, 1, req_id, self.account, key, value, currency)
        self._send(conn, Out.ACCOUNT_SUMMARY_END, 1, req_id)

    def _match_contract(self, con_id: str, symbol: str, sec_type: str, expiry: str, exchange: str,
                        currency: str, local_symbol: str) -> list[TwsContract]:
        if con_id and int(con_id):
            return [c for c in (self._contracts.get(int(con_id)),) if c is not None]
        return [c for c in self._contracts.values()
                if symbol in ("", c.symbol) and sec_type in ("", c.sec_type)
                and c.last_trade_date.startswith(expiry) and currency in ("", c.currency)
                and local_symbol in ("", c.local_symbol or c.symbol)
                and exchange in ("", "SMART", c.exchange, c.primary_exchange) and (symbol or local_symbol)]

    def _req_contract_details(self, conn: Connection, fields: list[str]) -> None:
        req_id = int(fields[2])
        (con_id, symbol, sec_type, expiry, _strike, _right, _mult, exchange, _primary, currency,
         local_symbol, _tc) = fields[3:15]
        found = self._match_contract(con_id, symbol, sec_type, expiry, exchange, currency, local_symbol)
        if not found:
            self._error(conn, req_id, ERR_NO_SECURITY, "No security definition has been found for the request")
            return
        for c in found:
            self._send(conn, *wire.contract_details(req_id, c))
        self._send(conn, Out.CONTRACT_DATA_END, 1, req_id)

    def _req_mkt_data(self, conn: Connection, fields: list[str]) -> None:
        req_id = int(fields[2])
        con_id, symbol, sec_type, expiry, *_, exchange, _primary, currency, local, _tc = fields[3:15]
        found = self._match_contract(con_id, symbol, sec_type, expiry, exchange, currency, local)
        if len(found) != 1:
            self._error(conn, req_id, ERR_NO_SECURITY, "No security definition has been found for the request")
            return
        quote = self._quotes.get(found[0].con_id)
        if quote is not None:
            self._send_quote(conn, req_id, quote)
        if fields[17] == "1":  # a snapshot: one quote and done
            self._send(conn, Out.TICK_SNAPSHOT_END, 1, req_id)
        else:
            conn.market_data[req_id] = found[0].con_id

    def _cancel_mkt_data(self, conn: Connection, fields: list[str]) -> None:
        conn.market_data.pop(int(fields[2]), None)

    def _send_quote(self, conn: Connection, req_id: int, quote: Touch) -> None:
        self._send(conn, *wire.tick_price(req_id, TICK_BID, quote.bid, quote.bid_size))
        self._send(conn, *wire.tick_price(req_id, TICK_ASK, quote.ask, quote.ask_size))
