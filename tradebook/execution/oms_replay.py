"""The order manager's recovery: replay its journal into orders, fills and positions (no venue calls), then copy
into the store what it lacks."""

from __future__ import annotations

from typing import Any

from tradebook.errors import OrderError, StoreError
from tradebook.execution.oms_common import Alert, RecoveryReport, UNKNOWN_STATE_STATUSES
from tradebook.model.orders import Order, RejectCode, client_order_id_for
from tradebook.model.time import now_ns
from tradebook.store.records import BODY_OFFSET, decode_record, event_from_record, fill_from_record, intent_from_record


class JournalReplay:
    """Rebuild the state from the journal at construction; :meth:`recover` after a start or a crash. Part of
    :class:`~tradebook.execution.oms.OrderManager`: it works on the manager's state (set up in
    ``OrderManager.__init__``) under its lock, like the rest of the class.
    """

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
