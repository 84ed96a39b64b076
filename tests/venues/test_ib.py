"""IbVenue against the local TWS server, at the port: every scripted fault, and the events each order makes.

Each test runs one asyncio scenario under a deadline (``run``); every wait inside is bounded
(``until``). The adapter's timeouts are small so a fault costs fractions of a second.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from tradebook.errors import ConfigError, NotSentError, OutcomeUnknownError, VenueRejectedError
from tradebook.execution.oms import RejectCode
from tradebook.model.instruments import BUNDLED_INSTRUMENTS, Side
from tradebook.model.orders import OrderEvent, OrderEventType, OrderIntent, OrderStatus, OrderType, TimeInForce
from tradebook.sandbox.tws import DEFAULT_CONTRACTS, In, TwsContract, TwsFault, TwsServer
from tradebook.venues.base import Capability
from tradebook.venues.ib import IbVenue
from test_session import IBM, frames, sessions, signal, store, template  # noqa: F401 (session fixtures)
from test_session_live import ibm_batch

E = OrderEventType
AAPL = "AAPL.XNAS"
ESH7 = replace(BUNDLED_INSTRUMENTS["ESH4.GLBX"], instrument_id="ESH7.GLBX", symbol="ESH7")
REGISTRY = {AAPL: BUNDLED_INSTRUMENTS[AAPL], "SPY.ARCX": BUNDLED_INSTRUMENTS["SPY.ARCX"], "ESH7.GLBX": ESH7,
            "EURUSD.DUKASCOPY": BUNDLED_INSTRUMENTS["EURUSD.DUKASCOPY"]}
EURUSD = TwsContract(12087792, "EUR", "CASH", "IDEALPRO", local_symbol="EUR.USD", trading_class="EUR.USD",
                     min_tick=Decimal("0.00005"), long_name="European Monetary Union Euro")


def run(scenario: Awaitable[Any], timeout: float = 20.0) -> Any:
    return asyncio.run(asyncio.wait_for(scenario, timeout))


async def until(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


def intent(n: int | str, *, side: Side = Side.BUY, qty: str = "10", order_type: OrderType = OrderType.MARKET,
           limit: str | None = None, stop: str | None = None, tif: TimeInForce = TimeInForce.DAY,
           instrument: str = AAPL) -> OrderIntent:
    return OrderIntent(f"intent-{n}", "strat", "DU1234567", instrument, side, Decimal(qty), order_type, tif, 0,
                       limit_price=None if limit is None else Decimal(limit),
                       stop_price=None if stop is None else Decimal(stop))


class Events(list):
    """What the adapter delivered, in order."""

    def of(self, coid: str) -> list[OrderEvent]:
        return [e for e in self if e.client_order_id == coid]

    def kinds(self, coid: str) -> list[E]:
        return [e.event_type for e in self.of(coid)]

    def fills(self, coid: str) -> list[Any]:
        return [e.fill for e in self.of(coid) if e.event_type is E.FILLED]


@pytest.fixture
def tws() -> Iterator[TwsServer]:
    with TwsServer(contracts=(*DEFAULT_CONTRACTS, EURUSD)) as server:
        server.set_price("AAPL", "189.99", "190.01")
        yield server


def venue(tws: TwsServer, **options: Any) -> IbVenue:
    settings: dict[str, Any] = {"port": tws.port, "instruments": REGISTRY, "ack_timeout_s": 0.5,
                                "connect_timeout_s": 2.0, "request_timeout_s": 3.0, "reconnect_min_s": 0.05,
                                "reconnect_max_s": 0.2, "pacing_backoff_s": 0.05, "commission_wait_s": 0.3}
    settings.update(options)
    return IbVenue(**settings)


async def connected(tws: TwsServer, **options: Any) -> tuple[IbVenue, Events]:
    events = Events()
    v = venue(tws, **options)
    await v.connect(events.append)
    return v, events


# -- the ordinary life of orders ---------------------------------------------------------------------------
def test_a_market_order_is_accepted_and_filled_with_its_commission(tws: TwsServer) -> None:
    async def scenario() -> None:
        v, events = await connected(tws)
        order = intent(1)
        await v.submit(order)
        await until(lambda: events.fills(order.client_order_id), "the fill")
        assert events.kinds(order.client_order_id) == [E.ACCEPTED, E.FILLED]
        fill = events.fills(order.client_order_id)[0]
        assert (fill.quantity, fill.price, fill.fee, fill.side, fill.instrument_id) == (
            Decimal(10), Decimal("190.01"), Decimal(1), Side.BUY, AAPL)
        assert events.of(order.client_order_id)[0].venue_order_id == str(tws.orders()[0].perm_id)
        assert await v.positions() == {AAPL: Decimal(10)}
        state = await v.order_status(order.client_order_id)
        assert (state.status, state.filled_qty, state.avg_price, state.instrument_id) == (
            OrderStatus.FILLED, Decimal(10), Decimal("190.01"), AAPL)
        assert [f.fill_id for f in await v.fills()] == [fill.fill_id]
        account = await v.account()
        assert account.account_id == "DU1234567" and account.cash == tws.cash()
        assert await v.order_status("tb-never-sent") is None
        await v.close()

    run(scenario())


def test_queries_asked_at_once_each_get_their_answer(tws: TwsServer) -> None:
    async def scenario() -> None:
        v, _ = await connected(tws)
        orders = [intent(f"q{n}", order_type=OrderType.LIMIT, limit="180") for n in range(3)]
        for order in orders:
            await v.submit(order)
        states = await asyncio.gather(*(v.order_status(o.client_order_id) for o in orders), v.open_orders(),
                                      v.positions(), v.fills(), v.account())
        assert [s.client_order_id for s in states[:3]] == [o.client_order_id for o in orders]
        assert len(states[3]) == 3 and states[4] == {} and states[5] == []
        await v.close()

    run(scenario())


def test_partial_fills_arrive_one_event_each(tws: TwsServer) -> None:
    tws.set_fill_parts(3)

    async def scenario() -> None:
        v, events = await connected(tws)
        order = intent(2, qty="9")
        await v.submit(order)
        await until(lambda: len(events.fills(order.client_order_id)) == 3, "three partial fills")
        assert [f.quantity for f in events.fills(order.client_order_id)] == [Decimal(3)] * 3
        assert len({f.fill_id for f in events.fills(order.client_order_id)}) == 3
        await v.close()

    run(scenario())


def test_replace_cancel_expiry_and_stops_arrive_as_their_events(tws: TwsServer) -> None:
    async def scenario() -> None:
        v, events = await connected(tws)
        resting, gtc, ioc, stop = (intent(3, order_type=OrderType.LIMIT, limit="180"),
                                   intent(4, order_type=OrderType.LIMIT, limit="181", tif=TimeInForce.GTC),
                                   intent(5, order_type=OrderType.LIMIT, limit="150", tif=TimeInForce.IOC),
                                   intent(6, side=Side.SELL, order_type=OrderType.STOP, stop="170"))
        for order in (resting, gtc, ioc, stop):
            await v.submit(order)
        await v.replace(resting.client_order_id, limit_price=Decimal("182"), quantity=Decimal(12))
        replaced = events.of(resting.client_order_id)[-1]
        assert (replaced.event_type, replaced.limit_price, replaced.quantity) == (E.REPLACED, Decimal(182),
                                                                                 Decimal(12))
        assert [o.lmt_price for o in tws.orders() if o.order_ref == resting.client_order_id] == [Decimal(182)]
        # a modification IB refuses (off the tick) leaves the order as it was
        await v.replace(resting.client_order_id, limit_price=Decimal("182.001"))
        assert events.kinds(resting.client_order_id)[-1] is E.REPLACE_REJECTED
        assert "110" in events.of(resting.client_order_id)[-1].reason
        await v.cancel(gtc.client_order_id)
        await until(lambda: E.CANCELLED in events.kinds(gtc.client_order_id), "the cancel")
        tws.end_of_day()  # the resting DAY limit expires; IB says "Cancelled"
        await until(lambda: E.EXPIRED in events.kinds(resting.client_order_id), "the expiry")
        assert events.kinds(resting.client_order_id) == [E.ACCEPTED, E.REPLACED, E.REPLACE_REJECTED, E.EXPIRED]
        assert events.kinds(gtc.client_order_id) == [E.ACCEPTED, E.CANCELLED]
        assert events.kinds(ioc.client_order_id) == [E.ACCEPTED, E.CANCELLED]  # nothing to take at 150
        assert events.kinds(stop.client_order_id) == [E.ACCEPTED, E.EXPIRED]  # held (PreSubmitted), then the close
        assert (await v.order_status(resting.client_order_id)).status is OrderStatus.EXPIRED
        with pytest.raises(VenueRejectedError) as done:
            await v.cancel(resting.client_order_id)
        assert done.value.code == RejectCode.TOO_LATE_TO_CANCEL
        with pytest.raises(VenueRejectedError) as unknown:
            await v.cancel("tb-unknown")
        assert unknown.value.code == RejectCode.UNKNOWN_ORDER
        await v.close()

    run(scenario())


def test_a_refused_modify_leaves_the_order_working_although_ib_async_calls_it_cancelled(tws: TwsServer) -> None:
    async def scenario() -> None:
        v, events = await connected(tws)
        tws.set_price("AAPL", "189.99", "190.01", ask_size="4")  # four to take: the rest of the order rests
        order = intent(21, order_type=OrderType.LIMIT, limit="190.01")
        await v.submit(order)
        await until(lambda: events.fills(order.client_order_id), "the partial fill")
        await v.replace(order.client_order_id, quantity=Decimal(3))  # below the filled 4: IB error 201
        assert events.kinds(order.client_order_id)[-1] is E.REPLACE_REJECTED
        assert "201" in events.of(order.client_order_id)[-1].reason
        assert [o.status for o in tws.orders()] == ["Submitted"]
        await v.cancel(order.client_order_id)  # still working, so cancellable
        await until(lambda: E.CANCELLED in events.kinds(order.client_order_id), "the cancel")
        assert events.kinds(order.client_order_id) == [E.ACCEPTED, E.FILLED, E.REPLACE_REJECTED, E.CANCELLED]
        state = await v.order_status(order.client_order_id)
        assert (state.status, state.filled_qty) == (OrderStatus.CANCELLED, Decimal(4))
        await v.close()

    run(scenario())


# -- Done-when 2: the scripted faults ----------------------------------------------------------------------
def test_an_accepted_order_whose_acknowledgement_never_comes_is_outcome_unknown_and_found_by_id(
        tws: TwsServer) -> None:
    tws.fault(TwsFault.HANG_AFTER_ACCEPT)

    async def scenario() -> None:
        v, events = await connected(tws)
        order = intent(7, order_type=OrderType.LIMIT, limit="180")
        with pytest.raises(OutcomeUnknownError, match="did not answer within 0.5 s"):
            await v.submit(order)
        assert tws.received_count(In.PLACE_ORDER) == 1  # never resent
        state = await v.order_status(order.client_order_id)
        assert (state.status, state.quantity, state.limit_price) == (OrderStatus.ACCEPTED, Decimal(10),
                                                                     Decimal(180))
        with pytest.raises(VenueRejectedError) as again:  # the same id again is refused, not traded twice
            await v.submit(order)
        assert again.value.code == RejectCode.DUPLICATE_CLIENT_ID
        assert tws.received_count(In.PLACE_ORDER) == 1
        await v.close()

    run(scenario())


def test_an_order_taken_then_the_link_dropped_is_outcome_unknown_and_found_after_the_reconnect(
        tws: TwsServer) -> None:
    tws.fault(TwsFault.DROP_AFTER_ACCEPT)

    async def scenario() -> None:
        v, events = await connected(tws)
        order = intent(8)
        with pytest.raises(OutcomeUnknownError, match="dropped"):
            await v.submit(order)
        assert not await v.health()
        assert await v.wait_connected(3.0) and v.connects == 2
        assert await v.health()
        state = await v.order_status(order.client_order_id)
        assert (state.status, state.filled_qty) == (OrderStatus.FILLED, Decimal(10))
        # the recovery after the reconnect delivered its fill (once)
        assert [f.quantity for f in events.fills(order.client_order_id)] == [Decimal(10)]
        assert tws.received_count(In.PLACE_ORDER) == 1
        await v.close()

    run(scenario())


def test_a_fill_during_a_disconnect_is_recovered_once_after_the_reconnect(tws: TwsServer) -> None:
    async def scenario() -> None:
        v, events = await connected(tws)
        order = intent(9, order_type=OrderType.LIMIT, limit="185")
        await v.submit(order)
        tws.fault(TwsFault.DROP_STREAM_BEFORE_FILL)
        tws.set_price("AAPL", "184.98", "185.00")  # crosses: booked, then the link drops before the messages
        await until(lambda: events.fills(order.client_order_id), "the recovered fill")
        assert v.recoveries == 1 and v.recovered_fills == 1
        fill = events.fills(order.client_order_id)[0]
        assert (fill.quantity, fill.price, fill.fee) == (Decimal(10), Decimal("185.00"), Decimal(1))
        tws.drop_connections()  # another gap: nothing is delivered twice
        await until(lambda: v.recoveries == 2, "the second recovery")
        await asyncio.sleep(0.1)
        assert len(events.fills(order.client_order_id)) == 1
        assert events.kinds(order.client_order_id) == [E.ACCEPTED, E.FILLED]
        await v.close()

    run(scenario())


def test_a_restart_of_tws_is_survived_with_backoff(tws: TwsServer) -> None:
    async def scenario() -> None:
        v, events = await connected(tws)
        order = intent(10, order_type=OrderType.LIMIT, limit="185")
        await v.submit(order)
        tws.restart(down_for=0.4)  # refused connections meanwhile: the adapter keeps trying
        assert await v.wait_connected(5.0)
        tws.set_price("AAPL", "184.98", "185.00")  # the working order fills on the new session's link
        await until(lambda: events.fills(order.client_order_id), "the fill after the restart")
        assert v.connects >= 2
        await v.close()

    run(scenario())


def test_a_duplicate_fill_message_is_delivered_once(tws: TwsServer) -> None:
    tws.fault(TwsFault.DUPLICATE_FILL)

    async def scenario() -> None:
        v, events = await connected(tws)
        order = intent(11)
        await v.submit(order)
        await until(lambda: events.fills(order.client_order_id), "the fill")
        await asyncio.sleep(0.2)
        assert len(events.fills(order.client_order_id)) == 1
        assert tws.faults.spent[TwsFault.DUPLICATE_FILL] == 1
        await v.close()

    run(scenario())


def test_a_fill_after_a_cancel_is_delivered_as_a_fill(tws: TwsServer) -> None:
    tws.fault(TwsFault.FILL_AFTER_CANCEL)

    async def scenario() -> None:
        v, events = await connected(tws)
        order = intent(12, order_type=OrderType.LIMIT, limit="180")
        await v.submit(order)
        await v.cancel(order.client_order_id)
        await until(lambda: events.fills(order.client_order_id), "the late fill")
        assert events.kinds(order.client_order_id) == [E.ACCEPTED, E.CANCELLED, E.FILLED]
        assert events.fills(order.client_order_id)[0].quantity == Decimal(10)
        await v.close()

    run(scenario())


def test_a_fill_that_wins_the_race_against_a_cancel(tws: TwsServer) -> None:
    tws.fault(TwsFault.FILL_ON_CANCEL)

    async def scenario() -> None:
        v, events = await connected(tws)
        order = intent(13, order_type=OrderType.LIMIT, limit="180")
        await v.submit(order)
        await v.cancel(order.client_order_id)
        await until(lambda: E.CANCEL_REJECTED in events.kinds(order.client_order_id), "the refused cancel")
        assert events.kinds(order.client_order_id) == [E.ACCEPTED, E.FILLED, E.CANCEL_REJECTED]
        assert "10148" in events.of(order.client_order_id)[-1].reason
        await v.close()

    run(scenario())


def test_a_burst_of_rejects_raises_with_codes(tws: TwsServer) -> None:
    tws.fault(TwsFault.REJECT, times=3)

    async def scenario() -> None:
        v, events = await connected(tws)
        refused = []
        for n in range(3):
            with pytest.raises(VenueRejectedError) as rejected:
                await v.submit(intent(f"r{n}"))
            refused.append((rejected.value.code, rejected.value.venue_code))
        assert refused == [(RejectCode.VENUE_OTHER, "201")] * 3
        with pytest.raises(VenueRejectedError) as tick:
            await v.submit(intent("tick", order_type=OrderType.LIMIT, limit="180.001"))
        assert (tick.value.code, tick.value.venue_code) == (RejectCode.INVALID_PRICE, "110")
        await v.submit(intent("ok"))
        assert not any(e.event_type is E.REJECTED for e in events)  # raised, not also delivered
        await v.close()

    run(scenario())


def test_an_order_refused_after_tws_took_it_arrives_as_rejected_with_its_code(tws: TwsServer) -> None:
    tws.fault(TwsFault.REJECT_AFTER_ACCEPT, code=201, reason="Order rejected - reason: exchange refused it")

    async def scenario() -> None:
        v, events = await connected(tws)
        order = intent("late")
        await v.submit(order)  # taken: submit returns
        coid = order.client_order_id
        await until(lambda: E.REJECTED in events.kinds(coid), "the late rejection")
        assert events.kinds(coid) == [E.ACCEPTED, E.REJECTED]
        rejected = events.of(coid)[-1]
        assert rejected.code is RejectCode.VENUE_OTHER and "error 201" in rejected.reason
        assert "exchange refused it" in rejected.reason
        assert (await v.order_status(coid)).status is OrderStatus.REJECTED  # IB shows it Cancelled, error 201
        assert tws.executions() == []  # nothing traded
        await v.close()

    run(scenario())


def test_pacing_refusals_are_waited_out_and_no_order_is_lost(tws: TwsServer) -> None:
    async def scenario() -> None:
        v, events = await connected(tws)
        tws.fault(TwsFault.RATE_LIMIT, times=2)  # armed after the handshake: the next two messages
        order = intent(14)
        await v.submit(order)
        await until(lambda: events.fills(order.client_order_id), "the fill")
        assert tws.received_count(In.PLACE_ORDER) == 3
        assert [o.order_ref for o in tws.orders()] == [order.client_order_id]
        # a cancel paced out is sent again
        resting = intent(15, order_type=OrderType.LIMIT, limit="180")
        await v.submit(resting)
        tws.fault(TwsFault.RATE_LIMIT)
        await v.cancel(resting.client_order_id)
        await until(lambda: E.CANCELLED in events.kinds(resting.client_order_id), "the cancel")
        assert tws.received_count(In.CANCEL_ORDER) == 2
        # paced out every time: certainly not at IB, safe to send again
        tws.fault(TwsFault.RATE_LIMIT, times=10)
        with pytest.raises(NotSentError, match="pacing"):
            await v.submit(intent(16))
        await v.close()

    run(scenario())


def test_a_sustained_rate_limit_loses_no_order(tws: TwsServer) -> None:
    async def scenario() -> None:
        v, events = await connected(tws, pacing_retries=8, pacing_backoff_s=0.1)
        tws.limit_rate(5)
        orders = [intent(f"burst{n}", qty="1") for n in range(8)]
        for order in orders:
            await v.submit(order)
        await until(lambda: all(events.fills(o.client_order_id) for o in orders), "every fill", timeout=10)
        assert sorted(o.order_ref for o in tws.orders()) == sorted(o.client_order_id for o in orders)
        await v.close()

    run(scenario())


# -- the connection, configuration and metadata --------------------------------------------------------------
def test_not_connected_is_not_sent(tws: TwsServer) -> None:
    async def scenario() -> None:
        v = venue(tws)
        with pytest.raises(NotSentError, match="not connected"):
            await v.submit(intent(17))
        tws.stop()
        with pytest.raises(NotSentError, match="could not connect to TWS"):
            await v.connect(lambda e: None)
        assert not await v.health()

    run(scenario())


def test_another_account_or_a_live_account_taken_for_paper_is_refused_at_connect() -> None:
    async def scenario(tws: TwsServer, **options: Any) -> str:
        v = venue(tws, **options)
        with pytest.raises(ConfigError) as refused:
            await v.connect(lambda e: None)
        assert not await v.health()
        # the adapter closed its sockets; TWS notices when its reader sees the end
        await until(lambda: tws.connected_client_ids() == [], "the refused connections closed at TWS")
        return str(refused.value)

    with TwsServer() as tws:
        assert "manages ['DU1234567'], not account 'DU999'" in run(scenario(tws, account_id="DU999"))
    with TwsServer(account="U7777777") as tws:
        assert "U7777777 is a live account but this venue is configured as paper" in run(scenario(tws))

        async def as_live() -> IbVenue:
            live = venue(tws, paper=False)
            await live.connect(lambda e: None)
            await live.close()
            return live

        live = run(as_live())
        assert live.is_live and live.account_id == "U7777777"


def test_a_second_process_knows_the_orders_ib_holds(tws: TwsServer) -> None:
    async def scenario() -> None:
        first, _ = await connected(tws)
        order = intent(18, order_type=OrderType.LIMIT, limit="180")
        await first.submit(order)
        await first.close()
        second, events = await connected(tws)
        with pytest.raises(VenueRejectedError) as again:
            await second.submit(order)
        assert again.value.code == RejectCode.DUPLICATE_CLIENT_ID
        tws.set_price("AAPL", "179.98", "180.00")  # its later events reach the new process
        await until(lambda: events.fills(order.client_order_id), "the fill")
        assert [o.client_order_id for o in await second.open_orders()] == []
        await second.close()

    run(scenario())


def test_from_env_and_repr_hold_no_secret_and_name_what_is_wrong(caplog: pytest.LogCaptureFixture) -> None:
    v = IbVenue.from_env(environ={"TRADEBOOK_IB_HOST": "10.0.0.5", "TRADEBOOK_IB_PORT": "4002",
                                  "TRADEBOOK_IB_CLIENT_ID": "20", "TRADEBOOK_IB_ACCOUNT": "DU999",
                                  "TRADEBOOK_IB_PAPER": "false"})
    assert (v.host, v.port, v.orders_client_id, v.data_client_id, v.account_id, v.is_live) == (
        "10.0.0.5", 4002, 20, 21, "DU999", True)
    assert repr(v) == "<IbVenue DU999 LIVE 10.0.0.5:4002 client 20 (not connected)>"
    assert Capability.SIMULATED not in v.capabilities and Capability.NATIVE_REPLACE in v.capabilities
    with pytest.raises(ConfigError, match="TRADEBOOK_IB_PORT='x': expected an integer"):
        IbVenue.from_env(environ={"TRADEBOOK_IB_PORT": "x"})
    with pytest.raises(ConfigError, match="ack_timeout_s must be positive"):
        IbVenue(ack_timeout_s=0)
    with pytest.raises(ConfigError, match="0 is TWS's manual-order client"):
        IbVenue(base_client_id=0)


def test_the_factory_builds_it_from_the_example_configurations_options() -> None:
    from tradebook.config import TradebookConfig
    from tradebook.venues.factory import build_venues

    config = TradebookConfig(routing={"future": "ibkr", "equity": "ibkr"}, venues={"ibkr": {
        "enabled": True, "account_id": "DU555", "options": {"host": "127.0.0.1", "port": "7497", "client_id": "1"}}})
    routing = build_venues(config, env={"TRADEBOOK_IB_PAPER": "true"})
    built = routing.route_for("future").venue
    assert isinstance(built, IbVenue) and routing.route_for("equity").venue is built
    assert (built.port, built.orders_client_id, built.data_client_id, built.account_id, built.is_live) == (
        7497, 1, 2, "DU555", False)


def test_instruments_come_from_contract_details_on_the_data_client(tws: TwsServer) -> None:
    async def scenario() -> None:
        v, _ = await connected(tws)
        found = {i.instrument_id: i for i in await v.instruments()}
        assert sorted(found) == ["AAPL.XNAS", "ESH7.GLBX", "EURUSD.DUKASCOPY", "SPY.ARCX"]
        assert found["EURUSD.DUKASCOPY"].tick_size == Decimal("0.00005")
        es = found["ESH7.GLBX"]
        assert (es.tick_size, es.lot_size, es.multiplier) == (Decimal("0.25"), Decimal(1), Decimal(50))
        assert "IB contract details" in es.description
        assert tws.connected_client_ids() == [v.orders_client_id, v.data_client_id]
        await v.close()

    run(scenario())


def test_a_future_order_goes_to_cme_with_its_month(tws: TwsServer) -> None:
    tws.set_price("ESH7", "5000.00", "5000.25")

    async def scenario() -> None:
        v, events = await connected(tws)
        order = intent(19, qty="2", instrument="ESH7.GLBX")
        await v.submit(order)
        await until(lambda: events.fills(order.client_order_id), "the fill")
        assert events.fills(order.client_order_id)[0].price == Decimal("5000.25")
        assert await v.positions() == {"ESH7.GLBX": Decimal(2)}
        await v.close()

    run(scenario())


def test_an_fx_order_trades_the_pair_on_idealpro(tws: TwsServer) -> None:
    tws.set_price("EUR.USD", "1.08500", "1.08505")

    async def scenario() -> None:
        v, events = await connected(tws)
        order = intent(20, qty="20000", instrument="EURUSD.DUKASCOPY")
        await v.submit(order)
        await until(lambda: events.fills(order.client_order_id), "the fill")
        assert events.fills(order.client_order_id)[0].price == Decimal("1.08505")
        assert await v.positions() == {"EURUSD.DUKASCOPY": Decimal(20000)}
        await v.close()

    run(scenario())


# -- the order manager on this adapter ---------------------------------------------------------------------
def test_the_order_manager_on_ib_settles_every_fault_with_nothing_lost_or_doubled(tws: TwsServer, tmp_path) -> None:
    from tradebook.store.journal import Journal
    from tradebook.execution.oms import OrderManager
    from tradebook.portfolio import Portfolio
    from tradebook.store import Store

    store = Store(tmp_path / "tb.duckdb")
    v = venue(tws)
    oms = OrderManager(store, Journal(tmp_path / "orders.journal"), v, Portfolio(Decimal(1_000_000)), mode="paper")

    async def scenario() -> None:
        await v.connect(oms.on_event)
        try:
            # an accepted order never answered: unresolved, its instrument blocked, never resent; reconcile finds it
            tws.fault(TwsFault.HANG_AFTER_ACCEPT)
            hung = await oms.submit(intent("o1"))
            assert oms.order(hung.client_order_id).status is OrderStatus.UNRESOLVED
            assert oms.blocked_instruments() == {AAPL}
            await oms.reconcile()
            assert oms.order(hung.client_order_id).status is OrderStatus.FILLED
            assert oms.blocked_instruments() == set() and tws.received_count(In.PLACE_ORDER) == 1
            # a refusal is a rejection with its code
            tws.fault(TwsFault.REJECT)
            refused = await oms.submit(intent("o2"))
            assert oms.order(refused.client_order_id).status is OrderStatus.REJECTED
            assert "error 201" in oms.order(refused.client_order_id).reason
            # a duplicate fill message, a fill after a cancel, a fill lost in a gap of the link
            tws.fault(TwsFault.DUPLICATE_FILL)
            twice = await oms.submit(intent("o3"))
            raced = await oms.submit(intent("o4", order_type=OrderType.LIMIT, limit="180"))
            tws.fault(TwsFault.FILL_AFTER_CANCEL)
            await oms.cancel(raced.client_order_id)
            gap = await oms.submit(intent("o5", order_type=OrderType.LIMIT, limit="185"))
            tws.fault(TwsFault.DROP_STREAM_BEFORE_FILL)
            await asyncio.to_thread(tws.set_price, "AAPL", "184.98", "185.00")
            done = (twice.client_order_id, gap.client_order_id)
            await until(lambda: all(oms.order(c).status is OrderStatus.FILLED for c in done), "every fill")
            await until(lambda: oms.order(raced.client_order_id).filled_qty == Decimal(10), "the late fill")
            assert await v.wait_connected(3.0)
            alerts = await oms.reconcile()
            assert [a for a in alerts if a.kind in ("position_mismatch", "fill_mismatch")] == []
            held = {k: q for (_, k), q in oms.portfolio.net_positions(v.account_id).items()}
            assert held == {AAPL: Decimal(40)} == await v.positions()
            assert tws.positions() == {"AAPL": Decimal(40)}
            assert all(len(oms.order(c).fill_ids) == 1 for c in (hung.client_order_id, *done))
        finally:
            await v.close()

    run(scenario())
    store.close()


# -- through the Session API ------------------------------------------------------------------------------
IB_ACCOUNT = "DU7654321"


def test_an_armed_ib_account_trades_halts_and_flattens_through_the_session(store, tmp_path, sessions,  # noqa: F811
                                                                           frames, monkeypatch):  # noqa: F811
    from tradebook.config import TradebookConfig
    from tradebook.session import Session

    ibm = TwsContract(8314, "IBM", "STK", "SMART", primary_exchange="NYSE", trading_class="IBM",
                      long_name="INTERNATIONAL BUSINESS MACHINES")
    with TwsServer(account=IB_ACCOUNT, contracts=(*DEFAULT_CONTRACTS, ibm)) as tws:
        batch = ibm_batch(frames)
        bid, ask = batch.last_quote(IBM)[1:3]
        tws.set_price("IBM", f"{bid:.2f}", f"{ask:.2f}")
        monkeypatch.setenv("TRADEBOOK_IB_PORT", str(tws.port))
        monkeypatch.setenv("TRADEBOOK_IB_CLIENT_ID", "30")
        config = TradebookConfig(routing={"equity": "ib"}, venues={"ib": {
            "enabled": True, "account_id": IB_ACCOUNT, "options": {"ack_timeout_s": "2.0", "reconnect_min_s": "0.1"}}})
        s = Session(store, calibrations=[IBM], state_dir=tmp_path / "s", config=config)
        sessions.append(s)
        s.arm_live("ib", confirm=IB_ACCOUNT)
        s.start()
        assert s.status()["routes"] == f"ibkr (account {IB_ACCOUNT})"
        # orders on client 30; the session's check of the instrument rules reads contract details on 31 (data)
        assert 30 in tws.connected_client_ids() and set(tws.connected_client_ids()) <= {30, 31}
        s.step(batch)
        [order] = s.submit(signal("ib-live-1", instrument=IBM, quantity="10"))
        wait_for(lambda: s.oms.order(order.client_order_id).status is OrderStatus.FILLED, "the fill")
        assert s.oms.order(order.client_order_id).filled_qty == Decimal(10)
        assert tws.positions() == {"IBM": Decimal(10)}
        assert [o.order_ref for o in tws.orders()] == [order.client_order_id]

        s.halt("enough")
        [refused] = s.submit(signal("ib-live-2", instrument=IBM, quantity="10"))
        assert refused.status is OrderStatus.REJECTED and "halt" in refused.reason
        assert len(tws.orders()) == 1  # refused before it left
        s.resume_trading("back")
        tws.drop_connections()  # the link drops under the running session: the adapter reconnects on its loop
        wait_for(lambda: s.venue.connects == 2 and s.venue.recoveries == 1, "the reconnect")
        s.flatten("risk off")
        wait_for(lambda: tws.positions() == {} and not s.oms.working_orders(), "the flat position")
        assert s.positions()["quantity"].tolist() == [Decimal(0)]
        shown = repr(s) + repr(s.venue) + repr(s.status())
        s.stop()
    assert (tmp_path / "s" / f"oms-ibkr-{IB_ACCOUNT}.journal").exists()
    assert store.con.execute("SELECT count(*) FROM fills").fetchone() == (2,)
    kinds = {a for (a,) in store.con.execute("SELECT kind FROM alerts").fetchall()}
    assert "armed" in kinds
    # IB's contract details for IBM agree with the instrument's rules (the session compared them at connect)
    assert not kinds & {"instruments_unread", "instrument_not_listed", "instrument_rules_differ"}
    assert IB_ACCOUNT in shown


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


@pytest.fixture(autouse=True)
def _quiet_ib_async(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL, logger="ib_async")
