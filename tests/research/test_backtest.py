"""backtest(): the timing rule, the sizing rule and the calibrated costs against hand calculations; the store."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pandas as pd
import pytest

from tradebook.errors import LookaheadError, ResearchError
from tradebook.execution.sizing import half_kelly_fraction
from tradebook.research.backtest import FILL_COLUMNS, TRADE_COLUMNS, Sizing, backtest, load_backtest
from tradebook.research.bars import Bars
from tradebook.research.costs import CostModel, minute_vol_bps
from tradebook.research.examples import MeanReversion
from tradebook.research.metrics import trading_days
from tradebook.research.strategy import Strategy
from tradebook.store import Store

NS = 1_000_000_000
EQUITIES = ("SPY.ARCX", "QQQ.XNAS", "IWM.ARCX", "AAPL.XNAS", "IBM.XNYS", "BAC.XNYS")


class AboveLevel(Strategy):
    """Long while the close is at or above ``level``: a signal known at the bar's close."""

    name = "above_level"
    instruments = ("SPY.ARCX",)
    params = {"level": 105.0}

    def signals(self, bars: Bars) -> pd.DataFrame:
        return (bars.close >= self.params["level"]).astype(float)


class LongOrShort(Strategy):
    """Long at or above ``level``, short below it: every crossing reverses the position."""

    name = "long_or_short"
    instruments = ("SPY.ARCX",)
    params = {"level": 105.0}

    def signals(self, bars: Bars) -> pd.DataFrame:
        return (bars.close >= self.params["level"]).astype(float) * 2 - 1


class PeeksAhead(Strategy):
    name = "peeks_ahead"
    instruments = ("SPY.ARCX",)
    params = {}

    def signals(self, bars: Bars) -> pd.DataFrame:
        return (bars.close.shift(-1) > bars.close).astype(float)


def scripted_bars() -> Bars:
    """12 XNYS sessions of SPY: close 106 on sessions 5-8 (long), open 104 on 6-9, open 110 on session 10."""
    days = trading_days("XNYS", pd.Timestamp("2021-01-04"), pd.Timestamp("2021-01-21"))[:12]
    index = pd.DatetimeIndex([pd.Timestamp(d.date(), tz="America/New_York") for d in days]).tz_convert("UTC")
    close = np.full(12, 100.0)
    close[5:9] = 106.0
    open_ = np.full(12, 100.0)
    open_[6:10] = 104.0
    open_[10] = 110.0
    frame = lambda v: pd.DataFrame({"SPY.ARCX": v}, index=index)  # noqa: E731
    return Bars.from_frames(open=frame(open_), high=frame(np.maximum(open_, close) + 1),
                            low=frame(np.minimum(open_, close) - 1), close=frame(close), volume=frame(np.full(12, 1e6)))


# p = 0.6, b = 2: f* = (1.2 - 0.4) / 2 = 0.4, half 0.2 (under the cap of 0.5)
SIZING = Sizing(win_rate=0.6, avg_win=0.02, avg_loss=0.01, cap=0.5)


def test_a_signal_at_a_close_fills_at_the_next_open_sized_by_hand():
    bars = scripted_bars()
    result = backtest(AboveLevel(), bars, sizing=SIZING)  # no costs
    assert SIZING.fraction == pytest.approx(0.2)
    fills = result.fills
    assert list(fills.columns) == list(FILL_COLUMNS)
    assert len(fills) == 2
    buy, sell = fills.iloc[0], fills.iloc[1]
    # the close of session 5 (106) is the first at the level; the order fills at session 6's open, 09:30 ET
    open_6 = pd.Timestamp(f"{bars.index[6].tz_convert('America/New_York').date()} 09:30", tz="America/New_York")
    assert buy["ts_ns"] == open_6.value and buy["ts_ns"] > bars.end_ns[5] - 86_400 * NS
    # 0.2 x 100,000 / 104 = 192.3 -> 192 shares at the open, no cost
    assert (buy["side"], buy["quantity"], buy["price"], buy["mid"], buy["cost_bps"]) == ("buy", 192, 104.0, 104.0, 0)
    # session 9 closes at 100: sold at session 10's open (110)
    assert (sell["side"], sell["quantity"], sell["price"]) == ("sell", 192, 110.0)
    assert sell["ts_ns"] == pd.Timestamp(f"{bars.index[10].tz_convert('America/New_York').date()} 09:30",
                                         tz="America/New_York").value
    # equity at session 6's close: cash 100,000 - 192 x 104 plus 192 x 106
    assert result.equity.iloc[6] == pytest.approx(100_000 - 192 * 104 + 192 * 106)
    assert result.equity.iloc[-1] == pytest.approx(100_000 + 192 * 6)
    trade = result.trades.iloc[0]
    assert list(result.trades.columns) == list(TRADE_COLUMNS)
    assert (trade["direction"], trade["quantity"], trade["entry_price"], trade["exit_price"]) == ("long", 192, 104, 110)
    assert trade["pnl"] == pytest.approx(192 * 6) and trade["return_pct"] == pytest.approx(6 / 104 * 100)
    assert result.metrics["n_trades"] == 1 and result.metrics["win_rate"] == 1.0
    assert result.daily["n_fills"].sum() == 2 and len(result.daily) == 12


def test_a_reversal_closes_one_round_trip_and_opens_the_next():
    result = backtest(LongOrShort(), scripted_bars(), sizing=SIZING)
    fills = result.fills[["side", "quantity", "price"]].to_records(index=False).tolist()
    # short 0.2 x 100,000 / 100 = 200 at session 1's open; at session 6 (104) equity 99,200 wants 190 long: buy 390
    assert fills[:2] == [("sell", 200, 100.0), ("buy", 390, 104.0)]
    trades = result.trades
    assert trades.loc[0, ["direction", "quantity", "pnl"]].tolist() == ["short", 200, -800.0]
    assert trades.loc[1, ["direction", "quantity", "pnl"]].tolist() == ["long", 190, 190 * 6.0]
    assert trades["pnl"].isna().sum() == 1  # the last short is still open: not a closed round trip
    assert result.metrics["n_trades"] == 2


def test_calibrated_costs_price_each_order_at_its_size_time_and_volatility(ibm_calibrated_template):
    bars = scripted_bars()
    with Store(ibm_calibrated_template, read_only=True) as store:
        costs = CostModel.from_store(store, {"SPY.ARCX": "IBM.XNYS@v1"})
    result = backtest(AboveLevel(), bars, costs=costs, sizing=SIZING, seed=4)
    buy, sell = result.fills.iloc[0], result.fills.iloc[1]
    for fill, sign in ((buy, 1), (sell, -1)):
        # 12 bars hold no 20-return volatility yet: the spread of the open's bucket, pooled over regimes
        predicted = costs.predict_bps("SPY.ARCX", [int(fill["ts_ns"])], fill["quantity"], fill["mid"])[0]
        assert fill["predicted_cost_bps"] == pytest.approx(predicted)
        assert fill["cost_bps"] <= fill["predicted_cost_bps"] + 1e-12  # the median, or improved inside the spread
        assert fill["price"] == pytest.approx(fill["mid"] * (1 + sign * fill["cost_bps"] / 1e4), rel=1e-12)
    assert buy["quantity"] == 192  # equity at the open is still 100,000: the same size
    assert result.trades.iloc[0]["pnl"] == pytest.approx(192 * (sell["price"] - buy["price"]))
    assert result.costs["instruments"]["SPY.ARCX"]["calibration_id"] == "IBM.XNYS@v1"


@pytest.fixture(scope="module")
def research(daily_bars, daily_calibrated_template):
    """MeanReversion on the bundled history to 2021-01-31 with the IBM model applied to all six: one backtest."""
    bars = daily_bars.until(pd.Timestamp("2021-02-01", tz="UTC").value)
    with Store(daily_calibrated_template, read_only=True) as store:
        costs = CostModel.from_store(store, {i: "IBM.XNYS@v1" for i in EQUITIES})
    return bars, costs, backtest(MeanReversion(), bars, costs=costs)


def test_sizing_is_half_kelly_of_the_strategys_own_round_trips_at_the_cap(research):
    bars, costs, result = research
    sizing = result.sizing
    assert sizing.n_trades > 100 and 0 < sizing.win_rate < 1
    assert sizing.fraction == half_kelly_fraction(sizing.win_rate, sizing.avg_win, sizing.avg_loss, 0.05)
    again = backtest(MeanReversion(), bars, costs=costs, sizing=sizing)  # the measured sizing given: same backtest
    pd.testing.assert_frame_equal(again.fills, result.fills)
    # a long-only target of 1 holds fraction x equity at the open / open, floored: a buy never stakes more
    buys = result.fills[result.fills["side"] == "buy"]
    assert (buys["quantity"] * buys["mid"] <= sizing.fraction * result.equity.max() * 1.0001).all()


def test_fills_and_trades_of_the_history_follow_the_rules(research):
    bars, costs, result = research
    fills = result.fills
    local = pd.to_datetime(fills["ts_ns"], unit="ns", utc=True).dt.tz_convert("America/New_York")
    assert ((local.dt.hour == 9) & (local.dt.minute == 30)).all()  # every order at a session open
    sign = np.where(fills["side"] == "buy", 1.0, -1.0)
    np.testing.assert_allclose(fills["price"], fills["mid"] * (1 + sign * fills["cost_bps"] / 1e4), rtol=1e-12)
    # the mid is the open of the fill's bar; the predicted cost is the model's at that size, time and volatility,
    # its spread at least one tick at the price that traded (the split-adjusted open undone)
    # the volatility known at the instrument's previous close, from its own bars (as paper_metrics reads it)
    vol = pd.DataFrame({i: minute_vol_bps(bars.close[[i]].dropna(), bar_seconds=86_400)[i].shift(1)
                        for i in bars.instruments}).reindex(bars.index)
    sample = fills.iloc[:: max(len(fills) // 40, 1)]
    for _, fill in sample.iterrows():
        day = pd.Timestamp(fill["ts_ns"], unit="ns", tz="UTC").tz_convert("America/New_York").normalize()
        row = bars.index.get_loc(day.tz_convert("UTC"))
        assert fill["mid"] == bars.open[fill["instrument_id"]].iloc[row]
        traded = costs.traded_price(fill["instrument_id"], [bars.start_ns[row]], fill["mid"])[0]
        shares = fill["quantity"] * fill["mid"] / traded  # the same notional in the shares that traded
        expected = costs.predict_bps(fill["instrument_id"], [int(fill["ts_ns"])], shares, traded,
                                     vol[fill["instrument_id"]].iloc[row])[0]
        assert fill["predicted_cost_bps"] == pytest.approx(expected)
    # BAC traded at $3-$8 in March and April 2009: half a cent was 6-17 bps, far above the profile's half-spread
    bac = fills[(fills["instrument_id"] == "BAC.XNYS") & (fills["ts_ns"] > pd.Timestamp("2009-03-01").value)
                & (fills["ts_ns"] < pd.Timestamp("2009-04-30").value)]
    assert len(bac) and bac["predicted_cost_bps"].min() > 5.0
    closed = result.trades.dropna(subset=["pnl"])
    assert result.metrics["n_trades"] == len(closed)
    assert result.metrics["win_rate"] == pytest.approx((closed["pnl"] > 0).mean())
    assert result.metrics["avg_cost_bps"] == pytest.approx(fills["cost_bps"].mean())
    assert math.isfinite(result.metrics["psr"]) and 0 <= result.metrics["psr"] <= 1
    zero = backtest(MeanReversion(), bars, sizing=result.sizing)
    assert (zero.fills["cost_bps"] == 0).all()
    assert zero.metrics["total_return"] > result.metrics["total_return"]  # costs cost


def test_saved_once_per_content_and_loaded_back(research, daily_store_template, tmp_path):
    _, _, result = research
    shutil.copy(daily_store_template, tmp_path / "s.duckdb")
    with Store(tmp_path / "s.duckdb") as store:
        backtest_id = result.save(store)
        assert result.save(store) == backtest_id  # same content: nothing written again
        assert store.query("SELECT count(*) AS n FROM research_backtests")["n"].iloc[0] == 1
        loaded = load_backtest(store, "mean_reversion")  # the latest of a name
        assert loaded.backtest_id == backtest_id
        pd.testing.assert_frame_equal(loaded.fills, result.fills)
        pd.testing.assert_frame_equal(loaded.trades, result.trades, check_dtype=False)
        pd.testing.assert_frame_equal(loaded.daily, result.daily)
        assert loaded.sizing == result.sizing and loaded.costs == result.costs
        assert isinstance(loaded.strategy, MeanReversion) and loaded.strategy.params == result.params
        with pytest.raises(ResearchError, match="no backtest 'sma_cross'.*stored for: mean_reversion"):
            load_backtest(store, "sma_cross")


def test_bad_requests_are_refused_with_what_was_expected(research):
    bars, costs, _ = research
    spy = bars.select(["SPY.ARCX"])
    with pytest.raises(LookaheadError):
        backtest(PeeksAhead(), spy)
    with pytest.raises(ResearchError, match="no calibration for QQQ.XNAS, IWM.ARCX"):
        only_spy = costs_for(costs, ["SPY.ARCX", "AAPL.XNAS", "IBM.XNYS", "BAC.XNYS"])
        backtest(MeanReversion(), bars, costs=only_spy)
    with pytest.raises(ResearchError, match="starting_equity -5"):
        backtest(AboveLevel(), spy, starting_equity=-5)
    with pytest.raises(ResearchError, match="expected a CostModel"):
        backtest(AboveLevel(), spy, costs={"SPY.ARCX": "IBM.XNYS@v1"})
    with pytest.raises(ResearchError, match=r"Sizing\(win_rate=1.4.*expected a win rate in \[0, 1\]"):
        Sizing(win_rate=1.4, avg_win=0.02, avg_loss=0.01)
    with pytest.raises(ResearchError, match=r"Sizing cap 0: expected a fraction of equity in \(0, 1\]"):
        Sizing(0.5, 0.02, 0.01, cap=0)
    assert Sizing(math.nan, math.nan, math.nan, cap=0.03).fraction == 0.03  # nothing measured: the cap
    assert Sizing(0.4, 0.012, 0.01).fraction == 0.0  # f* = -0.1: no edge, no stake


def costs_for(costs: CostModel, instruments: list[str]) -> CostModel:
    """The same calibrated costs for fewer instruments."""
    return CostModel({i: costs._priced[i] for i in instruments})


def test_fill_costs_scatter_as_the_curve_was_fitted_so_the_gate_can_judge_residuals(research):
    # priced by a model the paper engine never improves, the fills used to cost exactly the prediction:
    # residual sd 0, and the gate's cost-residual threshold came out inf ("fails when t > inf")
    from dataclasses import replace

    from tradebook.promotion import calibrate_gate

    bars, costs, _ = research
    touch_only = CostModel({k: replace(p, improves=False) for k, p in costs._priced.items()})
    result = backtest(MeanReversion(), bars.tail(2500), costs=touch_only)
    residual = result.fills["cost_bps"] - result.fills["predicted_cost_bps"]
    assert len(residual) > 500 and residual.std() > 0.1
    # the draws follow the curve's fitted quantiles: their median is the prediction
    assert abs(residual.median()) < 0.05
    gate = calibrate_gate(result.daily, n_paths=1000, seed=1)
    for length in gate.reviews:
        low, high = gate.thresholds[length]["cost_residual_bps"]
        assert low is None and high is not None and math.isfinite(high), (length, high)


def test_a_held_position_is_not_resized_by_a_share_as_equity_moves(research):
    # with the whole difference traded at every bar, MeanReversion's history made about three fills per round
    # trip (8,000 fills for 2,578 trades), most of them one- or two-share adjustments paying a spread each
    bars, costs, result = research
    fills, trades = result.fills, result.trades
    assert len(fills) <= 2.3 * len(trades), (len(fills), len(trades))
    every_bar = backtest(MeanReversion(), bars, costs=costs, sizing=result.sizing, rebalance_band=0.0)
    assert len(every_bar.fills) > 2.6 * len(every_bar.trades)
    with pytest.raises(ResearchError, match="rebalance_band"):
        backtest(MeanReversion(), bars, costs=costs, rebalance_band=1.5)
