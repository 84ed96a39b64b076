"""Scoring a fitted model on a transfer's scored slice, part by part (issue 16's harder fidelity report).

Each ``_score_*`` function scores one part (real sweeps, book walks from L1 alone, the
engine's market orders against the true walk of the recorded book, the ex-ante passive
model, the engine's replayed resting orders) against baselines (a) touch + 2 bps, (b) the
touch / the visible book, and (c) the simple reference any user could fit, appending
figures with block-bootstrap bands, report lines and plot tables. Every feature comes from
data before the decision; a part the data cannot support is said, not scored.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from tradebook.model.instruments import Instrument
from tradebook.sim.fill_model import FillModel
from tradebook.sim.fidelity import _NS, BOOK_SAMPLES, InstrumentData, _fmt, instrument_sweeps, passive_data, \
    passive_horizons_ns
from tradebook.sim.transfers import (
    COVERAGE_CLOSED,
    COVERAGE_OPEN,
    ENGINE_ORDERS_PER_SIZE,
    ENGINE_RESTING_DISTANCES,
    ENGINE_RESTING_PLACEMENTS,
    ENGINE_RESTING_RATIO,
    ENGINE_SIZES_REL_TOUCH,
    HALF_HALF,
    WALK_RATIO_SPLIT,
    WALK_RATIO_TRANSFER,
    Figure,
    Transfer,
    _target,
)
from tradebook.sim.truth import truth_label

def _book_at(data: InstrumentData, times: np.ndarray) -> Any:
    """The real visible book of ``data`` at ``times`` (sorted), or None where it has no depth."""
    from tradebook.sim.book import book5_snapshots, rebuild_binance_book

    if data.depth is not None and len(data.depth):
        return rebuild_binance_book(data.depth, times, levels=1000)
    if data.book is not None and len(data.book):
        return book5_snapshots(data.book, times)
    return None


def _depth_times(data: InstrumentData, rng: np.random.Generator, n: int) -> np.ndarray | None:
    start = data.start_ns
    if data.depth is not None and len(data.depth):
        depth = data.depth
        start = max(start, int(depth.loc[depth["kind"] == "snapshot", "ts_ns"].max()) + _NS)
    if start >= data.end_ns:
        return None
    return np.sort(rng.integers(start, data.end_ns, n))


def _walk_rows(data: InstrumentData, rng: np.random.Generator, typical: float, n: int = BOOK_SAMPLES
               ) -> pd.DataFrame | None:
    from tradebook.sim.book import exclude_crossed_or_preopen
    from tradebook.sim.depth import DEFAULT_SIZES_REL_TOP
    from tradebook.sim.truth import book_walk_truth

    if not data.has_depth:
        return None
    times = _depth_times(data, rng, n)
    if times is None:
        return None
    snapshots = exclude_crossed_or_preopen(_book_at(data, times))
    if not len(snapshots):
        return None
    truth = book_walk_truth(snapshots, np.asarray(DEFAULT_SIZES_REL_TOP), rng, typical)
    truth["vol_bps"] = _vol(data, truth["ts_ns"].to_numpy())
    return truth[truth["deep_enough"].to_numpy(dtype=bool) & np.isfinite(truth["cost_bps"].to_numpy())]


def _vol(data: InstrumentData, ts: np.ndarray) -> np.ndarray:
    from tradebook.sim.reference import recent_volatility_bps

    return recent_volatility_bps(data.quotes, np.asarray(ts, dtype=np.int64))


def block_ns_of(t: Transfer) -> int:
    from tradebook.sim.bootstrap import block_length_ns

    return block_length_ns(t.score.end_ns - t.score.start_ns)


def _coverage_figures(prefix: str, ts: np.ndarray, cost: np.ndarray, low: np.ndarray, high: np.ndarray,
                      seed: int, block: int) -> list[Figure]:
    from tradebook.sim.bootstrap import mean_band

    eps = 1e-9 * np.maximum(np.abs(cost), 1.0)
    closed = ((low - eps <= cost) & (cost <= high + eps)).astype(np.float64)
    open_ = ((low + eps < cost) & (cost < high - eps)).astype(np.float64)
    return [_target(f"{prefix} 90% interval coverage, closed", mean_band(ts, closed, block_ns=block, seed=seed), ">=",
                    COVERAGE_CLOSED),
            _target(f"{prefix} 90% interval coverage, open", mean_band(ts, open_, block_ns=block, seed=seed), "<=",
                    COVERAGE_OPEN)]


def _visible_walk_bps(data: InstrumentData, ts: np.ndarray, side: np.ndarray, quantity: np.ndarray,
                      mid: np.ndarray, half_spread_bps: np.ndarray) -> tuple[np.ndarray, int]:
    """Baseline (b) for real sweeps: the visible book just before each walked with its quantity.

    Where the data has no depth (or the book there is not yet known, or too thin to hold
    the quantity) it is the half-spread, as on L1. Returns the costs (bps vs ``mid``) and
    how many sweeps were priced by a walk.
    """
    from tradebook.sim.book import walk_levels

    out = np.asarray(half_spread_bps, dtype=np.float64).copy()
    if not data.has_depth or not len(ts):
        return out, 0
    start = data.start_ns
    if data.depth is not None and len(data.depth):
        start = int(data.depth.loc[data.depth["kind"] == "snapshot", "ts_ns"].max()) + _NS
    rows = np.flatnonzero(ts - 1 >= start)
    if not len(rows):
        return out, 0
    book = _book_at(data, ts[rows] - 1)
    walked = 0
    for d in (1, -1):
        pick = side[rows] == d
        if not pick.any():
            continue
        px, sz = (book.ask_px, book.ask_sz) if d > 0 else (book.bid_px, book.bid_sz)
        avg, got, _w, _u = walk_levels(px[pick], sz[pick], quantity[rows][pick])
        ok = (got >= quantity[rows][pick] * (1 - 1e-12)) & np.isfinite(avg) & book.two_sided[pick]
        target = rows[pick][ok]
        out[target] = d * (avg[ok] - mid[target]) / mid[target] * 1e4
        walked += int(ok.sum())
    return out, walked


def score_sweeps(t: Transfer, model: FillModel, seed: int, figures: list, lines: list, tables: dict,
                  not_applicable: dict) -> None:
    from tradebook.sim.bootstrap import ratio_band
    from tradebook.sim.reference import describe, fit_cost_reference

    fit_sweeps, held = instrument_sweeps(t.fit), instrument_sweeps(t.score)
    if not len(fit_sweeps) or not len(held):
        not_applicable["sweeps"] = "no trades in the " + ("fit" if not len(fit_sweeps) else "scored") + \
                                   " data: no real sweeps"
        return
    ref = fit_cost_reference(fit_sweeps["size_over_touch"].to_numpy(), fit_sweeps["half_spread_bps"].to_numpy(),
                             _vol(t.fit, fit_sweeps["ts_ns"].to_numpy()), fit_sweeps["cost_bps"].to_numpy(),
                             seed=seed)
    ts = held["ts_ns"].to_numpy(np.int64)
    cost, hs = held["cost_bps"].to_numpy(), held["half_spread_bps"].to_numpy()
    size, touch, x = held["quantity"].to_numpy(), held["touch_size"].to_numpy(), held["size_over_touch"].to_numpy()
    keep = np.isfinite(cost) & np.isfinite(hs) & (touch > 0)
    ts, cost, hs, size, touch, x = ts[keep], cost[keep], hs[keep], size[keep], touch[keep], x[keep]
    vol = _vol(t.score, ts)
    # the quote a sweep met, moved by the prints since it; on a sampled feed that quote may be a snapshot's age
    # old: the interval widens by the mid's diffusion over it (zero on an event feed), at the scored instrument's
    # own one-second volatility
    from tradebook.sim.calibrate import prediction_inputs

    inputs = prediction_inputs(held[keep], t.score.quotes, t.score.trades)
    stale, shift = inputs["stale_ns"], inputs["trade_shift_bps"]
    side, mid = held["side"].to_numpy()[keep], held["mid"].to_numpy()[keep]
    predicted = {q: model.marketable_cost_bps(size, hs, touch, q, **inputs) for q in (0.05, 0.5, 0.95)}
    ref_median = ref.cost_bps(x, hs, vol)
    baseline_b, walked = _visible_walk_bps(t.score, ts, side, size, mid, hs)
    err_model, err_b = np.abs(cost - predicted[0.5]), np.abs(cost - baseline_b)
    err_a, err_c = np.abs(cost - hs - 2.0), np.abs(cost - ref_median)
    block = block_ns_of(t)
    figures.append(_target("sweeps: MAE model / baseline (b) touch" + (" walking visible depth" if walked else ""),
                           ratio_band(ts, err_model, err_b, block_ns=block, seed=seed), "<=", 1.0))
    figures.append(_target("sweeps: MAE model / reference (c)",
                           ratio_band(ts, err_model, err_c, block_ns=block, seed=seed), "<=", 1.0))
    figures.append(Figure("sweeps: MAE model / baseline (a) touch+2bps",
                          ratio_band(ts, err_model, err_a, block_ns=block, seed=seed)))
    figures.extend(_coverage_figures("sweeps:", ts, cost, predicted[0.05], predicted[0.95], seed, block))
    lines.append(f"sweeps, {len(cost):,} real: MAE model {_fmt(err_model.mean())} bps | (a) {_fmt(err_a.mean())} | "
                 f"(b) {_fmt(err_b.mean())} ({walked:,} priced by walking the visible book before them, the rest "
                 f"at the touch) | (c) {_fmt(err_c.mean())}; {describe(ref)}")
    if (shift != 0).any():
        lines.append(f"sweeps: the model prices each against the quote in force moved by the prints since it "
                     f"(tradebook.sim.staleness.trade_shift): {(shift != 0).mean():.1%} of them met a quote the "
                     "prints had moved")
    if (stale > 0).any():
        lines.append(f"sweeps met quotes of a sampled feed ({(stale > 0).mean():.0%} of them, median staleness "
                     f"{np.median(stale[stale > 0]) / 1e6:.0f} ms, the fit's sweeps "
                     f"{model.fitted_stale_ns / 1e6:.0f} ms): "
                     "intervals widened by the mid's diffusion over the staleness beyond the fit's "
                     "(tradebook.sim.staleness)")
    edges = np.array([0.0, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, np.inf])
    bucket = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
    frame = pd.DataFrame({"bucket": bucket, "real": cost, "model": predicted[0.5], "q05": predicted[0.05],
                          "q95": predicted[0.95], "b": baseline_b, "c": ref_median, "x": x})
    g = frame.groupby("bucket")
    tables["sweeps_by_size"] = pd.DataFrame({
        "size_over_touch": g["x"].median().to_numpy(), "n": g.size().to_numpy(),
        "real_median_bps": g["real"].median().to_numpy(), "real_mean_bps": g["real"].mean().to_numpy(),
        "model_median_bps": g["model"].median().to_numpy(), "model_q05_bps": g["q05"].median().to_numpy(),
        "model_q95_bps": g["q95"].median().to_numpy(), "baseline_b_bps": g["b"].median().to_numpy(),
        "reference_c_bps": g["c"].median().to_numpy()})


def score_walks(t: Transfer, model: FillModel, typical: float, seed: int, figures: list, lines: list,
                 tables: dict, not_applicable: dict) -> None:
    from tradebook.sim.bootstrap import ratio_band
    from tradebook.sim.reference import fit_cost_reference

    rng = np.random.default_rng(seed + 11)
    truth = _walk_rows(t.score, rng, typical)
    if truth is None or not len(truth):
        not_applicable["book walks"] = "the scored data has no depth (L1 only): no true walk to score against"
        return
    ts = truth["ts_ns"].to_numpy(np.int64)
    cost, hs = truth["cost_bps"].to_numpy(), truth["half_spread_bps"].to_numpy()
    if model.depth is None:
        # no depth to walk (the fit data had no book and its quotes imply none): the model prices every walk at
        # the touch, which is baseline (b), and its interval is the touch too; scored as such, not left out
        median = low = high = hs
        lines.append("book walks: the model has no depth profile (the fit data has no book, and its quotes never "
                     "show the touch used up): it prices every walk at the touch")
    else:
        args = [truth[c].to_numpy() for c in ("side", "quantity", "bid_px", "ask_px", "bid_sz", "ask_sz")]
        # the instrument's own recent touch, from quotes at or before each walk: the unit depth carries in
        from tradebook.sim.depth import recent_touch_size

        touch_unit = recent_touch_size(t.score.quotes, ts)
        median, low, high = (model.depth.cost_bps(*args, quantile=q, touch_unit=touch_unit) for q in (0.5, 0.05, 0.95))
    err_model, err_b = np.abs(cost - median), np.abs(cost - hs)
    limit = WALK_RATIO_SPLIT if t.kind == HALF_HALF else WALK_RATIO_TRANSFER
    figures.append(_target("book walks from L1: MAE model / baseline (b)",
                           ratio_band(ts, err_model, err_b, block_ns=block_ns_of(t), seed=seed), "<=", limit))
    figures.extend(_coverage_figures("book walks:", ts, cost, low, high, seed, block_ns_of(t)))
    ref_c = np.full(len(cost), np.nan)
    fit_truth = _walk_rows(t.fit, np.random.default_rng(seed + 12), typical)
    if fit_truth is not None and len(fit_truth) >= 10:
        ref = fit_cost_reference(fit_truth["size_over_touch"].to_numpy(), fit_truth["half_spread_bps"].to_numpy(),
                                 fit_truth["vol_bps"].to_numpy(), fit_truth["cost_bps"].to_numpy(), seed=seed)
        ref_c = ref.cost_bps(truth["size_over_touch"].to_numpy(), hs, truth["vol_bps"].to_numpy())
        figures.append(Figure("book walks: MAE model / reference (c)",
                              ratio_band(ts, err_model, np.abs(cost - ref_c), block_ns=block_ns_of(t), seed=seed)))
    err_c = np.abs(cost - ref_c)
    mae_c = _fmt(float(np.mean(err_c))) if np.isfinite(err_c).all() else "n/a (the fit data has no book to fit it on)"
    lines.append(f"book walks from L1 only, {len(cost):,} true walks of {typical:g} x 0.5..20: MAE model "
                 f"{_fmt(err_model.mean())} bps | (b) {_fmt(err_b.mean())} | (c) {mae_c}")
    frame = pd.DataFrame({"size": truth["size_rel_top"].to_numpy(), "real": cost, "model": median, "q05": low,
                          "q95": high, "b": hs, "c": ref_c})
    g = frame.groupby("size")
    tables["walks_by_size"] = pd.DataFrame({
        "size_over_touch": np.asarray(list(g.groups), dtype=np.float64), "n": g.size().to_numpy(),
        "real_median_bps": g["real"].median().to_numpy(), "real_mean_bps": g["real"].mean().to_numpy(),
        "model_median_bps": g["model"].median().to_numpy(), "model_q05_bps": g["q05"].median().to_numpy(),
        "model_q95_bps": g["q95"].median().to_numpy(), "baseline_b_bps": g["b"].median().to_numpy(),
        "reference_c_bps": g["c"].median().to_numpy()})


def _min_quantity(instrument: Instrument, price: float) -> float:
    """The smallest order the venue takes at ``price``: its minimum quantity and notional, on the lot."""
    lot = float(instrument.lot_size)
    need = max(float(instrument.min_quantity or lot), float(instrument.min_notional or 0) * 1.01
               / (price * float(instrument.multiplier)))
    return float(np.round(math.ceil(need / lot - 1e-9) * lot, 12))


def _lot_floor(quantity: np.ndarray, instrument: Instrument) -> np.ndarray:
    lot = float(instrument.lot_size)
    return np.floor(np.asarray(quantity) / lot + 1e-9) * lot


def score_engine_marketable(t: Transfer, model: FillModel, typical: float, seed: int, figures: list,
                             lines: list, tables: dict, not_applicable: dict) -> None:
    """Market orders of 0.5..20x the touch sent to the engine at random times, against the true walk."""
    from tradebook.sim.bootstrap import ratio_band
    from tradebook.sim.engine import replay

    if not t.score.has_depth:
        not_applicable["engine market orders"] = "the scored data has no depth: no true walk to hold fills to"
        return
    rng = np.random.default_rng(seed + 21)
    instrument = t.score.instrument
    minimum = _min_quantity(instrument, float(np.nanmedian(t.score.quotes["ask_px"])))
    quotes, trades = t.score.quotes, t.score.trades
    rows = []
    for rel in ENGINE_SIZES_REL_TOUCH:
        times = _depth_times(t.score, rng, ENGINE_ORDERS_PER_SIZE)
        if times is None:
            break
        times = np.unique(times)
        # the engine sees L1 only: it must price depth from the calibration
        qty = _lot_floor(rel * typical * np.exp(rng.uniform(-0.1, 0.1, len(times))), instrument)
        ok = qty >= minimum
        times, qty = times[ok], qty[ok]
        if not len(times):
            continue
        sides = np.where(rng.random(len(times)) < 0.5, "buy", "sell")
        requests = pd.DataFrame({"ts_ns": times, "action": "submit", "order_ref": np.arange(len(times)),
                                 "side": sides, "quantity": [str(q) for q in np.round(qty, 12)],
                                 "order_type": "market"})
        result = replay(model, instrument, quotes, trades, requests, seed=seed)
        orders = result.orders.set_index("order_ref")
        fills = result.fills
        if not len(fills):
            continue
        notional = (fills["price"] * fills["quantity"]).groupby(fills["order_ref"]).sum()
        filled = fills.groupby("order_ref")["quantity"].sum()
        avg = notional / filled
        refs = avg.index.to_numpy()
        arrival = orders.loc[refs, "arrival_ts_ns"].to_numpy(np.int64)
        rows.append(pd.DataFrame({"ref": refs, "rel": rel, "arrival": arrival,
                                  "side": np.where(sides[refs] == "buy", 1, -1),
                                  "quantity": qty[refs], "filled": filled.to_numpy(), "avg": avg.to_numpy()}))
    if not rows:
        not_applicable["engine market orders"] = "no order the engine could fill in the scored data"
        return
    frame = pd.concat(rows, ignore_index=True).sort_values("arrival", kind="stable").reset_index(drop=True)
    book = _book_at(t.score, frame["arrival"].to_numpy())
    from tradebook.sim.book import walk_levels

    direction = frame["side"].to_numpy()
    qty = frame["filled"].to_numpy()  # the true walk of what the engine filled
    true_cost = np.full(len(frame), np.nan)
    mid = book.mid
    hs = (book.ask_px[:, 0] - book.bid_px[:, 0]) / mid / 2 * 1e4
    for d in (1, -1):
        rows_d = direction == d
        px, sz = (book.ask_px, book.ask_sz) if d > 0 else (book.bid_px, book.bid_sz)
        avg, got, _w, _u = walk_levels(px[rows_d], sz[rows_d], qty[rows_d])
        deep = got >= qty[rows_d] * (1 - 1e-12)
        true_cost[rows_d] = np.where(deep, d * (avg - mid[rows_d]) / mid[rows_d] * 1e4, np.nan)
    engine_cost = direction * (frame["avg"].to_numpy() - mid) / mid * 1e4
    ok = np.isfinite(true_cost) & np.isfinite(engine_cost) & book.two_sided
    ts = frame["arrival"].to_numpy(np.int64)[ok]
    err_engine, err_b = np.abs(engine_cost - true_cost)[ok], np.abs(true_cost - hs)[ok]
    limit = WALK_RATIO_SPLIT if t.kind == HALF_HALF else WALK_RATIO_TRANSFER
    figures.append(_target("engine market orders (L1 feed) vs true walk: MAE engine / baseline (b)",
                           ratio_band(ts, err_engine, err_b, block_ns=block_ns_of(t), seed=seed), "<=", limit))
    lines.append(f"engine: {int(ok.sum()):,} market orders of {'/'.join(f'{r:g}' for r in ENGINE_SIZES_REL_TOUCH)}"
                 f" x {typical:g} on the L1 feed, priced against the real book at arrival: MAE engine "
                 f"{_fmt(err_engine.mean())} bps | (b) {_fmt(err_b.mean())}; mean cost engine "
                 f"{_fmt(engine_cost[ok].mean())} vs true {_fmt(true_cost[ok].mean())} bps")
    per = pd.DataFrame({"size": frame["rel"].to_numpy()[ok], "engine": engine_cost[ok], "real": true_cost[ok]})
    g = per.groupby("size")
    tables["engine_by_size"] = pd.DataFrame({"size_over_touch": np.asarray(list(g.groups), dtype=np.float64),
                                             "n": g.size().to_numpy(),
                                             "engine_median_bps": g["engine"].median().to_numpy(),
                                             "real_median_bps": g["real"].median().to_numpy()})


def _passive_sets(t: Transfer, model: FillModel, seed: int) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    horizons = tuple(getattr(model.passive, "horizons_ns", ()) or passive_horizons_ns(t.fit))
    span = t.score.end_ns - t.score.start_ns
    horizons = tuple(h for h in horizons if h <= span / 3) or (max(_NS, int(span / 10) // _NS * _NS),)
    unit = getattr(model.passive, "touch_size_unit", None)
    fit_set = passive_data(t.fit, np.random.default_rng(seed), horizons, unit)
    held = passive_data(t.score, np.random.default_rng(seed + 1), horizons, unit)
    if not len(fit_set) or not len(held):
        return None
    return fit_set, held


def score_passive(t: Transfer, model: FillModel, seed: int, figures: list, lines: list, tables: dict,
                   not_applicable: dict) -> Any:
    from tradebook.sim.bootstrap import ratio_band
    from tradebook.sim.reference import brier, fit_fill_reference

    if model.passive is None:
        not_applicable["passive"] = "no passive model was fitted"
        return None
    sets = _passive_sets(t, model, seed)
    if sets is None:
        not_applicable["passive"] = "no placement with a full horizon in the fit or scored data"
        return None
    fit_set, held = sets
    ref = fit_fill_reference(fit_set)
    y = held["filled"].to_numpy(dtype=bool)
    p_model, p_ref = model.passive.fill_probability(held), ref.fill_probability(held)
    ts = held["placement_ts_ns"].to_numpy(np.int64)
    figures.append(_target("passive ex ante: Brier model / reference (c)",
                           ratio_band(ts, brier(p_model, y), brier(p_ref, y), block_ns=block_ns_of(t), seed=seed),
                           "<=", 1.0))
    lines.append(f"passive ex ante, {len(y):,} placements (truth: {truth_label(held)}): fill rate "
                 f"{_fmt(y.mean())}; Brier model {_fmt(brier(p_model, y).mean(), 4)} | (c) "
                 f"{_fmt(brier(p_ref, y).mean(), 4)}")
    from tradebook.sim.passive import reliability_curve

    parts = []
    for name, p in (("model", p_model), ("reference (c)", p_ref)):
        part = pd.DataFrame(list(reliability_curve(p, y)), columns=["mean_predicted", "observed_rate", "count"])
        part.insert(0, "model", name)
        parts.append(part[part["count"] > 0])
    tables["passive_reliability"] = pd.concat(parts, ignore_index=True)
    return ref


def score_engine_resting(t: Transfer, model: FillModel, ref: Any, seed: int, figures: list, lines: list,
                          not_applicable: dict) -> None:
    """Limit orders rested in the engine at random times, against the queue rule on the recorded tape."""
    from tradebook.sim.bootstrap import ratio_band
    from tradebook.sim.engine import replay
    from tradebook.sim.placements import placement_features, sample_placements
    from tradebook.sim.reference import brier
    from tradebook.sim.truth import passive_outcomes, prevailing_quotes

    if ref is None or not t.score.has_trades:
        not_applicable["engine resting orders"] = "no trades in the scored data (or no reference): no queue truth"
        return
    instrument, tick = t.score.instrument, float(t.score.instrument.tick_size)
    horizons = tuple(getattr(model.passive, "horizons_ns", ()) or passive_horizons_ns(t.fit))
    span = t.score.end_ns - t.score.start_ns
    horizons = tuple(h for h in horizons if h <= span / 3) or (max(_NS, int(span / 10) // _NS * _NS),)
    rng = np.random.default_rng(seed + 31)
    ts_q = t.score.quotes["ts_ns"].to_numpy()
    placement = np.unique(sample_placements(t.score.quotes, ENGINE_RESTING_PLACEMENTS, rng,
                                            mask=ts_q + max(horizons) <= t.score.end_ns))
    n = len(placement)
    sides = np.where(rng.random(n) < 0.5, 1, -1)
    quote = prevailing_quotes(t.score.quotes, placement, strictly_before=False)
    qty = repr(_min_quantity(instrument, float(np.nanmax(t.score.quotes["ask_px"]))))
    frames, orders = [], []
    ref_id = 0
    for horizon in horizons:
        for distance in ENGINE_RESTING_DISTANCES:
            touch = np.where(sides > 0, quote["bid_px"], quote["ask_px"])
            limit = np.round(touch / tick - sides * distance) * tick
            ok = quote["valid"]
            refs = np.arange(ref_id, ref_id + int(ok.sum()))
            ref_id += len(refs)
            orders.append(pd.DataFrame({
                "ts_ns": placement[ok], "action": "submit", "order_ref": refs,
                "side": np.where(sides[ok] > 0, "buy", "sell"), "quantity": qty, "order_type": "limit",
                "limit_px": [float(f"{p:.10g}") for p in limit[ok]], "expire_ts_ns": placement[ok] + horizon}))
            truth = passive_outcomes(t.score.quotes, t.score.trades, placement[ok], sides[ok], np.int64(distance),
                                     np.int64(horizon), tick)
            feats = placement_features(t.score.quotes, t.score.trades, placement[ok], sides[ok], np.int64(distance),
                                       np.int64(horizon), tick,
                                       touch_size_unit=getattr(model.passive, "touch_size_unit", None))
            feats["distance_ticks"] = distance
            frames.append(pd.DataFrame({"ref": refs, "ts": placement[ok], "true": truth["filled"].to_numpy(),
                                        "p_ref": ref.fill_probability(feats)}))
    requests = pd.concat(orders, ignore_index=True)
    truth = pd.concat(frames, ignore_index=True)
    result = replay(model, instrument, t.score.quotes, t.score.trades, requests, seed=seed)
    filled = result.orders.set_index("order_ref")["filled_qty"].astype(float)
    engine = (filled.reindex(truth["ref"].to_numpy()).fillna(0.0).to_numpy() > 0).astype(np.float64)
    y = truth["true"].to_numpy(dtype=np.float64)
    ts = truth["ts"].to_numpy(np.int64)
    err_engine, err_ref = brier(engine, y), brier(truth["p_ref"].to_numpy(), y)
    figures.append(_target("engine resting orders vs queue rule: Brier engine / reference (c)",
                           ratio_band(ts, err_engine, err_ref, block_ns=block_ns_of(t), seed=seed), "<=",
                           ENGINE_RESTING_RATIO))
    lines.append(f"engine resting orders, {len(y):,} ({n} placements x {len(ENGINE_RESTING_DISTANCES)} distances x "
                 f"{len(horizons)} horizons): true fill rate {_fmt(y.mean())}, engine {_fmt(engine.mean())}; Brier "
                 f"engine {_fmt(err_engine.mean(), 4)} | (c) {_fmt(err_ref.mean(), 4)}")
