"""The calibration front door: held-out targets on every bundled instrument, the transfer report, storage, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tradebook.data import load_bundled
from tradebook.errors import DataError, UnknownInstrumentError
from tradebook.sim.fidelity import (
    ACROSS,
    CALIBRATABLE,
    EARLY_LATE,
    HALF_HALF,
    bundled_captures,
    bundled_instrument_data,
    calibrate_instrument,
    fidelity,
    format_fidelity,
    format_transfer_report,
    load_model,
    run_calibration,
    run_fidelity,
    run_transfer_report,
    score_transfer,
    transfers,
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


# -- the transfer report (issue 16) -------------------------------------------------------------
_CALIBRATIONS: dict = {}  # fitted slices, shared by every test of this session


@pytest.fixture(scope="module")
def captures():
    return bundled_captures()


@pytest.fixture(scope="module")
def transfer_results(captures):
    results = run_transfer_report(captures, calibrations=_CALIBRATIONS, progress=False)
    print(format_transfer_report(results))
    return {r.transfer.name: r for r in results}


def test_transfers_cover_every_pair_of_captures_of_a_class(captures):
    labels = [c.label for c in captures]
    assert labels == ["BTCUSDT.BINANCE 2021-01-08", "BTCUSDT.BINANCE 2024-08-08", "IBM.XNYS 2013-10-07",
                      "ESH4.GLBX 2023-12-25", "ESU4.GLBX 2024-07-01", "EURUSD.DUKASCOPY 2026-07-13"]
    chosen = transfers(captures)
    across = {(t.fit_label, t.score_label) for t in chosen if t.kind == ACROSS}
    assert across == {("BTCUSDT.BINANCE 2021-01-08", "BTCUSDT.BINANCE 2024-08-08"),
                      ("BTCUSDT.BINANCE 2024-08-08", "BTCUSDT.BINANCE 2021-01-08"),
                      ("ESH4.GLBX 2023-12-25", "ESU4.GLBX 2024-07-01"),
                      ("ESU4.GLBX 2024-07-01", "ESH4.GLBX 2023-12-25")}
    for kind in (HALF_HALF, EARLY_LATE):
        assert sum(t.kind == kind for t in chosen) == len(captures)
    for t in chosen:
        if t.kind != ACROSS:  # the model never sees the data it is scored on
            assert t.fit.end_ns < t.score.start_ns


def test_report_scores_the_engine_and_gives_every_figure_a_band(transfer_results):
    es = transfer_results[f"{HALF_HALF}: ESH4.GLBX 2023-12-25 1st half -> ESH4.GLBX 2023-12-25 2nd half"]
    names = {f.name for f in es.figures}
    assert {"book walks from L1: MAE model / baseline (b)", "sweeps: MAE model / reference (c)",
            "engine market orders (L1 feed) vs true walk: MAE engine / baseline (b)",
            "engine resting orders vs queue rule: Brier engine / reference (c)",
            "passive ex ante: Brier model / reference (c)"} <= names
    assert set(es.tables) >= {"walks_by_size", "sweeps_by_size", "engine_by_size", "passive_reliability"}
    walks = es.tables["walks_by_size"]
    assert walks["size_over_touch"].min() == 0.5 and walks["size_over_touch"].max() == 20.0
    # a bigger order walks deeper: real and predicted costs grow with size
    assert walks["real_mean_bps"].is_monotonic_increasing and walks["model_median_bps"].iloc[-1] > walks[
        "model_median_bps"].iloc[0]
    for r in transfer_results.values():
        for f in r.figures:
            b = f.band
            assert b.n > 0 and b.blocks >= 1 and (b.low <= b.value <= b.high or not np.isfinite(b.value)), f.line()
    fx = transfer_results[f"{HALF_HALF}: EURUSD.DUKASCOPY 2026-07-13 1st half -> EURUSD.DUKASCOPY 2026-07-13 2nd half"]
    assert {"sweeps", "book walks", "engine market orders", "engine resting orders"} <= set(fx.not_applicable)
    carried = transfer_results[f"{ACROSS}: ESH4.GLBX 2023-12-25 -> ESU4.GLBX 2024-07-01"]
    assert "model fitted on ESH4.GLBX, applied to ESU4.GLBX" in carried.lines[0]


def test_transfer_report_prints_bands_and_verdicts(transfer_results):
    text = format_transfer_report(list(transfer_results.values()))
    assert "block-bootstrap band" in text and "== capture -> capture: BTCUSDT.BINANCE 2024-08-08 -> " in text
    assert "] (" in text and "blocks)" in text
    missed = [f for r in transfer_results.values() for f in r.missed]
    if missed:
        assert f"{len(missed)} of " in text and "[MISSED]" in text
    else:
        assert "targets met (each judged against its band)" in text


def test_same_seed_same_scores(transfer_results, captures):
    es = [c for c in captures if c.label.startswith("ESU4")]
    (t,) = [t for t in transfers(es, across=False, early_late=False)]
    again = score_transfer(t, calibrations=_CALIBRATIONS)
    first = transfer_results[t.name]
    assert [(f.name, f.band) for f in again.figures] == [(f.name, f.band) for f in first.figures]


def test_transfer_figures_and_tables(transfer_results):
    from tradebook.sim.plots import (
        styled_transfer_targets,
        transfer_layout,
        transfer_summary_table,
        transfer_targets_table,
    )

    results = list(transfer_results.values())
    layout = transfer_layout(results)
    titles = [panel.opts.get().kwargs.get("title", "") for panel in layout]
    assert any("ESH4.GLBX 2023-12-25 1st half" in t and "true book walks" in t for t in titles)
    assert any(t.startswith("capture -> capture: ESU4.GLBX") for t in titles)
    summary = transfer_summary_table(results)
    assert len(summary) == len(results)
    table = transfer_targets_table(results)
    assert set(table["verdict"]) <= {"met", "MISSED", "info"}
    assert (table["verdict"] == "MISSED").sum() == sum(len(r.missed) for r in results)
    html = styled_transfer_targets(results, targets_only=True).to_html()
    assert "info" not in set(transfer_targets_table(results).query("verdict != 'info'")["verdict"])
    assert ("#fde2e1" in html) == any(r.missed for r in results)


# Measured with today's model (engine walking depth, units that carry) on the bundled captures,
# 2026-12-07: see the reason for what is missed. strict: the day every target is met this fails,
# and the mark must go.
_MISSED_TODAY = (
    "issue 16 Done-when 2 is MISSED by today's model on bundled data, 3 of 107 targets (90% block-bootstrap "
    "bands, measured 2026-12-07 17:30 UTC): sweep MAE (median at the touch, the fitted one kept only where it "
    "beats the touch on held-back fit sweeps; a (c)-form median regression does not beat it there either) worse "
    "than reference (c) on BTCUSDT 2021 early->late by 0.1% (1.001 [1.000, 1.002]); sweep 90% interval covers "
    "0.68 [0.64, 0.72] closed on BTCUSDT 2024->2021 (24% of the 2021 sweeps print above the 2024 interval, even "
    "touch-sized ones: trades beyond a stale quote, which the 2024 capture never shows); the engine's market "
    "orders on the L1 feed vs the true walk 1.19 [0.98, 1.47] x (b) on BTCUSDT 2021->2024 (the 2021 fit has no "
    "book, and the depth its touch reveals prices its own sweeps beyond the touch worse than the touch alone, "
    "so it is not kept)")


@pytest.mark.xfail(strict=True, reason=_MISSED_TODAY)
def test_every_transfer_target_is_met_against_its_band(transfer_results):
    missed = [f"{name}: {f.line()}" for name, r in transfer_results.items() for f in r.missed]
    assert not missed, "\n".join(missed)
