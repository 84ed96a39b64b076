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

import os
from pathlib import Path

import pytest

from tradebook.sandbox.alpaca import DEFAULT_KEY, AlpacaSandbox
from venues.crash_common import check_books, check_send_crash, crash_at_random, crash_at_send, kill_runs

pytest.importorskip("alpaca")
pytestmark = pytest.mark.slow

RUNNER = Path(__file__).with_name("alpaca_crash_runner.py")
RUNS = kill_runs("ALPACA")
ACCOUNT = "PA3SANDBOX1"


def environment(server: AlpacaSandbox, **extra: str) -> dict[str, str]:
    return {**os.environ, "TRADEBOOK_ALPACA_KEY_ID": DEFAULT_KEY, "TRADEBOOK_ALPACA_SECRET_KEY": server.secret,
            "TRADEBOOK_ALPACA_BASE_URL": server.base_url, "TRADEBOOK_ALPACA_STREAM_URL": server.stream_url,
            "TRADEBOOK_ALPACA_ACCOUNT": ACCOUNT, **extra}


def test_kill_9_at_random_points_then_restart_loses_no_fill_and_sends_no_order_twice(tmp_path):
    with AlpacaSandbox(max_fill_qty="1") as server:
        server.set_price("SPY", "450.00", "450.02")
        env = environment(server)
        state, kills = crash_at_random(RUNNER, tmp_path, env, lambda n: server.set_price(
            "SPY", "450.00", "450.02" if n % 2 else "450.03"), runs=RUNS)
        summary = verify(server, state, env, orders=120)
        print(f"{kills} kills; {summary}")


def verify(server: AlpacaSandbox, state: Path, env: dict[str, str], *, orders: int) -> str:
    """The books after the last launch, opened fresh, against Alpaca's: nothing sent twice, lost or doubled."""
    from tradebook.venues.alpaca import AlpacaVenue

    venue_orders = {o.client_order_id: o for o in server.book.orders.values()}
    venue_fills = {f.fill_id: (o.client_order_id, f.qty) for o in server.book.orders.values() for f in o.fills}
    posts = list(server.requests).count(("POST", "/v2/orders"))
    assert posts == len(venue_orders), "a POST the sandbox refused: an order was sent twice"
    never = check_books(state, lambda: AlpacaVenue.from_env(environ=env, request_timeout_s=2.0),
                        venue_fills=venue_fills, venue_filled={c: o.filled_qty for c, o in venue_orders.items()},
                        venue_positions={f"{s}.ARCX": q for s, q in server.positions().items() if q}, orders=orders)
    return f"{len(venue_orders)} orders at Alpaca, never reached it: {never or 'none'}; {len(venue_fills)} fills"


@pytest.mark.parametrize("when", ["before_send", "after_send"])
def test_kill_9_on_either_side_of_a_send_then_restart(tmp_path, when):
    with AlpacaSandbox() as server:
        server.set_price("SPY", "450.00", "450.02")
        env = environment(server, ALPACA_CRASH_ORDERS="8")
        state = crash_at_send(RUNNER, tmp_path, env, {"ALPACA_CRASH_AT": f"{when}:k-5"})
        summary = verify(server, state, env, orders=8)
        at_alpaca = {o.client_order_id for o in server.book.orders.values()}
    check_send_crash(when, at_alpaca, ACCOUNT, summary)
