"""The order manager's reconciliation with the venue: orders in an unknown state settled by client order id, missed
fills booked once, positions compared (and adopted on request)."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

from tradebook.errors import OrderError, UnknownInstrumentError
from tradebook.execution.oms_common import (
    Alert,
    DEFAULT_FILL_LOOKBACK_NS,
    E,
    NEVER_REACHED_VENUE_REASON,
    RECONCILIATION_STRATEGY,
    S,
    protective_stop,
)
from tradebook.model.instruments import Side
from tradebook.model.orders import (
    Fill,
    IllegalTransitionError,
    OrderEvent,
    OrderEventType,
    OrderIntent,
    OrderStatus,
    RejectCode,
)
from tradebook.model.time import now_ns
from tradebook.store.records import adjustment_record, rejection_code_record
from tradebook.venues.base import VenueOrderState


class Reconciliation:
    """Compare with the venue and settle what differs. Part of :class:`~tradebook.execution.oms.OrderManager`: it works
    on the manager's state (set up in ``OrderManager.__init__``) under its lock, like the rest of the class.
    """

    async def reconcile(self, *, adopt_venue: bool = False,
                        fill_lookback_ns: int = DEFAULT_FILL_LOOKBACK_NS) -> list[Alert]:
        """Compare working orders and positions with the venue's; fix what can be fixed, alert on the rest.

        Missing fills are applied (by ``fill_id``, once); a venue's final state that we
        lack is adopted (reason ``'reconciled'``); an order the venue never received is
        sent now if it was still ``pending``, or rejected ``'never reached the venue'``
        if it was ``submitted``. Position mismatches raise alerts; with
        ``adopt_venue=True`` the venue's positions are adopted, booked as synthetic fills
        at the last price under the strategy ``_reconciliation`` (logged and journaled).
        """
        self._remember_loop()
        alerts: list[Alert] = []
        with self._lock:
            candidates = [o.client_order_id for o in self._orders.values() if not o.is_done]
            since = min((self._created_ns[c] for c in candidates), default=self.clock()) - fill_lookback_ns
        venue_fills: dict[str, list[Fill]] = {}
        for fill in await self.venue.fills(max(since, 0)):
            venue_fills.setdefault(fill.client_order_id, []).append(fill)
        to_send: list[OrderIntent] = []
        for coid in candidates:
            state = await self.venue.order_status(coid)
            with self._lock:
                self._reconcile_order(coid, state, venue_fills.get(coid, []), alerts, to_send)
        # fills the venue made on orders finished here (a fill after a cancel, missed while
        # disconnected): booked once, by fill id, as the stream would have
        with self._lock:
            late = [f for coid, fills in venue_fills.items() if coid not in candidates and coid in self._orders
                    for f in fills if f.fill_id not in self._fill_ids]
        if late:
            ts = self.clock()
            late.sort(key=lambda f: (f.ts_event_ns, f.fill_id))
            try:
                self._on_events_here([OrderEvent(f.client_order_id, E.FILLED, f.ts_event_ns, ts, fill=f,
                                                 reason="reconciled") for f in late])
            except OrderError as exc:
                alerts.append(self._raise_alert("reconcile_conflict", f"a venue fill could not be booked: {exc}"))
        for intent in to_send:
            await self._send(intent)
        with self._lock:
            for event in self._orphans[self._orphans_reported:]:
                alerts.append(self._raise_alert("orphan_event", f"{event.event_type} for unknown order "
                                                f"{event.client_order_id} (venue order {event.venue_order_id})"))
            self._orphans_reported = len(self._orphans)
            # entries whose protective stop was due when the process stopped
            stops = [protective_stop(o, self.clock()) for o in self._orders.values()
                     if o.is_done and o.filled_qty > 0 and o.intent.stop_loss is not None]
        for stop in stops:
            base, attempt = stop.intent_id, 0
            # a stop that never reached the venue is not resent under its id: it goes under a new one
            while self._reject_codes.get(stop.client_order_id) is RejectCode.NEVER_REACHED_VENUE:
                attempt += 1
                stop = dataclasses.replace(stop, intent_id=f"{base}:resend:{attempt}")
            if stop.client_order_id not in self._orders:
                await self.submit(stop)
        alerts.extend(await self._reconcile_positions(adopt_venue))
        return alerts

    def _reconcile_order(self, coid: str, state: VenueOrderState | None, fills: list[Fill],
                         alerts: list[Alert], to_send: list[OrderIntent]) -> None:
        order = self._orders[coid]
        ts = self.clock()

        def adopt(event_type: OrderEventType, reason: str = "reconciled", **kw: Any) -> None:
            event = OrderEvent(coid, event_type, ts, ts, venue_order_id=state.venue_order_id if state else None,
                               reason=reason, **kw)
            try:
                self._apply_own(event)
            except IllegalTransitionError as exc:
                alerts.append(self._raise_alert("reconcile_conflict", f"{coid}: the venue says {event_type} but "
                                                f"our order is {self._orders[coid].status}: {exc}"))

        was_unresolved = order.status is S.UNRESOLVED
        if state is None:
            since = self._unresolved_since.get(coid, 0) if was_unresolved or order.status is S.SUBMITTED else 0
            if now_ns() - since < self.venue.order_visibility_grace_ns:
                return  # the venue may not show an order it just received yet: still unresolved, ask again
            if order.status is S.PENDING:
                self._apply_own(OrderEvent(coid, E.SUBMITTED, ts, ts, reason="reconciled: sent after restart"))
                to_send.append(order.intent)
            elif order.status is S.SUBMITTED or was_unresolved:
                adopt(E.REJECTED, NEVER_REACHED_VENUE_REASON, code=RejectCode.NEVER_REACHED_VENUE)
                self._append_encoded((rejection_code_record(coid, RejectCode.NEVER_REACHED_VENUE),))
                self._reject_codes[coid] = RejectCode.NEVER_REACHED_VENUE
                alerts.append(self._raise_alert(
                    "never_reached_venue", f"{coid} ({order.intent.intent_id}) was made durable but never reached "
                    f"{self.venue.name}: rejected, not resent under its id"))
            else:
                alerts.append(self._raise_alert("order_unknown_to_venue", f"{coid} is {order.status} here but the "
                                                "venue does not know it; marked cancelled"))
                adopt(E.CANCELLED, "reconciled: unknown to the venue")
            self._unresolved.discard(coid)
            return
        if order.status is S.PENDING:
            adopt(E.SUBMITTED)
        for fill in sorted(fills, key=lambda f: (f.ts_event_ns, f.fill_id)):
            if fill.fill_id in self._fill_ids:
                continue
            try:
                self._check_fill(self._orders[coid], fill)
                adopt(E.FILLED, fill=fill)
            except OrderError as exc:
                alerts.append(self._raise_alert("reconcile_conflict", f"{coid}: venue fill {fill.fill_id}: {exc}"))
        order = self._orders[coid]
        if order.filled_qty != state.filled_qty:
            alerts.append(self._raise_alert("fill_mismatch", f"{coid}: filled {order.filled_qty} here, "
                                            f"{state.filled_qty} at the venue (fills missing from its fill list)"))
        venue_status = OrderStatus(state.status)
        if venue_status in (S.CANCELLED, S.REJECTED, S.EXPIRED) and order.status is not venue_status:
            adopt({S.CANCELLED: E.CANCELLED, S.REJECTED: E.REJECTED, S.EXPIRED: E.EXPIRED}[venue_status])
        elif venue_status in (S.ACCEPTED, S.PARTIALLY_FILLED):
            if order.status is S.SUBMITTED or order.status is S.UNRESOLVED:
                adopt(E.ACCEPTED)
            elif order.status is S.PENDING_CANCEL:
                adopt(E.CANCEL_REJECTED, "reconciled: the venue still has it working")
            elif order.status is S.PENDING_REPLACE:
                asked = self._replace_requests.get(coid)
                done = asked is not None and all(
                    want is None or want == have for want, have in ((asked.quantity, state.quantity),
                                                                   (asked.limit_price, state.limit_price),
                                                                   (asked.stop_price, state.stop_price)))
                if done:
                    adopt(E.REPLACED, quantity=asked.quantity, limit_price=asked.limit_price,
                          stop_price=asked.stop_price)
                else:
                    adopt(E.REPLACE_REJECTED, "reconciled: the venue kept the old terms")
        order = self._orders[coid]
        if order.status is S.UNRESOLVED:
            # the venue has it but says nothing our lifecycle can take (e.g. filled, its fills missing)
            alerts.append(self._raise_alert("still_unresolved", f"{coid}: the venue has it as {venue_status}, "
                                            f"filled {state.filled_qty}; still unresolved here"))
            return
        if was_unresolved:
            alerts.append(self._raise_alert("unresolved_settled", f"{coid}: found at {self.venue.name} "
                                            f"({venue_status}, filled {state.filled_qty}); now {order.status}"))
        self._unresolved.discard(coid)

    async def _reconcile_positions(self, adopt_venue: bool) -> list[Alert]:
        account = self.venue.account_id
        theirs = {k: v for k, v in (await self.venue.positions()).items() if v != 0}
        alerts = []
        with self._lock:
            ours = {inst: qty for (_, inst), qty in self.portfolio.net_positions(account).items()}
            for inst in sorted(set(ours) | set(theirs)):
                mine, venue_qty = ours.get(inst, Decimal(0)), theirs.get(inst, Decimal(0))
                if mine == venue_qty:
                    continue
                alerts.append(self._raise_alert("position_mismatch", f"{account} {inst}: {mine} here, {venue_qty} "
                                                f"at {self.venue.name}"))
                if adopt_venue:
                    alert = self._adopt_position(account, inst, venue_qty - mine)
                    alerts.append(alert)
        return alerts

    def _adopt_position(self, account: str, instrument_id: str, difference: Decimal) -> Alert:
        try:
            instrument = self._instrument(instrument_id)
        except UnknownInstrumentError as exc:
            return self._raise_alert("adopt_failed", f"cannot adopt {instrument_id}: {exc}")
        price = self.portfolio.last_price(instrument_id)
        if price is None:
            return self._raise_alert("adopt_failed", f"cannot adopt the venue's {instrument_id} position: no price "
                                                     "known to book it at; mark the instrument first")
        ts = self.clock()
        fill = Fill(fill_id=f"reconciliation:{account}:{instrument_id}:{ts}", client_order_id="reconciliation",
                    instrument_id=instrument_id, side=Side.BUY if difference > 0 else Side.SELL,
                    quantity=abs(difference), price=price, fee=Decimal(0), liquidity="taker", ts_event_ns=ts,
                    ts_init_ns=ts)
        self._append_encoded((adjustment_record(account, RECONCILIATION_STRATEGY, fill),))
        self.portfolio.apply_fill(fill, instrument, account, RECONCILIATION_STRATEGY)
        self._fills.append((fill, account, RECONCILIATION_STRATEGY))
        self._fill_ids.add(fill.fill_id)
        self._touched_positions.add((account, RECONCILIATION_STRATEGY, instrument_id))
        return self._raise_alert("position_adopted", f"{account} {instrument_id}: adopted the venue's position "
                                                     f"({difference:+} at {price})")
