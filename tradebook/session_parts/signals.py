"""The signal pipeline of a session: check what comes in, decide (size, route), record the decision, and
send through hours, the breaker and pre-trade risk to the order manager."""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Iterable
from dataclasses import replace
from decimal import Decimal
from typing import Any

import numpy as np

from tradebook.errors import DataError, OrderError, TradebookError
from tradebook.execution.algos import VwapSchedule
from tradebook.execution.risk import STALE_OR_CROSSED, BreakerState, ReferenceQuote, RiskAction, RiskContext
from tradebook.model.calendars import is_trading
from tradebook.model.instruments import MAX_INTEGER_DIGITS, Instrument, Side, check_amount, to_decimal
from tradebook.model.orders import Order, OrderIntent, OrderStatus, Signal, client_order_id_for
from tradebook.model.quotes import QuoteSnapshot
from tradebook.model.time import ns_to_iso
from tradebook.session_parts.algos import algo_record
from tradebook.session_parts.state import (
    _NS,
    SIGNAL_CLOCK_TOLERANCE_NS,
    AlgoParent,
    Decision,
    DecisionCode,
    DecisionOutcome,
    DeferredOrder,
    ScheduledSlice,
    attempt_number,
)
from tradebook.store.records import intent_to_record

log = logging.getLogger(__name__)


def _number_text(value: Any) -> str:
    if value is None:
        return "None"
    if value.__class__ is float:
        return repr(value)
    if isinstance(value, Decimal):
        return format(value.normalize(), "f") if value.is_finite() else str(value)
    try:
        return repr(float(value))  # numpy floats too: 0.95, not np.float64(0.95)
    except (TypeError, ValueError):
        return repr(value)


def _signal_terms(signal: Signal) -> str:
    """What a signal asks for, as one comparable line: side, instrument, quantity, strength, sizing
    statistics, urgency and stop. Its ids and time are left out: a re-run carries them anew."""
    n = _number_text
    return (f"{signal.side} {signal.instrument_id} quantity={n(signal.quantity)} strength={n(signal.strength)} "
            f"win_rate={n(signal.win_rate)} avg_win={n(signal.avg_win)} avg_loss={n(signal.avg_loss)} "
            f"urgency={signal.urgency} stop_loss={n(signal.stop_loss)}")


def _decimal_intent(intent: OrderIntent) -> OrderIntent:
    """``intent`` as a notebook typed it, checked where the order manager would fail on it (OrderError), with
    float quantity and prices made Decimal by their repr (0.01 is Decimal('0.01')) and a side given as text
    made a Side."""
    where = f"intent {intent.intent_id!r}"
    for name in ("intent_id", "strategy_id", "account_id", "instrument_id"):
        value = getattr(intent, name)
        if not isinstance(value, str) or not value:
            raise OrderError(f"{where}: {name} is {value!r}; expected a non-empty string")
    if intent.parent_id is not None and not isinstance(intent.parent_id, str):
        raise OrderError(f"{where}: parent_id is {intent.parent_id!r}; expected the parent's intent id (a string) "
                         "or None")
    if not isinstance(intent.reduce_only, bool):
        raise OrderError(f"{where}: reduce_only is {intent.reduce_only!r}; expected True or False")
    changes: dict[str, Any] = {}
    if not isinstance(intent.side, Side):
        if intent.side not in ("buy", "sell"):
            raise OrderError(f"{where}: side is {intent.side!r}; expected Side.BUY or Side.SELL")
        changes["side"] = Side(intent.side)
    floats = {name: value for name in ("quantity", "limit_price", "stop_price", "stop_loss")
              if isinstance(value := getattr(intent, name), float)}
    if not floats:
        return replace(intent, **changes) if changes else intent
    for name, value in floats.items():
        if not math.isfinite(value):
            raise OrderError(f"{where}: {name} is {value!r}; expected a finite number (a Decimal, or a float "
                             "taken by its repr)")
        floats[name] = to_decimal(value, f"{where}: {name}")
    return replace(intent, **floats, **changes)


class SignalPipeline:
    """Signals and intents to orders, each decision journaled (a part of Session: it reads the
    session's state)."""

    def _check_signal(self, signal: Signal) -> tuple[Signal, Instrument]:
        """The signal's own fields (not the market's), OrderError / ConformanceError / UnknownInstrumentError
        naming the fault; returns the signal with a float quantity or stop made Decimal (by its repr)."""
        if not isinstance(signal, Signal):
            raise OrderError(f"a strategy must yield Signals, got {type(signal).__name__}")
        for name in ("strategy_id", "signal_id"):
            value = getattr(signal, name)
            if not isinstance(value, str) or not value.strip():
                raise OrderError(f"signal {name} is {value!r}: expected a non-empty string (the client order id "
                                 "derives from strategy_id and signal_id)")
        where = f"signal {signal.strategy_id}:{signal.signal_id}"
        if not isinstance(signal.instrument_id, str) or not signal.instrument_id:
            raise OrderError(f"{where}: instrument_id is {signal.instrument_id!r}; expected an instrument id string "
                             "such as 'BTCUSDT.BINANCE'")
        side = signal.side
        if not isinstance(side, Side):
            if side not in ("buy", "sell"):
                raise OrderError(f"{where}: side is {side!r}; expected Side.BUY or Side.SELL ('buy' or 'sell')")
            side = Side(side)  # typed as text: the Side it names
        # exact types first (the usual case costs a class test each); the rest through the ABCs
        ts_ns = signal.ts_ns
        if ts_ns is not None and not (ts_ns.__class__ is int or (
                not isinstance(ts_ns, bool) and isinstance(ts_ns, numbers.Integral))) or (ts_ns or 0) < 0:
            raise OrderError(f"{where}: ts_ns is {ts_ns!r}; expected int nanoseconds since the epoch (UTC), "
                             "e.g. tb.to_ns('2024-08-08T23:56:00Z'), or None for the session's time")
        strength = signal.strength
        if not (strength.__class__ is float or (not isinstance(strength, bool)
                                                and isinstance(strength, numbers.Real))) \
                or not math.isfinite(strength) or not 0 <= strength <= 1:
            raise OrderError(f"{where}: strength is {strength!r}; expected a number in [0, 1]")
        for value, name in ((signal.win_rate, "win_rate"), (signal.avg_win, "avg_win"), (signal.avg_loss, "avg_loss")):
            if value is not None and not (value.__class__ is float or (
                    not isinstance(value, bool) and isinstance(value, numbers.Real))) or (
                    value is not None and not math.isfinite(value)):
                raise OrderError(f"{where}: {name} is {value!r}; expected a finite number or None")
        if signal.urgency not in ("low", "normal", "high"):
            raise OrderError(f"{where}: urgency is {signal.urgency!r}; expected 'low', 'normal' or 'high'")
        quantity = signal.quantity
        if quantity.__class__ is Decimal and quantity.is_finite() and 0 < quantity and \
                quantity.adjusted() < MAX_INTEGER_DIGITS:
            pass  # the usual explicit size: nothing to convert
        elif quantity is not None:
            if isinstance(quantity, bool) or not isinstance(quantity, (Decimal, int, float)):
                raise OrderError(f"{where}: quantity is {quantity!r}; expected a Decimal (exact units; a float is "
                                 "taken by its repr)")
            if isinstance(quantity, float) and not math.isfinite(quantity):
                raise OrderError(f"{where}: quantity is {quantity!r}; expected a Decimal (or float) that is positive "
                                 "and finite")
            if not isinstance(quantity, Decimal):
                quantity = to_decimal(quantity, f"{where}: quantity")  # by its repr: 0.01 is Decimal('0.01')
            if not quantity.is_finite() or quantity <= 0:
                raise OrderError(f"{where}: quantity is {quantity}; expected a positive finite Decimal")
            check_amount(quantity, f"{where}: quantity")
        stop_loss = signal.stop_loss
        if stop_loss is not None:
            if isinstance(stop_loss, bool) or not isinstance(stop_loss, (Decimal, int, float)):
                raise OrderError(f"{where}: stop_loss is {stop_loss!r}; expected a Decimal price (or float) or None")
            stop_loss = to_decimal(stop_loss, f"{where}: stop_loss")  # ConformanceError when not finite
            check_amount(stop_loss, f"{where}: stop_loss")
        if quantity is not signal.quantity or stop_loss is not signal.stop_loss or side is not signal.side or \
                (ts_ns.__class__ is not int and ts_ns is not None):
            signal = replace(signal, quantity=quantity, stop_loss=stop_loss, side=side,
                             ts_ns=None if ts_ns is None else int(ts_ns))
        return signal, self._tradable(signal.instrument_id)

    def _signal_time_problem(self, signal: Signal) -> tuple[DecisionCode, str] | None:
        """Why a new signal's time does not fit session time (from the future, or older than
        ``session.max_signal_age_s``), or None. Not judged before the first market data."""
        if signal.ts_ns is None or not self._now:
            return None
        if signal.ts_ns > self._now + SIGNAL_CLOCK_TOLERANCE_NS:
            return (DecisionCode.SIGNAL_FROM_FUTURE,
                    f"signal time {ns_to_iso(signal.ts_ns)} is after session time {ns_to_iso(self._now)} (by "
                    f"{(signal.ts_ns - self._now) / _NS:.3f} s); expected a signal at or before session time "
                    "(a replay's time is its market data's; pass ts_ns=None for session time)")
        max_age_s = self.config.session.max_signal_age_s
        if self._now - signal.ts_ns > max_age_s * _NS:
            return (DecisionCode.SIGNAL_TOO_OLD,
                    f"signal time {ns_to_iso(signal.ts_ns)} is {(self._now - signal.ts_ns) / _NS:.3f} s before "
                    f"session time {ns_to_iso(self._now)}; expected at most session.max_signal_age_s {max_age_s} s")
        return None

    def _reference_snapshot(self, instrument_id: str) -> QuoteSnapshot:
        """The last quote of ``instrument_id`` as a usable reference: DataError when missing, crossed or stale."""
        quote = self._quotes.get(instrument_id)
        if quote is None:
            raise DataError(f"{STALE_OR_CROSSED}: no quote for {instrument_id} yet at {ns_to_iso(self._now)}; "
                            "expected market data before the first order")
        ts, bid, ask, bid_sz, ask_sz = quote
        if not (np.isfinite(bid) and np.isfinite(ask)) or bid <= 0 or ask <= 0 or bid >= ask:
            kind = "locked" if bid == ask else "crossed" if bid > ask else "invalid"
            raise DataError(f"{STALE_OR_CROSSED}: the last {instrument_id} quote ({ns_to_iso(ts)}) is {kind}: "
                            f"bid {bid} / ask {ask}; expected bid < ask to price an order against")
        max_age_ns = self.config.risk.max_quote_age_ms * 1_000_000
        if self._now - ts > max_age_ns:
            raise DataError(f"{STALE_OR_CROSSED}: the last {instrument_id} quote is {(self._now - ts) / _NS:.3f} s "
                            f"old at {ns_to_iso(self._now)}; expected at most risk.max_quote_age_ms "
                            f"{self.config.risk.max_quote_age_ms} ms")
        snapshot = QuoteSnapshot.from_quote(instrument_id, ts, bid, ask,
                                            max(bid_sz, 0.0) if np.isfinite(bid_sz) else 0,
                                            max(ask_sz, 0.0) if np.isfinite(ask_sz) else 0)
        self._snapshots[instrument_id] = (quote, snapshot)  # the risk checks reuse its Decimals
        return snapshot

    def _hours_problem(self, instrument: Instrument) -> str | None:
        extended = self.config.session.extended_hours
        if is_trading(instrument, self._now, extended_hours=extended):
            return None
        calendar = instrument.trading_hours.calendar or "trading hours"
        return (f"market hours: {instrument.instrument_id} is not trading at {ns_to_iso(self._now)} "
                f"(exchange calendar {calendar}; extended hours {'on' if extended else 'off'})")

    def _record(self, signal: Signal, outcome: DecisionOutcome, reason: str, orders: Iterable[Order] = (), *,
                code: DecisionCode, terms: str | None = None) -> None:
        """Journal a decision. ``terms``: what the signal asked for (kept to refuse a later signal under the
        same id with other terms); None for a decision that must not define the id (a conflict)."""
        self._journal_decision(Decision(self._now, signal.strategy_id, signal.signal_id, signal.instrument_id,
                                        outcome, reason, tuple(o.client_order_id for o in orders), code), terms)

    def _journal_decision(self, decision: Decision, terms: str | None) -> None:
        self.decisions.append(decision)
        key = (decision.strategy_id, decision.signal_id)
        self._decided.add(key)
        if terms is not None:
            self._terms.setdefault(key, terms)
        self._journal.append({"kind": "decision", "decision": {**decision.__dict__,
                                                               "client_order_ids": list(decision.client_order_ids)},
                              "terms": terms}, sync=False)

    def _volatility_bps(self, instrument_id: str) -> float:
        mids = self._mids.get(instrument_id)
        if not mids or len(mids) < 3:
            return 0.0
        cached = self._volatility.get(instrument_id)
        if cached is not None and cached[0] == (len(mids), mids[-1], self._last_end_ns):
            return cached[1]  # the mids have not moved since: every signal of a step shares it
        returns = np.diff(np.log(np.asarray(mids)))
        volatility = float(np.std(returns) * 1e4)
        self._volatility[instrument_id] = ((len(mids), mids[-1], self._last_end_ns), volatility)
        return volatility

    def _vwap_schedule(self, instrument_id: str, quantity: Decimal) -> VwapSchedule | None:
        """VWAP for an instrument with a volume profile: longer for larger orders.

        ``router.vwap_min_minutes`` at the slicing threshold (``twap_adv_fraction`` of ADV),
        one more minute per further fifth of the threshold, at most ``vwap_max_minutes``.
        """
        profile = self.volume_profiles.get(instrument_id)
        adv = self.adv.get(instrument_id)
        if profile is None or adv is None:
            return None
        r = self.config.router
        threshold = adv * Decimal(repr(r.twap_adv_fraction))
        extra = int((quantity / threshold - 1) * 5) if quantity > threshold else 0
        return VwapSchedule(min(max(r.vwap_min_minutes + extra, r.vwap_min_minutes), r.vwap_max_minutes), profile)

    async def _on_signal(self, signal: Signal, *, raise_errors: bool) -> list[Order]:
        """Size, route and send one signal. ``raise_errors``: a notebook's submit (bad input raises, nothing
        stored); else a strategy's signal, whose faults are recorded as a rejected decision.

        A signal id names one signal: the same id with the same terms (:func:`_signal_terms`) is a
        re-run and returns the earlier orders, sending nothing; with other terms it is refused
        (OrderError from submit, a ``signal_id_conflict`` decision either way), naming both.
        """
        try:
            signal, instrument = self._check_signal(signal)
        except TradebookError as exc:
            if raise_errors or not isinstance(signal, Signal):
                raise
            self._record(signal, DecisionOutcome.REJECTED, f"{type(exc).__name__}: {exc}", code=DecisionCode.BAD_INPUT,
                         terms=_signal_terms(signal))
            return []
        key = (signal.strategy_id, signal.signal_id)
        base = f"{signal.strategy_id}:{signal.signal_id}"
        terms = _signal_terms(signal)
        existing: list[Order] = []
        if self._has_order_for(base) or self._has_order_for(f"{base}:slice:1"):
            # rare (a re-run cell, a resumed replay): only then look at every order of this signal
            existing = [o for o in self.oms.orders()
                        if o.intent.intent_id == base or o.intent.intent_id.startswith(base + ":")]
        known = self._terms.get(key)
        if known is None and existing:  # orders durable, decision not written (or written before terms were kept)
            entries = [o.intent for o in existing if not o.intent.intent_id.endswith(":stop")] or [existing[0].intent]
            if any(i.side != signal.side or i.instrument_id != signal.instrument_id for i in entries):
                known = f"{entries[0].side} {entries[0].instrument_id} (read from its orders)"
        if known is not None and known != terms:
            message = (f"signal {base} was decided before as [{known}]; this one is [{terms}]: expected the same "
                       "terms (a re-run, which sends nothing) or a new signal_id for a changed signal")
            self._record(signal, DecisionOutcome.REJECTED, message, code=DecisionCode.SIGNAL_ID_CONFLICT)
            if raise_errors:
                raise OrderError(message)
            return []
        routed = signal
        resend = self._resend_number(existing) if existing else 0
        if resend:  # its orders never reached the venue: this signal goes again, under a new id
            routed = replace(signal, signal_id=f"{signal.signal_id}:resend:{resend}")
        elif existing:  # a re-run cell or a replay resumed after a crash: this signal was handled
            if key not in self._decided:
                # the process stopped after the orders were durable and before the decision was written
                outcome = DecisionOutcome.SENT if any(o.status is not OrderStatus.REJECTED for o in existing) \
                    else DecisionOutcome.REJECTED
                self._record(signal, outcome, "recovered after a restart: its orders were already durable", existing,
                             code=DecisionCode.RECOVERED, terms=terms)
            return existing
        elif key in self._decided:
            return []  # decided before (no order, deferred, rejected): deciding again would repeat it
        late = self._signal_time_problem(signal)
        if late is not None:
            code, why = late
            if raise_errors:
                raise OrderError(f"signal {base}: {why}")
            self._record(signal, DecisionOutcome.REJECTED, why, code=code, terms=terms)
            return []
        hours = self._hours_problem(instrument)
        if hours is not None:
            self._record(signal, DecisionOutcome.REJECTED, hours, code=DecisionCode.MARKET_HOURS, terms=terms)
            return []
        try:
            snapshot = self._reference_snapshot(signal.instrument_id)
            decision = self.sizer.size(routed, instrument, snapshot.mid, self.portfolio.equity)
            if decision.quantity is None:
                self._record(signal, DecisionOutcome.NO_ORDER, decision.reason, code=DecisionCode.SIZED_TO_NOTHING,
                             terms=terms)
                return []
            plan = self.router.route(routed, decision.quantity, snapshot, instrument, account_id=self.account_id,
                                     adv=self.adv.get(signal.instrument_id),
                                     volatility_bps=self._volatility_bps(signal.instrument_id), ts_ns=self._now,
                                     schedule=self._vwap_schedule(signal.instrument_id, decision.quantity))
        except TradebookError as exc:
            if raise_errors:
                raise
            self._record(signal, DecisionOutcome.REJECTED, f"{type(exc).__name__}: {exc}", terms=terms,
                         code=DecisionCode.NO_USABLE_QUOTE if isinstance(exc, DataError) else DecisionCode.BAD_INPUT)
            return []
        if plan.algo is not None:
            # durable before any slice goes: a restart releases the slices still due
            self._journal.append(algo_record(plan.algo, plan.children, self._now))
            self._parents[plan.algo.parent_id] = AlgoParent(plan.algo, self._now)
            self.tca.note_parent(plan.algo.intent, plan.algo.schedule.name, decision_ts_ns=self._now,
                                 decision_price=float(snapshot.mid), signal_ts_ns=routed.ts_ns or self._now)
            released = {intent.intent_id for intent in plan.intents}
            for child in plan.children:
                if plan.algo.child_id(child.index) not in released:
                    self._scheduled.append(ScheduledSlice(child.release_ts_ns, plan.algo, child, routed))
        orders: list[Order] = []
        deferred = False
        refused_slice: Order | None = None
        for intent in plan.intents:
            sent = await self._send(intent, routed)
            deferred = deferred or not sent
            orders.extend(sent)
            if plan.algo is not None:
                refused_slice = self._watch_children(sent, intent, routed, plan.algo) or refused_slice
        why = f"sizing: {decision.reason}; router {plan.rule}: {plan.explanation}"
        if resend:
            why = f"sent again as {routed.signal_id} (its earlier order never reached the venue); {why}"
        if plan.algo is not None and not orders and not deferred:
            outcome, code = DecisionOutcome.SCHEDULED, DecisionCode.ALGO_SCHEDULED
        elif deferred and not orders:
            outcome, code = DecisionOutcome.DEFERRED, DecisionCode.SPREAD_DEFERRED
            why = f"{why}; {self._deferred[-1].reason if self._deferred else 'deferred'}"
        elif any(o.status is not OrderStatus.REJECTED for o in orders):
            outcome, code = DecisionOutcome.SENT, DecisionCode.ROUTED
        else:
            outcome, code = DecisionOutcome.REJECTED, DecisionCode.REFUSED
            why = f"{why}; {'; '.join(o.reason for o in orders)}"
        self._record(signal, outcome, why, orders, code=code, terms=terms)
        if refused_slice is not None:
            self._stop_algo(refused_slice)
        return orders

    def _resend_number(self, existing: list[Order]) -> int:
        """The resend a signal's orders call for: n for ``<signal_id>:resend:<n>``, or 0 (nothing to send).

        The rule: when every order of a signal was made durable but never reached the venue
        (rejected on restart with :attr:`RejectCode.NEVER_REACHED_VENUE`, never resent under its
        own id), the same signal (same id and terms), from a strategy's next step or a re-run
        cell, is decided again and sent under ``<signal_id>:resend:1`` (then ``:resend:2``...),
        so its client order id is new. Algo slices are not resent this way: the slice retries
        handle a slice the venue never received.
        """
        unsent = self.oms.never_reached_venue()
        if not unsent:
            return 0
        entries = [o for o in existing if not o.intent.intent_id.endswith(":stop")]
        if not entries or any(o.intent.parent_id is not None for o in entries):
            return 0
        lost = set(unsent)
        if not all(o.client_order_id in lost for o in entries):
            return 0
        return 1 + max(attempt_number(o.intent.intent_id, "resend") for o in entries)

    def _decide_unsent(self) -> None:
        """A "not sent" decision for each order reconciliation found never reached the venue (once each).

        The signal's earlier decision said "sent"; this one says what became of it, and that
        the same signal sent again goes under a new id (see :meth:`_resend_number`).
        """
        for coid in self.oms.never_reached_venue():
            if coid in self._unsent_decided:
                continue
            self._unsent_decided.add(coid)
            intent = self.oms.order(coid).intent
            base_id, _, _ = intent.intent_id.partition(":resend:")
            stop = base_id.endswith(":stop") and intent.parent_id is not None
            # a protective stop belongs to its entry's signal
            decided_as = client_order_id_for(intent.parent_id, intent.account_id) if stop else coid
            earlier = next((d for d in reversed(self.decisions) if decided_as in d.client_order_ids), None)
            if earlier is not None:
                strategy_id, signal_id = earlier.strategy_id, earlier.signal_id
            else:  # decided in the moment the process stopped: its id is the intent's
                strategy_id = intent.strategy_id
                signal_id = base_id.removeprefix(f"{strategy_id}:").removesuffix(":stop")
            resend = attempt_number(intent.intent_id, "resend") + 1
            again = f"{base_id}:resend:{resend}"
            reason = (f"order {coid} ({intent.intent_id}) was made durable but never reached {self.venue.name} "
                      f"(the process stopped first); rejected, not resent under its id; "
                      + (f"the order manager sends the protective stop again as {again}" if stop else
                         f"the same signal sent again goes as {signal_id}:resend:{resend}"))
            self._journal_decision(Decision(self._now, strategy_id, signal_id, intent.instrument_id,
                                            DecisionOutcome.NOT_SENT, reason, (coid,),
                                            DecisionCode.NEVER_REACHED_VENUE), None)
            log.warning("not sent: %s", reason)

    async def _submit_intent(self, intent: OrderIntent) -> list[Order]:
        """A ready intent from a notebook: checked like a signal's (bad input raises, nothing stored).

        Float quantities and prices are taken by their repr (``61000.5`` is ``Decimal('61000.5')``),
        then held to the lot and tick like any other.
        """
        intent = _decimal_intent(intent)
        instrument = self._tradable(intent.instrument_id)
        try:
            return [self.oms.order(intent.client_order_id)]  # sent before: nothing new
        except OrderError:
            pass
        self._reference_snapshot(intent.instrument_id)
        self.risk.check(intent, instrument, self._risk_context(intent.instrument_id))  # malformed: raises
        return await self._send(intent, None)

    def _has_order_for(self, intent_id: str) -> bool:
        try:
            self.oms.order_for_intent(intent_id)
        except OrderError:
            return False
        return True

    def _net_positions(self) -> dict[str, Decimal]:
        return self.portfolio.net_positions_by_instrument(self.account_id)

    def _risk_context(self, instrument_id: str) -> RiskContext:
        quote = self._quotes.get(instrument_id)
        reference = None
        cached = self._snapshots.get(instrument_id)
        if cached is not None and cached[0] is quote:  # the router priced this very quote: same Decimals
            reference = ReferenceQuote.from_snapshot(cached[1])
        elif quote is not None and all(np.isfinite(quote[1:3])):
            ts, bid, ask, bid_sz, ask_sz = quote
            reference = ReferenceQuote(Decimal(repr(bid)), Decimal(repr(ask)),
                                       Decimal(repr(bid_sz)) if np.isfinite(bid_sz) and bid_sz > 0 else None,
                                       Decimal(repr(ask_sz)) if np.isfinite(ask_sz) and ask_sz > 0 else None, ts)
        return RiskContext(now_ns=self._now, equity=self.portfolio.equity, daily_pnl=self._daily_pnl(),
                           quote=reference, positions=self._net_positions(),
                           prices=self.portfolio.last_prices(self.instruments), instruments=self.instruments,
                           unresolved_instruments=self.oms.blocked_instruments())

    def _daily_pnl(self) -> Decimal:
        day = self._now // (86_400 * _NS) * 86_400 * _NS
        if day != self._day_start_ns:
            self._day_start_ns = day
            self._day_start_equity = self.portfolio.equity_at(day)
        return self.portfolio.equity - self._day_start_equity

    def _breaker_open(self) -> bool:
        """The breaker refuses calls now (looked at without using up a half-open trial)."""
        state = self.breaker.state
        if state is BreakerState.HALF_OPEN:
            return True  # its one trial is in flight
        if state is BreakerState.OPEN:
            opened = self.breaker.transitions[-1].ts_ns
            return self._now - opened < self.breaker.cooldown_ns
        return False

    async def _send(self, intent: OrderIntent, signal: Signal | None,
                    deferred: DeferredOrder | None = None) -> list[Order]:
        """Hours, breaker, risk, then the order manager (which makes the intent durable before the venue sees it).

        Returns [] when the spread filter deferred the order (it is tried again at the next steps).
        """
        try:
            return [self.oms.order(intent.client_order_id)]
        except OrderError:
            pass
        instrument = self._instrument(intent.instrument_id)
        hours = self._hours_problem(instrument)
        if hours is not None:
            return [self._refuse(intent, hours)]
        if self._breaker_open():
            return [self._refuse(intent, f"circuit breaker open after repeated venue failures "
                                         f"({self.venue.name}): {self.breaker.transitions[-1].reason}")]
        decision = self.risk.check(intent, instrument, self._risk_context(intent.instrument_id))
        if decision.action is RiskAction.DEFER:
            if deferred is None:
                deferred = DeferredOrder(intent, signal, self._now, decision.reason)
                # journaled: a restart retries it instead of forgetting the signal it came from
                self._journal.append({"kind": "deferred", "intent": intent_to_record(intent), "ts_ns": self._now,
                                      "reason": decision.reason})
            deferred.reason = decision.reason
            self._deferred.append(deferred)  # the same entry: its attempts keep counting
            log.info("deferred %s: %s", intent.intent_id, decision.reason)
            return []
        if not decision.accepted:
            return [self._refuse(intent, f"risk {decision.check}: {decision.reason}")]
        if not self.breaker.allow(self._now):  # the half-open trial went to another order meanwhile
            return [self._refuse(intent, f"circuit breaker open after repeated venue failures "
                                         f"({self.venue.name})")]
        quote = self._quotes.get(intent.instrument_id)  # the decision price for TCA: the mid priced against
        mid = (quote[1] + quote[2]) / 2 if quote is not None and math.isfinite(quote[1] + quote[2]) else None
        signal_ts = signal.ts_ns if signal is not None and signal.ts_ns and intent.parent_id is None else self._now
        self.tca.note_order(intent, decision_ts_ns=self._now, decision_price=mid, signal_ts_ns=signal_ts)
        if self._staging and self.breaker.state is BreakerState.CLOSED:
            order = self.oms.stage(intent)  # sent with the step's other orders (_send_staged)
            self.risk.record_sent(self._now)
            return [order]
        order = await self.oms.submit(intent)
        self.risk.record_sent(self._now)
        self._record_venue_outcome(order)
        return [order]

    def _refuse(self, intent: OrderIntent, reason: str) -> Order:
        """Record ``intent`` as refused before it left (never sent), remembered as a refusal (not a venue's)."""
        order = self.oms.reject(intent, reason)
        self._refused.add(order.client_order_id)
        return order

    async def _send_staged(self) -> None:
        for order in await self.oms.send_staged():
            self._record_venue_outcome(order)

    def _record_venue_outcome(self, order: Order) -> None:
        # the venue refused it, it never left, or its fate is unknown: a venue failure for the breaker
        failed = order.status is OrderStatus.UNRESOLVED or order.status is OrderStatus.REJECTED and (
            order.reason.startswith("venue error") or self.oms.rejection_code(order.client_order_id) is not None)
        if failed:
            self.breaker.record_failure(self._now, order.reason or str(order.status))
        else:
            self.breaker.record_success(self._now)
