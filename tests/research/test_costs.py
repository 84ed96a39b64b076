"""CostModel: the calibrated IBM model priced for research, applied to SPY, against the fill model's own arithmetic."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tradebook.errors import ResearchError, StoreError
from tradebook.research.costs import CostModel, minute_vol_bps
from tradebook.sim.fidelity import load_model
from tradebook.store import Store

OPEN_2013_10_07 = 1_381_152_600_000_000_000  # 13:30 UTC = the 09:30 ET open
NOON_2013_10_07 = OPEN_2013_10_07 + 3 * 3_600_000_000_000


@pytest.fixture(scope="module")
def ibm_store(ibm_calibrated_template) -> Path:
    """The bundled IBM 2013-10-07 ticks and their calibration (IBM.XNYS@v1); opened read-only here."""
    return ibm_calibrated_template


@pytest.fixture(scope="module")
def costs(ibm_store):
    with Store(ibm_store, read_only=True) as store:
        model = load_model(store, "IBM.XNYS@v1")
        return CostModel.from_store(store, {"IBM.XNYS": "IBM.XNYS@v1", "SPY.ARCX": "IBM.XNYS@v1"}), model


def test_spread_is_the_fitted_profile_for_ibm_and_carried_in_bps_to_spy(costs):
    cost_model, ibm = costs
    ts = OPEN_2013_10_07 + np.arange(0, 7 * 3600, 600, dtype=np.int64) * 1_000_000_000
    vol = np.linspace(0.5, 9.0, len(ts))
    vol[::5] = np.nan  # NaN volatility reads the bucket's pooled regimes
    expected = ibm.spread_profile.expected_spread_bps(ts, vol)
    np.testing.assert_allclose(cost_model.spread_bps("IBM.XNYS", ts, vol), expected)
    np.testing.assert_allclose(cost_model.spread_bps("SPY.ARCX", ts, vol), expected)
    # the open is wider than noon on the fitted day
    assert cost_model.spread_bps("IBM.XNYS", OPEN_2013_10_07)[0] > cost_model.spread_bps("IBM.XNYS",
                                                                                          NOON_2013_10_07)[0]
    described = cost_model.describe()["instruments"]
    assert described["SPY.ARCX"]["away_from_data"] and described["SPY.ARCX"]["spread_profile_of"] == "IBM.XNYS"
    assert not described["IBM.XNYS"]["away_from_data"]
    assert cost_model.calibrations == {"IBM.XNYS": "IBM.XNYS@v1", "SPY.ARCX": "IBM.XNYS@v1"}


def test_touch_size_is_the_fitted_touch_notional_at_the_price_asked(costs):
    cost_model, ibm = costs
    table = ibm.spread_profile.table()
    pooled = table[(table["bucket"] == -1) & (table["regime"] == -1)].iloc[0]
    implied_price = pooled["spread_ticks_q50"] * 0.01 / (pooled["spread_bps_q50"] / 1e4)
    assert 150 < implied_price < 200  # IBM traded near $183 on 2013-10-07
    assert cost_model.touch_size("IBM.XNYS", implied_price) == pytest.approx(pooled["top_size_q50"])
    assert cost_model.touch_size("SPY.ARCX", 100.0) == pytest.approx(2 * cost_model.touch_size("SPY.ARCX", 200.0))
    with pytest.raises(ResearchError, match="price 0.0 must be positive"):
        cost_model.touch_size("SPY.ARCX", 0.0)


def test_predicted_cost_is_the_curve_at_the_size_over_the_touch(costs):
    cost_model, ibm = costs
    price = 150.0
    touch = cost_model.touch_size("SPY.ARCX", price)
    ts = np.full(3, NOON_2013_10_07)
    sizes = np.array([0.1, 3.0, 12.0]) * touch
    half = cost_model.spread_bps("SPY.ARCX", ts, 3.0) / 2
    by_hand = half * ibm.cost_curve.ratio(sizes / touch)
    np.testing.assert_allclose(cost_model.predict_bps("SPY.ARCX", ts, sizes, price, 3.0), by_hand)
    np.testing.assert_allclose(cost_model.predict_bps("SPY.ARCX", ts, -sizes, price, 3.0), by_hand)  # sells alike
    upper = cost_model.predict_bps("SPY.ARCX", ts, sizes, price, 3.0, quantile=0.95)
    assert (upper >= by_hand).all() and upper[-1] > upper[0]  # a walk past the touch costs more


def _without_improvement(cost_model: CostModel) -> CostModel:
    """The same calibrated costs priced as a model the paper engine never improves (it walks no book)."""
    from dataclasses import replace

    return CostModel({k: replace(p, improves=False) for k, p in cost_model._priced.items()})


def test_draws_have_the_fitted_curves_quantiles_not_one_point(costs):
    # a model the paper engine never improves: drawn at the median alone every residual was 0 and the
    # gate's cost-residual check had no scale (its threshold came out inf)
    cost_model, ibm = costs
    touch_only = _without_improvement(cost_model)
    n = 40_000
    ts = np.full(n, NOON_2013_10_07)
    draws = touch_only.draw_bps("IBM.XNYS", ts, 10, 150.0, 3.0, rng=np.random.default_rng(3))
    for q in (0.05, 0.5, 0.95):
        expected = cost_model.predict_bps("IBM.XNYS", ts[:1], 10, 150.0, 3.0, quantile=q)[0]
        level = {0.05: ibm.cost_curve.interval_levels[0], 0.5: 0.5, 0.95: ibm.cost_curve.interval_levels[1]}[q]
        assert np.quantile(draws, level) == pytest.approx(expected, abs=0.02), q
    predicted = cost_model.predict_bps("IBM.XNYS", ts[:1], 10, 150.0, 3.0)[0]
    assert np.std(draws - predicted) > 0.1


def test_draws_improve_inside_the_spread_as_the_paper_engine_does(costs):
    cost_model, ibm = costs
    n = 20_000
    ts = np.full(n, NOON_2013_10_07)
    rng = np.random.default_rng(3)
    # IBM's own model walks a book (it has a completion model): the engine improves a share of its prints
    assert ibm.completion is not None
    draws = cost_model.draw_bps("IBM.XNYS", ts, 10, 150.0, 3.0, rng=rng)
    predicted = cost_model.predict_bps("IBM.XNYS", ts[:1], 10, 150.0, 3.0)[0]
    improved = draws < predicted - 1e-12
    assert improved.mean() == pytest.approx(ibm.price_improvement_share, abs=0.015)
    half = cost_model.spread_bps("IBM.XNYS", ts[:1], 3.0, price=150.0)[0] / 2
    np.testing.assert_allclose(draws[improved], predicted - ibm.price_improvement_ratio * half)
    assert np.median(draws) == pytest.approx(predicted)
    again = cost_model.draw_bps("IBM.XNYS", ts, 10, 150.0, 3.0, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(draws, again)  # seeded
    # applied to SPY (as the paper replay applies it, with SPY's quotes: its completion model kept) alike
    spy_draws = cost_model.draw_bps("SPY.ARCX", ts, 10, 150.0, 3.0, rng=np.random.default_rng(3))
    assert (spy_draws < cost_model.predict_bps("SPY.ARCX", ts, 10, 150.0, 3.0) - 1e-12).mean() == \
        pytest.approx(ibm.price_improvement_share, abs=0.015)


def test_a_model_that_walks_no_book_is_never_improved(ibm_calibrated_template):
    from dataclasses import replace

    from tradebook.research.costs import _improves
    from tradebook.model import get_instrument

    with Store(ibm_calibrated_template, read_only=True) as store:
        ibm = load_model(store, "IBM.XNYS@v1")
    touch_only = replace(ibm, completion=None, depth=None)  # the engine takes at the curve's median
    assert _improves(ibm, get_instrument("SPY.ARCX")) and not _improves(touch_only, get_instrument("SPY.ARCX"))


def test_zero_model_costs_nothing_for_any_instrument():
    zero = CostModel.zero()
    ts = np.array([NOON_2013_10_07] * 2)
    assert zero.is_zero and zero.describe() == {"kind": "zero", "instruments": {}}
    assert (zero.predict_bps("AAPL.XNAS", ts, 100, 120.0) == 0).all()
    assert (zero.draw_bps("AAPL.XNAS", ts, 100, 120.0, rng=np.random.default_rng(0)) == 0).all()
    assert (zero.spread_bps("AAPL.XNAS", ts) == 0).all()
    assert (zero.fee("AAPL.XNAS", np.array([1e4]), np.array([10])) == 0).all()
    assert zero.touch_size("AAPL.XNAS", 100.0) > 1e6


def test_bad_requests_name_what_was_wrong(ibm_store, costs):
    cost_model, _ = costs
    with pytest.raises(ResearchError, match="no calibration for 'QQQ.XNAS'.*prices IBM.XNYS, SPY.ARCX"):
        cost_model.predict_bps("QQQ.XNAS", [NOON_2013_10_07], 10, 100.0)
    with pytest.raises(ResearchError, match="no calibration for BAC.XNYS"):
        cost_model.require(["SPY.ARCX", "BAC.XNYS"])
    with Store(ibm_store, read_only=True) as store:
        with pytest.raises(StoreError, match="no calibration 'SPY.ARCX@v1'.*IBM.XNYS@v1"):
            CostModel.from_store(store, ["SPY.ARCX@v1"])
        with pytest.raises(ResearchError, match="not one string"):
            CostModel.from_store(store, "IBM.XNYS")
        listed = CostModel.from_store(store, ["IBM.XNYS"])  # an instrument id: its latest calibration
    assert listed.instruments == ("IBM.XNYS",)


def test_no_spread_is_narrower_than_one_tick_at_the_traded_price(costs, daily_calibrated_template):
    cost_model, _ = costs
    ts = np.full(3, NOON_2013_10_07)
    profile = cost_model.spread_bps("SPY.ARCX", ts)
    floored = cost_model.spread_bps("SPY.ARCX", ts, price=np.array([400.0, 35.0, 5.0]))
    assert floored[0] == profile[0]  # a cent at $400 is 0.25 bps: the profile's spread stands
    np.testing.assert_allclose(floored[1:], [0.01 / 35 * 1e4, 0.01 / 5 * 1e4])  # BAC-like prices: one tick
    assert cost_model.predict_bps("SPY.ARCX", ts[:1], 100, 5.0)[0] == pytest.approx(10.0)  # half of 20 bps
    # a model read from a store without split factors cannot tell an adjusted price from a traded one
    assert cost_model.traded_price("SPY.ARCX", [OPEN_2013_10_07], 150.0) is None
    assert cost_model.describe()["instruments"]["SPY.ARCX"]["tick_floor"] == "traded prices only"
    with Store(daily_calibrated_template, read_only=True) as store:
        with_factors = CostModel.from_store(store, {"AAPL.XNAS": "IBM.XNYS@v1"})
        raw = store.bars("AAPL.XNAS", bar_seconds=86_400)
    from tradebook.research.bars import Bars
    with Store(daily_calibrated_template, read_only=True) as store:
        adjusted = Bars.from_store(store, ["AAPL.XNAS"])
    rows = [0, 2000, 5000]
    traded = with_factors.traded_price("AAPL.XNAS", adjusted.start_ns[rows], adjusted.open["AAPL.XNAS"].iloc[rows])
    expected = raw.set_index("ts_ns").loc[adjusted.start_ns[rows], "open"].to_numpy()
    np.testing.assert_allclose(traded, expected, rtol=1e-9)  # the split adjustment undone: the price that traded
    assert with_factors.describe()["instruments"]["AAPL.XNAS"]["tick_floor"] == "split factors"


def test_minute_vol_scales_daily_returns_to_one_minute_and_is_causal():
    index = pd.date_range("2020-01-01", periods=60, freq="D", tz="UTC")
    rng = np.random.default_rng(1)
    log_returns = rng.normal(0, 0.01, 60)
    close = pd.DataFrame({"X": 100 * np.exp(np.cumsum(log_returns))}, index=index)
    vol = minute_vol_bps(close, bar_seconds=86_400, lookback=20)
    assert vol["X"].iloc[:20].isna().all()  # warm-up: 20 returns need 21 closes
    by_hand = np.std(np.diff(np.log(close["X"].to_numpy()))[20 - 20:20], ddof=1) * 1e4 / math.sqrt(390)
    assert vol["X"].iloc[20] == pytest.approx(by_hand)
    changed = close.copy()
    changed.iloc[40:] *= 1.5  # the future cannot move the past
    pd.testing.assert_series_equal(minute_vol_bps(changed, bar_seconds=86_400)["X"].iloc[:40], vol["X"].iloc[:40])
