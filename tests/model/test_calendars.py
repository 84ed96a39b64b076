"""Exchange calendars: holidays, sessions, extended hours, 24/7."""

from __future__ import annotations

import pytest

from tradebook.errors import ConfigError
from tradebook.model import get_instrument, to_ns
from tradebook.model.calendars import exchange_calendar, is_trading, next_open_ns, session_close_ns


@pytest.mark.parametrize("instrument_id, when, regular, extended", [
    ("IBM.XNYS", "2013-10-07T14:00:00Z", True, True),  # Monday 10:00 New York
    ("IBM.XNYS", "2013-10-07T12:00:00Z", False, True),  # 08:00: pre-market
    ("IBM.XNYS", "2013-10-07T23:30:00Z", False, True),  # 19:30: post-market
    ("IBM.XNYS", "2013-10-08T00:30:00Z", False, False),  # 20:30: after the extended close
    ("IBM.XNYS", "2013-12-25T15:00:00Z", False, False),  # Christmas: closed all day
    ("IBM.XNYS", "2013-10-05T15:00:00Z", False, False),  # Saturday
    ("ESH4.GLBX", "2023-12-25T23:30:00Z", True, True),  # Globex reopened 17:00 CT on Christmas evening
    ("ESH4.GLBX", "2023-12-25T15:00:00Z", False, False),  # Christmas day: closed
    ("ESH4.GLBX", "2024-07-01T21:30:00Z", False, False),  # the daily maintenance break
    ("BTCUSDT.BINANCE", "2023-12-25T15:00:00Z", True, True),  # 24/7
    ("EURUSD.DUKASCOPY", "2026-07-11T12:00:00Z", False, False),  # Saturday: FX is 24/5
])
def test_is_trading(instrument_id, when, regular, extended):
    instrument = get_instrument(instrument_id)
    assert is_trading(instrument, to_ns(when)) is regular
    assert is_trading(instrument, to_ns(when), extended_hours=True) is extended


def test_next_open_and_close():
    ibm = get_instrument("IBM.XNYS")
    assert next_open_ns(ibm, to_ns("2013-12-25T15:00:00Z")) == to_ns("2013-12-26T14:30:00Z")
    assert next_open_ns(ibm, to_ns("2013-10-07T14:00:00Z")) == to_ns("2013-10-07T14:00:00Z")
    assert session_close_ns(ibm, to_ns("2013-10-07T14:00:00Z")) == to_ns("2013-10-07T20:00:00Z")
    assert session_close_ns(ibm, to_ns("2013-11-29T15:00:00Z")) == to_ns("2013-11-29T18:00:00Z")  # early close
    assert session_close_ns(get_instrument("BTCUSDT.BINANCE"), to_ns("2013-10-07T14:00:00Z")) is None


def test_unknown_calendar_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown exchange calendar 'XXXX'"):
        exchange_calendar("XXXX")


def test_regular_session_boundaries_to_the_nanosecond():
    ibm = get_instrument("IBM.XNYS")  # 2013-10-07: 09:30-16:00 New York = 13:30-20:00Z
    open_ns, close_ns = to_ns("2013-10-07T13:30:00Z"), to_ns("2013-10-07T20:00:00Z")
    assert is_trading(ibm, open_ns - 1) is False
    assert is_trading(ibm, open_ns) is True
    assert is_trading(ibm, close_ns - 1) is True
    assert is_trading(ibm, close_ns) is False
    assert is_trading(ibm, close_ns, extended_hours=True) is True  # post-market
