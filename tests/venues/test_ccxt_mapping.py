"""ccxt's unified vocabulary and Binance's own words to tradebook's and back, exhaustively."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tradebook.data.instruments import instrument_from_dict
from tradebook.errors import VenueMappingError
from tradebook.model.instruments import Side
from tradebook.model.orders import (
    Order, OrderEvent, OrderEventType, OrderIntent, OrderStatus, OrderType, TimeInForce, client_order_id_for,
)
from tradebook.venues import ccxt_mapping as cm

TEN = Decimal(10)
# tradebook's own states (by value: 'unresolved' is the order path's, when it cannot tell whether a venue holds
# an order), which no exchange reports and none is told
OWN_STATUSES = {"pending": "has not left tradebook", "unresolved": "reconciliation asks the exchange"}


# -- order types -----------------------------------------------------------------------------------
@pytest.mark.parametrize("ours", list(OrderType))
def test_every_order_type_round_trips_through_ccxt_with_its_trigger(ours):
    stop = ours in (OrderType.STOP, OrderType.STOP_LIMIT)
    theirs = cm.order_type_to_ccxt(ours)
    assert theirs in cm.CCXT_ORDER_TYPES
    assert cm.order_type_from_ccxt(theirs, trigger_price=1.0 if stop else None) is ours


@pytest.mark.parametrize("theirs", cm.CCXT_ORDER_TYPES)
def test_every_ccxt_order_type_maps(theirs):
    assert cm.order_type_to_ccxt(cm.order_type_from_ccxt(theirs)) == theirs
    assert cm.order_type_to_ccxt(cm.order_type_from_ccxt(theirs, trigger_price=5)) == theirs


@pytest.mark.parametrize("ours", list(OrderType))
def test_every_order_type_round_trips_through_binance(ours):
    assert cm.order_type_from_binance(cm.order_type_to_binance(ours)) is ours


@pytest.mark.parametrize("theirs", cm.BINANCE_ORDER_TYPES)
def test_every_binance_order_type_maps_or_is_refused_by_name(theirs):
    if theirs.startswith("TAKE_PROFIT"):
        with pytest.raises(VenueMappingError, match=f"'{theirs}'.*take-profit"):
            cm.order_type_from_binance(theirs)
        return
    ours = cm.order_type_from_binance(theirs)
    expected = "LIMIT" if theirs == "LIMIT_MAKER" else theirs  # post-only is a flag tradebook does not model
    assert cm.order_type_to_binance(ours) == expected


# -- sides and time in force ---------------------------------------------------------------------------
@pytest.mark.parametrize("ours", list(Side))
def test_sides_round_trip(ours):
    assert cm.side_from_ccxt(cm.side_to_ccxt(ours)) is ours


@pytest.mark.parametrize("ours", list(TimeInForce))
def test_every_time_in_force_round_trips_or_day_is_refused(ours):
    if ours is TimeInForce.DAY:
        with pytest.raises(VenueMappingError, match="no DAY orders; send GTC"):
            cm.time_in_force_to_ccxt(ours)
        return
    assert cm.time_in_force_from_ccxt(cm.time_in_force_to_ccxt(ours)) is ours


@pytest.mark.parametrize("theirs", list(cm.CCXT_TIME_IN_FORCE) + ["GTX"])
def test_every_ccxt_time_in_force_maps(theirs):
    ours = cm.time_in_force_from_ccxt(theirs)
    assert cm.time_in_force_to_ccxt(ours) == ("GTC" if theirs in ("PO", "GTX") else theirs)


# -- statuses --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("theirs", cm.CCXT_ORDER_STATUSES)
def test_every_ccxt_status_maps(theirs):
    none = cm.order_status_from_ccxt(theirs, filled=Decimal(0), amount=TEN)
    some = cm.order_status_from_ccxt(theirs, filled=Decimal(4), amount=TEN)
    done = cm.order_status_from_ccxt(theirs, filled=TEN, amount=TEN)
    if theirs == "open":
        assert (none, some, done) == (OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED)
    elif theirs == "closed":
        # closed short of the amount: the exchange ended it
        assert (none, some, done) == (OrderStatus.CANCELLED, OrderStatus.CANCELLED, OrderStatus.FILLED)
    else:
        assert none == some == done and cm.order_status_to_ccxt(none) == theirs


@pytest.mark.parametrize("ours", list(OrderStatus))
def test_every_tradebook_status_maps_to_ccxt_and_back(ours):
    if ours.value in OWN_STATUSES:
        with pytest.raises(VenueMappingError, match=OWN_STATUSES[ours.value]):
            cm.order_status_to_ccxt(ours)
        return
    filled = {OrderStatus.PARTIALLY_FILLED: Decimal(4), OrderStatus.FILLED: TEN}.get(ours, Decimal(0))
    back = cm.order_status_from_ccxt(cm.order_status_to_ccxt(ours), filled=filled, amount=TEN)
    # ccxt's 'open' cannot say submitted or replace-pending: it reads back as working
    working = (OrderStatus.SUBMITTED, OrderStatus.PENDING_REPLACE)
    assert back == (OrderStatus.ACCEPTED if ours in working else ours)


@pytest.mark.parametrize("theirs", cm.BINANCE_ORDER_STATUSES)
def test_every_binance_status_maps(theirs):
    none = cm.order_status_from_binance(theirs, filled=Decimal(0), amount=TEN)
    some = cm.order_status_from_binance(theirs, filled=Decimal(4), amount=TEN)
    if theirs in ("NEW", "PENDING_NEW"):
        assert (none, some) == (OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED)
    else:
        assert none == some
        expected = "EXPIRED" if theirs == "EXPIRED_IN_MATCH" else theirs
        assert cm.order_status_to_binance(none) == expected


@pytest.mark.parametrize("ours", list(OrderStatus))
def test_every_tradebook_status_maps_to_binance_and_back(ours):
    if ours.value in OWN_STATUSES or ours is OrderStatus.PENDING_REPLACE:
        with pytest.raises(VenueMappingError, match=f"order status {ours.value}: "):
            cm.order_status_to_binance(ours)
        return
    filled = {OrderStatus.PARTIALLY_FILLED: Decimal(4), OrderStatus.FILLED: TEN}.get(ours, Decimal(0))
    back = cm.order_status_from_binance(cm.order_status_to_binance(ours), filled=filled, amount=TEN)
    assert back == (OrderStatus.ACCEPTED if ours is OrderStatus.SUBMITTED else ours)


# -- bad input -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("call, value", [
    (cm.order_type_from_ccxt, "stop_market"), (cm.side_from_ccxt, "short"), (cm.time_in_force_from_ccxt, "GTD"),
    (cm.order_status_from_ccxt, "partially_filled"), (cm.order_status_from_binance, "TRIGGERED"),
    (cm.order_type_from_binance, "OCO"),
])
def test_unknown_values_name_the_value_and_the_choices(call, value):
    with pytest.raises(VenueMappingError, match=f"unknown .*'{value}'; expected one of"):
        call(value)


@pytest.mark.parametrize("call", [cm.order_type_to_ccxt, cm.side_to_ccxt, cm.time_in_force_to_ccxt,
                                  cm.order_status_to_ccxt, cm.order_status_to_binance, cm.order_type_to_binance])
def test_values_that_are_not_tradebook_words_are_refused(call):
    with pytest.raises(VenueMappingError, match="not a tradebook"):
        call("trailing")


# -- create_order arguments ---------------------------------------------------------------------------------
def test_create_order_args_for_each_order_type():
    common = {"side": Side.BUY, "quantity": Decimal("0.01"), "client_order_id": "tb1"}
    market = cm.create_order_args(order_type=OrderType.MARKET, time_in_force=TimeInForce.DAY, **common)
    assert (market.type, market.side, market.price, market.params) == ("market", "buy", None, {"clientOrderId": "tb1"})
    limit = cm.create_order_args(order_type=OrderType.LIMIT, time_in_force=TimeInForce.IOC,
                                 limit_price=Decimal("59000"), **common)
    assert (limit.type, limit.price, limit.params["timeInForce"]) == ("limit", Decimal("59000"), "IOC")
    stop = cm.create_order_args(order_type=OrderType.STOP, time_in_force=TimeInForce.GTC,
                                stop_price=Decimal("61000"), **common)
    assert (stop.type, stop.price, stop.params["triggerPrice"]) == ("market", None, Decimal("61000"))
    stop_limit = cm.create_order_args(order_type=OrderType.STOP_LIMIT, time_in_force=TimeInForce.GTC,
                                      limit_price=Decimal("61010"), stop_price=Decimal("61000"), **common)
    assert (stop_limit.type, stop_limit.price, stop_limit.params["triggerPrice"]) == ("limit", Decimal("61010"),
                                                                                       Decimal("61000"))
    with pytest.raises(VenueMappingError, match="needs stop_price"):
        cm.create_order_args(order_type=OrderType.STOP, time_in_force=TimeInForce.GTC, **common)
    with pytest.raises(VenueMappingError, match="takes no limit_price"):
        cm.create_order_args(order_type=OrderType.MARKET, time_in_force=TimeInForce.GTC,
                             limit_price=Decimal(1), **common)
    with pytest.raises(VenueMappingError, match="no DAY orders"):
        cm.create_order_args(order_type=OrderType.LIMIT, time_in_force=TimeInForce.DAY,
                             limit_price=Decimal(1), **common)
    with pytest.raises(VenueMappingError, match="use a limit order for FOK"):
        cm.create_order_args(order_type=OrderType.MARKET, time_in_force=TimeInForce.FOK, **common)


# -- against the Binance sandbox through ccxt ----------------------------------------------------------------
@pytest.fixture
def binance():
    ccxt = pytest.importorskip("ccxt")
    from tradebook.sandbox.binance import BinanceSandbox

    with BinanceSandbox(balances={"USDT": "100000", "BTC": "1"}, max_fill_qty="0.04") as venue:
        venue.set_price("BTCUSDT", "60000.00", "60000.01")
        exchange = ccxt.binance({"apiKey": venue.key, "secret": venue.secret, "timeout": 5000,
                                 "options": {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False,
                                             "fetchMargins": False}})
        exchange.urls["api"] = venue.ccxt_urls(exchange.urls["api"])
        exchange.load_markets()
        yield venue, exchange


def _send(exchange, args: cm.CcxtOrderArgs):
    params = {k: (exchange.price_to_precision("BTC/USDT", v) if k == "triggerPrice" else v)
              for k, v in args.params.items()}
    price = None if args.price is None else exchange.price_to_precision("BTC/USDT", args.price)
    amount = exchange.amount_to_precision("BTC/USDT", args.amount)
    return exchange.create_order("BTC/USDT", args.type, args.side, amount, price, params)


@pytest.mark.parametrize("order_type", list(OrderType))
def test_each_order_type_reaches_binance_as_its_type_and_reads_back(binance, order_type):
    venue, exchange = binance
    prices = {OrderType.LIMIT: {"limit_price": Decimal("59000")}, OrderType.STOP: {"stop_price": Decimal("59500")},
              OrderType.STOP_LIMIT: {"stop_price": Decimal("59500"), "limit_price": Decimal("59400")}}
    args = cm.create_order_args(order_type=order_type, side=Side.SELL, quantity=Decimal("0.01"),
                                time_in_force=TimeInForce.GTC, client_order_id=f"tb-{order_type}",
                                **prices.get(order_type, {}))
    order = _send(exchange, args)
    assert order["info"]["type"] == cm.order_type_to_binance(order_type)
    assert cm.order_type_from_ccxt_order(order) is order_type
    assert cm.order_type_from_ccxt(order["type"], trigger_price=order.get("triggerPrice")) is order_type


def test_statuses_and_fills_from_binance_drive_a_tradebook_order(binance):
    venue, exchange = binance
    intent = OrderIntent("i1", "s1", "acct", "BTCUSDT.BINANCE", Side.BUY, Decimal("0.1"), OrderType.MARKET,
                         TimeInForce.GTC, ts_ns=1)
    cid = client_order_id_for("i1", "acct")
    args = cm.create_order_args(order_type=intent.order_type, side=intent.side, quantity=intent.quantity,
                                time_in_force=intent.time_in_force, client_order_id=cid)
    first = _send(exchange, args)
    assert cm.order_status_from_ccxt_order(first) is OrderStatus.PARTIALLY_FILLED
    assert cm.order_status_from_ccxt(first["status"], filled=Decimal("0.04"), amount=Decimal("0.1")) \
        is OrderStatus.PARTIALLY_FILLED
    venue.set_price("BTCUSDT", "60010.00", "60010.01")
    venue.set_price("BTCUSDT", "60020.00", "60020.01")
    final = exchange.fetch_order(None, "BTC/USDT", params={"clientOrderId": cid})
    assert cm.order_status_from_ccxt_order(final) is OrderStatus.FILLED
    order = Order(intent).apply(OrderEvent(cid, OrderEventType.SUBMITTED, 1, 1))
    trades = exchange.fetch_my_trades("BTC/USDT")
    for trade in trades + trades[:1]:  # the first trade read twice, as a poll after a reconnect would
        fill = cm.fill_from_ccxt_trade(trade, client_order_id=cid, instrument_id=intent.instrument_id, ts_init_ns=2)
        order = order.apply(OrderEvent(cid, OrderEventType.FILLED, fill.ts_event_ns, 2, fill=fill))
    assert order.status is OrderStatus.FILLED and order.filled_qty == Decimal("0.1")
    assert order.avg_price == (Decimal("0.04") * Decimal("60000.01") + Decimal("0.04") * Decimal("60010.01")
                               + Decimal("0.02") * Decimal("60020.01")) / Decimal("0.1")
    assert order.fees == sum((Decimal(t["info"]["commission"]) for t in trades), Decimal(0))
    assert len(order.fill_ids) == 3


def test_orders_from_the_user_data_stream_map_by_binance_words(binance):
    import asyncio

    import ccxt.pro

    venue, _ = binance

    async def scenario():
        exchange = ccxt.pro.binance({"apiKey": venue.key, "secret": venue.secret, "timeout": 5000,
                                     "options": {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False,
                                                 "fetchMargins": False}})
        exchange.urls["api"] = venue.ccxt_urls(exchange.urls["api"])
        try:
            await exchange.load_markets()
            watching = asyncio.create_task(exchange.watch_orders("BTC/USDT"))
            await asyncio.sleep(0.2)
            args = cm.create_order_args(order_type=OrderType.STOP_LIMIT, side=Side.SELL, quantity=Decimal("0.01"),
                                        time_in_force=TimeInForce.GTC, client_order_id="tb-ws-map",
                                        limit_price=Decimal("59400"), stop_price=Decimal("59500"))
            await exchange.create_order("BTC/USDT", args.type, args.side, float(args.amount), float(args.price),
                                        {**args.params, "triggerPrice": float(args.params["triggerPrice"])})
            [order] = await asyncio.wait_for(watching, 5)
            # ccxt.pro's cache updates the same order dict in place: read it now
            seen = [(order["info"]["o"], "status" in order["info"], cm.order_type_from_ccxt_order(order),
                     cm.order_status_from_ccxt_order(order))]
            watching = asyncio.create_task(exchange.watch_orders("BTC/USDT"))
            await asyncio.sleep(0.05)
            venue.set_price("BTCUSDT", "59450.00", "59450.01")  # triggers, fills 0.01 at its 59400 limit or better
            [filled] = await asyncio.wait_for(watching, 5)
            return seen + [(filled["info"]["o"], "status" in filled["info"], cm.order_type_from_ccxt_order(filled),
                            cm.order_status_from_ccxt_order(filled))]
        finally:
            await exchange.close()

    assert asyncio.run(asyncio.wait_for(scenario(), 20)) == [
        ("STOP_LOSS_LIMIT", False, OrderType.STOP_LIMIT, OrderStatus.ACCEPTED),
        ("STOP_LOSS_LIMIT", False, OrderType.STOP_LIMIT, OrderStatus.FILLED)]


def test_a_fee_in_another_currency_is_refused():
    trade = {"id": "7", "side": "buy", "amount": 0.01, "price": 60000.0, "timestamp": 1_700_000_000_000,
             "symbol": "BTC/USDT", "fee": {"cost": 0.00001, "currency": "BNB"}, "takerOrMaker": "taker"}
    with pytest.raises(VenueMappingError, match="not in the quote currency USDT"):
        cm.fill_from_ccxt_trade(trade, client_order_id="c", instrument_id="BTCUSDT.BINANCE", ts_init_ns=1)
    trade["fee"] = {"cost": 0.6, "currency": "USDT"}
    fill = cm.fill_from_ccxt_trade(trade, client_order_id="c", instrument_id="BTCUSDT.BINANCE", ts_init_ns=1)
    assert (fill.fee, fill.price, fill.quantity, fill.ts_event_ns) == (Decimal("0.6"), Decimal("60000.0"),
                                                                       Decimal("0.01"), 1_700_000_000_000_000_000)
    with pytest.raises(VenueMappingError, match="lacks price"):
        cm.fill_from_ccxt_trade({**trade, "price": None}, client_order_id="c", instrument_id="X.Y", ts_init_ns=1)


def test_market_metadata_becomes_an_instrument_definition(binance):
    venue, exchange = binance
    spec = cm.instrument_spec_from_ccxt_market(exchange.market("BTC/USDT"), venue="BINANCE")
    instrument = instrument_from_dict(spec)
    assert instrument.instrument_id == "BTCUSDT.BINANCE"
    assert (instrument.tick_size, instrument.lot_size) == (Decimal("0.01"), Decimal("0.00001"))
    assert (instrument.min_quantity, instrument.min_notional) == (Decimal("0.00001"), Decimal(5))
    assert (instrument.currency, instrument.base_currency) == ("USDT", "BTC")
    with pytest.raises(VenueMappingError, match="not spot"):
        cm.instrument_spec_from_ccxt_market({**exchange.market("BTC/USDT"), "spot": False}, venue="BINANCE")


# -- the user data stream's executionReport ---------------------------------------------------------------
REPORT = {"e": "executionReport", "s": "BTCUSDT", "c": "tb-own", "S": "BUY", "o": "LIMIT", "x": "TRADE",
          "X": "PARTIALLY_FILLED", "i": 7, "l": "0.04000000", "z": "0.04000000", "L": "59000.00000000",
          "n": "2.36000000", "N": "USDT", "T": 1_700_000_000_123, "t": 42, "m": True, "C": ""}


def test_a_trade_report_is_a_fill_under_its_trade_id_and_other_reports_are_none():
    fill = cm.fill_from_binance_report(REPORT, symbol="BTC/USDT", client_order_id="tb-own",
                                       instrument_id="BTCUSDT.BINANCE", ts_init_ns=5)
    assert (fill.fill_id, fill.side, fill.quantity, fill.price, fill.fee, fill.liquidity, fill.ts_event_ns) == (
        "42", Side.BUY, Decimal("0.04"), Decimal("59000"), Decimal("2.36"), "maker", 1_700_000_000_123_000_000)
    assert cm.fill_from_binance_report({**REPORT, "x": "NEW"}, symbol="BTC/USDT", client_order_id="tb-own",
                                       instrument_id="BTCUSDT.BINANCE", ts_init_ns=5) is None
    with pytest.raises(VenueMappingError, match="no trade id"):
        cm.fill_from_binance_report({**REPORT, "t": -1}, symbol="BTC/USDT", client_order_id="tb-own",
                                    instrument_id="BTCUSDT.BINANCE", ts_init_ns=5)
    with pytest.raises(VenueMappingError, match="not in the quote currency"):  # a fee in BNB is not booked as USDT
        cm.fill_from_binance_report({**REPORT, "N": "BNB"}, symbol="BTC/USDT", client_order_id="tb-own",
                                    instrument_id="BTCUSDT.BINANCE", ts_init_ns=5)


def test_a_cancel_report_names_the_order_by_its_original_client_id():
    assert cm.client_order_id_from_binance_report(REPORT) == "tb-own"
    cancel = {**REPORT, "x": "CANCELED", "c": "cancel-req-1", "C": "tb-own"}
    assert cm.client_order_id_from_binance_report(cancel) == "tb-own"


# -- ccxt's exceptions to the port's errors -------------------------------------------------------------
def _connect_refused():
    import aiohttp

    ccxt = pytest.importorskip("ccxt")
    try:
        try:
            raise aiohttp.ClientConnectorError(None, OSError(111, "Connection refused"))
        except aiohttp.ClientConnectorError as cause:
            raise ccxt.ExchangeNotAvailable("binance POST http://127.0.0.1:1/api/v3/order") from cause
    except ccxt.ExchangeNotAvailable as exc:
        return exc


def test_every_ccxt_failure_maps_to_not_sent_rejected_or_unknown():
    ccxt = pytest.importorskip("ccxt")
    from tradebook.errors import NotSentError, OutcomeUnknownError, VenueRejectedError

    def mapped(exc):
        return cm.venue_error_from_ccxt(exc, action="submit tb1")

    body = 'binance {"code":%d,"msg":"%s"}'
    rejected = {
        ccxt.InvalidOrder(body % (-2010, "Duplicate order sent.")): ("duplicate_client_id", "-2010"),
        ccxt.InsufficientFunds("binance Account has insufficient balance for requested action."):
            ("insufficient_funds", None),
        ccxt.BadRequest(body % (-1013, "Filter failure: NOTIONAL")): ("min_notional", "-1013"),
        ccxt.InvalidOrder(body % (-1013, "Filter failure: LOT_SIZE")): ("invalid_quantity", "-1013"),
        ccxt.InvalidOrder(body % (-1013, "Filter failure: PRICE_FILTER")): ("invalid_price", "-1013"),
        ccxt.OrderNotFound(body % (-2011, "Unknown order sent.")): ("unknown_order", "-2011"),
        ccxt.MarketClosed(body % (-2010, "Market is closed.")): ("market_closed", "-2010"),
        ccxt.BadSymbol(body % (-1121, "Invalid symbol.")): ("unknown_instrument", "-1121"),
        ccxt.DDoSProtection(body % (-1003, "Too many requests")): ("rate_limited", "-1003"),
        ccxt.AuthenticationError(body % (-1022, "Signature for this request is not valid.")): ("venue_other",
                                                                                                "-1022"),
    }
    for exc, (code, venue_code) in rejected.items():
        error = mapped(exc)
        assert isinstance(error, VenueRejectedError), exc
        assert (error.code, error.venue_code) == (code, venue_code), exc
    for exc in (ccxt.RequestTimeout("binance POST"), ccxt.NetworkError("dropped"),
                ccxt.ExchangeNotAvailable("binance POST (server disconnected)"), ccxt.BadResponse("garbled"),
                RuntimeError("not from ccxt")):
        assert isinstance(mapped(exc), OutcomeUnknownError), exc
    for exc in (ccxt.InvalidNonce(body % (-1021, "Timestamp outside of the recvWindow")), _connect_refused()):
        assert isinstance(mapped(exc), NotSentError), exc
    code_from_reply = cm.venue_error_from_ccxt(ccxt.InsufficientFunds("binance Account has insufficient balance"),
                                               action="submit tb1", venue_code="-2010")
    assert code_from_reply.venue_code == "-2010"


def test_secrets_and_signatures_never_reach_the_message():
    ccxt = pytest.importorskip("ccxt")
    exc = ccxt.AuthenticationError('binance GET http://x/api/v3/account?timestamp=1&signature=ab12cd34 '
                                   '{"code":-2014,"msg":"API-key format invalid."} key=Key0123456789abcdef')
    text = str(cm.venue_error_from_ccxt(exc, action="balance", secrets=("Key0123456789abcdef",)))
    assert "ab12cd34" not in text and "Key0123456789abcdef" not in text and "signature=<hidden>" in text


def test_binance_reject_reasons_on_an_order_map_to_reject_codes():
    from tradebook.model.orders import RejectCode

    assert cm.reject_code_from_binance_reason("INSUFFICIENT_BALANCE") is RejectCode.INSUFFICIENT_FUNDS
    assert cm.reject_code_from_binance_reason("DUPLICATE_ORDER") is RejectCode.DUPLICATE_CLIENT_ID
    assert cm.reject_code_from_binance_reason("PRICE_QTY_EXCEED_HARD_LIMITS") is RejectCode.INVALID_PRICE
    assert cm.reject_code_from_binance_reason("MARKET_CLOSED") is RejectCode.MARKET_CLOSED
    # no reason, Binance's 'NONE' or one not listed: the venue's other reason, never an error
    for reason in (None, "NONE", "SOMETHING_NEW"):
        assert cm.reject_code_from_binance_reason(reason) is RejectCode.VENUE_OTHER
