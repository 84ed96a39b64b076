"""The transfer report's cases: captures, the transfers between them, and the figures they are scored by.

A *capture* is one recording of one instrument (bundled files or a store recording); a
*transfer* fits on one slice or capture and scores on another (the half/half split of a
capture, its early part against its late part, and every ordered pair of captures of one
asset class). Each scored figure carries its block-bootstrap band
(:mod:`tradebook.sim.bootstrap`) and, for a target of issue 16, its verdict. The scoring
of each part is in :mod:`tradebook.sim.transfer_scores`; running and printing the report in
:mod:`tradebook.sim.transfer_report`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from tradebook.data.catalog import BUNDLED_FILES, load_bundled
from tradebook.data.schemas import DataKind
from tradebook.errors import DataError
from tradebook.model.instruments import get_instrument
from tradebook.sim.fidelity import _NS, _QUOTE_KINDS, CALIBRATABLE, NOT_CALIBRATABLE, InstrumentData, _assemble, _fmt, \
    _pick_instruments

# Targets of issue 16, judged against each figure's block-bootstrap band (tradebook.sim.bootstrap).
WALK_RATIO_TRANSFER = 0.5  # book-walk MAE from L1 alone / baseline (b), on a transfer
WALK_RATIO_SPLIT = 0.35  # ... on the half/half split
ENGINE_RESTING_RATIO = 0.35  # the engine's replayed resting orders: Brier / reference (c)'s Brier
COVERAGE_CLOSED, COVERAGE_OPEN = 0.85, 0.95
ENGINE_SIZES_REL_TOUCH: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0)
ENGINE_ORDERS_PER_SIZE = 120
ENGINE_RESTING_PLACEMENTS = 300
ENGINE_RESTING_DISTANCES = (0, 1, 2)
HALF_HALF, EARLY_LATE, ACROSS = "half/half", "early -> late", "capture -> capture"


@dataclass(frozen=True)
class Capture:
    """One recording of one instrument (``label`` like ``'BTCUSDT.BINANCE 2024-08-08'``)."""

    label: str
    data: InstrumentData

    @property
    def asset_class(self) -> str:
        return str(self.data.instrument.asset_class.value)


@dataclass(frozen=True)
class Transfer:
    """Fit on ``fit``, score on ``score``: a split of one capture or one capture to another."""

    kind: str  # HALF_HALF, EARLY_LATE or ACROSS
    fit_label: str
    score_label: str
    fit: InstrumentData
    score: InstrumentData

    @property
    def name(self) -> str:
        return f"{self.kind}: {self.fit_label} -> {self.score_label}"


@dataclass(frozen=True)
class Figure:
    """One figure of the report with its block-bootstrap band, and the target it is held to (if any)."""

    name: str
    band: Any  # tradebook.sim.bootstrap.Band
    rule: str = ""  # '<=' or '>=' ('' for a figure shown without a target)
    threshold: float = float("nan")
    met: bool = True
    verdict: str = ""

    def line(self) -> str:
        b = self.band
        text = f"{self.name}: {_fmt(b.value)} [{_fmt(b.low)}, {_fmt(b.high)}] ({b.n:,} rows, {b.blocks} blocks)"
        if self.rule:
            return f"[{'met' if self.met else 'MISSED':>6}] {text}; target {self.rule} {self.threshold:g}" + (
                f" ({self.verdict})" if self.verdict not in ("met", "MISSED") else "")
        return f"[  info] {text}"


@dataclass(frozen=True)
class TransferFidelity:
    """The scores of one transfer: figures with bands, what could not be scored and why, plot tables."""

    transfer: Transfer
    figures: tuple[Figure, ...]
    lines: tuple[str, ...] = ()
    not_applicable: dict[str, str] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def targets(self) -> tuple[Figure, ...]:
        return tuple(f for f in self.figures if f.rule)

    @property
    def missed(self) -> tuple[Figure, ...]:
        return tuple(f for f in self.targets if not f.met)

    @property
    def all_met(self) -> bool:
        return not self.missed


def _target(name: str, band: Any, rule: str, threshold: float) -> Figure:
    from tradebook.sim.bootstrap import judge

    met, verdict = judge(band, rule, threshold)
    return Figure(name, band, rule, float(threshold), met, verdict)


def _capture_label(data: InstrumentData) -> str:
    from tradebook.model.time import ns_to_iso

    return f"{data.instrument_id} {ns_to_iso(data.start_ns)[:10]}"


def bundled_captures(instruments: list[str] | None = None) -> list[Capture]:
    """Every bundled capture fit to calibrate on, read straight from the files (no store needed).

    Files of one instrument whose time ranges overlap make one capture (BTCUSDT.BINANCE has
    two: the 2021-01-08 minute and the 2024-08-08 eleven minutes).
    """
    chosen = list(instruments) if instruments else list(CALIBRATABLE)
    out = []
    for instrument_id in chosen:
        if instrument_id in NOT_CALIBRATABLE:
            raise DataError(f"{instrument_id} is not calibrated: {NOT_CALIBRATABLE[instrument_id]}")
        instrument = get_instrument(instrument_id)
        loaded = []
        for entry in BUNDLED_FILES:
            if entry.instrument_id == instrument_id and entry.kind in (*_QUOTE_KINDS, DataKind.TRADES,
                                                                        DataKind.DEPTH):
                frame = load_bundled(entry).frame
                loaded.append((int(frame["ts_ns"].min()), int(frame["ts_ns"].max()), entry, frame))
        if not loaded:
            raise DataError(f"no bundled data for {instrument_id}; instruments with quotes: {list(CALIBRATABLE)}")
        loaded.sort(key=lambda item: item[0])
        groups: list[list] = []
        for item in loaded:
            if groups and item[0] <= max(g[1] for g in groups[-1]) + 60 * _NS:
                groups[-1].append(item)
            else:
                groups.append([item])
        for group in groups:
            frames = {entry.kind: frame for _s, _e, entry, frame in group}
            if not any(k in frames for k in _QUOTE_KINDS):
                continue
            data = _assemble(instrument, frames, (), tuple(entry.path for _s, _e, entry, _f in group))
            out.append(Capture(_capture_label(data), data))
    return out


def store_captures(store: Any, instruments: list[str] | None = None) -> list[Capture]:
    """Every recording in ``store`` (``store.recordings()``) of the instruments with quotes to calibrate on."""
    chosen = _pick_instruments(store, instruments)
    recordings = store.recordings()
    datasets = store.datasets().set_index("dataset_id")
    # quotes built from bars (tradebook.research.synthetic) share a recording with the bars: not a capture
    recorded = datasets[~datasets["source"].str.startswith("synthetic:")]
    out = []
    for instrument_id in chosen:
        instrument = store.instrument(instrument_id)
        for row in recordings[recordings["instrument_id"] == instrument_id].itertuples(index=False):
            ids = tuple(sorted(i for i in (int(i) for i in str(row.dataset_ids).split(",") if i.strip())
                               if i in recorded.index))
            kinds = set(recorded.loc[list(ids), "kind"])
            if not any(k.value in kinds for k in _QUOTE_KINDS):
                continue
            frames = {}
            for kind in (*_QUOTE_KINDS, DataKind.TRADES, DataKind.DEPTH):
                if kind.value in kinds:
                    frames[kind] = store.read(kind, instrument_id, dataset_id=[i for i in ids
                                                                               if recorded.at[i, "kind"] == kind.value])
            data = _assemble(instrument, frames, ids, tuple(f"store dataset {i}" for i in ids))
            # named by the day its quotes start (a recording of daily bars may reach back decades)
            out.append(Capture(_capture_label(data), data))
    return out


def transfers(captures: list[Capture], *, across: bool = True, early_late: bool = True,
              fit_fraction: float = 0.5) -> list[Transfer]:
    """What the report scores: per capture the half/half split and early -> late; across captures of a class.

    The half/half split fits on the first ``fit_fraction`` of a capture and scores the rest.

    Early -> late fits on a capture's first day (its first third when it spans less than
    a day and a half) and scores its last hours (its last third). Across: every ordered
    pair of captures of the same asset class (BTCUSDT 2021 -> 2024 and back, ESH4 -> ESU4
    and back); a model is only carried to an instrument of its own asset class.
    """
    out = []
    for c in captures:
        fit, score = c.data.split(fit_fraction)
        out.append(Transfer(HALF_HALF, f"{c.label} 1st half", f"{c.label} 2nd half", fit, score))
        if early_late:
            start, end = c.data.start_ns, c.data.end_ns
            if end - start > 36 * 3600 * _NS:
                cut_fit, cut_score = start + 24 * 3600 * _NS, end - 3 * 3600 * _NS
                names = ("1st day", "last 3 h")
            else:
                cut_fit, cut_score = start + (end - start) // 3, end - (end - start) // 3
                names = ("1st third", "last third")
            out.append(Transfer(EARLY_LATE, f"{c.label} {names[0]}", f"{c.label} {names[1]}",
                                c.data.between(start, cut_fit), c.data.between(cut_score, end + 1)))
    if across:
        for a in captures:
            for b in captures:
                if a is not b and a.asset_class == b.asset_class:
                    out.append(Transfer(ACROSS, a.label, b.label, a.data, b.data))
    return out
