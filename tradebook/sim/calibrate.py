"""Fit the marketable-cost part of a FillModel from real sweeps, and measure it on held-out sweeps.

A sweep is the group of real aggressive trades from one match event: same exchange
match time (or receive time where the data has no exchange clock) and same aggressor
side (see :func:`tradebook.sim.truth.sweeps`). Its cost against the mid just before it
is the truth a marketable paper order must reproduce.

Costs are fitted in bps of the mid, as the half-spread plus a quantile of the excess in
units of (half-spread + the recent one-second volatility of the mid) when the quotes are
given (:func:`recent_vol_bps`, from the minute before each sweep: nothing after it),
else in half-spreads (the earlier form). Sizes are over the touch displayed at the
decision. Both units are the instrument's own, so the curve carries to another day or
instrument of the asset class.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from tradebook.errors import DataError, UnknownInstrumentError
from tradebook.model.instruments import get_instrument
from tradebook.sim.fill_model import (
    DEFAULT_BASE_SLIPPAGE_BPS,
    QUANTILES,
    SCALE_HALF_SPREAD,
    SCALE_SPREAD_VOL,
    SIZE_BUCKET_EDGES,
    CostCurve,
    FillModel,
    baseline_model,
)

MIN_SWEEPS_PER_BUCKET = 20
_REQUIRED = ("cost_bps", "half_spread_bps", "size_over_touch", "quantity", "touch_size")
VOL_COLUMN = "recent_vol_bps"
VOL_WINDOW_NS = 60_000_000_000  # the volatility of the minute before the decision, per second
MIN_VOL_RETURNS = 5  # one-second returns needed for a volatility
_SECOND = 1_000_000_000


def recent_vol_bps(quotes: pd.DataFrame, ts_ns: np.ndarray) -> np.ndarray:
    """The one-second volatility of the mid (bps) over the minute before each of ``ts_ns``.

    The mid of the last valid quote (bid < ask) sampled every second; the root mean
    square of the one-second log returns between the samples in ``(t - 60 s, t]``, over
    the part of that minute the data covers (a capture shorter than a minute still has
    one). NaN with fewer than :data:`MIN_VOL_RETURNS` returns. Prices enter as log
    returns: the unit is the instrument's own.
    """
    for column in ("ts_ns", "bid_px", "ask_px"):
        if column not in quotes.columns:
            raise DataError(f"recent_vol_bps: quotes lack {column!r}; expected ts_ns, bid_px, ask_px")
    ts = quotes["ts_ns"].to_numpy(dtype=np.int64)
    bid = quotes["bid_px"].to_numpy(dtype=np.float64, na_value=np.nan)
    ask = quotes["ask_px"].to_numpy(dtype=np.float64, na_value=np.nan)
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(bid) & np.isfinite(ask) & (bid > 0) & (bid < ask)
    when = np.asarray(ts_ns, dtype=np.int64)
    out = np.full(len(when), np.nan)
    if valid.sum() < 2:
        return out
    ts, mid = ts[valid], ((bid + ask) / 2)[valid]
    grid = np.arange((ts[0] // _SECOND + 1) * _SECOND, ts[-1] + _SECOND, _SECOND, dtype=np.int64)
    sampled = mid[np.searchsorted(ts, grid, side="right") - 1]
    squared = np.concatenate([[0.0], np.cumsum(np.diff(np.log(sampled)) ** 2)])
    last = np.searchsorted(grid, when, side="right") - 1  # the last sample at or before t
    first = np.searchsorted(grid, when - VOL_WINDOW_NS, side="right") - 1
    first = np.clip(first, 0, None)
    count = last - first
    enough = (last >= 0) & (count >= MIN_VOL_RETURNS)
    lo, hi = first[enough], last[enough]
    out[enough] = np.sqrt((squared[hi] - squared[lo]) / count[enough]) * 1e4
    return out


def with_recent_vol(sweeps: pd.DataFrame, quotes: pd.DataFrame) -> pd.DataFrame:
    """``sweeps`` with a ``recent_vol_bps`` column from ``quotes`` (see :func:`recent_vol_bps`)."""
    if "ts_ns" not in sweeps.columns:
        raise DataError("sweeps frame lacks ts_ns; build it with tradebook.sim.truth.sweeps")
    out = sweeps.copy()
    out[VOL_COLUMN] = recent_vol_bps(quotes, sweeps["ts_ns"].to_numpy(dtype=np.int64)) if len(sweeps) else []
    return out


def pool_sweeps(captures: dict[str, tuple[pd.DataFrame, pd.DataFrame | None]]) -> pd.DataFrame:
    """Sweeps of several captures of one asset class, in units that carry, as one fit set.

    ``captures`` maps a label (the capture's instrument id, or id and day) to its sweeps
    (:func:`tradebook.sim.truth.sweeps`) and quotes: each capture's recent volatility
    comes from its own quotes (None: in half-spreads, then for every capture). Rows keep
    a ``capture`` column and are ordered by time. Pass the instrument ids as
    ``fitted_on`` to :func:`calibrate_marketable`. Raises DataError when the captures
    mix quotes and no quotes, or hold no sweep.
    """
    if not captures:
        raise DataError("pool_sweeps: no captures; expected {label: (sweeps, quotes)}")
    with_quotes = {label: quotes is not None for label, (_, quotes) in captures.items()}
    if len(set(with_quotes.values())) > 1:
        raise DataError(f"pool_sweeps: some captures come with quotes and some without ({with_quotes}); the pool "
                        "needs one unit: give every capture its quotes")
    parts = []
    for label, (swept, quotes) in captures.items():
        if not len(swept):
            continue
        part = with_recent_vol(swept, quotes) if quotes is not None else swept.copy()
        part["capture"] = label
        parts.append(part)
    if not parts:
        raise DataError(f"pool_sweeps: none of the captures {list(captures)} has a sweep")
    return pd.concat(parts, ignore_index=True).sort_values("ts_ns", kind="stable").reset_index(drop=True)


def _vol(sweeps: pd.DataFrame) -> np.ndarray | None:
    return sweeps[VOL_COLUMN].to_numpy(dtype=np.float64) if VOL_COLUMN in sweeps.columns else None


def _check_sweeps(sweeps: pd.DataFrame, what: str) -> pd.DataFrame:
    missing = [c for c in _REQUIRED if c not in sweeps.columns]
    if missing:
        raise DataError(f"{what}: sweeps frame lacks {missing}; build it with tradebook.sim.truth.sweeps")
    usable = sweeps[(sweeps["half_spread_bps"] > 0) & np.isfinite(sweeps["cost_bps"])
                    & np.isfinite(sweeps["size_over_touch"])]
    if usable.empty:
        raise DataError(f"{what}: no usable sweeps (every prevailing quote crossed, locked or missing); "
                        "expected trades with a valid quote before them")
    return usable


def fit_cost_curve(sweeps: pd.DataFrame, edges: tuple[float, ...] = SIZE_BUCKET_EDGES,
                   min_count: int = MIN_SWEEPS_PER_BUCKET,
                   interval_levels: tuple[float, float] = (0.05, 0.95)) -> CostCurve:
    """Quantiles of cost per size-over-touch bucket, monotone non-decreasing in size.

    With a ``recent_vol_bps`` column (:func:`with_recent_vol`) the quantiles are of
    (cost - half-spread) / (half-spread + recent vol), over the sweeps whose volatility is
    known; without, of cost / half-spread (the earlier form).

    Buckets with fewer than ``min_count`` sweeps borrow from their neighbours: smaller
    sizes take the nearest populated larger bucket, larger sizes extrapolate the last
    populated bucket with a square-root law in size (the usual shape of impact), and
    carry a count of 0 so the report can say the value is extrapolated.
    """
    usable = _check_sweeps(sweeps, "fit_cost_curve")
    low_level, high_level = interval_levels
    if not 0 < low_level < 0.5 < high_level < 1:
        raise DataError(f"interval_levels {interval_levels!r}; expected (low, high) with 0 < low < 0.5 < high < 1")
    levels = (low_level, 0.5, high_level)
    vol = _vol(usable)
    scale = SCALE_HALF_SPREAD if vol is None else SCALE_SPREAD_VOL
    if vol is None:
        ratio = (usable["cost_bps"] / usable["half_spread_bps"]).to_numpy()
    else:
        known = np.isfinite(vol)
        if not known.any():
            raise DataError(f"fit_cost_curve: none of the {len(usable)} sweeps has a recent volatility (each came "
                            "less than a minute after the first quote); expected quotes reaching a minute back")
        usable, vol = usable[known], vol[known]
        hs = usable["half_spread_bps"].to_numpy()
        ratio = (usable["cost_bps"].to_numpy() - hs) / (hs + np.maximum(vol, 0.0))
    x = usable["size_over_touch"].to_numpy()
    n_buckets = len(edges) - 1
    bucket = np.clip(np.searchsorted(np.asarray(edges), x, side="right") - 1, 0, n_buckets - 1)
    counts = np.bincount(bucket, minlength=n_buckets)
    table = np.full((len(QUANTILES), n_buckets), np.nan)
    for b in range(n_buckets):
        if counts[b] >= min_count:
            table[:, b] = np.quantile(ratio[bucket == b], levels)
    populated = np.flatnonzero(~np.isnan(table[1]))
    if len(populated) == 0:
        # too few sweeps for any bucket: one pooled estimate for every size
        table[:] = np.quantile(ratio, levels)[:, None]
        populated = np.arange(n_buckets)
    first, last = populated[0], populated[-1]
    table[:, :first] = table[:, [first]]
    mids = np.array([(lo + hi) / 2 if np.isfinite(hi) else lo * 1.5 for lo, hi in zip(edges[:-1], edges[1:])])
    for b in range(last + 1, n_buckets):
        growth = np.sqrt(mids[b] / max(mids[last], 1e-12))
        table[:, b] = np.maximum(table[:, last] * growth, table[:, last])
    for b in range(first, last + 1):  # interior gaps: carry the smaller bucket forward
        if np.isnan(table[1, b]):
            table[:, b] = table[:, b - 1]
    # The median and the upper bound never fall as size grows; the lower bound is left as
    # fitted: larger sweeps spread wider both ways (stale quotes, hidden liquidity), and
    # lifting it would make their interval too narrow.
    table[1:] = np.maximum.accumulate(table[1:], axis=1)
    table[0] = np.minimum(table[0], table[1])  # keep q05 <= q50 <= q95
    counts_out = tuple(int(c) if c >= min_count else 0 for c in counts)
    return CostCurve(tuple(float(e) for e in edges), *(tuple(float(v) for v in row) for row in table), counts_out,
                     interval_levels=(float(low_level), float(high_level)), scale=scale)


# Interval levels tried when validating inside the fit slice, the nominal 90% first.
_CANDIDATE_LEVELS = ((0.05, 0.95), (0.075, 0.925), (0.1, 0.9), (0.04, 0.96), (0.03, 0.97), (0.025, 0.975),
                     (0.02, 0.98), (0.015, 0.985), (0.01, 0.99), (0.005, 0.995))


def validated_interval_levels(sweeps: pd.DataFrame, target: float = 0.90) -> tuple[float, float]:
    """Quantile levels whose interval covers closest to ``target`` of later sweeps, inside the fit data.

    Sweeps are split by time (first 2/3 fit, last 1/3 check): costs drift, so quantiles
    fitted on the past cover more or less of the future than their nominal 90%.
    Choosing the levels on a held-back part of the *fit* slice keeps the evaluation
    slice untouched (split-conformal calibration of the interval). Ties keep the
    nominal levels: where most costs sit exactly at the half-spread, coverage hardly
    moves with the levels.
    """
    usable = _check_sweeps(sweeps, "validated_interval_levels").sort_values("ts_ns", kind="stable")
    cut = (2 * len(usable)) // 3
    early, late = usable.iloc[:cut], usable.iloc[cut:]
    if len(early) < MIN_SWEEPS_PER_BUCKET or len(late) < MIN_SWEEPS_PER_BUCKET:
        return _CANDIDATE_LEVELS[0]
    cost = late["cost_bps"].to_numpy()
    hs, size, touch = (late[c].to_numpy() for c in ("half_spread_bps", "quantity", "touch_size"))
    vol = _vol(late)
    eps = 1e-9 * np.maximum(np.abs(cost), 1.0)
    best, best_gap = _CANDIDATE_LEVELS[0], np.inf
    for levels in _CANDIDATE_LEVELS:
        model = FillModel("validation", 1.0, fit_cost_curve(early, interval_levels=levels))
        low = model.marketable_cost_bps(size, hs, touch, 0.05, vol)
        high = model.marketable_cost_bps(size, hs, touch, 0.95, vol)
        gap = abs(np.mean((low - eps <= cost) & (cost <= high + eps)) - target)
        if gap < best_gap - 1e-3:
            best, best_gap = levels, gap
    return best


MEDIAN_GAIN_REQUIRED = 0.10  # a fitted median is kept only when it beats the touch by this much, held back
MEDIANS = ("fitted", "touch", "validated")


def fitted_median_validated(sweeps: pd.DataFrame, gain: float = MEDIAN_GAIN_REQUIRED) -> bool:
    """Whether a fitted cost median beats the touch on later sweeps held back from the fit data.

    The sweeps are split by time (first 2/3 fit, last 1/3 held back, as in
    :func:`validated_interval_levels`); the median fitted on the first part must have an
    MAE below ``(1 - gain)`` times the touch's (the half-spread) in *each* half of the
    held-back part. Otherwise the touch is as good as the model there and is the median:
    on the bundled data the sweep median at the touch is as good as any fitted median on
    four of five instruments, and a fitted excess that wins on one stretch loses on the
    next. Fewer than :data:`MIN_SWEEPS_PER_BUCKET` sweeps in a part: False (the touch).
    Only fit data is read: the evaluation slice stays untouched.
    """
    usable = _check_sweeps(sweeps, "fitted_median_validated").sort_values("ts_ns", kind="stable")
    cut = (2 * len(usable)) // 3
    early, late = usable.iloc[:cut], usable.iloc[cut:]
    half = len(late) // 2
    if len(early) < MIN_SWEEPS_PER_BUCKET or half < MIN_SWEEPS_PER_BUCKET:
        return False
    try:
        model = FillModel("validation", 1.0, fit_cost_curve(early))
    except DataError:
        return False
    cost = late["cost_bps"].to_numpy()
    hs, size, touch = (late[c].to_numpy() for c in ("half_spread_bps", "quantity", "touch_size"))
    vol = _vol(late)
    if vol is not None:
        known = np.isfinite(vol)
        cost, hs, size, touch, vol = cost[known], hs[known], size[known], touch[known], vol[known]
        half = len(cost) // 2
        if half < MIN_SWEEPS_PER_BUCKET:
            return False
    err_model = np.abs(cost - model.marketable_cost_bps(size, hs, touch, 0.5, vol))
    err_touch = np.abs(cost - hs)
    return all(err_model[part].mean() < (1.0 - gain) * err_touch[part].mean()
               for part in (slice(0, half), slice(half, None)))


def median_at_touch(curve: CostCurve) -> CostCurve:
    """``curve`` with its median at the touch for every size (the interval widened to hold it)."""
    touch = 1.0 if curve.scale == SCALE_HALF_SPREAD else 0.0  # in half-spreads, or the excess over it
    return replace(curve, q05=tuple(min(v, touch) for v in curve.q05), q50=tuple(touch for _ in curve.q50),
                   q95=tuple(max(v, touch) for v in curve.q95))


def calibrate_marketable(
    instrument_id: str,
    tick_size: float,
    sweeps: pd.DataFrame,
    quotes: pd.DataFrame | None = None,
    *,
    median: str = "fitted",
    **model_fields,
) -> FillModel:
    """A FillModel whose marketable costs are fitted from ``sweeps``.

    With ``quotes`` (the same instrument's, covering the sweeps) costs are fitted in units
    of the half-spread plus the recent volatility (:func:`with_recent_vol`); score the
    model with :func:`evaluate_marketable` given the scored data's quotes too.

    The model records what it was fitted on: ``fitted_on`` (default the one instrument;
    pass every id when ``sweeps`` pools several captures of an asset class) and
    ``asset_class`` (default: the registered instrument's, '' when it is not registered).

    ``median``: 'fitted' keeps the fitted median cost per size; 'touch' puts it at the
    touch (the interval stays fitted); 'validated' keeps the fitted one only where it
    beats the touch on sweeps held back from ``sweeps`` (:func:`fitted_median_validated`),
    what :func:`tradebook.sim.fidelity.calibrate_instrument` uses.
    """
    if median not in MEDIANS:
        raise DataError(f"median={median!r}; expected one of {MEDIANS}")
    if quotes is not None:
        sweeps = with_recent_vol(sweeps, quotes)
    usable = _check_sweeps(sweeps, f"calibrating {instrument_id}")
    model_fields.setdefault("fitted_on", (instrument_id,))
    model_fields["fitted_on"] = tuple(model_fields["fitted_on"])
    if "asset_class" not in model_fields:
        model_fields["asset_class"] = asset_class_of(model_fields["fitted_on"])
    curve = fit_cost_curve(usable, interval_levels=validated_interval_levels(usable))
    if median == "touch" or (median == "validated" and not fitted_median_validated(usable)):
        curve = median_at_touch(curve)
    share, ratio = price_improvement(usable)
    reach = float(np.nanquantile(usable["size_over_touch"].to_numpy(dtype=np.float64), 0.99))
    model_fields.setdefault("max_take_over_touch", max(1.0, reach))
    return FillModel(instrument_id, float(tick_size), curve, price_improvement_share=share,
                     price_improvement_ratio=ratio, **model_fields)


def asset_class_of(instrument_ids: tuple[str, ...] | list[str]) -> str:
    """The one asset class of registered instruments ``instrument_ids`` ('' when none is registered).

    Raises DataError when they span several asset classes: a pooled calibration is of one.
    """
    classes = set()
    for instrument_id in instrument_ids:
        try:
            classes.add(str(get_instrument(instrument_id).asset_class))
        except UnknownInstrumentError:
            continue
    if len(classes) > 1:
        raise DataError(f"a calibration pools captures of one asset class; {list(instrument_ids)} span "
                        f"{sorted(classes)}")
    return classes.pop() if classes else ""


def price_improvement(sweeps: pd.DataFrame) -> tuple[float, float]:
    """How often touch-sized sweeps print inside the spread, and by how much (median, in half-spreads).

    Hidden and midpoint liquidity make this common in US equities (a fill at the mid
    improves by one half-spread); venues without it show ~0.
    """
    small = sweeps[sweeps["size_over_touch"] <= 1.0]
    if not len(small) or "inside_spread" not in small:
        return 0.0, 0.0
    inside = small[small["inside_spread"].to_numpy(dtype=bool)]
    if not len(inside):
        return 0.0, 0.0
    improvement = (inside["price_improvement_bps"] / inside["half_spread_bps"]).to_numpy()
    return float(len(inside) / len(small)), float(np.median(improvement))


@dataclass(frozen=True)
class MarketableFidelity:
    """How well predicted costs match real sweeps that the model was not fitted on."""

    n: int
    mae_model_bps: float
    mae_touch_plus_slippage_bps: float  # baseline (a)
    mae_touch_bps: float  # baseline (b) on L1 data: everything at the touch
    coverage_closed: float
    coverage_open: float
    mean_cost_bps: float
    inside_spread_share_real: float  # of touch-sized sweeps (size <= touch)
    inside_spread_share_predicted: float
    improvement_ratio_real: float  # median improvement of those inside, in half-spreads
    improvement_ratio_predicted: float

    @property
    def ratio_to_baseline_a(self) -> float:
        return self.mae_model_bps / self.mae_touch_plus_slippage_bps if self.mae_touch_plus_slippage_bps else np.nan

    def targets(self) -> dict[str, tuple[float, str, bool]]:
        """Each issue-3 target: (value, the rule, met?)."""
        return {
            "MAE / baseline (a) MAE": (self.ratio_to_baseline_a, "<= 0.10", self.ratio_to_baseline_a <= 0.10),
            "90% interval coverage, closed": (self.coverage_closed, ">= 0.85", self.coverage_closed >= 0.85),
            "90% interval coverage, open": (self.coverage_open, "<= 0.95", self.coverage_open <= 0.95),
        }


def _scored(model: FillModel, sweeps: pd.DataFrame, quotes: pd.DataFrame | None, what: str) -> pd.DataFrame:
    if quotes is not None and model.cost_curve.scale == SCALE_SPREAD_VOL:
        sweeps = with_recent_vol(sweeps, quotes)
    elif model.cost_curve.scale == SCALE_SPREAD_VOL and VOL_COLUMN not in sweeps.columns:
        raise DataError(f"{what}: the model's costs are in units of the recent volatility; pass the scored "
                        "data's quotes (or sweeps with a recent_vol_bps column, with_recent_vol)")
    return _check_sweeps(sweeps, what)


def prediction_inputs(sweeps: pd.DataFrame, quotes: pd.DataFrame | None, trades: pd.DataFrame | None = None,
                      vol: np.ndarray | None = None) -> dict:
    """What predictions of ``sweeps``' costs read of the scored data (:mod:`tradebook.sim.staleness`).

    Keyword arguments of :meth:`FillModel.marketable_cost_bps`: the recent volatility
    (``vol`` when the sweeps carry it, else from ``quotes``); with quotes, the staleness of a
    sampled feed's snapshots; with quotes and trades, how far the prints since each sweep's
    quote show the book moved.
    """
    if quotes is None:
        return {"recent_vol_bps": vol}
    from tradebook.sim.staleness import stale_age_ns, sweep_trade_shift_bps

    ts = sweeps["ts_ns"].to_numpy(np.int64)
    out = {"recent_vol_bps": recent_vol_bps(quotes, ts) if vol is None else vol, "stale_ns": stale_age_ns(quotes, ts)}
    if trades is not None:
        out["trade_shift_bps"] = sweep_trade_shift_bps(sweeps, quotes, trades)
    return out


def evaluate_marketable(model: FillModel, sweeps: pd.DataFrame,
                        slippage_bps: float = DEFAULT_BASE_SLIPPAGE_BPS,
                        quotes: pd.DataFrame | None = None,
                        trades: pd.DataFrame | None = None) -> MarketableFidelity:
    """Compare the model and both baselines with real held-out sweeps.

    ``quotes`` and ``trades``: the scored data's, for the recent volatility, a sampled
    feed's staleness and the prints since each sweep's quote (:mod:`tradebook.sim.staleness`).
    """
    usable = _scored(model, sweeps, quotes, f"evaluating {model.instrument_id}")
    cost = usable["cost_bps"].to_numpy()
    hs = usable["half_spread_bps"].to_numpy()
    size, touch = usable["quantity"].to_numpy(), usable["touch_size"].to_numpy()
    inputs = prediction_inputs(usable, quotes, trades, _vol(usable))
    predicted = model.marketable_cost_bps(size, hs, touch, 0.5, **inputs)
    low = model.marketable_cost_bps(size, hs, touch, 0.05, **inputs)
    high = model.marketable_cost_bps(size, hs, touch, 0.95, **inputs)
    baseline_a = baseline_model(model.instrument_id, model.tick_size, slippage_bps).marketable_cost_bps(size, hs, touch)
    # Costs at exactly the half-spread differ from its prediction only by float rounding.
    eps = 1e-9 * np.maximum(np.abs(cost), 1.0)
    share, ratio = price_improvement(usable)
    return MarketableFidelity(
        n=len(cost),
        mae_model_bps=float(np.mean(np.abs(cost - predicted))),
        mae_touch_plus_slippage_bps=float(np.mean(np.abs(cost - baseline_a))),
        mae_touch_bps=float(np.mean(np.abs(cost - hs))),
        coverage_closed=float(np.mean((low - eps <= cost) & (cost <= high + eps))),
        coverage_open=float(np.mean((low + eps < cost) & (cost < high - eps))),
        mean_cost_bps=float(np.mean(cost)),
        inside_spread_share_real=share,
        inside_spread_share_predicted=float(model.price_improvement_share),
        improvement_ratio_real=ratio,
        improvement_ratio_predicted=float(model.price_improvement_ratio),
    )


def marketable_by_size(model: FillModel, sweeps: pd.DataFrame,
                       slippage_bps: float = DEFAULT_BASE_SLIPPAGE_BPS,
                       quotes: pd.DataFrame | None = None,
                       trades: pd.DataFrame | None = None) -> pd.DataFrame:
    """Real and predicted costs per size-over-touch bucket (the table behind the cost-curve plot).

    One row per bucket with sweeps: ``size_over_touch`` (bucket's lower edge),
    ``size_mid`` (a point inside it, for log axes), ``n``,
    ``real_median_bps``, ``real_mean_bps``, ``model_median_bps``, ``model_q05_bps``,
    ``model_q95_bps`` (medians over the bucket's sweeps of the per-sweep prediction),
    ``baseline_a_bps``, ``baseline_b_bps`` and each one's MAE in the bucket.
    """
    usable = _scored(model, sweeps, quotes, f"costs by size for {model.instrument_id}")
    cost = usable["cost_bps"].to_numpy()
    hs, size, touch = (usable[c].to_numpy() for c in ("half_spread_bps", "quantity", "touch_size"))
    inputs = prediction_inputs(usable, quotes, trades, _vol(usable))
    predicted = {q: model.marketable_cost_bps(size, hs, touch, q, **inputs) for q in QUANTILES}
    baseline_a = hs + slippage_bps
    bucket = model.cost_curve.bucket(usable["size_over_touch"].to_numpy())
    frame = pd.DataFrame({"bucket": bucket, "cost": cost, "median": predicted[0.5], "q05": predicted[0.05],
                          "q95": predicted[0.95], "a": baseline_a, "b": hs})
    frame["err_model"] = (frame["cost"] - frame["median"]).abs()
    frame["err_a"] = (frame["cost"] - frame["a"]).abs()
    frame["err_b"] = (frame["cost"] - frame["b"]).abs()
    grouped = frame.groupby("bucket")
    out = pd.DataFrame({
        "size_over_touch": [model.cost_curve.edges[b] for b in grouped.groups],
        "size_mid": [_bucket_mid(model.cost_curve.edges, b) for b in grouped.groups],
        "n": grouped.size().to_numpy(),
        "real_median_bps": grouped["cost"].median().to_numpy(),
        "real_mean_bps": grouped["cost"].mean().to_numpy(),
        "model_median_bps": grouped["median"].median().to_numpy(),
        "model_q05_bps": grouped["q05"].median().to_numpy(),
        "model_q95_bps": grouped["q95"].median().to_numpy(),
        "baseline_a_bps": grouped["a"].median().to_numpy(),
        "baseline_b_bps": grouped["b"].median().to_numpy(),
        "mae_model_bps": grouped["err_model"].mean().to_numpy(),
        "mae_baseline_a_bps": grouped["err_a"].mean().to_numpy(),
        "mae_baseline_b_bps": grouped["err_b"].mean().to_numpy(),
    })
    return out


def _bucket_mid(edges: tuple[float, ...], b: int) -> float:
    # a positive point inside the bucket, for log-scaled plots
    low, high = edges[b], edges[b + 1]
    if low <= 0:
        return high / 2
    return low * 1.5 if not np.isfinite(high) else float(np.sqrt(low * high))
