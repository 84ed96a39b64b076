"""The Binance sandbox driven by the real ccxt binance client: markets, orders, trades, balances and faults."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from tradebook.sandbox.binance import BinanceFault, BinanceSandbox

ccxt = pytest.importorskip("ccxt")

SYMBOL = "BTC/USDT"


@pytest.fixture
def venue():
    with BinanceSandbox(balances={"USDT": "100000", "BTC": "1"}) as server:
        server.set_price("BTCUSDT", "60000.00", "60000.01")
        yield server


def make_exchange(venue: BinanceSandbox, **config):
    exchange = ccxt.binance({"apiKey": venue.key, "secret": venue.secret, "timeout": 5000,
                             "options": {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False,
                                         "fetchMargins": False}, **config})
    exchange.urls["api"] = venue.ccxt_urls(exchange.urls["api"])
    exchange.load_markets()
    return exchange


@pytest.fixture
def exchange(venue):
    return make_exchange(venue)


def by_client_id(exchange, cid):
    return exchange.fetch_order(None, SYMBOL, params={"clientOrderId": cid})


# -- the ordinary path ------------------------------------------------------------------------------
def test_load_markets_reads_only_exchange_info_and_its_filters(venue, exchange):
    assert list(venue.requests) == [("GET", "/api/v3/exchangeInfo")]
    market = exchange.market(SYMBOL)
    assert (market["base"], market["quote"], market["spot"]) == ("BTC", "USDT", True)
    assert market["precision"]["price"] == 0.01 and market["precision"]["amount"] == 0.00001
    assert market["limits"]["cost"]["min"] == 5 and market["limits"]["amount"]["min"] == 0.00001
    assert abs(exchange.fetch_time() - venue.server_time_ms()) < 5000


def test_market_buy_fills_at_the_ask_with_fee_and_trades(venue, exchange):
    order = exchange.create_order(SYMBOL, "market", "buy", 0.01, params={"clientOrderId": "tb-mkt"})
    assert order["status"] == "closed" and order["clientOrderId"] == "tb-mkt"
    assert order["filled"] == 0.01 and order["average"] == 60000.01
    assert order["fee"] == {"currency": "USDT", "cost": pytest.approx(0.6000001)}
    [trade] = exchange.fetch_my_trades(SYMBOL)
    assert trade["order"] == order["id"] and trade["side"] == "buy" and trade["takerOrMaker"] == "taker"
    balance = exchange.fetch_balance()
    assert balance["total"]["BTC"] == pytest.approx(1.01)
    assert balance["total"]["USDT"] == pytest.approx(100000 - 600.0001 - 0.6000001)


def test_limit_rests_locks_balance_then_fills_at_its_limit(venue, exchange):
    order = exchange.create_order(SYMBOL, "limit", "buy", 0.1, 59000, params={"clientOrderId": "tb-lim"})
    assert order["status"] == "open" and order["timeInForce"] == "GTC"
    assert [o["clientOrderId"] for o in exchange.fetch_open_orders(SYMBOL)] == ["tb-lim"]
    assert exchange.fetch_balance()["used"]["USDT"] == pytest.approx(5900)
    venue.set_price("BTCUSDT", "58900.00", "58950.00")
    done = by_client_id(exchange, "tb-lim")
    assert done["status"] == "closed" and done["average"] == 59000 and done["filled"] == 0.1
    assert exchange.fetch_open_orders(SYMBOL) == []
    [trade] = exchange.fetch_my_trades(SYMBOL)
    assert trade["takerOrMaker"] == "maker" and trade["price"] == 59000


def test_partial_fills_one_per_price_update(venue, exchange):
    venue.book.max_fill_qty = Decimal("0.04")
    order = exchange.create_order(SYMBOL, "market", "sell", 0.1, params={"clientOrderId": "tb-part"})
    assert order["status"] == "open" and order["filled"] == 0.04 and order["info"]["status"] == "PARTIALLY_FILLED"
    venue.set_price("BTCUSDT", "60010.00", "60010.01")
    venue.set_price("BTCUSDT", "60020.00", "60020.01")
    done = by_client_id(exchange, "tb-part")
    assert done["status"] == "closed" and done["filled"] == 0.1
    assert [t["amount"] for t in exchange.fetch_my_trades(SYMBOL)] == [0.04, 0.04, 0.02]


def test_stop_loss_waits_for_its_trigger(venue, exchange):
    order = exchange.create_order(SYMBOL, "market", "sell", 0.01, params={"clientOrderId": "tb-stop",
                                                                          "stopLossPrice": 59500})
    assert order["info"]["type"] == "STOP_LOSS" and order["status"] == "open"
    venue.set_price("BTCUSDT", "59600.00", "59600.01")
    assert by_client_id(exchange, "tb-stop")["status"] == "open"
    venue.set_price("BTCUSDT", "59400.00", "59400.01")
    done = by_client_id(exchange, "tb-stop")
    assert done["status"] == "closed" and done["average"] == 59400 and done["triggerPrice"] == 59500


def test_ioc_limit_that_cannot_fill_expires(venue, exchange):
    order = exchange.create_order(SYMBOL, "limit", "buy", 0.01, 59000, params={"clientOrderId": "tb-ioc",
                                                                               "timeInForce": "IOC"})
    assert order["status"] == "expired" and order["filled"] == 0


def test_cancel_then_query(venue, exchange):
    order = exchange.create_order(SYMBOL, "limit", "buy", 0.01, 59000, params={"clientOrderId": "tb-cxl"})
    cancelled = exchange.cancel_order(order["id"], SYMBOL)
    assert cancelled["status"] == "canceled" and cancelled["clientOrderId"] != "tb-cxl"
    assert cancelled["info"]["origClientOrderId"] == "tb-cxl"
    assert by_client_id(exchange, "tb-cxl")["status"] == "canceled"
    with pytest.raises(ccxt.OrderNotFound):  # -2011: nothing open to cancel
        exchange.cancel_order(None, SYMBOL, params={"clientOrderId": "tb-cxl"})


def test_unknown_order_is_order_not_found(exchange):
    with pytest.raises(ccxt.OrderNotFound):  # -2013
        by_client_id(exchange, "never-sent")


def test_filters_and_balance_are_checked_as_binance_does(venue, exchange):
    with pytest.raises(ccxt.BadRequest, match="NOTIONAL"):
        exchange.create_order(SYMBOL, "limit", "buy", 0.00001, 59000, params={"clientOrderId": "tb-small"})
    with pytest.raises(ccxt.InvalidOrder, match="LOT_SIZE"):  # ccxt rounds amounts: send the raw request
        exchange.privatePostOrder({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
                                   "quantity": "0.000015", "price": "59000", "newClientOrderId": "tb-lot"})
    with pytest.raises(ccxt.InvalidOrder, match="PRICE_FILTER"):
        exchange.privatePostOrder({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
                                   "quantity": "0.01", "price": "59000.005", "newClientOrderId": "tb-tick"})
    with pytest.raises(ccxt.InsufficientFunds):
        exchange.create_order(SYMBOL, "market", "sell", 2, params={"clientOrderId": "tb-short"})
    assert exchange.fetch_open_orders(SYMBOL) == [] and exchange.fetch_my_trades(SYMBOL) == []


def test_a_bad_signature_or_key_is_refused(venue):
    with pytest.raises(ccxt.AuthenticationError):
        make_exchange(venue, secret="wrong").fetch_balance()
    with pytest.raises(ccxt.AuthenticationError):
        make_exchange(venue, apiKey="wrong").fetch_balance()


# -- faults --------------------------------------------------------------------------------------
def test_a_resend_while_the_order_is_open_is_duplicate_2010_invalid_order(venue, exchange):
    exchange.create_order(SYMBOL, "limit", "buy", 0.01, 59000, params={"clientOrderId": "tb-dup"})
    with pytest.raises(ccxt.InvalidOrder, match="Duplicate order sent"):
        exchange.create_order(SYMBOL, "limit", "buy", 0.01, 59000, params={"clientOrderId": "tb-dup"})
    assert len(exchange.fetch_open_orders(SYMBOL)) == 1


def test_an_accepted_order_whose_reply_never_comes_times_out_and_is_found(venue):
    exchange = make_exchange(venue, timeout=300)
    venue.fault(BinanceFault.HANG_AFTER_ACCEPT)
    with pytest.raises(ccxt.RequestTimeout):
        exchange.create_order(SYMBOL, "limit", "buy", 0.01, 59000, params={"clientOrderId": "tb-hang"})
    found = by_client_id(exchange, "tb-hang")
    assert found["status"] == "open"
    with pytest.raises(ccxt.InvalidOrder, match="Duplicate"):  # a blind resend would be refused, not doubled
        exchange.create_order(SYMBOL, "limit", "buy", 0.01, 59000, params={"clientOrderId": "tb-hang"})


def test_a_dropped_reply_raises_network_error_and_the_fill_is_in_my_trades(venue, exchange):
    venue.fault(BinanceFault.DROP_AFTER_ACCEPT)
    with pytest.raises(ccxt.NetworkError):
        exchange.create_order(SYMBOL, "market", "buy", 0.02, params={"clientOrderId": "tb-drop"})
    assert venue.requests.count(("POST", "/api/v3/order")) == 1
    found = by_client_id(exchange, "tb-drop")
    assert found["status"] == "closed" and found["filled"] == 0.02
    assert [t["order"] for t in exchange.fetch_my_trades(SYMBOL)] == [found["id"]]


def test_429_is_ddos_protection_with_retry_after_and_not_retried(venue, exchange):
    venue.fault(BinanceFault.RATE_LIMIT, retry_after=3)
    with pytest.raises(ccxt.DDoSProtection):
        exchange.create_order(SYMBOL, "market", "buy", 0.01, params={"clientOrderId": "tb-429"})
    assert exchange.last_response_headers["Retry-After"] == "3"
    assert exchange.fetch_open_orders(SYMBOL) == [] and exchange.fetch_my_trades(SYMBOL) == []
    assert exchange.create_order(SYMBOL, "market", "buy", 0.01, params={"clientOrderId": "tb-429"})["filled"] == 0.01


def test_a_burst_of_rejections(venue, exchange):
    venue.fault(BinanceFault.REJECT, times=3)
    for n in range(3):
        with pytest.raises(ccxt.InsufficientFunds):
            exchange.create_order(SYMBOL, "market", "buy", 0.01, params={"clientOrderId": f"tb-rej-{n}"})
    assert exchange.create_order(SYMBOL, "market", "buy", 0.01, params={"clientOrderId": "tb-ok"})["status"] == "closed"


def test_cancel_of_an_order_that_just_filled_is_order_not_found_though_it_is_filled(venue, exchange):
    order = exchange.create_order(SYMBOL, "limit", "sell", 0.05, 60500, params={"clientOrderId": "tb-race"})
    venue.fault(BinanceFault.FILL_ON_CANCEL)
    with pytest.raises(ccxt.OrderNotFound):  # -2011 "Unknown order sent."
        exchange.cancel_order(order["id"], SYMBOL)
    assert by_client_id(exchange, "tb-race")["status"] == "closed"  # fetch before believing it gone
    assert exchange.fetch_balance()["total"]["BTC"] == pytest.approx(0.95)


def test_clock_skew_beyond_recv_window_is_invalid_nonce(venue, exchange):
    venue.clock_offset_ms = -10_000  # the server's clock 10 s behind ours: our timestamps look ahead
    with pytest.raises(ccxt.InvalidNonce):
        exchange.fetch_balance()
    venue.clock_offset_ms = 10_000  # 10 s ahead: our timestamps older than recvWindow (5 s)
    with pytest.raises(ccxt.InvalidNonce):
        exchange.fetch_balance()
    venue.clock_offset_ms = 0
    assert exchange.fetch_balance()["total"]["BTC"] == 1


def test_restart_keeps_orders_and_answers_again_on_the_same_port(venue, exchange):
    order = exchange.create_order(SYMBOL, "limit", "buy", 0.01, 59000, params={"clientOrderId": "tb-restart"})
    port = venue.port
    venue.restart()
    assert venue.port == port and venue.session == 2
    assert exchange.fetch_order(order["id"], SYMBOL)["status"] == "open"


def test_book_ticker_gives_the_touch_of_each_priced_symbol(venue, exchange):
    tickers = exchange.fetch_bids_asks(["BTC/USDT"])
    assert (tickers["BTC/USDT"]["bid"], tickers["BTC/USDT"]["ask"]) == (60000.0, 60000.01)
    assert list(exchange.fetch_bids_asks()) == ["BTC/USDT"]  # ETHUSDT has no price yet
    with pytest.raises(ccxt.BadSymbol):
        exchange.publicGetTickerBookTicker({"symbol": "DOGEUSDT"})


def test_funding_rate_of_a_perpetual_from_premium_index(venue, exchange):
    venue.set_funding("BTCUSDT", "0.0001", mark_price="60001.5")
    reply = exchange.fapiPublicGetPremiumIndex({"symbol": "BTCUSDT"})
    rate = exchange.parse_funding_rate(reply)
    assert rate["fundingRate"] == 0.0001 and rate["markPrice"] == 60001.5
    assert rate["fundingTimestamp"] % 28_800_000 == 0


# -- the user data stream (WebSocket API) through ccxt.pro ------------------------------------------------
async def _pro_exchange(venue):
    import ccxt.pro

    exchange = ccxt.pro.binance({"apiKey": venue.key, "secret": venue.secret, "timeout": 5000,
                                 "options": {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False,
                                             "fetchMargins": False}})
    exchange.urls["api"] = venue.ccxt_urls(exchange.urls["api"])
    await exchange.load_markets()
    return exchange


async def _subscribed(venue, count: int) -> None:
    for _ in range(500):
        if venue.subscribes >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the user data stream had {venue.subscribes} subscriptions after 5 s, expected {count}")


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


async def _after(exchange, watch, action):
    """Start a watch, do the action, return what the watch gives (the watch waits before the action runs)."""
    watching = asyncio.create_task(watch())
    await asyncio.sleep(0.05)
    result = action()
    if asyncio.iscoroutine(result):
        await result
    return await asyncio.wait_for(watching, 5)


def test_the_user_data_stream_delivers_each_order_update(venue):
    venue.book.max_fill_qty = Decimal("0.04")

    async def scenario():
        exchange = await _pro_exchange(venue)
        try:
            updates = []
            watch = lambda: exchange.watch_orders(SYMBOL)  # noqa: E731
            actions = [lambda: exchange.create_order(SYMBOL, "limit", "buy", 0.1, 59000,
                                                     params={"clientOrderId": "tb-ws"})]
            actions += [lambda: venue.set_price("BTCUSDT", "58900.00", "58950.00")] * 3
            for action in actions:
                [order] = await _after(exchange, watch, action)
                updates.append((order["info"]["x"], order["status"], order["filled"], order["clientOrderId"]))
            return updates
        finally:
            await exchange.close()

    assert run(scenario()) == [("NEW", "open", 0.0, "tb-ws"), ("TRADE", "open", 0.04, "tb-ws"),
                               ("TRADE", "open", 0.08, "tb-ws"), ("TRADE", "closed", 0.1, "tb-ws")]
    assert [r["l"] for r in list(venue.sent)[1:]] == ["0.04000000", "0.04000000", "0.02000000"]


def test_a_cancel_reaches_the_stream(venue, exchange):
    order = exchange.create_order(SYMBOL, "limit", "buy", 0.01, 59000, params={"clientOrderId": "tb-ws-cxl"})

    async def scenario():
        pro = await _pro_exchange(venue)
        try:
            return await _after(pro, lambda: pro.watch_orders(SYMBOL), lambda: pro.cancel_order(order["id"], SYMBOL))
        finally:
            await pro.close()

    [cancelled] = run(scenario())
    assert (cancelled["info"]["x"], cancelled["status"], cancelled["info"]["C"]) == ("CANCELED", "canceled",
                                                                                     "tb-ws-cxl")


def test_a_duplicate_fill_on_the_stream_is_kept_once_by_ccxt_trade_cache(venue):
    venue.fault(BinanceFault.DUPLICATE_FILL)

    async def scenario():
        exchange = await _pro_exchange(venue)
        try:
            await _after(exchange, lambda: exchange.watch_my_trades(SYMBOL),
                         lambda: exchange.create_order(SYMBOL, "market", "buy", 0.01,
                                                       params={"clientOrderId": "tb-twice"}))
            await asyncio.sleep(0.2)  # the second copy lands in ccxt's trade cache
            return list(exchange.myTrades)
        finally:
            await exchange.close()

    seen = run(scenario())
    assert [r["x"] for r in venue.sent] == ["NEW", "TRADE", "TRADE"]  # sent twice, same trade id
    assert venue.sent[1] == venue.sent[2]
    assert [t["id"] for t in seen] == ["1"]  # ccxt.pro's trade cache is keyed by trade id
    assert venue.positions() == {"BTCUSDT": Decimal("1.01")}  # the venue booked it once


def test_a_stream_drop_with_a_fill_in_flight_loses_it_on_the_stream_not_in_rest(venue, exchange):
    from ccxt.base.errors import NetworkError

    async def scenario():
        pro = await _pro_exchange(venue)
        try:
            watching = asyncio.create_task(pro.watch_my_trades(SYMBOL))
            await _subscribed(venue, 1)
            await pro.create_order(SYMBOL, "limit", "buy", 0.01, 59000, params={"clientOrderId": "tb-gap"})
            venue.fault(BinanceFault.DROP_STREAM_BEFORE_FILL)
            venue.set_price("BTCUSDT", "58900.00", "58950.00")
            with pytest.raises(NetworkError):  # ccxt.pro does not resubscribe by itself: the watch fails
                await asyncio.wait_for(watching, 5)
            again = asyncio.create_task(pro.watch_my_trades(SYMBOL))
            await _subscribed(venue, 2)
            await pro.create_order(SYMBOL, "market", "buy", 0.01, params={"clientOrderId": "tb-after"})
            return await asyncio.wait_for(again, 5)
        finally:
            await pro.close()

    after = run(scenario())
    assert [t["order"] for t in after] == ["2"]  # only what came after the resubscription
    assert [t["order"] for t in exchange.fetch_my_trades(SYMBOL)] == ["1", "2"]  # REST has the lost fill


def test_a_bad_signature_is_refused_on_the_stream(venue):
    async def scenario():
        exchange = await _pro_exchange(venue)
        exchange.secret = "wrong"
        try:
            await asyncio.wait_for(exchange.watch_orders(SYMBOL), 5)
        finally:
            await exchange.close()

    # ccxt 4.5.90 refuses, then its own clean-up fails: the AuthenticationError arrives as the context of a KeyError
    with pytest.raises((ccxt.AuthenticationError, KeyError)) as info:
        run(scenario())
    refusal = info.value if isinstance(info.value, ccxt.AuthenticationError) else info.value.__context__
    assert isinstance(refusal, ccxt.AuthenticationError) and "-1022" in str(refusal)
    assert venue.subscribes == 0
