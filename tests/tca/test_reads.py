"""The TCA read functions on the hand store of conftest.py: aggregates checked against hand computations.

Three days of one account: day 0 buys 2 @ 103.5 (fee 0.2, decided against mid 100, mid at
the fill 102), day 1 sells 1 @ 109 (mid 110), day 2 sells 1 @ 119 (mid 120).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.tca.conftest import ACCOUNT, BTC, STRATEGY, add_fill, add_order, at, ingest_quotes, intent
from tradebook.errors import StoreError
from tradebook.tca import (
    TcaRecorder,
    cost_by_instrument,
    cost_by_time_of_day,
    latency,
    markouts,
    modelled_vs_realised,
    session_performance,
    strategy_attribution,
    tca_fills,
    tca_orders,
    update_tca,
)

DAY = 86_400


@pytest.fixture
def three_days(hand_store):
    store, recorder = hand_store, TcaRecorder()
    ingest_quotes(store, [(DAY, 109, 111), (2 * DAY, 119, 121)])
    buy = intent("s:buy", "buy", "2")
    recorder.note_order(buy, decision_ts_ns=at(0), decision_price=100.0, signal_ts_ns=at(0))
    coid = add_order(store, buy, status="filled", filled="2", created=3, last=5, why="router:market_strong",
                     events=[("submitted", 3), ("accepted", 3.5)])
    add_fill(store, coid, "buy1", "buy", "2", "103.5", 5, fee="0.2")
    for n, price in ((1, "109"), (2, "119")):
        sell = add_order(store, intent(f"s:sell{n}", "sell", "1"), status="filled", filled="1", created=n * DAY + 1,
                         last=n * DAY + 5, why="router:market_strong",
                         events=[("submitted", n * DAY + 1), ("accepted", n * DAY + 2)])
        add_fill(store, sell, f"sell{n}", "sell", "1", price, n * DAY + 5)
    update_tca(store, recorder=recorder)
    return store


def test_per_row_frames_are_newest_first_with_times_and_filters(three_days):
    store = three_days
    fills = tca_fills(store)
    assert fills["fill_id"].tolist() == ["sell2", "sell1", "buy1"]
    assert str(fills["time"].dt.tz) == "UTC" and fills["quantity"].tolist() == [1.0, 1.0, 2.0]
    assert tca_fills(store, limit=1)["fill_id"].tolist() == ["sell2"]
    assert tca_fills(store, start_ns=at(DAY), end_ns=at(DAY + 10))["fill_id"].tolist() == ["sell1"]
    nobody = tca_fills(store, account_id="nobody")
    assert nobody.empty and list(nobody.columns) == list(fills.columns)
    orders = tca_orders(store, level="order")
    assert len(orders) == 3 and tca_orders(store, level="parent").empty
    # a cursor of the store's connection reads the same (a dashboard's way in)
    assert tca_fills(store.con.cursor())["fill_id"].tolist() == fills["fill_id"].tolist()
    with pytest.raises(StoreError, match="unknown TCA filter"):
        tca_fills(store, acount_id=ACCOUNT)
    with pytest.raises(StoreError, match="level must be"):
        tca_orders(store, level="parents")


def test_cost_by_instrument_and_by_time_of_day(three_days):
    store = three_days
    [row] = cost_by_instrument(store, window=1).to_dict("records")
    costs = {"buy1": 1.5 / 102 * 1e4, "sell1": 1 / 110 * 1e4, "sell2": 1 / 120 * 1e4}  # s(P - M)/M
    notional = {"buy1": 207.0, "sell1": 109.0, "sell2": 119.0}
    assert (row["instrument_id"], row["fills"], row["orders"], row["notional"]) == (BTC, 3, 3, 435.0)
    weighted = sum(costs[k] * notional[k] for k in costs) / 435.0
    assert row["realised_cost_bps"] == pytest.approx(weighted, rel=1e-12)
    assert row["realised_cost_bps_mean"] == pytest.approx(np.mean(list(costs.values())), rel=1e-12)
    assert row["rolling_cost_bps"] == pytest.approx(costs["sell2"], rel=1e-12)  # the last fill alone
    assert row["fees"] == pytest.approx(0.2, rel=1e-12)
    assert math.isnan(row["cost_vs_model"])  # no calibration in this store: nothing predicted
    assert (row["first_ns"], row["last_ns"]) == (at(5), at(2 * DAY + 5))

    # T0 is 22:13:20 UTC: every fill is in the 22:00 half hour (days apart, same time of day)
    by_time = cost_by_time_of_day(store, bucket_minutes=30)
    assert by_time[["bucket", "label", "fills"]].values.tolist() == [[1320, "22:00", 3]]
    assert by_time["notional"].iloc[0] == 435.0
    assert cost_by_time_of_day(store, bucket_minutes=60)["label"].tolist() == ["22:00"]
    with pytest.raises(StoreError, match="bucket_minutes"):
        cost_by_time_of_day(store, bucket_minutes=0)


def test_markouts_and_latency(three_days):
    store = three_days
    m = markouts(store).set_index("horizon_s")
    # buy1: mids 102, 104, 104 after it against 103.5; sell1: mid 110 after it against 109 (until day 2's quote);
    # sell2 is past the last stored quote: NULL at every horizon
    one = [-1.5 / 103.5 * 1e4, -1 / 109 * 1e4]
    assert m.loc[1, "fills"] == 2 and m.loc[1, "mean_bps"] == pytest.approx(np.mean(one), rel=1e-12)
    assert m.loc[1, "adverse_share"] == 1.0
    sixty = [0.5 / 103.5 * 1e4, -1 / 109 * 1e4]
    assert m.loc[60, "fills"] == 2 and m.loc[60, "median_bps"] == pytest.approx(np.mean(sixty), rel=1e-12)
    assert m.loc[60, "adverse_share"] == 0.5

    lat = latency(store).set_index("stage")
    assert lat.index.tolist() == ["signal_to_submit", "submit_to_ack", "ack_to_first_fill", "first_to_last_fill"]
    # the buy's signal was noted at t=0 and submitted at t=3; the sells had no note: signal = creation = submission
    assert lat.loc["signal_to_submit", "max_ms"] == 3000.0 and lat.loc["signal_to_submit", "p50_ms"] == 0.0
    assert lat.loc["submit_to_ack", "mean_ms"] == pytest.approx((500 + 1000 + 1000) / 3, rel=1e-12)
    assert lat.loc["ack_to_first_fill", "orders"] == 3 and lat.loc["ack_to_first_fill", "max_ms"] == 3000.0


def test_strategy_attribution_and_session_performance(three_days):
    store = three_days
    [row] = strategy_attribution(store).to_dict("records")
    # marked at the mid in force at the latest fill (120): buy 2 x (120 - 103.5) - 0.2, sells 109 - 120 and 119 - 120
    pnl = {"buy": 2 * 16.5 - 0.2, "sell1": -11.0, "sell2": -1.0}
    assert (row["strategy_id"], row["signal_type"], row["orders"], row["fills"]) == \
        (STRATEGY, "router:market_strong", 3, 3)
    assert row["pnl"] == pytest.approx(sum(pnl.values()), rel=1e-12)  # = the cash made: 20.8 (flat at the end)
    assert row["pnl"] == pytest.approx(-207.2 + 109 + 119, rel=1e-12)
    assert row["win_rate"] == pytest.approx(1 / 3, rel=1e-12)
    assert row["notional"] == pytest.approx(435.0, rel=1e-12) and row["fees"] == pytest.approx(0.2, rel=1e-12)

    [perf] = session_performance(store, starting_equity=1000.0).to_dict("records")
    equity = np.array([1000 - 207.2 + 2 * 102, 1000 - 207.2 + 109 + 110, 1000 - 207.2 + 109 + 119])
    ret = np.diff(np.r_[1000.0, equity]) / np.r_[1000.0, equity[:-1]]
    assert (perf["account_id"], perf["days"], perf["fills"]) == (ACCOUNT, 3, 3)
    assert perf["pnl"] == pytest.approx(20.8, rel=1e-12) and perf["return"] == pytest.approx(0.0208, rel=1e-12)
    assert perf["sharpe"] == pytest.approx(ret.mean() / ret.std(ddof=1) * math.sqrt(365), rel=1e-9)
    assert perf["sortino"] == pytest.approx(ret.mean() / math.sqrt(np.mean(np.minimum(ret, 0) ** 2)) * math.sqrt(365),
                                            rel=1e-9)
    assert perf["max_drawdown"] == pytest.approx(0.0032, rel=1e-9)  # day 0 closed 3.2 below the start


def test_modelled_vs_realised_lists_only_fills_with_a_prediction(three_days):
    assert modelled_vs_realised(three_days).empty  # no calibration stored: no fill has a prediction


def test_tca_rows_read_only_the_columns_asked_for_and_refuse_unknown_ones(tmp_path):
    from tradebook.errors import StoreError
    from tradebook.store import Store
    from tradebook.tca import tca_fills, tca_orders

    with Store(tmp_path / "empty.duckdb") as store:
        fills = tca_fills(store, columns=["realised_cost_bps", "instrument_id", "quantity"])
        assert list(fills.columns) == ["time", "ts_event", "realised_cost_bps", "instrument_id", "quantity"]
        orders = tca_orders(store, columns=["fill_rate"])
        assert list(orders.columns) == ["time", "decision_ts_ns", "fill_rate"]
        with pytest.raises(StoreError, match=r"tca_fills has no column\(s\) \['price_bps'\]"):
            tca_fills(store, columns=["price_bps"])
        with pytest.raises(StoreError, match="expected a list of"):
            tca_fills(store, columns="realised_cost_bps")
