"""Backtests, sweeps and ranges in the store: the research_* tables of migration 4, written and read back.

A backtest is written once per content: its id hashes what determines it (strategy, params,
data, calibrations, seed and, for a trial, its sweep), so saving it again writes nothing.
JSON columns hold orjson text. ``calibrations`` holds :meth:`CostModel.describe` (the gate
rebuilds the cost model from it) plus a ``run`` entry (seed, session window, calendar, the
strategy's class and the hashed key) that the table has no column of its own for.
"""

from __future__ import annotations

import importlib
import math
import time
from typing import Any

import numpy as np
import orjson
import pandas as pd

from tradebook.errors import ResearchError

_JSON = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def _dumps(value: Any) -> str:
    return orjson.dumps(_clean(value), option=_JSON, default=str).decode()


def _clean(value: Any) -> Any:
    """NaN and inf become None (JSON has neither); containers walked."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _exists(store: Any, backtest_id: str) -> bool:
    return not store.query("SELECT 1 FROM research_backtests WHERE backtest_id = ?", [backtest_id]).empty


def _insert_frame(con: Any, table: str, frame: pd.DataFrame) -> None:
    if frame.empty:
        return
    view = f"_research_{table}"
    con.register(view, frame)
    try:
        con.execute(f"INSERT INTO {table} ({', '.join(frame.columns)}) SELECT {', '.join(frame.columns)} FROM {view}")
    finally:
        con.unregister(view)


def backtest_row(result: Any, backtest_id: str) -> dict[str, Any]:
    """The research_backtests row of ``result`` (JSON columns as text)."""
    strategy = result.strategy
    cls = type(strategy)
    described = dict(result.costs)
    described["run"] = {"seed": result.seed, "window": result.window, "calendar": result.calendar,
                        "class": f"{cls.__module__}.{cls.__qualname__}", "key": result.key}
    return {
        "backtest_id": backtest_id, "strategy": result.strategy_name, "sweep_id": result.sweep_id,
        "params": _dumps(result.params), "instruments": _dumps(list(result.instruments)),
        "bar_seconds": int(result.bar_seconds), "data_start_ns": int(result.bars_range[0]),
        "data_end_ns": int(result.bars_range[1]), "calibrations": _dumps(described), "fees": _dumps(result.fees),
        "starting_equity": float(result.starting_equity), "metrics": _dumps(result.metrics),
        "sizing": _dumps(result.sizing.to_dict()), "created_at_ns": time.time_ns(),
    }


def save_backtest(store: Any, result: Any, *, records: bool = True, con: Any = None) -> str:
    """Write ``result`` (its row; with ``records`` its trades, fills and equity) unless stored; returns its id."""
    backtest_id = result.backtest_id
    if _exists(store, backtest_id):
        return backtest_id
    if con is None:
        with store.transaction() as tx:
            _write_backtest(tx, result, backtest_id, records)
    else:
        _write_backtest(con, result, backtest_id, records)
    return backtest_id


def _write_backtest(con: Any, result: Any, backtest_id: str, records: bool) -> None:
    _insert_frame(con, "research_backtests", pd.DataFrame([backtest_row(result, backtest_id)]))
    equity = pd.DataFrame({"backtest_id": backtest_id, "ts_ns": result.equity.index.asi8.astype(np.int64),
                           "equity": result.equity.to_numpy(dtype=np.float64)})
    _insert_frame(con, "research_equity", equity)
    if not records:
        return
    trades = result.trades.copy()
    trades.insert(0, "trade_no", np.arange(len(trades), dtype=np.int64))
    trades.insert(0, "backtest_id", backtest_id)
    trades["exit_ts_ns"] = trades["exit_ts_ns"].astype("Int64")
    _insert_frame(con, "research_trades", trades)
    fills = result.fills.copy()
    fills.insert(0, "fill_no", np.arange(len(fills), dtype=np.int64))
    fills.insert(0, "backtest_id", backtest_id)
    _insert_frame(con, "research_fills", fills)


def save_sweep(store: Any, sweep: Any) -> str:
    """Write a sweep: its row and every trial's backtest row and equity; the chosen trial with its records."""
    sweep_id = sweep.sweep_id
    with store.transaction() as con:
        if con.execute("SELECT 1 FROM research_sweeps WHERE sweep_id = ?", [sweep_id]).fetchone() is None:
            row = {"sweep_id": sweep_id, "strategy": sweep.strategy, "grid": _dumps(sweep.grid),
                   "n_trials": int(sweep.n_trials), "chosen_backtest_id": sweep.best.backtest_id,
                   "created_at_ns": time.time_ns(), "stats": _dumps(sweep.stats)}
            _insert_frame(con, "research_sweeps", pd.DataFrame([row]))
        for trial in sweep.trial_results():
            if con.execute("SELECT 1 FROM research_backtests WHERE backtest_id = ?",
                           [trial.backtest_id]).fetchone() is None:
                _write_backtest(con, trial, trial.backtest_id, records=trial.backtest_id == sweep.best.backtest_id)
    return sweep_id


# -- reading back -----------------------------------------------------------------------------------
def _resolve(store: Any, key: str) -> str:
    if not isinstance(key, str) or not key:
        raise ResearchError(f"expected a backtest id or a strategy name, got {key!r}")
    if _exists(store, key):
        return key
    # a name: its latest stand-alone backtest, else its latest sweep's chosen trial, else its latest trial
    rows = store.query(
        "SELECT b.backtest_id FROM research_backtests b LEFT JOIN research_sweeps s ON s.chosen_backtest_id = "
        "b.backtest_id WHERE b.strategy = ? ORDER BY (b.sweep_id IS NULL) DESC, (s.sweep_id IS NOT NULL) DESC, "
        "b.created_at_ns DESC LIMIT 1", [key])
    if rows.empty:
        known = store.query("SELECT DISTINCT strategy FROM research_backtests ORDER BY strategy")["strategy"].tolist()
        raise ResearchError(f"no backtest {key!r} in the store (neither an id nor a strategy name); backtests are "
                            f"stored for: {', '.join(known) or 'none (BacktestResult.save(store))'}")
    return str(rows["backtest_id"].iloc[0])


def load_backtest(store: Any, backtest_id_or_strategy: str) -> Any:
    """A stored backtest by id, or the latest of a strategy name; unknown → ResearchError listing the known names.

    The strategy comes back as an instance of its class when that class can be imported and
    built with the stored params, else as a :class:`StoredStrategy` (name, instruments, params).
    A sweep trial stored without its records has empty trades and fills.
    """
    from tradebook.research.backtest import BacktestResult, Sizing, daily_of

    backtest_id = _resolve(store, backtest_id_or_strategy)
    row = store.query("SELECT * FROM research_backtests WHERE backtest_id = ?", [backtest_id]).iloc[0]
    described = orjson.loads(row["calibrations"])
    run = described.pop("run", {}) or {}
    params = orjson.loads(row["params"])
    instruments = tuple(orjson.loads(row["instruments"]))
    strategy = _strategy(str(row["strategy"]), run.get("class"), params, instruments, int(row["bar_seconds"]),
                         run.get("window"))
    equity_rows = store.query("SELECT ts_ns, equity FROM research_equity WHERE backtest_id = ? ORDER BY ts_ns",
                              [backtest_id])
    equity = pd.Series(equity_rows["equity"].to_numpy(dtype=np.float64),
                       index=pd.DatetimeIndex(pd.to_datetime(equity_rows["ts_ns"].to_numpy(np.int64), unit="ns",
                                                             utc=True)), name="equity")
    from tradebook.research.backtest import FILL_COLUMNS, TRADE_COLUMNS

    trades = store.query(f"SELECT {', '.join(TRADE_COLUMNS)} FROM research_trades WHERE backtest_id = ? "
                         "ORDER BY trade_no", [backtest_id])
    trades["exit_ts_ns"] = trades["exit_ts_ns"].astype("Int64")
    fills = store.query(f"SELECT {', '.join(FILL_COLUMNS)} FROM research_fills WHERE backtest_id = ? "
                        "ORDER BY fill_no", [backtest_id])
    calendar = run.get("calendar") or "XNYS"
    starting_equity = float(row["starting_equity"])
    result = BacktestResult(
        strategy=strategy, params=params, instruments=instruments, bar_seconds=int(row["bar_seconds"]),
        bars_range=(int(row["data_start_ns"]), int(row["data_end_ns"])), trades=trades, fills=fills, equity=equity,
        daily=daily_of(equity, fills, trades, calendar, starting_equity),
        metrics={k: (math.nan if v is None else v) for k, v in orjson.loads(row["metrics"]).items()},
        sizing=Sizing.from_dict(orjson.loads(row["sizing"])), costs=described, fees=orjson.loads(row["fees"]),
        seed=int(run.get("seed", 0)), starting_equity=starting_equity, window=run.get("window"),
        calendar=calendar, key=run.get("key") or {}, sweep_id=None if pd.isna(row["sweep_id"]) else row["sweep_id"])
    if result.backtest_id != backtest_id:  # stored before its key was kept: keep the stored id
        result.stored_id = backtest_id
    return result


class StoredStrategy:
    """What the store knows of a strategy whose class cannot be rebuilt here: name, instruments, params."""

    def __init__(self, name: str, instruments: tuple[str, ...], params: dict[str, Any], bar_seconds: int,
                 window: int | None) -> None:
        self.name, self.instruments, self.params = name, instruments, params
        self.bar_seconds, self.window = bar_seconds, window

    def __repr__(self) -> str:
        return f"StoredStrategy({self.name!r}, params={self.params}, instruments={list(self.instruments)})"


def _strategy(name: str, path: str | None, params: dict[str, Any], instruments: tuple[str, ...], bar_seconds: int,
              window: int | None) -> Any:
    if path and "<locals>" not in path:
        module, _, qualname = path.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module), qualname)
            strategy = cls(instruments=instruments, bar_seconds=bar_seconds, window=window, **params)
            if strategy.name == name:
                return strategy
            return cls(instruments=instruments, bar_seconds=bar_seconds, window=window, name=name, **params)
        except Exception:  # noqa: BLE001 - a class moved, renamed or defined in a notebook: the stored facts suffice
            pass
    return StoredStrategy(name, instruments, params, bar_seconds, window)


__all__ = ["StoredStrategy", "backtest_row", "load_backtest", "save_backtest", "save_sweep"]
