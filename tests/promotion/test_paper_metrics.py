"""Paper daily records from the store's fills and quotes: the backtest's definitions, from the order path's records."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tradebook.errors import PromotionError
from tradebook.promotion.paper_metrics import paper_daily, round_trips
from tradebook.research.bars import Bars
from tradebook.research.costs import CostModel
from tradebook.research.examples import MeanReversion
from tradebook.research.runner import paper_replay

from .conftest import DAILY_EQUITIES


def test_zero_cost_paper_days_match_the_backtests(equities_store):
    """Started flat at the same bar, a zero-cost paper session and the backtest trade alike (test_equivalence):
    their daily records agree day by day, as computed from the store on one side and vectorbt on the other."""
    from tradebook.research.backtest import backtest

    bars = Bars.from_store(equities_store, DAILY_EQUITIES, start="2020-10-01T00:00:00Z")
    strategy = MeanReversion(window=60)
    result = backtest(strategy, bars, costs=CostModel.zero())
    first = bars.index[0].tz_convert("America/New_York").date()
    paper = paper_replay(equities_store, strategy, bars, start=first, end="2021-03-31", costs=CostModel.zero(),
                         backtest=result)
    daily = paper_daily(equities_store, strategy.name, account_id=paper.account_id, costs=CostModel.zero(),
                        instruments=list(DAILY_EQUITIES), starting_equity=100_000.0)
    expected = result.daily.loc[daily.index[0]:daily.index[-1]]
    assert list(daily.index) == list(expected.index) and len(daily) > 100
    for column in ("n_fills", "n_trades", "n_wins"):
        assert (daily[column].to_numpy() == expected[column].to_numpy()).all(), column
    assert daily["n_fills"].sum() > 40
    np.testing.assert_allclose(daily["ret"], expected["ret"], atol=2e-4)  # marks: close quote mid vs bar close
    np.testing.assert_allclose(daily["turnover"], expected["turnover"], rtol=1e-3, atol=1e-6)
    assert daily["cost_bps_sum"].abs().max() < 1e-6  # zero costs: filled at the mid


def test_round_trips_run_flat_to_flat_and_split_a_reversal():
    fills = pd.DataFrame({
        "instrument_id": "SPY.ARCX", "side": ["buy", "buy", "sell", "sell", "buy"],
        "quantity": [10.0, 10.0, 20.0, 10.0, 10.0], "price": [100.0, 102.0, 105.0, 104.0, 101.0],
        "fee": [1.0, 1.0, 2.0, 1.0, 1.0], "ts_ns": [1, 2, 3, 4, 5],
    })
    trips = round_trips(fills)
    assert list(trips["exit_ts_ns"]) == [3, 5]
    assert trips["pnl"].iloc[0] == pytest.approx(-1000 - 1020 + 2100 - 4)  # two buys, one sell, fees
    assert trips["pnl"].iloc[1] == pytest.approx(1040 - 1010 - 2)  # a short of 10 from 104 closed at 101
    reversal = pd.DataFrame({"instrument_id": "SPY.ARCX", "side": ["buy", "sell"], "quantity": [10.0, 30.0],
                             "price": [100.0, 110.0], "fee": [0.0, 3.0], "ts_ns": [1, 2]})
    trips = round_trips(reversal)
    assert trips["pnl"].iloc[0] == pytest.approx(100 - 1.0)  # a third of the reversal's fee closes the long
    assert np.isnan(trips["exit_ts_ns"].iloc[1])  # the short it opened is still open


def test_a_strategy_that_never_traded_is_named(equities_store):
    with pytest.raises(PromotionError, match="'ghost' never traded"):
        paper_daily(equities_store, "ghost", costs=CostModel.zero())


def test_runs_are_never_mixed(equities_store):
    bars = Bars.from_store(equities_store, DAILY_EQUITIES, start="2020-10-01T00:00:00Z")
    strategy = MeanReversion(window=60)
    first = paper_replay(equities_store, strategy, bars, start="2021-01-04", end="2021-02-26",
                         costs=CostModel.zero(), run="first-run")
    second = paper_replay(equities_store, strategy, bars, start="2021-03-01", end="2021-03-31",
                          costs=CostModel.zero(), run="second-run")
    assert first.account_id != second.account_id and len(first.fills) and len(second.fills)
    latest = paper_daily(equities_store, strategy.name, costs=CostModel.zero())
    assert latest.attrs["account_id"] == second.account_id
    assert latest["n_fills"].sum() == len(second.fills)
    assert latest.index[0].date().isoformat() == "2021-03-01"
    earlier = paper_daily(equities_store, strategy.name, costs=CostModel.zero(), account_id=first.account_id,
                          end=int(pd.Timestamp("2021-02-27", tz="UTC").value))
    assert earlier["n_fills"].sum() == len(first.fills)
