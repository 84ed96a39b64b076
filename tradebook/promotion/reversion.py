"""Automatic reversion: a live strategy that stops behaving like its backtest goes back to paper.

:class:`ReversionMonitor` watches a live strategy fill by fill and day by day:

- **cost CUSUM** on each fill's standardised cost residual z = (r - mu_r) / sd_r, with
  r = realised - predicted cost (bps) and mu_r, sd_r the backtest fills' own: the upper
  one-sided CUSUM S = max(0, S + z - k) alarms when S > h;
- **realised slippage above ``slippage_ratio`` (2) x the modelled** over the live fills so
  far (once ``min_slippage_fills`` have come in);
- **return CUSUM** on each day's return standardised by the backtest's daily mean and
  standard deviation: S = max(0, S + (mu0 - x) / sd0 - k), alarm when S > h;
- **drawdown beyond its band**: the live equity's drawdown from its peak deeper than the
  gate's maximum-drawdown threshold for its longest review;
- **the gate's checks on a rolling window**: every ``rolling_every`` days, the last
  ``thresholds.min_days`` days judged with the gate's thresholds for that length (a failed
  check is a breach; unprofitable or thin windows are not).

With k = 0.5 and h = 4 (defaults) a CUSUM's in-control run is about 335 observations
between false alarms and a one-sigma shift is caught in about 8 (exact Markov-chain
values; ../shared/REFERENCES.md). The rolling checks look at a fresh window every
``rolling_every`` days, each look with about the gate's first-review false-rejection
rate: over a year of looks they add false alarms, which is why they look rarely (by
default at non-overlapping windows).

:func:`revert` acts on a :class:`Breach`: cancels the strategy's working orders through
the session, sets its stage to reverted then paper, stores an alert naming the check
with its figures, and stores a 'revert' decision with them as evidence. Routing the
strategy's next orders to the paper venue is the live session's job (live adapters are
another issue); this module never sends an order.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson
import pandas as pd

from tradebook.errors import PromotionError
from tradebook.promotion.gate import CHECKS, GateThresholds, calibrate_gate, run_gate
from tradebook.promotion.paths import day_arrays, review_metrics
from tradebook.promotion.stages import Stage, set_stage, stage
from tradebook.research.metrics import DAILY_COLUMNS


class ReversionCheck(StrEnum):
    COST_CUSUM = "cost_cusum"
    SLIPPAGE = "slippage"
    RETURN_CUSUM = "return_cusum"
    DRAWDOWN = "drawdown"
    ROLLING_CHECK = "rolling_check"


@dataclass(frozen=True)
class Breach:
    """A check that fired: its name, its figures and the moment (ns) it fired."""

    check: ReversionCheck
    figures: dict[str, Any]
    ts_ns: int
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass
class _Cusum:
    k: float
    h: float
    value: float = 0.0
    n: int = 0

    def update(self, z: float) -> bool:
        self.value = max(0.0, self.value + z - self.k)
        self.n += 1
        return self.value > self.h


@dataclass
class ReversionMonitor:
    """Sequential and rolling checks of a live strategy against its backtest (see the module docstring).

    ``backtest_daily``: the backtest's daily records (``BacktestResult.daily``);
    ``thresholds``: the gate's (calibrated on them when None). ``min_residual_sd_bps``:
    the least standard deviation a fill's cost residual is standardised by (a hundredth
    of a bp: below it, costs are rounding).
    """

    strategy: str
    backtest_daily: pd.DataFrame
    thresholds: GateThresholds | None = None
    k: float = 0.5
    h: float = 4.0
    slippage_ratio: float = 2.0
    min_slippage_fills: int = 20
    rolling_every: int | None = None
    min_residual_sd_bps: float = 0.01
    _cost: _Cusum = field(init=False)
    _ret: _Cusum = field(init=False)
    _days: deque = field(init=False)

    def __post_init__(self) -> None:
        self.strategy = getattr(self.strategy, "name", self.strategy)
        missing = [c for c in DAILY_COLUMNS if c not in self.backtest_daily.columns]
        if missing:
            raise PromotionError(f"backtest daily records lack {missing}; expected research.metrics.daily_records")
        if self.k < 0 or self.h <= 0:
            raise PromotionError(f"CUSUM k = {self.k}, h = {self.h}: expected k >= 0 and h > 0")
        if self.thresholds is None:
            self.thresholds = calibrate_gate(self.backtest_daily)
        d = self.backtest_daily
        n = float(d["n_fills"].sum())
        if n < 2:
            raise PromotionError("the backtest has fewer than two fills: costs cannot be monitored against it")
        self.residual_mean = float(d["residual_bps_sum"].sum() / n)
        var = float(d["residual_bps_sumsq"].sum() / n - self.residual_mean ** 2) * n / (n - 1)
        # a model whose residuals barely scatter (a one-tick spread) would alarm on price rounding
        self.residual_sd = max(math.sqrt(max(var, 0.0)), self.min_residual_sd_bps)
        self.ret_mean = float(d["ret"].mean())
        self.ret_sd = float(d["ret"].std(ddof=1))
        if not self.ret_sd > 0:
            raise PromotionError("the backtest's daily returns do not vary: returns cannot be monitored against it")
        self.drawdown_limit = self.thresholds.thresholds[self.thresholds.max_days]["max_drawdown"][1]
        if self.rolling_every is None:
            self.rolling_every = self.thresholds.min_days
        self._cost = _Cusum(self.k, self.h)
        self._ret = _Cusum(self.k, self.h)
        self._days = deque(maxlen=self.thresholds.min_days)
        self.fills_seen = 0
        self.realised_sum = 0.0
        self.predicted_sum = 0.0
        self.days_seen = 0
        self.growth = 1.0
        self.peak = 1.0

    # -- fills -----------------------------------------------------------------------------------
    def on_fill(self, cost_bps: float, predicted_cost_bps: float, ts_ns: int | None = None) -> Breach | None:
        """One live fill: what it cost against the mid and what the fill model predicted (bps)."""
        if not (math.isfinite(cost_bps) and math.isfinite(predicted_cost_bps)):
            raise PromotionError(f"fill cost {cost_bps} / predicted {predicted_cost_bps}: expected finite bps")
        now = time.time_ns() if ts_ns is None else int(ts_ns)
        self.fills_seen += 1
        self.realised_sum += cost_bps
        self.predicted_sum += predicted_cost_bps
        z = (cost_bps - predicted_cost_bps - self.residual_mean) / self.residual_sd
        if self._cost.update(z):
            figures = {"cusum": self._cost.value, "h": self.h, "k": self.k, "fills": self._cost.n,
                       "mean_residual_bps": (self.realised_sum - self.predicted_sum) / self.fills_seen,
                       "backtest_residual_bps": self.residual_mean, "backtest_residual_sd_bps": self.residual_sd}
            return Breach(ReversionCheck.COST_CUSUM, figures, now,
                          f"{self.strategy}: cost CUSUM {self._cost.value:.2f} > h = {self.h:g} after "
                          f"{self._cost.n} fills (mean residual {figures['mean_residual_bps']:.2f} bps against the "
                          f"backtest's {self.residual_mean:.2f} +- {self.residual_sd:.2f} bps per fill)")
        if self.fills_seen >= self.min_slippage_fills and self.predicted_sum > 0:
            realised = self.realised_sum / self.fills_seen
            modelled = self.predicted_sum / self.fills_seen
            if realised > self.slippage_ratio * modelled:
                figures = {"realised_bps": realised, "modelled_bps": modelled, "ratio": realised / modelled,
                           "limit": self.slippage_ratio, "fills": self.fills_seen}
                return Breach(ReversionCheck.SLIPPAGE, figures, now,
                              f"{self.strategy}: realised slippage {realised:.2f} bps is {realised / modelled:.1f}x "
                              f"the modelled {modelled:.2f} bps over {self.fills_seen} fills "
                              f"(limit {self.slippage_ratio:g}x)")
        return None

    # -- days ------------------------------------------------------------------------------------
    def on_day(self, day: pd.Series | dict[str, float], ts_ns: int | None = None) -> Breach | None:
        """One live trading day's record (a row of ``daily_records``: ret, n_fills, ...)."""
        row = {c: float(day[c]) for c in DAILY_COLUMNS}
        now = time.time_ns() if ts_ns is None else int(ts_ns)
        self.days_seen += 1
        self.growth *= 1.0 + row["ret"]
        self.peak = max(self.peak, self.growth)
        self._days.append(row)
        drawdown = 1.0 - self.growth / self.peak
        if self._ret.update((self.ret_mean - row["ret"]) / self.ret_sd):
            figures = {"cusum": self._ret.value, "h": self.h, "k": self.k, "days": self._ret.n,
                       "backtest_mean": self.ret_mean, "backtest_sd": self.ret_sd, "last_return": row["ret"]}
            return Breach(ReversionCheck.RETURN_CUSUM, figures, now,
                          f"{self.strategy}: return CUSUM {self._ret.value:.2f} > h = {self.h:g} after "
                          f"{self._ret.n} days (backtest daily mean {self.ret_mean:.4%}, sd {self.ret_sd:.4%})")
        if self.drawdown_limit is not None and drawdown > self.drawdown_limit:
            figures = {"drawdown": drawdown, "limit": self.drawdown_limit, "days": self.days_seen}
            return Breach(ReversionCheck.DRAWDOWN, figures, now,
                          f"{self.strategy}: drawdown {drawdown:.2%} is beyond its band "
                          f"({self.drawdown_limit:.2%}, the gate's {self.thresholds.max_days}-day threshold)")
        length = self.thresholds.min_days
        if len(self._days) == length and self.days_seen % self.rolling_every == 0:
            window = pd.DataFrame(list(self._days))
            arrays = {c: a[None, :] for c, a in day_arrays(window).items()}
            metrics = review_metrics(arrays, (length,), periods_per_year=self.thresholds.periods_per_year)
            out = run_gate(metrics, (length,), self.thresholds.thresholds, min_trades=self.thresholds.min_trades,
                           min_fills=self.thresholds.min_fills,
                           residual_center_bps=self.thresholds.residual_center_bps, is_last=[False],
                           residual_sd_bps=self.thresholds.residual_sd_bps)
            failed = [c for c, f in zip(CHECKS, out.failed[0]) if f]
            if failed:
                values = {c: float(metrics[0][c][0]) for c in failed}
                figures = {"failed": failed, "values": values, "window_days": length,
                           "thresholds": {c: list(self.thresholds.thresholds[length][c]) for c in failed}}
                return Breach(ReversionCheck.ROLLING_CHECK, figures, now,
                              f"{self.strategy}: the last {length} days fail the gate's "
                              + ", ".join(f"{c} ({values[c]:.4g})" for c in failed))
        return None


@dataclass(frozen=True)
class Reversion:
    """What :func:`revert` did: the orders asked to cancel, the stage changes, the alert."""

    strategy: str
    breach: Breach
    cancelled: tuple[str, ...]
    stages: tuple[str, ...]
    alert: str


def revert(session: Any, store: Any, strategy: Any, breach: Breach, *, backtest_id: str | None = None,
           ts_ns: int | None = None) -> Reversion:
    """Take ``strategy`` off live after ``breach``: cancel its working orders, stage it reverted then paper, alert.

    ``session``: the running session (its ``cancel_orders(strategy_id=..., reason=...)`` is
    called), or None when no session holds orders of the strategy. The alert (kind
    'reversion') and a 'revert' decision with the breach's figures are stored.
    """
    name = getattr(strategy, "name", strategy)
    if not isinstance(breach, Breach):
        raise PromotionError(f"revert needs the Breach that fired; got {type(breach).__name__}")
    current = stage(store, name)
    if current is not Stage.LIVE:
        raise PromotionError(f"{name!r} is {current or 'not staged'}, not live: there is nothing to revert")
    now = int(ts_ns) if ts_ns is not None else int(getattr(session, "now_ns", 0) or 0) or time.time_ns()
    reason = f"reverted by the {breach.check} check: {breach.message}"
    cancelled: list[str] = []
    if session is not None:
        orders = session.cancel_orders(strategy_id=name, reason=reason)
        cancelled = [o.client_order_id for o in orders]
    if backtest_id is None:
        rows = store.query("SELECT backtest_id FROM strategy_stages WHERE strategy = ? AND backtest_id IS NOT NULL "
                           "ORDER BY ts_ns DESC LIMIT 1", [name])
        backtest_id = None if rows.empty else str(rows["backtest_id"].iloc[0])
    first = set_stage(store, name, Stage.REVERTED, reason=reason, backtest_id=backtest_id, ts_ns=now)
    second = set_stage(store, name, Stage.PAPER, reason=f"continues on paper after the {breach.check} breach",
                       backtest_id=backtest_id, ts_ns=first.ts_ns + 1)
    figures = orjson.dumps(breach.figures, option=orjson.OPT_SERIALIZE_NUMPY, default=str).decode()
    alert = f"{name} reverted to paper: {breach.check} fired ({breach.message}); figures {figures}; " \
            f"{len(cancelled)} working order(s) cancelled"
    evidence = orjson.dumps({"check": str(breach.check), "figures": breach.figures, "cancelled": cancelled},
                            option=orjson.OPT_SERIALIZE_NUMPY, default=str).decode()
    with store.transaction() as con:
        con.execute("INSERT INTO alerts (ts_ns, kind, message, source) VALUES (?, 'reversion', ?, 'promotion')",
                    [first.ts_ns, alert])
        con.execute(
            "INSERT INTO promotion_decisions (decision_id, strategy, ts_ns, backtest_id, period_start_ns, "
            "period_end_ns, decision, codes, summary, evidence, override, override_reason) "
            "VALUES (?, ?, ?, ?, ?, ?, 'revert', ?, ?, ?, FALSE, NULL)",
            [f"revert-{name}-{first.ts_ns}", name, first.ts_ns, backtest_id or "", breach.ts_ns, breach.ts_ns,
             orjson.dumps([str(breach.check)]).decode(), reason, evidence])
    return Reversion(name, breach, tuple(cancelled), (first.stage.value, second.stage.value), alert)


def monitor_frame(fills: pd.DataFrame, monitor: ReversionMonitor) -> tuple[int, Breach | None]:
    """Feed ``fills`` (cost_bps, predicted_cost_bps, ts_ns) to ``monitor`` in order; (fills fed, first breach)."""
    for i, row in enumerate(fills.itertuples(), start=1):
        breach = monitor.on_fill(float(row.cost_bps), float(row.predicted_cost_bps), int(row.ts_ns))
        if breach is not None:
            return i, breach
    return len(fills), None


__all__ = ["Breach", "Reversion", "ReversionCheck", "ReversionMonitor", "monitor_frame", "revert"]
