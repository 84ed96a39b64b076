"""Schema migrations: new files at the latest version, old files upgraded with their data, refusals."""

from __future__ import annotations

import duckdb
import pandas as pd
import pytest

from tradebook.errors import MigrationError, StoreError
from tradebook.store import LATEST_VERSION, MIGRATIONS, Store

SMALL_QUOTES = "binance_spot_BTCUSDT_20210108T0000_l1_quotes.csv.gz"
SMALL_BOOK_TRADES = "cme_ESU4_trades_20240701T2358-20240702T0002.csv.gz"


def _tables(path) -> set[str]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    finally:
        con.close()


def test_versions_are_consecutive_from_one():
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert LATEST_VERSION == MIGRATIONS[-1].version >= 2


def test_new_file_is_at_latest_with_one_row_per_migration(tmp_path):
    with Store(tmp_path / "new.duckdb") as store:
        assert store.schema_version == LATEST_VERSION
        applied = store.migrations()
        assert applied["version"].tolist() == [m.version for m in MIGRATIONS]
        assert applied["name"].tolist() == [m.name for m in MIGRATIONS]
        assert applied["applied_at_ns"].is_monotonic_increasing
        assert f"schema v{LATEST_VERSION}" in repr(store)
    with Store(tmp_path / "new.duckdb") as store:  # reopening applies nothing twice
        pd.testing.assert_frame_equal(store.migrations(), applied)


@pytest.mark.parametrize("version", range(LATEST_VERSION))
def test_upgrade_from_every_earlier_version_keeps_data(tmp_path, bundled, version):
    path = tmp_path / f"v{version}.duckdb"
    with Store(path, target_version=version) as store:
        assert store.schema_version == version
        if version >= 1:
            if version < 2:
                assert "orders" not in _tables_of(store)  # v2 not yet applied
            quotes, trades = bundled(SMALL_QUOTES), bundled(SMALL_BOOK_TRADES)
            ids = {SMALL_QUOTES: store.ingest(quotes).dataset_id, SMALL_BOOK_TRADES: store.ingest(trades).dataset_id}
            datasets = store.datasets()
            findings = store.findings()
    if version == 0:
        assert "schema_migrations" not in _tables(path)
    with Store(path) as store:
        assert store.schema_version == LATEST_VERSION
        assert store.migrations()["version"].tolist() == list(range(1, LATEST_VERSION + 1))
        assert {"orders", "fills", "positions", "calibrations"} <= _tables_of(store)
        if version >= 1:
            pd.testing.assert_frame_equal(store.datasets(), datasets, check_exact=True)
            pd.testing.assert_frame_equal(store.findings(), findings, check_exact=True)
            for name, dataset_id in ids.items():
                md = bundled(name)
                back = store.read(md.kind, md.instrument_id, dataset_id=dataset_id)
                pd.testing.assert_frame_equal(back.drop(columns="bar_seconds", errors="ignore"), md.frame,
                                              check_exact=True)
        # the upgraded store is fully usable: the dataset id sequence continues
        result = store.ingest(bundled("dukascopy_EURUSD_20260713T12_ticks.csv.gz"))
        assert result.created and result.dataset_id == (3 if version >= 1 else 1)


def _tables_of(store: Store) -> set[str]:
    return set(store.query("SELECT table_name FROM information_schema.tables")["table_name"])


@pytest.mark.parametrize("version", range(LATEST_VERSION))
def test_read_only_open_of_an_old_file_refuses_to_migrate(tmp_path, version):
    path = tmp_path / "old.duckdb"
    Store(path, target_version=version).close()
    with pytest.raises(MigrationError) as info:
        Store(path, read_only=True)
    message = str(info.value)
    assert "read-write" in message
    assert f"v{version}" in message and f"v{LATEST_VERSION}" in message
    with Store(path, target_version=version) as store:  # untouched by the refused open
        assert store.schema_version == version


@pytest.mark.parametrize("read_only", [False, True])
def test_newer_schema_than_known_is_refused(tmp_path, read_only):
    path = tmp_path / "future.duckdb"
    Store(path).close()
    con = duckdb.connect(str(path))
    con.execute("INSERT INTO schema_migrations VALUES (999, 'from the future', 0)")
    con.close()
    with pytest.raises(MigrationError) as info:
        Store(path, read_only=read_only)
    assert "v999" in str(info.value) and "newer" in str(info.value)
    con = duckdb.connect(str(path), read_only=True)  # nothing was changed or dropped
    assert con.execute("SELECT max(version) FROM schema_migrations").fetchone()[0] == 999
    con.close()


@pytest.mark.parametrize("target", [-1, LATEST_VERSION + 1])
def test_target_version_out_of_range(tmp_path, target):
    with pytest.raises(MigrationError, match="not between 0"):
        Store(tmp_path / "t.duckdb", target_version=target)


def test_failed_migration_is_atomic(tmp_path):
    """A migration that fails halfway leaves the file at the previous version with none of its tables."""
    path = tmp_path / "clash.duckdb"
    Store(path, target_version=1).close()
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE positions (x INTEGER)")  # v2 creates orders, ..., then positions: clash
    con.close()
    with pytest.raises(MigrationError) as info:
        Store(path)
    assert "v2" in str(info.value) and "positions" in str(info.value)
    tables = _tables(path)
    assert {"orders", "order_events", "fills", "calibrations"}.isdisjoint(tables)
    with Store(path, target_version=1) as store:
        assert store.schema_version == 1


def test_migration_error_is_a_store_error():
    assert issubclass(MigrationError, StoreError)


def test_reader_migrates_an_old_file_once_then_reads_it_read_only(tmp_path):
    path = tmp_path / "old.duckdb"
    Store(path, target_version=LATEST_VERSION - 1).close()
    with Store.reader(path) as store:
        assert store.schema_version == LATEST_VERSION
        assert store.read_only and "read-only" in repr(store)
