"""A short real paper session keeps its TCA: every fill gets a tca_fills row with its decision and predicted cost.

The session runs on the bundled BTCUSDT capture, one 1 s batch at a time (as in
tests/test_session.py), with a stored calibration; orders go through sizing, risk, the
router and the order manager to the paper venue, and the store is written by the session
itself. Nothing is computed here that the session did not record.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from tradebook.data import load_bundled
from tradebook.data.feeds import ReplayFeed
from tradebook.model.instruments import Side
from tradebook.model.orders import Signal
from tradebook.session import Session
from tests.tca.conftest import add_fill, add_order, at, intent
from tradebook.tca import TcaRecorder, cost_by_instrument, modelled_vs_realised, tca_fills, tca_orders, update_tca

BTC = "BTCUSDT.BINANCE"
FILES = "binance_spot_btcusdt_20240808T2354-20240809T0005_"


@pytest.fixture(scope="module")
def recorded():
    return load_bundled(FILES + "l1_quotes.csv.gz"), load_bundled(FILES + "trades.csv.gz")


def test_a_paper_session_writes_tca_for_each_of_its_fills(calibrated_btc_store, recorded, tmp_path):
    store = calibrated_btc_store  # tests/conftest.py: the same capture, ingested and calibrated once
    quotes, trades = (data.frame for data in recorded)
    batches = list(ReplayFeed({BTC: quotes}, {BTC: trades}).batches())
    session = Session(store, calibrations=[BTC], state_dir=tmp_path / "state").start()
    try:
        for batch in batches[:5]:
            session.step(batch)
        decided_at = batches[4].end_ns - 1
        last = quotes[quotes["ts_ns"] <= decided_at].iloc[-1]
        [buy] = session.submit(Signal("nb", "in", BTC, Side.BUY, None, strength=0.95, quantity=Decimal("0.01")))
        for batch in batches[5:10]:
            session.step(batch)
        [sell] = session.submit(Signal("nb", "out", BTC, Side.SELL, None, strength=0.95, quantity=Decimal("0.01")))
        for batch in batches[10:15]:
            session.step(batch)
    finally:
        session.stop()

    fills = store.fills()
    assert len(fills) >= 2
    tca = tca_fills(store)
    assert sorted(tca["fill_id"]) == sorted(fills["fill_id"])
    assert tca["arrival_mid"].notna().all() and tca["predicted_cost_bps"].notna().all()
    assert set(tca["calibration_id"]) == {store.calibration(BTC).calibration_id}
    assert tca["realised_cost_bps"].notna().all() and tca["decision_price"].notna().all()
    # the buy was priced against the quote in force when it was decided: that mid is its decision price
    row = tca[tca["client_order_id"] == buy.client_order_id].iloc[0]
    assert row["decision_price"] == (last["bid_px"] + last["ask_px"]) / 2
    assert row["decision_ts_ns"] == decided_at
    noted = store.query("SELECT * FROM tca_decisions WHERE order_id = ?", [buy.client_order_id])
    assert (noted["level"].tolist(), noted["decision_price"].tolist()) == (["order"], [row["decision_price"]])
    assert not [a for a in session.alerts if a.kind == "tca_failed"]
    parts = tca[["delay_bps", "spread_bps", "execution_bps", "fee_bps"]].sum(axis=1)
    assert parts.to_numpy() == pytest.approx(tca["shortfall_bps"].to_numpy(), rel=1e-9)

    orders = tca_orders(store, level="order")
    assert set(orders["order_id"]) == {buy.client_order_id, sell.client_order_id}
    assert (orders["fill_rate"] == 1.0).all() and orders["submit_to_ack_ms"].notna().all()
    by_instrument = cost_by_instrument(store)
    assert by_instrument["fills"].tolist() == [len(fills)]
    modelled = modelled_vs_realised(store)  # the simulator's prediction next to what each fill cost
    assert len(modelled) == len(fills)
    assert (modelled["error_bps"] == modelled["realised_cost_bps"] - modelled["predicted_cost_bps"]).all()


def test_a_twap_parent_of_a_paper_session_has_its_row_with_its_own_decision(calibrated_btc_store, recorded, tmp_path):
    store = calibrated_btc_store
    quotes, trades = (data.frame for data in recorded)
    batches = list(ReplayFeed({BTC: quotes}, {BTC: trades}).batches())
    # ADV 10 BTC: 0.5 BTC is 5 % of it, so the router works it as a TWAP of 5 slices 60 s apart
    session = Session(store, calibrations=[BTC], state_dir=tmp_path / "state", adv={BTC: Decimal("10")}).start()
    try:
        for batch in batches[:3]:
            session.step(batch)
        decided_at = batches[2].end_ns - 1
        last = quotes[quotes["ts_ns"] <= decided_at].iloc[-1]
        [first] = session.submit(Signal("nb", "twap", BTC, Side.BUY, None, strength=0.5, quantity=Decimal("0.5")))
        for batch in batches[3:3 + 4 * 60 + 5]:
            session.step(batch)
    finally:
        session.stop()

    parent_id = first.intent.parent_id
    [parent] = tca_orders(store, level="parent").to_dict("records")
    children = store.query("SELECT * FROM orders WHERE parent_order_id IS NOT NULL")
    assert set(children["parent_order_id"]) == {parent["order_id"]} and parent_id == "nb:twap"
    assert (parent["order_type"], parent["ordered_quantity"], parent["signal_type"]) == ("twap", 0.5, "twap parent")
    assert parent["decision_price"] == pytest.approx((last["bid_px"] + last["ask_px"]) / 2, rel=1e-15)
    assert parent["decision_ts_ns"] == decided_at
    assert parent["filled_quantity"] == pytest.approx(float(children["filled_quantity"].astype(float).sum()))
    parts = sum(parent[k] for k in ("delay_bps", "spread_bps", "execution_bps", "fee_bps", "opportunity_bps"))
    assert parts == pytest.approx(parent["shortfall_bps"], rel=1e-9, abs=1e-9)
    child_fills = tca_fills(store)
    assert len(child_fills) and set(child_fills["parent_order_id"]) == {parent["order_id"]}


def test_a_live_fill_without_stored_quotes_is_predicted_at_its_decision_price(calibrated_btc_store):
    """No quote of 2023 in the store (the capture is of 2024): only the session's note knows the mid it decided at."""
    store, recorder = calibrated_btc_store, TcaRecorder()
    buy = intent("live:a", "buy", "0.01")
    recorder.note_order(buy, decision_ts_ns=at(0), decision_price=36_000.0)
    coid = add_order(store, buy, status="filled", filled="0.01", created=1, last=2, events=[("submitted", 1)])
    add_fill(store, coid, "live1", "buy", "0.01", "36018", 2, fee="0.36018")
    update_tca(store, recorder=recorder)
    [row] = tca_fills(store).to_dict("records")
    assert row["mid_at_fill"] != row["mid_at_fill"] and row["realised_cost_bps"] != row["realised_cost_bps"]  # NULL
    assert row["shortfall_bps"] == pytest.approx(18 / 36_000 * 1e4 + 0.36018 / 360 * 1e4, rel=1e-12)
    assert row["calibration_id"] == store.calibration(BTC).calibration_id and row["predicted_cost_bps"] > 0
