"""The order manager: write-ahead, idempotent, one append-only event log.

The one rule: **nothing reaches a venue that is not durable on disk first.** Every
intent is appended to the write-ahead :class:`~tradebook.store.journal.Journal`
(``fdatasync``) before :meth:`VenuePort.submit` is called, and every event the venue
sends back (acks, fills, cancels) is journaled before it changes an order or the
portfolio; fills are fdatasync'd before they move a position (see ``SYNC_POLICIES``
for why acks need not wait for the disk). The journal is the source of truth; DuckDB
is a copy written in batches by :meth:`OrderManager.flush` (explicitly, or from a
background thread every ``flush_interval_ms``), never on the hot path: a single DuckDB
insert costs more than the whole order path may take. A flush hands DuckDB the
journal's own bytes to parse, copied from the journal file in the kernel (the order
path keeps no records in memory), and DuckDB fills the tables with set-based inserts
on one core with the GIL released. An order a venue event finishes carries its final
row on that record; Python builds rows only for the other orders the batch touched
(mostly working ones) and for the positions it moved. Under sustained flow
(``flush_batch_records`` or more waiting at a tick) the background flush waits for
a quiet moment (no journal record for ``flush_quiet_ms``) or until its oldest record
is ``flush_max_lag_ms`` old: every
fdatasync of the order path also flushes what DuckDB wrote (this disk has a write-back
cache and no FUA), so orders overlapping a DuckDB commit wait; rarer, bigger flushes
measured a lower p99 than frequent small ones. Sparse flow still flushes every tick. A
flush first makes the journal durable up to what it copies, so the store is never
ahead of the journal, even after a power loss.

Batches: :meth:`on_events` journals a burst of venue events with one write and at most
one fdatasync before any applies; :meth:`stage` and :meth:`send_staged` do the same for
a step of orders (a replay's strategy step), sent to the venue in one call.

Idempotence: the client order id derives from the intent id, and the manager refuses
to send an intent whose client order id it already knows (in memory or from the
journal), returning the existing order instead. A re-run notebook cell sends nothing.

Crash recovery: constructing a manager replays its journal (no venue calls) and so
rebuilds orders, fills and the portfolio exactly; :meth:`OrderManager.recover` then
copies into DuckDB what it lacks. Orders whose last journaled state is ``pending``,
``submitted``, ``pending_cancel``, ``pending_replace`` or ``unresolved`` are in an unknown
state (:meth:`unresolved`): they count as working, and no new order for their instrument
is sent (:meth:`blocked_instruments`) until :meth:`reconcile` asks the venue.

Venue failures (the port's typed errors, :mod:`tradebook.venues.base`): a request that
certainly did not leave (``NotSentError``) is tried again under the same client order id
(``not_sent_retries``), then rejected ``never_reached_venue``; a refusal
(``VenueRejectedError``) rejects the order with its :class:`RejectCode` (a refused
duplicate id means the venue holds the order: a ``duplicate`` record, and reconciliation
asks); an unknown outcome (``OutcomeUnknownError``, or any other exception from a venue
that is not simulated) moves the order to ``unresolved``: never resent, its instrument
blocked, an alert, until :meth:`reconcile` finds it by client order id (its state and
fills adopted) or, after the venue's ``order_visibility_grace_ns``, does not (rejected
``never_reached_venue``). A fill after a cancel or an expiry is booked (with a
``late_fill`` alert); a fill id already booked is ignored.

Journal records (one JSON object per line): ``intent`` (an order is created),
``event`` (an :class:`OrderEvent`, fills included), ``orphan`` (an event for an
order we do not know), ``illegal`` (an event the lifecycle refused; audit only),
``adjustment`` (a position adopted from the venue by reconciliation, booked as a
synthetic fill), ``alert``, ``rejection_code`` (why an order was rejected, as a
:class:`RejectCode`, where a program must tell it apart: an order made durable that
never reached the venue, a venue's refusal) and ``duplicate`` (the venue refused a copy
of an order it holds; replayed as unresolved until a later event about it).

Threads: the hot path runs on the session's event loop; ``flush`` may run on its own
thread; venue events delivered from another thread are handed to the loop
(:meth:`bind_loop`, ``call_soon_threadsafe``) in the order they came. One lock guards the in-memory state; it is held only for journal appends and
in-memory updates, never across an ``await`` or a DuckDB write.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from time import monotonic_ns
from typing import Any

import orjson
import pandas as pd

from tradebook.errors import (
    ConfigError,
    NotSentError,
    OrderError,
    OutcomeUnknownError,
    StoreError,
    UnknownInstrumentError,
    VenueRejectedError,
)
from tradebook.model.instruments import Instrument, Side, get_instrument
from tradebook.model.orders import (
    Fill,
    IllegalTransitionError,
    Order,
    OrderEvent,
    OrderEventType,
    OrderIntent,
    OrderStatus,
    OrderType,
    RejectCode,
    TERMINAL_STATUSES,
    TimeInForce,
    client_order_id_for,
)
from tradebook.model.time import now_ns
from tradebook.portfolio import Portfolio
from tradebook.store.journal import Journal
from tradebook.store.records import (
    BODY_OFFSET,
    adjustment_record,
    alert_record,
    decode_record,
    duplicate_record,
    event_from_record,
    event_record,
    fill_from_record,
    illegal_record,
    intent_from_record,
    intent_record,
    order_state,
    orphan_record,
    rejection_code_record,
)
from tradebook.store.store import OrderPathBatch, Store
from tradebook.venues.base import Capability, VenueOrderState, VenuePort

log = logging.getLogger(__name__)

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

_ORDER_TYPES = frozenset(OrderType)
_TIMES_IN_FORCE = frozenset(TimeInForce)
_FILL_FIELDS = tuple(f.name for f in dataclasses.fields(Fill))
# enum members read on the order path, as module constants: on Python 3.11 ``E.FILLED`` is a
# descriptor call on the enum class (~70 ns), paid several times per order
_SIDES = (Side.BUY, Side.SELL)
_MARKET = OrderType.MARKET
_LIMIT_TYPES = (OrderType.LIMIT, OrderType.STOP_LIMIT)
_STOP_TYPES = (OrderType.STOP, OrderType.STOP_LIMIT)
_SUBMITTED_EVENT, _REJECTED_EVENT, _REPLACED_EVENT = E.SUBMITTED, E.REJECTED, E.REPLACED
_REPLACE_REQUESTED, _REPLACE_REJECTED = E.REPLACE_REQUESTED, E.REPLACE_REJECTED
_REPLACE_ANSWERS = (_REPLACED_EVENT, _REPLACE_REJECTED)
_OUTCOME_UNKNOWN = E.OUTCOME_UNKNOWN
_PENDING = S.PENDING
_DONE = TERMINAL_STATUSES


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


class OrderManager:
    """Orders, fills and positions of one venue account, with a write-ahead journal.

    ``instruments`` maps instrument ids to :class:`Instrument` (a mapping or a lookup
    function; the bundled registry by default). ``clock`` returns int64 UTC ns (the
    session's clock: wall time live, replay time in a replay). ``mode`` must agree with
    the venue (a live venue needs ``mode='live'`` and the other way round).
    """

    def __init__(
        self,
        store: Store,
        journal: Journal,
        venue: VenuePort,
        portfolio: Portfolio,
        *,
        mode: str = "paper",
        clock: Callable[[], int] = now_ns,
        instruments: Mapping[str, Instrument] | Callable[[str], Instrument] | None = None,
        flush_interval_ms: int = DEFAULT_FLUSH_INTERVAL_MS,
        flush_batch_records: int = DEFAULT_FLUSH_BATCH_RECORDS,
        flush_quiet_ms: int = DEFAULT_FLUSH_QUIET_MS,
        flush_max_lag_ms: int = DEFAULT_FLUSH_MAX_LAG_MS,
        journal_name: str | None = None,
        sync_policy: str = "intents_and_fills",
        on_order: OrderListener | None = None,
        on_fill: FillListener | None = None,
        not_sent_retries: int = DEFAULT_NOT_SENT_RETRIES,
        not_sent_backoff_s: float = DEFAULT_NOT_SENT_BACKOFF_S,
    ) -> None:
        if not_sent_retries < 0 or not_sent_backoff_s < 0:
            raise ConfigError(f"not_sent_retries and not_sent_backoff_s must be >= 0, got {not_sent_retries} and "
                              f"{not_sent_backoff_s}")
        if mode not in ("paper", "live"):
            raise ConfigError(f"mode must be 'paper' or 'live', got {mode!r}")
        if bool(getattr(venue, "is_live", False)) != (mode == "live"):
            raise ConfigError(f"mode {mode!r} does not match the venue {venue.name!r} "
                              f"(is_live={venue.is_live}); a live venue needs mode='live', a paper one 'paper'")
        if sync_policy not in SYNC_POLICIES:
            raise ConfigError(f"sync_policy must be one of {sorted(SYNC_POLICIES)}, got {sync_policy!r}")
        if flush_interval_ms <= 0:
            raise ConfigError(f"flush_interval_ms must be positive, got {flush_interval_ms}")
        if flush_batch_records < 1 or flush_quiet_ms < 0 or flush_max_lag_ms < 0:
            raise ConfigError(f"flush_batch_records must be >= 1, flush_quiet_ms and flush_max_lag_ms >= 0; got "
                              f"{flush_batch_records}, {flush_quiet_ms} and {flush_max_lag_ms}")
        self.store = store
        self.journal = journal
        self.venue = venue
        self.portfolio = portfolio
        self.mode = mode
        self.clock = clock
        self.flush_interval_ms = flush_interval_ms
        self.flush_batch_records = flush_batch_records
        self.flush_quiet_ms = flush_quiet_ms
        self.flush_max_lag_ms = flush_max_lag_ms
        self._last_record_ns = 0  # monotonic time of the last journal record (the flush waits for quiet)
        self._pending_since_ns = 0  # monotonic time of the oldest record not yet in DuckDB
        self.sync_policy = sync_policy
        self.not_sent_retries = not_sent_retries
        self.not_sent_backoff_s = not_sent_backoff_s
        self.journal_name = journal_name or journal.path.name
        self._lookup = _instrument_lookup(instruments)
        self._instrument_cache: dict[str, Instrument] = {}
        self._lock = threading.RLock()
        self._flush_lock = threading.Lock()
        self._orders: dict[str, Order] = {}
        self._working: dict[str, None] = {}  # orders not final yet, oldest first (kept, not scanned for)
        self._created_ns: dict[str, int] = {}
        self._order_fixed: dict[str, bytes] = {}  # the intent's part of each working order's row, encoded
        self._fills: list[tuple[Fill, str, str]] = []  # (fill, account_id, strategy_id)
        self._fill_ids: set[str] = set()
        self._orphans: list[OrderEvent] = []
        self._orphans_reported = 0
        self._alerts: list[Alert] = []
        self._unresolved: set[str] = set()
        # unresolved order -> wall time (ns) its outcome became unknown, or this manager started: a venue's
        # order lookup lags in real time, whatever the session's clock says (replays stand still)
        self._unresolved_since: dict[str, int] = {}
        self._replayed_duplicates: set[str] = set()
        self._late_fill_alerts: list[tuple[str, OrderStatus, OrderStatus, str]] = []  # "duplicate" records not yet answered by a later event
        self._reject_codes: dict[str, RejectCode] = {}  # client order id -> why rejected (see RejectCode)
        self._replace_requests: dict[str, OrderEvent] = {}
        self._staged: list[OrderIntent] = []  # written by stage(), not yet sent
        # journal records not yet in DuckDB: positions first..last, bytes [start, end) of the file (first 0: none)
        self._pending_first = self._pending_last = self._pending_start = self._pending_end = 0
        self._touched: set[str] = set()  # orders those records changed (their rows are rewritten)
        # touched orders whose final row is in one of those records (DuckDB derives the row; no Python at flush)
        self._final: set[str] = set()
        self._inherited: frozenset[str] = frozenset()  # working when the journal was replayed: rows from Python
        self._touched_positions: set[tuple[str, str, str]] = set()  # (account, strategy, instrument) they moved
        self._order_listeners: list[OrderListener] = [on_order] if on_order else []
        self._fill_listeners: list[FillListener] = [on_fill] if on_fill else []
        self._alert_listeners: list[AlertListener] = []
        self._flush_listeners: list[FlushListener] = []
        self._tasks: set[asyncio.Task] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._flusher: threading.Thread | None = None
        self._stop_flusher = threading.Event()
        self.last_flush_error: BaseException | None = None
        self._replay()

    # -- listeners ----------------------------------------------------------------------
    def subscribe(self, *, on_order: OrderListener | None = None, on_fill: FillListener | None = None,
                  on_alert: AlertListener | None = None, on_flush: FlushListener | None = None) -> None:
        """Call ``on_order(order)`` after every order change, ``on_fill(fill, order)`` after every fill,
        ``on_alert(alert)`` after every alert and ``on_flush(journal, position, records)`` after every flush
        that wrote records (on the flushing thread). Listeners must be quick and must not raise."""
        if on_order:
            self._order_listeners.append(on_order)
        if on_fill:
            self._fill_listeners.append(on_fill)
        if on_alert:
            self._alert_listeners.append(on_alert)
        if on_flush:
            self._flush_listeners.append(on_flush)

    # -- commands -----------------------------------------------------------------------
    async def submit(self, intent: OrderIntent) -> Order:
        """Make ``intent`` durable, then send it; an intent already known returns its order and sends nothing."""
        self._remember_loop()
        if not isinstance(intent, OrderIntent):
            raise OrderError(f"submit takes an OrderIntent, got {type(intent).__name__}")
        coid = intent.client_order_id
        with self._lock:
            existing = self._orders.get(coid)
            if existing is not None:
                if dataclasses.replace(existing.intent, ts_ns=intent.ts_ns) != intent:
                    log.warning("intent %s was submitted before with different terms; keeping the first: %s",
                                intent.intent_id, existing.intent)
                return existing
            self._validate_intent(intent)
            self._check_not_blocked(intent.instrument_id)
            # the intent and its "submitted" in one durable write, before the venue hears of it
            self._create(intent, E.SUBMITTED)
        await self._send(intent)
        return self._orders[coid]

    def stage(self, intent: OrderIntent) -> Order:
        """Write ``intent`` ahead of a batch of sends; :meth:`send_staged` makes the batch durable and sends it.

        The order is ``pending`` until then (its intent is written, not yet fdatasync'd, and
        the venue has not heard of it); checks and idempotence are those of :meth:`submit`.
        After a crash before the batch is sent, a pending order is sent by reconciliation.
        Used by replays, where nothing happens between signals of one step of market data,
        to pay for one fdatasync and one venue call per step instead of per order.
        """
        if intent.__class__ is not OrderIntent and not isinstance(intent, OrderIntent):
            raise OrderError(f"stage takes an OrderIntent, got {type(intent).__name__}")
        coid = intent.client_order_id
        with self._lock:
            existing = self._orders.get(coid)
            if existing is not None:
                return existing
            self._validate_intent(intent)
            self._check_not_blocked(intent.instrument_id)
            created = self.clock()
            order = Order(intent)
            self._append_encoded((intent_record(intent, created),), durable=False)
            self._touched.add(coid)
            self._set_order(coid, order)
            self._created_ns[coid] = created
            self._staged.append(intent)
            return order

    async def send_staged(self) -> list[Order]:
        """Send what :meth:`stage` wrote: one durable write of their ``submitted`` events, then the venue.

        The venue takes them in one call when it has ``submit_many``, else one by one.
        Returns the orders as they stand after sending, in staging order.
        """
        self._remember_loop()
        with self._lock:
            intents, self._staged = self._staged, []
            if not intents:
                return []
            created = self.clock()
            orders = self._orders
            submitted = _SUBMITTED_EVENT
            events = [OrderEvent(i.client_order_id, submitted, created, created) for i in intents]
            updated = [orders[e.client_order_id].apply(e) for e in events]
            # one fdatasync: the intents written at staging and their "submitted", before the venue hears
            self._append_encoded([event_record(e) for e in events])
            for event, order in zip(events, updated):
                self._commit(event, order, journal=False, track=True)
                self._touched.add(event.client_order_id)
                self._notify(event, order)
        submit_many = self.venue.submit_many if Capability.SUBMIT_MANY in self.venue.capabilities else None
        if submit_many is None or len(intents) == 1:
            for intent in intents:
                await self._send(intent)
        else:
            try:
                await submit_many(intents)
            except asyncio.CancelledError:
                with self._lock:
                    self._unresolved.update(i.client_order_id for i in intents)
                raise
            except Exception as exc:  # noqa: BLE001 - as _send: what the failure says decides, per order
                for intent in intents:
                    self._send_failed(intent.client_order_id, exc)
        with self._lock:
            return [self._orders[i.client_order_id] for i in intents]

    def _create(self, intent: OrderIntent, first: OrderEventType, reason: str = "") -> Order:
        """A new order and its first event (submitted or rejected), journaled together in one durable write.

        Under the lock; the intent is checked already. Returns the order after the event.
        """
        coid = intent.client_order_id
        created = self.clock()
        order = Order(intent)
        event = OrderEvent(coid, first, created, created, reason=reason)
        updated = order.apply(event)
        self._append_encoded((intent_record(intent, created), event_record(event)))
        self._touched.add(coid)
        self._set_order(coid, order)
        self._created_ns[coid] = created
        self._commit(event, updated, journal=False, track=True)
        self._notify(event, updated)
        return updated

    async def _send(self, intent: OrderIntent) -> None:
        coid = intent.client_order_id
        attempt = 0
        while True:
            try:
                await self.venue.submit(intent)
                return
            except asyncio.CancelledError:
                with self._lock:
                    self._unresolved.add(coid)  # it may or may not have left: ask the venue before trusting it
                raise
            except NotSentError as exc:
                # certainly not at the venue: the same id may go again (a venue refuses a second copy)
                if attempt < self.not_sent_retries and self._orders[coid].status is S.SUBMITTED:
                    attempt += 1
                    log.info("%s not sent to %s (%s); try %d of %d", coid, self.venue.name, exc, attempt,
                             self.not_sent_retries)
                    await asyncio.sleep(self.not_sent_backoff_s * attempt)
                    continue
                self._send_failed(coid, exc)
                return
            except Exception as exc:  # noqa: BLE001 - what the failure says decides (see _send_failed)
                self._send_failed(coid, exc)
                return

    def _outcome_unknown(self, exc: BaseException) -> bool:
        """Whether a venue failure leaves open that the request arrived.

        Adapters say so with OutcomeUnknownError. Any other exception from a live venue
        (an SDK error an adapter failed to map) counts as unknown too: a resend could trade
        twice. A simulated venue fails locally, before anything happened.
        """
        if isinstance(exc, OutcomeUnknownError):
            return True
        if isinstance(exc, (NotSentError, VenueRejectedError)):
            return False
        return Capability.SIMULATED not in self.venue.capabilities

    def _send_failed(self, coid: str, exc: BaseException) -> None:
        """A submit that raised: rejected (with its code), held unresolved, or left to the venue's events."""
        with self._lock:
            order = self._orders[coid]
            if order.status is not S.SUBMITTED:  # the venue answered before failing: its events decide
                log.warning("venue %s raised after answering %s: %s", self.venue.name, coid, exc)
                return
            ts = self.clock()
            name = self.venue.name
            if self._outcome_unknown(exc):
                self._apply_own(OrderEvent(coid, E.OUTCOME_UNKNOWN, ts, ts, reason=f"outcome unknown: {exc}"))
                self._unresolved.add(coid)
                self._raise_alert("outcome_unknown", f"{coid} ({order.intent.intent_id}): {name} may or may not "
                                  f"have it ({exc}); {order.intent.instrument_id} takes no new order until "
                                  "reconcile() asks the venue; it is never resent blind")
                return
            if isinstance(exc, VenueRejectedError):
                code = _reject_code(exc.code)
                if code is RejectCode.DUPLICATE_CLIENT_ID:
                    # the venue holds this id already (an earlier send did arrive): its state is the venue's
                    event = OrderEvent(coid, E.REJECTED, ts, ts, reason=f"{DUPLICATE_REASON}: {exc}")
                    self._append_encoded((duplicate_record(event),))
                    self._unresolved.add(coid)
                    self._raise_alert("duplicate_client_id", f"{name} already holds {coid}; reconciling its state")
                    return
                venue_code = f" [{exc.venue_code}]" if exc.venue_code else ""
                self._apply_own(OrderEvent(coid, E.REJECTED, ts, ts, reason=f"{name} rejected: {exc}{venue_code}",
                                           code=code))
                self._record_code(coid, code)
            elif isinstance(exc, NotSentError):
                self._apply_own(OrderEvent(coid, E.REJECTED, ts, ts, reason=f"{NEVER_REACHED_VENUE_REASON}: {exc}",
                                           code=RejectCode.NEVER_REACHED_VENUE))
                self._record_code(coid, RejectCode.NEVER_REACHED_VENUE)
                self._raise_alert("not_sent", f"{coid} ({order.intent.intent_id}) could not be sent to {name}: "
                                  f"{exc}; rejected")
            else:  # a simulated venue's own failure: nothing left this process
                self._apply_own(OrderEvent(coid, E.REJECTED, ts, ts, reason=f"venue error: {exc}"))

    def _record_code(self, coid: str, code: RejectCode) -> None:
        self._append_encoded((rejection_code_record(coid, code),))
        self._reject_codes[coid] = code

    def reject(self, intent: OrderIntent, reason: str) -> Order:
        """Record an intent refused before it left (risk, kill switch): durable, never sent.

        Idempotent like :meth:`submit`: an intent already known returns its order unchanged.
        """
        if not reason:
            raise OrderError("a rejection needs its reason (which check refused the order, and why)")
        coid = intent.client_order_id
        with self._lock:
            existing = self._orders.get(coid)
            if existing is not None:
                return existing
            self._validate_intent(intent)
            # one write: an intent journaled without its refusal would be a pending order, sent after a crash
            return self._create(intent, E.REJECTED, reason=reason)

    async def cancel(self, client_order_id: str) -> Order:
        """Ask the venue to cancel; an order never sent is cancelled here and then."""
        self._remember_loop()
        with self._lock:
            order = self.order(client_order_id)
            if order.is_done:
                raise OrderError(f"order {client_order_id} is already {order.status}; there is nothing to cancel")
            if order.status is S.PENDING_CANCEL:
                return order
            if order.status is S.UNRESOLVED:
                raise OrderError(f"order {client_order_id} is unresolved (its fate at {self.venue.name} is unknown); "
                                 "reconcile() settles it before it can be cancelled")
            ts = self.clock()
            if order.status is S.PENDING:
                self._unresolved.discard(client_order_id)
                return self._apply_own(OrderEvent(client_order_id, E.CANCELLED, ts, ts,
                                                  reason="cancelled before it was sent"))
            self._apply_own(OrderEvent(client_order_id, E.CANCEL_REQUESTED, ts, ts))
        await self._ask_venue(client_order_id, S.PENDING_CANCEL, E.CANCEL_REJECTED,
                              self.venue.cancel(client_order_id))
        return self._orders[client_order_id]

    async def replace(self, client_order_id: str, *, quantity: Decimal | None = None,
                      limit_price: Decimal | None = None, stop_price: Decimal | None = None) -> Order:
        """Ask the venue to change a working order's total quantity and/or prices."""
        self._remember_loop()
        if quantity is None and limit_price is None and stop_price is None:
            raise OrderError(f"replace of {client_order_id} changes nothing; give quantity, limit_price or stop_price")
        with self._lock:
            order = self.order(client_order_id)
            instrument = self._instrument(order.intent.instrument_id)
            if quantity is not None:
                _check_decimal(quantity, "replace quantity", client_order_id)
                instrument.conform_quantity(quantity)
                if quantity <= order.filled_qty:
                    raise OrderError(f"replace of {client_order_id}: quantity {quantity} must exceed what has "
                                     f"filled ({order.filled_qty})")
            for name, price in (("limit_price", limit_price), ("stop_price", stop_price)):
                if price is not None:
                    _check_decimal(price, f"replace {name}", client_order_id, positive=False)
                    instrument.conform_price(price)
            if limit_price is not None and order.intent.order_type not in (OrderType.LIMIT, OrderType.STOP_LIMIT):
                raise OrderError(f"{client_order_id} is a {order.intent.order_type} order; it has no limit price")
            if stop_price is not None and order.intent.order_type not in (OrderType.STOP, OrderType.STOP_LIMIT):
                raise OrderError(f"{client_order_id} is a {order.intent.order_type} order; it has no stop price")
            ts = self.clock()
            request = OrderEvent(client_order_id, E.REPLACE_REQUESTED, ts, ts, quantity=quantity,
                                 limit_price=limit_price, stop_price=stop_price)
            self._apply_own(request)
        await self._ask_venue(client_order_id, S.PENDING_REPLACE, E.REPLACE_REJECTED,
                              self.venue.replace(client_order_id, quantity=quantity, limit_price=limit_price,
                                                 stop_price=stop_price))
        return self._orders[client_order_id]

    async def _ask_venue(self, client_order_id: str, pending: OrderStatus, refused: OrderEventType,
                         request: Any) -> None:
        """Send a cancel or replace; a venue that refuses (or certainly did not get it) answers as a refusal.

        When the outcome is unknown the order stays pending cancel (replace) and unresolved:
        reconciliation asks the venue what became of it.
        """
        try:
            await request
        except Exception as exc:  # noqa: BLE001 - every venue failure ends here, as a refusal or unresolved
            with self._lock:
                if self._orders[client_order_id].status is not pending:
                    return  # answered by the venue's events meanwhile
                if self._outcome_unknown(exc):
                    self._unresolved.add(client_order_id)
                    self._raise_alert("outcome_unknown", f"{client_order_id}: {self.venue.name} may or may not "
                                      f"have taken the {pending} request ({exc}); reconcile() settles it")
                    return
                ts = self.clock()
                self._apply_own(OrderEvent(client_order_id, refused, ts, ts, reason=f"venue error: {exc}"))
                if isinstance(exc, VenueRejectedError) and _reject_code(exc.code) is RejectCode.UNKNOWN_ORDER:
                    self._unresolved.add(client_order_id)  # the venue does not know it: ask what it knows

    async def cancel_all(self, instrument_id: str | None = None) -> list[Order]:
        """Cancel every working order (of one instrument, or all); returns the orders asked to cancel."""
        with self._lock:
            targets = [o.client_order_id for o in self._orders.values()
                       if not o.is_done and o.status is not S.PENDING_CANCEL
                       and (instrument_id is None or o.intent.instrument_id == instrument_id)]
        result = []
        for coid in targets:
            try:
                result.append(await self.cancel(coid))
            except OrderError as exc:  # a replace in flight, an unresolved order: the venue answers first
                self._raise_alert("cancel_failed", f"could not cancel {coid}: {exc}")
        return result

    async def flatten(self, request_id: str, *, instrument_id: str | None = None,
                      cancel_timeout_s: float = 2.0) -> list[Order]:
        """Kill switch: cancel working orders, then close every net position with market orders.

        Closing intents are reduce-only, with ids derived from ``request_id`` (calling
        flatten again with the same id sends nothing new). Per instrument only the net
        position is traded: it is taken from the strategies holding it on the net side,
        so two strategies that offset each other are not both closed.
        """
        if not request_id:
            raise OrderError("flatten needs a request id (it makes the closing orders idempotent)")
        await self.cancel_all(instrument_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + cancel_timeout_s
        while loop.time() < deadline and any(
                o.status is S.PENDING_CANCEL for o in self.working_orders()
                if instrument_id is None or o.intent.instrument_id == instrument_id):
            await asyncio.sleep(0.001)  # cancels are answered as events; fills may still arrive meanwhile
        intents = self._closing_intents(request_id, instrument_id)
        orders = []
        for intent in intents:
            try:
                orders.append(await self.submit(intent))
            except OrderError as exc:
                self._raise_alert("flatten_failed", f"flatten {request_id}: {intent.instrument_id}: {exc}")
        return orders

    def _closing_intents(self, request_id: str, instrument_id: str | None) -> list[OrderIntent]:
        account = self.venue.account_id
        ts = self.clock()
        intents = []
        with self._lock:
            for (acct, inst), net in sorted(self.portfolio.net_positions(account).items()):
                if instrument_id is not None and inst != instrument_id:
                    continue
                holders = sorted((p for p in self.portfolio.positions()
                                  if p.account_id == acct and p.instrument_id == inst and p.quantity * net > 0),
                                 key=lambda p: (-abs(p.quantity), p.strategy_id))
                left = abs(net)
                for position in holders:
                    quantity = min(left, abs(position.quantity))
                    if quantity <= 0:
                        break
                    left -= quantity
                    intents.append(OrderIntent(
                        intent_id=f"{request_id}:flatten:{acct}:{position.strategy_id}:{inst}",
                        strategy_id=position.strategy_id, account_id=acct, instrument_id=inst,
                        side=Side.SELL if net > 0 else Side.BUY, quantity=quantity,
                        order_type=OrderType.MARKET, time_in_force=TimeInForce.DAY, ts_ns=ts,
                        reduce_only=True, reason=f"flatten {request_id}"))
        return intents

    # -- events from the venue ----------------------------------------------------------
    def on_event(self, event: OrderEvent) -> None:
        """The handler given to ``venue.connect``: journal, apply, book fills, notify."""
        self.on_events((event,))

    def on_events(self, events: Iterable[OrderEvent]) -> None:
        """Several venue events at once (a venue that delivers in batches): one journal write for them all.

        The same checks, records and effects as :meth:`on_event` for each event in turn,
        but every record is written (and, if one carries a fill, made durable) with one
        write and at most one ``fdatasync`` before any of them changes an order or the
        portfolio. An event the lifecycle refuses is journaled as ``illegal`` and changes
        nothing; the others still apply, and the first refusal is raised at the end.

        Venues may call it from any thread (a stream reader, a poller): events that arrive
        off the session loop's thread are handed to that loop (``call_soon_threadsafe``,
        first in, first out, so each order's events keep their order) and applied there.
        """
        loop, thread = self._loop, self._loop_thread
        if loop is not None and thread is not None and threading.get_ident() != thread and loop.is_running():
            try:
                loop.call_soon_threadsafe(self._on_events_here, list(events))
                return
            except RuntimeError:  # the loop closed meanwhile: apply here, under the lock
                pass
        self._on_events_here(events)

    def _on_events_here(self, events: Iterable[OrderEvent]) -> None:
        staged: dict[str, Order] = {}  # orders as this batch leaves them
        applied: list[tuple[OrderEvent, Order, Order]] = []  # (event, before, after)
        bodies: list[bytes] = []
        final: list[str] = []  # orders this batch finishes, their rows in their records
        refinished: list[str] = []  # done orders a late fill changed: their rows built in Python
        durable = False
        refused: OrderError | None = None
        with self._lock:
            fill_ids: set[str] = set()
            known_fills, orders, inherited = self._fill_ids, self._orders, self._inherited
            for event in events:
                coid = event.client_order_id
                order = staged.get(coid) or orders.get(coid)
                if order is None:
                    bodies.append(orphan_record(event))
                    durable = durable or event.fill is not None
                    self._orphans.append(event)
                    log.warning("event for unknown order %s from %s: %s", coid, self.venue.name, event.event_type)
                    continue
                fill = event.fill
                if fill is not None and (fill.fill_id in known_fills or fill.fill_id in fill_ids):
                    continue  # a repeated fill (after a reconnect): already booked
                kind = event.event_type
                if kind is _REJECTED_EVENT and order.status is not _PENDING and (
                        event.code is RejectCode.DUPLICATE_CLIENT_ID or event.reason.startswith(DUPLICATE_REASON)):
                    # We sent an order the venue already holds (a resend after a fault): the refusal
                    # is about the copy, not the order. Its state is whatever the venue says:
                    # reconciliation asks.
                    bodies.append(duplicate_record(event))
                    self._unresolved.add(coid)
                    log.warning("venue %s already holds %s; reconciling its state", self.venue.name, coid)
                    continue
                if kind is _REPLACED_EVENT and event.quantity is None and event.limit_price is None \
                        and event.stop_price is None and coid in self._replace_requests:
                    asked = self._replace_requests[coid]  # venues that confirm without repeating the new terms
                    event = dataclasses.replace(event, quantity=asked.quantity, limit_price=asked.limit_price,
                                                stop_price=asked.stop_price)
                try:
                    if fill is not None:
                        self._check_fill(order, fill)
                    updated = order.apply(event)
                except OrderError as exc:
                    bodies.append(illegal_record(event, str(exc)))
                    refused = refused or exc
                    continue
                if order.status in _DONE:
                    # a fill after a cancel or expiry: booked; an order's row travels in one record
                    # at most, so this one (and its earlier final record) is rebuilt in Python
                    bodies.append(event_record(event))
                    refinished.append(coid)
                    if fill is not None:
                        self._late_fill_alerts.append((coid, order.status, updated.status, fill.fill_id))
                elif updated.status in _DONE and coid not in inherited:
                    # its final row travels with its last record: the flush builds nothing for it
                    bodies.append(event_record(event, order_state(updated, self._created_ns[coid])))
                    final.append(coid)
                else:
                    bodies.append(event_record(event))
                if fill is not None:
                    durable = True
                    fill_ids.add(fill.fill_id)
                staged[coid] = updated
                applied.append((event, order, updated))
            if bodies:
                self._append_encoded(bodies, durable=durable)
                if final:
                    self._final.update(final)
                if refinished:
                    self._final.difference_update(refinished)
            unresolved, touched, commit = self._unresolved, self._touched, self._commit
            for event, _, updated in applied:
                coid = event.client_order_id
                if unresolved:
                    unresolved.discard(coid)  # the venue spoke about it: its state is known
                touched.add(coid)
                commit(event, updated, journal=False, track=True)
        for event, before, updated in applied:
            self._notify(event, updated)
            self._after_event(before, updated)
        while self._late_fill_alerts:
            coid, was, now, fill_id = self._late_fill_alerts.pop(0)
            self._raise_alert("late_fill", f"{coid}: fill {fill_id} arrived after the order was {was}: booked; "
                              f"the order is {now}")
        if refused is not None:
            raise refused

    # -- core ---------------------------------------------------------------------------
    def _apply_own(self, event: OrderEvent) -> Order:
        """Journal and apply an event we decided (submitted, cancel requested, reconciled...); under the lock."""
        updated = self._orders[event.client_order_id].apply(event)
        self._commit(event, updated)
        self._notify(event, updated)
        return updated

    def _commit(self, event: OrderEvent, updated: Order, *, journal: bool = True, track: bool = False) -> None:
        """Apply ``event`` (journaling it first unless ``journal=False``: already written, or replayed).

        ``track``: the event was written by the caller and its rows go to the store with the next flush.
        """
        coid = event.client_order_id
        fill = event.fill
        if journal:
            self._append_encoded((event_record(event),), durable=fill is not None)
            self._touched.add(coid)
        self._set_order(coid, updated)
        kind = event.event_type
        if kind is _REPLACE_REQUESTED:
            self._replace_requests[coid] = event
        elif kind is _OUTCOME_UNKNOWN:
            self._unresolved_since.setdefault(coid, now_ns())
        elif self._replace_requests and kind in _REPLACE_ANSWERS:
            self._replace_requests.pop(coid, None)
        elif event.code is not None and kind is _REJECTED_EVENT:  # a venue's rejected event says why
            self._reject_codes[coid] = event.code
        if fill is not None:
            intent = updated.intent
            account_id, strategy_id = intent.account_id, intent.strategy_id
            self.portfolio.apply_fill(fill, self._instrument(intent.instrument_id), account_id, strategy_id)
            self._fills.append((fill, account_id, strategy_id))
            self._fill_ids.add(fill.fill_id)
            if journal or track:
                self._touched_positions.add((account_id, strategy_id, fill.instrument_id))

    def _set_order(self, coid: str, order: Order) -> None:
        self._orders[coid] = order
        if order.status in _DONE:  # order.is_done, without the property call
            self._working.pop(coid, None)
        else:
            self._working[coid] = None

    def _append_encoded(self, bodies: Sequence[bytes], *, durable: bool = True) -> int:
        """Write records with one write; fdatasync'd if ``durable`` (or the policy syncs everything).

        The records are not kept: the flush hands DuckDB their bytes in the journal file.
        """
        with self._lock:  # one writer: the journal's size before and after is this write's range
            start = self.journal.size
            if durable or self.sync_policy == "all" or not self.journal.sync:
                position = self.journal.append_encoded(bodies)
            else:
                # Written (a kill -9 keeps it: it is in the OS cache) but not fdatasync'd: the
                # next durable record syncs it too.
                position = self.journal.append_encoded(bodies, sync=False)
            now = monotonic_ns()
            if not self._pending_first:
                self._pending_since_ns = now
                self._pending_first, self._pending_start = position - len(bodies) + 1, start
            self._pending_last, self._pending_end = position, self.journal.size
            self._last_record_ns = now
            return position

    def _notify(self, event: OrderEvent, order: Order) -> None:
        if not self._order_listeners and not self._fill_listeners:
            return
        for listener in self._order_listeners:
            try:
                listener(order)
            except Exception:  # a notebook callback must not break the order path
                log.exception("on_order listener failed for %s", order.client_order_id)
        if event.fill is not None:
            for fill_listener in self._fill_listeners:
                try:
                    fill_listener(event.fill, order)
                except Exception:
                    log.exception("on_fill listener failed for %s", event.fill.fill_id)

    def _after_event(self, before: Order, after: Order) -> None:
        """Attach the protective stop once an entry with ``stop_loss`` is done filling."""
        if after.intent.stop_loss is not None and after.is_done and not before.is_done and after.filled_qty > 0:
            stop = _stop_intent(after, self.clock())
            if stop.client_order_id not in self._orders:
                self._spawn(self.submit(stop))

    def _spawn(self, coroutine) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None:
            task = loop.create_task(coroutine)
            self._tasks.add(task)
            task.add_done_callback(self._task_done)
        elif self._loop is not None and self._loop.is_running():
            asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        else:
            coroutine.close()
            self._raise_alert("stop_not_sent", "a protective stop is due but no event loop runs; "
                                               "reconcile() will send it")

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._raise_alert("stop_not_sent", f"sending a protective stop failed: {task.exception()}")

    def bind_loop(self) -> None:
        """From now on, venue events from other threads are applied on the running loop (call it on the loop)."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()

    def _remember_loop(self) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._loop_thread = threading.get_ident()

    def alert(self, kind: str, message: str) -> Alert:
        """Journal an alert for a human (the store's ``alerts`` table gets it with the next flush)."""
        return self._raise_alert(kind, message)

    def _raise_alert(self, kind: str, message: str) -> Alert:
        alert = Alert(self.clock(), kind, message)
        with self._lock:
            self._append_encoded((alert_record(alert.ts_ns, alert.kind, alert.message),))
            self._alerts.append(alert)
        log.warning("alert %s: %s", kind, message)
        for listener in self._alert_listeners:
            try:
                listener(alert)
            except Exception:
                log.exception("on_alert listener failed for %s", kind)
        return alert

    # -- validation ---------------------------------------------------------------------
    def _instrument(self, instrument_id: str) -> Instrument:
        instrument = self._instrument_cache.get(instrument_id)
        if instrument is None:
            instrument = self._lookup(instrument_id)
            self._instrument_cache[instrument_id] = instrument
        return instrument

    def _validate_intent(self, intent: OrderIntent) -> Instrument:
        # Once per order: each check first tries what every valid intent passes, and the
        # message's "intent '...'" is built only when one fails
        intent_id = intent.intent_id
        if not intent_id or not intent.strategy_id:
            raise OrderError(f"{_where(intent)}: intent_id and strategy_id must not be empty")
        if intent.account_id != self.venue.account_id:
            raise OrderError(f"{_where(intent)}: account {intent.account_id!r} is not the venue's account "
                             f"{self.venue.account_id!r}")
        instrument_id = intent.instrument_id
        instrument = self._instrument(instrument_id)
        if intent.side not in _SIDES:
            raise OrderError(f"{_where(intent)}: side must be buy or sell, got {intent.side!r}")
        order_type = intent.order_type
        if order_type not in _ORDER_TYPES or intent.time_in_force not in _TIMES_IN_FORCE:
            raise OrderError(f"{_where(intent)}: unknown order type {intent.order_type!r} or time in force "
                             f"{intent.time_in_force!r}")
        ts_ns = intent.ts_ns
        if not isinstance(ts_ns, int) or isinstance(ts_ns, bool) or ts_ns < 0:
            raise OrderError(f"{_where(intent)}: ts_ns must be int ns since the epoch, got {intent.ts_ns!r}")
        quantity = intent.quantity
        if quantity.__class__ is not Decimal or not quantity.is_finite() or quantity <= 0:
            _check_decimal(quantity, "quantity", _where(intent))  # raises unless a valid Decimal subclass
        instrument.conform_quantity(quantity)
        limit_price, stop_price = intent.limit_price, intent.stop_price
        if order_type is not _MARKET or limit_price is not None or stop_price is not None:
            # a market order without prices has nothing to check here
            where = _where(intent)
            needs_limit = order_type in _LIMIT_TYPES
            needs_stop = order_type in _STOP_TYPES
            for name, price, needed in (("limit_price", limit_price, needs_limit),
                                        ("stop_price", stop_price, needs_stop)):
                if needed and price is None:
                    raise OrderError(f"{where}: a {intent.order_type} order needs a {name}")
                if not needed and price is not None:
                    raise OrderError(f"{where}: a {intent.order_type} order takes no {name}, got {price}")
                if price is not None:
                    _check_decimal(price, name, where, positive=False)
                    instrument.conform_price(price)
        stop_loss = intent.stop_loss
        if stop_loss is not None:
            _check_decimal(stop_loss, "stop_loss", _where(intent), positive=False)
            instrument.conform_price(stop_loss)
        reference = limit_price or stop_price or self.portfolio.last_price(instrument_id)
        if reference is not None and not intent.reduce_only:  # closing a position is never refused for size
            instrument.check_notional(reference, quantity)
        return instrument

    def _check_fill(self, order: Order, fill: Fill) -> None:
        intent = order.intent
        if fill.instrument_id != intent.instrument_id or fill.side != intent.side:
            raise OrderError(f"fill {fill.fill_id} ({fill.side} {fill.instrument_id}) does not match order "
                             f"{order.client_order_id} ({order.intent.side} {order.intent.instrument_id})")
        quantity, price, fee = fill.quantity, fill.price, fill.fee
        if not (quantity.__class__ is Decimal and price.__class__ is Decimal and fee.__class__ is Decimal
                and quantity.is_finite() and price.is_finite() and fee.is_finite()):
            # the walk with messages only for what is not a plain finite Decimal: a subclass passes, the rest raise
            for name in ("quantity", "price", "fee"):
                value = getattr(fill, name)
                if not isinstance(value, Decimal) or not value.is_finite():
                    raise OrderError(f"fill {fill.fill_id}: {name} must be a finite Decimal, got {value!r}")

    def _check_not_blocked(self, instrument_id: str) -> None:
        if not self._unresolved:  # the usual case: every order's state is known
            return
        blocking = sorted(c for c in self._unresolved if self._orders[c].intent.instrument_id == instrument_id)
        if blocking:
            raise OrderError(f"no new order for {instrument_id}: order(s) {', '.join(blocking)} are in an unknown "
                             "state after a fault; run reconcile() to resolve them first")

    # -- views --------------------------------------------------------------------------
    def order(self, client_order_id: str) -> Order:
        try:
            return self._orders[client_order_id]
        except KeyError:
            raise OrderError(f"no order {client_order_id!r} in this order manager") from None

    def order_for_intent(self, intent_id: str, account_id: str | None = None) -> Order:
        """The order of ``intent_id`` in ``account_id`` (default: the venue's account)."""
        return self.order(client_order_id_for(intent_id, account_id or self.venue.account_id))

    def orders(self) -> list[Order]:
        with self._lock:
            return list(self._orders.values())

    def working_orders(self) -> list[Order]:
        """Orders not final yet (orders in an unknown state included: they may still trade)."""
        with self._lock:
            return [self._orders[c] for c in self._working]

    def working_count(self) -> int:
        """How many orders are not final yet; O(1)."""
        return len(self._working)

    def counts(self) -> dict[str, int]:
        """Orders, working orders and fills so far, without building any of them."""
        with self._lock:
            return {"working_orders": len(self._working), "orders": len(self._orders), "fills": len(self._fills)}

    def unresolved(self) -> list[Order]:
        with self._lock:
            return [self._orders[c] for c in sorted(self._unresolved)]

    def blocked_instruments(self) -> set[str]:
        with self._lock:
            return {self._orders[c].intent.instrument_id for c in self._unresolved}

    def orphans(self) -> list[OrderEvent]:
        with self._lock:
            return list(self._orphans)

    def rejection_code(self, client_order_id: str) -> RejectCode | None:
        """Why the order was rejected, where a program must tell it apart (see :class:`RejectCode`), else None."""
        with self._lock:
            return self._reject_codes.get(client_order_id)

    def never_reached_venue(self) -> list[str]:
        """Client order ids rejected because they were made durable but never reached the venue, oldest first."""
        with self._lock:
            return [c for c, code in self._reject_codes.items() if code is RejectCode.NEVER_REACHED_VENUE]

    def alerts(self) -> list[Alert]:
        with self._lock:
            return list(self._alerts)

    def orders_frame(self) -> pd.DataFrame:
        """One row per order, current state; money and quantities as Decimal."""
        columns = ["client_order_id", "intent_id", "strategy_id", "account_id", "instrument_id", "side",
                   "order_type", "time_in_force", "quantity", "filled_qty", "remaining", "limit_price", "stop_price",
                   "avg_price", "fees", "status", "reason", "venue_order_id", "parent_id", "reduce_only",
                   "ts_init_ns", "ts_last_ns"]
        with self._lock:
            rows = [[o.client_order_id, o.intent.intent_id, o.intent.strategy_id, o.intent.account_id,
                     o.intent.instrument_id, str(o.intent.side), str(o.intent.order_type),
                     str(o.intent.time_in_force), o.total_quantity, o.filled_qty, o.remaining,
                     o.limit_price if o.limit_price is not None else o.intent.limit_price,
                     o.stop_price if o.stop_price is not None else o.intent.stop_price, o.avg_price, o.fees,
                     str(o.status), o.reason, o.venue_order_id, o.intent.parent_id, o.intent.reduce_only,
                     self._created_ns[o.client_order_id], max(o.last_ts_ns, self._created_ns[o.client_order_id])]
                    for o in self._orders.values()]
        return pd.DataFrame(rows, columns=columns)

    def fills_frame(self) -> pd.DataFrame:
        columns = [*_FILL_FIELDS, "account_id", "strategy_id"]
        with self._lock:
            rows = [[getattr(f, name) for name in _FILL_FIELDS] + [account, strategy]
                    for f, account, strategy in self._fills]
        frame = pd.DataFrame(rows, columns=columns)
        frame["side"] = frame["side"].astype(str) if len(frame) else frame["side"]
        return frame

    # -- persistence --------------------------------------------------------------------
    def flush(self) -> int:
        """Copy journal records not yet in DuckDB into the order tables, in one transaction.

        Returns how many journal records were written. Safe to call from any thread and
        any number of times: the store keeps the journal position it holds. The records
        go as the journal wrote them and DuckDB parses them. An order that a venue event
        finished carries its final row in that event's record (``state``), and DuckDB
        derives the row; Python builds the rows of the other orders the batch touched
        (mostly those still working) and of the positions it moved (orders are
        immutable, so the snapshot taken under the lock is consistent). Under sustained
        flow nearly every order is finished by the time it is copied, so the flush
        holds the GIL for little more than a list of records, and the order path keeps it.
        """
        with self._flush_lock:
            with self._lock:
                first, last, start, end = self._pending_first, self._pending_last, self._pending_start, self._pending_end
                if not first:
                    return 0
                self._pending_first = 0
                touched, self._touched = self._touched, set()
                final, self._final = self._final, set()
                keys, self._touched_positions = self._touched_positions, set()
                orders = [(self._orders[c], self._created_ns[c]) for c in touched - final if c in self._orders]
                for coid in final:
                    self._order_fixed.pop(coid, None)
                instruments = {k[2] for k in keys} | {self._orders[c].intent.instrument_id for c in final}
                positions = [p for p in (self.portfolio.position(*k) for k in sorted(keys)) if p is not None]
            try:
                batch = OrderPathBatch(
                    self.journal_name, first, last, journal_file=self.journal.path, journal_bytes=(start, end),
                    orders=tuple(self._order_json(order, created) for order, created in orders),
                    positions=tuple({"account_id": p.account_id, "strategy_id": p.strategy_id,
                                     "instrument_id": p.instrument_id, "quantity": p.quantity,
                                     "avg_price": p.avg_price, "realized_pnl": p.realised_pnl,
                                     "ts_last": p.ts_last_ns, "fees": p.fees} for p in positions),
                    currencies=tuple(sorted((i, self._instrument(i).currency) for i in instruments)),
                    mode=self.mode, venue=self.venue.name)
                # The store must never hold a record the journal could still lose: acks are
                # appended without fdatasync, and a DuckDB commit is durable. After a power
                # loss, a store ahead of its journal refuses to start (see _replay).
                self.journal.commit()
                self.store.write_order_path(batch)
            except BaseException:
                with self._lock:
                    if self._pending_first:  # written meanwhile: this batch still comes first
                        self._pending_first, self._pending_start = first, start
                    else:
                        self._pending_first, self._pending_last, self._pending_start, self._pending_end = \
                            first, last, start, end
                    self._touched |= touched
                    self._final |= final
                    self._touched_positions |= keys
                    self._pending_since_ns = 0  # due again at once: the background flush retries
                raise
            for flush_listener in self._flush_listeners:
                try:
                    flush_listener(self.journal_name, last, last - first + 1)
                except Exception:
                    log.exception("on_flush listener failed after flushing %s", self.journal_name)
            return last - first + 1

    def _order_json(self, order: Order, created: int) -> bytes:
        """The order's ``orders`` row as one JSON object (Decimals as text), for DuckDB to read.

        What the intent fixes is encoded once per working order and kept until it is done;
        only the changing state is encoded at each flush.
        """
        coid = order.client_order_id
        state = order_state(order, created)
        fixed = self._order_fixed.pop(coid, None) if order.is_done else self._order_fixed.get(coid)
        if fixed is None:
            fixed = orjson.dumps(self._order_fixed_columns(order, created))[:-1] + b","
            if not order.is_done:
                self._order_fixed[coid] = fixed
        # copies, not orjson's own buffers: each of those pins a 4 kB heap chunk for as long as the row is kept
        return fixed + orjson.dumps(state)[1:]

    def _order_fixed_columns(self, order: Order, created: int) -> dict[str, Any]:
        intent = order.intent
        tags = {"reduce_only": intent.reduce_only, "why": intent.reason}
        if intent.stop_loss is not None:
            tags["stop_loss"] = str(intent.stop_loss)
        return {
            "client_order_id": order.client_order_id, "intent_id": intent.intent_id,
            "strategy_id": intent.strategy_id, "account_id": intent.account_id, "mode": self.mode,
            "venue": self.venue.name, "instrument_id": intent.instrument_id, "side": intent.side.value,
            "order_type": intent.order_type.value, "time_in_force": intent.time_in_force.value,
            "parent_order_id": client_order_id_for(intent.parent_id, intent.account_id) if intent.parent_id else None,
            "ts_init": created, "tags": orjson.dumps(tags, option=orjson.OPT_SORT_KEYS).decode(),
            "currency": self._instrument(intent.instrument_id).currency}

    def start(self) -> None:
        """Start the background flush (every ``flush_interval_ms``); idempotent."""
        if self._flusher is not None and self._flusher.is_alive():
            return
        self._stop_flusher.clear()
        self._flusher = threading.Thread(target=self._flush_loop, name="tradebook-oms-flush", daemon=True)
        self._flusher.start()

    def _flush_due(self) -> bool:
        """Something to copy; under sustained flow, only once the path is quiet or the oldest record is old enough."""
        waiting = self._pending_last - self._pending_first + 1 if self._pending_first else 0
        if waiting == 0:
            return False
        if waiting < self.flush_batch_records:
            return True  # ordinary flow: a small batch every tick
        now = monotonic_ns()
        return (now - self._last_record_ns >= self.flush_quiet_ms * 1_000_000
                or now - self._pending_since_ns >= self.flush_max_lag_ms * 1_000_000)

    def _flush_loop(self) -> None:
        while not self._stop_flusher.wait(self.flush_interval_ms / 1000):
            if not self._flush_due():
                continue
            try:
                self.flush()
                self.last_flush_error = None
            except Exception as exc:  # the journal holds everything; the next flush retries
                self.last_flush_error = exc
                log.exception("order-path flush to %s failed; will retry", self.store.path)

    def close(self, *, flush: bool = True) -> None:
        """Stop the background flush and (by default) write what the store lacks. The journal stays open."""
        self._stop_flusher.set()
        if self._flusher is not None:
            self._flusher.join()
            self._flusher = None
        if flush:
            self.flush()

    # -- recovery -----------------------------------------------------------------------
    def _replay(self) -> None:
        """Rebuild orders, fills and the portfolio from the journal (no venue calls)."""
        stored = self.store.journal_position(self.journal_name)
        if stored > len(self.journal):
            raise StoreError(f"the store holds {stored} records of journal {self.journal_name!r} but the journal has "
                             f"only {len(self.journal)}; is this the journal of this store?")
        with self._lock:
            offset = 0  # where the record starts in the file
            for index, body in enumerate(self.journal.encoded()):
                position = index + 1
                record = decode_record(body)
                try:
                    self._replay_record(record)
                except (OrderError, KeyError, ValueError) as exc:
                    raise StoreError(f"journal {self.journal.path}: record {position} cannot be replayed: {exc}; "
                                     "refusing to guess the order state") from exc
                if position > stored:
                    if not self._pending_first:
                        self._pending_first, self._pending_start = position, offset
                    self._pending_last = position
                    self._touch_replayed(record)
                offset += BODY_OFFSET + len(body) + 1
            if offset != self.journal.size:
                raise StoreError(f"journal {self.journal.path}: its records end at byte {self.journal.size} but "
                                 f"reading them ended at {offset}; was it written while this manager started?")
            self._pending_end = offset if self._pending_first else 0
            self._unresolved = {c for c, o in self._orders.items() if o.status in UNKNOWN_STATE_STATUSES}
            self._unresolved |= {c for c in self._replayed_duplicates if c in self._orders}
            started = now_ns()
            for coid in self._unresolved:  # sent before a crash: the venue's lookup may still lag behind it
                self._unresolved_since.setdefault(coid, started)
            self._inherited = frozenset(self._working)

    def _touch_replayed(self, record: dict[str, Any]) -> None:
        """What a replayed record not yet in the store changed: its rows go with the next flush."""
        kind = record["kind"]
        if kind == "intent":
            self._touched.add(client_order_id_for(record["intent"]["intent_id"], record["intent"]["account_id"]))
        elif kind == "event":
            event = record["event"]
            self._touched.add(event["client_order_id"])
            if event.get("fill") is not None and event["client_order_id"] in self._orders:
                intent = self._orders[event["client_order_id"]].intent
                self._touched_positions.add((intent.account_id, intent.strategy_id, intent.instrument_id))
        elif kind == "adjustment":
            self._touched_positions.add((record["account_id"], record["strategy_id"], record["fill"]["instrument_id"]))

    def _replay_record(self, record: dict[str, Any]) -> None:
        kind = record["kind"]
        if kind == "intent":
            intent = intent_from_record(record["intent"])
            self._set_order(intent.client_order_id, Order(intent))
            self._created_ns[intent.client_order_id] = int(record["ts"])
        elif kind == "event":
            event = event_from_record(record["event"])
            self._replayed_duplicates.discard(event.client_order_id)
            if event.fill is not None and event.fill.fill_id in self._fill_ids:
                return
            self._commit(event, self._orders[event.client_order_id].apply(event), journal=False)
        elif kind == "orphan":
            self._orphans.append(event_from_record(record["event"]))
        elif kind == "adjustment":
            fill = fill_from_record(record["fill"])
            self.portfolio.apply_fill(fill, self._instrument(fill.instrument_id), record["account_id"],
                                      record["strategy_id"])
            self._fills.append((fill, record["account_id"], record["strategy_id"]))
            self._fill_ids.add(fill.fill_id)
        elif kind == "alert":
            self._alerts.append(Alert(**record["alert"]))
            if record["alert"]["kind"] == "orphan_event":
                self._orphans_reported += 1
        elif kind == "rejection_code":
            self._reject_codes[record["client_order_id"]] = RejectCode(record["code"])
        elif kind == "duplicate":
            # the venue refused a copy of an order it holds: unresolved until reconciled (or a later event)
            self._replayed_duplicates.add(record["event"]["client_order_id"])
        elif kind != "illegal":
            raise ValueError(f"unknown record kind {kind!r}")

    def recover(self) -> RecoveryReport:
        """After a start or a crash: write into DuckDB what it lacks, and say what needs reconciling.

        The journal was replayed when this manager was built; orders in an unknown
        state are listed in the report and block their instruments until :meth:`reconcile`.
        """
        flushed = self.flush()
        with self._lock:
            return RecoveryReport(orders=len(self._orders), fills=len(self._fills),
                                  unresolved=tuple(sorted(self._unresolved)), orphans=len(self._orphans),
                                  records_flushed=flushed)

    async def reconcile(self, *, adopt_venue: bool = False,
                        fill_lookback_ns: int = DEFAULT_FILL_LOOKBACK_NS) -> list[Alert]:
        """Compare working orders and positions with the venue's; fix what can be fixed, alert on the rest.

        Missing fills are applied (by ``fill_id``, once); a venue's final state that we
        lack is adopted (reason ``'reconciled'``); an order the venue never received is
        sent now if it was still ``pending``, or rejected ``'never reached the venue'``
        if it was ``submitted``. Position mismatches raise alerts; with
        ``adopt_venue=True`` the venue's positions are adopted, booked as synthetic fills
        at the last price under the strategy ``_reconciliation`` (logged and journaled).
        """
        self._remember_loop()
        alerts: list[Alert] = []
        with self._lock:
            candidates = [o.client_order_id for o in self._orders.values() if not o.is_done]
            since = min((self._created_ns[c] for c in candidates), default=self.clock()) - fill_lookback_ns
        venue_fills: dict[str, list[Fill]] = {}
        for fill in await self.venue.fills(max(since, 0)):
            venue_fills.setdefault(fill.client_order_id, []).append(fill)
        to_send: list[OrderIntent] = []
        for coid in candidates:
            state = await self.venue.order_status(coid)
            with self._lock:
                self._reconcile_order(coid, state, venue_fills.get(coid, []), alerts, to_send)
        # fills the venue made on orders finished here (a fill after a cancel, missed while
        # disconnected): booked once, by fill id, as the stream would have
        with self._lock:
            late = [f for coid, fills in venue_fills.items() if coid not in candidates and coid in self._orders
                    for f in fills if f.fill_id not in self._fill_ids]
        if late:
            ts = self.clock()
            late.sort(key=lambda f: (f.ts_event_ns, f.fill_id))
            try:
                self._on_events_here([OrderEvent(f.client_order_id, E.FILLED, f.ts_event_ns, ts, fill=f,
                                                 reason="reconciled") for f in late])
            except OrderError as exc:
                alerts.append(self._raise_alert("reconcile_conflict", f"a venue fill could not be booked: {exc}"))
        for intent in to_send:
            await self._send(intent)
        with self._lock:
            for event in self._orphans[self._orphans_reported:]:
                alerts.append(self._raise_alert("orphan_event", f"{event.event_type} for unknown order "
                                                f"{event.client_order_id} (venue order {event.venue_order_id})"))
            self._orphans_reported = len(self._orphans)
            # entries whose protective stop was due when the process stopped
            stops = [_stop_intent(o, self.clock()) for o in self._orders.values()
                     if o.is_done and o.filled_qty > 0 and o.intent.stop_loss is not None]
        for stop in stops:
            base, attempt = stop.intent_id, 0
            # a stop that never reached the venue is not resent under its id: it goes under a new one
            while self._reject_codes.get(stop.client_order_id) is RejectCode.NEVER_REACHED_VENUE:
                attempt += 1
                stop = dataclasses.replace(stop, intent_id=f"{base}:resend:{attempt}")
            if stop.client_order_id not in self._orders:
                await self.submit(stop)
        alerts.extend(await self._reconcile_positions(adopt_venue))
        return alerts

    def _reconcile_order(self, coid: str, state: VenueOrderState | None, fills: list[Fill],
                         alerts: list[Alert], to_send: list[OrderIntent]) -> None:
        order = self._orders[coid]
        ts = self.clock()

        def adopt(event_type: OrderEventType, reason: str = "reconciled", **kw: Any) -> None:
            event = OrderEvent(coid, event_type, ts, ts, venue_order_id=state.venue_order_id if state else None,
                               reason=reason, **kw)
            try:
                self._apply_own(event)
            except IllegalTransitionError as exc:
                alerts.append(self._raise_alert("reconcile_conflict", f"{coid}: the venue says {event_type} but "
                                                f"our order is {self._orders[coid].status}: {exc}"))

        was_unresolved = order.status is S.UNRESOLVED
        if state is None:
            since = self._unresolved_since.get(coid, 0) if was_unresolved or order.status is S.SUBMITTED else 0
            if now_ns() - since < self.venue.order_visibility_grace_ns:
                return  # the venue may not show an order it just received yet: still unresolved, ask again
            if order.status is S.PENDING:
                self._apply_own(OrderEvent(coid, E.SUBMITTED, ts, ts, reason="reconciled: sent after restart"))
                to_send.append(order.intent)
            elif order.status is S.SUBMITTED or was_unresolved:
                adopt(E.REJECTED, NEVER_REACHED_VENUE_REASON, code=RejectCode.NEVER_REACHED_VENUE)
                self._append_encoded((rejection_code_record(coid, RejectCode.NEVER_REACHED_VENUE),))
                self._reject_codes[coid] = RejectCode.NEVER_REACHED_VENUE
                alerts.append(self._raise_alert(
                    "never_reached_venue", f"{coid} ({order.intent.intent_id}) was made durable but never reached "
                    f"{self.venue.name}: rejected, not resent under its id"))
            else:
                alerts.append(self._raise_alert("order_unknown_to_venue", f"{coid} is {order.status} here but the "
                                                "venue does not know it; marked cancelled"))
                adopt(E.CANCELLED, "reconciled: unknown to the venue")
            self._unresolved.discard(coid)
            return
        if order.status is S.PENDING:
            adopt(E.SUBMITTED)
        for fill in sorted(fills, key=lambda f: (f.ts_event_ns, f.fill_id)):
            if fill.fill_id in self._fill_ids:
                continue
            try:
                self._check_fill(self._orders[coid], fill)
                adopt(E.FILLED, fill=fill)
            except OrderError as exc:
                alerts.append(self._raise_alert("reconcile_conflict", f"{coid}: venue fill {fill.fill_id}: {exc}"))
        order = self._orders[coid]
        if order.filled_qty != state.filled_qty:
            alerts.append(self._raise_alert("fill_mismatch", f"{coid}: filled {order.filled_qty} here, "
                                            f"{state.filled_qty} at the venue (fills missing from its fill list)"))
        venue_status = OrderStatus(state.status)
        if venue_status in (S.CANCELLED, S.REJECTED, S.EXPIRED) and order.status is not venue_status:
            adopt({S.CANCELLED: E.CANCELLED, S.REJECTED: E.REJECTED, S.EXPIRED: E.EXPIRED}[venue_status])
        elif venue_status in (S.ACCEPTED, S.PARTIALLY_FILLED):
            if order.status is S.SUBMITTED or order.status is S.UNRESOLVED:
                adopt(E.ACCEPTED)
            elif order.status is S.PENDING_CANCEL:
                adopt(E.CANCEL_REJECTED, "reconciled: the venue still has it working")
            elif order.status is S.PENDING_REPLACE:
                asked = self._replace_requests.get(coid)
                done = asked is not None and all(
                    want is None or want == have for want, have in ((asked.quantity, state.quantity),
                                                                   (asked.limit_price, state.limit_price),
                                                                   (asked.stop_price, state.stop_price)))
                if done:
                    adopt(E.REPLACED, quantity=asked.quantity, limit_price=asked.limit_price,
                          stop_price=asked.stop_price)
                else:
                    adopt(E.REPLACE_REJECTED, "reconciled: the venue kept the old terms")
        order = self._orders[coid]
        if order.status is S.UNRESOLVED:
            # the venue has it but says nothing our lifecycle can take (e.g. filled, its fills missing)
            alerts.append(self._raise_alert("still_unresolved", f"{coid}: the venue has it as {venue_status}, "
                                            f"filled {state.filled_qty}; still unresolved here"))
            return
        if was_unresolved:
            alerts.append(self._raise_alert("unresolved_settled", f"{coid}: found at {self.venue.name} "
                                            f"({venue_status}, filled {state.filled_qty}); now {order.status}"))
        self._unresolved.discard(coid)

    async def _reconcile_positions(self, adopt_venue: bool) -> list[Alert]:
        account = self.venue.account_id
        theirs = {k: v for k, v in (await self.venue.positions()).items() if v != 0}
        alerts = []
        with self._lock:
            ours = {inst: qty for (_, inst), qty in self.portfolio.net_positions(account).items()}
            for inst in sorted(set(ours) | set(theirs)):
                mine, venue_qty = ours.get(inst, Decimal(0)), theirs.get(inst, Decimal(0))
                if mine == venue_qty:
                    continue
                alerts.append(self._raise_alert("position_mismatch", f"{account} {inst}: {mine} here, {venue_qty} "
                                                f"at {self.venue.name}"))
                if adopt_venue:
                    alert = self._adopt_position(account, inst, venue_qty - mine)
                    alerts.append(alert)
        return alerts

    def _adopt_position(self, account: str, instrument_id: str, difference: Decimal) -> Alert:
        try:
            instrument = self._instrument(instrument_id)
        except UnknownInstrumentError as exc:
            return self._raise_alert("adopt_failed", f"cannot adopt {instrument_id}: {exc}")
        price = self.portfolio.last_price(instrument_id)
        if price is None:
            return self._raise_alert("adopt_failed", f"cannot adopt the venue's {instrument_id} position: no price "
                                                     "known to book it at; mark the instrument first")
        ts = self.clock()
        fill = Fill(fill_id=f"reconciliation:{account}:{instrument_id}:{ts}", client_order_id="reconciliation",
                    instrument_id=instrument_id, side=Side.BUY if difference > 0 else Side.SELL,
                    quantity=abs(difference), price=price, fee=Decimal(0), liquidity="taker", ts_event_ns=ts,
                    ts_init_ns=ts)
        self._append_encoded((adjustment_record(account, RECONCILIATION_STRATEGY, fill),))
        self.portfolio.apply_fill(fill, instrument, account, RECONCILIATION_STRATEGY)
        self._fills.append((fill, account, RECONCILIATION_STRATEGY))
        self._fill_ids.add(fill.fill_id)
        self._touched_positions.add((account, RECONCILIATION_STRATEGY, instrument_id))
        return self._raise_alert("position_adopted", f"{account} {instrument_id}: adopted the venue's position "
                                                     f"({difference:+} at {price})")


# -- helpers --------------------------------------------------------------------------------
def _reject_code(code: Any) -> RejectCode:
    """An adapter's RejectCode (or its value); anything else is the venue's other reason."""
    try:
        return RejectCode(code)
    except ValueError:
        log.warning("venue rejection code %r is not a RejectCode; recorded as %s", code, RejectCode.VENUE_OTHER)
        return RejectCode.VENUE_OTHER


def _instrument_lookup(instruments) -> Callable[[str], Instrument]:
    if instruments is None:
        return get_instrument
    if callable(instruments) and not isinstance(instruments, Mapping):
        return instruments
    return lambda instrument_id: get_instrument(instrument_id, dict(instruments))


def _where(intent: OrderIntent) -> str:
    """How an error message names an intent."""
    return f"intent {intent.intent_id!r}"


def _check_decimal(value: Any, name: str, where: str, *, positive: bool = True) -> None:
    if not isinstance(value, Decimal):
        raise OrderError(f"{where}: {name} must be a Decimal, got {type(value).__name__} {value!r}")
    if not value.is_finite():
        raise OrderError(f"{where}: {name} must be finite, got {value}")
    if positive and value <= 0:
        raise OrderError(f"{where}: {name} must be positive, got {value}")


def _stop_intent(entry: Order, ts_ns: int) -> OrderIntent:
    intent = entry.intent
    return OrderIntent(
        intent_id=f"{intent.intent_id}{PROTECTIVE_STOP_SUFFIX}", strategy_id=intent.strategy_id,
        account_id=intent.account_id,
        instrument_id=intent.instrument_id, side=Side.SELL if intent.side == Side.BUY else Side.BUY,
        quantity=entry.filled_qty, order_type=OrderType.STOP, time_in_force=TimeInForce.GTC, ts_ns=ts_ns,
        stop_price=intent.stop_loss, parent_id=intent.intent_id, reduce_only=True,
        reason=f"stop-loss of {intent.intent_id}")
