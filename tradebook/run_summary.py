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

from tradebook.errors import ConfigError, ReportError
from tradebook.tca.mids import cost_against_mid, mids_for_fills


def last_active(store: Any, account: str, last_ns: int) -> float:
    """When ``account`` last ran, in wall-clock seconds: its paper run's state folder's time, else its last order's.

    Replays stamp orders with market times (a 2021 replay run today is "older" than a 2024
    capture), so the state folder (``<store>.runs/<run>/``) tells runs apart; an account
    without one (a live account) counts by its last order.
    """
    from tradebook.paper import run_dir

    try:
        folder = run_dir(store.path, account)
    except ConfigError:  # not a paper run's name: no state folder
        return last_ns / 1e9
    return folder.stat().st_mtime if folder.exists() else last_ns / 1e9


def known_runs(store: Any, strategy: str | None = None) -> list[str]:
    """Accounts with orders in the store (of ``strategy`` when given), the most recently run first."""
    where, params = ("WHERE strategy_id = ? ", [strategy]) if strategy is not None else ("", [])
    frame = store.query(f"SELECT account_id, max(ts_last) AS last FROM orders {where}GROUP BY account_id", params)
    pairs = sorted(zip(frame["account_id"], frame["last"]), key=lambda pair: last_active(store, *pair), reverse=True)
    return [account for account, _ in pairs]


def pick_run(store: Any, run: str | None = None) -> str:
    """``run`` if the store holds orders of it; None: the most recently run; else ReportError listing runs."""
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
    paid, negative is price improvement (:func:`tradebook.tca.cost_against_mid`). ``mid`` is
    NaN where the store has no earlier quote of the instrument (then so is the cost).
    """
    fills = store.query("SELECT * FROM fills WHERE account_id = ? ORDER BY ts_event, fill_id", [run])
    mids = mids_for_fills(store, fills, ts_column="ts_event")
    frame = cost_against_mid(fills, mids, strict=False, ts_column="ts_event")
    frame.insert(frame.columns.get_loc("cost_bps"), "notional", frame["price"] * frame["quantity"])
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
