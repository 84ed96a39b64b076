"""Report notebooks run for real with papermill and render to HTML (tradebook.reports, `tradebook report`)."""

from __future__ import annotations

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


def test_an_unknown_report_or_parameter_lists_what_exists(reports_dir: Path) -> None:
    assert known_reports(reports_dir) == ["broken", "fine"]
    with pytest.raises(ReportError, match=r"unknown report 'nope'; known reports: broken, fine"):
        run_report("nope", reports_dir=reports_dir)
    with pytest.raises(ReportError, match=r"report 'fine' has no parameter 'colour'; it takes: store_path"):
        run_report("fine", {"colour": "red"}, reports_dir=reports_dir)


def test_the_bundled_reports_declare_a_store_path() -> None:
    assert {"promotion", "session"} <= set(known_reports())
    for name in ("promotion", "session"):
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
    path = store.path
    store.close()

    out = tmp_path / "out"
    assert main(["report", "session", "--store", str(path), "-p", "run", "report-test",
                 "--output-dir", str(out)]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == str(out / "session.html")
    page = (out / "session.html").read_text(encoding="utf-8")
    assert "run report-test: 1 orders, " in page and "cost of each fill against the mid" in page
