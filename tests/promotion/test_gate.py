"""The gate through every branch: extend, promote, reject on each check, reject at the maximum, override."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from .simulated import simulated_daily
from tradebook.errors import PromotionError
from tradebook.promotion.gate import (
    CHECKS, Code, Decision, GateThresholds, calibrate_gate, decisions, judge, override, run_gate, save_decision,
)
from tradebook.promotion.stages import Stage, set_stage, stage, stage_history
from tradebook.research.metrics import METRICS, Side, window_metrics


def paper(n_days: int = 30, seed: int = 101, **kwargs) -> pd.DataFrame:
    return simulated_daily(n_days, seed, start="2021-02-01", **kwargs)


def steady(n_days: int, mean: float, vol: float = 0.006, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, vol, n_days)
    return mean + noise - noise.mean()


@pytest.fixture(scope="module")
def thin_thresholds(backtest_daily):
    """The same backtest judged with high bars for 'enough' trades (20) and fills (200)."""
    return calibrate_gate(backtest_daily, n_paths=600, seed=0, min_trades=20, min_fills=200)


def test_calibration_meets_alpha_and_round_trips_as_json(thresholds):
    assert thresholds.reviews == (30, 40, 50, 60, 70, 80, 90)
    assert 0.04 <= thresholds.calibrated_rate <= thresholds.alpha
    # one family: the per-check level is far below alpha (about alpha / number of checks)
    assert thresholds.level < thresholds.alpha / 4
    again = GateThresholds.from_json(thresholds.to_json())
    assert again == thresholds
    table = thresholds.table()
    assert set(table["metric"]) == set(CHECKS) and len(table) == 7 * len(CHECKS)
    low_only = table[table["side"] == "low"]
    assert low_only["fail_above"].isna().all() and low_only["fail_below"].notna().all()


def test_thresholds_tighten_with_the_length_of_the_record(thresholds):
    # a 90-day record is judged with 90-day thresholds, not 30-day ones
    t30, t90 = thresholds.thresholds[30]["sharpe"][0], thresholds.thresholds[90]["sharpe"][0]
    assert t30 < t90 < 0


def test_too_short():
    d = judge(paper(20), calibrate_gate(simulated_daily(400, 3), n_paths=300, seed=0), strategy="s")
    assert d.decision is Decision.EXTEND and d.codes == (Code.TOO_SHORT,)
    assert d.more_days_needed == 10 and d.days == 20
    assert "first review is at 30" in d.summary


def test_promote_when_every_check_passes_and_profitable(thresholds):
    d = judge(paper(30, returns=steady(30, 0.002)), thresholds, strategy="s")
    assert d.decision is Decision.PROMOTE and d.codes == (Code.ALL_CHECKS_PASS,)
    assert d.checks["passed"].all() and d.checks["judged"].all()
    assert list(d.checks["metric"]) == list(CHECKS)
    assert "stays on paper until a live venue is armed" in d.summary
    # decided at the 30-day review: a later look at 45 days says the same, from that review
    later = judge(paper(45, returns=steady(45, 0.002)), thresholds, strategy="s")
    assert later.decision is Decision.PROMOTE and later.review_days == 30


def test_extend_when_consistent_but_not_yet_profitable(thresholds):
    d = judge(paper(34, returns=steady(34, -0.0004)), thresholds, strategy="s")
    assert d.decision is Decision.EXTEND and d.codes == (Code.NOT_YET_PROFITABLE,)
    assert d.metrics["return"] < 0 and d.checks["passed"].all()
    assert d.more_days_needed == 6 and d.review_days == 30
    assert "not yet profitable" in d.summary and "next review in 6" in d.summary


def test_extend_when_too_few_trades_or_fills_to_judge(thin_thresholds):
    d = judge(paper(30, returns=steady(30, 0.002), trades_per_day=0.65), thin_thresholds, strategy="s")
    assert d.decision is Decision.EXTEND and Code.TOO_FEW_TRADES in d.codes
    row = d.checks.set_index("metric").loc["win_rate"]
    assert not row["judged"] and row["passed"] and "not judged" in row["evidence"]
    assert d.checks.set_index("metric").loc["n_trades", "passed"]  # few, but not too few for the backtest

    d = judge(paper(30, returns=steady(30, 0.002), fills_per_day=4.5, notional=26_700.0), thin_thresholds)
    assert d.decision is Decision.EXTEND and Code.TOO_FEW_FILLS in d.codes
    assert not d.checks.set_index("metric").loc["cost_residual_bps", "judged"]


def test_reject_after_the_maximum_period_not_profitable(thresholds):
    ret = np.tile([0.005, -0.0055], 45)
    d = judge(paper(90, returns=ret), thresholds, strategy="s")
    assert d.decision is Decision.REJECT and d.codes == (Code.NOT_PROFITABLE_AT_MAX,)
    assert d.review_days == 90 and d.checks["passed"].all()
    assert "not profitable" in d.summary and "no check failed" in d.summary


def test_reject_at_the_maximum_when_still_too_thin_to_judge(thin_thresholds):
    d = judge(paper(90, returns=steady(90, 0.001), fills_per_day=2.0, notional=60_000.0), thin_thresholds)
    assert d.decision is Decision.REJECT and d.codes == (Code.NOT_JUDGED_AT_MAX,)


CASES = {
    "return": dict(returns=steady(30, -0.008, seed=1)),
    "sharpe": dict(returns=steady(30, -0.006, seed=2)),
    "sortino": dict(returns=steady(30, -0.006, seed=3)),
    "max_drawdown": dict(returns=np.r_[np.zeros(9), -0.16, np.full(20, 0.0105)]),
    "win_rate": dict(win_prob=0.1),
    "n_trades": dict(trades_per_day=3.0),
    "turnover": dict(notional=60_000.0),
    "cost_bps": dict(cost_factor=3.0, predicted_factor=3.0),
    "cost_residual_bps": dict(predicted_factor=0.7),
}


@pytest.mark.parametrize("check", list(CASES))
def test_reject_on_each_check_naming_it_with_value_threshold_and_side(thresholds, check):
    kwargs = {"returns": steady(30, 0.002)} | CASES[check]
    d = judge(paper(30, **kwargs), thresholds, strategy="s")
    assert d.decision is Decision.REJECT and d.codes == (Code.CHECK_FAILED,)
    assert check in d.failed
    row = d.checks.set_index("metric").loc[check]
    assert row["side"] == str(METRICS[check]) and np.isfinite(row["threshold"])
    assert check in d.summary
    # every failed check is failed on its bad side
    for failed in d.failed:
        r = d.checks.set_index("metric").loc[failed]
        if METRICS[failed] is Side.LOW:
            assert r["value"] < r["threshold"]
        elif METRICS[failed] is Side.HIGH:
            assert r["value"] > r["threshold"]
    if check == "cost_residual_bps":
        assert d.failed == ["cost_residual_bps"]  # the model under-predicts; what was paid is usual


def test_two_sided_checks_fail_on_both_sides(thresholds):
    few = judge(paper(30, returns=steady(30, 0.002), trades_per_day=0.1), thresholds)
    assert "n_trades" in few.failed
    low = judge(paper(30, returns=steady(30, 0.002), notional=5_000.0), thresholds)
    assert "turnover" in low.failed
    assert low.checks.set_index("metric").loc["turnover", "value"] < thresholds.thresholds[30]["turnover"][0]


def test_better_than_the_backtest_is_never_a_failure(thresholds):
    great = judge(paper(30, returns=steady(30, 0.01, vol=0.002), win_prob=0.95, cost_factor=0.2), thresholds)
    assert great.decision is Decision.PROMOTE, great.summary


def test_a_value_equal_to_the_threshold_passes(thresholds):
    # strict rules: a discrete metric at its threshold passes, as in the calibration
    base = window_metrics(paper(30, returns=steady(30, 0.002)))
    low = thresholds.thresholds[30]["win_rate"][0]
    for value, passes in ((low, True), (low - 1e-9, False)):
        metrics = {k: np.array([v]) for k, v in base.items()}
        metrics["win_rate"] = np.array([value])
        out = run_gate([metrics], (30,), thresholds.thresholds, min_trades=thresholds.min_trades,
                       min_fills=thresholds.min_fills, residual_center_bps=thresholds.residual_center_bps,
                       is_last=[False])
        assert bool(out.failed[0, CHECKS.index("win_rate")]) is (not passes)


def test_bad_calibration_requests_are_named(backtest_daily):
    with pytest.raises(PromotionError, match="at least 180"):
        calibrate_gate(backtest_daily.iloc[:100])
    with pytest.raises(PromotionError, match="alpha"):
        calibrate_gate(backtest_daily, alpha=0.7)
    with pytest.raises(PromotionError, match="lack"):
        calibrate_gate(backtest_daily.drop(columns="n_fills"))
    with pytest.raises(PromotionError, match="min_days <= max_days"):
        calibrate_gate(backtest_daily, min_days=60, max_days=30)


def test_decisions_are_stored_with_their_evidence_and_overrides_need_a_reason(store, thresholds):
    d = judge(paper(30, returns=steady(30, 0.002), predicted_factor=0.7), thresholds, strategy="mr")
    d = dataclasses.replace(d, period_start_ns=1_600_000_000 * 10**9, period_end_ns=1_603_000_000 * 10**9)
    decision_id = save_decision(store, d, backtest_id="bt1")
    assert save_decision(store, d, backtest_id="bt1") == decision_id  # the same review again: one row
    stored = decisions(store, "mr")
    assert list(stored["decision_id"]) == [decision_id]
    row = stored.iloc[0]
    assert row["decision"] == "reject" and not row["override"]
    import orjson

    evidence = orjson.loads(row["evidence"])
    assert {c["metric"] for c in evidence["checks"]} == set(CHECKS)
    assert evidence["thresholds"]["alpha"] == 0.05 and "cost_residual_bps" in row["summary"]

    with pytest.raises(PromotionError, match="needs a reason"):
        override(store, "mr", "promote", "  ", backtest_id="bt1")
    with pytest.raises(PromotionError, match="expected one of"):
        override(store, "mr", "maybe", "because", backtest_id="bt1")
    o = override(store, "mr", Decision.PROMOTE, "costs were a data error, checked by hand", backtest_id="bt1")
    assert o.override and o.decision is Decision.PROMOTE and "the gate had said REJECT" in o.summary
    stored = decisions(store, "mr")
    assert list(stored["override"]) == [False, True]
    assert stored["override_reason"].iloc[-1] == "costs were a data error, checked by hand"
    save_decision(store, d, backtest_id="bt1")  # after an override the gate's own view is stored again
    assert list(decisions(store, "mr")["override"]) == [False, True, False]


def test_stages_move_as_the_table_allows(store):
    assert stage(store, "mr") is None
    with pytest.raises(PromotionError, match="needs a reason"):
        set_stage(store, "mr", "research", reason="")
    set_stage(store, "mr", Stage.RESEARCH, reason="swept")
    set_stage(store, "mr", "paper", reason="researched", backtest_id="bt1")
    with pytest.raises(PromotionError, match="named live venue"):
        set_stage(store, "mr", "live", reason="go")
    with pytest.raises(PromotionError, match="no standing PROMOTE"):
        set_stage(store, "mr", "live", reason="go", venue="alpaca")
    override(store, "mr", "promote", "reviewed by hand", backtest_id="bt1")
    set_stage(store, "mr", "live", reason="armed", venue="alpaca")
    with pytest.raises(PromotionError, match="can move to reverted, not paper"):
        set_stage(store, "mr", "paper", reason="?")
    set_stage(store, "mr", "reverted", reason="cost CUSUM")
    set_stage(store, "mr", "paper", reason="back on paper")
    history = stage_history(store, "mr")
    assert list(history["stage"]) == ["research", "paper", "live", "reverted", "paper"]
    assert history["ts_ns"].is_monotonic_increasing and history["ts_ns"].is_unique
    assert "alpaca" in history["reason"].iloc[2]
    assert stage(store, "mr") is Stage.PAPER
    with pytest.raises(PromotionError, match="unknown stage"):
        set_stage(store, "mr", "production", reason="x")


def test_cost_residual_threshold_is_finite_when_a_period_s_fills_share_one_residual():
    # the paper engine's draws: the median (residual 0), improved in a share of fills (residual < 0). A period
    # without an improved fill has residual sd 0; studentised by its own sd its t was +inf, and enough such
    # bootstrap paths put the check's threshold at inf ("fails when t > inf": it could never fail)
    rng = np.random.default_rng(7)
    predicted = np.full(5000, 1.5)
    realised = np.where(rng.random(5000) < 0.15, 0.5, 1.5)
    daily = simulated_daily(600, seed=11, fills_per_day=0.8, cost_pool=(realised, predicted))
    gate = calibrate_gate(daily, n_paths=2000, seed=3)
    assert gate.residual_sd_bps == pytest.approx(np.std(realised - predicted), rel=0.2)
    for length in gate.reviews:
        low, high = gate.thresholds[length]["cost_residual_bps"]
        assert low is None and np.isfinite(high), (length, high)
    # and a period whose every fill cost a basis point above the prediction fails it, with a finite threshold
    costly = simulated_daily(40, seed=12, fills_per_day=1.0, cost_pool=(predicted + 1.0, predicted))
    decision = judge(costly, gate, strategy="s")
    row = decision.checks.set_index("metric").loc["cost_residual_bps"]
    assert decision.decision is Decision.REJECT and not row["passed"] and np.isfinite(row["threshold"])
