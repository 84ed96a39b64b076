"""The DuckDB store: transactions, the single-writer lock, read-only mode, its own write defences, crash safety."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tradebook.data import DataKind, MarketData
from tradebook.errors import (AmbiguousReadError, StoreError, StoreLockedError, TradebookError,
                              UnknownInstrumentError)
from tradebook.model import BUNDLED_INSTRUMENTS
from tradebook.store import Store, default_store_path, workspace_root
from tradebook.store import open_store as tb_open_store

SMALL_QUOTES = "binance_spot_BTCUSDT_20210108T0000_l1_quotes.csv.gz"
SMALL_FX_QUOTES = "dukascopy_EURUSD_20260713T12_ticks.csv.gz"
DEPTH_FILE = "binance_spot_btcusdt_20240808T2354-20240809T0005_l2_depth.csv.gz"


def _count(store: Store, table: str, where: str = "") -> int:
    return int(store.query(f"SELECT count(*) AS n FROM {table} {where}")["n"].iloc[0])


# -- transactions ------------------------------------------------------------------------
class TestTransaction:
    def test_exception_rolls_everything_back(self, tmp_path, bundled):
        path = tmp_path / "tx.duckdb"
        with Store(path) as store:
            store.ingest(bundled(SMALL_QUOTES))
            quotes_before, instruments_before = _count(store, "quotes"), _count(store, "instruments")

            class Boom(Exception):
                pass

            with pytest.raises(Boom):
                with store.transaction() as con:
                    con.execute("INSERT INTO data_quality VALUES (999, 'info', 'test', 'inside tx', 0, NULL)")
                    con.execute("DELETE FROM quotes")
                    con.execute("DELETE FROM instruments")
                    assert con.execute("SELECT count(*) FROM quotes").fetchone()[0] == 0  # visible inside
                    raise Boom()
            assert _count(store, "data_quality", "WHERE dataset_id = 999") == 0
            assert _count(store, "quotes") == quotes_before == 451
            assert _count(store, "instruments") == instruments_before
        with Store(path) as store:  # and nothing of it reached the file
            assert _count(store, "data_quality", "WHERE dataset_id = 999") == 0
            assert _count(store, "quotes") == 451

    def test_success_commits_and_persists(self, tmp_path):
        path = tmp_path / "tx.duckdb"
        with Store(path) as store:
            with store.transaction() as con:
                con.execute("INSERT INTO data_quality VALUES (999, 'info', 'test', 'committed', 0, NULL)")
        with Store(path) as store:
            assert store.query("SELECT message FROM data_quality WHERE dataset_id = 999")["message"].tolist() == [
                "committed"]

    def test_store_is_usable_after_a_rollback(self, store, bundled):
        with pytest.raises(KeyboardInterrupt):  # BaseException too
            with store.transaction() as con:
                con.execute("DELETE FROM instruments")
                raise KeyboardInterrupt
        result = store.ingest(bundled(SMALL_QUOTES))
        assert result.created and _count(store, "quotes") == 451


# -- the single-writer lock, across processes ------------------------------------------------
LOCK_CHILD = """
import sys
from tradebook.store import Store
try:
    Store(sys.argv[1], read_only=sys.argv[2] == "ro").close()
except Exception as exc:
    print(type(exc).__name__)
    print(exc)
else:
    print("opened")
"""


class TestLock:
    @pytest.mark.parametrize("mode", ["rw", "ro"])
    def test_second_process_gets_store_locked_error(self, store, run_python, mode):
        result = run_python(LOCK_CHILD, str(store.path), mode)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0] == "StoreLockedError", result.stdout + result.stderr
        message = "\n".join(lines[1:])
        assert "in use" in message
        assert str(store.path) in message
        assert f"PID {os.getpid()} `" in message and "for writing since" in message  # names the holder
        assert len(message.splitlines()) == 1
        assert "Conflicting lock" not in message  # DuckDB's raw text is translated

    def test_released_after_close(self, tmp_path, run_python):
        path = tmp_path / "x.duckdb"
        Store(path).close()
        result = run_python(LOCK_CHILD, str(path), "rw")
        assert result.stdout.strip() == "opened", result.stdout + result.stderr

    def test_locked_error_is_a_store_error(self):
        assert issubclass(StoreLockedError, StoreError) and issubclass(StoreError, TradebookError)


HOLD_CHILD = """
import sys
import tradebook as tb
path, mode = sys.argv[1], sys.argv[2]
if mode == "reader":  # a notebook that only reads: open_store holds the file read-only until a write
    store = tb.open_store(path)
    print(len(store.quotes("BTCUSDT.BINANCE")), flush=True)
else:
    store = tb.Store(path, purpose="a paper session (run demo)")
print("ready", flush=True)
sys.stdin.readline()
store.close()
"""


@pytest.fixture
def holding(tmp_path):
    """``holding(path, mode)`` starts a process holding the store (``reader`` or ``writer``) until the test ends."""
    children = []

    def start(path: Path, mode: str) -> subprocess.Popen:
        child = subprocess.Popen([sys.executable, "-c", HOLD_CHILD, str(path), mode], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        children.append(child)
        lines = []
        while (line := child.stdout.readline()) and line.strip() != "ready":
            lines.append(line)
        assert line.strip() == "ready", "".join(lines) + child.stderr.read()
        return child

    yield start
    for child in children:
        if child.returncode is not None:
            continue  # the test let it go already
        try:
            child.communicate("\n", timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


class TestWorkspaceSharing:
    def test_readers_share_with_a_reading_notebook(self, tmp_path, bundled, holding, run_python):
        path = tmp_path / "shared.duckdb"
        with Store(path) as store:
            store.ingest(bundled(SMALL_QUOTES))
        holding(path, "reader")
        assert not (tmp_path / "shared.duckdb.holder").exists()  # a reader is no writer
        result = run_python("import sys, tradebook as tb\n"
                            "with tb.open_store(sys.argv[1]) as s: print(len(s.quotes('BTCUSDT.BINANCE')))",
                            str(path))
        assert result.returncode == 0 and result.stdout.strip() == "451", result.stderr

    def test_a_lazy_writer_takes_the_lock_at_its_first_write_and_names_a_reader(self, tmp_path, bundled, holding,
                                                                                 snapshot):
        path = tmp_path / "lazy.duckdb"
        with Store(path) as store:
            store.ingest(bundled(SMALL_QUOTES))
        reader = holding(path, "reader")
        store = Store(path, lazy_writer=True)
        try:
            assert "read-only until a write" in repr(store)
            before = snapshot(store)
            with pytest.raises(StoreLockedError) as caught:
                store.ingest(bundled(SMALL_FX_QUOTES))
            message = str(caught.value)
            assert f"PID {reader.pid} `" in message and "close the store there" in message, message
            assert snapshot(store) == before  # still reads, nothing written
            reader.communicate("\n", timeout=30)
            assert store.ingest(bundled(SMALL_FX_QUOTES)).created
            assert "read-write" in repr(store)
            holder = json.loads((tmp_path / "lazy.duckdb.holder").read_text())
            assert holder["pid"] == os.getpid()
        finally:
            store.close()
        assert not (tmp_path / "lazy.duckdb.holder").exists()

    def test_a_lazy_writer_releases_the_file_for_readers(self, tmp_path, bundled, run_python):
        path = tmp_path / "released.duckdb"
        reader = "import sys, tradebook as tb\nwith tb.open_store(sys.argv[1]) as s: print(len(s.datasets()))"
        store = tb_open_store(path)
        try:
            store.ingest(bundled(SMALL_QUOTES))
            assert (tmp_path / "released.duckdb.holder").exists()
            held = run_python(reader, str(path))
            assert held.returncode == 1 and "StoreLockedError" in held.stderr and "for writing" in held.stderr
            assert store.release_writer()
            assert not (tmp_path / "released.duckdb.holder").exists()
            assert not store.release_writer()  # nothing to release twice
            free = run_python(reader, str(path))
            assert free.returncode == 0 and free.stdout.strip() == "1", free.stderr
            assert store.ingest(bundled(SMALL_FX_QUOTES)).created  # the next write takes it again
            assert len(store.datasets()) == 2
        finally:
            store.close()
        with Store(path) as pinned:  # a store that holds the writer on purpose keeps it
            assert not pinned.release_writer()
        assert repr(pinned) == f"Store({str(path)!r}, closed)"

    def test_a_rerun_that_writes_nothing_takes_no_lock(self, tmp_path, bundled, holding):
        """A notebook re-run on a loaded store (same files, same instruments) stays a reader beside others."""
        from tradebook.demo import load_bundled_into

        path = tmp_path / "rerun.duckdb"
        with Store(path) as store:
            store.register_instruments()
            store.ingest(bundled(SMALL_QUOTES))
        holding(path, "reader")  # another process reads meanwhile
        with Store(path, lazy_writer=True) as store:
            assert store.register_instruments() == 0
            assert not store.ingest(bundled(SMALL_QUOTES)).created
            assert "read-only until a write" in repr(store)
            with pytest.raises(StoreLockedError, match="holds it open"):
                store.ingest(bundled(SMALL_FX_QUOTES))  # a real write still needs the file to itself
        with pytest.raises(StoreError, match="open read-only"), Store(path, read_only=True) as strict:
            load_bundled_into(strict)

    def test_a_writer_is_named_with_what_it_does(self, tmp_path, holding, run_python):
        path = tmp_path / "held.duckdb"
        Store(path).close()
        writer = holding(path, "writer")
        result = run_python(LOCK_CHILD, str(path), "ro")
        lines = result.stdout.splitlines()
        assert lines[0] == "StoreLockedError" and len(lines) == 2, result.stdout + result.stderr
        assert f"a paper session (run demo) in PID {writer.pid} `python" in lines[1]
        assert "holds it for writing since" in lines[1] and "try again when it stops" in lines[1]

    def test_a_stale_holder_file_is_ignored(self, tmp_path, run_python):
        path = tmp_path / "stale.duckdb"
        Store(path).close()
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout.strip()
        holder = tmp_path / "stale.duckdb.holder"
        holder.write_text(json.dumps({"pid": int(dead), "command": "gone", "since_ns": 1, "purpose": "old"}))
        assert run_python(LOCK_CHILD, str(path), "rw").stdout.strip() == "opened"
        with Store(path) as store:  # a writer replaces it with its own
            assert json.loads(holder.read_text())["pid"] == os.getpid()
            store.announce("a notebook loading data")
            assert json.loads(holder.read_text())["purpose"] == "a notebook loading data"
        assert not holder.exists()

    def test_two_stores_of_one_process_share_the_writer(self, tmp_path):
        path = tmp_path / "one.duckdb"
        writer = Store(path)
        reader = Store(path, lazy_writer=True)  # same process: shares the writer's connection settings
        try:
            assert len(reader.datasets()) == 0
        finally:
            reader.close()
            assert (tmp_path / "one.duckdb.holder").exists()  # the other store still writes
            writer.close()
        assert not (tmp_path / "one.duckdb.holder").exists()


def test_a_writer_beside_readers_of_the_same_process(tmp_path, bundled):
    """A notebook holding open_store() (read-only until a write) that then opens a writer, or runs the demo."""
    path = tmp_path / "same.duckdb"
    with Store(path) as store:
        store.ingest(bundled(SMALL_QUOTES))
    reader = Store(path, lazy_writer=True)
    strict = Store(path, read_only=True)
    writer = Store(path)
    try:
        writer.ingest(bundled(SMALL_FX_QUOTES))
        assert len(reader.datasets()) == len(strict.datasets()) == 2  # they read on, and see the write
        with pytest.raises(StoreError, match="open read-only"):
            strict.register_instruments()
        reader.register_instruments()  # and the lazy one writes too
    finally:
        for store in (writer, strict, reader):
            store.close()
    assert not (tmp_path / "same.duckdb.holder").exists()
    with Store(path, read_only=True) as store:
        assert len(store.datasets()) == 2


class TestDefaultStorePath:
    def test_environment_wins(self, tmp_path, monkeypatch):
        monkeypatch.setenv("TRADEBOOK_STORE", str(tmp_path / "elsewhere.duckdb"))
        assert default_store_path() == tmp_path / "elsewhere.duckdb"

    def test_walks_up_to_the_project_root(self, tmp_path, monkeypatch):
        monkeypatch.delenv("TRADEBOOK_STORE", raising=False)
        (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
        (tmp_path / "notebooks" / "deep").mkdir(parents=True)
        monkeypatch.chdir(tmp_path / "notebooks" / "deep")
        assert default_store_path() == tmp_path.resolve() / "tradebook.duckdb"
        assert workspace_root() == tmp_path.resolve()

    def test_without_a_project_the_current_folder(self, tmp_path, monkeypatch):
        monkeypatch.delenv("TRADEBOOK_STORE", raising=False)
        if any((p / m).exists() for p in (tmp_path, *tmp_path.parents) for m in ("pyproject.toml", ".git")):
            pytest.skip("tmp_path lies inside a project")
        monkeypatch.chdir(tmp_path)
        assert default_store_path() == tmp_path.resolve() / "tradebook.duckdb"


# -- read-only mode ------------------------------------------------------------------------
class TestReadOnly:
    def test_missing_file_read_only_is_a_store_error_and_creates_nothing(self, tmp_path):
        path = tmp_path / "missing.duckdb"
        with pytest.raises(StoreError, match="no store at"):
            Store(path, read_only=True)
        assert not path.exists()

    def test_writes_are_refused_reads_work(self, tmp_path, bundled):
        path = tmp_path / "ro.duckdb"
        md = bundled(SMALL_QUOTES)
        with Store(path) as store:
            dataset_id = store.ingest(md).dataset_id
        with Store(path, read_only=True) as store:
            assert store.read_only
            for write in (
                lambda: store.ingest(md),
                lambda: store.ingest(bundled("dukascopy_EURUSD_20260713T12_ticks.csv.gz")),
                lambda: store.register_instruments(),
                lambda: store.transaction().__enter__(),
            ):
                with pytest.raises(StoreError, match="read-only"):
                    write()
            pd.testing.assert_frame_equal(store.read("quotes", md.instrument_id, dataset_id=dataset_id), md.frame,
                                          check_exact=True)
            assert len(store.datasets()) == 1

    def test_closed_store_refuses_everything(self, tmp_path):
        store = Store(tmp_path / "c.duckdb")
        store.close()
        store.close()  # idempotent
        with pytest.raises(StoreError, match="closed"):
            store.datasets()


# -- the store's own defences (data that did not come through a loader) ---------------------
class TestIngestDefence:
    @staticmethod
    def _tampered(md: MarketData, column: str, value: float) -> MarketData:
        frame = md.frame.copy()
        frame.loc[5, column] = value
        return dataclasses.replace(md, frame=frame)

    @pytest.mark.parametrize(("column", "value"), [("bid_sz", -1.0), ("ask_sz", -0.5), ("bid_px", -1.0),
                                                   ("ask_px", 0.0)])
    def test_constraint_violation_leaves_the_store_unchanged(self, seeded_store, snapshot, bundled, column, value):
        md = bundled(SMALL_QUOTES)  # not yet in the seeded store
        # ingest registers a bundled instrument on first use, in its own transaction, before the data goes in;
        # register them all first so that the snapshot isolates the data write
        seeded_store.register_instruments()
        before = snapshot(seeded_store)
        with pytest.raises(StoreError, match="nothing was written"):
            seeded_store.ingest(self._tampered(md, column, value))
        after = snapshot(seeded_store)
        assert after == before
        assert after["counts"]["datasets"] == 2 and after["counts"]["quotes"] == 3551
        # the store still works, and the good file goes in whole
        result = seeded_store.ingest(md)
        assert result.created and result.rows == 451
        assert _count(seeded_store, "quotes", f"WHERE dataset_id = {result.dataset_id}") == 451

    def test_negative_size_is_a_store_error(self, seeded_store, bundled):
        with pytest.raises(StoreError, match="nothing was written"):
            seeded_store.ingest(self._tampered(bundled(SMALL_QUOTES), "bid_sz", -1.0))

    @pytest.mark.parametrize("column", ["ask_px", "bid_sz"])
    def test_infinite_values_are_refused(self, seeded_store, snapshot, bundled, column):
        seeded_store.register_instruments()
        before = snapshot(seeded_store)
        with pytest.raises(StoreError):
            seeded_store.ingest(self._tampered(bundled(SMALL_QUOTES), column, float("inf")))
        assert snapshot(seeded_store) == before

    def test_not_market_data(self, store, bundled):
        with pytest.raises(StoreError, match="MarketData"):
            store.ingest(bundled(SMALL_QUOTES).frame)

    def test_unknown_instrument(self, seeded_store, snapshot, bundled):
        before = snapshot(seeded_store)
        with pytest.raises(UnknownInstrumentError, match="NOPE.X"):
            seeded_store.ingest(dataclasses.replace(bundled(SMALL_QUOTES), instrument_id="NOPE.X"))
        assert snapshot(seeded_store) == before


# -- reading -------------------------------------------------------------------------------
class TestRead:
    def test_time_window_start_inclusive_end_exclusive(self, store, bundled):
        md = bundled(SMALL_QUOTES)
        store.ingest(md)
        ts = md.frame["ts_ns"]
        start, end = int(ts.iloc[100]), int(ts.iloc[200])
        window = store.quotes(md.instrument_id, start_ns=start, end_ns=end)
        expected = md.frame[(ts >= start) & (ts < end)].reset_index(drop=True)
        pd.testing.assert_frame_equal(window, expected, check_exact=True)
        assert int(window["ts_ns"].iloc[0]) == start and int(window["ts_ns"].iloc[-1]) < end

    def test_two_recordings_are_never_joined(self, store, bundled, snapshot):
        a, b = bundled(SMALL_QUOTES), bundled("binance_spot_btcusdt_20240808T2354-20240809T0005_l1_quotes.csv.gz")
        first, second = store.ingest(b), store.ingest(a)
        before = snapshot(store)
        with pytest.raises(AmbiguousReadError) as caught:
            store.quotes("BTCUSDT.BINANCE")
        message = str(caught.value)
        for expected in ("2 recordings", "2021-01-08", "2024-08-08", f"dataset_id {first.dataset_id}",
                         f"dataset_id {second.dataset_id}", "recording="):
            assert expected in message, message
        assert snapshot(store) == before
        recordings = store.recordings("BTCUSDT.BINANCE")
        assert recordings["recording"].tolist() == ["2021-01-08", "2024-08-08"]
        assert recordings["dataset_ids"].tolist() == [str(second.dataset_id), str(first.dataset_id)]
        # each way of picking gives exactly one recording, labelled
        by_label = store.quotes("BTCUSDT.BINANCE", recording="2021-01-08")
        by_id = store.quotes("BTCUSDT.BINANCE", dataset_id=second.dataset_id)
        by_window = store.quotes("BTCUSDT.BINANCE", start_ns=a.first_ts_ns, end_ns=a.last_ts_ns + 1)
        for frame in (by_label, by_id, by_window):
            pd.testing.assert_frame_equal(frame, a.frame, check_exact=True, check_dtype=False)
            assert frame.attrs["recording"] == "2021-01-08"
            assert frame.attrs["dataset_ids"] == (second.dataset_id,)
            assert frame.attrs["instrument_id"] == "BTCUSDT.BINANCE" and frame.attrs["kind"] == "quotes"
            assert (frame.attrs["start_ns"], frame.attrs["end_ns"]) == (a.first_ts_ns, a.last_ts_ns)
        later = store.quotes("BTCUSDT.BINANCE", recording="2024-08-08")
        assert len(later) == b.rows and later.attrs["dataset_ids"] == (first.dataset_id,)
        with pytest.raises(StoreError, match=r"no recording '2020-01-01' of BTCUSDT.BINANCE.*'2021-01-08'"):
            store.quotes("BTCUSDT.BINANCE", recording="2020-01-01")

    def test_bar_sizes_are_never_interleaved(self, store, bundled):
        sizes = {"spy.csv.gz": 86_400, "spy_trade.csv.gz": 60, "spy_20131007_trade.csv.gz": 1}
        loaded = {seconds: bundled(name) for name, seconds in sizes.items()}
        for md in loaded.values():
            store.ingest(md)
        with pytest.raises(AmbiguousReadError, match=r"3 bar sizes \(1, 60, 86400 seconds\).*bar_seconds="):
            store.bars("SPY.ARCX")
        assert store.recordings("SPY.ARCX")["bar_seconds"].tolist() == ["1, 60, 86400"]
        for seconds, md in loaded.items():
            bars = store.bars("SPY.ARCX", bar_seconds=seconds)
            assert bars.attrs["bar_seconds"] == seconds
            assert (bars["bar_seconds"] == seconds).all() and bars["bar_seconds"].dtype == "int64"
            pd.testing.assert_frame_equal(bars.drop(columns="bar_seconds"), md.frame, check_exact=True,
                                          check_dtype=False)

    def test_datetime_index_for_people(self, store, bundled):
        md = bundled(SMALL_QUOTES)
        store.ingest(md)
        frame = store.quotes(md.instrument_id, datetime=True)
        assert str(frame.index.tz) == "UTC" and frame.index.name == "time"
        assert frame.index[0] == pd.Timestamp(int(md.frame["ts_ns"].iloc[0]), tz="UTC")
        assert frame["ts_ns"].dtype == "int64"  # the ns column stays
        plain = store.quotes(md.instrument_id)
        pd.testing.assert_frame_equal(plain.tb.datetime().reset_index(drop=True), plain)
        assert str(plain.tb.datetime(tz="America/New_York").index.tz) == "America/New_York"
        with pytest.raises(TradebookError, match="no column 'nope'"):
            plain.tb.datetime("nope")
        with pytest.raises(TradebookError, match="expected int64 nanoseconds"):
            plain.tb.datetime("bid_px")

    def test_reading_every_instrument_at_once_is_refused(self, seeded_store):
        with pytest.raises(StoreError, match="name an instrument"):
            seeded_store.quotes()

    def test_empty_read_has_typed_columns(self, store):
        empty = store.read(DataKind.TRADES, "BTCUSDT.BINANCE")
        assert len(empty) == 0
        assert empty["ts_ns"].dtype == "int64" and empty["price"].dtype == "float64"

    def test_bad_sql_is_a_store_error(self, store):
        with pytest.raises(StoreError, match="query failed"):
            store.query("SELECT * FROM no_such_table")

    def test_instruments_round_trip(self, store):
        assert store.register_instruments() == len(BUNDLED_INSTRUMENTS)
        assert store.register_instruments() == 0  # unchanged specs are not rewritten
        for instrument_id, instrument in BUNDLED_INSTRUMENTS.items():
            assert store.instrument(instrument_id) == instrument
        with pytest.raises(UnknownInstrumentError):
            store.instrument("NOPE.X")


# -- crash safety: SIGKILL in the middle of a large ingest ------------------------------------
KILL_CHILD = """
import sys
from tradebook.data import load_bundled
from tradebook.store import Store
store = Store(sys.argv[1])
md = load_bundled(sys.argv[2])
print("ready", flush=True)
result = store.ingest(md)
print("ingested", result.rows, flush=True)
store.close()
print("closed", flush=True)
"""


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
@pytest.mark.parametrize(
    ("clock", "delay"),
    [("after_start", 0.3), ("after_ready", 0.0), ("after_ready", 0.05), ("after_ready", 0.15),
     ("after_ready", 0.3), ("after_start", 2.5)],
    ids=lambda v: str(v),
)
def test_kill_9_during_ingest_leaves_all_or_nothing(tmp_path, bundled, clock, delay):
    """``clock`` says when the delay starts: at process start, or once the child is about to ingest."""
    md = bundled(DEPTH_FILE)
    assert md.rows == 300_111
    path = tmp_path / "killed.duckdb"
    child = subprocess.Popen([sys.executable, "-c", KILL_CHILD, str(path), DEPTH_FILE],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(60, child.kill)
    watchdog.start()
    try:
        if clock == "after_ready":
            assert child.stdout.readline().strip() == "ready", child.stderr.read()
        time.sleep(delay)
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
        child.wait()
        out, err = child.communicate()
    finally:
        watchdog.cancel()
    assert child.returncode in (-signal.SIGKILL, 0), err

    with Store(path) as store:  # opens (and replays the WAL) after the crash
        datasets = store.query("SELECT dataset_id, row_count, kind FROM datasets WHERE kind = 'depth'")
        rows = _count(store, "depth_updates")
        if "ingested" in out:  # ingest returned before the kill: committed data must survive SIGKILL
            assert len(datasets) == 1
        if len(datasets) == 0:
            assert rows == 0
            assert _count(store, "data_quality") == 0
        else:
            assert len(datasets) == 1
            dataset_id, row_count = int(datasets["dataset_id"].iloc[0]), int(datasets["row_count"].iloc[0])
            assert row_count == md.rows
            assert rows == row_count  # never a partial table
            stats = store.query(f"SELECT count(DISTINCT row_no) AS n, min(row_no) AS lo, max(row_no) AS hi "
                                f"FROM depth_updates WHERE dataset_id = {dataset_id}")
            assert stats.iloc[0].tolist() == [md.rows, 0, md.rows - 1]
            assert _count(store, "data_quality", f"WHERE dataset_id = {dataset_id}") == len(md.findings)
        # whichever way it went, the store takes the file now, exactly once
        result = store.ingest(md)
        assert result.created is (len(datasets) == 0)
        assert _count(store, "depth_updates") == md.rows


def test_instruments_read_back_exactly_as_specified(store):
    store.register_instruments()
    for spec in BUNDLED_INSTRUMENTS.values():
        stored = store.instrument(spec.instrument_id)
        assert stored == spec
        # same text too: a multiplier of 50 must not come back as 5E+1
        for field in ("tick_size", "lot_size", "min_quantity", "min_notional", "multiplier"):
            assert str(getattr(stored, field)) == str(getattr(spec, field)), (spec.instrument_id, field)


# -- calibrations ---------------------------------------------------------------------
def test_calibrations_are_versioned_per_instrument_and_read_back(tmp_path):
    path = tmp_path / "cal.duckdb"
    with Store(path) as s:
        first = s.save_calibration("ESU4.GLBX", '{"a": 1}', data_start_ns=1, data_end_ns=5, dataset_ids=[3, 2],
                                   diagnostics={"mae": np.float64(0.5), "n": np.int64(7), "curve": np.arange(2)})
        second = s.save_calibration("ESU4.GLBX", '{"a": 2}', data_start_ns=1, data_end_ns=9, dataset_ids=[2],
                                    diagnostics={"mae": float("nan")}, provenance='{"corrects": "ESU4.GLBX@v1"}')
        other = s.save_calibration("IBM.XNYS", "{}", data_start_ns=0, data_end_ns=0, dataset_ids=[], diagnostics={})
    assert (first.calibration_id, second.calibration_id, other.calibration_id) == (
        "ESU4.GLBX@v1", "ESU4.GLBX@v2", "IBM.XNYS@v1")
    with Store(path, read_only=True) as s:  # survives reopening
        assert s.calibration("ESU4.GLBX").params == '{"a": 2}'  # latest by instrument
        again = s.calibration("ESU4.GLBX@v1")
        assert again.dataset_ids == (2, 3) and again.diagnostics == {"mae": 0.5, "n": 7, "curve": [0, 1]}
        assert np.isnan(s.calibration("ESU4.GLBX@v2").diagnostics["mae"])
        assert (again.provenance, s.calibration("ESU4.GLBX@v2").provenance) == ("", '{"corrects": "ESU4.GLBX@v1"}')
        assert s.calibrations()["calibration_id"].tolist() == ["ESU4.GLBX@v1", "ESU4.GLBX@v2", "IBM.XNYS@v1"]
        with pytest.raises(StoreError, match="no calibration 'ESU4.GLBX@v9'.*ESU4.GLBX@v1"):
            s.calibration("ESU4.GLBX@v9")


def test_calibration_refuses_bad_params_and_keeps_versions(store):
    with pytest.raises(StoreError, match="not JSON"):
        store.save_calibration("ESU4.GLBX", "{oops", data_start_ns=1, data_end_ns=2, dataset_ids=[], diagnostics={})
    with pytest.raises(StoreError, match="reversed"):
        store.save_calibration("ESU4.GLBX", "{}", data_start_ns=3, data_end_ns=2, dataset_ids=[], diagnostics={})
    assert store.calibrations().empty
    assert store.save_calibration("ESU4.GLBX", "{}", data_start_ns=1, data_end_ns=2, dataset_ids=[],
                                  diagnostics={}).version == 1


@pytest.mark.parametrize("where", ["same filesystem", "another filesystem"])
def test_order_path_batch_read_from_a_journal_byte_range(tmp_path, where):
    """A batch names its records as bytes [start, end) of a journal file; the store copies exactly those
    (in the kernel, or by reading and writing where the kernel cannot copy across filesystems)."""
    from tradebook.store.journal import Journal
    from tradebook.store.order_path import OrderPathBatch

    directory = tmp_path
    if where == "another filesystem":  # tmpfs: the kernel refuses to copy across, the store reads and writes
        directory = Path(tempfile.mkdtemp(dir="/dev/shm"))
        assert os.stat(directory).st_dev != os.stat(tmp_path).st_dev
    try:
        journal = Journal(directory / "alerts.journal", sync=False)
        starts = []
        for n in range(1, 6):
            starts.append(journal.size)
            journal.append({"kind": "alert", "alert": {"ts_ns": n, "kind": f"k{n}", "message": f"alert {n}"}})
        store = Store(tmp_path / "s.duckdb")
        first = OrderPathBatch("alerts.journal", 1, 2, journal_file=journal.path, journal_bytes=(0, starts[2]))
        rest = OrderPathBatch("alerts.journal", 3, 5, journal_file=journal.path, journal_bytes=(starts[2], journal.size))
        assert store.write_order_path(first) and store.write_order_path(rest)
        assert store.con.execute("SELECT kind, journal_position FROM alerts ORDER BY journal_position").fetchall() == [
            (f"k{n}", n) for n in range(1, 6)]
        too_far = OrderPathBatch("alerts.journal", 6, 6, journal_file=journal.path,
                                 journal_bytes=(journal.size, journal.size + 10))
        with pytest.raises(StoreError, match="ends before byte"):
            store.write_order_path(too_far)
        misaligned = OrderPathBatch("alerts.journal", 6, 6, journal_file=journal.path, journal_bytes=(starts[4] + 3,
                                                                                                     journal.size))
        with pytest.raises(StoreError):
            store.write_order_path(misaligned)
        assert store.journal_position("alerts.journal") == 5
        store.close()
        journal.close()
    finally:
        if directory != tmp_path:
            shutil.rmtree(directory)


def test_recordings_starting_the_same_day_are_labelled_with_their_time(store):
    from tradebook.data import from_frame

    def quotes_at(start_ns: int, source: str):
        ts = [start_ns + i * 1_000_000_000 for i in range(3)]
        return from_frame(pd.DataFrame({"ts_ns": ts, "bid_px": [1.1, 1.1, 1.1], "ask_px": [1.2, 1.2, 1.2]}),
                          "quotes", "EURUSD.DUKASCOPY", source=source)

    morning = store.ingest(quotes_at(1783944000000000000, "morning"))  # 2026-07-13T12:00:00Z
    evening = store.ingest(quotes_at(1783965600000000000, "evening"))  # 18:00 the same day
    labels = store.recordings("EURUSD.DUKASCOPY")["recording"].tolist()
    assert labels == ["2026-07-13T12:00:00Z", "2026-07-13T18:00:00Z"]
    with pytest.raises(AmbiguousReadError, match="2 recordings"):
        store.quotes("EURUSD.DUKASCOPY")
    assert store.quotes("EURUSD.DUKASCOPY", recording=labels[1]).attrs["dataset_ids"] == (evening.dataset_id,)
    assert store.quotes("EURUSD.DUKASCOPY", dataset_id=[morning.dataset_id]).attrs["recording"] == labels[0]
    with pytest.raises(StoreError, match=r"dataset_id \[999\] is not a dataset of EURUSD.DUKASCOPY"):
        store.quotes("EURUSD.DUKASCOPY", dataset_id=999)
    with pytest.raises(StoreError, match="bar_seconds applies to trade_bars and quote_bars"):
        store.read("quotes", "EURUSD.DUKASCOPY", bar_seconds=60)
