"""A crypto exchange account through ccxt: Binance spot first; Coinbase and Kraken by configuration.

One rule: every order goes out under tradebook's own client order id, and everything the
adapter learns about an order (the submit reply, the user data stream, a REST poll) goes
through one tracker per client id that emits each lifecycle event once: accepted once, each
fill once by the exchange's trade id, a final cancel or expiry once and after the fills
the exchange reports for the order (:mod:`tradebook.venues.ccxt_events`, the listening
half). So a duplicate stream message, a fill seen by both the stream and REST, or a poll
after a reconnect never doubles anything.

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
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from tradebook.errors import ConfigError, NotSentError, VenueError, VenueRejectedError
from tradebook.model.instruments import Instrument
from tradebook.model.orders import Fill, OrderEvent, OrderEventType, OrderIntent, OrderStatus, OrderType
from tradebook.model.time import now_ns
from tradebook.venues import ccxt_mapping as cm
from tradebook.venues.ccxt_events import CcxtEvents, OrderTrack
from tradebook.venues.base import AccountState, Capability, EventHandler, VenueHealth, VenueOrderState, VenuePort

log = logging.getLogger(__name__)

E, S = OrderEventType, OrderStatus
_ZERO = Decimal(0)
MAX_POLL_FAILURES = 3
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


class _ScrubbingLogger:
    """The logger handed to ccxt: its debug lines print request headers (the API key); the credentials go out hidden."""

    def __init__(self, secrets: tuple[str, ...]) -> None:
        self._logger = logging.getLogger("tradebook.venues.ccxt_sdk")
        self._secrets = tuple(s for s in secrets if s)

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        if not self._logger.isEnabledFor(level):
            return
        try:
            text = str(msg) % args if args else str(msg)
        except (TypeError, ValueError):
            text = " ".join(str(part) for part in (msg, *args))
        for secret in self._secrets:
            text = text.replace(secret, "<hidden>")
        self._logger.log(level, "%s", text, exc_info=kwargs.get("exc_info"))

    def debug(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        self.log(logging.DEBUG, msg, *args, **kwargs)

    def info(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        self.log(logging.INFO, msg, *args, **kwargs)

    def warning(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        self.log(logging.WARNING, msg, *args, **kwargs)

    def error(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        self.log(logging.ERROR, msg, *args, **kwargs)

    def exception(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        self.log(logging.ERROR, msg, *args, exc_info=True)


@dataclass
class FundingRate:
    """A perpetual's funding: ``rate`` per interval, the mark price, the next funding time (UTC ns)."""

    symbol: str
    rate: Decimal
    mark_price: Decimal | None
    next_funding_ns: int | None
    source: str


class CcxtVenue(CcxtEvents, VenuePort):
    """One spot account at a ccxt exchange (``binance`` first; ``coinbase``, ``kraken`` by ``exchange_id``).

    ``symbols``: the ccxt symbols traded (``"BTC/USDT"``); instruments are named
    ``<market id>.<EXCHANGE>`` (``BTCUSDT.BINANCE``). ``api_url``: one server for every
    endpoint (``http://127.0.0.1:PORT``, a local sandbox), or ``api_urls``: a mapping that
    replaces ``exchange.urls['api']`` or a function of it (``BinanceSandbox.ccxt_urls``).
    ``use_stream``: watch the user data stream (ccxt.pro) where the exchange has one.
    """

    def __init__(self, exchange_id: str = "binance", *, api_key: str, secret: str, symbols: Sequence[str],
                 account_id: str | None = None, password: str | None = None,
                 api_urls: Mapping[str, Any] | Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                 api_url: str | None = None,
                 live: bool = True, testnet: bool = False, use_stream: bool = True,
                 poll_interval_s: float = 1.0, stream_poll_interval_s: float = 2.0,
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
        self._tracks: dict[str, OrderTrack] = {}
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
                                  "timeout": int(self.request_timeout_s * 1000), "options": dict(self._options),
                                  "logger": _ScrubbingLogger(self._secrets())}
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
        """Load the markets, check the keys (one balance read), start the stream and the poller.

        Connected already: only the handler changes (events go to the new one from now on).
        """
        self._on_event = on_event
        if self._connected:
            return
        if self.exchange is None:
            self.exchange, streaming = self._make_exchange()
        else:
            streaming = Capability.STREAMING_FILLS in self.capabilities
        try:
            await self._call(self.exchange.load_markets, what="load markets")
            await self._call(self.exchange.fetch_balance, what="read the balance")
            unknown = [s for s in self.symbols if s not in self.exchange.markets]
            if unknown:
                raise ConfigError(f"{self.exchange_id} lists no market {unknown}; it has e.g. "
                                  f"{sorted(self.exchange.markets)[:10]}")
        except (VenueError, ConfigError):
            await self.exchange.close()
            self.exchange = None
            raise
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
        created = track is None or track.done
        if created:
            track = OrderTrack(coid, symbol, intent.instrument_id, intent.side, intent.quantity,
                               created_ms=now_ns() // 1_000_000)
            self._tracks[coid] = track  # before sending: the stream may tell of it before the reply comes
        params = {k: (str(v) if isinstance(v, Decimal) else v) for k, v in args.params.items()}
        what = f"submit {coid} {intent.side} {intent.quantity} {symbol}"
        try:
            order = await self._call(self.exchange.create_order, symbol, args.type, args.side, float(args.amount),
                                     None if args.price is None else float(args.price), params, what=what)
        except VenueError as exc:
            refused = isinstance(exc, NotSentError) or (isinstance(exc, VenueRejectedError)
                                                         and exc.code != "duplicate_client_id")
            if refused and created and self._tracks.get(coid) is track:
                del self._tracks[coid]  # the exchange does not hold it: nothing to follow
            elif not refused and created:
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

    async def _cancel_leg(self, track: OrderTrack, what: str) -> dict[str, Any]:
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

    def _state(self, track: OrderTrack, order: Mapping[str, Any]) -> VenueOrderState:
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
    async def _track_for(self, client_order_id: str) -> OrderTrack | None:
        """The tracker of an order; one placed before a restart is looked up by client id in each market."""
        track = self._tracks.get(client_order_id)
        if track is not None:
            return track
        for symbol in self.symbols:
            order = await self._fetch_by_client_id(client_order_id, symbol)
            if order is not None:
                return self._adopt(order, symbol)
        return None

    def _adopt(self, order: Mapping[str, Any], symbol: str) -> OrderTrack:
        """Track an order first learned from the exchange (placed before a restart, or elsewhere).

        Its acceptance is not told again (the order manager knows it, or the order is not
        ours); an order already final is tracked as final: its fills reach the order manager
        through ``fills()`` in reconciliation. An open one is followed like our own.
        """
        coid = str(order.get("clientOrderId") or "")
        track = self._tracks.get(coid)
        if track is None:
            track = OrderTrack(coid, symbol, self.instrument_id(symbol), cm.side_from_ccxt(order["side"]),
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

    async def _fetch_order(self, track: OrderTrack) -> dict[str, Any] | None:
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
