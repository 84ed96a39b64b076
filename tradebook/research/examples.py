"""Two example strategies, causal and passing both checks on the bundled daily bars.

Closes are forward-filled before the rolling statistics so that a day an instrument did not trade
(QQQ's 2004-2011 gap, IWM before 2000-05-26) neither breaks the statistics nor gives a NaN target
after the warm-up; the target holds over such days (the backtest has no price to trade at there).
"""

from __future__ import annotations

import pandas as pd

from tradebook.errors import ResearchError
from tradebook.research.bars import Bars
from tradebook.research.strategy import Strategy

BUNDLED_EQUITIES = ("SPY.ARCX", "QQQ.XNAS", "IWM.ARCX", "AAPL.XNAS", "IBM.XNYS", "BAC.XNYS")


class SmaCross(Strategy):
    """Long (target 1) while the ``fast``-bar simple moving average of the close is above the
    ``slow``-bar one, flat (0) otherwise; NaN during the first ``slow - 1`` bars (warm-up)."""

    name = "sma_cross"
    instruments = BUNDLED_EQUITIES
    params = {"fast": 20, "slow": 100}

    def validate_params(self) -> None:
        fast, slow = self.params["fast"], self.params["slow"]
        if not (isinstance(fast, int) and isinstance(slow, int) and 1 <= fast < slow):
            raise ResearchError(f"SmaCross needs whole numbers 1 <= fast < slow; got fast={fast!r}, slow={slow!r}")

    def signals(self, bars: Bars) -> pd.DataFrame:
        close = bars.close.ffill()
        fast = close.rolling(self.params["fast"]).mean()
        slow = close.rolling(self.params["slow"]).mean()
        return (fast > slow).astype(float).where(slow.notna())


class MeanReversion(Strategy):
    """Long (target 1) while the close's z-score against its ``lookback``-bar rolling mean and standard
    deviation is below ``-entry``, flat otherwise: z = (close - mean) / std (ddof=1).

    It buys short, sharp dips and sells on the first close back above the band, so it trades
    several times a month across the six bundled equities (the promotion gate needs trades).
    """

    name = "mean_reversion"
    instruments = BUNDLED_EQUITIES
    params = {"lookback": 20, "entry": 1.0}

    def validate_params(self) -> None:
        lookback, entry = self.params["lookback"], self.params["entry"]
        if not (isinstance(lookback, int) and lookback >= 2):
            raise ResearchError(f"MeanReversion needs a whole lookback >= 2; got lookback={lookback!r}")
        if not (isinstance(entry, (int, float)) and entry > 0):
            raise ResearchError(f"MeanReversion needs entry > 0 (in standard deviations); got entry={entry!r}")

    def signals(self, bars: Bars) -> pd.DataFrame:
        close = bars.close.ffill()
        rolling = close.rolling(self.params["lookback"])
        z = (close - rolling.mean()) / rolling.std()
        # flat where the window has no spread (a held-over price during a gap): z is NaN/inf there
        return (z < -self.params["entry"]).astype(float).where(rolling.count().ge(self.params["lookback"]))
