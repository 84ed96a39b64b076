"""The promotion gate: one test of one hypothesis, "paper behaves like the backtest", with a known error rate.

Thirty to ninety days of paper cannot prove a Sharpe ratio; they can show whether paper
trades, costs and draws down as the backtest said it would. The gate therefore asks
only that, and knows how often it wrongly rejects a strategy that does.

**The checks** (:data:`tradebook.research.metrics.METRICS`), each failing on its bad side
only: return, Sharpe, Sortino and win rate when too low; maximum drawdown when too deep;
average cost per fill when too high; the number of trades and the turnover when too low
or too high (the strategy is not doing what it did in the backtest); and the cost
residual (realised minus the fill model's prediction, per fill) when too high, judged as
a studentised mean, t = (mean residual - backtest's mean residual) / (sd / sqrt(fills)),
sd the backtest's own per-fill residual sd (pooled over all its fills), so its threshold is a
one-sided confidence bound: costs fail when the lower bound of the paper's mean residual
lies above what the backtest's fills showed. The backtest's sd, not the period's: a period
whose fills happen to share one residual (none improved, say) would have sd 0 and t = inf,
which put infinite thresholds on the check. Only a backtest whose fills all share one
residual falls back to each period's own sd.

**The reviews**: the paper period is judged at 30, 40, ... up to 90 trading days (by
default), each review on the period's first L days with thresholds for that length, in
order, the first decisive review deciding. A review answers REJECT when a check fails;
EXTEND when the win rate (fewer than ``min_trades`` closed trades) or the costs (fewer
than ``min_fills`` fills) cannot be judged yet, or when every check passes but the period
is not profitable; PROMOTE when every check passes and the period is profitable. At the
last review an unprofitable period is a REJECT "not profitable" (no check's error: it is
counted apart) and a period still too thin to judge a REJECT "not judged".

**The calibration** (:func:`calibrate_gate`): stationary-bootstrap paths of the
backtest's daily records (days drawn with their own fills; :mod:`.paths`) run through
the very review sequence above. Every check at every review fails at one common level q
of its own bootstrap distribution (q/2 per side for two-sided checks): a path's most
extreme check decides (Westfall-Young's min-p, all checks and all reviews in one family,
the cost residual included). q is the largest level at which the share of paths rejected
by a check at any review is at most alpha: alpha is spent across the reviews, not
granted to each. Thresholds are values of the bootstrap distributions and the rules are
strict (a low-side check fails when value < threshold), so tied values of discrete
metrics (win rate, trade counts) are never double counted: a value equal to the
threshold passes, exactly as in the calibration.

What the gate cannot see: a lost edge. A strategy whose true Sharpe is zero passes
30-day reviews most of the time (:mod:`.error_rates` measures how often for each
strategy); the edge is judged in research by the deflated Sharpe ratio.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

import numpy as np
import orjson
import pandas as pd

from tradebook.errors import PromotionError
from tradebook.promotion.paths import block_length as _block_length
from tradebook.promotion.paths import bootstrap_paths, day_arrays, review_metrics
from tradebook.research.metrics import DAILY_COLUMNS, METRICS, Side, window_metrics_array
from tradebook.research.metrics import periods_per_year as calendar_periods_per_year

CHECKS: tuple[str, ...] = tuple(METRICS)
_BAND_LEVELS = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


class Decision(StrEnum):
    EXTEND = "extend"
    PROMOTE = "promote"
    REJECT = "reject"


class Code(StrEnum):
    TOO_SHORT = "too_short"                      # fewer trading days than the first review
    TOO_FEW_TRADES = "too_few_trades"            # the win rate cannot be judged yet
    TOO_FEW_FILLS = "too_few_fills"              # the costs cannot be judged yet
    NOT_YET_PROFITABLE = "not_yet_profitable"    # every check passes, the period is not profitable yet
    CHECK_FAILED = "check_failed"                # one or more checks failed (named in .checks / .failed)
    NOT_PROFITABLE_AT_MAX = "not_profitable_at_max"
    NOT_JUDGED_AT_MAX = "not_judged_at_max"      # still too few trades or fills at the last review
    ALL_CHECKS_PASS = "all_checks_pass"
    OVERRIDE = "override"


# --- thresholds ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class GateThresholds:
    """The calibrated gate: for each review length, each check's thresholds (storable as JSON).

    ``thresholds[L][metric] = (low, high)``: the check fails when value < low or value >
    high (None: that side never fails). For ``cost_residual_bps`` the thresholds are on
    the studentised residual t (see the module docstring), centred on
    ``residual_center_bps``. ``bands[L][metric]`` holds the bootstrap quantiles (for
    evidence and plots), ``level`` the common per-check tail level q, ``calibrated_rate``
    the share of calibration paths rejected by a check.
    """

    alpha: float
    level: float
    reviews: tuple[int, ...]
    thresholds: dict[int, dict[str, tuple[float | None, float | None]]]
    bands: dict[int, dict[str, dict[str, float]]]
    min_trades: int
    min_fills: int
    residual_center_bps: float
    block_length: float
    n_paths: int
    seed: int
    periods_per_year: int
    calibrated_rate: float
    n_backtest_days: int
    residual_sd_bps: float = math.nan  # the backtest's per-fill residual sd the t is scaled by (NaN: each period's)

    @property
    def min_days(self) -> int:
        return self.reviews[0]

    @property
    def max_days(self) -> int:
        return self.reviews[-1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha, "level": self.level, "reviews": list(self.reviews),
            "thresholds": {str(k): {m: list(v) for m, v in t.items()} for k, t in self.thresholds.items()},
            "bands": {str(k): b for k, b in self.bands.items()},
            "min_trades": self.min_trades, "min_fills": self.min_fills,
            "residual_center_bps": self.residual_center_bps, "block_length": self.block_length,
            "n_paths": self.n_paths, "seed": self.seed, "periods_per_year": self.periods_per_year,
            "calibrated_rate": self.calibrated_rate, "n_backtest_days": self.n_backtest_days,
            "residual_sd_bps": None if math.isnan(self.residual_sd_bps) else self.residual_sd_bps,
        }

    def to_json(self) -> str:
        return orjson.dumps(self.to_dict(), option=orjson.OPT_SERIALIZE_NUMPY).decode()

    @classmethod
    def from_json(cls, text: str | bytes | Mapping[str, Any]) -> GateThresholds:
        d = dict(text) if isinstance(text, Mapping) else orjson.loads(text)
        return cls(
            alpha=float(d["alpha"]), level=float(d["level"]), reviews=tuple(int(x) for x in d["reviews"]),
            thresholds={int(k): {m: (v[0], v[1]) for m, v in t.items()} for k, t in d["thresholds"].items()},
            bands={int(k): b for k, b in d["bands"].items()},
            min_trades=int(d["min_trades"]), min_fills=int(d["min_fills"]),
            residual_center_bps=float(d["residual_center_bps"]), block_length=float(d["block_length"]),
            n_paths=int(d["n_paths"]), seed=int(d["seed"]), periods_per_year=int(d["periods_per_year"]),
            calibrated_rate=float(d["calibrated_rate"]), n_backtest_days=int(d["n_backtest_days"]),
            residual_sd_bps=math.nan if d.get("residual_sd_bps") is None else float(d["residual_sd_bps"]),
        )

    def table(self) -> pd.DataFrame:
        """One row per review and check: side, thresholds and the bootstrap band, for people to read."""
        rows = []
        for length in self.reviews:
            for metric in CHECKS:
                low, high = self.thresholds[length][metric]
                band = self.bands[length].get(metric, {})
                rows.append({"review_days": length, "metric": metric, "side": str(METRICS[metric]),
                             "fail_below": low, "fail_above": high,
                             **{f"p{int(round(q * 100)):02d}": band.get(str(q)) for q in _BAND_LEVELS}})
        return pd.DataFrame(rows)


def review_lengths(min_days: int, max_days: int, review_every: int) -> tuple[int, ...]:
    if min_days < 2 or max_days < min_days or review_every < 1:
        raise PromotionError(f"reviews from {min_days} to {max_days} trading days every {review_every}: expected "
                             "2 <= min_days <= max_days and review_every >= 1")
    lengths = list(range(min_days, max_days + 1, review_every))
    if lengths[-1] != max_days:
        lengths.append(max_days)
    return tuple(lengths)


def residual_sd(residual_sd_bps: float | None, metrics: Mapping[str, np.ndarray]) -> np.ndarray:
    """The per-fill residual sd a period's t is scaled by: the backtest's, else (None, NaN, 0) the period's own."""
    if residual_sd_bps is not None and math.isfinite(residual_sd_bps) and residual_sd_bps > 0:
        return np.full(np.shape(metrics["n_fills"]), float(residual_sd_bps))
    return np.asarray(metrics["cost_residual_sd_bps"], dtype=float)


def check_values(metrics: Mapping[str, np.ndarray], residual_center_bps: float,
                 residual_sd_bps: float | None = None) -> dict[str, np.ndarray]:
    """The values the checks compare: the metrics, with the cost residual studentised (t; see residual_sd)."""
    values = {m: np.asarray(metrics[m], dtype=float) for m in CHECKS}
    n = np.asarray(metrics["n_fills"], dtype=float)
    sd = residual_sd(residual_sd_bps, metrics)
    diff = values["cost_residual_bps"] - residual_center_bps
    with np.errstate(divide="ignore", invalid="ignore"):
        se = sd / np.sqrt(n)
        t = np.where(se > 0, diff / np.where(se > 0, se, 1.0), np.sign(diff) * np.inf)
    values["cost_residual_bps"] = np.where(n > 1, t, np.nan)
    return values


def judged(metrics: Mapping[str, np.ndarray], min_trades: int, min_fills: int) -> dict[str, np.ndarray]:
    """Which checks can be judged: the win rate needs min_trades closed trades, costs min_fills fills."""
    n_trades = np.asarray(metrics["n_trades"], dtype=float)
    n_fills = np.asarray(metrics["n_fills"], dtype=float)
    always = np.ones(n_trades.shape, dtype=bool)
    out = {m: always for m in CHECKS}
    out["win_rate"] = n_trades >= max(min_trades, 1)
    out["cost_bps"] = n_fills >= max(min_fills, 1)
    out["cost_residual_bps"] = n_fills >= max(min_fills, 2)
    return out


@dataclass
class Outcomes:
    """The gate's sequential decision for many paths (or one paper period)."""

    decision: np.ndarray        # Decision values (str)
    code: np.ndarray            # the deciding Code (str); for EXTEND the latest review's reason
    review_index: np.ndarray    # index into reviews of the deciding (or latest) review; -1: none reached
    failed: np.ndarray          # (paths x checks) bool: checks failed at the deciding review


def run_gate(per_review: Sequence[Mapping[str, np.ndarray]], reviews: Sequence[int],
             thresholds: Mapping[int, Mapping[str, tuple[float | None, float | None]]], *,
             min_trades: int, min_fills: int, residual_center_bps: float, is_last: Sequence[bool],
             residual_sd_bps: float | None = None) -> Outcomes:
    """Apply the reviews in order to paths whose metrics at each review are ``per_review``."""
    n = len(np.asarray(per_review[0]["return"])) if per_review else 1
    decision = np.full(n, Decision.EXTEND.value, dtype=object)
    code = np.full(n, Code.TOO_SHORT.value, dtype=object)
    review_index = np.full(n, -1)
    failed = np.zeros((n, len(CHECKS)), dtype=bool)
    open_ = np.ones(n, dtype=bool)
    for i, (metrics, length) in enumerate(zip(per_review, reviews)):
        values = check_values(metrics, residual_center_bps, residual_sd_bps)
        ok = judged(metrics, min_trades, min_fills)
        fails = np.zeros((n, len(CHECKS)), dtype=bool)
        for k, m in enumerate(CHECKS):
            low, high = thresholds[length][m]
            v = values[m]
            bad = np.zeros(n, dtype=bool)
            if low is not None:
                bad |= v < low
            if high is not None:
                bad |= v > high
            fails[:, k] = bad & ok[m]
        any_fail = fails.any(axis=1)
        few_trades, few_fills = ~ok["win_rate"], ~ok["cost_bps"]
        thin = few_trades | few_fills
        profitable = np.asarray(metrics["return"], dtype=float) > 0
        last = bool(is_last[i])
        here = open_.copy()
        review_index[here] = i
        reject = here & any_fail
        decision[reject], code[reject] = Decision.REJECT.value, Code.CHECK_FAILED.value
        failed[reject] = fails[reject]
        promote = here & ~any_fail & ~thin & profitable
        decision[promote], code[promote] = Decision.PROMOTE.value, Code.ALL_CHECKS_PASS.value
        rest = here & ~any_fail & ~promote
        if last:
            not_judged = rest & thin
            decision[not_judged], code[not_judged] = Decision.REJECT.value, Code.NOT_JUDGED_AT_MAX.value
            unprofitable = rest & ~thin
            decision[unprofitable], code[unprofitable] = Decision.REJECT.value, Code.NOT_PROFITABLE_AT_MAX.value
            open_[here] = False
        else:
            code[rest & few_trades] = Code.TOO_FEW_TRADES.value
            code[rest & ~few_trades & few_fills] = Code.TOO_FEW_FILLS.value
            code[rest & ~thin] = Code.NOT_YET_PROFITABLE.value
            open_ &= ~(reject | promote)
    return Outcomes(decision, code, review_index, failed)


def _thresholds_at(level: float, sorted_values: Mapping[int, Mapping[str, np.ndarray]],
                   reviews: Sequence[int]) -> dict[int, dict[str, tuple[float | None, float | None]]]:
    """Each check's thresholds at tail level ``level`` of its sorted bootstrap values (strict rules)."""
    out: dict[int, dict[str, tuple[float | None, float | None]]] = {}
    for length in reviews:
        row: dict[str, tuple[float | None, float | None]] = {}
        for m in CHECKS:
            x = sorted_values[length][m]
            side, count = METRICS[m], len(x)
            if count == 0:
                row[m] = (None, None)
                continue
            per_side = level / 2 if side is Side.TWO_SIDED else level
            # fail below x[k] rejects exactly the values v with #(x <= v) <= per_side * count
            k = min(int(math.floor(per_side * count + 1e-9)), count - 1)
            low = float(x[k]) if side in (Side.LOW, Side.TWO_SIDED) else None
            high = float(x[count - 1 - k]) if side in (Side.HIGH, Side.TWO_SIDED) else None
            row[m] = (low, high)
        out[length] = row
    return out


def calibrate_gate(backtest_daily: pd.DataFrame, *, alpha: float = 0.05, min_days: int = 30, max_days: int = 90,
                   review_every: int = 10, n_paths: int = 10_000, seed: int = 0, min_trades: int = 5,
                   min_fills: int = 20, block_length: float | None = None,
                   periods_per_year: int | None = None) -> GateThresholds:
    """Thresholds for every check at every review, set jointly on bootstrap paths of ``backtest_daily``.

    ``backtest_daily``: the backtest's daily records (``BacktestResult.daily``). Two sets of
    ``n_paths`` paths of ``max_days`` days are drawn by the stationary bootstrap
    (``block_length`` by default from the data) from ``seed``: the first gives each check's
    bootstrap distribution at each review, the second is held out to search the common
    tail level so that at most ``alpha`` of its paths are rejected by a check at any review
    (see the module docstring). Setting the level on paths the thresholds were not taken
    from keeps their sampling noise inside the error rate (on the same paths, fresh paths
    were measured about a point above alpha).
    """
    if not 0 < alpha < 0.5:
        raise PromotionError(f"alpha = {alpha}: expected a probability between 0 and 0.5")
    if n_paths < 200:
        raise PromotionError(f"n_paths = {n_paths}: the gate's tails need at least 200 bootstrap paths")
    reviews = review_lengths(min_days, max_days, review_every)
    missing = [c for c in DAILY_COLUMNS if c not in backtest_daily.columns]
    if missing:
        raise PromotionError(f"backtest daily records lack {missing}; expected research.metrics.daily_records")
    n_days = len(backtest_daily)
    if n_days < 2 * max_days:
        raise PromotionError(f"the backtest has {n_days} trading days; calibrating reviews up to {max_days} days "
                             f"needs at least {2 * max_days} (a longer backtest, or a shorter max_days)")
    if periods_per_year is None:
        periods_per_year = calendar_periods_per_year(backtest_daily.attrs.get("calendar", "XNYS"))
    arrays = day_arrays(backtest_daily)
    fills = arrays["n_fills"].sum()
    center = float(arrays["residual_bps_sum"].sum() / fills) if fills > 0 else 0.0
    # the backtest's per-fill residual sd (ddof 1): the scale of every period's t
    pooled_var = ((arrays["residual_bps_sumsq"].sum() - fills * center * center) / (fills - 1)) if fills > 1 else 0.0
    sd = math.sqrt(pooled_var) if pooled_var > 1e-18 else math.nan
    mean_block = float(block_length) if block_length is not None else _block_length(backtest_daily)
    # two independent sets of paths: one sets each check's thresholds (the shape), the other the common
    # level, so the thresholds' own sampling noise is inside the rate that is held at alpha
    shape_seed, level_seed = np.random.SeedSequence(seed).spawn(2)
    per_review = review_metrics(bootstrap_paths(arrays, n_paths=n_paths, length=max_days, mean_block=mean_block,
                                                seed=shape_seed), reviews, periods_per_year=periods_per_year)
    held_out = review_metrics(bootstrap_paths(arrays, n_paths=n_paths, length=max_days, mean_block=mean_block,
                                              seed=level_seed), reviews, periods_per_year=periods_per_year)

    sorted_values: dict[int, dict[str, np.ndarray]] = {}
    bands: dict[int, dict[str, dict[str, float]]] = {}
    for length, metrics in zip(reviews, per_review):
        values, ok = check_values(metrics, center, sd), judged(metrics, min_trades, min_fills)
        sorted_values[length] = {m: np.sort(values[m][ok[m] & ~np.isnan(values[m])]) for m in CHECKS}
        bands[length] = {}
        for m in CHECKS:
            raw = np.asarray(metrics[m], dtype=float)[ok[m]]
            raw = raw[~np.isnan(raw)]
            # values of the sample, not interpolations (a Sortino may be +inf)
            bands[length][m] = ({str(q): float(np.quantile(raw, q, method="inverted_cdf")) for q in _BAND_LEVELS}
                                if len(raw) else {})
    is_last = [i == len(reviews) - 1 for i in range(len(reviews))]

    def rate(level: float) -> float:
        out = run_gate(held_out, reviews, _thresholds_at(level, sorted_values, reviews), min_trades=min_trades,
                       min_fills=min_fills, residual_center_bps=center, is_last=is_last, residual_sd_bps=sd)
        return float(np.mean(out.code == Code.CHECK_FAILED.value))

    lo, hi = 0.0, alpha  # one check alone at level alpha already rejects about alpha at the first review
    if rate(hi) <= alpha:
        lo = hi
    else:
        for _ in range(24):  # alpha / 2^24: far finer than the paths can resolve
            mid = (lo + hi) / 2
            if rate(mid) <= alpha:
                lo = mid
            else:
                hi = mid
    return GateThresholds(
        alpha=alpha, level=lo, reviews=reviews, thresholds=_thresholds_at(lo, sorted_values, reviews), bands=bands,
        min_trades=min_trades, min_fills=min_fills, residual_center_bps=center, block_length=mean_block,
        n_paths=n_paths, seed=seed, periods_per_year=periods_per_year, calibrated_rate=rate(lo),
        n_backtest_days=n_days, residual_sd_bps=sd,
    )


# --- one paper period ---------------------------------------------------------------------------

@dataclass(frozen=True)
class GateDecision:
    """The gate's answer for one paper period, with its evidence.

    ``checks``: one row per check at the deciding review (metric, value, threshold, side,
    passed, judged, fail_below, fail_above, the backtest's bootstrap band p05/p50/p95,
    evidence in words). ``days``: trading days of paper; ``review_days``: the length of
    the deciding (or latest) review; ``more_days_needed``: days until the next review
    when the answer is EXTEND.
    """

    strategy: str
    decision: Decision
    codes: tuple[Code, ...]
    checks: pd.DataFrame
    summary: str
    days: int
    review_days: int | None
    more_days_needed: int | None
    metrics: dict[str, float]
    thresholds: GateThresholds
    period_start_ns: int | None = None
    period_end_ns: int | None = None
    backtest_id: str | None = None
    decision_id: str | None = None
    override: bool = False

    @property
    def failed(self) -> list[str]:
        return [] if self.checks.empty else self.checks.loc[~self.checks["passed"], "metric"].tolist()

    def __str__(self) -> str:
        return self.summary

    def _repr_html_(self) -> str:
        return f"<p><b>{self.decision.value.upper()}</b> {self.summary}</p>" + (
            "" if self.checks.empty else self.checks.to_html(index=False))


def _fmt(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if isinstance(x, float) and math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.4g}"


def _checks_frame(metrics: Mapping[str, float], thresholds: GateThresholds, length: int,
                  failed_row: np.ndarray) -> pd.DataFrame:
    arrays = {k: np.array([v]) for k, v in metrics.items()}
    values = check_values(arrays, thresholds.residual_center_bps, thresholds.residual_sd_bps)
    ok = judged({k: np.array([v]) for k, v in metrics.items()}, thresholds.min_trades, thresholds.min_fills)
    rows = []
    n_fills = metrics["n_fills"]
    per_fill_sd = float(residual_sd(thresholds.residual_sd_bps, arrays)[0])
    se = per_fill_sd / math.sqrt(n_fills) if n_fills > 1 else math.nan
    for k, m in enumerate(CHECKS):
        side = METRICS[m]
        low, high = thresholds.thresholds[length][m]
        band = thresholds.bands[length].get(m, {})
        value = float(metrics[m])
        is_judged = bool(ok[m][0])
        if m == "cost_residual_bps":
            # shown in bps: the t threshold at this period's standard error (the per-fill sd over its fills)
            t = float(values[m][0])
            bps_high = thresholds.residual_center_bps + high * se if high is not None and se == se else None
            threshold = bps_high
            lower_bound = value - (high or 0.0) * se if se == se else math.nan
            scale = "the backtest's" if thresholds.residual_sd_bps > 0 else "this period's"
            evidence = (f"mean residual {_fmt(value)} bps over {int(n_fills)} fills (se {_fmt(se)}, from "
                        f"{scale} per-fill sd {_fmt(per_fill_sd)}), "
                        f"t = {_fmt(t)} against the backtest's {_fmt(thresholds.residual_center_bps)} bps; "
                        f"fails when t > {_fmt(high)}: when the lower bound at the gate's level "
                        f"({_fmt(lower_bound)} bps here) lies above the backtest's")
            if high is None:  # no path had a t: every backtest fill cost exactly its prediction (zero costs)
                evidence = (f"mean residual {_fmt(value)} bps over {int(n_fills)} fills; no threshold: every "
                            "backtest fill cost exactly its prediction, so there is no scale to judge a residual by")
            low_v, high_v = None, bps_high
        else:
            if side is Side.LOW:
                threshold = low
            elif side is Side.HIGH:
                threshold = high
            else:
                median = band.get("0.5", value)
                threshold = low if value <= median else high
            low_v, high_v = low, high
            rule = " or ".join(filter(None, [f"< {_fmt(low)}" if low is not None else "",
                                               f"> {_fmt(high)}" if high is not None else ""]))
            evidence = (f"{m} {_fmt(value)}; the backtest's {length}-day paths: median {_fmt(band.get('0.5'))}, "
                        f"5-95% {_fmt(band.get('0.05'))}..{_fmt(band.get('0.95'))}; fails when {rule}")
        if not is_judged:
            need = f"{thresholds.min_trades} closed trades" if m == "win_rate" else f"{thresholds.min_fills} fills"
            evidence = f"not judged: needs {need}; " + evidence
        rows.append({"metric": m, "value": value, "threshold": threshold, "side": str(side),
                     "passed": not bool(failed_row[k]), "judged": is_judged, "fail_below": low_v,
                     "fail_above": high_v, "band_p05": band.get("0.05"), "band_p50": band.get("0.5"),
                     "band_p95": band.get("0.95"), "evidence": evidence})
    return pd.DataFrame(rows)


def judge(paper_daily: pd.DataFrame, thresholds: GateThresholds, *, strategy: str = "") -> GateDecision:
    """The gate's decision for a paper period's daily records (no store: :func:`review` stores it)."""
    missing = [c for c in DAILY_COLUMNS if c not in paper_daily.columns]
    if missing:
        raise PromotionError(f"paper daily records lack {missing}; expected research.metrics.daily_records columns")
    days = len(paper_daily)
    reached = [length for length in thresholds.reviews if length <= days]
    ppy = thresholds.periods_per_year
    name = strategy or "the strategy"
    if not reached:
        metrics = (window_metrics_array(day_arrays(paper_daily), periods_per_year=ppy) if days >= 2 else {})
        flat = {k: float(v[0]) for k, v in metrics.items()}
        more = thresholds.min_days - days
        summary = (f"EXTEND: {name} has {days} trading days of paper; the first review is at "
                   f"{thresholds.min_days} ({more} more)")
        return GateDecision(name, Decision.EXTEND, (Code.TOO_SHORT,), pd.DataFrame(), summary, days, None, more, flat,
                            thresholds)
    arrays = {c: a[None, :] for c, a in day_arrays(paper_daily).items()}
    per_review = review_metrics(arrays, reached, periods_per_year=ppy)
    is_last = [length == thresholds.max_days for length in reached]
    out = run_gate(per_review, reached, thresholds.thresholds, min_trades=thresholds.min_trades,
                   min_fills=thresholds.min_fills, residual_center_bps=thresholds.residual_center_bps,
                   is_last=is_last, residual_sd_bps=thresholds.residual_sd_bps)
    i = int(out.review_index[0])
    length = reached[i]
    metrics = {k: float(v[0]) for k, v in per_review[i].items()}
    decision = Decision(out.decision[0])
    checks = _checks_frame(metrics, thresholds, length, out.failed[0])
    more = None
    if decision is Decision.EXTEND:
        ok = judged({k: np.array([v]) for k, v in metrics.items()}, thresholds.min_trades, thresholds.min_fills)
        codes = tuple(c for c, why in ((Code.TOO_FEW_TRADES, not ok["win_rate"][0]),
                                       (Code.TOO_FEW_FILLS, not ok["cost_bps"][0]),
                                       (Code.NOT_YET_PROFITABLE, not metrics["return"] > 0)) if why)
        later = [r for r in thresholds.reviews if r > days]
        more = (later[0] - days) if later else None
    else:
        codes = (Code(out.code[0]),)
    summary = _summary(name, decision, codes, checks, days, length, more, metrics)
    return GateDecision(name, decision, codes, checks, summary, days, length, more, metrics, thresholds)


def _summary(name: str, decision: Decision, codes: Sequence[Code], checks: pd.DataFrame, days: int, length: int,
             more: int | None, metrics: Mapping[str, float]) -> str:
    head = f"{decision.value.upper()} at the {length}-day review ({days} trading days of paper): "
    if Code.CHECK_FAILED in codes:
        failed = checks[~checks["passed"]]
        parts = []
        for row in failed.itertuples():
            below = row.fail_below is not None and row.value < row.fail_below
            where = f"below {_fmt(row.fail_below)}" if below else f"above {_fmt(row.fail_above)}"
            parts.append(f"{row.metric} {_fmt(row.value)} is {where} (its {row.side} side is bad)")
        return head + f"{name} does not behave like its backtest: " + "; ".join(parts)
    if decision is Decision.PROMOTE:
        return head + (f"every check passes and the period returned {metrics['return']:.2%}; {name} is promoted "
                       "(it stays on paper until a live venue is armed for it)")
    if Code.NOT_PROFITABLE_AT_MAX in codes:
        return head + (f"every check passes but the period returned {metrics['return']:.2%} by the maximum paper "
                       "period: not profitable (no check failed)")
    if Code.NOT_JUDGED_AT_MAX in codes:
        return head + (f"by the maximum paper period {name} still has too few trades ({int(metrics['n_trades'])}) "
                       f"or fills ({int(metrics['n_fills'])}) to judge")
    reasons = []
    if Code.TOO_FEW_TRADES in codes:
        reasons.append(f"{int(metrics['n_trades'])} closed trades, too few to judge the win rate")
    if Code.TOO_FEW_FILLS in codes:
        reasons.append(f"{int(metrics['n_fills'])} fills, too few to judge the costs")
    if Code.NOT_YET_PROFITABLE in codes:
        reasons.append(f"return {metrics['return']:.2%}, not yet profitable")
    tail = f"; next review in {more} trading days" if more is not None else ""
    return head + "no check failed; " + ", ".join(reasons) + tail


# --- the store ----------------------------------------------------------------------------------

def _name(strategy: Any) -> str:
    name = getattr(strategy, "name", strategy)
    if not isinstance(name, str) or not name:
        raise PromotionError(f"strategy {strategy!r}: expected a Strategy or its name")
    return name


def _backtest_for(store: Any, name: str, backtest_id: str | None) -> str:
    if backtest_id is not None:
        return backtest_id
    staged = store.query("SELECT backtest_id FROM strategy_stages WHERE strategy = ? AND backtest_id IS NOT NULL "
                         "ORDER BY ts_ns DESC LIMIT 1", [name])
    if not staged.empty:
        return str(staged["backtest_id"].iloc[0])
    chosen = store.query("SELECT chosen_backtest_id AS b FROM research_sweeps WHERE strategy = ? AND "
                         "chosen_backtest_id IS NOT NULL ORDER BY created_at_ns DESC LIMIT 1", [name])
    if not chosen.empty:
        return str(chosen["b"].iloc[0])
    latest = store.query("SELECT backtest_id FROM research_backtests WHERE strategy = ? "
                         "ORDER BY created_at_ns DESC LIMIT 1", [name])
    if latest.empty:
        known = store.query("SELECT DISTINCT strategy FROM research_backtests ORDER BY strategy")["strategy"].tolist()
        raise PromotionError(f"no backtest of {name!r} in the store to judge its paper against; backtests are stored "
                             f"for: {', '.join(known) or 'none'} (BacktestResult.save(store))")
    return str(latest["backtest_id"].iloc[0])


def save_decision(store: Any, decision: GateDecision, *, backtest_id: str, ts_ns: int | None = None,
                  override_reason: str | None = None) -> str:
    """Store ``decision`` with its evidence in promotion_decisions; returns its id.

    The same review again (same backtest, paper period, decision and evidence as the latest
    stored one, not an override) is not stored twice: its id is returned, so a demo or a
    notebook run twice leaves one row.
    """
    now = time.time_ns() if ts_ns is None else int(ts_ns)
    evidence = {
        "days": decision.days, "review_days": decision.review_days, "more_days_needed": decision.more_days_needed,
        "metrics": decision.metrics, "checks": decision.checks.to_dict(orient="records"),
        "thresholds": {"alpha": decision.thresholds.alpha, "level": decision.thresholds.level,
                       "reviews": list(decision.thresholds.reviews),
                       "calibrated_rate": decision.thresholds.calibrated_rate,
                       "n_paths": decision.thresholds.n_paths, "seed": decision.thresholds.seed,
                       "block_length": decision.thresholds.block_length},
    }
    raw = orjson.dumps(evidence, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS,
                       default=lambda x: None)
    digest = hashlib.sha256(f"{decision.strategy}|{backtest_id}|{now}|{decision.decision}".encode() + raw)
    decision_id = digest.hexdigest()[:16]
    start = decision.period_start_ns if decision.period_start_ns is not None else now
    end = decision.period_end_ns if decision.period_end_ns is not None else now
    codes = orjson.dumps([c.value for c in decision.codes]).decode()
    # a review run again on the same paper period says nothing new: keep one row
    if override_reason is None and decision.period_start_ns is not None and decision.period_end_ns is not None:
        latest = store.query(
            "SELECT decision_id, backtest_id, period_start_ns, period_end_ns, decision, codes, evidence, override "
            "FROM promotion_decisions WHERE strategy = ? ORDER BY ts_ns DESC LIMIT 1", [decision.strategy])
        if len(latest):
            row = latest.iloc[0]
            if (not row["override"] and row["backtest_id"] == backtest_id and int(row["period_start_ns"]) == int(start)
                    and int(row["period_end_ns"]) == int(end) and row["decision"] == decision.decision.value
                    and row["codes"] == codes and row["evidence"] == raw.decode()):
                return str(row["decision_id"])
    with store.transaction() as con:
        con.execute(
            "INSERT INTO promotion_decisions (decision_id, strategy, ts_ns, backtest_id, period_start_ns, "
            "period_end_ns, decision, codes, summary, evidence, override, override_reason) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [decision_id, decision.strategy, now, backtest_id, int(start), int(end), decision.decision.value,
             codes, decision.summary, raw.decode(),
             override_reason is not None, override_reason])
    return decision_id


def decisions(store: Any, strategy: Any | None = None) -> pd.DataFrame:
    """Stored gate decisions (overrides included), oldest first."""
    if strategy is None:
        return store.query("SELECT * FROM promotion_decisions ORDER BY ts_ns")
    return store.query("SELECT * FROM promotion_decisions WHERE strategy = ? ORDER BY ts_ns", [_name(strategy)])


def review(store: Any, strategy: Any, *, backtest_id: str | None = None, as_of: int | None = None,
           thresholds: GateThresholds | None = None, costs: Any = None, start: int | None = None,
           account_id: str | None = None, save: bool = True, **calibration: Any) -> GateDecision:
    """Judge ``strategy``'s paper period against its backtest, store the decision with its evidence.

    The backtest: ``backtest_id``, else the one recorded with the strategy's stage, else
    its sweep's chosen trial, else its latest. The paper period: from ``start`` (default:
    the strategy's first order) to ``as_of`` (default: the last quote of its
    instruments), as :func:`tradebook.promotion.paper_metrics.paper_daily` computes it
    with ``costs`` (default: the calibrations the backtest was priced with).
    ``thresholds``: :func:`calibrate_gate` on the backtest's daily records (with
    ``**calibration`` keyword arguments) unless given.
    """
    from tradebook.promotion.paper_metrics import paper_daily

    name = _name(strategy)
    bt_id = _backtest_for(store, name, backtest_id)
    from tradebook.research.backtest import load_backtest

    backtest = load_backtest(store, bt_id)
    if costs is None:
        costs = backtest_costs(store, bt_id)
    traded = getattr(backtest, "strategy", None)
    instruments = list(traded.instruments) if traded is not None else None
    daily = paper_daily(store, name, account_id=account_id, start=start, end=as_of, costs=costs,
                        instruments=instruments, starting_equity=backtest_starting_equity(store, bt_id),
                        calendar=backtest.daily.attrs.get("calendar", "XNYS"))
    if thresholds is None:
        thresholds = calibrate_gate(backtest.daily, **calibration)
    result = judge(daily, thresholds, strategy=name)
    result = _with(result, period_start_ns=int(daily.attrs.get("start_ns", 0)) or None,
                   period_end_ns=int(daily.attrs.get("end_ns", 0)) or None, backtest_id=bt_id)
    if save:
        result = _with(result, decision_id=save_decision(store, result, backtest_id=bt_id))
    return result


def _with(decision: GateDecision, **changes: Any) -> GateDecision:
    return replace(decision, **changes)


def backtest_starting_equity(store: Any, backtest_id: str) -> float | None:
    """The starting equity a stored backtest ran with (the paper session should start with it too)."""
    rows = store.query("SELECT starting_equity FROM research_backtests WHERE backtest_id = ?", [backtest_id])
    return None if rows.empty else float(rows["starting_equity"].iloc[0])


def backtest_costs(store: Any, backtest_id: str) -> Any:
    """The CostModel a stored backtest was priced with (its calibrations), or the zero model."""
    from tradebook.research.costs import CostModel

    rows = store.query("SELECT calibrations FROM research_backtests WHERE backtest_id = ?", [backtest_id])
    described = orjson.loads(rows["calibrations"].iloc[0]) if not rows.empty else {}
    instruments = described.get("instruments", {}) if isinstance(described, dict) else {}
    if described.get("kind") == "zero" or not instruments:
        return CostModel.zero()
    return CostModel.from_store(store, {k: v["calibration_id"] for k, v in instruments.items()})


def override(store: Any, strategy: Any, decision: Decision | str, reason: str, *,
             backtest_id: str | None = None, ts_ns: int | None = None) -> GateDecision:
    """Overrule the gate for ``strategy`` with ``decision``; the reason is required and stored as an override."""
    name = _name(strategy)
    try:
        chosen = Decision(decision)
    except ValueError:
        raise PromotionError(f"override decision {decision!r}: expected one of "
                             f"{', '.join(d.value for d in Decision)}") from None
    if not reason or not str(reason).strip():
        raise PromotionError(f"an override of the gate for {name!r} needs a reason; none was given")
    bt_id = _backtest_for(store, name, backtest_id)
    last = decisions(store, name)
    previous = f"; the gate had said {last['decision'].iloc[-1].upper()}" if not last.empty else ""
    summary = f"{chosen.value.upper()} by override: {str(reason).strip()}{previous}"
    empty = GateThresholds(0.0, 0.0, (0,), {0: {}}, {0: {}}, 0, 0, 0.0, 0.0, 0, 0, 252, 0.0, 0)
    result = GateDecision(name, chosen, (Code.OVERRIDE,), pd.DataFrame(), summary, 0, None, None, {}, empty,
                          backtest_id=bt_id, override=True)
    return _with(result, decision_id=save_decision(store, result, backtest_id=bt_id, ts_ns=ts_ns,
                                                   override_reason=str(reason).strip()))


__all__ = [
    "CHECKS", "Code", "Decision", "GateDecision", "GateThresholds", "Outcomes", "backtest_costs",
    "backtest_starting_equity", "calibrate_gate", "check_values",
    "decisions", "judge", "judged", "override", "review", "review_lengths", "run_gate", "save_decision",
]
