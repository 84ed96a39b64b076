"""The DuckDB store: one file per workspace, one writer, reads as DataFrames.

DuckDB lets one process hold a file read-write, or several hold it read-only, never
both. The process that runs a session owns the writer; everything else reads through
it. A lock held by another process surfaces as :class:`StoreLockedError` naming the
holder, never as DuckDB's raw message.

Writes are transactional: a load or an order write either lands whole or not at all.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from tradebook.errors import MigrationError, SchemaBehindError, StoreError
from tradebook.model.time import now_ns, ns_to_iso
from tradebook.store.calibrations import CalibrationTables
from tradebook.store.holder import locked_error, release_holder, update_purpose, write_holder
from tradebook.store.instrument_rows import InstrumentTables
from tradebook.store.market_data import MarketDataTables
from tradebook.store.migrations import LATEST_VERSION, MIGRATIONS
from tradebook.store.order_path import OrderPathTables

DEFAULT_STORE_PATH = "tradebook.duckdb"

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


class Store(InstrumentTables, MarketDataTables, CalibrationTables, OrderPathTables):
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

    @contextmanager
    def cursor_transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Like :meth:`transaction`, on a cursor of its own: for background work (a session's TCA update) that
        registers frames and makes temp tables. The shared connection's users leave results pending on it
        (``fetchone``), which DuckDB lets no ``register`` pass; a cursor has its own results, views and temp
        tables. The store's lock is held throughout, so the connection is neither swapped (a lazy writer's first
        write, :meth:`release_writer`) nor closed under the cursor, which closing it would kill."""
        self._require_writer()
        with self._lock:
            cursor = self.con.cursor()
            try:
                cursor.execute("BEGIN TRANSACTION")
                try:
                    yield cursor
                except BaseException:
                    try:
                        cursor.execute("ROLLBACK")
                    except duckdb.Error:  # already rolled back by the failure: the real error is on its way
                        pass
                    raise
                try:
                    cursor.execute("COMMIT")
                except duckdb.Error as exc:
                    raise StoreError(f"commit failed, nothing was written: {exc}") from exc
            finally:
                cursor.close()

    # -- reading ------------------------------------------------------------------------
    def query(self, sql: str, params: list[Any] | None = None) -> pd.DataFrame:
        """Run a read query and return a DataFrame."""
        with self._lock:
            try:
                return self.con.execute(sql, params or []).df()
            except duckdb.Error as exc:
                raise StoreError(f"query failed: {exc}") from exc

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
def _translate_io_error(exc: duckdb.Error, path: Path, *, want_write: bool) -> StoreError:
    text = str(exc)
    if "lock" in text.lower():
        return locked_error(text, path, want_write=want_write)
    return StoreError(f"cannot open {path}: {' '.join(text.split())}")


