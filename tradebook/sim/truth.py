"""Ground truth for the paper-fill simulator, extracted from real trades, quotes and books.

A fill model is only as good as its agreement with what real orders got. This
module turns recorded data into the reference answers a model is scored against:

- :func:`sweeps` - what real aggressive orders paid against the quote they saw;
- :func:`book_walk_truth` - what walking the real visible book would have cost;
- :func:`passive_outcomes` - whether a resting limit order would have been filled;
- :func:`liquidity_mask` - which recorded prints took displayed liquidity at all (the
  rule calibration, truth and the engine's trade feed share, decided once here);
- :data:`QUOTE_FILL_RULES` - when a resting limit fills on a feed without trades (FX).

Every function is pure and vectorised: it reads frames, returns new frames or
arrays, and never cleans silently (what it drops is counted in
``frame.attrs["dropped"]``). Times are int64 UTC nanoseconds, prices float64.
"""

from __future__ import annotations

import numba
import numpy as np
import pandas as pd

from tradebook.errors import DataError
from tradebook.model.instruments import Instrument, get_instrument
from tradebook.model.time import NS_PER_DAY
from tradebook.data.frames import (  # noqa: F401 - the liquidity rule, re-exported
    LIQUIDITY_CONDITION_BITS,
    LIQUIDITY_EXCLUSIONS,
    OFF_EXCHANGE_VENUES,
    aggressor_from_column,
    liquidity_exclusions,
    liquidity_mask,
    liquidity_trades,
    quote_columns,
)
from tradebook.sim.book import BookSnapshots, as_ns_array, parse_side, walk_levels

BPS = 1e4
# Relative tolerance for "same price" between a computed value (a mid, a VWAP) and a
# quoted one: far below any tick (1e-9 of 60,000 USDT is 6e-5 cents), far above the
# float64 rounding of p*q/q or (a+b)/2.
_PRICE_RTOL = 1e-9
# Tolerance, in ticks, for a trade price to count as "at" a limit price.
_TICK_TOL = 1e-6


# -- which prints are liquidity --------------------------------------------------------
# The rule (which venues and AlgoSeek sale conditions count, with every code documented)
# lives in tradebook.data.frames beside the other readings of a trades frame, so that the
# replay feeds of the data layer apply it as well; it is re-exported here, where the
# ground truth, calibration and the engine's trade feed (orders.trade_arrays) use it.


# -- resting orders on feeds without trades -------------------------------------------
# Spot FX feeds (Dukascopy, FXCM) carry quotes only, so when a resting limit fills is a
# rule, not an observation. ``"through"`` (the default): a resting buy at L fills when the
# offer trades *through* it, ask < L (at least a tick below): a quote merely touching our
# price shows someone else quoting beside us, and on an aggregated retail feed it says
# nothing about our own place in line; only a price past ours proves the market would
# have had to take us first. ``"touch"``: it fills as soon as the offer reaches L
# (ask <= L), the optimistic reading. The FillModel carries the choice
# (``quote_fill_rule``) and the fidelity report says which applied.
QUOTE_FILL_RULES: tuple[str, ...] = ("through", "touch")
DEFAULT_QUOTE_FILL_RULE = "through"


def check_quote_fill_rule(rule: str) -> str:
    """``rule`` if it is one of :data:`QUOTE_FILL_RULES`, else a DataError naming them."""
    if rule not in QUOTE_FILL_RULES:
        raise DataError(f"quote fill rule {rule!r} is unknown; expected one of {list(QUOTE_FILL_RULES)} "
                        "('through': the far touch must pass the limit; 'touch': reaching it fills)")
    return rule


def quote_fill_offset_ticks(rule: str) -> int:
    """How many ticks past the limit the far touch must be for a resting order to fill (0 touch, 1 through).

    A buy at ``L`` fills when ``ask <= L - offset * tick``; a sell when ``bid >= L + offset * tick``.
    """
    return 1 if check_quote_fill_rule(rule) == "through" else 0


def quote_fill_rule_of(model: object, instrument: Instrument | str | None = None) -> str:
    """The quote fill rule that applies to ``model`` trading ``instrument`` on a feed without trades.

    The model's own ``quote_fill_rule`` when it sets one; else :data:`DEFAULT_QUOTE_FILL_RULE`
    (``"through"``) for spot FX, whose feeds are quotes only, and ``"touch"`` for the other
    asset classes, whose recorded feeds carry trades (a quote-only replay of them keeps
    the earlier rule). The one place the engine, the vectorized path and the fidelity
    report read the rule from; a model stored before the field existed gets the default.
    """
    rule = getattr(model, "quote_fill_rule", None)
    if rule:
        return check_quote_fill_rule(rule)
    if instrument is None:
        return DEFAULT_QUOTE_FILL_RULE
    if isinstance(instrument, str):
        instrument = get_instrument(instrument)
    return DEFAULT_QUOTE_FILL_RULE if instrument.asset_class.value == "fx_spot" else "touch"


def truth_label(outcomes: pd.DataFrame) -> str:
    """What a passive outcome frame was judged by, for reports: the trade rule, or the quote rule that applied.

    ``'trades'``, or for a quote-only feed ``'quotes, FX rule: through (the quote must trade
    through the limit)'`` / ``'... touch (the quote reaching the limit fills)'``.
    """
    rule = outcomes.attrs.get("rule", "")
    if not str(rule).startswith("quote"):
        return str(rule)
    applied = outcomes.attrs.get("quote_fill_rule") or ("touch" if rule == "quote_touch" else "through")
    what = "the quote must trade through the limit" if applied == "through" else "the quote reaching the limit fills"
    return f"quotes, FX rule: {applied} ({what})"


def quote_only_outcomes(
    quotes: pd.DataFrame,
    placement_ts_ns: np.ndarray,
    side: str | int | np.ndarray,
    distance_ticks: int | np.ndarray,
    horizon_ns: int | np.ndarray,
    tick: float,
    *,
    rule: str = DEFAULT_QUOTE_FILL_RULE,
) -> pd.DataFrame:
    """Would a resting limit order have been filled, on a feed with quotes only (spot FX), by ``rule``?

    The order rests ``distance_ticks`` behind the touch prevailing at placement (quotes
    stamped at or before it, as in :func:`passive_outcomes`). It fills at the first
    quote stamped in ``(placement, placement + horizon]`` whose far side passes the
    limit by :func:`quote_fill_offset_ticks` ticks: with ``"through"`` a buy at ``L``
    needs ``ask <= L - tick`` (a sell ``bid >= L + tick``), with ``"touch"`` ``ask <= L``.

    Same columns as :func:`passive_outcomes` (``queue_ahead``: the displayed size at the
    touch for distance 0, information only; ``filled_by`` 'through' or ''; no
    ``volume_at_price``: NaN); ``attrs["rule"]`` is ``"quote_through"`` or ``"quote_touch"``.
    """
    offset = quote_fill_offset_ticks(rule)
    if not np.isfinite(tick) or tick <= 0:
        raise DataError(f"tick is {tick!r}; expected the instrument's positive tick size")
    placement = as_ns_array(placement_ts_ns, "placement_ts_ns")
    n = len(placement)
    sides = np.array([parse_side(s) for s in np.broadcast_to(np.asarray(side, dtype=object), (n,))],
                     dtype=np.int64)
    distance = np.broadcast_to(np.asarray(distance_ticks), (n,))
    if distance.size and (not np.issubdtype(distance.dtype, np.integer) or (distance < 0).any()):
        raise DataError("distance_ticks must be integers >= 0 (0 = join the touch)")
    horizon = np.broadcast_to(np.asarray(horizon_ns), (n,))
    if horizon.size and (not np.issubdtype(horizon.dtype, np.integer) or (horizon <= 0).any()):
        raise DataError("horizon_ns must be positive integer nanoseconds")
    quote = prevailing_quotes(quotes, placement, strictly_before=False)
    valid = quote["valid"]
    with np.errstate(invalid="ignore"):
        touch_ticks = np.where(sides > 0, np.rint(quote["bid_px"] / tick), np.rint(quote["ask_px"] / tick))
    limit_ticks = touch_ticks - sides * distance.astype(np.int64)
    touch_size = np.where(sides > 0, quote["bid_sz"], quote["ask_sz"])
    ts = quotes["ts_ns"].to_numpy(dtype=np.int64)
    bid = quotes[quote_columns(quotes)["bid_px"]].to_numpy(dtype=np.float64, na_value=np.nan) / tick
    ask = quotes[quote_columns(quotes)["ask_px"]].to_numpy(dtype=np.float64, na_value=np.nan) / tick
    first = np.searchsorted(ts, placement, side="right")
    last = np.searchsorted(ts, placement + horizon.astype(np.int64), side="right")
    fill_index = _quote_only_kernel(valid, sides, limit_ticks, float(offset), first, last, bid, ask, _TICK_TOL)
    filled = fill_index >= 0
    time_to_fill = np.full(n, np.nan)
    time_to_fill[filled] = (ts[fill_index[filled]] - placement[filled]).astype(np.float64)
    frame = pd.DataFrame({
        "placement_ts_ns": placement,
        "side": sides,
        "distance_ticks": distance.astype(np.int64),
        "limit_px": np.where(valid, limit_ticks * tick, np.nan),
        "valid": valid,
        "queue_ahead": np.where(valid & (distance == 0), touch_size, np.nan),
        "filled": filled,
        "time_to_fill_ns": time_to_fill,
        "filled_by": np.where(filled, "through", ""),
        "volume_at_price": np.full(n, np.nan),
    })
    frame.attrs["rule"] = f"quote_{rule}"
    return frame


@numba.njit(cache=False, nogil=True)
def _quote_only_kernel(valid, sides, limit_ticks, offset, first, last, bid_ticks, ask_ticks,
                       tol):  # pragma: no cover - compiled
    # First quote in each placement's window whose far side passes the limit by ``offset``
    # ticks; the scan stops at the fill.
    n = len(valid)
    fill_index = np.full(n, -1, dtype=np.int64)
    for p in range(n):
        if not valid[p]:
            continue
        if sides[p] > 0:
            level = limit_ticks[p] - offset
            for j in range(first[p], last[p]):
                if ask_ticks[j] <= level + tol:
                    fill_index[p] = j
                    break
        else:
            level = limit_ticks[p] + offset
            for j in range(first[p], last[p]):
                if bid_ticks[j] >= level - tol:
                    fill_index[p] = j
                    break
    return fill_index


# -- quotes --------------------------------------------------------------------------
def prevailing_quotes(
    quotes: pd.DataFrame, ts_ns: np.ndarray, *, strictly_before: bool = True
) -> dict[str, np.ndarray]:
    """The L1 quote in force at each of ``ts_ns`` (an as-of join by ``np.searchsorted``).

    With ``strictly_before`` (the default) a quote stamped exactly at ``t`` is *not*
    used: an order deciding at ``t`` (or a trade printing at ``t``) cannot have seen
    the quote update its own execution caused, and recorded feeds often stamp both
    with the same time. Returns float64 arrays ``bid_px, ask_px, bid_sz, ask_sz, mid``
    (NaN sizes when the frame has none), int64 ``quote_ts_ns`` (-1 where no quote),
    and bool ``has_quote`` (a prior quote exists), ``crossed_or_locked`` (it has
    bid >= ask) and ``valid`` (has_quote, two-sided and bid < ask).

    ``quotes`` may be an L1 frame (``bid_px``...) or a top-N book (``bid_px_0``...).
    """
    columns = quote_columns(quotes)
    when = as_ns_array(ts_ns, "ts_ns")
    quote_ts = quotes["ts_ns"].to_numpy(dtype=np.int64)
    if (np.diff(quote_ts) < 0).any():
        raise DataError("quotes ts_ns goes backwards; expected non-decreasing ts_ns")
    row = np.searchsorted(quote_ts, when, side="left" if strictly_before else "right") - 1
    has_quote = row >= 0
    safe = np.clip(row, 0, None)
    out: dict[str, np.ndarray] = {}
    for name, column in columns.items():
        if column in quotes.columns and len(quotes):
            values = quotes[column].to_numpy(dtype=np.float64, na_value=np.nan)[safe]
            out[name] = np.where(has_quote, values, np.nan)
        else:
            out[name] = np.full(len(when), np.nan)
    bid, ask = out["bid_px"], out["ask_px"]
    with np.errstate(invalid="ignore"):
        two_sided = np.isfinite(bid) & np.isfinite(ask)
        out["crossed_or_locked"] = has_quote & two_sided & (bid >= ask)
        out["valid"] = has_quote & two_sided & (bid < ask)
    out["has_quote"] = has_quote
    out["mid"] = (bid + ask) / 2.0
    out["quote_ts_ns"] = np.where(has_quote, quote_ts[safe] if len(quote_ts) else -1, -1).astype(np.int64)
    return out


# -- trade sides ---------------------------------------------------------------------
def infer_aggressor(price: np.ndarray, quote: dict[str, np.ndarray], previous_price: np.ndarray) -> np.ndarray:
    """Lee-Ready style side of each trade: quote rule, then a strict tick rule; 0 = unknown.

    Above the prevailing mid: a buyer lifted the offer (+1); below: a seller hit the
    bid (-1). At the mid the quote says nothing, so compare with the previous trade
    price: an uptick is a buy, a downtick a sell, an unchanged price (or no previous
    trade) stays unknown rather than inheriting an older tick (zero-tick carry-over
    guesses right only a little more often than a coin on midpoint prints). Where the
    quote is not ``valid`` the side is unknown as well.
    """
    price = np.asarray(price, dtype=np.float64)
    previous_price = np.asarray(previous_price, dtype=np.float64)
    mid = quote["mid"]
    with np.errstate(invalid="ignore"):
        tolerance = _PRICE_RTOL * np.abs(mid)
        above, below = price > mid + tolerance, price < mid - tolerance
        uptick, downtick = price > previous_price, price < previous_price
    side = np.where(above, 1, np.where(below, -1, np.where(uptick, 1, np.where(downtick, -1, 0))))
    return np.where(quote["valid"], side, 0).astype(np.int8)


def trade_sides(trades: pd.DataFrame, quotes: pd.DataFrame) -> np.ndarray:
    """Each trade's aggressor: the file's ``aggressor_side`` when it has one, else inferred from ``quotes``."""
    if "aggressor_side" in trades.columns:
        return aggressor_from_column(trades)
    price = trades["price"].to_numpy(dtype=np.float64)
    previous = np.r_[np.nan, price[:-1]][: len(price)]
    return infer_aggressor(price, prevailing_quotes(quotes, trades["ts_ns"].to_numpy()), previous)


# -- regular hours -------------------------------------------------------------------
def regular_hours_mask(ts_ns: np.ndarray, instrument: Instrument | str) -> np.ndarray:
    """True where ``ts_ns`` falls in the instrument's regular session (weekday rules, no holidays).

    Mirrors :meth:`TradingHours.is_open` vectorised: the open/close clock times are
    read in the instrument's own time zone, so DST is handled; sessions with
    ``close <= open`` run past midnight (CME Globex, spot FX). Equity pre- and
    post-market trade at much wider spreads, so calibration wants them out.
    """
    if isinstance(instrument, str):
        instrument = get_instrument(instrument)
    hours = instrument.trading_hours
    ts = as_ns_array(ts_ns, "ts_ns")
    if hours.always_open:
        return np.ones(len(ts), dtype=bool)
    wall = pd.DatetimeIndex(ts.view("datetime64[ns]"), tz="UTC").tz_convert(hours.timezone).tz_localize(None)
    wall_ns = wall.as_unit("ns").asi8
    clock = wall_ns % NS_PER_DAY  # local time of day
    weekday = ((wall_ns // NS_PER_DAY) + 3) % 7  # 1970-01-01 was a Thursday (Monday = 0)
    opens = _clock_ns(hours.open)
    closes = _clock_ns(hours.close)
    open_days = np.array(sorted(hours.open_weekdays), dtype=np.int64)
    today_open = np.isin(weekday, open_days)
    if closes > opens:
        return today_open & (clock >= opens) & (clock < closes)
    yesterday_open = np.isin((weekday - 1) % 7, open_days)
    return (today_open & (clock >= opens)) | (yesterday_open & (clock < closes))


def _clock_ns(t) -> int:
    return ((t.hour * 60 + t.minute) * 60 + t.second) * 1_000_000_000 + t.microsecond * 1000


# -- sweeps --------------------------------------------------------------------------
_SWEEP_COLUMNS = [
    "ts_ns", "side", "quantity", "vwap", "n_trades", "n_prices", "first_price", "worst_price", "mid", "bid_px",
    "ask_px", "bid_sz", "ask_sz", "spread_bps", "half_spread_bps", "cost_bps", "touch_px", "touch_size", "size_over_touch",
    "inside_spread", "at_touch", "beyond_touch", "price_improvement_bps", "quote_ts_ns", "quote_age_ns",
]
_DROP_REASONS = ("suspicious", "off_exchange", "non_regular_condition", "no_aggressor", "outside_mask",
                 "no_prior_quote", "crossed_or_locked_quote", "unknown_side")


def _default_group_column(trades: pd.DataFrame) -> str:
    # The exchange's match time groups the fills of one aggressive order; the capture
    # clock cannot (Binance sends one message per fill, each received a few hundred
    # ns apart, so no two Binance trades share ts_ns; CME packets mix aggressors).
    for column in ("ts_trade_ns", "ts_event_ns"):
        if column in trades.columns and not trades[column].isna().any():
            return column
    return "ts_ns"


def sweeps(
    trades: pd.DataFrame,
    quotes: pd.DataFrame,
    *,
    mask: np.ndarray | None = None,
    group_by: str = "auto",
    drop_suspicious: bool = True,
    liquidity_only: bool = True,
) -> pd.DataFrame:
    """Group real aggressive trades into sweeps and price each against the quote it met.

    A sweep is a run of consecutive trades with the same grouping time and the same
    aggressor side: the fills of one marketable order. ``group_by="auto"`` uses the
    exchange match time when the file has one (``ts_trade_ns``, else ``ts_event_ns``)
    and ``ts_ns`` otherwise; pass ``"ts_ns"`` for the literal capture-time rule (on
    Binance it makes every trade its own sweep: see the module notes in the tests).
    Sides come from ``aggressor_side`` or, when the file has none (IBM), from
    :func:`infer_aggressor` against the quote prevailing before each trade.

    Trades are dropped, and counted once each under the first reason that applies, in
    ``result.attrs["dropped"]``: ``suspicious`` (vendor flag), ``off_exchange`` and
    ``non_regular_condition`` (prints that are not liquidity, :func:`liquidity_mask`;
    kept with ``liquidity_only=False``), ``no_aggressor``
    (NONE: auction prints), ``outside_mask`` (``mask`` False, e.g. from
    :func:`regular_hours_mask`), ``no_prior_quote``, ``crossed_or_locked_quote``,
    ``unknown_side``. ``attrs["trades_used"]`` and ``attrs["group_by"]`` say what was kept
    and how it was grouped.

    One row per sweep: ``ts_ns`` (first trade), ``side`` (+1 buy / -1 sell),
    ``quantity``, ``vwap``, ``n_trades``, ``n_prices`` (distinct consecutive prices),
    ``first_price`` (the first fill: at the touch when the quote is in sync),
    ``worst_price``; the quote prevailing strictly before the first trade (``mid``,
    ``bid_px``, ``ask_px``, sizes, ``quote_ts_ns``, ``quote_age_ns``); and
    ``spread_bps``, ``half_spread_bps``, ``cost_bps = side*(vwap-mid)/mid*1e4``,
    ``touch_px``/``touch_size`` (the ask for buys, the bid for sells),
    ``size_over_touch``, ``inside_spread`` (vwap strictly between bid and ask),
    ``at_touch`` (every fill exactly at the touch), ``beyond_touch`` (the worst
    fill is past the touch) and ``price_improvement_bps = side*(touch_px-vwap)/mid*1e4``
    (so ``cost_bps = half_spread_bps - price_improvement_bps``).
    """
    for column in ("ts_ns", "price", "size"):
        if column not in trades.columns:
            raise DataError(f"trades frame lacks {column!r}; expected at least ts_ns, price, size")
    n = len(trades)
    ts = trades["ts_ns"].to_numpy(dtype=np.int64)
    if (np.diff(ts) < 0).any():
        raise DataError("trades ts_ns goes backwards; expected the file's order (non-decreasing ts_ns)")
    group_column = _default_group_column(trades) if group_by == "auto" else group_by
    if group_column not in trades.columns or trades[group_column].isna().any():
        raise DataError(f"group_by column {group_column!r} is missing or has empty values; expected 'auto', "
                        "'ts_ns' or a complete integer time column such as ts_event_ns")
    price = trades["price"].to_numpy(dtype=np.float64)
    size = trades["size"].to_numpy(dtype=np.float64)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (n,):
            raise DataError(f"mask has shape {mask.shape}; expected one bool per trade ({n},)")

    reason = np.zeros(n, dtype=np.int8)  # 0 = kept, else 1 + index into _DROP_REASONS

    def drop(condition: np.ndarray, name: str) -> None:
        reason[(reason == 0) & condition] = 1 + _DROP_REASONS.index(name)

    if drop_suspicious and "suspicious" in trades.columns:
        drop(trades["suspicious"].to_numpy(dtype=bool, na_value=False), "suspicious")
    if liquidity_only:
        exclusion = liquidity_exclusions(trades, check_suspicious=False)
        drop(exclusion == 1 + LIQUIDITY_EXCLUSIONS.index("off_exchange"), "off_exchange")
        drop(exclusion == 1 + LIQUIDITY_EXCLUSIONS.index("non_regular_condition"), "non_regular_condition")
    has_column_side = "aggressor_side" in trades.columns
    if has_column_side:
        side = aggressor_from_column(trades)
        drop(side == 0, "no_aggressor")
    if mask is not None:
        drop(~mask, "outside_mask")
    quote = prevailing_quotes(quotes, ts)
    drop(~quote["has_quote"], "no_prior_quote")
    drop(quote["has_quote"] & ~quote["valid"], "crossed_or_locked_quote")
    if not has_column_side:
        # Tick rule against the previous trade that is liquidity (not a flagged bad print, not
        # an off-exchange or non-regular report stamped at report time).
        usable = ~np.isin(reason, [1 + _DROP_REASONS.index(r)
                                   for r in ("suspicious", "off_exchange", "non_regular_condition")])
        previous = np.full(n, np.nan)
        usable_rows = np.flatnonzero(usable)
        previous[usable_rows[1:]] = price[usable_rows[:-1]]
        side = infer_aggressor(price, quote, previous)
    drop(side == 0, "unknown_side")

    kept = np.flatnonzero(reason == 0)
    dropped = {name: int((reason == 1 + i).sum()) for i, name in enumerate(_DROP_REASONS)}
    result = _aggregate_sweeps(kept, ts, trades[group_column].to_numpy(dtype=np.int64), side, price, size, quote)
    result.attrs["dropped"] = dropped
    result.attrs["trades_used"] = int(len(kept))
    result.attrs["group_by"] = group_column
    return result


def _aggregate_sweeps(kept, ts, group_key, side, price, size, quote) -> pd.DataFrame:
    if not len(kept):
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in _SWEEP_COLUMNS})
    k_key, k_side, k_price, k_size = group_key[kept], side[kept], price[kept], size[kept]
    new = np.r_[True, (k_key[1:] != k_key[:-1]) | (k_side[1:] != k_side[:-1])]
    starts = np.flatnonzero(new)
    quantity = np.add.reduceat(k_size, starts)
    notional = np.add.reduceat(k_size * k_price, starts)
    low = np.minimum.reduceat(k_price, starts)
    high = np.maximum.reduceat(k_price, starts)
    price_changes = np.r_[False, k_price[1:] != k_price[:-1]] & ~new
    n_prices = 1 + np.add.reduceat(price_changes.astype(np.int64), starts)
    n_trades = np.diff(np.r_[starts, len(kept)])
    first = kept[starts]
    sweep_side = k_side[starts].astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        vwap = np.where(quantity > 0, notional / np.where(quantity > 0, quantity, 1.0), (low + high) / 2)
    vwap = np.where(low == high, low, vwap)  # one price: exact, no p*q/q rounding
    worst = np.where(sweep_side > 0, high, low)
    best = np.where(sweep_side > 0, low, high)
    bid, ask = quote["bid_px"][first], quote["ask_px"][first]
    bid_sz, ask_sz = quote["bid_sz"][first], quote["ask_sz"][first]
    mid = quote["mid"][first]
    touch_px = np.where(sweep_side > 0, ask, bid)
    touch_size = np.where(sweep_side > 0, ask_sz, bid_sz)
    tolerance = _PRICE_RTOL * mid
    with np.errstate(invalid="ignore", divide="ignore"):
        spread_bps = (ask - bid) / mid * BPS
        size_over_touch = np.where(touch_size > 0, quantity / touch_size, np.nan)
    frame = pd.DataFrame({
        "ts_ns": ts[first],
        "side": sweep_side,
        "quantity": quantity,
        "vwap": vwap,
        "n_trades": n_trades.astype(np.int64),
        "n_prices": n_prices.astype(np.int64),
        "first_price": k_price[starts],
        "worst_price": worst,
        "mid": mid,
        "bid_px": bid,
        "ask_px": ask,
        "bid_sz": bid_sz,
        "ask_sz": ask_sz,
        "spread_bps": spread_bps,
        "half_spread_bps": spread_bps / 2,
        "cost_bps": sweep_side * (vwap - mid) / mid * BPS,
        "touch_px": touch_px,
        "touch_size": touch_size,
        "size_over_touch": size_over_touch,
        "inside_spread": (vwap > bid + tolerance) & (vwap < ask - tolerance),
        "at_touch": (worst == touch_px) & (best == touch_px),
        "beyond_touch": sweep_side * (worst - touch_px) > tolerance,
        "price_improvement_bps": sweep_side * (touch_px - vwap) / mid * BPS,
        "quote_ts_ns": quote["quote_ts_ns"][first],
        "quote_age_ns": ts[first] - quote["quote_ts_ns"][first],
    })
    return frame[_SWEEP_COLUMNS]


def sweep_summary(sweep_frame: pd.DataFrame) -> dict[str, float]:
    """The numbers a fill model is designed from: how many sweeps, what they paid, how big they were."""
    s = sweep_frame
    if not len(s):
        return {"n_sweeps": 0}
    quantiles = np.nanquantile(s["size_over_touch"].to_numpy(dtype=np.float64), [0.5, 0.9, 0.99])
    return {
        "n_sweeps": int(len(s)),
        "n_trades": int(s["n_trades"].sum()),
        "median_cost_bps": float(np.median(s["cost_bps"])),
        "mean_cost_bps": float(np.mean(s["cost_bps"])),
        "median_half_spread_bps": float(np.median(s["half_spread_bps"])),
        "share_at_touch": float(s["at_touch"].mean()),
        "share_inside_spread": float(s["inside_spread"].mean()),
        "share_beyond_touch": float(s["beyond_touch"].mean()),
        "share_multi_price": float((s["n_prices"] > 1).mean()),
        # A first fill better than the touch it supposedly met: hidden or midpoint
        # liquidity on venues that have it (US equities), or a quote that already shows
        # the sweep's own effect (two feeds not in sync: Binance bookTicker vs trades).
        "share_first_fill_better_than_touch": float(
            (s["side"] * (s["first_price"] - s["touch_px"]) < -_PRICE_RTOL * s["mid"]).mean()),
        "size_over_touch_p50": float(quantiles[0]),
        "size_over_touch_p90": float(quantiles[1]),
        "size_over_touch_p99": float(quantiles[2]),
        "share_size_over_touch_gt1": float((s["size_over_touch"] > 1).mean()),
    }


# -- book walks ----------------------------------------------------------------------
def book_walk_truth(
    snapshots: BookSnapshots,
    sizes_rel_top: np.ndarray,
    rng: np.random.Generator,
    typical_top_size: float,
    *,
    size_jitter: float = 0.1,
) -> pd.DataFrame:
    """The true cost of walking the real visible book, per sample, side and order size.

    Sizes are ``sizes_rel_top * typical_top_size`` (e.g. 0.5x..20x the median touch
    size, :func:`tradebook.sim.book.typical_top_size`), each multiplied by a
    log-uniform factor ``exp(U(-size_jitter, size_jitter))`` drawn from ``rng``: real
    books cluster at round sizes, and a fixed grid of order sizes would alias
    against them, putting artificial steps into a fitted cost curve. Pass
    ``size_jitter=0`` for the exact grid (``rng`` is then unused).

    One row per (sample, side, size) for samples whose touch is two-sided and
    uncrossed (others are counted in ``attrs["dropped"]["not_two_sided"]``):
    ``sample`` (position in ``snapshots``), ``ts_ns``, ``side`` (+1 buy / -1 sell),
    ``size_rel_top``, ``quantity``; the L1 view a model would have had (``mid``,
    ``bid_px``, ``ask_px``, ``bid_sz``, ``ask_sz``, ``spread_bps``,
    ``half_spread_bps``, ``touch_size``, ``size_over_touch``); and the truth:
    ``deep_enough`` (the visible levels held the whole quantity), ``avg_price`` and
    ``cost_bps = side*(avg-mid)/mid*1e4`` (NaN when not deep enough: no price is
    invented for liquidity the book did not show), ``filled_qty``,
    ``visible_cost_bps`` (the cost of the part that was visible: a lower bound when
    not deep enough), ``worst_price``, ``levels_used`` and ``visible_qty``.
    """
    rel = np.atleast_1d(np.asarray(sizes_rel_top, dtype=np.float64))
    if rel.ndim != 1 or not len(rel) or not np.all(np.isfinite(rel)) or (rel <= 0).any():
        raise DataError(f"sizes_rel_top must be a 1-D array of positive numbers, got {sizes_rel_top!r}")
    if not np.isfinite(typical_top_size) or typical_top_size <= 0:
        raise DataError(f"typical_top_size is {typical_top_size!r}; expected a positive size")
    if not 0 <= size_jitter < 5:
        raise DataError(f"size_jitter is {size_jitter!r}; expected a log-factor in [0, 5)")
    ok = np.flatnonzero(snapshots.two_sided)
    book = snapshots.select(ok)
    n, k = len(book), len(rel)
    bid, ask = book.bid_px[:, 0], book.ask_px[:, 0]
    bid_sz, ask_sz = book.bid_sz[:, 0], book.ask_sz[:, 0]
    mid = (bid + ask) / 2
    spread_bps = (ask - bid) / mid * BPS
    parts = []
    for direction in (1, -1):
        px, sz = (book.ask_px, book.ask_sz) if direction > 0 else (book.bid_px, book.bid_sz)
        visible = np.nansum(np.where(np.isnan(px), 0.0, sz), axis=1)
        touch = ask_sz if direction > 0 else bid_sz
        for j in range(k):
            jitter = np.exp(rng.uniform(-size_jitter, size_jitter, n)) if size_jitter > 0 else np.ones(n)
            qty = rel[j] * typical_top_size * jitter
            avg, filled, worst, used = walk_levels(px, sz, qty)
            deep = filled >= qty * (1 - 1e-12)
            visible_cost = direction * (avg - mid) / mid * BPS
            with np.errstate(invalid="ignore", divide="ignore"):
                over_touch = np.where(touch > 0, qty / touch, np.nan)
            parts.append(pd.DataFrame({
                "sample": ok, "ts_ns": book.ts_ns, "side": np.full(n, direction, dtype=np.int64),
                "size_rel_top": np.full(n, rel[j]), "quantity": qty, "mid": mid, "bid_px": bid, "ask_px": ask,
                "bid_sz": bid_sz, "ask_sz": ask_sz, "spread_bps": spread_bps, "half_spread_bps": spread_bps / 2,
                "touch_size": touch, "size_over_touch": over_touch, "deep_enough": deep,
                "avg_price": np.where(deep, avg, np.nan), "cost_bps": np.where(deep, visible_cost, np.nan),
                "filled_qty": filled, "visible_cost_bps": visible_cost, "worst_price": worst,
                "levels_used": used.astype(np.int64), "visible_qty": visible,
            }))
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if len(frame):
        frame = frame.sort_values(["sample", "side", "size_rel_top"], ascending=[True, False, True],
                                  kind="stable").reset_index(drop=True)
    frame.attrs["dropped"] = {"not_two_sided": int(len(snapshots) - n)}
    frame.attrs["typical_top_size"] = float(typical_top_size)
    return frame


# -- passive orders ------------------------------------------------------------------
def passive_outcomes(
    quotes: pd.DataFrame,
    trades: pd.DataFrame,
    placement_ts_ns: np.ndarray,
    side: str | int | np.ndarray,
    distance_ticks: int | np.ndarray,
    horizon_ns: int | np.ndarray,
    tick: float,
    *,
    order_qty: float = 0.0,
    liquidity_only: bool = True,
) -> pd.DataFrame:
    """Would a resting limit order placed at ``placement_ts_ns`` have been filled within the horizon?

    The order rests ``distance_ticks`` behind the touch prevailing at placement
    (quotes stamped at or before it) (0 joins the best bid for a buy / best ask for a sell; 1 is one tick
    worse...). Trades count when stamped in ``(placement, placement + horizon]``: a
    trade at the placement instant is taken to precede the order. It fills when

    - a trade prints **through** the limit (any aggressor; for a resting buy at P,
      a trade < P: the market traded past the order, which would have been hit
      first), or
    - the volume traded **at** P with the aggressor on the other side (sellers
      hitting a resting buy) reaches the queue ahead at placement plus
      ``order_qty`` (0 by default: filled as soon as its turn comes). The queue
      ahead is the displayed touch size at placement for distance 0. For distance
      > 0 the depth at P is not in L1 data, so the queue is unknown (NaN) and only
      trades through count: a conservative rule that undercounts fills there.

    Only prints that are liquidity count (:func:`liquidity_mask`: an off-exchange report
    or a non-regular print neither trades through a lit limit nor eats its queue);
    ``liquidity_only=False`` counts every print.

    Cancellations ahead in the queue are not credited (they cannot be seen in L1),
    which makes the queue rule conservative too. Trades without an aggressor side
    (IBM) get one from :func:`trade_sides`; unknown sides count only for trade-throughs.

    ``side``, ``distance_ticks`` and ``horizon_ns`` are scalars or one value per
    placement. Returns one row per placement: ``placement_ts_ns``, ``side``,
    ``distance_ticks``, ``limit_px``, ``valid`` (a two-sided uncrossed quote
    existed), ``queue_ahead``, ``filled``, ``time_to_fill_ns`` (float, NaN if not),
    ``filled_by`` ('through', 'queue' or ''), ``volume_at_price`` (opposite-side
    volume at P counted until the fill or the horizon).
    """
    placement = as_ns_array(placement_ts_ns, "placement_ts_ns")
    n = len(placement)
    if not np.isfinite(tick) or tick <= 0:
        raise DataError(f"tick is {tick!r}; expected the instrument's positive tick size")
    if not np.isfinite(order_qty) or order_qty < 0:
        raise DataError(f"order_qty is {order_qty!r}; expected a size >= 0")
    if liquidity_only:
        trades = liquidity_trades(trades)
    sides = np.array([parse_side(s) for s in np.broadcast_to(np.asarray(side, dtype=object), (n,))],
                     dtype=np.int64)
    distance = np.broadcast_to(np.asarray(distance_ticks), (n,))
    if distance.size and (not np.issubdtype(distance.dtype, np.integer) or (distance < 0).any()):
        raise DataError("distance_ticks must be integers >= 0 (0 = join the touch)")
    distance = distance.astype(np.int64)
    horizon = np.broadcast_to(np.asarray(horizon_ns), (n,))
    if horizon.size and (not np.issubdtype(horizon.dtype, np.integer) or (horizon <= 0).any()):
        raise DataError("horizon_ns must be positive integer nanoseconds")
    horizon = horizon.astype(np.int64)

    quote = prevailing_quotes(quotes, placement, strictly_before=False)
    valid = quote["valid"]
    with np.errstate(invalid="ignore"):
        touch_ticks = np.where(sides > 0, np.rint(quote["bid_px"] / tick), np.rint(quote["ask_px"] / tick))
    limit_ticks = touch_ticks - sides * distance
    touch_size = np.where(sides > 0, quote["bid_sz"], quote["ask_sz"])
    queue = np.where(valid & (distance == 0), touch_size, np.nan)

    trade_ts = trades["ts_ns"].to_numpy(dtype=np.int64)
    if (np.diff(trade_ts) < 0).any():
        raise DataError("trades ts_ns goes backwards; expected non-decreasing ts_ns")
    trade_ticks = trades["price"].to_numpy(dtype=np.float64) / tick
    trade_size = trades["size"].to_numpy(dtype=np.float64)
    aggressor = trade_sides(trades, quotes).astype(np.int64) if len(trades) else np.zeros(0, np.int64)
    first = np.searchsorted(trade_ts, placement, side="right")
    last = np.searchsorted(trade_ts, placement + horizon, side="right")

    filled, fill_index, by_queue, at_volume = _passive_kernel(
        valid, sides, limit_ticks, queue, float(order_qty), first, last, trade_ticks, trade_size, aggressor,
        _TICK_TOL)
    time_to_fill = np.where(filled, trade_ts[np.clip(fill_index, 0, None)] - placement if len(trade_ts) else 0,
                            0).astype(np.float64)
    time_to_fill[~filled] = np.nan
    return pd.DataFrame({
        "placement_ts_ns": placement,
        "side": sides,
        "distance_ticks": distance,
        "limit_px": np.where(valid, limit_ticks * tick, np.nan),
        "valid": valid,
        "queue_ahead": queue,
        "filled": filled,
        "time_to_fill_ns": time_to_fill,
        "filled_by": np.where(filled, np.where(by_queue, "queue", "through"), ""),
        "volume_at_price": at_volume,
    })


@numba.njit(cache=False, nogil=True)
def _passive_kernel(valid, sides, limit_ticks, queue, order_qty, first, last, trade_ticks, trade_size,
                    aggressor, tol):  # pragma: no cover - compiled
    # Per placement, scan the trades inside its horizon until the first fill: the
    # queue state depends on every earlier trade, so this is a loop, compiled.
    n = len(valid)
    filled = np.zeros(n, dtype=np.bool_)
    fill_index = np.full(n, -1, dtype=np.int64)
    by_queue = np.zeros(n, dtype=np.bool_)
    at_volume = np.zeros(n)
    for p in range(n):
        if not valid[p]:
            continue
        side = sides[p]
        limit = limit_ticks[p]
        has_queue = not np.isnan(queue[p])
        need = queue[p] + order_qty if has_queue else 0.0
        volume = 0.0
        for j in range(first[p], last[p]):
            x = trade_ticks[j]
            if side > 0:
                through = x < limit - tol
            else:
                through = x > limit + tol
            if through:
                filled[p] = True
                fill_index[p] = j
                break
            if has_queue and abs(x - limit) <= tol and aggressor[j] == -side:
                volume += trade_size[j]
                if volume >= need:
                    filled[p] = True
                    fill_index[p] = j
                    by_queue[p] = True
                    break
        at_volume[p] = volume
    return filled, fill_index, by_queue, at_volume
