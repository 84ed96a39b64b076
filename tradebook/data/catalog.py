"""The bundled sample data: which file holds what, for which instrument.

The files live in the repository's ``data/`` folder (``data/README.md`` keeps each
file's source, terms and schema). ``TRADEBOOK_DATA_DIR`` points elsewhere.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tradebook.data.loaders import MarketData, load
from tradebook.data.schemas import DataKind
from tradebook.errors import DataError

DAY = 86_400


@dataclass(frozen=True)
class BundledFile:
    path: str  # relative to the data folder
    kind: DataKind
    instrument_id: str
    bar_seconds: int | None = None
    note: str = ""


def _equity_daily(symbol: str, mic: str) -> list[BundledFile]:
    lower = symbol.lower()
    return [
        BundledFile(f"bars/daily/{lower}.csv.gz", DataKind.TRADE_BARS, f"{symbol}.{mic}", DAY,
                    "raw (unadjusted) daily trade bars"),
        BundledFile(f"bars/daily/{lower}_factors.csv.gz", DataKind.ADJUSTMENT_FACTORS, f"{symbol}.{mic}"),
    ]


def _equity_minute(symbol: str, mic: str) -> list[BundledFile]:
    lower = symbol.lower()
    return [
        BundledFile(f"bars/minute/{lower}_quote.csv.gz", DataKind.QUOTE_BARS, f"{symbol}.{mic}", 60),
        BundledFile(f"bars/minute/{lower}_trade.csv.gz", DataKind.TRADE_BARS, f"{symbol}.{mic}", 60),
    ]


_CRYPTO = "ticks/crypto/binance_spot_btcusdt_20240808T2354-20240809T0005"

BUNDLED_FILES: tuple[BundledFile, ...] = (
    *_equity_daily("SPY", "ARCX"),
    *_equity_daily("AAPL", "XNAS"),
    *_equity_daily("IBM", "XNYS"),
    *_equity_daily("BAC", "XNYS"),
    *_equity_daily("QQQ", "XNAS"),
    *_equity_daily("IWM", "ARCX"),
    BundledFile("bars/daily/btcusd_coinbase_quote.csv.gz", DataKind.QUOTE_BARS, "BTC-USD.COINBASE", DAY),
    BundledFile("bars/daily/btcusd_coinbase_trade.csv.gz", DataKind.TRADE_BARS, "BTC-USD.COINBASE", DAY),
    *_equity_minute("SPY", "ARCX"),
    *_equity_minute("IBM", "XNYS"),
    *_equity_minute("BAC", "XNYS"),
    *_equity_minute("AIG", "XNYS"),
    BundledFile("bars/second/spy_20131007_quote.csv.gz", DataKind.QUOTE_BARS, "SPY.ARCX", 1),
    BundledFile("bars/second/spy_20131007_trade.csv.gz", DataKind.TRADE_BARS, "SPY.ARCX", 1),
    BundledFile("ticks/equities/algoseek_IBM_20131007_l1_nbbo.csv.gz", DataKind.QUOTES, "IBM.XNYS",
                note="NBBO derived from one-sided quote ticks"),
    BundledFile("ticks/equities/algoseek_IBM_20131007_trades.csv.gz", DataKind.TRADES, "IBM.XNYS"),
    BundledFile(f"{_CRYPTO}_l1_quotes.csv.gz", DataKind.QUOTES, "BTCUSDT.BINANCE",
                note="ts_ns is the collector clock, ~1.27 s behind Binance"),
    BundledFile(f"{_CRYPTO}_trades.csv.gz", DataKind.TRADES, "BTCUSDT.BINANCE"),
    BundledFile(f"{_CRYPTO}_l2_depth.csv.gz", DataKind.DEPTH, "BTCUSDT.BINANCE"),
    BundledFile("ticks/crypto/binance_spot_BTCUSDT_20210108T0000_l1_quotes.csv.gz", DataKind.QUOTES,
                "BTCUSDT.BINANCE", note="46 s fixture, for parser tests only"),
    BundledFile("ticks/crypto/binance_spot_BTCUSDT_20210108T0000_trades.csv.gz", DataKind.TRADES,
                "BTCUSDT.BINANCE", note="46 s fixture, for parser tests only"),
    BundledFile("ticks/futures/cme_ESH4_book5_from_mbo_20231225.csv.gz", DataKind.BOOK, "ESH4.GLBX",
                note="rows before 2023-12-25T23:00Z are the pre-open auction (crossed)"),
    BundledFile("ticks/futures/cme_ESH4_trades_from_mbo_20231225.csv.gz", DataKind.TRADES, "ESH4.GLBX"),
    BundledFile("ticks/futures/cme_ESU4_mbp1_20240701T2358-20240702T0002.csv.gz", DataKind.MBP1, "ESU4.GLBX"),
    BundledFile("ticks/futures/cme_ESU4_trades_20240701T2358-20240702T0002.csv.gz", DataKind.TRADES, "ESU4.GLBX"),
    BundledFile("ticks/fx/dukascopy_EURUSD_20260713T12_ticks.csv.gz", DataKind.QUOTES, "EURUSD.DUKASCOPY"),
    BundledFile("ticks/fx/fxcm_EURUSD_20140506_ticks.csv.gz", DataKind.QUOTES, "EURUSD.FXCM",
                note="dirty retail feed: ~10% crossed; never calibrate on it"),
)


def bundled_data_dir() -> Path:
    """The folder holding the bundled data: ``$TRADEBOOK_DATA_DIR``, else the repository's ``data/``."""
    override = os.environ.get("TRADEBOOK_DATA_DIR")
    candidates = [Path(override)] if override else []
    candidates += [Path(__file__).resolve().parents[2] / "data", Path.cwd() / "data"]
    for candidate in candidates:
        if (candidate / "bars").is_dir() or (candidate / "ticks").is_dir():
            return candidate
    raise DataError(
        "cannot find the bundled data folder; expected data/bars and data/ticks in the repository "
        f"or TRADEBOOK_DATA_DIR (looked in {', '.join(str(c) for c in candidates)})"
    )


def bundled_file(path: str) -> BundledFile:
    for entry in BUNDLED_FILES:
        if entry.path == path or Path(entry.path).name == path:
            return entry
    raise DataError(f"{path!r} is not a bundled file; see tradebook.data.BUNDLED_FILES")


def load_bundled(entry: BundledFile | str, data_dir: Path | None = None) -> MarketData:
    """Load one bundled file through the public loader."""
    if isinstance(entry, str):
        entry = bundled_file(entry)
    root = data_dir or bundled_data_dir()
    return load(root / entry.path, entry.kind, entry.instrument_id, bar_seconds=entry.bar_seconds)


def iter_bundled(data_dir: Path | None = None, kinds: Iterable[DataKind] | None = None):
    """Yield (entry, MarketData) for every bundled file, optionally only some kinds."""
    wanted = set(kinds) if kinds is not None else None
    for entry in BUNDLED_FILES:
        if wanted is None or entry.kind in wanted:
            yield entry, load_bundled(entry, data_dir)
