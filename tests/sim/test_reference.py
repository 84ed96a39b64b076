"""Reference (c) of the fidelity report and the block-bootstrap bands its figures carry."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tradebook.errors import DataError
from tradebook.sim.bootstrap import Band, block_length_ns, judge, mean_band, ratio_band
from tradebook.sim.reference import (
    brier,
    describe,
    fit_cost_reference,
    fit_fill_reference,
    recent_volatility_bps,
)

NS = 1_000_000_000
T0 = 1_720_000_000 * NS


def test_quantile_regression_recovers_a_known_cost_law():
    rng = np.random.default_rng(0)
    n = 3000
    x = np.exp(rng.uniform(np.log(0.5), np.log(20), n))
    vol = rng.uniform(0, 5, n)
    hs = rng.uniform(0.5, 1.5, n)
    # excess over the half-spread grows with log size and volatility, with noise
    cost = hs + 0.8 * np.log(x) + 0.5 * np.log1p(vol) + rng.normal(0, 0.3, n)
    ref = fit_cost_reference(x, hs, vol, cost, seed=1)
    a, b = ref.coefficients[ref.quantiles.index(0.5)]
    assert a == pytest.approx(0.8, abs=0.05) and b == pytest.approx(0.5, abs=0.1)
    low, mid, high = (ref.cost_bps(x, hs, vol, quantile=q) for q in (0.05, 0.5, 0.95))
    assert np.all(low <= mid) and np.all(mid <= high)
    inside = np.mean((low <= cost) & (cost <= high))
    assert 0.86 <= inside <= 0.94  # a 90% interval on its own fit data
    assert "log(size/touch)" in describe(ref)
    with pytest.raises(DataError, match="quantile 0.25 was not fitted"):
        ref.cost_bps(x, hs, vol, quantile=0.25)
    with pytest.raises(DataError, match="at least 10 orders"):
        fit_cost_reference(x[:5], hs[:5], vol[:5], cost[:5])


def test_logistic_fill_reference_orders_probabilities_by_distance_and_horizon():
    rng = np.random.default_rng(2)
    n = 4000
    frame = pd.DataFrame({"distance_ticks": rng.integers(0, 6, n), "spread_ticks": np.ones(n),
                          "vol_ticks": rng.uniform(0, 4, n), "horizon_s": rng.choice([1.0, 10.0, 60.0], n),
                          "queue_rel_log": rng.normal(0, 1, n), "trade_rate_log": rng.normal(1, 0.5, n)})
    logit = -1.5 * frame["distance_ticks"] / (frame["vol_ticks"] + 1) + 0.8 * np.log(frame["horizon_s"]) - 1
    frame["filled"] = rng.random(n) < 1 / (1 + np.exp(-logit))
    ref = fit_fill_reference(frame)
    p = ref.fill_probability(frame)
    y = frame["filled"].to_numpy()
    assert brier(p, y).mean() < brier(np.full(n, y.mean()), y).mean() * 0.9
    near = frame.assign(distance_ticks=0, horizon_s=60.0)
    far = frame.assign(distance_ticks=5, horizon_s=1.0)
    assert ref.fill_probability(near).mean() > ref.fill_probability(far).mean() + 0.2
    one_class = fit_fill_reference(frame.assign(filled=False))
    assert np.all(one_class.fill_probability(frame) < 0.01)
    with pytest.raises(DataError, match="lack"):
        ref.fill_probability(frame.drop(columns=["vol_ticks"]))


def test_recent_volatility_uses_only_quotes_before():
    ts = T0 + np.arange(10) * NS
    mid = np.array([100.0] * 5 + [101.0] * 5)
    quotes = pd.DataFrame({"ts_ns": ts, "bid_px": mid - 0.5, "ask_px": mid + 0.5})
    vol = recent_volatility_bps(quotes, np.array([ts[5], ts[5] + 1, ts[0]]), lookback_ns=60 * NS)
    assert vol[0] == 0.0  # the jump at ts[5] is not yet seen at ts[5]
    assert vol[1] == pytest.approx(np.log(101 / 100) * 1e4)
    assert np.isnan(vol[2])  # nothing before the first quote


def test_block_bootstrap_band_is_wider_for_correlated_rows():
    rng = np.random.default_rng(3)
    minutes = 30
    ts = np.repeat(T0 + np.arange(minutes) * 60 * NS, 100) + np.tile(np.arange(100) * NS // 10, minutes)
    level = np.repeat(rng.normal(1.0, 0.5, minutes), 100)  # each minute shares one shock: 30 draws, not 3000
    values = level + rng.normal(0, 0.01, len(ts))
    blocked = mean_band(ts, values, seed=0)
    naive = mean_band(ts, values, block_ns=1, seed=0)  # every row its own block
    assert blocked.blocks == minutes and naive.blocks == len(ts)
    assert blocked.low <= blocked.value <= blocked.high
    assert (blocked.high - blocked.low) > 5 * (naive.high - naive.low)
    # same seed, same band
    assert mean_band(ts, values, seed=0) == blocked


def test_ratio_band_and_verdicts():
    ts = T0 + np.arange(600) * NS
    both_zero = ratio_band(ts, np.zeros(600), np.zeros(600))
    assert both_zero.value == 1.0 and judge(both_zero, "<=", 1.0) == (True, "met")
    worse = ratio_band(ts, np.full(600, 2.0), np.ones(600))
    assert worse.value == pytest.approx(2.0) and judge(worse, "<=", 1.0) == (False, "MISSED")
    assert judge(Band(0.6, 0.4, 0.8, 10, 5), "<=", 0.5) == (True, "met within band")
    assert judge(Band(0.6, 0.55, 0.8, 10, 5), "<=", 0.5) == (False, "MISSED")
    assert judge(Band(0.80, 0.7, 0.9, 10, 5), ">=", 0.85) == (True, "met within band")
    assert judge(Band(float("nan"), 0, 1, 0, 0), "<=", 1.0) == (False, "MISSED")
    assert block_length_ns(3600 * NS) == 60 * NS and block_length_ns(60 * NS) == 6 * NS
    assert block_length_ns(10 * NS) == 5 * NS
    with pytest.raises(DataError, match="one value per row"):
        ratio_band(ts, np.ones(3), np.ones(600))
    with pytest.raises(DataError, match="no finite row"):
        ratio_band(ts, np.full(600, np.nan), np.ones(600))
    with pytest.raises(DataError, match="int64"):
        ratio_band(ts.astype(float), np.ones(600), np.ones(600))
    with pytest.raises(DataError, match="rule"):
        judge(worse, "<", 1.0)
