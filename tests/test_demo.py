"""Pieces of ``make demo`` that are not the whole run (the whole run is tests/test_cli.py's demo_store)."""

from __future__ import annotations

import pandas as pd

from tradebook.data import load_bundled
from tradebook.demo import fidelity_report_text, format_summary
from tradebook.research.synthetic import ingest_synthetic_quotes, quotes_around
from tradebook.model.instruments import get_instrument

FX = "dukascopy_EURUSD_20260713T12_ticks.csv.gz"


def test_fidelity_report_is_computed_once_per_content(store):
    store.ingest(load_bundled(FX))
    calls = []

    def compute() -> str:
        calls.append(1)
        return f"report #{len(calls)}"

    assert fidelity_report_text(store, compute) == "report #1"
    again = fidelity_report_text(store, compute)
    assert len(calls) == 1 and again.endswith("report #1") and "the same data and simulator" in again
    # synthetic quotes (built from bars) are not recorded data: the report stays the same
    spy = get_instrument("SPY.ARCX")
    ts = pd.Series([1_612_189_800_000_000_000, 1_612_213_199_000_000_000]).to_numpy()
    ingest_synthetic_quotes(store, {"SPY.ARCX": quotes_around(spy, ts, ts * 0 + 380.0, ts * 0 + 2.0, 500.0)},
                            label="test")
    assert fidelity_report_text(store, compute).endswith("report #1") and len(calls) == 1
    # new recorded data: computed again
    store.ingest(load_bundled("binance_spot_BTCUSDT_20210108T0000_l1_quotes.csv.gz"))
    assert fidelity_report_text(store, compute) == "report #2"


def test_summary_marks_synthetic_quotes(store):
    spy = get_instrument("SPY.ARCX")
    ts = pd.Series([1_612_189_800_000_000_000, 1_612_213_199_000_000_000]).to_numpy()
    ingest_synthetic_quotes(store, {"SPY.ARCX": quotes_around(spy, ts, ts * 0 + 380.0, ts * 0 + 2.0, 500.0)},
                            label="test")
    store.ingest(load_bundled(FX))
    summary = format_summary(store)
    spy_line = next(line for line in summary.splitlines() if line.strip().startswith("SPY.ARCX"))
    fx_line = next(line for line in summary.splitlines() if line.strip().startswith("EURUSD.DUKASCOPY"))
    assert "quotes (synthetic)" in spy_line and "synthetic" not in fx_line


def test_calibrations_are_fitted_once_per_content(store):
    from tradebook.demo import calibrations_for_content
    from tradebook.sim.fidelity import run_calibration

    store.ingest(load_bundled(FX))
    calls = []

    def compute():
        calls.append(1)
        return run_calibration(store)

    first = calibrations_for_content(store, compute)
    again = calibrations_for_content(store, compute)
    assert len(calls) == 1 and [r.calibration_id for r in again] == [r.calibration_id for r in first]
    assert [r.calibration_id for r in first] == ["EURUSD.DUKASCOPY@v1"]
    store.ingest(load_bundled("binance_spot_BTCUSDT_20210108T0000_l1_quotes.csv.gz"))  # new data: fitted again
    assert {r.calibration_id for r in calibrations_for_content(store, compute)} >= {"EURUSD.DUKASCOPY@v1"}
    assert len(calls) == 2
