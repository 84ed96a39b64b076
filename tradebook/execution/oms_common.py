"""What the parts of the order manager share: its constants, its alerts and reports, and the book it posts fills to.

The order manager (:mod:`tradebook.execution.oms`) is one class assembled from parts, one job
each: checks (:mod:`~tradebook.execution.oms_checks`), venue failures
(:mod:`~tradebook.execution.oms_failures`), the kill switch (:mod:`~tradebook.execution.oms_flatten`),
views (:mod:`~tradebook.execution.oms_views`), the copy into the store
(:mod:`~tradebook.execution.oms_flush`), journal replay (:mod:`~tradebook.execution.oms_replay`)
and reconciliation (:mod:`~tradebook.execution.oms_reconcile`).

Positions are the caller's: the order manager posts each fill to a :class:`PositionBook`
(the session passes its :class:`tradebook.portfolio.Portfolio`) and reads back only what it
needs to size closing orders, value new ones and copy positions into the store.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from tradebook.model.instruments import Instrument, Side
from tradebook.model.orders import (
    Fill,
    Order,
    OrderEventType,
    OrderIntent,
    OrderStatus,
    OrderType,
    TERMINAL_STATUSES,
    TimeInForce,
)

E, S = OrderEventType, OrderStatus
UNKNOWN_STATE_STATUSES = frozenset({S.PENDING, S.SUBMITTED, S.PENDING_CANCEL, S.PENDING_REPLACE, S.UNRESOLVED})
DEFAULT_NOT_SENT_RETRIES = 2  # a send that certainly did not reach the venue is tried again this often
DEFAULT_NOT_SENT_BACKOFF_S = 0.05  # times the attempt number, between those tries
RECONCILIATION_STRATEGY = "_reconciliation"  # positions adopted from the venue are booked here
DEFAULT_FLUSH_INTERVAL_MS = 200
DEFAULT_FLUSH_BATCH_RECORDS = 256  # this many records waiting at a flush tick: sustained flow, batch more
DEFAULT_FLUSH_QUIET_MS = 5  # no order-path record for this long: the burst of orders is over, flush now
DEFAULT_FLUSH_MAX_LAG_MS = 5_000  # under sustained flow, the store is at most this far behind the journal
# Which journal records wait for fdatasync. Intents (before they are sent) and fills (before
# they move a position) always do. Acks, cancel/replace requests and answers need not: one
# lost in a power failure leaves its order in an older state that reconcile() resolves from
# the venue, and a kill -9 loses nothing written. "all" syncs every record.
SYNC_POLICIES = frozenset({"intents_and_fills", "all"})
DEFAULT_FILL_LOOKBACK_NS = 300 * 1_000_000_000  # venue clocks differ from ours; ask for fills a bit earlier

ORDER_TYPES = frozenset(OrderType)
TIMES_IN_FORCE = frozenset(TimeInForce)
FILL_FIELDS = tuple(f.name for f in dataclasses.fields(Fill))
# enum members read on the order path, as module constants: on Python 3.11 ``E.FILLED`` is a
# descriptor call on the enum class (~70 ns), paid several times per order
SIDES = (Side.BUY, Side.SELL)
MARKET = OrderType.MARKET
LIMIT_TYPES = (OrderType.LIMIT, OrderType.STOP_LIMIT)
STOP_TYPES = (OrderType.STOP, OrderType.STOP_LIMIT)
SUBMITTED_EVENT, REJECTED_EVENT, REPLACED_EVENT = E.SUBMITTED, E.REJECTED, E.REPLACED
REPLACE_REQUESTED, REPLACE_REJECTED = E.REPLACE_REQUESTED, E.REPLACE_REJECTED
REPLACE_ANSWERS = (REPLACED_EVENT, REPLACE_REJECTED)
OUTCOME_UNKNOWN = E.OUTCOME_UNKNOWN
PENDING = S.PENDING
DONE = TERMINAL_STATUSES


NEVER_REACHED_VENUE_REASON = "never reached the venue"
# the intent id of the protective stop an entry with ``stop_loss`` gets once filled: "<entry intent id>:stop"
PROTECTIVE_STOP_SUFFIX = ":stop"


@dataclass(frozen=True)
class Alert:
    """Something a human should look at: a reconciliation mismatch, an orphan event, a failed send."""

    ts_ns: int
    kind: str
    message: str


@dataclass(frozen=True)
class RecoveryReport:
    orders: int
    fills: int
    unresolved: tuple[str, ...]  # client order ids whose state is unknown until reconciled
    orphans: int
    records_flushed: int


OrderListener = Callable[[Order], None]
FillListener = Callable[[Fill, Order], None]
AlertListener = Callable[["Alert"], None]
FlushListener = Callable[[str, int, int], None]  # (journal name, position now in the store, records written)


# How venues word the refusal of a client order id they already hold (the paper venue,
# Binance -2010 "Duplicate order sent.", Alpaca 422 "client_order_id must be unique").
DUPLICATE_REASON = "duplicate client order id"


class BookedPosition(Protocol):
    """One position as a :class:`PositionBook` holds it (what the store's ``positions`` row needs)."""

    account_id: str
    strategy_id: str
    instrument_id: str
    quantity: Decimal
    avg_price: Decimal
    realised_pnl: Decimal
    fees: Decimal
    ts_last_ns: int


class PositionBook(Protocol):
    """Where the order manager books fills, and what it reads back (``tradebook.portfolio.Portfolio`` is one)."""

    def apply_fill(self, fill: Fill, instrument: Instrument, account_id: str, strategy_id: str) -> bool: ...

    def position(self, account_id: str, strategy_id: str, instrument_id: str) -> BookedPosition | None: ...

    def positions(self) -> list[BookedPosition]: ...

    def net_positions(self, account_id: str | None = None) -> dict[tuple[str, str], Decimal]: ...

    def last_price(self, instrument_id: str) -> Decimal | None: ...


def protective_stop(entry: Order, ts_ns: int) -> OrderIntent:
    """The reduce-only stop an entry with ``stop_loss`` gets once it is done filling, for what it filled."""
    intent = entry.intent
    return OrderIntent(
        intent_id=f"{intent.intent_id}{PROTECTIVE_STOP_SUFFIX}", strategy_id=intent.strategy_id,
        account_id=intent.account_id,
        instrument_id=intent.instrument_id, side=Side.SELL if intent.side == Side.BUY else Side.BUY,
        quantity=entry.filled_qty, order_type=OrderType.STOP, time_in_force=TimeInForce.GTC, ts_ns=ts_ns,
        stop_price=intent.stop_loss, parent_id=intent.intent_id, reduce_only=True,
        reason=f"stop-loss of {intent.intent_id}")
