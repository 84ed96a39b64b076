"""Read TCA from the store: per-row frames and the aggregates a dashboard refreshes every second.

Each function takes a :class:`~tradebook.store.Store` or a DuckDB connection or cursor (a
dashboard passes a cursor of the session's own connection) and keyword filters:
``account_id``, ``strategy_id``, ``instrument_id``, ``mode``, ``start_ns`` and ``end_ns``
(inclusive, on a fill's ``ts_event`` or an order's decision time). Pure SQL over the TCA
tables (see :mod:`tradebook.tca.update` for what each number means and its sign); an
empty store gives an empty frame with the same columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb
import pandas as pd

from tradebook.errors import StoreError
from tradebook.store.migrations import schema_columns

_FILTER_COLUMNS = ("account_id", "strategy_id", "instrument_id", "mode")


def run_sql(source: Any, sql: str, params: list[Any] | None = None) -> pd.DataFrame:
    """``sql`` on a Store (through its lock) or a DuckDB connection or cursor, as a DataFrame."""
    if hasattr(source, "query") and hasattr(source, "transaction"):
        return source.query(sql, params or [])
    if not hasattr(source, "execute"):
        raise StoreError(f"TCA reads take a Store or a DuckDB connection or cursor; got {type(source).__name__}")
    try:
        return source.execute(sql, params or []).df()
    except duckdb.Error as exc:  # as Store.query says it: one error type for a failed read
        raise StoreError(f"TCA query failed: {exc}") from exc


def where_clause(filters: dict[str, Any], *, ts_column: str, alias: str = "") -> tuple[str, list[Any]]:
    """``WHERE ...`` (or '') and its parameters for the common filters; unknown filters are refused."""
    unknown = set(filters) - {*_FILTER_COLUMNS, "start_ns", "end_ns"}
    if unknown:
        raise StoreError(f"unknown TCA filter(s) {sorted(unknown)}; expected any of "
                         f"{[*_FILTER_COLUMNS, 'start_ns', 'end_ns']}")
    prefix = f"{alias}." if alias else ""
    parts, params = [], []
    for column in _FILTER_COLUMNS:
        value = filters.get(column)
        if value is not None:
            parts.append(f"{prefix}{column} = ?")
            params.append(str(value))
    if filters.get("start_ns") is not None:
        parts.append(f"{prefix}{ts_column} >= ?")
        params.append(int(filters["start_ns"]))
    if filters.get("end_ns") is not None:
        parts.append(f"{prefix}{ts_column} <= ?")
        params.append(int(filters["end_ns"]))
    return ("WHERE " + " AND ".join(parts) if parts else ""), params


def _with_time(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    frame.insert(0, "time", pd.to_datetime(frame[column], unit="ns", utc=True))
    return frame


def _limit(limit: int | None) -> str:
    if limit is None:
        return ""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise StoreError(f"limit must be a non-negative int or None, got {limit!r}")
    return f" LIMIT {limit}"


def _select_list(table: str, columns: Sequence[str] | None, time_column: str, casts: Sequence[str]) -> str:
    """The SELECT list: every column, or only ``columns`` (plus the time column): a dashboard reading a few
    columns of thousands of rows should not materialise all of them. Unknown names are refused."""
    cast = {name: f"CAST({name} AS DOUBLE) AS {name}" for name in casts}
    if columns is None:
        return f"* REPLACE ({', '.join(cast.values())})"
    known = schema_columns(table)
    unknown = [c for c in columns if c not in known]
    if unknown or isinstance(columns, str):
        raise StoreError(f"{table} has no column(s) {unknown or [columns]}; expected a list of {sorted(known)}")
    wanted = [time_column, *(c for c in dict.fromkeys(columns) if c != time_column)]
    return ", ".join(cast.get(c, c) for c in wanted)


def tca_fills(source: Any, *, limit: int | None = None, columns: Sequence[str] | None = None,
              **filters: Any) -> pd.DataFrame:
    """``tca_fills`` rows, newest first, quantity as float, with a tz-aware ``time`` (the fill's); ``columns``:
    only these (and ``ts_event``)."""
    where, params = where_clause(filters, ts_column="ts_event")
    select = _select_list("tca_fills", columns, "ts_event", ("quantity",))
    frame = run_sql(source, f"SELECT {select} FROM tca_fills {where} "
                            f"ORDER BY ts_event DESC, fill_id{_limit(limit)}", params)
    return _with_time(frame, "ts_event")


def tca_orders(source: Any, *, level: str | None = None, limit: int | None = None,
               columns: Sequence[str] | None = None, **filters: Any) -> pd.DataFrame:
    """``tca_orders`` rows (``level`` 'order' or 'parent', default both), newest decision first, with ``time``;
    ``columns``: only these (and ``decision_ts_ns``)."""
    where, params = where_clause(filters, ts_column="decision_ts_ns")
    if level is not None:
        if level not in ("order", "parent"):
            raise StoreError(f"level must be 'order', 'parent' or None, got {level!r}")
        where = f"{where} AND level = ?" if where else "WHERE level = ?"
        params.append(level)
    select = _select_list("tca_orders", columns, "decision_ts_ns", ("ordered_quantity", "filled_quantity"))
    frame = run_sql(source, f"SELECT {select} FROM tca_orders "
                            f"{where} ORDER BY decision_ts_ns DESC NULLS LAST, order_id{_limit(limit)}", params)
    return _with_time(frame, "decision_ts_ns")


def cost_by_instrument(source: Any, *, window: int = 50, **filters: Any) -> pd.DataFrame:
    """Per instrument: fills, orders, notional, fees, realised and predicted costs, markouts (see the contract).

    ``realised_cost_bps`` is notional-weighted, the ``*_mean`` and the others plain means per
    fill; ``rolling_cost_bps`` the mean realised cost of the instrument's last ``window``
    fills; ``cost_vs_model`` the mean realised over the mean predicted cost (NaN when the
    prediction is not positive). ``orders`` (distinct orders filled) is approximate
    (HyperLogLog, within a few percent): an exact count costs several times the rest.
    """
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise StoreError(f"window must be a positive int (fills), got {window!r}")
    where, params = where_clause(filters, ts_column="ts_event")
    sql = f"""
    WITH f AS (SELECT *, CAST(quantity AS DOUBLE) * price AS notional FROM tca_fills {where})
    SELECT instrument_id, count(*) AS fills, approx_count_distinct(client_order_id) AS orders,
           sum(notional) AS notional, sum(fee_bps * CAST(quantity AS DOUBLE) * decision_price / 1e4) AS fees,
           sum(realised_cost_bps * notional) / sum(notional) FILTER (WHERE realised_cost_bps IS NOT NULL)
               AS realised_cost_bps,
           avg(realised_cost_bps) AS realised_cost_bps_mean, avg(predicted_cost_bps) AS predicted_cost_bps,
           CASE WHEN avg(predicted_cost_bps) > 0 THEN avg(realised_cost_bps) / avg(predicted_cost_bps) END
               AS cost_vs_model,
           avg(shortfall_bps) AS shortfall_bps, avg(arrival_slippage_bps) AS arrival_slippage_bps,
           avg(markout_1s_bps) AS markout_1s_bps, avg(markout_10s_bps) AS markout_10s_bps,
           avg(markout_60s_bps) AS markout_60s_bps,
           quantile_cont(realised_cost_bps, 0.95) AS realised_cost_bps_p95,
           list_avg(max_by(realised_cost_bps, ts_event, {int(window)})) AS rolling_cost_bps,
           min(ts_event) AS first_ns, max(ts_event) AS last_ns
    FROM f GROUP BY instrument_id ORDER BY instrument_id
    """
    return run_sql(source, sql, params)


def cost_by_time_of_day(source: Any, *, bucket_minutes: int = 30, **filters: Any) -> pd.DataFrame:
    """Per UTC time-of-day bucket with fills: bucket (minute of day at its start), label 'HH:MM', costs."""
    if isinstance(bucket_minutes, bool) or not isinstance(bucket_minutes, int) or not 1 <= bucket_minutes <= 1440:
        raise StoreError(f"bucket_minutes must be an int from 1 to 1440, got {bucket_minutes!r}")
    where, params = where_clause(filters, ts_column="ts_event")
    step = bucket_minutes * 60_000_000_000
    sql = f"""
    WITH f AS (SELECT *, CAST(quantity AS DOUBLE) * price AS notional,
                      CAST((ts_event % 86400000000000) // {step} * {bucket_minutes} AS INTEGER) AS bucket
               FROM tca_fills {where})
    SELECT bucket, lpad(CAST(bucket // 60 AS VARCHAR), 2, '0') || ':' || lpad(CAST(bucket % 60 AS VARCHAR), 2, '0')
               AS label,
           count(*) AS fills, sum(notional) AS notional,
           sum(realised_cost_bps * notional) / sum(notional) FILTER (WHERE realised_cost_bps IS NOT NULL)
               AS realised_cost_bps,
           avg(realised_cost_bps) AS realised_cost_bps_mean, avg(predicted_cost_bps) AS predicted_cost_bps,
           avg(shortfall_bps) AS shortfall_bps, avg(markout_60s_bps) AS markout_60s_bps
    FROM f GROUP BY bucket ORDER BY bucket
    """
    return run_sql(source, sql, params)


def modelled_vs_realised(source: Any, *, limit: int | None = None, **filters: Any) -> pd.DataFrame:
    """One row per fill with a prediction, newest first: predicted and realised cost and their difference."""
    where, params = where_clause(filters, ts_column="ts_event")
    where = f"{where} AND predicted_cost_bps IS NOT NULL" if where else "WHERE predicted_cost_bps IS NOT NULL"
    frame = run_sql(source, "SELECT fill_id, ts_event, instrument_id, strategy_id, calibration_id, "
                            "CAST(quantity AS DOUBLE) AS quantity, predicted_cost_bps, realised_cost_bps, "
                            "realised_cost_bps - predicted_cost_bps AS error_bps "
                            f"FROM tca_fills {where} ORDER BY ts_event DESC, fill_id{_limit(limit)}", params)
    return _with_time(frame, "ts_event")


def markouts(source: Any, **filters: Any) -> pd.DataFrame:
    """Per instrument and horizon (1, 10, 60 s): fills with a markout, mean and median bps, share adverse (< 0)."""
    where, params = where_clause(filters, ts_column="ts_event")
    per_horizon = ", ".join(
        f"count(markout_{h}s_bps) AS n{h}, avg(markout_{h}s_bps) AS mean{h}, median(markout_{h}s_bps) AS median{h}, "
        f"avg(CASE WHEN markout_{h}s_bps < 0 THEN 1.0 WHEN markout_{h}s_bps IS NOT NULL THEN 0.0 END) AS adverse{h}"
        for h in (1, 10, 60))
    unpivot = " UNION ALL ".join(
        f"SELECT instrument_id, {h} AS horizon_s, n{h} AS fills, mean{h} AS mean_bps, median{h} AS median_bps, "
        f"adverse{h} AS adverse_share FROM g" for h in (1, 10, 60))
    sql = (f"WITH g AS (SELECT instrument_id, {per_horizon} FROM tca_fills {where} GROUP BY instrument_id) "
           f"SELECT * FROM ({unpivot}) ORDER BY instrument_id, horizon_s")
    return run_sql(source, sql, params)


_STAGES = ("signal_to_submit", "submit_to_ack", "ack_to_first_fill", "first_to_last_fill")


def latency(source: Any, **filters: Any) -> pd.DataFrame:
    """Per stage (signal_to_submit, submit_to_ack, ack_to_first_fill, first_to_last_fill) of orders: ms stats."""
    where, params = where_clause(filters, ts_column="decision_ts_ns")
    where = f"{where} AND level = 'order'" if where else "WHERE level = 'order'"
    per_stage = ", ".join(
        f"count({stage}_ms) AS n{i}, avg({stage}_ms) AS mean{i}, quantile_cont({stage}_ms, [0.5, 0.95]) AS q{i}, "
        f"max({stage}_ms) AS max{i}" for i, stage in enumerate(_STAGES))
    unpivot = " UNION ALL ".join(
        f"SELECT {i} AS n, '{stage}' AS stage, n{i} AS orders, mean{i} AS mean_ms, q{i}[1] AS p50_ms, "
        f"q{i}[2] AS p95_ms, max{i} AS max_ms FROM g" for i, stage in enumerate(_STAGES))
    sql = (f"WITH g AS (SELECT {per_stage} FROM tca_orders {where}) "
           f"SELECT stage, orders, mean_ms, p50_ms, p95_ms, max_ms FROM ({unpivot}) ORDER BY n")
    return run_sql(source, sql, params)


def strategy_attribution(source: Any, **filters: Any) -> pd.DataFrame:
    """Per strategy and signal type: orders, fills, notional, fees, P&L to the latest mid, win rate, shortfall.

    Read from the orders (level 'order'; filters on their decision time); ``fills`` counts the
    fills of that strategy and type (filters on the fill's time).
    An order's P&L is s x (mark - avg fill price) x filled x multiplier - fees, its
    instrument marked at the mid in force at its latest fill in ``tca_fills`` (the fill price
    where no mid is stored): over a strategy it sums to the realised plus unrealised P&L of
    its fills at that mark (linear in the mark, so it needs no pass over each fill).
    ``win_rate`` is the share of filled orders whose P&L is positive; ``shortfall_cost`` the
    orders' implementation shortfall in money (opportunity cost included: the paper
    notional Q x D x shortfall), ``shortfall_bps`` its mean weighted by that paper notional;
    fees are read back from ``fee_bps`` (0 where an order has no decision price).
    """
    where, params = where_clause(filters, ts_column="decision_ts_ns", alias="o")
    level = f"{where} AND o.level = 'order'" if where else "WHERE o.level = 'order'"
    fill_where, fill_params = where_clause(filters, ts_column="ts_event")
    sql = f"""
    WITH mark AS (SELECT instrument_id, arg_max(COALESCE(mid_at_fill, price), ts_event) AS mark
                  FROM tca_fills GROUP BY instrument_id),
    counted AS (SELECT strategy_id, signal_type, count(*) AS fills FROM tca_fills {fill_where}
                GROUP BY strategy_id, signal_type),
    o AS (
        SELECT o.strategy_id, o.signal_type, o.filled_quantity > 0 AS filled,
               CAST(o.filled_quantity AS DOUBLE) * COALESCE(CAST(i.multiplier AS DOUBLE), 1.0) AS units,
               CASE o.side WHEN 'buy' THEN 1.0 ELSE -1.0 END AS s, o.avg_fill_price, m.mark,
               COALESCE(o.fee_bps * CAST(o.ordered_quantity AS DOUBLE) * o.decision_price
                        * COALESCE(CAST(i.multiplier AS DOUBLE), 1.0) / 1e4, 0.0) AS fees,
               CAST(o.ordered_quantity AS DOUBLE) * o.decision_price * COALESCE(CAST(i.multiplier AS DOUBLE), 1.0)
                   AS paper_notional,
               o.shortfall_bps
        FROM tca_orders o LEFT JOIN instruments i ON i.instrument_id = o.instrument_id
        LEFT JOIN mark m ON m.instrument_id = o.instrument_id {level}
    ), p AS (
        SELECT *, CASE WHEN filled THEN s * (mark - avg_fill_price) * units - fees ELSE 0.0 END AS pnl FROM o
    ), per_type AS (
        SELECT strategy_id, signal_type, count(*) AS orders,
               sum(CASE WHEN filled THEN avg_fill_price * units ELSE 0.0 END) AS notional, sum(fees) AS fees,
               sum(pnl) AS pnl, avg(CASE WHEN pnl > 0 THEN 1.0 ELSE 0.0 END) FILTER (WHERE filled) AS win_rate,
               sum(shortfall_bps * paper_notional / 1e4) AS shortfall_cost,
               sum(shortfall_bps * paper_notional) / sum(paper_notional) FILTER (WHERE shortfall_bps IS NOT NULL)
                   AS shortfall_bps
        FROM p GROUP BY strategy_id, signal_type
    )
    SELECT t.strategy_id, t.signal_type, t.orders, CAST(COALESCE(c.fills, 0) AS BIGINT) AS fills, t.notional, t.fees,
           t.pnl, t.win_rate, t.shortfall_cost, t.shortfall_bps
    FROM per_type t LEFT JOIN counted c ON c.strategy_id = t.strategy_id AND c.signal_type = t.signal_type
    ORDER BY t.strategy_id, t.signal_type
    """
    return run_sql(source, sql, fill_params + params)


__all__ = ["cost_by_instrument", "cost_by_time_of_day", "latency", "markouts", "modelled_vs_realised",
           "run_sql", "strategy_attribution", "tca_fills", "tca_orders", "where_clause"]
