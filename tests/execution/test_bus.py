"""The event bus: delivery in order per subscriber, kinds, a full queue drops the oldest, a raising or hanging
subscriber never holds up the publisher; a session publishes its orders, fills, state, quotes and flushes."""

from __future__ import annotations

import threading
from decimal import Decimal

import numpy as np
import pytest

from tradebook.data.feeds import FeedBatch, QuoteArrays
from tradebook.errors import ConfigError, SessionError
from tradebook.execution.bus import BusEvent, EventBus
from tradebook.model.instruments import Side
from tradebook.model.orders import Signal
from tradebook.session import Session

BTC = "BTCUSDT.BINANCE"
SECOND = 1_000_000_000
START_NS = 1_723_161_300 * SECOND  # 2024-08-09T00:00:00Z, inside the bundled BTCUSDT hour


def publish_in_thread(bus: EventBus, events: list[tuple[str, dict, int]], timeout: float = 10) -> None:
    """Publish from another thread; the test fails (instead of hanging) if publishing blocks."""
    worker = threading.Thread(target=lambda: [bus.publish(*e) for e in events], daemon=True)
    worker.start()
    worker.join(timeout)
    assert not worker.is_alive(), "publish blocked on a subscriber"


def test_each_subscriber_gets_its_kinds_in_order():
    bus = EventBus()
    fills: list[BusEvent] = []
    everything: list[BusEvent] = []
    only_fills = bus.subscribe("fills", fills.append, kinds=["fill"])
    all_kinds = bus.subscribe("all", everything.append)
    for i in range(50):
        bus.publish("fill" if i % 2 else "order", {"n": i}, i)
    assert only_fills.drain() and all_kinds.drain()
    assert [e.payload["n"] for e in fills] == list(range(1, 50, 2))
    assert [e.ts_ns for e in everything] == list(range(50))
    assert {e.kind for e in everything} == {"order", "fill"}
    with pytest.raises(TypeError):
        everything[0].payload["n"] = 7  # subscribers share one payload: read-only
    assert bus.close() == []
    assert only_fills.delivered == 25 and all_kinds.delivered == 50 and not only_fills.alive


def test_a_subscriber_that_hangs_loses_its_oldest_events_and_never_blocks_the_publisher():
    bus = EventBus()
    release = threading.Event()
    seen: list[int] = []

    def stuck(event: BusEvent) -> None:
        release.wait(10)
        seen.append(event.payload["n"])

    slow = bus.subscribe("slow", stuck, max_queue=3)
    fast_seen: list[int] = []
    fast = bus.subscribe("fast", lambda e: fast_seen.append(e.payload["n"]))
    bus.publish("order", {"n": 0}, 0)
    while slow.pending:  # the slow one holds event 0 in its callback
        threading.Event().wait(0.001)
    publish_in_thread(bus, [("order", {"n": n}, n) for n in range(1, 11)])
    assert slow.dropped == 7 and slow.pending == 3  # 1..7 pushed out by 8, 9, 10
    assert fast.drain() and fast_seen == list(range(11)) and fast.dropped == 0
    release.set()
    assert slow.drain()
    assert seen == [0, 8, 9, 10]
    bus.close()


def test_a_raising_subscriber_is_counted_and_keeps_receiving(caplog):
    bus = EventBus()
    received: list[int] = []

    def picky(event: BusEvent) -> None:
        received.append(event.payload["n"])
        if event.payload["n"] % 3 == 0:
            raise RuntimeError("subscriber bug")

    sub = bus.subscribe("picky", picky)
    publish_in_thread(bus, [("fill", {"n": n}, n) for n in range(9)])
    assert sub.drain()
    assert received == list(range(9)) and sub.failed == 3 and sub.delivered == 6
    assert "bus subscriber 'picky' failed on a 'fill' event" in caplog.text
    bus.close()


def test_close_waits_a_bounded_time_for_a_hanging_subscriber_and_names_it():
    bus = EventBus()
    release = threading.Event()
    hung = bus.subscribe("hung", lambda e: release.wait(30))
    done: list[int] = []
    quick = bus.subscribe("quick", lambda e: done.append(e.ts_ns))
    bus.publish("alert", {"kind": "x"}, 1)
    while hung.pending:
        threading.Event().wait(0.001)
    assert bus.close(timeout=0.2) == ["hung"]
    assert done == [1] and not quick.alive and hung.alive
    bus.publish("alert", {"kind": "after close"}, 2)  # ignored, not an error
    with pytest.raises(SessionError, match="the bus is closed"):
        bus.subscribe("late", print)
    release.set()


def test_bad_subscriptions_are_refused_and_bad_payloads_never_raise():
    bus = EventBus()
    with pytest.raises(ConfigError, match="unknown kinds \\['fills'\\]"):
        bus.subscribe("typo", print, kinds=["fills"])
    with pytest.raises(ConfigError, match="max_queue must be an int >= 1"):
        bus.subscribe("zero", print, max_queue=0)
    with pytest.raises(ConfigError, match="callback must be callable"):
        bus.subscribe("none", None)  # type: ignore[arg-type]
    assert not bus.wants("order")
    sub = bus.subscribe("orders", lambda e: None, kinds="order")
    assert bus.wants("order") and not bus.wants("fill")
    bus.publish("order", 42, 0)  # type: ignore[arg-type] - not a mapping: handed over as it is
    sub.close()
    assert not bus.wants("order")


# -- the session publishes ----------------------------------------------------------------------
@pytest.fixture
def session(calibrated_btc_store, tmp_path):
    s = Session(calibrated_btc_store, calibrations=[BTC], state_dir=tmp_path / "state")
    yield s
    s.stop()


def quarter_second_batches(seconds: int) -> list[FeedBatch]:
    """A quiet market, one quote each quarter second, each in its own batch."""
    out = []
    for i in range(seconds * 4):
        ts = START_NS + i * SECOND // 4
        quotes = QuoteArrays(np.array([ts], dtype=np.int64), np.array([60000.0]), np.array([60000.5]),
                             np.array([5.0]), np.array([5.0]))
        out.append(FeedBatch(ts, ts + SECOND // 4, {BTC: quotes}))
    return out


def test_a_session_publishes_state_orders_fills_quotes_and_flushes_while_bad_subscribers_cost_nothing(session):
    bus = session.bus  # exists from construction
    events: list[BusEvent] = []
    recorder = bus.subscribe("recorder", events.append)
    release = threading.Event()
    stuck = bus.subscribe("stuck", lambda e: release.wait(30), max_queue=2)
    broken = bus.subscribe("broken", lambda e: 1 / 0, kinds=["order", "fill"])
    session.start()
    batches = quarter_second_batches(6)
    for batch in batches[:8]:
        session.step(batch, timeout=20)
    orders = session.submit(Signal("nb", "s1", BTC, Side.BUY, None, strength=0.95, quantity=Decimal("0.01")))
    session.halt("enough")
    for batch in batches[8:]:
        session.step(batch, timeout=20)
    fills = session.fills()
    assert len(orders) == 1 and len(fills) >= 1  # the order path went on while 'stuck' held its first event
    assert stuck.dropped > 0 and stuck.delivered == 0
    release.set()
    session.stop()

    kinds = [e.kind for e in events]
    states = [e.payload.get("state") for e in events if e.kind == "session"]
    assert states[:1] == ["running"] and states[-1] == "stopped"
    assert any(e.payload.get("kill_switch") == "halted" and e.payload["reason"] == "enough"
               for e in events if e.kind == "session")
    coid = orders[0].client_order_id
    statuses = [e.payload["status"] for e in events if e.kind == "order" and e.payload["client_order_id"] == coid]
    assert statuses[-1] == "filled" and statuses[0] in ("submitted", "accepted")
    published_fills = [e.payload for e in events if e.kind == "fill"]
    assert [f["fill_id"] for f in published_fills] == fills["fill_id"].tolist()
    assert sum(f["quantity"] for f in published_fills) == Decimal("0.01")
    quote_times = [e.ts_ns for e in events if e.kind == "quote"]
    assert quote_times == [START_NS + i * SECOND for i in range(6)]  # one a second, not one a batch
    flushed = [e.payload for e in events if e.kind == "flushed"]
    assert flushed and flushed[-1]["position"] == session.store.journal_position(session.oms_journal_name)
    assert kinds.index("fill") < len(kinds) - 1
    assert recorder.dropped == 0 and recorder.failed == 0
    assert stuck.dropped + stuck.delivered == len(events)  # what it missed while stuck is counted
    assert broken.failed == kinds.count("order") + kinds.count("fill") and broken.delivered == 0
    assert bus.closed and not recorder.alive
