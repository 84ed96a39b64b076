"""The venue factory: routes per asset class from the configuration, real adapters built from the environment,
and every paper fallback named (unrouted, forced, disabled, not buildable, unhealthy)."""

from __future__ import annotations

import asyncio

import pytest

from tradebook.config import TradebookConfig, load_config
from tradebook.errors import ConfigError
from tradebook.model.instruments import AssetClass
from tradebook.sandbox.alpaca import DEFAULT_KEY, DEFAULT_SECRET, AlpacaSandbox
from tradebook.venues.alpaca import AlpacaVenue
from tradebook.venues.factory import FallbackReason, build_venues, check_health, force_paper

EQ, CRYPTO, FUT = AssetClass.EQUITY, AssetClass.CRYPTO_SPOT, AssetClass.FUTURE
SECRET = "sk-very-secret-0123456789"


def routed(**venues) -> TradebookConfig:
    return TradebookConfig(routing={"equity": "alpaca", "crypto_spot": "binance"},
                           venues={"alpaca": {"enabled": True, "account_id": "PA-TEST", **venues.get("alpaca", {})},
                                   "binance": {"enabled": True, "options": {"symbols": "BTC/USDT"}}})


def alpaca_env(server: AlpacaSandbox | None = None) -> dict[str, str]:
    env = {"TRADEBOOK_ALPACA_KEY_ID": DEFAULT_KEY, "TRADEBOOK_ALPACA_SECRET_KEY": DEFAULT_SECRET,
           "TRADEBOOK_ALPACA_ACCOUNT": "PA-TEST"}
    if server is not None:
        env |= {"TRADEBOOK_ALPACA_BASE_URL": server.base_url, "TRADEBOOK_ALPACA_STREAM_URL": server.stream_url}
    return env


def test_by_default_everything_trades_on_paper_and_says_why():
    routing = build_venues(TradebookConfig(), env={})
    assert routing.venues == {}
    assert {c: r.fallback for c, r in routing.routes.items()} == {c: FallbackReason.UNROUTED for c in AssetClass}
    assert routing.describe()["equity"] == "paper: no venue routed for it"


def test_a_routed_class_gets_the_real_adapter_built_from_the_environment_others_stay_on_paper():
    routing = build_venues(routed(), env=alpaca_env(), asset_classes=[EQ, FUT])
    equity = routing.route_for("equity")
    assert isinstance(equity.venue, AlpacaVenue) and equity.fallback is None and not equity.is_paper
    assert equity.venue.account_id == "PA-TEST" and not equity.venue.is_live  # Alpaca's paper endpoint
    assert routing.describe() == {"equity": "alpaca (account PA-TEST)", "future": "paper: no venue routed for it"}
    assert [r.asset_class for r in routing.fallbacks()] == [FUT]


def test_missing_credentials_fall_back_to_paper_naming_the_variables_never_a_value():
    env = {"TRADEBOOK_ALPACA_SECRET_KEY": SECRET}  # the key id is missing
    routing = build_venues(routed(), env=env, asset_classes=[EQ])
    route = routing.route_for(EQ)
    assert route.is_paper and route.fallback is FallbackReason.BUILD_FAILED and route.wanted == "alpaca"
    assert "TRADEBOOK_ALPACA_KEY_ID" in route.reason and SECRET not in route.reason and SECRET not in repr(routing)


def test_force_paper_routes_everything_to_paper_and_builds_nothing():
    env = alpaca_env() | {"TRADEBOOK_FORCE_PAPER": "true"}
    assert load_config(env=env) == TradebookConfig()  # not a config key, not refused as a typo
    routing = build_venues(routed(), env=env)
    assert routing.forced_paper and routing.venues == {}
    assert routing.route_for(EQ).fallback is FallbackReason.FORCED
    assert routing.route_for(EQ).reason == "TRADEBOOK_FORCE_PAPER=true (routed to alpaca)"
    with pytest.raises(ConfigError, match="TRADEBOOK_FORCE_PAPER='maybe': expected true or false"):
        force_paper({"TRADEBOOK_FORCE_PAPER": "maybe"})


def test_a_disabled_venue_falls_back_and_a_wrong_route_is_a_configuration_error():
    config = TradebookConfig(routing={"equity": "alpaca"})  # alpaca is off by default
    assert build_venues(config, env=alpaca_env()).route_for(EQ).fallback is FallbackReason.DISABLED
    with pytest.raises(ConfigError, match="the ccxt adapter does not trade equity"):
        build_venues(TradebookConfig(routing={"equity": "binance"}), env={})
    with pytest.raises(ConfigError, match="routing.equity = 'nowhere': no such venue"):
        TradebookConfig(routing={"equity": "nowhere"})
    odd = build_venues(routed(alpaca={"options": {"colour": "blue"}}), env=alpaca_env(), asset_classes=[EQ])
    assert odd.route_for(EQ).fallback is FallbackReason.BUILD_FAILED and "colour" in odd.route_for(EQ).reason


def test_an_account_other_than_the_configured_one_is_not_traded():
    env = alpaca_env() | {"TRADEBOOK_ALPACA_ACCOUNT": "PA-OTHER"}
    config = TradebookConfig(routing={"equity": "alpaca"},
                             venues={"alpaca": {"enabled": True, "account_id": "PA-TEST"}})
    # the configured account wins over the variable: the adapter is built for PA-TEST
    assert build_venues(config, env=env).route_for(EQ).venue.account_id == "PA-TEST"


def test_the_health_check_sends_an_unhealthy_venue_to_paper_and_keeps_a_healthy_one():
    async def scenario(server: AlpacaSandbox):
        down = build_venues(routed(), env=alpaca_env(server), asset_classes=[EQ])
        checked = await check_health(down, timeout_s=5)  # never connected
        assert checked.route_for(EQ).fallback is FallbackReason.UNHEALTHY
        assert "not connected" in checked.route_for(EQ).reason and checked.venues == {}
        up = build_venues(routed(), env=alpaca_env(server), asset_classes=[EQ])
        venue = up.route_for(EQ).venue
        await venue.connect(lambda event: None)
        try:
            for _ in range(100):  # the stream authorises in the background
                if server.listens:
                    break
                await asyncio.sleep(0.05)
            assert (await check_health(up, timeout_s=5)).route_for(EQ).venue is venue
        finally:
            await venue.close()

    with AlpacaSandbox() as server:
        server.set_price("SPY", "450.00", "450.02")
        asyncio.run(scenario(server))


def test_credentials_env_names_the_variables_the_keys_are_in_and_the_adapters_own_variable_wins():
    config = routed(alpaca={"credentials_env": {"api_key": "APCA_API_KEY_ID", "secret_key": "APCA_API_SECRET_KEY"}})
    env = {"APCA_API_KEY_ID": DEFAULT_KEY, "APCA_API_SECRET_KEY": DEFAULT_SECRET, "TRADEBOOK_ALPACA_ACCOUNT": "PA-TEST"}
    route = build_venues(config, env=env, asset_classes=[EQ]).route_for(EQ)
    assert isinstance(route.venue, AlpacaVenue) and route.fallback is None
    missing = build_venues(config, env={"TRADEBOOK_ALPACA_ACCOUNT": "PA-TEST"}, asset_classes=[EQ]).route_for(EQ)
    assert missing.is_paper and missing.fallback is FallbackReason.BUILD_FAILED
    wrong = routed(alpaca={"credentials_env": {"passphrase": "MY_PASSPHRASE"}})
    route = build_venues(wrong, env=alpaca_env(), asset_classes=[EQ]).route_for(EQ)
    assert route.is_paper and "passphrase" in route.reason and "api_key" in route.reason
