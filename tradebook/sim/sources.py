"""Calibrate the paper-fill simulator from any data: your own quote, trade and depth files or frames.

The store path (``tradebook calibrate``, :func:`tradebook.sim.fidelity.run_calibration`)
fits what the store holds. This module fits what you hand it, without loading it into
the store first::

    from tradebook.sim.sources import calibrate_from

    result = calibrate_from("EURUSD.MYBROKER", quotes="my_quotes.csv.gz", instrument_file="mine.yaml",
                            store=store)             # store=None: fit only, nothing stored
    result.model                                     # the FillModel
    result.record.calibration_id                     # 'EURUSD.MYBROKER@v1'

Every input is validated by the same loaders as ``tradebook load`` (a file with errors
is refused whole, with its line), and checked against the others before anything is
fitted: each file must be of the kind its role takes (quotes: L1, MBP-1 or a top-N
book; trades; depth: Binance L2 snapshot + diffs or a top-N book), the quotes must carry
sizes (every part of the model is in units of the touch size), and trades and depth must
be the same instrument's market at the same time as the quotes (a file for another
instrument is caught by its symbol where it has one, and by its prices and times where
it has none). The stored calibration records where it came from: every file's name,
kind, rows, time range and SHA-256 (of the file's bytes, or of a frame's contents).
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tradebook.data.frames import LIQUIDITY_EXCLUSIONS, liquidity_exclusions
from tradebook.data.loaders import MarketData, from_frame, load
from tradebook.data.schemas import ALIASES, DataKind
from tradebook.errors import DataError, UnknownInstrumentError
from tradebook.model.instruments import Instrument, get_instrument
from tradebook.model.time import ns_to_iso
from tradebook.sim.truth import regular_hours_mask

# What each role accepts, in order of detection.
QUOTE_KINDS: tuple[DataKind, ...] = (DataKind.BOOK, DataKind.MBP1, DataKind.QUOTES)
TRADE_KINDS: tuple[DataKind, ...] = (DataKind.TRADES,)
DEPTH_KINDS: tuple[DataKind, ...] = (DataKind.DEPTH, DataKind.BOOK)
# Trades or depth whose median price is this far (a factor) from the quotes' median mid
# are another instrument's (or another capture's in another price regime).
PRICE_MISMATCH_FACTOR = 1.5

Source = str | Path | pd.DataFrame | MarketData


@dataclass(frozen=True)
class SourceFile:
    """Where one input came from: what a stored calibration keeps as its provenance."""

    role: str  # quotes, trades or depth
    kind: str  # the data kind it was read as
    source: str  # the file's path as given, or '<quotes frame>'
    sha256: str  # of the file's bytes, or of the frame's contents
    rows: int
    first_ts_ns: int | None
    last_ts_ns: int | None

    def to_dict(self) -> dict[str, Any]:
        return {"role": self.role, "kind": self.kind, "source": self.source, "sha256": self.sha256,
                "rows": self.rows, "first_ts_ns": self.first_ts_ns, "last_ts_ns": self.last_ts_ns}

    def __str__(self) -> str:
        span = (f"{ns_to_iso(self.first_ts_ns)} .. {ns_to_iso(self.last_ts_ns)}"
                if self.first_ts_ns is not None else "empty")
        return f"{self.role}: {self.source} ({self.kind}, {self.rows:,} rows, {span}, sha256 {self.sha256[:12]})"


@dataclass(frozen=True)
class SourcedCalibration:
    """A calibration fitted from given data: the fit, its inputs, and the stored record (None if not stored)."""

    calibration: Any  # tradebook.sim.fidelity.Calibration
    sources: tuple[SourceFile, ...]
    record: Any = None  # tradebook.store.CalibrationRecord when a store was given
    data: Any = field(default=None, repr=False, compare=False)  # the InstrumentData fitted on

    @property
    def model(self) -> Any:
        """The fitted :class:`tradebook.sim.fill_model.FillModel`."""
        return self.calibration.model

    @property
    def instrument_id(self) -> str:
        return self.calibration.model.instrument_id


# -- reading one input ---------------------------------------------------------------------------
def _header(path: Path) -> list[str]:
    """The column names of a CSV or CSV.GZ file (the loader reports any deeper fault with its line)."""
    if not path.is_file():
        raise DataError(f"no such file: {path}", source=path.name)
    try:
        with path.open("rb") as raw:
            start = raw.read(2)
        opener = gzip.open if start == b"\x1f\x8b" else open
        with opener(path, "rb") as handle:
            line = handle.readline()
        text = line.decode("utf-8-sig").strip()
    except (OSError, UnicodeDecodeError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"cannot read a CSV header: {exc}; expected a CSV or gzip-compressed CSV file",
                        source=path.name) from exc
    return [c.strip() for c in next(csv.reader(io.StringIO(text)), [])]


def detect_kind(columns: list[str] | pd.Index) -> DataKind | None:
    """The market-data kind a set of column names holds (None when none fits).

    Top-N book (``bid_px_0``...), MBP-1 (``action`` with a top of book), L1 quotes
    (``bid_px``/``ask_px``), Binance depth (``first_update_id`` or ``kind`` with side,
    price and qty), trades (``price`` and ``size``/``qty``), trade bars (OHLC).
    """
    names = {ALIASES.get(str(c).strip(), str(c).strip()) for c in columns}
    raw = {str(c).strip() for c in columns}
    if "bid_px_0" in names or "ask_px_0" in names:
        return DataKind.BOOK
    if {"action", "bid_px", "ask_px"} <= names:
        return DataKind.MBP1
    if {"bid_px", "ask_px"} <= names:
        return DataKind.QUOTES
    if {"side", "price"} <= names and ("first_update_id" in raw or ("kind" in raw and "qty" in raw)):
        return DataKind.DEPTH
    if {"price", "size"} <= names:
        return DataKind.TRADES
    if {"open", "high", "low", "close"} <= names:
        return DataKind.TRADE_BARS
    if {"bid_close", "ask_close"} <= names:
        return DataKind.QUOTE_BARS
    return None


def _role_kind(role: str, columns: list[str] | pd.Index, allowed: tuple[DataKind, ...], source: str,
               kind: DataKind | str | None) -> DataKind:
    if kind is not None:
        chosen = DataKind(kind) if not isinstance(kind, DataKind) else kind
        if chosen not in allowed:
            raise DataError(f"{role} cannot be {chosen.value} data; expected one of "
                            f"{[k.value for k in allowed]}", source=source)
        return chosen
    found = detect_kind(columns)
    if found in allowed:
        return found
    what = f"{found.value} data" if found is not None else "no market-data kind tradebook knows"
    expected = {"quotes": "L1 quotes (ts_ns, bid_px, ask_px, bid_sz, ask_sz), an MBP-1 feed or a top-N book "
                          "(bid_px_0, ...)",
                "trades": "trades (ts_ns, price, size, and an aggressor_side if the venue gives one)",
                "depth": "L2 depth (a snapshot then diffs: ts_ns, kind, side, price, qty) or a top-N book "
                         "(bid_px_0, ...)"}[role]
    raise DataError(f"this is not a {role} file: its columns {list(map(str, columns))[:12]} hold {what}; "
                    f"expected {expected}", source=source)


def _read(role: str, value: Source, instrument: Instrument, allowed: tuple[DataKind, ...],
          kind: DataKind | str | None) -> tuple[MarketData, SourceFile]:
    if isinstance(value, MarketData):
        if value.kind not in allowed:
            raise DataError(f"{role} cannot be {value.kind.value} data; expected one of "
                            f"{[k.value for k in allowed]}", source=value.source)
        if value.instrument_id != instrument.instrument_id:
            raise DataError(f"{role} were loaded for {value.instrument_id}, not {instrument.instrument_id}; "
                            "load them for the instrument being calibrated", source=value.source)
        data, name = value, value.source
    elif isinstance(value, pd.DataFrame):
        name = f"<{role} frame>"
        chosen = _role_kind(role, value.columns, allowed, name, kind)
        data = from_frame(value, chosen, instrument, source=name)
    elif isinstance(value, (str, Path)):
        path = Path(value)
        name = str(value)
        chosen = _role_kind(role, _header(path), allowed, path.name, kind)
        data = load(path, chosen, instrument)
    else:
        raise DataError(f"{role} is a {type(value).__name__}; expected a file path, a pandas DataFrame or "
                        "loaded MarketData")
    if not data.rows:
        raise DataError(f"{role} hold no rows; expected at least one", source=data.source)
    return data, SourceFile(role, data.kind.value, name, data.content_hash, data.rows, data.first_ts_ns,
                            data.last_ts_ns)


# -- checks across inputs ---------------------------------------------------------------------------
def _quote_mids(data: MarketData) -> pd.DataFrame:
    frame = data.frame
    if data.kind == DataKind.BOOK:
        bid, ask, bid_sz, ask_sz = (frame[c] for c in ("bid_px_0", "ask_px_0", "bid_sz_0", "ask_sz_0"))
    else:
        bid, ask = frame["bid_px"], frame["ask_px"]
        bid_sz = frame["bid_sz"] if "bid_sz" in frame.columns else pd.Series(np.nan, index=frame.index)
        ask_sz = frame["ask_sz"] if "ask_sz" in frame.columns else pd.Series(np.nan, index=frame.index)
    return pd.DataFrame({"bid": bid.to_numpy(dtype=np.float64, na_value=np.nan),
                         "ask": ask.to_numpy(dtype=np.float64, na_value=np.nan),
                         "bid_sz": bid_sz.to_numpy(dtype=np.float64, na_value=np.nan),
                         "ask_sz": ask_sz.to_numpy(dtype=np.float64, na_value=np.nan)})


def _check_sizes(quotes: MarketData, instrument: Instrument) -> None:
    top = _quote_mids(quotes)
    sized = (top["bid_sz"] > 0) & (top["ask_sz"] > 0)
    if not sized.any():
        raise DataError(f"the quotes carry no sizes (bid_sz/ask_sz empty or absent in all {quotes.rows:,} rows); "
                        f"calibrating {instrument.instrument_id} needs touch sizes (costs, depth and queues are "
                        "fitted in multiples of the touch size): expected quotes with bid_sz and ask_sz",
                        source=quotes.source)


def _check_same_market(role: str, other: MarketData, quotes: MarketData, instrument: Instrument) -> None:
    """Trades or depth for the same instrument and time as the quotes, else a DataError saying which differs."""
    q_first, q_last = quotes.first_ts_ns, quotes.last_ts_ns
    o_first, o_last = other.first_ts_ns, other.last_ts_ns
    if o_last < q_first or o_first > q_last:
        raise DataError(f"the {role} ({ns_to_iso(o_first)} .. {ns_to_iso(o_last)}) do not overlap the quotes "
                        f"({ns_to_iso(q_first)} .. {ns_to_iso(q_last)}); expected the same capture's {role}",
                        source=other.source)
    top = _quote_mids(quotes)
    with np.errstate(invalid="ignore"):
        mids = ((top["bid"] + top["ask"]) / 2).to_numpy()
    mids = mids[np.isfinite(mids) & (mids > 0)]
    frame = other.frame
    if other.kind == DataKind.BOOK:
        prices = np.r_[frame["bid_px_0"].to_numpy(dtype=np.float64, na_value=np.nan),
                       frame["ask_px_0"].to_numpy(dtype=np.float64, na_value=np.nan)]
    elif other.kind == DataKind.DEPTH:
        qty = frame["qty"].to_numpy(dtype=np.float64, na_value=np.nan)
        prices = frame["price"].to_numpy(dtype=np.float64, na_value=np.nan)[qty > 0]  # qty 0 removes a level
    else:
        prices = frame["price"].to_numpy(dtype=np.float64, na_value=np.nan)
    prices = prices[np.isfinite(prices) & (prices > 0)]
    if not len(mids) or not len(prices):
        return
    quote_mid, other_px = float(np.median(mids)), float(np.median(prices))
    ratio = other_px / quote_mid
    if not 1 / PRICE_MISMATCH_FACTOR <= ratio <= PRICE_MISMATCH_FACTOR:
        raise DataError(f"the {role} are priced around {other_px:,.6g} but the quotes of "
                        f"{instrument.instrument_id} around {quote_mid:,.6g} (x{ratio:.3g}): {role} for another "
                        f"instrument? expected {instrument.instrument_id}'s own {role}", source=other.source)


# -- the entry point ---------------------------------------------------------------------------------
def resolve_instrument(instrument: Instrument | str | Mapping[str, Any] | None = None, *,
                       instrument_file: str | Path | None = None, store: Any = None) -> Instrument:
    """The instrument to calibrate: an Instrument, a definition dict, a YAML/JSON file, or an id
    (bundled, or registered in ``store``)."""
    from tradebook.data.instruments import instrument_from_dict, load_instrument_file

    if instrument_file is not None:
        defined = load_instrument_file(instrument_file)
        if isinstance(instrument, str) and instrument != defined.instrument_id:
            raise DataError(f"instrument {instrument} and the definition's {defined.instrument_id} in "
                            f"{instrument_file} differ; give one id")
        if isinstance(instrument, (Instrument, Mapping)):
            raise DataError("give the instrument as an Instrument, a definition or an instrument_file, not both")
        return defined
    if isinstance(instrument, Instrument):
        return instrument
    if isinstance(instrument, Mapping):
        return instrument_from_dict(instrument)
    if not isinstance(instrument, str) or not instrument:
        raise DataError(f"instrument is {instrument!r}; expected an id like 'EURUSD.MYBROKER', an Instrument, "
                        "a definition dict or an instrument_file")
    if store is not None:
        try:
            return store.instrument(instrument)
        except UnknownInstrumentError:
            pass
    try:
        return get_instrument(instrument)
    except UnknownInstrumentError as exc:
        where = f" nor in {store.path}" if store is not None else ""
        raise UnknownInstrumentError(f"unknown instrument {instrument!r}: not bundled{where}; define it with "
                                     f"instrument_file= (YAML or JSON) or an Instrument ({exc})") from None


def calibrate_from(
    instrument: Instrument | str | Mapping[str, Any] | None,
    quotes: Source,
    trades: Source | None = None,
    depth: Source | None = None,
    *,
    instrument_file: str | Path | None = None,
    store: Any = None,
    seed: int = 0,
    quotes_kind: DataKind | str | None = None,
    depth_kind: DataKind | str | None = None,
) -> SourcedCalibration:
    """Fit a FillModel from your own quotes (and trades, and depth): files or frames.

    ``quotes``, ``trades`` and ``depth`` are each a CSV/CSV.GZ path, a DataFrame or a
    loaded :class:`MarketData`; their kind is read from their columns (or given:
    ``quotes_kind`` one of quotes, mbp1, book; ``depth_kind`` depth or book). Each is
    validated like ``tradebook load`` and checked against the quotes (see the module
    notes); then every part of the model the data supports is fitted, as
    :func:`tradebook.sim.fidelity.calibrate_instrument` does for stored data (regular
    session only, prints that are liquidity only).

    With ``store`` (a writable :class:`tradebook.Store`) the instrument is registered if
    it is new and the model is saved as its next calibration version, with every input's
    name, kind, rows, time range and SHA-256 in the record's diagnostics
    (``record.diagnostics["files"]``); the same fit of the same files again returns the
    stored version instead of adding one. Without ``store`` nothing is written anywhere.
    """
    from tradebook.sim.fidelity import _assemble, calibrate_instrument

    inst = resolve_instrument(instrument, instrument_file=instrument_file, store=store)
    quote_data, quote_source = _read("quotes", quotes, inst, QUOTE_KINDS, quotes_kind)
    _check_sizes(quote_data, inst)
    frames: dict[DataKind, pd.DataFrame] = {quote_data.kind: quote_data.frame}
    book: pd.DataFrame | None = None
    sources = [quote_source]
    if trades is not None:
        trade_data, trade_source = _read("trades", trades, inst, TRADE_KINDS, None)
        _check_same_market("trades", trade_data, quote_data, inst)
        frames[DataKind.TRADES] = trade_data.frame
        sources.append(trade_source)
    if depth is not None:
        depth_data, depth_source = _read("depth", depth, inst, DEPTH_KINDS, depth_kind)
        _check_same_market("depth", depth_data, quote_data, inst)
        if depth_data.kind == DataKind.BOOK and quote_data.kind == DataKind.BOOK:
            raise DataError("the quotes are already a top-N book; give the book once, as quotes",
                            source=depth_data.source)
        if depth_data.kind == DataKind.BOOK:
            book = depth_data.frame  # the depth behind the quotes' touch, walked as the book
        else:
            frames[DataKind.DEPTH] = depth_data.frame
        sources.append(depth_source)
    data = _assemble(inst, frames, (), tuple(s.source for s in sources))
    if depth is not None and book is not None:
        in_session = regular_hours_mask(book["ts_ns"].to_numpy(), inst)
        data = replace(data, book=book[in_session].reset_index(drop=True))
    calibration = calibrate_instrument(data, seed=seed)
    files = [s.to_dict() for s in sources]
    calibration.diagnostics["files"] = files
    if data.trades is not None:
        # what the liquidity rule left out of the sweeps and queue truth (off-exchange, non-regular prints)
        reason = liquidity_exclusions(data.trades)
        calibration.diagnostics["trades_not_liquidity"] = {
            name: int((reason == 1 + i).sum()) for i, name in enumerate(LIQUIDITY_EXCLUSIONS)}
    record = None
    if store is not None:
        store.register_instruments([inst], replace=False)
        record = _same_as_latest(store, inst.instrument_id, calibration.model.to_json(), files)
    if store is not None and record is None:
        record = store.save_calibration(
            inst.instrument_id, calibration.model.to_json(), data_start_ns=calibration.data_start_ns,
            data_end_ns=calibration.data_end_ns, dataset_ids=(), diagnostics=calibration.diagnostics)
    return SourcedCalibration(calibration, tuple(sources), record, data)


def _same_as_latest(store: Any, instrument_id: str, params: str, files: list[dict[str, Any]]) -> Any:
    """The newest stored calibration when it is this very fit of these very files (None otherwise):
    running the same calibration again does not pile up versions."""
    if not len(store.calibrations(instrument_id)):
        return None
    latest = store.calibration(instrument_id)
    stored_files = latest.diagnostics.get("files") or []
    same_files = [(f.get("role"), f.get("sha256")) for f in stored_files] == [(f["role"], f["sha256"]) for f in files]
    return latest if same_files and latest.params == params else None


def format_sources(result: SourcedCalibration) -> str:
    """One line per input: role, file, kind, rows, time range and hash."""
    return "\n".join(f"   {s}" for s in result.sources)
