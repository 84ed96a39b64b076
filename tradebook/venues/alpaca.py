"""Alpaca (alpaca-py) as a venue: equities and ETFs on a paper or live account, orders by REST, fills by stream.

The one rule of the port holds: what happens to an order arrives as events, and an order
is sent under tradebook's ``client_order_id`` so Alpaca refuses a second copy. The rest is
what Alpaca and alpaca-py do when things go wrong, measured against the sandbox
(tradebook.sandbox.alpaca) and handled here:

- alpaca-py sets no request timeout: every request carries ours (``request_timeout_s``);
  a submit that times out or loses its reply may have arrived, so it raises
  :class:`~tradebook.errors.OutcomeUnknownError` and is never resent (the order manager
  asks :meth:`AlpacaVenue.order_status` by client order id).
- alpaca-py resends a POST after a 429 or a 504 by itself; a 504 after the order was taken
  then meets "client_order_id must be unique". Its own retries are switched off: a 429
  (refused before it was looked at) is waited out here with its ``Retry-After`` and sent
  again, a 504 is an unknown outcome.
- ``TradingStream`` reconnects by itself and says nothing; fills made in the gap never
  come on the stream. Every (re)connect of the stream wakes a REST recovery of FILL
  activities, and a poller does the same every ``poll_interval_s``: each fill is
  delivered once, by its execution id, whichever way it came first (a duplicate stream
  message is dropped the same way).
- A cancel answered 204 is a request: a fill may still follow, delivered as a fill.
- A replace makes a new Alpaca order with a client id of its own (tradebook's id with a
  ``.r<n>`` suffix); its events are delivered under tradebook's id, and a replacing order
  Alpaca rejects is a ``replace_rejected``, not the end of the order.

Threads: events are handed to the ``connect`` handler from one delivery thread, in the
order this adapter decided them (stream, poller and REST replies funnel into it); the
order manager marshals them onto its loop. Credentials are read from the constructor
(or the environment by :meth:`AlpacaVenue.from_env`) and never appear in ``repr``, logs or
errors.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from tradebook.errors import ConfigError, NotSentError, OutcomeUnknownError, VenueError, VenueRejectedError
from tradebook.model.instruments import (
    BUNDLED_INSTRUMENTS, US_EQUITY_HOURS, AssetClass, Instrument, get_instrument,
)
from tradebook.model.orders import Fill, OrderEvent, OrderEventType, OrderIntent
from tradebook.model.time import now_ns
from tradebook.venues import alpaca_mapping as am
from tradebook.venues.base import (
    AccountState, BatchEventHandler, Capability, EventHandler, VenueHealth, VenueOrderState, VenuePort,
)

log = logging.getLogger(__name__)

E = OrderEventType
PAPER_URL = "https://paper-api.alpaca.markets"
LIVE_URL = "https://api.alpaca.markets"
ENV_KEY_ID, ENV_SECRET_KEY = "TRADEBOOK_ALPACA_KEY_ID", "TRADEBOOK_ALPACA_SECRET_KEY"
ENV_PAPER, ENV_ACCOUNT = "TRADEBOOK_ALPACA_PAPER", "TRADEBOOK_ALPACA_ACCOUNT"
ENV_BASE_URL, ENV_STREAM_URL = "TRADEBOOK_ALPACA_BASE_URL", "TRADEBOOK_ALPACA_STREAM_URL"
_STOP_TIMEOUT_S = 5.0
_SECOND_NS = 1_000_000_000
_CLOCK_SKEW_NS = 2 * _SECOND_NS
# Alpaca's 'accepted' and 'pending_new' replies: received, not yet at the exchange (it may still reject)
_LIVE_REPLY_STATUSES = frozenset({"new", "partially_filled", "filled", "done_for_day"})


class AlpacaVenue(VenuePort):
    """One Alpaca account (paper or live) through alpaca-py's TradingClient and TradingStream.

    ``base_url``/``stream_url`` name the endpoints (Alpaca's paper or live ones by default;
    the sandbox's in tests); ``instruments`` maps instrument ids to their definitions (the
    bundled US equities by default; :meth:`instruments` reads Alpaca's asset list).
    Timeouts and waits are in seconds: ``request_timeout_s`` bounds every REST call,
    ``connect_timeout_s`` the stream's first authorisation, ``rate_limit_retries`` how many
    429s one call waits out (each its ``Retry-After``, at most ``rate_limit_max_wait_s``).
    """

    name = "alpaca"
    capabilities = frozenset({Capability.NATIVE_REPLACE, Capability.FRACTIONAL, Capability.EXTENDED_HOURS,
                              Capability.STREAMING_FILLS, Capability.SHORTING})
    # Alpaca's order lookup by client id shows an order as soon as the POST is answered
    order_visibility_grace_ns = 5 * _SECOND_NS

    def __init__(self, *, key_id: str, secret_key: str, paper: bool = True, base_url: str | None = None,
                 stream_url: str | None = None, account_id: str | None = None,
                 instruments: Mapping[str, Instrument] | None = None, request_timeout_s: float = 10.0,
                 connect_timeout_s: float = 10.0, poll_interval_s: float = 5.0, fill_lookback_s: float = 60.0,
                 rate_limit_retries: int = 3, rate_limit_max_wait_s: float = 10.0,
                 stream_reconnect_min_s: float = 1.0, extended_hours: bool = False) -> None:
        if not key_id or not secret_key:
            raise ConfigError("AlpacaVenue needs key_id and secret_key (AlpacaVenue.from_env reads "
                              f"{ENV_KEY_ID} and {ENV_SECRET_KEY})")
        for label, value in (("request_timeout_s", request_timeout_s), ("connect_timeout_s", connect_timeout_s),
                             ("poll_interval_s", poll_interval_s)):
            if not value > 0:
                raise ConfigError(f"AlpacaVenue {label} must be positive seconds, got {value!r}")
        self.__key_id, self.__secret_key = key_id, secret_key
        self.paper = paper
        self.is_live = not paper
        self.base_url = (base_url or (PAPER_URL if paper else LIVE_URL)).rstrip("/")
        self.stream_url = stream_url
        self.account_id = account_id or f"alpaca-{'paper' if paper else 'live'}"
        self._registry: Mapping[str, Instrument] = instruments if instruments is not None else BUNDLED_INSTRUMENTS
        self._by_symbol = {i.symbol: i.instrument_id for i in self._registry.values()
                           if i.asset_class is AssetClass.EQUITY}
        self.request_timeout_s, self.connect_timeout_s = request_timeout_s, connect_timeout_s
        self.poll_interval_s, self.fill_lookback_ns = poll_interval_s, int(fill_lookback_s * _SECOND_NS)
        self.rate_limit_retries, self.rate_limit_max_wait_s = rate_limit_retries, rate_limit_max_wait_s
        self.stream_reconnect_min_s = stream_reconnect_min_s
        self.reconnect_settle_s = 1.0
        self.extended_hours = extended_hours  # send DAY limit orders with extended_hours=true
        self._client: Any = None
        self._stream: Any = None
        self._stream_thread: threading.Thread | None = None
        self._poll_thread: threading.Thread | None = None
        self._deliver_thread: threading.Thread | None = None
        self._handler: EventHandler | None = None
        self._closed = threading.Event()
        self._wake_poller = threading.Event()
        self._listening = threading.Event()
        self._lock = threading.RLock()
        self._outbox: queue.Queue[OrderEvent | None] = queue.Queue()
        # what this adapter knows of orders, by tradebook client order id ("root") and by Alpaca's ids
        self._instrument_of: dict[str, str] = {}  # root -> instrument id
        self._root_of_venue_id: dict[str, str] = {}  # Alpaca order id -> root
        self._live_venue_id: dict[str, str] = {}  # root -> Alpaca id of the order that works for it now
        self._asked_terms: dict[str, tuple[Decimal | None, ...]] = {}  # root -> replace asked: qty, limit, stop
        self._delivered: dict[str, set[E]] = {}  # root -> kinds of events delivered
        self._fill_ids: set[str] = set()  # execution ids delivered (stream or REST)
        self._fill_watermark_ns = 0  # recover FILL activities from here (minus the lookback)
        self._connected_ns = 0
        self.stream_connects = 0  # authorised stream connections, reconnects included
        self.recoveries = 0  # REST fill recoveries run
        self.recovered_fills = 0  # fills delivered by REST that the stream had not delivered
        self._rate_limited_until = 0.0
        self._last_error = ""

    @classmethod
    def from_env(cls, *, environ: Mapping[str, str] | None = None, **options: Any) -> AlpacaVenue:
        """An AlpacaVenue with its credentials from the environment, never from a file.

        ``TRADEBOOK_ALPACA_KEY_ID`` and ``TRADEBOOK_ALPACA_SECRET_KEY`` (required);
        ``TRADEBOOK_ALPACA_PAPER`` (``false`` for the live endpoint; paper by default),
        ``TRADEBOOK_ALPACA_BASE_URL``/``_STREAM_URL`` and ``TRADEBOOK_ALPACA_ACCOUNT``
        (optional). Keyword options go to the constructor and win over the environment.
        """
        env = os.environ if environ is None else environ
        missing = [name for name in (ENV_KEY_ID, ENV_SECRET_KEY) if not env.get(name)]
        if missing:
            raise ConfigError(f"Alpaca credentials missing from the environment: set {' and '.join(missing)}")
        paper_text = env.get(ENV_PAPER, "true").strip().lower()
        if paper_text not in ("true", "false", "1", "0", "yes", "no"):
            raise ConfigError(f"{ENV_PAPER}={paper_text!r}: expected true or false")
        settings: dict[str, Any] = {"paper": paper_text in ("true", "1", "yes"),
                                    "base_url": env.get(ENV_BASE_URL) or None,
                                    "stream_url": env.get(ENV_STREAM_URL) or None,
                                    "account_id": env.get(ENV_ACCOUNT) or None}
        settings.update(options)
        return cls(key_id=env[ENV_KEY_ID], secret_key=env[ENV_SECRET_KEY], **settings)

    def __repr__(self) -> str:
        state = "connected" if self._client is not None and not self._closed.is_set() else "not connected"
        return (f"<AlpacaVenue {self.account_id} {'paper' if self.paper else 'LIVE'} {self.base_url} "
                f"({state})>")

    # -- life cycle ----------------------------------------------------------------------------------
    async def connect(self, on_event: EventHandler, *, on_events: BatchEventHandler | None = None) -> None:
        """Check the account, start the trade_updates stream and the fill poller; events go to ``on_event``."""
        if self._client is not None and not self._closed.is_set():
            raise VenueError(f"{self!r} is already connected; close() it first")
        self._handler = on_event
        self._closed.clear()
        self._listening.clear()
        self._wake_poller.clear()
        self._outbox = queue.Queue()  # a fresh one: close() left its end marker in the last
        self._client = self._build_client()
        try:
            account = await self._rest(self._client.get_account, what="read the account")
            blocked = [flag for flag in ("trading_blocked", "account_blocked") if getattr(account, flag, False)]
            if blocked:
                raise NotSentError(f"Alpaca account {self.account_id}: {' and '.join(blocked)}; no order can be "
                                   "sent")
            self._connected_ns = self._fill_watermark_ns = now_ns()
            self._deliver_thread = threading.Thread(target=self._deliver_loop, name="tradebook-alpaca-events",
                                                    daemon=True)
            self._deliver_thread.start()
            self._start_stream()
            listening = await asyncio.to_thread(self._listening.wait, self.connect_timeout_s)
            if not listening:
                raise NotSentError(f"Alpaca stream at {self._stream_endpoint()} did not authorise within "
                                   f"{self.connect_timeout_s} s")
        except BaseException:
            await self.close()
            self._client = None  # not connected: connect() may be tried again
            raise
        self._poll_thread = threading.Thread(target=self._poll_loop, name="tradebook-alpaca-poller", daemon=True)
        self._poll_thread.start()

    async def close(self) -> None:
        """Stop the stream, the poller and event delivery (working orders stay working at Alpaca)."""
        self._closed.set()
        self._wake_poller.set()
        await asyncio.to_thread(self._stop_threads)

    def _stop_threads(self) -> None:
        stream = self._stream
        if stream is not None and stream._loop is not None and stream._loop.is_running():
            async def stop() -> None:
                await stream.stop_ws()
                await stream.close()  # the stream's reader waits up to 5 s otherwise
            try:
                asyncio.run_coroutine_threadsafe(stop(), stream._loop).result(_STOP_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - closing: report, go on
                log.warning("alpaca stream did not stop cleanly: %s", exc)
        self._outbox.put(None)
        for thread in (self._stream_thread, self._poll_thread, self._deliver_thread):
            if thread is not None and thread is not threading.current_thread():
                thread.join(_STOP_TIMEOUT_S)
        self._stream = self._stream_thread = self._poll_thread = self._deliver_thread = None

    async def health(self) -> VenueHealth:
        if self._client is None or self._closed.is_set():
            return VenueHealth(False, f"{self.account_id}: not connected")
        if time.monotonic() < self._rate_limited_until:
            return VenueHealth(False, f"{self.account_id}: rate limited by Alpaca for "
                               f"{self._rate_limited_until - time.monotonic():.1f} s more")
        try:
            account = await self._rest(self._client.get_account, what="read the account")
        except VenueError as exc:
            return VenueHealth(False, f"{self.account_id}: {exc}")
        if getattr(account, "trading_blocked", False) or getattr(account, "account_blocked", False):
            return VenueHealth(False, f"{self.account_id}: Alpaca has blocked trading on the account")
        stream_up = self._stream is not None and bool(getattr(self._stream, "_running", False))
        if not stream_up:
            return VenueHealth(False, f"{self.account_id}: the trade_updates stream is down (fills come by REST "
                               "polling until it reconnects)")
        return VenueHealth(True, f"{self.account_id}: account {account.status}, stream up")

    # -- orders --------------------------------------------------------------------------------------
    async def submit(self, intent: OrderIntent) -> None:
        coid = intent.client_order_id
        symbol = self._symbol(intent.instrument_id)
        try:
            request = am.order_request(symbol=symbol, side=intent.side, quantity=intent.quantity,
                                       order_type=intent.order_type, time_in_force=intent.time_in_force,
                                       client_order_id=coid, limit_price=intent.limit_price,
                                       stop_price=intent.stop_price,
                                       extended_hours=self.extended_hours and intent.order_type == "limit"
                                       and intent.time_in_force == "day")
        except Exception as exc:  # noqa: BLE001 - the request object refused it: nothing left
            raise NotSentError(f"{coid}: refused before sending to Alpaca: {exc}") from exc
        with self._lock:
            self._instrument_of[coid] = intent.instrument_id
            self._delivered.setdefault(coid, set())
        order = await self._rest(self._client.submit_order, request, what=f"submit {coid}", sends=True)
        venue_id = str(order.id)
        with self._lock:
            self._root_of_venue_id[venue_id] = coid
            self._live_venue_id[coid] = venue_id
            if am._word(order.status) in _LIVE_REPLY_STATUSES:
                self._emit_locked(OrderEvent(coid, E.ACCEPTED, am._ns(order.submitted_at or order.created_at),
                                             now_ns(), venue_order_id=venue_id))

    async def cancel(self, client_order_id: str) -> None:
        venue_id = await self._working_venue_id(client_order_id)
        await self._rest(self._client.cancel_order_by_id, venue_id, what=f"cancel {client_order_id}", sends=True)

    async def replace(self, client_order_id: str, *, quantity: Decimal | None = None,
                      limit_price: Decimal | None = None, stop_price: Decimal | None = None) -> None:
        from alpaca.trading.requests import ReplaceOrderRequest

        venue_id = await self._working_venue_id(client_order_id)
        current = await self._rest(self._client.get_order_by_id, venue_id, what=f"read {client_order_id}")
        with self._lock:  # the stream's 'replaced' may come before the reply: it carries these terms
            self._asked_terms[client_order_id] = (quantity, limit_price, stop_price)
        new_coid = am.replacement_client_order_id(client_order_id, am.replacement_number(current.client_order_id) + 1)
        try:
            request = ReplaceOrderRequest(qty=None if quantity is None else float(quantity),
                                          limit_price=None if limit_price is None else float(limit_price),
                                          stop_price=None if stop_price is None else float(stop_price),
                                          client_order_id=new_coid)
        except Exception as exc:  # noqa: BLE001 - alpaca-py's validation
            raise NotSentError(f"replace of {client_order_id} refused before sending: {exc}") from exc
        new = await self._rest(self._client.replace_order_by_id, venue_id, request,
                               what=f"replace {client_order_id}", sends=True)
        with self._lock:
            self._root_of_venue_id[str(new.id)] = client_order_id

    async def _working_venue_id(self, client_order_id: str) -> str:
        with self._lock:
            known = self._live_venue_id.get(client_order_id)
        if known is not None:
            return known
        order = await self._lookup(client_order_id)
        if order is None:
            raise VenueRejectedError(f"Alpaca holds no order {client_order_id}", code="unknown_order",
                                     venue_code="40410000")
        return str(order.id)

    async def order_status(self, client_order_id: str) -> VenueOrderState | None:
        """Alpaca's view of a tradebook order, following replacements to the order working for it now."""
        order = await self._lookup(client_order_id)
        if order is None:
            return None
        return am.order_state_from_alpaca(order, client_order_id=client_order_id,
                                          instrument_id=self._instrument_for(client_order_id, order.symbol))

    async def _lookup(self, client_order_id: str) -> Any:
        from alpaca.common.exceptions import APIError

        try:
            order = await self._rest(self._client.get_order_by_client_id, client_order_id,
                                     what=f"look up {client_order_id}", raw_errors=True)
        except APIError as exc:
            if getattr(exc, "status_code", None) == 404:
                return None
            raise self._mapped(exc, f"look up {client_order_id}", sends=False) from exc
        hops = 0
        while order.replaced_by is not None and hops < 100:  # a replaced order lives on as its replacement
            order = await self._rest(self._client.get_order_by_id, str(order.replaced_by),
                                     what=f"follow the replacement of {client_order_id}")
            hops += 1
        with self._lock:
            self._root_of_venue_id[str(order.id)] = client_order_id
            self._live_venue_id[client_order_id] = str(order.id)
        return order

    async def open_orders(self) -> list[VenueOrderState]:
        from alpaca.trading.enums import QueryOrderStatus
        from alpaca.trading.requests import GetOrdersRequest

        orders = await self._rest(self._client.get_orders, GetOrdersRequest(status=QueryOrderStatus.OPEN, limit=500),
                                  what="list open orders")
        out = []
        for order in orders:
            root = self._root_of(order)
            out.append(am.order_state_from_alpaca(order, client_order_id=root,
                                                  instrument_id=self._instrument_for(root, order.symbol)))
        return out

    async def positions(self) -> dict[str, Decimal]:
        rows = await self._rest(self._client.get_all_positions, what="read positions")
        out: dict[str, Decimal] = {}
        for row in rows:
            qty = Decimal(str(row.qty))
            if am._word(row.side) == "short" and qty > 0:
                qty = -qty
            out[self._instrument_id(row.symbol, getattr(row, "exchange", None))] = qty
        return out

    async def account(self) -> AccountState:
        raw = await self._rest(self._client.get_account, what="read the account")
        return AccountState(self.account_id, str(raw.currency or "USD"), Decimal(str(raw.cash)),
                            Decimal(str(raw.equity)), Decimal(str(raw.buying_power)),
                            bool(raw.pattern_day_trader), int(raw.daytrade_count or 0))

    async def fills(self, since_ns: int = 0) -> list[Fill]:
        """Every FILL activity at or after ``since_ns``, under tradebook's client order ids and execution ids."""
        return await asyncio.to_thread(self._fills_blocking, since_ns)

    async def instruments(self) -> list[Instrument]:
        """Alpaca's active, tradable US equities as instruments (tick by SEC Rule 612, whole-share lots)."""
        from alpaca.trading.enums import AssetClass as AlpacaAssetClass, AssetStatus
        from alpaca.trading.requests import GetAssetsRequest

        assets = await self._rest(self._client.get_all_assets,
                                  GetAssetsRequest(status=AssetStatus.ACTIVE, asset_class=AlpacaAssetClass.US_EQUITY),
                                  what="list assets")
        out = []
        ticks = ((Decimal(0), Decimal("0.0001")), (Decimal(1), Decimal("0.01")))
        for asset in assets:
            if not asset.tradable:
                continue
            try:
                mic = am.mic_from_alpaca(asset.exchange)
            except Exception:  # noqa: BLE001 - an exchange tradebook has no MIC for: skipped, said once
                log.info("alpaca asset %s on %s skipped: no MIC known", asset.symbol, am._word(asset.exchange))
                continue
            out.append(Instrument(
                instrument_id=f"{asset.symbol}.{mic}", symbol=asset.symbol, venue=mic, asset_class=AssetClass.EQUITY,
                currency="USD", tick_size=Decimal("0.01"), tick_schedule=ticks, lot_size=Decimal(1),
                min_quantity=Decimal(1), trading_hours=US_EQUITY_HOURS,
                description=(f"alpaca assets ({self.base_url}): {asset.name}; exchange {am._word(asset.exchange)} -> "
                             f"{mic}; tick $0.01 at or above $1, $0.0001 below (SEC Rule 612); lot 1 share"
                             f"{' (fractionable: market/limit DAY orders only)' if asset.fractionable else ''}; "
                             f"shortable {bool(asset.shortable)}")))
        return out

    # -- events --------------------------------------------------------------------------------------
    def _emit_locked(self, event: OrderEvent) -> None:
        """Deliver ``event`` unless it repeats what was delivered (caller holds the lock)."""
        root, kind = event.client_order_id, event.event_type
        seen = self._delivered.setdefault(root, set())
        if event.fill is not None:
            if event.fill.fill_id in self._fill_ids:
                return  # a duplicate message, or a fill the other path delivered first
            self._fill_ids.add(event.fill.fill_id)
            self._fill_watermark_ns = max(self._fill_watermark_ns, event.fill.ts_event_ns)
        elif kind is E.ACCEPTED and seen:
            return  # a repeated ack, or an ack that lost the race to a fill or an end: no step
        elif kind in (E.CANCELLED, E.EXPIRED, E.REJECTED) and kind in seen:
            return
        seen.add(event.event_type)
        self._outbox.put(event)

    def _deliver_loop(self) -> None:
        while True:
            event = self._outbox.get()
            if event is None:
                return
            handler = self._handler
            if handler is None:
                continue
            try:
                handler(event)
            except Exception:  # noqa: BLE001 - a receiver's failure must not stop delivery of the rest
                log.exception("alpaca event handler failed on %s %s", event.event_type, event.client_order_id)

    async def _on_trade_update(self, update: Any) -> None:
        # runs on the stream's thread and loop
        try:
            self._apply_update(update)
        except Exception:  # noqa: BLE001 - one bad message must not stop the stream
            log.exception("alpaca trade update not understood: %s", getattr(update, "event", update))

    def _apply_update(self, update: Any) -> None:
        order = update.order
        venue_id = str(order.id)
        word = am._word(update.event)
        with self._lock:
            root = self._root_of(order)
            instrument_id = self._instrument_for(root, order.symbol)
            # a replacing order (its own client id) that Alpaca has not yet confirmed with 'replaced'
            pending_replacement = order.client_order_id != root and self._live_venue_id.get(root) != venue_id
            if pending_replacement and word not in ("fill", "partial_fill"):
                # a replacing order before Alpaca confirms the replace: its 'rejected' refuses the
                # replace, not the order (the old order, e.g. filled meanwhile, decides)
                if word in ("rejected", "canceled"):
                    self._outbox.put(OrderEvent(root, E.REPLACE_REJECTED, am._ns(update.timestamp), now_ns(),
                                                venue_order_id=venue_id, reason=f"alpaca:{word} replacement"))
                return
            event = am.order_event_from_trade_update(update, instrument_id=instrument_id, ts_init_ns=now_ns(),
                                                     client_order_id=root)
            if event is None:
                return
            if event.event_type is E.REPLACED and order.replaced_by is not None:
                new_id = str(order.replaced_by)
                terms = self._asked_terms.pop(root, None)
                if terms is not None:  # else (after a restart) the order manager takes the terms it asked for
                    event = dataclasses.replace(event, quantity=terms[0], limit_price=terms[1], stop_price=terms[2])
                self._root_of_venue_id[new_id] = root
                self._live_venue_id[root] = new_id
            elif venue_id != self._live_venue_id.get(root, venue_id) and event.fill is None \
                    and event.event_type is not E.REPLACED:
                return  # news of an order that no longer works for this root (replaced): nothing to apply
            self._emit_locked(event)

    # -- REST recovery of fills ------------------------------------------------------------------------
    def _on_stream_listening(self) -> None:
        # the stream's thread, when Alpaca confirms each (re)connect's listen: recover what the gap lost
        with self._lock:
            self.stream_connects += 1
            again = self.stream_connects > 1
        self._listening.set()
        if again:
            log.warning("alpaca stream reconnected (%d); recovering fills by REST", self.stream_connects)
            self._wake_poller.set()

    def _poll_loop(self) -> None:
        again_at: float | None = None  # a second recovery after a reconnect has settled
        while not self._closed.is_set():
            wait = self.poll_interval_s if again_at is None else max(0.0, again_at - time.monotonic())
            woken = self._wake_poller.wait(min(wait, self.poll_interval_s))
            self._wake_poller.clear()
            if self._closed.is_set():
                return
            if woken:
                # a fill racing the reconnect may reach REST just after this look: look once more later
                again_at = time.monotonic() + self.reconnect_settle_s
            elif again_at is not None and time.monotonic() >= again_at:
                again_at = None
            try:
                self.recover_fills()
            except Exception as exc:  # noqa: BLE001 - the next round tries again
                self._last_error = str(exc)
                log.warning("alpaca fill recovery failed: %s", exc)

    def recover_fills(self) -> int:
        """Deliver the fills Alpaca recorded since the watermark that no stream message delivered (blocking)."""
        with self._lock:
            # fills from before this connection are the order manager's reconcile() at start: not
            # re-delivered by every new process (the clocks may differ by a little: _CLOCK_SKEW_NS)
            since = max(0, self._fill_watermark_ns - self.fill_lookback_ns, self._connected_ns - _CLOCK_SKEW_NS)
        fills = self._fills_blocking(since)
        delivered = 0
        with self._lock:
            self.recoveries += 1
            for fill in fills:
                if fill.fill_id in self._fill_ids:
                    continue
                delivered += 1
                self.recovered_fills += 1  # counted before it is handed over: a reader sees both together
                log.warning("alpaca: fill %s of %s delivered from REST (not seen on the stream)",
                            fill.fill_id, fill.client_order_id)
                self._emit_locked(OrderEvent(fill.client_order_id, E.FILLED, fill.ts_event_ns, fill.ts_init_ns,
                                             fill=fill, reason="alpaca: recovered by REST"))
        return delivered

    def _fills_blocking(self, since_ns: int) -> list[Fill]:
        from datetime import UTC, datetime

        params: dict[str, Any] = {"direction": "asc", "page_size": 100}
        if since_ns > 0:
            params["after"] = datetime.fromtimestamp(since_ns / 1e9, UTC).isoformat()
        out: list[Fill] = []
        pages = 0
        while True:
            rows = self._call(self._client.get, "/account/activities/FILL", dict(params), what="read FILL activities")
            if not rows:
                return out
            for row in rows:
                order_id = str(row["order_id"])
                root = self._root_of_venue_id_blocking(order_id)
                out.append(am.fill_from_activity(row, client_order_id=root,
                                                 instrument_id=self._instrument_for(root, row["symbol"]),
                                                 ts_init_ns=now_ns()))
            pages += 1
            if len(rows) < params["page_size"] or pages >= 1000:
                return out
            params["page_token"] = rows[-1]["id"]

    def _root_of_venue_id_blocking(self, venue_id: str) -> str:
        with self._lock:
            known = self._root_of_venue_id.get(venue_id)
        if known is not None:
            return known
        order = self._call(self._client.get_order_by_id, venue_id, what=f"read order {venue_id}")
        root = am.root_client_order_id(order.client_order_id)
        with self._lock:
            self._root_of_venue_id[venue_id] = root
        return root

    # -- helpers -------------------------------------------------------------------------------------
    def _root_of(self, order: Any) -> str:
        with self._lock:
            return self._root_of_venue_id.get(str(order.id)) or am.root_client_order_id(order.client_order_id)

    def _symbol(self, instrument_id: str) -> str:
        try:
            instrument = get_instrument(instrument_id, dict(self._registry))
        except Exception as exc:  # noqa: BLE001 - unknown here: refused before sending
            raise NotSentError(f"Alpaca venue {self.account_id} does not know instrument {instrument_id!r}: "
                               f"{exc}") from exc
        if instrument.asset_class is not AssetClass.EQUITY:
            raise NotSentError(f"Alpaca venue {self.account_id} trades US equities and ETFs, not "
                               f"{instrument.asset_class} ({instrument_id})")
        return instrument.symbol

    def _instrument_id(self, symbol: str, exchange: Any = None) -> str:
        known = self._by_symbol.get(symbol)
        if known is not None:
            return known
        if exchange is not None:
            try:
                return f"{symbol}.{am.mic_from_alpaca(exchange)}"
            except Exception:  # noqa: BLE001 - fall through to the plain symbol
                pass
        return f"{symbol}.ALPACA"

    def _instrument_for(self, root: str, symbol: str) -> str:
        with self._lock:
            return self._instrument_of.get(root) or self._instrument_id(symbol)

    def _stream_endpoint(self) -> str:
        if self.stream_url:
            return self.stream_url
        return ("wss://paper-api.alpaca.markets/stream" if self.paper else "wss://api.alpaca.markets/stream")

    def _build_client(self) -> Any:
        import requests
        from alpaca.trading.client import TradingClient

        timeout = self.request_timeout_s

        class _TimedSession(requests.Session):
            # alpaca-py passes no timeout: a venue that never answers would hang the call forever
            def request(self, method: str, url: str, **kwargs: Any) -> Any:  # type: ignore[override]
                kwargs.setdefault("timeout", timeout)
                return super().request(method, url, **kwargs)

        client = TradingClient(self.__key_id, self.__secret_key, paper=self.paper, url_override=self.base_url)
        client._session = _TimedSession()
        client._retry = 0  # no blind resends: 429s are waited out here, a 504 is an unknown outcome
        return client

    def _start_stream(self) -> None:
        import websockets
        from alpaca.trading.stream import TradingStream

        venue = self

        class _Stream(TradingStream):
            async def _dispatch(self, msg: dict[str, Any]) -> None:
                # Alpaca's answer to 'listen' (alpaca-py ignores it): from here on fills come by stream
                if msg.get("stream") == "listening" and "trade_updates" in (msg.get("data") or {}).get("streams", []):
                    venue._on_stream_listening()
                await super()._dispatch(msg)

            async def _consume(self) -> None:
                try:
                    await super()._consume()
                except websockets.WebSocketException:
                    if self._should_run:
                        raise  # a real drop: alpaca-py reconnects (and our recovery follows the 'listening')
                    # closed by close(): not worth alpaca-py's 'websocket error, restarting' warning

        stream = _Stream(self.__key_id, self.__secret_key, paper=self.paper, url_override=self._stream_endpoint())
        stream._reconnect_min_backoff = self.stream_reconnect_min_s
        stream.subscribe_trade_updates(self._on_trade_update)
        self._stream = stream
        self._stream_thread = threading.Thread(target=stream.run, name="tradebook-alpaca-stream", daemon=True)
        self._stream_thread.start()

    async def _rest(self, fn: Callable[..., Any], *args: Any, what: str, sends: bool = False,
                    raw_errors: bool = False) -> Any:
        if self._client is None:
            raise NotSentError(f"Alpaca venue {self.account_id} is not connected; cannot {what}")
        return await asyncio.to_thread(self._call, fn, *args, what=what, sends=sends, raw_errors=raw_errors)

    def _call(self, fn: Callable[..., Any], *args: Any, what: str, sends: bool = False,
              raw_errors: bool = False) -> Any:
        """One REST call with our timeout; 429s waited out; failures as the port's errors (blocking)."""
        import requests
        from alpaca.common.exceptions import APIError

        attempt = 0
        while True:
            try:
                return fn(*args)
            except APIError as exc:
                status = getattr(exc, "status_code", None)
                if status in am.RETRYABLE_STATUSES and attempt < self.rate_limit_retries:
                    attempt += 1
                    wait = min(am.retry_after_s(exc, 1.0), self.rate_limit_max_wait_s)
                    self._rate_limited_until = time.monotonic() + wait
                    log.warning("alpaca: 429 on %s; waiting %.2f s (try %d of %d)", what, wait, attempt,
                                self.rate_limit_retries)
                    time.sleep(wait)
                    continue
                if raw_errors:
                    raise
                raise self._mapped(exc, what, sends=sends) from exc
            except requests.RequestException as exc:
                raise self._mapped(exc, what, sends=sends) from exc

    def _mapped(self, exc: BaseException, what: str, *, sends: bool) -> VenueError:
        import requests
        from alpaca.common.exceptions import APIError

        if isinstance(exc, APIError):
            status, code, message = am.api_error_parts(exc)
            if status == 429:
                return NotSentError(f"Alpaca: {what}: rate limited (429) after {self.rate_limit_retries} waits")
            if status is not None and status >= 500:
                cls = OutcomeUnknownError if sends else NotSentError
                return cls(f"Alpaca: {what}: HTTP {status} {message}" + (" (it may have been taken)" if sends else ""))
            if status == 401:
                return VenueRejectedError(f"Alpaca: {what}: not authorised (check the key pair)",
                                          code="venue_other", venue_code=code)
            return VenueRejectedError(f"Alpaca refused to {what}: HTTP {status} {message}",
                                      code=am.reject_code_from_alpaca(status, code, message), venue_code=code)
        if isinstance(exc, requests.RequestException):
            kind = type(exc).__name__
            if am.connection_never_opened(exc) or not sends:
                return NotSentError(f"Alpaca: {what}: {kind}: no connection to {self.base_url}")
            return OutcomeUnknownError(f"Alpaca: {what}: {kind} after sending (no answer within "
                                       f"{self.request_timeout_s} s or the connection dropped); it may have arrived")
        return OutcomeUnknownError(f"Alpaca: {what}: {type(exc).__name__}")

