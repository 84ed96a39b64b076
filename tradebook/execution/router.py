"""The order-type router: which order(s) a sized signal becomes, priced against the quote.

Rules, first match wins (every threshold is a :class:`RouterConfig` field):

1. ``strength > market_strength`` (0.9): a **market** order (IOC: a market order never rests).
2. spread ``> wide_spread_bps`` (20): a **limit at mid plus an offset** toward the
   aggressive side (a buy above mid, a sell below).
3. quantity ``> twap_adv_fraction`` (1%) of ADV: a **TWAP parent** (5 slices, 60 s
   apart); each slice is a limit priced at its release time by rules 2, 4 and 5
   (:meth:`OrderRouter.price_child`). Pass ``schedule=VwapSchedule(...)`` to pace by volume.
4. quantity ``< passive_adv_fraction`` (0.1%) of ADV: a **limit at our own touch**
   (a buy at the bid, a sell at the ask).
5. otherwise a **limit at our touch improved by the offset** (a buy at bid + offset,
   a sell at ask - offset).

Rules 3 and 4 need the average daily volume; with ``adv=None`` they are skipped.

The offset is in basis points of the mid and widens with volatility:
``offset_bps + offset_vol_multiplier * volatility_bps`` (``volatility_bps``: the
caller's realised volatility of the mid, e.g. over the trailing minute).

Limit entries never cross: a buy is capped one tick below the ask and a sell one tick
above the bid (on a one-tick market that means joining our touch). Taking liquidity is
rule 1's job, or a retry's (:class:`~tradebook.execution.algos.RetryPolicy`). Prices
round passively onto the instrument's tick (a buy down, a sell up); quantities must
already sit on the lot grid (sizing conforms them; an off-lot quantity here is a bug
upstream and raises ConformanceError). Every intent passes the minimum notional.

A signal's ``stop_loss`` becomes a protective STOP order (market on trigger, GTC,
reduce-only) on the opposite side, carried by the plan and sent by the session once
the entry fills (sized to what filled).

Intent ids are deterministic, so a re-run never produces a new client order id:
``strategy:signal`` for the entry (or the algo parent), ``:slice:n`` for children,
``:stop`` for the protective stop, ``:retry:n`` for retries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from math import isfinite
from decimal import Decimal
from enum import StrEnum

from tradebook.errors import ConfigError, ConformanceError, DataError, OrderError
from tradebook.execution.algos import ParentOrder, Schedule, ScheduledChild, TwapSchedule, child_orders
from tradebook.model.instruments import Instrument, Side, get_instrument, to_decimal
from tradebook.model.orders import OrderIntent, OrderType, Signal, TimeInForce
from tradebook.model.quotes import QuoteSnapshot
from tradebook.model.time import MAX_PLAUSIBLE_NS, MIN_PLAUSIBLE_NS, NS_PER_SECOND, check_ns_range

BPS = Decimal(10_000)


# -- configuration and the plan ----------------------------------------------------------------
class RouteRule(StrEnum):
    MARKET = "market"
    WIDE_SPREAD = "wide_spread"
    TWAP = "twap"
    VWAP = "vwap"
    PASSIVE = "passive"  # small order: join our touch
    IMPROVE = "improve"  # our touch improved by the offset


@dataclass(frozen=True)
class RouterConfig:
    """Every router threshold, with the issue's defaults.

    ``offset_vol_multiplier``: basis points of extra offset per basis point of realised
    volatility (0.25: 4 bps of one-minute volatility widen a 1 bp offset to 2 bps).
    ``max_quote_age_s``: a reference quote older than this (against the routing time)
    is stale and refused; None turns the check off (tests, research).
    """

    market_strength: float = 0.9
    wide_spread_bps: float = 20.0
    twap_adv_fraction: float = 0.01
    passive_adv_fraction: float = 0.001
    offset_bps: float = 1.0
    offset_vol_multiplier: float = 0.25
    twap_slices: int = 5
    twap_interval_s: float = 60.0
    max_quote_age_s: float | None = 5.0
    market_time_in_force: TimeInForce = TimeInForce.IOC
    limit_time_in_force: TimeInForce = TimeInForce.DAY
    stop_time_in_force: TimeInForce = TimeInForce.GTC

    def __post_init__(self) -> None:
        def number(name: str, low: float, high: float = math.inf, *, open_low: bool = False) -> None:
            value = getattr(self, name)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            ok = ok and (value > low if open_low else value >= low) and value <= high
            if not ok:
                bound = f"{'>' if open_low else '>='} {low}" + (f" and <= {high}" if high != math.inf else "")
                raise ConfigError(f"RouterConfig.{name} must be a finite number {bound}, got {value!r}")

        number("market_strength", 0.0, 1.0)
        number("wide_spread_bps", 0.0, open_low=True)
        number("twap_adv_fraction", 0.0, open_low=True)
        number("passive_adv_fraction", 0.0, open_low=True)
        number("offset_bps", 0.0)
        number("offset_vol_multiplier", 0.0)
        number("twap_interval_s", 0.0, open_low=True)
        if self.max_quote_age_s is not None:
            number("max_quote_age_s", 0.0, open_low=True)
        if self.passive_adv_fraction >= self.twap_adv_fraction:
            raise ConfigError(f"RouterConfig.passive_adv_fraction ({self.passive_adv_fraction}) must be below "
                              f"twap_adv_fraction ({self.twap_adv_fraction})")
        if isinstance(self.twap_slices, bool) or not isinstance(self.twap_slices, int) or self.twap_slices < 1:
            raise ConfigError(f"RouterConfig.twap_slices must be a positive integer, got {self.twap_slices!r}")
        for name in ("market_time_in_force", "limit_time_in_force", "stop_time_in_force"):
            if not isinstance(getattr(self, name), TimeInForce):
                raise ConfigError(f"RouterConfig.{name} must be a TimeInForce, got {getattr(self, name)!r}")

    def offset_for(self, volatility_bps: float | Decimal) -> Decimal:
        """The price offset in basis points of the mid at this volatility."""
        return to_decimal(self.offset_bps) + to_decimal(self.offset_vol_multiplier) * to_decimal(volatility_bps)


@dataclass(frozen=True, init=False)
class RoutePlan:
    """What the router decided for one signal.

    ``intents``: orders to send now (the entry, or the algo slices already due).
    ``algo`` and ``children``: the parent order and its whole schedule (released slices
    included), when rule 3 applied. ``protective_stop``: sent once the entry fills.
    """

    rule: RouteRule
    intents: tuple[OrderIntent, ...]
    algo: ParentOrder | None
    protective_stop: OrderIntent | None
    explanation: str
    children: tuple[ScheduledChild, ...] = ()

    def __init__(self, rule: RouteRule, intents: tuple[OrderIntent, ...], algo: ParentOrder | None,
                 protective_stop: OrderIntent | None, explanation: str,
                 children: tuple[ScheduledChild, ...] = ()) -> None:
        # one per order: straight into __dict__ (see OrderIntent's constructor for why)
        state = self.__dict__
        state["rule"] = rule
        state["intents"] = intents
        state["algo"] = algo
        state["protective_stop"] = protective_stop
        state["explanation"] = explanation
        state["children"] = children


# -- the router ---------------------------------------------------------------------------------
# enum members read on the order path, as module constants: on Python 3.11 ``Side.BUY`` is a
# descriptor call on the enum class (~60 ns), paid several times per order
_BUY = Side.BUY
_SELL = Side.SELL
_MARKET_ORDER = OrderType.MARKET
_LIMIT_ORDER = OrderType.LIMIT
_MARKET_RULE = RouteRule.MARKET
_MARKET_REASON = f"router:{RouteRule.MARKET}"


_FLOAT_TEXT: dict[float, str] = {}  # str() of the strengths and thresholds routed so far (see OrderRouter.route)
_MAX_FLOAT_TEXTS = 4096  # started over when full


def _float_text(value: float | int) -> str:
    """``str(value)``, remembered for a finite non-zero float (0.0 == -0.0 print differently)."""
    text = str(value)
    if value.__class__ is float and value and isfinite(value):
        if len(_FLOAT_TEXT) >= _MAX_FLOAT_TEXTS:
            _FLOAT_TEXT.clear()
        _FLOAT_TEXT[value] = text
    return text


class OrderRouter:
    """Turns a sized signal into a :class:`RoutePlan`; see the module docstring for the rules."""

    def __init__(self, config: RouterConfig | None = None, *,
                 instruments: dict[str, Instrument] | None = None) -> None:
        self.config = config or RouterConfig()
        self._instruments = instruments  # None: the bundled registry
        self._age_limit: tuple[float, int] = (math.nan, 0)  # (max_quote_age_s, in ns): converted once

    def _max_quote_age_ns(self, max_age_s: float) -> int:
        """``max_quote_age_s`` in whole ns, converted once per value (``config`` may be swapped)."""
        seconds, ns = self._age_limit
        if seconds != max_age_s:
            ns = round(max_age_s * NS_PER_SECOND)
            self._age_limit = (max_age_s, ns)
        return ns

    def route(
        self,
        signal: Signal,
        quantity: Decimal,
        quote: QuoteSnapshot,
        instrument: Instrument | str,
        *,
        account_id: str,
        adv: Decimal | None,
        volatility_bps: float = 0.0,
        ts_ns: int,
        schedule: Schedule | None = None,
    ) -> RoutePlan:
        """Route ``quantity`` of ``signal`` against ``quote`` at ``ts_ns``.

        ``instrument`` may be an id, looked up in the router's registry. ``schedule``
        replaces the default TWAP for rule 3 (e.g. a :class:`VwapSchedule`).
        """
        cfg = self.config
        inst = instrument if instrument.__class__ is Instrument or isinstance(instrument, Instrument) \
            else get_instrument(instrument, self._instruments)
        side = self._check_signal(signal, inst)
        if not account_id:
            raise OrderError(f"signal {signal.signal_id}: account_id must not be empty")
        qty = inst.conform_quantity(quantity)
        adv_dec = None if adv is None else _check_adv(adv, inst)
        if volatility_bps.__class__ is float and isfinite(volatility_bps) and volatility_bps >= 0:
            vol = None  # valid: converted to Decimal only by the limit rules, which price with it
        else:
            vol = _check_volatility(volatility_bps)  # the other kinds, and the DataError for a bad one
        self._check_quote(quote, inst, ts_ns)
        entry_id = f"{signal.strategy_id}:{signal.signal_id}"
        stop = None if signal.stop_loss is None else \
            self._protective_stop(signal, side, qty, quote, inst, entry_id, account_id, ts_ns)
        stop_loss = stop.stop_price if stop else None

        if signal.strength > cfg.market_strength:
            buy = side is _BUY
            reference = quote.ask if buy else quote.bid
            inst.check_notional(reference, qty)
            # the explanation costs more than the rest of this branch, mostly in formatting floats: the
            # text of the strength and threshold is remembered (str() of an equal non-zero float is the
            # same; an int's differs, so only floats are looked up); a member's _value_ is its format();
            # !s: a Decimal's str() is its format(), without the slower trip through __format__
            strength, threshold = signal.strength, cfg.market_strength
            strength_text = _FLOAT_TEXT.get(strength) if strength.__class__ is float else None
            if strength_text is None:
                strength_text = _float_text(strength)
            threshold_text = _FLOAT_TEXT.get(threshold) if threshold.__class__ is float else None
            if threshold_text is None:
                threshold_text = _float_text(threshold)
            why = (f"strength {strength_text} > {threshold_text}: market {side._value_} {qty!s} "
                   f"{inst.instrument_id} (reference {'ask' if buy else 'bid'} {reference!s})")
            # positional (binding 11 keywords costs more than the constructor's own work): intent_id,
            # strategy_id, account_id, instrument_id, side, quantity, order_type, time_in_force, ts_ns,
            # limit_price, stop_price, parent_id, reduce_only, stop_loss, reason
            intent = OrderIntent(entry_id, signal.strategy_id, account_id, inst.instrument_id, side, qty,
                                 _MARKET_ORDER, cfg.market_time_in_force, ts_ns, None, None, None, False, stop_loss,
                                 _MARKET_REASON)
            return RoutePlan(_MARKET_RULE, (intent,), None, stop, why)

        if vol is None:
            vol = _check_volatility(volatility_bps)
        base = dict(intent_id=entry_id, strategy_id=signal.strategy_id, account_id=account_id,
                    instrument_id=inst.instrument_id, side=side, quantity=qty, ts_ns=ts_ns, stop_loss=stop_loss)

        spread = quote.spread_bps
        if spread <= to_decimal(cfg.wide_spread_bps) and adv_dec is not None \
                and qty > adv_dec * to_decimal(cfg.twap_adv_fraction):
            return self._algo_plan(base, qty, quote, inst, schedule, adv_dec, vol, stop, ts_ns)

        rule, price, why = self._limit_price(side, qty, quote, inst, adv_dec, vol)
        inst.check_notional(price, qty)
        intent = OrderIntent(order_type=_LIMIT_ORDER, time_in_force=cfg.limit_time_in_force,
                             limit_price=price, reason=f"router:{rule}", **base)
        return RoutePlan(rule, (intent,), None, stop, f"{why}: limit {side} {qty} {inst.instrument_id} @ {price}")

    def price_child(
        self,
        parent: ParentOrder,
        child: ScheduledChild,
        quote: QuoteSnapshot,
        *,
        adv: Decimal | None,
        volatility_bps: float = 0.0,
        ts_ns: int,
    ) -> OrderIntent:
        """The limit order for one slice at its release: priced by rules 2, 4 and 5 against ``quote``."""
        inst = parent.instrument
        if ts_ns < child.release_ts_ns:
            raise OrderError(f"{parent.child_id(child.index)} is due at {child.release_ts_ns}, not before "
                             f"(asked at {ts_ns})")
        self._check_quote(quote, inst, ts_ns)
        side = Side(parent.intent.side)
        qty = inst.conform_quantity(child.quantity)
        rule, price, why = self._limit_price(side, qty, quote, inst, _check_adv(adv, inst),
                                             _check_volatility(volatility_bps))
        inst.check_notional(price, qty)
        return OrderIntent(
            intent_id=parent.child_id(child.index),
            strategy_id=parent.intent.strategy_id,
            account_id=parent.intent.account_id,
            instrument_id=inst.instrument_id,
            side=side,
            quantity=qty,
            order_type=_LIMIT_ORDER,
            time_in_force=self.config.limit_time_in_force,
            ts_ns=ts_ns,
            limit_price=price,
            parent_id=parent.parent_id,
            reason=f"{parent.schedule.name} slice {child.index}/{parent.schedule.slices}, router:{rule} ({why})",
        )

    # -- pieces ---------------------------------------------------------------------------------
    def _limit_price(self, side: Side, qty: Decimal, quote: QuoteSnapshot, inst: Instrument,
                     adv: Decimal | None, vol: Decimal) -> tuple[RouteRule, Decimal, str]:
        """Rules 2, 4 and 5: (rule, conformed limit price, why)."""
        cfg = self.config
        offset_bps = cfg.offset_for(vol)
        offset = quote.mid * offset_bps / BPS
        sign = 1 if side is _BUY else -1
        if quote.spread_bps > to_decimal(cfg.wide_spread_bps):
            rule, raw = RouteRule.WIDE_SPREAD, quote.mid + sign * offset
            why = (f"spread {quote.spread_bps:.2f} bps > {cfg.wide_spread_bps}: mid {quote.mid} "
                   f"{'+' if sign > 0 else '-'} {offset_bps} bps")
        elif adv is not None and qty < adv * to_decimal(cfg.passive_adv_fraction):
            rule, raw = RouteRule.PASSIVE, quote.bid if side is _BUY else quote.ask
            why = f"size {qty} < {cfg.passive_adv_fraction} of ADV {adv}: join the {'bid' if sign > 0 else 'ask'}"
        else:
            touch = quote.bid if side is _BUY else quote.ask
            rule, raw = RouteRule.IMPROVE, touch + sign * offset
            why = f"{'bid +' if sign > 0 else 'ask -'} {offset_bps} bps of mid"
        # never cross: a limit entry stays at least one tick inside the opposite touch
        if side is _BUY:
            cap = quote.ask - inst.tick_for(quote.ask)
            capped, raw = raw > cap, min(raw, cap)
        else:
            cap = quote.bid + inst.tick_for(quote.bid)
            capped, raw = raw < cap, max(raw, cap)
        if capped:
            why += f", capped one tick inside the {'ask' if side is _BUY else 'bid'} at {cap}"
        return rule, inst.conform_price(raw, rounding="passive", side=side), why

    def _algo_plan(self, base: dict, qty: Decimal, quote: QuoteSnapshot, inst: Instrument,
                   schedule: Schedule | None, adv: Decimal, vol: Decimal, stop: OrderIntent | None,
                   ts_ns: int) -> RoutePlan:
        cfg = self.config
        schedule = schedule or TwapSchedule(cfg.twap_slices, cfg.twap_interval_s)
        rule = RouteRule.VWAP if schedule.name == "vwap" else RouteRule.TWAP
        inst.check_notional(quote.mid, qty)
        parent_intent = OrderIntent(order_type=_LIMIT_ORDER, time_in_force=cfg.limit_time_in_force,
                                    reason=f"router:{rule} parent", **base)
        parent = ParentOrder(parent_intent, schedule, inst, reference_price=quote.mid)
        children = tuple(child_orders(parent, ts_ns))
        due = tuple(self.price_child(parent, c, quote, adv=adv, volatility_bps=float(vol), ts_ns=ts_ns)
                    for c in children if c.release_ts_ns <= ts_ns)
        why = (f"size {qty} > {cfg.twap_adv_fraction} of ADV {adv}: {rule} over {len(children)} slices "
               f"({', '.join(str(c.quantity) for c in children)})")
        return RoutePlan(rule, due, parent, stop, why, children)

    def _protective_stop(self, signal: Signal, side: Side, qty: Decimal, quote: QuoteSnapshot, inst: Instrument,
                         entry_id: str, account_id: str, ts_ns: int) -> OrderIntent | None:
        if signal.stop_loss is None:
            return None
        price = inst.conform_price(signal.stop_loss)  # an off-tick stop is the caller's error, not ours to move
        if side is _BUY and price >= quote.bid:
            raise OrderError(f"signal {signal.signal_id}: the stop-loss {price} of a buy must be below the bid "
                             f"{quote.bid}, or it would trigger at once")
        if side is _SELL and price <= quote.ask:
            raise OrderError(f"signal {signal.signal_id}: the stop-loss {price} of a sell must be above the ask "
                             f"{quote.ask}, or it would trigger at once")
        return OrderIntent(
            intent_id=f"{entry_id}:stop",
            strategy_id=signal.strategy_id,
            account_id=account_id,
            instrument_id=inst.instrument_id,
            side=_SELL if side is _BUY else _BUY,
            quantity=qty,
            order_type=OrderType.STOP,
            time_in_force=self.config.stop_time_in_force,
            ts_ns=ts_ns,
            stop_price=price,
            parent_id=entry_id,
            reduce_only=True,
            reason=f"protective stop of {entry_id}, sent once the entry fills",
        )

    def _check_signal(self, signal: Signal, inst: Instrument) -> Side:
        if signal.instrument_id != inst.instrument_id:
            raise OrderError(f"signal {signal.signal_id} is for {signal.instrument_id}, "
                             f"but it was routed with {inst.instrument_id}")
        if not signal.strategy_id or not signal.signal_id:
            raise OrderError("a signal needs a strategy_id and a signal_id: the client order id derives from them")
        strength = signal.strength
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not math.isfinite(strength) \
                or not 0 <= strength <= 1:
            raise OrderError(f"signal {signal.signal_id}: strength must be a number in [0, 1], got {strength!r}")
        if signal.side.__class__ is Side:  # already a member: skip the enum lookup
            return signal.side
        try:
            return Side(signal.side)
        except ValueError as exc:
            raise OrderError(f"signal {signal.signal_id}: side must be buy or sell, got {signal.side!r}") from exc

    def _check_quote(self, quote: QuoteSnapshot, inst: Instrument, ts_ns: int) -> None:
        if ts_ns.__class__ is not int and (isinstance(ts_ns, bool) or not isinstance(ts_ns, int)):
            raise DataError(f"ts_ns must be int UTC nanoseconds, got {type(ts_ns).__name__}")
        if not MIN_PLAUSIBLE_NS <= ts_ns < MAX_PLAUSIBLE_NS:
            check_ns_range(ts_ns, "routing time")  # raises, naming the plausible range
        if quote.__class__ is not QuoteSnapshot and not isinstance(quote, QuoteSnapshot):
            raise DataError(f"the reference quote must be a QuoteSnapshot, got {type(quote).__name__}")
        if quote.instrument_id != inst.instrument_id:
            raise DataError(f"the reference quote is for {quote.instrument_id}, the order for {inst.instrument_id}")
        max_age = self.config.max_quote_age_s
        if max_age is None:
            return
        seconds, max_age_ns = self._age_limit  # self._max_quote_age_ns(max_age), without the call once converted
        if seconds != max_age:
            max_age_ns = self._max_quote_age_ns(max_age)
        if ts_ns - quote.ts_ns > max_age_ns:
            raise DataError(f"stale reference quote for {inst.instrument_id}: "
                            f"{(ts_ns - quote.ts_ns) / NS_PER_SECOND:.3f} s old at routing time, "
                            f"max_quote_age_s is {max_age}")


def _check_adv(adv: Decimal | None, inst: Instrument) -> Decimal | None:
    if adv is None:
        return None
    try:
        value = to_decimal(adv, f"{inst.instrument_id} ADV")
    except ConformanceError as exc:
        raise DataError(str(exc)) from exc
    if value <= 0:
        raise DataError(f"{inst.instrument_id}: average daily volume must be positive, got {value}")
    return value


def _check_volatility(volatility_bps: float) -> Decimal:
    if isinstance(volatility_bps, bool) or not isinstance(volatility_bps, (int, float, Decimal)):
        raise DataError(f"volatility_bps must be a number, got {type(volatility_bps).__name__}")
    try:
        value = to_decimal(volatility_bps, "volatility_bps")
    except ConformanceError as exc:
        raise DataError(str(exc)) from exc
    if value < 0:
        raise DataError(f"volatility_bps must not be negative, got {value}")
    return value
