"""Statistics of trials: Sharpe ratio, probabilistic and deflated Sharpe ratios, minimum track record
length, and the probability of backtest overfitting (CSCV).

Conventions, used by every function here:

- Sharpe ratios are PER PERIOD (mean / standard deviation of the period returns, ddof=1, no risk-free
  rate) unless a function says it annualises: annual SR = per-period SR * sqrt(periods_per_year).
  Variances of Sharpe ratios scale with periods_per_year (annual V = per-period V * periods_per_year).
- ``skew`` is the third standardised moment; ``kurtosis`` is the RAW (Pearson) fourth standardised
  moment, 3 for a normal distribution (not the excess kurtosis pandas' ``.kurt()`` returns). Both are the
  population (biased) moments, as in Bailey & López de Prado.
- ``n_obs`` (T) is the number of return observations.

References: Bailey & López de Prado, "The Sharpe Ratio Efficient Frontier" (2012, PSR and MinTRL);
"The Deflated Sharpe Ratio" (2014, DSR); Bailey, Borwein, López de Prado & Zhu, "The Probability of
Backtest Overfitting" (2017, CSCV).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from itertools import combinations
from statistics import NormalDist

import numpy as np
import pandas as pd

from tradebook.errors import ResearchError

EULER_GAMMA = 0.5772156649015329
_N = NormalDist()


def _returns_array(returns, what: str = "returns") -> np.ndarray:
    values = np.asarray(returns, dtype=np.float64).ravel()
    if np.isinf(values).any():
        raise ResearchError(f"{what} hold an infinite value; expected finite period returns")
    values = values[~np.isnan(values)]
    if values.size < 2:
        raise ResearchError(f"{what} have {values.size} finite observation(s); at least 2 are needed")
    return values


def sharpe_ratio(returns, periods_per_year: float | None = None) -> float:
    """Sharpe ratio of period returns: mean / std (ddof=1), NaNs dropped; x sqrt(periods_per_year) when given.

    NaN when the returns do not vary (std 0).
    """
    values = _returns_array(returns)
    std = values.std(ddof=1)
    if std == 0 or not np.isfinite(std):
        return float("nan")
    sr = float(values.mean() / std)
    return sr * math.sqrt(periods_per_year) if periods_per_year else sr


def moments(returns) -> tuple[float, float, float, int]:
    """(per-period Sharpe ratio, skew, RAW kurtosis, n_obs) of period returns (population moments, NaNs dropped)."""
    values = _returns_array(returns)
    centred = values - values.mean()
    m2 = float(np.mean(centred**2))
    if m2 == 0:
        return float("nan"), float("nan"), float("nan"), int(values.size)
    skew = float(np.mean(centred**3) / m2**1.5)
    kurt = float(np.mean(centred**4) / m2**2)
    return float(values.mean() / values.std(ddof=1)), skew, kurt, int(values.size)


def _sr_std(sr: float, skew: float, kurtosis: float) -> float:
    """sqrt(1 - skew*SR + (kurtosis - 1)/4 * SR^2): the non-normal correction of the SR's standard error."""
    inner = 1.0 - skew * sr + (kurtosis - 1.0) / 4.0 * sr * sr
    if not inner > 0:
        raise ResearchError(f"1 - skew*SR + (kurtosis-1)/4*SR^2 is {inner:.4g} (SR={sr}, skew={skew}, kurtosis="
                            f"{kurtosis}); expected > 0: check the moments (kurtosis is RAW, 3 for a normal)")
    return math.sqrt(inner)


def probabilistic_sharpe_ratio(sr: float, sr_benchmark: float, n_obs: int, skew: float, kurtosis: float) -> float:
    """PSR: the probability that the true Sharpe ratio exceeds ``sr_benchmark``, given the observed one.

    PSR(SR*) = Phi( (SR - SR*) * sqrt(T - 1) / sqrt(1 - skew*SR + (kurtosis - 1)/4 * SR^2) ),
    SR and SR* per period, kurtosis RAW. Example (Bailey & López de Prado 2012): monthly SR 1.585/sqrt(12),
    T = 24, skew -2.448, kurtosis 10.164, SR* = 0 gives 0.9132.
    """
    if n_obs < 2:
        raise ResearchError(f"n_obs is {n_obs}; the PSR needs at least 2 observations")
    z = (sr - sr_benchmark) * math.sqrt(n_obs - 1) / _sr_std(sr, skew, kurtosis)
    return _N.cdf(z)


def expected_max_sharpe(n_trials: int, sr_variance: float) -> float:
    """SR0: the expected maximum Sharpe ratio of ``n_trials`` independent trials whose true Sharpe is 0 and
    whose estimated Sharpe ratios have variance ``sr_variance`` (same period as the result):

    SR0 = sqrt(V) * ( (1 - gamma) * Phi^-1(1 - 1/N) + gamma * Phi^-1(1 - 1/(N e)) ), gamma = Euler's constant.
    One trial: 0.
    """
    if n_trials < 1:
        raise ResearchError(f"n_trials is {n_trials}; expected at least 1")
    if sr_variance < 0:
        raise ResearchError(f"sr_variance is {sr_variance}; expected >= 0")
    if n_trials == 1 or sr_variance == 0:
        return 0.0
    return math.sqrt(sr_variance) * ((1 - EULER_GAMMA) * _N.inv_cdf(1 - 1 / n_trials)
                                     + EULER_GAMMA * _N.inv_cdf(1 - 1 / (n_trials * math.e)))


def deflated_sharpe_ratio(sr: float, n_obs: int, skew: float, kurtosis: float, *, n_trials: int,
                          sr_variance: float) -> float:
    """DSR: the PSR of ``sr`` against SR0 = expected_max_sharpe(n_trials, sr_variance), all per period.

    Example (Bailey & López de Prado 2014): N = 100 trials, annual SR 2.5, annual variance of the trials'
    SRs 0.5, T = 1250 daily returns (250 a year), skew -3, raw kurtosis 10:
    deflated_sharpe_ratio(2.5/sqrt(250), 1250, -3, 10, n_trials=100, sr_variance=0.5/250) = 0.9004.
    """
    return probabilistic_sharpe_ratio(sr, expected_max_sharpe(n_trials, sr_variance), n_obs, skew, kurtosis)


def min_track_record_length(sr: float, sr_benchmark: float, skew: float, kurtosis: float,
                            alpha: float = 0.05) -> float:
    """MinTRL: observations needed for PSR(sr_benchmark) >= 1 - alpha, per-period SRs, raw kurtosis:

    MinTRL = 1 + (1 - skew*SR + (kurtosis - 1)/4 * SR^2) * ( Phi^-1(1 - alpha) / (SR - SR*) )^2;
    infinite when SR <= SR*.
    """
    if not 0 < alpha < 1:
        raise ResearchError(f"alpha is {alpha}; expected a probability in (0, 1)")
    if sr <= sr_benchmark:
        return float("inf")
    return 1.0 + _sr_std(sr, skew, kurtosis) ** 2 * (_N.inv_cdf(1 - alpha) / (sr - sr_benchmark)) ** 2


@dataclass(frozen=True)
class DsrResult:
    """The deflated Sharpe ratio of a chosen trial among ``n_trials`` (per-period figures; annual ones
    when ``periods_per_year`` was given). ``psr`` is the PSR against 0, ``dsr`` against ``sr0``."""

    dsr: float
    psr: float
    sr: float
    sr0: float
    n_trials: int
    sr_variance: float
    n_obs: int
    skew: float
    kurtosis: float
    periods_per_year: float | None = None

    @property
    def sr_annual(self) -> float | None:
        return None if self.periods_per_year is None else self.sr * math.sqrt(self.periods_per_year)

    def __str__(self) -> str:
        ann = "" if self.periods_per_year is None else f" (annual {self.sr_annual:.2f})"
        return (f"DSR {self.dsr:.3f}: Sharpe {self.sr:.4f}/period{ann} against {self.sr0:.4f} expected from the "
                f"best of {self.n_trials} trials of no skill; PSR vs 0 {self.psr:.3f}; T={self.n_obs}")


def deflated_sharpe_ratio_of(returns: pd.Series, trial_returns: pd.DataFrame, *,
                             periods_per_year: float | None = None) -> DsrResult:
    """DSR of the chosen trial's period ``returns`` given every trial's (one column each, the chosen one
    included): N = number of columns, V = variance (ddof=1) of the trials' per-period Sharpe ratios; skew and
    raw kurtosis from the chosen returns. Trials whose returns do not vary count with Sharpe 0."""
    if not isinstance(trial_returns, pd.DataFrame) or trial_returns.shape[1] < 1:
        raise ResearchError("trial_returns must be a DataFrame with one column of period returns per trial")
    sr, skew, kurt, n = moments(returns)
    if not np.isfinite(sr):
        raise ResearchError("the chosen returns do not vary; no Sharpe ratio to deflate")
    srs = []
    for column in trial_returns.columns:
        s = sharpe_ratio(trial_returns[column])
        srs.append(0.0 if not np.isfinite(s) else s)
    n_trials = len(srs)
    variance = float(np.var(srs, ddof=1)) if n_trials > 1 else 0.0
    sr0 = expected_max_sharpe(n_trials, variance)
    return DsrResult(
        dsr=probabilistic_sharpe_ratio(sr, sr0, n, skew, kurt), psr=probabilistic_sharpe_ratio(sr, 0.0, n, skew, kurt),
        sr=sr, sr0=sr0, n_trials=n_trials, sr_variance=variance, n_obs=n, skew=skew, kurtosis=kurt,
        periods_per_year=periods_per_year)


@dataclass(frozen=True)
class PboResult:
    """CSCV result: ``pbo`` = share of splits whose in-sample best trial ranks at or below the median out of
    sample (logit <= 0); ``logits`` one per split (in itertools.combinations order of the blocks);
    ``oos_rank`` the chosen trial's relative rank out of sample (rank / (N + 1)); ``prob_oos_loss`` the share
    of splits where its out-of-sample metric is below 0."""

    pbo: float
    logits: np.ndarray
    n_splits: int
    n_blocks: int
    n_trials: int
    oos_rank: np.ndarray
    prob_oos_loss: float

    def __str__(self) -> str:
        return (f"PBO {self.pbo:.3f} over {self.n_splits} splits of {self.n_blocks} blocks, {self.n_trials} trials "
                f"(median logit {np.median(self.logits):.2f}; out-of-sample loss in {self.prob_oos_loss:.0%})")


def _block_metric_fast(kind: str, sums: np.ndarray, sumsq: np.ndarray, counts: np.ndarray,
                       mask: np.ndarray) -> np.ndarray:
    """Metric of every trial on the union of the blocks selected by each row of ``mask`` (splits x blocks)."""
    s = mask @ sums
    n = (mask @ counts)[:, None]
    mean = s / n
    if kind == "mean":
        return mean
    var = np.maximum(mask @ sumsq - s * s / n, 0.0) / np.maximum(n - 1, 1)
    std = np.sqrt(var)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(std > 0, mean / np.where(std > 0, std, 1.0), 0.0)


def probability_of_backtest_overfitting(trial_returns: pd.DataFrame, n_blocks: int = 16,
                                        metric: str | Callable[[pd.DataFrame], np.ndarray] | None = None,
                                        ) -> PboResult:
    """Probability of backtest overfitting by combinatorially symmetric cross-validation (CSCV).

    The T x N matrix of period returns (one column per trial, rows aligned) is split into ``n_blocks`` (S,
    even) contiguous blocks of consecutive rows (sizes differ by at most one: numpy.array_split). For each
    of the C(S, S/2) ways to pick S/2 blocks as the in-sample set (the rest out of sample), the trial with
    the best in-sample metric is chosen (first on ties); its out-of-sample rank r among the N trials (1 =
    worst, ties averaged) gives w = r / (N + 1) and the logit l = ln(w / (1 - w)). PBO = share of splits
    with l <= 0: the in-sample best is at or below the out-of-sample median.
    ``metric``: None or "sharpe" (per-period Sharpe, ddof=1; 0 for returns that do not vary), "mean", or a
    callable taking a returns DataFrame and returning one value per column (slower: one call per split).
    """
    if not isinstance(trial_returns, pd.DataFrame):
        raise ResearchError(f"trial_returns is a {type(trial_returns).__name__}; expected a DataFrame, "
                            "one column of period returns per trial")
    values = trial_returns.to_numpy(dtype=np.float64)
    t, n_trials = values.shape
    if n_trials < 2:
        raise ResearchError(f"PBO needs at least 2 trials; got {n_trials}")
    if not isinstance(n_blocks, (int, np.integer)) or n_blocks < 2 or n_blocks % 2:
        raise ResearchError(f"n_blocks is {n_blocks!r}; expected an even number >= 2")
    if t < n_blocks:
        raise ResearchError(f"PBO with {n_blocks} blocks needs at least {n_blocks} rows of returns; got {t}")
    if not np.isfinite(values).all():
        bad = trial_returns.columns[~np.isfinite(values).all(axis=0)][0]
        raise ResearchError(f"trial {bad!r} has NaN or infinite returns; expected aligned finite period returns "
                            "(a day without a position is a return of 0)")
    blocks = np.array_split(np.arange(t), n_blocks)
    splits = list(combinations(range(n_blocks), n_blocks // 2))
    mask = np.zeros((len(splits), n_blocks))
    for i, chosen in enumerate(splits):
        mask[i, list(chosen)] = 1.0
    kind = "sharpe" if metric is None else metric
    if isinstance(kind, str):
        if kind not in ("sharpe", "mean"):
            raise ResearchError(f"metric is {kind!r}; expected None, 'sharpe', 'mean' or a callable")
        sums = np.stack([values[b].sum(axis=0) for b in blocks])
        sumsq = np.stack([(values[b] ** 2).sum(axis=0) for b in blocks])
        counts = np.array([len(b) for b in blocks], dtype=np.float64)
        train = _block_metric_fast(kind, sums, sumsq, counts, mask)
        test = _block_metric_fast(kind, sums, sumsq, counts, 1.0 - mask)
    else:
        train = np.empty((len(splits), n_trials))
        test = np.empty((len(splits), n_trials))
        for i, chosen in enumerate(splits):
            rows_in = np.concatenate([blocks[j] for j in chosen])
            rows_out = np.concatenate([blocks[j] for j in range(n_blocks) if j not in chosen])
            train[i] = np.asarray(kind(trial_returns.iloc[rows_in]), dtype=np.float64)
            test[i] = np.asarray(kind(trial_returns.iloc[rows_out]), dtype=np.float64)
    best = np.argmax(train, axis=1)
    chosen_oos = test[np.arange(len(splits)), best]
    below = (test < chosen_oos[:, None]).sum(axis=1)
    equal = (test == chosen_oos[:, None]).sum(axis=1)  # includes the chosen trial itself
    rank = below + (equal + 1) / 2.0
    w = rank / (n_trials + 1)
    logits = np.log(w / (1.0 - w))
    return PboResult(pbo=float(np.mean(logits <= 0)), logits=logits, n_splits=len(splits), n_blocks=int(n_blocks),
                     n_trials=int(n_trials), oos_rank=w, prob_oos_loss=float(np.mean(chosen_oos < 0)))
