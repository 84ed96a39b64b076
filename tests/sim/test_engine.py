"""The event-driven engine: every matching rule of tradebook.sim.orders on hand-built feeds, then real data.

Hand-built feeds carry hand-computed fills (prices, quantities, times, roles); the
bundled BTCUSDT and IBM captures check invariants and the agreement with
:func:`tradebook.sim.truth.passive_outcomes` for resting orders.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from tradebook.data import load_bundled
from tradebook.errors import ConfigError, ConformanceError, DataError, OrderError, UnknownInstrumentError
from tradebook.model.instruments import get_instrument
from tradebook.sim.engine import FILL_COLUMNS, REQUEST_COLUMNS, SimEngine, SimResult, replay, requests_frame
from tradebook.sim.fill_model import (
    SIZE_BUCKET_EDGES,
    CostCurve,
    FeeSchedule,
    FillModel,
    LatencyModel,
    touch_only_curve,
)
from tradebook.sim.orders import latency_ns, make_order, request_latency_ns
from tradebook.sim.truth import passive_outcomes, prevailing_quotes, regular_hours_mask

BTC = get_instrument("BTCUSDT.BINANCE")
IBM = get_instrument("IBM.XNYS")
BTC_FILES = "binance_spot_btcusdt_20240808T2354-20240809T0005_"
T = 1_723_000_000_000_000_000  # 2024-08-07T03:06:40Z, far from a session close
MIDNIGHT = 1_723_161_600_000_000_000  # 2024-08-09T00:00Z: BTCUSDT DAY orders expire here
NAN = np.nan
FEES = FeeSchedule(maker_bps=1.0, taker_bps=5.0)
NO_LATENCY = LatencyModel(submit_to_ack_median_ns=0, ack_to_fill_median_ns=0, sigma=0.0)


def btc_model(*, max_take: float = 50.0, latency: LatencyModel = NO_LATENCY, fees: FeeSchedule = FEES) -> FillModel:
    """Fills at the touch (ratio 1, no slippage): prices are the quoted ones, exactly."""
    return FillModel("BTCUSDT.BINANCE", 0.01, touch_only_curve(), fees=fees, latency=latency,
                     max_take_over_touch=max_take)


def engine(*, feed_has_trades: bool = True, **model_args) -> SimEngine:
    return SimEngine(btc_model(**model_args), BTC, feed_has_trades=feed_has_trades)


def quotes(e: SimEngine, rows: list[tuple]) -> None:
    """Feed (ts offset from T, bid, ask, bid_sz, ask_sz) rows as one batch."""
    a = np.array(rows, dtype=np.float64)
    e.on_quotes(T + np.array([r[0] for r in rows], dtype=np.int64), a[:, 1], a[:, 2], a[:, 3], a[:, 4])


def trades(e: SimEngine, rows: list[tuple]) -> None:
    """Feed (ts offset from T, price, size, aggressor) rows as one batch."""
    a = np.array(rows, dtype=np.float64)
    e.on_trades(T + np.array([r[0] for r in rows], dtype=np.int64), a[:, 1], a[:, 2], a[:, 3])


def fills_of(e: SimEngine, order_id: int) -> list[tuple]:
    f = e.fills
    f = f[f["order_id"] == order_id]
    return [(int(ts - T), qty, px, liq) for ts, qty, px, liq in
            zip(f["ts_ns"], f["quantity"], f["price"], f["liquidity"])]


def assert_fills(actual: list[tuple], expected: list[tuple]) -> None:
    assert len(actual) == len(expected), actual
    for (ts, qty, px, liq), (ets, eqty, epx, eliq) in zip(actual, expected):
        assert (ts, liq) == (ets, eliq)
        assert qty == pytest.approx(eqty, rel=1e-12) and px == pytest.approx(epx, rel=1e-12)


# -- taking liquidity ------------------------------------------------------------------
def test_market_order_takes_the_touch_in_force_at_arrival():
    e = SimEngine(btc_model(latency=LatencyModel(0, 1_000, 0.0)), BTC)
    quotes(e, [(0, 100.00, 100.02, 5.0, 5.0), (5, 100.00, 100.03, 5.0, 5.0)])
    buy = e.submit(make_order(BTC, "buy", "0.5"), T + 5)  # arrives at T+5: the quote stamped T+5 is in force
    quotes(e, [(10, 100.01, 100.04, 5.0, 5.0)])
    sell = e.submit(make_order(BTC, "sell", "0.3"), T + 20)
    e.advance_to(T + 20)
    assert_fills(fills_of(e, buy), [(5, 0.5, 100.03, "taker")])
    assert_fills(fills_of(e, sell), [(20, 0.3, 100.01, "taker")])
    f = e.fills
    assert list(f.columns) == ["order_id", "ts_ns", "report_ts_ns", "side", "quantity", "price", "liquidity", "fee"]
    assert (f["report_ts_ns"] - f["ts_ns"] == 1_000).all()
    assert f["fee"].tolist() == pytest.approx([0.5 * 100.03 * 5e-4, 0.3 * 100.01 * 5e-4])
    assert f["side"].tolist() == [1, -1]
    order = e.order(buy)
    assert order["status"] == "filled" and order["filled_qty"] == 0.5 and order["avg_price"] == 100.03
    assert order["arrival_ts_ns"] == T + 5 and order["done_ts_ns"] == T + 5


def test_market_order_waits_for_a_valid_quote_and_ioc_is_cancelled_without_one():
    e = engine()
    waiting = e.submit(make_order(BTC, "buy", "0.1"), T)
    ioc = e.submit(make_order(BTC, "buy", "0.1", tif="ioc"), T)
    quotes(e, [(1, 100.02, 100.02, 1.0, 1.0),  # locked: not valid
               (2, 100.00, NAN, 1.0, 1.0),  # one-sided
               (3, 100.00, 100.01, 1.0, 0.0),  # no size at the ask
               (4, 100.00, 100.05, 1.0, 1.0)])
    assert_fills(fills_of(e, waiting), [(4, 0.1, 100.05, "taker")])
    assert e.order(ioc)["status"] == "cancelled" and e.order(ioc)["done_ts_ns"] == T
    assert fills_of(e, ioc) == []


def test_large_market_order_fills_in_parts_over_several_quotes():
    e = engine(max_take=1.0)  # one quote gives at most the touch size
    order = e.submit(make_order(BTC, "buy", "1.0"), T + 1)
    quotes(e, [(0, 100.00, 100.02, 1.0, 0.4), (2, 100.00, 100.03, 1.0, 0.4), (3, 99.0, 98.0, 1.0, 1.0),
               (4, 100.01, 100.04, 1.0, 0.5)])
    assert_fills(fills_of(e, order), [(1, 0.4, 100.02, "taker"), (2, 0.4, 100.03, "taker"),
                                      (4, 0.2, 100.04, "taker")])  # the crossed quote at 3 gives nothing
    assert e.order(order)["status"] == "filled" and e.order(order)["done_ts_ns"] == T + 4
    assert e.order(order)["avg_price"] == pytest.approx((0.4 * 100.02 + 0.4 * 100.03 + 0.2 * 100.04) / 1.0)


def test_ioc_remainder_is_cancelled_at_arrival():
    e = engine(max_take=1.0)
    quotes(e, [(0, 100.00, 100.02, 1.0, 0.4)])
    order = e.submit(make_order(BTC, "buy", "1.0", tif="ioc"), T + 1)
    quotes(e, [(2, 100.00, 100.02, 1.0, 0.4)])
    assert_fills(fills_of(e, order), [(1, 0.4, 100.02, "taker")])
    state = e.order(order)
    assert state["status"] == "cancelled" and state["filled_qty"] == pytest.approx(0.4)
    assert state["done_ts_ns"] == T + 1


def test_fok_fills_all_or_nothing():
    e = engine(max_take=1.0)
    quotes(e, [(0, 100.00, 100.02, 1.0, 0.4)])
    too_big = e.submit(make_order(BTC, "buy", "1.0", tif="fok"), T + 1)
    fits = e.submit(make_order(BTC, "buy", "0.4", tif="fok"), T + 1)
    not_marketable = e.submit(make_order(BTC, "buy", "0.1", "limit", limit_px="100.01", tif="fok"), T + 1)
    quotes(e, [(2, 100.00, 100.02, 1.0, 5.0)])
    assert fills_of(e, too_big) == [] and e.order(too_big)["status"] == "cancelled"
    assert_fills(fills_of(e, fits), [(1, 0.4, 100.02, "taker")])
    assert fills_of(e, not_marketable) == [] and e.order(not_marketable)["status"] == "cancelled"


def test_marketable_limit_never_pays_through_its_limit_then_rests():
    # Cost in half-spreads grows past the touch size: ratio 2 for 1-2x, 3 for 2-4x the touch.
    ratios = (1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0)
    curve = CostCurve(SIZE_BUCKET_EDGES, ratios, ratios, ratios, (0,) * 10)
    model = FillModel("IBM.XNYS", 0.01, curve, latency=NO_LATENCY)
    e = SimEngine(model, IBM)
    quotes(e, [(0, 100.00, 100.04, 100.0, 100.0)])
    order = e.submit(make_order(IBM, "buy", 300, "limit", limit_px="100.04"), T + 1)
    # 300 (3x the touch) would cost 100.08, 199 would cost 100.06: both through the limit; 99 fit at 100.04
    quotes(e, [(2, 100.00, 100.04, 100.0, 100.0), (3, 100.00, 100.05, 100.0, 100.0)])
    trades(e, [(4, 100.04, 50.0, -1)])  # rests from 3 at a new best price (queue 0): a seller at the limit fills it
    assert_fills(fills_of(e, order), [(1, 99.0, 100.04, "taker"), (2, 99.0, 100.04, "taker"),
                                      (4, 50.0, 100.04, "maker")])
    assert e.order(order)["status"] == "working" and e.order(order)["filled_qty"] == 248.0


# -- resting orders ----------------------------------------------------------------------
def test_resting_limit_waits_for_the_queue_then_fills_in_parts():
    e = engine()
    quotes(e, [(0, 100.00, 100.02, 2.0, 3.0)])
    order = e.submit(make_order(BTC, "buy", "1.0", "limit", limit_px="100.00"), T + 1)  # joins 2.0 at the bid
    better = e.submit(make_order(BTC, "buy", "0.1", "limit", limit_px="100.01"), T + 2)  # a new best bid
    trades(e, [(1, 100.00, 5.0, -1),  # stamped at the arrival: it came first
               (2, 100.00, 1.5, -1),  # queue 2.0 -> 0.5
               (3, 100.00, 0.7, 1),  # a buyer at the limit does not reach a resting buy (but trades through 100.01)
               (4, 100.01, 0.7, -1),  # above the limit
               (5, 100.00, 1.0, -1),  # 0.5 ends the queue, 0.5 fills
               (6, 100.00, 0.3, -1),
               (7, 100.00, 1.0, -1),  # completes the last 0.2
               (8, 99.00, 1.0, -1)])
    assert_fills(fills_of(e, order), [(5, 0.5, 100.00, "maker"), (6, 0.3, 100.00, "maker"),
                                      (7, 0.2, 100.00, "maker")])
    assert_fills(fills_of(e, better), [(3, 0.1, 100.01, "maker")])
    state = e.order(order)
    assert state["status"] == "filled" and state["done_ts_ns"] == T + 7 and state["filled_qty"] == pytest.approx(1.0)
    maker_fees = [0.1 * 100.01 * 1e-4] + [q * 100.0 * 1e-4 for q in (0.5, 0.3, 0.2)]
    assert e.fills["fee"].tolist() == pytest.approx(maker_fees)


def test_trade_through_fills_the_whole_remainder_at_the_limit():
    e = engine()
    quotes(e, [(0, 100.00, 100.02, 2.0, 3.0)])
    order = e.submit(make_order(BTC, "buy", "1.0", "limit", limit_px="99.99"), T + 1)  # behind the bid: queue unknown
    trades(e, [(2, 99.99, 5.0, -1),  # at the limit: with an unknown queue only trades through count
               (3, 100.00, 1.0, -1),
               (4, 99.98, 0.01, 1)])  # through, any aggressor, any size
    assert_fills(fills_of(e, order), [(4, 1.0, 99.99, "maker")])


def test_quote_through_fills_on_a_feed_without_trades():
    e = engine(feed_has_trades=False)
    quotes(e, [(0, 100.00, 100.02, 2.0, 3.0)])
    buy = e.submit(make_order(BTC, "buy", "1.0", "limit", limit_px="99.99"), T + 1)
    sell = e.submit(make_order(BTC, "sell", "0.5", "limit", limit_px="100.03"), T + 1)
    quotes(e, [(2, 99.98, 100.00, 1.0, 1.0),
               (3, 99.97, 99.97, 1.0, 1.0),  # locked, not valid: no fill
               (4, 99.97, 99.99, 1.0, 1.0),  # the ask reaches the buy limit
               (5, 100.02, 100.05, 1.0, 1.0),
               (6, 100.03, 100.05, 1.0, 1.0)])  # the bid reaches the sell limit
    assert_fills(fills_of(e, buy), [(4, 1.0, 99.99, "maker")])
    assert_fills(fills_of(e, sell), [(6, 0.5, 100.03, "maker")])
    with pytest.raises(ConfigError, match="feed_has_trades=False"):
        trades(e, [(7, 100.0, 1.0, 1)])


# -- stops -------------------------------------------------------------------------------
def test_stops_trigger_on_the_quote_and_stop_limits_become_limits():
    e = engine()
    quotes(e, [(0, 100.00, 100.02, 1.0, 1.0)])
    buy_stop = e.submit(make_order(BTC, "buy", "0.2", "stop", stop_px="100.05"), T + 1)
    already = e.submit(make_order(BTC, "buy", "0.1", "stop", stop_px="100.01"), T + 1)  # ask >= stop at arrival
    resting_stop_limit = e.submit(make_order(BTC, "sell", "0.5", "stop_limit", limit_px="99.93", stop_px="99.96"),
                                  T + 1)
    taking_stop_limit = e.submit(make_order(BTC, "sell", "0.3", "stop_limit", limit_px="99.90", stop_px="99.96"),
                                 T + 1)
    quotes(e, [(10, 100.02, 100.04, 1.0, 1.0),
               (20, 100.04, 100.06, 1.0, 1.0),  # ask 100.06 >= 100.05: the buy stop takes here
               (30, 99.96, 99.95, 1.0, 1.0),  # crossed: stops do not trigger on invalid quotes
               (40, 99.90, 99.95, 1.0, 1.0)])  # bid 99.90 <= 99.96: both sell stop-limits trigger
    trades(e, [(50, 99.93, 0.2, 1)])  # a buyer at the limit of the one resting at a new best ask (queue 0)
    assert_fills(fills_of(e, already), [(1, 0.1, 100.02, "taker")])
    assert_fills(fills_of(e, buy_stop), [(20, 0.2, 100.06, "taker")])
    assert_fills(fills_of(e, taking_stop_limit), [(40, 0.3, 99.90, "taker")])  # marketable: 99.90 <= bid
    assert_fills(fills_of(e, resting_stop_limit), [(50, 0.2, 99.93, "maker")])
    assert e.order(resting_stop_limit)["status"] == "working"


# -- time in force, cancel, replace -----------------------------------------------------
def test_day_order_expires_at_the_session_close_before_events_stamped_then():
    e = engine(feed_has_trades=False)
    submit = MIDNIGHT - 10_000_000_000
    spec = make_order(BTC, "buy", "0.1", "limit", limit_px="100.00", tif="day", ts_ns=submit)
    assert spec.expire_ts_ns == MIDNIGHT  # crypto: the day ends at 00:00 UTC
    order = e.submit(spec, submit)
    gtc = e.submit(make_order(BTC, "buy", "0.1", "limit", limit_px="100.00"), submit)
    e.on_quotes(np.array([submit - 1, MIDNIGHT]), np.array([100.00, 99.00]), np.array([100.02, 99.99]),
                np.array([1.0, 1.0]), np.array([1.0, 1.0]))  # the quote at midnight would fill it
    assert fills_of(e, order) == []
    state = e.order(order)
    assert state["status"] == "expired" and state["done_ts_ns"] == MIDNIGHT
    assert e.order(gtc)["status"] == "filled"


def test_cancel_replace_and_a_cancel_that_comes_too_late():
    e = engine(latency=LatencyModel(submit_to_ack_median_ns=5, ack_to_fill_median_ns=0, sigma=0.0))
    quotes(e, [(0, 100.00, 100.02, 2.0, 1.0)])
    cancelled = e.submit(make_order(BTC, "buy", "0.1", "limit", limit_px="99.98"), T + 1)
    moved = e.submit(make_order(BTC, "buy", "0.1", "limit", limit_px="99.98"), T + 1)
    e.cancel(cancelled, T + 10)
    e.replace(moved, T + 20, limit_px=100.02)  # marketable once it arrives at T+25
    e.cancel(moved, T + 30)  # arrives at T+35: filled already
    quotes(e, [(40, 99.00, 99.10, 1.0, 1.0)])
    assert e.order(cancelled)["status"] == "cancelled" and e.order(cancelled)["done_ts_ns"] == T + 15
    assert_fills(fills_of(e, moved), [(25, 0.1, 100.02, "taker")])
    state = e.order(moved)
    assert state["status"] == "filled" and state["limit_px"] == 100.02 and state["done_ts_ns"] == T + 25
    assert state["arrival_ts_ns"] == T + 6


def test_replace_resets_the_queue_and_refuses_a_quantity_already_filled():
    e = engine()
    quotes(e, [(0, 100.00, 100.02, 1.0, 1.0)])
    order = e.submit(make_order(BTC, "buy", "1.0", "limit", limit_px="100.00"), T + 1)
    trades(e, [(2, 100.00, 1.5, -1)])  # queue 1.0, then 0.5 fills
    e.replace(order, T + 3, quantity=0.5)  # not more than filled: ignored
    e.replace(order, T + 4, quantity=2.0)  # rejoins the back of the bid: 1.0 ahead again
    quotes(e, [(5, 100.00, 100.02, 3.0, 1.0)])
    trades(e, [(6, 100.00, 1.2, -1), (7, 100.00, 2.0, -1)])
    assert_fills(fills_of(e, order), [(2, 0.5, 100.00, "maker"), (6, 0.2, 100.00, "maker"),
                                      (7, 1.3, 100.00, "maker")])
    state = e.order(order)
    assert state["status"] == "filled" and state["quantity"] == 2.0
    with pytest.raises(OrderError, match="expected a limit or stop-limit"):
        e.replace(e.submit(make_order(BTC, "buy", "0.1"), T + 8), T + 8, quantity=0.2)
    with pytest.raises(OrderError, match="changes nothing"):
        e.replace(order, T + 8)
    with pytest.raises(ConformanceError, match="tick"):
        e.replace(order, T + 8, limit_px=100.005)
    with pytest.raises(OrderError, match="unknown"):
        e.cancel(99, T + 8)


# -- latency and seeds --------------------------------------------------------------------
@pytest.fixture(scope="module")
def btc_slice() -> tuple[pd.DataFrame, pd.DataFrame]:
    q = load_bundled(BTC_FILES + "l1_quotes.csv.gz").frame
    t = load_bundled(BTC_FILES + "trades.csv.gz").frame
    end = int(q["ts_ns"].iloc[0]) + 120_000_000_000  # two minutes
    return q[q["ts_ns"] <= end].reset_index(drop=True), t[t["ts_ns"] <= end].reset_index(drop=True)


def mixed_requests(q: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Market, limit (at and around the touch), stop and IOC orders at random quotes, some cancelled."""
    rows = []
    picks = np.sort(rng.choice(np.arange(10, len(q) - 10), n, replace=False))
    for ref, i in enumerate(picks):
        side = "buy" if ref % 2 == 0 else "sell"
        bid, ask, ts = q["bid_px"].iloc[i], q["ask_px"].iloc[i], int(q["ts_ns"].iloc[i])
        touch = bid if side == "buy" else ask
        sign = 1 if side == "buy" else -1
        kind = ref % 5
        row = {"ts_ns": ts, "action": "submit", "order_ref": ref, "side": side, "quantity": 0.002 * (1 + ref % 3)}
        if kind == 0:
            row["order_type"] = "market"
        elif kind in (1, 2):
            row.update(order_type="limit", limit_px=round(touch - sign * 0.01 * (kind - 1), 2))
        elif kind == 3:
            row.update(order_type="limit", limit_px=round(touch + sign * 0.05, 2), tif="ioc")
        else:
            row.update(order_type="stop", stop_px=round(touch + sign * 0.5, 2))
        rows.append(row)
        if ref % 4 == 1:
            rows.append({"ts_ns": ts + 2_000_000_000, "action": "cancel", "order_ref": ref})
    return pd.DataFrame(rows)


def test_latency_is_deterministic_per_seed(btc_slice):
    q, t = btc_slice
    requests = mixed_requests(q, 60, np.random.default_rng(1))
    model = btc_model(latency=LatencyModel(20_000_000, 1_000_000, 0.5))
    first = replay(model, BTC, q, t, requests, seed=7)
    again = replay(model, BTC, q, t, requests, seed=7)
    other = replay(model, BTC, q, t, requests, seed=8)
    pd.testing.assert_frame_equal(first.fills, again.fills)
    pd.testing.assert_frame_equal(first.orders, again.orders)
    assert (first.orders["arrival_ts_ns"] != other.orders["arrival_ts_ns"]).mean() > 0.9
    # arrival = submit + the counter-based draw for the submit's request number
    table = requests_frame(requests)
    submits = np.flatnonzero(table["action"] == "submit")
    expected = [int(table["ts_ns"].iloc[k]) + int(latency_ns(7, k, 0, 20_000_000, 0.5)) for k in submits]
    assert first.orders["arrival_ts_ns"].tolist() == expected
    lag = first.fills["report_ts_ns"] - first.fills["ts_ns"]
    assert (lag > 0).all() and lag.nunique() > 1


# -- real data ------------------------------------------------------------------------------
def test_replay_on_real_btcusdt_keeps_fills_sane(btc_slice):
    q, t = btc_slice
    requests = mixed_requests(q, 200, np.random.default_rng(2))
    result = replay(btc_model(latency=LatencyModel(20_000_000, 1_000_000, 0.5)), "BTCUSDT.BINANCE", q, t, requests,
                    seed=3)
    assert isinstance(result, SimResult)
    fills, orders = result.fills, result.orders
    assert len(orders) == 200 and len(fills) > 50
    assert {"filled", "cancelled", "working"} <= set(orders["status"])
    assert (orders["filled_qty"] <= orders["quantity"] * (1 + 1e-12)).all()
    total = fills.groupby("order_ref")["quantity"].sum()
    np.testing.assert_allclose(orders.set_index("order_ref").loc[total.index, "filled_qty"], total, rtol=1e-12)
    merged = fills.merge(orders[["order_ref", "limit_px", "order_type"]], on="order_ref")
    buy = merged["side"] > 0
    with np.errstate(invalid="ignore"):
        assert not (buy & (merged["price"] > merged["limit_px"])).any()
        assert not (~buy & (merged["price"] < merged["limit_px"])).any()
    quote = prevailing_quotes(q, merged["ts_ns"].to_numpy(), strictly_before=False)
    taker = (merged["liquidity"] == "taker").to_numpy()
    assert taker.any() and (merged["liquidity"] == "maker").any()
    # a taker buy never pays below the bid nor a taker sell above the ask in force at the fill
    assert (merged["price"][taker & buy] >= quote["bid_px"][taker & buy]).all()
    assert (merged["price"][taker & ~buy] <= quote["ask_px"][taker & ~buy]).all()
    assert (merged["price"][~taker] == merged["limit_px"][~taker]).all()  # makers fill at their limit


def passive_requests(q: pd.DataFrame, placements: np.ndarray, sides: np.ndarray, distance: np.ndarray,
                     tick: float, quantity: float) -> pd.DataFrame:
    quote = prevailing_quotes(q, placements, strictly_before=False)
    touch = np.where(sides > 0, quote["bid_px"], quote["ask_px"])
    limit = np.round((np.rint(touch / tick) - sides * distance) * tick, 2)
    return pd.DataFrame({"ts_ns": placements, "action": "submit", "order_ref": np.arange(len(placements)),
                         "side": np.where(sides > 0, "buy", "sell"), "quantity": quantity, "order_type": "limit",
                         "limit_px": limit}), quote["valid"]


@pytest.mark.parametrize("market", ["btc", "ibm"])
def test_resting_orders_complete_when_passive_outcomes_says_they_fill(market, btc_slice):
    if market == "btc":
        q, t = btc_slice
        instrument, quantity = BTC, 0.01
    else:
        q = load_bundled("algoseek_IBM_20131007_l1_nbbo.csv.gz").frame
        t = load_bundled("algoseek_IBM_20131007_trades.csv.gz").frame
        q = q[regular_hours_mask(q["ts_ns"].to_numpy(), IBM)].reset_index(drop=True)
        t = t[regular_hours_mask(t["ts_ns"].to_numpy(), IBM) & ~t["suspicious"].fillna(False).to_numpy()]
        t = t.reset_index(drop=True)
        instrument, quantity = IBM, 100.0
    tick = float(instrument.tick_size)
    rng = np.random.default_rng(4)
    n = 120
    placements = np.sort(rng.choice(q["ts_ns"].to_numpy()[5:-5], n, replace=False)) + 1
    sides = np.where(np.arange(n) % 2 == 0, 1, -1)
    distance = np.where((np.arange(n) // 2) % 2 == 0, 0, 1)
    requests, valid = passive_requests(q, placements, sides, distance, tick, quantity)
    requests, placements, sides, distance = (x[valid] for x in (requests, placements, sides, distance))
    model = FillModel(instrument.instrument_id, tick, touch_only_curve(), latency=NO_LATENCY)
    result = replay(model, instrument, q, t, requests)
    horizon = int(max(q["ts_ns"].iloc[-1], t["ts_ns"].iloc[-1])) - placements + 1
    truth = passive_outcomes(q, t, placements, sides, distance, horizon, tick, order_qty=quantity)
    orders = result.orders
    assert (orders["limit_px"].to_numpy() == pytest.approx(truth["limit_px"].to_numpy()))
    assert (orders["filled_qty"] > 0).sum() >= (orders["status"] == "filled").sum()
    filled = (orders["status"] == "filled").to_numpy()
    np.testing.assert_array_equal(filled, truth["filled"].to_numpy())
    assert 10 < filled.sum() < len(filled)  # both outcomes occur
    np.testing.assert_array_equal(orders["done_ts_ns"].to_numpy()[filled],
                                  placements[filled] + truth["time_to_fill_ns"].to_numpy()[filled].astype(np.int64))
    assert set(truth["filled_by"][filled]) == {"through", "queue"}


# -- replay plumbing and refusals -------------------------------------------------------------
HAND_QUOTES = pd.DataFrame({"ts_ns": T + np.array([0, 10, 20]), "bid_px": [100.00, 100.00, 100.01],
                            "ask_px": [100.02, 100.03, 100.03], "bid_sz": [1.0, 1.0, 1.0], "ask_sz": [1.0, 1.0, 1.0]})


def test_replay_keys_results_by_order_ref_and_reads_top_n_books():
    requests = pd.DataFrame([
        {"ts_ns": T + 15, "action": "submit", "order_ref": 70, "side": "sell", "quantity": 0.1,
         "order_type": "limit", "limit_px": 100.03},
        {"ts_ns": T + 5, "action": "submit", "order_ref": 42, "side": "buy", "quantity": 0.1},  # sorted first
        {"ts_ns": T + 16, "action": "cancel", "order_ref": 70},
    ])
    book = HAND_QUOTES.rename(columns={c: f"{c}_0" for c in ("bid_px", "ask_px", "bid_sz", "ask_sz")})
    book["bid_px_1"] = book["bid_px_0"] - 0.01
    result = replay(btc_model(), BTC, book, None, requests)
    assert result.fills["order_ref"].tolist() == [42]
    assert result.fills["price"].tolist() == [100.02] and result.fills["ts_ns"].tolist() == [T + 5]
    assert result.orders["order_ref"].tolist() == [42, 70]
    assert result.orders["status"].tolist() == ["filled", "cancelled"]
    assert list(result.orders.columns)[1:] == ["side", "order_type", "tif", "quantity", "limit_px", "stop_px",
                                               "status", "filled_qty", "avg_price", "submit_ts_ns", "arrival_ts_ns",
                                               "done_ts_ns"]
    assert tuple(requests_frame(requests).columns) == REQUEST_COLUMNS


def test_callbacks_see_fills_and_status_changes():
    seen_fills, seen_status = [], []
    e = SimEngine(btc_model(), BTC, on_fill=seen_fills.append, on_status=seen_status.append)
    quotes(e, [(0, 100.00, 100.02, 1.0, 1.0)])
    e.submit(make_order(BTC, "buy", "0.1"), T + 1)
    e.advance_to(T + 1)
    assert [f["price"] for f in seen_fills] == [100.02]
    assert [s["status"] for s in seen_status] == ["working", "filled"]


def test_state_listeners_see_the_same_moments_as_the_record_callbacks():
    """on_fill_state/on_status_state get the live order (and the fill's row) where on_fill/on_status get records."""
    records, states = [], []
    e = SimEngine(btc_model(max_take=0.5), BTC,
                  on_fill=lambda f: records.append(("fill", f)), on_status=lambda o: records.append(("status", o)),
                  on_fill_state=lambda o, row: states.append(("fill", dict(zip(FILL_COLUMNS, row)), o.filled)),
                  on_status_state=lambda o: states.append(("status", o.status.value, o.filled)))
    quotes(e, [(0, 100.00, 100.02, 1.0, 1.0)])
    oid = e.submit(make_order(BTC, "buy", "1.0"), T + 1)  # takes 0.5 per quote: two fills
    quotes(e, [(2, 100.00, 100.02, 1.0, 1.0), (3, 100.00, 100.03, 1.0, 1.0)])
    assert [kind for kind, _ in records] == ["status", "fill", "fill", "status"]
    assert [(kind, record if kind == "fill" else record["status"]) for kind, record in records] == \
        [(kind, seen) for kind, seen, _ in states]
    assert [filled for *_, filled in states] == [0.0, 0.5, 1.0, 1.0]  # the live order, as it is at each call
    assert e.order_state(oid).record()["status"] == e.order(oid)["status"] == "filled"
    with pytest.raises(OrderError, match="unknown"):
        e.order_state(5)


def test_request_latency_is_the_compiled_draw():
    for median, sigma in ((0, 0.0), (2_000_000, 0.0), (2_000_000, -1.0), (2_000_000, 0.7), (10, 1e-9)):
        for k in range(50):
            for stream in (0, 1):
                expected = int(latency_ns(3, k, stream, median, sigma))
                assert request_latency_ns(3, k, stream, median, sigma) == expected
                assert type(request_latency_ns(3, k, stream, median, sigma)) is int


def request(**overrides) -> pd.DataFrame:
    row = {"ts_ns": T + 5, "action": "submit", "order_ref": 1, "side": "buy", "quantity": 0.1,
           "order_type": "limit", "limit_px": 100.00}
    row.update(overrides)
    return pd.DataFrame([row])


def test_replay_refuses_bad_input():
    model = btc_model()
    with pytest.raises(DataError, match="empty"):
        replay(model, BTC, HAND_QUOTES.iloc[:0], None, request())
    crossed = HAND_QUOTES.assign(bid_px=HAND_QUOTES["ask_px"])
    with pytest.raises(DataError, match="none of the 3 quotes is valid"):
        replay(model, BTC, crossed, None, request())
    with pytest.raises(DataError, match="goes backwards"):
        replay(model, BTC, HAND_QUOTES.iloc[::-1], None, request())
    trades_back = pd.DataFrame({"ts_ns": [T + 2, T + 1], "price": [100.0, 100.0], "size": [1.0, 1.0],
                                "aggressor": [1, -1]})
    with pytest.raises(DataError, match="trades ts_ns goes backwards"):
        replay(model, BTC, HAND_QUOTES, trades_back, request())
    with pytest.raises(DataError, match="bid_px"):
        replay(model, BTC, HAND_QUOTES.drop(columns=["bid_px"]), None, request())
    with pytest.raises(OrderError, match="order_ref 9"):
        replay(model, BTC, HAND_QUOTES, None, pd.concat([request(), request(action="cancel", order_ref=9)]))
    for quantity in (NAN, 0.0, -0.1):
        with pytest.raises(OrderError, match="quantity"):
            replay(model, BTC, HAND_QUOTES, None, request(quantity=quantity))
    with pytest.raises(ConformanceError, match="tick"):
        replay(model, BTC, HAND_QUOTES, None, request(limit_px=100.001))
    with pytest.raises(ConformanceError, match="lot"):
        replay(model, BTC, HAND_QUOTES, None, request(quantity=0.000001))
    with pytest.raises(OrderError, match="action"):
        replay(model, BTC, HAND_QUOTES, None, request(action="amend"))
    with pytest.raises(DataError, match="unknown columns"):
        replay(model, BTC, HAND_QUOTES, None, request().assign(colour="red"))


def test_engine_refuses_bad_setup_and_time_going_backwards():
    with pytest.raises(UnknownInstrumentError):
        SimEngine(btc_model(), "NOPE.XNYS")
    with pytest.raises(ConfigError, match="BTCUSDT.BINANCE"):
        SimEngine(btc_model(), IBM)
    e = engine()
    quotes(e, [(10, 100.00, 100.02, 1.0, 1.0)])
    with pytest.raises(DataError, match="goes backwards"):
        quotes(e, [(5, 100.00, 100.02, 1.0, 1.0)])
    with pytest.raises(DataError, match="goes backwards"):
        e.submit(make_order(BTC, "buy", "0.1"), T + 5)
    with pytest.raises(DataError, match="goes backwards"):
        e.advance_to(T + 5)
    with pytest.raises(DataError, match="one per ts_ns"):
        e.on_quotes(np.array([T + 20, T + 21]), np.array([100.0]), np.array([100.02]), np.array([1.0]),
                    np.array([1.0]))
    with pytest.raises(DataError, match="int64"):
        e.on_quotes(float(T + 30), 100.0, 100.02, 1.0, 1.0)
    with pytest.raises(OrderError, match="is for IBM.XNYS"):
        e.submit(make_order(IBM, "buy", 1), T + 40)
    with pytest.raises(DataError, match="aggressor"):
        trades(e, [(50, 100.0, 1.0, 2)])


def test_order_spec_fields_survive_dataclass_replace():
    # The engine reads an OrderSpec's fields; a caller may set its own expiry (good till time).
    e = engine(feed_has_trades=False)
    spec = dataclasses.replace(make_order(BTC, "buy", "0.1", "limit", limit_px="99.00"), expire_ts_ns=T + 50)
    order = e.submit(spec, T)
    quotes(e, [(0, 100.00, 100.02, 1.0, 1.0), (60, 100.0, 100.02, 1.0, 1.0)])
    assert e.order(order)["status"] == "expired" and e.order(order)["done_ts_ns"] == T + 50


# -- the whole model: a walk of the L1-implied book ------------------------------------------
def walk_model(*, refill_median_ns: float = 1_000.0, latency: LatencyModel = NO_LATENCY) -> FillModel:
    """A touch-only curve plus a hand-made depth profile and completion model.

    Depth curve (typical top 1 BTC): A(1) = 1, A(2) = 2, A(4) = 3 ticks, so the implied
    ladder behind the touch is 1 BTC at +1 tick, 1 BTC at +3, 2 BTC at +4 (marginal
    distances of r * A(r)). Refill: one typical touch (1 BTC) per ``refill_median_ns``.
    """
    from tradebook.sim.depth import DepthProfile
    from tradebook.sim.profile import CompletionModel
    depth = DepthProfile(instrument_id="BTCUSDT.BINANCE", tick_size=0.01, typical_top_size=1.0,
                         remainder_grid=(1.0, 2.0, 4.0), avg_distance_ticks=(1.0, 2.0, 3.0), size_edges=(0.0, np.inf),
                         ratio_q05=(1.0,), ratio_q50=(1.0,), ratio_q95=(1.0,), counts=(0,), fit_start_ns=0,
                         fit_end_ns=1, n_samples=100)
    completion = CompletionModel(instrument_id="BTCUSDT.BINANCE", source="trades", bucket_minutes=30, bucket=(0,),
                                 volume_per_s=(1.0,), volume_per_s_all=1.0, session_s=86_400.0, adv_proxy=86_400.0,
                                 fill_size=1.0, refill_median_ns=refill_median_ns, refill_q90_ns=refill_median_ns,
                                 n_depletions=10, n_trades=10, quote_updates_per_s=1.0)
    return dataclasses.replace(btc_model(latency=latency), depth=depth, completion=completion)


def test_the_implied_ladder_is_the_depth_curve_in_whole_ticks():
    from tradebook.sim.walk import implied_ladder, walk_params
    model = walk_model()
    offsets, sizes = implied_ladder(model.depth, BTC)
    assert offsets.tolist() == [1.0, 3.0, 4.0] and sizes.tolist() == [1.0, 1.0, 2.0]
    walk = walk_params(model, BTC)
    assert walk.refill_per_ns == pytest.approx(1e-3) and walk.refill_unit == 1.0
    assert walk.improve_share == 0.0  # crypto: no improvement drawn even where the calibration saw some
    assert walk_params(btc_model(), BTC) is None  # the cost curve alone: today's touch-only path
    with pytest.raises(ConfigError, match="ticks"):
        implied_ladder(dataclasses.replace(model.depth, tick_size=0.1), BTC)


def test_ladder_sizes_in_units_that_carry_follow_the_recent_touch_size():
    """A depth profile in recent touch sizes: the engine scales the ladder by the touch it has seen."""
    model = walk_model()
    model = dataclasses.replace(model, depth=dataclasses.replace(model.depth, touch_unit_tau_ns=30 * 10**9))
    e = SimEngine(model, BTC)
    quotes(e, [(0, 100.00, 100.02, 8.0, 0.5)])  # sqrt(8 * 0.5) = 2: the ladder holds 2, 2 and 4 BTC
    order = e.submit(make_order(BTC, "buy", "3.0"), T + 1)
    e.advance_to(T + 1)
    assert_fills(fills_of(e, order), [(1, 0.5, 100.02, "taker"), (1, 2.0, 100.03, "taker"),
                                      (1, 0.5, 100.05, "taker")])


def test_the_recent_touch_size_both_faces_track_is_the_depth_models_own():
    """fold_touch_unit / touch_unit_at, fed in uneven batches, give recent_touch_size's value at any time."""
    from tradebook.sim.depth import recent_touch_size
    from tradebook.sim.walk import TOUCH_STATE, fold_touch_unit, touch_unit_at
    q = load_bundled(BTC_FILES + "l1_quotes.csv.gz").frame.iloc[:20_000]
    ts, bid_sz, ask_sz = (q[c].to_numpy() for c in ("ts_ns", "bid_sz", "ask_sz"))
    tau = 30 * 10**9
    rng = np.random.default_rng(1)
    at = np.sort(rng.integers(int(ts[0]), int(ts[-1]), 200))
    state, state_ts = np.zeros(TOUCH_STATE), np.zeros(1, np.int64)
    folded, ours = 0, []
    for t in at:
        upto = int(np.searchsorted(ts, t, side="right"))
        cut = int(rng.integers(folded, upto + 1))  # two uneven batches
        fold_touch_unit(ts, bid_sz, ask_sz, folded, cut, state, state_ts, float(tau))
        fold_touch_unit(ts, bid_sz, ask_sz, cut, upto, state, state_ts, float(tau))
        folded = upto
        ours.append(touch_unit_at(state, state_ts, int(t), float(tau)))
    np.testing.assert_allclose(ours, recent_touch_size(q, at, tau), rtol=1e-9)


def test_a_market_order_walks_the_ladder_one_fill_per_level():
    e = SimEngine(walk_model(), BTC)
    quotes(e, [(0, 100.00, 100.02, 1.0, 0.5)])
    order = e.submit(make_order(BTC, "buy", "3.0"), T + 1)
    e.advance_to(T + 1)
    assert_fills(fills_of(e, order), [(1, 0.5, 100.02, "taker"), (1, 1.0, 100.03, "taker"),
                                      (1, 1.0, 100.05, "taker"), (1, 0.5, 100.06, "taker")])
    assert e.order(order)["status"] == "filled"
    sell = e.submit(make_order(BTC, "sell", "1.2"), T + 2)  # a sell walks down from the bid
    e.advance_to(T + 2)
    assert_fills(fills_of(e, sell), [(2, 1.0, 100.00, "taker"), (2, 0.2, 99.99, "taker")])


def test_ioc_takes_the_book_and_cancels_the_rest_fok_needs_the_whole_book():
    e = SimEngine(walk_model(), BTC)
    quotes(e, [(0, 100.00, 100.02, 1.0, 0.5)])
    ioc = e.submit(make_order(BTC, "buy", "6.0", tif="ioc"), T + 1)
    too_big = e.submit(make_order(BTC, "buy", "4.6", tif="fok"), T + 1)
    whole = e.submit(make_order(BTC, "buy", "4.5", tif="fok"), T + 1)
    e.advance_to(T + 1)
    assert_fills(fills_of(e, ioc), [(1, 0.5, 100.02, "taker"), (1, 1.0, 100.03, "taker"),
                                    (1, 1.0, 100.05, "taker"), (1, 2.0, 100.06, "taker")])
    assert e.order(ioc)["status"] == "cancelled" and e.order(ioc)["filled_qty"] == pytest.approx(4.5)
    assert e.order(too_big)["status"] == "cancelled" and fills_of(e, too_big) == []
    # each order walks the book as it stands for it (an order's takes deplete it for that order only)
    assert e.order(whole)["status"] == "filled" and len(fills_of(e, whole)) == 4


def test_a_remainder_waits_for_the_book_to_refill():
    e = SimEngine(walk_model(refill_median_ns=1_000.0), BTC)  # 1 BTC back per microsecond
    quotes(e, [(0, 100.00, 100.02, 1.0, 0.5)])
    order = e.submit(make_order(BTC, "buy", "6.0"), T + 1)
    quotes(e, [(401, 100.00, 100.02, 1.0, 0.5),  # 0.4 back: less than a typical touch, it waits
               (1_201, 100.00, 100.02, 1.0, 0.5),  # 1.2 back: takes them, at the deepest level it had emptied
               (1_501, 100.00, 100.02, 1.0, 0.5)])  # 0.3 back, and 0.3 is all it still needs
    assert_fills(fills_of(e, order), [(1, 0.5, 100.02, "taker"), (1, 1.0, 100.03, "taker"),
                                      (1, 1.0, 100.05, "taker"), (1, 2.0, 100.06, "taker"),
                                      (1_201, 1.2, 100.06, "taker"), (1_501, 0.3, 100.06, "taker")])
    assert e.order(order)["status"] == "filled"


def test_a_marketable_limit_walks_only_to_its_limit():
    e = SimEngine(walk_model(), BTC)
    quotes(e, [(0, 100.00, 100.02, 1.0, 0.5)])
    order = e.submit(make_order(BTC, "buy", "3.0", "limit", limit_px="100.04"), T + 1)
    e.advance_to(T + 1)
    assert_fills(fills_of(e, order), [(1, 0.5, 100.02, "taker"), (1, 1.0, 100.03, "taker")])
    assert e.order(order)["status"] == "working"


def test_the_paper_venue_fills_a_large_market_order_in_parts(tmp_path):
    """Through PaperVenue (what a session trades on), with the whole BTCUSDT calibration: 20x the touch in parts."""
    import asyncio
    from decimal import Decimal

    from tradebook.model.instruments import Side
    from tradebook.model.orders import OrderEventType, OrderIntent, OrderType, TimeInForce
    from tradebook.sim.fidelity import bundled_instrument_data, calibrate_instrument
    from tradebook.venues.paper import PaperVenue

    data = bundled_instrument_data("BTCUSDT.BINANCE")
    model = calibrate_instrument(data).model
    q, t = data.quotes, data.trades
    venue = PaperVenue(tmp_path / "venue", models={BTC.instrument_id: model}, clock=lambda: 42, seed=0,
                       starting_cash=Decimal("100000000"))
    events: list = []
    asyncio.run(venue.connect(events.append))
    t0 = int(q["ts_ns"].iloc[0])
    first = (q["ts_ns"] < t0 + 5 * 10**9).to_numpy()
    venue.feed(BTC.instrument_id, q[first], t[t["ts_ns"] < t0 + 5 * 10**9])
    touch = float(q[first]["ask_sz"].iloc[-1])
    qty = BTC.conform_quantity(Decimal(repr(round(20 * touch, 5))))  # 20x the touch in force
    intent = OrderIntent(intent_id="big", strategy_id="s1", account_id="paper", instrument_id=BTC.instrument_id,
                         side=Side.BUY, quantity=qty, order_type=OrderType.MARKET,
                         time_in_force=TimeInForce.GTC, ts_ns=venue.now_ns)
    asyncio.run(venue.submit(intent))
    venue.feed(BTC.instrument_id, q[~first], t[t["ts_ns"] >= t0 + 5 * 10**9])
    fills = [e.fill for e in events if e.fill is not None]
    print(f"\npaper venue, market buy {qty} BTC:\n" + "\n".join(
        f"  {f.quantity} @ {f.price} ({f.liquidity})" for f in fills))
    assert len(fills) >= 5
    assert sum(f.quantity for f in fills) == qty
    prices = [f.price for f in fills]
    assert prices == sorted(prices) and prices[-1] > prices[0]
    assert events[-1].event_type is OrderEventType.FILLED
    assert asyncio.run(venue.positions()) == {BTC.instrument_id: qty}
    asyncio.run(venue.close())


def test_a_live_feed_with_levels_is_walked_level_by_level():
    """on_quotes(levels=...): the recorded book behind the touch first, then the implied ladder beyond it."""
    e = SimEngine(walk_model(), BTC)
    levels = (np.array([[99.99, 99.98]]), np.array([[2.0, 2.0]]), np.array([[100.03, 100.10]]),
              np.array([[0.7, 0.4]]))
    e.on_quotes(np.array([T]), np.array([100.00]), np.array([100.02]), np.array([1.0]), np.array([0.5]),
                levels=levels)
    order = e.submit(make_order(BTC, "buy", "3.0"), T + 1)
    e.advance_to(T + 1)
    # 0.5 at the touch, then the two recorded levels; the implied ladder (+1, +3, +4 ticks) lies inside the
    # recorded book, so nothing is implied beyond 100.10 and 1.4 keeps working
    assert_fills(fills_of(e, order), [(1, 0.5, 100.02, "taker"), (1, 0.7, 100.03, "taker"),
                                      (1, 0.4, 100.10, "taker")])
    assert e.order(order)["status"] == "working"
    with pytest.raises(DataError, match="levels"):
        e.on_quotes(np.array([T + 2]), np.array([100.00]), np.array([100.02]), np.array([1.0]), np.array([0.5]),
                    levels=(np.zeros((2, 1)),) * 4)
