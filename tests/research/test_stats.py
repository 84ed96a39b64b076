"""PSR, DSR, MinTRL and PBO against the published worked examples and a hand computation."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from tradebook.errors import ResearchError
from tradebook.research import (
    deflated_sharpe_ratio, deflated_sharpe_ratio_of, expected_max_sharpe, probabilistic_sharpe_ratio,
    probability_of_backtest_overfitting, sharpe_ratio,
)
from tradebook.research.stats import min_track_record_length, moments


def test_psr_matches_the_efficient_frontier_example():
    # Bailey & López de Prado (2012): monthly SR 1.585/sqrt(12), T=24, skew -2.448, raw kurtosis 10.164
    psr = probabilistic_sharpe_ratio(1.585 / math.sqrt(12), 0.0, 24, -2.448, 10.164)
    assert psr == pytest.approx(0.9132, abs=5e-4)
    # normal returns (skew 0, kurtosis 3) give a higher PSR for the same SR: the example's tails cost it
    assert probabilistic_sharpe_ratio(1.585 / math.sqrt(12), 0.0, 24, 0.0, 3.0) > psr


def test_dsr_matches_the_deflated_sharpe_ratio_example():
    # Bailey & López de Prado (2014): N=100, annual SR 2.5, annual V[SR] 0.5, T=1250 daily, skew -3, kurt 10
    sr = 2.5 / math.sqrt(250)
    dsr = deflated_sharpe_ratio(sr, 1250, -3.0, 10.0, n_trials=100, sr_variance=0.5 / 250)
    assert dsr == pytest.approx(0.9004, abs=5e-4)
    # SR0 annualised: about 1.8 a year is what the best of 100 skill-less trials shows
    assert expected_max_sharpe(100, 0.5) == pytest.approx(1.7894, abs=2e-3)
    assert expected_max_sharpe(1, 0.5) == 0.0
    # more trials, more deflation
    assert deflated_sharpe_ratio(sr, 1250, -3.0, 10.0, n_trials=1000, sr_variance=0.5 / 250) < dsr


def test_min_track_record_length_is_where_psr_reaches_the_confidence():
    sr, skew, kurt = 0.1, -0.5, 5.0
    n = min_track_record_length(sr, 0.0, skew, kurt, alpha=0.05)
    # by hand: 1 + (1 + 0.05 + 4/4*0.01) * (1.6449/0.1)^2
    assert n == pytest.approx(1 + 1.06 * (1.6448536 / 0.1) ** 2, rel=1e-6)
    assert probabilistic_sharpe_ratio(sr, 0.0, n, skew, kurt) == pytest.approx(0.95, abs=1e-9)
    assert min_track_record_length(0.0, 0.1, skew, kurt) == math.inf


def test_sharpe_and_moments_conventions():
    rng = np.random.default_rng(7)
    r = pd.Series(rng.normal(0.001, 0.01, 200_000))
    assert sharpe_ratio(r) == pytest.approx(r.mean() / r.std(ddof=1))
    assert sharpe_ratio(r, periods_per_year=252) == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(252))
    sr, skew, kurt, n = moments(r)
    assert n == 200_000 and abs(skew) < 0.05 and kurt == pytest.approx(3.0, abs=0.05)  # RAW kurtosis: normal = 3
    assert math.isnan(sharpe_ratio([0.01, 0.01, 0.01]))
    with pytest.raises(ResearchError, match="at least 2"):
        sharpe_ratio([0.01])
    with pytest.raises(ResearchError, match="kurtosis is RAW"):
        probabilistic_sharpe_ratio(0.5, 0.0, 100, 5.0, 1.0)


def test_dsr_of_returns_counts_every_trial():
    rng = np.random.default_rng(3)
    trials = pd.DataFrame(rng.normal(0.0, 0.01, (1000, 50)))
    best = trials.columns[int(np.argmax(trials.mean() / trials.std()))]
    result = deflated_sharpe_ratio_of(trials[best], trials, periods_per_year=252)
    srs = trials.mean() / trials.std()
    assert result.n_trials == 50 and result.n_obs == 1000
    assert result.sr_variance == pytest.approx(float(np.var(srs, ddof=1)))
    assert result.sr == pytest.approx(float(srs[best]))
    assert result.sr0 == pytest.approx(expected_max_sharpe(50, result.sr_variance))
    # the best of 50 noise trials looks good alone and is deflated to a coin flip or worse
    assert result.psr > 0.8 and result.dsr < 0.7
    assert "DSR" in str(result) and result.sr_annual == pytest.approx(result.sr * math.sqrt(252))


def test_pbo_hand_computation():
    # four one-row blocks, three trials, metric = mean; splits in combinations order:
    # {0,1} -> A best in, out ranks 1 of 3 (w=1/4); {0,2} -> A, rank 2 (w=1/2); {0,3} -> A (tie with C, first),
    # rank 3 (w=3/4); {1,2} -> A, tied with C at 2-3 (rank 2.5, w=5/8); {1,3} -> C, rank 1 (w=1/4);
    # {2,3} -> B (tie with C, first), tied with C at 1-2 (rank 1.5, w=3/8)
    returns = pd.DataFrame({"A": [3.0, 2.0, 1.0, 0.0], "B": [1.0, 0.0, 2.0, 1.0], "C": [0.0, 1.0, 0.0, 3.0]})
    result = probability_of_backtest_overfitting(returns, n_blocks=4, metric="mean")
    w = np.array([1 / 4, 1 / 2, 3 / 4, 5 / 8, 1 / 4, 3 / 8])
    assert result.n_splits == 6 and result.n_trials == 3
    np.testing.assert_allclose(result.oos_rank, w)
    np.testing.assert_allclose(result.logits, np.log(w / (1 - w)))
    assert result.pbo == pytest.approx(4 / 6)  # logits <= 0: splits 1, 2 (exactly the median), 5, 6
    # the same with a callable metric (the slow path) gives the same answer
    slow = probability_of_backtest_overfitting(returns, n_blocks=4, metric=lambda f: f.mean().to_numpy())
    np.testing.assert_allclose(slow.logits, result.logits)


def test_pbo_separates_skill_from_noise():
    rng = np.random.default_rng(11)
    noise = pd.DataFrame(rng.normal(0, 0.01, (1600, 20)))
    assert 0.3 < probability_of_backtest_overfitting(noise, n_blocks=10).pbo < 0.7
    skilled = noise.copy()
    skilled[0] += 0.004  # one trial with a real edge
    result = probability_of_backtest_overfitting(skilled, n_blocks=10)
    assert result.pbo < 0.05 and result.n_splits == math.comb(10, 5)


def test_pbo_bad_input():
    ok = pd.DataFrame(np.zeros((40, 3)))
    with pytest.raises(ResearchError, match="even number"):
        probability_of_backtest_overfitting(ok, n_blocks=5)
    with pytest.raises(ResearchError, match="at least 2 trials"):
        probability_of_backtest_overfitting(ok[[0]])
    with pytest.raises(ResearchError, match="at least 16 rows"):
        probability_of_backtest_overfitting(ok.head(10))
    bad = ok.copy()
    bad.iloc[3, 2] = np.nan
    with pytest.raises(ResearchError, match="trial 2 has NaN"):
        probability_of_backtest_overfitting(bad, n_blocks=4)
