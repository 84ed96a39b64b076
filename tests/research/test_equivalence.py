"""One strategy function, two faces: with zero costs the vectorbt backtest and a replayed paper session (tb.Session,
the paper venue, the real order path) make the same trades: same instruments, days, sides and quantities."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from tradebook.research.costs import CostModel
from tradebook.research.examples import MeanReversion, SmaCross
from tradebook.research.runner import paper_replay

pytest.importorskip("tradebook.research.backtest")


def _trades(frame: pd.DataFrame, ts_column: str) -> pd.DataFrame:
    """(New York day, instrument, side, signed quantity) per instrument and day, netted as orders are."""
    day = pd.to_datetime(frame[ts_column].astype("int64"), unit="ns", utc=True).dt.tz_convert("America/New_York")
    side = frame["side"].astype(str).str.lower()
    quantity = frame["quantity"].map(lambda q: Decimal(str(q)))
    signed = np.where(side == "buy", quantity, -quantity)
    out = pd.DataFrame({"day": day.dt.date, "instrument_id": frame["instrument_id"].astype(str), "signed": signed})
    out = out.groupby(["day", "instrument_id"], as_index=False)["signed"].sum()
    out = out[out["signed"] != 0]
    out["side"] = np.where(out["signed"] > 0, "buy", "sell")
    out["quantity"] = out["signed"].map(abs)
    return out[["day", "instrument_id", "side", "quantity"]].sort_values(["day", "instrument_id"]).reset_index(drop=True)


@pytest.mark.parametrize("strategy", [MeanReversion(window=60), SmaCross(fast=5, slow=20, window=60)],
                         ids=["mean_reversion", "sma_cross"])
def test_zero_cost_backtest_and_paper_session_make_the_same_trades(daily_store, daily_bars, strategy):
    from tradebook.research.backtest import backtest

    first = int(np.searchsorted(daily_bars.index, pd.Timestamp("2020-10-01", tz="UTC")))
    bars = daily_bars.iloc(slice(first, None))  # ~125 sessions: both faces start flat at the same bar
    result = backtest(strategy, bars, costs=CostModel.zero())
    paper = paper_replay(daily_store, strategy, bars, start=bars.index[0].tz_convert("America/New_York").date(),
                         end=bars.index[-1].tz_convert("America/New_York").date(), costs=CostModel.zero(),
                         backtest=result)
    expected = _trades(result.fills, "ts_ns")
    got = _trades(paper.fills, "ts_event_ns")
    assert len(expected) > 20  # the comparison means something: trades on many days
    pd.testing.assert_frame_equal(got, expected)
    # zero costs: the paper venue filled at the open quote's mid, the backtest at the open
    assert set(paper.decisions["outcome"]) == {"sent"}
