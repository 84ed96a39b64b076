"""Reading the canonical market-data frames the same way everywhere.

Quotes come as L1 frames (``bid_px``, ``ask_px``, ``bid_sz``, ``ask_sz``), MBP-1 frames
(the same columns: the book after each event) or top-N books (``bid_px_0``...); every
consumer (ground truth, calibration, simulator, replay feeds) asks this module which
columns hold the touch, turns a trades frame's ``aggressor_side`` text into codes, and
says which recorded prints are liquidity at all (:func:`liquidity_mask`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tradebook.errors import DataError

L1_FIELDS = ("bid_px", "ask_px", "bid_sz", "ask_sz")


def quote_columns(quotes: pd.DataFrame) -> dict[str, str]:
    """Map bid_px/ask_px/bid_sz/ask_sz to the frame's columns (an L1 frame, an MBP-1 frame or a top-N book).

    The size columns are named even when the frame lacks them; callers that need sizes
    check for them.
    """
    for suffix in ("", "_0"):
        if f"bid_px{suffix}" in quotes.columns and f"ask_px{suffix}" in quotes.columns:
            return {name: f"{name}{suffix}" for name in L1_FIELDS}
    raise DataError(f"quotes frame lacks bid/ask prices; expected columns bid_px and ask_px (or bid_px_0 and "
                    f"ask_px_0 of a top-N book), found {list(quotes.columns)}")


def book_levels(quotes: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """The recorded levels behind the touch of a top-N book frame (``bid_px_1``... ): (bid_px, bid_sz, ask_px,
    ask_sz), each rows x (N - 1) float64; None for an L1 frame (the simulator's walk then uses the implied ladder
    alone)."""
    if "bid_px_0" not in quotes.columns:
        return None
    n = 1
    while all(f"{name}_{n}" in quotes.columns for name in ("bid_px", "bid_sz", "ask_px", "ask_sz")):
        n += 1
    if n == 1:
        return None
    return tuple(np.ascontiguousarray(np.column_stack([quotes[f"{name}_{i}"].to_numpy(dtype=np.float64,
                                                                                        na_value=np.nan)
                                                        for i in range(1, n)]))
                 for name in ("bid_px", "bid_sz", "ask_px", "ask_sz"))


def aggressor_from_column(trades: pd.DataFrame) -> np.ndarray:
    """+1 BUY, -1 SELL, 0 NONE or empty, from the canonical ``aggressor_side`` column."""
    if "aggressor_side" not in trades.columns:
        raise DataError("trades frame has no aggressor_side column; infer sides with infer_aggressor()")
    text = trades["aggressor_side"].to_numpy(dtype=object, na_value="NONE")
    return np.where(text == "BUY", 1, np.where(text == "SELL", -1, 0)).astype(np.int8)


# -- which prints are liquidity --------------------------------------------------------
# A print is a sweep of the displayed book, and so evidence for marketable costs, queue
# depletion and trade-throughs, only when it executed on a lit exchange's book at the
# time it is stamped with. Two kinds of US-equity print fail that test:
#
# * Off-exchange reports. Venue ``D`` (FINRA ADF/TRF) carries trades executed in dark
#   pools or internalised by a broker and *reported* afterwards (in 2013 within 30 s),
#   stamped at report time, priced against a quote that may be long gone, and never
#   touching any displayed queue. IBM 2013-10-07: 31% of all prints.
# * Non-regular sale conditions (AlgoSeek's hexadecimal bit mask, ``conditions`` in a
#   loaded frame, ``cond_hex`` in the bundled file; meanings in LEAN's
#   ``Data/equity/readme.md``): prints that are not a regular-way continuous execution
#   against the book at their stamp: settlement variants (cash 0x2, next day 0x4,
#   seller's option 0x8), auction and official prints (opening 0x40, closing 0x80,
#   reopening 0x100, official close 0x1000000, official open 0x4000000, cross session
#   0x200000), prices not set by the quote (0x200 derivatively priced, 0x100000 average
#   price, 0x2000000 prior reference price, 0x40000 stock-option, 0x800000 Rule 155,
#   0x80000 distribution, 0x10000 acquisition, 0x8000 split, 0x20000 bunched, 0x1000
#   stopped), late or out-of-sequence reports (0x800 sold last, 0x400 Form T, 0x2000
#   extended hours, 0x4000 sold out of hours), prices flagged away from the market
#   (0x400000) and the undocumented 0x40000000. Any bit outside the set below excludes.
#
# Kept: :data:`LIQUIDITY_CONDITION_BITS`. An intermarket sweep order (0x20) is the very
# thing we model; the Rule-611 exemption (0x20000000) is a modifier that rides on ISO and
# regular prints; odd lots (0x80000000) and NYSE auto-executions (0x10000000) executed
# on a lit book; 0x10 is a regular print reported in a special event (yellow flag).
# Vendor-flagged suspicious prints (``suspicious``) are excluded as well.
# Frames without these columns (crypto, CME) are all liquidity: those venues print only
# matches of their own book.
OFF_EXCHANGE_VENUES: frozenset[str] = frozenset({"D"})
LIQUIDITY_CONDITION_BITS: dict[int, str] = {
    0x00000001: "regular sale",
    0x00000010: "regular sale in a special event (yellow flag)",
    0x00000020: "intermarket sweep order (ISO)",
    0x08000000: "CAP election: NYSE sweep repeat prints",
    0x10000000: "NYSE auto-executed, no price improvement",
    0x20000000: "Rule 611 trade-through exempt (a modifier on ISO and regular prints)",
    0x80000000: "odd lot (under 100 shares)",
}
_LIQUIDITY_BITS = sum(LIQUIDITY_CONDITION_BITS)
LIQUIDITY_EXCLUSIONS: tuple[str, ...] = ("suspicious", "off_exchange", "non_regular_condition")


def _condition_masks(values: pd.Series) -> np.ndarray:
    """AlgoSeek sale-condition bit masks (hexadecimal text) as int64; 0 where the field is empty."""
    text = values.astype("string").str.strip()
    out = np.zeros(len(values), dtype=np.int64)
    present = text.notna() & (text != "")
    for value in pd.unique(text[present]):
        try:
            mask = int(str(value), 16)
        except ValueError:
            raise DataError(f"trades conditions value {value!r} is not a sale-condition bit mask; expected "
                            "hexadecimal digits as AlgoSeek writes them (e.g. '1', '20000020') or an empty "
                            "field") from None
        out[(text == value).to_numpy(dtype=bool, na_value=False)] = mask
    return out


def liquidity_exclusions(trades: pd.DataFrame, *, check_suspicious: bool = True) -> np.ndarray:
    """Why each print is not liquidity: 0 = it is, else 1 + index into :data:`LIQUIDITY_EXCLUSIONS`.

    The first reason that applies is given: ``suspicious`` (the vendor's flag),
    ``off_exchange`` (a venue in :data:`OFF_EXCHANGE_VENUES`), ``non_regular_condition``
    (a condition bit outside :data:`LIQUIDITY_CONDITION_BITS`). Columns read, when the
    frame has them: ``suspicious`` (unless ``check_suspicious`` is False), ``venue``,
    ``conditions`` (or the bundled file's ``cond_hex``). A conditions value that is not
    hexadecimal is a DataError.
    """
    if not isinstance(trades, pd.DataFrame):
        raise DataError(f"trades is a {type(trades).__name__}; expected a pandas DataFrame")
    n = len(trades)
    reason = np.zeros(n, dtype=np.int8)
    if check_suspicious and "suspicious" in trades.columns:
        flagged = trades["suspicious"].to_numpy(dtype=bool, na_value=False)
        reason[flagged] = 1
    if "venue" in trades.columns:
        venue = trades["venue"].astype("string").str.strip().str.upper()
        off = venue.isin(OFF_EXCHANGE_VENUES).to_numpy(dtype=bool, na_value=False)
        reason[(reason == 0) & off] = 2
    column = "conditions" if "conditions" in trades.columns else "cond_hex" if "cond_hex" in trades.columns else None
    if column is not None:
        odd = (_condition_masks(trades[column]) & ~np.int64(_LIQUIDITY_BITS)) != 0
        reason[(reason == 0) & odd] = 3
    return reason


def liquidity_mask(trades: pd.DataFrame) -> np.ndarray:
    """True for each print that took displayed liquidity on a lit book at its time stamp.

    The one rule for which recorded prints count: the ground truth
    (:func:`tradebook.sim.truth.sweeps` and :func:`~tradebook.sim.truth.passive_outcomes`,
    so calibration and the fidelity report), the engine's trade feed
    (:func:`tradebook.sim.orders.trade_arrays`) and the replay feeds of sessions
    (:class:`tradebook.data.feeds.ReplayFeed`) all apply it. See the notes
    above :data:`OFF_EXCHANGE_VENUES` for the venues and condition codes left out.
    """
    return liquidity_exclusions(trades) == 0


def liquidity_trades(trades: pd.DataFrame) -> pd.DataFrame:
    """``trades`` without the prints that are not liquidity (:func:`liquidity_mask`), in file order.

    ``attrs["liquidity_excluded"]`` counts what was left out per reason. A frame with
    nothing to exclude is returned as it is (no copy).
    """
    reason = liquidity_exclusions(trades)
    counts = {name: int((reason == 1 + i).sum()) for i, name in enumerate(LIQUIDITY_EXCLUSIONS)}
    if not reason.any():
        if "liquidity_excluded" not in trades.attrs:
            trades.attrs["liquidity_excluded"] = counts
        return trades
    kept = trades[reason == 0].reset_index(drop=True)
    kept.attrs["liquidity_excluded"] = counts
    return kept


_TIME_COLUMNS = ("ts_ns", "ts_event_ns", "ts_init", "ts_event", "ts", "ts_last", "ts_ns_event")


@pd.api.extensions.register_dataframe_accessor("tb")
class TradebookFrameAccessor:
    """``df.tb``: views of a tradebook frame for people; the frame itself keeps int64 UTC ns.

    ``df.tb.datetime()`` returns a copy indexed by a timezone-aware UTC ``DatetimeIndex``
    built from the frame's nanosecond column (``ts_ns`` by default), the column kept.
    """

    def __init__(self, frame: pd.DataFrame) -> None:
        self._frame = frame

    def datetime(self, column: str | None = None, *, tz: str = "UTC") -> pd.DataFrame:
        """A copy indexed by ``column`` (int64 UTC ns) as a tz-aware index named ``time``, converted to ``tz``."""
        frame = self._frame
        if column is None:
            column = next((c for c in _TIME_COLUMNS if c in frame.columns), None)
            if column is None:
                raise DataError(f"the frame has no int64 nanosecond time column; expected one of "
                                f"{list(_TIME_COLUMNS)}, found {list(frame.columns)}; pass column=")
        elif column not in frame.columns:
            raise DataError(f"the frame has no column {column!r}; found {list(frame.columns)}")
        values = frame[column]
        if not pd.api.types.is_integer_dtype(values.dtype):
            raise DataError(f"column {column!r} is {values.dtype}; expected int64 nanoseconds since the epoch, UTC")
        if values.isna().any():
            raise DataError(f"column {column!r} has empty times; expected a time on every row")
        try:
            index = pd.DatetimeIndex(values.to_numpy(dtype="int64").astype("datetime64[ns]"), name="time")
            index = index.tz_localize("UTC").tz_convert(tz)
        except (ValueError, TypeError, KeyError) as exc:
            raise DataError(f"cannot show {column!r} in time zone {tz!r}: {exc}") from exc
        out = frame.copy()
        out.index = index
        return out
