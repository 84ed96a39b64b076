"""Calibrate fill models from stored history and measure them on data they were not fitted on.

This is the front door of the simulator's calibration: gather one instrument's quotes,
trades and depth (from the DuckDB store, or straight from the bundled files), cut them
into a fit slice and an evaluation slice, fit every part of the FillModel on the first
and score it, with the peers' two baselines, on the second:

- marketable orders against real sweeps (MAE and 90% interval coverage, closed/open);
- price improvement (how often and by how much fills print inside the spread);
- book walks predicted from L1 alone against the real visible book (where depth exists);
- passive fill probability against real outcomes (Brier score, reliability).

Each target of issue 3 is checked and printed with "met" or "MISSED"; a part the data
cannot support (no trades, no depth) is reported as not applicable, with the reason.

The harder report of issue 16 (transfers to other days and instruments, the engine's own
fills, block-bootstrap bands) is in :mod:`tradebook.sim.transfers`,
:mod:`tradebook.sim.transfer_scores` and :mod:`tradebook.sim.transfer_report`; its public
names are also reachable from this module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from tradebook.data.catalog import BUNDLED_FILES, load_bundled
from tradebook.data.frames import quote_columns
from tradebook.data.schemas import DataKind
from tradebook.errors import DataError, UnknownInstrumentError
from tradebook.model.instruments import Instrument, get_instrument
from tradebook.sim.calibrate import (
    MarketableFidelity,
    calibrate_marketable,
    evaluate_marketable,
    marketable_by_size,
)
from tradebook.sim.fill_model import (
    DEFAULT_FEES,
    EQUITY_FEES,
    FeeSchedule,
    FillModel,
    LatencyModel,
    touch_only_curve,
)
from tradebook.sim.truth import regular_hours_mask, sweeps, truth_label

# The bundled instruments with quote data good enough to calibrate on (FXCM is a dirty
# retail feed, ~10% crossed: never calibrated, see data/README.md).
CALIBRATABLE: tuple[str, ...] = ("BTCUSDT.BINANCE", "IBM.XNYS", "ESH4.GLBX", "ESU4.GLBX", "EURUSD.DUKASCOPY")
NOT_CALIBRATABLE: dict[str, str] = {
    "EURUSD.FXCM": "dirty retail feed (~10% crossed quotes); calibrating on it would teach the model bad prices",
}
_QUOTE_KINDS = (DataKind.QUOTES, DataKind.MBP1, DataKind.BOOK)  # in order of preference


@dataclass(frozen=True)
class InstrumentData:
    """One instrument's history for calibration: an L1 view, trades and depth where there are any.

    ``quotes`` has ``ts_ns, bid_px, ask_px, bid_sz, ask_sz`` (taken from an L1 file, the
    top of an MBP-1 feed or level 0 of a top-N book) restricted to the regular session;
    ``book`` keeps the full top-N book frame and ``depth`` the Binance diff stream when
    the data has them. ``dataset_ids`` and the time range are the provenance a stored
    calibration records.
    """

    instrument: Instrument
    quotes: pd.DataFrame
    trades: pd.DataFrame | None = None
    depth: pd.DataFrame | None = None  # Binance L2 snapshot + diffs
    book: pd.DataFrame | None = None  # top-N book rows (bid_px_0.. ask_sz_4)
    dataset_ids: tuple[int, ...] = ()
    sources: tuple[str, ...] = ()

    @property
    def instrument_id(self) -> str:
        return self.instrument.instrument_id

    @property
    def start_ns(self) -> int:
        return int(self.quotes["ts_ns"].iloc[0])

    @property
    def end_ns(self) -> int:
        return int(self.quotes["ts_ns"].iloc[-1])

    @property
    def has_trades(self) -> bool:
        return self.trades is not None and len(self.trades) > 0

    @property
    def has_depth(self) -> bool:
        return (self.depth is not None and len(self.depth) > 0) or (self.book is not None and len(self.book) > 0)

    def between(self, start_ns: int, end_ns: int) -> InstrumentData:
        """The part of every frame stamped in ``[start_ns, end_ns)``.

        Depth diffs are kept from the start: a Binance book can only be rebuilt from its
        snapshot onwards, and rebuilding at a time reads only messages stamped before it.
        """
        def cut(frame: pd.DataFrame | None) -> pd.DataFrame | None:
            if frame is None:
                return None
            ts = frame["ts_ns"].to_numpy()
            return frame[(ts >= start_ns) & (ts < end_ns)].reset_index(drop=True)

        quotes = cut(self.quotes)
        if quotes is None or not len(quotes):
            raise DataError(f"{self.instrument_id}: no quotes between {start_ns} and {end_ns}")
        return replace(self, quotes=quotes, trades=cut(self.trades), book=cut(self.book))

    def split(self, fit_fraction: float = 0.5) -> tuple[InstrumentData, InstrumentData]:
        """Fit on the first ``fit_fraction`` of the quotes' time span, evaluate on the rest."""
        if not 0 < fit_fraction < 1:
            raise DataError(f"fit_fraction is {fit_fraction!r}; expected a number strictly between 0 and 1")
        cut = self.start_ns + int((self.end_ns - self.start_ns) * fit_fraction)
        return self.between(self.start_ns, cut), self.between(cut, self.end_ns + 1)


def _l1_view(frame: pd.DataFrame) -> pd.DataFrame:
    columns = {column: name for name, column in quote_columns(frame).items()}
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"quote frame lacks {missing}; expected L1, MBP-1 or top-N book columns")
    view = frame[["ts_ns", *columns]].rename(columns=columns)
    return view.astype({"bid_px": "float64", "ask_px": "float64", "bid_sz": "float64", "ask_sz": "float64"})


def _assemble(instrument: Instrument, frames: dict[DataKind, pd.DataFrame], dataset_ids: tuple[int, ...],
              sources: tuple[str, ...]) -> InstrumentData:
    quote_kind = next((k for k in _QUOTE_KINDS if k in frames and len(frames[k])), None)
    if quote_kind is None:
        raise DataError(f"{instrument.instrument_id}: no quotes (L1, MBP-1 or book) to calibrate from; "
                        "load a quotes file first")
    raw = frames[quote_kind]
    quotes = _l1_view(raw)
    # Outside the regular session (equity pre/post-market, the CME pre-open auction)
    # quotes are wide or crossed and no paper order would trade there.
    in_session = regular_hours_mask(quotes["ts_ns"].to_numpy(), instrument)
    quotes = quotes[in_session].reset_index(drop=True)
    bid, ask = quotes["bid_px"].to_numpy(), quotes["ask_px"].to_numpy()
    if not len(quotes) or not (np.isfinite(bid) & np.isfinite(ask) & (bid < ask)).any():
        raise DataError(f"{instrument.instrument_id}: no valid quote (two-sided, bid < ask) in the regular "
                        f"session among {len(raw)} quote rows; cannot calibrate on crossed or empty quotes")
    trades = frames.get(DataKind.TRADES)
    if trades is not None and len(trades):
        keep = regular_hours_mask(trades["ts_ns"].to_numpy(), instrument)
        if "suspicious" in trades.columns:
            keep &= ~trades["suspicious"].fillna(False).to_numpy(dtype=bool)
        trades = trades[keep].reset_index(drop=True)
    book = None
    if quote_kind == DataKind.BOOK:
        book = raw[regular_hours_mask(raw["ts_ns"].to_numpy(), instrument)].reset_index(drop=True)
    return InstrumentData(instrument, quotes, trades if trades is not None and len(trades) else None,
                          frames.get(DataKind.DEPTH), book, dataset_ids, sources)


def bundled_instrument_data(instrument_id: str) -> InstrumentData:
    """An instrument's calibration data read straight from the bundled files (no store needed).

    Parser fixtures (the 46 s Binance 2021 files) are skipped: they are for tests only.
    """
    instrument = get_instrument(instrument_id)
    frames: dict[DataKind, pd.DataFrame] = {}
    sources = []
    for entry in BUNDLED_FILES:
        if entry.instrument_id != instrument_id or "fixture" in entry.note or entry.kind not in (
                *_QUOTE_KINDS, DataKind.TRADES, DataKind.DEPTH):
            continue
        frames[entry.kind] = load_bundled(entry).frame
        sources.append(entry.path)
    if not frames:
        raise DataError(f"no bundled data for {instrument_id}; instruments with quotes: {list(CALIBRATABLE)}")
    return _assemble(instrument, frames, (), tuple(sources))


def store_instrument_data(store: Any, instrument_id: str) -> InstrumentData:
    """An instrument's calibration data from the store.

    Where several quote datasets exist the largest is used, with the trades and depth
    datasets that overlap its time range: calibrating across unrelated captures would
    mix market regimes years apart.
    """
    instrument = store.instrument(instrument_id)
    datasets = store.datasets()
    # quotes built from bars (tradebook.research.synthetic) are not data to calibrate on
    datasets = datasets[~datasets["source"].str.startswith("synthetic:")]
    mine = datasets[datasets["instrument_id"] == instrument_id]
    quote_sets = mine[mine["kind"].isin([k.value for k in _QUOTE_KINDS])]
    if quote_sets.empty:
        raise DataError(f"{instrument_id}: the store {store.path} holds no quotes for it; "
                        f"load them first (tradebook load <file> --instrument {instrument_id})")
    main = quote_sets.sort_values(["row_count", "dataset_id"], ascending=[False, True]).iloc[0]
    start, end = int(main["first_ts_ns"]), int(main["last_ts_ns"])
    frames = {DataKind(main["kind"]): store.read(main["kind"], instrument_id, dataset_id=int(main["dataset_id"]))}
    used = [int(main["dataset_id"])]
    for kind in (DataKind.TRADES, DataKind.DEPTH):
        overlapping = mine[(mine["kind"] == kind.value) & (mine["first_ts_ns"] <= end) & (mine["last_ts_ns"] >= start)]
        if len(overlapping):
            row = overlapping.sort_values("row_count", ascending=False).iloc[0]
            frames[kind] = store.read(kind, instrument_id, dataset_id=int(row["dataset_id"]))
            used.append(int(row["dataset_id"]))
    return _assemble(instrument, frames, tuple(sorted(used)), tuple(f"store dataset {i}" for i in sorted(used)))


def default_fees(instrument: Instrument) -> FeeSchedule:
    """The venue's public base-tier fees (override per account in configuration)."""
    venue = instrument.instrument_id.rsplit(".", 1)[-1]
    if venue in DEFAULT_FEES:
        return DEFAULT_FEES[venue]
    return EQUITY_FEES


# -- sweeps of one slice -------------------------------------------------------------------
def instrument_sweeps(data: InstrumentData) -> pd.DataFrame:
    """Real sweeps of ``data`` priced against the prevailing quote; empty when it has no trades."""
    if not data.has_trades:
        return pd.DataFrame()
    return sweeps(data.trades, data.quotes)


# Passive horizons per instrument: short enough to see many independent windows in the
# sample, long enough for fills to happen at this instrument's activity.
PASSIVE_HORIZONS_S: dict[str, tuple[int, ...]] = {
    "BTCUSDT.BINANCE": (1, 5, 30),
    "IBM.XNYS": (10, 60, 300),
    "ESH4.GLBX": (5, 30, 120),
    "ESU4.GLBX": (1, 5, 15),
}
DEFAULT_PASSIVE_HORIZONS_S = (1, 10, 60)
PASSIVE_DISTANCES = (0, 1, 2, 5)
PASSIVE_PLACEMENTS = 1500  # random resting orders per slice (each scored at every distance and horizon)
BOOK_SAMPLES = 1500  # random times per slice at which the real book is walked
_NS = 1_000_000_000


def passive_horizons_ns(data: InstrumentData) -> tuple[int, ...]:
    """The horizons resting orders are scored at, capped at a tenth of the data's span."""
    chosen = PASSIVE_HORIZONS_S.get(data.instrument_id, DEFAULT_PASSIVE_HORIZONS_S)
    span_s = max((data.end_ns - data.start_ns) / _NS, 1.0)
    kept = tuple(h for h in chosen if h <= span_s / 10) or (max(1, int(span_s / 10)),)
    return tuple(int(h * _NS) for h in kept)


def passive_data(data: InstrumentData, rng: np.random.Generator, horizons_ns: tuple[int, ...],
                 touch_size_unit: float | None = None) -> pd.DataFrame:
    """Random resting orders over ``data`` with their real outcomes and L1 features.

    Placements whose longest horizon would run past the slice's last quote are not
    drawn: their outcome would be cut short (censored), not a miss.
    """
    from tradebook.sim.placements import passive_dataset

    ts = data.quotes["ts_ns"].to_numpy()
    mask = ts + max(horizons_ns) <= data.end_ns
    return passive_dataset(data.quotes, data.trades if data.has_trades else None, data.instrument,
                           PASSIVE_PLACEMENTS, rng, distances=PASSIVE_DISTANCES, horizons_ns=horizons_ns,
                           mask=mask, touch_size_unit=touch_size_unit)


def book_snapshots(data: InstrumentData, rng: np.random.Generator, n: int = BOOK_SAMPLES) -> Any:
    """The real visible book at ``n`` random times of ``data`` (None when it has no depth)."""
    from tradebook.sim.book import book5_snapshots, exclude_crossed_or_preopen, rebuild_binance_book

    if data.depth is not None and len(data.depth):
        depth = data.depth
        snapshot_ts = int(depth.loc[depth["kind"] == "snapshot", "ts_ns"].max())
        # a second after the snapshot the diffs have caught up; from the slice's own quotes on
        start = max(data.start_ns, snapshot_ts + _NS)
        if start >= data.end_ns:
            return None
        times = np.sort(rng.integers(start, data.end_ns, n))
        # 1,000 levels: twenty typical tops reach a few hundred levels deep in BTCUSDT
        return exclude_crossed_or_preopen(rebuild_binance_book(depth, times, levels=1000))
    if data.book is not None and len(data.book):
        times = np.sort(rng.integers(data.start_ns, data.end_ns, n))
        return exclude_crossed_or_preopen(book5_snapshots(data.book, times))
    return None


@dataclass(frozen=True)
class Calibration:
    """A fitted FillModel with the provenance and fit diagnostics a stored calibration keeps."""

    model: FillModel
    data_start_ns: int
    data_end_ns: int
    dataset_ids: tuple[int, ...]
    diagnostics: dict[str, Any] = field(default_factory=dict)
    # intermediate fit data the fidelity report reuses (not stored)
    work: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


def calibrate_instrument(
    data: InstrumentData,
    *,
    fees: FeeSchedule | None = None,
    latency: LatencyModel | None = None,
    seed: int = 0,
) -> Calibration:
    """Fit every part of the FillModel that ``data`` supports."""
    instrument = data.instrument
    tick = float(instrument.tick_size)
    model_fields: dict[str, Any] = {"fees": fees or default_fees(instrument), "latency": latency or LatencyModel()}
    diagnostics: dict[str, Any] = {"quotes": len(data.quotes), "trades": len(data.trades) if data.has_trades else 0,
                                   "sources": list(data.sources)}
    from tradebook.sim.depth import fit_depth_profile
    from tradebook.sim.passive import fit_passive_model
    from tradebook.sim.profile import fit_completion_model, fit_spread_profile
    from tradebook.sim.staleness import stale_age_ns

    rng = np.random.default_rng(seed)
    work: dict[str, Any] = {}
    fit_sweeps = instrument_sweeps(data)
    if len(fit_sweeps):
        # the fitted median only where it beats the touch on sweeps held back inside the fit data
        model = calibrate_marketable(instrument.instrument_id, tick, fit_sweeps, median="validated", **model_fields)
        diagnostics["sweeps"] = len(fit_sweeps)
        diagnostics["median_at_touch"] = all(v == 1.0 for v in model.cost_curve.q50)
        diagnostics["cost_curve_counts"] = list(model.cost_curve.counts)
        diagnostics["interval_levels"] = list(model.cost_curve.interval_levels)
        # how stale the quotes the fit's sweeps met were (a sampled feed's snapshots): already in the quantiles
        stale = stale_age_ns(data.quotes, fit_sweeps["ts_ns"].to_numpy(np.int64))
        model = replace(model, fitted_stale_ns=float(np.median(stale)))
        diagnostics["fitted_stale_ms"] = model.fitted_stale_ns / 1e6
    else:
        # No trades: costs of marketable orders are the touch (what quotes alone can say).
        model = FillModel(instrument.instrument_id, tick, touch_only_curve(), **model_fields)
        diagnostics["sweeps"] = 0
        diagnostics["marketable"] = "no trades: marketable orders fill at the touch"
    parts: dict[str, Any] = {
        "spread_profile": fit_spread_profile(data.quotes, instrument),
        "completion": fit_completion_model(data.quotes, data.trades if data.has_trades else None, instrument),
    }
    snapshots = book_snapshots(data, rng)
    if snapshots is not None and len(snapshots):
        # sizes in multiples of the instrument's own recent touch: the profile carries to other days and instruments
        parts["depth"] = fit_depth_profile(snapshots, tick, rng=rng, instrument_id=instrument.instrument_id,
                                           quotes=data.quotes)
        diagnostics["book_samples"] = len(snapshots)
        diagnostics["depth_source"] = "book"
    else:
        parts["depth"], diagnostics["depth_source"], diagnostics["l1_depth_check"] = _l1_depth(data, fit_sweeps, seed)
    horizons = passive_horizons_ns(data)
    passive_fit = passive_data(data, rng, horizons)
    work["passive_fit"] = passive_fit
    parts["passive"] = fit_passive_model(passive_fit, instrument_id=instrument.instrument_id)
    diagnostics["passive_rows"] = len(passive_fit)
    diagnostics["passive_horizons_s"] = [h / _NS for h in horizons]
    diagnostics["passive_rule"] = passive_fit.attrs.get("rule", "")
    model = replace(model, **parts)
    return Calibration(model, data.start_ns, data.end_ns, data.dataset_ids, diagnostics, work)


def _l1_depth(data: InstrumentData, fit_sweeps: pd.DataFrame, seed: int) -> tuple[Any, str, dict]:
    """The depth an L1-only fit implies (touch depletions), with the fit's own sweeps' verdict on it (diagnostic).

    Kept wherever the quotes show the touch used up: without it a paper order larger than the
    touch walks nothing and fills at the touch, the optimistic error a promotion gate must not
    be fed. The sweeps check (:func:`tradebook.sim.depth.l1_depth_check`) is stored beside it
    and does not decide: real sweeps beyond the touch cost about the touch even where the
    recorded book says otherwise (BTCUSDT 2024: walking the recorded book before each prices
    them at 1.41x the touch's MAE), so it refutes any book there. Measured on the bundled
    captures' recorded books (fit on L1 alone): ESH4 0.15x baseline (b), ESU4 -> ESH4 0.15x,
    BTCUSDT 2021 -> 2024 0.25x (median 3.15 bps at 20 touches, true 3.26); BTCUSDT 2024's
    own L1 implies too thin a book (1.72x and 1.15x (b): 5.9 bps at 20 touches, true 2.9),
    an error on the side of cost.
    """
    from tradebook.sim.depth import fit_l1_depth_profile, l1_depth_check

    try:  # its own random stream: the other parts' samples do not move with it
        profile = fit_l1_depth_profile(data.quotes, float(data.instrument.tick_size),
                                       rng=np.random.default_rng(seed + 7), instrument_id=data.instrument_id)
    except DataError as exc:
        return None, f"none: {exc}", {}
    check = l1_depth_check(profile, fit_sweeps, data.quotes) if len(fit_sweeps) else {}
    return profile, "l1 (touch depletions)", check


# -- the report ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    name: str
    value: float
    rule: str
    met: bool


@dataclass(frozen=True)
class InstrumentFidelity:
    """One instrument's held-out scores and the issue targets they meet or miss."""

    instrument_id: str
    fit_range: tuple[int, int]
    eval_range: tuple[int, int]
    marketable: MarketableFidelity | None
    book_walk: Any = None  # tradebook.sim.depth.BookWalkFidelity
    passive: Any = None  # tradebook.sim.passive.PassiveFidelity
    not_applicable: dict[str, str] = field(default_factory=dict)
    targets: tuple[Target, ...] = ()
    lines: tuple[str, ...] = ()  # further report lines (book walks, passive, profiles)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # what the plots draw
    fit_instrument_id: str = ""  # set when the model was fitted on another instrument

    @property
    def all_met(self) -> bool:
        return all(t.met for t in self.targets)


def _targets(part: str, scores: Any) -> list[Target]:
    return [Target(f"{part}: {name}", float(value), rule, bool(met))
            for name, (value, rule, met) in scores.targets().items()]


def fidelity(fit: InstrumentData, held_out: InstrumentData, *, calibration: Calibration | None = None,
             seed: int = 0) -> InstrumentFidelity:
    """Fit on ``fit`` (unless a calibration is given) and score on ``held_out``."""
    calibration = calibration or calibrate_instrument(fit, seed=seed)
    model = calibration.model
    not_applicable: dict[str, str] = {}
    targets: list[Target] = []
    marketable = None
    tables: dict[str, pd.DataFrame] = {}
    report_lines: list[str] = []
    held_sweeps = instrument_sweeps(held_out)
    if len(held_sweeps) and calibration.diagnostics.get("sweeps", 0) > 0:
        # the held-out quotes and prints: the quote moved by the prints since it, intervals widened over a
        # sampled feed's snapshot age (tradebook.sim.staleness)
        marketable = evaluate_marketable(model, held_sweeps, quotes=held_out.quotes, trades=held_out.trades)
        tables["marketable_by_size"] = marketable_by_size(model, held_sweeps, quotes=held_out.quotes,
                                                          trades=held_out.trades)
        targets.extend(_targets("sweeps", marketable))
    else:
        not_applicable["marketable vs real sweeps"] = "no trades in the data: no real sweeps to score against"
    rng = np.random.default_rng(seed + 1)  # not the fit's stream: evaluation samples differ from fit samples
    book_walk = None
    if model.depth is not None:
        from tradebook.sim.depth import evaluate_book_walk
        from tradebook.sim.truth import book_walk_truth

        snapshots = book_snapshots(held_out, rng)
        if snapshots is not None and len(snapshots):
            from tradebook.sim.depth import DEFAULT_SIZES_REL_TOP

            truth = book_walk_truth(snapshots, np.asarray(DEFAULT_SIZES_REL_TOP), rng, model.depth.typical_top_size)
            book_walk = evaluate_book_walk(model.depth, truth, quotes=held_out.quotes)
            tables["book_walk_by_size"] = book_walk.table()
            report_lines.append(
                f"book walks from L1 only, {book_walk.n:,} walks at {len(snapshots):,} times "
                f"({book_walk.n_not_deep_enough:,} deeper than the visible book, not scored): MAE model "
                f"{_fmt(book_walk.mae_model_bps)} bps | baseline (b) touch {_fmt(book_walk.mae_baseline_b_bps)}; "
                f"90% interval covers {_fmt(book_walk.coverage_closed)} closed, {_fmt(book_walk.coverage_open)} open")
            targets.extend(_targets("book walks", book_walk))
    if book_walk is None:
        not_applicable["book walks"] = "no depth in the data: nothing to walk (L1 only)"
    passive = None
    if model.passive is not None:
        from tradebook.sim.passive import evaluate_passive, fit_passive_baseline

        passive_fit = calibration.work.get("passive_fit")
        if passive_fit is None:  # a stored calibration: rebuild the fit slice's reference rates
            passive_fit = passive_data(fit, np.random.default_rng(seed), model.passive.horizons_ns,
                                       model.passive.touch_size_unit)
        baseline = fit_passive_baseline(passive_fit)
        held = passive_data(held_out, rng, model.passive.horizons_ns, model.passive.touch_size_unit)
        passive = evaluate_passive(model.passive, baseline, held)
        tables["passive_reliability"] = passive.reliability_table()
        tables["passive_cells"] = passive.cell_table()
        horizons = "/".join(f"{h / _NS:g}s" for h in model.passive.horizons_ns)
        report_lines.append(
            f"passive, {passive.n:,} held-out resting orders (distances {list(PASSIVE_DISTANCES)} ticks, horizons "
            f"{horizons}, truth: {truth_label(held)}): fill rate {_fmt(passive.fill_rate)}; Brier model "
            f"{_fmt(passive.brier_model, 4)} vs average rate by distance and horizon {_fmt(passive.brier_baseline, 4)}"
            f" (skill {passive.brier_skill:+.1%})")
        targets.extend(_targets("passive", passive))
    if model.spread_profile is not None:
        table = model.spread_profile.table()
        tables["spread_profile"] = table[(table["bucket"] >= 0) & (table["regime"] >= 0)].reset_index(drop=True)
        predicted = float(np.nanmedian(model.spread_profile.expected_spread_bps(
            held_out.quotes["ts_ns"].to_numpy(), np.full(len(held_out.quotes), np.nan))))
        q = held_out.quotes
        real = float(np.median(((q["ask_px"] - q["bid_px"]) / ((q["ask_px"] + q["bid_px"]) / 2) * 1e4).dropna()))
        report_lines.append(f"spread: median {_fmt(real)} bps held out vs {_fmt(predicted)} predicted by time of day "
                            f"(per quote update); 1-minute ATR {_fmt(model.spread_profile.atr_1m_bps)} bps in the fit")
    if model.completion is not None:
        c = model.completion
        size = 10 * c.fill_size
        report_lines.append(
            f"completion: an order of 10 touches ({size:g}) fills in {int(c.partial_fills(size)[0])} parts over "
            f"~{c.time_to_complete_ns(size)[0] / _NS:.1f} s at 10% participation (volume from {c.source})")
    return InstrumentFidelity(
        held_out.instrument_id, (fit.start_ns, fit.end_ns), (held_out.start_ns, held_out.end_ns), marketable,
        book_walk, passive, not_applicable, tuple(targets), tuple(report_lines), tables,
        fit.instrument_id if fit.instrument_id != held_out.instrument_id else "",
    )


def _fmt(value: float, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def format_fidelity(results: list[InstrumentFidelity]) -> str:
    """The fidelity report as plain text: per instrument, the figures, then each target met or MISSED."""
    from tradebook.model.time import ns_to_iso

    lines = ["Fill-model fidelity on held-out data (fit on one slice, scored on another)", ""]
    for r in results:
        lines.append(f"== {r.instrument_id}" + (f" (model fitted on {r.fit_instrument_id})"
                                                 if r.fit_instrument_id else ""))
        lines.append(f"   fit  {ns_to_iso(r.fit_range[0])} .. {ns_to_iso(r.fit_range[1])}")
        lines.append(f"   eval {ns_to_iso(r.eval_range[0])} .. {ns_to_iso(r.eval_range[1])}")
        m = r.marketable
        if m is not None:
            lines.append(f"   marketable, {m.n} real sweeps: MAE model {_fmt(m.mae_model_bps)} bps | baseline (a) "
                         f"touch+2bps {_fmt(m.mae_touch_plus_slippage_bps)} | baseline (b) touch "
                         f"{_fmt(m.mae_touch_bps)}; 90% interval covers {_fmt(m.coverage_closed)} closed, "
                         f"{_fmt(m.coverage_open)} open")
            lines.append(f"   price improvement (sweeps <= touch size): inside the spread {_fmt(m.inside_spread_share_real)}"
                         f" real vs {_fmt(m.inside_spread_share_predicted)} predicted; median improvement "
                         f"{_fmt(m.improvement_ratio_real)} vs {_fmt(m.improvement_ratio_predicted)} half-spreads")
        lines.extend(f"   {text}" for text in r.lines)
        for name, reason in r.not_applicable.items():
            lines.append(f"   {name}: not applicable ({reason})")
        for t in r.targets:
            verdict = "met" if t.met else "MISSED"
            lines.append(f"   [{verdict:>6}] {t.name}: {_fmt(t.value, 4)} (target {t.rule})")
        lines.append("")
    missed = [(r.instrument_id, t.name) for r in results for t in r.targets if not t.met]
    if missed:
        lines.append(f"{len(missed)} target(s) MISSED:")
        lines.extend(f"  - {inst}: {name}" for inst, name in missed)
    else:
        lines.append(f"All {sum(len(r.targets) for r in results)} targets met.")
    return "\n".join(lines)


# -- store-level jobs (what the CLI and the notebooks call) -----------------------------------
def calibratable_instruments(store: Any) -> list[str]:
    """Instruments in ``store`` with quotes to calibrate on (known-dirty feeds left out)."""
    datasets = store.datasets()
    datasets = datasets[~datasets["source"].str.startswith("synthetic:")]  # quotes built from bars: not recorded
    with_quotes = datasets[datasets["kind"].isin([k.value for k in _QUOTE_KINDS])]["instrument_id"]
    return sorted(i for i in set(with_quotes) if i not in NOT_CALIBRATABLE)


def _pick_instruments(store: Any, instruments: list[str] | None) -> list[str]:
    available = calibratable_instruments(store)
    if not instruments:
        if not available:
            raise DataError(f"the store {store.path} holds no quotes to calibrate on; run `tradebook demo` "
                            "(loads the bundled data) or `tradebook load` first")
        return available
    for instrument_id in instruments:
        if instrument_id in NOT_CALIBRATABLE:
            raise DataError(f"{instrument_id} is not calibrated: {NOT_CALIBRATABLE[instrument_id]}")
        try:
            store.instrument(instrument_id)
        except UnknownInstrumentError:
            get_instrument(instrument_id)  # unknown anywhere: UnknownInstrumentError with close matches
        if instrument_id not in available:
            raise DataError(f"{instrument_id}: the store {store.path} holds no quotes for it; "
                            f"instruments with quotes: {available}")
    return list(instruments)


def run_calibration(store: Any, instruments: list[str] | None = None, *, seed: int = 0,
                    progress: bool | None = None) -> list[Any]:
    """Fit each instrument on all its stored data and store the model as a new version.

    Re-running on unchanged data does not pile up versions: when the newest stored
    calibration has the same params and datasets it is returned instead. ``progress``:
    a bar per instrument (None: only when a person watches, see :mod:`tradebook.progress`).
    """
    from tradebook.progress import track

    records = []
    chosen = _pick_instruments(store, instruments)
    for instrument_id in track(chosen, total=len(chosen), desc="calibrating", unit="instrument", progress=progress):
        data = store_instrument_data(store, instrument_id)
        calibration = calibrate_instrument(data, seed=seed)
        params = calibration.model.to_json()
        stored = store.calibrations(instrument_id)
        if len(stored):
            latest = store.calibration(instrument_id)
            if latest.params == params and latest.dataset_ids == tuple(data.dataset_ids):
                records.append(latest)
                continue
        records.append(store.save_calibration(
            instrument_id, params, data_start_ns=calibration.data_start_ns, data_end_ns=calibration.data_end_ns,
            dataset_ids=data.dataset_ids, diagnostics=calibration.diagnostics))
    return records


def load_model(store: Any, name: str) -> FillModel:
    """The FillModel of a stored calibration (``'IBM.XNYS@v2'``, or an instrument id for its latest)."""
    return FillModel.from_json(store.calibration(name).params)


def run_fidelity(store: Any, instruments: list[str] | None = None, *, fit_fraction: float = 0.5,
                 seed: int = 0, eval_instrument: str | None = None,
                 progress: bool | None = None) -> list[InstrumentFidelity]:
    """For each instrument: fit on the first ``fit_fraction`` of its stored data, score on the rest.

    With ``eval_instrument`` the one instrument named is fitted on all its data and
    scored on all of ``eval_instrument``'s (another contract, venue or day). ``progress``:
    a bar per instrument (None: only when a person watches, see :mod:`tradebook.progress`).
    """
    from tradebook.progress import track

    if eval_instrument is not None:
        chosen = _pick_instruments(store, instruments)
        if len(chosen) != 1:
            raise DataError(f"scoring on {eval_instrument} needs exactly one instrument to fit on, got {chosen}")
        target = _pick_instruments(store, [eval_instrument])[0]
        fit = store_instrument_data(store, chosen[0])
        return [fidelity(fit, store_instrument_data(store, target), seed=seed)]
    results = []
    chosen = _pick_instruments(store, instruments)
    for instrument_id in track(chosen, total=len(chosen), desc="fidelity", unit="instrument", progress=progress):
        fit, held_out = store_instrument_data(store, instrument_id).split(fit_fraction)
        results.append(fidelity(fit, held_out, seed=seed))
    return results


def format_calibrations(store: Any, records: list[Any]) -> str:
    """What was fitted: one block per stored calibration."""
    from tradebook.model.time import ns_to_iso

    lines = []
    for record in records:
        model = FillModel.from_json(record.params)
        curve = model.cost_curve
        lines.append(f"{record.calibration_id}: {ns_to_iso(record.data_start_ns)} .. {ns_to_iso(record.data_end_ns)}"
                     f" (datasets {list(record.dataset_ids)}; {record.diagnostics.get('quotes', 0):,} quotes, "
                     f"{record.diagnostics.get('sweeps', 0):,} sweeps)")
        table = pd.DataFrame({
            "size/touch from": [f"{e:g}" for e in curve.edges[:-1]],
            "sweeps": curve.counts,
            "cost q05 (half-spreads)": np.round(curve.q05, 3),
            "median": np.round(curve.q50, 3),
            "q95": np.round(curve.q95, 3),
        })
        lines.extend("   " + row for row in table.to_string(index=False).splitlines())
        lines.append(f"   price improvement: {model.price_improvement_share:.1%} of touch-sized sweeps inside the "
                     f"spread, by {model.price_improvement_ratio:.2f} half-spreads (median); fees {model.fees}; "
                     f"latency median {model.latency.submit_to_ack_median_ns / 1e6:g} ms to ack")
        for name in ("spread_profile", "completion", "depth", "passive"):
            part = getattr(model, name)
            if part is not None and hasattr(part, "summary"):
                lines.append(f"   {name}: {part.summary()}")
        lines.append("")
    return "\n".join(lines)


# The transfer report (issue 16) lives in tradebook.sim.transfers (its cases), .transfer_scores (scoring each part)
# and .transfer_report (running and printing it); its public names are still reachable from here, resolved on
# first use (an import at the top would be circular: those modules build on this one).
_TRANSFER_NAMES = {
    "tradebook.sim.transfers": ("WALK_RATIO_TRANSFER", "WALK_RATIO_SPLIT", "ENGINE_RESTING_RATIO", "COVERAGE_CLOSED",
                                "COVERAGE_OPEN", "ENGINE_SIZES_REL_TOUCH", "ENGINE_ORDERS_PER_SIZE",
                                "ENGINE_RESTING_PLACEMENTS", "ENGINE_RESTING_DISTANCES", "HALF_HALF", "EARLY_LATE",
                                "ACROSS", "Capture", "Transfer", "Figure", "TransferFidelity", "bundled_captures",
                                "store_captures", "transfers"),
    "tradebook.sim.transfer_report": ("score_transfer", "run_transfer_report", "format_transfer_report",
                                      "run_fidelity_report"),
}


def __getattr__(name: str) -> Any:
    import importlib

    for module, names in _TRANSFER_NAMES.items():
        if name in names:
            return getattr(importlib.import_module(module), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
