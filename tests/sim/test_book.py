"""Book rebuild, as-of sampling and book walks: hand-computed cases and the real bundled books."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from tradebook.data import load_bundled
from tradebook.errors import DataError
from tradebook.sim.book import (
    ESH4_20231225_OPEN_NS,
    BookSnapshots,
    book5_snapshots,
    exclude_crossed_or_preopen,
    rebuild_binance_book,
    typical_top_size,
)
from tradebook.sim.truth import book_walk_truth

BTC = "binance_spot_btcusdt_20240808T2354-20240809T0005_"
NAN = np.nan


# -- walking a hand-built book ------------------------------------------------------
def three_level_book() -> BookSnapshots:
    """Two samples; the first has three levels per side, the second a thinner book."""
    return BookSnapshots(
        ts_ns=np.array([1, 2], dtype=np.int64),
        bid_px=np.array([[99.5, 99.0, 98.0], [99.0, NAN, NAN]]),
        bid_sz=np.array([[2.0, 1.0, 5.0], [1.0, NAN, NAN]]),
        ask_px=np.array([[100.0, 100.5, 101.0], [100.5, 101.5, NAN]]),
        ask_sz=np.array([[1.0, 2.0, 3.0], [4.0, 1.0, NAN]]),
    )


def test_walk_vwap_matches_hand_calculation():
    book = three_level_book()
    # Buy 4 on sample 0: 1 @ 100.0 + 2 @ 100.5 + 1 @ 101.0 = 402 / 4 = 100.5.
    # Buy 4.5 on sample 1: 4 @ 100.5 + 0.5 @ 101.5 = 452.75 / 4.5.
    avg, filled = book.walk("buy", np.array([4.0, 4.5]))
    np.testing.assert_allclose(avg, [100.5, 452.75 / 4.5], rtol=1e-15)
    np.testing.assert_array_equal(filled, [4.0, 4.5])
    # Sell 2.5 on sample 0: 2 @ 99.5 + 0.5 @ 99.0 = 248.5 / 2.5 = 99.4.
    avg, filled = book.walk("sell", np.array([2.5, 0.5]))
    np.testing.assert_allclose(avg, [99.4, 99.0], rtol=1e-15)
    np.testing.assert_array_equal(filled, [2.5, 0.5])


def test_walk_beyond_visible_depth_reports_partial_fill():
    book = three_level_book()
    # 10 asked; 6 visible on sample 0 (VWAP 604/6), 5 on sample 1 (VWAP 503.5/5).
    avg, filled = book.walk("buy", 10.0)
    np.testing.assert_array_equal(filled, [6.0, 5.0])
    np.testing.assert_allclose(avg, [604 / 6, 503.5 / 5], rtol=1e-15)
    avg, filled, worst, used = book.walk_detail("sell", np.array([3.5, 0.0]))
    np.testing.assert_allclose(avg, [(2 * 99.5 + 99.0 + 0.5 * 98.0) / 3.5, NAN], rtol=1e-15)
    np.testing.assert_array_equal(filled, [3.5, 0.0])
    np.testing.assert_array_equal(worst, [98.0, NAN])
    np.testing.assert_array_equal(used, [3, 0])


def test_walk_single_level_price_is_exact():
    book = three_level_book()
    avg, _ = book.walk("buy", np.array([0.3, 0.7]))
    assert avg[0] == 100.0 and avg[1] == 100.5  # exactly the quoted price, no p*q/q rounding


def test_walk_refuses_bad_side_and_quantity():
    book = three_level_book()
    with pytest.raises(DataError, match="expected 'buy' or 'sell'"):
        book.walk("long", 1.0)
    with pytest.raises(DataError, match=">= 0"):
        book.walk("buy", np.array([1.0, -1.0]))


def test_snapshots_check_shapes():
    with pytest.raises(DataError, match="shaped"):
        BookSnapshots(ts_ns=np.array([1], dtype=np.int64), bid_px=np.zeros((1, 2)), bid_sz=np.zeros((1, 2)),
                      ask_px=np.zeros((1, 3)), ask_sz=np.zeros((1, 2)))


# -- Binance rebuild on a hand-built depth frame -----------------------------------------
def depth_frame(rows: list[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["ts_ns", "kind", "first_update_id", "last_update_id", "side", "price", "qty"])
    frame["first_update_id"] = pd.array(frame["first_update_id"], dtype="Int64")
    return frame


SNAPSHOT_ID = 100
HAND_DEPTH = [
    (1000, "diff", 90, 95, "bid", 10.0, 9.0),  # stale: last id <= snapshot id, dropped
    (1100, "diff", 96, 100, "ask", 10.5, 9.0),  # stale
    (1200, "diff", 99, 103, "bid", 9.9, 0.0),  # bridges 99 <= 101 <= 103; arrives before the snapshot
    (1200, "diff", 99, 103, "bid", 9.95, 4.0),  # a new level
    (1300, "snapshot", None, SNAPSHOT_ID, "bid", 10.0, 1.0),
    (1300, "snapshot", None, SNAPSHOT_ID, "bid", 9.9, 2.0),
    (1300, "snapshot", None, SNAPSHOT_ID, "bid", 9.8, 3.0),
    (1300, "snapshot", None, SNAPSHOT_ID, "ask", 10.1, 1.0),
    (1300, "snapshot", None, SNAPSHOT_ID, "ask", 10.2, 2.0),
    (1300, "snapshot", None, SNAPSHOT_ID, "ask", 10.3, 3.0),
    (1400, "diff", 104, 105, "ask", 10.1, 0.0),  # best ask removed
    (1400, "diff", 104, 105, "ask", 10.15, 5.0),
    (1500, "diff", 106, 106, "bid", 10.0, 7.0),  # absolute quantity, not a delta
]


def test_rebuild_applies_the_spot_procedure():
    samples = np.array([1600, 1250, 1400, 1300, 1399], dtype=np.int64)  # unsorted on purpose
    book = rebuild_binance_book(depth_frame(HAND_DEPTH), samples, levels=4)
    assert book.bid_px.shape == (5, 4)
    np.testing.assert_array_equal(book.ts_ns, samples)
    # before the snapshot arrived: no book
    assert np.isnan(book.bid_px[1]).all() and np.isnan(book.ask_sz[1]).all() and book.update_id[1] == -1
    # at the snapshot: snapshot + the bridging diff received earlier; stale diffs ignored
    for i in (3, 4):
        np.testing.assert_array_equal(book.bid_px[i], [10.0, 9.95, 9.8, NAN])
        np.testing.assert_array_equal(book.bid_sz[i], [1.0, 4.0, 3.0, NAN])
        np.testing.assert_array_equal(book.ask_px[i], [10.1, 10.2, 10.3, NAN])
        assert book.update_id[i] == 103
    # a message stamped exactly at the sample time is applied
    np.testing.assert_array_equal(book.ask_px[2], [10.15, 10.2, 10.3, NAN])
    np.testing.assert_array_equal(book.ask_sz[2], [5.0, 2.0, 3.0, NAN])
    assert book.update_id[2] == 105
    np.testing.assert_array_equal(book.bid_sz[0], [7.0, 4.0, 3.0, NAN])
    assert book.update_id[0] == 106


def test_rebuild_refuses_unbridged_or_broken_sequences():
    no_bridge = [r for r in HAND_DEPTH if r[3] != 103]
    with pytest.raises(DataError, match="does not bridge"):
        rebuild_binance_book(depth_frame(no_bridge), np.array([2000]))
    gap = [r if r[3] != 106 else (1500, "diff", 107, 107, "bid", 10.0, 7.0) for r in HAND_DEPTH]
    with pytest.raises(DataError, match="sequence breaks.*expected 106"):
        rebuild_binance_book(depth_frame(gap), np.array([2000]))
    with pytest.raises(DataError, match="no 'snapshot' rows"):
        rebuild_binance_book(depth_frame([r for r in HAND_DEPTH if r[1] == "diff"]), np.array([2000]))
    with pytest.raises(DataError, match="lacks column"):
        rebuild_binance_book(depth_frame(HAND_DEPTH).drop(columns="qty"), np.array([2000]))
    with pytest.raises(DataError, match="int64 nanoseconds"):
        rebuild_binance_book(depth_frame(HAND_DEPTH), np.array([2000.0]))


# -- the real Binance book -------------------------------------------------------------
@pytest.fixture(scope="module")
def btc():
    depth = load_bundled(BTC + "l2_depth.csv.gz").frame
    quotes = load_bundled(BTC + "l1_quotes.csv.gz").frame
    snapshot_ts = int(depth.loc[depth["kind"] == "snapshot", "ts_ns"].max())
    rng = np.random.default_rng(0)
    samples = np.sort(rng.integers(snapshot_ts + 1_000_000_000, int(quotes["ts_ns"].iloc[-1]), 5000))
    started = time.perf_counter()
    book = rebuild_binance_book(depth, samples, levels=50)
    elapsed = time.perf_counter() - started
    return depth, quotes, book, elapsed


def test_real_rebuild_is_fast(btc):
    _depth, _quotes, book, elapsed = btc
    print(f"\nBinance rebuild: 300,111 depth rows, {len(book):,} samples x 50 levels in {elapsed:.2f} s "
          "(includes numba compilation when this test runs alone)")
    assert elapsed < 5.0
    assert book.two_sided.all()


def test_real_rebuild_matches_book_ticker_by_update_id(btc):
    # The exact check: bookTicker pushes every change of the touch with its update id
    # u, so the last bookTicker with u <= the book's last applied diff id shows the
    # touch of exactly that book state. Any rebuild error would show up here.
    _depth, quotes, book, _elapsed = btc
    update_id = quotes["update_id"].to_numpy(dtype=np.int64)
    row = np.searchsorted(update_id, book.update_id, side="right") - 1
    for column in ("bid_px", "bid_sz", "ask_px", "ask_sz"):
        rate = np.mean(getattr(book, column)[:, 0] == quotes[column].to_numpy()[row])
        print(f"\nrebuilt {column} at level 0 == bookTicker {column} (aligned by update id): {rate:.2%}")
        assert rate == 1.0


def test_real_rebuild_matches_book_ticker_by_time(btc):
    # Aligned by the capture clock instead, the two streams disagree now and then: the
    # depth stream is @depth@100ms (batched every 100 ms, ~50 ms late on average) while
    # bookTicker is pushed on every change. Measured on these 5,000 uniform samples
    # (seed 0): best bid price equal 92.5%, best ask 92.5%, both 92.4%; sizes agree
    # only ~48-50% because sizes change far more often than prices. Thresholds sit just
    # below the measurement.
    _depth, quotes, book, _elapsed = btc
    row = np.searchsorted(quotes["ts_ns"].to_numpy(), book.ts_ns, side="right") - 1
    bid_rate = np.mean(book.bid_px[:, 0] == quotes["bid_px"].to_numpy()[row])
    ask_rate = np.mean(book.ask_px[:, 0] == quotes["ask_px"].to_numpy()[row])
    print(f"\nrebuilt touch == bookTicker at the same capture time: bid {bid_rate:.2%}, ask {ask_rate:.2%}")
    assert bid_rate >= 0.90
    assert ask_rate >= 0.90


# -- the ES top-5 book -------------------------------------------------------------------
def test_book5_as_of_sampling_on_hand_built_rows():
    frame = pd.DataFrame({
        "ts_ns": [10, 20, 20, 30],
        "bid_px_0": [99.0, 99.25, 99.5, 99.5], "bid_sz_0": [1.0, 2.0, 3.0, 4.0],
        "ask_px_0": [98.0, 99.75, 99.75, 99.75], "ask_sz_0": [5.0, 6.0, 7.0, 8.0],
        "bid_px_1": [NAN, 99.0, 99.25, 99.25], "bid_sz_1": [NAN, 1.0, 2.0, 2.0],
        "ask_px_1": [NAN, 100.0, 100.0, 100.0], "ask_sz_1": [NAN, 1.0, 1.0, 1.0],
    })
    book = book5_snapshots(frame, np.array([5, 10, 19, 20, 35], dtype=np.int64))
    assert book.levels == 2
    np.testing.assert_array_equal(book.bid_px[:, 0], [NAN, 99.0, 99.0, 99.5, 99.5])  # 20: last of two rows
    np.testing.assert_array_equal(book.ask_sz[:, 0], [NAN, 5.0, 5.0, 7.0, 8.0])
    np.testing.assert_array_equal(book.bid_px[:, 1], [NAN, NAN, NAN, 99.25, 99.25])
    # 10 and 19 see a crossed row (bid 99 > ask 98): excluded, as is the empty sample 5
    kept = exclude_crossed_or_preopen(book)
    np.testing.assert_array_equal(kept.ts_ns, [20, 35])
    np.testing.assert_array_equal(exclude_crossed_or_preopen(book, open_ts_ns=30).ts_ns, [35])


def test_real_esh4_preopen_is_crossed_and_excluded():
    book_frame = load_bundled("cme_ESH4_book5_from_mbo_20231225.csv.gz").frame
    samples = np.arange(ESH4_20231225_OPEN_NS - 20 * 60 * 10**9, int(book_frame["ts_ns"].iloc[-1]), 10**9)
    book = book5_snapshots(book_frame, samples)
    pre = book.ts_ns < ESH4_20231225_OPEN_NS
    assert (~book.two_sided[pre]).mean() > 0.9  # the pre-open auction: crossed or locked
    clean = exclude_crossed_or_preopen(book, ESH4_20231225_OPEN_NS)
    assert clean.two_sided.all() and (clean.ts_ns >= ESH4_20231225_OPEN_NS).all()
    assert len(clean) >= 0.99 * (~pre).sum()


# -- book-walk truth on the real books (numbers for the fill-model design) -------------------
def _walk_table(walk: pd.DataFrame) -> pd.DataFrame:
    return walk.groupby(["size_rel_top", "side"]).agg(
        median_cost_bps=("cost_bps", "median"), mean_cost_bps=("cost_bps", "mean"),
        deep_enough=("deep_enough", "mean"), median_visible_cost_bps=("visible_cost_bps", "median"),
        median_levels=("levels_used", "median"))


def test_real_book_walk_costs(btc):
    depth, _quotes, _book, _elapsed = btc
    snapshot_ts = int(depth.loc[depth["kind"] == "snapshot", "ts_ns"].max())
    samples = np.arange(snapshot_ts + 10**9, int(depth["ts_ns"].iloc[-1]), 250_000_000)
    # 1,000 levels (the REST snapshot's depth): 20x the typical touch needs ~200 levels.
    deep_book = rebuild_binance_book(depth, samples, levels=1000)
    btc_top = typical_top_size(deep_book)
    btc_walk = book_walk_truth(deep_book, np.array([1.0, 5.0, 20.0]), np.random.default_rng(1), btc_top,
                               size_jitter=0.0)
    es_frame = load_bundled("cme_ESH4_book5_from_mbo_20231225.csv.gz").frame
    es_book = exclude_crossed_or_preopen(
        book5_snapshots(es_frame, np.arange(ESH4_20231225_OPEN_NS, int(es_frame["ts_ns"].iloc[-1]), 10**9)),
        ESH4_20231225_OPEN_NS)
    es_top = typical_top_size(es_book)
    es_walk = book_walk_truth(es_book, np.array([1.0, 5.0, 20.0]), np.random.default_rng(1), es_top, size_jitter=0.0)
    with pd.option_context("display.width", 200, "display.precision", 4):
        print(f"\nBTCUSDT book walk ({len(deep_book):,} samples every 250 ms, 1000 levels, typical top "
              f"{btc_top:.4f} BTC):\n{_walk_table(btc_walk).to_string()}")
        print(f"\nESH4 book walk ({len(es_book):,} samples every 1 s after the open, 5 levels, typical top "
              f"{es_top:g} contracts):\n{_walk_table(es_walk).to_string()}")
    # 1x the typical touch mostly fills at the touch: cost = half the spread
    one = btc_walk[btc_walk["size_rel_top"] == 1.0]
    assert np.nanmedian(one["cost_bps"]) == pytest.approx(np.median(one["half_spread_bps"]), abs=0.01)
    # deeper orders cost more, and the 5-level ES book is too shallow for 20x
    assert np.nanmedian(btc_walk.loc[btc_walk["size_rel_top"] == 20.0, "cost_bps"]) > 2.0
    assert es_walk.loc[es_walk["size_rel_top"] == 20.0, "deep_enough"].mean() < 0.05
