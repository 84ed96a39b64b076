"""The fill model: what a paper order would really have cost, fitted from the user's own quotes and trades.

Costs of marketable orders are modelled in units of the prevailing half-spread,
``ratio = cost / half_spread``, by order size relative to the displayed size at the
touch. Ratio 1 is a fill at the touch, below 1 is price improvement (hidden and
midpoint liquidity, common in US equities), above 1 is walking the book. Keeping the
spread as the unit lets one curve serve a calm and a wide market; keeping the
quantiles (not only a mean) gives the prediction interval, and many real costs sit
exactly at the half-spread, so interval coverage is reported closed and open.

A model is plain data (frozen dataclasses of floats and tuples) and serialises to
JSON for the store, where calibrations are versioned per instrument.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from tradebook.errors import ConfigError, DataError
from tradebook.sim.orders import TakeParams

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


@dataclass(frozen=True)
class CostCurve:
    """Quantiles of cost / half-spread for each size-over-touch bucket (monotone in size)."""

    edges: tuple[float, ...]
    q05: tuple[float, ...]
    q50: tuple[float, ...]
    q95: tuple[float, ...]
    counts: tuple[int, ...]
    # The quantile levels behind q05/q95: (0.05, 0.95) nominally, wider when validation
    # inside the fit slice showed the nominal levels cover less than 90% out of sample.
    interval_levels: tuple[float, float] = (0.05, 0.95)

    def __post_init__(self) -> None:
        n = len(self.edges) - 1
        if not (len(self.q05) == len(self.q50) == len(self.q95) == len(self.counts) == n):
            raise ConfigError(f"cost curve needs {n} values per quantile for {len(self.edges)} edges")

    def bucket(self, size_over_touch: np.ndarray) -> np.ndarray:
        x = np.asarray(size_over_touch, dtype="float64")
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

    def marketable_cost_bps(
        self,
        size: np.ndarray,
        half_spread_bps: np.ndarray,
        touch_size: np.ndarray,
        quantile: float = 0.5,
    ) -> np.ndarray:
        """Predicted cost against the mid, in bps, of marketable orders of ``size`` (vectorised)."""
        size = np.asarray(size, dtype="float64")
        touch = np.asarray(touch_size, dtype="float64")
        with np.errstate(divide="ignore", invalid="ignore"):
            x = np.where(touch > 0, size / touch, np.inf)
        ratio = self.cost_curve.ratio(x, quantile)
        return np.asarray(half_spread_bps, dtype="float64") * ratio + self.base_slippage_bps

    def take_params(self, lot: float) -> TakeParams:
        """The marketable-cost table as arrays for the compiled matching code."""
        return TakeParams(
            edges=np.asarray(self.cost_curve.edges, dtype=np.float64),
            ratios=np.asarray(self.cost_curve.q50, dtype=np.float64),
            slippage_bps=float(self.base_slippage_bps),
            max_take_over_touch=float(self.max_take_over_touch),
            lot=float(lot),
        )

    def to_json(self) -> str:
        raw = {f.name: getattr(self, f.name) for f in fields(self)}
        raw["cost_curve"] = asdict(self.cost_curve)
        raw["fees"] = asdict(self.fees)
        raw["latency"] = asdict(self.latency)
        for name in COMPONENTS:
            value = raw[name]
            raw[name] = None if value is None else value.to_dict()
        return json.dumps(raw, sort_keys=True, allow_nan=True)

    @classmethod
    def from_json(cls, text: str) -> FillModel:
        try:
            raw = json.loads(text)
            curve = raw.pop("cost_curve")
            curve = CostCurve(**{k: tuple(v) for k, v in curve.items()})
            components = {name: _component(name, raw.pop(name, None)) for name in COMPONENTS}
            return cls(cost_curve=curve, fees=FeeSchedule(**raw.pop("fees")),
                       latency=LatencyModel(**raw.pop("latency")), **components, **raw)
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
