"""How a venue call that raised ends for its order: rejected with its code, held unresolved, or left to the venue's
events.

The rules are in the module doc of :mod:`tradebook.execution.oms` (venue failures)."""

from __future__ import annotations

import logging
from typing import Any

from tradebook.errors import NotSentError, OutcomeUnknownError, VenueRejectedError
from tradebook.execution.oms_common import DUPLICATE_REASON, E, NEVER_REACHED_VENUE_REASON, S
from tradebook.model.orders import OrderEvent, OrderEventType, OrderStatus, RejectCode
from tradebook.store.records import duplicate_record, rejection_code_record
from tradebook.venues.base import Capability

log = logging.getLogger("tradebook.execution.oms")  # the order manager logs under one name, whichever part speaks


def reject_code_of(code: Any) -> RejectCode:
    """An adapter's RejectCode (or its value); anything else is the venue's other reason."""
    try:
        return RejectCode(code)
    except ValueError:
        log.warning("venue rejection code %r is not a RejectCode; recorded as %s", code, RejectCode.VENUE_OTHER)
        return RejectCode.VENUE_OTHER


class VenueFailures:
    """The failure semantics of submit, cancel and replace. Part of :class:`~tradebook.execution.oms.OrderManager`: it
    works on the manager's state (set up in ``OrderManager.__init__``) under its lock, like the rest of the
    class.
    """

    def _outcome_unknown(self, exc: BaseException) -> bool:
        """Whether a venue failure leaves open that the request arrived.

        Adapters say so with OutcomeUnknownError. Any other exception from a live venue
        (an SDK error an adapter failed to map) counts as unknown too: a resend could trade
        twice. A simulated venue fails locally, before anything happened.
        """
        if isinstance(exc, OutcomeUnknownError):
            return True
        if isinstance(exc, (NotSentError, VenueRejectedError)):
            return False
        return Capability.SIMULATED not in self.venue.capabilities

    def _send_failed(self, coid: str, exc: BaseException) -> None:
        """A submit that raised: rejected (with its code), held unresolved, or left to the venue's events."""
        with self._lock:
            order = self._orders[coid]
            if order.status is not S.SUBMITTED:  # the venue answered before failing: its events decide
                log.warning("venue %s raised after answering %s: %s", self.venue.name, coid, exc)
                return
            ts = self.clock()
            name = self.venue.name
            if self._outcome_unknown(exc):
                self._apply_own(OrderEvent(coid, E.OUTCOME_UNKNOWN, ts, ts, reason=f"outcome unknown: {exc}"))
                self._unresolved.add(coid)
                self._raise_alert("outcome_unknown", f"{coid} ({order.intent.intent_id}): {name} may or may not "
                                  f"have it ({exc}); {order.intent.instrument_id} takes no new order until "
                                  "reconcile() asks the venue; it is never resent blind")
                return
            if isinstance(exc, VenueRejectedError):
                code = reject_code_of(exc.code)
                if code is RejectCode.DUPLICATE_CLIENT_ID:
                    # the venue holds this id already (an earlier send did arrive): its state is the venue's
                    event = OrderEvent(coid, E.REJECTED, ts, ts, reason=f"{DUPLICATE_REASON}: {exc}")
                    self._append_encoded((duplicate_record(event),))
                    self._unresolved.add(coid)
                    self._raise_alert("duplicate_client_id", f"{name} already holds {coid}; reconciling its state")
                    return
                venue_code = f" [{exc.venue_code}]" if exc.venue_code else ""
                self._apply_own(OrderEvent(coid, E.REJECTED, ts, ts, reason=f"{name} rejected: {exc}{venue_code}",
                                           code=code))
                self._record_code(coid, code)
            elif isinstance(exc, NotSentError):
                self._apply_own(OrderEvent(coid, E.REJECTED, ts, ts, reason=f"{NEVER_REACHED_VENUE_REASON}: {exc}",
                                           code=RejectCode.NEVER_REACHED_VENUE))
                self._record_code(coid, RejectCode.NEVER_REACHED_VENUE)
                self._raise_alert("not_sent", f"{coid} ({order.intent.intent_id}) could not be sent to {name}: "
                                  f"{exc}; rejected")
            else:  # a simulated venue's own failure: nothing left this process
                self._apply_own(OrderEvent(coid, E.REJECTED, ts, ts, reason=f"venue error: {exc}"))

    def _record_code(self, coid: str, code: RejectCode) -> None:
        self._append_encoded((rejection_code_record(coid, code),))
        self._reject_codes[coid] = code

    async def _ask_venue(self, client_order_id: str, pending: OrderStatus, refused: OrderEventType,
                         request: Any) -> None:
        """Send a cancel or replace; a venue that refuses (or certainly did not get it) answers as a refusal.

        When the outcome is unknown the order stays pending cancel (replace) and unresolved:
        reconciliation asks the venue what became of it.
        """
        try:
            await request
        except Exception as exc:  # noqa: BLE001 - every venue failure ends here, as a refusal or unresolved
            with self._lock:
                if self._orders[client_order_id].status is not pending:
                    return  # answered by the venue's events meanwhile
                if self._outcome_unknown(exc):
                    self._unresolved.add(client_order_id)
                    self._raise_alert("outcome_unknown", f"{client_order_id}: {self.venue.name} may or may not "
                                      f"have taken the {pending} request ({exc}); reconcile() settles it")
                    return
                ts = self.clock()
                self._apply_own(OrderEvent(client_order_id, refused, ts, ts, reason=f"venue error: {exc}"))
                if isinstance(exc, VenueRejectedError) and reject_code_of(exc.code) is RejectCode.UNKNOWN_ORDER:
                    self._unresolved.add(client_order_id)  # the venue does not know it: ask what it knows
