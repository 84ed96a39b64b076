"""What the kill -9 tests of the live adapters share: the runner's loop, the kill loop and the check of the books.

A runner (``<venue>_crash_runner.py``) builds its venue and calls :func:`run_plan`; the test
(``test_<venue>_crash.py``) launches it with :func:`kill_at_random` and compares the books it
left with the server's through :func:`check_books`. The runners import this module as
``crash_common`` (their folder is on ``sys.path``), the tests as ``venues.crash_common``.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

PACE_S = 0.05  # between sends: a launch lives long enough to be killed in the middle of its work
STARTING_CASH = Decimal(100_000)
SEED = int(os.environ.get("CRASH_TEST_SEED", "13"))  # the random kill delays
Plan = list[tuple[str, Decimal]]  # (side, quantity) of market orders, sent in order as intents <prefix>-<n>


async def run_plan(state: Path, done: Path, venue: Any, instrument: str, plan: Plan, *, env_prefix: str,
                   time_in_force: Any, intent_prefix: str = "k", pace_s: float = PACE_S) -> None:
    """Recover, reconcile, send the intents of ``plan`` not held yet one by one, wait until none works, write ``done``.

    ``<env_prefix>_CRASH_AT=before_send:<intent id>`` (or ``after_send:``) kills the process
    with SIGKILL on that side of the one send that matters.
    """
    from tradebook.errors import OrderError
    from tradebook.store.journal import Journal
    from tradebook.execution.oms import OrderManager
    from tradebook.model.instruments import Side
    from tradebook.model.orders import OrderIntent, OrderType
    from tradebook.portfolio import Portfolio
    from tradebook.store import Store

    store, journal = Store(state / "tb.duckdb"), Journal(state / "orders.journal")
    oms = OrderManager(store, journal, venue, Portfolio(STARTING_CASH),
                       mode="live" if venue.is_live else "paper")
    oms.bind_loop()
    crash_at = os.environ.get(f"{env_prefix}_CRASH_AT")
    if crash_at:
        when, _, target = crash_at.partition(":")
        send = venue.submit

        async def submit(intent: OrderIntent) -> None:  # die on either side of the one send that matters
            if intent.intent_id == target and when == "before_send":
                os.kill(os.getpid(), signal.SIGKILL)
            await send(intent)
            if intent.intent_id == target and when == "after_send":
                os.kill(os.getpid(), signal.SIGKILL)

        venue.submit = submit
    await venue.connect(oms.on_event)

    async def settle() -> None:
        # an order whose send the last launch may have made is unresolved until the venue's lookup settles
        # it (found, or not found after the venue's grace period): nothing new for its instrument before
        await oms.reconcile()
        deadline = time.monotonic() + 30
        while oms.unresolved() and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            await oms.reconcile()

    try:
        oms.recover()
        await settle()
        for n, (side, qty) in enumerate(plan):
            intent_id = f"{intent_prefix}-{n}"
            try:
                oms.order_for_intent(intent_id)
                continue  # sent (or refused) by an earlier launch
            except OrderError:
                pass
            intent = OrderIntent(intent_id, "crash", venue.account_id, instrument, Side(side), qty,
                                 OrderType.MARKET, time_in_force, time.time_ns())
            if oms.unresolved():
                await settle()
            await oms.submit(intent)
            print(f"sent {intent_id}", flush=True)
            await asyncio.sleep(pace_s)
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


def launch(runner: Path, state: Path, done: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, str(runner), str(state), str(done)], env=env, stdout=out,
                                stderr=subprocess.STDOUT)


def kill_runs(env_prefix: str) -> int:
    """How many launches to kill: ``<env_prefix>_CRASH_RUNS`` (20 by default)."""
    return int(os.environ.get(f"{env_prefix}_CRASH_RUNS", "20"))


def kill_at_random(runner: Path, state: Path, done: Path, env: dict[str, str], log: Path, *, runs: int,
                   seed: int = SEED, max_delay_s: float = 3.0) -> int:
    """Launch the runner ``runs`` times, each killed with SIGKILL after a random delay, then once to its end.

    Returns how many launches were killed (the others finished before their delay).
    """
    rng = random.Random(seed)
    kills = 0
    for _ in range(runs):
        process = launch(runner, state, done, env, log)
        try:
            process.wait(rng.uniform(0.3, max_delay_s))
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait(10)
            kills += 1
    for _ in range(3):  # the last launch runs to its end
        if done.exists():
            break
        launch(runner, state, done, env, log).wait(120)
    return kills


@contextmanager
def prices_moving(move: Callable[[int], None], every_s: float = 0.05) -> Iterator[None]:
    """Call ``move(n)`` every ``every_s`` seconds from a thread while the block runs: fills keep coming."""
    stop = threading.Event()

    def run() -> None:
        n = 0
        while not stop.wait(every_s):
            n += 1
            move(n)

    mover = threading.Thread(target=run, daemon=True)
    mover.start()
    try:
        yield
    finally:
        stop.set()
        mover.join(5)


def crash_at_random(runner: Path, tmp_path: Path, env: dict[str, str], move: Callable[[int], None], *, runs: int,
                    seed: int = SEED) -> tuple[Path, int]:
    """:func:`kill_at_random` while the prices move, then checks the last launch finished; (state folder, kills)."""
    state, done, log = tmp_path / "state", tmp_path / "done", tmp_path / "runner.log"
    state.mkdir()
    with prices_moving(move):
        kills = kill_at_random(runner, state, done, env, log, runs=runs, seed=seed)
    assert done.exists() and done.read_text() == "done\n", log.read_text()[-3000:]
    assert kills >= runs // 2, f"only {kills} of {runs} launches were killed; the runner finished too soon"
    return state, kills


def crash_at_send(runner: Path, tmp_path: Path, env: dict[str, str], crash_at: dict[str, str]) -> Path:
    """One launch killed at ``crash_at`` (``{"<PREFIX>_CRASH_AT": "before_send:k-5"}``), one to the end; the state."""
    state, done, log = tmp_path / "state", tmp_path / "done", tmp_path / "runner.log"
    state.mkdir()
    killed = launch(runner, state, done, env | crash_at, log)
    assert killed.wait(60) == -signal.SIGKILL, log.read_text()[-3000:]
    assert launch(runner, state, done, env, log).wait(60) == 0, log.read_text()[-3000:]
    assert done.read_text() == "done\n"
    return state


def check_send_crash(when: str, at_venue: set[str], account_id: str, summary: str) -> None:
    """After :func:`crash_at_send` at k-5: killed after its send, the venue holds it (found and adopted, not resent);
    killed before, the venue never saw it and it is rejected as never having reached the venue."""
    from tradebook.model.orders import client_order_id_for

    assert (client_order_id_for("k-5", account_id) in at_venue) is (when == "after_send"), summary
    assert ("never reached it: ['k-5']" in summary) is (when == "before_send"), summary


def check_books(state: Path, make_venue: Callable[[], Any], *, venue_fills: dict[str, tuple[str, Decimal]],
                venue_filled: dict[str, Decimal], venue_positions: dict[str, Decimal], orders: int) -> list[str]:
    """Open the books the runner left, reconcile them with the venue and compare them with the server's view.

    ``venue_fills``: the server's executions, fill id -> (client order id, quantity);
    ``venue_filled``: filled quantity per client order id the server holds (one order each);
    ``venue_positions``: instrument id -> net quantity the server holds (flat ones left out).
    Returns the intent ids rejected as never having reached the venue.
    """
    from tradebook.store.journal import Journal
    from tradebook.execution.oms import OrderManager
    from tradebook.model.orders import OrderStatus
    from tradebook.portfolio import Portfolio
    from tradebook.store import Store

    never: list[str] = []

    async def check() -> None:
        store, journal = Store(state / "tb.duckdb"), Journal(state / "orders.journal")
        venue = make_venue()
        oms = OrderManager(store, journal, venue, Portfolio(STARTING_CASH),
                       mode="live" if venue.is_live else "paper")
        oms.bind_loop()
        await venue.connect(oms.on_event)
        try:
            oms.recover()
            alerts = await oms.reconcile()
            bad = [a for a in alerts if a.kind in ("position_mismatch", "fill_mismatch", "duplicate_client_id",
                                                    "reconcile_conflict")]
            assert not bad, bad
            frame = oms.fills_frame()
            ours = dict(zip(frame["fill_id"], zip(frame["client_order_id"], frame["quantity"])))
            assert len(frame) == len(ours), "a fill booked twice"
            assert ours == venue_fills, (set(ours) ^ set(venue_fills))  # each execution once, none missing
            oms.flush()
            rows = store.con.execute("SELECT fill_id FROM fills").fetchall()
            assert sorted(r[0] for r in rows) == sorted(venue_fills)
            for order in oms.orders():
                filled = venue_filled.get(order.client_order_id)
                if order.status is OrderStatus.REJECTED:
                    assert filled is None, order  # never reached the venue, and never resent
                    never.append(order.intent.intent_id)
                    continue
                assert filled is not None and filled == order.filled_qty, order
            held = {k: v for (_, k), v in oms.portfolio.net_positions(venue.account_id).items() if v}
            assert held == venue_positions
            assert len(oms.orders()) == orders
        finally:
            await venue.close()
            oms.close()
            journal.close()
            store.close()

    asyncio.run(asyncio.wait_for(check(), 60))
    return never
