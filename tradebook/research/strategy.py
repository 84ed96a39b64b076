"""Strategy: one definition of a strategy, run by the backtest over the history and by a session on a
trailing window; and ``compute_targets``, the one place its signals are called and validated.

A strategy's ``signals(bars)`` returns TARGET POSITIONS: a DataFrame with exactly ``bars.close``'s
index and columns, floats in [-1, 1] (1 fully long the sizer's allotment of that instrument, -1 fully
short, 0 flat). Row t may use bars up to and including t (t's close is known at its end); the target
acts at the open of bar t+1, in the backtest and in a session alike.
"""

from __future__ import annotations

import copy
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from tradebook.errors import ResearchError, SignalError
from tradebook.research.bars import Bars


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class Strategy(ABC):
    """Subclass it: declare ``instruments`` and the default ``params``, write ``signals``.

    ::

        class Breakout(tb.Strategy):
            params = {"lookback": 50}

            def signals(self, bars):
                high = bars.close.rolling(self.params["lookback"]).max()
                return (bars.close >= high).astype(float)

        s = Breakout(lookback=20, instruments=["SPY.ARCX"])

    Class attributes are defaults; ``__init__`` takes the parameters by name (unknown names are
    refused with the known ones listed) and ``instruments``, ``name``, ``bar_seconds``, ``window``.
    ``name`` is the strategy id in sessions and the store (default: the class name in snake case).
    ``window``: trailing bars a session hands to ``signals``; None lets the trailing check find it.
    Parameters are also readable as attributes (``self.lookback``). Instances are not changed after
    construction (only private ``_names`` may be set): :meth:`with_params` returns a copy (sweeps).
    """

    name: ClassVar[str] = ""
    instruments: tuple[str, ...] = ()
    bar_seconds: int = 86_400
    params: dict = {}
    window: int | None = None

    def __init__(self, *, instruments: Iterable[str] | str | None = None, name: str | None = None,
                 bar_seconds: int | None = None, window: int | None = None, **params: Any) -> None:
        defaults = dict(type(self).params)
        unknown = sorted(set(params) - set(defaults))
        if unknown:
            raise ResearchError(f"{type(self).__name__} has no parameter(s) {unknown}; its parameters are "
                                f"{sorted(defaults) or 'none'} (declare defaults in the class's params dict)")
        merged = {**defaults, **params}
        chosen = type(self).instruments if instruments is None else instruments
        ids = (chosen,) if isinstance(chosen, str) else tuple(str(i) for i in chosen)
        if not ids:
            raise ResearchError(f"{type(self).__name__} has no instruments; pass instruments=[...] "
                                "(instrument ids such as 'SPY.ARCX')")
        if len(set(ids)) != len(ids):
            raise ResearchError(f"instruments repeat: {list(ids)}; expected each instrument once")
        seconds = type(self).bar_seconds if bar_seconds is None else bar_seconds
        if not isinstance(seconds, (int, np.integer)) or isinstance(seconds, bool) or seconds <= 0:
            raise ResearchError(f"bar_seconds is {seconds!r}; expected a positive whole number of seconds")
        win = type(self).window if window is None else window
        if win is not None and (not isinstance(win, (int, np.integer)) or isinstance(win, bool) or win < 1):
            raise ResearchError(f"window is {win!r}; expected None or a positive number of bars")
        object.__setattr__(self, "params", merged)
        object.__setattr__(self, "instruments", ids)
        object.__setattr__(self, "bar_seconds", int(seconds))
        object.__setattr__(self, "window", None if win is None else int(win))
        object.__setattr__(self, "name", str(name) if name else (type(self).name or _snake(type(self).__name__)))
        self.validate_params()

    def validate_params(self) -> None:
        """Override to refuse bad parameter values (raise ResearchError naming the parameter)."""

    @abstractmethod
    def signals(self, bars: Bars) -> pd.DataFrame:
        """Target positions in [-1, 1] for every bar and instrument, computed causally (see module doc)."""

    def with_params(self, **params: Any) -> Strategy:
        """A copy with some parameters changed (the rest, the instruments, name and window kept)."""
        clone = copy.copy(self)
        merged = {**self.params, **params}
        unknown = sorted(set(params) - set(self.params))
        if unknown:
            raise ResearchError(f"{type(self).__name__} has no parameter(s) {unknown}; its parameters are "
                                f"{sorted(self.params)}")
        object.__setattr__(clone, "params", merged)
        clone.validate_params()
        return clone

    def key(self) -> tuple:
        """What identifies this strategy's behaviour: class, parameters, instruments, bar size."""
        cls = type(self)
        return (f"{cls.__module__}.{cls.__qualname__}", tuple(sorted((k, repr(v)) for k, v in self.params.items())),
                self.instruments, self.bar_seconds)

    def __getattr__(self, item: str) -> Any:
        # parameters read as attributes; only called when normal lookup fails
        params = self.__dict__.get("params")
        if params is not None and item in params:
            return params[item]
        raise AttributeError(f"{type(self).__name__!s} has no attribute {item!r}")

    def __setattr__(self, key: str, value: Any) -> None:
        if key.startswith("_"):  # a subclass's private state (caches) is its own business
            object.__setattr__(self, key, value)
            return
        raise AttributeError(f"{type(self).__name__} is not changed after construction; "
                             f"use with_params({key}=...) for a copy with other parameters")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        sep = ", " if args else ""
        return f"{type(self).__name__}({args}{sep}instruments={list(self.instruments)})"


def raw_signals(strategy: Strategy, bars: Bars) -> np.ndarray:
    """Call ``strategy.signals(bars)`` and check its shape; returns the float64 values (NaN kept).

    Columns in another order are reordered; anything else that differs from ``bars.close``'s index and
    columns is a SignalError naming the first mismatch and what was expected.
    """
    who = f"{strategy.name}.signals()"
    out = strategy.signals(bars.shallow())  # a strategy writing into its frames must not change the bars
    if not isinstance(out, pd.DataFrame):
        raise SignalError(f"{who} returned a {type(out).__name__}; expected a DataFrame with bars.close's index "
                          f"and columns {list(bars.instruments)}")
    index = bars.close.index
    if len(out.index) != len(index):
        raise SignalError(f"{who} returned {len(out.index)} rows for {len(index)} bars; expected one row per bar "
                          "(bars.close's index)")
    if not out.index.equals(index):
        try:
            differs = out.index != index
            pos = int(np.argmax(differs))
            found = out.index[pos]
        except (TypeError, ValueError):
            pos, found = 0, out.index[0]
        raise SignalError(f"{who} returned an index that differs from the bars' at row {pos}: {found!r}, "
                          f"expected {index[pos]!r} (return a frame on bars.close.index)")
    columns = list(bars.instruments)
    if list(out.columns) != columns:
        missing = [c for c in columns if c not in out.columns]
        extra = [c for c in out.columns if c not in columns]
        if missing or extra or not out.columns.is_unique:
            raise SignalError(f"{who} returned columns {list(out.columns)}; expected {columns} "
                              f"(missing {missing}, unexpected {extra})")
        out = out[columns]
    bad = [c for c, dtype in out.dtypes.items() if not (pd.api.types.is_numeric_dtype(dtype)
                                                        or pd.api.types.is_bool_dtype(dtype))]
    if bad:
        raise SignalError(f"{who} returned non-numeric column(s) {bad} ({[str(out[c].dtype) for c in bad]}); "
                          "expected floats in [-1, 1]")
    return out.to_numpy(dtype=np.float64, na_value=np.nan)


def targets_from_raw(strategy: Strategy, bars: Bars, values: np.ndarray) -> pd.DataFrame:
    """Validate raw signal values as target positions: leading NaNs (warm-up) become 0; a NaN after a
    finite value, an infinity or a value outside [-1, 1] is a SignalError naming bar, instrument, value."""
    values = np.array(values, dtype=np.float64, copy=True)
    nan = np.isnan(values)
    if nan.any():
        started = np.maximum.accumulate(~nan, axis=0)  # True from each column's first finite value on
        late = nan & started
        if late.any():
            row, col = _first(late)
            prev = values[:row, col][~np.isnan(values[:row, col])][-1]
            raise SignalError(f"{strategy.name}.signals() gave NaN at {bars.index[row]} for {bars.instruments[col]} "
                              f"after a finite value ({float(prev)!r} earlier); only leading NaNs (warm-up) are "
                              "allowed: fill with 0 (flat) or the previous target")
        values[nan] = 0.0
    outside = ~(np.abs(values) <= 1.0)
    if outside.any():
        row, col = _first(outside)
        raise SignalError(f"{strategy.name}.signals() gave {float(values[row, col])!r} at {bars.index[row]} for "
                          f"{bars.instruments[col]}; expected a target position in [-1, 1]")
    return pd.DataFrame(values, index=bars.close.index, columns=pd.Index(bars.instruments))


def _first(mask: np.ndarray) -> tuple[int, int]:
    """(row, column) of the earliest True in a 2-d mask (earliest bar, then leftmost instrument)."""
    rows = np.flatnonzero(mask.any(axis=1))
    row = int(rows[0])
    return row, int(np.flatnonzero(mask[row])[0])


def compute_targets(strategy: Strategy, bars: Bars) -> pd.DataFrame:
    """The strategy's target positions on ``bars``, validated (see :func:`raw_signals`,
    :func:`targets_from_raw`). ``bars`` must hold exactly the strategy's instruments."""
    check_bars_for(strategy, bars)
    return targets_from_raw(strategy, bars, raw_signals(strategy, bars))


def check_bars_for(strategy: Strategy, bars: Bars) -> None:
    """Refuse bars that are not what the strategy declared (instruments, bar size)."""
    if not isinstance(bars, Bars):
        raise ResearchError(f"expected Bars (tb.Bars.from_store / from_frames), got {type(bars).__name__}")
    if tuple(bars.instruments) != tuple(strategy.instruments):
        raise ResearchError(f"bars hold instruments {list(bars.instruments)} but {strategy.name} trades "
                            f"{list(strategy.instruments)}; use bars.select({list(strategy.instruments)})")
    if bars.bar_seconds != strategy.bar_seconds:
        raise ResearchError(f"bars are {bars.bar_seconds}-second bars but {strategy.name} declares "
                            f"bar_seconds={strategy.bar_seconds}")
