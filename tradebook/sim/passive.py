"""Resting limit orders: will one placed now be filled within the horizon, and how sure are we?

The truth comes from :func:`tradebook.sim.truth.passive_outcomes` where the feed has
trades, and from :func:`tradebook.sim.placements.quote_through_outcomes` where it has quotes only (spot FX): a
resting buy at ``L`` fills when the offer comes down to ``L``. The model predicts that
outcome at placement from what an L1 feed shows then (queue ahead, imbalance, spread,
recent activity and volatility), one ridge logistic regression per (distance,
horizon) cell whose penalty a forward test inside the fit data chooses (an infinite
one leaves the cell's average rate). Its reference is :class:`PassiveBaseline`, the
fill rate per cell alone; :func:`evaluate_passive` scores both on held-out
placements (Brier score, reliability curve).

Times are int64 UTC nanoseconds; a quote "at" placement is the last one stamped at or
before it, as in :func:`passive_outcomes`. The placements and their features are built in
:mod:`tradebook.sim.placements`.

Units that carry: distances and the spread are in ticks of the instrument's own tick,
volatility over the horizon in those ticks, and sizes (the queue, the volume traded
over the horizon) in multiples of the instrument's own *recent* touch size at the
placement (:func:`tradebook.sim.depth.recent_touch_size`, nothing after it), so a model
fitted on one instrument reads another of the same asset class the same way once
applied to it (:meth:`PassiveModel.for_instrument`). A model of the earlier format
(``touch_unit_tau_ns == 0``) measured sizes in a fixed ``touch_size_unit`` of the fit
instrument and is for that instrument only. The horizon is a parameter of the
prediction: a horizon between two fitted ones interpolates their logits in log time;
outside the fitted range the nearest fitted horizon's cell is used (with the features,
which are all measured over the horizon itself, computed at the asked horizon).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from tradebook.errors import DataError
from tradebook.model.time import NS_PER_SECOND
from tradebook.sim.placements import FEATURES

# Tolerance, in ticks, for a quote to count as "at" a limit price (as in truth.py).
RELIABILITY_BINS = 10
# A cell whose fit slice holds fewer fills (or fewer misses) than this predicts its
# average rate: a regression on a handful of events only adds noise.
MIN_EVENTS_PER_CELL = 8
RIDGE_GRID: tuple[float, ...] = (0.3, 1.0, 3.0, 10.0, 30.0)  # per independent horizon window
VALIDATION_SHARE = 0.35  # the later part of the fit data that chooses each cell's penalty
Z_CLIP = 4.0  # standardised features are held within +-4 standard deviations of the fit

# The pooled base every cell adjusts: one logistic regression over all distances and
# horizons on features in units that carry (distance over the volatility of the horizon,
# the queue over the volume of the horizon, the horizon itself, joining vs behind the touch).
POOLED_FEATURES: tuple[str, ...] = ("gap_over_vol_pooled", "queue_over_volume", "log_horizon_s", "behind_touch")
POOLED_RIDGE = 1.0  # per 1,000 fit rows, on the standardised coefficients


def _pooled_design(frame: pd.DataFrame) -> np.ndarray:
    """The :data:`POOLED_FEATURES` of each row (a missing queue/volume, as without trades, sits at 0)."""
    missing = [c for c in ("distance_ticks", "spread_ticks", "vol_ticks", "horizon_ns") if c not in frame.columns]
    if missing:
        raise DataError(f"passive model: frame lacks {missing}; build it with placement_features() or "
                        "passive_dataset()")
    distance = frame["distance_ticks"].to_numpy(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        gap = np.log1p((distance + frame["spread_ticks"].to_numpy(np.float64) / 2)
                       / (frame["vol_ticks"].to_numpy(np.float64) + 1.0))
        horizon = np.log(frame["horizon_ns"].to_numpy(np.float64) / NS_PER_SECOND)
    queue = (frame["queue_over_volume_log"].to_numpy(np.float64) if "queue_over_volume_log" in frame.columns
             else np.full(len(frame), np.nan))
    x = np.column_stack([gap, np.nan_to_num(queue, nan=0.0), horizon, (distance > 0).astype(np.float64)])
    return np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)


# -- models ------------------------------------------------------------------------------
def _check_dataset(frame: pd.DataFrame, what: str, need_outcome: bool = True) -> None:
    needed = ["distance_ticks", "horizon_ns"] + (["filled"] if need_outcome else [])
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise DataError(f"{what}: frame lacks {missing}; build it with passive_dataset()")
    if not len(frame):
        raise DataError(f"{what}: no rows; expected placements with outcomes")


def _cell_index(distance: np.ndarray, horizon: np.ndarray, distances: tuple[int, ...],
                horizons: tuple[int, ...]) -> np.ndarray:
    """Cell number ``d * len(horizons) + h`` of each row: the largest fitted distance at or below its own,
    and the fitted horizon nearest in log time."""
    if (horizon <= 0).any():
        raise DataError(f"horizon_ns {int(horizon[horizon <= 0][0])}; expected a positive horizon in nanoseconds")
    d_index = np.searchsorted(np.asarray(distances), distance, side="right") - 1
    if (d_index < 0).any():
        raise DataError(f"distance {int(distance[d_index < 0][0])} is below the smallest fitted distance "
                        f"{distances[0]}")
    log_h = np.log(np.asarray(horizons, dtype=np.float64))
    h_index = np.abs(np.log(horizon.astype(np.float64))[:, None] - log_h[None, :]).argmin(axis=1)
    return d_index * len(horizons) + h_index


@dataclass(frozen=True)
class PassiveBaseline:
    """The reference model: each (distance, horizon) cell's average fill rate in the fit slice."""

    distances: tuple[int, ...]
    horizons_ns: tuple[int, ...]
    rates: tuple[float, ...]  # cell d * len(horizons) + h
    counts: tuple[int, ...]

    def fill_probability(self, frame: pd.DataFrame) -> np.ndarray:
        _check_dataset(frame, "PassiveBaseline.fill_probability", need_outcome=False)
        cell = _cell_index(frame["distance_ticks"].to_numpy(np.int64), frame["horizon_ns"].to_numpy(np.int64),
                           self.distances, self.horizons_ns)
        return np.asarray(self.rates)[cell]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> PassiveBaseline:
        return cls(tuple(int(d) for d in raw["distances"]), tuple(int(h) for h in raw["horizons_ns"]),
                   tuple(float(r) for r in raw["rates"]), tuple(int(c) for c in raw["counts"]))


@dataclass(frozen=True)
class PassiveCell:
    """One (distance, horizon) cell: a logistic regression on standardised features."""

    distance_ticks: int
    horizon_ns: int
    n: int
    fill_rate: float
    intercept: float
    ridge: float  # the penalty the forward test chose; inf = the average rate alone
    coefficients: tuple[float, ...]  # one per feature; 0 where the feature was not usable in the fit
    means: tuple[float, ...]  # standardisation, and the value a missing feature takes
    scales: tuple[float, ...]

    def logit(self, x: np.ndarray) -> np.ndarray:
        return self.intercept + _standardise(x, np.asarray(self.means), np.asarray(self.scales)) @ np.asarray(
            self.coefficients)


def _standardise(x: np.ndarray, means: np.ndarray, scales: np.ndarray) -> np.ndarray:
    # A missing feature sits at its fit mean; values far outside the fit range are held
    # at the edge so a regime the fit never saw cannot drive the logit without bound.
    z = (x - means) / scales
    return np.clip(np.where(np.isfinite(z), z, 0.0), -Z_CLIP, Z_CLIP)


@dataclass(frozen=True)
class PassiveModel:
    """Fill probability of a resting limit order at placement, from L1 features (see :data:`FEATURES`)."""

    instrument_id: str
    feature_names: tuple[str, ...]
    distances: tuple[int, ...]
    horizons_ns: tuple[int, ...]
    cells: tuple[PassiveCell, ...]  # cell d * len(horizons) + h
    # The fixed size unit the features were computed in (the earlier format), or None:
    # the recent touch size at each placement, memory touch_unit_tau_ns (units that carry).
    # Pass it to placement_features / passive_dataset as touch_size_unit.
    touch_size_unit: float | None
    rule: str = "trades"  # the truth it was fitted on: 'trades' or 'quote_through'
    touch_unit_tau_ns: int = 0
    fitted_on: str = ""  # the instrument the model was fitted on (instrument_id: the one it is applied to)
    # The pooled base (POOLED_FEATURES) the cells adjust, or None (the earlier form: each
    # cell on its own, its fallback the cell's average rate).
    pooled: PassiveCell | None = None
    # One base per fitted horizon (same features, the horizon fixed), interpolated in log time
    # between fitted horizons; empty: the pooled base reads log(horizon) (the earlier form).
    horizon_bases: tuple[PassiveCell, ...] = ()

    @property
    def carries(self) -> bool:
        """True when sizes are in the instrument's own recent touch size (the model may be applied elsewhere)."""
        return self.touch_unit_tau_ns > 0

    def for_instrument(self, instrument_id: str) -> PassiveModel:
        """This model applied to ``instrument_id``; DataError for a model of the earlier (fixed-unit) format."""
        fit_id = self.fitted_on or self.instrument_id
        if instrument_id != fit_id and not self.carries:
            raise DataError(f"the passive model of {fit_id} measures sizes in its own fixed unit (an earlier format) "
                            f"and cannot be applied to {instrument_id}; recalibrate so sizes are in multiples of "
                            "the recent touch size")
        return replace(self, instrument_id=instrument_id, fitted_on=fit_id if instrument_id != fit_id else "")

    def fill_probability(self, frame: pd.DataFrame) -> np.ndarray:
        """Predicted probability in [0, 1] that each row's order fills within its horizon.

        Rows use the cell of the largest fitted distance at or below theirs. The horizon is
        the row's own: between two fitted horizons the two cells' logits are interpolated
        in log time; outside the fitted range the nearest fitted horizon's cell is used
        (the features are measured over the row's own horizon either way). Raises
        DataError for a horizon <= 0 or features missing from ``frame``.
        """
        _check_dataset(frame, "PassiveModel.fill_probability", need_outcome=False)
        missing = [c for c in self.feature_names if c not in frame.columns]
        if missing:
            raise DataError(f"PassiveModel.fill_probability: frame lacks features {missing}; build it with "
                            "placement_features() or passive_dataset()")
        distance = frame["distance_ticks"].to_numpy(np.int64)
        horizon = frame["horizon_ns"].to_numpy(np.int64)
        if (horizon <= 0).any():
            raise DataError(f"PassiveModel.fill_probability: horizon_ns {int(horizon[horizon <= 0][0])}; expected a "
                            "positive horizon in nanoseconds")
        fitted = np.asarray(self.horizons_ns, dtype=np.int64)
        log_h, log_fit = np.log(horizon.astype(np.float64)), np.log(fitted.astype(np.float64))
        upper = np.clip(np.searchsorted(fitted, horizon, side="left"), 0, len(fitted) - 1)
        lower = np.clip(upper - 1, 0, len(fitted) - 1)
        lower = np.where(horizon >= fitted[upper], upper, lower)
        span = log_fit[upper] - log_fit[lower]
        with np.errstate(invalid="ignore", divide="ignore"):
            weight = np.where(span > 0, (log_h - log_fit[lower]) / span, 0.0)
        weight = np.clip(weight, 0.0, 1.0)
        x = frame[list(self.feature_names)].to_numpy(dtype=np.float64, na_value=np.nan)
        # the pooled base reads the row's own horizon; per-horizon bases and the cells' adjustments are
        # interpolated in log time between the fitted horizons around it
        logit = np.zeros(len(frame)) if self.pooled is None else self.pooled.logit(_pooled_design(frame))
        if self.horizon_bases:
            x_pooled = _pooled_design(frame)
            logit = np.zeros(len(frame))
            for h_index, w in ((lower, 1.0 - weight), (upper, weight)):
                for h in np.unique(h_index):
                    rows = (h_index == h) & (w > 0)
                    if rows.any():
                        logit[rows] += w[rows] * self.horizon_bases[h].logit(x_pooled[rows])
        for h_index, w in ((lower, 1.0 - weight), (upper, weight)):
            cell = _cell_index(distance, fitted[h_index], self.distances, self.horizons_ns)
            for c in np.unique(cell):
                rows = (cell == c) & (w > 0)
                if rows.any():
                    logit[rows] += w[rows] * self.cells[c].logit(x[rows])
        return _probability(logit)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> PassiveModel:
        try:
            cells = tuple(_cell_from_dict(c) for c in raw["cells"])
            return cls(str(raw["instrument_id"]), tuple(str(f) for f in raw["feature_names"]),
                       tuple(int(d) for d in raw["distances"]), tuple(int(h) for h in raw["horizons_ns"]), cells,
                       None if raw["touch_size_unit"] is None else float(raw["touch_size_unit"]),
                       str(raw.get("rule", "trades")),
                       int(raw.get("touch_unit_tau_ns", 0)), str(raw.get("fitted_on", "")),
                       _cell_from_dict(raw["pooled"]) if raw.get("pooled") else None,
                       tuple(_cell_from_dict(c) for c in raw.get("horizon_bases") or ()))
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"not a PassiveModel dict: {exc!r}") from exc


def _cell_from_dict(c: dict[str, Any]) -> PassiveCell:
    return PassiveCell(int(c["distance_ticks"]), int(c["horizon_ns"]), int(c["n"]), float(c["fill_rate"]),
                       float(c["intercept"]), float(c["ridge"]), tuple(float(v) for v in c["coefficients"]),
                       tuple(float(v) for v in c["means"]), tuple(float(v) for v in c["scales"]))


def _grid(frame: pd.DataFrame, distances, horizons_ns) -> tuple[tuple[int, ...], tuple[int, ...]]:
    distances = tuple(sorted({int(d) for d in (frame["distance_ticks"] if distances is None else distances)}))
    horizons = tuple(sorted({int(h) for h in (frame["horizon_ns"] if horizons_ns is None else horizons_ns)}))
    if any(d < 0 for d in distances) or any(h <= 0 for h in horizons):
        raise DataError(f"distances must be >= 0 and horizons > 0, got {distances} and {horizons}")
    return distances, horizons


def _fit_rows(frame: pd.DataFrame, distances, horizons, what: str) -> tuple[np.ndarray, np.ndarray]:
    distance = frame["distance_ticks"].to_numpy(np.int64)
    horizon = frame["horizon_ns"].to_numpy(np.int64)
    # fit only on rows of the grid's horizons; distances between grid points join the bucket below
    on_grid = np.isin(horizon, horizons) & (distance >= distances[0])
    cell = np.full(len(frame), -1, dtype=np.int64)
    cell[on_grid] = _cell_index(distance[on_grid], horizon[on_grid], distances, horizons)
    counts = np.bincount(cell[on_grid], minlength=len(distances) * len(horizons))
    if (counts == 0).any():
        empty = int(np.flatnonzero(counts == 0)[0])
        raise DataError(f"{what}: no rows for distance {distances[empty // len(horizons)]} ticks, horizon "
                        f"{horizons[empty % len(horizons)]} ns; expected every (distance, horizon) cell in the data")
    return cell, counts


def fit_passive_baseline(outcomes: pd.DataFrame, *, distances: tuple[int, ...] | None = None,
                         horizons_ns: tuple[int, ...] | None = None) -> PassiveBaseline:
    """The average fill rate per (distance, horizon) cell (default grid: the cells present in the data)."""
    _check_dataset(outcomes, "fit_passive_baseline")
    distances, horizons = _grid(outcomes, distances, horizons_ns)
    cell, counts = _fit_rows(outcomes, distances, horizons, "fit_passive_baseline")
    filled = outcomes["filled"].to_numpy(dtype=bool)
    used = cell >= 0
    fills = np.bincount(cell[used], weights=filled[used].astype(np.float64), minlength=len(counts))
    return PassiveBaseline(distances, horizons, tuple(float(v) for v in fills / counts),
                           tuple(int(c) for c in counts))


def fit_passive_model(
    outcomes_with_features: pd.DataFrame,
    *,
    distances: tuple[int, ...] | None = None,
    horizons_ns: tuple[int, ...] | None = None,
    features: tuple[str, ...] = FEATURES,
    ridges: tuple[float, ...] = RIDGE_GRID,
    validation_share: float = VALIDATION_SHARE,
    instrument_id: str = "",
    pooled: bool = True,
    adjust_cells: bool = False,
    per_horizon: bool = True,
) -> PassiveModel:
    """One ridge-penalised logistic regression per (distance, horizon) cell, fitted by IRLS.

    With ``pooled`` (the default) the cells adjust a pooled base: one logistic
    regression over every row on :data:`POOLED_FEATURES` (units that carry, the horizon
    one of them); each cell's regression then fits the rest on top of the base's logit,
    its intercept penalised like its coefficients, and an infinite penalty leaves the
    base alone. Cells adjust the base only with ``adjust_cells``: measured on the bundled
    transfers (Brier / reference (c), 14 transfers), the base alone scores 0.96-1.013
    everywhere; cells on their own (``pooled=False``, the earlier form, falling back on
    each cell's average rate) 1.32 on BTCUSDT 2021 -> 2024, 1.79 on 2024 -> 2021 and 1.13
    on ESU4 -> ESH4; cells adjusting the base 1.18, 1.54 and 1.00 there (their forward
    test inside one capture keeps slopes that do not carry to another), while gaining at
    most 0.01 inside a capture.

    With ``per_horizon`` (the default, with ``pooled``) that base is fitted once per
    fitted horizon (the same features, the horizon held fixed) and read between fitted
    horizons by interpolating the logits in log time, as the cells are: how the fill rate
    grows with the horizon need not be log-linear, and a longer fitted horizon than the
    one asked no longer bends the slopes at the shorter ones. Measured on the bundled
    transfers (Brier / reference (c)): ESH4 -> ESU4 (fitted at 5/30/120 s, scored at 5/30 s)
    1.062 -> 1.000, BTCUSDT 2024 half/half 1.015 -> 1.003, ESU4 half/half 1.013 -> 1.005,
    no transfer above 1.005.

    The grid defaults to the cells present in the data. Features are standardised per
    cell (mean and scale stored in the model); a feature missing or constant in a cell
    gets coefficient 0, and a missing value later sits at the cell's mean.

    The penalty on the squared standardised coefficients is chosen per cell by a
    forward test inside the fit data: fit on the earlier ``1 - validation_share`` of its
    time span (rows whose horizon ends before the cut), score the Brier on the later
    part, for each of ``ridges`` and for the average rate alone (an infinite penalty),
    and refit the winner on every row. Outcomes of overlapping placements are strongly
    correlated, so the fit holds far fewer independent events than rows, and features
    that separated fills in the first minutes may say nothing later; the forward test
    keeps a regression only where it helped on data it had not seen. A cell with fewer
    than :data:`MIN_EVENTS_PER_CELL` fills or misses predicts its average rate.
    """
    frame = outcomes_with_features
    _check_dataset(frame, "fit_passive_model")
    missing = [c for c in (*features, "placement_ts_ns") if c not in frame.columns]
    if missing:
        raise DataError(f"fit_passive_model: frame lacks features or times {missing}; build it with passive_dataset()")
    ridges = tuple(float(r) for r in ridges)
    if any(not np.isfinite(r) or r < 0 for r in ridges):
        raise DataError(f"ridges are {ridges!r}; expected finite penalties >= 0")
    if not 0 < validation_share < 1:
        raise DataError(f"validation_share is {validation_share!r}; expected a share strictly between 0 and 1")
    distances, horizons = _grid(frame, distances, horizons_ns)
    cell, counts = _fit_rows(frame, distances, horizons, "fit_passive_model")
    x_all = frame[list(features)].to_numpy(dtype=np.float64, na_value=np.nan)
    y_all = frame["filled"].to_numpy(dtype=bool).astype(np.float64)
    ts_all = frame["placement_ts_ns"].to_numpy(dtype=np.int64)
    base = None
    offset_all = None
    horizon_bases: tuple[PassiveCell, ...] = ()
    if pooled:
        x_pooled = _pooled_design(frame)
        base = _fit_cell(x_pooled, y_all, -1, 0, POOLED_RIDGE * len(y_all) / 1000.0)
        offset_all = base.logit(x_pooled)
        if per_horizon:
            horizon_all = frame["horizon_ns"].to_numpy(np.int64)
            fitted = []
            for horizon in horizons:
                rows = horizon_all == horizon
                fitted.append(_fit_cell(x_pooled[rows], y_all[rows], -1, horizon,
                                        POOLED_RIDGE * rows.sum() / 1000.0))
                offset_all[rows] = fitted[-1].logit(x_pooled[rows])
            horizon_bases = tuple(fitted)
    cells = []
    for c in range(len(counts)):
        rows = cell == c
        distance, horizon = distances[c // len(horizons)], horizons[c % len(horizons)]
        x, y, ts = x_all[rows], y_all[rows], ts_all[rows]
        offset = None if offset_all is None else offset_all[rows]
        # Penalties are per independent window, not per row: placements closer than the
        # horizon share most of their future, so n rows carry about span/horizon draws.
        independent = min(len(y), max(1.0, (ts.max() - ts.min()) / horizon))
        overlap = len(y) / independent
        grid = () if pooled and not adjust_cells else tuple(r * overlap for r in ridges)
        ridge = _select_ridge(x, y, ts, horizon, grid, validation_share, offset)
        cells.append(_fit_cell(x, y, distance, horizon, ridge, offset))
    raw_unit = frame.attrs.get("touch_size_unit")
    unit = float("nan") if raw_unit is None else float(raw_unit)
    tau = int(frame.attrs.get("touch_unit_tau_ns", 0)) if not np.isfinite(unit) else 0
    rule = str(frame.attrs.get("rule", "trades"))
    return PassiveModel(instrument_id, tuple(features), distances, horizons, tuple(cells),
                        unit if np.isfinite(unit) else (None if tau > 0 else 0.0), rule, tau, pooled=base,
                        horizon_bases=horizon_bases)


def _select_ridge(x: np.ndarray, y: np.ndarray, ts: np.ndarray, horizon: int, ridges: tuple[float, ...],
                  validation_share: float, offset: np.ndarray | None = None) -> float:
    """The penalty with the best forward-validated Brier score; inf (the average rate) unless one beats it."""
    cut = ts.min() + (1 - validation_share) * (ts.max() - ts.min())
    train, test = ts + horizon <= cut, ts > cut
    if train.sum() < 2 or test.sum() < 2:
        return float("inf")
    if offset is None:
        best, best_score = float("inf"), float(np.mean((y[train].mean() - y[test]) ** 2))
    else:  # an infinite penalty leaves the pooled base alone
        best, best_score = float("inf"), float(np.mean((_probability(offset[test]) - y[test]) ** 2))
    for ridge in ridges:
        trial = _fit_cell(x[train], y[train], 0, horizon, ridge, None if offset is None else offset[train])
        extra = 0.0 if offset is None else offset[test]
        score = float(np.mean((_probability(trial.logit(x[test]) + extra) - y[test]) ** 2))
        if score < best_score:
            best, best_score = ridge, score
    return best


def _probability(logit: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(logit, -40.0, 40.0)))


def _fit_cell(x: np.ndarray, y: np.ndarray, distance: int, horizon: int, ridge: float,
              offset: np.ndarray | None = None) -> PassiveCell:
    """A ridge logistic regression; with ``offset`` (the pooled base's logit) it fits what the base leaves,
    its intercept penalised too, and the fallback is the base alone (intercept and coefficients 0)."""
    n, k = x.shape
    rate = float(y.mean())
    finite = np.isfinite(x)
    with np.errstate(invalid="ignore"):
        means = np.array([x[finite[:, j], j].mean() if finite[:, j].any() else 0.0 for j in range(k)])
        scales = np.array([x[finite[:, j], j].std() if finite[:, j].any() else 0.0 for j in range(k)])
    usable = scales > 1e-12
    scales = np.where(usable, scales, 1.0)
    coefficients = np.zeros(k)
    fills = y.sum()
    if offset is not None and (min(fills, n - fills) < MIN_EVENTS_PER_CELL or not np.isfinite(ridge)):
        return PassiveCell(distance, horizon, n, rate, 0.0, float("inf"), tuple(coefficients.tolist()),
                           tuple(means.tolist()), tuple(scales.tolist()))
    if min(fills, n - fills) < MIN_EVENTS_PER_CELL or not usable.any() or not np.isfinite(ridge):
        clipped = min(max(rate, 1e-9), 1 - 1e-9)
        return PassiveCell(distance, horizon, n, rate, float(np.log(clipped / (1 - clipped))), float("inf"),
                           tuple(coefficients.tolist()), tuple(means.tolist()), tuple(scales.tolist()))
    z = _standardise(x[:, usable], means[usable], scales[usable])
    design = np.column_stack([np.ones(n), z])
    penalty = np.full(design.shape[1], ridge)
    beta = np.zeros(design.shape[1])
    base = np.zeros(n) if offset is None else np.asarray(offset, dtype=np.float64)
    if offset is None:
        penalty[0] = 0.0
        beta[0] = np.log(rate / (1 - rate))

    for _ in range(100):  # Newton / IRLS on the penalised log-likelihood
        p = _probability(base + design @ beta)
        gradient = design.T @ (y - p) - penalty * beta
        hessian = (design * (p * (1 - p))[:, None]).T @ design + np.diag(penalty)
        step = np.linalg.solve(hessian + 1e-9 * np.eye(len(beta)), gradient)
        beta += step
        if np.max(np.abs(step)) < 1e-8:
            break
    coefficients[usable] = beta[1:]
    return PassiveCell(distance, horizon, n, rate, float(beta[0]), float(ridge), tuple(coefficients.tolist()),
                       tuple(means.tolist()), tuple(scales.tolist()))


# -- fidelity ------------------------------------------------------------------------------
@dataclass(frozen=True)
class PassiveFidelity:
    """Fill probabilities against real outcomes the model was not fitted on."""

    n: int
    fill_rate: float
    brier_model: float
    brier_baseline: float
    # per cell: (distance_ticks, horizon_ns, n, observed rate, brier_model, brier_baseline)
    cells: tuple[tuple[int, int, int, float, float, float], ...]
    # per probability bin [i/10, (i+1)/10): (mean predicted, observed rate, count); NaN where empty
    reliability_model: tuple[tuple[float, float, int], ...]
    reliability_baseline: tuple[tuple[float, float, int], ...]

    @property
    def brier_skill(self) -> float:
        """1 - model / baseline: the share of the baseline's error the model removes."""
        return 1.0 - self.brier_model / self.brier_baseline if self.brier_baseline else float("nan")

    def cell_table(self) -> pd.DataFrame:
        return pd.DataFrame(list(self.cells), columns=["distance_ticks", "horizon_ns", "n", "fill_rate",
                                                       "brier_model", "brier_baseline"])

    def reliability_table(self) -> pd.DataFrame:
        edges = np.linspace(0.0, 1.0, RELIABILITY_BINS + 1)
        parts = []
        for name, curve in (("model", self.reliability_model), ("baseline", self.reliability_baseline)):
            part = pd.DataFrame(list(curve), columns=["mean_predicted", "observed_rate", "count"])
            part.insert(0, "bin_high", edges[1:])
            part.insert(0, "bin_low", edges[:-1])
            part.insert(0, "model", name)
            parts.append(part)
        return pd.concat(parts, ignore_index=True)

    def targets(self) -> dict[str, tuple[float, str, bool]]:
        """The issue-3 passive target: (value, the rule, met?)."""
        return {
            "Brier vs average-rate model": (self.brier_model, f"< {self.brier_baseline:.4f}",
                                            bool(self.brier_model < self.brier_baseline)),
        }


def reliability_curve(predicted: np.ndarray, observed: np.ndarray,
                      bins: int = RELIABILITY_BINS) -> tuple[tuple[float, float, int], ...]:
    """(mean predicted, observed rate, count) per equal-width probability bin; the last bin includes 1."""
    predicted = np.asarray(predicted, dtype=np.float64)
    observed = np.asarray(observed, dtype=np.float64)
    index = np.clip((predicted * bins).astype(np.int64), 0, bins - 1)
    count = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_predicted = np.bincount(index, weights=predicted, minlength=bins) / count
        rate = np.bincount(index, weights=observed, minlength=bins) / count
    return tuple((float(m), float(r), int(c)) for m, r, c in zip(mean_predicted, rate, count))


def evaluate_passive(model: PassiveModel, baseline: PassiveBaseline,
                     outcomes_with_features: pd.DataFrame) -> PassiveFidelity:
    """Brier scores (overall and per cell) and reliability curves of the model and the average-rate baseline."""
    frame = outcomes_with_features
    _check_dataset(frame, "evaluate_passive")
    if "valid" in frame.columns and not frame["valid"].to_numpy(dtype=bool).all():
        raise DataError("evaluate_passive: frame holds invalid placements (no valid quote); keep valid rows only")
    y = frame["filled"].to_numpy(dtype=bool).astype(np.float64)
    p_model = model.fill_probability(frame)
    p_base = baseline.fill_probability(frame)
    error_model, error_base = (p_model - y) ** 2, (p_base - y) ** 2
    cells = []
    keys = frame[["distance_ticks", "horizon_ns"]].to_numpy(np.int64)
    for distance, horizon in sorted({(int(d), int(h)) for d, h in keys}):
        rows = (keys[:, 0] == distance) & (keys[:, 1] == horizon)
        cells.append((distance, horizon, int(rows.sum()), float(y[rows].mean()), float(error_model[rows].mean()),
                      float(error_base[rows].mean())))
    return PassiveFidelity(
        n=len(y),
        fill_rate=float(y.mean()),
        brier_model=float(error_model.mean()),
        brier_baseline=float(error_base.mean()),
        cells=tuple(cells),
        reliability_model=reliability_curve(p_model, y),
        reliability_baseline=reliability_curve(p_base, y),
    )
