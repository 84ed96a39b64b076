"""Report notebooks run with papermill and rendered to HTML: ``tradebook report NAME -p key value``.

A report is a notebook in ``notebooks/reports/<name>.ipynb`` with one cell tagged
``parameters``. :func:`run_report` executes it with papermill (the given parameters
injected after that cell, ``store_path`` among them), then renders the executed notebook
to HTML with its figures (:func:`tradebook.notebook.export_html`: offline, the bokeh
JavaScript copied beside the page). Output goes to ``<store>.reports/<name>-<UTC time>/``
unless ``output_dir`` names a folder: the executed ``<name>.ipynb``, ``<name>.html`` and
``static/``.

A cell that raises stops the report with :class:`ReportError` naming the cell (its
execution number and first line) and the error; the executed notebook, with the traceback
in that cell, is kept in the output folder for a person to read. An unknown report name
or a parameter the report does not declare is refused with the known ones listed.

Presentation layer: imports papermill and nbconvert inside functions; the core never imports it.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tradebook.errors import ReportError

REPORTS_DIR = Path(__file__).resolve().parent.parent / "notebooks" / "reports"
DEFAULT_TIMEOUT_S = 900.0  # per cell: a report that hangs stops with an error instead of never returning
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class ReportResult:
    """Where a report's outputs are: the executed notebook, its HTML page and their folder."""

    name: str
    notebook_path: Path
    html_path: Path
    output_dir: Path
    parameters: Mapping[str, Any]


def known_reports(reports_dir: Path | None = None) -> list[str]:
    """The report names: one per ``<name>.ipynb`` in ``notebooks/reports/``."""
    folder = reports_dir or REPORTS_DIR
    return sorted(path.stem for path in folder.glob("*.ipynb"))


def report_notebook(name: str, reports_dir: Path | None = None) -> Path:
    """The notebook of report ``name``; an unknown name is a :class:`ReportError` listing the known ones."""
    known = known_reports(reports_dir)
    if name not in known:
        raise ReportError(f"unknown report {name!r}; known reports: {', '.join(known) or 'none'} "
                          f"(notebooks in {reports_dir or REPORTS_DIR})")
    return (reports_dir or REPORTS_DIR) / f"{name}.ipynb"


def report_parameters(name: str, reports_dir: Path | None = None) -> dict[str, Any]:
    """The parameters report ``name`` declares in its ``parameters`` cell, with their default values (as text)."""
    from papermill.inspection import inspect_notebook

    inspected = inspect_notebook(str(report_notebook(name, reports_dir)))
    return {key: value["default"] for key, value in inspected.items()}


def parse_value(text: str) -> Any:
    """A ``-p key value`` value from the command line: True/False/None, an int, a float, else the text."""
    if text in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[text]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _default_output_dir(name: str, store_path: Path) -> Path:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    return store_path.with_name(store_path.name + ".reports") / f"{name}-{stamp}"


def _failed_cell(error: Any) -> str:
    """'cell 7 (`decision = review(...)`)': the failing cell's execution number and its first line."""
    lines = [line for line in str(error.source or "").splitlines() if line.strip()]
    first = lines[0].strip() if lines else "(empty)"
    if len(first) > 100:
        first = first[:97] + "..."
    number = error.exec_count if error.exec_count is not None else f"#{error.cell_index}"
    return f"cell {number} (`{first}`)"


def run_report(name: str, parameters: Mapping[str, Any] | None = None, *, output_dir: str | Path | None = None,
               store_path: str | Path | None = None, timeout: float = DEFAULT_TIMEOUT_S,
               reports_dir: Path | None = None, progress: bool | None = None) -> ReportResult:
    """Execute report ``name`` with ``parameters`` and render it to HTML; returns where both are.

    ``store_path`` (default: the workspace store, :func:`tradebook.store.default_store_path`)
    is handed to the notebook as its ``store_path`` parameter unless ``parameters`` names
    one, and places the default output folder ``<store>.reports/<name>-<UTC time>/``.
    ``timeout`` bounds each cell, in seconds. Raises :class:`ReportError` for an unknown
    report, a parameter it does not declare, or a cell that fails (naming the cell and the
    error; the executed notebook stays in the output folder). ``progress``: a bar of the cells run
    (None: only when a person watches, see :mod:`tradebook.progress`; the notebook's own bars stay off).
    """
    import papermill
    from nbclient.exceptions import DeadKernelError

    from tradebook.notebook import _environment, export_html, ipc_kernel_manager
    from tradebook.progress import progress_enabled
    from tradebook.store import default_store_path

    source = report_notebook(name, reports_dir)
    declared = report_parameters(name, reports_dir)
    given = dict(parameters or {})
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise ReportError(f"report {name!r} has no parameter {', '.join(map(repr, unknown))}; it takes: "
                          f"{', '.join(f'{k} (default {v})' for k, v in declared.items())}")
    if "store_path" in given and given["store_path"] is not None:
        store = Path(given["store_path"])
    else:
        store = Path(store_path) if store_path is not None else default_store_path()
    store = store.resolve()
    if "store_path" in declared:
        given["store_path"] = str(store)
    folder = Path(output_dir) if output_dir is not None else _default_output_dir(name, store)
    folder.mkdir(parents=True, exist_ok=True)
    executed = folder / f"{name}.ipynb"
    show_bar = progress_enabled(progress)  # decided here: the kernel's environment turns bars off below
    with _environment({"TRADEBOOK_PROGRESS": "0"}):
        try:
            papermill.execute_notebook(str(source), str(executed), parameters=given, cwd=str(source.parent),
                                       execution_timeout=int(timeout), progress_bar=show_bar, log_output=False,
                                       kernel_name="python3", kernel_manager_class=ipc_kernel_manager())
        except papermill.PapermillExecutionError as error:
            message = _ANSI.sub("", str(error.evalue)).strip()
            raise ReportError(f"report {name!r} failed in {_failed_cell(error)}: {error.ename}: {message} "
                              f"(executed notebook: {executed})") from None
        except TimeoutError as error:  # nbclient's CellTimeoutError is a TimeoutError
            raise ReportError(f"report {name!r}: a cell ran longer than {timeout:g} s ({error}); "
                              f"executed notebook: {executed}") from None
        except DeadKernelError as error:  # the kernel process died (out of memory, killed)
            raise ReportError(f"report {name!r}: the notebook's kernel died ({error}); "
                              f"executed notebook: {executed}") from None
    html = export_html(executed, folder, name=name)
    return ReportResult(name=name, notebook_path=executed, html_path=html, output_dir=folder,
                        parameters=given)
