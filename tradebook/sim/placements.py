"""Resting-order placements and what an L1 feed shows at each: the data the passive model learns from.

Random placements (:func:`sample_placements`), their features at placement
(:func:`placement_features`, all from data at or before it, sizes in the instrument's own
recent touch size), their outcomes (:func:`tradebook.sim.truth.passive_outcomes` with
trades, :func:`quote_through_outcomes` on quote-only feeds) and both joined
(:func:`passive_dataset`). The model fitted on them is in :mod:`tradebook.sim.passive`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from tradebook.data.frames import quote_columns
from tradebook.errors import DataError
from tradebook.model.instruments import Instrument, get_instrument
from tradebook.model.time import NS_PER_SECOND
from tradebook.sim.book import as_ns_array, parse_side
from tradebook.sim.depth import TOUCH_UNIT_TAU_NS, recent_touch_size
from tradebook.sim.truth import (
    passive_outcomes,
    quote_fill_rule_of,
    quote_only_outcomes,
    trade_sides,
)

# The features the model reads, all known at placement from L1 (and trades, if any).
FEATURES: tuple[str, ...] = (
    "queue_rel_log",  # log(own-side touch size / typical touch size): the queue to get through
    "imbalance",  # (bid_sz - ask_sz)/(bid_sz + ask_sz) times side: > 0 the own side is heavier
    "spread_log",  # log(spread in ticks)
    "gap_over_vol_log",  # log((distance + spread) / (recent volatility + 1)): how far the far touch must come
    "vol_log",  # log(1 + realised volatility over the lookback in ticks)
    "move_over_vol",  # mid change over the lookback / (volatility + 1), times side: > 0 the price ran away
    "quote_rate_log",  # log(1 + quote updates per second over the lookback)
    "trade_rate_log",  # log(1 + volume over the lookback / typical touch size); NaN without trades
    "flow_imbalance",  # (buy - sell aggressor volume)/total over the lookback, times side; NaN without trades
    # log(queue / (touch + volume over the lookback)): the queue ahead in units of the volume to expect over
    # the horizon (the last horizon's); NaN without trades. Measured on the bundled transfers (Brier / the
    # reference (c)): BTCUSDT 2024 -> 2021 1.909 -> 1.791, ESU4 early -> late 0.988 -> 0.957, ESU4 half/half
    # 1.047 -> 1.027, no transfer worse by more than 0.002
    "queue_over_volume_log",
)


# Shown beside the features, in natural units (the model reads their logs and ratios).
_RAW_COLUMNS: tuple[str, ...] = ("spread_ticks", "vol_ticks", "move_ticks")


# -- input checks --------------------------------------------------------------------
@dataclass(frozen=True)
class _Quotes:
    ts: np.ndarray
    bid: np.ndarray
    ask: np.ndarray
    bid_sz: np.ndarray
    ask_sz: np.ndarray
    valid: np.ndarray


def _l1(quotes: pd.DataFrame, what: str) -> _Quotes:
    """The L1 arrays of ``quotes``, refusing a frame with no usable quote at all."""
    if not isinstance(quotes, pd.DataFrame) or "ts_ns" not in quotes.columns:
        raise DataError(f"{what}: quotes must be a DataFrame with ts_ns, bid_px, ask_px, bid_sz, ask_sz")
    columns = quote_columns(quotes)
    if not len(quotes):
        raise DataError(f"{what}: quotes frame is empty; expected at least one two-sided quote")
    ts = quotes["ts_ns"].to_numpy(dtype=np.int64)
    if (np.diff(ts) < 0).any():
        raise DataError(f"{what}: quotes ts_ns goes backwards; expected non-decreasing ts_ns")
    arrays = {}
    for name, column in columns.items():
        if column in quotes.columns:
            arrays[name] = quotes[column].to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            arrays[name] = np.full(len(quotes), np.nan)
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(arrays["bid_px"]) & np.isfinite(arrays["ask_px"]) & (arrays["bid_px"] < arrays["ask_px"])
    if not valid.any():
        raise DataError(f"{what}: no valid quote among {len(quotes)} rows (every one is one-sided, crossed or "
                        "locked); expected at least one with bid < ask")
    return _Quotes(ts, arrays["bid_px"], arrays["ask_px"], arrays["bid_sz"], arrays["ask_sz"], valid)


def _check_tick(tick: float) -> float:
    try:
        value = float(tick)
    except (TypeError, ValueError) as exc:
        raise DataError(f"tick is {tick!r}; expected the instrument's positive tick size") from exc
    if not np.isfinite(value) or value <= 0:
        raise DataError(f"tick is {tick!r}; expected the instrument's positive tick size")
    return value


def _order_arrays(n: int, side, distance_ticks, horizon_ns) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """side (+1/-1), distance (int ticks >= 0) and horizon (int ns > 0), one per placement."""
    sides = np.array([parse_side(s) for s in np.broadcast_to(np.asarray(side, dtype=object), (n,))],
                     dtype=np.int64)
    distance = np.broadcast_to(np.asarray(distance_ticks), (n,))
    if distance.size and (not np.issubdtype(distance.dtype, np.integer) or (distance < 0).any()):
        raise DataError(f"distance_ticks must be integers >= 0 (0 = join the touch), got {distance_ticks!r}")
    horizon = np.broadcast_to(np.asarray(horizon_ns), (n,))
    if horizon.size and (not np.issubdtype(horizon.dtype, np.integer) or (horizon <= 0).any()):
        raise DataError(f"horizon_ns must be positive integer nanoseconds, got {horizon_ns!r}")
    return sides, distance.astype(np.int64), horizon.astype(np.int64)


def _prevailing_row(ts: np.ndarray, when: np.ndarray) -> np.ndarray:
    """Index of the last quote stamped at or before each time (-1 if none)."""
    return np.searchsorted(ts, when, side="right") - 1


# -- truth for quote-only feeds ----------------------------------------------------------
def quote_through_outcomes(
    quotes: pd.DataFrame,
    placement_ts_ns: np.ndarray,
    side: str | int | np.ndarray,
    distance_ticks: int | np.ndarray,
    horizon_ns: int | np.ndarray,
    tick: float,
    *,
    rule: str = "touch",
) -> pd.DataFrame:
    """Would a resting limit order have been filled, judged from quotes alone (feeds without trades)?

    The order rests ``distance_ticks`` behind the touch prevailing at placement (quotes
    stamped at or before it, as in :func:`passive_outcomes`). A resting buy at ``L``
    fills when a quote stamped in ``(placement, placement + horizon]`` shows an ask at
    or below ``L`` (someone now offers at our price, and we were there first); a sell
    fills when the bid reaches ``L``. Nothing is said about the queue: joining the touch
    (distance 0) fills only once the far side comes to it, which undercounts fills
    that real trades at the touch would have given.

    Same columns as :func:`passive_outcomes`: ``queue_ahead`` is the displayed size at
    the touch for distance 0 (information only), ``filled_by`` is 'through' or '',
    ``volume_at_price`` is NaN (no trades). ``attrs["rule"] = "quote_through"``.

    ``rule="through"`` asks the far side to pass the limit by a tick (ask <= L - tick),
    the engine's default for spot FX (:func:`tradebook.sim.truth.quote_fill_rule_of`);
    ``attrs["quote_fill_rule"]`` says which rule was applied.
    """
    _l1(quotes, "quote_through_outcomes")  # the L1 checks (sizes, a usable quote) with their messages
    tick = _check_tick(tick)
    placement = as_ns_array(placement_ts_ns, "placement_ts_ns")
    sides, distance, horizon = _order_arrays(len(placement), side, distance_ticks, horizon_ns)
    # one rule, one home: the ground truth's quote-only judge (the engine's tests compare against it)
    frame = quote_only_outcomes(quotes, placement, sides, distance, horizon, tick, rule=rule)
    frame.attrs["rule"] = "quote_through"
    frame.attrs["quote_fill_rule"] = rule
    return frame


# -- placements ------------------------------------------------------------------------
def sample_placements(
    quotes: pd.DataFrame, n: int, rng: np.random.Generator, *, mask: np.ndarray | None = None
) -> np.ndarray:
    """``n`` placement times drawn uniformly in clock time over the spans where a valid quote stood.

    Quote row ``i`` stands over ``[ts_i, ts_{i+1})``; rows that are one-sided, crossed
    or locked, or where ``mask`` (one bool per quote row, e.g.
    :func:`tradebook.sim.truth.regular_hours_mask` of ``quotes.ts_ns``) is False, are
    never drawn. Uniform in time rather than per quote: a strategy decides on its own
    clock, and a burst of updates would otherwise be sampled many times over. The last
    row has no known end and is not drawn. Returns sorted int64 ns.
    """
    book = _l1(quotes, "sample_placements")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
        raise DataError(f"n is {n!r}; expected a positive number of placements")
    eligible = book.valid.copy()
    if mask is not None:
        mask = np.asarray(mask)
        if mask.dtype != bool or mask.shape != (len(book.ts),):
            raise DataError(f"mask has dtype {mask.dtype} and shape {mask.shape}; expected one bool per quote row "
                            f"({len(book.ts)},)")
        eligible &= mask
    duration = np.zeros(len(book.ts), dtype=np.int64)
    duration[:-1] = np.diff(book.ts)
    duration[~eligible] = 0
    total = duration.sum()
    if total <= 0:
        raise DataError("sample_placements: no time span with a valid quote (inside the mask); expected at least "
                        "two quotes with a valid, unmasked one before the last")
    rows = rng.choice(len(duration), size=int(n), p=duration / total)
    offset = np.floor(rng.random(int(n)) * duration[rows]).astype(np.int64)
    return np.sort(book.ts[rows] + offset)


# -- features --------------------------------------------------------------------------
def typical_touch_size(quotes: pd.DataFrame) -> float:
    """Median displayed size at the touch (both sides) over the valid quotes: the unit of queue and volume."""
    book = _l1(quotes, "typical_touch_size")
    sizes = np.concatenate([book.bid_sz[book.valid], book.ask_sz[book.valid]])
    sizes = sizes[np.isfinite(sizes) & (sizes > 0)]
    return float(np.median(sizes)) if len(sizes) else float("nan")


def placement_features(
    quotes: pd.DataFrame,
    trades: pd.DataFrame | None,
    placement_ts_ns: np.ndarray,
    side: str | int | np.ndarray,
    distance_ticks: int | np.ndarray,
    horizon_ns: int | np.ndarray,
    tick: float,
    *,
    lookback_ns: int | np.ndarray | None = None,
    touch_size_unit: float | None = None,
    touch_unit_tau_ns: int = TOUCH_UNIT_TAU_NS,
) -> pd.DataFrame:
    """What L1 data shows at each placement: the inputs of :class:`PassiveModel` (columns :data:`FEATURES`).

    The quote at placement is the last stamped at or before it; "recent" is the
    ``lookback_ns`` before placement, by default the order's own horizon (the activity
    of the last horizon is the best guide to the next one). Where the lookback reaches
    back before the first quote, rates and volatility are scaled up from the time
    there is. Sizes are in multiples of the recent touch size at each placement
    (:func:`tradebook.sim.depth.recent_touch_size` with memory ``touch_unit_tau_ns``)
    when ``touch_size_unit`` is None (or NaN), the units that carry; a positive
    ``touch_size_unit`` is a fixed unit instead (the earlier format). Without ``trades``
    the trade columns are NaN. Raises DataError for quotes without sizes (the model
    measures the queue in touch sizes) and for a horizon <= 0.

    Also returns ``placement_ts_ns``, ``side``, ``distance_ticks``, ``horizon_ns``,
    ``horizon_s``, the natural-unit ``spread_ticks``, ``vol_ticks`` (realised volatility
    over the lookback, scaled to its full length) and ``move_ticks``, and ``valid`` (a valid quote stood at placement; features of invalid
    rows are NaN).
    """
    book = _l1(quotes, "placement_features")
    tick = _check_tick(tick)
    placement = as_ns_array(placement_ts_ns, "placement_ts_ns")
    n = len(placement)
    sides, distance, horizon = _order_arrays(n, side, distance_ticks, horizon_ns)
    if lookback_ns is None:
        lookback = horizon
    else:
        lookback = np.broadcast_to(np.asarray(lookback_ns), (n,))
        if lookback.size and (not np.issubdtype(lookback.dtype, np.integer) or (lookback <= 0).any()):
            raise DataError(f"lookback_ns must be positive integer nanoseconds, got {lookback_ns!r}")
        lookback = lookback.astype(np.int64)
    recent = touch_size_unit is None or not np.isfinite(float(touch_size_unit))
    if recent:
        unit = recent_touch_size(quotes, placement, touch_unit_tau_ns)
    else:
        unit = float(touch_size_unit)
        if unit <= 0:
            raise DataError(f"touch size unit is {unit!r}; expected a positive size (quotes need bid_sz/ask_sz)")

    row = _prevailing_row(book.ts, placement)
    safe = np.clip(row, 0, None)
    valid = (row >= 0) & book.valid[safe]
    bid_sz, ask_sz = book.bid_sz[safe], book.ask_sz[safe]
    own_size = np.where(sides > 0, bid_sz, ask_sz)
    with np.errstate(invalid="ignore", divide="ignore"):
        queue_rel_log = np.log(np.maximum(own_size, 0.01 * unit) / unit)
        depth = bid_sz + ask_sz
        imbalance = np.where(depth > 0, sides * (bid_sz - ask_sz) / depth, 0.0)
        spread_ticks = (book.ask[safe] - book.bid[safe]) / tick

    # The mid carried forward over invalid rows, in ticks, and its running sum of squared changes.
    mid_ticks = np.where(book.valid, (book.bid + book.ask) / 2 / tick, np.nan)
    mid_ticks = pd.Series(mid_ticks).ffill().bfill().to_numpy()
    squared_moves = np.r_[0.0, np.cumsum(np.diff(mid_ticks) ** 2)]
    start = placement - lookback
    data_start = book.ts[0] if trades is None or not len(trades) else min(book.ts[0], int(trades["ts_ns"].iloc[0]))
    # Time actually covered by data in the lookback: at least a millisecond, so rates stay finite.
    covered = np.maximum(placement - np.maximum(start, data_start), 1_000_000).astype(np.float64)
    stretch = lookback / covered  # > 1 only near the start of the data
    row_then = _prevailing_row(book.ts, start)
    safe_then = np.clip(row_then, 0, None)
    variance = (squared_moves[safe] - squared_moves[safe_then]) * stretch
    vol_ticks = np.sqrt(np.maximum(variance, 0.0))
    move_ticks = sides * (mid_ticks[safe] - mid_ticks[safe_then])
    with np.errstate(invalid="ignore", divide="ignore"):
        gap_over_vol_log = np.log((distance + spread_ticks) / (vol_ticks + 1.0))
    updates = (row - row_then).astype(np.float64)
    quote_rate_log = np.log1p(updates / (covered / NS_PER_SECOND))

    trade_rate_log = np.full(n, np.nan)
    flow_imbalance = np.full(n, np.nan)
    queue_over_volume_log = np.full(n, np.nan)
    if trades is not None:
        for column in ("ts_ns", "price", "size"):
            if column not in trades.columns:
                raise DataError(f"placement_features: trades frame lacks {column!r}; expected ts_ns, price, size")
        trade_ts = trades["ts_ns"].to_numpy(dtype=np.int64)
        if (np.diff(trade_ts) < 0).any():
            raise DataError("placement_features: trades ts_ns goes backwards; expected non-decreasing ts_ns")
        size = trades["size"].to_numpy(dtype=np.float64)
        aggressor = trade_sides(trades, quotes).astype(np.float64) if len(trades) else np.zeros(0)
        volume = np.r_[0.0, np.cumsum(size)]
        signed = np.r_[0.0, np.cumsum(size * aggressor)]
        now = np.searchsorted(trade_ts, placement, side="right")
        then = np.searchsorted(trade_ts, start, side="right")
        traded = volume[now] - volume[then]
        trade_rate_log = np.log1p(traded * stretch / unit)
        queue_over_volume_log = queue_rel_log - trade_rate_log
        with np.errstate(invalid="ignore", divide="ignore"):
            flow_imbalance = np.where(traded > 0, sides * (signed[now] - signed[then]) / traded, 0.0)

    values = {
        "spread_ticks": spread_ticks, "vol_ticks": vol_ticks, "move_ticks": move_ticks,
        "queue_rel_log": queue_rel_log, "imbalance": imbalance, "spread_log": np.log(spread_ticks),
        "gap_over_vol_log": gap_over_vol_log, "vol_log": np.log1p(vol_ticks),
        "move_over_vol": move_ticks / (vol_ticks + 1.0),
        "quote_rate_log": quote_rate_log, "trade_rate_log": trade_rate_log, "flow_imbalance": flow_imbalance,
        "queue_over_volume_log": queue_over_volume_log,
    }
    frame = pd.DataFrame({
        "placement_ts_ns": placement, "side": sides, "distance_ticks": distance, "horizon_ns": horizon,
        "horizon_s": horizon / NS_PER_SECOND, "valid": valid,
    })
    if recent:
        frame["valid"] = valid & np.isfinite(unit)
        valid = frame["valid"].to_numpy()
    for name in _RAW_COLUMNS + FEATURES:
        frame[name] = np.where(valid, values[name], np.nan)
    frame.attrs["touch_size_unit"] = None if recent else unit
    frame.attrs["touch_unit_tau_ns"] = int(touch_unit_tau_ns) if recent else 0
    return frame


# -- the data set ------------------------------------------------------------------------
def passive_dataset(
    quotes: pd.DataFrame,
    trades: pd.DataFrame | None,
    instrument: Instrument | str,
    n_placements: int,
    rng: np.random.Generator,
    *,
    distances: tuple[int, ...] = (0, 1, 2, 5),
    horizons_ns: tuple[int, ...] = (NS_PER_SECOND, 10 * NS_PER_SECOND, 60 * NS_PER_SECOND),
    mask: np.ndarray | None = None,
    order_qty: float = 0.0,
    touch_size_unit: float | None = None,
    touch_unit_tau_ns: int = TOUCH_UNIT_TAU_NS,
) -> pd.DataFrame:
    """Outcomes and features of random resting orders: one row per (placement, distance, horizon).

    Placements come from :func:`sample_placements` (``mask`` per quote row), each with
    a random side. Outcomes are :func:`passive_outcomes` when ``trades`` is given (trade
    through the limit, or the displayed queue traded away at it) and
    :func:`quote_through_outcomes` otherwise. Only placements with a valid quote are
    kept (``attrs["dropped_invalid"]`` counts the rest). Columns: the outcome columns,
    ``horizon_ns``, ``horizon_s`` and :data:`FEATURES`; ``attrs["rule"]`` names the truth
    and ``attrs["touch_size_unit"]`` the size unit of the features (None: the recent touch
    size at each placement, ``attrs["touch_unit_tau_ns"]`` its memory; see
    :func:`placement_features`).
    """
    if isinstance(instrument, str):
        instrument = get_instrument(instrument)
    tick = float(instrument.tick_size)
    distances = tuple(int(d) for d in distances)
    horizons = tuple(int(h) for h in horizons_ns)
    if not distances or not horizons:
        raise DataError("passive_dataset needs at least one distance and one horizon")
    placement = sample_placements(quotes, n_placements, rng, mask=mask)
    sides = np.where(rng.random(len(placement)) < 0.5, 1, -1).astype(np.int64)
    if any(h <= 0 for h in horizons):
        raise DataError(f"horizons_ns are {horizons}; expected positive horizons in nanoseconds")
    parts = []
    attrs: dict = {}
    for horizon in horizons:
        features = placement_features(quotes, trades, placement, sides, 0, np.int64(horizon), tick,
                                      touch_size_unit=touch_size_unit, touch_unit_tau_ns=touch_unit_tau_ns)
        attrs = dict(features.attrs)
        outcome_valid = features["valid"].to_numpy()
        for distance in distances:
            if trades is not None:
                outcome = passive_outcomes(quotes, trades, placement, sides, np.int64(distance), np.int64(horizon),
                                           tick, order_qty=order_qty)
            else:
                outcome = quote_through_outcomes(quotes, placement, sides, np.int64(distance), np.int64(horizon),
                                                 tick, rule=quote_fill_rule_of(None, instrument))
            part = outcome.copy()
            part["valid"] = part["valid"].to_numpy(dtype=bool) & outcome_valid
            part["horizon_ns"] = np.int64(horizon)
            part["horizon_s"] = horizon / NS_PER_SECOND
            for name in _RAW_COLUMNS + FEATURES:
                part[name] = features[name].to_numpy()
            # the one feature that depends on distance
            with np.errstate(invalid="ignore", divide="ignore"):
                part["gap_over_vol_log"] = np.log((distance + features["spread_ticks"].to_numpy())
                                                  / (features["vol_ticks"].to_numpy() + 1.0))
            parts.append(part)
    frame = pd.concat(parts, ignore_index=True)
    invalid = ~frame["valid"].to_numpy(dtype=bool)
    frame = frame[~invalid].sort_values(["placement_ts_ns", "horizon_ns", "distance_ticks"], kind="stable")
    frame = frame.reset_index(drop=True)
    frame.attrs["dropped_invalid"] = int(invalid.sum())
    frame.attrs["rule"] = "trades" if trades is not None else "quote_through"
    frame.attrs["quote_fill_rule"] = None if trades is not None else quote_fill_rule_of(None, instrument)
    frame.attrs["touch_size_unit"] = attrs["touch_size_unit"]
    frame.attrs["touch_unit_tau_ns"] = attrs["touch_unit_tau_ns"]
    return frame


def time_split(dataset: pd.DataFrame, fraction: float = 0.5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fit and held-out parts of a :func:`passive_dataset` frame, split in time at ``fraction`` of its span.

    Fit rows whose horizon reaches past the split are dropped, so no fit outcome reads
    the market of the held-out part.
    """
    if not 0 < fraction < 1:
        raise DataError(f"fraction is {fraction!r}; expected a share strictly between 0 and 1")
    ts = dataset["placement_ts_ns"].to_numpy(dtype=np.int64)
    if not len(ts):
        raise DataError("time_split: dataset is empty")
    cut = int(ts.min() + fraction * (ts.max() - ts.min()))
    ends = ts + dataset["horizon_ns"].to_numpy(dtype=np.int64)
    fit = dataset[ends <= cut].reset_index(drop=True)
    held_out = dataset[ts > cut].reset_index(drop=True)
    return fit, held_out
