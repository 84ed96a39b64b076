"""Monitoring: what a running session (or a closed store) shows a trader, in a browser and over HTTP.

``open_source(session_or_path)`` gives a :class:`~.source.MonitorSource` (a running session
read through itself, or a closed store opened read-only per refresh); ``serve_monitor(source)``
serves the Panel dashboard (:mod:`.app`, built from the view functions of :mod:`.views`) and
the read API (:mod:`.api`) beside it on 127.0.0.1 (:mod:`.server`). ``session.dashboard()``
and ``tradebook dashboard`` call these. Names load on first use: importing this package
does not import Panel.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "MonitorSource": "source", "SessionSource": "source", "StoreSource": "source", "open_source": "source",
    "MonitorServer": "server", "serve_monitor": "server",
    "build_app": "app",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tradebook.monitor' has no attribute {name!r}")
    return getattr(importlib.import_module(f"tradebook.monitor.{module}"), name)


def __dir__() -> list[str]:
    return sorted(_EXPORTS)


__all__ = sorted(_EXPORTS)
