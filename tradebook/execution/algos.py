"""Execution algorithms as parent and child orders, and the retry policy for children.

A :class:`ParentOrder` is an order the router decided not to send in one piece: its
intent (the whole quantity, never sent itself) and a schedule. :func:`child_orders`
cuts it into :class:`ScheduledChild` slices (a release time and a quantity in whole
lots); at release time the router prices each one from the quote of that moment
(:meth:`tradebook.execution.router.OrderRouter.price_child`), so a slice is priced
against the market it meets, not the one the parent saw.

- :class:`TwapSchedule`: equal slices at a fixed interval (5 slices 60 s apart by default).
- :class:`VwapSchedule`: one slice per minute over 5 to 15 minutes, each sized by the
  share of volume that minute of day usually carries (:func:`intraday_volume_profile`,
  from the instrument's historical minute trade bars, in the exchange's time zone).

Quantities: lots are allocated by floor, and the lots the floors leave over go one
each to the last slices (the issue's rule; it keeps early slices no larger than their
share). A slice below the instrument's minimum (minimum quantity, or the minimum
notional at the parent's reference price) is never sent: it is merged into the next
slice (into the previous one at the end), so the parent runs behind schedule rather
than ahead of it. The children always sum exactly to the parent quantity.

Retries (:class:`RetryPolicy`): a child that the venue rejected, or that is *unfilled*
-- still working (accepted or partially filled) when its slice interval has elapsed
since it was released (``RetryPolicy.unfilled_after_s`` for an order outside an algo)
-- is cancelled by the session for its remainder and re-sent one ``step_ticks`` more
aggressive than the attempt before, never beyond the opposite touch (a buy is capped at
the ask, a sell at the bid: at the cap the order takes). After ``max_retries`` the
policy returns an :class:`Escalation` and the session raises an alert instead.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from decimal import ROUND_CEILING, Decimal
from fractions import Fraction

import numpy as np
import pandas as pd

from tradebook.errors import ConfigError, ConformanceError, DataError, OrderError
from tradebook.model.instruments import Instrument, Side
from tradebook.model.orders import OrderIntent, OrderType
from tradebook.model.quotes import QuoteSnapshot
from tradebook.model.time import NS_PER_SECOND, check_ns_range

NS_PER_MINUTE = 60 * NS_PER_SECOND
MINUTES_PER_DAY = 1440
VWAP_MIN_MINUTES = 5
VWAP_MAX_MINUTES = 15


# -- schedules --------------------------------------------------------------------------------
@dataclass(frozen=True)
class TwapSchedule:
    """``slices`` equal slices, ``interval_s`` apart; the first is released at the start."""

    slices: int = 5
    interval_s: float = 60.0

    def __post_init__(self) -> None:
        if isinstance(self.slices, bool) or not isinstance(self.slices, int) or self.slices < 1:
            raise ConfigError(f"TWAP slices must be a positive integer, got {self.slices!r}")
        if not _positive_finite(self.interval_s):
            raise ConfigError(f"TWAP interval_s must be a positive number of seconds, got {self.interval_s!r}")

    @property
    def name(self) -> str:
        return "twap"

    def weights(self, start_ts_ns: int, instrument: Instrument) -> list[Fraction]:
        return [Fraction(1, self.slices)] * self.slices  # exact: equal slices must not lose a lot to float error

    def release_times(self, start_ts_ns: int) -> list[int]:
        step = round(self.interval_s * NS_PER_SECOND)
        return [start_ts_ns + i * step for i in range(self.slices)]


@dataclass(frozen=True)
class VwapSchedule:
    """One slice a minute for ``duration_minutes`` (5 to 15), paced by an intraday volume profile.

    ``profile``: share of a session's volume per minute of day (int 0..1439, exchange
    time zone), as :func:`intraday_volume_profile` returns; minutes missing from it
    carry no volume. Only the window's minutes matter; their weights are rescaled to 1.
    """

    duration_minutes: int
    profile: pd.Series = field(compare=False, hash=False, repr=False)
    # the profile as a per-minute tuple: comparable, hashable, and immune to later edits of the Series
    minute_weights: tuple[float, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        d = self.duration_minutes
        if isinstance(d, bool) or not isinstance(d, int) or not VWAP_MIN_MINUTES <= d <= VWAP_MAX_MINUTES:
            raise ConfigError(f"VWAP duration_minutes must be an integer in [{VWAP_MIN_MINUTES}, "
                              f"{VWAP_MAX_MINUTES}], got {d!r}")
        if not isinstance(self.profile, pd.Series) or self.profile.empty:
            raise ConfigError("VWAP profile must be a non-empty pandas Series of volume shares by minute of day")
        values = pd.to_numeric(self.profile, errors="coerce").to_numpy(dtype="float64")
        if not np.isfinite(values).all() or (values < 0).any() or values.sum() <= 0:
            raise ConfigError("VWAP profile values must be finite, non-negative shares with a positive total")
        weights = [0.0] * MINUTES_PER_DAY
        for minute, value in zip(self.profile.index, values, strict=True):
            if isinstance(minute, bool) or not isinstance(minute, (int, np.integer)) \
                    or not 0 <= int(minute) < MINUTES_PER_DAY:
                raise ConfigError(f"VWAP profile index must be minutes of day 0..1439, got {minute!r}")
            weights[int(minute)] += float(value)
        object.__setattr__(self, "minute_weights", tuple(weights))

    @property
    def name(self) -> str:
        return "vwap"

    @property
    def slices(self) -> int:
        return self.duration_minutes

    @property
    def interval_s(self) -> float:
        return 60.0

    def window_minutes(self, start_ts_ns: int, instrument: Instrument) -> list[int]:
        """Minutes of day (exchange time) of the window's slices, starting with the minute holding start."""
        local = pd.Timestamp(start_ts_ns, unit="ns", tz="UTC").tz_convert(instrument.trading_hours.timezone)
        first = local.hour * 60 + local.minute
        return [(first + i) % MINUTES_PER_DAY for i in range(self.duration_minutes)]

    def weights(self, start_ts_ns: int, instrument: Instrument) -> list[float]:
        raw = [self.minute_weights[m] for m in self.window_minutes(start_ts_ns, instrument)]
        total = sum(raw)
        if total <= 0:
            minutes = self.window_minutes(start_ts_ns, instrument)
            raise DataError(
                f"the volume profile has no volume in the VWAP window (minutes of day {minutes[0]}..{minutes[-1]} "
                f"in {instrument.trading_hours.timezone}); start the order inside the session"
            )
        return [w / total for w in raw]

    def release_times(self, start_ts_ns: int) -> list[int]:
        return [start_ts_ns + i * NS_PER_MINUTE for i in range(self.duration_minutes)]


Schedule = TwapSchedule | VwapSchedule


def intraday_volume_profile(bars: pd.DataFrame, instrument: Instrument, *, extended: bool = False) -> pd.Series:
    """Average share of a session's volume traded in each minute of day, in the exchange's time zone.

    ``bars``: minute trade bars with ``ts_ns`` (bar start, int64 UTC ns) and ``volume``.
    Only minutes inside the instrument's session count (the extended session when
    ``extended``; all 1,440 for a market that never closes). Each session day is
    weighted equally (the shares are computed per day, then averaged), so one heavy
    day does not shape the profile alone. A session minute without a bar traded
    nothing and gets share 0. Returns a Series indexed by minute of day (int) summing to 1.
    """
    for column in ("ts_ns", "volume"):
        if column not in bars.columns:
            raise DataError(f"minute bars need columns ts_ns and volume; {column!r} is missing "
                            f"(got {list(bars.columns)})")
    if not pd.api.types.is_integer_dtype(bars["ts_ns"]):
        raise DataError(f"ts_ns must be int64 UTC nanoseconds, got dtype {bars['ts_ns'].dtype}")
    volume = pd.to_numeric(bars["volume"], errors="coerce").to_numpy(dtype="float64")
    bad = ~np.isfinite(volume) | (volume < 0)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"volume must be finite and non-negative; row {row} has {bars['volume'].iloc[row]!r}")
    hours = instrument.trading_hours
    local = pd.to_datetime(bars["ts_ns"].to_numpy(dtype="int64"), unit="ns", utc=True).tz_convert(hours.timezone)
    minute = np.asarray(local.hour * 60 + local.minute, dtype="int64")
    session = _session_minutes(instrument, extended=extended)
    in_session = np.isin(minute, session)
    if not in_session.any():
        raise DataError(f"no minute bar of {instrument.instrument_id} falls in its session "
                        f"({hours.timezone}); are these the right bars?")
    # a session day starts at the open: an overnight session (CME 17:00-16:00) is one day, not two
    opens = session[0]
    day = (local - pd.Timedelta(minutes=int(opens))).normalize()
    frame = pd.DataFrame({"day": np.asarray(day)[in_session], "minute": minute[in_session],
                          "volume": volume[in_session]})
    per_day = frame.pivot_table(index="day", columns="minute", values="volume", aggfunc="sum", fill_value=0.0)
    per_day = per_day.reindex(columns=session, fill_value=0.0)
    totals = per_day.sum(axis=1)
    per_day = per_day[totals > 0]
    if per_day.empty:
        raise DataError(f"the minute bars of {instrument.instrument_id} carry no volume in the session")
    shares = per_day.div(per_day.sum(axis=1), axis=0).mean(axis=0)
    shares = shares / shares.sum()
    shares.index = pd.Index(np.asarray(shares.index, dtype="int64"), name="minute")
    shares.name = "volume_share"
    return shares.sort_index()


def _session_minutes(instrument: Instrument, *, extended: bool) -> np.ndarray:
    """Minutes of day in the session, in session order (an overnight session starts before midnight)."""
    hours = instrument.trading_hours
    if hours.always_open:
        return np.arange(MINUTES_PER_DAY, dtype="int64")
    opens, closes = hours.open, hours.close
    if extended and hours.extended_open is not None and hours.extended_close is not None:
        opens, closes = hours.extended_open, hours.extended_close
    start, end = opens.hour * 60 + opens.minute, closes.hour * 60 + closes.minute
    if end > start:
        return np.arange(start, end, dtype="int64")
    return np.concatenate([np.arange(start, MINUTES_PER_DAY), np.arange(0, end)]).astype("int64")


# -- parent and children -----------------------------------------------------------------------
@dataclass(frozen=True)
class ParentOrder:
    """An order worked by an algorithm: the whole quantity and how it is sliced.

    ``intent`` is the parent's record (id ``strategy:signal``); it is never sent.
    ``reference_price`` (the mid when the router made the parent) turns the minimum
    notional into a minimum child quantity.
    """

    intent: OrderIntent
    schedule: Schedule
    instrument: Instrument
    reference_price: Decimal | None = None

    def __post_init__(self) -> None:
        if self.intent.instrument_id != self.instrument.instrument_id:
            raise OrderError(f"parent {self.intent.intent_id} is for {self.intent.instrument_id}, "
                             f"but the instrument given is {self.instrument.instrument_id}")
        self.instrument.conform_quantity(self.intent.quantity)
        ref = self.reference_price
        if ref is not None and not (isinstance(ref, Decimal) and ref.is_finite() and ref > 0):
            raise OrderError(f"parent {self.intent.intent_id}: reference price must be a positive Decimal, "
                             f"got {ref!r}")

    @property
    def parent_id(self) -> str:
        return self.intent.intent_id

    def child_id(self, index: int) -> str:
        return f"{self.intent.intent_id}:slice:{index}"

    def min_child_quantity(self) -> Decimal:
        """The smallest slice the venue would take: minimum quantity, one lot, and the minimum notional."""
        inst = self.instrument
        smallest = max(inst.min_quantity, inst.lot_size)
        if self.reference_price is not None and inst.min_notional > 0:
            lots = (inst.min_notional / (self.reference_price * inst.multiplier * inst.lot_size))
            smallest = max(smallest, lots.to_integral_value(rounding=ROUND_CEILING) * inst.lot_size)
        return smallest


@dataclass(frozen=True)
class ScheduledChild:
    """One slice: released (priced and sent) at ``release_ts_ns``. ``index`` is 1-based and names the id."""

    index: int
    release_ts_ns: int
    quantity: Decimal


def child_orders(parent: ParentOrder, start_ts_ns: int) -> list[ScheduledChild]:
    """The parent's slices from ``start_ts_ns``: whole lots, summing exactly to the parent quantity.

    Slice ``index`` keeps its place in the schedule even when a neighbour was merged
    away, so child ids (``parent:slice:n``) are stable for the same parent and start.
    """
    check_ns_range(start_ts_ns, "algo start")
    inst = parent.instrument
    total_lots = int(parent.intent.quantity / inst.lot_size)
    weights = parent.schedule.weights(start_ts_ns, inst)
    times = parent.schedule.release_times(start_ts_ns)
    lots = [min(_floor_share(w, total_lots), total_lots) for w in weights]
    # the lots the floors leave over go one each to the last slices that carry volume
    leftover = total_lots - sum(lots)
    carriers = [i for i, w in enumerate(weights) if w > 0]
    for i in reversed(carriers):
        if leftover <= 0:
            break
        lots[i] += 1
        leftover -= 1
    if leftover != 0 or sum(lots) != total_lots:  # cannot happen: floors lose less than one lot per slice
        raise OrderError(f"{parent.parent_id}: slicing lost {leftover} lots")
    min_lots = int((parent.min_child_quantity() / inst.lot_size).to_integral_value(rounding=ROUND_CEILING))
    # merge slices below the minimum forward (behind schedule, never ahead of it)
    merged: list[list[int]] = []  # [index, lots]
    carry = 0
    for i, n in enumerate(lots):
        n += carry
        carry = 0
        if n == 0:
            continue
        if n < min_lots:
            carry = n
            continue
        merged.append([i, n])
    if carry:
        if merged:
            merged[-1][1] += carry
        else:  # the whole parent is one slice below the minimum: the router refuses such parents
            raise ConformanceError(f"{parent.parent_id}: quantity {parent.intent.quantity} is below the minimum "
                                   f"child size {parent.min_child_quantity()} of {inst.instrument_id}")
    return [ScheduledChild(index=i + 1, release_ts_ns=times[i], quantity=(n * inst.lot_size).quantize(inst.lot_size))
            for i, n in merged]


# -- retries -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Escalation:
    """Retries are exhausted: the session raises an alert for ``intent_id`` (the original, un-suffixed id)."""

    intent_id: str
    attempts: int
    reason: str


_RETRY_SUFFIX = re.compile(r":retry:\d+$")


@dataclass(frozen=True)
class RetryPolicy:
    """Re-price a rejected or unfilled order toward the market, at most ``max_retries`` times.

    ``unfilled_after_s``: how long an order outside an algo may work before it counts
    as unfilled (an algo child counts as unfilled after its slice interval).
    """

    max_retries: int = 3
    step_ticks: int = 1
    unfilled_after_s: float = 60.0

    def __post_init__(self) -> None:
        for name in ("max_retries", "step_ticks"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "max_retries" else 1):
                raise ConfigError(f"RetryPolicy.{name} must be an integer >= {0 if name == 'max_retries' else 1}, "
                                  f"got {value!r}")
        if not _positive_finite(self.unfilled_after_s):
            raise ConfigError(f"RetryPolicy.unfilled_after_s must be positive seconds, got {self.unfilled_after_s!r}")

    def is_unfilled(self, released_ts_ns: int, now_ts_ns: int, *, interval_s: float | None = None) -> bool:
        """Whether an order still working at ``now_ts_ns`` has outlived its slice interval (or ``unfilled_after_s``)."""
        wait = self.unfilled_after_s if interval_s is None else interval_s
        return now_ts_ns - released_ts_ns >= round(wait * NS_PER_SECOND)

    def retry(
        self,
        intent: OrderIntent,
        attempt: int,
        quote: QuoteSnapshot,
        ts_ns: int,
        *,
        instrument: Instrument,
        quantity: Decimal | None = None,
        reason: str = "unfilled",
    ) -> OrderIntent | Escalation:
        """The ``attempt``-th retry (1-based) of ``intent``, the attempt that failed, or an Escalation.

        A limit is re-priced from the previous attempt's price (or from our own touch if
        the market has moved away from it) ``step_ticks`` more aggressive, capped at the
        opposite touch. Other order types are re-sent as they were. ``quantity``: what
        is left to do (the remainder after partial fills); the intent's by default.
        The id is the original id plus ``:retry:{attempt}``, so a retry is a new client
        order id and the same retry sent twice is the same one.
        """
        if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
            raise OrderError(f"retry attempt must be an integer >= 1, got {attempt!r}")
        check_ns_range(ts_ns, "retry time")
        base_id = _RETRY_SUFFIX.sub("", intent.intent_id)
        if attempt > self.max_retries:
            return Escalation(intent_id=base_id, attempts=attempt - 1,
                              reason=f"{reason} after {attempt - 1} retries (max {self.max_retries})")
        if intent.instrument_id != instrument.instrument_id or quote.instrument_id != instrument.instrument_id:
            raise DataError(f"retry of {base_id}: intent {intent.instrument_id}, quote {quote.instrument_id} and "
                            f"instrument {instrument.instrument_id} must be the same")
        qty = instrument.conform_quantity(intent.quantity if quantity is None else quantity)
        if qty > intent.quantity:
            raise OrderError(f"retry of {base_id}: quantity {qty} exceeds the order's {intent.quantity}")
        changes: dict = {}
        if intent.order_type is OrderType.LIMIT:
            if intent.limit_price is None:
                raise OrderError(f"retry of {base_id}: a limit order without a limit price")
            changes["limit_price"] = self._reprice(intent.side, intent.limit_price, quote, instrument)
        instrument.check_notional(changes.get("limit_price", quote.mid), qty)
        return replace(
            intent,
            intent_id=f"{base_id}:retry:{attempt}",
            quantity=qty,
            ts_ns=ts_ns,
            parent_id=intent.parent_id or base_id,
            reason=f"retry {attempt}/{self.max_retries} of {base_id} ({reason})",
            **changes,
        )

    def _reprice(self, side: Side, previous: Decimal, quote: QuoteSnapshot, instrument: Instrument) -> Decimal:
        if Side(side) is Side.BUY:
            anchor = min(max(previous, quote.bid), quote.ask)
            price = min(anchor + self.step_ticks * instrument.tick_for(anchor), quote.ask)
        else:
            anchor = max(min(previous, quote.ask), quote.bid)
            price = max(anchor - self.step_ticks * instrument.tick_for(anchor), quote.bid)
        return instrument.conform_price(price, rounding="passive", side=side)


def _floor_share(weight: Fraction | float, total_lots: int) -> int:
    if isinstance(weight, Fraction):
        return math.floor(weight * total_lots)
    share = weight * total_lots
    return math.floor(share + 1e-9 * max(1.0, share))  # a float share of exactly k lots must not floor to k-1


def _positive_finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
