"""The process the crash test kills: a paper session replaying recorded BTCUSDT quotes and trades.

    python tests/crash_runner.py STORE STATE_DIR DONE_FILE
    CRASH_AT=venue:fill:3 python tests/crash_runner.py ...   # die right after the 3rd fill the venue journals

Opens the store, replays its quotes and trades in 1 s steps as fast as possible through
a :class:`tradebook.Session` on ``STATE_DIR`` with a deterministic strategy, and writes
``DONE_FILE`` (the session's final status, JSON) once the replay has finished and the
session has stopped. Started again on the same store and state after a kill -9, it
resumes where the previous process stopped.

The strategy depends only on the batch's position on the feed's time grid, never on
process state, so a resumed replay asks for exactly what the first one would have asked
for, under the same signal ids.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

INSTRUMENT = "BTCUSDT.BINANCE"
STRATEGY_ID = "crash"
STEP_NS = 1_000_000_000
SIGNAL_EVERY = 4  # batches between signals
STOP_LOSS = Decimal("60000.00")  # below every bid of the recording (about 61,000-62,000): never triggers
# (side, strength, quantity, stop loss): strength > 0.9 routes to a market order, lower strengths to
# limits; an entry with a stop loss gets a protective stop from the order manager once it has filled
PATTERN = (
    ("buy", 0.95, Decimal("0.01"), STOP_LOSS),
    ("buy", 0.50, Decimal("0.01"), None),
    ("sell", 0.95, Decimal("0.01"), None),
    ("buy", 0.95, Decimal("0.02"), None),
    ("sell", 0.50, Decimal("0.01"), None),
    ("sell", 0.95, Decimal("0.01"), None),
)


def signal_plan(feed_start_ns: int, batch_start_ns: int) -> tuple[str, str, float, Decimal, Decimal | None] | None:
    """(signal id, side, strength, quantity, stop loss) for the batch starting at ``batch_start_ns``, or None."""
    index = (batch_start_ns - feed_start_ns) // STEP_NS
    if index == 0 or index % SIGNAL_EVERY:
        return None
    return (f"s{index:05d}", *PATTERN[(index // SIGNAL_EVERY) % len(PATTERN)])


def install_crash_point(spec: str) -> None:
    """Kill this process with SIGKILL right after the ``n``-th matching write of this launch.

    ``spec`` is ``journal:kind:n``: ``oms``, ``venue`` or ``session`` and a record kind
    (for the order manager's events, their event type: ``submitted``, ``filled``...), or
    ``store:<table>:n``: inside the n-th flush transaction, after the rows of ``table``
    were inserted and before the commit; ``runner:finished:1``: once the replay has
    finished, before the session is stopped. The code under test runs unchanged; only the
    moment of the kill is chosen.
    """
    from collections import Counter

    from tradebook.store.journal import Journal
    from tradebook.store.records import decode_record
    from tradebook.store.store import Store

    where, kind, nth = spec.split(":")
    if where == "runner":
        return  # main() kills itself at that point of its own
    seen: Counter[str] = Counter()

    def hit() -> None:
        seen[spec] += 1
        if seen[spec] == int(nth):
            os.kill(os.getpid(), signal.SIGKILL)

    if where == "store":
        insert_rows = Store._insert_rows

        def _insert_rows(self, con, table, rows, verb, suffix=""):
            insert_rows(self, con, table, rows, verb, suffix)
            if table == kind and rows:
                hit()

        Store._insert_rows = _insert_rows
        copy_order_path = Store._copy_order_path  # events, fills, orders and alerts: one SQL copy

        def _copy_order_path(con, batch, records_file, orders_file):
            copy_order_path(con, batch, records_file, orders_file)
            if kind in ("orders", "order_events", "fills", "alerts") and batch.position >= batch.first_position:
                hit()

        Store._copy_order_path = staticmethod(_copy_order_path)
        return
    names = {"oms": "oms.journal", "venue": "paper_venue.journal", "session": "session.journal"}
    append = Journal.append_encoded  # every journal write goes through it

    def append_then_maybe_die(self, bodies, *, sync=None):
        position = append(self, bodies, sync=sync)
        if self.path.name == names[where]:
            for record in map(decode_record, bodies):
                event = record.get("event") if record.get("kind") == "event" else None
                if (event["event_type"] if event else record.get("kind")) == kind:
                    hit()
        return position

    Journal.append_encoded = append_then_maybe_die


def main(store_path: str, state_dir: str, done_file: str) -> None:
    if os.environ.get("CRASH_AT"):
        install_crash_point(os.environ["CRASH_AT"])
    from tradebook.data.feeds import ReplayFeed
    from tradebook.model.instruments import Side
    from tradebook.model.orders import Signal
    from tradebook.errors import SessionError
    from tradebook.session import Session, SessionState
    from tradebook.store import Store

    store = Store(store_path)
    feed = ReplayFeed({INSTRUMENT: store.quotes(INSTRUMENT)}, {INSTRUMENT: store.trades(INSTRUMENT)},
                      step_ns=STEP_NS, speed=None)

    def strategy(batch, view) -> Iterator[Signal]:
        plan = signal_plan(feed.start_ns, batch.start_ns)
        if plan is not None:
            signal_id, side, strength, quantity, stop_loss = plan
            yield Signal(STRATEGY_ID, signal_id, INSTRUMENT, Side(side), view.now_ns, strength=strength,
                         quantity=quantity, stop_loss=stop_loss)

    session = Session(store, calibrations=[INSTRUMENT], feed=feed, strategy=strategy, state_dir=state_dir)
    try:
        session.start(wait=True, timeout=300)
    except SessionError:
        if session.state is not SessionState.FINISHED:
            raise
        # killed after a clean finish (runner:finished:1): start() says the replay is over; nothing to run
    if os.environ.get("CRASH_AT") == "runner:finished:1":  # the replay is over, the session not yet stopped
        os.kill(os.getpid(), signal.SIGKILL)
    session.stop()
    status = {k: str(v) for k, v in session.status().items()}
    store.close()
    tmp = Path(done_file + ".tmp")
    tmp.write_text(json.dumps(status))
    os.replace(tmp, done_file)


if __name__ == "__main__":
    main(*sys.argv[1:4])
