"""The paper venue on real BTCUSDT quotes and trades, with a fill model calibrated on them.

Expected prices, fees and balances are computed by hand from the recorded frames and
the model's rules (taking at the touch the calibrated curve gives for small orders; a
resting limit below the bid fills when a trade prints through it), in Decimal. Every
event the venue delivers is also applied to an order-manager :class:`Order`, so an
illegal lifecycle step fails the test.
"""

from __future__ import annotations

import asyncio
import dataclasses
from decimal import Decimal

import pandas as pd
import pytest

from tradebook.data import load_bundled
from tradebook.store.journal import Journal
from tradebook.model.instruments import Side
from tradebook.model.orders import (
    Order,
    OrderEvent,
    OrderEventType,
    OrderIntent,
    OrderStatus,
    OrderType,
    TimeInForce,
    TRANSITIONS,
)
from tradebook.sim.calibrate import calibrate_marketable
from tradebook.sim.fill_model import DEFAULT_FEES, FeeSchedule, FillModel, LatencyModel, touch_only_curve
from tradebook.sim.orders import latency_ns
from tradebook.sim.truth import sweeps
from tradebook.store import Store
from tradebook.venues.paper import JOURNAL_NAME, PaperVenue

BTC = "BTCUSDT.BINANCE"
FILES = "binance_spot_btcusdt_20240808T2354-20240809T0005_"
SECOND = 1_000_000_000
MIDNIGHT = 1_723_161_600_000_000_000  # 2024-08-09T00:00Z: BTCUSDT DAY orders expire here
CASH = Decimal("100000")
TEN_BPS = Decimal("0.001")  # Binance's base-tier maker and taker fee
INIT_CLOCK = 42  # ts_init_ns of every event: the clock we give the venue


@pytest.fixture(scope="module")
def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    quotes = load_bundled(FILES + "l1_quotes.csv.gz").frame
    trades = load_bundled(FILES + "trades.csv.gz").frame
    return quotes, trades


@pytest.fixture(scope="module")
def model(frames) -> FillModel:
    quotes, trades = frames
    return calibrate_marketable(BTC, 0.01, sweeps(trades, quotes), fees=DEFAULT_FEES["BINANCE"])


class Recorder:
    """The handler given to connect: keeps every event and an order manager's view of each order.

    Events the lifecycle does not allow from the tracked order's status are kept in
    ``unapplied`` (tests assert which: only answers to requests a manager would not send).
    """

    def __init__(self) -> None:
        self.events: list[OrderEvent] = []
        self.orders: dict[str, Order] = {}
        self.unapplied: list[OrderEvent] = []

    def track(self, intent: OrderIntent, ts_ns: int) -> None:
        self.orders[intent.client_order_id] = Order(intent).apply(
            OrderEvent(intent.client_order_id, OrderEventType.SUBMITTED, ts_ns, ts_ns))

    def request(self, client_order_id: str, kind: OrderEventType) -> None:
        """What the manager records when it sends a cancel or replace (when its table allows it)."""
        self._apply(OrderEvent(client_order_id, kind, 0, 0), keep=False)

    def __call__(self, event: OrderEvent) -> None:
        self.events.append(event)
        duplicate = event.event_type is OrderEventType.REJECTED and event.reason.startswith("duplicate")
        if not duplicate:
            self._apply(event, keep=True)

    def _apply(self, event: OrderEvent, *, keep: bool) -> None:
        order = self.orders.get(event.client_order_id)
        if order is None:
            return
        if (order.status, event.event_type) not in TRANSITIONS:
            if keep:
                self.unapplied.append(event)
            return
        self.orders[event.client_order_id] = order.apply(event)

    def of(self, intent: OrderIntent, kind: OrderEventType | None = None) -> list[OrderEvent]:
        return [e for e in self.events if e.client_order_id == intent.client_order_id
                and (kind is None or e.event_type is kind)]


def run(coroutine):
    return asyncio.run(coroutine)


def make_venue(state_dir, model: FillModel, recorder: Recorder | None = None) -> PaperVenue:
    venue = PaperVenue(state_dir, models={BTC: model}, clock=lambda: INIT_CLOCK, seed=0)
    if recorder is not None:
        run(venue.connect(recorder))
    return venue


def feed(venue: PaperVenue, frames, start_s: float, end_s: float) -> None:
    """Feed the recorded quotes and trades stamped in [start, end) seconds after the first quote."""
    quotes, trades = frames
    t0 = int(quotes["ts_ns"].iloc[0])
    lo, hi = t0 + int(start_s * SECOND), t0 + int(end_s * SECOND)
    venue.feed(BTC, quotes[(quotes["ts_ns"] >= lo) & (quotes["ts_ns"] < hi)],
               trades[(trades["ts_ns"] >= lo) & (trades["ts_ns"] < hi)])


def intent(name: str, side: str, quantity, order_type: str = "market", *, ts_ns: int, tif: str = "gtc",
           limit: str | None = None, stop: str | None = None, instrument: str = BTC) -> OrderIntent:
    return OrderIntent(intent_id=name, strategy_id="s1", account_id="paper", instrument_id=instrument,
                       side=Side(side), quantity=quantity if not isinstance(quantity, str) else Decimal(quantity),
                       order_type=OrderType(order_type), time_in_force=TimeInForce(tif), ts_ns=ts_ns,
                       limit_price=Decimal(limit) if limit else None, stop_price=Decimal(stop) if stop else None)


def submit(venue: PaperVenue, recorder: Recorder, order: OrderIntent) -> int:
    """Submit and return the arrival time the engine's latency draw gives the request."""
    request_ts = venue.now_ns
    recorder.track(order, request_ts)
    run(venue.submit(order))
    return request_ts


def arrival(model: FillModel, request_ts: int, k: int) -> int:
    lat = model.latency
    return request_ts + int(latency_ns(0, k, 0, lat.submit_to_ack_median_ns, lat.sigma))


def quote_at(quotes: pd.DataFrame, ts_ns: int) -> pd.Series:
    """The last valid quote stamped at or before ``ts_ns``: the one in force."""
    q = quotes[(quotes["ts_ns"] <= ts_ns) & (quotes["bid_px"] < quotes["ask_px"])]
    return q.iloc[-1]


def first_trade_through(trades: pd.DataFrame, after_ns: int, limit: Decimal) -> pd.Series:
    """The first trade after ``after_ns`` printing below a resting buy limit."""
    t = trades[(trades["ts_ns"] > after_ns) & (trades["price"] < float(limit))]
    return t.iloc[0]


def dec(x: float) -> Decimal:
    return Decimal(repr(float(x)))


# -- market and limit orders --------------------------------------------------------------
def test_market_order_fills_at_the_model_price_with_its_fee(tmp_path, model, frames):
    """Built from the store's calibration: the touch at arrival, 10 bps taker fee, cash and position exact."""
    quotes, _ = frames
    with Store(tmp_path / "x.duckdb") as store:
        record = store.save_calibration(BTC, model.to_json(), data_start_ns=int(quotes["ts_ns"].iloc[0]),
                                        data_end_ns=int(quotes["ts_ns"].iloc[-1]), dataset_ids=[], diagnostics={})
        venue = PaperVenue.from_store(store, [record.calibration_id], tmp_path / "venue", clock=lambda: INIT_CLOCK)
    recorder = Recorder()
    run(venue.connect(recorder))
    feed(venue, frames, 0, 5)
    buy = intent("m1", "buy", "0.01", ts_ns=venue.now_ns)
    request_ts = submit(venue, recorder, buy)
    assert recorder.of(buy) == []  # a request: nothing happens before the venue's time moves
    feed(venue, frames, 5, 10)

    at = arrival(model, request_ts, 0)
    accepted, filled = recorder.of(buy)
    assert (accepted.event_type, accepted.ts_event_ns, accepted.ts_init_ns, accepted.venue_order_id) == \
        (OrderEventType.ACCEPTED, at, INIT_CLOCK, f"{venue.order_id_prefix}-1")
    quote = quote_at(quotes, at)
    ask = dec(quote["ask_px"])
    fill = filled.fill
    assert filled.event_type is OrderEventType.FILLED and filled.ts_event_ns == at
    assert (fill.fill_id, fill.quantity, fill.price, fill.liquidity) == (f"{venue.order_id_prefix}-1-1", Decimal("0.01"), ask, "taker")
    assert fill.fee == Decimal("0.01") * ask * TEN_BPS
    assert recorder.orders[buy.client_order_id].status is OrderStatus.FILLED

    account = run(venue.account())
    expected_cash = CASH - Decimal("0.01") * ask - fill.fee
    assert account.cash == expected_cash
    assert run(venue.positions()) == {BTC: Decimal("0.01")}
    last = quote_at(quotes, venue.now_ns)
    assert account.equity == expected_cash + Decimal("0.01") * (dec(last["bid_px"]) + dec(last["ask_px"])) / 2
    assert account.buying_power == expected_cash
    assert run(venue.fills()) == [fill] and run(venue.fills(since_ns=at + 1)) == []
    state = run(venue.order_status(buy.client_order_id))
    assert (state.status, state.filled_qty, state.avg_price) == (OrderStatus.FILLED, Decimal("0.01"), ask)


def test_resting_limit_fills_by_the_passive_rule(tmp_path, model, frames):
    """A buy limit below the bid rests (queue unknown) and fills whole at its limit when a trade prints through."""
    _, trades = frames
    recorder = Recorder()
    venue = make_venue(tmp_path, model, recorder)
    feed(venue, frames, 0, 5)
    limit = Decimal("61800.00")
    buy = intent("l1", "buy", "0.01", "limit", limit=str(limit), ts_ns=venue.now_ns)
    at = arrival(model, submit(venue, recorder, buy), 0)
    reserved = Decimal("0.01") * limit * (1 + TEN_BPS)  # the limit and the taker fee, held while it works
    assert run(venue.account()).buying_power == CASH - reserved
    feed(venue, frames, 5, 60)
    assert [e.event_type for e in recorder.of(buy)] == [OrderEventType.ACCEPTED]
    assert [o.status for o in run(venue.open_orders())] == [OrderStatus.ACCEPTED]
    feed(venue, frames, 60, 120)

    trade = first_trade_through(trades, at, limit)
    (filled,) = recorder.of(buy, OrderEventType.FILLED)
    fill = filled.fill
    assert (filled.ts_event_ns, fill.quantity, fill.price, fill.liquidity) == \
        (int(trade["ts_ns"]), Decimal("0.01"), limit, "maker")
    assert fill.fee == Decimal("0.01") * limit * TEN_BPS
    assert run(venue.account()).cash == CASH - Decimal("0.01") * limit - fill.fee
    assert run(venue.open_orders()) == []
    assert recorder.orders[buy.client_order_id].status is OrderStatus.FILLED


def test_day_order_expires_at_midnight_and_ioc_remainder_is_cancelled(tmp_path, model, frames):
    recorder = Recorder()
    venue = make_venue(tmp_path, model, recorder)
    feed(venue, frames, 0, 5)
    day = intent("d1", "buy", "0.01", "limit", limit="61000.00", tif="day", ts_ns=venue.now_ns)
    ioc = intent("i1", "buy", "0.01", "limit", limit="61000.00", tif="ioc", ts_ns=venue.now_ns)
    submit(venue, recorder, day)
    submit(venue, recorder, ioc)
    venue.advance_to(MIDNIGHT + 1)
    assert [(e.event_type, e.ts_event_ns, e.reason) for e in recorder.of(day)][1:] == \
        [(OrderEventType.EXPIRED, MIDNIGHT, "day order expired at the session close")]
    cancelled = recorder.of(ioc)[-1]
    assert cancelled.event_type is OrderEventType.CANCELLED and cancelled.reason.startswith("IOC")
    assert run(venue.open_orders()) == [] and run(venue.account()).buying_power == CASH


# -- cancel and replace ---------------------------------------------------------------------
def test_cancel_and_replace(tmp_path, model, frames):
    _, trades = frames
    recorder = Recorder()
    venue = make_venue(tmp_path, model, recorder)
    feed(venue, frames, 0, 5)
    far = intent("c1", "buy", "0.01", "limit", limit="61000.00", ts_ns=venue.now_ns)
    moved = intent("r1", "buy", "0.01", "limit", limit="61700.00", ts_ns=venue.now_ns)
    market = intent("m1", "buy", "0.01", ts_ns=venue.now_ns)
    stop = intent("s1", "buy", "0.01", "stop", stop="70000.00", ts_ns=venue.now_ns)
    for order in (far, moved, market, stop):
        submit(venue, recorder, order)
    feed(venue, frames, 5, 6)
    assert run(venue.order_status(market.client_order_id)).status is OrderStatus.FILLED

    recorder.request(far.client_order_id, OrderEventType.CANCEL_REQUESTED)
    run(venue.cancel(far.client_order_id))
    assert run(venue.order_status(far.client_order_id)).status is OrderStatus.PENDING_CANCEL
    new_limit = Decimal("61790.00")
    request_ts = venue.now_ns
    recorder.request(moved.client_order_id, OrderEventType.REPLACE_REQUESTED)
    run(venue.replace(moved.client_order_id, quantity=Decimal("0.02"), limit_price=new_limit))
    assert run(venue.order_status(moved.client_order_id)).status is OrderStatus.PENDING_REPLACE
    # refused at once, nothing changes: a stop order, a stop price, a pending cancel, a filled or unknown order
    before = run(venue.account())
    for coid, change in ((stop.client_order_id, {"limit_price": Decimal("70001.00")}),
                         (stop.client_order_id, {"stop_price": Decimal("70001.00")}),
                         (far.client_order_id, {"limit_price": Decimal("61001.00")}),
                         (market.client_order_id, {"quantity": Decimal("0.02")})):
        recorder.request(coid, OrderEventType.REPLACE_REQUESTED)
        run(venue.replace(coid, **change))
    run(venue.cancel(market.client_order_id))
    run(venue.cancel("tb-never-sent"))
    assert run(venue.account()) == before
    refusals = [(e.event_type, e.reason) for e in recorder.events
                if e.event_type in (OrderEventType.REPLACE_REJECTED, OrderEventType.CANCEL_REJECTED)]
    assert [kind for kind, _ in refusals] == [OrderEventType.REPLACE_REJECTED] * 4 + \
        [OrderEventType.CANCEL_REJECTED] * 2
    expected = ["a stop order cannot be replaced", "cannot move a stop price", "order is pending_cancel",
                "order is already filled", "order is already filled", "never received"]
    assert all(text in reason for text, (_, reason) in zip(expected, refusals, strict=True)), refusals
    feed(venue, frames, 6, 120)

    cancelled = recorder.of(far)[-1]
    assert (cancelled.event_type, cancelled.reason) == (OrderEventType.CANCELLED, "cancelled on request")
    assert cancelled.ts_event_ns == arrival(model, request_ts, 4)  # requests 0-3 are the submits
    assert recorder.orders[far.client_order_id].status is OrderStatus.CANCELLED
    replaced = recorder.of(moved, OrderEventType.REPLACED)
    assert [(e.quantity, e.limit_price, e.ts_event_ns) for e in replaced] == \
        [(Decimal("0.02"), new_limit, arrival(model, request_ts, 5))]
    (filled,) = recorder.of(moved, OrderEventType.FILLED)
    trade = first_trade_through(trades, replaced[0].ts_event_ns, new_limit)
    assert (filled.ts_event_ns, filled.fill.quantity, filled.fill.price) == \
        (int(trade["ts_ns"]), Decimal("0.02"), new_limit)
    assert recorder.orders[moved.client_order_id].status is OrderStatus.FILLED
    assert run(venue.positions()) == {BTC: Decimal("0.03")}
    fills = run(venue.fills())
    account = run(venue.account())
    assert account.cash == CASH - sum(f.quantity * f.price + f.fee for f in fills)
    # only the stop works now: it reserves its stop price and the taker fee
    assert account.buying_power == account.cash - Decimal("0.01") * Decimal("70000.00") * (1 + TEN_BPS)
    # a refusal to a filled order is a late answer the lifecycle takes (the order stays filled); the one
    # to a pending-cancel order answers a request no manager would send
    assert [(e.client_order_id, e.event_type) for e in recorder.unapplied] == [
        (far.client_order_id, OrderEventType.REPLACE_REJECTED)]
    assert recorder.orders[market.client_order_id].status is OrderStatus.FILLED


def test_duplicate_client_order_id_is_refused_and_the_original_untouched(tmp_path, model, frames):
    recorder = Recorder()
    venue = make_venue(tmp_path, model, recorder)
    feed(venue, frames, 0, 5)
    order = intent("dup", "buy", "0.01", "limit", limit="61000.00", ts_ns=venue.now_ns)
    submit(venue, recorder, order)
    feed(venue, frames, 5, 6)
    before = run(venue.order_status(order.client_order_id))
    run(venue.submit(order))
    rejected = recorder.events[-1]
    assert rejected.event_type is OrderEventType.REJECTED and rejected.venue_order_id is None
    assert rejected.reason.startswith(f"duplicate client order id {order.client_order_id}")
    assert run(venue.order_status(order.client_order_id)) == before
    assert [o.client_order_id for o in run(venue.open_orders())] == [order.client_order_id]
    # the venue remembers across a restart: still refused
    again = make_venue(tmp_path, model, recorder)
    run(again.submit(order))
    assert recorder.events[-1].reason.startswith("duplicate client order id")
    assert len(run(again.open_orders())) == 1


# -- restart ------------------------------------------------------------------------------
def test_restart_recovers_the_books_and_working_orders_still_fill(tmp_path, model, frames):
    _, trades = frames
    recorder = Recorder()
    venue = make_venue(tmp_path, model, recorder)
    feed(venue, frames, 0, 5)
    market = intent("m1", "buy", "0.01", ts_ns=venue.now_ns)
    limit = Decimal("61800.00")
    resting = intent("l1", "buy", "0.01", "limit", limit=str(limit), ts_ns=venue.now_ns)
    submit(venue, recorder, market)
    submit(venue, recorder, resting)
    feed(venue, frames, 5, 30)
    late = intent("l2", "buy", "0.01", "limit", limit="61000.00", ts_ns=venue.now_ns)
    submit(venue, recorder, late)  # received, never reached the engine before the crash
    books = (run(venue.positions()), run(venue.account()).cash, run(venue.open_orders()), run(venue.fills()))
    assert books[0] == {BTC: Decimal("0.01")}
    assert [o.status for o in books[2]] == [OrderStatus.ACCEPTED, OrderStatus.SUBMITTED]
    del venue  # dropped without close, as a killed process would

    restarted = make_venue(tmp_path, model)
    assert (run(restarted.positions()), run(restarted.account()).cash, run(restarted.open_orders()),
            run(restarted.fills())) == books
    recorder_after = Recorder()
    recorder_after.orders = dict(recorder.orders)
    run(restarted.connect(recorder_after))
    resume_ts = restarted.now_ns
    feed(restarted, frames, 30, 120)

    # the resting order is re-sent at the venue's last time (requests 0 and 1 of the fresh engine)
    assert recorder_after.of(resting, OrderEventType.ACCEPTED) == []  # acknowledged before the crash
    (filled,) = recorder_after.of(resting, OrderEventType.FILLED)
    trade = first_trade_through(trades, arrival(model, resume_ts, 0), limit)
    assert (filled.ts_event_ns, filled.fill.price, filled.fill.fill_id) == (int(trade["ts_ns"]), limit, f"{restarted.order_id_prefix}-2-1")
    assert [e.event_type for e in recorder_after.of(late)] == [OrderEventType.ACCEPTED]
    assert recorder_after.of(late)[0].ts_event_ns == arrival(model, resume_ts, 1)
    assert run(restarted.positions()) == {BTC: Decimal("0.02")}
    assert run(restarted.account()).cash == books[1] - Decimal("0.01") * limit - filled.fill.fee
    assert recorder_after.orders[resting.client_order_id].status is OrderStatus.FILLED
    assert [f.fill_id for f in run(restarted.fills())] == [f"{restarted.order_id_prefix}-{n}-1" for n in (1, 2)]


# -- bad input ------------------------------------------------------------------------------
def test_bad_orders_are_rejected_with_reasons_and_change_nothing(tmp_path, model, frames):
    recorder = Recorder()
    venue = make_venue(tmp_path, model, recorder)
    feed(venue, frames, 0, 5)
    journal_records = len(Journal(tmp_path / JOURNAL_NAME))
    now = venue.now_ns
    bad = {
        "nan": (intent("b1", "buy", Decimal("NaN"), ts_ns=now), "quantity is Decimal('NaN')"),
        "nan float": (intent("b2", "buy", float("nan"), ts_ns=now), "expected a positive finite number"),
        "negative": (intent("b3", "buy", "-0.01", ts_ns=now), "expected a positive finite number"),
        "off tick": (intent("b4", "buy", "0.01", "limit", limit="61800.005", ts_ns=now), "not a multiple of the tick"),
        "off lot": (intent("b5", "buy", "0.000015", ts_ns=now), "not a multiple of the lot size"),
        "unknown": (intent("b6", "buy", "1", ts_ns=now, instrument="ETHUSDT.BINANCE"),
                    "no fill model for instrument 'ETHUSDT.BINANCE'"),
        "too big": (intent("b7", "buy", "2", ts_ns=now), "insufficient buying power"),
        "short": (intent("b8", "sell", "0.01", ts_ns=now), "insufficient position"),
        "tiny": (intent("b9", "buy", "0.00001", "limit", limit="61800.00", ts_ns=now), "below the minimum 5"),
        "no limit": (intent("b10", "buy", "0.01", "limit", ts_ns=now), "limit order needs limit price"),
    }
    for order, _ in bad.values():  # the order manager refuses most of these itself: the venue must too
        run(venue.submit(order))
    feed(venue, frames, 5, 10)

    for name, (order, reason) in bad.items():
        (event,) = recorder.of(order)
        assert event.event_type is OrderEventType.REJECTED and reason in event.reason, (name, event.reason)
        assert run(venue.order_status(order.client_order_id)) is None
    account = run(venue.account())
    assert (account.cash, account.buying_power, run(venue.positions()), run(venue.open_orders()),
            run(venue.fills())) == (CASH, CASH, {}, [], [])
    assert len(Journal(tmp_path / JOURNAL_NAME)) == journal_records


def test_bad_market_data_and_unconnected_use_raise(tmp_path, model, frames):
    from tradebook.errors import DataError, OrderError, UnknownInstrumentError

    venue = make_venue(tmp_path, model)
    order = intent("x", "buy", "0.01", ts_ns=1)
    with pytest.raises(OrderError, match="not connected"):
        run(venue.submit(order))
    with pytest.raises(UnknownInstrumentError, match="ETHUSDT.BINANCE"):
        venue.on_quotes("ETHUSDT.BINANCE", 1, 1.0, 2.0, 1.0, 1.0)
    feed(venue, frames, 0, 1)
    with pytest.raises(DataError, match="backwards"):
        venue.on_quotes(BTC, venue.now_ns - 1, 61000.0, 61000.01, 1.0, 1.0)
    with pytest.raises(DataError, match="backwards"):
        venue.advance_to(venue.now_ns - 1)


def test_restart_keeps_a_partial_fill_and_resends_pending_cancels_and_replaces(tmp_path):
    """Hand-built feed (no latency, fills at the touch): a queue-joined limit fills in part, the process dies with
    a cancel and a replace in flight, and the new venue answers both and fills the rest exactly."""
    model = FillModel(BTC, 0.01, touch_only_curve(), fees=FeeSchedule(maker_bps=1.0, taker_bps=5.0),
                      latency=LatencyModel(0, 0, 0.0))
    t = 1_723_000_000_000_000_000
    recorder = Recorder()
    venue = make_venue(tmp_path, model, recorder)
    venue.on_quotes(BTC, t, 100.00, 100.02, 1.0, 1.0)
    joined = intent("j1", "buy", "0.1", "limit", limit="100.00", ts_ns=t)
    doomed = intent("j2", "buy", "0.1", "limit", limit="99.00", ts_ns=t)
    submit(venue, recorder, joined)
    submit(venue, recorder, doomed)
    venue.on_quotes(BTC, t + 1, 100.00, 100.02, 1.0, 1.0)  # both arrive: 'joined' queues behind 1.0 at the bid
    venue.on_trades(BTC, t + 2, 100.00, 1.05, -1)  # sellers take the 1.0 ahead and 0.05 of ours
    (first,) = recorder.of(joined, OrderEventType.FILLED)
    assert (first.fill.quantity, first.fill.price, first.fill.liquidity) == \
        (Decimal("0.05"), Decimal("100.00"), "maker")
    recorder.request(doomed.client_order_id, OrderEventType.CANCEL_REQUESTED)
    run(venue.cancel(doomed.client_order_id))
    recorder.request(joined.client_order_id, OrderEventType.REPLACE_REQUESTED)
    run(venue.replace(joined.client_order_id, quantity=Decimal("0.2")))
    del venue  # killed with both requests received, neither answered

    restarted = make_venue(tmp_path, model)
    state = run(restarted.order_status(joined.client_order_id))
    assert (state.status, state.quantity, state.filled_qty) == (OrderStatus.PENDING_REPLACE, Decimal("0.1"),
                                                                Decimal("0.05"))
    assert run(restarted.order_status(doomed.client_order_id)).status is OrderStatus.PENDING_CANCEL
    run(restarted.connect(recorder))
    restarted.on_quotes(BTC, t + 3, 100.00, 100.02, 1.0, 1.0)
    restarted.on_trades(BTC, t + 4, 99.99, 0.5, -1)  # prints through the limit: the whole remainder fills

    assert [(e.event_type, e.ts_event_ns) for e in recorder.of(doomed)][-1] == (OrderEventType.CANCELLED, t + 2)
    replaced, second = recorder.of(joined)[-2:]
    assert (replaced.event_type, replaced.quantity) == (OrderEventType.REPLACED, Decimal("0.2"))
    assert (second.fill.fill_id, second.fill.quantity, second.fill.price, second.ts_event_ns) == \
        (f"{restarted.order_id_prefix}-1-2", Decimal("0.15"), Decimal("100.00"), t + 4)
    assert recorder.orders[joined.client_order_id].status is OrderStatus.FILLED
    assert recorder.orders[doomed.client_order_id].status is OrderStatus.CANCELLED
    assert recorder.unapplied == []
    fees = Decimal("0.2") * Decimal("100.00") * Decimal("1.0") / 10_000
    assert run(restarted.positions()) == {BTC: Decimal("0.2")}
    assert run(restarted.account()).cash == CASH - Decimal("20.00") - fees


def test_futures_are_margined_per_contract_and_realise_pnl_in_cash(tmp_path):
    """ES: 15,000 initial margin per contract, 1.40 per contract in fees; crossing through flat realises P&L."""
    es = "ESU4.GLBX"
    model = FillModel(es, 0.25, touch_only_curve(), fees=FeeSchedule(per_unit=1.40), latency=LatencyModel(0, 0, 0.0))
    recorder = Recorder()
    venue = PaperVenue(tmp_path, models={es: model}, starting_cash=Decimal("20000"), clock=lambda: INIT_CLOCK)
    run(venue.connect(recorder))
    t = 1_719_900_000_000_000_000
    venue.on_quotes(es, t, 5500.00, 5500.25, 10.0, 10.0)
    two = intent("f1", "buy", "2", ts_ns=t, instrument=es)
    one = intent("f2", "buy", "1", ts_ns=t, instrument=es)
    run(venue.submit(two))
    assert recorder.events[-1].reason == \
        "insufficient buying power: the order needs 30002.80 USD, 20000.00 USD available"  # 2 x 15,000 + 2 x 1.40
    submit(venue, recorder, one)
    venue.on_quotes(es, t + 1, 5500.00, 5500.25, 10.0, 10.0)
    account = run(venue.account())
    assert account.cash == Decimal("20000") - Decimal("1.40")
    unrealised = (Decimal("5500.125") - Decimal("5500.25")) * 50
    assert account.equity == account.cash + unrealised
    assert account.buying_power == account.cash + unrealised - Decimal("15000")

    venue.on_quotes(es, t + 2, 5510.00, 5510.25, 10.0, 10.0)
    flip = intent("f3", "sell", "2", ts_ns=t + 2, instrument=es)  # the same one contract of margin: allowed
    submit(venue, recorder, flip)
    venue.on_quotes(es, t + 3, 5510.00, 5510.25, 10.0, 10.0)
    assert recorder.of(flip, OrderEventType.FILLED)[0].fill.price == Decimal("5510.00")
    realised = (Decimal("5510.00") - Decimal("5500.25")) * 50
    assert run(venue.positions()) == {es: Decimal("-1")}
    assert run(venue.account()).cash == Decimal("20000") - Decimal("1.40") + realised - Decimal("2.80")
    assert run(venue.account()).equity == run(venue.account()).cash + (Decimal("5510.00") - Decimal("5510.125")) * 50


def test_two_books_of_one_account_never_share_order_or_fill_ids(tmp_path, model):
    first = PaperVenue(tmp_path / "a", models={BTC: model})
    second = PaperVenue(tmp_path / "b", models={BTC: model})
    assert first.order_id_prefix != second.order_id_prefix  # one store may hold both books' fills
    assert first.order_id_prefix.startswith("paper-")
    prefix = first.order_id_prefix
    run(first.close())
    assert PaperVenue(tmp_path / "a", models={BTC: model}).order_id_prefix == prefix  # kept across restarts


# -- what working orders hold, kept as running sums ---------------------------------------------------------------
class CheckedVenue(PaperVenue):
    """A paper venue that also runs the full buying-power/position scan on every order and compares."""

    def __init__(self, *args, **kwargs) -> None:
        self.verdicts: list[tuple[bool, str]] = []
        super().__init__(*args, **kwargs)

    def _surely_acceptable(self, order, slot):
        # asked for every new order (a replace always gets the full check)
        scanned = self._refusal_by_scan(order, slot)
        proved = super()._surely_acceptable(order, slot)
        assert not (proved and scanned), f"the running sums passed an order the full check refuses: {scanned}"
        self.verdicts.append((bool(proved), scanned))
        held = self._held_requirement(28)
        if held is not None:
            assert held == self._requirement(list(self._working.values()))
        return proved


def test_running_sums_agree_with_a_full_scan_of_the_working_orders(tmp_path):
    """Spot, futures and FX; resting, partly filled, replaced, cancelled and recovered orders: whenever the
    running sums pass an order the full scan passes it too, their totals are equal, and every refusal
    still comes from the full check with its reason."""
    import random

    es, fx = "ESU4.GLBX", "EURUSD.DUKASCOPY"
    models = {BTC: FillModel(BTC, 0.01, touch_only_curve(), fees=FeeSchedule(maker_bps=1.0, taker_bps=5.0),
                             latency=LatencyModel(0, 0, 0.0), max_take_over_touch=1.0),
              es: FillModel(es, 0.25, touch_only_curve(), fees=FeeSchedule(per_unit=1.40),
                            latency=LatencyModel(0, 0, 0.0)),
              fx: FillModel(fx, 0.0001, touch_only_curve(), fees=FeeSchedule(taker_bps=0.5),
                            latency=LatencyModel(0, 0, 0.0))}
    rng = random.Random(7)
    recorder = Recorder()

    def open_venue() -> CheckedVenue:
        # unsynced: a dropped venue's journal reserves no space that its finalizer would trim under the next one
        venue = CheckedVenue(tmp_path, models=models, starting_cash=Decimal("60000"), clock=lambda: INIT_CLOCK,
                             sync=False)
        run(venue.connect(recorder))
        return venue

    venue = open_venue()
    t = 1_723_000_000_000_000_000
    run(venue.submit(intent("u1", "buy", "1", ts_ns=t, instrument=es)))  # no quote yet: priced later
    prices = {BTC: 60000.0, es: 5500.0, fx: 1.085}
    ticks = {BTC: 0.01, es: 0.25, fx: 0.0001}
    sizes = {BTC: ["0.01", "0.05", "0.2", "1"], es: ["1", "2"], fx: ["1000", "100000"]}
    sent = []
    for step in range(400):
        t += 1_000_000
        for instrument, tick in ticks.items():
            prices[instrument] = round(prices[instrument] + rng.choice([-tick, 0, tick]), 6)
            bid = prices[instrument]
            venue.on_quotes(instrument, t, bid, round(bid + tick, 6), 0.1 if instrument == BTC else 5.0, 5.0)
        if rng.random() < 0.3:
            venue.on_trades(BTC, t, prices[BTC], rng.choice([0.05, 0.5]), -1)
        instrument = rng.choice(list(ticks))
        side = rng.choice(["buy", "sell"])
        limit = None
        if rng.random() < 0.4:
            offset = rng.choice([-3, 0, 2]) * ticks[instrument] * (1 if side == "buy" else -1)
            limit = f"{prices[instrument] + offset:.{2 if instrument != fx else 4}f}"
        order = intent(f"o{step}", side, rng.choice(sizes[instrument]), "limit" if limit else "market",
                       limit=limit, ts_ns=t, instrument=instrument)
        order = OrderIntent(**{**order.__dict__, "reduce_only": rng.random() < 0.1})
        run(venue.submit(order))
        sent.append(order.client_order_id)
        if rng.random() < 0.1:
            run(venue.cancel(rng.choice(sent)))
        if rng.random() < 0.1:
            run(venue.replace(rng.choice(sent), quantity=Decimal(rng.choice(sizes[BTC][:2]))))
        if step in (150, 300):
            verdicts = venue.verdicts
            del venue  # a crash: the sums are rebuilt from the journal
            venue = open_venue()
            venue.verdicts = verdicts + venue.verdicts

    proved = [v for v in venue.verdicts if v[0]]
    refused = [v for v in venue.verdicts if v[1]]
    assert len(proved) > 100 and len(refused) > 20  # both paths ran
    reasons = {reason.split(":")[0].split(" of ")[0] for _, reason in refused}
    assert {"insufficient buying power", "insufficient position", "reduce-only buy"} <= reasons
    assert run(venue.account()).buying_power == \
        run(venue.account()).cash + venue._unrealised_margined() - venue._requirement(list(venue._working.values()))


def test_an_order_shape_is_conformed_once_and_a_bad_one_refused_every_time(tmp_path, model, frames):
    """The same market order twice fills the same way; an off-tick limit is refused on each submit."""
    recorder = Recorder()
    venue = make_venue(tmp_path, model, recorder)
    feed(venue, frames, 0, 5)
    orders = [intent("c1", "buy", "0.010", ts_ns=venue.now_ns), intent("c2", "buy", "0.01", ts_ns=venue.now_ns),
              intent("c3", "buy", "0.01", "limit", limit="61800.005", ts_ns=venue.now_ns),
              intent("c4", "buy", "0.01", "limit", limit="61800.005", ts_ns=venue.now_ns)]
    for order in orders:
        submit(venue, recorder, order)
    feed(venue, frames, 5, 10)
    first, second = (recorder.of(o, OrderEventType.FILLED)[0].fill for o in orders[:2])
    assert (str(first.quantity), str(second.quantity)) == ("0.01000", "0.01000")  # on the lot of 0.00001
    for order in orders[2:]:
        (event,) = recorder.of(order)
        assert event.event_type is OrderEventType.REJECTED and "not a multiple of the tick" in event.reason


def test_order_path_records_are_the_bytes_encode_record_writes(tmp_path):
    """The order, accepted and fill records are formatted without a dict (venues/paper_records.py's fast path): every
    journal line must be exactly what encode_record writes for the record it decodes to, also for text
    that JSON escapes, and a value the fast path does not take (a float clock) goes the slow way."""

    from tradebook.store.records import decode_record, encode_record

    models = {BTC: FillModel(BTC, 0.01, touch_only_curve(), fees=FeeSchedule(taker_bps=7.5, per_unit=0.01),
                             latency=LatencyModel(0, 0, 0.0))}
    for clock in (lambda: 7, lambda: 7.5):
        state = tmp_path / str(clock())
        venue = PaperVenue(state, models=models, clock=clock, sync=False, starting_cash=Decimal(100_000))
        run(venue.connect(lambda event: None))
        t = 1_723_000_000_000_000_000
        venue.on_quotes(BTC, t, 60000.0, 60000.01, 1.0, 1.0)
        for i, (name, strategy) in enumerate([("a", "s1"), ('q"uote\\', "é\n\t€"), ("c", "\u2028\x00")]):
            order = OrderIntent(intent_id=name, strategy_id=strategy, account_id="paper", instrument_id=BTC,
                                side=Side.BUY, quantity=Decimal("0.0010"), order_type=OrderType.MARKET,
                                time_in_force=TimeInForce.GTC, ts_ns=t)
            run(venue.submit(order))
            run(venue.submit(dataclasses.replace(order, intent_id=name + "L", order_type=OrderType.LIMIT,
                                                 limit_price=Decimal("59999.50"), reduce_only=i == 0)))
            t += 1_000
            venue.on_quotes(BTC, t, 60000.0, 60000.01, 1.0, 1.0)
        run(venue.close())
        lines = (state / JOURNAL_NAME).read_bytes().rstrip(b"\0").splitlines()
        kinds = set()
        for line in lines:
            body = line.split(b" ", 1)[1]
            record = decode_record(body)
            kinds.add(record["kind"])
            assert body == encode_record(record), record
        assert {"order", "accepted", "fill"} <= kinds


def test_submit_many_gives_what_a_loop_of_submits_gives(tmp_path, model, frames):
    """One call for a burst of orders: the same events, journal records (but the book id), account and
    fills as submitting them one by one; refused orders among them do not stop the others."""
    from tradebook.errors import OrderError

    def burst(ts: int) -> list[OrderIntent]:
        return [intent("m1", "buy", "0.01", ts_ns=ts), intent("l1", "buy", "0.02", "limit", limit="61000.00", ts_ns=ts),
                intent("m1", "buy", "0.01", ts_ns=ts),  # duplicate client order id: refused
                intent("s1", "sell", "5", ts_ns=ts),  # more than held: refused
                intent("t1", "buy", "0.01", "limit", limit="61000.005", ts_ns=ts),  # off the tick: refused
                intent("x1", "buy", "0.01", ts_ns=ts, instrument="ETHUSDT.BINANCE"),  # no model: refused
                intent("b1", "buy", "50", ts_ns=ts),  # beyond buying power: refused
                intent("d1", "buy", "0.01", "limit", limit="60000.00", tif="day", ts_ns=ts),
                intent("m2", "buy", "0.00100", ts_ns=ts), intent("m3", "buy", "0.001", ts_ns=ts)]

    def session(name: str, many: bool) -> tuple[list[str], list[bytes], tuple]:
        recorder = Recorder()
        venue = make_venue(tmp_path / name, model, recorder)
        feed(venue, frames, 0, 5)
        for step in range(2):
            orders = [dataclasses.replace(o, intent_id=f"{o.intent_id}-{step}") for o in burst(venue.now_ns)]
            orders.append(orders[0])  # a duplicate of this burst's first order, after it
            if many:
                run(venue.submit_many(orders))
            else:
                for order in orders:
                    run(venue.submit(order))
            feed(venue, frames, 5 + step * 5, 10 + step * 5)
        state = (run(venue.account()), run(venue.positions()), run(venue.open_orders()), run(venue.fills()))
        run(venue.close())
        book = venue.book_id
        events = [repr(e).replace(book, "<book>") for e in recorder.events]
        records = [line.split(b" ", 1)[1].replace(book.encode(), b"<book>")
                   for line in (tmp_path / name / JOURNAL_NAME).read_bytes().rstrip(b"\0").splitlines()]
        return events, records, repr(state).replace(book, "<book>")

    one_by_one, together = session("loop", many=False), session("many", many=True)
    assert together == one_by_one
    events = one_by_one[0]
    assert sum("REJECTED" in e for e in events) == 12 and sum("FILLED" in e for e in events) >= 6
    assert sum(b'"kind":"order"' in r for r in one_by_one[1]) == 10  # five of each burst taken

    # bad input raises as submit does: what came before it was taken, what comes after it is not sent
    recorder = Recorder()
    venue = make_venue(tmp_path / "bad", model, recorder)
    feed(venue, frames, 0, 5)
    first, last = intent("ok1", "buy", "0.01", ts_ns=venue.now_ns), intent("ok2", "buy", "0.01", ts_ns=venue.now_ns)
    with pytest.raises(OrderError, match="submit takes an OrderIntent"):
        run(venue.submit_many([first, "not an intent", last]))
    assert run(venue.order_status(first.client_order_id)) is not None
    assert run(venue.order_status(last.client_order_id)) is None
    run(venue.submit_many([]))  # nothing to do


# -- what the paper venue declares ------------------------------------------------------------
def test_the_paper_venue_declares_itself_simulated_and_takes_its_instruments_from_calibrations(tmp_path, model):
    from tradebook.venues.base import Capability

    venue = make_venue(tmp_path / "v", model)
    assert venue.capabilities == {Capability.SIMULATED, Capability.SUBMIT_MANY, Capability.NATIVE_REPLACE}
    assert Capability.SHORTING not in venue.capabilities  # a cash account
    with pytest.raises(NotImplementedError, match="venue 'paper' publishes no instrument metadata"):
        run(venue.instruments())
    assert run(venue.health()).ok
    run(venue.close())
