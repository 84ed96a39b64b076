"""The Alpaca adapter driven against the local Alpaca server through the port: orders, events, every scripted fault."""

from __future__ import annotations

import asyncio
import logging
import queue
import time
from decimal import Decimal

import pytest

from tradebook.errors import ConfigError, NotSentError, OutcomeUnknownError, VenueRejectedError
from tradebook.execution.oms import RejectCode
from tradebook.model.instruments import Side
from tradebook.model.orders import OrderEvent, OrderEventType, OrderIntent, OrderStatus, OrderType, TimeInForce
from tradebook.sandbox.alpaca import DEFAULT_KEY, AlpacaFault, AlpacaSandbox
from tradebook.venues.base import Capability

pytest.importorskip("alpaca")
from tradebook.venues.alpaca import AlpacaVenue  # noqa: E402
from test_session import frames, sessions, store, template  # noqa: E402,F401 (session fixtures)

E = OrderEventType
WAIT_S = 5.0
SECRET = "sandbox-secret-NEVER-SHOWN"


class Recorder:
    """The handler given to connect(): events from the adapter's delivery thread, in a queue."""

    def __init__(self) -> None:
        self.events: queue.Queue[OrderEvent] = queue.Queue()
        self.seen: list[OrderEvent] = []

    def __call__(self, event: OrderEvent) -> None:
        self.events.put(event)

    def next(self, timeout: float = WAIT_S) -> OrderEvent:
        try:
            event = self.events.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no event within {timeout} s; seen so far: "
                                 f"{[(e.event_type, e.client_order_id[:8]) for e in self.seen]}") from None
        self.seen.append(event)
        return event

    def kinds(self, n: int) -> list[OrderEventType]:
        return [self.next().event_type for _ in range(n)]

    def quiet(self, quiet_s: float = 0.3) -> list[OrderEvent]:
        out = []
        while True:
            try:
                out.append(self.events.get(timeout=quiet_s))
            except queue.Empty:
                return out


class Harness:
    def __init__(self, server: AlpacaSandbox, venue: AlpacaVenue, recorder: Recorder) -> None:
        self.server, self.venue, self.events = server, venue, recorder
        self.loop = asyncio.new_event_loop()
        self.n = 0

    def run(self, coro, timeout: float = 10.0):
        return self.loop.run_until_complete(asyncio.wait_for(coro, timeout))

    def intent(self, qty="10", side=Side.BUY, order_type=OrderType.MARKET, tif=TimeInForce.DAY, limit=None,
               stop=None, instrument="SPY.ARCX") -> OrderIntent:
        self.n += 1
        return OrderIntent(f"i-{self.n}", "s-test", self.venue.account_id, instrument, side, Decimal(qty), order_type,
                           tif, time.time_ns(), limit_price=None if limit is None else Decimal(limit),
                           stop_price=None if stop is None else Decimal(stop))

    def limit(self, qty="2", price="449", tif=TimeInForce.GTC, side=Side.BUY) -> OrderIntent:
        return self.intent(qty, side, OrderType.LIMIT, tif, limit=price)

    def posts(self) -> int:
        return self.server.requests.count(("POST", "/v2/orders"))


def wait_for(predicate, what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def make_venue(server: AlpacaSandbox, **options) -> AlpacaVenue:
    settings = dict(key_id=DEFAULT_KEY, secret_key=server.secret, base_url=server.base_url,
                    stream_url=server.stream_url, request_timeout_s=1.0, connect_timeout_s=WAIT_S,
                    poll_interval_s=30.0, stream_reconnect_min_s=0.05, rate_limit_max_wait_s=0.5)
    settings.update(options)
    return AlpacaVenue(**settings)


@pytest.fixture
def harness():
    with AlpacaSandbox(secret=SECRET) as server:
        server.set_price("SPY", "450.00", "450.02")
        recorder = Recorder()
        h = Harness(server, make_venue(server), recorder)
        h.run(h.venue.connect(recorder))
        try:
            yield h
        finally:
            h.run(h.venue.close())
            h.loop.close()


# -- the ordinary path ------------------------------------------------------------------------------
def test_a_market_order_is_accepted_and_filled_and_shows_in_positions_and_account(harness):
    h = harness
    intent = h.intent("10")
    h.run(h.venue.submit(intent))
    accepted, filled = h.events.next(), h.events.next()
    assert (accepted.event_type, filled.event_type) == (E.ACCEPTED, E.FILLED)
    assert {accepted.client_order_id, filled.client_order_id} == {intent.client_order_id}
    fill = filled.fill
    assert (fill.instrument_id, fill.side, fill.quantity, fill.price) == ("SPY.ARCX", Side.BUY, 10, Decimal("450.02"))
    assert accepted.venue_order_id == filled.venue_order_id
    assert h.events.quiet() == []
    assert h.run(h.venue.positions()) == {"SPY.ARCX": Decimal(10)}
    account = h.run(h.venue.account())
    assert account.cash == Decimal(100000) - Decimal("4500.2") and account.account_id == h.venue.account_id
    state = h.run(h.venue.order_status(intent.client_order_id))
    assert (state.status, state.filled_qty, state.avg_price) == (OrderStatus.FILLED, 10, Decimal("450.02"))
    [venue_fill] = h.run(h.venue.fills(0))
    assert venue_fill.fill_id == fill.fill_id and venue_fill.client_order_id == intent.client_order_id
    assert h.run(h.venue.order_status("tb-never-sent")) is None


def test_partial_fills_arrive_as_fills_with_their_own_ids_and_open_orders_show_the_rest(harness):
    h = harness
    h.server.book.max_fill_qty = Decimal(4)
    intent = h.intent("10")
    h.run(h.venue.submit(intent))
    assert h.events.kinds(2) == [E.ACCEPTED, E.FILLED]
    [working] = h.run(h.venue.open_orders())
    assert (working.client_order_id, working.status, working.filled_qty) == (
        intent.client_order_id, OrderStatus.PARTIALLY_FILLED, 4)
    h.server.set_price("SPY", "450.10", "450.12")
    h.server.set_price("SPY", "450.20", "450.22")
    fills = [h.events.next().fill for _ in range(2)]
    assert [f.quantity for f in fills] == [4, 2] and [f.price for f in fills] == [Decimal("450.12"),
                                                                                  Decimal("450.22")]
    assert len({f.fill_id for f in h.run(h.venue.fills(0))}) == 3
    assert h.run(h.venue.open_orders()) == []


def test_cancel_and_expiry_arrive_as_events(harness):
    h = harness
    resting, day = h.limit("5", "440"), h.limit("5", "441", tif=TimeInForce.DAY)
    h.run(h.venue.submit(resting))
    h.run(h.venue.submit(day))
    assert h.events.kinds(2) == [E.ACCEPTED, E.ACCEPTED]
    h.run(h.venue.cancel(resting.client_order_id))
    cancelled = h.events.next()
    assert (cancelled.event_type, cancelled.client_order_id) == (E.CANCELLED, resting.client_order_id)
    h.server.expire(h.run(h.venue.order_status(day.client_order_id)).venue_order_id)
    expired = h.events.next()
    assert (expired.event_type, expired.client_order_id) == (E.EXPIRED, day.client_order_id)
    assert h.run(h.venue.order_status(day.client_order_id)).status is OrderStatus.EXPIRED


def test_replace_makes_a_new_alpaca_order_whose_events_come_under_the_tradebook_id(harness):
    h = harness
    intent = h.limit("5", "449")
    h.run(h.venue.submit(intent))
    first = h.events.next()
    h.run(h.venue.replace(intent.client_order_id, quantity=Decimal(7), limit_price=Decimal("449.25")))
    replaced = h.events.next()
    assert (replaced.event_type, replaced.client_order_id) == (E.REPLACED, intent.client_order_id)
    assert (replaced.quantity, replaced.limit_price) == (7, Decimal("449.25"))
    assert replaced.venue_order_id != first.venue_order_id
    state = h.run(h.venue.order_status(intent.client_order_id))  # follows the replacement
    assert (state.venue_order_id, state.quantity, state.limit_price) == (replaced.venue_order_id, 7,
                                                                        Decimal("449.25"))
    h.run(h.venue.replace(intent.client_order_id, limit_price=Decimal("449.30")))  # a second replace: .r2
    second = h.events.next()
    assert second.event_type is E.REPLACED and second.limit_price == Decimal("449.3")
    assert h.server.order(second.venue_order_id).client_order_id == intent.client_order_id + ".r2"
    h.server.set_price("SPY", "449.10", "449.20")
    filled = h.events.next()
    assert (filled.event_type, filled.client_order_id, filled.fill.quantity) == (E.FILLED, intent.client_order_id, 7)
    assert {f.client_order_id for f in h.run(h.venue.fills(0))} == {intent.client_order_id}
    assert h.events.quiet() == []


def test_a_replace_that_loses_to_a_fill_ends_filled_with_the_replace_rejected(harness):
    h = harness
    h.server.fault(AlpacaFault.REPLACE_LOSES_TO_FILL)
    intent = h.limit("2", "449")
    h.run(h.venue.submit(intent))
    assert h.events.kinds(1) == [E.ACCEPTED]
    h.run(h.venue.replace(intent.client_order_id, limit_price=Decimal(448)))
    filled, refused = h.events.next(), h.events.next()
    assert (filled.event_type, filled.fill.quantity) == (E.FILLED, 2)
    assert (refused.event_type, refused.client_order_id) == (E.REPLACE_REJECTED, intent.client_order_id)
    assert h.run(h.venue.order_status(intent.client_order_id)).status is OrderStatus.FILLED
    assert h.events.quiet() == []


def test_an_order_rejected_after_alpaca_took_it_arrives_as_rejected(harness):
    h = harness
    h.server.fault(AlpacaFault.REJECT_AFTER_ACCEPT)
    intent = h.intent("1")
    h.run(h.venue.submit(intent))  # answered 'accepted': received, not yet at the exchange
    rejected = h.events.next()
    assert (rejected.event_type, rejected.client_order_id) == (E.REJECTED, intent.client_order_id)
    assert rejected.code is RejectCode.VENUE_OTHER  # Alpaca's update says that, not why
    assert h.events.quiet() == []


def test_an_order_rejected_after_it_was_announced_new_arrives_as_rejected_with_its_code(harness):
    h = harness
    h.server.fault(AlpacaFault.REJECT_AFTER_ACCEPT, announce=True)
    intent = h.intent("1")
    h.run(h.venue.submit(intent))  # answered 'new', streamed 'new', then 'rejected'
    accepted, ended = h.events.next(), h.events.next()
    assert accepted.event_type is E.ACCEPTED
    assert (ended.event_type, ended.client_order_id, ended.code) == (E.REJECTED, intent.client_order_id,
                                                                     RejectCode.VENUE_OTHER)
    assert ended.reason == "alpaca:rejected"
    assert h.events.quiet() == []


# -- refusals -----------------------------------------------------------------------------------------
def test_a_burst_of_rejections_raises_venue_rejected_with_codes_then_an_order_goes_through(harness):
    h = harness
    h.server.fault(AlpacaFault.REJECT, times=3)
    for _ in range(3):
        with pytest.raises(VenueRejectedError) as info:
            h.run(h.venue.submit(h.intent("1")))
        assert (info.value.code, info.value.venue_code) == (RejectCode.INSUFFICIENT_FUNDS, "40310000")
        assert "insufficient buying power" in str(info.value)
    h.run(h.venue.submit(h.intent("1")))
    assert h.events.kinds(2) == [E.ACCEPTED, E.FILLED]
    assert h.posts() == 4


def test_a_second_send_of_one_client_order_id_is_refused_as_a_duplicate(harness):
    h = harness
    intent = h.limit("1", "440")
    h.run(h.venue.submit(intent))
    with pytest.raises(VenueRejectedError) as info:
        h.run(h.venue.submit(intent))
    assert (info.value.code, info.value.venue_code) == (RejectCode.DUPLICATE_CLIENT_ID, "40010001")
    assert len(h.server.book.orders) == 1


def test_alpaca_rules_come_back_as_codes_and_unknown_instruments_never_leave(harness):
    h = harness
    with pytest.raises(VenueRejectedError) as info:
        h.run(h.venue.submit(h.intent("0.5", order_type=OrderType.LIMIT, tif=TimeInForce.GTC, limit="440")))
    assert (info.value.code, info.value.venue_code) == (RejectCode.UNSUPPORTED_ORDER, "42210000")
    with pytest.raises(NotSentError, match="BTCUSDT.BINANCE"):
        h.run(h.venue.submit(h.intent("1", instrument="BTCUSDT.BINANCE")))
    with pytest.raises(NotSentError, match="NOPE.XNAS"):
        h.run(h.venue.submit(h.intent("1", instrument="NOPE.XNAS")))
    intent = h.intent("1")
    h.run(h.venue.submit(intent))
    h.events.kinds(2)
    with pytest.raises(VenueRejectedError) as info:
        h.run(h.venue.cancel(intent.client_order_id))
    assert (info.value.code, info.value.venue_code) == (RejectCode.TOO_LATE_TO_CANCEL, "42210000")
    with pytest.raises(VenueRejectedError) as info:
        h.run(h.venue.cancel("tb-unknown"))
    assert info.value.code == RejectCode.UNKNOWN_ORDER


def test_429s_are_waited_out_and_the_order_is_placed_once(harness):
    h = harness
    h.server.fault(AlpacaFault.RATE_LIMIT, times=2, retry_after=0.05)
    intent = h.intent("1")
    h.run(h.venue.submit(intent))
    assert h.events.kinds(2) == [E.ACCEPTED, E.FILLED]
    assert h.posts() == 3 and len(h.server.book.orders) == 1


def test_429s_beyond_the_waits_are_not_sent_and_the_same_id_goes_later(harness):
    h = harness
    h.server.fault(AlpacaFault.RATE_LIMIT, times=4, retry_after=0.05)
    intent = h.intent("1")
    with pytest.raises(NotSentError, match="rate limited"):
        h.run(h.venue.submit(intent))
    assert h.server.book.orders == {}
    h.run(h.venue.submit(intent))  # nothing lost: the same client order id, once
    assert h.events.kinds(2) == [E.ACCEPTED, E.FILLED]
    assert len(h.server.book.orders) == 1


# -- unknown outcomes ---------------------------------------------------------------------------------
def test_an_accepted_order_whose_reply_never_comes_is_unknown_not_resent_and_found_by_client_id(harness):
    h = harness
    h.server.fault(AlpacaFault.HANG_AFTER_ACCEPT)
    intent = h.intent("3")
    with pytest.raises(OutcomeUnknownError, match="may have arrived"):
        h.run(h.venue.submit(intent))
    assert h.posts() == 1  # no resend, by alpaca-py or by us
    state = h.run(h.venue.order_status(intent.client_order_id))
    assert (state.status, state.filled_qty) == (OrderStatus.FILLED, 3)
    assert h.events.kinds(2) == [E.ACCEPTED, E.FILLED]  # the stream still tells


@pytest.mark.parametrize("fault", [AlpacaFault.GATEWAY_TIMEOUT_AFTER_ACCEPT, AlpacaFault.DROP_AFTER_ACCEPT])
def test_a_504_or_a_dropped_reply_after_accepting_is_unknown_and_never_resent(harness, fault):
    h = harness
    h.server.fault(fault)
    intent = h.intent("2")
    with pytest.raises(OutcomeUnknownError):
        h.run(h.venue.submit(intent))
    assert h.posts() == 1
    assert h.run(h.venue.order_status(intent.client_order_id)).status is OrderStatus.FILLED
    assert h.run(h.venue.positions()) == {"SPY.ARCX": Decimal(2)}


def test_a_venue_that_is_gone_refuses_before_sending(harness):
    h = harness
    h.server.stop()
    with pytest.raises(NotSentError, match="no connection"):
        h.run(h.venue.submit(h.intent("1")))


# -- the stream's faults ------------------------------------------------------------------------------
def test_a_duplicate_fill_message_is_delivered_once(harness):
    h = harness
    h.server.fault(AlpacaFault.DUPLICATE_FILL)
    h.run(h.venue.submit(h.intent("1")))
    assert h.events.kinds(2) == [E.ACCEPTED, E.FILLED]
    assert h.events.quiet() == []
    fills = [m for m in h.server.sent if m["data"]["event"] == "fill"]
    assert len(fills) == 2 and fills[0]["data"]["execution_id"] == fills[1]["data"]["execution_id"]


def test_a_fill_after_a_cancel_answered_204_is_delivered_as_a_fill(harness):
    h = harness
    h.server.fault(AlpacaFault.FILL_AFTER_CANCEL)
    intent = h.limit("2", "449")
    h.run(h.venue.submit(intent))
    assert h.events.kinds(1) == [E.ACCEPTED]
    h.run(h.venue.cancel(intent.client_order_id))
    filled = h.events.next()
    assert (filled.event_type, filled.fill.quantity, filled.fill.price) == (E.FILLED, 2, Decimal(449))
    assert h.events.quiet() == []


def test_a_fill_lost_in_a_stream_gap_is_recovered_by_rest_once(harness):
    h = harness
    intent = h.limit("2", "449")
    h.run(h.venue.submit(intent))
    assert h.events.kinds(1) == [E.ACCEPTED]
    h.server.fault(AlpacaFault.DROP_STREAM_BEFORE_FILL)
    h.server.set_price("SPY", "448.90", "448.95")
    recovered = h.events.next()
    lost = [m["data"]["execution_id"] for m in h.server.sent if m["data"]["event"] == "fill"]
    assert (recovered.event_type, recovered.client_order_id, recovered.fill.fill_id) == (
        E.FILLED, intent.client_order_id, lost[0])
    assert recovered.fill.quantity == 2 and "recovered" in recovered.reason
    assert h.venue.stream_connects == 2 and h.venue.recovered_fills == 1
    h.server.drop_stream()  # another gap with nothing in it: the fill is not delivered again
    wait_for(lambda: h.venue.stream_connects == 3 and h.venue.recoveries >= 2 and h.server.listens == 3,
             "a second reconnect and recovery")
    assert h.venue.recover_fills() == 0
    assert h.events.quiet() == [] and h.venue.recovered_fills == 1
    h.run(h.venue.submit(h.intent("1")))  # the reconnected stream delivers what comes next
    assert h.events.kinds(2) == [E.ACCEPTED, E.FILLED]


def test_the_poller_recovers_fills_when_the_stream_stays_silent():
    with AlpacaSandbox(secret=SECRET) as server:
        server.set_price("SPY", "450.00", "450.02")
        recorder = Recorder()
        h = Harness(server, make_venue(server, poll_interval_s=0.1), recorder)
        h.run(h.venue.connect(recorder))
        try:
            intent = h.limit("2", "449")
            h.run(h.venue.submit(intent))
            assert h.events.kinds(1) == [E.ACCEPTED]
            server.mute_stream()  # the stream connection stays open but hears nothing
            server.set_price("SPY", "448.90", "448.95")
            filled = h.events.next()
            assert (filled.event_type, filled.client_order_id) == (E.FILLED, intent.client_order_id)
            assert h.events.quiet() == []
        finally:
            h.run(h.venue.close())
            h.loop.close()



def test_a_fresh_adapter_finds_a_replaced_order_and_its_fills_under_the_tradebook_id(harness):
    h = harness
    intent = h.limit("3", "449")
    h.run(h.venue.submit(intent))
    h.events.next()
    h.run(h.venue.replace(intent.client_order_id, limit_price=Decimal("449.50")))
    assert h.events.next().event_type is E.REPLACED
    h.server.set_price("SPY", "449.40", "449.45")
    assert h.events.next().event_type is E.FILLED
    fresh = make_venue(h.server)  # a new process: it knows nothing of the replacement
    h.run(fresh.connect(Recorder()))
    try:
        state = h.run(fresh.order_status(intent.client_order_id))
        assert (state.client_order_id, state.status, state.limit_price) == (
            intent.client_order_id, OrderStatus.FILLED, Decimal("449.5"))
        [fill] = h.run(fresh.fills(0))
        assert (fill.client_order_id, fill.instrument_id, fill.quantity) == (intent.client_order_id, "SPY.ARCX", 3)
    finally:
        h.run(fresh.close())


def test_wrong_keys_are_refused_at_connect_without_showing_them_and_a_venue_connects_again_after_close():
    with AlpacaSandbox(secret=SECRET) as server:
        venue = make_venue(server, secret_key="a-wrong-secret-XYZ")
        loop = asyncio.new_event_loop()
        try:
            with pytest.raises(VenueRejectedError, match="not authorised") as info:
                loop.run_until_complete(asyncio.wait_for(venue.connect(Recorder()), 10))
            assert "a-wrong-secret-XYZ" not in str(info.value) and "a-wrong-secret-XYZ" not in repr(venue)
            assert "not connected" in repr(venue)
            right = make_venue(server)
            server.set_price("SPY", "450.00", "450.02")
            recorder = Recorder()
            loop.run_until_complete(asyncio.wait_for(right.connect(recorder), 10))
            loop.run_until_complete(right.close())
            loop.run_until_complete(asyncio.wait_for(right.connect(recorder), 10))  # again after close()
            try:
                loop.run_until_complete(right.submit(OrderIntent("again", "s", right.account_id, "SPY.ARCX", Side.BUY,
                                                                 Decimal(1), OrderType.MARKET, TimeInForce.DAY, 1)))
                assert [recorder.next().event_type for _ in range(2)] == [E.ACCEPTED, E.FILLED]
            finally:
                loop.run_until_complete(right.close())
        finally:
            loop.close()


# -- metadata, health, credentials ------------------------------------------------------------------
def test_instruments_come_from_alpaca_assets_with_their_source(harness):
    instruments = {i.instrument_id: i for i in harness.run(harness.venue.instruments())}
    assert {"SPY.ARCX", "AAPL.XNAS", "IBM.XNYS"} <= set(instruments)
    spy = instruments["SPY.ARCX"]
    assert (spy.tick_size, spy.lot_size, spy.tick_for(Decimal("0.5"))) == (Decimal("0.01"), 1, Decimal("0.0001"))
    assert "alpaca assets" in spy.description and "ARCA -> ARCX" in spy.description


def test_capabilities_and_health(harness):
    h = harness
    assert Capability.SIMULATED not in h.venue.capabilities
    assert {Capability.FRACTIONAL, Capability.EXTENDED_HOURS, Capability.STREAMING_FILLS} <= h.venue.capabilities
    health = h.run(h.venue.health())
    assert health.ok and "stream up" in health.reason
    h.server.stop()
    health = h.run(h.venue.health())
    assert not health.ok and "no connection" in health.reason


def test_from_env_reads_credentials_only_from_the_environment_and_never_shows_them(harness, caplog):
    with pytest.raises(ConfigError, match="TRADEBOOK_ALPACA_KEY_ID and TRADEBOOK_ALPACA_SECRET_KEY"):
        AlpacaVenue.from_env(environ={})
    with pytest.raises(ConfigError, match="TRADEBOOK_ALPACA_PAPER"):
        AlpacaVenue.from_env(environ={"TRADEBOOK_ALPACA_KEY_ID": "k", "TRADEBOOK_ALPACA_SECRET_KEY": SECRET,
                                     "TRADEBOOK_ALPACA_PAPER": "maybe"})
    live = AlpacaVenue.from_env(environ={"TRADEBOOK_ALPACA_KEY_ID": "k", "TRADEBOOK_ALPACA_SECRET_KEY": SECRET,
                                         "TRADEBOOK_ALPACA_PAPER": "false"})
    assert live.is_live and live.base_url == "https://api.alpaca.markets" and live.account_id == "alpaca-live"
    h = harness
    env = {"TRADEBOOK_ALPACA_KEY_ID": DEFAULT_KEY, "TRADEBOOK_ALPACA_SECRET_KEY": SECRET,
           "TRADEBOOK_ALPACA_BASE_URL": h.server.base_url, "TRADEBOOK_ALPACA_STREAM_URL": h.server.stream_url,
           "TRADEBOOK_ALPACA_ACCOUNT": "PA3SANDBOX1"}
    venue = AlpacaVenue.from_env(environ=env, request_timeout_s=1.0)
    assert not venue.is_live and venue.account_id == "PA3SANDBOX1"
    recorder = Recorder()
    caplog.set_level(logging.DEBUG)
    h.run(venue.connect(recorder))
    try:
        h.server.fault(AlpacaFault.REJECT)
        with pytest.raises(VenueRejectedError) as info:
            h.run(venue.submit(h.intent("1")))
        h.server.fault(AlpacaFault.RATE_LIMIT, times=9, retry_after=0.01)
        with pytest.raises(NotSentError) as limited:
            h.run(venue.account())
        shown = " ".join([repr(venue), str(venue.__dict__.get("base_url")), str(info.value), str(limited.value),
                          caplog.text])
        assert SECRET not in shown and SECRET not in repr(vars(venue).keys())
    finally:
        h.run(venue.close())


# -- the order manager on this adapter -------------------------------------------------------------
async def _until(predicate, what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


def test_the_order_manager_on_alpaca_settles_every_fault_with_nothing_lost_or_doubled(tmp_path):
    from tradebook.store.journal import Journal
    from tradebook.execution.oms import OrderManager
    from tradebook.portfolio import Portfolio
    from tradebook.store import Store

    with AlpacaSandbox(secret=SECRET) as server:
        server.set_price("SPY", "450.00", "450.02")
        venue = make_venue(server)
        h = Harness(server, venue, Recorder())
        store, journal = Store(tmp_path / "tb.duckdb"), Journal(tmp_path / "orders.journal")
        oms = OrderManager(store, journal, venue, Portfolio(Decimal(100_000)), mode="paper")

        async def scenario() -> None:
            await venue.connect(oms.on_event)
            try:
                # an accepted order whose reply never comes, and a stream that hears nothing meanwhile:
                # unresolved, its instrument blocked, never resent; reconcile() finds it by client id
                server.fault(AlpacaFault.HANG_AFTER_ACCEPT)
                server.mute_stream()
                hung = await oms.submit(h.intent("3"))
                assert oms.order(hung.client_order_id).status is OrderStatus.UNRESOLVED
                assert oms.blocked_instruments() == {"SPY.ARCX"}
                assert [a.kind for a in oms.alerts() if hung.client_order_id in a.message] == ["outcome_unknown"]
                await oms.reconcile()
                assert oms.order(hung.client_order_id).status is OrderStatus.FILLED
                assert oms.blocked_instruments() == set() and h.posts() == 1
                await asyncio.to_thread(server.drop_stream)  # the stream back; its REST recovery repeats nothing
                await _until(lambda: venue.stream_connects == 2 and venue.recoveries >= 1 and server.listens == 2,
                             "a reconnect")
                # a duplicate fill message, a fill after a cancel, a fill lost in a stream gap
                server.fault(AlpacaFault.DUPLICATE_FILL)
                twice = await oms.submit(h.intent("1"))
                raced = await oms.submit(h.limit("2", "449"))
                await _until(lambda: oms.order(raced.client_order_id).status is OrderStatus.ACCEPTED, "an ack")
                server.fault(AlpacaFault.FILL_AFTER_CANCEL)
                await oms.cancel(raced.client_order_id)
                gap = await oms.submit(h.limit("4", "448"))
                await _until(lambda: oms.order(gap.client_order_id).status is OrderStatus.ACCEPTED, "an ack")
                server.fault(AlpacaFault.DROP_STREAM_BEFORE_FILL)
                await asyncio.to_thread(server.set_price, "SPY", "447.90", "447.95")
                done = (twice.client_order_id, raced.client_order_id, gap.client_order_id)
                await _until(lambda: all(oms.order(c).status is OrderStatus.FILLED for c in done), "every fill")
                alerts = await oms.reconcile()
                assert [a for a in alerts if a.kind in ("position_mismatch", "fill_mismatch")] == []
                held = {k: v for (_, k), v in oms.portfolio.net_positions(venue.account_id).items()}
                assert held == {"SPY.ARCX": Decimal(10)} == await venue.positions()
                assert server.positions() == {"SPY": Decimal(10)}
                assert venue.recovered_fills >= 2  # the hung order's (booked once), the gap's (and any lost
                # between alpaca-py's 'listen' and the server's registering it)
                assert len(oms.order(hung.client_order_id).fill_ids) == 1
            finally:
                await venue.close()
                oms.close()

        try:
            asyncio.run(asyncio.wait_for(scenario(), 30))
        finally:
            journal.close()
            store.close()


# -- through the Session API ------------------------------------------------------------------------------
def test_an_armed_alpaca_account_trades_cancels_halts_and_flattens_through_the_session(
        store, tmp_path, sessions, frames, monkeypatch):  # noqa: F811 - test_session's fixtures
    from test_session import IBM, signal
    from test_session_live import ACCOUNT, alpaca_session

    with AlpacaSandbox(secret=SECRET) as server:
        s, batch = alpaca_session(store, tmp_path, sessions, frames, monkeypatch, server)
        bid = batch.last_quote(IBM)[1]
        s.start()
        assert s.status()["routes"] == f"alpaca (account {ACCOUNT})"
        s.step(batch)
        server.fault(AlpacaFault.DUPLICATE_FILL)  # the stream says it twice: booked once
        [order] = s.submit(signal("alpaca-live-1", instrument=IBM, quantity="10"))
        wait_for(lambda: s.oms.order(order.client_order_id).status is OrderStatus.FILLED, "the fill")
        assert s.oms.order(order.client_order_id).filled_qty == Decimal(10)
        assert server.positions() == {"IBM": Decimal(10)}
        # a resting limit order, cancelled through the session
        resting = OrderIntent("alpaca-live-rest", "nb", ACCOUNT, IBM, Side.BUY, Decimal(5), OrderType.LIMIT,
                              TimeInForce.GTC, time.time_ns(), limit_price=(Decimal(str(bid)) - 5).quantize(
                                  Decimal("0.01")))
        [rest] = s.submit(resting)
        wait_for(lambda: s.oms.order(rest.client_order_id).status is OrderStatus.ACCEPTED, "the ack")
        s.cancel_orders()
        wait_for(lambda: s.oms.order(rest.client_order_id).status is OrderStatus.CANCELLED, "the cancel")
        assert server.book.get_by_client_id(rest.client_order_id).status == "canceled"

        s.halt("enough")
        [refused] = s.submit(signal("alpaca-live-2", instrument=IBM, quantity="10"))
        assert refused.status is OrderStatus.REJECTED and "halt" in refused.reason
        assert len(server.book.orders) == 2  # refused before it left
        s.resume_trading("back")
        s.flatten("risk off")
        wait_for(lambda: server.positions() == {} and not s.oms.working_orders(), "the flat position")
        assert s.positions()["quantity"].tolist() == [Decimal(0)]
        s.stop()
    assert store.con.execute("SELECT count(*) FROM fills").fetchone() == (2,)
    assert "armed" in {a for (a,) in store.con.execute("SELECT kind FROM alerts").fetchall()}


def test_a_burst_of_alpaca_rejections_opens_the_sessions_breaker_and_nothing_more_leaves(
        store, tmp_path, sessions, frames, monkeypatch):  # noqa: F811 - test_session's fixtures
    from test_session import IBM, signal
    from test_session_live import armed_alpaca_session

    with AlpacaSandbox(secret=SECRET) as server:
        s = armed_alpaca_session(store, tmp_path, sessions, frames, monkeypatch, server)
        failures = s.config.risk.breaker_failures
        server.fault(AlpacaFault.REJECT, times=failures + 3)
        for n in range(failures):
            [order] = s.submit(signal(f"alpaca-rej-{n}", instrument=IBM, quantity="1"))
            assert order.status is OrderStatus.REJECTED and "40310000" in order.reason
            assert s.oms.rejection_code(order.client_order_id) == RejectCode.INSUFFICIENT_FUNDS
        assert s.status()["breaker"] == "open"
        [refused] = s.submit(signal("alpaca-rej-after", instrument=IBM, quantity="1"))
        assert refused.status is OrderStatus.REJECTED
        assert server.requests.count(("POST", "/v2/orders")) == failures  # the last never left
        assert server.book.orders == {} and server.positions() == {}
        s.stop()
    payloads = [p for (p,) in store.con.execute("SELECT payload FROM order_events WHERE event_type = 'rejected' "
                                                "ORDER BY journal_position").fetchall()]
    # Alpaca's refusals keep their code in the store; the breaker's own refusal has none
    assert payloads == ['{"reject_code":"insufficient_funds"}'] * failures + ["{}"]


def test_an_order_alpaca_rejects_after_accepting_ends_rejected_with_its_code_in_the_store(
        store, tmp_path, sessions, frames, monkeypatch):  # noqa: F811 - test_session's fixtures
    from test_session import IBM, signal
    from test_session_live import armed_alpaca_session

    with AlpacaSandbox(secret=SECRET) as server:
        s = armed_alpaca_session(store, tmp_path, sessions, frames, monkeypatch, server)
        server.fault(AlpacaFault.REJECT_AFTER_ACCEPT, announce=True)
        [order] = s.submit(signal("alpaca-late-reject", instrument=IBM, quantity="1"))
        coid = order.client_order_id
        wait_for(lambda: s.oms.order(coid).status is OrderStatus.REJECTED, "the late rejection")
        assert s.oms.rejection_code(coid) is RejectCode.VENUE_OTHER
        assert s.oms.order(coid).reason == "alpaca:rejected"
        s.stop()
    events = store.con.execute("SELECT event_type, payload FROM order_events WHERE client_order_id = ? "
                               "ORDER BY journal_position, event_seq", [coid]).fetchall()
    assert [kind for kind, _ in events][-2:] == ["accepted", "rejected"]
    assert '"reject_code":"venue_other"' in events[-1][1]
    assert store.con.execute("SELECT status FROM orders WHERE client_order_id = ?", [coid]).fetchone() == ("rejected",)
