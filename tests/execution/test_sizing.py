"""Sizing: Half-Kelly arithmetic against hand calculations, fixed and percent-of-equity, conformance to the grid."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest

from tradebook.config import SizingConfig, TradebookConfig, load_config
from tradebook.errors import ConformanceError, OrderError
from tradebook.execution.sizing import (
    FixedQuantitySizer,
    HalfKellySizer,
    PercentOfEquitySizer,
    SizingDecision,
    sizer_from_config,
)
from tradebook.model import Side, get_instrument
from tradebook.model.orders import Signal

D = Decimal
BTC = get_instrument("BTCUSDT.BINANCE")
SPY = get_instrument("SPY.ARCX")
ES = get_instrument("ESH4.GLBX")
TS = 1_709_218_800_000_000_000  # 2024-02-29T15:00Z


def signal(instrument_id: str = "SPY.ARCX", **kwargs) -> Signal:
    return Signal(strategy_id="mom", signal_id="s1", instrument_id=instrument_id, side=kwargs.pop("side", Side.BUY),
                  ts_ns=TS, **kwargs)


# -- Half-Kelly --------------------------------------------------------------------------------
def test_half_kelly_capped_at_five_percent_of_equity():
    # p = 0.55, b = 0.015 / 0.01 = 1.5: f* = (0.55*1.5 - 0.45)/1.5 = 0.375/1.5 = 0.25; half 0.125 > cap 0.05.
    # 100,000 * 0.05 / 450.25 = 11.105 shares -> 11 (rounded down to the lot of 1).
    decision = HalfKellySizer().size(signal(win_rate=0.55, avg_win=0.015, avg_loss=0.01), SPY, D("450.25"),
                                     D(100_000))
    assert decision.kelly_fraction == 0.25
    assert decision.quantity == D(11)
    assert "half Kelly 0.125 (f*=0.25) capped at 0.05" in decision.reason
    assert SPY.notional(D("450.25"), decision.quantity) <= D(5_000)


def test_half_kelly_below_the_cap_is_used_as_is():
    # p = 0.52, b = 1: f* = 0.52 - 0.48 = 0.04; half 0.02 < 0.05; 100,000 * 0.02 / 450.25 = 4.44 -> 4.
    decision = HalfKellySizer().size(signal(win_rate=0.52, avg_win=0.01, avg_loss=0.01), SPY, D("450.25"),
                                     D(100_000))
    assert decision.kelly_fraction == 0.04
    assert decision.quantity == D(4)
    assert "capped" not in decision.reason


def test_half_kelly_uses_the_futures_multiplier():
    # p = 0.6, b = 2: f* = (1.2 - 0.4)/2 = 0.4; half 0.2, capped 0.05 of 10,000,000 = 500,000;
    # one ESH4 at 4780.25 is 4780.25 * 50 = 239,012.50 -> 2.09 contracts -> 2.
    decision = HalfKellySizer().size(signal("ESH4.GLBX", win_rate=0.6, avg_win=0.02, avg_loss=0.01), ES,
                                     D("4780.25"), D(10_000_000))
    assert decision.kelly_fraction == 0.4
    assert decision.quantity == D(2)


def test_custom_cap():
    # same edge as the first test, cap 0.10: 10,000 / 450.25 = 22.2 -> 22
    decision = HalfKellySizer(cap=0.10).size(signal(win_rate=0.55, avg_win=0.015, avg_loss=0.01), SPY,
                                             D("450.25"), D(100_000))
    assert decision.quantity == D(22)


@pytest.mark.parametrize(("win_rate", "avg_win", "avg_loss", "kelly", "shown"), [
    (0.4, 0.012, 0.01, -0.1, "-0.1"),  # (0.4*1.2 - 0.6)/1.2 = -0.1
    (0.4, 0.015, 0.01, 0.0, "0"),  # (0.6 - 0.6)/1.5 = 0: no edge either
    (0.3, 0.01, 0.0125, -0.575, "-0.575"),  # b = 0.8: (0.24 - 0.7)/0.8 = -0.575
])
def test_non_positive_kelly_means_no_order_with_the_reason(win_rate, avg_win, avg_loss, kelly, shown):
    decision = HalfKellySizer().size(signal(win_rate=win_rate, avg_win=avg_win, avg_loss=avg_loss), SPY,
                                     D("450.25"), D(100_000))
    assert decision == SizingDecision(None, f"kelly fraction {shown} <= 0: no edge", kelly)


@pytest.mark.parametrize(("stats", "fragment"), [
    ({"avg_win": 0.015, "avg_loss": 0.01}, "missing win_rate"),
    ({"win_rate": 0.55}, "missing avg_win, avg_loss"),
    ({"win_rate": math.nan, "avg_win": 0.015, "avg_loss": 0.01}, "win_rate = nan: expected a finite number"),
    ({"win_rate": 0.55, "avg_win": math.inf, "avg_loss": 0.01}, "avg_win = inf: expected a finite number"),
    ({"win_rate": 1.0, "avg_win": 0.015, "avg_loss": 0.01}, "win_rate = 1.0: expected a probability strictly"),
    ({"win_rate": 0.0, "avg_win": 0.015, "avg_loss": 0.01}, "win_rate = 0.0: expected a probability strictly"),
    ({"win_rate": 55.0, "avg_win": 0.015, "avg_loss": 0.01}, "win_rate = 55.0"),
    ({"win_rate": 0.55, "avg_win": 0.015, "avg_loss": 0.0}, "avg_loss = 0.0: expected a positive"),
    ({"win_rate": 0.55, "avg_win": 0.015, "avg_loss": -0.01}, "avg_loss = -0.01: expected a positive"),
    ({"win_rate": 0.55, "avg_win": -0.015, "avg_loss": 0.01}, "avg_win = -0.015: expected a positive"),
])
def test_missing_or_invalid_statistics_raise(stats, fragment):
    with pytest.raises(OrderError, match="signal s1") as info:
        HalfKellySizer().size(signal(**stats), SPY, D("450.25"), D(100_000))
    assert fragment in str(info.value)


# -- conformance -------------------------------------------------------------------------------
def test_percent_of_equity_rounds_down_to_the_lot():
    # 1% of 100,000 = 1,000 USDT / 61837.63 = 0.0161714... BTC -> 0.01617 (lot 0.00001), never up
    decision = PercentOfEquitySizer(0.01).size(signal("BTCUSDT.BINANCE"), BTC, D("61837.63"), D(100_000))
    assert decision.quantity == D("0.01617")
    assert str(decision.quantity) == "0.01617"
    assert decision.kelly_fraction is None


def test_below_minimum_notional_is_no_order_with_the_reason():
    # 1% of 300 = 3 USDT -> 0.0000485 BTC -> 0.00004 (above min qty 0.00001) = 2.47 USDT < min notional 5
    decision = PercentOfEquitySizer(0.01).size(signal("BTCUSDT.BINANCE"), BTC, D("61837.63"), D(300))
    assert decision.quantity is None
    assert "notional 2.4735052 USDT of 0.00004 at 61837.63 is below the minimum 5 USDT: no order" in decision.reason


def test_below_minimum_quantity_is_no_order_with_the_reason():
    # capped Kelly on 100,000: 5,000 / 239,012.50 = 0.0209 contracts -> 0, below one contract
    decision = HalfKellySizer().size(signal("ESH4.GLBX", win_rate=0.6, avg_win=0.02, avg_loss=0.01), ES,
                                     D("4780.25"), D(100_000))
    assert decision.quantity is None
    assert decision.kelly_fraction == 0.4
    assert "rounds down to 0 at lot 1, below the minimum quantity 1: no order" in decision.reason


def test_fixed_quantity_is_rounded_down_to_the_lot():
    assert FixedQuantitySizer(D("0.123456")).size(signal("BTCUSDT.BINANCE"), BTC, D("61837.63"),
                                                  D(100_000)).quantity == D("0.12345")
    assert FixedQuantitySizer(D(10)).size(signal(), SPY, D("450.25"), D(100_000)).quantity == D(10)
    tiny = FixedQuantitySizer(D("0.5")).size(signal(), SPY, D("450.25"), D(100_000))
    assert tiny.quantity is None and "below the minimum quantity 1" in tiny.reason


def test_no_equity_means_no_order():
    decision = PercentOfEquitySizer(0.02).size(signal(), SPY, D("450.25"), D(-1_250))
    assert decision == SizingDecision(None, "equity -1250 <= 0: nothing to size from, no order")


# -- explicit quantity -------------------------------------------------------------------------
def test_explicit_quantity_bypasses_sizing_but_is_conformed():
    sizer = HalfKellySizer()  # no statistics needed when the quantity is given
    decision = sizer.size(signal("BTCUSDT.BINANCE", quantity=D("0.015")), BTC, D("61837.63"), D(100_000))
    assert decision.quantity == D("0.01500") and str(decision.quantity) == "0.01500"
    assert "explicit quantity" in decision.reason


@pytest.mark.parametrize(("quantity", "error", "fragment"), [
    (D("0.000015"), ConformanceError, "quantity 0.000015 is not a multiple of the lot size 0.00001"),
    (D("0.00005"), ConformanceError, "notional 3.0918815 USDT is below the minimum 5 USDT"),
    (D("NaN"), OrderError, "quantity NaN must be positive and finite"),
    (D("-0.01"), OrderError, "quantity -0.01 must be positive and finite"),
    (D(0), OrderError, "quantity 0 must be positive and finite"),
    (0.01, OrderError, "quantity 0.01 must be a Decimal"),
])
def test_bad_explicit_quantities_raise(quantity, error, fragment):
    with pytest.raises(error) as info:
        PercentOfEquitySizer(0.01).size(signal("BTCUSDT.BINANCE", quantity=quantity), BTC, D("61837.63"),
                                        D(100_000))
    assert fragment in str(info.value)


# -- bad inputs and construction ---------------------------------------------------------------
@pytest.mark.parametrize(("price", "equity", "fragment"), [
    (D(0), D(100_000), "sizing price Decimal('0') must be a positive finite Decimal"),
    (D("NaN"), D(100_000), "sizing price Decimal('NaN')"),
    (450.25, D(100_000), "sizing price 450.25"),
    (D("450.25"), D("NaN"), "equity Decimal('NaN') must be a finite Decimal"),
])
def test_bad_price_or_equity_raise(price, equity, fragment):
    with pytest.raises(OrderError) as info:
        PercentOfEquitySizer(0.01).size(signal(), SPY, price, equity)
    assert fragment in str(info.value)


def test_signal_for_another_instrument_is_refused():
    with pytest.raises(OrderError, match="signal s1 is for BTCUSDT.BINANCE, sized against SPY.ARCX"):
        PercentOfEquitySizer(0.01).size(signal("BTCUSDT.BINANCE"), SPY, D("450.25"), D(100_000))


@pytest.mark.parametrize("make", [lambda: HalfKellySizer(cap=0), lambda: HalfKellySizer(cap=1.5),
                                  lambda: PercentOfEquitySizer(2.0), lambda: FixedQuantitySizer(D(-1)),
                                  lambda: FixedQuantitySizer(1.5)])
def test_bad_sizer_parameters_raise(make):
    with pytest.raises(OrderError):
        make()


def test_sizer_from_config():
    assert isinstance(sizer_from_config(TradebookConfig()), HalfKellySizer)
    assert sizer_from_config(SizingConfig(kelly_cap=0.02)).cap == D("0.02")
    fixed = sizer_from_config(SizingConfig(method="fixed", fixed_quantity="25"))
    assert isinstance(fixed, FixedQuantitySizer) and fixed.quantity == D(25)
    cfg = load_config(env={"TRADEBOOK_SIZING__METHOD": "percent_of_equity", "TRADEBOOK_SIZING__PERCENT": "2.5"})
    percent = sizer_from_config(cfg)
    assert isinstance(percent, PercentOfEquitySizer) and percent.fraction == D("0.025")
    # 2.5% of 100,000 = 2,500 / 450.25 = 5.55 -> 5
    assert percent.size(signal(), SPY, D("450.25"), D(100_000)).quantity == D(5)


# -- half_kelly_fraction (the float rule research and sessions share) ---------------------------
@pytest.mark.parametrize(("stats", "expected"), [
    ((0.55, 0.015, 0.01), 0.05),  # f* = 0.25, half 0.125 capped at 0.05
    ((0.52, 0.01, 0.01), 0.02),  # f* = 0.04, half 0.02 under the cap
    ((0.4, 0.012, 0.01), 0.0),  # f* = -0.1: no edge
    ((0.4, 0.015, 0.01), 0.0),  # f* = 0
    ((0.7, 0.01, 0.0), 0.05),  # no losing trade: f* = p, capped
    ((0.0, 0.0, 0.01), 0.0),  # no winning trade
])
def test_half_kelly_fraction_matches_the_hand_calculation(stats, expected):
    from tradebook.execution.sizing import half_kelly_fraction
    assert half_kelly_fraction(*stats) == expected


def test_half_kelly_fraction_cap_and_the_sizer_agree():
    from tradebook.execution.sizing import half_kelly_fraction
    assert half_kelly_fraction(0.55, 0.015, 0.01, cap=0.2) == 0.125
    # the sizer stakes the same fraction: 100,000 * 0.02 / 450.25 = 4.44 -> 4
    fraction = half_kelly_fraction(0.52, 0.01, 0.01)
    decision = HalfKellySizer().size(signal(win_rate=0.52, avg_win=0.01, avg_loss=0.01), SPY, D("450.25"),
                                     D(100_000))
    assert decision.quantity == D(int(100_000 * fraction / 450.25))


@pytest.mark.parametrize(("stats", "fragment"), [
    ((1.5, 0.01, 0.01), "win_rate = 1.5"),
    ((0.5, -0.01, 0.01), "expected magnitudes >= 0"),
    ((0.5, math.nan, 0.01), "avg_win = nan"),
])
def test_half_kelly_fraction_refuses_bad_statistics(stats, fragment):
    from tradebook.execution.sizing import half_kelly_fraction
    with pytest.raises(OrderError, match="half_kelly_fraction") as info:
        half_kelly_fraction(*stats)
    assert fragment in str(info.value)
