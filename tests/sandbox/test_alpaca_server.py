"""The Alpaca sandbox driven by the real alpaca-py clients: REST (TradingClient) and the trade_updates stream."""

from __future__ import annotations

import concurrent.futures
import queue
import threading
import time
from decimal import Decimal

import pytest
import requests

from tradebook.sandbox.alpaca import DEFAULT_KEY, DEFAULT_SECRET, AlpacaFault, AlpacaSandbox

pytest.importorskip("alpaca")
from alpaca.common.exceptions import APIError  # noqa: E402
from alpaca.trading.client import TradingClient  # noqa: E402
from alpaca.trading.enums import OrderSide, OrderStatus, QueryOrderStatus, TimeInForce  # noqa: E402
from alpaca.trading.models import TradeActivity  # noqa: E402
from alpaca.trading.requests import (  # noqa: E402
    GetOrdersRequest, LimitOrderRequest, MarketOrderRequest, ReplaceOrderRequest, StopOrderRequest,
)
from alpaca.trading.stream import TradingStream  # noqa: E402

WAIT_S = 5.0


@pytest.fixture
def venue():
    with AlpacaSandbox() as server:
        server.set_price("SPY", "450.00", "450.02")
        yield server


@pytest.fixture
def client(venue):
    client = TradingClient(DEFAULT_KEY, DEFAULT_SECRET, paper=True, url_override=venue.base_url)
    client._retry_wait = 0  # alpaca-py waits 3 s between its own retries; the retries themselves are the test
    return client


class StreamListener:
    """TradingStream in a thread; its updates in a queue."""

    def __init__(self, venue: AlpacaSandbox) -> None:
        self.updates: queue.Queue = queue.Queue()
        self.stream = TradingStream(DEFAULT_KEY, DEFAULT_SECRET, paper=True, url_override=venue.stream_url)
        self.stream._reconnect_min_backoff = 0.05  # reconnect fast in tests (default 1 s)
        self.stream.subscribe_trade_updates(self._handle)
        self.thread = threading.Thread(target=self.stream.run, daemon=True)
        self.venue = venue

    async def _handle(self, update) -> None:
        self.updates.put(update)

    def start(self) -> StreamListener:
        self.thread.start()
        wait_for(lambda: self.venue.listens, "the stream to listen")
        return self

    def next(self, timeout: float = WAIT_S):
        return self.updates.get(timeout=timeout)

    def drain(self, quiet_s: float = 0.2) -> list:
        out = []
        while True:
            try:
                out.append(self.updates.get(timeout=quiet_s))
            except queue.Empty:
                return out

    def stop(self) -> None:
        if self.stream._loop is not None and self.stream._loop.is_running():
            self.stream.stop()
        self.venue.drop_stream()
        self.thread.join(WAIT_S)


def wait_for(predicate, what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


@pytest.fixture
def listener(venue):
    listener = StreamListener(venue).start()
    yield listener
    listener.stop()


def market(qty, cid, side=OrderSide.BUY, **kw):
    return MarketOrderRequest(symbol="SPY", qty=qty, side=side, time_in_force=TimeInForce.DAY, client_order_id=cid,
                              **kw)


def limit(qty, price, cid, side=OrderSide.BUY, tif=TimeInForce.GTC, **kw):
    return LimitOrderRequest(symbol="SPY", qty=qty, side=side, time_in_force=tif, limit_price=price,
                             client_order_id=cid, **kw)


def event(update) -> str:
    # TradeUpdate.event is Union[TradeEvent, str]: pydantic keeps a plain str for the known names too
    return getattr(update.event, "value", update.event)


def all_orders(client):
    return client.get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL))


# -- the ordinary path -----------------------------------------------------------------------------
def test_market_order_fills_at_the_touch_and_shows_in_positions_and_account(client, listener):
    order = client.submit_order(market(10, "c-mkt"))
    assert order.status == OrderStatus.FILLED and order.client_order_id == "c-mkt"
    assert Decimal(order.filled_qty) == 10 and Decimal(order.filled_avg_price) == Decimal("450.02")
    assert client.get_order_by_id(order.id).status == OrderStatus.FILLED
    [position] = client.get_all_positions()
    assert (position.symbol, Decimal(position.qty), position.side.value) == ("SPY", 10, "long")
    assert Decimal(position.avg_entry_price) == Decimal("450.02")
    account = client.get_account()
    assert Decimal(account.cash) == Decimal(100000) - Decimal("4500.2")
    assert [event(listener.next()) for _ in range(2)] == ["new", "fill"]


def test_sell_market_order_closes_the_position(client):
    client.submit_order(market(10, "c-buy"))
    client.submit_order(market(10, "c-sell", side=OrderSide.SELL))
    assert client.get_all_positions() == []
    assert Decimal(client.get_account().cash) == Decimal(100000) - Decimal("0.2")


def test_limit_order_rests_then_fills_at_its_limit_when_the_price_crosses(venue, client, listener):
    order = client.submit_order(limit(5, 449.50, "c-lim"))
    assert order.status == OrderStatus.NEW
    assert [o.id for o in client.get_orders()] == [order.id]  # open orders
    venue.set_price("SPY", "449.40", "449.45")
    filled = client.get_order_by_client_id("c-lim")
    assert filled.status == OrderStatus.FILLED and Decimal(filled.filled_avg_price) == Decimal("449.5")
    updates = [listener.next() for _ in range(2)]
    assert [event(u) for u in updates] == ["new", "fill"]
    assert updates[1].price == 449.5 and updates[1].qty == 5 and updates[1].position_qty == 5
    assert updates[1].execution_id is not None


def test_stop_order_waits_for_its_stop_then_fills(venue, client):
    order = client.submit_order(StopOrderRequest(symbol="SPY", qty=3, side=OrderSide.SELL, stop_price=445,
                                                 time_in_force=TimeInForce.GTC, client_order_id="c-stop"))
    assert order.status == OrderStatus.NEW
    venue.set_price("SPY", "446.00", "446.02")
    assert client.get_order_by_id(order.id).status == OrderStatus.NEW
    venue.set_price("SPY", "444.90", "444.92")
    done = client.get_order_by_id(order.id)
    assert done.status == OrderStatus.FILLED and Decimal(done.filled_avg_price) == Decimal("444.9")


def test_partial_fills_arrive_one_per_price_update(client, listener):
    venue = listener.venue
    venue.book.max_fill_qty = Decimal(4)
    order = client.submit_order(market(10, "c-part"))
    assert order.status == OrderStatus.PARTIALLY_FILLED and Decimal(order.filled_qty) == 4
    venue.set_price("SPY", "450.10", "450.12")
    venue.set_price("SPY", "450.20", "450.22")
    done = client.get_order_by_id(order.id)
    assert done.status == OrderStatus.FILLED and Decimal(done.filled_qty) == 10
    expected = (4 * Decimal("450.02") + 4 * Decimal("450.12") + 2 * Decimal("450.22")) / 10
    assert Decimal(done.filled_avg_price) == expected
    updates = [listener.next() for _ in range(4)]
    assert [event(u) for u in updates] == ["new", "partial_fill", "partial_fill", "fill"]
    assert [u.qty for u in updates[1:]] == [4, 4, 2]
    assert len({u.execution_id for u in updates[1:]}) == 3


def test_replace_gives_a_new_order_id_and_ends_the_old_one_replaced(venue, client, listener):
    order = client.submit_order(limit(5, 449.00, "c-old"))
    new = client.replace_order_by_id(order.id, ReplaceOrderRequest(qty=7, limit_price=449.25,
                                                                   client_order_id="c-new"))
    assert new.id != order.id and new.replaces == order.id and new.client_order_id == "c-new"
    assert Decimal(new.qty) == 7 and Decimal(new.limit_price) == Decimal("449.25")
    old = client.get_order_by_id(order.id)
    assert old.status == OrderStatus.REPLACED and old.replaced_by == new.id
    venue.set_price("SPY", "449.10", "449.20")
    assert client.get_order_by_id(new.id).status == OrderStatus.FILLED
    events = [event(listener.next()) for _ in range(3)]
    assert events == ["new", "replaced", "fill"]


def test_cancel_answers_204_and_the_order_ends_canceled(client, listener):
    order = client.submit_order(limit(5, 440, "c-cxl"))
    assert client.cancel_order_by_id(order.id) is None
    assert client.get_order_by_id(order.id).status == OrderStatus.CANCELED
    assert [event(listener.next()) for _ in range(2)] == ["new", "canceled"]


def test_cancel_of_a_filled_order_is_422_42210000(client):
    order = client.submit_order(market(1, "c-done"))
    with pytest.raises(APIError) as info:
        client.cancel_order_by_id(order.id)
    assert info.value.status_code == 422 and info.value.code == 42210000
    assert info.value.message == 'order is already in "filled" state'


def test_unknown_order_is_404(client):
    with pytest.raises(APIError) as info:
        client.get_order_by_client_id("never-sent")
    assert info.value.status_code == 404 and info.value.code == 40410000


def test_expiry_reaches_the_stream_and_rest(venue, client, listener):
    order = client.submit_order(limit(5, 440, "c-exp", tif=TimeInForce.DAY))
    venue.expire(str(order.id))
    assert client.get_order_by_id(order.id).status == OrderStatus.EXPIRED
    assert [event(listener.next()) for _ in range(2)] == ["new", "expired"]


def test_duplicate_client_order_id_is_422_40010001(client):
    client.submit_order(limit(1, 440, "c-dup"))
    with pytest.raises(APIError) as info:
        client.submit_order(limit(1, 440, "c-dup"))
    assert info.value.status_code == 422 and info.value.code == 40010001
    assert len(all_orders(client)) == 1


def test_alpaca_rules_on_fractional_and_extended_hours_orders(client):
    assert client.submit_order(market(0.5, "c-frac")).status == OrderStatus.FILLED  # fractional market DAY
    with pytest.raises(APIError) as info:
        client.submit_order(limit(0.5, 440, "c-frac-gtc"))
    assert info.value.code == 42210000
    with pytest.raises(APIError) as info:
        client.submit_order(market(1, "c-ext", extended_hours=True))
    assert info.value.code == 42210000
    assert client.submit_order(limit(1, 440, "c-ext-ok", tif=TimeInForce.DAY, extended_hours=True)).extended_hours


def test_wrong_keys_are_401(venue):
    stranger = TradingClient("other-key", "other-secret", url_override=venue.base_url)
    with pytest.raises(APIError) as info:
        stranger.get_account()
    assert info.value.status_code == 401


def test_clock_and_assets_parse(client):
    assert client.get_clock().is_open is True
    assert client.get_asset("SPY").exchange.value == "ARCA"


# -- faults --------------------------------------------------------------------------------------
def test_a_burst_of_rejections_then_an_order_goes_through(venue, client):
    venue.fault(AlpacaFault.REJECT, times=3)
    for n in range(3):
        with pytest.raises(APIError) as info:
            client.submit_order(market(1, f"c-rej-{n}"))
        assert info.value.status_code == 403 and info.value.code == 40310000
    assert client.submit_order(market(1, "c-rej-ok")).status == OrderStatus.FILLED
    assert [o.client_order_id for o in all_orders(client)] == ["c-rej-ok"]


def test_rejected_after_accept_arrives_on_the_stream(venue, client, listener):
    venue.fault(AlpacaFault.REJECT_AFTER_ACCEPT)
    order = client.submit_order(market(1, "c-late-rej"))
    assert order.status == OrderStatus.ACCEPTED
    update = listener.next()
    assert event(update) == "rejected" and update.order.id == order.id
    assert client.get_order_by_id(order.id).status == OrderStatus.REJECTED
    assert client.get_all_positions() == []


def test_429s_are_retried_by_alpaca_py_and_the_order_is_placed_once(venue, client):
    venue.fault(AlpacaFault.RATE_LIMIT, times=2, retry_after=2)
    order = client.submit_order(market(1, "c-429"))
    assert order.status == OrderStatus.FILLED
    assert venue.requests.count(("POST", "/v2/orders")) == 3
    assert len(all_orders(client)) == 1


def test_429_beyond_alpaca_py_retries_raises_with_retry_after(venue, client):
    venue.fault(AlpacaFault.RATE_LIMIT, times=4, retry_after=7)
    with pytest.raises(APIError) as info:
        client.submit_order(market(1, "c-429-out"))
    assert info.value.status_code == 429 and info.value.response.headers["Retry-After"] == "7"
    assert all_orders(client) == []


def test_504_after_accept_is_resent_by_alpaca_py_and_only_the_client_id_stops_a_second_order(venue, client):
    venue.fault(AlpacaFault.GATEWAY_TIMEOUT_AFTER_ACCEPT)
    with pytest.raises(APIError) as info:
        client.submit_order(market(2, "c-504"))
    # the resend met the order the first try had placed
    assert info.value.status_code == 422 and info.value.code == 40010001
    assert venue.requests.count(("POST", "/v2/orders")) == 2
    [order] = all_orders(client)
    assert order.client_order_id == "c-504" and order.status == OrderStatus.FILLED
    assert Decimal(client.get_all_positions()[0].qty) == 2


def test_an_accepted_order_whose_reply_never_comes_is_found_by_client_id(venue, client):
    venue.fault(AlpacaFault.HANG_AFTER_ACCEPT)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(client.submit_order, market(3, "c-hang"))
        with pytest.raises(concurrent.futures.TimeoutError):
            pending.result(timeout=0.5)  # alpaca-py sets no timeout: the caller's deadline
        other = TradingClient(DEFAULT_KEY, DEFAULT_SECRET, url_override=venue.base_url)
        found = other.get_order_by_client_id("c-hang")
        assert found.status == OrderStatus.FILLED and Decimal(found.filled_qty) == 3
        venue.stop()  # lets the held request go
        with pytest.raises((APIError, requests.ConnectionError)):
            pending.result(timeout=WAIT_S)


def test_a_dropped_reply_raises_connection_error_and_the_order_exists(venue, client):
    venue.fault(AlpacaFault.DROP_AFTER_ACCEPT)
    with pytest.raises(requests.ConnectionError):
        client.submit_order(market(4, "c-drop"))
    assert venue.requests.count(("POST", "/v2/orders")) == 1  # not retried
    assert client.get_order_by_client_id("c-drop").status == OrderStatus.FILLED


def test_a_duplicate_fill_message_reaches_the_handler_twice_with_one_execution_id(venue, client, listener):
    venue.fault(AlpacaFault.DUPLICATE_FILL)
    client.submit_order(market(1, "c-twice"))
    updates = [listener.next() for _ in range(3)]
    assert [event(u) for u in updates] == ["new", "fill", "fill"]
    assert updates[1].execution_id == updates[2].execution_id
    assert venue.positions() == {"SPY": 1}  # the venue booked it once


def test_a_fill_after_a_cancel_answered_204(venue, client, listener):
    venue.fault(AlpacaFault.FILL_AFTER_CANCEL)
    order = client.submit_order(limit(2, 449, "c-race"))
    assert client.cancel_order_by_id(order.id) is None
    updates = [listener.next() for _ in range(2)]
    assert [event(u) for u in updates] == ["new", "fill"]
    assert listener.drain() == []  # no 'canceled' follows
    assert client.get_order_by_id(order.id).status == OrderStatus.FILLED


def test_a_replace_answered_200_can_lose_to_a_fill(venue, client, listener):
    venue.fault(AlpacaFault.REPLACE_LOSES_TO_FILL)
    order = client.submit_order(limit(2, 449, "c-old-race"))
    new = client.replace_order_by_id(order.id, ReplaceOrderRequest(limit_price=448, client_order_id="c-new-race"))
    assert new.status == OrderStatus.ACCEPTED and new.replaces == order.id
    updates = [listener.next() for _ in range(3)]
    assert [(event(u), u.order.client_order_id) for u in updates] == [
        ("new", "c-old-race"), ("fill", "c-old-race"), ("rejected", "c-new-race")]
    assert client.get_order_by_id(order.id).status == OrderStatus.FILLED  # not replaced
    assert client.get_order_by_id(new.id).status == OrderStatus.REJECTED
    assert Decimal(client.get_all_positions()[0].qty) == 2


def test_a_stream_drop_with_a_fill_in_flight_loses_it_on_the_stream_not_in_rest(venue, client, listener):
    order = client.submit_order(limit(2, 449, "c-gap"))
    assert event(listener.next()) == "new"
    venue.fault(AlpacaFault.DROP_STREAM_BEFORE_FILL)
    venue.set_price("SPY", "448.90", "448.95")
    wait_for(lambda: venue.listens == 2, "alpaca-py to reconnect the stream")
    assert listener.drain() == []  # alpaca-py reconnected and said nothing; the fill is gone from the stream
    assert client.get_order_by_id(order.id).status == OrderStatus.FILLED
    # REST has the execution under the id the stream would have carried
    [activity] = [TradeActivity(**raw) for raw in client.get("/account/activities/FILL")]
    lost = [m["data"]["execution_id"] for m in venue.sent if m["data"]["event"] == "fill"]
    assert activity.id.endswith("::" + lost[0]) and activity.order_id == order.id
    assert (activity.qty, activity.price, activity.cum_qty, activity.leaves_qty) == (2, 449, 2, 0)
    client.submit_order(market(1, "c-after-gap"))  # the reconnected stream delivers what comes next
    assert [event(listener.next()) for _ in range(2)] == ["new", "fill"]


def test_restart_drops_connections_keeps_orders_and_starts_a_new_session(venue, client, listener):
    order = client.submit_order(limit(2, 440, "c-restart"))
    assert event(listener.next()) == "new"
    venue.restart()
    assert venue.session == 2
    assert client.get_order_by_id(order.id).status == OrderStatus.NEW
    wait_for(lambda: venue.listens == 2, "alpaca-py to reconnect after the restart")
    client.cancel_order_by_id(order.id)
    assert event(listener.next()) == "canceled"


def test_fill_activities_page_and_filter(venue, client):
    venue.book.max_fill_qty = Decimal(1)
    order = client.submit_order(market(3, "c-act"))
    venue.set_price("SPY", "450.00", "450.03")
    venue.set_price("SPY", "450.00", "450.04")
    rows = [TradeActivity(**raw) for raw in client.get("/account/activities/FILL", {"direction": "asc"})]
    assert [(a.type.value, a.cum_qty, a.leaves_qty, a.price) for a in rows] == [
        ("partial_fill", 1, 2, 450.02), ("partial_fill", 2, 1, 450.03), ("fill", 3, 0, 450.04)]
    assert {a.order_id for a in rows} == {order.id}
    page = client.get("/account/activities/FILL", {"direction": "asc", "page_size": 1, "page_token": rows[0].id})
    assert [r["id"] for r in page] == [rows[1].id]
    since = client.get("/account/activities/FILL", {"after": rows[0].transaction_time.isoformat()})
    assert {r["id"] for r in since} == {rows[1].id, rows[2].id}


def test_close_position_sends_the_opposite_market_order(client):
    client.submit_order(market(6, "c-open"))
    closing = client.close_position("SPY")
    assert closing.side == OrderSide.SELL and Decimal(closing.qty) == 6
    assert client.get_all_positions() == []


def test_the_sandbox_serves_from_the_command_line_until_interrupted():
    import select
    import signal
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-m", "tradebook.sandbox.alpaca", "--price", "SPY=450.00/450.02"],
                               stdout=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([process.stdout], [], [], 20)  # a fresh interpreter imports aiohttp first
        assert ready, "the sandbox printed nothing within 20 s"
        first = process.stdout.readline()  # printed once listening
        assert first.startswith("alpaca sandbox listening on http://127.0.0.1:"), first
        client = TradingClient(DEFAULT_KEY, DEFAULT_SECRET, url_override=first.split()[-1])
        assert client.submit_order(market(1, "c-cli")).status == OrderStatus.FILLED
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=WAIT_S) == 0
