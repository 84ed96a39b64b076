"""The vectorized simulator on hand-built feeds: each rule of tradebook.sim.orders with its exact fills.

Latency is fixed (sigma 0: submit-to-ack ACK ns, ack-to-fill REPORT ns) so every time is
known by hand; the touch-only curve with ``max_take_over_touch=1`` takes at most the
touch per quote, at the touch price. Prices are BTCUSDT's (tick 0.01, lot 0.00001).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from tradebook.errors import ConformanceError, DataError, OrderError
from tradebook.sim.fill_model import CostCurve, FeeSchedule, FillModel, LatencyModel, touch_only_curve
from tradebook.sim.orders import latency_ns
from tradebook.sim.vectorized import ArrayParams, replay_arrays, replay_vectorized, request_arrays_from
from tradebook.model import get_instrument

BTC = "BTCUSDT.BINANCE"
ACK, REPORT = 100, 7
DAY_NS = 86_400_000_000_000
NAN = math.nan

TOUCH = FillModel(BTC, 0.01, touch_only_curve(), fees=FeeSchedule(maker_bps=2.0, taker_bps=5.0),
                  latency=LatencyModel(ACK, REPORT, 0.0), max_take_over_touch=1.0)


def quotes(*rows: tuple) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=["ts_ns", "bid_px", "ask_px", "bid_sz", "ask_sz"])


def trades(*rows: tuple) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=["ts_ns", "price", "size", "aggressor"])


def submit(ts, ref, side, qty, order_type="market", limit=NAN, stop=NAN, tif="gtc") -> dict:
    return dict(ts_ns=ts, action="submit", order_ref=ref, side=side, quantity=qty, order_type=order_type,
                limit_px=limit, stop_px=stop, tif=tif, expire_ts_ns=-1)


def cancel(ts, ref) -> dict:
    return dict(ts_ns=ts, action="cancel", order_ref=ref, side=None, quantity=NAN, order_type=None,
                limit_px=NAN, stop_px=NAN, tif=None, expire_ts_ns=-1)


def replace(ts, ref, limit=NAN, qty=NAN) -> dict:
    return dict(ts_ns=ts, action="replace", order_ref=ref, side=None, quantity=qty, order_type=None,
                limit_px=limit, stop_px=NAN, tif=None, expire_ts_ns=-1)


def run(q, t, *reqs, model=TOUCH, seed=0):
    return replay_vectorized(model, BTC, q, t, pd.DataFrame(list(reqs)), seed=seed)


def fills_of(result, ref=None) -> list[tuple]:
    f = result.fills if ref is None else result.fills[result.fills["order_ref"] == ref]
    return [(int(r.ts_ns), round(float(r.quantity), 8), round(float(r.price), 8), r.liquidity)
            for r in f.itertuples()]


def order_of(result, ref) -> pd.Series:
    row = result.orders.set_index("order_ref").loc[ref].copy()
    for name in ("quantity", "filled_qty"):  # lot multiples carry float dust (300000 * 1e-5)
        row[name] = round(float(row[name]), 8)
    return row


BOOK = quotes((1_000, 100.00, 100.02, 2.0, 3.0), (2_000, 100.00, 100.03, 2.0, 1.0), (3_000, 100.01, 100.03, 1.0, 1.0))


# -- taking liquidity ------------------------------------------------------------------------------------------------
def test_market_order_fills_at_the_touch_seen_at_arrival_with_fee_and_report_latency():
    result = run(BOOK, None, submit(1_500, 1, "buy", 0.5), submit(1_500, 2, "sell", 0.5))
    assert fills_of(result, 1) == [(1_600, 0.5, 100.02, "taker")]
    assert fills_of(result, 2) == [(1_600, 0.5, 100.00, "taker")]
    row = result.fills.iloc[0]
    assert row["report_ts_ns"] == 1_600 + REPORT
    assert row["fee"] == pytest.approx(0.5 * 100.02 * 5.0 / 1e4)
    order = order_of(result, 1)
    assert (order["status"], order["filled_qty"], order["arrival_ts_ns"], order["done_ts_ns"]) == \
        ("filled", 0.5, 1_600, 1_600)


def test_data_stamped_at_the_arrival_is_seen_first():
    # arrival 1_000 + ... : submit at 900 arrives at 1_000, exactly with the first quote
    result = run(BOOK, None, submit(900, 1, "buy", 0.5))
    assert fills_of(result) == [(1_000, 0.5, 100.02, "taker")]


def test_market_order_waits_for_a_valid_quote():
    crossed_first = quotes((1_000, 100.05, 100.02, 2.0, 3.0), (2_000, 100.00, 100.02, 2.0, 0.0),
                           (3_000, 100.00, 100.03, 2.0, 1.0))
    result = run(crossed_first, None, submit(1_000, 1, "buy", 0.5))
    assert fills_of(result) == [(3_000, 0.5, 100.03, "taker")]
    # an IOC or FOK market order meeting no valid quote is cancelled at arrival
    for tif in ("ioc", "fok"):
        result = run(crossed_first, None, submit(1_000, 1, "buy", 0.5, tif=tif))
        assert result.fills.empty
        assert tuple(order_of(result, 1)[["status", "done_ts_ns"]]) == ("cancelled", 1_100)


def test_large_order_fills_in_parts_one_touch_per_quote():
    result = run(BOOK, None, submit(1_500, 1, "buy", 4.5))
    # 3.0 at the arrival quote, then 1.0 at each later quote (max_take_over_touch 1)
    assert fills_of(result) == [(1_600, 3.0, 100.02, "taker"), (2_000, 1.0, 100.03, "taker"),
                                (3_000, 0.5, 100.03, "taker")]
    order = order_of(result, 1)
    assert order["status"] == "filled" and order["done_ts_ns"] == 3_000
    assert order["avg_price"] == pytest.approx((3 * 100.02 + 1.5 * 100.03) / 4.5)


def test_ioc_cancels_the_remainder_and_fok_all_or_nothing():
    ioc = run(BOOK, None, submit(1_500, 1, "buy", 4.5, tif="ioc"))
    assert fills_of(ioc) == [(1_600, 3.0, 100.02, "taker")]
    assert tuple(order_of(ioc, 1)[["status", "filled_qty", "done_ts_ns"]]) == ("cancelled", 3.0, 1_600)
    fok_big = run(BOOK, None, submit(1_500, 1, "buy", 4.5, tif="fok"))
    assert fok_big.fills.empty and order_of(fok_big, 1)["status"] == "cancelled"
    fok_fits = run(BOOK, None, submit(1_500, 1, "buy", 3.0, tif="fok"))
    assert fills_of(fok_fits) == [(1_600, 3.0, 100.02, "taker")]


def test_cost_curve_prices_size_and_a_limit_caps_it():
    steep = CostCurve((0.0, 0.5, math.inf), (1.0, 3.0), (1.0, 3.0), (1.0, 3.0), (0, 0))
    model = FillModel(BTC, 0.01, steep, latency=LatencyModel(ACK, REPORT, 0.0), max_take_over_touch=1.0)
    # size 1 over a touch of 3: ratio 1, the touch; size 2: ratio 3, two half-spreads past the ask
    result = run(BOOK, None, submit(1_500, 1, "buy", 1.0), submit(1_500, 2, "buy", 2.0),
                 submit(1_500, 3, "sell", 1.5), model=model)
    assert fills_of(result, 1) == [(1_600, 1.0, 100.02, "taker")]
    assert fills_of(result, 2) == [(1_600, 2.0, 100.04, "taker")]
    assert fills_of(result, 3) == [(1_600, 1.5, 99.98, "taker")]  # 1.5 / 2.0 >= 0.5
    # a marketable limit at 100.03 cannot pay 100.04: it takes the largest size the bucket below allows
    capped = run(BOOK, None, submit(1_500, 1, "buy", 2.0, "limit", limit=100.03), model=model)
    first = capped.fills.iloc[0]
    assert (first["ts_ns"], first["price"]) == (1_600, 100.02)
    assert first["quantity"] == pytest.approx(1.49999)  # just under 0.5 of the 3.0 touch, in lots
    assert (capped.fills["price"] <= 100.03).all()


# -- limit orders ------------------------------------------------------------------------------------------------------
def test_marketable_limit_takes_then_rests_with_queue():
    # buy 4.0 limit 100.02: takes the 3.0 offered, then the ask moves to 100.03: the rest rests at 100.02 with
    # queue 0 (better than the 100.00 bid), and the first seller printing at 100.02 fills it
    feed = trades((2_500, 100.02, 0.4, -1), (2_600, 100.02, 0.9, -1))
    result = run(BOOK, feed, submit(1_500, 1, "buy", 4.0, "limit", limit=100.02))
    assert fills_of(result) == [(1_600, 3.0, 100.02, "taker"), (2_500, 0.4, 100.02, "maker"),
                                (2_600, 0.6, 100.02, "maker")]
    fee = result.fills["fee"].to_numpy()
    assert fee[1] == pytest.approx(0.4 * 100.02 * 2.0 / 1e4)


def test_resting_at_the_bid_waits_for_the_queue_then_fills_in_parts():
    feed = trades(
        (1_700, 100.00, 1.5, -1),  # queue 2.0 -> 0.5
        (1_800, 100.00, 1.0, +1),  # a buyer at our price: not for us
        (1_900, 100.00, 0.8, -1),  # 0.5 clears the queue, 0.3 fills
        (1_950, 100.01, 5.0, -1),  # above a resting buy: nothing
        (2_100, 99.99, 0.1, -1),   # through the limit: the rest fills
    )
    result = run(BOOK, feed, submit(1_500, 1, "buy", 1.0, "limit", limit=100.00))
    assert fills_of(result) == [(1_900, 0.3, 100.0, "maker"), (2_100, 0.7, 100.0, "maker")]
    assert order_of(result, 1)["done_ts_ns"] == 2_100


def test_behind_the_touch_only_trades_through_count():
    feed = trades((1_700, 99.99, 9.0, -1), (1_800, 99.98, 0.1, +1))
    result = run(BOOK, feed, submit(1_500, 1, "buy", 1.0, "limit", limit=99.99))
    assert fills_of(result) == [(1_800, 1.0, 99.99, "maker")]


def test_trades_stamped_at_the_arrival_precede_the_order():
    feed = trades((1_600, 99.90, 1.0, -1), (1_601, 99.90, 1.0, -1))
    result = run(BOOK, feed, submit(1_500, 1, "sell", 1.0, "limit", limit=100.02))
    assert fills_of(result) == []  # sells fill on trades above the limit
    result = run(BOOK, trades((1_600, 100.05, 1.0, 1), (1_601, 100.05, 1.0, 1)),
                 submit(1_500, 1, "sell", 1.0, "limit", limit=100.02))
    assert fills_of(result) == [(1_601, 1.0, 100.02, "maker")]


def test_without_trades_a_resting_order_fills_when_the_opposite_touch_reaches_it():
    q = quotes((1_000, 100.00, 100.02, 2.0, 3.0), (2_000, 100.00, 100.01, 2.0, 1.0),
               (3_000, 99.99, 100.00, 1.0, 1.0))
    result = run(q, None, submit(1_500, 1, "buy", 1.0, "limit", limit=100.00))
    assert fills_of(result) == [(3_000, 1.0, 100.0, "maker")]


# -- stops -------------------------------------------------------------------------------------------------------------
def test_stop_triggers_on_the_touch_and_takes_there():
    q = quotes((1_000, 100.00, 100.02, 2.0, 3.0), (2_000, 100.03, 100.05, 2.0, 3.0), (3_000, 100.04, 100.06, 2.0, 3.0))
    result = run(q, None, submit(1_500, 1, "buy", 0.5, "stop", stop=100.05),
                 submit(1_500, 2, "sell", 0.5, "stop", stop=99.95))
    assert fills_of(result, 1) == [(2_000, 0.5, 100.05, "taker")]
    assert fills_of(result, 2) == [] and order_of(result, 2)["status"] == "working"


def test_stop_limit_becomes_a_limit_order_at_the_trigger():
    q = quotes((1_000, 100.00, 100.02, 2.0, 3.0), (2_000, 100.03, 100.06, 2.0, 3.0), (3_000, 100.03, 100.05, 2.0, 3.0))
    # triggered at 2_000 (ask 100.06 >= 100.04) but the limit 100.05 is not marketable there: it rests with queue 0
    # (above the bid); without trades it fills when the ask reaches 100.05
    result = run(q, None, submit(1_500, 1, "buy", 0.5, "stop_limit", limit=100.05, stop=100.04))
    assert fills_of(result) == [(3_000, 0.5, 100.05, "maker")]


# -- time in force, cancel, replace ------------------------------------------------------------------------------------
def test_day_order_expires_at_the_session_close_before_any_later_event():
    q = quotes((DAY_NS - 1_000, 100.00, 100.02, 2.0, 3.0), (DAY_NS, 99.00, 99.02, 2.0, 3.0))
    result = run(q, None, submit(DAY_NS - 900, 1, "buy", 0.5, "limit", limit=100.00, tif="day"),
                 submit(DAY_NS - 900, 2, "buy", 0.5, "limit", limit=100.00, tif="gtc"))
    assert fills_of(result, 1) == []
    assert tuple(order_of(result, 1)[["status", "done_ts_ns"]]) == ("expired", DAY_NS)
    assert fills_of(result, 2) == [(DAY_NS, 0.5, 100.0, "maker")]


def test_cancel_at_arrival_and_too_late_after_the_fill():
    feed = trades((2_500, 99.90, 1.0, -1))
    result = run(BOOK, feed, submit(1_500, 1, "buy", 1.0, "limit", limit=100.00), cancel(2_000, 1),
                 submit(1_500, 2, "buy", 1.0, "limit", limit=100.00), cancel(2_500, 2))
    assert fills_of(result, 1) == []
    assert tuple(order_of(result, 1)[["status", "done_ts_ns"]]) == ("cancelled", 2_100)
    assert fills_of(result, 2) == [(2_500, 1.0, 100.0, "maker")]
    assert order_of(result, 2)["status"] == "filled"


def test_replace_moves_the_limit_loses_the_queue_and_may_take():
    result = run(BOOK, None, submit(1_500, 1, "buy", 1.0, "limit", limit=99.90), replace(2_400, 1, limit=100.03))
    assert fills_of(result) == [(2_500, 1.0, 100.03, "taker")]
    order = order_of(result, 1)
    assert order["limit_px"] == 100.03 and order["quantity"] == 1.0
    # a new quantity is a new total: at or below what has filled the replace is refused; above it the order
    # re-arrives with the rest and a fresh queue (2.0 at the bid again)
    feed = trades((1_700, 100.00, 1.5, -1), (1_900, 100.00, 0.8, -1), (2_200, 100.00, 2.5, -1))
    refused = run(BOOK, feed, submit(1_500, 1, "buy", 1.0, "limit", limit=100.00), replace(2_000, 1, qty=0.3))
    assert fills_of(refused) == [(1_900, 0.3, 100.0, "maker"), (2_200, 0.7, 100.0, "maker")]
    assert order_of(refused, 1)["quantity"] == 1.0
    bigger = run(BOOK, feed, submit(1_500, 1, "buy", 1.0, "limit", limit=100.00), replace(2_000, 1, qty=2.0))
    assert fills_of(bigger) == [(1_900, 0.3, 100.0, "maker"), (2_200, 0.5, 100.0, "maker")]
    assert tuple(order_of(bigger, 1)[["status", "quantity", "filled_qty"]]) == ("working", 2.0, 0.8)


def test_latency_draws_are_the_shared_counter_based_ones():
    model = FillModel(BTC, 0.01, touch_only_curve(), latency=LatencyModel(400, 50, 0.7), max_take_over_touch=1.0)
    reqs = [submit(100, 1, "buy", 0.5), submit(110, 2, "sell", 0.5)]
    result = run(quotes((0, 100.00, 100.02, 2.0, 3.0)), None, *reqs, model=model, seed=11)
    for k, ref in enumerate((1, 2)):
        arrival = [100, 110][k] + int(latency_ns(11, k, 0, 400, 0.7))
        assert order_of(result, ref)["arrival_ts_ns"] == arrival
        fill = result.fills[result.fills["order_ref"] == ref].iloc[0]
        assert fill["report_ts_ns"] == arrival + int(latency_ns(11, k, 1, 50, 0.7))


def test_replay_arrays_is_the_same_core():
    reqs = pd.DataFrame([submit(1_500, 1, "buy", 4.5)])
    arrays, _ = request_arrays_from(reqs, get_instrument(BTC))
    from tradebook.sim.vectorized import quote_arrays_from
    fills, orders = replay_arrays(quote_arrays_from(BOOK), None, arrays,
                                  ArrayParams.from_model(TOUCH, get_instrument(BTC)))
    assert fills.ts_ns.tolist() == [1_600, 2_000, 3_000]
    assert np.allclose(fills.quantity, [3.0, 1.0, 0.5]) and not fills.maker.any()
    assert orders.status.tolist() == [2]  # filled


# -- refusals ----------------------------------------------------------------------------------------------------------
def test_bad_feeds_are_refused():
    order = submit(1_500, 1, "buy", 0.5)
    with pytest.raises(DataError, match="empty"):
        run(quotes(), None, order)
    with pytest.raises(DataError, match="none of the 2 quotes is valid"):
        run(quotes((1, 100.02, 100.00, 1.0, 1.0), (2, 100.0, 100.0, 1.0, 1.0)), None, order)
    with pytest.raises(DataError, match="quotes ts_ns goes backwards at row 1"):
        run(quotes((5, 100.0, 100.02, 1.0, 1.0), (4, 100.0, 100.02, 1.0, 1.0)), None, order)
    with pytest.raises(DataError, match="trades ts_ns goes backwards"):
        run(BOOK, trades((5, 100.0, 1.0, 1), (4, 100.0, 1.0, 1)), order)
    with pytest.raises(DataError, match="lacks"):
        run(BOOK.drop(columns=["ask_sz"]), None, order)


@pytest.mark.parametrize("bad, error, message", [
    (cancel(1_500, 9), OrderError, "order_ref 9"),
    (replace(1_500, 9, limit=100.0), OrderError, "order_ref 9"),
    (submit(1_500, 2, "buy", NAN), OrderError, "quantity"),
    (submit(1_500, 2, "buy", -1.0), OrderError, "quantity"),
    (submit(1_500, 2, "buy", 0.0), OrderError, "quantity"),
    (submit(1_500, 2, "buy", 0.5, "limit", limit=100.005), ConformanceError, "tick"),
    (submit(1_500, 2, "buy", 0.500001), ConformanceError, "lot"),
    (submit(1_500, 2, "hold", 0.5), OrderError, "side"),
    (submit(1_500, 1, "buy", 0.5), OrderError, "submitted twice"),
    (dict(cancel(1_500, 1), action="amend"), OrderError, "action 'amend' unknown"),
    (replace(1_500, 1, limit=100.0), OrderError, "market order"),
])
def test_bad_requests_are_refused(bad, error, message):
    with pytest.raises(error, match=message):
        run(BOOK, None, submit(1_000, 1, "buy", 0.5), bad)


def test_unknown_instrument_is_refused():
    from tradebook.errors import UnknownInstrumentError
    with pytest.raises(UnknownInstrumentError):
        replay_vectorized(TOUCH, "NOPE.NOWHERE", BOOK, None, pd.DataFrame([submit(1_500, 1, "buy", 0.5)]))


def test_cancel_before_its_submit_is_refused():
    with pytest.raises(OrderError, match="not submitted before"):
        run(BOOK, None, cancel(1_000, 1), submit(1_500, 1, "buy", 0.5))
