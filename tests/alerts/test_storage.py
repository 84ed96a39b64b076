"""Alerts in the store: one row per open condition (its count and last time grow), a new row once it closed and
fired again, the order path's own alerts not stored twice, recent_alerts newest first from a Store or a cursor."""

from __future__ import annotations

import pytest

from tradebook.alerts import AlertCenter, AlertNotice, Cleared, Severity, Source, recent_alerts
from tradebook.errors import StoreError
from tradebook.execution.bus import EventBus
from tradebook.execution.publisher import SessionPublisher
from tradebook.execution.oms import Alert
from tradebook.store import Store

SECOND = 1_000_000_000
T0 = 1_723_161_600 * SECOND


def slippage(ts_ns: int, bps: float) -> AlertNotice:
    return AlertNotice(ts_ns, "slippage", Severity.WARNING, "BTCUSDT.BINANCE", f"slipped {bps} bps",
                       "slippage:BTCUSDT.BINANCE")


@pytest.fixture
def center(tmp_path):
    store = Store(tmp_path / "alerts.duckdb")
    center = AlertCenter(store, sinks=[])
    yield center
    center.close()
    store.close()


def test_an_open_condition_is_one_row_whose_count_and_last_time_grow(center):
    for i, bps in enumerate([12.0, 15.0, 11.0]):
        center.notify(slippage(T0 + i * SECOND, bps))
    assert recent_alerts(center.store)["repeat_count"].tolist() == [1]  # repeats wait (a row write a second at most)
    center.flush()
    rows = recent_alerts(center.store)
    assert len(rows) == 1
    row = rows.iloc[0]
    assert (row.ts_ns, row.last_ts_ns, row.repeat_count) == (T0, T0 + 2 * SECOND, 3)
    assert (row.kind, row.severity, row.subject, row.source) == ("slippage", "warning", "BTCUSDT.BINANCE", "alerts")
    assert row.message == "slipped 11.0 bps" and str(row.time.tz) == "UTC"
    assert center.open_alerts == {"slippage:BTCUSDT.BINANCE": (T0, 3)}


def test_a_closed_condition_that_fires_again_is_a_new_row(center):
    center.notify(slippage(T0, 12.0))
    center.apply([Cleared("slippage:BTCUSDT.BINANCE", T0 + SECOND)])
    center.apply([Cleared("slippage:BTCUSDT.BINANCE", T0 + 2 * SECOND)])  # closing what is closed: nothing
    center.notify(slippage(T0 + 3 * SECOND, 20.0))
    rows = recent_alerts(center.store)
    assert rows["ts_ns"].tolist() == [T0 + 3 * SECOND, T0] and rows["repeat_count"].tolist() == [1, 1]


def test_alerts_stored_by_others_are_not_stored_again(center):
    center.notify(AlertNotice(T0, "position_mismatch", Severity.CRITICAL, "paper", "10 here, 9 at the venue",
                              "oms:position_mismatch", Source.ORDER_PATH))
    assert recent_alerts(center.store).empty and center.open_alerts == {}


def test_recent_alerts_reads_a_cursor_newest_first_with_a_limit(center):
    center.notify(slippage(T0, 12.0))
    center.notify(AlertNotice(T0 + SECOND, "latency", Severity.WARNING, "BTCUSDT.BINANCE", "slow", "latency:BTC"))
    center.notify(slippage(T0 + 5 * SECOND, 14.0))  # the slippage row's last time is now the newest
    center.flush()
    cursor = center.store.con.cursor()
    rows = recent_alerts(cursor, limit=2)
    assert rows["kind"].tolist() == ["slippage", "latency"]
    assert recent_alerts(cursor, limit=1)["repeat_count"].tolist() == [2]
    assert recent_alerts(cursor, kind="latency")["subject"].tolist() == ["BTCUSDT.BINANCE"]
    assert recent_alerts(cursor, severity="critical").empty
    assert recent_alerts(cursor, since_ns=T0 + 2 * SECOND)["kind"].tolist() == ["slippage"]
    with pytest.raises(StoreError, match="limit must be an int >= 1, got 0"):
        recent_alerts(cursor, limit=0)


def test_an_alert_that_cannot_be_stored_is_logged_not_raised(tmp_path, caplog):
    store = Store(tmp_path / "alerts.duckdb")
    center = AlertCenter(store, sinks=[])
    store.close()
    center.notify(slippage(T0, 12.0))
    assert center.errors == 1
    assert "could not store alert slippage:BTCUSDT.BINANCE (slipped 12.0 bps)" in caplog.text
    center.close()


def test_the_sessions_own_alerts_are_stored_once_and_the_order_managers_are_left_to_its_journal(center):
    bus = EventBus()
    center.attach(bus)
    publisher = SessionPublisher(bus, lambda: T0)
    publisher.alert(Alert(T0, "tca_failed", "TCA update failed (StoreError: disk full)"), journaled=False)
    publisher.alert(Alert(T0 + SECOND, "tca_failed", "TCA update failed again"), journaled=False)
    publisher.alert(Alert(T0 + SECOND, "cancel_failed", "could not cancel tb1"))  # the journal copy stores it
    assert center.drain()
    center.flush()
    rows = recent_alerts(center.store)
    assert rows[["kind", "repeat_count", "dedup_key"]].values.tolist() == [["tca_failed", 2, "session:tca_failed"]]
    assert rows.iloc[0].message == "tca_failed: TCA update failed again"
    bus.close()
