"""A session's own journal read back at construction: replay progress, decisions, kill-switch changes,
flattens, deferred orders and algo parents with their slices still due."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from tradebook.execution.algos import ParentOrder, ScheduledChild, TwapSchedule, VwapSchedule
from tradebook.execution.risk import KillSwitchTransition
from tradebook.model.orders import OrderStatus
from tradebook.session_parts.state import (
    AlgoParent,
    Decision,
    DecisionCode,
    DeferredOrder,
    ScheduledSlice,
    WatchedSlice,
    attempt_number,
)
from tradebook.store.records import intent_from_record


class SessionRecovery:
    """What survives a restart (a part of Session: it fills the session's state)."""

    def _recover_session_journal(self) -> int | None:
        self._finished_cleanly = False
        resume = None
        algos: list[dict[str, Any]] = []
        stopped: dict[str, str] = {}  # algo parents whose remaining slices were cancelled, with why
        deferred: dict[str, DeferredOrder] = {}  # deferrals by client order id, with the steps tried since
        for record in self._journal.records():
            kind = record["kind"]
            if kind == "batch":
                for entry in deferred.values():
                    entry.attempts += 1
                resume = record["end_ns"]
                self._now = max(self._now, record["end_ns"] - 1)
                self._last_end_ns = max(self._last_end_ns, record["end_ns"])
                self._finished_cleanly = False  # a later feed went on
            elif kind == "decision":
                decision = Decision(**{**record["decision"],
                                       "client_order_ids": tuple(record["decision"]["client_order_ids"])})
                self.decisions.append(decision)
                self._decided.add((decision.strategy_id, decision.signal_id))
                if record.get("terms") is not None:  # records before terms were kept compare as the same signal
                    self._terms.setdefault((decision.strategy_id, decision.signal_id), record["terms"])
                if decision.code == DecisionCode.NEVER_REACHED_VENUE:
                    self._unsent_decided.update(decision.client_order_ids)
            elif kind == "kill_switch":
                mode, reason, ts = record["mode"], record["reason"], record["ts_ns"]
                if mode == "halted":
                    self.kill_switch.halt(reason, ts)
                elif mode == "reduce_only":
                    self.kill_switch.reduce_only(reason, ts)
                else:
                    self.kill_switch.resume(reason, ts)
            elif kind == "flatten":
                self._flatten_request = (record["request_id"], record["reason"])
                self.kill_switch.request_flatten(record["reason"], record["ts_ns"])
            elif kind == "flatten_done":
                self._flatten_request = None
                self.kill_switch.flatten_done(record["reason"], record["ts_ns"])
            elif kind == "finished":  # the replay ran out and everything was flushed (not a kill at its end)
                self._finished_cleanly = True
            elif kind == "algo":
                algos.append(record)
            elif kind == "algo_stopped":
                stopped[record["parent_id"]] = record["reason"]
            elif kind == "deferred":
                intent = intent_from_record(record["intent"])
                # attempts=-1: its own step is no retry
                deferred.setdefault(intent.client_order_id,
                                    DeferredOrder(intent, None, record["ts_ns"], record["reason"], attempts=-1))
        known = {o.client_order_id for o in self.oms.orders()}  # sent or refused since: settled
        self._deferred = [entry for coid, entry in deferred.items() if coid not in known]
        for record in algos:
            self._restore_algo(record, stopped)
        return resume

    def _restore_algo(self, record: dict[str, Any], stopped: Mapping[str, str]) -> None:
        """Bring back an algo's slices not sent yet (none once it was stopped), and watch the latest attempt of
        those sent."""
        parent_intent = intent_from_record(record["parent"])
        instrument = self._instrument(parent_intent.instrument_id)
        schedule = record["schedule"]
        if schedule["type"] == "twap":
            plan_schedule: Any = TwapSchedule(slices=int(schedule["slices"]), interval_s=float(schedule["interval_s"]))
        else:
            profile = pd.Series({int(m): float(w) for m, w in schedule["weights"]})
            plan_schedule = VwapSchedule(duration_minutes=int(schedule["duration_minutes"]), profile=profile)
        parent = ParentOrder(parent_intent, plan_schedule, instrument, record.get("reference_price"))
        self._parents[parent.parent_id] = AlgoParent(parent, int(record["ts_ns"]), stopped.get(parent.parent_id))
        interval = float(getattr(plan_schedule, "interval_s", 60.0))
        by_intent = {o.intent.intent_id: o for o in self.oms.orders() if o.intent.parent_id == parent.parent_id}
        for index, release_ts, quantity in record["children"]:
            child_id = parent.child_id(int(index))
            if child_id not in by_intent:
                if parent.parent_id in stopped:
                    continue  # cancelled when a slice was refused
                child = ScheduledChild(int(index), int(release_ts), quantity)
                self._scheduled.append(ScheduledSlice(int(release_ts), parent, child, None))
                continue
            attempts = [o for i, o in by_intent.items() if i == child_id or i.startswith(child_id + ":retry:")]
            latest = max(attempts, key=lambda o: attempt_number(o.intent.intent_id, "retry"))
            if latest.status is not OrderStatus.FILLED:
                retries = attempt_number(latest.intent.intent_id, "retry")
                self._children[latest.client_order_id] = WatchedSlice(latest.intent, None, latest.intent.ts_ns,
                                                                      interval, retries)

    def _journal_kill_switch(self, transition: KillSwitchTransition) -> None:
        if transition.to_mode is not transition.from_mode:
            self._journal.append({"kind": "kill_switch", "mode": str(transition.to_mode),
                                  "reason": transition.reason, "ts_ns": transition.ts_ns})
