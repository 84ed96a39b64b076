"""Book walks predicted from L1 alone: what a marketable order of any size costs, seeing only the touch.

A paper venue fed with L1 quotes knows the touch (bid, ask and their sizes) but not
the book behind it. Where the instrument's history has depth (Binance L2, CME top-5)
we learn, once, what the book behind the touch usually looks like, and predict the
walk from the touch we see at decision time:

- the first ``touch_size`` units fill at the touch, at the half-spread;
- the remainder ``r`` walks a fitted *depth curve*: the median, over the fit
  samples, of the average distance beyond the touch (in ticks) at which the
  first ``r`` units behind the touch fill, tabulated on a grid of ``r`` in units of
  the instrument's typical top-of-book size. A book's cumulative depth beyond the
  touch is monotone in distance, so the median cumulative depth at distance ``d``
  and the median distance needed for ``r`` are the same curve read both ways.

So ``cost = half_spread + (r / q) * A(r) * tick / mid`` (times 1e4 for bps against
the mid) for an order of ``q`` with ``r = q - touch``; just the half-spread when
``r <= 0``. Distances are kept in ticks, not bps: CME books sit on every tick, and a
curve in bps fitted at one price level would be off by the price drift elsewhere. The 5%-95% interval
scales the predicted excess over the half-spread by quantiles of real/predicted
excess, fitted per size bucket on the fit slice's true walks. An order the touch
can absorb is exact (the L1 view *is* its price), so its interval is that point.

A recent touch size, not the touch size of the moment, is the unit of the depth
curve: on Binance the touch is often a tiny leftover in front of deep levels, so the
touch is a poor scale for what lies behind it.

Units that carry (format of a profile fitted with ``quotes``, ``touch_unit_tau_ns > 0``):
distances are in ticks of the instrument's *own* tick and sizes in multiples of its
*own recent* touch size, :func:`recent_touch_size`: the time-weighted geometric mean of
``sqrt(bid_sz * ask_sz)`` over the quotes stamped at or before the decision, with an
exponential memory of ``touch_unit_tau_ns`` (30 s by default). Nothing after the
decision enters it (a whole-capture median would leak the future), and it scales
exactly with the instrument's size unit, so a profile fitted on one instrument prices
another of the same asset class once applied to it (:meth:`DepthProfile.for_instrument`
takes the new tick) and given that instrument's own recent touch size. A profile
fitted without quotes (``touch_unit_tau_ns == 0``, the earlier format) keeps its
``typical_top_size`` (median touch of the fit books, in the fit instrument's units) as
the unit and is meant for the instrument it was fitted on only.

For the engine (the consumer of the profile): with ``unit`` the instrument's recent
touch size at the decision and ``tick`` its tick, the level structure behind the
touch is ``avg_distance(r / unit) * tick`` for a remainder ``r`` in the instrument's own
size (:meth:`DepthProfile.implied_levels` tabulates it as price offsets and sizes).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import math

import numba
import numpy as np
import pandas as pd

from tradebook.data.frames import quote_columns
from tradebook.errors import DataError
from tradebook.sim.book import BookSnapshots, parse_side, typical_top_size
from tradebook.sim.fill_model import DictRecord
from tradebook.sim.truth import book_walk_truth

BPS = 1e4
QUANTILES = (0.05, 0.5, 0.95)
# Order sizes, in typical top-of-book sizes, the issue asks to be predicted: half to twenty times.
DEFAULT_SIZES_REL_TOP: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 7.0, 10.0, 14.0, 20.0)
# Size buckets (order size / typical top size) for the interval's residual quantiles.
DEFAULT_SIZE_EDGES: tuple[float, ...] = (0.0, 0.75, 1.25, 2.5, 4.0, 6.0, 8.5, 12.0, 17.0, float("inf"))
# Remainder grid (beyond the touch, in typical top sizes) on which the depth curve is tabulated.
_REMAINDER_GRID = tuple(float(x) for x in np.geomspace(0.005, 40.0, 64))
MIN_SAMPLES = 20  # fewer deep-enough samples than this at a grid point: extrapolate instead
_EXACT_EPS = 1e-9  # relative: costs "exactly at the half-spread" differ from it only by float rounding
# Memory of the recent touch size (the unit of sizes): an exponential time weight of 30 s.
# Measured fitting on the first half of a capture and scoring book walks on the second
# (1,500 books each; MAE / touch-only MAE, closed 90% coverage), memory 10 s / 30 s /
# 120 s / 300 s / 1 h: BTCUSDT 2024 0.248 / 0.236 / 0.235 / 0.228 / 0.222 (coverage
# 0.87-0.90), ESH4 0.130 / 0.125 / 0.140 / 0.176 / 0.193 (coverage 0.97 falling to 0.85);
# the whole-fit median touch (which leaks) gave 0.221 and 0.132.
TOUCH_UNIT_TAU_NS = 30_000_000_000


# -- the unit of sizes: the instrument's own recent touch ---------------------------------
def recent_touch_size(quotes: pd.DataFrame, at_ns: np.ndarray | int,
                      tau_ns: int = TOUCH_UNIT_TAU_NS) -> np.ndarray:
    """The instrument's recent touch size at each decision time ``at_ns``: the unit sizes carry in.

    The time-weighted geometric mean of ``sqrt(bid_sz * ask_sz)`` over the quotes stamped
    at or before each time, weights ``exp(-age / tau_ns)`` (each quote's size held until
    the next quote), over the history there is (at the first quote: its own size). Only
    the past enters; quotes with a missing or non-positive size on
    either side are skipped. NaN before the first quote with sizes. Scales exactly with
    the size unit of the instrument (sizes x 20: unit x 20).

    Raises DataError for quotes without ``bid_sz``/``ask_sz`` or with none positive on
    both sides (a model that measures sizes in touch sizes needs them), a ``ts_ns`` that
    goes backwards, or ``tau_ns <= 0``.
    """
    if isinstance(tau_ns, bool) or not isinstance(tau_ns, (int, np.integer)) or tau_ns <= 0:
        raise DataError(f"tau_ns is {tau_ns!r}; expected a positive integer number of nanoseconds")
    ts, x = _touch_logs(quotes, "recent_touch_size")
    when = np.atleast_1d(np.asarray(at_ns))
    if when.size and not np.issubdtype(when.dtype, np.integer):
        raise DataError(f"at_ns has dtype {when.dtype}; expected int64 nanoseconds since the epoch, UTC")
    total, weight = _touch_log_ema(ts, x, float(tau_ns))
    row = np.searchsorted(ts, when.astype(np.int64), side="right") - 1
    safe = np.clip(row, 0, None)
    age = (when.astype(np.int64) - ts[safe]).astype(np.float64)
    decay = np.exp(-age / float(tau_ns))
    gained = -np.expm1(-age / float(tau_ns))
    total_now = decay * total[safe] + gained * x[safe]
    weight_now = decay * weight[safe] + gained
    with np.errstate(invalid="ignore", divide="ignore"):
        value = np.where(weight_now > 0, total_now / weight_now, x[safe])
    return np.where(row >= 0, np.exp(value), np.nan)


def _touch_logs(quotes: pd.DataFrame, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(ts_ns, log sqrt(bid_sz * ask_sz)) of the quotes with positive sizes on both sides."""
    if not isinstance(quotes, pd.DataFrame) or "ts_ns" not in quotes.columns:
        raise DataError(f"{what}: quotes must be a DataFrame with ts_ns, bid_sz and ask_sz")
    try:
        columns = quote_columns(quotes)  # an L1, MBP-1 or top-N frame
    except DataError:
        columns = {"bid_sz": "bid_sz", "ask_sz": "ask_sz"}  # sizes alone are enough here
    missing = [name for name in ("bid_sz", "ask_sz") if columns[name] not in quotes.columns]
    if missing:
        raise DataError(f"{what}: quotes have no sizes ({missing} missing); the model measures order sizes in "
                        "multiples of the instrument's recent touch size, so it needs quotes with bid_sz and "
                        "ask_sz")
    ts = quotes["ts_ns"].to_numpy(dtype=np.int64)
    if (np.diff(ts) < 0).any():
        raise DataError(f"{what}: quotes ts_ns goes backwards; expected non-decreasing ts_ns")
    bid = quotes[columns["bid_sz"]].to_numpy(dtype=np.float64, na_value=np.nan)
    ask = quotes[columns["ask_sz"]].to_numpy(dtype=np.float64, na_value=np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        ok = np.isfinite(bid) & np.isfinite(ask) & (bid > 0) & (ask > 0)
    if not ok.any():
        raise DataError(f"{what}: none of the {len(quotes)} quotes has a positive size on both sides (sizes "
                        "missing or zero); the model measures order sizes in multiples of the recent touch size "
                        "and needs quotes with sizes")
    return ts[ok], 0.5 * (np.log(bid[ok]) + np.log(ask[ok]))


@numba.njit(cache=True)
def _touch_log_ema(ts, x, tau):  # pragma: no cover - compiled
    """Exponentially weighted integral of the piecewise-constant ``x`` and of the weights, at each quote's time.

    Their ratio is the time-weighted mean over the history there is (no weight before the
    first quote), so the unit does not lean on the first quote for the first hour.
    """
    total = np.zeros(len(x))
    weight = np.zeros(len(x))
    for i in range(1, len(x)):
        age = (ts[i] - ts[i - 1]) / tau
        decay = math.exp(-age)
        gained = -math.expm1(-age)
        total[i] = decay * total[i - 1] + gained * x[i - 1]
        weight[i] = decay * weight[i - 1] + gained
    return total, weight


@dataclass(frozen=True)
class DepthProfile:
    """The book behind the touch, as seen from L1: a depth curve plus a residual interval per size bucket.

    ``remainder_grid`` (in typical top sizes) and ``avg_distance_ticks`` tabulate
    ``A(r)``, the median average distance beyond the touch of the first ``r`` units
    behind it; beyond the last grid point that any book reached, ``A`` grows linearly
    at the last fitted slope (the book assumed as deep per tick as where it was last
    seen). ``size_edges`` bucket order sizes (over ``typical_top_size``);
    ``ratio_q05/q50/q95`` are quantiles, per bucket, of real excess over predicted
    excess (excess = cost - half-spread) on the fit slice; ``counts`` the walks per
    bucket that set them (0: borrowed from the nearest populated bucket).
    """

    instrument_id: str
    tick_size: float
    typical_top_size: float
    remainder_grid: tuple[float, ...]
    avg_distance_ticks: tuple[float, ...]
    size_edges: tuple[float, ...]
    ratio_q05: tuple[float, ...]
    ratio_q50: tuple[float, ...]
    ratio_q95: tuple[float, ...]
    counts: tuple[int, ...]
    fit_start_ns: int
    fit_end_ns: int
    n_samples: int
    # > 0: sizes are in multiples of the instrument's own recent touch size
    # (recent_touch_size with this memory) and the profile carries to other instruments;
    # 0: the earlier format, sizes in typical_top_size (the fit instrument's units).
    touch_unit_tau_ns: int = 0
    # the instrument the depth was fitted on (instrument_id is the one it is applied to)
    fitted_on: str = ""

    def __post_init__(self) -> None:
        if not (np.isfinite(self.typical_top_size) and self.typical_top_size > 0):
            raise DataError(f"typical_top_size is {self.typical_top_size!r}; expected a positive size")
        if len(self.remainder_grid) != len(self.avg_distance_ticks) or len(self.remainder_grid) < 2:
            raise DataError("remainder_grid and avg_distance_ticks must have the same length (at least 2)")
        n = len(self.size_edges) - 1
        if not (len(self.ratio_q05) == len(self.ratio_q50) == len(self.ratio_q95) == len(self.counts) == n):
            raise DataError(f"a depth profile needs {n} ratio quantiles and counts for {len(self.size_edges)} "
                            "size edges")

    @property
    def carries(self) -> bool:
        """True when sizes are in the instrument's own recent touch size (the profile may be applied elsewhere)."""
        return self.touch_unit_tau_ns > 0

    @property
    def fit_instrument_id(self) -> str:
        return self.fitted_on or self.instrument_id

    def for_instrument(self, instrument_id: str, tick_size: float) -> DepthProfile:
        """This profile applied to ``instrument_id``: distances in ticks of its own ``tick_size``.

        Sizes then come in its own recent touch size (``touch_unit`` of :meth:`cost_bps`).
        Raises DataError for a profile of the earlier format (sizes in the fit
        instrument's units) applied to another instrument, or a non-positive tick.
        """
        tick = float(tick_size)
        if not (np.isfinite(tick) and tick > 0):
            raise DataError(f"tick_size is {tick_size!r}; expected the instrument's positive tick size")
        if instrument_id == self.fit_instrument_id:
            return replace(self, instrument_id=instrument_id, tick_size=tick, fitted_on=self.fitted_on)
        if not self.carries:
            raise DataError(f"the depth profile of {self.fit_instrument_id} keeps sizes in its own units (an "
                            f"earlier format) and cannot be applied to {instrument_id}; recalibrate with quotes "
                            "so sizes are in multiples of the recent touch size")
        return replace(self, instrument_id=instrument_id, tick_size=tick, fitted_on=self.fit_instrument_id)

    def unit(self, touch_unit: np.ndarray | float | None) -> np.ndarray | float:
        """The size unit to use: ``touch_unit`` (the recent touch size) or, for the fit instrument, the typical top."""
        if touch_unit is None:
            if self.carries and self.instrument_id != self.fit_instrument_id:
                raise DataError(f"the depth profile fitted on {self.fit_instrument_id} is applied to "
                                f"{self.instrument_id}: pass touch_unit, its own recent touch size "
                                "(tradebook.sim.depth.recent_touch_size of its quotes)")
            return self.typical_top_size
        unit = np.asarray(touch_unit, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            if not (np.isfinite(unit) & (unit > 0)).all():
                raise DataError("touch_unit must be a positive finite size for every order (the recent touch "
                                "size; NaN before the first quote with sizes)")
        return unit

    def implied_levels(self, max_rel: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The L1-implied book behind the touch: (distance beyond the touch in ticks, size in touch units) per level.

        Unitless, for the engine: multiply distances by the instrument's own tick and
        sizes by its recent touch size. Levels follow the fitted grid (each level holds
        the increment of the grid, at the marginal distance that keeps ``A(r)``), then
        extend to ``max_rel`` units (default 4x the fitted depth) at the last slope.
        """
        grid = np.asarray(self.remainder_grid, dtype=np.float64)
        limit = float(max_rel) if max_rel is not None else 4.0 * grid[-1]
        if limit > grid[-1]:
            extra = np.geomspace(grid[-1], limit, 9)[1:]
            grid = np.concatenate([grid, extra])
        notional = grid * self.avg_distance(grid)
        sizes = np.diff(np.concatenate([[0.0], grid]))
        marginal = np.diff(np.concatenate([[0.0], notional])) / sizes
        return np.maximum.accumulate(np.maximum(marginal, 0.0)), sizes

    # -- prediction --------------------------------------------------------------------
    def avg_distance(self, remainder_rel_top: np.ndarray) -> np.ndarray:
        """``A(r)``: the average distance beyond the touch (ticks) of the first ``r`` typical-top units behind it."""
        r = np.asarray(remainder_rel_top, dtype=np.float64)
        grid = np.asarray(self.remainder_grid)
        curve = np.asarray(self.avg_distance_ticks)
        inside = np.interp(np.log(np.clip(r, grid[0], grid[-1])), np.log(grid), curve)
        slope = (curve[-1] - curve[-2]) / (grid[-1] - grid[-2])
        return np.where(r > grid[-1], curve[-1] + slope * (r - grid[-1]), inside)

    def cost_bps(
        self,
        side: str | int | np.ndarray,
        quantity: np.ndarray | float,
        bid_px: np.ndarray | float,
        ask_px: np.ndarray | float,
        bid_sz: np.ndarray | float,
        ask_sz: np.ndarray | float,
        quantile: float = 0.5,
        touch_unit: np.ndarray | float | None = None,
    ) -> np.ndarray:
        """Predicted cost (bps against the mid) of walking the book with a marketable order (vectorised).

        ``side`` is 'buy'/'sell' or +1/-1 (a scalar or one per order); every other
        argument broadcasts. ``quantile`` is 0.05, 0.5 or 0.95. ``touch_unit`` is the
        instrument's recent touch size at each decision (:func:`recent_touch_size`);
        None uses the fit's typical top, which only a profile used on its own fit
        instrument may. Raises DataError on a non-positive or NaN quantity or unit, or
        an L1 view that is not a two-sided, uncrossed quote with finite non-negative sizes.
        """
        if quantile not in QUANTILES:
            raise DataError(f"quantile is {quantile!r}; expected one of {QUANTILES}")
        direction = _sides(side)
        unit_in = self.unit(touch_unit)
        arrays = np.broadcast_arrays(direction, *(np.asarray(a, dtype=np.float64)
                                                  for a in (quantity, bid_px, ask_px, bid_sz, ask_sz, unit_in)))
        direction, qty, bid, ask, bsz, asz, unit = (np.atleast_1d(a) for a in arrays)
        if np.isnan(qty).any() or (qty <= 0).any():
            raise DataError("quantity must be positive and not NaN for every order")
        with np.errstate(invalid="ignore"):
            bad_quote = ~(np.isfinite(bid) & np.isfinite(ask) & (bid > 0) & (bid < ask)
                          & np.isfinite(bsz) & np.isfinite(asz) & (bsz >= 0) & (asz >= 0))
        if bad_quote.any():
            i = int(np.flatnonzero(bad_quote)[0])
            raise DataError(f"L1 view {i} (bid {bid[i]}, ask {ask[i]}, bid_sz {bsz[i]}, ask_sz {asz[i]}) is not "
                            "usable; expected finite prices with 0 < bid < ask and finite sizes >= 0")
        mid = (bid + ask) / 2
        touch_px = np.where(direction > 0, ask, bid)
        touch_sz = np.where(direction > 0, asz, bsz)
        # the same arithmetic as the truth's, so an order the touch absorbs is predicted bit-exactly
        half_spread = direction * (touch_px - mid) / mid * BPS
        ratio = np.asarray({0.05: self.ratio_q05, 0.5: self.ratio_q50, 0.95: self.ratio_q95}[quantile])
        excess = self._excess_bps(qty, touch_sz, mid, unit) * ratio[self._bucket(qty / unit)]
        # The ratio is constant within a size bucket and may fall from one bucket to the
        # next; cost must never fall as size grows, so take the running maximum over the
        # left limits at the bucket edges below q (the excess itself is non-decreasing in q).
        for k, edge in enumerate(self.size_edges[1:-1]):
            at_edge = edge * unit
            below = qty > at_edge
            if below.any():
                left_limit = self._excess_bps(at_edge, touch_sz, mid, unit) * ratio[k]
                excess = np.where(below, np.maximum(excess, left_limit), excess)
        return np.where(qty > touch_sz, half_spread + excess, half_spread)

    def _excess_bps(self, qty: np.ndarray, touch_sz: np.ndarray, mid: np.ndarray,
                    unit: np.ndarray | float) -> np.ndarray:
        """Median cost beyond the half-spread: the remainder behind the touch walks the depth curve."""
        remainder = np.maximum(qty - touch_sz, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.where(qty > 0, remainder / qty, 0.0)
        return share * self.avg_distance(remainder / unit) * self.tick_size / mid * BPS

    def _bucket(self, size_rel_top: np.ndarray) -> np.ndarray:
        edges = np.asarray(self.size_edges)
        return np.clip(np.searchsorted(edges, size_rel_top, side="right") - 1, 0, len(edges) - 2)

    # -- storage -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain JSON-able values (NaN allowed), for FillModel and the store."""
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> DepthProfile:
        try:
            values = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
            values["counts"] = tuple(int(c) for c in values["counts"])
            return cls(**values)
        except (TypeError, KeyError) as error:
            raise DataError(f"not a DepthProfile dict ({error}); expected the keys of DepthProfile.to_dict()") \
                from error


def _sides(side: str | int | np.ndarray) -> np.ndarray:
    values = np.asarray(side)
    if values.ndim == 0:
        return np.array(parse_side(values.item()), dtype=np.int64)
    if np.issubdtype(values.dtype, np.integer):
        if not np.isin(values, (1, -1)).all():
            raise DataError("side must be +1 (buy) or -1 (sell) for every order")
        return values.astype(np.int64)
    return np.array([parse_side(s) for s in values.ravel()], dtype=np.int64).reshape(values.shape)


# -- fitting -----------------------------------------------------------------------------
def _usable(snapshots: BookSnapshots, what: str) -> BookSnapshots:
    if not len(snapshots) or snapshots.levels == 0:
        raise DataError(f"{what}: no book snapshots; expected samples of a book with at least one level")
    book = snapshots.select(snapshots.two_sided)
    if not len(book):
        raise DataError(f"{what}: none of the {len(snapshots)} snapshots has a two-sided, uncrossed touch")
    return book


def _behind_touch(book: BookSnapshots, direction: int, top: np.ndarray, tick: float) -> tuple[np.ndarray, np.ndarray]:
    """Per sample: levels behind the touch as (distance beyond the touch in ticks, size in units ``top``)."""
    px, sz = (book.ask_px, book.ask_sz) if direction > 0 else (book.bid_px, book.bid_sz)
    distance = direction * (px[:, 1:] - px[:, :1]) / tick
    size = np.where(np.isnan(px[:, 1:]) | np.isnan(sz[:, 1:]), 0.0, sz[:, 1:]) / np.reshape(top, (-1, 1))
    return np.nan_to_num(distance), size


def check_instrument(frame: pd.DataFrame | None, instrument_id: str, what: str) -> None:
    """Refuse a frame whose ``attrs["instrument"]`` (set by the store and loaders) names another instrument.

    A depth or quote file of another instrument would fit, silently, a profile of the
    wrong book. Frames without the attribute are taken as the caller says.
    """
    if frame is None or not instrument_id:
        return
    other = getattr(frame, "attrs", {}).get("instrument") or getattr(frame, "attrs", {}).get("instrument_id")
    other = getattr(other, "instrument_id", other)
    if other and str(other) != instrument_id:
        raise DataError(f"{what} is for {other}, not {instrument_id}; expected data of the instrument being "
                        "calibrated")


def _avg_distance_table(book: BookSnapshots, top: np.ndarray, tick: float, grid: np.ndarray) -> np.ndarray:
    """(samples x 2 sides, grid) average distance beyond the touch of the first r units behind it; NaN if shallower."""
    rows = []
    for direction in (1, -1):
        distance, size = _behind_touch(book, direction, top, tick)
        cum = np.cumsum(size, axis=1)
        cum_notional = np.cumsum(size * distance, axis=1)
        n, levels = size.shape
        table = np.full((n, len(grid)), np.nan)
        if levels:
            index = np.arange(n)
            for k, r in enumerate(grid):
                # level j fills the part of r beyond the levels before it
                j = np.sum(cum < r * (1 - 1e-12), axis=1)
                deep = j < levels
                jj = np.minimum(j, levels - 1)
                before = np.where(jj > 0, cum[index, jj - 1], 0.0)
                notional_before = np.where(jj > 0, cum_notional[index, jj - 1], 0.0)
                avg = (notional_before + (r - before) * distance[index, jj]) / r
                table[:, k] = np.where(deep, avg, np.nan)
        rows.append(table)
    return np.vstack(rows)


def fit_depth_profile(
    snapshots: BookSnapshots,
    tick: float,
    *,
    sizes_rel_top: tuple[float, ...] | np.ndarray = DEFAULT_SIZES_REL_TOP,
    rng: np.random.Generator | None = None,
    instrument_id: str = "",
    size_edges: tuple[float, ...] = DEFAULT_SIZE_EDGES,
    min_samples: int = MIN_SAMPLES,
    quotes: pd.DataFrame | None = None,
    touch_unit_tau_ns: int = TOUCH_UNIT_TAU_NS,
) -> DepthProfile:
    """Fit a :class:`DepthProfile` from the books of a fit slice.

    With ``quotes`` (the L1 stream of the same instrument and time) sizes are fitted in
    multiples of the recent touch size at each snapshot (:func:`recent_touch_size`,
    memory ``touch_unit_tau_ns``): the profile then carries to other days and
    instruments. Without, they are in the fit books' typical top (the earlier format,
    for the fit instrument only). Snapshots stamped before the first quote with sizes
    are dropped (no unit is known there yet).

    The depth curve comes from every two-sided snapshot, both sides. The interval
    comes from true walks of those books (:func:`tradebook.sim.truth.book_walk_truth`,
    sizes ``sizes_rel_top`` times the typical top size with its default size jitter
    drawn from ``rng``; ``None`` = ``default_rng(0)``): the 5/50/95% quantiles of real
    over predicted excess per size bucket, for walks that went beyond the touch and
    that the visible book could hold. Raises DataError on an empty or one-sided set
    of snapshots or a non-positive tick.
    """
    tick = float(tick)
    if not (np.isfinite(tick) and tick > 0):
        raise DataError(f"tick is {tick!r}; expected the instrument's positive tick size")
    edges = np.asarray(size_edges, dtype=np.float64)
    if len(edges) < 2 or edges[0] != 0 or (np.diff(edges) <= 0).any():
        raise DataError(f"size_edges is {size_edges!r}; expected increasing bucket edges starting at 0")
    book = _usable(snapshots, "fit_depth_profile")
    tau = 0
    if quotes is not None:
        check_instrument(quotes, instrument_id, "the quotes given to fit_depth_profile")
        units = recent_touch_size(quotes, book.ts_ns, touch_unit_tau_ns)
        book = book.select(np.isfinite(units))
        if not len(book):
            raise DataError("fit_depth_profile: every book snapshot is stamped before the first quote with sizes; "
                            "expected quotes covering the books' time")
        units = units[np.isfinite(units)]
        tau = int(touch_unit_tau_ns)
    top = typical_top_size(book)
    if quotes is None:
        units = np.full(len(book), top)
    grid = np.asarray(_REMAINDER_GRID)
    table = _avg_distance_table(book, units, tick, grid)
    curve = np.full(len(grid), np.nan)
    for k in range(len(grid)):
        deep = table[:, k][np.isfinite(table[:, k])]
        if len(deep) >= min_samples:
            curve[k] = np.median(deep)
    fitted = np.flatnonzero(np.isfinite(curve))
    if len(fitted) < 2:
        raise DataError(f"fit_depth_profile: the books behind the touch hold too little to fit a depth curve "
                        f"({len(fitted)} of {len(grid)} grid sizes had {min_samples} deep-enough samples); "
                        "expected books with levels beyond the touch")
    last = fitted[-1]
    # Per-sample A(r) never falls as r grows, nor does its median; the running max only
    # guards the columns where the shallowest books have dropped out of the median.
    curve = curve[: last + 1]
    curve[: fitted[0]] = curve[fitted[0]]
    curve = np.maximum.accumulate(np.where(np.isfinite(curve), curve, -np.inf))
    profile = DepthProfile(
        instrument_id=instrument_id,
        tick_size=tick,
        typical_top_size=float(top),
        remainder_grid=tuple(float(x) for x in grid[: last + 1]),
        avg_distance_ticks=tuple(float(x) for x in curve),
        size_edges=tuple(float(e) for e in size_edges),
        ratio_q05=tuple([1.0] * (len(size_edges) - 1)),
        ratio_q50=tuple([1.0] * (len(size_edges) - 1)),
        ratio_q95=tuple([1.0] * (len(size_edges) - 1)),
        counts=tuple([0] * (len(size_edges) - 1)),
        fit_start_ns=int(book.ts_ns.min()),
        fit_end_ns=int(book.ts_ns.max()),
        n_samples=len(book),
        touch_unit_tau_ns=tau,
        fitted_on=instrument_id,
    )
    truth = book_walk_truth(book, np.asarray(sizes_rel_top, dtype=np.float64),
                            rng if rng is not None else np.random.default_rng(0), top)
    truth_units = units[truth["sample"].to_numpy()]
    keep = truth["deep_enough"].to_numpy() & (truth["quantity"] > truth["touch_size"]).to_numpy()
    walked, walked_units = truth[keep], truth_units[keep]
    if not len(walked):
        return profile
    predicted = profile.cost_bps(walked["side"].to_numpy(), walked["quantity"].to_numpy(),
                                 walked["bid_px"].to_numpy(), walked["ask_px"].to_numpy(),
                                 walked["bid_sz"].to_numpy(), walked["ask_sz"].to_numpy(), touch_unit=walked_units)
    hs = walked["half_spread_bps"].to_numpy()
    ratio = (walked["cost_bps"].to_numpy() - hs) / (predicted - hs)
    bucket = profile._bucket(walked["quantity"].to_numpy() / walked_units)
    n_buckets = len(size_edges) - 1
    counts = np.bincount(bucket, minlength=n_buckets)
    quantiles = np.full((3, n_buckets), np.nan)
    for b in np.flatnonzero(counts >= min_samples):
        quantiles[:, b] = np.quantile(ratio[bucket == b], QUANTILES)
    populated = np.flatnonzero(np.isfinite(quantiles[1]))
    if not len(populated):
        quantiles[:] = np.quantile(ratio, QUANTILES)[:, None]
    else:
        nearest = populated[np.argmin(np.abs(np.arange(n_buckets)[:, None] - populated[None, :]), axis=1)]
        quantiles = quantiles[:, nearest]
    return DepthProfile(**{
        **profile.to_dict(),
        "ratio_q05": tuple(float(v) for v in quantiles[0]),
        "ratio_q50": tuple(float(v) for v in quantiles[1]),
        "ratio_q95": tuple(float(v) for v in quantiles[2]),
        "counts": tuple(int(c) if c >= min_samples else 0 for c in counts),
    })



# -- depth implied by L1 alone: what the touch shows when it is used up -------------------------
L1_LADDER_LEVELS = 60  # levels behind the touch of each implied book


def _l1_arrays(quotes: pd.DataFrame, what: str) -> tuple[np.ndarray, ...]:
    """(ts_ns, bid_px, ask_px, bid_sz, ask_sz) of an L1, MBP-1 or top-N frame; DataError without sizes."""
    columns = quote_columns(quotes)
    missing = [columns[c] for c in ("bid_px", "ask_px", "bid_sz", "ask_sz") if columns[c] not in quotes.columns]
    if missing:
        raise DataError(f"{what}: quotes lack {missing}; the depth an L1 feed implies is read from the touch's "
                        "prices and sizes")
    return (quotes["ts_ns"].to_numpy(np.int64),
            *(quotes[columns[c]].to_numpy(np.float64, na_value=np.nan) for c in ("bid_px", "ask_px", "bid_sz",
                                                                                 "ask_sz")))


def touch_depletions(quotes: pd.DataFrame, tick: float) -> pd.DataFrame:
    """The levels an L1 feed reveals: each time the touch is used up, what stood behind it.

    When the ask rises (the bid falls), the new touch is the level that stood behind the
    old one: its distance beyond it (ticks of ``tick``) and its size, in multiples of the
    instrument's recent touch size just before (:func:`recent_touch_size`, only the past).
    One row per such move (cancellations that empty a level look the same: the level
    behind is what a walk would have met either way), columns ``ts_ns``, ``gap_ticks``,
    ``size_rel``. Raises DataError for quotes without sizes or a non-positive tick.
    """
    tick = float(tick)
    if not (np.isfinite(tick) and tick > 0):
        raise DataError(f"tick is {tick!r}; expected the instrument's positive tick size")
    ts, bid, ask, bid_sz, ask_sz = _l1_arrays(quotes, "touch_depletions")
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(bid) & np.isfinite(ask) & (bid < ask) & (bid_sz > 0) & (ask_sz > 0)
    ts, bid, ask, bid_sz, ask_sz = ts[ok], bid[ok], ask[ok], bid_sz[ok], ask_sz[ok]
    if len(ts) < 2:
        return pd.DataFrame({"ts_ns": np.zeros(0, np.int64), "gap_ticks": np.zeros(0), "size_rel": np.zeros(0)})
    unit = recent_touch_size(quotes, ts - 1)
    up = np.flatnonzero(np.diff(ask) > 0) + 1
    down = np.flatnonzero(np.diff(bid) < 0) + 1
    rows = np.concatenate([up, down])
    gap = np.concatenate([(ask[up] - ask[up - 1]), (bid[down - 1] - bid[down])]) / tick
    size = np.concatenate([ask_sz[up], bid_sz[down]]) / unit[rows]
    frame = pd.DataFrame({"ts_ns": ts[rows], "gap_ticks": np.maximum(np.round(gap), 1.0), "size_rel": size})
    frame = frame[np.isfinite(frame["size_rel"].to_numpy())]
    return frame.sort_values("ts_ns", kind="stable").reset_index(drop=True)


def implied_books(quotes: pd.DataFrame, tick: float, rng: np.random.Generator, n: int,
                  levels: int = L1_LADDER_LEVELS) -> BookSnapshots | None:
    """Books an L1 feed implies: the real touch at ``n`` random quotes, behind it levels drawn from its depletions.

    Each book behind each touch is ``levels`` levels whose (gap, size) pairs are drawn with
    replacement from :func:`touch_depletions` (sizes back in the instrument's units with the
    recent touch size at the quote). None when the quotes show no depletion.
    """
    events = touch_depletions(quotes, tick)
    if not len(events):
        return None
    ts, bid, ask, bid_sz, ask_sz = _l1_arrays(quotes, "implied_books")
    with np.errstate(invalid="ignore"):
        ok = np.flatnonzero(np.isfinite(bid) & np.isfinite(ask) & (bid < ask) & (bid_sz > 0) & (ask_sz > 0))
    if not len(ok):
        return None
    rows = np.sort(rng.choice(ok, n))
    unit = recent_touch_size(quotes, ts[rows])
    gaps, sizes = events["gap_ticks"].to_numpy(), events["size_rel"].to_numpy()
    out = {}
    for name, touch_px, touch_sz, direction in (("bid", bid, bid_sz, -1), ("ask", ask, ask_sz, 1)):
        draw = rng.integers(0, len(events), (n, levels))
        distance = np.cumsum(gaps[draw], axis=1) * tick
        px = np.column_stack([touch_px[rows], touch_px[rows][:, None] + direction * distance])
        sz = np.column_stack([touch_sz[rows], sizes[draw] * unit[:, None]])
        out[f"{name}_px"], out[f"{name}_sz"] = px, sz
    return BookSnapshots(ts[rows], out["bid_px"], out["bid_sz"], out["ask_px"], out["ask_sz"])


def fit_l1_depth_profile(quotes: pd.DataFrame, tick: float, *, rng: np.random.Generator | None = None,
                         instrument_id: str = "", n: int = 1500) -> DepthProfile:
    """A :class:`DepthProfile` for an instrument whose data has no depth, from its L1 quotes alone.

    The books behind the touch are those :func:`implied_books` draws from the touch's own
    depletions; the depth curve and its interval are fitted on them as on real books
    (:func:`fit_depth_profile`, sizes in the recent touch size, distances in ticks), so
    the interval says how much the walk varies with the levels the touch revealed. Raises
    DataError when the quotes show no depletion of the touch.
    """
    check_instrument(quotes, instrument_id, "the quotes given to fit_l1_depth_profile")
    rng = rng if rng is not None else np.random.default_rng(0)
    books = implied_books(quotes, tick, rng, n)
    if books is None:
        raise DataError("fit_l1_depth_profile: the quotes never show the touch used up (no ask rising, no bid "
                        "falling with sizes); expected an L1 feed with sizes over some price moves")
    return fit_depth_profile(books, tick, rng=rng, instrument_id=instrument_id, quotes=quotes)



def l1_depth_check(profile: DepthProfile, sweeps: pd.DataFrame, quotes: pd.DataFrame) -> dict:
    """Does an L1-implied profile price the fit data's own sweeps beyond the touch at least as well as the touch?

    ``sweeps`` (:func:`tradebook.sim.truth.sweeps` of the fit data) that were larger than
    the touch they met are priced by ``profile`` (median) and by the touch alone (the
    half-spread); ``holds`` is True when the profile's MAE is not above the touch's, or
    when no sweep went beyond the touch (nothing in the trades contradicts the depth the
    touch revealed), and False without sweeps at all (nothing to check it against).
    Returns ``{"holds", "sweeps_beyond_touch", "mae_profile_bps", "mae_touch_bps"}``.
    """
    out = {"holds": False, "sweeps_beyond_touch": 0, "mae_profile_bps": float("nan"),
           "mae_touch_bps": float("nan")}
    if not len(sweeps):
        return out
    big = sweeps[(sweeps["quantity"] > sweeps["touch_size"]) & np.isfinite(sweeps["cost_bps"])
                 & (sweeps["half_spread_bps"] > 0)]
    unit = recent_touch_size(quotes, big["ts_ns"].to_numpy(np.int64)) if len(big) else np.zeros(0)
    big, unit = big[np.isfinite(unit)], unit[np.isfinite(unit)]
    out["sweeps_beyond_touch"] = int(len(big))
    if not len(big):
        out["holds"] = True
        return out
    predicted = profile.cost_bps(big["side"].to_numpy(), big["quantity"].to_numpy(), big["bid_px"].to_numpy(),
                                 big["ask_px"].to_numpy(), big["bid_sz"].to_numpy(), big["ask_sz"].to_numpy(),
                                 touch_unit=unit)
    cost = big["cost_bps"].to_numpy()
    out["mae_profile_bps"] = float(np.mean(np.abs(cost - predicted)))
    out["mae_touch_bps"] = float(np.mean(np.abs(cost - big["half_spread_bps"].to_numpy())))
    out["holds"] = out["mae_profile_bps"] <= out["mae_touch_bps"]
    return out


# -- fidelity ----------------------------------------------------------------------------
@dataclass(frozen=True)
class BookWalkFidelity(DictRecord):
    """Predicted book walks against true ones (rows the visible book could not hold are counted, not scored).

    Baseline (b) is the touch alone: the whole quantity at the touch price (cost =
    half-spread). The per-size tables are aligned with ``sizes_rel_top``.
    """

    n: int
    n_not_deep_enough: int
    mae_model_bps: float
    mae_baseline_b_bps: float
    ratio: float
    coverage_closed: float
    coverage_open: float
    mean_cost_bps: float
    sizes_rel_top: tuple[float, ...]
    n_by_size: tuple[int, ...]
    not_deep_enough_by_size: tuple[int, ...]
    mae_model_by_size: tuple[float, ...]
    mae_baseline_b_by_size: tuple[float, ...]
    coverage_closed_by_size: tuple[float, ...]
    mean_cost_by_size: tuple[float, ...]

    def targets(self) -> dict[str, tuple[float, str, bool]]:
        """Each issue-3 book-walk target: (value, the rule, met?)."""
        return {
            "book walk MAE / baseline (b) MAE": (self.ratio, "<= 0.4", bool(self.ratio <= 0.4)),
            "90% interval coverage, closed": (self.coverage_closed, ">= 0.85", bool(self.coverage_closed >= 0.85)),
            "90% interval coverage, open": (self.coverage_open, "<= 0.95", bool(self.coverage_open <= 0.95)),
        }

    def table(self) -> pd.DataFrame:
        """One row per order size (in typical top sizes): counts, MAEs, coverage and mean true cost."""
        return pd.DataFrame({
            "size_rel_top": self.sizes_rel_top, "n": self.n_by_size,
            "not_deep_enough": self.not_deep_enough_by_size, "mae_model_bps": self.mae_model_by_size,
            "mae_baseline_b_bps": self.mae_baseline_b_by_size, "coverage_closed": self.coverage_closed_by_size,
            "mean_cost_bps": self.mean_cost_by_size,
        })



_TRUTH_COLUMNS = ("side", "quantity", "bid_px", "ask_px", "bid_sz", "ask_sz", "half_spread_bps", "cost_bps",
                  "deep_enough", "size_rel_top")


def evaluate_book_walk(profile: DepthProfile, truth_frame: pd.DataFrame, *,
                       quotes: pd.DataFrame | None = None) -> BookWalkFidelity:
    """Score ``profile`` on true walks (:func:`tradebook.sim.truth.book_walk_truth`) it was not fitted on.

    ``quotes`` (the scored instrument's L1 stream) give each walk its recent touch size,
    the unit a carrying profile reads sizes in; without them a ``touch_unit`` column of
    the truth frame is used if there is one, else the profile's fit typical top (only
    right on the fit instrument: a profile applied to another instrument needs them).

    Rows whose visible book was too shallow (``deep_enough`` False, NaN cost) are
    counted in ``n_not_deep_enough`` and excluded. Coverage of the 5%-95% interval
    is counted closed (``low <= cost <= high``) and open (strictly inside), with a
    relative 1e-9 slack for float rounding: many true costs sit exactly at the
    half-spread, where the interval is that single point.
    """
    missing = [c for c in _TRUTH_COLUMNS if c not in truth_frame.columns]
    if missing:
        raise DataError(f"truth frame lacks {missing}; build it with tradebook.sim.truth.book_walk_truth")
    deep = truth_frame["deep_enough"].to_numpy(dtype=bool) & np.isfinite(truth_frame["cost_bps"].to_numpy())
    rows = truth_frame[deep]
    if not len(rows):
        raise DataError(f"truth frame has no row the visible book could hold ({len(truth_frame)} rows, none "
                        "deep enough); expected book walks with a finite cost_bps")
    args = [rows[c].to_numpy() for c in ("side", "quantity", "bid_px", "ask_px", "bid_sz", "ask_sz")]
    unit = None
    if quotes is not None:
        check_instrument(quotes, profile.instrument_id, "the quotes given to evaluate_book_walk")
        if "ts_ns" not in rows.columns:
            raise DataError("evaluate_book_walk: the truth frame has no ts_ns to find each walk's recent touch size")
        unit = recent_touch_size(quotes, rows["ts_ns"].to_numpy(dtype=np.int64),
                                 profile.touch_unit_tau_ns or TOUCH_UNIT_TAU_NS)
        if not np.isfinite(unit).all():
            raise DataError("evaluate_book_walk: some walks are stamped before the first quote with sizes; "
                            "expected quotes covering the walks' time")
    elif "touch_unit" in rows.columns:
        unit = rows["touch_unit"].to_numpy(dtype=np.float64)
    median, low, high = (profile.cost_bps(*args, quantile=q, touch_unit=unit) for q in (0.5, 0.05, 0.95))
    cost = rows["cost_bps"].to_numpy()
    hs = rows["half_spread_bps"].to_numpy()
    eps = _EXACT_EPS * np.maximum(np.abs(cost), 1.0)
    err_model, err_base = np.abs(cost - median), np.abs(cost - hs)
    closed = (low - eps <= cost) & (cost <= high + eps)
    open_ = (low + eps < cost) & (cost < high - eps)
    sizes = np.unique(truth_frame["size_rel_top"].to_numpy())
    all_sizes = truth_frame["size_rel_top"].to_numpy()
    kept_sizes = rows["size_rel_top"].to_numpy()

    def per_size(values: np.ndarray) -> tuple[float, ...]:
        return tuple(float(np.mean(values[kept_sizes == s])) if np.any(kept_sizes == s) else float("nan")
                     for s in sizes)

    mae_model, mae_base = float(err_model.mean()), float(err_base.mean())
    return BookWalkFidelity(
        n=int(len(rows)),
        n_not_deep_enough=int((~deep).sum()),
        mae_model_bps=mae_model,
        mae_baseline_b_bps=mae_base,
        ratio=mae_model / mae_base if mae_base > 0 else float("nan"),
        coverage_closed=float(closed.mean()),
        coverage_open=float(open_.mean()),
        mean_cost_bps=float(cost.mean()),
        sizes_rel_top=tuple(float(s) for s in sizes),
        n_by_size=tuple(int(np.sum(kept_sizes == s)) for s in sizes),
        not_deep_enough_by_size=tuple(int(np.sum((all_sizes == s) & ~deep)) for s in sizes),
        mae_model_by_size=per_size(err_model),
        mae_baseline_b_by_size=per_size(err_base),
        coverage_closed_by_size=per_size(closed.astype(np.float64)),
        mean_cost_by_size=per_size(cost),
    )
