"""The transfer report of issue 16: every transfer the bundled captures allow, the engine's fills, bands, verdicts."""

from __future__ import annotations

import numpy as np
import pytest

from tradebook.sim.placements import typical_touch_size
from tradebook.sim.transfer_report import format_transfer_report, run_transfer_report, score_transfer
from tradebook.sim.transfers import ACROSS, EARLY_LATE, HALF_HALF, bundled_captures, transfers

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


def test_engine_orders_across_captures_are_sized_in_the_scored_capture_s_own_touch(transfer_results, captures):
    """BTCUSDT's touch was 0.195 BTC in 2021 and 1.39 in 2024: orders scored on 2024 are 0.5-20x 2024's touch."""
    later = next(c for c in captures if c.label == "BTCUSDT.BINANCE 2024-08-08").data
    first_minute = later.quotes[later.quotes["ts_ns"] < later.start_ns + 60_000_000_000]
    own, earlier = typical_touch_size(first_minute), typical_touch_size(
        next(c for c in captures if c.label == "BTCUSDT.BINANCE 2021-01-08").data.quotes)
    assert own > 3 * earlier
    across = transfer_results[f"{ACROSS}: BTCUSDT.BINANCE 2021-01-08 -> BTCUSDT.BINANCE 2024-08-08"]
    (engine_line,) = [line for line in across.lines if line.startswith("engine: ")]
    assert f" x {own:g} on the L1 feed" in engine_line
    btc = "BTCUSDT.BINANCE 2024-08-08"
    within = transfer_results[f"{HALF_HALF}: {btc} 1st half -> {btc} 2nd half"]
    (engine_line,) = [line for line in within.lines if line.startswith("engine: ")]
    assert f" x {typical_touch_size(within.transfer.fit.quotes):g} on the L1 feed" in engine_line


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
# 2026-12-07 20:20 UTC: see the reason for what is missed and why. strict: the day every target is
# met this fails, and the mark must go.
_MISSED_TODAY = (
    "issue 16 Done-when 2 is MISSED by today's model on bundled data, 3 of 110 targets, all on one transfer "
    "for one reason (90% block-bootstrap bands, measured 2026-12-07 23:30 UTC): BTCUSDT 2021->2024, walks of "
    "0.5-20x the 2024 capture's own touch (1.39 BTC). Engine market orders on the L1 feed vs the true walk: "
    "1.16 [0.99, 1.31] x (b); the model's book walks: 1.000 x (b), closed coverage 0.235: the 2021 fit has no "
    "book, so the model prices walks at the touch and the engine walks the touch and waits for refills; the depth 2021's touch depletions "
    "imply would walk at 0.28x (b) here, but the fit's own check refutes it (2021 sweeps beyond the touch: MAE "
    "with it / touch alone 1.20 [1.002, 1.45], the whole band above 1; on sweeps at quotes < 10 ms old 1.44 vs "
    "0.94 bps), so keeping it would be chosen after seeing this transfer; on the other captures the check "
    "decides right (overridden, the depth BTCUSDT 2024's own L1 implies walks its books at 1.72x and 1.15x (b), "
    "the check refuting it; ESH4's at 0.15x, kept). (Met since session 8: the 2024->2021 sweep interval, 0.68 "
    "before, 0.91 [0.88, 0.94] once intervals widen by the mid's diffusion over a sampled feed's snapshot age; "
    "the 2021 early->late sweep MAE / (c), a 1.001 tie before, 0.585 [0.538, 0.623] once the quote a sweep "
    "meets is moved by the prints since it.)")


# The misses _MISSED_TODAY explains, by transfer and figure: any other miss fails the test below.
_ACROSS_BTC = f"{ACROSS}: BTCUSDT.BINANCE 2021-01-08 -> BTCUSDT.BINANCE 2024-08-08"
_KNOWN_MISSES = {
    (_ACROSS_BTC, "engine market orders (L1 feed) vs true walk: MAE engine / baseline (b)"),
    (_ACROSS_BTC, "book walks from L1: MAE model / baseline (b)"),
    (_ACROSS_BTC, "book walks: 90% interval coverage, closed"),
}


def test_no_bundled_target_is_missed_but_the_one_explained(transfer_results):
    missed = {(name, f.name) for name, r in transfer_results.items() for f in r.missed}
    unexplained = missed - _KNOWN_MISSES
    assert not unexplained, "\n".join(f"{name}: {figure}" for name, figure in sorted(unexplained))


@pytest.mark.xfail(strict=True, reason=_MISSED_TODAY)
def test_every_transfer_target_is_met_against_its_band(transfer_results):
    missed = [f"{name}: {f.line()}" for name, r in transfer_results.items() for f in r.missed]
    assert not missed, "\n".join(missed)
