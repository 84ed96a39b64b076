"""Time in tradebook: int64 nanoseconds since the Unix epoch, UTC.

Naive datetimes are refused rather than assumed UTC: a naive local time silently
read as UTC shifts every quote by hours and no later check can see it.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from tradebook.errors import DataError

NS_PER_SECOND = 1_000_000_000
NS_PER_MINUTE = 60 * NS_PER_SECOND
NS_PER_DAY = 86_400 * NS_PER_SECOND

# Plausible range for market data and orders: 1970 .. 2100. It catches negative values and
# values beyond 2100 (e.g. ns multiplied again); seconds, ms or us read as ns land in 1970
# and need a check against the data's expected dates instead.
MIN_PLAUSIBLE_NS = 0
MAX_PLAUSIBLE_NS = 4_102_444_800 * NS_PER_SECOND  # 2100-01-01T00:00Z


def to_ns(value: str | dt.datetime | pd.Timestamp | int | np.integer) -> int:
    """Convert one timezone-aware instant to int64 UTC nanoseconds.

    Accepts an ISO-8601 string with ``Z`` or an offset, an aware ``datetime`` or
    ``Timestamp``, or an int already in nanoseconds. Naive values raise DataError.
    """
    if isinstance(value, bool):
        raise DataError(f"expected a timezone-aware instant, got the bool {value!r}")
    if isinstance(value, (int, np.integer)):
        ns = int(value)
    else:
        if isinstance(value, str):
            try:
                ts = pd.Timestamp(value)
            except ValueError as exc:
                raise DataError(f"cannot parse {value!r} as an ISO-8601 instant") from exc
        elif isinstance(value, (dt.datetime, pd.Timestamp)):
            ts = pd.Timestamp(value)
        else:
            raise DataError(f"expected an ISO-8601 string, aware datetime or int ns, got {type(value).__name__}")
        if ts.tzinfo is None:
            raise DataError(
                f"naive datetime {value!s}: expected a UTC offset or 'Z' (tradebook never guesses a time zone)"
            )
        ns = int(ts.tz_convert("UTC").as_unit("ns").value)
    check_ns_range(ns)
    return ns


def check_ns_range(ns: int, what: str = "timestamp") -> None:
    if not MIN_PLAUSIBLE_NS <= ns < MAX_PLAUSIBLE_NS:
        raise DataError(
            f"{what} {ns} is outside 1970..2100 in nanoseconds; was it seconds, ms or us instead of ns?"
        )


def ns_to_iso(ns: int) -> str:
    """ISO-8601 UTC with nanosecond precision and a Z suffix."""
    return pd.Timestamp(int(ns), unit="ns", tz="UTC").isoformat().replace("+00:00", "Z")


def now_ns() -> int:
    """Wall-clock time in int64 UTC nanoseconds."""
    import time

    return time.time_ns()
