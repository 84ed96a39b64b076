"""Causality checks run before any backtest or session: the lookahead check and the trailing-window check.

Lookahead: a causal strategy's signal at bar t depends only on bars <= t, so computing the signals on the
history cut after bar c-1 must give, for every bar < c, the same values as the full run (within a
numerical tolerance: an FFT moving average differs by rounding). Cuts are drawn at random (half of them
on bars where the full run's targets change or are held, where a peek shows for strategies that trade
rarely) and at the last few bars (a peek confined to the end of the history).

Trailing window: a session hands ``signals`` only the last ``window`` complete bars and acts on the
newest row, which must equal the full run's row at that bar. Expanding statistics and cumulative maxima
never do; rolling ones do once the window covers their warm-up. The check finds the shortest such window
by doubling, at sampled bars (random ones and bars where the targets change).

Results are cached per (strategy class and code, parameters, instruments, bars content, check settings):
a sweep or a notebook re-run does not check the same thing twice.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tradebook.errors import LookaheadError, ResearchError, TrailingWindowError
from tradebook.research.bars import Bars
from tradebook.research.strategy import Strategy, check_bars_for, raw_signals, targets_from_raw

_CACHE: OrderedDict[tuple, object] = OrderedDict()
_CACHE_SIZE = 1024
_WINDOW_HINTS: dict[tuple, int] = {}  # (strategy code, bars) -> the last power-of-two window found


@dataclass(frozen=True)
class LookaheadReport:
    """A passed lookahead check: the cuts (numbers of bars kept) compared and the largest difference seen."""

    strategy: str
    n_bars: int
    cuts: tuple[int, ...]
    max_abs_diff: float
    seconds: float
    ok: bool = True

    def __str__(self) -> str:
        return (f"{self.strategy}: causal on {len(self.cuts)} cuts of {self.n_bars} bars "
                f"(largest difference {self.max_abs_diff:.3g}, {self.seconds:.2f} s)")


@dataclass(frozen=True)
class TrailingReport:
    """The trailing-window check: ``window`` is the shortest window found (None: none up to ``max_window``),
    ``requested`` the one asked for (argument or strategy.window), ``ok`` whether the window a session
    would use reproduces the full run at the sampled bars; ``tried``: (window, reproduced) pairs."""

    strategy: str
    window: int | None
    requested: int | None
    ok: bool
    max_window: int
    points: tuple[int, ...]
    tried: tuple[tuple[int, bool], ...]
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class PreparedStrategy:
    """A strategy that passed the checks, its validated targets on the bars, and its session window.

    Unpacks as ``strategy, targets, window = prepare(...)``. ``window``/``trailing`` are None for sweep
    trials prepared with :func:`prepare_sweep` (no session runs them; prepare the chosen one).
    """

    strategy: Strategy
    targets: pd.DataFrame
    window: int | None
    lookahead: LookaheadReport
    trailing: TrailingReport | None

    def __iter__(self) -> Iterator:
        return iter((self.strategy, self.targets, self.window))


# -- helpers ---------------------------------------------------------------------------------------
def _close(a: np.ndarray, b: np.ndarray, rtol: float, atol: float) -> np.ndarray:
    """Elementwise equality within tolerance; NaN equals NaN, inf equals the same inf."""
    with np.errstate(invalid="ignore"):
        return (a == b) | (np.isnan(a) & np.isnan(b)) | (np.abs(a - b) <= atol + rtol * np.abs(b))


def _first(mask: np.ndarray) -> tuple[int, int]:
    rows = np.flatnonzero(mask.any(axis=1))
    row = int(rows[0])
    return row, int(np.flatnonzero(mask[row])[0])


def _interesting_rows(full: np.ndarray) -> np.ndarray:
    """Rows where some instrument's signal changes or is nonzero: where a peek has something to change."""
    finite = np.where(np.isnan(full), 0.0, full)
    changed = np.zeros(len(full), dtype=bool)
    if len(full) > 1:
        changed[1:] = (finite[1:] != finite[:-1]).any(axis=1)
    return np.flatnonzero(changed | (finite != 0).any(axis=1))


def _code_key(strategy: Strategy) -> tuple:
    """The class and the code of its signals(): a redefined class in a notebook is checked again."""
    cls = type(strategy)
    code = getattr(cls.signals, "__code__", None)
    digest = "" if code is None else hashlib.blake2b(
        code.co_code + repr(code.co_consts).encode() + repr(code.co_names).encode(), digest_size=8).hexdigest()
    return (id(cls), digest)


def _cache_get(key: tuple):
    hit = _CACHE.get(key)
    if hit is not None:
        _CACHE.move_to_end(key)
    return hit


def _cache_put(key: tuple, value) -> None:
    _CACHE[key] = value
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)


def clear_cache() -> None:
    """Forget every cached check result (the checks then run again)."""
    _CACHE.clear()
    _WINDOW_HINTS.clear()


def _describe(values: np.ndarray, row: int, col: int) -> str:
    return repr(float(values[row, col]))


# -- lookahead -------------------------------------------------------------------------------------
def _choose_cuts(n: int, full: np.ndarray, n_cuts: int, n_tail_cuts: int, seed: int,
                 max_cut: int | None = None) -> list[int]:
    """Numbers of bars kept: n_tail_cuts at the end (n-1, n-2, ...) and n_cuts drawn at random (below
    ``max_cut`` when given), half of them just after a row where the full run's signals change or are
    held (c = row + 1)."""
    tail = [n - k for k in range(1, n_tail_cuts + 1) if n - k >= 1]
    hi = n - len(tail)  # random cuts keep fewer bars than the tail cuts
    if max_cut is not None:
        hi = max(min(hi, max_cut), 2)
    if hi <= 1 or n_cuts <= 0:
        return sorted(set(tail))
    rng = np.random.default_rng(seed)
    rows = _interesting_rows(full)
    rows = rows[(rows + 1 >= 1) & (rows + 1 < hi)]
    n_on_rows = min((n_cuts + 1) // 2, len(rows))
    picked = set()
    if n_on_rows:
        picked.update(int(r) + 1 for r in rng.choice(rows, size=n_on_rows, replace=False))
    pool = np.arange(1, hi)
    rest = n_cuts - len(picked)
    if rest > 0:
        options = np.setdiff1d(pool, np.fromiter(picked, dtype=np.int64, count=len(picked)))
        if len(options):
            picked.update(int(c) for c in rng.choice(options, size=min(rest, len(options)), replace=False))
    return sorted(picked | set(tail))


def _compare_cuts(strategy: Strategy, bars: Bars, full: np.ndarray, cuts: Sequence[int],
                  rtol: float, atol: float) -> float:
    """Raise LookaheadError at the first cut whose signals differ from the full run's; else the max diff."""
    worst = 0.0
    for c in cuts:
        part = raw_signals(strategy, bars.iloc(slice(0, c)))
        ref = full[:c]
        same = _close(part, ref, rtol, atol)
        if not same.all():
            row, col = _first(~same)
            raise LookaheadError(
                f"{strategy!r} looks ahead: with the history cut after {bars.index[c - 1]} (bar {c} of "
                f"{len(bars)}), its signal at {bars.index[row]} for {bars.instruments[col]} is "
                f"{_describe(part, row, col)}, but {_describe(ref, row, col)} on the full history. The signal at a "
                "bar may use only that bar and earlier ones (look for shift(-k), centred windows, statistics "
                "of the whole sample, or code that treats the last bars differently)")
        with np.errstate(invalid="ignore"):
            diff = np.abs(part - ref)
        finite = diff[np.isfinite(diff)]
        if finite.size:
            worst = max(worst, float(finite.max()))
    return worst


def check_lookahead(strategy: Strategy, bars: Bars, *, n_cuts: int = 8, n_tail_cuts: int = 3, seed: int = 0,
                    rtol: float = 1e-7, atol: float = 1e-9) -> LookaheadReport:
    """Check that ``strategy.signals`` is causal on ``bars``; raise LookaheadError naming the strategy, the
    first bar and instrument where a cut history disagrees with the full one, and the cut.

    Compares the raw signals (before warm-up NaNs become 0), NaN equal to NaN, ``|a - b| <= atol + rtol*|b|``.
    """
    report, _ = _lookahead(strategy, bars, n_cuts=n_cuts, n_tail_cuts=n_tail_cuts, seed=seed, rtol=rtol,
                           atol=atol)
    return report


def _lookahead(strategy, bars, *, n_cuts, n_tail_cuts, seed, rtol, atol, full=None, max_cut=None):
    check_bars_for(strategy, bars)
    for name, value in (("n_cuts", n_cuts), ("n_tail_cuts", n_tail_cuts)):
        if not isinstance(value, (int, np.integer)) or value < 0:
            raise ResearchError(f"{name} is {value!r}; expected a whole number >= 0")
    if len(bars) < 2:
        raise ResearchError(f"the lookahead check needs at least 2 bars; got {len(bars)}")
    key = ("lookahead", _code_key(strategy), strategy.key(), bars.fingerprint(), n_cuts, n_tail_cuts, seed,
           rtol, atol, max_cut)
    started = time.perf_counter()
    if full is None:
        full = raw_signals(strategy, bars)
    cached = _cache_get(key)
    if cached is not None:
        return cached, full
    cuts = _choose_cuts(len(bars), full, n_cuts, n_tail_cuts, seed, max_cut)
    worst = _compare_cuts(strategy, bars, full, cuts, rtol, atol)
    report = LookaheadReport(strategy.name, len(bars), tuple(cuts), worst, time.perf_counter() - started)
    _cache_put(key, report)
    return report, full


# -- trailing window -------------------------------------------------------------------------------
def _sample_points(n: int, full: np.ndarray, max_window: int, n_points: int, seed: int) -> np.ndarray:
    """Bars at which the trailing window is tried: the last bar, bars where the targets change, random ones;
    all at or after ``max_window`` so that even the longest window tried does not reach the first bar."""
    lo = max_window
    if lo >= n:
        return np.array([], dtype=np.int64)
    rng = np.random.default_rng(seed)
    rows = _interesting_rows(full)
    changes = rows[rows >= lo]
    chosen = {n - 1}
    k = max((n_points - 1) // 2, 0)
    if len(changes) and k:
        chosen.update(int(r) for r in rng.choice(changes, size=min(k, len(changes)), replace=False))
    pool = np.setdiff1d(np.arange(lo, n), np.fromiter(chosen, dtype=np.int64, count=len(chosen)))
    rest = n_points - len(chosen)
    if rest > 0 and len(pool):
        chosen.update(int(r) for r in rng.choice(pool, size=min(rest, len(pool)), replace=False))
    return np.array(sorted(chosen), dtype=np.int64)


def _window_reproduces(strategy, bars, full, points, window, rtol, atol) -> bool:
    for p in points:
        part = raw_signals(strategy, bars.iloc(slice(p - window + 1, p + 1)))
        if not _close(part[-1], full[p], rtol, atol).all():
            return False
    return True


def check_trailing_window(strategy: Strategy, bars: Bars, window: int | None = None, *,
                          max_window: int | None = None, n_points: int = 12, seed: int = 0, rtol: float = 1e-7,
                          atol: float = 1e-9) -> TrailingReport:
    """Find the trailing window a session must hand to ``strategy.signals``.

    The window asked for (``window``, else ``strategy.window``) is tried first; when it does not
    reproduce the full run's newest row at the sampled bars, or none was asked for, windows of 1, 2, 4,
    ... bars (doubling from the one asked for) are tried up to ``max_window`` (default: half the bars).
    Returns the report (``ok`` False when the window asked for is too short: ``window`` then says how
    long it must be); raises TrailingWindowError when no window up to ``max_window`` reproduces it
    (expanding statistics, cumulative maxima: no finite window does).
    """
    report, _ = _trailing(strategy, bars, window, max_window=max_window, n_points=n_points, seed=seed,
                          rtol=rtol, atol=atol)
    return report


def _trailing(strategy, bars, window, *, max_window, n_points, seed, rtol, atol, full=None):
    check_bars_for(strategy, bars)
    n = len(bars)
    requested = strategy.window if window is None else window
    if requested is not None and (not isinstance(requested, (int, np.integer)) or requested < 1):
        raise ResearchError(f"window is {requested!r}; expected a positive number of bars")
    top = n // 2 if max_window is None else int(max_window)
    if requested is not None:
        top = max(top, int(requested))
    if top < 1 or top >= n:
        raise ResearchError(f"the trailing-window check needs more bars than the longest window tried: {n} bars, "
                            f"max_window={top}; pass more history or a smaller max_window")
    key = ("trailing", _code_key(strategy), strategy.key(), bars.fingerprint(), requested, top, n_points, seed,
           rtol, atol)
    if full is None:
        full = raw_signals(strategy, bars)
    cached = _cache_get(key)
    if cached is not None:
        return cached, full
    points = _sample_points(n, full, top, n_points, seed)
    tried: list[tuple[int, bool]] = []

    def attempt(w: int) -> bool:
        ok = _window_reproduces(strategy, bars, full, points, w, rtol, atol)
        tried.append((w, ok))
        return ok

    found = None
    hint = _WINDOW_HINTS.get((_code_key(strategy), bars.fingerprint())) if requested is None else None
    if requested is not None and attempt(int(requested)):
        found = int(requested)
    elif hint is not None and hint < top and attempt(hint):
        # the same code found this power of two for other parameters: halve down from it instead of
        # doubling up from 1 (the same answer when longer windows keep reproducing, in fewer tries)
        found = hint
        while found > 1 and attempt(found // 2):
            found //= 2
    else:
        w = 1 if requested is None else int(requested) * 2
        if hint is not None and hint < top:
            w = hint * 2
        while w < top:
            if attempt(w):
                found = w
                break
            w *= 2
        if found is None and (not tried or tried[-1][0] != top) and attempt(top):
            found = top
    name = strategy.name
    if found is None:
        raise TrailingWindowError(
            f"{strategy!r}: no trailing window up to {top} bars ({n} bars given) reproduces its full-history "
            f"signals (tried {[w for w, _ in tried]}): either they depend on the whole history (expanding "
            "statistics, cumulative maxima, a running state: use rolling windows of fixed length) or they need "
            "a longer window than this history can show (pass more bars, or set the strategy's window=: a "
            "window asked for is checked at the bars after it, up to the last)")
    if requested is None and found & (found - 1) == 0:
        _WINDOW_HINTS[(_code_key(strategy), bars.fingerprint())] = found
    ok = requested is None or found == int(requested)
    if requested is None:
        message = f"{name}: a session needs a trailing window of {found} bars (shortest found by doubling)"
    elif ok:
        message = f"{name}: its window of {requested} bars reproduces the full-history signals"
    else:
        message = (f"{name}: its window of {requested} bars is too short: the signals on it differ from the "
                   f"full history's; a session needs {found} bars")
    report = TrailingReport(name, found, None if requested is None else int(requested), ok, top,
                            tuple(int(p) for p in points), tuple(tried), message)
    _cache_put(key, report)
    return report, full


# -- prepare ---------------------------------------------------------------------------------------
def prepare(strategy: Strategy, bars: Bars, *, n_cuts: int = 8, n_tail_cuts: int = 3, seed: int = 0,
            rtol: float = 1e-7, atol: float = 1e-9, max_window: int | None = None) -> PreparedStrategy:
    """Run both checks and return the strategy, its validated targets on ``bars`` and its session window.

    The backtest and the session runner call this before anything else. A strategy whose ``window`` is
    too short gets the longer window the check found (with a warning saying so); one that looks ahead
    raises LookaheadError, one that no finite window reproduces raises TrailingWindowError.
    It costs about 20 signal computations (50-150 ms for the examples on the bundled daily bars):
    a sweep should prepare its trials with :func:`prepare_sweep` (about 1.5 each) and hand each
    backtest its PreparedStrategy.
    """
    if not isinstance(strategy, Strategy):
        raise ResearchError(f"expected a tb.Strategy (a subclass with signals()), got {type(strategy).__name__}")
    look, full = _lookahead(strategy, bars, n_cuts=n_cuts, n_tail_cuts=n_tail_cuts, seed=seed, rtol=rtol,
                            atol=atol)
    targets = targets_from_raw(strategy, bars, full)
    trailing, _ = _trailing(strategy, bars, None, max_window=max_window, n_points=12, seed=seed, rtol=rtol,
                            atol=atol, full=full)
    if not trailing.ok:
        warnings.warn(trailing.message + "; using that", stacklevel=2)
    return PreparedStrategy(strategy, targets, trailing.window, look, trailing)


def prepare_sweep(strategies: Sequence[Strategy], bars: Bars, *, n_full: int = 2, seed: int = 0,
                  rtol: float = 1e-7, atol: float = 1e-9) -> list[PreparedStrategy]:
    """Prepare the trials of a sweep cheaply: each trial's targets, and a lookahead check sized for a sweep.

    A peek is a property of the code far more often than of a parameter value, so the full check
    (8 random cuts, 3 at the end) runs on ``n_full`` trials (the first and the last: the grid's corners),
    and every other trial gets a light one: one cut, in the first half of the history, just after a bar
    where its signals change or are held (a parameter that shifts the data backwards shows there), for
    at most half a signal computation more instead of about 8. Any difference is still a LookaheadError.
    Trials get no trailing window (``window`` None): only the chosen one goes to a session; prepare() it.
    """
    strategies = list(strategies)
    if not strategies:
        raise ResearchError("no strategies to prepare; expected the sweep's trials")
    full_at = {0, len(strategies) - 1} if n_full >= 2 else ({0} if n_full == 1 else set())
    out = []
    for i, strategy in enumerate(strategies):
        if i in full_at:
            look, full = _lookahead(strategy, bars, n_cuts=8, n_tail_cuts=3, seed=seed, rtol=rtol, atol=atol)
        else:
            look, full = _lookahead(strategy, bars, n_cuts=1, n_tail_cuts=0, seed=seed + i, rtol=rtol, atol=atol,
                                    max_cut=len(bars) // 2)
        out.append(PreparedStrategy(strategy, targets_from_raw(strategy, bars, full), None, look, None))
    return out
