"""Parameter sweeps that count their trials: every combination backtested, stored, and the best deflated.

:func:`sweep` runs each combination of a grid through the same rules as
:func:`tradebook.research.backtest.backtest` (next-open timing, Half-Kelly measured at the cap
per trial, calibrated costs), all trials at once: one compiled order loop over every trial's
columns (each trial its own account) gives each trial's equity, fills and round trips. The
trials see the same market and the same cost draws, so the chosen trial run alone through the
backtest's path (the loop, then vectorbt's ``from_orders`` for its equity, checked, and its
round trips: ``SweepResult.best``) is exactly its column of the sweep, which is checked too.
vectorbt is not called per trial: replaying a hundred accounts through it only to read
their equity back doubled a sweep's time.

Trial metrics come from per-bar records (daily bars are the trading days; intraday bars are
summed into their local dates), with the definitions of
:func:`tradebook.research.metrics.window_metrics`; the chosen trial's own metrics come from its
daily records (the same figures where every trading day has a bar). The research result
carries the honest number of trials: the deflated Sharpe ratio of the chosen trial given all
of them (``dsr``) and the probability of backtest overfitting of the sweep (``pbo``, CSCV over
the trials' daily returns).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tradebook.errors import ResearchError
from tradebook.research.backtest import (
    DEFAULT_CAP,
    DEFAULT_EQUITY,
    BacktestResult,
    Sizing,
    _check_inputs,
    _checked_equity,
    _content_id,
    _key,
    _market,
    _portfolio,
    _result,
    _simulate,
    _sizing_of,
    metrics_array,
)
from tradebook.research.bars import Bars
from tradebook.research.costs import CostModel

# metric -> True when higher is better (what ``choose`` may name)
CHOOSABLE = {"sharpe": True, "sortino": True, "total_return": True, "cagr": True, "psr": True,
             "max_drawdown": False}
_MAX_CELLS = 4_000_000  # bars x columns per chunk of trials: bounds the loop's and vectorbt's arrays


@dataclass(eq=False)
class SweepResult:
    """Every trial of a sweep (``trials``), the chosen one (``best``), its DSR and the sweep's PBO."""

    sweep_id: str
    strategy: str
    grid: dict[str, list]
    trials: pd.DataFrame  # one row per trial: params, fraction, metrics, backtest_id
    best: BacktestResult
    dsr: Any  # tradebook.research.stats.DsrResult (None when the chosen trial's returns do not vary)
    pbo: Any  # tradebook.research.stats.PboResult (None with one trial or too few bars)
    n_trials: int
    choose: str
    trial_returns: pd.DataFrame = field(repr=False)  # days x trials: each trial's daily returns
    _trials: list[BacktestResult] = field(default_factory=list, repr=False)

    @property
    def stats(self) -> dict[str, Any]:
        """What research_sweeps.stats stores: the choice, DSR and PBO figures."""
        dsr = None if self.dsr is None else {k: getattr(self.dsr, k) for k in
                                             ("dsr", "psr", "sr", "sr0", "n_trials", "sr_variance", "n_obs", "skew",
                                              "kurtosis")}
        pbo = None if self.pbo is None else {"pbo": self.pbo.pbo, "n_splits": self.pbo.n_splits,
                                             "n_blocks": self.pbo.n_blocks, "prob_oos_loss": self.pbo.prob_oos_loss}
        return {"choose": self.choose, "best_params": self.best.params, "n_trials": self.n_trials, "dsr": dsr,
                "pbo": pbo}

    def trial_results(self) -> list[BacktestResult]:
        """One BacktestResult per trial (equity, metrics, sizing; the chosen one with its fills and trades)."""
        return self._trials

    def save(self, store: Any) -> str:
        """Store the sweep and every trial (idempotent); returns the sweep id."""
        from tradebook.research.storage import save_sweep

        return save_sweep(store, self)

    def __repr__(self) -> str:
        dsr = "n/a" if self.dsr is None else f"{self.dsr.dsr:.3f}"
        pbo = "n/a" if self.pbo is None else f"{self.pbo.pbo:.3f}"
        return (f"<SweepResult {self.strategy}: {self.n_trials} trials, best {self.best.params} by {self.choose}, "
                f"DSR {dsr}, PBO {pbo}>")


def _combinations(strategy: Any, grid: Mapping[str, Sequence]) -> list[dict[str, Any]]:
    if not isinstance(grid, Mapping) or not grid:
        raise ResearchError(f"grid is {grid!r}; expected a mapping of parameter name -> list of values")
    unknown = sorted(set(grid) - set(strategy.params))
    if unknown:
        raise ResearchError(f"grid names {unknown}, which {type(strategy).__name__} does not have; its parameters "
                            f"are {sorted(strategy.params)}")
    values = {}
    for name, options in grid.items():
        if isinstance(options, (str, bytes)) or not isinstance(options, Sequence) or len(options) == 0:
            raise ResearchError(f"grid[{name!r}] is {options!r}; expected a non-empty list of values")
        values[name] = list(options)
    return [dict(zip(values, combo)) for combo in itertools.product(*values.values())]


def _bar_records(market: Any, run: Any, starting_equity: float) -> dict:
    """Per-bar daily-record arrays (trials x bars) of a chunk: the columns window_metrics_array reads."""
    n = len(market.instruments)
    equity = run.equity
    n_rows, n_groups = equity.shape
    filled = (run.qty != 0).reshape(n_rows, n_groups, n)
    notional = np.abs(run.qty * np.nan_to_num(run.price)).reshape(n_rows, n_groups, n).sum(axis=2)
    cost = np.where(run.qty != 0, run.cost, 0.0).reshape(n_rows, n_groups, n)
    residual = np.where(run.qty != 0, run.cost - run.pred, 0.0).reshape(n_rows, n_groups, n)
    previous = np.vstack([np.full((1, n_groups), float(starting_equity)), equity[:-1]])
    with np.errstate(divide="ignore", invalid="ignore"):
        ret = equity / previous - 1.0
        turnover = np.where(previous > 0, notional / previous, 0.0)
    return {"ret": ret.T, "equity": equity.T, "n_fills": filled.sum(axis=2).T.astype(float),
            "n_trades": run.closed_at.T, "n_wins": run.wins_at.T, "turnover": turnover.T, "notional": notional.T,
            "cost_bps_sum": cost.sum(axis=2).T, "residual_bps_sum": residual.sum(axis=2).T,
            "residual_bps_sumsq": (residual ** 2).sum(axis=2).T}


def _by_day(records: dict, index: pd.DatetimeIndex, calendar: str, starting_equity: float) -> dict:
    """Per-bar records of intraday bars summed into days (the bars' local dates in the calendar's zone)."""
    from tradebook.research.metrics import calendar_timezone

    local = index.tz_convert(calendar_timezone(calendar)).normalize()
    starts = np.flatnonzero(np.r_[True, local[1:] != local[:-1]])
    ends = np.r_[starts[1:], len(index)] - 1
    out = {c: np.add.reduceat(records[c], starts, axis=1) for c in
           ("n_fills", "n_trades", "n_wins", "notional", "cost_bps_sum", "residual_bps_sum", "residual_bps_sumsq")}
    equity = records["equity"][:, ends]
    previous = np.hstack([np.full((equity.shape[0], 1), float(starting_equity)), equity[:, :-1]])
    with np.errstate(divide="ignore", invalid="ignore"):
        out["ret"] = equity / previous - 1.0
        out["turnover"] = np.where(previous > 0, out["notional"] / previous, 0.0)
    out["equity"] = equity
    return out


def sweep(strategy: Any, grid: Mapping[str, Sequence], bars: Bars, *, costs: CostModel | None = None,
          store: Any = None, choose: str = "sharpe", starting_equity: float = DEFAULT_EQUITY, seed: int = 0,
          cap: float = DEFAULT_CAP, adjusted: bool = True, progress: bool | None = None) -> SweepResult:
    """Backtest every combination of ``grid`` (parameter -> values) of ``strategy`` on ``bars``.

    Each trial: the lookahead check (full on the grid's corners, light on the rest:
    :func:`tradebook.research.causality.prepare_sweep`), Half-Kelly measured at ``cap`` on its own
    round trips, calibrated ``costs`` (None: none). ``choose``: the metric the best trial maximises
    (``max_drawdown``: minimises), one of :data:`CHOOSABLE`. With ``store`` every trial is stored
    (a research_backtests row with the sweep id and its equity; the chosen one with its fills and
    trades) and the sweep's row with its DSR and PBO. ``adjusted``: as in backtest(). ``progress``:
    a bar of the trials simulated (None: only when a person watches, see :mod:`tradebook.progress`).
    """
    from tradebook.progress import Bar
    from tradebook.research.causality import check_trailing_window, prepare_sweep
    from tradebook.research.metrics import DAILY_COLUMNS, periods_per_year
    from tradebook.research.stats import deflated_sharpe_ratio_of, probability_of_backtest_overfitting
    from tradebook.research.strategy import check_bars_for

    _check_inputs(bars, starting_equity, seed)
    if choose not in CHOOSABLE:
        raise ResearchError(f"choose={choose!r}; expected one of {', '.join(CHOOSABLE)}")
    costs = CostModel.zero() if costs is None else costs
    if not isinstance(costs, CostModel):
        raise ResearchError(f"costs is a {type(costs).__name__}; expected a CostModel or None")
    if tuple(bars.instruments) != tuple(strategy.instruments):
        bars = bars.select(list(strategy.instruments))
    check_bars_for(strategy, bars)
    combos = _combinations(strategy, grid)
    strategies = [strategy.with_params(**combo) for combo in combos]
    prepared = prepare_sweep(strategies, bars, seed=seed)
    market = _market(bars, costs, seed, adjusted)
    n = len(market.instruments)
    n_trials = len(strategies)
    sweep_key = {"sweep": _key(strategy, bars, costs, seed, starting_equity, None, cap),
                 "grid": {k: [repr(v) for v in vs] for k, vs in grid.items()}, "choose": choose}
    sweep_id = _content_id("sw", sweep_key)

    per_chunk = max(1, _MAX_CELLS // max(len(bars) * n, 1))
    sizings: list[Sizing] = []
    equity_parts, record_parts = [], []
    with Bar(total=n_trials, desc=f"sweep {strategy.name}", unit="trial", progress=progress) as bar:
        for first in range(0, n_trials, per_chunk):
            chunk = prepared[first:first + per_chunk]
            targets = np.hstack([p.targets.to_numpy(dtype=np.float64) for p in chunk])
            measured = _simulate(market, targets, np.full(len(chunk), float(cap)), starting_equity)
            chunk_sizing = _sizing_of(measured.stats, n, cap)
            del measured
            run = _simulate(market, targets, np.array([s.fraction for s in chunk_sizing]), starting_equity)
            sizings.extend(chunk_sizing)
            equity_parts.append(run.equity)
            record_parts.append(_bar_records(market, run, starting_equity))
            del run
            bar.update(len(chunk))
    equity = np.hstack(equity_parts)
    records = {c: np.vstack([part[c] for part in record_parts]) for c in DAILY_COLUMNS}
    if bars.bar_seconds < 86_400:  # metrics are of days: intraday bars summed into their days
        records = _by_day(records, bars.index, market.calendar, starting_equity)
    ppy = periods_per_year(market.calendar)
    values = metrics_array(records, periods_per_year=ppy, starting_equity=starting_equity)

    trials = pd.DataFrame(combos)
    trials["fraction"] = [s.fraction for s in sizings]
    for name, column in values.items():
        if name not in ("starting_equity", "n_days"):
            trials[name] = column
    score = trials[choose].to_numpy(dtype=np.float64)
    higher = CHOOSABLE[choose]
    score = np.where(np.isfinite(score), score if higher else -score, -np.inf)
    best_at = int(np.argmax(score))

    trial_results = []
    for g, (trial, sizing) in enumerate(zip(strategies, sizings)):
        key = _key(trial, bars, costs, seed, starting_equity, None, cap)
        if g == best_at:
            window = check_trailing_window(trial, bars).window
            result = _best(trial, bars, market, costs, sizing, seed, starting_equity, key, window,
                           prepared[g].targets, sweep_id, equity[:, g])
            best = result
        else:
            result = _result(trial, market, None, None, equity, g, sizing=sizing, costs=costs, seed=seed,
                             starting_equity=starting_equity, key=key, window=None, targets=None, bars=bars,
                             sweep_id=sweep_id, records=False)
            result.metrics = {k: float(v[g]) for k, v in values.items()}
        trial_results.append(result)
    trials["backtest_id"] = [r.backtest_id for r in trial_results]

    days = bars.index if bars.bar_seconds >= 86_400 else pd.RangeIndex(records["ret"].shape[1], name="day")
    trial_returns = pd.DataFrame(records["ret"].T, index=days, columns=pd.RangeIndex(n_trials, name="trial"))
    dsr = None
    if np.nanstd(trial_returns[best_at].to_numpy()) > 0:
        dsr = deflated_sharpe_ratio_of(trial_returns[best_at], trial_returns, periods_per_year=ppy)
    pbo = None
    if n_trials >= 2:
        n_rows = len(trial_returns)
        n_blocks = 16 if n_rows >= 16 * 8 else max(2, (n_rows // 8) // 2 * 2)
        if n_rows >= n_blocks:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                pbo = probability_of_backtest_overfitting(trial_returns, n_blocks=n_blocks)
    result = SweepResult(sweep_id, strategy.name, {k: list(v) for k, v in grid.items()}, trials, best, dsr, pbo,
                         n_trials, choose, trial_returns, trial_results)
    if store is not None:
        result.save(store)
    return result


def _best(trial: Any, bars: Bars, market: Any, costs: CostModel, sizing: Sizing, seed: int, starting_equity: float,
          key: dict, window: int | None, targets: pd.DataFrame, sweep_id: str, column: np.ndarray) -> BacktestResult:
    """The chosen trial run alone with its records: the same market and draws, so exactly its sweep column."""
    run = _simulate(market, targets.to_numpy(dtype=np.float64), np.array([sizing.fraction]), starting_equity)
    portfolio = _portfolio(market, run, starting_equity)
    equity = _checked_equity(portfolio, run, trial.name)
    if not np.allclose(equity[:, 0], column, rtol=1e-12, atol=1e-6):
        raise ResearchError(f"{trial.name} {trial.params}: run alone it differs from its column of the sweep; "
                            "expected the same market and draws")
    return _result(trial, market, run, portfolio, equity, 0, sizing=sizing, costs=costs, seed=seed,
                   starting_equity=starting_equity, key=key, window=window, targets=targets, bars=bars,
                   sweep_id=sweep_id)


__all__ = ["CHOOSABLE", "SweepResult", "sweep"]
