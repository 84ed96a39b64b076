"""The calibration loop closed: realised costs of our own fills corrected into the fill model's cost curve.

    result = calibrate_from_fills(store, "BTCUSDT.BINANCE", account_id="ma-cross")
    print(format_from_fills([result]))        # error before and after, on the fills used and on held-out ones

What a fill "really" cost depends on where it came from:

- a **paper** fill's price came from the simulator itself, so its own cost says nothing
  about the model. Its realised cost is what the recorded market says an order of that
  size would have paid at the moment it reached the venue: the recorded book walked
  with the filled quantity where the store holds depth (an L2 diff stream or a top-N
  book, from a second after its snapshot), else the touch when the displayed touch held
  the whole quantity. An order beyond the touch with no recorded book has no truth and
  is left out (counted in ``skipped``), as is an order with no recorded quote in the five
  seconds before it (a fill on synthetic quotes built from bars, a live fill whose feed
  was not stored);
- a **live** fill's realised cost is its own: the volume-weighted price of the order's
  fills against the mid of the last valid quote at or before its submission.

Only marketable orders (every fill ``taker``) feed the cost curve: it models what taking
liquidity costs; resting orders are the passive model's. Predictions and the curve's unit
come from the L1 quote the model would have seen at arrival: the half-spread, the touch
size and, on the ``half_spread_plus_vol`` scale, the recent one-second volatility.

The blend (pysystemtrade's costs.py idea: realised slippage weighed against the
configured cost by how much of it there is): residuals ``e = realised - predicted
median`` are taken in the curve's own unit (half-spreads, or half-spread plus volatility),
so a correction carries to a calm and a wide market alike. A pooled shift
``S = median(e) * N / (N + k)`` moves every size bucket; a bucket with ``n`` fills moves
further towards its own median residual with weight ``n / (n + k)``. ``k``
(``prior_fills``, default :data:`PRIOR_FILLS`) is how many fills the fitted curve counts
as: with few fills the model barely moves, with many it follows them. The interval keeps
its fitted width and moves with the median (a few fills say little about the spread of
costs); the fit's shape rules hold after the shift (median and upper bound non-decreasing
in size, q05 <= q50 <= q95).

The corrected model is stored as a new calibration version of the instrument with its
provenance (``calibrations.provenance``: which calibration it corrected, how many orders
and fills, which accounts and modes, the window, where the truth came from) and its
before/after errors in the diagnostics, which the TCA report shows. The base is always a
calibration fitted from market data: by default the one ``tca_fills`` says priced the
fills, else the instrument's latest; a from-fills calibration named as base is followed
back to the calibration it corrected, so running again with more fills re-corrects the
original with all of them instead of stacking corrections. The newest ``holdout`` share
of the orders (by time) is held back from the blend and scored before and after.

What this does not change: a model with a depth profile has the paper venue walk its
L1-implied ladder rather than price by the cost curve, so there the correction reaches
predictions, TCA and research costs (which read the curve) but not the paper fills.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from tradebook.errors import DataError, StoreError
from tradebook.sim.fill_model import SCALE_HALF_SPREAD, CostCurve, FillModel
from tradebook.tca.reads import where_clause

PRIOR_FILLS = 20  # a bucket's fitted quantiles count as this many fills (the fit's own minimum per bucket)
DEFAULT_HOLDOUT = 0.25  # the newest quarter of the orders scores the correction
BOOK_SETTLE_NS = 1_000_000_000  # a rebuilt L2 book is trusted from a second after its snapshot (as the fidelity report)
MAX_QUOTE_AGE_NS = 5_000_000_000  # an older quote says nothing of the order's moment (the risk check's default)
TRUTH_BOOK, TRUTH_TOUCH, TRUTH_OWN = "book walk", "touch", "own fill"
_BPS = 1e4


@dataclass(frozen=True)
class FromFills:
    """One instrument's correction from fills: the stored version, the orders it read and the errors.

    ``orders``: one row per marketable order used or held out (``part`` 'blended' or
    'held out'): arrival time, side, quantity, the L1 features, ``realised_cost_bps`` with
    its ``truth``, and ``predicted_before_bps`` / ``predicted_after_bps``. ``errors``: per
    part, n, MAE before and after, mean realised and predicted. ``buckets``: per size
    bucket, fills, weight, median before and after. ``skipped``: orders left out, by reason.
    """

    instrument_id: str
    base_id: str
    record: Any  # tradebook.store.CalibrationRecord of the new version
    model: FillModel
    orders: pd.DataFrame
    errors: pd.DataFrame
    buckets: pd.DataFrame
    skipped: dict[str, int] = field(default_factory=dict)
    reused: bool = False  # the newest stored version already held this correction

    def error(self, part: str = "blended") -> tuple[float, float]:
        """(MAE before, MAE after) in bps on ``part`` ('blended' or 'held out'); NaN when it has no orders."""
        row = self.errors[self.errors["part"] == part]
        if row.empty:
            return float("nan"), float("nan")
        return float(row["mae_before_bps"].iloc[0]), float(row["mae_after_bps"].iloc[0])


# -- the orders and what they really cost --------------------------------------------------------
def _marketable_orders(store: Any, instrument_id: str, account_id: str | None, mode: str | None,
                       start_ns: int | None, end_ns: int | None) -> pd.DataFrame:
    """Orders of ``instrument_id`` whose fills all took liquidity: filled quantity, VWAP, first fill, submit time."""
    where, params = where_clause({"instrument_id": instrument_id, "account_id": account_id, "mode": mode,
                                  "start_ns": start_ns, "end_ns": end_ns}, ts_column="ts_event")
    sql = f"""
        WITH x AS (SELECT f.*, o.mode, o.ts_init AS submit_ns FROM fills f JOIN orders o USING (client_order_id))
        SELECT client_order_id, account_id, mode, side, submit_ns,
               min(ts_event) AS arrival_ns, max(ts_event) AS last_fill_ns, sum(quantity)::DOUBLE AS quantity,
               (sum(price * quantity) / sum(quantity))::DOUBLE AS avg_price, count(*) AS fills
        FROM x {where}
        GROUP BY ALL HAVING bool_and(liquidity = 'taker')
        ORDER BY arrival_ns, client_order_id
    """
    return store.query(sql, params)


def _prevailing(quotes: pd.DataFrame, ts_ns: np.ndarray) -> np.ndarray:
    """Row of the last valid quote (bid < ask, sizes > 0) at or before each time; -1 where none."""
    bid, ask = quotes["bid_px"].to_numpy(np.float64), quotes["ask_px"].to_numpy(np.float64)
    bsz, asz = quotes["bid_sz"].to_numpy(np.float64), quotes["ask_sz"].to_numpy(np.float64)
    with np.errstate(invalid="ignore"):
        valid = np.flatnonzero(np.isfinite(bid) & np.isfinite(ask) & (bid < ask) & (bsz > 0) & (asz > 0))
    ts = quotes["ts_ns"].to_numpy(np.int64)[valid]
    at = np.searchsorted(ts, np.asarray(ts_ns, dtype=np.int64), side="right") - 1
    return np.where(at >= 0, valid[np.clip(at, 0, None)], -1)


def _book_costs(data: Any, arrival: np.ndarray, direction: np.ndarray, quantity: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """Cost (bps of the book's mid) of walking the recorded book with each quantity; NaN where it cannot tell.

    Returns the costs and whether the book was known at each time (False: before the
    snapshot had settled, outside the book's data, or a one-sided book).
    """
    from tradebook.sim.book import book5_snapshots, rebuild_binance_book, walk_levels

    cost = np.full(len(arrival), np.nan)
    known = np.zeros(len(arrival), dtype=bool)
    if not len(arrival) or not data.has_depth:
        return cost, known
    order = np.argsort(arrival, kind="stable")
    times = arrival[order]
    if data.depth is not None and len(data.depth):
        depth = data.depth
        settled = int(depth.loc[depth["kind"] == "snapshot", "ts_ns"].max()) + BOOK_SETTLE_NS
        last = int(depth["ts_ns"].max())
        book = rebuild_binance_book(depth, times, levels=1000)
    else:
        settled, last = int(data.book["ts_ns"].iloc[0]), int(data.book["ts_ns"].iloc[-1])
        book = book5_snapshots(data.book, times)
    inside = (times >= settled) & (times <= last) & book.two_sided
    mid = book.mid
    for d in (1, -1):
        rows = np.flatnonzero(inside & (direction[order] == d))
        if not len(rows):
            continue
        px, sz = (book.ask_px, book.ask_sz) if d > 0 else (book.bid_px, book.bid_sz)
        qty = quantity[order][rows]
        avg, got, _worst, _used = walk_levels(px[rows], sz[rows], qty)
        deep = got >= qty * (1 - 1e-12)
        cost[order[rows]] = np.where(deep, d * (avg - mid[rows]) / mid[rows] * _BPS, np.nan)
        known[order[rows]] = True
    return cost, known


def realised_costs(store: Any, instrument_id: str, *, account_id: str | None = None, mode: str | None = None,
                   start_ns: int | None = None, end_ns: int | None = None) -> tuple[pd.DataFrame, dict[str, int]]:
    """Each marketable order of ``instrument_id`` with what it really cost, and the orders left out by reason.

    Columns: client_order_id, account_id, mode, side, arrival_ns, quantity, avg_price,
    fills, mid, half_spread_bps, touch_size, size_over_touch, recent_vol_bps,
    realised_cost_bps and ``truth`` (see the module docstring). Filters as
    :func:`calibrate_from_fills`.
    """
    from tradebook.sim.calibrate import recent_vol_bps
    from tradebook.sim.fidelity import store_instrument_data

    orders = _marketable_orders(store, instrument_id, account_id, mode, start_ns, end_ns)
    skipped: dict[str, int] = {}
    if orders.empty:
        return orders, skipped
    try:
        data = store_instrument_data(store, instrument_id)
    except DataError:
        skipped["no recorded quotes of the instrument"] = len(orders)
        return orders.iloc[:0], skipped
    quotes = data.quotes
    live = orders["mode"].to_numpy() == "live"
    # paper: the engine priced the order when it reached the venue (its first fill); live: against the quote at submit
    when = np.where(live, orders["submit_ns"].to_numpy(np.int64), orders["arrival_ns"].to_numpy(np.int64))
    row = _prevailing(quotes, when)
    picked = quotes.iloc[np.clip(row, 0, None)]
    in_data = (row >= 0) & (when - picked["ts_ns"].to_numpy(np.int64) <= MAX_QUOTE_AGE_NS)
    bid, ask = picked["bid_px"].to_numpy(np.float64), picked["ask_px"].to_numpy(np.float64)
    direction = np.where(orders["side"].to_numpy() == "buy", 1, -1)
    mid = (bid + ask) / 2
    out = orders.assign(arrival_ns=when, mid=mid, half_spread_bps=(ask - bid) / mid / 2 * _BPS,
                        touch_size=np.where(direction > 0, picked["ask_sz"], picked["bid_sz"]).astype(np.float64))
    quantity = out["quantity"].to_numpy(np.float64)
    out["size_over_touch"] = quantity / out["touch_size"].to_numpy()
    out["recent_vol_bps"] = recent_vol_bps(quotes, when)
    realised = np.full(len(out), np.nan)
    truth = np.full(len(out), "", dtype=object)
    own = direction * (out["avg_price"].to_numpy() - mid) / mid * _BPS
    realised[live], truth[live] = own[live], TRUTH_OWN
    walked, known = _book_costs(data, when, direction, quantity)
    paper = ~live & in_data
    from_book = paper & known
    realised[from_book], truth[from_book] = walked[from_book], TRUTH_BOOK
    at_touch = paper & ~known & (out["size_over_touch"].to_numpy() <= 1.0)
    realised[at_touch], truth[at_touch] = out["half_spread_bps"].to_numpy()[at_touch], TRUTH_TOUCH
    reasons = {
        f"no recorded quote in the {MAX_QUOTE_AGE_NS // 10**9} s before the order": ~in_data,
        "the recorded book could not hold the quantity": from_book & ~np.isfinite(walked),
        "beyond the touch with no recorded book": paper & ~known & ~at_touch,
    }
    for reason, mask in reasons.items():
        if mask.any():
            skipped[reason] = int(mask.sum())
    keep = in_data & np.isfinite(realised) & (out["half_spread_bps"].to_numpy() > 0)
    out["realised_cost_bps"], out["truth"] = realised, truth
    return out[keep].drop(columns=["submit_ns"]).reset_index(drop=True), skipped


# -- the blend -------------------------------------------------------------------------------
def _unit_bps(curve: CostCurve, frame: pd.DataFrame) -> np.ndarray:
    """The curve's unit at each order, in bps: the half-spread, or the half-spread plus the recent volatility."""
    hs = frame["half_spread_bps"].to_numpy(np.float64)
    if curve.scale == SCALE_HALF_SPREAD:
        return hs
    vol = frame["recent_vol_bps"].to_numpy(np.float64)
    return hs + np.where(np.isfinite(vol), np.maximum(vol, 0.0), 0.0)


def predicted_costs(model: FillModel, frame: pd.DataFrame, quantile: float = 0.5) -> np.ndarray:
    """The model's cost (bps of the mid) for each order of :func:`realised_costs`."""
    return model.marketable_cost_bps(frame["quantity"].to_numpy(np.float64),
                                     frame["half_spread_bps"].to_numpy(np.float64),
                                     frame["touch_size"].to_numpy(np.float64), quantile,
                                     frame["recent_vol_bps"].to_numpy(np.float64))


def blend_curve(model: FillModel, frame: pd.DataFrame, prior_fills: float = PRIOR_FILLS
                ) -> tuple[CostCurve, pd.DataFrame]:
    """``model``'s cost curve shifted towards the realised costs of ``frame``; and the per-bucket table.

    See the module docstring for the rule. ``frame`` is :func:`realised_costs`' output.
    """
    if not prior_fills > 0:
        raise DataError(f"prior_fills is {prior_fills!r}; expected a positive number of fills")
    curve = model.cost_curve
    unit = _unit_bps(curve, frame)
    # residuals in the curve's unit: the prediction's base slippage is outside the curve
    residual = (frame["realised_cost_bps"].to_numpy() - predicted_costs(model, frame)) / unit
    bucket = curve.bucket(frame["size_over_touch"].to_numpy(np.float64))
    n_buckets = len(curve.edges) - 1
    counts = np.bincount(bucket, minlength=n_buckets)
    total = len(residual)
    pooled = float(np.median(residual)) * total / (total + prior_fills) if total else 0.0
    shift = np.full(n_buckets, pooled)
    medians = np.full(n_buckets, np.nan)
    for b in np.flatnonzero(counts):
        medians[b] = float(np.median(residual[bucket == b]))
        shift[b] = pooled + counts[b] / (counts[b] + prior_fills) * (medians[b] - pooled)
    q05, q50, q95 = (np.asarray(q, dtype=np.float64) + shift for q in (curve.q05, curve.q50, curve.q95))
    q50, q95 = np.maximum.accumulate(q50), np.maximum.accumulate(q95)  # the fit's shape rules
    q95 = np.maximum(q95, q50)
    q05 = np.minimum(q05, q50)
    blended = replace(curve, q05=tuple(map(float, q05)), q50=tuple(map(float, q50)), q95=tuple(map(float, q95)))
    table = pd.DataFrame({
        "size_over_touch": [f"{lo:g}-{hi:g}" for lo, hi in zip(curve.edges[:-1], curve.edges[1:])],
        "orders": counts, "weight": counts / (counts + prior_fills),
        "median_residual": medians, "shift": shift,
        "q50_before": curve.q50, "q50_after": blended.q50,
    })
    return blended, table


def _errors(frame: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for part in ("blended", "held out"):
        sub = frame[frame["part"] == part]
        realised = sub["realised_cost_bps"].to_numpy()
        before, after = sub["predicted_before_bps"].to_numpy(), sub["predicted_after_bps"].to_numpy()
        rows.append({"part": part, "orders": len(sub),
                     "mae_before_bps": float(np.mean(np.abs(realised - before))) if len(sub) else np.nan,
                     "mae_after_bps": float(np.mean(np.abs(realised - after))) if len(sub) else np.nan,
                     "mean_realised_bps": float(np.mean(realised)) if len(sub) else np.nan,
                     "mean_predicted_before_bps": float(np.mean(before)) if len(sub) else np.nan,
                     "mean_predicted_after_bps": float(np.mean(after)) if len(sub) else np.nan})
    return pd.DataFrame(rows)


# -- the base calibration and the stored version ----------------------------------------------
def provenance_of(record: Any) -> dict[str, Any]:
    """The provenance of a stored calibration as a dict (empty for one fitted from market data)."""
    text = getattr(record, "provenance", "") or ""
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {"note": text}
    return value if isinstance(value, dict) else {"note": text}


def _root(store: Any, name: str) -> Any:
    """The market-data calibration behind ``name`` (following from-fills corrections back)."""
    record = store.calibration(name)
    seen = {record.calibration_id}
    while (corrects := provenance_of(record).get("corrects")):
        record = store.calibration(corrects)
        if record.calibration_id in seen:
            raise StoreError(f"calibration provenance loops at {record.calibration_id}")
        seen.add(record.calibration_id)
    return record


def _priced_with(store: Any, instrument_id: str, account_id: str | None) -> str | None:
    """The one calibration ``tca_fills`` says priced this instrument's fills, if TCA recorded exactly one."""
    sql = "SELECT DISTINCT calibration_id FROM tca_fills WHERE instrument_id = ? AND calibration_id IS NOT NULL"
    params: list[Any] = [instrument_id]
    if account_id is not None:
        sql += " AND account_id = ?"
        params.append(account_id)
    ids = store.query(sql, params)["calibration_id"].tolist()
    return ids[0] if len(ids) == 1 else None


def calibrate_from_fills(
    store: Any,
    instrument_id: str,
    *,
    account_id: str | None = None,
    mode: str | None = None,
    base: str | None = None,
    start_ns: int | None = None,
    end_ns: int | None = None,
    holdout: float = DEFAULT_HOLDOUT,
    prior_fills: float = PRIOR_FILLS,
) -> FromFills:
    """Correct ``instrument_id``'s fill model with the realised costs of its fills; store the new version.

    ``account_id`` (a paper run's name or a live account), ``mode`` ('paper' or 'live'),
    ``start_ns``/``end_ns`` (fill times) choose the fills; ``base`` the calibration to
    correct (default: see the module docstring); ``holdout`` the newest share of the
    orders scored but not blended (0 blends all); ``prior_fills`` the ``k`` of the weights.
    A correction equal to the newest stored version is not stored again (``reused``).
    Raises DataError when no marketable order has a realised cost (the reasons counted).
    """
    if not 0 <= holdout < 1:
        raise DataError(f"holdout is {holdout!r}; expected a share of the orders in [0, 1)")
    if mode not in (None, "paper", "live"):
        raise DataError(f"mode is {mode!r}; expected 'paper', 'live' or None (both)")
    base_record = _root(store, base or _priced_with(store, instrument_id, account_id) or instrument_id)
    if base_record.instrument_id != instrument_id:
        raise DataError(f"base calibration {base_record.calibration_id} is of {base_record.instrument_id}, "
                        f"not {instrument_id}")
    model = FillModel.from_json(base_record.params)
    frame, skipped = realised_costs(store, instrument_id, account_id=account_id, mode=mode, start_ns=start_ns,
                                    end_ns=end_ns)
    if frame.empty:
        why = "; ".join(f"{n} {reason}" for reason, n in skipped.items()) or "no marketable (taker) orders"
        raise DataError(f"no fill of {instrument_id}{f' in account {account_id!r}' if account_id else ''} has a "
                        f"realised cost to correct {base_record.calibration_id} with ({why})")
    held = int(np.floor(len(frame) * holdout))
    frame["part"] = np.where(np.arange(len(frame)) < len(frame) - held, "blended", "held out")
    blended_rows = frame[frame["part"] == "blended"]
    curve, buckets = blend_curve(model, blended_rows, prior_fills)
    corrected = replace(model, cost_curve=curve)
    frame["predicted_before_bps"] = predicted_costs(model, frame)
    frame["predicted_after_bps"] = predicted_costs(corrected, frame)
    errors = _errors(frame)
    truth = frame.loc[frame["part"] == "blended", "truth"].value_counts()
    provenance = {
        "corrects": base_record.calibration_id,
        "orders": len(blended_rows), "fills": int(blended_rows["fills"].sum()), "held_out_orders": held,
        "accounts": sorted(set(blended_rows["account_id"])), "modes": sorted(set(blended_rows["mode"])),
        "fills_from_ns": int(blended_rows["arrival_ns"].min()), "fills_to_ns": int(blended_rows["arrival_ns"].max()),
        "truth": {str(k): int(v) for k, v in truth.items()}, "prior_fills": prior_fills,
    }
    diagnostics = {**base_record.diagnostics, "from_fills": {
        "errors": errors.to_dict("records"), "skipped": skipped,
        "buckets": buckets.replace({np.nan: None}).to_dict("records")}}
    params = corrected.to_json()
    provenance_text = json.dumps(provenance, sort_keys=True)
    latest = store.calibration(instrument_id)
    if latest.params == params and latest.provenance == provenance_text:
        return FromFills(instrument_id, base_record.calibration_id, latest, corrected, frame, errors, buckets,
                         skipped, reused=True)
    record = store.save_calibration(
        instrument_id, params, data_start_ns=min(base_record.data_start_ns, provenance["fills_from_ns"]),
        data_end_ns=max(base_record.data_end_ns, provenance["fills_to_ns"]), dataset_ids=base_record.dataset_ids,
        diagnostics=diagnostics, provenance=provenance_text)
    return FromFills(instrument_id, base_record.calibration_id, record, corrected, frame, errors, buckets, skipped)


def instruments_with_fills(store: Any, account_id: str | None = None) -> list[str]:
    """Instruments with at least one taker fill (of ``account_id``), for ``calibrate --from-fills`` without names."""
    sql = "SELECT DISTINCT instrument_id FROM fills WHERE liquidity = 'taker'"
    params: list[Any] = []
    if account_id is not None:
        sql += " AND account_id = ?"
        params.append(account_id)
    return sorted(store.query(sql + " ORDER BY instrument_id", params)["instrument_id"].tolist())


def from_fills_errors(store: Any, instrument_id: str | None = None, *, latest: bool = False) -> pd.DataFrame:
    """The before/after errors stored with each from-fills calibration (what the TCA report shows).

    One row per (calibration, part): calibration_id, instrument_id, corrects, part, orders,
    mae_before_bps, mae_after_bps, mean_realised_bps, mean_predicted_before_bps,
    mean_predicted_after_bps; newest calibration last. ``latest``: only the newest
    from-fills calibration of each instrument.
    """
    rows = []
    listed = store.calibrations(instrument_id)
    listed = listed[listed["provenance"] != ""]
    if latest:
        listed = listed.groupby("instrument_id").tail(1)
    for calibration_id in listed["calibration_id"]:
        record = store.calibration(calibration_id)
        corrects = provenance_of(record).get("corrects")
        for row in record.diagnostics.get("from_fills", {}).get("errors", []):
            rows.append({"calibration_id": calibration_id, "instrument_id": record.instrument_id,
                         "corrects": corrects, **row})
    columns = ["calibration_id", "instrument_id", "corrects", "part", "orders", "mae_before_bps", "mae_after_bps",
               "mean_realised_bps", "mean_predicted_before_bps", "mean_predicted_after_bps"]
    return pd.DataFrame(rows, columns=columns)


def from_fills_buckets(store: Any, calibration_id: str) -> pd.DataFrame:
    """Per size bucket of a from-fills calibration: orders, weight, shift and the median before and after."""
    rows = store.calibration(calibration_id).diagnostics.get("from_fills", {}).get("buckets", [])
    if not rows:
        raise DataError(f"{calibration_id} was not made from fills (no from-fills diagnostics); from-fills "
                        f"calibrations: {from_fills_errors(store)['calibration_id'].unique().tolist()}")
    return pd.DataFrame(rows)


def format_from_fills(results: list[FromFills]) -> str:
    """What the CLI prints: per instrument, the version stored, where the truth came from, error before and after."""
    lines = []
    for result in results:
        provenance = provenance_of(result.record)
        state = "already stored as" if result.reused else "stored as"
        truth = ", ".join(f"{n} by {kind}" for kind, n in provenance.get("truth", {}).items())
        lines.append(f"{result.instrument_id}: {result.base_id} corrected with {provenance.get('orders', 0)} "
                     f"orders ({provenance.get('fills', 0)} fills; realised cost {truth}), {state} "
                     f"{result.record.calibration_id}")
        for row in result.errors.itertuples(index=False):
            if row.orders:
                lines.append(f"   {row.part:>8}: {row.orders:4d} orders, MAE {row.mae_before_bps:.4g} bps before -> "
                             f"{row.mae_after_bps:.4g} after (mean realised {row.mean_realised_bps:.4g}, predicted "
                             f"{row.mean_predicted_before_bps:.4g} -> {row.mean_predicted_after_bps:.4g})")
        for reason, n in result.skipped.items():
            lines.append(f"   left out: {n} orders, {reason}")
    return "\n".join(lines)
