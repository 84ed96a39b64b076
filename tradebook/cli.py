"""The ``tradebook`` command. Every subcommand calls into the package; errors print as one line.

Every subcommand reads the configuration first (``--config FILE``, before or after the
subcommand; else ``$TRADEBOOK_CONFIG`` or a ``tradebook.yaml`` in the working directory or up
to its project root; then the ``TRADEBOOK_*`` variables), so a bad file stops it with one
line, and ``session.store_path`` (or ``$TRADEBOOK_STORE``) is the store unless ``--store``
names one. ``tradebook config`` prints the effective settings and where each came from.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from tradebook.errors import StoreError, TradebookError


_CONFIG_HELP = ("YAML configuration file (default: $TRADEBOOK_CONFIG, else tradebook.yaml in the working directory "
                "or up to its project root); TRADEBOOK_* variables override it")


def _store_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", type=Path, default=None,
                        help="DuckDB store file (default: the config's session.store_path, $TRADEBOOK_STORE, "
                             "else tradebook.duckdb at the workspace root)")


def _config_arg(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: `tradebook --config F info` and `tradebook info --config F` both work, the later one wins
    parser.add_argument("--config", type=Path, default=argparse.SUPPRESS, metavar="FILE", help=_CONFIG_HELP)


def _definition_args(group: argparse._ArgumentGroup, file_help: str) -> None:
    """--instrument-file and the definition options (--asset-class, --tick, ...), as load and calibrate take them."""
    group.add_argument("--instrument-file", type=Path, default=None, metavar="FILE", help=file_help)
    for option, what in _DEFINITION_OPTIONS.items():
        group.add_argument(f"--{option}", default=None, help=what)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tradebook", description="tradebook: research to paper to live trading.")
    parser.add_argument("--config", type=Path, default=None, metavar="FILE", help=_CONFIG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    demo = sub.add_parser("demo", help="the whole story on the bundled data: load, calibrate, research, paper, gate",
                          description="Run the main job on the bundled data: load every bundled file into the "
                                      "store (files already stored are skipped), print what the store holds, "
                                      "calibrate the fill model and show its fidelity, then research a strategy on "
                                      "the older daily history, paper-trade the held-back sessions, print the "
                                      "promotion gate's decision with its evidence and write the HTML report.")
    _store_arg(demo)
    demo.add_argument("--data-dir", type=Path, default=None, help="bundled data folder (default: the repo's data/)")
    demo.add_argument("--no-serve", action="store_true",
                      help="end after the report instead of serving the dashboard over the demo's store "
                           "(the demo serves it on 127.0.0.1 until Ctrl-C by default)")

    load = sub.add_parser("load", help="load one market-data file into the store",
                          description="Validate one CSV (or .csv.gz) file and store it. A file with errors is "
                                      "refused whole; dirty-but-usable data is stored with quality findings.")
    _store_arg(load)
    load.add_argument("file", type=Path, help="CSV or CSV.GZ file")
    load.add_argument("--kind", required=True,
                      help="quotes, trades, trade_bars, quote_bars, adjustment_factors, depth, book or mbp1")
    load.add_argument("--instrument", default=None,
                      help="instrument id, e.g. BTCUSDT.BINANCE or SPY.ARCX: a bundled one, one already in the store, "
                           "or a new one defined by --instrument-file or the options below")
    load.add_argument("--bar-seconds", type=int, default=None, help="bar length for bar files (60, 86400, ...)")
    own = load.add_argument_group("your own instrument", "define an instrument outside the bundled ones; it is "
                                  "registered in the store with the data (see tradebook.data.instruments)")
    _definition_args(own, "YAML or JSON definition: instrument_id, asset_class, currency, tick, lot, min_size, "
                          "min_notional, multiplier, calendar")

    info = sub.add_parser("info", help="show what the store holds",
                          description="Print the datasets, instruments and data-quality warnings of a store.")
    _store_arg(info)
    info.add_argument("--findings", action="store_true", help="also list info-level findings")

    calibrate = sub.add_parser("calibrate", help="fit fill models from stored history or your own files, store them",
                               description="Fit the paper-fill simulator for each instrument with quotes in the "
                                           "store (or those named) on all its data, store the models as new "
                                           "calibration versions and print what was fitted. With --quotes, fit "
                                           "one instrument from your own files instead (not loaded into the "
                                           "store; the calibration records each file's name and SHA-256).")
    _store_arg(calibrate)
    calibrate.add_argument("--instrument", action="append", default=None,
                           help="instrument id to calibrate (repeatable; default: every instrument with quotes); "
                                "with --quotes, the one instrument the files hold")
    calibrate.add_argument("--seed", type=int, default=0, help="seed for the sampled parts of the fit (default 0)")
    calibrate.add_argument("--bundled", action="store_true",
                           help="load the bundled data into the store first (files already there are skipped)")
    files = calibrate.add_argument_group("from your own files", "fit one instrument from CSV or CSV.GZ files "
                                         "(kinds read from their columns, validated as `tradebook load` does)")
    files.add_argument("--quotes", type=Path, default=None, metavar="FILE",
                       help="L1 quotes (with bid/ask sizes), an MBP-1 feed or a top-N book")
    files.add_argument("--trades", type=Path, default=None, metavar="FILE", help="trades of the same capture")
    files.add_argument("--depth", type=Path, default=None, metavar="FILE",
                       help="L2 depth (snapshot + diffs) or a top-N book of the same capture")
    _definition_args(files, "YAML or JSON definition of an instrument outside the bundled ones (as for "
                            "`tradebook load`)")
    fills = calibrate.add_argument_group("from realised fills", "correct a stored model with what its fills really "
                                         "cost (paper: the recorded book or touch at arrival; live: the fill "
                                         "against the mid at submission), store it as a new version with its "
                                         "provenance and print the error before and after")
    fills.add_argument("--from-fills", action="store_true",
                       help="blend realised costs of the store's fills into the calibrated cost curve")
    fills.add_argument("--account", default=None,
                       help="only this account's fills (a paper run's name or a live account id; default: all)")
    fills.add_argument("--base", default=None, metavar="CALIBRATION",
                       help="the calibration to correct (default: the one that priced the fills, else the latest)")
    fills.add_argument("--holdout", type=float, default=None, metavar="SHARE",
                       help="newest share of the orders scored but not blended (default 0.25; 0 blends all)")
    fills.add_argument("--prior-fills", type=float, default=None, metavar="K",
                       help="fills the fitted curve counts as: weight of n fills is n / (n + K) (default 20)")

    fidelity = sub.add_parser("fidelity", help="fit on one capture or slice, score on others, print the report",
                              description="Score transfers: fit on each recording's first half and score its "
                                          "second, fit on its first third and score its last, and fit on each "
                                          "recording and score every other of the same asset class (BTCUSDT "
                                          "2021 -> 2024 and back, ESH4 -> ESU4 and back). Scores model "
                                          "predictions and the engine's own fills (market orders of 0.5-20x the "
                                          "touch against the true book walk; resting orders against the queue "
                                          "rule) next to baselines (a) touch + 2 bps, (b) the touch and (c) a "
                                          "quantile/logistic regression reference; each figure with a "
                                          "block-bootstrap band, each target met or MISSED against it.")
    _store_arg(fidelity)
    fidelity.add_argument("--instrument", action="append", default=None,
                          help="instrument id (repeatable; default: every instrument with quotes)")
    fidelity.add_argument("--fit-fraction", type=float, default=0.5,
                          help="share of each recording's time span the split fits on; the rest is scored "
                               "(default 0.5)")
    fidelity.add_argument("--eval-on", default=None, metavar="INSTRUMENT",
                          help="the earlier report: fit one --instrument on all its data and score its model "
                               "predictions on all of INSTRUMENT's (no bands, no engine)")
    fidelity.add_argument("--no-engine", action="store_true",
                          help="skip the engine's replays (faster: model predictions only)")
    fidelity.add_argument("--no-across", action="store_true",
                          help="only splits of each recording, no recording scored on another")
    fidelity.add_argument("--seed", type=int, default=0, help="seed for sampled book walks and placements")
    fidelity.add_argument("--strict", action="store_true", help="exit with status 1 when any target is missed")
    fidelity.add_argument("--bundled", action="store_true",
                          help="load the bundled data into the store first (files already there are skipped)")

    config = sub.add_parser("config", help="print the effective settings and where each came from",
                            description="Read the configuration as a session would (the file, then TRADEBOOK_* "
                                        "variables) and print every setting with its source: default, file and "
                                        "line, or variable. Secrets are never printed: credentials show the "
                                        "variable's name and whether it is set. Exits 2 on a bad file or value.")
    report = sub.add_parser("report", help="run a report notebook with papermill and render it to HTML",
                            description="Execute notebooks/reports/NAME.ipynb with papermill (parameters from -p, "
                                        "the store as store_path) and render it to HTML with its figures. Output: "
                                        "<store>.reports/NAME-<UTC time>/ unless --output-dir. Prints the HTML "
                                        "path; a failing cell exits 2 naming the cell and the error.")
    _store_arg(report)
    report.add_argument("name", help="the report: promotion or session (a notebook in notebooks/reports/)")
    report.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                        help="a notebook parameter (repeatable); True/False/None, numbers, else text")
    report.add_argument("--output-dir", type=Path, default=None, help="folder for the executed notebook and HTML")
    dashboard = sub.add_parser("dashboard", help="serve the monitoring dashboard and read API over a closed store",
                               description="Serve the Panel dashboard (positions, orders, fills, TCA, alerts, "
                                           "strategy stages) and the read API (/api/) over a store no session "
                                           "holds, read-only, until Ctrl-C. While a session holds the store the "
                                           "page says which one and where its own dashboard is "
                                           "(session.dashboard()). Any address but 127.0.0.1 needs a token "
                                           "(--token or $TRADEBOOK_MONITOR_TOKEN).")
    _store_arg(dashboard)
    dashboard.add_argument("--address", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    dashboard.add_argument("--port", type=int, default=0, help="port to listen on (default: any free port)")
    dashboard.add_argument("--token", default=None,
                           help="token the page and the API ask for (needed beyond 127.0.0.1); default "
                                "$TRADEBOOK_MONITOR_TOKEN, which other users cannot read in the process list")
    for subparser in (demo, load, info, calibrate, fidelity, config, report, dashboard):
        _config_arg(subparser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _apply_config(args)
        return _dispatch(args)
    except TradebookError as exc:
        print(f"tradebook {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tradebook {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # output piped into `head` and the like: stop quietly, as Unix tools do
        sys.stderr.close()
        return 0


def _apply_config(args: argparse.Namespace) -> None:
    """Read the configuration once for every command; its store is the default for --store."""
    from tradebook.config import describe_config

    args.settings = describe_config(args.config)
    if hasattr(args, "store") and args.store is None:
        from tradebook.store import DEFAULT_STORE_PATH, workspace_root

        # resolved here, not by Store(None), which would read the workspace's file instead of --config's
        store_path = args.settings.config.session.store_path
        args.store = store_path if store_path is not None else workspace_root() / DEFAULT_STORE_PATH


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "config":
        print(args.settings)
        return 0
    if args.command == "demo":
        from tradebook.demo import run_demo

        run_demo(args.store, args.data_dir, serve=not args.no_serve)
        return 0
    if args.command == "dashboard":
        from tradebook.monitor.server import serve_until_interrupted
        from tradebook.monitor.source import StoreSource

        serve_until_interrupted(StoreSource(args.store), address=args.address, port=args.port, token=args.token)
        return 0
    if args.command == "load":
        from tradebook.data.loaders import load
        from tradebook.store import Store

        definition = _instrument_definition(args)
        # read-only until the file is valid: a refused file never holds the writer's lock
        with Store(args.store, lazy_writer=True, purpose=f"`tradebook load {args.file.name}`") as store:
            instrument = definition or _known_instrument(store, args.instrument)
            data = load(args.file, args.kind, instrument, bar_seconds=args.bar_seconds)
            result = store.ingest(data)
        state = "stored as" if result.created else "already stored as"
        print(f"{data.source}: {result.rows:,} rows of {data.kind} for {data.instrument_id} {state} dataset "
              f"{result.dataset_id} in {store.path}")
        for finding in data.findings:
            print(f"  {finding}")
        return 0
    if args.command == "info":
        from tradebook.demo import format_summary
        from tradebook.store import Store, default_store_path

        path = args.store or default_store_path()
        if not Path(path).exists():
            raise StoreError(f"no store at {path}: run `tradebook demo` (bundled data) or `tradebook load FILE` "
                             "first, or name one with --store")
        # read-only: it shares the file with notebooks that read it, and names a writer that holds it
        with Store.reader(path) as store:
            print(format_summary(store))
            if args.findings:
                info = store.query("SELECT d.source, q.code, q.message FROM data_quality q JOIN datasets d "
                                   "USING (dataset_id) WHERE q.severity = 'info' ORDER BY d.source")
                print("\nInfo findings:")
                for source, code, message in info.itertuples(index=False):
                    print(f"  {source}: {code}: {message}")
        return 0
    if args.command == "calibrate":
        from tradebook.sim.fidelity import format_calibrations, run_calibration
        from tradebook.store import Store

        if args.from_fills:
            return _calibrate_from_fills(args)
        stray = [f"--{n.replace('_', '-')}" for n in ("account", "base", "holdout", "prior_fills")
                 if getattr(args, n) is not None]
        if stray:
            raise TradebookError(f"{', '.join(stray)} {'belongs' if len(stray) == 1 else 'belong'} to --from-fills; "
                                 "add it, or leave them out")
        if _calibrate_from_files_asked(args):
            return _calibrate_from_files(args)
        with Store(args.store) as store:
            _load_bundled_if_asked(store, args)
            records = run_calibration(store, args.instrument, seed=args.seed)
            print(format_calibrations(store, records))
            print(f"{len(records)} calibration(s) in {store.path}: {', '.join(r.calibration_id for r in records)}")
        return 0
    if args.command == "fidelity":
        from tradebook.sim.fidelity import format_fidelity, format_transfer_report, run_fidelity, run_fidelity_report
        from tradebook.store import Store, default_store_path

        path = args.store or default_store_path()
        if not args.bundled and not Path(path).exists():
            raise StoreError(f"no store at {path}: run `tradebook demo` first, or pass --bundled to load the "
                             "bundled data into it")
        with (Store(path) if args.bundled else Store.reader(path)) as store:
            _load_bundled_if_asked(store, args)
            if args.eval_on:
                results = run_fidelity(store, args.instrument, fit_fraction=args.fit_fraction, seed=args.seed,
                                       eval_instrument=args.eval_on)
                text = format_fidelity(results)
            else:
                results = run_fidelity_report(store, args.instrument, fit_fraction=args.fit_fraction,
                                              seed=args.seed, across=not args.no_across,
                                              engine=not args.no_engine)
                text = format_transfer_report(results)
        print(text)
        return 1 if args.strict and not all(r.all_met for r in results) else 0
    if args.command == "report":
        from tradebook.reports import parse_value, run_report

        parameters = {key: parse_value(value) for key, value in args.parameter}
        print(run_report(args.name, parameters, output_dir=args.output_dir, store_path=args.store).html_path)
        return 0
    raise AssertionError(f"unhandled command {args.command}")  # argparse rejects unknown commands first


_DEFINITION_OPTIONS = {
    "asset-class": "equity, crypto_spot, future or fx_spot",
    "currency": "currency of prices and notional, e.g. USD",
    "tick": "price grid, e.g. 0.01",
    "lot": "quantity grid, e.g. 1 or 0.001",
    "min-size": "smallest quantity (default: one lot)",
    "min-notional": "smallest price x quantity x multiplier (default 0)",
    "multiplier": "contract multiplier (default 1)",
    "calendar": "XNYS, CMES, 24/5 or 24/7 (default: the asset class's usual one)",
    "base-currency": "base currency of an FX or crypto pair",
}


def _instrument_definition(args: argparse.Namespace):
    """The instrument defined on the command line (a file or options), or None when only an id is given."""
    from tradebook.data.instruments import instrument_from_dict, load_instrument_file

    options = {name.replace("-", "_"): getattr(args, name.replace("-", "_")) for name in _DEFINITION_OPTIONS}
    given = {name: value for name, value in options.items() if value is not None}
    if args.instrument_file is not None:
        if given:
            raise TradebookError(f"give the instrument in --instrument-file or as options, not both (got "
                                 f"{', '.join('--' + n.replace('_', '-') for n in given)} too)")
        instrument = load_instrument_file(args.instrument_file)
    elif given:
        if args.instrument is None:
            raise TradebookError("a new instrument needs its id: --instrument SYMBOL.VENUE")
        instrument = instrument_from_dict({"instrument_id": args.instrument, **given}, source="the command line")
    else:
        if args.instrument is None:
            raise TradebookError("name the instrument: --instrument SYMBOL.VENUE (or define one with "
                                 "--instrument-file FILE)")
        return None
    if args.instrument is not None and args.instrument != instrument.instrument_id:
        raise TradebookError(f"--instrument {args.instrument} and the definition's {instrument.instrument_id} "
                             "differ; give one id")
    return instrument


def _known_instrument(store, instrument_id: str):
    """A bundled instrument, or one the store already holds; the error says how to define a new one."""
    from tradebook.errors import UnknownInstrumentError
    from tradebook.model.instruments import BUNDLED_INSTRUMENTS

    if instrument_id in BUNDLED_INSTRUMENTS:
        return BUNDLED_INSTRUMENTS[instrument_id]
    try:
        return store.instrument(instrument_id)
    except UnknownInstrumentError:
        raise UnknownInstrumentError(
            f"unknown instrument {instrument_id!r}: neither bundled nor in {store.path}; define it with "
            "--instrument-file FILE or --asset-class, --currency, --tick and --lot (see tradebook load --help)"
        ) from None


def _calibrate_from_fills(args: argparse.Namespace) -> int:
    """`tradebook calibrate --from-fills [--instrument ID] [--account A]`: correct, store, print before/after."""
    from tradebook.progress import track
    from tradebook.store import Store
    from tradebook.tca.feedback import (DEFAULT_HOLDOUT, PRIOR_FILLS, calibrate_from_fills, format_from_fills,
                                        instruments_with_fills)

    if args.quotes is not None or args.bundled:
        raise TradebookError("--from-fills corrects a stored calibration with the store's fills; it takes neither "
                             "--quotes nor --bundled")
    with Store(args.store, purpose="`tradebook calibrate --from-fills`") as store:
        chosen = args.instrument or instruments_with_fills(store, args.account)
        if not chosen:
            raise TradebookError(f"no taker fills{f' of account {args.account!r}' if args.account else ''} in "
                                 f"{store.path}: run a paper session first")
        results = [calibrate_from_fills(store, instrument_id, account_id=args.account, base=args.base,
                                        holdout=DEFAULT_HOLDOUT if args.holdout is None else args.holdout,
                                        prior_fills=PRIOR_FILLS if args.prior_fills is None else args.prior_fills)
                   for instrument_id in track(chosen, total=len(chosen), desc="from fills", unit="instrument")]
        print(format_from_fills(results))
    return 0


def _calibrate_from_files_asked(args: argparse.Namespace) -> bool:
    """True when `tradebook calibrate` names files; refuses file options without --quotes."""
    own = [f"--{name}" for name in ("trades", "depth", "instrument-file") if getattr(args, name.replace("-", "_"))]
    own += [f"--{name}" for name in _DEFINITION_OPTIONS if getattr(args, name.replace("-", "_")) is not None]
    if args.quotes is None:
        if own:
            raise TradebookError(f"{', '.join(own)} calibrate from your own files and need --quotes FILE too")
        return False
    if args.bundled:
        raise TradebookError("--bundled loads the bundled data for a store calibration; with --quotes the files "
                             "given are the data: drop one of them")
    return True


def _calibrate_from_files(args: argparse.Namespace) -> int:
    """`tradebook calibrate --quotes F [--trades F] [--depth F] --instrument ID`: fit, store, print."""
    from tradebook.sim.fidelity import format_calibrations
    from tradebook.sim.sources import calibrate_from, format_sources
    from tradebook.store import Store

    ids = args.instrument or []
    if len(ids) > 1:
        raise TradebookError(f"--quotes calibrates one instrument; got --instrument {' and '.join(ids)}")
    one = argparse.Namespace(**{**vars(args), "instrument": ids[0] if ids else None})
    definition = _instrument_definition(one)
    # read-only until the files are fitted: refused files never hold the writer's lock
    with Store(args.store, lazy_writer=True, purpose=f"`tradebook calibrate --quotes {args.quotes.name}`") as store:
        instrument = definition or _known_instrument(store, one.instrument)
        result = calibrate_from(instrument, args.quotes, args.trades, args.depth, store=store, seed=args.seed)
        print(format_calibrations(store, [result.record]))
        print(f"{result.record.calibration_id} in {store.path}, fitted from:")
        print(format_sources(result))
    return 0


def _load_bundled_if_asked(store, args: argparse.Namespace) -> None:
    if args.bundled:
        from tradebook.demo import load_bundled_into

        outcomes = load_bundled_into(store)
        new = sum(o.created for o in outcomes)
        print(f"bundled data: {new} file(s) loaded, {len(outcomes) - new} already in {store.path}\n")


if __name__ == "__main__":
    sys.exit(main())
