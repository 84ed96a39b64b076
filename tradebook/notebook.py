"""Run the notebooks and export them to HTML that works with no network.

``execute(ipynb, out)`` runs a notebook with papermill (parameters injected after its
``parameters`` cell, progress bars off). ``export_html(ipynb, out_dir)`` turns an executed
notebook into ``out_dir/<name>.html`` plus the bokeh and panel JavaScript and CSS its
figures need, copied from the installed packages into ``out_dir/static/`` (shared by every
notebook exported to that folder). Open the HTML from disk, with no network: nothing is
fetched from a CDN. The JavaScript is not inlined into each page by default because bokeh
and panel weigh about 2.9 MB, and a page stays well under 1 MB this way;
``export_html(..., inline=True)`` writes one self-contained file instead (to send around).

Presentation layer: imports nbconvert and papermill, and the core never imports it.
From a shell::

    python -m tradebook.notebook notebooks/02_calibrate.ipynb build/html   # executes, then exports
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from tradebook.errors import ExportError, TradebookError

STATIC_DIR = "static"

# the extension loaders: they fetch bokeh/panel from a CDN; the page loads local copies in <head> instead
_LOADER_MIMETYPE = "application/vnd.holoviews_load.v0+json"
_WIDGET_MIMETYPE = "application/vnd.jupyter.widget-view+json"

_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js -%}
{%- for src in resources.tradebook_scripts %}
<script src="{{ src }}"></script>
{%- endfor %}
{%- endblock html_head_js -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""

_PANEL_CDN = re.compile(r"https://cdn\.holoviz\.org/panel/[^/\"']+/dist/([^\"'\s?#)\\]+)(\?[^\"'\s#)\\]*)?")
_BOKEH_CDN = re.compile(r"https://cdn\.bokeh\.org/bokeh/(?:release|dev)/bokeh(-[a-z]+)?-[0-9][^\"'\s/]*?\.min\.js")
# every script a figure of hvplot/holoviews/panel needs, in load order (bokeh first, panel last)
_BOKEH_SCRIPTS = ("bokeh", "bokeh-gl", "bokeh-widgets", "bokeh-tables")


def _bokeh_js_dir() -> Path:
    import bokeh

    return Path(bokeh.__file__).parent / "server" / "static" / "js"


def _panel_dist_dir() -> Path:
    import panel

    return Path(panel.__file__).parent / "dist"


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def execute(ipynb: str | Path, out: str | Path, *, parameters: Mapping[str, Any] | None = None,
            cwd: str | Path | None = None, timeout: float = 600) -> Path:
    """Run ``ipynb`` with papermill into ``out`` (parameters after its ``parameters`` cell); returns ``out``.

    The kernel runs in ``cwd`` (default: the notebook's folder) with progress bars off.
    A cell that fails raises :class:`ExportError` naming the notebook and the error.
    """
    import papermill

    source, target = Path(ipynb), Path(out)
    if not source.is_file():
        raise ExportError(f"no notebook at {source}; expected an .ipynb file")
    target.parent.mkdir(parents=True, exist_ok=True)
    with _environment({"TRADEBOOK_PROGRESS": "0"}):
        try:
            papermill.execute_notebook(str(source), str(target), parameters=dict(parameters or {}),
                                       cwd=str(cwd or source.parent), execution_timeout=int(timeout),
                                       progress_bar=False, log_output=False, kernel_name="python3",
                                       kernel_manager_class=ipc_kernel_manager())
        except papermill.PapermillExecutionError as error:
            raise ExportError(f"{source.name}: cell {error.exec_count} raised {error.ename}: {error.evalue}") from None
    return target


@functools.lru_cache(maxsize=1)
def ipc_kernel_manager() -> type:
    """A kernel manager whose kernel talks over local sockets (IPC), not TCP.

    Over TCP without keys the kernel's traffic (code and outputs) is plain text on the
    loopback, readable by any local user, and ipykernel says so in a warning that papermill
    printed into every report run. The socket files live beside the kernel's connection
    file and go with it.
    """
    from jupyter_client.manager import AsyncKernelManager

    class IpcKernelManager(AsyncKernelManager):
        transport = "ipc"

    return IpcKernelManager


def _offline_notebook(nb: Any) -> Any:
    """The notebook without CDN loaders, widget views or widget state (nothing in it fetches from the network)."""
    for cell in nb.cells:
        if cell.get("cell_type") != "code":
            continue
        kept = []
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if _LOADER_MIMETYPE in data or (output.get("output_type") == "display_data" and not data):
                continue
            if _WIDGET_MIMETYPE in data:  # a progress bar: keep its text, drop the live widget
                output["data"] = {k: v for k, v in data.items() if k == "text/plain"}
                if not output["data"]:
                    continue
            kept.append(output)
        cell["outputs"] = kept
    nb.metadata.pop("widgets", None)
    return nb


def _copy(source: Path, target: Path) -> None:
    if not target.exists() or target.stat().st_size != source.stat().st_size:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)


def export_html(ipynb: str | Path, out_dir: str | Path, *, name: str | None = None, inline: bool = False) -> Path:
    """Export an executed notebook to ``out_dir/<name>.html`` that renders offline; returns the HTML path.

    ``name`` defaults to the notebook's file name without its extension. The bokeh and
    panel JavaScript and the CSS the figures reference are copied into
    ``out_dir/static/`` and every CDN address in the page is rewritten to them. With
    ``inline=True`` they are written into the page instead: one self-contained file to
    send around, about 3 MB larger.
    """
    import nbformat
    from nbconvert import HTMLExporter

    source, folder = Path(ipynb), Path(out_dir)
    if not source.is_file():
        raise ExportError(f"no notebook at {source}; expected an executed .ipynb file")
    try:
        nb = nbformat.read(source, as_version=4)
    except Exception as error:  # nbformat raises several unrelated types for a damaged file
        raise ExportError(f"{source} is not a readable notebook: {error}") from None
    js_dir, panel_dist = _bokeh_js_dir(), _panel_dist_dir()
    assets: dict[str, Path] = {}  # the page's relative address -> the installed file it stands for

    def asset(relative: str, installed: Path) -> str:
        if not installed.is_file():
            raise ExportError(f"{installed} is missing from the installed package; reinstall it (make setup)")
        address = f"{STATIC_DIR}/{relative}"
        assets[address] = installed
        return address

    scripts = [asset(f"bokeh/{script}.min.js", js_dir / f"{script}.min.js") for script in _BOKEH_SCRIPTS]
    scripts.append(asset("panel/panel.min.js", panel_dist / "panel.min.js"))

    exporter = HTMLExporter(template_name="lab", raw_template=_TEMPLATE)
    body, _ = exporter.from_notebook_node(_offline_notebook(nb), resources={"tradebook_scripts": scripts})

    def local_panel(match: re.Match[str]) -> str:
        return asset(f"panel/{match.group(1)}", panel_dist / match.group(1))

    def local_bokeh(match: re.Match[str]) -> str:
        script = "bokeh" + (match.group(1) or "")
        return asset(f"bokeh/{script}.min.js", js_dir / f"{script}.min.js")

    body = _BOKEH_CDN.sub(local_bokeh, _PANEL_CDN.sub(local_panel, body))
    folder.mkdir(parents=True, exist_ok=True)
    if inline:
        body = _inlined(body, scripts, assets)
    else:
        for address, installed in assets.items():
            _copy(installed, folder / address)
    target = folder / f"{name or source.stem}.html"
    target.write_text(body, encoding="utf-8")
    return target


def _inlined(body: str, scripts: list[str], assets: Mapping[str, Path]) -> str:
    """``body`` with its scripts written into the page and every other asset as a data: address."""
    import base64

    for address in scripts:
        # a literal "</script" inside the code would end the element early; "<\/" means the same to JavaScript
        code = assets[address].read_text(encoding="utf-8").replace("</script", "<\\/script")
        body = body.replace(f'<script src="{address}"></script>', f"<script>{code}</script>", 1)
    for address, installed in assets.items():
        if address in scripts:
            continue
        kind = "text/css" if installed.suffix == ".css" else "application/javascript"
        encoded = base64.b64encode(installed.read_bytes()).decode("ascii")
        body = body.replace(address, f"data:{kind};base64,{encoded}")
    return body


def main(argv: list[str] | None = None) -> int:
    """``python -m tradebook.notebook NOTEBOOK OUT_DIR``: execute the notebook, then export it."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m tradebook.notebook NOTEBOOK.ipynb OUT_DIR", file=sys.stderr)
        return 2
    source, folder = Path(args[0]), Path(args[1])
    try:
        executed = execute(source, folder / f"{source.stem}.executed.ipynb")
        print(export_html(executed, folder, name=source.stem))
    except TradebookError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
