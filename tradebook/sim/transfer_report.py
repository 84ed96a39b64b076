"""Running the transfer report: fit once per fit slice, score every transfer, print figures with bands.

``tradebook fidelity`` and ``notebooks/02_calibrate.ipynb`` call :func:`run_fidelity_report`
(the store's recordings) or :func:`run_transfer_report` (any captures, e.g. the bundled ones).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pandas as pd

from tradebook.errors import DataError
from tradebook.sim.fidelity import _NS, Calibration, _fmt, calibrate_instrument
from tradebook.sim.fill_model import FillModel
from tradebook.sim.transfer_scores import (
    block_ns_of,
    score_engine_marketable,
    score_engine_resting,
    score_passive,
    score_sweeps,
    score_walks,
)
from tradebook.sim.transfers import ACROSS, Capture, Figure, Transfer, TransferFidelity, store_captures, transfers


def _calibration_for(t: Transfer, cache: dict | None, seed: int) -> Calibration:
    key = (t.fit.instrument_id, t.fit.start_ns, t.fit.end_ns, seed)
    if cache is not None and key in cache:
        return cache[key]
    calibration = calibrate_instrument(t.fit, seed=seed)
    if cache is not None:
        cache[key] = calibration
    return calibration


def _carried_model(model: FillModel, t: Transfer) -> tuple[FillModel, str]:
    """The fitted model as applied to the scored instrument, and a note when it is used away from its data."""
    if t.fit.instrument_id == t.score.instrument_id:
        return model, ""
    carry = getattr(model, "for_instrument", None)
    note = f"model fitted on {t.fit.instrument_id}, applied to {t.score.instrument_id}"
    if carry is not None:
        return carry(t.score.instrument), note
    return replace(model, instrument_id=t.score.instrument_id), note


def score_transfer(t: Transfer, *, seed: int = 0, calibrations: dict | None = None,
                   engine: bool = True) -> TransferFidelity:
    """Fit on ``t.fit`` (or reuse ``calibrations``, keyed by slice and seed) and score every part on ``t.score``."""
    from tradebook.sim.placements import typical_touch_size

    model, note = _carried_model(_calibration_for(t, calibrations, seed).model, t)
    figures: list[Figure] = []
    lines: list[str] = [note] if note else []
    tables: dict[str, pd.DataFrame] = {}
    not_applicable: dict[str, str] = {}
    # order sizes in the scored instrument's own touch, as seen in its data before the first order: the fit
    # slice's median touch when it is a slice of the same capture, else the first minute of the scored data (a
    # capture years apart has its own touch: BTCUSDT's median touch was 0.195 BTC in 2021, 1.39 in 2024)
    if t.kind != ACROSS:
        typical = float(typical_touch_size(t.fit.quotes))
    else:
        first = t.score.quotes[t.score.quotes["ts_ns"] < t.score.start_ns + 60 * _NS]
        typical = float(typical_touch_size(first))

    def part(name: str, score: Any, *args: Any) -> Any:
        # data too thin for one part (a handful of sweeps, no placement with a full horizon) is said, not fatal
        try:
            return score(*args)
        except DataError as exc:
            not_applicable[name] = f"the data cannot support it: {exc}"
            return None

    part("sweeps", score_sweeps, t, model, seed, figures, lines, tables, not_applicable)
    part("book walks", score_walks, t, model, typical, seed, figures, lines, tables, not_applicable)
    if engine:
        part("engine market orders", score_engine_marketable, t, model, typical, seed, figures, lines, tables,
             not_applicable)
    ref = part("passive", score_passive, t, model, seed, figures, lines, tables, not_applicable)
    if engine:
        part("engine resting orders", score_engine_resting, t, model, ref, seed, figures, lines, not_applicable)
    return TransferFidelity(t, tuple(figures), tuple(lines), not_applicable, tables)


def run_transfer_report(captures: list[Capture], *, seed: int = 0, across: bool = True, early_late: bool = True,
                        fit_fraction: float = 0.5, engine: bool = True, calibrations: dict | None = None,
                        progress: bool | None = None) -> list[TransferFidelity]:
    """Score every transfer of ``captures`` (:func:`transfers`); calibrations are fitted once per fit slice.

    ``calibrations``: a dict to reuse fitted slices across calls (keyed by instrument, slice
    and seed). ``engine=False`` skips the engine's replays (faster; model predictions only).
    """
    from tradebook.progress import track

    cache = {} if calibrations is None else calibrations
    chosen = transfers(captures, across=across, early_late=early_late, fit_fraction=fit_fraction)
    return [score_transfer(t, seed=seed, calibrations=cache, engine=engine)
            for t in track(chosen, total=len(chosen), desc="fidelity", unit="transfer", progress=progress)]


def format_transfer_report(results: list[TransferFidelity]) -> str:
    """The transfer report as text: per transfer, each figure with its band, then met / MISSED."""
    from tradebook.model.time import ns_to_iso

    lines = ["Fill-model fidelity on transfers (fit on one slice or capture, score on another); each figure "
             "with its 90% block-bootstrap band (blocks of a minute, shorter on short data); a target is MISSED "
             "when its whole band is on the wrong side", ""]
    for r in results:
        t = r.transfer
        lines.append(f"== {t.name}")
        lines.append(f"   fit   {ns_to_iso(t.fit.start_ns)} .. {ns_to_iso(t.fit.end_ns)}")
        lines.append(f"   score {ns_to_iso(t.score.start_ns)} .. {ns_to_iso(t.score.end_ns)} (bands: blocks of "
                     f"{block_ns_of(t) / _NS:.3g} s)")
        lines.extend(f"   {text}" for text in r.lines)
        lines.extend(f"   {f.line()}" for f in r.figures)
        lines.extend(f"   {name}: not scored ({why})" for name, why in r.not_applicable.items())
        lines.append("")
    missed = [(r.transfer.name, f) for r in results for f in r.missed]
    total = sum(len(r.targets) for r in results)
    if missed:
        lines.append(f"{len(missed)} of {total} target(s) MISSED:")
        lines.extend(f"  - {name}: {f.name} {_fmt(f.band.value)} [{_fmt(f.band.low)}, {_fmt(f.band.high)}] "
                     f"(target {f.rule} {f.threshold:g})" for name, f in missed)
    else:
        lines.append(f"All {total} targets met (each judged against its band).")
    return "\n".join(lines)


def run_fidelity_report(store: Any, instruments: list[str] | None = None, *, fit_fraction: float = 0.5,
                        seed: int = 0, across: bool = True, engine: bool = True,
                        progress: bool | None = None) -> list[TransferFidelity]:
    """The transfer report on the store's recordings (what ``tradebook fidelity`` prints).

    Every recording of the chosen instruments (all with quotes by default) is a capture;
    captures of one asset class are scored on each other (``across``), each is split
    half/half and early -> late.
    """
    return run_transfer_report(store_captures(store, instruments), seed=seed, across=across,
                               fit_fraction=fit_fraction, engine=engine, progress=progress)
