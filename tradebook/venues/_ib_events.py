"""ib-async's callbacks as tradebook order events: the part of the IB adapter that listens.

:class:`IbEvents` is mixed into :class:`~tradebook.venues.ib.IbVenue`: it keeps what the
adapter knows of each order (:class:`_Rec`, by client order id = IB's ``orderRef``) and turns
``orderStatus``, ``execDetails``, ``commissionReport`` and error messages into OrderEvents,
each fill once by ``execId``. The adapter's module docstring says which IB behaviours these
rules answer (ib-async's ``Cancelled`` on a refused modify or cancel, expiries that look like
cancels, commissions that follow their executions).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tradebook.model.orders import OrderEvent, OrderEventType, RejectCode
from tradebook.model.time import now_ns
from tradebook.venues import ib_mapping as im
from tradebook.venues.base import EventHandler

log = logging.getLogger("tradebook.venues.ib")

E = OrderEventType
_WORKING = frozenset({"PreSubmitted", "Submitted", "ApiUpdate", "ValidationError"})
_CANCELLED = frozenset({"Cancelled", "ApiCancelled"})
# an error naming a live order that refuses a request, not the order: ib-async's 'Cancelled' is undone
_REQUEST_REFUSALS = frozenset({im.IbErrorKind.CANCEL_REJECTED, im.IbErrorKind.MODIFY_REJECTED})


@dataclass
class _Rec:
    """What the adapter knows of one order, by tradebook's client order id."""

    coid: str
    instrument_id: str
    time_in_force: str  # IB's tif
    quantity: Decimal
    contract: Any = None
    order_id: int = 0  # IB's order id of the attempt that stands
    trade: Any = None
    accepted: bool = False
    done: bool = False
    final: OrderEventType | None = None
    cancel_requested: bool = False
    cancel_refused: bool = False  # IB answered the last cancel with a refusal (delivered as cancel_rejected)
    replace_pending: dict[str, Any] | None = None
    fill_ids: set[str] = field(default_factory=set)


class IbEvents:
    """Order events from ib-async's callbacks (mixed into IbVenue, which sets the state in its __init__)."""

    _handler: EventHandler | None
    _loop: asyncio.AbstractEventLoop | None
    _recs: dict[str, _Rec]
    _coid_of_order_id: dict[int, str]
    _waiters: dict[str, asyncio.Future]
    _pending_fills: dict[str, tuple[Any, asyncio.TimerHandle]]
    _delivered_fills: set[str]
    _handled_error: tuple[int, int] | None
    _pacing_errors: int
    _rate_limited_until: float
    _last_error: str
    pacing_backoff_s: float
    commission_wait_s: float

    @staticmethod
    def _venue_id(rec: _Rec) -> str:
        """IB's permanent id (permId) once IB has given it, else the order id of this connection."""
        perm = getattr(getattr(rec.trade, "order", None), "permId", 0)
        return str(perm or rec.order_id)
    def _emit(self, event: OrderEvent) -> None:
        if self._handler is None:
            return
        try:
            self._handler(event)
        except Exception:  # noqa: BLE001 - a failing receiver must not stop ib-async's reader
            log.exception("%r: the event handler failed on %s %s", self, event.event_type, event.client_order_id)

    def _rec_for(self, trade: Any) -> _Rec | None:
        rec = self._recs.get(trade.order.orderRef)
        if rec is None or trade.order.orderId != rec.order_id:
            return None  # not ours, or an attempt refused for pacing and sent again under a new id
        rec.trade = trade  # after a reconnect ib-async made a new Trade for the same order
        return rec

    def _on_status(self, trade: Any) -> None:
        rec = self._rec_for(trade)
        if rec is None:
            return
        status = trade.orderStatus.status
        entry = trade.log[-1] if trade.log else None
        code = entry.errorCode if entry is not None and (status in _CANCELLED or status == "ValidationError") else 0
        if code:
            self._handled_error = (trade.order.orderId, code)
        self._apply_status(rec, trade, status, code, entry.message if code else "")

    def _apply_status(self, rec: _Rec, trade: Any, status: str, code: int, text: str) -> None:
        waiter = self._waiters.get(rec.coid)
        if code and status == "ValidationError":  # a warning: the order stands; a modify it names did not apply
            if rec.replace_pending is not None:
                trade.orderStatus.status = "Submitted"
                self._refuse_replace(rec, code, text)
            return
        if code:
            kind = im.ib_error_kind(code)
            if rec.replace_pending is not None or kind in _REQUEST_REFUSALS:
                # the order stands at IB: a refused modify or cancel, which ib-async took for the order's end
                trade.orderStatus.status = "Submitted"
                if rec.replace_pending is not None:
                    self._refuse_replace(rec, code, text)
                else:
                    rec.cancel_refused = True
                    self._emit(OrderEvent(rec.coid, E.CANCEL_REJECTED, now_ns(), now_ns(), self._venue_id(rec),
                                          reason=f"IB error {code}: {text}"))
                return
            if kind is not im.IbErrorKind.ORDER_CANCELLED:
                if waiter is not None and not waiter.done():
                    waiter.set_result(("error", code, text))
                    return
                if not rec.done:
                    self._end(rec, E.REJECTED, f"IB error {code}: {text}", im.reject_code_for_ib_error(code))
                return
        if status in ("PendingSubmit", "ApiPending", "PendingCancel"):
            return
        if waiter is not None and not waiter.done():
            if status == "Inactive":
                waiter.set_result(("error", 201, "the order is inactive at IB"))
                return
            waiter.set_result(("accepted", 0, ""))
        if status == "Inactive":
            if not rec.done:
                self._end(rec, E.REJECTED, "IB holds the order inactive (refused)", RejectCode.VENUE_OTHER)
            return
        self._accept(rec)
        if status in _WORKING and rec.replace_pending is not None:
            change = {k: v for k, v in rec.replace_pending.items() if not k.startswith("_")}
            rec.replace_pending = None
            if "quantity" in change:
                rec.quantity = change["quantity"]
            self._emit(OrderEvent(rec.coid, E.REPLACED, now_ns(), now_ns(), self._venue_id(rec),
                                  reason="modified at IB", **change))
        elif status in _CANCELLED and not rec.done:
            if rec.cancel_requested:
                self._end(rec, E.CANCELLED, f"cancelled at IB{f' (error {code})' if code else ''}")
            elif rec.time_in_force == "DAY":
                self._end(rec, E.EXPIRED, "IB ended the DAY order without a cancel from us: the day closed")
            else:
                self._end(rec, E.CANCELLED, f"IB cancelled the {rec.time_in_force} order (nothing left to fill)")
        elif status == "Filled":
            rec.done = True  # its fills arrive (or arrived) as executions

    def _accept(self, rec: _Rec) -> None:
        if not rec.accepted:
            rec.accepted = True
            self._emit(OrderEvent(rec.coid, E.ACCEPTED, now_ns(), now_ns(), self._venue_id(rec)))

    def _end(self, rec: _Rec, kind: OrderEventType, reason: str, code: RejectCode | None = None) -> None:
        for exec_id in [x for x, (f, _) in self._pending_fills.items() if f.execution.orderRef == rec.coid]:
            self._deliver_pending(exec_id)  # a fill before the end is delivered before it
        rec.done, rec.final = True, kind
        self._emit(OrderEvent(rec.coid, kind, now_ns(), now_ns(), self._venue_id(rec), reason=reason, code=code))

    def _refuse_replace(self, rec: _Rec, code: int, text: str) -> None:
        old = rec.replace_pending or {}
        rec.replace_pending = None
        order = rec.trade.order if rec.trade is not None else None
        if order is not None:  # the order stands as it was: undo what the request wrote on ib-async's copy
            for key, value in old.get("_previous", {}).items():
                setattr(order, key, value)
        self._emit(OrderEvent(rec.coid, E.REPLACE_REJECTED, now_ns(), now_ns(), self._venue_id(rec),
                              reason=f"IB error {code}: {text}"))

    def _on_error(self, req_id: int, code: int, text: str, contract: Any) -> None:
        kind = im.ib_error_kind(code)
        if kind is im.IbErrorKind.PACING:
            self._pacing_errors += 1
            self._rate_limited_until = asyncio.get_running_loop().time() + self.pacing_backoff_s
        if kind is im.IbErrorKind.CONNECTIVITY:
            self._last_error = f"IB {code}: {text}"
        handled, self._handled_error = self._handled_error, None
        if handled == (req_id, code):
            return
        coid = self._coid_of_order_id.get(req_id)
        rec = self._recs.get(coid) if coid is not None else None
        if rec is None or rec.order_id != req_id:
            return
        event = im.event_for_ib_error(code)
        if event is E.CANCEL_REJECTED:  # the order was done already (ib-async passed no status)
            rec.cancel_refused = True
            self._emit(OrderEvent(rec.coid, E.CANCEL_REJECTED, now_ns(), now_ns(), self._venue_id(rec),
                                  reason=f"IB error {code}: {text}"))
        elif (event is E.REPLACE_REJECTED or kind is not im.IbErrorKind.WARNING) and rec.replace_pending:
            self._refuse_replace(rec, code, text)

    def _on_exec(self, trade: Any, fill: Any) -> None:
        rec = self._recs.get(fill.execution.orderRef)
        if rec is not None:
            self._take_fill(rec, fill, recovered=False)

    def _take_fill(self, rec: _Rec, fill: Any, *, recovered: bool) -> bool:
        """Deliver a fill once by execId: now if its commission is known, else when it comes (or the wait ends)."""
        exec_id = fill.execution.execId
        if exec_id in self._delivered_fills:
            return False
        if exec_id in self._pending_fills:
            if recovered:
                self._deliver_pending(exec_id)
                return True
            return False
        if recovered or fill.commissionReport.execId == exec_id:
            self._deliver_fill(rec, fill)
            return True
        timer = self._loop.call_later(self.commission_wait_s, self._deliver_pending, exec_id)
        self._pending_fills[exec_id] = (fill, timer)
        return True

    def _on_commission(self, trade: Any, fill: Any, report: Any) -> None:
        if fill.execution.execId in self._pending_fills:
            self._deliver_pending(fill.execution.execId)

    def _deliver_pending(self, exec_id: str) -> None:
        item = self._pending_fills.pop(exec_id, None)
        if item is None:
            return
        fill, timer = item
        timer.cancel()
        rec = self._recs.get(fill.execution.orderRef)
        if rec is not None:
            self._deliver_fill(rec, fill)

    def _deliver_fill(self, rec: _Rec, fill: Any) -> None:
        exec_id = fill.execution.execId
        if exec_id in self._delivered_fills:
            return
        self._delivered_fills.add(exec_id)
        report = fill.commissionReport if fill.commissionReport.execId == exec_id else None
        ours = im.fill_from_ib(fill.execution, report, instrument_id=rec.instrument_id, ts_init_ns=now_ns())
        if not rec.done:
            self._accept(rec)
        rec.fill_ids.add(exec_id)
        self._emit(OrderEvent(rec.coid, E.FILLED, ours.ts_event_ns, ours.ts_init_ns, self._venue_id(rec), fill=ours))
