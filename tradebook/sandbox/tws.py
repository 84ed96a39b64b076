"""A local TWS API server: the socket protocol Interactive Brokers' clients (ib-async) speak.

It listens on 127.0.0.1 (a free port unless one is given) in a background thread, keeps its
own orders, executions, positions and account, fills by a simple rule, and can be scripted
to misbehave as a real TWS or gateway does. Tests drive the real ``ib_async.IB`` client
against it; a user can do the same as a sandbox::

    with TwsServer() as tws:
        tws.set_price("AAPL", bid="189.99", ask="190.01")
        ib = IB(); ib.connect("127.0.0.1", tws.port, clientId=1, timeout=5)

or from a shell: ``python -m tradebook.sandbox.tws --port 7497 --price AAPL=189.99/190.01``.

The protocol: every message is a 4-byte big-endian length and NUL-terminated text fields.
The client opens with ``API\\0`` and its version range; the server answers its version
(:data:`SERVER_VERSION`, 176) and its connection time; the client sends ``startApi`` with
its client id, and the server sends ``nextValidId`` and ``managedAccounts``. Field layouts
follow ib-async 2.1's decoder for server version 176 (``openOrder`` still carries
``faProfile``; ``execDetails`` has no ``pendingPriceRevision``).

The fill rule: a buy takes the ask, a sell the bid, of the quote set by :meth:`set_price`.
A quote given with a size offers that much once (fills deplete it; the rest of an order
waits for the next quote), without a size it is unlimited. Market orders fill at the touch;
limit orders when the touch reaches their limit (at the touch); an order that meets no
quote waits for one. Stops trigger when the touch reaches the stop price and then act as
market (STP) or limit (STP LMT) orders; until then they are ``PreSubmitted`` (held by IB),
as IB shows its simulated stops. IOC fills what it can and cancels the rest; FOK fills all
at once or is cancelled.
:meth:`set_fill_parts` splits each fill into several executions (partial fills);
:meth:`end_of_day` cancels every working DAY order, as IB does at the close. Clients that
ask ``reqMktData`` receive each quote as bid and ask ticks (a snapshot, or a stream).

Scoping, as TWS does it: live order events go to the connection of the client id that
placed the order; ``reqOpenOrders`` and ``reqExecutions`` answer that client's orders
(the master client id, if set, sees every client's). Order ids are per client id, and
``nextValidId`` continues across reconnects and restarts.

Faults are armed by kind and count, ``server.fault(TwsFault.REJECT, times=3)``, as on the
other sandbox servers (the kinds share their names where the behaviour is the same); each
occasion that meets one uses it up:

===========================  ============================================================
``hang_after_accept``        the order is taken and never answered: no openOrder, status or
                             fills on that connection; it lives and fills at the server, so
                             ``reqOpenOrders``, ``reqCompletedOrders`` and ``reqExecutions``
                             find it after a reconnect (which hears its later events again)
``drop_after_accept``        the order is taken, then the connection closes before any answer
``drop_stream_before_fill``  the next fill is booked, then the connection (TWS's one stream)
                             closes before its messages leave; ``reqExecutions`` after a
                             reconnect returns it
``duplicate_fill``           the next fill's execDetails and commissionReport go out twice
                             (same execId)
``fill_after_cancel``        the cancel is answered (Cancelled, error 202), then a fill of the
                             rest arrives
``fill_on_cancel``           the fill wins the race: the order fills, the cancel is refused
                             (error 10148)
``reject``                   a new order is refused with error ``code`` (201) and ``reason``
``reject_after_accept``      a new order is taken (``Submitted``), then refused with error
                             ``code`` (201) and ``reason`` and ends ``Cancelled``, as when
                             the exchange refuses what TWS accepted
``rate_limit``               a message is refused with error 100 (an order so refused does not
                             exist); :meth:`TwsServer.limit_rate` paces every message instead
===========================  ============================================================

Actions: :meth:`TwsServer.drop_connections` closes every client connection (orders live
on); :meth:`TwsServer.restart` starts a new session: connections closed, the port shut for
a while, a new connection time; orders, executions and ids continue.

The message layouts live in :mod:`tradebook.sandbox._tws_wire`; this module holds the
server, its book and its faults. It imports no broker SDK: it speaks the protocol with
asyncio sockets.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import logging
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from decimal import Decimal
from enum import StrEnum
from typing import Any, TypeVar

from tradebook.errors import ConfigError, SandboxError
from tradebook.sandbox import _tws_wire as wire
from tradebook.sandbox._server import FaultPlan
from tradebook.sandbox._tws_account import TwsAccount
from tradebook.sandbox._tws_requests import Connection, Touch, TwsRequests
from tradebook.sandbox._tws_wire import (
    DEFAULT_CONTRACTS,
    ERR_CANCEL_DONE,
    ERR_CANCEL_NOT_FOUND,
    ERR_CANCELLED,
    ERR_BAD_MESSAGE,
    ERR_MODIFY_DONE,
    ERR_NO_SECURITY,
    ERR_PACING,
    ERR_PRICE_TICK,
    ERR_REJECTED,
    ORDER_TYPES,
    SERVER_VERSION,
    TIMES_IN_FORCE,
    In,
    Out,
    TwsContract,
    TwsExecution,
    TwsOrder,
    decimal,
    encode,
    now_text,
)

__all__ = ["SERVER_VERSION", "In", "Out", "TwsContract", "TwsExecution", "TwsFault", "TwsOrder", "TwsServer",
           "DEFAULT_CONTRACTS"]

_log = logging.getLogger(__name__)
_T = TypeVar("_T")
_REJECT_REASON = "Order rejected - reason: sandbox burst of rejections"


class TwsFault(StrEnum):
    """What the server can be armed to do wrong (see the module docstring)."""

    HANG_AFTER_ACCEPT = "hang_after_accept"
    DROP_AFTER_ACCEPT = "drop_after_accept"
    DROP_STREAM_BEFORE_FILL = "drop_stream_before_fill"
    DUPLICATE_FILL = "duplicate_fill"
    FILL_AFTER_CANCEL = "fill_after_cancel"
    FILL_ON_CANCEL = "fill_on_cancel"
    REJECT = "reject"  # options: code (201), reason
    REJECT_AFTER_ACCEPT = "reject_after_accept"  # options: code (201), reason
    RATE_LIMIT = "rate_limit"


class TwsServer(TwsRequests):
    """A TWS/IB Gateway stand-in on 127.0.0.1: start/stop or ``with``; thread-safe public methods.

    Every public method runs on the server's own event loop (called from another thread it
    waits at most ``call_timeout`` seconds), so tests and notebooks may call it freely while
    clients are connected.
    """

    def __init__(self, *, port: int = 0, account: str = "DU1234567", cash: Decimal | str = "1000000",
                 contracts: Iterable[TwsContract] = DEFAULT_CONTRACTS, master_client_id: int | None = None,
                 commission_per_unit: Decimal | str = "0.005", min_commission: Decimal | str = "1",
                 first_order_id: int = 1, call_timeout: float = 5.0) -> None:
        self.host = "127.0.0.1"
        self.port = port
        self.account = account
        self.master_client_id = master_client_id
        self.call_timeout = call_timeout
        self._contracts = {c.con_id: c for c in contracts}
        self._account = TwsAccount(account, Decimal(cash), commission_per_unit=Decimal(commission_per_unit),
                                   min_commission=Decimal(min_commission))
        self._orders: dict[tuple[int, int], TwsOrder] = {}
        self._executions: list[TwsExecution] = []
        self._quotes: dict[int, Touch] = {}
        self._next_id = first_order_id
        self._next_perm_id = 1_000_001
        self._session = 1
        self._conns: list[Connection] = []
        self._fill_parts = 1
        self.faults = FaultPlan()  # armed by fault(); thread-safe; .spent counts what each kind did
        self._rate: int | None = None
        self._received: Counter[int] = Counter()  # message id -> how many arrived
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None

    # -- life cycle -------------------------------------------------------------------------
    def start(self) -> TwsServer:
        if self._thread is not None:
            raise SandboxError("the TWS sandbox is already running; stop() it first")
        ready = threading.Event()
        failure: list[BaseException] = []
        self._loop = loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._listen())
            except BaseException as exc:  # e.g. the port is taken: told to start()'s caller
                failure.append(exc)
                return
            finally:
                ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=run, name=f"tws-sandbox-{id(self):x}", daemon=True)
        self._thread.start()
        if not ready.wait(self.call_timeout) or failure:
            self._thread.join(self.call_timeout)
            loop.close()
            self._thread = self._loop = None
            raise SandboxError(f"the TWS sandbox could not listen on {self.host}:{self.port}: "
                               f"{failure[0] if failure else f'no answer within {self.call_timeout} s'}")
        return self

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        try:
            self._call(self._shutdown)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(self.call_timeout)
            self._loop.close()
            self._thread = self._loop = None

    def __enter__(self) -> TwsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    def _call(self, fn: Callable[..., _T], *args: Any) -> _T:
        if self._loop is None:
            raise SandboxError("the TWS sandbox is not running; call start() (or use it as a context manager)")
        if threading.current_thread() is self._thread:
            return fn(*args)
        result: concurrent.futures.Future = concurrent.futures.Future()

        def run() -> None:
            try:
                value = fn(*args)
                if asyncio.iscoroutine(value):
                    task = asyncio.ensure_future(value)
                    task.add_done_callback(lambda t: result.set_exception(t.exception()) if t.exception()
                                           else result.set_result(t.result()))
                else:
                    result.set_result(value)
            except BaseException as exc:  # handed to the caller's thread
                result.set_exception(exc)

        self._loop.call_soon_threadsafe(run)
        try:
            return result.result(self.call_timeout)
        except concurrent.futures.TimeoutError:
            raise SandboxError(f"the TWS sandbox did not answer {fn.__name__} within {self.call_timeout} s") from None

    # -- market and scripting (public, thread-safe) ------------------------------------------
    def set_price(self, symbol: str, bid: Decimal | str, ask: Decimal | str, *,
                  bid_size: Decimal | str | None = None, ask_size: Decimal | str | None = None) -> None:
        """Quote ``symbol`` (a symbol or local symbol: ``AAPL``, ``ESH7``); resting orders that cross it fill."""
        con = self._contract_by_name(symbol)
        quote = Touch(Decimal(bid), Decimal(ask), None if bid_size is None else Decimal(bid_size),
                       None if ask_size is None else Decimal(ask_size))
        if quote.bid > quote.ask:
            raise ConfigError(f"set_price({symbol!r}): bid {bid} is above ask {ask}; expected bid <= ask")
        self._call(self._on_quote, con.con_id, quote)

    def set_fill_parts(self, parts: int) -> None:
        """Split every fill into ``parts`` executions (partial fills); 1 restores whole fills."""
        if parts < 1:
            raise ConfigError(f"set_fill_parts: parts must be >= 1, got {parts}")
        self._call(setattr, self, "_fill_parts", parts)

    def fault(self, kind: TwsFault | str, times: int = 1, **options: Any) -> None:
        """Arm a fault for its next ``times`` occasions (``reject``: ``code=``, ``reason=``)."""
        try:
            kind = TwsFault(kind)
        except ValueError:
            raise ConfigError(f"unknown TWS sandbox fault {kind!r}; expected one of {[f.value for f in TwsFault]}"
                              ) from None
        self.faults.arm(kind, times, **options)

    def limit_rate(self, per_second: int | None) -> None:
        """Refuse messages beyond ``per_second`` in any second with error 100 (None: no limit)."""
        self._call(setattr, self, "_rate", per_second)

    def end_of_day(self) -> None:
        """The trading day closes: every working DAY order is cancelled by IB (orderStatus Cancelled, error 202)."""
        self._call(self._expire_day_orders)

    def drop_connections(self) -> None:
        self._call(self._close_all, False)

    def restart(self, *, down_for: float = 0.2) -> None:
        """A new TWS session: close every connection, stop listening for ``down_for`` s, listen again."""
        self._call(self._restart, down_for)

    # -- what the server holds (public, thread-safe copies) ----------------------------------
    def orders(self) -> list[TwsOrder]:
        return self._call(lambda: [copy.copy(o) for o in self._orders.values()])

    def executions(self) -> list[TwsExecution]:
        return self._call(lambda: list(self._executions))

    def positions(self) -> dict[str, Decimal]:
        """Net position per local symbol (flat ones left out)."""
        return self._call(lambda: {(self._contracts[k].local_symbol or self._contracts[k].symbol): p.quantity
                                   for k, p in self._account.positions.items() if p.quantity})

    def cash(self) -> Decimal:
        return self._call(lambda: self._account.cash)

    def connected_client_ids(self) -> list[int]:
        return self._call(lambda: sorted(c.client_id for c in self._conns if c.client_id is not None))

    def received_count(self, message: In) -> int:
        return self._call(lambda: self._received[int(message)])

    def _contract_by_name(self, name: str) -> TwsContract:
        for c in self._contracts.values():
            if name in (c.local_symbol, c.symbol) and (c.local_symbol == name or c.sec_type != "FUT"):
                return c
        known = sorted(c.local_symbol or c.symbol for c in self._contracts.values())
        raise ConfigError(f"unknown sandbox contract {name!r}; known: {known} (futures by local symbol)")

    # -- connections -------------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(writer)
        try:
            if await reader.readexactly(4) != b"API\0":
                return
            size = struct.unpack(">I", await reader.readexactly(4))[0]
            versions = (await reader.readexactly(size)).decode(errors="replace")  # "v157..178[ options]", no NUL
            low, _, high = versions.split(" ")[0].lstrip("v").partition("..")
            if not (low.isdigit() and high.isdigit() and int(low) <= SERVER_VERSION <= int(high)):
                _log.warning("TWS sandbox: client versions %r do not include %s; closing", versions, SERVER_VERSION)
                return
            self._conns.append(conn)
            writer.write(encode([SERVER_VERSION, now_text()]))  # the connection time
            while True:
                fields = await self._read_message(reader)
                if fields:
                    self._dispatch(conn, fields)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            if conn in self._conns:
                self._conns.remove(conn)
            writer.close()

    @staticmethod
    async def _read_message(reader: asyncio.StreamReader) -> list[str]:
        size = struct.unpack(">I", await reader.readexactly(4))[0]
        text = (await reader.readexactly(size)).decode(errors="backslashreplace")
        return text.split("\0")[:-1]

    def _send(self, conn: Connection, *fields: Any) -> None:
        if not conn.writer.is_closing():
            conn.writer.write(encode(fields))

    def _error(self, conn: Connection, req_id: int, code: int, text: str) -> None:
        self._send(conn, Out.ERROR, 2, req_id, code, text, "")

    def _owner(self, order: TwsOrder) -> list[Connection]:
        """The connections that see an order's live events: its client id's, and the master's."""
        return [c for c in self._conns if c.client_id is not None
                and (c.client_id == order.client_id or c.client_id == self.master_client_id)]

    def _drop(self, conn: Connection) -> None:
        if conn in self._conns:
            self._conns.remove(conn)
        conn.writer.close()

    def _close_all(self, stop_listening: bool) -> None:
        for conn in list(self._conns):
            conn.writer.close()
        self._conns.clear()
        if stop_listening and self._server is not None:
            self._server.close()

    async def _shutdown(self) -> None:
        self._close_all(True)
        await asyncio.sleep(0.05)  # let the connection tasks see their sockets close
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _restart(self, down_for: float) -> None:
        self._close_all(True)
        await self._server.wait_closed()
        await asyncio.sleep(down_for)
        self._session += 1
        await self._listen()

    def _dispatch(self, conn: Connection, fields: list[str]) -> None:
        msg_id = int(fields[0])
        self._received[msg_id] += 1
        if self.faults.take(TwsFault.RATE_LIMIT) is not None:
            req_id = int(fields[1]) if msg_id == In.PLACE_ORDER else -1
            self._error(conn, req_id, ERR_PACING, "Max rate of messages per second has been exceeded (sandbox)")
            return
        if self._rate is not None:
            now = time.monotonic()
            while conn.times and now - conn.times[0] > 1.0:
                conn.times.popleft()
            if len(conn.times) >= self._rate:
                req_id = int(fields[1]) if msg_id == In.PLACE_ORDER else -1
                self._error(conn, req_id, ERR_PACING, "Max rate of messages per second has been exceeded:"
                            f"max={self._rate} rec={len(conn.times) + 1} (sandbox pacing)")
                return
            conn.times.append(now)
        handler = getattr(self, self._HANDLERS.get(msg_id, ""), None)
        if handler is None:
            _log.debug("TWS sandbox ignores message %s: %s", msg_id, fields)
            return
        try:
            handler(conn, fields)
        except (ValueError, IndexError, ArithmeticError) as exc:  # a malformed message: said, not fatal
            _log.warning("TWS sandbox could not read message %s %s: %r", msg_id, fields, exc)
            self._error(conn, -1, ERR_BAD_MESSAGE, f"Error validating request: message {msg_id}: {exc!r}")

    # -- orders --------------------------------------------------------------------------------
    def _place_order(self, conn: Connection, fields: list[str]) -> None:
        # placeOrder as ib-async's client.placeOrder writes it: 1 orderId, 2-13 the contract, 14-15 secIdType and
        # secId, 16 action, 17 totalQuantity, 18 orderType, 19 lmtPrice, 20 auxPrice, 21 tif, 22 ocaGroup,
        # 23 account, 24 openClose, 25 origin, 26 orderRef, 27 transmit, 28-32 parentId .. triggerMethod,
        # 33 outsideRth; the rest (algos, conditions, ...) is not modelled and ignored
        order_id = int(fields[1])
        contract_fields = fields[2:14]
        action, qty, order_type, lmt, aux, tif = fields[16:22]
        tif = tif or "DAY"  # TWS's default when the client leaves it empty
        account, order_ref, outside_rth = fields[23], fields[26], fields[33] == "1"
        existing = self._orders.get((conn.client_id, order_id))
        if existing is not None:
            self._modify(conn, existing, Decimal(qty), decimal(lmt), decimal(aux), tif)
            return
        reject = self.faults.take(TwsFault.REJECT)
        if reject is not None:
            self._error(conn, order_id, reject.get("code", ERR_REJECTED), reject.get("reason", _REJECT_REASON))
            return
        con_id, symbol, sec_type, expiry, *_rest = contract_fields
        matches = self._match_contract(con_id, symbol, sec_type, expiry, contract_fields[7],
                                       contract_fields[9], contract_fields[10])
        if len(matches) != 1:
            self._error(conn, order_id, ERR_NO_SECURITY, "No security definition has been found for the request")
            return
        contract = matches[0]
        problem = self._order_problem(contract, action, Decimal(qty), order_type, decimal(lmt), decimal(aux), tif)
        if problem is not None:
            self._error(conn, order_id, *problem)
            return
        order = TwsOrder(conn.client_id, order_id, self._next_perm_id, contract, action, Decimal(qty), order_type,
                         tif, account or self.account, order_ref, decimal(lmt), decimal(aux), outside_rth,
                         silent=self.faults.take(TwsFault.HANG_AFTER_ACCEPT) is not None,
                         status="PreSubmitted" if order_type in ("STP", "STP LMT") else "Submitted")
        self._next_perm_id += 1
        self._next_id = max(self._next_id, order_id + 1)
        self._orders[(conn.client_id, order_id)] = order
        if self.faults.take(TwsFault.DROP_AFTER_ACCEPT) is not None:  # taken; the link goes before any answer
            self._drop(conn)
        self._publish(order, open_order=True)
        late = self.faults.take(TwsFault.REJECT_AFTER_ACCEPT)
        if late is not None:  # refused before it can fill: the error, then its end
            for owner in self._owner(order):
                self._error(owner, order.order_id, late.get("code", ERR_REJECTED), late.get("reason", _REJECT_REASON))
            self._finish(order, "Cancelled")
            return
        self._try_fill(order)

    def _order_problem(self, contract: TwsContract, action: str, qty: Decimal, order_type: str,
                       lmt: Decimal | None, aux: Decimal | None, tif: str) -> tuple[int, str] | None:
        if action not in ("BUY", "SELL"):
            return ERR_REJECTED, f"Order rejected - reason: action {action!r} is not BUY or SELL"
        if order_type not in ORDER_TYPES:
            return ERR_REJECTED, f"Order rejected - reason: order type {order_type!r} is not supported here"
        if tif not in TIMES_IN_FORCE:
            return ERR_REJECTED, f"Order rejected - reason: time in force {tif!r} is not supported here"
        if qty <= 0 or qty % contract.size_increment:
            return ERR_REJECTED, (f"Order rejected - reason: quantity {qty} is not a positive multiple of "
                                  f"{contract.size_increment}")
        needs = {"LMT": (lmt,), "STP": (aux,), "STP LMT": (lmt, aux)}.get(order_type, ())
        if any(p is None for p in needs):
            return ERR_REJECTED, f"Order rejected - reason: a {order_type} order needs its price(s)"
        if any(p % contract.min_tick for p in needs):
            return ERR_PRICE_TICK, "The price does not conform to the minimum price variation for this contract."
        return None

    def _modify(self, conn: Connection, order: TwsOrder, qty: Decimal, lmt: Decimal | None, aux: Decimal | None,
                tif: str) -> None:
        if order.done:
            self._error(conn, order.order_id, ERR_MODIFY_DONE, f"Can't modify a filled order (state: {order.status})")
            return
        problem = self._order_problem(order.contract, order.action, qty, order.order_type, lmt, aux, tif or "DAY")
        if problem is None and qty < order.filled:
            problem = ERR_REJECTED, f"Order rejected - reason: quantity {qty} is below the filled {order.filled}"
        if problem is not None:
            self._error(conn, order.order_id, *problem)
            return
        order.quantity, order.lmt_price, order.aux_price, order.tif = qty, lmt, aux, tif or "DAY"
        self._publish(order, open_order=True)
        self._try_fill(order)

    def _cancel_order(self, conn: Connection, fields: list[str]) -> None:
        order = self._orders.get((conn.client_id, int(fields[2])))
        if order is None:
            self._error(conn, int(fields[2]), ERR_CANCEL_NOT_FOUND,
                        f"OrderId {fields[2]} that needs to be cancelled is not found.")
            return
        self._cancel(conn, order)

    def _cancel(self, conn: Connection, order: TwsOrder) -> None:
        if order.done:
            self._error(conn, order.order_id, ERR_CANCEL_DONE,
                        f"OrderId {order.order_id} that needs to be cancelled cannot be cancelled, state: "
                        f"{order.status}.")
            return
        late = (False if self.faults.take(TwsFault.FILL_ON_CANCEL) is not None
                else True if self.faults.take(TwsFault.FILL_AFTER_CANCEL) is not None else None)
        price = self._race_price(order) if late is not None else None
        if late is False and price is not None:  # the fill reached the exchange first
            self._execute(order, order.remaining, price)
            self._cancel(conn, order)
            return
        rest = order.remaining
        self._finish(order, "Cancelled")
        for c in self._owner(order) if not order.silent else ():
            self._error(c, order.order_id, ERR_CANCELLED, "Order Canceled - reason:")
        if late and price is not None:
            self._execute(order, rest, price, after_done=True)

    def _race_price(self, order: TwsOrder) -> Decimal | None:
        """Where a fill racing a cancel trades: the touch if marketable, else the order's limit."""
        quote = self._quotes.get(order.contract.con_id)
        touch = None if quote is None else (quote.ask if order.action == "BUY" else quote.bid)
        return self._touch(order) or order.lmt_price or touch

    def _expire_day_orders(self) -> None:
        for order in list(self._orders.values()):
            if not order.done and order.tif == "DAY":
                self._finish(order, "Cancelled")
                for c in self._owner(order) if not order.silent else ():
                    self._error(c, order.order_id, ERR_CANCELLED, "Order Canceled - reason: the DAY order expired "
                                "at the close")

    def _global_cancel(self, conn: Connection, fields: list[str]) -> None:
        for order in list(self._orders.values()):
            if not order.done:
                self._cancel(conn, order)

    def _finish(self, order: TwsOrder, status: str) -> None:
        order.status = status
        order.completed_time = now_text()
        self._publish(order)

    def _publish(self, order: TwsOrder, *, open_order: bool = False) -> None:
        if order.silent:
            return
        for conn in self._owner(order):
            if open_order:
                self._send_open_order(conn, order)
            self._send_status(conn, order)

    # -- the fill rule ---------------------------------------------------------------------------
    def _on_quote(self, con_id: int, quote: Touch) -> None:
        self._quotes[con_id] = quote
        for conn in self._conns:  # subscribers see the quote before it fills anything
            for req_id in [r for r, c in conn.market_data.items() if c == con_id]:
                self._send_quote(conn, req_id, quote)
        for order in list(self._orders.values()):
            if order.contract.con_id == con_id and not order.done:
                self._try_fill(order)
        for conn in self._conns:
            if conn.account_updates:
                self._send_account(conn)

    def _touch(self, order: TwsOrder) -> Decimal | None:
        """The price ``order`` can trade at now, or None (no quote, not triggered, not marketable)."""
        quote = self._quotes.get(order.contract.con_id)
        if quote is None:
            return None
        buy = order.action == "BUY"
        price = quote.ask if buy else quote.bid
        if order.order_type in ("STP", "STP LMT") and not order.triggered:
            order.triggered = price >= order.aux_price if buy else price <= order.aux_price
            if not order.triggered:
                return None
        if order.order_type in ("LMT", "STP LMT") and (price > order.lmt_price if buy else price < order.lmt_price):
            return None
        return price

    def _try_fill(self, order: TwsOrder) -> None:
        price = self._touch(order)
        if order.status == "PreSubmitted" and order.triggered:  # IB held the stop; now it works at the exchange
            order.status = "Submitted"
            self._publish(order)
        quote = self._quotes.get(order.contract.con_id)
        size = None if quote is None else (quote.ask_size if order.action == "BUY" else quote.bid_size)
        qty = order.remaining if price is not None else Decimal(0)
        if size is not None:
            qty = min(qty, size)
        if order.tif == "FOK" and qty < order.remaining:
            self._finish(order, "Cancelled")
            return
        if qty > 0:
            if size is not None:
                if order.action == "BUY":
                    quote.ask_size = size - qty
                else:
                    quote.bid_size = size - qty
            self._execute(order, qty, price)
        if order.tif == "IOC" and not order.done:
            self._finish(order, "Cancelled")

    def _execute(self, order: TwsOrder, qty: Decimal, price: Decimal, *, after_done: bool = False) -> None:
        parts = self._split(qty, order.contract.size_increment)
        for part in parts:
            self._execute_one(order, part, price, after_done=after_done)

    def _split(self, qty: Decimal, step: Decimal) -> list[Decimal]:
        n = max(1, min(self._fill_parts, int(qty / step)))
        piece = (qty / n // step) * step
        return [piece] * (n - 1) + [qty - piece * (n - 1)]

    def _execute_one(self, order: TwsOrder, qty: Decimal, price: Decimal, *, after_done: bool) -> None:
        contract = order.contract
        signed = qty if order.action == "BUY" else -qty
        order.avg_price = (order.avg_price * order.filled + price * qty) / (order.filled + qty)
        order.filled += qty
        order.last_fill_price = price
        commission = self._account.commission(qty)
        realized = self._account.book(contract, signed, price, commission)
        ex = TwsExecution(f"{self._session:08x}.{len(self._executions) + 1:08x}.01.01", order.order_id,
                          order.client_id, order.perm_id, contract.con_id, "BOT" if signed > 0 else "SLD", qty, price,
                          order.filled, order.avg_price, order.order_ref, order.account,
                          contract.primary_exchange or contract.exchange, now_text(), commission, realized)
        self._executions.append(ex)
        if not after_done and order.filled == order.quantity:
            order.status, order.completed_time = "Filled", now_text()
        if order.silent:
            return
        if self.faults.take(TwsFault.DROP_STREAM_BEFORE_FILL) is not None:  # booked; its messages never leave
            for conn in self._owner(order):
                self._drop(conn)
            return
        copies = 2 if self.faults.take(TwsFault.DUPLICATE_FILL) is not None else 1
        for conn in self._owner(order):
            for _ in range(copies):
                self._send_execution(conn, -1, ex)
            self._send_status(conn, order)  # after a cancel: still Cancelled, with the late fill counted
            for _ in range(copies):
                self._send_commission(conn, ex)
        for conn in self._conns:
            if conn.positions:
                pos = self._account.positions[contract.con_id]
                self._send(conn, Out.POSITION, 3, self.account, *contract.fields(), pos.quantity, pos.avg_cost)
            if conn.account_updates:
                self._send_account(conn)

    def _send_status(self, conn: Connection, order: TwsOrder) -> None:
        self._send(conn, *wire.order_status(order))

    def _send_execution(self, conn: Connection, req_id: int, ex: TwsExecution) -> None:
        self._send(conn, *wire.execution(req_id, ex, self._contracts[ex.con_id]))

    def _send_commission(self, conn: Connection, ex: TwsExecution) -> None:
        self._send(conn, *wire.commission(ex))

    def _send_open_order(self, conn: Connection, order: TwsOrder) -> None:
        self._send(conn, *wire.open_order(order))

    def _send_completed_order(self, conn: Connection, order: TwsOrder) -> None:
        self._send(conn, *wire.completed_order(order))

    _HANDLERS: dict[int, str] = {  # message id -> the method that answers it
        In.START_API: "_start_api", In.REQ_IDS: "_req_ids", In.REQ_CURRENT_TIME: "_req_current_time",
        In.REQ_POSITIONS: "_req_positions", In.CANCEL_POSITIONS: "_cancel_positions",
        In.REQ_OPEN_ORDERS: "_req_open_orders", In.REQ_ALL_OPEN_ORDERS: "_req_open_orders",
        In.REQ_COMPLETED_ORDERS: "_req_completed_orders", In.REQ_EXECUTIONS: "_req_executions",
        In.REQ_ACCOUNT_UPDATES: "_req_account_updates", In.REQ_ACCOUNT_UPDATES_MULTI: "_req_account_updates_multi",
        In.REQ_ACCOUNT_SUMMARY: "_req_account_summary", In.REQ_CONTRACT_DETAILS: "_req_contract_details",
        In.REQ_MKT_DATA: "_req_mkt_data", In.CANCEL_MKT_DATA: "_cancel_mkt_data",
        In.PLACE_ORDER: "_place_order", In.CANCEL_ORDER: "_cancel_order", In.REQ_GLOBAL_CANCEL: "_global_cancel",
    }


if __name__ == "__main__":  # python -m tradebook.sandbox.tws [--port N] [--price SYMBOL=BID/ASK ...]
    from tradebook.sandbox._tws_cli import main

    raise SystemExit(main())
