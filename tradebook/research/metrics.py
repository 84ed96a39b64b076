"""Daily records and the metrics of a window of days: one definition for backtest, paper and live.

A strategy's history, whatever produced it (a vectorbt backtest, a paper session, a live
account), is first reduced to :func:`daily_records`: one row per trading day of the
exchange calendar, days without fills included. Every window metric (the backtest's
30-day ranges, the promotion gate's checks, the reversion monitor) is computed from
those rows by :func:`window_metrics`, or for many windows or bootstrap paths at once by
:func:`window_metrics_array` (numpy over a paths x days array; the same formulas).

Conventions (stated once, used everywhere):

- A day's ``ret`` is its end-of-day equity over the previous day's, minus one.
- ``sharpe`` is annualised: mean / std (ddof=1) x sqrt(periods_per_year); 0 when the
  returns do not vary (a flat window has no risk-adjusted return).
- ``sortino`` is annualised: mean / downside deviation x sqrt(periods_per_year), the
  downside deviation being sqrt(mean(min(ret, 0)^2)) over all days (target 0); +inf when
  the window has a positive mean and no losing day, 0 when flat.
- ``max_drawdown`` is a positive fraction on the window's own equity path starting at 1
  (a window that only rises has 0).
- ``return`` is compounded over the window.
- ``win_rate`` is closed round trips with pnl > 0 over closed round trips; NaN when none
  closed in the window.
- ``turnover`` is the window's traded notional in multiples of equity: the sum of the
  days' traded notional / start-of-day equity.
- ``cost_bps`` and ``cost_residual_bps`` are means per fill (NaN without fills); a fill's
  cost is what it paid against the mid in bps, its residual that cost minus the fill
  model's prediction for it. ``cost_residual_sd_bps`` is the per-fill standard deviation
  of the residuals (ddof=1; NaN with fewer than two fills), which the gate's one-sided
  bound on the mean residual needs.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from enum import StrEnum
from functools import lru_cache

import numpy as np
import pandas as pd

from tradebook.errors import ResearchError


class Side(StrEnum):
    """The side of a metric that is bad: where a check fails."""

    LOW = "low"
    HIGH = "high"
    TWO_SIDED = "two-sided"


#: The window metrics that are checked, each with its bad side (the promotion gate's family).
METRICS: Mapping[str, Side] = {
    "return": Side.LOW,
    "sharpe": Side.LOW,
    "sortino": Side.LOW,
    "max_drawdown": Side.HIGH,
    "win_rate": Side.LOW,
    "n_trades": Side.TWO_SIDED,
    "turnover": Side.TWO_SIDED,
    "cost_bps": Side.HIGH,
    "cost_residual_bps": Side.HIGH,
}

#: The columns of a daily records frame, in order.
DAILY_COLUMNS: tuple[str, ...] = (
    "ret", "equity", "n_fills", "n_trades", "n_wins", "turnover", "notional",
    "cost_bps_sum", "residual_bps_sum", "residual_bps_sumsq",
)

FILL_COLUMNS: tuple[str, ...] = ("ts_ns", "quantity", "price", "cost_bps", "predicted_cost_bps")
TRADE_COLUMNS: tuple[str, ...] = ("exit_ts_ns", "pnl")


# --- trading days -------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def _calendar(name: str, start_year: int):
    import exchange_calendars as xc

    # the default calendar covers twenty years back from today; bundled bars start in 1998
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*values returning an ndarray that drops timezone")
            return xc.get_calendar(name, start=f"{start_year}-01-01")
    except xc.errors.InvalidCalendarName as exc:
        raise ResearchError(f"unknown calendar {name!r}; expected an exchange calendar name such as "
                            "XNYS, XNAS or CMES, or '24/7' for crypto") from exc


def calendar_timezone(calendar: str) -> str:
    """The time zone whose local date names a trading day of ``calendar`` (UTC for 24/7)."""
    if calendar in ("24/7", "24/5"):
        return "UTC"
    return str(_calendar(calendar, 2000).tz)


def trading_days(calendar: str, first: pd.Timestamp, last: pd.Timestamp) -> pd.DatetimeIndex:
    """Trading days of ``calendar`` from ``first`` to ``last`` (dates), as tz-aware UTC midnights."""
    first, last = pd.Timestamp(first).normalize(), pd.Timestamp(last).normalize()
    if first.tzinfo is not None:
        first, last = first.tz_localize(None), last.tz_localize(None)
    if calendar == "24/7":
        days = pd.date_range(first, last, freq="D")
    else:
        start_year = min(first.year, 2000) // 10 * 10  # one cached calendar per decade of start
        cal = _calendar(calendar, start_year)
        if last > cal.last_session:
            raise ResearchError(f"calendar {calendar} ends on {cal.last_session.date()}; "
                                f"asked for days up to {last.date()}")
        with warnings.catch_warnings():
            # exchange_calendars reads tz-aware .values, which pandas 3 flags; the result is right
            warnings.filterwarnings("ignore", message=".*values returning an ndarray that drops timezone")
            days = cal.sessions_in_range(max(first, cal.first_session), last)
    return pd.DatetimeIndex(days).as_unit("ns").tz_localize("UTC")


def _local_days(ts_ns: np.ndarray, tz: str) -> np.ndarray:
    """Local calendar date (as datetime64[D]) of each UTC ns timestamp."""
    local = pd.DatetimeIndex(pd.to_datetime(np.asarray(ts_ns, dtype="int64"), unit="ns", utc=True)).tz_convert(tz)
    return local.tz_localize(None).normalize().as_unit("ns").values


def _ts_ns_of_index(index: pd.Index, what: str) -> np.ndarray:
    if not isinstance(index, pd.DatetimeIndex) or index.tz is None:
        raise ResearchError(f"{what} must be indexed by tz-aware timestamps; got {type(index).__name__}"
                            + ("" if not isinstance(index, pd.DatetimeIndex) else " without a time zone"))
    return index.as_unit("ns").asi8


def _require_columns(frame: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ResearchError(f"{what} lack columns {missing}; expected at least {list(columns)}, "
                            f"got {list(frame.columns)}")


# --- daily records ------------------------------------------------------------------------------

def daily_records(equity: pd.Series, fills: pd.DataFrame, trades: pd.DataFrame, *,
                  calendar: str = "XNYS", starting_equity: float | None = None) -> pd.DataFrame:
    """One row per trading day of ``calendar`` from the first to the last equity observation.

    ``equity``: account equity, indexed by tz-aware timestamps (several a day is fine;
    the day's value is the last observed by the end of its local date in the calendar's
    time zone, carried forward over days without an observation). Stamp end-of-day
    equity at the bar's start or the session's close, not at the following midnight,
    which is the next local date. ``fills``: ts_ns, quantity, price, cost_bps,
    predicted_cost_bps (side, instrument_id, mid, fee may be there and are not needed).
    ``trades``: exit_ts_ns and pnl; open trades (exit_ts_ns missing) are not counted.
    A fill or trade exit counts on the trading day of its local date (the next trading
    day if that date is not one). ``starting_equity`` is the equity before the first
    day; by default the first observation (so the first day's ``ret`` covers only what
    happened after it).

    Returns a frame indexed by tz-aware UTC midnights of the trading days with the
    columns of :data:`DAILY_COLUMNS`: ret, equity (end of day), n_fills, n_trades,
    n_wins, turnover (traded notional / start-of-day equity), notional, cost_bps_sum,
    residual_bps_sum and residual_bps_sumsq (sums over the day's fills of cost_bps and
    of cost_bps - predicted_cost_bps, and of its square).
    """
    if not isinstance(equity, pd.Series):
        raise ResearchError(f"equity must be a pandas Series of account equity; got {type(equity).__name__}")
    equity = equity.dropna()
    if equity.empty:
        raise ResearchError("equity is empty: daily records need at least one equity observation")
    eq_ts = _ts_ns_of_index(equity.index, "equity")
    order = np.argsort(eq_ts, kind="stable")
    eq_ts, eq_values = eq_ts[order], equity.to_numpy(dtype=float)[order]
    if not np.all(np.isfinite(eq_values)) or np.any(eq_values <= 0):
        bad = eq_values[~np.isfinite(eq_values) | (eq_values <= 0)][0]
        raise ResearchError(f"equity must be finite and positive; found {bad}")
    _require_columns(fills, FILL_COLUMNS, "fills")
    _require_columns(trades, TRADE_COLUMNS, "trades")

    tz = calendar_timezone(calendar)
    eq_days = _local_days(eq_ts, tz)
    days = trading_days(calendar, pd.Timestamp(eq_days[0]), pd.Timestamp(eq_days[-1]))
    if len(days) == 0:
        raise ResearchError(f"no {calendar} trading day between {pd.Timestamp(eq_days[0]).date()} and "
                            f"{pd.Timestamp(eq_days[-1]).date()}")
    day_values = days.tz_localize(None).values  # datetime64[ns] midnights
    n = len(day_values)

    # end-of-day equity: last observation with local date <= day
    last_obs = np.searchsorted(eq_days, day_values, side="right") - 1
    end_eq = eq_values[np.maximum(last_obs, 0)]
    end_eq = np.where(last_obs >= 0, end_eq, eq_values[0])
    start0 = float(eq_values[0] if starting_equity is None else starting_equity)
    start_eq = np.concatenate([[start0], end_eq[:-1]])
    ret = end_eq / start_eq - 1.0

    def day_slot(ts_ns: np.ndarray) -> np.ndarray:
        # a date that is not a trading day counts on the next one; dates outside the days: -1, dropped
        local = _local_days(ts_ns, tz)
        slots = np.searchsorted(day_values, local, side="left")
        return np.where((local < day_values[0]) | (slots >= n), -1, slots)

    def per_day(slots: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        keep = slots >= 0
        return np.bincount(slots[keep], weights=None if weights is None else weights[keep], minlength=n)

    fill_ts = fills["ts_ns"].to_numpy(dtype="int64") if len(fills) else np.zeros(0, dtype="int64")
    fill_slots = day_slot(fill_ts) if len(fill_ts) else np.zeros(0, dtype="int64")
    qty = np.abs(fills["quantity"].to_numpy(dtype=float)) if len(fills) else np.zeros(0)
    price = fills["price"].to_numpy(dtype=float) if len(fills) else np.zeros(0)
    cost = fills["cost_bps"].to_numpy(dtype=float) if len(fills) else np.zeros(0)
    resid = cost - (fills["predicted_cost_bps"].to_numpy(dtype=float) if len(fills) else np.zeros(0))
    if len(fills) and not (np.all(np.isfinite(cost)) and np.all(np.isfinite(resid))):
        raise ResearchError("fills hold a cost_bps or predicted_cost_bps that is not finite; every fill needs both")
    notional = per_day(fill_slots, qty * price)

    closed = trades[trades["exit_ts_ns"].notna()] if len(trades) else trades
    exit_ts = closed["exit_ts_ns"].to_numpy(dtype="int64") if len(closed) else np.zeros(0, dtype="int64")
    trade_slots = day_slot(exit_ts) if len(exit_ts) else np.zeros(0, dtype="int64")
    wins = (closed["pnl"].to_numpy(dtype=float) > 0).astype(float) if len(closed) else np.zeros(0)

    out = pd.DataFrame(
        {
            "ret": ret,
            "equity": end_eq,
            "n_fills": per_day(fill_slots).astype("int64"),
            "n_trades": per_day(trade_slots).astype("int64"),
            "n_wins": per_day(trade_slots, wins).round().astype("int64"),
            "turnover": notional / start_eq,
            "notional": notional,
            "cost_bps_sum": per_day(fill_slots, cost),
            "residual_bps_sum": per_day(fill_slots, resid),
            "residual_bps_sumsq": per_day(fill_slots, resid * resid),
        },
        index=days.rename("day"),
    )
    out.attrs["calendar"] = calendar
    return out


# --- window metrics -----------------------------------------------------------------------------

def _as_2d(values: np.ndarray) -> np.ndarray:
    a = np.asarray(values, dtype=float)
    return a[None, :] if a.ndim == 1 else a


def window_metrics_array(daily: Mapping[str, np.ndarray], *, periods_per_year: int = 252) -> dict[str, np.ndarray]:
    """:func:`window_metrics` of many windows at once: each column a (paths x days) array.

    ``daily`` maps the :data:`DAILY_COLUMNS` needed (ret, n_fills, n_trades, n_wins,
    turnover, cost_bps_sum, residual_bps_sum, residual_bps_sumsq) to arrays whose rows
    are windows (or bootstrap paths) and columns their days. Returns one array per
    metric with one value per row. The same formulas as :func:`window_metrics`.
    """
    ret = _as_2d(daily["ret"])
    n_days = ret.shape[1]
    if n_days < 2:
        raise ResearchError(f"a window needs at least 2 days for its metrics; got {n_days}")
    with np.errstate(divide="ignore", invalid="ignore"):
        growth = np.cumprod(1.0 + ret, axis=1)
        total = growth[:, -1] - 1.0
        mean = ret.mean(axis=1)
        sd = ret.std(axis=1, ddof=1)
        scale = np.sqrt(periods_per_year)
        # float noise on a constant series gives sd ~1e-19, not 0
        flat = sd <= 1e-12 * np.maximum(np.abs(mean), 1e-12)
        sharpe = np.where(flat, 0.0, mean / np.where(flat, 1.0, sd) * scale)
        downside = np.sqrt(np.mean(np.minimum(ret, 0.0) ** 2, axis=1))
        sortino = np.where(downside > 0, mean / np.where(downside > 0, downside, 1.0) * scale,
                           np.where(mean > 0, np.inf, 0.0))
        peak = np.maximum(np.maximum.accumulate(growth, axis=1), 1.0)
        max_dd = np.max(1.0 - growth / peak, axis=1)
        max_dd = np.maximum(max_dd, 0.0)

        n_trades = _as_2d(daily["n_trades"]).sum(axis=1)
        n_wins = _as_2d(daily["n_wins"]).sum(axis=1)
        win_rate = np.where(n_trades > 0, n_wins / np.where(n_trades > 0, n_trades, 1.0), np.nan)
        n_fills = _as_2d(daily["n_fills"]).sum(axis=1)
        has_fills = n_fills > 0
        safe_fills = np.where(has_fills, n_fills, 1.0)
        cost = np.where(has_fills, _as_2d(daily["cost_bps_sum"]).sum(axis=1) / safe_fills, np.nan)
        rsum = _as_2d(daily["residual_bps_sum"]).sum(axis=1)
        rsq = _as_2d(daily["residual_bps_sumsq"]).sum(axis=1)
        resid = np.where(has_fills, rsum / safe_fills, np.nan)
        two = n_fills > 1
        var = np.where(two, (rsq - rsum * rsum / safe_fills) / np.where(two, n_fills - 1.0, 1.0), np.nan)
        resid_sd = np.sqrt(np.maximum(var, 0.0))
        turnover = _as_2d(daily["turnover"]).sum(axis=1)
    return {
        "return": total,
        "sharpe": sharpe,
        "sortino": sortino,
        "max_drawdown": max_dd,
        "win_rate": win_rate,
        "n_trades": n_trades,
        "turnover": turnover,
        "cost_bps": cost,
        "cost_residual_bps": resid,
        "n_fills": n_fills,
        "cost_residual_sd_bps": resid_sd,
    }


def window_metrics(daily: pd.DataFrame, *, periods_per_year: int = 252) -> dict[str, float]:
    """The metrics of one window of daily records (see the module docstring for each formula).

    Keys: return, sharpe, sortino, max_drawdown, win_rate, n_trades, turnover, cost_bps,
    cost_residual_bps, n_fills, cost_residual_sd_bps. ``periods_per_year``: 252 for an
    exchange calendar, 365 for 24/7.
    """
    if not isinstance(daily, pd.DataFrame):
        raise ResearchError(f"daily must be a daily records frame; got {type(daily).__name__}")
    _require_columns(daily, DAILY_COLUMNS, "daily records")
    arrays = {c: daily[c].to_numpy(dtype=float) for c in DAILY_COLUMNS}
    values = window_metrics_array(arrays, periods_per_year=periods_per_year)
    return {name: float(v[0]) for name, v in values.items()}


def periods_per_year(calendar: str) -> int:
    """Trading days in a year for annualising: 365 for 24/7, 252 for an exchange calendar."""
    return 365 if calendar == "24/7" else 252


__all__ = [
    "DAILY_COLUMNS", "METRICS", "Side", "calendar_timezone", "daily_records", "periods_per_year",
    "trading_days", "window_metrics", "window_metrics_array",
]
