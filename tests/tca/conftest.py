"""A small store for hand-computed TCA: quotes and trades ingested through the store, orders and fills as rows.

Times are seconds after ``T0`` (whole and half seconds); prices are round so every expected
value in the tests is a short hand computation. The quotes (bid/ask, mid):

    t=0 99/101 (100)   t=2 100/102 (101)   t=4 101/103 (102)   t=12 103/105 (104)
    t=70 105/107 (106) t=200 104/106 (105)   -- the last stored quote until a test adds more

Market trades: t=3.5 1 @ 102, t=4.5 3 @ 103.
"""

from __future__ import annotations

import shutil
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

from tradebook.data.loaders import from_frame
from tradebook.model.instruments import Side
from tradebook.model.orders import OrderIntent, OrderType, TimeInForce, client_order_id_for
from tradebook.store import Store

BTC = "BTCUSDT.BINANCE"
ACCOUNT = "tca-test"
STRATEGY = "hand"
T0 = 1_700_000_000 * 1_000_000_000
S = 1_000_000_000

QUOTES = [(0, 99, 101), (2, 100, 102), (4, 101, 103), (12, 103, 105), (70, 105, 107), (200, 104, 106)]
TRADES = [(3.5, 102, 1), (4.5, 103, 3)]


def at(seconds: float) -> int:
    return T0 + int(seconds * S)


def ingest_quotes(store: Store, rows: list[tuple[float, float, float]]) -> None:
    frame = pd.DataFrame({"ts_ns": [at(t) for t, _, _ in rows], "bid_px": [float(b) for _, b, _ in rows],
                          "ask_px": [float(a) for _, _, a in rows], "bid_sz": 1.0, "ask_sz": 1.0})
    store.ingest(from_frame(frame, "quotes", BTC, source=f"hand quotes {rows[0][0]}"))


def ingest_trades(store: Store, rows: list[tuple[float, float, float]]) -> None:
    frame = pd.DataFrame({"ts_ns": [at(t) for t, _, _ in rows], "price": [float(p) for _, p, _ in rows],
                          "size": [float(q) for _, _, q in rows]})
    store.ingest(from_frame(frame, "trades", BTC, source="hand trades"))


def intent(intent_id: str, side: str, quantity: str, order_type: str = "market", limit: str | None = None,
           parent_id: str | None = None, instrument_id: str = BTC) -> OrderIntent:
    return OrderIntent(intent_id, STRATEGY, ACCOUNT, instrument_id, Side(side), Decimal(quantity), OrderType(order_type),
                       TimeInForce.GTC, 0, limit_price=None if limit is None else Decimal(limit), parent_id=parent_id)


def add_order(store: Store, order: OrderIntent, *, status: str, filled: str, created: float, last: float,
              why: str = "router:test", events: list[tuple[str, float]] = ()) -> str:
    """An ``orders`` row and its events, as the order manager's copy in the store holds them."""
    coid = order.client_order_id
    parent = client_order_id_for(order.parent_id, ACCOUNT) if order.parent_id else None
    with store.transaction() as con:
        con.execute(
            "INSERT INTO orders (client_order_id, intent_id, strategy_id, account_id, mode, venue, instrument_id, "
            "side, order_type, time_in_force, quantity, limit_price, parent_order_id, status, filled_quantity, "
            "ts_init, ts_last, tags) VALUES (?, ?, ?, ?, 'paper', 'paper', ?, ?, ?, 'gtc', ?, ?, ?, ?, ?, ?, ?, ?)",
            [coid, order.intent_id, STRATEGY, ACCOUNT, order.instrument_id, str(order.side), str(order.order_type),
             str(order.quantity), None if order.limit_price is None else str(order.limit_price), parent, status,
             filled, at(created), at(last), '{"reduce_only":false,"why":"%s"}' % why])
        for kind, t in events:
            con.execute("INSERT INTO order_events (client_order_id, event_type, ts_event, ts_init) VALUES (?, ?, ?, ?)",
                        [coid, kind, at(t), at(t)])
    return coid


def add_fill(store: Store, coid: str, fill_id: str, side: str, quantity: str, price: str, t: float,
             fee: str = "0", instrument_id: str = BTC) -> None:
    with store.transaction() as con:
        con.execute("INSERT INTO fills (fill_id, client_order_id, account_id, strategy_id, instrument_id, side, "
                    "quantity, price, fee, fee_currency, liquidity, ts_event, ts_init) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'USDT', 'taker', ?, ?)",
                    [fill_id, coid, ACCOUNT, STRATEGY, instrument_id, side, quantity, price, fee, at(t), at(t)])
        con.execute("INSERT INTO order_events (client_order_id, event_type, ts_event, ts_init, quantity, price) "
                    "VALUES (?, 'filled', ?, ?, ?, ?)", [coid, at(t), at(t), quantity, price])


@pytest.fixture(scope="session")
def hand_template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tca_hand") / "template.duckdb"
    with Store(path) as store:
        ingest_quotes(store, QUOTES)
        ingest_trades(store, TRADES)
    return path


@pytest.fixture
def hand_store(hand_template, tmp_path):
    """The quotes and trades above, with no orders yet (a copy of one store built once)."""
    shutil.copy(hand_template, tmp_path / "tca.duckdb")
    store = Store(tmp_path / "tca.duckdb")
    yield store
    store.close()
