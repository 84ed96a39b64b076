"""Load market-data files into validated, normalised frames.

A file either loads whole or is refused with an error that names the file, the line
and what was expected. Data that is dirty but usable (crossed quotes in a retail FX
feed, pre-open auction states, bad prints in daily bars) loads unchanged and comes
with a list of :class:`QualityFinding` (computed in :mod:`tradebook.data.quality`):
tradebook reports, it never cleans silently.

Every frame is in plain price units with int64 UTC nanosecond times (``ts_ns``) and
keeps the file's row order, which matters for rows sharing a timestamp.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tradebook.data.quality import KIND_CHECKS, QualityFinding, common_findings, fail_at, first_index, no_checks
from tradebook.data.schemas import ALIASES, SPECS, DataKind, KindSpec
from tradebook.errors import DataError, SchemaError
from tradebook.model.instruments import Instrument, get_instrument
from tradebook.model.time import MAX_PLAUSIBLE_NS, MIN_PLAUSIBLE_NS, ns_to_iso


_PANDAS_DTYPES = {"int": "int64", "Int": "Int64", "float": "float64", "str": "str", "flag": "Int64"}
_EXPECTED = {
    "int": "an integer",
    "Int": "an integer or empty",
    "float": "a number",
    "str": "text",
    "flag": "0 or 1",
}
_TIME_TEXT_COLUMNS = ("ts_iso", "timestamp", "time", "datetime")


@dataclass(frozen=True)
class MarketData:
    """A validated market-data frame for one instrument, with where it came from."""

    kind: DataKind
    instrument_id: str
    frame: pd.DataFrame
    source: str
    content_hash: str
    findings: tuple[QualityFinding, ...] = field(default=())
    bar_ns: int | None = None
    # the instrument's definition when the caller gave one (not one of the bundled): ingest registers it
    instrument: Instrument | None = None

    @property
    def rows(self) -> int:
        return len(self.frame)

    @property
    def first_ts_ns(self) -> int | None:
        return int(self.frame["ts_ns"].iloc[0]) if len(self.frame) else None

    @property
    def last_ts_ns(self) -> int | None:
        return int(self.frame["ts_ns"].iloc[-1]) if len(self.frame) else None

    def quality_report(self) -> str:
        lines = [f"{self.source}: {self.rows:,} rows of {self.kind} for {self.instrument_id}"]
        lines += [f"  {finding}" for finding in self.findings] or ["  no findings"]
        return "\n".join(lines)


# -- public entry points -------------------------------------------------------------
def load(
    path: str | Path,
    kind: DataKind | str,
    instrument_id: str | Instrument,
    *,
    bar_seconds: int | None = None,
    instruments: Mapping[str, Instrument] | None = None,
) -> MarketData:
    """Load one CSV (optionally gzip-compressed) of ``kind`` for an instrument.

    ``instrument_id`` names a bundled instrument (or one of ``instruments``), or is an
    :class:`Instrument` of your own (``tb.instrument_from_dict``), which
    :meth:`Store.ingest` then registers.
    """
    kind = _parse_kind(kind)
    instrument = _resolve_instrument(instrument_id, instruments)
    path = Path(path)
    source = path.name
    if not path.is_file():
        raise DataError(f"no such file: {path}", source=source)
    try:
        raw_bytes = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read the file: {exc.strerror or exc}", source=source) from exc
    content_hash = hashlib.sha256(raw_bytes).hexdigest()
    frame = _read_csv(_csv_bytes(raw_bytes, path, source), SPECS[kind], source)
    return _own(_validate(frame, kind, instrument, source, content_hash, bar_seconds), instrument_id)


def from_frame(
    frame: pd.DataFrame,
    kind: DataKind | str,
    instrument_id: str | Instrument,
    *,
    source: str = "<frame>",
    bar_seconds: int | None = None,
    instruments: Mapping[str, Instrument] | None = None,
) -> MarketData:
    """Validate a DataFrame already in memory, with the same rules as a file."""
    kind = _parse_kind(kind)
    instrument = _resolve_instrument(instrument_id, instruments)
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"from_frame takes a pandas DataFrame, got {type(frame).__name__}", source=source)
    _refuse_bytes(frame, source)
    frame = _rename_aliases(frame.reset_index(drop=True).copy(), SPECS[kind])
    _require_columns(list(frame.columns), SPECS[kind], source)
    frame = _coerce_frame(frame, SPECS[kind], source)
    content_hash = hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).values.tobytes()).hexdigest()
    return _own(_validate(frame, kind, instrument, source, content_hash, bar_seconds), instrument_id)


def _refuse_bytes(frame: pd.DataFrame, source: str) -> None:
    """Bytes cells would be parsed (or printed) as their repr; the caller decodes them, not tradebook."""
    for column in frame.columns:
        if frame[column].dtype != object:
            continue
        is_bytes = frame[column].map(lambda v: isinstance(v, (bytes, bytearray, memoryview))).to_numpy(dtype=bool)
        if is_bytes.any():
            i = first_index(is_bytes)
            raise SchemaError(f"column {column!r} holds the bytes value {bytes(frame[column].iloc[i])[:40]!r} at row "
                              f"{i} (line {i + 2} as a file); expected text or numbers: decode bytes first "
                              "(e.g. df[col].str.decode('utf-8'))", source=source, line=i + 2)


def _resolve_instrument(instrument: str | Instrument, instruments: Mapping[str, Instrument] | None) -> Instrument:
    if isinstance(instrument, Instrument):
        return instrument
    if not isinstance(instrument, str):
        raise DataError(f"instrument must be an id like 'SPY.ARCX' or an Instrument, got {type(instrument).__name__}")
    return get_instrument(instrument, dict(instruments) if instruments is not None else None)


def _own(data: MarketData, instrument: str | Instrument) -> MarketData:
    """Carry a caller's own instrument definition along, for the store to register."""
    if isinstance(instrument, Instrument):
        return dataclasses.replace(data, instrument=instrument)
    return data


def load_quotes(path: str | Path, instrument_id: str | Instrument, **kw) -> MarketData:
    return load(path, DataKind.QUOTES, instrument_id, **kw)


def load_trades(path: str | Path, instrument_id: str | Instrument, **kw) -> MarketData:
    return load(path, DataKind.TRADES, instrument_id, **kw)


def load_bars(path: str | Path, instrument_id: str | Instrument, *, bar_seconds: int, **kw) -> MarketData:
    return load(path, DataKind.TRADE_BARS, instrument_id, bar_seconds=bar_seconds, **kw)


def load_quote_bars(path: str | Path, instrument_id: str | Instrument, *, bar_seconds: int, **kw) -> MarketData:
    return load(path, DataKind.QUOTE_BARS, instrument_id, bar_seconds=bar_seconds, **kw)


def load_depth(path: str | Path, instrument_id: str | Instrument, **kw) -> MarketData:
    return load(path, DataKind.DEPTH, instrument_id, **kw)


def load_book(path: str | Path, instrument_id: str | Instrument, **kw) -> MarketData:
    return load(path, DataKind.BOOK, instrument_id, **kw)


# -- reading -------------------------------------------------------------------------
def _parse_kind(kind: DataKind | str) -> DataKind:
    try:
        return DataKind(kind)
    except ValueError:
        raise DataError(f"unknown data kind {kind!r}; expected one of {', '.join(k.value for k in DataKind)}") from None


_GZIP_MAGIC = b"\x1f\x8b"


def _csv_bytes(raw: bytes, path: Path, source: str) -> bytes:
    """The file's CSV bytes: gunzipped when it is gzip, checked to be whole and UTF-8 (errors name the line)."""
    if raw[:2] == _GZIP_MAGIC:
        data = _gunzip(raw, source)
    elif path.suffix == ".gz" and raw:
        raise DataError("the file is named .gz but is not gzip-compressed; expected a gzip file or a plain .csv name",
                        source=source)
    else:
        data = raw
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise DataError(f"byte 0x{data[exc.start]:02x} at column {column} is not UTF-8; expected a UTF-8 CSV "
                        "(re-save the file as UTF-8)", source=source, line=line) from None
    return data


def _gunzip(raw: bytes, source: str) -> bytes:
    """Every gzip member of ``raw``; a stream that stops early or is corrupt is refused naming the line."""
    out: list[bytes] = []
    rest = raw
    while rest:
        inflater = zlib.decompressobj(wbits=31)
        try:
            out.append(inflater.decompress(rest))
        except zlib.error as exc:
            whole = b"".join(out).count(b"\n")
            raise DataError(f"the gzip data is corrupt after line {whole} ({exc}); expected an intact gzip file",
                            source=source, line=whole + 1) from None
        if not inflater.eof:
            done = b"".join(out) + inflater.flush()
            whole = done.count(b"\n")
            raise DataError(f"the gzip file is truncated: it ends after line {whole} without its end-of-stream "
                            "marker; expected a complete file (was it still being written or copied?)",
                            source=source, line=whole + 1)
        rest = inflater.unused_data.lstrip(b"\x00")  # concatenated members; zero padding after the last
    return b"".join(out)


def _read_header(data: bytes, source: str) -> list[str]:
    first = data.split(b"\n", 1)[0].decode("utf-8-sig")
    if not first.strip():
        raise DataError("empty file: expected a header row", source=source, line=1)
    return [column.strip() for column in first.rstrip("\r\n").split(",")]


def _check_field_counts(data: bytes, expected: int, source: str) -> None:
    """Every non-blank line has the header's number of fields (pandas would shift or pad the columns)."""
    if b'"' in data:  # quoted fields may hold commas and newlines: count with the csv module
        import csv
        import io

        reader = csv.reader(io.StringIO(data.decode("utf-8-sig"), newline=""))
        for row in reader:
            if row and len(row) != expected:
                _wrong_fields(reader.line_num, len(row), expected, source)
        return
    bytes_ = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(bytes_ == 10)
    starts = np.concatenate(([0], ends + 1))
    ends = np.concatenate((ends, [len(bytes_)]))
    commas = np.flatnonzero(bytes_ == 44)
    fields = np.searchsorted(commas, ends) - np.searchsorted(commas, starts) + 1
    length = ends - starts
    blank = (length == 0) | ((length == 1) & (bytes_[np.minimum(starts, len(bytes_) - 1)] == 13))
    wrong = ~blank & (fields != expected)
    if wrong.any():
        i = int(np.flatnonzero(wrong)[0])
        _wrong_fields(i + 1, int(fields[i]), expected, source)


def _wrong_fields(line: int, found: int, expected: int, source: str) -> None:
    raise DataError(f"{found} fields, expected {expected} (one per header column); a stray comma or a missing "
                    "value?", source=source, line=line)


def _canonical_name(column: str, spec: KindSpec) -> str:
    if column in spec.required or column in spec.optional:
        return column
    alias = ALIASES.get(column)
    if alias is not None and (alias in spec.required or alias in spec.optional):
        return alias
    return column


def _rename_aliases(frame: pd.DataFrame, spec: KindSpec) -> pd.DataFrame:
    return frame.rename(columns={c: _canonical_name(c, spec) for c in frame.columns})


def _require_columns(columns: list[str], spec: KindSpec, source: str) -> None:
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    if duplicated:
        raise SchemaError(f"duplicated columns {duplicated}", source=source, line=1)
    present = set(columns)
    missing = [c for c in spec.required if c not in present]
    if "ts_ns" in missing and any(c in present for c in _TIME_TEXT_COLUMNS):
        missing.remove("ts_ns")  # derived from an ISO-8601 column below
    if missing:
        raise SchemaError(
            f"missing required column(s) {missing} for {spec.kind} data; expected at least "
            f"{list(spec.required)} (optional: {list(spec.optional)}), found {columns}",
            source=source,
            line=1,
        )


def _read_csv(data: bytes, spec: KindSpec, source: str) -> pd.DataFrame:
    header = _read_header(data, source)
    canonical = [_canonical_name(c, spec) for c in header]
    _require_columns(canonical, spec, source)
    _check_field_counts(data, len(header), source)
    # Floats parse natively. Integer columns are read as text and checked digit by
    # digit: pandas would otherwise read one "123.0" cell as a float column and cast
    # every 19-digit nanosecond timestamp through float64, silently losing precision.
    dtypes = {
        raw: "float64" if (canon in spec.required or canon in spec.optional)
        and spec.column_type(canon) == "float" else "str"
        for raw, canon in zip(header, canonical)
    }
    read = dict(keep_default_na=False, na_values=[""], skip_blank_lines=False, encoding="utf-8-sig")
    try:
        frame = pd.read_csv(io.BytesIO(data), dtype=dtypes, **read)
    except pd.errors.ParserError as exc:
        raise _parser_error(exc, source) from exc
    except pd.errors.EmptyDataError as exc:
        raise DataError("empty file: expected a header row", source=source, line=1) from exc
    except (ValueError, TypeError, OverflowError) as exc:
        # The typed parse failed on some float cell: parse everything as text to name it.
        try:
            frame = pd.read_csv(io.BytesIO(data), dtype=str, **read)
        except pd.errors.ParserError as parse_exc:
            raise _parser_error(parse_exc, source) from parse_exc
        frame.columns = canonical
        _coerce_frame(frame, spec, source)  # raises naming the line
        raise SchemaError(f"cannot parse the file with the expected column types: {exc}", source=source) from exc
    frame.columns = canonical
    # blank lines are kept so that line numbers stay true; only trailing ones are dropped
    blank = frame.isna().all(axis=1).to_numpy()
    if blank.any() and blank[-1]:
        keep = len(blank) - int(np.argmin(blank[::-1])) if not blank.all() else 0
        frame = frame.iloc[:keep]
    return _coerce_frame(frame, spec, source)


def _parser_error(exc: Exception, source: str) -> DataError:
    import re

    text = str(exc)
    match = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", text)
    if match:
        expected, line, saw = (int(g) for g in match.groups())
        return DataError(f"malformed CSV: expected {expected} fields, saw {saw}", source=source, line=line)
    return DataError(f"malformed CSV: {text.strip()}", source=source)


_INT64_MAX = 2**63 - 1


def _bad_cell(column: str, series: pd.Series, index: int, expected: str, source: str) -> SchemaError:
    value = series.iloc[index]
    shown = "an empty value" if pd.isna(value) else repr(str(value))
    return SchemaError(f"column {column!r} holds {shown}; expected {expected}", source=source, line=index + 2)


def _parse_integers(column: str, series: pd.Series, nullable: bool, source: str) -> pd.Series:
    """Text to int64 (or nullable Int64), refusing decimals, exponents and values beyond int64."""
    if pd.api.types.is_integer_dtype(series.dtype):
        return series.astype("int64" if not nullable else "Int64")
    present = series.notna().to_numpy()
    text = series.astype("str").str.strip()
    digits = text.str.fullmatch(r"[+-]?\d{1,19}").to_numpy(dtype=bool, na_value=False)
    bad = present & ~digits
    if bad.any():
        raise _bad_cell(column, series, first_index(bad), "an integer (digits only)", source)
    if not nullable and not present.all():
        raise _bad_cell(column, series, first_index(~present), "an integer", source)
    values = np.zeros(len(series), dtype="int64")
    try:
        values[present] = text[present].astype("int64").to_numpy()
    except (OverflowError, ValueError):
        for i in np.flatnonzero(present):
            if abs(int(text.iloc[i])) > _INT64_MAX:
                raise _bad_cell(column, series, int(i), "an integer within int64", source) from None
        raise
    if nullable:
        return pd.Series(pd.arrays.IntegerArray(values, ~present), index=series.index)
    return pd.Series(values, index=series.index)


def _coerce_frame(frame: pd.DataFrame, spec: KindSpec, source: str) -> pd.DataFrame:
    """Convert each known column to its type; name the first cell that does not fit."""
    for column in list(frame.columns):
        if column not in spec.required and column not in spec.optional:
            continue
        ctype = spec.column_type(column)
        series = frame[column]
        if ctype == "str":
            frame[column] = series if series.dtype == "str" else series.astype("str").where(series.notna(), None)
        elif ctype in ("int", "Int", "flag"):
            frame[column] = _parse_integers(column, series, nullable=ctype != "int", source=source)
        else:
            if series.dtype != "float64":
                numeric = pd.to_numeric(series, errors="coerce")
                bad = (series.notna() & numeric.isna()).to_numpy()
                if bad.any():
                    raise _bad_cell(column, series, first_index(bad), _EXPECTED[ctype], source)
                series = numeric.astype("float64")
            frame[column] = series
        if ctype == "float":
            values = frame[column].to_numpy(dtype="float64")
            infinite_or_text_nan = ~np.isfinite(values) & ~np.isnan(values)
            if infinite_or_text_nan.any():
                raise _bad_cell(column, frame[column], first_index(infinite_or_text_nan), "a finite number", source)
    return frame


# -- validation ----------------------------------------------------------------------
def _validate(
    frame: pd.DataFrame,
    kind: DataKind,
    instrument: Instrument,
    source: str,
    content_hash: str,
    bar_seconds: int | None,
) -> MarketData:
    spec = SPECS[kind]
    if len(frame) == 0:
        raise DataError(f"no data rows: expected at least one row of {kind}", source=source)
    frame = _derive_ts_ns(frame, source)
    _check_symbol(frame, instrument, source)
    findings: list[QualityFinding] = []
    extra = [c for c in frame.columns if c not in spec.required and c not in spec.optional
             and c not in spec.informational and c not in _TIME_TEXT_COLUMNS]
    if extra:
        findings.append(QualityFinding("info", "ignored_columns", f"columns not used by tradebook: {extra}"))
    if kind is DataKind.TRADES:
        frame = _derive_aggressor(frame, source)
    keep = [c for c in spec.columns if c in frame.columns]
    frame = frame[keep].reset_index(drop=True)

    _check_nulls(frame, spec, source)
    ts = frame["ts_ns"].to_numpy()
    out_of_range = (ts < MIN_PLAUSIBLE_NS) | (ts >= MAX_PLAUSIBLE_NS)
    if out_of_range.any():
        i = first_index(out_of_range)
        raise fail_at(f"ts_ns {ts[i]} is outside 1970..2100; expected int64 nanoseconds since the epoch, UTC",
                    source, i)
    backwards = np.diff(ts) < 0
    if backwards.any():
        i = first_index(backwards) + 1
        raise fail_at(
            f"time goes backwards: ts_ns {ts[i]} ({ns_to_iso(ts[i])}) follows {ts[i - 1]} ({ns_to_iso(ts[i - 1])}); "
            "expected non-decreasing ts_ns", source, i)
    for column in spec.prices:
        if column in frame.columns:
            values = frame[column].to_numpy(dtype="float64", na_value=np.nan)
            present = ~np.isnan(values) if column in spec.nullable else np.ones(len(values), bool)
            bad = present & (~np.isfinite(values) | (values <= 0))
            if bad.any():
                i = first_index(bad)
                raise fail_at(f"{column} is {values[i]}; expected a positive finite price", source, i)
    for column in spec.sizes:
        if column in frame.columns:
            values = frame[column].to_numpy(dtype="float64", na_value=np.nan)
            present = ~np.isnan(values)
            if column not in spec.nullable and not present.all():
                i = first_index(~present)
                raise fail_at(f"{column} is NaN; expected a size >= 0", source, i)
            bad = present & (~np.isfinite(values) | (values < 0))
            if bad.any():
                i = first_index(bad)
                raise fail_at(f"{column} is {values[i]}; expected a finite size >= 0", source, i)
    for column, allowed in spec.choices.items():
        if column in frame.columns:
            values = frame[column]
            bad = values.notna() & ~values.isin(allowed)
            if bad.any():
                i = first_index(bad)
                raise fail_at(f"{column} is {values.iloc[i]!r}; expected one of {sorted(allowed)}", source, i)
    for column in frame.columns:
        if column in spec.optional and spec.optional[column] == "flag":
            values = frame[column]
            bad = values.notna() & ~values.isin([0, 1])
            if bad.any():
                i = first_index(bad)
                raise fail_at(f"{column} is {values.iloc[i]}; expected 0 or 1", source, i)
            frame[column] = values.astype("boolean")

    bar_ns = None
    if kind in (DataKind.TRADE_BARS, DataKind.QUOTE_BARS):
        if bar_seconds is None or bar_seconds <= 0:
            raise DataError(f"{kind} need bar_seconds > 0 (60 for minute bars, 86400 for daily)", source=source)
        bar_ns = int(bar_seconds) * 1_000_000_000
    if kind is DataKind.ADJUSTMENT_FACTORS:
        for column in ("price_factor", "split_factor"):
            values = frame[column].to_numpy()
            bad = ~np.isfinite(values) | (values <= 0)
            if bad.any():
                i = first_index(bad)
                raise fail_at(f"{column} is {values[i]}; expected a positive factor", source, i)

    findings += KIND_CHECKS.get(kind, no_checks)(frame, instrument, source, bar_ns)
    findings += common_findings(frame, instrument, spec)
    return MarketData(
        kind=kind,
        instrument_id=instrument.instrument_id,
        frame=frame,
        source=source,
        content_hash=content_hash,
        findings=tuple(findings),
        bar_ns=bar_ns,
    )


def _derive_ts_ns(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """Fill ``ts_ns`` from an ISO column when absent; check the two agree when both exist."""
    text_column = next((c for c in _TIME_TEXT_COLUMNS if c in frame.columns), None)
    if text_column is None:
        return frame
    text = frame[text_column]
    if text.isna().any():
        i = first_index(text.isna())
        raise fail_at(f"{text_column} is empty; expected an ISO-8601 instant with 'Z' or an offset", source, i)
    text = text.astype("str")
    aware = text.str.contains(r"(?:Z|[+-]\d\d:?\d\d)$", regex=True)
    if not aware.all():
        i = first_index(~aware)
        raise fail_at(
            f"{text_column} {text.iloc[i]!r} is a naive datetime; expected a UTC offset or 'Z' "
            "(tradebook never guesses a time zone)", source, i)
    try:
        parsed = pd.to_datetime(text, utc=True, format="ISO8601")
    except (ValueError, TypeError) as exc:
        # find the first unparseable value for the message
        for i, value in enumerate(text):
            try:
                pd.Timestamp(value)
            except (ValueError, TypeError):
                raise fail_at(f"{text_column} {value!r} is not an ISO-8601 instant", source, i) from exc
        raise DataError(f"{text_column}: {exc}", source=source) from exc
    # pandas 3 keeps the parsed unit (ms, us...); pin nanoseconds before the int cast.
    derived = parsed.dt.as_unit("ns").astype("int64").to_numpy()
    if "ts_ns" not in frame.columns:
        frame = frame.assign(ts_ns=derived)
    else:
        mismatch = frame["ts_ns"].to_numpy() != derived
        if mismatch.any():
            i = first_index(mismatch)
            raise fail_at(f"ts_ns {frame['ts_ns'].iloc[i]} and {text_column} {text.iloc[i]!r} disagree "
                        f"({ns_to_iso(derived[i])}); expected the same instant", source, i)
    return frame


def _check_symbol(frame: pd.DataFrame, instrument: Instrument, source: str) -> None:
    if "symbol" not in frame.columns:
        return
    symbols = frame["symbol"]
    wrong = symbols.notna() & (symbols.astype("str").str.replace("-", "") != instrument.symbol.replace("-", ""))
    if wrong.any():
        i = first_index(wrong)
        raise fail_at(f"symbol {symbols.iloc[i]!r} does not match instrument {instrument.instrument_id} "
                    f"(symbol {instrument.symbol!r}); was the file loaded under the wrong instrument?", source, i)


def _derive_aggressor(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    if "buyer_is_maker" not in frame.columns:
        return frame
    maker = pd.to_numeric(frame["buyer_is_maker"], errors="coerce")
    bad = maker.isna() | ~maker.isin([0, 1])
    if bad.any():
        i = first_index(bad)
        raise fail_at(f"buyer_is_maker is {frame['buyer_is_maker'].iloc[i]!r}; expected 0 or 1", source, i)
    implied = np.where(maker.to_numpy() == 1, "SELL", "BUY")
    if "aggressor_side" not in frame.columns:
        return frame.assign(aggressor_side=pd.array(implied, dtype="str"))
    disagree = frame["aggressor_side"].to_numpy(dtype=object) != implied
    if disagree.any():
        i = first_index(disagree)
        raise fail_at(f"aggressor_side {frame['aggressor_side'].iloc[i]!r} contradicts buyer_is_maker "
                    f"{int(maker.iloc[i])}; expected {implied[i]}", source, i)
    return frame


def _check_nulls(frame: pd.DataFrame, spec: KindSpec, source: str) -> None:
    for column in frame.columns:
        if column in spec.nullable:
            continue
        missing = frame[column].isna()
        if missing.any():
            i = first_index(missing)
            raise fail_at(f"{column} is empty or NaN; expected {_EXPECTED[spec.column_type(column)]}", source, i)
