"""Fixtures of the gate's tests: a simulated backtest's daily records and the gate calibrated on them."""

from __future__ import annotations

import pandas as pd
import pytest

from .simulated import simulated_daily
from tradebook.promotion.gate import calibrate_gate


@pytest.fixture(scope="session")
def backtest_daily() -> pd.DataFrame:
    """Three years of a simulated strategy's daily records (about 6 fills and 0.8 closed trades a day)."""
    return simulated_daily(756, seed=11)


@pytest.fixture(scope="session")
def thresholds(backtest_daily):
    return calibrate_gate(backtest_daily, n_paths=2000, seed=0)


@pytest.fixture(scope="session")
def ibm_template(tmp_path_factory):
    """A store file with the bundled IBM 2013-10-07 NBBO quotes and trades and their calibration (copy it)."""
    from tradebook.data import load_bundled
    from tradebook.sim.fidelity import run_calibration
    from tradebook.store import Store

    path = tmp_path_factory.mktemp("promotion_ibm") / "ibm.duckdb"
    with Store(path) as store:
        store.ingest(load_bundled("algoseek_IBM_20131007_l1_nbbo.csv.gz"))
        store.ingest(load_bundled("algoseek_IBM_20131007_trades.csv.gz"))
        run_calibration(store, ["IBM.XNYS"])
    return path


@pytest.fixture
def ibm_store(ibm_template, tmp_path):
    import shutil

    from tradebook.store import Store

    shutil.copy(ibm_template, tmp_path / "ibm.duckdb")
    store = Store(tmp_path / "ibm.duckdb")
    yield store
    store.close()


DAILY_EQUITIES = ("SPY.ARCX", "QQQ.XNAS", "IWM.ARCX", "AAPL.XNAS", "IBM.XNYS", "BAC.XNYS")


@pytest.fixture(scope="session")
def equities_template(tmp_path_factory):
    """A store file with the six bundled daily equity series and the IBM 2013-10-07 calibration (copy it)."""
    from pathlib import Path

    from tradebook.data import BUNDLED_FILES, load_bundled
    from tradebook.sim.fidelity import run_calibration
    from tradebook.store import Store

    path = tmp_path_factory.mktemp("promotion_equities") / "equities.duckdb"
    with Store(path) as store:
        for entry in BUNDLED_FILES:
            if entry.path.startswith("bars/daily/") and entry.instrument_id in DAILY_EQUITIES:
                store.ingest(load_bundled(Path(entry.path).name))
        store.ingest(load_bundled("algoseek_IBM_20131007_l1_nbbo.csv.gz"))
        store.ingest(load_bundled("algoseek_IBM_20131007_trades.csv.gz"))
        run_calibration(store, ["IBM.XNYS"])
    return path


@pytest.fixture
def equities_store(equities_template, tmp_path):
    import shutil

    from tradebook.store import Store

    shutil.copy(equities_template, tmp_path / "equities.duckdb")
    store = Store(tmp_path / "equities.duckdb")
    yield store
    store.close()
