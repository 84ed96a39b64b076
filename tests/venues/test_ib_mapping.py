"""IB vocabulary both ways: every tradebook value and every IB value, unknown values refused by name."""

from __future__ import annotations

from decimal import Decimal

import pytest
from ib_async import OrderStatus as IbOrderStatus

from tradebook.errors import ConfigError, VenueMappingError
from tradebook.model.instruments import Side
from tradebook.model.orders import OrderEventType, OrderStatus, OrderType, TimeInForce
from tradebook.venues import ib_mapping as m


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
