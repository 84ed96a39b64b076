"""The gate's error rates on fresh bootstrap paths of the backtest (the issue's Done-when 3)."""

from __future__ import annotations

import pytest

from .simulated import simulate, simulated_daily
from tradebook.errors import PromotionError
from tradebook.promotion.error_rates import rates_by_review, simulate_gate, stressed_costs, zero_sharpe
from tradebook.research.metrics import METRICS, Side


def test_genuine_paths_are_rejected_by_a_check_at_rate_alpha(backtest_daily, thresholds):
    outcomes = simulate_gate(backtest_daily, thresholds, n_paths=2000, seed=12345)
    rejected = outcomes["code"] == "check_failed"
    assert abs(rejected.mean() - thresholds.alpha) <= 0.02, rejected.mean()
    # a REJECT "not profitable" at the maximum period is counted apart, never as a check's error
    unprofitable = outcomes["code"] == "not_profitable_at_max"
    assert not (unprofitable & rejected).any()
    assert (outcomes.loc[unprofitable, "review_days"] == thresholds.max_days).all()
    # no rejection names a metric on its good side (of the backtest's median at that review)
    for check, side in METRICS.items():
        failed = outcomes[outcomes[check]]
        if failed.empty or side is Side.TWO_SIDED or check == "cost_residual_bps":
            continue
        for length, group in failed.groupby("review_days"):
            median = thresholds.bands[int(length)][check]["0.5"]
            values = group[f"value_{check}"]
            assert ((values < median) if side is Side.LOW else (values > median)).all(), check
    residual = outcomes[outcomes["cost_residual_bps"]]["value_cost_residual_bps"]
    assert (residual > thresholds.residual_center_bps).all()
    table = rates_by_review(outcomes, thresholds.reviews)
    assert table["rejected_by_check"].is_monotonic_increasing
    assert table["rejected_by_check"].iloc[-1] == pytest.approx(rejected.mean())


def test_costs_three_times_the_model_are_caught_at_the_first_review():
    equity, fills, trades = simulate(756, seed=11)
    from tradebook.promotion.gate import calibrate_gate

    thresholds = calibrate_gate(simulated_daily(756, seed=11), n_paths=1000, seed=0)
    stressed = stressed_costs(equity, fills, trades, 3.0, starting_equity=100_000.0)
    outcomes = simulate_gate(stressed, thresholds, n_paths=1000, seed=7)
    fills_30 = outcomes["review_days"] == thresholds.min_days
    assert fills_30.mean() >= 0.95
    caught = fills_30 & (outcomes["code"] == "check_failed") & outcomes["cost_residual_bps"]
    assert caught.mean() >= 0.95, caught.mean()


def test_stressed_costs_take_the_extra_out_of_equity():
    equity, fills, trades = simulate(60, seed=2)
    base = stressed_costs(equity, fills, trades, 1.0, starting_equity=100_000.0)
    tripled = stressed_costs(equity, fills, trades, 3.0, starting_equity=100_000.0)
    assert tripled["cost_bps_sum"].sum() == pytest.approx(3 * base["cost_bps_sum"].sum())
    assert tripled["equity"].iloc[-1] < base["equity"].iloc[-1]
    extra = (2 * fills["cost_bps"].abs() / 1e4 * fills["quantity"] * fills["price"]).sum()
    assert base["equity"].iloc[-1] - tripled["equity"].iloc[-1] == pytest.approx(extra)
    with pytest.raises(PromotionError, match="positive"):
        stressed_costs(equity, fills, trades, 0.0)


def test_zero_sharpe_keeps_trading_and_removes_the_edge(backtest_daily, thresholds):
    flat = zero_sharpe(backtest_daily)
    assert flat["ret"].mean() == pytest.approx(0.0, abs=1e-15)
    assert (flat["n_fills"] == backtest_daily["n_fills"]).all()
    genuine = simulate_gate(backtest_daily, thresholds, n_paths=1000, seed=5)
    lost = simulate_gate(flat, thresholds, n_paths=1000, seed=5)
    # the gate sees a lost edge only a little more often than it rejects a genuine strategy
    assert (lost["code"] == "check_failed").mean() >= (genuine["code"] == "check_failed").mean()
    assert (lost["decision"] == "promote").mean() < (genuine["decision"] == "promote").mean()


def test_error_rates_refuse_the_calibration_seed(backtest_daily, thresholds):
    with pytest.raises(PromotionError, match="fresh paths"):
        simulate_gate(backtest_daily, thresholds, n_paths=10, seed=thresholds.seed)


@pytest.fixture(scope="module")
def real_backtest(equities_template):
    """B's backtest of MeanReversion (six equities, 2015-2021-01, IBM's fill model applied to each)."""
    from tradebook.research.backtest import backtest
    from tradebook.research.bars import Bars
    from tradebook.research.costs import CostModel
    from tradebook.research.examples import MeanReversion
    from tradebook.store import Store

    from .conftest import DAILY_EQUITIES

    with Store(equities_template, read_only=True) as store:
        costs = CostModel.from_store(store, {i: "IBM.XNYS@v1" for i in DAILY_EQUITIES})
        bars = Bars.from_store(store, DAILY_EQUITIES, start="2015-01-01T00:00:00Z", end="2021-01-30T00:00:00Z")
    return backtest(MeanReversion(), bars, costs=costs)


def test_error_rate_on_a_real_backtest(real_backtest):
    from tradebook.promotion.gate import calibrate_gate

    result = real_backtest
    thresholds = calibrate_gate(result.daily, n_paths=2000, seed=0)
    outcomes = simulate_gate(result.daily, thresholds, n_paths=2000, seed=1)
    rejected = (outcomes["code"] == "check_failed").mean()
    assert abs(rejected - thresholds.alpha) <= 0.02, rejected
    for check, side in METRICS.items():
        failed = outcomes[outcomes[check]]
        if failed.empty or side is Side.TWO_SIDED or check == "cost_residual_bps":
            continue
        for length, group in failed.groupby("review_days"):
            median = thresholds.bands[int(length)][check]["0.5"]
            values = group[f"value_{check}"]
            assert ((values < median) if side is Side.LOW else (values > median)).all(), check
    # costs twice the model's are mostly caught; the check that catches them is a cost check
    stressed = stressed_costs(result.equity, result.fills, result.trades, 2.0, starting_equity=100_000.0)
    caught = simulate_gate(stressed, thresholds, n_paths=1000, seed=2)
    by_check = caught[caught["code"] == "check_failed"]
    assert len(by_check) >= 0.8 * len(caught)
    assert (by_check["cost_bps"] | by_check["cost_residual_bps"]).mean() >= 0.95


def test_the_reports_error_rate_table(real_backtest):
    from tradebook.promotion.error_rates import gate_error_rates
    from tradebook.promotion.gate import calibrate_gate

    thresholds = calibrate_gate(real_backtest.daily, n_paths=1000, seed=0)
    table = gate_error_rates(real_backtest, thresholds, n_paths=1000, seed=3)
    assert list(table["scenario"].unique()) == ["genuine", "costs x2", "zero Sharpe"]
    assert list(table["review_days"].unique()) == list(thresholds.reviews)
    for _, rows in table.groupby("scenario"):
        assert rows["rejected_by_check"].is_monotonic_increasing
    last = table[table["review_days"] == thresholds.max_days].set_index("scenario")
    assert last.loc["costs x2", "rejected_by_check"] > 0.8 > last.loc["genuine", "rejected_by_check"]
    # the gate hardly sees a lost edge: the zero-Sharpe strategy is caught more often than a genuine one, rarely
    assert last.loc["genuine", "rejected_by_check"] <= last.loc["zero Sharpe", "rejected_by_check"] < 0.5
    assert last.loc["genuine", "not_profitable_at_max"] < last.loc["zero Sharpe", "not_profitable_at_max"]
    with pytest.raises(PromotionError, match="fresh paths"):
        gate_error_rates(real_backtest, thresholds, n_paths=100, seed=0)
