"""kill -9 of a process trading on the TWS sandbox through the real IbVenue, at random points, then restart.

``ib_crash_runner.py`` (an order manager on IbVenue, sending a fixed list of market orders
for AAPL) is launched on one state folder and killed with SIGKILL after a random delay
(seeded: ``CRASH_TEST_SEED``), ``IB_CRASH_RUNS`` times (20 by default), while the test quotes
one share at a time so executions keep arriving between and during launches. A last launch
runs to the end. Then, from the files alone and TWS's view:

1. no order was sent twice: TWS holds at most one order per ``orderRef`` (tradebook's client
   order id) and every placeOrder it received made an order (none was a modification);
2. no fill is lost or doubled: the order manager's fills and the store's ``fills`` table hold
   exactly TWS's executions (by execId), each once, and each order's filled quantity is TWS's;
3. positions equal TWS's.

A second test kills the runner just before and just after one order's placeOrder.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from tradebook.sandbox.tws import In, TwsServer
from venues.crash_common import check_books, check_send_crash, crash_at_random, crash_at_send, kill_runs

pytest.importorskip("ib_async")
pytestmark = pytest.mark.slow

RUNNER = Path(__file__).with_name("ib_crash_runner.py")
RUNS = kill_runs("IB")
ACCOUNT = "DU1234567"


def environment(tws: TwsServer, **extra: str) -> dict[str, str]:
    return {**os.environ, "TRADEBOOK_IB_HOST": tws.host, "TRADEBOOK_IB_PORT": str(tws.port),
            "TRADEBOOK_IB_ACCOUNT": ACCOUNT, "TRADEBOOK_IB_PAPER": "true", **extra}


def verify(tws: TwsServer, state: Path, env: dict[str, str], *, orders: int) -> str:
    """The books after the last launch, opened fresh, against TWS's: nothing sent twice, lost or doubled."""
    from tradebook.venues.ib import IbVenue

    held = tws.orders()
    per_ref = Counter(o.order_ref for o in held)
    assert max(per_ref.values(), default=1) == 1, [r for r, n in per_ref.items() if n > 1]  # none sent twice
    placed = tws.received_count(In.PLACE_ORDER)
    assert placed == len(held), f"{placed} placeOrder for {len(held)} orders: one was refused or sent twice"
    venue_fills = {e.exec_id: (e.order_ref, e.shares) for e in tws.executions()}
    never = check_books(state, lambda: IbVenue.from_env(environ=env, ack_timeout_s=1.0, request_timeout_s=3.0),
                        venue_fills=venue_fills, venue_filled={o.order_ref: o.filled for o in held},
                        venue_positions={f"{s}.XNAS": q for s, q in tws.positions().items()}, orders=orders)
    return f"{len(held)} orders at TWS, never reached it: {never or 'none'}; {len(venue_fills)} executions"


def test_kill_9_at_random_points_then_restart_loses_no_fill_and_sends_no_order_twice(tmp_path):
    with TwsServer(account=ACCOUNT) as tws:
        tws.set_price("AAPL", "189.99", "190.01", bid_size="1", ask_size="1")
        env = environment(tws)
        # one share on each side per quote: executions keep coming, between launches too
        state, kills = crash_at_random(RUNNER, tmp_path, env, lambda n: tws.set_price(
            "AAPL", "189.99", "190.01" if n % 2 else "190.02", bid_size="1", ask_size="1"), runs=RUNS)
        summary = verify(tws, state, env, orders=120)
        print(f"{kills} kills; {summary}")


@pytest.mark.parametrize("when", ["before_send", "after_send"])
def test_kill_9_on_either_side_of_a_send_then_restart(tmp_path, when):
    with TwsServer(account=ACCOUNT) as tws:
        tws.set_price("AAPL", "189.99", "190.01")
        env = environment(tws, IB_CRASH_ORDERS="8")
        state = crash_at_send(RUNNER, tmp_path, env, {"IB_CRASH_AT": f"{when}:k-5"})
        summary = verify(tws, state, env, orders=8)
        at_tws = {o.order_ref for o in tws.orders()}
    check_send_crash(when, at_tws, ACCOUNT, summary)
