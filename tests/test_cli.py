"""The ``tradebook`` command end to end, in fresh processes, on a real store built from the bundled data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tradebook.sim.fidelity import CALIBRATABLE
from tradebook.store import Store


def tradebook(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tradebook", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "demo.duckdb"
    result = tradebook("demo", "--store", str(path))
    assert result.returncode == 0, result.stderr
    assert "37 datasets" in result.stdout
    return path


def test_demo_is_idempotent(demo_store):
    again = tradebook("demo", "--store", str(demo_store))
    assert again.returncode == 0, again.stderr
    with Store(demo_store, read_only=True) as store:
        assert len(store.datasets()) == 37


def test_calibrate_stores_versions_without_piling_up(demo_store):
    first = tradebook("calibrate", "--store", str(demo_store))
    assert first.returncode == 0, first.stderr
    for instrument_id in CALIBRATABLE:
        assert f"{instrument_id}@v1" in first.stdout
    assert "EURUSD.FXCM" not in first.stdout  # the dirty feed is never calibrated
    second = tradebook("calibrate", "--store", str(demo_store), "--instrument", "IBM.XNYS")
    assert second.returncode == 0 and "IBM.XNYS@v1" in second.stdout  # same data, same model: no new version
    with Store(demo_store, read_only=True) as store:
        stored = store.calibrations()
        assert sorted(stored["instrument_id"]) == sorted(CALIBRATABLE)
        record = store.calibration("BTCUSDT.BINANCE")
        assert record.diagnostics["sweeps"] > 5000 and record.data_start_ns < record.data_end_ns


def test_fidelity_prints_every_target(demo_store):
    result = tradebook("fidelity", "--store", str(demo_store), "--strict")
    assert "Fill-model fidelity on held-out data" in result.stdout
    for instrument_id in CALIBRATABLE:
        assert f"== {instrument_id}" in result.stdout
    assert "MAE / baseline (a) MAE" in result.stdout and "coverage, closed" in result.stdout
    assert "not applicable (no trades" in result.stdout  # EURUSD has quotes only
    # --strict: the exit status says whether every target was met, and the text agrees
    assert (result.returncode == 0) == ("targets met." in result.stdout), result.stdout[-2000:]


@pytest.mark.parametrize("args, message", [
    (("calibrate", "--instrument", "NOPE.XXXX"), "unknown instrument 'NOPE.XXXX'"),
    (("calibrate", "--instrument", "EURUSD.FXCM"), "EURUSD.FXCM is not calibrated: dirty retail feed"),
    (("calibrate", "--instrument", "SPY.ARCX"), "holds no quotes for it"),
    (("fidelity", "--fit-fraction", "1.5"), "fit_fraction is 1.5"),
])
def test_bad_requests_are_one_line_errors(demo_store, args, message):
    result = tradebook(args[0], "--store", str(demo_store), *args[1:])
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_calibrate_on_an_empty_store_says_what_to_do(tmp_path):
    result = tradebook("calibrate", "--store", str(tmp_path / "empty.duckdb"))
    assert result.returncode == 2
    assert "holds no quotes to calibrate on; run `tradebook demo`" in result.stderr


def test_fidelity_on_a_fresh_store_with_bundled_data(tmp_path):
    path = tmp_path / "fresh.duckdb"
    missing = tradebook("fidelity", "--store", str(path))
    assert missing.returncode == 2 and "run `tradebook demo` first, or pass --bundled" in missing.stderr
    assert not path.exists()
    result = tradebook("fidelity", "--store", str(path), "--bundled", "--instrument", "ESU4.GLBX", "--strict")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "bundled data: 37 file(s) loaded" in result.stdout and "== ESU4.GLBX" in result.stdout


# -- one workspace: `tradebook info` beside a notebook -----------------------------------------
HOLDER = """
import sys
import tradebook as tb
if sys.argv[2] == "reader":  # a notebook reading: open_store holds the file read-only until a write
    store = tb.open_store(sys.argv[1])
    store.quotes("BTCUSDT.BINANCE")
else:  # a notebook running a paper session: it holds the writer
    store = tb.Store(sys.argv[1], purpose="a paper session (run demo)")
print("ready", flush=True)
sys.stdin.readline()
store.close()
"""


@pytest.fixture
def small_store(tmp_path) -> Path:
    from tradebook.data import load_bundled

    path = tmp_path / "small.duckdb"
    with Store(path) as store:
        store.ingest(load_bundled("binance_spot_BTCUSDT_20210108T0000_l1_quotes.csv.gz"))
    return path


@pytest.mark.parametrize("mode", ["reader", "writer"])
def test_info_beside_a_notebook_holding_the_store(small_store, mode):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(small_store), mode], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready", holder.stderr.read()
        result = tradebook("info", "--store", str(small_store), timeout=60)
    finally:
        holder.communicate("\n", timeout=30)
    if mode == "reader":
        assert result.returncode == 0, result.stderr
        assert "BTCUSDT.BINANCE" in result.stdout and "451" in result.stdout
    else:
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
        assert f"a paper session (run demo) in PID {holder.pid} `python -c" in lines[0]
        assert "holds it for writing since" in lines[0] and "try again when it stops" in lines[0]
    assert holder.returncode == 0, holder.stderr


def test_info_without_a_store_says_what_to_do(tmp_path):
    result = tradebook("info", "--store", str(tmp_path / "none.duckdb"))
    assert result.returncode == 2 and "tradebook demo" in result.stderr
    assert not (tmp_path / "none.duckdb").exists()


# -- your own instruments from the command line -------------------------------------------------
OWN_QUOTES = ("ts_ns,bid_px,ask_px,bid_sz,ask_sz\n"
              "1723161253937085768,0.10251,0.10252,100,200\n"
              "1723161254937085768,0.10252,0.10254,300,20\n")


def test_a_user_defined_instrument_loads_from_the_cli_and_reads_back(tmp_path):
    from decimal import Decimal

    csv = tmp_path / "doge.csv"
    csv.write_text(OWN_QUOTES)
    definition = tmp_path / "doge.yaml"
    definition.write_text("instrument_id: DOGEUSDT.BINANCE\nasset_class: crypto_spot\ncurrency: USDT\n"
                          "base_currency: DOGE\ntick: 0.00001\nlot: 1\nmin_notional: 1\ncalendar: 24/7\n")
    store_path = tmp_path / "own.duckdb"
    unknown = tradebook("load", str(csv), "--kind", "quotes", "--instrument", "DOGEUSDT.BINANCE",
                        "--store", str(store_path))
    assert unknown.returncode == 2 and "define it with --instrument-file FILE" in unknown.stderr
    assert len(unknown.stderr.strip().splitlines()) == 1
    loaded = tradebook("load", str(csv), "--kind", "quotes", "--instrument-file", str(definition),
                       "--store", str(store_path))
    assert loaded.returncode == 0, loaded.stderr
    assert "2 rows of quotes for DOGEUSDT.BINANCE stored as dataset 1" in loaded.stdout
    # by options, and then by id alone: the store knows it now
    options = tradebook("load", str(csv), "--kind", "quotes", "--instrument", "XRPUSDT.BINANCE",
                        "--asset-class", "crypto_spot", "--currency", "USDT", "--tick", "0.00001", "--lot", "0.1",
                        "--min-size", "1", "--store", str(store_path))
    assert options.returncode == 0, options.stderr
    again = tradebook("load", str(csv), "--kind", "quotes", "--instrument", "DOGEUSDT.BINANCE",
                      "--store", str(store_path))
    assert again.returncode == 0 and "already stored as dataset 1" in again.stdout, again.stderr
    with Store(store_path, read_only=True) as store:
        doge = store.instrument("DOGEUSDT.BINANCE")
        assert (doge.tick_size, doge.lot_size, doge.min_notional, doge.base_currency) == (
            Decimal("0.00001"), Decimal(1), Decimal(1), "DOGE")
        xrp = store.instrument("XRPUSDT.BINANCE")
        assert (xrp.lot_size, xrp.min_quantity) == (Decimal("0.1"), Decimal(1))
        quotes = store.quotes("DOGEUSDT.BINANCE")
        assert quotes["bid_px"].tolist() == [0.10251, 0.10252]
    info = tradebook("info", "--store", str(store_path))
    assert info.returncode == 0 and "DOGEUSDT.BINANCE" in info.stdout and "XRPUSDT.BINANCE" in info.stdout


@pytest.mark.parametrize("args, message", [
    (("--instrument", "X.Y", "--asset-class", "crypto_spot", "--currency", "USD", "--tick", "0"),
     "the command line: the instrument definition lacks lot"),
    (("--instrument", "X.Y", "--asset-class", "bond", "--currency", "USD", "--tick", "0.01", "--lot", "1"),
     "asset_class 'bond' is not one of"),
    (("--instrument", "X.Y", "--asset-class", "crypto_spot", "--currency", "USD", "--tick", "-1", "--lot", "1"),
     "tick is -1; expected a number > 0"),
    ((), "name the instrument: --instrument SYMBOL.VENUE"),
])
def test_bad_instrument_definitions_on_the_cli_are_one_line(tmp_path, args, message):
    csv = tmp_path / "doge.csv"
    csv.write_text(OWN_QUOTES)
    result = tradebook("load", str(csv), "--kind", "quotes", "--store", str(tmp_path / "s.duckdb"), *args)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "s.duckdb").exists()
