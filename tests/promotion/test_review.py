"""review(): a strategy researched on the older bars, paper-traded on the held-back sessions, judged and stored."""

from __future__ import annotations

import orjson
import pandas as pd
import pytest

from tradebook.errors import PromotionError
from tradebook.promotion.gate import CHECKS, Decision, decisions, review
from tradebook.promotion.stages import Stage, set_stage
from tradebook.research.bars import Bars
from tradebook.research.costs import CostModel
from tradebook.research.examples import MeanReversion
from tradebook.research.runner import paper_replay

from .conftest import DAILY_EQUITIES


def test_review_judges_the_paper_period_against_its_backtest_and_stores_the_evidence(equities_store):
    from tradebook.research.backtest import backtest

    store = equities_store
    costs = CostModel.from_store(store, {i: "IBM.XNYS@v1" for i in DAILY_EQUITIES})
    bars = Bars.from_store(store, DAILY_EQUITIES, start="2015-01-01T00:00:00Z")
    research = bars.until(int(pd.Timestamp("2021-01-30", tz="UTC").value))  # February and March held back
    strategy = MeanReversion(window=60)
    result = backtest(strategy, research, costs=costs)
    backtest_id = result.save(store)
    set_stage(store, strategy.name, Stage.PAPER, reason="paper on the held-back sessions", backtest_id=backtest_id)
    with pytest.raises(PromotionError, match="never traded"):
        review(store, strategy.name, costs=costs)
    paper = paper_replay(store, strategy, bars, start="2021-02-01", end="2021-03-31", costs=costs, backtest=result)

    decision = review(store, strategy.name, costs=costs, account_id=paper.account_id, n_paths=500)
    assert decision.backtest_id == backtest_id and decision.days >= 40
    assert decision.decision in set(Decision)
    assert decision.review_days == 40 or decision.decision is not Decision.EXTEND
    assert list(decision.checks["metric"]) == list(CHECKS)
    assert 0 < decision.metrics["n_fills"] <= len(paper.fills)  # the review's first 40 days of the 42
    stored = decisions(store, strategy.name)
    assert list(stored["decision_id"]) == [decision.decision_id]
    evidence = orjson.loads(stored["evidence"].iloc[0])
    assert evidence["days"] == decision.days and len(evidence["checks"]) == len(CHECKS)
    assert stored["period_start_ns"].iloc[0] < stored["period_end_ns"].iloc[0]


def test_review_of_a_strategy_without_a_backtest_lists_the_known_ones(equities_store):
    with pytest.raises(PromotionError, match="no backtest of 'nobody'"):
        review(equities_store, "nobody")
