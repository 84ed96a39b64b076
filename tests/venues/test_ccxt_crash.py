"""kill -9 of a process trading on the Binance sandbox through the real CcxtVenue, at random points, then restart.

``ccxt_crash_runner.py`` (an order manager on CcxtVenue, sending a fixed list of market
orders for BTC/USDT) is launched on one state folder and killed with SIGKILL after a random
delay (seeded: ``CRASH_TEST_SEED``), ``CCXT_CRASH_RUNS`` times (20 by default), while the
sandbox fills 0.001 BTC per price move so fills keep arriving between and during launches.
A last launch runs to the end. Then, from the files alone and Binance's view:

1. no order was sent twice: Binance holds at most one order per client order id (it takes a
   closed order's id again, so a resend would show as a second order) and every POST made one;
2. no fill is lost or doubled: the order manager's fills and the store's ``fills`` table hold
   exactly the trades Binance made, each once, and each order's filled quantity is Binance's;
3. the position equals Binance's.

A second test kills the runner just before and just after one order's POST.
"""

from __future__ import annotations

import os
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest

from tradebook.sandbox.binance import BinanceSandbox
from venues.crash_common import check_books, check_send_crash, crash_at_random, crash_at_send, kill_runs

pytest.importorskip("ccxt")
pytestmark = pytest.mark.slow

RUNNER = Path(__file__).with_name("ccxt_crash_runner.py")
RUNS = kill_runs("CCXT")
ACCOUNT = "binance-crash"


def environment(server: BinanceSandbox, **extra: str) -> dict[str, str]:
    return {**os.environ, "TRADEBOOK_CCXT_BINANCE_API_KEY": server.key, "TRADEBOOK_CCXT_BINANCE_SECRET": server.secret,
            "TRADEBOOK_CCXT_BINANCE_API_URL": server.base_url, "TRADEBOOK_CCXT_BINANCE_SYMBOLS": "BTC/USDT",
            "TRADEBOOK_CCXT_BINANCE_ACCOUNT": ACCOUNT, **extra}


def verify(server: BinanceSandbox, state: Path, env: dict[str, str], *, orders: int) -> str:
    """The books after the last launch, opened fresh, against Binance's: nothing sent twice, lost or doubled."""
    from tradebook.venues.ccxt_venue import CcxtVenue

    with server.book.lock:
        held = list(server.book.orders.values())
        venue_fills = {str(server._trade_ids[f.fill_id]): (o.client_order_id, f.qty) for o in held for f in o.fills}
    per_id = Counter(o.client_order_id for o in held)
    assert max(per_id.values(), default=1) == 1, [c for c, n in per_id.items() if n > 1]  # none sent twice
    posts = list(server.requests).count(("POST", "/api/v3/order"))
    assert posts == len(held), f"{posts} POSTs for {len(held)} orders: one was refused or sent twice"
    position = server.positions().get("BTCUSDT", Decimal(0))
    never = check_books(state, lambda: CcxtVenue.from_env("binance", environ=env, request_timeout_s=2.0),
                        venue_fills=venue_fills, venue_filled={o.client_order_id: o.filled_qty for o in held},
                        venue_positions={"BTCUSDT.BINANCE": position} if position else {}, orders=orders)
    return f"{len(held)} orders at Binance, never reached it: {never or 'none'}; {len(venue_fills)} fills"


def test_kill_9_at_random_points_then_restart_loses_no_fill_and_sends_no_order_twice(tmp_path):
    with BinanceSandbox(balances={"USDT": "100000"}, max_fill_qty="0.001") as server:
        server.set_price("BTCUSDT", "60000.00", "60000.01")
        env = environment(server)
        state, kills = crash_at_random(RUNNER, tmp_path, env, lambda n: server.set_price(
            "BTCUSDT", "60000.00", "60000.01" if n % 2 else "60000.02"), runs=RUNS)
        summary = verify(server, state, env, orders=120)
        print(f"{kills} kills; {summary}")


@pytest.mark.parametrize("when", ["before_send", "after_send"])
def test_kill_9_on_either_side_of_a_send_then_restart(tmp_path, when):
    with BinanceSandbox(balances={"USDT": "100000"}) as server:
        server.set_price("BTCUSDT", "60000.00", "60000.01")
        env = environment(server, CCXT_CRASH_ORDERS="8")
        state = crash_at_send(RUNNER, tmp_path, env, {"CCXT_CRASH_AT": f"{when}:k-5"})
        summary = verify(server, state, env, orders=8)
        at_binance = {o.client_order_id for o in server.book.orders.values()}
    check_send_crash(when, at_binance, ACCOUNT, summary)
