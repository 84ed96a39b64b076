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
    result = tradebook("demo", "--store", str(path), "--no-serve", timeout=600)  # the whole story, report included
    assert result.returncode == 0, result.stderr
    assert "37 datasets" in result.stdout
    # the story: research, paper on the held-back sessions, the gate's decision with its evidence, the report
    for line in ("Lookahead check: passed", "deflated Sharpe ratio", "trading days replayed", "== The promotion gate: ",
                 "fails when", "Report: "):
        assert line in result.stdout, result.stdout[-3000:]
    report = Path(result.stdout.rsplit("Report: ", 1)[1].split()[0])
    assert report.is_file() and report.suffix == ".html"
    return path


def test_demo_is_idempotent(demo_store):
    again = tradebook("demo", "--store", str(demo_store), "--no-serve", timeout=600)
    assert again.returncode == 0, again.stderr
    with Store(demo_store, read_only=True) as store:
        datasets = store.datasets()
        synthetic = datasets["source"].str.startswith("synthetic:")  # the story's paper quotes, built from bars
        assert (~synthetic).sum() == 37 and synthetic.sum() in (0, 6)


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
        fitted = stored["instrument_id"].isin(CALIBRATABLE)
        assert sorted(stored.loc[fitted, "instrument_id"]) == sorted(CALIBRATABLE)
        # the rest: the demo's paper run applied IBM's equity model to the other five equities, saying so
        for calibration_id in stored.loc[~fitted, "calibration_id"]:
            assert store.calibration(calibration_id).diagnostics["derived_from"].startswith("IBM.XNYS@")
        record = store.calibration("BTCUSDT.BINANCE")
        assert record.diagnostics["sweeps"] > 5000 and record.data_start_ns < record.data_end_ns


def test_fidelity_prints_every_target(demo_store):
    result = tradebook("fidelity", "--store", str(demo_store), "--strict")
    assert "Fill-model fidelity on transfers" in result.stdout
    for instrument_id in CALIBRATABLE:
        assert f"== half/half: {instrument_id}" in result.stdout
    assert "== capture -> capture: BTCUSDT.BINANCE 2021-01-08 -> BTCUSDT.BINANCE 2024-08-08" in result.stdout
    assert "MAE model / baseline (b)" in result.stdout and "coverage, closed" in result.stdout
    assert "sweeps: not scored (no trades" in result.stdout  # EURUSD has quotes only
    # --strict: the exit status says whether every target was met, and the text agrees
    assert (result.returncode == 0) == ("targets met (each judged" in result.stdout), result.stdout[-2000:]


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
    assert result.returncode in (0, 1) and "Traceback" not in result.stderr, result.stdout + result.stderr
    assert (result.returncode == 0) == ("targets met (each judged" in result.stdout), result.stdout[-2000:]
    assert "bundled data: 37 file(s) loaded" in result.stdout and "== half/half: ESU4.GLBX" in result.stdout


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


# -- calibrating from your own files -------------------------------------------------------------------
FUTURES = Path(__file__).resolve().parents[1] / "data" / "ticks" / "futures"
ESU4_QUOTES = FUTURES / "cme_ESU4_mbp1_20240701T2358-20240702T0002.csv.gz"
ESU4_TRADES = FUTURES / "cme_ESU4_trades_20240701T2358-20240702T0002.csv.gz"
ESH4_BOOK = FUTURES / "cme_ESH4_book5_from_mbo_20231225.csv.gz"


def test_calibrate_from_own_files_stores_a_version_with_the_files_hashes(tmp_path):
    import hashlib

    definition = tmp_path / "mine.yaml"
    definition.write_text("instrument_id: ESU4.MYFCM\nasset_class: future\ncurrency: USD\ntick: 0.25\nlot: 1\n"
                          "multiplier: 50\ncalendar: CMES\nsymbol: ESU4\n")
    store_path = tmp_path / "own.duckdb"
    result = tradebook("calibrate", "--quotes", str(ESU4_QUOTES), "--trades", str(ESU4_TRADES),
                       "--instrument-file", str(definition), "--store", str(store_path))
    assert result.returncode == 0, result.stderr
    assert "ESU4.MYFCM@v1" in result.stdout and "fitted from:" in result.stdout
    quotes_hash = hashlib.sha256(ESU4_QUOTES.read_bytes()).hexdigest()
    assert f"sha256 {quotes_hash[:12]}" in result.stdout
    again = tradebook("calibrate", "--quotes", str(ESU4_QUOTES), "--trades", str(ESU4_TRADES),
                      "--instrument", "ESU4.MYFCM", "--store", str(store_path))  # by id: the store knows it now
    assert again.returncode == 0 and "ESU4.MYFCM@v1" in again.stdout, again.stderr  # same fit: no new version
    with Store(store_path, read_only=True) as store:
        record = store.calibration("ESU4.MYFCM")
        assert record.version == 1 and store.datasets().empty  # the files were fitted, not loaded
        files = record.diagnostics["files"]
        assert [(f["role"], f["sha256"]) for f in files] == [
            ("quotes", quotes_hash), ("trades", hashlib.sha256(ESU4_TRADES.read_bytes()).hexdigest())]


@pytest.mark.parametrize("args, message", [
    (("--quotes", str(FUTURES.parent / "fx" / "fxcm_EURUSD_20140506_ticks.csv.gz"), "--instrument", "EURUSD.FXCM"),
     "the quotes carry no sizes"),
    (("--quotes", str(ESU4_TRADES), "--instrument", "ESU4.GLBX"),
     "this is not a quotes file: its columns"),
    (("--quotes", str(ESU4_QUOTES), "--trades", str(ESU4_QUOTES), "--instrument", "ESU4.GLBX"),
     "this is not a trades file"),
    (("--quotes", str(ESU4_QUOTES), "--depth", str(ESH4_BOOK), "--instrument", "ESU4.GLBX"),
     "symbol 'ESH4' does not match instrument ESU4.GLBX"),
    (("--trades", str(ESU4_TRADES), "--instrument", "ESU4.GLBX"), "--trades calibrate from your own files and need"),
    (("--quotes", str(ESU4_QUOTES), "--instrument", "ESU4.GLBX", "--instrument", "ESH4.GLBX"),
     "--quotes calibrates one instrument"),
    (("--quotes", str(ESU4_QUOTES), "--instrument", "ESU4.ELSEWHERE"), "define it with --instrument-file FILE"),
    (("--quotes", str(ESU4_QUOTES)), "name the instrument: --instrument SYMBOL.VENUE"),
])
def test_calibrate_from_bad_files_is_one_line_and_writes_nothing(tmp_path, args, message):
    store_path = tmp_path / "s.duckdb"
    result = tradebook("calibrate", "--store", str(store_path), *args)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    if store_path.exists():
        with Store(store_path, read_only=True) as store:
            assert store.calibrations().empty


# -- configuration: --config, TRADEBOOK_CONFIG, TRADEBOOK_* variables ----------------------------------
SECRET = "PKX7Q2ZT9MBL4WQ8RD3A"  # shaped like an Alpaca key id


def tradebook_in(cwd: Path, *args: str, env: dict[str, str] | None = None,
                 timeout: float = 120) -> subprocess.CompletedProcess:
    """`tradebook ARGS` in ``cwd`` with the machine's TRADEBOOK_ variables replaced by ``env``."""
    import os

    clean = {k: v for k, v in os.environ.items() if not k.startswith("TRADEBOOK_")}
    return subprocess.run([sys.executable, "-m", "tradebook", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env={**clean, **(env or {})})


def settings_of(stdout: str) -> dict[str, tuple[str, str]]:
    """`tradebook config` output as key -> (value, source)."""
    rows = {}
    for line in stdout.splitlines()[1:]:
        key, _, rest = line.strip().partition(" = ")
        value, _, source = rest.rpartition("  (")
        rows[key.strip()] = (value.strip(), source.rstrip(")"))
    return rows


@pytest.fixture(scope="module")
def config_store(tmp_path_factory) -> Path:
    """A small real store: one bundled file of ESU4 trades."""
    from tradebook.data import load_bundled

    path = tmp_path_factory.mktemp("cli_config") / "desk.duckdb"
    with Store(path) as store:
        store.ingest(load_bundled("cme_ESU4_trades_20240701T2358-20240702T0002.csv.gz"))
    return path


def test_config_prints_every_setting_with_its_source_and_no_secret(tmp_path):
    desk = tmp_path / "desk.yaml"
    desk.write_text("risk:\n  daily_loss_limit: 800\nvenues:\n  alpaca:\n    enabled: true\n")
    env = {"TRADEBOOK_RISK__MAX_SPREAD_BPS": "25", "APCA_API_KEY_ID": SECRET}
    before = tradebook_in(tmp_path, "--config", str(desk), "config", env=env)
    after = tradebook_in(tmp_path, "config", "--config", str(desk), env=env)
    named = tradebook_in(tmp_path, "config", env={**env, "TRADEBOOK_CONFIG": str(desk)})
    for result in (before, after, named):
        assert result.returncode == 0, result.stderr
        assert SECRET not in result.stdout + result.stderr
        rows = settings_of(result.stdout)
        assert rows["risk.daily_loss_limit"] == ("800", f"in {desk}, line 2")
        assert rows["venues.alpaca.enabled"] == ("true", f"in {desk}, line 5")
        assert rows["risk.max_spread_bps"] == ("25.0", "from TRADEBOOK_RISK__MAX_SPREAD_BPS")
        assert rows["venues.alpaca.credentials_env.api_key"] == ("APCA_API_KEY_ID (set)", "default")
    assert before.stdout.startswith(f"config file: {desk} (the path given)")
    assert named.stdout.startswith(f"config file: {desk} (from TRADEBOOK_CONFIG)")


def test_every_documented_variable_reaches_the_command(tmp_path, config_store):
    env = {
        "TRADEBOOK_STORE": str(config_store),
        "TRADEBOOK_DATA_DIR": str(tmp_path),
        "TRADEBOOK_PROGRESS": "0",
        "TRADEBOOK_RISK__DAILY_LOSS_LIMIT": "500",
        "TRADEBOOK_SESSION__MODE": "live",
        "TRADEBOOK_VENUES__ALPACA__ENABLED": "true",
        "TRADEBOOK_RISK__MAX_POSITION__PER_INSTRUMENT__SPY.ARCX__QUANTITY": "500",
    }
    result = tradebook_in(tmp_path, "config", env=env)
    assert result.returncode == 0, result.stderr
    rows = settings_of(result.stdout)
    for key, value, variable in [("risk.daily_loss_limit", "500", "TRADEBOOK_RISK__DAILY_LOSS_LIMIT"),
                                 ("session.mode", "live", "TRADEBOOK_SESSION__MODE"),
                                 ("venues.alpaca.enabled", "true", "TRADEBOOK_VENUES__ALPACA__ENABLED"),
                                 ("risk.max_position.per_instrument.SPY.ARCX.quantity", "500",
                                  "TRADEBOOK_RISK__MAX_POSITION__PER_INSTRUMENT__SPY.ARCX__QUANTITY"),
                                 ("session.store_path", str(config_store), "TRADEBOOK_STORE")]:
        assert rows[key] == (value, f"from {variable}"), key
    info = tradebook_in(tmp_path, "info", env={"TRADEBOOK_STORE": str(config_store)})  # no --store: the variable's
    assert info.returncode == 0, info.stderr
    assert "ESU4.GLBX" in info.stdout


def test_the_config_file_names_the_store_relative_to_itself(tmp_path, config_store):
    workspace = tmp_path / "workspace"
    (workspace / "stores").mkdir(parents=True)
    (workspace / "stores" / "desk.duckdb").write_bytes(config_store.read_bytes())
    (workspace / "tradebook.yaml").write_text("session:\n  store_path: stores/desk.duckdb\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    by_option = tradebook_in(elsewhere, "--config", str(workspace / "tradebook.yaml"), "info")
    found = tradebook_in(workspace, "info")  # the workspace's tradebook.yaml, found in the working directory
    for result in (by_option, found):
        assert result.returncode == 0, result.stderr
        assert "ESU4.GLBX" in result.stdout
    missing = tradebook_in(elsewhere, "info")  # no config there: the default store, which does not exist
    assert missing.returncode == 2 and "no store at" in missing.stderr


@pytest.mark.parametrize(("content", "fragment"), [
    (b"\x89PNG\r\n\x1a\n\x00\x00", "is binary"),
    (b"risk:\n  account_currency: \xe9uro\n", "is not UTF-8 text"),
    (b"risk: {daily_loss_limit: [1\n", "invalid YAML"),
    (b"risk:\n  daily_loss_limit: 5\n  daily_loss_limit: 6\n", "line 3: key 'daily_loss_limit' is written twice"),
    (b"risk:\n  daily_loss_limit: 1E+999999999999999999\n", "of magnitude below 1e26"),
    (b"", "is empty"),
])
@pytest.mark.parametrize("how", ["option", "variable"])
def test_a_bad_config_file_is_one_line_and_status_2(tmp_path, content, fragment, how):
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(content)
    if how == "option":
        result = tradebook_in(tmp_path, "info", "--config", str(bad), "--store", str(tmp_path / "none.duckdb"))
    else:
        result = tradebook_in(tmp_path, "calibrate", "--store", str(tmp_path / "none.duckdb"),
                              env={"TRADEBOOK_CONFIG": str(bad)})
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert str(bad) in lines[0] and fragment in lines[0], lines[0]
    assert not (tmp_path / "none.duckdb").exists()  # refused before any store is opened


def test_a_secret_where_a_variable_name_belongs_is_never_printed(tmp_path):
    for env in ({"TRADEBOOK_VENUES__ALPACA__CREDENTIALS_ENV__API_KEY": SECRET},
                {"TRADEBOOK_VENUES__IBKR__OPTIONS__AUTH": SECRET}):
        result = tradebook_in(tmp_path, "config", env=env)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert SECRET not in result.stdout + result.stderr and SECRET[:8] not in result.stderr
        assert "redacted" in result.stderr or "not shown" in result.stderr


# -- bad files through `tradebook load`: one line, status 2, the store's tables unchanged -------------
def _table_counts(path: Path) -> dict[str, int]:
    with Store(path, read_only=True) as store:
        tables = store.query("SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'")
        return {t: int(store.query(f'SELECT count(*) AS n FROM "{t}"')["n"].iloc[0]) for t in tables["table_name"]}


def test_bad_files_through_load_are_one_line_and_change_nothing(small_store, tmp_path):
    import gzip

    good = ("ts_ns,bid_px,ask_px\n" + "".join(f"{1723161254087891268 + i},61837.63,61837.64\n" for i in range(400)))
    compressed = gzip.compress(good.encode())
    files = {
        "cut.csv.gz": (compressed[:-9], "the gzip file is truncated"),
        "latin1.csv": (good.replace("61837.64\n", "61837.64,\u00e9\n", 1).encode("latin-1"), "is not UTF-8"),
        "extra.csv": (good.replace("61837.64\n", "61837.64,7\n", 1).encode(), "line 2: 4 fields, expected 3"),
    }
    before = _table_counts(small_store)
    for name, (content, message) in files.items():
        path = tmp_path / name
        path.write_bytes(content)
        result = tradebook("load", str(path), "--kind", "quotes", "--instrument", "BTCUSDT.BINANCE",
                           "--store", str(small_store))
        assert result.returncode == 2, result.stdout + result.stderr
        assert message in result.stderr and name in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert _table_counts(small_store) == before


def test_dashboard_serves_a_closed_store_until_ctrl_c(tmp_path):
    import select
    import signal
    import urllib.request

    path = tmp_path / "closed.duckdb"
    Store(path).close()
    process = subprocess.Popen([sys.executable, "-m", "tradebook", "dashboard", "--store", str(path)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([process.stdout], [], [], 60)  # the URL is printed once the server listens
        assert ready, "tradebook dashboard printed nothing within 60 s"
        line = process.stdout.readline()
        assert line.startswith("Dashboard: http://127.0.0.1:"), line + process.stderr.read()
        url = line.split()[1]
        with urllib.request.urlopen(url + "api/health", timeout=30) as response:
            assert response.status == 200
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0 and "Dashboard stopped." in out and "Traceback" not in err, out + err
