"""Units that carry: a model fitted on BTCUSDT prices a scaled copy of it (prices / 20, sizes x 20) identically.

The copy is a different instrument to the model (its own id, tick and size unit); the
model is applied to it explicitly (``for_instrument``) and reads everything else from
the copy's own data, with no conversion by the user.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tradebook.data import load_bundled
from tradebook.errors import DataError
from tradebook.sim.book import rebuild_binance_book
from tradebook.sim.depth import (
    DEFAULT_SIZES_REL_TOP,
    evaluate_book_walk,
    fit_depth_profile,
    recent_touch_size,
)
from tradebook.sim.truth import book_walk_truth

BTC = "BTCUSDT.BINANCE"
COPY = "BTC20.TEST"
FILES = "binance_spot_btcusdt_20240808T2354-20240809T0005_"
SCALE = 20.0
N_BOOKS = 400


def scaled(frame: pd.DataFrame, prices: tuple[str, ...], sizes: tuple[str, ...]) -> pd.DataFrame:
    out = frame.copy()
    for c in prices:
        out[c] = out[c] / SCALE
    for c in sizes:
        out[c] = out[c] * SCALE
    return out


@pytest.fixture(scope="module")
def capture() -> dict:
    depth = load_bundled(FILES + "l2_depth.csv.gz").frame
    quotes = load_bundled(FILES + "l1_quotes.csv.gz").frame
    snapshot = int(depth.loc[depth["kind"] == "snapshot", "ts_ns"].max())
    end = int(depth["ts_ns"].iloc[-1])
    rng = np.random.default_rng(11)
    half = (snapshot + 10**9 + end) // 2
    fit_ts = np.sort(rng.integers(snapshot + 10**9, half, N_BOOKS))
    eval_ts = np.sort(rng.integers(half, end, N_BOOKS))
    return {"depth": depth, "quotes": quotes, "fit_ts": fit_ts, "eval_ts": eval_ts,
            "depth_copy": scaled(depth, ("price",), ("qty",)),
            "quotes_copy": scaled(quotes, ("bid_px", "ask_px"), ("bid_sz", "ask_sz"))}


def test_recent_touch_size_is_causal_and_scales():
    quotes = pd.DataFrame({"ts_ns": np.array([0, 10, 20], dtype=np.int64), "bid_sz": [1.0, 4.0, 100.0],
                           "ask_sz": [1.0, 4.0, 100.0]})
    unit = recent_touch_size(quotes, np.array([-1, 0, 5, 19], dtype=np.int64), tau_ns=10)
    assert np.isnan(unit[0]) and unit[1] == 1.0 and unit[2] == 1.0
    # at 19 the 100 of t=20 is not known yet: a time-weighted geometric mean of 1 and 4 only
    assert 1.0 < unit[3] < 4.0
    bigger = quotes.assign(bid_sz=quotes["bid_sz"] * SCALE, ask_sz=quotes["ask_sz"] * SCALE)
    np.testing.assert_allclose(recent_touch_size(bigger, np.array([19], dtype=np.int64), tau_ns=10),
                               unit[3] * SCALE, rtol=1e-12)
    with pytest.raises(DataError, match="no sizes"):
        recent_touch_size(quotes.drop(columns=["bid_sz"]), np.array([1], dtype=np.int64))
    with pytest.raises(DataError, match="positive size on both sides"):
        recent_touch_size(quotes.assign(bid_sz=np.nan), np.array([1], dtype=np.int64))
    with pytest.raises(DataError, match="tau_ns"):
        recent_touch_size(quotes, np.array([1], dtype=np.int64), tau_ns=0)


def test_depth_profile_carries_to_a_scaled_copy(capture):
    depth, quotes = capture["depth"], capture["quotes"]
    fit_book = rebuild_binance_book(depth, capture["fit_ts"], levels=1000)
    profile = fit_depth_profile(fit_book, 0.01, rng=np.random.default_rng(1), instrument_id=BTC, quotes=quotes)
    assert profile.carries and profile.fitted_on == BTC
    eval_book = rebuild_binance_book(depth, capture["eval_ts"], levels=1000)
    copy_book = rebuild_binance_book(capture["depth_copy"], capture["eval_ts"], levels=1000)
    np.testing.assert_allclose(copy_book.ask_px[:, :5], eval_book.ask_px[:, :5] / SCALE, rtol=1e-12)
    np.testing.assert_allclose(copy_book.ask_sz[:, :5], eval_book.ask_sz[:, :5] * SCALE, rtol=1e-12)
    # the copy's truth: the same sizes in the copy's own units, the same random jitter
    sizes = np.asarray(DEFAULT_SIZES_REL_TOP)
    truth = book_walk_truth(eval_book, sizes, np.random.default_rng(2), profile.typical_top_size)
    truth_copy = book_walk_truth(copy_book, sizes, np.random.default_rng(2), profile.typical_top_size * SCALE)
    applied = profile.for_instrument(COPY, 0.01 / SCALE)
    assert applied.fitted_on == BTC and applied.instrument_id == COPY
    original = evaluate_book_walk(profile, truth, quotes=quotes)
    on_copy = evaluate_book_walk(applied, truth_copy, quotes=capture["quotes_copy"])
    print(f"\nBTCUSDT book walks from L1, fit on the first half, scored on the second: MAE {original.mae_model_bps:.4f}"
          f" bps vs touch {original.mae_baseline_b_bps:.4f} (ratio {original.ratio:.3f}); on the x{SCALE:g} copy "
          f"{on_copy.mae_model_bps:.4f} vs {on_copy.mae_baseline_b_bps:.4f} (ratio {on_copy.ratio:.3f})")
    assert on_copy.n == original.n > 0
    for name in ("mae_model_bps", "mae_baseline_b_bps", "ratio", "coverage_closed", "coverage_open"):
        assert getattr(on_copy, name) == pytest.approx(getattr(original, name), rel=1e-6), name
    # a prediction on one L1 view, in bps, is the same
    row = truth.iloc[len(truth) // 2]
    unit = recent_touch_size(quotes, np.array([row["ts_ns"]], dtype=np.int64))
    unit_copy = recent_touch_size(capture["quotes_copy"], np.array([row["ts_ns"]], dtype=np.int64))
    for q in (0.05, 0.5, 0.95):
        a = profile.cost_bps("buy", 10 * unit, row["bid_px"], row["ask_px"], row["bid_sz"], row["ask_sz"], q,
                             touch_unit=unit)
        b = applied.cost_bps("buy", 10 * unit_copy, row["bid_px"] / SCALE, row["ask_px"] / SCALE,
                             row["bid_sz"] * SCALE, row["ask_sz"] * SCALE, q, touch_unit=unit_copy)
        np.testing.assert_allclose(b, a, rtol=1e-9)
    # applied elsewhere, the profile refuses to guess the copy's size unit
    with pytest.raises(DataError, match="touch_unit"):
        applied.cost_bps("buy", 1.0, 1.0, 1.0005, 1.0, 1.0)
    # the earlier format (sizes in the fit instrument's units) does not carry
    legacy = fit_depth_profile(fit_book, 0.01, rng=np.random.default_rng(1), instrument_id=BTC)
    assert not legacy.carries
    with pytest.raises(DataError, match="cannot be applied to BTC20.TEST"):
        legacy.for_instrument(COPY, 0.0005)
    # quotes of another instrument are refused
    other = quotes.copy()
    other.attrs["instrument"] = "ETHUSDT.BINANCE"
    with pytest.raises(DataError, match="ETHUSDT.BINANCE, not BTCUSDT.BINANCE"):
        fit_depth_profile(fit_book, 0.01, instrument_id=BTC, quotes=other)
    with pytest.raises(DataError, match="no sizes"):
        fit_depth_profile(fit_book, 0.01, instrument_id=BTC, quotes=quotes.drop(columns=["bid_sz", "ask_sz"]))
