"""Backtests: a strategy's targets traded at the next bar's open, priced by the calibrated fill model, on vectorbt.

The rules (the same in :class:`tradebook.research.runner.StrategyRunner`, so a paper session
with zero costs makes the same trades):

- **Timing.** The target computed from bars up to and including bar t (its close known) acts
  at the OPEN of bar t+1. The last bar's target never trades (there is no next open). An
  instrument without an open at t+1 (no bar that day) trades at its next open, with the newest
  target then.
- **Sizing.** ``quantity = target x fraction x equity_at_open / open``, rounded toward zero to
  the instrument's lot, zero below its minimum quantity. The order is the difference with the
  position held when the target changed since the last bar acted on; an unchanged target
  re-sizes a held position only when it drifted more than ``rebalance_band`` (25%) from the
  wanted quantity (:func:`tradebook.research.rebalance.should_trade`, the runner's rule too).
  ``equity_at_open`` marks each
  position at this bar's open (its last close when it has none), before any of this bar's
  orders. ``fraction`` is :func:`~tradebook.execution.sizing.half_kelly_fraction` of
  :class:`Sizing`; with ``sizing=None`` the backtest runs once at the cap to measure the
  strategy's own win rate and average win and loss over its round trips, then again at the
  Half-Kelly fraction of those (no closed round trip at the cap: the cap is kept).
- **Costs.** Each order fills at ``open x (1 +/- cost_bps / 1e4)``: ``cost_bps`` is drawn from the
  model's distribution (improved as the paper venue improves, else the cost curve's fitted
  scatter: :meth:`CostModel.draw_bps`) at the order's size over the touch, the open's
  time of day and the volatility known at the instrument's previous close (:func:`order_vol_bps`);
  ``predicted_cost_bps`` is the model's median for that order. Fees: the venue's taker
  schedule on the fill's notional. The open is taken as the mid.

The orders are sized in a compiled loop (the sizing depends on equity, which depends on
every earlier fill's cost); vectorbt's ``Portfolio.from_orders`` then replays them with their
prices and fees, gives the equity curve (checked against the loop's to the cent) and the
round trips (vectorbt's positions: flat to flat, reversals split; a trade's ``quantity`` is
what was closed over the round trip, its entry and exit prices size-weighted averages, as a
held position is resized when equity moves). Equity is stamped at each
bar's START (tz-aware UTC) and is the value at that bar's close, as
:func:`tradebook.research.metrics.daily_records` expects.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np
import pandas as pd

from tradebook.errors import ResearchError
from tradebook.research.bars import Bars
from tradebook.research.costs import CostModel, minute_vol_bps
from tradebook.research.rebalance import DEFAULT_BAND, should_trade

DEFAULT_CAP = 0.05
DEFAULT_EQUITY = 100_000.0
VOL_LOOKBACK = 20  # bars of returns behind the volatility a cost is priced at
_NS = 1_000_000_000
FILL_COLUMNS = ("ts_ns", "instrument_id", "side", "quantity", "price", "mid", "fee", "cost_bps", "predicted_cost_bps")
TRADE_COLUMNS = ("instrument_id", "direction", "quantity", "entry_ts_ns", "entry_price", "exit_ts_ns", "exit_price",
                 "pnl", "return_pct", "fees")


# -- sizing ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sizing:
    """Half-Kelly inputs: the win rate and average win and loss (returns per round trip, magnitudes).

    ``fraction`` = ``half_kelly_fraction(win_rate, avg_win, avg_loss, cap)``; NaN statistics (no
    closed round trip to measure) keep the cap. ``n_trades``: the round trips measured.
    """

    win_rate: float
    avg_win: float
    avg_loss: float
    cap: float = DEFAULT_CAP
    n_trades: int = 0

    def __post_init__(self) -> None:
        number = (int, float, np.integer, np.floating)
        if isinstance(self.cap, bool) or not (isinstance(self.cap, number) and 0 < self.cap <= 1):
            raise ResearchError(f"Sizing cap {self.cap!r}: expected a fraction of equity in (0, 1]")
        for name in ("win_rate", "avg_win", "avg_loss"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, number):
                raise ResearchError(f"Sizing {name} {value!r}: expected a number (NaN: not measured)")
        if self.measured and not (0 <= self.win_rate <= 1 and self.avg_win >= 0 and self.avg_loss >= 0):
            raise ResearchError(f"Sizing(win_rate={self.win_rate!r}, avg_win={self.avg_win!r}, avg_loss="
                                f"{self.avg_loss!r}): expected a win rate in [0, 1] and average win and loss as "
                                "magnitudes >= 0 (returns per round trip)")

    @property
    def measured(self) -> bool:
        return all(math.isfinite(v) for v in (self.win_rate, self.avg_win, self.avg_loss))

    @property
    def fraction(self) -> float:
        """The fraction of equity a target of 1 stakes (the cap when nothing was measured)."""
        from tradebook.execution.sizing import half_kelly_fraction

        if not self.measured:
            return float(self.cap)
        return half_kelly_fraction(self.win_rate, self.avg_win, self.avg_loss, self.cap)

    def to_dict(self) -> dict[str, Any]:
        return {"win_rate": _json_float(self.win_rate), "avg_win": _json_float(self.avg_win),
                "avg_loss": _json_float(self.avg_loss), "cap": self.cap, "n_trades": self.n_trades,
                "fraction": self.fraction}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Sizing:
        def num(v: Any) -> float:
            return math.nan if v is None else float(v)

        return cls(num(raw["win_rate"]), num(raw["avg_win"]), num(raw["avg_loss"]), float(raw.get("cap", DEFAULT_CAP)),
                   int(raw.get("n_trades", 0)))


def _json_float(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


# -- the result ----------------------------------------------------------------------------------
@dataclass(eq=False)
class BacktestResult:
    """A backtest: its inputs (strategy, params, data range, costs, seed) and what it did.

    ``strategy`` is the Strategy backtested (from the store: rebuilt from its class and params,
    or a StoredStrategy with its name, instruments and params); ``strategy_name`` its name.
    ``daily``: :func:`~tradebook.research.metrics.daily_records` (``attrs['calendar']`` set).
    """

    strategy: Any
    params: dict[str, Any]
    instruments: tuple[str, ...]
    bar_seconds: int
    bars_range: tuple[int, int]  # first bar start, last bar end (UTC ns)
    trades: pd.DataFrame
    fills: pd.DataFrame
    equity: pd.Series
    daily: pd.DataFrame
    metrics: dict[str, float]
    sizing: Sizing
    costs: dict[str, Any]  # CostModel.describe()
    fees: dict[str, Any]
    seed: int
    starting_equity: float
    window: int | None = None
    calendar: str = "XNYS"
    key: dict[str, Any] = field(default_factory=dict, repr=False)  # what the id hashes
    sweep_id: str | None = None
    targets: pd.DataFrame | None = field(default=None, repr=False)
    stored_id: str | None = None  # the id it was stored under, when that is not its key's hash

    @property
    def strategy_name(self) -> str:
        return str(self.strategy.name)

    @property
    def backtest_id(self) -> str:
        """A hash of what determines the result: strategy, params, data, calibrations, seed (and sweep)."""
        if self.stored_id is not None:
            return self.stored_id
        return _content_id("bt", {**self.key, "sweep_id": self.sweep_id})

    def save(self, store: Any) -> str:
        """Write this backtest (row, trades, fills, equity) unless already stored; returns its id."""
        from tradebook.research.storage import save_backtest

        return save_backtest(store, self)

    def __repr__(self) -> str:
        start, end = (pd.Timestamp(v, unit="ns", tz="UTC").date() for v in self.bars_range)
        m = self.metrics
        return (f"<BacktestResult {self.strategy_name} {self.params} {start}..{end}: "
                f"return {m.get('total_return', 0):.2%}, "
                f"Sharpe {m.get('sharpe', math.nan):.2f}, {int(m.get('n_trades', 0))} trades, "
                f"{int(m.get('n_fills', 0))} fills, fraction {self.sizing.fraction:.4f}>")


def _content_id(prefix: str, key: dict[str, Any]) -> str:
    text = json.dumps(key, sort_keys=True, default=str)
    return f"{prefix}-{hashlib.blake2b(text.encode(), digest_size=10).hexdigest()}"


# -- the compiled order loop --------------------------------------------------------------------
@numba.njit(cache=True)
def _simulate_nb(targets, open_, close, inst_of_col, group_of_col, fraction, start_equity, lot, min_qty,
                 cost_a, cost_b, improve, draws, share, edges, ratios, touch_notional, taker_bps, per_unit,
                 z, scatter_low, scatter_high, band):
    """Trade ``targets`` (bars x columns; a group of columns shares one account) at the next open.

    Prices, cost terms and draws are per instrument (``inst_of_col`` maps a column to its
    instrument): every trial of a sweep sees the same market and the same draws, so a trial
    run alone reproduces its column of the sweep exactly.

    Returns per cell the filled quantity (signed), price, fee, realised and predicted cost,
    the equity of each group at each close, per column the round trips' statistics, and per
    bar and group the round trips closed and won (flat to flat; a reversal closes one).
    """
    n_rows, n_cols = targets.shape
    n_groups = fraction.shape[0]
    qty = np.zeros((n_rows, n_cols))
    price = np.full((n_rows, n_cols), np.nan)
    fee = np.zeros((n_rows, n_cols))
    cost = np.zeros((n_rows, n_cols))
    pred = np.zeros((n_rows, n_cols))
    equity = np.empty((n_rows, n_groups))
    cash = np.full(n_groups, start_equity)
    pos = np.zeros(n_cols)
    last_target = np.zeros(n_cols)  # the target of the last bar acted on (rebalance.should_trade)
    last = np.full(n_cols, np.nan)
    # round trips per column: cash flow and entry notional of the open trip; closed counts and sums
    trip_cf = np.zeros(n_cols)
    trip_basis = np.zeros(n_cols)
    stats = np.zeros((n_cols, 5))  # closed, wins, sum of winning returns, losses, sum of |losing returns|
    closed_at = np.zeros((n_rows, n_groups))  # round trips closed at each bar, per group
    wins_at = np.zeros((n_rows, n_groups))
    eq_open = np.empty(n_groups)
    for t in range(n_rows):
        if t > 0:
            for g in range(n_groups):
                eq_open[g] = cash[g]
            for c in range(n_cols):
                if pos[c] != 0.0:
                    mark = open_[t, inst_of_col[c]]
                    if not (mark > 0.0):
                        mark = last[c]
                    eq_open[group_of_col[c]] += pos[c] * mark
            for c in range(n_cols):
                i = inst_of_col[c]
                o = open_[t, i]
                if not (o > 0.0) or not np.isfinite(o):
                    continue
                g = group_of_col[c]
                target = targets[t - 1, c]
                want = 0.0
                if target != 0.0 and np.isfinite(eq_open[g]):
                    raw = target * fraction[g] * eq_open[g] / o
                    lots = math.floor(abs(raw) / lot[i] * (1.0 + 1e-12))
                    magnitude = lots * lot[i]
                    if magnitude >= min_qty[i] and magnitude > 0.0:
                        want = magnitude if raw > 0 else -magnitude
                acted_on = last_target[c]
                last_target[c] = target
                if not should_trade(acted_on, target, pos[c], want, band):
                    continue
                d = want - pos[c]
                if abs(d) <= lot[i] * 1e-9:
                    continue
                x = abs(d) * o / touch_notional[i] * (1.0 + 1e-9)
                k = np.searchsorted(edges[i], x, side="right") - 1
                n_buckets = ratios.shape[1]
                if k < 0:
                    k = 0
                if k > n_buckets - 1:
                    k = n_buckets - 1
                predicted = cost_a[t, i] + cost_b[t, i] * ratios[i, k]
                # CostModel.draw_bps: improved as the paper engine improves, else the curve's fitted scatter
                realised = predicted
                if share[i] > 0.0:
                    if draws[t, i] < share[i]:
                        realised = max(predicted - improve[t, i], 0.0)
                else:
                    sd = scatter_low[i, k] if z[t, i] < 0.0 else scatter_high[i, k]
                    realised = predicted + cost_b[t, i] * z[t, i] * sd
                side = 1.0 if d > 0 else -1.0
                px = o * (1.0 + side * realised / 1e4)
                f = abs(d) * px * taker_bps[i] / 1e4 + abs(d) * per_unit[i]
                cash[g] -= d * px + f
                qty[t, c] = d
                price[t, c] = px
                fee[t, c] = f
                cost[t, c] = realised
                pred[t, c] = predicted
                # round trips: flat to flat; a reversal closes one and opens the next
                p0 = pos[c]
                if p0 == 0.0 or (p0 > 0) == (d > 0):
                    trip_cf[c] += -d * px - f
                    trip_basis[c] += abs(d) * px
                else:
                    closing = d if abs(d) <= abs(p0) else -p0
                    f1 = f * abs(closing) / abs(d)
                    trip_cf[c] += -closing * px - f1
                    if abs(p0 + closing) <= lot[i] * 1e-9:
                        pnl = trip_cf[c]
                        ret = pnl / trip_basis[c] if trip_basis[c] > 0 else 0.0
                        stats[c, 0] += 1
                        closed_at[t, g] += 1
                        if pnl > 0:
                            stats[c, 1] += 1
                            stats[c, 2] += ret
                            wins_at[t, g] += 1
                        else:
                            stats[c, 3] += 1
                            stats[c, 4] += -ret
                        trip_cf[c] = 0.0
                        trip_basis[c] = 0.0
                        rest = d - closing
                        if rest != 0.0:
                            trip_cf[c] = -rest * px - (f - f1)
                            trip_basis[c] = abs(rest) * px
                pos[c] = want
        for c in range(n_cols):
            cl = close[t, inst_of_col[c]]
            if cl > 0.0 and np.isfinite(cl):
                last[c] = cl
        for g in range(n_groups):
            equity[t, g] = cash[g]
        for c in range(n_cols):
            if pos[c] != 0.0:
                equity[t, group_of_col[c]] += pos[c] * last[c]
    return qty, price, fee, cost, pred, equity, stats, closed_at, wins_at


# -- inputs -----------------------------------------------------------------------------------------
@dataclass
class _Market:
    """Per-instrument arrays of one backtest's bars: prices, fill times, cost terms, draws, grid."""

    instruments: tuple[str, ...]
    index: pd.DatetimeIndex
    open: np.ndarray  # bars x instruments
    close: np.ndarray
    fill_ts: np.ndarray  # int64: when an order at each bar's open fills
    vol: np.ndarray  # volatility known at the previous close, in the fill model's unit
    cost_a: np.ndarray
    cost_b: np.ndarray
    improve: np.ndarray
    draws: np.ndarray
    share: np.ndarray
    edges: np.ndarray
    ratios: np.ndarray
    z: np.ndarray  # standard normal per bar and instrument: the cost's draw from the curve's fitted scatter
    scatter_low: np.ndarray  # instruments x buckets, see CostModel.draw_bps
    scatter_high: np.ndarray
    touch_notional: np.ndarray
    taker_bps: np.ndarray
    per_unit: np.ndarray
    lot: np.ndarray
    min_qty: np.ndarray
    calendar: str


def open_times_ns(index: pd.DatetimeIndex, instrument: Any, bar_seconds: int) -> np.ndarray:
    """When an order at each bar's open fills: the session open of a daily bar's local date, else the bar start."""
    starts = index.asi8
    hours = instrument.trading_hours
    if bar_seconds < 86_400 or hours.always_open:
        return starts.astype(np.int64)
    local = index.tz_convert(hours.timezone).normalize().tz_localize(None)
    opening = pd.Timedelta(hours=hours.open.hour, minutes=hours.open.minute, seconds=hours.open.second)
    return (local + opening).tz_localize(hours.timezone).tz_convert("UTC").asi8.astype(np.int64)


def calendar_of(instruments: tuple[str, ...]) -> str:
    """The exchange calendar the daily records use: the first instrument's ('24/7' when it always trades)."""
    from tradebook.model.instruments import get_instrument

    hours = get_instrument(instruments[0]).trading_hours
    return "24/7" if hours.always_open else (hours.calendar or "XNYS")


def order_vol_bps(bars: Bars, lookback: int = VOL_LOOKBACK) -> pd.DataFrame:
    """The volatility each bar's open is priced with: :func:`minute_vol_bps` of each instrument's own bars
    (the rows where it has a close), known at its previous bar's close; NaN where it has no bar.

    Per instrument on its own rows, so a day another instrument traded and it did not is no flat return,
    and the paper side (tradebook.promotion.paper_metrics, from one instrument's bars) gets the same value.
    """
    out = {}
    for instrument in bars.instruments:
        own = bars.close[[instrument]].dropna()
        vol = minute_vol_bps(own, bar_seconds=bars.bar_seconds, lookback=lookback)[instrument].shift(1)
        out[instrument] = vol.reindex(bars.index)
    return pd.DataFrame(out, index=bars.index)


def _market(bars: Bars, costs: CostModel, seed: int, adjusted: bool = True) -> _Market:
    from tradebook.model.instruments import get_instrument

    instruments = tuple(bars.instruments)
    costs.require(instruments)
    n_rows, n = len(bars), len(instruments)
    open_ = bars.open.to_numpy(dtype=np.float64)
    close = bars.close.to_numpy(dtype=np.float64)
    vol_values = order_vol_bps(bars).to_numpy(dtype=np.float64)
    fill_ts = np.empty((n_rows, n), dtype=np.int64)
    cost_a, cost_b, improve = (np.zeros((n_rows, n)) for _ in range(3))
    terms_list = []
    specs = [get_instrument(i) for i in instruments]
    for j, (iid, spec) in enumerate(zip(instruments, specs)):
        fill_ts[:, j] = open_times_ns(bars.index, spec, bars.bar_seconds)
        # the spread is at least one tick at the price that traded (split-adjusted bars undone)
        traded = costs.traded_price(iid, bars.start_ns, open_[:, j]) if adjusted else open_[:, j]  # None: no floor
        terms = costs.cost_terms(iid, fill_ts[:, j], vol_values[:, j], price=traded)
        cost_a[:, j], cost_b[:, j], improve[:, j] = terms.a, terms.b, terms.improve_bps
        terms_list.append(terms)
    width = max(len(t.edges) for t in terms_list)
    edges = np.full((n, width), np.inf)
    ratios, scatter_low, scatter_high = (np.zeros((n, width - 1)) for _ in range(3))
    for j, terms in enumerate(terms_list):
        edges[j, :len(terms.edges)] = terms.edges
        for table, values in ((ratios, terms.ratios), (scatter_low, terms.scatter_low),
                              (scatter_high, terms.scatter_high)):
            table[j, :len(values)] = values
            table[j, len(values):] = values[-1]
    fee_rows = [costs.fee_schedule(i) for i in instruments]
    rng = np.random.default_rng(seed)
    draws = rng.random((n_rows, n))
    z = rng.standard_normal((n_rows, n))
    return _Market(
        instruments, bars.index, open_, close, fill_ts, vol_values, cost_a, cost_b, improve, draws,
        np.array([t.improve_share for t in terms_list]), edges, ratios, z, scatter_low, scatter_high,
        np.array([t.touch_notional for t in terms_list]), np.array([f.taker_bps for f in fee_rows], dtype=np.float64),
        np.array([f.per_unit for f in fee_rows], dtype=np.float64),
        np.array([float(s.lot_size) for s in specs]), np.array([float(s.min_quantity) for s in specs]),
        calendar_of(instruments))


@dataclass
class _Run:
    """The loop's output for several groups (trials) of columns."""

    qty: np.ndarray
    price: np.ndarray
    fee: np.ndarray
    cost: np.ndarray
    pred: np.ndarray
    equity: np.ndarray  # bars x groups
    stats: np.ndarray  # columns x 5
    closed_at: np.ndarray  # bars x groups: round trips closed at the bar
    wins_at: np.ndarray  # bars x groups: of which with pnl > 0


def _simulate(market: _Market, targets: np.ndarray, fractions: np.ndarray, starting_equity: float,
              band: float = DEFAULT_BAND) -> _Run:
    """Run the loop for ``targets`` (bars x (groups x instruments)) with one fraction per group."""
    n = len(market.instruments)
    n_cols = targets.shape[1]
    inst_of_col = np.tile(np.arange(n), n_cols // n)
    group_of_col = np.repeat(np.arange(n_cols // n), n)
    out = _simulate_nb(np.ascontiguousarray(targets, dtype=np.float64), market.open, market.close, inst_of_col,
                       group_of_col, np.asarray(fractions, dtype=np.float64), float(starting_equity), market.lot,
                       market.min_qty, market.cost_a, market.cost_b, market.improve,
                       market.draws, market.share, market.edges, market.ratios, market.touch_notional,
                       market.taker_bps, market.per_unit, market.z, market.scatter_low, market.scatter_high,
                       float(band))
    return _Run(*out)


def _sizing_of(stats: np.ndarray, n_instruments: int, cap: float) -> list[Sizing]:
    """One Sizing per group from the loop's round-trip statistics (summed over the group's columns)."""
    grouped = stats.reshape(-1, n_instruments, 5).sum(axis=1)
    out = []
    for closed, wins, win_sum, losses, loss_sum in grouped:
        if closed == 0:
            out.append(Sizing(math.nan, math.nan, math.nan, cap, 0))
            continue
        avg_win = win_sum / wins if wins else 0.0
        avg_loss = loss_sum / losses if losses else 0.0
        out.append(Sizing(float(wins / closed), float(avg_win), float(avg_loss), cap, int(closed)))
    return out


# -- vectorbt ---------------------------------------------------------------------------------
def _portfolio(market: _Market, run: _Run, starting_equity: float) -> Any:
    """vectorbt replays the loop's orders (prices, fixed fees) per group with shared cash."""
    import vectorbt as vbt

    n = len(market.instruments)
    n_groups = run.equity.shape[1]
    mark = pd.DataFrame(market.close).ffill().bfill().to_numpy()
    mark = np.where(np.isfinite(mark), mark, 1.0)  # an instrument with no price at all holds nothing
    close = np.tile(mark, n_groups)
    size = np.where(run.qty != 0, run.qty, np.nan)
    price = np.where(run.qty != 0, run.price, close)
    columns = pd.MultiIndex.from_arrays([np.repeat(np.arange(n_groups), n), np.tile(np.array(market.instruments),
                                                                                   n_groups)],
                                        names=["trial", "instrument"])
    frame = pd.DataFrame(close, index=market.index, columns=columns)
    return vbt.Portfolio.from_orders(
        frame, size=size, size_type="amount", direction="both", price=price, fees=0.0, fixed_fees=run.fee,
        slippage=0.0, init_cash=float(starting_equity), cash_sharing=True, group_by="trial", call_seq="auto",
        allow_partial=False, raise_reject=True, freq=pd.Timedelta(days=1))


def _checked_equity(portfolio: Any, run: _Run, strategy_name: str) -> np.ndarray:
    value = portfolio.value().to_numpy(dtype=np.float64).reshape(run.equity.shape[0], -1)  # one group: a Series
    if value.shape != run.equity.shape or not np.allclose(value, run.equity, rtol=1e-9, atol=1e-6):
        worst = np.nanargmax(np.abs(value - run.equity)) if value.shape == run.equity.shape else 0
        raise ResearchError(f"{strategy_name}: vectorbt's equity differs from the order loop's (at flat index "
                            f"{worst}); a leveraged or short account vectorbt refuses? expected the same orders")
    return value


def _trades(portfolio: Any, market: _Market, group: int) -> pd.DataFrame:
    """vectorbt's positions (flat to flat) of one group, in the contract's columns."""
    records = portfolio.positions.records
    n = len(market.instruments)
    mine = records[(records["col"] // n) == group]
    inst = (mine["col"] % n).to_numpy()
    entry_idx, exit_idx = mine["entry_idx"].to_numpy(), mine["exit_idx"].to_numpy()
    closed = mine["status"].to_numpy() == 1
    entry_ts = market.fill_ts[entry_idx, inst]
    exit_ts = np.where(closed, market.fill_ts[exit_idx, inst], 0)
    frame = pd.DataFrame({
        "instrument_id": np.array(market.instruments, dtype=object)[inst],
        "direction": np.where(mine["direction"].to_numpy() == 0, "long", "short"),
        "quantity": mine["size"].to_numpy(dtype=np.float64),
        "entry_ts_ns": entry_ts.astype(np.int64),
        "entry_price": mine["entry_price"].to_numpy(dtype=np.float64),
        "exit_ts_ns": pd.array(np.where(closed, exit_ts, 0), dtype="Int64"),
        "exit_price": np.where(closed, mine["exit_price"].to_numpy(dtype=np.float64), np.nan),
        "pnl": np.where(closed, mine["pnl"].to_numpy(dtype=np.float64), np.nan),
        "return_pct": np.where(closed, mine["return"].to_numpy(dtype=np.float64) * 100, np.nan),
        "fees": (mine["entry_fees"] + mine["exit_fees"]).to_numpy(dtype=np.float64),
    })
    frame.loc[~closed, "exit_ts_ns"] = pd.NA
    return frame.sort_values(["entry_ts_ns", "instrument_id"], kind="stable").reset_index(drop=True)


def _fills(market: _Market, run: _Run, group: int) -> pd.DataFrame:
    n = len(market.instruments)
    cols = slice(group * n, (group + 1) * n)
    qty = run.qty[:, cols]
    rows, inst = np.nonzero(qty)
    q = qty[rows, inst]
    frame = pd.DataFrame({
        "ts_ns": market.fill_ts[rows, inst].astype(np.int64),
        "instrument_id": np.array(market.instruments, dtype=object)[inst],
        "side": np.where(q > 0, "buy", "sell"),
        "quantity": np.abs(q),
        "price": run.price[:, cols][rows, inst],
        "mid": market.open[rows, inst],
        "fee": run.fee[:, cols][rows, inst],
        "cost_bps": run.cost[:, cols][rows, inst],
        "predicted_cost_bps": run.pred[:, cols][rows, inst],
    })
    return frame.sort_values(["ts_ns", "instrument_id"], kind="stable").reset_index(drop=True)[list(FILL_COLUMNS)]


# -- metrics ----------------------------------------------------------------------------------
def daily_of(equity: pd.Series, fills: pd.DataFrame, trades: pd.DataFrame, calendar: str,
             starting_equity: float) -> pd.DataFrame:
    """The daily records of a backtest (calendar kept in ``attrs``)."""
    from tradebook.research.metrics import daily_records

    daily = daily_records(equity, fills, trades, calendar=calendar, starting_equity=starting_equity)
    daily.attrs["calendar"] = calendar
    return daily


def backtest_metrics(daily: pd.DataFrame, *, calendar: str, starting_equity: float) -> dict[str, float]:
    """The backtest's metrics from its daily records (the gate's window metrics over the whole history).

    total_return (compounded), cagr (per year of ``periods_per_year`` days), sharpe and sortino
    (annualised, window_metrics' definitions), max_drawdown, win_rate, n_trades, n_fills,
    turnover (traded notional in multiples of equity per year), avg_cost_bps and
    avg_cost_residual_bps (per fill), sharpe_per_period, and psr (the probabilistic Sharpe ratio
    of the per-period Sharpe against 0, with the daily returns' skewness and RAW kurtosis).
    """
    from tradebook.research.metrics import DAILY_COLUMNS, periods_per_year

    arrays = {c: daily[c].to_numpy(dtype=np.float64)[None, :] for c in DAILY_COLUMNS}
    values = metrics_array(arrays, periods_per_year=periods_per_year(calendar), starting_equity=starting_equity)
    return {k: float(v[0]) for k, v in values.items()}


def metrics_array(daily: dict[str, np.ndarray], *, periods_per_year: int,
                  starting_equity: float) -> dict[str, np.ndarray]:
    """:func:`backtest_metrics` of many histories at once: each daily column a (histories x days) array."""
    from tradebook.research.metrics import window_metrics_array
    from tradebook.research.stats import moments, probabilistic_sharpe_ratio

    m = window_metrics_array(daily, periods_per_year=periods_per_year)
    ret = np.asarray(daily["ret"], dtype=np.float64)
    n_days = ret.shape[1]
    years = max(n_days / periods_per_year, 1e-9)
    total = m["return"]
    with np.errstate(invalid="ignore", divide="ignore"):
        cagr = np.where(total > -1, np.power(np.maximum(1 + total, 0.0), 1 / years) - 1, -1.0)
    sr = np.zeros(len(ret))
    psr = np.full(len(ret), np.nan)
    for row in range(len(ret)):
        per_period, skew, kurt, n = moments(ret[row])
        if math.isfinite(per_period):
            sr[row] = per_period
            if n > 3:
                psr[row] = probabilistic_sharpe_ratio(per_period, 0.0, n, skew, kurt)
    return {
        "total_return": total, "cagr": cagr, "sharpe": m["sharpe"], "sortino": m["sortino"],
        "max_drawdown": m["max_drawdown"], "win_rate": m["win_rate"], "n_trades": m["n_trades"],
        "n_fills": m["n_fills"], "turnover": m["turnover"] / years, "avg_cost_bps": m["cost_bps"],
        "avg_cost_residual_bps": m["cost_residual_bps"], "sharpe_per_period": sr, "psr": psr,
        "n_days": np.full(len(ret), float(n_days)), "starting_equity": np.full(len(ret), float(starting_equity)),
    }


# -- the backtest ------------------------------------------------------------------------------
def _key(strategy: Any, bars: Bars, costs: CostModel, seed: int, starting_equity: float,
         sizing: Sizing | None, cap: float, band: float = DEFAULT_BAND) -> dict[str, Any]:
    return {"strategy": strategy.name, "class": strategy.key()[0], "params": {k: repr(v) for k, v in
                                                                               strategy.params.items()},
            "instruments": list(bars.instruments), "bar_seconds": bars.bar_seconds,
            "data": [int(bars.start_ns[0]), int(bars.end_ns[-1])], "bars": bars.fingerprint(),
            "costs": costs.describe(), "seed": int(seed), "starting_equity": float(starting_equity), "tick_floor": 1,
            "sizing": None if sizing is None else sizing.to_dict(), "cap": float(cap),
            # rules that changed what a backtest of the same inputs holds: fills drawn from the curve's
            # fitted scatter, and the rebalance band (older stored backtests are not reused for these)
            "cost_draws": "engine improvement, else fitted scatter", "rebalance_band": float(band)}


def _check_inputs(bars: Bars, starting_equity: float, seed: int) -> None:
    if not isinstance(bars, Bars):
        raise ResearchError(f"expected Bars (tb.Bars.from_store / from_frames), got {type(bars).__name__}")
    if len(bars) < 2:
        raise ResearchError(f"a backtest needs at least 2 bars (a target acts at the next open); got {len(bars)}")
    if not (isinstance(starting_equity, (int, float)) and math.isfinite(starting_equity) and starting_equity > 0):
        raise ResearchError(f"starting_equity {starting_equity!r}: expected a positive amount")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ResearchError(f"seed {seed!r}: expected an integer")


def backtest(strategy: Any, bars: Bars, *, costs: CostModel | None = None, starting_equity: float = DEFAULT_EQUITY,
             sizing: Sizing | None = None, seed: int = 0, cap: float = DEFAULT_CAP,
             prepared: Any = None, adjusted: bool = True, rebalance_band: float = DEFAULT_BAND) -> BacktestResult:
    """Backtest ``strategy`` on ``bars`` with ``costs`` (None: no costs); see the module docstring for the rules.

    Runs :func:`tradebook.research.causality.prepare` first (the lookahead and trailing-window
    checks; ``prepared`` hands in one already made). ``sizing=None``: measured at ``cap`` then
    Half-Kelly (two passes); a given ``Sizing`` is used as it is. ``adjusted``: the bars' prices
    are split-adjusted (``Bars.from_store``'s default), so the traded price a spread is floored at
    one tick of is recovered with the cost model's stored split factors; False: taken as traded.
    ``rebalance_band``: an unchanged target re-sizes a held position only when it drifted more than this
    share from the wanted quantity (:mod:`tradebook.research.rebalance`; the paper runner's default too).
    """
    from tradebook.research.causality import prepare
    from tradebook.research.strategy import check_bars_for

    _check_inputs(bars, starting_equity, seed)
    if not (isinstance(rebalance_band, (int, float)) and 0 <= rebalance_band < 1):
        raise ResearchError(f"rebalance_band {rebalance_band!r}: expected a share of the wanted quantity in [0, 1)")
    given = sizing
    costs = CostModel.zero() if costs is None else costs
    if not isinstance(costs, CostModel):
        raise ResearchError(f"costs is a {type(costs).__name__}; expected a CostModel (CostModel.from_store(...) "
                            "or CostModel.zero())")
    if tuple(bars.instruments) != tuple(strategy.instruments):
        bars = bars.select(list(strategy.instruments))
    check_bars_for(strategy, bars)
    prepared = prepared if prepared is not None else prepare(strategy, bars)
    targets = prepared.targets.to_numpy(dtype=np.float64)
    market = _market(bars, costs, seed, adjusted)
    n = len(market.instruments)
    if sizing is None:
        first = _simulate(market, targets, np.array([cap]), starting_equity, rebalance_band)
        sizing = _sizing_of(first.stats, n, cap)[0]
    elif not isinstance(sizing, Sizing):
        raise ResearchError(f"sizing is a {type(sizing).__name__}; expected tb.research Sizing(win_rate, avg_win, "
                            "avg_loss, cap) or None (measured)")
    run = _simulate(market, targets, np.array([sizing.fraction]), starting_equity, rebalance_band)
    portfolio = _portfolio(market, run, starting_equity)
    equity = _checked_equity(portfolio, run, strategy.name)
    return _result(strategy, market, run, portfolio, equity, 0, sizing=sizing, costs=costs, seed=seed,
                   starting_equity=starting_equity, key=_key(strategy, bars, costs, seed, starting_equity, given, cap,
                                                                   rebalance_band),
                   window=prepared.window, targets=prepared.targets, bars=bars)


def _result(strategy: Any, market: _Market, run: _Run, portfolio: Any, equity: np.ndarray, group: int, *,
            sizing: Sizing, costs: CostModel, seed: int, starting_equity: float, key: dict[str, Any],
            window: int | None, targets: pd.DataFrame | None, bars: Bars, sweep_id: str | None = None,
            records: bool = True) -> BacktestResult:
    """The BacktestResult of one group (trial) of a run; ``records=False``: equity and given metrics only."""
    series = pd.Series(equity[:, group], index=bars.index, name="equity")
    if records:
        fills = _fills(market, run, group)
        trades = _trades(portfolio, market, group)
    else:
        fills = pd.DataFrame({c: [] for c in FILL_COLUMNS})
        trades = pd.DataFrame({c: [] for c in TRADE_COLUMNS})
    daily = daily_of(series, fills, trades, market.calendar, float(starting_equity)) if records else None
    metrics = backtest_metrics(daily, calendar=market.calendar, starting_equity=starting_equity) if records else {}
    fees = {i: {"maker_bps": f.maker_bps, "taker_bps": f.taker_bps, "per_unit": f.per_unit}
            for i, f in ((i, costs.fee_schedule(i)) for i in market.instruments)}
    return BacktestResult(
        strategy=strategy, params=dict(strategy.params), instruments=market.instruments,
        bar_seconds=bars.bar_seconds, bars_range=(int(bars.start_ns[0]), int(bars.end_ns[-1])), trades=trades,
        fills=fills, equity=series, daily=daily, metrics=metrics, sizing=sizing, costs=costs.describe(), fees=fees,
        seed=int(seed), starting_equity=float(starting_equity), window=window, calendar=market.calendar,
        key=key, sweep_id=sweep_id, targets=targets)


def load_backtest(store: Any, backtest_id_or_strategy: str) -> BacktestResult:
    """A stored backtest by id, or the latest of a strategy name (ResearchError listing the known ones)."""
    from tradebook.research.storage import load_backtest as _load

    return _load(store, backtest_id_or_strategy)


__all__ = ["BacktestResult", "Sizing", "backtest", "backtest_metrics", "calendar_of", "daily_of", "load_backtest",
           "open_times_ns", "order_vol_bps"]
