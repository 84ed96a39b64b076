"""Research speed: a 100-combination sweep with calibrated costs beside plain vectorbt, and a 30-day paper replay.

The workload (issue 17, Done-when 7), on the bundled data in a temporary store (the six
daily equity series with their split factors, and IBM's 2013-10-07 quotes and trades,
calibrated; the IBM model priced onto the five others with ``FillModel.for_instrument``):

1. **Sweep**: ``MeanReversion`` over a 10 × 10 grid (lookback × entry) on the daily bars
   from ``SWEEP_START`` to the research end (2021-01-29), each trial's fills priced by the
   calibrated cost model at its size, time of day and volatility, venue fees, Half-Kelly
   sizing measured from a first pass (what ``tradebook.research.sweep`` does; the store is
   not written, so storage does not count). Timed once warm: vectorbt's first call in a
   process compiles for tens of seconds and a first run of each path is left out of both.
2. **Plain vectorbt**: the same 100 parameter sets' target positions (computed by the same
   ``signals``), traded by one ``vbt.Portfolio.from_orders`` call (target percent of
   equity at 5%, the Half-Kelly cap, at the next bar's open) with a flat 5 bps fee and no
   slippage model: what a user of vectorbt alone would run. The ratio is sweep / plain
   (aim: within 2×).
3. **Paper replay**: the chosen parameters paper-traded over February and March 2021
   (about 40 trading days) through the real order path (``paper_replay``: synthetic quotes
   from the bars, a ``tb.Session`` with the paper venue and the calibrated models, the
   StrategyRunner acting at each bar), in accelerated time (aim: under a minute).

Prints rates and ratios; asserts nothing.
"""

from __future__ import annotations

import itertools
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from tradebook.data import BUNDLED_FILES, load_bundled
from tradebook.store import Store

EQUITIES = ("SPY.ARCX", "QQQ.XNAS", "IWM.ARCX", "AAPL.XNAS", "IBM.XNYS", "BAC.XNYS")
SWEEP_START = "2006-01-01T00:00:00Z"
RESEARCH_END = "2021-01-29T23:59:59Z"
PAPER_START, PAPER_END = "2021-02-01T00:00:00Z", "2021-03-31T23:59:59Z"
GRID = {"lookback": [5, 8, 10, 12, 15, 20, 25, 30, 40, 50],
        "entry": [0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 3.0]}
FLAT_FEE = 0.0005  # 5 bps a side: the flat fee of the plain run
CAP = 0.05


def _store(folder: Path) -> Store:
    """A store with the six daily series, their factors and IBM's calibrated quotes (what `make demo` holds)."""
    from tradebook.sim.fidelity import run_calibration

    store = Store(folder / "bench.duckdb")
    for entry in BUNDLED_FILES:
        daily = entry.path.startswith("bars/daily/") and entry.instrument_id in EQUITIES
        ibm_ticks = entry.path.startswith("ticks/equities/algoseek_IBM_20131007")
        if daily or ibm_ticks:
            store.ingest(load_bundled(Path(entry.path).name))
    run_calibration(store, ["IBM.XNYS"])
    return store


def plain_vectorbt(strategy, bars, grid: dict) -> object:
    """The grid's targets traded by one vectorbt call: target percent at the next open, a flat fee."""
    import vectorbt as vbt

    from tradebook.research.strategy import compute_targets

    combos = list(itertools.product(*grid.values()))
    frames = [compute_targets(strategy.with_params(**dict(zip(grid, combo))), bars) for combo in combos]
    targets = pd.concat(frames, axis=1, keys=range(len(combos)), names=["trial", "instrument"])
    # decided on bar t's close, acting at bar t+1's open: the same timing rule as the backtest
    size = (targets.shift(1) * CAP).where(targets.shift(1).ne(targets.shift(2)))
    opens = pd.concat([bars.open] * len(combos), axis=1, keys=range(len(combos)), names=["trial", "instrument"])
    closes = pd.concat([bars.close] * len(combos), axis=1, keys=range(len(combos)), names=["trial", "instrument"])
    return vbt.Portfolio.from_orders(closes.ffill(), size=size, size_type="targetpercent", price=opens.ffill(),
                                     fees=FLAT_FEE, group_by="trial", cash_sharing=True, init_cash=100_000.0,
                                     call_seq="auto", freq="1D")


def main() -> None:
    import vectorbt  # noqa: F401  (imported before timing: ~4 s)

    from tradebook.research.bars import Bars
    from tradebook.research.costs import CostModel
    from tradebook.research.examples import MeanReversion
    from tradebook.research.runner import paper_replay
    from tradebook.research.sweep import sweep
    from tradebook.research.backtest import backtest

    print("Research: a 100-combination sweep with calibrated costs, plain vectorbt, a 30-day paper replay")
    with tempfile.TemporaryDirectory(prefix="tb-bench-research-") as tmp:
        began = time.perf_counter()
        store = _store(Path(tmp))
        costs = CostModel.from_store(store, {instrument: "IBM.XNYS" for instrument in EQUITIES})
        history = Bars.from_store(store, EQUITIES, start=SWEEP_START, end=PAPER_END)
        research = Bars.from_store(store, EQUITIES, start=SWEEP_START, end=RESEARCH_END)
        print(f"  setup (store, IBM calibration, bars): {time.perf_counter() - began:.1f} s; {len(research)} "
              f"daily bars x {len(EQUITIES)} instruments, {SWEEP_START[:10]} .. {RESEARCH_END[:10]}")
        strategy = MeanReversion(instruments=EQUITIES)
        n = int(np.prod([len(v) for v in GRID.values()]))

        began = time.perf_counter()
        backtest(strategy, research, costs=costs)   # warm: vectorbt compiles on its first call in a process
        plain_vectorbt(strategy, research, {k: v[:1] for k, v in GRID.items()})
        print(f"  warm-up (compiles, one backtest each way): {time.perf_counter() - began:.1f} s")

        began = time.perf_counter()
        result = sweep(strategy, GRID, research, costs=costs)
        ours = time.perf_counter() - began
        began = time.perf_counter()
        portfolio = plain_vectorbt(strategy, research, GRID)
        plain = time.perf_counter() - began
        best = result.best
        print(f"  sweep, calibrated costs, Half-Kelly: {n} trials in {ours:.2f} s ({n / ours:.1f} trials/s); "
              f"best {best.params}, DSR {result.dsr.dsr:.3f}, PBO {result.pbo.pbo:.3f}")
        print(f"  plain vectorbt, flat {FLAT_FEE * 1e4:g} bps fee: {n} trials in {plain:.2f} s "
              f"({n / plain:.1f} trials/s); best total return {float(portfolio.total_return().max()):.3f}")
        print(f"  ratio sweep / plain vectorbt: {ours / plain:.2f}x (aim: within 2x)")

        began = time.perf_counter()
        replay = paper_replay(store, strategy.with_params(**best.params), history, start=PAPER_START,
                              end=PAPER_END, costs=costs, backtest=best, run="bench-research")
        took = time.perf_counter() - began
        print(f"  paper replay through the order path: {replay.trading_days} trading days, {len(replay.orders)} "
              f"orders, {len(replay.fills)} fills in {took:.1f} s (aim: under 60 s)")
        store.close()


if __name__ == "__main__":
    main()
