"""What a paper (or live) run did, read from the store: the tables a session report shows.

A run's orders, fills and positions carry the run's name as their account
(:mod:`tradebook.paper`). :func:`run_fills` prices each fill against the mid of the last
quote in the store at or before it (the session's own quotes: recorded, or synthetic ones
built from bars), so its cost in bps is what the order paid against the mid it saw;
:func:`run_days` sums them by UTC day. Pure reads; nothing is written.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from tradebook.errors import ReportError


def known_runs(store: Any) -> list[str]:
    """Accounts with orders in the store, the most recently active first."""
    frame = store.query("SELECT account_id, max(ts_last) AS last FROM orders GROUP BY account_id ORDER BY last DESC")
    return frame["account_id"].tolist()


def pick_run(store: Any, run: str | None = None) -> str:
    """``run`` if the store holds orders of it; None: the most recently active run; else ReportError listing runs."""
    runs = known_runs(store)
    if not runs:
        raise ReportError(f"the store {store.path} holds no orders of any run; run a paper session first "
                          "(notebooks/03_paper.ipynb or `make demo`)")
    if run is None:
        return runs[0]
    if run not in runs:
        raise ReportError(f"no orders of run {run!r} in {store.path}; runs with orders: {', '.join(runs)}")
    return run


def run_orders(store: Any, run: str) -> pd.DataFrame:
    """The run's orders, oldest first, with a tz-aware ``time`` column."""
    frame = store.query("SELECT * FROM orders WHERE account_id = ? ORDER BY ts_init, client_order_id", [run])
    frame.insert(0, "time", pd.to_datetime(frame["ts_init"], unit="ns", utc=True))
    return frame


def run_fills(store: Any, run: str) -> pd.DataFrame:
    """The run's fills with the mid of the last stored quote at or before each and the cost against it.

    ``cost_bps`` = (price − mid) / mid × 10⁴ for a buy, the negative for a sell: positive is
    paid, negative is price improvement. ``mid`` is NaN where the store has no earlier quote
    of the instrument (then so is the cost).
    """
    frame = store.query(
        """
        SELECT f.*, (q.bid_px + q.ask_px) / 2 AS mid, q.ts_ns AS quote_ts_ns
        FROM (SELECT * FROM fills WHERE account_id = ?) f
        ASOF LEFT JOIN quotes q ON q.instrument_id = f.instrument_id AND f.ts_event >= q.ts_ns
        ORDER BY f.ts_event, f.fill_id
        """, [run])
    sign = frame["side"].map({"buy": 1.0, "sell": -1.0})
    frame["notional"] = frame["price"] * frame["quantity"]
    frame["cost_bps"] = sign * (frame["price"] - frame["mid"]) / frame["mid"] * 1e4
    frame.insert(0, "time", pd.to_datetime(frame["ts_event"], unit="ns", utc=True))
    return frame


def run_days(fills: pd.DataFrame) -> pd.DataFrame:
    """Fills of :func:`run_fills` by UTC day: fills, notional, fees, mean and notional-weighted cost in bps."""
    if fills.empty:
        return pd.DataFrame(columns=["fills", "notional", "fees", "cost_bps_mean", "cost_bps_weighted"])
    day = fills["time"].dt.floor("D").rename("day")
    weighted = (fills["cost_bps"] * fills["notional"]).groupby(day).sum() / fills["notional"].groupby(day).sum()
    out = pd.DataFrame({
        "fills": fills.groupby(day).size(),
        "notional": fills["notional"].groupby(day).sum(),
        "fees": fills["fee"].groupby(day).sum(),
        "cost_bps_mean": fills["cost_bps"].groupby(day).mean(),
        "cost_bps_weighted": weighted,
    })
    return out
