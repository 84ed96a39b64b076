"""The order manager when a venue fails as live venues do: typed errors, unknown outcomes, late and repeated fills.

The counterparty is the real ``ToyVenue`` of test_oms (its own orders, fills and positions),
made to fail the way brokers do: a timeout after it took the order, a request refused before
it left, a refusal with the broker's code, a refusal of a client order id it already holds, a
fill after a cancel, a fill sent twice, events delivered from another thread.
"""

from __future__ import annotations

import asyncio
import threading
from decimal import Decimal as D

import pytest

from tradebook.errors import NotSentError, OrderError, OutcomeUnknownError, VenueRejectedError
from tradebook.execution.oms import RejectCode
from tradebook.model.instruments import Side
from tradebook.model.orders import Fill, OrderEvent, OrderType
from tradebook.model.orders import OrderStatus as S, OrderEventType as E
from .test_oms import ES, SPY, Rig, ToyVenue, intent, journal_kinds, run


class FaultyVenue(ToyVenue):
    """ToyVenue with scripted faults on submit and cancel."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.timeout_after_accept = False  # takes (and trades) the order, then the ack times out
        self.timeout_before_accept = False  # the request is lost on the way: the venue never has it
        self.not_sent: list[Exception] = []  # raised, one per submit, before anything is sent
        self.refuse: VenueRejectedError | None = None
        self.cancel_times_out = False
        self.submits = 0

    async def submit(self, intent) -> None:
        self.submits += 1
        if self.not_sent:
            raise self.not_sent.pop(0)
        if self.refuse is not None:
            raise self.refuse
        if self.timeout_before_accept:
            raise OutcomeUnknownError("no answer within 10 s")
        if self.timeout_after_accept:
            self.deliver = False
            try:
                await super().submit(intent)
            finally:
                self.deliver = True
            raise OutcomeUnknownError("no answer within 10 s (the connection dropped after sending)")
        await super().submit(intent)

    async def cancel(self, client_order_id: str) -> None:
        if self.cancel_times_out:
            self.deliver = False
            try:
                await super().cancel(client_order_id)
            finally:
                self.deliver = True
            raise OutcomeUnknownError("cancel: no answer")
        await super().cancel(client_order_id)


def faulty_rig(tmp_path, **kw) -> Rig:
    rig = Rig(tmp_path, prices={SPY: D("100.00"), ES: D("5000.00")})
    rig.venue = FaultyVenue(prices={SPY: D("100.00"), ES: D("5000.00")}, journal_path=tmp_path / "orders.journal",
                            clock=rig.clock)
    for name, value in kw.items():
        setattr(rig.venue, name, value)
    rig.oms.venue = rig.venue
    return rig


def order_row(rig: Rig, coid: str) -> tuple:
    return rig.store.con.execute("SELECT status, filled_quantity FROM orders WHERE client_order_id = ?",
                                 [coid]).fetchone()


# -- unknown outcome: unresolved, blocks its instrument, never resent, reconciled by id -------------
@run
async def test_an_accepted_order_whose_ack_times_out_is_found_by_reconciliation_not_resent(tmp_path):
    rig = faulty_rig(tmp_path, timeout_after_accept=True)
    await rig.connect()
    order = await rig.oms.submit(intent(1))
    coid = order.client_order_id
    assert order.status is S.UNRESOLVED and rig.oms.blocked_instruments() == {SPY}
    assert [a.kind for a in rig.oms.alerts()] == ["outcome_unknown"]
    with pytest.raises(OrderError, match=f"no new order for {SPY}"):
        await rig.oms.submit(intent(2))
    rig.venue.timeout_after_accept = False
    assert (await rig.oms.submit(intent(3, instrument=ES, qty="1"))).status is S.FILLED  # others trade on
    assert (await rig.oms.submit(intent(1))).status is S.UNRESOLVED  # the same intent: nothing resent
    assert [i.intent_id for i in rig.venue.received] == ["sig-1", "sig-3"]
    # a restart keeps it unresolved (the journal says so), then reconciliation finds it filled
    oms = await rig.restart()
    assert [o.client_order_id for o in oms.unresolved()] == [coid]
    alerts = await oms.reconcile()
    settled = oms.order(coid)
    assert settled.status is S.FILLED and settled.filled_qty == D(2) and settled.fill_ids == frozenset({"X1"})
    assert "unresolved_settled" in [a.kind for a in alerts] and oms.unresolved() == []
    assert rig.portfolio.net_position("acct", SPY) == D(2)  # booked once
    assert [i.intent_id for i in rig.venue.received] == ["sig-1", "sig-3"]
    assert (await oms.submit(intent(2))).status is S.FILLED  # the instrument is free again
    oms.flush()
    assert order_row(rig, coid) == ("filled", D(2))


@run
async def test_an_unknown_outcome_the_venue_never_saw_is_rejected_only_after_its_grace_period(tmp_path):
    rig = faulty_rig(tmp_path, timeout_before_accept=True)
    rig.venue.order_visibility_grace_ns = 300_000_000  # in wall time: the venue's lookup lags in real time
    await rig.connect()
    coid = (await rig.oms.submit(intent(1))).client_order_id
    assert await rig.oms.reconcile() == []  # not found yet: its lookup may lag, still unresolved
    assert rig.oms.order(coid).status is S.UNRESOLVED and rig.oms.blocked_instruments() == {SPY}
    rig.clock.now += 3600 * 1_000_000_000  # session time does not count: a replay's clock may jump or stand
    assert await rig.oms.reconcile() == [] and rig.oms.order(coid).status is S.UNRESOLVED
    await asyncio.sleep(0.35)
    alerts = await rig.oms.reconcile()
    assert rig.oms.order(coid).status is S.REJECTED and rig.oms.unresolved() == []
    assert rig.oms.rejection_code(coid) is RejectCode.NEVER_REACHED_VENUE
    assert "never_reached_venue" in [a.kind for a in alerts]
    assert rig.venue.submits == 1  # asked about, never sent again


@run
async def test_a_cancel_whose_outcome_is_unknown_stays_pending_until_reconciled(tmp_path):
    rig = faulty_rig(tmp_path, cancel_times_out=True)
    await rig.connect()
    order = await rig.oms.submit(intent(1, order_type=OrderType.LIMIT, limit="99.00"))
    assert order.status is S.ACCEPTED
    after = await rig.oms.cancel(order.client_order_id)
    assert after.status is S.PENDING_CANCEL and rig.oms.blocked_instruments() == {SPY}
    await rig.oms.reconcile()
    assert rig.oms.order(order.client_order_id).status is S.CANCELLED and rig.oms.unresolved() == []


# -- not sent: safe to send again under the same id ----------------------------------------------
@run
async def test_a_request_that_never_left_is_sent_again_under_its_id_then_rejected_when_it_never_goes(tmp_path):
    rig = faulty_rig(tmp_path)
    rig.oms.not_sent_backoff_s = 0.001
    rig.venue.not_sent = [NotSentError("not connected"), NotSentError("connection refused")]
    await rig.connect()
    order = await rig.oms.submit(intent(1))
    assert order.status is S.FILLED and rig.venue.submits == 3 and len(rig.venue.received) == 1
    rig.venue.not_sent = [NotSentError("not connected")] * 3
    failed = await rig.oms.submit(intent(2))
    assert failed.status is S.REJECTED and failed.reason == "never reached the venue: not connected"
    assert rig.oms.rejection_code(failed.client_order_id) is RejectCode.NEVER_REACHED_VENUE
    assert rig.oms.alerts()[-1].kind == "not_sent" and rig.oms.unresolved() == []


# -- refused by the venue: rejected with its code --------------------------------------------------
@run
async def test_a_venue_refusal_rejects_with_its_code_kept_across_a_restart(tmp_path):
    rig = faulty_rig(tmp_path)
    rig.venue.refuse = VenueRejectedError("Account has insufficient balance for requested action.",
                                          code=RejectCode.INSUFFICIENT_FUNDS, venue_code="-2010")
    await rig.connect()
    order = await rig.oms.submit(intent(1))
    assert order.status is S.REJECTED and "[-2010]" in order.reason and "insufficient balance" in order.reason
    assert rig.oms.rejection_code(order.client_order_id) is RejectCode.INSUFFICIENT_FUNDS
    assert rig.venue.submits == 1 and rig.oms.unresolved() == []
    oms = await rig.restart()
    assert oms.rejection_code(order.client_order_id) is RejectCode.INSUFFICIENT_FUNDS


class TookItButSaidNotSent(FaultyVenue):
    """An adapter that wrongly reported a send as not sent: the retry meets its own order."""

    async def submit(self, intent) -> None:
        if intent.client_order_id in self.states:
            raise VenueRejectedError("Duplicate order sent.", code=RejectCode.DUPLICATE_CLIENT_ID, venue_code="-2010")
        self.deliver = False
        try:
            await ToyVenue.submit(self, intent)
        finally:
            self.deliver = True
        raise NotSentError("not connected")


@run
async def test_a_refused_duplicate_client_id_is_journaled_replayed_and_reconciled(tmp_path):
    rig = faulty_rig(tmp_path)
    rig.venue = TookItButSaidNotSent(prices={SPY: D("100.00")}, clock=rig.clock)
    rig.oms.venue = rig.venue
    rig.oms.not_sent_backoff_s = 0.001
    await rig.connect()
    coid = (await rig.oms.submit(intent(1))).client_order_id
    # the venue holds it: the refusal is about the copy; its state is the venue's, asked for by id
    assert rig.oms.order(coid).status is S.SUBMITTED and rig.oms.blocked_instruments() == {SPY}
    assert "duplicate:rejected" in journal_kinds(rig.journal.path)
    assert "duplicate_client_id" in [a.kind for a in rig.oms.alerts()]
    oms = await rig.restart()  # the replay knows the record
    assert [o.client_order_id for o in oms.unresolved()] == [coid]
    await oms.reconcile()
    assert oms.order(coid).status is S.FILLED and rig.portfolio.net_position("acct", SPY) == D(2)
    assert oms.unresolved() == [] and len(rig.venue.received) == 1


@run
async def test_a_duplicate_record_answered_by_a_later_event_does_not_block_after_a_restart(tmp_path):
    rig = faulty_rig(tmp_path)
    rig.venue = TookItButSaidNotSent(prices={SPY: D("100.00")}, clock=rig.clock)
    rig.oms.venue = rig.venue
    rig.oms.not_sent_backoff_s = 0.001
    await rig.connect()
    coid = (await rig.oms.submit(intent(1))).client_order_id
    ts = rig.clock()
    rig.oms.on_event(OrderEvent(coid, E.ACCEPTED, ts, ts))  # the stream catches up
    assert rig.oms.unresolved() == []
    oms = await rig.restart()
    assert oms.unresolved() == [] and oms.order(coid).status is S.ACCEPTED


# -- late and repeated fills ----------------------------------------------------------------------
@run
async def test_a_fill_after_a_cancel_is_booked_and_the_order_ends_filled_when_complete(tmp_path):
    rig = faulty_rig(tmp_path)
    await rig.connect()
    order = await rig.oms.submit(intent(1, order_type=OrderType.LIMIT, limit="99.00"))
    coid = order.client_order_id
    assert (await rig.oms.cancel(coid)).status is S.CANCELLED
    ts = rig.clock()
    late = Fill("L1", coid, SPY, Side.BUY, D(1), D("99.00"), D(0), "maker", ts, ts)
    rig.oms.on_event(OrderEvent(coid, E.FILLED, ts, ts, fill=late))
    part = rig.oms.order(coid)
    assert part.status is S.CANCELLED and part.filled_qty == D(1)
    assert rig.portfolio.net_position("acct", SPY) == D(1) and rig.oms.alerts()[-1].kind == "late_fill"
    rig.oms.flush()
    assert order_row(rig, coid) == ("cancelled", D(1))
    rest = Fill("L2", coid, SPY, Side.BUY, D(1), D("99.00"), D(0), "maker", ts, ts)
    rig.oms.on_events([OrderEvent(coid, E.FILLED, ts, ts, fill=rest)])
    assert rig.oms.order(coid).status is S.FILLED and rig.portfolio.net_position("acct", SPY) == D(2)
    rig.oms.flush()
    assert order_row(rig, coid) == ("filled", D(2))
    oms = await rig.restart()
    assert oms.order(coid) == rig.oms.order(coid) and oms.order(coid).status is S.FILLED


@run
async def test_a_cancel_and_its_late_fill_in_one_batch_leave_one_current_row(tmp_path):
    rig = faulty_rig(tmp_path)
    await rig.connect()
    coid = (await rig.oms.submit(intent(1, order_type=OrderType.LIMIT, limit="99.00"))).client_order_id
    ts = rig.clock()
    late = Fill("L1", coid, SPY, Side.BUY, D(1), D("99.00"), D(0), "maker", ts, ts)
    rig.oms.on_events([OrderEvent(coid, E.CANCELLED, ts, ts), OrderEvent(coid, E.FILLED, ts, ts, fill=late)])
    rig.oms.flush()
    assert rig.store.con.execute("SELECT status, filled_quantity FROM orders WHERE client_order_id = ?",
                                 [coid]).fetchall() == [("cancelled", D(1))]


@run
async def test_a_fill_after_a_cancel_missed_while_disconnected_is_recovered_once(tmp_path):
    rig = faulty_rig(tmp_path)
    await rig.connect()
    coid = (await rig.oms.submit(intent(1, order_type=OrderType.LIMIT, limit="99.00"))).client_order_id
    await rig.oms.cancel(coid)
    ts = rig.clock()
    rig.venue._fills.append(Fill("L1", coid, SPY, Side.BUY, D(2), D("99.00"), D(0), "maker", ts, ts))
    rig.venue._positions[SPY] = D(2)
    alerts = await rig.oms.reconcile()
    assert rig.oms.order(coid).status is S.FILLED and rig.portfolio.net_position("acct", SPY) == D(2)
    assert "position_mismatch" not in [a.kind for a in alerts]
    await rig.oms.reconcile()  # again: nothing booked twice
    assert rig.portfolio.net_position("acct", SPY) == D(2)


@run
async def test_a_fill_message_sent_twice_is_booked_once(tmp_path):
    rig = faulty_rig(tmp_path)
    await rig.connect()
    coid = (await rig.oms.submit(intent(1, order_type=OrderType.LIMIT, limit="99.00", qty="4"))).client_order_id
    ts = rig.clock()
    fill = Fill("F1", coid, SPY, Side.BUY, D(1), D("99.00"), D(0), "maker", ts, ts)
    rig.oms.on_event(OrderEvent(coid, E.FILLED, ts, ts, fill=fill))
    rig.oms.on_event(OrderEvent(coid, E.FILLED, ts, ts, fill=fill))
    rig.oms.on_events([OrderEvent(coid, E.FILLED, ts, ts, fill=fill)] * 2)
    assert rig.oms.order(coid).filled_qty == D(1) and rig.portfolio.net_position("acct", SPY) == D(1)
    assert journal_kinds(rig.journal.path).count("event:filled") == 1


# -- events from another thread ---------------------------------------------------------------------
@run
async def test_events_from_a_venue_thread_are_applied_on_the_session_loop_in_order(tmp_path):
    rig = faulty_rig(tmp_path)
    await rig.connect()
    coid = (await rig.oms.submit(intent(1, order_type=OrderType.LIMIT, limit="99.00", qty="4"))).client_order_id
    loop_thread = threading.get_ident()
    seen: list[tuple[int, S]] = []
    rig.oms.subscribe(on_order=lambda order: seen.append((threading.get_ident(), order.status)))

    def stream() -> None:  # as an SDK's stream reader would
        for n in range(4):
            ts = rig.clock()
            rig.oms.on_event(OrderEvent(coid, E.FILLED, ts, ts, fill=Fill(f"T{n}", coid, SPY, Side.BUY, D(1),
                                                                          D("99.00"), D(0), "maker", ts, ts)))

    reader = threading.Thread(target=stream)
    reader.start()
    reader.join(timeout=10)
    for _ in range(1000):  # the loop applies them once this coroutine yields
        if rig.oms.order(coid).status is S.FILLED:
            break
        await asyncio.sleep(0.001)
    assert [s for _, s in seen] == [S.PARTIALLY_FILLED] * 3 + [S.FILLED]
    assert {t for t, _ in seen} == {loop_thread}
    assert rig.portfolio.net_position("acct", SPY) == D(4)


@run
async def test_an_order_sent_before_a_crash_gets_the_grace_period_before_it_is_declared_never_received(tmp_path):
    from .test_oms import Crash

    rig = faulty_rig(tmp_path)
    await rig.connect()
    rig.venue.crash_before_receiving = True
    with pytest.raises(Crash):
        await rig.oms.submit(intent(1))
    rig.venue.crash_before_receiving = False
    rig.venue.order_visibility_grace_ns = 300_000_000
    oms = await rig.restart()
    [order] = oms.unresolved()
    assert order.status is S.SUBMITTED
    await oms.reconcile()  # not found: perhaps not visible yet
    assert oms.order(order.client_order_id).status is S.SUBMITTED and oms.blocked_instruments() == {SPY}
    await asyncio.sleep(0.35)
    await oms.reconcile()
    assert oms.order(order.client_order_id).status is S.REJECTED
    assert oms.never_reached_venue() == [order.client_order_id] and rig.venue.received == []
