"""Bars: built from the store (split-adjusted) or from frames (validated), sliced causally."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import tradebook as tb
from tradebook.errors import ResearchError
from tradebook.research import Bars
from tradebook.model import to_ns

from .conftest import DAILY_EQUITIES


def _frames(n=5, columns=("A", "B"), start="2024-01-02"):
    index = pd.date_range(start, periods=n, freq="D", tz="UTC")
    base = pd.DataFrame(np.arange(n * len(columns), dtype=float).reshape(n, len(columns)) + 10.0,
                        index=index, columns=list(columns))
    return {"open": base, "high": base + 1, "low": base - 1, "close": base + 0.5, "volume": base * 100}


def test_from_store_joins_instruments_and_adjusts_splits(daily_store):
    bars = Bars.from_store(daily_store, DAILY_EQUITIES)
    assert bars.instruments == DAILY_EQUITIES
    assert str(bars.index.tz) == "UTC" and bars.index.is_monotonic_increasing and bars.index.is_unique
    # rows where ANY instrument traded: QQQ starts 1999-03-10, so it is NaN before while SPY is not
    assert np.isnan(bars.close.loc[:"1999-03-09", "QQQ.XNAS"]).all()
    assert bars.close.loc[:"1999-03-09", "SPY.ARCX"].notna().all()
    # AAPL's 4:1 split on 2020-08-31: raw closes gap by ~4x, adjusted ones do not
    raw = Bars.from_store(daily_store, ["AAPL.XNAS"], adjusted=False)
    raw_jump = raw.close["AAPL.XNAS"].loc["2020-08-28":"2020-09-01"].pct_change().abs().max()
    adj_jump = bars.close["AAPL.XNAS"].loc["2020-08-28":"2020-09-01"].pct_change().abs().max()
    assert raw_jump > 0.7 and adj_jump < 0.1
    # the most recent prices are raw (factor 1 after the last split) and volume scales inversely
    assert bars.close["AAPL.XNAS"].iloc[-1] == raw.close["AAPL.XNAS"].iloc[-1]
    first = raw.index[0]
    ratio = raw.close.loc[first, "AAPL.XNAS"] / bars.close.loc[first, "AAPL.XNAS"]
    assert bars.volume.loc[first, "AAPL.XNAS"] == pytest.approx(raw.volume.loc[first, "AAPL.XNAS"] * ratio)


def test_from_store_window_is_half_open_on_bar_starts(daily_store):
    bars = Bars.from_store(daily_store, ["SPY.ARCX"], start="2021-02-01T00:00:00Z", end="2021-03-01T00:00:00Z")
    assert bars.index[0] == pd.Timestamp("2021-02-01T05:00:00Z")
    assert bars.index[-1] == pd.Timestamp("2021-02-26T05:00:00Z")
    assert len(bars) == 19


def test_from_store_unknown_or_empty_range_is_an_error(daily_store):
    with pytest.raises(ResearchError, match="no 86400-second bars of SPY.ARCX"):
        Bars.from_store(daily_store, ["SPY.ARCX"], start="2030-01-01T00:00:00Z")
    with pytest.raises(ResearchError, match="repeat"):
        Bars.from_store(daily_store, ["SPY.ARCX", "SPY.ARCX"])


def test_from_frames_validates():
    good = _frames()
    bars = Bars.from_frames(**good)
    assert len(bars) == 5 and bars.instruments == ("A", "B")
    naive = {k: v.tz_localize(None) for k, v in good.items()}
    with pytest.raises(ResearchError, match="tz-aware"):
        Bars.from_frames(**naive)
    unsorted = {k: v.iloc[::-1] for k, v in good.items()}
    with pytest.raises(ResearchError, match="not sorted"):
        Bars.from_frames(**unsorted)
    dup = {k: pd.concat([v, v.iloc[[0]]]) for k, v in good.items()}
    with pytest.raises(ResearchError, match="repeats the bar start"):
        Bars.from_frames(**dup)
    other = dict(good, volume=good["volume"][["B", "A"]])
    with pytest.raises(ResearchError, match="volume's columns"):
        Bars.from_frames(**other)
    shorter = dict(good, high=good["high"].iloc[:4])
    with pytest.raises(ResearchError, match="high's index differs"):
        Bars.from_frames(**shorter)
    with pytest.raises(ResearchError, match="bar_seconds"):
        Bars.from_frames(**good, bar_seconds=0)


def test_from_frames_converts_the_index_to_utc():
    frames = {k: v.tz_convert("America/New_York") for k, v in _frames().items()}
    assert str(Bars.from_frames(**frames).index.tz) == "UTC"


def test_slices_and_causal_until():
    bars = Bars.from_frames(**_frames(n=10), bar_seconds=86_400)
    assert len(bars.head(3)) == 3 and len(bars.tail(4)) == 4 and len(bars.iloc(slice(2, 5))) == 3
    assert bars.tail(4).index[0] == bars.index[6]
    assert (bars.end_ns - bars.start_ns == 86_400 * 10**9).all()
    # until(t): bars whose END <= t; a bar whose end is one nanosecond later is not complete yet
    t = int(bars.end_ns[3])
    assert len(bars.until(t)) == 4
    assert len(bars.until(t - 1)) == 3
    assert len(bars.until(to_ns("2000-01-01T00:00:00Z"))) == 0
    # slicing never changes the original
    cut = bars.until(t)
    assert len(bars) == 10 and cut.close.equals(bars.close.iloc[:4])


def test_fingerprint_tracks_content():
    a = Bars.from_frames(**_frames())
    b = Bars.from_frames(**_frames())
    frames = _frames()
    frames["close"].iloc[2, 1] += 1e-9
    c = Bars.from_frames(**frames)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def test_top_level_names():
    assert tb.Bars is Bars
    assert tb.research.Bars is Bars


def test_research_names_stay_light(run_python):
    """tb.research's core names import neither vectorbt, arch, scipy nor numba."""
    code = ("import sys, json, tradebook as tb\n"
            "tb.Strategy, tb.Bars, tb.research.prepare, tb.research.probability_of_backtest_overfitting\n"
            "tb.research.MeanReversion, tb.research.deflated_sharpe_ratio_of\n"
            "heavy = ('vectorbt', 'arch', 'scipy', 'numba')\n"
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules if m.split('.')[0] in heavy})))\n")
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    for name in tb.research.__all__:
        assert name in dir(tb.research)


def test_adjustment_follows_the_factor_rule(daily_store):
    """data/MANIFEST.md: with both factors SPY's first close 97.36 becomes 63.9325; every split gap goes away."""
    total = Bars.from_store(daily_store, ["SPY.ARCX"], dividends=True)
    assert total.close.iloc[0, 0] == pytest.approx(63.9325, abs=5e-4)
    raw = Bars.from_store(daily_store, DAILY_EQUITIES, adjusted=False)
    split = Bars.from_store(daily_store, DAILY_EQUITIES)
    gap = {}
    for name, bars in (("raw", raw), ("split", split)):
        overnight = bars.open / bars.close.ffill().shift(1)
        gap[name] = overnight.min()
    # raw: the splits (AAPL's 7:1 in 2014 and 4:1 in 2020, IBM, BAC, QQQ, IWM 2:1) halve the open or worse
    assert (gap["raw"].drop("SPY.ARCX") < 0.51).all()
    # adjusted: the deepest overnight drop left is AAPL's real 2000-09-29 fall (0.53)
    assert (gap["split"] > 0.52).all()
