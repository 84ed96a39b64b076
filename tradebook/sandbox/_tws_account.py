"""The TWS sandbox's account: cash, positions at IB's average cost, commissions, and the values TWS reports.

IB's ``avgCost`` is per unit times the multiplier (a future bought at 5000.25 with
multiplier 50 has an average cost of 250012.5); realized P&L is booked when a position is
reduced, net of the reducing execution's commission. Money stays Decimal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from tradebook.sandbox._tws_wire import TwsContract

_CENT = Decimal("0.01")
_ZERO = Decimal(0)


@dataclass
class Position:
    quantity: Decimal = _ZERO
    avg_cost: Decimal = _ZERO  # per unit, times the multiplier (IB's avgCost)
    realized: Decimal = _ZERO


class TwsAccount:
    """One account's cash and positions (keyed by conId); the server calls it on its own loop."""

    def __init__(self, account_id: str, cash: Decimal, *, commission_per_unit: Decimal,
                 min_commission: Decimal) -> None:
        self.account_id = account_id
        self.cash = cash
        self.positions: dict[int, Position] = {}
        self._per_unit = commission_per_unit
        self._minimum = min_commission

    def commission(self, quantity: Decimal) -> Decimal:
        return max(self._minimum, self._per_unit * quantity).quantize(_CENT)

    def book(self, contract: TwsContract, signed_qty: Decimal, price: Decimal, commission: Decimal) -> Decimal | None:
        """Book an execution (positive: bought); the realized P&L when it reduced the position, else None."""
        self.cash -= signed_qty * price * contract.factor + commission
        pos = self.positions.setdefault(contract.con_id, Position())
        cost = price * contract.factor
        if pos.quantity == 0 or (pos.quantity > 0) == (signed_qty > 0):  # opening or adding
            size = abs(pos.quantity) + abs(signed_qty)
            pos.avg_cost = (pos.avg_cost * abs(pos.quantity) + cost * abs(signed_qty)) / size
            pos.quantity += signed_qty
            return None
        closing = min(abs(signed_qty), abs(pos.quantity))
        pnl = (cost - pos.avg_cost) * closing * (1 if pos.quantity > 0 else -1) - commission
        pos.realized += pnl
        pos.quantity += signed_qty
        if pos.quantity == 0:
            pos.avg_cost = _ZERO
        elif (pos.quantity > 0) == (signed_qty > 0):  # flipped: the rest opened at this price
            pos.avg_cost = cost
        return pnl

    def mark(self, con_id: int, mid: Decimal | None, contract: TwsContract) -> Decimal:
        """The price a position is valued at: the quote's mid, or its own average price without a quote."""
        return mid if mid is not None else self.positions[con_id].avg_cost / contract.factor

    def values(self, mark: Callable[[int], Decimal], contracts: dict[int, TwsContract]
               ) -> list[tuple[str, Decimal | str, str]]:
        """(tag, value, currency) as updateAccountValue and accountSummary carry them."""
        held = [(contracts[k].factor, mark(k), p) for k, p in self.positions.items()]
        gross = sum((abs(p.quantity) * m * f for f, m, p in held), _ZERO)
        value = sum((p.quantity * m * f for f, m, p in held), _ZERO)
        unrealized = sum((p.quantity * (m * f - p.avg_cost) for f, m, p in held), _ZERO)
        realized = sum((p.realized for p in self.positions.values()), _ZERO)
        net = self.cash + value
        return [("AccountCode", self.account_id, ""), ("AccountType", "INDIVIDUAL", ""),
                ("NetLiquidation", net, "USD"), ("TotalCashValue", self.cash, "USD"),
                ("SettledCash", self.cash, "USD"), ("GrossPositionValue", gross, "USD"),
                ("BuyingPower", net * 4, "USD"), ("AvailableFunds", net, "USD"), ("ExcessLiquidity", net, "USD"),
                ("EquityWithLoanValue", net, "USD"), ("UnrealizedPnL", unrealized, "USD"),
                ("RealizedPnL", realized, "USD"), ("CashBalance", self.cash, "USD"), ("Currency", "USD", "USD")]
