"""Crash test: kill -9 a replaying paper session, restart it on the same store, and check the books.

Each run copies a store holding the bundled BTCUSDT quotes and trades (2024-08-08/09)
and their calibration, then launches ``tests/crash_runner.py`` (a real :class:`Session`
replaying 11 minutes of data in 1 s steps; every 4th step a signal with an explicit
quantity: market and limit orders, buys and sells, some entries with a protective stop)
in a subprocess, sends it SIGKILL after a random delay (seeded: ``CRASH_TEST_SEED``
picks others), and launches it again on the same store and state until a launch
finishes the replay. Delays are aimed at each phase of a launch: startup (imports,
store and journals opening, reconciliation), the replay, just after the session
deferred a signal, and the end (final flush and stop). A second test kills the runner
at chosen writes instead (the venue filled and the order manager was not told, an
intent durable and not sent, inside a DuckDB flush transaction...).

After every kill, the journals as they lie on disk must already agree: the order
manager has no fill and no venue order id the paper venue did not journal first.
After each run, everything is opened fresh and:

1. no fill is lost or doubled: the venue's fills, the order manager's fills and the
   DuckDB ``fills`` table (after a final flush) hold the same fill ids, each once, with
   the same order, quantity, price and fee; the store's order events match the journal
   one to one, its orders and positions the order manager's;
2. no order is sent twice: the venue received each client order id once (one ``order``
   record per id in its journal) and never had to refuse a resend as a duplicate; the
   order manager wrote each intent once; every order it holds as acknowledged exists at
   the venue under the same venue order id, with the same filled quantity and status;
3. positions and cash equal the venue's (nothing adopted by reconciliation);
4. each signal was decided once (one decision record per signal id, every batch
   checkpointed once), at most one order per signal, a deferred signal was eventually
   sent or refused, and every filled entry with a stop loss has exactly one protective stop.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tradebook.data import load_bundled
from tradebook.sim.fidelity import run_calibration
from tradebook.store import Store

sys.path.insert(0, str(Path(__file__).parent))
import crash_runner  # noqa: E402  (the runner's strategy: the expected signals)

pytestmark = pytest.mark.slow

RUNNER = Path(__file__).with_name("crash_runner.py")
FILES = "binance_spot_btcusdt_20240808T2354-20240809T0005_"
INSTRUMENT = crash_runner.INSTRUMENT
RUNS = 4
MIN_KILLS = 20
MAX_RUNS = 12  # more runs only while kills keep missing (a launch that finishes before its kill ends its run)
KILLS_PER_RUN = 6
LAUNCH_TIMEOUT_S = 120
SEED = int(os.environ.get("CRASH_TEST_SEED", "20240809"))  # another seed: other kill points


@dataclass
class Kill:
    run: int
    launch: int
    delay_s: float
    aimed_at: str
    batches_before: int
    batches_after: int
    total_batches: int
    oms_records: int
    venue_records: int
    torn: list[str] = field(default_factory=list)
    store_lag: int | None = None  # journal records the store did not hold yet
    after_deferral: bool = False

    @property
    def phase(self) -> str:
        if self.after_deferral:
            return "just after a deferral"
        if self.batches_after == self.batches_before:
            return "end (flush/stop)" if self.batches_after >= self.total_batches else "startup"
        return "end (flush/stop)" if self.batches_after >= self.total_batches else "replay"

    def __str__(self) -> str:
        where = f"{self.phase}, batch {self.batches_after}/{self.total_batches}"
        extra = f", torn tail in {'+'.join(self.torn)}" if self.torn else ""
        lag = f", store {self.store_lag} records behind the OMS journal" if self.store_lag else ""
        return (f"run {self.run} launch {self.launch}: killed after {self.delay_s:.2f} s (aimed at {self.aimed_at}: "
                f"{where}; {self.oms_records} OMS / {self.venue_records} venue journal records{extra}{lag})")


# -- reading journals as they lie on disk (no Journal object: it would repair a torn tail) ------
def _decode(value: dict[str, Any]) -> Any:
    return Decimal(value["$d"]) if len(value) == 1 and "$d" in value else value


def read_journal(path: Path) -> tuple[list[dict[str, Any]], bool]:
    """Whole records of a journal file, and whether a torn last record follows them."""
    if not path.exists():
        return [], False
    data = path.read_bytes().rstrip(b"\0")  # NULs: space the journal reserved after its records
    records, position = [], 0
    while position < len(data):
        newline = data.find(b"\n", position)
        line = data[position:] if newline < 0 else data[position:newline]
        if newline < 0 or len(line) < 10 or int(line[:8], 16) != zlib.crc32(line[9:]):
            assert newline < 0 or newline + 1 == len(data), f"{path}: damaged record before the end of the file"
            return records, True
        records.append(json.loads(line[9:], object_hook=_decode))
        position = newline + 1
    return records, False


def journals(state: Path) -> dict[str, tuple[list[dict[str, Any]], bool]]:
    return {"session": read_journal(state / "session.journal"), "oms": read_journal(state / "oms.journal"),
            "venue": read_journal(state / "paper" / "paper_venue.journal")}


def batches_done(records: list[dict[str, Any]]) -> int:
    return sum(1 for r in records if r["kind"] == "batch")


def store_lag(store_path: Path, oms_records: int) -> int | None:
    try:
        with Store(store_path, read_only=True) as store:
            stored = store.query("SELECT max(position) AS p FROM journal_offsets")["p"].iloc[0]
            return oms_records - (0 if stored is None or stored != stored else int(stored))
    except Exception:  # noqa: BLE001 - only a landing detail for the report
        return None


# -- the invariants ---------------------------------------------------------------------------
def check_on_disk(state: Path, where: str) -> None:
    """What must hold at every instant: the venue journals before the order manager hears of it."""
    found = journals(state)
    oms, venue = found["oms"][0], found["venue"][0]
    venue_orders = {r["client_order_id"]: r for r in venue if r["kind"] == "order"}
    venue_fills = {r["fill_id"] for r in venue if r["kind"] == "fill"}
    receipts = Counter(r["client_order_id"] for r in venue if r["kind"] == "order")
    twice = sorted(c for c, n in receipts.items() if n > 1)
    assert not twice, f"{where}: the venue received {twice} more than once"
    for record in oms:
        if record["kind"] != "event":
            continue
        event = record["event"]
        if event["fill"] is not None:
            assert event["fill"]["fill_id"] in venue_fills, (
                f"{where}: the order manager booked fill {event['fill']['fill_id']} of {event['client_order_id']} "
                "that the venue's journal does not hold")
        if event["venue_order_id"] is not None:
            coid = event["client_order_id"]
            assert coid in venue_orders and venue_orders[coid]["venue_order_id"] == event["venue_order_id"], (
                f"{where}: the order manager holds {event['event_type']} of {coid} as venue order "
                f"{event['venue_order_id']}; the venue's journal has {venue_orders.get(coid)}")


def check_books(run_dir: Path, feed_start_ns: int, total_batches: int, where: str) -> dict[str, int]:
    """Open store, venue and order manager fresh after a run and compare their books."""
    from tradebook.store.journal import Journal
    from tradebook.execution.oms import RECONCILIATION_STRATEGY, OrderManager
    from tradebook.model.orders import OrderStatus
    from tradebook.portfolio import Portfolio
    from tradebook.session import MAX_DEFERRED_STEPS
    from tradebook.venues.paper import PaperVenue

    state = run_dir / "state"
    found = journals(state)
    for name, (_, torn) in found.items():
        assert not torn, f"{where}: the {name} journal ends in a torn record after a clean finish"
    session_records, oms_records, venue_records = (found[k][0] for k in ("session", "oms", "venue"))
    ends = Counter(r["end_ns"] for r in session_records if r["kind"] == "batch")
    assert len(ends) == total_batches and max(ends.values()) == 1, (
        f"{where}: the session checkpointed {sum(ends.values())} batches ({len(ends)} distinct), the feed has "
        f"{total_batches}; checkpointed more than once: {[(e, n) for e, n in ends.items() if n > 1][:5]}")

    store = Store(run_dir / "store.duckdb")
    try:
        # the session names its journal in the store; one name across all launches, else a restart
        # would have copied the journal into the store a second time under another name
        names = store.query("SELECT journal FROM journal_offsets")["journal"].tolist()
        assert len(names) == 1, f"{where}: the store holds offsets of several order journals: {names}"
        venue = PaperVenue.from_store(store, [INSTRUMENT], state / "paper")
        oms = OrderManager(store, Journal(state / "oms.journal"), venue, Portfolio(Decimal("100000")),
                           instruments={INSTRUMENT: store.instrument(INSTRUMENT)}, journal_name=names[0])
        oms.flush()
        venue_fills = {f.fill_id: f for f in asyncio.run(venue.fills())}
        venue_positions = asyncio.run(venue.positions())
        venue_account = asyncio.run(venue.account())
        stored_fills = store.fills()
        stored_events = store.order_events()
        stored_order_rows = store.orders()
        stored_positions = store.positions()
        oms_fills = oms.fills_frame()
        orders = {o.client_order_id: o for o in oms.orders()}
        net = {inst: qty for (_, inst), qty in oms.portfolio.net_positions(venue.account_id).items() if qty != 0}
        cash = oms.portfolio.cash
        venue_states = {c: asyncio.run(venue.order_status(c)) for c in orders}
        asyncio.run(venue.close())
    finally:
        store.close()

    # 1. no fill lost, none doubled
    adopted = oms_fills[oms_fills["strategy_id"] == RECONCILIATION_STRATEGY]
    assert adopted.empty, f"{where}: reconciliation had to adopt positions from the venue:\n{adopted}"
    doubled = oms_fills["fill_id"][oms_fills["fill_id"].duplicated()].tolist()
    assert not doubled, f"{where}: the order manager booked fills {doubled} twice"
    ours = {r.fill_id: r for r in oms_fills.itertuples()}
    lost = sorted(set(venue_fills) - set(ours))
    assert not lost, f"{where}: {len(lost)} venue fills never reached the order manager: " + ", ".join(
        f"{f} ({venue_fills[f].client_order_id} {venue_fills[f].side} {venue_fills[f].quantity})" for f in lost[:5])
    invented = sorted(set(ours) - set(venue_fills))
    assert not invented, f"{where}: the order manager has fills the venue never made: {invented[:5]}"
    for fill_id, fill in venue_fills.items():
        mine = ours[fill_id]
        theirs = (fill.client_order_id, fill.quantity, fill.price, fill.fee)
        assert (mine.client_order_id, mine.quantity, mine.price, mine.fee) == theirs, (
            f"{where}: fill {fill_id} differs: ours {(mine.client_order_id, mine.quantity, mine.price, mine.fee)}, "
            f"the venue's {theirs}")
    stored_ids = Counter(stored_fills["fill_id"])
    assert set(stored_ids) == set(venue_fills) and max(stored_ids.values(), default=1) == 1, (
        f"{where}: the store's fills table differs from the venue's fills: missing "
        f"{sorted(set(venue_fills) - set(stored_ids))[:5]}, extra {sorted(set(stored_ids) - set(venue_fills))[:5]}, "
        f"repeated {[f for f, n in stored_ids.items() if n > 1][:5]}")

    # the store's copy of the order journal: every record once, orders and positions as the order manager has them
    event_positions = Counter(stored_events["journal_position"])
    journaled = [i + 1 for i, r in enumerate(oms_records) if r["kind"] in ("intent", "event", "orphan", "illegal")]
    assert sorted(event_positions) == journaled and max(event_positions.values(), default=1) == 1, (
        f"{where}: order_events in the store do not match the journal one to one: "
        f"missing {sorted(set(journaled) - set(event_positions))[:5]}, extra "
        f"{sorted(set(event_positions) - set(journaled))[:5]}, repeated "
        f"{[p for p, n in event_positions.items() if n > 1][:5]}")
    stored_orders = {r.client_order_id: r for r in stored_order_rows.itertuples()}
    assert set(stored_orders) == set(orders), (
        f"{where}: the store's orders table has {len(stored_orders)} orders, the order manager {len(orders)}")
    for coid, order in orders.items():
        row = stored_orders[coid]
        assert (row.status, Decimal(str(row.filled_quantity))) == (str(order.status), order.filled_qty), (
            f"{where}: {coid} is stored as {row.status} filled {row.filled_quantity}; the order manager has "
            f"{order.status} filled {order.filled_qty}")
    stored_net = stored_positions.groupby("instrument_id")["quantity"].sum()
    stored_net = {i: q for i, q in stored_net.items() if q != 0}
    assert stored_net == {i: float(q) for i, q in net.items()}, (
        f"{where}: the store's positions {stored_net} differ from the order manager's {net}")

    # 2. no order sent twice
    receipts = Counter(r["client_order_id"] for r in venue_records if r["kind"] == "order")
    twice = {c: n for c, n in receipts.items() if n > 1}
    assert not twice, f"{where}: the venue received these client order ids more than once: {twice}"
    duplicates = [r["event"]["client_order_id"] for r in oms_records if r["kind"] == "duplicate"]
    assert not duplicates, f"{where}: the order manager resent orders the venue already held: {duplicates}"
    intents = Counter(r["intent"]["intent_id"] for r in oms_records if r["kind"] == "intent")
    assert max(intents.values(), default=1) == 1, (
        f"{where}: intents written twice: {[i for i, n in intents.items() if n > 1]}")
    unknown_to_us = sorted(set(receipts) - set(orders))
    assert not unknown_to_us, f"{where}: the venue holds orders the order manager never made: {unknown_to_us}"
    reached = {OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED, OrderStatus.CANCELLED,
               OrderStatus.EXPIRED, OrderStatus.PENDING_CANCEL, OrderStatus.PENDING_REPLACE}
    for coid, order in orders.items():
        state_at_venue = venue_states[coid]
        if order.status in reached or order.venue_order_id is not None:
            assert state_at_venue is not None, (
                f"{where}: {coid} ({order.intent.intent_id}) is {order.status} here with venue order "
                f"{order.venue_order_id}, but the venue never received it")
        if state_at_venue is None:
            continue
        order_record = next(r for r in venue_records if r["kind"] == "order" and r["client_order_id"] == coid)
        assert order_record["intent_id"] == order.intent.intent_id, (
            f"{where}: {coid} is intent {order.intent.intent_id} here, {order_record['intent_id']} at the venue")
        # an order whose acknowledgement is still in flight has no venue order id here yet
        assert order.filled_qty == state_at_venue.filled_qty and order.venue_order_id in (
            None, state_at_venue.venue_order_id), (
            f"{where}: {coid} filled {order.filled_qty} as {order.venue_order_id} here, "
            f"{state_at_venue.filled_qty} as {state_at_venue.venue_order_id} at the venue")
        assert str(order.status) == str(state_at_venue.status), (
            f"{where}: {coid} is {order.status} here, {state_at_venue.status} at the venue")

    # 3. positions and cash
    assert net == venue_positions, f"{where}: positions differ: ours {net}, the venue's {venue_positions}"
    assert cash == venue_account.cash, f"{where}: cash differs: ours {cash}, the venue's {venue_account.cash}"

    # 4. each signal decided once; what was decided happened (a deferral is retried until sent or refused).
    # One exception, by rule: an order made durable and killed before the venue received it gets a
    # "not sent" decision after the restart, and the same signal from the replayed step is decided
    # again and sent under <signal_id>:resend:<n> (session._resend_number); that order is the signal's.
    expected = {}
    for index in range(total_batches):
        plan = crash_runner.signal_plan(feed_start_ns, feed_start_ns + index * crash_runner.STEP_NS)
        if plan is not None:
            expected[plan[0]] = index
    decisions: dict[str, list[dict[str, Any]]] = {}
    never_reached: set[str] = set()
    not_sent: set[str] = set()  # signals whose last word is 'not sent': a later decision (the resend) replaces it
    for record in session_records:
        if record["kind"] == "decision":
            decision = record["decision"]
            signal_id = decision["signal_id"]
            if decision.get("code") == "never_reached_venue":
                assert signal_id in decisions, f"{where}: 'not sent' before any decision: {decision}"
                never_reached.update(decision["client_order_ids"])
                if not all(":stop" in orders[c].intent.intent_id for c in decision["client_order_ids"]):
                    decisions[signal_id] = [decision]
                    not_sent.add(signal_id)
                continue  # a protective stop: the order manager sent it again under a new id
            if signal_id in not_sent:
                not_sent.discard(signal_id)
                decisions[signal_id] = []
            decisions.setdefault(signal_id, []).append(decision)
    for coid in never_reached:
        assert str(orders[coid].status) == "rejected" and orders[coid].reason == "never reached the venue", (
            f"{where}: {coid} was decided 'not sent' but is {orders[coid].status} ({orders[coid].reason})")
    repeated = {s: [d["outcome"] for d in ds] for s, ds in decisions.items() if len(ds) > 1}
    assert not repeated, f"{where}: signals decided more than once: {repeated}"
    undecided = sorted(set(expected) - set(decisions))
    assert not undecided, f"{where}: {len(undecided)} signals have no decision record: {undecided[:10]}"
    assert set(decisions) == set(expected), f"{where}: decisions for unknown signals {set(decisions) - set(expected)}"
    per_signal: dict[str, list[Any]] = {}
    stops: dict[str, list[Any]] = {}
    for order in orders.values():
        if order.intent.strategy_id == crash_runner.STRATEGY_ID and order.client_order_id not in never_reached:
            signal_id = order.intent.intent_id.split(":")[1]
            (stops if ":stop" in order.intent.intent_id else per_signal).setdefault(signal_id, []).append(order)
    several = {s: [o.client_order_id for o in os_] for s, os_ in per_signal.items() if len(os_) > 1}
    assert not several, f"{where}: signals with several orders: {several}"
    for signal_id, (decision,) in decisions.items():
        made = [o.client_order_id for o in per_signal.get(signal_id, [])]
        if decision["outcome"] in ("sent", "rejected") and decision["client_order_ids"]:
            assert made == decision["client_order_ids"], (
                f"{where}: signal {signal_id} was {decision['outcome']} as {decision['client_order_ids']}; "
                f"the order manager holds {made}")
        elif decision["outcome"] == "deferred":
            # retried every step until sent or refused (at most MAX_DEFERRED_STEPS); only the last
            # steps of the replay may leave one unresolved
            settled_by = expected[signal_id] + MAX_DEFERRED_STEPS + 1
            assert made or settled_by >= total_batches, (
                f"{where}: signal {signal_id} was deferred at batch {expected[signal_id]} ({decision['reason']}) "
                f"and never sent nor refused by the end ({total_batches} batches): the deferral was lost")
        else:
            assert not made, f"{where}: signal {signal_id} was decided {decision['outcome']!r} but has orders {made}"
    # 5. every filled entry with a stop loss got its protective stop, once, for what filled
    for signal_id, entries in per_signal.items():
        entry = entries[0]
        want = entry.intent.stop_loss is not None and entry.is_done and entry.filled_qty > 0
        got = stops.get(signal_id, [])
        assert len(got) == (1 if want else 0), (
            f"{where}: entry {signal_id} ({entry.status}, filled {entry.filled_qty}, stop loss "
            f"{entry.intent.stop_loss}) has protective stops {[(o.client_order_id, o.status) for o in got]}")
        if got:
            assert got[0].intent.quantity == entry.filled_qty and got[0].intent.stop_price == entry.intent.stop_loss, (
                f"{where}: the stop of {signal_id} is {got[0].intent.quantity} @ {got[0].intent.stop_price}; "
                f"expected {entry.filled_qty} @ {entry.intent.stop_loss}")
    return {"orders": len(orders), "fills": len(venue_fills), "signals": len(expected),
            "position": int(net.get(INSTRUMENT, Decimal(0)) * 100_000)}


# -- the test ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def template_store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("crash") / "template.duckdb"
    with Store(path) as store:
        store.ingest(load_bundled(FILES + "l1_quotes.csv.gz"))
        store.ingest(load_bundled(FILES + "trades.csv.gz"))
        run_calibration(store, [INSTRUMENT])
    return path


def feed_grid(store_path: Path) -> tuple[int, int]:
    """(first quote ns, number of 1 s batches) of the replay the runner builds."""
    with Store(store_path, read_only=True) as store:
        span = store.query("SELECT min(ts_ns) AS lo, max(ts_ns) AS hi FROM quotes").iloc[0]
    lo, hi = int(span["lo"]), int(span["hi"])
    return lo, -(-(hi + 1 - lo) // crash_runner.STEP_NS)


class Pacer:
    """Draws kill delays that land in each phase of a launch, from what earlier launches took here.

    A launch spends ``startup_s`` on imports, opening the store and journals and
    reconciling, then replays the remaining batches at ``rate`` per second, then flushes
    and stops. Estimates start from this machine's typical values and follow observation.
    """

    # 'deferral': as soon as the session records a deferred signal (the spread or book filter held its
    # order; it is retried at the next steps), or at a random replay time if none comes
    PHASES = (("startup", 0.25), ("replay", 0.45), ("deferral", 0.15), ("end", 0.15))

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.startup_s = 1.3
        self.rate = 200.0  # batches per second

    def delay(self, remaining_batches: int) -> tuple[str, float]:
        phase = self.rng.choices([p for p, _ in self.PHASES], [w for _, w in self.PHASES])[0]
        replay_s = remaining_batches / self.rate
        if phase == "startup":
            return phase, self.rng.uniform(0.05, self.startup_s)
        if phase in ("replay", "deferral"):
            return phase, self.startup_s + self.rng.uniform(0, replay_s)
        return phase, self.startup_s + replay_s + self.rng.uniform(-0.05, 0.3)

    def observe(self, first_batch_s: float | None, batches: int, elapsed_s: float) -> None:
        if first_batch_s is None:
            # killed before its first batch although aimed past the estimated startup: a restart
            # deep in a run (recovery, reconciliation, the recovery copy) takes longer than the fresh
            # starts the estimate came from. Without this, every later aim lands in startup too.
            if elapsed_s >= self.startup_s:
                self.startup_s = 1.25 * elapsed_s
            return
        self.startup_s = 0.5 * self.startup_s + 0.5 * first_batch_s
        if batches > 20 and elapsed_s - first_batch_s > 0.2:
            self.rate = 0.5 * self.rate + 0.5 * batches / (elapsed_s - first_batch_s)


@dataclass
class Launch:
    killed: bool
    returncode: int | None
    elapsed_s: float
    first_batch_s: float | None  # when the session checkpointed its first batch of this launch


DEFERRED_MARK = b'"outcome":"deferred"'


def _records_bytes(journal: Path) -> bytes:
    """A journal's records: an open journal reserves space (NUL bytes) after them, so its size says nothing."""
    return journal.read_bytes().rstrip(b"\0") if journal.exists() else b""


def _records_end(journal: Path) -> int:
    return len(_records_bytes(journal))


def run_once(run_dir: Path, kill_after_s: float | None, kill_at_deferral: bool = False,
             crash_at: str | None = None) -> Launch:
    """Launch the runner; SIGKILL it after ``kill_after_s`` unless it has finished by then
    (``kill_at_deferral``: or as soon as the session journals a deferred signal; ``crash_at``:
    the runner kills itself at that write, see ``crash_runner.install_crash_point``)."""
    journal = run_dir / "state" / "session.journal"
    size = _records_end(journal)
    with open(run_dir / "runner.log", "ab") as log:
        process = subprocess.Popen([sys.executable, str(RUNNER), str(run_dir / "store.duckdb"),
                                    str(run_dir / "state"), str(run_dir / "done.json")],
                                   stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, "CRASH_AT": crash_at} if crash_at else None)
    started = time.monotonic()
    first_batch_s = None
    while True:
        elapsed = time.monotonic() - started
        data = _records_bytes(journal)
        grown = len(data) > size
        if first_batch_s is None and grown:
            first_batch_s = elapsed
        if kill_at_deferral and grown and DEFERRED_MARK in data[size:]:
            kill_after_s = elapsed
        if process.poll() is not None:
            return Launch(False, process.returncode, elapsed, first_batch_s)
        if kill_after_s is not None and elapsed >= kill_after_s:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            return Launch(True, process.returncode, elapsed, first_batch_s)
        if elapsed > LAUNCH_TIMEOUT_S:
            process.kill()
            process.wait()
            pytest.fail(f"the runner in {run_dir} did not finish within {LAUNCH_TIMEOUT_S} s")
        time.sleep(0.003)


def test_kill_minus_nine_at_random_points_loses_nothing_and_sends_nothing_twice(template_store, tmp_path):
    pacer = Pacer(random.Random(SEED))
    feed_start_ns, total_batches = feed_grid(template_store)
    kills: list[Kill] = []
    summaries = []
    started = time.monotonic()
    run = 0
    while run < RUNS or (len(kills) < MIN_KILLS and run < MAX_RUNS):
        run += 1
        run_dir = tmp_path / f"run{run}"
        run_dir.mkdir()
        shutil.copy(template_store, run_dir / "store.duckdb")
        state = run_dir / "state"
        kills_wanted = max(KILLS_PER_RUN, -(-(MIN_KILLS - len(kills)) // max(1, RUNS - run + 1)))
        launches = 0
        while not (run_dir / "done.json").exists():
            launches += 1
            assert launches <= 60, f"run {run}: still not finished after {launches} launches"
            before = journals(state)
            done_before = batches_done(before["session"][0])
            aim, delay = pacer.delay(total_batches - done_before) if launches <= kills_wanted else (None, None)
            result = run_once(run_dir, delay, kill_at_deferral=aim == "deferral")
            after = journals(state)
            pacer.observe(result.first_batch_s, batches_done(after["session"][0]) - done_before, result.elapsed_s)
            if result.killed:
                kill = Kill(run, launches, result.elapsed_s, aim, done_before, batches_done(after["session"][0]),
                            total_batches, len(after["oms"][0]), len(after["venue"][0]),
                            [k for k, (_, torn) in after.items() if torn])
                kill.store_lag = store_lag(run_dir / "store.duckdb", kill.oms_records)
                kill.after_deferral = aim == "deferral" and sum(
                    1 for r in after["session"][0] if r["kind"] == "decision" and r["decision"]["outcome"] == "deferred"
                ) > sum(1 for r in before["session"][0]
                        if r["kind"] == "decision" and r["decision"]["outcome"] == "deferred")
                kills.append(kill)
                check_on_disk(state, str(kill))
            else:
                assert result.returncode == 0, (
                    f"run {run} launch {launches} failed (exit {result.returncode}):\n"
                    + (run_dir / "runner.log").read_text()[-4000:])
        mine = [k for k in kills if k.run == run]
        where = f"run {run} after {len(mine)} kills [" + "; ".join(map(str, mine)) + "]"
        summaries.append((run, check_books(run_dir, feed_start_ns, total_batches, where)))

    elapsed = time.monotonic() - started
    report = "\n".join(map(str, kills))
    print(f"\n{len(kills)} kills in {run} runs, {elapsed:.0f} s\n{report}\nbooks per run: {summaries}")
    assert len(kills) >= MIN_KILLS, f"only {len(kills)} kills landed before the runs finished:\n{report}"
    phases = Counter(k.phase for k in kills)
    assert phases["startup"] and phases["replay"], f"kills did not cover startup and replay: {phases}\n{report}"


# Kills at chosen writes, in the order a replay meets them: each window of the order path where
# one side knows something the other does not yet.
CRASH_POINTS = (
    "venue:order:3",  # the venue received an order; its acknowledgement never left
    "oms:intent:4",  # an intent is durable; the venue never saw it
    "oms:submitted:4",  # ... and marked submitted, still not at the venue
    "venue:accepted:4",  # the venue acknowledged; the order manager was not told
    "venue:fill:4",  # the venue filled; the order manager was not told
    "oms:filled:4",  # the order manager booked a fill; the session did not record its decision
    "session:decision:4",  # a decision recorded; its batch not checkpointed
    "store:order_events:1",  # inside a flush transaction (here the recovery flush), before its commit
    "store:positions:1",  # ... and in the one that copies positions
    "oms:expired:1",  # day orders expiring at 00:00 UTC
    "venue:fill:9",
    "session:batch:40",  # right after a checkpoint
    "runner:finished:1",  # the replay is over (every batch checkpointed), the session not stopped
)


def test_kill_minus_nine_at_each_step_of_the_order_path(template_store, tmp_path):
    feed_start_ns, total_batches = feed_grid(template_store)
    run_dir = tmp_path / "points"
    run_dir.mkdir()
    shutil.copy(template_store, run_dir / "store.duckdb")
    state = run_dir / "state"
    landed, missed = [], []
    for point in CRASH_POINTS:
        if (run_dir / "done.json").exists():
            missed.append(point)
            continue
        before = batches_done(journals(state)["session"][0])
        result = run_once(run_dir, None, crash_at=point)
        assert result.returncode == -signal.SIGKILL or (result.returncode == 0 and (run_dir / "done.json").exists()), (
            f"crash point {point}: the runner exited {result.returncode}:\n"
            + (run_dir / "runner.log").read_text()[-4000:])
        if result.returncode == 0:
            missed.append(point)
            continue
        after = batches_done(journals(state)["session"][0])
        landed.append(f"{point} at batch {after}/{total_batches} (from {before})")
        check_on_disk(state, f"killed at {point}")
    while not (run_dir / "done.json").exists():
        result = run_once(run_dir, None)
        assert result.returncode == 0, (run_dir / "runner.log").read_text()[-4000:]
    print("\ncrash points:\n" + "\n".join(landed) + (f"\nnot reached: {missed}" if missed else ""))
    assert len(landed) == len(CRASH_POINTS), f"crash points never reached: {missed}"
    check_books(run_dir, feed_start_ns, total_batches, "after the crash points " + ", ".join(CRASH_POINTS))


def test_a_flush_never_puts_in_the_store_what_the_journal_has_not_made_durable(template_store, tmp_path):
    """Acks are journaled without fdatasync; a DuckDB commit is durable. Were the store to copy
    an ack the journal could still lose (a power loss, unlike kill -9, drops unsynced writes),
    the next start would find the store ahead of its journal and refuse to run."""
    from tradebook.store.journal import Journal
    from tradebook.execution.oms import OrderManager
    from tradebook.model.instruments import Side
    from tradebook.model.orders import OrderIntent, OrderStatus, OrderType, TimeInForce
    from tradebook.portfolio import Portfolio
    from tradebook.venues.paper import PaperVenue

    shutil.copy(template_store, tmp_path / "store.duckdb")
    with Store(tmp_path / "store.duckdb") as store:
        quotes = store.quotes(INSTRUMENT)
        venue = PaperVenue.from_store(store, [INSTRUMENT], tmp_path / "paper")
        journal = Journal(tmp_path / "oms.journal")
        oms = OrderManager(store, journal, venue, Portfolio(Decimal("100000")),
                           instruments={INSTRUMENT: store.instrument(INSTRUMENT)})
        intent = OrderIntent("flush:1", "flush", venue.account_id, INSTRUMENT, Side.BUY, Decimal("0.01"),
                             OrderType.LIMIT, TimeInForce.GTC, int(quotes["ts_ns"].iloc[10]),
                             limit_price=Decimal("60000.00"))

        async def trade() -> None:
            await venue.connect(oms.on_event)
            venue.feed(INSTRUMENT, quotes.iloc[:10])
            await oms.submit(intent)
            venue.feed(INSTRUMENT, quotes.iloc[10:200])  # the order arrives: its ack is journaled unsynced
            await venue.close()

        asyncio.run(trade())
        assert oms.order(intent.client_order_id).status is OrderStatus.ACCEPTED
        assert oms.flush() == 3  # intent, submitted, accepted
        assert store.journal_position(oms.journal_name) == len(journal) == 3
        assert journal.commit() is False, "the store holds journal records that were not yet durable on disk"
        journal.close()
