"""A simulated strategy's record (equity, fills with costs, round trips) for the gate's tests.

The gate needs a backtest's daily records; until a test runs on a real backtest, these are
built by the real ``daily_records`` from a simulated trading process: autocorrelated daily
returns with an annual Sharpe near 1.5, a Poisson number of fills a day whose costs
scatter around the fill model's prediction, and closed round trips that win 55% of the time.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tradebook.research.metrics import daily_records, trading_days

NY = "America/New_York"


def simulate(n_days: int, seed: int, *, start: str = "2017-01-03", mean: float = 0.0006, vol: float = 0.01,
             fills_per_day: float = 6.0, trades_per_day: float = 0.8, win_prob: float = 0.55,
             cost_factor: float = 1.0, predicted_factor: float = 1.0, notional: float = 20_000.0,
             returns: np.ndarray | None = None, equity0: float = 100_000.0, calendar: str = "XNYS",
             costs=None, instrument_id: str = "SPY.ARCX", price0: float = 100.0,
             cost_pool: tuple[np.ndarray, np.ndarray] | None = None):
    """(equity, fills, trades) of ``n_days`` trading days of a simulated strategy.

    With ``costs`` (a research CostModel) each fill's prediction is ``costs.predict_bps`` and
    its realised cost a draw of ``costs.draw_bps``: the model's own scatter, as a backtest's.
    With ``cost_pool`` (realised, predicted arrays, e.g. a venue's own fills) each fill's pair
    is drawn from the pool.
    """
    rng = np.random.default_rng(seed)
    first = pd.Timestamp(start)
    days = trading_days(calendar, first, first + pd.Timedelta(days=int(n_days * 1.6) + 30))[:n_days]
    local = days.tz_localize(None)
    if returns is None:
        noise = rng.normal(0.0, vol, n_days)
        returns = mean + noise + 0.1 * np.r_[0.0, noise[:-1]]  # some autocorrelation
    n_fills = rng.poisson(fills_per_day, n_days)
    total = int(n_fills.sum())
    day_of_fill = np.repeat(np.arange(n_days), n_fills)
    minutes = rng.integers(0, 390, total)
    fill_ts = (local[day_of_fill] + pd.Timedelta(hours=9, minutes=30)
               + pd.to_timedelta(minutes, unit="min")).tz_localize(NY).tz_convert("UTC")
    price = price0 * (1.0 + rng.normal(0, 0.01, total))
    growth = np.r_[1.0, np.cumprod(1.0 + np.asarray(returns))[:-1]]  # sized on start-of-day equity
    qty = notional * growth[day_of_fill] * rng.uniform(0.5, 1.5, total) / price
    qty = np.maximum(np.round(qty), 1.0) if costs is None else qty
    if cost_pool is not None:
        pick = rng.integers(0, len(cost_pool[0]), total)
        realised, predicted = np.asarray(cost_pool[0])[pick], np.asarray(cost_pool[1])[pick]
    elif costs is None:
        predicted = rng.uniform(1.0, 4.0, total)
        realised = predicted + rng.normal(0.0, 1.0, total)
    else:
        predicted = costs.predict_bps(instrument_id, fill_ts.asi8, qty, price)
        realised = costs.draw_bps(instrument_id, fill_ts.asi8, qty, price, rng=rng)
    cost_paid = np.zeros(n_days)
    np.add.at(cost_paid, day_of_fill, (cost_factor - 1.0) * np.abs(realised) * qty * price / 1e4)
    fills = pd.DataFrame({
        "ts_ns": fill_ts.asi8, "instrument_id": instrument_id, "side": np.where(rng.random(total) < 0.5, "buy", "sell"),
        "quantity": qty, "price": price, "mid": price, "fee": 0.0,
        "cost_bps": realised * cost_factor, "predicted_cost_bps": predicted * predicted_factor,
    })
    equity_values = equity0 * np.cumprod(1.0 + np.asarray(returns))
    equity_values = equity_values - np.cumsum(cost_paid)  # costs above the model come out of equity
    equity = pd.Series(equity_values, index=(local + pd.Timedelta(hours=16)).tz_localize(NY).tz_convert("UTC"))
    n_trades = rng.poisson(trades_per_day, n_days)
    day_of_trade = np.repeat(np.arange(n_days), n_trades)
    wins = rng.random(len(day_of_trade)) < win_prob
    trades = pd.DataFrame({
        "exit_ts_ns": (local[day_of_trade] + pd.Timedelta(hours=15)).tz_localize(NY).tz_convert("UTC").asi8,
        "pnl": np.where(wins, 100.0, -90.0),
    })
    return equity, fills, trades


def simulated_daily(n_days: int, seed: int, **kwargs) -> pd.DataFrame:
    equity, fills, trades = simulate(n_days, seed, **kwargs)
    return daily_records(equity, fills, trades, calendar=kwargs.get("calendar", "XNYS"), starting_equity=100_000.0)
