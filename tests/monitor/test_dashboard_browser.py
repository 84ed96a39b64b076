"""Issue 14, done when 1: the dashboard in a real browser while a replay session trades, and the halt from it.

A paper session replays the recorded BTCUSDT quotes at 10x (a strategy flips 0.01 BTC every
10 s of session time) and serves its dashboard from its own process (``session.dashboard()``).
Debian's chromium, driven by Playwright, opens the page with every request off this machine
aborted, sees the fill count and the P&L change between two reads, clicks Halt, confirms,
and sees the kill switch halted; the session sends nothing after that (every order the
strategy asks for is refused before it leaves). The screenshot of the halted dashboard is
``build/test-artifacts/dashboard-halt.png``.
"""

from __future__ import annotations

import re
import time
from decimal import Decimal
from pathlib import Path

import pytest

from tests.monitor.conftest import BTC, FILES
from tests.test_notebooks_browser import CHROMIUM, CHROMIUM_ARGS
from tradebook.data import load_bundled
from tradebook.data.feeds import ReplayFeed
from tradebook.model.instruments import Side
from tradebook.model.orders import Signal
from tradebook.session import Session

ARTIFACTS = Path(__file__).resolve().parents[2] / "build" / "test-artifacts"
SPEED = 10.0  # seconds of market time a wall second: the recorded 11 minutes last 66 s, long enough to watch
FLIP_EVERY_NS = 10_000_000_000
WAIT_MS = 20_000  # for the page to show a change the session makes within a few seconds
NUMBER = re.compile(r"^-?[0-9][0-9,]*(\.[0-9]+)?$")


def flipper(batch, view):
    """Every 10 s of session time a market order of 0.01 BTC, buying when flat or short and selling when long."""
    if batch.start_ns // FLIP_EVERY_NS == batch.end_ns // FLIP_EVERY_NS:  # no 10 s mark crossed in this batch
        return []
    side = Side.SELL if view.positions.get(BTC, Decimal(0)) > 0 else Side.BUY
    return [Signal("flipper", f"flip-{batch.end_ns // FLIP_EVERY_NS}", BTC, side, view.now_ns, strength=0.95,
                   quantity=Decimal("0.01"))]


@pytest.fixture
def replaying(calibrated_btc_store, tmp_path):
    """A paper session replaying at 10x with the flipping strategy, serving its dashboard; both stopped at the end."""
    quotes, trades = load_bundled(FILES + "l1_quotes.csv.gz"), load_bundled(FILES + "trades.csv.gz")
    feed = ReplayFeed({BTC: quotes.frame}, {BTC: trades.frame}, speed=SPEED)
    session = Session(calibrated_btc_store, calibrations=[BTC], state_dir=tmp_path / "state", feed=feed,
                      strategy=flipper).start()
    try:
        server = session.dashboard()
        try:
            yield session, server
        finally:
            server.stop()
    finally:
        session.stop()


@pytest.fixture(scope="module")
def page():
    if not CHROMIUM.is_file():
        pytest.fail(f"no chromium at {CHROMIUM}: `make setup` installs Debian's chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            outside: list[str] = []

            def local_only(route):
                url = route.request.url
                if url.startswith(("http://127.0.0.1:", "ws://127.0.0.1:", "data:", "blob:")):
                    route.continue_()
                else:
                    outside.append(url)
                    route.abort()

            context.route("**/*", local_only)
            page = context.new_page()
            page.outside = outside
            yield page
        finally:
            browser.close()


def shown(locator) -> str:
    """The number an element shows, once it shows one (the page swaps its content every second)."""
    deadline = time.monotonic() + WAIT_MS / 1000
    while time.monotonic() < deadline:
        text = locator.inner_text(timeout=WAIT_MS).strip()
        if NUMBER.match(text):
            return text
        time.sleep(0.05)
    raise AssertionError(f"{locator} showed no number within {WAIT_MS} ms (last: {text!r})")


def sent_orders(session: Session) -> list[str]:
    """Client ids of the orders that left for the venue (a refused order is stored 'rejected' and never sent)."""
    orders = session.orders()
    return sorted(orders.loc[orders["status"] != "rejected", "client_order_id"])


def test_the_dashboard_shows_the_replay_trading_and_halts_it(page, replaying):  # the browser first: it is slower
    from playwright.sync_api import expect

    session, server = replaying
    page.goto(server.url, timeout=WAIT_MS)
    fills, equity, realised = page.locator("#tb-fills"), page.locator("#tb-equity"), page.locator("#tb-realised-pnl")
    expect(page.locator("#tb-state")).to_have_text("running", timeout=WAIT_MS)
    first_fills, first_equity, first_realised = shown(fills), shown(equity), shown(realised)
    # the page refreshes itself every second: they move while the strategy trades
    expect(fills).not_to_have_text(first_fills, timeout=WAIT_MS)
    expect(equity).not_to_have_text(first_equity, timeout=WAIT_MS)
    expect(realised).not_to_have_text(first_realised, timeout=WAIT_MS)  # each flip closes a position
    assert int(shown(fills).replace(",", "")) > int(first_fills.replace(",", ""))
    expect(page.locator(".tb-fills table tbody tr").first).to_be_visible(timeout=WAIT_MS)

    page.locator(".tb-control-halt button").click()
    confirm = page.locator(".tb-confirm button")
    expect(confirm).to_be_visible(timeout=WAIT_MS)
    expect(page.locator(".tb-question-text")).to_contain_text("New orders are refused")
    assert str(session.kill_switch.mode) == "normal", "the first click only asks"
    confirm.click()

    expect(page.locator("#tb-kill-switch")).to_have_text("halted", timeout=WAIT_MS)
    expect(page.locator(".tb-message")).to_contain_text("Halt: done.")
    assert str(session.kill_switch.mode) == "halted" and "dashboard" in session.kill_switch.reason
    time.sleep(1)  # a market order sent just before the halt gets its fill in session time
    sent, orders_before = sent_orders(session), session.status()["orders"]
    session.wait_until(session.now_ns + 3 * FLIP_EVERY_NS, timeout=30)  # three more flips asked for
    assert sent_orders(session) == sent, "an order left for the venue after the halt"
    refused = session.orders().iloc[orders_before:]
    assert len(refused) >= 2 and set(refused["status"]) == {"rejected"}, refused[["status", "reason"]]
    assert refused["reason"].str.contains("halt").all(), refused["reason"].tolist()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-halt.png"), full_page=True)

    session.pause()  # the refused orders stop coming: the page catches up with the session's count
    expect(page.locator("#tb-state")).to_have_text("paused", timeout=WAIT_MS)
    expect(page.locator("#tb-orders")).to_have_text(f"{session.status()['orders']:,}", timeout=WAIT_MS)
    realised_now = f"{session.status()['realised_pnl']:+,.2f}"
    expect(page.locator(".tb-accounts-paper")).to_contain_text(f"realised {realised_now}", timeout=WAIT_MS)
    assert page.outside == [], f"the page asked for resources off this machine: {page.outside[:5]}"
