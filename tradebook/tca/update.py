"""Transaction cost analysis written to the store: ``tca_fills`` per fill, ``tca_orders`` per order and algo parent.

Conventions (one set, used by every number here). s = +1 for a buy, -1 for a sell; every
cost in bps is signed so that positive is a cost to us, and the parts of the
implementation shortfall are in bps of the **decision price** D.

- **Decision price D**: the mid of the reference quote the session priced the order
  against, noted when it decided (``tca_decisions``, :class:`~tradebook.tca.TcaRecorder`);
  where no note exists, the mid in force at the order's creation (``orders.ts_init``) from
  the stored quotes. An algo parent's is the mid when the router planned its slices; an
  algo slice's own, the mid at its release.
- **Mid in force at t**: the mid of the last stored quote stamped at or before t (a quote
  at the same instant as t counts as known) and at most :data:`MAX_QUOTE_AGE_S` older
  (else none: NULL); its touch is its ask for a buy, its bid for a sell.
- **Arrival mid A**: the mid in force when the order was submitted (its first
  ``submitted`` event; a parent's first child's).
- **Per fill** (price P, quantity q, fee f, mid M and touch T in force at the fill):
  delay = s(A - D)/D, spread = s(T - M)/D, execution = s(P - T + M - A)/D (touch to fill,
  plus the market's move between arrival and the fill), fee = f/(q D mult);
  shortfall = s(P - D)/D + fee = delay + spread + execution + fee. All x 1e4.
  ``realised_cost_bps`` = s(P - M)/M (what the fill paid against the mid in force, fees
  apart: :func:`tradebook.tca.mids.cost_against_mid`'s rule) next to
  ``predicted_cost_bps``, the fill model's prediction for a marketable order of q at M (at D
  where no quote is stored: a live session's)
  (:meth:`tradebook.research.costs.CostModel.predict_bps`, pooled volatility regimes) with
  the calibration it came from. ``arrival_slippage_bps`` = s(P - A)/A.
- **Markouts** are the exception to the sign rule, as is usual: s(mid at t+h - P)/P x 1e4
  for h = 1 s, 10 s, 60 s, so negative is adverse selection (the market moved against the
  fill). NULL where t+h is past the last stored quote of the instrument.
- **Per order** (Perold, ordered quantity Q, filled F): each part is the quantity-weighted
  sum of its fills' parts over Q (so F/Q weights the filled part), fee = sum f/(Q D mult),
  opportunity = s(E - D)/D x (Q - F)/Q with E the mid in force at the order's end (its last
  event once done; NULL while it works and is not filled), shortfall = delay + spread +
  execution + fee + opportunity. A parent's parts use its own D and A over its children's
  fills and its whole quantity (its own noted quantity, else the sum of its released
  slices). Slippage against the limit, the arrival mid and the market VWAP (stored
  ``trades`` from submission to the end, or to the last fill) are s(avg fill - ref)/ref;
  participation is F over the market volume of that window; fill rate F/Q; latency in ms
  between signal (the signal's time; an algo slice's release), submit, acknowledgement
  (first ``accepted``), first and last fill.
  Orders refused before they left (never submitted, nothing filled) have no row.

:func:`update_tca` is incremental and idempotent: it (re)computes new fills and orders,
orders whose status or filled quantity changed, and rows with a NULL mid (decision,
arrival, fill, markout, end) when quotes of their instrument were loaded after the row was
computed (``datasets.loaded_at_ns`` against ``computed_at_ns``, both wall time).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tradebook.model.time import now_ns as wall_now_ns
from tradebook.tca.recorder import DecisionNote, TcaRecorder

log = logging.getLogger(__name__)

MARKOUT_HORIZONS_S = (1, 10, 60)
MAX_QUOTE_AGE_S = 3600  # an older quote is no mid "in force" (a live session's fills beside last year's capture)
_NS = 1_000_000_000
_TERMINAL = "('filled', 'cancelled', 'rejected', 'expired')"


@dataclass(frozen=True)
class TcaUpdate:
    """Rows one :func:`update_tca` wrote or refreshed, and how long it took."""

    fills: int
    orders: int
    parents: int
    seconds: float
    #: instrument_id -> why its new fills have no predicted cost (a calibration that cannot price them)
    unpriced: Mapping[str, str] = field(default_factory=dict)


# The signal type of an order, from its tags' ``why`` (the intent's reason): the router's rule
# or the algo kind, without the numbers and ids that make each order's reason unique.
_SIGNAL_TYPE = """CASE
    WHEN {why} IS NULL OR {why} = '' THEN ''
    WHEN starts_with({why}, 'retry ') THEN 'retry'
    WHEN starts_with({why}, 'protective stop') THEN 'protective stop'
    WHEN {why} LIKE '% slice %' THEN split_part({why}, ' slice ', 1) || ' slice'
    ELSE regexp_replace({why}, ' \\(.*$', '') END"""

# -- step 1: the quotes' coverage per instrument (datasets metadata: no scan of the quotes) ------------
_COVER_SQL = """
CREATE OR REPLACE TEMP TABLE _tca_cover AS
SELECT instrument_id, min(first_ts_ns) AS first_ns, max(last_ts_ns) AS last_ns, max(loaded_at_ns) AS loaded_ns
FROM datasets WHERE kind = 'quotes' GROUP BY instrument_id
"""

# -- step 2: fills to (re)compute ------------------------------------------------------------------------
_FILL_TODO_SQL = f"""
CREATE OR REPLACE TEMP TABLE _tca_fill_todo AS
SELECT f.fill_id FROM fills f
JOIN orders o ON o.client_order_id = f.client_order_id
LEFT JOIN tca_fills t ON t.fill_id = f.fill_id
LEFT JOIN _tca_cover c ON c.instrument_id = f.instrument_id
WHERE t.fill_id IS NULL
   OR (c.loaded_ns > t.computed_at_ns AND (t.markout_60s_bps IS NULL OR t.mid_at_fill IS NULL
                                          OR t.arrival_mid IS NULL OR t.decision_price IS NULL))
"""

_FIRST_EVENT_SQL = """
SELECT e.client_order_id, min(e.ts_event) AS ts FROM order_events e
WHERE e.event_type = '{kind}' AND e.client_order_id IN (SELECT client_order_id FROM {among})
GROUP BY e.client_order_id
"""

_FILL_BASE_SQL = f"""
CREATE OR REPLACE TEMP TABLE _tca_f AS
SELECT f.fill_id, f.client_order_id, o.parent_order_id, f.account_id, f.strategy_id, f.instrument_id, o.mode, o.venue,
       f.side, f.quantity, CAST(f.quantity AS DOUBLE) AS q, CAST(f.price AS DOUBLE) AS price,
       CAST(f.fee AS DOUBLE) AS fee, f.liquidity, f.ts_event,
       CASE f.side WHEN 'buy' THEN 1.0 ELSE -1.0 END AS s,
       COALESCE(d.decision_ts_ns, o.ts_init) AS decision_ts_ns, d.decision_price AS noted_price,
       COALESCE(sub.ts, o.ts_init) AS arrival_ts_ns,
       COALESCE(CAST(i.multiplier AS DOUBLE), 1.0) AS mult,
       {_SIGNAL_TYPE.format(why="json_extract_string(o.tags, '$.why')")} AS signal_type
FROM fills f
JOIN _tca_fill_todo USING (fill_id)
JOIN orders o ON o.client_order_id = f.client_order_id
LEFT JOIN tca_decisions d ON d.order_id = f.client_order_id AND d.level = 'order'
LEFT JOIN ({_FIRST_EVENT_SQL.format(kind='submitted', among='fills JOIN _tca_fill_todo USING (fill_id)')}) sub
       ON sub.client_order_id = f.client_order_id
LEFT JOIN instruments i ON i.instrument_id = f.instrument_id
"""

# One ASOF join for every time a row needs a quote at: (key, what, instrument, t) -> mid, bid, ask in force.
# Only the quotes that can be in force at those times are read (an incremental update reads a few).
_ASOF_SQL = f"""
CREATE OR REPLACE TEMP TABLE {{out}} AS
WITH p AS ({{probes}}),
span AS (SELECT instrument_id, min(t) - {MAX_QUOTE_AGE_S * _NS} AS lo, max(t) AS hi FROM p GROUP BY instrument_id),
q AS (SELECT q.instrument_id, q.ts_ns, q.bid_px, q.ask_px FROM quotes q
      JOIN span ON span.instrument_id = q.instrument_id AND q.ts_ns BETWEEN span.lo AND span.hi)
SELECT p.key, p.what, (q.bid_px + q.ask_px) / 2 AS mid, q.bid_px AS bid, q.ask_px AS ask
FROM p ASOF LEFT JOIN q ON q.instrument_id = p.instrument_id AND p.t >= q.ts_ns
"""

_FILL_PROBES = " UNION ALL ".join(
    [f"SELECT fill_id AS key, '{what}' AS what, instrument_id, {t} AS t FROM _tca_f WHERE {t} IS NOT NULL"
     for what, t in (("d", "decision_ts_ns"), ("a", "arrival_ts_ns"), ("f", "ts_event"))]
    + [f"SELECT fill_id, 'm{h}', instrument_id, ts_event + {h * _NS} FROM _tca_f" for h in MARKOUT_HORIZONS_S])


def _pick(what: str, column: str = "mid") -> str:
    return f"max({column}) FILTER (WHERE what = '{what}')"


_FILL_ROWS_SQL = f"""
CREATE OR REPLACE TEMP TABLE _tca_new_fills AS
WITH m AS (
    SELECT key, {_pick('d')} AS d_mid, {_pick('a')} AS a_mid, {_pick('f')} AS f_mid, {_pick('f', 'bid')} AS f_bid,
           {_pick('f', 'ask')} AS f_ask, {", ".join(f"{_pick(f'm{h}')} AS m{h}" for h in MARKOUT_HORIZONS_S)}
    FROM _tca_fill_quotes GROUP BY key
), x AS (
    SELECT b.*, m.*, COALESCE(b.noted_price, m.d_mid) AS dp,
           CASE WHEN b.s > 0 THEN m.f_ask ELSE m.f_bid END AS touch
    FROM _tca_f b LEFT JOIN m ON m.key = b.fill_id
)
SELECT x.fill_id, x.client_order_id, x.parent_order_id, x.account_id, x.strategy_id, x.instrument_id, x.mode, x.venue,
       x.side, x.quantity, x.price, x.liquidity, x.ts_event, x.decision_ts_ns, x.dp AS decision_price,
       x.arrival_ts_ns, x.a_mid AS arrival_mid, x.f_mid AS mid_at_fill, x.touch AS touch_at_fill,
       x.s * (x.a_mid - x.dp) / x.dp * 1e4 AS delay_bps,
       x.s * (x.touch - x.f_mid) / x.dp * 1e4 AS spread_bps,
       x.s * (x.price - x.touch + x.f_mid - x.a_mid) / x.dp * 1e4 AS execution_bps,
       x.fee / (x.q * x.dp * x.mult) * 1e4 AS fee_bps,
       x.s * (x.price - x.dp) / x.dp * 1e4 + x.fee / (x.q * x.dp * x.mult) * 1e4 AS shortfall_bps,
       x.s * (x.price - x.a_mid) / x.a_mid * 1e4 AS arrival_slippage_bps,
       {", ".join(f"CASE WHEN c.last_ns >= x.ts_event + {h * _NS} THEN x.s * (x.m{h} - x.price) / x.price * 1e4 END "
                  f"AS markout_{h}s_bps" for h in MARKOUT_HORIZONS_S)},
       old.predicted_cost_bps, x.s * (x.price - x.f_mid) / x.f_mid * 1e4 AS realised_cost_bps, old.calibration_id,
       CAST($now AS BIGINT) AS computed_at_ns, x.signal_type
FROM x
LEFT JOIN _tca_cover c ON c.instrument_id = x.instrument_id
LEFT JOIN tca_fills old ON old.fill_id = x.fill_id
"""

# -- step 3: orders and algo parents to (re)compute --------------------------------------------------------
_UNIT_TODO_SQL = f"""
CREATE OR REPLACE TEMP TABLE _tca_unit_todo AS
WITH changed AS (
    SELECT o.client_order_id FROM orders o
    LEFT JOIN tca_orders t ON t.order_id = o.client_order_id AND t.level = 'order'
    LEFT JOIN _tca_cover c ON c.instrument_id = o.instrument_id
    WHERE t.order_id IS NULL OR t.status <> o.status OR t.filled_quantity <> o.filled_quantity
       OR (c.loaded_ns > t.computed_at_ns AND (t.end_mid IS NULL OR t.arrival_mid IS NULL OR t.decision_price IS NULL))
       OR o.client_order_id IN (SELECT client_order_id FROM _tca_f)
)
SELECT client_order_id AS order_id, 'order' AS level FROM changed
UNION ALL
SELECT DISTINCT o.parent_order_id, 'parent' FROM orders o
WHERE o.parent_order_id IS NOT NULL AND (o.client_order_id IN (SELECT client_order_id FROM changed)
      OR o.parent_order_id NOT IN (SELECT order_id FROM tca_orders WHERE level = 'parent'))
"""

_UNITS_SQL = f"""
CREATE OR REPLACE TEMP TABLE _tca_u AS
WITH sub AS ({_FIRST_EVENT_SQL.format(kind='submitted', among='_tca_members')}),
     ack AS ({_FIRST_EVENT_SQL.format(kind='accepted', among='_tca_members')}),
     child AS (
    SELECT o.*, sub.ts AS submit_ts, ack.ts AS ack_ts, o.status IN {_TERMINAL} AS done
    FROM orders o JOIN _tca_members m ON m.client_order_id = o.client_order_id
    LEFT JOIN sub ON sub.client_order_id = o.client_order_id LEFT JOIN ack ON ack.client_order_id = o.client_order_id
)
SELECT c.client_order_id AS order_id, 'order' AS level, c.account_id, c.strategy_id, c.instrument_id, c.mode, c.side,
       c.order_type, c.quantity AS ordered_quantity, c.filled_quantity, CAST(c.limit_price AS DOUBLE) AS limit_price,
       COALESCE(d.signal_ts_ns, d.decision_ts_ns, c.ts_init) AS signal_ts, COALESCE(d.decision_ts_ns, c.ts_init)
       AS decision_ts_ns, d.decision_price AS noted_price, c.submit_ts, c.ack_ts,
       CASE WHEN c.done THEN c.ts_last END AS end_ts_ns, c.status,
       {_SIGNAL_TYPE.format(why="json_extract_string(c.tags, '$.why')")} AS signal_type
FROM child c JOIN _tca_unit_todo u ON u.order_id = c.client_order_id AND u.level = 'order'
LEFT JOIN tca_decisions d ON d.order_id = c.client_order_id AND d.level = 'order'
WHERE c.submit_ts IS NOT NULL OR c.filled_quantity > 0
UNION ALL
SELECT c.parent_order_id, 'parent', any_value(c.account_id), any_value(c.strategy_id), any_value(c.instrument_id),
       any_value(c.mode), any_value(c.side), COALESCE(any_value(d.order_type), 'algo'),
       COALESCE(any_value(d.quantity), sum(c.quantity)), sum(c.filled_quantity), NULL,
       COALESCE(any_value(d.signal_ts_ns), any_value(d.decision_ts_ns), min(c.ts_init)),
       COALESCE(any_value(d.decision_ts_ns), min(c.ts_init)), any_value(d.decision_price), min(c.submit_ts),
       min(c.ack_ts), CASE WHEN bool_and(c.done) THEN max(c.ts_last) END,
       CASE WHEN bool_and(c.done) THEN 'done' ELSE 'working' END,
       COALESCE(any_value(d.order_type), 'algo') || ' parent'
FROM child c JOIN _tca_unit_todo u ON u.order_id = c.parent_order_id AND u.level = 'parent'
LEFT JOIN tca_decisions d ON d.order_id = c.parent_order_id AND d.level = 'parent'
GROUP BY c.parent_order_id
"""

_UNIT_PROBES = " UNION ALL ".join(
    f"SELECT order_id || '|' || level AS key, '{what}' AS what, instrument_id, {t} AS t FROM _tca_u "
    f"WHERE {t} IS NOT NULL"
    for what, t in (("d", "decision_ts_ns"), ("a", "COALESCE(submit_ts, decision_ts_ns)"), ("e", "end_ts_ns")))

_ORDER_ROWS_SQL = f"""
CREATE OR REPLACE TEMP TABLE _tca_new_orders AS
WITH m AS (
    SELECT key, {_pick('d')} AS d_mid, {_pick('a')} AS a_mid, {_pick('e')} AS e_mid FROM _tca_unit_quotes GROUP BY key
), member_fills AS (
    SELECT u.order_id, u.level, t.fill_id, t.quantity, t.price, t.touch_at_fill, t.mid_at_fill, t.ts_event
    FROM _tca_u u JOIN tca_fills t ON t.client_order_id = u.order_id WHERE u.level = 'order'
    UNION ALL
    SELECT u.order_id, u.level, t.fill_id, t.quantity, t.price, t.touch_at_fill, t.mid_at_fill, t.ts_event
    FROM _tca_u u JOIN tca_fills t ON t.parent_order_id = u.order_id WHERE u.level = 'parent'
), agg AS (
    SELECT f.order_id, f.level, sum(CAST(f.quantity AS DOUBLE)) AS fq,
           sum(CAST(f.quantity AS DOUBLE) * f.price) AS qp,
           sum(CAST(f.quantity AS DOUBLE) * (f.touch_at_fill - f.mid_at_fill)) AS q_spread,
           count(*) - count(f.touch_at_fill - f.mid_at_fill) AS unquoted,
           sum(CAST(x.fee AS DOUBLE)) AS fees, min(f.ts_event) AS first_fill, max(f.ts_event) AS last_fill
    FROM member_fills f JOIN fills x ON x.fill_id = f.fill_id
    GROUP BY f.order_id, f.level
), u AS (
    SELECT u.*, m.a_mid, m.e_mid, COALESCE(u.noted_price, m.d_mid) AS dp,
           CASE u.side WHEN 'buy' THEN 1.0 ELSE -1.0 END AS s, CAST(u.ordered_quantity AS DOUBLE) AS qo,
           COALESCE(a.fq, 0.0) AS fq, a.qp, COALESCE(a.q_spread, 0.0) AS q_spread, COALESCE(a.unquoted, 0) AS unquoted,
           COALESCE(a.fees, 0.0) AS fees, a.first_fill, a.last_fill, a.qp / a.fq AS avg_px,
           COALESCE(CAST(i.multiplier AS DOUBLE), 1.0) AS mult,
           COALESCE(u.submit_ts, u.decision_ts_ns) AS window_start, COALESCE(u.end_ts_ns, a.last_fill) AS window_end
    FROM _tca_u u LEFT JOIN m ON m.key = u.order_id || '|' || u.level
    LEFT JOIN agg a ON a.order_id = u.order_id AND a.level = u.level
    LEFT JOIN instruments i ON i.instrument_id = u.instrument_id
), bounds AS (
    SELECT instrument_id, min(window_start) AS lo, max(window_end) AS hi FROM u WHERE window_end IS NOT NULL
    GROUP BY instrument_id
), traded AS (  -- market value and volume traded up to each instant (from the earliest window on)
    SELECT instrument_id, ts_ns, sum(pv) OVER w AS cpv, sum(v) OVER w AS cv FROM (
        SELECT t.instrument_id, t.ts_ns, sum(t.price * t.size) AS pv, sum(t.size) AS v
        FROM trades t JOIN bounds b ON b.instrument_id = t.instrument_id AND t.ts_ns BETWEEN b.lo AND b.hi
        GROUP BY t.instrument_id, t.ts_ns)
    WINDOW w AS (PARTITION BY instrument_id ORDER BY ts_ns ROWS UNBOUNDED PRECEDING)
), mkt AS (  -- over [window_start, window_end]: what had traded by its end minus what had before its start
    SELECT e.order_id, e.level, e.cv - COALESCE(b.cv, 0.0) AS volume,
           (e.cpv - COALESCE(b.cpv, 0.0)) / nullif(e.cv - COALESCE(b.cv, 0.0), 0) AS vwap
    FROM (SELECT u.order_id, u.level, u.instrument_id, u.window_start, t.cv, t.cpv FROM u
          ASOF JOIN traded t ON t.instrument_id = u.instrument_id AND u.window_end >= t.ts_ns) e
    ASOF LEFT JOIN traded b ON b.instrument_id = e.instrument_id AND e.window_start > b.ts_ns
), v AS (
    SELECT u.*, mkt.vwap, mkt.volume,
           CASE WHEN u.fq >= u.qo THEN 0.0 WHEN u.end_ts_ns IS NULL THEN NULL
                ELSE u.s * (u.e_mid - u.dp) / u.dp * (u.qo - u.fq) / u.qo * 1e4 END AS opportunity_bps,
           u.fees / (u.qo * u.dp * u.mult) * 1e4 AS fee_bps
    FROM u LEFT JOIN mkt ON mkt.order_id = u.order_id AND mkt.level = u.level
)
SELECT order_id, level, account_id, strategy_id, instrument_id, mode, side, order_type, ordered_quantity,
       filled_quantity, fq / qo AS fill_rate, avg_px AS avg_fill_price, limit_price, decision_ts_ns,
       dp AS decision_price, a_mid AS arrival_mid, end_ts_ns, e_mid AS end_mid,
       s * (a_mid - dp) / dp * fq / qo * 1e4 AS delay_bps,
       CASE WHEN unquoted = 0 THEN s * q_spread / (dp * qo) * 1e4 END AS spread_bps,
       CASE WHEN unquoted = 0 THEN s * (COALESCE(qp, 0.0) - q_spread - a_mid * fq) / (dp * qo) * 1e4 END
           AS execution_bps,
       fee_bps, opportunity_bps,
       s * (COALESCE(qp, 0.0) - dp * fq) / (dp * qo) * 1e4 + fee_bps + opportunity_bps AS shortfall_bps,
       s * (avg_px - limit_price) / limit_price * 1e4 AS limit_slippage_bps,
       s * (avg_px - a_mid) / a_mid * 1e4 AS arrival_slippage_bps,
       vwap AS market_vwap, s * (avg_px - vwap) / vwap * 1e4 AS vwap_slippage_bps, volume AS market_volume,
       fq / nullif(volume, 0) AS participation,
       (submit_ts - signal_ts) / 1e6 AS signal_to_submit_ms, (ack_ts - submit_ts) / 1e6 AS submit_to_ack_ms,
       (first_fill - ack_ts) / 1e6 AS ack_to_first_fill_ms, (last_fill - first_fill) / 1e6 AS first_to_last_fill_ms,
       status, CAST($now AS BIGINT) AS computed_at_ns, signal_type
FROM v
"""

_TCA_FILLS_COLUMNS = (
    "fill_id, client_order_id, parent_order_id, account_id, strategy_id, instrument_id, mode, venue, side, quantity, "
    "price, liquidity, ts_event, decision_ts_ns, decision_price, arrival_ts_ns, arrival_mid, mid_at_fill, "
    "touch_at_fill, delay_bps, spread_bps, execution_bps, fee_bps, shortfall_bps, arrival_slippage_bps, "
    "markout_1s_bps, markout_10s_bps, markout_60s_bps, predicted_cost_bps, realised_cost_bps, calibration_id, "
    "computed_at_ns, signal_type")
_TEMP_TABLES = ("_tca_cover", "_tca_fill_todo", "_tca_f", "_tca_fill_quotes", "_tca_new_fills", "_tca_unit_todo",
                "_tca_members", "_tca_u", "_tca_unit_quotes", "_tca_new_orders")


def update_tca(store: Any, *, now_ns: int | None = None, recorder: TcaRecorder | None = None,
               calibrations: Mapping[str, str] | None = None) -> TcaUpdate:
    """Write or refresh the TCA rows the store's fills and orders call for (see the module docstring).

    ``store``: a :class:`~tradebook.store.Store` this process may write. ``recorder``: the
    session's decision notes, written first (kept for the next update if this one fails).
    ``calibrations``: instrument_id -> the calibration the fills were simulated with (a
    session's own); an instrument not named is predicted with its latest stored
    calibration, and without one its fills have no prediction. ``now_ns``: the
    ``computed_at_ns`` stamped on the rows, wall time (default: now); it is compared with
    when quotes were loaded, so never pass session or market time.
    """
    started = time.perf_counter()
    stamp = int(now_ns) if now_ns is not None else wall_now_ns()
    notes = recorder.drain() if recorder is not None else []
    try:
        with store.cursor_transaction() as con:  # its own results: see Store.cursor_transaction
            _write_decisions(con, notes)
            con.execute(_COVER_SQL)
            con.execute(_FILL_TODO_SQL)
            con.execute(_FILL_BASE_SQL)
            con.execute(_ASOF_SQL.format(out="_tca_fill_quotes", probes=_FILL_PROBES))
            con.execute(_FILL_ROWS_SQL, {"now": stamp})
            unpriced = _predict(store, con, calibrations or {})
            fills = con.execute("SELECT count(*) FROM _tca_new_fills").fetchall()[0][0]
            con.execute(f"INSERT OR REPLACE INTO tca_fills ({_TCA_FILLS_COLUMNS}) "
                        f"SELECT {_TCA_FILLS_COLUMNS} FROM _tca_new_fills")
            con.execute(_UNIT_TODO_SQL)
            con.execute("CREATE OR REPLACE TEMP TABLE _tca_members AS SELECT o.client_order_id FROM orders o "
                        "JOIN _tca_unit_todo u ON (u.level = 'order' AND u.order_id = o.client_order_id) "
                        "UNION SELECT o.client_order_id FROM orders o JOIN _tca_unit_todo u "
                        "ON (u.level = 'parent' AND u.order_id = o.parent_order_id)")
            con.execute(_UNITS_SQL)
            con.execute(_ASOF_SQL.format(out="_tca_unit_quotes", probes=_UNIT_PROBES))
            con.execute(_ORDER_ROWS_SQL, {"now": stamp})
            orders, parents = con.execute(
                "SELECT count(*) FILTER (WHERE level = 'order'), count(*) FILTER (WHERE level = 'parent') "
                "FROM _tca_new_orders").fetchall()[0]
            con.execute("INSERT OR REPLACE INTO tca_orders BY NAME SELECT * FROM _tca_new_orders")
            for table in _TEMP_TABLES:
                con.execute(f"DROP TABLE IF EXISTS {table}")
    except BaseException:
        if recorder is not None:
            recorder.restore(notes)
        raise
    return TcaUpdate(int(fills), int(orders), int(parents), time.perf_counter() - started, unpriced)


def _write_decisions(con: Any, notes: list[DecisionNote]) -> None:
    """The recorder's notes into ``tca_decisions``; a note for an order already noted is ignored (the first wins)."""
    if not notes:
        return
    frame = pd.DataFrame({
        "order_id": [n.order_id for n in notes], "level": [n.level for n in notes],
        "account_id": [n.account_id for n in notes], "strategy_id": [n.strategy_id for n in notes],
        "instrument_id": [n.instrument_id for n in notes], "side": [n.side for n in notes],
        "quantity": [str(n.quantity) for n in notes], "order_type": [n.order_type for n in notes],
        "signal_ts_ns": pd.array([n.signal_ts_ns for n in notes], dtype="Int64"),
        "decision_ts_ns": np.array([n.decision_ts_ns for n in notes], dtype="int64"),
        "decision_price": np.array([np.nan if n.decision_price is None else n.decision_price for n in notes]),
    })
    con.register("_tca_notes", frame)
    try:
        con.execute("INSERT INTO tca_decisions SELECT order_id, level, account_id, strategy_id, instrument_id, side, "
                    "CAST(quantity AS DECIMAL(38, 12)), order_type, signal_ts_ns, decision_ts_ns, "
                    "CASE WHEN isnan(decision_price) THEN NULL ELSE decision_price END "
                    "FROM (SELECT DISTINCT ON (order_id, level) * FROM _tca_notes) ON CONFLICT DO NOTHING")
    finally:
        con.unregister("_tca_notes")


def _predict(store: Any, con: Any, calibrations: Mapping[str, str]) -> dict[str, str]:
    """The fill model's predicted cost for new fills (no calibration yet), priced at the mid in force or, where the
    store holds no quotes then (a live session's), at the decision price. Returns instrument_id -> why its fills
    could not be priced (said once by the caller: an update runs every second or so)."""
    todo = con.execute("SELECT fill_id, instrument_id, ts_event, CAST(quantity AS DOUBLE) AS quantity, "
                       "COALESCE(mid_at_fill, decision_price) AS mid FROM _tca_new_fills "
                       "WHERE calibration_id IS NULL AND COALESCE(mid_at_fill, decision_price) IS NOT NULL").df()
    unpriced: dict[str, str] = {}
    if todo.empty:
        return unpriced
    from tradebook.errors import TradebookError

    parts = []
    for instrument_id, group in todo.groupby("instrument_id"):
        name = calibrations.get(str(instrument_id)) or _latest_calibration(con, str(instrument_id))
        if name is None:
            continue
        try:
            predicted, calibration_id = _predicted_bps(store, str(instrument_id), name, group)
        except TradebookError as exc:  # a calibration that cannot price: no prediction
            log.debug("TCA: no predicted cost for %s fills: %s", instrument_id, exc)
            unpriced[str(instrument_id)] = str(exc)
            continue
        parts.append(pd.DataFrame({"fill_id": group["fill_id"].to_numpy(), "predicted": predicted,
                                   "calibration_id": calibration_id}))
    if not parts:
        return unpriced
    con.register("_tca_predicted", pd.concat(parts, ignore_index=True))
    try:
        con.execute("UPDATE _tca_new_fills SET predicted_cost_bps = p.predicted, calibration_id = p.calibration_id "
                    "FROM _tca_predicted p WHERE _tca_new_fills.fill_id = p.fill_id")
    finally:
        con.unregister("_tca_predicted")
    return unpriced


def _predicted_bps(store: Any, instrument_id: str, name: str, fills: pd.DataFrame) -> tuple[np.ndarray, str]:
    """The cost model's prediction for ``fills`` and the calibration that made it.

    A calibration applied to this instrument from another's (a paper replay's, stored with
    ``derived_from`` in its diagnostics) may carry no spread profile of its own; research prices
    the instrument with the model it was derived from, and so does TCA then, naming that one.
    """
    from tradebook.errors import TradebookError
    from tradebook.research.costs import CostModel

    def predict(calibration: str) -> tuple[np.ndarray, str]:
        model = CostModel.from_store(store, {instrument_id: calibration})
        predicted = model.predict_bps(instrument_id, fills["ts_event"].to_numpy("int64"),
                                      fills["quantity"].to_numpy(float), fills["mid"].to_numpy(float))
        return predicted, model.calibrations[instrument_id]

    try:
        return predict(name)
    except TradebookError:
        source = store.calibration(name).diagnostics.get("derived_from")
        if not source or source == name:
            raise
        return predict(str(source))


def _latest_calibration(con: Any, instrument_id: str) -> str | None:
    rows = con.execute("SELECT calibration_id FROM calibrations WHERE instrument_id = ? ORDER BY version DESC LIMIT 1",
                       [instrument_id]).fetchall()  # fetched to the end: a pending result would block register()
    return str(rows[0][0]) if rows else None


__all__ = ["MARKOUT_HORIZONS_S", "TcaUpdate", "update_tca"]
