"""Pre-trade risk: one test per check on realistic books, the kill switch and the circuit breaker state machine."""

from __future__ import annotations

import itertools
from decimal import Decimal

import pytest

from tradebook.config import RiskConfig, load_config
from tradebook.errors import ConformanceError, OrderError
from tradebook.execution.risk import (
    CHECK_ORDER,
    BreakerState,
    CircuitBreaker,
    KillSwitch,
    KillSwitchMode,
    PreTradeRisk,
    ReferenceQuote,
    RiskAction,
    RiskContext,
)
from tradebook.model import Side, get_instrument
from tradebook.model.orders import OrderIntent, OrderType, TimeInForce

D = Decimal
S = 1_000_000_000
NOW = 1_709_218_800 * S  # 2024-02-29T15:00Z, 10:00 New York
BTC = get_instrument("BTCUSDT.BINANCE")
SPY = get_instrument("SPY.ARCX")
ES = get_instrument("ESH4.GLBX")

SPY_QUOTE = ReferenceQuote(bid=D("450.25"), ask=D("450.26"), bid_sz=D(300), ask_sz=D(400), ts_ns=NOW - 2 * S // 10)
BTC_QUOTE = ReferenceQuote(bid=D("61837.63"), ask=D("61837.64"), bid_sz=D("1.2"), ask_sz=D("0.8"), ts_ns=NOW - S)
ES_QUOTE = ReferenceQuote(bid=D("4780.25"), ask=D("4780.50"), bid_sz=D(25), ask_sz=D(30), ts_ns=NOW - S // 2)
_ids = itertools.count()


def intent(instrument, side, quantity, order_type=OrderType.LIMIT, limit=None, stop=None) -> OrderIntent:
    return OrderIntent(intent_id=f"i{next(_ids)}", strategy_id="mom", account_id="paper",
                       instrument_id=instrument.instrument_id, side=Side(side), quantity=D(quantity),
                       order_type=order_type, time_in_force=TimeInForce.DAY, ts_ns=NOW,
                       limit_price=None if limit is None else D(limit), stop_price=None if stop is None else D(stop))


def ctx(quote, **kwargs) -> RiskContext:
    kwargs.setdefault("equity", D(200_000))
    kwargs.setdefault("daily_pnl", D(0))
    return RiskContext(now_ns=kwargs.pop("now_ns", NOW), quote=quote, **kwargs)


def accepted(decision) -> bool:
    return decision.action is RiskAction.ACCEPT and decision.check == "all"


# -- 1. kill switch ----------------------------------------------------------------------------------
def test_halted_rejects_everything_even_a_reducing_order():
    risk = PreTradeRisk()
    risk.kill_switch.halt("by hand: news", ts_ns=NOW)
    decision = risk.check(intent(SPY, "sell", 100, limit="450.25"), SPY, ctx(SPY_QUOTE, positions={"SPY.ARCX": D(100)}))
    assert decision.action is RiskAction.REJECT
    assert (decision.check, decision.reason) == ("kill_switch", "kill switch halted: by hand: news")


def test_reduce_only_lets_only_reducing_orders_through():
    risk = PreTradeRisk()
    risk.kill_switch.reduce_only("end of day wind-down", ts_ns=NOW)
    held = ctx(BTC_QUOTE, positions={"BTCUSDT.BINANCE": D("0.5")})
    buy = risk.check(intent(BTC, "buy", "0.1", limit="61837.64"), BTC, held)
    assert (buy.action, buy.check) == (RiskAction.REJECT, "kill_switch")
    assert buy.reason == ("kill switch reduce-only (end of day wind-down): buy 0.1 BTCUSDT.BINANCE would not reduce "
                          "the position +0.5")
    assert accepted(risk.check(intent(BTC, "sell", "0.5", limit="61837.63"), BTC, held))
    flip = risk.check(intent(BTC, "sell", "0.6", limit="61837.63"), BTC, held)  # closes and goes short: not reducing
    assert flip.check == "kill_switch" and flip.action is RiskAction.REJECT


def test_an_instrument_with_an_unresolved_order_takes_nothing_new_even_a_reducing_order():
    risk = PreTradeRisk()
    blocked = ctx(SPY_QUOTE, positions={"SPY.ARCX": D(100)}, unresolved_instruments=frozenset({"SPY.ARCX"}))
    decision = risk.check(intent(SPY, "sell", 100, limit="450.25"), SPY, blocked)
    assert (decision.action, decision.check) == (RiskAction.REJECT, "unresolved")
    assert "SPY.ARCX has an order whose outcome at the venue is unknown" in decision.reason
    others = ctx(BTC_QUOTE, unresolved_instruments=frozenset({"SPY.ARCX"}))
    assert accepted(risk.check(intent(BTC, "buy", "0.1", limit="61837.64"), BTC, others))
    risk.kill_switch.halt("by hand", ts_ns=NOW)  # the kill switch still speaks first
    assert risk.check(intent(SPY, "sell", 100, limit="450.25"), SPY, blocked).check == "kill_switch"


def test_flatten_request_lets_closing_orders_pass_and_blocks_new_risk():
    risk = PreTradeRisk()
    risk.kill_switch.request_flatten("flatten from the dashboard", ts_ns=NOW)
    assert risk.kill_switch.flatten_requested and risk.kill_switch.mode is KillSwitchMode.REDUCE_ONLY
    short = ctx(ES_QUOTE, positions={"ESH4.GLBX": D(-3)}, prices={"ESH4.GLBX": D("4780.25")})
    assert accepted(risk.check(intent(ES, "buy", 3, OrderType.MARKET), ES, short))
    assert risk.check(intent(ES, "sell", 1, OrderType.MARKET), ES, short).check == "kill_switch"


def test_kill_switch_transitions_are_logged_with_time_and_reason():
    switch = KillSwitch()
    seen = []
    switch.subscribe(seen.append)
    switch.halt("daily loss", ts_ns=NOW)
    switch.halt("again", ts_ns=NOW + S)  # already halted: no new transition, the first reason stands
    switch.reduce_only("loss contained", ts_ns=NOW + 2 * S)
    switch.request_flatten("close all", ts_ns=NOW + 3 * S)
    switch.flatten_done("flat", ts_ns=NOW + 4 * S)
    switch.resume("risk manager ok", ts_ns=NOW + 5 * S)
    steps = [(t.ts_ns - NOW, t.from_mode.value, t.to_mode.value, t.flatten_requested, t.reason)
             for t in switch.transitions]
    assert steps == [
        (0, "normal", "halted", False, "daily loss"),
        (2 * S, "halted", "reduce_only", False, "loss contained"),
        (3 * S, "reduce_only", "reduce_only", True, "close all"),
        (4 * S, "reduce_only", "reduce_only", False, "flat"),
        (5 * S, "reduce_only", "normal", False, "risk manager ok"),
    ]
    assert list(switch.transitions) == seen
    assert switch.mode is KillSwitchMode.NORMAL and not switch.flatten_requested
    with pytest.raises(OrderError, match="needs a reason"):
        switch.halt("  ")


# -- 2. reference quote ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("quote", "detail"), [
    (None, "no quote for SPY.ARCX to check the order against"),
    (ReferenceQuote(D("450.27"), D("450.26"), D(300), D(400), NOW - S),
     "SPY.ARCX quote is crossed: bid 450.27 > ask 450.26"),
    (ReferenceQuote(D("450.26"), D("450.26"), D(300), D(400), NOW - S),
     "SPY.ARCX quote is locked: bid 450.26 = ask 450.26"),
    (ReferenceQuote(D("450.25"), D("450.26"), D(300), D(400), NOW - 7_500_000_000),
     "SPY.ARCX quote is 7.500 s old, older than max_quote_age_ms 5000"),
    (ReferenceQuote(D(0), D("450.26"), D(300), D(400), NOW - S),
     "SPY.ARCX quote bid 0 / ask 450.26 is not a positive price pair"),
])
def test_missing_crossed_locked_or_stale_quote_is_rejected(quote, detail):
    decision = PreTradeRisk().check(intent(SPY, "buy", 10, limit="450.26"), SPY, ctx(quote))
    assert (decision.action, decision.check) == (RiskAction.REJECT, "quote")
    assert decision.reason == f"stale or crossed quote: {detail}"


def test_quote_exactly_at_the_maximum_age_is_still_usable():
    quote = ReferenceQuote(D("450.25"), D("450.26"), D(300), D(400), NOW - 5 * S)
    assert accepted(PreTradeRisk().check(intent(SPY, "buy", 10, limit="450.26"), SPY, ctx(quote)))


# -- 3. price collar ------------------------------------------------------------------------------------
def test_price_collar_on_limits_in_the_aggressive_direction():
    risk = PreTradeRisk()  # 100 bps; SPY mid 450.255 -> band 4.50255
    too_high = risk.check(intent(SPY, "buy", 10, limit="455.00"), SPY, ctx(SPY_QUOTE))
    assert (too_high.action, too_high.check) == (RiskAction.REJECT, "price_collar")
    assert too_high.reason == ("price collar: buy limit 455.00 is 105.4 bps above mid 450.255 of SPY.ARCX; "
                               "collar 100.0 bps")
    assert accepted(risk.check(intent(SPY, "buy", 10, limit="454.70"), SPY, ctx(SPY_QUOTE)))  # 98.7 bps
    assert accepted(risk.check(intent(SPY, "buy", 10, limit="440.00"), SPY, ctx(SPY_QUOTE)))  # passive side: fine
    too_low = risk.check(intent(SPY, "sell", 10, limit="445.70"), SPY, ctx(SPY_QUOTE))  # 101.2 bps below
    assert too_low.check == "price_collar" and "sell limit 445.70 is 101.2 bps below mid" in too_low.reason


def test_price_collar_on_stops_only_where_they_would_trigger_at_once():
    risk = PreTradeRisk()
    held = ctx(SPY_QUOTE, positions={"SPY.ARCX": D(100)}, prices={"SPY.ARCX": D("450.25")})
    protective = intent(SPY, "sell", 100, OrderType.STOP, stop="427.75")  # 5% below: a normal stop-loss
    assert accepted(risk.check(protective, SPY, held))
    fat_finger = intent(SPY, "sell", 100, OrderType.STOP, stop="459.25")  # 199.8 bps above mid: fires at once
    decision = risk.check(fat_finger, SPY, held)
    assert decision.check == "price_collar"
    assert "sell stop 459.25 is 199.8 bps above mid 450.255 of SPY.ARCX and would trigger at once" in decision.reason
    stop_limit = intent(SPY, "buy", 10, OrderType.STOP_LIMIT, limit="470.00", stop="460.00")
    assert risk.check(stop_limit, SPY, ctx(SPY_QUOTE)).check == "price_collar"  # its limit is 438 bps above mid


# -- 4. spread and liquidity ---------------------------------------------------------------------------
WIDE_SPY = ReferenceQuote(D("449.00"), D("451.50"), D(300), D(400), NOW - S)  # 55.5 bps


def test_wide_spread_defers_by_default_and_rejects_when_configured():
    decision = PreTradeRisk().check(intent(SPY, "buy", 10, limit="450.00"), SPY, ctx(WIDE_SPY))
    assert (decision.action, decision.check) == (RiskAction.DEFER, "spread")
    assert decision.reason == ("spread 55.5 bps on SPY.ARCX (bid 449.00, ask 451.50) > max 50.0 bps: deferred")
    strict = PreTradeRisk(RiskConfig(spread_action="reject"))
    decision = strict.check(intent(SPY, "buy", 10, limit="450.00"), SPY, ctx(WIDE_SPY))
    assert (decision.action, decision.check) == (RiskAction.REJECT, "spread")
    assert decision.reason.endswith(": rejected")


def test_thin_far_touch_defers():
    thin = ReferenceQuote(D("61837.63"), D("61837.64"), D("1.2"), D("0.01"), NOW - S)  # ask side 618.38 USDT
    risk = PreTradeRisk()
    buy = risk.check(intent(BTC, "buy", "0.01", limit="61837.64"), BTC, ctx(thin))
    assert (buy.action, buy.check) == (RiskAction.DEFER, "spread")
    assert buy.reason == ("thin book on BTCUSDT.BINANCE: ask 0.01 @ 61837.64 = 618.3764 USDT < min_touch_notional "
                          "1000: deferred")
    assert accepted(risk.check(intent(BTC, "sell", "0.01", limit="61837.63"), BTC, ctx(thin)))  # bid side is deep
    unknown_sizes = ReferenceQuote(D("61837.63"), D("61837.64"), None, None, NOW - S)  # quotes made from bars
    assert accepted(risk.check(intent(BTC, "buy", "0.01", limit="61837.64"), BTC, ctx(unknown_sizes)))


# -- 5. max position -------------------------------------------------------------------------------------
def test_max_position_by_quantity_per_instrument():
    cfg = load_config(env={"TRADEBOOK_RISK__MAX_POSITION__PER_INSTRUMENT__BTCUSDT.BINANCE__QUANTITY": "2"})
    risk = PreTradeRisk(cfg.risk)
    held = ctx(BTC_QUOTE, positions={"BTCUSDT.BINANCE": D("1.5")}, prices={"BTCUSDT.BINANCE": D("61837.63")})
    decision = risk.check(intent(BTC, "buy", "0.6", limit="61837.64"), BTC, held)
    assert (decision.action, decision.check) == (RiskAction.REJECT, "max_position")
    assert decision.reason == ("max position: BTCUSDT.BINANCE position after the order would be 2.1 > limit 2 "
                               "(now +1.5, buy 0.6)")
    assert accepted(risk.check(intent(BTC, "buy", "0.5", limit="61837.64"), BTC, held))  # exactly 2


def test_max_position_by_notional_uses_the_multiplier_and_far_touch():
    risk = PreTradeRisk()  # default 500,000 per instrument; one ESH4 at 4780.50 is 239,025
    decision = risk.check(intent(ES, "buy", 3, OrderType.MARKET), ES, ctx(ES_QUOTE))
    assert decision.check == "max_position"
    assert decision.reason == ("max position: ESH4.GLBX position after the order would be 3 x 4780.50 = 717075.00 "
                               "USD > limit 500000 (now +0, buy 3)")
    assert accepted(risk.check(intent(ES, "buy", 2, OrderType.MARKET), ES, ctx(ES_QUOTE)))


def test_reducing_an_oversized_position_is_always_allowed():
    cfg = RiskConfig(max_position={"per_instrument": {"BTCUSDT.BINANCE": {"quantity": 2}}})
    over = ctx(BTC_QUOTE, positions={"BTCUSDT.BINANCE": D(3)}, prices={"BTCUSDT.BINANCE": D("61837.63")})
    assert accepted(PreTradeRisk(cfg).check(intent(BTC, "sell", "0.5", limit="61837.63"), BTC, over))


# -- 6. exposure ------------------------------------------------------------------------------------------
EQUITY_BOOK = {"positions": {"QQQ.XNAS": D(1100), "AAPL.XNAS": D(-2000)},
               "prices": {"QQQ.XNAS": D("400.10"), "AAPL.XNAS": D("190.05")}}  # 440,110 + 380,100 = 820,210


def test_exposure_per_asset_class_counts_longs_and_shorts_gross():
    risk = PreTradeRisk()  # equity class limit 1,000,000
    decision = risk.check(intent(SPY, "buy", 400, limit="450.26"), SPY, ctx(SPY_QUOTE, **EQUITY_BOOK))
    assert (decision.action, decision.check) == (RiskAction.REJECT, "exposure")  # + 180,104 = 1,000,314
    assert decision.reason == "exposure: equity gross notional after the order would be 1000314.00 USD > limit 1000000"
    assert accepted(risk.check(intent(SPY, "buy", 390, limit="450.26"), SPY, ctx(SPY_QUOTE, **EQUITY_BOOK)))


def test_gross_exposure_across_asset_classes_with_usdt_at_par():
    risk = PreTradeRisk(RiskConfig(max_gross_exposure=1_000_000))
    book = {"positions": {"ESH4.GLBX": D(2), "BTCUSDT.BINANCE": D(4)},
            "prices": {"ESH4.GLBX": D("4780.25"), "BTCUSDT.BINANCE": D("61837.63")}}  # 478,025 + 247,350.52
    decision = risk.check(intent(SPY, "buy", 700, limit="450.26"), SPY, ctx(SPY_QUOTE, **book))  # + 315,182
    assert decision.check == "exposure"
    assert decision.reason == "exposure: gross notional after the order would be 1040557.52 USD > limit 1000000"
    assert accepted(risk.check(intent(SPY, "buy", 600, limit="450.26"), SPY, ctx(SPY_QUOTE, **book)))  # 995,531.52


def test_a_held_position_without_a_price_cannot_be_valued():
    decision = PreTradeRisk().check(intent(SPY, "buy", 10, limit="450.26"), SPY,
                                    ctx(SPY_QUOTE, positions={"QQQ.XNAS": D(100)}))
    assert decision.check == "exposure"
    assert decision.reason == "exposure: no price for the held position +100 QQQ.XNAS; cannot value it"


# -- 7. order rate ------------------------------------------------------------------------------------------
def test_order_rate_counts_only_orders_recorded_as_sent():
    risk = PreTradeRisk(RiskConfig(max_orders_per_minute=3))
    order = intent(SPY, "buy", 10, limit="450.26")
    for _ in range(5):  # checked but never sent: they do not eat the budget
        assert accepted(risk.check(order, SPY, ctx(SPY_QUOTE)))
    for ago in (50, 30, 1):
        risk.record_sent(NOW - ago * S)
    decision = risk.check(order, SPY, ctx(SPY_QUOTE))
    assert (decision.action, decision.check) == (RiskAction.REJECT, "order_rate")
    assert decision.reason == "order rate: 3 orders sent in the last 60 s, max_orders_per_minute 3"
    later = NOW + 10 * S  # the order sent 50 s before NOW is now exactly 60 s old: out of the window
    fresh = ReferenceQuote(SPY_QUOTE.bid, SPY_QUOTE.ask, SPY_QUOTE.bid_sz, SPY_QUOTE.ask_sz, later)
    assert accepted(risk.check(order, SPY, ctx(fresh, now_ns=later)))


def test_order_rate_from_the_context_replaces_the_own_record():
    risk = PreTradeRisk(RiskConfig(max_orders_per_minute=2))
    sent = (NOW - 20 * S, NOW - 5 * S)
    decision = risk.check(intent(SPY, "buy", 10, limit="450.26"), SPY, ctx(SPY_QUOTE, recent_order_ts_ns=sent))
    assert decision.check == "order_rate"


# -- 8. daily loss ---------------------------------------------------------------------------------------------
def test_daily_loss_limit_rejects_and_halts():
    risk = PreTradeRisk()  # 5,000 USD
    order = intent(SPY, "buy", 10, limit="450.26")
    assert accepted(risk.check(order, SPY, ctx(SPY_QUOTE, daily_pnl=D("-4999.99"))))
    decision = risk.check(order, SPY, ctx(SPY_QUOTE, daily_pnl=D("-5000.00")))
    assert (decision.action, decision.check) == (RiskAction.REJECT, "daily_loss")
    assert decision.reason == "daily loss limit: P&L today -5000.00 <= -5000 USD; kill switch halted"
    assert risk.kill_switch.mode is KillSwitchMode.HALTED
    assert risk.kill_switch.transitions[-1].reason == "daily loss limit: P&L today -5000.00 <= -5000 USD"
    assert risk.kill_switch.transitions[-1].ts_ns == NOW
    after = risk.check(order, SPY, ctx(SPY_QUOTE, daily_pnl=D(0)))  # stays halted until a person resumes
    assert after.check == "kill_switch" and "daily loss limit" in after.reason


# -- 9. pattern day trader --------------------------------------------------------------------------------------
def test_fourth_day_trade_in_a_small_margin_account_is_rejected():
    risk = PreTradeRisk()
    order = intent(SPY, "sell", 20, limit="450.25")
    small = {"equity": D(20_000), "positions": {"SPY.ARCX": D(20)}, "prices": {"SPY.ARCX": D("450.25")},
             "is_day_trade": True}
    decision = risk.check(order, SPY, ctx(SPY_QUOTE, day_trades_last_5_days=3, **small))
    assert (decision.action, decision.check) == (RiskAction.REJECT, "pdt")
    assert decision.reason == ("pattern day trader rule: 3 day trades in the last 5 business days and equity 20000 < "
                               "25000 in a margin account; this would be day trade 4 (max 3)")
    assert accepted(risk.check(order, SPY, ctx(SPY_QUOTE, day_trades_last_5_days=2, **small)))  # the 3rd is fine
    assert accepted(risk.check(order, SPY, ctx(SPY_QUOTE, day_trades_last_5_days=3, margin_account=False, **small)))
    rich = dict(small, equity=D(25_000))
    assert accepted(risk.check(order, SPY, ctx(SPY_QUOTE, day_trades_last_5_days=3, **rich)))
    not_day_trade = dict(small, is_day_trade=False)
    assert accepted(risk.check(order, SPY, ctx(SPY_QUOTE, day_trades_last_5_days=3, **not_day_trade)))
    crypto = risk.check(intent(BTC, "buy", "0.1", limit="61837.64"), BTC,
                        ctx(BTC_QUOTE, equity=D(20_000), day_trades_last_5_days=5, is_day_trade=True))
    assert accepted(crypto)  # the rule is for equities


# -- order of checks and malformed intents ----------------------------------------------------------------------
def test_checks_run_in_the_documented_order_and_the_first_failure_decides():
    assert CHECK_ORDER == ("kill_switch", "restricted", "unresolved", "quote", "price_collar", "spread",
                           "max_position", "exposure", "order_rate", "daily_loss", "pdt")
    risk = PreTradeRisk(RiskConfig(max_orders_per_minute=1))
    risk.record_sent(NOW - S)
    stale = ReferenceQuote(D("449.00"), D("451.50"), D(300), D(400), NOW - 60 * S)
    bad = intent(SPY, "buy", 5000, limit="470.00")  # collar, position and exposure would fail too
    assert risk.check(bad, SPY, ctx(stale)).check == "quote"
    wide = ReferenceQuote(D("449.00"), D("451.50"), D(300), D(400), NOW - S)
    assert risk.check(bad, SPY, ctx(wide)).check == "price_collar"
    assert risk.check(intent(SPY, "buy", 5000, limit="451.50"), SPY, ctx(wide)).check == "spread"
    assert risk.check(intent(SPY, "buy", 5000, limit="450.26"), SPY, ctx(SPY_QUOTE)).check == "max_position"
    assert risk.check(intent(SPY, "buy", 10, limit="450.26"), SPY, ctx(SPY_QUOTE)).check == "order_rate"
    risk.kill_switch.halt("test", ts_ns=NOW)
    assert risk.check(bad, SPY, ctx(stale)).check == "kill_switch"


@pytest.mark.parametrize(("make", "error", "fragment"), [
    (lambda: intent(SPY, "buy", 10, limit="450.255"), ConformanceError, "price 450.255 is not a multiple of the tick"),
    (lambda: intent(BTC, "buy", "0.000015", limit="61837.64"), ConformanceError, "not a multiple of the lot size"),
    (lambda: intent(BTC, "buy", "0.00005", limit="61837.64"), ConformanceError, "below the minimum 5 USDT"),
    (lambda: intent(SPY, "buy", "NaN", limit="450.26"), OrderError, "quantity Decimal('NaN') must be a positive"),
    (lambda: intent(SPY, "buy", -10, limit="450.26"), OrderError, "quantity Decimal('-10') must be a positive"),
    (lambda: intent(SPY, "buy", 10, OrderType.LIMIT), OrderError, "a limit order needs a limit_price"),
    (lambda: intent(SPY, "sell", 10, OrderType.STOP), OrderError, "a stop order needs a stop_price"),
])
def test_malformed_intents_raise_instead_of_being_judged(make, error, fragment):
    order = make()
    instrument = get_instrument(order.instrument_id)
    quote = SPY_QUOTE if instrument is SPY else BTC_QUOTE
    with pytest.raises(error) as info:
        PreTradeRisk().check(order, instrument, ctx(quote))
    assert fragment in str(info.value)


# -- circuit breaker ---------------------------------------------------------------------------------------------
def test_breaker_state_machine_with_explicit_times():
    switch = KillSwitch()
    breaker = CircuitBreaker(failures=3, cooldown_s=30, kill_switch=switch, venue="alpaca")
    t = lambda seconds: NOW + int(seconds * S)  # noqa: E731
    breaker.record_failure(t(1))
    breaker.record_failure(t(2))
    breaker.record_success(t(3))  # resets the consecutive count
    assert breaker.state is BreakerState.CLOSED and breaker.consecutive_failures == 0
    for second in (4, 5):
        breaker.record_failure(t(second), "HTTP 503")
        assert breaker.allow(t(second)) and breaker.state is BreakerState.CLOSED
    assert switch.mode is KillSwitchMode.NORMAL
    breaker.record_failure(t(6), "HTTP 503")
    assert breaker.state is BreakerState.OPEN
    assert switch.mode is KillSwitchMode.HALTED
    assert switch.reason == "repeated venue failures: alpaca failed 3 consecutive calls (last: HTTP 503)"
    assert not breaker.allow(t(35.9))  # cool-down not over
    assert breaker.allow(t(36))  # 30 s after opening: one trial
    assert breaker.state is BreakerState.HALF_OPEN
    assert not breaker.allow(t(36.1))  # only one trial at a time
    breaker.record_failure(t(37), "timeout")  # the trial failed: open again, new cool-down from 37 s
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow(t(66.9))
    assert breaker.allow(t(67))
    breaker.record_success(t(68))
    assert breaker.state is BreakerState.CLOSED and breaker.allow(t(68))
    assert switch.mode is KillSwitchMode.HALTED  # closing the breaker does not resume trading
    assert [(tr.ts_ns - NOW, tr.from_state.value, tr.to_state.value) for tr in breaker.transitions] == [
        (6 * S, "closed", "open"), (36 * S, "open", "half_open"), (37 * S, "half_open", "open"),
        (67 * S, "open", "half_open"), (68 * S, "half_open", "closed")]


def test_breaker_without_kill_switch_trip_and_from_config():
    switch = KillSwitch()
    cfg = load_config(env={"TRADEBOOK_RISK__BREAKER_FAILURES": "2", "TRADEBOOK_RISK__BREAKER_TRIPS_KILL_SWITCH": "0"})
    breaker = CircuitBreaker.from_config(cfg.risk, kill_switch=switch, venue="binance")
    assert (breaker.failures, breaker.cooldown_ns) == (2, 30 * S)
    breaker.record_failure(NOW)
    breaker.record_failure(NOW + S)
    assert breaker.state is BreakerState.OPEN
    assert switch.mode is KillSwitchMode.NORMAL and switch.transitions == ()
    with pytest.raises(OrderError, match="failures 0"):
        CircuitBreaker(failures=0)
    with pytest.raises(OrderError, match="cooldown_s -1"):
        CircuitBreaker(cooldown_s=-1)


def test_daily_loss_halts_even_when_the_order_rate_refuses_first():
    risk = PreTradeRisk(RiskConfig(max_orders_per_minute=1, daily_loss_limit=D(1000)))
    risk.record_sent(NOW - S)
    decision = risk.check(intent(SPY, "buy", 10, limit="450.26"), SPY, ctx(SPY_QUOTE, daily_pnl=D(-1500)))
    assert decision.check == "order_rate"  # the first failure decides ...
    assert risk.kill_switch.mode is KillSwitchMode.HALTED  # ... and the loss limit still halts


def test_a_replaced_config_applies_from_the_next_check():
    risk = PreTradeRisk()
    order = intent(SPY, "buy", 10, limit="450.26")
    assert accepted(risk.check(order, SPY, ctx(SPY_QUOTE)))
    risk.config = RiskConfig(max_spread_bps=0.1)  # the 0.22 bps SPY spread is now too wide
    assert risk.check(order, SPY, ctx(SPY_QUOTE)).check == "spread"
