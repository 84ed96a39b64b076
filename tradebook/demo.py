"""The main job on the bundled data: load it into the workspace store, report what it holds,
calibrate the paper-fill simulator and show its fidelity on data it was not fitted on (transfers).

Later stages (paper trading, promotion, dashboard) hang off this job.
Re-running reuses the store: files already stored (same content) are not loaded again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tradebook.data.catalog import BUNDLED_FILES, BundledFile, bundled_data_dir, load_bundled
from tradebook.store.store import Store


@dataclass(frozen=True)
class LoadOutcome:
    entry: BundledFile
    dataset_id: int
    rows: int
    created: bool


def load_bundled_into(store: Store, data_dir: Path | None = None,
                      progress: Callable[[str], None] | None = None, *,
                      progress_bar: bool | None = None) -> list[LoadOutcome]:
    """Load every bundled file into ``store``; files already there are skipped without parsing.

    ``progress`` receives a line per file loaded (the CLI prints them); ``progress_bar``
    shows a bar over the files (None: only when a person watches and no ``progress``
    lines are printed, see :mod:`tradebook.progress`).
    """
    from tradebook.progress import track

    root = data_dir or bundled_data_dir()
    store.register_instruments()
    outcomes = []
    bar = progress_bar if progress_bar is not None else (False if progress is not None else None)
    for entry in track(BUNDLED_FILES, total=len(BUNDLED_FILES), desc="loading", unit="file", progress=bar):
        digest = hashlib.sha256((root / entry.path).read_bytes()).hexdigest()
        known = store.query(
            "SELECT dataset_id, row_count FROM datasets WHERE instrument_id = ? AND kind = ? AND content_hash = ?",
            [entry.instrument_id, str(entry.kind), digest],
        )
        if len(known):
            outcomes.append(LoadOutcome(entry, int(known["dataset_id"].iloc[0]), int(known["row_count"].iloc[0]),
                                        created=False))
            continue
        result = store.ingest(load_bundled(entry, root))
        outcomes.append(LoadOutcome(entry, result.dataset_id, result.rows, result.created))
        if progress:
            progress(f"  loaded {entry.path} ({result.rows:,} rows of {entry.kind} for {entry.instrument_id})")
    return outcomes


def format_summary(store: Store) -> str:
    """A plain-text report of what the store holds: per instrument and kind, ranges, rows and findings."""
    summary = store.summary()
    if summary.empty:
        return f"{store.path}: empty store (schema v{store.schema_version})"
    lines = [f"Store {store.path} (schema v{store.schema_version}): {len(summary)} datasets, "
             f"{int(summary['row_count'].sum()):,} rows, {summary['instrument_id'].nunique()} instruments", ""]
    # the label a read takes (store.quotes(id, recording=...)) when an instrument has several
    recording_of = {int(i): r["recording"] for _, r in store.recordings().iterrows()
                    for i in str(r["dataset_ids"]).split(", ")}
    table = pd.DataFrame({
        "instrument": summary["instrument_id"],
        "recording": [recording_of.get(int(i), "") for i in summary["dataset_id"]],
        "class": summary["asset_class"],
        "kind": [k if pd.isna(b) else f"{k} {_bar_label(int(b))}" for k, b in zip(summary["kind"], summary["bar_ns"])],
        "rows": summary["row_count"].map("{:,}".format),
        "first (UTC)": [v[:23] for v in summary["first"]],
        "last (UTC)": [v[:23] for v in summary["last"]],
        "warnings": summary["warning_codes"].fillna(""),
    })
    lines.append(table.to_string(index=False))
    findings = store.query(
        "SELECT d.source, q.code, q.message FROM data_quality q JOIN datasets d USING (dataset_id) "
        "WHERE q.severity = 'warning' ORDER BY d.instrument_id, d.source, q.code"
    )
    if len(findings):
        lines += ["", "Data-quality warnings (data loaded unchanged; see store.findings()):"]
        for source, code, message in findings.itertuples(index=False):
            lines.append(f"  {source}: {code}: {message}")
    return "\n".join(lines)


def _bar_label(bar_ns: int) -> str:
    seconds = bar_ns // 1_000_000_000
    return {86_400: "1d", 60: "1m", 1: "1s"}.get(seconds, f"{seconds}s")


def run_demo(store_path: str | Path | None = None, data_dir: Path | None = None,
             out: Callable[[str], None] = print) -> None:
    """``make demo``: load the bundled data, calibrate the simulator on it and show its fidelity on transfers.

    Re-running reuses the store: files already stored are not loaded again, and a
    calibration on unchanged data is not stored again.
    """
    from tradebook.sim.fidelity import format_transfer_report, run_calibration, run_fidelity_report

    with Store(store_path, purpose="the demo (loading the bundled data and calibrating)") as store:
        out(f"tradebook demo: loading the bundled data into {store.path}")
        outcomes = load_bundled_into(store, data_dir, progress=out)
        new = sum(o.created for o in outcomes)
        out(f"{new} file(s) loaded, {len(outcomes) - new} already in the store\n")
        out(format_summary(store))
        out("\nCalibrating the paper-fill simulator on every instrument with quotes ...")
        records = run_calibration(store)
        out("stored: " + ", ".join(r.calibration_id for r in records) + "  (see `tradebook calibrate`)\n")
        out("Scoring the fill model on data it was not fitted on: halves and later hours of each capture, and "
            "other captures of the same asset class (the engine's own fills included; `tradebook fidelity`) ...\n")
        out(format_transfer_report(run_fidelity_report(store)))
