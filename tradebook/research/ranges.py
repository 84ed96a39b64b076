"""Ranges of 30-day metrics: what a backtest says a 30-trading-day window of paper should look like.

Two estimates of each window metric's distribution over ``window_days`` trading days, from a
backtest's daily records (:func:`tradebook.research.metrics.daily_records`), with the metrics'
one definition (:func:`~tradebook.research.metrics.window_metrics_array`):

- ``rolling``: every window of ``window_days`` consecutive days of the history (overlapping,
  one per start day);
- ``bootstrap``: ``n_boot`` paths of ``window_days`` days drawn by the stationary block
  bootstrap (Politis & Romano; ``arch.bootstrap.StationaryBootstrap``), each day resampled
  with its own fills and trades, blocks of geometric length with mean ``block_length`` (by
  default arch's ``optimal_block_length`` of the daily returns, rounded up): the dependence
  of days on the days before them (a position held over days) is kept within a block.

Each metric's 5th, 25th, 50th, 75th and 95th percentiles per method form its band (NaNs, e.g.
a win rate in a window without a closed trade, are left out and ``n_windows`` counts the
windows that have a value; a Sortino of +inf, a window without a losing day, is kept). They
are bands for people to read; the promotion gate calibrates its own joint thresholds
(tradebook.promotion).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tradebook.errors import ResearchError

PERCENTILES = (5, 25, 50, 75, 95)
METHODS = ("rolling", "bootstrap")


@dataclass(eq=False)
class MetricRanges:
    """Bands of each window metric by method; ``values[method]`` holds every window's metrics."""

    window_days: int
    n_days: int
    block_length: float
    n_boot: int
    seed: int
    values: dict[str, pd.DataFrame] = field(repr=False)  # method -> one row per window/path, one column per metric

    @property
    def table(self) -> pd.DataFrame:
        """One row per (metric, method): p05, p25, p50, p75, p95 and the windows with a value."""
        rows = []
        for method in METHODS:
            frame = self.values[method]
            for metric in frame.columns:
                column = frame[metric].to_numpy(dtype=np.float64)
                known = np.sort(column[~np.isnan(column)])  # +inf kept: a Sortino without a losing day
                if len(known):
                    with np.errstate(invalid="ignore"):
                        bands = np.percentile(known, PERCENTILES)
                    # between two infinities the interpolation is NaN: the band is infinite there
                    bands = np.where(np.isnan(bands), np.inf, bands)
                else:
                    bands = np.full(len(PERCENTILES), np.nan)
                rows.append({"metric": metric, "method": method,
                             **{f"p{p:02d}": float(v) for p, v in zip(PERCENTILES, bands)}, "n_windows": len(known)})
        table = pd.DataFrame(rows).set_index(["metric", "method"])
        order = list(self.values[METHODS[0]].columns)
        return table.reindex(pd.MultiIndex.from_product([order, METHODS], names=["metric", "method"]))

    def band(self, metric: str, method: str = "bootstrap") -> tuple[float, float]:
        """(p05, p95) of ``metric`` by ``method``."""
        row = self.table.loc[(metric, method)]
        return float(row["p05"]), float(row["p95"])

    def save(self, store: Any, backtest_id: str) -> int:
        """Write the bands to research_ranges for ``backtest_id`` (replacing this window length's); rows written."""
        table = self.table.reset_index()
        table.insert(0, "backtest_id", str(backtest_id))
        table.insert(2, "window_days", int(self.window_days))
        table = table[["backtest_id", "method", "window_days", "metric", "p05", "p25", "p50", "p75", "p95",
                       "n_windows"]]
        known = store.query("SELECT 1 FROM research_backtests WHERE backtest_id = ?", [str(backtest_id)])
        if known.empty:
            raise ResearchError(f"no backtest {backtest_id!r} in the store; save the backtest first "
                                "(BacktestResult.save(store) returns its id)")
        with store.transaction() as con:
            con.execute("DELETE FROM research_ranges WHERE backtest_id = ? AND window_days = ?",
                        [str(backtest_id), int(self.window_days)])
            con.register("_research_ranges", table)
            try:
                con.execute("INSERT INTO research_ranges SELECT * FROM _research_ranges")
            finally:
                con.unregister("_research_ranges")
        return len(table)

    def __repr__(self) -> str:
        return (f"<MetricRanges {self.window_days}-day windows of {self.n_days} days: "
                f"{len(self.values['rolling'])} rolling, {self.n_boot} bootstrap paths (block {self.block_length:g})>")


def load_ranges(store: Any, backtest_id: str, window_days: int = 30) -> pd.DataFrame:
    """The stored bands of a backtest (the ``table`` layout); empty when none were saved."""
    frame = store.query("SELECT metric, method, p05, p25, p50, p75, p95, n_windows FROM research_ranges "
                        "WHERE backtest_id = ? AND window_days = ? ORDER BY metric, method",
                        [str(backtest_id), int(window_days)])
    return frame.set_index(["metric", "method"])


def _daily_of(result_or_daily: Any) -> pd.DataFrame:
    from tradebook.research.metrics import DAILY_COLUMNS

    daily = getattr(result_or_daily, "daily", result_or_daily)
    if daily is None:
        raise ResearchError("this backtest has no daily records (a sweep trial kept without its fills); use the "
                            "sweep's best, or backtest() these parameters")
    if not isinstance(daily, pd.DataFrame):
        raise ResearchError(f"metric_ranges takes a BacktestResult or its daily records, got "
                            f"{type(result_or_daily).__name__}")
    missing = [c for c in DAILY_COLUMNS if c not in daily.columns]
    if missing:
        raise ResearchError(f"the daily records lack {missing}; expected the columns of daily_records()")
    return daily


def default_block_length(returns: np.ndarray) -> float:
    """arch's optimal mean block length of the stationary bootstrap for ``returns``, rounded up (at least 1)."""
    from arch.bootstrap import optimal_block_length

    if len(returns) < 10 or not np.nanstd(returns) > 0:
        return 1.0
    value = float(optimal_block_length(np.asarray(returns, dtype=np.float64))["stationary"].iloc[0])
    return float(max(1, math.ceil(value))) if math.isfinite(value) else 1.0


def metric_ranges(result_or_daily: Any, *, window_days: int = 30, n_boot: int = 2000, seed: int = 0,
                  block_length: float | None = None, periods_per_year: int | None = None) -> MetricRanges:
    """Rolling and stationary-bootstrap distributions of each window metric over ``window_days`` days.

    ``result_or_daily``: a BacktestResult (its ``daily``) or a daily records frame. Needs at
    least two windows of days (ResearchError naming how many there are). ``periods_per_year``:
    for annualising (default from the records' calendar: 252, 365 for 24/7).
    """
    from arch.bootstrap import StationaryBootstrap

    from tradebook.research.metrics import DAILY_COLUMNS, window_metrics_array
    from tradebook.research.metrics import periods_per_year as ppy_of

    daily = _daily_of(result_or_daily)
    if isinstance(window_days, bool) or not isinstance(window_days, (int, np.integer)) or window_days < 2:
        raise ResearchError(f"window_days is {window_days!r}; expected a whole number of trading days >= 2")
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ResearchError(f"n_boot is {n_boot!r}; expected a positive number of bootstrap paths")
    n_days = len(daily)
    if n_days < 2 * window_days:
        raise ResearchError(f"the backtest has {n_days} trading days; ranges of {window_days}-day windows need at "
                            f"least {2 * window_days} (two windows): backtest a longer history or shorten the window")
    if periods_per_year is None:
        periods_per_year = ppy_of(daily.attrs.get("calendar", "XNYS"))
    arrays = {c: daily[c].to_numpy(dtype=np.float64) for c in DAILY_COLUMNS}

    # rolling: every window of consecutive days
    rolling = {c: np.lib.stride_tricks.sliding_window_view(v, window_days) for c, v in arrays.items()}
    rolling_values = window_metrics_array(rolling, periods_per_year=periods_per_year)

    # bootstrap: paths of days drawn jointly (a day keeps its fills and trades), arch's stationary bootstrap
    if block_length is None:
        block_length = default_block_length(arrays["ret"])
    if not (isinstance(block_length, (int, float, np.floating)) and block_length >= 1):
        raise ResearchError(f"block_length is {block_length!r}; expected a mean block length >= 1 day")
    bootstrap = StationaryBootstrap(block_length, np.arange(n_days), seed=np.random.default_rng(seed))
    paths = np.empty((n_boot, window_days), dtype=np.int64)
    for k in range(n_boot):
        # a stationary bootstrap's draw is stationary: its first window_days days are a path of that length
        paths[k] = bootstrap.update_indices()[:window_days]
    boot_values = window_metrics_array({c: v[paths] for c, v in arrays.items()}, periods_per_year=periods_per_year)

    def frame(values: dict[str, np.ndarray]) -> pd.DataFrame:
        return pd.DataFrame({k: v for k, v in values.items() if k != "cost_residual_sd_bps"})

    return MetricRanges(int(window_days), n_days, float(block_length), int(n_boot), int(seed),
                        {"rolling": frame(rolling_values), "bootstrap": frame(boot_values)})


__all__ = ["METHODS", "PERCENTILES", "MetricRanges", "default_block_length", "load_ranges", "metric_ranges"]
