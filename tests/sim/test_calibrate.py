"""The marketable-cost model: fitted on one half of real sweeps, measured on the other."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tradebook.data import load_bundled
from tradebook.errors import DataError
from tradebook.sim.book import ESH4_20231225_OPEN_NS
from tradebook.sim.calibrate import calibrate_marketable, evaluate_marketable, fit_cost_curve, pool_sweeps
from tradebook.sim.fill_model import FillModel, baseline_model
from tradebook.sim.truth import sweeps


@pytest.fixture(scope="module")
def es_sweeps() -> pd.DataFrame:
    book = load_bundled("cme_ESH4_book5_from_mbo_20231225.csv.gz").frame
    book = book[book["ts_ns"] >= ESH4_20231225_OPEN_NS].reset_index(drop=True)
    trades = load_bundled("cme_ESH4_trades_from_mbo_20231225.csv.gz").frame
    return sweeps(trades, book)


def _halves(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    cut = frame["ts_ns"].iloc[len(frame) // 2]
    return frame[frame["ts_ns"] < cut], frame[frame["ts_ns"] >= cut]


def test_curve_is_monotone_and_ordered(es_sweeps):
    curve = fit_cost_curve(es_sweeps)
    q05, q50, q95 = (np.asarray(q) for q in (curve.q05, curve.q50, curve.q95))
    assert (np.diff(q50) >= 0).all() and (np.diff(q05) >= 0).all() and (np.diff(q95) >= 0).all()
    assert (q05 <= q50).all() and (q50 <= q95).all()
    # ES fills at the touch for sizes the touch can absorb
    assert q50[0] == pytest.approx(1.0)


def test_held_out_es_beats_touch_plus_slippage(es_sweeps):
    fit, held_out = _halves(es_sweeps)
    model = calibrate_marketable("ESH4.GLBX", 0.25, fit)
    fidelity = evaluate_marketable(model, held_out)
    assert fidelity.n == len(held_out)
    assert fidelity.ratio_to_baseline_a <= 0.10
    assert fidelity.coverage_closed >= 0.85 and fidelity.coverage_open <= 0.95
    # the fixed-slippage baseline is off by about its 2 bps
    assert fidelity.mae_touch_plus_slippage_bps == pytest.approx(2.0, abs=0.1)


def test_model_round_trips_through_json(es_sweeps):
    model = calibrate_marketable("ESH4.GLBX", 0.25, es_sweeps)
    assert FillModel.from_json(model.to_json()) == model


@given(st.floats(0.01, 500.0), st.floats(0.01, 500.0), st.floats(0.1, 50.0), st.floats(0.1, 100.0))
def test_cost_grows_with_size(small, extra, half_spread, touch):
    model = FillModel.from_json(_ES_MODEL_JSON)
    sizes = np.array([small, small + extra])
    costs = model.marketable_cost_bps(sizes, np.full(2, half_spread), np.full(2, touch))
    assert costs[1] >= costs[0]


def test_baseline_is_touch_plus_fixed_slippage():
    costs = baseline_model("X", 0.01).marketable_cost_bps(np.array([1.0, 1e6]), np.array([0.5, 0.5]),
                                                           np.array([10.0, 10.0]))
    assert costs.tolist() == [2.5, 2.5]


def test_no_usable_sweeps_is_refused(es_sweeps):
    locked = es_sweeps.assign(half_spread_bps=0.0)
    with pytest.raises(DataError, match="no usable sweeps"):
        fit_cost_curve(locked)
    with pytest.raises(DataError, match="lacks"):
        fit_cost_curve(es_sweeps.drop(columns=["cost_bps"]))


def _es_model_json() -> str:
    book = load_bundled("cme_ESH4_book5_from_mbo_20231225.csv.gz").frame
    book = book[book["ts_ns"] >= ESH4_20231225_OPEN_NS].reset_index(drop=True)
    trades = load_bundled("cme_ESH4_trades_from_mbo_20231225.csv.gz").frame
    return calibrate_marketable("ESH4.GLBX", 0.25, sweeps(trades, book)).to_json()


_ES_MODEL_JSON = _es_model_json()


def test_costs_in_spread_plus_volatility_do_not_blow_up_on_a_one_tick_book():
    # BTCUSDT 2024 sits on a one-tick book: the half-spread is ~0.0008 bps, and clock noise
    # between the quote and trade streams divided by it is hundreds of half-spreads
    prefix = "binance_spot_btcusdt_20240808T2354-20240809T0005_"
    quotes = load_bundled(prefix + "l1_quotes.csv.gz").frame
    swept = sweeps(load_bundled(prefix + "trades.csv.gz").frame, quotes)
    fit, held = _halves(swept)
    in_half_spreads = calibrate_marketable("BTCUSDT.BINANCE", 0.01, fit)
    in_vol = calibrate_marketable("BTCUSDT.BINANCE", 0.01, fit, quotes=quotes)
    assert in_half_spreads.cost_curve.scale == "half_spread" and in_vol.cost_curve.scale == "half_spread_plus_vol"
    assert min(in_half_spreads.cost_curve.q05) < -100
    assert -5 < min(in_vol.cost_curve.q05) and max(in_vol.cost_curve.q95) < 5
    old = evaluate_marketable(in_half_spreads, held)
    new = evaluate_marketable(in_vol, held, quotes=quotes)
    print(f"\nBTCUSDT 2024 sweeps, half/half: MAE {old.mae_model_bps:.4f} bps (half-spreads) vs "
          f"{new.mae_model_bps:.4f} (spread + vol), touch {new.mae_touch_bps:.4f}; coverage closed "
          f"{old.coverage_closed:.3f} vs {new.coverage_closed:.3f}, open {old.coverage_open:.3f} vs "
          f"{new.coverage_open:.3f}")
    assert new.mae_model_bps <= new.mae_touch_bps * 1.0001
    assert new.coverage_closed >= 0.85 and new.coverage_open <= 0.95
    # a model in volatility units needs the volatility of the scored data
    with pytest.raises(DataError, match="recent volatility"):
        evaluate_marketable(in_vol, held)
    # the unit is stored with the curve
    assert FillModel.from_json(in_vol.to_json()) == in_vol


def test_a_calibration_pools_captures_of_one_asset_class():
    captures = {}
    for label, prefix in (("2021", "binance_spot_BTCUSDT_20210108T0000_"),
                          ("2024", "binance_spot_btcusdt_20240808T2354-20240809T0005_")):
        quotes = load_bundled(prefix + "l1_quotes.csv.gz").frame
        captures[label] = (sweeps(load_bundled(prefix + "trades.csv.gz").frame, quotes), quotes)
    pooled = pool_sweeps(captures)
    assert set(pooled["capture"]) == {"2021", "2024"} and pooled["ts_ns"].is_monotonic_increasing
    assert len(pooled) == sum(len(s) for s, _ in captures.values())
    model = calibrate_marketable("BTCUSDT.BINANCE", 0.01, pooled, fitted_on=("BTCUSDT.BINANCE", "BTC-USD.COINBASE"))
    assert model.fitted_on == ("BTCUSDT.BINANCE", "BTC-USD.COINBASE") and model.asset_class == "crypto_spot"
    assert model.cost_curve.scale == "half_spread_plus_vol"
    with pytest.raises(DataError, match="one asset class"):
        calibrate_marketable("BTCUSDT.BINANCE", 0.01, pooled, fitted_on=("BTCUSDT.BINANCE", "IBM.XNYS"))
    with pytest.raises(DataError, match="some captures come with quotes"):
        pool_sweeps({"a": captures["2021"], "b": (captures["2024"][0], None)})


def _synthetic_sweeps(n: int, excess_half_spreads: float, seed: int = 0) -> pd.DataFrame:
    # sweeps that all cost the half-spread (1 bps) plus a noisy excess of about ``excess_half_spreads``
    rng = np.random.default_rng(seed)
    hs = np.ones(n)
    touch = np.full(n, 10.0)
    quantity = touch * rng.uniform(0.2, 5.0, n)
    cost = hs * (1.0 + excess_half_spreads * rng.uniform(0.8, 1.2, n))
    return pd.DataFrame({"ts_ns": np.arange(n, dtype=np.int64) * 1_000_000_000, "cost_bps": cost,
                         "half_spread_bps": hs, "size_over_touch": quantity / touch, "quantity": quantity,
                         "touch_size": touch})


def test_median_kept_only_where_it_beats_the_touch_on_held_back_sweeps(es_sweeps):
    from tradebook.sim.calibrate import fitted_median_validated

    # a real excess over the touch, the same all along: the fitted median wins on the held-back sweeps and stays
    paying = _synthetic_sweeps(600, 2.0)
    assert fitted_median_validated(paying)
    kept = calibrate_marketable("ESH4.GLBX", 0.25, paying, median="validated")
    assert kept.cost_curve == calibrate_marketable("ESH4.GLBX", 0.25, paying).cost_curve
    assert min(kept.cost_curve.q50) > 2.5
    # no excess: the fitted median cannot beat the touch, which becomes the median for every size
    free = _synthetic_sweeps(600, 0.0)
    assert not fitted_median_validated(free)
    at_touch = calibrate_marketable("ESH4.GLBX", 0.25, es_sweeps, median="touch")
    q05, q50, q95 = (np.asarray(q) for q in (at_touch.cost_curve.q05, at_touch.cost_curve.q50,
                                             at_touch.cost_curve.q95))
    assert (q50 == 1.0).all() and (q05 <= 1.0).all() and (q95 >= 1.0).all()
    # too few sweeps to validate anything: the touch
    assert not fitted_median_validated(paying.iloc[:50])
    with pytest.raises(DataError, match="median='mean'"):
        calibrate_marketable("ESH4.GLBX", 0.25, es_sweeps, median="mean")
