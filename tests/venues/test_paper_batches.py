"""The paper venue handing bursts of events to a batch handler: the same events, in the same order."""

from __future__ import annotations

from tradebook.execution.journal import Journal
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
