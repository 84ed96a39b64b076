"""The calibrated fill models of the research universe, as costs a backtest (and a paper replay) can price with.

A :class:`CostModel` holds one :class:`~tradebook.sim.fill_model.FillModel` per instrument,
read from the store's calibrations. An instrument without data of its own is priced with
another instrument's calibration applied explicitly (``{"SPY.ARCX": "IBM.XNYS@v1"}``,
through :meth:`FillModel.for_instrument`, which refuses another asset class).

What each number is, and what is assumed where the fill model has no answer:

- **Spread** (bps): the fitted spread profile's quantile for the order's UTC time of day
  and volatility regime (:meth:`SpreadProfile.expected_spread_bps`). A model applied to
  another instrument keeps the *fit* instrument's profile in bps (``for_instrument`` drops
  the profile because its ticks and sizes do not carry; a spread in bps is the nearest
  thing there is for another instrument of the same class). Buckets are UTC, so a winter
  open (14:30 UTC) reads the bucket an hour after a summer open: the profile is as good as
  the days it was fitted on.
  No spread is narrower than one tick at the traded price: given a price, the spread is
  floored there (BAC at $35: one cent is 2.9 bps, where the IBM profile's median says 1.6).
  A backtest on split-adjusted bars recovers the traded price with the store's split factors
  (:meth:`CostModel.traded_price`); before 2001 US ticks were fractions of a dollar, wider
  than today's cent, which the floor does not know.
- **Volatility** ``vol_bps``: in the profile's own unit, the realised volatility of the mid
  over one minute in bps. :func:`minute_vol_bps` converts bars into it (the bar's return
  volatility scaled by the square root of time); NaN or None reads the time bucket's
  pooled regimes.
- **Touch size** (units): the profile's median touch size, carried as notional
  (size x the fit's price, the price its spread in ticks and bps imply) and divided by
  the price asked about, so a $5,000 order is the same share of the touch on IBM or SPY.
- **Cost** (bps against the mid, positive = paid): the cost curve at the order's size
  over the touch, in half-spreads (``FillModel.marketable_cost_bps``). :meth:`draw_bps`
  draws from the model's own distribution of costs, never at one point (a residual sd of 0
  leaves the gate's cost check no scale): where the paper engine improves prints (equities
  whose model walks a book) as the engine does, the median improved inside the spread with
  the model's share and ratio (on IBM's fit that mixture is the curve's fitted shape: q50 =
  q95 = the touch, the lower tail the improved prints); elsewhere from the curve's fitted
  quantiles (a split normal through q05/q50/q95 at its interval levels: :func:`scatter_sd`).
- **Fees**: the model's fee schedule (the venue's public base tier), taker side.

:meth:`CostModel.zero` costs nothing at all: the equivalence test of the backtest and a
paper session runs on it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from tradebook.errors import ResearchError
from tradebook.model.instruments import Instrument, UnknownInstrumentError, get_instrument
from tradebook.sim.fill_model import SCALE_SPREAD_VOL, FeeSchedule, FillModel

BPS = 1e4
# The profile's volatility window (one minute) and the one-second returns the vol-scaled
# cost curves read: sqrt(60) one-second returns make one minute.
_MINUTE_S = 60.0
# A zero-cost model still hands out a finite touch for synthetic quotes: this much notional.
_ZERO_TOUCH_NOTIONAL = 1e12
_NS_PER_DAY = 86_400 * 1_000_000_000


@dataclass(frozen=True)
class _Priced:
    """One instrument's costs: its fill model and the spread profile priced with (maybe the fit instrument's)."""

    instrument_id: str
    calibration_id: str
    model: FillModel
    spread_profile: Any  # tradebook.sim.profile.SpreadProfile
    touch_notional: float  # the profile's median touch size x the fit's price
    spread_tables: dict[float, np.ndarray]  # quantile -> (time bucket, regime 0/1/2/NaN) spread bps
    improves: bool  # the paper engine prints inside the spread: equities whose model walks a book
    tick: float  # the instrument's tick: no quoted spread is narrower
    split_ts: np.ndarray | None  # the stored split factors (LEAN's rule), to recover traded prices
    split_factor: np.ndarray | None


def _spread_tables(profile: Any) -> dict[float, np.ndarray]:
    """The profile's spread lookup with its fallbacks resolved once, so pricing a sweep's orders is one take.

    Same fallbacks as SpreadProfile.expected_spread_bps: the cell, the bucket's pooled regimes,
    the regime pooled over buckets, the whole fit; a NaN volatility reads the bucket's pool.
    """
    n_buckets = (24 * 60) // profile.bucket_minutes
    out = {}
    for quantile, column in ((0.05, profile.spread_bps_q05), (0.5, profile.spread_bps_q50),
                             (0.95, profile.spread_bps_q95)):
        lookup = {(b, r): v for b, r, v in zip(profile.bucket, profile.regime, column) if np.isfinite(v)}
        overall = lookup.get((-1, -1), np.nan)
        table = np.empty((n_buckets, 4))
        for b in range(n_buckets):
            for r in (0, 1, 2, -1):
                keys = ((b, r), (b, -1), (-1, r)) if r >= 0 else ((b, -1), (-1, -1))
                table[b, r] = next((lookup[k] for k in keys if k in lookup), overall)
        out[quantile] = table
    return out


@dataclass(frozen=True)
class CostTerms:
    """Size-free parts of the predicted cost of orders (see :meth:`CostModel.cost_terms`), one entry per order."""

    a: np.ndarray  # bps
    b: np.ndarray  # bps per unit of the curve's ratio
    improve_bps: np.ndarray  # what a price-improved fill saves, bps (the paper engine's draw)
    edges: np.ndarray  # size-over-touch bucket edges
    ratios: np.ndarray  # the curve's median per bucket
    scatter_low: np.ndarray  # per bucket: the fitted sd of the curve's ratio below its median (scatter_sd)
    scatter_high: np.ndarray  # ... and above it
    touch_notional: float  # inf: the touch never limits (the zero model)
    improve_share: float  # probability a fill is improved


def instrument_of(store: Any, instrument_id: str) -> Instrument:
    """The store's definition of ``instrument_id`` (a user's own instrument), else the bundled one."""
    try:
        return store.instrument(instrument_id)
    except UnknownInstrumentError:
        return get_instrument(instrument_id)


class CostModel:
    """Calibrated costs per instrument for research (see the module docstring for each number's meaning)."""

    def __init__(self, priced: Mapping[str, _Priced] | None = None) -> None:
        # None: the zero model (no spread, no cost, no fees, for any instrument)
        self._priced = dict(priced) if priced is not None else None

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def zero(cls) -> CostModel:
        """No costs at all: fills at the open price, no fees (the backtest/paper equivalence test)."""
        return cls(None)

    @classmethod
    def from_store(cls, store: Any, calibrations: Mapping[str, str] | Iterable[str]) -> CostModel:
        """The stored calibrations: ``{instrument_id: calibration}`` or names of calibrations/instruments.

        A mapping applies the named calibration (``'IBM.XNYS@v1'``, or an instrument id for its
        latest) to the instrument it is keyed by, explicitly when that is another instrument.
        An iterable names calibrations (``'IBM.XNYS@v1'``) or instruments (their latest), each
        used for its own instrument. Unknown names raise the store's error listing what is
        stored; a calibration without a spread profile raises ResearchError.
        """
        if isinstance(calibrations, str):
            raise ResearchError(f"calibrations = {calibrations!r}: expected a mapping {{instrument_id: calibration}} "
                                "or a list of calibration ids / instrument ids, not one string")
        if isinstance(calibrations, Mapping):
            pairs = [(str(target), str(name)) for target, name in calibrations.items()]
        else:
            pairs = []
            for name in calibrations:
                record = store.calibration(str(name))
                pairs.append((record.instrument_id, str(name)))
        if not pairs:
            raise ResearchError("CostModel.from_store got no calibrations; expected at least one "
                                "(an instrument id, 'IBM.XNYS@v1', or {instrument_id: calibration}); "
                                "CostModel.zero() is the model without costs")
        priced = {}
        for target, name in pairs:
            record = store.calibration(name)
            source = FillModel.from_json(record.params)
            profile = source.spread_profile
            if profile is None:
                raise ResearchError(f"calibration {record.calibration_id} has no spread profile (fitted without "
                                    f"sizes at the touch?); {target} cannot be priced with it: expected a "
                                    "calibration of quotes with sizes")
            spec = instrument_of(store, target)
            model = source if target == record.instrument_id else source.for_instrument(spec)
            split_ts, split_factor = _splits(store, target)
            priced[target] = _Priced(target, record.calibration_id, model, profile, _touch_notional(profile),
                                     _spread_tables(profile), _improves(source, spec),
                                     float(spec.tick_size), split_ts, split_factor)
        return cls(priced)

    # -- what it holds -----------------------------------------------------------------------
    @property
    def is_zero(self) -> bool:
        return self._priced is None

    @property
    def instruments(self) -> tuple[str, ...]:
        """The instruments priced (empty for the zero model, which prices any)."""
        return () if self._priced is None else tuple(self._priced)

    @property
    def calibrations(self) -> dict[str, str]:
        """instrument_id -> the calibration id priced with (empty for the zero model)."""
        return {} if self._priced is None else {k: p.calibration_id for k, p in self._priced.items()}

    @property
    def fees(self) -> dict[str, FeeSchedule]:
        """instrument_id -> its fee schedule (the venue's, carried by the fill model)."""
        return {} if self._priced is None else {k: p.model.fees for k, p in self._priced.items()}

    def fee_schedule(self, instrument_id: str) -> FeeSchedule:
        return FeeSchedule() if self._priced is None else self._get(instrument_id).model.fees

    def model(self, instrument_id: str) -> FillModel | None:
        """The fill model of ``instrument_id`` (None for the zero model): what a paper venue should fill with."""
        return None if self._priced is None else self._get(instrument_id).model

    def _get(self, instrument_id: str) -> _Priced:
        assert self._priced is not None
        try:
            return self._priced[instrument_id]
        except KeyError:
            raise ResearchError(f"the cost model has no calibration for {instrument_id!r}; it prices "
                                f"{', '.join(self._priced) or 'nothing'} (CostModel.from_store(store, "
                                f"{{{instrument_id!r}: 'IBM.XNYS@v1'}}) applies one)") from None

    def require(self, instruments: Iterable[str]) -> None:
        """ResearchError naming every instrument of ``instruments`` this model cannot price."""
        if self._priced is None:
            return
        missing = [i for i in instruments if i not in self._priced]
        if missing:
            raise ResearchError(f"the cost model has no calibration for {', '.join(missing)}; it prices "
                                f"{', '.join(self._priced) or 'nothing'}: expected one per traded instrument "
                                "(map an instrument to another's calibration: {'SPY.ARCX': 'IBM.XNYS@v1'})")

    # -- prices ------------------------------------------------------------------------------
    def spread_bps(self, instrument_id: str, ts_ns: Any, vol_bps: Any = None, quantile: float = 0.5,
                   price: Any = None) -> np.ndarray:
        """The quoted spread (bps of the mid) expected at each ``ts_ns`` and one-minute volatility ``vol_bps``.

        With ``price`` (the traded, unadjusted price) never narrower than one tick at that price.
        """
        ts = _ts_array(ts_ns)
        if self._priced is None:
            return np.zeros(len(ts))
        vol = _vol_array(vol_bps, len(ts))
        priced = self._get(instrument_id)
        table = priced.spread_tables.get(quantile)
        if table is None:
            raise ResearchError(f"spread quantile {quantile!r}: expected one of 0.05, 0.5, 0.95")
        profile = priced.spread_profile
        bucket = (ts % _NS_PER_DAY) // (profile.bucket_minutes * 60 * 1_000_000_000)
        regime = np.where(np.isfinite(vol), np.searchsorted(np.asarray(profile.vol_edges), vol, side="right"), 3)
        spread = table[bucket, regime]
        if price is None:
            return spread
        px = np.broadcast_to(np.asarray(price, dtype=np.float64), spread.shape)
        with np.errstate(divide="ignore", invalid="ignore"):
            one_tick = np.where(px > 0, priced.tick / px * BPS, 0.0)
        return np.maximum(spread, np.nan_to_num(one_tick))

    def traded_price(self, instrument_id: str, bar_start_ns: Any, adjusted_price: Any) -> np.ndarray | None:
        """The price that traded, from a split-adjusted one (``Bars.from_store(adjusted=True)``'s rule undone).

        The bar dated d was multiplied by the first stored split factor dated on or after d. None when
        the store this model was read from holds no split factors of the instrument: an adjusted price
        is then no traded price, and a floor at one tick of it (a 1998 AAPL adjusted to $0.16) would be
        absurd, so backtests priced with such a model have no tick floor (see :meth:`describe`).
        """
        ts = _ts_array(bar_start_ns)
        px = np.broadcast_to(np.asarray(adjusted_price, dtype=np.float64), ts.shape)
        if self._priced is None:
            return np.array(px)
        priced = self._get(instrument_id)
        if priced.split_ts is None:
            return None
        at = np.minimum(np.searchsorted(priced.split_ts, ts, side="left"), len(priced.split_ts) - 1)
        return px / priced.split_factor[at]

    def touch_size(self, instrument_id: str, price: Any) -> Any:
        """Typical displayed size at the touch, in the instrument's units, at ``price`` (float or array)."""
        notional = _ZERO_TOUCH_NOTIONAL if self._priced is None else self._get(instrument_id).touch_notional
        px = np.asarray(price, dtype=np.float64)
        if np.any(~np.isfinite(px) | (px <= 0)):
            raise ResearchError(f"touch_size of {instrument_id}: price {price!r} must be positive and finite")
        size = notional / px
        return float(size) if size.ndim == 0 else size

    def cost_terms(self, instrument_id: str, ts_ns: Any, vol_bps: Any = None, price: Any = None) -> CostTerms:
        """The parts of the predicted cost that do not depend on the order's size, for many orders at once.

        Predicted cost (bps) = ``a + b x ratios[bucket(notional / touch_notional)]``: the cost curve's
        median in its unit (half-spreads, or half-spread plus one-second volatility above the
        half-spread) at the order's notional (at the mid) over the touch's. :meth:`predict_bps` is
        this formula; the backtest's compiled loop applies it to each order as it sizes it.
        ``price``: the traded (unadjusted) price, for the one-tick floor of the spread.
        """
        ts = _ts_array(ts_ns)
        n = len(ts)
        if self._priced is None:
            edges = np.array([0.0, np.inf])
            return CostTerms(np.zeros(n), np.zeros(n), np.zeros(n), edges, np.zeros(1), np.zeros(1), np.zeros(1),
                             math.inf, 0.0)
        priced = self._get(instrument_id)
        model = priced.model
        vol = _vol_array(vol_bps, n)
        half = self.spread_bps(instrument_id, ts, vol, price=price) / 2
        curve = model.cost_curve
        base = float(model.base_slippage_bps)
        if curve.scale == SCALE_SPREAD_VOL:
            # the curve reads the one-second volatility: one minute holds sqrt(60) of them
            one_second = vol / math.sqrt(_MINUTE_S)
            a = half + base
            b = half + np.where(np.isfinite(one_second), np.maximum(one_second, 0.0), 0.0)
        else:
            a, b = np.full(n, base), half
        share = float(model.price_improvement_share) if priced.improves else 0.0
        improve = float(model.price_improvement_ratio) * half if share > 0 else np.zeros(n)
        low, high = scatter_sd(curve)
        return CostTerms(a, b, improve, np.asarray(curve.edges, dtype=np.float64),
                         np.asarray(curve.q50, dtype=np.float64), low, high, priced.touch_notional, share)

    def predict_bps(self, instrument_id: str, ts_ns: Any, quantity: Any, price: Any, vol_bps: Any = None,
                    quantile: float = 0.5) -> np.ndarray:
        """Expected cost (bps against the mid, paid) of marketable orders of ``quantity`` units at ``price``.

        Vectorised over ``ts_ns``; ``quantity`` (sign ignored), ``price`` and ``vol_bps``
        broadcast to it. ``quantile`` 0.05/0.5/0.95: the curve's interval and median.
        ``price`` is the traded price (the mid): the spread is at least one tick at it.
        """
        ts = _ts_array(ts_ns)
        n = len(ts)
        if self._priced is None:
            return np.zeros(n)
        qty = np.abs(np.broadcast_to(np.asarray(quantity, dtype=np.float64), (n,)))
        px = np.broadcast_to(np.asarray(price, dtype=np.float64), (n,))
        if n:
            self.touch_size(instrument_id, px)  # checks the prices
        terms = self.cost_terms(instrument_id, ts, vol_bps, price=px)
        curve = self._get(instrument_id).model.cost_curve
        return terms.a + terms.b * curve.ratio(qty * px / terms.touch_notional, quantile)

    def draw_bps(self, instrument_id: str, ts_ns: Any, quantity: Any, price: Any, vol_bps: Any = None, *,
                 rng: np.random.Generator) -> np.ndarray:
        """Costs drawn from the model's distribution: improved as the paper venue improves, else the curve's scatter.

        The paper engine (tradebook.sim.walk.walk_params) improves a print only for an equity
        whose model walks a book (a depth profile or a completion model): its fills cost the
        median, improved by ``price_improvement_ratio`` half-spreads (not below zero) with
        probability ``price_improvement_share``, and so do these draws (on IBM's fit that mixture
        is the fitted curve's shape: q50 = q95 = the touch, q05 an improved print). Read on the
        calibrated model: applied to another instrument with that instrument's quotes (as the
        paper replay applies it) it keeps its completion model. A model the engine never
        improves draws the curve's ratio at the order's size over the touch from the split normal
        through its q05/q50/q95 (:func:`scatter_sd`): ``a + b x (q50 + z x sd)``, sd the fitted
        spread below or above the median as z < 0 or > 0, so the draws' quantiles are the curve's
        (the median alone gave every fill a residual of exactly 0). The backtest's compiled loop
        applies the same arithmetic to its orders.
        """
        ts = _ts_array(ts_ns)
        n = len(ts)
        if self._priced is None:
            return np.zeros(n)
        priced = self._get(instrument_id)
        model = priced.model
        mid = self.predict_bps(instrument_id, ts, quantity, price, vol_bps)
        share = float(model.price_improvement_share) if priced.improves else 0.0
        improved = rng.random(n) < share
        z = rng.standard_normal(n)
        if share > 0:
            half = self.spread_bps(instrument_id, ts, vol_bps, price=price) / 2
            return np.where(improved, np.maximum(mid - float(model.price_improvement_ratio) * half, 0.0), mid)
        qty = np.abs(np.broadcast_to(np.asarray(quantity, dtype=np.float64), (n,)))
        px = np.broadcast_to(np.asarray(price, dtype=np.float64), (n,))
        terms = self.cost_terms(instrument_id, ts, vol_bps, price=px)
        bucket = model.cost_curve.bucket(qty * px / terms.touch_notional)
        sd = np.where(z < 0, terms.scatter_low[bucket], terms.scatter_high[bucket])
        return mid + terms.b * z * sd

    def fee(self, instrument_id: str, notional: Any, quantity: Any) -> np.ndarray:
        """Taker fees of marketable fills (notional and quantity: magnitudes, vectorised)."""
        schedule = self.fee_schedule(instrument_id)
        return np.asarray(schedule.fee(np.asarray(notional, dtype=np.float64), np.asarray(quantity, dtype=np.float64),
                                       False), dtype=np.float64)

    def describe(self) -> dict[str, Any]:
        """What priced a backtest (stored with it): per instrument its calibration, provenance and fees."""
        if self._priced is None:
            return {"kind": "zero", "instruments": {}}
        return {"kind": "calibrated", "instruments": {
            k: {"calibration_id": p.calibration_id, "fitted_on": list(p.model.fitted_on),
                "away_from_data": bool(p.model.away_from_data), "provenance": p.model.provenance(),
                "spread_profile_of": p.spread_profile.instrument_id, "touch_notional": p.touch_notional,
                "cost_scale": p.model.cost_curve.scale, "fees": asdict(p.model.fees),
                "tick_floor": "split factors" if p.split_ts is not None else "traded prices only"}
            for k, p in self._priced.items()}}

    def __repr__(self) -> str:
        if self._priced is None:
            return "CostModel.zero()"
        return "CostModel(" + ", ".join(f"{k}: {p.calibration_id}" for k, p in self._priced.items()) + ")"


def scatter_sd(curve: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per bucket, the sd of the cost curve's ratio below and above its median, from its fitted interval.

    A split normal through the three fitted quantiles: ``(q50 - q05) / z`` below and
    ``(q95 - q50) / z`` above, z the standard normal quantile of the curve's interval levels
    (0.05/0.95 nominally, wider when validation widened them), so a draw ``q50 + z x sd``
    has the curve's q05, q50 and q95 as its quantiles. A crossed interval scatters nothing.
    """
    from statistics import NormalDist

    low_level, high_level = curve.interval_levels
    z_low, z_high = -NormalDist().inv_cdf(float(low_level)), NormalDist().inv_cdf(float(high_level))
    q05, q50, q95 = (np.asarray(q, dtype=np.float64) for q in (curve.q05, curve.q50, curve.q95))
    low = np.nan_to_num(np.maximum(q50 - q05, 0.0) / z_low)
    high = np.nan_to_num(np.maximum(q95 - q50, 0.0) / z_high)
    return low, high


def minute_vol_bps(close: pd.DataFrame, *, bar_seconds: int, lookback: int = 20,
                   session_seconds: float = 23_400.0) -> pd.DataFrame:
    """The volatility of ``close`` (bars) in the fill model's unit: one minute of the mid, bps.

    Standard deviation of the last ``lookback`` log returns (ddof 1) up to and including
    each bar, so the value at bar t is known at t's close, scaled by the square root of time
    to one minute: a daily bar holds one session (``session_seconds``, 6.5 h for US
    equities), an intraday bar ``min(bar_seconds, session_seconds)``. NaN in the warm-up.
    """
    if bar_seconds <= 0 or lookback < 2:
        raise ResearchError(f"minute_vol_bps: bar_seconds {bar_seconds} and lookback {lookback}: expected a positive "
                            "bar size and at least two returns")
    per_bar = session_seconds if bar_seconds >= 86_400 else min(float(bar_seconds), session_seconds)
    returns = np.log(close.astype("float64")).diff()
    vol = returns.rolling(lookback, min_periods=lookback).std(ddof=1)
    return vol * BPS * math.sqrt(_MINUTE_S / per_bar)


def _improves(source: FillModel, instrument: Any) -> bool:
    """Whether the paper engine prints this model's fills inside the spread (tradebook.sim.walk.walk_params).

    Read on the calibrated (source) model: a paper venue given the model applied to another
    instrument with that instrument's quotes (tradebook.research.runner.paper_calibrations)
    keeps its completion model, so it walks and improves as the source does.
    """
    walks = source.depth is not None or source.completion is not None
    return walks and str(instrument.asset_class) == "equity"


def _splits(store: Any, instrument_id: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The stored split factors of ``instrument_id`` by date (None when the store has none)."""
    try:
        factors = store.adjustment_factors(instrument_id)
    except Exception:  # noqa: BLE001 - no factors stored for it (or an ambiguous read): prices taken as traded
        return None, None
    if factors is None or factors.empty or "split_factor" not in factors.columns:
        return None, None
    factors = factors.sort_values("ts_ns")
    return factors["ts_ns"].to_numpy(np.int64), factors["split_factor"].to_numpy(np.float64)


def _touch_notional(profile: Any) -> float:
    """The profile's median touch size as notional: size x the price its spread in ticks and bps imply."""
    table = profile.table()
    pooled = table[(table["bucket"] == -1) & (table["regime"] == -1)].iloc[0]
    ticks, bps, size = (float(pooled[c]) for c in ("spread_ticks_q50", "spread_bps_q50", "top_size_q50"))
    if not (ticks > 0 and bps > 0 and size > 0):
        raise ResearchError(f"the spread profile of {profile.instrument_id} has no usable median spread and touch "
                            f"size (ticks {ticks}, bps {bps}, size {size}); expected positive values")
    price = ticks * profile.tick_size / (bps / BPS)
    return size * price


def _ts_array(ts_ns: Any) -> np.ndarray:
    ts = np.atleast_1d(np.asarray(ts_ns))
    if ts.dtype.kind not in "iu":
        raise ResearchError(f"ts_ns of dtype {ts.dtype}: expected int64 UTC nanoseconds")
    return ts.astype(np.int64)


def _vol_array(vol_bps: Any, n: int) -> np.ndarray:
    if vol_bps is None:
        return np.full(n, np.nan)
    return np.array(np.broadcast_to(np.asarray(vol_bps, dtype=np.float64), (n,)))


__all__ = ["CostModel", "CostTerms", "minute_vol_bps", "scatter_sd"]
