"""The order-type router: each rule produces the orders it should, priced to the tick.

Quotes are real rows of the bundled data (named where used); prices are worked out by
hand in the comments: offset = mid x bps / 10,000, then buy rounds down, sell up.
"""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from tradebook.data import load_bundled
from tradebook.errors import ConfigError, ConformanceError, DataError, OrderError, UnknownInstrumentError
from tradebook.execution.algos import VwapSchedule, child_orders, intraday_volume_profile
from tradebook.execution.router import OrderRouter, QuoteSnapshot, RouteRule, RouterConfig
from tradebook.model import Side, get_instrument
from tradebook.model.orders import OrderType, Signal, TimeInForce, client_order_id_for

SPY = get_instrument("SPY.ARCX")
IBM = get_instrument("IBM.XNYS")
BTC = get_instrument("BTCUSDT.BINANCE")
ES = get_instrument("ESH4.GLBX")
S = 1_000_000_000

# spy_20131007_quote: the first second bar, 2013-10-07 04:00 ET, pre-open: 167.27 x 168.00 (43.6 bps)
SPY_WIDE = QuoteSnapshot.from_quote("SPY.ARCX", 1381132800 * S, "167.27", "168.00", 100, 600)
# spy_20131007_quote row 5000: 167.66 x 167.67, one cent
SPY_TIGHT = QuoteSnapshot.from_quote("SPY.ARCX", 1381155300 * S, "167.66", "167.67", 8700, 3300)
# algoseek IBM NBBO 2013-10-07, row 292: 181.85 x 181.90 (2.75 bps)
IBM_Q = QuoteSnapshot.from_quote("IBM.XNYS", 1381150540116000000, "181.85", "181.90", 1000, 500)
# binance BTCUSDT 2024-08-09 00:00, first row: one tick wide
BTC_Q = QuoteSnapshot.from_quote("BTCUSDT.BINANCE", 1723161254087891268, "61837.63", "61837.64", "3.78826", "1.54698")
# cme ESH4 book, first row after the open: 4799.00 x 4799.50, two ticks wide
ES_Q = QuoteSnapshot.from_quote("ESH4.GLBX", 1703541600181198464, "4799.00", "4799.50", 16, 23)


def signal(instrument_id: str, side: Side, strength: float = 0.5, *, signal_id: str = "sig1",
           stop_loss: D | None = None, ts_ns: int = 0) -> Signal:
    return Signal(strategy_id="meanrev", signal_id=signal_id, instrument_id=instrument_id, side=side,
                  ts_ns=ts_ns, strength=strength, stop_loss=stop_loss)


def route(sig: Signal, qty: D, quote: QuoteSnapshot, inst, *, adv: D | None = None, vol: float = 0.0,
          router: OrderRouter | None = None, **kw):
    router = router or OrderRouter()
    return router.route(sig, qty, quote, inst, account_id="paper-1", adv=adv, volatility_bps=vol,
                        ts_ns=quote.ts_ns, **kw)


# -- rule 1: market ------------------------------------------------------------------------------
def test_strong_signal_becomes_a_market_order():
    plan = route(signal("BTCUSDT.BINANCE", Side.BUY, 0.95), D("0.5"), BTC_Q, BTC, adv=D(10_000))
    assert plan.rule is RouteRule.MARKET and plan.algo is None and plan.protective_stop is None
    (intent,) = plan.intents
    assert intent.order_type is OrderType.MARKET and intent.time_in_force is TimeInForce.IOC
    assert intent.side is Side.BUY and intent.quantity == D("0.5") and intent.limit_price is None
    assert intent.intent_id == "meanrev:sig1" and intent.account_id == "paper-1"
    assert intent.client_order_id == client_order_id_for("meanrev:sig1", "paper-1")
    assert "0.95 > 0.9" in plan.explanation


def test_strength_at_the_threshold_is_not_market_and_the_threshold_is_configurable():
    at = route(signal("BTCUSDT.BINANCE", Side.SELL, 0.9), D("0.5"), BTC_Q, BTC)
    assert at.rule is not RouteRule.MARKET and at.intents[0].order_type is OrderType.LIMIT
    lowered = OrderRouter(RouterConfig(market_strength=0.6))
    plan = route(signal("BTCUSDT.BINANCE", Side.SELL, 0.7), D("0.5"), BTC_Q, BTC, router=lowered)
    assert plan.rule is RouteRule.MARKET and plan.intents[0].side is Side.SELL


# -- rule 2: wide spread -> mid plus offset ----------------------------------------------------
def test_wide_spread_limit_at_mid_plus_offset_toward_the_aggressive_side():
    # mid 167.635; 1 bp of mid = 0.0167635
    buy = route(signal("SPY.ARCX", Side.BUY), D(300), SPY_WIDE, SPY, adv=D(60_000_000))
    sell = route(signal("SPY.ARCX", Side.SELL), D(300), SPY_WIDE, SPY, adv=D(60_000_000))
    assert buy.rule is sell.rule is RouteRule.WIDE_SPREAD
    (b,), (s,) = buy.intents, sell.intents
    assert (b.order_type, b.time_in_force, b.side, b.quantity) == (OrderType.LIMIT, TimeInForce.DAY, Side.BUY, D(300))
    assert b.limit_price == D("167.65")  # 167.6517635 rounded down
    assert s.limit_price == D("167.62")  # 167.6182365 rounded up
    assert "spread 43.55 bps > 20" in buy.explanation


def test_wide_spread_comes_before_the_twap_rule():
    plan = route(signal("SPY.ARCX", Side.BUY), D(20_000), SPY_WIDE, SPY, adv=D(1_000_000))  # 2% of ADV
    assert plan.rule is RouteRule.WIDE_SPREAD and plan.algo is None
    assert plan.intents[0].quantity == D(20_000)


def test_offsets_widen_with_volatility():
    # wide SPY: 1 + 0.25 x 40 = 11 bps of 167.635 = 0.18439850 -> 167.8193985 -> 167.81
    assert route(signal("SPY.ARCX", Side.BUY), D(300), SPY_WIDE, SPY, vol=40).intents[0].limit_price == D("167.81")
    # IBM 181.85 x 181.90 (mid 181.875), bid + offset: 1 bp -> 181.86; 2 bps -> 181.88; 3 bps -> capped 181.89
    prices = [route(signal("IBM.XNYS", Side.BUY), D(500), IBM_Q, IBM, vol=v).intents[0].limit_price
              for v in (0.0, 4.0, 8.0)]
    assert prices == [D("181.86"), D("181.88"), D("181.89")]
    sells = [route(signal("IBM.XNYS", Side.SELL), D(500), IBM_Q, IBM, vol=v).intents[0].limit_price
             for v in (0.0, 4.0, 8.0)]
    assert sells == [D("181.89"), D("181.87"), D("181.86")]  # ask - 0.0181875 up; - 0.036375 up; 181.8445 up
    steeper = OrderRouter(RouterConfig(offset_bps=0.5, offset_vol_multiplier=1.0))
    assert route(signal("IBM.XNYS", Side.BUY), D(500), IBM_Q, IBM, vol=1.0,
                 router=steeper).intents[0].limit_price == D("181.87")  # 1.5 bps = 0.0272812 -> 181.8772 down


# -- rule 3: TWAP ------------------------------------------------------------------------------
def test_large_order_becomes_a_twap_parent_with_five_slices_a_minute_apart():
    stop = D("165.00")
    plan = route(signal("SPY.ARCX", Side.BUY, stop_loss=stop), D(20_003), SPY_TIGHT, SPY, adv=D(1_000_000))
    assert plan.rule is RouteRule.TWAP
    parent = plan.algo
    assert parent.intent.intent_id == "meanrev:sig1" and parent.intent.quantity == D(20_003)
    assert [c.index for c in plan.children] == [1, 2, 3, 4, 5]
    assert [c.release_ts_ns - SPY_TIGHT.ts_ns for c in plan.children] == [0, 60 * S, 120 * S, 180 * S, 240 * S]
    assert [c.quantity for c in plan.children] == [D(4000), D(4000), D(4001), D(4001), D(4001)]
    (first,) = plan.intents  # only the slice due now; the rest are released by the session
    assert first.intent_id == "meanrev:sig1:slice:1" and first.parent_id == "meanrev:sig1"
    assert (first.order_type, first.side, first.quantity) == (OrderType.LIMIT, Side.BUY, D(4000))
    assert first.limit_price == D("167.66")  # one-cent market: bid + offset capped one tick inside the ask
    # the protective stop covers the whole parent
    assert plan.protective_stop.quantity == D(20_003) and plan.protective_stop.intent_id == "meanrev:sig1:stop"


def test_twap_children_are_priced_at_release_by_the_remaining_rules():
    router = OrderRouter()
    plan = route(signal("SPY.ARCX", Side.SELL), D(20_000), SPY_TIGHT, SPY, adv=D(1_000_000), router=router)
    third = plan.children[2]
    later_tight = QuoteSnapshot.from_quote("SPY.ARCX", third.release_ts_ns, "167.70", "167.71", 500, 500)
    child = router.price_child(plan.algo, third, later_tight, adv=D(1_000_000), ts_ns=third.release_ts_ns)
    assert child.intent_id == "meanrev:sig1:slice:3" and child.parent_id == "meanrev:sig1"
    assert (child.side, child.quantity, child.limit_price) == (Side.SELL, D(4000), D("167.71"))
    assert child.ts_ns == third.release_ts_ns and child.time_in_force is TimeInForce.DAY
    later_wide = QuoteSnapshot.from_quote("SPY.ARCX", third.release_ts_ns, "167.27", "168.00")
    wide = router.price_child(plan.algo, third, later_wide, adv=D(1_000_000), ts_ns=third.release_ts_ns)
    assert wide.limit_price == D("167.62") and "wide_spread" in wide.reason
    # against a huge ADV the 4,000-share slice is small: it joins the ask
    passive = router.price_child(plan.algo, third, later_tight, adv=D(10_000_000), ts_ns=third.release_ts_ns)
    assert passive.limit_price == D("167.71") and "passive" in passive.reason
    with pytest.raises(OrderError, match="due at"):
        router.price_child(plan.algo, third, SPY_TIGHT, adv=D(1_000_000), ts_ns=SPY_TIGHT.ts_ns)


def test_twap_slices_and_interval_are_configurable_and_es_contracts_stay_whole():
    router = OrderRouter(RouterConfig(twap_slices=3, twap_interval_s=120))
    plan = route(signal("ESH4.GLBX", Side.BUY), D(23), ES_Q, ES, adv=D(1_000), router=router)
    assert plan.rule is RouteRule.TWAP
    assert [(c.release_ts_ns - ES_Q.ts_ns) // S for c in plan.children] == [0, 120, 240]
    assert [c.quantity for c in plan.children] == [D(7), D(8), D(8)]
    assert plan.intents[0].limit_price == D("4799.25")  # 4799.00 + 0.48 -> down to 4799.25 (one tick inside)


def test_vwap_schedule_replaces_twap_for_the_large_order_rule():
    profile = intraday_volume_profile(load_bundled("spy_trade.csv.gz").frame, SPY)
    plan = route(signal("SPY.ARCX", Side.BUY), D(20_000), SPY_TIGHT, SPY, adv=D(1_000_000),
                 schedule=VwapSchedule(10, profile))
    assert plan.rule is RouteRule.VWAP and len(plan.children) == 10
    assert sum(c.quantity for c in plan.children) == D(20_000)
    assert plan.children == tuple(child_orders(plan.algo, SPY_TIGHT.ts_ns))
    assert plan.intents[0].intent_id == "meanrev:sig1:slice:1"


# -- rules 4 and 5 -----------------------------------------------------------------------------
def test_small_order_joins_the_touch():
    # 0.001 BTC against 10,000 BTC of ADV: below 0.1%
    buy = route(signal("BTCUSDT.BINANCE", Side.BUY), D("0.001"), BTC_Q, BTC, adv=D(10_000))
    sell = route(signal("BTCUSDT.BINANCE", Side.SELL), D("0.001"), BTC_Q, BTC, adv=D(10_000))
    assert buy.rule is sell.rule is RouteRule.PASSIVE
    assert buy.intents[0].limit_price == D("61837.63") and sell.intents[0].limit_price == D("61837.64")
    assert buy.intents[0].quantity == D("0.00100")


def test_otherwise_the_touch_improved_by_the_offset_never_crossing():
    # IBM 1,000 shares against 300,000 ADV: between 0.1% and 1%
    buy = route(signal("IBM.XNYS", Side.BUY), D(1000), IBM_Q, IBM, adv=D(300_000))
    assert buy.rule is RouteRule.IMPROVE and buy.intents[0].limit_price == D("181.86")
    # ES two ticks wide: bid + 0.48 would round to 4799.25, the one price inside; a sell likewise
    es_buy = route(signal("ESH4.GLBX", Side.BUY), D(2), ES_Q, ES, adv=D(1_000))
    es_sell = route(signal("ESH4.GLBX", Side.SELL), D(2), ES_Q, ES, adv=D(1_000))
    assert es_buy.intents[0].limit_price == es_sell.intents[0].limit_price == D("4799.25")
    # BTC one tick wide: the improvement is capped one tick inside the opposite touch = our own touch
    btc = route(signal("BTCUSDT.BINANCE", Side.SELL), D(20), BTC_Q, BTC, adv=D(10_000))
    assert btc.rule is RouteRule.IMPROVE and btc.intents[0].limit_price == D("61837.64")
    assert "capped one tick inside the bid" in btc.explanation


def test_without_adv_the_size_rules_are_skipped():
    plan = route(signal("IBM.XNYS", Side.BUY), D(1_000_000), IBM_Q, IBM, adv=None)
    assert plan.rule is RouteRule.IMPROVE and plan.algo is None


# -- stops, ids ----------------------------------------------------------------------------------
def test_stop_loss_becomes_a_reduce_only_stop_for_the_opposite_side():
    plan = route(signal("ESH4.GLBX", Side.SELL, stop_loss=D("4810.00")), D(2), ES_Q, ES, adv=D(1_000))
    entry, stop = plan.intents[0], plan.protective_stop
    assert entry.stop_loss == D("4810.00")
    assert (stop.order_type, stop.side, stop.quantity, stop.stop_price) == (OrderType.STOP, Side.BUY, D(2),
                                                                             D("4810.00"))
    assert stop.limit_price is None and stop.reduce_only and stop.time_in_force is TimeInForce.GTC
    assert stop.intent_id == "meanrev:sig1:stop" and stop.parent_id == "meanrev:sig1"


def test_bad_stop_losses_are_refused():
    with pytest.raises(ConformanceError, match="not a multiple of the tick 0.25"):
        route(signal("ESH4.GLBX", Side.SELL, stop_loss=D("4810.10")), D(2), ES_Q, ES)
    with pytest.raises(OrderError, match="below the bid"):
        route(signal("SPY.ARCX", Side.BUY, stop_loss=D("167.70")), D(100), SPY_TIGHT, SPY)


def test_ids_are_deterministic_across_reruns_and_never_repeat_within_a_plan():
    sig = signal("SPY.ARCX", Side.BUY, stop_loss=D("165.00"))
    first = route(sig, D(20_000), SPY_TIGHT, SPY, adv=D(1_000_000))
    again = route(sig, D(20_000), SPY_TIGHT, SPY, adv=D(1_000_000))
    assert first == again
    other = route(signal("SPY.ARCX", Side.BUY, signal_id="sig2"), D(20_000), SPY_TIGHT, SPY, adv=D(1_000_000))
    assert other.intents[0].client_order_id != first.intents[0].client_order_id
    ids = [first.algo.intent.client_order_id, first.protective_stop.client_order_id]
    ids += [client_order_id_for(first.algo.child_id(c.index), first.algo.intent.account_id) for c in first.children]
    assert len(set(ids)) == len(ids) == 7


# -- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize("qty, error, words", [
    (D("NaN"), ConformanceError, "finite"),
    (D(-100), ConformanceError, "positive"),
    (D(0), ConformanceError, "positive"),
    (D("100.5"), ConformanceError, "lot size 1"),
])
def test_bad_quantities_are_refused(qty, error, words):
    with pytest.raises(error, match=words):
        route(signal("SPY.ARCX", Side.BUY), qty, SPY_TIGHT, SPY)


def test_off_lot_and_below_min_notional_crypto_quantities_are_refused():
    with pytest.raises(ConformanceError, match="lot size 0.00001"):
        route(signal("BTCUSDT.BINANCE", Side.BUY), D("0.000015"), BTC_Q, BTC)
    with pytest.raises(ConformanceError, match="below the minimum 5 USDT"):  # 0.00005 BTC = 3.09 USDT
        route(signal("BTCUSDT.BINANCE", Side.BUY, 0.95), D("0.00005"), BTC_Q, BTC)


def test_bad_quotes_are_refused():
    sig = signal("SPY.ARCX", Side.BUY)
    with pytest.raises(DataError, match="crossed"):
        route(sig, D(100), QuoteSnapshot.from_quote("SPY.ARCX", SPY_TIGHT.ts_ns, "167.70", "167.67"), SPY)
    with pytest.raises(DataError, match=r"stale reference quote .* 6.000 s old"):
        OrderRouter().route(sig, D(100), SPY_TIGHT, SPY, account_id="a", adv=None, ts_ns=SPY_TIGHT.ts_ns + 6 * S)
    with pytest.raises(DataError, match="quote is for IBM.XNYS"):
        route(sig, D(100), IBM_Q, SPY)


def test_unknown_or_mismatched_instruments_are_refused():
    with pytest.raises(UnknownInstrumentError, match="unknown instrument 'SPX.ARCX'; did you mean SPY.ARCX"):
        route(signal("SPX.ARCX", Side.BUY), D(100), SPY_TIGHT, "SPX.ARCX")
    assert route(signal("SPY.ARCX", Side.BUY), D(100), SPY_TIGHT, "SPY.ARCX").intents[0].limit_price == D("167.66")
    with pytest.raises(OrderError, match="signal sig1 is for IBM.XNYS"):
        route(signal("IBM.XNYS", Side.BUY), D(100), SPY_TIGHT, SPY)


def test_bad_signal_and_reference_values_are_refused():
    with pytest.raises(OrderError, match="strength must be a number in"):
        route(signal("SPY.ARCX", Side.BUY, float("nan")), D(100), SPY_TIGHT, SPY)
    with pytest.raises(DataError, match="average daily volume must be positive"):
        route(signal("SPY.ARCX", Side.BUY), D(100), SPY_TIGHT, SPY, adv=D(-1))
    with pytest.raises(DataError, match="volatility_bps must be finite"):
        route(signal("SPY.ARCX", Side.BUY), D(100), SPY_TIGHT, SPY, vol=float("nan"))


@pytest.mark.parametrize("kwargs, words", [
    ({"market_strength": 1.5}, "market_strength"),
    ({"wide_spread_bps": 0}, "wide_spread_bps"),
    ({"offset_bps": float("nan")}, "offset_bps"),
    ({"passive_adv_fraction": 0.02}, "must be below twap_adv_fraction"),
    ({"twap_slices": 0}, "twap_slices"),
    ({"twap_interval_s": -1}, "twap_interval_s"),
    ({"limit_time_in_force": "day"}, "TimeInForce"),
])
def test_invalid_configuration_is_refused(kwargs, words):
    with pytest.raises(ConfigError, match=words):
        RouterConfig(**kwargs)
