"""Configuration: defaults, YAML file, TRADEBOOK_ environment overrides, and every kind of bad value refused."""

from __future__ import annotations

import dataclasses
import os
import re
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from tradebook.config import (
    ADAPTER_ENV,
    RiskConfig,
    RouterConfig,
    SessionMode,
    SizingMethod,
    SpreadAction,
    TradebookConfig,
    VenueConfig,
    describe_config,
    find_config_file,
    load_config,
    plausible_env_name,
)
from tradebook.errors import ConfigError
from tradebook.model import AssetClass

D = Decimal
EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "tradebook.example.yaml"


@pytest.fixture
def write_yaml(tmp_path):
    def write(text: str, name: str = "tradebook.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


# -- defaults ----------------------------------------------------------------------------------
def test_defaults_are_the_issue_defaults_and_paper_mode():
    cfg = TradebookConfig()
    assert cfg.session.mode is SessionMode.PAPER
    assert cfg.session.extended_hours is False
    assert cfg.sizing.method is SizingMethod.HALF_KELLY and cfg.sizing.kelly_cap == 0.05
    risk = cfg.risk
    assert (risk.pdt_equity_threshold, risk.max_day_trades, risk.pdt_window_days) == (D(25000), 3, 5)
    assert (risk.breaker_failures, risk.breaker_cooldown_s) == (5, 30.0)
    assert isinstance(risk.daily_loss_limit, Decimal) and isinstance(risk.min_touch_notional, Decimal)
    router = cfg.router
    assert (router.signal_market_threshold, router.wide_spread_bps) == (0.9, 20.0)
    assert (router.twap_adv_fraction, router.passive_adv_fraction) == (0.01, 0.001)
    assert (router.twap_slices, router.twap_interval_s, router.max_retries) == (5, 60.0, 3)
    assert (router.vwap_min_minutes, router.vwap_max_minutes) == (5, 15)
    assert cfg.venues["paper"].enabled and not cfg.venues["alpaca"].enabled
    assert load_config(env={}) == cfg


def test_config_is_frozen_and_hashable():
    cfg = TradebookConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.risk.daily_loss_limit = D(1)  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.risk.max_exposure_per_asset_class[AssetClass.EQUITY] = D(1)  # type: ignore[index]
    assert hash(cfg) == hash(TradebookConfig())


def test_sections_built_by_hand_are_converted_and_validated():
    risk = RiskConfig(daily_loss_limit=500, max_exposure_per_asset_class={"crypto_spot": 0.5})
    assert risk.daily_loss_limit == D(500) and isinstance(risk.daily_loss_limit, Decimal)
    assert risk.max_exposure_per_asset_class == {AssetClass.CRYPTO_SPOT: D("0.5")}
    with pytest.raises(ConfigError, match=r"risk.max_orders_per_minute = 0: expected a number > 0"):
        RiskConfig(max_orders_per_minute=0)
    with pytest.raises(ConfigError, match="vwap_min_minutes = 20 is above router.vwap_max_minutes = 15"):
        RouterConfig(vwap_min_minutes=20)


# -- the example file ---------------------------------------------------------------------------
def _key_paths(node, prefix=""):
    paths = set()
    for key, value in node.items():
        path = f"{prefix}.{key}".lstrip(".")
        paths.add(path)
        if isinstance(value, dict):
            paths |= _key_paths(value, path)
    return paths


def test_example_file_documents_every_key_with_its_default():
    assert load_config(EXAMPLE, env={}) == TradebookConfig()
    documented = _key_paths(yaml.safe_load(EXAMPLE.read_text()))
    assert documented == _key_paths(TradebookConfig().to_dict())


# -- file then environment -------------------------------------------------------------------------
def test_file_then_env_overrides_with_types(write_yaml):
    path = write_yaml("""
risk:
  daily_loss_limit: 800
  price_collar_bps: 75
  spread_action: REJECT
  min_touch_notional: 0.1
  max_position:
    per_instrument:
      BTCUSDT.BINANCE: {quantity: "2.5"}
      ESH4.GLBX: {quantity: 10, notional: 2_500_000}
sizing:
  method: percent_of_equity
  percent: 2
venues:
  alpaca:
    enabled: true
""")
    env = {
        "TRADEBOOK_RISK__DAILY_LOSS_LIMIT": "500",
        "TRADEBOOK_SESSION__MODE": "live",
        "TRADEBOOK_SESSION__REPLAY_SPEED": ".inf",
        "TRADEBOOK_SESSION__EXTENDED_HOURS": "1",
        "TRADEBOOK_RISK__MAX_ORDERS_PER_MINUTE": "30",
        "TRADEBOOK_RISK__MAX_POSITION__PER_INSTRUMENT__SPY.ARCX__QUANTITY": "500",
        "TRADEBOOK_RISK__MAX_POSITION__PER_INSTRUMENT__btcusdt.binance__NOTIONAL": "150000",
        "TRADEBOOK_RISK__MAX_EXPOSURE_PER_ASSET_CLASS__CRYPTO_SPOT": "null",
        "TRADEBOOK_RISK__PAR_CURRENCIES": "USDT, FDUSD",
        "TRADEBOOK_VENUES__ALPACA__CREDENTIALS_ENV__API_KEY": "MY_ALPACA_KEY",
        "HOME": "/root",  # not under the prefix: ignored
    }
    cfg = load_config(path, env=env)
    risk = cfg.risk
    assert risk.daily_loss_limit == D(500)  # env beats the file
    assert risk.price_collar_bps == 75.0 and isinstance(risk.price_collar_bps, float)
    assert risk.spread_action is SpreadAction.REJECT
    assert risk.min_touch_notional == D("0.1") and str(risk.min_touch_notional) == "0.1"
    assert risk.max_orders_per_minute == 30
    assert risk.max_position.limit_for("BTCUSDT.BINANCE").quantity == D("2.5")
    assert risk.max_position.limit_for("BTCUSDT.BINANCE").notional == D(150000)  # matched case-insensitively
    assert risk.max_position.limit_for("ESH4.GLBX").notional == D(2_500_000)
    assert risk.max_position.limit_for("SPY.ARCX").quantity == D(500)
    assert risk.max_position.limit_for("AAPL.XNAS") == risk.max_position.default
    assert risk.max_exposure_per_asset_class[AssetClass.CRYPTO_SPOT] is None
    assert risk.max_exposure_per_asset_class[AssetClass.EQUITY] == D(1_000_000)  # other classes kept
    assert risk.par_currencies == ("USDT", "FDUSD")
    assert cfg.sizing.method is SizingMethod.PERCENT_OF_EQUITY and cfg.sizing.percent == 2.0
    assert cfg.session.mode is SessionMode.LIVE and cfg.session.extended_hours is True
    assert cfg.session.replay_speed == float("inf")
    alpaca = cfg.venues["alpaca"]
    assert alpaca.enabled and alpaca.credentials_env["api_key"] == "MY_ALPACA_KEY"
    assert alpaca.credentials_env["secret_key"] == "APCA_API_SECRET_KEY"  # default kept
    assert set(cfg.venues) == {"paper", "alpaca", "binance", "ibkr"}  # one venue listed, others kept


def test_tradebook_config_variable_names_the_file(write_yaml):
    path = write_yaml("session:\n  account_id: DU1234567\n")
    assert load_config(env={"TRADEBOOK_CONFIG": str(path)}).session.account_id == "DU1234567"


def test_comments_only_and_empty_sections_give_defaults_but_an_empty_file_is_refused(write_yaml):
    assert load_config(write_yaml("# every key commented out\n# risk:\n"), env={}) == TradebookConfig()
    assert load_config(write_yaml("{}\n"), env={}) == TradebookConfig()
    assert load_config(write_yaml("risk:\nsizing:\n"), env={}) == TradebookConfig()
    empty = write_yaml(" \n\n")
    with pytest.raises(ConfigError, match=rf"^config file {empty} is empty; expected a mapping of sections"):
        load_config(empty, env={})


def test_venue_credentials_come_from_the_environment():
    venue = TradebookConfig().venues["alpaca"]
    env = {"APCA_API_KEY_ID": "PKTEST", "APCA_API_SECRET_KEY": "s3cr3t"}
    assert venue.credentials(env) == {"api_key": "PKTEST", "secret_key": "s3cr3t"}
    with pytest.raises(ConfigError, match=r"venue alpaca: .*APCA_API_SECRET_KEY \(credentials_env.secret_key\)"):
        venue.credentials({"APCA_API_KEY_ID": "PKTEST"})


# -- bad input ------------------------------------------------------------------------------------
BAD_FILES = [
    ("risk:\n  max_postion: {}\n",
     ["unknown key 'risk.max_postion'", "did you mean 'max_position'", "known keys of risk:", "daily_loss_limit"]),
    ("riskk:\n  daily_loss_limit: 5\n", ["unknown key 'riskk'", "known sections: risk, sizing, router"]),
    ("risk:\n  max_position:\n    default: {qty: 5}\n",
     ["unknown key 'risk.max_position.default.qty'", "quantity, notional"]),
    ("venues:\n  alpaca:\n    api_key: PK123\n", ["unknown key 'venues.alpaca.api_key'", "credentials_env"]),
    ("risk:\n  max_orders_per_minute: five\n", ["risk.max_orders_per_minute = 'five'", "expected an integer"]),
    ("risk:\n  max_orders_per_minute: 2.5\n", ["risk.max_orders_per_minute = 2.5", "expected an integer"]),
    ("risk:\n  max_orders_per_minute: -3\n", ["risk.max_orders_per_minute = -3", "expected a number > 0"]),
    ("risk:\n  daily_loss_limit: lots\n", ["risk.daily_loss_limit = 'lots'", "expected a finite number"]),
    ("risk:\n  daily_loss_limit: .nan\n", ["risk.daily_loss_limit = nan", "finite number"]),
    ("risk:\n  daily_loss_limit: -500\n", ["risk.daily_loss_limit = -500", "expected a number > 0"]),
    ("risk:\n  daily_loss_limit: true\n", ["risk.daily_loss_limit = True", "finite number"]),
    ("risk:\n  price_collar_bps: .inf\n", ["risk.price_collar_bps = inf", "a number (finite)"]),
    ("risk:\n  equity_margin_account: maybe\n", ["risk.equity_margin_account = 'maybe'", "true, false, 1 or 0"]),
    ("risk:\n  spread_action: aggressive\n", ["risk.spread_action = 'aggressive'", "one of defer, reject"]),
    ("risk:\n  max_exposure_per_asset_class: {options: 5}\n",
     ["risk.max_exposure_per_asset_class key = 'options'", "equity, crypto_spot, future, fx_spot"]),
    ("risk:\n  max_exposure_per_asset_class: {future: 0}\n",
     ["risk.max_exposure_per_asset_class.future = 0", "> 0"]),
    ("risk:\n  max_position:\n    per_instrument:\n      SPY.ARCX: {quantity: 0}\n",
     ["risk.max_position.per_instrument.SPY.ARCX.quantity = 0", "> 0"]),
    ("risk:\n  par_currencies: USDT\n", []),  # a single string is a one-element list: accepted (checked below)
    ("risk: 5\n", ["risk = 5", "expected a mapping of keys under risk"]),
    ("sizing:\n  kelly_cap: 1.5\n", ["sizing.kelly_cap = 1.5", "> 0 and <= 1"]),
    ("sizing:\n  method: full_kelly\n", ["sizing.method = 'full_kelly'", "half_kelly, fixed, percent_of_equity"]),
    ("sizing:\n  percent: 0\n", ["sizing.percent = 0", "> 0 and <= 100"]),
    ("router:\n  signal_market_threshold: 1.2\n", ["router.signal_market_threshold = 1.2", ">= 0 and <= 1"]),
    ("router:\n  vwap_min_minutes: 20\n", ["router.vwap_min_minutes = 20", "router.vwap_max_minutes = 15"]),
    ("router:\n  passive_adv_fraction: 0.02\n", ["router.passive_adv_fraction = 0.02", "passive < twap"]),
    ("session:\n  mode: backtest\n", ["session.mode = 'backtest'", "one of paper, live"]),
    ("session:\n  account_id: 12345\n", ["session.account_id = 12345", "string (quote it in YAML)"]),
    ("session:\n  replay_speed: 0\n", ["session.replay_speed = 0", "> 0"]),
    ("session:\n  mode: live\n", ["session.mode = 'live' but no venue other than paper is enabled"]),
    ("venues:\n  alpaca:\n    credentials_env: {secret_key: 'abc/DEF+ghi=='}\n",
     ["venues.alpaca.credentials_env.secret_key", "name* of an environment variable", "never the secret"]),
    ("venues:\n  binance:\n    options: {api_secret: xyz}\n",
     ["venues.binance.options.api_secret", "secrets do not belong in the configuration"]),
    ("venues:\n  ibkr:\n    enabled: yes please\n", ["venues.ibkr.enabled = 'yes please'", "boolean"]),
    ("- risk\n- sizing\n", ["expected a mapping of sections", "got a list"]),
    ("risk:\n  daily_loss_limit: [1\n", ["line 3", "invalid YAML"]),
]


@pytest.mark.parametrize(("text", "fragments"), BAD_FILES)
def test_bad_file_values_are_refused_naming_key_value_and_expectation(write_yaml, text, fragments):
    path = write_yaml(text)
    if not fragments:
        assert load_config(path, env={}).risk.par_currencies == ("USDT",)
        return
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    if "=" in fragments[0] and "line" not in fragments[0]:
        assert f"in {path}" in message  # where the value came from


def test_a_secret_pasted_into_the_file_is_not_echoed(write_yaml):
    path = write_yaml("venues:\n  alpaca:\n    credentials_env: {secret_key: 'abc/verysecretvalue=='}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert "verysecretvalue" not in str(info.value)


BAD_ENV = [
    ({"TRADEBOOK_RISK__DAILY_LOSS": "5"},
     ["unknown key 'risk.daily_loss'", "from TRADEBOOK_RISK__DAILY_LOSS", "did you mean 'daily_loss_limit'"]),
    ({"TRADEBOOK_RISKY__X": "5"}, ["unknown key 'risky'", "known sections"]),
    ({"TRADEBOOK_RISK": "5"}, ["TRADEBOOK_RISK: risk is a section", "TRADEBOOK_RISK__<KEY>"]),
    ({"TRADEBOOK_RISK__MAX_POSITION": "5"}, ["risk.max_position is a section"]),
    ({"TRADEBOOK_RISK__DAILY_LOSS_LIMIT__X": "5"}, ["risk.daily_loss_limit is a value, not a section"]),
    ({"TRADEBOOK_RISK____X": "5"}, ["empty key between '__'"]),
    ({"TRADEBOOK_RISK__DAILY_LOSS_LIMIT": "5k"},
     ["risk.daily_loss_limit = '5k' (from TRADEBOOK_RISK__DAILY_LOSS_LIMIT)", "finite number"]),
    ({"TRADEBOOK_RISK__MAX_QUOTE_AGE_MS": "1.5"}, ["risk.max_quote_age_ms = '1.5'", "an integer"]),
    ({"TRADEBOOK_SESSION__EXTENDED_HOURS": "yes"}, ["session.extended_hours = 'yes'", "true, false, 1 or 0"]),
    ({"TRADEBOOK_SESSION__MODE": "paperr"}, ["session.mode = 'paperr'", "one of paper, live"]),
    ({"TRADEBOOK_SIZING__KELLY_CAP": "nan"}, ["sizing.kelly_cap = 'nan'", "a number (finite)"]),
    ({"TRADEBOOK_RISK__MAX_EXPOSURE_PER_ASSET_CLASS__OPTIONS": "5"},
     ["risk.max_exposure_per_asset_class key = 'OPTIONS'", "one of equity"]),
    ({"TRADEBOOK_SESSION__MODE": "live"}, ["no venue other than paper is enabled"]),
]


@pytest.mark.parametrize(("env", "fragments"), BAD_ENV)
def test_bad_env_overrides_are_refused_naming_the_variable_or_key(env, fragments):
    with pytest.raises(ConfigError) as info:
        load_config(env=env)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="config file .*nope.yaml not found"):
        load_config(tmp_path / "nope.yaml", env={})


def test_venue_built_by_hand_with_a_secret_is_refused():
    with pytest.raises(ConfigError, match="never the secret itself"):
        VenueConfig(name="binance", credentials_env={"secret": "aB3$kkk"})


# -- files that are not a configuration: one ConfigError naming the file -------------------------
def _one_line_error(path, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, env={}, **kwargs)
    message = str(info.value)
    assert "\n" not in message and str(path) in message, message
    return message


@pytest.mark.parametrize(("content", "fragments"), [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", ["is binary (a NUL byte at offset 8)", "expected a YAML text file"]),
    (b"risk:\n  account_currency: \xe9uro\n", ["is not UTF-8 text (byte 0xe9 on line 2)", "UTF-8"]),
    (b"", ["is empty; expected a mapping of sections", "write {} in it"]),
    (b"\n  \n", ["is empty"]),
    (b"just a word\n", ["expected a mapping of sections", "got a string"]),
    (b"42\n", ["got a number"]),
    (b"- risk\n", ["got a list"]),
    (b"[" * 5000 + b"]" * 5000, ["line 1: nested more than 32 levels deep"]),
    ("".join("  " * i + "a:\n" for i in range(40)).encode(), ["nested more than 32 levels deep"]),
    (b"risk:\n  daily_loss_limit: 500\n  max_spread_bps: 10\n  daily_loss_limit: 50000\n",
     ["line 4: key 'daily_loss_limit' is written twice in one mapping, on line 2 and line 4",
      "YAML would silently keep the last"]),
    (b"venues:\n  alpaca: {enabled: true}\n  alpaca: {enabled: false}\n", ["key 'alpaca' is written twice"]),
    (b"risk:\n  max_orders_per_minute: " + b"9" * 5000 + b"\n",
     ["risk.max_orders_per_minute = '99999", "characters) (in", "line 2): expected a number > 0 and <= 1000000000"]),
    (b"session:\n  account_id: " + b"9" * 5000 + b"\n", ["session.account_id", "expected a non-empty string"]),
    (b"risk: {daily_loss_limit: [1\n", ["invalid YAML"]),
    (b"risk:\n\tdaily_loss_limit: 5\n", ["line 2", "invalid YAML"]),
])
def test_a_file_that_is_not_a_configuration_is_one_clear_error(tmp_path, content, fragments):
    path = tmp_path / "tradebook.yaml"
    path.write_bytes(content)
    message = _one_line_error(path)
    for fragment in fragments:
        assert fragment in message, message
    if b"9" * 100 in content:
        assert "9" * 100 not in message  # a huge value is cut, not printed in full


def test_a_directory_a_device_a_missing_or_huge_file_are_refused_naming_it(tmp_path):
    assert "is a directory; expected a YAML file" in _one_line_error(tmp_path)
    assert "is not a regular file" in _one_line_error(Path("/dev/zero"))  # would never end if read
    assert "not found; expected a YAML file" in _one_line_error(tmp_path / "nope.yaml")
    (tmp_path / "a_file").write_text("")
    assert "cannot be read (Not a directory)" in _one_line_error(tmp_path / "a_file" / "tradebook.yaml")
    huge = tmp_path / "huge.yaml"
    huge.write_bytes(b"# padding\n" * 200_000)
    assert "is larger than 1,000,000 bytes" in _one_line_error(huge)


def test_an_unreadable_file_is_refused_naming_it(tmp_path):
    import shutil
    import subprocess
    import sys

    path = tmp_path / "tradebook.yaml"
    path.write_text("risk: {}\n")
    path.chmod(0)
    code = ("import sys\nfrom tradebook.config import load_config\nfrom tradebook.errors import ConfigError\n"
            "try:\n    load_config(sys.argv[1], env={})\nexcept ConfigError as exc:\n    print(exc)\n")
    command = [sys.executable, "-c", code, str(path)]
    if os.geteuid() == 0:  # root reads whatever the permissions: ask as nobody
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv to drop privileges")
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.stdout.strip().startswith(f"config file {path} cannot be read (Permission denied)"), \
        result.stdout + result.stderr


def test_aliases_that_expand_exponentially_are_refused_quickly(write_yaml):
    import time

    anchors = ['&a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    anchors += [f"&a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    path = write_yaml(f"session:\n  account_id: [{', '.join(anchors)}]\n")  # 9**10 strings if expanded
    started = time.monotonic()
    message = _one_line_error(path)
    assert time.monotonic() - started < 5 and len(message) < 400, message
    assert "session.account_id = [[" in message and "expected a non-empty string" in message


def test_values_name_their_file_line(write_yaml):
    path = write_yaml("# limits\nrisk:\n  max_spread_bps: 10\n  max_orders_per_minute: -1\n")
    assert f"risk.max_orders_per_minute = -1 (in {path}, line 4): expected a number > 0" in _one_line_error(path)
    path = write_yaml("risk:\n  max_postion: {}\n")
    assert f"unknown key 'risk.max_postion' (in {path}, line 2)" in _one_line_error(path)


# -- numeric bounds --------------------------------------------------------------------------------
MONEY_BOUND = "of magnitude below 1e26 with at most 12 decimal places (money and quantities are stored as DECIMAL(38, 12))"


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("risk.daily_loss_limit", "1E+999999999999999999", "a number > 0 and " + MONEY_BOUND),
    ("risk.daily_loss_limit", "1.0e400", "a number > 0 and " + MONEY_BOUND),  # float would make it inf
    ("risk.max_gross_exposure", "100000000000000000000000000", "a number > 0 and " + MONEY_BOUND),
    ("risk.min_touch_notional", "0.0000000000001", "a number >= 0 and " + MONEY_BOUND),
    ("sizing.fixed_quantity", "1e-20", "a number > 0 and " + MONEY_BOUND),
    ("risk.max_orders_per_minute", "10000000000", "a number > 0 and <= 1000000000"),
    ("risk.max_quote_age_ms", "9" * 5000, "a number > 0 and <= 86400000"),
    ("risk.breaker_cooldown_s", "1e300", "a number > 0 and <= 86400"),
    ("router.twap_interval_s", "86401", "a number > 0 and <= 86400"),
    ("risk.price_collar_bps", "10001", "a number > 0 and <= 10000"),
    ("session.replay_speed", "1e12", "a number > 0 and <= 1000000000"),
    ("session.max_signal_age_s", "1e12", "a number > 0 and <= 1000000000"),  # a float with no bound of its own: the default one
])
def test_every_number_has_a_stated_bound_named_in_the_error(write_yaml, key, value, expected):
    section, name = key.split(".")
    path = write_yaml(f"{section}:\n  {name}: {value}\n")
    message = _one_line_error(path)
    assert f"{key} = " in message and f"(in {path}, line 2): expected {expected}" in message, message
    variable = f"TRADEBOOK_{section.upper()}__{name.upper()}"
    with pytest.raises(ConfigError) as info:
        load_config(env={variable: value})
    message = str(info.value)
    assert f"{key} = '{value[:20]}" in message and f" (from {variable}): expected {expected}" in message, message
    assert len(message) < 400  # a 5,000-digit value is cut


def test_values_at_their_bounds_are_accepted_and_exact(write_yaml):
    cfg = load_config(write_yaml("""
risk:
  daily_loss_limit: 99999999999999999999999999.999999999999
  min_touch_notional: 0.000000000001
  max_orders_per_minute: 1_000_000_000
  price_collar_bps: 10000
session:
  replay_speed: .inf
"""), env={})
    assert cfg.risk.daily_loss_limit == D("99999999999999999999999999.999999999999")  # as typed, not a float
    assert cfg.risk.min_touch_notional == D("1E-12")
    assert cfg.risk.max_orders_per_minute == 1_000_000_000 and cfg.session.replay_speed == float("inf")
    with pytest.raises(ConfigError, match=r"risk.daily_loss_limit = Decimal\('1E\+30'\): expected a number > 0 and"):
        RiskConfig(daily_loss_limit=D("1E+30"))  # a section built in a notebook has the same bounds


# -- environment: every documented TRADEBOOK_ variable ----------------------------------------------
ROOT = Path(__file__).resolve().parents[1]
# a valid value for each variable the docs and the package name, and what it must change
DOCUMENTED = {
    "TRADEBOOK_CONFIG": None,  # checked on its own below
    "TRADEBOOK_STORE": ("/data/desk.duckdb", lambda c: c.session.store_path == Path("/data/desk.duckdb")),
    "TRADEBOOK_DATA_DIR": ("/data/bundled", lambda c: c == TradebookConfig()),  # not a config key: no change
    "TRADEBOOK_PROGRESS": ("0", lambda c: c == TradebookConfig()),  # not a config key either
    "TRADEBOOK_SESSION__STORE_PATH": ("/data/desk.duckdb", lambda c: c.session.store_path == Path("/data/desk.duckdb")),
    "TRADEBOOK_RISK__DAILY_LOSS_LIMIT": ("500", lambda c: c.risk.daily_loss_limit == D(500)),
    "TRADEBOOK_SESSION__MODE": ("live", lambda c: c.session.mode is SessionMode.LIVE),
    "TRADEBOOK_RISK__MAX_POSITION__PER_INSTRUMENT__SPY.ARCX__QUANTITY":
        ("500", lambda c: c.risk.max_position.limit_for("SPY.ARCX").quantity == D(500)),
    "TRADEBOOK_VENUES__ALPACA__ENABLED": ("true", lambda c: c.venues["alpaca"].enabled),
    "TRADEBOOK_FORCE_PAPER": ("true", lambda c: c == TradebookConfig()),  # read by tradebook.venues.factory
    # the dashboard's and read API's token, read by tradebook.monitor.server: a secret, never a config key
    "TRADEBOOK_MONITOR_TOKEN": ("s3cret-token", lambda c: c == TradebookConfig()),
}


def _documented_variables() -> set[str]:
    texts = [ROOT / "README.md", EXAMPLE, *sorted((ROOT / "tradebook").rglob("*.py"))]
    names = set()
    for text_path in texts:
        names |= set(re.findall(r"\bTRADEBOOK_[A-Z0-9_.]*[A-Z0-9]\b", text_path.read_text(encoding="utf-8")))
    # broker adapters' own variables (ADAPTER_ENV, read by their from_env) are not config keys: checked below;
    # TRADEBOOK_ONLY_STATUSES is a constant of ib_mapping, not a variable
    return {n for n in names if "<" not in n and not n.endswith(("__KEY", "_SECTION")) and not ADAPTER_ENV.match(n)
            and n != "TRADEBOOK_ONLY_STATUSES"}


def test_broker_adapter_variables_are_not_config_keys_and_never_shown():
    env = {"TRADEBOOK_ALPACA_KEY_ID": "PKSECRETVALUE1", "TRADEBOOK_CCXT_BINANCE_SECRET": "s3cr3t-value",
           "TRADEBOOK_IB_PORT": "7497", "TRADEBOOK_FORCE_PAPER": "true", "TRADEBOOK_MONITOR_TOKEN": "plain-words-tok"}
    assert load_config(env=env) == TradebookConfig()
    report = describe_config(env=env)
    shown = str(report)
    assert "PKSECRETVALUE1" not in shown and "s3cr3t-value" not in shown and "plain-words-tok" not in shown
    assert "TRADEBOOK_MONITOR_TOKEN" in {v.key for v in report.variables}  # said to be set, its value not shown
    with pytest.raises(ConfigError, match="TRADEBOOK_ALPACA__KEY_ID"):  # a config-style name is still checked
        load_config(env={"TRADEBOOK_ALPACA__KEY_ID": "x"})


def test_every_documented_variable_is_known_and_applies(write_yaml):
    documented = _documented_variables()
    assert {"TRADEBOOK_STORE", "TRADEBOOK_CONFIG", "TRADEBOOK_DATA_DIR"} <= documented
    assert documented <= set(DOCUMENTED), f"documented but not tested: {documented - set(DOCUMENTED)}"
    for name, check in DOCUMENTED.items():
        if check is None:
            continue
        value, applied = check
        env = {name: value, "TRADEBOOK_VENUES__ALPACA__ENABLED": "true"} if name == "TRADEBOOK_SESSION__MODE" \
            else {name: value}
        assert applied(load_config(write_yaml("{}"), env=env)), name
    path = write_yaml("risk:\n  daily_loss_limit: 700\n", name="desk.yaml")
    assert load_config(env={"TRADEBOOK_CONFIG": str(path)}).risk.daily_loss_limit == D(700)


def test_the_store_variable_and_the_store_setting_agree(write_yaml, tmp_path):
    path = write_yaml("session:\n  store_path: stores/desk.duckdb\n")
    assert load_config(path, env={}).session.store_path == tmp_path / "stores" / "desk.duckdb"  # beside the file
    assert load_config(path, env={"TRADEBOOK_STORE": "/x/y.duckdb"}).session.store_path == Path("/x/y.duckdb")
    home = write_yaml("session:\n  store_path: ~/desk.duckdb\n", name="home.yaml")
    assert load_config(home, env={}).session.store_path == Path.home() / "desk.duckdb"
    same = {"TRADEBOOK_STORE": "/x/y.duckdb", "TRADEBOOK_SESSION__STORE_PATH": "/x/y.duckdb"}
    assert load_config(path, env=same).session.store_path == Path("/x/y.duckdb")
    with pytest.raises(ConfigError, match="TRADEBOOK_STORE = '/x/y.duckdb' and TRADEBOOK_SESSION__STORE_PATH = "
                                          "'/x/z.duckdb' name two different stores"):
        load_config(path, env={**same, "TRADEBOOK_SESSION__STORE_PATH": "/x/z.duckdb"})
    assert load_config(env={}).session.store_path is None or Path.cwd() != ROOT  # default: the workspace's


def test_a_mistyped_reserved_variable_is_named(write_yaml):
    with pytest.raises(ConfigError) as info:
        load_config(write_yaml("{}"), env={"TRADEBOOK_STOR": "/x.duckdb"})
    message = str(info.value)
    assert "(from TRADEBOOK_STOR); did you mean TRADEBOOK_STORE?" in message
    assert "the variables TRADEBOOK_CONFIG, TRADEBOOK_STORE, TRADEBOOK_DATA_DIR" in message
    assert message.endswith("are not config keys")


# -- which file ------------------------------------------------------------------------------------------
def test_the_workspace_file_is_found_from_a_subfolder_up_to_the_project_root(tmp_path, monkeypatch):
    project = tmp_path / "desk"
    (project / "notebooks").mkdir(parents=True)
    (project / "pyproject.toml").write_text("[project]\nname = 'desk'\n")
    (tmp_path / "tradebook.yaml").write_text("risk:\n  daily_loss_limit: 1\n")  # outside the project: never read
    monkeypatch.chdir(project / "notebooks")
    assert find_config_file(env={})[0] is None and load_config(env={}) == TradebookConfig()
    (project / "tradebook.yaml").write_text("risk:\n  daily_loss_limit: 900\nsession:\n  store_path: ws.duckdb\n")
    found, why = find_config_file(env={})
    assert found == project / "tradebook.yaml" and why == f"found tradebook.yaml in {project}"
    cfg = load_config(env={})
    assert cfg.risk.daily_loss_limit == D(900) and cfg.session.store_path == project / "ws.duckdb"
    from tradebook.store import default_store_path

    assert default_store_path() == project / "ws.duckdb"  # what tb.open_store() and the notebooks use
    (project / "notebooks" / "tradebook.yaml").write_text("risk:\n  daily_loss_limit: 800\n")  # nearest wins
    assert load_config(env={}).risk.daily_loss_limit == D(800)
    other = tmp_path / "other.yaml"
    other.write_text("risk:\n  daily_loss_limit: 700\n")
    assert load_config(env={"TRADEBOOK_CONFIG": str(other)}).risk.daily_loss_limit == D(700)
    outside = tmp_path / "loose"
    outside.mkdir()
    monkeypatch.chdir(outside)  # not in a project: only the working directory is looked at
    assert find_config_file(env={})[0] is None


# -- secrets -------------------------------------------------------------------------------------------
SECRET = "PKX7Q2ZT9MBL4WQ8RD3A"  # shaped like an Alpaca key id
SECRET_B64 = "kT4/verysecretvalue+Zq9=="


@pytest.mark.parametrize(("where", "env", "text"), [
    ("credentials_env from a variable", {"TRADEBOOK_VENUES__ALPACA__CREDENTIALS_ENV__API_KEY": SECRET}, "{}"),
    ("credentials_env in the file", {}, f"venues:\n  alpaca:\n    credentials_env: {{api_key: {SECRET}}}\n"),
    ("options.auth from a variable", {"TRADEBOOK_VENUES__IBKR__OPTIONS__AUTH": SECRET}, "{}"),
    ("options.auth in the file", {}, f"venues:\n  ibkr:\n    options: {{auth: '{SECRET_B64}'}}\n"),
    ("options.password that is not a string", {}, "venues:\n  ibkr:\n    options: {password: 98765432101234}\n"),
    ("a number field", {"TRADEBOOK_RISK__DAILY_LOSS_LIMIT": SECRET}, "{}"),
    ("a string field", {}, f"session:\n  mode: '{SECRET_B64}'\n"),
    ("a key", {}, f"venues:\n  alpaca:\n    {SECRET}: 1\n"),
    ("a URL with a password", {}, f"venues:\n  ibkr:\n    options: {{url: 'https://desk:{SECRET}@gw.example'}}\n"),
    ("a URL with a password, elsewhere", {"TRADEBOOK_SESSION__MODE": f"https://desk:{SECRET}@gw.example"}, "{}"),
])
def test_a_secret_typed_anywhere_is_never_echoed(write_yaml, where, env, text):
    with pytest.raises(ConfigError) as info:
        load_config(write_yaml(text), env=env)
    message = str(info.value)
    for secret in (SECRET, SECRET_B64, "98765432101234"):
        assert secret not in message and secret[4:14] not in message, (where, message)
    assert "redacted" in message or "not shown" in message, message


def test_credentials_name_variables_and_the_not_set_message_shows_names_only():
    venue = VenueConfig(name="alpaca", credentials_env={"api_key": "DESK_ALPACA_KEY"})
    with pytest.raises(ConfigError) as info:
        venue.credentials({})
    assert str(info.value) == "venue alpaca: environment variable(s) not set: DESK_ALPACA_KEY (credentials_env.api_key)"
    assert venue.credentials({"DESK_ALPACA_KEY": SECRET}) == {"api_key": SECRET}
    assert SECRET not in repr(venue)
    for name in ("APCA_API_KEY_ID", "BINANCE_API_SECRET", "KEY2", "Desk_Key"):
        assert plausible_env_name(name), name
    for text in (SECRET, "aB3kkk", "abc/DEF+ghi==", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"):
        assert not plausible_env_name(text), text


def test_describe_config_shows_sources_and_never_a_credential(write_yaml):
    path = write_yaml("# desk\nrisk:\n  daily_loss_limit: 800\nvenues:\n  alpaca:\n    enabled: true\n")
    env = {"TRADEBOOK_RISK__MAX_SPREAD_BPS": "25", "APCA_API_KEY_ID": SECRET, "TRADEBOOK_STORE": "/d/desk.duckdb"}
    report = describe_config(path, env=env)
    assert report.config == load_config(path, env=env) and report.file == path
    rows = {s.key: (s.value, s.source) for s in report.settings}
    assert rows["risk.daily_loss_limit"] == ("800", f"in {path}, line 3")
    assert rows["venues.alpaca.enabled"] == ("true", f"in {path}, line 6")
    assert rows["risk.max_spread_bps"] == ("25.0", "from TRADEBOOK_RISK__MAX_SPREAD_BPS")
    assert rows["session.store_path"] == ("/d/desk.duckdb", "from TRADEBOOK_STORE")
    assert rows["risk.max_orders_per_minute"] == ("120", "default")
    assert rows["venues.alpaca.credentials_env.api_key"][0] == "APCA_API_KEY_ID (set)"
    assert rows["venues.alpaca.credentials_env.secret_key"][0] == "APCA_API_SECRET_KEY (not set)"
    assert [(v.key, v.value) for v in report.variables] == [("TRADEBOOK_STORE", "/d/desk.duckdb")]
    text = str(report)
    assert text.startswith(f"config file: {path} (the path given)") and SECRET not in text
    assert text.endswith("not config keys:\n  TRADEBOOK_STORE = /d/desk.duckdb  (the workspace store (sets "
                         "session.store_path))")
    assert set(rows) == {k for k, _ in _flat(TradebookConfig().to_dict())}  # every setting, once


def _flat(node, prefix=""):
    for key, value in node.items():
        path = f"{prefix}.{key}".lstrip(".")
        if isinstance(value, dict) and value:
            yield from _flat(value, path)
        else:
            yield path, value


# -- Session reads the workspace configuration ------------------------------------------------------
BTC = "BTCUSDT.BINANCE"


@pytest.fixture
def calibrated_store(calibrated_btc_store):
    return calibrated_btc_store


@pytest.fixture
def clean_env(monkeypatch):
    """No TRADEBOOK_ variable from the machine running the tests leaks into a session."""
    for name in list(os.environ):
        if name.startswith("TRADEBOOK_"):
            monkeypatch.delenv(name)
    return monkeypatch


def _first_batches(store, n: int):
    from tradebook.data.feeds import ReplayFeed

    feed = ReplayFeed({BTC: store.quotes(BTC)}, {BTC: store.trades(BTC)})
    batches = []
    for batch in feed.batches():
        batches.append(batch)
        if len(batches) == n:
            return batches
    return batches


def test_a_session_without_config_applies_the_file_and_every_variable(calibrated_store, tmp_path, clean_env):
    from tradebook.data import bundled_data_dir
    from tradebook.model.instruments import Side
    from tradebook.model.orders import Signal
    from tradebook.session import Session

    desk = tmp_path / "desk.yaml"
    desk.write_text("session:\n  account_id: DESK-7\nsizing:\n  method: fixed\n  fixed_quantity: 0.002\n"
                    "risk:\n  daily_loss_limit: 800\n")
    clean_env.setenv("TRADEBOOK_CONFIG", str(desk))
    clean_env.setenv("TRADEBOOK_SIZING__FIXED_QUANTITY", "0.003")  # the variable beats the file
    clean_env.setenv("TRADEBOOK_RISK__MAX_SPREAD_BPS", "25")
    clean_env.setenv("TRADEBOOK_STORE", str(calibrated_store.path))
    clean_env.setenv("TRADEBOOK_DATA_DIR", str(bundled_data_dir()))
    clean_env.setenv("TRADEBOOK_PROGRESS", "0")
    session = Session(calibrated_store, calibrations=[BTC], state_dir=tmp_path / "state").start()
    try:
        assert session.config == load_config()
        assert session.config.session.store_path == calibrated_store.path
        assert session.risk.config.daily_loss_limit == D(800) and session.risk.config.max_spread_bps == 25.0
        batches = _first_batches(calibrated_store, 6)
        for batch in batches[:3]:
            session.step(batch)
        [order] = session.submit(Signal("nb", "cfg-1", BTC, Side.BUY, None, strength=0.95))
        for batch in batches[3:]:
            session.step(batch)
        assert order.intent.quantity == D("0.003")  # fixed sizing, quantity from the variable
        orders = session.orders()
        assert orders["account_id"].tolist() == ["DESK-7"] and orders["quantity"].tolist() == [D("0.003")]
    finally:
        session.stop()


def test_a_session_takes_a_config_path_and_finds_the_workspace_file(calibrated_store, tmp_path, clean_env):
    from tradebook.session import Session

    path = tmp_path / "paper.yaml"
    path.write_text("session:\n  account_id: FROM-PATH\n")
    session = Session(calibrated_store, calibrations=[BTC], state_dir=tmp_path / "a", config=str(path))
    assert session.account_id == "FROM-PATH"
    session.stop()
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    (workspace / "tradebook.yaml").write_text("session:\n  account_id: FROM-CWD\n")
    clean_env.chdir(workspace)
    session = Session(calibrated_store, calibrations=[BTC], state_dir=tmp_path / "b")
    assert session.account_id == "FROM-CWD"
    session.stop()


@pytest.mark.parametrize("content", [b"\xff\xfe\x00binary", b"risk:\n  daily_loss_limit: 1E+999999999999999999\n",
                                     b"risk:\n  max_spread_bps: 5\n  max_spread_bps: 6\n"])
def test_a_session_with_a_bad_config_file_is_refused_before_anything_is_written(calibrated_store, tmp_path,
                                                                                clean_env, content):
    from tradebook.session import Session

    bad = tmp_path / "bad.yaml"
    bad.write_bytes(content)
    clean_env.setenv("TRADEBOOK_CONFIG", str(bad))
    with pytest.raises(ConfigError, match=f"{bad}"):
        Session(calibrated_store, calibrations=[BTC], state_dir=tmp_path / "never")
    assert not (tmp_path / "never").exists()
    clean_env.delenv("TRADEBOOK_CONFIG")
    clean_env.setenv("TRADEBOOK_VENUES__ALPACA__CREDENTIALS_ENV__API_KEY", SECRET)
    with pytest.raises(ConfigError) as info:
        Session(calibrated_store, calibrations=[BTC], state_dir=tmp_path / "never")
    assert SECRET not in str(info.value) and not (tmp_path / "never").exists()
