"""The dashboard's pieces: pure functions from a DataFrame (or a status dict) to a Panel pane.

Presentation layer. Each view takes what a :class:`~tradebook.monitor.source.MonitorSource`
returns and builds one pane; none reads a store, a session or a clock, so each is tested
without a server (``tests/monitor/test_views.py``) and the app only composes them.

Rules every view follows:

- an empty frame (or one without the columns the view needs) gives a "nothing yet" pane
  saying what will appear there, never an exception;
- money, prices and quantities are rounded for people by :func:`tradebook.views.rounded_for_display`
  (exact Decimals stay exact in the frames); int64 UTC ns columns are shown as UTC times;
- every pane carries a stable CSS class (``tb-<name>``) for the browser test and for styling.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import holoviews as hv
import hvplot.pandas  # noqa: F401  (registers DataFrame.hvplot)
import numpy as np
import pandas as pd
import panel as pn

from tradebook.figures import LEGEND, PLAIN_TICKS, cost_figure, equity_figure
from tradebook.model.formatting import format_decimal, money_places
from tradebook.views import rounded_for_display

TABLE_ROWS = 50  # rows a table shows; the API and the store hold the rest
CHART_WIDTH = 640  # two TCA charts side by side on a laptop screen (legend and axes included)
CHART_HEIGHT = 300
MARKOUT_COLUMNS = {"1 s": "markout_1s_bps", "10 s": "markout_10s_bps", "60 s": "markout_60s_bps"}
LATENCY_COLUMNS = {"signal → submit": "signal_to_submit_ms", "submit → ack": "submit_to_ack_ms",
                   "ack → first fill": "ack_to_first_fill_ms", "first → last fill": "first_to_last_fill_ms"}
# the TCA columns the charts read (a source reads only these: the rest of a row is for the API and reports)
TCA_FILL_COLUMNS = ("instrument_id", "ts_event", "realised_cost_bps", "predicted_cost_bps", *MARKOUT_COLUMNS.values())
TCA_ORDER_COLUMNS = tuple(LATENCY_COLUMNS.values())
STATE_COLOURS = {"running": "#1a7f37", "paused": "#9a6700", "halted": "#cf222e", "reduce_only": "#9a6700",
                 "stopped": "#57606a", "finished": "#57606a", "failed": "#cf222e", "closed": "#57606a"}

# What each table shows, in order (the sources' frames lead with a tz-aware ``time``; columns a frame lacks are skipped)
POSITION_COLUMNS = ("account_id", "strategy_id", "instrument_id", "quantity", "avg_price", "mark_price",
                    "market_value", "unrealised_pnl", "realised_pnl", "fees")
ORDER_COLUMNS = ("time", "client_order_id", "strategy_id", "instrument_id", "side", "order_type", "quantity",
                 "filled_qty", "limit_price", "avg_price", "status", "reason")
FILL_COLUMNS = ("time", "client_order_id", "strategy_id", "instrument_id", "side", "quantity", "price", "fee",
                "liquidity")
ALERT_COLUMNS = ("time", "severity", "kind", "subject", "message", "repeat_count")
STAGE_COLUMNS = ("strategy", "stage", "time", "backtest_id", "reason", "decision", "codes", "summary")
# the store's names for what the session's frames (and tradebook.views' rounding) call otherwise
DISPLAY_NAMES = {"filled_quantity": "filled_qty", "avg_fill_price": "avg_price"}


# -- small pieces ----------------------------------------------------------------------------------
def nothing_yet(what: str, name: str) -> pn.pane.Alert:
    """The pane a section shows while it has no rows: what will appear there, and when."""
    return pn.pane.Alert(what, alert_type="light", css_classes=["tb-empty", f"tb-{name}"], margin=(5, 10))


def _has(frame: pd.DataFrame | None, columns: Sequence[str]) -> bool:
    return frame is not None and len(frame) > 0 and all(c in frame.columns for c in columns)


def utc_times(values: pd.Series) -> pd.Series:
    """int64 UTC ns (or datetimes) as tz-aware UTC datetimes to the microsecond, NaT where missing."""
    if pd.api.types.is_datetime64_any_dtype(values):
        times = pd.to_datetime(values, utc=True)
    else:
        times = pd.to_datetime(pd.to_numeric(values, errors="coerce").astype("Int64"), unit="ns", utc=True)
    return times.dt.floor("us")


def shown_table(frame: pd.DataFrame, columns: Sequence[str], *, newest_first: str | None = None,
                rows: int = TABLE_ROWS) -> pd.DataFrame:
    """``frame`` as a person reads it: the named columns that exist, ns columns as UTC times, numbers rounded."""
    shown = pd.DataFrame(frame).rename(columns=DISPLAY_NAMES)
    if newest_first is not None and newest_first in shown.columns:
        shown = shown.sort_values(newest_first, ascending=False, kind="stable")
    shown = shown[[c for c in columns if c in shown.columns]].head(rows)
    shown = rounded_for_display(shown.reset_index(drop=True))
    if "time" in shown.columns:
        times = utc_times(shown["time"]).dt.strftime("%Y-%m-%d %H:%M:%S.%f").str[:-3]
        shown = shown.assign(time=times).rename(columns={"time": "time (UTC)"})
    return shown.astype(object).where(shown.notna(), "-")  # a mark a closed store does not have reads "-"


def table_view(frame: pd.DataFrame | None, columns: Sequence[str], *, name: str, empty: str,
               newest_first: str | None = None, rows: int = TABLE_ROWS) -> pn.viewable.Viewable:
    """A plain HTML table of ``frame`` (the newest rows first), or the "nothing yet" pane."""
    if frame is None or frame.empty or not any(c in frame.columns for c in (*columns, *DISPLAY_NAMES)):
        return nothing_yet(empty, name)
    shown = shown_table(frame, columns, newest_first=newest_first, rows=rows)
    more = len(frame) - len(shown)
    table = pn.pane.DataFrame(shown, index=False, sizing_mode="stretch_width", css_classes=["tb-table", f"tb-{name}"],
                              max_height=420, escape=True)
    if more <= 0:
        return table
    return pn.Column(table, pn.pane.Markdown(f"… and {more:,} more (the read API and the store hold every row)",
                                             css_classes=["tb-more"]), sizing_mode="stretch_width")


def _money(value: Any, instrument_id: str | None) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    if not isinstance(value, Decimal):
        value = Decimal(str(value))
    return format_decimal(value, money_places(instrument_id), thousands=True)


def _signed_class(value: Any) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "tb-flat"
    return "tb-up" if number > 0 else "tb-down" if number < 0 else "tb-flat"


# -- the session's state ---------------------------------------------------------------------------
STATUS_CSS = """
.tb-status {display:flex; flex-wrap:wrap; gap:18px; align-items:baseline; font-family:system-ui,sans-serif;}
.tb-status .tb-cell {display:flex; flex-direction:column;}
.tb-status .tb-label {font-size:11px; color:#57606a; text-transform:uppercase; letter-spacing:.04em;}
.tb-status .tb-value {font-size:20px; font-variant-numeric:tabular-nums;}
.tb-status .tb-badge {color:white; border-radius:4px; padding:2px 8px; font-size:18px;}
.tb-status .tb-up {color:#1a7f37;} .tb-status .tb-down {color:#cf222e;}
.tb-status .tb-note {font-size:13px; color:#57606a; flex-basis:100%;}
.tb-status .tb-time {font-size:14px; padding-top:5px;}
"""


def status_view(status: Mapping[str, Any], *, instrument_id: str | None = None) -> pn.pane.HTML:
    """The session at a glance: state, kill switch, mode and account, P&L, orders and fills, last update.

    ``status`` is :meth:`MonitorSource.status` (keys it lacks show as "-"). Each value sits
    in an element with a stable id (``tb-state``, ``tb-kill-switch``, ``tb-realised-pnl``,
    ``tb-unrealised-pnl``, ``tb-equity``, ``tb-orders``, ``tb-fills``, ``tb-working``) for the browser test.
    """
    state = str(status.get("state") or "-")
    kill = str(status.get("kill_switch") or "normal")

    def cell(label: str, ident: str, value: str, css: str = "", background: str | None = None) -> str:
        style = f' style="background:{background}"' if background else ""
        return (f'<div class="tb-cell"><span class="tb-label">{html.escape(label)}</span>'
                f'<span id="{ident}" class="tb-value {css}"{style}>{html.escape(value)}</span></div>')

    def count(key: str) -> str:
        value = status.get(key)
        return "-" if value is None else f"{int(value):,}"

    def when(ns: Any) -> str:
        return utc_times(pd.Series([ns])).iloc[0].strftime("%Y-%m-%d %H:%M:%S UTC") if ns else "-"

    kill_colour = STATE_COLOURS.get(kill, "#57606a") if kill != "normal" else "#1a7f37"
    cells = [
        cell("state", "tb-state", state, "tb-badge", STATE_COLOURS.get(state, "#57606a")),
        cell("kill switch", "tb-kill-switch", kill, "tb-badge", kill_colour),
        cell("mode", "tb-mode", str(status.get("mode") or "-")),
        cell("account", "tb-account", str(status.get("account") or "-")),
        cell("equity", "tb-equity", _money(status.get("equity"), instrument_id)),
        cell("realised P&L", "tb-realised-pnl", _money(status.get("realised_pnl"), instrument_id),
             _signed_class(status.get("realised_pnl"))),
        cell("unrealised P&L", "tb-unrealised-pnl", _money(status.get("unrealised_pnl"), instrument_id),
             _signed_class(status.get("unrealised_pnl"))),
        cell("orders", "tb-orders", count("orders")),
        cell("working", "tb-working", count("working_orders")),
        cell("fills", "tb-fills", count("fills")),
        cell("last event", "tb-session-time", when(status.get("last_event_ns")), "tb-time"),
        cell("updated", "tb-updated", when(status.get("updated_ns")), "tb-time"),
    ]
    notes = [html.escape(str(status[key])) for key in ("kill_switch_reason", "held_by", "message") if status.get(key)]
    url = status.get("dashboard_url")
    if url:
        notes.append(f'its dashboard: <a href="{html.escape(str(url))}">{html.escape(str(url))}</a>')
    if notes:
        cells.append(f'<div id="tb-status-note" class="tb-note">{" · ".join(notes)}</div>')
    return pn.pane.HTML(f'<div class="tb-status">{"".join(cells)}</div>', stylesheets=[STATUS_CSS],
                        sizing_mode="stretch_width", css_classes=["tb-status-pane"])


def accounts_view(positions: pd.DataFrame | None, status: Mapping[str, Any] | None = None) -> pn.viewable.Viewable:
    """Paper and live accounts side by side: per account its mode, positions, market value and P&L.

    Accounts come from the positions' ``account_id`` (and ``mode`` when the frame has it;
    else the status's mode for the status's account, paper for the rest); the status's own
    account is shown even with no position yet.
    """
    status = status or {}
    rows: dict[str, dict[str, Any]] = {}
    if status.get("account"):
        rows[str(status["account"])] = {"mode": str(status.get("mode") or "paper"), "positions": 0,
                                        "market_value": 0.0, "unrealised_pnl": 0.0, "realised_pnl": 0.0}
    if _has(positions, ("account_id",)):
        for account, group in positions.groupby("account_id", sort=True):
            modes = group["mode"].dropna().astype(str).unique() if "mode" in group.columns else []
            row = rows.setdefault(str(account), {"mode": modes[0] if len(modes) else "paper"})
            open_rows = group[pd.to_numeric(group.get("quantity", 0), errors="coerce").fillna(0) != 0] \
                if "quantity" in group.columns else group
            row["positions"] = len(open_rows)
            for column in ("market_value", "unrealised_pnl", "realised_pnl"):
                values = pd.to_numeric(group[column], errors="coerce") if column in group.columns else pd.Series([])
                row[column] = float(values.fillna(0).sum())
    if not rows:
        return nothing_yet("No account yet: accounts appear with the session's first position.", "accounts")
    columns = []
    for mode in ("paper", "live"):  # one pane (its content swapped in place each refresh), a column per mode
        mine = {a: r for a, r in rows.items() if r["mode"] == mode}
        lines = [f"<h3>{mode.capitalize()}</h3>"]
        if not mine:
            lines.append(f"<p>no {mode} account in this session</p>")
        for account, row in mine.items():
            lines.append(f"<p><b>{html.escape(account)}</b>: {row.get('positions', 0)} open position(s), market value "
                         f"{row.get('market_value', 0):,.2f}, unrealised {row.get('unrealised_pnl', 0):+,.2f}, "
                         f"realised {row.get('realised_pnl', 0):+,.2f}</p>")
        columns.append(f'<div class="tb-account-card tb-accounts-{mode}" style="flex:1">{"".join(lines)}</div>')
    return pn.pane.HTML(f'<div style="display:flex;gap:24px">{"".join(columns)}</div>', sizing_mode="stretch_width",
                        css_classes=["tb-accounts"])


def positions_view(positions: pd.DataFrame | None) -> pn.viewable.Viewable:
    """Positions marked to market: quantity, average and mark price, market value, unrealised and realised P&L."""
    return table_view(positions, POSITION_COLUMNS, name="positions",
                      empty="No positions yet: they appear with the first fill.")


def working_orders_view(orders: pd.DataFrame | None) -> pn.viewable.Viewable:
    """Orders still working at the venue, newest first."""
    return table_view(orders, ORDER_COLUMNS, name="working-orders", newest_first="time",
                      empty="No working orders.")


def orders_view(orders: pd.DataFrame | None) -> pn.viewable.Viewable:
    """The latest orders whatever their status, newest first."""
    return table_view(orders, ORDER_COLUMNS, name="orders", newest_first="time",
                      empty="No orders yet: they appear when the strategy sends its first.")


def fills_view(fills: pd.DataFrame | None) -> pn.viewable.Viewable:
    """The latest fills, newest first."""
    return table_view(fills, FILL_COLUMNS, name="fills", newest_first="time", empty="No fills yet.")


def alerts_view(alerts: pd.DataFrame | None) -> pn.viewable.Viewable:
    """Alerts, newest first, with their severity and how often a deduplicated one repeated."""
    return table_view(alerts, ALERT_COLUMNS, name="alerts", newest_first="time",
                      empty="No alerts: slippage, cost, latency, unfilled orders, venue and P&L rules are quiet.")


def stages_view(stages: pd.DataFrame | None) -> pn.viewable.Viewable:
    """Each strategy's stage now (research, paper, live, reverted), since when, its backtest and why."""
    return table_view(stages, STAGE_COLUMNS, name="stages",
                      empty="No strategy has a stage yet: the promotion gate records one when it reviews a paper run.")


def equity_view(equity: pd.DataFrame | None, *, currency: str = "USD") -> pn.viewable.Viewable:
    """Equity over session time (one point a minute and now), from :func:`tradebook.figures.equity_figure`."""
    if not _has(equity, ("ts_ns", "equity")) or len(equity) < 2:
        return nothing_yet("No equity curve yet: it grows a point a minute of session time.", "equity")
    figure = equity_figure(equity, "Equity", currency=currency)
    return pn.pane.HoloViews(figure, css_classes=["tb-chart", "tb-equity-chart"], linked_axes=False)


# -- transaction costs ---------------------------------------------------------------------------------
def _chart(obj: hv.core.Dimensioned, name: str) -> pn.pane.HoloViews:
    """A chart of fixed size with its toolbar above the plot (beside it, the toolbar squeezed the plot)."""
    sized = obj.opts(width=CHART_WIDTH, height=CHART_HEIGHT, toolbar="above")
    return pn.pane.HoloViews(sized, css_classes=["tb-chart", f"tb-{name}"], linked_axes=False,
                             width=CHART_WIDTH, height=CHART_HEIGHT + 40)


def _bps(frame: pd.DataFrame, column: str) -> pd.Series:
    return pd.to_numeric(frame[column], errors="coerce").astype("float64")


def cost_by_instrument_view(tca_fills: pd.DataFrame | None) -> pn.viewable.Viewable:
    """Mean realised cost per instrument (bps of the mid, positive is a cost), beside the model's prediction."""
    if not _has(tca_fills, ("instrument_id", "realised_cost_bps")):
        return nothing_yet("No transaction costs yet: each fill's cost appears once TCA has priced it.",
                           "cost-by-instrument")
    data = tca_fills.assign(realised=_bps(tca_fills, "realised_cost_bps"),
                            predicted=_bps(tca_fills, "predicted_cost_bps") if "predicted_cost_bps" in tca_fills
                            else np.nan)
    table = data.groupby("instrument_id")[["realised", "predicted"]].mean().reset_index()
    long = table.melt(id_vars="instrument_id", var_name="cost", value_name="bps").dropna()
    if long.empty:
        return nothing_yet("No priced fill yet (no quote before them in the store).", "cost-by-instrument")
    chart = long.hvplot.bar(x="instrument_id", y="bps", by="cost", xlabel="", ylabel="mean cost (bps)",
                            title="Cost by instrument", width=CHART_WIDTH, height=CHART_HEIGHT, legend="right")
    # one label per instrument, realised and predicted told apart by colour (nested labels overlapped)
    return _chart(chart.opts(yformatter=PLAIN_TICKS, show_grid=True, multi_level=False), "cost-by-instrument")


def cost_by_time_of_day_view(tca_fills: pd.DataFrame | None) -> pn.viewable.Viewable:
    """Mean realised cost per UTC hour of the fill, one line per instrument."""
    if not _has(tca_fills, ("instrument_id", "realised_cost_bps", "ts_event")):
        return nothing_yet("No transaction costs by time of day yet.", "cost-by-time")
    hours = utc_times(tca_fills["ts_event"]).dt.hour
    data = pd.DataFrame({"instrument_id": tca_fills["instrument_id"].astype(str), "hour (UTC)": hours,
                         "bps": _bps(tca_fills, "realised_cost_bps")}).dropna()
    if data.empty:
        return nothing_yet("No priced fill yet.", "cost-by-time")
    table = data.groupby(["instrument_id", "hour (UTC)"])["bps"].mean().reset_index()
    chart = table.hvplot.scatter(x="hour (UTC)", y="bps", by="instrument_id", size=60, ylabel="mean cost (bps)",
                                 title="Cost by time of day", width=CHART_WIDTH, height=CHART_HEIGHT)
    return _chart(chart.opts(xlim=(-0.5, 23.5), yformatter=PLAIN_TICKS, show_grid=True, **LEGEND), "cost-by-time")


def modelled_vs_realised_view(tca_fills: pd.DataFrame | None) -> pn.viewable.Viewable:
    """Each fill's predicted cost against its realised cost (:func:`tradebook.figures.cost_figure`)."""
    if not _has(tca_fills, ("predicted_cost_bps", "realised_cost_bps")):
        return nothing_yet("No fill with both a modelled and a realised cost yet.", "modelled-vs-realised")
    fills = tca_fills.assign(cost_bps=_bps(tca_fills, "realised_cost_bps"),
                             predicted_cost_bps=_bps(tca_fills, "predicted_cost_bps"))
    if fills[["cost_bps", "predicted_cost_bps"]].dropna().empty:
        return nothing_yet("No fill with both a modelled and a realised cost yet.", "modelled-vs-realised")
    figure = cost_figure({"fills": fills}, title="Modelled against realised cost")
    return _chart(figure.opts(width=CHART_WIDTH, height=CHART_HEIGHT), "modelled-vs-realised")


def markouts_view(tca_fills: pd.DataFrame | None) -> pn.viewable.Viewable:
    """Mean markout 1 s, 10 s and 60 s after the fill per instrument (bps; negative: the price moved against us)."""
    present = {label: c for label, c in MARKOUT_COLUMNS.items() if tca_fills is not None and c in tca_fills}
    if not present or not _has(tca_fills, ("instrument_id",)):
        return nothing_yet("No markouts yet: they need the quotes 1, 10 and 60 s after each fill.", "markouts")
    rows = [(str(instrument), label, float(_bps(group, column).mean()))
            for instrument, group in tca_fills.groupby("instrument_id") for label, column in present.items()]
    data = pd.DataFrame(rows, columns=["instrument_id", "horizon", "bps"]).dropna()
    if data.empty:
        return nothing_yet("No markouts yet: the horizons are past the data's end.", "markouts")
    chart = data.hvplot.line(x="horizon", y="bps", by="instrument_id", ylabel="mean markout (bps)", xlabel="after fill",
                             title="Markouts", width=CHART_WIDTH, height=CHART_HEIGHT)
    points = data.hvplot.scatter(x="horizon", y="bps", by="instrument_id", size=50)
    return _chart((chart * points).opts(yformatter=PLAIN_TICKS, show_grid=True, **LEGEND), "markouts")


def latency_view(tca_orders: pd.DataFrame | None) -> pn.viewable.Viewable:
    """Median latency of each step of an order's life (ms): signal → submit → ack → first → last fill."""
    present = {label: c for label, c in LATENCY_COLUMNS.items() if tca_orders is not None and c in tca_orders}
    if not present or tca_orders is None or tca_orders.empty:
        return nothing_yet("No latencies yet: they appear once orders are acknowledged and filled.", "latency")
    data = pd.DataFrame({"step": list(present),
                         "ms": [float(_bps(tca_orders, c).median()) for c in present.values()]}).dropna()
    if data.empty:
        return nothing_yet("No latencies yet.", "latency")
    chart = data.hvplot.barh(x="step", y="ms", xlabel="", ylabel="median (ms)", title="Latency",
                             width=CHART_WIDTH, height=CHART_HEIGHT)
    return _chart(chart.opts(xformatter=PLAIN_TICKS, show_grid=True), "latency")


def tca_view(tca_fills: pd.DataFrame | None, tca_orders: pd.DataFrame | None) -> pn.viewable.Viewable:
    """The four TCA charts and the latency chart, two to a row."""
    charts = [cost_by_instrument_view(tca_fills), cost_by_time_of_day_view(tca_fills),
              modelled_vs_realised_view(tca_fills), markouts_view(tca_fills), latency_view(tca_orders)]
    return pn.Column(*(pn.Row(*charts[i:i + 2]) for i in range(0, len(charts), 2)), css_classes=["tb-tca"])


__all__ = [
    "accounts_view", "alerts_view", "cost_by_instrument_view", "cost_by_time_of_day_view", "equity_view",
    "fills_view", "latency_view", "markouts_view", "modelled_vs_realised_view", "nothing_yet", "orders_view",
    "positions_view", "stages_view", "status_view", "table_view", "tca_view", "working_orders_view",
]
