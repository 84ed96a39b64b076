"""Reversion: a live strategy whose fills cost three times the model's reverts, its orders cancelled, with an alert."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from tradebook.config import RiskConfig, TradebookConfig
from tradebook.data.feeds import ReplayFeed
from tradebook.errors import PromotionError
from tradebook.model.instruments import Side
from tradebook.model.orders import OrderIntent, OrderType, TimeInForce
from tradebook.promotion.gate import calibrate_gate, override
from tradebook.promotion.paper_metrics import fill_costs, quote_mids, strategy_fills
from tradebook.promotion.reversion import Breach, ReversionCheck, ReversionMonitor, revert
from tradebook.promotion.stages import Stage, set_stage, stage, stage_history
from tradebook.research.costs import CostModel
from tradebook.session import Session
from tradebook.venues.paper import PaperVenue, stored_models

from .simulated import simulated_daily

IBM = "IBM.XNYS"
SIZE = Decimal("100")
STEP = 30 * 1_000_000_000  # the session steps 30 s of quotes at a time, one market order a step
OPEN, CLOSE = 1_381_152_900_000_000_000, 1_381_175_700_000_000_000  # 2013-10-07 09:35 and 15:55 New York
POOL, LIVE = 80, 170  # steps of the venue's own fills, then of the live run
MAX_FILLS = 40  # the bound: a cost CUSUM with k=0.5, h=4 fires within ~8 fills of a shift of a few sigmas


@pytest.fixture
def costs(ibm_store) -> CostModel:
    return CostModel.from_store(ibm_store, [IBM])


def trade(store, tmp_path, costs, batches, *, cost_multiple: float, name: str, monitor=None, rest: bool = False):
    """A market order of SIZE each step through a Session on a paper venue whose marketable fills
    cost ``cost_multiple`` x the model's prediction; each fill's cost against the mid and its prediction go
    to ``monitor``, whose first breach reverts the strategy. Returns what happened."""
    models, instruments = stored_models(store, [IBM])
    quotes = store.quotes(IBM)
    mids = {IBM: quote_mids(store, IBM, int(quotes["ts_ns"].iloc[0]), int(quotes["ts_ns"].iloc[-1]))}
    typical = float(np.median(costs.predict_bps(IBM, quotes["ts_ns"].to_numpy("int64")[::500], float(SIZE),
                                                float(quotes["bid_px"].iloc[0]))))
    model = dataclasses.replace(models[IBM], base_slippage_bps=(cost_multiple - 1.0) * typical)
    venue = PaperVenue(tmp_path / f"venue-{name}", models={IBM: model}, instruments=instruments,
                       account_id=f"acct-{name}")
    config = TradebookConfig(risk=RiskConfig(max_quote_age_ms=STEP // 1_000_000))  # a quote per step will do
    session = Session(store, state_dir=tmp_path / f"state-{name}", venue=venue, calibrations=[IBM], config=config,
                      sync=False).start()
    seen: set[str] = set()
    priced, breach, reversion, resting = [], None, None, None
    try:
        for i, batch in enumerate(batches):
            session.step(batch)
            now = session.now_ns
            if rest and i == 2:  # a resting bid far below the touch: a working order the reversion must cancel
                bid = Decimal(str(round(float(quotes["bid_px"].iloc[0]) * 0.9, 2)))
                [resting] = session.submit(OrderIntent(f"{name}:rest", name, venue.account_id, IBM, Side.BUY,
                                                       SIZE, OrderType.LIMIT, TimeInForce.GTC, now, limit_price=bid))
            if i >= 3 and reversion is None:
                side = Side.BUY if i % 2 else Side.SELL
                session.submit(OrderIntent(f"{name}:{i}", name, venue.account_id, IBM, side, SIZE,
                                           OrderType.MARKET, TimeInForce.IOC, now))
            if i % 4 and i != len(batches) - 1:
                continue  # the fills are read from the store every fourth step
            session.oms.flush()
            fills = strategy_fills(store, name)
            new = fill_costs(fills[~fills["fill_id"].isin(seen)], mids, costs)
            seen |= set(new["fill_id"])
            priced.append(new)
            for row in new.itertuples():
                found = None if monitor is None else monitor.on_fill(row.cost_bps, row.predicted_cost_bps,
                                                                      int(row.ts_ns))
                if found is not None and breach is None:
                    breach = found
                    reversion = revert(session, store, name, breach)
            if reversion is not None and resting is not None \
                    and str(session.oms.order(resting.client_order_id).status) == "cancelled":
                break
        session.oms.flush()
        return {"fills": pd.concat(priced, ignore_index=True), "breach": breach, "reversion": reversion,
                "resting": resting, "session": session}
    finally:
        session.stop()


@pytest.fixture(scope="module")
def venue_fills(ibm_template, tmp_path_factory) -> pd.DataFrame:
    """The venue's own fills at the model's costs over the first 40 minutes of IBM's regular session: what a
    backtest's fills would scatter like (priced against the mid, with the model's predictions)."""
    import shutil

    from tradebook.store import Store

    folder = tmp_path_factory.mktemp("venue_fills")
    shutil.copy(ibm_template, folder / "ibm.duckdb")
    with Store(folder / "ibm.duckdb") as store:
        costs = CostModel.from_store(store, [IBM])
        return trade(store, folder, costs, feed_batches(store)[:POOL], cost_multiple=1.0, name="calib")["fills"]


def feed_batches(store) -> list:
    return list(ReplayFeed({IBM: store.quotes(IBM)}, step_ns=STEP, start_ns=OPEN, end_ns=CLOSE).batches())


@pytest.fixture
def live_setup(ibm_store, costs, venue_fills):
    """A year of a simulated strategy's days whose fills are drawn from the venue's own; the strategy is staged
    live; the session's quotes after the first 40 minutes are its live market."""
    assert len(venue_fills) >= 70
    pool = (venue_fills["cost_bps"].to_numpy(), venue_fills["predicted_cost_bps"].to_numpy())
    daily = simulated_daily(365, seed=5, instrument_id=IBM, price0=185.0, notional=18_500.0, cost_pool=pool)
    monitor = ReversionMonitor("rev", daily, thresholds=calibrate_gate(daily, n_paths=300))
    store = ibm_store
    set_stage(store, "rev", Stage.RESEARCH, reason="researched")
    set_stage(store, "rev", Stage.PAPER, reason="paper", backtest_id="bt-sim")
    override(store, "rev", "promote", "the test arms it", backtest_id="bt-sim")
    set_stage(store, "rev", Stage.LIVE, reason="armed", venue="a paper venue standing in for a live one")
    return store, feed_batches(store)[POOL:POOL + LIVE], monitor


def test_costs_three_times_the_model_revert_within_bounded_fills(live_setup, tmp_path, costs):
    store, batches, monitor = live_setup
    out = trade(store, tmp_path, costs, batches, cost_multiple=3.0, name="rev", monitor=monitor, rest=True)
    breach, reversion, resting, session = out["breach"], out["reversion"], out["resting"], out["session"]
    assert breach is not None, f"no breach after {monitor.fills_seen} fills"
    assert breach.check in (ReversionCheck.COST_CUSUM, ReversionCheck.SLIPPAGE)
    assert monitor.fills_seen <= MAX_FILLS
    # its working orders cancelled, its stage reverted then paper, an alert naming the check with its figures
    assert resting.client_order_id in reversion.cancelled
    assert str(session.oms.order(resting.client_order_id).status) == "cancelled"
    assert stage(store, "rev") is Stage.PAPER
    assert list(stage_history(store, "rev")["stage"])[-3:] == ["live", "reverted", "paper"]
    alerts = store.alerts()
    alert = alerts[alerts["kind"] == "reversion"]
    assert len(alert) == 1 and str(breach.check) in alert["message"].iloc[0]
    assert "figures" in alert["message"].iloc[0]
    decided = store.query("SELECT decision, codes FROM promotion_decisions WHERE strategy = 'rev' "
                          "ORDER BY ts_ns DESC LIMIT 1")
    assert decided["decision"].iloc[0] == "revert" and str(breach.check) in decided["codes"].iloc[0]
    with pytest.raises(PromotionError, match="not live"):
        revert(None, store, "rev", breach)


def test_costs_as_modelled_do_not_revert(live_setup, tmp_path, costs):
    store, batches, monitor = live_setup
    out = trade(store, tmp_path, costs, batches, cost_multiple=1.0, name="rev", monitor=monitor)
    assert monitor.fills_seen >= 2 * MAX_FILLS
    assert out["breach"] is None, out["breach"]
    assert stage(store, "rev") is Stage.LIVE


@pytest.fixture
def backtest_daily(costs) -> pd.DataFrame:
    """A year of a simulated IBM strategy whose fills scatter as the calibrated model draws them."""
    return simulated_daily(365, seed=5, costs=costs, instrument_id=IBM, price0=185.0, notional=18_500.0)


def test_return_cusum_and_drawdown_fire_on_days(backtest_daily):
    monitor = ReversionMonitor("rev", backtest_daily, thresholds=calibrate_gate(backtest_daily, n_paths=300))
    sd = monitor.ret_sd
    day = backtest_daily.iloc[0].copy()
    fired = None
    for n in range(1, 40):
        day["ret"] = monitor.ret_mean - 2.0 * sd  # a two-sigma shortfall a day: S grows by 1.5 a day
        fired = monitor.on_day(day)
        if fired is not None:
            break
    assert fired is not None and fired.check is ReversionCheck.RETURN_CUSUM and n == 3
    assert fired.figures["cusum"] > 4.0

    deep = ReversionMonitor("rev", backtest_daily, thresholds=monitor.thresholds, h=1e9)
    day["ret"] = -(monitor.drawdown_limit + 0.01)
    crash = deep.on_day(day)
    assert crash is not None and crash.check is ReversionCheck.DRAWDOWN


def test_monitor_refuses_bad_input(backtest_daily):
    with pytest.raises(PromotionError, match="k >= 0"):
        ReversionMonitor("rev", backtest_daily, k=-1.0)
    monitor = ReversionMonitor("rev", backtest_daily, thresholds=calibrate_gate(backtest_daily, n_paths=300))
    with pytest.raises(PromotionError, match="finite"):
        monitor.on_fill(float("nan"), 1.0)
    with pytest.raises(PromotionError, match="Breach"):
        revert(None, None, "rev", "costs")  # type: ignore[arg-type]
    assert isinstance(Breach(ReversionCheck.SLIPPAGE, {}, 0, "x"), Breach)


def test_the_gates_checks_on_a_rolling_window(backtest_daily):
    monitor = ReversionMonitor("rev", backtest_daily, thresholds=calibrate_gate(backtest_daily, n_paths=300))
    assert monitor.rolling_every == monitor.thresholds.min_days  # non-overlapping windows by default
    busy = simulated_daily(60, seed=9, instrument_id=IBM, price0=185.0, notional=18_500.0, trades_per_day=4.0,
                           returns=np.full(60, monitor.ret_mean), start="2021-02-01")
    fired = [monitor.on_day(row) for _, row in busy.iterrows()]
    breaches = [(i, b) for i, b in enumerate(fired) if b is not None]
    assert breaches and breaches[0][0] == monitor.thresholds.min_days - 1  # at the end of the first window
    breach = breaches[0][1]
    assert breach.check is ReversionCheck.ROLLING_CHECK and "n_trades" in breach.figures["failed"]
    assert "n_trades" in breach.message
