"""The main job on the bundled data: load it into the workspace store, report what it holds,
calibrate the paper-fill simulator and show its fidelity on data it was not fitted on (transfers),
then the story of a strategy from research to paper to the promotion gate (:func:`run_story`).
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
        "kind": [(k if pd.isna(b) else f"{k} {_bar_label(int(b))}") + (" (synthetic)" if str(s).startswith("synthetic:")
                                                                         else "")
                 for k, b, s in zip(summary["kind"], summary["bar_ns"], summary["source"])],
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


def _content_key(store: Store) -> str:
    """What the calibrations and the fidelity report depend on: the recorded datasets and the simulator's code."""
    import tradebook

    datasets = store.datasets()
    recorded = datasets[~datasets["source"].str.startswith("synthetic:")]
    digest = hashlib.blake2b(digest_size=12)
    digest.update(str(sorted(zip(recorded["instrument_id"], recorded["kind"], recorded["content_hash"]))).encode())
    root = Path(tradebook.__file__).parent
    for package in ("sim", "data", "model", "store"):
        for source in sorted((root / package).glob("*.py")):
            digest.update(source.name.encode())
            digest.update(source.read_bytes())
    return digest.hexdigest()


def calibrations_for_content(store: Store, compute: Callable[[], list]) -> list:
    """The calibrations of the store's recorded data, fitted once per content (the ids are kept in
    ``<store>.cache/calibrations-<key>.txt``): a demo run again on the same data and code does not refit
    (a refit of unchanged data would store nothing new anyway, :func:`~tradebook.sim.fidelity.run_calibration`)."""
    path = Path(f"{store.path}.cache") / f"calibrations-{_content_key(store)}.txt"
    if path.is_file():
        ids = path.read_text(encoding="utf-8").split()
        known = set(store.calibrations()["calibration_id"])
        if ids and all(i in known for i in ids):
            return [store.calibration(i) for i in ids]
    records = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    for old in path.parent.glob("calibrations-*.txt"):
        old.unlink()
    path.write_text("\n".join(r.calibration_id for r in records), encoding="utf-8")
    return records


def fidelity_report_text(store: Store, compute: Callable[[], str]) -> str:
    """The fidelity report's text, computed once per content: the recorded datasets and the simulator's code
    (``<store>.cache/fidelity-<key>.txt``); a demo run again on the same content reuses it."""
    path = Path(f"{store.path}.cache") / f"fidelity-{_content_key(store)}.txt"
    if path.is_file():
        return "(the same data and simulator as the last run: its report, from " + str(path) + ")\n" + \
            path.read_text(encoding="utf-8")
    text = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    for old in path.parent.glob("fidelity-*.txt"):
        old.unlink()
    path.write_text(text, encoding="utf-8")
    return text


def _bar_label(bar_ns: int) -> str:
    seconds = bar_ns // 1_000_000_000
    return {86_400: "1d", 60: "1m", 1: "1s"}.get(seconds, f"{seconds}s")


def run_demo(store_path: str | Path | None = None, data_dir: Path | None = None,
             out: Callable[[str], None] = print, *, story: bool = True, serve: bool = False) -> None:
    """``make demo``: load the bundled data, calibrate the simulator on it and show its fidelity on transfers,
    then (``story``) research a strategy, paper-trade the held-back sessions and print the gate's decision
    (:func:`run_story`) and write the promotion report; ``serve``: then serve the dashboard over the store
    on 127.0.0.1 and print its URL, until Ctrl-C (``tradebook demo`` does; ``--no-serve`` skips it).

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
        records = calibrations_for_content(store, lambda: run_calibration(store))
        out("stored: " + ", ".join(r.calibration_id for r in records) + "  (see `tradebook calibrate`)\n")
        out("Scoring the fill model on data it was not fitted on: halves and later hours of each capture, and "
            "other captures of the same asset class (the engine's own fills included; `tradebook fidelity`) ...\n")
        out(fidelity_report_text(store, lambda: format_transfer_report(run_fidelity_report(store))))
        story = run_story(store, out) if story else None
        path = store.path
    if story is not None and story.decision is not None:
        # after the store is closed: the report's notebook opens it in its own process
        from tradebook.reports import known_reports, report_parameters, run_report

        if "promotion" not in known_reports():
            out("\n(the promotion report notebook is not in this checkout yet; no report written)")
        else:
            out("\nWriting the promotion report (papermill, HTML) ...")
            wanted = {"strategy": story.strategy, "backtest_id": story.backtest_id, "account_id": story.account_id,
                      "decision_id": getattr(story.decision, "decision_id", None), "save": False}
            declared = report_parameters("promotion")
            report = run_report("promotion", {k: v for k, v in wanted.items() if k in declared and v is not None},
                                store_path=path)
            out(f"Report: {report.html_path}")
    if serve:
        _serve_dashboard(path, out)


def _serve_dashboard(store_path: Path, out: Callable[[str], None]) -> None:
    """The dashboard over the demo's store (closed: read-only), until Ctrl-C."""
    from tradebook.monitor.server import serve_until_interrupted
    from tradebook.monitor.source import StoreSource

    out("\nServing the dashboard over the demo's store (its paper run's orders, fills and positions) ...")
    serve_until_interrupted(StoreSource(store_path), out=out)


# -- the story: research -> paper -> the promotion gate (issue 17) ---------------------------------------
STORY_INSTRUMENTS = ("SPY.ARCX", "QQQ.XNAS", "IWM.ARCX", "AAPL.XNAS", "IBM.XNYS", "BAC.XNYS")
RESEARCH_END = "2021-01-29"  # the last research bar; the sessions after it are held back for paper
PAPER_PERIOD = ("2021-02-01", "2021-03-31")  # 41 XNYS sessions, the end of the bundled daily bars
STORY_GRID = {"lookback": [10, 20, 40], "entry": [0.75, 1.0, 1.5]}
STORY_WINDOW = 120  # trailing bars a session hands the strategy (the trailing check confirms it)


@dataclass
class StoryOutcome:
    """What the story leaves for the report: the strategy, its backtest and the gate's decision."""

    strategy: str
    backtest_id: str
    run: str
    account_id: str
    decision: object = None


def run_story(store: Store, out: Callable[[str], None] = print) -> StoryOutcome:
    """Research MeanReversion on the older daily history, paper-trade the held-back sessions, ask the gate.

    Every step goes through the package: the lookahead and trailing-window checks, a sweep
    that stores every trial (with its deflated Sharpe ratio and probability of backtest
    overfitting), the chosen backtest with the calibrated costs and the ranges of its
    30-day metrics, a paper replay of the held-back sessions through the real order path
    on quotes built from the bars (labelled synthetic), the gate's review with its
    evidence, and the backtest-vs-paper difference under the calibrated model. A step whose
    module is not in this checkout yet is named as skipped, and the story goes on without it.
    """
    from tradebook.research.bars import Bars
    from tradebook.research.causality import check_lookahead, check_trailing_window
    from tradebook.research.costs import CostModel
    from tradebook.research.examples import MeanReversion
    from tradebook.research.runner import paper_replay

    equity_model = store.calibration("IBM.XNYS").calibration_id
    bars = Bars.from_store(store, STORY_INSTRUMENTS)
    research = bars.until(pd.Timestamp(RESEARCH_END, tz="America/New_York").value + 86_400 * 10**9)
    out(f"\n== Research: MeanReversion on {len(research):,} daily bars of {', '.join(STORY_INSTRUMENTS)} "
        f"({research.index[0].date()} .. {research.index[-1].date()}); {PAPER_PERIOD[0]} .. {PAPER_PERIOD[1]} "
        "held back for paper")
    costs = CostModel.from_store(store, {i: equity_model for i in STORY_INSTRUMENTS})
    out(f"Costs: the calibrated equity fill model {equity_model}, applied to each instrument "
        "(spread by time of day and volatility, cost by size over the touch)")
    base = MeanReversion(window=STORY_WINDOW)
    lookahead = check_lookahead(base, research)
    trailing = check_trailing_window(base, research)
    out(f"Lookahead check: passed ({_describe(lookahead)}); trailing window: {trailing.window} bars suffice "
        f"({'ok' if trailing.ok else 'NOT ok'})")

    best, backtest_id, strategy = None, "", base
    sweep_module = _part("tradebook.research.sweep", "sweeps and backtests", out)
    if sweep_module is not None:
        result = sweep_module.sweep(base, STORY_GRID, research, costs=costs, store=store)
        trials = result.trials
        out(f"\nSweep: {result.n_trials} trials stored (every one, not only the best)")
        shown = [c for c in ("lookback", "entry", "total_return", "sharpe", "max_drawdown", "win_rate", "n_trades",
                             "avg_cost_bps") if c in trials.columns]
        if shown:
            table = trials[shown].copy()
            for column in ("lookback", "n_trades"):
                if column in table:
                    table[column] = table[column].round().astype("int64")
            out(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        best = result.best
        out(f"Chosen: {best.params}; deflated Sharpe ratio {_number(result.dsr)} given all {result.n_trials} "
            f"trials; probability of backtest overfitting {_number(result.pbo)}")
        backtest_id = best.save(store)
        out("\nBacktest with calibrated costs (" + backtest_id + "):")
        out("  " + _metrics_line(best.metrics))
        sizing = best.sizing
        out(f"  sizing: Half-Kelly {sizing.fraction:.2%} of equity per unit of target (win rate {sizing.win_rate:.1%}, "
            f"average win {sizing.avg_win:.2%}, average loss {sizing.avg_loss:.2%} over {sizing.n_trades:,} round "
            f"trips; cap {sizing.cap:.0%}), the same rule in the paper session")
        strategy = base.with_params(**best.params)
        ranges_module = _part("tradebook.research.ranges", "ranges of 30-day metrics", out)
        if ranges_module is not None:
            ranges = ranges_module.metric_ranges(best)
            ranges.save(store, backtest_id)
            out("\nRanges of 30-trading-day metrics (rolling windows and stationary bootstrap):")
            out(ranges.table.to_string(float_format=lambda v: f"{v:.4g}"))

    out(f"\n== Paper: {strategy.name} {strategy.params} on {PAPER_PERIOD[0]} .. {PAPER_PERIOD[1]}, quotes built from "
        "the daily bars with the calibrated spreads (labelled synthetic), through tb.Session and the paper venue ...")
    paper = paper_replay(store, strategy, bars, start=PAPER_PERIOD[0], end=PAPER_PERIOD[1], costs=costs, backtest=best)
    out(f"{paper.trading_days} trading days replayed in {paper.seconds:.1f} s (run {paper.run!r}): "
        f"{len(paper.orders)} orders, {len(paper.fills)} fills; fill models {', '.join(paper.calibrations)}")
    outcome = StoryOutcome(strategy.name, backtest_id, paper.run, paper.account_id)
    if best is None:
        return outcome

    out("\n== Backtest vs paper over the same sessions, under the calibrated model:")
    out(format_comparison(compare_with_backtest(strategy, bars, costs, best, paper)))
    out("(the backtest runs on from its 1998 start with its own equity, the paper run from $100,000 on "
        f"{PAPER_PERIOD[0]}: sizes differ with equity, so the re-sizing orders (a held position re-sized once it drifts "
        "25% from its wanted size) can too; with zero costs "
        "and the same start both make the same trades, tests/research/test_equivalence.py)")

    promotion = _part("tradebook.promotion", "the promotion gate", out)
    if promotion is not None and hasattr(promotion, "review"):
        decision = promotion.review(store, strategy.name, backtest_id=backtest_id, costs=costs,
                                    account_id=paper.account_id)
        out("\n== The promotion gate: " + str(decision.decision))
        out(f"codes: {', '.join(str(c) for c in decision.codes)}")
        out(decision.summary)
        checks = decision.checks
        if checks is not None and len(checks):
            out("\nThe evidence, each check against the backtest's 30-day paths (fails on its bad side only):")
            out(format_checks(checks))
        outcome.decision = decision
    return outcome


def _part(module: str, what: str, out: Callable[[str], None]):
    """The module of a later part of the story, or None (said so) when this checkout does not have it yet."""
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is None or not module.startswith(exc.name):
            raise  # a dependency of the module is missing: that is an error, not a part still to come
        out(f"\n({what}: {module} is not in this checkout yet; skipped)")
        return None


def compare_with_backtest(strategy, bars, costs, research_backtest, paper) -> pd.DataFrame:
    """The backtest of ``strategy`` through the paper period (same sizing, calibrated costs) next to the paper
    run, over the paper sessions: orders by day and side, return, turnover and cost per fill."""
    from tradebook.research.backtest import backtest

    full = backtest(strategy, bars, costs=costs, sizing=research_backtest.sizing)
    first, last = paper.start_ns, paper.end_ns + 1
    bt_fills = full.fills[(full.fills["ts_ns"] >= first) & (full.fills["ts_ns"] <= last)]
    day = lambda ts: pd.to_datetime(ts.astype("int64"), unit="ns", utc=True).dt.tz_convert("America/New_York").dt.date
    bt_keys = set(zip(day(bt_fills["ts_ns"]), bt_fills["instrument_id"], bt_fills["side"].astype(str)))
    pf = paper.fills
    paper_keys = set(zip(day(pf["ts_event_ns"]), pf["instrument_id"], pf["side"].astype(str)))
    equity = full.equity[(full.equity.index.asi8 >= first - 86_400 * 10**9) & (full.equity.index.asi8 <= last)]
    bt_return = float(equity.iloc[-1] / equity.iloc[0] - 1) if len(equity) > 1 else float("nan")
    paper_equity = paper.equity["equity"]
    paper_return = float(paper_equity.iloc[-1] / paper_equity.iloc[0] - 1)
    bt_cost = float(bt_fills["cost_bps"].mean()) if len(bt_fills) else float("nan")
    paper_cost = float(_paper_cost_bps(paper).mean()) if len(pf) else float("nan")
    rows = [
        ("orders (instrument, day, side)", len(bt_keys), len(paper_keys)),
        ("  of which in both", len(bt_keys & paper_keys), len(bt_keys & paper_keys)),
        ("fills", len(bt_fills), len(pf)),
        ("return over the period", bt_return, paper_return),
        ("mean cost per fill, bps of the mid", bt_cost, paper_cost),
    ]
    frame = pd.DataFrame(rows, columns=["", "backtest", "paper"]).set_index("")
    frame["paper - backtest"] = frame["paper"] - frame["backtest"]
    return frame


def _paper_cost_bps(paper) -> pd.Series:
    """Each paper fill's cost against the mid of the quote in force (positive: paid)."""
    quotes = pd.concat([q.assign(instrument_id=i) for i, q in paper.quotes.items()]).sort_values("ts_ns")
    quotes["mid"] = (quotes["bid_px"] + quotes["ask_px"]) / 2
    fills = paper.fills.assign(ts=paper.fills["ts_event_ns"].astype("int64")).sort_values("ts")
    merged = pd.merge_asof(fills, quotes[["ts_ns", "instrument_id", "mid"]], left_on="ts", right_on="ts_ns",
                           by="instrument_id")
    sign = merged["side"].astype(str).map({"buy": 1.0, "sell": -1.0})
    return sign * (merged["price"].astype(float) - merged["mid"]) / merged["mid"] * 1e4


def format_comparison(frame: pd.DataFrame) -> str:
    def cell(name, value):
        if "return" in name:
            return f"{value:+.2%}"
        if "bps" in name:
            return f"{value:.2f}"
        return f"{value:+.0f}" if isinstance(value, float) and name.startswith("paper -") else f"{value:.0f}"
    lines = [f"{'':36} {'backtest':>12} {'paper':>12} {'paper - backtest':>17}"]
    for name, row in frame.iterrows():
        values = [row["backtest"], row["paper"], row["paper - backtest"]]
        lines.append(f"{name:36} " + " ".join(f"{cell(name if i < 2 else 'paper - ' + name, v):>{w}}"
                                              for i, (v, w) in enumerate(zip(values, (12, 12, 17)))))
    return "\n".join(lines)


def format_checks(checks: pd.DataFrame) -> str:
    """The gate's checks as a narrow table: value, the band of the backtest's paths, when it fails, verdict."""
    rows = []
    for row in checks.itertuples(index=False):
        below, above = getattr(row, "fail_below", float("nan")), getattr(row, "fail_above", float("nan"))
        fails = " or ".join(part for part in (f"< {below:.4g}" if pd.notna(below) else "",
                                              f"> {above:.4g}" if pd.notna(above) else "") if part)
        band = (f"{row.band_p05:.4g} .. {row.band_p95:.4g}" if hasattr(row, "band_p05") and pd.notna(row.band_p05)
                else "")
        judged = getattr(row, "judged", True)
        verdict = "pass" if row.passed else "FAIL"
        rows.append((row.metric, f"{row.value:.4g}", str(row.side), band, fails or "-",
                     verdict if judged else "not judged"))
    frame = pd.DataFrame(rows, columns=["check", "paper", "bad side", "backtest 5-95%", "fails when", "verdict"])
    return frame.to_string(index=False)


def _metrics_line(metrics: dict) -> str:
    percent = {"total_return", "cagr", "max_drawdown", "win_rate"}
    parts = []
    for name, value in metrics.items():
        if name in ("sharpe_per_period", "n_days", "starting_equity"):
            continue
        if isinstance(value, float) and name in percent:
            parts.append(f"{name} {value:.2%}")
        elif isinstance(value, float) and name.startswith("n_"):
            parts.append(f"{name} {value:,.0f}")
        else:
            parts.append(f"{name} {_fmt(value)}")
    return ", ".join(parts)


def _describe(report) -> str:
    cuts = getattr(report, "n_cuts", None) or getattr(report, "cuts", None)
    if cuts is None:
        return "signals equal on history cut at random points and just before the end"
    count = cuts if isinstance(cuts, int) else len(cuts)
    return f"signals on history cut at {count} points equal the full run's"


def _number(value) -> str:
    for name in ("dsr", "pbo", "value"):
        if hasattr(value, name):
            value = getattr(value, name)
            break
    try:
        return f"{float(value):.3f}"
    except (TypeError, ValueError):
        return str(value)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
