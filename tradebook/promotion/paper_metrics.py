"""Paper (and live) daily records of a strategy, from the fills and quotes in the store.

The same :func:`tradebook.research.metrics.daily_records` the backtest uses, fed from the
order path's records instead of a simulation:

- **Equity** = ``starting_equity`` + the cash of every fill of the strategy (buys pay
  price x quantity x multiplier, sells receive it, fees are paid) + its positions marked
  at each instrument's mid at the day's last quote in the store (the quotes the session
  saw: recorded, or synthetic quotes derived from bars).
- **A fill's cost** is what it paid against the mid in force when it filled (the last
  quote at or before it), in bps: s x (price - mid) / mid x 1e4 with s = +1 for a buy,
  -1 for a sell (fees apart, as in the backtest). Its **predicted cost** is
  ``costs.predict_bps`` at its size, time and the one-minute volatility the backtest
  would have used that day (:func:`tradebook.research.costs.minute_vol_bps` of the
  trailing daily closes up to the day before; none where the store has no bars).
- **A round trip** runs from flat to flat per instrument (a fill that flips the position
  closes one and opens the next, its fee split pro rata); its pnl is the cash it made,
  fees included, and it counts on the day it closes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from tradebook.errors import DataError, PromotionError, ResearchError, StoreError
from tradebook.model.instruments import get_instrument
from tradebook.research.metrics import calendar_timezone, daily_records
from tradebook.tca.mids import cost_against_mid, quote_mids

_NS_PER_DAY = 86_400 * 1_000_000_000
_VOL_LOOKBACK_DAYS = 45  # calendar days of bars before the period for a 20-day volatility


def strategy_fills(store: Any, strategy: str, *, account_id: str | None = None, end: int | None = None,
                   mode: str | None = None) -> pd.DataFrame:
    """The strategy's fills up to ``end`` (ns, inclusive), oldest first, with float quantity/price/fee."""
    where, params = ["f.strategy_id = ?"], [strategy]
    if account_id is not None:
        where.append("f.account_id = ?")
        params.append(account_id)
    if end is not None:
        where.append("f.ts_event <= ?")
        params.append(int(end))
    if mode is not None:
        where.append("o.mode = ?")
        params.append(mode)
    frame = store.query(
        "SELECT f.fill_id, f.client_order_id, f.account_id, f.instrument_id, f.side, "
        "CAST(f.quantity AS DOUBLE) AS quantity, CAST(f.price AS DOUBLE) AS price, CAST(f.fee AS DOUBLE) AS fee, "
        "f.ts_event AS ts_ns FROM fills f LEFT JOIN orders o USING (client_order_id) "
        f"WHERE {' AND '.join(where)} ORDER BY f.ts_event, f.fill_id", params)
    return frame


def round_trips(fills: pd.DataFrame) -> pd.DataFrame:
    """Flat-to-flat round trips per instrument: instrument_id, entry_ts_ns, exit_ts_ns (NaN if open), pnl."""
    rows = []
    for instrument_id, group in fills.groupby("instrument_id", sort=False):
        mult = float(get_instrument(str(instrument_id)).multiplier)
        position, cash, entry = 0.0, 0.0, None
        for f in group.itertuples():
            sign = 1.0 if f.side == "buy" else -1.0
            qty, price, fee = float(f.quantity), float(f.price), float(f.fee)
            remaining = qty
            if position != 0 and np.sign(position) != sign:  # this fill reduces (maybe flips) the position
                closing = min(remaining, abs(position))
                share = closing / qty
                cash += -sign * closing * price * mult - fee * share
                position += sign * closing
                remaining -= closing
                if abs(position) < 1e-12:
                    rows.append((instrument_id, entry, int(f.ts_ns), cash))
                    position, cash, entry = 0.0, 0.0, None
            if remaining > 1e-12:
                if position == 0:
                    entry = int(f.ts_ns)
                cash += -sign * remaining * price * mult - fee * (remaining / qty)
                position += sign * remaining
        if abs(position) > 1e-12:
            rows.append((instrument_id, entry, None, None))
    frame = pd.DataFrame(rows, columns=["instrument_id", "entry_ts_ns", "exit_ts_ns", "pnl"])
    frame["exit_ts_ns"] = frame["exit_ts_ns"].astype("float64")
    frame["pnl"] = frame["pnl"].astype("float64")
    return frame


def _vol_by_day(store: Any, instrument_id: str, start_ns: int, end_ns: int, tz: str) -> pd.Series:
    """One-minute volatility known before each local day (from daily bars up to the day before); empty if none."""
    from tradebook.research.bars import Bars
    from tradebook.research.costs import minute_vol_bps

    try:
        bars = Bars.from_store(store, [instrument_id], start=start_ns - _VOL_LOOKBACK_DAYS * _NS_PER_DAY,
                               end=end_ns + 1, bar_seconds=86_400)
    except (ResearchError, StoreError):
        return pd.Series(dtype=float)
    vol = minute_vol_bps(bars.close, bar_seconds=86_400)[instrument_id].shift(1)  # known before the day opens
    vol.index = vol.index.tz_convert(tz).tz_localize(None).normalize()
    return vol


def fill_costs(fills: pd.DataFrame, mids: dict[str, pd.DataFrame], costs: Any, *,
               vol_by_day: dict[str, pd.Series] | None = None, tz: str = "UTC") -> pd.DataFrame:
    """``fills`` (ts_ns, instrument_id, side, quantity, price) with mid, cost_bps and predicted_cost_bps added.

    ``mids``: per instrument a frame of ts_ns and mid (the quotes in force); a fill's mid
    is the last at or before it. ``vol_by_day``: per instrument the one-minute volatility
    (bps) by local day in ``tz`` for ``costs.predict_bps`` (None: the model's pooled regimes).
    """
    try:  # the mid in force and the cost against it: the rule every report shares, strict here
        out = cost_against_mid(fills, mids, strict=True).drop(columns="quote_ts_ns")
    except DataError as exc:
        raise PromotionError(str(exc)) from exc
    out["predicted_cost_bps"] = np.nan
    for iid, group in out.groupby("instrument_id"):
        ts = group["ts_ns"].to_numpy("int64")
        vol_bps = None
        vol = (vol_by_day or {}).get(str(iid))
        if vol is not None and len(vol):
            local = pd.DatetimeIndex(pd.to_datetime(ts, unit="ns", utc=True)).tz_convert(tz)
            days = local.tz_localize(None).normalize()
            vol_bps = vol.reindex(days).to_numpy(float)
        out.loc[group.index, "predicted_cost_bps"] = costs.predict_bps(str(iid), ts, group["quantity"].to_numpy(float),
                                                                       group["mid"].to_numpy(float), vol_bps)
    return out


def paper_daily(store: Any, strategy: Any, *, account_id: str | None = None, start: int | None = None,
                end: int | None = None, costs: Any, calendar: str = "XNYS", instruments: list[str] | None = None,
                starting_equity: float | None = None, mode: str | None = None) -> pd.DataFrame:
    """Daily records of ``strategy`` from ``start`` to ``end`` (UTC ns), columns as ``daily_records``.

    ``account_id``: the account (paper run) whose fills count; by default the one of the
    strategy's latest order (runs are never mixed). ``start`` defaults to the strategy's
    first order on that account, ``end`` to the last quote of its instruments; ``starting_equity`` (the account's equity before its first fill,
    default 100,000) should be the one the session ran with. ``mode``: 'paper' or
    'live' to keep only those orders' fills. The frame's attrs hold start_ns, end_ns
    and the fills with their costs (``attrs['fills']``).
    """
    name = getattr(strategy, "name", strategy)
    if account_id is None:
        # several runs (accounts) may have traded the strategy: never mix them; the latest is meant
        latest = store.query("SELECT account_id FROM orders WHERE strategy_id = ? ORDER BY ts_init DESC LIMIT 1",
                             [name])
        if latest.empty:
            raise PromotionError(f"{name!r} never traded: the store holds no orders of it, so there is no paper "
                                 "period to judge (run a paper session first)")
        account_id = str(latest["account_id"].iloc[0])
    if start is None:
        first = store.query("SELECT min(ts_init) AS t FROM orders WHERE strategy_id = ? AND account_id = ?",
                            [name, account_id])["t"].iloc[0]
        if pd.isna(first):
            raise PromotionError(f"{name!r} never traded on account {account_id!r}: the store holds no orders of it "
                                 "there, so there is no paper period to judge")
        start = int(first)
    fills = strategy_fills(store, name, account_id=account_id, end=end, mode=mode)
    ids = sorted(set(fills["instrument_id"]) | set(instruments or []))
    if not ids:
        raise PromotionError(f"{name!r} has no fills and no instruments were named; nothing to mark")
    if end is None:
        ends = []
        for iid in ids:
            q = store.query("SELECT max(ts_ns) AS t FROM quotes WHERE instrument_id = ? AND ts_ns >= ?",
                            [iid, int(start)])["t"].iloc[0]
            if pd.notna(q):
                ends.append(int(q))
        if not ends:
            raise PromotionError(f"no quotes of {', '.join(ids)} after the start of {name!r}'s period in the store; "
                                 "paper metrics mark positions at the session's quotes")
        end = max(ends)
    start, end = int(start), int(end)
    if end <= start:
        raise PromotionError(f"the period of {name!r} ends ({end}) before it starts ({start})")
    tz = calendar_timezone(calendar)

    # mids: the quotes in force, from a few days before the period (positions carried in)
    mids = {iid: quote_mids(store, iid, start - 7 * _NS_PER_DAY, end) for iid in ids}
    cash = float(100_000.0 if starting_equity is None else starting_equity)
    mult = {iid: float(get_instrument(iid).multiplier) for iid in ids}
    sign = np.where(fills["side"].to_numpy() == "buy", 1.0, -1.0)
    flows = -sign * fills["quantity"].to_numpy(float) * fills["price"].to_numpy(float) \
        * fills["instrument_id"].map(mult).to_numpy(float) - fills["fee"].to_numpy(float)

    # marking times: each local day's last quote (any instrument), plus the period's start
    all_ts = np.unique(np.concatenate([m["ts_ns"].to_numpy() for m in mids.values()] + [np.zeros(0, "int64")]))
    all_ts = all_ts[(all_ts >= start) & (all_ts <= end)]
    if len(all_ts) == 0:
        raise PromotionError(f"no quotes of {', '.join(ids)} between the start and end of {name!r}'s period")
    local_day = pd.DatetimeIndex(pd.to_datetime(all_ts, unit="ns", utc=True)).tz_convert(tz).normalize()
    last_of_day = all_ts[np.r_[local_day[1:] != local_day[:-1], True]]
    marks = np.concatenate([[start], last_of_day])

    fill_ts = fills["ts_ns"].to_numpy("int64")
    equity = np.full(len(marks), cash)
    done = np.searchsorted(fill_ts, marks, side="right")  # fills at or before each mark
    cum_flow = np.concatenate([[0.0], np.cumsum(flows)])
    equity += cum_flow[done]
    for iid in ids:
        is_i = (fills["instrument_id"] == iid).to_numpy()
        held = np.concatenate([[0.0], np.cumsum(np.where(is_i, sign * fills["quantity"].to_numpy(float), 0.0))])
        m = mids[iid]
        at = np.searchsorted(m["ts_ns"].to_numpy(), marks, side="right") - 1
        position = held[done]
        if np.any((position != 0) & (at < 0)):
            raise PromotionError(f"{name!r} holds {iid} before any quote of it in the store; cannot mark it")
        equity += position * np.where(at >= 0, m["mid"].to_numpy()[np.maximum(at, 0)], 0.0) * mult[iid]
    start_equity = float(equity[0])
    series = pd.Series(equity[1:], index=pd.DatetimeIndex(pd.to_datetime(marks[1:], unit="ns", utc=True)))

    # each fill in the period: its cost against the mid in force and the model's prediction
    in_period = fills[(fill_ts >= start) & (fill_ts <= end)]
    vols = {iid: _vol_by_day(store, iid, start, end, tz) for iid in sorted(set(in_period["instrument_id"]))}
    in_period = fill_costs(in_period, mids, costs, vol_by_day=vols, tz=tz)
    trades = round_trips(fills)
    daily = daily_records(series, in_period, trades, calendar=calendar, starting_equity=start_equity)
    daily.attrs.update({"start_ns": start, "end_ns": end, "strategy": name, "account_id": account_id,
                        "fills": in_period})
    return daily


__all__ = ["fill_costs", "paper_daily", "quote_mids", "round_trips", "strategy_fills"]
