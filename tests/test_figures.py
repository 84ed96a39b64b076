"""Research and promotion figures: the bands they draw are computed right, bad input is refused by name."""

from __future__ import annotations

import holoviews as hv
import holoviews.plotting.bokeh  # noqa: F401  (options need a plotting backend, as hv.extension gives a notebook)
import numpy as np
import pandas as pd
import pytest

from tradebook.errors import DataError
from tradebook.figures import (cost_figure, equity_bands_figure, horizon_return_bands, metric_bands_figure)


def test_horizon_bands_are_quantiles_of_every_rolling_compounded_window() -> None:
    returns = pd.Series([0.01, -0.02, 0.03, 0.0, 0.05])
    bands = horizon_return_bands(returns, 2, quantiles=(0.0, 0.5, 1.0))
    two_day = [(1.01 * 0.98) - 1, (0.98 * 1.03) - 1, 1.03 - 1, 1.05 - 1]
    assert bands.loc[1].tolist() == pytest.approx([-0.02, 0.01, 0.05])
    assert bands.loc[2].tolist() == pytest.approx([min(two_day), np.median(two_day), max(two_day)])
    with pytest.raises(DataError, match="at least n_days=9 daily returns; got 5"):
        horizon_return_bands(returns, 9)


def test_equity_figure_draws_history_and_the_paper_period_over_its_band() -> None:
    days = pd.date_range("2020-01-01", periods=300, freq="D", tz="UTC")
    rng = np.random.default_rng(0)
    equity = pd.Series(100_000 * np.cumprod(1 + rng.normal(0.0005, 0.01, len(days))), index=days)
    paper = pd.Series(100_000 * np.cumprod(1 + rng.normal(0.0, 0.01, 31)))
    layout = equity_bands_figure(equity, paper, title="MeanReversion")
    assert len(layout) == 2
    paper_panel = layout[1]
    labels = [element.label for element in paper_panel]
    assert labels == ["backtest 5-95%", "backtest 25-75%", "backtest median", "paper"]
    band = paper_panel.get(0).data
    assert len(band) == 31 and band.iloc[0, 1] == band.iloc[0, 2] == 1.0  # day 0: every outcome is 1.0
    assert len(equity_bands_figure(equity)) == 1  # no paper yet: the history alone
    with pytest.raises(DataError, match="backtest equity curve is empty"):
        equity_bands_figure(equity.iloc[:0])


def test_metric_bands_colour_the_paper_value_by_its_check_and_skip_metrics_without_a_band() -> None:
    bands = pd.DataFrame({"metric": ["return", "n_trades", "win_rate"], "p05": [-0.05, 10, np.nan],
                          "p25": [-0.01, 14, np.nan], "p50": [0.01, 18, np.nan], "p75": [0.03, 22, np.nan],
                          "p95": [0.06, 27, np.nan]})
    checks = pd.DataFrame({"metric": ["return", "n_trades"], "value": [0.02, 40.0], "threshold": [-0.07, 31.0],
                           "side": ["low", "two-sided"], "passed": [True, False]})
    layout = metric_bands_figure(bands, checks=checks)
    assert len(layout) == 2
    n_trades = layout[1]
    point = [element for element in n_trades if isinstance(element, hv.Scatter)][0]
    assert point.data.iloc[0, 0] == 40.0 and point.opts.get().kwargs["color"] == "#d62728"
    # the gate's checks frame alone: its bootstrap band, and both thresholds of a two-sided check
    gate = checks.assign(band_p05=[-0.05, 10.0], band_p50=[0.01, 18.0], band_p95=[0.06, 27.0],
                         fail_below=[-0.07, 5.0], fail_above=[np.nan, 31.0])
    n_trades = metric_bands_figure(gate, checks=gate)[1]
    ticks = [element.data.iloc[0, 0] for element in n_trades if element.label == "threshold"]
    assert ticks == [5.0, 31.0]
    with pytest.raises(DataError, match=r"needs band columns p05 and p95; missing \['p95'\]"):
        metric_bands_figure(bands.drop(columns="p95"))


def test_cost_figure_needs_predicted_and_realised_costs() -> None:
    fills = pd.DataFrame({"predicted_cost_bps": [1.0, 2.0, 3.0], "cost_bps": [1.5, 1.0, 4.0]})
    overlay = cost_figure({"paper": fills})
    assert [element.label for element in overlay] == ["realised = predicted", "paper (3 fills)"]
    with pytest.raises(DataError, match="the paper fills lack \\['cost_bps'\\]"):
        cost_figure({"paper": fills.drop(columns="cost_bps")})
