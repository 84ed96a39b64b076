"""Simulator throughput on the standard workload, next to a plain numpy pass over the same arrays.

The standard workload (issue 3), so the figures can be set beside other systems:
L1 quotes tiled from the bundled BTCUSDT capture to 1M and 10M rows, each copy
shifted by the capture's span plus one mean quote interval (prices as recorded);
every 100th quote a market order of 0.001 BTC, alternating buy and sell; every
1000th quote the resting limit order (0.001 BTC) is cancelled and a new one
submitted (cancel + new submit, not a replace: the side alternates, and a replace
keeps the side), 1 tick inside the touch on even replacements and 1 tick outside on
odd ones. The model is calibrated on the capture's sweeps (cost curve), with
Binance's fees and latency on (lognormal, sigma 0.5). The capture's trades are
tiled with the quotes, so resting orders fill by queue position and trades through.

Rates are quotes per second of the whole replay (trades and orders included). Each face
runs twice: with today's touch-only model (the cost curve alone, what the issue-3 targets
were set on) and with the whole calibrated model (``calibrate_instrument``: marketable
orders walk the L1-implied book of the depth profile fitted on the capture's L2 diffs,
remainders wait for the completion model's refill, fees and latency as above); the bench
prints which parts were on. The ladder is sized in the instrument's recent touch size,
which the vectorized path folds from the quotes only when a walk goes beyond the touch
(on this workload about 8% of the 0.001 BTC orders meet a touch smaller than they are,
so nearly every quote is still folded, in the stretches between those walks).
"""

from __future__ import annotations

import time

import duckdb
import numba
import numpy as np
import pandas as pd

from tradebook.data import load_bundled
from tradebook.model import get_instrument
from tradebook.sim.calibrate import calibrate_marketable
from tradebook.sim.fill_model import DEFAULT_FEES, LatencyModel
from tradebook.sim.orders import ORDER_TYPE_CODE, TIF_CODE, OrderType, TimeInForce
from tradebook.sim.truth import aggressor_from_column, sweeps
from tradebook.sim.vectorized import (
    ACTION_CODE,
    ArrayParams,
    QuoteArrays,
    RequestArrays,
    TradeArrays,
    replay_arrays,
    replay_vectorized,
)
from tradebook.sim.walk import walk_params

CAPTURE = "binance_spot_btcusdt_20240808T2354-20240809T0005_"
INSTRUMENT = "BTCUSDT.BINANCE"
SIZES = (1_000_000, 10_000_000)
ORDER_QTY = 0.001
MARKET_EVERY, LIMIT_EVERY = 100, 1000
ENGINE_BUDGET_S = 60.0
TARGET_VECTORIZED, TARGET_ENGINE = 20e6, 350e3
TARGET_WHOLE_VECTORIZED, TARGET_WHOLE_ENGINE = 20e6, 1e6  # issue 16, with the whole model on
PEERS = (("NautilusTrader backtest, orders working", "50k-100k"), ("NautilusTrader backtest, no orders", "~340k"),
         ("hftbacktest", "~4.9M"), ("bare numba pass", "~400M"))


# -- the workload ---------------------------------------------------------------------------------------------------------
def tile(quotes: pd.DataFrame, trades: pd.DataFrame, rows: int) -> tuple[QuoteArrays, TradeArrays]:
    """Quotes tiled to ``rows`` with shifted times (and the trades inside that span, shifted alike)."""
    qts = quotes["ts_ns"].to_numpy(np.int64)
    span = int(qts[-1] - qts[0])
    shift = span + span // (len(qts) - 1)  # the span plus one mean quote interval
    copies = -(-rows // len(qts))
    offsets = np.arange(copies, dtype=np.int64) * shift

    def stretch(ts: np.ndarray) -> np.ndarray:
        return (ts[None, :] + offsets[:, None]).ravel()

    q = QuoteArrays(stretch(qts)[:rows], *(np.tile(quotes[c].to_numpy(np.float64), copies)[:rows]
                                           for c in ("bid_px", "ask_px", "bid_sz", "ask_sz")))
    tts = stretch(trades["ts_ns"].to_numpy(np.int64))
    keep = int(np.searchsorted(tts, q.ts_ns[-1], side="right"))
    t = TradeArrays(tts[:keep], np.tile(trades["price"].to_numpy(np.float64), copies)[:keep],
                    np.tile(trades["size"].to_numpy(np.float64), copies)[:keep],
                    np.tile(aggressor_from_column(trades), copies)[:keep])
    return q, t


def standard_requests(q: QuoteArrays, tick: float) -> RequestArrays:
    """Market orders every 100th quote; cancel + new limit every 1000th quote."""
    market_at = np.arange(MARKET_EVERY - 1, len(q.ts_ns), MARKET_EVERY)
    limit_at = np.arange(LIMIT_EVERY - 1, len(q.ts_ns), LIMIT_EVERY)
    n_market, n_limit = len(market_at), len(limit_at)
    # orders: market ones first, then the limit ones; requests sorted by time below
    m_side = np.where(np.arange(n_market) % 2 == 0, 1, -1)
    j = np.arange(n_limit)
    l_side = np.where(j % 2 == 0, 1, -1)
    inside = j % 2 == 0
    bid, ask = q.bid_px[limit_at], q.ask_px[limit_at]
    touch = np.where(l_side > 0, bid, ask)
    l_price = np.round(touch + l_side * np.where(inside, 1, -1) * tick, 8)
    cancel_of = n_market + j[:-1]  # the j-th new limit cancels the (j-1)-th
    ts = np.concatenate([q.ts_ns[market_at], q.ts_ns[limit_at[1:]], q.ts_ns[limit_at]])
    # at one instant: the market order, then the cancel, then the new limit
    tie = np.concatenate([np.zeros(n_market), np.ones(n_limit - 1), np.full(n_limit, 2)])
    rank = np.lexsort((tie, ts))
    n = len(ts)
    action = np.concatenate([np.full(n_market, ACTION_CODE["submit"]), np.full(n_limit - 1, ACTION_CODE["cancel"]),
                             np.full(n_limit, ACTION_CODE["submit"])]).astype(np.int8)
    order = np.concatenate([np.arange(n_market), cancel_of, n_market + j])
    side = np.concatenate([m_side, np.zeros(n_limit - 1), l_side]).astype(np.int8)
    kind = np.concatenate([np.full(n_market, ORDER_TYPE_CODE[OrderType.MARKET]), np.zeros(n_limit - 1),
                           np.full(n_limit, ORDER_TYPE_CODE[OrderType.LIMIT])]).astype(np.int8)
    tif = np.full(n, TIF_CODE[TimeInForce.GTC], np.int8)
    qty = np.concatenate([np.full(n_market, ORDER_QTY), np.full(n_limit - 1, np.nan), np.full(n_limit, ORDER_QTY)])
    limit = np.concatenate([np.full(n_market + n_limit - 1, np.nan), l_price])
    return RequestArrays(ts[rank], action[rank], order[rank], side[rank], kind[rank], tif[rank], qty[rank],
                         limit[rank], np.full(n, np.nan), np.full(n, -1, np.int64))


def request_frame(r: RequestArrays) -> pd.DataFrame:
    """The same requests as the engine's frame (order_ref = order number)."""
    names = {v: k for k, v in ACTION_CODE.items()}
    types = {v: k.value for k, v in ORDER_TYPE_CODE.items()}
    submit = r.action == ACTION_CODE["submit"]
    return pd.DataFrame({
        "ts_ns": r.ts_ns,
        "action": [names[a] for a in r.action.tolist()],
        "order_ref": r.order,
        "side": np.where(submit, np.where(r.side > 0, "buy", "sell"), None),
        "quantity": r.quantity,
        "order_type": np.where(submit, [types[t] for t in r.order_type.tolist()], None),
        "limit_px": r.limit_px,
        "stop_px": r.stop_px,
        "tif": np.where(submit, "gtc", None),
        "expire_ts_ns": r.expire_ts_ns,
    })


# -- the floor ------------------------------------------------------------------------------------------------------------
def numpy_floor(q: QuoteArrays) -> int:
    mid = (q.bid_px + q.ask_px) * 0.5
    spread = q.ask_px - q.bid_px
    wide = spread > np.maximum.accumulate(spread) * 0.5  # a running comparison
    return int(np.count_nonzero(mid[1:] > mid[:-1])) + int(np.count_nonzero(wide))


@numba.njit(cache=True, nogil=True)
def _bare_numba(bid, ask):  # pragma: no cover - compiled
    count = 0
    previous = 0.0
    for i in range(len(bid)):
        mid = 0.5 * (bid[i] + ask[i])
        if mid > previous and ask[i] - bid[i] > 0.0:
            count += 1
        previous = mid
    return count


def _best(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _rate(rows: int, seconds: float) -> str:
    return f"{rows / seconds / 1e6:9.2f}M q/s"


# -- main -----------------------------------------------------------------------------------------------------------------
def main() -> None:
    instrument = get_instrument(INSTRUMENT)
    tick = float(instrument.tick_size)
    quotes = load_bundled(CAPTURE + "l1_quotes.csv.gz").frame
    trades = load_bundled(CAPTURE + "trades.csv.gz").frame

    start = time.perf_counter()
    fit = sweeps(trades, quotes)
    model = calibrate_marketable(INSTRUMENT, tick, fit, fees=DEFAULT_FEES["BINANCE"],
                                 latency=LatencyModel(20_000_000, 1_000_000, 0.5))
    marketable_s = time.perf_counter() - start
    params = ArrayParams.from_model(model, instrument)
    from tradebook.sim.fidelity import bundled_instrument_data, calibrate_instrument
    whole = calibrate_instrument(bundled_instrument_data(INSTRUMENT), fees=DEFAULT_FEES["BINANCE"],
                                 latency=LatencyModel(20_000_000, 1_000_000, 0.5)).model
    whole_params = ArrayParams.from_model(whole, instrument)
    walk = walk_params(whole, instrument)

    try:
        from tradebook.sim import engine
        engine_replay = getattr(engine, "replay", None)
    except ImportError:  # pragma: no cover - the engine module is part of the package
        engine_replay = None

    print(f"sim: standard workload on {INSTRUMENT} quotes tiled from {CAPTURE}l1_quotes ({len(quotes):,} rows), "
          f"its trades tiled alike; market 0.001 every {MARKET_EVERY}th quote, cancel + new limit every "
          f"{LIMIT_EVERY}th; calibrated cost curve, fees, latency sigma 0.5, queue tracking")
    print("  touch-only model: marketable orders priced by the cost curve's median (one fill per quote)")
    print(f"  whole model on  : {walk.describe() if walk else 'NO WALK (the calibration fitted no depth)'}; "
          "fees, latency, queue rule for resting orders (passive model and spread profile are fitted, not used "
          "to fill)")
    # warm-up compile run (excluded)
    wq, wt = tile(quotes, trades, 20_000)
    replay_arrays(wq, wt, standard_requests(wq, tick), params, seed=0)
    replay_arrays(wq, wt, standard_requests(wq, tick), whole_params, seed=0)
    _bare_numba(wq.bid_px, wq.ask_px)

    engine_rate = None
    for rows in SIZES:
        q, t = tile(quotes, trades, rows)
        requests = standard_requests(q, tick)
        floor_s = _best(lambda: numpy_floor(q), 3)
        bare_s = _best(lambda: _bare_numba(q.bid_px, q.ask_px), 3)
        result = {}

        def vectorized(trade_arrays=t) -> None:
            result["fills"] = replay_arrays(q, trade_arrays, requests, params, seed=0)[0]

        vec_s = _best(vectorized, 3)
        n_fills, n_maker = len(result["fills"].ts_ns), int(result["fills"].maker.sum())
        vec_quotes_only_s = _best(lambda: vectorized(None), 3)
        n_orders = int((requests.action == ACTION_CODE["submit"]).sum())
        print(f"\n  {rows:,} quotes, {len(t.ts_ns):,} trades, {len(requests.ts_ns):,} requests ({n_orders:,} orders), "
              f"{n_fills:,} fills ({n_maker:,} maker)")
        print(f"    numpy floor (mid, spread, running compare): {_rate(rows, floor_s)}  ({floor_s * 1e3:8.1f} ms)")
        print(f"    bare numba pass (context)                 : {_rate(rows, bare_s)}  "
              f"ratio to floor {floor_s / bare_s:6.2f}")
        print(f"    vectorized replay (quotes + trades)       : {_rate(rows, vec_s)}  ratio to floor "
              f"{floor_s / vec_s:6.2f}  target >= 20M q/s: {'met' if rows / vec_s >= TARGET_VECTORIZED else 'MISSED'}")
        print(f"    vectorized replay (quotes only)           : {_rate(rows, vec_quotes_only_s)}  ratio to floor "
              f"{floor_s / vec_quotes_only_s:6.2f}")

        def vectorized_whole() -> None:
            result["whole"] = replay_arrays(q, t, requests, whole_params, seed=0)[0]

        whole_s = _best(vectorized_whole, 3)
        whole_fills = result["whole"]
        print(f"    vectorized, whole model (quotes + trades) : {_rate(rows, whole_s)}  ratio to touch-only "
              f"{vec_s / whole_s:6.2f}  target >= 20M q/s: "
              f"{'met' if rows / whole_s >= TARGET_WHOLE_VECTORIZED else 'MISSED'}  ({len(whole_fills.ts_ns):,} fills)")
        quote_frame = pd.DataFrame({"ts_ns": q.ts_ns, "bid_px": q.bid_px, "ask_px": q.ask_px, "bid_sz": q.bid_sz,
                                    "ask_sz": q.ask_sz})
        trade_frame = pd.DataFrame({"ts_ns": t.ts_ns, "price": t.price, "size": t.size,
                                    "aggressor": t.aggressor.astype(np.int64)})
        request_table = request_frame(requests)
        if rows == SIZES[0]:
            start = time.perf_counter()
            replay_vectorized(model, instrument, quote_frame, trade_frame, request_table, seed=0)
            frames_s = time.perf_counter() - start
            print(f"    replay_vectorized (frames in, all checks) : {_rate(rows, frames_s)}  ratio to floor "
                  f"{floor_s / frames_s:6.2f}")
        if engine_replay is None:
            print("    event engine                              : skipped (tradebook.sim.engine.replay not there yet)")
            continue
        if rows > SIZES[0] and (engine_rate is None or rows / engine_rate > ENGINE_BUDGET_S):
            print(f"    event engine                              : skipped: at the 1M rate it would take "
                  f"> {ENGINE_BUDGET_S:.0f} s")
            continue
        start = time.perf_counter()
        engine_replay(model, instrument, quote_frame, trade_frame, request_table, seed=0)
        engine_s = time.perf_counter() - start
        engine_rate = rows / engine_s
        print(f"    event engine replay (quotes + trades)     : {_rate(rows, engine_s)}  ratio to floor "
              f"{floor_s / engine_s:6.3f}  target >= 350k q/s: "
              f"{'met' if rows / engine_s >= TARGET_ENGINE else 'MISSED'}")
        start = time.perf_counter()
        engine_replay(whole, instrument, quote_frame, trade_frame, request_table, seed=0)
        whole_engine_s = time.perf_counter() - start
        print(f"    event engine, whole model                 : {_rate(rows, whole_engine_s)}  ratio to touch-only "
              f"{engine_s / whole_engine_s:6.2f}  target >= 1M q/s: "
              f"{'met' if rows / whole_engine_s >= TARGET_WHOLE_ENGINE else 'MISSED'}")
    print("\n  peers on this kind of machine, same workload: "
          + "; ".join(f"{name} {rate} q/s" for name, rate in PEERS))
    _calibration(quotes, trades, marketable_s)


def _calibration(quotes: pd.DataFrame, trades: pd.DataFrame, marketable_s: float) -> None:
    per_million = 1e6 / len(quotes)
    print(f"\n  calibration on {INSTRUMENT} ({len(quotes):,} quotes, {len(trades):,} trades), per 1M quotes:")
    print(f"    sweeps + cost curve (calibrate_marketable)  : {marketable_s * per_million:8.2f} s")
    try:
        from tradebook.sim.fidelity import bundled_instrument_data, calibrate_instrument
        data = bundled_instrument_data(INSTRUMENT)
        start = time.perf_counter()
        calibrate_instrument(data)
        full_s = time.perf_counter() - start
        print(f"    every fit calibrate_instrument runs now     : {full_s * per_million:8.2f} s")
    except Exception as exc:  # noqa: BLE001 - report whatever state the full calibration is in, do not fail
        print(f"    full calibration (calibrate_instrument)     : not timed ({type(exc).__name__}: {exc})")
    q, _ = tile(quotes, trades.iloc[:1], 1_000_000)
    con = duckdb.connect()
    con.register("tiled", pd.DataFrame({"ts_ns": q.ts_ns, "bid_px": q.bid_px, "ask_px": q.ask_px,
                                        "bid_sz": q.bid_sz, "ask_sz": q.ask_sz}))
    con.execute("CREATE TABLE quotes AS SELECT * FROM tiled")
    scan_s = _best(lambda: con.execute("SELECT avg(ask_px - bid_px), count(*) FROM quotes").fetchone(), 5)
    con.close()
    print(f"    duckdb scan of 1M quote rows (avg spread)   : {scan_s:8.4f} s  "
          f"(sweeps + cost curve = {marketable_s * per_million / scan_s:,.0f} scans)")


if __name__ == "__main__":
    main()
