"""The read API: a monitor source's frames as JSON over HTTP (tornado handlers under ``/api/``).

``GET /api/<endpoint>`` answers ``{"endpoint", "source", "held_by", "count", "rows": [...]}``
(``limit`` too where it applies), or for ``status`` and ``health`` one object. Endpoints:
orders, working_orders, fills, positions, tca/fills, tca/orders, alerts, stages, equity,
status, health; ``GET /api/`` lists them. Query parameters: ``limit`` (1 to 100000,
default 200) where rows are many, the filters each endpoint names (``instrument_id``,
``strategy_id``, ``status``, ``client_order_id``, ``severity``, ``kind``, ``level``), and
``since`` (ISO-8601 or int64 UTC ns). Anything else, or a bad value, is a 400 naming
what was wrong and what is expected.

Values keep their exactness: Decimals as strings (``"0.01"``), times both as int64 UTC ns
(the ``*_ns`` and ``ts_*`` columns) and as ISO-8601 UTC strings (``time``); NaN is null.
With a token (:mod:`tradebook.monitor.auth`), a request without it gets a 401.

:func:`api_routes` gives the handlers to mount beside the dashboard (part of
:func:`tradebook.monitor.server.serve_monitor`); :func:`serve_api` serves them alone. Reads
run on a small thread pool, never on the server's event loop.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.web import Application, RequestHandler

from tradebook.errors import ConfigError, MonitorServerError, TradebookError
from tradebook.model.time import now_ns, ns_to_iso, to_ns
from tradebook.monitor.auth import authorized, check_binding
from tradebook.monitor.loop_thread import LoopThread, url_host
from tradebook.monitor.source import DEFAULT_LIMIT, FILTERS, MAX_LIMIT, MonitorSource

API_PREFIX = "/api/"
READ_THREADS = 2  # two cores on the machine; DuckDB releases the GIL while it reads


@dataclass(frozen=True)
class Endpoint:
    """One ``/api/<path>``: the source read behind it, and whether it takes ``limit`` and which filters."""

    path: str
    read: Callable[..., pd.DataFrame | Mapping[str, Any]]
    table: str | None = None  # its filters are FILTERS[table]; None: no filter
    limited: bool = False

    def filters(self) -> list[str]:
        names = [n for n in FILTERS.get(self.table or "", ()) if n != "since_ns"]
        return sorted(names + (["since"] if self.table else []))

    def parameters(self) -> list[str]:
        return sorted(self.filters() + (["limit"] if self.limited else []))


def _health(source: MonitorSource) -> dict[str, Any]:
    status = source.status()
    return {"ok": status.get("held_by") is None, "source": status.get("source"), "state": status.get("state"),
            "held_by": status.get("held_by"), "dashboard_url": status.get("dashboard_url"),
            "updated_ns": status.get("updated_ns")}


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("orders", lambda s, **kw: s.orders(**kw), "orders", limited=True),
    Endpoint("working_orders", lambda s: s.working_orders()),
    Endpoint("fills", lambda s, **kw: s.fills(**kw), "fills", limited=True),
    Endpoint("positions", lambda s: s.positions()),
    Endpoint("tca/fills", lambda s, **kw: s.tca_fills(**kw), "tca_fills", limited=True),
    Endpoint("tca/orders", lambda s, **kw: s.tca_orders(**kw), "tca_orders", limited=True),
    Endpoint("alerts", lambda s, **kw: s.alerts(**kw), "alerts", limited=True),
    Endpoint("stages", lambda s: s.stages()),
    Endpoint("equity", lambda s: s.equity()),
    Endpoint("status", lambda s: s.status()),
    Endpoint("health", _health),
)


# -- JSON ----------------------------------------------------------------------------------------
def json_value(value: Any) -> Any:
    """One cell as JSON: Decimal as exact text, a time as ISO-8601 UTC, NaN/NaT/None as null, numpy as Python."""
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, Decimal):
        return format(value.normalize(), "f") if value.is_finite() else None
    if isinstance(value, pd.Timestamp):
        return ns_to_iso(value.value)
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    return str(value)


def json_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """A frame's rows as JSON objects (see :func:`json_value`)."""
    columns = [str(c) for c in frame.columns]
    return [{c: json_value(v) for c, v in zip(columns, row)} for row in frame.itertuples(index=False, name=None)]


# -- request parameters ----------------------------------------------------------------------------
def parse_parameters(endpoint: Endpoint, arguments: Mapping[str, list[bytes]]) -> dict[str, Any]:
    """The keyword arguments of ``endpoint``'s read from a request's query; ConfigError (a 400) names a bad one."""
    given = {name: values[-1].decode("utf-8", "replace") for name, values in arguments.items() if name != "token"}
    allowed = endpoint.parameters()
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ConfigError(f"/api/{endpoint.path} takes no parameter {', '.join(unknown)}; expected "
                          f"{', '.join(allowed) or 'none'}")
    kwargs: dict[str, Any] = {}
    for name, text in given.items():
        if name == "limit":
            if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
                raise ConfigError(f"limit is {text!r}; expected a whole number from 1 to {MAX_LIMIT}")
            kwargs["limit"] = int(text)
        elif name == "since":
            kwargs["since_ns"] = _since_ns(text)
        elif not text:
            raise ConfigError(f"{name} is empty; expected a value (or leave the parameter out)")
        else:
            kwargs[name] = text
    if endpoint.limited:
        kwargs.setdefault("limit", DEFAULT_LIMIT)
    return kwargs


def _since_ns(text: str) -> int:
    try:
        return int(text) if text.lstrip("-").isdigit() else to_ns(text)
    except (TradebookError, ValueError, TypeError) as exc:
        raise ConfigError(f"since is {text!r}; expected an ISO-8601 time (2024-08-08T23:56:00Z) or int64 UTC "
                          "nanoseconds") from exc


def read_endpoint(source: MonitorSource, endpoint: Endpoint, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON body of one endpoint: one read-only open of a closed store for the whole answer."""
    with source.reading():
        result = endpoint.read(source, **kwargs)
        held_by = source.held_by
    if not isinstance(result, pd.DataFrame):
        return {k: json_value(v) for k, v in result.items()}
    body: dict[str, Any] = {"endpoint": endpoint.path, "source": source.kind, "held_by": held_by,
                            "read_ns": now_ns(), "count": len(result)}
    if "limit" in kwargs:
        body["limit"] = kwargs["limit"]
    body["rows"] = json_rows(result)
    return body


# -- handlers ------------------------------------------------------------------------------------
class _JsonHandler(RequestHandler):
    def initialize(self, token: str | None) -> None:
        self.token = token

    def prepare(self) -> None:
        if not authorized(self.request, self.token):
            self.set_header("WWW-Authenticate", 'Bearer realm="tradebook monitor"')
            self.answer(401, {"error": "this monitor needs its token: 'Authorization: Bearer <token>' or ?token="})

    def answer(self, code: int, body: Mapping[str, Any]) -> None:
        self.set_status(code)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(body, allow_nan=False, separators=(",", ":")))


class EndpointHandler(_JsonHandler):
    """``GET /api/<endpoint>``: one source read, as JSON."""

    def initialize(self, token: str | None, source: MonitorSource, endpoint: Endpoint,  # type: ignore[override]
                   executor: ThreadPoolExecutor) -> None:
        super().initialize(token)
        self.source, self.endpoint, self.executor = source, endpoint, executor

    async def get(self) -> None:
        try:
            kwargs = parse_parameters(self.endpoint, self.request.query_arguments)
            body = await asyncio.get_running_loop().run_in_executor(
                self.executor, read_endpoint, self.source, self.endpoint, kwargs)
        except ConfigError as exc:
            self.answer(400, {"error": str(exc)})
            return
        except TradebookError as exc:  # the store is closed or cannot be read now: say why, do not crash
            self.answer(503, {"error": str(exc)})
            return
        self.answer(200, body)


class IndexHandler(_JsonHandler):
    """``GET /api/`` (and any unknown ``/api/...``: a 404 with the same list)."""

    def get(self, unknown: str = "") -> None:
        endpoints = {f"{API_PREFIX}{e.path}": e.parameters() for e in ENDPOINTS}
        if unknown:
            self.answer(404, {"error": f"no endpoint /api/{unknown}; expected one of {', '.join(endpoints)}",
                              "endpoints": endpoints})
        else:
            self.answer(200, {"endpoints": endpoints})


def api_routes(source: MonitorSource, *, token: str | None) -> list[tuple[str, type, dict[str, Any]]]:
    """Tornado routes of the read API over ``source`` (each checks ``token`` when one is set)."""
    executor = ThreadPoolExecutor(max_workers=READ_THREADS, thread_name_prefix="tradebook-api")
    routes: list[tuple[str, type, dict[str, Any]]] = [
        (f"{API_PREFIX}{e.path}/?", EndpointHandler,
         {"token": token, "source": source, "endpoint": e, "executor": executor}) for e in ENDPOINTS]
    routes += [(f"{API_PREFIX}?", IndexHandler, {"token": token}),
               (f"{API_PREFIX}(.+)", IndexHandler, {"token": token})]
    return routes


# -- serving the API alone -------------------------------------------------------------------------
class ApiServer:
    """The read API served alone on its own event loop in a daemon thread; :meth:`stop` frees the port."""

    def __init__(self, source: MonitorSource, *, address: str = "127.0.0.1", port: int = 0,
                 token: str | None = None) -> None:
        check_binding(address, token)
        self.address, self.token = address, token
        try:
            sockets = bind_sockets(port, address or None)
        except OSError as exc:
            raise MonitorServerError(f"the read API cannot listen on {address or '*'}:{port}: {exc}") from exc
        self.port = int(sockets[0].getsockname()[1])
        application = Application(api_routes(source, token=token))

        def listen() -> HTTPServer:
            server = HTTPServer(application)
            server.add_sockets(sockets)
            return server

        self._thread = LoopThread(listen, what=f"the read API on {address}:{self.port}", name="tradebook-api")

    @property
    def url(self) -> str:
        """The API's base URL (a wildcard address is shown as 127.0.0.1, where this machine reaches it)."""
        return f"http://{url_host(self.address)}:{self.port}{API_PREFIX}"

    def stop(self) -> None:
        """Stop listening and end the loop's thread (safe to call twice); the port is free when it returns."""
        self._thread.stop(lambda server: server.stop())

    def __enter__(self) -> ApiServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"ApiServer({self.url}, {'token' if self.token else 'no token'})"


def serve_api(source: MonitorSource, *, address: str = "127.0.0.1", port: int = 0,
              token: str | None = None) -> ApiServer:
    """Serve the read API over ``source`` alone (tests, scripts); beyond loopback it needs ``token``."""
    return ApiServer(source, address=address, port=port, token=token)


__all__ = ["ApiServer", "ENDPOINTS", "Endpoint", "api_routes", "json_rows", "json_value", "serve_api"]
