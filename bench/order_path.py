"""Order-path latency and replay throughput: signal -> intent durable -> venue ack -> fill durable.

What one measured order is (issue 4, Done-when 5). The real parts, nothing stubbed:
a :class:`~tradebook.store.Store` in a temp dir holding the bundled BTCUSDT capture and
its calibration; the real :class:`OrderManager` with its fsync'd journal and its
background DuckDB flush thread running with a session's defaults (every 200 ms; once 256
records or more wait at a tick, only when the path has been quiet for 5 ms or the oldest
record is 5 s old: back-to-back orders are never quiet, so here it flushes every 5 s); the real
:class:`PaperVenue` with its own fsync'd journal, filling with the calibrated model.
The model's latency is set to zero so the venue's answer comes from the data alone.

Per order, the clock runs from the moment the signal enters the path until the fill is
durable in the order manager's journal and booked in the portfolio:

1. *pre-trade*: reference quote -> sizing -> router (strength 0.95: a market order) ->
   pre-trade risk (every check runs) -> circuit breaker, the steps of ``Session._on_signal``;
2. *submit*: ``OrderManager.submit`` journals the intent (fdatasync) and only then calls
   ``PaperVenue.submit`` (the venue journals its receipt);
3. *ack + fill*: the next recorded quote is fed to the venue (a request stamped at the
   last quote's time waits for later data; zero latency means it arrives with the very
   next quote). The venue acknowledges and fills, journals both, delivers the events;
   the order manager journals the fill (fdatasync) and books it. The order's status is
   checked to be ``filled`` before the clock stops.

Orders alternate buy and sell of 0.001 BTC (a cash account cannot sell short), one per
quote of the capture tiled in time. Risk limits that would stop a 100,000-order
stream by design are widened (order rate, daily loss from fees, thin-book filter) so that
every check still runs and passes.

Garbage collection: after setup the bench calls :func:`tradebook.runtime.tune_gc`, as a
``Session`` does when it starts: everything alive (the capture, the calibration, DuckDB's and
pandas' module state) is frozen out of the collector's reach and collections are rarer. In
10,000-order runs freezing cut the worst single order from ~110 ms to ~50 ms; on the 50,000-order
replay the thresholds took the order path from about 8,000 to 9,100 orders/s.

fsyncs are counted by timing ``os.fdatasync`` (what the journals call); the DuckDB flush
thread's share is the difference between runs with it on and off, plus its measured busy time.

Replay throughput: the same order manager + venue taking a session's steps (50 signals
priced, checked and staged at a quote, sent together after one durable write, then filled by
the next 50 recorded quotes, whose events come back as one batch), journals synced and not
(throwaway replays may skip fsync). Two rates: the order path's (until the last fill is
durable in the journals, with the background copy to DuckDB running alongside, as it trails
the journal by design) and the rate until the store holds everything. Then a whole
``Session`` replaying the capture in 1 s steps with a strategy sending 20 orders a step.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import os
import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd

from tradebook.alerts import AlertCenter, recent_alerts
from tradebook.config import AlertsConfig, RiskConfig, TradebookConfig
from tradebook.data import load_bundled
from tradebook.store.journal import Journal
from tradebook.execution.bus import EventBus
from tradebook.execution.publisher import SessionPublisher
from tradebook.execution.oms import OrderManager
from tradebook.execution.risk import CircuitBreaker, KillSwitch, PreTradeRisk, ReferenceQuote, RiskAction, RiskContext
from tradebook.execution.router import OrderRouter, QuoteSnapshot
from tradebook.execution.sizing import sizer_from_config
from tradebook.model.calendars import is_trading
from tradebook.model.instruments import Side
from tradebook.model.orders import OrderStatus, Signal
from tradebook.portfolio import Portfolio
from tradebook.runtime import tune_gc
from tradebook.sim.fidelity import load_model, run_calibration
from tradebook.sim.fill_model import LatencyModel
from tradebook.store import Store
from tradebook.tca import TcaRecorder, TcaUpdater, calibration_ids, cost_by_instrument
from tradebook.venues.paper import PaperVenue

CAPTURE = "binance_spot_btcusdt_20240808T2354-20240809T0005_"
INSTRUMENT = "BTCUSDT.BINANCE"
QUANTITY = Decimal("0.001")
ORDERS = 100_000
QUICK_ORDERS = 10_000
# Long enough for the background copy to DuckDB (every 5 s under sustained flow) to run
# alongside more than once, as in a long replay; shorter runs finish before the first copy
REPLAY_ORDERS = 100_000
QUICK_REPLAY_ORDERS = 20_000
SESSION_ORDERS_PER_STEP = 20
SUBSCRIBER_ORDERS = 20_000  # per run of the comparison with and without the bus's subscribers (4 runs)
TARGET_P99_MS = 2.0
TARGET_REPLAY_OPS = 10_000
_NS = 1_000_000_000


# -- fsync accounting ---------------------------------------------------------------------------------------------------
class FsyncMeter:
    """Counts and times ``os.fdatasync`` calls (the journals' only sync) on the measuring thread."""

    def __init__(self) -> None:
        self.count = 0
        self.ns = 0
        self._real = os.fdatasync
        self._thread = threading.get_ident()

    def __enter__(self) -> FsyncMeter:
        real, meter = self._real, self

        def timed(fd: int) -> None:
            start = time.perf_counter_ns()
            real(fd)
            if threading.get_ident() == meter._thread:
                meter.count += 1
                meter.ns += time.perf_counter_ns() - start

        os.fdatasync = timed
        return self

    def __exit__(self, *exc: object) -> None:
        os.fdatasync = self._real


# -- the workload -------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Workload:
    store: Store
    model: object
    instrument: object
    quotes: pd.DataFrame  # capture quotes, valid ones only
    trades: pd.DataFrame


def workload(tmp: Path) -> Workload:
    store = Store(tmp / "bench.duckdb")
    quotes, trades = load_bundled(CAPTURE + "l1_quotes.csv.gz"), load_bundled(CAPTURE + "trades.csv.gz")
    store.ingest(quotes)
    store.ingest(trades)
    run_calibration(store, [INSTRUMENT])
    model = load_model(store, INSTRUMENT)
    # zero latency: the ack and the fill come with the first quote after the submit
    model = dataclasses.replace(model, latency=LatencyModel(0, 0, 0.0))
    q = quotes.frame
    # touches at least one order deep: the paper venue fills a market order at most the displayed size (an IOC's
    # remainder is cancelled), and every measured order must fill whole
    ok = (q["bid_px"] < q["ask_px"]) & (q["bid_sz"] >= float(QUANTITY)) & (q["ask_sz"] >= float(QUANTITY))
    return Workload(store, model, store.instrument(INSTRUMENT), q[ok].reset_index(drop=True), trades.frame)


def tiled_quotes(quotes: pd.DataFrame, rows: int) -> tuple[np.ndarray, ...]:
    """``rows`` quotes: the capture repeated, each copy shifted past the previous one."""
    ts = quotes["ts_ns"].to_numpy(np.int64)
    span = int(ts[-1] - ts[0])
    shift = span + span // (len(ts) - 1)
    copies = -(-rows // len(ts))
    tiled_ts = (ts[None, :] + (np.arange(copies, dtype=np.int64) * shift)[:, None]).ravel()[:rows]
    columns = [np.tile(quotes[c].to_numpy(np.float64), copies)[:rows] for c in ("bid_px", "ask_px", "bid_sz", "ask_sz")]
    return (tiled_ts, *columns)


def bench_config() -> TradebookConfig:
    # every check runs; the limits a 100k-order stream of 60-dollar round trips would hit by design are widened
    risk = RiskConfig(max_orders_per_minute=100_000_000, daily_loss_limit=None, min_touch_notional=Decimal(0))
    return dataclasses.replace(TradebookConfig(), risk=risk)


class Subscribers:
    """What a running session has on its event bus: the TCA updater (after each store flush), the alert center
    (every event), and a dashboard-like reader (positions, orders, fills, alerts and TCA by instrument through a
    cursor of the store's connection, at most once a second, as a dashboard refreshes)."""

    def __init__(self, rig: Rig) -> None:
        store = rig.work.store
        self.bus = EventBus()
        self.publisher = SessionPublisher(self.bus, lambda: rig.now)
        self.publisher.attach(rig.oms)
        self.tca = TcaUpdater(store, TcaRecorder(), calibrations=calibration_ids(store, [INSTRUMENT]))
        self.bus.subscribe("tca", self.tca.on_flushed, kinds=("flushed",))
        self.alerts = AlertCenter(store, AlertsConfig(), sinks=[], account_id=rig.venue.account_id, risk=rig.risk,
                                  models={INSTRUMENT: rig.work.model}, daily_pnl=lambda: Decimal(0)).attach(self.bus)
        self._cursor = store.con.cursor()
        self._next_read = 0.0
        self.reads = 0
        self.bus.subscribe("dashboard", self._refresh)

    def _refresh(self, event: object) -> None:
        if time.monotonic() < self._next_read:
            return
        self._next_read = time.monotonic() + 1.0
        cursor = self._cursor
        cursor.execute("SELECT * FROM positions").df()
        cursor.execute("SELECT * FROM orders ORDER BY ts_last DESC LIMIT 200").df()
        cursor.execute("SELECT * FROM fills ORDER BY ts_event DESC LIMIT 200").df()
        recent_alerts(cursor, 200)
        cost_by_instrument(cursor)
        self.reads += 1

    def close(self) -> str:
        """Stop them all; what each subscriber handled, dropped and failed."""
        subscriptions = self.bus.subscriptions
        self.bus.close(30)
        self.alerts.close(30)
        self.tca.finish()
        self._cursor.close()
        counts = ", ".join(f"{s.name} {s.delivered:,}/{s.dropped:,}/{s.failed:,}" for s in subscriptions)
        return (f"{self.bus.published:,} events published; handled/dropped/failed: {counts}; {self.reads} dashboard "
                "reads")


class Rig:
    """One order manager + paper venue on a fresh state dir, and the pre-trade steps of a session."""

    def __init__(self, work: Workload, state: Path, *, sync: bool, flush_thread: bool,
                 subscribers: bool = False) -> None:
        self.work = work
        self.now = 0
        clock = lambda: self.now  # noqa: E731 - the replay clock
        self.venue = PaperVenue(state / "paper", models={INSTRUMENT: work.model},
                                instruments={INSTRUMENT: work.instrument}, clock=clock, sync=sync,
                                starting_cash=Decimal(1_000_000))
        self.portfolio = Portfolio(Decimal(1_000_000))
        self.oms = OrderManager(work.store, Journal(state / "oms.journal", sync=sync), self.venue, self.portfolio,
                                clock=clock, instruments={INSTRUMENT: work.instrument},
                                journal_name=f"bench-{state.name}")
        config = bench_config()
        self.config = config
        self.kill_switch = KillSwitch()
        self.risk = PreTradeRisk(config.risk, self.kill_switch)
        self.breaker = CircuitBreaker.from_config(config.risk, self.kill_switch, self.venue.name)
        self.sizer = sizer_from_config(config)
        self.router = OrderRouter(_router_config(config), instruments={INSTRUMENT: work.instrument})
        self.instruments = {INSTRUMENT: work.instrument}
        self.flush_thread = flush_thread
        self.quote: tuple = ()
        self.flush_busy_ns = 0
        self.flushes = 0
        real_flush = self.oms.flush

        def timed_flush() -> int:
            start = time.perf_counter_ns()
            try:
                return real_flush()
            finally:
                self.flush_busy_ns += time.perf_counter_ns() - start
                self.flushes += 1

        self.oms.flush = timed_flush  # measured, not changed
        self.subscribers = Subscribers(self) if subscribers else None

    async def open(self) -> None:
        await self.venue.connect(self.oms.on_event, on_events=self.oms.on_events)
        self.oms.recover()
        if self.flush_thread:
            self.oms.start()

    async def close(self) -> str:
        self.oms.close(flush=True)
        await self.venue.close()
        return self.subscribers.close() if self.subscribers is not None else ""

    def feed(self, ts: int, bid: float, ask: float, bid_sz: float, ask_sz: float) -> None:
        self.now = ts
        self.venue.on_quotes(INSTRUMENT, ts, bid, ask, bid_sz, ask_sz)
        self.quote = (ts, bid, ask, bid_sz, ask_sz)
        self.portfolio.mark(INSTRUMENT, Decimal(repr((bid + ask) / 2)), ts)
        if self.subscribers is not None:
            self.subscribers.publisher.quote(INSTRUMENT, ts, bid, ask)

    async def signal(self, signal: Signal, *, stage: bool = False):
        """Session._on_signal + Session._send for one signal; returns the order (None if not sent).

        ``stage``: as a session does during a strategy step on a simulated venue, write the
        intent now and send it with the step's others (:meth:`OrderManager.send_staged`).
        """
        instrument = self.work.instrument
        if not is_trading(instrument, self.now):
            return None
        ts, bid, ask, bid_sz, ask_sz = self.quote
        snapshot = QuoteSnapshot.from_quote(INSTRUMENT, ts, bid, ask, bid_sz, ask_sz)
        decision = self.sizer.size(signal, instrument, snapshot.mid, self.portfolio.equity)
        plan = self.router.route(signal, decision.quantity, snapshot, instrument, account_id=self.venue.account_id,
                                 adv=None, volatility_bps=0.0, ts_ns=self.now)
        intent = plan.intents[0]
        reference = ReferenceQuote.from_snapshot(snapshot)  # the snapshot's Decimals (its sizes are all > 0 here)
        prices = self.portfolio.last_prices(self.instruments)
        positions = self.portfolio.net_positions_by_instrument(self.venue.account_id)
        ctx = RiskContext(now_ns=self.now, equity=self.portfolio.equity, daily_pnl=Decimal(0), quote=reference,
                          positions=positions, prices=prices, instruments=self.instruments)
        verdict = self.risk.check(intent, instrument, ctx)
        if verdict.action is not RiskAction.ACCEPT:
            raise AssertionError(f"bench order refused by risk: {verdict}")
        if not self.breaker.allow(self.now):
            raise AssertionError("bench order refused by the breaker")
        if stage:
            order = self.oms.stage(intent)
            self.risk.record_sent(self.now)
            return order
        order = await self.oms.submit(intent)
        self.risk.record_sent(self.now)
        self.breaker.record_success(self.now)
        return order

    async def send_staged(self) -> None:
        for order in await self.oms.send_staged():
            if order.status is OrderStatus.REJECTED:
                raise AssertionError(f"bench order rejected by the venue: {order.reason}")
            self.breaker.record_success(self.now)


def _router_config(config: TradebookConfig):
    from tradebook.session import router_config

    return router_config(config)


# -- latency ------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class LatencyResult:
    total_ns: np.ndarray
    submit_ns: np.ndarray
    fill_ns: np.ndarray
    fsync_ns: np.ndarray
    fsyncs: np.ndarray
    wall_s: float
    flush_busy_s: float
    flushes: int
    subscribers: str = ""  # what the bus's subscribers did (a run with them attached)


async def _latency_run(work: Workload, state: Path, orders: int, *, flush_thread: bool,
                       subscribers: bool = False, sync: bool = True) -> LatencyResult:
    rig = Rig(work, state, sync=sync, flush_thread=flush_thread, subscribers=subscribers)
    await rig.open()
    ts, bid, ask, bid_sz, ask_sz = tiled_quotes(work.quotes, orders + 1)
    total, sub, fil, fs_ns, fs_n = (np.zeros(orders, np.int64) for _ in range(5))
    rig.feed(int(ts[0]), float(bid[0]), float(ask[0]), float(bid_sz[0]), float(ask_sz[0]))
    clock = time.perf_counter_ns
    wall = time.perf_counter()
    with FsyncMeter() as meter:
        for i in range(orders):
            signal = Signal("bench", f"s{i}", INSTRUMENT, Side.BUY if i % 2 == 0 else Side.SELL, rig.now,
                            strength=0.95, quantity=QUANTITY)
            n0, f0 = meter.count, meter.ns
            t0 = clock()
            order = await rig.signal(signal)
            t1 = clock()  # submit returned: the intent is durable and the venue has received the order
            j = i + 1
            rig.feed(int(ts[j]), float(bid[j]), float(ask[j]), float(bid_sz[j]), float(ask_sz[j]))
            t2 = clock()  # the venue acknowledged and filled; the fill is durable in the OMS journal
            total[i], sub[i], fil[i] = t2 - t0, t1 - t0, t2 - t1
            fs_ns[i], fs_n[i] = meter.ns - f0, meter.count - n0
            if rig.oms.order(order.client_order_id).status is not OrderStatus.FILLED:
                raise AssertionError(f"order {i} is {rig.oms.order(order.client_order_id).status}, expected filled")
    wall = time.perf_counter() - wall
    handled = await rig.close()
    return LatencyResult(total, sub, fil, fs_ns, fs_n, wall, rig.flush_busy_ns / 1e9, rig.flushes, handled)


# -- replay throughput ---------------------------------------------------------------------------------------------------
async def _replay_run(work: Workload, state: Path, orders: int, *, sync: bool,
                      chunk: int = 50) -> tuple[float, float, int]:
    """Orders per second: ``chunk`` signals at a quote, then the next ``chunk`` recorded quotes fill them.

    Returns (orders/s until the last fill is durable in the journals, orders/s until the
    store also holds everything, copies to DuckDB that ran during the first). The first is the order path's rate, with the background
    copy to DuckDB running alongside (it trails the journal by design, up to the flush's
    maximum lag); the second adds draining that copy at the end.

    The session's steps for a step of replayed market data: the strategy's signals are
    priced, checked and staged, sent together after one durable write, and the venue
    answers the step's quotes with a batch of events. Buys and sells alternate by chunk (a
    cash account cannot sell what has not filled yet). The clock includes the background
    DuckDB flush; the second figure also the final one: the store holds every order, event and fill.
    """
    rig = Rig(work, state, sync=sync, flush_thread=True)
    await rig.open()
    ts, bid, ask, bid_sz, ask_sz = tiled_quotes(work.quotes, orders + 1)
    rig.feed(int(ts[0]), float(bid[0]), float(ask[0]), float(bid_sz[0]), float(ask_sz[0]))
    start = time.perf_counter()
    sent = []
    for first in range(0, orders, chunk):
        side = Side.BUY if (first // chunk) % 2 == 0 else Side.SELL
        for i in range(first, min(first + chunk, orders)):
            sent.append(await rig.signal(Signal("bench", f"{state.name}-{i}", INSTRUMENT, side, rig.now,
                                                strength=0.95, quantity=QUANTITY), stage=True))
        await rig.send_staged()
        end = min(first + chunk, orders) + 1
        rig.now = int(ts[end - 1])
        rig.venue.on_quotes(INSTRUMENT, ts[first + 1:end], bid[first + 1:end], ask[first + 1:end],
                            bid_sz[first + 1:end], ask_sz[first + 1:end])
        rig.quote = (int(ts[end - 1]), float(bid[end - 1]), float(ask[end - 1]), float(bid_sz[end - 1]),
                     float(ask_sz[end - 1]))
        rig.portfolio.mark(INSTRUMENT, Decimal(repr(float(bid[end - 1] + ask[end - 1]) / 2)), rig.now)
    path_elapsed = time.perf_counter() - start
    copies = rig.flushes
    await rig.close()
    elapsed = time.perf_counter() - start
    filled = sum(1 for o in sent if rig.oms.order(o.client_order_id).status is OrderStatus.FILLED)
    if filled != orders:
        raise AssertionError(f"replay: {filled} of {orders} orders filled")
    stored = work.store.con.execute(
        "SELECT count(*) FROM fills JOIN orders USING (client_order_id) WHERE orders.intent_id LIKE ? "
        "AND orders.status = 'filled'", [f"bench:{state.name}-%"]).fetchone()[0]
    if stored < orders:
        raise AssertionError(f"replay: the store holds {stored} of {orders} fills after the run")
    return orders / path_elapsed, orders / elapsed, copies


def _session_replay(work: Workload, state: Path, per_step: int) -> tuple[int, float, float]:
    """A whole :class:`Session` replaying the capture, 1 s steps, a strategy sending ``per_step`` orders a step.

    Returns (orders, orders/s, steps/s). Journals synced, the session's defaults otherwise
    (risk limits widened as for the other runs).
    """
    from tradebook.data.feeds import ReplayFeed
    from tradebook.session import Session

    feed = ReplayFeed({INSTRUMENT: work.store.quotes(INSTRUMENT)}, {INSTRUMENT: work.store.trades(INSTRUMENT)},
                      step_ns=_NS, speed=None)
    count = [0, 0]

    def strategy(batch, view):
        count[1] += 1
        side = Side.BUY if count[1] % 2 else Side.SELL
        for _ in range(per_step):
            count[0] += 1
            yield Signal("session-bench", f"s{count[0]}", INSTRUMENT, side, view.now_ns, strength=0.95,
                         quantity=QUANTITY)

    session = Session(work.store, calibrations=[INSTRUMENT], feed=feed, strategy=strategy, state_dir=state,
                      config=bench_config(), starting_cash=Decimal(1_000_000))
    start = time.perf_counter()
    session.start(wait=True, timeout=900)
    session.stop()
    elapsed = time.perf_counter() - start
    sent = session.status()["orders"]
    return sent, sent / elapsed, count[1] / elapsed


def _subscriber_comparison(work: Workload, tmp_path: Path, orders: int) -> None:
    """Signal -> fill durable with none and with every bus subscriber a session has (TCA updater, alert center,
    dashboard reader), journals synced (what a session does) and not (the subscribers' CPU share shows alone)."""
    print(f"  the order path with the session's event bus subscribers attached, next to none ({orders:,} orders each, "
          "flush thread on):")
    for sync in (True, False):
        pct, notes = {}, ""
        for attached in (False, True):
            gc.collect()
            result = asyncio.run(_latency_run(work, tmp_path / f"bus-{sync}-{attached}", orders, flush_thread=True,
                                              subscribers=attached, sync=sync))
            pct[attached] = _pct(result.total_ns)
            notes = result.subscribers or notes
        label = "synced    " if sync else "not synced"
        print(f"    journals {label} none     {_fmt(pct[False])}")
        print(f"    journals {label} attached {_fmt(pct[True])}")
        print("    ratio attached / none          " + "  ".join(f"{k} x{pct[True][k] / pct[False][k]:.2f}"
                                                              for k in pct[False]))
        print(f"    {notes}")


def _pct(values_ns: np.ndarray) -> dict[str, float]:
    ms = values_ns / 1e6
    return {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)),
            "p99.9": float(np.percentile(ms, 99.9)), "max": float(ms.max())}


def _fmt(p: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:6.3f}" for k, v in p.items()) + " ms"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.order_path")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_ORDERS:,} orders instead of {ORDERS:,}")
    parser.add_argument("--orders", type=int, default=None, help="orders in the latency run")
    parser.add_argument("--interference", action="store_true",
                        help="also run the latency test with the DuckDB flush thread off (default with --quick)")
    parser.add_argument("--latency-only", action="store_true", help="the latency runs only (no replays)")
    args = parser.parse_args(argv)
    orders = args.orders or (QUICK_ORDERS if args.quick else ORDERS)
    replay_orders = QUICK_REPLAY_ORDERS if args.quick else REPLAY_ORDERS
    print(f"Order path: signal -> sizing -> router -> risk -> intent durable -> paper venue ack -> fill durable "
          f"({INSTRUMENT}, calibrated model, zero latency, market orders)")
    with tempfile.TemporaryDirectory(prefix="tb-order-path-") as tmp:
        tmp_path = Path(tmp)
        t = time.perf_counter()
        work = workload(tmp_path)
        print(f"  setup (ingest + calibrate) {time.perf_counter() - t:.1f} s")
        restore_gc = tune_gc()  # what a Session does when it starts (session.tune_gc); see the module doc
        runs = (True, False) if (args.interference or args.quick) else (True,)
        p99 = None
        for flush in runs:
            gc.collect()
            result = asyncio.run(_latency_run(work, tmp_path / f"lat-{flush}", orders, flush_thread=flush))
            p = _pct(result.total_ns)
            p99 = p["p99"] if flush else p99
            print(f"  {orders:,} orders, journals synced, DuckDB flush thread {'on ' if flush else 'off'} "
                  f"({result.wall_s:.0f} s):")
            print(f"    signal -> fill durable     {_fmt(p)}")
            print(f"    signal -> submit returned  {_fmt(_pct(result.submit_ns))}   (pre-trade, intent durable, "
                  "venue receipt)")
            print(f"    next quote -> fill durable {_fmt(_pct(result.fill_ns))}   (venue ack + fill, OMS fill durable)")
            fsync_share = result.fsync_ns.sum() / result.total_ns.sum()
            print(f"    fdatasync per order {result.fsyncs.mean():.2f} ({np.percentile(result.fsync_ns, 50) / 1e6:.3f} "
                  f"ms at p50): {fsync_share:.0%} of the time, Python {1 - fsync_share:.0%}; flush thread busy "
                  f"{result.flush_busy_s:.1f} s of {result.wall_s:.0f} s ({result.flushes} flushes)")
        _subscriber_comparison(work, tmp_path, min(orders, SUBSCRIBER_ORDERS))
        if args.latency_only:
            work.store.close()
            restore_gc()
            return
        rates = {}
        for sync in (False, True):
            gc.collect()
            rates[sync], drained, copies = asyncio.run(
                _replay_run(work, tmp_path / f"replay-{sync}", replay_orders, sync=sync))
            print(f"  replay (the session's steps, 50 orders a step), {replay_orders:,} orders over recorded quotes, "
                  f"journals {'synced' if sync else 'not synced'}: {rates[sync]:,.0f} orders/s on the order path "
                  f"({copies} copies to DuckDB ran alongside); {drained:,.0f} orders/s until the store also holds "
                  "them all")
        gc.collect()
        sent, session_rate, steps = _session_replay(work, tmp_path / "session", SESSION_ORDERS_PER_STEP)
        print(f"  whole Session replaying the capture (1 s steps, {SESSION_ORDERS_PER_STEP} orders a step, calibrated "
              f"latency, journals synced): {sent:,} orders, {session_rate:,.0f} orders/s, {steps:,.0f} steps/s")
        print(f"  target p99 < {TARGET_P99_MS} ms with both writes durable: {p99:.3f} ms -> "
              f"{'met' if p99 < TARGET_P99_MS else 'MISSED'}")
        verdict = "met" if rates[True] >= TARGET_REPLAY_OPS else \
            "met with journals not synced only" if rates[False] >= TARGET_REPLAY_OPS else "MISSED"
        print(f"  target >= {TARGET_REPLAY_OPS:,} orders/s in replay: {rates[True]:,.0f} (synced), "
              f"{rates[False]:,.0f} (not synced) -> {verdict}")
        work.store.close()
    restore_gc()  # unfreezes: frozen objects are never freed, and DuckDB's bindings would report them leaked
    gc.collect()


if __name__ == "__main__":
    main()
