"""The gate's own error rates, measured by simulation on the strategy's own backtest.

Paper periods are drawn as stationary-bootstrap paths of the backtest's daily records
(a seed other than the calibration's, so these are fresh draws of the same process) and
run through the gate's review sequence (:func:`tradebook.promotion.gate.run_gate`, the
very rule :func:`~tradebook.promotion.gate.review` applies). Three processes:

- **genuine**: the backtest's own days. The share rejected by a check by a review is the
  gate's false-rejection rate (alpha by the last review, by construction); a REJECT
  "not profitable" at the maximum period is no check's error and is counted apart.
- **costs x k** (k = 2 by default): every fill's realised cost multiplied by k, the extra
  cost taken out of equity, the days rebuilt with ``daily_records``: how often the gate
  catches costs above the model.
- **zero Sharpe**: the daily returns minus their mean (the edge gone, trading unchanged):
  how often the gate catches a lost edge. Rarely, and it says so; the edge is judged in
  research (deflated Sharpe ratio), not by thirty to ninety days of paper.

What it does not capture: one backtest misstates its own process (volatility,
autocorrelation), so on fresh draws of the true process the gate's rate varies around
alpha from backtest to backtest. Measured (December 2026) on eight simulated three-year
backtests of one process (annual Sharpe about 1.5, six fills and 0.8 round trips a day),
each gate judged against 2,000 fresh 90-day periods of the true process: 3.9% to 7.4%
rejected by a check, 5.7% on average, at alpha 5% (../shared/REFERENCES.md reports 1.9% to
8% for its own strategy). On paths resampled from the backtest itself, the rate this
module measures, it is alpha within sampling noise.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from tradebook.errors import PromotionError
from tradebook.promotion.gate import CHECKS, Code, Decision, GateThresholds, calibrate_gate, run_gate
from tradebook.promotion.paths import bootstrap_paths, review_metrics
from tradebook.research.metrics import daily_records


def simulate_gate(daily: pd.DataFrame, thresholds: GateThresholds, *, n_paths: int = 1000, seed: int = 1,
                  block_length: float | None = None) -> pd.DataFrame:
    """One row per bootstrap path of ``daily`` run through the gate: its decision, code and review.

    Columns: decision, code, review_days (the deciding review), failed (the checks
    failed, comma separated), one boolean column per check (failed at the deciding review),
    and the metric values at that review (``value_<check>``).
    """
    if seed == thresholds.seed:
        raise PromotionError(f"seed {seed} is the one the thresholds were calibrated with; error rates need "
                             "fresh paths (another seed)")
    mean_block = thresholds.block_length if block_length is None else float(block_length)
    paths = bootstrap_paths(daily, n_paths=n_paths, length=thresholds.max_days, mean_block=mean_block, seed=seed)
    reviews = thresholds.reviews
    per_review = review_metrics(paths, reviews, periods_per_year=thresholds.periods_per_year)
    out = run_gate(per_review, reviews, thresholds.thresholds, min_trades=thresholds.min_trades,
                   min_fills=thresholds.min_fills, residual_center_bps=thresholds.residual_center_bps,
                   is_last=[i == len(reviews) - 1 for i in range(len(reviews))],
                   residual_sd_bps=thresholds.residual_sd_bps)
    at = out.review_index
    frame = pd.DataFrame({
        "decision": out.decision.astype(str), "code": out.code.astype(str),
        "review_days": np.asarray(reviews)[at],
        "failed": [",".join(c for c, f in zip(CHECKS, row) if f) for row in out.failed],
    })
    for k, check in enumerate(CHECKS):
        frame[check] = out.failed[:, k]
    rows = np.arange(n_paths)
    for check in CHECKS:
        stacked = np.stack([np.asarray(m[check], dtype=float) for m in per_review], axis=1)
        frame[f"value_{check}"] = stacked[rows, at]
    return frame


def rates_by_review(outcomes: pd.DataFrame, reviews: tuple[int, ...]) -> pd.DataFrame:
    """For each review: the share of paths rejected by a check, promoted, rejected not profitable, by then."""
    rows = []
    for length in reviews:
        by = outcomes["review_days"] <= length
        rows.append({
            "review_days": length,
            "rejected_by_check": float(np.mean(by & (outcomes["code"] == Code.CHECK_FAILED.value))),
            "rejected_here": float(np.mean((outcomes["review_days"] == length)
                                           & (outcomes["code"] == Code.CHECK_FAILED.value))),
            "promoted": float(np.mean(by & (outcomes["decision"] == Decision.PROMOTE.value))),
            "not_profitable_at_max": float(np.mean(by & (outcomes["code"] == Code.NOT_PROFITABLE_AT_MAX.value))),
            "not_judged_at_max": float(np.mean(by & (outcomes["code"] == Code.NOT_JUDGED_AT_MAX.value))),
        })
    return pd.DataFrame(rows)


def stressed_costs(equity: pd.Series, fills: pd.DataFrame, trades: pd.DataFrame, factor: float, *,
                   calendar: str = "XNYS", starting_equity: float | None = None) -> pd.DataFrame:
    """Daily records as if every fill had cost ``factor`` times what it did (the extra out of equity)."""
    if factor <= 0:
        raise PromotionError(f"cost factor {factor}: expected a positive multiple of the realised costs")
    stressed = fills.copy()
    cost = fills["cost_bps"].to_numpy(dtype=float)
    stressed["cost_bps"] = cost * factor
    extra = (factor - 1.0) * np.abs(cost) / 1e4 * np.abs(fills["quantity"].to_numpy(float)) \
        * fills["price"].to_numpy(float)
    order = np.argsort(fills["ts_ns"].to_numpy("int64"), kind="stable")
    fill_ts, extra = fills["ts_ns"].to_numpy("int64")[order], extra[order]
    paid = np.concatenate([[0.0], np.cumsum(extra)])
    eq_ts = equity.index.as_unit("ns").asi8
    lowered = equity.to_numpy(float) - paid[np.searchsorted(fill_ts, eq_ts, side="right")]
    if np.any(lowered <= 0):
        raise PromotionError(f"costs x{factor} exhaust the equity; the stress cannot be simulated")
    return daily_records(pd.Series(lowered, index=equity.index), stressed, trades, calendar=calendar,
                         starting_equity=starting_equity)


def zero_sharpe(daily: pd.DataFrame) -> pd.DataFrame:
    """The daily records with their returns' mean removed: the same trading without its edge."""
    out = daily.copy()
    out["ret"] = daily["ret"] - daily["ret"].mean()
    return out


def gate_error_rates(backtest: Any, thresholds: GateThresholds | None = None, *, n_paths: int = 1000,
                     seed: int = 1, cost_factor: float = 2.0, calendar: str | None = None) -> pd.DataFrame:
    """What the gate can and cannot see, per review, from simulation on ``backtest`` (a BacktestResult).

    One row per scenario (genuine, costs x ``cost_factor``, zero Sharpe) and review:
    ``rejected_by_check`` (the share caught by a check by that review: the false-rejection
    rate for the genuine strategy, the power for the others), ``promoted`` and
    ``not_profitable_at_max`` (counted apart: no check's error).
    """
    daily = backtest.daily
    calendar = calendar or daily.attrs.get("calendar", "XNYS")
    if thresholds is None:
        thresholds = calibrate_gate(daily)
    stressed = stressed_costs(backtest.equity, backtest.fills, backtest.trades, cost_factor, calendar=calendar,
                              starting_equity=float(daily["equity"].iloc[0] / (1 + daily["ret"].iloc[0])))
    scenarios = {"genuine": daily, f"costs x{cost_factor:g}": stressed, "zero Sharpe": zero_sharpe(daily)}
    frames = []
    for name, records in scenarios.items():
        outcomes = simulate_gate(records, thresholds, n_paths=n_paths, seed=seed)
        rates = rates_by_review(outcomes, thresholds.reviews)
        rates.insert(0, "scenario", name)
        frames.append(rates)
    table = pd.concat(frames, ignore_index=True)
    table.attrs.update({"alpha": thresholds.alpha, "n_paths": n_paths, "seed": seed})
    return table


__all__ = ["gate_error_rates", "rates_by_review", "simulate_gate", "stressed_costs", "zero_sharpe"]
