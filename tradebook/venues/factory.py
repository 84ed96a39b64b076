"""Which venue trades each asset class: built from the configuration, with the paper fallback said out loud.

``build_venues(config)`` reads ``routing`` (asset class -> venue name) and ``venues``
(adapter, enabled, options, account) and builds one adapter per routed venue through its
``from_env`` (credentials only from the environment, never the file):

| asset class  | adapters that may trade it |
|--------------|----------------------------|
| equity       | alpaca, ib                 |
| future       | ib                         |
| fx_spot      | ib                         |
| crypto_spot  | ccxt (binance, coinbase, kraken, ...) |

An asset class goes to the paper venue when nothing is routed for it, when
``TRADEBOOK_FORCE_PAPER=true``, when its venue is disabled, when its adapter cannot be
built (not installed, credentials missing) or, once connected, when it fails its health
check (:func:`check_health`). Each such :class:`Route` carries a :class:`FallbackReason`
and a sentence; the session shows them in its status, raises an alert and journals it
(so the store's ``alerts`` table says so too). A route to an adapter that cannot trade
the asset class is a configuration error, not a fallback.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from tradebook.config import TradebookConfig, VenueConfig
from tradebook.errors import ConfigError
from tradebook.model.instruments import AssetClass
from tradebook.venues.base import VenueHealth, VenuePort

log = logging.getLogger(__name__)

FORCE_PAPER_ENV = "TRADEBOOK_FORCE_PAPER"
PAPER = "paper"
DEFAULT_HEALTH_TIMEOUT_S = 5.0

# adapter name -> (module, class); imported only when a route needs it (broker SDKs are heavy)
ADAPTERS: Mapping[str, tuple[str, str]] = {
    "alpaca": ("tradebook.venues.alpaca", "AlpacaVenue"),
    "ccxt": ("tradebook.venues.ccxt_venue", "CcxtVenue"),
    "ib": ("tradebook.venues.ib", "IbVenue"),
}
# which adapters may trade which asset class (the routing table of the design)
SERVES: Mapping[AssetClass, frozenset[str]] = {
    AssetClass.EQUITY: frozenset({"alpaca", "ib"}),
    AssetClass.FUTURE: frozenset({"ib"}),
    AssetClass.FX_SPOT: frozenset({"ib"}),
    AssetClass.CRYPTO_SPOT: frozenset({"ccxt"}),
}
_NAMED_ADAPTERS = {"alpaca": "alpaca", "ib": "ib", "ibkr": "ib", "paper": PAPER}


class FallbackReason(StrEnum):
    """Why an asset class trades on the paper venue."""

    UNROUTED = "unrouted"  # no venue configured for it
    FORCED = "forced_paper"  # TRADEBOOK_FORCE_PAPER=true
    DISABLED = "venue_disabled"  # routed to a venue with enabled: false
    NO_ADAPTER = "no_adapter"  # the adapter is not installed (its module or SDK is missing)
    BUILD_FAILED = "build_failed"  # the adapter refused its settings (credentials missing, bad option)
    UNHEALTHY = "unhealthy"  # connected, but its health check failed


@dataclass(frozen=True)
class Route:
    """Where one asset class trades: ``venue_name`` ("paper" on fallback), what was wanted, and why not."""

    asset_class: AssetClass
    venue_name: str
    wanted: str | None  # the venue the configuration routes it to (None: unrouted)
    venue: VenuePort | None  # the adapter built for it; None when it trades on paper
    fallback: FallbackReason | None = None
    reason: str = ""

    @property
    def is_paper(self) -> bool:
        return self.venue is None

    def describe(self) -> str:
        """One line for a status table: "alpaca (account PA1)" or "paper: <why>"."""
        if self.venue is None:
            return f"paper: {self.reason}" if self.reason else PAPER
        return f"{self.venue_name} (account {self.venue.account_id})"


@dataclass(frozen=True)
class VenueRouting:
    """Every asset class's route; ``venues`` the adapters built (one per venue, shared by its classes)."""

    routes: Mapping[AssetClass, Route]
    forced_paper: bool = False

    def route_for(self, asset_class: AssetClass | str) -> Route:
        return self.routes[AssetClass(asset_class)]

    @property
    def venues(self) -> dict[str, VenuePort]:
        return {r.venue_name: r.venue for r in self.routes.values() if r.venue is not None}

    def fallbacks(self, asset_classes: Iterable[AssetClass | str] | None = None) -> list[Route]:
        """Routes that trade on paper although the configuration asked otherwise, or asked nothing."""
        wanted = set(self.routes) if asset_classes is None else {AssetClass(a) for a in asset_classes}
        return [r for c, r in self.routes.items() if c in wanted and r.fallback is not None]

    def describe(self) -> dict[str, str]:
        return {str(c): r.describe() for c, r in self.routes.items()}


def force_paper(env: Mapping[str, str] | None = None) -> bool:
    """``TRADEBOOK_FORCE_PAPER`` is true (``true``/``1``/``yes``); ConfigError for a value that is no boolean."""
    env = os.environ if env is None else env
    text = env.get(FORCE_PAPER_ENV, "").strip().lower()
    if text in ("", "false", "0", "no"):
        return False
    if text in ("true", "1", "yes"):
        return True
    raise ConfigError(f"{FORCE_PAPER_ENV}={text!r}: expected true or false")


def adapter_name(venue: VenueConfig) -> str:
    """The adapter a venue uses: its ``adapter`` setting, else from its name (any other name is a ccxt exchange)."""
    name = venue.adapter or _NAMED_ADAPTERS.get(venue.name, "ccxt")
    if name != PAPER and name not in ADAPTERS:
        raise ConfigError(f"venues.{venue.name}.adapter = {name!r}; expected one of {sorted([*ADAPTERS, PAPER])}")
    return name


def build_venues(config: TradebookConfig, *, env: Mapping[str, str] | None = None,
                 asset_classes: Iterable[AssetClass | str] | None = None) -> VenueRouting:
    """Build the adapters the configuration routes to (not connected yet) and say where each asset class trades.

    ``asset_classes``: only these (default: every asset class). Adapters read their
    credentials in ``from_env``; ``env`` is handed to those that take it (tests) and is
    read for ``TRADEBOOK_FORCE_PAPER``.
    """
    if not isinstance(config, TradebookConfig):
        raise ConfigError(f"build_venues takes a TradebookConfig (tradebook.load_config()), got {type(config).__name__}")
    classes = list(AssetClass) if asset_classes is None else [AssetClass(a) for a in asset_classes]
    forced = force_paper(env)
    for asset_class in classes:  # configuration mistakes are loud, even under forced paper
        name = config.routing.get(asset_class)
        if name is not None and name != PAPER:
            adapter = adapter_name(config.venues[name])
            if adapter != PAPER and adapter not in SERVES[asset_class]:
                raise ConfigError(f"routing.{asset_class} = {name!r}: the {adapter} adapter does not trade "
                                  f"{asset_class}; expected a venue whose adapter is one of "
                                  f"{sorted(SERVES[asset_class])}")
    built: dict[str, VenuePort | tuple[FallbackReason, str]] = {}
    routes: dict[AssetClass, Route] = {}
    for asset_class in classes:
        name = config.routing.get(asset_class)
        if name is None or name == PAPER:
            why = "no venue routed for it" if name is None else "routed to paper"
            routes[asset_class] = Route(asset_class, PAPER, name, None,
                                        FallbackReason.UNROUTED if name is None else None, why)
            continue
        if forced:
            routes[asset_class] = Route(asset_class, PAPER, name, None, FallbackReason.FORCED,
                                        f"{FORCE_PAPER_ENV}=true (routed to {name})")
            continue
        if name not in built:
            built[name] = _build(config.venues[name], env)
        outcome = built[name]
        if isinstance(outcome, VenuePort):
            routes[asset_class] = Route(asset_class, name, name, outcome)
        else:
            routes[asset_class] = Route(asset_class, PAPER, name, None, outcome[0], outcome[1])
    for route in routes.values():
        if route.fallback not in (None, FallbackReason.UNROUTED):
            log.warning("%s trades on paper: %s", route.asset_class, route.reason)
    return VenueRouting(routes, forced_paper=forced)


def _build(venue: VenueConfig, env: Mapping[str, str] | None) -> VenuePort | tuple[FallbackReason, str]:
    if not venue.enabled:
        return FallbackReason.DISABLED, f"venue {venue.name} is disabled (venues.{venue.name}.enabled: false)"
    adapter = adapter_name(venue)
    if adapter == PAPER:
        return FallbackReason.DISABLED, f"venue {venue.name} is the paper venue"
    module_name, class_name = ADAPTERS[adapter]
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        return FallbackReason.NO_ADAPTER, f"the {adapter} adapter for {venue.name} is not available ({exc})"
    try:
        environ = _credential_environ(adapter, venue, env)
        built = cls.from_env(*_positional(adapter, venue), **_keywords(cls.from_env, venue, environ))
    except (ConfigError, ValueError, TypeError) as exc:
        # adapters keep credentials out of their messages (the contract); the class name says which
        return FallbackReason.BUILD_FAILED, f"{class_name} for {venue.name} could not be built: {exc}"
    if not isinstance(built, VenuePort):
        raise ConfigError(f"{class_name}.from_env returned {type(built).__name__}, not a VenuePort")
    if venue.account_id is not None and built.account_id != venue.account_id:
        return FallbackReason.BUILD_FAILED, (f"{venue.name} trades account {built.account_id!r} but the "
                                             f"configuration names {venue.account_id!r} (venues.{venue.name}."
                                             "account_id)")
    return built


# The variables each adapter's from_env reads, by the credential names of ``credentials_env``
# ({exchange}: the ccxt exchange id, upper case).
ADAPTER_CREDENTIAL_VARIABLES: dict[str, dict[str, str]] = {
    "alpaca": {"api_key": "TRADEBOOK_ALPACA_KEY_ID", "secret_key": "TRADEBOOK_ALPACA_SECRET_KEY"},
    "ccxt": {"api_key": "TRADEBOOK_CCXT_{exchange}_API_KEY", "secret": "TRADEBOOK_CCXT_{exchange}_SECRET",
             "password": "TRADEBOOK_CCXT_{exchange}_PASSWORD"},
    "ib": {},  # TWS or the gateway holds the login: nothing secret to read
}


def _credential_environ(adapter: str, venue: VenueConfig, env: Mapping[str, str] | None) -> Mapping[str, str] | None:
    """The environment the adapter reads, with ``credentials_env``'s variables under the adapter's own names.

    ``venues.alpaca.credentials_env: {api_key: APCA_API_KEY_ID, ...}`` lets a user keep their
    keys in the variables they already have; the adapter's own ``TRADEBOOK_*`` variable wins
    when both are set. A credential name the adapter does not read is a ConfigError.
    """
    if not venue.credentials_env:
        return env
    names = ADAPTER_CREDENTIAL_VARIABLES.get(adapter, {})
    unknown = sorted(set(venue.credentials_env) - set(names))
    if unknown:
        raise ConfigError(f"venues.{venue.name}.credentials_env: {', '.join(unknown)} not read by the {adapter} "
                          f"adapter; expected some of {sorted(names) or 'none (it takes no credentials)'}")
    source = os.environ if env is None else env
    merged = dict(source)
    for credential, variable in venue.credentials_env.items():
        own = names[credential].format(exchange=venue.name.upper())
        if variable in source and own not in source:
            merged[own] = source[variable]
    return merged


def _positional(adapter: str, venue: VenueConfig) -> tuple[Any, ...]:
    return (venue.name,) if adapter == "ccxt" else ()  # the exchange id


def _keywords(from_env: Any, venue: VenueConfig, env: Mapping[str, str] | None) -> dict[str, Any]:
    """The venue's options as the adapter's keyword arguments (typed from their text), plus ``environ``."""
    options: dict[str, Any] = {key: _typed(key, value) for key, value in venue.options.items()}
    if venue.account_id is not None:
        options.setdefault("account_id", venue.account_id)
    parameters = inspect.signature(from_env).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    if env is not None and "environ" in parameters:
        options["environ"] = env
    unknown = [k for k in options if k not in parameters and not takes_any]
    if unknown:
        raise ConfigError(f"venues.{venue.name}.options: {', '.join(sorted(unknown))} not understood by its "
                          f"adapter; expected some of {sorted(p for p in parameters if p != 'cls')}")
    return options


def _typed(key: str, text: str) -> Any:
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if key == "symbols":
        return [s.strip() for s in text.split(",") if s.strip()]
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text) if any(c in text for c in ".eE") and not text.startswith(("http", "ws")) else text
    except ValueError:
        return text


async def check_health(routing: VenueRouting, *, timeout_s: float = DEFAULT_HEALTH_TIMEOUT_S) -> VenueRouting:
    """Ask each built venue (connected by now) whether it can trade; a failing one's classes go to paper.

    Every wait is bounded by ``timeout_s``: a venue that does not answer in time is unhealthy.
    """
    health: dict[str, VenueHealth] = {}
    for name, venue in routing.venues.items():
        try:
            health[name] = await asyncio.wait_for(venue.health(), timeout_s)
        except TimeoutError:
            health[name] = VenueHealth(False, f"no health answer within {timeout_s:g} s")
        except Exception as exc:  # noqa: BLE001 - an adapter's failure to report is a failed check
            health[name] = VenueHealth(False, f"health check failed: {type(exc).__name__}: {exc}")
    routes = dict(routing.routes)
    for asset_class, route in routing.routes.items():
        if route.venue is not None and not health[route.venue_name]:
            routes[asset_class] = replace(route, venue_name=PAPER, venue=None, fallback=FallbackReason.UNHEALTHY,
                                          reason=f"{route.venue_name} failed its health check: "
                                                 f"{health[route.venue_name].reason}")
            log.warning("%s trades on paper: %s", asset_class, routes[asset_class].reason)
    return replace(routing, routes=routes)
