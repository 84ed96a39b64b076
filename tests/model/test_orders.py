"""Orders: the derived client order id and applying events."""

from __future__ import annotations

import dataclasses
import inspect
from decimal import Decimal as D

import pytest

from tradebook.errors import OrderError
from tradebook.model.instruments import Side
from tradebook.model.orders import (
    Fill,
    IllegalTransitionError,
    Order,
    OrderEvent,
    OrderEventType,
    OrderIntent,
    OrderStatus,
    OrderType,
    TimeInForce,
    client_order_id_for,
)

E = OrderEventType


def make_intent(intent_id: str = "mom:s1", quantity: str = "3") -> OrderIntent:
    return OrderIntent(intent_id, "mom", "paper", "SPY.ARCX", Side.BUY, D(quantity), OrderType.LIMIT, TimeInForce.DAY,
                       1_000, limit_price=D("450.26"))


def event(order: Order, kind: OrderEventType, ts: int, **kwargs) -> OrderEvent:
    return OrderEvent(order.client_order_id, kind, ts, ts, **kwargs)


def a_fill(fill_id: str, order: Order, qty: str, price: str, fee: str = "0.01") -> Fill:
    return Fill(fill_id, order.client_order_id, "SPY.ARCX", Side.BUY, D(qty), D(price), D(fee), "maker", 5, 5)


def test_client_order_id_derives_from_the_intent_and_follows_the_order():
    intent = make_intent()
    assert intent.client_order_id == client_order_id_for("mom:s1", intent.account_id)
    assert len(intent.client_order_id) == 32 and intent.client_order_id.startswith("tb")
    order = Order(intent)
    submitted = order.apply(event(order, E.SUBMITTED, 2))
    assert order.client_order_id == submitted.client_order_id == intent.client_order_id
    other = dataclasses.replace(intent, intent_id="mom:s2")
    assert other.client_order_id == client_order_id_for("mom:s2", intent.account_id) != intent.client_order_id
    # scoped by account: another account (another paper run) has its own id for the same intent id
    elsewhere = dataclasses.replace(intent, account_id=intent.account_id + "-2")
    assert elsewhere.client_order_id == client_order_id_for("mom:s1", intent.account_id + "-2") != intent.client_order_id
    assert dataclasses.replace(submitted, intent=other).client_order_id == other.client_order_id
    assert dataclasses.replace(intent) == intent and "client_order_id" not in repr(intent)  # not a field


def test_apply_fills_average_price_and_ignores_a_repeated_fill():
    order = Order(make_intent())
    order = order.apply(event(order, E.SUBMITTED, 2))
    order = order.apply(event(order, E.ACCEPTED, 3, venue_order_id="v1"))
    assert (order.status, order.venue_order_id, order.last_ts_ns) == (OrderStatus.ACCEPTED, "v1", 3)
    first = order.apply(event(order, E.FILLED, 4, fill=a_fill("f1", order, "1", "450.20")))
    assert (first.status, first.filled_qty, first.avg_price, first.fees) == \
        (OrderStatus.PARTIALLY_FILLED, D(1), D("450.20"), D("0.01"))
    assert first.apply(event(first, E.FILLED, 6, fill=a_fill("f1", first, "1", "450.20"))) is first
    done = first.apply(event(first, E.FILLED, 1, fill=a_fill("f2", first, "2", "450.26")))  # an older venue time
    assert (done.status, done.filled_qty, done.avg_price, done.fill_ids) == \
        (OrderStatus.FILLED, D(3), D("450.24"), frozenset({"f1", "f2"}))
    assert done.last_ts_ns == 4 and done.venue_order_id == "v1"
    assert order.status is OrderStatus.ACCEPTED and order.filled_qty == 0  # the earlier state is untouched


def test_apply_keeps_the_reason_of_a_rejection_and_refuses_what_the_lifecycle_forbids():
    order = Order(make_intent())
    rejected = order.apply(event(order, E.REJECTED, 2, reason="risk: spread"))
    assert (rejected.status, rejected.reason) == (OrderStatus.REJECTED, "risk: spread")
    accepted = order.apply(event(order, E.SUBMITTED, 2)).apply(event(order, E.ACCEPTED, 3, reason="ignored"))
    assert accepted.reason == ""
    with pytest.raises(IllegalTransitionError, match="order in status pending cannot take event filled"):
        order.apply(event(order, E.FILLED, 2, fill=a_fill("f1", order, "1", "450.20")))
    with pytest.raises(OrderError, match="applied to order"):
        order.apply(OrderEvent("tbother", E.SUBMITTED, 2, 2))
    with pytest.raises(IllegalTransitionError, match="fills of 4 exceed the order quantity 3"):
        live = accepted.apply(event(accepted, E.FILLED, 4, fill=a_fill("f1", accepted, "4", "450.20")))
        del live


def test_replace_changes_quantity_and_limit():
    order = Order(make_intent())
    order = order.apply(event(order, E.SUBMITTED, 2)).apply(event(order, E.ACCEPTED, 3))
    pending = order.apply(event(order, E.REPLACE_REQUESTED, 4))
    replaced = pending.apply(event(pending, E.REPLACED, 5, quantity=D(5), limit_price=D("450.10")))
    assert (replaced.status, replaced.total_quantity, replaced.limit_price, replaced.remaining) == \
        (OrderStatus.ACCEPTED, D(5), D("450.10"), D(5))


@pytest.mark.parametrize("cls", [OrderIntent, Fill, OrderEvent, Order])
def test_hand_written_init_matches_the_fields(cls):
    """These classes fill __dict__ in one step: same parameters, order and defaults as their fields."""
    parameters = list(inspect.signature(cls).parameters.values())
    fields = dataclasses.fields(cls)
    assert [p.name for p in parameters] == [f.name for f in fields]
    for parameter, field in zip(parameters, fields):
        default = inspect.Parameter.empty if field.default is dataclasses.MISSING else field.default
        assert parameter.default == default, field.name
    intent = make_intent()
    assert dataclasses.replace(intent, reason="x") == OrderIntent(**{**dataclasses.asdict(intent), "reason": "x"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        intent.quantity = D(1)  # type: ignore[misc]


def test_a_venue_may_reject_an_order_it_accepted_until_something_fills_and_the_event_carries_the_code():
    from tradebook.model.orders import RejectCode

    order = Order(make_intent())
    accepted = order.apply(event(order, E.SUBMITTED, 2)).apply(event(order, E.ACCEPTED, 3))
    late = event(accepted, E.REJECTED, 4, reason="alpaca:rejected", code="insufficient_funds")
    assert late.code is RejectCode.INSUFFICIENT_FUNDS  # a journal's text becomes the member
    rejected = accepted.apply(late)
    assert (rejected.status, rejected.reason) == (OrderStatus.REJECTED, "alpaca:rejected")
    partly = accepted.apply(event(accepted, E.FILLED, 5, fill=a_fill("f1", accepted, "1", "450.20")))
    with pytest.raises(IllegalTransitionError, match="partially_filled cannot take event rejected"):
        partly.apply(event(partly, E.REJECTED, 6))  # something traded: it ends cancelled or expired instead
    assert event(order, E.ACCEPTED, 3).code is None
    with pytest.raises(ValueError):
        event(order, E.REJECTED, 3, code="no_such_code")
