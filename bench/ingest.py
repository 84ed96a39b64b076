"""Ingest throughput: L1 quotes through tradebook's validated load into the store, next to DuckDB's own read_csv.

tradebook's path parses, type-checks and validates every row (monotonic time, prices,
sizes, crossed quotes, tick grid) before one transactional insert; DuckDB's read_csv
only parses. The ratio says what the checks and the pandas hop cost.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import duckdb

from tradebook.data import bundled_data_dir, load_quotes
from tradebook.store import Store

L1_FILE = "ticks/crypto/binance_spot_btcusdt_20240808T2354-20240809T0005_l1_quotes.csv.gz"
INSTRUMENT = "BTCUSDT.BINANCE"
REPEATS = 5


def _best(fn) -> tuple[float, int]:
    best, rows = float("inf"), 0
    for _ in range(REPEATS):
        start = time.perf_counter()
        rows = fn()
        best = min(best, time.perf_counter() - start)
    return best, rows


def main() -> None:
    path = bundled_data_dir() / L1_FILE
    with tempfile.TemporaryDirectory() as tmp:
        counter = iter(range(1_000_000))
        # Stores are created (and migrated) outside the timed part: the cost measured is the load itself.
        stores = iter([Store(Path(tmp) / f"tb{i}.duckdb") for i in range(REPEATS)])

        def tradebook_ingest() -> int:
            data = load_quotes(path, INSTRUMENT)
            store = next(stores)
            rows = store.ingest(data).rows
            store.close()
            return rows

        def parse_only() -> int:
            return load_quotes(path, INSTRUMENT).rows

        def duckdb_read_csv() -> int:
            con = duckdb.connect(str(Path(tmp) / f"dd{next(counter)}.duckdb"))
            con.execute(f"CREATE TABLE quotes AS SELECT * FROM read_csv('{path}')")
            rows = con.execute("SELECT count(*) FROM quotes").fetchone()[0]
            con.close()
            return rows

        ours, rows = _best(tradebook_ingest)
        parse, _ = _best(parse_only)
        theirs, rows_dd = _best(duckdb_read_csv)
    assert rows == rows_dd, (rows, rows_dd)
    print(f"ingest: L1 quotes {path.name} ({rows:,} rows), best of {REPEATS}")
    print(f"  tradebook load+validate+store : {rows / ours:>12,.0f} rows/s  ({ours * 1e3:7.1f} ms)")
    print(f"    of which load+validate      : {rows / parse:>12,.0f} rows/s  ({parse * 1e3:7.1f} ms)")
    print(f"  duckdb read_csv into a table  : {rows / theirs:>12,.0f} rows/s  ({theirs * 1e3:7.1f} ms)")
    print(f"  ratio tradebook / duckdb      : {theirs / ours:12.2f}  (1.0 = as fast as DuckDB's own CSV reader)")


if __name__ == "__main__":
    main()
