"""The dashboard's view functions and the app that composes them, without a server.

Views get the frames a real source returns (a running paper session's, through
:class:`SessionSource`; a closed store's, through :class:`StoreSource`) or, for the TCA
charts, frames with the columns of ``tca_fills``/``tca_orders`` whose aggregates are
worked out by hand. The app's controls are clicked through its widgets.
"""

from __future__ import annotations

from decimal import Decimal

import holoviews as hv
import pandas as pd
import panel as pn
import pytest

from tradebook.monitor import views
from tradebook.monitor.app import CONTROLS, READ_ONLY_REASON, MonitorApp
from tradebook.model.instruments import Side
from tradebook.model.orders import Signal
from tradebook.monitor.source import SessionSource, StoreSource

BTC = "BTCUSDT.BINANCE"
ETH = "ETHUSDT.BINANCE"
T0 = 1_723_161_000_000_000_000  # 2024-08-08T23:50:00Z
SECOND = 1_000_000_000

FRAME_VIEWS = [views.positions_view, views.working_orders_view, views.orders_view, views.fills_view,
               views.alerts_view, views.stages_view, views.equity_view, views.cost_by_instrument_view,
               views.cost_by_time_of_day_view, views.modelled_vs_realised_view, views.markouts_view,
               views.latency_view, views.accounts_view]


def control(name: str):
    return next(c for c in CONTROLS if c.name == name)


def tca_fills() -> pd.DataFrame:
    """Four priced fills: BTC costs 2 and 4 bps (model 1 and 3), ETH 10 bps (model 5, one fill unpriced)."""
    return pd.DataFrame({
        "instrument_id": [BTC, BTC, ETH, ETH],
        "ts_event": [T0, T0 + 3600 * SECOND, T0, T0 + 60 * SECOND],
        "realised_cost_bps": [2.0, 4.0, 10.0, None],
        "predicted_cost_bps": [1.0, 3.0, 5.0, None],
        "markout_1s_bps": [-1.0, -3.0, 0.5, None],
        "markout_10s_bps": [2.0, None, 1.0, None],
        "markout_60s_bps": [None, None, None, None],
    })


# -- nothing yet, never an exception --------------------------------------------------------------
@pytest.mark.parametrize("view", FRAME_VIEWS, ids=lambda v: v.__name__)
@pytest.mark.parametrize("frame", [None, pd.DataFrame(), pd.DataFrame({"unrelated": [1, 2]})],
                         ids=["none", "empty", "other-columns"])
def test_a_view_without_rows_says_nothing_yet(view, frame):
    pane = view(frame)
    assert isinstance(pane, pn.pane.Alert) and "tb-empty" in pane.css_classes, pane
    assert pane.object.strip(), "the empty pane says what will appear there"


def test_the_tca_charts_with_nothing_show_five_empty_panes():
    rows = views.tca_view(pd.DataFrame(), None).objects
    assert [type(p) for row in rows for p in row.objects] == [pn.pane.Alert] * 5


# -- tables from a real session ---------------------------------------------------------------------
def test_tables_show_the_sessions_rows_rounded_newest_first(running_session):
    source = SessionSource(running_session)
    positions = views.positions_view(source.positions())
    assert isinstance(positions, pn.pane.DataFrame)
    [row] = positions.object.to_dict("records")
    assert row["instrument_id"] == BTC and row["quantity"] == "0.01"  # lot precision, not 0.010000000000
    assert row["realised_pnl"].count(".") == 1 and len(row["realised_pnl"].split(".")[1]) == 2  # cents

    orders = views.orders_view(source.orders(50)).object
    assert len(orders) == 2 and orders["time (UTC)"].is_monotonic_decreasing
    assert set(orders["status"]) == {"filled", "accepted"}
    working = views.working_orders_view(source.working_orders()).object
    assert working["client_order_id"].tolist() == [running_session.oms.working_orders()[0].client_order_id]
    fills = views.fills_view(source.fills(50)).object
    assert len(fills) == 1 and fills["side"].iloc[0] == "buy"


def test_a_long_table_shows_its_newest_rows_and_says_how_many_more():
    fills = pd.DataFrame({"time": pd.to_datetime([T0 + i * SECOND for i in range(60)], unit="ns", utc=True),
                          "instrument_id": BTC, "side": "buy", "quantity": Decimal("0.01"),
                          "price": Decimal("60000.00")})
    pane = views.fills_view(fills)
    table, more = pane.objects
    assert len(table.object) == views.TABLE_ROWS
    assert table.object["time (UTC)"].iloc[0] == "2024-08-08 23:50:59.000"
    assert "10 more" in more.object


def test_status_shows_state_kill_switch_and_signed_pnl_with_stable_ids():
    pane = views.status_view({"state": "running", "kill_switch": "halted", "kill_switch_reason": "halt by hand",
                              "realised_pnl": Decimal("-12.345"), "unrealised_pnl": Decimal("3.5"),
                              "orders": 1234, "fills": 7, "working_orders": 0, "updated_ns": T0}, instrument_id=BTC)
    html = pane.object
    assert '<span id="tb-state" class="tb-value tb-badge" style="background:#1a7f37">running</span>' in html
    assert 'id="tb-kill-switch"' in html and ">halted</span>" in html and "halt by hand" in html
    assert 'id="tb-realised-pnl" class="tb-value tb-down">-12.34<' in html  # half-even to cents
    assert 'id="tb-unrealised-pnl" class="tb-value tb-up">3.50<' in html
    assert 'id="tb-orders" class="tb-value ">1,234<' in html
    assert "2024-08-08 23:50:00 UTC" in html


def test_status_of_a_held_store_links_to_the_holders_dashboard():
    html = views.status_view({"state": "held", "held_by": "PID 7 `python` holds it for writing",
                              "dashboard_url": "http://127.0.0.1:5006/"}).object
    assert "PID 7" in html and '<a href="http://127.0.0.1:5006/">' in html


def test_accounts_put_paper_and_live_side_by_side():
    positions = pd.DataFrame({"account_id": ["run-a", "run-a", "U123"], "mode": ["paper", "paper", "live"],
                              "instrument_id": [BTC, ETH, BTC], "quantity": [Decimal("0.01"), Decimal("0"),
                                                                            Decimal("0.5")],
                              "market_value": [Decimal("600"), Decimal("0"), Decimal("30000")],
                              "unrealised_pnl": [Decimal("1.5"), Decimal("0"), Decimal("-20")],
                              "realised_pnl": [Decimal("0"), Decimal("4"), Decimal("0")]})
    shown = views.accounts_view(positions).object
    paper, live = shown.split('class="tb-account-card tb-accounts-paper"')[1].split('tb-accounts-live')
    assert "<b>run-a</b>: 1 open position(s), market value 600.00, unrealised +1.50, realised +4.00" in paper
    assert "<b>U123</b>: 1 open position(s), market value 30,000.00, unrealised -20.00" in live


# -- TCA charts ------------------------------------------------------------------------------------
def chart_data(pane: pn.pane.HoloViews) -> pd.DataFrame:
    element = pane.object
    if isinstance(element, hv.Overlay):
        element = element.values()[0] if not isinstance(element.values()[0], hv.Curve) else element.values()[1]
    return element.dframe()


def test_cost_by_instrument_is_the_mean_realised_and_predicted_cost():
    data = chart_data(views.cost_by_instrument_view(tca_fills()))
    means = {(r["instrument_id"], r["cost"]): r["bps"] for r in data.to_dict("records")}
    assert means == {(BTC, "realised"): 3.0, (BTC, "predicted"): 2.0, (ETH, "realised"): 10.0,
                     (ETH, "predicted"): 5.0}


def test_cost_by_time_of_day_buckets_fills_by_utc_hour():
    pane = views.cost_by_time_of_day_view(tca_fills())
    rows = {(r["instrument_id"], r["hour (UTC)"]): r["bps"] for r in pane.object.dframe().to_dict("records")}
    assert rows == {(BTC, 23): 2.0, (BTC, 0): 4.0, (ETH, 23): 10.0}


def test_markouts_average_each_horizon_and_skip_the_missing():
    pane = views.markouts_view(tca_fills())
    lines = pane.object.values()[0]  # the lines (by instrument), then the points
    rows = {(r["instrument_id"], r["horizon"]): r["bps"] for r in lines.dframe().to_dict("records")}
    assert rows == {(BTC, "1 s"): -2.0, (BTC, "10 s"): 2.0, (ETH, "1 s"): 0.5, (ETH, "10 s"): 1.0}


def test_modelled_against_realised_plots_each_priced_fill():
    pane = views.modelled_vs_realised_view(tca_fills())
    diagonal, points = pane.object.values()
    assert sorted(points.dframe()["cost_bps"]) == [2.0, 4.0, 10.0]


def test_latency_is_the_median_of_each_step():
    orders = pd.DataFrame({"signal_to_submit_ms": [1.0, 3.0, 100.0], "submit_to_ack_ms": [5.0, 7.0, None],
                           "ack_to_first_fill_ms": [None, None, None], "first_to_last_fill_ms": [0.0, 0.0, 2.0]})
    data = views.latency_view(orders).object.dframe()
    assert dict(zip(data["step"], data["ms"])) == {"signal → submit": 3.0, "submit → ack": 6.0,
                                                   "first → last fill": 0.0}


# -- the app, driven through its widgets ----------------------------------------------------------------
def test_halt_needs_a_confirmation_and_then_halts_the_session(running_session):
    app = MonitorApp(SessionSource(running_session))
    app.refresh()
    assert not app.buttons["halt"].disabled
    app.buttons["halt"].clicks += 1  # the first click only asks
    assert app.confirm_row.visible and "New orders are refused" in app.question.object
    assert str(running_session.kill_switch.mode) == "normal"
    app.cancel.clicks += 1
    assert not app.confirm_row.visible and str(running_session.kill_switch.mode) == "normal"

    app.buttons["halt"].clicks += 1
    assert app.act() == "Halt: done."  # what the confirm button runs (off the server's loop when served)
    assert str(running_session.kill_switch.mode) == "halted" and not app.confirm_row.visible
    app.refresh()
    assert 'id="tb-kill-switch"' in app.status_pane.objects[0].object
    assert ">halted</span>" in app.status_pane.objects[0].object


def test_pause_and_resume_hold_and_release_the_session(running_session):
    app = MonitorApp(SessionSource(running_session))
    app.ask(control("pause"))
    app.act()
    assert str(running_session.state) == "paused"
    app.ask(control("resume"))
    app.act()
    assert str(running_session.state) == "running"


def test_a_closed_store_disables_the_controls_and_says_why(running_session):
    path = running_session.store.path
    running_session.stop()
    running_session.store.close()
    app = MonitorApp(StoreSource(path))
    snapshot = app.refresh()
    assert snapshot.error is None
    assert all(button.disabled for button in app.buttons.values())
    assert READ_ONLY_REASON in app.control_note.object
    app.ask(control("flatten"))
    assert not app.confirm_row.visible and "tb-error" in app.message.object
    fills = app.sections["fills"].objects[0].object
    assert len(fills) == 1  # the stored run's fill, read read-only


def test_an_unchanged_section_is_not_rebuilt(running_session, btc_batches):
    app = MonitorApp(SessionSource(running_session))
    app.refresh()
    table = app.sections["positions"].objects[0]
    shown, tca = table.object, app.sections["tca"].objects[0]
    app.refresh()  # the session did not step: same frames, nothing rebuilt (charts are not redrawn for nothing)
    assert table.object is shown and app.sections["tca"].objects[0] is tca
    running_session.submit(Signal("nb", "more", BTC, Side.BUY, None, strength=0.95, quantity=Decimal("0.01")))
    running_session.step(btc_batches[6])  # the order fills: the position grows
    app.refresh()
    assert app.sections["positions"].objects[0] is table, "the page's table keeps its place, its rows change"
    assert table.object is not shown and table.object["quantity"].tolist() == ["0.02"]


def test_a_missing_value_reads_as_a_dash():
    positions = pd.DataFrame({"instrument_id": [BTC], "quantity": [Decimal("0")], "mark_price": [None],
                              "unrealised_pnl": [float("nan")], "realised_pnl": [Decimal("-247.7")]})
    [row] = views.positions_view(positions).object.to_dict("records")
    assert row["mark_price"] == "-" and row["unrealised_pnl"] == "-" and row["realised_pnl"] == "-247.70"
