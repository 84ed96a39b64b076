"""A research strategy run in a session: the same ``signals`` function, the same timing and sizing as its backtest.

:class:`StrategyRunner` is a session strategy (``runner(batch, view) -> list[Signal]``,
see :class:`tradebook.session.Session`). The timing rule, as in the backtest: a target
computed from bars up to and including bar t (its close known) acts at the OPEN of bar
t+1. The runner acts on the first quote of each new bar (for daily bars made into quotes
by :mod:`tradebook.research.synthetic`, the session's open quote): it computes the
targets on the trailing window of COMPLETE bars (``bars.until(now)``, the last
``window`` of them), takes the newest row and sizes it as the backtest does:

    quantity = floor_to_lot(target x fraction x equity / price)

with ``fraction`` the Half-Kelly fraction of the backtest's own statistics
(:func:`tradebook.execution.sizing.half_kelly_fraction` of its ``Sizing``), ``equity``
the session's equity marked at this quote (the view's), ``price`` this quote's mid; a
magnitude below the instrument's minimum size is flat. It emits one market signal
(strength 1) per instrument for the difference with the position held when the backtest's
rebalance rule says so (:func:`tradebook.research.rebalance.should_trade`: the target
changed, or an unchanged one drifted beyond the band), with the signal id made of the
bar's start and the instrument: a re-run sends nothing twice.

Limit: the runner reads its bars from ``bars`` handed in up front (a replay of history,
daily bars made into quotes). A live session would have to build the bars from its own
feed as they complete; that is not built here (the live venues are another issue).

:func:`paper_replay` puts it together on held-back history: synthetic quotes for the
paper period, stored and labelled, a :class:`~tradebook.data.feeds.ReplayFeed` of them,
and a :class:`~tradebook.session.Session` with the paper venue whose fill models are the
cost model's (an instrument priced with another's calibration gets that model applied to
it with ``FillModel.for_instrument``, stored as a calibration of its own that says what it
was derived from: :func:`paper_calibrations`).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd

from tradebook.errors import ResearchError
from tradebook.research.costs import instrument_of
from tradebook.research.rebalance import DEFAULT_BAND, should_trade

DEFAULT_CAP = 0.05  # the Half-Kelly cap: a runner without a backtest stakes this fraction, as the backtest's first pass
_NS = 1_000_000_000


def sizing_fraction(backtest: Any = None, sizing: Any = None, cap: float = DEFAULT_CAP) -> float:
    """The fraction of equity one unit of target stakes: Half-Kelly of ``sizing`` (or the backtest's), else ``cap``."""
    from tradebook.execution.sizing import half_kelly_fraction

    chosen = sizing if sizing is not None else getattr(backtest, "sizing", None)
    if chosen is None:
        return float(cap)
    fraction = getattr(chosen, "fraction", None)
    if isinstance(fraction, (int, float)) and not callable(fraction):
        return float(fraction)
    return half_kelly_fraction(float(chosen.win_rate), float(chosen.avg_win), float(chosen.avg_loss),
                               float(getattr(chosen, "cap", cap)))


def target_quantity(target: float, fraction: float, equity: float, price: float, instrument: Any) -> Decimal:
    """Signed quantity for ``target``: ``target x fraction x equity / price`` floored (toward zero) to the lot;
    below the instrument's minimum size, zero. The one rule the backtest and the runner size with."""
    if not (math.isfinite(target) and math.isfinite(equity) and math.isfinite(price)) or price <= 0 or target == 0:
        return Decimal(0)
    raw = target * fraction * equity / price
    lot = instrument.lot_size
    # the backtest's floor, float for float: a quotient a rounding below a whole lot counts as that lot
    lots = math.floor(abs(raw) / float(lot) * (1.0 + 1e-12))
    magnitude = Decimal(lots) * lot
    minimum = getattr(instrument, "min_quantity", None) or lot
    if magnitude < minimum:
        return Decimal(0)
    return magnitude if raw > 0 else -magnitude


@dataclass
class RunnerStep:
    """What the runner decided for one instrument at one bar (kept in ``StrategyRunner.steps``)."""

    ts_ns: int
    bar_start_ns: int
    instrument_id: str
    target: float
    equity: float
    price: float
    held: Decimal
    wanted: Decimal
    signal_id: str | None


class StrategyRunner:
    """A session strategy that runs a research :class:`~tradebook.research.strategy.Strategy` on bars.

    ``bars``: the strategy's bars, at least up to the end of the session's feed (the runner
    only ever reads the complete ones: ``bars.until(now)``). ``backtest``: its
    BacktestResult (its ``sizing``; None: the cap, as the backtest's first pass).
    ``window``: trailing bars handed to ``signals`` (None: the backtest's, else the one
    :func:`tradebook.research.causality.prepare` settles on: the strategy's, lengthened
    when the trailing check finds it too short). Before anything else the runner calls
    ``prepare`` on ``bars``: a strategy that peeks is refused here (LookaheadError), as
    by the backtest. ``sizing`` overrides the backtest's. ``strategy_id``: the session's
    strategy id (default the strategy's name). ``rebalance_band``: None: the backtest's (25% by default).
    """

    def __init__(self, strategy: Any, bars: Any, *, backtest: Any = None, window: int | None = None,
                 sizing: Any = None, strategy_id: str | None = None, strength: float = 1.0,
                 instruments: Mapping[str, Any] | None = None, rebalance_band: float | None = None) -> None:
        from tradebook.model.instruments import get_instrument
        from tradebook.research.causality import prepare
        from tradebook.research.strategy import check_bars_for

        if tuple(bars.instruments) != tuple(strategy.instruments):
            bars = bars.select(list(strategy.instruments))
        check_bars_for(strategy, bars)
        prepared = prepare(strategy, bars)
        self.strategy = strategy
        self.bars = bars
        self.strategy_id = strategy_id or strategy.name
        self.fraction = sizing_fraction(backtest, sizing)
        self.window = self._window(window, backtest, prepared.window)
        self.strength = float(strength)
        self.instruments = {i: (instruments or {}).get(i) or get_instrument(i) for i in strategy.instruments}
        self.steps: list[RunnerStep] = []
        self._acted: dict[str, int] = {}  # instrument -> start of the last bar acted on
        self._last_target: dict[str, float] = {}  # instrument -> the target of that bar (should_trade)
        if rebalance_band is None:  # the backtest's band, else the default
            rebalance_band = (getattr(backtest, "key", None) or {}).get("rebalance_band", DEFAULT_BAND)
        self.rebalance_band = float(rebalance_band)
        self._targets: dict[int, pd.Series] = {}  # newest complete bar's start -> its targets row
        self._starts = bars.start_ns
        self._bar_ns = int(bars.bar_seconds) * _NS

    @staticmethod
    def _window(window: int | None, backtest: Any, prepared: int | None) -> int:
        for candidate in (window, getattr(backtest, "window", None), prepared):
            if candidate is not None:
                if int(candidate) < 1:
                    raise ResearchError(f"window is {candidate!r}; expected a positive number of bars")
                return int(candidate)
        raise ResearchError("no trailing window: give window=, or a strategy the trailing check can size")

    def _bar_of(self, ts_ns: int) -> int | None:
        """Start of the bar holding ``ts_ns`` (None: no bar of these bars holds it)."""
        k = int(np.searchsorted(self._starts, ts_ns, side="right")) - 1
        if k < 0 or ts_ns >= int(self._starts[k]) + self._bar_ns:
            return None
        return int(self._starts[k])

    def targets_at(self, now_ns: int) -> pd.Series | None:
        """The newest row of the targets on the trailing window of bars complete at ``now_ns`` (None: no bar yet)."""
        from tradebook.research.strategy import compute_targets

        complete = self.bars.until(now_ns)
        if len(complete) == 0:
            return None
        newest = int(complete.start_ns[-1])
        row = self._targets.get(newest)
        if row is None:
            row = compute_targets(self.strategy, complete.tail(self.window)).iloc[-1]
            self._targets[newest] = row
        return row

    def __call__(self, batch: Any, view: Any) -> list:
        from tradebook.model.instruments import Side
        from tradebook.model.orders import Signal

        signals = []
        row = None
        for instrument_id in self.strategy.instruments:
            quotes = batch.quotes.get(instrument_id)
            if quotes is None or not len(quotes):
                continue
            first = int(quotes.ts_ns[0])
            bar = self._bar_of(first)
            if bar is None or self._acted.get(instrument_id) == bar:
                continue
            bid, ask = float(quotes.bid_px[0]), float(quotes.ask_px[0])
            if not (0 < bid < ask):
                continue  # no usable price at this bar's first quote: wait for the next bar (as a missing open)
            self._acted[instrument_id] = bar
            if row is None:
                row = self.targets_at(min(int(view.now_ns), first))
            if row is None:
                continue
            target = float(row[instrument_id])
            price = (bid + ask) / 2
            equity = float(view.equity)
            wanted = target_quantity(target, self.fraction, equity, price, self.instruments[instrument_id])
            held = Decimal(view.positions.get(instrument_id, Decimal(0)))
            acted_on = self._last_target.get(instrument_id, 0.0)
            self._last_target[instrument_id] = target
            delta = wanted - held
            signal_id = None
            if delta != 0 and should_trade(acted_on, target, float(held), float(wanted), self.rebalance_band):
                signal_id = f"{pd.Timestamp(bar, unit='ns', tz='UTC').strftime('%Y%m%dT%H%M%S')}-{instrument_id}"
                signals.append(Signal(self.strategy_id, signal_id, instrument_id,
                                      Side.BUY if delta > 0 else Side.SELL, int(view.now_ns),
                                      strength=self.strength, quantity=abs(delta)))
            self.steps.append(RunnerStep(int(view.now_ns), bar, instrument_id, target, equity, price, held, wanted,
                                         signal_id))
        return signals

    def steps_frame(self) -> pd.DataFrame:
        """One row per instrument and bar acted on: target, equity, price, held, wanted, signal id."""
        return pd.DataFrame([s.__dict__ for s in self.steps],
                            columns=list(RunnerStep.__dataclass_fields__))


# -- fill models for the paper venue ------------------------------------------------------------
def zero_cost_model(instrument: Any) -> Any:
    """A fill model without costs: marketable orders fill at the mid (cost curve 0 half-spreads), no fees,
    the touch never limits (the backtest/paper equivalence under zero costs)."""
    from tradebook.sim.fill_model import SIZE_BUCKET_EDGES, CostCurve, FeeSchedule, FillModel

    n = len(SIZE_BUCKET_EDGES) - 1
    zeros = (0.0,) * n
    curve = CostCurve(SIZE_BUCKET_EDGES, zeros, zeros, zeros, (0,) * n)
    return FillModel(instrument.instrument_id, float(instrument.tick_size), curve, fees=FeeSchedule(),
                     max_take_over_touch=1e12, asset_class=str(instrument.asset_class))


def paper_calibrations(store: Any, costs: Any, instruments: Iterable[str],
                       quotes: Mapping[str, pd.DataFrame] | None = None) -> list[str]:
    """Calibration ids for a paper session whose venue fills as ``costs`` prices (one per instrument).

    An instrument priced with its own calibration uses it. One priced with another's
    (``{'SPY.ARCX': 'IBM.XNYS@v5'}``) gets that model applied to it (``for_instrument``),
    stored as a calibration of its own whose diagnostics name what it was derived from;
    with the zero cost model, a zero-cost model (:func:`zero_cost_model`). ``quotes``: the
    instrument's quotes the session will trade on (the synthetic ones): given, the applied
    model keeps its completion model (refill and, on equities, price improvement, as the
    backtest's cost draws have them) with sizes rescaled to their touch; without, the
    venue fills at the cost curve's median. The same model again reuses the stored version.
    """
    ids = []
    for instrument_id in instruments:
        instrument = instrument_of(store, instrument_id)
        if costs.is_zero:
            model, derived, source = zero_cost_model(instrument), "zero cost (research equivalence)", None
        else:
            source_id = costs.calibrations.get(instrument_id)
            if source_id is None:
                costs.require([instrument_id])  # raises naming what it prices
            record = store.calibration(source_id)
            if record.instrument_id == instrument_id:
                ids.append(record.calibration_id)
                continue
            frame = (quotes or {}).get(instrument_id)
            if frame is not None and len(frame):
                from tradebook.sim.fill_model import FillModel

                fitted = FillModel.from_json(record.params)
                model = fitted.for_instrument(instrument, quotes=frame[["ts_ns", "bid_px", "ask_px", "bid_sz",
                                                                         "ask_sz"]])
            else:
                model = costs.model(instrument_id)
            derived, source = f"applied from {record.calibration_id}", record
        ids.append(_store_model(store, instrument_id, model, derived, source))
    return ids


def _store_model(store: Any, instrument_id: str, model: Any, derived: str, source: Any) -> str:
    params = model.to_json()
    stored = store.calibrations(instrument_id)
    for calibration_id in reversed(stored["calibration_id"].tolist()):
        record = store.calibration(calibration_id)
        if record.params == params:
            return record.calibration_id
    start = source.data_start_ns if source is not None else 0
    end = source.data_end_ns if source is not None else 0
    datasets = source.dataset_ids if source is not None else ()
    record = store.save_calibration(instrument_id, params, data_start_ns=start, data_end_ns=end, dataset_ids=datasets,
                                    diagnostics={"derived": derived,
                                                 "derived_from": source.calibration_id if source else None,
                                                 "applied_notes": list(getattr(model, "applied_notes", ()))})
    return record.calibration_id


# -- a paper replay of held-back history ---------------------------------------------------------
@dataclass
class PaperReplayResult:
    """What a paper replay did: the run, its orders, fills, equity and the runner's decisions."""

    run: str
    strategy_id: str
    account_id: str
    start_ns: int
    end_ns: int
    calibrations: list[str]
    quote_datasets: dict[str, int]
    orders: pd.DataFrame
    fills: pd.DataFrame
    equity: pd.DataFrame
    decisions: pd.DataFrame
    steps: pd.DataFrame
    trading_days: int
    seconds: float
    quotes: dict[str, pd.DataFrame] = field(repr=False, default_factory=dict)

    def __repr__(self) -> str:
        return (f"<PaperReplayResult run {self.run!r} {self.strategy_id}: {self.trading_days} trading days, "
                f"{len(self.orders)} orders, {len(self.fills)} fills in {self.seconds:.1f} s>")


def replay_run_name(strategy: Any, start_ns: int, end_ns: int, costs: Any) -> str:
    """A run name per strategy, parameters, period and costs: the same replay again is the same run."""
    key = f"{strategy.name}|{sorted(strategy.params.items())}|{start_ns}|{end_ns}|{costs!r}"
    safe = "".join(c if c.isalnum() or c in "._-" else "-" for c in strategy.name)[:60]
    return f"replay-{safe}-{hashlib.blake2b(key.encode(), digest_size=4).hexdigest()}"


def paper_replay(store: Any, strategy: Any, bars: Any, *, start: Any, end: Any, costs: Any, backtest: Any = None,
                 run: str | None = None, speed: float | None = None, reset: bool = True, sync: bool = False,
                 starting_cash: Decimal | int = Decimal(100_000), seed: int = 0, window: int | None = None,
                 timeout: float = 600.0, config: Any = None) -> PaperReplayResult:
    """Paper-trade ``strategy`` over the bars in ``[start, end]`` through the real order path, in accelerated time.

    Builds the synthetic quotes of the period (:func:`tradebook.research.synthetic.
    quotes_from_daily_bars`, labelled and stored in ``store``), a replay feed of them
    (``speed``: None as fast as it goes), the paper venue's fill models from ``costs``
    (:func:`paper_calibrations`) and a :class:`~tradebook.session.Session` running a
    :class:`StrategyRunner` on ``bars`` (the history before ``start`` feeds the signals'
    trailing window). ``run``: the paper run (default: one per strategy, period and
    costs, :func:`replay_run_name`); ``reset=True`` starts it over, so the same call
    gives the same result. ``sync=False``: journals are not fsync'd (a throwaway replay;
    the store still holds every order and fill when it returns). ``timeout``: seconds
    the replay may take before :class:`~tradebook.errors.SessionTimeoutError`.
    """
    from tradebook.data.feeds import ReplayFeed
    from tradebook.research.synthetic import ingest_synthetic_quotes, quotes_from_daily_bars
    from tradebook.session import Session

    began = time.monotonic()
    if tuple(bars.instruments) != tuple(strategy.instruments):
        bars = bars.select(list(strategy.instruments))
    costs.require(strategy.instruments)
    quotes = quotes_from_daily_bars(bars, costs, start=start, end=end)
    quotes = {i: q for i, q in quotes.items() if len(q)}
    if not quotes:
        raise ResearchError(f"no bars of {list(strategy.instruments)} between {start} and {end} to paper-trade")
    first = min(int(q["ts_ns"].iloc[0]) for q in quotes.values())
    last = max(int(q["ts_ns"].iloc[-1]) for q in quotes.values())
    label = (f"{', '.join(quotes)} daily bars {pd.Timestamp(first, unit='ns', tz='UTC').date()}.."
             f"{pd.Timestamp(last, unit='ns', tz='UTC').date()}, spreads and sizes from {costs!r}")
    datasets = ingest_synthetic_quotes(store, quotes, label=label)
    calibrations = paper_calibrations(store, costs, strategy.instruments, quotes)
    feed = ReplayFeed({i: q.drop(columns=["synthetic"]) for i, q in quotes.items()}, speed=speed,
                      synthetic=set(quotes))
    runner = StrategyRunner(strategy, bars, backtest=backtest, window=window)
    name = run or replay_run_name(strategy, first, last, costs)
    session = Session(store, calibrations=calibrations, feed=feed, strategy=runner, run=name, reset=reset, sync=sync,
                      starting_cash=Decimal(starting_cash), seed=seed, config=config)
    try:
        session.start(wait=True, timeout=timeout)
    finally:
        if session.state.value in ("running", "paused", "created"):
            session.stop()
    days = pd.DatetimeIndex(pd.to_datetime(np.concatenate([q["ts_ns"].to_numpy() for q in quotes.values()]),
                                           unit="ns", utc=True)).tz_convert("America/New_York").normalize().unique()
    return PaperReplayResult(run=name, strategy_id=runner.strategy_id, account_id=session.account_id, start_ns=first,
                             end_ns=last, calibrations=calibrations, quote_datasets=datasets,
                             orders=session.orders(), fills=session.fills(), equity=session.equity_frame(),
                             decisions=session.decisions_frame(), steps=runner.steps_frame(),
                             trading_days=len(days), seconds=time.monotonic() - began, quotes=quotes)


__all__ = ["PaperReplayResult", "RunnerStep", "StrategyRunner", "paper_calibrations", "paper_replay",
           "replay_run_name", "sizing_fraction", "target_quantity", "zero_cost_model"]
