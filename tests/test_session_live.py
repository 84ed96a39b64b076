"""Sessions and venues from configuration: the paper fallback said out loud, and arming a broker account.

The broker is the real AlpacaVenue (alpaca-py) against the Alpaca sandbox on 127.0.0.1; the
store is test_session's calibrated template (BTCUSDT and IBM).
"""

from __future__ import annotations

import socket
import time
from decimal import Decimal

import pandas as pd
import pytest

from test_session import BTC, IBM, frames, sessions, signal, store, template  # noqa: F401 (fixtures)
from tradebook.config import TradebookConfig
from tradebook.data.feeds import FeedBatch, ReplayFeed
from tradebook.errors import SessionError
from tradebook.model.orders import OrderStatus
from tradebook.sandbox.alpaca import DEFAULT_KEY, DEFAULT_SECRET, AlpacaSandbox
from tradebook.session import Session
from tradebook.venues.paper import PaperVenue

ACCOUNT = "PA-TEST"
REGULAR = int(pd.Timestamp("2013-10-07T14:00:00Z").value)  # 10:00 New York: regular hours
SECOND = 1_000_000_000


def config() -> TradebookConfig:
    return TradebookConfig(routing={"equity": "alpaca"},
                           venues={"alpaca": {"enabled": True, "account_id": ACCOUNT}})


def credentials(monkeypatch, server: AlpacaSandbox | None = None, *, port: int | None = None) -> None:
    monkeypatch.setenv("TRADEBOOK_ALPACA_KEY_ID", server.key if server is not None else DEFAULT_KEY)
    monkeypatch.setenv("TRADEBOOK_ALPACA_SECRET_KEY", server.secret if server is not None else DEFAULT_SECRET)
    monkeypatch.setenv("TRADEBOOK_ALPACA_ACCOUNT", ACCOUNT)
    if server is not None or port is not None:
        base = server.base_url if server is not None else f"http://127.0.0.1:{port}"
        monkeypatch.setenv("TRADEBOOK_ALPACA_BASE_URL", base)
        monkeypatch.setenv("TRADEBOOK_ALPACA_STREAM_URL", base.replace("http://", "ws://") + "/stream")


def ibm_batch(frames):  # noqa: F811 - the fixture's value
    quotes, _ = frames[IBM]
    first = int(quotes.loc[quotes["ts_ns"] >= REGULAR, "ts_ns"].iloc[0])  # the first quote of regular hours
    window = (quotes["ts_ns"] >= first) & (quotes["ts_ns"] < first + SECOND)
    [batch] = list(ReplayFeed({IBM: quotes[window]}, start_ns=first, end_ns=first + SECOND).batches())
    return batch


def alpaca_session(store, tmp_path, sessions, frames, monkeypatch,  # noqa: F811 - the fixtures' values
                   server: AlpacaSandbox) -> tuple[Session, FeedBatch]:
    """A session armed on the sandbox's account, not started, and the batch to step it with (IBM quoted there as in
    the batch)."""
    credentials(monkeypatch, server)
    batch = ibm_batch(frames)
    bid, ask = batch.last_quote(IBM)[1:3]
    server.set_price("IBM", f"{bid:.2f}", f"{ask:.2f}")
    s = Session(store, calibrations=[IBM], state_dir=tmp_path / "s", config=config())
    sessions.append(s)
    s.arm_live("alpaca", confirm=ACCOUNT)
    return s, batch


def armed_alpaca_session(store, tmp_path, sessions, frames, monkeypatch,  # noqa: F811 - the fixtures' values
                         server: AlpacaSandbox) -> Session:
    """:func:`alpaca_session`, started and stepped once."""
    s, batch = alpaca_session(store, tmp_path, sessions, frames, monkeypatch, server)
    s.start()
    s.step(batch)
    return s


def alerts_in_store(store, kind: str) -> list[str]:  # noqa: F811
    return [m for (m,) in store.con.execute("SELECT message FROM alerts WHERE kind = ?", [kind]).fetchall()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- paper fallback, visible ------------------------------------------------------------------------------
def test_an_unbuildable_adapter_sends_orders_to_paper_and_status_alert_and_store_say_so(store, tmp_path,  # noqa: F811
                                                                                      sessions, monkeypatch):  # noqa: F811
    monkeypatch.delenv("TRADEBOOK_ALPACA_KEY_ID", raising=False)
    s = Session(store, calibrations=[IBM], state_dir=tmp_path / "s", config=config())
    sessions.append(s)
    assert isinstance(s.venue, PaperVenue) and s.status()["mode"] == "paper"
    assert s.status()["routes"].startswith("equity: paper: AlpacaVenue for alpaca could not be built")
    [alert] = [a for a in s.oms.alerts() if a.kind == "paper_fallback"]
    assert "equity orders go to the paper venue" in alert.message and "TRADEBOOK_ALPACA_KEY_ID" in alert.message
    s.start()
    s.stop()
    assert alerts_in_store(store, "paper_fallback") == [alert.message]
    again = Session(store, calibrations=[IBM], state_dir=tmp_path / "s", config=config())  # a restart: once
    sessions.append(again)
    assert [a.message for a in again.oms.alerts() if a.kind == "paper_fallback"] == [alert.message]


def test_force_paper_keeps_a_routed_broker_unbuilt_and_says_so(store, tmp_path, sessions, monkeypatch):  # noqa: F811
    credentials(monkeypatch)
    monkeypatch.setenv("TRADEBOOK_FORCE_PAPER", "true")
    s = Session(store, calibrations=[IBM], state_dir=tmp_path / "s", config=config())
    sessions.append(s)
    assert s.routing.venues == {} and "TRADEBOOK_FORCE_PAPER=true" in s.status()["routes"]
    assert [a.kind for a in s.oms.alerts()] == ["paper_fallback"]
    with pytest.raises(SessionError, match="alpaca cannot be armed: TRADEBOOK_FORCE_PAPER=true"):
        s.arm_live("alpaca", confirm=ACCOUNT)


def test_a_plain_paper_session_has_no_fallback_to_announce(store, tmp_path, sessions):  # noqa: F811
    s = Session(store, calibrations=[BTC], state_dir=tmp_path / "s", config=TradebookConfig())
    sessions.append(s)
    assert s.oms.alerts() == [] and s.status()["routes"] == "crypto_spot: paper: no venue routed for it"


# -- arming -----------------------------------------------------------------------------------------------
def test_arming_needs_the_account_typed_out_a_real_broker_and_a_session_not_started(store, tmp_path,  # noqa: F811
                                                                                    sessions, monkeypatch):  # noqa: F811
    credentials(monkeypatch)
    s = Session(store, calibrations=[IBM], state_dir=tmp_path / "s", config=config())
    sessions.append(s)
    assert s.status()["routes"] == "equity: paper (alpaca routed, not armed)"
    with pytest.raises(SessionError, match=f"needs confirm='{ACCOUNT}'"):
        s.arm_live("alpaca", confirm="yes")
    with pytest.raises(SessionError, match="simulated: paper trading needs no arming"):
        s.arm_live(s.venue, confirm=s.venue.account_id)
    with pytest.raises(SessionError, match="no venue 'binance' is routed"):
        s.arm_live("binance", confirm="x")
    assert isinstance(s.venue, PaperVenue)  # nothing changed
    mixed = Session(store, calibrations=[IBM, BTC], state_dir=tmp_path / "m", config=config())
    sessions.append(mixed)
    with pytest.raises(SessionError, match="BTCUSDT.BINANCE do not trade on alpaca: a session trades on one venue"):
        mixed.arm_live(ACCOUNT, confirm=ACCOUNT)
    s.start()
    with pytest.raises(SessionError, match="arm_live before start"):
        s.arm_live("alpaca", confirm=ACCOUNT)


KEY_ID, SECRET_KEY = "PKTRADEBOOKKEYID0042", "sk-tradebook-secret-7f3e9a1c55"


def test_an_armed_alpaca_account_trades_through_the_session_against_the_sandbox(store, tmp_path, sessions,  # noqa: F811
                                                                               frames, monkeypatch, caplog):  # noqa: F811
    caplog.set_level("DEBUG")
    with AlpacaSandbox(key=KEY_ID, secret=SECRET_KEY) as server:
        s, batch = alpaca_session(store, tmp_path, sessions, frames, monkeypatch, server)
        assert s.venue.name == "alpaca" and s.status()["account"] == ACCOUNT
        s.start()
        assert s.status()["routes"] == f"alpaca (account {ACCOUNT})" and s.status()["mode"] == "paper"
        s.step(batch)
        [order] = s.submit(signal("live-1", instrument=IBM, quantity="10"))
        for _ in range(200):
            if s.oms.order(order.client_order_id).status is OrderStatus.FILLED:
                break
            time.sleep(0.05)
        filled = s.oms.order(order.client_order_id)
        assert filled.status is OrderStatus.FILLED and filled.filled_qty == Decimal(10)
        assert server.positions() == {"IBM": Decimal(10)}
        kinds = {a.kind for a in s.oms.alerts()}
        assert "armed" in kinds and not kinds & {"instrument_not_listed", "instrument_rules_differ"}  # IBM agrees
        shown = repr(s) + repr(s.venue) + repr(s.status()) + s.orders().to_string()
        s.stop()
    assert (tmp_path / "s" / f"oms-alpaca-{ACCOUNT}.journal").exists()
    assert alerts_in_store(store, "armed") and store.con.execute("SELECT count(*) FROM fills").fetchone() == (1,)
    # the credentials are nowhere: not in the store's tables, the state folder's files, the logs, what is shown
    tables = [t for (t,) in store.con.execute("SELECT table_name FROM duckdb_tables()").fetchall()]
    text = [shown, caplog.text] + [str(store.con.execute(f'SELECT * FROM "{t}"').fetchall()) for t in tables]
    text += [p.read_bytes().decode("utf-8", "replace") for p in (tmp_path / "s").rglob("*") if p.is_file()]
    for secret in (KEY_ID, SECRET_KEY):
        assert not [t[:80] for t in text if secret in t]


def test_an_armed_account_that_fails_its_health_check_at_connect_leaves_the_session_on_paper(
        store, tmp_path, sessions, monkeypatch):  # noqa: F811
    credentials(monkeypatch, port=free_port())  # nothing listens there
    s = Session(store, calibrations=[IBM], state_dir=tmp_path / "s", config=config())
    sessions.append(s)
    s.arm_live("alpaca", confirm=ACCOUNT)
    s.start()
    assert isinstance(s.venue, PaperVenue) and s.status()["mode"] == "paper"
    assert s.status()["routes"].startswith(f"paper: alpaca account {ACCOUNT} failed its health check")
    assert any(a.kind == "paper_fallback" and "failed its health check" in a.message for a in s.oms.alerts())
    s.stop()
    assert alerts_in_store(store, "paper_fallback")


def test_an_order_whose_reply_is_lost_is_found_by_the_session_not_sent_twice(store, tmp_path, sessions,  # noqa: F811
                                                                           frames, monkeypatch):  # noqa: F811
    from tradebook.sandbox.alpaca import AlpacaFault

    with AlpacaSandbox() as server:
        s = armed_alpaca_session(store, tmp_path, sessions, frames, monkeypatch, server)
        server.fault(AlpacaFault.DROP_STREAM_BEFORE_FILL)  # the fill is not streamed: only asking finds it
        server.fault(AlpacaFault.DROP_AFTER_ACCEPT)
        [order] = s.submit(signal("lost-reply", instrument=IBM, quantity="10"))
        # unresolved, unless the stream's acknowledgement won the race against the dropped reply
        assert order.status in (OrderStatus.UNRESOLVED, OrderStatus.ACCEPTED)
        for _ in range(300):  # the session asks Alpaca by client order id (or the adapter's recovery finds the fill)
            if s.oms.order(order.client_order_id).status is OrderStatus.FILLED:
                break
            time.sleep(0.05)
        assert s.oms.order(order.client_order_id).status is OrderStatus.FILLED and s.oms.unresolved() == []
        if order.status is OrderStatus.UNRESOLVED:
            assert "outcome_unknown" in {a.kind for a in s.oms.alerts()}
        assert list(server.requests).count(("POST", "/v2/orders")) == 1 and server.positions() == {"IBM": Decimal(10)}
        s.stop()


def test_an_instrument_the_broker_does_not_list_is_said_at_connect(store, tmp_path, sessions,  # noqa: F811
                                                                   monkeypatch):
    with AlpacaSandbox() as server:
        server.assets.pop("IBM")  # Alpaca's asset list without IBM
        credentials(monkeypatch, server)
        s = Session(store, calibrations=[IBM], state_dir=tmp_path / "s", config=config())
        sessions.append(s)
        s.arm_live("alpaca", confirm=ACCOUNT)
        s.start()
        [alert] = [a for a in s.oms.alerts() if a.kind == "instrument_not_listed"]
        assert alert.message == "IBM.XNYS is not among alpaca's instruments: its orders may be refused"
        s.stop()
