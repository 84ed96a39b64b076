"""Sharpe, Sortino and drawdown per session (an account: a paper run or a live account), from the TCA fills.

A session's equity at the end of each UTC day with fills is ``starting_equity`` + the cash
of its fills (buys pay price x quantity x multiplier, sells receive it, fees are paid) +
its positions marked at each instrument's mid in force at its latest fill so far (the fill
price where no mid is stored). Days without fills carry no mark and are left out: the
metrics are over trading days of the session. The formulas are
:func:`tradebook.research.metrics.window_metrics_array`'s (annualised with 365 periods: a
session's days are calendar days).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from tradebook.research.metrics import DAILY_COLUMNS, window_metrics_array
from tradebook.tca.reads import run_sql, where_clause

_NS_PER_DAY = 86_400_000_000_000
_COLUMNS = ["account_id", "mode", "first_ns", "last_ns", "days", "fills", "pnl", "return", "sharpe", "sortino",
            "max_drawdown"]


def session_performance(source: Any, *, starting_equity: float = 100_000.0, **filters: Any) -> pd.DataFrame:
    """One row per account_id: mode, first_ns, last_ns, days, fills, pnl, return, sharpe, sortino, max_drawdown.

    ``pnl`` is the last day's equity minus ``starting_equity``; the metrics are NaN for a
    session with fewer than two days of fills.
    """
    where, params = where_clause(filters, ts_column="ts_event", alias="f")
    # per account, instrument and day: the position change, the cash and the last mark (SQL keeps it small)
    days = run_sql(source, f"""
        SELECT f.account_id, any_value(f.mode) AS mode, f.instrument_id, f.ts_event // {_NS_PER_DAY} AS day,
               count(*) AS fills, min(f.ts_event) AS first_ns, max(f.ts_event) AS last_ns,
               sum(CASE f.side WHEN 'buy' THEN 1.0 ELSE -1.0 END * CAST(f.quantity AS DOUBLE)) AS dq,
               sum(-CASE f.side WHEN 'buy' THEN 1.0 ELSE -1.0 END * CAST(f.quantity AS DOUBLE) * f.price
                   * COALESCE(CAST(i.multiplier AS DOUBLE), 1.0)
                   - COALESCE(f.fee_bps * CAST(f.quantity AS DOUBLE) * f.decision_price
                              * COALESCE(CAST(i.multiplier AS DOUBLE), 1.0) / 1e4, 0.0)) AS cash,
               arg_max(COALESCE(f.mid_at_fill, f.price), f.ts_event) AS mark,
               any_value(COALESCE(CAST(i.multiplier AS DOUBLE), 1.0)) AS mult
        FROM tca_fills f LEFT JOIN instruments i ON i.instrument_id = f.instrument_id {where}
        GROUP BY f.account_id, f.instrument_id, day ORDER BY f.account_id, day""", params)
    rows = [_one_session(str(account), group, float(starting_equity)) for account, group in days.groupby("account_id")]
    return pd.DataFrame(rows, columns=_COLUMNS)


def _one_session(account: str, group: pd.DataFrame, starting_equity: float) -> list[Any]:
    cash = group.groupby("day")["cash"].sum().sort_index()
    day_index = cash.index
    held = group.pivot(index="day", columns="instrument_id", values="dq").reindex(day_index).fillna(0.0).cumsum()
    mark = group.pivot(index="day", columns="instrument_id", values="mark").reindex(day_index).ffill().fillna(0.0)
    mult = group.groupby("instrument_id")["mult"].first()
    value = (held * mark * mult).sum(axis=1)
    equity = starting_equity + cash.cumsum() + value
    values = [account, str(group["mode"].iloc[0]), int(group["first_ns"].min()), int(group["last_ns"].max()),
              len(day_index), int(group["fills"].sum()), float(equity.iloc[-1] - starting_equity)]
    if len(equity) < 2:
        return values + [np.nan] * 4
    ret = (equity / equity.shift(1).fillna(starting_equity) - 1.0).to_numpy(float)
    daily = {column: np.zeros(len(ret)) for column in DAILY_COLUMNS}
    daily["ret"] = ret
    metrics = window_metrics_array(daily, periods_per_year=365)
    return values + [float(metrics[k][0]) for k in ("return", "sharpe", "sortino", "max_drawdown")]


__all__ = ["session_performance"]
