"""Figures for notebooks and exported reports: real data, readable axes, small enough to embed.

Presentation layer (imports holoviews; the core never imports this module). Rules every
figure here follows:

- one panel per recording or instrument, each with its own axes (two captures years
  apart are never joined by a line, and one instrument's hours never squash another's);
- legends sit outside the plotted area (``legend_position="right"``);
- a line of more than ``max_points`` points is reduced to the minimum and maximum of
  each of ``max_points // 2`` time buckets (:func:`downsample_minmax`): every spike
  stays visible and an exported notebook embeds a few thousand points, not the raw rows;
- money axes show grouped digits (``99,998.00``), never ``9.9998e+4``.
"""

from __future__ import annotations

from typing import Any

import holoviews as hv
import numpy as np
import pandas as pd
from bokeh.models import NumeralTickFormatter, PrintfTickFormatter

from tradebook.errors import DataError

MAX_POINTS = 2_000  # per line: about one point per pixel column of a wide figure, min and max of each
MONEY_TICKS = NumeralTickFormatter(format="0,0.00")
PLAIN_TICKS = PrintfTickFormatter(format="%.4g")  # 0.0015 bps, not 1.500e-3
WIDTH = 760
HEIGHT = 300
LEGEND = {"legend_position": "right", "legend_opts": {"title": None}}  # outside the plot, never over its lines


def downsample_minmax(x: np.ndarray, y: np.ndarray, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` reduced to at most ``max_points``: the first minimum and maximum of y in each equal-width x bucket.

    ``x`` must be sorted (times). NaNs in ``y`` are dropped. Below ``max_points`` the
    input comes back unchanged (as arrays).
    """
    x = np.asarray(x)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise DataError(f"downsample_minmax needs two 1-d arrays of one length, got shapes {x.shape} and {y.shape}")
    if max_points < 2:
        raise DataError(f"max_points is {max_points}; expected at least 2 (a minimum and a maximum)")
    keep = ~np.isnan(y)
    x, y = x[keep], y[keep]
    if len(x) <= max_points:
        return x, y
    xs = x.astype(np.int64) if np.issubdtype(x.dtype, np.datetime64) else x.astype(np.float64)
    if np.any(np.diff(xs) < 0):
        raise DataError("downsample_minmax needs x sorted ascending (times in order)")
    buckets = max_points // 2
    span = float(xs[-1] - xs[0]) or 1.0
    bucket = np.minimum(((xs - xs[0]) / span * buckets).astype(np.int64), buckets - 1)
    frame = pd.DataFrame({"bucket": bucket, "y": y})
    grouped = frame.groupby("bucket", sort=True)["y"]
    picks = np.unique(np.concatenate([grouped.idxmin().to_numpy(), grouped.idxmax().to_numpy()]))
    return x[picks], y[picks]


def _curve(x: np.ndarray, y: np.ndarray, xlabel: str, ylabel: str, label: str, max_points: int) -> hv.Curve:
    xs, ys = downsample_minmax(x, y, max_points)
    return hv.Curve((xs, ys), xlabel, ylabel, label=label)


def quotes_figure(store: Any, instrument_id: str, *, max_points: int = MAX_POINTS) -> hv.Layout:
    """Best bid and ask of ``instrument_id``: one panel per recording in the store, each on its own time axis."""
    recordings = store.recordings(instrument_id)
    recordings = recordings[recordings["kinds"].str.split(", ").map(lambda kinds: "quotes" in kinds)]
    if recordings.empty:
        raise DataError(f"the store {store.path} holds no quotes for {instrument_id}; load some first "
                        "(tradebook demo, or store.ingest)")
    panels = []
    for recording in recordings.itertuples(index=False):
        quotes = store.quotes(instrument_id, recording=recording.recording)
        times = pd.to_datetime(quotes["ts_ns"].to_numpy(), unit="ns").to_numpy()
        lines = [_curve(times, quotes[column].to_numpy(), "time (UTC)", "price", label, max_points)
                 for column, label in (("bid_px", "bid"), ("ask_px", "ask"))]
        shown = sum(len(line) for line in lines)
        title = (f"{instrument_id} {recording.recording}: {len(quotes):,} quotes"
                 + (f" ({shown:,} drawn: min/max per bucket)" if shown < 2 * len(quotes) else ""))
        panels.append(hv.Overlay(lines).opts(title=title, width=WIDTH, height=HEIGHT, show_grid=True, **LEGEND))
    return hv.Layout(panels).opts(shared_axes=False).cols(1)


def equity_figure(frame: pd.DataFrame, title: str, *, currency: str = "USD",
                  max_points: int = MAX_POINTS) -> hv.Overlay:
    """Equity (and cash) over session time from ``Session.equity_frame()``, money ticks with grouped digits."""
    if frame.empty:
        raise DataError("the equity frame is empty: the session has not run yet (start it, or wait for it)")
    times = pd.to_datetime(frame["ts_ns"].to_numpy(), unit="ns").to_numpy()
    lines = [_curve(times, frame["equity"].to_numpy(), "session time (UTC)", currency, "equity", max_points)]
    return hv.Overlay(lines).opts(title=title, width=WIDTH, height=HEIGHT, show_grid=True,
                                  yformatter=MONEY_TICKS, **LEGEND)


# --- research, paper and promotion -------------------------------------------------------------------------

BAND_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
PASS_COLOR, FAIL_COLOR, BAND_COLOR = "#2ca02c", "#d62728", "#1f77b4"


def _utc_times(index: pd.Index) -> np.ndarray:
    """A DatetimeIndex (tz-aware or UTC-naive) as naive UTC datetime64 for bokeh's time axis."""
    times = pd.DatetimeIndex(index)
    if times.tz is not None:
        times = times.tz_convert("UTC").tz_localize(None)
    return times.to_numpy()


def horizon_return_bands(daily_returns: pd.Series, n_days: int,
                         quantiles: tuple[float, ...] = BAND_QUANTILES) -> pd.DataFrame:
    """Quantiles of the compounded return over 1..``n_days`` days, from every start day of ``daily_returns``.

    Row k (1-based) holds the quantiles of ∏(1 + r) − 1 over all windows of k consecutive
    days of the backtest (overlapping, rolling): the spread of outcomes a period of k days
    drawn from the backtest's own history had. Windows are counted in trading days, as the
    gate counts paper days. Needs at least ``n_days`` returns.
    """
    returns = pd.Series(daily_returns, dtype=np.float64).dropna().to_numpy()
    if n_days < 1 or len(returns) < n_days:
        raise DataError(f"horizon_return_bands needs at least n_days={n_days} daily returns; got {len(returns)}")
    growth = np.concatenate([[0.0], np.cumsum(np.log1p(returns))])
    rows = []
    for k in range(1, n_days + 1):
        window = np.expm1(growth[k:] - growth[:-k])
        rows.append(np.quantile(window, quantiles))
    return pd.DataFrame(rows, index=pd.RangeIndex(1, n_days + 1, name="days"),
                        columns=[f"p{round(q * 100):02d}" for q in quantiles])


def equity_bands_figure(backtest_equity: pd.Series, paper_equity: pd.Series | None = None, *,
                        backtest_daily_returns: pd.Series | None = None, title: str = "",
                        currency: str = "USD", max_points: int = MAX_POINTS) -> hv.Layout:
    """The backtest's equity curve, and the paper period's equity against the backtest's band of outcomes.

    First panel: ``backtest_equity`` (a Series on a tz-aware index) over the research history.
    Below it (when ``paper_equity`` is given, one value per paper trading day): paper equity as a
    growth of its first value, drawn over the 5–95% and 25–75% bands (and median) of the
    compounded return the backtest made over the same number of trading days
    (:func:`horizon_return_bands` of ``backtest_daily_returns``, default: the daily
    returns of ``backtest_equity``). Paper days start at day 0 (= 1.0).
    """
    if backtest_equity is None or len(backtest_equity) == 0:
        raise DataError("the backtest equity curve is empty: run a backtest first")
    history = _curve(_utc_times(backtest_equity.index), backtest_equity.to_numpy(), "time (UTC)", currency,
                     "backtest", max_points)
    panels = [hv.Overlay([history]).opts(title=f"{title} backtest equity".strip(), width=WIDTH, height=HEIGHT,
                                         show_grid=True, yformatter=MONEY_TICKS, **LEGEND)]
    if paper_equity is not None and len(paper_equity) > 0:
        returns = backtest_daily_returns if backtest_daily_returns is not None else backtest_equity.pct_change()
        days = len(paper_equity) - 1
        growth = paper_equity.to_numpy(dtype=np.float64) / float(paper_equity.iloc[0])
        x = np.arange(len(paper_equity))
        layers = []
        if days >= 1:
            bands = horizon_return_bands(returns, days)
            x_band = np.arange(0, days + 1)
            zero = pd.DataFrame([[0.0] * bands.shape[1]], columns=bands.columns)
            full = pd.concat([zero, bands], ignore_index=True) + 1.0
            layers += [
                hv.Area((x_band, full["p05"], full["p95"]), "paper trading day", ["growth", "upper"],
                        label="backtest 5-95%").opts(color=BAND_COLOR, alpha=0.15, line_alpha=0),
                hv.Area((x_band, full["p25"], full["p75"]), "paper trading day", ["growth", "upper"],
                        label="backtest 25-75%").opts(color=BAND_COLOR, alpha=0.3, line_alpha=0),
                hv.Curve((x_band, full["p50"]), "paper trading day", "growth", label="backtest median").opts(
                    color=BAND_COLOR, line_dash="dashed"),
            ]
        layers.append(hv.Curve((x, growth), "paper trading day", "growth", label="paper").opts(
            color="black", line_width=2))
        panels.append(hv.Overlay(layers).opts(
            title=f"{title} paper equity against the backtest's {days}-day outcomes".strip(), width=WIDTH,
            height=HEIGHT, show_grid=True, yformatter=PLAIN_TICKS, **LEGEND))
    return hv.Layout(panels).opts(shared_axes=False).cols(1)


def metric_bands_figure(bands: pd.DataFrame, values: pd.Series | dict | None = None, *,
                        checks: pd.DataFrame | None = None, title: str = "", cols: int = 3) -> hv.Layout:
    """Each metric against its band: one small panel per metric, its own axis.

    ``bands``: one row per metric (index or a ``metric`` column) with ``p05`` and ``p95``
    (``p25``, ``p50``, ``p75`` drawn too when present), e.g. a backtest's ranges of 30-day
    metrics. ``values``: the paper (or live) value per metric, drawn as a point. ``checks``
    (the gate's checks frame: ``metric``, ``value``, ``threshold``, ``side``, ``passed``)
    supplies values where ``values`` does not, colours each point green (passed) or red
    (failed) and draws each threshold as a red tick (both of a two-sided check, from
    ``fail_below`` and ``fail_above`` when the frame has them); the band's median is a
    white tick. The gate's checks frame alone is enough: ``metric_bands_figure(checks,
    checks=checks)`` reads its ``band_p05``..``band_p95``. Metrics with no band are skipped.
    """
    frame = bands.set_index("metric") if "metric" in bands.columns else bands
    # the gate's checks frame carries its bootstrap band as band_p05, band_p50, band_p95
    frame = frame.rename(columns={f"band_p{q}": f"p{q}" for q in ("05", "25", "50", "75", "95")})
    missing = [c for c in ("p05", "p95") if c not in frame.columns]
    if missing:
        raise DataError(f"metric_bands_figure needs band columns p05 and p95; missing {missing} "
                        f"(got {list(frame.columns)})")
    given = dict(values or {})
    check_rows = {}
    if checks is not None and len(checks):
        check_rows = {row["metric"]: row for row in checks.to_dict("records")}
    panels = []
    for metric, row in frame.iterrows():
        lo, hi = float(row["p05"]), float(row["p95"])
        if not (np.isfinite(lo) and np.isfinite(hi)):
            continue
        check = check_rows.get(metric, {})
        layers = [hv.Segments([(lo, 0, hi, 0)], ["value", "y", "value2", "y2"], label="5-95%").opts(
            color=BAND_COLOR, alpha=0.5, line_width=14)]
        if "p25" in frame.columns and "p75" in frame.columns and np.isfinite([row["p25"], row["p75"]]).all():
            layers.append(hv.Segments([(float(row["p25"]), 0, float(row["p75"]), 0)],
                                      ["value", "y", "value2", "y2"], label="25-75%").opts(
                color=BAND_COLOR, alpha=0.85, line_width=14))
        # a two-sided check fails below one threshold and above another: draw both
        if "fail_below" in check or "fail_above" in check:
            thresholds = [check.get("fail_below"), check.get("fail_above")]
        else:
            thresholds = [check.get("threshold")]
        for threshold in thresholds:
            if threshold is not None and np.isfinite(threshold):
                layers.append(hv.Segments([(float(threshold), -0.6, float(threshold), 0.6)],
                                          ["value", "y", "value2", "y2"], label="threshold").opts(
                    color=FAIL_COLOR, line_width=3))
        if "p50" in frame.columns and np.isfinite(row["p50"]):
            layers.append(hv.Segments([(float(row["p50"]), -0.3, float(row["p50"]), 0.3)],
                                      ["value", "y", "value2", "y2"], label="median").opts(
                color="white", line_width=2))
        value = given.get(metric, check.get("value"))
        if value is not None and np.isfinite(value):
            passed = check.get("passed")
            color = "black" if passed is None else (PASS_COLOR if bool(passed) else FAIL_COLOR)
            layers.append(hv.Scatter([(float(value), 0.0)], "value", "y", label="paper").opts(
                color=color, size=12, marker="diamond"))
        side = check.get("side")
        name = f"{metric} (bad side: {side})" if side else str(metric)
        # centred on the band, wide enough for every threshold and the value: the band sits mid-panel
        centre = (lo + hi) / 2
        reach = [abs(v - centre) for v in (lo, hi, value, *thresholds)
                 if v is not None and np.isfinite(v)]
        half = max(reach) * 1.1 or 1.0
        panels.append(hv.Overlay(layers).opts(title=name, width=WIDTH // cols + 60, height=140, yaxis=None,
                                              ylim=(-1, 1), xlim=(centre - half, centre + half), show_legend=False,
                                              xformatter=PLAIN_TICKS, toolbar=None))
    if not panels:
        raise DataError("metric_bands_figure: no metric has a finite band to draw")
    return hv.Layout(panels).opts(shared_axes=False, title=title).cols(cols)


def cost_figure(fills: dict[str, pd.DataFrame], *, title: str = "Predicted against realised cost") -> hv.Overlay:
    """Per fill: the fill model's predicted cost (x) against what the fill paid against the mid (y), in bps.

    ``fills`` maps a label ("backtest", "paper") to a frame with ``predicted_cost_bps`` and
    ``cost_bps``. The diagonal is where realised equals predicted: points above paid more.
    """
    layers, extent = [], []
    for label, frame in fills.items():
        missing = [c for c in ("predicted_cost_bps", "cost_bps") if c not in frame.columns]
        if missing:
            raise DataError(f"cost_figure: the {label} fills lack {missing}; expected predicted_cost_bps and cost_bps")
        data = frame[["predicted_cost_bps", "cost_bps"]].astype(np.float64).dropna()
        if len(data) > MAX_POINTS:  # a random subset keeps the page small and the cloud's shape
            data = data.sample(MAX_POINTS, random_state=0)
        if data.empty:
            continue
        extent += [data.to_numpy().min(), data.to_numpy().max()]
        layers.append(hv.Scatter(data, "predicted_cost_bps", "cost_bps", label=f"{label} ({len(frame):,} fills)")
                      .opts(size=5, alpha=0.5))
    if not layers:
        raise DataError("cost_figure: no fills with a predicted and a realised cost to draw")
    lo, hi = min(extent), max(extent)
    layers.insert(0, hv.Curve([(lo, lo), (hi, hi)], "predicted_cost_bps", "cost_bps", label="realised = predicted")
                  .opts(color="grey", line_dash="dashed"))
    return hv.Overlay(layers).opts(title=title, width=WIDTH, height=HEIGHT, show_grid=True,
                                   xlabel="predicted cost (bps of mid)", ylabel="realised cost (bps of mid)",
                                   xformatter=PLAIN_TICKS, yformatter=PLAIN_TICKS, **LEGEND)


def fill_costs_figure(fills: pd.DataFrame, *, title: str = "Cost of each fill against the mid") -> hv.Overlay:
    """Each fill's cost against the mid in bps over time, one colour per instrument (``run_summary.run_fills``)."""
    data = fills.dropna(subset=["cost_bps"])
    if data.empty:
        raise DataError("fill_costs_figure: no fill has a quote before it to price its cost against")
    layers = [hv.Scatter((_utc_times(group["time"]), group["cost_bps"].to_numpy()), "time (UTC)", "cost (bps)",
                         label=str(instrument)).opts(size=6, alpha=0.7)
              for instrument, group in data.groupby("instrument_id")]
    return hv.Overlay(layers).opts(title=title, width=WIDTH, height=HEIGHT, show_grid=True,
                                   yformatter=PLAIN_TICKS, **LEGEND)
