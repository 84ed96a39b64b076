"""session.controls(): the widgets' logic without a browser, clicked through the widget objects on a real session."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from tests.monitor.conftest import RESTING_ID, trading_session
from tradebook.data import load_bundled
from tradebook.data.feeds import ReplayFeed
from tradebook.widgets import SessionControls

WAIT_S = 10
FILES = "binance_spot_btcusdt_20240808T2354-20240809T0005_"
BTC = "BTCUSDT.BINANCE"


@pytest.fixture(scope="module")
def batches():
    quotes, trades = load_bundled(FILES + "l1_quotes.csv.gz"), load_bundled(FILES + "trades.csv.gz")
    return list(ReplayFeed({BTC: quotes.frame}, {BTC: trades.frame}).batches())


@pytest.fixture
def session(calibrated_btc_store, tmp_path, batches):
    running = trading_session(calibrated_btc_store, tmp_path / "state", batches)
    yield running
    running.stop()


def wait_for(condition, what: str) -> None:
    """Wait until ``condition()`` holds, up to WAIT_S; fail saying what was awaited."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {WAIT_S} s for {what}")
        time.sleep(0.02)


def test_each_action_waits_for_its_confirmation_then_acts_on_the_session(session, batches):
    controls = session.controls(interval_s=0)
    assert isinstance(controls, SessionControls)
    assert "running" in controls.status_html.value and "working orders" in controls.status_html.value
    assert not controls.buttons["halt"].disabled and controls.buttons["resume"].disabled

    controls.buttons["halt"].click()  # armed, not done
    assert (controls.armed, controls.confirm_row.layout.display) == ("halt", "flex")
    assert session.status()["kill_switch"] == "normal"
    controls.cancel_button.click()
    assert (controls.armed, controls.confirm_row.layout.display) == (None, "none")
    assert session.status()["kill_switch"] == "normal" and controls.message.value == "halt cancelled"

    controls.buttons["halt"].click()
    controls.reason.value = "news pending"
    controls.confirm_button.click()
    assert (session.status()["kill_switch"], session.status()["kill_switch_reason"]) == ("halted", "news pending")
    assert controls.message.value == "halted: news pending"
    assert controls.buttons["halt"].disabled and not controls.buttons["resume"].disabled  # what can be done now
    assert "news pending" in controls.status_html.value

    controls.buttons["pause"].click()
    controls.confirm_button.click()
    assert str(session.state) == "paused" and controls.buttons["pause"].disabled
    controls.buttons["resume"].click()
    controls.confirm_button.click()
    assert (str(session.state), session.status()["kill_switch"]) == ("running", "normal")

    controls.buttons["flatten"].click()
    controls.reason.value = "   "
    controls.confirm_button.click()  # refused: a flatten needs a reason; nothing done
    assert "flatten refused: flatten needs a reason" in controls.message.value
    assert session.oms.order_for_intent(RESTING_ID).status == "accepted"
    controls.buttons["flatten"].click()
    assert controls.reason.value == "flattened from the notebook"  # a reason is offered
    controls.confirm_button.click()
    assert controls.message.value.startswith("flattening (flattened from the notebook): 1 order(s)")
    for batch in batches[6:9]:
        session.step(batch)
    assert session.positions()["quantity"].tolist() == [Decimal(0)]
    controls.close()


def test_the_refresher_follows_the_session_and_stops_with_it(session, batches):
    controls = session.controls(interval_s=0.05)
    assert controls.refreshing
    shown = controls.status_html.value
    session.step(batches[6])  # session time moves: the status redraws by itself
    wait_for(lambda: controls.status_html.value != shown, "the status to redraw after a step")
    session.stop()
    wait_for(lambda: not controls.refreshing, "the refresher to end with the session")
    assert "stopped" in controls.status_html.value
    assert all(button.disabled for button in controls.buttons.values())
    assert controls.message.value == "the session is stopped: controls act on a running or paused session"
    controls.buttons["halt"].click()
    controls.confirm_button.click()  # a click that slipped through is refused with the reason
    assert "halt refused: halt: the session is stopped" in controls.message.value
    controls.close()
