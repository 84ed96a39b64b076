"""The local TWS server, driven by the real ib-async client: what the client sees in each case.

Every wait has a deadline (``wait_until``); ib-async raises ``ConnectionError`` out of a
running ``sleep`` when the server drops the link, which the waits tolerate where a test
expects a drop.
"""

from __future__ import annotations

import select
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from decimal import Decimal

import pytest
from ib_async import IB, ExecutionFilter, Future, LimitOrder, MarketOrder, Order, Stock, StopOrder

from tradebook.errors import ConfigError, SandboxError
from tradebook.sandbox.tws import SERVER_VERSION, In, TwsFault, TwsServer

AAPL = Stock("AAPL", "SMART", "USD")
ES = Future("ES", "202703", "CME")


def wait_until(ib: IB, condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        try:
            ib.sleep(0.01)
        except ConnectionError:  # the server dropped the link while the loop ran
            pass


def settle(ib: IB, seconds: float = 0.15) -> None:
    """Let messages that should NOT arrive have their chance to (absence checks)."""
    try:
        ib.sleep(seconds)
    except ConnectionError:
        pass


@pytest.fixture
def tws() -> Iterator[TwsServer]:
    with TwsServer() as server:
        server.set_price("AAPL", "189.99", "190.01")
        yield server


@pytest.fixture
def connect(tws: TwsServer) -> Iterator[Callable[..., IB]]:
    clients: list[IB] = []

    def make(client_id: int = 1, ib: IB | None = None) -> IB:
        ib = ib or IB()
        ib.connect(tws.host, tws.port, clientId=client_id, timeout=5)
        clients.append(ib)
        return ib

    yield make
    for ib in clients:
        ib.disconnect()


def order(kind: type, action: str, qty: float, *prices: float, ref: str = "", **extra: object) -> Order:
    o = kind(action, qty, *prices, **extra)
    o.orderRef = ref
    return o


# -- connection and sync --------------------------------------------------------------------------
def test_handshake_and_startup_sync(tws: TwsServer, connect: Callable[..., IB]) -> None:
    ib = connect(7)
    assert ib.isConnected() and ib.client.serverVersion() == SERVER_VERSION
    assert ib.managedAccounts() == [tws.account]
    assert tws.connected_client_ids() == [7]
    values = {v.tag: v.value for v in ib.accountValues() if v.currency in ("USD", "")}
    assert Decimal(values["NetLiquidation"]) == Decimal("1000000") and values["AccountCode"] == tws.account
    summary = {v.tag: v.value for v in ib.accountSummary()}
    assert Decimal(summary["TotalCashValue"]) == Decimal("1000000")
    assert ib.positions() == [] and ib.openTrades() == [] and ib.fills() == []
    for request in (In.START_API, In.REQ_POSITIONS, In.REQ_OPEN_ORDERS, In.REQ_COMPLETED_ORDERS,
                    In.REQ_ACCOUNT_UPDATES, In.REQ_EXECUTIONS):
        assert tws.received_count(request) == 1, request


def test_a_client_id_in_use_is_refused(tws: TwsServer, connect: Callable[..., IB]) -> None:
    connect(1)
    errors: list[int] = []
    second = IB()
    second.errorEvent += lambda req_id, code, text, contract: errors.append(code)
    with pytest.raises(TimeoutError):
        second.connect(tws.host, tws.port, clientId=1, timeout=1)
    assert errors == [326] and tws.connected_client_ids() == [1]


def test_contract_details_for_a_stock_and_a_future(connect: Callable[..., IB]) -> None:
    ib = connect()
    [stock] = ib.reqContractDetails(AAPL)
    assert (stock.contract.conId, stock.contract.primaryExchange, stock.minTick) == (265598, "NASDAQ", 0.01)
    [future] = ib.reqContractDetails(ES)
    assert future.contract.localSymbol == "ESH7" and future.contract.multiplier == "50"
    assert future.minTick == 0.25 and future.contract.lastTradeDateOrContractMonth == "20270319"
    assert ib.qualifyContracts(Stock("NOPE", "SMART", "USD")) == [None]  # error 200: no definition


def test_the_handshake_on_the_wire(tws: TwsServer) -> None:
    with socket.create_connection((tws.host, tws.port), timeout=5) as raw:
        body = b"v157..178"
        raw.sendall(b"API\0" + struct.pack(">I", len(body)) + body)
        size = struct.unpack(">I", raw.recv(4))[0]
        version, conn_time = raw.recv(size).decode().split("\0")[:-1]
    assert version == "176" and conn_time.endswith(" UTC") and len(conn_time) == len("20261207 17:30:00 UTC")


def test_a_malformed_message_is_answered_not_fatal(tws: TwsServer) -> None:
    def message(*fields: object) -> bytes:
        body = "".join(f"{f}\0" for f in fields).encode()
        return struct.pack(">I", len(body)) + body

    def read(raw: socket.socket) -> list[str]:
        size = struct.unpack(">I", raw.recv(4, socket.MSG_WAITALL))[0]
        return raw.recv(size, socket.MSG_WAITALL).decode().split("\0")[:-1]

    with socket.create_connection((tws.host, tws.port), timeout=5) as raw:
        raw.sendall(b"API\0" + struct.pack(">I", 9) + b"v157..178")
        assert read(raw)[0] == "176"
        raw.sendall(message(71, 2, 5, ""))
        assert read(raw)[0] == "9" and read(raw)[0] == "15"  # nextValidId, managedAccounts
        raw.sendall(message(3, "not-an-id"))  # placeOrder with garbage
        error = read(raw)
        assert error[:4] == ["4", "2", "-1", "321"] and "message 3" in error[4]
        raw.sendall(message(49, 1))  # the connection still serves: reqCurrentTime
        assert read(raw)[0] == "49"


def test_a_client_outside_the_version_range_is_closed(tws: TwsServer) -> None:
    with socket.create_connection((tws.host, tws.port), timeout=5) as raw:
        raw.sendall(b"API\0" + struct.pack(">I", 9) + b"v100..150")
        assert raw.recv(4) == b""  # closed without an answer


def test_start_and_stop_are_clean_and_a_taken_port_is_a_clear_error() -> None:
    with TwsServer() as first:
        with pytest.raises(SandboxError, match=f"could not listen on 127.0.0.1:{first.port}"):
            TwsServer(port=first.port).start()
    with pytest.raises(SandboxError, match="not running"):
        first.orders()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((first.host, first.port), timeout=1)
    with pytest.raises(ConfigError, match="unknown sandbox contract 'MSFT'"), TwsServer() as server:
        server.set_price("MSFT", "1", "2")


def test_run_from_the_command_line_until_interrupted() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "tradebook.sandbox.tws", "--port", "0", "--price",
                             "AAPL=189.99/190.01"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "the sandbox did not say where it listens within 30 s"
        line = proc.stdout.readline()
        assert line.startswith("TWS sandbox listening on 127.0.0.1:"), line
        ib = IB()
        ib.connect("127.0.0.1", int(line.split(":")[1].split()[0]), clientId=1, timeout=5)
        trade = ib.placeOrder(AAPL, order(MarketOrder, "BUY", 1))
        wait_until(ib, lambda: trade.orderStatus.status == "Filled", "the fill at the given price")
        assert trade.orderStatus.avgFillPrice == 190.01
        ib.disconnect()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.wait(timeout=10)
    bad = subprocess.run([sys.executable, "-m", "tradebook.sandbox.tws", "--port", "0", "--price", "AAPL"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "expected SYMBOL=BID/ASK" in bad.stderr


# -- orders and fills ---------------------------------------------------------------------------
def test_market_order_fills_in_parts_with_commissions_and_positions(tws: TwsServer, connect: Callable[..., IB]) -> None:
    ib = connect()
    tws.set_fill_parts(3)
    trade = ib.placeOrder(AAPL, order(MarketOrder, "BUY", 100, ref="tb1"))
    wait_until(ib, lambda: trade.orderStatus.status == "Filled", "the fill")
    wait_until(ib, lambda: all(f.commissionReport.execId for f in trade.fills), "commission reports")
    assert [f.execution.shares for f in trade.fills] == [33, 33, 34]
    assert {f.execution.price for f in trade.fills} == {190.01} and trade.orderStatus.avgFillPrice == 190.01
    assert [f.execution.cumQty for f in trade.fills] == [33, 66, 100]
    assert all(f.execution.orderRef == "tb1" and f.execution.side == "BOT" for f in trade.fills)
    assert sum(f.commissionReport.commission for f in trade.fills) == 3.0  # 1.00 minimum each
    wait_until(ib, lambda: [p.position for p in ib.positions()] == [100.0], "the position update")
    assert ib.positions()[0].avgCost == 190.01
    assert tws.positions() == {"AAPL": Decimal(100)}
    assert tws.cash() == Decimal("1000000") - Decimal("19001") - 3
    [held] = tws.orders()
    assert (held.status, held.filled, held.order_ref, held.client_id) == ("Filled", 100, "tb1", 1)


def test_a_future_books_with_its_multiplier(tws: TwsServer, connect: Callable[..., IB]) -> None:
    ib = connect()
    tws.set_price("ESH7", "5000.00", "5000.25")
    trade = ib.placeOrder(ES, order(MarketOrder, "SELL", 2))
    wait_until(ib, lambda: trade.orderStatus.status == "Filled", "the fill")
    assert trade.fills[0].execution.price == 5000.0 and trade.fills[0].execution.side == "SLD"
    wait_until(ib, lambda: len(ib.positions()) == 1, "the position")
    assert ib.positions()[0].position == -2 and ib.positions()[0].avgCost == 250000.0  # price x 50
    assert tws.cash() == Decimal("1000000") + 2 * 5000 * 50 - 1


def test_a_limit_order_rests_fills_in_parts_as_quotes_cross_it(tws: TwsServer, connect: Callable[..., IB]) -> None:
    ib = connect()
    trade = ib.placeOrder(AAPL, order(LimitOrder, "SELL", 50, 191.0))
    wait_until(ib, lambda: trade.orderStatus.status == "Submitted", "the acknowledgement")
    assert trade.fills == [] and trade.orderStatus.remaining == 50
    tws.set_price("AAPL", "191.00", "191.02", bid_size="20")
    wait_until(ib, lambda: trade.orderStatus.filled == 20, "a partial fill")
    assert trade.orderStatus.status == "Submitted" and trade.orderStatus.remaining == 30
    settle(ib)
    assert len(trade.fills) == 1  # the quote's 20 are used up: the rest waits for the next quote
    tws.set_price("AAPL", "191.05", "191.07")
    wait_until(ib, lambda: trade.orderStatus.status == "Filled", "the rest")
    assert [(f.execution.shares, f.execution.price) for f in trade.fills] == [(20, 191.0), (30, 191.05)]
    assert trade.orderStatus.avgFillPrice == pytest.approx((20 * 191 + 30 * 191.05) / 50)


def test_modify_cancel_and_a_stop_order(tws: TwsServer, connect: Callable[..., IB]) -> None:
    ib = connect()
    resting = ib.placeOrder(AAPL, order(LimitOrder, "BUY", 10, 180.0))
    wait_until(ib, lambda: resting.orderStatus.status == "Submitted", "the acknowledgement")
    resting.order.lmtPrice, resting.order.totalQuantity = 185.0, 12
    ib.placeOrder(AAPL, resting.order)  # same order id: a modification
    wait_until(ib, lambda: resting.orderStatus.remaining == 12, "the modification's status")
    assert [e.message for e in resting.log[-2:]] == ["Modify", ""]
    [held] = tws.orders()
    assert (held.lmt_price, held.quantity) == (Decimal(185), Decimal(12))
    ib.cancelOrder(resting.order)
    wait_until(ib, lambda: resting.orderStatus.status == "Cancelled", "the cancel")
    assert tws.orders()[0].status == "Cancelled" and resting.fills == []

    stop = ib.placeOrder(AAPL, order(StopOrder, "SELL", 5, 189.50))
    wait_until(ib, lambda: stop.orderStatus.status == "PreSubmitted", "the stop's acknowledgement")
    tws.set_price("AAPL", "189.60", "189.62")
    settle(ib)
    assert stop.fills == [] and stop.orderStatus.status == "PreSubmitted"  # not triggered yet
    tws.set_price("AAPL", "189.40", "189.42")
    wait_until(ib, lambda: stop.orderStatus.status == "Filled", "the stop to trigger and fill")
    assert stop.fills[0].execution.price == 189.40
    assert [e.status for e in stop.log if e.status in ("PreSubmitted", "Submitted")][-1] == "Submitted"

    errors: list[int] = []
    ib.errorEvent += lambda req_id, code, text, contract: errors.append(code)
    ib.cancelOrder(stop.order)  # already filled
    wait_until(ib, lambda: errors == [10148], "the refusal to cancel a filled order")


def test_global_cancel_reaches_every_clients_orders_and_the_clock(tws: TwsServer,
                                                                    connect: Callable[..., IB]) -> None:
    first, second = connect(1), connect(2)
    one = first.placeOrder(AAPL, order(LimitOrder, "BUY", 1, 150.0))
    two = second.placeOrder(AAPL, order(LimitOrder, "BUY", 1, 151.0))
    wait_until(second, lambda: two.orderStatus.status == "Submitted", "the second acknowledgement")
    second.reqGlobalCancel()
    wait_until(second, lambda: two.orderStatus.status == "Cancelled", "the second's cancel")
    wait_until(first, lambda: one.orderStatus.status == "Cancelled", "the first's cancel, heard by its own client")
    assert abs(first.reqCurrentTime().timestamp() - time.time()) < 60


def test_ioc_and_fok(tws: TwsServer, connect: Callable[..., IB]) -> None:
    ib = connect()
    tws.set_price("AAPL", "189.99", "190.01", ask_size="30")
    ioc = ib.placeOrder(AAPL, order(LimitOrder, "BUY", 50, 190.01, tif="IOC"))
    wait_until(ib, lambda: ioc.orderStatus.status == "Cancelled", "the IOC's end")
    assert sum(f.execution.shares for f in ioc.fills) == 30 and ioc.orderStatus.filled == 30
    tws.set_price("AAPL", "189.99", "190.01", ask_size="30")
    fok = ib.placeOrder(AAPL, order(LimitOrder, "BUY", 50, 190.01, tif="FOK"))
    wait_until(ib, lambda: fok.orderStatus.status == "Cancelled", "the FOK's end")
    assert fok.fills == []


def test_bad_orders_are_refused_with_codes(connect: Callable[..., IB], tws: TwsServer) -> None:
    ib = connect()
    off_tick = ib.placeOrder(AAPL, order(LimitOrder, "BUY", 1, 190.005))
    trail = ib.placeOrder(AAPL, Order(action="BUY", totalQuantity=1, orderType="TRAIL", auxPrice=1.0))
    unknown = ib.placeOrder(Stock("NOPE", "SMART", "USD"), order(MarketOrder, "BUY", 1))
    for trade, code in ((off_tick, 110), (trail, 201), (unknown, 200)):
        wait_until(ib, lambda t=trade: t.orderStatus.status == "Cancelled", f"refusal {code}")
        assert trade.log[-1].errorCode == code
    assert tws.orders() == []


def test_market_data_streams_quotes_to_the_feed_client(tws: TwsServer, connect: Callable[..., IB]) -> None:
    feed = connect(12)
    [aapl] = feed.qualifyContracts(Stock("AAPL", "SMART", "USD"))  # ib-async keys tickers by conId
    ticker = feed.reqMktData(aapl)
    wait_until(feed, lambda: ticker.bid == 189.99 and ticker.ask == 190.01, "the current quote")
    tws.set_price("AAPL", "190.10", "190.12", bid_size="300", ask_size="200")
    wait_until(feed, lambda: (ticker.bid, ticker.bidSize, ticker.ask, ticker.askSize) == (190.10, 300, 190.12, 200),
               "the new quote")
    feed.cancelMktData(aapl)
    settle(feed)
    tws.set_price("AAPL", "190.20", "190.22")
    settle(feed)
    assert ticker.bid == 190.10  # no longer streamed
    [snapshot] = feed.reqTickers(aapl)
    assert (snapshot.bid, snapshot.ask) == (190.20, 190.22)


def test_day_orders_expire_at_the_close(tws: TwsServer, connect: Callable[..., IB]) -> None:
    ib = connect()
    day = ib.placeOrder(AAPL, order(LimitOrder, "BUY", 5, 150.0, tif="DAY"))
    gtc = ib.placeOrder(AAPL, order(LimitOrder, "BUY", 5, 150.0, tif="GTC"))
    wait_until(ib, lambda: gtc.orderStatus.status == "Submitted", "the acknowledgements")
    tws.end_of_day()
    wait_until(ib, lambda: day.orderStatus.status == "Cancelled", "the DAY order's expiry")
    settle(ib)
    assert gtc.orderStatus.status == "Submitted" and [o.status for o in tws.orders()] == ["Cancelled", "Submitted"]


def test_open_and_completed_orders_read_back_field_by_field(tws: TwsServer, connect: Callable[..., IB]) -> None:
    ib = connect(3)
    stop_limit = Order(action="SELL", totalQuantity=7, orderType="STP LMT", lmtPrice=180.5, auxPrice=181.0,
                       tif="GTC", outsideRth=True, orderRef="tbfields")
    working = ib.placeOrder(AAPL, stop_limit)
    done = ib.placeOrder(ES, order(MarketOrder, "BUY", 1, ref="tbdone"))
    tws.set_price("ESH7", "5000.00", "5000.25")
    wait_until(ib, lambda: done.orderStatus.status == "Filled", "the future's fill")
    other = connect(4)  # another client reads every open order and the completed ones afresh
    [seen] = other.reqAllOpenOrders()
    o, c = seen.order, seen.contract
    assert (o.action, o.totalQuantity, o.orderType, o.lmtPrice, o.auxPrice, o.tif, o.outsideRth) == (
        "SELL", 7.0, "STP LMT", 180.5, 181.0, "GTC", True)
    assert (o.orderRef, o.clientId, o.orderId, o.account, o.permId) == (
        "tbfields", 3, working.order.orderId, tws.account, working.orderStatus.permId)
    assert (c.conId, c.symbol, c.secType, c.localSymbol) == (265598, "AAPL", "STK", "AAPL")
    assert seen.orderStatus.status == "PreSubmitted"  # a stop IB holds until it triggers
    [completed] = other.reqCompletedOrders(apiOnly=False)
    assert (completed.order.orderRef, completed.order.filledQuantity, completed.orderStatus.status) == (
        "tbdone", 1.0, "Filled")
    assert (completed.contract.localSymbol, completed.contract.multiplier) == ("ESH7", "50")
    since = done.fills[0].execution.time
    assert len(ib.reqExecutions(ExecutionFilter(time=since.strftime("%Y%m%d-%H:%M:%S")))) == 1
    assert ib.reqExecutions(ExecutionFilter(time="20991231-00:00:00")) == []
    assert ib.reqExecutions(ExecutionFilter(secType="STK")) == []


# -- scripted faults ----------------------------------------------------------------------------
def test_silent_accept_is_found_by_reconciliation_after_reconnect(tws: TwsServer, connect: Callable[..., IB]) -> None:
    ib = connect()
    tws.fault(TwsFault.HANG_AFTER_ACCEPT)
    filled = ib.placeOrder(AAPL, order(MarketOrder, "BUY", 10, ref="tbsilent1"))
    tws.fault(TwsFault.HANG_AFTER_ACCEPT)
    resting = ib.placeOrder(AAPL, order(LimitOrder, "BUY", 10, 150.0, ref="tbsilent2"))
    settle(ib, 0.3)
    assert filled.orderStatus.status == resting.orderStatus.status == "PendingSubmit"  # never answered
    assert filled.fills == [] and {o.order_ref: o.status for o in tws.orders()} == {
        "tbsilent1": "Filled", "tbsilent2": "Submitted"}
    ib.disconnect()
    ib = connect(1, IB())
    assert [f.execution.orderRef for f in ib.fills()] == ["tbsilent1"]
    assert [t.order.orderRef for t in ib.openTrades()] == ["tbsilent2"]
    completed = ib.reqCompletedOrders(apiOnly=False)
    assert [(t.order.orderRef, t.orderStatus.status, t.order.filledQuantity) for t in completed] == [
        ("tbsilent1", "Filled", 10.0)]
    assert tws.received_count(In.PLACE_ORDER) == 2  # nothing was resent
    [again] = ib.openTrades()
    tws.set_price("AAPL", "149.98", "150.00")  # the new connection hears the silenced order's events again
    wait_until(ib, lambda: again.orderStatus.status == "Filled", "the fill of the formerly silent order")


def test_fills_made_while_disconnected_are_in_the_executions_on_reconnect(tws: TwsServer,
                                                                          connect: Callable[..., IB]) -> None:
    ib = connect()
    trade = ib.placeOrder(AAPL, order(LimitOrder, "SELL", 15, 191.0, ref="tbgap"))
    wait_until(ib, lambda: trade.orderStatus.status == "Submitted", "the acknowledgement")
    ib.disconnect()
    tws.set_price("AAPL", "191.00", "191.02")  # fills while nobody listens
    assert [o.status for o in tws.orders()] == ["Filled"]
    ib.connect(tws.host, tws.port, clientId=1, timeout=5)
    assert [(f.execution.orderRef, f.execution.shares) for f in ib.fills()] == [("tbgap", 15.0)]
    assert trade.fills == []  # ib-async keeps the old Trade as it was: rebuild from executions (STACK.md)


def test_a_fill_in_flight_when_the_link_drops_is_recovered_once(tws: TwsServer, connect: Callable[..., IB]) -> None:
    ib = connect()
    drops: list[int] = []
    ib.disconnectedEvent += lambda: drops.append(1)
    tws.fault(TwsFault.DROP_STREAM_BEFORE_FILL)
    trade = ib.placeOrder(AAPL, order(MarketOrder, "BUY", 25, ref="tbdrop"))
    wait_until(ib, lambda: not ib.isConnected(), "the dropped link")
    assert drops == [1] and trade.fills == [] and trade.orderStatus.status == "Submitted"  # acked, fill lost
    assert len(tws.executions()) == 1
    ib.connect(tws.host, tws.port, clientId=1, timeout=5)
    fills = [f for f in ib.fills() if f.execution.orderRef == "tbdrop"]
    assert len(fills) == 1 and fills[0].execution.shares == 25
    again = ib.reqExecutions(ExecutionFilter(clientId=1))
    assert [f.execution.execId for f in again] == [fills[0].execution.execId]
    assert [p.position for p in ib.positions()] == [25.0]


def test_a_duplicate_fill_message_is_dropped_by_ib_async(tws: TwsServer, connect: Callable[..., IB]) -> None:
    ib = connect()
    seen: list[str] = []  # every execDetails the decoder hands over, before ib-async's de-duplication
    deliver = ib.wrapper.execDetails
    ib.wrapper.execDetails = lambda req_id, contract, ex: (seen.append(ex.execId), deliver(req_id, contract, ex))
    events: list[str] = []
    ib.execDetailsEvent += lambda trade, fill: events.append(fill.execution.execId)
    tws.fault(TwsFault.DUPLICATE_FILL)
    trade = ib.placeOrder(AAPL, order(MarketOrder, "BUY", 10))
    wait_until(ib, lambda: trade.orderStatus.status == "Filled", "the fill")
    settle(ib)
    assert len(seen) == 2 and seen[0] == seen[1]  # the server sent it twice
    assert events == [seen[0]] and len(trade.fills) == 1 and len(ib.fills()) == 1


def test_a_late_fill_after_the_cancel_was_confirmed(tws: TwsServer, connect: Callable[..., IB]) -> None:
    ib = connect()
    trade = ib.placeOrder(AAPL, order(LimitOrder, "BUY", 40, 185.0))
    wait_until(ib, lambda: trade.orderStatus.status == "Submitted", "the acknowledgement")
    tws.fault(TwsFault.FILL_AFTER_CANCEL)
    statuses: list[str] = []
    ib.execDetailsEvent += lambda t, fill: statuses.append(t.orderStatus.status)
    ib.cancelOrder(trade.order)
    wait_until(ib, lambda: len(trade.fills) == 1, "the late fill")
    assert statuses == ["Cancelled"]  # the fill came after the cancel was confirmed
    assert trade.fills[0].execution.shares == 40 and trade.fills[0].execution.price == 185.0
    wait_until(ib, lambda: trade.orderStatus.filled == 40, "the status with the late fill counted")
    assert trade.orderStatus.status == "Cancelled"
    [held] = tws.orders()
    assert (held.status, held.filled) == ("Cancelled", Decimal(40)) and tws.positions() == {"AAPL": Decimal(40)}


def test_a_fill_that_wins_the_race_against_a_cancel(tws: TwsServer, connect: Callable[..., IB]) -> None:
    ib = connect()
    trade = ib.placeOrder(AAPL, order(LimitOrder, "BUY", 40, 185.0))
    wait_until(ib, lambda: trade.orderStatus.status == "Submitted", "the acknowledgement")
    errors: list[int] = []
    ib.errorEvent += lambda req_id, code, text, contract: errors.append(code)
    tws.fault(TwsFault.FILL_ON_CANCEL)
    ib.cancelOrder(trade.order)
    wait_until(ib, lambda: errors == [10148], "the refused cancel")
    assert trade.orderStatus.status == "Filled" and len(trade.fills) == 1


def test_a_burst_of_rejections(tws: TwsServer, connect: Callable[..., IB]) -> None:
    ib = connect()
    tws.fault(TwsFault.REJECT, times=3)
    trades = [ib.placeOrder(AAPL, order(MarketOrder, "BUY", 1, ref=f"tb{i}")) for i in range(4)]
    wait_until(ib, lambda: all(t.isDone() for t in trades), "every order to end")
    assert [t.orderStatus.status for t in trades] == ["Cancelled"] * 3 + ["Filled"]
    assert [t.log[-1].errorCode for t in trades[:3]] == [201] * 3
    assert [o.order_ref for o in tws.orders()] == ["tb3"] and tws.faults.spent[TwsFault.REJECT] == 3
    tws.fault(TwsFault.REJECT, code=203, reason="The security is not available or allowed for this account")
    refused = ib.placeOrder(AAPL, order(MarketOrder, "BUY", 1))
    wait_until(ib, lambda: refused.isDone(), "the refusal with its own code")
    assert refused.log[-1].errorCode == 203 and "not available" in refused.log[-1].message
    with pytest.raises(ConfigError, match="unknown TWS sandbox fault 'explode'; expected one of"):
        tws.fault("explode")


def test_an_order_taken_then_the_link_dropped_before_any_answer(tws: TwsServer, connect: Callable[..., IB]) -> None:
    ib = connect()
    tws.fault(TwsFault.DROP_AFTER_ACCEPT)
    trade = ib.placeOrder(AAPL, order(LimitOrder, "BUY", 5, 150.0, ref="tbdropped"))
    wait_until(ib, lambda: not ib.isConnected(), "the dropped link")
    assert trade.orderStatus.status == "PendingSubmit"  # the client cannot tell whether it arrived
    ib.connect(tws.host, tws.port, clientId=1, timeout=5)
    assert [(t.order.orderRef, t.orderStatus.status) for t in ib.openTrades()] == [("tbdropped", "Submitted")]
    assert tws.received_count(In.PLACE_ORDER) == 1


def test_a_rate_limited_message_is_refused_and_nothing_happens(tws: TwsServer, connect: Callable[..., IB]) -> None:
    ib = connect()
    tws.fault(TwsFault.RATE_LIMIT, times=2)
    trades = [ib.placeOrder(AAPL, order(MarketOrder, "BUY", 1, ref=f"tb{i}")) for i in range(3)]
    wait_until(ib, lambda: all(t.isDone() for t in trades), "every order to end")
    assert [t.log[-1].errorCode for t in trades[:2]] == [100, 100] and trades[2].orderStatus.status == "Filled"
    assert [o.order_ref for o in tws.orders()] == ["tb2"]


def test_pacing_refuses_excess_messages_and_loses_no_order(tws: TwsServer, connect: Callable[..., IB]) -> None:
    ib = connect()
    ib.client.MaxRequests = 0  # ib-async paces itself at 45/s; turned off to meet the server's limit
    tws.limit_rate(5)
    trades = [ib.placeOrder(AAPL, order(MarketOrder, "BUY", 1, ref=f"tb{i}")) for i in range(8)]
    wait_until(ib, lambda: all(t.isDone() for t in trades), "every order to end")
    paced = [t for t in trades if t.log[-1].errorCode == 100]
    filled = [t for t in trades if t.orderStatus.status == "Filled"]
    assert paced and filled and len(paced) + len(filled) == 8
    assert sorted(o.order_ref for o in tws.orders()) == sorted(t.order.orderRef for t in filled)
    tws.limit_rate(None)
    retry = ib.placeOrder(AAPL, order(MarketOrder, "BUY", 1, ref=paced[0].order.orderRef))
    wait_until(ib, lambda: retry.orderStatus.status == "Filled", "the retried order")


def test_restart_is_a_new_session_where_ids_and_fills_continue(tws: TwsServer, connect: Callable[..., IB]) -> None:
    ib = connect()
    first = ib.placeOrder(AAPL, order(MarketOrder, "BUY", 3, ref="tbbefore"))
    wait_until(ib, lambda: first.orderStatus.status == "Filled", "the fill")
    exec_before = first.fills[0].execution.execId
    tws.restart(down_for=0.1)
    wait_until(ib, lambda: not ib.isConnected(), "the link to drop")
    ib.connect(tws.host, tws.port, clientId=1, timeout=5)
    assert ib.client.getReqId() > first.order.orderId  # ids continue
    assert [f.execution.execId for f in ib.fills()] == [exec_before]
    second = ib.placeOrder(AAPL, order(MarketOrder, "BUY", 3, ref="tbafter"))
    wait_until(ib, lambda: second.orderStatus.status == "Filled", "the fill after the restart")
    assert second.fills[0].execution.execId.split(".")[0] != exec_before.split(".")[0]  # a new session's ids
    assert second.order.permId != first.order.permId and tws.positions() == {"AAPL": Decimal(6)}


def test_client_ids_scope_order_events_and_executions(tws: TwsServer, connect: Callable[..., IB]) -> None:
    orders, data = connect(11), connect(12)
    trade = orders.placeOrder(AAPL, order(MarketOrder, "BUY", 5, ref="tbscoped"))
    wait_until(orders, lambda: trade.orderStatus.status == "Filled", "the fill")
    settle(data)
    assert data.trades() == [] and data.reqExecutions() == []  # another client id hears nothing of it
    assert [f.execution.orderRef for f in orders.reqExecutions()] == ["tbscoped"]
    wait_until(data, lambda: [p.position for p in data.positions()] == [5.0], "positions are account-wide")


def test_the_master_client_id_sees_every_clients_orders() -> None:
    with TwsServer(master_client_id=99) as tws:
        tws.set_price("AAPL", "189.99", "190.01")
        orders = IB()
        orders.connect(tws.host, tws.port, clientId=1, timeout=5)
        master = IB()
        master.connect(tws.host, tws.port, clientId=99, timeout=5)
        try:
            trade = orders.placeOrder(AAPL, order(MarketOrder, "BUY", 5, ref="tbmaster"))
            wait_until(orders, lambda: trade.orderStatus.status == "Filled", "the fill")
            assert [f.execution.orderRef for f in master.reqExecutions()] == ["tbmaster"]
        finally:
            orders.disconnect()
            master.disconnect()
