"""Block-bootstrap bands for fidelity figures: placements close in time are not independent.

Two thousand resting orders placed in ten minutes of crypto see a handful of independent
minutes of market, not two thousand independent draws. Every figure of the fidelity
report (a ratio of mean errors, a coverage share, a Brier score ratio) is therefore
given with a band from a *block* bootstrap: the scored rows are grouped into blocks of
``block_ns`` (a minute by default) by their time, whole blocks are drawn with
replacement, and the figure is recomputed on each draw. The band is the central
``level`` share of those draws.

A target is judged against the band (:func:`judge`): it is MISSED when the whole band
lies on the wrong side of the threshold (the data shows it missed), met otherwise; the
verdict also says when only the band, not the point figure, reaches the threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tradebook.errors import DataError

DEFAULT_BLOCK_NS = 60 * 1_000_000_000
DEFAULT_DRAWS = 400
DEFAULT_LEVEL = 0.90


@dataclass(frozen=True)
class Band:
    """A figure with its block-bootstrap band: ``value`` on all rows, ``low``..``high`` over the draws."""

    value: float
    low: float
    high: float
    n: int  # rows scored
    blocks: int  # independent blocks they fall in

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"


def _block_ids(ts_ns: np.ndarray, block_ns: int) -> np.ndarray:
    ts = np.asarray(ts_ns)
    if ts.ndim != 1 or not np.issubdtype(ts.dtype, np.integer):
        raise DataError(f"ts_ns must be a 1-D int64 array of UTC ns, got dtype {ts.dtype} and shape {ts.shape}")
    if not isinstance(block_ns, (int, np.integer)) or block_ns <= 0:
        raise DataError(f"block_ns is {block_ns!r}; expected a positive number of nanoseconds")
    _, ids = np.unique(ts // int(block_ns), return_inverse=True)
    return ids.reshape(-1)


def ratio_band(ts_ns: np.ndarray, numerator: np.ndarray, denominator: np.ndarray, *,
               block_ns: int = DEFAULT_BLOCK_NS, draws: int = DEFAULT_DRAWS, level: float = DEFAULT_LEVEL,
               seed: int = 0) -> Band:
    """``sum(numerator) / sum(denominator)`` (a ratio of means over the same rows) with its block band.

    Rows where either value is not finite are left out. Raises DataError when no row is
    left or when the arrays do not line up.
    """
    ts = np.asarray(ts_ns)
    num = np.asarray(numerator, dtype=np.float64)
    den = np.asarray(denominator, dtype=np.float64)
    if not (ts.shape == num.shape == den.shape):
        raise DataError(f"ts_ns, numerator and denominator must have one value per row; got shapes "
                        f"{ts.shape}, {num.shape}, {den.shape}")
    if not 0 < level < 1:
        raise DataError(f"level is {level!r}; expected a share strictly between 0 and 1")
    keep = np.isfinite(num) & np.isfinite(den)
    if not keep.any():
        raise DataError("no finite row to score; expected at least one row with both values finite")
    ts, num, den = ts[keep], num[keep], den[keep]
    ids = _block_ids(ts, block_ns)
    k = int(ids.max()) + 1
    num_b = np.bincount(ids, weights=num, minlength=k)
    den_b = np.bincount(ids, weights=den, minlength=k)
    value = float(_ratio(np.array([num.sum()]), np.array([den.sum()]))[0])
    rng = np.random.default_rng(seed)
    # each draw: k blocks with replacement, as counts per block (a multinomial), so draws x k work
    counts = rng.multinomial(k, np.full(k, 1.0 / k), size=int(draws)).astype(np.float64)
    stats = _ratio(counts @ num_b, counts @ den_b)
    stats = stats[~np.isnan(stats)]
    if not len(stats):
        return Band(value, float("nan"), float("nan"), int(len(num)), k)
    tail = (1 - level) / 2
    low, high = np.quantile(stats, [tail, 1 - tail])
    return Band(value, float(low), float(high), int(len(num)), k)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    # 0/0 is 1 (both exact: the figure is as good as what it is compared with); x/0 is +inf
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / den
    out = np.where((num == 0) & (den == 0), 1.0, out)
    return np.where((den == 0) & (num > 0), np.inf, out)


def block_length_ns(span_ns: int) -> int:
    """Blocks of a minute, shorter (down to 5 s) on data too short to hold ten of them."""
    return int(min(DEFAULT_BLOCK_NS, max(5 * 1_000_000_000, span_ns // 10)))


def mean_band(ts_ns: np.ndarray, values: np.ndarray, **kwargs) -> Band:
    """The mean of ``values`` (e.g. a coverage indicator, a squared error) with its block band."""
    values = np.asarray(values, dtype=np.float64)
    return ratio_band(ts_ns, values, np.where(np.isfinite(values), 1.0, np.nan), **kwargs)


def judge(band: Band, rule: str, threshold: float) -> tuple[bool, str]:
    """Is a target ``figure <rule> threshold`` met, judged against the band? (met, verdict text).

    ``rule`` is ``"<="`` or ``">="``. MISSED when the whole band is on the wrong side;
    "met" when the point figure meets it; "met within band" when only the band reaches it.
    A figure that could not be computed (NaN) is MISSED: nothing shows it met.
    """
    if rule not in ("<=", ">="):
        raise DataError(f"rule is {rule!r}; expected '<=' or '>='")
    if not np.isfinite(band.value):
        return False, "MISSED"
    sign = 1.0 if rule == "<=" else -1.0
    point_ok = sign * (band.value - threshold) <= 0
    favourable = band.low if rule == "<=" else band.high
    if not np.isfinite(favourable):
        favourable = band.value
    band_ok = sign * (favourable - threshold) <= 0
    if point_ok:
        return True, "met"
    if band_ok:
        return True, "met within band"
    return False, "MISSED"
