"""Spread profiles and completion models: exact time weights on hand-built quotes, sanity on the real feeds."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tradebook.data import load_bundled
from tradebook.errors import DataError
from tradebook.model.time import to_ns
from tradebook.sim.profile import (
    CompletionModel,
    SpreadProfile,
    fit_completion_model,
    fit_spread_profile,
    realised_vol_bps,
)

S = 1_000_000_000
T0 = to_ns("2024-01-01T00:00:00Z")
BTC = "binance_spot_btcusdt_20240808T2354-20240809T0005_"
FEEDS = {
    "BTCUSDT.BINANCE": (BTC + "l1_quotes.csv.gz", BTC + "trades.csv.gz"),
    "IBM.XNYS": ("algoseek_IBM_20131007_l1_nbbo.csv.gz", "algoseek_IBM_20131007_trades.csv.gz"),
    "ESH4.GLBX": ("cme_ESH4_book5_from_mbo_20231225.csv.gz", "cme_ESH4_trades_from_mbo_20231225.csv.gz"),
    "ESU4.GLBX": ("cme_ESU4_mbp1_20240701T2358-20240702T0002.csv.gz",
                  "cme_ESU4_trades_20240701T2358-20240702T0002.csv.gz"),
    "EURUSD.DUKASCOPY": ("dukascopy_EURUSD_20260713T12_ticks.csv.gz", None),
}


def quotes(rows: list[tuple]) -> pd.DataFrame:
    """(seconds after T0, bid, ask, bid_sz, ask_sz) rows as an L1 frame."""
    frame = pd.DataFrame(rows, columns=["t", "bid_px", "ask_px", "bid_sz", "ask_sz"])
    frame.insert(0, "ts_ns", (T0 + np.round(frame.pop("t") * S)).astype(np.int64))
    return frame


# Three 1-tick quotes held 1 s each, then a 3-tick quote held 4 s; the last row has no known end.
# Counting messages, the median spread would be 1 tick; by time in force it is 3 ticks.
HAND = quotes([
    (0.0, 100.00, 100.01, 1.0, 2.0),
    (1.0, 100.00, 100.01, 3.0, 4.0),
    (2.0, 100.00, 100.01, 5.0, 6.0),
    (3.0, 100.00, 100.03, 7.0, 8.0),
    (7.0, 100.00, 100.05, 100.0, 100.0),
])


def test_spread_profile_is_time_weighted():
    p = fit_spread_profile(HAND, "BTCUSDT.BINANCE", bucket_minutes=30)
    overall = p.table().query("bucket == -1 and regime == -1").iloc[0]
    assert overall["n_quotes"] == 4 and overall["time_s"] == 7.0
    # spread ticks weighted 1,1,1 (1 tick) and 4 (3 ticks): 5% -> 1 tick, median and 95% -> 3 ticks
    assert (overall["spread_ticks_q05"], overall["spread_ticks_q50"], overall["spread_ticks_q95"]) == \
        pytest.approx((1.0, 3.0, 3.0), abs=1e-9)
    assert overall["spread_bps_q50"] == pytest.approx(0.03 / 100.015 * 1e4, rel=1e-12)
    # touch sizes of both sides: 1..6 weighted 1 s each, 7 and 8 weighted 4 s each (total 14)
    assert (overall["top_size_q05"], overall["top_size_q50"], overall["top_size_q95"]) == (1.0, 7.0, 8.0)
    # seven seconds of data hold no full minute of volatility: no regimes, every lookup falls back
    assert np.isnan(p.vol_edges).all() and set(p.regime) == {-1}
    np.testing.assert_allclose(p.expected_spread_bps(np.array([T0, T0 + 5 * S]), np.array([np.nan, 3.0])),
                               0.03 / 100.015 * 1e4, rtol=1e-12)


def test_quote_time_is_split_at_bucket_boundaries_and_bad_quotes_count_nothing():
    frame = quotes([
        (30.0, 100.00, 100.02, 1.0, 1.0),  # in force 30 s in minute 0, 30 s in minute 1
        (90.0, 100.02, 100.00, 1.0, 1.0),  # crossed: ends the quote before it, counts for nothing
        (100.0, 100.00, 100.01, 2.0, 2.0),  # 20 s, minute 1
        (120.0, 100.00, 100.01, 2.0, 2.0),
    ])
    table = fit_spread_profile(frame, "BTCUSDT.BINANCE", bucket_minutes=1).table()
    by_bucket = table[table["regime"] == -1].set_index("bucket")
    assert by_bucket.loc[0, "time_s"] == 30.0 and by_bucket.loc[1, "time_s"] == 50.0
    assert by_bucket.loc[0, "spread_ticks_q50"] == pytest.approx(2.0)
    # minute 1: 2 ticks for 30 s, 1 tick for 20 s -> median 2 ticks, 5% 1 tick
    assert by_bucket.loc[1, ["spread_ticks_q05", "spread_ticks_q50"]].tolist() == pytest.approx([1.0, 2.0])
    assert by_bucket.loc[0, "bucket_start_utc"] == "00:00" and by_bucket.loc[1, "bucket_start_utc"] == "00:01"


def test_completion_model_on_hand_built_quotes_and_trades():
    # ask size in force: 10 for 10 s, then 2 for 0.5 s after a buy took it, then 10 again
    frame = quotes([
        (0.0, 100.00, 100.01, 10.0, 10.0),
        (10.0, 100.00, 100.01, 10.0, 2.0),
        (10.5, 100.00, 100.01, 10.0, 10.0),
        (20.0, 100.00, 100.01, 10.0, 10.0),
    ])
    trades = pd.DataFrame({"ts_ns": [T0 + 10 * S], "price": [100.01], "size": [8.0], "aggressor_side": ["BUY"]})
    m = fit_completion_model(frame, trades, "BTCUSDT.BINANCE")
    assert m.source == "trades" and m.n_trades == 1 and m.n_depletions == 1
    assert m.fill_size == 10.0 and m.refill_median_ns == 0.5 * S
    assert m.volume_per_s_all == pytest.approx(8.0 / 20.0)
    assert m.adv_proxy == pytest.approx(0.4 * 86_400)
    # 35 = four fills of a touch; at 10% of 0.4/s it takes 35 / 0.04 s, far above 3 refills
    assert m.partial_fills(35.0).tolist() == [4]
    assert m.time_to_complete_ns(35.0, participation=0.1)[0] == pytest.approx(35 / 0.04 * S)
    assert m.time_to_complete_ns(35.0, participation=1.0, ts_ns=T0)[0] == pytest.approx(35 / 0.4 * S)
    assert m.size_over_adv(np.array([34_560.0])).tolist() == pytest.approx([1.0])


@pytest.fixture(scope="module")
def real() -> dict[str, tuple[SpreadProfile, CompletionModel]]:
    out = {}
    for instrument, (quote_file, trade_file) in FEEDS.items():
        q = load_bundled(quote_file).frame
        t = load_bundled(trade_file).frame if trade_file else None
        out[instrument] = (fit_spread_profile(q, instrument), fit_completion_model(q, t, instrument))
    return out


def test_real_spread_profiles(real):
    for instrument, (profile, completion) in real.items():
        overall = profile.table().query("bucket == -1").set_index("regime_name")
        print(f"\n{instrument}: vol terciles {np.round(profile.vol_edges, 3)} bps/min, ATR(1m) "
              f"{profile.atr_1m_bps:.3f} bps; refill median {completion.refill_median_ns / 1e9:.3f} s, volume "
              f"{completion.volume_per_s_all:.4g}/s ({completion.source})\n"
              + overall[["n_quotes", "time_s", "spread_ticks_q50", "spread_bps_q05", "spread_bps_q50",
                         "spread_bps_q95", "top_size_q50", "vol_bps_q50"]].to_string())
        assert (profile.vol_edges[0] < profile.vol_edges[1]) and profile.atr_1m_bps > 0
    btc = real["BTCUSDT.BINANCE"][0].table().query("bucket == -1 and regime == -1").iloc[0]
    assert btc["spread_ticks_q50"] == pytest.approx(1.0)
    ibm = real["IBM.XNYS"][0]
    ibm_all = ibm.table().query("bucket == -1 and regime == -1").iloc[0]
    assert 1.0 <= ibm_all["spread_ticks_q50"] <= 5.0  # a few cents
    assert ibm_all["time_s"] == pytest.approx(6.5 * 3600, abs=60)  # regular hours only (by default)
    buckets = sorted(b for b in set(ibm.bucket) if b >= 0)
    assert buckets[0] * 30 == 13 * 60 + 30 and buckets[-1] * 30 == 19 * 60 + 30  # 09:30-16:00 EDT in UTC
    by_regime = ibm.table().query("bucket == -1").set_index("regime")
    assert by_regime.loc[2, "spread_bps_q50"] > by_regime.loc[0, "spread_bps_q50"]  # volatile: wider
    opening = ibm.expected_spread_bps(to_ns("2013-10-07T13:35:00Z"), np.nan)
    midday = ibm.expected_spread_bps(to_ns("2013-10-07T17:35:00Z"), np.nan)
    assert opening[0] > midday[0]


def test_real_completion_models(real):
    for instrument, (_profile, m) in real.items():
        q = np.geomspace(0.1, 200.0, 60) * m.fill_size
        time = m.time_to_complete_ns(q)
        fills = m.partial_fills(q)
        assert (np.diff(time) >= 0).all() and (np.diff(fills) >= 0).all() and time[-1] > 0, instrument
        assert fills[0] == 1 and np.isfinite(m.refill_median_ns)
        assert (m.time_to_complete_ns(q, participation=0.05) >= time).all()
        back = CompletionModel.from_dict(json.loads(json.dumps(m.to_dict(), allow_nan=True)))
        np.testing.assert_array_equal(back.time_to_complete_ns(q, ts_ns=int(m.bucket[0]) * 30 * 60 * S),
                                      m.time_to_complete_ns(q, ts_ns=int(m.bucket[0]) * 30 * 60 * S))
    fx = real["EURUSD.DUKASCOPY"][1]
    assert fx.source == "quotes" and np.isnan(fx.adv_proxy) and np.isnan(fx.size_over_adv(1e6)).all()
    ibm = real["IBM.XNYS"][1]
    assert ibm.source == "trades" and ibm.session_s == 6.5 * 3600 and 0 < ibm.size_over_adv(1000.0)[0] < 1e-3


def test_spread_profile_round_trip(real):
    profile = real["IBM.XNYS"][0]
    back = SpreadProfile.from_dict(json.loads(json.dumps(profile.to_dict(), allow_nan=True)))
    assert back.table().equals(profile.table())
    ts = np.array([to_ns("2013-10-07T14:00:00Z"), to_ns("2013-10-07T18:00:00Z")])
    np.testing.assert_array_equal(back.expected_spread_bps(ts, np.array([1.0, 9.0])),
                                  profile.expected_spread_bps(ts, np.array([1.0, 9.0])))
    with pytest.raises(DataError, match="SpreadProfile"):
        SpreadProfile.from_dict({"bucket_minutes": 30})


def test_realised_vol_of_a_known_path():
    # the mid alternates +-1 bp every second for two minutes: each 1 s log return is ~1 bp
    mids = 100 * np.exp(np.where(np.arange(121) % 2, 1e-4, 0.0))
    frame = quotes([(float(i) + 0.5, m - 0.005, m + 0.005, 1.0, 1.0) for i, m in enumerate(mids)])
    vol = realised_vol_bps(frame, np.array([T0 + 30 * S, T0 + 100 * S]), window_ns=60 * S)
    assert np.isnan(vol[0])  # no full minute yet
    assert vol[1] == pytest.approx(np.sqrt(60) * 1.0, rel=1e-6)


def test_bad_input_is_refused():
    for fit in (lambda q, **kw: fit_spread_profile(q, "BTCUSDT.BINANCE", **kw),
                lambda q, **kw: fit_completion_model(q, None, "BTCUSDT.BINANCE", **kw)):
        with pytest.raises(DataError, match="empty"):
            fit(HAND.iloc[:0])
        crossed = HAND.assign(bid_px=HAND["ask_px"] + 0.01)
        with pytest.raises(DataError, match="no valid quote"):
            fit(crossed)
        for minutes in (0, -5, 7):
            with pytest.raises(DataError, match="bucket_minutes"):
                fit(HAND, bucket_minutes=minutes)
        with pytest.raises(DataError, match="bid_px"):
            fit(HAND.drop(columns="bid_px"))
        with pytest.raises(DataError, match="mask"):
            fit(HAND, mask=np.ones(2, bool))
    m = fit_completion_model(HAND, None, "BTCUSDT.BINANCE")
    for quantity in (0.0, -1.0, np.nan):
        with pytest.raises(DataError, match="quantity"):
            m.time_to_complete_ns(quantity)
    with pytest.raises(DataError, match="participation"):
        m.time_to_complete_ns(1.0, participation=0.0)
