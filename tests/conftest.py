"""Shared fixtures: bundled data loaded once, real DuckDB stores in tmp_path, subprocess helper.

Everything here goes through tradebook's public API; nothing is mocked.
"""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis.configuration import set_hypothesis_home_dir

from tradebook.data import BUNDLED_FILES, MarketData, bundled_data_dir, load_bundled
from tradebook.store import Store

# Keep hypothesis inside tests/ (its caches are gitignored there too) and without an example database.
set_hypothesis_home_dir(Path(__file__).parent / ".hypothesis")
settings.register_profile("tradebook", database=None, deadline=None)
settings.load_profile("tradebook")

# Small bundled files used as seed data: a store that "already held data" before a rejected load.
SMALL_TRADES = "cme_ESU4_trades_20240701T2358-20240702T0002.csv.gz"  # 120 rows
SMALL_FX_QUOTES = "dukascopy_EURUSD_20260713T12_ticks.csv.gz"  # 3,551 rows


def bundled_name(entry) -> str:
    return Path(entry.path).name


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return bundled_data_dir()


@pytest.fixture(scope="session")
def bundled() -> Callable[[str], MarketData]:
    """``bundled(file_name)`` -> MarketData, each bundled file loaded once per session."""
    cache: dict[str, MarketData] = {}

    def get(name: str) -> MarketData:
        if name not in cache:
            cache[name] = load_bundled(name)
        return cache[name]

    return get


@pytest.fixture(scope="session")
def bundled_entries():
    return {bundled_name(entry): entry for entry in BUNDLED_FILES}


@pytest.fixture
def store(tmp_path) -> Store:
    """A fresh read-write store in tmp_path, closed after the test."""
    s = Store(tmp_path / "x.duckdb")
    yield s
    s.close()


@pytest.fixture
def seeded_store(store, bundled) -> Store:
    """A store that already holds data (quotes and trades), to check rejections leave it unchanged."""
    store.ingest(bundled(SMALL_FX_QUOTES))
    store.ingest(bundled(SMALL_TRADES))
    return store


def store_snapshot(store: Store) -> dict[str, object]:
    """Everything a rejected write must leave alone: datasets, findings and row counts of every table."""
    tables = store.query(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' ORDER BY table_name"
    )["table_name"].tolist()
    counts = {t: int(store.query(f'SELECT count(*) AS n FROM "{t}"')["n"].iloc[0]) for t in tables}
    return {
        "counts": counts,
        "datasets": store.datasets().to_dict("records"),
        "findings": store.findings().to_dict("records"),
    }


@pytest.fixture
def snapshot() -> Callable[[Store], dict[str, object]]:
    return store_snapshot


@pytest.fixture
def write_csv(tmp_path) -> Callable[..., Path]:
    """``write_csv(name, text)`` writes a CSV (gzip-compressed when the name ends in .gz) and returns its path."""

    def write(name: str, text: str) -> Path:
        path = tmp_path / name
        data = text.encode("utf-8")
        path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
        return path

    return write


@pytest.fixture(scope="session")
def run_python() -> Callable[..., subprocess.CompletedProcess]:
    """Run ``code`` in a fresh interpreter of this virtualenv; returns the CompletedProcess."""

    def run(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout
        )

    return run



# The 2024 BTCUSDT capture (quotes, trades) with its calibration: what paper sessions in tests trade.
BTC_2024_FILES = "binance_spot_btcusdt_20240808T2354-20240809T0005_"


@pytest.fixture(scope="session")
def calibrated_btc_template(tmp_path_factory) -> Path:
    """A store file with the bundled 2024 BTCUSDT quotes and trades and their calibration; copy it, never open it."""
    from tradebook.sim.fidelity import run_calibration

    path = tmp_path_factory.mktemp("calibrated_btc") / "template.duckdb"
    with Store(path) as store:
        store.ingest(load_bundled(BTC_2024_FILES + "l1_quotes.csv.gz"))
        store.ingest(load_bundled(BTC_2024_FILES + "trades.csv.gz"))
        run_calibration(store, ["BTCUSDT.BINANCE"])
    return path


@pytest.fixture
def calibrated_btc_store(calibrated_btc_template, tmp_path) -> Store:
    """A writable copy of :func:`calibrated_btc_template` in this test's folder."""
    shutil.copy(calibrated_btc_template, tmp_path / "store.duckdb")
    store = Store(tmp_path / "store.duckdb")
    yield store
    store.close()


# A paper run priced by a deliberately mis-calibrated model: what `calibrate --from-fills` corrects and the TCA
# report shows (tests/tca/test_feedback.py, tests/test_reports.py).
MISCALIBRATED_RUN = "miscalibrated"


@pytest.fixture(scope="session")
def miscalibrated_btc_run(tmp_path_factory) -> Path:
    """The 2024 BTCUSDT capture with its L2 depth, its marketable calibration (v1: the cost curve alone, so the
    paper venue prices every market order by the curve), the same model with its cost curve x3 (v2), and a paper
    run of market orders of 0.05..4 BTC priced by v2 (round trips every 4 s); copy it, never open it."""
    from dataclasses import replace
    from decimal import Decimal

    import numpy as np

    from tradebook.config import RiskConfig, TradebookConfig
    from tradebook.data.feeds import ReplayFeed
    from tradebook.model.instruments import Side
    from tradebook.model.orders import OrderIntent, OrderType, TimeInForce
    from tradebook.session import Session
    from tradebook.sim.calibrate import calibrate_marketable
    from tradebook.sim.fidelity import default_fees, instrument_sweeps, store_instrument_data

    btc = "BTCUSDT.BINANCE"
    path = tmp_path_factory.mktemp("miscalibrated") / "template.duckdb"
    quotes, trades = load_bundled(BTC_2024_FILES + "l1_quotes.csv.gz"), load_bundled(BTC_2024_FILES + "trades.csv.gz")
    with Store(path) as store:
        for data in (quotes, trades, load_bundled(BTC_2024_FILES + "l2_depth.csv.gz")):
            store.ingest(data)
        # the marketable part is all the paper venue prices market orders by without a depth profile
        recorded = store_instrument_data(store, btc)
        model = calibrate_marketable(btc, float(recorded.instrument.tick_size), instrument_sweeps(recorded),
                                     median="validated", fees=default_fees(recorded.instrument))
        span = {"data_start_ns": recorded.start_ns, "data_end_ns": recorded.end_ns,
                "dataset_ids": recorded.dataset_ids}
        store.save_calibration(btc, model.to_json(), **span, diagnostics={"note": "the cost curve alone"})
        curve = model.cost_curve
        tripled = replace(model, cost_curve=replace(curve, q05=tuple(3 * v for v in curve.q05),
                                                    q50=tuple(3 * v for v in curve.q50),
                                                    q95=tuple(3 * v for v in curve.q95)))
        wrong = store.save_calibration(btc, tripled.to_json(), **span,
                                       diagnostics={"note": "cost curve x3, on purpose"})
        config = TradebookConfig(risk=RiskConfig(daily_loss_limit=None))  # the x3 costs and fees are the point
        session = Session(store, calibrations=[wrong.calibration_id], run=MISCALIBRATED_RUN, config=config,
                          starting_cash=Decimal(2_000_000)).start()
        try:
            rng = np.random.default_rng(7)
            for i, batch in enumerate(ReplayFeed({btc: quotes.frame}, {btc: trades.frame}).batches()):
                session.step(batch)
                if i < 5 or i % 4 not in (0, 2):
                    continue
                if i % 4 == 0:  # buy a random size, sell what is held two seconds later
                    side, quantity = Side.BUY, Decimal(str(rng.choice(("0.05", "0.2", "0.5", "1", "2", "4"))))
                else:
                    held = session.positions()
                    side, quantity = Side.SELL, held["quantity"].sum() if len(held) else Decimal(0)
                if quantity > 0:
                    session.submit(OrderIntent(f"fb:{i}", "fb", session.account_id, btc, side, quantity,
                                               OrderType.MARKET, TimeInForce.IOC, batch.end_ns - 1))
        finally:
            session.stop()
    return path
