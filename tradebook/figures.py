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
