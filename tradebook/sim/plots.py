"""hvplot figures of a fidelity report (imported by notebooks and the dashboard, never by the core).

Each function takes the table a fidelity section carries (see
:class:`tradebook.sim.fidelity.InstrumentFidelity`) and returns a HoloViews object.
"""

from __future__ import annotations

from typing import Any

import holoviews as hv
import hvplot.pandas  # noqa: F401  (registers DataFrame.hvplot)
import pandas as pd

from tradebook.sim.fidelity import InstrumentFidelity


def cost_by_size_plot(table: pd.DataFrame, title: str) -> Any:
    """Real median cost per size bucket against the model's median and 90% band and both baselines."""
    x = "size_mid"
    band = table.hvplot.area(x=x, y="model_q05_bps", y2="model_q95_bps", alpha=0.2, label="model 90% interval",
                             logx=True)
    lines = table.hvplot.line(x=x, y=["real_median_bps", "model_median_bps", "baseline_a_bps", "baseline_b_bps"],
                              logx=True, xlabel="order size / touch size", ylabel="cost vs mid (bps)")
    points = table.hvplot.scatter(x=x, y="real_mean_bps", label="real mean", logx=True)
    return (band * lines * points).opts(title=title, height=320, width=720, legend_position="top_left")


def book_walk_plot(table: pd.DataFrame, title: str) -> Any:
    """Mean absolute error of book-walk costs per order size: L1-only model against baseline (b), with the true mean."""
    errors = table.hvplot.line(x="size_rel_top", y=["mae_model_bps", "mae_baseline_b_bps", "mean_cost_bps"],
                               logx=True, xlabel="order size / typical top size", ylabel="bps")
    return errors.opts(title=title, height=320, width=720, legend_position="top_left")


def reliability_plot(table: pd.DataFrame, title: str) -> Any:
    """Predicted fill probability against the observed fill rate, model and average-rate baseline."""
    diagonal = hv.Curve([(0, 0), (1, 1)], label="perfect").opts(color="grey", line_dash="dashed")
    points = table.hvplot.scatter(x="mean_predicted", y="observed_rate", by="model", size=60,
                                  xlabel="predicted fill probability", ylabel="observed fill rate",
                                  hover_cols=["count"])
    return (diagonal * points).opts(title=title, height=320, width=720, xlim=(0, 1), ylim=(0, 1))


def spread_profile_plot(table: pd.DataFrame, title: str) -> Any:
    """Median spread by time of day, one line per volatility regime."""
    return table.hvplot.line(x="bucket_start_utc", y="spread_bps_q50", by="regime_name", xlabel="time of day (UTC bucket)",
                             ylabel="median spread (bps)", title=title, height=280, width=720)


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
