"""The process test_alpaca_crash kills: an order manager on the real AlpacaVenue sending a fixed list of orders.

    TRADEBOOK_ALPACA_* set to the sandbox; python tests/venues/alpaca_crash_runner.py STATE_DIR DONE_FILE
    ALPACA_CRASH_AT=before_send:k-5 ...   # SIGKILL itself just before (or after_send: after) that POST
    ALPACA_CRASH_ORDERS=12 ...            # a shorter plan (120 orders by default)

Opens the store and journal in ``STATE_DIR``, connects to Alpaca (the sandbox), recovers
and reconciles, then sends the intents of :data:`PLAN` that it does not hold yet, one by
one, waits until none is working and writes ``DONE_FILE``. Started again after a kill -9
it resumes: the intents are the same, under the same ids.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from decimal import Decimal
from pathlib import Path

from tradebook.errors import OrderError
from tradebook.execution.journal import Journal
from tradebook.execution.oms import OrderManager
from tradebook.model.instruments import Side
from tradebook.model.orders import OrderIntent, OrderType, TimeInForce
from tradebook.portfolio import Portfolio
from tradebook.store import Store
from tradebook.venues.alpaca import AlpacaVenue

INSTRUMENT = "SPY.ARCX"
# (side, quantity) of market orders; the sandbox fills one share per price move, so most fill in parts
PLAN = [("sell" if n % 3 == 2 else "buy", 1 + n % 4) for n in range(int(os.environ.get("ALPACA_CRASH_ORDERS", "120")))]
PACE_S = 0.05  # between sends: a launch lives long enough to be killed in the middle of its work
STARTING_CASH = Decimal(100_000)


async def main(state: Path, done: Path) -> None:
    store, journal = Store(state / "tb.duckdb"), Journal(state / "orders.journal")
    venue = AlpacaVenue.from_env(request_timeout_s=2.0, poll_interval_s=0.5, stream_reconnect_min_s=0.05)
    oms = OrderManager(store, journal, venue, Portfolio(STARTING_CASH), mode="paper")
    oms.bind_loop()
    crash_at = os.environ.get("ALPACA_CRASH_AT")  # "before_send:<intent id>" or "after_send:<intent id>"
    if crash_at:
        when, _, target = crash_at.partition(":")
        send = venue.submit

        async def submit(intent: OrderIntent) -> None:  # die on either side of the one POST that matters
            if intent.intent_id == target and when == "before_send":
                os.kill(os.getpid(), signal.SIGKILL)
            await send(intent)
            if intent.intent_id == target and when == "after_send":
                os.kill(os.getpid(), signal.SIGKILL)

        venue.submit = submit  # type: ignore[method-assign]
    await venue.connect(oms.on_event)
    async def settle() -> None:
        # an order whose send the last launch may have made is unresolved until Alpaca's lookup settles
        # it (found, or not found after the venue's grace period): nothing new for its instrument before
        await oms.reconcile()
        deadline = time.monotonic() + 30
        while oms.unresolved() and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            await oms.reconcile()

    try:
        oms.recover()
        await settle()
        for n, (side, qty) in enumerate(PLAN):
            intent_id = f"k-{n}"
            try:
                oms.order_for_intent(intent_id)
                continue  # sent (or refused) by an earlier launch
            except OrderError:
                pass
            intent = OrderIntent(intent_id, "crash", venue.account_id, INSTRUMENT, Side(side), Decimal(qty),
                                 OrderType.MARKET, TimeInForce.DAY, time.time_ns())
            if oms.unresolved():
                await settle()
            await oms.submit(intent)
            print(f"sent {intent_id}", flush=True)
            await asyncio.sleep(PACE_S)
        deadline = time.monotonic() + 30
        while oms.working_orders() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            if oms.unresolved():
                await settle()
        oms.flush()
        done.write_text("done\n" if not oms.working_orders() else "working orders left\n")
    finally:
        await venue.close()
        oms.close()
        journal.close()
        store.close()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2])))
