"""The fill model: what a paper order would really have cost, fitted from the user's own quotes and trades.

Costs of marketable orders are modelled in units of the prevailing half-spread,
``ratio = cost / half_spread``, by order size relative to the displayed size at the
touch. Ratio 1 is a fill at the touch, below 1 is price improvement (hidden and
midpoint liquidity, common in US equities), above 1 is walking the book. Keeping the
spread as the unit lets one curve serve a calm and a wide market; keeping the
quantiles (not only a mean) gives the prediction interval, and many real costs sit
exactly at the half-spread, so interval coverage is reported closed and open.

A model is plain data (frozen dataclasses of floats and tuples) and serialises to
JSON for the store, where calibrations are versioned per instrument. The JSON carries
:data:`FORMAT_VERSION`; a model stored before versions were written (format 1) still
loads (its depth profile keeps sizes in the fit instrument's units and cannot be
applied to another instrument), a newer format is refused with the versions named.

A model records what it was fitted on (``fitted_on``: the instrument ids it pooled,
``asset_class``). :meth:`FillModel.for_instrument` applies it to another instrument of
the same asset class explicitly: every part kept is in units that carry (cost curve in
half-spreads by size over the touch, depth in the instrument's own tick and recent
touch size, passive features in its own tick and recent touch size); the parts that
are not (the spread profile and the completion model keep the fit instrument's
sizes) are left out and named in ``applied_notes``; ``away_from_data`` says when the
model is used away from the data it was fitted on.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np

from tradebook.errors import ConfigError, DataError
from tradebook.model.instruments import Instrument
from tradebook.sim.orders import TakeParams

# 3: the passive model's base fitted per horizon (passive.horizon_bases; a format-2 model
# loads without them, its base reading log(horizon)). 2: provenance (fitted_on, asset_class,
# applied_notes), depth and passive parts in units that carry. 1 (no "format_version" key):
# the earlier form, loaded as it was.
FORMAT_VERSION = 3

# Order size over displayed touch size: below 1 the touch can absorb the order.
SIZE_BUCKET_EDGES: tuple[float, ...] = (0.0, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, float("inf"))
QUANTILES = (0.05, 0.5, 0.95)
DEFAULT_BASE_SLIPPAGE_BPS = 2.0  # 0.02%: what peers add to the touch; used when nothing is calibrated


class DictRecord:
    """``to_dict``/``from_dict`` for frozen dataclasses of floats, ints and tuples (JSON lists come back as tuples)."""

    def to_dict(self) -> dict:
        """Plain JSON-able values (NaN allowed), for FillModel and the store."""
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, raw: dict) -> Any:
        try:
            return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
        except (TypeError, KeyError) as error:
            raise DataError(f"not a {cls.__name__} dict ({error}); expected the keys of {cls.__name__}.to_dict()") \
                from error


# The unit of a cost curve's quantiles: the half-spread (the earlier form: ratio = cost /
# half-spread), or the half-spread plus the recent one-second volatility of the mid, both
# in bps (quantiles of (cost - half-spread) / (half-spread + vol)). On a one-tick book the
# half-spread is a sliver of a bps and clock noise between the quote and trade streams
# divided by it became hundreds of half-spreads; the volatility keeps the unit honest.
SCALE_HALF_SPREAD = "half_spread"
SCALE_SPREAD_VOL = "half_spread_plus_vol"


@dataclass(frozen=True)
class CostCurve:
    """Quantiles of cost per size-over-touch bucket (monotone in size), in the unit ``scale`` names.

    ``scale == "half_spread"``: quantiles of cost / half-spread. ``"half_spread_plus_vol"``:
    quantiles of (cost - half-spread) / (half-spread + recent one-second volatility),
    all in bps of the mid, so cost = half-spread + unit x quantile.
    """

    edges: tuple[float, ...]
    q05: tuple[float, ...]
    q50: tuple[float, ...]
    q95: tuple[float, ...]
    counts: tuple[int, ...]
    # The quantile levels behind q05/q95: (0.05, 0.95) nominally, wider when validation
    # inside the fit slice showed the nominal levels cover less than 90% out of sample.
    interval_levels: tuple[float, float] = (0.05, 0.95)
    scale: str = SCALE_HALF_SPREAD

    def __post_init__(self) -> None:
        n = len(self.edges) - 1
        if not (len(self.q05) == len(self.q50) == len(self.q95) == len(self.counts) == n):
            raise ConfigError(f"cost curve needs {n} values per quantile for {len(self.edges)} edges")
        if self.scale not in (SCALE_HALF_SPREAD, SCALE_SPREAD_VOL):
            raise ConfigError(f"cost curve scale is {self.scale!r}; expected {SCALE_HALF_SPREAD!r} or "
                              f"{SCALE_SPREAD_VOL!r}")

    def cost_bps(self, size_over_touch: np.ndarray, half_spread_bps: np.ndarray, quantile: float = 0.5,
                 recent_vol_bps: np.ndarray | None = None) -> np.ndarray:
        """Cost against the mid in bps at ``quantile`` (vectorised); ``recent_vol_bps`` only for the vol scale.

        On the vol scale ``recent_vol_bps`` is required (DataError without); a NaN one (less
        than five seconds of quotes before the order) leaves the half-spread alone as the unit.
        """
        value = self.ratio(size_over_touch, quantile)
        hs = np.asarray(half_spread_bps, dtype="float64")
        if self.scale == SCALE_HALF_SPREAD:
            return hs * value
        if recent_vol_bps is None:
            raise DataError("this cost curve is in units of the half-spread plus the recent volatility; pass "
                            "recent_vol_bps (tradebook.sim.calibrate.recent_vol_bps of the quotes before each order)")
        vol = np.asarray(recent_vol_bps, dtype="float64")
        unit = hs + np.where(np.isfinite(vol), np.maximum(vol, 0.0), 0.0)
        return hs + unit * value

    def bucket(self, size_over_touch: np.ndarray) -> np.ndarray:
        # a ratio within 1e-9 below an edge is at the edge: the same order in other units
        # (sizes x 20 over a touch x 20) must not change bucket by one ulp
        x = np.asarray(size_over_touch, dtype="float64") * (1 + 1e-9)
        return np.clip(np.searchsorted(np.asarray(self.edges), x, side="right") - 1, 0, len(self.edges) - 2)

    def ratio(self, size_over_touch: np.ndarray, quantile: float = 0.5) -> np.ndarray:
        table = {0.05: self.q05, 0.5: self.q50, 0.95: self.q95}.get(quantile)
        if table is None:
            raise ConfigError(f"quantile {quantile} not in the curve; expected one of {QUANTILES}")
        return np.asarray(table)[self.bucket(size_over_touch)]


@dataclass(frozen=True)
class FeeSchedule:
    """Venue fees: basis points of notional by liquidity role, plus a per-unit charge (per share or contract)."""

    maker_bps: float = 0.0
    taker_bps: float = 0.0
    per_unit: float = 0.0

    def fee(self, notional: np.ndarray, quantity: np.ndarray, maker: np.ndarray | bool) -> np.ndarray:
        bps = np.where(maker, self.maker_bps, self.taker_bps)
        return np.abs(notional) * bps / 1e4 + np.abs(quantity) * self.per_unit


@dataclass(frozen=True)
class LatencyModel:
    """Submit-to-acknowledgement and acknowledgement-to-fill latencies, lognormal around their medians."""

    submit_to_ack_median_ns: int = 20_000_000
    ack_to_fill_median_ns: int = 1_000_000
    sigma: float = 0.5

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        ack = self.submit_to_ack_median_ns * np.exp(self.sigma * rng.standard_normal(n))
        fill = self.ack_to_fill_median_ns * np.exp(self.sigma * rng.standard_normal(n))
        return ack.astype("int64"), fill.astype("int64")


# Venue fee defaults (public schedules, base tier); override per account in configuration.
DEFAULT_FEES: dict[str, FeeSchedule] = {
    "BINANCE": FeeSchedule(maker_bps=10.0, taker_bps=10.0),
    "COINBASE": FeeSchedule(maker_bps=40.0, taker_bps=60.0),
    "GLBX": FeeSchedule(per_unit=1.40),  # USD per contract, exchange + clearing, approximately
    "DUKASCOPY": FeeSchedule(maker_bps=0.35, taker_bps=0.35),
    "FXCM": FeeSchedule(),
}
EQUITY_FEES = FeeSchedule(per_unit=0.0)  # commission-free US equity brokers; SEC/TAF fees are negligible here


@dataclass(frozen=True)
class FillModel:
    """Everything the simulator needs to fill orders for one instrument."""

    instrument_id: str
    tick_size: float
    cost_curve: CostCurve
    fees: FeeSchedule = field(default_factory=FeeSchedule)
    latency: LatencyModel = field(default_factory=LatencyModel)
    price_improvement_share: float = 0.0  # share of touch-sized marketable fills printing inside the spread
    price_improvement_ratio: float = 0.0  # median improvement of those, in half-spreads (0.5 = a quarter spread)
    base_slippage_bps: float = 0.0  # extra cost added to every marketable fill; 0 once calibrated
    max_take_over_touch: float = 50.0  # most one quote can fill, in touch sizes (calibrated: sweep p99)
    # Fitted components, each a frozen dataclass with to_dict/from_dict (see COMPONENTS);
    # None where the data could not support them (no depth, no trades).
    spread_profile: Any = None  # tradebook.sim.profile.SpreadProfile
    completion: Any = None  # tradebook.sim.profile.CompletionModel
    depth: Any = None  # tradebook.sim.depth.DepthProfile
    passive: Any = None  # tradebook.sim.passive.PassiveModel
    # What the model was fitted on: the instrument ids (several when captures were pooled)
    # and their asset class; empty on a model built by hand.
    fitted_on: tuple[str, ...] = ()
    asset_class: str = ""
    # Set by for_instrument when the model is applied away from its data: what was left out.
    applied_notes: tuple[str, ...] = ()
    format_version: int = FORMAT_VERSION
    # Resting orders on a feed without trades (spot FX): 'through' (the far touch must pass
    # the limit) or 'touch' (reaching it fills); '' = the default for the instrument,
    # 'through' for spot FX (tradebook.sim.truth.quote_fill_rule_of, which every face reads).
    quote_fill_rule: str = ""
    # The median staleness (ns) of the quotes the fit's sweeps met (tradebook.sim.staleness):
    # zero on an event feed; on a sampled one its quantiles already hold that much diffusion.
    fitted_stale_ns: float = 0.0

    @property
    def away_from_data(self) -> bool:
        """True when the model prices an instrument it was not fitted on."""
        return bool(self.fitted_on) and self.instrument_id not in self.fitted_on

    def provenance(self) -> str:
        """One line: what the model was fitted on and what it is applied to (for reports)."""
        if not self.fitted_on:
            return f"{self.instrument_id}: fitted on unrecorded data"
        fitted = ", ".join(self.fitted_on)
        if not self.away_from_data:
            return f"{self.instrument_id}: fitted on {fitted}"
        notes = f" ({'; '.join(self.applied_notes)})" if self.applied_notes else ""
        return f"{self.instrument_id}: applied away from its data, fitted on {fitted}{notes}"

    def fit_asset_class(self) -> str:
        """The asset class of the data the model was fitted on ('' when it cannot be told)."""
        if self.asset_class:
            return self.asset_class
        from tradebook.errors import UnknownInstrumentError
        from tradebook.model.instruments import get_instrument

        for instrument_id in self.fitted_on or (self.instrument_id,):
            try:
                return str(get_instrument(instrument_id).asset_class)
            except UnknownInstrumentError:
                continue
        return ""

    def for_instrument(self, instrument: Instrument, quotes: Any = None) -> FillModel:
        """This model applied to ``instrument`` (explicitly, no conversion by the caller).

        Distances take ``instrument``'s own tick and sizes its own recent touch size (read
        from its own quotes at prediction). Raises DataError when ``instrument`` is of
        another asset class than the fit data, when the model cannot tell its own asset
        class, or when its depth profile is of the earlier format (sizes in the fit
        instrument's units). The completion model's sizes are rescaled to the recent
        touch size at the end of ``quotes`` (``instrument``'s quotes up to the moment of
        use: only the past), and left out without them; the spread profile is left out
        on another instrument (its ticks and sizes are the fit instrument's). What was
        left out is named in ``applied_notes``.
        """
        if not isinstance(instrument, Instrument):
            raise DataError(f"for_instrument takes an Instrument (tb.get_instrument(...)), got {instrument!r}")
        target = instrument.instrument_id
        target_class = str(instrument.asset_class)
        fit_class = self.fit_asset_class()
        fit_ids = self.fitted_on or (self.instrument_id,)
        if target in fit_ids:
            return replace(self, instrument_id=target, tick_size=float(instrument.tick_size), fitted_on=fit_ids,
                           asset_class=fit_class, applied_notes=())
        if not fit_class:
            raise DataError(f"the model of {self.instrument_id} does not record the asset class it was fitted on; "
                            f"cannot apply it to {target} ({target_class}): recalibrate, or set asset_class")
        if fit_class != target_class:
            raise DataError(f"the calibration fitted on {', '.join(fit_ids)} ({fit_class}) cannot be applied to "
                            f"{target}, a {target_class} instrument; expected an instrument of asset class "
                            f"{fit_class} (calibrate {target} on its own data)")
        tick = float(instrument.tick_size)
        notes = []
        parts: dict[str, Any] = {}
        if self.depth is not None:
            parts["depth"] = self.depth.for_instrument(target, tick)
        if self.passive is not None:
            parts["passive"] = self.passive.for_instrument(target)
        if self.completion is not None:
            if quotes is not None and len(quotes):
                from tradebook.sim.depth import check_instrument, recent_touch_size

                check_instrument(quotes, target, "the quotes given to for_instrument")
                last = np.asarray([quotes["ts_ns"].iloc[-1]], dtype=np.int64)
                parts["completion"] = self.completion.for_instrument(instrument, float(recent_touch_size(quotes,
                                                                                                         last)[0]))
            else:
                parts["completion"] = None
                notes.append(f"completion model left out (fitted in {fit_ids[0]}'s sizes; give quotes of {target} "
                             "to rescale it)")
        if self.spread_profile is not None:
            parts["spread_profile"] = None
            notes.append(f"spread profile left out (fitted in {fit_ids[0]}'s ticks and sizes)")
        return replace(self, instrument_id=target, tick_size=tick, fitted_on=fit_ids, asset_class=fit_class,
                       applied_notes=tuple(notes), **parts)

    def marketable_cost_bps(
        self,
        size: np.ndarray,
        half_spread_bps: np.ndarray,
        touch_size: np.ndarray,
        quantile: float = 0.5,
        recent_vol_bps: np.ndarray | None = None,
        stale_ns: np.ndarray | None = None,
        trade_shift_bps: np.ndarray | None = None,
    ) -> np.ndarray:
        """Predicted cost against the mid, in bps, of marketable orders of ``size`` (vectorised).

        ``recent_vol_bps`` is the one-second volatility of the mid just before each order
        (:func:`tradebook.sim.calibrate.recent_vol_bps`), read by curves on the
        ``half_spread_plus_vol`` scale and by the staleness widening. ``stale_ns``
        (:func:`tradebook.sim.staleness.stale_age_ns`: the quote's age on a sampled feed,
        zero on an event feed) widens the quantiles other than the median by the mid's
        diffusion over the staleness beyond what the fit's own quotes had, added in
        quadrature (:func:`tradebook.sim.staleness.staleness_widening_bps`).
        ``trade_shift_bps`` moves every quantile by how far the prints since the quote show
        the book moved, in bps of the mid, positive against the order
        (:func:`tradebook.sim.staleness.trade_shift` times the order's side).
        """
        size = np.asarray(size, dtype="float64")
        touch = np.asarray(touch_size, dtype="float64")
        with np.errstate(divide="ignore", invalid="ignore"):
            x = np.where(touch > 0, size / touch, np.inf)
        cost = self.cost_curve.cost_bps(x, half_spread_bps, quantile, recent_vol_bps) + self.base_slippage_bps
        if stale_ns is not None and quantile != 0.5:
            if recent_vol_bps is None:
                raise DataError("stale_ns needs recent_vol_bps: the widening is the mid's diffusion at its recent "
                                "volatility (tradebook.sim.calibrate.recent_vol_bps of the quotes before each order)")
            from tradebook.sim.staleness import staleness_widening_bps

            median = self.cost_curve.cost_bps(x, half_spread_bps, 0.5, recent_vol_bps) + self.base_slippage_bps
            widening = staleness_widening_bps(stale_ns, recent_vol_bps, self.fitted_stale_ns)
            cost = median + (1.0 if quantile > 0.5 else -1.0) * np.hypot(cost - median, widening)
        if trade_shift_bps is not None:
            cost = cost + np.asarray(trade_shift_bps, dtype="float64")
        return cost

    def take_params(self, lot: float) -> TakeParams:
        """The marketable-cost table as arrays for the compiled matching code (median cost / half-spread).

        A curve on the vol scale is given as ``1 + q50`` half-spreads: the volatility part
        of its unit is left out (the matching code sees the quote, not the recent
        volatility); its medians sit at 0 where fills are at the touch.
        """
        ratios = np.asarray(self.cost_curve.q50, dtype=np.float64)
        if self.cost_curve.scale == SCALE_SPREAD_VOL:
            ratios = np.maximum.accumulate(1.0 + ratios)
        return TakeParams(
            edges=np.asarray(self.cost_curve.edges, dtype=np.float64),
            ratios=ratios,
            slippage_bps=float(self.base_slippage_bps),
            max_take_over_touch=float(self.max_take_over_touch),
            lot=float(lot),
        )

    def to_json(self) -> str:
        raw = {f.name: getattr(self, f.name) for f in fields(self)}
        raw["format_version"] = FORMAT_VERSION
        raw["cost_curve"] = asdict(self.cost_curve)
        raw["fees"] = asdict(self.fees)
        raw["latency"] = asdict(self.latency)
        for name in COMPONENTS:
            value = raw[name]
            raw[name] = None if value is None else value.to_dict()
        return json.dumps(raw, sort_keys=True, allow_nan=True)

    @classmethod
    def from_json(cls, text: str) -> FillModel:
        """A model from :meth:`to_json` (any format up to :data:`FORMAT_VERSION`).

        Raises ConfigError for text that is not a FillModel or a format newer than this
        tradebook reads (recalibrate, or update tradebook).
        """
        try:
            raw = json.loads(text)
            version = raw.pop("format_version", 1) if isinstance(raw, dict) else None
            if isinstance(version, bool) or not isinstance(version, int) or version < 1:
                raise ConfigError(f"FillModel JSON has format_version {version!r}; expected an integer from 1 to "
                                  f"{FORMAT_VERSION}")
            if version > FORMAT_VERSION:
                raise ConfigError(f"FillModel JSON is format {version}, newer than the {FORMAT_VERSION} this "
                                  "tradebook reads; update tradebook or recalibrate (tradebook calibrate)")
            for name in ("fitted_on", "applied_notes"):
                if name in raw:
                    raw[name] = tuple(raw[name])
            raw["format_version"] = version
            curve = raw.pop("cost_curve")
            curve = CostCurve(**{k: tuple(v) if isinstance(v, list) else v for k, v in curve.items()})
            components = {name: _component(name, raw.pop(name, None)) for name in COMPONENTS}
            return cls(cost_curve=curve, fees=FeeSchedule(**raw.pop("fees")),
                       latency=LatencyModel(**raw.pop("latency")), **components, **raw)
        except ConfigError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ConfigError(f"not a FillModel JSON: {exc}") from exc


# Optional fitted parts of a FillModel: field -> (module, class); loaded on use.
COMPONENTS: dict[str, tuple[str, str]] = {
    "spread_profile": ("tradebook.sim.profile", "SpreadProfile"),
    "completion": ("tradebook.sim.profile", "CompletionModel"),
    "depth": ("tradebook.sim.depth", "DepthProfile"),
    "passive": ("tradebook.sim.passive", "PassiveModel"),
}


def _component(name: str, raw: dict | None) -> Any:
    if raw is None:
        return None
    module, cls = COMPONENTS[name]
    return getattr(importlib.import_module(module), cls).from_dict(raw)


def touch_only_curve() -> CostCurve:
    """Every marketable order fills at the touch: the peers' baseline before their fixed slippage."""
    n = len(SIZE_BUCKET_EDGES) - 1
    ones = tuple([1.0] * n)
    return CostCurve(SIZE_BUCKET_EDGES, ones, ones, ones, tuple([0] * n))


def baseline_model(instrument_id: str, tick_size: float, slippage_bps: float = DEFAULT_BASE_SLIPPAGE_BPS) -> FillModel:
    """Peers' fill model: the touch plus a fixed slippage (default 0.02%)."""
    return FillModel(instrument_id, tick_size, touch_only_curve(), base_slippage_bps=slippage_bps)
