"""Execution algorithms: TWAP and VWAP slicing on the real SPY volume profile, lots, retries, escalation."""

from __future__ import annotations

from decimal import Decimal as D

import pandas as pd
import pytest

from tradebook.data import load_bundled
from tradebook.errors import ConfigError, ConformanceError, DataError, OrderError
from tradebook.execution.algos import (
    Escalation,
    ParentOrder,
    RetryPolicy,
    ScheduledChild,
    TwapSchedule,
    VwapSchedule,
    child_orders,
    intraday_volume_profile,
)
from tradebook.execution.router import OrderRouter, QuoteSnapshot
from tradebook.model import Side, get_instrument
from tradebook.model.orders import OrderIntent, OrderType, TimeInForce

SPY = get_instrument("SPY.ARCX")
IBM = get_instrument("IBM.XNYS")
BTC = get_instrument("BTCUSDT.BINANCE")
ES = get_instrument("ESH4.GLBX")
S = 1_000_000_000
NY = "America/New_York"


def ny_ns(text: str) -> int:
    return int(pd.Timestamp(text, tz=NY).value)


T0 = ny_ns("2013-10-08 10:00")


def parent(inst, qty: D, schedule, *, side: Side = Side.BUY, ref: D | None = None) -> ParentOrder:
    intent = OrderIntent(intent_id="twap:s1", strategy_id="twap", account_id="paper-1",
                         instrument_id=inst.instrument_id, side=side, quantity=qty, order_type=OrderType.LIMIT,
                         time_in_force=TimeInForce.DAY, ts_ns=T0)
    return ParentOrder(intent, schedule, inst, reference_price=ref)


@pytest.fixture(scope="module")
def spy_bars() -> pd.DataFrame:
    return load_bundled("spy_trade.csv.gz").frame


@pytest.fixture(scope="module")
def spy_profile(spy_bars) -> pd.Series:
    return intraday_volume_profile(spy_bars, SPY)


# -- TWAP ----------------------------------------------------------------------------------------
def test_twap_slices_times_and_remainder_on_the_last_slices():
    children = child_orders(parent(SPY, D(1003), TwapSchedule()), T0)
    assert children == [ScheduledChild(i + 1, T0 + i * 60 * S, q)
                        for i, q in enumerate([D(200), D(200), D(201), D(201), D(201)])]


def test_twap_quantities_are_whole_lots_and_sum_exactly():
    children = child_orders(parent(BTC, D("0.12347"), TwapSchedule(slices=4, interval_s=90)), T0)
    assert [c.quantity for c in children] == [D("0.03086"), D("0.03087"), D("0.03087"), D("0.03087")]
    assert [str(c.quantity) for c in children] == ["0.03086", "0.03087", "0.03087", "0.03087"]  # on the lot grid
    assert [(c.release_ts_ns - T0) / S for c in children] == [0, 90, 180, 270]
    big = child_orders(parent(BTC, D("999.99999"), TwapSchedule(slices=7)), T0)  # 99,999,999 lots
    assert sum(c.quantity for c in big) == D("999.99999")


def test_children_below_the_minimum_are_merged_not_sent():
    # 3 ES contracts in 5 slices: floors are 0; the 3 leftover lots go to the last three slices
    es = child_orders(parent(ES, D(3), TwapSchedule()), T0)
    assert [(c.index, c.quantity) for c in es] == [(3, D(1)), (4, D(1)), (5, D(1))]
    assert es[0].release_ts_ns == T0 + 120 * S
    # BTC at 61,837: 5 USDT minimum notional = 9 lots of 0.00001. 20 lots in 5 slices of 4 merge forward
    p = parent(BTC, D("0.00020"), TwapSchedule(), ref=D("61837.635"))
    assert p.min_child_quantity() == D("0.00009")
    merged = child_orders(p, T0)
    assert sum(c.quantity for c in merged) == D("0.00020")
    assert all(c.quantity >= D("0.00009") for c in merged)
    assert [(c.index, c.quantity) for c in merged] == [(3, D("0.00020"))]  # 4+4+4 at slice 3, the tail 4+4 joins it


def test_twap_schedule_validation():
    with pytest.raises(ConfigError, match="slices"):
        TwapSchedule(slices=0)
    with pytest.raises(ConfigError, match="interval_s"):
        TwapSchedule(interval_s=float("nan"))
    with pytest.raises(ConformanceError, match="lot size"):
        parent(BTC, D("0.000015"), TwapSchedule())


# -- the volume profile --------------------------------------------------------------------------
def test_spy_profile_is_u_shaped_over_the_regular_session(spy_profile):
    assert len(spy_profile) == 390 and spy_profile.index[0] == 570 and spy_profile.index[-1] == 959
    assert spy_profile.sum() == pytest.approx(1.0)
    half_hours = spy_profile.groupby(spy_profile.index // 30).sum()
    open_, midday, close = half_hours.iloc[0], half_hours.iloc[5:9].mean(), half_hours.iloc[-1]
    assert open_ > 2 * midday and close > 3 * midday
    assert spy_profile.idxmax() == 959  # the closing minute (closing auction prints)


def test_profile_share_matches_a_hand_computation_per_day(spy_bars, spy_profile):
    local = pd.to_datetime(spy_bars["ts_ns"], unit="ns", utc=True).dt.tz_convert(NY)
    shares_open, shares_close = [], []
    for _, day in spy_bars.groupby(local.dt.date):
        t = pd.to_datetime(day["ts_ns"], unit="ns", utc=True).dt.tz_convert(NY)
        minutes = t.dt.hour * 60 + t.dt.minute
        session = day[(minutes >= 570) & (minutes < 960)]
        sm = minutes[(minutes >= 570) & (minutes < 960)]
        shares_open.append(session.volume[sm == 570].sum() / session.volume.sum())
        shares_close.append(session.volume[sm == 959].sum() / session.volume.sum())
    assert len(shares_open) == 6
    assert spy_profile.loc[570] == pytest.approx(sum(shares_open) / 6, rel=1e-12)
    assert spy_profile.loc[959] == pytest.approx(sum(shares_close) / 6, rel=1e-12)


def test_extended_profile_and_another_stock(spy_bars):
    extended = intraday_volume_profile(spy_bars, SPY, extended=True)
    assert len(extended) == 960 and extended.index[0] == 240  # 04:00 to 20:00
    assert 0.8 < extended.loc[570:959].sum() < 0.95  # most volume trades in the regular session
    ibm = intraday_volume_profile(load_bundled("ibm_trade.csv.gz").frame, IBM)
    halves = ibm.groupby(ibm.index // 30).sum()
    assert halves.iloc[0] > 2 * halves.iloc[6] and halves.iloc[-1] > 2 * halves.iloc[6]


def test_profile_refuses_bad_bars(spy_bars):
    with pytest.raises(DataError, match="'volume' is missing"):
        intraday_volume_profile(spy_bars.drop(columns="volume"), SPY)
    bad = spy_bars.copy()
    bad.loc[10, "volume"] = float("nan")
    with pytest.raises(DataError, match="row 10"):
        intraday_volume_profile(bad, SPY)
    night = spy_bars[pd.to_datetime(spy_bars.ts_ns, unit="ns", utc=True).dt.tz_convert(NY).dt.hour >= 17]
    with pytest.raises(DataError, match="no minute bar of SPY.ARCX falls in its session"):
        intraday_volume_profile(night, SPY)


# -- VWAP ------------------------------------------------------------------------------------------
def test_vwap_slices_follow_the_profile_heavier_at_open_and_close(spy_profile):
    qty = D(10_000)
    runs = {}
    for start in ("09:30", "12:30", "15:45"):
        t = ny_ns(f"2013-10-08 {start}")
        children = child_orders(parent(SPY, qty, VwapSchedule(15, spy_profile)), t)
        assert [c.release_ts_ns for c in children] == [t + i * 60 * S for i in range(15)]
        assert sum(c.quantity for c in children) == qty
        first_minute = 570 if start == "09:30" else (750 if start == "12:30" else 945)
        window = spy_profile.loc[first_minute:first_minute + 14]
        weights = window / window.sum()
        for child, w in zip(children, weights, strict=True):  # floor of the share, plus at most one leftover lot
            assert 0 <= float(child.quantity) - int(w * 10_000) <= 1
        runs[start] = [int(c.quantity) for c in children]
    assert runs["09:30"][0] == max(runs["09:30"])  # the opening minute is the heaviest of its window
    assert runs["15:45"][-1] == max(runs["15:45"])  # and the closing minute of its own
    assert runs["15:45"][-1] > 2 * max(runs["12:30"])  # the closing minute outweighs any lunch minute
    assert max(runs["12:30"]) / min(runs["12:30"]) < max(runs["15:45"]) / min(runs["15:45"])


def test_vwap_priced_children_come_from_the_router(spy_profile):
    router = OrderRouter()
    p = parent(SPY, D(5_000), VwapSchedule(5, spy_profile), side=Side.SELL)
    start = ny_ns("2013-10-08 15:55")
    children = child_orders(p, start)
    last = children[-1]
    quote = QuoteSnapshot.from_quote("SPY.ARCX", last.release_ts_ns, "167.01", "167.02", 1_000, 1_000)
    intent = router.price_child(p, last, quote, adv=D(100_000_000), ts_ns=last.release_ts_ns)
    assert intent.intent_id == "twap:s1:slice:5" and intent.parent_id == "twap:s1"
    assert (intent.side, intent.quantity, intent.limit_price) == (Side.SELL, last.quantity, D("167.02"))
    assert "vwap slice 5/5" in intent.reason


def test_vwap_validation_and_windows_outside_the_session(spy_profile):
    for minutes in (4, 16):
        with pytest.raises(ConfigError, match=r"\[5, 15\]"):
            VwapSchedule(minutes, spy_profile)
    with pytest.raises(ConfigError, match="non-negative"):
        VwapSchedule(10, spy_profile * -1)
    with pytest.raises(DataError, match="no volume in the VWAP window"):
        child_orders(parent(SPY, D(1_000), VwapSchedule(10, spy_profile)), ny_ns("2013-10-08 20:00"))
    # a window running past the close: the minutes after 16:00 carry nothing, the slices before take it all
    tail = child_orders(parent(SPY, D(1_000), VwapSchedule(10, spy_profile)), ny_ns("2013-10-08 15:57"))
    assert [c.index for c in tail] == [1, 2, 3] and sum(c.quantity for c in tail) == D(1_000)
    assert VwapSchedule(10, spy_profile) == VwapSchedule(10, spy_profile.copy())


# -- retries -----------------------------------------------------------------------------------------
SPY_Q = QuoteSnapshot.from_quote("SPY.ARCX", T0, "167.66", "167.69", 500, 500)  # three cents wide


def child(side: Side = Side.BUY, price: str = "167.66", order_type: OrderType = OrderType.LIMIT,
          inst=SPY) -> OrderIntent:
    return OrderIntent(intent_id="twap:s1:slice:2", strategy_id="twap", account_id="paper-1",
                       instrument_id=inst.instrument_id, side=side, quantity=D(4000), order_type=order_type,
                       time_in_force=TimeInForce.DAY, ts_ns=T0,
                       limit_price=D(price) if order_type is OrderType.LIMIT else None, parent_id="twap:s1")


def test_retries_step_toward_the_market_then_escalate():
    policy = RetryPolicy()
    attempt, prices, ids = child(), [], []
    for n in (1, 2, 3):
        attempt = policy.retry(attempt, n, SPY_Q, T0 + n * 60 * S, instrument=SPY)
        prices.append(attempt.limit_price)
        ids.append(attempt.intent_id)
        assert attempt.parent_id == "twap:s1" and attempt.quantity == D(4000) and attempt.side is Side.BUY
    assert prices == [D("167.67"), D("167.68"), D("167.69")]  # the third reaches the ask: it takes
    assert ids == ["twap:s1:slice:2:retry:1", "twap:s1:slice:2:retry:2", "twap:s1:slice:2:retry:3"]
    escalation = policy.retry(attempt, 4, SPY_Q, T0 + 240 * S, instrument=SPY, reason="rejected")
    assert escalation == Escalation("twap:s1:slice:2", 3, "rejected after 3 retries (max 3)")


def test_retry_is_capped_at_the_touch_and_follows_a_moving_market():
    wide_steps = RetryPolicy(step_ticks=2)
    sell = child(Side.SELL, "167.69")
    first = wide_steps.retry(sell, 1, SPY_Q, T0, instrument=SPY)
    second = wide_steps.retry(first, 2, SPY_Q, T0, instrument=SPY)
    assert (first.limit_price, second.limit_price) == (D("167.67"), D("167.66"))  # capped at the bid
    # the market ran away from a buy at 167.60: the retry starts from today's bid, not from the stale price
    ran = RetryPolicy().retry(child(Side.BUY, "167.60"), 1, SPY_Q, T0, instrument=SPY)
    assert ran.limit_price == D("167.67")
    es_q = QuoteSnapshot.from_quote("ESH4.GLBX", T0, "4799.00", "4799.50", 16, 23)
    es = RetryPolicy().retry(child(Side.BUY, "4799.25", inst=ES), 1, es_q, T0, instrument=ES)
    assert es.limit_price == D("4799.50") and es.quantity == D(4000)


def test_retry_of_the_remainder_and_of_a_market_order():
    partial = RetryPolicy().retry(child(), 1, SPY_Q, T0, instrument=SPY, quantity=D(1500))
    assert partial.quantity == D(1500) and partial.limit_price == D("167.67")
    market = RetryPolicy().retry(child(order_type=OrderType.MARKET), 1, SPY_Q, T0 + S, instrument=SPY)
    assert market.order_type is OrderType.MARKET and market.limit_price is None
    assert market.intent_id == "twap:s1:slice:2:retry:1" and market.ts_ns == T0 + S
    assert isinstance(RetryPolicy(max_retries=0).retry(child(), 1, SPY_Q, T0, instrument=SPY), Escalation)


def test_unfilled_means_still_working_after_the_slice_interval():
    policy = RetryPolicy(unfilled_after_s=30)
    assert not policy.is_unfilled(T0, T0 + 59 * S, interval_s=60)
    assert policy.is_unfilled(T0, T0 + 60 * S, interval_s=60)
    assert policy.is_unfilled(T0, T0 + 30 * S) and not policy.is_unfilled(T0, T0 + 29 * S)


def test_bad_retries_are_refused():
    policy = RetryPolicy()
    with pytest.raises(OrderError, match="attempt must be an integer >= 1"):
        policy.retry(child(), 0, SPY_Q, T0, instrument=SPY)
    with pytest.raises(DataError, match="must be the same"):
        policy.retry(child(), 1, QuoteSnapshot.from_quote("IBM.XNYS", T0, "181.85", "181.90"), T0, instrument=SPY)
    with pytest.raises(OrderError, match="exceeds"):
        policy.retry(child(), 1, SPY_Q, T0, instrument=SPY, quantity=D(5000))
    with pytest.raises(ConformanceError, match="positive"):
        policy.retry(child(), 1, SPY_Q, T0, instrument=SPY, quantity=D(-1))
    with pytest.raises(ConfigError, match="step_ticks"):
        RetryPolicy(step_ticks=0)
