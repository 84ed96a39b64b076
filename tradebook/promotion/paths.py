"""Stationary-bootstrap paths of a backtest's daily records, and their metrics at each review.

A path is a sequence of backtest days drawn in blocks of random (geometric) length
(Politis & Romano's stationary bootstrap, wrapping around the end): each drawn day
brings its whole record along (its return, fills, trades, costs), so the joint
behaviour of return, trading activity and cost residuals within a day is kept, and the
blocks keep their autocorrelation. The mean block length comes from Politis & White's
automatic selection (``arch.bootstrap.optimal_block_length``) on the daily return, the
fills, the trades and the turnover, the longest of the four.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from tradebook.errors import PromotionError
from tradebook.research.metrics import DAILY_COLUMNS, window_metrics_array

# metrics arrays need these columns of the daily records
_PATH_COLUMNS = tuple(c for c in DAILY_COLUMNS if c not in ("equity", "notional"))


def block_length(daily: pd.DataFrame) -> float:
    """Mean block length for the stationary bootstrap of ``daily`` (>= 1, at most a quarter of the days)."""
    from arch.bootstrap import optimal_block_length

    columns = [c for c in ("ret", "n_fills", "n_trades", "turnover") if daily[c].std() > 0]
    if not columns:
        return 1.0
    lengths = optimal_block_length(daily[columns].to_numpy(dtype=float))["stationary"].to_numpy()
    lengths = lengths[np.isfinite(lengths)]
    top = max(1.0, len(daily) / 4)
    return float(np.clip(lengths.max(), 1.0, top)) if len(lengths) else 1.0


def stationary_indices(n_days: int, n_paths: int, length: int, mean_block: float,
                       rng: np.random.Generator) -> np.ndarray:
    """(n_paths x length) day indices: blocks start at a random day and end with probability 1/mean_block."""
    if n_days < 1 or n_paths < 1 or length < 1:
        raise PromotionError(f"bootstrap of {n_days} days into {n_paths} paths of {length}: all must be positive")
    idx = np.empty((n_paths, length), dtype=np.int64)
    idx[:, 0] = rng.integers(0, n_days, n_paths)
    new_block = rng.random((n_paths, length)) < 1.0 / max(mean_block, 1.0)
    starts = rng.integers(0, n_days, (n_paths, length))
    for t in range(1, length):
        idx[:, t] = np.where(new_block[:, t], starts[:, t], (idx[:, t - 1] + 1) % n_days)
    return idx


def day_arrays(daily: pd.DataFrame) -> dict[str, np.ndarray]:
    """The daily records' columns the metrics need, as float arrays."""
    missing = [c for c in _PATH_COLUMNS if c not in daily.columns]
    if missing:
        raise PromotionError(f"daily records lack {missing}; expected the columns of research.metrics.daily_records")
    return {c: daily[c].to_numpy(dtype=float) for c in _PATH_COLUMNS}


def bootstrap_paths(daily: pd.DataFrame | Mapping[str, np.ndarray], *, n_paths: int, length: int,
                    mean_block: float, seed: int | np.random.SeedSequence) -> dict[str, np.ndarray]:
    """``n_paths`` stationary-bootstrap paths of ``length`` days: column -> (paths x days) array."""
    arrays = day_arrays(daily) if isinstance(daily, pd.DataFrame) else dict(daily)
    n_days = len(arrays["ret"])
    idx = stationary_indices(n_days, n_paths, length, mean_block, np.random.default_rng(seed))
    return {c: a[idx] for c, a in arrays.items()}


def review_metrics(paths: Mapping[str, np.ndarray], reviews: Sequence[int], *,
                   periods_per_year: int) -> list[dict[str, np.ndarray]]:
    """window metrics of each path's first L days, for each review length L."""
    return [window_metrics_array({c: a[:, :length] for c, a in paths.items()}, periods_per_year=periods_per_year)
            for length in reviews]


__all__ = ["block_length", "bootstrap_paths", "day_arrays", "review_metrics", "stationary_indices"]
