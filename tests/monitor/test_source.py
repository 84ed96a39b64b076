"""Monitor sources: a running session read through itself, a closed store read-only, a store another process writes."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import textwrap
import threading
from decimal import Decimal

import pandas as pd
import pytest

from tests.monitor.conftest import BOUGHT, BTC, RESTING_ID
from tradebook.errors import ConfigError, ControlError
from tradebook.monitor.source import (
    ALERT_COLUMNS,
    ORDER_COLUMNS,
    POSITION_COLUMNS,
    SessionSource,
    StoreSource,
    open_source,
)
from tradebook.promotion.stages import set_stage
from tradebook.store import Store

DASHBOARD_URL = "http://127.0.0.1:5099/"
READY_TIMEOUT_S = 60

# A writer in another process: holds the store read-write, names its dashboard, waits for a line on stdin.
WRITER = textwrap.dedent(f"""
    import sys
    from tradebook.store import Store
    from tradebook.store.holder import set_dashboard_url
    store = Store(sys.argv[1], purpose="a paper session (run other)")
    set_dashboard_url(store.path, {DASHBOARD_URL!r})
    print("ready", flush=True)
    sys.stdin.readline()
    store.close()
""")


def test_a_session_is_read_live_through_itself_and_its_history_through_its_connection(running_session):
    session = running_session
    source = open_source(session)
    assert isinstance(source, SessionSource) and source.can_control

    positions = source.positions()
    assert list(positions.columns) == ["time", *POSITION_COLUMNS]
    [position] = positions.to_dict("records")
    assert (position["instrument_id"], position["quantity"]) == (BTC, BOUGHT)
    assert position["mark_price"] is not None and isinstance(position["unrealised_pnl"], Decimal)
    assert str(positions["time"].dt.tz) == "UTC"

    [working] = source.working_orders().to_dict("records")
    resting = session.oms.order_for_intent(RESTING_ID)
    assert (working["client_order_id"], working["status"], working["limit_price"]) == \
        (resting.client_order_id, "accepted", resting.intent.limit_price)

    orders = source.orders()
    assert list(orders.columns) == ["time", *ORDER_COLUMNS]
    assert orders["client_order_id"].tolist()[0] == resting.client_order_id  # newest first
    assert sorted(orders["status"]) == ["accepted", "filled"]
    assert source.orders(status="filled")["instrument_id"].tolist() == [BTC]
    assert len(source.orders(limit=1)) == 1

    [fill] = source.fills().to_dict("records")
    [expected] = session.fills().to_dict("records")
    assert (fill["fill_id"], fill["quantity"], fill["price"]) == (expected["fill_id"], BOUGHT, expected["price"])
    assert isinstance(fill["price"], Decimal)  # exact, as the session holds it

    status = source.status()
    assert (status["state"], status["orders"], status["working_orders"], status["fills"]) == ("running", 2, 1, 1)
    assert (status["held_by"], status["can_control"], status["source"]) == (None, True, "session")

    set_stage(session.store, "nb", "paper", reason="from research")
    assert source.stages()[["strategy", "stage", "reason"]].values.tolist() == [["nb", "paper", "from research"]]
    session.store.con.execute(  # the gate's verdict on it, and on a strategy reviewed that never changed stage
        "INSERT INTO promotion_decisions VALUES (?, ?, ?, 'bt1', 0, 1, ?, ?, ?, '{}', FALSE, NULL)",
        ["d1", "nb", 5, "extend", "PAPER_DAYS_SHORT", "12 of 30 days"])
    session.store.con.execute("INSERT INTO promotion_decisions VALUES ('d2', 'other', 6, 'bt2', 0, 1, 'reject', "
                              "'SHARPE_OUT_OF_RANGE', 'Sharpe below its band', '{}', FALSE, NULL)")
    stages = source.stages().set_index("strategy")
    assert stages.loc["nb", ["stage", "decision", "codes", "summary"]].tolist() == \
        ["paper", "extend", "PAPER_DAYS_SHORT", "12 of 30 days"]
    assert stages.loc["other", ["decision", "backtest_id"]].tolist() == ["reject", "bt2"]
    assert pd.isna(stages.loc["other", "stage"])
    session.oms.alert("note", "a note for the monitor")
    session.oms.flush()
    alerts = source.alerts(kind="note")
    assert list(alerts.columns) == ["time", *ALERT_COLUMNS]
    assert alerts[["kind", "message"]].values.tolist() == [["note", "a note for the monitor"]]
    assert source.alerts(kind="note", since_ns=int(alerts["last_ts_ns"].iloc[0]) + 1).empty
    [tca] = source.tca_fills().to_dict("records")
    assert (tca["fill_id"], tca["instrument_id"]) == (fill["fill_id"], BTC) and "shortfall_bps" in tca
    assert sorted(source.tca_orders(level="order")["order_id"]) == sorted(orders["client_order_id"])

    with pytest.raises(ConfigError, match="orders cannot be filtered by side; expected instrument_id, since_ns, "
                                          "status, strategy_id"):
        source.orders(side="buy")
    with pytest.raises(ConfigError, match="limit is 0; expected a whole number from 1 to 100000"):
        source.fills(limit=0)


def test_controls_act_on_the_running_session_and_refuse_once_it_stopped(running_session, btc_batches):
    session = running_session
    source = SessionSource(session)
    source.pause()
    assert source.status()["state"] == "paused"
    source.resume()
    assert source.status()["state"] == "running"

    source.halt("news pending")
    assert (session.status()["kill_switch"], session.status()["kill_switch_reason"]) == ("halted", "news pending")
    source.resume()  # the feed and the kill switch
    assert session.status()["kill_switch"] == "normal"

    asked = source.flatten("risk off")
    assert [o.intent.intent_id for o in asked] == [RESTING_ID]
    for batch in btc_batches[6:9]:
        session.step(batch)
    assert source.positions()["quantity"].tolist() == [Decimal(0)]
    assert source.working_orders().empty

    with pytest.raises(ControlError, match="halt needs a reason"):
        source.halt("  ")
    session.stop()
    assert not source.can_control
    with pytest.raises(ControlError, match="halt: the session is stopped; controls act on a running or paused"):
        source.halt("too late")


def _start_writer(path) -> subprocess.Popen:
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ready, _, _ = select.select([writer.stdout], [], [], READY_TIMEOUT_S)
    if not ready or writer.stdout.readline().strip() != "ready":
        writer.kill()
        raise AssertionError(f"the writer did not open the store within {READY_TIMEOUT_S} s: {writer.stderr.read()}")
    return writer


def test_a_closed_store_is_read_without_holding_it_and_a_writer_elsewhere_is_named(running_session):
    session = running_session
    path, resting = session.store.path, session.oms.order_for_intent(RESTING_ID).client_order_id
    session.stop()
    session.store.close()

    source = open_source(path)
    assert isinstance(source, StoreSource) and not source.can_control
    status = source.status()
    assert (status["state"], status["orders"], status["working_orders"], status["fills"], status["held_by"]) == \
        ("stopped", 2, 1, 1, None)
    [position] = source.positions().to_dict("records")
    assert (position["quantity"], position["mark_price"], position["asset_class"]) == (BOUGHT, None, "crypto_spot")
    assert source.working_orders()["client_order_id"].tolist() == [resting]

    writer = _start_writer(path)  # it gets the writer's lock: the source let go of the file after each read
    try:
        held = source.status()
        assert held["state"] == "held" and held["dashboard_url"] == DASHBOARD_URL
        assert f"a paper session (run other) in PID {writer.pid}" in held["held_by"]
        with source.reading():
            assert source.positions().empty and list(source.positions().columns) == ["time", *POSITION_COLUMNS]
            assert source.orders().empty and source.tca_orders().empty and "fill_rate" in source.tca_orders().columns
        with pytest.raises(ControlError, match=f"controlled at its dashboard {DASHBOARD_URL}"):
            source.halt("stop it")
    finally:
        writer.communicate("\n", timeout=READY_TIMEOUT_S)
    assert writer.returncode == 0, writer.stderr

    again = source.status()
    assert (again["state"], again["held_by"], again["orders"]) == ("stopped", None, 2)

    # a dashboard page and an /api/ request refresh the same closed store at once: each thread reads through
    # its own open, never one another thread is closing
    errors: list[BaseException] = []

    def refresh() -> None:
        try:
            for _ in range(15):
                with source.reading():
                    assert source.status()["orders"] == 2 and len(source.orders()) == 2
                    assert len(source.working_orders()) == 1
        except BaseException as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=refresh) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    with pytest.raises(ControlError, match="no session runs on it"):
        source.flatten("nothing to flatten")


def test_open_source_refuses_what_it_cannot_read(tmp_path):
    with pytest.raises(ConfigError, match="open_source takes a Session, a Store or a store path, got int"):
        open_source(3)
    with pytest.raises(Exception, match="no store at"):
        open_source(tmp_path / "missing.duckdb")
    with Store(tmp_path / "empty.duckdb", purpose="a notebook") as store:
        source = open_source(store)  # this process holds it for writing: read through the same file, saying so
        status = source.status()
        assert (status["state"], status["orders"]) == ("held", 0)
        assert status["held_by"].startswith(f"a notebook in PID {os.getpid()} ")
        assert isinstance(source.orders(), pd.DataFrame) and source.orders().empty
        with pytest.raises(ControlError, match=r"is controlled here, through the session \(session.controls\(\)"):
            source.pause()
    assert open_source(tmp_path / "empty.duckdb").status()["held_by"] is None  # closed: nobody holds it
