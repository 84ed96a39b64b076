"""Who may read a monitor: loopback is private to this machine; any other address needs a token.

A monitor bound to 127.0.0.1 (or ::1, or ``localhost``) is reachable only from this
machine; bound anywhere else (0.0.0.0, a LAN address, a host name) anyone who can reach
the port could read positions and orders, so :func:`check_binding` refuses to start it
without a token. When a token is set, every request must carry it, on loopback too:
``Authorization: Bearer <token>`` or ``?token=<token>`` (:func:`authorized`).
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Any

from tradebook.errors import ConfigError

LOOPBACK_NAMES = frozenset({"localhost"})


def is_loopback(address: str) -> bool:
    """Whether binding ``address`` keeps a server private to this machine (127.0.0.0/8, ::1, ``localhost``)."""
    if address in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name or the empty string (every interface): reachable from elsewhere


def check_binding(address: str, token: str | None) -> None:
    """Refuse (ConfigError) a server bound beyond loopback without a token, or with a blank one."""
    if token is not None and (not isinstance(token, str) or not token.strip()):
        raise ConfigError(f"the monitor's token is {token!r}; expected a non-empty string (or None on 127.0.0.1)")
    if token is None and not is_loopback(address):
        shown = address or "every interface"
        raise ConfigError(f"the monitor would listen on {shown}, beyond this machine, without a token: anyone who "
                          "reaches the port could read positions and orders; bind 127.0.0.1 or set a token "
                          "(token='...' or --token)")


def request_token(request: Any) -> str | None:
    """The token a tornado request carries: its ``Authorization: Bearer`` header, else its ``token`` argument."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    values = request.query_arguments.get("token")
    return values[-1].decode("utf-8", "replace") if values else None


def authorized(request: Any, token: str | None) -> bool:
    """Whether ``request`` may read: always when no token is set (loopback only), else when it carries it."""
    if token is None:
        return True
    given = request_token(request)
    return given is not None and hmac.compare_digest(given.encode("utf-8"), token.encode("utf-8"))


__all__ = ["authorized", "check_binding", "is_loopback", "request_token"]
