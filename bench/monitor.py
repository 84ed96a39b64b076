"""The dashboard's refresh against a store with 1M fills: is one refresh under 200 ms?

A store in a temporary folder gets synthetic rows by SQL (deleted after): 1M fills of
500k orders over 30 days (20 instruments, 5 strategies, 2 accounts), 200 of the orders
still working, their positions, 1M ``tca_fills`` and 500k ``tca_orders`` rows, 5k alerts,
strategy stages. Then, timed:

- the dashboard's whole refresh (:func:`tradebook.monitor.app.read_snapshot`) of a closed
  store, which opens the file read-only and closes it again each time (what ``tradebook
  dashboard`` pays), and the same refresh on a connection kept open (what a session's own
  dashboard pays: its reads go through a cursor of the session's connection);
- each read of that refresh, on the open connection;
- the TCA aggregates of :mod:`tradebook.tca` over all 1M fills (the report's and the API's
  questions), through a cursor.

Medians and 95th percentiles of ``REPEATS`` runs, against the 200 ms target.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tradebook.store import Store

TARGET_MS = 200.0
REPEATS = 15
FILLS = 1_000_000
INSTRUMENTS = 20
STRATEGIES = 5
WORKING = 200
ALERTS = 5_000
START_NS = 1_722_470_400_000_000_000  # 2024-08-01T00:00:00Z
SPAN_NS = 30 * 86_400 * 1_000_000_000

# Row i of a table, by column: what the synthetic value is (columns not named: a value of their type)
_FILL_VALUES = {
    "fill_id": "'F' || i", "client_order_id": "'O' || (i // 2)", "venue_order_id": "'V' || (i // 2)",
    "parent_order_id": "NULL", "account_id": "CASE WHEN i % 2 = 0 THEN 'paper' ELSE 'live-1' END",
    "strategy_id": f"'strategy-' || (i % {STRATEGIES})", "instrument_id": f"'SYM' || ((i // 2) % {INSTRUMENTS})",
    "mode": "CASE WHEN i % 2 = 0 THEN 'paper' ELSE 'live' END", "venue": "'paper'",
    "side": "CASE WHEN (i // 2) % 2 = 0 THEN 'buy' ELSE 'sell' END", "quantity": "0.01 + (i % 7) * 0.01",
    "price": "100 + (i % 1000) * 0.01", "fee": "0.0001 * (i % 50)", "fee_currency": "'USDT'",
    "liquidity": "CASE WHEN i % 3 = 0 THEN 'maker' ELSE 'taker' END",
    "ts_event": f"{START_NS} + i * {SPAN_NS // FILLS}", "ts_init": f"{START_NS} + i * {SPAN_NS // FILLS} + 1000",
    "level": "'order'", "status": "'filled'", "order_type": "'market'", "time_in_force": "'ioc'",
    "calibration_id": f"'SYM' || ((i // 2) % {INSTRUMENTS}) || '@v1'", "signal_type": "'router:market'",
}
# one row per order j (its fills are 2j and 2j + 1); the last WORKING are still working
_ORDER_VALUES = {
    "client_order_id": "'O' || j", "order_id": "'O' || j", "intent_id": "'I' || j", "venue_order_id": "'V' || j",
    "parent_order_id": "NULL", "account_id": "CASE WHEN j % 2 = 0 THEN 'paper' ELSE 'live-1' END",
    "strategy_id": f"'strategy-' || (j % {STRATEGIES})", "instrument_id": f"'SYM' || (j % {INSTRUMENTS})",
    "mode": "CASE WHEN j % 2 = 0 THEN 'paper' ELSE 'live' END", "venue": "'paper'",
    "side": "CASE WHEN j % 2 = 0 THEN 'buy' ELSE 'sell' END", "order_type": "'market'", "time_in_force": "'ioc'",
    "level": "'order'", "quantity": "0.02", "ordered_quantity": "0.02", "limit_price": "NULL", "stop_price": "NULL",
    "status": f"CASE WHEN j >= {FILLS // 2 - WORKING} THEN 'accepted' ELSE 'filled' END",
    "filled_quantity": f"CASE WHEN j >= {FILLS // 2 - WORKING} THEN 0 ELSE 0.02 END",
    "avg_fill_price": "100 + (j % 1000) * 0.01", "fill_rate": "1.0", "fees": "0.001", "tags": "'{}'", "reason": "''",
    "ts_init": f"{START_NS} + 2 * j * {SPAN_NS // FILLS}", "ts_last": f"{START_NS} + 2 * j * {SPAN_NS // FILLS} + 5000",
    "decision_ts_ns": f"{START_NS} + 2 * j * {SPAN_NS // FILLS} - 1000",
    "end_ts_ns": f"{START_NS} + 2 * j * {SPAN_NS // FILLS} + 5000", "signal_type": "'router:market'",
}


def _default(data_type: str, row: str) -> str:
    """A synthetic value of a column's type for row ``row`` (costs in bps spread over -5..15)."""
    return {"DOUBLE": f"(hash({row}) % 2000) / 100.0 - 5", "BIGINT": f"{START_NS} + {row}", "INTEGER": "1",
            "BOOLEAN": "false", "VARCHAR": "''", "DECIMAL": "1"}.get(data_type.split("(")[0], "NULL")


def _columns(con: Any, table: str) -> list[tuple[str, str]]:
    return con.execute("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ? "
                       "ORDER BY ordinal_position", [table]).fetchall()


def _fill_table(con: Any, table: str, rows: int, values: dict[str, str], row: str = "i") -> None:
    """``rows`` synthetic rows of ``table`` by SQL: each column from ``values`` or a value of its type."""
    expressions = []
    for name, data_type in _columns(con, table):
        expressions.append(f"{values.get(name, _default(data_type, row))} AS {name}")
    con.execute(f"INSERT INTO {table} SELECT {', '.join(expressions)} FROM range({rows}) t({row})")


def build_store(path: Path) -> dict[str, int]:
    """The synthetic store; returns its row counts per table."""
    with Store(path) as store, store.transaction() as con:
        con.execute("SET enable_progress_bar = false")
        _fill_table(con, "fills", FILLS, _FILL_VALUES)
        _fill_table(con, "orders", FILLS // 2, _ORDER_VALUES, row="j")
        _fill_table(con, "tca_fills", FILLS, _FILL_VALUES)
        _fill_table(con, "tca_orders", FILLS // 2, _ORDER_VALUES, row="j")
        con.execute(f"""
            INSERT INTO positions (account_id, strategy_id, instrument_id, quantity, avg_price, realized_pnl, ts_last)
            SELECT a, 'strategy-' || s, 'SYM' || n, 0.5, 100.5, 12.25, {START_NS + SPAN_NS}
            FROM (VALUES ('paper'), ('live-1')) x(a), range({STRATEGIES}) y(s), range({INSTRUMENTS}) z(n)""")
        con.execute(f"""
            INSERT INTO alerts (ts_ns, kind, message, source, severity, dedup_key, subject, repeat_count, last_ts_ns)
            SELECT {START_NS} + k * 500000000000, 'slippage', 'SYM' || (k % {INSTRUMENTS}) || ' slipped 12 bps',
                   'bench', 'warning', 'slippage:SYM' || (k % {INSTRUMENTS}) || ':' || (k // 100), 'SYM' ||
                   (k % {INSTRUMENTS}), 1 + k % 4, {START_NS} + k * 500000000000 + 1000
            FROM range({ALERTS}) t(k)""")
        con.execute(f"""
            INSERT INTO strategy_stages (strategy, ts_ns, stage, backtest_id, reason)
            SELECT 'strategy-' || s, {START_NS} + s, 'paper', NULL, 'bench' FROM range({STRATEGIES}) t(s)""")
        tables = ("fills", "orders", "positions", "tca_fills", "tca_orders", "alerts", "strategy_stages")
        return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}


def _timed(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """(median, 95th percentile) of ``fn``'s wall time in ms, after one warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]


def _line(label: str, timing: tuple[float, float]) -> str:
    median, p95 = timing
    verdict = "ok" if p95 <= TARGET_MS else "OVER"
    return f"  {label:<44}: {median:8.1f} ms median  {p95:8.1f} ms p95  {verdict}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.monitor", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=REPEATS)
    args = parser.parse_args(argv)

    from tradebook import tca
    from tradebook.monitor.app import read_snapshot
    from tradebook.monitor.source import StoreSource

    with tempfile.TemporaryDirectory(prefix="tb-bench-monitor-") as tmp:
        path = Path(tmp) / "monitor.duckdb"
        started = time.perf_counter()
        counts = build_store(path)
        built = time.perf_counter() - started
        size_mb = path.stat().st_size / 1e6
        print(f"monitor: the dashboard's refresh over {counts['fills']:,} fills, {counts['orders']:,} orders "
              f"({WORKING} working), {counts['tca_fills']:,} TCA fill rows; target {TARGET_MS:.0f} ms")
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"  (store built in {built:.1f} s, {size_mb:,.0f} MB; {args.repeats} runs each; load average {load} "
              f"on {os.cpu_count()} cores)")

        source = StoreSource(path)
        print(_line("whole refresh, closed store (open+close)", _timed(lambda: read_snapshot(source), args.repeats)))
        with source.reading():  # one open for everything below: a session's dashboard reads through its connection
            print(_line("whole refresh, open connection", _timed(lambda: read_snapshot(source), args.repeats)))
            reads: dict[str, Callable[[], Any]] = {
                "status": source.status, "positions": source.positions, "working_orders": source.working_orders,
                "orders(200)": lambda: source.orders(200), "fills(200)": lambda: source.fills(200),
                "alerts(200)": lambda: source.alerts(200), "stages": source.stages,
                "tca_fills(5000)": lambda: source.tca_fills(5000), "tca_orders(5000)": lambda: source.tca_orders(5000),
            }
            for name, read in reads.items():
                print(_line(f"  {name}", _timed(read, args.repeats)))
        with Store(path, read_only=True) as store:
            cursor = store.con.cursor()
            aggregates: dict[str, Callable[[], Any]] = {
                "cost_by_instrument": lambda: tca.cost_by_instrument(cursor),
                "cost_by_time_of_day": lambda: tca.cost_by_time_of_day(cursor),
                "modelled_vs_realised(limit=5000)": lambda: tca.modelled_vs_realised(cursor, limit=5000),
                "markouts": lambda: tca.markouts(cursor), "latency": lambda: tca.latency(cursor),
                "strategy_attribution": lambda: tca.strategy_attribution(cursor),
                "session_performance": lambda: tca.session_performance(cursor),
            }
            print("  TCA aggregates over every fill (tradebook.tca, through a cursor):")
            for name, read in aggregates.items():
                print(_line(f"  {name}", _timed(read, args.repeats)))
            cursor.close()


if __name__ == "__main__":
    main()
