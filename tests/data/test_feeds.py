"""Replay feeds: time order across instruments, resumable on the same grid, paced, bars as labelled quotes."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from tradebook.data import load_bundled
from tradebook.data.feeds import ReplayFeed, quotes_from_bars
from tradebook.errors import DataError

S = 1_000_000_000


def _quotes(ts: list[int], mid: float = 100.0) -> pd.DataFrame:
    n = len(ts)
    return pd.DataFrame({"ts_ns": np.array(ts, dtype=np.int64), "bid_px": np.full(n, mid - 0.01),
                         "ask_px": np.full(n, mid + 0.01), "bid_sz": np.ones(n), "ask_sz": np.ones(n)})


def test_batches_cover_every_row_once_in_time_order():
    feed = ReplayFeed({"A": _quotes([0, 1, S, 3 * S + 5]), "B": _quotes([S // 2, 2 * S])},
                      {"A": pd.DataFrame({"ts_ns": [2, S + 1], "price": [100.0, 100.01], "size": [1.0, 2.0],
                                          "aggressor_side": ["BUY", "SELL"]})})
    batches = list(feed.batches())
    assert [(b.start_ns, b.end_ns) for b in batches] == [(0, S), (S, 2 * S), (2 * S, 3 * S), (3 * S, 3 * S + 6)]
    assert batches[0].quotes["A"].ts_ns.tolist() == [0, 1] and batches[0].quotes["B"].ts_ns.tolist() == [S // 2]
    assert batches[1].trades["A"].aggressor.tolist() == [-1]
    assert "A" not in batches[2].quotes and batches[2].quotes["B"].ts_ns.tolist() == [2 * S]
    assert batches[3].last_quote("A")[0] == 3 * S + 5 and batches[3].last_quote("B") is None
    total = sum(len(q) for b in batches for q in b.quotes.values())
    assert total == 6


def test_resume_cuts_batches_where_the_first_run_did():
    quotes = load_bundled("dukascopy_EURUSD_20260713T12_ticks.csv.gz").frame
    feed = ReplayFeed({"EURUSD.DUKASCOPY": quotes}, step_ns=10 * S)
    full = list(feed.batches())
    resume_at = full[7].end_ns
    resumed = list(feed.batches(from_ns=resume_at))
    assert [(b.start_ns, b.end_ns) for b in resumed] == [(b.start_ns, b.end_ns) for b in full[8:]]
    seen = sum(len(q) for b in full[:8] for q in b.quotes.values()) + sum(
        len(q) for b in resumed for q in b.quotes.values())
    assert seen == len(quotes)


def test_speed_paces_against_the_wall_clock():
    feed = ReplayFeed({"A": _quotes([0, 2 * S])}, speed=20.0)  # 2 s of market time at 20x: ~0.1 s
    started = time.monotonic()
    list(feed.batches())
    assert time.monotonic() - started >= 0.09


def test_bars_become_labelled_quotes():
    bars = load_bundled("spy_trade.csv.gz")
    quotes = quotes_from_bars(bars.frame, bar_ns=bars.bar_ns, spread_bps=1.0, top_size=500.0)
    assert quotes["synthetic"].all()
    assert (quotes["ts_ns"] == bars.frame["ts_ns"] + 60 * S).all()
    mid = (quotes["bid_px"] + quotes["ask_px"]) / 2
    np.testing.assert_allclose(mid, bars.frame["close"])
    np.testing.assert_allclose((quotes["ask_px"] - quotes["bid_px"]) / mid * 1e4, 1.0)
    feed = ReplayFeed({"SPY.ARCX": quotes}, synthetic={"SPY.ARCX"}, step_ns=3600 * S)
    assert next(iter(feed.batches())).synthetic == frozenset({"SPY.ARCX"})


@pytest.mark.parametrize("kwargs, message", [
    ({"quotes": {}}, "needs quotes"),
    ({"quotes": {"A": _quotes([])}}, "at least one quote"),
    ({"quotes": {"A": _quotes([5, 1])}}, "goes backwards"),
    ({"quotes": {"A": _quotes([1])}, "trades": {"B": pd.DataFrame({"ts_ns": [1], "price": [1.0], "size": [1.0]})}},
     "without quotes"),
    ({"quotes": {"A": _quotes([1])}, "speed": 0}, "speed"),
    ({"quotes": {"A": _quotes([1])}, "step_ns": 0}, "step_ns"),
])
def test_bad_feeds_are_refused(kwargs, message):
    with pytest.raises(DataError, match=message):
        ReplayFeed(**kwargs)


def test_bad_bars_are_refused():
    bars = pd.DataFrame({"ts_ns": [0], "close": [100.0]})
    with pytest.raises(DataError, match="top_size"):
        quotes_from_bars(bars, bar_ns=60 * S, spread_bps=1.0, top_size=0.0)
    with pytest.raises(DataError, match="spread_bps"):
        quotes_from_bars(bars, bar_ns=60 * S, spread_bps=np.nan, top_size=1.0)


def test_quiet_stretches_pass_as_one_batch_on_the_grid():
    day = 86_400 * S
    quotes = _quotes([0, 1, 3 * day + 5, 3 * day + S + 7])  # a long weekend between two busy seconds
    batches = list(ReplayFeed({"A": quotes}).batches())
    assert [(b.start_ns, b.end_ns) for b in batches] == [(0, S), (S, 3 * day), (3 * day, 3 * day + S),
                                                          (3 * day + S, 3 * day + S + 8)]
    assert not batches[1].quotes  # the weekend: time passes, nothing happens
    every = list(ReplayFeed({"A": quotes}, skip_idle=False).batches())
    assert len(every) == 3 * 86_400 + 2
    with pytest.raises(DataError, match="idle_ns"):
        ReplayFeed({"A": quotes}, idle_ns=S)
