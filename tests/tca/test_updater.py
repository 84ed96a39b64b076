"""TcaUpdater: a running session's TCA updates never raise into it; a failure is an alert and loses no note."""

from __future__ import annotations

import time

from tests.tca.conftest import add_fill, add_order, at, intent
from tradebook.store import Store
from tradebook.tca import TcaRecorder, TcaUpdater


def test_a_failed_update_calls_back_keeps_the_notes_and_the_next_one_writes_them(hand_store, tmp_path):
    recorder, errors = TcaRecorder(), []
    buy = intent("s:u", "buy", "1")
    recorder.note_order(buy, decision_ts_ns=at(0), decision_price=100.0)
    coid = add_order(hand_store, buy, status="filled", filled="1", created=3, last=5, events=[("submitted", 3)])
    add_fill(hand_store, coid, "u1", "buy", "1", "103", 5)
    path = hand_store.path
    hand_store.close()  # what a session's store looks like once it let go of it

    updater = TcaUpdater(hand_store, recorder, on_error=errors.append)
    assert updater.update_now() is None  # never raises
    assert updater.failures == 1 and "TCA update failed (StoreError" in errors[0]
    assert len(recorder) == 1  # the decision note waits for the next update

    with Store(path) as store:
        updater.store = store
        done = updater.finish()
        assert (done.fills, done.orders) == (1, 1) and len(recorder) == 0
        assert store.query("SELECT decision_price FROM tca_fills")["decision_price"].tolist() == [100.0]
        assert updater.update_now() is None and updater.failures == 1  # finished: later flushes do nothing


def test_flush_events_closer_than_the_interval_run_one_update(hand_store):
    updater = TcaUpdater(hand_store, TcaRecorder(), min_interval_s=3600)
    updater.on_flushed(None)
    first = updater.last
    add_order(hand_store, intent("s:v", "buy", "1"), status="submitted", filled="0", created=3, last=3,
              events=[("submitted", 3)])
    updater.on_flushed(None)  # within the hour: left to a timer due in an hour (or the end)
    assert updater.last is first
    assert updater.finish().orders == 1  # the end catches up and cancels the timer


def test_a_flush_that_came_too_soon_is_updated_when_due_without_another_flush(hand_store):
    updater = TcaUpdater(hand_store, TcaRecorder(), min_interval_s=0.2)
    updater.on_flushed(None)
    first = updater.last
    add_order(hand_store, intent("s:t", "buy", "1"), status="submitted", filled="0", created=3, last=3,
              events=[("submitted", 3)])
    updater.on_flushed(None)  # too soon: no update now, and no later flush will come (a quiet market)
    assert updater.last is first
    deadline = time.monotonic() + 30
    while updater.last is first and time.monotonic() < deadline:
        time.sleep(0.05)
    assert updater.last is not first and updater.last.orders == 1, "the skipped flush was never updated"
    updater.finish()


def test_a_session_that_flushed_nothing_costs_no_update_at_its_end(hand_store):
    updater = TcaUpdater(hand_store, TcaRecorder())
    add_order(hand_store, intent("s:w", "buy", "1"), status="submitted", filled="0", created=3, last=3,
              events=[("submitted", 3)])
    assert updater.finish() is None and updater.last is None  # no flush seen, no note: nothing to do
    assert hand_store.query("SELECT count(*) AS n FROM tca_orders")["n"].iloc[0] == 0
    # the order manager's flush listener says there is work, before (or without) the bus's event
    told = TcaUpdater(hand_store, TcaRecorder())
    told.flushed("oms", 2, 2)
    assert told.finish().orders == 1
