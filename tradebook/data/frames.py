"""Reading the canonical market-data frames the same way everywhere.

Quotes come as L1 frames (``bid_px``, ``ask_px``, ``bid_sz``, ``ask_sz``), MBP-1 frames
(the same columns: the book after each event) or top-N books (``bid_px_0``...); every
consumer (ground truth, calibration, simulator, replay feeds) asks this module which
columns hold the touch, and turns a trades frame's ``aggressor_side`` text into codes.
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


def aggressor_from_column(trades: pd.DataFrame) -> np.ndarray:
    """+1 BUY, -1 SELL, 0 NONE or empty, from the canonical ``aggressor_side`` column."""
    if "aggressor_side" not in trades.columns:
        raise DataError("trades frame has no aggressor_side column; infer sides with infer_aggressor()")
    text = trades["aggressor_side"].to_numpy(dtype=object, na_value="NONE")
    return np.where(text == "BUY", 1, np.where(text == "SELL", -1, 0)).astype(np.int8)


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
