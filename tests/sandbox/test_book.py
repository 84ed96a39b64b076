"""The sandbox servers' shared book: the fill rule, partial fills, positions and cash."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from tradebook.errors import OrderError
from tradebook.sandbox._book import Book, BookOrder

D = Decimal


def order(side="buy", qty="10", order_type="market", limit=None, stop=None, cid=None) -> BookOrder:
    return BookOrder(order_id=str(uuid.uuid4()), client_order_id=cid or uuid.uuid4().hex, symbol="X", side=side,
                     order_type=order_type, time_in_force="gtc", qty=D(qty),
                     limit_price=None if limit is None else D(limit), stop_price=None if stop is None else D(stop))


@pytest.fixture
def book():
    book = Book(cash=D(1000))
    book.set_price("X", D("9.9"), D("10.1"))
    return book


def test_market_orders_take_the_touch_and_move_cash_and_position(book):
    buy = book.add(order("buy", "10"))
    assert (buy.status, buy.avg_price, book.positions["X"], book.cash) == ("filled", D("10.1"), D(10), D(899))
    sell = book.add(order("sell", "4"))
    assert (sell.avg_price, book.positions["X"], book.cash) == (D("9.9"), D(6), D("938.6"))
    assert book.cost["X"] == D("60.6")  # a reduction keeps the average entry (10.1)


def test_a_position_that_flips_is_costed_at_the_flip_price(book):
    book.add(order("buy", "5"))
    book.add(order("sell", "8"))
    assert book.positions["X"] == D(-3) and book.cost["X"] == D(-3) * D("9.9")
    book.add(order("buy", "3"))
    assert "X" not in book.positions and "X" not in book.cost


def test_a_limit_crossing_on_arrival_takes_the_touch_a_resting_one_fills_at_its_limit(book):
    taker = book.add(order("buy", "1", "limit", limit="10.5"))
    assert taker.avg_price == D("10.1") and not taker.fills[0].maker
    resting = book.add(order("buy", "1", "limit", limit="9.5"))
    assert resting.status == "new"
    book.set_price("X", D("9.0"), D("9.2"))
    assert resting.avg_price == D("9.5") and resting.fills[0].maker


def test_stops_trigger_on_the_touch_then_work_as_market_or_limit(book):
    sell_stop = book.add(order("sell", "1", "stop", stop="9.5"))
    buy_stop_limit = book.add(order("buy", "1", "stop_limit", stop="10.5", limit="10.6"))
    book.set_price("X", D("9.6"), D("9.8"))
    assert sell_stop.status == "new" and buy_stop_limit.status == "new"
    book.set_price("X", D("9.4"), D("9.6"))
    assert sell_stop.status == "filled" and sell_stop.avg_price == D("9.4")
    book.set_price("X", D("10.55"), D("10.7"))  # triggered at 10.7 >= 10.5, but 10.7 is above its 10.6 limit
    assert buy_stop_limit.triggered and buy_stop_limit.status == "new"
    book.set_price("X", D("10.4"), D("10.45"))
    assert buy_stop_limit.status == "filled" and buy_stop_limit.avg_price == D("10.6")


def test_max_fill_qty_fills_one_part_per_price_update(book):
    book.max_fill_qty = D(4)
    big = book.add(order("buy", "10"))
    assert (big.status, big.filled_qty) == ("partially_filled", D(4))
    book.set_price("X", D("9.9"), D("10.1"))
    book.set_price("X", D("9.9"), D("10.1"))
    assert (big.status, [f.qty for f in big.fills]) == ("filled", [D(4), D(4), D(2)])


def test_listeners_hear_each_step(book):
    heard = []
    book.listeners.append(lambda o, event, fill: heard.append((event, fill.qty if fill else None)))
    resting = book.add(order("buy", "2", "limit", limit="9"))
    book.cancel(resting)
    assert heard == [("new", None), ("canceled", None)]


def test_client_ids_cancels_and_forced_fills(book):
    first = book.add(order("buy", "1", "limit", limit="9", cid="same"))
    with pytest.raises(OrderError, match="already held"):
        book.add(order("buy", "1", cid="same"))
    with pytest.raises(OrderError, match="already held"):  # reuse is for closed orders only
        book.add(order("buy", "1", cid="same"), reuse_closed_ids=True)
    book.cancel(first)
    with pytest.raises(OrderError, match="not open"):
        book.cancel(first)
    again = book.add(order("buy", "1", cid="same"), reuse_closed_ids=True)
    assert book.get_by_client_id("same") is again
    late = book.fill(first, D(1), D(9), force=True)  # a fill that raced the cancel
    assert first.status == "filled" and late.qty == 1 and book.positions["X"] == D(2)
    with pytest.raises(OrderError, match="bid 10 above ask 9"):
        book.set_price("X", D(10), D(9))
