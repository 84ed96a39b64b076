"""What a notebook shows: short reprs, rounded displays of exact values, figures that read, quiet progress."""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import tradebook as tb
from tradebook.errors import ConfigError, DataError, ExportError
from tradebook.figures import downsample_minmax, equity_figure, quotes_figure
from tradebook.model.formatting import format_decimal, money_places, price_places, quantity_places
from tradebook.model.instruments import Side
from tradebook.model.orders import Fill, Order, OrderIntent, OrderStatus, OrderType, TimeInForce
from tradebook.notebook import export_html
from tradebook.progress import Bar, progress_enabled, track
from tradebook.session import Decision
from tradebook.sim.plots import fidelity_layout
from tradebook.views import ReadableFrame, SessionStatus, readable, rounded_for_display

BTC = "BTCUSDT.BINANCE"
AUG_9 = 1723161600000000000  # 2024-08-09T00:00:00Z


def intent(**changes) -> OrderIntent:
    fields = dict(intent_id="s-1", strategy_id="ma", account_id="acct", instrument_id=BTC, side=Side.BUY,
                  quantity=Decimal("0.01"), order_type=OrderType.LIMIT, time_in_force=TimeInForce.GTC, ts_ns=AUG_9,
                  limit_price=Decimal("61000"))
    fields.update(changes)
    return OrderIntent(**fields)


# -- reprs -----------------------------------------------------------------------------------
def test_an_order_prints_as_one_short_line_rounded_to_its_instrument() -> None:
    order = Order(intent(), status=OrderStatus.FILLED, filled_qty=Decimal("0.01"),
                  avg_price=Decimal("60999.5") / Decimal(1))
    text = repr(order)
    assert text == f"<Order {order.client_order_id[:8]}.. BUY 0.01 {BTC} LIMIT 61000.00 FILLED 0.01 @ 60999.50>"
    working = Order(intent(order_type=OrderType.MARKET, limit_price=None, side=Side.SELL, quantity=Decimal("0.25")))
    assert repr(working).endswith(f"SELL 0.25 {BTC} MARKET PENDING>")
    rejected = Order(intent(), status=OrderStatus.REJECTED, reason="risk price_collar: limit 61000 outside the collar")
    assert repr(rejected).endswith("REJECTED (risk price_collar: limit 61000 outside the collar)>")
    assert "\n" not in text and len(text) < 120


def test_an_average_price_with_28_digits_prints_at_the_tick() -> None:
    avg = (Decimal("61000.01") + Decimal("61000.02") + Decimal("61000.02")) / 3  # 61000.01666...: 28 digits
    order = Order(intent(quantity=Decimal("0.03")), status=OrderStatus.FILLED, filled_qty=Decimal("0.03"),
                  avg_price=avg)
    assert "0.03 @ 61000.02>" in repr(order)
    assert order.avg_price == avg  # exact inside


def test_a_fill_prints_its_fee_small_but_readable() -> None:
    fill = Fill("f-1", "tb" + "0" * 30, BTC, Side.BUY, Decimal("0.01"), Decimal("60999.5"), Decimal("0.0060999500"),
                "maker", AUG_9, AUG_9)
    assert repr(fill) == f"<Fill f-1 tb000000.. BUY 0.01 {BTC} @ 60999.50 fee 0.0061 maker 2024-08-09T00:00:00Z>"


def test_a_decision_says_what_became_of_its_signal_in_one_line() -> None:
    decision = Decision(AUG_9, "ma", "buy-1", BTC, "sent", "router market: strength 0.95 > 0.9", ("tb" + "a" * 30,),
                        code="routed")
    assert repr(decision) == f"<Decision ma/buy-1 {BTC} sent [routed] -> tbaaaaaa..: router market: strength 0.95 > 0.9>"


# -- exact inside, rounded when shown --------------------------------------------------------
def test_places_follow_the_instrument() -> None:
    assert (price_places(BTC), quantity_places(BTC), money_places(BTC)) == (2, 5, 2)
    assert price_places("EURUSD.DUKASCOPY") == 5 and money_places("EURUSD.DUKASCOPY") == 5
    assert price_places("SPY.ARCX") == 4  # its tick schedule goes to $0.0001 below $1
    assert price_places("NOPE.XNAS") is None and money_places("NOPE.XNAS") == 2
    assert format_decimal(Decimal("99998.123456"), 2, thousands=True) == "99,998.12"
    assert format_decimal(Decimal("0.05000"), 5, trim=True) == "0.05"
    assert format_decimal(Decimal("2.50"), None) == "2.5" and format_decimal(None, 2) == "-"


def test_status_is_a_mapping_of_exact_values_shown_rounded() -> None:
    realised = Decimal(1) / Decimal(3) - Decimal("12.74")
    status = SessionStatus({"state": "running", "cash": Decimal("99987.2581234"), "realised_pnl": realised,
                            "orders": 4, "session_time": None}, BTC)
    assert status["state"] == "running" and status["realised_pnl"] == realised  # dict access, exact
    assert dict(status) == {"state": "running", "cash": Decimal("99987.2581234"), "realised_pnl": realised,
                            "orders": 4, "session_time": None}
    assert status == dict(status) and len(status) == 5 and "cash" in status
    assert repr(status) == ("SessionStatus(state=running, cash=99,987.26, realised_pnl=-12.41, orders=4, "
                            "session_time=-)")
    html = status._repr_html_()
    assert "99,987.26" in html and "-12.41" in html and "3333" not in html and html.count("<tr>") == 5


def test_a_readable_frame_keeps_every_digit_and_shows_the_instrument_precision() -> None:
    realised = Decimal(1) / Decimal(3)
    frame = readable(pd.DataFrame({"instrument_id": [BTC, "EURUSD.DUKASCOPY"],
                                   "quantity": [Decimal("0.05000"), Decimal("1000")],
                                   "avg_price": [Decimal("61735.987654"), Decimal("1.0812345")],
                                   "realised_pnl": [realised, -realised], "fees": [Decimal("3.086799"), Decimal(0)],
                                   "status": ["filled", "filled"]}))
    assert isinstance(frame, ReadableFrame) and frame["realised_pnl"].iloc[0] == realised
    shown = rounded_for_display(frame)
    assert shown.to_dict("list") == {"instrument_id": [BTC, "EURUSD.DUKASCOPY"], "quantity": ["0.05", "1000"],
                                     "avg_price": ["61735.99", "1.08123"],
                                     "realised_pnl": ["0.33", "-0.33333"], "fees": ["3.0868", "0.0000000"],
                                     "status": ["filled", "filled"]}
    assert "0.333333" not in repr(frame) and "0.333333" not in frame._repr_html_()
    # a column selection keeps the display; without the instrument column it falls back to the session's instrument
    picked = readable(frame, BTC)[["avg_price", "realised_pnl"]]
    assert isinstance(picked, ReadableFrame) and "61735.99" in repr(picked)
    assert picked.exact()["realised_pnl"].iloc[0] == realised


# -- tab completion and the light import -----------------------------------------------------
def test_tab_completion_lists_the_lazy_public_names() -> None:
    names = dir(tb)
    for name in ("Session", "open_store", "Signal", "Store", "load_config", "get_instrument", "to_ns"):
        assert name in names
    assert tb.Session.__name__ == "Session"


def test_dir_does_not_import_the_heavy_modules() -> None:
    code = ("import sys, tradebook as tb; before = set(sys.modules); names = dir(tb); "
            "print(sorted(set(sys.modules) - before), 'Session' in names)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[] True"  # listing names imports nothing


# -- progress ---------------------------------------------------------------------------------
def test_progress_is_quiet_in_tests_and_pipes_and_follows_the_switches(monkeypatch, capsys) -> None:
    assert progress_enabled() is False  # under pytest: nobody watches
    assert progress_enabled(True) is True and progress_enabled(False) is False
    assert list(track(range(5), total=5, desc="x")) == [0, 1, 2, 3, 4]
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("TRADEBOOK_PROGRESS", "1")
    assert progress_enabled() is True
    assert list(track(range(3), total=3, desc="shown")) == [0, 1, 2]
    assert "shown" in capsys.readouterr().err  # the bar went to stderr
    with Bar(total=10, desc="rows") as bar:
        bar.update(10)
        assert bar.enabled
    monkeypatch.setenv("TRADEBOOK_PROGRESS", "maybe")
    with pytest.raises(ConfigError, match="TRADEBOOK_PROGRESS='maybe'; expected 0 or 1"):
        progress_enabled()
    with pytest.raises(ConfigError, match="progress is 'yes'"):
        progress_enabled("yes")  # type: ignore[arg-type]


def test_progress_is_off_in_a_pipe_without_pytest() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_CURRENT_TEST", "CI", "TRADEBOOK_PROGRESS")}
    code = "from tradebook.progress import progress_enabled; print(progress_enabled())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert out.stdout.strip() == "False", out.stderr  # stderr is a pipe here


# -- figures ----------------------------------------------------------------------------------
def test_downsampling_keeps_every_extreme_and_few_points() -> None:
    x = np.arange(73_000, dtype=np.int64) * 1_000_000
    y = np.sin(np.arange(73_000) / 500.0)
    y[12_345] = 9.0  # a spike
    y[54_321] = -9.0
    xs, ys = downsample_minmax(x, y, max_points=2_000)
    assert len(xs) <= 2_000 and ys.max() == 9.0 and ys.min() == -9.0
    assert np.all(np.diff(xs) > 0)  # still in time order, no duplicates
    small_x, small_y = downsample_minmax(x[:100], y[:100])
    assert np.array_equal(small_x, x[:100]) and np.array_equal(small_y, y[:100])
    with pytest.raises(DataError, match="sorted ascending"):
        downsample_minmax(x[::-1], y)
    with pytest.raises(DataError, match="two 1-d arrays of one length"):
        downsample_minmax(x, y[:-1])


def test_quotes_figure_draws_each_recording_on_its_own_axis(store, bundled, bundled_entries) -> None:
    import holoviews as hv
    from bokeh.models import Legend

    for entry in bundled_entries.values():
        if entry.instrument_id == BTC and str(entry.kind) == "quotes":
            store.ingest(bundled(Path(entry.path).name))
    layout = quotes_figure(store, BTC)
    panels = list(layout)
    assert len(panels) == 2  # January 2021 and August 2024: never one line between them
    plot = hv.render(layout, backend="bokeh")
    figures = _bokeh_figures(plot)
    assert len(figures) == 2
    starts = sorted(f.x_range.start for f in figures)
    assert starts[0] != starts[1] and figures[0].x_range is not figures[1].x_range
    for figure in figures:
        assert any(isinstance(item, Legend) for item in figure.right)  # legend beside the plot, not over its lines
        for renderer in figure.renderers:
            assert 0 < len(renderer.data_source.data["price"]) <= 2_000
    with pytest.raises(DataError, match="holds no quotes for ESU4.GLBX"):
        quotes_figure(store, "ESU4.GLBX")


def test_spread_profiles_of_instruments_in_different_hours_keep_their_own_hours() -> None:
    import holoviews as hv

    from tradebook.sim.fidelity import InstrumentFidelity

    def profile(hours: list[str], spread: float) -> pd.DataFrame:
        return pd.DataFrame({"bucket": range(len(hours)), "bucket_start_utc": hours, "regime": 0,
                             "regime_name": "calm", "spread_bps_q50": spread})

    ibm = InstrumentFidelity("IBM.XNYS", (0, 1), (1, 2), None, tables={"spread_profile": profile(
        ["13:30", "14:00", "14:30", "15:00"], 2.0)})
    btc = InstrumentFidelity(BTC, (0, 1), (1, 2), None, tables={"spread_profile": profile(["23:30"], 0.0016)})
    figures = {f.title.text.split(":")[0]: f for f in _bokeh_figures(hv.render(fidelity_layout([ibm, btc]),
                                                                              backend="bokeh"))}
    assert sorted(figures) == [BTC, "IBM.XNYS"]
    ibm_axis, btc_axis = figures["IBM.XNYS"].x_range, figures[BTC].x_range
    assert ibm_axis is not btc_axis
    assert 13 <= ibm_axis.start <= 13.5 and 15 <= ibm_axis.end <= 15.5
    assert btc_axis.start < 23.5 < btc_axis.end
    assert figures[BTC].y_range.start == 0  # a near-constant spread is not magnified into noise


def test_equity_axis_reads_as_money() -> None:
    import holoviews as hv

    frame = pd.DataFrame({"ts_ns": [AUG_9, AUG_9 + 60_000_000_000], "equity": [100_000.0, 99_998.25]})
    figure = _bokeh_figures(hv.render(equity_figure(frame, "equity"), backend="bokeh"))[0]
    assert figure.yaxis[0].formatter.format == "0,0.00"
    with pytest.raises(DataError, match="the equity frame is empty"):
        equity_figure(frame.iloc[:0], "equity")


def _bokeh_figures(model) -> list:
    from bokeh.models import Plot

    return [model] if isinstance(model, Plot) else list(model.select({"type": Plot}))


# -- export -----------------------------------------------------------------------------------
def test_export_names_a_missing_or_damaged_notebook(tmp_path) -> None:
    with pytest.raises(ExportError, match="no notebook at .*missing.ipynb"):
        export_html(tmp_path / "missing.ipynb", tmp_path / "out")
    broken = tmp_path / "broken.ipynb"
    broken.write_text("{not json", encoding="utf-8")
    with pytest.raises(ExportError, match="broken.ipynb is not a readable notebook"):
        export_html(broken, tmp_path / "out")
    assert not (tmp_path / "out" / "broken.html").exists()



# -- a real session, as notebook 03 shows it ---------------------------------------------------
@pytest.fixture(scope="module")
def calibrated_store_path(tmp_path_factory) -> Path:
    from tradebook.data import load_bundled
    from tradebook.sim.fidelity import run_calibration
    from tradebook.store import Store

    path = tmp_path_factory.mktemp("display") / "store.duckdb"
    with Store(path) as store:
        for kind in ("l1_quotes", "trades"):
            store.ingest(load_bundled(f"binance_spot_btcusdt_20240808T2354-20240809T0005_{kind}.csv.gz"))
        run_calibration(store, [BTC])
    return path


def test_a_session_shows_its_status_orders_and_replay_progress_readably(calibrated_store_path, capsys) -> None:
    from tradebook.data.feeds import ReplayFeed
    from tradebook.store import Store
    from tradebook.strategies import MovingAverageCross

    with Store(calibrated_store_path) as store:
        window = {"start_ns": tb.to_ns("2024-08-08T23:54:14Z"), "end_ns": tb.to_ns("2024-08-08T23:59:00Z")}
        feed = ReplayFeed({BTC: store.quotes(BTC, **window)}, {BTC: store.trades(BTC, **window)}, speed=None)
        session = tb.Session(store, calibrations=[BTC], feed=feed, run="display",
                             strategy=MovingAverageCross("ma-display", BTC, Decimal("0.05")))
        try:
            session.start()
            assert session.wait(timeout=120, progress=True) == "finished"
            assert "replay" in capsys.readouterr().err  # the bar of replayed seconds, on stderr outside a notebook
            status = session.status()
            assert isinstance(status, SessionStatus) and status["state"] == "finished"
            assert isinstance(status["cash"], Decimal) and status["fills"] > 0
            text = repr(session)
            assert text.startswith(f"<Session paper finished {BTC} account display") and "\n" not in text
            assert "session status" in session._repr_html_()
            orders = session.orders()
            assert isinstance(orders, ReadableFrame) and len(orders)
            filled = orders[orders["status"] == "filled"].iloc[0]
            shown = rounded_for_display(orders[["avg_price", "fees"]], BTC).loc[filled.name]
            assert shown["avg_price"] == format_decimal(filled["avg_price"], 2)  # at the tick: 2 places
            positions = session.positions()
            realised = positions["realised_pnl"].iloc[0]
            assert len(positions) == 1 and realised == session.portfolio.realised_pnl  # exact in the frame
            html = positions._repr_html_()
            assert format_decimal(realised, 2) in html and str(realised) not in html
        finally:
            session.stop()
