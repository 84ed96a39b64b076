"""Units that carry: a model fitted on BTCUSDT prices a scaled copy of it (prices / 20, sizes x 20) identically.

The copy is a different instrument to the model (its own id, tick and size unit); the
model is applied to it explicitly (``for_instrument``) and reads everything else from
the copy's own data, with no conversion by the user.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from tradebook.data import load_bundled
from tradebook.data.instruments import instrument_from_dict
from tradebook.errors import ConfigError, DataError
from tradebook.model.instruments import Instrument, get_instrument
from tradebook.sim.calibrate import calibrate_marketable, evaluate_marketable
from tradebook.sim.book import rebuild_binance_book
from tradebook.sim.depth import (
    DEFAULT_SIZES_REL_TOP,
    evaluate_book_walk,
    fit_depth_profile,
    recent_touch_size,
)
from tradebook.sim.fill_model import FORMAT_VERSION, FillModel, baseline_model
from tradebook.sim.profile import fit_completion_model
from tradebook.sim.passive import evaluate_passive, fit_passive_baseline, fit_passive_model
from tradebook.sim.placements import passive_dataset, placement_features, time_split
from tradebook.sim.truth import book_walk_truth, sweeps

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


# -- passive fills and the whole model ------------------------------------------------------
S = 1_000_000_000
HORIZONS = (1 * S, 5 * S, 30 * S)


def copy_instrument() -> Instrument:
    return instrument_from_dict({"instrument_id": COPY, "asset_class": "crypto_spot", "currency": "USDT",
                                 "base_currency": "BTC20", "tick": "0.0005", "lot": "0.0001", "min_size": "0.0001",
                                 "calendar": "24/7"})


@pytest.fixture(scope="module")
def passive_fit(capture) -> dict:
    trades = load_bundled(FILES + "trades.csv.gz").frame
    trades_copy = scaled(trades, ("price",), ("size",))
    original = passive_dataset(capture["quotes"], trades, BTC, 1500, np.random.default_rng(7), horizons_ns=HORIZONS)
    on_copy = passive_dataset(capture["quotes_copy"], trades_copy, copy_instrument(), 1500,
                              np.random.default_rng(7), horizons_ns=HORIZONS)
    fit, held = time_split(original)
    _, held_copy = time_split(on_copy)
    return {"model": fit_passive_model(fit, instrument_id=BTC), "baseline": fit_passive_baseline(fit),
            "held": held, "held_copy": held_copy, "trades": trades, "trades_copy": trades_copy,
            "quotes": capture["quotes"], "quotes_copy": capture["quotes_copy"]}


def test_passive_model_carries_to_a_scaled_copy(passive_fit):
    model, held, held_copy = passive_fit["model"], passive_fit["held"], passive_fit["held_copy"]
    assert model.carries and model.touch_size_unit is None
    # the copy's own outcomes and features, from its own tick and recent touch size
    np.testing.assert_array_equal(held_copy["filled"].to_numpy(), held["filled"].to_numpy())
    applied = model.for_instrument(COPY)
    assert applied.fitted_on == BTC
    p, p_copy = model.fill_probability(held), applied.fill_probability(held_copy)
    np.testing.assert_allclose(p_copy, p, rtol=1e-9, atol=1e-12)
    scores = evaluate_passive(model, passive_fit["baseline"], held)
    scores_copy = evaluate_passive(applied, passive_fit["baseline"], held_copy)
    print(f"\nBTCUSDT passive, fit first half, scored second: Brier {scores.brier_model:.5f} "
          f"(reference {scores.brier_baseline:.5f}); on the x{SCALE:g} copy {scores_copy.brier_model:.5f}")
    assert scores_copy.brier_model == pytest.approx(scores.brier_model, rel=1e-9)
    # a horizon between the fitted ones is a parameter of the prediction, not the nearest fitted one
    at = np.sort(held["placement_ts_ns"].unique())[:50]
    between = placement_features(passive_fit["quotes"], passive_fit["trades"], at, 1, 1, 3 * S, 0.01)
    between_copy = placement_features(passive_fit["quotes_copy"], passive_fit["trades_copy"], at, 1, 1, 3 * S,
                                      0.0005)
    p3 = model.fill_probability(between)
    np.testing.assert_allclose(applied.fill_probability(between_copy), p3, rtol=1e-9, atol=1e-12)
    p1 = model.fill_probability(between.assign(horizon_ns=np.int64(1 * S)))
    p5 = model.fill_probability(between.assign(horizon_ns=np.int64(5 * S)))
    assert not np.allclose(p3, p1) and not np.allclose(p3, p5)
    assert ((p3 >= np.minimum(p1, p5) - 1e-12) & (p3 <= np.maximum(p1, p5) + 1e-12)).all()
    with pytest.raises(DataError, match="horizon"):
        model.fill_probability(between.assign(horizon_ns=np.int64(0)))
    with pytest.raises(DataError, match="positive horizon"):
        passive_fit["baseline"].fill_probability(between.assign(horizon_ns=np.int64(-S)))
    with pytest.raises(DataError, match="horizon"):
        placement_features(passive_fit["quotes"], None, at, 1, 1, -S, 0.01)
    with pytest.raises(DataError, match="no sizes"):
        placement_features(passive_fit["quotes"].drop(columns=["bid_sz", "ask_sz"]), None, at, 1, 1, S, 0.01)


def test_fill_model_applied_to_a_copy_and_refused_elsewhere(capture, passive_fit):
    fit_book = rebuild_binance_book(capture["depth"], capture["fit_ts"], levels=1000)
    depth = fit_depth_profile(fit_book, 0.01, rng=np.random.default_rng(1), instrument_id=BTC,
                              quotes=capture["quotes"])
    trades = passive_fit["trades"]
    swept = sweeps(trades, capture["quotes"])
    model = calibrate_marketable(BTC, 0.01, swept, depth=depth, passive=passive_fit["model"])
    assert model.fitted_on == (BTC,) and model.asset_class == "crypto_spot" and not model.away_from_data
    copy = model.for_instrument(copy_instrument())
    assert copy.away_from_data and copy.tick_size == 0.0005 and copy.depth.tick_size == 0.0005
    assert "fitted on BTCUSDT.BINANCE" in copy.provenance() and "applied away" in copy.provenance()
    # the completion model: refill times carry, sizes follow the copy's own recent touch
    completion = fit_completion_model(capture["quotes"], trades, BTC)
    with_completion = replace(model, completion=completion)
    assert with_completion.for_instrument(copy_instrument()).completion is None
    assert "completion model left out" in with_completion.for_instrument(copy_instrument()).applied_notes[0]
    carried = with_completion.for_instrument(copy_instrument(), quotes=capture["quotes_copy"]).completion
    last = np.array([capture["quotes"]["ts_ns"].iloc[-1]], dtype=np.int64)
    assert carried.fill_size == pytest.approx(recent_touch_size(capture["quotes"], last)[0] * SCALE, rel=1e-9)
    assert carried.refill_median_ns == completion.refill_median_ns and carried.fitted_on == BTC
    assert carried.volume_per_s_all / carried.fill_size == pytest.approx(
        completion.volume_per_s_all / completion.fill_size, rel=1e-12)
    # marketable costs in bps on the copy's own sweeps are the same
    swept_copy = sweeps(passive_fit["trades_copy"], capture["quotes_copy"])
    for q in (0.05, 0.5, 0.95):
        a = model.marketable_cost_bps(swept["quantity"], swept["half_spread_bps"], swept["touch_size"], q)
        b = copy.marketable_cost_bps(swept_copy["quantity"], swept_copy["half_spread_bps"],
                                     swept_copy["touch_size"], q)
        np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-9)
    fit_on_copy = evaluate_marketable(copy, swept_copy)
    assert fit_on_copy.mae_model_bps == pytest.approx(evaluate_marketable(model, swept).mae_model_bps, rel=1e-9)
    # with the scored data's quotes and prints (the quote moved by the prints since it, a sampled feed's
    # staleness): the same scores on the copy, and the prints moved the quote somewhere
    read = evaluate_marketable(model, swept, quotes=capture["quotes"], trades=trades)
    read_copy = evaluate_marketable(copy, swept_copy, quotes=capture["quotes_copy"], trades=passive_fit["trades_copy"])
    for name in ("mae_model_bps", "coverage_closed", "coverage_open"):
        assert getattr(read_copy, name) == pytest.approx(getattr(read, name), rel=1e-9, abs=1e-12), name
    assert read.mae_model_bps != pytest.approx(evaluate_marketable(model, swept).mae_model_bps, rel=1e-6)
    # another asset class is refused, naming both
    with pytest.raises(DataError, match="crypto_spot.*IBM.XNYS, a equity instrument"):
        model.for_instrument(get_instrument("IBM.XNYS"))
    # stored and read back: the format version is written; an older JSON still loads, a newer is refused
    raw = json.loads(copy.to_json())
    assert raw["format_version"] == FORMAT_VERSION
    assert FillModel.from_json(copy.to_json()) == copy
    old = {k: v for k, v in json.loads(baseline_model(BTC, 0.01).to_json()).items()
           if k not in ("format_version", "fitted_on", "asset_class", "applied_notes")}
    assert FillModel.from_json(json.dumps(old)).format_version == 1
    with pytest.raises(ConfigError, match="format 99, newer"):
        FillModel.from_json(json.dumps({**raw, "format_version": 99}))


def test_stored_calibrations_of_the_earlier_format_load_and_newer_ones_are_refused(tmp_path):
    from tradebook.sim.fidelity import load_model
    from tradebook.store import Store

    current = baseline_model(BTC, 0.01)
    earlier = {k: v for k, v in json.loads(current.to_json()).items()
               if k not in ("format_version", "fitted_on", "asset_class", "applied_notes")}
    newer = {**json.loads(current.to_json()), "format_version": FORMAT_VERSION + 1}
    with Store(tmp_path / "units.duckdb") as store:
        for params in (json.dumps(earlier), current.to_json(), json.dumps(newer)):
            store.save_calibration(BTC, params, data_start_ns=0, data_end_ns=1, dataset_ids=[], diagnostics={})
        old = load_model(store, f"{BTC}@v1")
        assert old.format_version == 1 and old.fitted_on == () and old.cost_curve == current.cost_curve
        assert load_model(store, f"{BTC}@v2") == current
        with pytest.raises(ConfigError, match=f"format {FORMAT_VERSION + 1}, newer .* recalibrate"):
            load_model(store, f"{BTC}@v3")
