"""The read API over real HTTP: every endpoint on 127.0.0.1, filters and their 400s, a token beyond loopback."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from decimal import Decimal
from email.message import Message

import pandas as pd
import pytest

from tests.monitor.conftest import BTC, RESTING_ID
from tradebook.errors import ConfigError, MonitorServerError
from tradebook.monitor.api import ENDPOINTS, json_value, serve_api
from tradebook.monitor.auth import check_binding, is_loopback
from tradebook.monitor.source import SessionSource, StoreSource
from tradebook.store import Store

TIMEOUT_S = 10
TOKEN = "s3cret-token"


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict, Message]:
    """(status, JSON body, headers: case-insensitive) of a GET; HTTP errors are answers too."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return response.status, json.loads(response.read()), response.headers
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), exc.headers


def machine_address() -> str | None:
    """This machine's address on its default route (not loopback), or None when it has none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 9))  # no packet is sent: connect only picks the outgoing address
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if is_loopback(address) or address == "0.0.0.0" else address


def test_every_endpoint_answers_on_loopback_with_exact_values(running_session):
    session = running_session
    with serve_api(SessionSource(session)) as api:
        assert api.url.startswith("http://127.0.0.1:")
        for endpoint in ENDPOINTS:
            code, body, headers = get(api.url + endpoint.path)
            assert code == 200, (endpoint.path, body)
            assert headers["Content-Type"].startswith("application/json")

        code, orders, _ = get(api.url + "orders")
        assert (orders["count"], orders["limit"], orders["source"], orders["held_by"]) == (2, 200, "session", None)
        resting = session.oms.order_for_intent(RESTING_ID)
        newest = orders["rows"][0]
        assert (newest["client_order_id"], newest["status"], newest["limit_price"]) == \
            (resting.client_order_id, "accepted", str(resting.intent.limit_price))
        assert newest["ts_last"] == pd.Timestamp(newest["time"]).value and newest["time"].endswith("Z")

        [fill] = get(api.url + "fills")[1]["rows"]
        [expected] = session.fills().to_dict("records")
        assert (fill["quantity"], fill["price"], fill["fee"]) == \
            ("0.01", format(expected["price"].normalize(), "f"), format(expected["fee"].normalize(), "f"))
        assert isinstance(fill["ts_event"], int)

        [position] = get(api.url + "positions")[1]["rows"]
        assert (position["instrument_id"], position["quantity"]) == (BTC, "0.01")
        assert Decimal(position["unrealised_pnl"]) == session.positions()["unrealised_pnl"].iloc[0]
        assert get(api.url + "working_orders")[1]["rows"][0]["client_order_id"] == resting.client_order_id
        status = get(api.url + "status")[1]
        assert (status["state"], status["orders"], status["fills"]) == ("running", 2, 1)
        assert get(api.url + "health")[1]["ok"] is True
        assert [r["fill_id"] for r in get(api.url + "tca/fills")[1]["rows"]] == [fill["fill_id"]]
        assert "/api/tca/orders" in get(api.url)[1]["endpoints"]

        # filters and limits
        assert [r["status"] for r in get(api.url + "orders?status=filled")[1]["rows"]] == ["filled"]
        assert get(api.url + "orders?limit=1")[1]["count"] == 1
        after = pd.Timestamp(newest["ts_last"] + 1, unit="ns", tz="UTC").isoformat()
        assert get(api.url + f"orders?since={urllib.parse.quote(after)}")[1]["count"] == 0
        assert get(api.url + f"orders?since={newest['ts_last']}")[1]["count"] == 1
        assert get(api.url + f"fills?instrument_id={BTC}&strategy_id=nb")[1]["count"] == 1

        for query, message in [
            ("orders?limit=abc", "limit is 'abc'; expected a whole number from 1 to 100000"),
            ("fills?limit=0", "limit is '0'; expected a whole number from 1 to 100000"),
            ("orders?side=buy", "/api/orders takes no parameter side; expected instrument_id, limit, since, status, "
                                "strategy_id"),
            ("positions?limit=5", "/api/positions takes no parameter limit; expected none"),
            ("alerts?since=yesterday-ish", "since is 'yesterday-ish'; expected an ISO-8601 time"),
            ("orders?status=", "status is empty; expected a value"),
        ]:
            code, body, _ = get(api.url + query)
            assert (code, body["error"][:len(message)]) == (400, message), query
        code, body, _ = get(api.url + "nope")
        assert code == 404 and body["error"].startswith("no endpoint /api/nope; expected one of /api/orders")
    with pytest.raises(OSError):  # stopped: the port is closed
        urllib.request.urlopen(api.url + "health", timeout=TIMEOUT_S)


def test_beyond_loopback_a_token_is_required_to_start_and_on_every_request(tmp_path):
    with pytest.raises(ConfigError, match="would listen on 0.0.0.0, beyond this machine, without a token"):
        serve_api(StoreSource(_closed_store(tmp_path)), address="0.0.0.0")
    with pytest.raises(ConfigError, match="the monitor's token is '  '; expected a non-empty string"):
        check_binding("127.0.0.1", "  ")
    check_binding("127.0.0.1", None)  # loopback alone needs none

    address = machine_address()
    with serve_api(StoreSource(_closed_store(tmp_path)), address="0.0.0.0", token=TOKEN) as api:
        base = f"http://{address or '127.0.0.1'}:{api.port}/api/"
        code, body, headers = get(base + "orders")
        assert (code, headers.get("WWW-Authenticate")) == (401, 'Bearer realm="tradebook monitor"')
        assert "needs its token" in body["error"]
        assert get(base + "orders", {"Authorization": "Bearer wrong"})[0] == 401
        assert get(base + "orders?token=wrong")[0] == 401
        code, body, _ = get(base + "orders", {"Authorization": f"Bearer {TOKEN}"})
        assert (code, body["count"], body["source"]) == (200, 0, "store")
        assert get(base + f"status?token={TOKEN}")[1]["state"] == "stopped"  # the token is not a filter
        assert get(base + "nope")[0] == 401  # unknown paths say nothing without the token


def test_a_port_in_use_is_refused_saying_so(tmp_path):
    source = StoreSource(_closed_store(tmp_path))
    with serve_api(source) as first:
        with pytest.raises(MonitorServerError, match=f"the read API cannot listen on 127.0.0.1:{first.port}: "):
            serve_api(source, port=first.port)
        assert get(first.url + "health")[0] == 200  # the first one is untouched
    first.stop()  # a second stop is harmless


def _closed_store(tmp_path):
    path = tmp_path / "closed.duckdb"
    if not path.exists():
        Store(path).close()
    return path


@pytest.mark.parametrize(("address", "loopback"), [
    ("127.0.0.1", True), ("127.3.2.1", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("0.0.0.0", False), ("", False), ("::", False), ("192.0.2.7", False), ("example.com", False),
])
def test_loopback_addresses(address, loopback):
    assert is_loopback(address) is loopback


def test_values_in_json_keep_their_exactness():
    assert [json_value(v) for v in (Decimal("0.010000000000"), Decimal("1E+2"), Decimal("-3.5"))] == \
        ["0.01", "100", "-3.5"]
    assert json_value(pd.Timestamp(1_723_161_600_123_456_789, unit="ns", tz="UTC")) == \
        "2024-08-09T00:00:00.123456789Z"
    assert [json_value(v) for v in (float("nan"), pd.NaT, None, float("inf"))] == [None, None, None, None]
