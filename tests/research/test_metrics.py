"""Daily records and window metrics: one definition, checked against hand computations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tradebook.errors import ResearchError
from tradebook.research.metrics import (
    DAILY_COLUMNS, METRICS, Side, daily_records, trading_days, window_metrics, window_metrics_array,
)


def ny(day: str, time: str = "16:00") -> pd.Timestamp:
    return pd.Timestamp(f"{day} {time}", tz="America/New_York").tz_convert("UTC")


def fills_frame(rows: list[tuple[pd.Timestamp, float, float, float, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "ts_ns": [int(t.value) for t, *_ in rows],
            "instrument_id": "SPY.ARCX",
            "side": "buy",
            "quantity": [r[1] for r in rows],
            "price": [r[2] for r in rows],
            "mid": [r[2] for r in rows],
            "fee": 0.0,
            "cost_bps": [r[3] for r in rows],
            "predicted_cost_bps": [r[4] for r in rows],
        }
    )


def test_daily_records_by_hand():
    # Thu 2021-04-01, Good Friday 04-02 (closed), weekend, Mon 04-05, Tue 04-06
    equity = pd.Series([100_000.0, 101_000.0, 99_990.0],
                       index=pd.DatetimeIndex([ny("2021-04-01"), ny("2021-04-05"), ny("2021-04-06")]))
    fills = fills_frame([
        (ny("2021-04-05", "09:30"), 100, 400.0, 2.0, 1.5),   # 40,000 notional
        (ny("2021-04-05", "10:00"), -50, 402.0, 4.0, 1.0),   # 20,100
        (ny("2021-04-03", "12:00"), 10, 100.0, 1.0, 1.0),    # Saturday: counts on Monday
    ])
    trades = pd.DataFrame({"exit_ts_ns": [ny("2021-04-05").value, ny("2021-04-06").value, None],
                           "pnl": [120.0, -30.0, 5.0]})
    daily = daily_records(equity, fills, trades, calendar="XNYS")
    assert list(daily.columns) == list(DAILY_COLUMNS)
    assert list(daily.index.date.astype(str)) == ["2021-04-01", "2021-04-05", "2021-04-06"]
    assert str(daily.index.tz) == "UTC"
    mon = daily.iloc[1]
    assert mon["ret"] == pytest.approx(0.01)
    assert mon["n_fills"] == 3
    assert mon["notional"] == pytest.approx(40_000 + 20_100 + 1_000)
    assert mon["turnover"] == pytest.approx(61_100 / 100_000)
    assert mon["cost_bps_sum"] == pytest.approx(7.0)
    assert mon["residual_bps_sum"] == pytest.approx(0.5 + 3.0 + 0.0)
    assert mon["residual_bps_sumsq"] == pytest.approx(0.25 + 9.0)
    assert (mon["n_trades"], mon["n_wins"]) == (1, 1)
    tue = daily.iloc[2]
    assert tue["ret"] == pytest.approx(99_990 / 101_000 - 1)
    assert (tue["n_trades"], tue["n_wins"], tue["n_fills"]) == (1, 0, 0)  # the open trade is not counted
    assert daily.iloc[0]["ret"] == 0.0


def test_days_without_observations_carry_equity_and_starting_equity_sets_first_return():
    equity = pd.Series([105.0, 110.0], index=pd.DatetimeIndex([ny("2021-03-01"), ny("2021-03-05")]))
    empty_fills = fills_frame([])
    empty_trades = pd.DataFrame({"exit_ts_ns": pd.Series([], dtype="float64"), "pnl": pd.Series([], dtype=float)})
    daily = daily_records(equity, empty_fills, empty_trades, starting_equity=100.0)
    assert len(daily) == 5
    assert daily["ret"].iloc[0] == pytest.approx(0.05)
    assert list(daily["equity"]) == [105.0] * 4 + [110.0]
    assert daily["n_fills"].sum() == 0


def test_24_7_calendar_counts_every_day_in_utc():
    idx = pd.date_range("2024-01-05 23:00", periods=4, freq="D", tz="UTC")
    equity = pd.Series([1.0, 1.1, 1.21, 1.1], index=idx)
    none = fills_frame([])
    daily = daily_records(equity, none, pd.DataFrame({"exit_ts_ns": [], "pnl": []}), calendar="24/7")
    assert len(daily) == 4  # the weekend included
    assert daily["ret"].iloc[2] == pytest.approx(0.1)


def test_trading_days_reach_back_before_the_default_calendar_start():
    days = trading_days("XNYS", pd.Timestamp("1998-12-23"), pd.Timestamp("1998-12-31"))
    assert [d.day for d in days] == [23, 24, 28, 29, 30, 31]


def test_bad_input_is_named():
    with pytest.raises(ResearchError, match="tz-aware"):
        daily_records(pd.Series([1.0], index=pd.DatetimeIndex(["2021-01-04"])), fills_frame([]),
                      pd.DataFrame({"exit_ts_ns": [], "pnl": []}))
    eq = pd.Series([1.0], index=pd.DatetimeIndex([ny("2021-01-04")]))
    with pytest.raises(ResearchError, match="predicted_cost_bps"):
        daily_records(eq, fills_frame([]).drop(columns="predicted_cost_bps"),
                      pd.DataFrame({"exit_ts_ns": [], "pnl": []}))
    with pytest.raises(ResearchError, match="calendar"):
        daily_records(eq, fills_frame([]), pd.DataFrame({"exit_ts_ns": [], "pnl": []}), calendar="NOPE")
    with pytest.raises(ResearchError, match="positive"):
        daily_records(pd.Series([1.0, -2.0], index=pd.DatetimeIndex([ny("2021-01-04"), ny("2021-01-05")])),
                      fills_frame([]), pd.DataFrame({"exit_ts_ns": [], "pnl": []}))


def _daily(ret, **cols) -> pd.DataFrame:
    n = len(ret)
    frame = pd.DataFrame({c: np.zeros(n) for c in DAILY_COLUMNS})
    frame["ret"] = ret
    for c, v in cols.items():
        frame[c] = v
    return frame


def test_window_metrics_by_hand():
    ret = np.array([0.01, -0.02, 0.03, 0.0, -0.01])
    daily = _daily(ret, n_fills=[2, 0, 1, 0, 1], n_trades=[1, 0, 1, 1, 0], n_wins=[1, 0, 0, 1, 0],
                   turnover=[0.5, 0, 0.2, 0, 0.1], cost_bps_sum=[4.0, 0, 3.0, 0, 1.0],
                   residual_bps_sum=[1.0, 0, 2.0, 0, -1.0], residual_bps_sumsq=[0.5 ** 2 * 2, 0, 4.0, 0, 1.0])
    m = window_metrics(daily)
    assert m["return"] == pytest.approx(np.prod(1 + ret) - 1)
    assert m["sharpe"] == pytest.approx(ret.mean() / ret.std(ddof=1) * np.sqrt(252))
    downside = np.sqrt(np.mean(np.minimum(ret, 0) ** 2))
    assert m["sortino"] == pytest.approx(ret.mean() / downside * np.sqrt(252))
    # path 1.01, 0.9898, ...: the peak after day one, the trough the day after
    assert m["max_drawdown"] == pytest.approx(1 - 1.01 * 0.98 / 1.01)
    assert m["win_rate"] == pytest.approx(2 / 3)
    assert (m["n_trades"], m["n_fills"]) == (3, 4)
    assert m["turnover"] == pytest.approx(0.8)
    assert m["cost_bps"] == pytest.approx(2.0)
    assert m["cost_residual_bps"] == pytest.approx(0.5)
    assert m["cost_residual_sd_bps"] == pytest.approx(np.std([0.5, 0.5, 2.0, -1.0], ddof=1))


def test_window_metrics_edge_cases():
    flat = window_metrics(_daily(np.zeros(30)))
    assert flat["sharpe"] == 0.0 and flat["sortino"] == 0.0 and flat["max_drawdown"] == 0.0
    assert np.isnan(flat["win_rate"]) and np.isnan(flat["cost_bps"]) and np.isnan(flat["cost_residual_bps"])
    up = window_metrics(_daily(np.full(30, 0.001) + np.linspace(0, 1e-4, 30)))
    assert up["sortino"] == np.inf and up["max_drawdown"] == 0.0
    first_day_loss = window_metrics(_daily(np.array([-0.1, 0.0, 0.05])))
    assert first_day_loss["max_drawdown"] == pytest.approx(0.1)  # the path starts at 1, before day one
    with pytest.raises(ResearchError, match="at least 2 days"):
        window_metrics(_daily(np.array([0.01])))


def test_array_variant_matches_one_window_at_a_time():
    rng = np.random.default_rng(3)
    paths, days = 50, 30
    arrays = {
        "ret": rng.normal(0.001, 0.01, (paths, days)),
        "n_fills": rng.poisson(3, (paths, days)).astype(float),
        "n_trades": rng.poisson(1, (paths, days)).astype(float),
        "turnover": rng.uniform(0, 1, (paths, days)),
        "cost_bps_sum": rng.uniform(0, 10, (paths, days)),
        "residual_bps_sum": rng.normal(0, 3, (paths, days)),
        "equity": np.ones((paths, days)), "notional": np.ones((paths, days)),
    }
    arrays["n_wins"] = np.floor(arrays["n_trades"] / 2)
    arrays["residual_bps_sumsq"] = arrays["residual_bps_sum"] ** 2 + arrays["n_fills"]
    many = window_metrics_array(arrays)
    for p in (0, 17, 49):
        one = window_metrics(pd.DataFrame({c: arrays[c][p] for c in DAILY_COLUMNS}))
        for name, value in one.items():
            assert many[name][p] == pytest.approx(value, nan_ok=True), name


def test_metrics_name_their_bad_side():
    assert METRICS["return"] is Side.LOW and METRICS["max_drawdown"] is Side.HIGH
    assert METRICS["n_trades"] is Side.TWO_SIDED and METRICS["cost_residual_bps"] is Side.HIGH
    assert set(METRICS) <= set(window_metrics(_daily(np.zeros(3))))
