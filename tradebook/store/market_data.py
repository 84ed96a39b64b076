"""Market data in the store: datasets ingested once by content, read back as frames by kind, instrument and time.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd

from tradebook.data import frames as _frames  # noqa: F401  (registers the df.tb accessor)
from tradebook.data.loaders import MarketData
from tradebook.data.schemas import DataKind, SPECS
from tradebook.errors import AmbiguousReadError, StoreError
from tradebook.model.instruments import Instrument
from tradebook.model.time import now_ns, ns_to_iso
from tradebook.store.instrument_rows import instrument_row


TABLE_FOR_KIND: dict[DataKind, str] = {
    DataKind.QUOTES: "quotes",
    DataKind.TRADES: "trades",
    DataKind.TRADE_BARS: "trade_bars",
    DataKind.QUOTE_BARS: "quote_bars",
    DataKind.ADJUSTMENT_FACTORS: "adjustment_factors",
    DataKind.DEPTH: "depth_updates",
    DataKind.BOOK: "book_levels",
    DataKind.MBP1: "mbp1_events",
}

_PANDAS_READ_DTYPES = {"int": "int64", "Int": "Int64", "float": "float64", "str": "str", "flag": "boolean"}


@dataclass(frozen=True)
class IngestResult:
    dataset_id: int
    rows: int
    created: bool  # False when the same content was already stored


@dataclass(frozen=True)
class DatasetSpan:
    """One stored dataset's identity and time range, as a read chooses among them."""

    dataset_id: int
    instrument_id: str
    kind: str
    bar_ns: int | None
    rows: int
    start_ns: int
    end_ns: int


@dataclass(frozen=True)
class Recording:
    """Datasets of one instrument whose time ranges overlap (chained): one capture of the market."""

    instrument_id: str
    label: str
    datasets: tuple[DatasetSpan, ...]

    @property
    def start_ns(self) -> int:
        return min(d.start_ns for d in self.datasets)

    @property
    def end_ns(self) -> int:
        return max(d.end_ns for d in self.datasets)

    @property
    def first_iso(self) -> str:
        return ns_to_iso(self.start_ns)[:19] + "Z"

    @property
    def last_iso(self) -> str:
        return ns_to_iso(self.end_ns)[:19] + "Z"

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(sorted({d.kind for d in self.datasets}))

    @property
    def bar_seconds(self) -> tuple[int, ...]:
        return tuple(sorted({d.bar_ns // 1_000_000_000 for d in self.datasets if d.bar_ns is not None}))

    @property
    def dataset_ids(self) -> tuple[int, ...]:
        return tuple(sorted(d.dataset_id for d in self.datasets))

    @property
    def rows(self) -> int:
        return sum(d.rows for d in self.datasets)


def _group_recordings(rows: list[tuple]) -> list[Recording]:
    """Chain each instrument's datasets (sorted by start) into recordings while their ranges overlap."""
    groups: list[tuple[str, list[DatasetSpan]]] = []
    reach = 0
    for dataset_id, instrument_id, kind, bar_ns, row_count, first, last in rows:
        span = DatasetSpan(int(dataset_id), instrument_id, kind, None if bar_ns is None else int(bar_ns),
                           int(row_count), int(first), int(last))
        if groups and groups[-1][0] == instrument_id and span.start_ns <= reach:
            groups[-1][1].append(span)
            reach = max(reach, span.end_ns)
        else:
            groups.append((instrument_id, [span]))
            reach = span.end_ns
    recordings: list[Recording] = []
    for instrument_id, spans in groups:
        start = min(d.start_ns for d in spans)
        day = ns_to_iso(start)[:10]
        same_day = sum(1 for other_id, other in groups
                       if other_id == instrument_id and ns_to_iso(min(d.start_ns for d in other))[:10] == day)
        label = day if same_day == 1 else ns_to_iso(start)[:19] + "Z"
        recordings.append(Recording(instrument_id, label, tuple(spans)))
    return recordings


def _dataset_id_set(dataset_id: int | Iterable[int] | None) -> set[int] | None:
    if dataset_id is None:
        return None
    values = [dataset_id] if isinstance(dataset_id, (int, np.integer)) else list(dataset_id)
    if not values or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        raise StoreError(f"dataset_id must be an integer or a list of integers, got {dataset_id!r}")
    return {int(v) for v in values}


def _parse_read_kind(kind: DataKind | str) -> DataKind:
    try:
        return DataKind(kind)
    except ValueError:
        raise StoreError(f"unknown data kind {kind!r}; expected one of {', '.join(k.value for k in DataKind)}") \
            from None


def _rows_for_table(data: MarketData, dataset_id: int) -> pd.DataFrame:
    frame = data.frame
    n = len(frame)
    if data.kind is DataKind.BOOK:
        levels = sorted(int(c.rsplit("_", 1)[1]) for c in frame.columns if c.startswith("bid_px_"))
        parts = []
        for level in levels:
            part = pd.DataFrame({
                "row_no": np.arange(n, dtype="int64"),
                "ts_ns": frame["ts_ns"].to_numpy(),
                "level": np.full(n, level, dtype="int16"),
                "bid_px": frame[f"bid_px_{level}"].to_numpy(dtype="float64", na_value=np.nan),
                "bid_sz": frame[f"bid_sz_{level}"].to_numpy(dtype="float64", na_value=np.nan),
                "ask_px": frame[f"ask_px_{level}"].to_numpy(dtype="float64", na_value=np.nan),
                "ask_sz": frame[f"ask_sz_{level}"].to_numpy(dtype="float64", na_value=np.nan),
            })
            if "ts_event_ns" in frame.columns:
                part["ts_event_ns"] = frame["ts_event_ns"].to_numpy()
            parts.append(part)
        rows = pd.concat(parts, ignore_index=True)
    else:
        rows = frame.copy()
        rows.insert(0, "row_no", np.arange(n, dtype="int64"))
    rows.insert(0, "instrument_id", data.instrument_id)
    rows.insert(0, "dataset_id", np.full(len(rows), dataset_id, dtype="int32"))
    if data.bar_ns is not None:
        rows["bar_ns"] = np.int64(data.bar_ns)
    return rows


def _refuse_infinities(rows: pd.DataFrame, source: str) -> None:
    for column in rows.columns:
        if rows[column].dtype == "float64":
            values = rows[column].to_numpy()
            if np.isinf(values).any():
                raise StoreError(f"storing {source} failed, nothing was written: {column} holds an infinite "
                                 "value; expected finite prices and sizes")


def _book_to_wide(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty:
        return frame
    base = frame[frame["level"] == frame["level"].min()][["dataset_id", "row_no", "ts_ns", "ts_event_ns"]]
    base = base.set_index(["dataset_id", "row_no"])
    for level in sorted(frame["level"].unique()):
        part = frame[frame["level"] == level].set_index(["dataset_id", "row_no"])
        for column in ("bid_px", "bid_sz", "ask_px", "ask_sz"):
            base[f"{column}_{level}"] = part[column]
    return base.reset_index()


def _coerce_read(series: pd.Series, dtype: str) -> pd.Series:
    if dtype == "str":
        return series.astype("str").where(series.notna(), np.nan) if series.dtype != "str" else series
    if dtype == "boolean":
        return series.astype("boolean")
    return series.astype(dtype)


class MarketDataTables:
    """Ingest and read market data. Part of :class:`~tradebook.store.store.Store`: it works on the store's connection
    (``con``, ``transaction``, ``query``) like the rest of the class.
    """

    def ingest(self, data: MarketData) -> IngestResult:
        """Store a validated frame and its findings in one transaction.

        Loading the same content for the same instrument and kind again is a no-op
        that returns the existing dataset id.
        """
        if self.read_only:
            self._require_writer()  # raises
        if not isinstance(data, MarketData):
            raise StoreError(f"ingest takes a MarketData from tradebook.data loaders, got {type(data).__name__}")
        with self._lock:
            if data.instrument is not None:
                if data.instrument.instrument_id != data.instrument_id:
                    raise StoreError(f"{data.source}: the data is for {data.instrument_id} but carries the "
                                     f"definition of {data.instrument.instrument_id}")
                new_instrument = self._unregistered(data.instrument)
            else:
                new_instrument = self._bundled_if_unregistered(data.instrument_id)
            found = self.con.execute(
                "SELECT dataset_id, row_count FROM datasets WHERE instrument_id = ? AND kind = ? AND content_hash = ?",
                [data.instrument_id, str(data.kind), data.content_hash],
            ).fetchone()
            if found is not None:  # already stored: nothing to write (a lazy writer stays read-only)
                return IngestResult(int(found[0]), int(found[1]), created=False)
            self._require_writer()
            table = TABLE_FOR_KIND[data.kind]
            rows_view = f"_incoming_{table}"
            rows = _rows_for_table(data, 0)  # dataset_id is bound in the INSERT once known
            _refuse_infinities(rows, data.source)  # DuckDB's CHECK (px > 0) lets +inf through
            columns = [c for c in rows.columns if c != "dataset_id"]
            self.con.register(rows_view, rows)
            try:
                dataset_id = self._ingest_rows(data, table, rows_view, columns, new_instrument)
            finally:
                # after the transaction ended either way: unregistering inside an aborted
                # transaction would fail and hide the real error
                self.con.unregister(rows_view)
            return IngestResult(dataset_id, data.rows, created=True)

    def _ingest_rows(self, data: MarketData, table: str, rows_view: str, column_list: list[str],
                     new_instrument: Instrument | None) -> int:
        with self.transaction() as con:
            if new_instrument is not None:  # the caller's own definition lands with its data, or not at all
                row = instrument_row(new_instrument)
                con.execute(f"INSERT INTO instruments VALUES ({', '.join('?' * len(row))})", row)
            dataset_id = int(con.execute(
                "INSERT INTO datasets (instrument_id, kind, source, content_hash, bar_ns, row_count, "
                "first_ts_ns, last_ts_ns, loaded_at_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING dataset_id",
                [data.instrument_id, str(data.kind), data.source, data.content_hash, data.bar_ns, data.rows,
                 data.first_ts_ns, data.last_ts_ns, now_ns()],
            ).fetchone()[0])
            columns = ", ".join(column_list)
            try:
                con.execute(f"INSERT INTO {table} (dataset_id, {columns}) "
                            f"SELECT ?, {columns} FROM {rows_view}", [dataset_id])
            except duckdb.Error as exc:
                raise StoreError(f"storing {data.source} in {table} failed, nothing was written: {exc}") from exc
            for finding in data.findings:
                con.execute(
                    "INSERT INTO data_quality VALUES (?, ?, ?, ?, ?, ?)",
                    [dataset_id, finding.severity, finding.code, finding.message, finding.count,
                     finding.first_line],
                )
        return dataset_id

    def datasets(self) -> pd.DataFrame:
        return self.query("SELECT * FROM datasets ORDER BY dataset_id")

    def findings(self, dataset_id: int | None = None) -> pd.DataFrame:
        if dataset_id is None:
            return self.query("SELECT * FROM data_quality ORDER BY dataset_id")
        return self.query("SELECT * FROM data_quality WHERE dataset_id = ? ORDER BY dataset_id", [dataset_id])

    def recordings(self, instrument_id: str | None = None) -> pd.DataFrame:
        """The recordings the store holds, one row each: datasets of an instrument that overlap in time.

        Two captures of one instrument years apart (BTCUSDT.BINANCE on 2021-01-08 and
        2024-08-08) are two recordings; daily, minute and second bars of SPY overlap and
        make one recording with several bar sizes. ``recording`` is the label that
        :meth:`read` takes (the UTC start date, with the time when two start the same day).
        """
        rows = [{"instrument_id": r.instrument_id, "recording": r.label, "first": ns_to_iso(r.start_ns),
                 "last": ns_to_iso(r.end_ns), "start_ns": r.start_ns, "end_ns": r.end_ns,
                 "kinds": ", ".join(r.kinds), "bar_seconds": ", ".join(str(b) for b in r.bar_seconds),
                 "dataset_ids": ", ".join(str(i) for i in r.dataset_ids), "rows": r.rows}
                for r in self._recordings(instrument_id)]
        columns = ["instrument_id", "recording", "first", "last", "start_ns", "end_ns", "kinds", "bar_seconds",
                   "dataset_ids", "rows"]
        return pd.DataFrame(rows, columns=columns)

    def _recordings(self, instrument_id: str | None) -> list[Recording]:
        sql = ("SELECT dataset_id, instrument_id, kind, bar_ns, row_count, first_ts_ns, last_ts_ns FROM datasets"
               + (" WHERE instrument_id = ?" if instrument_id is not None else "")
               + " ORDER BY instrument_id, first_ts_ns, dataset_id")
        with self._lock:
            found = self.con.execute(sql, [] if instrument_id is None else [instrument_id]).fetchall()
        return _group_recordings(found)

    def read(
        self,
        kind: DataKind | str,
        instrument_id: str | None = None,
        *,
        start_ns: int | None = None,
        end_ns: int | None = None,
        dataset_id: int | Iterable[int] | None = None,
        recording: str | None = None,
        bar_seconds: int | None = None,
        datetime: bool = False,
    ) -> pd.DataFrame:
        """Market data of ``kind`` for one instrument, from one recording and one bar size, never mixed.

        Columns and dtypes are the loader's canonical ones (int64 UTC ns ``ts_ns``), rows in
        time then file order; bars carry a ``bar_seconds`` column. When the instrument has
        several recordings (or bar sizes) of ``kind``, pick one with ``recording`` (a label of
        :meth:`recordings`), ``dataset_id``, ``bar_seconds`` or a ``start_ns``/``end_ns``
        window that falls in one; otherwise :class:`AmbiguousReadError` lists the choices.
        ``start_ns`` is inclusive, ``end_ns`` exclusive. ``df.attrs`` says what was returned
        (instrument, kind, recording, dataset ids, time range, bar_seconds);
        ``datetime=True`` indexes the frame by a tz-aware UTC time (``df.tb.datetime()``).
        """
        kind = _parse_read_kind(kind)
        spec = SPECS[kind]
        table = TABLE_FOR_KIND[kind]
        is_bars = kind in (DataKind.TRADE_BARS, DataKind.QUOTE_BARS)
        if bar_seconds is not None and not is_bars:
            raise StoreError(f"bar_seconds applies to trade_bars and quote_bars, not {kind}")
        wanted_ids = _dataset_id_set(dataset_id)
        if instrument_id is None and wanted_ids is None:
            raise StoreError(f"read {kind}: name an instrument (or dataset_id); reading every instrument at once "
                             "would mix them. Known instruments: see store.recordings()")
        chosen, label = self._choose_datasets(kind, instrument_id, wanted_ids, recording, bar_seconds,
                                              start_ns, end_ns)
        where, params = [f"dataset_id IN ({', '.join('?' * len(chosen))})" if chosen else "FALSE"], \
            [d.dataset_id for d in chosen]
        for clause, value in (("ts_ns >= ?", start_ns), ("ts_ns < ?", end_ns)):
            if value is not None:
                where.append(clause)
                params.append(int(value))
        sql = f"SELECT * FROM {table} WHERE {' AND '.join(where)}"
        sql += " ORDER BY ts_ns, dataset_id, row_no" + (", level" if kind is DataKind.BOOK else "")
        frame = self.query(sql, params)
        if kind is DataKind.BOOK:
            frame = _book_to_wide(frame)
        present_sets = self._present_columns(kind, frame)
        columns = [c for c in spec.columns if c in present_sets]
        out = frame[columns].reset_index(drop=True) if len(frame) else pd.DataFrame(
            {c: pd.Series(dtype=_PANDAS_READ_DTYPES[spec.column_type(c)]) for c in columns})
        for column in columns:
            out[column] = _coerce_read(out[column], _PANDAS_READ_DTYPES[spec.column_type(column)])
        bar_ns = {d.bar_ns for d in chosen if d.bar_ns is not None}
        bar_size = next(iter(bar_ns)) // 1_000_000_000 if len(bar_ns) == 1 else None
        if is_bars:
            out["bar_seconds"] = np.full(len(out), bar_size if bar_size is not None else 0, dtype="int64")
        ts = out["ts_ns"].to_numpy()
        out.attrs.update({
            "instrument_id": instrument_id if instrument_id is not None else
            ", ".join(sorted({d.instrument_id for d in chosen})),
            "kind": str(kind),
            "recording": label,
            "dataset_ids": tuple(d.dataset_id for d in chosen),
            "start_ns": int(ts[0]) if len(ts) else None,
            "end_ns": int(ts[-1]) if len(ts) else None,
            "bar_seconds": bar_size,
        })
        if datetime:
            out = out.tb.datetime()
        return out

    def _choose_datasets(self, kind: DataKind, instrument_id: str | None, wanted_ids: set[int] | None,
                         recording: str | None, bar_seconds: int | None, start_ns: int | None,
                         end_ns: int | None) -> tuple[list[DatasetSpan], str | None]:
        """The datasets a read returns, all in one recording and of one bar size, and that recording's label."""
        recordings = self._recordings(instrument_id)
        if wanted_ids is not None:
            known = {d.dataset_id for r in recordings for d in r.datasets}
            unknown = sorted(wanted_ids - known)
            if unknown:
                raise StoreError(f"dataset_id {unknown} is not a dataset"
                                 f"{' of ' + instrument_id if instrument_id else ''} in {self.path}; "
                                 f"see store.recordings({instrument_id!r})")
        if recording is not None:
            labels = [r.label for r in recordings]
            if recording not in labels:
                raise StoreError(f"no recording {recording!r} of {instrument_id} in {self.path}; "
                                 f"expected one of {labels or 'none (load data first)'}")
        bar_ns = None if bar_seconds is None else int(bar_seconds) * 1_000_000_000
        candidates: list[tuple[Recording, DatasetSpan]] = []
        for r in recordings:
            if recording is not None and r.label != recording:
                continue
            for d in r.datasets:
                if d.kind != str(kind) or (wanted_ids is not None and d.dataset_id not in wanted_ids):
                    continue
                if bar_ns is not None and d.bar_ns != bar_ns:
                    continue
                if (start_ns is not None and d.end_ns < start_ns) or (end_ns is not None and d.start_ns >= end_ns):
                    continue
                candidates.append((r, d))
        if instrument_id is None:  # by dataset id only: they name what they want
            return [d for _, d in candidates], None
        spans = {r.label: r for r, _ in candidates}
        if len(spans) > 1:
            choices = "; ".join(
                f"{label} ({r.first_iso} to {r.last_iso}, dataset_id "
                f"{', '.join(str(d.dataset_id) for rr, d in candidates if rr is r)})" for label, r in spans.items())
            first = next(iter(spans))
            raise AmbiguousReadError(
                f"{instrument_id} has {len(spans)} recordings of {kind}, which a read will not join: {choices}; "
                f"pick one with recording={first!r}, dataset_id=... or a start_ns/end_ns window inside one")
        sizes = sorted({d.bar_ns for _, d in candidates if d.bar_ns is not None})
        if len(sizes) > 1:
            listed = ", ".join(str(b // 1_000_000_000) for b in sizes)
            raise AmbiguousReadError(
                f"{instrument_id} has {kind} of {len(sizes)} bar sizes ({listed} seconds), which a read will not "
                f"interleave; pick one with bar_seconds= ({listed.replace(', ', ' or ')})")
        return [d for _, d in candidates], (next(iter(spans)) if spans else None)

    def _present_columns(self, kind: DataKind, frame: pd.DataFrame) -> set[str]:
        """Columns worth returning: required ones, and optional ones holding any value."""
        spec = SPECS[kind]
        present = set(spec.required)
        for column in spec.optional:
            if column in frame.columns and frame[column].notna().any():
                present.add(column)
        return present

    def quotes(
        self, instrument_id: str | None = None, *, start_ns: int | None = None, end_ns: int | None = None,
        dataset_id: int | Iterable[int] | None = None, recording: str | None = None, datetime: bool = False,
    ) -> pd.DataFrame:
        """L1 quotes (bid/ask prices and sizes) of one instrument and recording: see :meth:`read`."""
        return self.read(DataKind.QUOTES, instrument_id, start_ns=start_ns, end_ns=end_ns, dataset_id=dataset_id,
                         recording=recording, datetime=datetime)

    def trades(
        self, instrument_id: str | None = None, *, start_ns: int | None = None, end_ns: int | None = None,
        dataset_id: int | Iterable[int] | None = None, recording: str | None = None, datetime: bool = False,
    ) -> pd.DataFrame:
        """Trades (price, size, aggressor side) of one instrument and recording: see :meth:`read`."""
        return self.read(DataKind.TRADES, instrument_id, start_ns=start_ns, end_ns=end_ns, dataset_id=dataset_id,
                         recording=recording, datetime=datetime)

    def bars(
        self, instrument_id: str | None = None, *, start_ns: int | None = None, end_ns: int | None = None,
        dataset_id: int | Iterable[int] | None = None, recording: str | None = None, datetime: bool = False,
        bar_seconds: int | None = None,
    ) -> pd.DataFrame:
        """Trade bars (OHLCV) of one bar size of one instrument and recording: see :meth:`read`."""
        return self.read(DataKind.TRADE_BARS, instrument_id, start_ns=start_ns, end_ns=end_ns, dataset_id=dataset_id,
                         recording=recording, bar_seconds=bar_seconds, datetime=datetime)

    def quote_bars(
        self, instrument_id: str | None = None, *, start_ns: int | None = None, end_ns: int | None = None,
        dataset_id: int | Iterable[int] | None = None, recording: str | None = None, datetime: bool = False,
        bar_seconds: int | None = None,
    ) -> pd.DataFrame:
        """Bid/ask bars of one bar size of one instrument and recording: see :meth:`read`."""
        return self.read(DataKind.QUOTE_BARS, instrument_id, start_ns=start_ns, end_ns=end_ns, dataset_id=dataset_id,
                         recording=recording, bar_seconds=bar_seconds, datetime=datetime)

    def depth(
        self, instrument_id: str | None = None, *, start_ns: int | None = None, end_ns: int | None = None,
        dataset_id: int | Iterable[int] | None = None, recording: str | None = None, datetime: bool = False,
    ) -> pd.DataFrame:
        """L2 depth updates (snapshots and diffs) of one instrument and recording: see :meth:`read`."""
        return self.read(DataKind.DEPTH, instrument_id, start_ns=start_ns, end_ns=end_ns, dataset_id=dataset_id,
                         recording=recording, datetime=datetime)

    def book(
        self, instrument_id: str | None = None, *, start_ns: int | None = None, end_ns: int | None = None,
        dataset_id: int | Iterable[int] | None = None, recording: str | None = None, datetime: bool = False,
    ) -> pd.DataFrame:
        """Top-N book rows, wide (bid_px_0, ...) of one instrument and recording: see :meth:`read`."""
        return self.read(DataKind.BOOK, instrument_id, start_ns=start_ns, end_ns=end_ns, dataset_id=dataset_id,
                         recording=recording, datetime=datetime)

    def mbp1(
        self, instrument_id: str | None = None, *, start_ns: int | None = None, end_ns: int | None = None,
        dataset_id: int | Iterable[int] | None = None, recording: str | None = None, datetime: bool = False,
    ) -> pd.DataFrame:
        """MBP-1 events (the top of book after each event) of one instrument and recording: see :meth:`read`."""
        return self.read(DataKind.MBP1, instrument_id, start_ns=start_ns, end_ns=end_ns, dataset_id=dataset_id,
                         recording=recording, datetime=datetime)

    def adjustment_factors(
        self, instrument_id: str | None = None, *, start_ns: int | None = None, end_ns: int | None = None,
        dataset_id: int | Iterable[int] | None = None, recording: str | None = None, datetime: bool = False,
    ) -> pd.DataFrame:
        """Price and split adjustment factors of one instrument and recording: see :meth:`read`."""
        return self.read(DataKind.ADJUSTMENT_FACTORS, instrument_id, start_ns=start_ns, end_ns=end_ns,
                         dataset_id=dataset_id, recording=recording, datetime=datetime)
