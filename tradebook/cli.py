"""The ``tradebook`` command. Every subcommand calls into the package; errors print as one line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from tradebook.errors import TradebookError


def _store_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", type=Path, default=None,
                        help="DuckDB store file (default: $TRADEBOOK_STORE or ./tradebook.duckdb)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tradebook", description="tradebook: research to paper to live trading.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    demo = sub.add_parser("demo", help="load the bundled data into the store and summarise it",
                          description="Run the main job on the bundled data: load every bundled file into the "
                                      "store (files already stored are skipped) and print what the store holds.")
    _store_arg(demo)
    demo.add_argument("--data-dir", type=Path, default=None, help="bundled data folder (default: the repo's data/)")

    load = sub.add_parser("load", help="load one market-data file into the store",
                          description="Validate one CSV (or .csv.gz) file and store it. A file with errors is "
                                      "refused whole; dirty-but-usable data is stored with quality findings.")
    _store_arg(load)
    load.add_argument("file", type=Path, help="CSV or CSV.GZ file")
    load.add_argument("--kind", required=True,
                      help="quotes, trades, trade_bars, quote_bars, adjustment_factors, depth, book or mbp1")
    load.add_argument("--instrument", required=True, help="instrument id, e.g. BTCUSDT.BINANCE or SPY.ARCX")
    load.add_argument("--bar-seconds", type=int, default=None, help="bar length for bar files (60, 86400, ...)")

    info = sub.add_parser("info", help="show what the store holds",
                          description="Print the datasets, instruments and data-quality warnings of a store.")
    _store_arg(info)
    info.add_argument("--findings", action="store_true", help="also list info-level findings")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
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


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "demo":
        from tradebook.demo import run_demo

        run_demo(args.store, args.data_dir)
        return 0
    if args.command == "load":
        from tradebook.data.loaders import load
        from tradebook.store import Store

        data = load(args.file, args.kind, args.instrument, bar_seconds=args.bar_seconds)
        with Store(args.store) as store:
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
        with Store(path, read_only=True) as store:
            print(format_summary(store))
            if args.findings:
                info = store.query("SELECT d.source, q.code, q.message FROM data_quality q JOIN datasets d "
                                   "USING (dataset_id) WHERE q.severity = 'info' ORDER BY d.source")
                print("\nInfo findings:")
                for source, code, message in info.itertuples(index=False):
                    print(f"  {source}: {code}: {message}")
        return 0
    raise AssertionError(f"unhandled command {args.command}")  # argparse rejects unknown commands first


if __name__ == "__main__":
    sys.exit(main())
