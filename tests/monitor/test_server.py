"""serve_monitor: the dashboard page and the read API on one port, the token beyond loopback, a clean stop.

Real servers on 127.0.0.1 answered by urllib; the stores are real DuckDB files (an empty
one closed, or the running session of tests/monitor/conftest.py).
"""

from __future__ import annotations

import http.cookiejar
import json
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tradebook.errors import ConfigError, MonitorServerError
from tradebook.monitor.server import TOKEN_COOKIE, serve_monitor
from tradebook.monitor.source import StoreSource
from tradebook.store import Store
from tradebook.store.holder import read_holder

TIMEOUT = 20


@pytest.fixture
def closed_store(tmp_path) -> Path:
    path = tmp_path / "closed.duckdb"
    Store(path).close()
    return path


def get(url: str, *, headers: dict[str, str] | None = None, opener=None) -> tuple[int, str, dict[str, str]]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with (opener or urllib.request.build_opener()).open(request, timeout=TIMEOUT) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_the_page_and_the_api_answer_on_one_port_and_stop_frees_it(closed_store):
    with serve_monitor(StoreSource(closed_store)) as server:
        assert server.url == f"http://127.0.0.1:{server.port}/" and server.running
        status, page, _ = get(server.url)
        assert status == 200 and "bokeh" in page.lower()
        status, body, _ = get(server.url + "api/health")
        assert status == 200 and json.loads(body)["source"] == "store"
        status, body, _ = get(server.url + "api/fills")
        assert status == 200
    assert not server.running and refused(server.port)
    server.stop()  # a second stop is fine


def test_a_path_is_served_through_a_store_source(closed_store):
    with serve_monitor(str(closed_store)) as server:
        assert isinstance(server.source, StoreSource) and server.source.store_path == closed_store


def test_beyond_loopback_a_token_is_required_before_anything_listens(closed_store):
    with pytest.raises(ConfigError, match="without a token"):
        serve_monitor(StoreSource(closed_store), address="0.0.0.0")


def test_with_a_token_the_page_and_the_api_need_it_and_a_cookie_keeps_it(closed_store):
    with serve_monitor(StoreSource(closed_store), token="s3cret") as server:
        assert server.url.endswith("/?token=s3cret")
        base = server.url.split("?")[0]
        status, body, _ = get(base)  # redirected to the login page, which says what is missing
        assert status == 401 and "needs its token" in body
        assert get(base + "api/health")[0] == 401
        assert get(base + "api/health", headers={"Authorization": "Bearer s3cret"})[0] == 200
        assert get(base + "?token=wrong")[0] == 401

        jar = http.cookiejar.CookieJar()
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        status, page, _ = get(server.url, opener=browser)
        assert status == 200 and "bokeh" in page.lower()
        assert [c.name for c in jar] == [TOKEN_COOKIE]
        assert get(base, opener=browser)[0] == 200  # the cookie alone, as the page's websocket and a reload


def test_a_port_in_use_is_an_error_naming_it(closed_store):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(MonitorServerError, match=f"dashboard server on 127.0.0.1:{port} could not start"):
            serve_monitor(StoreSource(closed_store), port=port)


def test_a_sessions_dashboard_is_named_in_the_holder_file_while_it_serves(running_session):
    server = running_session.dashboard()
    try:
        assert read_holder(Path(running_session.store.path)).dashboard_url == server.url
        status, body, _ = get(server.url + "api/health")
        assert status == 200 and json.loads(body)["source"] == "session"
    finally:
        server.stop()
    assert read_holder(Path(running_session.store.path)).dashboard_url is None


def test_a_sessions_dashboard_is_one_server_and_ends_with_the_session(running_session):
    server = running_session.dashboard()
    assert running_session.dashboard() is server  # asked again: the same one, not a second port
    replaced = running_session.dashboard(port=0)  # other keywords: it replaces the first
    assert replaced is not server and not server.running and replaced.running
    running_session.stop()
    assert not replaced.running  # it read through the session's store, which the stop closes


def test_the_panel_serve_script_builds_the_dashboard_over_a_store(closed_store, monkeypatch):
    import runpy

    import panel as pn

    script = Path(__file__).resolve().parents[2] / "dashboards" / "monitor.py"
    monkeypatch.setattr("sys.argv", [str(script), str(closed_store)])  # what `panel serve ... --args STORE` passes
    built = []
    monkeypatch.setattr(pn.viewable.Viewable, "servable", lambda self, *a, **k: built.append(self) or self)
    runpy.run_path(str(script), run_name="__main__")
    [page] = built
    assert "tb-monitor" in page.css_classes
    buttons = [w for w in page.select(pn.widgets.Button) if "tb-control" in w.css_classes]
    assert len(buttons) == 4 and all(b.disabled for b in buttons)  # a closed store: read-only
