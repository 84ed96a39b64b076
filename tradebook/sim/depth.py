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

The typical top size (median touch size), not the touch size of the moment, is
the unit of the depth curve: on Binance the touch is often a tiny leftover in front
of deep levels, so the touch is a poor scale for what lies behind it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

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

    def __post_init__(self) -> None:
        if not (np.isfinite(self.typical_top_size) and self.typical_top_size > 0):
            raise DataError(f"typical_top_size is {self.typical_top_size!r}; expected a positive size")
        if len(self.remainder_grid) != len(self.avg_distance_ticks) or len(self.remainder_grid) < 2:
            raise DataError("remainder_grid and avg_distance_ticks must have the same length (at least 2)")
        n = len(self.size_edges) - 1
        if not (len(self.ratio_q05) == len(self.ratio_q50) == len(self.ratio_q95) == len(self.counts) == n):
            raise DataError(f"a depth profile needs {n} ratio quantiles and counts for {len(self.size_edges)} "
                            "size edges")

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
    ) -> np.ndarray:
        """Predicted cost (bps against the mid) of walking the book with a marketable order (vectorised).

        ``side`` is 'buy'/'sell' or +1/-1 (a scalar or one per order); every other
        argument broadcasts. ``quantile`` is 0.05, 0.5 or 0.95. Raises DataError on a
        non-positive or NaN quantity, or an L1 view that is not a two-sided, uncrossed
        quote with finite non-negative sizes.
        """
        if quantile not in QUANTILES:
            raise DataError(f"quantile is {quantile!r}; expected one of {QUANTILES}")
        direction = _sides(side)
        arrays = np.broadcast_arrays(direction, *(np.asarray(a, dtype=np.float64)
                                                  for a in (quantity, bid_px, ask_px, bid_sz, ask_sz)))
        direction, qty, bid, ask, bsz, asz = (np.atleast_1d(a) for a in arrays)
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
        excess = self._excess_bps(qty, touch_sz, mid) * ratio[self._bucket(qty / self.typical_top_size)]
        # The ratio is constant within a size bucket and may fall from one bucket to the
        # next; cost must never fall as size grows, so take the running maximum over the
        # left limits at the bucket edges below q (the excess itself is non-decreasing in q).
        for k, edge in enumerate(self.size_edges[1:-1]):
            at_edge = edge * self.typical_top_size
            below = qty > at_edge
            if below.any():
                left_limit = self._excess_bps(np.full_like(qty, at_edge), touch_sz, mid) * ratio[k]
                excess = np.where(below, np.maximum(excess, left_limit), excess)
        return np.where(qty > touch_sz, half_spread + excess, half_spread)

    def _excess_bps(self, qty: np.ndarray, touch_sz: np.ndarray, mid: np.ndarray) -> np.ndarray:
        """Median cost beyond the half-spread: the remainder behind the touch walks the depth curve."""
        remainder = np.maximum(qty - touch_sz, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.where(qty > 0, remainder / qty, 0.0)
        return share * self.avg_distance(remainder / self.typical_top_size) * self.tick_size / mid * BPS

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


def _behind_touch(book: BookSnapshots, direction: int, top: float, tick: float) -> tuple[np.ndarray, np.ndarray]:
    """Per sample: levels behind the touch as (distance beyond the touch in ticks, size in typical tops)."""
    px, sz = (book.ask_px, book.ask_sz) if direction > 0 else (book.bid_px, book.bid_sz)
    distance = direction * (px[:, 1:] - px[:, :1]) / tick
    size = np.where(np.isnan(px[:, 1:]) | np.isnan(sz[:, 1:]), 0.0, sz[:, 1:]) / top
    return np.nan_to_num(distance), size


def _avg_distance_table(book: BookSnapshots, top: float, tick: float, grid: np.ndarray) -> np.ndarray:
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
) -> DepthProfile:
    """Fit a :class:`DepthProfile` from the books of a fit slice.

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
    top = typical_top_size(book)
    grid = np.asarray(_REMAINDER_GRID)
    table = _avg_distance_table(book, top, tick, grid)
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
    )
    truth = book_walk_truth(book, np.asarray(sizes_rel_top, dtype=np.float64),
                            rng if rng is not None else np.random.default_rng(0), top)
    walked = truth[truth["deep_enough"].to_numpy() & (truth["quantity"] > truth["touch_size"]).to_numpy()]
    if not len(walked):
        return profile
    predicted = profile.cost_bps(walked["side"].to_numpy(), walked["quantity"].to_numpy(),
                                 walked["bid_px"].to_numpy(), walked["ask_px"].to_numpy(),
                                 walked["bid_sz"].to_numpy(), walked["ask_sz"].to_numpy())
    hs = walked["half_spread_bps"].to_numpy()
    ratio = (walked["cost_bps"].to_numpy() - hs) / (predicted - hs)
    bucket = profile._bucket(walked["quantity"].to_numpy() / top)
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


def evaluate_book_walk(profile: DepthProfile, truth_frame: pd.DataFrame) -> BookWalkFidelity:
    """Score ``profile`` on true walks (:func:`tradebook.sim.truth.book_walk_truth`) it was not fitted on.

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
    median, low, high = (profile.cost_bps(*args, quantile=q) for q in (0.5, 0.05, 0.95))
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
