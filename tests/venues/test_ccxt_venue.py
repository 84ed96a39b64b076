"""CcxtVenue (the real ccxt and ccxt.pro clients) against the local Binance server, through every scripted fault.

Each test runs the adapter on its own event loop and collects the events it delivers;
every wait is bounded (``until``), and the server answers on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from decimal import Decimal

import pytest

from tradebook.errors import ConfigError, NotSentError, OutcomeUnknownError, VenueRejectedError
from tradebook.model.instruments import Side
from tradebook.model.orders import OrderEventType, OrderIntent, OrderStatus, OrderType, TimeInForce
from tradebook.sandbox.binance import BinanceFault, BinanceSandbox
from tradebook.venues.base import Capability
from tradebook.venues.ccxt_venue import CcxtVenue
from test_session import batches, frames, sessions, signal, store, template  # noqa: F401 (session fixtures)

pytest.importorskip("ccxt")

E = OrderEventType
BTC = "BTCUSDT.BINANCE"
ACCOUNT = "binance-test"


@pytest.fixture
def server():
    with BinanceSandbox(balances={"USDT": "100000", "BTC": "1"}) as venue:
        venue.set_price("BTCUSDT", "60000.00", "60000.01")
        yield venue


def make_venue(server: BinanceSandbox, **kwargs) -> CcxtVenue:
    settings = dict(symbols=["BTC/USDT"], account_id=ACCOUNT, api_urls=server.ccxt_urls, poll_interval_s=0.05,
                    stream_poll_interval_s=1.0, request_timeout_s=2.0, reconnect_backoff_s=(0.02, 0.2),
                    order_visibility_grace_s=0.5)
    settings.update(kwargs)
    return CcxtVenue("binance", api_key=server.key, secret=server.secret, **settings)


def intent(n: str, side: Side, qty: str, order_type: OrderType = OrderType.MARKET, *, limit: str | None = None,
           stop: str | None = None, tif: TimeInForce = TimeInForce.GTC) -> OrderIntent:
    return OrderIntent(f"i-{n}", "s1", ACCOUNT, BTC, side, Decimal(qty), order_type, tif, time.time_ns(),
                       limit_price=None if limit is None else Decimal(limit),
                       stop_price=None if stop is None else Decimal(stop))


async def until(predicate, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.01)


def run(scenario, server, **kwargs):
    """Connect a venue, run ``scenario(venue, events)``, close; returns (result, events)."""
    events = []

    async def main():
        venue = make_venue(server, **kwargs)
        await venue.connect(events.append)
        try:
            return await scenario(venue, events)
        finally:
            await venue.close()

    result = asyncio.run(asyncio.wait_for(main(), 30))
    return result, events


def kinds(events, coid):
    return [e.event_type for e in events if e.client_order_id == coid]


def fills(events, coid=None):
    return [e.fill for e in events if e.event_type is E.FILLED and (coid is None or e.client_order_id == coid)]


async def stream_up(venue, server):
    await until(lambda: server.subscribes >= 1, "the user data stream subscribed")


# -- the ordinary path ------------------------------------------------------------------------------------
def test_instruments_come_from_the_exchange_market_metadata(server):
    async def scenario(venue, events):
        return await venue.instruments()

    [btc], _ = run(scenario, server)
    assert btc.instrument_id == BTC and str(btc.asset_class) == "crypto_spot"
    assert (btc.tick_size, btc.lot_size, btc.min_quantity, btc.min_notional) == (
        Decimal("0.01"), Decimal("0.00001"), Decimal("0.00001"), Decimal("5"))
    assert "load_markets" in btc.description and "precision.price" in btc.description


def test_a_market_order_is_accepted_and_filled_once_and_shows_in_positions_and_account(server):
    order = intent("mkt", Side.BUY, "0.01")

    async def scenario(venue, events):
        await stream_up(venue, server)
        await venue.submit(order)
        await until(lambda: fills(events), "the fill")
        await asyncio.sleep(0.2)  # the stream's copy of the same fill arrives meanwhile
        return await venue.positions(), await venue.account(), await venue.order_status(order.client_order_id)

    (positions, account, state), events = run(scenario, server)
    assert kinds(events, order.client_order_id) == [E.ACCEPTED, E.FILLED]
    [fill] = fills(events)
    assert (fill.quantity, fill.price, fill.fee, fill.fill_id) == (Decimal("0.01"), Decimal("60000.01"),
                                                                  Decimal("0.6000001"), "1")
    assert positions == {BTC: Decimal("1.01")}
    assert account.account_id == ACCOUNT and account.currency == "USDT"
    assert account.equity == account.cash + Decimal("1.01") * Decimal("60000.005")
    assert state.status is OrderStatus.FILLED and state.filled_qty == Decimal("0.01")


def test_partial_fills_arrive_one_by_one_from_the_stream(server):
    server.book.max_fill_qty = Decimal("0.04")
    order = intent("lim", Side.BUY, "0.1", OrderType.LIMIT, limit="59000")

    async def scenario(venue, events):
        await stream_up(venue, server)
        await venue.submit(order)
        for n in (1, 2, 3):
            server.set_price("BTCUSDT", "58900.00", "58950.00")
            await until(lambda: len(fills(events)) == n, f"fill {n}")
        return venue

    venue, events = run(scenario, server)
    assert kinds(events, order.client_order_id) == [E.ACCEPTED, E.FILLED, E.FILLED, E.FILLED]
    assert [f.quantity for f in fills(events)] == [Decimal("0.04"), Decimal("0.04"), Decimal("0.02")]
    assert {f.liquidity for f in fills(events)} == {"maker"}
    assert Capability.STREAMING_FILLS in venue.capabilities


def test_cancel_and_expiry_arrive_once_each(server):
    resting = intent("cxl", Side.BUY, "0.01", OrderType.LIMIT, limit="59000")
    ioc = intent("ioc", Side.BUY, "0.01", OrderType.LIMIT, limit="59000", tif=TimeInForce.IOC)

    async def scenario(venue, events):
        await stream_up(venue, server)
        await venue.submit(resting)
        await venue.cancel(resting.client_order_id)
        await venue.submit(ioc)
        await asyncio.sleep(0.3)  # the stream repeats both: told once

    _, events = run(scenario, server)
    assert kinds(events, resting.client_order_id) == [E.ACCEPTED, E.CANCELLED]
    assert kinds(events, ioc.client_order_id) == [E.ACCEPTED, E.EXPIRED]


def test_replace_is_cancel_and_new_under_the_same_client_id_keeping_the_fills(server):
    server.book.max_fill_qty = Decimal("0.04")
    order = intent("rep", Side.BUY, "0.1", OrderType.LIMIT, limit="59000")
    coid = order.client_order_id

    async def scenario(venue, events):
        await stream_up(venue, server)
        await venue.submit(order)
        server.set_price("BTCUSDT", "59050.00", "59060.00")  # above the limit: nothing
        server.set_price("BTCUSDT", "58990.00", "58995.00")  # crosses: 0.04
        await until(lambda: len(fills(events)) == 1, "the first part")
        await venue.replace(coid, limit_price=Decimal("59100"))  # crosses on arrival: 0.04 more
        server.set_price("BTCUSDT", "58990.00", "58995.00")  # the last 0.02
        await until(lambda: sum(f.quantity for f in fills(events)) == Decimal("0.1"), "every part")
        await asyncio.sleep(0.2)
        return await venue.order_status(coid)

    state, events = run(scenario, server)
    assert kinds(events, coid) == [E.ACCEPTED, E.FILLED, E.REPLACED, E.FILLED, E.FILLED]
    replaced = next(e for e in events if e.event_type is E.REPLACED)
    assert (replaced.quantity, replaced.limit_price) == (Decimal("0.1"), Decimal("59100"))
    assert [f.price for f in fills(events)] == [Decimal("59000"), Decimal("59060.00"), Decimal("59100")] or \
        sum(f.quantity for f in fills(events)) == Decimal("0.1")
    assert state.status is OrderStatus.FILLED and state.filled_qty == Decimal("0.1")
    assert server.positions() == {"BTCUSDT": Decimal("1.1")}


def test_open_orders_and_fills_are_named_by_client_order_id(server):
    resting = intent("open", Side.SELL, "0.02", OrderType.LIMIT, limit="61000")
    done = intent("done", Side.SELL, "0.01")

    async def scenario(venue, events):
        await venue.submit(resting)
        await venue.submit(done)
        return await venue.open_orders(), await venue.fills(0)

    (open_orders, venue_fills), _ = run(scenario, server)
    assert [(o.client_order_id, o.status, o.limit_price) for o in open_orders] == [
        (resting.client_order_id, OrderStatus.ACCEPTED, Decimal("61000"))]
    assert [(f.client_order_id, f.quantity, f.side) for f in venue_fills] == [(done.client_order_id,
                                                                              Decimal("0.01"), Side.SELL)]


# -- faults (issue 13, Done-when 2) -----------------------------------------------------------------------
def test_an_accepted_order_whose_reply_times_out_is_unknown_never_resent_and_found_by_client_id(server):
    server.fault(BinanceFault.HANG_AFTER_ACCEPT)
    order = intent("hang", Side.BUY, "0.01", OrderType.LIMIT, limit="59000")

    async def scenario(venue, events):
        with pytest.raises(OutcomeUnknownError, match="may have reached"):
            await venue.submit(order)
        found = await venue.order_status(order.client_order_id)
        await until(lambda: E.ACCEPTED in kinds(events, order.client_order_id), "the poller finds it")
        return found

    found, events = run(scenario, server, request_timeout_s=0.3)
    assert found.status is OrderStatus.ACCEPTED and found.client_order_id == order.client_order_id
    assert list(server.requests).count(("POST", "/api/v3/order")) == 1  # never resent
    assert kinds(events, order.client_order_id) == [E.ACCEPTED]


def test_a_dropped_reply_is_unknown_and_the_fill_is_recovered_once_by_rest(server):
    server.fault(BinanceFault.DROP_AFTER_ACCEPT)
    order = intent("drop", Side.BUY, "0.02")

    async def scenario(venue, events):
        with pytest.raises(OutcomeUnknownError):
            await venue.submit(order)
        await until(lambda: fills(events), "the fill, recovered")
        await asyncio.sleep(0.3)

    _, events = run(scenario, server, use_stream=False)
    assert kinds(events, order.client_order_id) == [E.ACCEPTED, E.FILLED]
    assert list(server.requests).count(("POST", "/api/v3/order")) == 1


def test_a_fill_during_a_stream_drop_is_recovered_once_after_the_reconnect(server):
    order = intent("gap", Side.BUY, "0.01", OrderType.LIMIT, limit="59000")

    async def scenario(venue, events):
        await stream_up(venue, server)
        await venue.submit(order)
        server.fault(BinanceFault.DROP_STREAM_BEFORE_FILL)
        server.set_price("BTCUSDT", "58900.00", "58950.00")  # the stream drops; the fill is only in REST
        await until(lambda: fills(events), "the fill, after the reconnect")
        await until(lambda: server.subscribes >= 2, "resubscribed")
        after = intent("after", Side.BUY, "0.01")
        await venue.submit(after)  # the new subscription delivers again
        await until(lambda: fills(events, after.client_order_id), "the next fill")
        await asyncio.sleep(0.2)
        return venue.reconnects, venue.recovered_fills, (await venue.health())

    # backing off longer than the server takes to close and send: the fill surely misses the stream. A drop
    # while no watch waits is not seen by ccxt (it connects again silently): then the backstop poll finds it
    (reconnects, recovered, health), events = run(scenario, server, reconnect_backoff_s=(0.3, 1.0))
    assert reconnects <= 1 and recovered == 1
    assert kinds(events, order.client_order_id) == [E.ACCEPTED, E.FILLED]
    assert len(fills(events)) == 2 and health.ok


def test_a_venue_restart_drops_the_stream_and_a_fill_in_the_gap_is_recovered_once(server):
    order = intent("restart", Side.SELL, "0.03", OrderType.LIMIT, limit="60500")

    async def scenario(venue, events):
        await stream_up(venue, server)
        await venue.submit(order)
        await until(lambda: kinds(events, order.client_order_id) == [E.ACCEPTED], "accepted")
        await asyncio.to_thread(server.restart)  # a new gateway session: every connection dropped
        server.set_price("BTCUSDT", "60600.00", "60600.01")  # fills while the stream is down
        await until(lambda: fills(events), "the fill, recovered")
        await until(lambda: server.subscribes >= 2, "resubscribed")
        await asyncio.sleep(0.3)
        return venue.reconnects

    reconnects, events = run(scenario, server)
    assert server.session == 2 and reconnects <= 1  # ccxt may reconnect silently (see the stream drop test)
    assert kinds(events, order.client_order_id) == [E.ACCEPTED, E.FILLED]
    assert fills(events)[0].quantity == Decimal("0.03")


def test_a_duplicate_fill_message_is_delivered_once(server):
    server.fault(BinanceFault.DUPLICATE_FILL)
    order = intent("twice", Side.BUY, "0.01")

    async def scenario(venue, events):
        await stream_up(venue, server)
        await venue.submit(order)
        await until(lambda: [r["x"] for r in server.sent].count("TRADE") == 2, "the copy sent")
        await asyncio.sleep(0.3)

    _, events = run(scenario, server)
    assert Counter(f.fill_id for f in fills(events)) == Counter({"1": 1})
    assert server.positions() == {"BTCUSDT": Decimal("1.01")}


def test_a_cancel_that_meets_a_fill_is_too_late_and_the_fill_is_delivered(server):
    order = intent("race", Side.SELL, "0.05", OrderType.LIMIT, limit="60500")

    async def scenario(venue, events):
        await stream_up(venue, server)
        await venue.submit(order)
        server.fault(BinanceFault.FILL_ON_CANCEL)
        with pytest.raises(VenueRejectedError) as refused:
            await venue.cancel(order.client_order_id)
        await asyncio.sleep(0.3)
        return refused.value

    refused, events = run(scenario, server)
    assert (refused.code, refused.venue_code) == ("too_late_to_cancel", "-2011")
    assert kinds(events, order.client_order_id) == [E.ACCEPTED, E.FILLED]
    assert fills(events)[0].quantity == Decimal("0.05")


def test_a_burst_of_rejects_is_coded(server):
    server.fault(BinanceFault.REJECT, times=3)

    async def scenario(venue, events):
        codes = []
        for n in range(3):
            with pytest.raises(VenueRejectedError) as refused:
                await venue.submit(intent(f"rej{n}", Side.BUY, "0.01"))
            codes.append((refused.value.code, refused.value.venue_code))
        with pytest.raises(VenueRejectedError) as small:
            await venue.submit(intent("small", Side.BUY, "0.00001", OrderType.LIMIT, limit="59000"))
        resting = intent("dup", Side.BUY, "0.01", OrderType.LIMIT, limit="59000")
        await venue.submit(resting)
        with pytest.raises(VenueRejectedError) as dup:
            await venue.submit(resting)
        return codes, small.value, dup.value

    (codes, small, dup), events = run(scenario, server)
    assert codes == [("insufficient_funds", "-2010")] * 3
    assert (small.code, small.venue_code) == ("min_notional", "-1013")
    assert (dup.code, dup.venue_code) == ("duplicate_client_id", "-2010")
    assert [e.event_type for e in events] == [E.ACCEPTED]  # only the resting order


def test_429s_are_waited_out_and_no_order_is_lost_or_doubled(server):
    order = intent("429", Side.BUY, "0.01")

    async def scenario(venue, events):
        await stream_up(venue, server)  # the faults meet the order, not the stream's handshake
        server.fault(BinanceFault.RATE_LIMIT, times=2, retry_after=0.1)
        started = time.monotonic()
        await venue.submit(order)
        waited = time.monotonic() - started
        await until(lambda: fills(events), "the fill")
        return waited

    waited, events = run(scenario, server)
    assert waited >= 0.2  # two Retry-After waits
    assert kinds(events, order.client_order_id)[:2] == [E.ACCEPTED, E.FILLED]
    assert server.positions() == {"BTCUSDT": Decimal("1.01")}


def test_a_429_longer_than_the_adapter_may_wait_is_a_rate_limited_rejection(server):
    order = intent("429-long", Side.BUY, "0.01")

    async def scenario(venue, events):
        await stream_up(venue, server)
        server.fault(BinanceFault.RATE_LIMIT, retry_after=5)
        with pytest.raises(VenueRejectedError) as refused:
            await venue.submit(order)
        health = await venue.health()
        return refused.value, health

    (refused, health), events = run(scenario, server, rate_limit_max_wait_s=0.5)
    assert refused.code == "rate_limited" and not health.ok and "rate limited" in health.reason
    assert server.positions() == {"BTCUSDT": Decimal("1")} and events == []


def test_a_clock_skew_is_resynchronised_once(server):
    order = intent("skew", Side.BUY, "0.01")

    async def scenario(venue, events):
        server.clock_offset_ms = 10_000  # our timestamps now look older than recvWindow
        await venue.submit(order)
        await until(lambda: fills(events), "the fill")

    _, events = run(scenario, server)
    assert kinds(events, order.client_order_id)[:2] == [E.ACCEPTED, E.FILLED]


def test_not_connected_or_unknown_instrument_is_not_sent(server):
    venue = make_venue(server)
    with pytest.raises(NotSentError, match="not connected"):
        asyncio.run(venue.submit(intent("early", Side.BUY, "0.01")))

    async def scenario(venue, events):
        with pytest.raises(NotSentError, match="ETHBTC.BINANCE"):
            await venue.submit(OrderIntent("i-x", "s1", ACCOUNT, "ETHBTC.BINANCE", Side.BUY, Decimal("1"),
                                           OrderType.MARKET, TimeInForce.GTC, time.time_ns()))
        with pytest.raises(NotSentError, match="DAY"):
            await venue.submit(intent("day", Side.BUY, "0.01", OrderType.LIMIT, limit="59000", tif=TimeInForce.DAY))

    run(scenario, server)
    assert ("POST", "/api/v3/order") not in server.requests


def test_a_symbol_the_exchange_does_not_list_is_a_config_error_naming_what_it_lists(server):
    venue = make_venue(server, symbols=["BTC/USDT", "DOGE/USDT"])
    with pytest.raises(ConfigError, match=r"lists no market \['DOGE/USDT'\]; it has e.g. \['BTC/USDT', 'ETH/USDT'\]"):
        asyncio.run(asyncio.wait_for(venue.connect(lambda e: None), 10))
    assert venue.exchange is None  # closed, nothing left open


@pytest.mark.parametrize("exchange_id", ["binance", "kraken", "coinbase"])
def test_a_refused_connection_is_not_sent_for_each_configured_exchange(server, exchange_id):
    port = server.port
    server.stop()
    prefix = f"TRADEBOOK_CCXT_{exchange_id.upper()}_"
    venue = CcxtVenue.from_env(exchange_id, environ={prefix + "API_KEY": "k" * 16, prefix + "SECRET": "c2VjcmV0" * 4,
                                                     prefix + "API_URL": f"http://127.0.0.1:{port}"},
                               symbols=["BTC/USDT"])
    assert venue.name == exchange_id and venue.account_id == exchange_id and venue.is_live
    with pytest.raises(NotSentError, match="refused"):
        asyncio.run(asyncio.wait_for(venue.connect(lambda e: None), 10))


def test_funding_rate_of_a_perpetual(server):
    server.set_funding("BTCUSDT", "0.0001", mark_price="60001.5")

    async def scenario(venue, events):
        return await venue.funding_rate("BTC/USDT:USDT")

    rate, _ = run(scenario, server)
    assert rate.rate == Decimal("0.0001") and rate.mark_price == Decimal("60001.5")
    assert rate.next_funding_ns % (28_800_000 * 1_000_000) == 0 and "premiumIndex" in rate.source


# -- credentials -----------------------------------------------------------------------------------------
def test_credentials_come_only_from_the_environment_and_never_show(server, monkeypatch):
    monkeypatch.delenv("TRADEBOOK_CCXT_BINANCE_API_KEY", raising=False)
    monkeypatch.delenv("TRADEBOOK_CCXT_BINANCE_SECRET", raising=False)
    with pytest.raises(ConfigError, match="TRADEBOOK_CCXT_BINANCE_API_KEY and TRADEBOOK_CCXT_BINANCE_SECRET"):
        CcxtVenue.from_env(symbols=["BTC/USDT"])
    secret = "Zx9" + "q" * 29
    monkeypatch.setenv("TRADEBOOK_CCXT_BINANCE_API_KEY", server.key)
    monkeypatch.setenv("TRADEBOOK_CCXT_BINANCE_SECRET", secret)  # the wrong secret: every signed call refused
    venue = CcxtVenue.from_env(symbols=["BTC/USDT"], api_urls=server.ccxt_urls)
    assert server.key not in repr(venue) and secret not in repr(venue)
    with pytest.raises(VenueRejectedError) as refused:
        asyncio.run(asyncio.wait_for(venue.connect(lambda e: None), 10))
    assert refused.value.venue_code == "-1022"
    assert secret not in str(refused.value) and server.key not in str(refused.value)
    assert "signature=<hidden>" in str(refused.value) or "signature=" not in str(refused.value)



# -- through the Session API ------------------------------------------------------------------------------
def armed_session(server, store, tmp_path, sessions, batch, monkeypatch, **options):  # noqa: F811
    from tradebook.config import TradebookConfig
    from tradebook.session import Session

    bid, ask = batch.last_quote(BTC)[1:3]
    server.set_price("BTCUSDT", f"{bid:.2f}", f"{ask:.2f}")
    monkeypatch.setenv("TRADEBOOK_CCXT_BINANCE_API_KEY", server.key)
    monkeypatch.setenv("TRADEBOOK_CCXT_BINANCE_SECRET", server.secret)
    config = TradebookConfig(routing={"crypto_spot": "binance"}, venues={"binance": {
        "enabled": True, "account_id": ACCOUNT,
        "options": {"symbols": "BTC/USDT", "api_url": server.base_url, "poll_interval_s": "0.05", **options}}})
    s = Session(store, calibrations=[BTC], state_dir=tmp_path / "s", config=config)
    sessions.append(s)
    return s


def test_an_armed_binance_account_trades_halts_and_flattens_through_the_session(server, store, tmp_path,  # noqa: F811
                                                                                sessions, batches,  # noqa: F811
                                                                                monkeypatch):
    batch = batches[0]
    s = armed_session(server, store, tmp_path, sessions, batch, monkeypatch)
    s.arm_live("binance", confirm=ACCOUNT)
    assert s.venue.name == "binance" and s.status()["account"] == ACCOUNT
    s.start()
    assert s.status()["routes"] == f"binance (account {ACCOUNT})"
    s.step(batch)
    [order] = s.submit(signal("live-1", quantity="0.01"))
    wait_for_status(s, order.client_order_id, OrderStatus.FILLED)
    assert s.oms.order(order.client_order_id).filled_qty == Decimal("0.01")
    assert server.positions() == {"BTCUSDT": Decimal("1.01")}

    s.halt("enough")
    [refused] = s.submit(signal("live-2", quantity="0.01"))
    assert refused.status is OrderStatus.REJECTED and "halt" in refused.reason
    s.resume_trading("back")
    s.flatten("risk off")
    for _ in range(200):
        if server.positions() == {"BTCUSDT": Decimal("1")} and not s.oms.working_orders():
            break
        time.sleep(0.05)
    assert server.positions() == {"BTCUSDT": Decimal("1")}  # the session's 0.01 sold, the account's own BTC kept
    assert s.positions()["quantity"].tolist() == [Decimal(0)]
    s.stop()
    assert (tmp_path / "s" / f"oms-binance-{ACCOUNT}.journal").exists()


def wait_for_status(session, client_order_id: str, status: OrderStatus, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while session.oms.order(client_order_id).status is not status:
        if time.monotonic() > deadline:
            raise AssertionError(f"{client_order_id} is {session.oms.order(client_order_id).status} after "
                                 f"{timeout} s, not {status}")
        time.sleep(0.05)


def test_an_order_whose_reply_times_out_is_found_by_the_session_and_sent_once(server, store, tmp_path,  # noqa: F811
                                                                              sessions, batches,  # noqa: F811
                                                                              monkeypatch):
    batch = batches[0]
    s = armed_session(server, store, tmp_path, sessions, batch, monkeypatch, request_timeout_s="0.3")
    s.arm_live("binance", confirm=ACCOUNT)
    s.start()
    s.step(batch)
    server.fault(BinanceFault.HANG_AFTER_ACCEPT)
    [order] = s.submit(signal("lost-reply", quantity="0.01"))
    # unresolved, unless the adapter's poller found it before the order manager took the timeout
    assert order.status in (OrderStatus.UNRESOLVED, OrderStatus.ACCEPTED, OrderStatus.FILLED)
    wait_for_status(s, order.client_order_id, OrderStatus.FILLED)
    assert s.oms.unresolved() == [] and s.oms.order(order.client_order_id).filled_qty == Decimal("0.01")
    if order.status is OrderStatus.UNRESOLVED:
        assert "outcome_unknown" in {a.kind for a in s.oms.alerts()}
    assert list(server.requests).count(("POST", "/api/v3/order")) == 1
    assert server.positions() == {"BTCUSDT": Decimal("1.01")}
    s.stop()


def test_the_sdk_debug_log_shows_requests_without_the_credentials(server, caplog):
    import logging

    caplog.set_level(logging.DEBUG, logger="tradebook.venues.ccxt_sdk")

    async def scenario(venue, events):
        await venue.submit(intent("logged", Side.BUY, "0.01"))

    run(scenario, server, use_stream=False)
    text = caplog.text
    assert "POST" in text and "X-MBX-APIKEY" in text  # ccxt's own debug lines, headers included
    assert server.key not in text and server.secret not in text and "<hidden>" in text


def test_a_resting_limit_order_is_cancelled_through_the_session(server, store, tmp_path,  # noqa: F811
                                                                sessions, batches, monkeypatch):  # noqa: F811
    batch = batches[0]
    s = armed_session(server, store, tmp_path, sessions, batch, monkeypatch)
    s.arm_live("binance", confirm=ACCOUNT)
    s.start()
    s.step(batch)
    bid = batch.last_quote(BTC)[1]
    limit = (Decimal(str(bid)) * Decimal("0.99")).quantize(Decimal("0.01"))
    resting = OrderIntent("nb:resting", "nb", ACCOUNT, BTC, Side.BUY, Decimal("0.01"), OrderType.LIMIT,
                          TimeInForce.GTC, batch.end_ns - 1, limit_price=limit)
    [order] = s.submit(resting)
    wait_for_status(s, order.client_order_id, OrderStatus.ACCEPTED)
    assert [o.client_order_id for o in server.book.open_orders()] == [order.client_order_id]
    [asked] = s.cancel_orders(reason="changed my mind")
    assert asked.client_order_id == order.client_order_id
    wait_for_status(s, order.client_order_id, OrderStatus.CANCELLED)
    assert server.book.open_orders() == [] and server.positions() == {"BTCUSDT": Decimal("1")}
    s.stop()
