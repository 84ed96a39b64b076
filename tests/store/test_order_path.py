"""The store's copy of the order journal (tradebook.store.order_path): rejection codes reach order_events."""

from __future__ import annotations

import json
from decimal import Decimal

from tradebook.model.instruments import Side
from tradebook.model.orders import OrderEvent, OrderEventType, OrderIntent, OrderType, RejectCode, TimeInForce
from tradebook.store import Store
from tradebook.store.order_path import OrderPathBatch
from tradebook.store.records import encode_record, event_to_record, intent_record, rejection_code_record

E = OrderEventType
T0 = 1_723_161_254_000_000_000


def rejected_order(n: int, code: RejectCode | None) -> tuple[OrderIntent, list[OrderEvent]]:
    intent = OrderIntent(f"s:{n}", "s", "paper", "BTCUSDT.BINANCE", Side.BUY, Decimal("0.01"), OrderType.LIMIT,
                         TimeInForce.GTC, T0, limit_price=Decimal("61000"))
    coid = intent.client_order_id
    return intent, [OrderEvent(coid, E.SUBMITTED, T0 + 1, T0 + 1),
                    OrderEvent(coid, E.ACCEPTED, T0 + 2, T0 + 2),
                    OrderEvent(coid, E.REJECTED, T0 + 3, T0 + 3, reason="refused later", code=code)]


def test_a_rejections_code_reaches_order_events_from_the_event_or_from_an_older_journals_record(store: Store):
    new_intent, new_events = rejected_order(1, RejectCode.INSUFFICIENT_FUNDS)
    old_intent, old_events = rejected_order(2, None)
    old_rejected = event_to_record(old_events[-1])
    del old_rejected["code"]  # as journals wrote it before events carried codes
    records = [intent_record(new_intent, T0), *(encode_record({"kind": "event", "event": event_to_record(e)})
                                                for e in new_events),
               intent_record(old_intent, T0), *(encode_record({"kind": "event", "event": event_to_record(e)})
                                                for e in old_events[:-1]),
               encode_record({"kind": "event", "event": old_rejected}),
               rejection_code_record(old_intent.client_order_id, "min_notional")]
    assert store.write_order_path(OrderPathBatch("codes.journal", 1, len(records), records=tuple(records)))
    rows = store.con.execute("SELECT client_order_id, event_type, payload FROM order_events "
                             "ORDER BY journal_position").fetchall()
    payloads = {(coid, kind): json.loads(payload) for coid, kind, payload in rows}
    assert payloads[new_intent.client_order_id, "rejected"] == {"reject_code": "insufficient_funds"}
    assert payloads[old_intent.client_order_id, "rejected"] == {"reject_code": "min_notional"}
    # only the rejection carries it
    assert payloads[old_intent.client_order_id, "accepted"] == {} == payloads[new_intent.client_order_id, "submitted"]
