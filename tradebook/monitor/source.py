"""Where a monitor (the dashboard, the read API, notebook controls) reads its data and sends its controls.

DuckDB lets one process hold a store for writing or several hold it read-only, never both
(DESIGN.md, "DuckDB ownership"). A monitor therefore reads in one of two ways:

- :class:`SessionSource` runs in the session's own process. Live state (status, positions,
  working orders, equity) comes from the session's memory; history (orders, fills, alerts,
  TCA, strategy stages) from the store through a cursor of the session's own connection,
  one per read, so any thread may read and no second connection is ever opened. Its
  controls act on the session.
- :class:`StoreSource` reads a store no session of this process runs on. Each read (or
  each :meth:`StoreSource.reading` block) opens the file read-only and closes it again, so
  a monitor never keeps a session from starting. While another process holds the file for
  writing, reads return empty frames and :meth:`~StoreSource.status` names the holder and
  its dashboard's URL (from the holder file, see :mod:`tradebook.store.holder`) instead of
  raising a lock error. Its controls refuse with :class:`~tradebook.errors.ControlError`.

Both return the same columns. Frames keep exact values (Decimal money and quantities,
int64 UTC ns times) and lead with a tz-aware ``time`` column for people.
"""

from __future__ import annotations

import os
import threading
import time as _time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import duckdb
import pandas as pd

from tradebook import tca
from tradebook.alerts import recent_alerts
from tradebook.errors import ConfigError, ControlError, StoreError, StoreLockedError
from tradebook.model.orders import TERMINAL_STATUSES
from tradebook.model.time import now_ns
from tradebook.store.holder import Holder, read_holder
from tradebook.store.migrations import schema_columns
from tradebook.store.store import Store, default_store_path

DEFAULT_LIMIT = 200
MAX_LIMIT = 100_000

ORDER_COLUMNS = ("client_order_id", "strategy_id", "account_id", "instrument_id", "side", "order_type",
                 "time_in_force", "quantity", "filled_quantity", "limit_price", "stop_price", "avg_fill_price",
                 "fees", "status", "reason", "venue_order_id", "parent_order_id", "mode", "venue", "ts_init",
                 "ts_last")
FILL_COLUMNS = ("fill_id", "client_order_id", "venue_order_id", "account_id", "strategy_id", "instrument_id", "side",
                "quantity", "price", "fee", "fee_currency", "liquidity", "ts_event", "ts_init")
POSITION_COLUMNS = ("account_id", "strategy_id", "instrument_id", "asset_class", "quantity", "avg_price",
                    "mark_price", "market_value", "unrealised_pnl", "realised_pnl", "fees", "ts_last_ns")
ALERT_COLUMNS = ("ts_ns", "last_ts_ns", "kind", "severity", "subject", "message", "repeat_count", "dedup_key",
                 "source")
STAGE_COLUMNS = ("strategy", "stage", "ts_ns", "backtest_id", "reason", "decision", "codes", "summary", "decided_ns")
EQUITY_COLUMNS = ("ts_ns", "equity", "cash", "realised_pnl", "unrealised_pnl")

# the int64 ns column each frame's leading ``time`` shows
_TIME_OF = {"orders": "ts_last", "fills": "ts_event", "positions": "ts_last_ns", "alerts": "last_ts_ns",
            "stages": "ts_ns", "tca_fills": "ts_event", "tca_orders": "decision_ts_ns", "equity": "ts_ns"}

# the filters each history read takes (the read API offers the same as query parameters)
FILTERS: dict[str, tuple[str, ...]] = {
    "orders": ("instrument_id", "strategy_id", "status", "since_ns"),
    "fills": ("instrument_id", "strategy_id", "client_order_id", "since_ns"),
    "alerts": ("severity", "kind", "since_ns"),  # tradebook.alerts applies them
    "tca_fills": ("instrument_id", "strategy_id", "since_ns"),  # tradebook.tca applies them
    "tca_orders": ("instrument_id", "strategy_id", "level", "since_ns"),
}
# a filter as SQL over the store's own tables: the column compared, and the time ``since_ns`` is checked against
_SINCE = {"orders": "ts_last", "fills": "ts_event"}

_WORKING = "status NOT IN (" + ", ".join(f"'{s.value}'" for s in sorted(TERMINAL_STATUSES)) + ")"
_SQL = {
    "orders": f"SELECT {', '.join(ORDER_COLUMNS)} FROM orders {{where}} "
              "ORDER BY ts_last DESC, client_order_id LIMIT ?",
    "working_orders": f"SELECT {', '.join(ORDER_COLUMNS)} FROM orders WHERE {_WORKING} "
                      "ORDER BY ts_init, client_order_id",
    "fills": f"SELECT {', '.join(FILL_COLUMNS)} FROM fills {{where}} ORDER BY ts_event DESC, fill_id LIMIT ?",
    "positions": "SELECT p.account_id, p.strategy_id, p.instrument_id, i.asset_class, p.quantity, p.avg_price, "
                 "NULL AS mark_price, NULL AS market_value, NULL AS unrealised_pnl, p.realized_pnl AS realised_pnl, "
                 "p.fees, p.ts_last AS ts_last_ns FROM positions p LEFT JOIN instruments i USING (instrument_id) "
                 "ORDER BY p.account_id, p.strategy_id, p.instrument_id",
    # each strategy's stage now and the gate's latest decision with its evidence (a strategy the gate reviewed
    # that never changed stage shows too)
    "stages": "WITH s AS (SELECT strategy, arg_max(stage, ts_ns) AS stage, max(ts_ns) AS ts_ns, "
              "arg_max(backtest_id, ts_ns) AS backtest_id, arg_max(reason, ts_ns) AS reason "
              "FROM strategy_stages GROUP BY strategy), "
              "d AS (SELECT strategy, arg_max(decision, ts_ns) AS decision, arg_max(codes, ts_ns) AS codes, "
              "arg_max(summary, ts_ns) AS summary, max(ts_ns) AS decided_ns, "
              "arg_max(backtest_id, ts_ns) AS decided_backtest FROM promotion_decisions GROUP BY strategy) "
              "SELECT coalesce(s.strategy, d.strategy) AS strategy, s.stage, coalesce(s.ts_ns, d.decided_ns) AS ts_ns, "
              "coalesce(s.backtest_id, d.decided_backtest) AS backtest_id, s.reason, d.decision, d.codes, d.summary, "
              "d.decided_ns FROM s FULL OUTER JOIN d ON s.strategy = d.strategy ORDER BY 1",
    "counts": f"SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM orders WHERE {_WORKING}), "
              "(SELECT count(*) FROM fills), (SELECT count(*) FROM alerts), "
              "(SELECT sum(realized_pnl) FROM positions), "
              "greatest((SELECT max(ts_last) FROM orders), (SELECT max(ts_event) FROM fills))",
    "latest_order": "SELECT mode, venue, account_id FROM orders ORDER BY ts_last DESC LIMIT 1",
}


@runtime_checkable
class MonitorSource(Protocol):
    """What a monitor reads and controls; :class:`SessionSource` and :class:`StoreSource` implement it."""

    kind: str  # "session" or "store"

    @property
    def can_control(self) -> bool: ...

    @property
    def held_by(self) -> str | None: ...

    def reading(self) -> Any: ...

    def status(self) -> dict[str, Any]: ...

    def positions(self) -> pd.DataFrame: ...

    def working_orders(self) -> pd.DataFrame: ...

    def orders(self, limit: int = DEFAULT_LIMIT, **filters: Any) -> pd.DataFrame: ...

    def fills(self, limit: int = DEFAULT_LIMIT, **filters: Any) -> pd.DataFrame: ...

    def alerts(self, limit: int = DEFAULT_LIMIT, **filters: Any) -> pd.DataFrame: ...

    def stages(self) -> pd.DataFrame: ...

    def tca_fills(self, limit: int = DEFAULT_LIMIT, *, columns: Sequence[str] | None = None,
                  **filters: Any) -> pd.DataFrame: ...

    def tca_orders(self, limit: int = DEFAULT_LIMIT, *, columns: Sequence[str] | None = None,
                   **filters: Any) -> pd.DataFrame: ...

    def equity(self) -> pd.DataFrame: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def halt(self, reason: str = ...) -> None: ...

    def flatten(self, reason: str = ...) -> Any: ...


@runtime_checkable
class MonitoredSession(Protocol):
    """What :class:`SessionSource` uses of a :class:`tradebook.session.Session` (declared here, so the monitor
    needs no import of the session: the session hands itself to the monitor)."""

    store: Store
    oms: Any
    venue: Any
    kill_switch: Any
    state: Any

    @property
    def now_ns(self) -> int: ...

    def status(self) -> Mapping[str, Any]: ...

    def positions(self) -> pd.DataFrame: ...

    def equity_frame(self) -> pd.DataFrame: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def halt(self, reason: str) -> None: ...

    def resume_trading(self, reason: str) -> None: ...

    def flatten(self, reason: str) -> list[Any]: ...


# -- reading the store ---------------------------------------------------------------------------
def _check_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ConfigError(f"limit is {limit!r}; expected a whole number from 1 to {MAX_LIMIT}")
    return limit


def _check_filters(table: str, filters: Mapping[str, Any]) -> None:
    unknown = sorted(set(filters) - set(FILTERS[table]))
    if unknown:
        raise ConfigError(f"{table} cannot be filtered by {', '.join(unknown)}; expected "
                          f"{', '.join(sorted(FILTERS[table]))}")


def _where(table: str, filters: Mapping[str, Any]) -> tuple[str, list[Any]]:
    """``WHERE ...`` (or '') and its parameters for ``filters`` of one of the store's tables."""
    _check_filters(table, filters)
    conditions, params = [], []
    for name, value in sorted(filters.items()):
        if value is not None:
            conditions.append(f"{_SINCE[table]} >= ?" if name == "since_ns" else f"{name} = ?")
            params.append(value)
    return ("WHERE " + " AND ".join(conditions) if conditions else ""), params


def _fetch(con: Any, sql: str, params: list[Any] | None = None) -> pd.DataFrame:
    """Rows as a DataFrame of exact values: DuckDB hands DECIMAL columns to Python as Decimal."""
    cursor = con.execute(sql, params or [])
    columns = [d[0] for d in cursor.description]
    return pd.DataFrame(cursor.fetchall(), columns=columns)


def _with_time(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """``frame`` led by a tz-aware ``time`` column made from its int64 ns column for ``name``."""
    column = _TIME_OF[name]
    shown = frame.copy()
    ns = pd.to_numeric(shown[column], errors="coerce") if len(shown) else pd.Series([], dtype="float64")
    shown.insert(0, "time", pd.to_datetime(ns, unit="ns", utc=True))
    return shown


def _empty(columns: tuple[str, ...] | list[str], name: str) -> pd.DataFrame:
    return _with_time(pd.DataFrame({c: pd.Series([], dtype=object) for c in columns}), name)


class _StoreReads:
    """The history reads both sources share, over a connection (or cursor) given by :meth:`_connection`."""

    @contextmanager
    def _connection(self) -> Iterator[Any | None]:  # None: the store cannot be read now (held elsewhere)
        raise NotImplementedError

    def _read(self, name: str, sql: str, params: list[Any], columns: tuple[str, ...]) -> pd.DataFrame:
        with self._connection() as con:
            if con is None:
                return _empty(columns, name)
            return _with_time(_fetch(con, sql, params), name)

    def _history(self, name: str, limit: int, filters: Mapping[str, Any], columns: tuple[str, ...]) -> pd.DataFrame:
        where, params = _where(name, filters)
        return self._read(name, _SQL[name].format(where=where), [*params, _check_limit(limit)], columns)

    def orders(self, limit: int = DEFAULT_LIMIT, **filters: Any) -> pd.DataFrame:
        """The latest ``limit`` orders (current state), newest first; filters: instrument_id, strategy_id,
        status, since_ns."""
        return self._history("orders", limit, filters, ORDER_COLUMNS)

    def fills(self, limit: int = DEFAULT_LIMIT, **filters: Any) -> pd.DataFrame:
        """The latest ``limit`` fills, newest first; filters: instrument_id, strategy_id, client_order_id, since_ns."""
        return self._history("fills", limit, filters, FILL_COLUMNS)

    def alerts(self, limit: int = DEFAULT_LIMIT, **filters: Any) -> pd.DataFrame:
        """The latest ``limit`` alerts by when they last fired (:func:`tradebook.alerts.recent_alerts`); filters:
        severity, kind, since_ns."""
        return self._analysis("alerts", recent_alerts, limit, filters, ALERT_COLUMNS)

    def stages(self) -> pd.DataFrame:
        """Each strategy's stage now (research, paper, live, reverted), since when and why, and the promotion
        gate's latest decision on it (decision, codes, summary, when)."""
        return self._read("stages", _SQL["stages"], [], STAGE_COLUMNS)

    def tca_fills(self, limit: int = DEFAULT_LIMIT, *, columns: Sequence[str] | None = None,
                  **filters: Any) -> pd.DataFrame:
        """The latest ``limit`` rows of ``tca_fills`` (costs in bps per fill), newest first
        (:func:`tradebook.tca.tca_fills`; ``columns``: only these); filters: instrument_id, strategy_id, since_ns."""
        return self._analysis("tca_fills", tca.tca_fills, limit, filters, schema_columns("tca_fills"),
                              since="start_ns", subset=columns, time_column="ts_event")

    def tca_orders(self, limit: int = DEFAULT_LIMIT, *, columns: Sequence[str] | None = None,
                   **filters: Any) -> pd.DataFrame:
        """The latest ``limit`` rows of ``tca_orders`` (costs, fill rate and latencies per order and algo
        parent), newest decision first (:func:`tradebook.tca.tca_orders`); filters: instrument_id, strategy_id,
        level, since_ns."""
        return self._analysis("tca_orders", tca.tca_orders, limit, filters, schema_columns("tca_orders"),
                              since="start_ns", subset=columns, time_column="decision_ts_ns")

    def _analysis(self, name: str, read: Callable[..., pd.DataFrame], limit: int, filters: Mapping[str, Any],
                  columns: tuple[str, ...], *, since: str = "since_ns", **options: Any) -> pd.DataFrame:
        """A read of another package (TCA, alerts) over this source's connection; ``since``: its name for since_ns;
        ``options``: ``subset`` (only these columns) and the ``time_column`` a subset keeps."""
        _check_filters(name, filters)
        chosen = {since if k == "since_ns" else k: v for k, v in filters.items() if v is not None}
        subset, time_column = options.pop("subset", None), options.pop("time_column", None)
        with self._connection() as con:
            if con is None:
                return _empty(columns if subset is None else (time_column, *subset), name)
            if subset is not None:
                chosen["columns"] = subset
            return read(con, limit=_check_limit(limit), **chosen)

    def _store_counts(self, con: Any) -> dict[str, Any]:
        orders, working, fills, alerts, realised, last = con.execute(_SQL["counts"]).fetchone()
        return {"orders": orders, "working_orders": working, "fills": fills, "alerts": alerts,
                "realised_pnl": realised if realised is not None else Decimal(0), "last_event_ns": last}


# -- in the session's process --------------------------------------------------------------------
class SessionSource(_StoreReads):
    """A monitor in the session's process: live state from the session, history through its store connection.

    ``session``: a :class:`tradebook.session.Session` (started or not). Controls act on it
    while it runs: :meth:`pause` and :meth:`resume` hold and release its feed (resume also
    lifts a halt or reduce-only), :meth:`halt` and :meth:`flatten` are its kill switch.
    Orders and fills come from the store, which the session copies its journal into in
    the background (a fraction of a second behind); working orders and positions come
    from the session itself.
    """

    kind = "session"

    def __init__(self, session: MonitoredSession) -> None:
        self.session = session

    @property
    def store_path(self) -> Path:
        return Path(self.session.store.path)

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        cursor = self._cursor()
        try:
            yield cursor
        finally:
            cursor.close()

    def _cursor(self) -> Any:
        """A cursor of the session's connection; a lazy writer swaps that connection at its first write and when
        the session ends, so a read in that instant waits for the new one (up to a second)."""
        deadline = _time.monotonic() + 1
        while True:
            try:
                return self.session.store.con.cursor()
            except (StoreError, duckdb.ConnectionException) as exc:
                if _time.monotonic() > deadline:
                    raise StoreError(f"cannot read {self.store_path} through the session: {exc}") from exc
                _time.sleep(0.02)

    @contextmanager
    def reading(self) -> Iterator[SessionSource]:
        """Several reads together (a dashboard refresh); each read takes its own cursor anyway."""
        yield self

    @property
    def can_control(self) -> bool:
        return str(self.session.state) in ("running", "paused")

    @property
    def held_by(self) -> str | None:
        return None  # the session's own process reads through it: nothing can lock it out

    def status(self) -> dict[str, Any]:
        """State, mode, account, P&L, counts and kill switch, as exact values (``updated_ns``: when read)."""
        status = dict(self.session.status())
        status.update(
            held_by=None, dashboard_url=None, can_control=self.can_control, source=self.kind,
            store_path=str(self.store_path), updated_ns=now_ns(),
            last_event_ns=int(self.session.now_ns) or None,
        )
        return status

    def positions(self) -> pd.DataFrame:
        """Every position of the session (flat ones keep their realised P&L), marked at the last quote."""
        return _with_time(pd.DataFrame(self.session.positions())[list(POSITION_COLUMNS)], "positions")

    def working_orders(self) -> pd.DataFrame:
        """Orders not final yet, from the session's order manager (current to the last event), oldest first."""
        mode = "live" if self.session.venue.is_live else "paper"
        rows = []
        for order in sorted(self.session.oms.working_orders(), key=lambda o: (o.intent.ts_ns, o.client_order_id)):
            intent = order.intent
            rows.append((order.client_order_id, intent.strategy_id, intent.account_id, intent.instrument_id,
                         str(intent.side), str(intent.order_type), str(intent.time_in_force), order.total_quantity,
                         order.filled_qty, order.limit_price if order.limit_price is not None else intent.limit_price,
                         order.stop_price if order.stop_price is not None else intent.stop_price, order.avg_price,
                         order.fees, str(order.status), order.reason, order.venue_order_id, intent.parent_id, mode,
                         self.session.venue.name, intent.ts_ns, max(order.last_ts_ns, intent.ts_ns)))
        return _with_time(pd.DataFrame(rows, columns=list(ORDER_COLUMNS)), "orders")

    def equity(self) -> pd.DataFrame:
        """Equity, cash and P&L once a minute of session time and now (float64)."""
        frame = pd.DataFrame(self.session.equity_frame())
        return _with_time(frame[list(EQUITY_COLUMNS)], "equity")

    # -- controls ---------------------------------------------------------------------------------
    def _require_running(self, what: str) -> None:
        if not self.can_control:
            raise ControlError(f"{what}: the session is {self.session.state}; controls act on a running or paused "
                               "session")

    def pause(self) -> None:
        """Hold the feed (working orders stay working)."""
        self._require_running("pause")
        self.session.pause()

    def resume(self) -> None:
        """Release the feed and lift a halt or reduce-only (the kill switch back to normal)."""
        self._require_running("resume")
        self.session.resume()
        if str(self.session.kill_switch.mode) != "normal":
            self.session.resume_trading("resumed from the monitor")

    def halt(self, reason: str = "halted from the monitor") -> None:
        """Kill switch: no new orders (working orders stay)."""
        self._require_running("halt")
        self.session.halt(_reason(reason, "halt"))

    def flatten(self, reason: str = "flattened from the monitor") -> list[Any]:
        """Kill switch: cancel every working order, then close every position; returns the orders it asked."""
        self._require_running("flatten")
        return self.session.flatten(_reason(reason, "flatten"))


def _reason(reason: str, what: str) -> str:
    if not isinstance(reason, str) or not reason.strip():
        raise ControlError(f"{what} needs a reason (a few words for the journal and the alert), got {reason!r}")
    return reason.strip()


# -- a closed store ------------------------------------------------------------------------------
class StoreSource(_StoreReads):
    """A monitor of a store no session of this process runs on: read-only, opened per read and closed again.

    When another process holds the file for writing, reads return empty frames and
    :meth:`status` says who holds it (``held_by``) and where its dashboard is
    (``dashboard_url``, when that process serves one); :attr:`holder` keeps the holder of
    the last read. A writer in this process (a notebook's store or session) shares its
    connection: the data is read, and ``held_by`` names it too. Controls raise
    :class:`~tradebook.errors.ControlError` naming where they would work.
    """

    kind = "store"

    def __init__(self, path: str | Path | None = None) -> None:
        self.store_path = Path(path) if path is not None else default_store_path()
        if not self.store_path.exists():
            raise StoreError(f"no store at {self.store_path}; a session or `tradebook demo` creates one")
        self.holder: Holder | None = None
        self._held_message: str | None = None
        # the store open inside reading(), per thread: a dashboard page and an /api/ request refresh at once,
        # and one must never read through (or close) the other's open
        self._local = threading.local()

    @contextmanager
    def reading(self) -> Iterator[StoreSource]:
        """Several reads on one read-only open of the file (a dashboard refresh), closed at the end."""
        if getattr(self._local, "open", None) is not None:
            yield self
            return
        store = self._open_store()
        self._local.open = store
        try:
            yield self
        finally:
            self._local.open = None
            if store is not None:
                store.close()

    def _open_store(self) -> Store | None:
        try:
            store = Store(self.store_path, read_only=True)
        except StoreLockedError as exc:
            self.holder = read_holder(self.store_path)
            self._held_message = str(exc)
            return None
        # a writer in this process (a session, a notebook's store) shares its connection: readable, but it is
        # that writer's data as of now, and its controls are there
        here = read_holder(self.store_path)
        self.holder = here if here is not None and here.pid == os.getpid() else None
        self._held_message = None
        return store

    @contextmanager
    def _connection(self) -> Iterator[Any | None]:
        store = getattr(self._local, "open", None)
        if store is not None:
            yield store.con
            return
        with self.reading():
            store = self._local.open
            yield store.con if store is not None else None

    @property
    def can_control(self) -> bool:
        return False

    @property
    def held_by(self) -> str | None:
        """Who held the file for writing at the last read (another process, or a writer in this one), else None."""
        if self.holder is not None:
            return self.holder.describe()
        return self._held_message

    def status(self) -> dict[str, Any]:
        """What the store says: counts, realised P&L, the latest order's mode and account; or who holds it."""
        status: dict[str, Any] = {
            "state": "stopped", "mode": None, "venue": None, "account": None, "kill_switch": None,
            "orders": None, "working_orders": None, "fills": None, "alerts": None, "realised_pnl": None,
            "unrealised_pnl": None, "equity": None, "last_event_ns": None, "can_control": False,
            "source": self.kind, "store_path": str(self.store_path),
        }
        with self._connection() as con:
            if con is not None:
                status.update(self._store_counts(con))
                latest = con.execute(_SQL["latest_order"]).fetchone()
                if latest is not None:
                    status.update(mode=latest[0], venue=latest[1], account=latest[2])
        if self.held_by is not None:
            status["state"] = "held"
        status.update(held_by=self.held_by, dashboard_url=self.holder.dashboard_url if self.holder else None,
                      updated_ns=now_ns())
        return status

    def positions(self) -> pd.DataFrame:
        """Stored positions (unmarked: a closed store has no live quote, so mark and unrealised P&L are empty)."""
        return self._read("positions", _SQL["positions"], [], POSITION_COLUMNS)

    def working_orders(self) -> pd.DataFrame:
        """Orders the store holds as not final (as the session that wrote them last left them), oldest first."""
        return self._read("orders", _SQL["working_orders"], [], ORDER_COLUMNS)

    def equity(self) -> pd.DataFrame:
        """Empty: the equity curve lives in a running session, the store keeps none."""
        return _empty(EQUITY_COLUMNS, "equity")

    def _refuse(self, what: str) -> ControlError:
        if self.holder is not None:
            where = (f"at its dashboard {self.holder.dashboard_url}" if self.holder.dashboard_url
                     else "here, through the session (session.controls(), session.dashboard())"
                     if self.holder.pid == os.getpid() else f"in that process (PID {self.holder.pid})")
            return ControlError(f"{what}: this monitor reads {self.store_path} read-only; the session that holds it "
                                f"({self.holder.describe()}) is controlled {where}")
        return ControlError(f"{what}: this monitor reads {self.store_path} read-only and no session runs on it; "
                            "controls act on a running session (session.controls() or session.dashboard())")

    def pause(self) -> None:
        raise self._refuse("pause")

    def resume(self) -> None:
        raise self._refuse("resume")

    def halt(self, reason: str = "halted from the monitor") -> None:
        raise self._refuse("halt")

    def flatten(self, reason: str = "flattened from the monitor") -> list[Any]:
        raise self._refuse("flatten")


def open_source(session_or_path: Any = None) -> MonitorSource:
    """The source for a session (:class:`SessionSource`) or a store path or Store (:class:`StoreSource`).

    None: the workspace store (:func:`tradebook.store.store.default_store_path`).
    """
    if session_or_path is None or isinstance(session_or_path, (str, Path)):
        return StoreSource(session_or_path)
    if isinstance(session_or_path, Store):
        return StoreSource(session_or_path.path)
    if isinstance(session_or_path, MonitoredSession):
        return SessionSource(session_or_path)
    raise ConfigError(f"open_source takes a Session, a Store or a store path, got {type(session_or_path).__name__}")


__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "MonitorSource", "SessionSource", "StoreSource", "open_source"]
