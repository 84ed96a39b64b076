"""The DuckDB store: one file per workspace, one writer, reads as DataFrames.

DuckDB lets one process hold a file read-write, or several hold it read-only, never
both. The process that runs a session owns the writer; everything else reads through
it. A lock held by another process surfaces as :class:`StoreLockedError` naming the
holder, never as DuckDB's raw message.

Writes are transactional: a load or an order write either lands whole or not at all.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import weakref
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from tradebook.data.loaders import MarketData
from tradebook.data.schemas import SPECS, DataKind
from tradebook.data import frames as _frames  # noqa: F401  (registers the df.tb accessor)
from tradebook.errors import AmbiguousReadError, MigrationError, SchemaBehindError, StoreError, UnknownInstrumentError
from tradebook.store.records import BODY_OFFSET, journal_line
from tradebook.model.instruments import BUNDLED_INSTRUMENTS, AssetClass, Instrument, TradingHours
from tradebook.model.time import now_ns, ns_to_iso
from tradebook.store.holder import locked_error, release_holder, update_purpose, write_holder
from tradebook.store.migrations import LATEST_VERSION, MIGRATIONS

DEFAULT_STORE_PATH = "tradebook.duckdb"

TABLE_FOR_KIND: dict[DataKind, str] = {
    DataKind.QUOTES: "quotes",
    DataKind.TRADES: "trades",
    DataKind.TRADE_BARS: "trade_bars",
    DataKind.QUOTE_BARS: "quote_bars",
    DataKind.ADJUSTMENT_FACTORS: "adjustment_factors",
    DataKind.DEPTH: "depth_updates",
    DataKind.BOOK: "book_levels",
    DataKind.MBP1: "mbp1_events",
}

_PANDAS_READ_DTYPES = {"int": "int64", "Int": "Int64", "float": "float64", "str": "str", "flag": "boolean"}


_CALIBRATION_COLUMNS = ("calibration_id, instrument_id, version, created_at_ns, data_start_ns, data_end_ns, "
                        "dataset_ids, params, diagnostics, provenance")


@dataclass(frozen=True)
class CalibrationRecord:
    """A stored fill-model calibration: which data it came from, its params JSON and fit diagnostics."""

    calibration_id: str  # "<instrument_id>@v<version>"
    instrument_id: str
    version: int
    created_at_ns: int
    data_start_ns: int
    data_end_ns: int
    dataset_ids: tuple[int, ...]
    params: str
    diagnostics: dict[str, Any]
    # '' for a model fitted from market data; for one corrected from realised fills, a JSON
    # object naming the calibration it corrected, the fills and the runs/accounts (migration 6)
    provenance: str = ""


def _json_default(value: Any) -> Any:
    # numpy scalars and arrays appear in diagnostics computed with numpy
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"diagnostics value {value!r} of type {type(value).__name__} is not JSON-serialisable")


@dataclass(frozen=True)
class IngestResult:
    dataset_id: int
    rows: int
    created: bool  # False when the same content was already stored


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


# The journal records' shape, for DuckDB to parse each line once into typed columns (keys
# not listed are ignored, missing ones are NULL). Decimals are {"$d": "<exact text>"}.
_DEC = 'STRUCT("$d" VARCHAR)'
_FILL = (f"STRUCT(fill_id VARCHAR, client_order_id VARCHAR, instrument_id VARCHAR, side VARCHAR, quantity {_DEC}, "
         f"price {_DEC}, fee {_DEC}, liquidity VARCHAR, ts_event_ns BIGINT, ts_init_ns BIGINT)")
_RECORD_COLUMNS = {
    "kind": "VARCHAR", "ts": "BIGINT", "client_order_id": "VARCHAR",
    "intent": (f"STRUCT(intent_id VARCHAR, strategy_id VARCHAR, account_id VARCHAR, instrument_id VARCHAR, "
               f"side VARCHAR, order_type VARCHAR, time_in_force VARCHAR, quantity {_DEC}, limit_price {_DEC}, "
               f"stop_price {_DEC}, reduce_only BOOLEAN, stop_loss {_DEC}, reason VARCHAR)"),
    "parent_order_id": "VARCHAR",
    # an order's final row, on the record of the venue event that finished it (Decimals as plain text)
    "state": ("STRUCT(quantity VARCHAR, limit_price VARCHAR, stop_price VARCHAR, venue_order_id VARCHAR, "
              "status VARCHAR, filled_quantity VARCHAR, avg_fill_price VARCHAR, ts_last BIGINT, reason VARCHAR, "
              "fees VARCHAR)"),
    "event": (f"STRUCT(client_order_id VARCHAR, event_type VARCHAR, ts_event_ns BIGINT, ts_init_ns BIGINT, "
              f"venue_order_id VARCHAR, reason VARCHAR, quantity {_DEC}, limit_price {_DEC}, stop_price {_DEC}, "
              f"fill {_FILL}, code VARCHAR)"),
    "error": "VARCHAR", "code": "VARCHAR", "alert": "STRUCT(ts_ns BIGINT, kind VARCHAR, message VARCHAR)",
    "account_id": "VARCHAR", "strategy_id": "VARCHAR", "fill": _FILL,
}


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


_PROJECT_MARKERS = ("pyproject.toml", ".git")

# the open Stores of this process per file: DuckDB keeps one configuration (read-only or not) per file and process
_process_stores: dict[str, weakref.WeakSet[Store]] = {}


def _store_key(path: Path) -> str:
    return str(path.resolve())


def workspace_root(start: str | Path | None = None) -> Path:
    """The folder of the workspace: the nearest of ``start`` (default: the current folder) and its
    parents holding ``pyproject.toml`` or ``.git``, else ``start`` itself.

    Notebooks run with their own folder as the current one (``notebooks/``); walking up
    gives them the same workspace as the CLI and ``make demo`` at the project root.
    """
    here = Path(start if start is not None else Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if any((folder / marker).exists() for marker in _PROJECT_MARKERS):
            return folder
    return here


def default_store_path() -> Path:
    """The workspace store: the configuration's ``session.store_path`` (``$TRADEBOOK_STORE``, or the
    workspace's ``tradebook.yaml``), else ``tradebook.duckdb`` at :func:`workspace_root`.

    The same setting the ``tradebook`` command and sessions read, so notebooks and the CLI
    share one store; a bad configuration is a ConfigError here too.
    """
    from tradebook.config import load_config

    configured = load_config().session.store_path
    if configured is not None:
        return configured
    return workspace_root() / DEFAULT_STORE_PATH


def open_store(path: str | Path | None = None, *, read_only: bool = False, lazy_writer: bool = True,
               purpose: str = "") -> Store:
    """Open the workspace store (:func:`default_store_path` when no path), creating and migrating it when needed.

    By default it holds the file read-only until its first write, so a notebook that only
    reads never locks out ``tradebook info`` or another notebook; ``read_only=True`` never
    writes; ``lazy_writer=False`` takes the writer's lock at once (what a session that must
    not lose it to a reader wants). ``purpose`` names this process in others' lock errors.
    """
    return Store(path, read_only=read_only, lazy_writer=lazy_writer, purpose=purpose)


class Store:
    """A tradebook workspace in one DuckDB file.

    ``Store(path)`` opens read-write, creating the file and bringing its schema to the
    latest version. ``Store(path, read_only=True)`` needs an existing, current file.
    ``Store(path, lazy_writer=True)`` opens read-only and takes the writer's lock at its
    first write (then keeps it until :meth:`close`). Use it as a context manager, or call
    :meth:`close`.

    DuckDB lets one process hold the file for writing, or several read-only, never both.
    While this store holds it for writing, ``<store>.holder`` names this process (PID,
    command, since when, ``purpose``), so another process's :class:`StoreLockedError` can
    say who to wait for.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        read_only: bool = False,
        target_version: int | None = None,
        lazy_writer: bool = False,
        purpose: str = "",
    ) -> None:
        self.path = Path(path) if path is not None else default_store_path()
        self.read_only = read_only
        self.purpose = purpose
        self._lock = threading.RLock()
        self._con = None
        self._writing = False  # this store's connection holds the file read-write
        self._holds_holder_file = False
        self.lazy_writer = lazy_writer and not read_only
        if read_only and not self.path.exists():
            raise StoreError(f"no store at {self.path}; open it read-write once to create it")
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        target = LATEST_VERSION if target_version is None else target_version
        if lazy_writer and not read_only and target_version is None and self.path.exists():
            self._connect(write=False)
            try:
                current = self._current_version()
            except BaseException:
                self.close()
                raise
            if current == LATEST_VERSION:
                return
            self.close()  # older (or newer) schema: the read-write path migrates, or says why not
        self._connect(write=not read_only)
        try:
            self._migrate(target)
        except BaseException:
            self.close()
            raise
        if lazy_writer and not read_only and target_version is None:
            self.close()
            self._connect(write=False)

    @classmethod
    def reader(cls, path: str | Path | None = None) -> Store:
        """Open read-only, first migrating a store left at an older schema by an earlier tradebook.

        For commands that only read (``tradebook info``, ``fidelity``): after an upgrade the
        first such command brings the file to this code's schema in one read-write open (its
        lock error names any holder), then reads it read-only as usual.
        """
        try:
            return cls(path, read_only=True)
        except SchemaBehindError:
            cls(path, purpose="a schema migration").close()
            return cls(path, read_only=True)

    def _connect(self, *, write: bool) -> None:
        """Open this store's connection (read-write or read-only); lock errors name the holder."""
        try:
            con = duckdb.connect(str(self.path), read_only=not write)
        except duckdb.IOException as exc:
            raise _translate_io_error(exc, self.path, want_write=write) from exc
        except duckdb.ConnectionException as exc:
            if "different configuration" not in str(exc):
                raise StoreError(f"cannot open {self.path} as a DuckDB store: {exc}") from exc
            # DuckDB keeps one configuration per file and process
            con = self._connect_writer_in_process() if write else self._share_writer()
        except duckdb.Error as exc:
            raise StoreError(f"cannot open {self.path} as a DuckDB store: {exc}") from exc
        self._con = con
        self._writing = write
        _process_stores.setdefault(_store_key(self.path), weakref.WeakSet()).add(self)
        if write:
            write_holder(self.path, self.purpose)
            self._holds_holder_file = True

    def _share_writer(self) -> duckdb.DuckDBPyConnection:
        """This process already holds the file read-write (another Store): share it, taking no new lock."""
        try:
            return duckdb.connect(str(self.path))
        except duckdb.Error as exc:
            raise StoreError(f"cannot open {self.path} as a DuckDB store: {exc}") from exc

    def _connect_writer_in_process(self) -> duckdb.DuckDBPyConnection:
        """Write while other Stores of this process read the file: move them all onto one read-write connection.

        DuckDB refuses a read-write connection beside read-only ones of the same process; the
        readers (``open_store`` stores that have not written, ``read_only=True`` stores) are
        reopened read-write (a read-only Store still refuses writes itself).
        """
        peers = [s for s in list(_process_stores.get(_store_key(self.path), ())) if s is not self
                 and s._con is not None]
        with ExitStack() as held:
            for peer in peers:
                held.enter_context(peer._lock)
            for peer in peers:
                peer._con.close()
            try:
                con = duckdb.connect(str(self.path))
            except duckdb.IOException as exc:
                for peer in peers:  # as they were; the error names the other process's holder
                    peer._con = duckdb.connect(str(self.path), read_only=True)
                raise _translate_io_error(exc, self.path, want_write=True) from exc
            except duckdb.Error as exc:
                raise StoreError(f"cannot open {self.path} as a DuckDB store: {exc}") from exc
            for peer in peers:
                peer._con = duckdb.connect(str(self.path))
                peer._writing = not peer.read_only
                if not peer._holds_holder_file:
                    write_holder(self.path, peer.purpose)
                    peer._holds_holder_file = True
        return con

    def release_writer(self) -> bool:
        """Let other processes read again: a lazy writer goes back to read-only until its next write.

        For a store opened with ``lazy_writer`` (``tb.open_store``) after its writes are done,
        e.g. when a session stops. Returns whether the file was released (False for a store that
        holds the writer on purpose, one that is not writing, or while another store of this
        process writes it).
        """
        with self._lock:
            if not self.lazy_writer or not self._writing or self._con is None:
                return False
            self._con.close()
            self._con = None
            self._writing = False
            if self._holds_holder_file:
                self._holds_holder_file = False
                release_holder(self.path)
            self._connect(write=False)
            return self._con.execute("SELECT current_setting('access_mode')").fetchone()[0].lower() == "read_only"

    def announce(self, purpose: str) -> None:
        """Say what this process does with the store (``"a paper session (run demo)"``), for others' lock errors."""
        self.purpose = purpose
        if self._holds_holder_file:
            update_purpose(self.path, purpose)

    # -- lifecycle ----------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                try:
                    self._con.close()
                finally:
                    self._con = None  # type: ignore[assignment]
                    self._writing = False
                    peers = _process_stores.get(_store_key(self.path))
                    if peers is not None:
                        peers.discard(self)
                    if self._holds_holder_file:
                        self._holds_holder_file = False
                        release_holder(self.path)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._con is None:
            return f"Store({str(self.path)!r}, closed)"
        mode = "read-only" if self.read_only else "read-write" if self._writing else "read-only until a write"
        return f"Store({str(self.path)!r}, {mode}, schema v{self.schema_version})"

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            raise StoreError(f"the store {self.path} is closed")
        return self._con

    # -- schema -------------------------------------------------------------------------
    @property
    def schema_version(self) -> int:
        with self._lock:
            return self._current_version()

    def _current_version(self) -> int:
        exists = self.con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_migrations'"
        ).fetchone()[0]
        if not exists:
            return 0
        return int(self.con.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()[0])

    def _migrate(self, target: int) -> None:
        if not 0 <= target <= LATEST_VERSION:
            raise MigrationError(f"target schema version {target} is not between 0 and {LATEST_VERSION}")
        current = self._current_version()
        if current > LATEST_VERSION:
            raise MigrationError(
                f"{self.path} is at schema v{current}, newer than this tradebook (v{LATEST_VERSION}); "
                "upgrade tradebook to open it"
            )
        if current >= target:
            return
        if self.read_only:
            raise SchemaBehindError(
                f"{self.path} is at schema v{current} and this tradebook needs v{target}; "
                "open it read-write once to migrate"
            )
        for migration in MIGRATIONS:
            if current < migration.version <= target:
                self._apply(migration)

    def _apply(self, migration) -> None:
        con = self.con
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                "version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, applied_at_ns BIGINT NOT NULL)"
            )
            for statement in migration.statements:
                con.execute(statement)
            con.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)", [migration.version, migration.name, now_ns()])
            con.execute("COMMIT")
        except duckdb.Error as exc:
            con.execute("ROLLBACK")
            raise MigrationError(f"migration v{migration.version} ({migration.name}) failed: {exc}") from exc

    def migrations(self) -> pd.DataFrame:
        return self.query("SELECT version, name, applied_at_ns FROM schema_migrations ORDER BY version")

    # -- writing ------------------------------------------------------------------------
    def _require_writer(self) -> None:
        if self.read_only:
            raise StoreError(f"{self.path} is open read-only; writes need the session that owns the store")
        if not self._writing:
            self._take_writer()

    def _take_writer(self) -> None:
        """A lazy writer's first write: swap the read-only connection for a read-write one."""
        with self._lock:
            if self._writing:
                return
            if self._con is None:
                raise StoreError(f"the store {self.path} is closed")
            self._con.close()
            self._con = None
            try:
                self._connect(write=True)
            except BaseException:
                try:  # keep reading as before; the lock error says who holds the writer
                    self._connect(write=False)
                except StoreError:
                    pass
                raise

    @contextmanager
    def _threads(self, threads: int) -> Iterator[None]:
        """Run DuckDB on at most ``threads`` cores meanwhile (hold the store lock around it).

        The order path's background flush uses one: the other core stays with the
        order path, which DuckDB would otherwise compete with (DuckDB releases the GIL
        while it works, so one thread of it costs the order path nothing).
        """
        con = self.con
        before = con.execute("SELECT current_setting('threads')").fetchone()[0]
        con.execute(f"SET threads = {int(threads)}")
        try:
            yield
        finally:
            con.execute(f"SET threads = {int(before)}")

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Run writes atomically: all land on success, none on any exception."""
        self._require_writer()
        with self._lock:
            con = self.con
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            else:
                try:
                    con.execute("COMMIT")
                except duckdb.Error as exc:
                    raise StoreError(f"commit failed, nothing was written: {exc}") from exc

    def register_instruments(self, instruments: Iterable[Instrument] | None = None, *,
                             replace: bool = True) -> int:
        """Insert or update instrument specifications (the bundled ones when none given); returns how many changed.

        With ``replace=False`` an instrument stored with a different specification is
        refused (StoreError naming the fields that differ) and nothing is written.
        """
        instruments = list(BUNDLED_INSTRUMENTS.values() if instruments is None else instruments)
        for instrument in instruments:
            if not isinstance(instrument, Instrument):
                raise StoreError(f"register_instruments takes Instrument objects (tb.Instrument or "
                                 f"tb.instrument_from_dict), got {type(instrument).__name__}")
        if self.read_only:
            self._require_writer()  # raises
        with self._lock:  # unchanged specs write nothing: a lazy writer stays read-only
            existing = {row[0]: row for row in self.con.execute("SELECT * FROM instruments").fetchall()}
        if all(i.instrument_id in existing and _same_instrument_row(existing[i.instrument_id], _instrument_row(i))
               for i in instruments):
            return 0
        changed = 0
        with self.transaction() as con:
            existing = {row[0]: row for row in con.execute("SELECT * FROM instruments").fetchall()}
            for instrument in instruments:
                row = _instrument_row(instrument)
                old = existing.get(instrument.instrument_id)
                if old is not None and _same_instrument_row(old, row):
                    continue
                if old is not None and not replace:
                    self._unregistered(instrument)  # raises, naming the fields that differ
                if old is not None:
                    con.execute("DELETE FROM instruments WHERE instrument_id = ?", [instrument.instrument_id])
                con.execute(f"INSERT INTO instruments VALUES ({', '.join('?' * len(row))})", row)
                changed += 1
        return changed

    def ingest(self, data: MarketData) -> IngestResult:
        """Store a validated frame and its findings in one transaction.

        Loading the same content for the same instrument and kind again is a no-op
        that returns the existing dataset id.
        """
        if self.read_only:
            self._require_writer()  # raises
        if not isinstance(data, MarketData):
            raise StoreError(f"ingest takes a MarketData from tradebook.data loaders, got {type(data).__name__}")
        with self._lock:
            if data.instrument is not None:
                if data.instrument.instrument_id != data.instrument_id:
                    raise StoreError(f"{data.source}: the data is for {data.instrument_id} but carries the "
                                     f"definition of {data.instrument.instrument_id}")
                new_instrument = self._unregistered(data.instrument)
            else:
                new_instrument = self._bundled_if_unregistered(data.instrument_id)
            found = self.con.execute(
                "SELECT dataset_id, row_count FROM datasets WHERE instrument_id = ? AND kind = ? AND content_hash = ?",
                [data.instrument_id, str(data.kind), data.content_hash],
            ).fetchone()
            if found is not None:  # already stored: nothing to write (a lazy writer stays read-only)
                return IngestResult(int(found[0]), int(found[1]), created=False)
            self._require_writer()
            table = TABLE_FOR_KIND[data.kind]
            rows_view = f"_incoming_{table}"
            rows = _rows_for_table(data, 0)  # dataset_id is bound in the INSERT once known
            _refuse_infinities(rows, data.source)  # DuckDB's CHECK (px > 0) lets +inf through
            columns = [c for c in rows.columns if c != "dataset_id"]
            self.con.register(rows_view, rows)
            try:
                dataset_id = self._ingest_rows(data, table, rows_view, columns, new_instrument)
            finally:
                # after the transaction ended either way: unregistering inside an aborted
                # transaction would fail and hide the real error
                self.con.unregister(rows_view)
            return IngestResult(dataset_id, data.rows, created=True)

    def _ingest_rows(self, data: MarketData, table: str, rows_view: str, column_list: list[str],
                     new_instrument: Instrument | None) -> int:
        with self.transaction() as con:
            if new_instrument is not None:  # the caller's own definition lands with its data, or not at all
                row = _instrument_row(new_instrument)
                con.execute(f"INSERT INTO instruments VALUES ({', '.join('?' * len(row))})", row)
            dataset_id = int(con.execute(
                "INSERT INTO datasets (instrument_id, kind, source, content_hash, bar_ns, row_count, "
                "first_ts_ns, last_ts_ns, loaded_at_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING dataset_id",
                [data.instrument_id, str(data.kind), data.source, data.content_hash, data.bar_ns, data.rows,
                 data.first_ts_ns, data.last_ts_ns, now_ns()],
            ).fetchone()[0])
            columns = ", ".join(column_list)
            try:
                con.execute(f"INSERT INTO {table} (dataset_id, {columns}) "
                            f"SELECT ?, {columns} FROM {rows_view}", [dataset_id])
            except duckdb.Error as exc:
                raise StoreError(f"storing {data.source} in {table} failed, nothing was written: {exc}") from exc
            for finding in data.findings:
                con.execute(
                    "INSERT INTO data_quality VALUES (?, ?, ?, ?, ?, ?)",
                    [dataset_id, finding.severity, finding.code, finding.message, finding.count,
                     finding.first_line],
                )
        return dataset_id

    def _unregistered(self, instrument: Instrument) -> Instrument | None:
        """``instrument`` when the store lacks it, None when it holds the same; StoreError when it differs."""
        with self._lock:
            stored = self.con.execute("SELECT * FROM instruments WHERE instrument_id = ?",
                                      [instrument.instrument_id]).fetchone()
            if stored is None:
                return instrument
            row = _instrument_row(instrument)
            if _same_instrument_row(stored, row):
                return None
            columns = [d[0] for d in self.con.description]
        differ = [f"{name} {_shown(a)} -> {_shown(b)}" for name, a, b in zip(columns, stored, row)
                  if not _same_instrument_row((a,), [b])]
        raise StoreError(
            f"{instrument.instrument_id} is already registered in {self.path} with another specification "
            f"({'; '.join(differ)}); nothing was written. Use another instrument id, or "
            "store.register_instruments([...]) to replace it on purpose")

    def _bundled_if_unregistered(self, instrument_id: str) -> Instrument | None:
        """None when the store holds ``instrument_id``; the bundled one to register with the data otherwise."""
        known = self.con.execute("SELECT 1 FROM instruments WHERE instrument_id = ?", [instrument_id]).fetchone()
        if known is not None:
            return None
        if instrument_id not in BUNDLED_INSTRUMENTS:
            raise UnknownInstrumentError(
                f"instrument {instrument_id!r} is not registered in {self.path}; define it (tb.instrument_from_dict, "
                "or tradebook load --instrument-file) and register it with store.register_instruments([...])"
            )
        return BUNDLED_INSTRUMENTS[instrument_id]

    def _ensure_instrument(self, instrument_id: str) -> None:
        with self._lock:
            missing = self._bundled_if_unregistered(instrument_id)
        if missing is not None:
            self.register_instruments([missing])

    # -- reading ------------------------------------------------------------------------
    def query(self, sql: str, params: list[Any] | None = None) -> pd.DataFrame:
        """Run a read query and return a DataFrame."""
        with self._lock:
            try:
                return self.con.execute(sql, params or []).df()
            except duckdb.Error as exc:
                raise StoreError(f"query failed: {exc}") from exc

    def instrument(self, instrument_id: str) -> Instrument:
        with self._lock:
            row = self.con.execute("SELECT * FROM instruments WHERE instrument_id = ?", [instrument_id]).fetchone()
            if row is None:
                known = [r[0] for r in self.con.execute("SELECT instrument_id FROM instruments ORDER BY 1").fetchall()]
                raise UnknownInstrumentError(f"unknown instrument {instrument_id!r} in {self.path}; known: {known}")
            columns = [d[0] for d in self.con.description]
        return _instrument_from_row(dict(zip(columns, row)))

    def instruments(self) -> pd.DataFrame:
        return self.query("SELECT * FROM instruments ORDER BY instrument_id")

    def datasets(self) -> pd.DataFrame:
        return self.query("SELECT * FROM datasets ORDER BY dataset_id")

    def findings(self, dataset_id: int | None = None) -> pd.DataFrame:
        if dataset_id is None:
            return self.query("SELECT * FROM data_quality ORDER BY dataset_id")
        return self.query("SELECT * FROM data_quality WHERE dataset_id = ? ORDER BY dataset_id", [dataset_id])

    def recordings(self, instrument_id: str | None = None) -> pd.DataFrame:
        """The recordings the store holds, one row each: datasets of an instrument that overlap in time.

        Two captures of one instrument years apart (BTCUSDT.BINANCE on 2021-01-08 and
        2024-08-08) are two recordings; daily, minute and second bars of SPY overlap and
        make one recording with several bar sizes. ``recording`` is the label that
        :meth:`read` takes (the UTC start date, with the time when two start the same day).
        """
        rows = [{"instrument_id": r.instrument_id, "recording": r.label, "first": ns_to_iso(r.start_ns),
                 "last": ns_to_iso(r.end_ns), "start_ns": r.start_ns, "end_ns": r.end_ns,
                 "kinds": ", ".join(r.kinds), "bar_seconds": ", ".join(str(b) for b in r.bar_seconds),
                 "dataset_ids": ", ".join(str(i) for i in r.dataset_ids), "rows": r.rows}
                for r in self._recordings(instrument_id)]
        columns = ["instrument_id", "recording", "first", "last", "start_ns", "end_ns", "kinds", "bar_seconds",
                   "dataset_ids", "rows"]
        return pd.DataFrame(rows, columns=columns)

    def _recordings(self, instrument_id: str | None) -> list[Recording]:
        sql = ("SELECT dataset_id, instrument_id, kind, bar_ns, row_count, first_ts_ns, last_ts_ns FROM datasets"
               + (" WHERE instrument_id = ?" if instrument_id is not None else "")
               + " ORDER BY instrument_id, first_ts_ns, dataset_id")
        with self._lock:
            found = self.con.execute(sql, [] if instrument_id is None else [instrument_id]).fetchall()
        return _group_recordings(found)

    def read(
        self,
        kind: DataKind | str,
        instrument_id: str | None = None,
        *,
        start_ns: int | None = None,
        end_ns: int | None = None,
        dataset_id: int | Iterable[int] | None = None,
        recording: str | None = None,
        bar_seconds: int | None = None,
        datetime: bool = False,
    ) -> pd.DataFrame:
        """Market data of ``kind`` for one instrument, from one recording and one bar size, never mixed.

        Columns and dtypes are the loader's canonical ones (int64 UTC ns ``ts_ns``), rows in
        time then file order; bars carry a ``bar_seconds`` column. When the instrument has
        several recordings (or bar sizes) of ``kind``, pick one with ``recording`` (a label of
        :meth:`recordings`), ``dataset_id``, ``bar_seconds`` or a ``start_ns``/``end_ns``
        window that falls in one; otherwise :class:`AmbiguousReadError` lists the choices.
        ``start_ns`` is inclusive, ``end_ns`` exclusive. ``df.attrs`` says what was returned
        (instrument, kind, recording, dataset ids, time range, bar_seconds);
        ``datetime=True`` indexes the frame by a tz-aware UTC time (``df.tb.datetime()``).
        """
        kind = _parse_read_kind(kind)
        spec = SPECS[kind]
        table = TABLE_FOR_KIND[kind]
        is_bars = kind in (DataKind.TRADE_BARS, DataKind.QUOTE_BARS)
        if bar_seconds is not None and not is_bars:
            raise StoreError(f"bar_seconds applies to trade_bars and quote_bars, not {kind}")
        wanted_ids = _dataset_id_set(dataset_id)
        if instrument_id is None and wanted_ids is None:
            raise StoreError(f"read {kind}: name an instrument (or dataset_id); reading every instrument at once "
                             "would mix them. Known instruments: see store.recordings()")
        chosen, label = self._choose_datasets(kind, instrument_id, wanted_ids, recording, bar_seconds,
                                              start_ns, end_ns)
        where, params = [f"dataset_id IN ({', '.join('?' * len(chosen))})" if chosen else "FALSE"], \
            [d.dataset_id for d in chosen]
        for clause, value in (("ts_ns >= ?", start_ns), ("ts_ns < ?", end_ns)):
            if value is not None:
                where.append(clause)
                params.append(int(value))
        sql = f"SELECT * FROM {table} WHERE {' AND '.join(where)}"
        sql += " ORDER BY ts_ns, dataset_id, row_no" + (", level" if kind is DataKind.BOOK else "")
        frame = self.query(sql, params)
        if kind is DataKind.BOOK:
            frame = _book_to_wide(frame)
        present_sets = self._present_columns(kind, frame)
        columns = [c for c in spec.columns if c in present_sets]
        out = frame[columns].reset_index(drop=True) if len(frame) else pd.DataFrame(
            {c: pd.Series(dtype=_PANDAS_READ_DTYPES[spec.column_type(c)]) for c in columns})
        for column in columns:
            out[column] = _coerce_read(out[column], _PANDAS_READ_DTYPES[spec.column_type(column)])
        bar_ns = {d.bar_ns for d in chosen if d.bar_ns is not None}
        bar_size = next(iter(bar_ns)) // 1_000_000_000 if len(bar_ns) == 1 else None
        if is_bars:
            out["bar_seconds"] = np.full(len(out), bar_size if bar_size is not None else 0, dtype="int64")
        ts = out["ts_ns"].to_numpy()
        out.attrs.update({
            "instrument_id": instrument_id if instrument_id is not None else
            ", ".join(sorted({d.instrument_id for d in chosen})),
            "kind": str(kind),
            "recording": label,
            "dataset_ids": tuple(d.dataset_id for d in chosen),
            "start_ns": int(ts[0]) if len(ts) else None,
            "end_ns": int(ts[-1]) if len(ts) else None,
            "bar_seconds": bar_size,
        })
        if datetime:
            out = out.tb.datetime()
        return out

    def _choose_datasets(self, kind: DataKind, instrument_id: str | None, wanted_ids: set[int] | None,
                         recording: str | None, bar_seconds: int | None, start_ns: int | None,
                         end_ns: int | None) -> tuple[list[DatasetSpan], str | None]:
        """The datasets a read returns, all in one recording and of one bar size, and that recording's label."""
        recordings = self._recordings(instrument_id)
        if wanted_ids is not None:
            known = {d.dataset_id for r in recordings for d in r.datasets}
            unknown = sorted(wanted_ids - known)
            if unknown:
                raise StoreError(f"dataset_id {unknown} is not a dataset"
                                 f"{' of ' + instrument_id if instrument_id else ''} in {self.path}; "
                                 f"see store.recordings({instrument_id!r})")
        if recording is not None:
            labels = [r.label for r in recordings]
            if recording not in labels:
                raise StoreError(f"no recording {recording!r} of {instrument_id} in {self.path}; "
                                 f"expected one of {labels or 'none (load data first)'}")
        bar_ns = None if bar_seconds is None else int(bar_seconds) * 1_000_000_000
        candidates: list[tuple[Recording, DatasetSpan]] = []
        for r in recordings:
            if recording is not None and r.label != recording:
                continue
            for d in r.datasets:
                if d.kind != str(kind) or (wanted_ids is not None and d.dataset_id not in wanted_ids):
                    continue
                if bar_ns is not None and d.bar_ns != bar_ns:
                    continue
                if (start_ns is not None and d.end_ns < start_ns) or (end_ns is not None and d.start_ns >= end_ns):
                    continue
                candidates.append((r, d))
        if instrument_id is None:  # by dataset id only: they name what they want
            return [d for _, d in candidates], None
        spans = {r.label: r for r, _ in candidates}
        if len(spans) > 1:
            choices = "; ".join(
                f"{label} ({r.first_iso} to {r.last_iso}, dataset_id "
                f"{', '.join(str(d.dataset_id) for rr, d in candidates if rr is r)})" for label, r in spans.items())
            first = next(iter(spans))
            raise AmbiguousReadError(
                f"{instrument_id} has {len(spans)} recordings of {kind}, which a read will not join: {choices}; "
                f"pick one with recording={first!r}, dataset_id=... or a start_ns/end_ns window inside one")
        sizes = sorted({d.bar_ns for _, d in candidates if d.bar_ns is not None})
        if len(sizes) > 1:
            listed = ", ".join(str(b // 1_000_000_000) for b in sizes)
            raise AmbiguousReadError(
                f"{instrument_id} has {kind} of {len(sizes)} bar sizes ({listed} seconds), which a read will not "
                f"interleave; pick one with bar_seconds= ({listed.replace(', ', ' or ')})")
        return [d for _, d in candidates], (next(iter(spans)) if spans else None)

    def _present_columns(self, kind: DataKind, frame: pd.DataFrame) -> set[str]:
        """Columns worth returning: required ones, and optional ones holding any value."""
        spec = SPECS[kind]
        present = set(spec.required)
        for column in spec.optional:
            if column in frame.columns and frame[column].notna().any():
                present.add(column)
        return present

    def quotes(
        self, instrument_id: str | None = None, *, start_ns: int | None = None, end_ns: int | None = None,
        dataset_id: int | Iterable[int] | None = None, recording: str | None = None, datetime: bool = False,
    ) -> pd.DataFrame:
        """L1 quotes (bid/ask prices and sizes) of one instrument and recording: see :meth:`read`."""
        return self.read(DataKind.QUOTES, instrument_id, start_ns=start_ns, end_ns=end_ns, dataset_id=dataset_id,
                         recording=recording, datetime=datetime)

    def trades(
        self, instrument_id: str | None = None, *, start_ns: int | None = None, end_ns: int | None = None,
        dataset_id: int | Iterable[int] | None = None, recording: str | None = None, datetime: bool = False,
    ) -> pd.DataFrame:
        """Trades (price, size, aggressor side) of one instrument and recording: see :meth:`read`."""
        return self.read(DataKind.TRADES, instrument_id, start_ns=start_ns, end_ns=end_ns, dataset_id=dataset_id,
                         recording=recording, datetime=datetime)

    def bars(
        self, instrument_id: str | None = None, *, start_ns: int | None = None, end_ns: int | None = None,
        dataset_id: int | Iterable[int] | None = None, recording: str | None = None, datetime: bool = False,
        bar_seconds: int | None = None,
    ) -> pd.DataFrame:
        """Trade bars (OHLCV) of one bar size of one instrument and recording: see :meth:`read`."""
        return self.read(DataKind.TRADE_BARS, instrument_id, start_ns=start_ns, end_ns=end_ns, dataset_id=dataset_id,
                         recording=recording, bar_seconds=bar_seconds, datetime=datetime)

    def quote_bars(
        self, instrument_id: str | None = None, *, start_ns: int | None = None, end_ns: int | None = None,
        dataset_id: int | Iterable[int] | None = None, recording: str | None = None, datetime: bool = False,
        bar_seconds: int | None = None,
    ) -> pd.DataFrame:
        """Bid/ask bars of one bar size of one instrument and recording: see :meth:`read`."""
        return self.read(DataKind.QUOTE_BARS, instrument_id, start_ns=start_ns, end_ns=end_ns, dataset_id=dataset_id,
                         recording=recording, bar_seconds=bar_seconds, datetime=datetime)

    def depth(
        self, instrument_id: str | None = None, *, start_ns: int | None = None, end_ns: int | None = None,
        dataset_id: int | Iterable[int] | None = None, recording: str | None = None, datetime: bool = False,
    ) -> pd.DataFrame:
        """L2 depth updates (snapshots and diffs) of one instrument and recording: see :meth:`read`."""
        return self.read(DataKind.DEPTH, instrument_id, start_ns=start_ns, end_ns=end_ns, dataset_id=dataset_id,
                         recording=recording, datetime=datetime)

    def book(
        self, instrument_id: str | None = None, *, start_ns: int | None = None, end_ns: int | None = None,
        dataset_id: int | Iterable[int] | None = None, recording: str | None = None, datetime: bool = False,
    ) -> pd.DataFrame:
        """Top-N book rows, wide (bid_px_0, ...) of one instrument and recording: see :meth:`read`."""
        return self.read(DataKind.BOOK, instrument_id, start_ns=start_ns, end_ns=end_ns, dataset_id=dataset_id,
                         recording=recording, datetime=datetime)

    def mbp1(
        self, instrument_id: str | None = None, *, start_ns: int | None = None, end_ns: int | None = None,
        dataset_id: int | Iterable[int] | None = None, recording: str | None = None, datetime: bool = False,
    ) -> pd.DataFrame:
        """MBP-1 events (the top of book after each event) of one instrument and recording: see :meth:`read`."""
        return self.read(DataKind.MBP1, instrument_id, start_ns=start_ns, end_ns=end_ns, dataset_id=dataset_id,
                         recording=recording, datetime=datetime)

    def adjustment_factors(
        self, instrument_id: str | None = None, *, start_ns: int | None = None, end_ns: int | None = None,
        dataset_id: int | Iterable[int] | None = None, recording: str | None = None, datetime: bool = False,
    ) -> pd.DataFrame:
        """Price and split adjustment factors of one instrument and recording: see :meth:`read`."""
        return self.read(DataKind.ADJUSTMENT_FACTORS, instrument_id, start_ns=start_ns, end_ns=end_ns,
                         dataset_id=dataset_id, recording=recording, datetime=datetime)

    # -- calibrations --------------------------------------------------------------------
    def save_calibration(
        self,
        instrument_id: str,
        params: str,
        *,
        data_start_ns: int,
        data_end_ns: int,
        dataset_ids: Iterable[int],
        diagnostics: dict[str, Any],
        provenance: str = "",
    ) -> CalibrationRecord:
        """Store a fitted fill model as the next version for ``instrument_id``.

        ``params`` is the model's JSON (``FillModel.to_json()``); it is checked to parse.
        Versions count up per instrument from 1 and are never overwritten, so a session
        that names ``BTCUSDT.BINANCE@v3`` always gets the same model.
        """
        self._require_writer()
        self._ensure_instrument(instrument_id)
        try:
            json.loads(params)
        except (TypeError, ValueError) as exc:
            raise StoreError(f"calibration params for {instrument_id} are not JSON: {exc}") from exc
        if not data_start_ns <= data_end_ns:
            raise StoreError(f"calibration data range is empty or reversed: {data_start_ns} > {data_end_ns}")
        ids = sorted({int(i) for i in dataset_ids})
        diagnostics_text = json.dumps(diagnostics, sort_keys=True, default=_json_default)
        with self.transaction() as con:
            version = con.execute(
                "SELECT coalesce(max(version), 0) + 1 FROM calibrations WHERE instrument_id = ?", [instrument_id]
            ).fetchone()[0]
            calibration_id = f"{instrument_id}@v{version}"
            created = now_ns()
            con.execute(
                f"INSERT INTO calibrations ({_CALIBRATION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [calibration_id, instrument_id, version, created, int(data_start_ns), int(data_end_ns),
                 json.dumps(ids), params, diagnostics_text, provenance],
            )
        return CalibrationRecord(calibration_id, instrument_id, int(version), created, int(data_start_ns),
                                 int(data_end_ns), tuple(ids), params, json.loads(diagnostics_text), provenance)

    def calibration(self, name: str) -> CalibrationRecord:
        """A stored calibration by id (``'BTCUSDT.BINANCE@v2'``) or the latest for an instrument id."""
        with self._lock:
            if "@v" in name:
                row = self.con.execute(f"SELECT {_CALIBRATION_COLUMNS} FROM calibrations WHERE calibration_id = ?",
                                       [name]).fetchone()
            else:
                row = self.con.execute(
                    f"SELECT {_CALIBRATION_COLUMNS} FROM calibrations WHERE instrument_id = ? "
                    "ORDER BY version DESC LIMIT 1", [name]
                ).fetchone()
        if row is None:
            known = self.calibrations()["calibration_id"].tolist()
            raise StoreError(f"no calibration {name!r} in {self.path}; stored: {known or 'none (run tradebook calibrate)'}")
        (calibration_id, instrument_id, version, created, start, end, ids, params, diagnostics, provenance) = row
        return CalibrationRecord(calibration_id, instrument_id, int(version), int(created), int(start), int(end),
                                 tuple(json.loads(ids)), params, json.loads(diagnostics), provenance)

    def calibrations(self, instrument_id: str | None = None) -> pd.DataFrame:
        """Stored calibrations (without their params), newest version last per instrument."""
        sql = ("SELECT calibration_id, instrument_id, version, created_at_ns, data_start_ns, data_end_ns, dataset_ids, "
               "provenance FROM calibrations")
        if instrument_id is None:
            return self.query(sql + " ORDER BY instrument_id, version")
        return self.query(sql + " WHERE instrument_id = ? ORDER BY version", [instrument_id])

    # -- order path (copied from the write-ahead journal by the order manager) -------------
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

    def summary(self) -> pd.DataFrame:
        """One row per dataset: instrument, kind, time range, rows and quality findings."""
        frame = self.query(
            """
            SELECT d.dataset_id, d.instrument_id, i.asset_class, d.kind, d.bar_ns, d.source, d.row_count,
                   d.first_ts_ns, d.last_ts_ns,
                   count(q.code) FILTER (WHERE q.severity = 'warning') AS warnings,
                   string_agg(q.code, ', ' ORDER BY q.code) FILTER (WHERE q.severity = 'warning') AS warning_codes
            FROM datasets d
            LEFT JOIN instruments i USING (instrument_id)
            LEFT JOIN data_quality q USING (dataset_id)
            GROUP BY ALL
            ORDER BY d.instrument_id, d.kind, d.first_ts_ns
            """
        )
        frame["first"] = [ns_to_iso(v) for v in frame["first_ts_ns"]]
        frame["last"] = [ns_to_iso(v) for v in frame["last_ts_ns"]]
        return frame


# -- helpers ----------------------------------------------------------------------------
@dataclass(frozen=True)
class DatasetSpan:
    """One stored dataset's identity and time range, as a read chooses among them."""

    dataset_id: int
    instrument_id: str
    kind: str
    bar_ns: int | None
    rows: int
    start_ns: int
    end_ns: int


@dataclass(frozen=True)
class Recording:
    """Datasets of one instrument whose time ranges overlap (chained): one capture of the market."""

    instrument_id: str
    label: str
    datasets: tuple[DatasetSpan, ...]

    @property
    def start_ns(self) -> int:
        return min(d.start_ns for d in self.datasets)

    @property
    def end_ns(self) -> int:
        return max(d.end_ns for d in self.datasets)

    @property
    def first_iso(self) -> str:
        return ns_to_iso(self.start_ns)[:19] + "Z"

    @property
    def last_iso(self) -> str:
        return ns_to_iso(self.end_ns)[:19] + "Z"

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(sorted({d.kind for d in self.datasets}))

    @property
    def bar_seconds(self) -> tuple[int, ...]:
        return tuple(sorted({d.bar_ns // 1_000_000_000 for d in self.datasets if d.bar_ns is not None}))

    @property
    def dataset_ids(self) -> tuple[int, ...]:
        return tuple(sorted(d.dataset_id for d in self.datasets))

    @property
    def rows(self) -> int:
        return sum(d.rows for d in self.datasets)


def _group_recordings(rows: list[tuple]) -> list[Recording]:
    """Chain each instrument's datasets (sorted by start) into recordings while their ranges overlap."""
    groups: list[tuple[str, list[DatasetSpan]]] = []
    reach = 0
    for dataset_id, instrument_id, kind, bar_ns, row_count, first, last in rows:
        span = DatasetSpan(int(dataset_id), instrument_id, kind, None if bar_ns is None else int(bar_ns),
                           int(row_count), int(first), int(last))
        if groups and groups[-1][0] == instrument_id and span.start_ns <= reach:
            groups[-1][1].append(span)
            reach = max(reach, span.end_ns)
        else:
            groups.append((instrument_id, [span]))
            reach = span.end_ns
    recordings: list[Recording] = []
    for instrument_id, spans in groups:
        start = min(d.start_ns for d in spans)
        day = ns_to_iso(start)[:10]
        same_day = sum(1 for other_id, other in groups
                       if other_id == instrument_id and ns_to_iso(min(d.start_ns for d in other))[:10] == day)
        label = day if same_day == 1 else ns_to_iso(start)[:19] + "Z"
        recordings.append(Recording(instrument_id, label, tuple(spans)))
    return recordings


def _dataset_id_set(dataset_id: int | Iterable[int] | None) -> set[int] | None:
    if dataset_id is None:
        return None
    values = [dataset_id] if isinstance(dataset_id, (int, np.integer)) else list(dataset_id)
    if not values or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        raise StoreError(f"dataset_id must be an integer or a list of integers, got {dataset_id!r}")
    return {int(v) for v in values}


def _parse_read_kind(kind: DataKind | str) -> DataKind:
    try:
        return DataKind(kind)
    except ValueError:
        raise StoreError(f"unknown data kind {kind!r}; expected one of {', '.join(k.value for k in DataKind)}") \
            from None


def _translate_io_error(exc: duckdb.Error, path: Path, *, want_write: bool) -> StoreError:
    text = str(exc)
    if "lock" in text.lower():
        return locked_error(text, path, want_write=want_write)
    return StoreError(f"cannot open {path}: {' '.join(text.split())}")


def _hours_to_json(hours: TradingHours) -> str:
    return json.dumps({
        "timezone": hours.timezone,
        "open": hours.open.isoformat(),
        "close": hours.close.isoformat(),
        "open_weekdays": sorted(hours.open_weekdays),
        "extended_open": hours.extended_open.isoformat() if hours.extended_open else None,
        "extended_close": hours.extended_close.isoformat() if hours.extended_close else None,
        "calendar": hours.calendar,
        "always_open": hours.always_open,
    }, sort_keys=True)


def _hours_from_json(text: str) -> TradingHours:
    import datetime as dt

    raw = json.loads(text)

    def t(value: str | None) -> dt.time | None:
        return dt.time.fromisoformat(value) if value else None

    return TradingHours(
        timezone=raw["timezone"],
        open=t(raw["open"]),
        close=t(raw["close"]),
        open_weekdays=frozenset(raw["open_weekdays"]),
        extended_open=t(raw["extended_open"]),
        extended_close=t(raw["extended_close"]),
        calendar=raw["calendar"],
        always_open=raw["always_open"],
    )


def _instrument_row(instrument: Instrument) -> list[Any]:
    return [
        instrument.instrument_id,
        instrument.symbol,
        instrument.venue,
        str(instrument.asset_class),
        instrument.currency,
        instrument.base_currency,
        instrument.tick_size,
        json.dumps([[str(p), str(t)] for p, t in instrument.tick_schedule]),
        instrument.lot_size,
        instrument.min_quantity,
        instrument.min_notional,
        instrument.multiplier,
        _hours_to_json(instrument.trading_hours),
        instrument.description,
    ]


def _shown(value: Any) -> str:
    """A stored value for a message: Decimals without DECIMAL(38, 12)'s trailing zeros."""
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    return str(value)


def _same_instrument_row(old: tuple, new: list[Any]) -> bool:
    return all((Decimal(a) == b) if isinstance(b, Decimal) else a == b for a, b in zip(old, new))


def _instrument_from_row(row: dict[str, Any]) -> Instrument:
    def exact(value: Any) -> Decimal:
        # DECIMAL(38, 12) pads to 12 places; strip them without turning 50 into 5E+1
        number = Decimal(value).normalize()
        return number.quantize(Decimal(1)) if number.as_tuple().exponent > 0 else number

    return Instrument(
        instrument_id=row["instrument_id"],
        symbol=row["symbol"],
        venue=row["venue"],
        asset_class=AssetClass(row["asset_class"]),
        currency=row["currency"],
        base_currency=row["base_currency"],
        tick_size=exact(row["tick_size"]),
        tick_schedule=tuple((Decimal(p), Decimal(t)) for p, t in json.loads(row["tick_schedule"])),
        lot_size=exact(row["lot_size"]),
        min_quantity=exact(row["min_quantity"]),
        min_notional=exact(row["min_notional"]),
        multiplier=exact(row["multiplier"]),
        trading_hours=_hours_from_json(row["trading_hours"]),
        description=row["description"],
    )


def _rows_for_table(data: MarketData, dataset_id: int) -> pd.DataFrame:
    frame = data.frame
    n = len(frame)
    if data.kind is DataKind.BOOK:
        levels = sorted(int(c.rsplit("_", 1)[1]) for c in frame.columns if c.startswith("bid_px_"))
        parts = []
        for level in levels:
            part = pd.DataFrame({
                "row_no": np.arange(n, dtype="int64"),
                "ts_ns": frame["ts_ns"].to_numpy(),
                "level": np.full(n, level, dtype="int16"),
                "bid_px": frame[f"bid_px_{level}"].to_numpy(dtype="float64", na_value=np.nan),
                "bid_sz": frame[f"bid_sz_{level}"].to_numpy(dtype="float64", na_value=np.nan),
                "ask_px": frame[f"ask_px_{level}"].to_numpy(dtype="float64", na_value=np.nan),
                "ask_sz": frame[f"ask_sz_{level}"].to_numpy(dtype="float64", na_value=np.nan),
            })
            if "ts_event_ns" in frame.columns:
                part["ts_event_ns"] = frame["ts_event_ns"].to_numpy()
            parts.append(part)
        rows = pd.concat(parts, ignore_index=True)
    else:
        rows = frame.copy()
        rows.insert(0, "row_no", np.arange(n, dtype="int64"))
    rows.insert(0, "instrument_id", data.instrument_id)
    rows.insert(0, "dataset_id", np.full(len(rows), dataset_id, dtype="int32"))
    if data.bar_ns is not None:
        rows["bar_ns"] = np.int64(data.bar_ns)
    return rows


def _refuse_infinities(rows: pd.DataFrame, source: str) -> None:
    for column in rows.columns:
        if rows[column].dtype == "float64":
            values = rows[column].to_numpy()
            if np.isinf(values).any():
                raise StoreError(f"storing {source} failed, nothing was written: {column} holds an infinite "
                                 "value; expected finite prices and sizes")


def _book_to_wide(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty:
        return frame
    base = frame[frame["level"] == frame["level"].min()][["dataset_id", "row_no", "ts_ns", "ts_event_ns"]]
    base = base.set_index(["dataset_id", "row_no"])
    for level in sorted(frame["level"].unique()):
        part = frame[frame["level"] == level].set_index(["dataset_id", "row_no"])
        for column in ("bid_px", "bid_sz", "ask_px", "ask_sz"):
            base[f"{column}_{level}"] = part[column]
    return base.reset_index()


def _coerce_read(series: pd.Series, dtype: str) -> pd.Series:
    if dtype == "str":
        return series.astype("str").where(series.notna(), np.nan) if series.dtype != "str" else series
    if dtype == "boolean":
        return series.astype("boolean")
    return series.astype(dtype)
