"""The paper venue walks a recorded top-N book level by level where a session's feed carries one (ESH4 top-5).

The feed (:class:`tradebook.data.feeds.ReplayFeed`) keeps the levels behind the touch of a
top-N frame in each batch; the session hands them to the venue (``on_market_data(levels=)``)
and the venue to its engine. A 400-lot IOC then takes the five recorded levels as they stand
at its arrival and only beyond the deepest of them the calibrated implied ladder, as
:func:`tradebook.sim.engine.replay` does on the same frame.
"""

from __future__ import annotations

import asyncio
import dataclasses
from decimal import Decimal
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from tradebook.data import load_bundled
from tradebook.data.feeds import ReplayFeed
from tradebook.model.instruments import Side
from tradebook.model.orders import OrderIntent, OrderType, TimeInForce
from tradebook.session import Session
from tradebook.sim.depth import DepthProfile
from tradebook.sim.engine import replay
from tradebook.sim.fill_model import FeeSchedule, FillModel, LatencyModel, touch_only_curve
from tradebook.venues.paper import PaperVenue

ES = "ESH4.GLBX"
TICK = 0.25


@pytest.fixture(scope="module")
def book() -> pd.DataFrame:
    """ESH4's recorded top-5 books after the pre-open (2,000 rows)."""
    frame = load_bundled("ticks/futures/cme_ESH4_book5_from_mbo_20231225.csv.gz").frame
    frame = frame[frame["ts_ns"] >= pd.Timestamp("2023-12-25T23:00Z").value].reset_index(drop=True)
    return frame.iloc[4_000:6_000].drop(columns="ts_event_ns").reset_index(drop=True)


@pytest.fixture(scope="module")
def model() -> FillModel:
    """A touch-only curve plus a hand-made implied ladder far enough out (6 and 8 ticks, 100 lots each) that it
    lies beyond the recorded levels; no latency, so an order arrives at its request time."""
    depth = DepthProfile(instrument_id=ES, tick_size=TICK, typical_top_size=100.0, remainder_grid=(1.0, 2.0),
                         avg_distance_ticks=(6.0, 7.0), size_edges=(0.0, np.inf), ratio_q05=(1.0,),
                         ratio_q50=(1.0,), ratio_q95=(1.0,), counts=(0,), fit_start_ns=0, fit_end_ns=1,
                         n_samples=100)
    base = FillModel(ES, TICK, touch_only_curve(), fees=FeeSchedule(per_unit=1.40), latency=LatencyModel(0, 0, 0.0))
    return dataclasses.replace(base, depth=depth)


def test_the_feed_keeps_the_book_behind_the_touch_batch_by_batch(book):
    batches = list(ReplayFeed({ES: book}, step_ns=100_000_000).batches())
    rows = 0
    for batch in batches:
        q = batch.quotes.get(ES)
        if q is None:
            continue
        assert q.levels is not None and all(a.shape == (len(q), 4) for a in q.levels)
        expected = book.iloc[rows: rows + len(q)]
        np.testing.assert_array_equal(q.levels[2], expected[[f"ask_px_{i}" for i in range(1, 5)]].to_numpy())
        np.testing.assert_array_equal(q.levels[1], expected[[f"bid_sz_{i}" for i in range(1, 5)]].to_numpy())
        rows += len(q)
    assert rows == len(book)
    l1 = book.rename(columns={f"{n}_0": n for n in ("bid_px", "ask_px", "bid_sz", "ask_sz")})[
        ["ts_ns", "bid_px", "ask_px", "bid_sz", "ask_sz"]]
    assert all(q.levels is None for b in ReplayFeed({ES: l1}).batches() for q in b.quotes.values())


def test_a_session_feed_with_the_book_is_walked_level_by_level_by_the_paper_venue(tmp_path, book, model):
    events = []
    venue = PaperVenue(tmp_path, models={ES: model}, starting_cash=Decimal("100000000"), clock=lambda: 1, seed=0)
    asyncio.run(venue.connect(events.append))
    batches = [b for b in ReplayFeed({ES: book}, step_ns=100_000_000).batches() if ES in b.quotes]
    feeder = SimpleNamespace(venue=venue)  # the session's own hand-off of a batch to the venue

    def feed(batch) -> None:
        asyncio.run(Session._feed_venue(feeder, ES, batch))

    half = len(batches) // 2
    for batch in batches[:half]:
        feed(batch)
    request_ts = venue.now_ns
    order = OrderIntent(intent_id="big", strategy_id="s1", account_id="paper", instrument_id=ES, side=Side.BUY,
                        quantity=Decimal(400), order_type=OrderType.MARKET, time_in_force=TimeInForce.IOC,
                        ts_ns=request_ts)
    asyncio.run(venue.submit(order))
    for batch in batches[half:]:
        feed(batch)
    fills = [(float(e.fill.quantity), float(e.fill.price)) for e in events if e.fill is not None]
    at = book[book["ts_ns"] <= request_ts].iloc[-1]  # the book in force when the order arrives
    recorded = [(float(at[f"ask_sz_{i}"]), float(at[f"ask_px_{i}"])) for i in range(5)]
    print(f"\nESH4 paper IOC buy 400 at the book {recorded}: fills {fills}")
    assert fills[:5] == recorded  # the recorded levels first, as they stand
    implied = [(100.0, at["ask_px_0"] + 6 * TICK), (100.0, at["ask_px_0"] + 8 * TICK)]
    beyond = [(q, p) for q, p in implied if p > at["ask_px_4"]]
    assert fills[5:] == beyond[: len(fills) - 5] and len(fills) > 5  # then the implied ladder beyond them
    assert sum(q for q, _ in fills) == min(400.0, sum(q for q, _ in recorded + beyond))
    assert (np.diff([p for _, p in fills]) > 0).all()
    # the event engine on the same frame gives the same fills (the venue is the engine, fed in batches)
    requests = pd.DataFrame([dict(ts_ns=request_ts, action="submit", order_ref=1, side="buy", quantity=400.0,
                                  order_type="market", tif="ioc")])
    alone = replay(model, ES, book, None, requests, seed=0).fills
    assert list(zip(alone["quantity"], alone["price"])) == fills


def test_an_l1_feed_walks_the_implied_ladder_alone(tmp_path, book, model):
    events = []
    venue = PaperVenue(tmp_path, models={ES: model}, starting_cash=Decimal("100000000"), clock=lambda: 1, seed=0)
    asyncio.run(venue.connect(events.append))
    l1 = book.rename(columns={f"{n}_0": n for n in ("bid_px", "ask_px", "bid_sz", "ask_sz")})[
        ["ts_ns", "bid_px", "ask_px", "bid_sz", "ask_sz"]]
    venue.feed(ES, l1.iloc[:1000])
    request_ts = venue.now_ns
    order = OrderIntent(intent_id="big", strategy_id="s1", account_id="paper", instrument_id=ES, side=Side.BUY,
                        quantity=Decimal(400), order_type=OrderType.MARKET, time_in_force=TimeInForce.IOC,
                        ts_ns=request_ts)
    asyncio.run(venue.submit(order))
    venue.feed(ES, l1.iloc[1000:])
    fills = [(float(e.fill.quantity), float(e.fill.price)) for e in events if e.fill is not None]
    at = l1[l1["ts_ns"] <= request_ts].iloc[-1]
    assert fills == [(float(at["ask_sz"]), float(at["ask_px"])), (100.0, at["ask_px"] + 6 * TICK),
                     (100.0, at["ask_px"] + 8 * TICK)]
