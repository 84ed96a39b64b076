"""The paper venue's bridge to its matching engines: requests stamped and sent to the engine, and the engine's fills
and status changes journaled, booked and queued as events.
"""

from __future__ import annotations

from decimal import Decimal, ROUND_HALF_EVEN

from tradebook.model.instruments import Instrument, Side
from tradebook.model.orders import Fill, OrderEvent, OrderEventType, OrderIntent, OrderStatus, OrderType, TimeInForce
from tradebook.sim import orders as sim_orders
from tradebook.sim.engine import EngineOrder
from tradebook.sim.orders import OrderSpec, conformed_order, request_latency_ns
from tradebook.venues.paper_orders import (
    InstrumentSlot,
    MARGINED,
    OrderShape,
    SHAPE_CACHE_SIZE,
    VenueOrder,
    ZERO,
    decimal_of,
    price_steps,
    remember,
)
from tradebook.venues.paper_records import accepted_record, fill_record


class EngineBridge:
    """Requests to the engines and their callbacks. Part of :class:`~tradebook.venues.paper.PaperVenue`: it works on
    the venue's state (set up in ``PaperVenue.__init__``) under its lock, like the rest of the class.
    """

    @staticmethod
    def _order_shape(slot: InstrumentSlot, intent: OrderIntent, side: Side, order_type: OrderType, tif: TimeInForce,
                     ts: int) -> OrderShape:
        """The engine's order and the conformed quantity, limit and stop of ``intent`` (:class:`OrderShape`).

        Checked once for the engine and the books (:func:`~tradebook.sim.orders.conformed_order`).
        Orders of a shape seen before come from the slot's cache, as in
        :func:`~tradebook.sim.orders.order_maker`: for Decimal amounts the result depends on their
        values alone, and on nothing else but the instrument, except a DAY order's expiry
        (never cached). Refused shapes are never cached: they are checked, and refused, every time.
        The amounts are keyed by their text (one value may be written several ways: each gets its
        entry, with the same answer), which is cheaper than hashing a new Decimal.
        """
        quantity, limit, stop = intent.quantity, intent.limit_price, intent.stop_price
        key = None
        if tif is not TimeInForce.DAY and quantity.__class__ is Decimal and quantity.is_finite() \
                and (limit is None or (limit.__class__ is Decimal and limit.is_finite())) \
                and (stop is None or (stop.__class__ is Decimal and stop.is_finite())):
            key = (side, str(quantity), order_type, tif, None if limit is None else str(limit),
                   None if stop is None else str(stop))
            cached = slot.shapes.get(key)
            if cached is not None:
                return cached
        shape = OrderShape(*conformed_order(slot.instrument, side, quantity, order_type.value, limit_px=limit,
                                        stop_px=stop, tif=tif.value, ts_ns=ts), side, order_type, tif)
        if key is not None:
            if len(slot.shapes) >= SHAPE_CACHE_SIZE:
                slot.shapes.clear()  # sized orders rarely repeat: keep the cache small rather than clever
            slot.shapes[key] = shape
        return shape

    def _send(self, slot: InstrumentSlot, order: VenueOrder, spec: OrderSpec, ts: int, k: int) -> None:
        oid = slot.engine.submit(spec, ts)
        self._count_request(slot, order, ts, k)
        order.engine_id = oid
        order.engine_offset = order.filled_qty
        slot.orders[oid] = order

    def _request_ts(self, slot: InstrumentSlot, base_ts: int, order: VenueOrder | None = None) -> tuple[int, int]:
        """(stamp, request number) of the next request on ``slot``: never before earlier requests nor, for
        ``order``, arriving before its previous request (one connection delivers in order)."""
        ts = max(int(base_ts), slot.last_request_ns)
        k = slot.n_requests
        if order is not None:
            lag = self._latency(slot, k)
            if ts + lag < order.last_arrival_ns:
                ts = order.last_arrival_ns - lag
        return ts, k

    def _latency(self, slot: InstrumentSlot, k: int) -> int:
        return request_latency_ns(self.seed, k, 0, slot.ack_median_ns, slot.latency_sigma)

    def _count_request(self, slot: InstrumentSlot, order: VenueOrder, ts: int, k: int) -> int:
        slot.n_requests = k + 1
        slot.last_request_ns = ts
        arrival = ts + self._latency(slot, k)
        order.last_arrival_ns = max(order.last_arrival_ns, arrival)
        return arrival

    def _on_engine_fill(self, slot: InstrumentSlot, engine_order: EngineOrder, row: tuple) -> None:
        """The engine filled ``engine_order``: ``row`` is the fill in ``FILL_COLUMNS`` order."""
        order = slot.orders[engine_order.oid]
        if order.replace_pending is not None:
            self._sync_replace(slot, order, engine_order)
        instrument = slot.instrument
        _, ts, _, _, raw_quantity, raw_price, liquidity, _ = row
        # the engine's floats as Decimals: the same few sizes and prices recur, so converted once each
        quantity = slot.fill_quantities.get(raw_quantity)
        if quantity is None:
            quantity = (decimal_of(raw_quantity) / instrument.lot_size).to_integral_value(ROUND_HALF_EVEN) \
                * instrument.lot_size
            remember(slot.fill_quantities, raw_quantity, quantity)
        engine_left = engine_order.quantity - engine_order.filled
        if engine_left <= slot.lot_dust or quantity > order.remaining:
            quantity = order.remaining  # the engine completed the order: the Decimal books close exactly
        price = slot.fill_prices.get(raw_price)
        if price is None:
            price = self._fill_price(instrument, float(raw_price))
            remember(slot.fill_prices, raw_price, price)
        maker = liquidity == "maker"
        fee = self._fee(slot, quantity, price, maker=maker)
        ts = int(ts)
        ts_init = self._clock()
        coid, fill_id, liquidity = order.client_order_id, f"{order.venue_order_id}-{order.n_fills + 1}", \
            "maker" if maker else "taker"
        fill = Fill(fill_id=fill_id, client_order_id=coid, instrument_id=order.instrument_id, side=order.side,
                    quantity=quantity, price=price, fee=fee, liquidity=liquidity, ts_event_ns=ts, ts_init_ns=ts_init)
        cash, position, avg = self._after_fill(instrument, order.sign, quantity, price, fee)
        self._write_encoded(fill_record(ts, coid, fill_id, quantity, price, fee, liquidity, ts_init, cash, position))
        self._apply_fill(order, fill, cash, position, avg)
        self._outbox.append(OrderEvent(coid, OrderEventType.FILLED, ts, ts_init, venue_order_id=order.venue_order_id,
                                       fill=fill))

    @staticmethod
    def _fill_price(instrument: Instrument, raw: float) -> Decimal:
        """The engine's float price as a Decimal: on the tick when it is one, else to a hundredth of its precision."""
        value = decimal_of(raw)
        tick = instrument.tick_for(abs(value)) if instrument.tick_schedule else instrument.tick_size
        fine_step, tick_step = price_steps(tick.as_tuple().exponent)
        fine = value.quantize(fine_step, ROUND_HALF_EVEN)
        coarse = fine.quantize(tick_step, ROUND_HALF_EVEN)
        return coarse if coarse == fine else fine

    def _after_fill(self, instrument: Instrument, sign: int, quantity: Decimal, price: Decimal,
                    fee: Decimal) -> tuple[Decimal, Decimal, Decimal | None]:
        """(cash, position, average price) after a fill; nothing is changed."""
        instrument_id = instrument.instrument_id
        position = self._positions.get(instrument_id, ZERO)
        avg = self._avg_price.get(instrument_id)
        signed = quantity * sign
        new_position = position + signed
        if instrument.asset_class in MARGINED:
            cash = self._cash - fee
            if position != 0 and (position > 0) != (signed > 0):
                closing = min(abs(signed), abs(position))
                cash += (price - avg) * closing * (1 if position > 0 else -1) * instrument.multiplier
        else:
            cash = self._cash - signed * price * instrument.multiplier - fee
        if new_position == 0:
            new_avg = None
        elif position == 0 or (position > 0) == (signed > 0):
            new_avg = (avg or ZERO) * abs(position) / abs(new_position) + price * quantity / abs(new_position)
        elif (new_position > 0) != (position > 0):
            new_avg = price  # crossed through flat: the rest is a new position at this price
        else:
            new_avg = avg  # reduced: the entry price of what is left does not change
        return cash, new_position, new_avg

    def _apply_fill(self, order: VenueOrder, fill: Fill, cash: Decimal, position: Decimal,
                    avg: Decimal | None) -> None:
        self._cash = cash
        self._positions[fill.instrument_id] = position
        if avg is None:
            self._avg_price.pop(fill.instrument_id, None)
        else:
            self._avg_price[fill.instrument_id] = avg
        self._release(order)
        order.filled_qty += fill.quantity
        order.notional += fill.quantity * fill.price
        order.fees += fill.fee
        order.n_fills += 1
        self._fills.append(fill)
        if order.filled_qty >= order.quantity:
            self._finish(order, OrderStatus.FILLED, "")
        elif order.client_order_id in self._working:
            self._hold(order, self._slots[order.instrument_id])

    def _finish(self, order: VenueOrder, status: OrderStatus, reason: str) -> None:
        order.done_status = status
        self._working.pop(order.client_order_id, None)
        self._release(order)
        order.reason = reason
        order.cancel_pending = False
        order.replace_pending = None

    def _on_engine_status(self, slot: InstrumentSlot, engine_order: EngineOrder) -> None:
        """The engine changed ``engine_order``'s status."""
        order = slot.orders[engine_order.oid]
        if order.replace_pending is not None:
            self._sync_replace(slot, order, engine_order)
        status = engine_order.status
        if status is sim_orders.OrderStatus.WORKING:
            if order.acked:
                return  # a recovered order arriving again: the venue acknowledged it before the restart
            ts = int(engine_order.arrival_ts)
            coid = order.client_order_id
            self._write_encoded(accepted_record(ts, coid))
            order.acked = True
            self._outbox.append(OrderEvent(coid, OrderEventType.ACCEPTED, ts, self._clock(),
                                           venue_order_id=order.venue_order_id))
        elif status is sim_orders.OrderStatus.CANCELLED or status is sim_orders.OrderStatus.EXPIRED:
            if order.is_done:
                return
            ts = int(engine_order.done_ts)
            expired = status is sim_orders.OrderStatus.EXPIRED
            reason = self._end_reason(order, expired)
            self._write({"kind": "expired" if expired else "cancelled", "ts": ts,
                         "client_order_id": order.client_order_id, "reason": reason})
            self._finish(order, OrderStatus.EXPIRED if expired else OrderStatus.CANCELLED, reason)
            self._outbox.append(OrderEvent(order.client_order_id,
                                           OrderEventType.EXPIRED if expired else OrderEventType.CANCELLED,
                                           ts, self._clock(), venue_order_id=order.venue_order_id, reason=reason))
    @staticmethod
    def _end_reason(order: VenueOrder, expired: bool) -> str:
        if expired:
            if order.time_in_force is TimeInForce.DAY:
                return "day order expired at the session close"
            return "expired at its expiry time"
        if order.cancel_pending:
            return "cancelled on request"
        if order.time_in_force is TimeInForce.IOC:
            return "IOC: the unfilled remainder was cancelled at arrival"
        if order.time_in_force is TimeInForce.FOK:
            return "FOK: the whole quantity could not be filled at arrival"
        return "cancelled by the venue"

    def _sync_replace(self, slot: InstrumentSlot, order: VenueOrder, engine_order: EngineOrder | None = None) -> None:
        """Report a replace the engine has applied (it applies them silently) before anything after it.

        ``engine_order``: the engine's state of ``order`` when the caller has it at hand.
        """
        if order.replace_pending is None or order.engine_id is None:
            return
        new_qty, new_limit, arrival = order.replace_pending
        if engine_order is None:
            engine_order = slot.engine.order_state(order.engine_id)
        applied = (new_qty is None or engine_order.quantity == float(new_qty - order.engine_offset)) and \
            (new_limit is None or engine_order.limit == float(new_limit))
        if not applied:
            return
        self._write({"kind": "replaced", "ts": arrival, "client_order_id": order.client_order_id,
                     "quantity": new_qty, "limit_price": new_limit})
        self._apply_replace(order, new_qty, new_limit)
        self._outbox.append(OrderEvent(order.client_order_id, OrderEventType.REPLACED, arrival, self._clock(),
                                       venue_order_id=order.venue_order_id, quantity=order.quantity,
                                       limit_price=order.limit_price))

    def _apply_replace(self, order: VenueOrder, new_qty: Decimal | None, new_limit: Decimal | None) -> None:
        self._release(order)
        if new_qty is not None:
            order.quantity = new_qty
        if new_limit is not None:
            order.limit_price = new_limit
            order.reference_price = new_limit
        order.replace_pending = None
        if order.client_order_id in self._working:
            self._hold(order, self._slots[order.instrument_id])

    def _settle_replaces(self, slot: InstrumentSlot) -> None:
        """After data: replaces the engine applied are reported; those it refused at arrival are rejected."""
        if not slot.replacing:
            return  # no replace pending on this instrument: no scan of the working orders on every quote
        for order in [o for o in self._working.values() if o.replace_pending is not None
                      and o.instrument_id == slot.instrument.instrument_id]:
            self._sync_replace(slot, order)
            if order.replace_pending is None or order.replace_pending[2] > slot.processed_ns:
                continue
            arrival = order.replace_pending[2]
            reason = (f"new quantity {order.replace_pending[0]} does not exceed the filled quantity "
                      f"{order.filled_qty} when the replace arrived")
            self._write({"kind": "replace_rejected", "ts": arrival, "client_order_id": order.client_order_id,
                         "reason": reason})
            order.replace_pending = None
            self._outbox.append(OrderEvent(order.client_order_id, OrderEventType.REPLACE_REJECTED, arrival,
                                           self._clock(), venue_order_id=order.venue_order_id, reason=reason))
        for coid in [c for c, o in slot.replacing.items() if o.replace_pending is None]:
            del slot.replacing[coid]  # answered (or finished)
