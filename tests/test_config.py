"""Configuration: defaults, YAML file, TRADEBOOK_ environment overrides, and every kind of bad value refused."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from tradebook.config import (
    RiskConfig,
    RouterConfig,
    SessionMode,
    SizingMethod,
    SpreadAction,
    TradebookConfig,
    VenueConfig,
    load_config,
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
