"""What a session publishes on its bus (orders, fills, state, kill switch, quotes once a second, flushes), and that
subscribers which hang or raise cost its order path nothing."""

from __future__ import annotations

import threading
from decimal import Decimal

import numpy as np
import pytest

from tradebook.data.feeds import FeedBatch, QuoteArrays
from tradebook.execution.bus import BusEvent
from tradebook.model.instruments import Side
from tradebook.model.orders import Signal
from tradebook.session import Session

BTC = "BTCUSDT.BINANCE"
SECOND = 1_000_000_000
START_NS = 1_723_161_300 * SECOND  # 2024-08-09T00:00:00Z, inside the bundled BTCUSDT hour


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
