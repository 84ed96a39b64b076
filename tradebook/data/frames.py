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
