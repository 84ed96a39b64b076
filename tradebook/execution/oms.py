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
(:meth:`bind_loop`, ``call_soon_threadsafe``) in the order they came. One lock guards the
in-memory state; it is held only for journal appends and in-memory updates, never across an
``await`` or a DuckDB write.

Parts: this module holds the lifecycle (commands, venue events, the journal write and the
state they change); the rest of :class:`OrderManager` comes from one module per job, each a
class it inherits: checks (:mod:`~tradebook.execution.oms_checks`), venue failures
(:mod:`~tradebook.execution.oms_failures`), cancel-all and flatten
(:mod:`~tradebook.execution.oms_flatten`), views (:mod:`~tradebook.execution.oms_views`), the
store copy (:mod:`~tradebook.execution.oms_flush`), journal replay
(:mod:`~tradebook.execution.oms_replay`) and reconciliation (:mod:`~tradebook.execution.oms_reconcile`);
what they share is in :mod:`~tradebook.execution.oms_common`. The journal records are built by
:mod:`tradebook.store.records`. Positions are the caller's book (:class:`~tradebook.execution.oms_common.PositionBook`,
a :class:`tradebook.portfolio.Portfolio` in a session): the order manager posts fills to it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from time import monotonic_ns

from tradebook.errors import ConfigError, NotSentError, OrderError
from tradebook.execution.oms_checks import OrderChecks, check_decimal, instrument_lookup
from tradebook.execution.oms_common import (
    DONE,
    OUTCOME_UNKNOWN,
    PENDING,
    REJECTED_EVENT,
    REPLACE_ANSWERS,
    REPLACE_REQUESTED,
    REPLACED_EVENT,
    SUBMITTED_EVENT,
    Alert,
    AlertListener,
    DEFAULT_FLUSH_BATCH_RECORDS,
    DEFAULT_FLUSH_INTERVAL_MS,
    DEFAULT_FLUSH_MAX_LAG_MS,
    DEFAULT_FLUSH_QUIET_MS,
    DEFAULT_NOT_SENT_BACKOFF_S,
    DEFAULT_NOT_SENT_RETRIES,
    DUPLICATE_REASON,
    PROTECTIVE_STOP_SUFFIX,
    RECONCILIATION_STRATEGY,
    RecoveryReport,
    E,
    FillListener,
    FlushListener,
    OrderListener,
    PositionBook,
    S,
    SYNC_POLICIES,
    protective_stop,
)
from tradebook.execution.oms_failures import VenueFailures
from tradebook.execution.oms_flatten import Flatten
from tradebook.execution.oms_flush import StoreCopy
from tradebook.execution.oms_reconcile import Reconciliation
from tradebook.execution.oms_replay import JournalReplay
from tradebook.execution.oms_views import OrderViews
from tradebook.model.instruments import Instrument
from tradebook.model.orders import (
    Fill,
    Order,
    OrderEvent,
    OrderEventType,
    OrderIntent,
    OrderStatus,
    OrderType,
    RejectCode,  # re-exported: callers import it from here
)
from tradebook.model.time import now_ns
from tradebook.store.journal import Journal
from tradebook.store.records import (
    alert_record,
    duplicate_record,
    event_record,
    illegal_record,
    intent_record,
    order_state,
    orphan_record,
)
from tradebook.store.store import Store
from tradebook.venues.base import Capability, VenuePort

# the names callers import from here, wherever they live now
__all__ = ["Alert", "OrderManager", "PROTECTIVE_STOP_SUFFIX", "RECONCILIATION_STRATEGY", "RecoveryReport", "RejectCode"]

log = logging.getLogger(__name__)


class OrderManager(OrderChecks, VenueFailures, Flatten, OrderViews, StoreCopy, JournalReplay, Reconciliation):
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
        portfolio: PositionBook,
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
        self._lookup = instrument_lookup(instruments)
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
        # fills after a cancel or expiry, alerted once the lock is released: (order, status before, after, fill id)
        self._late_fill_alerts: list[tuple[str, OrderStatus, OrderStatus, str]] = []
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
            submitted = SUBMITTED_EVENT
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
                check_decimal(quantity, "replace quantity", client_order_id)
                instrument.conform_quantity(quantity)
                if quantity <= order.filled_qty:
                    raise OrderError(f"replace of {client_order_id}: quantity {quantity} must exceed what has "
                                     f"filled ({order.filled_qty})")
            for name, price in (("limit_price", limit_price), ("stop_price", stop_price)):
                if price is not None:
                    check_decimal(price, f"replace {name}", client_order_id, positive=False)
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
                if kind is REJECTED_EVENT and order.status is not PENDING and (
                        event.code is RejectCode.DUPLICATE_CLIENT_ID or event.reason.startswith(DUPLICATE_REASON)):
                    # We sent an order the venue already holds (a resend after a fault): the refusal
                    # is about the copy, not the order. Its state is whatever the venue says:
                    # reconciliation asks.
                    bodies.append(duplicate_record(event))
                    self._unresolved.add(coid)
                    log.warning("venue %s already holds %s; reconciling its state", self.venue.name, coid)
                    continue
                if kind is REPLACED_EVENT and event.quantity is None and event.limit_price is None \
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
                if order.status in DONE:
                    # a fill after a cancel or expiry: booked; an order's row travels in one record
                    # at most, so this one (and its earlier final record) is rebuilt in Python
                    bodies.append(event_record(event))
                    refinished.append(coid)
                    if fill is not None:
                        self._late_fill_alerts.append((coid, order.status, updated.status, fill.fill_id))
                elif updated.status in DONE and coid not in inherited:
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
        if kind is REPLACE_REQUESTED:
            self._replace_requests[coid] = event
        elif kind is OUTCOME_UNKNOWN:
            self._unresolved_since.setdefault(coid, now_ns())
        elif self._replace_requests and kind in REPLACE_ANSWERS:
            self._replace_requests.pop(coid, None)
        elif event.code is not None and kind is REJECTED_EVENT:  # a venue's rejected event says why
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
        if order.status in DONE:  # order.is_done, without the property call
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
            stop = protective_stop(after, self.clock())
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
