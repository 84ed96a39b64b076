"""How stale a quote is when an order meets it: zero on an event feed, its age on a sampled one.

An event feed (Binance's book ticker, CME MBP-1, a consolidated NBBO) sends a quote each
time the book changes, so a quote that has not been replaced still stands however old it
is: the costs fitted against it already hold its few milliseconds of transmission. A
*sampled* feed (snapshots every 100 ms, as in the 2021 BTCUSDT capture) shows the book as
it was at the snapshot; until the next one the mid diffuses unseen, and an order priced
against the snapshot meets a book that moved by about the recent volatility times the
square root of the snapshot's age.

Which kind a feed is, is read from its own quote stamps before each decision: arrivals of
an event feed cluster, so the spread of their gaps is at least that of a Poisson stream;
a sampler's gaps are more regular than that. Nothing is fitted: the widening of a cost
interval on a sampled feed (:func:`staleness_widening_bps`) is the mid's own diffusion.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from tradebook.errors import DataError

# (p90 - p10) / p50 of the gaps of a Poisson stream: ln(10) - ln(10/9) over ln(2), 3.17. Book
# events cluster (the bundled event feeds' windows of 200 gaps spread 3.6 to thousands); a
# sampler's gaps spread less (the 2021 BTCUSDT snapshots: 1.1 to 2.9, its stalls and catch-up
# bursts included). A Poisson-like stream sits on the line and may be judged either way:
# judged a sampler, its intervals widen by a diffusion the fit did not need (medians stay).
POISSON_GAP_SPREAD = (math.log(10.0) - math.log(10.0 / 9.0)) / math.log(2.0)
SAMPLING_WINDOW = 200  # the gaps between the last quotes before a decision that judge the feed
MIN_GAPS = 20  # fewer gaps before a decision: not judged (treated as an event feed, no widening)
NOMINAL_Z = 1.6448536269514722  # the normal's 95% quantile: the widening of a 90% interval


def sampled_feed(quote_ts_ns: np.ndarray, ts_ns: np.ndarray, *, window: int = SAMPLING_WINDOW,
                 min_gaps: int = MIN_GAPS) -> np.ndarray:
    """Per decision time, whether the quotes before it come from a sampler (more regular than Poisson).

    Only quotes stamped strictly before each time count; gaps of zero (two quotes stamped
    alike, e.g. bid and ask written apart) are left out. Raises DataError when the stamps
    go backwards.
    """
    q = np.asarray(quote_ts_ns, dtype=np.int64)
    when = np.asarray(ts_ns, dtype=np.int64)
    if len(q) > 1 and (np.diff(q) < 0).any():
        raise DataError("quote ts_ns goes backwards; expected quotes in time order")
    out = np.zeros(len(when), dtype=bool)
    distinct = np.unique(q)
    gaps = np.diff(distinct)  # between distinct stamps: zero gaps dropped
    if len(gaps) < min_gaps or not len(when):
        return out
    # the number of distinct stamps strictly before each time; gaps[:k-1] lie between them
    before = np.searchsorted(distinct, when, side="left")
    n_gaps = before - 1
    judged = np.flatnonzero(n_gaps >= min_gaps)
    if not len(judged):
        return out
    # one verdict per distinct window end, computed once
    ends, inverse = np.unique(n_gaps[judged], return_inverse=True)
    verdict = np.zeros(len(ends), dtype=bool)
    for i, end in enumerate(ends):
        recent = gaps[max(0, end - window):end]
        p10, p50, p90 = np.quantile(recent, (0.1, 0.5, 0.9))
        verdict[i] = p50 > 0 and (p90 - p10) / p50 < POISSON_GAP_SPREAD
    out[judged] = verdict[inverse]
    return out


def stale_age_ns(quotes: pd.DataFrame, ts_ns: np.ndarray) -> np.ndarray:
    """How long the book may have moved unseen before each of ``ts_ns`` (int64 ns).

    The age of the last quote strictly before each time on a sampled feed
    (:func:`sampled_feed`), zero on an event feed or before the first quote.
    """
    if "ts_ns" not in quotes.columns:
        raise DataError("quotes lack 'ts_ns'; expected a quotes frame (ts_ns, bid_px, ask_px, ...)")
    q = quotes["ts_ns"].to_numpy(np.int64)
    when = np.asarray(ts_ns, dtype=np.int64)
    last = np.searchsorted(q, when, side="left") - 1
    age = np.where(last >= 0, when - q[np.clip(last, 0, None)], 0)
    return np.where(sampled_feed(q, when), age, 0).astype(np.int64)


def staleness_widening_bps(stale_ns: np.ndarray, vol_1s_bps: np.ndarray, fitted_stale_ns: float = 0.0,
                           z: float = NOMINAL_Z) -> np.ndarray:
    """The half-width (bps) the mid's unseen diffusion adds to a 90% cost interval.

    ``z`` standard deviations of a mid moving at ``vol_1s_bps`` per square-root second over
    the staleness beyond ``fitted_stale_ns`` (what the fit's own sweeps already held: a
    model fitted on a sampled feed has its typical staleness in its quantiles). Zero where
    the volatility is unknown.
    """
    stale = np.asarray(stale_ns, dtype=np.float64)
    vol = np.asarray(vol_1s_bps, dtype=np.float64)
    extra_s = np.maximum(stale - float(fitted_stale_ns), 0.0) / 1e9
    return z * np.where(np.isfinite(vol), np.maximum(vol, 0.0), 0.0) * np.sqrt(extra_s)


def trade_shift(quotes: pd.DataFrame, trades: pd.DataFrame | None, ts_ns: np.ndarray) -> np.ndarray:
    """How far the trades since the quote in force show the book moved beyond it, in price, per time.

    The quote in force is the last one stamped strictly before each time; the last print
    that is liquidity (:func:`tradebook.data.frames.liquidity_mask`) stamped after that quote
    and strictly before the time tells where the touch is now when it printed beyond the
    quote: above the ask, the ask has moved up at least that far (positive); below the bid,
    the bid has moved down (negative). Zero where no print came since the quote, or the last
    one printed inside it. On a sampled feed this is most of what happened since the
    snapshot; on an event feed the trade stream often runs a few milliseconds ahead of the
    quotes.
    """
    when = np.asarray(ts_ns, dtype=np.int64)
    out = np.zeros(len(when))
    if trades is None or not len(trades) or not len(when):
        return out
    for frame, what, needed in ((quotes, "quotes", ("ts_ns", "bid_px", "ask_px")),
                                (trades, "trades", ("ts_ns", "price"))):
        missing = [c for c in needed if c not in frame.columns]
        if missing:
            raise DataError(f"{what} lack {missing}; expected a {what} frame of tradebook's schema")
    from tradebook.data.frames import liquidity_mask

    lit = liquidity_mask(trades)
    t_ts = trades["ts_ns"].to_numpy(np.int64)[lit]
    price = trades["price"].to_numpy(np.float64)[lit]
    q_ts = quotes["ts_ns"].to_numpy(np.int64)
    bid, ask = quotes["bid_px"].to_numpy(np.float64), quotes["ask_px"].to_numpy(np.float64)
    quote = np.searchsorted(q_ts, when, side="left") - 1
    last = np.searchsorted(t_ts, when, side="left") - 1
    known = (quote >= 0) & (last >= 0)
    qi, ti = np.clip(quote, 0, None), np.clip(last, 0, None)
    known &= t_ts[ti] > q_ts[qi]
    p = price[ti]
    with np.errstate(invalid="ignore"):
        shift = np.maximum(p - ask[qi], 0.0) + np.minimum(p - bid[qi], 0.0)
    out[known] = np.nan_to_num(shift[known], nan=0.0)
    return out


def sweep_trade_shift_bps(sweeps: pd.DataFrame, quotes: pd.DataFrame, trades: pd.DataFrame | None) -> np.ndarray:
    """:func:`trade_shift` at each of ``sweeps`` (:func:`tradebook.sim.truth.sweeps`), in bps of its mid, against it."""
    missing = [c for c in ("ts_ns", "side", "mid") if c not in sweeps.columns]
    if missing:
        raise DataError(f"sweeps lack {missing}; build them with tradebook.sim.truth.sweeps")
    if not len(sweeps):
        return np.zeros(0)
    shift = trade_shift(quotes, trades, sweeps["ts_ns"].to_numpy(np.int64))
    return sweeps["side"].to_numpy(np.float64) * shift / sweeps["mid"].to_numpy(np.float64) * 1e4
