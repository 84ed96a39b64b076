"""Everything the promotion report shows about one strategy, gathered from the store in one call.

:func:`promotion_evidence` takes the gate's decision (a stored one by ``decision_id``, else
a new review, stored unless ``save=False``), the backtest it was judged against, the paper
period's daily records and fills (with each fill's cost against the mid and the fill
model's prediction, as the gate computed them), the backtest's stored ranges of 30-day
metrics, and the strategy's stage and decision history. The report notebook
(``notebooks/reports/promotion.ipynb``) and ``04_promotion`` draw it; nothing here draws.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import pandas as pd

from tradebook.errors import ReportError


@dataclass(frozen=True)
class PromotionEvidence:
    """A strategy's gate decision with the data behind it.

    ``decision``: 'extend', 'promote' or 'reject' (an override shows what it set);
    ``codes``: the decision's codes; ``checks``: the gate's checks frame (metric, value,
    threshold, side, passed, bands, evidence); ``backtest``: the BacktestResult judged
    against; ``paper_daily``: the paper period's daily records (``equity`` by trading
    day), ``paper_equity`` the same equity with the period's starting value first;
    ``paper_fills``: fills with ``cost_bps`` and ``predicted_cost_bps``; ``ranges``:
    the backtest's stored 30-day ranges; ``stages`` and ``decisions``: histories.
    """

    strategy: str
    account_id: str | None
    decision_id: str | None
    decision: str
    codes: tuple[str, ...]
    summary: str
    override: bool
    days: int
    checks: pd.DataFrame
    backtest_id: str
    backtest: Any
    paper_daily: pd.DataFrame
    paper_equity: pd.Series
    paper_fills: pd.DataFrame
    ranges: pd.DataFrame
    stages: pd.DataFrame
    decisions: pd.DataFrame

    def headline(self) -> str:
        """One line: the decision, its codes and the period it judged."""
        return (f"{self.strategy}: {self.decision.upper()} ({', '.join(self.codes)}) after {self.days} trading days "
                f"of paper (run {self.account_id}), against backtest {self.backtest_id}")


def _stored_decision(store: Any, decision_id: str) -> pd.Series:
    rows = store.query("SELECT * FROM promotion_decisions WHERE decision_id = ?", [decision_id])
    if rows.empty:
        known = store.query("SELECT decision_id FROM promotion_decisions ORDER BY ts_ns DESC LIMIT 10")
        raise ReportError(f"no stored gate decision {decision_id!r}; the latest are: "
                          f"{', '.join(known['decision_id']) or 'none'}")
    return rows.iloc[0]


def latest_account(store: Any, strategy: str) -> str | None:
    """The paper account (run) of ``strategy`` run most recently (:func:`tradebook.run_summary.known_runs`)."""
    from tradebook.run_summary import known_runs

    runs = known_runs(store, strategy)
    return runs[0] if runs else None


def promotion_evidence(store: Any, strategy: str, *, backtest_id: str | None = None, account_id: str | None = None,
                       decision_id: str | None = None, save: bool = True) -> PromotionEvidence:
    """The gate's decision for ``strategy`` and the data behind it.

    ``decision_id``: show that stored decision (its checks as stored); None: review the
    strategy's paper period now (:func:`tradebook.promotion.review` with ``backtest_id``
    and ``account_id``), stored when ``save``. ``account_id``: the paper run whose fills
    are judged; None: the strategy's most recent run (:func:`latest_account`; runs of one
    strategy are never mixed). A strategy with no backtest or no paper orders raises the
    gate's PromotionError, which names what is missing.
    """
    from tradebook.promotion import decisions, paper_daily, review, stage_history
    from tradebook.promotion.gate import backtest_costs, backtest_starting_equity
    from tradebook.research.backtest import load_backtest

    if account_id is None:
        account_id = latest_account(store, strategy)
    if decision_id is not None:
        row = _stored_decision(store, decision_id)
        if row["strategy"] != strategy:
            raise ReportError(f"decision {decision_id} is of {row['strategy']!r}, not {strategy!r}")
        evidence = orjson.loads(row["evidence"])
        checks = pd.DataFrame(evidence.get("checks") or [])
        decision, codes = str(row["decision"]), tuple(orjson.loads(row["codes"]))
        summary, override, days = str(row["summary"]), bool(row["override"]), int(evidence.get("days") or 0)
        bt_id, start, end = str(row["backtest_id"]), int(row["period_start_ns"]), int(row["period_end_ns"])
    else:
        result = review(store, strategy, backtest_id=backtest_id, account_id=account_id, save=save)
        checks, decision, codes = result.checks, result.decision.value, tuple(c.value for c in result.codes)
        summary, override, days = result.summary, result.override, result.days
        decision_id, bt_id = result.decision_id, str(result.backtest_id)
        start, end = result.period_start_ns, result.period_end_ns
    backtest = load_backtest(store, bt_id)
    traded = getattr(backtest, "strategy", None)
    starting_equity = backtest_starting_equity(store, bt_id)
    daily = paper_daily(store, strategy, account_id=account_id, start=start, end=end,
                        costs=backtest_costs(store, bt_id),
                        instruments=list(traded.instruments) if traded is not None else None,
                        starting_equity=starting_equity,
                        calendar=backtest.daily.attrs.get("calendar", "XNYS"))
    first = daily["equity"].iloc[0] / (1 + daily["ret"].iloc[0]) if len(daily) else float("nan")
    paper_equity = pd.concat([pd.Series([first]), daily["equity"].reset_index(drop=True)], ignore_index=True)
    fills = daily.attrs.get("fills", pd.DataFrame())
    ranges = store.query("SELECT * FROM research_ranges WHERE backtest_id = ? ORDER BY method, metric", [bt_id])
    stages, history = stage_history(store, strategy), decisions(store, strategy)
    for frame in (stages, history):  # a readable time beside the stored int64 ns
        frame.insert(0, "time", pd.to_datetime(frame["ts_ns"], unit="ns", utc=True))
    return PromotionEvidence(strategy=strategy, account_id=account_id, decision_id=decision_id, decision=decision,
                             codes=codes, summary=summary, override=override, days=days, checks=checks,
                             backtest_id=bt_id, backtest=backtest, paper_daily=daily, paper_equity=paper_equity,
                             paper_fills=fills, ranges=ranges, stages=stages, decisions=history)
