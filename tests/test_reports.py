"""Report notebooks run for real with papermill and render to HTML (tradebook.reports, `tradebook report`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

import tradebook as tb
from tradebook.cli import main
from tradebook.data.feeds import ReplayFeed
from tradebook.errors import ReportError
from tradebook.reports import known_reports, parse_value, report_parameters, run_report
from tradebook.store import Store

KERNEL = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}


def _write(folder: Path, name: str, *cells: str) -> None:
    """A report notebook: a markdown title, a parameters cell, then ``cells``."""
    nb = new_notebook(metadata=KERNEL, cells=[
        new_markdown_cell(f"# {name}"),
        new_code_cell('store_path = None\nlabel = "default"\nrepeat = 1', metadata={"tags": ["parameters"]}),
        *(new_code_cell(source) for source in cells),
    ])
    nbformat.write(nb, folder / f"{name}.ipynb")


@pytest.fixture
def reports_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "reports"
    folder.mkdir()
    _write(folder, "fine", 'print("label is " + label * repeat)')
    _write(folder, "broken", 'text = "before"', '\n# a comment first\nraise ValueError("boom: " + label)',
           'print("never reached")')
    return folder


def test_a_report_runs_with_its_parameters_and_renders_html(reports_dir: Path, tmp_path: Path) -> None:
    result = run_report("fine", {"label": "xy", "repeat": 3}, store_path=tmp_path / "s.duckdb",
                        output_dir=tmp_path / "out", reports_dir=reports_dir)
    assert result.html_path == tmp_path / "out" / "fine.html" and result.html_path.is_file()
    assert result.notebook_path.is_file()
    assert "label is xyxyxy" in result.html_path.read_text(encoding="utf-8")
    # the store is handed to the notebook as its store_path parameter, absolute
    assert result.parameters["store_path"] == str((tmp_path / "s.duckdb").resolve())


def test_the_report_kernel_talks_over_local_sockets_not_plain_tcp(reports_dir: Path, tmp_path: Path,
                                                                  capfd) -> None:
    _write(reports_dir, "transport", "from ipykernel.kernelapp import IPKernelApp\n"
                                     "print('transport is ' + IPKernelApp.instance().transport)")
    result = run_report("transport", store_path=tmp_path / "s.duckdb", output_dir=tmp_path / "out",
                        reports_dir=reports_dir)
    assert "transport is ipc" in result.html_path.read_text(encoding="utf-8")
    assert "running over TCP" not in capfd.readouterr().err  # ipykernel's plain-text warning, printed before
    assert not list(reports_dir.glob("*ipc*")) and not list((tmp_path / "out").glob("*ipc*"))


def test_default_output_goes_next_to_the_store(reports_dir: Path, tmp_path: Path) -> None:
    result = run_report("fine", store_path=tmp_path / "s.duckdb", reports_dir=reports_dir)
    assert result.output_dir.parent == tmp_path / "s.duckdb.reports"
    assert result.output_dir.name.startswith("fine-")


def test_a_failing_cell_is_named_with_its_first_line_and_the_error(reports_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ReportError) as caught:
        run_report("broken", {"label": "x1"}, store_path=tmp_path / "s.duckdb", output_dir=tmp_path / "out",
                   reports_dir=reports_dir)
    message = str(caught.value)
    assert "report 'broken' failed in cell 4 (`# a comment first`)" in message
    assert "ValueError: boom: x1" in message
    # the executed notebook stays for a person to read, with the traceback in the failing cell
    assert (tmp_path / "out" / "broken.ipynb").is_file()


def test_a_cell_that_hangs_stops_the_report_at_the_timeout(reports_dir: Path, tmp_path: Path) -> None:
    _write(reports_dir, "hangs", "import time\ntime.sleep(60)")
    with pytest.raises(ReportError, match=r"report 'hangs': a cell ran longer than 2 s"):
        run_report("hangs", store_path=tmp_path / "s.duckdb", output_dir=tmp_path / "out", timeout=2,
                   reports_dir=reports_dir)


def test_an_unknown_report_or_parameter_lists_what_exists(reports_dir: Path) -> None:
    assert known_reports(reports_dir) == ["broken", "fine"]
    with pytest.raises(ReportError, match=r"unknown report 'nope'; known reports: broken, fine \(notebooks in "):
        run_report("nope", reports_dir=reports_dir)
    with pytest.raises(ReportError, match=r"report 'fine' has no parameter 'colour'; it takes: store_path"):
        run_report("fine", {"colour": "red"}, reports_dir=reports_dir)


def test_the_bundled_reports_declare_a_store_path() -> None:
    assert {"promotion", "session", "tca"} <= set(known_reports())
    for name in ("promotion", "session", "tca"):
        assert "store_path" in report_parameters(name)


def test_command_line_values_are_typed_as_papermill_does() -> None:
    assert [parse_value(v) for v in ("True", "None", "3", "2.5", "MeanReversion")] == [True, None, 3, 2.5,
                                                                                       "MeanReversion"]


def test_the_report_command_names_the_failing_cell_and_exits_non_zero(tmp_path: Path, capsys) -> None:
    path = tmp_path / "empty.duckdb"
    Store(path).close()
    assert main(["report", "session", "--store", str(path), "--output-dir", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "tradebook report: error: report 'session' failed in cell" in error
    assert "`store = tb.open_store(store_path, read_only=True)`" in error
    assert "holds no orders of any run" in error
    assert main(["report", "nope", "--store", str(path)]) == 2
    assert "known reports: " in capsys.readouterr().err


@pytest.mark.slow
def test_the_session_report_of_a_paper_run_prints_its_html_path(calibrated_btc_store: Store, tmp_path: Path,
                                                                 capsys) -> None:
    btc = "BTCUSDT.BINANCE"
    store = calibrated_btc_store
    feed = ReplayFeed({btc: store.quotes(btc)}, {btc: store.trades(btc)}, speed=None)
    session = tb.Session(store, calibrations=[btc], feed=feed, run="report-test").start()
    session.wait_until(tb.to_ns("2024-08-08T23:56:00Z"), pause=True)
    session.submit(tb.Signal("demo", "sig-1", btc, tb.Side.BUY, ts_ns=session.now_ns, strength=0.95,
                             win_rate=0.55, avg_win=0.012, avg_loss=0.008))
    session.resume()
    session.wait(timeout=120)
    session.stop()
    # each fill priced against the mid of the last quote at or before it; a buy paying above the mid costs > 0
    from tradebook.run_summary import pick_run, run_days, run_fills

    assert pick_run(store) == "report-test"
    fills = run_fills(store, "report-test")
    quotes = store.quotes(btc)
    assert len(fills) >= 1
    for fill in fills.itertuples():
        before = quotes[quotes["ts_ns"] <= fill.ts_event].iloc[-1]
        mid = (before["bid_px"] + before["ask_px"]) / 2
        assert fill.mid == pytest.approx(mid)
        assert fill.cost_bps == pytest.approx((1 if fill.side == "buy" else -1) * (fill.price - mid) / mid * 1e4)
    assert run_days(fills)["fills"].sum() == len(fills)
    with pytest.raises(ReportError, match="no orders of run 'nope' in .*; runs with orders: report-test"):
        pick_run(store, "nope")
    path = store.path
    store.close()

    out = tmp_path / "out"
    assert main(["report", "session", "--store", str(path), "-p", "run", "report-test",
                 "--output-dir", str(out)]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == str(out / "session.html")
    page = (out / "session.html").read_text(encoding="utf-8")
    assert "run report-test: 1 orders, " in page and "cost of each fill against the mid" in page


@pytest.fixture(scope="module")
def promoted_store(tmp_path_factory) -> Path:
    """A store where MeanReversion was backtested with calibrated costs and paper-traded over Feb-Mar 2021."""
    from tradebook.data import BUNDLED_FILES, load_bundled
    from tradebook.research.backtest import backtest
    from tradebook.research.costs import CostModel
    from tradebook.research.examples import MeanReversion
    from tradebook.research.runner import paper_replay
    from tradebook.sim.fidelity import run_calibration

    equities = ("SPY.ARCX", "QQQ.XNAS", "IWM.ARCX", "AAPL.XNAS", "IBM.XNYS", "BAC.XNYS")
    path = tmp_path_factory.mktemp("promotion") / "store.duckdb"
    with Store(path) as store:
        for entry in BUNDLED_FILES:
            if (entry.path.startswith("bars/daily/") and entry.instrument_id in equities) or \
                    entry.path.startswith("ticks/equities/algoseek_IBM_20131007"):
                store.ingest(load_bundled(Path(entry.path).name))
        model = run_calibration(store, ["IBM.XNYS"])[0].calibration_id
        costs = CostModel.from_store(store, {i: model for i in equities})
        bars = tb.Bars.from_store(store, equities, start="2015-01-01T00:00:00Z", end="2021-03-31T23:59:59Z")
        strategy = MeanReversion(instruments=equities, window=120)
        researched = backtest(strategy, bars.until(tb.to_ns("2021-01-29T23:59:59Z")), costs=costs)
        researched.save(store)
        paper_replay(store, strategy, bars, start="2021-02-01T00:00:00Z", end="2021-03-31T23:59:59Z", costs=costs,
                     backtest=researched, run="report-paper")
    return path


@pytest.mark.slow
def test_the_promotion_report_renders_the_decision_and_each_metric_against_its_band(promoted_store: Path,
                                                                                      tmp_path: Path,
                                                                                      capsys) -> None:
    from playwright.sync_api import sync_playwright

    from test_notebooks_browser import CHROMIUM, CHROMIUM_ARGS, _problems, _render  # tests/ is on the path

    out = tmp_path / "out"
    assert main(["report", "promotion", "--store", str(promoted_store), "-p", "strategy", "mean_reversion",
                 "-p", "error_rate_paths", "100", "--output-dir", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out / "promotion.html")
    with Store(promoted_store, read_only=True) as store:
        stored = store.query("SELECT decision, summary FROM promotion_decisions WHERE strategy = 'mean_reversion'")
    assert len(stored) == 1  # the report's review is stored with its evidence
    page = (out / "promotion.html").read_text(encoding="utf-8")
    assert stored["summary"].iloc[0].split(":")[0] in page
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            figures, blocked, coloured, errors = _render(chromium, out / "promotion.html")
        finally:
            chromium.close()
    assert _problems(figures, blocked, coloured, errors) == []
    titles = [figure["title"] for figure in figures]
    assert "mean_reversion paper equity against the backtest's 42-day outcomes" in titles
    for metric in ("return", "sharpe", "max_drawdown", "n_trades", "cost_bps", "cost_residual_bps"):
        assert any(title.startswith(f"{metric} (bad side: ") for title in titles), (metric, titles)


def test_a_promotion_report_for_a_strategy_without_a_backtest_names_what_is_missing(promoted_store: Path,
                                                                                    tmp_path: Path,
                                                                                    capsys) -> None:
    assert main(["report", "promotion", "--store", str(promoted_store), "-p", "strategy", "never_traded",
                 "--output-dir", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "failed in cell 4 (`store = tb.open_store(store_path)`)" in error
    assert "PromotionError: no backtest of 'never_traded' in the store" in error


def test_the_promotion_evidence_judges_the_strategys_latest_run_by_default(promoted_store: Path) -> None:
    from tradebook.promotion_summary import latest_account

    with Store(promoted_store, read_only=True) as store:
        assert latest_account(store, "mean_reversion") == "report-paper"
        assert latest_account(store, "never_traded") is None


@pytest.mark.slow
def test_the_tca_report_shows_the_days_costs_and_the_model_error_before_and_after(miscalibrated_btc_run: Path,
                                                                                 tmp_path: Path, capsys) -> None:
    from tradebook.tca import update_tca
    from tradebook.tca.feedback import calibrate_from_fills

    path = tmp_path / "store.duckdb"
    shutil.copy(miscalibrated_btc_run, path)
    with Store(path) as store:
        correction = calibrate_from_fills(store, "BTCUSDT.BINANCE", account_id="miscalibrated")
        update_tca(store)
        day_fills = store.query("SELECT count(*) AS n FROM tca_fills WHERE ts_event >= ?",
                                [tb.to_ns("2024-08-09T00:00:00Z")])["n"].iloc[0]
    out = tmp_path / "out"
    assert main(["report", "tca", "--store", str(path), "-p", "day", "2024-08-09", "--output-dir", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out / "tca.html")
    page = (out / "tca.html").read_text(encoding="utf-8")
    assert f"2024-08-09 (UTC): {day_fills} fills of " in page and day_fills > 0
    for section in ("Cost by instrument", "Cost by time of day", "Modelled against realised", "Markouts and latency",
                    "Alerts of the day", "The fill model corrected from fills"):
        assert section in page, section
    before, after = correction.error("held out")
    assert correction.record.calibration_id in page and f"{before:.6f}"[:6] in page and f"{after:.6f}"[:6] in page
