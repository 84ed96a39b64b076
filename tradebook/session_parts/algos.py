"""Algo parents (TWAP/VWAP) of a session: slices released when due, watched, retried or escalated, and stopped
when one is refused; what :meth:`Session.scheduled` and :meth:`Session.parents` show."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pandas as pd

from tradebook.errors import DataError
from tradebook.execution.algos import Escalation, ParentOrder, ScheduledChild, TwapSchedule
from tradebook.execution.oms import Alert
from tradebook.model.orders import Order, OrderIntent, OrderStatus, Signal
from tradebook.session_parts.state import (
    _NS,
    MAX_DEFERRED_STEPS,
    AlgoParent,
    AlgoStatus,
    Decision,
    DecisionCode,
    DecisionOutcome,
    WatchedSlice,
)
from tradebook.store.records import intent_to_record

log = logging.getLogger(__name__)


def algo_record(parent: ParentOrder, children: Iterable[ScheduledChild], ts_ns: int) -> dict[str, Any]:
    schedule = parent.schedule
    if isinstance(schedule, TwapSchedule):
        described: dict[str, Any] = {"type": "twap", "slices": schedule.slices, "interval_s": schedule.interval_s}
    else:
        described = {"type": "vwap", "duration_minutes": schedule.duration_minutes,
                     "weights": [[m, w] for m, w in enumerate(schedule.minute_weights) if w > 0]}
    return {"kind": "algo", "ts_ns": ts_ns, "parent": intent_to_record(parent.intent), "schedule": described,
            "reference_price": parent.reference_price,
            "children": [[c.index, c.release_ts_ns, c.quantity] for c in children]}


class AlgoRunner:
    """Algo slices: release, watch, retry, stop (a part of Session: it reads the session's state)."""

    async def _release_due(self) -> None:
        due = sorted((s for s in self._scheduled if s.release_ts_ns <= self._now),
                     key=lambda s: (s.release_ts_ns, s.child.index))
        self._scheduled = [s for s in self._scheduled if s.release_ts_ns > self._now]
        for item in due:
            if self._parents.get(item.parent.parent_id, AlgoParent(None, 0)).stopped_reason is not None:
                continue  # an earlier slice of this step was refused: this one is cancelled with the rest
            instrument_id = item.parent.intent.instrument_id
            try:
                snapshot = self._reference_snapshot(instrument_id)
                intent = self.router.price_child(item.parent, item.child, snapshot,
                                                 adv=self.adv.get(instrument_id),
                                                 volatility_bps=self._volatility_bps(instrument_id),
                                                 ts_ns=self._now)
            except DataError as exc:  # no usable quote right now: the slice waits a second
                log.info("slice %s waits: %s", item.parent.child_id(item.child.index), exc)
                self._scheduled.append(replace(item, release_ts_ns=self._now + _NS))
                continue
            refused = self._watch_children(await self._send(intent, item.signal), intent, item.signal, item.parent)
            if refused is not None:
                self._stop_algo(refused)
        await self._retry_children()
        deferred, self._deferred = self._deferred, []
        for entry in deferred:
            entry.attempts += 1
            if entry.attempts > MAX_DEFERRED_STEPS:
                self.oms.reject(entry.intent, f"deferred for {MAX_DEFERRED_STEPS} steps: the spread or book never "
                                              "allowed it")
                continue
            await self._send(entry.intent, entry.signal, entry)

    def _watch_children(self, orders: list[Order], intent: OrderIntent, signal: Signal | None,
                        parent: Any) -> Order | None:
        """Watch the slices sent (retried if the venue rejects them or they stay unfilled); returns a slice
        refused before it left (hours, breaker, risk, kill switch), whose parent must stop."""
        interval = float(getattr(parent.schedule, "interval_s", 60.0))
        refused = None
        for order in orders:
            if order.client_order_id in self._refused:  # final: retrying cannot help, and neither can the rest
                refused = order
            else:
                self._children[order.client_order_id] = WatchedSlice(intent, signal, self._now, interval)
        return refused

    def _stop_algo(self, refused: Order) -> None:
        """The rule for a refused slice: its parent stops.

        When pre-trade risk (the kill switch included), market hours or the breaker refuses
        a slice (or a slice's retry), the parent's slices not yet released are cancelled,
        never sent, even after the refusal's cause is gone (a halted kill switch resumed):
        the strategy decides again with a new signal. Slices already working at the venue
        were accepted when sent and are left to finish (a halt keeps working orders; a
        flatten cancels them). The stop is journaled (a restart does not release the
        cancelled slices), alerted, recorded as a ``stopped`` decision of the parent's
        signal, and :meth:`parents` shows the parent ``stopped`` with the reason.
        """
        parent_id = refused.intent.parent_id
        state = self._parents.get(parent_id) if parent_id else None
        if state is None or state.stopped_reason is not None:
            return
        cancelled = sorted((s for s in self._scheduled if s.parent.parent_id == parent_id),
                           key=lambda s: s.child.index)
        self._scheduled = [s for s in self._scheduled if s.parent.parent_id != parent_id]
        undone = sum((Decimal(s.child.quantity) for s in cancelled), Decimal(0))
        reason = (f"slice {refused.intent.intent_id} refused ({refused.reason}); {len(cancelled)} slice(s) not yet "
                  f"released cancelled ({undone} undone)")
        state.stopped_reason = reason
        self._journal.append({"kind": "algo_stopped", "parent_id": parent_id, "ts_ns": self._now, "reason": reason,
                              "cancelled": [state.parent.child_id(s.child.index) for s in cancelled]})
        alert = Alert(self._now, "algo_stopped", f"{parent_id}: {reason}")
        self.alerts.append(alert)
        self._journal.append({"kind": "alert", "ts_ns": alert.ts_ns, "alert_kind": alert.kind,
                              "message": alert.message})
        intent = state.parent.intent
        signal_id = parent_id[len(intent.strategy_id) + 1:] if parent_id.startswith(intent.strategy_id + ":") \
            else parent_id
        self._journal_decision(Decision(self._now, intent.strategy_id, signal_id, intent.instrument_id,
                                        DecisionOutcome.STOPPED, reason, (refused.client_order_id,),
                                        DecisionCode.SLICE_REFUSED), None)
        log.warning("algo %s stopped: %s", parent_id, reason)

    async def _retry_children(self) -> None:
        """Re-price and resend algo slices the venue rejected or that outlived their interval unfilled.

        At most ``router.max_retries`` times each (one tick more aggressive per try, see
        :class:`RetryPolicy`); then the slice is escalated: an alert, and the rest of it is
        left undone rather than chased.
        """
        for coid, child in list(self._children.items()):
            order = self.oms.order(coid)
            if order.status is OrderStatus.FILLED:
                del self._children[coid]
                continue
            if order.status is OrderStatus.UNRESOLVED:
                continue  # its fate at the venue is unknown: reconciliation settles it, nothing is resent blind
            rejected_by_venue = order.status is OrderStatus.REJECTED and not order.reason.startswith("risk")
            finished_short = order.status in (OrderStatus.CANCELLED, OrderStatus.EXPIRED) and order.remaining > 0
            if not (rejected_by_venue or finished_short):
                if not order.is_done and not child.cancelling and self.retry_policy.is_unfilled(
                        child.released_ts_ns, self._now, interval_s=child.interval_s):
                    child.cancelling = True
                    await self.oms.cancel(coid)
                continue
            del self._children[coid]
            instrument = self._instrument(order.intent.instrument_id)
            try:
                snapshot = self._reference_snapshot(instrument.instrument_id)
            except DataError:
                self._children[coid] = child  # no usable quote now: look again next step
                continue
            attempt = child.attempt + 1
            outcome = self.retry_policy.retry(child.intent, attempt, snapshot, self._now, instrument=instrument,
                                              quantity=order.remaining,
                                              reason="rejected" if rejected_by_venue else "unfilled")
            if isinstance(outcome, Escalation):
                alert = Alert(self._now, "escalation", f"{outcome.intent_id}: {outcome.reason} after "
                                                       f"{outcome.attempts} retries; {order.remaining} left undone")
                self.alerts.append(alert)
                self._journal.append({"kind": "alert", "ts_ns": alert.ts_ns, "alert_kind": alert.kind,
                                      "message": alert.message})
                log.warning("escalation: %s", alert.message)
                continue
            for retried in await self._send(outcome, child.signal):
                if retried.client_order_id in self._refused:
                    self._stop_algo(retried)
                else:
                    self._children[retried.client_order_id] = WatchedSlice(outcome, child.signal, self._now,
                                                                     child.interval_s, attempt)

    def scheduled(self) -> pd.DataFrame:
        """Algo slices not released yet: parent, child id, release time, quantity."""
        rows = [(s.parent.parent_id, s.parent.child_id(s.child.index), s.release_ts_ns, s.child.quantity)
                for s in sorted(self._scheduled, key=lambda s: (s.release_ts_ns, s.child.index))]
        return pd.DataFrame(rows, columns=["parent_id", "intent_id", "release_ts_ns", "quantity"])

    def parents(self) -> pd.DataFrame:
        """Algo parents (TWAP/VWAP): status (working, done, stopped), slices scheduled and working, why stopped."""
        scheduled: dict[str, int] = {}
        for item in self._scheduled:
            scheduled[item.parent.parent_id] = scheduled.get(item.parent.parent_id, 0) + 1
        working: dict[str, int] = {}
        for child in self._children.values():
            working[child.intent.parent_id] = working.get(child.intent.parent_id, 0) + 1
        rows = []
        for parent_id, state in self._parents.items():
            intent = state.parent.intent
            if state.stopped_reason is not None:
                status = AlgoStatus.STOPPED
            elif scheduled.get(parent_id) or working.get(parent_id):
                status = AlgoStatus.WORKING
            else:
                status = AlgoStatus.DONE
            rows.append((parent_id, intent.instrument_id, str(intent.side), intent.quantity, state.ts_ns, str(status),
                         scheduled.get(parent_id, 0), working.get(parent_id, 0), state.stopped_reason or ""))
        return pd.DataFrame(rows, columns=["parent_id", "instrument_id", "side", "quantity", "ts_ns", "status",
                                           "slices_scheduled", "slices_working", "reason"])
