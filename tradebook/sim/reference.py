"""Reference (c) of the fidelity report: the simple models any user could fit in an afternoon.

The calibrated FillModel has to beat more than the peers' hand-set baselines ((a) touch
plus 2 bps, (b) the touch walking visible depth). It has to be at least as good as a
plain statistical fit of the same data, in units that carry:

- :class:`CostReference`: linear quantile regressions (5%, 50%, 95%) of the cost of a
  marketable order *above the half-spread*, in bps of the mid, on ``log(size/touch)``
  and the recent volatility of the mid (bps over the last minute, from quotes before
  the order). Predicted cost = half-spread + that excess.
- :class:`FillReference`: a logistic regression of "filled within the horizon" on the
  distance to cross over the volatility expected over the horizon, the queue ahead
  over the volume expected over the horizon (both from data before the placement),
  and ``log(horizon)``.

Both are fitted with scikit-learn on the fit slice and never see the scored data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tradebook.errors import DataError

BPS = 1e4
VOL_LOOKBACK_NS = 60 * 1_000_000_000
COST_QUANTILES = (0.05, 0.5, 0.95)
MAX_FIT_ROWS = 4000  # quantile regression is a linear programme: a random subset this large is plenty


def recent_volatility_bps(quotes: pd.DataFrame, ts_ns: np.ndarray, lookback_ns: int = VOL_LOOKBACK_NS) -> np.ndarray:
    """Realised volatility of the mid, in bps, over the ``lookback_ns`` before each of ``ts_ns``.

    Only quotes stamped strictly before each time count (nothing after the decision), two-sided
    and uncrossed ones only; where the lookback reaches before the first quote the sum covers
    what there is.
    """
    for column in ("ts_ns", "bid_px", "ask_px"):
        if column not in quotes.columns:
            raise DataError(f"quotes lack {column!r}; expected ts_ns, bid_px, ask_px")
    if lookback_ns <= 0:
        raise DataError(f"lookback_ns is {lookback_ns!r}; expected a positive number of nanoseconds")
    q_ts = quotes["ts_ns"].to_numpy(np.int64)
    bid, ask = quotes["bid_px"].to_numpy(np.float64), quotes["ask_px"].to_numpy(np.float64)
    ok = np.isfinite(bid) & np.isfinite(ask) & (bid < ask)
    q_ts, mid = q_ts[ok], np.log((bid[ok] + ask[ok]) / 2)
    moves = np.r_[0.0, np.cumsum(np.diff(mid) ** 2)] if len(mid) else np.zeros(1)
    ts = np.asarray(ts_ns, dtype=np.int64)
    now = np.searchsorted(q_ts, ts, side="left") - 1  # last quote strictly before
    then = np.searchsorted(q_ts, ts - lookback_ns, side="left") - 1
    now_c, then_c = np.clip(now, 0, None), np.clip(then, 0, None)
    variance = np.where(now >= 0, moves[now_c] - moves[then_c], np.nan) if len(mid) else np.full(len(ts), np.nan)
    return np.sqrt(np.maximum(variance, 0.0)) * BPS


def _cost_design(size_over_touch: np.ndarray, vol_bps: np.ndarray) -> np.ndarray:
    x = np.asarray(size_over_touch, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_size = np.log(np.clip(x, 1e-3, 1e4))
    vol = np.nan_to_num(np.asarray(vol_bps, dtype=np.float64), nan=0.0)
    return np.column_stack([log_size, np.log1p(vol)])


@dataclass(frozen=True)
class CostReference:
    """Quantile regressions of excess cost (bps above the half-spread) on log(size/touch) and recent volatility."""

    quantiles: tuple[float, ...]
    intercepts: tuple[float, ...]
    coefficients: tuple[tuple[float, float], ...]
    n_fit: int

    def cost_bps(self, size_over_touch: np.ndarray, half_spread_bps: np.ndarray, vol_bps: np.ndarray,
                 quantile: float = 0.5) -> np.ndarray:
        """Predicted cost against the mid, in bps, at ``quantile`` (one of :attr:`quantiles`)."""
        if quantile not in self.quantiles:
            raise DataError(f"quantile {quantile!r} was not fitted; expected one of {self.quantiles}")
        j = self.quantiles.index(quantile)
        x = _cost_design(size_over_touch, vol_bps)
        excess = self.intercepts[j] + x @ np.asarray(self.coefficients[j])
        return np.asarray(half_spread_bps, dtype=np.float64) + excess


def fit_cost_reference(size_over_touch: np.ndarray, half_spread_bps: np.ndarray, vol_bps: np.ndarray,
                       cost_bps: np.ndarray, *, seed: int = 0,
                       quantiles: tuple[float, ...] = COST_QUANTILES) -> CostReference:
    """Fit :class:`CostReference` on marketable orders with known costs (sweeps or true book walks)."""
    from sklearn.linear_model import QuantileRegressor

    x = _cost_design(size_over_touch, vol_bps)
    y = np.asarray(cost_bps, dtype=np.float64) - np.asarray(half_spread_bps, dtype=np.float64)
    keep = np.isfinite(y) & np.isfinite(x).all(axis=1)
    if keep.sum() < 10:
        raise DataError(f"the cost reference needs at least 10 orders with a known cost, got {int(keep.sum())}")
    x, y = x[keep], y[keep]
    if len(y) > MAX_FIT_ROWS:
        pick = np.sort(np.random.default_rng(seed).choice(len(y), MAX_FIT_ROWS, replace=False))
        x, y = x[pick], y[pick]
    intercepts, coefficients = [], []
    for q in quantiles:
        fit = QuantileRegressor(quantile=q, alpha=0.0, solver="highs").fit(x, y)
        intercepts.append(float(fit.intercept_))
        coefficients.append(tuple(float(c) for c in fit.coef_))
    return CostReference(tuple(quantiles), tuple(intercepts), tuple(coefficients), int(len(y)))


_FILL_NEEDS = ("distance_ticks", "spread_ticks", "vol_ticks", "horizon_s", "filled")


def _fill_design(frame: pd.DataFrame) -> np.ndarray:
    missing = [c for c in _FILL_NEEDS[:-1] if c not in frame.columns]
    if missing:
        raise DataError(f"placements lack {missing}; expected tradebook.sim.placements.passive_dataset columns")
    distance = frame["distance_ticks"].to_numpy(np.float64)
    spread = frame["spread_ticks"].to_numpy(np.float64)
    vol = frame["vol_ticks"].to_numpy(np.float64)
    gap_over_vol = np.log1p((distance + spread / 2) / (vol + 1.0))
    if "queue_rel_log" in frame.columns and "trade_rate_log" in frame.columns:
        # log(queue / (unit + volume over the last horizon)): the queue against the volume to expect
        queue_over_volume = frame["queue_rel_log"].to_numpy(np.float64) - frame["trade_rate_log"].to_numpy(np.float64)
    else:
        queue_over_volume = np.zeros(len(frame))
    horizon = np.log(frame["horizon_s"].to_numpy(np.float64))
    x = np.column_stack([gap_over_vol, np.nan_to_num(queue_over_volume, nan=0.0), horizon,
                         (distance > 0).astype(np.float64)])
    return np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)


@dataclass(frozen=True)
class FillReference:
    """A logistic fill model on distance/volatility, queue/expected volume and horizon."""

    means: tuple[float, ...]
    scales: tuple[float, ...]
    intercept: float
    coefficients: tuple[float, ...]
    n_fit: int

    def fill_probability(self, frame: pd.DataFrame) -> np.ndarray:
        x = (_fill_design(frame) - np.asarray(self.means)) / np.asarray(self.scales)
        logit = self.intercept + x @ np.asarray(self.coefficients)
        return 1.0 / (1.0 + np.exp(-np.clip(logit, -40, 40)))


def fit_fill_reference(placements: pd.DataFrame) -> FillReference:
    """Fit :class:`FillReference` on placements with outcomes (:func:`tradebook.sim.placements.passive_dataset`)."""
    from sklearn.linear_model import LogisticRegression

    if "filled" not in placements.columns or not len(placements):
        raise DataError("the fill reference needs placements with a 'filled' outcome; got none")
    x = _fill_design(placements)
    y = placements["filled"].to_numpy(dtype=bool)
    means, scales = x.mean(axis=0), x.std(axis=0)
    scales = np.where(scales > 0, scales, 1.0)
    z = (x - means) / scales
    if y.all() or not y.any():  # one class only: the rate itself
        rate = float(np.clip(y.mean(), 1e-4, 1 - 1e-4))
        return FillReference(tuple(means), tuple(scales), float(np.log(rate / (1 - rate))),
                             tuple(0.0 for _ in means), int(len(y)))
    fit = LogisticRegression(C=1.0, max_iter=2000).fit(z, y)
    return FillReference(tuple(float(m) for m in means), tuple(float(s) for s in scales), float(fit.intercept_[0]),
                         tuple(float(c) for c in fit.coef_[0]), int(len(y)))


def brier(probability: np.ndarray, outcome: np.ndarray) -> np.ndarray:
    """Per-row squared error of a probability against a 0/1 outcome."""
    return (np.asarray(probability, dtype=np.float64) - np.asarray(outcome, dtype=np.float64)) ** 2


def describe(reference: Any) -> str:
    """One line saying what a reference holds."""
    if isinstance(reference, CostReference):
        med = reference.quantiles.index(0.5) if 0.5 in reference.quantiles else 0
        a, b = reference.coefficients[med]
        return (f"cost reference (c): median excess = {reference.intercepts[med]:.3f} + {a:.3f} log(size/touch) + "
                f"{b:.3f} log1p(vol 1 min, bps) on {reference.n_fit:,} orders")
    if isinstance(reference, FillReference):
        return f"fill reference (c): logistic on 4 features, {reference.n_fit:,} placements"
    raise DataError(f"not a reference model: {type(reference).__name__}")
