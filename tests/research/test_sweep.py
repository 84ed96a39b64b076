"""sweep(): every trial is the backtest of its parameters, all are stored, the best is deflated by all."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from tradebook.errors import ResearchError
from tradebook.research.backtest import backtest, load_backtest
from tradebook.research.costs import CostModel
from tradebook.research.examples import MeanReversion
from tradebook.research.stats import deflated_sharpe_ratio_of
from tradebook.research.sweep import sweep
from tradebook.store import Store

PAIR = ("SPY.ARCX", "IBM.XNYS")
GRID = {"lookback": [10, 20], "entry": [0.75, 1.5]}


@pytest.fixture(scope="module")
def swept(daily_bars, daily_calibrated_template):
    bars = daily_bars.select(list(PAIR))
    bars = bars.iloc(slice(int(np.searchsorted(bars.index, pd.Timestamp("2012-01-01", tz="UTC"))),
                           int(np.searchsorted(bars.index, pd.Timestamp("2021-02-01", tz="UTC")))))
    with Store(daily_calibrated_template, read_only=True) as store:
        costs = CostModel.from_store(store, {i: "IBM.XNYS@v1" for i in PAIR})
    return bars, costs, sweep(MeanReversion(instruments=PAIR), GRID, bars, costs=costs)


def test_every_trial_is_the_backtest_of_its_parameters(swept):
    bars, costs, result = swept
    assert result.n_trials == 4 and len(result.trials) == 4
    assert result.trials[["lookback", "entry"]].to_dict("records") == [
        {"lookback": 10, "entry": 0.75}, {"lookback": 10, "entry": 1.5},
        {"lookback": 20, "entry": 0.75}, {"lookback": 20, "entry": 1.5}]
    # a trial that trades (Half-Kelly stakes nothing where a trial's round trips show no edge), not the best
    trading = result.trials.index[(result.trials["n_trades"] > 0)
                                  & (result.trials.index != result.trials["sharpe"].idxmax())]
    other = int(trading[-1])
    trial = result.trial_results()[other]
    assert trial.params == {"lookback": int(result.trials.loc[other, "lookback"]),
                            "entry": float(result.trials.loc[other, "entry"])}
    alone = backtest(MeanReversion(instruments=PAIR, **trial.params), bars, costs=costs)
    np.testing.assert_allclose(trial.equity.to_numpy(), alone.equity.to_numpy(), rtol=1e-12)
    assert trial.sizing == alone.sizing  # Half-Kelly measured on the trial's own round trips
    # per-bar trial metrics and the backtest's daily-record metrics: one definition (daily bars are the days)
    for name in ("sharpe", "total_return", "max_drawdown", "n_trades", "win_rate", "avg_cost_bps"):
        assert result.trials.loc[other, name] == pytest.approx(alone.metrics[name], rel=1e-9, abs=1e-12), name


def test_the_best_is_chosen_by_the_metric_and_deflated_by_all_trials(swept):
    _, _, result = swept
    best_at = int(result.trials["sharpe"].idxmax())
    assert result.best.params == result.trial_results()[best_at].params
    assert result.best.params["lookback"] == result.trials.loc[best_at, "lookback"]
    assert result.best.backtest_id == result.trials.loc[best_at, "backtest_id"]
    assert len(result.best.fills) > 0 and result.best.window is not None  # the chosen one can go to a session
    expected = deflated_sharpe_ratio_of(result.trial_returns[best_at], result.trial_returns)
    assert result.dsr.n_trials == 4 and result.dsr.dsr == pytest.approx(expected.dsr)
    assert result.dsr.dsr <= result.dsr.psr  # deflating never helps
    assert result.pbo.n_trials == 4 and 0 <= result.pbo.pbo <= 1


def test_every_trial_is_stored_once(swept, daily_store_template, tmp_path):
    _, _, result = swept
    shutil.copy(daily_store_template, tmp_path / "s.duckdb")
    with Store(tmp_path / "s.duckdb") as store:
        sweep_id = result.save(store)
        assert result.save(store) == sweep_id
        rows = store.query("SELECT backtest_id, sweep_id FROM research_backtests")
        assert len(rows) == 4 and (rows["sweep_id"] == sweep_id).all()
        assert sorted(rows["backtest_id"]) == sorted(result.trials["backtest_id"])
        stored = store.query("SELECT * FROM research_sweeps").iloc[0]
        assert stored["n_trials"] == 4 and stored["chosen_backtest_id"] == result.best.backtest_id
        equity_rows = store.query("SELECT count(*) AS n FROM research_equity")["n"].iloc[0]
        assert equity_rows == 4 * len(result.best.equity)  # every trial's equity, for the trial count's honesty
        fills = store.query("SELECT DISTINCT backtest_id FROM research_fills")["backtest_id"].tolist()
        assert fills == [result.best.backtest_id]  # records only for the chosen one
        loaded = load_backtest(store, "mean_reversion")  # no stand-alone backtest: the sweep's chosen trial
        assert loaded.backtest_id == result.best.backtest_id
        pd.testing.assert_frame_equal(loaded.fills, result.best.fills)
        other = next(t for t in result.trial_results() if t.backtest_id != result.best.backtest_id)
        trial = load_backtest(store, other.backtest_id)  # a trial: its equity and metrics, no records
        np.testing.assert_allclose(trial.equity.to_numpy(), other.equity.to_numpy())
        assert trial.metrics == pytest.approx(other.metrics, nan_ok=True) and trial.fills.empty
        assert trial.sweep_id == sweep_id and trial.sizing == other.sizing


def test_bad_grids_are_refused(swept):
    bars, _, _ = swept
    strategy = MeanReversion(instruments=PAIR)
    with pytest.raises(ResearchError, match=r"grid names \['window_size'\].*parameters are \['entry', 'lookback'\]"):
        sweep(strategy, {"window_size": [1, 2]}, bars)
    with pytest.raises(ResearchError, match=r"grid\['entry'\] is \[\]; expected a non-empty list"):
        sweep(strategy, {"entry": []}, bars)
    with pytest.raises(ResearchError, match="choose='profit'; expected one of sharpe"):
        sweep(strategy, {"entry": [1.0]}, bars, choose="profit")


class Momentum(MeanReversion):
    """Long after ``lookback`` rising closes in a row (any bar size)."""

    name = "momentum"
    params = {"lookback": 3, "entry": 1.0}

    def signals(self, bars):
        rising = (bars.close.diff() > 0).astype(float)
        return (rising.rolling(self.params["lookback"]).sum() >= self.params["lookback"]).astype(float) \
            .where(rising.rolling(self.params["lookback"]).count() >= self.params["lookback"])


def test_intraday_trials_are_summed_into_days_as_the_backtest_does(capsys):
    from tradebook.research.bars import Bars
    from tradebook.research.metrics import trading_days

    days = trading_days("XNYS", pd.Timestamp("2021-02-01"), pd.Timestamp("2021-04-30"))
    starts = [pd.Timestamp(f"{d.date()} 09:30", tz="America/New_York") + pd.Timedelta(minutes=30 * k)
              for d in days for k in range(13)]
    index = pd.DatetimeIndex(starts).tz_convert("UTC")
    rng = np.random.default_rng(5)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.003, len(index))))
    open_ = np.r_[100.0, close[:-1]] * (1 + rng.normal(0, 0.0005, len(index)))
    frame = lambda v: pd.DataFrame({"SPY.ARCX": v}, index=index)  # noqa: E731
    bars = Bars.from_frames(open=frame(open_), high=frame(np.maximum(open_, close)), low=frame(np.minimum(open_, close)),
                            close=frame(close), volume=frame(np.full(len(index), 1e4)), bar_seconds=1800)
    strategy = Momentum(instruments=["SPY.ARCX"], bar_seconds=1800)
    result = sweep(strategy, {"lookback": [2, 3]}, bars, progress=True)
    assert "sweep momentum" in capsys.readouterr().err  # the bar of trials (quiet by default under pytest)
    assert len(result.trial_returns) == len(days)  # one return per trading day, not per bar
    alone = backtest(strategy.with_params(lookback=2), bars, sizing=result.trial_results()[0].sizing)
    assert len(alone.daily) == len(days)
    for name in ("sharpe", "total_return", "max_drawdown", "n_trades", "turnover"):
        assert result.trials.loc[0, name] == pytest.approx(alone.metrics[name], rel=1e-9, abs=1e-12), name
