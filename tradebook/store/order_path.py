"""The order tables: the order manager's journal copied into DuckDB, and read back as frames.

The records are parsed by DuckDB itself, by the shape :mod:`tradebook.store.records` gives them
(:data:`~tradebook.store.records.RECORD_SCHEMA`); a batch lands whole or not at all, with the journal
position it reached.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from tradebook.errors import StoreError
from tradebook.model.time import now_ns
from tradebook.store.records import BODY_OFFSET, RECORD_SCHEMA, journal_line


@dataclass(frozen=True)
class OrderPathBatch:
    """Journal records ``first_position..position`` of one write-ahead journal, for the order tables.

    Written by :meth:`Store.write_order_path` in one transaction together with the
    journal offset, so a batch lands whole or not at all and a re-flush after a crash
    starts where the store stopped.

    The records are the journal's own bytes, in journal order: either read straight from
    the journal file (``journal_file``, bytes ``journal_bytes`` = [start, end) holding
    exactly these records, copied in the kernel), or given as ``records`` (bodies as
    :func:`tradebook.store.records.encode_record` wrote them). DuckDB parses and
    numbers them itself, so a flush costs the writer's thread almost no Python (and no
    GIL while DuckDB works). An order's final row may ride on the record
    that finished it (``state``): DuckDB completes it from the order's intent record (or
    its stored row), with ``mode`` and ``venue`` of the writer. ``orders`` holds the current
    state of the other orders the records touch, one JSON object per order with the
    ``orders`` columns (Decimals as strings) plus ``currency`` (the fee currency of its
    fills); ``positions`` the current state of the positions they moved (dicts with
    Decimals); ``currencies`` maps the instruments of those orders and of position
    adjustments to their currency. Events and alerts are appended, orders and positions
    upserted by key, fills inserted once per ``fill_id``.
    """

    journal: str
    first_position: int
    position: int
    records: tuple[bytes, ...] = ()
    orders: tuple[bytes, ...] = ()
    positions: tuple[dict[str, Any], ...] = ()
    currencies: tuple[tuple[str, str], ...] = ()
    mode: str = ""
    venue: str = ""
    journal_file: Path | None = None
    journal_bytes: tuple[int, int] = (0, 0)


# Columns of the order tables (migrations v2 and v3) that the order path writes row by row
# (orders as JSON rows, positions as dicts; events, fills and alerts are copied in SQL from the
# journal records); the type says whether the column holds an exact Decimal (cast from its text).
ORDER_PATH_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "orders": (("client_order_id", "VARCHAR"), ("intent_id", "VARCHAR"), ("strategy_id", "VARCHAR"),
               ("account_id", "VARCHAR"), ("mode", "VARCHAR"), ("venue", "VARCHAR"), ("instrument_id", "VARCHAR"),
               ("side", "VARCHAR"), ("order_type", "VARCHAR"), ("time_in_force", "VARCHAR"),
               ("quantity", "DECIMAL"), ("limit_price", "DECIMAL"), ("stop_price", "DECIMAL"),
               ("parent_order_id", "VARCHAR"), ("venue_order_id", "VARCHAR"), ("status", "VARCHAR"),
               ("filled_quantity", "DECIMAL"), ("avg_fill_price", "DECIMAL"), ("ts_init", "BIGINT"),
               ("ts_last", "BIGINT"), ("tags", "VARCHAR"), ("reason", "VARCHAR"), ("fees", "DECIMAL")),
    "positions": (("account_id", "VARCHAR"), ("strategy_id", "VARCHAR"), ("instrument_id", "VARCHAR"),
                  ("quantity", "DECIMAL"), ("avg_price", "DECIMAL"), ("realized_pnl", "DECIMAL"),
                  ("ts_last", "BIGINT"), ("fees", "DECIMAL")),
}


def _sql_text(path: Path) -> str:
    """A file path as a SQL string literal."""
    return _sql_literal(str(path))


def _sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _copy_file_range(source: Path, start: int, end: int, destination: Path) -> None:
    """Copy bytes [start, end) of ``source`` into a new file ``destination``, in the kernel where it can."""
    # unbuffered: the kernel copy and the fallback's writes both go at the file's own offset
    with open(source, "rb") as src, open(destination, "wb", buffering=0) as dst:
        offset, left = start, end - start
        while left > 0:
            try:
                copied = os.copy_file_range(src.fileno(), dst.fileno(), left, offset)
            except OSError:  # a filesystem or kernel without it: read and write
                src.seek(offset)
                copied = dst.write(src.read(min(left, 1 << 24)))
            if copied == 0:
                raise StoreError(f"{source} ends before byte {end}: {left} bytes of the batch are missing")
            offset += copied
            left -= copied


# The journal records' shape (tradebook.store.records.RECORD_SCHEMA), for DuckDB to parse each line once
# into typed columns (keys not listed are ignored, missing ones are NULL). Decimals are {"$d": "<exact text>"}.
_DUCKDB_TYPES = {"text": "VARCHAR", "int": "BIGINT", "bool": "BOOLEAN", "decimal": 'STRUCT("$d" VARCHAR)',
                 "decimal_text": "VARCHAR"}


def _duckdb_type(shape: str | dict[str, Any]) -> str:
    if isinstance(shape, dict):
        return "STRUCT(" + ", ".join(f"{name} {_duckdb_type(kind)}" for name, kind in shape.items()) + ")"
    return _DUCKDB_TYPES[shape]


_RECORD_COLUMNS = {name: _duckdb_type(shape) for name, shape in RECORD_SCHEMA.items()}


# The same shape for json_transform (type names as JSON strings)
_RECORD_STRUCTURE = json.dumps(_RECORD_COLUMNS)


def _money(field: str) -> str:
    return f'CAST({field}."$d" AS DECIMAL(38, 12))'


# The row of an order whose final state rides on a record (``state``): what the intent fixed
# comes from its intent record in the batch or, when that was copied earlier, from the stored
# row. Rows built in Python (``_op_orders`` already) take precedence. Tags as the order
# manager writes them: compact JSON, keys sorted.
_FINAL_ORDER_COLUMNS = {
    "client_order_id": "f.client_order_id",
    "intent_id": "COALESCE(i.intent.intent_id, s.intent_id)",
    "strategy_id": "COALESCE(i.intent.strategy_id, s.strategy_id)",
    "account_id": "COALESCE(i.intent.account_id, s.account_id)",
    "mode": "CASE WHEN i.p IS NULL THEN s.mode ELSE $mode END",
    "venue": "CASE WHEN i.p IS NULL THEN s.venue ELSE $venue END",
    "instrument_id": "COALESCE(i.intent.instrument_id, s.instrument_id)",
    "side": "COALESCE(i.intent.side, s.side)",
    "order_type": "COALESCE(i.intent.order_type, s.order_type)",
    "time_in_force": "COALESCE(i.intent.time_in_force, s.time_in_force)",
    "quantity": "f.state.quantity", "limit_price": "f.state.limit_price", "stop_price": "f.state.stop_price",
    "parent_order_id": "CASE WHEN i.p IS NULL THEN s.parent_order_id ELSE i.parent_order_id END",
    "venue_order_id": "f.state.venue_order_id", "status": "f.state.status",
    "filled_quantity": "f.state.filled_quantity", "avg_fill_price": "f.state.avg_fill_price",
    "ts_init": "COALESCE(i.ts, s.ts_init)", "ts_last": "f.state.ts_last",
    "tags": ("""CASE WHEN i.p IS NULL THEN s.tags ELSE '{"reduce_only":' || """
             """CASE WHEN i.intent.reduce_only THEN 'true' ELSE 'false' END || """
             """COALESCE(',"stop_loss":' || to_json(i.intent.stop_loss."$d"), '') || """
             """',"why":' || to_json(COALESCE(i.intent.reason, '')) || '}' END"""),
    "reason": "f.state.reason", "fees": "f.state.fees",
    "currency": "c.currency",
}
_FINAL_ORDERS_SQL = f"""
INSERT INTO _op_orders ({", ".join(_FINAL_ORDER_COLUMNS)})
SELECT {", ".join(_FINAL_ORDER_COLUMNS.values())}
FROM (SELECT event.client_order_id AS client_order_id, state FROM _op_records WHERE state IS NOT NULL) f
LEFT JOIN (SELECT client_order_id, intent, parent_order_id, ts, p FROM _op_records WHERE kind = 'intent') i
       ON i.client_order_id = f.client_order_id
LEFT JOIN orders s ON s.client_order_id = f.client_order_id
LEFT JOIN _op_currencies c ON c.instrument_id = COALESCE(i.intent.instrument_id, s.instrument_id)
WHERE f.client_order_id NOT IN (SELECT client_order_id FROM _op_orders)
"""


# One row per intent (an order is created) and per venue or own event, in journal order. An
# intent record names its client order id; journals written before it did find it
# through the order rows of the same batch.
_ORDER_EVENTS_SQL = f"""
INSERT INTO order_events (client_order_id, event_type, ts_event, ts_init, venue_order_id, quantity, price, reason,
                          payload, journal_position)
SELECT client_order_id, event_type, ts_event, ts_init, venue_order_id, quantity, price, reason, payload, p FROM (
    SELECT COALESCE(j.client_order_id, o.client_order_id) AS client_order_id, 'intent' AS event_type,
           ts AS ts_event, ts AS ts_init, NULL AS venue_order_id, {_money('intent.quantity')} AS quantity,
           COALESCE({_money('intent.limit_price')}, {_money('intent.stop_price')}) AS price,
           intent.reason AS reason, '{{}}' AS payload, p
    FROM _op_records j LEFT JOIN _op_orders o ON o.intent_id = j.intent.intent_id
    WHERE kind = 'intent'
    UNION ALL
    SELECT event.client_order_id, event.event_type, event.ts_event_ns, event.ts_init_ns, event.venue_order_id,
           CASE WHEN event.fill IS NOT NULL THEN {_money('event.fill.quantity')} ELSE {_money('event.quantity')} END,
           CASE WHEN event.fill IS NOT NULL THEN {_money('event.fill.price')} ELSE {_money('event.limit_price')} END,
           event.reason,
           '{{' || concat_ws(',',
               CASE WHEN event.fill IS NOT NULL THEN '"fill_id":' || to_json(event.fill.fill_id) END,
               CASE WHEN kind = 'illegal' THEN '"illegal":' || to_json(error) END,
               CASE WHEN kind = 'orphan' THEN '"orphan":true' END,
               CASE WHEN event.stop_price IS NOT NULL THEN '"stop_price":' || to_json(event.stop_price."$d") END,
               CASE WHEN COALESCE(event.code, c.code) IS NOT NULL
                    THEN '"reject_code":' || to_json(COALESCE(event.code, c.code)) END
           ) || '}}',
           p
    FROM _op_records
    -- journals written before rejected events carried their code: its 'rejection_code' record follows the event
    LEFT JOIN (SELECT client_order_id AS coid, first(code ORDER BY p) AS code FROM _op_records
               WHERE kind = 'rejection_code' GROUP BY client_order_id) c
           ON event.event_type = 'rejected' AND c.coid = event.client_order_id
    WHERE kind IN ('event', 'orphan', 'illegal')
) ORDER BY p
"""
# Fills of known orders take their account and strategy from the order; position
# adjustments from reconciliation carry their own.
_FILLS_SQL = f"""
INSERT INTO fills (fill_id, client_order_id, venue_order_id, account_id, strategy_id, instrument_id, side, quantity,
                   price, fee, fee_currency, liquidity, ts_event, ts_init)
SELECT fill_id, client_order_id, venue_order_id, account_id, strategy_id, instrument_id, side, quantity, price, fee,
       fee_currency, liquidity, ts_event, ts_init FROM (
    SELECT event.fill.fill_id AS fill_id, event.fill.client_order_id AS client_order_id,
           event.venue_order_id AS venue_order_id, o.account_id AS account_id, o.strategy_id AS strategy_id,
           event.fill.instrument_id AS instrument_id, event.fill.side AS side,
           {_money('event.fill.quantity')} AS quantity, {_money('event.fill.price')} AS price,
           {_money('event.fill.fee')} AS fee, o.currency AS fee_currency, event.fill.liquidity AS liquidity,
           event.fill.ts_event_ns AS ts_event, event.fill.ts_init_ns AS ts_init, p
    FROM _op_records j LEFT JOIN _op_orders o ON o.client_order_id = j.event.client_order_id
    WHERE kind = 'event' AND event.fill IS NOT NULL
    UNION ALL
    SELECT j.fill.fill_id, j.fill.client_order_id, NULL, j.account_id, j.strategy_id, j.fill.instrument_id, j.fill.side,
           {_money('j.fill.quantity')}, {_money('j.fill.price')}, {_money('j.fill.fee')}, c.currency,
           j.fill.liquidity, j.fill.ts_event_ns, j.fill.ts_init_ns, p
    FROM _op_records j LEFT JOIN _op_currencies c ON c.instrument_id = j.fill.instrument_id
    WHERE kind = 'adjustment'
) ORDER BY p
ON CONFLICT DO NOTHING
"""


class OrderPathTables:
    """Write and read the order tables. Part of :class:`~tradebook.store.store.Store`: it works on the store's
    connection (``con``, ``transaction``, ``query``) like the rest of the class.
    """

    def journal_position(self, journal: str) -> int:
        """How many records of ``journal`` the store holds (0 when none)."""
        with self._lock:
            rows = self.con.execute("SELECT position FROM journal_offsets WHERE journal = ?", [journal]).fetchall()
        return int(rows[0][0]) if rows else 0

    def write_order_path(self, batch: OrderPathBatch) -> bool:
        """Write one batch of order-path records and advance the journal offset, atomically.

        Returns False when the store already holds the batch (a re-flush after a crash);
        raises StoreError when the batch does not start right after what is stored (a gap
        would lose records), or when a record does not fit the tables, and writes nothing.
        """
        self._require_writer()
        count = batch.position - batch.first_position + 1
        start, end = batch.journal_bytes
        if batch.journal_file is not None:
            if batch.records or not 0 <= start <= end:
                raise StoreError(f"journal batch of {batch.journal}: give records or a journal file range "
                                 f"0 <= start <= end, not both; got {len(batch.records)} records and {start}..{end}")
        elif len(batch.records) != count:
            raise StoreError(f"journal batch {batch.first_position}..{batch.position} of {batch.journal} holds "
                             f"{len(batch.records)} records; expected one record per position")
        if batch.first_position < 1 or count < 0:
            raise StoreError(f"journal batch {batch.first_position}..{batch.position} of {batch.journal}: expected "
                             "first_position >= 1 and position >= first_position - 1")
        # the pid in the name: a kill leaves the folder behind, and the next session removes it
        # once that process is gone (tradebook.paper.clean_flush_leftovers)
        with tempfile.TemporaryDirectory(prefix=f"tb-flush-{os.getpid()}-") as tmp:
            records_file, orders_file = Path(tmp) / "records.journal", Path(tmp) / "orders.ndjson"
            # journal lines, parsed and numbered by DuckDB
            if batch.journal_file is not None:
                _copy_file_range(batch.journal_file, start, end, records_file)
            else:
                records_file.write_bytes(b"".join(journal_line(body) for body in batch.records))
            orders_file.write_bytes(b"\n".join(batch.orders))
            with self._lock, self._threads(1), self.transaction() as con:
                # fetchall: a half-read result would block the inserts below (DuckDB 2.0)
                rows = con.execute("SELECT position FROM journal_offsets WHERE journal = ?",
                                   [batch.journal]).fetchall()
                stored = int(rows[0][0]) if rows else 0
                if stored >= batch.position:
                    return False
                if stored != batch.first_position - 1:
                    raise StoreError(
                        f"journal {batch.journal}: the store holds records up to {stored} but the batch starts at "
                        f"{batch.first_position}; expected it to start at {stored + 1} (nothing was written)")
                try:
                    self._copy_order_path(con, batch, records_file, orders_file)
                except duckdb.Error as exc:
                    raise StoreError(f"writing journal {batch.journal} records {batch.first_position}.."
                                     f"{batch.position} to the order tables failed, nothing was written: {exc}") \
                        from exc
                self._insert_rows(con, "positions", batch.positions, "INSERT OR REPLACE INTO")
                con.execute("INSERT OR REPLACE INTO journal_offsets VALUES (?, ?, ?)",
                            [batch.journal, batch.position, now_ns()])
        return True

    @staticmethod
    def _copy_order_path(con: duckdb.DuckDBPyConnection, batch: OrderPathBatch, records_file: Path,
                         orders_file: Path) -> None:
        """The SQL half of :meth:`write_order_path`: journal JSON -> order tables, inside its transaction."""
        con.execute("DROP TABLE IF EXISTS _op_records; DROP TABLE IF EXISTS _op_orders; "
                    "DROP TABLE IF EXISTS _op_currencies")
        # a record's journal position: the batch's first plus its line's ordinal in the file. A
        # journal line is "<crc> <json>"; JSON escapes control characters, so no line holds \x1e
        # and read_csv with that delimiter yields each line whole, as one column.
        con.execute(f"CREATE TEMP TABLE _op_records AS SELECT ordinality + {int(batch.first_position) - 1} AS p, "
                    f"unnest(json_transform(substr(line, {BODY_OFFSET + 1}), {_sql_literal(_RECORD_STRUCTURE)})) "
                    f"FROM read_csv({_sql_text(records_file)}, columns={{'line': 'VARCHAR'}}, delim=E'\\x1e', "
                    "quote='', escape='', header=false, auto_detect=false, max_line_size=1073741824) "
                    "WITH ORDINALITY")
        # the order rows as JSON text: Decimals as strings (cast below), times as integers
        order_columns = [(name, "BIGINT" if sql_type == "BIGINT" else "VARCHAR")
                         for name, sql_type in (*ORDER_PATH_COLUMNS["orders"], ("currency", "VARCHAR"))]
        con.execute(f"CREATE TEMP TABLE _op_orders ({', '.join(f'{n} {t}' for n, t in order_columns)})")
        if batch.orders:
            spec = ", ".join(f"'{n}': '{t}'" for n, t in order_columns)
            con.execute(f"INSERT INTO _op_orders SELECT * FROM read_json({_sql_text(orders_file)}, "
                        f"format='newline_delimited', columns={{{spec}}})")
        con.execute("CREATE TEMP TABLE _op_currencies (instrument_id VARCHAR, currency VARCHAR)")
        if batch.currencies:
            con.executemany("INSERT INTO _op_currencies VALUES (?, ?)", [list(c) for c in batch.currencies])
        con.execute(_FINAL_ORDERS_SQL, {"mode": batch.mode or None, "venue": batch.venue or None})
        found, unreadable = con.execute("SELECT count(*), count(*) FILTER (kind IS NULL) FROM _op_records").fetchone()
        expected = batch.position - batch.first_position + 1
        if found != expected or unreadable:
            raise StoreError(f"journal {batch.journal}: DuckDB read {found} records of the batch "
                             f"{batch.first_position}..{batch.position} ({unreadable} without a kind), expected "
                             f"{expected} records that each name their kind")
        casts = ", ".join(
            f"CAST({name} AS {'DECIMAL(38, 12)' if sql_type == 'DECIMAL' else sql_type})"
            for name, sql_type in ORDER_PATH_COLUMNS["orders"])
        # current state by key: the batch's rows replace what the store had (most orders of a
        # batch are new; a delete of the few known ones and a plain insert beat INSERT OR REPLACE)
        con.execute("DELETE FROM orders WHERE client_order_id IN (SELECT client_order_id FROM _op_orders)")
        con.execute(f"INSERT INTO orders ({', '.join(n for n, _ in ORDER_PATH_COLUMNS['orders'])}) "
                    f"SELECT {casts} FROM _op_orders")
        con.execute(_ORDER_EVENTS_SQL)
        con.execute(_FILLS_SQL)
        # source: the journal's name, so a paper run's alerts can be told apart (and reset with it)
        con.execute("INSERT INTO alerts (ts_ns, kind, message, source, journal_position) "
                    "SELECT alert.ts_ns, alert.kind, alert.message, ?, p FROM _op_records "
                    "WHERE kind = 'alert' ORDER BY p", [batch.journal])
        con.execute("DROP TABLE _op_records; DROP TABLE _op_orders; DROP TABLE _op_currencies")

    def _insert_rows(self, con: duckdb.DuckDBPyConnection, table: str, rows: tuple[dict[str, Any], ...],
                     verb: str, suffix: str = "") -> None:
        """Insert many rows through one registered frame (a row-at-a-time insert costs ~1 ms each)."""
        if not rows:
            return
        spec = ORDER_PATH_COLUMNS[table]
        data: dict[str, Any] = {}
        for name, sql_type in spec:
            values = [r.get(name) for r in rows]
            if sql_type == "DECIMAL":
                for value in values:
                    if value is not None and not (isinstance(value, Decimal) and value.is_finite()):
                        raise StoreError(f"{table}.{name} must be a finite Decimal, got {value!r}")
                values = [None if v is None else format(v, "f") for v in values]
            data[name] = pd.Series(values, dtype="object")
        frame = pd.DataFrame(data)
        view = f"_order_path_{table}"
        casts = ", ".join(
            f"CAST({name} AS {'DECIMAL(38, 12)' if sql_type == 'DECIMAL' else sql_type})" for name, sql_type in spec)
        con.register(view, frame)
        try:
            con.execute(f"{verb} {table} ({', '.join(n for n, _ in spec)}) SELECT {casts} FROM {view} {suffix}")
        except duckdb.Error as exc:
            raise StoreError(f"writing {len(rows)} rows to {table} failed, nothing was written: {exc}") from exc
        finally:
            try:
                con.unregister(view)
            except duckdb.Error:  # the transaction is aborted; the real error is already on its way
                pass

    def orders(self, status: str | None = None) -> pd.DataFrame:
        """Stored orders (current state), oldest first; money as float64 for analysis."""
        if status is None:
            return self.query("SELECT * FROM orders ORDER BY ts_init, client_order_id")
        return self.query("SELECT * FROM orders WHERE status = ? ORDER BY ts_init, client_order_id", [status])

    def order_events(self, client_order_id: str | None = None) -> pd.DataFrame:
        """The append-only order event log, in journal order."""
        if client_order_id is None:
            return self.query("SELECT * FROM order_events ORDER BY journal_position, event_seq")
        return self.query("SELECT * FROM order_events WHERE client_order_id = ? ORDER BY journal_position, event_seq",
                          [client_order_id])

    def fills(self, client_order_id: str | None = None) -> pd.DataFrame:
        if client_order_id is None:
            return self.query("SELECT * FROM fills ORDER BY ts_event, fill_id")
        return self.query("SELECT * FROM fills WHERE client_order_id = ? ORDER BY ts_event, fill_id",
                          [client_order_id])

    def positions(self) -> pd.DataFrame:
        return self.query("SELECT * FROM positions ORDER BY account_id, strategy_id, instrument_id")

    def alerts(self) -> pd.DataFrame:
        return self.query("SELECT * FROM alerts ORDER BY ts_ns, journal_position")
