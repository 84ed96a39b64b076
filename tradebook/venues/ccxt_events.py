"""What a ccxt venue tells the order manager: one tracker per client order id, each event once.

Every source of news about an order goes through :meth:`CcxtEvents._observe`: the reply
to a submit, cancel or replace, an update of the user data stream (ccxt.pro's
``watch_orders``), a REST poll. It tells ``accepted`` once, each fill once by the
exchange's trade id (asking REST for the trades whenever the exchange's filled quantity is
ahead of what was told), and a final cancel, expiry or rejection once, after the fills.

:class:`CcxtEvents` is the half of :class:`~tradebook.venues.ccxt_venue.CcxtVenue` that
listens; the venue provides the connection it uses: ``exchange`` (the ccxt client),
``_call`` (one request, errors mapped), ``_fetch_order`` and ``_adopt`` (lookups),
``_tracks``, ``_on_event``, the poll and backoff settings.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tradebook.errors import VenueError
from tradebook.model.instruments import Side
from tradebook.model.orders import Fill, OrderEvent, OrderEventType, OrderStatus
from tradebook.model.time import now_ns
from tradebook.venues import ccxt_mapping as cm
from tradebook.venues.base import Capability

log = logging.getLogger("tradebook.venues.ccxt_venue")

E, S = OrderEventType, OrderStatus
_ZERO = Decimal(0)
_FINAL_EVENTS = {S.CANCELLED: E.CANCELLED, S.EXPIRED: E.EXPIRED, S.REJECTED: E.REJECTED}
STREAM_CACHE_CHECK_S = 0.2  # how often ccxt.pro's order cache is read for updates no watch returned


def _report_key(order: Mapping[str, Any]) -> tuple[Any, ...]:
    """What tells one stream update of an order from the next (execution type, trade id, status, filled)."""
    info = order.get("info") or {}
    return (info.get("x"), info.get("t"), info.get("X"), info.get("z"), order.get("status"), order.get("filled"))


@dataclass
class OrderTrack:
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


class CcxtEvents:
    """Telling events once, from every source (see the module docstring); mixed into CcxtVenue."""

    # -- what the adapter tells: one path for every source --------------------------------------------------
    async def _emit(self, track: OrderTrack, event: OrderEvent) -> None:
        handler = self._on_event
        if handler is None:
            return
        try:
            handler(event)
        except Exception:  # noqa: BLE001 - the receiver's failure must not stop the stream or the poller
            log.exception("%s: the event handler failed on %s %s", self.name, event.event_type,
                          event.client_order_id)

    async def _observe(self, track: OrderTrack, order: Mapping[str, Any] | None, *, source: str,
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
            code = cm.reject_code_from_binance_reason(info.get("r")) if final is E.REJECTED else None
            await self._emit(track, OrderEvent(track.client_order_id, final, ts_event, ts, venue_order_id=venue_id,
                                               reason=reason, code=code))

    async def _tell_fill(self, track: OrderTrack, fill: Fill, venue_id: str | None) -> None:
        track.fill_ids.add(fill.fill_id)
        track.filled += fill.quantity
        await self._emit(track, OrderEvent(track.client_order_id, E.FILLED, fill.ts_event_ns, fill.ts_init_ns,
                                           venue_order_id=venue_id, fill=fill))

    def _reply_fills(self, track: OrderTrack, order: Mapping[str, Any], ts: int) -> list[Fill]:
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

    async def _sync_fills(self, track: OrderTrack, *, recovering: bool = False) -> None:
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
        live: list[Any] = []  # the websocket clients open at the last look: one closed or gone is a drop
        while self._connected:
            if self._dropped(live):
                # dropped between two watches: ccxt connects again without a word, the gap is in REST only
                self.reconnects += 1
                resync = True
                log.warning("%s: user data stream reconnected; asking REST about the gap", self.name)
            live = []
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
                    if self._dropped(live):
                        # a watch made while the old connection closed waits on it for ever
                        watch.cancel()
                        raise ConnectionError("the user data stream's connection closed under a waiting watch")
                    live = [c for c in self.exchange.clients.values() if not c.closed()]
                    self._stream_ok = True  # subscribed and not refused: a refusal fails the watch at once
                    await self._handle_stream_orders(self._unhandled_cached())
                live = [c for c in self.exchange.clients.values() if not c.closed()]
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
                live = []  # counted here already
                continue
            self._stream_ok = True
            failures = 0
            await self._handle_stream_orders(list(orders) + self._unhandled_cached())

    def _dropped(self, live: list[Any]) -> bool:
        """Whether a websocket client that was open at the last look has closed or been replaced since."""
        clients = list(self.exchange.clients.values())
        return any(c.closed() or not any(c is d for d in clients) for c in live)

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
        """Ask REST about every order not final: its status and fills, told once.

        One open-orders read per market covers every order still working (Binance weighs it
        like one or two single-order reads); only an order missing from it (ended, or not yet
        visible) is read on its own.
        """
        source = "reconnect" if all_open else "poll"
        following = [t for t in self._tracks.values() if not t.done and not t.replacing]
        for symbol in sorted({t.symbol for t in following}):
            working = {str(o.get("clientOrderId")): o
                       for o in await self._call(self.exchange.fetch_open_orders, symbol,
                                                 what=f"open orders {symbol}")}
            for track in [t for t in following if t.symbol == symbol]:
                async with track.lock:
                    if track.done or track.replacing:
                        continue
                    order = working.get(track.client_order_id)
                    if order is None or (track.venue_order_id is not None
                                         and str(order.get("id")) != track.venue_order_id):
                        order = await self._fetch_order(track)
                    if order is None:
                        grace_over = (track.unknown_since_ns is not None
                                      and now_ns() - track.unknown_since_ns > self.order_visibility_grace_ns)
                        if grace_over:
                            self._tracks.pop(track.client_order_id, None)  # never arrived: reconciliation rejects it
                        continue
                    await self._observe(track, order, source=source)
