"""tradebook's configuration: frozen sections, loaded from YAML with environment overrides.

``TradebookConfig()`` is the defaults (paper mode, every limit on). ``load_config(path, env)``
reads a YAML file, then applies environment overrides, then validates everything at once:

- The file: ``path``; else ``$TRADEBOOK_CONFIG``; else ``tradebook.yaml`` in the working
  directory or, inside a project (a folder with ``pyproject.toml`` or ``.git``), the nearest
  folder up to the project's root that holds one (a notebook runs in ``notebooks/`` and
  still finds the workspace's file); else no file. :func:`find_config_file` says which.
  ``Session`` (without ``config=``), the ``tradebook`` command (``--config FILE``) and the
  notebooks all read it this way.
- Environment variables named ``TRADEBOOK_<SECTION>__<KEY>`` (``__`` nests) override the
  file, e.g. ``TRADEBOOK_RISK__DAILY_LOSS_LIMIT=500`` or ``TRADEBOOK_SESSION__MODE=live``.
  Field names match case-insensitively; mapping keys (an instrument id, a venue name, an
  asset class) are matched against the keys already there, else taken as written
  (venue names, asset classes and credential names are lower-cased). Values are parsed to
  the field's type: Decimal for money and quantities, int, float, bool (``true``/``false``/
  ``1``/``0``), str, enums, comma-separated lists; ``null``/``none`` clears an optional
  value. Some variables are not config keys (:data:`RESERVED_ENV`): ``TRADEBOOK_CONFIG``
  (the file), ``TRADEBOOK_DATA_DIR`` (the bundled data folder, read by
  :mod:`tradebook.data.catalog`), ``TRADEBOOK_PROGRESS`` (progress bars),
  ``TRADEBOOK_FORCE_PAPER``, ``TRADEBOOK_MONITOR_TOKEN`` (the dashboard's token, shown
  redacted) and ``TRADEBOOK_STORE``, the workspace store, which sets ``session.store_path`` like
  ``TRADEBOOK_SESSION__STORE_PATH`` does. Any other ``TRADEBOOK_`` variable is refused as a
  typo, with the nearest name suggested.
- Unknown keys, in the file or in the environment under the prefix, are refused naming the
  key path and the known keys: a typo in a risk limit must not silently leave the default
  in force. A key written twice in one mapping of the file is refused naming both lines
  (YAML would silently keep the last).
- Wrong types and out-of-range values are refused naming the key path, the value, where it
  came from (file and line, or variable) and what was expected
  (:class:`~tradebook.errors.ConfigError`). Every number has a stated range: money and
  quantities fit the store's ``DECIMAL(38, 12)`` (magnitude below 1e26, at most 12 decimal
  places), and each int and float field has its own bounds (a float without one stays
  within 1e9, so seconds still fit int64 nanoseconds).
- A file that is not a YAML mapping (binary, not UTF-8, empty, a list, nested deeper than
  any config, larger than 1 MB, a directory, unreadable) is one ConfigError naming the file
  and what was expected.
- Mappings merge: a file that sets one venue or one instrument's limit keeps the defaults
  of the others.

Secrets never live in the file: a venue names the *environment variables* that hold its
credentials (``credentials_env``), and :meth:`VenueConfig.credentials` reads them. A value
there that does not look like a variable's name (a pasted key) is refused and never
echoed; an option whose key looks secret (``auth``, ``key``, ``token``...) is refused; and
no error message shows a value that looks like a secret, whatever field it was typed into.

Reading the file lives in :mod:`tradebook.config_file`, telling secrets from names in
:mod:`tradebook.redaction`. ``config/tradebook.example.yaml`` documents every key with its default;
:func:`describe_config` (``tradebook config``) lists the effective settings and where
each came from.

Why this file is long: the sections and the reader that converts and range-checks every file key and
variable by its field's type and metadata change together (a new field is read by its type), and the
loader must build the sections it validates; YAML parsing and secret detection already live elsewhere.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import os
import re
import reprlib
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Union, get_args, get_origin, get_type_hints

from tradebook.config_file import YamlBigInt, read_yaml
from tradebook.errors import ConfigError
from tradebook.model.instruments import AssetClass
from tradebook.redaction import SECRET_WORDS, URL_PASSWORD, looks_secret, plausible_env_name, redact

ENV_PREFIX = "TRADEBOOK_"
ENV_CONFIG_PATH = "TRADEBOOK_CONFIG"  # reserved: the file load_config reads when no path is given
ENV_STORE = "TRADEBOOK_STORE"  # reserved: the workspace store, an alias of session.store_path
ENV_DATA_DIR = "TRADEBOOK_DATA_DIR"  # reserved: the bundled data folder (tradebook.data.catalog)
RESERVED_ENV: Mapping[str, str] = {
    ENV_CONFIG_PATH: "the configuration file to read",
    ENV_STORE: "the workspace store (sets session.store_path)",
    ENV_DATA_DIR: "the bundled data folder",
    "TRADEBOOK_PROGRESS": "progress bars: 1 on, 0 off (tradebook.progress)",
    "TRADEBOOK_FORCE_PAPER": "true: every order goes to the paper venue, whatever venues and routing say",
    "TRADEBOOK_MONITOR_TOKEN": "the dashboard's and read API's token (tradebook.monitor.server), shown redacted",
}  # a new TRADEBOOK_ variable that is not a config key belongs here, or load_config refuses it as a typo
SECRET_ENV = frozenset({"TRADEBOOK_MONITOR_TOKEN"})  # reserved variables whose value is never shown
# Broker adapters read their credentials and connection settings from these variables
# (``from_env``): not config keys, never shown (TRADEBOOK_ALPACA_KEY_ID, TRADEBOOK_CCXT_BINANCE_SECRET,
# TRADEBOOK_IB_PORT...). A single underscore after the broker: config keys use ``__``.
ADAPTER_ENV = re.compile(r"^TRADEBOOK_(ALPACA|CCXT_[A-Z0-9]+|IB)_[A-Z0-9]+(_[A-Z0-9]+)*$")
CONFIG_FILE_NAME = "tradebook.yaml"  # looked for when neither a path nor TRADEBOOK_CONFIG is given
# money and quantities are stored as DECIMAL(38, 12): 26 digits before the point, 12 after
DECIMAL_LIMIT = Decimal("1e26")
DECIMAL_PLACES = 12
FLOAT_LIMIT = 1e9  # a float field without its own bound: seconds x 1e9 still fits int64 ns
INT_LIMIT = 1_000_000_000  # an int field without its own bound


class SessionMode(StrEnum):
    PAPER = "paper"
    LIVE = "live"


class SizingMethod(StrEnum):
    HALF_KELLY = "half_kelly"
    FIXED = "fixed"
    PERCENT_OF_EQUITY = "percent_of_equity"


class SpreadAction(StrEnum):
    DEFER = "defer"  # hold the order and try again when the book is better
    REJECT = "reject"


class FrozenMap(Mapping):
    """A read-only, hashable mapping: config sections stay immutable and usable as cache keys."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[Any, Any] = ()) -> None:
        self._data = dict(data)

    def __getitem__(self, key: Any) -> Any:
        return self._data[key]

    def __iter__(self):
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(frozenset(self._data.items()))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and dict(self._data) == dict(other)

    def __repr__(self) -> str:
        return repr(self._data)


def _opt(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING, doc: str = "",
         gt: float | None = None, ge: float | None = None, lt: float | None = None, le: float | None = None,
         allow_inf: bool = False, keys: str = "as_written", from_key: bool = False) -> Any:
    """A config field: its default, its documentation and its admissible range.

    ``keys`` says how mapping keys coming from the environment are spelled when new:
    ``lower`` or ``as_written``. ``from_key`` marks a field filled from the mapping key
    that holds the section (a venue's name).
    """
    metadata = {"doc": doc, "gt": gt, "ge": ge, "lt": lt, "le": le, "allow_inf": allow_inf, "keys": keys,
                "from_key": from_key}
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


class _Section:
    """Shared by every config section: coerce and validate the fields on construction.

    Constructing a section by hand (``RiskConfig(daily_loss_limit=500)``) goes through the
    same conversion and range checks as a file, so a notebook cannot build an invalid one.
    """

    _path: ClassVar[str] = ""

    def _where(self) -> str:
        return self._path

    def __post_init__(self) -> None:
        hints = _hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            path = f"{self._where()}.{f.name}".lstrip(".")
            value = _convert(getattr(self, f.name), hints[f.name], path, f.metadata, {})
            object.__setattr__(self, f.name, value)
        self._check()

    def _check(self) -> None:
        """Cross-field rules (overridden where there are any)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (Decimals kept exact), the shape of the YAML file."""
        return _to_raw(self)


# -- risk -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PositionLimit(_Section):
    """The largest absolute position in one instrument, as a quantity and/or a notional (None: no limit)."""

    _path: ClassVar[str] = "risk.max_position"

    quantity: Decimal | None = _opt(None, gt=0, doc="largest absolute position, in the instrument's unit")
    notional: Decimal | None = _opt(None, gt=0, doc="largest absolute position value, in account currency")


@dataclass(frozen=True)
class MaxPositionConfig(_Section):
    _path: ClassVar[str] = "risk.max_position"

    default: PositionLimit = _opt(factory=lambda: PositionLimit(notional=Decimal(500_000)),
                                  doc="limit for every instrument without its own")
    per_instrument: Mapping[str, PositionLimit] = _opt(factory=dict, doc="instrument id -> its own limit")

    def limit_for(self, instrument_id: str) -> PositionLimit:
        return self.per_instrument.get(instrument_id, self.default)


def _default_class_limits() -> dict[AssetClass, Decimal]:
    return {AssetClass.EQUITY: Decimal(1_000_000), AssetClass.CRYPTO_SPOT: Decimal(500_000),
            AssetClass.FUTURE: Decimal(2_000_000), AssetClass.FX_SPOT: Decimal(1_000_000)}


@dataclass(frozen=True)
class RiskConfig(_Section):
    """Pre-trade limits, the kill switch's automatic triggers and the venue circuit breaker."""

    _path: ClassVar[str] = "risk"

    max_position: MaxPositionConfig = _opt(factory=MaxPositionConfig, doc="per-instrument position limits")
    max_exposure_per_asset_class: Mapping[AssetClass, Decimal | None] = _opt(
        factory=_default_class_limits, gt=0, doc="gross notional per asset class, account currency (null: none)")
    max_gross_exposure: Decimal | None = _opt(Decimal(3_000_000), gt=0, doc="gross notional, all instruments")
    account_currency: str = _opt("USD", doc="currency of equity, P&L and exposure limits")
    par_currencies: tuple[str, ...] = _opt(("USDT", "USDC"), doc="counted 1:1 with the account currency")
    max_orders_per_minute: int = _opt(120, gt=0, le=1_000_000_000, doc="orders sent in any 60 s window")
    daily_loss_limit: Decimal | None = _opt(Decimal(5_000), gt=0,
                                            doc="loss today (realised + unrealised) that halts trading")
    price_collar_bps: float = _opt(100.0, gt=0, le=10_000, doc="farthest limit/stop from the quote's mid, aggressive side")
    max_spread_bps: float = _opt(50.0, gt=0, le=10_000, doc="widest spread at which an order may go")
    min_touch_notional: Decimal = _opt(Decimal(1_000), ge=0, doc="thinnest far touch (price x size) accepted")
    spread_action: SpreadAction = _opt(SpreadAction.DEFER, doc="what a wide spread or thin book does")
    max_quote_age_ms: int = _opt(5_000, gt=0, le=86_400_000, doc="older reference quotes are refused")
    equity_margin_account: bool = _opt(True, doc="the equity account is a margin account (PDT rule applies)")
    pdt_equity_threshold: Decimal = _opt(Decimal(25_000), ge=0, doc="PDT applies below this equity")
    max_day_trades: int = _opt(3, ge=0, le=1_000, doc="day trades allowed in the PDT window under the threshold")
    pdt_window_days: int = _opt(5, gt=0, le=366, doc="PDT window, business days")
    breaker_failures: int = _opt(5, gt=0, le=1_000_000, doc="consecutive venue failures that open the breaker")
    breaker_cooldown_s: float = _opt(30.0, gt=0, le=86_400, doc="seconds before an open breaker lets one try")
    breaker_trips_kill_switch: bool = _opt(True, doc="an opening breaker halts trading")


# -- sizing -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SizingConfig(_Section):
    _path: ClassVar[str] = "sizing"

    method: SizingMethod = _opt(SizingMethod.HALF_KELLY, doc="half_kelly | fixed | percent_of_equity")
    kelly_cap: float = _opt(0.05, gt=0, le=1, doc="largest position as a fraction of equity (half_kelly)")
    fixed_quantity: Decimal = _opt(Decimal(1), gt=0, doc="quantity per order (fixed)")
    percent: float = _opt(1.0, gt=0, le=100, doc="percent of equity per order (percent_of_equity)")


# -- router -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class RouterConfig(_Section):
    _path: ClassVar[str] = "router"

    signal_market_threshold: float = _opt(0.9, ge=0, le=1, doc="signal strength above which a market order goes")
    wide_spread_bps: float = _opt(20.0, gt=0, le=10_000, doc="spread above which a limit at mid plus offset goes")
    twap_adv_fraction: float = _opt(0.01, gt=0, le=1, doc="size above this fraction of ADV goes as TWAP")
    passive_adv_fraction: float = _opt(0.001, gt=0, le=1, doc="size below this fraction of ADV joins the touch")
    offset_bps: float = _opt(1.0, ge=0, le=10_000, doc="limit offset from the touch or mid, base")
    offset_vol_multiplier: float = _opt(0.5, ge=0, le=1_000, doc="extra offset per bp of short-term volatility")
    twap_slices: int = _opt(5, gt=0, le=10_000, doc="TWAP child orders")
    twap_interval_s: float = _opt(60.0, gt=0, le=86_400, doc="seconds between TWAP children")
    vwap_min_minutes: int = _opt(5, gt=0, le=1_440, doc="shortest VWAP horizon")
    vwap_max_minutes: int = _opt(15, gt=0, le=1_440, doc="longest VWAP horizon")
    max_retries: int = _opt(3, ge=0, le=100, doc="re-priced retries of a rejected or unfilled child before escalation")

    def _check(self) -> None:
        if self.vwap_min_minutes > self.vwap_max_minutes:
            raise ConfigError(f"router.vwap_min_minutes = {self.vwap_min_minutes} is above router.vwap_max_minutes "
                              f"= {self.vwap_max_minutes}: expected min <= max")
        if self.passive_adv_fraction >= self.twap_adv_fraction:
            raise ConfigError(f"router.passive_adv_fraction = {self.passive_adv_fraction} is not below "
                              f"router.twap_adv_fraction = {self.twap_adv_fraction}: expected passive < twap")


# -- session ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SessionConfig(_Section):
    _path: ClassVar[str] = "session"

    mode: SessionMode = _opt(SessionMode.PAPER, doc="paper | live (live also needs an explicit arming call)")
    account_id: str = _opt("paper", doc="the account orders are booked to")
    store_path: Path | None = _opt(None, doc="the workspace's DuckDB store; null: tradebook.store.default_store_path() "
                                             "($TRADEBOOK_STORE, else tradebook.duckdb at the workspace root); "
                                             "a relative path in a file is relative to that file's folder")
    extended_hours: bool = _opt(False, doc="allow equity orders outside regular hours")
    replay_speed: float = _opt(1.0, gt=0, le=1e9, allow_inf=True, doc="replay speed factor; .inf = as fast as possible")
    tune_gc: bool = _opt(True, doc="while the session runs, collect garbage less often (tradebook.runtime.tune_gc)")
    max_signal_age_s: float = _opt(300.0, gt=0, doc="a new signal older than this (against session time) is refused")


# -- venues -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class VenueConfig(_Section):
    """One venue: whether it is on, which environment variables hold its credentials, other settings."""

    name: str = _opt(from_key=True, doc="the venue (the mapping key in the file)")
    enabled: bool = _opt(False, doc="the session may connect to it")
    credentials_env: Mapping[str, str] = _opt(factory=dict, keys="lower",
                                              doc="credential -> name of the environment variable holding it")
    options: Mapping[str, str] = _opt(factory=dict, keys="lower", doc="non-secret settings (host, port, url...)")
    adapter: str | None = _opt(None, doc="alpaca | ccxt | ib | paper; null: from the name (alpaca, ibkr, a ccxt "
                                         "exchange id)")
    account_id: str | None = _opt(None, doc="the broker account it trades (Session.arm_live confirms it)")

    def _where(self) -> str:
        return f"venues.{self.name}"

    def _check(self) -> None:
        for credential, variable in self.credentials_env.items():
            if not plausible_env_name(variable):
                raise ConfigError(
                    f"venues.{self.name}.credentials_env.{credential} = {redact(variable)}: expected the *name* of "
                    "an environment variable (like APCA_API_SECRET_KEY: letters, digits, _), never the secret itself")
        for option, value in self.options.items():
            if URL_PASSWORD.search(value):
                raise ConfigError(
                    f"venues.{self.name}.options.{option}: a URL with a password (its value is not shown): secrets "
                    f"do not belong in the configuration; give the URL without it and name the environment "
                    f"variable that holds it under venues.{self.name}.credentials_env")
            if any(word in option.lower() for word in SECRET_WORDS):
                raise ConfigError(
                    f"venues.{self.name}.options.{option}: its value is not shown and not accepted: secrets do not "
                    f"belong in the configuration; name the environment variable that holds it under "
                    f"venues.{self.name}.credentials_env")

    def credentials(self, env: Mapping[str, str] | None = None) -> dict[str, str]:
        """The credentials read from the environment; ConfigError naming any variable that is not set."""
        env = os.environ if env is None else env
        missing = [f"{var if plausible_env_name(var) else redact(var)} (credentials_env.{cred})"
                   for cred, var in self.credentials_env.items() if not env.get(var)]
        if missing:
            raise ConfigError(f"venue {self.name}: environment variable(s) not set: {', '.join(missing)}")
        return {cred: env[var] for cred, var in self.credentials_env.items()}


def _default_venues() -> dict[str, VenueConfig]:
    return {
        "paper": VenueConfig(name="paper", enabled=True),
        "alpaca": VenueConfig(name="alpaca", credentials_env={"api_key": "APCA_API_KEY_ID",
                                                              "secret_key": "APCA_API_SECRET_KEY"}),
        "binance": VenueConfig(name="binance", credentials_env={"api_key": "BINANCE_API_KEY",
                                                                "secret": "BINANCE_API_SECRET"}),
        "ibkr": VenueConfig(name="ibkr", options={"host": "127.0.0.1", "port": "7497", "client_id": "1"}),
    }


# -- alerts -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class EmailConfig(_Section):
    """Where the email sink sends alerts (SMTP without authentication, e.g. a local relay); no host: no email."""

    _path: ClassVar[str] = "alerts.email"

    host: str | None = _opt(None, doc="SMTP server; null: no email")
    port: int = _opt(25, gt=0, le=65_535, doc="SMTP port")
    from_address: str = _opt("tradebook@localhost", doc="the sender")
    to: tuple[str, ...] = _opt((), doc="recipients")
    timeout_s: float = _opt(10.0, gt=0, le=300, doc="seconds before a silent server is given up")

    def _check(self) -> None:
        if self.host is not None and not self.to:
            raise ConfigError(f"alerts.email.host = {self.host!r} but alerts.email.to is empty: expected at least "
                              "one recipient")


@dataclass(frozen=True)
class AlertsConfig(_Section):
    """The alert rules' thresholds and where alerts go (tradebook.alerts)."""

    _path: ClassVar[str] = "alerts"

    slippage_bps: float = _opt(10.0, gt=0, le=10_000, doc="a fill's slippage against the arrival mid above this alerts")
    cost_vs_model: float = _opt(2.0, gt=1, le=1_000, doc="an instrument's realised cost above this x modelled alerts")
    cost_normal: float = _opt(1.5, gt=0, le=1_000, doc="the cost alert closes (and a restriction lifts) below this x")
    cost_window_fills: int = _opt(20, gt=0, le=100_000, doc="recent fills per instrument the cost ratio averages")
    cost_min_fills: int = _opt(5, gt=0, le=100_000, doc="fills an instrument needs before its cost ratio is judged")
    cost_min_excess_bps: float = _opt(1.0, ge=0, le=10_000,
                                      doc="the cost alert also needs realised this far above modelled (bps)")
    restrict_on_cost: bool = _opt(False, doc="an instrument whose cost alerts goes reduce-only until it normalises")
    latency_s: float = _opt(5.0, gt=0, le=86_400, doc="submit to acknowledgement (or first fill) above this alerts")
    unfilled_factor: float = _opt(3.0, gt=0, le=1_000, doc="working unfilled this many times the expected time alerts")
    unfilled_expected_s: float = _opt(60.0, gt=0, le=86_400,
                                      doc="expected time to fill without a calibrated model; a resting limit's "
                                          "least")
    daily_pnl: Decimal | None = _opt(None, gt=0, doc="a loss today beyond this alerts, account currency (null: off)")
    venue_check_s: float = _opt(30.0, gt=0, le=86_400, doc="seconds between venue health checks")
    webhook_url: str | None = _opt(None, doc="alerts are POSTed here as JSON (null: no webhook)")
    webhook_timeout_s: float = _opt(5.0, gt=0, le=300, doc="seconds before a silent webhook is given up")
    email: EmailConfig = _opt(factory=EmailConfig, doc="the email sink")

    def _check(self) -> None:
        if self.cost_normal >= self.cost_vs_model:
            raise ConfigError(f"alerts.cost_normal = {self.cost_normal} is not below alerts.cost_vs_model = "
                              f"{self.cost_vs_model}: expected normal < alert")
        if self.webhook_url is not None:
            if not self.webhook_url.startswith(("http://", "https://")):
                raise ConfigError(f"alerts.webhook_url = {redact(self.webhook_url)}: expected an http:// or "
                                  "https:// URL")
            if URL_PASSWORD.search(self.webhook_url):
                raise ConfigError("alerts.webhook_url: a URL with a password (its value is not shown): secrets do "
                                  "not belong in the configuration")


# -- the whole ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class TradebookConfig(_Section):
    """Everything configurable: ``TradebookConfig()`` is the defaults (paper mode)."""

    risk: RiskConfig = _opt(factory=RiskConfig, doc="pre-trade risk, kill switch triggers, breaker")
    sizing: SizingConfig = _opt(factory=SizingConfig, doc="how a signal becomes a quantity")
    router: RouterConfig = _opt(factory=RouterConfig, doc="order types, algos and retries")
    session: SessionConfig = _opt(factory=SessionConfig, doc="mode, account, store, hours, replay")
    venues: Mapping[str, VenueConfig] = _opt(factory=_default_venues, keys="lower", doc="venue name -> settings")
    routing: Mapping[AssetClass, str] = _opt(factory=dict, keys="lower",
                                             doc="asset class -> venue name; an unrouted class trades on paper")
    alerts: AlertsConfig = _opt(factory=AlertsConfig, doc="alert thresholds and sinks (log, store, webhook, email)")

    def _check(self) -> None:
        for key, venue in self.venues.items():
            if venue.name != key:
                raise ConfigError(f"venues.{key}: its name is {venue.name!r}; expected the mapping key {key!r}")
        for asset_class, name in self.routing.items():
            if name not in self.venues:
                raise ConfigError(f"routing.{asset_class} = {name!r}: no such venue; expected one of "
                                  f"{sorted(self.venues)}")
        if self.session.mode is SessionMode.LIVE and not any(
                v.enabled and name != "paper" for name, v in self.venues.items()):
            raise ConfigError("session.mode = 'live' but no venue other than paper is enabled: expected "
                              "venues.<name>.enabled = true for the broker to trade on")


# -- loading ------------------------------------------------------------------------------------
_PROJECT_MARKERS = ("pyproject.toml", ".git")


def find_config_file(env: Mapping[str, str] | None = None, cwd: str | Path | None = None) -> tuple[Path | None, str]:
    """The file :func:`load_config` reads when given no path, and why (for messages and ``tradebook config``).

    ``$TRADEBOOK_CONFIG`` if set (it must exist); else ``tradebook.yaml`` in ``cwd`` (default:
    the working directory) or, inside a project, in the nearest folder up to the project's
    root (the first folder holding ``pyproject.toml`` or ``.git``); else ``(None, ...)``.
    """
    env = os.environ if env is None else env
    if env.get(ENV_CONFIG_PATH):
        return Path(env[ENV_CONFIG_PATH]), f"from {ENV_CONFIG_PATH}"
    here = Path.cwd() if cwd is None else Path(cwd)
    folders = [here, *here.parents]
    root = next((i for i, folder in enumerate(folders) if any((folder / m).exists() for m in _PROJECT_MARKERS)), None)
    for folder in folders[:1] if root is None else folders[:root + 1]:
        candidate = folder / CONFIG_FILE_NAME
        if candidate.is_file():
            return candidate, f"found {CONFIG_FILE_NAME} in {folder}"
    return None, f"no file: neither {ENV_CONFIG_PATH} nor a {CONFIG_FILE_NAME} in {here} or up to its project root"


@dataclass(frozen=True)
class ConfigSetting:
    """One effective setting: its key path, its value as shown (secrets redacted) and where it came from."""

    key: str
    value: str
    source: str  # "default", "in FILE, line N" or "from TRADEBOOK_..."


@dataclass(frozen=True)
class ConfigReport:
    """What :func:`describe_config` found: the configuration, the file read and every setting with its source."""

    config: TradebookConfig
    file: Path | None
    file_reason: str
    settings: tuple[ConfigSetting, ...]
    variables: tuple[ConfigSetting, ...] = ()  # reserved TRADEBOOK_ variables that are set (not config keys)

    def __str__(self) -> str:
        head = f"config file: {self.file} ({self.file_reason})" if self.file is not None else \
            f"config file: none ({self.file_reason}); defaults and environment only"
        width = max(len(s.key) for s in self.settings)
        shown = max(len(s.value) for s in self.settings)
        lines = [head] + [f"  {s.key:<{width}} = {s.value:<{shown}}  ({s.source})" for s in self.settings]
        if self.variables:
            lines.append("not config keys:")
            lines += [f"  {v.key} = {v.value}  ({v.source})" for v in self.variables]
        return "\n".join(lines)


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> TradebookConfig:
    """The defaults, then the YAML file, then ``TRADEBOOK_*`` variables of ``env``.

    ``env`` defaults to ``os.environ``; ``path`` to :func:`find_config_file` (``$TRADEBOOK_CONFIG``,
    else a ``tradebook.yaml`` in the working directory or up to its project root, else no file).
    Raises ConfigError on an unreadable file, an unknown key or an invalid value.
    """
    return _load(path, env)[0]


def describe_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> ConfigReport:
    """The effective configuration as :func:`load_config` builds it, each setting with its source.

    Values that look secret are redacted; ``credentials_env`` shows variable names and whether
    each is set, never its value. ``str(report)`` is what ``tradebook config`` prints.
    """
    env = os.environ if env is None else env
    config, file, reason, sources = _load(path, env)
    settings = []
    for key, value in _flatten(_to_raw(config)):
        if ".credentials_env." in key and isinstance(value, str):
            shown = f"{value} ({'set' if env.get(value) else 'not set'})"
        else:
            shown = _plain(key, value)
        settings.append(ConfigSetting(key, shown, sources.get(key, "default")))
    variables = tuple(ConfigSetting(name, redact(env[name]) if name in SECRET_ENV else _plain(name, env[name]), what)
                      for name, what in RESERVED_ENV.items() if env.get(name))
    return ConfigReport(config, file, reason, tuple(settings), variables)


def _plain(key: str, value: Any) -> str:
    """A setting as YAML would spell it (500, null, true, USDT, USDC), secrets redacted."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(_plain(key, v) for v in value) or "[]"
    if isinstance(value, Mapping):
        return "{}"
    if isinstance(value, str):
        return _shown(key, value) if _shown(key, value) != repr(value) else value
    return str(value)


def _flatten(node: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for key, value in node.items():
        path = f"{prefix}.{key}".lstrip(".")
        if isinstance(value, Mapping) and value:
            out += _flatten(value, path)
        else:
            out.append((path, value))
    return out


def _load(path: str | Path | None, env: Mapping[str, str] | None
          ) -> tuple[TradebookConfig, Path | None, str, dict[str, str]]:
    env = os.environ if env is None else env
    if path is not None:
        if not isinstance(path, (str, Path)) or not str(path).strip():
            raise ConfigError(f"config path is {path!r}; expected the path of a YAML file")
        file, reason = Path(path), "the path given"
    else:
        file, reason = find_config_file(env)
    raw = _to_raw(TradebookConfig())
    sources: dict[str, str] = {}
    if file is not None:
        file_data = read_yaml(file)
        _merge(raw, file_data, TradebookConfig, "", {}, sources, f"in {file}")
    for name in sorted(env):
        if name.startswith(ENV_PREFIX) and name not in RESERVED_ENV and not ADAPTER_ENV.match(name):
            _apply_env(raw, name, env[name], sources)
    _apply_store_variable(raw, env, sources)
    store_path, store_source = raw["session"].get("store_path"), sources.get("session.store_path", "")
    if file is not None and store_source.startswith(f"in {file}") and isinstance(store_path, str) \
            and store_path.strip() and not Path(store_path).is_absolute() and not store_path.startswith("~"):
        # relative to the file's folder, whatever the working directory (a notebook runs in notebooks/)
        raw["session"]["store_path"] = os.path.join(os.path.abspath(file.parent), store_path)
    return _convert(raw, TradebookConfig, "", {}, sources), file, reason, sources


def _apply_store_variable(raw: dict, env: Mapping[str, str], sources: dict[str, str]) -> None:
    """``TRADEBOOK_STORE`` is the documented name of ``session.store_path``: it overrides the file like any variable."""
    value = env.get(ENV_STORE, "").strip()
    if not value:  # set but blank: as if unset
        return
    explicit = f"{ENV_PREFIX}SESSION__STORE_PATH"
    if sources.get("session.store_path") == f"from {explicit}" and raw["session"]["store_path"] != value:
        raise ConfigError(f"{ENV_STORE} = {_shown('', value)} and {explicit} = "
                          f"{_shown('', raw['session']['store_path'])} name two "
                          f"different stores; expected one of them (they set the same setting, session.store_path)")
    raw["session"]["store_path"] = value
    sources["session.store_path"] = f"from {ENV_STORE}"


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _is_section(hint: Any) -> bool:
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def _is_mapping(hint: Any) -> bool:
    return get_origin(hint) is Mapping


def _file_fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("from_key")}


def _unknown_key(path: str, key: Any, known: list[str], source: str) -> ConfigError:
    full = f"{path}.{key}".lstrip(".")
    shown = f"{path + '.' if path else ''}{redact(str(key))}" if looks_secret(str(key)) else repr(full)
    close = difflib.get_close_matches(str(key), known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    where = f"known keys of {path}" if path else "known sections"
    also = ""
    if not path and source.startswith(f"from {ENV_PREFIX}"):  # a variable that is neither a section nor reserved
        variable = source[len("from "):]
        near = difflib.get_close_matches(variable, list(RESERVED_ENV), n=1)
        hint = f"; did you mean {near[0]}?" if near else hint
        also = f"; the variables {', '.join(RESERVED_ENV)} are not config keys"
    return ConfigError(f"unknown key {shown} ({source}){hint} {where}: {', '.join(known)}{also}")


def _map_key(key: Any, hint: Any, metadata: Mapping[str, Any], existing: Mapping[str, Any], path: str,
             source: str) -> str:
    """A mapping key as stored in the raw tree: enum values, lower-case names, or as written."""
    key_type = get_args(hint)[0]
    if not isinstance(key, str) or not key.strip():
        raise ConfigError(f"{path}: key {_shown(path, key)} ({source}): expected a non-empty string key")
    if isinstance(key_type, type) and issubclass(key_type, StrEnum):
        return _convert_enum(key.strip(), key_type, f"{path} key", {f"{path} key": source}).value
    for known in existing:  # match case-insensitively what is already there (defaults, the file)
        if known.lower() == key.lower():
            return known
    return key.lower() if metadata.get("keys") == "lower" else key


def _merge(raw: dict, data: Any, hint: Any, path: str, metadata: Mapping[str, Any], sources: dict[str, str],
           source: str) -> None:
    """Merge a parsed YAML node into the raw tree, refusing unknown keys."""
    if data is None:
        return  # `risk:` with nothing under it
    if not isinstance(data, dict):
        raise ConfigError(f"{path} = {data!r} ({source}): expected a mapping of keys under {path}")
    lines = getattr(data, "lines", {})
    if _is_section(hint):
        fields = _file_fields(hint)
        for key, value in data.items():
            here = f"{source}, line {lines[key]}" if key in lines else source
            if key not in fields:
                raise _unknown_key(path, key, list(fields), here)
            sub_hint, sub_meta = _hints(hint)[key], fields[key].metadata
            _merge_value(raw, key, value, sub_hint, f"{path}.{key}".lstrip("."), sub_meta, sources, source, here)
    else:
        value_hint = get_args(hint)[1]
        for key, value in data.items():
            here = f"{source}, line {lines[key]}" if key in lines else source
            stored = _map_key(key, hint, metadata, raw, path, here)
            _merge_value(raw, stored, value, value_hint, f"{path}.{stored}", metadata, sources, source, here)


def _merge_value(raw: dict, key: str, value: Any, hint: Any, path: str, metadata: Mapping[str, Any],
                 sources: dict[str, str], source: str, here: str) -> None:
    """``source`` names the file (passed down to nested keys); ``here`` adds this key's line."""
    if _is_section(hint) or _is_mapping(hint):
        node = raw.get(key)
        if not isinstance(node, dict):
            node = raw[key] = {}
        if value is not None and not isinstance(value, dict):
            raise ConfigError(f"{path} = {_shown(path, value)} ({here}): expected a mapping of keys under {path}")
        _merge(node, value, hint, path, metadata, sources, source)
    else:
        raw[key] = value
        sources[path] = here


def _apply_env(raw: dict, name: str, value: str, sources: dict[str, str]) -> None:
    segments = name[len(ENV_PREFIX):].split("__")
    source = f"from {name}"
    if any(not s for s in segments):
        raise ConfigError(f"environment variable {name}: empty key between '__'; expected "
                          f"{ENV_PREFIX}SECTION__KEY, e.g. {ENV_PREFIX}RISK__DAILY_LOSS_LIMIT")
    node, hint, metadata, path = raw, TradebookConfig, {}, ""
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if _is_section(hint):
            fields = _file_fields(hint)
            key = segment.lower()
            if key not in fields:
                raise _unknown_key(path, key, list(fields), source)
            sub_hint, sub_meta = _hints(hint)[key], fields[key].metadata
        elif _is_mapping(hint):
            key = _map_key(segment, hint, metadata, node, path, source)
            sub_hint, sub_meta = get_args(hint)[1], metadata
        else:
            raise ConfigError(f"{name}: {path} is a value, not a section; expected {ENV_PREFIX}"
                              f"{'__'.join(segments[:i]).upper()}=<value>")
        path = f"{path}.{key}".lstrip(".")
        if last:
            if _is_section(sub_hint) or _is_mapping(sub_hint):
                raise ConfigError(f"{name}: {path} is a section; set one of its keys with "
                                  f"{name}__<KEY>=<value>")
            node[key] = value
            sources[path] = source
            return
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node, hint, metadata = child, sub_hint, sub_meta


def _to_raw(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_raw(getattr(value, f.name)) for f in dataclasses.fields(value)
                if not f.metadata.get("from_key")}
    if isinstance(value, Mapping):
        return {str(k.value if isinstance(k, StrEnum) else k): _to_raw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    return value


# -- conversion ---------------------------------------------------------------------------------
_NONE_WORDS = frozenset({"null", "none", "~", ""})
_TRUE, _FALSE = frozenset({"true", "1"}), frozenset({"false", "0"})


_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxlevel, _SHORT_REPR.maxlist, _SHORT_REPR.maxdict, _SHORT_REPR.maxstring = 2, 4, 4, 40


def _shown(path: str, value: Any) -> str:
    """A value as a message shows it: secrets redacted, an overflowed float as typed, long text cut."""
    if ".options." in path and any(w in path.rsplit(".", 1)[-1].lower() for w in SECRET_WORDS):
        return redact(str(value))  # an option named like a secret: whatever its type
    if isinstance(value, str) and (looks_secret(value) or URL_PASSWORD.search(value)
                                   or ("credentials_env" in path and not plausible_env_name(value))):
        return redact(value)
    text = getattr(value, "text", None)
    if isinstance(value, (list, tuple, dict)):
        text = _SHORT_REPR.repr(value)  # bounded: YAML aliases can make a small file an exponentially large value
    elif text is None or (isinstance(value, float) and math.isfinite(value)) or text.lower().lstrip("+-") in (
            ".inf", ".nan"):
        text = repr(value)
    if len(text) > 60:
        text = f"{text[:30]}...({len(text)} characters)"
    return text


def _fail(path: str, value: Any, sources: Mapping[str, str], expected: str) -> ConfigError:
    source = sources.get(path)
    return ConfigError(f"{path} = {_shown(path, value)}{f' ({source})' if source else ''}: expected {expected}")


def _convert(value: Any, hint: Any, path: str, metadata: Mapping[str, Any], sources: Mapping[str, str],
             key: str | None = None) -> Any:
    """``value`` as the type ``hint`` says, range-checked by ``metadata``; ConfigError naming ``path``."""
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(hint) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.strip().lower() in _NONE_WORDS):
            return None
        return _convert(value, options[0], path, metadata, sources)
    if _is_section(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, Mapping):
            raise _fail(path, value, sources, f"a section with keys {', '.join(_file_fields(hint))}")
        kwargs = {}
        for f in dataclasses.fields(hint):
            if f.metadata.get("from_key"):
                kwargs[f.name] = key
            elif f.name in value:
                kwargs[f.name] = _convert(value[f.name], _hints(hint)[f.name], f"{path}.{f.name}".lstrip("."),
                                          f.metadata, sources, key=None)
        unknown = set(value) - set(_file_fields(hint))
        if unknown:
            raise _unknown_key(path, sorted(map(str, unknown))[0], list(_file_fields(hint)), "in a section")
        try:
            return hint(**kwargs)
        except ConfigError as exc:  # a cross-field rule: say where the keys it names were set
            named = sorted({src for key_path, src in sources.items() if key_path in str(exc)})
            if not named:
                raise
            raise ConfigError(f"{exc} ({'; '.join(named)})") from None
    if origin is Mapping:
        key_type, value_type = get_args(hint)
        if not isinstance(value, Mapping):
            raise _fail(path, value, sources, "a mapping")
        out = {}
        for k, v in value.items():
            if isinstance(key_type, type) and issubclass(key_type, StrEnum):
                k = k if isinstance(k, key_type) else _convert_enum(str(k), key_type, f"{path} key", sources)
            elif not isinstance(k, str) or not k:
                raise ConfigError(f"{path}: key {k!r}: expected a non-empty string key")
            sub = f"{path}.{k.value if isinstance(k, StrEnum) else k}"
            out[k] = _convert(v, value_type, sub, metadata, sources, key=str(k))
        return FrozenMap(out)
    if origin is tuple:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
            raise _fail(path, value, sources, "a list of strings (comma-separated in the environment)")
        return tuple(value)
    if isinstance(hint, type) and issubclass(hint, StrEnum):
        return _convert_enum(value, hint, path, sources)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise _fail(path, value, sources, "a boolean: true, false, 1 or 0")
    if hint is str:
        if not isinstance(value, str) or isinstance(value, YamlBigInt) or not value.strip():
            raise _fail(path, value, sources, "a non-empty string (quote it in YAML)")
        return value
    if hint is Path:
        if isinstance(value, Path):
            return value
        if not isinstance(value, str) or not value.strip():
            raise _fail(path, value, sources, "a file path")
        return Path(value).expanduser()
    if hint is Decimal:
        number = _to_decimal(value, path, sources)
    elif hint is int:
        number = _to_int(value, path, sources, metadata)
    elif hint is float:
        number = _to_float(value, path, sources, bool(metadata.get("allow_inf")))
    else:  # pragma: no cover - a field type this module does not know is a bug here
        raise TypeError(f"{path}: unsupported config type {hint!r}")
    _check_range(number, path, metadata, sources, value)
    return number


def _convert_enum(value: Any, enum_type: type[StrEnum], path: str, sources: Mapping[str, str]) -> StrEnum:
    if isinstance(value, enum_type):
        return value
    allowed = [m.value for m in enum_type]
    if isinstance(value, str):
        lowered = value.strip().lower()
        for member in enum_type:
            if member.value == lowered:
                return member
    raise _fail(path, value, sources, f"one of {', '.join(allowed)}")


def _to_decimal(value: Any, path: str, sources: Mapping[str, str]) -> Decimal:
    expected = "a finite number (money and quantities are exact decimals)"
    if isinstance(value, bool):
        raise _fail(path, value, sources, expected)
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, float):
        try:  # the text typed in the file: exact, and a 1e400 that float made inf is still checked against its bound
            result = Decimal(getattr(value, "text", ""))
        except InvalidOperation:
            if not math.isfinite(value):
                raise _fail(path, value, sources, expected) from None
            result = Decimal(repr(value))  # the 0.1 that was typed, not its binary neighbour
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip().replace("_", ""))
        except InvalidOperation:
            raise _fail(path, value, sources, expected) from None
    else:
        raise _fail(path, value, sources, expected)
    if not result.is_finite():
        raise _fail(path, value, sources, expected)
    return result


def _to_int(value: Any, path: str, sources: Mapping[str, str], metadata: Mapping[str, Any]) -> int:
    if isinstance(value, bool) or isinstance(value, float):
        raise _fail(path, value, sources, "an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip().replace("_", "")
        if re.fullmatch(r"[+-]?[0-9]{30,}", text):  # beyond every bound (and maybe more digits than int() takes)
            raise _fail(path, value, sources, _bounds_text(path, metadata))
        try:
            return int(text)
        except ValueError:
            pass
    raise _fail(path, value, sources, "an integer")


def _to_float(value: Any, path: str, sources: Mapping[str, str], allow_inf: bool) -> float:
    expected = "a number" + (" (or .inf)" if allow_inf else " (finite)")
    if isinstance(value, bool):
        raise _fail(path, value, sources, expected)
    if isinstance(value, (int, float, Decimal)):
        result = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        text = {".inf": "inf", "+.inf": "inf"}.get(text, text)
        try:
            result = float(text)
        except ValueError:
            raise _fail(path, value, sources, expected) from None
    else:
        raise _fail(path, value, sources, expected)
    if math.isnan(result) or (math.isinf(result) and not allow_inf):
        raise _fail(path, value, sources, expected)
    return result


def _bounds(number: float | int | Decimal | None, metadata: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The field's own bounds plus its type's: ints and floats within their limits when the field states none."""
    bounds = [(word, metadata[name]) for name, word in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))
              if metadata.get(name) is not None]
    if isinstance(number, Decimal):
        return bounds
    limit = INT_LIMIT if isinstance(number, int) else FLOAT_LIMIT
    if not any(word in (">", ">=") for word, _ in bounds):
        bounds.insert(0, (">=", -limit))
    if not any(word in ("<", "<=") for word, _ in bounds):
        bounds.append(("<=", limit))
    return bounds


def _bounds_text(path: str, metadata: Mapping[str, Any], number: Any = 0) -> str:
    def fmt(bound: Any) -> str:
        return str(int(bound)) if isinstance(bound, float) and bound.is_integer() else str(bound)
    return "a number " + " and ".join(f"{word} {fmt(bound)}" for word, bound in _bounds(number, metadata))


def _decimal_places(number: Decimal) -> int:
    _, digits, exponent = number.as_tuple()
    trailing = len(digits) - len("".join(map(str, digits)).rstrip("0"))
    return 0 if trailing == len(digits) else max(0, -(exponent + trailing))


def _check_range(number: float | int | Decimal, path: str, metadata: Mapping[str, Any], sources: Mapping[str, str],
                 original: Any) -> None:
    tests = {">": number.__gt__, ">=": number.__ge__, "<": number.__lt__, "<=": number.__le__}
    bounds = _bounds(number, metadata)
    if isinstance(number, float) and math.isinf(number) and metadata.get("allow_inf"):
        bounds = [(word, bound) for word, bound in bounds if word in (">", ">=")]  # .inf: as fast as possible
    in_range = all(tests[word](bound) for word, bound in bounds)
    if isinstance(number, Decimal):  # compare first: abs() of a huge exponent would itself overflow
        in_range = in_range and number.copy_abs() < DECIMAL_LIMIT and _decimal_places(number) <= DECIMAL_PLACES
    if not in_range:
        expected = _bounds_text(path, metadata, number) if bounds else "a number"
        if isinstance(number, Decimal):
            expected = (f"{expected}{' and' if bounds else ''} of magnitude below 1e26 with at most "
                        f"{DECIMAL_PLACES} decimal places (money and quantities are stored as DECIMAL(38, 12))")
        raise _fail(path, original, sources, expected)
