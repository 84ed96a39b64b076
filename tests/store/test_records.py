"""The journal record codec (tradebook.store.records) and journals written before it was the codec's home.

The old journals here are the bytes the order manager and the paper venue wrote before issue 13
moved their record code (events without ``code``, rejection codes in their own records), framed by
hand with zlib so the test does not lean on the code under test to write them.
"""

from __future__ import annotations

import asyncio
import json
import zlib
from decimal import Decimal as D
from pathlib import Path

import pytest

from tradebook.errors import StoreError
from tradebook.execution.oms import OrderManager, RejectCode
from tradebook.model.instruments import Side
from tradebook.model.orders import Fill, OrderEvent, OrderEventType, OrderIntent, OrderStatus, OrderType, TimeInForce
from tradebook.model.orders import client_order_id_for
from tradebook.portfolio import Portfolio
from tradebook.sim.fill_model import FeeSchedule, FillModel, LatencyModel, touch_only_curve
from tradebook.store import Store
from tradebook.store.journal import Journal
from tradebook.store.records import (
    adjustment_record,
    alert_record,
    decode_record,
    event_from_record,
    event_record,
    fill_from_record,
    intent_from_record,
    intent_record,
    rejection_code_record,
)
from tradebook.venues.paper import JOURNAL_NAME, PaperVenue

BTC = "BTCUSDT.BINANCE"
T0 = 1_723_000_000_000_000_000
ACCOUNT = "paper"


def old_line(text: str) -> bytes:
    body = text.encode()
    return b"%08x %b\n" % (zlib.crc32(body), body)


def write_old_journal(path: Path, records: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(old_line(record) for record in records))


def paper_venue(state_dir: Path) -> PaperVenue:
    model = FillModel(BTC, 0.01, touch_only_curve(), fees=FeeSchedule(), latency=LatencyModel(0, 0, 0.0))
    return PaperVenue(state_dir, account_id=ACCOUNT, models={BTC: model}, sync=False, clock=lambda: T0)


def intent(intent_id: str, side: Side = Side.BUY, quantity: str = "0.01",
           limit: str | None = "60000.00") -> OrderIntent:
    return OrderIntent(intent_id=intent_id, strategy_id="s1", account_id=ACCOUNT, instrument_id=BTC, side=side,
                       quantity=D(quantity), order_type=OrderType.LIMIT if limit else OrderType.MARKET,
                       time_in_force=TimeInForce.GTC, ts_ns=T0, limit_price=D(limit) if limit else None)


# -- the codec -------------------------------------------------------------------------------
def test_each_record_kind_decodes_to_what_was_built() -> None:
    order = intent("i1", limit="60000.50")
    record = decode_record(intent_record(order, T0 + 5))
    assert record["kind"] == "intent" and record["ts"] == T0 + 5
    assert record["client_order_id"] == order.client_order_id
    assert intent_from_record(record["intent"]) == order

    fill = Fill("f1", order.client_order_id, BTC, Side.BUY, D("0.01000"), D("60000.50"), D("0.6"), "maker", T0, T0 + 1)
    filled = OrderEvent(order.client_order_id, OrderEventType.FILLED, T0, T0 + 1, venue_order_id="v1", fill=fill)
    assert event_from_record(decode_record(event_record(filled))["event"]) == filled
    rejected = OrderEvent(order.client_order_id, OrderEventType.REJECTED, T0, T0, reason="no",
                          code=RejectCode.INSUFFICIENT_FUNDS)
    back = event_from_record(decode_record(event_record(rejected))["event"])
    assert back == rejected and back.code is RejectCode.INSUFFICIENT_FUNDS
    # amounts come back as the same Decimals, trailing zeros included
    assert str(fill_from_record(decode_record(adjustment_record("a", "s", fill))["fill"]).quantity) == "0.01000"
    assert decode_record(alert_record(7, "late_fill", "x")) == {"kind": "alert",
                                                                "alert": {"ts_ns": 7, "kind": "late_fill",
                                                                          "message": "x"}}
    assert decode_record(rejection_code_record("c", RejectCode.NEVER_REACHED_VENUE))["code"] == "never_reached_venue"


def test_an_event_record_is_the_old_layout_with_the_code_added() -> None:
    """Readers of the old layout (the store's copy, older tools) find every key where it was."""
    event = OrderEvent("c1", OrderEventType.ACCEPTED, 1, 2, venue_order_id="v")
    written = json.loads(event_record(event))
    assert list(written["event"]) == ["client_order_id", "event_type", "ts_event_ns", "ts_init_ns", "venue_order_id",
                                      "reason", "quantity", "limit_price", "stop_price", "code", "fill"]
    assert written == {"kind": "event", "event": {
        "client_order_id": "c1", "event_type": "accepted", "ts_event_ns": 1, "ts_init_ns": 2, "venue_order_id": "v",
        "reason": "", "quantity": None, "limit_price": None, "stop_price": None, "code": None, "fill": None}}


# -- an order manager's journal written before the move --------------------------------------------
def old_order_manager_journal() -> tuple[list[str], str, str]:
    """An order that filled, one the venue refused (its code in a record of its own, as before), an
    alert, an orphan, an illegal event and a position adopted by reconciliation."""
    buy, sell = client_order_id_for("i-buy", ACCOUNT), client_order_id_for("i-sell", ACCOUNT)

    def intent_json(intent_id: str, side: str, limit: str) -> str:
        return ('{"intent_id":"%s","strategy_id":"s1","account_id":"paper","instrument_id":"%s","side":"%s",'
                '"quantity":{"$d":"0.01"},"order_type":"limit","time_in_force":"gtc","ts_ns":%d,'
                '"limit_price":{"$d":"%s"},"stop_price":null,"parent_id":null,"reduce_only":false,'
                '"stop_loss":null,"reason":""}' % (intent_id, BTC, side, T0, limit))

    def event_json(coid: str, kind: str, ts: int, fill: str = "null", reason: str = "") -> str:
        return ('{"client_order_id":"%s","event_type":"%s","ts_event_ns":%d,"ts_init_ns":%d,"venue_order_id":"v-%s",'
                '"reason":"%s","quantity":null,"limit_price":null,"stop_price":null,"fill":%s}'
                % (coid, kind, ts, ts, coid[:4], reason, fill))

    fill = ('{"fill_id":"v-1-1","client_order_id":"%s","instrument_id":"%s","side":"buy","quantity":{"$d":"0.01"},'
            '"price":{"$d":"60000.00"},"fee":{"$d":"0.60"},"liquidity":"taker","ts_event_ns":%d,"ts_init_ns":%d}'
            % (buy, BTC, T0 + 3, T0 + 3))
    adopted = ('{"fill_id":"reconciliation:paper:%s:%d","client_order_id":"reconciliation","instrument_id":"%s",'
               '"side":"buy","quantity":{"$d":"0.02"},"price":{"$d":"60000.00"},"fee":{"$d":"0"},'
               '"liquidity":"taker","ts_event_ns":%d,"ts_init_ns":%d}' % (BTC, T0 + 9, BTC, T0 + 9, T0 + 9))
    records = [
        '{"kind":"intent","ts":%d,"client_order_id":"%s","intent":%s}' % (T0 + 1, buy, intent_json("i-buy", "buy",
                                                                                                   "60000.00")),
        '{"kind":"event","event":%s}' % event_json(buy, "submitted", T0 + 1),
        '{"kind":"event","event":%s}' % event_json(buy, "accepted", T0 + 2),
        '{"kind":"event","event":%s,"state":{"quantity":"0.01","limit_price":"60000.00","stop_price":null,'
        '"venue_order_id":"v-%s","status":"filled","filled_quantity":"0.01","avg_fill_price":"60000.00",'
        '"ts_last":%d,"reason":"","fees":"0.60"}}' % (event_json(buy, "filled", T0 + 3, fill), buy[:4], T0 + 3),
        '{"kind":"intent","ts":%d,"client_order_id":"%s","intent":%s}' % (T0 + 4, sell, intent_json("i-sell", "sell",
                                                                                                    "61000.00")),
        '{"kind":"event","event":%s}' % event_json(sell, "submitted", T0 + 4),
        '{"kind":"event","event":%s}' % event_json(sell, "rejected", T0 + 5, reason="paper rejected: no"),
        '{"kind":"rejection_code","client_order_id":"%s","code":"insufficient_funds"}' % sell,
        '{"kind":"alert","alert":{"ts_ns":%d,"kind":"not_sent","message":"a human should look"}}' % (T0 + 6),
        '{"kind":"orphan","event":%s}' % event_json("nobody", "accepted", T0 + 7),
        '{"kind":"illegal","event":%s,"error":"filled -> accepted is not a step"}' % event_json(buy, "accepted",
                                                                                              T0 + 8),
        '{"kind":"adjustment","account_id":"paper","strategy_id":"_reconciliation","fill":%s}' % adopted,
    ]
    return records, buy, sell


def test_an_order_manager_journal_written_before_the_move_replays_and_reaches_the_store(tmp_path: Path) -> None:
    records, buy, sell = old_order_manager_journal()
    write_old_journal(tmp_path / "orders.journal", records)
    store = Store(tmp_path / "store.duckdb")
    journal = Journal(tmp_path / "orders.journal", sync=False)
    manager = OrderManager(store, journal, paper_venue(tmp_path / "venue"), Portfolio(D(100_000)))
    try:
        assert manager.order(buy).status is OrderStatus.FILLED and manager.order(buy).fees == D("0.60")
        assert manager.order(sell).status is OrderStatus.REJECTED
        assert manager.rejection_code(sell) is RejectCode.INSUFFICIENT_FUNDS
        assert [a.kind for a in manager.alerts()] == ["not_sent"]
        assert [e.client_order_id for e in manager.orphans()] == ["nobody"]
        positions = {(p.strategy_id, p.instrument_id): p.quantity for p in manager.portfolio.positions()}
        assert positions == {("s1", BTC): D("0.01"), ("_reconciliation", BTC): D("0.02")}

        report = manager.recover()  # the store lacked all of it: copied now, parsed by DuckDB
        assert report.records_flushed == len(records) and report.unresolved == ()
        orders = store.orders().set_index("client_order_id")
        assert orders.loc[buy, "status"] == "filled" and orders.loc[sell, "status"] == "rejected"
        assert orders.loc[buy, "filled_quantity"] == pytest.approx(0.01)  # DECIMAL columns read as floats
        fills = store.fills()
        assert sorted(fills["fill_id"]) == sorted(["v-1-1", f"reconciliation:paper:{BTC}:{T0 + 9}"])
        events = store.order_events()
        assert len(events) == 2 + 5 + 2  # two intents, five events, the orphan and the illegal one
        rejected = events[(events["client_order_id"] == sell) & (events["event_type"] == "rejected")]
        assert json.loads(rejected["payload"].iloc[0]).get("reject_code") == "insufficient_funds"
        assert list(store.alerts()["kind"]) == ["not_sent"]
        assert store.journal_position("orders.journal") == len(records)
    finally:
        manager.close(flush=False)
        store.close()


def test_a_record_of_an_unknown_kind_stops_the_replay_naming_it(tmp_path: Path) -> None:
    records, _, _ = old_order_manager_journal()
    write_old_journal(tmp_path / "orders.journal", [*records[:2], '{"kind":"mystery"}'])
    store = Store(tmp_path / "store.duckdb")
    try:
        with pytest.raises(StoreError, match="record 3 cannot be replayed: unknown record kind 'mystery'"):
            OrderManager(store, Journal(tmp_path / "orders.journal", sync=False), paper_venue(tmp_path / "venue"),
                         Portfolio(D(100_000)))
    finally:
        store.close()


# -- the paper venue's journal written before its split ----------------------------------------------
def test_a_paper_venue_journal_written_before_the_split_recovers_its_book(tmp_path: Path) -> None:
    coid, resting = client_order_id_for("i-buy", ACCOUNT), client_order_id_for("i-rest", ACCOUNT)
    order = ('{"kind":"order","ts":%d,"client_order_id":"%s","venue_order_id":"paper-abc123-%d",'
             '"instrument_id":"%s","side":"buy","order_type":"%s","time_in_force":"gtc","quantity":{"$d":"%s"},'
             '"limit_price":%s,"stop_price":null,"expire_ts_ns":9223372036854775807,'
             '"reference_price":{"$d":"%s"},"reduce_only":false,"intent_id":"%s","strategy_id":"s1"}')
    write_old_journal(tmp_path / "venue" / JOURNAL_NAME, [
        '{"kind":"open","account_id":"paper","currency":"USD","starting_cash":{"$d":"100000"},"ts":0,'
        '"book_id":"abc123"}',
        order % (T0, coid, 1, BTC, "market", "0.01000", "null", "60000.01", "i-buy"),
        '{"kind":"accepted","ts":%d,"client_order_id":"%s"}' % (T0 + 1, coid),
        '{"kind":"fill","ts":%d,"client_order_id":"%s","fill_id":"paper-abc123-1-1","quantity":{"$d":"0.01000"},'
        '"price":{"$d":"60000.01"},"fee":{"$d":"0"},"liquidity":"taker","ts_init_ns":%d,'
        '"cash":{"$d":"99399.99990000"},"position":{"$d":"0.01000"}}' % (T0 + 1, coid, T0 + 1),
        order % (T0 + 2, resting, 2, BTC, "limit", "0.02000", '{"$d":"59000.00"}', "59000.00", "i-rest"),
        '{"kind":"accepted","ts":%d,"client_order_id":"%s"}' % (T0 + 3, resting),
    ])
    venue = paper_venue(tmp_path / "venue")
    try:
        assert venue.book_id == "abc123" and venue.now_ns == T0 + 3
        assert asyncio.run(venue.positions()) == {BTC: D("0.01000")}
        account = asyncio.run(venue.account())
        assert account.cash == D("99399.99990000")
        fills = asyncio.run(venue.fills())
        assert [(f.fill_id, f.quantity, f.price) for f in fills] == [("paper-abc123-1-1", D("0.01"), D("60000.01"))]
        filled = asyncio.run(venue.order_status(coid))
        assert filled.status is OrderStatus.FILLED and filled.filled_qty == D("0.01")
        (working,) = asyncio.run(venue.open_orders())
        assert working.client_order_id == resting and working.status is OrderStatus.ACCEPTED
        assert working.limit_price == D("59000.00") and working.quantity == D("0.02")
    finally:
        asyncio.run(venue.close())
