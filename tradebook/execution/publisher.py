"""What a session publishes on its :class:`~tradebook.execution.bus.EventBus`: the payload of each event kind.

:class:`SessionPublisher` is attached to the session's order managers (order changes,
fills, alerts, store flushes), its kill switch and its state, and is handed the last quote
of each step; every method is quick and never raises (it runs on the order path), and a
payload nobody subscribes to is not built.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from tradebook.execution.bus import EventBus
from tradebook.execution.oms import PROTECTIVE_STOP_SUFFIX
from tradebook.model.orders import OrderIntent, OrderType

if TYPE_CHECKING:
    from tradebook.execution.oms import Alert, OrderManager
    from tradebook.execution.risk import KillSwitchTransition
    from tradebook.model.orders import Fill, Order

# How much a human needs to look at an order manager's alert kind (oms._raise_alert); unlisted: warning.
ALERT_SEVERITY: Mapping[str, str] = MappingProxyType({
    "armed": "info", "position_adopted": "info", "paper_fallback": "warning", "late_fill": "info",
    "outcome_unknown": "critical", "reconcile_conflict": "critical", "position_mismatch": "critical",
    "fill_mismatch": "critical", "order_unknown_to_venue": "critical", "flatten_failed": "critical",
    "stop_not_sent": "critical", "adopt_failed": "critical",
})
QUOTE_INTERVAL_NS = 1_000_000_000  # at most one "quote" event per instrument per second of session time


def is_protective_stop(intent: OrderIntent) -> bool:
    """The stop the order manager attached to a filled entry (its ``stop_loss``), not a strategy's own stop."""
    return intent.order_type is OrderType.STOP and intent.intent_id.endswith(PROTECTIVE_STOP_SUFFIX)


def order_payload(order: Order) -> dict[str, Any]:
    """An ``"order"`` event's fields: the order's identity and its state now (money as Decimal)."""
    intent = order.intent
    return {"client_order_id": order.client_order_id, "intent_id": intent.intent_id,
            "strategy_id": intent.strategy_id, "account_id": intent.account_id,
            "instrument_id": intent.instrument_id, "side": intent.side.value, "order_type": intent.order_type.value,
            "status": order.status.value, "quantity": order.total_quantity, "filled_qty": order.filled_qty,
            "avg_price": order.avg_price, "fees": order.fees,
            "limit_price": order.limit_price if order.limit_price is not None else intent.limit_price,
            "stop_price": order.stop_price if order.stop_price is not None else intent.stop_price,
            "reason": order.reason, "parent_id": intent.parent_id, "reduce_only": intent.reduce_only,
            "is_protective_stop": is_protective_stop(intent)}


def fill_payload(fill: Fill, order: Order) -> dict[str, Any]:
    """A ``"fill"`` event's fields: the fill's own, and whose order it filled."""
    return {"fill_id": fill.fill_id, "client_order_id": fill.client_order_id, "instrument_id": fill.instrument_id,
            "side": fill.side.value, "quantity": fill.quantity, "price": fill.price, "fee": fill.fee,
            "liquidity": fill.liquidity, "ts_event_ns": fill.ts_event_ns, "ts_init_ns": fill.ts_init_ns,
            "account_id": order.intent.account_id, "strategy_id": order.intent.strategy_id,
            "order_type": order.intent.order_type.value, "limit_price": order.intent.limit_price,
            "is_protective_stop": is_protective_stop(order.intent)}


class SessionPublisher:
    """The session's side of the bus: what its order managers, kill switch, state and quotes publish.

    ``clock`` gives the event times (the session's order-path clock). Every method is quick
    and never raises: it runs on the order path.
    """

    def __init__(self, bus: EventBus, clock: Callable[[], int]) -> None:
        self.bus = bus
        self._clock = clock
        self._quote_due: dict[str, int] = {}  # instrument -> session time (ns) its next quote event is due

    def _now(self) -> int:
        try:
            return int(self._clock())
        except Exception:  # noqa: BLE001 - a clock that fails still lets the event out, with wall time
            return time.time_ns()

    def attach(self, oms: OrderManager) -> None:
        """Publish ``oms``'s order changes, fills, alerts and flushes."""
        oms.subscribe(on_order=self.order, on_fill=self.fill, on_alert=self.alert, on_flush=self.flushed)

    def order(self, order: Order) -> None:
        if self.bus.wants("order"):  # build the payload only when someone may listen
            self.bus.publish("order", order_payload(order), max(order.last_ts_ns, 0) or self._now())

    def fill(self, fill: Fill, order: Order) -> None:
        if self.bus.wants("fill"):
            self.bus.publish("fill", fill_payload(fill, order), fill.ts_event_ns)

    def alert(self, alert: Alert, *, journaled: bool = True) -> None:
        """``journaled``: the order manager's journal holds it (its copy reaches the store's ``alerts``); the
        session's own alerts (a failed TCA update) are not, and the alert center stores them."""
        self.bus.publish("alert", {"kind": alert.kind, "message": alert.message,
                                   "severity": ALERT_SEVERITY.get(alert.kind, "warning"), "subject": "",
                                   "source": "oms" if journaled else "session"}, alert.ts_ns)

    def flushed(self, journal: str, position: int, records: int) -> None:
        self.bus.publish("flushed", {"journal": journal, "position": position, "records": records}, self._now())

    def state(self, state: str) -> None:
        self.bus.publish("session", {"state": str(state)}, self._now())

    def kill_switch(self, transition: KillSwitchTransition) -> None:
        self.bus.publish("session", {"kill_switch": transition.to_mode.value, "from": transition.from_mode.value,
                                     "reason": transition.reason, "flatten_requested": transition.flatten_requested},
                         transition.ts_ns)

    def quote(self, instrument_id: str, ts_ns: int, bid: float, ask: float) -> None:
        """Publish the instrument's quote unless one went out less than a second of session time ago."""
        if ts_ns < self._quote_due.get(instrument_id, 0) or not self.bus.wants("quote"):
            return
        self._quote_due[instrument_id] = ts_ns + QUOTE_INTERVAL_NS
        self.bus.publish("quote", {"instrument_id": instrument_id, "bid": bid, "ask": ask}, ts_ns)
