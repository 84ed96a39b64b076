"""A local Binance spot API for ccxt: REST (markets, time, orders, open orders, trades, account) and the user stream.

Point ccxt at it::

    from tradebook.sandbox.binance import BinanceSandbox, BinanceFault

    with BinanceSandbox() as venue:
        venue.set_price("BTCUSDT", "60000.00", "60000.01")
        exchange = ccxt.binance({"apiKey": venue.key, "secret": venue.secret, "options": {
            "fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False, "fetchMargins": False}})
        exchange.urls["api"] = venue.ccxt_urls(exchange.urls["api"])

Requests are checked as Binance checks them: the HMAC-SHA256 signature (-1022), the
timestamp against ``recvWindow`` (-1021; ``clock_offset_ms`` skews the server's clock),
the PRICE_FILTER, LOT_SIZE and NOTIONAL filters (-1013), balances (-2010), a client order
id already held by an open order (-2010 "Duplicate order sent."), unknown orders (-2013 to
a query, -2011 to a cancel). Replies have Binance's fields (``newOrderRespType`` ACK,
RESULT or FULL). The quote asset's balance is the book's cash; fees are charged in it.

The user data stream is the WebSocket API's ``userDataStream.subscribe.signature`` at
``/ws-api/v3`` (what ccxt.pro's ``watch_orders`` / ``watch_my_trades`` use for spot):
``executionReport`` events for NEW, TRADE, CANCELED, EXPIRED and REJECTED.

Faults (:class:`BinanceFault`): an order accepted and never answered, accepted and the
connection dropped, 429 with Retry-After, bursts of rejections, a cancel that meets an
order that just filled (-2011 although the order is FILLED), a fill sent twice on the
stream, and the stream dropped with a fill in flight (ccxt.pro's watch fails; a new watch
resubscribes; REST has the fill). Binance cancels atomically, so a fill after an
acknowledged cancel does not happen there; the -2011 race is its form. The USD-M futures
``/fapi/v1/premiumIndex`` (mark price and funding rate) is served for perpetuals set with
``set_funding``.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from collections import deque
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from aiohttp import web

from tradebook.sandbox._book import (
    CANCELED, EXPIRED, FILLED, NEW, PARTIALLY_FILLED, REJECTED, ZERO, Book, BookFill, BookOrder,
)
from tradebook.sandbox._server import HISTORY, BackgroundServer, SandboxError

DEFAULT_KEY, DEFAULT_SECRET = "sandbox-binance-key", "sandbox-binance-secret"
DEFAULT_RECV_WINDOW_MS = 5000
_PARAMS = web.RequestKey("params", dict)  # a request's query and form parameters, merged (aiohttp wants a module key)
_STATUS = {NEW: "NEW", PARTIALLY_FILLED: "PARTIALLY_FILLED", FILLED: "FILLED", CANCELED: "CANCELED",
           REJECTED: "REJECTED", EXPIRED: "EXPIRED"}
_TYPES = {"MARKET": "market", "LIMIT": "limit", "LIMIT_MAKER": "limit", "STOP_LOSS": "stop",
          "STOP_LOSS_LIMIT": "stop_limit"}
_ORDER_TYPES = ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT"]


class BinanceFault(StrEnum):
    HANG_AFTER_ACCEPT = "hang_after_accept"  # POST /api/v3/order: the order is taken, the reply never comes
    DROP_AFTER_ACCEPT = "drop_after_accept"  # the order is taken, the connection closes without a reply
    RATE_LIMIT = "rate_limit"  # any request: 429 -1003 with Retry-After (option retry_after, seconds)
    REJECT = "reject"  # POST /api/v3/order: -2010 (options code, msg)
    FILL_ON_CANCEL = "fill_on_cancel"  # DELETE: the order fills just before the cancel lands: -2011
    DUPLICATE_FILL = "duplicate_fill"  # user data stream: the next TRADE executionReport goes out twice
    DROP_STREAM_BEFORE_FILL = "drop_stream_before_fill"  # user data stream connections close just before a fill


@dataclass(frozen=True)
class SymbolRules:
    """A spot symbol's assets and filters, as exchangeInfo states them."""

    base: str
    quote: str
    tick_size: str = "0.01"
    step_size: str = "0.00001"
    min_qty: str = "0.00001"
    max_qty: str = "9000"
    min_price: str = "0.01"
    max_price: str = "1000000"
    min_notional: str = "5"
    max_notional: str = "9000000"


DEFAULT_SYMBOLS = {"BTCUSDT": SymbolRules("BTC", "USDT"),
                   "ETHUSDT": SymbolRules("ETH", "USDT", step_size="0.0001", min_qty="0.0001")}


def _fmt(value: Decimal | None, places: int = 8) -> str:
    return format((value or ZERO).quantize(Decimal(1).scaleb(-places)), "f")


def _ms(ns: int | None) -> int | None:
    return None if ns is None else ns // 1_000_000


class BinanceSandbox(BackgroundServer):
    """Binance spot on 127.0.0.1: one account in one quote asset, its orders and trades, exchangeInfo.

    ``set_price(symbol, bid, ask)`` moves the touch; ``max_fill_qty`` makes orders fill in
    parts; ``fault(kind, times)`` arms a fault; ``clock_offset_ms`` moves the server's
    clock (a client outside ``recvWindow`` gets -1021).
    """

    name = "binance"

    def __init__(self, *, key: str = DEFAULT_KEY, secret: str = DEFAULT_SECRET,
                 symbols: dict[str, SymbolRules] | None = None, balances: dict[str, str] | None = None,
                 fee_rate: Decimal | str = "0.001", max_fill_qty: Decimal | str | None = None,
                 check_signature: bool = True, port: int = 0) -> None:
        super().__init__(port=port)
        self.key, self.secret = key, secret
        self.symbols = dict(symbols or DEFAULT_SYMBOLS)
        quotes = {rules.quote for rules in self.symbols.values()}
        if len(quotes) != 1:
            raise SandboxError(f"the binance sandbox keeps one quote asset; symbols quote {sorted(quotes)}")
        self.quote_asset = quotes.pop()
        balances = {self.quote_asset: "100000", **(balances or {})}
        self.book = Book(cash=Decimal(balances.pop(self.quote_asset)), fee_rate=Decimal(fee_rate),
                         max_fill_qty=None if max_fill_qty is None else Decimal(max_fill_qty))
        by_base = {rules.base: symbol for symbol, rules in self.symbols.items()}
        for asset, amount in balances.items():
            if asset not in by_base:
                raise SandboxError(f"balance in {asset}: no symbol trades it; symbols {sorted(self.symbols)}")
            if Decimal(amount):
                self.book.positions[by_base[asset]] = Decimal(amount)
                self.book.cost[by_base[asset]] = ZERO
        self.check_signature = check_signature
        self.clock_offset_ms = 0
        self.funding: dict[str, dict[str, Any]] = {}
        # the latest requests (method, path) and stream messages, for tests and for a user to look at
        self.requests: deque[tuple[str, str]] = deque(maxlen=HISTORY)
        # Binance trade ids are integers; ours count executions across the book in the order they happen
        self._trade_ids: dict[str, int] = {}
        self.book.listeners.append(self._number_trade)
        self.book.listeners.append(self._on_book_event)
        self._subscribers: dict[Any, int] = {}  # user data stream websocket -> its subscriptionId
        self._subscriptions = 0
        self.subscribes = 0  # user data stream subscriptions made, resubscriptions included
        self.sent: deque[dict[str, Any]] = deque(maxlen=HISTORY)

    # -- test/user controls ------------------------------------------------------------------
    def positions(self) -> dict[str, Decimal]:
        """The account's positions by symbol (signed quantities), as the venue holds them."""
        with self.book.lock:
            return dict(self.book.positions)

    def fault(self, kind: BinanceFault, times: int = 1, **options: Any) -> None:
        self.faults.arm(BinanceFault(kind), times, **options)

    def set_price(self, symbol: str, bid: Decimal | str | float, ask: Decimal | str | float) -> list[BookFill]:
        if symbol not in self.symbols:
            raise SandboxError(f"unknown symbol {symbol}; the sandbox lists {sorted(self.symbols)}")
        return self.book.set_price(symbol, Decimal(str(bid)), Decimal(str(ask)))

    def set_funding(self, symbol: str, rate: Decimal | str, *, mark_price: Decimal | str,
                    next_funding_ms: int | None = None) -> None:
        """The perpetual ``symbol``'s funding rate and mark price, served by /fapi/v1/premiumIndex."""
        self.funding[symbol] = {"rate": Decimal(str(rate)), "mark": Decimal(str(mark_price)),
                                "next": next_funding_ms or (self.server_time_ms() // 28_800_000 + 1) * 28_800_000}

    def server_time_ms(self) -> int:
        return int(time.time() * 1000) + self.clock_offset_ms

    def ccxt_urls(self, api_urls: dict[str, Any]) -> dict[str, Any]:
        """ccxt's ``exchange.urls['api']`` with every host replaced by this server (paths kept, wss -> ws)."""
        def local(url: Any) -> Any:
            if isinstance(url, dict):
                return {name: local(value) for name, value in url.items()}
            if not isinstance(url, str):
                return url
            parts = urlsplit(url)
            base = self.base_url.replace("http://", "ws://") if parts.scheme in ("ws", "wss") else self.base_url
            return base + parts.path

        return local(api_urls)

    # -- wire shapes ------------------------------------------------------------------------
    def exchange_info(self) -> dict[str, Any]:
        symbols = []
        for symbol, r in self.symbols.items():
            symbols.append({
                "symbol": symbol, "status": "TRADING", "baseAsset": r.base, "baseAssetPrecision": 8,
                "quoteAsset": r.quote, "quotePrecision": 8, "quoteAssetPrecision": 8, "baseCommissionPrecision": 8,
                "quoteCommissionPrecision": 8, "orderTypes": _ORDER_TYPES, "icebergAllowed": True,
                "ocoAllowed": True, "otoAllowed": True, "quoteOrderQtyMarketAllowed": True,
                "allowTrailingStop": True, "cancelReplaceAllowed": True, "amendAllowed": True,
                "isSpotTradingAllowed": True, "isMarginTradingAllowed": False,
                "filters": [
                    {"filterType": "PRICE_FILTER", "minPrice": r.min_price, "maxPrice": r.max_price,
                     "tickSize": r.tick_size},
                    {"filterType": "LOT_SIZE", "minQty": r.min_qty, "maxQty": r.max_qty, "stepSize": r.step_size},
                    {"filterType": "ICEBERG_PARTS", "limit": 10},
                    {"filterType": "MARKET_LOT_SIZE", "minQty": "0", "maxQty": r.max_qty, "stepSize": "0"},
                    {"filterType": "NOTIONAL", "minNotional": r.min_notional, "applyMinToMarket": True,
                     "maxNotional": r.max_notional, "applyMaxToMarket": False, "avgPriceMins": 5},
                    {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
                ],
                "permissions": [], "permissionSets": [["SPOT"]], "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
                "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
            })
        return {"timezone": "UTC", "serverTime": self.server_time_ms(),
                "rateLimits": [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                                "limit": 6000},
                               {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100}],
                "exchangeFilters": [], "symbols": symbols}

    def order_json(self, order: BookOrder) -> dict[str, Any]:
        return {
            "symbol": order.symbol, "orderId": order.number, "orderListId": -1,
            "clientOrderId": order.client_order_id, "price": _fmt(order.limit_price),
            "origQty": _fmt(order.qty), "executedQty": _fmt(order.filled_qty),
            "cummulativeQuoteQty": _fmt(order.filled_notional), "status": _STATUS[order.status],
            "timeInForce": order.time_in_force, "type": self._wire_type(order), "side": order.side.upper(),
            "stopPrice": _fmt(order.stop_price), "icebergQty": _fmt(ZERO), "time": _ms(order.created_ns),
            "updateTime": _ms(order.updated_ns), "isWorking": order.order_type in ("market", "limit")
            or order.triggered, "workingTime": _ms(order.created_ns), "origQuoteOrderQty": _fmt(ZERO),
            "selfTradePreventionMode": "EXPIRE_MAKER",
        }

    @staticmethod
    def _wire_type(order: BookOrder) -> str:
        if order.post_only:
            return "LIMIT_MAKER"
        return {"market": "MARKET", "limit": "LIMIT", "stop": "STOP_LOSS", "stop_limit": "STOP_LOSS_LIMIT"}[
            order.order_type]

    def fill_json(self, fill: BookFill) -> dict[str, Any]:
        return {"price": _fmt(fill.price), "qty": _fmt(fill.qty), "commission": _fmt(fill.fee),
                "commissionAsset": self.quote_asset, "tradeId": self._trade_ids[fill.fill_id]}

    def trade_json(self, order: BookOrder, fill: BookFill) -> dict[str, Any]:
        return {"symbol": order.symbol, "id": self._trade_ids[fill.fill_id], "orderId": order.number,
                "orderListId": -1, "price": _fmt(fill.price), "qty": _fmt(fill.qty),
                "quoteQty": _fmt(fill.price * fill.qty), "commission": _fmt(fill.fee),
                "commissionAsset": self.quote_asset, "time": _ms(fill.ts_ns), "isBuyer": order.side == "buy",
                "isMaker": fill.maker, "isBestMatch": True}

    # -- the user data stream (WebSocket API, userDataStream.subscribe.signature) ------------------------
    def execution_report(self, order: BookOrder, event: str, fill: BookFill | None) -> dict[str, Any]:
        """Binance's executionReport for a book event (x: NEW, TRADE, CANCELED, EXPIRED, REJECTED)."""
        now = self.server_time_ms()
        execution = {"fill": "TRADE", NEW: "NEW", CANCELED: "CANCELED", EXPIRED: "EXPIRED",
                     REJECTED: "REJECTED"}[event]
        last_qty = fill.qty if fill else ZERO
        last_price = fill.price if fill else ZERO
        return {
            "e": "executionReport", "E": now, "s": order.symbol, "c": order.client_order_id,
            "S": order.side.upper(), "o": self._wire_type(order), "f": order.time_in_force, "q": _fmt(order.qty),
            "p": _fmt(order.limit_price), "P": _fmt(order.stop_price), "F": _fmt(ZERO), "g": -1,
            "C": order.client_order_id if event == CANCELED else "", "x": execution, "X": _STATUS[order.status],
            "r": "NONE", "i": order.number, "l": _fmt(last_qty), "z": _fmt(order.filled_qty), "L": _fmt(last_price),
            "n": _fmt(fill.fee if fill else ZERO), "N": self.quote_asset if fill else None,
            "T": _ms(fill.ts_ns) if fill else _ms(order.updated_ns),
            "t": self._trade_ids[fill.fill_id] if fill else -1, "I": order.number * 2 + len(order.fills),
            "w": order.is_open, "m": bool(fill and fill.maker), "M": False, "O": _ms(order.created_ns),
            "Z": _fmt(order.filled_notional), "Y": _fmt(last_qty * last_price), "Q": _fmt(ZERO),
            "W": _ms(order.created_ns), "V": "EXPIRE_MAKER",
        }

    def _on_book_event(self, order: BookOrder, event: str, fill: BookFill | None) -> None:
        if event not in (NEW, CANCELED, EXPIRED, REJECTED, "fill"):
            return
        report = self.execution_report(order, event, fill)
        if fill is not None and self.faults.take(BinanceFault.DROP_STREAM_BEFORE_FILL) is not None:
            self.schedule(self._drop_then_send(report))
            return
        times = 2 if fill is not None and self.faults.take(BinanceFault.DUPLICATE_FILL) is not None else 1
        for _ in range(times):
            self.schedule(self._broadcast(report))

    async def _broadcast(self, report: dict[str, Any]) -> None:
        import json

        self.sent.append(report)
        for ws, subscription in list(self._subscribers.items()):
            try:
                await ws.send_str(json.dumps({"subscriptionId": subscription, "event": report}))
            except (ConnectionError, RuntimeError):
                self._subscribers.pop(ws, None)

    async def _drop_then_send(self, report: dict[str, Any]) -> None:
        await self.on_disconnect_all()
        await self._broadcast(report)  # nobody is subscribed: the fill is lost to the stream, not to REST

    async def on_disconnect_all(self) -> None:
        sockets, self._subscribers = list(self._subscribers), {}
        for ws in sockets:
            await ws.close()

    def drop_stream(self) -> None:
        """Close every user data stream connection (ccxt raises on its pending watch; a new watch resubscribes)."""
        self.call(self.on_disconnect_all())

    def _ws_subscribe(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if params.get("apiKey") != self.key:
            return 401, {"code": -2014, "msg": "API-key format invalid."}
        if self.check_signature:
            payload = "&".join(f"{k}={params[k]}" for k in sorted(params) if k != "signature")
            expected = hmac.new(self.secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
            if not hmac.compare_digest(str(params.get("signature", "")), expected):
                return 400, {"code": -1022, "msg": "Signature for this request is not valid."}
        refused = self._timestamp_error(params)
        if refused is not None:
            return 400, {"code": refused[0], "msg": refused[1]}
        return 200, {}

    async def _ws_api(self, request: Any) -> Any:
        import json

        from aiohttp import WSMsgType, web

        ws = web.WebSocketResponse()
        await ws.prepare(request)
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    break
                try:
                    body = json.loads(msg.data)
                except ValueError:
                    await ws.send_str(json.dumps({"id": None, "status": 400,
                                                  "error": {"code": -1100, "msg": "Malformed request."}}))
                    continue
                rid, method, params = body.get("id"), body.get("method"), body.get("params") or {}
                if method == "userDataStream.subscribe.signature":
                    status, error = self._ws_subscribe(params)
                    if status != 200:
                        await ws.send_str(json.dumps({"id": rid, "status": status, "error": error}))
                        continue
                    subscription = self._subscriptions
                    self._subscriptions += 1
                    self._subscribers[ws] = subscription
                    self.subscribes += 1
                    reply = {"id": rid, "status": 200, "result": {"subscriptionId": subscription}}
                elif method == "ping":
                    reply = {"id": rid, "status": 200, "result": {}}
                elif method == "time":
                    reply = {"id": rid, "status": 200, "result": {"serverTime": self.server_time_ms()}}
                else:
                    reply = {"id": rid, "status": 400, "error": {"code": -1100, "msg": f"Unknown method {method!r}."}}
                await ws.send_str(json.dumps(reply))
        finally:
            self._subscribers.pop(ws, None)
        return ws

    def _number_trade(self, order: BookOrder, event: str, fill: BookFill | None) -> None:
        if fill is not None:
            self._trade_ids[fill.fill_id] = len(self._trade_ids) + 1

    def balances(self) -> dict[str, tuple[Decimal, Decimal]]:
        """asset -> (free, locked): open buys lock quote, open sells lock base."""
        book = self.book
        locked: dict[str, Decimal] = {}
        for order in book.open_orders():
            rules = self.symbols[order.symbol]
            if order.side == "buy":
                price = order.limit_price or order.stop_price or book.prices.get(order.symbol, (ZERO, ZERO))[1]
                locked[rules.quote] = locked.get(rules.quote, ZERO) + order.remaining * price
            else:
                locked[rules.base] = locked.get(rules.base, ZERO) + order.remaining
        totals = {self.quote_asset: book.cash}
        for symbol, rules in self.symbols.items():
            totals[rules.base] = book.positions.get(symbol, ZERO)
        return {asset: (total - locked.get(asset, ZERO), locked.get(asset, ZERO)) for asset, total in totals.items()}

    def account_json(self) -> dict[str, Any]:
        with self.book.lock:
            balances = [{"asset": a, "free": _fmt(free), "locked": _fmt(locked)}
                        for a, (free, locked) in sorted(self.balances().items())]
        bps = int(self.book.fee_rate * 10000)
        rate = _fmt(self.book.fee_rate)
        return {"makerCommission": bps, "takerCommission": bps, "buyerCommission": 0, "sellerCommission": 0,
                "commissionRates": {"maker": rate, "taker": rate, "buyer": _fmt(ZERO), "seller": _fmt(ZERO)},
                "canTrade": True, "canWithdraw": True, "canDeposit": True, "brokered": False,
                "requireSelfTradePrevention": False, "preventSor": False, "updateTime": self.server_time_ms(),
                "accountType": "SPOT", "balances": balances, "permissions": ["SPOT"], "uid": 354937868}

    # -- HTTP -----------------------------------------------------------------------------------
    def build_app(self) -> Any:
        from aiohttp import web

        app = web.Application(middlewares=[self._middleware()])
        app.router.add_get("/api/v3/ping", self._ping)
        app.router.add_get("/api/v3/time", self._time)
        app.router.add_get("/api/v3/exchangeInfo", self._exchange_info)
        app.router.add_get("/api/v3/ticker/bookTicker", self._book_ticker)
        app.router.add_post("/api/v3/order", self._new_order)
        app.router.add_get("/api/v3/order", self._query_order)
        app.router.add_delete("/api/v3/order", self._cancel_order)
        app.router.add_get("/api/v3/openOrders", self._open_orders)
        app.router.add_get("/api/v3/allOrders", self._all_orders)
        app.router.add_get("/api/v3/myTrades", self._my_trades)
        app.router.add_get("/api/v3/account", self._account)
        app.router.add_get("/fapi/v1/premiumIndex", self._premium_index)
        app.router.add_get("/ws-api/v3", self._ws_api)
        return app

    @staticmethod
    def _error(status: int, code: int, msg: str, headers: dict[str, str] | None = None) -> Any:
        from aiohttp import web

        return web.json_response({"code": code, "msg": msg}, status=status, headers=headers)

    @staticmethod
    def _json(body: Any) -> Any:
        from aiohttp import web

        return web.json_response(body)

    def _middleware(self) -> Any:
        from aiohttp import web

        signed_paths = {"/api/v3/order", "/api/v3/openOrders", "/api/v3/allOrders", "/api/v3/myTrades",
                        "/api/v3/account"}

        @web.middleware
        async def middleware(request: Any, handler: Any) -> Any:
            self.requests.append((request.method, request.path))
            limited = self.faults.take(BinanceFault.RATE_LIMIT)
            if limited is not None:
                return self._error(429, -1003, "Too many requests; current limit of IP is 6000 requests per "
                                   "minute. Please use WebSocket Streams for live updates to avoid polling the API.",
                                   {"Retry-After": str(limited.get("retry_after", 1))})
            body = (await request.text()) if request.can_read_body else ""
            raw = "&".join(part for part in (request.query_string, body) if part)
            params = dict(parse_qsl(raw, keep_blank_values=True))
            request[_PARAMS] = params
            if request.path in signed_paths:
                refused = self._check_signed(request, raw, params)
                if refused is not None:
                    return refused
            return await handler(request)

        return middleware

    def _timestamp_error(self, params: dict[str, Any]) -> tuple[int, str] | None:
        try:
            stamp = int(params["timestamp"])
            window = int(params.get("recvWindow", DEFAULT_RECV_WINDOW_MS))
        except (KeyError, ValueError):
            return -1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed."
        now = self.server_time_ms()
        if stamp > now + 1000:
            return -1021, "Timestamp for this request was 1000ms ahead of the server's time."
        if now - stamp > window:
            return -1021, "Timestamp for this request is outside of the recvWindow."
        return None

    def _check_signed(self, request: Any, raw: str, params: dict[str, str]) -> Any:
        if request.headers.get("X-MBX-APIKEY") != self.key:
            return self._error(401, -2014, "API-key format invalid.")
        if self.check_signature:
            payload, _, signature = raw.rpartition("&signature=")
            expected = hmac.new(self.secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
            if not signature or not hmac.compare_digest(signature, expected):
                return self._error(400, -1022, "Signature for this request is not valid.")
        refused = self._timestamp_error(params)
        return None if refused is None else self._error(400, *refused)

    async def _ping(self, request: Any) -> Any:
        return self._json({})

    async def _time(self, request: Any) -> Any:
        return self._json({"serverTime": self.server_time_ms()})

    async def _exchange_info(self, request: Any) -> Any:
        return self._json(self.exchange_info())

    async def _book_ticker(self, request: Any) -> Any:
        """The touch of one symbol (``symbol``) or of every symbol with a price (ccxt's fetch_bids_asks)."""
        symbol, refused = self._optional_symbol(request[_PARAMS])
        if refused is not None:
            return refused
        with self.book.lock:
            prices = dict(self.book.prices)
        rows = [{"symbol": s, "bidPrice": _fmt(bid), "bidQty": "1.00000000", "askPrice": _fmt(ask),
                 "askQty": "1.00000000"} for s, (bid, ask) in sorted(prices.items()) if symbol in (None, s)]
        if symbol is not None:
            return self._json(rows[0]) if rows else self._error(400, -1121, "Invalid symbol.")
        return self._json(rows)

    def _optional_symbol(self, params: dict[str, str]) -> tuple[str | None, Any]:
        """(the ``symbol`` parameter or None for every symbol, None) or (None, the -1121 answer for one not listed)."""
        symbol = params.get("symbol")
        if symbol is not None and symbol not in self.symbols:
            return None, self._error(400, -1121, "Invalid symbol.")
        return symbol, None

    def _symbol(self, params: dict[str, str]) -> str | Any:
        symbol = params.get("symbol")
        if symbol is None:
            return self._error(400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or "
                               "malformed.")
        if symbol not in self.symbols:
            return self._error(400, -1121, "Invalid symbol.")
        return symbol

    async def _new_order(self, request: Any) -> Any:
        params = request[_PARAMS]
        order = self._check_new_order(params)
        if not isinstance(order, BookOrder):
            return order
        rejected = self.faults.take(BinanceFault.REJECT)
        if rejected is not None:
            return self._error(400, rejected.get("code", -2010),
                               rejected.get("msg", "Account has insufficient balance for requested action."))
        hang = self.faults.take(BinanceFault.HANG_AFTER_ACCEPT) is not None
        drop = self.faults.take(BinanceFault.DROP_AFTER_ACCEPT) is not None
        with self.book.lock:
            held = self.book.get_by_client_id(order.client_order_id)
            if held is not None and held.is_open:
                return self._error(400, -2010, "Duplicate order sent.")
            refused = self._check_balance(order)
            if refused is not None:
                return refused
            self._add(order, params)
            reply = self._order_reply(order, params.get("newOrderRespType", "ACK"))
        if hang:
            await self.hold()
            return self._error(503, -1007, "Timeout waiting for response from backend server. Send status unknown; "
                               "execution status unknown.")
        if drop:
            request.transport.close()
        return self._json(reply)

    def _add(self, order: BookOrder, params: dict[str, str]) -> None:
        book = self.book
        tif = order.time_in_force
        if tif == "FOK" and order.order_type == "limit":
            # all or nothing: only when the touch crosses and one execution can take it all
            bid, ask = book.prices.get(order.symbol, (None, None))
            touch = ask if order.side == "buy" else bid
            crosses = touch is not None and (touch <= order.limit_price if order.side == "buy"
                                             else touch >= order.limit_price)
            whole = book.max_fill_qty is None or book.max_fill_qty >= order.qty
            book.add(order, match=crosses and whole, reuse_closed_ids=True)
        else:
            book.add(order, reuse_closed_ids=True)
        if tif in ("IOC", "FOK") and order.is_open:
            book.cancel(order, status=EXPIRED)

    def _order_reply(self, order: BookOrder, kind: str) -> dict[str, Any]:
        ack = {"symbol": order.symbol, "orderId": order.number, "orderListId": -1,
               "clientOrderId": order.client_order_id, "transactTime": _ms(order.created_ns)}
        if kind == "ACK":
            return ack
        full = self.order_json(order)
        reply = {**ack, **{k: full[k] for k in ("price", "origQty", "executedQty", "origQuoteOrderQty",
                                                "cummulativeQuoteQty", "status", "timeInForce", "type", "side",
                                                "workingTime", "selfTradePreventionMode")}}
        if order.stop_price is not None:
            reply["stopPrice"] = full["stopPrice"]
        if kind == "FULL":
            reply["fills"] = [self.fill_json(f) for f in order.fills]
        return reply

    def _check_new_order(self, params: dict[str, str]) -> BookOrder | Any:
        symbol = self._symbol(params)
        if not isinstance(symbol, str):
            return symbol
        rules = self.symbols[symbol]
        side = params.get("side", "").upper()
        if side not in ("BUY", "SELL"):
            return self._error(400, -1100, f"Illegal characters found in parameter 'side'; got {side!r}.")
        wire_type = params.get("type", "").upper()
        if wire_type not in _TYPES:
            return self._error(400, -1116, "Invalid orderType.")
        order_type = _TYPES[wire_type]
        tif = params.get("timeInForce")
        if order_type in ("limit", "stop_limit") and wire_type != "LIMIT_MAKER":
            if tif not in ("GTC", "IOC", "FOK"):
                return self._error(400, -1102, "Mandatory parameter 'timeInForce' was not sent, was empty/null, "
                                   "or malformed.")
        elif tif is not None:
            return self._error(400, -1106, "Parameter 'timeInForce' sent when not required.")
        try:
            qty = Decimal(params["quantity"])
            price = Decimal(params["price"]) if "price" in params else None
            stop = Decimal(params["stopPrice"]) if "stopPrice" in params else None
        except (KeyError, InvalidOperation):
            return self._error(400, -1102, "Mandatory parameter 'quantity' was not sent, was empty/null, or "
                               "malformed.")
        if order_type in ("limit", "stop_limit") and price is None:
            return self._error(400, -1102, "Mandatory parameter 'price' was not sent, was empty/null, or malformed.")
        if order_type in ("stop", "stop_limit") and stop is None:
            return self._error(400, -1102, "Mandatory parameter 'stopPrice' was not sent, was empty/null, or "
                               "malformed.")
        for value in filter(None, (price, stop)):
            if (value < Decimal(rules.min_price) or value > Decimal(rules.max_price)
                    or value % Decimal(rules.tick_size)):
                return self._error(400, -1013, "Filter failure: PRICE_FILTER")
        if qty < Decimal(rules.min_qty) or qty > Decimal(rules.max_qty) or qty % Decimal(rules.step_size):
            return self._error(400, -1013, "Filter failure: LOT_SIZE")
        reference = price or stop or self.book.last_price(symbol)
        if reference is not None:
            notional = qty * reference
            if notional < Decimal(rules.min_notional) or (order_type != "market"
                                                          and notional > Decimal(rules.max_notional)):
                return self._error(400, -1013, "Filter failure: NOTIONAL")
        if order_type == "market" and symbol not in self.book.prices:
            return self._error(400, -2010, "Market is closed.")
        if wire_type == "LIMIT_MAKER":
            bid, ask = self.book.prices.get(symbol, (None, None))
            if (side == "BUY" and ask is not None and price >= ask) or (side == "SELL" and bid is not None
                                                                        and price <= bid):
                return self._error(400, -2010, "Order would immediately match and take.")
        client_order_id = params.get("newClientOrderId") or "x-" + uuid.uuid4().hex[:22]
        if len(client_order_id) > 36:
            return self._error(400, -1100, "Illegal characters found in parameter 'newClientOrderId'; legal range "
                               "is '^[\\.A-Z\\:/a-z0-9_-]{1,36}$'.")
        return BookOrder(order_id=str(uuid.uuid4()), client_order_id=client_order_id, symbol=symbol,
                         side=side.lower(), order_type=order_type, time_in_force=tif or "GTC", qty=qty,
                         limit_price=price, stop_price=stop, post_only=wire_type == "LIMIT_MAKER")

    def _check_balance(self, order: BookOrder) -> Any:
        rules = self.symbols[order.symbol]
        free = self.balances()
        if order.side == "buy":
            price = order.limit_price or order.stop_price or self.book.prices[order.symbol][1]
            need, have = order.qty * price * (1 + self.book.fee_rate), free[rules.quote][0]
        else:
            need, have = order.qty, free[rules.base][0]
        if need > have:
            return self._error(400, -2010, "Account has insufficient balance for requested action.")
        return None

    def _find(self, params: dict[str, str]) -> BookOrder | None:
        symbol = params.get("symbol")
        if "orderId" in params:
            try:
                number = int(params["orderId"])
            except ValueError:
                return None
            found = [o for o in self.book.orders.values() if o.number == number]
            order = found[0] if found else None
        else:
            order = self.book.get_by_client_id(params.get("origClientOrderId", ""))
        return order if order is not None and order.symbol == symbol else None

    async def _query_order(self, request: Any) -> Any:
        params = request[_PARAMS]
        symbol = self._symbol(params)
        if not isinstance(symbol, str):
            return symbol
        with self.book.lock:
            order = self._find(params)
            if order is None:
                return self._error(400, -2013, "Order does not exist.")
            return self._json(self.order_json(order))

    async def _cancel_order(self, request: Any) -> Any:
        params = request[_PARAMS]
        symbol = self._symbol(params)
        if not isinstance(symbol, str):
            return symbol
        with self.book.lock:
            order = self._find(params)
            if order is not None and order.is_open and self.faults.take(BinanceFault.FILL_ON_CANCEL) is not None:
                bid, ask = self.book.prices.get(order.symbol, (None, None))
                price = order.limit_price or (ask if order.side == "buy" else bid)
                if price is None:
                    raise SandboxError(f"fill on cancel of {order.client_order_id}: {symbol} has no price; set one")
                self.book.fill(order, order.remaining, price, maker=True)
            if order is None or not order.is_open:
                return self._error(400, -2011, "Unknown order sent.")
            self.book.cancel(order)
            reply = self.order_json(order)
        reply = {"symbol": symbol, "origClientOrderId": order.client_order_id, "orderId": order.number,
                 "orderListId": -1, "clientOrderId": params.get("newClientOrderId") or "cancel" + uuid.uuid4().hex[:16],
                 "transactTime": _ms(order.canceled_ns),
                 **{k: reply[k] for k in ("price", "origQty", "executedQty", "cummulativeQuoteQty", "status",
                                          "timeInForce", "type", "side", "selfTradePreventionMode")}}
        return self._json(reply)

    async def _open_orders(self, request: Any) -> Any:
        symbol, refused = self._optional_symbol(request[_PARAMS])
        if refused is not None:
            return refused
        with self.book.lock:
            orders = sorted(self.book.open_orders(symbol), key=lambda o: o.number)
            return self._json([self.order_json(o) for o in orders])

    async def _all_orders(self, request: Any) -> Any:
        params = request[_PARAMS]
        symbol = self._symbol(params)
        if not isinstance(symbol, str):
            return symbol
        with self.book.lock:
            orders = sorted((o for o in self.book.orders.values() if o.symbol == symbol), key=lambda o: o.number)
            return self._json([self.order_json(o) for o in orders][-int(params.get("limit", 500)):])

    async def _my_trades(self, request: Any) -> Any:
        params = request[_PARAMS]
        symbol = self._symbol(params)
        if not isinstance(symbol, str):
            return symbol
        with self.book.lock:
            ids = self._trade_ids
            trades = [(o, f) for o in self.book.orders.values() if o.symbol == symbol for f in o.fills]
            if "orderId" in params:
                trades = [(o, f) for o, f in trades if str(o.number) == params["orderId"]]
            if "fromId" in params:
                trades = [(o, f) for o, f in trades if ids[f.fill_id] >= int(params["fromId"])]
            if "startTime" in params:
                trades = [(o, f) for o, f in trades if _ms(f.ts_ns) >= int(params["startTime"])]
            if "endTime" in params:
                trades = [(o, f) for o, f in trades if _ms(f.ts_ns) <= int(params["endTime"])]
            trades.sort(key=lambda of: ids[of[1].fill_id])
            return self._json([self.trade_json(o, f) for o, f in trades][:int(params.get("limit", 500))])

    async def _account(self, request: Any) -> Any:
        return self._json(self.account_json())

    async def _premium_index(self, request: Any) -> Any:
        params = request[_PARAMS]

        def entry(symbol: str) -> dict[str, Any]:
            f = self.funding[symbol]
            return {"symbol": symbol, "markPrice": _fmt(f["mark"]), "indexPrice": _fmt(f["mark"]),
                    "estimatedSettlePrice": _fmt(f["mark"]), "lastFundingRate": _fmt(f["rate"]),
                    "interestRate": "0.00010000", "nextFundingTime": f["next"], "time": self.server_time_ms()}

        symbol = params.get("symbol")
        if symbol is None:
            return self._json([entry(s) for s in sorted(self.funding)])
        if symbol not in self.funding:
            return self._error(400, -1121, "Invalid symbol.")
        return self._json(entry(symbol))


def main(argv: list[str] | None = None) -> int:
    from tradebook.sandbox._server import serve_from_command_line

    return serve_from_command_line(BinanceSandbox(), argv, "python -m tradebook.sandbox.binance")


if __name__ == "__main__":
    raise SystemExit(main())
