"""What a session decides and keeps: its states, signal decisions with their codes, the view a strategy
reads, and the bookkeeping of algo slices and deferred orders (shared by the parts of
:class:`tradebook.session.Session`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any

from tradebook.model.orders import OrderIntent, Signal
from tradebook.model.time import NS_PER_SECOND

_NS = NS_PER_SECOND
VOLATILITY_WINDOW = 60  # batch-end mids kept per instrument for the volatility that widens offsets
MAX_DEFERRED_STEPS = 30  # a deferred order is retried this many steps, then rejected


# A signal may be stamped this far ahead of session time (a strategy's clock read a moment
# after the step's end); further ahead it comes from the future and is refused.
SIGNAL_CLOCK_TOLERANCE_NS = 1 * NS_PER_SECOND


class SessionState(StrEnum):
    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    FINISHED = "finished"  # the replay feed ran out
    STOPPED = "stopped"
    FAILED = "failed"


class DecisionOutcome(StrEnum):
    """What became of a signal (the values are the words the decisions frame always showed)."""

    SENT = "sent"
    NO_ORDER = "no order"
    REJECTED = "rejected"
    DEFERRED = "deferred"
    SCHEDULED = "scheduled"
    NOT_SENT = "not sent"  # its order was durable but never reached the venue (see DecisionCode.NEVER_REACHED_VENUE)
    STOPPED = "stopped"  # an algo parent whose remaining slices were cancelled


class DecisionCode(StrEnum):
    """Why, as a code a program can branch on (``Decision.reason`` is the prose for people)."""

    ROUTED = "routed"  # sized, routed and passed to the order manager
    SIZED_TO_NOTHING = "sized_to_nothing"
    BAD_INPUT = "bad_input"  # a strategy's malformed signal
    NO_USABLE_QUOTE = "no_usable_quote"  # missing, crossed or stale reference quote
    MARKET_HOURS = "market_hours"
    REFUSED = "refused"  # every order it produced was refused (risk, kill switch, breaker)
    SPREAD_DEFERRED = "spread_deferred"
    ALGO_SCHEDULED = "algo_scheduled"
    RECOVERED = "recovered"  # decided again after a restart from orders already durable
    SIGNAL_ID_CONFLICT = "signal_id_conflict"  # the id was decided before for a different signal
    SIGNAL_FROM_FUTURE = "signal_from_future"
    SIGNAL_TOO_OLD = "signal_too_old"
    NEVER_REACHED_VENUE = "never_reached_venue"
    SLICE_REFUSED = "slice_refused"  # an algo slice was refused: the parent's remaining slices are cancelled


@dataclass(frozen=True)
class Decision:
    """What became of one signal (also of signals that produced no order)."""

    ts_ns: int
    strategy_id: str
    signal_id: str
    instrument_id: str
    outcome: str  # a DecisionOutcome
    reason: str
    client_order_ids: tuple[str, ...] = ()
    code: str = ""  # a DecisionCode ("" in records written before codes)

    def __repr__(self) -> str:
        orders = f" -> {', '.join(c[:8] + '..' for c in self.client_order_ids)}" if self.client_order_ids else ""
        code = f" [{self.code}]" if self.code else ""
        return (f"<Decision {self.strategy_id}/{self.signal_id} {self.instrument_id} {self.outcome}{code}"
                f"{orders}: {self.reason}>")


@dataclass
class SessionView:
    """What a strategy may read while deciding: time, quotes, positions, equity (read-only by convention)."""

    now_ns: int
    quotes: Mapping[str, tuple[int, float, float, float, float]]
    positions: Mapping[str, Decimal]
    equity: Decimal
    working_orders: int


@dataclass
class ScheduledSlice:
    """An algo slice not released yet: due at ``release_ts_ns``, priced when it goes."""

    release_ts_ns: int
    parent: Any  # algos.ParentOrder
    child: Any  # algos.ScheduledChild
    signal: Signal


@dataclass
class WatchedSlice:
    """An algo slice at the venue, watched so that a rejected or unfilled one is retried."""

    intent: OrderIntent
    signal: Signal | None
    released_ts_ns: int
    interval_s: float
    attempt: int = 0  # retries so far
    cancelling: bool = False  # cancelled for a retry; the retry goes once the venue confirms


class AlgoStatus(StrEnum):
    """Where an algo parent (TWAP/VWAP) stands; :meth:`Session.parents` shows it."""

    WORKING = "working"  # slices still due or working at the venue
    DONE = "done"  # every slice released and finished
    STOPPED = "stopped"  # a slice was refused: the slices not yet released were cancelled (see Session._stop_algo)


@dataclass
class AlgoParent:
    """An algo parent the session works, since ``ts_ns``; ``stopped_reason`` once a refused slice stopped it."""

    parent: Any  # algos.ParentOrder
    ts_ns: int
    stopped_reason: str | None = None


@dataclass
class DeferredOrder:
    """An order the spread filter held back, tried again at each step up to MAX_DEFERRED_STEPS."""

    intent: OrderIntent
    signal: Signal | None  # None: an intent submitted as it was
    first_ts_ns: int
    reason: str  # why the spread filter held it
    attempts: int = 0


def attempt_number(intent_id: str, marker: str) -> int:
    """n of an intent id ending ``:<marker>:<n>`` (a retry or a resend), else 0."""
    head, sep, tail = intent_id.rpartition(f":{marker}:")
    return int(tail) if sep and tail.isdigit() else 0
