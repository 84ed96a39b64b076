"""The order manager's copy of its journal into DuckDB: the batch it hands the store, and the background flush.

See the module doc of :mod:`tradebook.execution.oms` for why the copy is batched, off the hot path, and
never ahead of the journal."""

from __future__ import annotations

import logging
import threading
from time import monotonic_ns
from typing import Any

import orjson

from tradebook.model.orders import Order, client_order_id_for
from tradebook.store.records import order_state
from tradebook.store.order_path import OrderPathBatch

log = logging.getLogger("tradebook.execution.oms")  # the order manager logs under one name, whichever part speaks


class StoreCopy:
    """Flush journal records into the store, explicitly or from a background thread. Part of
    :class:`~tradebook.execution.oms.OrderManager`: it works on the manager's state (set up in
    ``OrderManager.__init__``) under its lock, like the rest of the class.
    """

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
