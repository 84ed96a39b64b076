"""Exchange calendars: is an instrument's market open at a given nanosecond, holidays included.

``TradingHours.is_open`` knows weekdays and clock times only; the exchange calendars
(the ``exchange_calendars`` package) add holidays, early closes and the CME's
holiday sessions. The session refuses equity orders outside the regular session
unless extended hours are enabled; crypto (calendar ``24/7``) is always open.

``exchange_calendars`` is imported on first use: it costs ~0.3 s and ``import
tradebook`` stays light.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import lru_cache, wraps
from typing import Any, TypeVar

import pandas as pd

from tradebook.errors import ConfigError
from tradebook.model.instruments import Instrument, TradingHours
from tradebook.model.time import NS_PER_MINUTE


F = TypeVar("F", bound=Callable[..., Any])


def _quiet(function: F) -> F:
    # exchange_calendars reads tz-aware .values internally, which pandas 3 flags as
    # deprecated on every call; the results are right, the noise is not ours to fix
    @wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*values returning an ndarray that drops timezone")
            return function(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@lru_cache(maxsize=None)
@_quiet
def exchange_calendar(name: str) -> Any:
    """The ``exchange_calendars`` calendar called ``name`` (e.g. XNYS, CMES, 24/5, 24/7)."""
    import exchange_calendars as xc

    try:
        return xc.get_calendar(name)
    except xc.errors.InvalidCalendarName as exc:
        raise ConfigError(f"unknown exchange calendar {name!r}; expected one of exchange_calendars' names "
                          "such as XNYS, XNAS, CMES, 24/5, 24/7") from exc


def _timestamp(ts_ns: int) -> pd.Timestamp:
    return pd.Timestamp(int(ts_ns), unit="ns", tz="UTC")


def is_trading(instrument: Instrument, ts_ns: int, *, extended_hours: bool = False) -> bool:
    """True when ``instrument`` can be traded at ``ts_ns`` (UTC ns).

    Regular session from the exchange calendar (holidays, early closes). With
    ``extended_hours`` an equity can also trade between its extended open and close
    on a day the exchange is open (pre- and post-market).
    """
    hours = instrument.trading_hours
    if hours.always_open:
        return True  # crypto: asked once per order, answered without entering the warnings filter
    if not hours.calendar:
        return hours.is_open(ts_ns, extended=extended_hours)
    ts = int(ts_ns)
    # both: the calendar knows holidays, the instrument's hours know daily breaks the
    # calendar does not model (CME's 16:00-17:00 CT maintenance halt)
    if _calendar_open_at(hours.calendar, ts) and hours.is_open(ts):
        return True
    if extended_hours and hours.extended_open is not None and hours.extended_close is not None:
        return _extended_session_open(hours, ts)
    return False


def _calendar_open_at(name: str, ts_ns: int) -> bool:
    """Whether calendar ``name`` has its regular session open at ``ts_ns``; False outside its bounds.

    The calendar answers per minute (~20 us a question), so each minute is asked once.
    """
    first, last = _calendar_bounds_ns(name)
    return first <= ts_ns <= last and _open_on_minute(name, ts_ns - ts_ns % NS_PER_MINUTE)


@lru_cache(maxsize=None)
@_quiet
def _calendar_bounds_ns(name: str) -> tuple[int, int]:
    # calendars cover about twenty years back from today; outside that they raise
    calendar = exchange_calendar(name)
    return int(calendar.first_minute.value), int(calendar.last_minute.value)


@lru_cache(maxsize=1 << 16)  # a calendar and a minute: immutable inputs; 2^16 minutes are ~45 days
@_quiet
def _open_on_minute(name: str, minute_ns: int) -> bool:
    return bool(exchange_calendar(name).is_open_on_minute(_timestamp(minute_ns)))


@_quiet
def _extended_session_open(hours: TradingHours, ts_ns: int) -> bool:
    """Pre- or post-market: between the extended open and close on a day the exchange is open."""
    calendar = exchange_calendar(hours.calendar)
    moment = _timestamp(ts_ns)
    local = moment.tz_convert(hours.timezone)
    day = local.tz_localize(None).normalize()
    if not _within_bounds(calendar, moment) or not calendar.is_session(day):
        return False
    return hours.extended_open <= local.time() < hours.extended_close


@_quiet
def next_open_ns(instrument: Instrument, ts_ns: int) -> int:
    """The first nanosecond at or after ``ts_ns`` at which the regular session is open."""
    hours = instrument.trading_hours
    if hours.always_open or not hours.calendar:
        return int(ts_ns)
    calendar = exchange_calendar(hours.calendar)
    moment = _timestamp(ts_ns)
    if calendar.is_open_on_minute(moment.floor("min")):
        return int(ts_ns)
    return int(calendar.next_open(moment).value)


def _within_bounds(calendar: Any, moment: pd.Timestamp) -> bool:
    # calendars cover about twenty years back from today; outside that they raise
    return calendar.first_minute <= moment <= calendar.last_minute


@_quiet
def session_close_ns(instrument: Instrument, ts_ns: int) -> int | None:
    """The close of the regular session in force at ``ts_ns`` (None if closed or always open)."""
    hours = instrument.trading_hours
    if hours.always_open or not hours.calendar:
        return None
    calendar = exchange_calendar(hours.calendar)
    moment = _timestamp(ts_ns).floor("min")
    if not calendar.is_open_on_minute(moment):
        return None
    session = calendar.minute_to_session(moment)
    return int(calendar.session_close(session).value)


__all__ = ["exchange_calendar", "is_trading", "next_open_ns", "session_close_ns"]
