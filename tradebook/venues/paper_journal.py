"""The paper venue's durability: its journal written with group commit, and its book recovered from it on restart.

The records are written by :mod:`tradebook.venues.paper_records`; what recovery keeps and loses is in the
module doc of :mod:`tradebook.venues.paper` (Restart).
"""

from __future__ import annotations

import math
from typing import Any

from tradebook.errors import ConfigError, StoreError, TradebookError
from tradebook.model.instruments import Side
from tradebook.model.orders import Fill, OrderIntent, OrderStatus, OrderType, TimeInForce
from tradebook.sim import orders as sim_orders
from tradebook.sim.orders import OrderSpec
from tradebook.store.journal import JournalCorruptError
from tradebook.store.records import encode_record
from tradebook.venues.paper_orders import InstrumentSlot, OrderShape, VenueOrder
from tradebook.venues.paper_records import order_record


class PaperJournal:
    """Journal writes, commit, and recovery. Part of :class:`~tradebook.venues.paper.PaperVenue`: it works on the
    venue's state (set up in ``PaperVenue.__init__``) under its lock, like the rest of the class.
    """

    def _write_order(self, order: VenueOrder, intent: OrderIntent, shape: OrderShape, slot: InstrumentSlot,
                     number: int) -> None:
        """Journal the venue's receipt of ``order`` (the 'order' record); ``number``: its venue order number."""
        self._write_encoded(order_record(order, number, intent.intent_id, intent.strategy_id, shape.record_terms,
                                         slot.instrument_json, self._order_id_json, self._text_json))

    def _write(self, record: dict[str, Any]) -> None:
        self._write_encoded(encode_record(record))

    def _write_encoded(self, body: bytes) -> None:
        # Group commit: encoded already (a record that cannot be written failed there), written
        # with the rest of this call's records in one write when the call ends (a kill -9 after
        # that keeps them), made durable by _deliver's commit before any event derived from
        # them leaves the venue, and before any query answers.
        self._check_writable()
        self._unwritten.append(body)
        self._uncommitted = True

    def _check_writable(self) -> None:
        if self._closed:
            raise StoreError(f"paper venue {self.account_id} is closed; build a new PaperVenue on {self.state_dir} "
                             "to resume")

    def _write_out(self) -> None:
        """This call's records to the journal, one write, no fdatasync."""
        if self._unwritten and not self._closed:
            bodies, self._unwritten = self._unwritten, []
            self._journal.append_encoded(bodies, sync=False)

    def _commit(self) -> None:
        """Make every journaled change durable (one fdatasync) before the venue tells anyone about it."""
        # the venue is its journal's only writer: nothing written since the last commit, nothing to sync
        if self._uncommitted and not self._closed:
            self._write_out()
            self._journal.commit()
            self._uncommitted = False

    def _recover(self) -> None:
        """Rebuild the account, orders and fills from the journal (no event is delivered)."""
        records = iter(self._journal.records())
        header = next(records)
        if header.get("kind") != "open":
            raise JournalCorruptError(f"{self._journal.path}: the first record is {header.get('kind')!r}; "
                                      "expected the account's 'open' record")
        if header["account_id"] != self.account_id or header["currency"] != self.currency:
            raise ConfigError(f"{self._journal.path} holds account {header['account_id']} in {header['currency']}; "
                              f"expected {self.account_id} in {self.currency} (use another state_dir)")
        self._cash = header["starting_cash"]
        self.book_id = header.get("book_id", "")
        latest = 0
        for position, record in enumerate(records, start=2):
            latest = max(latest, int(record.get("ts", 0)))
            try:
                self._replay(record)
            except (KeyError, TypeError, ValueError) as exc:
                raise JournalCorruptError(f"{self._journal.path}: record {position} ({record.get('kind')!r}) "
                                          f"cannot be applied: {exc!r}") from exc
        self._now_ns = latest if latest > 0 else None

    def _replay(self, record: dict[str, Any]) -> None:
        kind = record["kind"]
        if kind == "book":  # the quote in force at a clean close (see close): the engine starts from it
            self._books[record["instrument_id"]] = (int(record["ts"]), float(record["bid"]), float(record["ask"]),
                                                    float(record["bid_sz"]), float(record["ask_sz"]))
            return
        if kind == "order":
            slot = self._slots.get(record["instrument_id"])
            if slot is None:
                raise ConfigError(f"{self._journal.path} holds orders for {record['instrument_id']}, which has no "
                                  f"fill model here; expected models for {record['instrument_id']} too")
            order = VenueOrder(
                client_order_id=record["client_order_id"], venue_order_id=record["venue_order_id"],
                instrument_id=record["instrument_id"], side=Side(record["side"]),
                order_type=OrderType(record["order_type"]), time_in_force=TimeInForce(record["time_in_force"]),
                quantity=record["quantity"], limit_price=record["limit_price"], stop_price=record["stop_price"],
                expire_ts_ns=int(record["expire_ts_ns"]), reference_price=record["reference_price"],
                received_ts_ns=int(record["ts"]), reduce_only=bool(record["reduce_only"]))
            self._orders[order.client_order_id] = order
            self._working[order.client_order_id] = order
            self._hold(order, slot)
            self._next_order_number += 1
            return
        order = self._orders[record["client_order_id"]]
        if kind == "accepted":
            order.acked = True
        elif kind == "fill":
            slot = self._slots[order.instrument_id]
            fill = Fill(fill_id=record["fill_id"], client_order_id=order.client_order_id,
                        instrument_id=order.instrument_id, side=order.side, quantity=record["quantity"],
                        price=record["price"], fee=record["fee"], liquidity=record["liquidity"],
                        ts_event_ns=int(record["ts"]), ts_init_ns=int(record["ts_init_ns"]))
            cash, position, avg = self._after_fill(slot.instrument, order.sign, fill.quantity, fill.price, fill.fee)
            if cash != record["cash"] or position != record["position"]:
                raise JournalCorruptError(
                    f"{self._journal.path}: fill {fill.fill_id} recomputes to cash {cash} and position {position}, "
                    f"the journal says {record['cash']} and {record['position']}")
            self._apply_fill(order, fill, cash, position, avg)
        elif kind == "cancel_request":
            order.cancel_pending = True
        elif kind == "replace_request":
            order.replace_pending = (record["quantity"], record["limit_price"], int(record["arrival_ns"]))
            self._slots[order.instrument_id].replacing[order.client_order_id] = order
        elif kind == "replaced":
            self._apply_replace(order, record["quantity"], record["limit_price"])
        elif kind == "replace_rejected":
            order.replace_pending = None
        elif kind in ("cancelled", "expired"):
            self._finish(order, OrderStatus.CANCELLED if kind == "cancelled" else OrderStatus.EXPIRED,
                         record["reason"])
        else:
            raise JournalCorruptError(f"{self._journal.path}: unknown record kind {kind!r}")

    def _restore_working_orders(self) -> None:
        """Put recovered working orders back into the fresh engines (remaining quantity; queue place lost).

        After a clean close the engines first get the quote that was in force (``book``
        records), as without a restart; after a crash they start empty.
        """
        base = self._now_ns if self._now_ns is not None else 0
        if self._working:
            for instrument_id, (ts, bid, ask, bid_sz, ask_sz) in self._books.items():
                slot = self._slots.get(instrument_id)
                if slot is not None and ts <= base:
                    slot.engine.on_quotes(ts, bid, ask, bid_sz, ask_sz)
                    self._note_touch(instrument_id, bid, ask)
        for order in list(self._working.values()):
            slot = self._slots[order.instrument_id]
            order_type = order.order_type
            if order.filled_qty > 0 and order_type is OrderType.STOP:
                order_type = OrderType.MARKET  # it had triggered
            elif order.filled_qty > 0 and order_type is OrderType.STOP_LIMIT:
                order_type = OrderType.LIMIT
            has_limit = order_type in (OrderType.LIMIT, OrderType.STOP_LIMIT)
            has_stop = order_type in (OrderType.STOP, OrderType.STOP_LIMIT)
            # built directly: the order conformed when it arrived, and a remainder may sit below the minimum notional
            spec = OrderSpec(instrument_id=order.instrument_id, side=order.sign, quantity=float(order.remaining),
                             order_type=sim_orders.OrderType(order_type.value),
                             limit_px=float(order.limit_price) if has_limit else math.nan,
                             stop_px=float(order.stop_price) if has_stop else math.nan,
                             tif=sim_orders.TimeInForce(order.time_in_force.value), expire_ts_ns=order.expire_ts_ns)
            order.last_arrival_ns = -sim_orders.NEVER_NS
            ts, k = self._request_ts(slot, base)
            self._send(slot, order, spec, ts, k)
            if order.cancel_pending:
                ts, k = self._request_ts(slot, base, order)
                slot.engine.cancel(order.engine_id, ts)
                self._count_request(slot, order, ts, k)
            elif order.replace_pending is not None:
                self._resend_replace(slot, order, base)

    def _resend_replace(self, slot: InstrumentSlot, order: VenueOrder, base: int) -> None:
        new_qty, new_limit, _ = order.replace_pending
        ts, k = self._request_ts(slot, base, order)
        try:
            # the engine's order holds only the remainder now: the same change, relative to it
            slot.engine.replace(order.engine_id, ts, limit_px=float(new_limit) if new_limit is not None else None,
                                quantity=float(new_qty - order.engine_offset) if new_qty is not None else None)
        except TradebookError as exc:
            self._write({"kind": "replace_rejected", "ts": ts, "client_order_id": order.client_order_id,
                         "reason": f"{type(exc).__name__}: {exc}"})
            order.replace_pending = None
            return
        arrival = self._count_request(slot, order, ts, k)
        order.replace_pending = (new_qty, new_limit, arrival)
        slot.replacing[order.client_order_id] = order
