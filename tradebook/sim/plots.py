"""Figures and tables of a fidelity report (imported by notebooks and the dashboard, never by the core).

Each plot takes the table a fidelity section carries (see
:class:`tradebook.sim.fidelity.InstrumentFidelity`) and returns a HoloViews object with
its own axes and its legend outside the lines; :func:`fidelity_layout` puts every
instrument's figures in one layout whose panels do not share axes. The ``*_table``
functions give the report as DataFrames, for notebooks (the text report,
:func:`tradebook.sim.fidelity.format_fidelity`, is for the command line).
"""

from __future__ import annotations

from typing import Any

import holoviews as hv
import hvplot.pandas  # noqa: F401  (registers DataFrame.hvplot)
import numpy as np
import pandas as pd

from tradebook.figures import HEIGHT, LEGEND, PLAIN_TICKS, WIDTH
from tradebook.model.time import ns_to_iso
from tradebook.sim.fidelity import InstrumentFidelity
from tradebook.sim.fill_model import FillModel

_SIZE = {"height": HEIGHT, "width": WIDTH}


_COST_LABELS = {"real_median_bps": "real median", "model_median_bps": "model median",
                "baseline_a_bps": "baseline (a) touch + 2 bps", "baseline_b_bps": "baseline (b) touch",
                "real_mean_bps": "real mean"}
_WALK_LABELS = {"mae_model_bps": "MAE, L1 model", "mae_baseline_b_bps": "MAE, baseline (b) touch",
                "mean_cost_bps": "mean real cost"}


def cost_by_size_plot(table: pd.DataFrame, title: str) -> Any:
    """Real median cost per size bucket against the model's median and 90% band and both baselines."""
    x = "size_mid"
    named = table.rename(columns=_COST_LABELS)
    band = named.hvplot.area(x=x, y="model_q05_bps", y2="model_q95_bps", alpha=0.2, label="model 90% interval",
                             logx=True)
    lines = named.hvplot.line(x=x, y=[_COST_LABELS[c] for c in ("real_median_bps", "model_median_bps",
                                                                "baseline_a_bps", "baseline_b_bps")],
                              logx=True, xlabel="order size / touch size", ylabel="cost vs mid (bps)")
    points = named.hvplot.scatter(x=x, y="real mean", label="real mean", logx=True)
    return (band * lines * points).opts(title=title, show_grid=True, **_SIZE, **LEGEND)


def book_walk_plot(table: pd.DataFrame, title: str) -> Any:
    """Mean absolute error of book-walk costs per order size: L1-only model against baseline (b), with the true mean."""
    named = table.rename(columns=_WALK_LABELS)
    errors = named.hvplot.line(x="size_rel_top", y=list(_WALK_LABELS.values()), logx=True,
                               xlabel="order size / typical top size", ylabel="bps")
    return errors.opts(title=title, show_grid=True, **_SIZE, **LEGEND)


def reliability_plot(table: pd.DataFrame, title: str) -> Any:
    """Predicted fill probability against the observed fill rate, model and average-rate baseline."""
    diagonal = hv.Curve([(0, 0), (1, 1)], label="perfect").opts(color="grey", line_dash="dashed")
    points = table.hvplot.scatter(x="mean_predicted", y="observed_rate", by="model", size=60,
                                  xlabel="predicted fill probability", ylabel="observed fill rate",
                                  hover_cols=["count"])
    return (diagonal * points).opts(title=title, xlim=(0, 1), ylim=(0, 1), show_grid=True, **_SIZE, **LEGEND)


def spread_profile_plot(table: pd.DataFrame, title: str) -> Any:
    """Median spread by time of day (hours, UTC), one line per volatility regime, over this instrument's hours only."""
    frame = table[table["bucket_start_utc"] != "all"].copy()
    clock = frame["bucket_start_utc"].str.split(":", expand=True).astype(int)
    frame["hour_utc"] = clock[0] + clock[1] / 60
    frame = frame.sort_values(["regime", "hour_utc"])
    lines = frame.hvplot.line(x="hour_utc", y="spread_bps_q50", by="regime_name", xlabel="time of day (hours, UTC)",
                              ylabel="median spread (bps)")
    # points too: a recording shorter than one bucket has a single time of day, which a line cannot show
    points = frame.hvplot.scatter(x="hour_utc", y="spread_bps_q50", by="regime_name", size=50)
    top = float(frame["spread_bps_q50"].max())
    # from zero: a near-constant spread should look constant, not magnified into noise
    return (lines * points).opts(title=title, show_grid=True, ylim=(0, top * 1.15 if top > 0 else 1),
                                 yformatter=PLAIN_TICKS, **_SIZE, **LEGEND)


_PLOTS = {
    "marketable_by_size": cost_by_size_plot,
    "book_walk_by_size": book_walk_plot,
    "passive_reliability": reliability_plot,
    "spread_profile": spread_profile_plot,
}


def fidelity_plots(result: InstrumentFidelity) -> list[Any]:
    """Every figure the instrument's report has data for, in report order."""
    figures = []
    for name, plot in _PLOTS.items():
        table = result.tables.get(name)
        if table is not None and len(table):
            figures.append(plot(table, f"{result.instrument_id}: {name.replace('_', ' ')}"))
    return figures


def fidelity_layout(results: list[InstrumentFidelity]) -> hv.Layout:
    """Every instrument's figures, one per row, each panel with its own axes (instruments differ in scale and hours)."""
    return hv.Layout([figure for r in results for figure in fidelity_plots(r)]).opts(shared_axes=False).cols(1)


def _round(value: float | None, digits: int = 3) -> float:
    return float("nan") if value is None else round(float(value), digits)


def fidelity_table(results: list[InstrumentFidelity]) -> pd.DataFrame:
    """The held-out report, one row per instrument: ranges, errors against real fills and baselines, coverage."""
    rows = []
    for r in results:
        m, walk, passive = r.marketable, r.book_walk, r.passive
        rows.append({
            "instrument": r.instrument_id + (f" (fitted on {r.fit_instrument_id})" if r.fit_instrument_id else ""),
            "fit": f"{ns_to_iso(r.fit_range[0])[:16]} .. {ns_to_iso(r.fit_range[1])[:16]}",
            "scored on": f"{ns_to_iso(r.eval_range[0])[:16]} .. {ns_to_iso(r.eval_range[1])[:16]}",
            "sweeps": m.n if m is not None else 0,
            "MAE model (bps)": _round(m.mae_model_bps) if m is not None else np.nan,
            "MAE touch+2bps (bps)": _round(m.mae_touch_plus_slippage_bps) if m is not None else np.nan,
            "MAE touch (bps)": _round(m.mae_touch_bps) if m is not None else np.nan,
            "90% covers": _round(m.coverage_closed) if m is not None else np.nan,
            "inside spread real / model": (f"{m.inside_spread_share_real:.3f} / {m.inside_spread_share_predicted:.3f}"
                                           if m is not None else "-"),
            "book walk MAE model / touch (bps)": (f"{walk.mae_model_bps:.3f} / {walk.mae_baseline_b_bps:.3f}"
                                                  if walk is not None else "-"),
            "passive Brier model / baseline": (f"{passive.brier_model:.4f} / {passive.brier_baseline:.4f}"
                                               if passive is not None else "-"),
            "targets met": f"{sum(t.met for t in r.targets)} of {len(r.targets)}",
            "not applicable": "; ".join(f"{name}: {why}" for name, why in r.not_applicable.items()),
        })
    return pd.DataFrame(rows)


def targets_table(results: list[InstrumentFidelity]) -> pd.DataFrame:
    """Every target of every instrument: its value, its rule and whether it is met."""
    return pd.DataFrame(
        [{"instrument": r.instrument_id, "target": t.name, "value": round(t.value, 4), "rule": t.rule, "met": t.met}
         for r in results for t in r.targets],
        columns=["instrument", "target", "value", "rule", "met"])


def styled_targets(results: list[InstrumentFidelity]) -> Any:
    """:func:`targets_table` with missed targets highlighted (a pandas Styler, for notebooks)."""
    table = targets_table(results)

    def highlight(row: pd.Series) -> list[str]:
        return ["background-color: #fde2e1" if not row["met"] else ""] * len(row)

    return table.style.apply(highlight, axis=1).format({"value": "{:.4f}"}).hide(axis="index")


def calibrations_table(store: Any, records: list[Any]) -> pd.DataFrame:
    """What was fitted, one row per stored calibration: its data, cost curve median, improvement, fees, latency."""
    rows = []
    for record in records:
        model = FillModel.from_json(record.params)
        curve = model.cost_curve
        rows.append({
            "calibration": record.calibration_id,
            "data": f"{ns_to_iso(record.data_start_ns)[:16]} .. {ns_to_iso(record.data_end_ns)[:16]}",
            "quotes": record.diagnostics.get("quotes", 0),
            "sweeps": record.diagnostics.get("sweeps", 0),
            "median cost, smallest size (half-spreads)": round(float(curve.q50[0]), 3),
            "median cost, largest size (half-spreads)": round(float(curve.q50[-1]), 3),
            "inside the spread": f"{model.price_improvement_share:.1%}",
            "latency to ack (ms)": round(model.latency.submit_to_ack_median_ns / 1e6, 3),
            "fees maker / taker (bps)": f"{model.fees.maker_bps:g} / {model.fees.taker_bps:g}",
            "fee per unit": model.fees.per_unit,
        })
    return pd.DataFrame(rows)


def cost_curve_table(model: FillModel) -> pd.DataFrame:
    """A fitted model's marketable cost by size: sweeps per bucket and the 5/50/95% cost in half-spreads."""
    curve = model.cost_curve
    return pd.DataFrame({
        "size/touch from": [f"{e:g}" for e in curve.edges[:-1]],
        "sweeps": curve.counts,
        "cost q05 (half-spreads)": np.round(curve.q05, 3),
        "median": np.round(curve.q50, 3),
        "q95": np.round(curve.q95, 3),
    })


# -- the transfer report (issue 16) ------------------------------------------------------------
_TRANSFER_LABELS = {"real_median_bps": "realised median", "real_mean_bps": "realised mean",
                    "model_median_bps": "model median (from L1)", "baseline_b_bps": "baseline (b) touch",
                    "reference_c_bps": "reference (c) quantile regression",
                    "engine_median_bps": "engine fills, median"}


def transfer_cost_plot(result: Any) -> Any:
    """Predicted against realised cost by order size for one transfer (a :class:`TransferFidelity`).

    From the true book walks where the scored data has depth (else the real sweeps): the
    realised median and mean, the model's median and 90% interval, baseline (b) and
    reference (c); the engine's own fills on the L1 feed where it was scored. None when the
    transfer has no cost by size to show.
    """
    table = result.tables.get("walks_by_size")
    source = "true book walks"
    if table is None or not len(table):
        table, source = result.tables.get("sweeps_by_size"), "real sweeps"
    engine = result.tables.get("engine_by_size")
    if (table is None or not len(table)) and (engine is None or not len(engine)):
        return None
    layers = []
    x, labels = "size_over_touch", dict(xlabel="order size / touch size", ylabel="cost vs mid (bps)")
    if table is not None and len(table):
        named = table.rename(columns=_TRANSFER_LABELS)
        layers.append(named.hvplot.area(x=x, y="model_q05_bps", y2="model_q95_bps", alpha=0.2,
                                        label="model 90% interval", logx=True))
        columns = [_TRANSFER_LABELS[c] for c in ("real_median_bps", "model_median_bps", "baseline_b_bps",
                                                 "reference_c_bps")
                   if c in table.columns and table[c].notna().any()]
        layers.append(named.hvplot.line(x=x, y=columns, logx=True, **labels))
        layers.append(named.hvplot.scatter(x=x, y="realised mean", label="realised mean", logx=True))
    if engine is not None and len(engine):
        named = engine.rename(columns=_TRANSFER_LABELS)
        if source != "true book walks":  # the engine's orders' own truth: the walk of the book they met
            walk = engine.rename(columns={"real_median_bps": "true walk of the engine's orders, median"})
            layers.append(walk.hvplot.line(x=x, y="true walk of the engine's orders, median", logx=True,
                                           line_dash="dashed", **labels))
        layers.append(named.hvplot.scatter(x=x, y="engine fills, median", label="engine fills, median", logx=True,
                                           marker="triangle", size=70, **labels))
    title = f"{result.transfer.name} ({source})"
    overlay = layers[0]
    for layer in layers[1:]:
        overlay = overlay * layer
    return overlay.opts(title=title, show_grid=True, fontsize={"title": 9}, **_SIZE, **LEGEND)


def transfer_layout(results: list[Any], kinds: tuple[str, ...] = ("half/half", "capture -> capture")) -> hv.Layout:
    """Cost by size, one panel per transfer of ``kinds`` scored against true book walks or the engine's fills.

    By default the half/half splits and the transfers across captures (early -> late looks
    like half/half and is left to the tables: every figure weighs on an exported page).
    """
    figures = [transfer_cost_plot(r) for r in results if r.transfer.kind in kinds
               and ("walks_by_size" in r.tables or "engine_by_size" in r.tables)]
    return hv.Layout([f for f in figures if f is not None]).opts(shared_axes=False).cols(1)


def transfer_targets_table(results: list[Any]) -> pd.DataFrame:
    """Every figure of the transfer report with its band, its target and met / MISSED (info rows: no target)."""
    rows = []
    for r in results:
        for f in r.figures:
            b = f.band
            rows.append({"transfer": r.transfer.name, "figure": f.name, "value": _round(b.value),
                         "band low": _round(b.low), "band high": _round(b.high), "blocks": b.blocks,
                         "target": f"{f.rule} {f.threshold:g}" if f.rule else "",
                         "verdict": ("met" if f.met else "MISSED") if f.rule else "info",
                         "note": f.verdict if f.verdict not in ("met", "MISSED") else ""})
    return pd.DataFrame(rows, columns=["transfer", "figure", "value", "band low", "band high", "blocks", "target",
                                       "verdict", "note"])


def transfer_summary_table(results: list[Any]) -> pd.DataFrame:
    """One row per transfer: what was fitted and scored, targets met, and the missed ones with their bands."""
    rows = []
    for r in results:
        t = r.transfer
        rows.append({"kind": t.kind, "fit": t.fit_label, "scored on": t.score_label,
                     "targets met": f"{len(r.targets) - len(r.missed)} of {len(r.targets)}",
                     "MISSED (value [band])": "; ".join(f"{f.name} {f.band}" for f in r.missed),
                     "not scored": ", ".join(r.not_applicable)})
    return pd.DataFrame(rows, columns=["kind", "fit", "scored on", "targets met", "MISSED (value [band])",
                                       "not scored"])


def styled_transfer_targets(results: list[Any], *, targets_only: bool = False) -> Any:
    """:func:`transfer_targets_table` with MISSED rows highlighted (a pandas Styler, for notebooks).

    ``targets_only``: leave out the figures shown without a target (info rows).
    """
    table = transfer_targets_table(results)
    if targets_only:
        table = table[table["verdict"] != "info"].drop(columns=["note"])

    def highlight(row: pd.Series) -> list[str]:
        return ["background-color: #fde2e1" if row["verdict"] == "MISSED" else ""] * len(row)

    return (table.style.apply(highlight, axis=1)
            .format({"value": "{:.3f}", "band low": "{:.3f}", "band high": "{:.3f}"}).hide(axis="index"))
