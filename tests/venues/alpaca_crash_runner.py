"""The process test_alpaca_crash kills: an order manager on the real AlpacaVenue sending a fixed list of orders.

    TRADEBOOK_ALPACA_* set to the sandbox; python tests/venues/alpaca_crash_runner.py STATE_DIR DONE_FILE
    ALPACA_CRASH_AT=before_send:k-5 ...   # SIGKILL itself just before (or after_send: after) that POST
    ALPACA_CRASH_ORDERS=12 ...            # a shorter plan (120 orders by default)

The loop (open the store and journal in ``STATE_DIR``, connect, recover and reconcile, send
the intents of :data:`PLAN` not held yet one by one, wait until none is working, write
``DONE_FILE``) is crash_common.run_plan. Started again after a kill -9 it resumes: the
intents are the same, under the same ids.
"""

from __future__ import annotations

import asyncio
import os
import sys
from decimal import Decimal
from pathlib import Path

from crash_common import run_plan

from tradebook.model.orders import TimeInForce
from tradebook.venues.alpaca import AlpacaVenue

INSTRUMENT = "SPY.ARCX"
# (side, quantity) of market orders; the sandbox fills one share per price move, so most fill in parts
PLAN = [("sell" if n % 3 == 2 else "buy", Decimal(1 + n % 4))
        for n in range(int(os.environ.get("ALPACA_CRASH_ORDERS", "120")))]


if __name__ == "__main__":
    venue = AlpacaVenue.from_env(request_timeout_s=2.0, poll_interval_s=0.5, stream_reconnect_min_s=0.05)
    asyncio.run(run_plan(Path(sys.argv[1]), Path(sys.argv[2]), venue, INSTRUMENT, PLAN, env_prefix="ALPACA",
                         time_in_force=TimeInForce.DAY))
