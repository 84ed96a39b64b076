"""Market-condition profiles: what the spread and the touch look like, and how fast liquidity comes back.

Two small fitted models, plain data like the rest of the fill model:

- :class:`SpreadProfile` - spread (bps and ticks) and top-of-book size quantiles by
  time of day (UTC buckets) and by volatility regime (terciles of realised
  volatility), so a simulator can draw a spread for a quiet lunch hour or a busy
  open instead of one number for the day;
- :class:`CompletionModel` - orders larger than the touch fill in parts: how many
  partial fills, and how long until the whole order is done at a participation rate.

Quotes are **time-weighted**: a quote counts for the time it was in force (until the
next update), not once per update message. Feeds update far more often when the
market is busy (and a burst of updates says more about the feed than the market),
so counting messages would weight the busy, often wider, moments too much. A quote's
time is split at time-of-day bucket boundaries, so a quote in force across a
boundary counts in both buckets. The last quote of the frame has no known end and
counts for nothing; crossed, locked or one-sided quotes count for nothing either
(they end the quote before them). Times are int64 UTC ns.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd

from tradebook.data.frames import quote_columns
from tradebook.errors import DataError
from tradebook.model.instruments import Instrument, get_instrument
from tradebook.model.time import NS_PER_DAY
from tradebook.sim.book import as_ns_array
from tradebook.sim.fill_model import DictRecord
from tradebook.sim.truth import regular_hours_mask, trade_sides

BPS = 1e4
NS_PER_S = 1_000_000_000
NS_PER_MINUTE = 60 * NS_PER_S
QUANTILES = (0.05, 0.5, 0.95)
DEFAULT_BUCKET_MINUTES = 30
DEFAULT_VOL_WINDOW_NS = 60 * NS_PER_S  # realised volatility over the trailing minute
VOL_SAMPLE_NS = NS_PER_S  # mid sampled each second for realised volatility: immune to feed update rates
ALL = -1  # the bucket or regime index of the rows that pool every bucket or regime


# -- shared helpers ------------------------------------------------------------------------
def _instrument(instrument: Instrument | str) -> Instrument:
    return get_instrument(instrument) if isinstance(instrument, str) else instrument


def _quote_arrays(quotes: pd.DataFrame, what: str) -> dict[str, np.ndarray]:
    """ts_ns, bid/ask prices and sizes from an L1 frame (bid_px...) or a top-N book (bid_px_0...)."""
    if quotes is None or not len(quotes):
        raise DataError(f"{what}: the quotes frame is empty; expected L1 quotes (ts_ns, bid_px, ask_px, ...)")
    try:
        columns = quote_columns(quotes)
    except DataError as exc:
        raise DataError(f"{what}: {exc}") from None
    if "ts_ns" not in quotes.columns:
        raise DataError(f"{what}: quotes lack ts_ns; expected int64 UTC nanoseconds")
    ts = as_ns_array(quotes["ts_ns"].to_numpy(), "quotes ts_ns")
    if (np.diff(ts) < 0).any():
        raise DataError(f"{what}: quotes ts_ns goes backwards; expected non-decreasing ts_ns")
    out = {"ts_ns": ts}
    for name, column in columns.items():
        out[name] = (quotes[column].to_numpy(dtype=np.float64, na_value=np.nan) if column in quotes.columns
                     else np.full(len(ts), np.nan))
    with np.errstate(invalid="ignore"):
        out["valid"] = np.isfinite(out["bid_px"]) & np.isfinite(out["ask_px"]) & (out["bid_px"] > 0) \
            & (out["bid_px"] < out["ask_px"])
    return out


def _weighted_quantiles(values: np.ndarray, weights: np.ndarray, qs: tuple[float, ...]) -> np.ndarray:
    """The smallest value whose cumulative weight reaches ``q`` of the total, per q (NaN values ignored)."""
    keep = np.isfinite(values) & (weights > 0)
    values, weights = values[keep], weights[keep]
    if not len(values):
        return np.full(len(qs), np.nan)
    order = np.argsort(values, kind="stable")
    values, cum = values[order], np.cumsum(weights[order])
    # a relative slack so that a weight reaching q*total "exactly" is not missed by float rounding
    targets = np.asarray(qs) * cum[-1] * (1 - 1e-12)
    return values[np.minimum(np.searchsorted(cum, targets, side="left"), len(values) - 1)]


def _segments(ts: np.ndarray, bucket_ns: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Time-weight segments: (start_ns, duration_ns, source quote row), split at bucket boundaries."""
    first_boundary = (ts[0] // bucket_ns + 1) * bucket_ns
    boundaries = np.arange(first_boundary, ts[-1], bucket_ns, dtype=np.int64)
    starts = np.concatenate([ts, boundaries])
    rows = np.concatenate([np.arange(len(ts)), np.searchsorted(ts, boundaries, side="right") - 1])
    order = np.argsort(starts, kind="stable")
    starts, rows = starts[order], rows[order]
    duration = np.diff(starts)  # the last segment has no known end: dropped
    return starts[:-1], duration, rows[:-1]


def _session_seconds(instrument: Instrument) -> float:
    hours = instrument.trading_hours
    if hours.always_open:
        return 86_400.0
    open_s = hours.open.hour * 3600 + hours.open.minute * 60 + hours.open.second
    close_s = hours.close.hour * 3600 + hours.close.minute * 60 + hours.close.second
    length = (close_s - open_s) % 86_400
    return float(length or 86_400)


def _mask_for(quotes_ts: np.ndarray, starts: np.ndarray, rows: np.ndarray, instrument: Instrument,
              mask: np.ndarray | None, what: str) -> np.ndarray:
    if mask is None:
        return regular_hours_mask(starts, instrument)
    mask = np.asarray(mask)
    if mask.dtype != bool or mask.shape != quotes_ts.shape:
        raise DataError(f"{what}: mask must be a bool array with one value per quote ({len(quotes_ts)}), "
                        f"got dtype {mask.dtype} shape {mask.shape}")
    return mask[rows]


def _check_bucket_minutes(bucket_minutes: int) -> int:
    if isinstance(bucket_minutes, bool) or not isinstance(bucket_minutes, (int, np.integer)) or bucket_minutes <= 0 \
            or 1440 % int(bucket_minutes):
        raise DataError(f"bucket_minutes is {bucket_minutes!r}; expected a positive whole number of minutes that "
                        "divides a day (1, 5, 15, 30, 60, ...)")
    return int(bucket_minutes)


def _bucket_of(ts_ns: np.ndarray, bucket_minutes: int) -> np.ndarray:
    return (ts_ns % NS_PER_DAY) // (bucket_minutes * NS_PER_MINUTE)


# -- realised volatility -------------------------------------------------------------------
def realised_vol_bps(quotes: pd.DataFrame, ts_ns: np.ndarray, window_ns: int = DEFAULT_VOL_WINDOW_NS) -> np.ndarray:
    """Realised volatility of the mid over the trailing ``window_ns`` at each of ``ts_ns``, in bps.

    The mid of the last valid quote is sampled every second; the volatility is the
    square root of the sum of squared log returns between samples in ``(t - window, t]``
    (bps per window, not annualised). NaN before a full window of data exists.
    """
    q = _quote_arrays(quotes, "realised_vol_bps")
    return _realised_vol(q, as_ns_array(ts_ns, "ts_ns"), int(window_ns))


def _realised_vol(q: dict[str, np.ndarray], ts_ns: np.ndarray, window_ns: int) -> np.ndarray:
    if window_ns < 2 * VOL_SAMPLE_NS:
        raise DataError(f"vol_window_ns is {window_ns}; expected at least two seconds of mid samples")
    grid, mid = _mid_grid(q)
    out = np.full(len(ts_ns), np.nan)
    if len(grid) < 2:
        return out
    with np.errstate(invalid="ignore", divide="ignore"):
        returns = np.diff(np.log(mid))
    cum = np.concatenate([[0.0], np.cumsum(np.nan_to_num(returns) ** 2)])
    k = np.searchsorted(grid, ts_ns, side="right") - 1  # the last sample at or before t
    start = np.searchsorted(grid, ts_ns - window_ns, side="right") - 1  # the sample opening the window
    full = (k >= 0) & (ts_ns - window_ns >= grid[0])
    kk, ss = np.clip(k, 0, None), np.clip(start, 0, None)
    out[full] = np.sqrt(cum[kk[full]] - cum[ss[full]]) * BPS
    return out


def _mid_grid(q: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    valid = q["valid"]
    ts, mid = q["ts_ns"][valid], ((q["bid_px"] + q["ask_px"]) / 2)[valid]
    if not len(ts):
        return np.zeros(0, np.int64), np.zeros(0)
    grid = np.arange((ts[0] // VOL_SAMPLE_NS + 1) * VOL_SAMPLE_NS, ts[-1] + 1, VOL_SAMPLE_NS, dtype=np.int64)
    return grid, mid[np.searchsorted(ts, grid, side="right") - 1]


def _atr_bps(q: dict[str, np.ndarray], used_minutes: np.ndarray) -> float:
    """Mean true range of the mid over the one-minute bars in ``used_minutes`` (minutes since the epoch), in bps."""
    grid, mid = _mid_grid(q)
    if len(grid) < 2:
        return float("nan")
    frame = pd.DataFrame({"minute": grid // NS_PER_MINUTE, "mid": mid})
    bars = frame.groupby("minute")["mid"].agg(["max", "min", "last"])
    previous = bars["last"].shift(1)
    true_range = np.maximum(bars["max"], previous.fillna(bars["max"])) - np.minimum(bars["min"],
                                                                                     previous.fillna(bars["min"]))
    tr_bps = (true_range / bars["last"] * BPS).to_numpy()[np.isin(bars.index.to_numpy(dtype=np.int64), used_minutes)]
    return float(np.mean(tr_bps)) if len(tr_bps) else float("nan")


# -- spread profile -----------------------------------------------------------------------
_CELL_FIELDS = ("bucket", "regime", "n_quotes", "time_s", "spread_bps_q05", "spread_bps_q50", "spread_bps_q95",
                "spread_ticks_q05", "spread_ticks_q50", "spread_ticks_q95", "top_size_q05", "top_size_q50",
                "top_size_q95", "vol_bps_q50")


@dataclass(frozen=True)
class SpreadProfile(DictRecord):
    """Time-weighted spread and touch-size quantiles by UTC time-of-day bucket and volatility regime.

    One *cell* per (bucket, regime) with data, plus pooled cells: ``regime == -1``
    pools a bucket's regimes, ``bucket == -1`` pools the buckets (and (-1, -1) is
    the whole fit). ``bucket`` is the bucket's index in the day (its start is
    ``bucket * bucket_minutes`` minutes after 00:00 UTC); ``regime`` 0/1/2 is
    calm/normal/volatile, split at ``vol_edges`` (terciles of the time-weighted
    realised volatility of the mid over ``vol_window_ns``, bps). The touch size pools
    both sides (each side weighted by the time its quote was in force).
    ``atr_1m_bps`` is the mean one-minute true range of the mid over the fit.
    Each cell field is a tuple, one entry per cell (see :meth:`table`).
    """

    instrument_id: str
    tick_size: float
    bucket_minutes: int
    vol_window_ns: int
    vol_edges: tuple[float, ...]
    atr_1m_bps: float
    fit_start_ns: int
    fit_end_ns: int
    bucket: tuple[int, ...]
    regime: tuple[int, ...]
    n_quotes: tuple[int, ...]
    time_s: tuple[float, ...]
    spread_bps_q05: tuple[float, ...]
    spread_bps_q50: tuple[float, ...]
    spread_bps_q95: tuple[float, ...]
    spread_ticks_q05: tuple[float, ...]
    spread_ticks_q50: tuple[float, ...]
    spread_ticks_q95: tuple[float, ...]
    top_size_q05: tuple[float, ...]
    top_size_q50: tuple[float, ...]
    top_size_q95: tuple[float, ...]
    vol_bps_q50: tuple[float, ...]

    def __post_init__(self) -> None:
        lengths = {name: len(getattr(self, name)) for name in _CELL_FIELDS}
        if len(set(lengths.values())) != 1:
            raise DataError(f"spread profile cell fields must all have one entry per cell, got {lengths}")
        if len(self.vol_edges) != 2:
            raise DataError(f"vol_edges must hold the two tercile edges, got {self.vol_edges}")

    def table(self) -> pd.DataFrame:
        """One row per cell (for plots): bucket, its UTC start, regime, n_quotes, time, spread/size/vol quantiles."""
        frame = pd.DataFrame({name: getattr(self, name) for name in _CELL_FIELDS})
        frame.insert(1, "bucket_start_utc", [
            "all" if b == ALL else f"{b * self.bucket_minutes // 60:02d}:{b * self.bucket_minutes % 60:02d}"
            for b in frame["bucket"]])
        frame.insert(3, "regime_name", frame["regime"].map({ALL: "all", 0: "calm", 1: "normal", 2: "volatile"}))
        return frame

    def regime_of(self, realised_vol_bps: np.ndarray) -> np.ndarray:
        """0 calm / 1 normal / 2 volatile for each volatility (bps over ``vol_window_ns``); -1 where NaN."""
        vol = np.asarray(realised_vol_bps, dtype=np.float64)
        regime = np.searchsorted(np.asarray(self.vol_edges), vol, side="right")
        return np.where(np.isfinite(vol), regime, ALL)

    def expected_spread_bps(self, ts_ns: np.ndarray | int, realised_vol_bps: np.ndarray | float,
                            quantile: float = 0.5) -> np.ndarray:
        """The fitted spread quantile (bps) for each time and volatility (vectorised).

        Falls back, where a cell had no data, to the bucket's pooled regimes, then to
        the regime pooled over buckets, then to the whole fit. A NaN volatility uses
        the bucket's pooled regimes.
        """
        column = {0.05: self.spread_bps_q05, 0.5: self.spread_bps_q50, 0.95: self.spread_bps_q95}.get(quantile)
        if column is None:
            raise DataError(f"quantile is {quantile!r}; expected one of {QUANTILES}")
        ts = as_ns_array(ts_ns, "ts_ns")
        vol = np.broadcast_to(np.asarray(realised_vol_bps, dtype=np.float64), ts.shape)
        bucket = _bucket_of(ts, self.bucket_minutes)
        regime = self.regime_of(vol)
        lookup = {(b, r): v for b, r, v in zip(self.bucket, self.regime, column)}
        overall = lookup[(ALL, ALL)]
        out = np.empty(len(ts))
        for i, (b, r) in enumerate(zip(bucket.tolist(), regime.tolist())):
            for key in ((b, r), (b, ALL), (ALL, r)):
                if key in lookup and np.isfinite(lookup[key]):
                    out[i] = lookup[key]
                    break
            else:
                out[i] = overall
        return out



def _in_force(quotes: pd.DataFrame, inst: Instrument, bucket_minutes: int, mask: np.ndarray | None,
              what: str) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Quote arrays and the (start, duration, row) segments during which a valid quote was in force.

    Segments are cut at time-of-day bucket edges so each weighs into one bucket; only
    segments inside ``mask`` (the regular session by default) with a valid quote count.
    """
    q = _quote_arrays(quotes, what)
    ts = q["ts_ns"]
    starts, duration, rows = _segments(ts, bucket_minutes * NS_PER_MINUTE)
    use = _mask_for(ts, starts, rows, inst, mask, what) & q["valid"][rows] & (duration > 0)
    if not use.any():
        raise DataError(f"{what}: no valid quote (two-sided, bid < ask) was in force for any time inside the mask "
                        f"among {len(ts)} quotes; expected quotes with 0 < bid < ask")
    return q, ts, starts[use], duration[use], rows[use]


def fit_spread_profile(
    quotes: pd.DataFrame,
    instrument: Instrument | str,
    *,
    bucket_minutes: int = DEFAULT_BUCKET_MINUTES,
    vol_window_ns: int = DEFAULT_VOL_WINDOW_NS,
    mask: np.ndarray | None = None,
) -> SpreadProfile:
    """Fit a :class:`SpreadProfile` from L1 quotes (or a top-N book frame), time-weighted.

    ``mask`` (one bool per quote row) selects the quotes to use; by default the
    instrument's regular session (:func:`tradebook.sim.truth.regular_hours_mask`:
    IBM 09:30-16:00 ET, ES without the daily halt, crypto always). Raises DataError
    on an empty frame, no valid (two-sided, uncrossed) quote in force for any time
    inside the mask, or ``bucket_minutes`` that is not a positive divisor of a day.
    """
    what = "fit_spread_profile"
    bucket_minutes = _check_bucket_minutes(bucket_minutes)
    inst = _instrument(instrument)
    tick = float(inst.tick_size)
    q, ts, starts, duration, rows = _in_force(quotes, inst, bucket_minutes, mask, what)
    weight = duration / NS_PER_S
    bid, ask = q["bid_px"][rows], q["ask_px"][rows]
    mid = (bid + ask) / 2
    spread_bps = (ask - bid) / mid * BPS
    spread_ticks = (ask - bid) / tick
    vol = _realised_vol(q, starts, int(vol_window_ns))
    finite_vol = np.isfinite(vol)
    edges = (_weighted_quantiles(vol, weight, (1 / 3, 2 / 3)) if finite_vol.any() else np.array([np.nan, np.nan]))
    regime = np.where(finite_vol, np.searchsorted(edges, vol, side="right"), ALL)
    bucket = _bucket_of(starts, bucket_minutes)
    # touch sizes of both sides, each weighted by its quote's time
    sizes = np.concatenate([q["bid_sz"][rows], q["ask_sz"][rows]])
    size_weight = np.concatenate([weight, weight])

    cells: dict[str, list] = {name: [] for name in _CELL_FIELDS}

    def add(b: int, r: int, keep: np.ndarray) -> None:
        if not keep.any():
            return
        keep2 = np.concatenate([keep, keep])
        values = (*_weighted_quantiles(spread_bps[keep], weight[keep], QUANTILES),
                  *_weighted_quantiles(spread_ticks[keep], weight[keep], QUANTILES),
                  *_weighted_quantiles(sizes[keep2], size_weight[keep2], QUANTILES),
                  *_weighted_quantiles(vol[keep], weight[keep], (0.5,)))
        for name, value in zip(_CELL_FIELDS, (b, r, int(keep.sum()), float(weight[keep].sum()), *values)):
            cells[name].append(value if name in ("bucket", "regime", "n_quotes") else float(value))

    for b in np.unique(bucket).tolist():
        in_bucket = bucket == b
        for r in range(3):
            add(b, r, in_bucket & (regime == r))
        add(b, ALL, in_bucket)
    for r in range(3):
        add(ALL, r, regime == r)
    add(ALL, ALL, np.ones(len(starts), bool))
    atr = _atr_bps(q, np.unique(starts // NS_PER_MINUTE))
    return SpreadProfile(
        instrument_id=inst.instrument_id,
        tick_size=tick,
        bucket_minutes=bucket_minutes,
        vol_window_ns=int(vol_window_ns),
        vol_edges=tuple(float(e) for e in edges),
        atr_1m_bps=atr,
        fit_start_ns=int(starts[0]),
        fit_end_ns=int(starts[-1] + duration[-1]),
        **{name: tuple(values) for name, values in cells.items()},
    )


# -- completion of orders larger than the touch ------------------------------------------------
@dataclass(frozen=True)
class CompletionModel(DictRecord):
    """How an order larger than the displayed liquidity completes: partial fills and time.

    An order of ``q`` is worked in fills of one typical touch (``fill_size``, the
    time-weighted median touch size): ``n = ceil(q / fill_size)`` partial fills.
    Between fills the touch must refill (``refill_median_ns``, the median time for the
    displayed touch size to recover to its median after being depleted), and the
    order may not trade more than ``participation`` of the market's volume, so

        ``time = max(q / (participation * volume_per_s), (n - 1) * refill_median_ns)``

    with the volume rate of the time-of-day bucket when a time is given (else the
    whole fit's). ``source`` says what the fit saw: ``"trades"`` (volume from trades,
    depletions = trades that left the touch below its median) or ``"quotes"`` (a
    quote-only feed such as FX: no volume, so no participation limit and no ADV;
    depletions = quote updates that took the touch size below its median).
    ``adv_proxy`` = volume rate x session length (a one-session volume, from a sample
    that may be much shorter than a session).
    """

    instrument_id: str
    source: str
    bucket_minutes: int
    bucket: tuple[int, ...]
    volume_per_s: tuple[float, ...]
    volume_per_s_all: float
    session_s: float
    adv_proxy: float
    fill_size: float
    refill_median_ns: float
    refill_q90_ns: float
    n_depletions: int
    n_trades: int
    quote_updates_per_s: float
    fitted_on: str = ""  # the instrument it was fitted on, when applied to another (instrument_id)

    def for_instrument(self, instrument: Instrument | str, touch_size: float) -> CompletionModel:
        """This model applied to another instrument whose recent touch size is ``touch_size``.

        Times (refill) and rates in touches carry; sizes and volumes are rescaled from the
        fit's typical touch (``fill_size``) to ``touch_size``, the ADV proxy to the
        instrument's own session. Raises DataError for a non-positive ``touch_size``.
        """
        inst = _instrument(instrument)
        size = float(touch_size)
        if not (np.isfinite(size) and size > 0):
            raise DataError(f"touch_size is {touch_size!r}; expected {inst.instrument_id}'s positive recent touch "
                            "size (tradebook.sim.depth.recent_touch_size)")
        factor = size / self.fill_size
        session_s = _session_seconds(inst)
        volume_all = self.volume_per_s_all * factor
        return replace(self, instrument_id=inst.instrument_id, fitted_on=self.fitted_on or self.instrument_id,
                       volume_per_s=tuple(float(v) * factor for v in self.volume_per_s),
                       volume_per_s_all=volume_all, session_s=session_s, adv_proxy=volume_all * session_s,
                       fill_size=size)

    def __post_init__(self) -> None:
        if len(self.bucket) != len(self.volume_per_s):
            raise DataError("bucket and volume_per_s must have one entry per time-of-day bucket")
        if self.source not in ("trades", "quotes"):
            raise DataError(f"source is {self.source!r}; expected 'trades' or 'quotes'")

    def _quantity(self, quantity: np.ndarray | float) -> np.ndarray:
        q = np.atleast_1d(np.asarray(quantity, dtype=np.float64))
        if np.isnan(q).any() or (q <= 0).any():
            raise DataError("quantity must be positive and not NaN for every order")
        return q

    def partial_fills(self, quantity: np.ndarray | float) -> np.ndarray:
        """Expected number of partial fills: one per typical touch the order needs (at least 1)."""
        q = self._quantity(quantity)
        return np.maximum(np.ceil(q / self.fill_size * (1 - 1e-12)), 1).astype(np.int64)

    def size_over_adv(self, quantity: np.ndarray | float) -> np.ndarray:
        """Order size over the average-daily-volume proxy (NaN for quote-only feeds)."""
        return self._quantity(quantity) / self.adv_proxy

    def time_to_complete_ns(self, quantity: np.ndarray | float, participation: float = 0.1,
                            ts_ns: np.ndarray | int | None = None) -> np.ndarray:
        """Expected time (ns, float) from the first fill to the last, per order (vectorised)."""
        if not (np.isfinite(participation) and 0 < participation <= 1):
            raise DataError(f"participation is {participation!r}; expected a share of volume in (0, 1]")
        q = self._quantity(quantity)
        n_fills = self.partial_fills(q)
        refill_time = np.where(n_fills > 1, (n_fills - 1) * self.refill_median_ns, 0.0)
        rate = np.full(len(q), self.volume_per_s_all)
        if ts_ns is not None:
            by_bucket = dict(zip(self.bucket, self.volume_per_s))
            buckets = _bucket_of(np.broadcast_to(as_ns_array(ts_ns, "ts_ns"), q.shape), self.bucket_minutes)
            rate = np.array([by_bucket.get(b, self.volume_per_s_all) for b in buckets.tolist()])
            rate = np.where(rate > 0, rate, self.volume_per_s_all)
        with np.errstate(divide="ignore", invalid="ignore"):
            volume_time = np.where(rate > 0, q / (participation * rate) * NS_PER_S, np.nan)
        return np.fmax(volume_time, refill_time)  # fmax: a missing term (NaN) leaves the other



def _recovery_times(event_ts: np.ndarray, event_side: np.ndarray, ts: np.ndarray, sizes: dict[int, np.ndarray],
                    medians: dict[int, float]) -> np.ndarray:
    """Per depletion event: ns until the touch on its side shows at least its median size again (NaN if never)."""
    out = np.full(len(event_ts), np.nan)
    for side, size in sizes.items():
        ok_ts = ts[size >= medians[side]]
        pick = event_side == side
        after = np.searchsorted(ok_ts, event_ts[pick], side="right")
        found = after < len(ok_ts)
        times = np.full(pick.sum(), np.nan)
        times[found] = ok_ts[after[found]] - event_ts[pick][found]
        out[pick] = times
    return out


def fit_completion_model(
    quotes: pd.DataFrame,
    trades: pd.DataFrame | None,
    instrument: Instrument | str,
    *,
    bucket_minutes: int = DEFAULT_BUCKET_MINUTES,
    mask: np.ndarray | None = None,
) -> CompletionModel:
    """Fit a :class:`CompletionModel` from quotes and, where the feed has them, trades.

    With trades: volume per second by time-of-day bucket over the time the quotes
    cover inside the mask (by default the regular session; flagged ``suspicious``
    trades dropped), and the refill time after each trade that left its touch below
    the median size (aggressor from the file or inferred from the quotes, as
    :func:`tradebook.sim.truth.trade_sides`). Without trades (``None`` or empty:
    quote-only FX feeds): no volume; depletions are quote updates that took a side's
    touch size from at least its median to below it. ``mask`` is one bool per quote.
    """
    what = "fit_completion_model"
    bucket_minutes = _check_bucket_minutes(bucket_minutes)
    inst = _instrument(instrument)
    q, ts, starts, duration, rows = _in_force(quotes, inst, bucket_minutes, mask, what)
    weight = duration / NS_PER_S
    sizes = {1: q["ask_sz"], -1: q["bid_sz"]}  # a buyer takes the ask, a seller the bid
    medians = {side: float(_weighted_quantiles(size[rows], weight, (0.5,))[0]) for side, size in sizes.items()}
    fill_size = float(_weighted_quantiles(np.concatenate([q["bid_sz"][rows], q["ask_sz"][rows]]),
                                          np.concatenate([weight, weight]), (0.5,))[0])
    if not (np.isfinite(fill_size) and fill_size > 0):
        raise DataError(f"{what}: the quotes carry no touch sizes; expected bid_sz and ask_sz > 0")
    observed_s = float(weight.sum())
    bucket = _bucket_of(starts, bucket_minutes)
    bucket_ids = np.unique(bucket)
    seconds_by_bucket = np.array([weight[bucket == b].sum() for b in bucket_ids])
    in_mask_quote = (regular_hours_mask(ts, inst) if mask is None else np.asarray(mask)) & q["valid"]
    quote_rate = float(in_mask_quote.sum() / observed_s)

    has_trades = trades is not None and len(trades) > 0
    if has_trades:
        for column in ("ts_ns", "price", "size"):
            if column not in trades.columns:
                raise DataError(f"{what}: trades lack {column}; expected ts_ns, price, size")
        trade_ts = as_ns_array(trades["ts_ns"].to_numpy(), "trades ts_ns")
        keep = regular_hours_mask(trade_ts, inst) if mask is None else \
            np.asarray(mask)[np.clip(np.searchsorted(ts, trade_ts, side="right") - 1, 0, None)]
        if "suspicious" in trades.columns:
            keep &= ~trades["suspicious"].to_numpy(dtype=bool)
        size = trades["size"].to_numpy(dtype=np.float64)
        keep &= np.isfinite(size) & (size > 0)
        trade_bucket = _bucket_of(trade_ts, bucket_minutes)
        volume = np.array([size[keep & (trade_bucket == b)].sum() for b in bucket_ids])
        volume_per_s = volume / np.where(seconds_by_bucket > 0, seconds_by_bucket, np.nan)
        volume_all = float(volume.sum() / observed_s)
        side = trade_sides(trades, quotes).astype(np.int64)
        event = keep & (side != 0)
        event_ts, event_side = trade_ts[event], side[event]
        after = np.searchsorted(ts, event_ts, side="left")  # the first quote showing the trade's effect
        inside = after < len(ts)
        at = np.clip(after, 0, len(ts) - 1)
        shown = np.where(event_side > 0, q["ask_sz"][at], q["bid_sz"][at])
        depleted = inside & (shown < np.where(event_side > 0, medians[1], medians[-1]))
        event_ts, event_side = event_ts[depleted], event_side[depleted]
        n_trades = int(keep.sum())
    else:
        volume_per_s = np.full(len(bucket_ids), np.nan)
        volume_all = float("nan")
        events_ts, events_side = [], []
        for side_sign, size in sizes.items():
            below = size < medians[side_sign]
            dropped = np.flatnonzero(below[1:] & ~below[:-1]) + 1
            dropped = dropped[in_mask_quote[dropped]]
            events_ts.append(ts[dropped])
            events_side.append(np.full(len(dropped), side_sign))
        event_ts, event_side = np.concatenate(events_ts), np.concatenate(events_side)
        n_trades = 0
    recovery = _recovery_times(event_ts, event_side, ts, sizes, medians)
    recovered = recovery[np.isfinite(recovery)]
    refill_median, refill_q90 = (np.quantile(recovered, [0.5, 0.9]) if len(recovered) else (np.nan, np.nan))
    session_s = _session_seconds(inst)
    return CompletionModel(
        instrument_id=inst.instrument_id,
        source="trades" if has_trades else "quotes",
        bucket_minutes=bucket_minutes,
        bucket=tuple(int(b) for b in bucket_ids),
        volume_per_s=tuple(float(v) for v in volume_per_s),
        volume_per_s_all=volume_all,
        session_s=session_s,
        adv_proxy=volume_all * session_s,
        fill_size=fill_size,
        refill_median_ns=float(refill_median),
        refill_q90_ns=float(refill_q90),
        n_depletions=int(len(event_ts)),
        n_trades=n_trades,
        quote_updates_per_s=quote_rate,
    )
