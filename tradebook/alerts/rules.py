"""The alert rules: each watches one kind of trouble and says when its condition opens and closes.

A rule is fed facts (a fill and its arrival mid, an order's change, a TCA row, a venue's
health, today's P&L, session time) and answers with :class:`~tradebook.alerts.notice.AlertNotice`
(the condition is open: a new alert, or a repeat of the open one with the same ``dedup_key``)
or :class:`~tradebook.alerts.notice.Cleared` (it closed). Rules hold no I/O: the
:class:`~tradebook.alerts.center.AlertCenter` feeds them, stores and delivers.

Costs are in bps of the reference mid, signed so that positive is a cost to us.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from tradebook.alerts.notice import AlertNotice, Cleared, Severity
from tradebook.model.time import NS_PER_SECOND

Outcome = AlertNotice | Cleared

ACKNOWLEDGED = frozenset({"accepted", "partially_filled", "filled"})  # the venue answered the order
DONE = frozenset({"filled", "cancelled", "rejected", "expired"})
STOP_TYPES = frozenset({"stop", "stop_limit"})
# the order manager's alert kinds that mean its books and the venue's disagree
RECONCILIATION_KINDS = frozenset({"position_mismatch", "fill_mismatch", "reconcile_conflict", "order_unknown_to_venue",
                                  "still_unresolved", "unresolved_settled", "orphan_event"})


def cost_bps(side: str, price: float, mid: float) -> float:
    """What paying ``price`` against ``mid`` cost, in bps of the mid (positive: worse than the mid)."""
    sign = 1.0 if side == "buy" else -1.0
    return sign * (price - mid) / mid * 1e4


class SlippageRule:
    """A fill's slippage against the arrival mid above ``threshold_bps``: one open alert per instrument,
    closed by its next fill within the threshold."""

    kind = "slippage"

    def __init__(self, threshold_bps: float) -> None:
        self.threshold_bps = threshold_bps

    def on_fill(self, instrument_id: str, fill_id: str, slippage_bps: float, ts_ns: int) -> list[Outcome]:
        key = f"{self.kind}:{instrument_id}"
        if slippage_bps > self.threshold_bps:
            return [AlertNotice(ts_ns, self.kind, Severity.WARNING, instrument_id,
                                f"{instrument_id}: fill {fill_id} slipped {slippage_bps:.1f} bps against the arrival "
                                f"mid (threshold {self.threshold_bps:g} bps)", key)]
        return [Cleared(key, ts_ns, f"{instrument_id}: fill {fill_id} slipped {slippage_bps:.1f} bps")]


class CostVsModelRule:
    """An instrument's realised cost above ``ratio`` x the simulator's prediction and at least ``min_excess_bps``
    above it (a ratio of two costs near zero says nothing), over its last ``window`` fills with a prediction (once
    it has ``min_fills``); the alert closes below ``normal`` x or when the excess is gone."""

    kind = "cost_vs_model"

    def __init__(self, ratio: float, normal: float, window: int, min_fills: int, min_excess_bps: float = 1.0) -> None:
        self.ratio, self.normal, self.window, self.min_fills = ratio, normal, window, min_fills
        self.min_excess_bps = min_excess_bps
        self._costs: dict[str, deque[tuple[float, float]]] = {}
        self._flagged: set[str] = set()

    @property
    def flagged(self) -> frozenset[str]:
        """Instruments whose cost alert is open."""
        return frozenset(self._flagged)

    def on_fill(self, instrument_id: str, realised_bps: float, predicted_bps: float, ts_ns: int) -> list[Outcome]:
        costs = self._costs.setdefault(instrument_id, deque(maxlen=self.window))
        costs.append((realised_bps, predicted_bps))
        if len(costs) < self.min_fills:
            return []
        realised = sum(c[0] for c in costs) / len(costs)
        predicted = sum(c[1] for c in costs) / len(costs)
        if predicted <= 0:
            return []  # no cost modelled: no ratio to judge
        ratio = realised / predicted
        key = f"{self.kind}:{instrument_id}"
        figures = (f"realised {realised:.2f} bps against {predicted:.2f} bps modelled ({ratio:.1f}x) over its last "
                   f"{len(costs)} fills")
        material = realised - predicted >= self.min_excess_bps
        if ratio > self.ratio and material:
            self._flagged.add(instrument_id)
            return [AlertNotice(ts_ns, self.kind, Severity.CRITICAL, instrument_id,
                                f"{instrument_id}: {figures}; above {self.ratio:g}x", key)]
        if instrument_id in self._flagged and (ratio < self.normal or not material):
            self._flagged.discard(instrument_id)
            return [Cleared(key, ts_ns, f"{instrument_id}: back to normal, {figures}")]
        return []


@dataclass
class _Working:
    instrument_id: str
    order_type: str
    quantity: Decimal
    submitted_ns: int
    working_ns: int | None = None  # since when the venue holds it (acknowledged)
    acknowledged: bool = False
    late_ack: bool = False  # its latency alert went out before the ack came
    unfilled_alerted: bool = False


class OrderRules:
    """The rules fed by order changes: latency, working unfilled too long, a stop reached.

    - latency: submit to acknowledgement (or first fill, if it comes first) above ``latency_s``;
      an order still unanswered after ``latency_s`` of session time alerts too. One alert per
      instrument, closed by its next order answered in time.
    - unfilled: an order acknowledged and working with nothing filled for longer than
      ``unfilled_factor`` x its expected time to fill (``expected_fill_s(instrument, quantity)``,
      the calibrated completion model's, else ``default_expected_s``, which is also a resting
      limit's least); stop orders wait for their trigger and are left alone. One alert per
      order, closed when it fills or ends.
    - stop reached: a stop order's first fill (a protective stop triggered).
    """

    def __init__(self, latency_s: float, unfilled_factor: float, default_expected_s: float,
                 expected_fill_s: Callable[[str, Decimal], float | None] | None = None) -> None:
        self.latency_ns = int(latency_s * NS_PER_SECOND)
        self.unfilled_factor = unfilled_factor
        self.default_expected_s = default_expected_s
        self.expected_fill_s = expected_fill_s
        self._orders: dict[str, _Working] = {}
        self._stops_reached: set[str] = set()

    def on_order(self, order: dict, ts_ns: int) -> list[Outcome]:
        coid, status, instrument = order["client_order_id"], order["status"], order["instrument_id"]
        out: list[Outcome] = []
        if order["order_type"] in STOP_TYPES and order["filled_qty"] > 0 and coid not in self._stops_reached:
            self._stops_reached.add(coid)
            what = "protective stop" if order.get("is_protective_stop") else "stop"
            out.append(AlertNotice(ts_ns, "stop_reached", Severity.WARNING, instrument,
                                   f"{instrument}: {what} {coid} reached at {order.get('stop_price')}: "
                                   f"{order['side']} {order['filled_qty']} filled at {order.get('avg_price')}",
                                   f"stop_reached:{coid}"))
        working = self._orders.get(coid)
        if working is None:
            if status in DONE and status != "filled" or status == "pending":
                return out
            working = self._orders[coid] = _Working(instrument, order["order_type"], order["quantity"], ts_ns)
        if not working.acknowledged and (status in ACKNOWLEDGED or order["filled_qty"] > 0):
            working.acknowledged = True
            working.working_ns = ts_ns
            out.extend(self._latency(coid, working, ts_ns - working.submitted_ns, ts_ns))
        if status in DONE or order["filled_qty"] > 0:
            del self._orders[coid]
            if working.unfilled_alerted:
                out.append(Cleared(f"unfilled:{coid}", ts_ns, f"{coid} is {status}"))
        return out

    def _latency(self, coid: str, working: _Working, latency_ns: int, ts_ns: int) -> list[Outcome]:
        key = f"latency:{working.instrument_id}"
        if latency_ns > self.latency_ns:
            if working.late_ack:
                return []  # alerted already while it waited
            return [AlertNotice(ts_ns, "latency", Severity.WARNING, working.instrument_id,
                                f"{working.instrument_id}: {coid} took {latency_ns / NS_PER_SECOND:.1f} s from submit "
                                f"to the venue's answer (threshold {self.latency_ns / NS_PER_SECOND:g} s)", key)]
        return [Cleared(key, ts_ns, f"{coid} answered in {latency_ns / NS_PER_SECOND:.2f} s")]

    def check(self, now_ns: int) -> list[Outcome]:
        """What session time ``now_ns`` makes overdue: answers not come, orders working unfilled too long."""
        out: list[Outcome] = []
        for coid, working in self._orders.items():
            if not working.acknowledged and not working.late_ack and now_ns - working.submitted_ns > self.latency_ns:
                working.late_ack = True
                out.append(AlertNotice(now_ns, "latency", Severity.WARNING, working.instrument_id,
                                       f"{working.instrument_id}: {coid} has no answer from the venue "
                                       f"{(now_ns - working.submitted_ns) / NS_PER_SECOND:.1f} s after it was sent "
                                       f"(threshold {self.latency_ns / NS_PER_SECOND:g} s)",
                                       f"latency:{working.instrument_id}"))
            if working.working_ns is None or working.unfilled_alerted or working.order_type in STOP_TYPES:
                continue
            expected_s = self._expected_s(working)
            waited_s = (now_ns - working.working_ns) / NS_PER_SECOND
            if waited_s > self.unfilled_factor * expected_s:
                working.unfilled_alerted = True
                out.append(AlertNotice(now_ns, "unfilled", Severity.WARNING, coid,
                                       f"{working.instrument_id}: {working.order_type} order {coid} for "
                                       f"{working.quantity} has worked {waited_s:.0f} s with nothing filled "
                                       f"(expected about {expected_s:.0f} s; alert beyond {self.unfilled_factor:g}x)",
                                       f"unfilled:{coid}"))
        return out

    def _expected_s(self, working: _Working) -> float:
        """A market order's: the completion model's time to take the quantity; a resting limit's at least the
        configured time (the model says how fast liquidity is taken, not how long a queue takes to reach it)."""
        expected = None
        if self.expected_fill_s is not None:
            try:
                expected = self.expected_fill_s(working.instrument_id, working.quantity)
            except Exception:  # noqa: BLE001 - a model that cannot say falls back to the configured time
                expected = None
        if expected is None or not expected > 0:
            return self.default_expected_s
        return expected if working.order_type == "market" else max(expected, self.default_expected_s)


class VenueRule:
    """A venue whose health check fails (disconnected, blocked, stream down): open until it passes again."""

    kind = "venue_disconnected"

    def on_health(self, venue: str, ok: bool, reason: str, ts_ns: int) -> list[Outcome]:
        key = f"{self.kind}:{venue}"
        if ok:
            return [Cleared(key, ts_ns, f"{venue}: {reason}")]
        return [AlertNotice(ts_ns, self.kind, Severity.CRITICAL, venue, f"venue {venue} cannot take orders: {reason}",
                            key)]


class DailyPnlRule:
    """Today's P&L (realised + unrealised) at or below ``-threshold``: open until it recovers above it."""

    kind = "daily_pnl"

    def __init__(self, threshold: Decimal | None, currency: str) -> None:
        self.threshold = threshold
        self.currency = currency

    def on_pnl(self, account_id: str, pnl: Decimal, ts_ns: int) -> list[Outcome]:
        if self.threshold is None:
            return []
        key = f"{self.kind}:{account_id}"
        if pnl <= -self.threshold:
            return [AlertNotice(ts_ns, self.kind, Severity.CRITICAL, account_id,
                                f"{account_id}: P&L today {pnl:.2f} {self.currency}, beyond the alert threshold "
                                f"-{self.threshold} {self.currency}", key)]
        return [Cleared(key, ts_ns, f"{account_id}: P&L today {pnl:.2f} {self.currency}")]
