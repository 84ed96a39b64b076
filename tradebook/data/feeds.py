"""Market-data feeds for sessions: recorded quotes replayed at any speed, bars turned into quotes.

A session consumes a feed as a sequence of :class:`FeedBatch` es, each covering one
step of *session time* (one second by default) for every instrument, in time order.
The replay feed paces batches against the wall clock by ``speed`` (``None``: as fast as
possible, so thirty trading days of paper trading run in minutes; ``60``: one minute of
market time per wall second).

Where only bars exist, :func:`quotes_from_bars` builds a quote per bar from its close
with a spread taken from a calibration (or a given spread in bps); such quotes carry
``synthetic=True`` and the feed says so (``FeedBatch.synthetic``): fills against them
are estimates, not replays.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tradebook.data.frames import aggressor_from_column, book_levels, liquidity_trades, quote_columns
from tradebook.errors import DataError

_QUOTE_FIELDS = ("ts_ns", "bid_px", "ask_px", "bid_sz", "ask_sz")
_TRADE_FIELDS = ("ts_ns", "price", "size", "aggressor")


@dataclass(frozen=True)
class QuoteArrays:
    ts_ns: np.ndarray
    bid_px: np.ndarray
    ask_px: np.ndarray
    bid_sz: np.ndarray
    ask_sz: np.ndarray
    # a top-N book's levels behind the touch (bid_px, bid_sz, ask_px, ask_sz), rows x levels; None: L1
    levels: tuple | None = None

    def __len__(self) -> int:
        return len(self.ts_ns)


@dataclass(frozen=True)
class TradeArrays:
    ts_ns: np.ndarray
    price: np.ndarray
    size: np.ndarray
    aggressor: np.ndarray  # +1 buy, -1 sell, 0 unknown

    def __len__(self) -> int:
        return len(self.ts_ns)


@dataclass(frozen=True)
class FeedBatch:
    """Everything stamped in ``[start_ns, end_ns)``, per instrument."""

    start_ns: int
    end_ns: int
    quotes: dict[str, QuoteArrays] = field(default_factory=dict)
    trades: dict[str, TradeArrays] = field(default_factory=dict)
    synthetic: frozenset[str] = frozenset()  # instruments whose quotes were built from bars

    def last_quote(self, instrument_id: str) -> tuple[int, float, float, float, float] | None:
        """(ts, bid, ask, bid size, ask size) of the last quote of ``instrument_id`` in the batch."""
        q = self.quotes.get(instrument_id)
        if q is None or not len(q):
            return None
        return int(q.ts_ns[-1]), float(q.bid_px[-1]), float(q.ask_px[-1]), float(q.bid_sz[-1]), float(q.ask_sz[-1])


def _quote_arrays(instrument_id: str, frame: pd.DataFrame) -> QuoteArrays:
    try:
        names = {"ts_ns": "ts_ns", **quote_columns(frame)}
    except DataError as exc:
        raise DataError(f"quotes of {instrument_id}: {exc}") from None
    missing = [c for c in names.values() if c not in frame.columns]
    if missing:
        raise DataError(f"quotes of {instrument_id} lack {missing}; expected ts_ns, bid_px, ask_px, bid_sz, ask_sz")
    ts = frame["ts_ns"].to_numpy(dtype=np.int64)
    if len(ts) and (np.diff(ts) < 0).any():
        raise DataError(f"quotes of {instrument_id}: ts_ns goes backwards; expected time order")
    return QuoteArrays(ts, *(frame[names[f]].to_numpy(dtype=np.float64, na_value=np.nan) for f in _QUOTE_FIELDS[1:]),
                       levels=book_levels(frame))


def _trade_arrays(instrument_id: str, frame: pd.DataFrame) -> TradeArrays:
    for column in ("ts_ns", "price", "size"):
        if column not in frame.columns:
            raise DataError(f"trades of {instrument_id} lack {column!r}; expected ts_ns, price, size")
    frame = liquidity_trades(frame)  # off-exchange reports and non-regular prints fill no paper order
    ts = frame["ts_ns"].to_numpy(dtype=np.int64)
    if len(ts) and (np.diff(ts) < 0).any():
        raise DataError(f"trades of {instrument_id}: ts_ns goes backwards; expected time order")
    if "aggressor" in frame.columns:
        aggressor = frame["aggressor"].to_numpy(dtype=np.int8)
    elif "aggressor_side" in frame.columns:
        aggressor = aggressor_from_column(frame)
    else:
        aggressor = np.zeros(len(ts), dtype=np.int8)
    return TradeArrays(ts, frame["price"].to_numpy(dtype=np.float64), frame["size"].to_numpy(dtype=np.float64),
                       aggressor)


def _slice(arrays, lo: int, hi: int):
    def rows(value):  # the book's levels: a tuple of rows x levels arrays (or None)
        return value[lo:hi] if not isinstance(value, tuple) else tuple(a[lo:hi] for a in value)

    return type(arrays)(*(rows(getattr(arrays, f)) if getattr(arrays, f) is not None else None
                          for f in arrays.__dataclass_fields__))


class ReplayFeed:
    """Recorded quotes (and trades) of several instruments replayed in time order, in steps.

    Only trades that are liquidity are replayed (:func:`tradebook.data.frames.liquidity_mask`:
    off-exchange reports and non-regular sale conditions are left out, as in calibration).

    ``speed``: ``None`` replays as fast as the consumer takes batches; a number paces
    batches so that ``speed`` seconds of market time pass per wall-clock second.
    ``synthetic``: instrument ids whose quotes came from bars (labelled in every batch).
    ``skip_idle``: a stretch without any data at least ``idle_ns`` long (default: a
    minute, or two steps; nights, weekends, daily bars) passes as one empty batch instead
    of one per step, so thirty trading days replay in minutes; ``False`` yields every step.
    """

    def __init__(
        self,
        quotes: Mapping[str, pd.DataFrame],
        trades: Mapping[str, pd.DataFrame] | None = None,
        *,
        step_ns: int = 1_000_000_000,
        speed: float | None = None,
        start_ns: int | None = None,
        end_ns: int | None = None,
        synthetic: frozenset[str] | set[str] = frozenset(),
        skip_idle: bool = True,
        idle_ns: int | None = None,
    ) -> None:
        if not quotes:
            raise DataError("a replay feed needs quotes for at least one instrument")
        if step_ns <= 0:
            raise DataError(f"step_ns is {step_ns}; expected a positive number of nanoseconds")
        if speed is not None and not speed > 0:
            raise DataError(f"speed is {speed!r}; expected a positive factor (or None: as fast as possible)")
        self.quotes = {i: _quote_arrays(i, f) for i, f in quotes.items()}
        self.trades = {i: _trade_arrays(i, f) for i, f in (trades or {}).items()}
        unknown = set(self.trades) - set(self.quotes)
        if unknown:
            raise DataError(f"trades given for {sorted(unknown)} without quotes; every instrument needs quotes")
        if all(len(q) == 0 for q in self.quotes.values()):
            raise DataError("a replay feed needs at least one quote; all quote sets are empty")
        if idle_ns is not None and idle_ns < 2 * step_ns:
            raise DataError(f"idle_ns is {idle_ns}; expected at least two steps ({2 * step_ns} ns)")
        idle = max(60_000_000_000, 2 * int(step_ns)) if idle_ns is None else int(idle_ns)
        self.skip_idle_ns = idle if skip_idle else None
        self.step_ns = int(step_ns)
        self.speed = speed
        self.synthetic = frozenset(synthetic)
        first = min(int(q.ts_ns[0]) for q in self.quotes.values() if len(q))
        last = max(int(q.ts_ns[-1]) for q in self.quotes.values() if len(q))
        self.start_ns = first if start_ns is None else int(start_ns)
        self.end_ns = last + 1 if end_ns is None else int(end_ns)

    def _next_data_ns(self, q_pos: dict[str, int], t_pos: dict[str, int]) -> int:
        upcoming = [int(q.ts_ns[q_pos[i]]) for i, q in self.quotes.items() if q_pos[i] < len(q)]
        upcoming += [int(a.ts_ns[t_pos[i]]) for i, a in self.trades.items() if t_pos[i] < len(a)]
        return min(upcoming) if upcoming else self.end_ns

    @property
    def instruments(self) -> list[str]:
        return sorted(self.quotes)

    def batches(self, from_ns: int | None = None) -> Iterator[FeedBatch]:
        """Batches from ``from_ns`` (a resume point: the end of the last batch processed) to the end."""
        start = self.start_ns if from_ns is None else max(int(from_ns), self.start_ns)
        if start >= self.end_ns:
            return  # resumed at the end (the last batch was processed): nothing is left
        # steps stay on the feed's grid so a resumed replay cuts batches where the first run did
        offset = (start - self.start_ns) % self.step_ns
        t = start - offset
        wall_start, market_start = time.monotonic(), t
        q_pos = {i: int(np.searchsorted(q.ts_ns, start, side="left")) for i, q in self.quotes.items()}
        t_pos = {i: int(np.searchsorted(a.ts_ns, start, side="left")) for i, a in self.trades.items()}
        while t < self.end_ns:
            end = min(t + self.step_ns, self.end_ns)
            if self.skip_idle_ns is not None:
                upcoming = self._next_data_ns(q_pos, t_pos)
                if upcoming - t >= self.skip_idle_ns and upcoming < self.end_ns:
                    # a quiet stretch (a night, a weekend): one empty batch spans it, on the grid
                    end = t + (upcoming - t) // self.step_ns * self.step_ns
            batch_quotes, batch_trades = {}, {}
            for i, q in self.quotes.items():
                hi = int(np.searchsorted(q.ts_ns, end, side="left"))
                if hi > q_pos[i]:
                    batch_quotes[i] = _slice(q, q_pos[i], hi)
                    q_pos[i] = hi
            for i, a in self.trades.items():
                hi = int(np.searchsorted(a.ts_ns, end, side="left"))
                if hi > t_pos[i]:
                    batch_trades[i] = _slice(a, t_pos[i], hi)
                    t_pos[i] = hi
            if self.speed is not None:
                due = wall_start + (end - market_start) / 1e9 / self.speed
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            yield FeedBatch(max(t, start), end, batch_quotes, batch_trades, self.synthetic & set(batch_quotes))
            t = end


def quotes_from_bars(bars: pd.DataFrame, *, bar_ns: int, spread_bps: float | np.ndarray,
                     top_size: float) -> pd.DataFrame:
    """One quote per bar, stamped at the bar's end (its close is known only then), around the close.

    ``spread_bps`` (scalar or one per bar) and ``top_size`` should come from a
    calibration (``FillModel.spread_profile``: expected spread by time of day and the
    median top-of-book size) rather than a guess. Every row has ``synthetic = True``.
    """
    for column in ("ts_ns", "close"):
        if column not in bars.columns:
            raise DataError(f"bars lack {column!r}; expected trade bars with ts_ns and close")
    if bar_ns <= 0:
        raise DataError(f"bar_ns is {bar_ns}; expected the bar length in nanoseconds")
    if not np.isfinite(top_size) or top_size <= 0:
        raise DataError(f"top_size is {top_size!r}; expected the calibrated median top-of-book size (> 0)")
    spread = np.broadcast_to(np.asarray(spread_bps, dtype=np.float64), (len(bars),))
    if not np.isfinite(spread).all() or (spread <= 0).any():
        raise DataError("spread_bps must be positive and finite for every bar")
    close = bars["close"].to_numpy(dtype=np.float64)
    half = close * spread / 2e4
    return pd.DataFrame({
        "ts_ns": bars["ts_ns"].to_numpy(dtype=np.int64) + int(bar_ns),
        "bid_px": close - half,
        "ask_px": close + half,
        "bid_sz": np.full(len(bars), float(top_size)),
        "ask_sz": np.full(len(bars), float(top_size)),
        "synthetic": np.ones(len(bars), dtype=bool),
    })
