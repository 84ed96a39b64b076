"""The decision price of each order, noted by the session as it decides, written to the store by the TCA update.

A session knows the reference quote it priced an order (or an algo parent) against; a live
session may store no quotes, so that mid is otherwise lost. Noting it costs the order path
one tuple appended under a lock; :func:`tradebook.tca.update_tca` drains the notes into
``tca_decisions`` in the process that holds the store's writer. A note lost to a crash
before the next update leaves TCA to fall back to the stored quotes' mid at the order's
creation (see :mod:`tradebook.tca.update`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from decimal import Decimal

from tradebook.model.orders import OrderIntent, client_order_id_for


@dataclass(frozen=True)
class DecisionNote:
    """One ``tca_decisions`` row: an order (level 'order') or an algo parent (level 'parent')."""

    order_id: str  # the client order id (an algo parent's: derived from its intent id as its children's parent id)
    level: str
    account_id: str
    strategy_id: str
    instrument_id: str
    side: str
    quantity: Decimal
    order_type: str
    signal_ts_ns: int | None
    decision_ts_ns: int
    decision_price: float | None  # the reference quote's mid; None: not known (TCA reads the stored quotes)


class TcaRecorder:
    """Decision notes waiting for the next TCA update (thread-safe; the order path only appends)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._notes: list[DecisionNote] = []

    def __len__(self) -> int:
        return len(self._notes)

    def note_order(self, intent: OrderIntent, *, decision_ts_ns: int, decision_price: float | None,
                   signal_ts_ns: int | None = None) -> None:
        """An order about to be sent: the mid it was priced against at ``decision_ts_ns`` (session time)."""
        note = DecisionNote(intent.client_order_id, "order", intent.account_id, intent.strategy_id,
                            intent.instrument_id, str(intent.side), intent.quantity, str(intent.order_type),
                            signal_ts_ns, decision_ts_ns, decision_price)
        with self._lock:
            self._notes.append(note)

    def note_parent(self, parent: OrderIntent, algo: str, *, decision_ts_ns: int, decision_price: float | None,
                    signal_ts_ns: int | None = None) -> None:
        """An algo parent (``parent`` its never-sent intent, ``algo`` 'twap' or 'vwap'): its whole quantity."""
        order_id = client_order_id_for(parent.intent_id, parent.account_id)
        note = DecisionNote(order_id, "parent", parent.account_id, parent.strategy_id, parent.instrument_id,
                            str(parent.side), parent.quantity, algo, signal_ts_ns, decision_ts_ns, decision_price)
        with self._lock:
            self._notes.append(note)

    def drain(self) -> list[DecisionNote]:
        """Take every note (the caller writes them, or hands them back with :meth:`restore` on failure)."""
        with self._lock:
            notes, self._notes = self._notes, []
        return notes

    def restore(self, notes: list[DecisionNote]) -> None:
        """Put back notes a failed update did not write, ahead of newer ones."""
        with self._lock:
            self._notes[:0] = notes


__all__ = ["DecisionNote", "TcaRecorder"]
