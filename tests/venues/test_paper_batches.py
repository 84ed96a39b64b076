"""The paper venue handing bursts of events to a batch handler: the same events, in the same order."""

from __future__ import annotations

from tradebook.store.journal import Journal
from tradebook.venues.paper import JOURNAL_NAME, PaperVenue
from tests.venues.test_paper import BTC, INIT_CLOCK, Recorder, feed, frames, intent, model, run  # noqa: F401


def _trade(state_dir, model, frames, *, batches: bool) -> tuple[list, list[int], Recorder]:
    """Five orders (market, IOC, resting limits) over 20 s of recorded data; returns the events and burst sizes."""
    recorder, bursts = Recorder(), []

    def on_events(events):
        bursts.append(len(events))
        for event in events:
            recorder(event)

    def on_event_unexpected(event):
        raise AssertionError(f"a venue with a batch handler delivered {event} one by one")

    venue = PaperVenue(state_dir, models={BTC: model}, clock=lambda: INIT_CLOCK, seed=7)
    run(venue.connect(on_event_unexpected if batches else recorder, on_events=on_events if batches else None))
    feed(venue, frames, 0, 2)
    t = venue.now_ns
    orders = [intent("m1", "buy", "0.01", ts_ns=t), intent("m2", "buy", "0.02", ts_ns=t),
              intent("i1", "sell", "0.01", "limit", ts_ns=t, tif="ioc", limit="1"),
              intent("l1", "buy", "0.01", "limit", ts_ns=t, limit="60000"),
              intent("m3", "sell", "0.01", ts_ns=t)]
    for order in orders:
        recorder.track(order, t)
        run(venue.submit(order))
    feed(venue, frames, 2, 20)
    run(venue.close())
    return recorder.events, bursts, recorder


def _comparable(event):
    # venue order and fill ids carry each book's random id; everything else must agree
    fill = event.fill
    return (event.client_order_id, event.event_type, event.ts_event_ns, event.reason, event.quantity,
            event.limit_price, None if fill is None else (fill.side, fill.quantity, fill.price, fill.fee,
                                                          fill.liquidity, fill.ts_event_ns))


def test_a_batch_handler_gets_the_same_events_in_bursts(tmp_path, model, frames):
    one_by_one, _, _ = _trade(tmp_path / "single", model, frames, batches=False)
    batched, bursts, recorder = _trade(tmp_path / "batched", model, frames, batches=True)
    assert [_comparable(e) for e in batched] == [_comparable(e) for e in one_by_one]
    assert sum(bursts) == len(batched) and max(bursts) > 1  # the acks and fills of one data batch come together
    assert recorder.unapplied == []
    # and the journal holds what the events say, written with a write per call
    with Journal(tmp_path / "batched" / JOURNAL_NAME, sync=False) as journal:
        kinds = [r["kind"] for r in journal.records()]
    assert kinds.count("fill") == sum(1 for e in batched if e.fill is not None)


def _feed_in_runs(venue: PaperVenue, frames, start_s: float, end_s: float) -> None:
    """The recorded data as runs of quotes and runs of trades, one call each, in time order."""
    import numpy as np

    from tradebook.venues.paper import quote_arrays, trade_arrays
    from tests.venues.test_paper import SECOND

    quotes, trades = frames
    t0 = int(quotes["ts_ns"].iloc[0])
    lo, hi = t0 + int(start_s * SECOND), t0 + int(end_s * SECOND)
    q = quote_arrays(quotes[(quotes["ts_ns"] >= lo) & (quotes["ts_ns"] < hi)])
    window = trades[(trades["ts_ns"] >= lo) & (trades["ts_ns"] < hi)]
    t = trade_arrays(window, quotes)
    kind = np.r_[np.zeros(len(q[0]), np.int8), np.ones(len(t[0]), np.int8)]
    kinds = kind[np.lexsort((kind, np.r_[q[0], t[0]]))]
    starts = np.flatnonzero(np.diff(kinds, prepend=-1))
    iq = it = 0
    for start, end in zip(starts, [*starts[1:], len(kinds)]):
        n = int(end - start)
        if kinds[start] == 0:
            venue.on_quotes(BTC, *(a[iq:iq + n] for a in q))
            iq += n
        else:
            venue.on_trades(BTC, t[0][it:it + n], t[1][it:it + n], t[2][it:it + n],
                            t[3][it:it + n].astype(np.float64))
            it += n
    assert iq == len(q[0]) and it == len(t[0]) and len(starts) > 20  # quotes and trades interleave many times


def test_market_data_in_one_call_fills_like_runs_of_quotes_and_trades(tmp_path, model, frames):
    results = []
    for name, feeder in (("runs", _feed_in_runs), ("merged", feed)):
        recorder = Recorder()
        venue = PaperVenue(tmp_path / name, models={BTC: model}, clock=lambda: INIT_CLOCK, seed=3)
        run(venue.connect(recorder))
        feeder(venue, frames, 0, 2)
        t = venue.now_ns
        first = [intent("m1", "buy", "0.02", ts_ns=t), intent("m2", "buy", "0.01", ts_ns=t),
                 intent("l1", "buy", "0.01", "limit", ts_ns=t, limit="61620")]
        for order in first:
            recorder.track(order, t)
            run(venue.submit(order))
        feeder(venue, frames, 2, 20)
        t = venue.now_ns
        for order in (intent("l2", "sell", "0.01", "limit", ts_ns=t, limit="61700"),
                      intent("m3", "sell", "0.01", ts_ns=t)):
            recorder.track(order, t)
            run(venue.submit(order))
        feeder(venue, frames, 20, 660)
        results.append(([_comparable(e) for e in recorder.events], run(venue.positions()), run(venue.account()).cash))
        run(venue.close())
    (runs, runs_positions, runs_cash), (merged, merged_positions, merged_cash) = results
    assert merged == runs and merged_positions == runs_positions and merged_cash == runs_cash
    filled = {e[0] for e in runs if e[-1] is not None}
    assert len(filled) >= 4, runs  # market orders and resting limits filled
