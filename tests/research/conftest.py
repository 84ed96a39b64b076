"""Research fixtures: the six bundled daily equity series in one store, loaded once per test session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tradebook.data import BUNDLED_FILES, load_bundled
from tradebook.store import Store

DAILY_EQUITIES = ("SPY.ARCX", "QQQ.XNAS", "IWM.ARCX", "AAPL.XNAS", "IBM.XNYS", "BAC.XNYS")


@pytest.fixture(scope="session")
def daily_store_template(tmp_path_factory) -> Path:
    """A store file holding the bundled daily bars and split factors of the six equities (read it, do not write)."""
    path = tmp_path_factory.mktemp("daily_equities") / "template.duckdb"
    store = Store(path)
    try:
        for entry in BUNDLED_FILES:
            if entry.path.startswith("bars/daily/") and entry.instrument_id in DAILY_EQUITIES:
                store.ingest(load_bundled(Path(entry.path).name))
    finally:
        store.close()
    return path


@pytest.fixture
def daily_store(daily_store_template, tmp_path) -> Store:
    """A writable copy of the daily-equities store, in this test's tmp_path."""
    path = tmp_path / "daily.duckdb"
    shutil.copy(daily_store_template, path)
    store = Store(path)
    yield store
    store.close()


@pytest.fixture(scope="session")
def daily_bars(daily_store_template):
    """tb.Bars of the six equities, split-adjusted, the whole bundled history (1998 to 2021-03-31)."""
    from tradebook.research.bars import Bars

    store = Store(daily_store_template, read_only=True)
    try:
        return Bars.from_store(store, DAILY_EQUITIES)
    finally:
        store.close()


@pytest.fixture(scope="session")
def ibm_calibrated_template(tmp_path_factory) -> Path:
    """A store file with the bundled IBM 2013-10-07 ticks and their calibration IBM.XNYS@v1 (copy it or open it
    read-only): the calibrated equity model the research tests apply to the daily-bar universe."""
    from tradebook.sim.fidelity import run_calibration

    path = tmp_path_factory.mktemp("ibm_calibrated") / "ibm.duckdb"
    with Store(path) as store:
        store.ingest(load_bundled("algoseek_IBM_20131007_l1_nbbo.csv.gz"))
        store.ingest(load_bundled("algoseek_IBM_20131007_trades.csv.gz"))
        run_calibration(store, ["IBM.XNYS"])
    return path


@pytest.fixture(scope="session")
def daily_calibrated_template(daily_store_template, tmp_path_factory) -> Path:
    """The daily-equities store plus the IBM 2013-10-07 ticks and their calibration IBM.XNYS@v1 (what `make demo`
    holds): a cost model read from it knows the split factors, so backtests floor spreads at a traded tick."""
    from tradebook.sim.fidelity import run_calibration

    path = tmp_path_factory.mktemp("daily_calibrated") / "daily.duckdb"
    shutil.copy(daily_store_template, path)
    with Store(path) as store:
        store.ingest(load_bundled("algoseek_IBM_20131007_l1_nbbo.csv.gz"))
        store.ingest(load_bundled("algoseek_IBM_20131007_trades.csv.gz"))
        run_calibration(store, ["IBM.XNYS"])
    return path
