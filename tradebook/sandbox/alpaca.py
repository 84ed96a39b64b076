"""A local Alpaca trading API: REST v2 orders, positions, account, clock and assets, and the trade_updates stream.

Point the real clients at it::

    from tradebook.sandbox.alpaca import AlpacaSandbox, AlpacaFault

    with AlpacaSandbox() as venue:
        venue.set_price("SPY", "450.00", "450.02")
        client = TradingClient("sandbox-key", "sandbox-secret", url_override=venue.base_url)
        stream = TradingStream("sandbox-key", "sandbox-secret", url_override=venue.stream_url)
        venue.fault(AlpacaFault.GATEWAY_TIMEOUT_AFTER_ACCEPT)   # the next order is taken, answered 504

``GET /v2/account/activities/FILL`` lists executions (ids ``<time>::<execution id>``, the
id the stream's fill carried), so fills the stream lost are recovered by REST with their
own ids. Replies carry every field alpaca-py's pydantic models read, in Alpaca's shapes and error
codes: 422 40010001 for a client order id already used, 422 42210000 for cancelling a
filled order (and for fractional or extended-hours orders Alpaca does not take), 403
40310000 for a rejection, 404 40410000 for an unknown order, 429 with Retry-After. The
stream answers ``authenticate`` and ``listen`` as Alpaca does and sends ``new``,
``partial_fill``, ``fill``, ``canceled``, ``expired``, ``rejected`` and ``replaced``.

Faults (:class:`AlpacaFault`) are what live trading meets: an order accepted and never
answered, accepted and the connection dropped, accepted and answered 504 (alpaca-py sends
it again), 429s, bursts of rejections, an order rejected after it was accepted, a fill sent
twice, a fill after a cancel was answered 204, a replace answered 200 that loses to a fill
(the old order fills, the new one is rejected), and the stream dropped with a fill in
flight (alpaca-py reconnects and never delivers it: REST has it).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import deque
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from tradebook.sandbox._book import (
    CANCELED, EXPIRED, FILLED, NEW, PARTIALLY_FILLED, REJECTED, REPLACED, ZERO, Book, BookFill, BookOrder, now_ns,
)
from tradebook.sandbox._server import HISTORY, BackgroundServer, SandboxError

DEFAULT_KEY, DEFAULT_SECRET = "sandbox-key", "sandbox-secret"
ACCOUNT_ID = uuid.UUID("5a3c1b2e-7d4f-4e6a-9b8c-0d1e2f3a4b5c")
_ASSET_NAMESPACE = uuid.UUID("0b6b5c1e-2f53-4a57-8f8e-3c2d1a0b9e87")
_ORDER_TYPES = ("market", "limit", "stop", "stop_limit")  # trailing_stop is refused (422)
_TIME_IN_FORCE = ("day", "gtc", "opg", "cls", "ioc", "fok")


class AlpacaFault(StrEnum):
    HANG_AFTER_ACCEPT = "hang_after_accept"  # POST /v2/orders: the order is taken, the reply never comes
    DROP_AFTER_ACCEPT = "drop_after_accept"  # the order is taken, the connection closes without a reply
    GATEWAY_TIMEOUT_AFTER_ACCEPT = "gateway_timeout_after_accept"  # the order is taken, the reply is a 504
    RATE_LIMIT = "rate_limit"  # any request: 429 with Retry-After (option retry_after, seconds)
    REJECT = "reject"  # POST /v2/orders: 403 40310000 (options code, message, status)
    # accepted (200), then a 'rejected' event; option announce=True: answered 'new' with a 'new' event first
    REJECT_AFTER_ACCEPT = "reject_after_accept"
    DUPLICATE_FILL = "duplicate_fill"  # the next fill goes out twice on the stream, same execution_id
    FILL_AFTER_CANCEL = "fill_after_cancel"  # DELETE answered 204, then the order fills instead
    DROP_STREAM_BEFORE_FILL = "drop_stream_before_fill"  # stream connections close just before a fill
    REPLACE_LOSES_TO_FILL = "replace_loses_to_fill"  # PATCH answered 200; the old order fills, the new is rejected


def _iso(ns: int | None) -> str | None:
    if ns is None:
        return None
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _num(value: Decimal | None) -> str | None:
    return None if value is None else format(value.normalize(), "f")


def _parse_ns(text: str) -> int:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000


class AlpacaSandbox(BackgroundServer):
    """Alpaca's trading API on 127.0.0.1: one account, its orders and positions, the trade_updates stream.

    ``set_price(symbol, bid, ask)`` moves the touch (and fills what it crosses);
    ``max_fill_qty`` makes orders fill in parts; ``fault(kind, times)`` arms a fault.
    Symbols are tradable once they have a price or are named in ``assets``
    (symbol -> exchange); others get 422 ``asset not found``.
    """

    name = "alpaca"

    def __init__(self, *, key: str = DEFAULT_KEY, secret: str = DEFAULT_SECRET, cash: Decimal | str = "100000",
                 max_fill_qty: Decimal | str | None = None, assets: dict[str, str] | None = None,
                 market_open: bool = True, port: int = 0) -> None:
        super().__init__(port=port)
        self.key, self.secret = key, secret
        self.book = Book(cash=Decimal(cash), max_fill_qty=None if max_fill_qty is None else Decimal(max_fill_qty))
        self.book.listeners.append(self._on_book_event)
        self.assets: dict[str, str] = {"SPY": "ARCA", "AAPL": "NASDAQ", "IBM": "NYSE", **(assets or {})}
        self.market_open = market_open
        self._sockets: set[Any] = set()  # authorised, listening stream connections
        self._muted: set[Any] = set()  # open stream connections sent nothing (mute_stream)
        self.listens = 0  # stream connections that have listened to trade_updates, reconnects included
        self._pending_rejects: set[str] = set()
        # the latest requests (method, path) and stream messages, for tests and for a user to look at
        self.requests: deque[tuple[str, str]] = deque(maxlen=HISTORY)
        self.sent: deque[dict[str, Any]] = deque(maxlen=HISTORY)

    # -- test/user controls ------------------------------------------------------------------
    @property
    def stream_url(self) -> str:
        return self.base_url.replace("http://", "ws://") + "/stream"

    def positions(self) -> dict[str, Decimal]:
        """The account's positions by symbol (signed quantities), as the venue holds them."""
        with self.book.lock:
            return dict(self.book.positions)

    def fault(self, kind: AlpacaFault, times: int = 1, **options: Any) -> None:
        self.faults.arm(AlpacaFault(kind), times, **options)

    def set_price(self, symbol: str, bid: Decimal | str | float, ask: Decimal | str | float) -> list[BookFill]:
        self.assets.setdefault(symbol, "NYSE")
        return self.book.set_price(symbol, Decimal(str(bid)), Decimal(str(ask)))

    def expire(self, order_id: str) -> None:
        """End an open order as expired (a DAY order at the close)."""
        order = self._order_or_raise(order_id)
        self.book.cancel(order, status=EXPIRED)

    def drop_stream(self) -> None:
        """Close every stream connection (alpaca-py reconnects by itself)."""
        self.call(self.on_disconnect_all())

    def mute_stream(self) -> None:
        """Keep the stream connections open but send them nothing more: a silent stream, fills only in REST."""
        async def mute() -> None:
            self._muted |= self._sockets
            self._sockets = set()

        self.call(mute())

    def order(self, order_id: str) -> BookOrder:
        return self._order_or_raise(order_id)

    def _order_or_raise(self, order_id: str) -> BookOrder:
        order = self.book.get(order_id)
        if order is None:
            raise SandboxError(f"alpaca sandbox holds no order {order_id}")
        return order

    # -- wire shapes ------------------------------------------------------------------------
    def asset_id(self, symbol: str) -> str:
        return str(uuid.uuid5(_ASSET_NAMESPACE, symbol))

    def order_json(self, order: BookOrder) -> dict[str, Any]:
        held = self.book.positions.get(order.symbol, ZERO)
        intent = (("buy_to_close" if held < 0 else "buy_to_open") if order.side == "buy"
                  else ("sell_to_close" if held > 0 else "sell_to_open"))
        return {
            "id": order.order_id, "client_order_id": order.client_order_id,
            "created_at": _iso(order.created_ns), "updated_at": _iso(order.updated_ns),
            "submitted_at": _iso(order.created_ns), "filled_at": _iso(order.filled_ns),
            "expired_at": _iso(order.expired_ns), "expires_at": None,
            "canceled_at": _iso(order.canceled_ns),
            "failed_at": _iso(order.updated_ns) if order.status == REJECTED else None,
            "replaced_at": _iso(order.replaced_ns), "replaced_by": order.replaced_by, "replaces": order.replaces,
            "asset_id": self.asset_id(order.symbol), "symbol": order.symbol, "asset_class": "us_equity",
            "notional": None, "qty": _num(order.qty), "filled_qty": _num(order.filled_qty),
            "filled_avg_price": _num(order.avg_price), "order_class": "",
            "order_type": order.order_type, "type": order.order_type, "side": order.side,
            "position_intent": intent, "time_in_force": order.time_in_force,
            "limit_price": _num(order.limit_price), "stop_price": _num(order.stop_price),
            "status": order.status, "extended_hours": order.extended_hours, "legs": None,
            "trail_percent": None, "trail_price": None, "hwm": None, "subtag": None, "source": None,
        }

    def position_json(self, symbol: str) -> dict[str, Any]:
        qty = self.book.positions[symbol]
        cost = self.book.cost[symbol]
        entry = cost / qty
        price = self.book.last_price(symbol) or entry
        market_value = qty * price
        pl = market_value - cost
        plpc = pl / abs(cost) if cost else ZERO
        return {
            "asset_id": self.asset_id(symbol), "symbol": symbol, "exchange": self.assets.get(symbol, "NYSE"),
            "asset_class": "us_equity", "asset_marginable": True, "avg_entry_price": _num(entry),
            "qty": _num(qty), "qty_available": _num(qty), "side": "long" if qty > 0 else "short",
            "market_value": _num(market_value), "cost_basis": _num(cost), "unrealized_pl": _num(pl),
            "unrealized_plpc": _num(plpc), "unrealized_intraday_pl": _num(pl), "unrealized_intraday_plpc": _num(plpc),
            "current_price": _num(price), "lastday_price": _num(price), "change_today": "0",
        }

    def account_json(self) -> dict[str, Any]:
        book = self.book
        long_value = sum((q * (book.last_price(s) or book.cost[s] / q) for s, q in book.positions.items() if q > 0),
                         ZERO)
        short_value = sum((q * (book.last_price(s) or book.cost[s] / q) for s, q in book.positions.items() if q < 0),
                          ZERO)
        equity = book.cash + long_value + short_value
        cash = _num(book.cash)
        return {
            "id": str(ACCOUNT_ID), "account_number": "PA3SANDBOX1", "status": "ACTIVE", "crypto_status": "ACTIVE",
            "currency": "USD", "buying_power": cash, "regt_buying_power": cash, "daytrading_buying_power": "0",
            "effective_buying_power": cash, "non_marginable_buying_power": cash, "options_buying_power": cash,
            "bod_dtbp": "0", "cash": cash, "accrued_fees": "0", "pending_transfer_out": "0",
            "pending_transfer_in": "0", "portfolio_value": _num(equity), "pattern_day_trader": False,
            "trading_blocked": False, "transfers_blocked": False, "account_blocked": False,
            "created_at": "2026-01-02T14:30:00.000000Z", "trade_suspended_by_user": False, "multiplier": "1",
            "shorting_enabled": True, "equity": _num(equity), "last_equity": _num(equity),
            "long_market_value": _num(long_value), "short_market_value": _num(short_value),
            "position_market_value": _num(long_value - short_value), "initial_margin": "0",
            "maintenance_margin": "0", "last_maintenance_margin": "0", "sma": "0", "daytrade_count": 0,
            "balance_asof": datetime.now(UTC).date().isoformat(), "crypto_tier": 1, "options_approved_level": 0,
            "options_trading_level": 0, "intraday_adjustments": "0", "pending_reg_taf_fees": "0",
        }

    def asset_json(self, symbol: str) -> dict[str, Any]:
        return {"id": self.asset_id(symbol), "class": "us_equity", "exchange": self.assets[symbol], "symbol": symbol,
                "name": symbol, "status": "active", "tradable": True, "marginable": True, "shortable": True,
                "easy_to_borrow": True, "fractionable": True, "maintenance_margin_requirement": 30,
                "attributes": []}

    # -- the stream -----------------------------------------------------------------------------
    def _on_book_event(self, order: BookOrder, event: str, fill: BookFill | None) -> None:
        # runs under the book's lock, on whichever thread moved the book: send from the server's loop
        if event == NEW and order.client_order_id in self._pending_rejects:
            return
        name = {NEW: "new", CANCELED: "canceled", EXPIRED: "expired", REPLACED: "replaced",
                REJECTED: "rejected"}.get(event)
        data: dict[str, Any] = {"order": self.order_json(order), "timestamp": _iso(order.updated_ns)}
        if fill is not None:
            name = "fill" if order.status == FILLED or order.remaining == 0 else "partial_fill"
            data.update({"execution_id": fill.fill_id, "price": _num(fill.price), "qty": _num(fill.qty),
                         "position_qty": _num(self.book.positions.get(order.symbol, ZERO)),
                         "timestamp": _iso(fill.ts_ns)})
        if name is None:
            return
        data["event"] = name
        message = {"stream": "trade_updates", "data": data}
        times = 1
        if fill is not None:
            if self.faults.take(AlpacaFault.DROP_STREAM_BEFORE_FILL) is not None:
                self.schedule(self._drop_then_send(message))
                return
            if self.faults.take(AlpacaFault.DUPLICATE_FILL) is not None:
                times = 2
        for _ in range(times):
            self.schedule(self._broadcast(message))

    async def _broadcast(self, message: dict[str, Any]) -> None:
        self.sent.append(message)
        text = json.dumps(message)
        for ws in list(self._sockets):
            try:
                await ws.send_str(text)
            except (ConnectionError, RuntimeError):
                self._sockets.discard(ws)

    async def _drop_then_send(self, message: dict[str, Any]) -> None:
        await self.on_disconnect_all()
        await self._broadcast(message)  # nobody is listening: the fill is lost to the stream

    async def on_disconnect_all(self) -> None:
        sockets, self._sockets, self._muted = list(self._sockets | self._muted), set(), set()
        for ws in sockets:
            await ws.close()

    async def _stream(self, request: Any) -> Any:
        from aiohttp import WSMsgType, web

        ws = web.WebSocketResponse()
        await ws.prepare(request)
        authorised = False
        try:
            async for msg in ws:
                if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    break
                try:
                    body = json.loads(msg.data)
                except ValueError:
                    await ws.send_str(json.dumps({"stream": "error", "data": {"error_message": "invalid syntax"}}))
                    continue
                action, data = body.get("action"), body.get("data") or {}
                if action in ("authenticate", "auth"):
                    authorised = data.get("key_id") == self.key and data.get("secret_key") == self.secret
                    status = "authorized" if authorised else "unauthorized"
                    await ws.send_str(json.dumps({"stream": "authorization",
                                                  "data": {"status": status, "action": "authenticate"}}))
                    if not authorised:
                        break
                elif action == "listen":
                    if not authorised:
                        await ws.send_str(json.dumps({"stream": "authorization",
                                                      "data": {"status": "unauthorized", "action": "listen"}}))
                        break
                    streams = [s for s in data.get("streams", []) if s == "trade_updates"]
                    if streams:
                        self._sockets.add(ws)
                        self.listens += 1
                    else:
                        self._sockets.discard(ws)
                    await ws.send_str(json.dumps({"stream": "listening", "data": {"streams": streams}}))
        finally:
            self._sockets.discard(ws)
        return ws

    # -- REST ---------------------------------------------------------------------------------
    def build_app(self) -> Any:
        from aiohttp import web

        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/stream", self._stream)
        app.router.add_get("/v2/account", self._account)
        app.router.add_get("/v2/clock", self._clock)
        app.router.add_get("/v2/assets", self._assets)
        app.router.add_get("/v2/assets/{symbol}", self._asset)
        app.router.add_post("/v2/orders", self._submit)
        app.router.add_get("/v2/orders", self._list_orders)
        app.router.add_delete("/v2/orders", self._cancel_all)
        app.router.add_get("/v2/orders:by_client_order_id", self._by_client_id)
        app.router.add_get("/v2/orders/{order_id}", self._get_order)
        app.router.add_patch("/v2/orders/{order_id}", self._replace)
        app.router.add_delete("/v2/orders/{order_id}", self._cancel)
        app.router.add_get("/v2/account/activities/{activity_type}", self._activities)
        app.router.add_get("/v2/account/activities", self._activities)
        app.router.add_get("/v2/positions", self._positions)
        app.router.add_get("/v2/positions/{symbol}", self._position)
        app.router.add_delete("/v2/positions/{symbol}", self._close_position)
        return app

    @staticmethod
    def _error(status: int, code: int, message: str, headers: dict[str, str] | None = None) -> Any:
        from aiohttp import web

        return web.json_response({"code": code, "message": message}, status=status, headers=headers)

    @staticmethod
    def _json(body: Any, status: int = 200) -> Any:
        from aiohttp import web

        return web.json_response(body, status=status)

    @property
    def _middleware(self) -> Any:
        from aiohttp import web

        @web.middleware
        async def middleware(request: Any, handler: Any) -> Any:
            self.requests.append((request.method, request.path))
            if request.path == "/stream":
                return await handler(request)
            if (request.headers.get("APCA-API-KEY-ID") != self.key
                    or request.headers.get("APCA-API-SECRET-KEY") != self.secret):
                return self._error(401, 40110000, "request is not authorized")
            limited = self.faults.take(AlpacaFault.RATE_LIMIT)
            if limited is not None:
                retry_after = str(limited.get("retry_after", 1))
                return self._error(429, 42910000, "rate limit exceeded", {"Retry-After": retry_after})
            return await handler(request)

        return middleware

    async def _account(self, request: Any) -> Any:
        with self.book.lock:
            return self._json(self.account_json())

    async def _clock(self, request: Any) -> Any:
        now = datetime.now(UTC)
        day = now.replace(hour=14, minute=30, second=0, microsecond=0)
        return self._json({"timestamp": now.isoformat(), "is_open": self.market_open,
                           "next_open": (day + timedelta(days=1)).isoformat(),
                           "next_close": day.replace(hour=21, minute=0).isoformat()})

    async def _assets(self, request: Any) -> Any:
        return self._json([self.asset_json(s) for s in sorted(self.assets)])

    async def _asset(self, request: Any) -> Any:
        symbol = request.match_info["symbol"]
        if symbol not in self.assets:
            return self._error(404, 40410000, f"asset not found for {symbol}")
        return self._json(self.asset_json(symbol))

    async def _submit(self, request: Any) -> Any:
        try:
            body = await request.json()
        except ValueError:
            return self._error(400, 40010000, "request body format is invalid")
        checked = self._check_new_order(body)
        if not isinstance(checked, BookOrder):
            return checked
        rejected = self.faults.take(AlpacaFault.REJECT)
        if rejected is not None:
            return self._error(rejected.get("status", 403), rejected.get("code", 40310000),
                               rejected.get("message", "insufficient buying power"))
        late_reject = self.faults.take(AlpacaFault.REJECT_AFTER_ACCEPT)
        reject_later = late_reject is not None
        announced = bool(reject_later and late_reject.get("announce"))  # 'new' first, then 'rejected'
        hang = self.faults.take(AlpacaFault.HANG_AFTER_ACCEPT) is not None
        drop = self.faults.take(AlpacaFault.DROP_AFTER_ACCEPT) is not None
        gateway = self.faults.take(AlpacaFault.GATEWAY_TIMEOUT_AFTER_ACCEPT) is not None
        with self.book.lock:
            if self.book.get_by_client_id(checked.client_order_id) is not None:
                return self._error(422, 40010001, "client_order_id must be unique")
            if reject_later:
                if not announced:
                    self._pending_rejects.add(checked.client_order_id)
                self.book.add(checked, match=False)
                reply = self.order_json(checked)
                reply["status"] = "new" if announced else "accepted"
            else:
                self.book.add(checked)
                reply = self.order_json(checked)
        if reject_later:
            self.schedule(self._reject_later(checked))
        if hang:
            await self.hold()
            return self._error(504, 50400000, "gateway timeout")
        if drop:
            request.transport.close()
            return self._json(reply)  # never reaches the client: the socket is closed
        if gateway:
            return self._error(504, 50400000, "gateway timeout")
        return self._json(reply)

    async def _reject_later(self, order: BookOrder) -> None:
        await asyncio.sleep(0.01)
        with self.book.lock:
            self._pending_rejects.discard(order.client_order_id)
            order.status = REJECTED
            order.updated_ns = now_ns()
            self.book._emit(order, REJECTED, None)

    def _check_new_order(self, body: dict[str, Any]) -> BookOrder | Any:
        symbol = body.get("symbol")
        if not symbol or symbol not in self.assets:
            return self._error(422, 40010001, f'asset "{symbol}" not found')
        if body.get("notional") is not None:
            return self._error(422, 42210000, "notional orders are not supported by the tradebook sandbox")
        order_type = body.get("type") or body.get("order_type")
        if order_type not in _ORDER_TYPES:
            return self._error(422, 40010001, f"invalid order type {order_type!r}; sandbox takes {_ORDER_TYPES}")
        side = body.get("side")
        if side not in ("buy", "sell"):
            return self._error(422, 40010001, f"invalid side {side!r}")
        tif = body.get("time_in_force")
        if tif not in _TIME_IN_FORCE:
            return self._error(422, 40010001, f"invalid time_in_force {tif!r}")
        try:
            qty = Decimal(str(body.get("qty")))
            limit = None if body.get("limit_price") is None else Decimal(str(body["limit_price"]))
            stop = None if body.get("stop_price") is None else Decimal(str(body["stop_price"]))
        except InvalidOperation:
            return self._error(422, 40010001, "qty, limit_price and stop_price must be numbers")
        if not qty.is_finite() or qty <= 0:
            return self._error(422, 40010001, "qty must be > 0")
        if order_type in ("limit", "stop_limit") and limit is None:
            return self._error(422, 40010001, "limit_price is required for limit orders")
        if order_type in ("stop", "stop_limit") and stop is None:
            return self._error(422, 40010001, "stop_price is required for stop orders")
        if qty != qty.to_integral_value() and not (order_type in ("market", "limit") and tif == "day"):
            return self._error(422, 42210000, "fractional orders must be DAY orders")
        extended = bool(body.get("extended_hours"))
        if extended and not (order_type == "limit" and tif == "day"):
            return self._error(422, 42210000, "extended hours order must be DAY limit orders")
        client_order_id = body.get("client_order_id") or str(uuid.uuid4())
        if len(client_order_id) > 128:
            return self._error(422, 40010001, "client_order_id must be no more than 128 characters")
        return BookOrder(order_id=str(uuid.uuid4()), client_order_id=client_order_id, symbol=symbol, side=side,
                         order_type=order_type, time_in_force=tif, qty=qty, limit_price=limit, stop_price=stop,
                         extended_hours=extended)

    async def _list_orders(self, request: Any) -> Any:
        status = request.query.get("status", "open")
        symbols = set(filter(None, request.query.get("symbols", "").split(",")))
        limit = int(request.query.get("limit", 50))
        with self.book.lock:
            orders = list(self.book.orders.values())
            if status == "open":
                orders = [o for o in orders if o.is_open]
            elif status == "closed":
                orders = [o for o in orders if not o.is_open]
            if symbols:
                orders = [o for o in orders if o.symbol in symbols]
            orders.sort(key=lambda o: o.number, reverse=request.query.get("direction", "desc") == "desc")
            return self._json([self.order_json(o) for o in orders[:limit]])

    async def _by_client_id(self, request: Any) -> Any:
        client_order_id = request.query.get("client_order_id", "")
        with self.book.lock:
            order = self.book.get_by_client_id(client_order_id)
            if order is None:
                return self._error(404, 40410000, "order not found")
            return self._json(self.order_json(order))

    async def _get_order(self, request: Any) -> Any:
        with self.book.lock:
            order = self.book.get(request.match_info["order_id"])
            if order is None:
                return self._error(404, 40410000, "order not found")
            return self._json(self.order_json(order))

    async def _cancel(self, request: Any) -> Any:
        from aiohttp import web

        with self.book.lock:
            order = self.book.get(request.match_info["order_id"])
            if order is None:
                return self._error(404, 40410000, "order not found")
            if not order.is_open:
                return self._error(422, 42210000, f'order is already in "{order.status}" state')
            if self.faults.take(AlpacaFault.FILL_AFTER_CANCEL) is not None:
                self.schedule(self._fill_instead(order))
            else:
                self.book.cancel(order)
        return web.Response(status=204)

    async def _fill_instead(self, order: BookOrder) -> None:
        await asyncio.sleep(0.01)
        with self.book.lock:
            if not order.is_open:
                return
            bid, ask = self.book.prices.get(order.symbol, (None, None))
            price = order.limit_price or (ask if order.side == "buy" else bid)
            if price is None:
                raise SandboxError(f"fill after cancel of {order.order_id}: {order.symbol} has no price; set one")
            self.book.fill(order, order.remaining, price)

    async def _cancel_all(self, request: Any) -> Any:
        with self.book.lock:
            answers = []
            for order in self.book.open_orders():
                self.book.cancel(order)
                answers.append({"id": order.order_id, "status": 200, "body": self.order_json(order)})
        return self._json(answers, status=207)

    async def _replace(self, request: Any) -> Any:
        body = await request.json()
        with self.book.lock:
            old = self.book.get(request.match_info["order_id"])
            if old is None:
                return self._error(404, 40410000, "order not found")
            if not old.is_open:
                return self._error(422, 42210000, f'order is already in "{old.status}" state')
            try:
                qty = Decimal(str(body["qty"])) if body.get("qty") is not None else old.qty
                limit = Decimal(str(body["limit_price"])) if body.get("limit_price") is not None else old.limit_price
                stop = Decimal(str(body["stop_price"])) if body.get("stop_price") is not None else old.stop_price
            except InvalidOperation:
                return self._error(422, 40010001, "qty, limit_price and stop_price must be numbers")
            if qty <= old.filled_qty:
                return self._error(422, 40010001, f"qty must be above the filled quantity {old.filled_qty}")
            client_order_id = body.get("client_order_id") or str(uuid.uuid4())
            if self.book.get_by_client_id(client_order_id) is not None:
                return self._error(422, 40010001, "client_order_id must be unique")
            # the new order carries what the old one filled (its fills stay with the old order)
            new = BookOrder(order_id=str(uuid.uuid4()), client_order_id=client_order_id, symbol=old.symbol,
                            side=old.side, order_type=old.order_type,
                            time_in_force=body.get("time_in_force") or old.time_in_force, qty=qty,
                            limit_price=limit, stop_price=stop, extended_hours=old.extended_hours,
                            filled_qty=old.filled_qty, filled_notional=old.filled_notional,
                            status=PARTIALLY_FILLED if old.filled_qty else NEW)
            if self.faults.take(AlpacaFault.REPLACE_LOSES_TO_FILL) is not None:
                # Alpaca: "if the existing open order is filled before the replacing (new) order reaches the
                # execution venue, the replacing (new) order is rejected"
                new.replaces, new.filled_qty, new.filled_notional, new.status = old.order_id, ZERO, ZERO, NEW
                self._pending_rejects.add(client_order_id)
                self.book.add(new, match=False)
                reply = self.order_json(new)
                reply["status"] = "accepted"
                self.schedule(self._replace_loses(old, new))
                return self._json(reply)
            self.book.replace(old, new)
            return self._json(self.order_json(new))

    async def _replace_loses(self, old: BookOrder, new: BookOrder) -> None:
        await asyncio.sleep(0.01)
        with self.book.lock:
            if old.is_open:
                bid, ask = self.book.prices.get(old.symbol, (None, None))
                price = old.limit_price or (ask if old.side == "buy" else bid)
                if price is None:
                    raise SandboxError(f"replace race of {old.order_id}: {old.symbol} has no price; set one")
                self.book.fill(old, old.remaining, price)
        await self._reject_later(new)

    def activity_json(self, order: BookOrder, fill: BookFill) -> dict[str, Any]:
        """A FILL account activity; its id ends with the execution id the stream's fill event carried."""
        stamp = datetime.fromtimestamp(fill.ts_ns / 1e9, UTC).strftime("%Y%m%d%H%M%S%f")[:-3]
        done = sum((f.qty for f in order.fills if f.seq <= fill.seq), ZERO)
        carried = order.filled_qty - sum((f.qty for f in order.fills), ZERO)  # what a replaced order had filled
        cum = carried + done
        return {"id": f"{stamp}::{fill.fill_id}", "account_id": str(ACCOUNT_ID), "activity_type": "FILL",
                "transaction_time": _iso(fill.ts_ns), "type": "fill" if cum == order.qty else "partial_fill",
                "price": _num(fill.price), "qty": _num(fill.qty), "side": order.side, "symbol": order.symbol,
                "leaves_qty": _num(order.qty - cum), "order_id": order.order_id, "cum_qty": _num(cum),
                "order_status": "filled" if cum == order.qty else "partially_filled"}

    async def _activities(self, request: Any) -> Any:
        kinds = request.match_info.get("activity_type") or request.query.get("activity_types", "FILL")
        if set(kinds.split(",")) - {"FILL"}:
            return self._error(422, 40010001, f"the sandbox keeps FILL activities only, not {kinds}")
        after, until = request.query.get("after"), request.query.get("until")
        with self.book.lock:
            executions = sorted(((f, o) for o in self.book.orders.values() for f in o.fills), key=lambda fo: fo[0].seq,
                                reverse=request.query.get("direction", "desc") == "desc")
            rows = [self.activity_json(o, f) for f, o in executions]
        if after:
            rows = [r for r in rows if r["transaction_time"] > _iso(_parse_ns(after))]
        if until:
            rows = [r for r in rows if r["transaction_time"] <= _iso(_parse_ns(until))]
        token = request.query.get("page_token")
        if token:
            ids = [r["id"] for r in rows]
            rows = rows[ids.index(token) + 1:] if token in ids else []
        return self._json(rows[:int(request.query.get("page_size", 100))])

    async def _positions(self, request: Any) -> Any:
        with self.book.lock:
            return self._json([self.position_json(s) for s in sorted(self.book.positions)])

    async def _position(self, request: Any) -> Any:
        symbol = request.match_info["symbol"]
        with self.book.lock:
            if symbol not in self.book.positions:
                return self._error(404, 40410000, "position does not exist")
            return self._json(self.position_json(symbol))

    async def _close_position(self, request: Any) -> Any:
        symbol = request.match_info["symbol"]
        with self.book.lock:
            held = self.book.positions.get(symbol)
            if held is None:
                return self._error(404, 40410000, "position does not exist")
            order = BookOrder(order_id=str(uuid.uuid4()), client_order_id=str(uuid.uuid4()), symbol=symbol,
                              side="sell" if held > 0 else "buy", order_type="market", time_in_force="day",
                              qty=abs(held))
            self.book.add(order)
            return self._json(self.order_json(order))


def main(argv: list[str] | None = None) -> int:
    from tradebook.sandbox._server import serve_from_command_line

    return serve_from_command_line(AlpacaSandbox(), argv, "python -m tradebook.sandbox.alpaca")


if __name__ == "__main__":
    raise SystemExit(main())
