"""update_tca against hand-computed cases (issue 14, Done-when 3) on a small real store (see conftest.py).

Every expected number is written out from the conftest's quotes and trades and the
conventions in tradebook/tca/update.py: s = +1 buy / -1 sell, bps of the decision price D,
delay = s(A - D)/D, spread = s(T - M)/D, execution = s(P - T + M - A)/D, markouts
s(mid(t+h) - P)/P (negative: adverse selection).
"""

from __future__ import annotations

import pytest

from tests.tca.conftest import add_fill, add_order, at, ingest_quotes, intent
from tradebook.tca import TcaRecorder, update_tca

APPROX = {"rel": 1e-9, "abs": 1e-9}


def bps(x: float) -> float:
    return x * 1e4


def fill_row(store, fill_id: str) -> dict:
    return store.query("SELECT * FROM tca_fills WHERE fill_id = ?", [fill_id]).iloc[0].to_dict()


def order_row(store, order_id: str, level: str = "order") -> dict:
    return store.query("SELECT * FROM tca_orders WHERE order_id = ? AND level = ?", [order_id, level]).iloc[0].to_dict()


def test_a_buy_market_order_decision_noted_by_the_session(hand_store):
    """Buy 2, decided at t=0 against mid 100, submitted t=3 (arrival mid 101), acked t=3.5, filled t=5 2 @ 103.5."""
    store, recorder = hand_store, TcaRecorder()
    buy = intent("s:a", "buy", "2")
    recorder.note_order(buy, decision_ts_ns=at(0), decision_price=100.0, signal_ts_ns=at(0))
    coid = add_order(store, buy, status="filled", filled="2", created=3, last=5,
                     events=[("submitted", 3), ("accepted", 3.5)])
    add_fill(store, coid, "a1", "buy", "2", "103.5", 5, fee="0.2")
    done = update_tca(store, recorder=recorder)
    assert (done.fills, done.orders, done.parents) == (1, 1, 0)

    f = fill_row(store, "a1")
    # D 100; A 101 (quote t=2); at the fill M 102 and the touch T = ask 103 (quote t=4)
    assert (f["decision_price"], f["arrival_mid"], f["mid_at_fill"], f["touch_at_fill"]) == (100, 101, 102, 103)
    assert f["delay_bps"] == pytest.approx(100.0, **APPROX)  # (101 - 100) / 100
    assert f["spread_bps"] == pytest.approx(100.0, **APPROX)  # (103 - 102) / 100
    assert f["execution_bps"] == pytest.approx(150.0, **APPROX)  # (103.5 - 103 + 102 - 101) / 100
    assert f["fee_bps"] == pytest.approx(10.0, **APPROX)  # 0.2 / (2 x 100)
    assert f["shortfall_bps"] == pytest.approx(360.0, **APPROX)  # (103.5 - 100) / 100 + fee
    assert f["arrival_slippage_bps"] == pytest.approx(bps(2.5 / 101), **APPROX)
    assert f["realised_cost_bps"] == pytest.approx(bps(1.5 / 102), **APPROX)
    # mids at t+1 (102), t+10 (104, quote t=12), t+60 (104): against the price paid
    assert f["markout_1s_bps"] == pytest.approx(bps(-1.5 / 103.5), **APPROX)
    assert f["markout_10s_bps"] == pytest.approx(bps(0.5 / 103.5), **APPROX)
    assert f["markout_60s_bps"] == pytest.approx(bps(0.5 / 103.5), **APPROX)
    assert f["signal_type"] == "router:test"

    o = order_row(store, coid)
    assert o["fill_rate"] == 1.0 and o["opportunity_bps"] == 0.0 and o["avg_fill_price"] == 103.5
    for part in ("delay_bps", "spread_bps", "execution_bps", "fee_bps", "shortfall_bps"):
        assert o[part] == pytest.approx(f[part], **APPROX), part  # one fill of the whole order: the same split
    # market trades from submission (t=3) to the end (t=5): 1 @ 102 and 3 @ 103
    assert o["market_vwap"] == pytest.approx(102.75, **APPROX) and o["market_volume"] == 4.0
    assert o["participation"] == pytest.approx(0.5, **APPROX)
    assert o["vwap_slippage_bps"] == pytest.approx(bps(0.75 / 102.75), **APPROX)
    assert (o["signal_to_submit_ms"], o["submit_to_ack_ms"], o["ack_to_first_fill_ms"],
            o["first_to_last_fill_ms"]) == (3000.0, 500.0, 1500.0, 0.0)
    assert (o["end_ts_ns"], o["end_mid"], o["status"]) == (at(5), 102.0, "filled")


def test_a_sell_limit_partly_filled_then_cancelled_decision_from_the_stored_quotes(hand_store):
    """Sell 4 limit 105 created t=10 (no note: D = mid in force then, 102), 1 @ 105 at t=13, cancelled t=80."""
    store = hand_store
    sell = intent("s:b", "sell", "4", "limit", limit="105")
    coid = add_order(store, sell, status="cancelled", filled="1", created=10, last=80,
                     events=[("submitted", 10), ("accepted", 10), ("cancelled", 80)])
    add_fill(store, coid, "b1", "sell", "1", "105", 13)
    update_tca(store)

    f = fill_row(store, "b1")
    assert (f["decision_price"], f["arrival_mid"], f["mid_at_fill"], f["touch_at_fill"]) == (102, 102, 104, 103)
    assert f["delay_bps"] == 0.0
    assert f["spread_bps"] == pytest.approx(bps(1 / 102), **APPROX)  # -(103 - 104) / 102
    assert f["execution_bps"] == pytest.approx(bps(-4 / 102), **APPROX)  # -(105 - 103 + 104 - 102) / 102
    assert f["shortfall_bps"] == pytest.approx(bps(-3 / 102), **APPROX)  # sold 3 above the decision mid: a gain
    assert f["realised_cost_bps"] == pytest.approx(bps(-1 / 104), **APPROX)
    # mids 104 at t=14 and t=23, 106 at t=73: the market rose after we sold (adverse at 60 s)
    assert f["markout_1s_bps"] == pytest.approx(bps(1 / 105), **APPROX)
    assert f["markout_10s_bps"] == pytest.approx(bps(1 / 105), **APPROX)
    assert f["markout_60s_bps"] == pytest.approx(bps(-1 / 105), **APPROX)

    o = order_row(store, coid)
    assert o["fill_rate"] == 0.25 and (o["end_ts_ns"], o["end_mid"]) == (at(80), 106.0)
    assert o["delay_bps"] == 0.0
    assert o["spread_bps"] == pytest.approx(bps(1 / 102) / 4, **APPROX)  # F/Q = 1/4 of the fill's
    assert o["execution_bps"] == pytest.approx(bps(-4 / 102) / 4, **APPROX)
    # 3 of 4 unsold while the mid went from 102 to 106: selling later would have paid, a negative cost
    assert o["opportunity_bps"] == pytest.approx(bps(-4 / 102) * 3 / 4, **APPROX)
    assert o["shortfall_bps"] == pytest.approx(bps(-3 / 102) / 4 + bps(-4 / 102) * 3 / 4, **APPROX)
    assert o["limit_slippage_bps"] == 0.0  # filled at its limit


def test_a_limit_that_never_fills_costs_its_opportunity(hand_store):
    """Buy 1 limit 99 decided at t=90 against mid 104 (noted), expired at t=210: the mid then is 105."""
    store, recorder = hand_store, TcaRecorder()
    buy = intent("s:c", "buy", "1", "limit", limit="99")
    recorder.note_order(buy, decision_ts_ns=at(90), decision_price=104.0)
    coid = add_order(store, buy, status="expired", filled="0", created=90, last=210,
                     events=[("submitted", 90), ("accepted", 90.5), ("expired", 210)])
    update_tca(store, recorder=recorder)
    o = order_row(store, coid)
    assert (o["fill_rate"], o["decision_price"], o["end_mid"]) == (0.0, 104.0, 105.0)
    assert (o["delay_bps"], o["spread_bps"], o["execution_bps"], o["fee_bps"]) == (0.0, 0.0, 0.0, 0.0)
    assert o["opportunity_bps"] == pytest.approx(bps(1 / 104), **APPROX)
    assert o["shortfall_bps"] == pytest.approx(bps(1 / 104), **APPROX)
    assert o["avg_fill_price"] is None or o["avg_fill_price"] != o["avg_fill_price"]  # no fill: no price
    assert store.query("SELECT count(*) AS n FROM tca_fills")["n"].iloc[0] == 0


def test_a_twap_parent_aggregates_its_children_against_its_own_decision(hand_store):
    """Parent buy 3 (TWAP) decided at t=60 against mid 104; slice 1: 1.5 @ 105 at t=62; slice 2: 1 of 1.5 @ 107."""
    store, recorder = hand_store, TcaRecorder()
    parent = intent("s:p", "buy", "3")
    recorder.note_parent(parent, "twap", decision_ts_ns=at(60), decision_price=104.0, signal_ts_ns=at(60))
    one = add_order(store, intent("s:p:slice:1", "buy", "1.5", parent_id="s:p"), status="filled", filled="1.5",
                    created=61, last=62, why="twap slice 1/2, router:market", events=[("submitted", 61),
                                                                                        ("accepted", 61)])
    add_fill(store, one, "p1", "buy", "1.5", "105", 62)
    two = add_order(store, intent("s:p:slice:2", "buy", "1.5", parent_id="s:p"), status="cancelled", filled="1",
                    created=71, last=73, why="twap slice 2/2, router:market",
                    events=[("submitted", 71), ("accepted", 71), ("cancelled", 73)])
    add_fill(store, two, "p2", "buy", "1", "107", 72)
    done = update_tca(store, recorder=recorder)
    assert (done.fills, done.orders, done.parents) == (2, 2, 1)

    p = order_row(store, parent.client_order_id, "parent")
    assert (p["order_type"], float(p["ordered_quantity"]), float(p["filled_quantity"])) == ("twap", 3.0, 2.5)
    assert p["signal_type"] == "twap parent" and p["status"] == "done"
    # D 104; A = mid at the first slice's submission (t=61): 104; E = mid at the last slice's end (t=73): 106
    assert (p["decision_price"], p["arrival_mid"], p["end_mid"]) == (104.0, 104.0, 106.0)
    assert p["avg_fill_price"] == pytest.approx(264.5 / 2.5, **APPROX)
    assert p["delay_bps"] == 0.0
    assert p["spread_bps"] == pytest.approx(bps(2.5 / 312), **APPROX)  # (1.5 x 1 + 1 x 1) / (104 x 3)
    assert p["execution_bps"] == pytest.approx(bps(2 / 312), **APPROX)  # (264.5 - 2.5 - 104 x 2.5) / 312
    assert p["opportunity_bps"] == pytest.approx(bps(2 / 104) * 0.5 / 3, **APPROX)
    assert p["shortfall_bps"] == pytest.approx(bps(4.5 / 312) + bps(2 / 104) * 0.5 / 3, **APPROX)
    assert p["fill_rate"] == pytest.approx(2.5 / 3, **APPROX)
    assert p["signal_to_submit_ms"] == 1000.0 and p["first_to_last_fill_ms"] == 10_000.0
    # each slice on its own: no note, so D is the mid at its creation (104 at t=61, 106 at t=71)
    two_row = order_row(store, two)
    assert (two_row["decision_price"], two_row["signal_type"]) == (106.0, "twap slice")
    assert two_row["opportunity_bps"] == 0.0  # ended at t=73 with the mid where it was decided (106)
    children = store.query("SELECT parent_order_id FROM tca_fills ORDER BY fill_id")["parent_order_id"].tolist()
    assert children == [parent.client_order_id] * 2


def test_markouts_past_the_data_are_null_until_quotes_cover_them(hand_store):
    """Sell 1 filled at t=150.5 @ 103.9: the 60 s horizon (210.5) is past the last quote (200) until more arrive."""
    store = hand_store
    coid = add_order(store, intent("s:d", "sell", "1"), status="filled", filled="1", created=150, last=150.5,
                     events=[("submitted", 150), ("accepted", 150)])
    add_fill(store, coid, "d1", "sell", "1", "103.9", 150.5)
    update_tca(store)
    f = fill_row(store, "d1")
    assert f["markout_1s_bps"] == pytest.approx(bps(-2.1 / 103.9), **APPROX)  # mid 106 (quote t=70)
    assert f["markout_10s_bps"] == pytest.approx(bps(-2.1 / 103.9), **APPROX)
    assert f["markout_60s_bps"] != f["markout_60s_bps"]  # NULL: no quote yet tells the mid at t=210.5

    assert update_tca(store).fills == 0  # nothing new: nothing recomputed
    ingest_quotes(store, [(300, 100, 102)])
    assert update_tca(store).fills == 1
    f = fill_row(store, "d1")
    assert f["markout_60s_bps"] == pytest.approx(bps(-1.1 / 103.9), **APPROX)  # mid 105 (quote t=200)
    assert f["markout_1s_bps"] == pytest.approx(bps(-2.1 / 103.9), **APPROX)


def test_the_split_adds_up_and_a_second_update_changes_nothing(hand_store):
    store, recorder = hand_store, TcaRecorder()
    buy = intent("s:e", "buy", "2")
    recorder.note_order(buy, decision_ts_ns=at(1), decision_price=99.5)
    coid = add_order(store, buy, status="filled", filled="2", created=2, last=13,
                     events=[("submitted", 2), ("accepted", 2)])
    add_fill(store, coid, "e1", "buy", "0.5", "102.5", 4.2, fee="0.05")
    add_fill(store, coid, "e2", "buy", "1.5", "105.25", 12.5, fee="0.15")
    sell = add_order(store, intent("s:f", "sell", "3", "limit", limit="104"), status="cancelled", filled="2",
                     created=11, last=75, events=[("submitted", 11), ("accepted", 11)])
    add_fill(store, sell, "f1", "sell", "2", "104", 70.5)
    update_tca(store, recorder=recorder)
    fills = store.query("SELECT * FROM tca_fills")
    parts = fills[["delay_bps", "spread_bps", "execution_bps", "fee_bps"]].sum(axis=1)
    assert parts.to_numpy() == pytest.approx(fills["shortfall_bps"].to_numpy(), rel=1e-12)
    orders = store.query("SELECT * FROM tca_orders")
    parts = orders[["delay_bps", "spread_bps", "execution_bps", "fee_bps", "opportunity_bps"]].sum(axis=1)
    assert parts.to_numpy() == pytest.approx(orders["shortfall_bps"].to_numpy(), rel=1e-12)
    # the buy's two fills: F = Q, so its shortfall is the quantity-weighted mean of theirs
    o = order_row(store, coid)
    weighted = (0.5 * fill_row(store, "e1")["shortfall_bps"] + 1.5 * fill_row(store, "e2")["shortfall_bps"]) / 2
    assert o["shortfall_bps"] == pytest.approx(weighted, **APPROX)

    before = (store.query("SELECT * FROM tca_fills ORDER BY fill_id"),
              store.query("SELECT * FROM tca_orders ORDER BY order_id"))
    again = update_tca(store, recorder=recorder)
    assert (again.fills, again.orders, again.parents) == (0, 0, 0)
    after = (store.query("SELECT * FROM tca_fills ORDER BY fill_id"),
             store.query("SELECT * FROM tca_orders ORDER BY order_id"))
    for old, new in zip(before, after):
        assert old.equals(new)


def test_a_quote_over_an_hour_old_is_no_mid_until_fresh_quotes_are_loaded(hand_store):
    """Buy 1 @ 110 at t=8000 s: the last quote (t=200) is 2 h old, so no mid is known; a later load fills it in."""
    store = hand_store
    coid = add_order(store, intent("s:g", "buy", "1"), status="filled", filled="1", created=7999, last=8000,
                     events=[("submitted", 7999)])
    add_fill(store, coid, "g1", "buy", "1", "110", 8000)
    update_tca(store)
    f = fill_row(store, "g1")
    for column in ("decision_price", "arrival_mid", "mid_at_fill", "shortfall_bps", "realised_cost_bps"):
        assert f[column] != f[column], column  # NULL
    assert update_tca(store).fills == 0  # nothing loaded since: not recomputed

    ingest_quotes(store, [(7990, 108, 110)])
    assert update_tca(store).fills == 1
    f = fill_row(store, "g1")
    assert (f["decision_price"], f["mid_at_fill"]) == (109.0, 109.0)
    assert f["shortfall_bps"] == pytest.approx(bps(1 / 109), **APPROX)
    assert order_row(store, coid)["shortfall_bps"] == pytest.approx(bps(1 / 109), **APPROX)
