"""Each alert rule fires on a real paper session (or its real inputs) and keeps quiet below its threshold.

Two sessions trade the same scripted market (quotes each quarter second; a market buy with a
protective stop, a passive limit far below that never fills, then a drop through the stop):
one with thresholds the script crosses, one with thresholds it stays under. The rules that
need other inputs (TCA rows, a venue's health, a promotion reversion) get them for real too.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tradebook.alerts import AlertCenter, recent_alerts
from tradebook.config import AlertsConfig, TradebookConfig
from tradebook.data.feeds import FeedBatch, QuoteArrays
from tradebook.execution.risk import PreTradeRisk, ReferenceQuote, RiskContext
from tradebook.model.instruments import Side, get_instrument
from tradebook.model.orders import OrderIntent, OrderType, Signal, TimeInForce
from tradebook.promotion.gate import override
from tradebook.promotion.reversion import Breach, ReversionCheck, revert
from tradebook.promotion.stages import Stage, set_stage
from tradebook.session import Session
from tradebook.store import Store
from tradebook.venues.alpaca import AlpacaVenue

BTC = "BTCUSDT.BINANCE"
SECOND = 1_000_000_000
START_NS = 1_723_161_300 * SECOND

FIRING = AlertsConfig(slippage_bps=0.01, latency_s=1e-6, unfilled_factor=1.0, unfilled_expected_s=2.0,
                      daily_pnl=Decimal("1"))
QUIET = AlertsConfig(unfilled_factor=1000.0, daily_pnl=Decimal("1000"))


def market(seconds: int, bid: float, start_s: float) -> list[FeedBatch]:
    """One quote a second at ``bid``/``bid + 0.5`` (5 BTC each side), each in its 1 s batch, from ``start_s`` s
    after START_NS."""
    out = []
    for i in range(seconds):
        ts = START_NS + int(start_s * SECOND) + i * SECOND
        quotes = QuoteArrays(np.array([ts], dtype=np.int64), np.array([bid]), np.array([bid + 0.5]),
                             np.array([5.0]), np.array([5.0]))
        out.append(FeedBatch(ts, ts + SECOND, {BTC: quotes}))
    return out


class Collected(logging.Handler):
    """The log lines of a module-scoped run (pytest's caplog is per test)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def run_script(template: Path, folder: Path, alerts: AlertsConfig, low_bid: float) -> dict:
    """The scripted session, its market falling to ``low_bid``; what the store and the log hold once it stopped."""
    folder.mkdir()
    shutil.copy(template, folder / "store.duckdb")
    store = Store(folder / "store.duckdb")
    session = Session(store, calibrations=[BTC], state_dir=folder / "state", config=TradebookConfig(alerts=alerts))
    collected = Collected()
    logger = logging.getLogger("tradebook.alerts")
    logger.addHandler(collected)
    level, logger.level = logger.level, logging.INFO
    try:
        session.start()
        for batch in market(2, 60000.0, 0):
            session.step(batch)
        entry = session.submit(Signal("nb", "entry", BTC, Side.BUY, None, strength=0.95, quantity=Decimal("0.01"),
                                      stop_loss=Decimal("59900")))
        resting = session.submit(OrderIntent("rest", "nb", session.account_id, BTC, Side.BUY, Decimal("0.01"),
                                             OrderType.LIMIT, TimeInForce.GTC, session.now_ns,
                                             limit_price=Decimal("59700")))
        for batch in market(6, 60000.0, 2) + market(4, low_bid, 8):
            session.step(batch)
        session.alert_center.check_venue()  # the paper venue: healthy
        session.step(market(1, low_bid, 12)[0])
        assert session.alert_center.drain()
        open_alerts = session.alert_center.open_alerts
    finally:
        session.stop()
        logger.removeHandler(collected)
        logger.level = level
    rows = recent_alerts(store)
    orders = store.orders().set_index("client_order_id")
    store.close()
    return {"rows": rows, "open": open_alerts, "log": "\n".join(collected.lines), "orders": orders,
            "entry": entry[0].client_order_id, "resting": resting[0].client_order_id}


@pytest.fixture(scope="module")
def scripted(calibrated_btc_template, tmp_path_factory):
    """The script under the firing thresholds, the market falling through the stop (1.7 bps beyond it); then
    under the quiet ones, the market falling short of the stop."""
    return {name: run_script(calibrated_btc_template, tmp_path_factory.mktemp(name) / "run", alerts, low_bid)
            for name, alerts, low_bid in (("firing", FIRING, 59890.0), ("quiet", QUIET, 59950.0))}


def kinds(result: dict, source: str = "alerts") -> list[str]:
    rows = result["rows"]
    return sorted(rows.loc[rows["source"] == source, "kind"])


def test_the_script_trades_as_planned(scripted):
    for result in scripted.values():
        orders = result["orders"]
        assert orders.loc[result["entry"], "status"] == "filled"
        assert orders.loc[result["resting"], "status"] == "accepted"  # still working: never filled
        stops = orders[orders["intent_id"].str.endswith(":stop")]
        assert stops["status"].tolist() == ["filled" if result is scripted["firing"] else "accepted"]


def test_slippage_fires_above_its_threshold_and_stays_quiet_below(scripted):
    rows = scripted["firing"]["rows"]
    slip = rows[rows["kind"] == "slippage"].iloc[0]
    assert slip.subject == BTC and "against the arrival mid (threshold 0.01 bps)" in slip.message
    assert "slippage" not in kinds(scripted["quiet"])


def test_latency_fires_above_its_threshold_and_stays_quiet_below(scripted):
    rows = scripted["firing"]["rows"]
    latency = rows[rows["kind"] == "latency"].iloc[0]
    assert "from submit to the venue's answer (threshold 1e-06 s)" in latency.message
    assert latency.repeat_count >= 2  # every order answered late repeats the open alert
    assert "latency" not in kinds(scripted["quiet"])


def test_an_order_working_unfilled_too_long_fires_and_a_patient_threshold_stays_quiet(scripted):
    firing = scripted["firing"]
    rows = firing["rows"]
    unfilled = rows[rows["kind"] == "unfilled"]
    assert unfilled["subject"].tolist() == [firing["resting"]]  # the resting limit; not the stop, not the entry
    assert "has worked" in unfilled.iloc[0].message and "with nothing filled" in unfilled.iloc[0].message
    assert f"unfilled:{firing['resting']}" in firing["open"]
    assert "unfilled" not in kinds(scripted["quiet"])


def test_a_protective_stop_reached_fires_and_an_untouched_one_stays_quiet(scripted):
    rows = scripted["firing"]["rows"]
    stop = rows[rows["kind"] == "stop_reached"].iloc[0]
    assert stop.severity == "warning" and "protective stop" in stop.message and "reached at 59900" in stop.message
    assert "stop_reached" not in kinds(scripted["quiet"])


def test_daily_pnl_beyond_its_threshold_fires_and_within_it_stays_quiet(scripted):
    rows = scripted["firing"]["rows"]
    pnl = rows[rows["kind"] == "daily_pnl"].iloc[0]
    assert pnl.severity == "critical" and "beyond the alert threshold -1 USD" in pnl.message
    assert "daily_pnl" not in kinds(scripted["quiet"])


def test_a_reconciliation_mismatch_reaches_the_sinks_stored_once_and_a_clean_run_has_none(
        scripted, calibrated_btc_store, tmp_path, caplog):
    session = Session(calibrated_btc_store, calibrations=[BTC], state_dir=tmp_path / "state").start()
    for batch in market(2, 60000.0, 0):
        session.step(batch)
    session.submit(Signal("nb", "entry", BTC, Side.BUY, None, strength=0.95, quantity=Decimal("0.01")))
    session.step(market(1, 60000.0, 2)[0])
    session.stop()
    shutil.rmtree(tmp_path / "state" / "paper")  # the venue lost its books: it holds nothing now
    with caplog.at_level(logging.INFO):
        session = Session(calibrated_btc_store, calibrations=[BTC], state_dir=tmp_path / "state").start()
        try:
            session.step(market(1, 60000.0, 3)[0])  # the start's reconciliation found the difference
            assert session.alert_center.drain()
        finally:
            session.stop()
    assert ("alert position_mismatch [critical] reconciliation mismatch: paper BTCUSDT.BINANCE: 0.01000 here, "
            "0 at paper") in caplog.text
    rows = recent_alerts(calibrated_btc_store)
    mismatches = rows[rows["kind"] == "position_mismatch"]
    assert len(mismatches) == 1 and mismatches.iloc[0].source != "alerts"  # the journal copy's row, not a second
    for result in scripted.values():  # the scripted runs' books agreed with their venue's
        assert not result["rows"]["kind"].isin(["position_mismatch", "fill_mismatch", "reconcile_conflict",
                                                "order_unknown_to_venue"]).any()


def test_a_venue_that_cannot_take_orders_fires_and_a_healthy_one_stays_quiet(scripted, tmp_path):
    store = Store(tmp_path / "venue.duckdb")
    alpaca = AlpacaVenue(key_id="PKTEST", secret_key="not-a-secret", account_id="PA-TEST")  # never connected
    center = AlertCenter(store, AlertsConfig(), sinks=[],
                         venue_health=lambda: (alpaca.name, asyncio.run(alpaca.health())))
    center.check_venue()
    center.close()
    rows = recent_alerts(store)
    assert rows["kind"].tolist() == ["venue_disconnected"] and rows.iloc[0].subject == "alpaca"
    assert "venue alpaca cannot take orders: PA-TEST: not connected" in rows.iloc[0].message
    store.close()
    for result in scripted.values():  # each scripted session asked its paper venue: healthy
        assert "venue_disconnected" not in result["rows"]["kind"].tolist()


def tca_rows(store: Store, realised: list[float], predicted: float, start: int, instrument: str = BTC) -> None:
    """``tca_fills`` rows as tradebook.tca.update_tca writes them (the columns the cost rule reads)."""
    frame = pd.DataFrame({
        "fill_id": [f"f{start + i}" for i in range(len(realised))], "client_order_id": "c", "account_id": "paper",
        "strategy_id": "nb", "instrument_id": instrument, "mode": "paper", "venue": "paper", "side": "buy",
        "quantity": 0.01, "price": 60000.0, "liquidity": "taker",
        "ts_event": [START_NS + (start + i) * SECOND for i in range(len(realised))],
        "realised_cost_bps": realised, "predicted_cost_bps": predicted,
        "computed_at_ns": [START_NS + (start + i) * SECOND for i in range(len(realised))]})
    with store.transaction() as con:
        con.register("new_rows", frame)
        columns = ", ".join(frame.columns)
        con.execute(f"INSERT INTO tca_fills ({columns}) SELECT {columns} FROM new_rows")
        con.unregister("new_rows")


def buy_passes(risk: PreTradeRisk) -> str:
    intent = OrderIntent("i", "nb", "paper", BTC, Side.BUY, Decimal("0.01"), OrderType.MARKET, TimeInForce.DAY,
                         START_NS)
    quote = ReferenceQuote(Decimal("60000"), Decimal("60000.5"), Decimal(5), Decimal(5), START_NS)
    decision = risk.check(intent, get_instrument(BTC), RiskContext(START_NS, Decimal(100_000), Decimal(0), quote))
    return decision.check


def test_cost_above_twice_the_model_flags_and_restricts_until_it_normalises(tmp_path):
    store = Store(tmp_path / "cost.duckdb")
    risk = PreTradeRisk()
    center = AlertCenter(store, AlertsConfig(restrict_on_cost=True, cost_min_fills=5, cost_window_fills=5),
                         sinks=[], account_id="paper", risk=risk)
    tca_rows(store, [0.05] * 5, predicted=0.01, start=0, instrument="ETHUSDT.BINANCE")  # 5x of next to nothing
    tca_rows(store, [2.0, 2.2, 1.8, 2.0, 2.1], predicted=2.0, start=5)  # as modelled
    center.check_store(force=True)
    assert recent_alerts(store).empty and buy_passes(risk) == "all"  # both quiet
    tca_rows(store, [9.0, 10.0, 11.0], predicted=2.0, start=10)  # 2.5x after the second, then 3.4x
    center.check_store(force=True)
    rows = recent_alerts(store)
    assert rows["kind"].tolist() == ["cost_vs_model"] and rows.iloc[0].severity == "critical"
    assert "3.4x" in rows.iloc[0].message and rows.iloc[0].repeat_count == 2
    assert BTC in risk.restricted and buy_passes(risk) == "restricted"
    tca_rows(store, [2.0] * 5, predicted=2.0, start=13)  # back to 1x: the alert closes, the restriction lifts
    center.check_store(force=True)
    assert center.open_alerts == {} and risk.restricted == {} and buy_passes(risk) == "all"
    center.close()
    store.close()


def test_a_promotion_reversion_reaches_the_sinks_and_old_ones_do_not(tmp_path, caplog):
    store = Store(tmp_path / "promotion.duckdb")
    set_stage(store, "rev", Stage.RESEARCH, reason="researched")
    set_stage(store, "rev", Stage.PAPER, reason="paper", backtest_id="bt")
    override(store, "rev", "promote", "the test arms it", backtest_id="bt")
    set_stage(store, "rev", Stage.LIVE, reason="armed", venue="a paper venue standing in")
    breach = Breach(ReversionCheck.DRAWDOWN, {"drawdown": 0.2}, START_NS, "drawdown 20% beyond its band")
    revert(None, store, "rev", breach, ts_ns=START_NS)  # before the center: old news
    override(store, "rev", "promote", "the test arms it again", backtest_id="bt")
    set_stage(store, "rev", Stage.LIVE, reason="armed again", venue="a paper venue standing in")
    center = AlertCenter(store, AlertsConfig())
    with caplog.at_level(logging.INFO):
        center.check_store(force=True)
        assert "drawdown" not in caplog.text
        revert(None, store, "rev", breach, ts_ns=START_NS + SECOND)
        center.check_store(force=True)
        assert center.drain()
    assert caplog.text.count("alert reversion [critical] rev reverted to paper: drawdown fired") == 1
    assert recent_alerts(store)["kind"].tolist() == ["reversion", "reversion"]  # stored by the reversion only
    center.close()
    store.close()
