"""Staleness: a sampled feed's snapshot age widens cost intervals by the mid's diffusion; an event feed's does not."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tradebook.data import load_bundled
from tradebook.data.catalog import BUNDLED_FILES
from tradebook.errors import DataError
from tradebook.sim.fill_model import CostCurve, FillModel
from tradebook.sim.staleness import (
    MIN_GAPS,
    NOMINAL_Z,
    POISSON_GAP_SPREAD,
    sampled_feed,
    stale_age_ns,
    staleness_widening_bps,
    sweep_trade_shift_bps,
    trade_shift,
)

MS = 1_000_000


def _quotes(ts: np.ndarray) -> pd.DataFrame:
    n = len(ts)
    return pd.DataFrame({"ts_ns": np.asarray(ts, dtype=np.int64), "bid_px": np.full(n, 99.0),
                         "ask_px": np.full(n, 101.0), "bid_sz": np.ones(n), "ask_sz": np.ones(n)})


def test_poisson_gap_spread_is_the_exponential_s():
    rng = np.random.default_rng(1)
    gaps = rng.exponential(1.0, 400_000)
    p10, p50, p90 = np.quantile(gaps, (0.1, 0.5, 0.9))
    assert (p90 - p10) / p50 == pytest.approx(POISSON_GAP_SPREAD, rel=0.02)


def test_snapshots_every_100ms_with_jitter_are_a_sampled_feed():
    rng = np.random.default_rng(2)
    ts = np.cumsum(100 * MS + rng.integers(-20 * MS, 20 * MS, 300))
    when = ts[-1] + 30 * MS
    assert sampled_feed(ts, np.array([when])).tolist() == [True]
    quotes = _quotes(ts)
    assert stale_age_ns(quotes, np.array([when])).tolist() == [30 * MS]


def test_a_clustered_stream_of_book_events_is_an_event_feed():
    # bursts of events microseconds apart between pauses, as book events arrive (more dispersed than Poisson)
    rng = np.random.default_rng(3)
    bursts = np.cumsum(np.where(rng.random(300) < 0.8, rng.integers(1_000, 10_000, 300),
                                rng.integers(100 * MS, 2_000 * MS, 300)))
    when = np.array([bursts[-1] + 40 * MS])
    assert sampled_feed(bursts, when).tolist() == [False]
    assert stale_age_ns(_quotes(bursts), when).tolist() == [0]


def test_too_few_quotes_before_a_decision_are_not_judged_and_stamps_backwards_are_refused():
    ts = np.arange(1, MIN_GAPS + 1) * 100 * MS  # MIN_GAPS - 1 gaps
    assert sampled_feed(ts, np.array([ts[-1] + 1])).tolist() == [False]
    assert sampled_feed(np.r_[ts, ts[-1] + 100 * MS], np.array([ts[-1] + 100 * MS + 1])).tolist() == [True]
    with pytest.raises(DataError, match="backwards"):
        sampled_feed(ts[::-1], np.array([0]))
    with pytest.raises(DataError, match="ts_ns"):
        stale_age_ns(pd.DataFrame({"bid_px": [1.0]}), np.array([0]))


def test_only_quotes_before_the_decision_judge_the_feed():
    # a regular sampler, then a burst of events: a decision inside the sampler's stretch sees the sampler
    rng = np.random.default_rng(4)
    regular = np.arange(1, 301) * 100 * MS
    burst = regular[-1] + np.cumsum(np.where(rng.random(300) < 0.8, rng.integers(1_000, 10_000, 300),
                                             rng.integers(100 * MS, 2_000 * MS, 300)))
    ts = np.r_[regular, burst]
    verdicts = sampled_feed(ts, np.array([regular[150] + 5 * MS, burst[-1] + 5 * MS]))
    assert verdicts.tolist() == [True, False]


def test_widening_is_the_diffusion_beyond_the_fit_s_own_staleness():
    widening = staleness_widening_bps(np.array([0, 50 * MS, 100 * MS, 100 * MS]), np.array([2.0, 2.0, 2.0, np.nan]),
                                      fitted_stale_ns=50 * MS)
    assert widening[:2].tolist() == [0.0, 0.0]
    assert widening[2] == pytest.approx(NOMINAL_Z * 2.0 * np.sqrt(0.05))
    assert widening[3] == 0.0


def _model(fitted_stale_ns: float = 0.0) -> FillModel:
    curve = CostCurve(edges=(0.0, 1.0, np.inf), q05=(0.5, 0.5), q50=(1.0, 1.0), q95=(3.0, 3.0), counts=(10, 10))
    return FillModel("X.TEST", 0.01, curve, fitted_stale_ns=fitted_stale_ns)


def test_model_intervals_widen_in_quadrature_and_the_median_stays():
    model = _model()
    size, hs, touch = np.array([0.5]), np.array([2.0]), np.array([1.0])
    vol, stale = np.array([4.0]), np.array([250 * MS])
    d = NOMINAL_Z * 4.0 * 0.5
    assert model.marketable_cost_bps(size, hs, touch, 0.5, vol, stale) == pytest.approx([2.0])
    assert model.marketable_cost_bps(size, hs, touch, 0.95, vol, stale) == pytest.approx([2.0 + np.hypot(4.0, d)])
    assert model.marketable_cost_bps(size, hs, touch, 0.05, vol, stale) == pytest.approx([2.0 - np.hypot(1.0, d)])
    # an event feed (staleness 0) and a fit that held as much staleness give the fitted interval
    assert model.marketable_cost_bps(size, hs, touch, 0.95, vol, np.array([0])) == pytest.approx([6.0])
    held = _model(fitted_stale_ns=250 * MS)
    assert held.marketable_cost_bps(size, hs, touch, 0.95, vol, stale) == pytest.approx([6.0])
    with pytest.raises(DataError, match="recent_vol_bps"):
        model.marketable_cost_bps(size, hs, touch, 0.95, stale_ns=stale)


def test_fitted_staleness_is_stored_and_an_earlier_model_without_it_loads_as_an_event_feed_fit():
    model = _model(fitted_stale_ns=42 * MS)
    assert FillModel.from_json(model.to_json()).fitted_stale_ns == 42 * MS
    raw = json.loads(model.to_json())
    del raw["fitted_stale_ns"]
    assert FillModel.from_json(json.dumps(raw)).fitted_stale_ns == 0.0


def test_the_bundled_feeds_the_2021_snapshots_sampled_the_2024_book_ticker_not():
    def quotes_of(name: str) -> pd.DataFrame:
        entry = next(e for e in BUNDLED_FILES if name in e.path and "quotes" in e.path)
        return load_bundled(entry).frame

    for name, sampled in (("BTCUSDT_20210108", True), ("btcusdt_20240808", False)):
        quotes = quotes_of(name)
        ts = quotes["ts_ns"].to_numpy(np.int64)
        when = np.sort(np.random.default_rng(0).integers(ts[0], ts[-1], 500))
        share = sampled_feed(ts, when).mean()
        assert (share > 0.9) if sampled else (share < 0.01), (name, share)


def _trades(ts: list[int], price: list[float], venue: list[str] | None = None) -> pd.DataFrame:
    frame = pd.DataFrame({"ts_ns": np.asarray(ts, dtype=np.int64), "price": price, "size": np.ones(len(ts))})
    if venue is not None:
        frame["venue"] = venue
    return frame


def test_prints_since_the_quote_move_it_only_when_they_print_beyond_it():
    quotes = _quotes(np.array([0, 100 * MS]))  # bid 99, ask 101
    trades = _trades([50 * MS, 110 * MS, 120 * MS, 130 * MS, 140 * MS], [105.0, 101.5, 100.0, 98.0, 97.0],
                     venue=["Q", "Q", "Q", "Q", "D"])
    when = np.array([105 * MS, 115 * MS, 125 * MS, 135 * MS, 145 * MS, 130 * MS])
    shift = trade_shift(quotes, trades, when)
    # before any print since the 100 ms quote (the 50 ms print is older than it); above the ask; inside;
    # below the bid; an off-exchange print does not count (the 130 ms one stands); a print at the time itself
    # is not before it (the 120 ms one stands, inside)
    assert shift.tolist() == [0.0, 0.5, 0.0, -1.0, -1.0, 0.0]
    assert trade_shift(quotes, None, when).tolist() == [0.0] * 6
    with pytest.raises(DataError, match="price"):
        trade_shift(quotes, pd.DataFrame({"ts_ns": [1]}), when)


def test_sweep_shift_is_in_bps_against_the_order_and_moves_every_quantile():
    quotes = _quotes(np.array([0]))
    trades = _trades([10 * MS], [102.0])
    sweeps = pd.DataFrame({"ts_ns": [20 * MS, 20 * MS], "side": [1, -1], "mid": [100.0, 100.0]})
    shift = sweep_trade_shift_bps(sweeps, quotes, trades)
    assert shift.tolist() == pytest.approx([100.0, -100.0])  # the ask moved up 1: a buy pays it, a sell gains
    with pytest.raises(DataError, match="side"):
        sweep_trade_shift_bps(sweeps.drop(columns="side"), quotes, trades)
    model = _model()
    size, hs, touch = np.array([0.5, 0.5]), np.array([2.0, 2.0]), np.array([1.0, 1.0])
    for q in (0.05, 0.5, 0.95):
        plain = model.marketable_cost_bps(size, hs, touch, q)
        assert model.marketable_cost_bps(size, hs, touch, q, trade_shift_bps=shift) == pytest.approx(plain + shift)
