"""An in-process publish/subscribe of order-path events (orders, fills, alerts, session state).

The one rule: the order path never waits for a subscriber. :meth:`EventBus.publish` puts
the event on each interested subscriber's own bounded queue and returns; each subscriber
runs its callback on its own thread. A subscriber that is slow loses its oldest events
once its queue is full (counted in :attr:`Subscription.dropped`); one that raises is
logged and counted (:attr:`Subscription.failed`) and keeps receiving. ``publish`` never
raises and never blocks beyond a short lock per subscriber.

Kinds the session publishes (payload keys in brackets):

- ``"order"``: an order changed [client_order_id, intent_id, strategy_id, account_id, instrument_id, side,
  order_type, status, quantity, filled_qty, avg_price, fees, limit_price, reason, parent_id];
- ``"fill"``: one execution [the :class:`~tradebook.model.orders.Fill` fields, account_id, strategy_id];
- ``"alert"``: something a human should look at [kind, message, severity, subject];
- ``"session"``: the session's state or its kill switch changed [state, or kill_switch/reason/flatten_requested];
- ``"flushed"``: the store's copy of the order journal caught up [journal, position, records];
- ``"quote"``: the last quote of an instrument, at most one per instrument per second of session time
  [instrument_id, bid, ask].

Times are int64 UTC ns (``ts_ns``: the session's clock when it happened). The payloads are
built by :class:`tradebook.execution.publisher.SessionPublisher`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from tradebook.errors import ConfigError, SessionError

log = logging.getLogger(__name__)

EVENT_KINDS = frozenset({"order", "fill", "alert", "session", "flushed", "quote"})
DEFAULT_MAX_QUEUE = 10_000
# a subscriber that keeps raising is logged in full this many times, then once every FAILURE_LOG_EVERY
FAILURES_LOGGED_IN_FULL = 3
FAILURE_LOG_EVERY = 1_000


@dataclass(frozen=True, slots=True)
class BusEvent:
    """One event: what happened (``kind``), when (int64 UTC ns) and its fields (read-only)."""

    kind: str
    ts_ns: int
    payload: Mapping[str, Any]


class Subscription:
    """One subscriber: its bounded queue, its thread and its counters.

    ``delivered`` counts callbacks that returned, ``failed`` those that raised, ``dropped``
    events pushed out of a full queue (the oldest go first).
    """

    def __init__(self, name: str, callback: Callable[[BusEvent], None], kinds: frozenset[str] | None,
                 max_queue: int, on_close: Callable[[Subscription], None]) -> None:
        self.name = name
        self.kinds = kinds
        self.max_queue = max_queue
        self._callback = callback
        self._on_close = on_close
        self._queue: deque[BusEvent] = deque()
        self._ready = threading.Condition(threading.Lock())
        self._busy = False  # a callback is running (drain() waits for it too)
        self._closing = False
        self.dropped = 0
        self.failed = 0
        self.delivered = 0
        self._thread = threading.Thread(target=self._run, name=f"tradebook-bus-{name}", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return (f"<Subscription {self.name!r}: {self.delivered} delivered, {self.pending} pending, "
                f"{self.dropped} dropped, {self.failed} failed{', closed' if self.closed else ''}>")

    @property
    def pending(self) -> int:
        """Events queued, not yet handed to the callback."""
        return len(self._queue)

    @property
    def closed(self) -> bool:
        return self._closing

    @property
    def alive(self) -> bool:
        """The subscriber's thread still runs (a callback that hangs keeps it alive after close)."""
        return self._thread.is_alive()

    def offer(self, event: BusEvent) -> None:
        """Queue ``event`` without waiting; a full queue lets go of its oldest event."""
        with self._ready:
            if self._closing:
                return
            queue = self._queue
            if len(queue) >= self.max_queue:
                queue.popleft()
                self.dropped += 1
            queue.append(event)
            self._ready.notify()

    def drain(self, timeout: float = 5.0) -> bool:
        """Wait until every queued event has been handled; False if ``timeout`` s passed first."""
        deadline = time.monotonic() + timeout
        with self._ready:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return not self._queue and not self._busy
                self._ready.wait(min(left, 0.05))
        return True

    def close(self, timeout: float = 5.0) -> bool:
        """Stop after the events already queued; True once the thread ended within ``timeout`` s."""
        self._stop_taking()
        return self._join(timeout)

    def _stop_taking(self) -> None:
        with self._ready:
            self._closing = True
            self._ready.notify_all()
        self._on_close(self)

    def _join(self, timeout: float) -> bool:
        if threading.current_thread() is self._thread:
            return False  # closed from its own callback: the thread ends when the callback returns
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("bus subscriber %r did not finish within %.1f s (a callback still runs, %d events "
                        "pending); its thread is left to end on its own", self.name, timeout, self.pending)
            return False
        return True

    def _run(self) -> None:
        ready, queue = self._ready, self._queue
        while True:
            with ready:
                while not queue and not self._closing:
                    ready.wait()
                if not queue:
                    return  # closing, and everything queued was handled
                event = queue.popleft()
                self._busy = True
            try:
                self._callback(event)
                self.delivered += 1
            except Exception:  # noqa: BLE001 - a subscriber's failure is its own; the next event still comes
                self.failed += 1
                if self.failed <= FAILURES_LOGGED_IN_FULL or self.failed % FAILURE_LOG_EVERY == 0:
                    log.exception("bus subscriber %r failed on a %r event (%d failures so far)", self.name,
                                  event.kind, self.failed)
            finally:
                with ready:
                    self._busy = False
                    if not queue:
                        ready.notify_all()  # drain() waits for this


class EventBus:
    """Publish order-path events to subscribers, each on its own thread with its own bounded queue.

    ``subscribe(name, callback, kinds=...)`` returns a :class:`Subscription`; ``publish(kind,
    payload, ts_ns)`` never blocks nor raises; :meth:`close` stops every subscriber, joining
    their threads with a timeout. A kind nobody listens to costs one dictionary lookup.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscriptions: list[Subscription] = []
        self._routes: dict[str, tuple[Subscription, ...]] = {}  # kind -> its subscribers, rebuilt on change
        self._closed = False
        self.published = 0

    def __repr__(self) -> str:
        names = ", ".join(s.name for s in self._subscriptions) or "no subscribers"
        return f"<EventBus: {self.published} published, {names}{', closed' if self._closed else ''}>"

    @property
    def subscriptions(self) -> tuple[Subscription, ...]:
        return tuple(self._subscriptions)

    def subscribe(self, name: str, callback: Callable[[BusEvent], None], *, kinds: Collection[str] | None = None,
                  max_queue: int = DEFAULT_MAX_QUEUE) -> Subscription:
        """Call ``callback(event)`` on a thread of its own for each event of ``kinds`` (default: all)."""
        if not callable(callback):
            raise ConfigError(f"bus subscriber {name!r}: callback must be callable as callback(event), "
                              f"got {type(callback).__name__}")
        if isinstance(max_queue, bool) or not isinstance(max_queue, int) or max_queue < 1:
            raise ConfigError(f"bus subscriber {name!r}: max_queue must be an int >= 1, got {max_queue!r}")
        if isinstance(kinds, str):
            kinds = (kinds,)
        wanted = None if kinds is None else frozenset(kinds)
        if wanted is not None and not wanted <= EVENT_KINDS:
            raise ConfigError(f"bus subscriber {name!r}: unknown kinds {sorted(wanted - EVENT_KINDS)}; expected some "
                              f"of {sorted(EVENT_KINDS)}")
        with self._lock:
            if self._closed:
                raise SessionError(f"bus subscriber {name!r}: the bus is closed (its session stopped)")
            subscription = Subscription(name, callback, wanted, max_queue, self._forget)
            self._subscriptions.append(subscription)
            self._routes = {}
        return subscription

    def publish(self, kind: str, payload: Mapping[str, Any], ts_ns: int) -> None:
        """Hand the event to each subscriber of ``kind``; never waits for one, never raises."""
        try:
            routes = self._routes.get(kind)
            if routes is None:
                routes = self._route(kind)
            self.published += 1
            if not routes:
                return
            event = BusEvent(kind, ts_ns, MappingProxyType(payload) if isinstance(payload, dict) else payload)
            for subscription in routes:
                subscription.offer(event)
        except Exception:  # noqa: BLE001 - the order path must go on whatever a payload holds
            log.exception("bus: publishing a %r event failed", kind)

    def close(self, timeout: float = 5.0) -> list[str]:
        """Stop every subscriber after its queued events, all within ``timeout`` s in total.

        Returns the names of subscribers whose thread had not ended in time (logged).
        """
        with self._lock:
            self._closed = True
            subscriptions = list(self._subscriptions)
        for subscription in subscriptions:  # all first: each drains while the others are joined
            subscription._stop_taking()
        deadline = time.monotonic() + timeout
        late = []
        for subscription in subscriptions:
            if not subscription._join(max(deadline - time.monotonic(), 0.0)):
                late.append(subscription.name)
        return late

    @property
    def closed(self) -> bool:
        return self._closed

    def wants(self, kind: str) -> bool:
        """Someone subscribes to ``kind`` (a publisher skips building a payload nobody reads)."""
        routes = self._routes.get(kind)
        return bool(routes if routes is not None else self._route(kind))

    def _route(self, kind: str) -> tuple[Subscription, ...]:
        with self._lock:
            routes = tuple(s for s in self._subscriptions if s.kinds is None or kind in s.kinds)
            self._routes[kind] = routes
        return routes

    def _forget(self, subscription: Subscription) -> None:
        with self._lock:
            if subscription in self._subscriptions:
                self._subscriptions.remove(subscription)
                self._routes = {}
