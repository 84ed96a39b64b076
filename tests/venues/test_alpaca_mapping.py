"""Alpaca's vocabulary to tradebook's and back: every value of alpaca-py's enums, every tradebook value."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tradebook.errors import VenueMappingError
from tradebook.model.instruments import Side
from tradebook.model.orders import (
    Order, OrderEvent, OrderEventType, OrderIntent, OrderStatus, OrderType, TimeInForce, client_order_id_for,
)
from tradebook.venues import alpaca_mapping as am

alpaca_enums = pytest.importorskip("alpaca.trading.enums")
from alpaca.trading.models import TradeActivity, TradeUpdate  # noqa: E402

# trade_updates events Alpaca documents that alpaca-py's TradeEvent enum does not list
EXTRA_EVENTS = ["order_cancel_rejected", "order_replace_rejected", "done_for_day", "calculated", "stopped",
                "suspended", "held", "trade_bust", "trade_correct"]


@pytest.mark.parametrize("ours", list(OrderType))
def test_every_order_type_round_trips(ours):
    theirs = am.order_type_to_alpaca(ours)
    assert alpaca_enums.OrderType(theirs)  # a value alpaca-py knows
    assert am.order_type_from_alpaca(alpaca_enums.OrderType(theirs)) is ours
    assert am.order_type_from_alpaca(theirs) is ours


@pytest.mark.parametrize("theirs", list(alpaca_enums.OrderType))
def test_every_alpaca_order_type_maps_back_or_is_refused_by_name(theirs):
    if theirs is alpaca_enums.OrderType.TRAILING_STOP:
        with pytest.raises(VenueMappingError, match="trailing_stop.*no trailing stops"):
            am.order_type_from_alpaca(theirs)
    else:
        assert am.order_type_to_alpaca(am.order_type_from_alpaca(theirs)) == theirs.value


@pytest.mark.parametrize("ours", list(Side))
def test_sides_round_trip(ours):
    assert am.side_from_alpaca(alpaca_enums.OrderSide(am.side_to_alpaca(ours))) is ours


def test_every_alpaca_side_maps():
    assert {am.side_from_alpaca(s) for s in alpaca_enums.OrderSide} == set(Side)


@pytest.mark.parametrize("ours", list(TimeInForce))
def test_every_time_in_force_round_trips(ours):
    theirs = alpaca_enums.TimeInForce(am.time_in_force_to_alpaca(ours))
    assert am.time_in_force_from_alpaca(theirs) is ours


@pytest.mark.parametrize("theirs", list(alpaca_enums.TimeInForce))
def test_every_alpaca_time_in_force_maps_back_or_is_refused_by_name(theirs):
    if theirs.value in ("opg", "cls"):
        with pytest.raises(VenueMappingError, match=f"'{theirs.value}'.*not modelled"):
            am.time_in_force_from_alpaca(theirs)
    else:
        assert am.time_in_force_to_alpaca(am.time_in_force_from_alpaca(theirs)) == theirs.value


# tradebook's own states (by value: 'unresolved' is the order path's, when it cannot tell whether a venue holds
# an order), which no venue reports and none is told
OWN_STATUSES = {"pending": "has not left tradebook", "unresolved": "reconciliation asks Alpaca"}

WORKING = {"new", "accepted", "pending_new", "accepted_for_bidding", "pending_review", "held", "stopped",
           "suspended", "calculated", "done_for_day", "replaced"}


@pytest.mark.parametrize("theirs", list(alpaca_enums.OrderStatus))
def test_every_alpaca_status_maps(theirs):
    none = am.order_status_from_alpaca(theirs, filled_qty=Decimal(0), quantity=Decimal(10))
    some = am.order_status_from_alpaca(theirs, filled_qty=Decimal(4), quantity=Decimal(10))
    done = am.order_status_from_alpaca(theirs.value, filled_qty=Decimal(10), quantity=Decimal(10))
    if theirs.value in WORKING:
        assert (none, some, done) == (OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED)
    else:
        assert none == some == done  # a status that says it all
        assert am.order_status_to_alpaca(none) == theirs.value


@pytest.mark.parametrize("ours", list(OrderStatus))
def test_every_tradebook_status_maps_to_alpaca_and_back(ours):
    if ours.value in OWN_STATUSES:
        with pytest.raises(VenueMappingError, match=OWN_STATUSES[ours.value]):
            am.order_status_to_alpaca(ours)
        return
    theirs = alpaca_enums.OrderStatus(am.order_status_to_alpaca(ours))
    filled = {OrderStatus.PARTIALLY_FILLED: Decimal(4), OrderStatus.FILLED: Decimal(10)}.get(ours, Decimal(0))
    back = am.order_status_from_alpaca(theirs, filled_qty=filled, quantity=Decimal(10))
    # 'submitted' (sent, unanswered) reads back as the working status Alpaca's pending_new is
    assert back == (OrderStatus.ACCEPTED if ours is OrderStatus.SUBMITTED else ours)


@pytest.mark.parametrize("theirs", [e.value for e in alpaca_enums.TradeEvent] + EXTRA_EVENTS)
def test_every_trade_event_maps_or_is_refused_by_name(theirs):
    if theirs in ("trade_bust", "trade_correct"):
        with pytest.raises(VenueMappingError, match="reconcile"):
            am.event_from_alpaca(theirs)
        return
    ours = am.event_from_alpaca(theirs)
    if ours is not None:
        back = am.event_to_alpaca(ours, complete=theirs != "partial_fill")
        assert back == theirs or (ours is OrderEventType.ACCEPTED and back == "new")


@pytest.mark.parametrize("ours", list(OrderEventType))
def test_every_tradebook_event_maps_to_alpaca_and_back(ours):
    if ours.value in ("submitted", "outcome_unknown"):  # our own steps: no venue says them
        with pytest.raises(VenueMappingError, match="tradebook's own step"):
            am.event_to_alpaca(ours)
        return
    theirs = am.event_to_alpaca(ours)
    if ours in (OrderEventType.CANCEL_REQUESTED, OrderEventType.REPLACE_REQUESTED):
        assert am.event_from_alpaca(theirs) is None  # Alpaca's pending_* acknowledge our request: no step
    else:
        assert am.event_from_alpaca(theirs) is ours


@pytest.mark.parametrize("call, value", [
    (am.order_type_from_alpaca, "iceberg"), (am.side_from_alpaca, "short"),
    (am.time_in_force_from_alpaca, "gtd"), (am.order_status_from_alpaca, "on_hold"),
    (am.event_from_alpaca, "exploded"),
])
def test_unknown_alpaca_values_name_the_value_and_the_choices(call, value):
    with pytest.raises(VenueMappingError, match=f"unknown Alpaca .*'{value}'; expected one of"):
        call(value)


@pytest.mark.parametrize("call", [am.order_type_to_alpaca, am.side_to_alpaca, am.time_in_force_to_alpaca,
                                  am.order_status_to_alpaca])
def test_values_that_are_not_tradebook_words_are_refused(call):
    with pytest.raises(VenueMappingError, match="not a tradebook"):
        call("trailing")


def test_order_requests_carry_the_fields_alpaca_py_sends():
    limit = am.order_request(symbol="SPY", side=Side.BUY, quantity=Decimal("2.5"), order_type=OrderType.LIMIT,
                             time_in_force=TimeInForce.DAY, client_order_id="tb1", limit_price=Decimal("450.01"),
                             extended_hours=True)
    assert limit.to_request_fields() == {"symbol": "SPY", "qty": 2.5, "side": "buy", "type": "limit",
                                         "time_in_force": "day", "client_order_id": "tb1", "limit_price": 450.01,
                                         "extended_hours": True}
    stop_limit = am.order_request(symbol="SPY", side=Side.SELL, quantity=Decimal(3), order_type=OrderType.STOP_LIMIT,
                                  time_in_force=TimeInForce.GTC, client_order_id="tb2",
                                  limit_price=Decimal("439.5"), stop_price=Decimal("440"))
    fields = stop_limit.to_request_fields()
    assert (fields["type"], fields["stop_price"], fields["limit_price"]) == ("stop_limit", 440.0, 439.5)
    with pytest.raises(VenueMappingError, match="needs limit_price"):
        am.order_request(symbol="SPY", side=Side.BUY, quantity=Decimal(1), order_type=OrderType.LIMIT,
                         time_in_force=TimeInForce.DAY, client_order_id="tb3")
    with pytest.raises(VenueMappingError, match="takes no stop_price"):
        am.order_request(symbol="SPY", side=Side.BUY, quantity=Decimal(1), order_type=OrderType.MARKET,
                         time_in_force=TimeInForce.DAY, client_order_id="tb4", stop_price=Decimal(1))


def test_trade_updates_from_the_sandbox_drive_a_tradebook_order_to_filled():
    from alpaca.trading.client import TradingClient

    from tradebook.sandbox.alpaca import DEFAULT_KEY, DEFAULT_SECRET, AlpacaFault, AlpacaSandbox

    intent = OrderIntent("i1", "s1", "acct", "SPY.ARCX", Side.BUY, Decimal(10), OrderType.LIMIT, TimeInForce.GTC,
                         ts_ns=1, limit_price=Decimal("449.5"))
    cid = client_order_id_for("i1", "acct")
    with AlpacaSandbox(max_fill_qty="4") as venue:
        venue.set_price("SPY", "450.00", "450.02")
        client = TradingClient(DEFAULT_KEY, DEFAULT_SECRET, url_override=venue.base_url)
        request = am.order_request(symbol="SPY", side=intent.side, quantity=intent.quantity,
                                   order_type=intent.order_type, time_in_force=intent.time_in_force,
                                   client_order_id=cid, limit_price=intent.limit_price)
        order_id = str(client.submit_order(request).id)
        venue.fault(AlpacaFault.DUPLICATE_FILL)
        for ask in ("449.45", "449.40", "449.35"):
            venue.set_price("SPY", "449.30", ask)
        venue.call(_settle())
        messages = list(venue.sent)
        activities = client.get("/account/activities/FILL", {"direction": "asc"})
    order = Order(intent).apply(OrderEvent(cid, OrderEventType.SUBMITTED, 1, 1))
    events = [am.order_event_from_trade_update(TradeUpdate(**m["data"]), instrument_id="SPY.ARCX", ts_init_ns=2)
              for m in messages]
    assert [e.event_type for e in events] == [OrderEventType.ACCEPTED] + [OrderEventType.FILLED] * 4
    assert events[1].fill.fill_id == events[2].fill.fill_id  # the duplicate message: one execution id
    for event in events:
        order = order.apply(event)
    assert order.status is OrderStatus.FILLED and order.filled_qty == 10 and order.venue_order_id == order_id
    assert order.avg_price == Decimal("449.5") and len(order.fill_ids) == 3
    assert events[1].fill.price == Decimal("449.5") and events[1].fill.quantity == 4
    assert events[1].ts_event_ns > 1_700_000_000 * 10**9
    # the REST fallback: each FILL activity is the same execution, so nothing is counted twice
    recovered = [am.fill_from_activity(TradeActivity(**a), client_order_id=cid, instrument_id="SPY.ARCX",
                                       ts_init_ns=3) for a in activities]
    assert [f.fill_id for f in recovered] == [e.fill.fill_id for e in events[2:]]
    assert [(f.quantity, f.price) for f in recovered] == [(e.fill.quantity, e.fill.price) for e in events[2:]]
    assert [f.ts_event_ns for f in recovered] == [e.fill.ts_event_ns // 1000 * 1000 for e in events[2:]]
    for fill in recovered:
        assert order.apply(OrderEvent(cid, OrderEventType.FILLED, fill.ts_event_ns, 3, fill=fill)) is order
    assert am.fill_from_activity(activities[0], client_order_id=cid, instrument_id="SPY.ARCX",
                                 ts_init_ns=3) == recovered[0]  # the raw dict too
    with pytest.raises(VenueMappingError, match="not a FILL"):
        am.fill_from_activity({**activities[0], "activity_type": "DIV"}, client_order_id=cid,
                              instrument_id="SPY.ARCX", ts_init_ns=3)


async def _settle():
    import asyncio

    await asyncio.sleep(0.05)  # let the broadcasts already scheduled on the server's loop run


# -- refusals, exchanges, replacement ids ----------------------------------------------------------------
@pytest.mark.parametrize(("status", "code", "message", "expected"), [
    (422, 40010001, "client_order_id must be unique", "duplicate_client_id"),
    (403, 40310000, "insufficient buying power", "insufficient_funds"),
    (403, 40310000, "forbidden", "insufficient_funds"),
    (422, 40010001, 'asset "NOPE" not found', "unknown_instrument"),
    (422, 42210000, 'order is already in "filled" state', "too_late_to_cancel"),
    (422, 42210000, "fractional orders must be DAY orders", "unsupported_order"),
    (422, 42210000, "extended hours order must be DAY limit orders", "unsupported_order"),
    (422, 40010001, "qty must be > 0", "invalid_quantity"),
    (422, 40010001, "limit_price is required for limit orders", "invalid_price"),
    (429, 42910000, "rate limit exceeded", "rate_limited"),
    (404, 40410000, "order not found", "unknown_order"),
    (422, 40010001, "something new", "venue_other"),
])
def test_alpaca_refusals_map_to_reject_codes(status, code, message, expected):
    from tradebook.execution.oms import RejectCode

    ours = am.reject_code_from_alpaca(status, code, message)
    assert ours == expected and RejectCode(ours)  # every value is a RejectCode member


def test_exchanges_map_to_mics_and_unknown_ones_are_refused_by_name():
    assert am.mic_from_alpaca("ARCA") == "ARCX" and am.mic_from_alpaca(alpaca_enums.AssetExchange.NASDAQ) == "XNAS"
    with pytest.raises(VenueMappingError, match="'MOON'"):
        am.mic_from_alpaca("MOON")


def test_replacement_client_ids_name_the_tradebook_order():
    coid = client_order_id_for("i-1", "acct")
    second = am.replacement_client_order_id(am.replacement_client_order_id(coid, 1), 2)
    assert second == coid + ".r2" and am.root_client_order_id(second) == coid and am.replacement_number(second) == 2
    assert am.root_client_order_id(coid) == coid and am.replacement_number(coid) == 0
    assert am.root_client_order_id("user.rx") == "user.rx"
    with pytest.raises(VenueMappingError):
        am.replacement_client_order_id(coid, 0)
