"""Resting-order placements: quote-through truth, where placements fall, and their features at placement.

Hand-built feeds carry hand-computed answers; real FX checks the vectorised truth against a plain loop.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from tradebook.data import load_bundled
from tradebook.errors import DataError
from tradebook.sim.depth import TOUCH_UNIT_TAU_NS, recent_touch_size
from tradebook.sim.placements import (
    FEATURES,
    placement_features,
    quote_through_outcomes,
    sample_placements,
    typical_touch_size,
)

S = 1_000_000_000


def quotes_frame(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["ts_ns", "bid_px", "ask_px", "bid_sz", "ask_sz"])


# -- quote-through truth on a hand-built feed ---------------------------------------------
THROUGH_QUOTES = quotes_frame([
    (100, 1.00, 1.02, 5.0, 7.0),
    (200, 1.01, 1.02, 5.0, 7.0),
    (300, 0.99, 1.01, 5.0, 7.0),
    (400, 0.98, 1.00, 5.0, 7.0),  # the offer comes down to 1.00
    (500, 1.00, 1.03, 5.0, 7.0),
    (600, 1.01, 1.02, 5.0, 7.0),  # the bid comes up to 1.01
    (700, 1.03, 1.02, 5.0, 7.0),  # crossed
])


def through(placement: int, side: str, distance: int, horizon: int) -> pd.Series:
    return quote_through_outcomes(THROUGH_QUOTES, np.array([placement]), side, distance, horizon, 0.01).iloc[0]


def test_quote_through_buy_fills_when_the_offer_reaches_the_limit():
    row = through(150, "buy", 0, 250)  # rests at the bid of 100 (1.00); the ask is 1.00 at 400
    assert row["valid"] and row["filled"] and row["filled_by"] == "through"
    assert row["limit_px"] == pytest.approx(1.00) and row["time_to_fill_ns"] == 250.0
    assert row["queue_ahead"] == 5.0 and math.isnan(row["volume_at_price"])
    assert not through(150, "buy", 0, 249)["filled"]  # the window (150, 399] ends before the quote at 400
    behind = through(150, "buy", 1, 1000)  # 0.99: the ask never gets there
    assert not behind["filled"] and behind["limit_px"] == pytest.approx(0.99) and math.isnan(behind["queue_ahead"])
    assert math.isnan(behind["time_to_fill_ns"]) and behind["filled_by"] == ""


def test_quote_through_sell_uses_the_quote_stamped_at_placement():
    row = through(300, "sell", 0, 300)  # the quote stamped at 300 is in force: rests at its ask 1.01
    assert row["limit_px"] == pytest.approx(1.01) and row["filled"] and row["time_to_fill_ns"] == 300.0
    assert not through(300, "sell", 0, 299)["filled"]
    assert not through(150, "sell", 0, 540)["filled"]  # rests at 1.02: the bid tops out at 1.01 before 700...
    assert through(150, "sell", 0, 1000)["limit_px"] == pytest.approx(1.02)
    assert through(650, "sell", 0, 100)["filled"]  # ... and the crossed quote at 700 reaches 1.02: it counts


def test_quote_through_is_vectorised_and_flags_invalid_placements():
    placement = np.array([50, 150, 150, 300, 750], dtype=np.int64)
    result = quote_through_outcomes(THROUGH_QUOTES, placement, np.array(["buy", "buy", "sell", "sell", "buy"]),
                                    np.array([0, 1, 0, 0, 0]), np.array([1000, 1000, 500, 300, 10]), 0.01)
    assert list(result.columns) == ["placement_ts_ns", "side", "distance_ticks", "limit_px", "valid", "queue_ahead",
                                    "filled", "time_to_fill_ns", "filled_by", "volume_at_price"]
    np.testing.assert_array_equal(result["valid"], [False, True, True, True, False])  # no quote yet; crossed
    np.testing.assert_array_equal(result["filled"], [False, False, False, True, False])
    np.testing.assert_array_equal(result["side"], [1, 1, -1, -1, 1])
    assert result.attrs["rule"] == "quote_through"


def test_quote_through_agrees_with_a_plain_loop_on_real_fx():
    quotes = load_bundled("dukascopy_EURUSD_20260713T12_ticks.csv.gz").frame
    rng = np.random.default_rng(3)
    placement = sample_placements(quotes, 300, rng)
    side = np.where(rng.random(300) < 0.5, 1, -1)
    distance = rng.integers(0, 4, 300)
    horizon = rng.integers(1, 120, 300) * S
    result = quote_through_outcomes(quotes, placement, side, distance, horizon, 1e-5)
    ts, bid, ask = (quotes[c].to_numpy() for c in ("ts_ns", "bid_px", "ask_px"))
    for i in range(300):
        now = np.searchsorted(ts, placement[i], side="right") - 1
        touch = bid[now] if side[i] > 0 else ask[now]
        limit = round(touch / 1e-5) - side[i] * distance[i]
        window = (ts > placement[i]) & (ts <= placement[i] + horizon[i])
        reached = (ask[window] / 1e-5 <= limit + 1e-6) if side[i] > 0 else (bid[window] / 1e-5 >= limit - 1e-6)
        assert result["filled"].iloc[i] == reached.any()
        if reached.any():
            assert result["time_to_fill_ns"].iloc[i] == ts[window][reached.argmax()] - placement[i]
    assert 0.1 < result["filled"].mean() < 0.9  # the check saw fills and misses


# -- placements ---------------------------------------------------------------------------
def test_sample_placements_fall_where_a_valid_unmasked_quote_stands():
    rng = np.random.default_rng(0)
    times = sample_placements(THROUGH_QUOTES, 2000, rng)
    assert times.dtype == np.int64 and (np.diff(times) >= 0).all()
    assert times.min() >= 100 and times.max() < 700  # the crossed quote from 700 on is never drawn
    masked = sample_placements(THROUGH_QUOTES, 2000, rng, mask=THROUGH_QUOTES["ts_ns"].to_numpy() >= 400)
    assert masked.min() >= 400 and masked.max() < 700
    # uniform in time: each of the six 100 ns spans gets about a sixth
    counts = np.bincount((times - 100) // 100, minlength=6)
    assert counts.min() > 2000 / 6 * 0.75


# -- features on a hand-built feed --------------------------------------------------------
FEATURE_QUOTES = quotes_frame([
    (0, 10.0, 10.5, 4.0, 4.0),  # mid 20.5 ticks of 0.5
    (1 * S, 10.0, 10.5, 2.0, 6.0),
    (2 * S, 10.5, 11.0, 4.0, 4.0),  # mid 21.5
    (3 * S, 10.5, 11.5, 1.0, 3.0),  # mid 22.0, spread 2 ticks
])
FEATURE_TRADES = pd.DataFrame({
    "ts_ns": [1_200_000_000, 2_500_000_000, 3 * S, 3_600_000_000],
    "price": [10.5, 11.0, 10.5, 11.5],
    "size": [5.0, 2.0, 6.0, 1.0],
    "aggressor_side": ["BUY", "BUY", "SELL", "BUY"],
})


def test_features_from_l1_and_recent_trades():
    assert typical_touch_size(FEATURE_QUOTES) == 4.0  # median of 1, 2, 3, 4, 4, 4, 4, 6
    # placed at 3.5 s with a 2 s horizon: the lookback is (1.5 s, 3.5 s]
    frame = placement_features(FEATURE_QUOTES, FEATURE_TRADES, np.array([3_500_000_000] * 2), np.array([1, -1]),
                               np.array([0, 1]), 2 * S, 0.5)
    buy, sell = frame.iloc[0], frame.iloc[1]
    assert buy["valid"] and buy["horizon_s"] == 2.0
    # sizes in the recent touch size at placement: known from the quotes before it only
    unit = recent_touch_size(FEATURE_QUOTES, np.array([3_500_000_000]))[0]
    # the time-weighted geometric mean of sqrt(bid_sz * ask_sz): 4, sqrt(12), 4, sqrt(3) held over
    # [0, 1), [1, 2), [2, 3), [3, 3.5) s, weights exp(-age / tau)
    tau = TOUCH_UNIT_TAU_NS / S
    segments = ((0.0, 1.0, math.log(4)), (1.0, 2.0, math.log(12) / 2), (2.0, 3.0, math.log(4)),
                (3.0, 3.5, math.log(3) / 2))
    weights = [math.exp(-(3.5 - b) / tau) - math.exp(-(3.5 - a) / tau) for a, b, _ in segments]
    expected_unit = math.exp(sum(w * x for w, (_, _, x) in zip(weights, segments)) / sum(weights))
    assert unit == pytest.approx(expected_unit, rel=1e-9) and frame.attrs["touch_size_unit"] is None
    assert buy["queue_rel_log"] == pytest.approx(math.log(1 / unit))  # own side: the bid of 1
    assert sell["queue_rel_log"] == pytest.approx(math.log(3 / unit))
    assert buy["imbalance"] == pytest.approx(-0.5) and sell["imbalance"] == pytest.approx(0.5)
    assert buy["spread_ticks"] == 2.0 and buy["spread_log"] == pytest.approx(math.log(2))
    assert buy["vol_ticks"] == pytest.approx(math.sqrt(1.25))  # mid moves of 1 and 0.5 ticks
    assert buy["vol_log"] == pytest.approx(math.log1p(math.sqrt(1.25)))
    assert buy["move_ticks"] == 1.5 and sell["move_ticks"] == -1.5  # the price ran away from the buyer
    assert buy["move_over_vol"] == pytest.approx(1.5 / (math.sqrt(1.25) + 1))
    assert buy["gap_over_vol_log"] == pytest.approx(math.log(2 / (math.sqrt(1.25) + 1)))
    assert sell["gap_over_vol_log"] == pytest.approx(math.log(3 / (math.sqrt(1.25) + 1)))
    assert buy["quote_rate_log"] == pytest.approx(math.log1p(1.0))  # two updates in two seconds
    assert buy["trade_rate_log"] == pytest.approx(math.log1p(8 / unit))  # 2 + 6 traded, in touch sizes
    # the queue (1) in units of the touch plus the volume of the last horizon (8)
    assert buy["queue_over_volume_log"] == pytest.approx(math.log(1 / (unit + 8)))
    fixed = placement_features(FEATURE_QUOTES, FEATURE_TRADES, np.array([3_500_000_000]), 1, 0, 2 * S, 0.5,
                               touch_size_unit=4.0).iloc[0]  # the earlier format: one fixed unit
    assert fixed["queue_rel_log"] == pytest.approx(math.log(1 / 4))
    assert fixed["trade_rate_log"] == pytest.approx(math.log1p(8 / 4))
    assert buy["flow_imbalance"] == pytest.approx(-0.5) and sell["flow_imbalance"] == pytest.approx(0.5)


def test_features_near_the_start_scale_up_and_without_trades_are_missing():
    # placed at 0.5 s with a 2 s lookback: only 0.5 s of data, so one update is a rate of 2 per second
    frame = placement_features(FEATURE_QUOTES, None, np.array([500_000_000, -5]), "buy", 0, 2 * S, 0.5,
                               touch_size_unit=2.0)
    row = frame.iloc[0]
    assert row["quote_rate_log"] == pytest.approx(math.log1p(2.0))
    assert row["queue_rel_log"] == pytest.approx(math.log(4 / 2)) and frame.attrs["touch_size_unit"] == 2.0
    assert math.isnan(row["trade_rate_log"]) and math.isnan(row["flow_imbalance"])
    assert not frame["valid"].iloc[1] and frame[list(FEATURES)].iloc[1].isna().all()


# -- bad input ---------------------------------------------------------------------------
def test_bad_input_is_refused_with_a_clear_message():
    empty = THROUGH_QUOTES.iloc[:0]
    crossed = quotes_frame([(1, 1.02, 1.01, 1.0, 1.0), (2, 1.01, 1.01, 1.0, 1.0)])
    one = np.array([150])
    with pytest.raises(DataError, match="quotes frame is empty"):
        quote_through_outcomes(empty, one, "buy", 0, 10, 0.01)
    with pytest.raises(DataError, match="no valid quote among 2 rows"):
        quote_through_outcomes(crossed, one, "buy", 0, 10, 0.01)
    with pytest.raises(DataError, match="distance_ticks must be integers >= 0"):
        quote_through_outcomes(THROUGH_QUOTES, one, "buy", -1, 10, 0.01)
    with pytest.raises(DataError, match="horizon_ns must be positive"):
        quote_through_outcomes(THROUGH_QUOTES, one, "buy", 0, 0, 0.01)
    with pytest.raises(DataError, match="tick is nan"):
        quote_through_outcomes(THROUGH_QUOTES, one, "buy", 0, 10, float("nan"))
    with pytest.raises(DataError, match="expected 'buy' or 'sell'"):
        quote_through_outcomes(THROUGH_QUOTES, one, "hold", 0, 10, 0.01)
    with pytest.raises(DataError, match="int64 nanoseconds"):
        quote_through_outcomes(THROUGH_QUOTES, np.array([1.5]), "buy", 0, 10, 0.01)

    with pytest.raises(DataError, match="quotes frame is empty"):
        placement_features(empty, None, one, "buy", 0, 10, 0.01)
    with pytest.raises(DataError, match="no valid quote"):
        placement_features(crossed, None, one, "buy", 0, 10, 0.01)
    with pytest.raises(DataError, match="distance_ticks must be integers >= 0"):
        placement_features(THROUGH_QUOTES, None, one, "buy", -2, 10, 0.01)
    with pytest.raises(DataError, match="horizon_ns must be positive"):
        placement_features(THROUGH_QUOTES, None, one, "buy", 0, 0, 0.01)
    with pytest.raises(DataError, match="tick is nan"):
        placement_features(THROUGH_QUOTES, None, one, "buy", 0, 10, float("nan"))
    with pytest.raises(DataError, match="trades frame lacks 'size'"):
        placement_features(THROUGH_QUOTES, pd.DataFrame({"ts_ns": [1], "price": [1.0]}), one, "buy", 0, 10, 0.01)

    rng = np.random.default_rng(0)
    with pytest.raises(DataError, match="quotes frame is empty"):
        sample_placements(empty, 10, rng)
    with pytest.raises(DataError, match="no valid quote"):
        sample_placements(crossed, 10, rng)
    with pytest.raises(DataError, match="expected a positive number of placements"):
        sample_placements(THROUGH_QUOTES, 0, rng)
    with pytest.raises(DataError, match="one bool per quote row"):
        sample_placements(THROUGH_QUOTES, 10, rng, mask=np.ones(3, dtype=bool))
    with pytest.raises(DataError, match="no time span with a valid quote"):
        sample_placements(THROUGH_QUOTES, 10, rng, mask=np.zeros(len(THROUGH_QUOTES), dtype=bool))
    with pytest.raises(DataError, match="lacks bid/ask prices"):
        sample_placements(pd.DataFrame({"ts_ns": [1], "bid": [1.0]}), 10, rng)
