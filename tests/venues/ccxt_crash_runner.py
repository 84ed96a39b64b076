"""The process test_ccxt_crash kills: an order manager on the real CcxtVenue (Binance) sending a fixed list of orders.

    TRADEBOOK_CCXT_BINANCE_* set to the sandbox; python tests/venues/ccxt_crash_runner.py STATE_DIR DONE_FILE
    CCXT_CRASH_AT=before_send:k-5 ...   # SIGKILL itself just before (or after_send: after) that order's POST
    CCXT_CRASH_ORDERS=12 ...            # a shorter plan (120 orders by default)

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
from tradebook.venues.ccxt_venue import CcxtVenue

INSTRUMENT = "BTCUSDT.BINANCE"
# market buys of 0.001 to 0.004 BTC (a spot sell before the buys filled would be refused for the balance, and
# the account's BTC counts in the position reconciled); the sandbox fills 0.001 per price move: most fill in parts
PLAN = [("buy", Decimal(1 + n % 4) / 1000)
        for n in range(int(os.environ.get("CCXT_CRASH_ORDERS", "120")))]


def make_venue() -> CcxtVenue:
    return CcxtVenue.from_env("binance", poll_interval_s=0.2, request_timeout_s=2.0, reconnect_backoff_s=(0.05, 0.5),
                              order_visibility_grace_s=1.0)


if __name__ == "__main__":
    asyncio.run(run_plan(Path(sys.argv[1]), Path(sys.argv[2]), make_venue(), INSTRUMENT, PLAN, env_prefix="CCXT",
                         time_in_force=TimeInForce.GTC))
