"""Serving the dashboard: the Panel app at ``/`` and the read API under ``/api/`` on one port, in a thread.

``serve_monitor(source)`` starts a Bokeh/Panel server on its own event loop in a daemon
thread and returns once it listens (or raises why it could not); the notebook cell, the
CLI or the session goes on. Bound to 127.0.0.1 by default. Any other address needs a
token (:func:`tradebook.monitor.auth.check_binding` refuses to start without one): the API
asks for it on every request (``Authorization: Bearer <token>`` or ``?token=``), and the
pages too: open ``<url>?token=<token>`` once, and a cookie carries it for the page's
websocket and later visits. :attr:`MonitorServer.url` includes the token when there is one.

``stop()`` closes the listening socket and the loop (the port is free when it returns)
and is safe to call twice; the server is a context manager. A session's dashboard
writes its URL into the store's holder file (:func:`tradebook.store.holder.set_dashboard_url`)
so a monitor opened on the same store elsewhere points to it, and takes it out at stop.
"""

from __future__ import annotations

import functools
import hmac
import logging
import socket
import threading
from pathlib import Path
from typing import Any

from tradebook.errors import ConfigError, MonitorServerError
from tradebook.monitor.auth import authorized, check_binding, is_loopback
from tradebook.monitor.loop_thread import LoopThread, url_host

log = logging.getLogger(__name__)

TOKEN_COOKIE = "tradebook_monitor_token"
LOGIN_PATH = "/login"


def _websocket_origins(address: str) -> list[str]:
    """Hosts a page may open the server's websocket from (any port: the server's own is known only once bound)."""
    origins = ["127.0.0.1", "localhost"]
    if address in ("0.0.0.0", "::", ""):
        origins += ["*.*.*.*", socket.gethostname(), socket.getfqdn()]
    elif not is_loopback(address):
        origins.append(address)
    return sorted(set(origins))


def _token_auth(token: str) -> Any:
    """A Bokeh auth provider: a page or websocket passes with the token (header, ``?token=``, or its cookie)."""
    from bokeh.server.auth_provider import AuthProvider
    from tornado.web import RequestHandler

    class NeedToken(RequestHandler):
        def get(self) -> None:
            self.set_status(401)
            self.set_header("Content-Type", "text/plain; charset=utf-8")
            self.finish("This tradebook dashboard needs its token: open the URL it printed (it ends in ?token=...), "
                        "or send 'Authorization: Bearer <token>'.\n")

    class TokenAuth(AuthProvider):
        @property
        def get_user(self) -> Any:
            return user

        @property
        def login_url(self) -> str:
            return LOGIN_PATH

        @property
        def login_handler(self) -> type[RequestHandler]:
            return NeedToken

    def user(handler: RequestHandler) -> str | None:
        if authorized(handler.request, token):
            if not isinstance(handler, _websocket_handler()):  # the page's websocket reuses the cookie
                handler.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict")
            return "token"
        cookie = handler.get_cookie(TOKEN_COOKIE)
        if cookie is not None and hmac.compare_digest(cookie.encode(), token.encode()):
            return "token"
        return None

    return TokenAuth()


@functools.cache
def _websocket_handler() -> type:
    from bokeh.server.views.ws import WSHandler

    return WSHandler


class MonitorServer:
    """The dashboard and the read API over ``source``, served in a background thread (see the module doc).

    ``url``: where to open it (with ``?token=`` when a token is set); ``port``: the port it
    listens on; ``stop()`` ends it. Use :func:`serve_monitor` to make one.
    """

    def __init__(self, source: Any, *, address: str = "127.0.0.1", port: int = 0, token: str | None = None,
                 refresh_ms: int = 1_000, title: str = "tradebook monitor") -> None:
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65_535:
            raise ConfigError(f"port is {port!r}; expected 0 (any free port) to 65535")
        check_binding(address, token)
        self.source = source
        self.address = address
        self.token = token
        self.port: int | None = None
        self._requested_port = port
        self._refresh_ms = refresh_ms
        self._title = title
        self._stopping = threading.Event()  # the pages' refresh threads end with the server
        self._thread = LoopThread(self._start_server, what=f"the dashboard server on {address}:{port}",
                                  name=f"tradebook-monitor-{address}")
        self.port = int(self._thread.server.port)
        self._announce(self.url)

    def _start_server(self) -> Any:
        """Build and start the Bokeh/Panel server (on the loop thread, where tornado wants it)."""
        from panel.io.server import get_server
        from tornado.ioloop import IOLoop

        from tradebook.monitor.api import api_routes
        from tradebook.monitor.app import build_app

        def app() -> Any:  # a new app per browser tab (Panel takes a function, not a partial, as a page maker)
            return build_app(self.source, refresh_ms=self._refresh_ms, title=self._title, stop=self._stopping)

        options: dict[str, Any] = {}
        if self.token:
            options["auth_provider"] = _token_auth(self.token)
        server = get_server({"/": app}, port=self._requested_port, address=self.address, loop=IOLoop.current(),
                            start=False, show=False, title=self._title, verbose=False,
                            websocket_origin=_websocket_origins(self.address),
                            extra_patterns=api_routes(self.source, token=self.token), **options)
        server.start()
        return server

    # -- the caller's side ----------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{url_host(self.address)}:{self.port}/" + (f"?token={self.token}" if self.token else "")

    @property
    def running(self) -> bool:
        return self._thread.running

    def stop(self) -> None:
        """Stop serving: the listening socket and the loop are closed when this returns (twice is fine)."""
        if not self._thread.running:
            return
        self._stopping.set()
        self._announce(None)

        def shut(server: Any) -> None:
            try:
                server.stop()
            except AssertionError:  # bokeh refuses a second stop; already stopped is what we want
                pass
            _forget_panel_server(server)

        self._thread.stop(shut)

    def _announce(self, url: str | None) -> None:
        """A session's server names its URL in the store's holder file (None at stop), for monitors elsewhere."""
        if getattr(self.source, "kind", None) != "session":
            return
        from tradebook.store.holder import set_dashboard_url

        try:
            set_dashboard_url(Path(self.source.store_path), url)
        except OSError as exc:  # a note for others; never a reason to refuse serving
            log.warning("could not write the dashboard URL into the holder file of %s: %s",
                        self.source.store_path, exc)

    def __enter__(self) -> MonitorServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "serving" if self.running else "stopped"
        return f"<MonitorServer {state} {self.url if self.port else self.address}>"

    def _repr_html_(self) -> str:
        if not self.running:
            return "<p>tradebook monitor: stopped</p>"
        return f'<p>tradebook monitor: <a href="{self.url}" target="_blank">{self.url}</a></p>'


def _forget_panel_server(server: Any) -> None:
    """Panel keeps every server it made in its global state; a stopped one is taken out."""
    from panel.io.state import state

    for key, (known, *_rest) in list(state._servers.items()):
        if known is server:
            state._servers.pop(key, None)
    state._server_config.pop(getattr(server, "_tornado", None), None)


def serve_monitor(source: Any, *, address: str = "127.0.0.1", port: int = 0, token: str | None = None,
                  show: bool = False, refresh_ms: int = 1_000, title: str = "tradebook monitor") -> MonitorServer:
    """Serve the dashboard over ``source`` (a :class:`~tradebook.monitor.source.MonitorSource`, a Session or a
    store path) and the read API beside it; returns the running :class:`MonitorServer`.

    ``address``: 127.0.0.1 by default; any other needs ``token``. ``port``: 0 picks a free one.
    ``show``: open it in the default web browser.
    """
    from tradebook.monitor.source import MonitorSource, open_source

    if not isinstance(source, MonitorSource):
        source = open_source(source)
    server = MonitorServer(source, address=address, port=port, token=token, refresh_ms=refresh_ms, title=title)
    if show:
        import webbrowser

        webbrowser.open(server.url)
    return server


TOKEN_ENV = "TRADEBOOK_MONITOR_TOKEN"  # the default token of the CLI and the demo (unlike --token, not shown by ps)


def serve_until_interrupted(source: Any, *, address: str = "127.0.0.1", port: int = 0, token: str | None = None,
                            out: Any = print, wait: threading.Event | None = None) -> None:
    """Serve the dashboard, print its URL and block until Ctrl-C (or ``wait`` is set); then stop cleanly.

    ``token`` (needed beyond 127.0.0.1): default ``$TRADEBOOK_MONITOR_TOKEN``.
    """
    import os

    server = serve_monitor(source, address=address, port=port, token=token or os.environ.get(TOKEN_ENV) or None)
    done = wait or threading.Event()
    try:
        out(f"Dashboard: {server.url}  (read API under /api/; Ctrl-C stops it)")
        while not done.wait(0.5):  # short waits: Ctrl-C reaches the main thread between them
            if not server.running:
                raise MonitorServerError(f"the dashboard server at {server.url} stopped by itself")
    except KeyboardInterrupt:
        out("\nDashboard stopped.")
    finally:
        server.stop()
