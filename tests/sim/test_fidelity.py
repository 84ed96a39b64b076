"""The calibration front door: held-out targets on every bundled instrument, storage, bad input.

The transfer report of issue 16 is tested in test_transfer_report.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tradebook.data import load_bundled
from tradebook.errors import DataError, UnknownInstrumentError
from tradebook.sim.fidelity import (
    CALIBRATABLE,
    bundled_instrument_data,
    calibrate_instrument,
    fidelity,
    format_fidelity,
    load_model,
    run_calibration,
    run_fidelity,
)
from tradebook.sim.fill_model import FillModel
from tradebook.store import Store

SMALL = ("cme_ESU4_mbp1_20240701T2358-20240702T0002.csv.gz", "cme_ESU4_trades_20240701T2358-20240702T0002.csv.gz")


@pytest.fixture(scope="module")
def results():
    out = {}
    for instrument_id in CALIBRATABLE:
        fit, held_out = bundled_instrument_data(instrument_id).split(0.5)
        out[instrument_id] = fidelity(fit, held_out)
    return out


@pytest.mark.parametrize("instrument_id", CALIBRATABLE)
def test_every_target_is_met_on_held_out_data(results, instrument_id):
    result = results[instrument_id]
    report = format_fidelity([result])
    print(report)
    assert result.targets, "an instrument with quotes is scored on at least the passive target"
    missed = [t for t in result.targets if not t.met]
    assert not missed, report
    assert result.fit_range[1] < result.eval_range[0]  # the model never saw the scored data


def test_report_covers_what_each_dataset_supports(results):
    def names(instrument_id):
        return {t.name.split(":")[0] for t in results[instrument_id].targets}

    assert names("BTCUSDT.BINANCE") == names("ESH4.GLBX") == {"sweeps", "book walks", "passive"}
    assert names("IBM.XNYS") == names("ESU4.GLBX") == {"sweeps", "passive"}
    fx = results["EURUSD.DUKASCOPY"]
    assert names("EURUSD.DUKASCOPY") == {"passive"}
    assert set(fx.not_applicable) == {"marketable vs real sweeps", "book walks"}
    ibm = results["IBM.XNYS"].marketable  # US equities: a large share prints inside the spread
    assert 0.15 < ibm.inside_spread_share_real < 0.4 and 0.15 < ibm.inside_spread_share_predicted < 0.4
    assert results["ESH4.GLBX"].marketable.inside_spread_share_real < 0.01  # ES: no hidden liquidity to speak of


def test_a_missed_target_is_said_plainly(results):
    import dataclasses

    result = results["ESU4.GLBX"]
    broken = dataclasses.replace(result, targets=(dataclasses.replace(result.targets[0], met=False),
                                                 *result.targets[1:]))
    text = format_fidelity([broken])
    assert "[MISSED]" in text and "1 target(s) MISSED" in text and "- ESU4.GLBX: sweeps:" in text


@pytest.fixture
def small_store(tmp_path):
    with Store(tmp_path / "s.duckdb") as store:
        for name in SMALL:
            store.ingest(load_bundled(name))
        yield store


def test_stored_calibration_round_trips_every_component(small_store):
    (record,) = run_calibration(small_store)
    assert record.calibration_id == "ESU4.GLBX@v1"
    model = load_model(small_store, "ESU4.GLBX@v1")
    assert model.to_json() == record.params
    assert model.passive is not None and model.spread_profile is not None and model.completion is not None
    assert FillModel.from_json(model.to_json()) == model
    assert record.diagnostics["sweeps"] > 50 and record.diagnostics["passive_rows"] > 1000
    # same data again: no new version; a different seed fits other random samples: a new version
    assert run_calibration(small_store)[0].calibration_id == "ESU4.GLBX@v1"
    assert run_calibration(small_store, seed=1)[0].calibration_id == "ESU4.GLBX@v2"


def test_fit_on_one_instrument_score_on_another(small_store):
    es = load_bundled("cme_ESH4_book5_from_mbo_20231225.csv.gz")
    small_store.ingest(es)
    small_store.ingest(load_bundled("cme_ESH4_trades_from_mbo_20231225.csv.gz"))
    (result,) = run_fidelity(small_store, ["ESH4.GLBX"], eval_instrument="ESU4.GLBX")
    assert result.instrument_id == "ESU4.GLBX" and result.fit_instrument_id == "ESH4.GLBX"
    assert "(model fitted on ESH4.GLBX)" in format_fidelity([result])
    with pytest.raises(DataError, match="exactly one instrument to fit on"):
        run_fidelity(small_store, None, eval_instrument="ESU4.GLBX")


def _quotes_csv(rows: list[tuple]) -> str:
    lines = ["ts_ns,bid_px,ask_px,bid_sz,ask_sz"]
    lines += [",".join(str(v) for v in row) for row in rows]
    return "\n".join(lines) + "\n"


def test_crossed_only_or_missing_quotes_are_refused(tmp_path, write_csv):
    from tradebook.data import load_quotes

    start = 1_720_000_000_000_000_000
    crossed = write_csv("crossed.csv", _quotes_csv([(start + i, 100.01, 100.0, 1, 1) for i in range(50)]))
    with Store(tmp_path / "c.duckdb") as store:
        store.ingest(load_quotes(crossed, "BTCUSDT.BINANCE"))
        before = store.calibrations()
        with pytest.raises(DataError, match="no valid quote .* cannot calibrate on crossed or empty quotes"):
            run_calibration(store, ["BTCUSDT.BINANCE"])
        assert store.calibrations().equals(before)  # nothing stored
        with pytest.raises(DataError, match="holds no quotes for it"):
            run_calibration(store, ["IBM.XNYS"])
        with pytest.raises(UnknownInstrumentError, match="NOPE"):
            run_calibration(store, ["NOPE.X"])


def test_split_and_slices_refuse_nonsense():
    data = bundled_instrument_data("ESU4.GLBX")
    for fraction in (0.0, 1.0, float("nan"), -0.5):
        with pytest.raises(DataError, match="fit_fraction"):
            data.split(fraction)
    with pytest.raises(DataError, match="no quotes between"):
        data.between(0, 10)
    with pytest.raises(UnknownInstrumentError):
        bundled_instrument_data("NOPE.X")
    with pytest.raises(DataError, match="no bundled data for SPY.ARCX"):
        bundled_instrument_data("SPY.ARCX")


def test_diagnostics_are_json(small_store):
    calibration = calibrate_instrument(bundled_instrument_data("ESU4.GLBX"))
    json.dumps(calibration.diagnostics)
    assert np.isfinite(calibration.model.max_take_over_touch)
