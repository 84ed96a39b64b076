"""Paper replay of a research strategy: synthetic quotes from daily bars, the runner's timing and sizing, the
session's orders and fills in a real store."""

from __future__ import annotations

import shutil
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tradebook.data import load_bundled
from tradebook.errors import DataError, ResearchError
from tradebook.model.instruments import get_instrument
from tradebook.research.bars import Bars
from tradebook.research.costs import CostModel
from tradebook.research.examples import MeanReversion
from tradebook.research.runner import StrategyRunner, paper_calibrations, paper_replay, target_quantity
from tradebook.research.strategy import Strategy
from tradebook.research.synthetic import ingest_synthetic_quotes, quotes_from_daily_bars
from tradebook.sim.fidelity import calibratable_instruments, run_calibration, store_captures
from tradebook.store import Store

from tradebook.research.examples import BUNDLED_EQUITIES as DAILY_EQUITIES

PAPER = ("2021-02-01", "2021-03-31")
IBM_FILES = ("algoseek_IBM_20131007_l1_nbbo.csv.gz", "algoseek_IBM_20131007_trades.csv.gz")


@pytest.fixture(scope="module")
def calibrated_template(daily_store_template, tmp_path_factory) -> Path:
    """The daily-equities store plus the IBM tick capture and its calibration (the equity fill model)."""
    path = tmp_path_factory.mktemp("runner") / "calibrated.duckdb"
    shutil.copy(daily_store_template, path)
    with Store(path) as store:
        for name in IBM_FILES:
            store.ingest(load_bundled(name))
        run_calibration(store, ["IBM.XNYS"])
    return path


@pytest.fixture
def store(calibrated_template, tmp_path) -> Store:
    shutil.copy(calibrated_template, tmp_path / "paper.duckdb")
    s = Store(tmp_path / "paper.duckdb")
    yield s
    s.close()


def calibrated(store: Store) -> CostModel:
    return CostModel.from_store(store, {i: "IBM.XNYS" for i in DAILY_EQUITIES})


class LongFrom(Strategy):
    """Long every instrument from the bar starting on ``day`` on (a target known at that bar's close)."""

    params = {"day": "2021-02-10"}

    def signals(self, bars: Bars) -> pd.DataFrame:
        local = bars.close.index.tz_convert("America/New_York").tz_localize(None).normalize()
        on = (local >= pd.Timestamp(self.params["day"])).astype(float)
        return pd.DataFrame(np.repeat(on[:, None], len(bars.instruments), axis=1), index=bars.close.index,
                            columns=bars.close.columns)


# -- synthetic quotes ----------------------------------------------------------------------------
def test_quotes_from_daily_bars_open_and_close_quote_per_session_around_the_bar(daily_bars):
    bars = daily_bars.select(["SPY.ARCX", "BAC.XNYS"])
    quotes = quotes_from_daily_bars(bars, CostModel.zero(), start=PAPER[0], end=PAPER[1])
    spy = quotes["SPY.ARCX"]
    sessions = bars.close.loc[PAPER[0]:PAPER[1]]
    assert len(spy) == 2 * len(sessions) and spy["synthetic"].all()
    assert (np.diff(spy["ts_ns"]) > 0).all()
    first = pd.Timestamp(spy["ts_ns"].iloc[0], unit="ns", tz="UTC").tz_convert("America/New_York")
    second = pd.Timestamp(spy["ts_ns"].iloc[1], unit="ns", tz="UTC").tz_convert("America/New_York")
    assert (first.date(), first.hour, first.minute) == (pd.Timestamp("2021-02-01").date(), 9, 30)
    assert (second.date(), second.hour, second.minute, second.second) == (first.date(), 15, 59, 59)
    mid = (spy["bid_px"] + spy["ask_px"]) / 2
    assert mid.iloc[0] == pytest.approx(bars.open["SPY.ARCX"].loc[PAPER[0]].iloc[0], abs=0.005)
    assert mid.iloc[1] == pytest.approx(bars.close["SPY.ARCX"].loc[PAPER[0]].iloc[0], abs=0.005)
    # zero costs: the narrowest valid quote, one tick either side
    assert (spy["ask_px"] - spy["bid_px"]).round(6).eq(0.02).all()


def test_calibrated_quotes_carry_the_model_spread_and_touch(store, daily_bars):
    from tradebook.research.synthetic import _minute_vol_before

    costs = calibrated(store)
    quotes = quotes_from_daily_bars(daily_bars, costs, start=PAPER[0], end=PAPER[1])
    for instrument_id, frame in quotes.items():
        tick = float(get_instrument(instrument_id).tick_size)
        assert (frame["bid_px"] < frame["ask_px"]).all()
        ticks = ((frame["ask_px"] - frame["bid_px"]) / tick).round(6)
        assert (ticks == ticks.round()).all() and (ticks >= 1).all()
        # the model's spread at each quote's time and the volatility known before its bar, in whole ticks (>= 1)
        period = daily_bars.close.loc[PAPER[0]:PAPER[1]].index
        vol = pd.Series(_minute_vol_before(daily_bars.close[instrument_id], 20), index=daily_bars.index)[period]
        price = np.column_stack([daily_bars.open[instrument_id][period], daily_bars.close[instrument_id][period]])
        model = costs.spread_bps(instrument_id, frame["ts_ns"].to_numpy(), np.repeat(vol.to_numpy(), 2))
        expected = np.maximum(1, np.round(model * price.ravel() / 1e4 / tick))
        assert np.array_equal(ticks.to_numpy(), expected)
        price = float(frame["ask_px"].median())
        assert frame["bid_sz"].iloc[0] == pytest.approx(np.floor(costs.touch_size(instrument_id, price)), rel=0.5)
    # the mid is the bar's price to within half a tick
    spy = quotes["SPY.ARCX"]
    opens = daily_bars.open["SPY.ARCX"].loc[PAPER[0]:PAPER[1]].to_numpy()
    assert np.abs(((spy["bid_px"] + spy["ask_px"]) / 2).to_numpy()[::2] - opens).max() <= 0.005 + 1e-9


def test_synthetic_quotes_are_stored_labelled_and_left_out_of_calibration(store, daily_bars):
    before = calibratable_instruments(store)
    quotes = quotes_from_daily_bars(daily_bars, calibrated(store), start=PAPER[0], end=PAPER[1])
    ids = ingest_synthetic_quotes(store, quotes, label="daily bars, test")
    assert set(ids) == set(DAILY_EQUITIES)
    sources = store.datasets().set_index("dataset_id").loc[list(ids.values()), "source"]
    assert sources.str.startswith("synthetic: daily bars").all()
    assert calibratable_instruments(store) == before == ["IBM.XNYS"]
    # the IBM tick capture shares a recording with the daily bars (and so with the synthetic quotes): the
    # fidelity report's capture keeps the recorded data only
    (capture,) = store_captures(store)
    assert ids["IBM.XNYS"] not in capture.data.dataset_ids
    assert capture.label.startswith("IBM.XNYS 2013-10-07")
    again = ingest_synthetic_quotes(store, quotes, label="daily bars, test")
    assert again == ids  # same content: no new dataset
    spy = store.quotes("SPY.ARCX")
    assert len(spy) == len(quotes["SPY.ARCX"])
    # built again with other costs: the earlier set of the period is replaced, recorded quotes stay
    recorded = len(store.quotes("IBM.XNYS", start_ns=0, end_ns=int(quotes["SPY.ARCX"]["ts_ns"].iloc[0])))
    wider = quotes_from_daily_bars(daily_bars, CostModel.zero(), start=PAPER[0], end=PAPER[1])
    replaced = ingest_synthetic_quotes(store, wider, label="daily bars, zero costs")
    assert all(replaced[i] != ids[i] for i in ids)
    assert len(store.quotes("SPY.ARCX")) == len(wider["SPY.ARCX"])
    assert store.datasets()["dataset_id"].isin(list(ids.values())).sum() == 0
    assert len(store.quotes("IBM.XNYS", start_ns=0, end_ns=int(quotes["SPY.ARCX"]["ts_ns"].iloc[0]))) == recorded > 0


def test_quotes_from_bars_refuses_intraday_bars_and_empty_periods(daily_bars):
    with pytest.raises(DataError, match="no bars between"):
        quotes_from_daily_bars(daily_bars, CostModel.zero(), start="2022-01-01", end="2022-02-01")
    minute = Bars.from_frames(open=daily_bars.open.tail(5), high=daily_bars.high.tail(5), low=daily_bars.low.tail(5),
                              close=daily_bars.close.tail(5), volume=daily_bars.volume.tail(5), bar_seconds=60)
    with pytest.raises(DataError, match="daily bars"):
        quotes_from_daily_bars(minute, CostModel.zero())


# -- the runner ----------------------------------------------------------------------------------
def test_target_quantity_floors_toward_zero_to_the_lot_and_minimum():
    spy = get_instrument("SPY.ARCX")
    assert target_quantity(1.0, 0.05, 100_000.0, 373.84, spy) == Decimal(13)
    assert target_quantity(-1.0, 0.05, 100_000.0, 373.84, spy) == Decimal(-13)
    assert target_quantity(0.5, 0.05, 100_000.0, 373.84, spy) == Decimal(6)
    assert target_quantity(1.0, 0.05, 1_000.0, 373.84, spy) == Decimal(0)  # less than one share
    assert target_quantity(0.0, 0.05, 100_000.0, 373.84, spy) == Decimal(0)


def test_a_target_from_a_bars_close_fills_at_the_next_bars_open(store, daily_bars):
    strategy = LongFrom(instruments=["SPY.ARCX", "IBM.XNYS"], window=5)
    result = paper_replay(store, strategy, daily_bars, start=PAPER[0], end=PAPER[1], costs=CostModel.zero())
    fills = result.fills
    assert set(fills["instrument_id"]) == {"SPY.ARCX", "IBM.XNYS"}
    fills = fills.sort_values("ts_event_ns")
    assert (fills.groupby("instrument_id")["side"].first() == "buy").all()  # later: rebalancing to equity
    first = fills.groupby("instrument_id")["ts_event_ns"].min()
    for instrument_id, ts in first.items():
        local = pd.Timestamp(int(ts), unit="ns", tz="UTC").tz_convert("America/New_York")
        # the target turns 1 at the close of 2021-02-10: the order goes at the open of 2021-02-11, not before
        assert local.date() == pd.Timestamp("2021-02-11").date()
        assert (local.hour, local.minute) == (9, 30)
        open_px = daily_bars.open[instrument_id].loc["2021-02-11"].iloc[0]
        price = fills.loc[(fills["instrument_id"] == instrument_id) & (fills["ts_event_ns"] == ts), "price"].iloc[0]
        assert float(price) == pytest.approx(round(open_px, 2), abs=1e-9)  # zero costs: at the open quote's mid
    steps = result.steps.set_index(["instrument_id", "bar_start_ns"])
    spy = steps.loc["SPY.ARCX"]
    before = spy[spy.index < pd.Timestamp("2021-02-11", tz="America/New_York").value]
    assert (before["target"] == 0).all() and before["signal_id"].isna().all()


def test_runner_sizes_with_the_view_equity_and_the_quote_mid(store, daily_bars):
    result = paper_replay(store, MeanReversion(window=60), daily_bars, start=PAPER[0], end=PAPER[1],
                          costs=CostModel.zero())
    steps = result.steps
    assert len(steps) and (steps["equity"] > 0).all()
    for row in steps.itertuples():
        instrument = get_instrument(row.instrument_id)
        assert row.wanted == target_quantity(row.target, 0.05, row.equity, row.price, instrument)
    # what the runner wanted is what the session ended up holding after each order
    sent = steps[steps["signal_id"].notna()]
    assert len(result.fills) >= len(sent) > 10
    assert set(result.decisions["outcome"]) == {"sent"}


def test_runner_acts_once_per_bar_and_reruns_are_idempotent(store, daily_bars):
    strategy = MeanReversion(window=60)
    one = paper_replay(store, strategy, daily_bars, start=PAPER[0], end=PAPER[1], costs=calibrated(store))
    assert one.trading_days >= 30
    assert not one.steps.duplicated(["instrument_id", "bar_start_ns"]).any()
    assert one.steps["signal_id"].dropna().is_unique
    two = paper_replay(store, strategy, daily_bars, start=PAPER[0], end=PAPER[1], costs=calibrated(store))
    assert two.run == one.run
    columns = ["instrument_id", "side", "quantity", "price", "ts_event_ns"]
    pd.testing.assert_frame_equal(one.fills[columns].reset_index(drop=True), two.fills[columns].reset_index(drop=True))
    stored = store.query("SELECT count(*) AS n FROM fills WHERE account_id = ?", [one.account_id])["n"].iloc[0]
    assert stored == len(two.fills)


def test_paper_replay_with_calibrated_costs_pays_spread_and_stores_derived_calibrations(store, daily_bars):
    costs = calibrated(store)
    result = paper_replay(store, MeanReversion(window=60), daily_bars, start=PAPER[0], end=PAPER[1], costs=costs)
    assert result.trading_days >= 30 and len(result.fills) > 10
    # calibrations: IBM's own, the others IBM's model applied to them, saying so
    ids = dict(zip(DAILY_EQUITIES, result.calibrations))
    assert ids["IBM.XNYS"] == "IBM.XNYS@v1"
    spy = store.calibration(ids["SPY.ARCX"])
    assert spy.diagnostics["derived_from"] == "IBM.XNYS@v1"
    assert paper_calibrations(store, costs, DAILY_EQUITIES, result.quotes) == result.calibrations  # reused
    from tradebook.sim.fill_model import FillModel

    applied = FillModel.from_json(spy.params)
    assert applied.completion is not None and applied.away_from_data  # refill and price improvement kept
    # every fill is against the open quote: buys at or above its mid, sells at or below
    fills = result.fills.copy()
    mids = pd.concat([q.assign(instrument_id=i) for i, q in result.quotes.items()])
    mids["mid"] = (mids["bid_px"] + mids["ask_px"]) / 2
    mids = mids.sort_values("ts_ns")
    fills = fills.sort_values("ts_event_ns")
    merged = pd.merge_asof(fills.assign(ts=fills["ts_event_ns"].astype("int64")), mids[["ts_ns", "instrument_id", "mid"]],
                           left_on="ts", right_on="ts_ns", by="instrument_id")
    sign = np.where(merged["side"] == "buy", 1, -1)
    paid = sign * (merged["price"].astype(float) - merged["mid"])
    assert (paid >= -1e-9).all() and paid.sum() > 0


def test_runner_refuses_bars_without_the_strategys_instruments(daily_bars):
    with pytest.raises(ResearchError, match="not in these bars"):
        StrategyRunner(MeanReversion(instruments=["MSFT.XNAS"], window=60), daily_bars)


class PeeksAtTomorrow(Strategy):
    """Long when tomorrow's close is higher: the next bar's close, shift(-1)."""

    def signals(self, bars: Bars) -> pd.DataFrame:
        return (bars.close.shift(-1) > bars.close).astype(float).where(bars.close.shift(-1).notna(), 0.0)


def test_runner_refuses_a_strategy_that_peeks_before_any_session(daily_bars):
    from tradebook.errors import LookaheadError

    with pytest.raises(LookaheadError):
        StrategyRunner(PeeksAtTomorrow(instruments=["SPY.ARCX"], window=20), daily_bars)
