"""Bars: an immutable panel of OHLCV bars for several instruments, the input of every strategy.

Five DataFrames (``open, high, low, close, volume``) share one index, a sorted, unique,
tz-aware UTC DatetimeIndex of bar STARTS, and one set of columns, the instrument ids.
A bar's end is its start + ``bar_seconds``; a bar is complete (its close known) at its end.
The frames are never modified in place (pandas copy-on-write): slicing returns new Bars.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tradebook.errors import ResearchError
from tradebook.model import to_ns

FIELDS = ("open", "high", "low", "close", "volume")
_NS = 1_000_000_000


@dataclass(frozen=True, eq=False)
class Bars:
    """OHLCV frames of several instruments on one index of bar starts (UTC), one bar size.

    Build with :meth:`from_store` (split-adjusted bundled or stored bars) or :meth:`from_frames`.
    """

    open: pd.DataFrame
    high: pd.DataFrame
    low: pd.DataFrame
    close: pd.DataFrame
    volume: pd.DataFrame
    bar_seconds: int = 86_400
    _fingerprint: list = field(default_factory=list, repr=False, compare=False)  # lazily filled cache

    # -- constructors ---------------------------------------------------------------------
    @classmethod
    def from_frames(
        cls, *, open: pd.DataFrame, high: pd.DataFrame, low: pd.DataFrame, close: pd.DataFrame,
        volume: pd.DataFrame, bar_seconds: int = 86_400,
    ) -> Bars:
        """Bars from five frames, validated: same index and columns, tz-aware, sorted, unique.

        The index may be in any time zone; it is converted to UTC. Values become float64.
        """
        frames = {"open": open, "high": high, "low": low, "close": close, "volume": volume}
        if not isinstance(bar_seconds, (int, np.integer)) or isinstance(bar_seconds, bool) or bar_seconds <= 0:
            raise ResearchError(f"bar_seconds is {bar_seconds!r}; expected a positive whole number of seconds")
        for name, frame in frames.items():
            if not isinstance(frame, pd.DataFrame):
                raise ResearchError(f"{name} is a {type(frame).__name__}; expected a DataFrame "
                                    "(index: bar starts, columns: instrument ids)")
        index = close.index
        if not isinstance(index, pd.DatetimeIndex) or index.tz is None:
            raise ResearchError(f"close's index is {type(index).__name__} (tz={getattr(index, 'tz', None)}); "
                                "expected a tz-aware DatetimeIndex of bar starts")
        if not index.is_unique:
            dup = index[index.duplicated()][0]
            raise ResearchError(f"close's index repeats the bar start {dup}; expected unique bar starts")
        if not index.is_monotonic_increasing:
            pos = int(np.argmax(np.diff(index.asi8) < 0)) + 1
            raise ResearchError(f"close's index is not sorted: {index[pos]} comes after {index[pos - 1]}; "
                                "expected increasing bar starts")
        columns = close.columns
        if not columns.is_unique:
            raise ResearchError(f"close's columns repeat an instrument: {list(columns[columns.duplicated()])}")
        utc = index.tz_convert("UTC").as_unit("ns")
        out = {}
        for name, frame in frames.items():
            if not frame.index.equals(index):
                raise ResearchError(f"{name}'s index differs from close's ({len(frame.index)} vs {len(index)} "
                                    "rows); expected the same bar starts in all five frames")
            if list(frame.columns) != list(columns):
                raise ResearchError(f"{name}'s columns {list(frame.columns)} differ from close's {list(columns)}; "
                                    "expected the same instruments in the same order")
            try:
                values = frame.to_numpy(dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise ResearchError(f"{name} holds values that are not numbers: {exc}") from exc
            out[name] = pd.DataFrame(values, index=utc, columns=pd.Index([str(c) for c in columns]))
        return cls(**out, bar_seconds=int(bar_seconds))

    @classmethod
    def from_store(
        cls, store, instruments: str | Iterable[str], *, start=None, end=None, bar_seconds: int = 86_400,
        adjusted: bool = True, dividends: bool = False, recording: str | None = None,
    ) -> Bars:
        """Trade bars of ``instruments`` from a store, joined on their bar starts.

        ``start``/``end`` (ISO string, aware datetime or int ns) select bars whose START lies in
        ``[start, end)``. Rows are kept where ANY instrument has a bar; the others hold NaN there.
        ``adjusted``: prices multiplied by the stored split factor (LEAN's rule: for a session
        date d, the first factor row dated on or after d) and volume divided by it, so splits do
        not show as gaps; ``dividends=True`` also applies the dividend (price) factor. Without
        stored factors an instrument is left raw. Bad prints in the data (see data/MANIFEST.md,
        e.g. SPY's 2000-12-18 open) are left as they are: strategies on closes do not see them.
        """
        ids = [instruments] if isinstance(instruments, str) else [str(i) for i in instruments]
        if not ids:
            raise ResearchError("no instruments given; expected one or more instrument ids")
        if len(set(ids)) != len(ids):
            raise ResearchError(f"instruments repeat: {ids}; expected each instrument once")
        start_ns = None if start is None else to_ns(start)
        end_ns = None if end is None else to_ns(end)
        parts: dict[str, pd.DataFrame] = {}
        for iid in ids:
            raw = store.bars(iid, start_ns=start_ns, end_ns=end_ns, bar_seconds=bar_seconds, recording=recording)
            if end_ns is not None:  # the store keeps bars overlapping the window; we want starts < end
                raw = raw[raw["ts_ns"] < end_ns]
            if start_ns is not None:
                raw = raw[raw["ts_ns"] >= start_ns]
            if raw.empty:
                raise ResearchError(f"the store holds no {bar_seconds}-second bars of {iid} in "
                                    f"[{start}, {end}); load them first (tradebook load) or widen the range")
            frame = raw.drop_duplicates("ts_ns", keep="last").set_index("ts_ns")[list(FIELDS)].astype(np.float64)
            if adjusted:
                frame = _adjust(frame, store.adjustment_factors(iid), dividends=dividends)
            parts[iid] = frame
        ts = np.unique(np.concatenate([p.index.to_numpy(np.int64) for p in parts.values()]))
        index = pd.DatetimeIndex(pd.to_datetime(ts, unit="ns", utc=True))
        frames = {}
        for name in FIELDS:
            frames[name] = pd.DataFrame(
                {iid: p[name].reindex(ts).to_numpy() for iid, p in parts.items()}, index=index)
        return cls.from_frames(**frames, bar_seconds=bar_seconds)

    # -- shape and slicing ----------------------------------------------------------------
    @property
    def index(self) -> pd.DatetimeIndex:
        return self.close.index

    @property
    def instruments(self) -> tuple[str, ...]:
        return tuple(self.close.columns)

    @property
    def start_ns(self) -> np.ndarray:
        """int64 bar starts (UTC ns)."""
        return self.close.index.asi8

    @property
    def end_ns(self) -> np.ndarray:
        """int64 bar ends (UTC ns): start + bar_seconds (for daily bars the end of the calendar day,
        after the session close; kept simple on purpose)."""
        return self.close.index.asi8 + self.bar_seconds * _NS

    def __len__(self) -> int:
        return len(self.close.index)

    def __repr__(self) -> str:
        if len(self) == 0:
            return f"Bars(empty, {len(self.instruments)} instruments, bar_seconds={self.bar_seconds})"
        return (f"Bars({len(self)} bars of {self.bar_seconds} s, {self.index[0]} .. {self.index[-1]}, "
                f"instruments={list(self.instruments)})")

    def _take(self, rows) -> Bars:
        return Bars(*(getattr(self, f).iloc[rows] for f in FIELDS), bar_seconds=self.bar_seconds)

    def shallow(self) -> Bars:
        """The same bars in new frame objects sharing the data: what a strategy may modify without harm
        (pandas copy-on-write copies on the first write)."""
        return Bars(*(getattr(self, f).copy(deep=False) for f in FIELDS), bar_seconds=self.bar_seconds)

    def iloc(self, rows: slice) -> Bars:
        """Bars at positions ``rows`` (a slice, as DataFrame.iloc)."""
        if not isinstance(rows, slice):
            raise ResearchError(f"iloc takes a slice, got {type(rows).__name__}; Bars stay a contiguous panel")
        return self._take(rows)

    def head(self, n: int) -> Bars:
        return self._take(slice(None, int(n)) if n >= 0 else slice(None, int(n)))

    def tail(self, n: int) -> Bars:
        n = int(n)
        return self._take(slice(max(len(self) - n, 0), None) if n >= 0 else slice(-n, None))

    def until(self, ts_ns: int) -> Bars:
        """The causal slice at ``ts_ns``: the bars whose END is <= ts_ns (their close is known)."""
        cut = int(np.searchsorted(self.end_ns, to_ns(ts_ns), side="right"))
        return self._take(slice(0, cut))

    def select(self, instruments: Sequence[str]) -> Bars:
        """The same bars for a subset of the instruments (in the order given); rows kept as they are."""
        ids = [instruments] if isinstance(instruments, str) else list(instruments)
        missing = [i for i in ids if i not in self.close.columns]
        if missing:
            raise ResearchError(f"instruments {missing} are not in these bars; they hold {list(self.instruments)}")
        return Bars(*(getattr(self, f)[ids] for f in FIELDS), bar_seconds=self.bar_seconds)

    def fingerprint(self) -> str:
        """A short hash of the bars' content (index, columns, values): caches key on it."""
        if not self._fingerprint:
            h = hashlib.blake2b(digest_size=12)
            h.update(str((self.bar_seconds, self.instruments)).encode())
            h.update(np.ascontiguousarray(self.start_ns).tobytes())
            for f in FIELDS:
                h.update(np.ascontiguousarray(getattr(self, f).to_numpy(np.float64)).tobytes())
            self._fingerprint.append(h.hexdigest())
        return self._fingerprint[0]


def _adjust(frame: pd.DataFrame, factors: pd.DataFrame | None, *, dividends: bool) -> pd.DataFrame:
    """Apply LEAN's factor rule: bar dated d takes the first factor row dated on or after d."""
    if factors is None or factors.empty:
        return frame
    factors = factors.sort_values("ts_ns")
    at = np.searchsorted(factors["ts_ns"].to_numpy(np.int64), frame.index.to_numpy(np.int64), side="left")
    at = np.minimum(at, len(factors) - 1)  # after the last row (a sentinel in LEAN files): its factors
    split = factors["split_factor"].to_numpy(np.float64)[at]
    price = split * (factors["price_factor"].to_numpy(np.float64)[at] if dividends else 1.0)
    out = frame.copy()
    for column in ("open", "high", "low", "close"):
        out[column] = frame[column].to_numpy() * price
    out["volume"] = frame["volume"].to_numpy() / split
    return out
