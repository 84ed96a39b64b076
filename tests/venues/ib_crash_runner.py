"""The process test_ib_crash kills: an order manager on the real IbVenue (TWS) sending a fixed list of orders.

    TRADEBOOK_IB_PORT/_ACCOUNT set to the TWS sandbox; python tests/venues/ib_crash_runner.py STATE_DIR DONE_FILE
    IB_CRASH_AT=before_send:k-5 ...   # SIGKILL itself just before (or after_send: after) that order's placeOrder
    IB_CRASH_ORDERS=12 ...            # a shorter plan (120 orders by default)

The loop (recover, reconcile, send what is not held yet, wait, write DONE_FILE) is
crash_common.run_plan; started again after a kill -9 it resumes under the same ids.
"""

from __future__ import annotations

import asyncio
import os
import sys
from decimal import Decimal
from pathlib import Path

from crash_common import run_plan

from tradebook.model.orders import TimeInForce
from tradebook.venues.ib import IbVenue

INSTRUMENT = "AAPL.XNAS"
# (side, quantity) of market orders; the test quotes one share at a time, so most fill in parts. Sent at
# twice Alpaca's pace apart: a launch here starts and fills faster, and most launches must be killed mid-work
PLAN = [("sell" if n % 3 == 2 else "buy", Decimal(1 + n % 4)) for n in range(int(os.environ.get("IB_CRASH_ORDERS",
                                                                                                  "120")))]


def make_venue() -> IbVenue:
    return IbVenue.from_env(ack_timeout_s=1.0, connect_timeout_s=2.0, request_timeout_s=3.0, reconnect_min_s=0.05,
                            reconnect_max_s=0.5, pacing_backoff_s=0.05, commission_wait_s=0.3)


if __name__ == "__main__":
    asyncio.run(run_plan(Path(sys.argv[1]), Path(sys.argv[2]), make_venue(), INSTRUMENT, PLAN, env_prefix="IB",
                         time_in_force=TimeInForce.DAY, pace_s=0.1))
