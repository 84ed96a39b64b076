"""A crypto exchange account through ccxt: Binance spot first; Coinbase and Kraken by configuration.

One rule: every order goes out under tradebook's own client order id, and everything the
adapter learns about an order (the submit reply, the user data stream, a REST poll) goes
through one tracker per client id that emits each lifecycle event once: accepted once, each
fill once by the exchange's trade id, a final cancel or expiry once and after the fills
the exchange reports for the order. So a duplicate stream message, a fill seen by both the
stream and REST, or a poll after a reconnect never doubles anything.

Where events come from:

- ccxt.pro's ``watch_orders`` (Binance's user data stream) when the exchange has it. A
  dropped stream is not resubscribed by ccxt: the stream task watches again with backoff
  and, once watching, asks REST for every tracked order (fills made during the gap are
  recovered once).
- a REST poller (``fetch_order`` and ``fetch_my_trades`` by order id) for every order not
  final: the only source on exchanges without a stream, a backstop on those with one.

Failures (:func:`~tradebook.venues.ccxt_mapping.venue_error_from_ccxt`): a timeout or a
dropped reply is :class:`~tradebook.errors.OutcomeUnknownError` (never resent; the
tracker keeps asking by client id, and so does the order manager's reconciliation); a
429 waits its ``Retry-After`` and tries again within ``rate_limit_max_wait_s``, then is a
rejection coded ``rate_limited``; -1021 (clock skew) resynchronises the clock and retries
once. Replace is cancel + new under the same client id (Binance spot reuses a client id
once its order is closed): the fills of the cancelled part stay with the order.

Credentials come from the constructor or :meth:`CcxtVenue.from_env` and never appear in
``repr``, logs or error messages.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from tradebook.errors import ConfigError, NotSentError, VenueError, VenueRejectedError
from tradebook.model.instruments import Instrument, Side
from tradebook.model.orders import Fill, OrderEvent, OrderEventType, OrderIntent, OrderStatus, OrderType
from tradebook.model.time import now_ns
from tradebook.venues import ccxt_mapping as cm
from tradebook.venues.base import AccountState, Capability, EventHandler, VenueHealth, VenueOrderState, VenuePort

log = logging.getLogger(__name__)

E, S = OrderEventType, OrderStatus
_ZERO = Decimal(0)
_FINAL_EVENTS = {S.CANCELLED: E.CANCELLED, S.EXPIRED: E.EXPIRED, S.REJECTED: E.REJECTED}
MAX_POLL_FAILURES = 3
STREAM_CACHE_CHECK_S = 0.2  # how often ccxt.pro's order cache is read for updates no watch returned
# a Binance spot account: load_markets reads exchangeInfo for spot only (no currencies, margin or futures endpoints)
_BINANCE_OPTIONS = {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False, "fetchMargins": False}


def _one_server(base: str, api_urls: Any) -> Any:
    """ccxt's ``urls['api']`` table with every host replaced by ``base`` (paths kept; ws URLs stay ws)."""
    if isinstance(api_urls, dict):
        return {name: _one_server(base, value) for name, value in api_urls.items()}
    if not isinstance(api_urls, str):
        return api_urls
    parts = urlsplit(api_urls)
    root = base.replace("https://", "wss://").replace("http://", "ws://") if parts.scheme in ("ws", "wss") else base
    return root + parts.path


def _report_key(order: Mapping[str, Any]) -> tuple[Any, ...]:
    """What tells one stream update of an order from the next (execution type, trade id, status, filled)."""
    info = order.get("info") or {}
    return (info.get("x"), info.get("t"), info.get("X"), info.get("z"), order.get("status"), order.get("filled"))


@dataclass
class FundingRate:
    """A perpetual's funding: ``rate`` per interval, the mark price, the next funding time (UTC ns)."""

    symbol: str
    rate: Decimal
    mark_price: Decimal | None
    next_funding_ns: int | None
    source: str


@dataclass
class _Track:
    """What the adapter has told the order manager about one client order id (see the module docstring)."""

    client_order_id: str
    symbol: str
    instrument_id: str
    side: Side
    quantity: Decimal
    created_ms: int
    venue_order_id: str | None = None
    old_legs: list[str] = field(default_factory=list)  # venue ids of legs ended by a replace
    old_legs_filled: Decimal = _ZERO
    accepted: bool = False
    fill_ids: set[str] = field(default_factory=set)
    filled: Decimal = _ZERO
    final: bool = False  # cancelled, expired or rejected told (a filled order ends with its last fill)
    replacing: bool = False
    unknown_since_ns: int | None = None  # submit outcome unknown, not found yet
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def done(self) -> bool:
        return self.final or (self.filled >= self.quantity > 0)

    @property
    def legs(self) -> list[str]:
        return self.old_legs + ([self.venue_order_id] if self.venue_order_id else [])


class CcxtVenue(VenuePort):
    """One spot account at a ccxt exchange (``binance`` first; ``coinbase``, ``kraken`` by ``exchange_id``).

    ``symbols``: the ccxt symbols traded (``"BTC/USDT"``); instruments are named
    ``<market id>.<EXCHANGE>`` (``BTCUSDT.BINANCE``). ``api_url``: one server for every
    endpoint (``http://127.0.0.1:PORT``, a local sandbox), or ``api_urls``: a mapping that
    replaces ``exchange.urls['api']`` or a function of it (``BinanceSandbox.ccxt_urls``). ``use_stream``: watch the user data stream
    (ccxt.pro) where the exchange has one.
    """

    def __init__(self, exchange_id: str = "binance", *, api_key: str, secret: str, symbols: Sequence[str],
                 account_id: str | None = None, password: str | None = None,
                 api_urls: Mapping[str, Any] | Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                 api_url: str | None = None,
                 live: bool = True, testnet: bool = False, use_stream: bool = True,
                 poll_interval_s: float = 1.0, stream_poll_interval_s: float = 10.0,
                 request_timeout_s: float = 10.0, rate_limit_max_wait_s: float = 30.0,
                 reconnect_backoff_s: tuple[float, float] = (0.5, 30.0), order_visibility_grace_s: float = 2.0,
                 options: Mapping[str, Any] | None = None) -> None:
        if not symbols:
            raise ConfigError(f"CcxtVenue({exchange_id!r}) needs the symbols it trades, e.g. ['BTC/USDT']")
        if not api_key or not secret:
            raise ConfigError(f"CcxtVenue({exchange_id!r}) needs an API key and secret "
                              f"(from_env reads TRADEBOOK_CCXT_{exchange_id.upper()}_API_KEY and _SECRET)")
        for name, value in (("poll_interval_s", poll_interval_s), ("stream_poll_interval_s", stream_poll_interval_s),
                            ("request_timeout_s", request_timeout_s)):
            if not value > 0:
                raise ConfigError(f"CcxtVenue {name} must be positive, got {value!r}")
        self.exchange_id = exchange_id
        self.name = exchange_id
        self.account_id = account_id or exchange_id
        self.is_live = live and not testnet
        self.symbols = list(symbols)
        self.venue_suffix = exchange_id.upper()
        self.use_stream = use_stream
        self.poll_interval_s = poll_interval_s
        self.stream_poll_interval_s = stream_poll_interval_s
        self.request_timeout_s = request_timeout_s
        self.rate_limit_max_wait_s = rate_limit_max_wait_s
        self.reconnect_backoff_s = reconnect_backoff_s
        self.order_visibility_grace_ns = int(order_visibility_grace_s * 1e9)
        if api_urls is not None and api_url is not None:
            raise ConfigError("give api_urls (the whole table) or api_url (one server for every entry), not both")
        if api_url is not None:
            api_urls = partial(_one_server, api_url.rstrip("/"))
        self._api_urls = api_urls
        self._testnet = testnet
        self._options = dict(options) if options is not None else (
            dict(_BINANCE_OPTIONS) if exchange_id == "binance" else {})
        # kept out of every repr and message (see _secrets)
        self.__credentials = (api_key, secret, password)
        self.exchange: Any = None
        self.capabilities = frozenset({Capability.FRACTIONAL})
        self._on_event: EventHandler | None = None
        self._tracks: dict[str, _Track] = {}
        self._coid_by_venue_id: dict[str, str] = {}
        self._tasks: list[asyncio.Task] = []
        self._connected = False
        self._stream_ok = False
        self._limited_until = 0.0  # monotonic time before which no request goes (a 429's Retry-After)
        self._last_error: str = ""
        self._poll_failures = 0  # REST polls failed in a row (health fails from MAX_POLL_FAILURES)
        self._handled: dict[str, tuple[Any, ...]] = {}  # venue order id -> the last stream update handled
        self.reconnects = 0  # user data stream reconnections (for health and tests)
        self.recovered_fills = 0  # fills first learned by REST (poll or reconnect), not from the stream

    @classmethod
    def from_env(cls, exchange_id: str = "binance", *, environ: Mapping[str, str] | None = None,
                 **options: Any) -> CcxtVenue:
        """A CcxtVenue with its credentials from the environment, never from a file.

        ``TRADEBOOK_CCXT_<EXCHANGE>_API_KEY`` and ``_SECRET`` (required), ``_PASSWORD`` (where
        the exchange has one); optional ``_SYMBOLS`` (comma-separated ccxt symbols),
        ``_ACCOUNT``, ``_API_URL`` (a local server) and ``_TESTNET`` (true: the exchange's
        test network). Keyword options go to the constructor and win over the environment.
        """
        env = os.environ if environ is None else environ
        prefix = f"TRADEBOOK_CCXT_{exchange_id.upper()}_"
        missing = [prefix + n for n in ("API_KEY", "SECRET") if not env.get(prefix + n)]
        if missing:
            raise ConfigError(f"set {' and '.join(missing)} in the environment for the {exchange_id} account "
                              "(credentials are read only from the environment)")
        settings: dict[str, Any] = {"password": env.get(prefix + "PASSWORD") or None,
                                    "account_id": env.get(prefix + "ACCOUNT") or None,
                                    "api_url": env.get(prefix + "API_URL") or None}
        if env.get(prefix + "SYMBOLS"):
            settings["symbols"] = [s.strip() for s in env[prefix + "SYMBOLS"].split(",") if s.strip()]
        testnet = (env.get(prefix + "TESTNET") or "false").strip().lower()
        if testnet not in ("true", "false", "1", "0", "yes", "no"):
            raise ConfigError(f"{prefix}TESTNET={testnet!r}: expected true or false")
        settings["testnet"] = testnet in ("true", "1", "yes")
        settings.update(options)
        if not settings.get("symbols"):
            raise ConfigError(f"the {exchange_id} venue needs the symbols it trades: venues.{exchange_id}.options."
                              f"symbols or {prefix}SYMBOLS, e.g. BTC/USDT,ETH/USDT")
        return cls(exchange_id, api_key=env[prefix + "API_KEY"], secret=env[prefix + "SECRET"], **settings)

    def __repr__(self) -> str:
        state = "connected" if self._connected else "not connected"
        return (f"CcxtVenue({self.exchange_id!r}, account_id={self.account_id!r}, symbols={self.symbols!r}, "
                f"live={self.is_live}, {state})")

    # -- the connection -------------------------------------------------------------------------------
    def _make_exchange(self) -> Any:
        import ccxt.async_support as ccxt_async

        streaming = False
        factory = None
        if self.use_stream:
            try:
                import ccxt.pro as ccxt_pro

                factory = getattr(ccxt_pro, self.exchange_id, None)
                streaming = factory is not None
            except ImportError:  # pragma: no cover - ccxt ships pro since 4.x
                factory = None
        if factory is None:
            factory = getattr(ccxt_async, self.exchange_id, None)
        if factory is None:
            raise ConfigError(f"ccxt has no exchange {self.exchange_id!r}; e.g. binance, coinbase, kraken")
        key, secret, password = self.__credentials
        config: dict[str, Any] = {"apiKey": key, "secret": secret, "enableRateLimit": True,
                                  "timeout": int(self.request_timeout_s * 1000), "options": dict(self._options)}
        if password:
            config["password"] = password
        exchange = factory(config)
        exchange.enableLastJsonResponse = True  # the exchange's own error code, which some ccxt messages leave out
        if self._testnet:
            exchange.set_sandbox_mode(True)
        if self._api_urls is not None:
            urls = exchange.urls["api"]
            exchange.urls["api"] = self._api_urls(urls) if callable(self._api_urls) else dict(self._api_urls)
        streaming = streaming and bool(exchange.has.get("watchOrders"))
        if streaming:
            self.capabilities = self.capabilities | {Capability.STREAMING_FILLS}
        return exchange, streaming

    async def connect(self, on_event: EventHandler, *, on_events: Any = None) -> None:
        """Load the markets, check the keys (one balance read), start the stream and the poller."""
        self._on_event = on_event
        if self.exchange is None:
            self.exchange, streaming = self._make_exchange()
        else:
            streaming = Capability.STREAMING_FILLS in self.capabilities
        try:
            await self._call(self.exchange.load_markets, what="load markets")
            await self._call(self.exchange.fetch_balance, what="read the balance")
        except VenueError:
            await self.exchange.close()
            self.exchange = None
            raise
        unknown = [s for s in self.symbols if s not in self.exchange.markets]
        if unknown:
            raise ConfigError(f"{self.exchange_id} lists no market {unknown}; it has e.g. "
                              f"{sorted(self.exchange.markets)[:10]}")
        self._connected = True
        if streaming:
            self._tasks.append(asyncio.create_task(self._stream_loop(), name=f"{self.name}-stream"))
        self._tasks.append(asyncio.create_task(self._poll_loop(), name=f"{self.name}-poll"))

    async def close(self) -> None:
        self._connected = False
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await asyncio.wait_for(task, 5)
            except (asyncio.CancelledError, asyncio.TimeoutError, Exception):  # noqa: BLE001 - closing anyway
                pass
        if self.exchange is not None:
            try:
                await asyncio.wait_for(self.exchange.close(), 5)
            except (asyncio.TimeoutError, Exception):  # noqa: BLE001 - closing anyway
                pass
            self.exchange = None

    async def health(self) -> VenueHealth:
        if not self._connected:
            return VenueHealth(False, f"{self.name}: not connected")
        wait = self._limited_until - time.monotonic()
        if wait > 0:
            return VenueHealth(False, f"{self.name}: rate limited for {wait:.1f} s more")
        if self._poll_failures >= MAX_POLL_FAILURES:
            return VenueHealth(False, f"{self.name}: {self._poll_failures} REST polls failed in a row "
                               f"({self._last_error})")
        if Capability.STREAMING_FILLS in self.capabilities and not self._stream_ok:
            return VenueHealth(True, f"{self.name}: connected; user data stream down, REST polling "
                               f"({self._last_error or 'reconnecting'})")
        return VenueHealth(True, f"{self.name}: connected" + (", user data stream up"
                                                             if self._stream_ok else ", polling"))

    def _secrets(self) -> tuple[str, ...]:
        return tuple(c for c in self.__credentials if c)

    async def _call(self, fn: Callable[..., Any], *args: Any, what: str, **kwargs: Any) -> Any:
        """One ccxt call: waits out a 429's Retry-After (within ``rate_limit_max_wait_s``), resyncs the clock
        once on -1021, and maps every other ccxt exception to the port's errors."""
        import ccxt

        deadline = time.monotonic() + self.rate_limit_max_wait_s
        resynced = False
        while True:
            wait = self._limited_until - time.monotonic()
            if wait > 0:
                if time.monotonic() + wait > deadline:
                    raise VenueRejectedError(f"{what}: rate limited for {wait:.1f} s more, beyond "
                                             f"{self.rate_limit_max_wait_s} s", code="rate_limited",
                                             venue_code="429")
                await asyncio.sleep(wait)
            try:
                return await fn(*args, **kwargs)
            except (ccxt.DDoSProtection, ccxt.RateLimitExceeded) as exc:
                retry_after = self._retry_after()
                self._limited_until = max(self._limited_until, time.monotonic() + retry_after)
                log.warning("%s: %s rate limited; waiting %.2f s", self.name, what, retry_after)
                if time.monotonic() + retry_after > deadline:
                    raise cm.venue_error_from_ccxt(exc, action=what, secrets=self._secrets()) from None
            except ccxt.InvalidNonce as exc:
                if resynced or not hasattr(self.exchange, "load_time_difference"):
                    raise cm.venue_error_from_ccxt(exc, action=what, secrets=self._secrets()) from None
                resynced = True
                log.warning("%s: %s refused for its timestamp; resynchronising the clock", self.name, what)
                try:
                    await self.exchange.load_time_difference()
                    self.exchange.options["adjustForTimeDifference"] = True
                except ccxt.BaseError as again:
                    raise cm.venue_error_from_ccxt(again, action=what, secrets=self._secrets()) from None
            except ccxt.BaseError as exc:
                self._last_error = f"{what}: {type(exc).__name__}"
                raise cm.venue_error_from_ccxt(exc, action=what, secrets=self._secrets(),
                                               venue_code=self._reply_code(exc)) from None

    def _reply_code(self, exc: BaseException) -> str | None:
        """The code in the reply that raised ``exc`` (read before any other request of this loop can answer)."""
        import ccxt

        if not isinstance(exc, ccxt.ExchangeError):
            return None
        reply = getattr(self.exchange, "last_json_response", None)
        code = reply.get("code") if isinstance(reply, dict) else None
        return None if code is None else str(code)

    def _retry_after(self) -> float:
        headers = getattr(self.exchange, "last_response_headers", None) or {}
        value = headers.get("Retry-After") or headers.get("retry-after")
        try:
            return max(float(value), 0.0)
        except (TypeError, ValueError):
            return 1.0

    def _require_connected(self, what: str) -> None:
        if not self._connected or self.exchange is None:
            raise NotSentError(f"{what}: {self.name} is not connected (call connect first)")

    # -- instruments and symbols ------------------------------------------------------------------------
    def instrument_id(self, symbol: str) -> str:
        return f"{self.exchange.market(symbol)['id']}.{self.venue_suffix}"

    def _symbol_for(self, instrument_id: str) -> str:
        for symbol in self.symbols:
            if self.instrument_id(symbol) == instrument_id:
                return symbol
        raise NotSentError(f"{self.name} trades {[self.instrument_id(s) for s in self.symbols]}, "
                           f"not {instrument_id!r}")

    async def instruments(self) -> list[Instrument]:
        """Each traded market's rules (tick, lot, minimum size and notional) from the exchange's market metadata."""
        from tradebook.data.instruments import instrument_from_dict

        self._require_connected("instruments")
        out = []
        for symbol in self.symbols:
            spec = cm.instrument_spec_from_ccxt_market(self.exchange.market(symbol), venue=self.venue_suffix)
            spec["description"] = f"{self.exchange_id} markets (load_markets): " + spec["description"]
            out.append(instrument_from_dict(spec))
        return out

    async def funding_rate(self, symbol: str) -> FundingRate:
        """The current funding rate of a perpetual (Binance: USD-M ``/fapi/v1/premiumIndex``)."""
        self._require_connected("funding_rate")
        market_id = symbol.replace("/", "").split(":")[0]
        if self.exchange_id == "binance":
            reply = await self._call(self.exchange.fapiPublicGetPremiumIndex, {"symbol": market_id},
                                     what=f"funding rate of {symbol}")
            parsed = self.exchange.parse_funding_rate(reply)
            source = "binance /fapi/v1/premiumIndex (lastFundingRate, markPrice, nextFundingTime)"
        else:
            parsed = await self._call(self.exchange.fetch_funding_rate, symbol, what=f"funding rate of {symbol}")
            source = f"{self.exchange_id} fetch_funding_rate"
        nxt = parsed.get("fundingTimestamp") or parsed.get("nextFundingTimestamp")
        return FundingRate(symbol, cm._decimal(parsed["fundingRate"]), cm._decimal(parsed.get("markPrice")),
                           None if nxt is None else int(nxt) * 1_000_000, source)

    # -- orders -----------------------------------------------------------------------------------------
    async def submit(self, intent: OrderIntent) -> None:
        coid = intent.client_order_id
        self._require_connected(f"submit {coid}")
        symbol = self._symbol_for(intent.instrument_id)
        try:
            args = cm.create_order_args(order_type=intent.order_type, side=intent.side, quantity=intent.quantity,
                                        time_in_force=intent.time_in_force, client_order_id=coid,
                                        limit_price=intent.limit_price, stop_price=intent.stop_price)
        except VenueError:
            raise
        except Exception as exc:  # VenueMappingError: refused here, nothing sent
            raise NotSentError(f"submit {coid}: {exc}") from None
        track = self._tracks.get(coid)
        if track is None or track.done:
            track = _Track(coid, symbol, intent.instrument_id, intent.side, intent.quantity,
                           created_ms=now_ns() // 1_000_000)
            self._tracks[coid] = track
        params = {k: (str(v) if isinstance(v, Decimal) else v) for k, v in args.params.items()}
        what = f"submit {coid} {intent.side} {intent.quantity} {symbol}"
        try:
            order = await self._call(self.exchange.create_order, symbol, args.type, args.side, float(args.amount),
                                     None if args.price is None else float(args.price), params, what=what)
        except VenueRejectedError as exc:
            if exc.code != "duplicate_client_id":
                self._tracks.pop(coid, None)
            raise
        except NotSentError:
            self._tracks.pop(coid, None)
            raise
        except VenueError:
            track.unknown_since_ns = now_ns()  # the poller keeps asking for it by client id
            raise
        async with track.lock:
            await self._observe(track, order, source="submit")

    async def cancel(self, client_order_id: str) -> None:
        self._require_connected(f"cancel {client_order_id}")
        track = await self._track_for(client_order_id)
        if track is None:
            raise VenueRejectedError(f"cancel {client_order_id}: {self.name} does not know the order",
                                     code="unknown_order")
        async with track.lock:
            reply = await self._cancel_leg(track, f"cancel {client_order_id}")
            await self._observe(track, reply, source="cancel")

    async def _cancel_leg(self, track: _Track, what: str) -> dict[str, Any]:
        """Cancel the current leg; -2011 on an order that just filled is told as fills and TOO_LATE_TO_CANCEL."""
        try:
            return await self._call(self.exchange.cancel_order, track.venue_order_id, track.symbol,
                                    {} if track.venue_order_id else {"origClientOrderId": track.client_order_id},
                                    what=what)
        except VenueRejectedError as exc:
            if exc.code != "unknown_order":
                raise
            # Binance answers -2011 to a cancel that met a fill: fetch before believing it gone
            order = await self._fetch_order(track)
            if order is None:
                raise
            await self._observe(track, order, source="cancel race")
            status = cm.order_status_from_ccxt_order(order)
            if status is S.CANCELLED:
                return order
            raise VenueRejectedError(f"{what}: too late, the order is {status} at {self.name}",
                                     code="too_late_to_cancel", venue_code=exc.venue_code) from None

    async def replace(self, client_order_id: str, *, quantity: Decimal | None = None,
                      limit_price: Decimal | None = None, stop_price: Decimal | None = None) -> None:
        """Cancel + new under the same client id (spot has no amend); REPLACED when the new leg is in."""
        what = f"replace {client_order_id}"
        self._require_connected(what)
        track = await self._track_for(client_order_id)
        if track is None:
            raise VenueRejectedError(f"{what}: {self.name} does not know the order", code="unknown_order")
        async with track.lock:
            old = await self._fetch_order(track)
            if old is None:
                raise VenueRejectedError(f"{what}: {self.name} does not know the order", code="unknown_order")
            total = quantity if quantity is not None else track.quantity
            track.replacing = True
            try:
                cancelled = await self._cancel_leg(track, what)
                await self._observe(track, cancelled, source="replace")
                await self._sync_fills(track)
            finally:
                track.replacing = False
            old_leg = track.venue_order_id
            remaining = total - track.filled
            order_type = cm.order_type_from_ccxt_order(old)
            new_limit = limit_price if limit_price is not None else cm._decimal(old.get("price") or None)
            new_stop = stop_price if stop_price is not None else cm._decimal(old.get("triggerPrice"))
            if order_type in (OrderType.MARKET, OrderType.STOP):
                new_limit = None
            if order_type in (OrderType.MARKET, OrderType.LIMIT):
                new_stop = None
            if remaining <= 0:
                await self._emit(track, OrderEvent(client_order_id, E.CANCELLED, now_ns(), now_ns(),
                                                   venue_order_id=old_leg,
                                                   reason=f"replace: nothing left above the {track.filled} filled"))
                track.final = True
                return
            info = old.get("info") or {}
            tif = cm.time_in_force_from_ccxt(old.get("timeInForce") or info.get("timeInForce") or "GTC")
            args = cm.create_order_args(order_type=order_type, side=track.side, quantity=remaining,
                                        time_in_force=tif, client_order_id=client_order_id,
                                        limit_price=new_limit, stop_price=new_stop)
            params = {k: (str(v) if isinstance(v, Decimal) else v) for k, v in args.params.items()}
            track.old_legs.append(old_leg)
            track.old_legs_filled = track.filled
            track.venue_order_id = None
            track.replacing = True
            try:
                order = await self._call(self.exchange.create_order, track.symbol, args.type, args.side,
                                         float(args.amount), None if args.price is None else float(args.price),
                                         params, what=f"{what} (new leg)")
            except VenueError as exc:
                track.replacing = False
                if isinstance(exc, VenueRejectedError) or isinstance(exc, NotSentError):
                    # the old leg is cancelled and the new one refused: the order ends cancelled
                    await self._emit(track, OrderEvent(client_order_id, E.CANCELLED, now_ns(), now_ns(),
                                                       venue_order_id=old_leg,
                                                       reason=f"replace: old terms cancelled, new refused: {exc}"))
                    track.final = True
                raise
            track.replacing = False
            track.venue_order_id = str(order["id"])
            self._coid_by_venue_id[track.venue_order_id] = client_order_id
            track.quantity = total
            ts = now_ns()
            await self._emit(track, OrderEvent(client_order_id, E.REPLACED, ts, ts, venue_order_id=track.venue_order_id,
                                               quantity=total, limit_price=new_limit, stop_price=new_stop,
                                               reason="cancel + new"))
            await self._observe(track, order, source="replace")

    async def order_status(self, client_order_id: str) -> VenueOrderState | None:
        self._require_connected(f"order_status {client_order_id}")
        track = await self._track_for(client_order_id)
        if track is None:
            return None
        order = await self._fetch_order(track)
        if order is None:
            return None
        return self._state(track, order)

    def _state(self, track: _Track, order: Mapping[str, Any]) -> VenueOrderState:
        """The exchange's view of the order: its current leg, plus what legs ended by a replace filled."""
        leg_filled = cm._decimal(order.get("filled")) or _ZERO
        leg_amount = cm._decimal(order.get("amount")) or _ZERO
        status = cm.order_status_from_ccxt_order(order)
        if status is S.ACCEPTED and track.old_legs_filled > 0:
            status = S.PARTIALLY_FILLED
        return VenueOrderState(track.client_order_id, str(order["id"]), track.instrument_id, status,
                               track.old_legs_filled + leg_amount, track.old_legs_filled + leg_filled,
                               cm._decimal(order.get("average")), cm._decimal(order.get("price") or None),
                               cm._decimal(order.get("triggerPrice")))

    async def open_orders(self) -> list[VenueOrderState]:
        self._require_connected("open_orders")
        out = []
        for symbol in self.symbols:
            for order in await self._call(self.exchange.fetch_open_orders, symbol, what=f"open orders {symbol}"):
                track = self._adopt(order, symbol)
                out.append(self._state(track, order))
        return out

    async def positions(self) -> dict[str, Decimal]:
        """Spot: the base asset's total balance of each traded market (held, free or in open sells)."""
        self._require_connected("positions")
        balance = await self._call(self.exchange.fetch_balance, what="positions (balance)")
        totals = balance.get("total") or {}
        out: dict[str, Decimal] = {}
        for symbol in self.symbols:
            base = self.exchange.market(symbol)["base"]
            amount = cm._decimal(totals.get(base)) or _ZERO
            if amount and self.instrument_id(symbol) not in out:
                out[self.instrument_id(symbol)] = amount
        return out

    async def account(self) -> AccountState:
        """Cash in the first traded market's quote asset; equity adds each base balance at its mid."""
        self._require_connected("account")
        balance = await self._call(self.exchange.fetch_balance, what="account (balance)")
        quote = self.exchange.market(self.symbols[0])["quote"]
        totals, free = balance.get("total") or {}, balance.get("free") or {}
        cash = cm._decimal(totals.get(quote)) or _ZERO
        equity = cash
        held = [s for s in self.symbols if (cm._decimal(totals.get(self.exchange.market(s)["base"])) or _ZERO)]
        if held:
            tickers = await self._call(self.exchange.fetch_bids_asks, held, what="account (prices)")
            for symbol in held:
                ticker = tickers.get(symbol) or {}
                bid, ask = cm._decimal(ticker.get("bid")), cm._decimal(ticker.get("ask"))
                mid = (bid + ask) / 2 if bid and ask else (bid or ask)
                if mid is None:
                    raise VenueRejectedError(f"account: {self.name} gave no price for {symbol}", code="venue_other")
                equity += cm._decimal(totals[self.exchange.market(symbol)["base"]]) * mid
        return AccountState(self.account_id, quote, cash, equity, cm._decimal(free.get(quote)) or _ZERO)

    async def fills(self, since_ns: int = 0) -> list[Fill]:
        """Every trade of the traded markets since ``since_ns`` (fetch_my_trades), under its client order id."""
        self._require_connected("fills")
        out = []
        ts = now_ns()
        for symbol in self.symbols:
            since = since_ns // 1_000_000
            seen: set[str] = set()
            while True:
                trades = await self._call(self.exchange.fetch_my_trades, symbol, since, 1000,
                                          what=f"fills of {symbol}")
                fresh = [t for t in trades if str(t["id"]) not in seen]
                for trade in fresh:
                    seen.add(str(trade["id"]))
                    coid = await self._coid_for(str(trade["order"]), symbol)
                    if coid is not None:
                        out.append(cm.fill_from_ccxt_trade(trade, client_order_id=coid,
                                                           instrument_id=self.instrument_id(symbol), ts_init_ns=ts))
                if len(trades) < 1000 or not fresh:
                    break
                since = max(int(t["timestamp"]) for t in trades)
        return sorted(out, key=lambda f: (f.ts_event_ns, f.fill_id))

    # -- lookups ------------------------------------------------------------------------------------------
    async def _track_for(self, client_order_id: str) -> _Track | None:
        """The tracker of an order; one placed before a restart is looked up by client id in each market."""
        track = self._tracks.get(client_order_id)
        if track is not None:
            return track
        for symbol in self.symbols:
            order = await self._fetch_by_client_id(client_order_id, symbol)
            if order is not None:
                return self._adopt(order, symbol)
        return None

    def _adopt(self, order: Mapping[str, Any], symbol: str) -> _Track:
        """Track an order first learned from the exchange (placed before a restart, or elsewhere).

        Its acceptance is not told again (the order manager knows it, or the order is not
        ours); an order already final is tracked as final: its fills reach the order manager
        through ``fills()`` in reconciliation. An open one is followed like our own.
        """
        coid = str(order.get("clientOrderId") or "")
        track = self._tracks.get(coid)
        if track is None:
            track = _Track(coid, symbol, self.instrument_id(symbol), cm.side_from_ccxt(order["side"]),
                           cm._decimal(order.get("amount")) or _ZERO, int(order.get("timestamp") or 0),
                           venue_order_id=str(order["id"]), accepted=True)
            if cm.order_status_from_ccxt_order(order) in (S.FILLED, S.CANCELLED, S.EXPIRED, S.REJECTED):
                track.final = True
            self._tracks[coid] = track
        if track.venue_order_id is None and not track.replacing:
            track.venue_order_id = str(order["id"])
        self._coid_by_venue_id[str(order["id"])] = coid
        return track

    async def _fetch_by_client_id(self, client_order_id: str, symbol: str) -> dict[str, Any] | None:
        """Binance answers a query by client id (origClientOrderId); elsewhere the open and recent orders are read."""
        what = f"order {client_order_id}"
        if self.exchange_id == "binance":
            try:
                return await self._call(self.exchange.fetch_order, None, symbol,
                                        {"origClientOrderId": client_order_id}, what=what)
            except VenueRejectedError as exc:
                if exc.code == "unknown_order":
                    return None
                raise
        orders = list(await self._call(self.exchange.fetch_open_orders, symbol, what=what))
        if self.exchange.has.get("fetchClosedOrders"):
            orders += await self._call(self.exchange.fetch_closed_orders, symbol, what=what)
        found = [o for o in orders if o.get("clientOrderId") == client_order_id]
        return max(found, key=lambda o: o.get("timestamp") or 0) if found else None

    async def _fetch_order(self, track: _Track) -> dict[str, Any] | None:
        if track.venue_order_id is not None:
            try:
                return await self._call(self.exchange.fetch_order, track.venue_order_id, track.symbol,
                                        what=f"order {track.client_order_id}")
            except VenueRejectedError as exc:
                if exc.code != "unknown_order":
                    raise
        order = await self._fetch_by_client_id(track.client_order_id, track.symbol)
        if order is not None and track.venue_order_id is None and not track.replacing:
            track.venue_order_id = str(order["id"])
            self._coid_by_venue_id[track.venue_order_id] = track.client_order_id
        return order

    async def _coid_for(self, venue_order_id: str, symbol: str) -> str | None:
        coid = self._coid_by_venue_id.get(venue_order_id)
        if coid is None:
            try:
                order = await self._call(self.exchange.fetch_order, venue_order_id, symbol,
                                         what=f"order {venue_order_id}")
            except VenueRejectedError:
                return None
            coid = order.get("clientOrderId")
            if coid:
                self._coid_by_venue_id[venue_order_id] = coid
        return coid

    # -- what the adapter tells: one path for every source --------------------------------------------------
    async def _emit(self, track: _Track, event: OrderEvent) -> None:
        handler = self._on_event
        if handler is None:
            return
        try:
            handler(event)
        except Exception:  # noqa: BLE001 - the receiver's failure must not stop the stream or the poller
            log.exception("%s: the event handler failed on %s %s", self.name, event.event_type,
                          event.client_order_id)

    async def _observe(self, track: _Track, order: Mapping[str, Any] | None, *, source: str,
                       fill: Fill | None = None) -> None:
        """Tell what ``order`` (the exchange's view of one leg) adds to what was told, once. Holds track.lock."""
        if order is None:
            return
        venue_id = str(order.get("id")) if order.get("id") is not None else None
        if venue_id is not None and venue_id in track.old_legs:
            fill = fill if fill is not None and fill.fill_id not in track.fill_ids else None
            if fill is not None:
                await self._tell_fill(track, fill, venue_id)
            return  # an ended leg adds only its fills (its cancel is the replace's)
        if track.replacing and venue_id != track.venue_order_id:
            return  # the new leg of a replace in flight: told once the replace is answered
        if venue_id is not None and track.venue_order_id is None:
            track.venue_order_id = venue_id
            self._coid_by_venue_id[venue_id] = track.client_order_id
        track.unknown_since_ns = None
        status = cm.order_status_from_ccxt_order(order)
        ts = now_ns()
        ts_event = int(order.get("lastUpdateTimestamp") or order.get("timestamp") or ts // 1_000_000) * 1_000_000
        if not track.accepted and status is not S.REJECTED:
            track.accepted = True
            await self._emit(track, OrderEvent(track.client_order_id, E.ACCEPTED, ts_event, ts,
                                               venue_order_id=venue_id, reason=source))
        if fill is not None and fill.fill_id not in track.fill_ids:
            await self._tell_fill(track, fill, venue_id)
        for fill in self._reply_fills(track, order, ts):
            if fill.fill_id not in track.fill_ids:
                await self._tell_fill(track, fill, venue_id)
        leg_filled = cm._decimal(order.get("filled")) or _ZERO
        if track.old_legs_filled + leg_filled > track.filled:
            await self._sync_fills(track, recovering=source in ("poll", "reconnect"))
        final = _FINAL_EVENTS.get(status)
        if final is not None and not track.final and not track.replacing:
            track.final = True
            info = order.get("info") or {}
            reason = f"{status} at {self.name}" + (f" ({info.get('r')})" if info.get("r") not in (None, "NONE") else "")
            await self._emit(track, OrderEvent(track.client_order_id, final, ts_event, ts, venue_order_id=venue_id,
                                               reason=reason))

    async def _tell_fill(self, track: _Track, fill: Fill, venue_id: str | None) -> None:
        track.fill_ids.add(fill.fill_id)
        track.filled += fill.quantity
        await self._emit(track, OrderEvent(track.client_order_id, E.FILLED, fill.ts_event_ns, fill.ts_init_ns,
                                           venue_order_id=venue_id, fill=fill))

    def _reply_fills(self, track: _Track, order: Mapping[str, Any], ts: int) -> list[Fill]:
        """The fills a new-order reply carries (Binance's FULL reply): made on arrival, so taker fills."""
        out = []
        for trade in order.get("trades") or ():
            if trade.get("id") is None:
                continue
            trade = {**trade, "side": trade.get("side") or cm.side_to_ccxt(track.side),
                     "timestamp": trade.get("timestamp") or order.get("lastTradeTimestamp") or order.get("timestamp"),
                     "takerOrMaker": trade.get("takerOrMaker") or "taker", "symbol": track.symbol}
            out.append(cm.fill_from_ccxt_trade(trade, client_order_id=track.client_order_id,
                                               instrument_id=track.instrument_id, ts_init_ns=ts))
        return out

    async def _sync_fills(self, track: _Track, *, recovering: bool = False) -> None:
        """Ask REST for the trades of every leg of the order; tell the ones not told yet, in trade order."""
        ts = now_ns()
        found: list[tuple[str, Fill]] = []
        what = f"fills of {track.client_order_id}"
        for leg in track.legs:
            if self.exchange_id == "binance":
                trades = await self._call(self.exchange.fetch_my_trades, track.symbol, None, None, {"orderId": leg},
                                          what=what)
            elif self.exchange.has.get("fetchOrderTrades"):
                trades = await self._call(self.exchange.fetch_order_trades, leg, track.symbol, what=what)
            else:
                trades = [t for t in await self._call(self.exchange.fetch_my_trades, track.symbol,
                                                      track.created_ms - 60_000, what=what)
                          if str(t.get("order")) == leg]
            for trade in trades:
                if str(trade["id"]) not in track.fill_ids:
                    found.append((leg, cm.fill_from_ccxt_trade(trade, client_order_id=track.client_order_id,
                                                                instrument_id=track.instrument_id, ts_init_ns=ts)))
        for leg, fill in sorted(found, key=lambda lf: (lf[1].ts_event_ns, int(lf[1].fill_id)
                                                       if lf[1].fill_id.isdigit() else 0)):
            if fill.fill_id not in track.fill_ids:
                self.recovered_fills += recovering
                await self._tell_fill(track, fill, leg)

    # -- the user data stream and the poller ------------------------------------------------------------------
    async def _stream_loop(self) -> None:
        """Watch orders; back off and watch again when the stream fails, then ask REST about the gap.

        ccxt.pro resolves a watch only for a message that arrives while someone waits: an update
        that lands while the last batch is being handled stays in ccxt's order cache until the
        next message. So while waiting, the cache is read every ``STREAM_CACHE_CHECK_S`` for
        updates not handled yet (local, no request).
        """
        failures = 0
        resync = False
        while self._connected:
            watch = asyncio.ensure_future(self.exchange.watch_orders())
            try:
                if resync:
                    # watching again: what happened during the gap is in REST (told once, by trade id)
                    await asyncio.sleep(0)
                    try:
                        await self._poll_once(all_open=True)
                        resync = False
                    except VenueError as exc:  # asked again after the next update, and by the poller meanwhile
                        log.warning("%s: REST resync after the reconnect failed: %s", self.name, exc)
                while True:
                    done, _ = await asyncio.wait({watch}, timeout=STREAM_CACHE_CHECK_S)
                    if done:
                        break
                    await self._handle_stream_orders(self._unhandled_cached())
                orders = watch.result()
            except asyncio.CancelledError:
                watch.cancel()
                raise
            except Exception as exc:  # noqa: BLE001 - any stream failure: back off, watch again, resync
                self._stream_ok = False
                failures += 1
                self.reconnects += 1
                self._last_error = f"user data stream: {type(exc).__name__}"
                low, high = self.reconnect_backoff_s
                delay = min(high, low * 2 ** (failures - 1))
                log.warning("%s: user data stream failed (%s); watching again in %.2f s", self.name,
                            type(exc).__name__, delay)
                await asyncio.sleep(delay)
                resync = True
                continue
            self._stream_ok = True
            failures = 0
            await self._handle_stream_orders(list(orders) + self._unhandled_cached())

    def _unhandled_cached(self) -> list[dict[str, Any]]:
        cache = getattr(self.exchange, "orders", None) or []
        return [o for o in list(cache) if _report_key(o) != self._handled.get(str(o.get("id")))]

    async def _handle_stream_orders(self, orders: list[dict[str, Any]]) -> None:
        for order in orders:
            key = _report_key(order)
            if key == self._handled.get(str(order.get("id"))):
                continue
            self._handled[str(order.get("id"))] = key
            try:
                await self._on_stream_order(order)
            except VenueError as exc:
                log.warning("%s: stream update for %s not settled (%s); the poller asks again", self.name,
                            order.get("clientOrderId"), exc)
            except Exception:  # noqa: BLE001 - one bad message must not stop the stream
                log.exception("%s: stream update could not be read: %s", self.name, order.get("id"))

    async def _on_stream_order(self, order: Mapping[str, Any]) -> None:
        info = order.get("info") or {}
        symbol = order.get("symbol")
        if symbol not in self.symbols:
            return
        coid = cm.client_order_id_from_binance_report(info) if info.get("e") == "executionReport" else \
            str(order.get("clientOrderId") or "")
        track = self._tracks.get(coid)
        if track is None:
            if not coid:
                return
            track = self._adopt({**order, "clientOrderId": coid}, symbol)
        async with track.lock:
            fill = None
            if info.get("e") == "executionReport":
                fill = cm.fill_from_binance_report(info, symbol=symbol, client_order_id=coid,
                                                   instrument_id=track.instrument_id, ts_init_ns=now_ns())
            await self._observe(track, order, source="stream", fill=fill)

    async def _poll_loop(self) -> None:
        while self._connected:
            streaming = Capability.STREAMING_FILLS in self.capabilities and self._stream_ok
            await asyncio.sleep(self.stream_poll_interval_s if streaming else self.poll_interval_s)
            try:
                await self._poll_once()
                self._poll_failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a failed poll is retried at the next tick
                self._poll_failures += 1
                self._last_error = f"poll: {exc}"
                log.warning("%s: poll failed (%d in a row): %s", self.name, self._poll_failures, exc)

    async def _poll_once(self, *, all_open: bool = False) -> None:
        """Ask REST for every order not final: its status and fills, told once."""
        for track in [t for t in self._tracks.values() if not t.done]:
            if track.replacing:
                continue
            async with track.lock:
                order = await self._fetch_order(track)
                if order is None:
                    grace_over = (track.unknown_since_ns is not None
                                  and now_ns() - track.unknown_since_ns > self.order_visibility_grace_ns)
                    if grace_over:
                        self._tracks.pop(track.client_order_id, None)  # never arrived: reconciliation rejects it
                    continue
                await self._observe(track, order, source="reconnect" if all_open else "poll")
