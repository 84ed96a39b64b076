"""Alerts in the store's ``alerts`` table: one row per open condition, and the read the dashboard uses.

The rules' alerts (source ``'alerts'``) are written here; the order manager's come through
its journal copy (source: the journal's name) and a promotion reversion's from
:mod:`tradebook.promotion.reversion` (source ``'promotion'``). A row's ``repeat_count``
and ``last_ts_ns`` grow while its condition stays open (same ``dedup_key``).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from tradebook.alerts.notice import AlertNotice
from tradebook.errors import StoreError

RECENT_COLUMNS = ["time", "ts_ns", "last_ts_ns", "kind", "severity", "subject", "message", "repeat_count",
                  "dedup_key", "source"]


def insert_alert(store: Any, notice: AlertNotice) -> None:
    """A new row for a condition that just opened."""
    with store.transaction() as con:
        con.execute("INSERT INTO alerts (ts_ns, kind, message, source, severity, dedup_key, subject, repeat_count, "
                    "last_ts_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [notice.ts_ns, notice.kind, notice.message, notice.source.value, notice.severity.value,
                     notice.dedup_key, notice.subject, notice.repeat_count, notice.ts_ns])


def repeat_alert(store: Any, opened_ns: int, notice: AlertNotice) -> None:
    """The open condition's row (opened at ``opened_ns``) says it happened again: count, last time, last words."""
    with store.transaction() as con:
        con.execute("UPDATE alerts SET repeat_count = ?, last_ts_ns = ?, message = ?, severity = ? "
                    "WHERE source = ? AND dedup_key = ? AND ts_ns = ?",
                    [notice.repeat_count, notice.ts_ns, notice.message, notice.severity.value, notice.source.value,
                     notice.dedup_key, opened_ns])


def rows_after(store: Any, source: str, after_rowid: int) -> pd.DataFrame:
    """Rows of ``source`` stored after row ``after_rowid`` (DuckDB's rowid), oldest first, with their rowid."""
    return store.query("SELECT rowid AS row_id, ts_ns, kind, message FROM alerts WHERE source = ? AND rowid > ? "
                       "ORDER BY rowid", [source, after_rowid])


def last_rowid(store: Any) -> int:
    frame = store.query("SELECT coalesce(max(rowid), -1) AS r FROM alerts")
    return int(frame["r"].iloc[0])


def recent_alerts(store_or_con: Any, limit: int = 200, *, severity: str | None = None, kind: str | None = None,
                  since_ns: int | None = None) -> pd.DataFrame:
    """The newest alerts first (by their last occurrence): every source, with a tz-aware ``time``.

    ``store_or_con``: a :class:`~tradebook.store.Store` or a DuckDB connection or cursor (a
    dashboard passes a cursor of the session's connection). Filters: ``severity``
    (info, warning, critical), ``kind``, ``since_ns`` (last fired at or after, int64 UTC ns).
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise StoreError(f"recent_alerts: limit must be an int >= 1, got {limit!r}")
    parts, params = [], []
    for column, value in (("severity", severity), ("kind", kind)):
        if value is not None:
            parts.append(f"{column} = ?")
            params.append(str(value))
    if since_ns is not None:
        parts.append("coalesce(last_ts_ns, ts_ns) >= ?")
        params.append(int(since_ns))
    where = f"WHERE {' AND '.join(parts)} " if parts else ""
    sql = ("SELECT ts_ns, coalesce(last_ts_ns, ts_ns) AS last_ts_ns, kind, severity, subject, message, repeat_count, "
           f"dedup_key, source FROM alerts {where}ORDER BY coalesce(last_ts_ns, ts_ns) DESC, ts_ns DESC LIMIT ?")
    if hasattr(store_or_con, "query") and hasattr(store_or_con, "transaction"):
        frame = store_or_con.query(sql, [*params, limit])  # a Store: through its lock
    else:
        frame = store_or_con.execute(sql, [*params, limit]).df()
    frame.insert(0, "time", pd.to_datetime(frame["last_ts_ns"].astype("int64"), unit="ns", utc=True))
    return frame[RECENT_COLUMNS]
