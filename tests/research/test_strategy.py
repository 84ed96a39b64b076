"""Strategy and compute_targets: parameters, copies, and the validation of signals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import tradebook as tb
from tradebook.errors import ResearchError, SignalError
from tradebook.research import Bars, MeanReversion, SmaCross, Strategy, compute_targets


def _bars(n=30, columns=("A", "B")):
    index = pd.date_range("2024-01-02", periods=n, freq="D", tz="UTC")
    rng = np.random.default_rng(1)
    close = pd.DataFrame(100 + rng.normal(size=(n, len(columns))).cumsum(axis=0), index=index, columns=list(columns))
    return Bars.from_frames(open=close, high=close + 1, low=close - 1, close=close, volume=close * 0 + 1000)


class Returns(Strategy):
    """Test strategy whose signals are whatever `make` builds from the bars."""

    instruments = ("A", "B")
    params = {"make": None}

    def signals(self, bars):
        return self.params["make"](bars)


def test_params_defaults_copies_and_errors():
    s = SmaCross(fast=5, instruments=["SPY.ARCX"])
    assert s.params == {"fast": 5, "slow": 100} and s.fast == 5 and s.instruments == ("SPY.ARCX",)
    assert s.name == "sma_cross" and s.bar_seconds == 86_400 and s.window is None
    t = s.with_params(slow=50)
    assert t.params == {"fast": 5, "slow": 50} and s.params["slow"] == 100 and t.instruments == s.instruments
    assert t.key() != s.key() and s.with_params().key() == s.key()
    with pytest.raises(ResearchError, match=r"no parameter\(s\) \['fastest'\].*\['fast', 'slow'\]"):
        SmaCross(fastest=3)
    with pytest.raises(ResearchError, match="fast < slow"):
        s.with_params(fast=200)
    with pytest.raises(AttributeError, match="with_params"):
        s.fast = 3
    s._cache = {}  # private state is allowed
    with pytest.raises(ResearchError, match="no instruments"):
        Returns(instruments=[])
    assert tb.Strategy is Strategy
    assert "fast=5" in repr(s)


def test_default_name_is_snake_case_of_the_class():
    class MyBreakout(Returns):
        pass

    assert MyBreakout().name == "my_breakout"
    assert MyBreakout(name="other").name == "other"


def test_compute_targets_turns_warm_up_nans_into_flat():
    bars = _bars()

    def make(b):
        return (b.close > b.close.rolling(5).mean()).astype(float).where(b.close.rolling(5).count() == 5)

    targets = compute_targets(Returns(make=make), bars)
    assert targets.index.equals(bars.close.index) and list(targets.columns) == ["A", "B"]
    assert (targets.iloc[:4] == 0).all().all()
    assert set(np.unique(targets.to_numpy())) <= {0.0, 1.0}


def test_compute_targets_reorders_columns_and_accepts_bools():
    bars = _bars()
    targets = compute_targets(Returns(make=lambda b: (b.close > 100)[["B", "A"]]), bars)
    assert list(targets.columns) == ["A", "B"]
    assert targets.equals((bars.close > 100).astype(float))


@pytest.mark.parametrize("make, match", [
    (lambda b: b.close["A"], "returned a Series; expected a DataFrame"),
    (lambda b: b.close.iloc[1:] * 0, "returned 29 rows for 30 bars"),
    (lambda b: b.close.shift(1, freq="D") * 0, "differs from the bars' at row 0"),
    (lambda b: b.close[["A"]] * 0, r"missing \['B'\]"),
    (lambda b: b.close.assign(C=0.0) * 0, r"unexpected \['C'\]"),
    (lambda b: b.close.astype(str), "non-numeric"),
])
def test_misaligned_signals_name_the_mismatch(make, match):
    with pytest.raises(SignalError, match=match):
        compute_targets(Returns(make=make), _bars())


def test_bad_values_name_bar_instrument_and_value():
    bars = _bars()

    def late_nan(b):
        out = b.close * 0.0
        out.iloc[10, 1] = np.nan
        return out

    with pytest.raises(SignalError, match=r"NaN at 2024-01-12 00:00:00\+00:00 for B after a finite value"):
        compute_targets(Returns(make=late_nan), bars)

    def too_big(b):
        out = b.close * 0.0
        out.iloc[7, 0] = 1.5
        return out

    with pytest.raises(SignalError, match=r"gave 1.5 at 2024-01-09 00:00:00\+00:00 for A; expected .*\[-1, 1\]"):
        compute_targets(Returns(make=too_big), bars)

    def infinite(b):
        out = b.close * 0.0
        out.iloc[3, 1] = -np.inf
        return out

    with pytest.raises(SignalError, match="gave -inf"):
        compute_targets(Returns(make=infinite), bars)


def test_bars_must_match_the_strategy():
    with pytest.raises(ResearchError, match=r"bars hold instruments \['A', 'B'\] but sma_cross trades"):
        compute_targets(SmaCross(instruments=["SPY.ARCX"]), _bars())


def test_examples_on_bundled_bars(daily_bars):
    sma = compute_targets(SmaCross(), daily_bars)
    assert set(np.unique(sma.to_numpy())) == {0.0, 1.0}
    mr = compute_targets(MeanReversion(), daily_bars)
    # the gate needs trades: several entries a month across the six instruments
    entries = (mr.diff() > 0).to_numpy().sum()
    months = len(daily_bars) / 21
    assert entries / months > 4
    recent = mr.loc["2021-02-01":]
    assert (recent.diff() > 0).to_numpy().sum() >= 8


def test_a_strategy_writing_into_its_bars_does_not_change_them():
    bars = _bars()
    before = bars.close.copy()

    def vandal(b):
        b.close.iloc[:, :] = 0.0
        b.close.fillna(1.0, inplace=True)
        return b.close * 0

    compute_targets(Returns(make=vandal), bars)
    assert bars.close.equals(before)
