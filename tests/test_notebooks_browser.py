"""Every notebook, executed and exported to HTML, renders in headless chromium with no network.

The notebooks run once (papermill, one store in tmp_path shared by the five, as a user
runs 00 to 04 in order) and are exported with :func:`tradebook.notebook.export_html`.
Chromium (Debian's, at /usr/bin/chromium; ``make setup`` installs it) opens each page
from disk with every non-file request aborted, and the test asserts that:

- no request left the machine (the page carries or links locally everything it needs);
- every bokeh figure in the page was built with data (each plot's glyph renderers hold rows)
  and drawn (its canvas shows coloured pixels inside the plot: lines, bands, points);
- each page is under 1 MB (the shared bokeh/panel JavaScript sits once in ``static/``);
- the single-file export (``inline=True``) renders offline as well.

Screenshots of each page are written beside it (``<name>.png``) for a person to look at.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest

from tradebook.notebook import execute, export_html

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = ["00_data", "01_research", "02_calibrate", "03_paper", "04_promotion"]
CHROMIUM = Path("/usr/bin/chromium")
MAX_PAGE_BYTES = 1_000_000
RENDER_TIMEOUT_MS = 60_000
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-default-apps", "--disable-sync", "--no-first-run",
                 "--disable-features=Translate,OptimizationHints,MediaRouter"]

# Every Figure of every bokeh document on the page: its title and, per glyph renderer, how many rows it draws.
FIGURES_JS = """() => {
  const figures = [];
  for (const doc of window.Bokeh.documents) {
    for (const model of doc.all_models) {
      if (model.renderers === undefined || model.x_range === undefined) continue;
      figures.push({
        title: model.title ? model.title.text : "",
        rows: model.renderers.filter(r => r.data_source !== undefined).map(r => r.data_source.get_length()),
      });
    }
  }
  return figures;
}"""

# bokeh has embedded a document for every output that carries one (the loader polls until it can)
DOCUMENTS_READY_JS = """(expected) => window.Bokeh !== undefined && window.Bokeh.documents.length >= expected"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """name -> exported HTML page, the notebooks executed in order against one fresh store."""
    folder = tmp_path_factory.mktemp("notebooks")
    store_path = folder / "tradebook.duckdb"
    pages = {}
    for name in NOTEBOOKS:
        executed = execute(NOTEBOOK_DIR / f"{name}.ipynb", folder / f"{name}.ipynb",
                           parameters={"store_path": str(store_path)}, cwd=folder)
        pages[name] = export_html(executed, folder / "html", name=name)
    return pages


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file() or shutil.which(str(CHROMIUM)) is None:
        pytest.fail(f"no chromium at {CHROMIUM}: `make setup` installs Debian's chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def _saturated_pixels(png: bytes) -> int:
    """Pixels of strong colour in the middle of a plot: where its lines, bands and points are drawn.

    Axes, labels, grid and background are black, grey or white (low saturation); the
    middle crop leaves out the title, the axes and the legend at the right.
    """
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    width, height = image.size
    middle = image.crop((int(width * 0.15), int(height * 0.15), int(width * 0.7), int(height * 0.85)))
    pixels = np.asarray(middle, dtype=np.int16)
    return int(np.count_nonzero(pixels.max(axis=2) - pixels.min(axis=2) > 60))


def _render(browser, page_path: Path, timeout_ms: int = RENDER_TIMEOUT_MS) -> tuple[list[dict], list[str], list[int], list[str]]:
    """Open ``page_path`` offline: (figures with their rows, requests blocked, coloured pixels per plot, page errors)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    html = page_path.read_text(encoding="utf-8")
    # every output that embeds a bokeh document marks its root element with data-root-id
    expected_documents = html.count("data-root-id=")
    context = browser.new_context(viewport={"width": 1280, "height": 900}, service_workers="block")
    blocked: list[str] = []
    errors: list[str] = []

    def route(request_route) -> None:
        url = request_route.request.url
        if url.startswith(("file://", "data:")):
            request_route.continue_()
        else:
            blocked.append(url)
            request_route.abort()

    figures: list[dict] = []
    coloured: list[int] = []
    try:
        context.route("**/*", route)
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(page_path.as_uri(), wait_until="load")
        try:
            page.wait_for_function(DOCUMENTS_READY_JS, arg=expected_documents, timeout=timeout_ms)
        except PlaywrightTimeout:
            errors.append(f"bokeh did not embed the page's {expected_documents} documents within "
                          f"{timeout_ms / 1000:g} s")
        else:
            figures = page.evaluate(FIGURES_JS)
            page.wait_for_timeout(500)  # the last plot's first paint
            # each figure's own element (bokeh draws it on canvases in its shadow root), as the eye sees it
            hosts = page.locator(".bk-Figure")
            for index in range(hosts.count()):
                host = hosts.nth(index)
                host.scroll_into_view_if_needed()
                coloured.append(_saturated_pixels(host.screenshot()))
        page.screenshot(path=str(page_path.with_suffix(".png")), full_page=True)
    finally:
        context.close()
    return figures, blocked, coloured, errors


def _problems(figures: list[dict], blocked: list[str], coloured: list[int], errors: list[str]) -> list[str]:
    """What is wrong with a rendered page (nothing: an empty list)."""
    problems = []
    if blocked:
        problems.append(f"the page tried the network: {blocked[:5]}")
    if errors:
        problems.append(f"errors: {errors[:3]}")
    if not figures:
        problems.append("no bokeh figure on the page")
    empty = [f["title"] for f in figures if not f["rows"] or min(f["rows"]) == 0]
    if empty:
        problems.append(f"figures with a renderer and no data: {empty}")
    if len(coloured) != len(figures):
        problems.append(f"{len(figures)} figures built, {len(coloured)} drawn on the page")
    blank = [f["title"] or f"figure {i}" for i, (f, pixels) in enumerate(zip(figures, coloured)) if pixels < 50]
    if blank:
        problems.append(f"figures drawn with nothing in them: {blank} (coloured pixels {coloured})")
    return problems


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_exported_notebook_renders_offline_with_every_figure_drawn(name: str, exported, browser) -> None:
    assert _problems(*_render(browser, exported[name])) == [], name


def test_exported_pages_stay_under_one_megabyte(exported) -> None:
    sizes = {name: path.stat().st_size for name, path in exported.items()}
    assert max(sizes.values()) < MAX_PAGE_BYTES, f"exported pages in bytes: {sizes}"
    # the JavaScript they share is there once, beside them
    static = next(iter(exported.values())).parent / "static"
    assert (static / "bokeh" / "bokeh.min.js").is_file() and (static / "panel" / "panel.min.js").is_file()


@pytest.mark.slow
def test_an_inline_export_is_one_file_that_renders_offline(exported, browser, tmp_path) -> None:
    executed = exported["00_data"].parent.parent / "00_data.ipynb"
    page = export_html(executed, tmp_path, name="00_data", inline=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00_data.html"]  # nothing beside it
    assert "static/" not in page.read_text(encoding="utf-8")
    assert _problems(*_render(browser, page)) == []


CONTROL_CELLS = {
    "no_data": "hv.Curve([], 'x', 'y', label='nothing').opts(title='no data', width=600, height=300)",
    "invisible": "hv.Curve([(0, 0), (1, 1)], 'x', 'y').opts(title='invisible', alpha=0, width=600, height=300)",
    "drawn": "hv.Curve([(0, 0), (1, 1)], 'x', 'y').opts(title='drawn', width=600, height=300, line_width=4)",
}


@pytest.mark.slow
def test_the_render_check_fails_a_hollow_figure_and_a_page_that_needs_the_network(browser, tmp_path) -> None:
    """Control: an empty figure, an invisible one and a page that loads bokeh from a CDN all fail; a drawn one passes."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    cells = [new_code_cell("import holoviews as hv\nhv.extension('bokeh', logo=False)"),
             *(new_code_cell(source) for source in CONTROL_CELLS.values())]
    nb = new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                            "language": "python"}})
    nbformat.write(nb, tmp_path / "control.ipynb")
    executed = execute(tmp_path / "control.ipynb", tmp_path / "executed.ipynb", cwd=tmp_path)
    page = export_html(executed, tmp_path / "html", name="control")

    figures, blocked, coloured, errors = _render(browser, page)
    problems = " | ".join(_problems(figures, blocked, coloured, errors))
    assert "no data: ['no data']" in problems
    assert "nothing in them: ['no data', 'invisible']" in problems
    assert "'drawn'" not in problems and blocked == [] and errors == []

    online = page.with_name("online.html")
    online.write_text(page.read_text(encoding="utf-8").replace(
        '"static/bokeh/bokeh.min.js"', '"https://cdn.bokeh.org/bokeh/release/bokeh-3.9.2.min.js"'), encoding="utf-8")
    problems = " | ".join(_problems(*_render(browser, online, timeout_ms=3_000)))
    assert "the page tried the network: ['https://cdn.bokeh.org/" in problems
