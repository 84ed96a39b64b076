"""The paper venue's account: what working orders hold, buying power and positions, and whether a new order fits.

The rules are in the module doc of :mod:`tradebook.venues.paper` (Accounts).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, getcontext

from tradebook.errors import ConfigError
from tradebook.model.instruments import AssetClass, Instrument, Side, to_decimal
from tradebook.venues.paper_orders import BPS, EXACT, InstrumentSlot, MARGINED, VenueOrder, ZERO, exact_enough


class PaperAccount:
    """The account checks and running sums. Part of :class:`~tradebook.venues.paper.PaperVenue`: it works on the
    venue's state (set up in ``PaperVenue.__init__``) under its lock, like the rest of the class.
    """

    def _refusal(self, order: VenueOrder, slot: InstrumentSlot, replacing: VenueOrder | None = None) -> str:
        """Why the account cannot take ``order`` (empty when it can).

        A new order the running sums prove acceptable is passed without rescanning the working
        orders; any other (a possible refusal, a replace, sums that cannot prove it) gets the full
        check, which also words the reason.
        """
        if replacing is None and self._surely_acceptable(order, slot):
            return ""
        return self._refusal_by_scan(order, slot, replacing)

    def _refusal_by_scan(self, order: VenueOrder, slot: InstrumentSlot, replacing: VenueOrder | None = None) -> str:
        """The full check: what the working orders (but ``replacing``) hold, summed afresh."""
        instrument = slot.instrument
        position = self._positions.get(order.instrument_id, ZERO)
        if order.reduce_only:
            reduces = position * order.sign < 0 and order.remaining <= abs(position)
            if not reduces:
                return (f"reduce-only {order.side.value} of {order.remaining} would not reduce the position "
                        f"{position} in {order.instrument_id}")
        working = [o for o in self._working.values() if o is not replacing]
        if instrument.asset_class not in MARGINED and order.side is Side.SELL:
            selling = sum((o.remaining for o in working if o.instrument_id == order.instrument_id
                           and o.side is Side.SELL), ZERO)
            available = position - selling
            if order.remaining > available:
                return (f"insufficient position: selling {order.remaining} {order.instrument_id} with {available} "
                        f"available ({position} held, {selling} in working sells); a cash account cannot sell short")
            return ""
        if instrument.asset_class is not AssetClass.FUTURE and order.reference_price is None:
            return f"no quote yet for {order.instrument_id}: a market order cannot be valued against buying power"
        before = self._requirement(working)
        if instrument.asset_class in MARGINED:
            needed = self._requirement([*working, order]) - before
        else:  # a spot buy reserves its own notional and fee, independent of the other orders
            price = order.reference_price or ZERO
            needed = order.remaining * price * instrument.multiplier + self._fee(slot, order.remaining, price,
                                                                                 maker=False)
        available = self._cash + self._unrealised_margined() - before
        if needed > available:
            return (f"insufficient buying power: the order needs {needed:.2f} {self.currency}, "
                    f"{available:.2f} {self.currency} available")
        return ""

    def _surely_acceptable(self, order: VenueOrder, slot: InstrumentSlot) -> bool | tuple[Decimal, Decimal]:
        """Truthy when the running sums prove the full check (:meth:`_refusal_by_scan`) passes ``order``.

        The same tests on the same values, with what the working orders hold taken from the exact
        running sums instead of a fresh sum. The full check sums in the decimal context (28
        digits) and would round only if the sum needed more digits: with every term >= 0 each of
        its partial sums has at most the digits of the exact total (no larger, no finer), so an
        exact total within the context's precision (:func:`exact_enough`) means the full check
        sums without rounding, to the same value. False when it may refuse or this cannot be
        proved: the full check then runs. A spot buy's proof is its (notional, taker fee): the
        terms :meth:`_hold` adds for it, computed once.
        """
        remaining = order.remaining
        position = self._positions.get(order.instrument_id, ZERO)
        if order.reduce_only and not (position * order.sign < 0 and remaining <= abs(position)):
            return False
        prec = getcontext().prec
        if not slot.margined and order.side is Side.SELL:  # a cash account sells what it holds
            selling = slot.sell_qty
            return not slot.negative_terms and exact_enough(selling, prec) and not remaining > position - selling
        if slot.instrument.asset_class is not AssetClass.FUTURE and order.reference_price is None:
            return False
        before = self._held_requirement(prec)
        if before is None:
            return False
        if slot.margined:
            without = self._margined_requirement(slot, prec)
            with_order = self._margined_requirement(slot, prec, order)
            if without is None or with_order is None:
                return False
            if not exact_enough(EXACT.add(EXACT.subtract(before, without), with_order), prec):
                return False
            needed = with_order - without
            return not needed > self._cash + self._unrealised_margined() - before
        # a spot buy reserves its own notional and fee, independent of the other orders
        price = order.reference_price or ZERO
        terms = (remaining * price * slot.instrument.multiplier, self._fee(slot, remaining, price, maker=False))
        if terms[0] + terms[1] > self._cash + self._unrealised_margined() - before:
            return False
        return terms

    def _held_requirement(self, prec: int) -> Decimal | None:
        """:meth:`_requirement` of all working orders from the running sums (exact; None if not provable)."""
        total = ZERO
        for slot in self._slots.values():
            if slot.negative_terms:
                return None
            if not slot.margined:
                total = EXACT.add(total, slot.reserved)
            elif slot.n_held or self._positions.get(slot.instrument.instrument_id):
                requirement = self._margined_requirement(slot, prec)
                if requirement is None:
                    return None
                total = EXACT.add(total, requirement)
        return total if exact_enough(total, prec) else None

    def _margined_requirement(self, slot: InstrumentSlot, prec: int, extra: VenueOrder | None = None) -> Decimal | None:
        """One margined instrument's part of :meth:`_requirement` (exact), with ``extra`` working too; None
        when the running sums cannot prove the full check's value."""
        instrument = slot.instrument
        instrument_id = instrument.instrument_id
        buys, sells = slot.buy_qty, slot.sell_qty
        if extra is not None:
            if extra.side is Side.BUY:
                buys = EXACT.add(buys, extra.remaining)
            else:
                sells = EXACT.add(sells, extra.remaining)
        if not (exact_enough(buys, prec) and exact_enough(sells, prec)):
            return None
        position = self._positions.get(instrument_id, ZERO)
        reach = max(abs(position + buys), abs(position - sells))
        price = self._marks.get(instrument_id) or next(
            (o.reference_price for o in self._working.values()
             if o.instrument_id == instrument_id and o.reference_price is not None),
            extra.reference_price if extra is not None else None)
        terms = [reach * self._unit_margin(instrument, price)]
        terms.extend(self._fee(slot, o.remaining, price or ZERO, maker=False) for o in slot.unpriced.values())
        if extra is not None:
            terms.append(self._fee(slot, extra.remaining, extra.reference_price or price or ZERO, maker=False))
        total = slot.reserved
        for term in terms:
            if term < 0:
                return None
            total = EXACT.add(total, term)
        return total

    def _hold(self, order: VenueOrder, slot: InstrumentSlot,
              spot_buy_terms: tuple[Decimal, Decimal] | None = None) -> None:
        """Add a working order to its instrument's running sums, exactly as :meth:`_requirement` counts it.

        Called whenever an order starts working or its remaining quantity or reference price
        changes (after :meth:`_release`), so the sums always equal a fresh sum over the working
        orders. ``spot_buy_terms``: a spot buy's terms as :meth:`_surely_acceptable` computed them
        for the order as it is now.
        """
        remaining = order.remaining
        if order.side is Side.BUY:
            slot.buy_qty = EXACT.add(slot.buy_qty, remaining)
        else:
            slot.sell_qty = EXACT.add(slot.sell_qty, remaining)
        if slot.margined:
            if order.reference_price:
                terms: tuple[Decimal, ...] = (self._fee(slot, remaining, order.reference_price, maker=False),)
            else:
                terms = ()
                slot.unpriced[order.client_order_id] = order  # its fee depends on the price at the check
        elif order.side is Side.BUY:
            if spot_buy_terms is not None:
                terms = spot_buy_terms
            else:
                price = order.reference_price or ZERO
                terms = (remaining * price * slot.instrument.multiplier, self._fee(slot, remaining, price, maker=False))
        else:
            terms = ()
        negative = remaining < 0
        for term in terms:
            slot.reserved = EXACT.add(slot.reserved, term)
            negative += term < 0
        slot.negative_terms += negative
        slot.n_held += 1
        order.held = (remaining, terms, negative)

    def _release(self, order: VenueOrder) -> None:
        """Take an order out of the running sums (what :meth:`_hold` added); nothing if it holds nothing."""
        if order.held is None:
            return
        slot = self._slots[order.instrument_id]
        remaining, terms, negative = order.held
        order.held = None
        if order.side is Side.BUY:
            slot.buy_qty = EXACT.subtract(slot.buy_qty, remaining)
        else:
            slot.sell_qty = EXACT.subtract(slot.sell_qty, remaining)
        if slot.unpriced:
            slot.unpriced.pop(order.client_order_id, None)
        for term in terms:
            slot.reserved = EXACT.subtract(slot.reserved, term)
        slot.negative_terms -= negative
        slot.n_held -= 1

    def _fee(self, slot: InstrumentSlot, quantity: Decimal, price: Decimal, *, maker: bool) -> Decimal:
        rates = slot.fee_rates
        notional = abs(quantity * price * slot.instrument.multiplier)
        return notional * rates[0 if maker else 1] / BPS + abs(quantity) * rates[2]

    def _unit_margin(self, instrument: Instrument, price: Decimal | None) -> Decimal:
        if instrument.asset_class is AssetClass.FUTURE:
            margin = self._futures_margin
            if isinstance(margin, Mapping):
                if instrument.instrument_id not in margin:
                    raise ConfigError(f"futures_initial_margin has no entry for {instrument.instrument_id}; "
                                      f"expected one per futures instrument, got {sorted(margin)}")
                margin = margin[instrument.instrument_id]
            return to_decimal(margin, "futures_initial_margin")
        return self._fx_margin_rate * (price or ZERO) * instrument.multiplier

    def _requirement(self, working: list[VenueOrder]) -> Decimal:
        """Cash reserved by working spot buys plus initial margin of margined positions and orders."""
        total = ZERO
        by_instrument: dict[str, list[VenueOrder]] = {}
        for order in working:
            by_instrument.setdefault(order.instrument_id, []).append(order)
        for instrument_id in set(by_instrument) | {k for k, v in self._positions.items() if v != 0}:
            slot = self._slots.get(instrument_id)
            if slot is None:
                continue
            instrument = slot.instrument
            orders = by_instrument.get(instrument_id, [])
            if instrument.asset_class in MARGINED:
                position = self._positions.get(instrument_id, ZERO)
                buys = sum((o.remaining for o in orders if o.side is Side.BUY), ZERO)
                sells = sum((o.remaining for o in orders if o.side is Side.SELL), ZERO)
                reach = max(abs(position + buys), abs(position - sells))
                price = self._marks.get(instrument_id) or next((o.reference_price for o in orders
                                                                 if o.reference_price is not None), None)
                total += reach * self._unit_margin(instrument, price)
                total += sum((self._fee(slot, o.remaining, o.reference_price or price or ZERO, maker=False)
                              for o in orders), ZERO)
            else:
                for o in orders:
                    if o.side is Side.BUY:
                        price = o.reference_price or ZERO
                        total += o.remaining * price * instrument.multiplier
                        total += self._fee(slot, o.remaining, price, maker=False)
        return total

    def _unrealised_margined(self) -> Decimal:
        total = ZERO
        if not self._any_margined:
            return total  # what the loop below sums when no position can be margined
        for instrument_id, position in self._positions.items():
            instrument = self._slots[instrument_id].instrument
            if position == 0 or instrument.asset_class not in MARGINED:
                continue
            avg = self._avg_price[instrument_id]
            mark = self._marks.get(instrument_id, avg)
            total += (mark - avg) * position * instrument.multiplier
        return total

    def _equity(self) -> Decimal:
        equity = self._cash + self._unrealised_margined()
        for instrument_id, position in self._positions.items():
            instrument = self._slots[instrument_id].instrument
            if position != 0 and instrument.asset_class not in MARGINED:
                mark = self._marks.get(instrument_id, self._avg_price.get(instrument_id, ZERO))
                equity += position * mark * instrument.multiplier
        return equity

    def _buying_power(self, working: list[VenueOrder] | None = None) -> Decimal:
        if working is None:
            working = list(self._working.values())
        return self._cash + self._unrealised_margined() - self._requirement(working)
