"""The alert center: feeds the rules from a session's bus and the store, stores and delivers what they raise.

The one rule: nothing here runs on the order path. The center is one subscriber of the
session's :class:`~tradebook.execution.bus.EventBus` (its own thread and queue), and each
sink is a subscriber of the center's own bus, so a webhook that hangs delays only its own
later alerts. What it watches:

- ``"quote"`` events: the mid each order arrives at (its arrival mid), and session time,
  which makes orders overdue (:class:`~tradebook.alerts.rules.OrderRules`) and is when
  today's P&L is looked at (at most once a second of session time);
- ``"order"`` events: latency, orders working unfilled too long, stops reached;
- ``"fill"`` events: slippage against the arrival mid;
- ``"flushed"`` events: TCA rows computed since the last look (``tca_fills``: slippage of
  fills the bus could not judge, realised against modelled cost), and promotion
  reversions stored since (forwarded to the sinks);
- ``"alert"`` events: the order manager's own alerts (reconciliation mismatches, unknown
  outcomes, a venue that failed its check at connect): forwarded to the sinks, not stored
  again (its journal copy stores them);
- the venue's health, asked every ``venue_check_s`` seconds on a thread of its own.

Each open condition is one row of ``alerts`` (see :mod:`tradebook.alerts.storage`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from decimal import Decimal
from typing import Any

from tradebook.alerts import storage
from tradebook.alerts.notice import AlertNotice, Cleared, Severity, Source
from tradebook.alerts.rules import (
    RECONCILIATION_KINDS,
    STOP_TYPES,
    CostVsModelRule,
    DailyPnlRule,
    OrderRules,
    Outcome,
    SlippageRule,
    VenueRule,
    cost_bps,
)
from tradebook.alerts.sinks import AlertSink, sinks_from_config
from tradebook.config import AlertsConfig
from tradebook.execution.bus import BusEvent, EventBus, Subscription
from tradebook.model.time import NS_PER_SECOND, now_ns

log = logging.getLogger(__name__)

STORE_CHECK_INTERVAL_S = 1.0  # TCA rows and reversions are looked for at most this often (wall time)
REPEAT_WRITE_INTERVAL_S = 1.0  # an open alert's row is rewritten at most this often; repeats in between wait
SINK_QUEUE = 1_000  # alerts a sink may fall behind by before its oldest are dropped (counted)
JUDGED_FILLS_KEPT = 100_000  # fill ids remembered as judged (a TCA row of one the bus judged is skipped)
ORDERS_KEPT = 100_000  # orders whose arrival mid is remembered (late fills of older ones are left to TCA)
HEALTH_TIMEOUT_S = 10.0


class AlertCenter:
    """Alert rules over one session's events, stored in ``alerts`` and delivered to sinks.

    ``store``: the session's store (the center writes its rules' alerts there).
    ``config``: thresholds and sinks (the ``alerts:`` section); ``sinks`` replaces the
    configured ones. ``risk``: the session's :class:`~tradebook.execution.risk.PreTradeRisk`,
    whose ``restrict``/``unrestrict`` an open cost alert uses when ``restrict_on_cost``.
    ``models``: instrument -> calibrated fill model (its completion model says how long an
    order should take to fill). ``daily_pnl``: today's P&L; ``venue_health``: () ->
    (venue name, :class:`~tradebook.venues.base.VenueHealth`) (blocking; a thread of its own
    asks it). Start it with :meth:`attach`, end it with :meth:`close`.
    """

    def __init__(self, store: Any, config: AlertsConfig | None = None, *, sinks: Iterable[AlertSink] | None = None,
                 account_id: str = "", currency: str = "USD", risk: Any = None,
                 models: Mapping[str, Any] | None = None, daily_pnl: Callable[[], Decimal] | None = None,
                 venue_health: Callable[[], tuple[str, Any]] | None = None) -> None:
        self.store = store
        self.config = config or AlertsConfig()
        self.account_id = account_id
        self.risk = risk
        self._models = dict(models or {})
        self._daily_pnl = daily_pnl
        self._venue_health = venue_health
        cfg = self.config
        self.slippage = SlippageRule(cfg.slippage_bps)
        self.cost = CostVsModelRule(cfg.cost_vs_model, cfg.cost_normal, cfg.cost_window_fills, cfg.cost_min_fills,
                                    cfg.cost_min_excess_bps)
        self.orders = OrderRules(cfg.latency_s, cfg.unfilled_factor, cfg.unfilled_expected_s, self._expected_fill_s)
        self.venue = VenueRule()
        self.pnl = DailyPnlRule(cfg.daily_pnl, currency)
        self._lock = threading.RLock()
        self._open: dict[str, tuple[int, int]] = {}  # dedup_key -> (when it opened, how many times it fired)
        self._repeats: dict[str, AlertNotice] = {}  # the latest repeat of an open alert not yet in its row
        self._written: dict[str, float] = {}  # dedup_key -> when (monotonic) its row was last written
        self._store_checked = float("-inf")  # when (monotonic) TCA rows and reversions were last looked for
        self._mids: dict[str, float] = {}
        # client order id -> what its fills are judged against (kept after it is done: its fill events come after)
        self._arrival: OrderedDict[str, float] = OrderedDict()
        self._judged: OrderedDict[str, None] = OrderedDict()  # fills whose slippage was judged
        self._costed: OrderedDict[str, None] = OrderedDict()  # fills fed to the cost rule
        self._tca_watermark = 0  # computed_at_ns of the newest TCA row looked at
        self._promotion_row = storage.last_rowid(store)  # reversions stored before the center started are old news
        self._now_ns = 0
        self._pnl_due_ns = 0
        self.sinks = list(sinks) if sinks is not None else sinks_from_config(cfg)
        self._sink_bus = EventBus()
        self.sink_subscriptions = [
            self._sink_bus.subscribe(sink.name, _deliverer(sink), kinds=["alert"], max_queue=SINK_QUEUE)
            for sink in self.sinks]
        self.subscription: Subscription | None = None
        self._stop = threading.Event()
        self._health_thread: threading.Thread | None = None
        self.errors = 0  # store writes or checks that failed (logged)

    def __repr__(self) -> str:
        return f"<AlertCenter: {len(self._open)} open, sinks {[s.name for s in self.sinks]}>"

    # -- running --------------------------------------------------------------------------
    def attach(self, bus: EventBus) -> AlertCenter:
        """Subscribe to ``bus`` and start asking the venue's health (when a ``venue_health`` was given)."""
        self.subscription = bus.subscribe("alert_center", self.on_event)
        if self._venue_health is not None:
            self._health_thread = threading.Thread(target=self._watch_venue, name="tradebook-alerts-venue",
                                                   daemon=True)
            self._health_thread.start()
        return self

    def close(self, timeout: float = 5.0) -> list[str]:
        """Stop: the bus subscription, the venue watch, then the sinks (each within ``timeout`` s, in total).

        Returns the names of sinks still busy when the time ran out (each has logged why)."""
        self._stop.set()
        if self.subscription is not None:
            self.subscription.close(timeout)
        if self._health_thread is not None:
            self._health_thread.join(min(timeout, HEALTH_TIMEOUT_S))
        self.check_store(force=True)  # what the session's last TCA update wrote; the repeats that waited
        return self._sink_bus.close(timeout)

    def flush(self) -> None:
        """Write the open alerts' repeats still waiting (their counts and last times) to their rows."""
        with self._lock:
            waiting, self._repeats = self._repeats, {}
            try:
                for key, notice in waiting.items():
                    self._write_repeat(key, notice)
            except Exception as exc:  # noqa: BLE001 - the counts are late, not lost to the log
                self.errors += 1
                log.error("alerts: could not update the rows of %s: %s: %s", sorted(waiting), type(exc).__name__, exc)

    @property
    def open_alerts(self) -> dict[str, tuple[int, int]]:
        """The conditions open now: dedup key -> (when it opened, int64 UTC ns; how many times it fired)."""
        with self._lock:
            return dict(self._open)

    def drain(self, timeout: float = 5.0) -> bool:
        """Wait until the center and its sinks have handled everything queued (tests, notebooks)."""
        ok = self.subscription.drain(timeout) if self.subscription is not None else True
        return all([ok, *(s.drain(timeout) for s in self.sink_subscriptions)])

    # -- what comes in ----------------------------------------------------------------------
    def on_event(self, event: BusEvent) -> None:
        """The bus callback: feed the rules what ``event`` says."""
        payload, kind = event.payload, event.kind
        if kind == "quote":
            self._mids[payload["instrument_id"]] = (payload["bid"] + payload["ask"]) / 2
        elif kind == "order":
            coid = payload["client_order_id"]
            if coid not in self._arrival:
                self._arrival_of(coid, payload)
            self.apply(self.orders.on_order(dict(payload), event.ts_ns))
        elif kind == "fill":
            self._on_fill(payload, event.ts_ns)
        elif kind == "alert":
            self._forward_order_path_alert(payload, event.ts_ns)
        elif kind == "flushed":
            self.check_store()
        self._advance(event.ts_ns)

    def _arrival_of(self, coid: str, order: Mapping[str, Any]) -> None:
        """What the order's fills are judged against: a stop's own price (it arrives when it triggers), else the
        mid when the order was first seen."""
        if order["order_type"] in STOP_TYPES and order.get("stop_price") is not None:
            self._arrival[coid] = float(order["stop_price"])
        elif order["instrument_id"] in self._mids:
            self._arrival[coid] = self._mids[order["instrument_id"]]
        if len(self._arrival) > ORDERS_KEPT:
            self._arrival.popitem(last=False)

    def _on_fill(self, fill: Mapping[str, Any], ts_ns: int) -> None:
        mid = self._arrival.get(fill["client_order_id"])
        if mid is None or mid <= 0:
            return  # no arrival mid seen: the fill's TCA row judges it
        _remember(self._judged, fill["fill_id"])
        slipped = cost_bps(fill["side"], float(fill["price"]), mid)
        self.apply(self.slippage.on_fill(fill["instrument_id"], fill["fill_id"], slipped, ts_ns))

    def _forward_order_path_alert(self, alert: Mapping[str, Any], ts_ns: int) -> None:
        """The order manager's alerts go to the sinks (its journal copy stores them); the session's own are stored
        here too, one row per kind while they keep coming."""
        kind = alert["kind"]
        severity = Severity.CRITICAL if kind in RECONCILIATION_KINDS else Severity(alert.get("severity", "warning"))
        label = "reconciliation mismatch" if kind in RECONCILIATION_KINDS else kind
        journaled = alert.get("source", "oms") == "oms"
        self.notify(AlertNotice(ts_ns, kind, severity, alert.get("subject") or self.account_id,
                                f"{label}: {alert['message']}", f"{alert.get('source', 'oms')}:{kind}",
                                Source.ORDER_PATH if journaled else Source.RULES))

    def _advance(self, ts_ns: int) -> None:
        """Session time moved to ``ts_ns``: overdue orders, and today's P&L once a second."""
        if ts_ns <= self._now_ns:
            return
        self._now_ns = ts_ns
        self.apply(self.orders.check(ts_ns))
        if self._daily_pnl is not None and self.pnl.threshold is not None and ts_ns >= self._pnl_due_ns:
            self._pnl_due_ns = ts_ns + NS_PER_SECOND
            try:
                pnl = self._daily_pnl()
            except Exception as exc:  # noqa: BLE001 - the P&L is looked at again a second later
                self.errors += 1
                log.warning("alerts: today's P&L could not be read: %s: %s", type(exc).__name__, exc)
                return
            self.apply(self.pnl.on_pnl(self.account_id, pnl, ts_ns))

    def check_store(self, *, force: bool = False) -> None:
        """Look at TCA rows computed and promotion reversions stored since the last look (at most once a second
        unless ``force``), and write the repeats that waited."""
        if not force and time.monotonic() - self._store_checked < STORE_CHECK_INTERVAL_S:
            return
        self._store_checked = time.monotonic()
        try:
            rows = self.store.query(
                "SELECT fill_id, instrument_id, arrival_slippage_bps, realised_cost_bps, predicted_cost_bps, "
                "computed_at_ns FROM tca_fills WHERE computed_at_ns > ? AND account_id = ? "
                "ORDER BY computed_at_ns, ts_event", [self._tca_watermark, self.account_id])
            reversions = storage.rows_after(self.store, Source.PROMOTION.value, self._promotion_row)
        except Exception as exc:  # noqa: BLE001 - a store that cannot be read now is read at the next flush
            self.errors += 1
            log.warning("alerts: could not read TCA rows or reversions from %s: %s", self.store, exc)
            return
        for row in rows.itertuples(index=False):
            self._tca_watermark = max(self._tca_watermark, int(row.computed_at_ns))
            if row.fill_id not in self._judged and _finite(row.arrival_slippage_bps):
                _remember(self._judged, row.fill_id)
                self.apply(self.slippage.on_fill(row.instrument_id, row.fill_id, float(row.arrival_slippage_bps),
                                                 int(row.computed_at_ns)))
            if row.fill_id not in self._costed and _finite(row.realised_cost_bps) and \
                    _finite(row.predicted_cost_bps):
                _remember(self._costed, row.fill_id)
                self.apply(self.cost.on_fill(row.instrument_id, float(row.realised_cost_bps),
                                             float(row.predicted_cost_bps), int(row.computed_at_ns)))
        for row in reversions.itertuples(index=False):
            self._promotion_row = max(self._promotion_row, int(row.row_id))
            self.notify(AlertNotice(int(row.ts_ns), row.kind, Severity.CRITICAL, row.kind, row.message,
                                    f"promotion:{row.row_id}", Source.PROMOTION))
        self.flush()

    def check_venue(self) -> None:
        """Ask the venue's health once and apply the answer."""
        try:
            venue, health = self._venue_health()  # type: ignore[misc]
        except Exception as exc:  # noqa: BLE001 - a check that cannot run says so, and the next one tries again
            self.errors += 1
            log.warning("alerts: the venue health check failed to run: %s: %s", type(exc).__name__, exc)
            return
        self.apply(self.venue.on_health(venue, bool(health.ok), health.reason, self._now_ns or now_ns()))

    def _watch_venue(self) -> None:
        # the first look after one interval: a venue down at connect is the session's own alert (paper_fallback)
        while not self._stop.wait(self.config.venue_check_s):
            self.check_venue()

    # -- what goes out -----------------------------------------------------------------------
    def apply(self, outcomes: Iterable[Outcome]) -> None:
        """Act on the rules' answers: open or repeat alerts, close conditions."""
        for outcome in outcomes:
            if isinstance(outcome, Cleared):
                self._clear(outcome)
            else:
                self.notify(outcome)

    def notify(self, notice: AlertNotice) -> None:
        """Store (the rules' own, deduplicated by key) and deliver a notice; never raises."""
        try:
            with self._lock:
                if notice.source is not Source.RULES:
                    self._deliver(notice)  # stored by whoever raised it
                    return
                key = notice.dedup_key
                opened = self._open.get(key)
                if opened is not None:  # sinks heard it when it opened; its row counts
                    count = opened[1] + 1
                    self._open[key] = (opened[0], count)
                    self._repeats[key] = replace(notice, repeat_count=count)
                    if time.monotonic() - self._written.get(key, float("-inf")) >= REPEAT_WRITE_INTERVAL_S:
                        self._write_repeat(key, self._repeats.pop(key))
                    return
                self._open[key] = (notice.ts_ns, 1)
                self._written[key] = time.monotonic()
                storage.insert_alert(self.store, notice)
                self._deliver(notice)
                if notice.kind == CostVsModelRule.kind and self.config.restrict_on_cost and self.risk is not None:
                    self.risk.restrict(notice.subject, f"cost alert: {notice.message}")
        except Exception as exc:  # noqa: BLE001 - an alert that cannot be stored is still logged
            self.errors += 1
            log.error("alerts: could not store alert %s (%s): %s: %s", notice.dedup_key, notice.message,
                      type(exc).__name__, exc)

    def _write_repeat(self, key: str, notice: AlertNotice) -> None:
        """The open alert's row takes ``notice``'s count, time and words (its key is open: under the lock)."""
        storage.repeat_alert(self.store, self._open[key][0], notice)
        self._written[key] = time.monotonic()

    def _clear(self, cleared: Cleared) -> None:
        with self._lock:
            waiting = self._repeats.pop(cleared.dedup_key, None)
            if waiting is not None:
                try:
                    self._write_repeat(cleared.dedup_key, waiting)
                except Exception as exc:  # noqa: BLE001
                    self.errors += 1
                    log.error("alerts: could not update the row of %s: %s", cleared.dedup_key, exc)
            if self._open.pop(cleared.dedup_key, None) is None:
                return
            self._written.pop(cleared.dedup_key, None)
        log.info("alert %s closed: %s", cleared.dedup_key, cleared.message)
        kind, _, subject = cleared.dedup_key.partition(":")
        if kind == CostVsModelRule.kind and self.risk is not None and subject in self.risk.restricted:
            self.risk.unrestrict(subject)

    def _deliver(self, notice: AlertNotice) -> None:
        self._sink_bus.publish("alert", {"notice": notice}, notice.ts_ns)

    def _expected_fill_s(self, instrument_id: str, quantity: Decimal) -> float | None:
        """The calibrated completion model's time from first to last fill for ``quantity`` (at least a second)."""
        model = self._models.get(instrument_id)
        completion = getattr(model, "completion", None)
        if completion is None:
            return None
        seconds = float(completion.time_to_complete_ns(float(quantity))[0]) / NS_PER_SECOND
        return max(seconds, 1.0) if math.isfinite(seconds) else None


def _deliverer(sink: AlertSink) -> Callable[[BusEvent], None]:
    def deliver(event: BusEvent) -> None:
        sink.deliver(event.payload["notice"])

    return deliver


def _remember(seen: OrderedDict[str, None], key: str) -> None:
    seen[key] = None
    if len(seen) > JUDGED_FILLS_KEPT:
        seen.popitem(last=False)


def _finite(value: Any) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
