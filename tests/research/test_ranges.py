"""metric_ranges(): rolling windows equal window_metrics of each window, bootstrap days keep their own fills."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from tradebook.errors import ResearchError
from tradebook.research.backtest import backtest
from tradebook.research.examples import MeanReversion
from tradebook.research.metrics import DAILY_COLUMNS, window_metrics
from tradebook.research.ranges import default_block_length, load_ranges, metric_ranges
from tradebook.store import Store


def synthetic_daily(n: int, seed: int = 0) -> pd.DataFrame:
    """Daily records with autocorrelated returns; every day has twice as many fills as closed trades."""
    rng = np.random.default_rng(seed)
    shocks = rng.normal(0.0003, 0.006, n)
    ret = np.convolve(shocks, np.ones(5) / 5, mode="same")  # held positions: today's return echoes the week's
    trades = rng.poisson(1.0, n).astype(float)
    wins = np.minimum(trades, rng.poisson(0.6, n)).astype(float)
    cost = rng.uniform(0.5, 2.5, n) * 2 * trades
    frame = pd.DataFrame({
        "ret": ret, "equity": 1e5 * np.cumprod(1 + ret), "n_fills": 2 * trades, "n_trades": trades, "n_wins": wins,
        "turnover": 0.05 * 2 * trades, "notional": 5e3 * 2 * trades, "cost_bps_sum": cost,
        "residual_bps_sum": cost - 1.5 * 2 * trades, "residual_bps_sumsq": (cost - 1.5 * 2 * trades) ** 2 / 2,
    }, index=pd.date_range("2020-01-01", periods=n, freq="B", tz="UTC"))
    return frame[list(DAILY_COLUMNS)]


def test_rolling_windows_are_the_window_metrics_of_each_window():
    daily = synthetic_daily(100)
    ranges = metric_ranges(daily, n_boot=200)
    rolling = ranges.values["rolling"]
    assert len(rolling) == 100 - 30 + 1
    for start in (0, 17, 70):
        expected = window_metrics(daily.iloc[start:start + 30])
        for metric in ("return", "sharpe", "max_drawdown", "win_rate", "n_trades", "turnover", "cost_bps"):
            assert rolling[metric].iloc[start] == pytest.approx(expected[metric], nan_ok=True), (start, metric)
    table = ranges.table
    assert list(table.columns) == ["p05", "p25", "p50", "p75", "p95", "n_windows"]
    returns = rolling["return"].to_numpy()
    assert table.loc[("return", "rolling"), "p05"] == pytest.approx(np.percentile(returns, 5))
    assert table.loc[("return", "rolling"), "n_windows"] == 71
    p05, p95 = ranges.band("return", "rolling")
    assert p05 < table.loc[("return", "rolling"), "p50"] < p95


def test_bootstrap_draws_whole_days_in_blocks_of_the_datas_own_length():
    daily = synthetic_daily(400, seed=1)
    ranges = metric_ranges(daily, n_boot=500, seed=7)
    boot = ranges.values["bootstrap"]
    assert len(boot) == 500
    # a day keeps its own fills and trades: on every path, fills are twice the closed trades
    np.testing.assert_array_equal(boot["n_fills"], 2 * boot["n_trades"])
    # the mean block length is arch's optimal one for these returns (a week's echo: more than one day)
    assert ranges.block_length == default_block_length(daily["ret"].to_numpy()) and ranges.block_length > 1
    again = metric_ranges(daily, n_boot=500, seed=7)
    pd.testing.assert_frame_equal(again.values["bootstrap"], boot)  # seeded
    other = metric_ranges(daily, n_boot=500, seed=8)
    assert not other.values["bootstrap"]["return"].equals(boot["return"])
    # both methods agree roughly on the centre of a stationary series
    table = ranges.table
    assert table.loc[("return", "bootstrap"), "p50"] == pytest.approx(table.loc[("return", "rolling"), "p50"],
                                                                      abs=0.01)


def test_too_short_a_history_names_its_days_and_what_is_needed():
    with pytest.raises(ResearchError, match="has 45 trading days; ranges of 30-day windows need at least 60"):
        metric_ranges(synthetic_daily(45))
    with pytest.raises(ResearchError, match="has 45 trading days; ranges of 25-day windows need at least 50"):
        metric_ranges(synthetic_daily(45), window_days=25)
    with pytest.raises(ResearchError, match="BacktestResult or its daily records"):
        metric_ranges([1, 2, 3])


def test_ranges_of_a_backtest_are_stored_with_it(daily_bars, daily_store_template, tmp_path):
    bars = daily_bars.select(["SPY.ARCX"])
    bars = bars.iloc(slice(int(np.searchsorted(bars.index, pd.Timestamp("2019-01-01", tz="UTC"))),
                           int(np.searchsorted(bars.index, pd.Timestamp("2021-02-01", tz="UTC")))))
    result = backtest(MeanReversion(instruments=["SPY.ARCX"]), bars)
    ranges = metric_ranges(result, n_boot=300)
    assert ranges.n_days == len(result.daily)
    shutil.copy(daily_store_template, tmp_path / "s.duckdb")
    with Store(tmp_path / "s.duckdb") as store:
        with pytest.raises(ResearchError, match="no backtest 'bt-nope' in the store; save the backtest first"):
            ranges.save(store, "bt-nope")
        backtest_id = result.save(store)
        assert ranges.save(store, backtest_id) == 20
        assert ranges.save(store, backtest_id) == 20  # replaced, not added
        stored = load_ranges(store, backtest_id)
    assert len(stored) == 20
    expected = ranges.table.sort_index()
    pd.testing.assert_frame_equal(stored.sort_index(), expected, check_dtype=False)
