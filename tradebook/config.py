"""tradebook's configuration: frozen sections, loaded from YAML with environment overrides.

``TradebookConfig()`` is the defaults (paper mode, every limit on). ``load_config(path, env)``
reads a YAML file, then applies environment overrides, then validates everything at once:

- Environment variables named ``TRADEBOOK_<SECTION>__<KEY>`` (``__`` nests) override the
  file, e.g. ``TRADEBOOK_RISK__DAILY_LOSS_LIMIT=500`` or ``TRADEBOOK_SESSION__MODE=live``.
  Field names match case-insensitively; mapping keys (an instrument id, a venue name, an
  asset class) are matched against the keys already there, else taken as written
  (venue names, asset classes and credential names are lower-cased). Values are parsed to
  the field's type: Decimal for money and quantities, int, float, bool (``true``/``false``/
  ``1``/``0``), str, enums, comma-separated lists; ``null``/``none`` clears an optional
  value. ``TRADEBOOK_CONFIG`` is reserved: the file to read when ``path`` is not given.
- Unknown keys, in the file or in the environment under the prefix, are refused naming the
  key path and the known keys: a typo in a risk limit must not silently leave the default
  in force.
- Wrong types and out-of-range values are refused naming the key path, the value, where it
  came from and what was expected (:class:`~tradebook.errors.ConfigError`).
- Mappings merge: a file that sets one venue or one instrument's limit keeps the defaults
  of the others.

Secrets never live in the file: a venue names the *environment variables* that hold its
credentials (``credentials_env``), and :meth:`VenueConfig.credentials` reads them.

``config/tradebook.example.yaml`` documents every key with its default.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import os
import re
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Union, get_args, get_origin, get_type_hints

from tradebook.errors import ConfigError
from tradebook.model.instruments import AssetClass

ENV_PREFIX = "TRADEBOOK_"
ENV_CONFIG_PATH = "TRADEBOOK_CONFIG"  # reserved: the file load_config reads when no path is given


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
    max_orders_per_minute: int = _opt(120, gt=0, doc="orders sent in any 60 s window")
    daily_loss_limit: Decimal | None = _opt(Decimal(5_000), gt=0,
                                            doc="loss today (realised + unrealised) that halts trading")
    price_collar_bps: float = _opt(100.0, gt=0, doc="farthest limit/stop from the quote's mid, aggressive side")
    max_spread_bps: float = _opt(50.0, gt=0, doc="widest spread at which an order may go")
    min_touch_notional: Decimal = _opt(Decimal(1_000), ge=0, doc="thinnest far touch (price x size) accepted")
    spread_action: SpreadAction = _opt(SpreadAction.DEFER, doc="what a wide spread or thin book does")
    max_quote_age_ms: int = _opt(5_000, gt=0, doc="older reference quotes are refused")
    equity_margin_account: bool = _opt(True, doc="the equity account is a margin account (PDT rule applies)")
    pdt_equity_threshold: Decimal = _opt(Decimal(25_000), ge=0, doc="PDT applies below this equity")
    max_day_trades: int = _opt(3, ge=0, doc="day trades allowed in the PDT window under the threshold")
    pdt_window_days: int = _opt(5, gt=0, doc="PDT window, business days")
    breaker_failures: int = _opt(5, gt=0, doc="consecutive venue failures that open the breaker")
    breaker_cooldown_s: float = _opt(30.0, gt=0, doc="seconds before an open breaker lets one try")
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
    wide_spread_bps: float = _opt(20.0, gt=0, doc="spread above which a limit at mid plus offset goes")
    twap_adv_fraction: float = _opt(0.01, gt=0, le=1, doc="size above this fraction of ADV goes as TWAP")
    passive_adv_fraction: float = _opt(0.001, gt=0, le=1, doc="size below this fraction of ADV joins the touch")
    offset_bps: float = _opt(1.0, ge=0, doc="limit offset from the touch or mid, base")
    offset_vol_multiplier: float = _opt(0.5, ge=0, doc="extra offset per bp of short-term volatility")
    twap_slices: int = _opt(5, gt=0, doc="TWAP child orders")
    twap_interval_s: float = _opt(60.0, gt=0, doc="seconds between TWAP children")
    vwap_min_minutes: int = _opt(5, gt=0, doc="shortest VWAP horizon")
    vwap_max_minutes: int = _opt(15, gt=0, doc="longest VWAP horizon")
    max_retries: int = _opt(3, ge=0, doc="re-priced retries of a rejected or unfilled child before escalation")

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
    store_path: Path = _opt(Path("tradebook.duckdb"), doc="DuckDB store file (relative to the working directory)")
    extended_hours: bool = _opt(False, doc="allow equity orders outside regular hours")
    replay_speed: float = _opt(1.0, gt=0, allow_inf=True, doc="replay speed factor; .inf = as fast as possible")
    tune_gc: bool = _opt(True, doc="while the session runs, collect garbage less often (tradebook.runtime.tune_gc)")


# -- venues -----------------------------------------------------------------------------------
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SECRET_WORDS = ("secret", "password", "passwd", "passphrase", "token", "key", "credential")


@dataclass(frozen=True)
class VenueConfig(_Section):
    """One venue: whether it is on, which environment variables hold its credentials, other settings."""

    name: str = _opt(from_key=True, doc="the venue (the mapping key in the file)")
    enabled: bool = _opt(False, doc="the session may connect to it")
    credentials_env: Mapping[str, str] = _opt(factory=dict, keys="lower",
                                              doc="credential -> name of the environment variable holding it")
    options: Mapping[str, str] = _opt(factory=dict, keys="lower", doc="non-secret settings (host, port, url...)")

    def _where(self) -> str:
        return f"venues.{self.name}"

    def _check(self) -> None:
        for credential, variable in self.credentials_env.items():
            if not _ENV_NAME.match(variable):
                raise ConfigError(
                    f"venues.{self.name}.credentials_env.{credential} = {_redact(variable)}: expected the *name* of "
                    "an environment variable (letters, digits, _), never the secret itself")
        for option in self.options:
            if any(word in option.lower() for word in _SECRET_WORDS):
                raise ConfigError(
                    f"venues.{self.name}.options.{option}: secrets do not belong in the file; name the environment "
                    f"variable that holds it under venues.{self.name}.credentials_env")

    def credentials(self, env: Mapping[str, str] | None = None) -> dict[str, str]:
        """The credentials read from the environment; ConfigError naming any variable that is not set."""
        env = os.environ if env is None else env
        missing = [f"{var} (credentials_env.{cred})" for cred, var in self.credentials_env.items() if not env.get(var)]
        if missing:
            raise ConfigError(f"venue {self.name}: environment variable(s) not set: {', '.join(missing)}")
        return {cred: env[var] for cred, var in self.credentials_env.items()}


def _redact(value: str) -> str:
    return repr(value[:3] + "..." if len(value) > 6 else value)


def _default_venues() -> dict[str, VenueConfig]:
    return {
        "paper": VenueConfig(name="paper", enabled=True),
        "alpaca": VenueConfig(name="alpaca", credentials_env={"api_key": "APCA_API_KEY_ID",
                                                              "secret_key": "APCA_API_SECRET_KEY"}),
        "binance": VenueConfig(name="binance", credentials_env={"api_key": "BINANCE_API_KEY",
                                                                "secret": "BINANCE_API_SECRET"}),
        "ibkr": VenueConfig(name="ibkr", options={"host": "127.0.0.1", "port": "7497", "client_id": "1"}),
    }


# -- the whole ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class TradebookConfig(_Section):
    """Everything configurable: ``TradebookConfig()`` is the defaults (paper mode)."""

    risk: RiskConfig = _opt(factory=RiskConfig, doc="pre-trade risk, kill switch triggers, breaker")
    sizing: SizingConfig = _opt(factory=SizingConfig, doc="how a signal becomes a quantity")
    router: RouterConfig = _opt(factory=RouterConfig, doc="order types, algos and retries")
    session: SessionConfig = _opt(factory=SessionConfig, doc="mode, account, store, hours, replay")
    venues: Mapping[str, VenueConfig] = _opt(factory=_default_venues, keys="lower", doc="venue name -> settings")

    def _check(self) -> None:
        for key, venue in self.venues.items():
            if venue.name != key:
                raise ConfigError(f"venues.{key}: its name is {venue.name!r}; expected the mapping key {key!r}")
        if self.session.mode is SessionMode.LIVE and not any(
                v.enabled and name != "paper" for name, v in self.venues.items()):
            raise ConfigError("session.mode = 'live' but no venue other than paper is enabled: expected "
                              "venues.<name>.enabled = true for the broker to trade on")


# -- loading ------------------------------------------------------------------------------------
def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> TradebookConfig:
    """The defaults, then the YAML file at ``path``, then ``TRADEBOOK_*`` variables of ``env``.

    ``env`` defaults to ``os.environ``; ``path`` to ``$TRADEBOOK_CONFIG`` if set, else no file.
    Raises ConfigError on an unreadable file, an unknown key or an invalid value.
    """
    env = os.environ if env is None else env
    if path is None and env.get(ENV_CONFIG_PATH):
        path = env[ENV_CONFIG_PATH]
    raw = _to_raw(TradebookConfig())
    sources: dict[str, str] = {}
    if path is not None:
        file_data = _read_yaml(Path(path))
        _merge(raw, file_data, TradebookConfig, "", {}, sources, f"in {path}")
    for name in sorted(env):
        if name.startswith(ENV_PREFIX) and name != ENV_CONFIG_PATH:
            _apply_env(raw, name, env[name], sources)
    return _convert(raw, TradebookConfig, "", {}, sources)


def _read_yaml(path: Path) -> dict:
    import yaml  # only the loader needs it

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"config file {path}{where}: invalid YAML: {problem}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping of sections (risk, sizing, router, session, "
                          f"venues) at the top, got {type(data).__name__}")
    return data


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
    close = difflib.get_close_matches(str(key), known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    where = f"known keys of {path}" if path else "known sections"
    return ConfigError(f"unknown key {full!r} ({source}){hint} {where}: {', '.join(known)}")


def _map_key(key: Any, hint: Any, metadata: Mapping[str, Any], existing: Mapping[str, Any], path: str,
             source: str) -> str:
    """A mapping key as stored in the raw tree: enum values, lower-case names, or as written."""
    key_type = get_args(hint)[0]
    if not isinstance(key, str) or not key.strip():
        raise ConfigError(f"{path}: key {key!r} ({source}): expected a non-empty string key")
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
    if _is_section(hint):
        fields = _file_fields(hint)
        for key, value in data.items():
            if key not in fields:
                raise _unknown_key(path, key, list(fields), source)
            sub_hint, sub_meta = _hints(hint)[key], fields[key].metadata
            _merge_value(raw, key, value, sub_hint, f"{path}.{key}".lstrip("."), sub_meta, sources, source)
    else:
        value_hint = get_args(hint)[1]
        for key, value in data.items():
            stored = _map_key(key, hint, metadata, raw, path, source)
            _merge_value(raw, stored, value, value_hint, f"{path}.{stored}", metadata, sources, source)


def _merge_value(raw: dict, key: str, value: Any, hint: Any, path: str, metadata: Mapping[str, Any],
                 sources: dict[str, str], source: str) -> None:
    if _is_section(hint) or _is_mapping(hint):
        node = raw.get(key)
        if not isinstance(node, dict):
            node = raw[key] = {}
        _merge(node, value, hint, path, metadata, sources, source)
    else:
        raw[key] = value
        sources[path] = source


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


def _fail(path: str, value: Any, sources: Mapping[str, str], expected: str) -> ConfigError:
    source = sources.get(path)
    shown = _redact(value) if isinstance(value, str) and "credentials_env" in path else repr(value)
    return ConfigError(f"{path} = {shown}{f' ({source})' if source else ''}: expected {expected}")


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
        if not isinstance(value, str) or not value.strip():
            raise _fail(path, value, sources, "a non-empty string (quote it in YAML)")
        return value
    if hint is Path:
        if isinstance(value, Path):
            return value
        if not isinstance(value, str) or not value.strip():
            raise _fail(path, value, sources, "a file path")
        return Path(value)
    if hint is Decimal:
        number = _to_decimal(value, path, sources)
    elif hint is int:
        number = _to_int(value, path, sources)
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
        if not math.isfinite(value):
            raise _fail(path, value, sources, expected)
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


def _to_int(value: Any, path: str, sources: Mapping[str, str]) -> int:
    if isinstance(value, bool) or isinstance(value, float):
        raise _fail(path, value, sources, "an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip().replace("_", ""))
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


def _check_range(number: float | int | Decimal, path: str, metadata: Mapping[str, Any], sources: Mapping[str, str],
                 original: Any) -> None:
    checks = (("gt", number.__gt__), ("ge", number.__ge__), ("lt", number.__lt__), ("le", number.__le__))
    if any(metadata.get(name) is not None and not test(metadata[name]) for name, test in checks):
        parts = [f"{word} {metadata[name]}" for name, word in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))
                 if metadata.get(name) is not None]
        raise _fail(path, original, sources, "a number " + " and ".join(parts))
