"""kill -9 of a process trading on the Alpaca sandbox through the real AlpacaVenue, at random points, then restart.

``alpaca_crash_runner.py`` (an order manager on AlpacaVenue, sending a fixed list of market
orders) is launched on one state folder and killed with SIGKILL after a random delay
(seeded: ``CRASH_TEST_SEED``), ``ALPACA_CRASH_RUNS`` times (20 by default), while the
sandbox fills one share per price move so fills keep arriving between and during launches.
A last launch runs to the end. Then, from the files alone and Alpaca's view:

1. no order was sent twice: every POST the sandbox received made an order (no client
   order id refused as a duplicate), and each tradebook order acknowledged is Alpaca's order
   under the same id with the same filled quantity;
2. no fill is lost or doubled: the order manager's fills and the store's ``fills`` table hold
   exactly the executions Alpaca made, each once;
3. positions equal Alpaca's.

A second test kills the runner at chosen points instead: just before the POST of one order
(durable as sent, never at Alpaca: after the restart it is rejected as never having reached
the venue, and not resent) and just after it (at Alpaca, its reply never processed: found by
client order id and adopted, not resent).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
from decimal import Decimal
from pathlib import Path

import pytest

from tradebook.sandbox.alpaca import DEFAULT_KEY, AlpacaSandbox

pytest.importorskip("alpaca")
pytestmark = pytest.mark.slow

RUNNER = Path(__file__).with_name("alpaca_crash_runner.py")
RUNS = int(os.environ.get("ALPACA_CRASH_RUNS", "20"))
SEED = int(os.environ.get("CRASH_TEST_SEED", "13"))
ACCOUNT = "PA3SANDBOX1"


def launch(state: Path, done: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, str(RUNNER), str(state), str(done)], env=env, stdout=out,
                                stderr=subprocess.STDOUT)


def test_kill_9_at_random_points_then_restart_loses_no_fill_and_sends_no_order_twice(tmp_path):
    rng = random.Random(SEED)
    state, done, log = tmp_path / "state", tmp_path / "done", tmp_path / "runner.log"
    state.mkdir()
    with AlpacaSandbox(max_fill_qty="1") as server:
        server.set_price("SPY", "450.00", "450.02")
        env = {**os.environ, "TRADEBOOK_ALPACA_KEY_ID": DEFAULT_KEY, "TRADEBOOK_ALPACA_SECRET_KEY": server.secret,
               "TRADEBOOK_ALPACA_BASE_URL": server.base_url, "TRADEBOOK_ALPACA_STREAM_URL": server.stream_url,
               "TRADEBOOK_ALPACA_ACCOUNT": ACCOUNT}
        moving = threading.Event()

        def move_prices() -> None:  # fills keep coming, between launches too
            n = 0
            while not moving.wait(0.05):
                n += 1
                server.set_price("SPY", "450.00", "450.02" if n % 2 else "450.03")

        mover = threading.Thread(target=move_prices, daemon=True)
        mover.start()
        kills = 0
        try:
            for _ in range(RUNS):
                process = launch(state, done, env, log)
                try:
                    process.wait(rng.uniform(0.3, 3.0))
                except subprocess.TimeoutExpired:
                    process.send_signal(signal.SIGKILL)
                    process.wait(10)
                    kills += 1
            for _ in range(3):  # the last launch runs to its end
                if done.exists():
                    break
                launch(state, done, env, log).wait(120)
        finally:
            moving.set()
            mover.join(5)
        assert done.exists() and done.read_text() == "done\n", log.read_text()[-3000:]
        assert kills >= RUNS // 2, f"only {kills} of {RUNS} launches were killed; the runner finished too soon"

        summary = verify(server, state, env, orders=120)
        print(f"{kills} kills; {summary}")


def verify(server: AlpacaSandbox, state: Path, env: dict[str, str], *, orders: int) -> str:
    """The books after the last launch, opened fresh, against Alpaca's: nothing sent twice, lost or doubled."""
    from tradebook.execution.journal import Journal
    from tradebook.execution.oms import OrderManager
    from tradebook.model.orders import OrderStatus
    from tradebook.portfolio import Portfolio
    from tradebook.store import Store
    from tradebook.venues.alpaca import AlpacaVenue

    venue_orders = {o.client_order_id: o for o in server.book.orders.values()}
    venue_fills = {f.fill_id: (o.client_order_id, f.qty) for o in server.book.orders.values() for f in o.fills}
    posts = list(server.requests).count(("POST", "/v2/orders"))
    assert posts == len(venue_orders), "a POST the sandbox refused: an order was sent twice"
    never: list[str] = []

    async def check() -> None:
        store, journal = Store(state / "tb.duckdb"), Journal(state / "orders.journal")
        venue = AlpacaVenue.from_env(environ=env, request_timeout_s=2.0)
        oms = OrderManager(store, journal, venue, Portfolio(Decimal(100_000)), mode="paper")
        oms.bind_loop()
        await venue.connect(oms.on_event)
        try:
            oms.recover()
            alerts = await oms.reconcile()
            assert not [a for a in alerts if a.kind in ("position_mismatch", "fill_mismatch", "duplicate_client_id",
                                                        "reconcile_conflict")]
            frame = oms.fills_frame()
            ours = dict(zip(frame["fill_id"], zip(frame["client_order_id"], frame["quantity"])))
            assert len(frame) == len(ours) and ours == venue_fills  # each execution once, none missing
            oms.flush()
            rows = store.con.execute("SELECT fill_id FROM fills").fetchall()
            assert sorted(r[0] for r in rows) == sorted(venue_fills)
            for order in oms.orders():
                theirs = venue_orders.get(order.client_order_id)
                if order.status is OrderStatus.REJECTED:
                    assert theirs is None  # never reached Alpaca, and never resent
                    never.append(order.intent.intent_id)
                    continue
                assert theirs is not None and theirs.filled_qty == order.filled_qty, order
            held = {k: v for (_, k), v in oms.portfolio.net_positions(venue.account_id).items() if v}
            assert held == {f"{s}.ARCX": q for s, q in server.positions().items() if q}
            assert len(oms.orders()) == orders
        finally:
            await venue.close()
            oms.close()
            journal.close()
            store.close()

    asyncio.run(asyncio.wait_for(check(), 60))
    return f"{len(venue_orders)} orders at Alpaca, never reached it: {never or 'none'}; {len(venue_fills)} fills"


@pytest.mark.parametrize("when", ["before_send", "after_send"])
def test_kill_9_on_either_side_of_a_send_then_restart(tmp_path, when):
    state, done, log = tmp_path / "state", tmp_path / "done", tmp_path / "runner.log"
    state.mkdir()
    with AlpacaSandbox() as server:
        server.set_price("SPY", "450.00", "450.02")
        env = {**os.environ, "TRADEBOOK_ALPACA_KEY_ID": DEFAULT_KEY, "TRADEBOOK_ALPACA_SECRET_KEY": server.secret,
               "TRADEBOOK_ALPACA_BASE_URL": server.base_url, "TRADEBOOK_ALPACA_STREAM_URL": server.stream_url,
               "TRADEBOOK_ALPACA_ACCOUNT": ACCOUNT, "ALPACA_CRASH_ORDERS": "8"}
        killed = launch(state, done, env | {"ALPACA_CRASH_AT": f"{when}:k-5"}, log)
        assert killed.wait(60) == -signal.SIGKILL, log.read_text()[-3000:]
        assert launch(state, done, env, log).wait(60) == 0, log.read_text()[-3000:]
        assert done.read_text() == "done\n"
        summary = verify(server, state, env, orders=8)
        at_alpaca = {o.client_order_id for o in server.book.orders.values()}
    from tradebook.model.orders import client_order_id_for

    sent = client_order_id_for("k-5", ACCOUNT) in at_alpaca
    assert sent is (when == "after_send"), summary
    assert ("never reached it: ['k-5']" in summary) is (when == "before_send"), summary
