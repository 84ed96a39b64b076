"""The two faces of the simulator agree, and the rules' properties hold, on real data.

The event engine (:func:`tradebook.sim.engine.replay`) and the vectorized path
(:func:`tradebook.sim.vectorized.replay_vectorized`) implement the same rules
(:mod:`tradebook.sim.orders`) separately. On real BTCUSDT and IBM slices, with a
calibrated cost curve, fees and random latency (sigma > 0), a mixed set of requests
(market, limit at / inside / behind the touch, marketable limits, stops, stop-limits,
IOC, FOK, DAY, cancels, replaces) must give identical fills and order states; then
hypothesis draws request sets and checks the price, quantity, monotone-cost and
determinism properties. With the whole calibrated model (depth profile, completion
model, price improvement) the same holds, and a market order of 20x the touch walks
the L1-implied book in parts (issue 16, done-when 1).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tradebook.data import load_bundled
from tradebook.model import get_instrument
from tradebook.sim.calibrate import calibrate_marketable
from tradebook.sim.depth import recent_touch_size
from tradebook.sim.engine import SimResult, replay
from tradebook.sim.fill_model import DEFAULT_FEES, FeeSchedule, LatencyModel
from tradebook.sim.orders import take_liquidity
from tradebook.sim.walk import walk_params
from tradebook.sim.truth import regular_hours_mask, sweeps
from tradebook.sim.vectorized import replay_vectorized

BTC, IBM = "BTCUSDT.BINANCE", "IBM.XNYS"
BTC_FILES = "binance_spot_btcusdt_20240808T2354-20240809T0005_"
MIDNIGHT_NS = pd.Timestamp("2024-08-09", tz="UTC").value  # DAY orders on Binance expire here
LATENCY = LatencyModel(submit_to_ack_median_ns=20_000_000, ack_to_fill_median_ns=1_000_000, sigma=0.5)
KINDS = ("market", "limit_at", "limit_inside", "limit_behind", "marketable", "stop", "stop_limit")


# -- real slices and calibrated models -------------------------------------------------------------------------------
class Slice:
    def __init__(self, instrument_id: str, quotes: pd.DataFrame, trades: pd.DataFrame, model, base_qty: float):
        self.instrument = get_instrument(instrument_id)
        self.quotes = quotes.reset_index(drop=True)
        self.trades = trades.reset_index(drop=True)
        self.model = model
        self.base_qty = base_qty
        self.tick = float(self.instrument.tick_size)


def _window(frame: pd.DataFrame, start: int, end: int) -> pd.DataFrame:
    ts = frame["ts_ns"].to_numpy()
    return frame[(ts >= start) & (ts <= end)]


@pytest.fixture(scope="module")
def btc() -> Slice:
    quotes = load_bundled(BTC_FILES + "l1_quotes.csv.gz").frame
    trades = load_bundled(BTC_FILES + "trades.csv.gz").frame
    model = calibrate_marketable(BTC, 0.01, sweeps(trades, quotes), fees=DEFAULT_FEES["BINANCE"], latency=LATENCY)
    # 4,000 quotes around midnight UTC, so DAY orders expire inside the slice
    cut = int(np.searchsorted(quotes["ts_ns"].to_numpy(), MIDNIGHT_NS))
    q = quotes.iloc[cut - 2_500: cut + 1_500][["ts_ns", "bid_px", "ask_px", "bid_sz", "ask_sz"]]
    t = _window(trades, int(q["ts_ns"].iloc[0]), int(q["ts_ns"].iloc[-1]))[["ts_ns", "price", "size",
                                                                              "aggressor_side"]]
    return Slice(BTC, q, t, model, 0.001)


@pytest.fixture(scope="module")
def ibm() -> Slice:
    quotes = load_bundled("algoseek_IBM_20131007_l1_nbbo.csv.gz").frame
    trades = load_bundled("algoseek_IBM_20131007_trades.csv.gz").frame
    quotes = quotes[regular_hours_mask(quotes["ts_ns"].to_numpy(), IBM)]
    trades = trades[regular_hours_mask(trades["ts_ns"].to_numpy(), IBM) & ~trades["suspicious"].to_numpy(bool)]
    model = calibrate_marketable(IBM, 0.01, sweeps(trades, quotes), fees=FeeSchedule(per_unit=0.005),
                                 latency=LATENCY)
    q = quotes.iloc[20_000:23_000][["ts_ns", "bid_px", "ask_px", "bid_sz", "ask_sz"]]
    t = _window(trades, int(q["ts_ns"].iloc[0]), int(q["ts_ns"].iloc[-1]))[["ts_ns", "price", "size"]]
    return Slice(IBM, q, t, model, 100.0)


def mixed_requests(data: Slice, rng: np.random.Generator, n_orders: int, horizon: float = 0.9) -> pd.DataFrame:
    """``n_orders`` orders of every kind at random times in the slice, with cancels and replaces."""
    q = data.quotes
    ts, bid, ask = q["ts_ns"].to_numpy(), q["bid_px"].to_numpy(), q["ask_px"].to_numpy()
    rows: list[dict] = []
    tick = data.tick

    def px(value: float) -> float:
        return round(round(value / tick) * tick, 8)

    for ref in range(n_orders):
        i = int(rng.integers(0, int(len(q) * horizon)))
        if not bid[i] < ask[i]:
            continue
        t0 = int(ts[i]) + int(rng.integers(0, 2_000_000))
        side = 1 if rng.random() < 0.5 else -1
        touch, far = (bid[i], ask[i]) if side > 0 else (ask[i], bid[i])
        k = int(rng.integers(1, 4))
        kind = KINDS[int(rng.integers(0, len(KINDS)))]
        qty = data.base_qty * float(rng.choice([1, 3, 10, 50, 200]))
        row = dict(ts_ns=t0, action="submit", order_ref=ref, side="buy" if side > 0 else "sell", quantity=qty,
                   order_type="limit", limit_px=np.nan, stop_px=np.nan, tif="gtc", expire_ts_ns=-1)
        tifs = ["gtc", "day", "ioc", "fok"]
        if kind == "market":
            row.update(order_type="market", tif=str(rng.choice(["gtc", "ioc", "fok"])))
        elif kind == "limit_at":
            row.update(limit_px=px(touch), tif=str(rng.choice(tifs)))
        elif kind == "limit_inside":
            inside = touch + side * tick
            row.update(limit_px=px(inside if side * (far - inside) > 0 else touch), tif=str(rng.choice(tifs)))
        elif kind == "limit_behind":
            row.update(limit_px=px(touch - side * k * tick), tif=str(rng.choice(["gtc", "day"])))
        elif kind == "marketable":
            row.update(limit_px=px(far + side * (k - 1) * tick), tif=str(rng.choice(tifs)))
        elif kind == "stop":
            row.update(order_type="stop", stop_px=px(far + side * k * tick), tif=str(rng.choice(["gtc", "day"])))
        else:
            stop = far + side * k * tick
            row.update(order_type="stop_limit", stop_px=px(stop), limit_px=px(stop + side * (k - 2) * tick),
                       tif=str(rng.choice(["gtc", "day"])))
        rows.append(row)
        later = t0 + int(rng.integers(1_000_000, 20_000_000_000))
        if rng.random() < 0.25:
            rows.append(dict(ts_ns=later, action="cancel", order_ref=ref))
        elif row["order_type"] in ("limit", "stop_limit") and rng.random() < 0.35:
            change = dict(ts_ns=later, action="replace", order_ref=ref)
            if rng.random() < 0.7:
                change["limit_px"] = px(row["limit_px"] + side * int(rng.integers(-3, 4)) * tick)
            if rng.random() < 0.5 or "limit_px" not in change:
                change["quantity"] = qty * 2
            rows.append(change)
    return pd.DataFrame(rows)


def assert_same(engine: SimResult, vectorized: SimResult) -> None:
    """Identical fills (order_ref, times, quantity, price, liquidity, fee) and order states."""
    keys = ["order_ref", "ts_ns", "price"]
    a = engine.fills.sort_values(keys, kind="stable").reset_index(drop=True)
    b = vectorized.fills.sort_values(keys, kind="stable").reset_index(drop=True)
    assert len(a) == len(b), (len(a), len(b))
    for column in ("order_ref", "ts_ns", "report_ts_ns", "side", "liquidity"):
        assert a[column].tolist() == b[column].tolist(), column
    for column in ("quantity", "price", "fee"):
        np.testing.assert_allclose(a[column].to_numpy(float), b[column].to_numpy(float), rtol=1e-12, atol=0,
                                   err_msg=column)
    oa = engine.orders.sort_values("order_ref").reset_index(drop=True)
    ob = vectorized.orders.sort_values("order_ref").reset_index(drop=True)
    assert list(oa.columns) == list(ob.columns)
    for column in ("order_ref", "side", "order_type", "tif", "status", "submit_ts_ns", "arrival_ts_ns", "done_ts_ns"):
        assert oa[column].tolist() == ob[column].tolist(), column
    for column in ("quantity", "limit_px", "stop_px", "filled_qty", "avg_price"):
        np.testing.assert_allclose(oa[column].to_numpy(float), ob[column].to_numpy(float), rtol=1e-12, atol=0,
                                   err_msg=column)


# -- (1) agreement on real data ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["btc", "ibm"])
def test_engine_and_vectorized_agree_on_a_mixed_request_set(name, request):
    data: Slice = request.getfixturevalue(name)
    requests = mixed_requests(data, np.random.default_rng(7), 300)
    engine = replay(data.model, data.instrument, data.quotes, data.trades, requests, seed=3)
    vectorized = replay_vectorized(data.model, data.instrument, data.quotes, data.trades, requests, seed=3)
    assert_same(engine, vectorized)
    # the set exercised what it claims to: every outcome and both liquidity roles occur
    statuses = set(vectorized.orders["status"])
    assert {"filled", "cancelled", "working"} <= statuses, statuses
    assert set(vectorized.fills["liquidity"]) == {"maker", "taker"}
    if name == "btc":
        assert "expired" in statuses  # DAY orders at midnight UTC
    # and some large orders filled in parts
    assert (vectorized.fills.groupby("order_ref").size() > 1).any()


def test_agreement_without_trades_uses_the_quote_rule(btc):
    requests = mixed_requests(btc, np.random.default_rng(8), 150)
    engine = replay(btc.model, btc.instrument, btc.quotes, None, requests, seed=1)
    vectorized = replay_vectorized(btc.model, btc.instrument, btc.quotes, None, requests, seed=1)
    assert_same(engine, vectorized)
    assert (vectorized.fills["liquidity"] == "maker").any()


# -- (2) properties ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small(btc) -> Slice:
    q = btc.quotes.iloc[:1_500]
    t = _window(btc.trades, int(q["ts_ns"].iloc[0]), int(q["ts_ns"].iloc[-1]))
    return Slice(BTC, q, t, btc.model, 0.001)


request_sets = st.tuples(st.integers(0, 2**32 - 1), st.integers(1, 25), st.integers(0, 1_000))


def _drawn_replay(small: Slice, drawn: tuple[int, int, int]) -> tuple[pd.DataFrame, int, SimResult]:
    """The requests a drawn (rng seed, order count, latency seed) makes on ``small``, the seed, and their replay."""
    rng_seed, n_orders, seed = drawn
    requests = mixed_requests(small, np.random.default_rng(rng_seed), n_orders)
    return requests, seed, replay_vectorized(small.model, small.instrument, small.quotes, small.trades, requests,
                                             seed=seed)


def _quote_bounds(quotes: pd.DataFrame, ts_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lowest bid and highest ask among the quotes that can be in force at each time.

    A fill at ``t`` happens at the quote in force just before ``t`` (a fill at arrival)
    or at one of the quotes stamped exactly ``t`` (several quotes can share a stamp).
    """
    valid = quotes[(quotes["bid_px"] < quotes["ask_px"]) & (quotes["bid_sz"] > 0) & (quotes["ask_sz"] > 0)]
    qts = valid["ts_ns"].to_numpy()
    bid, ask = valid["bid_px"].to_numpy(), valid["ask_px"].to_numpy()
    lows, highs = [], []
    for t in ts_ns:
        first = max(int(np.searchsorted(qts, t, side="left")) - 1, 0)
        last = int(np.searchsorted(qts, t, side="right"))
        lows.append(bid[first:last].min())
        highs.append(ask[first:last].max())
    return np.array(lows), np.array(highs)


@settings(max_examples=50)
@given(request_sets)
def test_fills_respect_limits_touch_and_quantity(small, drawn):
    requests, seed, result = _drawn_replay(small, drawn)
    # the loosest limit an order had (a replace may have moved it between fills)
    limits = requests[requests["limit_px"].notna()] if "limit_px" in requests else requests.iloc[:0]
    loosest = pd.concat([limits.groupby("order_ref")["limit_px"].max().rename("high"),
                         limits.groupby("order_ref")["limit_px"].min().rename("low")], axis=1).reset_index()
    fills = result.fills.merge(loosest, on="order_ref", how="left")
    buy = fills["side"] > 0
    limited = fills["high"].notna()
    assert not (limited & buy & (fills["price"] > fills["high"] * (1 + 1e-12))).any()  # never through the limit
    assert not (limited & ~buy & (fills["price"] < fills["low"] * (1 - 1e-12))).any()
    taker = fills[fills["liquidity"] == "taker"]
    if len(taker):
        low_bid, high_ask = _quote_bounds(small.quotes, taker["ts_ns"].to_numpy())
        taker_buy = taker["side"].to_numpy() > 0
        price = taker["price"].to_numpy()
        assert (price[taker_buy] >= low_bid[taker_buy]).all()  # a buy never below the bid
        assert (price[~taker_buy] <= high_ask[~taker_buy]).all()  # a sell never above the ask
    maker = fills[fills["liquidity"] == "maker"]
    assert ((maker["price"] <= maker["high"]) & (maker["price"] >= maker["low"])).all()  # at a limit it had
    total = result.fills.groupby("order_ref")["quantity"].sum()
    orders = result.orders.set_index("order_ref")
    assert (total <= orders.loc[total.index, "quantity"] * (1 + 1e-9)).all()
    np.testing.assert_allclose(total.to_numpy(), orders.loc[total.index, "filled_qty"].to_numpy(), rtol=1e-12)
    assert (result.fills["report_ts_ns"] >= result.fills["ts_ns"]).all()


@settings(max_examples=60)
@given(st.sampled_from(["btc_model", "ibm_model"]), st.floats(0.001, 2_000.0), st.floats(0.0, 2_000.0),
       st.floats(0.01, 5.0), st.floats(0.001, 500.0), st.sampled_from([1, -1]))
def test_marketable_cost_grows_with_size(models, which, size, extra, spread, touch, side):
    model = models[which]
    half_bps = np.full(2, spread / 2 / 100.0 * 1e4)
    costs = model.marketable_cost_bps(np.array([size, size + extra]), half_bps, np.full(2, touch))
    assert costs[1] >= costs[0]
    take = model.take_params(1e-5)
    bid, ask = 100.0, 100.0 + spread
    _, small_px = take_liquidity(side, size, np.nan, bid, ask, touch, touch, take.edges, take.ratios,
                                 take.slippage_bps, take.max_take_over_touch, take.lot)
    _, large_px = take_liquidity(side, size + extra, np.nan, bid, ask, touch, touch, take.edges, take.ratios,
                                 take.slippage_bps, take.max_take_over_touch, take.lot)
    if not (np.isnan(small_px) or np.isnan(large_px)):
        assert side * large_px >= side * small_px - 1e-9  # a bigger order never gets a better price


@pytest.fixture(scope="module")
def models(btc, ibm) -> dict:
    return {"btc_model": btc.model, "ibm_model": ibm.model}


@settings(max_examples=40)
@given(request_sets)
def test_same_seed_same_fills_and_the_faces_agree(small, drawn):
    requests, seed, first = _drawn_replay(small, drawn)
    again = replay_vectorized(small.model, small.instrument, small.quotes, small.trades, requests, seed=seed)
    pd.testing.assert_frame_equal(first.fills, again.fills)
    pd.testing.assert_frame_equal(first.orders, again.orders)
    engine = replay(small.model, small.instrument, small.quotes, small.trades, requests, seed=seed)
    assert_same(engine, first)
    engine_again = replay(small.model, small.instrument, small.quotes, small.trades, requests, seed=seed)
    pd.testing.assert_frame_equal(engine.fills, engine_again.fills)


# -- (3) the whole model: the L1-implied book walk, refills, price improvement ---------------------------------------
@pytest.fixture(scope="module")
def btc_full():
    """BTCUSDT calibrated with every part (depth profile from the L2 capture, completion model), the whole capture."""
    from tradebook.sim.fidelity import bundled_instrument_data, calibrate_instrument
    data = bundled_instrument_data(BTC)
    model = calibrate_instrument(data, latency=LATENCY).model
    assert model.depth is not None and model.completion is not None
    quotes = data.quotes[["ts_ns", "bid_px", "ask_px", "bid_sz", "ask_sz"]].reset_index(drop=True)
    trades = data.trades[["ts_ns", "price", "size", "aggressor_side"]].reset_index(drop=True)
    return Slice(BTC, quotes, trades, model, 0.001)


def _one_order(data: Slice, i: int, tif: str, multiple: float = 20.0) -> tuple[pd.DataFrame, float]:
    """A market buy of ``multiple`` times the ask size of quote ``i``, sent at that quote."""
    qty = round(multiple * float(data.quotes["ask_sz"].iloc[i]), 5)
    return pd.DataFrame([dict(ts_ns=int(data.quotes["ts_ns"].iloc[i]), action="submit", order_ref=1, side="buy",
                              quantity=qty, order_type="market", tif=tif)]), qty


def _quote_with_ask_size(data: Slice, low: float, high: float) -> int:
    sizes = data.quotes["ask_sz"].to_numpy()
    return int(np.flatnonzero((sizes > low) & (sizes < high))[10])


def _both(data: Slice, requests: pd.DataFrame, seed: int = 1) -> SimResult:
    engine = replay(data.model, data.instrument, data.quotes, data.trades, requests, seed=seed)
    vectorized = replay_vectorized(data.model, data.instrument, data.quotes, data.trades, requests, seed=seed)
    assert_same(engine, vectorized)
    return engine


def test_a_market_order_of_20_touches_walks_the_implied_book_in_parts(btc_full):
    """At a quote showing a typical touch (1.1-1.3 BTC), 20x it fills at once in parts at worsening prices."""
    i = _quote_with_ask_size(btc_full, 1.1, 1.3)
    requests, qty = _one_order(btc_full, i, "gtc")
    result = _both(btc_full, requests)
    fills = result.fills
    print(f"\n20x the touch ({qty} BTC) at quote {btc_full.quotes.iloc[i].to_dict()}:\n"
          f"{fills[['ts_ns', 'quantity', 'price', 'liquidity', 'fee']].to_string()}")
    order = result.orders.iloc[0]
    assert order["status"] == "filled" and order["filled_qty"] == pytest.approx(qty, rel=1e-12)
    assert len(fills) >= 5 and (fills["liquidity"] == "taker").all()
    assert (np.diff(fills["price"].to_numpy()) > 0).all()  # every part a level further
    arrival = int(order["arrival_ts_ns"])
    quote = btc_full.quotes[btc_full.quotes["ts_ns"] <= arrival].iloc[-1]
    assert fills["price"].iloc[0] == quote["ask_px"]  # the touch in force at arrival first
    ticks = (fills["price"].to_numpy() - quote["ask_px"]) / btc_full.tick
    np.testing.assert_allclose(ticks, np.round(ticks), atol=1e-6)  # each part at a whole tick beyond it
    # the average price is what the depth curve predicts for this size (within the ladder's tick rounding)
    mid = (quote["bid_px"] + quote["ask_px"]) / 2
    predicted = btc_full.model.depth.cost_bps(1, qty, quote["bid_px"], quote["ask_px"], quote["bid_sz"],
                                              quote["ask_sz"])[0]
    walked = (order["avg_price"] - mid) / mid * 1e4
    excess_ratio = (walked - 0.5 * (quote["ask_px"] - quote["bid_px"]) / mid * 1e4) / \
        (predicted - 0.5 * (quote["ask_px"] - quote["bid_px"]) / mid * 1e4)
    print(f"walked {walked:.3f} bps against the mid; the depth profile predicts {predicted:.3f} bps")
    assert 0.5 < excess_ratio < 1.6


def test_ioc_fills_what_the_book_holds_and_fok_is_refused(btc_full):
    """At a deep touch (> 5 BTC) 20x it exceeds the implied book: IOC fills part and cancels the rest; FOK refused."""
    i = _quote_with_ask_size(btc_full, 5.0, 6.0)
    requests, qty = _one_order(btc_full, i, "ioc")
    ioc = _both(btc_full, requests)
    order = ioc.orders.iloc[0]
    print(f"\nIOC {qty} BTC: {order['filled_qty']} filled in {len(ioc.fills)} parts, then {order['status']}")
    print(ioc.fills[["ts_ns", "quantity", "price"]].to_string())
    assert order["status"] == "cancelled" and 0 < order["filled_qty"] < qty
    assert len(ioc.fills) >= 5 and (ioc.fills["ts_ns"] == order["arrival_ts_ns"]).all()
    assert (np.diff(ioc.fills["price"].to_numpy()) > 0).all()
    # the book it emptied: the touch at arrival plus the implied ladder, in the recent touch size at arrival
    walk = walk_params(btc_full.model, btc_full.instrument)
    arrival = int(order["arrival_ts_ns"])
    unit = recent_touch_size(btc_full.quotes, arrival, walk.unit_tau_ns)[0] if walk.unit_tau_ns else 1.0
    arrival_quote = btc_full.quotes[btc_full.quotes["ts_ns"] <= arrival].iloc[-1]
    assert order["filled_qty"] == pytest.approx(arrival_quote["ask_sz"] + walk.depth * unit, abs=2e-5)

    fok = _both(btc_full, requests.assign(tif="fok"))
    assert fok.orders.iloc[0]["status"] == "cancelled" and fok.fills.empty
    # where the liquidity is there, FOK fills whole (in parts, at one instant)
    small, small_qty = _one_order(btc_full, _quote_with_ask_size(btc_full, 1.1, 1.3), "fok")
    filled = _both(btc_full, small)
    assert filled.orders.iloc[0]["status"] == "filled" and len(filled.fills) > 1
    assert filled.fills["quantity"].sum() == pytest.approx(small_qty, rel=1e-12)


def test_a_working_remainder_takes_only_what_has_refilled(btc_full):
    """GTC of 20x a deep touch: the first walk empties the book, later takes wait for the calibrated refill."""
    i = _quote_with_ask_size(btc_full, 5.0, 6.0)
    requests, qty = _one_order(btc_full, i, "gtc")
    result = _both(btc_full, requests)
    fills = result.fills
    takes = fills.groupby("ts_ns")["quantity"].sum()
    print(f"\nGTC {qty} BTC: {len(takes)} takes\n{takes.head(8).to_string()}")
    assert len(takes) >= 3
    completion = btc_full.model.completion
    rate = completion.fill_size / completion.refill_median_ns
    times = takes.index.to_numpy()
    later = takes.to_numpy()[1:]
    # the book stays emptied: each later take is what refilled since the one before plus what the book in
    # view grew by (the recorded touch, and the implied ladder with the recent touch size), within a lot
    q = btc_full.quotes
    touch = q["ask_sz"].to_numpy()[np.searchsorted(q["ts_ns"].to_numpy(), times, side="right") - 1]
    walk = walk_params(btc_full.model, btc_full.instrument)
    unit = recent_touch_size(q, times, walk.unit_tau_ns) if walk.unit_tau_ns else np.ones(len(times))
    book = touch + walk.depth * unit
    assert (later <= rate * np.diff(times) + np.maximum(np.diff(book), 0.0) + 1e-5 + 1e-6).all()
    # and it resumes only once a typical touch (or the remainder) is there again
    remaining_before = qty - np.cumsum(takes.to_numpy())[:-1]
    assert (later >= np.minimum(completion.fill_size, remaining_before) - 1e-5).all()
    assert result.orders.iloc[0]["status"] == "filled"


def test_the_faces_agree_on_mixed_requests_with_the_whole_model(btc, btc_full):
    data = Slice(BTC, btc.quotes, btc.trades, btc_full.model, 0.001)
    requests = mixed_requests(data, np.random.default_rng(11), 300)
    result = _both(data, requests, seed=5)
    assert (result.fills.groupby("order_ref").size() > 1).any()
    no_trades = replay(data.model, data.instrument, data.quotes, None, requests, seed=2)
    assert_same(no_trades, replay_vectorized(data.model, data.instrument, data.quotes, None, requests, seed=2))


@pytest.fixture(scope="module")
def ibm_full(ibm) -> Slice:
    from tradebook.sim.fidelity import bundled_instrument_data, calibrate_instrument
    model = calibrate_instrument(bundled_instrument_data(IBM), latency=LATENCY).model
    assert model.completion is not None and model.price_improvement_share > 0.05
    return Slice(IBM, ibm.quotes, ibm.trades, model, 100.0)


def test_equity_price_improvement_is_a_seeded_draw(ibm_full):
    """Touch-sized IBM market orders: the calibrated share prints inside the spread, drawn per order from the seed."""
    q = ibm_full.quotes
    rng = np.random.default_rng(3)
    rows = [dict(ts_ns=int(q["ts_ns"].iloc[i]), action="submit", order_ref=k, side="buy" if k % 2 else "sell",
                 quantity=100.0, order_type="market", tif="ioc")
            for k, i in enumerate(np.sort(rng.choice(np.arange(len(q) - 50), 400, replace=False)))]
    requests = pd.DataFrame(rows)
    first = _both(ibm_full, requests, seed=4)
    again = replay_vectorized(ibm_full.model, ibm_full.instrument, q, ibm_full.trades, requests, seed=4)
    pd.testing.assert_frame_equal(first.fills.reset_index(drop=True), again.fills.reset_index(drop=True))
    other = replay_vectorized(ibm_full.model, ibm_full.instrument, q, ibm_full.trades, requests, seed=9)

    def inside(result: SimResult) -> np.ndarray:
        fills = result.fills
        at = np.searchsorted(q["ts_ns"].to_numpy(), fills["ts_ns"].to_numpy(), side="right") - 1
        bid, ask = q["bid_px"].to_numpy()[at], q["ask_px"].to_numpy()[at]
        price = fills["price"].to_numpy()
        assert ((price >= bid - 1e-9) & (price <= ask + 1e-9)).all()
        return (price > bid + 1e-9) & (price < ask - 1e-9)

    share = ibm_full.model.price_improvement_share
    got = inside(first).mean()
    print(f"\nIBM: {got:.1%} of touch-sized fills inside the spread (calibrated {share:.1%})")
    assert abs(got - share) < 0.08
    assert not np.array_equal(inside(first), inside(other))  # a draw, not the median for everyone


@settings(max_examples=25)
@given(request_sets)
def test_whole_model_same_seed_same_fills_and_the_faces_agree(small, btc_full, drawn):
    data = Slice(BTC, small.quotes, small.trades, btc_full.model, 0.001)
    rng_seed, n_orders, seed = drawn
    requests = mixed_requests(data, np.random.default_rng(rng_seed), n_orders)
    first = _both(data, requests, seed=seed)
    again = replay(data.model, data.instrument, data.quotes, data.trades, requests, seed=seed)
    pd.testing.assert_frame_equal(first.fills, again.fills)


@pytest.mark.parametrize("instrument_id, base_qty", [("ESH4.GLBX", 1.0), ("EURUSD.DUKASCOPY", 100_000.0)])
def test_the_faces_agree_with_the_whole_model_on_futures_and_fx(instrument_id, base_qty):
    """ES (depth from its top-5 books: a ladder in recent touch sizes); EURUSD (quotes only: the ladder its touch
    depletions imply, no trades to check it against)."""
    from tradebook.sim.fidelity import bundled_instrument_data, calibrate_instrument
    data = bundled_instrument_data(instrument_id)
    model = calibrate_instrument(data, latency=LATENCY).model
    walk = walk_params(model, get_instrument(instrument_id))
    assert walk is not None and (len(walk.sizes) > 0) == (model.depth is not None)
    assert model.depth is not None
    quotes = data.quotes[["ts_ns", "bid_px", "ask_px", "bid_sz", "ask_sz"]].reset_index(drop=True)
    middle = len(quotes) // 2
    q = quotes.iloc[middle: middle + 4_000]
    trades = None
    if data.has_trades:
        trades = _window(data.trades, int(q["ts_ns"].iloc[0]), int(q["ts_ns"].iloc[-1]))
        trades = trades[["ts_ns", "price", "size"]]
    piece = Slice(instrument_id, q, trades if trades is not None else pd.DataFrame(), model, base_qty)
    requests = mixed_requests(piece, np.random.default_rng(4), 200)
    engine = replay(model, piece.instrument, piece.quotes, trades, requests, seed=6)
    vectorized = replay_vectorized(model, piece.instrument, piece.quotes, trades, requests, seed=6)
    assert_same(engine, vectorized)
    assert (vectorized.fills["liquidity"] == "taker").any()


@pytest.fixture(scope="module")
def es_book() -> Slice:
    """ESH4's top-5 books (the feed carries depth) after the pre-open, with the whole ESH4 calibration."""
    from tradebook.sim.fidelity import bundled_instrument_data, calibrate_instrument
    model = calibrate_instrument(bundled_instrument_data("ESH4.GLBX"), latency=LATENCY).model
    book = load_bundled("ticks/futures/cme_ESH4_book5_from_mbo_20231225.csv.gz").frame
    book = book[book["ts_ns"] >= pd.Timestamp("2023-12-25T23:00Z").value].reset_index(drop=True)
    book = book.iloc[4_000:8_000].drop(columns="ts_event_ns")
    trades = load_bundled("ticks/futures/cme_ESH4_trades_from_mbo_20231225.csv.gz").frame
    trades = _window(trades, int(book["ts_ns"].iloc[0]), int(book["ts_ns"].iloc[-1]))
    return Slice("ESH4.GLBX", book, trades[["ts_ns", "price", "size", "aggressor_side"]], model, 1.0)


def test_where_the_feed_carries_the_book_the_walk_takes_its_levels_then_the_implied_ones(es_book):
    q = es_book.quotes
    requests = pd.DataFrame([dict(ts_ns=int(q["ts_ns"].iloc[1_000]), action="submit", order_ref=1, side="buy",
                                  quantity=1_000.0, order_type="market", tif="ioc")])
    result = _both(es_book, requests)
    fills = result.fills
    arrival = int(result.orders["arrival_ts_ns"].iloc[0])
    book = q[q["ts_ns"] <= arrival].iloc[-1]
    print(f"\nESH4 buy 1,000 at the book {[(book[f'ask_px_{i}'], book[f'ask_sz_{i}']) for i in range(5)]}:\n"
          f"{fills[['quantity', 'price']].to_string()}")
    recorded = [(book[f"ask_sz_{i}"], book[f"ask_px_{i}"]) for i in range(5)]
    assert list(zip(fills["quantity"].iloc[:5], fills["price"].iloc[:5])) == recorded  # the real book first
    # then the implied ladder beyond the deepest recorded level: fitted on ES's own top-5 books, it reaches
    # no further than they do, so here the IOC takes the five levels and cancels the rest
    walk = walk_params(es_book.model, es_book.instrument)
    beyond = book["ask_px_0"] + walk.offsets_ticks * es_book.tick > book["ask_px_4"]
    assert len(fills) == 5 + int(beyond.sum())
    assert (fills["price"].iloc[5:] > book["ask_px_4"]).all()
    assert (np.diff(fills["price"].to_numpy()) > 0).all()
    assert result.orders["status"].iloc[0] == "cancelled" or fills["quantity"].sum() == 1_000.0
    # and the faces agree on a mixed request set over the books
    l1 = q.rename(columns={f"{name}_0": name for name in ("bid_px", "ask_px", "bid_sz", "ask_sz")})
    mixed = mixed_requests(Slice("ESH4.GLBX", l1, pd.DataFrame(), es_book.model, 1.0), np.random.default_rng(2), 200)
    walked = _both(es_book, mixed, seed=3)
    assert (walked.fills.groupby("order_ref").size() > 1).any()
    assert set(walked.fills["liquidity"]) == {"maker", "taker"}  # resting orders queue behind the recorded levels


def test_the_queue_behind_the_touch_comes_from_the_book_where_there_is_one():
    from tradebook.sim.orders import queue_ahead_book
    px, sz = np.array([99.99, 99.97]), np.array([4.0, 6.0])  # bid levels behind a 100.00 bid
    assert queue_ahead_book(1, 100.00, 100.00, 100.01, 3.0, 2.0, px, sz) == 3.0  # at the touch: its size
    assert queue_ahead_book(1, 99.97, 100.00, 100.01, 3.0, 2.0, px, sz) == 6.0  # a recorded level
    assert queue_ahead_book(1, 99.98, 100.00, 100.01, 3.0, 2.0, px, sz) == 0.0  # an empty price inside the book
    assert np.isnan(queue_ahead_book(1, 99.96, 100.00, 100.01, 3.0, 2.0, px, sz))  # beyond it: unknown
    assert np.isnan(queue_ahead_book(1, 99.98, 100.00, 100.01, 3.0, 2.0, px[:0], sz[:0]))  # L1: unknown
    assert queue_ahead_book(-1, 100.03, 100.00, 100.01, 3.0, 2.0, np.array([100.02, 100.03]),
                            np.array([1.0, 5.0])) == 5.0  # a sell behind the ask
