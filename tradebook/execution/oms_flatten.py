"""The order manager's kill switch: cancel working orders, then close net positions with reduce-only market orders."""

from __future__ import annotations

import asyncio

from tradebook.errors import OrderError
from tradebook.execution.oms_common import S
from tradebook.model.instruments import Side
from tradebook.model.orders import Order, OrderIntent, OrderType, TimeInForce


class Flatten:
    """Cancel-all and flatten. Part of :class:`~tradebook.execution.oms.OrderManager`: it works on the manager's state
    (set up in ``OrderManager.__init__``) under its lock, like the rest of the class.
    """

    async def cancel_all(self, instrument_id: str | None = None) -> list[Order]:
        """Cancel every working order (of one instrument, or all); returns the orders asked to cancel."""
        with self._lock:
            targets = [o.client_order_id for o in self._orders.values()
                       if not o.is_done and o.status is not S.PENDING_CANCEL
                       and (instrument_id is None or o.intent.instrument_id == instrument_id)]
        result = []
        for coid in targets:
            try:
                result.append(await self.cancel(coid))
            except OrderError as exc:  # a replace in flight, an unresolved order: the venue answers first
                self._raise_alert("cancel_failed", f"could not cancel {coid}: {exc}")
        return result

    async def flatten(self, request_id: str, *, instrument_id: str | None = None,
                      cancel_timeout_s: float = 2.0) -> list[Order]:
        """Kill switch: cancel working orders, then close every net position with market orders.

        Closing intents are reduce-only, with ids derived from ``request_id`` (calling
        flatten again with the same id sends nothing new). Per instrument only the net
        position is traded: it is taken from the strategies holding it on the net side,
        so two strategies that offset each other are not both closed.
        """
        if not request_id:
            raise OrderError("flatten needs a request id (it makes the closing orders idempotent)")
        await self.cancel_all(instrument_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + cancel_timeout_s
        while loop.time() < deadline and any(
                o.status is S.PENDING_CANCEL for o in self.working_orders()
                if instrument_id is None or o.intent.instrument_id == instrument_id):
            await asyncio.sleep(0.001)  # cancels are answered as events; fills may still arrive meanwhile
        intents = self._closing_intents(request_id, instrument_id)
        orders = []
        for intent in intents:
            try:
                orders.append(await self.submit(intent))
            except OrderError as exc:
                self._raise_alert("flatten_failed", f"flatten {request_id}: {intent.instrument_id}: {exc}")
        return orders

    def _closing_intents(self, request_id: str, instrument_id: str | None) -> list[OrderIntent]:
        account = self.venue.account_id
        ts = self.clock()
        intents = []
        with self._lock:
            for (acct, inst), net in sorted(self.portfolio.net_positions(account).items()):
                if instrument_id is not None and inst != instrument_id:
                    continue
                holders = sorted((p for p in self.portfolio.positions()
                                  if p.account_id == acct and p.instrument_id == inst and p.quantity * net > 0),
                                 key=lambda p: (-abs(p.quantity), p.strategy_id))
                left = abs(net)
                for position in holders:
                    quantity = min(left, abs(position.quantity))
                    if quantity <= 0:
                        break
                    left -= quantity
                    intents.append(OrderIntent(
                        intent_id=f"{request_id}:flatten:{acct}:{position.strategy_id}:{inst}",
                        strategy_id=position.strategy_id, account_id=acct, instrument_id=inst,
                        side=Side.SELL if net > 0 else Side.BUY, quantity=quantity,
                        order_type=OrderType.MARKET, time_in_force=TimeInForce.DAY, ts_ns=ts,
                        reduce_only=True, reason=f"flatten {request_id}"))
        return intents
