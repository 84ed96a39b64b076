"""Instruments: tick and lot conformance in exact Decimal, notional, lookup, trading hours."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tradebook.errors import ConformanceError, TradebookError, UnknownInstrumentError
from tradebook.model import BUNDLED_INSTRUMENTS, Side, get_instrument, to_ns

D = Decimal
BTC = get_instrument("BTCUSDT.BINANCE")
SPY = get_instrument("SPY.ARCX")
ES = get_instrument("ESH4.GLBX")
EURUSD = get_instrument("EURUSD.DUKASCOPY")


# -- conform_price ---------------------------------------------------------------------
class TestConformPrice:
    @pytest.mark.parametrize("price", ["61837.63", 61837.63, D("61837.63"), D("61837.630000")])
    def test_on_tick_price_is_returned_exactly(self, price):
        result = BTC.conform_price(price)
        assert result == D("61837.63")
        assert isinstance(result, Decimal)
        assert str(result) == "61837.63"  # quantized to the tick, no float noise, no trailing zeros beyond it

    def test_float_goes_through_its_shortest_repr(self):
        # Decimal(0.1 + 0.2) is 0.3000000000000000444...; via repr it is 0.30000000000000004: off tick.
        with pytest.raises(ConformanceError):
            EURUSD.conform_price(0.1 + 0.2)
        assert EURUSD.conform_price(1.08235) == D("1.08235")

    def test_off_tick_rejected_naming_tick_and_neighbours(self):
        with pytest.raises(ConformanceError) as info:
            BTC.conform_price("61837.635")
        message = str(info.value)
        assert "BTCUSDT.BINANCE" in message
        assert "61837.635" in message
        assert "tick 0.01" in message
        assert "61837.63" in message and "61837.64" in message

    def test_reject_is_the_default_and_a_conformance_error_is_a_value_error(self):
        with pytest.raises(ValueError):
            BTC.conform_price("61837.631")
        with pytest.raises(TradebookError):
            BTC.conform_price("61837.631", rounding="reject")

    @pytest.mark.parametrize(
        ("rounding", "side", "expected"),
        [
            ("nearest", None, "61837.64"),  # 6183763.5 ticks: half-even -> 6183764
            ("down", None, "61837.63"),
            ("up", None, "61837.64"),
            ("passive", "buy", "61837.63"),
            ("passive", Side.BUY, "61837.63"),
            ("passive", "sell", "61837.64"),
            ("passive", Side.SELL, "61837.64"),
        ],
    )
    def test_rounding_modes_at_a_half_tick(self, rounding, side, expected):
        assert BTC.conform_price("61837.635", rounding=rounding, side=side) == D(expected)

    @pytest.mark.parametrize(
        ("price", "rounding", "side", "expected"),
        [
            ("61837.631", "nearest", None, "61837.63"),
            ("61837.639", "nearest", None, "61837.64"),
            ("61837.625", "nearest", None, "61837.62"),  # half-even
            ("61837.631", "up", None, "61837.64"),
            ("61837.639", "down", None, "61837.63"),
            ("61837.639", "passive", "buy", "61837.63"),
            ("61837.631", "passive", "sell", "61837.64"),
            ("4750.10", "passive", "buy", "4750.00"),  # ES, below
            ("4750.10", "passive", "sell", "4750.25"),
        ],
    )
    def test_rounding_modes(self, price, rounding, side, expected):
        instrument = ES if price.startswith("4750") else BTC
        assert instrument.conform_price(price, rounding=rounding, side=side) == D(expected)

    def test_passive_needs_a_side(self):
        with pytest.raises(ConformanceError, match="side"):
            BTC.conform_price("61837.635", rounding="passive")

    def test_unknown_rounding_mode(self):
        with pytest.raises(ConformanceError, match="unknown rounding"):
            BTC.conform_price("61837.635", rounding="sideways")

    @pytest.mark.parametrize("price", [0, "0", -1, "-61837.63"])
    def test_non_positive_price_rejected_outside_futures(self, price):
        with pytest.raises(ConformanceError, match="positive"):
            BTC.conform_price(price)

    def test_futures_accept_zero_and_negative_prices_on_the_grid(self):
        # Futures can trade at or below zero (WTI, April 2020); the tick grid still applies.
        assert ES.conform_price("-1.25") == D("-1.25")
        assert ES.conform_price("0") == 0
        with pytest.raises(ConformanceError):
            ES.conform_price("-1.10")

    @pytest.mark.parametrize("price", [math.nan, math.inf, -math.inf, "nan", "abc", True, None])
    def test_non_numbers_rejected(self, price):
        with pytest.raises(ConformanceError):
            BTC.conform_price(price)

    # US equities: $0.0001 below $1, $0.01 at or above (Reg NMS Rule 612).
    def test_us_equity_sub_penny_below_one_dollar(self):
        assert SPY.tick_for(D("0.5012")) == D("0.0001")
        assert SPY.conform_price("0.5012") == D("0.5012")
        assert SPY.conform_price(0.5012) == D("0.5012")

    def test_us_equity_penny_at_or_above_one_dollar(self):
        assert SPY.tick_for(D("1")) == D("0.01")
        assert SPY.conform_price("1.01") == D("1.01")
        with pytest.raises(ConformanceError) as info:
            SPY.conform_price("1.005")
        assert "tick 0.01" in str(info.value)
        assert "1.00" in str(info.value) and "1.01" in str(info.value)

    def test_us_equity_just_below_one_dollar_uses_the_sub_penny_tick(self):
        with pytest.raises(ConformanceError, match="tick 0.0001"):
            SPY.conform_price("0.99995")
        assert SPY.conform_price("0.99995", rounding="up") == D("1")
        assert SPY.conform_price("0.99995", rounding="down") == D("0.9999")

    @pytest.mark.parametrize(("instrument", "price"), [(BTC, "0.004"), (SPY, "0.00005")], ids=["BTCUSDT", "SPY"])
    def test_rounding_never_produces_a_zero_price(self, instrument, price):
        for rounding, side in (("down", None), ("nearest", None), ("passive", "buy")):
            try:
                result = instrument.conform_price(price, rounding=rounding, side=side)
            except ConformanceError:
                continue
            assert result > 0, f"{rounding}/{side} turned {price} into {result}"


# -- property: rounding lands on the grid, within one tick, never worse when passive ---------
_ROUNDINGS = st.sampled_from([("nearest", None), ("down", None), ("up", None), ("passive", "buy"),
                              ("passive", "sell")])


@given(
    instrument=st.sampled_from([BTC, SPY, ES, EURUSD]),
    price=st.decimals(min_value=D("1.5"), max_value=D("99999"), places=7, allow_nan=False, allow_infinity=False),
    mode=_ROUNDINGS,
)
def test_rounded_price_is_on_the_grid_within_one_tick(instrument, price, mode):
    rounding, side = mode
    result = instrument.conform_price(price, rounding=rounding, side=side)
    tick = instrument.tick_for(price)
    assert result % tick == 0
    assert instrument.conform_price(result) == result  # on the grid: reject mode accepts it unchanged
    assert abs(result - price) < tick
    if rounding == "nearest":
        assert abs(result - price) <= tick / 2
    if rounding == "down" or (rounding == "passive" and side == "buy"):
        assert result <= price  # a buy is never placed above the price asked for
    if rounding == "up" or (rounding == "passive" and side == "sell"):
        assert result >= price  # a sell is never placed below the price asked for


@given(
    price=st.decimals(min_value=D("0.0100"), max_value=D("0.9999"), places=6),
    mode=_ROUNDINGS,
)
def test_sub_dollar_equity_rounding_stays_on_the_sub_penny_grid(price, mode):
    rounding, side = mode
    result = SPY.conform_price(price, rounding=rounding, side=side)
    assert result % D("0.0001") == 0
    assert abs(result - price) < D("0.0001")
    assert SPY.conform_price(result) == result


# -- conform_quantity ------------------------------------------------------------------
class TestConformQuantity:
    @pytest.mark.parametrize("quantity", ["0.00001", 0.00001, "1e-5", D("0.00001")])
    def test_minimum_lot_accepted(self, quantity):
        assert BTC.conform_quantity(quantity) == D("0.00001")

    def test_on_lot_quantity_kept_exact(self):
        assert BTC.conform_quantity("1.23456") == D("1.23456")
        assert SPY.conform_quantity(100) == D(100)
        assert ES.conform_quantity(3) == D(3)

    def test_off_lot_rejected_naming_the_lot(self):
        with pytest.raises(ConformanceError, match="lot size 0.00001"):
            BTC.conform_quantity("0.000015")
        with pytest.raises(ConformanceError, match="lot size 1"):
            SPY.conform_quantity("10.5")

    def test_off_lot_rounding(self):
        assert BTC.conform_quantity("0.000019", rounding="down") == D("0.00001")
        assert BTC.conform_quantity("0.000016", rounding="nearest") == D("0.00002")

    def test_below_minimum_rejected(self):
        with pytest.raises(ConformanceError, match="below the minimum"):
            BTC.conform_quantity("0.000009", rounding="down")  # rounds to 0
        with pytest.raises(ConformanceError, match="below the minimum 1000"):
            EURUSD.conform_quantity("999", rounding="down")  # rounds to 0 lots

    def test_fx_lot_and_minimum(self):
        assert EURUSD.conform_quantity(1000) == D(1000)
        assert EURUSD.conform_quantity(25000) == D(25000)
        with pytest.raises(ConformanceError):
            EURUSD.conform_quantity(1500)

    @pytest.mark.parametrize(
        ("quantity", "fragment"),
        [
            (0, "positive"),
            ("0", "positive"),
            (-1, "positive"),
            ("-0.00001", "positive"),
            (math.nan, "finite"),
            (math.inf, "finite"),
            (-math.inf, "finite"),
            ("nan", "finite"),
            (True, "bool"),
            (False, "bool"),
            ("one", "number"),
            (None, "number"),
        ],
    )
    def test_invalid_quantities(self, quantity, fragment):
        with pytest.raises(ConformanceError, match=fragment):
            BTC.conform_quantity(quantity)


# -- notional ------------------------------------------------------------------------
class TestNotional:
    def test_btcusdt_minimum_notional_5_usdt(self):
        # 61837.63 * 0.00008 = 4.9470104 < 5; 61837.63 * 0.00009 = 5.5653867
        with pytest.raises(ConformanceError) as info:
            BTC.check_notional(D("61837.63"), D("0.00008"))
        assert "4.9470104 USDT" in str(info.value) and "minimum 5 USDT" in str(info.value)
        BTC.check_notional(D("61837.63"), D("0.00009"))
        assert BTC.notional(D("61837.63"), D("0.00009")) == D("5.5653867")

    def test_exactly_the_minimum_passes(self):
        BTC.check_notional(D("50000.00"), D("0.0001"))  # 5.000000 USDT

    def test_es_notional_applies_the_multiplier_50(self):
        assert ES.multiplier == D(50)
        assert ES.notional(D("4750.25"), D(2)) == D("475025.00")
        assert SPY.notional(D("450.10"), D(10)) == D("4501.00")

    def test_conform_order_checks_notional_after_conforming(self):
        price, qty = BTC.conform_order("61837.635", "0.0001", side="buy", rounding="passive")
        assert (price, qty) == (D("61837.63"), D("0.0001"))
        with pytest.raises(ConformanceError, match="notional"):
            BTC.conform_order("61837.63", "0.00008", side="buy")


# -- lookup ----------------------------------------------------------------------------
class TestLookup:
    def test_bundled_ids(self):
        for instrument_id, instrument in BUNDLED_INSTRUMENTS.items():
            assert get_instrument(instrument_id) is instrument
            assert instrument.instrument_id == instrument_id

    def test_unknown_suggests_close_matches(self):
        with pytest.raises(UnknownInstrumentError) as info:
            get_instrument("BTCUSD.BINANCE")
        message = str(info.value)
        assert "'BTCUSD.BINANCE'" in message
        assert "did you mean" in message and "BTCUSDT.BINANCE" in message
        assert isinstance(info.value, KeyError)  # still catchable as a lookup failure
        assert not message.startswith('"')  # not quoted like a plain KeyError

    def test_unknown_without_close_match_lists_known_ids(self):
        with pytest.raises(UnknownInstrumentError, match="known: .*SPY.ARCX"):
            get_instrument("zzz")


# -- trading hours ---------------------------------------------------------------------
def _open(instrument, iso: str, **kw) -> bool:
    return instrument.trading_hours.is_open(to_ns(iso), **kw)


class TestTradingHours:
    @pytest.mark.parametrize(
        ("iso", "expected"),
        [
            ("2024-07-01T09:29:59-04:00", False),  # Monday, EDT
            ("2024-07-01T09:30:00-04:00", True),
            ("2024-07-01T13:30:00Z", True),  # 09:30 EDT
            ("2024-07-01T15:59:59.999-04:00", True),
            ("2024-07-01T16:00:00-04:00", False),
            ("2024-01-02T14:30:00Z", True),  # 09:30 EST
            ("2024-01-02T14:29:00Z", False),
            ("2024-01-02T20:59:00Z", True),  # 15:59 EST
            ("2024-01-02T21:00:00Z", False),
            ("2024-07-06T12:00:00-04:00", False),  # Saturday
            ("2024-07-07T12:00:00-04:00", False),  # Sunday
        ],
    )
    def test_us_equity_regular_session(self, iso, expected):
        assert _open(SPY, iso) is expected

    @pytest.mark.parametrize(
        ("iso", "expected"),
        [
            ("2024-07-01T04:00:00-04:00", True),
            ("2024-07-01T03:59:00-04:00", False),
            ("2024-07-01T19:59:00-04:00", True),
            ("2024-07-01T20:00:00-04:00", False),
        ],
    )
    def test_us_equity_extended_session(self, iso, expected):
        assert _open(SPY, iso, extended=True) is expected
        assert _open(SPY, iso) is False

    @pytest.mark.parametrize(
        ("iso", "expected"),
        [
            ("2024-07-07T16:59:59-05:00", False),  # Sunday before the open (CDT)
            ("2024-07-07T17:00:00-05:00", True),  # Sunday 17:00 Chicago: the week opens
            ("2024-07-07T22:00:00Z", True),  # same instant in UTC
            ("2024-07-08T03:00:00-05:00", True),  # Monday overnight
            ("2024-07-08T15:59:00-05:00", True),
            ("2024-07-08T16:00:00-05:00", False),  # daily halt 16:00-17:00
            ("2024-07-08T16:30:00-05:00", False),
            ("2024-07-08T17:00:00-05:00", True),  # reopens
            ("2024-07-11T23:00:00-05:00", True),  # Thursday evening session, into Friday
            ("2024-07-12T15:59:00-05:00", True),  # Friday before the close
            ("2024-07-12T16:00:00-05:00", False),  # Friday 16:00: closed for the weekend
            ("2024-07-12T17:30:00-05:00", False),  # no Friday evening session
            ("2024-07-13T12:00:00-05:00", False),  # Saturday
            ("2023-12-25T23:00:00Z", True),  # the ESH4 reopen in the bundled book: Mon 17:00 CST
            ("2023-12-25T22:59:59Z", False),
        ],
    )
    def test_cme_globex(self, iso, expected):
        assert _open(ES, iso) is expected

    @pytest.mark.parametrize(
        ("iso", "expected"),
        [
            ("2024-07-07T16:59:00-04:00", False),  # Sunday before 17:00 New York
            ("2024-07-07T17:00:00-04:00", True),
            ("2024-07-10T12:00:00-04:00", True),  # Wednesday
            ("2024-07-10T17:00:00-04:00", True),  # rollover instant: the next session opens
            ("2024-07-12T16:59:00-04:00", True),  # Friday
            ("2024-07-12T17:00:00-04:00", False),
            ("2024-07-13T12:00:00-04:00", False),  # Saturday
        ],
    )
    def test_fx(self, iso, expected):
        assert _open(EURUSD, iso) is expected

    @pytest.mark.parametrize(
        "iso", ["2024-07-13T12:00:00Z", "2024-07-14T03:00:00Z", "2023-12-25T00:00:00Z", "2024-02-29T23:59:59Z"]
    )
    def test_crypto_always_open(self, iso):
        assert _open(BTC, iso) is True

    def test_microsecond_boundaries(self):
        close = to_ns("2024-07-01T16:00:00-04:00")
        assert SPY.trading_hours.is_open(close - 1_000) is True
        assert SPY.trading_hours.is_open(close) is False

    def test_nanosecond_boundaries(self):
        hours = SPY.trading_hours
        opens, closes = to_ns("2024-07-01T09:30:00-04:00"), to_ns("2024-07-01T16:00:00-04:00")
        assert [hours.is_open(opens - 1), hours.is_open(opens), hours.is_open(closes - 1), hours.is_open(closes)] \
            == [False, True, True, False]


def test_numpy_scalars_convert_exactly():
    import numpy as np

    from tradebook.model.instruments import to_decimal

    assert to_decimal(np.float64(1.5), "x") == Decimal("1.5")
    assert to_decimal(np.float64(0.1), "x") == Decimal("0.1")
    assert to_decimal(np.int64(2**62 + 1), "x") == Decimal(2**62 + 1)  # never through float


# -- bounds: what the store's DECIMAL(38, 12) holds and grid arithmetic computes exactly ----------------
@pytest.mark.parametrize("instrument_id", sorted(BUNDLED_INSTRUMENTS))
def test_prices_and_quantities_beyond_the_bounds_are_a_conformance_error_never_a_decimal_signal(instrument_id):
    instrument = get_instrument(instrument_id)
    for value in (Decimal("1E+400"), Decimal("1E+30"), Decimal("1E+26"), 1e300, "1e40",
                  Decimal("-1E+400")):
        for conform in (instrument.conform_price, instrument.conform_quantity):
            with pytest.raises(ConformanceError, match="out of bounds|must be positive"):
                conform(value)
        with pytest.raises(ConformanceError, match="out of bounds|must be positive"):
            instrument.conform_price(value, rounding="nearest")
        with pytest.raises(ConformanceError, match="out of bounds|must be positive"):
            instrument.conform_quantity(value, rounding="down")


def test_the_bound_is_the_smaller_of_the_store_and_exact_grid_arithmetic():
    btc = get_instrument("BTCUSDT.BINANCE")  # tick 0.01, lot 0.00001
    assert btc.conform_price(Decimal("9" * 26)) == Decimal("9" * 26)  # 26 digits + 2 places: exact
    assert btc.conform_quantity(Decimal("9" * 23)) == Decimal("9" * 23)  # 23 + 5 places
    with pytest.raises(ConformanceError, match=r"quantity 1E\+23 is out of bounds: expected a number below 1E\+23 "
                                               r"in absolute value \(on the 0.00001 grid, exact to 28 digits; stored "
                                               r"as DECIMAL\(38, 12\): at most 26 digits before the point, 12 after\)"):
        btc.conform_quantity(Decimal("1E+23"))
    with pytest.raises(ConformanceError, match=r"price 1E\+26 is out of bounds: expected a number below 1E\+26 in "
                                               r"absolute value \(stored as DECIMAL"):
        btc.conform_price(Decimal("1E+26"))
