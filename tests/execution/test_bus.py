"""The event bus: delivery in order per subscriber, kinds, a full queue drops the oldest, a raising or hanging
subscriber never holds up the publisher, closing waits a bounded time."""

from __future__ import annotations

import threading

import pytest

from tradebook.errors import ConfigError, SessionError
from tradebook.execution.bus import BusEvent, EventBus


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
