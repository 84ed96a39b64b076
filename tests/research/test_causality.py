"""The lookahead and trailing-window checks: they refuse strategies that peek and pass causal ones."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from tradebook.errors import LookaheadError, ResearchError, TrailingWindowError
from tradebook.research import (
    MeanReversion, SmaCross, Strategy, check_lookahead, check_trailing_window, prepare, prepare_sweep,
)
from tradebook.research.causality import clear_cache

from .conftest import DAILY_EQUITIES

THREE = ("SPY.ARCX", "AAPL.XNAS", "BAC.XNYS")


@pytest.fixture(scope="module")
def bars(daily_bars):
    """Three instruments, 2010 on (about 2,800 bars): enough history, quick checks."""
    return daily_bars.select(list(THREE)).iloc(slice(int(np.searchsorted(daily_bars.index, pd.Timestamp(
        "2010-01-01T00:00:00Z"))), None))


@pytest.fixture(autouse=True)
def fresh_cache():
    clear_cache()
    yield


class Rule(Strategy):
    """A strategy whose targets come from `rule(close)`; the rules below are the cases under test."""

    instruments = THREE
    params = {"rule": None}

    def signals(self, bars):
        return self.params["rule"](bars.close.ffill())


def sma_cross(close):
    return (close.rolling(10).mean() > close.rolling(40).mean()).astype(float).where(close.rolling(40).count() == 40)


# -- strategies that peek ---------------------------------------------------------------------------
def next_close(close):
    return (close.shift(-1) > close).astype(float)


def full_sample_normalisation(close):
    z = (close - close.mean()) / close.std()
    return z.clip(-1, 1)


def centred_window(close):
    return (close < close.rolling(21, center=True).mean()).astype(float)


def peek_at_the_end(close):
    """Causal, except on the last three bars handed to it, where it uses the next bar's close."""
    out = sma_cross(close)
    out.iloc[-4:-1] = (close.shift(-1) > close).astype(float).iloc[-4:-1]
    return out


def rare_next_day_jump(close):
    """Long only the day before a rise of more than 3%: rarely in the market, and peeking."""
    return (close.shift(-1) > close * 1.03).astype(float)


@pytest.mark.parametrize("rule", [next_close, full_sample_normalisation, centred_window, peek_at_the_end,
                                  rare_next_day_jump], ids=lambda f: f.__name__)
def test_refuses_strategies_that_peek(rule, bars):
    with pytest.raises(LookaheadError, match=r"Rule\(rule=.*\) looks ahead: with the history cut after "
                                             r"\d{4}-\d\d-\d\d.*\(bar \d+ of \d+\), its signal at \d{4}-.* for "
                                             r"(SPY.ARCX|AAPL.XNAS|BAC.XNYS) is"):
        check_lookahead(Rule(rule=rule), bars)


def test_error_names_the_first_differing_bar(bars):
    with pytest.raises(LookaheadError) as info:
        check_lookahead(Rule(rule=next_close), bars)
    message = str(info.value)
    # with shift(-1) the cut's last bar is the first (and only) one that differs
    cut_after = message.split("cut after ")[1].split(" (bar")[0]
    signal_at = message.split("its signal at ")[1].split(" for ")[0]
    assert cut_after == signal_at


# -- causal strategies it must pass ---------------------------------------------------------------
def rolling_z(close):
    r = close.rolling(20)
    return ((close - r.mean()) / r.std()).clip(-1, 1) * -1


def expanding_z(close):
    e = close.pct_change().expanding(30)
    return ((close.pct_change() - e.mean()) / e.std()).clip(-1, 1)


def ewm_cross(close):
    return np.tanh(close.ewm(span=10).mean() / close.ewm(span=50).mean() - 1.0)


def fft_moving_average(close):
    """A 30-bar moving average by FFT convolution: it differs from the full run by rounding only."""
    k = 30
    values = close.to_numpy()
    n = len(values)
    size = 1 << int(np.ceil(np.log2(n + k)))
    kernel = np.fft.rfft(np.ones(k) / k, size)
    out = np.empty_like(values)
    for j in range(values.shape[1]):
        out[:, j] = np.fft.irfft(np.fft.rfft(np.nan_to_num(values[:, j]), size) * kernel, size)[:n]
    ma = pd.DataFrame(out, index=close.index, columns=close.columns)
    ma.iloc[: k - 1] = np.nan  # warm-up
    return ((close / ma - 1.0) * 10).clip(-1, 1)


@pytest.mark.parametrize("rule", [sma_cross, rolling_z, expanding_z, ewm_cross, fft_moving_average],
                         ids=lambda f: f.__name__)
def test_passes_causal_strategies(rule, bars):
    report = check_lookahead(Rule(rule=rule), bars)
    assert report.ok and len(report.cuts) == 11 and report.cuts[-1] == len(bars) - 1


def test_fft_differs_by_rounding_only(bars):
    """Control: the FFT average does differ from the full run, so the tolerance is what passes it."""
    report = check_lookahead(Rule(rule=fft_moving_average), bars)
    assert 0 < report.max_abs_diff < 1e-9
    with pytest.raises(LookaheadError):
        check_lookahead(Rule(rule=fft_moving_average), bars, rtol=0, atol=0)


@pytest.mark.parametrize("strategy", [SmaCross(), MeanReversion()], ids=["SmaCross", "MeanReversion"])
def test_bundled_examples_pass_both_checks(strategy, daily_bars):
    prepared = prepare(strategy, daily_bars)
    assert prepared.lookahead.ok and prepared.trailing.ok
    s, targets, window = prepared
    assert s is strategy and targets.shape == daily_bars.close.shape
    assert window >= strategy.params.get("slow", strategy.params.get("lookback"))


# -- trailing window --------------------------------------------------------------------------------
def test_trailing_window_is_found_by_doubling(bars):
    report = check_trailing_window(Rule(rule=sma_cross), bars)
    assert report.ok and report.window == 64  # 40 bars of warm-up: 32 fails, 64 reproduces
    assert [w for w, _ in report.tried] == [1, 2, 4, 8, 16, 32, 64]


def test_short_window_is_flagged_with_the_length_needed(bars):
    report = check_trailing_window(Rule(rule=sma_cross), bars, window=20)
    assert not report.ok and report.requested == 20 and report.window == 40
    assert "too short" in report.message and "needs 40 bars" in report.message
    strategy = Rule(rule=sma_cross, window=20)
    with pytest.warns(UserWarning, match="needs 40 bars"):
        prepared = prepare(strategy, bars)
    assert prepared.window == 40


def test_expanding_statistics_need_the_whole_history(bars, daily_bars):
    with pytest.raises(TrailingWindowError,
                       match=r"no trailing window up to \d+ bars \(2830 bars given\) reproduces .*expanding"):
        check_trailing_window(Rule(rule=expanding_z), bars, window=60)
    # drawdown from the running maximum: BAC never regained its 2006 high, so only the whole history will do
    drawdown = Rule(rule=lambda c: (c / c.cummax() - 1.0).clip(-1, 0))
    with pytest.raises(TrailingWindowError):
        prepare(drawdown, daily_bars.select(list(THREE)))


def test_an_adequate_window_passes_as_asked(bars):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prepared = prepare(Rule(rule=rolling_z, window=25), bars)
    assert prepared.window == 25 and prepared.trailing.tried == ((25, True),)


# -- sweeps and caching -----------------------------------------------------------------------------
class Lagged(Strategy):
    instruments = THREE
    params = {"lag": 1}

    def signals(self, bars):
        close = bars.close.ffill()
        return (close.shift(self.params["lag"]) > close.rolling(20).mean()).astype(float)


def test_prepare_sweep_checks_every_trial(bars):
    trials = [Lagged(lag=lag) for lag in (1, 2, -1, 3, 4)]
    with pytest.raises(LookaheadError, match=r"Lagged\(lag=-1"):
        prepare_sweep(trials, bars)
    ok = prepare_sweep([Lagged(lag=lag) for lag in (1, 2, 3, 4)], bars)
    assert [len(p.lookahead.cuts) for p in ok] == [11, 1, 1, 11]
    assert all(p.lookahead.cuts[0] <= len(bars) // 2 for p in ok[1:3])
    assert all(p.window is None and p.targets.shape == bars.close.shape for p in ok)


def test_results_are_cached_per_strategy_and_bars(bars):
    first = check_lookahead(SmaCross(instruments=THREE), bars)
    assert check_lookahead(SmaCross(instruments=THREE), bars) is first
    assert check_lookahead(SmaCross(fast=10, instruments=THREE), bars) is not first
    assert check_lookahead(SmaCross(instruments=THREE), bars.iloc(slice(1, None))) is not first


def test_bad_requests(bars):
    with pytest.raises(ResearchError, match="bars hold instruments"):
        check_lookahead(SmaCross(), bars)
    with pytest.raises(ResearchError, match="at least 2 bars"):
        check_lookahead(Rule(rule=sma_cross), bars.head(1))
    with pytest.raises(ResearchError, match="expected a tb.Strategy"):
        prepare("sma", bars)


# -- timing: a target computed at a bar's close acts at the next bar's open -------------------------------
class FromDate(Strategy):
    """Flat until the bar starting at `day`, long from that bar's close on (causal: it reads only the index)."""

    instruments = ("SPY.ARCX",)
    params = {"day": "2020-06-01"}

    def signals(self, bars):
        on = bars.close.index >= pd.Timestamp(self.params["day"], tz="America/New_York")
        return pd.DataFrame(on[:, None].astype(float), index=bars.close.index, columns=bars.close.columns)


def test_signal_at_a_close_is_filled_no_earlier_than_the_next_bar(daily_bars):
    backtest = pytest.importorskip("tradebook.research.backtest")
    bars = daily_bars.select(["SPY.ARCX"]).iloc(slice(-300, None))
    result = backtest.backtest(FromDate(), bars)
    t = int(np.searchsorted(bars.index, pd.Timestamp("2020-06-01", tz="America/New_York")))
    first = result.fills.sort_values("ts_ns").iloc[0]
    assert first["side"] == "buy"
    assert int(first["ts_ns"]) >= int(bars.end_ns[t])  # not before the signal's bar has closed
    assert int(first["ts_ns"]) < int(bars.end_ns[t + 1])  # and within the next bar
    assert float(first["price"]) == pytest.approx(float(bars.open.iloc[t + 1, 0]))  # at its open (no costs)


def test_window_hints_from_other_parameters_give_the_same_windows(bars):
    grid = [dict(fast=f, slow=s) for f, s in ((5, 20), (10, 150), (20, 60), (3, 8), (30, 250))]
    fresh = []
    for params in grid:
        clear_cache()
        fresh.append(check_trailing_window(SmaCross(instruments=THREE, **params), bars).window)
    clear_cache()
    reports = [check_trailing_window(SmaCross(instruments=THREE, **params), bars) for params in grid]
    assert [r.window for r in reports] == fresh == [32, 256, 64, 8, 256]
    assert len(reports[2].tried) < 7  # started from the previous window, not from 1


def test_short_history_with_a_window_asked_for(bars):
    """A year of bars cannot show a 200-bar average's window by doubling (half the bars is the limit), but a
    window asked for is checked at the bars after it."""
    year = bars.iloc(slice(-252, None))
    slow = Rule(rule=lambda c: (c.rolling(50).mean() > c.rolling(200).mean()).astype(float)
                .where(c.rolling(200).count() == 200))
    with pytest.raises(TrailingWindowError, match="set the strategy's window="):
        prepare(slow, year)
    prepared = prepare(Rule(rule=slow.params["rule"], window=200), year)
    assert prepared.window == 200 and prepared.trailing.ok
    assert min(prepared.trailing.points) >= 200
    with pytest.raises(TrailingWindowError):  # and a window too short for it is not made to pass
        prepare(Rule(rule=slow.params["rule"], window=150), year)
