"""Quotes built from daily bars, for paper-trading a daily strategy where no recorded quotes exist.

Each bar becomes two L1 quotes of its exchange session: an *open quote* at the session's
open, around the bar's open price, and a *close quote* one second before the session's
close, around its close price (where a session runs the strategy acts on the open quote,
as the backtest acts at the next bar's open: :mod:`tradebook.research.runner`). The
spread is the calibrated one at that time of day and volatility
(``costs.spread_bps(instrument_id, ts_ns, vol_bps)``), the sizes the calibrated touch
size (``costs.touch_size``); the volatility fed to the spread model is the one-minute
volatility of the mid implied by the trailing ``vol_window`` daily close-to-close
returns up to the bar before (:func:`tradebook.research.costs.minute_vol_bps`, shifted one
bar: known before the session opens).

Prices sit on the instrument's tick: the modelled spread rounded to whole ticks, at least
one (``n = max(1, round(spread / tick))``; a quote cannot be narrower than a tick, so on a
low-priced stock the synthetic spread is wider than a spread in bps fitted elsewhere would
say), placed around the bar's price so the mid is that price to within half a tick
(exactly, for an even number of ticks). With zero modelled costs the quote is one tick
either side of the bar's price rounded to the tick: the mid is the price, and the quote
still valid (``bid < ask``).

Every row carries ``synthetic = True``. :func:`ingest_synthetic_quotes` stores them as
quote datasets whose ``source`` starts with :data:`SYNTHETIC_SOURCE_PREFIX` (calibration
leaves such datasets out: they are derived from bars, not recorded), so paper metrics
can mark and cost fills against the same quotes the session saw.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from tradebook.errors import DataError

SYNTHETIC_SOURCE_PREFIX = "synthetic:"
SESSION_SECONDS = 23_400  # a regular US equity session (09:30-16:00): spreads daily variance per second
_NS = 1_000_000_000


def session_bounds(calendar: str, days: pd.DatetimeIndex) -> tuple[np.ndarray, np.ndarray]:
    """(open ns, close ns) of the exchange session on each day in ``days`` (NaT-free; -1 where closed)."""
    from tradebook.model.calendars import exchange_calendar

    cal = exchange_calendar(calendar)
    schedule = cal.schedule
    wanted = pd.DatetimeIndex(days.date if days.tz is None else days.tz_localize(None).normalize())
    opens = np.full(len(days), -1, dtype=np.int64)
    closes = np.full(len(days), -1, dtype=np.int64)
    index = schedule.index.tz_localize(None) if schedule.index.tz is not None else schedule.index
    position = index.get_indexer(wanted)
    found = position >= 0
    if found.any():
        opens[found] = pd.DatetimeIndex(schedule["open"].iloc[position[found]]).as_unit("ns").asi8
        closes[found] = pd.DatetimeIndex(schedule["close"].iloc[position[found]]).as_unit("ns").asi8
    return opens, closes


def _session_days(index: pd.DatetimeIndex, timezone: str) -> pd.DatetimeIndex:
    """The local trading date each daily bar covers (bar starts are local midnight, stored in UTC)."""
    local = index.tz_convert(timezone) if index.tz is not None else index.tz_localize("UTC").tz_convert(timezone)
    return pd.DatetimeIndex(local.tz_localize(None).normalize())


def _minute_vol_before(close: pd.Series, vol_window: int) -> np.ndarray:
    """One-minute volatility of the mid (bps) from the daily returns up to the bar before each bar."""
    from tradebook.research.costs import minute_vol_bps

    vol = minute_vol_bps(close.to_frame(), bar_seconds=86_400, lookback=vol_window,
                         session_seconds=float(SESSION_SECONDS))
    return vol.iloc[:, 0].shift(1).to_numpy(dtype=np.float64)


def quotes_from_daily_bars(bars: Any, costs: Any, *, start: Any = None, end: Any = None, vol_window: int = 20,
                           instruments: Mapping[str, Any] | None = None) -> dict[str, pd.DataFrame]:
    """Synthetic L1 quotes (an open and a close quote per session) from daily ``bars`` (a research ``Bars``).

    ``costs``: a :class:`tradebook.research.costs.CostModel` (its ``spread_bps`` and
    ``touch_size``). ``start``/``end``: the bars kept, both included: dates (``'2021-03-31'``)
    are New York trading dates, tz-aware times and int64 UTC ns compare with bar starts;
    None: all. The volatility still uses the bars before ``start``. ``instruments``: instrument definitions by id (default: the store's or
    bundled ones through :func:`tradebook.model.instruments.get_instrument`). Returns one
    frame per instrument with ``ts_ns, bid_px, ask_px, bid_sz, ask_sz, synthetic``, in
    time order; a day without a finite open or close for an instrument has no quote.
    """
    from tradebook.model.instruments import get_instrument

    bar_seconds = int(getattr(bars, "bar_seconds", 86_400))
    if bar_seconds != 86_400:
        raise DataError(f"quotes_from_daily_bars takes daily bars (bar_seconds 86400), got bar_seconds {bar_seconds}")
    if vol_window < 2:
        raise DataError(f"vol_window is {vol_window}; expected at least 2 daily returns")
    index = bars.close.index
    keep = _in_period(index, start, end)
    if not keep.any():
        raise DataError(f"no bars between {start} and {end}: the bars run from {index[0]} to {index[-1]}")
    out: dict[str, pd.DataFrame] = {}
    for instrument_id in bars.close.columns:
        instrument = (instruments or {}).get(instrument_id) or get_instrument(instrument_id)
        hours = instrument.trading_hours
        calendar = hours.calendar or "XNYS"
        timezone = getattr(hours, "timezone", None) or "America/New_York"
        opens_px = bars.open[instrument_id].to_numpy(dtype=np.float64)
        closes_px = bars.close[instrument_id].to_numpy(dtype=np.float64)
        vol = _minute_vol_before(bars.close[instrument_id], vol_window)
        rows = keep & np.isfinite(opens_px) & np.isfinite(closes_px) & (opens_px > 0) & (closes_px > 0)
        days = _session_days(index[rows], timezone)
        open_ns, close_ns = session_bounds(calendar, days)
        traded = open_ns >= 0  # a bar on a day the calendar has no session (bad data) gets no quote
        ts = np.concatenate([open_ns[traded], close_ns[traded] - _NS])
        px = np.concatenate([opens_px[rows][traded], closes_px[rows][traded]])
        v = np.concatenate([vol[rows][traded], vol[rows][traded]])
        order = np.argsort(ts, kind="stable")
        ts, px, v = ts[order], px[order], v[order]
        out[instrument_id] = quotes_around(instrument, ts, px, costs.spread_bps(instrument_id, ts, v),
                                           costs.touch_size(instrument_id, float(np.nanmedian(px))) if len(px) else 1.0)
    return out


def quotes_around(instrument: Any, ts_ns: np.ndarray, price: np.ndarray, spread_bps: np.ndarray,
                  touch_size: float) -> pd.DataFrame:
    """Quotes at ``ts_ns`` around ``price`` on the instrument's tick, ``spread_bps`` wide (see the module docstring)."""
    tick = float(instrument.tick_size)
    spread = np.broadcast_to(np.asarray(spread_bps, dtype=np.float64), price.shape)
    if not np.isfinite(spread).all() or (spread < 0).any():
        raise DataError(f"{instrument.instrument_id}: the cost model's spreads must be finite and >= 0 bps")
    size = float(touch_size)
    if not np.isfinite(size) or size <= 0:
        size = 1e9  # a cost model without a touch size (zero costs): the touch never limits an order
    lots = float(instrument.lot_size)
    size = max(lots, np.floor(size / lots) * lots)
    x = price / tick  # the price in ticks
    n = np.round(price * spread / 1e4 / tick)
    zero = spread == 0  # no costs: one tick either side of the rounded price, the mid exactly the price
    n = np.where(zero, 2.0, np.maximum(1.0, n))
    bid = np.where(zero, np.round(x) - 1.0, np.floor(x - n / 2 + 0.5))
    decimals = max(0, -int(np.floor(np.log10(tick)))) + 2
    return pd.DataFrame({
        "ts_ns": np.asarray(ts_ns, dtype=np.int64),
        "bid_px": np.round(bid * tick, decimals),
        "ask_px": np.round((bid + n) * tick, decimals),
        "bid_sz": np.full(len(price), size),
        "ask_sz": np.full(len(price), size),
        "synthetic": np.ones(len(price), dtype=bool),
    })


def _in_period(index: pd.DatetimeIndex, start: Any, end: Any) -> np.ndarray:
    """Bars in ``[start, end]``: int64 ns and tz-aware times compare with bar starts; dates (strings,
    naive timestamps) with the bar's New York trading date, both ends included."""
    keep = np.ones(len(index), dtype=bool)
    starts_ns = index.asi8
    days = _session_days(index, "America/New_York")
    for value, name in ((start, "start"), (end, "end")):
        if value is None:
            continue
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            keep &= starts_ns >= int(value) if name == "start" else starts_ns <= int(value)
            continue
        try:
            ts = pd.Timestamp(value)
        except (TypeError, ValueError) as exc:
            raise DataError(f"{name} is {value!r}; expected a date, a tz-aware timestamp or int64 UTC ns") from exc
        if ts.tzinfo is not None:
            keep &= starts_ns >= ts.value if name == "start" else starts_ns <= ts.value
        else:
            day = ts.normalize()
            keep &= np.asarray(days >= day) if name == "start" else np.asarray(days <= day)
    return keep


def ingest_synthetic_quotes(store: Any, quotes: Mapping[str, pd.DataFrame], *, label: str) -> dict[str, int]:
    """Store synthetic quotes as quote datasets labelled as derived (``source`` = ``'synthetic: <label>'``).

    Same content again is a no-op (the store's content hash). Synthetic quotes of the same
    instrument stored earlier whose time range overlaps these (built with another
    calibration, say) are removed first, so a period has one set of synthetic quotes and
    paper metrics mark and cost fills against the quotes the session traded on; recorded
    quotes are never touched. Returns the dataset id per instrument. ``label`` says what
    they were built from (e.g. ``'daily bars, costs IBM.XNYS@v5'``).
    """
    from tradebook.data.loaders import MarketData
    from tradebook.data.schemas import DataKind

    ids = {}
    for instrument_id, frame in quotes.items():
        if not len(frame):
            continue
        if "synthetic" in frame.columns and not frame["synthetic"].all():
            raise DataError(f"quotes of {instrument_id} are not all synthetic; ingest recorded quotes with "
                            "store.ingest(load_quotes(...))")
        rows = frame[["ts_ns", "bid_px", "bid_sz", "ask_px", "ask_sz"]].reset_index(drop=True)
        digest = hashlib.sha256(pd.util.hash_pandas_object(rows, index=False).to_numpy().tobytes()).hexdigest()
        _remove_superseded(store, instrument_id, int(rows["ts_ns"].iloc[0]), int(rows["ts_ns"].iloc[-1]), digest)
        data = MarketData(DataKind.QUOTES, instrument_id, rows, f"{SYNTHETIC_SOURCE_PREFIX} {label}", digest)
        ids[instrument_id] = store.ingest(data).dataset_id
    return ids


def _remove_superseded(store: Any, instrument_id: str, first_ns: int, last_ns: int, keep_hash: str) -> None:
    """Delete the synthetic quote datasets of ``instrument_id`` overlapping [first_ns, last_ns] but ``keep_hash``'s."""
    datasets = store.datasets()
    old = datasets[(datasets["instrument_id"] == instrument_id) & (datasets["kind"] == "quotes")
                   & datasets["source"].str.startswith(SYNTHETIC_SOURCE_PREFIX)
                   & (datasets["content_hash"] != keep_hash)
                   & (datasets["first_ts_ns"] <= last_ns) & (datasets["last_ts_ns"] >= first_ns)]
    if old.empty:
        return
    ids = [int(i) for i in old["dataset_id"]]
    marks = ", ".join("?" * len(ids))
    with store.transaction() as con:
        for table in ("quotes", "data_quality", "datasets"):
            con.execute(f"DELETE FROM {table} WHERE dataset_id IN ({marks})", ids)


def is_synthetic_source(source: str) -> bool:
    """True for a dataset source written by :func:`ingest_synthetic_quotes`."""
    return str(source).startswith(SYNTHETIC_SOURCE_PREFIX)


__all__ = ["SYNTHETIC_SOURCE_PREFIX", "ingest_synthetic_quotes", "is_synthetic_source", "quotes_around",
           "quotes_from_daily_bars", "session_bounds"]
