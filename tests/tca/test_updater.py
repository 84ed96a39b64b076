"""TcaUpdater: a running session's TCA updates never raise into it; a failure is an alert and loses no note."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time

from tests.tca.conftest import BTC, add_fill, add_order, at, intent
from tradebook.model.instruments import get_instrument
from tradebook.sim.fill_model import FillModel
from tradebook.store import Store
from tradebook.tca import TcaRecorder, TcaUpdater, tca_fills

EURUSD = "EURUSD.FXCM"  # sorts after BTC: the last instrument the update tries to price
OTHER_CRYPTO = "BTCUSDT2.TEST"


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


def test_an_update_beside_a_pending_result_prices_what_it_can_and_says_once_what_it_cannot(calibrated_btc_store,
                                                                                          caplog):
    """DuckDB refuses register() on a connection holding an unfinished result (a fetchone's, another thread's or
    the update's own): the update runs on a cursor of its own. A calibration that cannot price (no spread profile)
    leaves its fills without a prediction, said once at info level, never a warning per update."""
    store, recorder = calibrated_btc_store, TcaRecorder()
    btc = store.calibration(BTC)
    unpriceable = dataclasses.replace(FillModel.from_json(btc.params), spread_profile=None)
    store.save_calibration(EURUSD, unpriceable.to_json(), data_start_ns=btc.data_start_ns,
                           data_end_ns=btc.data_end_ns, dataset_ids=btc.dataset_ids, diagnostics={})
    for n, (instrument, price) in enumerate(((BTC, "36018"), (EURUSD, "1.1002"), (EURUSD, "1.1003"))):
        buy = intent(f"live:{n}", "buy", "0.01", instrument_id=instrument)
        recorder.note_order(buy, decision_ts_ns=at(n), decision_price=float(price) * 0.9995)
        coid = add_order(store, buy, status="filled", filled="0.01", created=n, last=n + 1,
                         events=[("submitted", n)])
        add_fill(store, coid, f"live{n}", "buy", "0.01", price, n + 1, instrument_id=instrument)
    pending = threading.Thread(target=lambda: store.con.execute("SELECT * FROM quotes").fetchone())
    pending.start()
    pending.join(10)  # the store's shared connection now holds an unfinished result of another thread

    errors: list[str] = []
    updater = TcaUpdater(store, recorder, on_error=errors.append, min_interval_s=0)
    with caplog.at_level(logging.DEBUG, logger="tradebook.tca"):
        first = updater.update_now()
        again = updater.update_now()  # nothing new: the same calibration is not said again
    assert errors == [] and updater.failures == 0, errors
    assert first.fills == 3 and set(first.unpriced) == {EURUSD} and "no spread profile" in first.unpriced[EURUSD]
    assert again.fills == 0
    rows = tca_fills(store).set_index("instrument_id")
    assert rows.loc[BTC, "calibration_id"] == btc.calibration_id and rows.loc[BTC, "predicted_cost_bps"] > 0
    assert rows.loc[EURUSD, "predicted_cost_bps"].isna().all()
    said = [r for r in caplog.records if "no predicted cost" in r.getMessage() and r.levelno >= logging.INFO]
    assert len(said) == 1 and said[0].levelno == logging.INFO and EURUSD in said[0].getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_calibration_applied_from_another_instrument_is_priced_by_the_one_it_was_derived_from(
        calibrated_btc_store):
    """A paper replay stores the model it applied to an instrument as that instrument's calibration, naming its
    source (``derived_from``); with no spread profile of its own it cannot price, so TCA predicts with the source
    (what research prices the instrument with) and names it; one with no source stays unpriced."""
    store, recorder = calibrated_btc_store, TcaRecorder()
    btc = store.calibration(BTC)
    other = dataclasses.replace(get_instrument(BTC), instrument_id=OTHER_CRYPTO, symbol="BTCUSDT2")
    store.register_instruments([other])  # another crypto pair: the asset class a BTC model may be applied to
    applied = dataclasses.replace(FillModel.from_json(btc.params), spread_profile=None)
    derived = store.save_calibration(OTHER_CRYPTO, applied.to_json(), data_start_ns=btc.data_start_ns,
                                     data_end_ns=btc.data_end_ns, dataset_ids=btc.dataset_ids,
                                     diagnostics={"derived": f"applied from {btc.calibration_id}",
                                                  "derived_from": btc.calibration_id})
    buy = intent("applied:0", "buy", "0.01", instrument_id=OTHER_CRYPTO)
    recorder.note_order(buy, decision_ts_ns=at(0), decision_price=36000.0)
    coid = add_order(store, buy, status="filled", filled="0.01", created=0, last=1, events=[("submitted", 0)])
    add_fill(store, coid, "applied0", "buy", "0.01", "36018", 1, instrument_id=OTHER_CRYPTO)

    done = TcaUpdater(store, recorder, calibrations={OTHER_CRYPTO: derived.calibration_id}).update_now()
    assert done.fills == 1 and done.unpriced == {}
    [row] = tca_fills(store).to_dict("records")
    assert row["calibration_id"] == btc.calibration_id and row["predicted_cost_bps"] > 0
