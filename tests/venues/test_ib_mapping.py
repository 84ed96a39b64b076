"""IB vocabulary both ways: every tradebook value and every IB value, unknown values refused by name."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from ib_async import IB, CommissionReport, Execution, Stock
from ib_async import OrderStatus as IbOrderStatus

from tradebook.errors import ConfigError, VenueMappingError
from tradebook.model.instruments import Side
from tradebook.model.orders import OrderEventType, OrderStatus, OrderType, TimeInForce
from tradebook.sandbox.tws import TwsServer
from tradebook.venues import ib_mapping as m


def wait_until(ib: IB, condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        ib.sleep(0.01)


@pytest.mark.parametrize("order_type", list(OrderType))
def test_every_order_type_round_trips(order_type: OrderType) -> None:
    assert m.order_type_from_ib(m.order_type_to_ib(order_type)) is order_type


def test_ib_order_type_words() -> None:
    assert [m.order_type_to_ib(t) for t in OrderType] == ["MKT", "LMT", "STP", "STP LMT"]
    with pytest.raises(VenueMappingError, match="IB order type 'TRAIL': tradebook has no trailing stops"):
        m.order_type_from_ib("TRAIL")
    with pytest.raises(VenueMappingError, match=r"unknown IB order type 'LIMIT'; expected one of \['LMT', 'MKT'"):
        m.order_type_from_ib("LIMIT")
    with pytest.raises(VenueMappingError, match=r"not a tradebook order type: 'LMT'; expected one of \['limit'"):
        m.order_type_to_ib("LMT")  # type: ignore[arg-type]


@pytest.mark.parametrize("side", list(Side))
def test_every_side_round_trips(side: Side) -> None:
    assert m.side_from_ib(m.side_to_ib(side)) is side


def test_execution_and_institutional_sides() -> None:
    assert [m.side_from_ib(w) for w in ("BOT", "SLD", "SSHORT", "SLONG")] == [Side.BUY, Side.SELL, Side.SELL,
                                                                               Side.SELL]
    with pytest.raises(VenueMappingError, match=r"unknown IB side 'buy'; expected one of \['BOT', 'BUY'"):
        m.side_from_ib("buy")


@pytest.mark.parametrize("tif", list(TimeInForce))
def test_every_time_in_force_round_trips(tif: TimeInForce) -> None:
    assert m.time_in_force_from_ib(m.time_in_force_to_ib(tif)) is tif


def test_time_in_force_words() -> None:
    assert m.time_in_force_from_ib("") is TimeInForce.DAY  # IB's default
    for refused in ("OPG", "GTD", "DTC", "AUC"):
        with pytest.raises(VenueMappingError, match=f"IB time in force '{refused}': .* not modelled"):
            m.time_in_force_from_ib(refused)
    with pytest.raises(VenueMappingError, match="unknown IB time in force 'GTX'"):
        m.time_in_force_from_ib("GTX")


def test_the_statuses_mapped_are_exactly_ib_asyncs() -> None:
    theirs = {v for k, v in vars(IbOrderStatus).items() if k[0].isupper() and isinstance(v, str)}
    assert m.ib_order_statuses() == theirs


@pytest.mark.parametrize("status", sorted(m.ib_order_statuses()))
def test_every_ib_status_maps(status: str) -> None:
    none = m.order_status_from_ib(status, filled_qty=Decimal(0), quantity=Decimal(10))
    part = m.order_status_from_ib(status, filled_qty=Decimal(4), quantity=Decimal(10))
    full = m.order_status_from_ib(status, filled_qty=Decimal(10), quantity=Decimal(10))
    working = status in ("PreSubmitted", "Submitted", "ApiUpdate", "ValidationError")
    if working:
        assert (none, part, full) == (OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED)
    else:  # the status decides; fills are kept apart (a Cancelled order may have filled in part)
        assert none == part == full
    assert m.order_status_to_ib(part) in m.ib_order_statuses()


@pytest.mark.parametrize("status", list(OrderStatus))
def test_every_tradebook_status_maps_to_ib_and_back(status: OrderStatus) -> None:
    if status in m.TRADEBOOK_ONLY_STATUSES:  # tradebook's own states: IB has no word for them
        with pytest.raises(VenueMappingError, match=f"tradebook order status {status} has no IB counterpart"):
            m.order_status_to_ib(status)
        return
    word = m.order_status_to_ib(status)
    filled = {OrderStatus.PARTIALLY_FILLED: Decimal(4), OrderStatus.FILLED: Decimal(10)}.get(status, Decimal(0))
    back = m.order_status_from_ib(word, filled_qty=filled, quantity=Decimal(10))
    if status in m.LOSSY_STATUSES:
        assert back is {OrderStatus.PENDING_REPLACE: OrderStatus.ACCEPTED,
                        OrderStatus.EXPIRED: OrderStatus.CANCELLED}[status]
    else:
        assert back is status


def test_status_refusals() -> None:
    with pytest.raises(VenueMappingError, match="tradebook order status pending has no IB counterpart"):
        m.order_status_to_ib(OrderStatus.PENDING)
    with pytest.raises(VenueMappingError, match="unknown IB order status 'Canceled'; expected one of"):
        m.order_status_from_ib("Canceled")
    with pytest.raises(VenueMappingError, match="not a tradebook order status: 'Filled'"):
        m.order_status_to_ib("Filled")  # type: ignore[arg-type]


def test_error_codes_are_decisions_with_events() -> None:
    expected = {
        201: (m.IbErrorKind.ORDER_REJECTED, OrderEventType.REJECTED),
        110: (m.IbErrorKind.ORDER_REJECTED, OrderEventType.REJECTED),
        200: (m.IbErrorKind.NO_SECURITY, OrderEventType.REJECTED),
        100: (m.IbErrorKind.PACING, OrderEventType.REJECTED),
        202: (m.IbErrorKind.ORDER_CANCELLED, OrderEventType.CANCELLED),
        10148: (m.IbErrorKind.CANCEL_REJECTED, OrderEventType.CANCEL_REJECTED),
        10147: (m.IbErrorKind.CANCEL_REJECTED, OrderEventType.CANCEL_REJECTED),
        104: (m.IbErrorKind.MODIFY_REJECTED, OrderEventType.REPLACE_REJECTED),
        103: (m.IbErrorKind.DUPLICATE_ORDER_ID, None),
        1100: (m.IbErrorKind.CONNECTIVITY, None),
        326: (m.IbErrorKind.CONNECTIVITY, None),
        2104: (m.IbErrorKind.WARNING, None),  # market data farm connection is OK
        399: (m.IbErrorKind.WARNING, None),
        99999: (m.IbErrorKind.UNCLASSIFIED, None),
    }
    assert {code: (m.ib_error_kind(code), m.event_for_ib_error(code)) for code in expected} == expected
    with pytest.raises(VenueMappingError, match="an IB error code is an int, got '201'"):
        m.ib_error_kind("201")  # type: ignore[arg-type]


def test_the_client_id_scheme() -> None:
    ids = {role: m.ib_client_id(role) for role in m.IbClientRole}
    assert ids == {m.IbClientRole.ORDERS: 10, m.IbClientRole.DATA: 11, m.IbClientRole.FEED: 12}
    assert m.ib_client_id("feed", base=20) == 22
    with pytest.raises(ConfigError, match="0 is TWS's manual-order client"):
        m.ib_client_id("orders", base=0)
    with pytest.raises(ConfigError, match=r"unknown IB client role 'market'; expected one of \['orders'"):
        m.ib_client_id("market")


@pytest.mark.parametrize("status", sorted(m.ib_order_statuses()))
def test_every_ib_status_is_a_step_or_none(status: str) -> None:
    expected = {"PreSubmitted": OrderEventType.ACCEPTED, "Submitted": OrderEventType.ACCEPTED,
                "Cancelled": OrderEventType.CANCELLED, "ApiCancelled": OrderEventType.CANCELLED,
                "Inactive": OrderEventType.REJECTED}
    assert m.event_from_ib_status(status) is expected.get(status)


def test_an_unknown_status_is_no_step_but_an_error() -> None:
    with pytest.raises(VenueMappingError, match="unknown IB order status 'Done'"):
        m.event_from_ib_status("Done")


def test_orders_built_for_ib_reach_the_tws_sandbox_as_meant() -> None:
    built = {
        "tbmkt": m.ib_order(side=Side.BUY, quantity=Decimal("10"), order_type=OrderType.MARKET,
                            time_in_force=TimeInForce.DAY, client_order_id="tbmkt"),
        "tblmt": m.ib_order(side=Side.SELL, quantity=Decimal("3"), order_type=OrderType.LIMIT,
                            time_in_force=TimeInForce.GTC, client_order_id="tblmt", limit_price=Decimal("200.05")),
        "tbstp": m.ib_order(side=Side.SELL, quantity=Decimal("2"), order_type=OrderType.STOP,
                            time_in_force=TimeInForce.DAY, client_order_id="tbstp", stop_price=Decimal("150.5")),
        "tbstl": m.ib_order(side=Side.BUY, quantity=Decimal("1"), order_type=OrderType.STOP_LIMIT,
                            time_in_force=TimeInForce.IOC, client_order_id="tbstl", limit_price=Decimal("201"),
                            stop_price=Decimal("200.5"), outside_rth=True),
    }
    with TwsServer() as tws:
        ib = IB()
        ib.connect(tws.host, tws.port, clientId=m.ib_client_id(m.IbClientRole.ORDERS), timeout=5)
        try:
            trades = [ib.placeOrder(Stock("AAPL", "SMART", "USD"), order) for order in built.values()]
            wait_until(ib, lambda: all(t.orderStatus.status != "PendingSubmit" for t in trades), "the answers")
            held = {o.order_ref: o for o in tws.orders()}
        finally:
            ib.disconnect()
    assert set(held) == set(built) and held["tbmkt"].client_id == 10
    assert (held["tblmt"].action, held["tblmt"].quantity, held["tblmt"].order_type, held["tblmt"].lmt_price,
            held["tblmt"].tif) == ("SELL", Decimal(3), "LMT", Decimal("200.05"), "GTC")
    assert (held["tbstp"].order_type, held["tbstp"].aux_price, held["tbstp"].lmt_price) == ("STP", Decimal("150.5"),
                                                                                             None)
    assert (held["tbstl"].order_type, held["tbstl"].lmt_price, held["tbstl"].aux_price, held["tbstl"].tif,
            held["tbstl"].outside_rth) == ("STP LMT", Decimal(201), Decimal("200.5"), "IOC", True)


def test_ib_order_refusals() -> None:
    with pytest.raises(VenueMappingError, match="a limit order needs limit_price"):
        m.ib_order(side=Side.BUY, quantity=Decimal(1), order_type=OrderType.LIMIT, time_in_force=TimeInForce.DAY,
                   client_order_id="tb")
    with pytest.raises(VenueMappingError, match="quantity 0.12345678901234567 does not survive IB's float"):
        m.ib_order(side=Side.BUY, quantity=Decimal("0.12345678901234567"), order_type=OrderType.MARKET,
                   time_in_force=TimeInForce.DAY, client_order_id="tb")


def test_fills_from_executions_the_real_client_received() -> None:
    with TwsServer() as tws:
        tws.set_price("AAPL", "189.99", "190.01")
        tws.set_fill_parts(2)
        ib = IB()
        ib.connect(tws.host, tws.port, clientId=1, timeout=5)
        try:
            order = m.ib_order(side=Side.BUY, quantity=Decimal("300"), order_type=OrderType.MARKET,
                               time_in_force=TimeInForce.DAY, client_order_id="tbfill")
            trade = ib.placeOrder(Stock("AAPL", "SMART", "USD"), order)
            wait_until(ib, lambda: len(trade.fills) == 2 and all(f.commissionReport.execId for f in trade.fills),
                       "two fills with their commissions")
            fills = [m.fill_from_ib(f.execution, f.commissionReport, instrument_id="AAPL.XNAS", ts_init_ns=7)
                     for f in trade.fills]
            before = m.fill_from_ib(trade.fills[0].execution, instrument_id="AAPL.XNAS", ts_init_ns=7)
            executions = tws.executions()
        finally:
            ib.disconnect()
    assert [(f.fill_id, f.quantity, f.price, f.fee) for f in fills] == [
        (e.exec_id, Decimal(150), Decimal("190.01"), Decimal("1.00")) for e in executions]
    assert {(f.client_order_id, f.side, f.liquidity, f.instrument_id, f.ts_init_ns) for f in fills} == {
        ("tbfill", Side.BUY, "taker", "AAPL.XNAS", 7)}
    assert abs(fills[0].ts_event_ns - time.time_ns()) < 120 * 10**9
    assert before.fee == 0 and before.fill_id == fills[0].fill_id  # the commission comes after the execution


def test_fill_refusals() -> None:
    moment = datetime(2026, 12, 7, 15, 30, tzinfo=UTC)
    good = Execution(execId="e1", time=moment, side="SLD", shares=5.0, price=10.25, orderRef="tbx", lastLiquidity=1)
    fill = m.fill_from_ib(good, CommissionReport(execId="e1", commission=1.0), instrument_id="X", ts_init_ns=1)
    assert (fill.side, fill.liquidity, fill.price, fill.ts_event_ns) == (Side.SELL, "maker", Decimal("10.25"),
                                                                         int(moment.timestamp()) * 10**9)
    with pytest.raises(VenueMappingError, match="lacks orderRef .* not placed by tradebook"):
        m.fill_from_ib(Execution(execId="e2", time=moment, side="BOT", shares=1.0, price=1.0), instrument_id="X",
                       ts_init_ns=1)
    with pytest.raises(VenueMappingError, match="has no time zone"):
        m.fill_from_ib(Execution(execId="e3", time=datetime(2026, 12, 7), side="BOT", shares=1.0, price=1.0,
                                 orderRef="tbx"), instrument_id="X", ts_init_ns=1)
    with pytest.raises(VenueMappingError, match="commission report for 'e9' given with execution 'e1'"):
        m.fill_from_ib(good, CommissionReport(execId="e9", commission=1.0), instrument_id="X", ts_init_ns=1)
    with pytest.raises(VenueMappingError, match="shares 0.0 and price 10.25; expected both positive"):
        m.fill_from_ib(Execution(execId="e4", time=moment, side="BOT", shares=0.0, price=10.25, orderRef="tbx"),
                       instrument_id="X", ts_init_ns=1)


# -- refusals and contracts --------------------------------------------------------------------------------
def test_every_reject_code_is_a_reject_code_member() -> None:
    from tradebook.execution.oms import RejectCode

    for code in [*m._REJECT_CODES, 201, 999]:
        assert RejectCode(m.reject_code_for_ib_error(code))
    assert m.reject_code_for_ib_error(100) == RejectCode.RATE_LIMITED
    assert m.reject_code_for_ib_error(110) == RejectCode.INVALID_PRICE
    assert m.reject_code_for_ib_error(201) == RejectCode.VENUE_OTHER
    with pytest.raises(VenueMappingError, match="an IB error code is an int"):
        m.reject_code_for_ib_error("201")  # type: ignore[arg-type]


def test_instruments_map_to_ib_contracts_and_back() -> None:
    from dataclasses import replace

    from ib_async import Future

    from tradebook.model.instruments import BUNDLED_INSTRUMENTS

    aapl = m.ib_contract(BUNDLED_INSTRUMENTS["AAPL.XNAS"])
    assert (aapl.symbol, aapl.exchange, aapl.primaryExchange, aapl.currency) == ("AAPL", "SMART", "NASDAQ", "USD")
    assert m.instrument_id_from_ib(aapl) == "AAPL.XNAS"
    assert m.ib_contract(BUNDLED_INSTRUMENTS["SPY.ARCX"]).primaryExchange == "ARCA"
    in_2026 = datetime(2026, 12, 7, tzinfo=UTC)
    esh4 = m.ib_contract(BUNDLED_INSTRUMENTS["ESH4.GLBX"], today=in_2026)
    assert isinstance(esh4, Future)
    assert (esh4.symbol, esh4.exchange, esh4.lastTradeDateOrContractMonth, esh4.multiplier, esh4.localSymbol) == (
        "ES", "CME", "202403", "50", "ESH4")
    esh7 = replace(BUNDLED_INSTRUMENTS["ESH4.GLBX"], instrument_id="ESH7.GLBX", symbol="ESH7")
    assert m.ib_contract(esh7, today=in_2026).lastTradeDateOrContractMonth == "202703"
    assert m.instrument_id_from_ib(m.ib_contract(esh7, today=in_2026)) == "ESH7.GLBX"
    with pytest.raises(VenueMappingError, match="asset class 'crypto_spot' is not traded through IB here"):
        m.ib_contract(BUNDLED_INSTRUMENTS["BTCUSDT.BINANCE"])
    with pytest.raises(VenueMappingError, match="venue 'XLON' has no IB primary exchange"):
        m.ib_contract(replace(BUNDLED_INSTRUMENTS["AAPL.XNAS"], venue="XLON"))
    with pytest.raises(VenueMappingError, match="is not root \\+ month code \\+ year"):
        m.ib_contract(replace(esh7, symbol="ESA7"))
    with pytest.raises(VenueMappingError, match="primary exchange 'LSE'"):
        m.instrument_id_from_ib(Stock("VOD", "SMART", "GBP", primaryExchange="LSE"))


def test_an_fx_pair_is_a_forex_contract_on_idealpro() -> None:
    from tradebook.model.instruments import BUNDLED_INSTRUMENTS

    pair = m.ib_contract(BUNDLED_INSTRUMENTS["EURUSD.DUKASCOPY"])
    assert (pair.secType, pair.symbol, pair.currency, pair.exchange) == ("CASH", "EUR", "USD", "IDEALPRO")
    with pytest.raises(VenueMappingError, match="maps to no single tradebook instrument"):
        m.instrument_id_from_ib(pair)
