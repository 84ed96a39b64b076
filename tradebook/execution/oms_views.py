"""What the order manager shows: orders, fills, alerts and rejection codes, as objects and as frames."""

from __future__ import annotations



import pandas as pd

from tradebook.errors import OrderError
from tradebook.execution.oms_common import FILL_FIELDS, Alert
from tradebook.model.orders import Order, OrderEvent, RejectCode, client_order_id_for


class OrderViews:
    """Read-only views, each a snapshot taken under the lock. Part of :class:`~tradebook.execution.oms.OrderManager`:
    it works on the manager's state (set up in ``OrderManager.__init__``) under its lock, like the rest of the
    class.
    """

    def order(self, client_order_id: str) -> Order:
        try:
            return self._orders[client_order_id]
        except KeyError:
            raise OrderError(f"no order {client_order_id!r} in this order manager") from None

    def order_for_intent(self, intent_id: str, account_id: str | None = None) -> Order:
        """The order of ``intent_id`` in ``account_id`` (default: the venue's account)."""
        return self.order(client_order_id_for(intent_id, account_id or self.venue.account_id))

    def orders(self) -> list[Order]:
        with self._lock:
            return list(self._orders.values())

    def working_orders(self) -> list[Order]:
        """Orders not final yet (orders in an unknown state included: they may still trade)."""
        with self._lock:
            return [self._orders[c] for c in self._working]

    def working_count(self) -> int:
        """How many orders are not final yet; O(1)."""
        return len(self._working)

    def counts(self) -> dict[str, int]:
        """Orders, working orders and fills so far, without building any of them."""
        with self._lock:
            return {"working_orders": len(self._working), "orders": len(self._orders), "fills": len(self._fills)}

    def unresolved(self) -> list[Order]:
        with self._lock:
            return [self._orders[c] for c in sorted(self._unresolved)]

    def blocked_instruments(self) -> set[str]:
        with self._lock:
            return {self._orders[c].intent.instrument_id for c in self._unresolved}

    def orphans(self) -> list[OrderEvent]:
        with self._lock:
            return list(self._orphans)

    def rejection_code(self, client_order_id: str) -> RejectCode | None:
        """Why the order was rejected, where a program must tell it apart (see :class:`RejectCode`), else None."""
        with self._lock:
            return self._reject_codes.get(client_order_id)

    def never_reached_venue(self) -> list[str]:
        """Client order ids rejected because they were made durable but never reached the venue, oldest first."""
        with self._lock:
            return [c for c, code in self._reject_codes.items() if code is RejectCode.NEVER_REACHED_VENUE]

    def alerts(self) -> list[Alert]:
        with self._lock:
            return list(self._alerts)

    def orders_frame(self) -> pd.DataFrame:
        """One row per order, current state; money and quantities as Decimal."""
        columns = ["client_order_id", "intent_id", "strategy_id", "account_id", "instrument_id", "side",
                   "order_type", "time_in_force", "quantity", "filled_qty", "remaining", "limit_price", "stop_price",
                   "avg_price", "fees", "status", "reason", "venue_order_id", "parent_id", "reduce_only",
                   "ts_init_ns", "ts_last_ns"]
        with self._lock:
            rows = [[o.client_order_id, o.intent.intent_id, o.intent.strategy_id, o.intent.account_id,
                     o.intent.instrument_id, str(o.intent.side), str(o.intent.order_type),
                     str(o.intent.time_in_force), o.total_quantity, o.filled_qty, o.remaining,
                     o.limit_price if o.limit_price is not None else o.intent.limit_price,
                     o.stop_price if o.stop_price is not None else o.intent.stop_price, o.avg_price, o.fees,
                     str(o.status), o.reason, o.venue_order_id, o.intent.parent_id, o.intent.reduce_only,
                     self._created_ns[o.client_order_id], max(o.last_ts_ns, self._created_ns[o.client_order_id])]
                    for o in self._orders.values()]
        return pd.DataFrame(rows, columns=columns)

    def fills_frame(self) -> pd.DataFrame:
        columns = [*FILL_FIELDS, "account_id", "strategy_id"]
        with self._lock:
            rows = [[getattr(f, name) for name in FILL_FIELDS] + [account, strategy]
                    for f, account, strategy in self._fills]
        frame = pd.DataFrame(rows, columns=columns)
        frame["side"] = frame["side"].astype(str) if len(frame) else frame["side"]
        return frame
