"""The order manager against a real (tiny, deterministic) venue, a real journal and a real DuckDB store.

``ToyVenue`` implements :class:`VenuePort` for real: it keeps its own orders, fills and
positions, acknowledges every order, fills market and marketable limit orders at a
set price, and records what it received. It is the counterparty, not a mock of the
code under test. Crashes are real too: a ``Crash`` (a BaseException, which the order
manager does not swallow) stops the order path at a chosen point, and a new manager is
built on the same files, as a restarted process would.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from decimal import Decimal as D
from pathlib import Path

import pytest

from tradebook.errors import (
    ConformanceError,
    NotSentError,
    OrderError,
    OutcomeUnknownError,
    StoreError,
    UnknownInstrumentError,
)
from tradebook.store.journal import Journal
from tradebook.store.records import encode_record
from tradebook.execution.oms import RECONCILIATION_STRATEGY, Alert, OrderManager, RejectCode
from tradebook.model.instruments import Side
from tradebook.model.orders import (
    Fill,
    IllegalTransitionError,
    Order,
    OrderEvent,
    OrderEventType,
    OrderIntent,
    OrderStatus,
    OrderType,
    TimeInForce,
)
from tradebook.portfolio import Portfolio
from tradebook.store import Store
from tradebook.store.order_path import OrderPathBatch
from tradebook.venues.base import AccountState, Capability, VenueOrderState, VenuePort

E, S = OrderEventType, OrderStatus
T0 = 1_720_000_000_000_000_000
SPY, ES = "SPY.ARCX", "ESU4.GLBX"


class Crash(BaseException):
    """The process dies here (kill -9 has no handler either: nothing after this point runs)."""


class Clock:
    def __init__(self, start: int = T0, step: int = 1_000_000) -> None:
        self.now, self.step = start, step

    def __call__(self) -> int:
        self.now += self.step
        return self.now


class ToyVenue(VenuePort):
    name = "toy"
    is_live = False

    def __init__(self, account_id: str = "acct", *, prices: dict[str, D] | None = None, fee: D = D(0),
                 journal_path: Path | None = None, clock: Clock | None = None) -> None:
        self.account_id = account_id
        self.prices = dict(prices or {})
        self.fee = fee
        self.journal_path = journal_path
        self.clock = clock or Clock()
        self.handler = None
        self.received: list[OrderIntent] = []
        self.not_durable_when_sent: list[str] = []
        self.cancels: list[str] = []
        self.states: dict[str, VenueOrderState] = {}
        self.intents: dict[str, OrderIntent] = {}
        self._fills: list[Fill] = []
        self._positions: dict[str, D] = {}
        self.deliver_fills = True  # False: fills happen here but their events are lost
        self.deliver = True  # False: no event at all reaches the order manager
        self.fail_submit: Exception | None = None
        self.crash_before_receiving = False
        self.crash_after_receiving = False

    async def connect(self, on_event) -> None:
        self.handler = on_event

    async def close(self) -> None:
        self.handler = None

    def _emit(self, event: OrderEvent) -> None:
        if self.handler is None or not self.deliver:
            return
        if event.fill is not None and not self.deliver_fills:
            return
        self.handler(event)

    def _event(self, coid: str, event_type: OrderEventType, **kw) -> OrderEvent:
        ts = self.clock()
        return OrderEvent(coid, event_type, ts, ts, venue_order_id=self.states[coid].venue_order_id, **kw)

    async def submit(self, intent: OrderIntent) -> None:
        if self.journal_path is not None and intent.intent_id.encode() not in self.journal_path.read_bytes():
            self.not_durable_when_sent.append(intent.intent_id)
        if self.crash_before_receiving:
            raise Crash()
        if self.fail_submit is not None:
            raise self.fail_submit
        coid = intent.client_order_id
        self.received.append(intent)
        if coid in self.states:
            ts = self.clock()
            self.handler(OrderEvent(coid, E.REJECTED, ts, ts, reason="duplicate client order id"))
            return
        self.intents[coid] = intent
        self.states[coid] = VenueOrderState(coid, f"V{len(self.states) + 1}", intent.instrument_id, S.ACCEPTED,
                                            intent.quantity, D(0), None, intent.limit_price, intent.stop_price)
        self._try_fill(coid)
        if self.crash_after_receiving:
            raise Crash()
        self._emit(self._event(coid, E.ACCEPTED))
        if self.states[coid].status is S.FILLED:
            self._emit(self._event(coid, E.FILLED, fill=self._fills[-1]))

    def _try_fill(self, coid: str) -> None:
        state, intent = self.states[coid], self.intents[coid]
        price = self.prices.get(intent.instrument_id)
        if price is None or intent.order_type in (OrderType.STOP, OrderType.STOP_LIMIT):
            return
        limit = state.limit_price
        if limit is not None and (price > limit if intent.side is Side.BUY else price < limit):
            return
        quantity = state.quantity - state.filled_qty
        ts = self.clock()
        fill = Fill(f"X{len(self._fills) + 1}", coid, intent.instrument_id, intent.side, quantity, price, self.fee,
                    "taker", ts, ts)
        self._fills.append(fill)
        signed = quantity if intent.side is Side.BUY else -quantity
        self._positions[intent.instrument_id] = self._positions.get(intent.instrument_id, D(0)) + signed
        self.states[coid] = VenueOrderState(coid, state.venue_order_id, state.instrument_id, S.FILLED,
                                            state.quantity, state.quantity, price, limit, state.stop_price)

    async def cancel(self, client_order_id: str) -> None:
        self.cancels.append(client_order_id)
        state = self.states.get(client_order_id)
        if state is None or state.status in (S.FILLED, S.CANCELLED):
            ts = self.clock()
            self.handler(OrderEvent(client_order_id, E.CANCEL_REJECTED, ts, ts, reason="not working"))
            return
        self.states[client_order_id] = VenueOrderState(**{**state.__dict__, "status": S.CANCELLED})
        self._emit(self._event(client_order_id, E.CANCELLED))

    async def replace(self, client_order_id: str, *, quantity=None, limit_price=None, stop_price=None) -> None:
        state = self.states[client_order_id]
        self.states[client_order_id] = VenueOrderState(**{
            **state.__dict__, "quantity": quantity or state.quantity, "limit_price": limit_price or state.limit_price,
            "stop_price": stop_price or state.stop_price})
        self._emit(self._event(client_order_id, E.REPLACED))  # like IB: the new terms are not repeated

    async def order_status(self, client_order_id: str) -> VenueOrderState | None:
        return self.states.get(client_order_id)

    async def open_orders(self) -> list[VenueOrderState]:
        return [s for s in self.states.values() if s.status in (S.ACCEPTED, S.PARTIALLY_FILLED)]

    async def positions(self) -> dict[str, D]:
        return {k: v for k, v in self._positions.items() if v != 0}

    async def account(self) -> AccountState:
        return AccountState(self.account_id, "USD", D(0), D(0), D(0))

    async def fills(self, since_ns: int = 0) -> list[Fill]:
        return [f for f in self._fills if f.ts_event_ns >= since_ns]

    def silently_cancel(self, coid: str) -> None:
        self.states[coid] = VenueOrderState(**{**self.states[coid].__dict__, "status": S.CANCELLED})


def run(test):
    @functools.wraps(test)
    def wrapper(*args, **kwargs):
        return asyncio.run(test(*args, **kwargs))

    return wrapper


class Rig:
    """Store, journal, venue, portfolio and order manager on files in one directory; reopenable."""

    def __init__(self, directory: Path, prices: dict[str, D] | None = None, fee: D = D(0)) -> None:
        self.dir = directory
        self.clock = Clock()
        self.venue = ToyVenue(prices=prices, fee=fee, journal_path=directory / "orders.journal", clock=self.clock)
        self.open()

    def open(self) -> OrderManager:
        self.store = Store(self.dir / "tb.duckdb")
        self.journal = Journal(self.dir / "orders.journal")
        self.portfolio = Portfolio(D(100_000))
        self.oms = OrderManager(self.store, self.journal, self.venue, self.portfolio, clock=self.clock)
        return self.oms

    async def connect(self) -> None:
        await self.venue.connect(self.oms.on_event)

    def crash(self) -> None:
        """Drop everything in memory without flushing (the files stay as the dead process left them)."""
        self.journal.close()
        self.store.close()

    async def restart(self) -> OrderManager:
        self.crash()
        self.open()
        await self.connect()
        return self.oms

    def rows(self, sql: str) -> list[tuple]:
        return self.store.con.execute(sql).fetchall()


def intent(n: int | str, *, side: str = "buy", qty: str = "2", instrument: str = SPY, order_type=OrderType.MARKET,
           limit: str | None = None, stop: str | None = None, strategy: str = "s1", **kw) -> OrderIntent:
    return OrderIntent(intent_id=f"sig-{n}", strategy_id=strategy, account_id="acct", instrument_id=instrument,
                       side=Side(side), quantity=D(qty), order_type=order_type, time_in_force=TimeInForce.DAY,
                       ts_ns=T0 + 1, limit_price=D(limit) if limit else None, stop_price=D(stop) if stop else None,
                       **kw)


def journal_kinds(path: Path) -> list[str]:
    with Journal(path, sync=False) as journal:
        return [r["kind"] + (":" + r["event"]["event_type"] if "event" in r else "") for r in journal.records()]


# -- the write-ahead rule and idempotence -------------------------------------------------
@run
async def test_intent_is_durable_before_it_is_sent_and_the_fill_books(tmp_path):
    rig = Rig(tmp_path, prices={SPY: D("100.00")}, fee=D("0.35"))
    await rig.connect()
    order = await rig.oms.submit(intent(1))
    assert rig.venue.received == [intent(1)] and rig.venue.not_durable_when_sent == []
    assert order.status is S.FILLED and order.filled_qty == D(2) and order.avg_price == D("100.00")
    assert order.venue_order_id == "V1" and order.fees == D("0.35")
    assert journal_kinds(rig.journal.path) == ["intent", "event:submitted", "event:accepted", "event:filled"]
    assert rig.portfolio.net_position("acct", SPY) == D(2)
    assert rig.portfolio.cash == D(100_000) - D(200) - D("0.35")
    fills = rig.oms.fills_frame()
    assert fills[["fill_id", "quantity", "price", "strategy_id"]].values.tolist() == [["X1", D(2), D("100.00"), "s1"]]
    assert rig.rows("SELECT count(*) FROM orders") == [(0,)]  # nothing in DuckDB until a flush


@run
async def test_duplicate_submit_sends_nothing_even_after_a_restart(tmp_path):
    rig = Rig(tmp_path, prices={SPY: D("100.00")})
    await rig.connect()
    first = await rig.oms.submit(intent(1))
    again = await rig.oms.submit(intent(1))  # a re-run notebook cell
    assert again is first and len(rig.venue.received) == 1
    oms = await rig.restart()
    after_restart = await oms.submit(intent(1))
    assert after_restart == first and len(rig.venue.received) == 1
    assert len(rig.journal) == 4  # nothing journaled by the duplicates


@run
async def test_an_unmapped_venue_exception_is_an_unknown_outcome_never_resent(tmp_path):
    # an adapter should raise NotSentError / VenueRejectedError / OutcomeUnknownError; anything
    # else from a live-like venue may have left after sending: never rejected-and-retried blind
    rig = Rig(tmp_path, prices={SPY: D("100.00")})
    await rig.connect()
    rig.venue.fail_submit = ConnectionError("connection reset by peer")
    order = await rig.oms.submit(intent(1))
    assert order.status is S.UNRESOLVED and "connection reset by peer" in order.reason
    rig.venue.fail_submit = None
    assert (await rig.oms.submit(intent(1))).status is S.UNRESOLVED  # the same intent sends nothing
    assert rig.venue.received == []
    assert [o.client_order_id for o in rig.oms.unresolved()] == [order.client_order_id]
    assert [a.kind for a in rig.oms.alerts()] == ["outcome_unknown"]
    # the venue never got it: reconciliation rejects it (grace 0), and the instrument trades again
    alerts = await rig.oms.reconcile()
    assert rig.oms.order(order.client_order_id).status is S.REJECTED and rig.oms.unresolved() == []
    assert rig.oms.rejection_code(order.client_order_id) is RejectCode.NEVER_REACHED_VENUE
    assert "never_reached_venue" in [a.kind for a in alerts]


# -- lifecycle --------------------------------------------------------------------------
@run
async def test_illegal_transitions_raise_and_change_nothing(tmp_path):
    rig = Rig(tmp_path, prices={SPY: D("100.00")})
    await rig.connect()
    order = await rig.oms.submit(intent(1))
    ts = rig.clock()
    with pytest.raises(IllegalTransitionError, match="filled cannot take event cancelled"):
        rig.oms.on_event(OrderEvent(order.client_order_id, E.CANCELLED, ts, ts))
    extra = Fill("X99", order.client_order_id, SPY, Side.BUY, D(1), D(100), D(0), "taker", ts, ts)
    with pytest.raises(IllegalTransitionError):
        rig.oms.on_event(OrderEvent(order.client_order_id, E.FILLED, ts, ts, fill=extra))
    assert rig.oms.order(order.client_order_id) == order
    assert rig.portfolio.net_position("acct", SPY) == D(2)
    # refused events are kept for the audit trail, and do not break a replay
    assert journal_kinds(rig.journal.path)[-2:] == ["illegal:cancelled", "illegal:filled"]
    oms = await rig.restart()
    assert oms.order(order.client_order_id) == order


@run
async def test_cancel_and_replace_are_journaled_before_they_are_sent(tmp_path):
    rig = Rig(tmp_path, prices={SPY: D("100.00")})
    await rig.connect()
    order = await rig.oms.submit(intent(1, order_type=OrderType.LIMIT, limit="99.00", qty="5"))
    assert order.status is S.ACCEPTED
    order = await rig.oms.replace(order.client_order_id, quantity=D(3), limit_price=D("98.50"))
    # the venue confirmed without repeating the terms: the requested ones are applied
    assert order.status is S.ACCEPTED and order.total_quantity == D(3) and order.limit_price == D("98.50")
    assert rig.venue.states[order.client_order_id].limit_price == D("98.50")
    order = await rig.oms.cancel(order.client_order_id)
    assert order.status is S.CANCELLED and rig.venue.cancels == [order.client_order_id]
    with pytest.raises(OrderError, match="already cancelled"):
        await rig.oms.cancel(order.client_order_id)
    with pytest.raises(ConformanceError, match="tick"):
        await rig.oms.replace(order.client_order_id, limit_price=D("98.503"))
    rig.oms.flush()
    events = rig.rows("SELECT event_type, CAST(quantity AS VARCHAR), CAST(price AS VARCHAR) FROM order_events "
                      "ORDER BY journal_position")
    assert [e[0] for e in events] == ["intent", "submitted", "accepted", "replace_requested", "replaced",
                                      "cancel_requested", "cancelled"]
    assert events[3][1:] == ("3.000000000000", "98.500000000000")
    assert rig.rows("SELECT status, CAST(quantity AS VARCHAR), CAST(limit_price AS VARCHAR) FROM orders") == [
        ("cancelled", "3.000000000000", "98.500000000000")]


@run
async def test_listeners_hear_order_changes_and_fills(tmp_path):
    rig = Rig(tmp_path, prices={SPY: D("100.00")})
    await rig.connect()
    statuses, fills = [], []
    rig.oms.subscribe(on_order=lambda o: statuses.append(o.status), on_fill=lambda f, o: fills.append(f.fill_id))
    await rig.oms.submit(intent(1))
    assert statuses == [S.SUBMITTED, S.ACCEPTED, S.FILLED] and fills == ["X1"]


async def _entry_with_stop(rig: Rig) -> tuple[Order, Order]:
    """A filled market entry with a stop loss at 95.00, and the protective stop the manager sent for it."""
    entry = await rig.oms.submit(intent(1, stop_loss=D("95.00")))
    await asyncio.sleep(0)  # the stop is sent from the fill handler as a task
    await asyncio.sleep(0)
    return entry, rig.oms.order_for_intent("sig-1:stop")


@run
async def test_stop_loss_is_attached_once_the_entry_fills(tmp_path):
    rig = Rig(tmp_path, prices={SPY: D("100.00")})
    await rig.connect()
    entry, stop = await _entry_with_stop(rig)
    assert entry.status is S.FILLED and stop.status is S.ACCEPTED
    assert (stop.intent.side, stop.intent.order_type, stop.intent.quantity, stop.intent.stop_price) == (
        Side.SELL, OrderType.STOP, D(2), D("95.00"))
    assert stop.intent.reduce_only and stop.intent.parent_id == "sig-1"
    assert [i.intent_id for i in rig.venue.received] == ["sig-1", "sig-1:stop"]


# -- bad input ----------------------------------------------------------------------------
@pytest.mark.parametrize("bad, error, match", [
    (dict(qty="NaN"), OrderError, "quantity must be finite"),
    (dict(qty="-2"), OrderError, "quantity must be positive"),
    (dict(qty="0"), OrderError, "quantity must be positive"),
    (dict(qty="1.5"), ConformanceError, "lot size"),
    (dict(instrument="NOPE.XNYS"), UnknownInstrumentError, "unknown instrument 'NOPE.XNYS'"),
    (dict(order_type=OrderType.LIMIT, limit="100.005"), ConformanceError, "not a multiple of the tick"),
    (dict(order_type=OrderType.LIMIT), OrderError, "needs a limit_price"),
    (dict(limit="100.00"), OrderError, "takes no limit_price"),
    (dict(instrument="BTCUSDT.BINANCE", qty="0.00001", order_type=OrderType.LIMIT, limit="60000.00"),
     ConformanceError, "below the minimum"),
])
def test_bad_intent_is_refused_with_nothing_stored_or_sent(tmp_path, bad, error, match):
    @run
    async def body():
        rig = Rig(tmp_path, prices={SPY: D("100.00")})
        await rig.connect()
        with pytest.raises(error, match=match):
            await rig.oms.submit(intent(1, **bad))
        assert rig.venue.received == [] and len(rig.journal) == 0 and rig.oms.orders() == []
        rig.oms.flush()
        assert rig.rows("SELECT count(*) FROM orders") == [(0,)]

    body()


@run
async def test_float_quantity_and_foreign_account_refused(tmp_path):
    rig = Rig(tmp_path)
    await rig.connect()
    bad = OrderIntent("sig-f", "s1", "acct", SPY, Side.BUY, 2.0, OrderType.MARKET, TimeInForce.DAY, T0)  # type: ignore[arg-type]
    with pytest.raises(OrderError, match="quantity must be a Decimal, got float"):
        await rig.oms.submit(bad)
    other = OrderIntent("sig-o", "s1", "someone-else", SPY, Side.BUY, D(1), OrderType.MARKET, TimeInForce.DAY, T0)
    with pytest.raises(OrderError, match="not the venue's account 'acct'"):
        await rig.oms.submit(other)
    assert len(rig.journal) == 0


# -- persistence --------------------------------------------------------------------------
async def _trade_a_little(rig: Rig) -> None:
    await rig.oms.submit(intent(1, qty="2"))
    rig.venue.prices[SPY] = D("103.00")
    await rig.oms.submit(intent(2, qty="1"))
    rig.venue.prices[SPY] = D("105.00")
    await rig.oms.submit(intent(3, side="sell", qty="2"))
    working = await rig.oms.submit(intent(4, order_type=OrderType.LIMIT, limit="90.00"))
    await rig.oms.replace(working.client_order_id, limit_price=D("91.00"))
    rig.venue.prices[ES] = D("5000.25")
    await rig.oms.submit(intent(5, instrument=ES, side="sell", qty="1", strategy="fut"))
    cancelled = await rig.oms.submit(intent(6, order_type=OrderType.LIMIT, limit="80.00"))
    await rig.oms.cancel(cancelled.client_order_id)
    rig.oms.reject(intent(7), "risk: max position per instrument 10 exceeded")


def _store_rows(rig: Rig) -> dict[str, list[tuple]]:
    return {
        "orders": rig.rows("SELECT * EXCLUDE (ts_init, ts_last) FROM orders ORDER BY client_order_id"),
        "events": rig.rows("SELECT * EXCLUDE (event_seq) FROM order_events ORDER BY journal_position"),
        "fills": rig.rows("SELECT * FROM fills ORDER BY fill_id"),
        "positions": rig.rows("SELECT * FROM positions ORDER BY ALL"),
    }


@run
async def test_recovery_after_a_crash_without_flush_rebuilds_orders_and_portfolio(tmp_path):
    rig = Rig(tmp_path, prices={SPY: D("100.00")}, fee=D("0.10"))
    await rig.connect()
    await _trade_a_little(rig)
    orders_before = {o.client_order_id: o for o in rig.oms.orders()}
    positions_before = rig.portfolio.positions()
    cash_before, equity_before = rig.portfolio.cash, rig.portfolio.equity
    fills_before = rig.oms.fills_frame()
    assert rig.portfolio.position("acct", "s1", SPY).avg_price == D(101)
    assert rig.portfolio.position("acct", "s1", SPY).realised_pnl == D(8) - D("0.30")

    oms = await rig.restart()  # nothing was flushed: DuckDB is empty, the journal has it all
    assert rig.rows("SELECT count(*) FROM orders") == [(0,)]
    assert {o.client_order_id: o for o in oms.orders()} == orders_before
    assert rig.portfolio.positions() == positions_before
    assert (rig.portfolio.cash, rig.portfolio.equity) == (cash_before, equity_before)
    assert oms.fills_frame().equals(fills_before)
    assert oms.unresolved() == []
    report = oms.recover()
    assert report.records_flushed == len(rig.journal) and report.orders == 7 and report.fills == 4
    rows = _store_rows(rig)
    assert len(rows["orders"]) == 7 and len(rows["fills"]) == 4
    assert rig.rows("SELECT status, reason FROM orders WHERE intent_id = 'sig-7'") == [
        ("rejected", "risk: max position per instrument 10 exceeded")]
    assert rig.rows("SELECT CAST(quantity AS VARCHAR), CAST(avg_price AS VARCHAR), CAST(realized_pnl AS VARCHAR) "
                    "FROM positions WHERE instrument_id = 'SPY.ARCX'") == [
        ("1.000000000000", "101.000000000000", "7.700000000000")]


@run
async def test_flush_is_idempotent_and_survives_a_restart(tmp_path):
    rig = Rig(tmp_path, prices={SPY: D("100.00")}, fee=D("0.10"))
    await rig.connect()
    await _trade_a_little(rig)
    written = rig.oms.flush()
    assert written == len(rig.journal)
    first = _store_rows(rig)
    assert rig.oms.flush() == 0
    assert _store_rows(rig) == first
    assert rig.store.journal_position("orders.journal") == len(rig.journal)
    oms = await rig.restart()
    assert oms.recover().records_flushed == 0
    assert _store_rows(rig) == first
    # more trading after the restart continues the same tables
    await oms.submit(intent(8, side="sell", qty="1"))
    oms.flush()
    assert rig.rows("SELECT CAST(quantity AS VARCHAR) FROM positions WHERE strategy_id = 's1'") == [
        ("0.000000000000",)]
    assert len(_store_rows(rig)["fills"]) == 5


@run
async def test_a_batch_that_leaves_a_gap_is_refused_whole(tmp_path):
    rig = Rig(tmp_path, prices={SPY: D("100.00")})
    await rig.connect()
    await rig.oms.submit(intent(1))
    rig.oms.flush()
    before = _store_rows(rig)
    alert = encode_record({"kind": "alert", "alert": {"ts_ns": 1, "kind": "x", "message": "y"}})
    gap = OrderPathBatch("orders.journal", len(rig.journal) + 2, len(rig.journal) + 3, records=(alert, alert))
    with pytest.raises(StoreError, match="expected it to start at 5"):
        rig.store.write_order_path(gap)
    assert _store_rows(rig) == before and rig.rows("SELECT count(*) FROM alerts") == [(0,)]


@run
async def test_background_flush_writes_without_being_asked(tmp_path):
    rig = Rig(tmp_path, prices={SPY: D("100.00")})
    rig.oms.flush_interval_ms = 20
    await rig.connect()
    rig.oms.start()
    try:
        await rig.oms.submit(intent(1))
        deadline = time.monotonic() + 5
        while rig.store.journal_position("orders.journal") < 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert rig.rows("SELECT status FROM orders") == [("filled",)]
    finally:
        rig.oms.close()
    assert rig.oms.last_flush_error is None


def test_a_journal_shorter_than_the_store_is_refused(tmp_path):
    @run
    async def body():
        rig = Rig(tmp_path, prices={SPY: D("100.00")})
        await rig.connect()
        await rig.oms.submit(intent(1))
        rig.oms.flush()
        rig.crash()
        (tmp_path / "orders.journal").unlink()
        with pytest.raises(StoreError, match="has only 0"):
            rig.open()

    body()


# -- recovery of orders in an unknown state, and reconciliation -------------------------------
class CrashingJournal(Journal):
    """A journal whose process dies right before its ``n``-th record is written."""

    def __init__(self, path: Path, crash_at: int) -> None:
        super().__init__(path)
        self.crash_at = crash_at

    def append_encoded(self, bodies, *, sync=None):  # every append goes through here
        if len(self) < self.crash_at <= len(self) + len(bodies):
            before = self.crash_at - len(self) - 1
            if before:  # a torn write: the records ahead of the n-th one reached the disk
                super().append_encoded(bodies[:before], sync=sync)
            raise Crash()
        return super().append_encoded(bodies, sync=sync)


@run
async def test_crash_before_submitted_is_recorded_sends_the_pending_order_once(tmp_path):
    rig = Rig(tmp_path, prices={SPY: D("100.00")})
    rig.journal.close()
    rig.journal = CrashingJournal(tmp_path / "orders.journal", crash_at=2)
    rig.oms = OrderManager(rig.store, rig.journal, rig.venue, rig.portfolio, clock=rig.clock)
    await rig.connect()
    with pytest.raises(Crash):
        await rig.oms.submit(intent(1))
    oms = await rig.restart()
    [pending] = oms.unresolved()
    assert pending.status is S.PENDING and oms.blocked_instruments() == {SPY}
    with pytest.raises(OrderError, match=f"order\\(s\\) {pending.client_order_id} are in an unknown state"):
        await oms.submit(intent(2))
    assert await oms.reconcile() == []
    assert [i.intent_id for i in rig.venue.received] == ["sig-1"]
    assert oms.order(pending.client_order_id).status is S.FILLED and oms.unresolved() == []
    await oms.reconcile()
    assert len(rig.venue.received) == 1
    assert (await oms.submit(intent(2))).status is S.FILLED


@run
async def test_submitted_but_never_received_is_rejected_never_reached_the_venue(tmp_path):
    rig = Rig(tmp_path, prices={SPY: D("100.00")})
    await rig.connect()
    rig.venue.crash_before_receiving = True
    with pytest.raises(Crash):
        await rig.oms.submit(intent(1))
    rig.venue.crash_before_receiving = False
    oms = await rig.restart()
    [unknown] = oms.unresolved()
    assert unknown.status is S.SUBMITTED
    await oms.reconcile()
    order = oms.order(unknown.client_order_id)
    assert order.status is S.REJECTED and order.reason == "never reached the venue"
    assert rig.venue.received == [] and oms.blocked_instruments() == set()
    # the rejection carries a code a program can act on, and a human gets an alert; both survive a restart
    assert oms.rejection_code(unknown.client_order_id) is RejectCode.NEVER_REACHED_VENUE
    assert oms.never_reached_venue() == [unknown.client_order_id]
    [alert] = [a for a in oms.alerts() if a.kind == "never_reached_venue"]
    assert alert.message == (f"{unknown.client_order_id} (sig-1) was made durable but never reached "
                             f"{rig.venue.name}: rejected, not resent under its id")
    oms.close()
    oms = await rig.restart()
    assert oms.never_reached_venue() == [unknown.client_order_id]
    assert [a.kind for a in oms.alerts()] == ["never_reached_venue"]
    assert oms.rejection_code(unknown.client_order_id) is RejectCode.NEVER_REACHED_VENUE
    assert rig.rows("SELECT kind FROM alerts") == [("never_reached_venue",)]


@run
async def test_a_protective_stop_that_never_reached_the_venue_is_sent_again_under_a_new_id(tmp_path):
    rig = Rig(tmp_path, prices={SPY: D("100.00")})
    await rig.connect()
    entry = await rig.oms.submit(intent(1, stop_loss=D("95.00")))
    assert entry.status is S.FILLED
    rig.venue.crash_before_receiving = True  # the process dies while the stop is on its way
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    rig.venue.crash_before_receiving = False
    oms = await rig.restart()
    [lost] = oms.unresolved()
    assert lost.intent.intent_id == "sig-1:stop" and lost.status is S.SUBMITTED
    await oms.reconcile()
    assert oms.rejection_code(lost.client_order_id) is RejectCode.NEVER_REACHED_VENUE
    again = oms.order_for_intent("sig-1:stop:resend:1")  # the position is protected again, under a new id
    assert (again.status, again.intent.quantity, again.intent.stop_price, again.intent.parent_id) == (
        S.ACCEPTED, D(2), D("95.00"), "sig-1")
    assert [i.intent_id for i in rig.venue.received] == ["sig-1", "sig-1:stop:resend:1"]
    await oms.reconcile()  # nothing more: one stop working
    assert len(rig.venue.received) == 2


@run
async def test_sent_and_filled_but_crashed_before_the_fill_was_heard(tmp_path):
    rig = Rig(tmp_path, prices={SPY: D("100.00")}, fee=D("0.20"))
    await rig.connect()
    rig.venue.crash_after_receiving = True
    with pytest.raises(Crash):
        await rig.oms.submit(intent(1))
    rig.venue.crash_after_receiving = False
    oms = await rig.restart()
    assert [o.status for o in oms.unresolved()] == [S.SUBMITTED]
    assert rig.portfolio.net_position("acct", SPY) == 0
    assert await oms.reconcile() == []
    order = oms.order(intent(1).client_order_id)
    assert order.status is S.FILLED and order.fill_ids == {"X1"}
    assert rig.portfolio.net_position("acct", SPY) == D(2) == (await rig.venue.positions())[SPY]
    oms.flush()
    assert rig.rows("SELECT event_type, reason FROM order_events WHERE event_type = 'filled'") == [
        ("filled", "reconciled")]
    # a second reconcile finds nothing to do; the fill is not applied twice
    assert await oms.reconcile() == [] and rig.portfolio.net_position("acct", SPY) == D(2)


@run
async def test_lost_fill_events_are_applied_once_by_reconcile(tmp_path):
    rig = Rig(tmp_path, prices={SPY: D("100.00")})
    await rig.connect()
    rig.venue.deliver_fills = False
    order = await rig.oms.submit(intent(1))
    assert order.status is S.ACCEPTED
    rig.venue.deliver_fills = True
    await rig.oms.reconcile()
    assert rig.oms.order(order.client_order_id).status is S.FILLED
    # the venue repeats the fill later (after a reconnect): ignored
    rig.venue._emit(rig.venue._event(order.client_order_id, E.FILLED, fill=rig.venue._fills[0]))
    assert rig.portfolio.net_position("acct", SPY) == D(2) and len(rig.oms.fills_frame()) == 1


@run
async def test_venue_terminal_state_is_adopted_as_reconciled(tmp_path):
    rig = Rig(tmp_path)
    await rig.connect()
    order = await rig.oms.submit(intent(1, order_type=OrderType.LIMIT, limit="99.00"))
    rig.venue.silently_cancel(order.client_order_id)  # e.g. a day order the venue cancelled while we were down
    oms = await rig.restart()
    assert oms.unresolved() == []  # accepted: a known state, but still compared by reconcile
    await oms.reconcile()
    order = oms.order(order.client_order_id)
    assert order.status is S.CANCELLED and order.reason == "reconciled"


@run
async def test_position_mismatch_raises_an_alert_and_can_adopt_the_venue(tmp_path):
    rig = Rig(tmp_path, prices={SPY: D("100.00")})
    await rig.connect()
    await rig.oms.submit(intent(1))
    rig.venue._positions[SPY] += D(3)  # the venue knows of a trade we never saw (e.g. placed by hand)
    alerts = await rig.oms.reconcile()
    assert [(a.kind, a.message) for a in alerts] == [("position_mismatch", "acct SPY.ARCX: 2 here, 5 at toy")]
    assert isinstance(alerts[0], Alert) and rig.portfolio.net_position("acct", SPY) == D(2)
    alerts = await rig.oms.reconcile(adopt_venue=True)
    assert [a.kind for a in alerts] == ["position_mismatch", "position_adopted"]
    assert rig.portfolio.net_position("acct", SPY) == D(5)
    assert rig.portfolio.position("acct", RECONCILIATION_STRATEGY, SPY).quantity == D(3)
    assert await rig.oms.reconcile() == []
    oms = await rig.restart()  # the adoption is journaled: it survives a restart
    assert rig.portfolio.net_position("acct", SPY) == D(5) and len(oms.alerts()) == 3
    oms.recover()
    assert [r[0] for r in rig.rows("SELECT kind FROM alerts ORDER BY journal_position")] == [
        "position_mismatch", "position_mismatch", "position_adopted"]


@run
async def test_orphan_events_are_journaled_and_reported(tmp_path):
    rig = Rig(tmp_path)
    await rig.connect()
    ts = rig.clock()
    rig.oms.on_event(OrderEvent("tb-not-ours", E.CANCELLED, ts, ts, venue_order_id="V77"))
    assert [e.client_order_id for e in rig.oms.orphans()] == ["tb-not-ours"]
    alerts = await rig.oms.reconcile()
    assert [a.kind for a in alerts] == ["orphan_event"] and "tb-not-ours" in alerts[0].message
    assert await rig.oms.reconcile() == []  # reported once
    oms = await rig.restart()
    assert len(oms.orphans()) == 1 and await oms.reconcile() == []


# -- kill switch support ------------------------------------------------------------------
@run
async def test_flatten_cancels_working_orders_and_closes_the_net_position_once(tmp_path):
    rig = Rig(tmp_path, prices={SPY: D("100.00"), ES: D("5000.00")})
    await rig.connect()
    await rig.oms.submit(intent(1, qty="5", strategy="trend"))
    await rig.oms.submit(intent(2, side="sell", qty="2", strategy="meanrev"))
    await rig.oms.submit(intent(3, instrument=ES, side="sell", qty="1", strategy="fut"))
    working = await rig.oms.submit(intent(4, order_type=OrderType.LIMIT, limit="90.00"))
    orders = await rig.oms.flatten("kill-1")
    assert rig.oms.order(working.client_order_id).status is S.CANCELLED
    closing = [(o.intent.instrument_id, o.intent.strategy_id, o.intent.side, o.intent.quantity, o.status)
               for o in orders]
    assert closing == [(ES, "fut", Side.BUY, D(1), S.FILLED), (SPY, "trend", Side.SELL, D(3), S.FILLED)]
    assert all(o.intent.reduce_only and o.intent.order_type is OrderType.MARKET for o in orders)
    assert orders[1].intent.intent_id == "kill-1:flatten:acct:trend:SPY.ARCX"
    assert rig.portfolio.net_positions("acct") == {}
    sent = len(rig.venue.received)
    assert await rig.oms.flatten("kill-1") == [] and len(rig.venue.received) == sent
    assert await rig.oms.cancel_all() == []


@run
async def test_a_burst_of_events_is_one_durable_write_and_a_refused_one_changes_nothing(tmp_path):
    rig = Rig(tmp_path, prices={SPY: D("100.00")})
    await rig.connect()
    a = await rig.oms.submit(intent(1, order_type=OrderType.LIMIT, limit="99.00", qty="5"))
    b = await rig.oms.submit(intent(2, order_type=OrderType.LIMIT, limit="99.00", qty="3"))
    assert a.status is S.ACCEPTED and b.status is S.ACCEPTED
    writes = []
    append = rig.journal.append_encoded
    rig.journal.append_encoded = lambda bodies, sync=None: writes.append((len(bodies), sync)) or append(bodies,
                                                                                                    sync=sync)
    ts = rig.clock()
    fill = Fill("X7", b.client_order_id, SPY, Side.BUY, D(3), D("98.50"), D("0.10"), "maker", ts, ts)
    burst = [OrderEvent(a.client_order_id, E.CANCELLED, ts, ts, venue_order_id=a.venue_order_id),
             OrderEvent(a.client_order_id, E.CANCELLED, ts, ts),  # a repeat: the lifecycle refuses it
             OrderEvent(b.client_order_id, E.FILLED, ts, ts, venue_order_id=b.venue_order_id, fill=fill)]
    with pytest.raises(IllegalTransitionError, match="cancelled cannot take event cancelled"):
        rig.oms.on_events(burst)
    assert writes == [(3, None)]  # one write for the burst, synced because it holds a fill
    assert journal_kinds(rig.journal.path)[-3:] == ["event:cancelled", "illegal:cancelled", "event:filled"]
    assert rig.oms.order(a.client_order_id).status is S.CANCELLED
    assert rig.oms.order(b.client_order_id).status is S.FILLED
    assert rig.portfolio.net_position("acct", SPY) == D(3)
    before = {o.client_order_id: o for o in rig.oms.orders()}
    rig.oms.flush()
    assert dict(rig.rows("SELECT client_order_id, status FROM orders")) == {a.client_order_id: "cancelled",
                                                                            b.client_order_id: "filled"}
    assert rig.rows("SELECT fill_id, quantity, fee FROM fills") == [("X7", D(3), D("0.10"))]
    oms = await rig.restart()
    assert {o.client_order_id: o for o in oms.orders()} == before


@run
async def test_the_store_copy_keeps_every_kind_of_record(tmp_path):
    """Orphans, refused events, stop prices, position adoptions and alerts reach DuckDB as the journal says."""
    rig = Rig(tmp_path, prices={SPY: D("100.00")})
    await rig.connect()
    entry, stop = await _entry_with_stop(rig)
    ts = rig.clock()
    rig.oms.on_event(OrderEvent("tb-not-ours", E.CANCELLED, ts, ts, venue_order_id="V77"))
    with pytest.raises(IllegalTransitionError):
        rig.oms.on_event(OrderEvent(entry.client_order_id, E.CANCELLED, ts, ts, reason="it's late"))
    rig.venue._positions[SPY] += D(3)
    await rig.oms.reconcile(adopt_venue=True)
    rig.oms.flush()
    events = rig.rows("SELECT client_order_id, event_type, quantity, price, reason, payload FROM order_events "
                      "ORDER BY journal_position")
    kinds = [(c, t) for c, t, *_ in events]
    assert kinds[:4] == [(entry.client_order_id, "intent"), (entry.client_order_id, "submitted"),
                         (entry.client_order_id, "accepted"), (entry.client_order_id, "filled")]
    by_kind = {(c, t): (q, p, r, json.loads(payload)) for c, t, q, p, r, payload in events}
    assert by_kind[(entry.client_order_id, "filled")][3] == {"fill_id": "X1"}
    assert by_kind[(entry.client_order_id, "filled")][:2] == (D(2), D("100.00"))
    assert by_kind[(stop.client_order_id, "intent")][:2] == (D(2), D("95.00"))
    assert by_kind[("tb-not-ours", "cancelled")][3] == {"orphan": True}
    [illegal] = [row for row in events if row[0] == entry.client_order_id and row[1] == "cancelled"]
    assert illegal[4] == "it's late" and "filled cannot take event cancelled" in json.loads(illegal[5])["illegal"]
    fills = rig.rows("SELECT client_order_id, strategy_id, quantity, price, fee_currency FROM fills ORDER BY ts_event")
    assert fills == [(entry.client_order_id, "s1", D(2), D("100.00"), "USD"),
                     ("reconciliation", RECONCILIATION_STRATEGY, D(3), D("100.00"), "USD")]
    orders = dict(rig.rows("SELECT client_order_id, stop_price FROM orders"))
    assert orders == {entry.client_order_id: None, stop.client_order_id: D("95.00")}
    assert rig.store.con.execute("SELECT quantity FROM positions WHERE strategy_id = ?",
                                 [RECONCILIATION_STRATEGY]).fetchall() == [(D(3),)]
    assert [k for (k,) in rig.rows("SELECT kind FROM alerts ORDER BY journal_position")] == [
        "orphan_event", "position_mismatch", "position_adopted"]


class BatchToyVenue(ToyVenue):
    """A toy venue that also takes a batch of orders in one call."""

    capabilities = frozenset({Capability.SUBMIT_MANY})

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.batches: list[list[str]] = []
        self.fail_batch: Exception | None = None

    async def submit_many(self, intents) -> None:
        self.batches.append([i.intent_id for i in intents])
        if self.fail_batch is not None:
            raise self.fail_batch
        for intent in intents:
            await self.submit(intent)


@run
async def test_staged_orders_are_made_durable_together_then_sent_in_one_venue_call(tmp_path):
    rig = Rig(tmp_path, prices={SPY: D("100.00")})
    rig.venue = BatchToyVenue(prices={SPY: D("100.00")}, journal_path=tmp_path / "orders.journal", clock=rig.clock)
    rig.oms.venue = rig.venue
    await rig.connect()
    syncs = []
    commit = rig.journal.append_encoded
    rig.journal.append_encoded = lambda bodies, sync=None: syncs.append(sync is not False and rig.journal.sync) \
        or commit(bodies, sync=sync)
    staged = [rig.oms.stage(intent(n)) for n in (1, 2, 3)]
    assert [o.status for o in staged] == [S.PENDING] * 3 and rig.venue.received == []
    assert syncs == [False, False, False]  # written, not yet fdatasync'd: nothing has left
    assert rig.oms.stage(intent(2)) is staged[1]  # idempotent like submit
    orders = await rig.oms.send_staged()
    assert syncs[:4] == [False, False, False, True]  # one durable write for the batch, before the venue hears
    assert rig.venue.batches == [["sig-1", "sig-2", "sig-3"]] and rig.venue.not_durable_when_sent == []
    assert [o.status for o in orders] == [S.FILLED] * 3 and rig.portfolio.net_position("acct", SPY) == D(6)
    assert await rig.oms.send_staged() == []
    assert journal_kinds(rig.journal.path)[:6] == ["intent", "intent", "intent", "event:submitted",
                                                   "event:submitted", "event:submitted"]


@run
async def test_staged_but_unsent_orders_are_sent_once_after_a_crash(tmp_path):
    rig = Rig(tmp_path, prices={SPY: D("100.00")})
    await rig.connect()
    rig.oms.stage(intent(1))
    rig.oms.stage(intent(2))
    oms = await rig.restart()  # the process died before the batch was sent
    assert sorted(o.status for o in oms.unresolved()) == [S.PENDING, S.PENDING]
    await oms.reconcile()
    assert [i.intent_id for i in rig.venue.received] == ["sig-1", "sig-2"]
    assert {o.status for o in oms.orders()} == {S.FILLED} and oms.unresolved() == []


@run
async def test_a_failed_batch_rejects_what_the_venue_did_not_answer(tmp_path):
    rig = Rig(tmp_path, prices={SPY: D("100.00")})
    rig.venue = BatchToyVenue(prices={SPY: D("100.00")}, clock=rig.clock)
    rig.oms.venue = rig.venue
    await rig.connect()
    rig.venue.fail_batch = NotSentError("not connected")
    rig.oms.stage(intent(1))
    rig.oms.stage(intent(2))
    orders = await rig.oms.send_staged()
    assert [o.status for o in orders] == [S.REJECTED] * 2
    assert all("never reached the venue: not connected" in o.reason for o in orders)
    assert rig.oms.never_reached_venue() == [o.client_order_id for o in orders]
    # a batch whose fate is unknown: every order in it unresolved, none rejected
    rig.venue.fail_batch = OutcomeUnknownError("read timed out")
    rig.oms.stage(intent(3))
    rig.oms.stage(intent(4))
    orders = await rig.oms.send_staged()
    assert [o.status for o in orders] == [S.UNRESOLVED] * 2 and len(rig.oms.unresolved()) == 2


@run
async def test_an_order_changed_across_flushes_keeps_one_current_row(tmp_path):
    rig = Rig(tmp_path, prices={SPY: D("100.00")})
    await rig.connect()
    order = await rig.oms.submit(intent(1, order_type=OrderType.LIMIT, limit="99.00", qty="5"))
    rig.oms.flush()
    assert rig.rows("SELECT status, filled_quantity FROM orders") == [("accepted", D(0))]
    ts = rig.clock()
    fill = Fill("X9", order.client_order_id, SPY, Side.BUY, D(2), D("99.00"), D(0), "maker", ts, ts)
    rig.oms.on_event(OrderEvent(order.client_order_id, E.FILLED, ts, ts, venue_order_id="V1", fill=fill))
    rig.oms.flush()
    assert rig.rows("SELECT status, filled_quantity, avg_fill_price FROM orders") == [
        ("partially_filled", D(2), D("99.00"))]
    await rig.oms.cancel(order.client_order_id)
    rig.oms.flush()
    assert rig.rows("SELECT status, filled_quantity FROM orders") == [("cancelled", D(2))]


@run
async def test_rows_duckdb_derives_for_finished_orders_equal_the_rows_python_builds(tmp_path):
    """An order a venue event finishes carries its final row on that record; the store's row is Python's to the byte.

    The same journal replayed into a second store (where Python builds every row) must
    give the same ``orders`` table: tags with a stop loss and odd text, a parent, an order
    finished in a later batch than its intent, a partial fill then a cancel.
    """
    rig = Rig(tmp_path, prices={SPY: D("100.00")})
    await rig.connect()
    entry, stop = await _entry_with_stop(rig)  # the entry is filled by venue events; its stop rests
    odd = await rig.oms.submit(intent(2, reason='why "not" \\ é\n\tüñ', parent_id="twap-7"))
    resting = await rig.oms.submit(intent(3, order_type=OrderType.LIMIT, limit="99.00", qty="5"))
    rig.oms.flush()  # the stop and the resting order are still working: their rows come from Python
    ts = rig.clock()
    fill = Fill("X9", resting.client_order_id, SPY, Side.BUY, D(2), D("99.00"), D("0.10"), "maker", ts, ts)
    rig.oms.on_events([
        OrderEvent(stop.client_order_id, E.CANCELLED, ts, ts, venue_order_id=stop.venue_order_id, reason="by hand"),
        OrderEvent(resting.client_order_id, E.FILLED, ts, ts, venue_order_id=resting.venue_order_id, fill=fill),
        OrderEvent(resting.client_order_id, E.CANCELLED, ts + 1, ts + 1, venue_order_id=resting.venue_order_id)])
    rig.oms.flush()
    finished = {entry.client_order_id, odd.client_order_id, stop.client_order_id, resting.client_order_id}
    with Journal(rig.journal.path, sync=False) as journal:
        carried = {r["event"]["client_order_id"] for r in journal.records() if "state" in r}
    assert carried == finished
    derived = rig.rows("SELECT * FROM orders ORDER BY client_order_id")
    assert [(r[0], r[15]) for r in derived if r[0] in finished] == sorted(
        [(entry.client_order_id, "filled"), (odd.client_order_id, "filled"), (stop.client_order_id, "cancelled"),
         (resting.client_order_id, "cancelled")])
    rig.crash()
    other = Store(tmp_path / "python-rows.duckdb")
    replayed = OrderManager(other, Journal(rig.journal.path), rig.venue, Portfolio(D(100_000)), clock=rig.clock)
    replayed.recover()
    assert other.con.execute("SELECT * FROM orders ORDER BY client_order_id").fetchall() == derived


@run
async def test_flushes_copy_journal_byte_ranges_across_failures_and_restarts(tmp_path):
    """The flush reads its records from the journal file: after a failed copy, more trading, a crash and
    a restart that copies from the middle of the file, the store holds every record once, in order."""
    rig = Rig(tmp_path, prices={SPY: D("100.00")}, fee=D("0.10"))
    await rig.connect()
    await rig.oms.submit(intent(1))
    rig.oms.flush()
    await rig.oms.submit(intent(2, qty="3"))
    write = rig.store.write_order_path

    def full_disk(batch):
        rig.oms.reject(intent(9), "risk: refused while the copy was failing")  # written during the copy
        raise StoreError("disk full")

    rig.store.write_order_path = full_disk
    with pytest.raises(StoreError, match="disk full"):
        rig.oms.flush()
    rig.store.write_order_path = write
    await rig.oms.submit(intent(3, side="sell", qty="4"))  # written after the failed copy: one batch with it
    rig.oms.flush()
    assert rig.store.journal_position("orders.journal") == len(rig.journal)
    await rig.oms.submit(intent(4))
    oms = await rig.restart()  # died before copying sig-4: the restart copies from the middle of the file
    assert oms.recover().records_flushed == 4  # intent, submitted, accepted, filled
    kinds = rig.rows("SELECT journal_position, event_type FROM order_events ORDER BY journal_position")
    assert [p for p, _ in kinds] == list(range(1, len(rig.journal) + 1))
    assert [t for _, t in kinds].count("filled") == 4
    assert rig.rows("SELECT intent_id, status, CAST(filled_quantity AS VARCHAR) FROM orders ORDER BY intent_id") == [
        ("sig-1", "filled", "2.000000000000"), ("sig-2", "filled", "3.000000000000"),
        ("sig-3", "filled", "4.000000000000"), ("sig-4", "filled", "2.000000000000"),
        ("sig-9", "rejected", "0.000000000000")]
    assert rig.rows("SELECT CAST(quantity AS VARCHAR) FROM positions") == [("3.000000000000",)]
