"""A fill's cost against the mid in force: the one home of the rule every report uses.

The mid in force at a fill is the mid of the last stored quote of its instrument stamped at
or before the fill (a quote at the same instant counts as known). Its cost is
s x (price - mid) / mid x 1e4 bps with s = +1 for a buy, -1 for a sell: positive is paid,
negative is price improvement; fees apart. The TCA update applies the same rule in SQL
(an ``ASOF JOIN``) for ``tca_fills.realised_cost_bps``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from tradebook.errors import DataError

BPS = 1e4


def quote_mids(store: Any, instrument_id: str, start_ns: int, end_ns: int) -> pd.DataFrame:
    """ts_ns and mid of the stored quotes of ``instrument_id`` in [start_ns, end_ns], oldest first."""
    q = store.quotes(instrument_id, start_ns=start_ns, end_ns=end_ns + 1)
    q = q[(q["bid_px"] > 0) & (q["ask_px"] > 0)]
    return pd.DataFrame({"ts_ns": q["ts_ns"].to_numpy("int64"),
                         "mid": (q["bid_px"].to_numpy(float) + q["ask_px"].to_numpy(float)) / 2})


def mids_for_fills(store: Any, fills: pd.DataFrame, *, ts_column: str = "ts_ns") -> dict[str, pd.DataFrame]:
    """Per instrument of ``fills``, the stored quotes (ts_ns, mid) in force at its fills, found in SQL.

    Only the quote in force at each fill is read (one ``ASOF JOIN``), so memory grows with
    the fills, not with the quotes; :func:`cost_against_mid` finds each fill's own among them.
    """
    if fills.empty:
        return {}
    found = store.query(
        "SELECT DISTINCT f.instrument_id, q.ts_ns, (q.bid_px + q.ask_px) / 2 AS mid "
        "FROM (SELECT unnest(?) AS instrument_id, unnest(?) AS t) f "
        "ASOF JOIN quotes q ON q.instrument_id = f.instrument_id AND f.t >= q.ts_ns ORDER BY 1, 2",
        [fills["instrument_id"].astype(str).tolist(), fills[ts_column].astype("int64").tolist()])
    return {str(iid): group[["ts_ns", "mid"]].reset_index(drop=True) for iid, group in found.groupby("instrument_id")}


def cost_against_mid(fills: pd.DataFrame, mids: Mapping[str, pd.DataFrame], *, strict: bool,
                     ts_column: str = "ts_ns") -> pd.DataFrame:
    """``fills`` (``ts_column``, instrument_id, side, price) with ``mid``, ``quote_ts_ns`` and ``cost_bps`` added.

    ``mids``: per instrument a frame of ts_ns and mid, oldest first (:func:`quote_mids`).
    ``strict``: a fill with no quote at or before it raises DataError naming it (what a
    metric that must not silently drop a fill wants); otherwise its mid and cost are NaN.
    """
    out = fills.copy()
    mid = np.full(len(out), np.nan)
    quote_ts = np.full(len(out), -1, dtype="int64")
    for instrument_id, rows in out.groupby("instrument_id").indices.items():  # rows: positions
        m = mids.get(str(instrument_id))
        if m is None or m.empty:
            if strict:
                raise DataError(f"no quotes of {instrument_id} to price its fills against")
            continue
        ts = out[ts_column].to_numpy("int64")[rows]
        stamps = m["ts_ns"].to_numpy("int64")
        at = np.searchsorted(stamps, ts, side="right") - 1
        known = at >= 0
        if strict and not known.all():
            raise DataError(f"a fill of {instrument_id} at {int(ts[int(np.argmin(known))])} has no quote before it: "
                            "its cost against the mid cannot be known")
        mid[rows[known]] = m["mid"].to_numpy(float)[at[known]]
        quote_ts[rows[known]] = stamps[at[known]]
    s = np.where(out["side"].astype(str).to_numpy() == "buy", 1.0, -1.0)
    out["mid"] = mid
    out["quote_ts_ns"] = pd.Series(quote_ts, index=out.index, dtype="Int64").mask(quote_ts < 0)
    out["cost_bps"] = s * (out["price"].to_numpy(float) - mid) / mid * BPS
    return out


__all__ = ["cost_against_mid", "mids_for_fills", "quote_mids"]
