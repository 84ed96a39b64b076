"""Positions, cash, P&L and exposure: what the fills add up to.

Positions are kept per account, per strategy, per instrument
(``account_id -> strategy_id -> instrument_id -> Position``) and netted per instrument
on demand (:meth:`Portfolio.net_position`). Everything is :class:`~decimal.Decimal`:
a position is a sum of fills, and a float sum drifts away from the venue's.

Accounting conventions (the ones brokers use):

- **Average price** moves only when a position grows; reducing it realises
  ``(exit - average) x quantity x multiplier``; a fill that crosses zero closes the old
  position at the fill price and opens the remainder at the same price (a flip).
- **Fees** are charged to cash at each fill and to the position they belong to;
  ``Position.realised_pnl`` is *net* of every fee paid on the position's fills
  (``gross_realised_pnl`` is the price difference alone).
- **Cash**: for cash instruments (equities, spot crypto and FX) a buy pays its notional
  and a sell receives it; for futures no notional changes hands, only realised P&L
  (variation margin) and fees touch cash.
- **Equity** = cash + market value of cash instruments + unrealised P&L of futures,
  at the last mark (a fill price counts as a mark when it is the newest price known).
- No currency conversion yet: every instrument's P&L is counted in the portfolio's
  currency (USDT-quoted crypto is treated as USD).

Marks are market data, not order-path records: they are not journaled, so after a
restart unrealised P&L is at the last fill price until the feed marks again.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from decimal import Decimal

import pandas as pd

from tradebook.errors import OrderError
from tradebook.model.instruments import AssetClass, Instrument, Side
from tradebook.model.orders import Fill

ZERO = Decimal(0)
_ONE, _MINUS_ONE = Decimal(1), Decimal(-1)  # a long position's direction, a short one's
DEFAULT_CHECKPOINT_NS = 60 * 1_000_000_000
# enum members read on the order path, as module constants: on Python 3.11 ``Side.BUY`` is a
# descriptor call on the enum class (~60 ns), paid several times per order
_BUY = Side.BUY
_SELL = Side.SELL
_SIDES = (_BUY, _SELL)
_FUTURE = AssetClass.FUTURE


@dataclass(frozen=True, slots=True)
class Position:
    """One strategy's position in one instrument of one account (signed: negative is short)."""

    account_id: str
    strategy_id: str
    instrument_id: str
    asset_class: AssetClass
    multiplier: Decimal
    quantity: Decimal = ZERO
    avg_price: Decimal | None = None
    realised_pnl: Decimal = ZERO  # net of fees
    fees: Decimal = ZERO
    ts_last_ns: int = 0

    @property
    def gross_realised_pnl(self) -> Decimal:
        return self.realised_pnl + self.fees

    @property
    def is_flat(self) -> bool:
        return self.quantity == 0

    def unrealised_pnl(self, mark: Decimal | None) -> Decimal:
        if self.quantity == 0 or mark is None or self.avg_price is None:
            return ZERO
        return (mark - self.avg_price) * self.quantity * self.multiplier

    def notional(self, mark: Decimal | None) -> Decimal:
        """Gross exposure: |quantity| x price x multiplier (the average price when unmarked)."""
        price = mark if mark is not None else self.avg_price
        if self.quantity == 0 or price is None:
            return ZERO
        return abs(self.quantity * price) * self.multiplier


# _book makes a new Position per fill. A frozen slots dataclass's own __init__ sets each field with
# an object.__setattr__ call; _position stores through the slots' descriptors directly (half the time)
_POSITION_SLOTS = tuple(getattr(Position, name).__set__ for name in Position.__slots__)
if Position.__slots__ != tuple(f.name for f in fields(Position)):
    raise AssertionError("Position's slots must be its fields, in order")


def _position(account_id: str, strategy_id: str, instrument_id: str, asset_class: AssetClass, multiplier: Decimal,
              quantity: Decimal, avg_price: Decimal | None, realised_pnl: Decimal, fees: Decimal,
              ts_last_ns: int) -> Position:
    """``Position(...)`` with every field given, for the booking path."""
    (set_account, set_strategy, set_instrument, set_asset_class, set_multiplier, set_quantity, set_avg_price,
     set_realised, set_fees, set_ts) = _POSITION_SLOTS
    position = object.__new__(Position)
    set_account(position, account_id)
    set_strategy(position, strategy_id)
    set_instrument(position, instrument_id)
    set_asset_class(position, asset_class)
    set_multiplier(position, multiplier)
    set_quantity(position, quantity)
    set_avg_price(position, avg_price)
    set_realised(position, realised_pnl)
    set_fees(position, fees)
    set_ts(position, ts_last_ns)
    return position


class Portfolio:
    """Cash, positions and P&L of one portfolio (one currency) across accounts and strategies.

    ``apply_fill`` is idempotent per ``fill_id`` (venues repeat fills after a reconnect).
    ``checkpoint_ns`` is the grid on which equity is remembered for :meth:`daily_pnl`
    (default one minute): P&L since an instant on that grid (a session or day start) is
    exact; an instant off the grid is taken at the grid point before it.
    Thread-safe: the order manager applies fills on the event loop while a flush thread
    and a dashboard read.
    """

    def __init__(self, starting_cash: Decimal, currency: str = "USD", *,
                 checkpoint_ns: int = DEFAULT_CHECKPOINT_NS) -> None:
        if not isinstance(starting_cash, Decimal) or not starting_cash.is_finite():
            raise OrderError(f"starting_cash must be a finite Decimal, got {starting_cash!r}")
        if checkpoint_ns <= 0:
            raise OrderError(f"checkpoint_ns must be positive, got {checkpoint_ns}")
        self.starting_cash = starting_cash
        self.currency = currency
        self.checkpoint_ns = int(checkpoint_ns)
        self._cash = starting_cash
        self._positions: dict[str, dict[str, dict[str, Position]]] = {}
        self._marks: dict[str, tuple[Decimal, int]] = {}  # instrument -> (price, ts_ns)
        self._fill_ids: set[str] = set()
        self._lock = threading.RLock()
        # equity just before the first change in each grid cell that saw a change (for daily_pnl)
        self._checkpoint_cells: list[int] = []
        self._checkpoint_equity: list[Decimal] = []
        self._last_ts_ns = 0
        # reads the order path makes several times between two changes, kept until the next
        # fill or mark: equity (None: not computed since) and net positions per account filter
        self._equity_now: Decimal | None = None
        self._net_now: dict[str | None, dict[tuple[str, str], Decimal]] = {}
        self._net_by_instrument_now: dict[str, dict[str, Decimal]] = {}

    # -- changes ------------------------------------------------------------------------
    def apply_fill(self, fill: Fill, instrument: Instrument, account_id: str, strategy_id: str) -> bool:
        """Book a fill; returns False (and changes nothing) when ``fill_id`` was booked before."""
        _check_fill(fill, instrument)
        instrument_id, multiplier = instrument.instrument_id, instrument.multiplier
        fill_id, ts_ns, price = fill.fill_id, fill.ts_event_ns, fill.price
        with self._lock:
            if fill_id in self._fill_ids:
                return False
            self._checkpoint(ts_ns)
            strategies = self._positions.get(account_id)
            if strategies is None:
                strategies = self._positions[account_id] = {}
            book = strategies.get(strategy_id)
            if book is None:
                book = strategies[strategy_id] = {}
            old = book.get(instrument_id)
            if old is None:
                old = Position(account_id, strategy_id, instrument_id, instrument.asset_class, multiplier)
            quantity = fill.quantity
            signed = quantity if fill.side == _BUY else -quantity
            new, realised_gross = _book(old, fill, signed, multiplier)
            book[instrument_id] = new
            if instrument.asset_class is _FUTURE:
                self._cash += realised_gross - fill.fee
            else:
                self._cash -= signed * price * multiplier + fill.fee
            self._fill_ids.add(fill_id)
            mark = self._marks.get(instrument_id)
            if mark is None or ts_ns >= mark[1]:
                self._marks[instrument_id] = (price, ts_ns)
            self._equity_now = None
            if self._net_now:
                self._net_now.clear()
            if self._net_by_instrument_now:
                self._net_by_instrument_now.clear()
            return True

    def mark(self, instrument_id: str, price: Decimal, ts_ns: int) -> None:
        """Mark ``instrument_id`` to ``price`` (a mid, last or settlement); an older mark is ignored."""
        if not (price.__class__ is Decimal or isinstance(price, Decimal)) or not price.is_finite():
            raise OrderError(f"mark for {instrument_id} must be a finite Decimal, got {price!r}")
        ts = ts_ns if ts_ns.__class__ is int else int(ts_ns)
        with self._lock:
            last = self._marks.get(instrument_id)
            if last is not None and ts_ns < last[1]:
                return
            self._checkpoint(ts)
            self._marks[instrument_id] = (price, ts)
            self._equity_now = None

    def _checkpoint(self, ts_ns: int) -> None:
        """Remember the equity before the first change of each new grid cell."""
        ts_ns = int(ts_ns)
        if ts_ns < self._last_ts_ns:
            ts_ns = self._last_ts_ns  # a venue-timed fill may lag the last mark
        cell = ts_ns // self.checkpoint_ns
        cells = self._checkpoint_cells
        if not cells or cells[-1] != cell:
            cells.append(cell)
            self._checkpoint_equity.append(self._equity())
        self._last_ts_ns = ts_ns

    # -- reads --------------------------------------------------------------------------
    @property
    def cash(self) -> Decimal:
        return self._cash

    def last_price(self, instrument_id: str) -> Decimal | None:
        mark = self._marks.get(instrument_id)
        return mark[0] if mark else None

    def last_prices(self, instrument_ids: Iterable[str]) -> dict[str, Decimal]:
        """The last price of each of ``instrument_ids`` that has one, in their order (a risk context's marks)."""
        marks = self._marks
        prices = {}
        for iid in instrument_ids:  # a loop, not a comprehension: no extra frame (once per order)
            mark = marks.get(iid)
            if mark:
                prices[iid] = mark[0]
        return prices

    def position(self, account_id: str, strategy_id: str, instrument_id: str) -> Position | None:
        return self._positions.get(account_id, {}).get(strategy_id, {}).get(instrument_id)

    def positions(self) -> list[Position]:
        """Every position ever opened (flat ones included: they carry realised P&L)."""
        with self._lock:
            return list(self._iter())

    def _iter(self) -> Iterator[Position]:
        for strategies in self._positions.values():
            for instruments in strategies.values():
                yield from instruments.values()

    def net_position(self, account_id: str, instrument_id: str) -> Decimal:
        """The account's position in ``instrument_id`` summed over its strategies."""
        with self._lock:
            return sum((book[instrument_id].quantity for book in self._positions.get(account_id, {}).values()
                        if instrument_id in book), ZERO)

    def net_positions(self, account_id: str | None = None) -> dict[tuple[str, str], Decimal]:
        """Non-zero net positions keyed (account_id, instrument_id)."""
        with self._lock:
            net = self._net_now.get(account_id)
            if net is None:  # first read since the last fill
                totals: dict[tuple[str, str], Decimal] = {}
                for p in self._iter():
                    if account_id is None or p.account_id == account_id:
                        key = (p.account_id, p.instrument_id)
                        totals[key] = totals.get(key, ZERO) + p.quantity
                net = self._net_now[account_id] = {k: v for k, v in totals.items() if v != 0}
            return dict(net)  # the caller's own copy

    def net_positions_by_instrument(self, account_id: str) -> dict[str, Decimal]:
        """The account's non-zero net positions keyed by instrument id (what the risk checks take)."""
        net = self._net_by_instrument_now.get(account_id)
        if net is not None:
            # kept since the last fill, read without the lock: a kept dict is never changed (a fill
            # drops it once it is booked), so this is the answer from just before a concurrent fill
            return dict(net)  # the caller's own copy
        with self._lock:
            net = self._net_by_instrument_now.get(account_id)
            if net is None:  # first read since the last fill
                net = self._net_by_instrument_now[account_id] = {
                    instrument_id: quantity for (_, instrument_id), quantity in self.net_positions(account_id).items()}
            return dict(net)  # the caller's own copy

    @property
    def realised_pnl(self) -> Decimal:
        """Realised P&L of every position, net of all fees."""
        with self._lock:
            return sum((p.realised_pnl for p in self._iter()), ZERO)

    @property
    def fees(self) -> Decimal:
        with self._lock:
            return sum((p.fees for p in self._iter()), ZERO)

    @property
    def unrealised_pnl(self) -> Decimal:
        with self._lock:
            return sum((p.unrealised_pnl(self.last_price(p.instrument_id)) for p in self._iter()), ZERO)

    @property
    def equity(self) -> Decimal:
        value = self._equity_now
        if value is not None:
            # kept since the last fill or mark, read without the lock: one attribute read sees the
            # value from before or after a concurrent change, never a half-booked one (a change
            # drops the kept value only once it is complete)
            return value
        with self._lock:
            return self._equity()

    def _equity(self) -> Decimal:
        value = self._equity_now
        if value is None:  # first read since the last fill or mark
            value = self._equity_now = self._value()
        return value

    def _value(self) -> Decimal:
        """Cash plus what the positions are worth at the last marks."""
        value = self._cash
        for p in self._iter():
            if p.quantity == 0:
                continue
            mark = self.last_price(p.instrument_id)
            if p.asset_class is _FUTURE:
                value += p.unrealised_pnl(mark)
            else:
                value += p.quantity * (mark if mark is not None else p.avg_price) * p.multiplier
        return value

    def equity_at(self, ts_ns: int) -> Decimal:
        """Equity as of ``ts_ns`` (exact on the checkpoint grid; see the class docstring)."""
        cell = int(ts_ns) // self.checkpoint_ns
        with self._lock:
            # the first cell at or after ts that saw a change holds the equity before it;
            # nothing changed between ts and that cell
            index = bisect.bisect_left(self._checkpoint_cells, cell)
            if index < len(self._checkpoint_cells):
                return self._checkpoint_equity[index]
            return self._equity()

    def daily_pnl(self, since_ns: int) -> Decimal:
        """Equity change since ``since_ns`` (realised, unrealised and fees; for the daily loss limit)."""
        return self.equity - self.equity_at(since_ns)

    def exposure_by_asset_class(self) -> dict[AssetClass, Decimal]:
        """Gross notional (|quantity| x price x multiplier of net positions) per asset class."""
        totals: dict[AssetClass, Decimal] = {}
        with self._lock:
            classes = {p.instrument_id: (p.asset_class, p.multiplier) for p in self._iter()}
            for (_, instrument_id), quantity in self.net_positions().items():
                asset_class, multiplier = classes[instrument_id]
                price = self.last_price(instrument_id)
                if price is None:
                    continue
                totals[asset_class] = totals.get(asset_class, ZERO) + abs(quantity * price) * multiplier
        return totals

    @property
    def gross_exposure(self) -> Decimal:
        return sum(self.exposure_by_asset_class().values(), ZERO)

    def positions_frame(self) -> pd.DataFrame:
        """One row per position: quantities and money as Decimal (exact), times as int ns."""
        columns = ["account_id", "strategy_id", "instrument_id", "asset_class", "quantity", "avg_price",
                   "mark_price", "market_value", "unrealised_pnl", "realised_pnl", "fees", "ts_last_ns"]
        rows = []
        with self._lock:
            for p in self._iter():
                mark = self.last_price(p.instrument_id)
                rows.append([p.account_id, p.strategy_id, p.instrument_id, str(p.asset_class), p.quantity,
                             p.avg_price, mark, p.quantity * mark * p.multiplier if mark is not None else None,
                             p.unrealised_pnl(mark), p.realised_pnl, p.fees, p.ts_last_ns])
        return pd.DataFrame(rows, columns=columns)

    def __repr__(self) -> str:
        return (f"Portfolio(cash={self._cash} {self.currency}, equity={self.equity}, "
                f"positions={len(self.net_positions())})")


def _check_fill(fill: Fill, instrument: Instrument) -> None:
    if fill.instrument_id != instrument.instrument_id:
        raise OrderError(f"fill {fill.fill_id} is for {fill.instrument_id}, booked against {instrument.instrument_id}")
    quantity, price, fee = fill.quantity, fill.price, fill.fee
    if not (quantity.__class__ is Decimal and price.__class__ is Decimal and fee.__class__ is Decimal
            and quantity.is_finite() and price.is_finite() and fee.is_finite()):
        # the slow walk only for what is not a plain finite Decimal: a subclass passes, the rest raise
        for name, value in (("quantity", quantity), ("price", price), ("fee", fee)):
            if not isinstance(value, Decimal) or not value.is_finite():
                raise OrderError(f"fill {fill.fill_id}: {name} must be a finite Decimal, got {value!r}")
    if fill.quantity <= 0:
        raise OrderError(f"fill {fill.fill_id}: quantity must be positive, got {fill.quantity}")
    if fill.side not in _SIDES:
        raise OrderError(f"fill {fill.fill_id}: side must be buy or sell, got {fill.side!r}")


def _book(old: Position, fill: Fill, signed: Decimal, multiplier: Decimal) -> tuple[Position, Decimal]:
    """The position after ``fill`` (``signed``: its quantity, negative for a sell) and the gross P&L it realised."""
    # comparisons with ZERO, not 0: a Decimal compares with a Decimal without converting an int (once per fill)
    quantity, avg, price = old.quantity, old.avg_price, fill.price
    realised = ZERO
    if quantity == ZERO or (quantity > ZERO) == (signed > ZERO):
        # opening or adding: the average moves
        new_qty = quantity + signed
        avg = price if quantity == ZERO else (avg * quantity + price * signed) / new_qty
    else:
        size, held = abs(signed), abs(quantity)
        closed = held if held < size else size  # min(size, held)
        realised = (price - avg) * closed * (_ONE if quantity > ZERO else _MINUS_ONE) * multiplier
        new_qty = quantity + signed
        if new_qty == ZERO:
            avg = None
        elif (new_qty > ZERO) != (quantity > ZERO):
            avg = price  # flipped: the remainder opened at this fill's price
    fee, last_ts, ts = fill.fee, old.ts_last_ns, fill.ts_event_ns
    # a new Position field by field (dataclasses.replace, without its walk over the fields)
    new = _position(old.account_id, old.strategy_id, old.instrument_id, old.asset_class, old.multiplier, new_qty, avg,
                    old.realised_pnl + realised - fee, old.fees + fee, last_ts if last_ts >= ts else ts)
    return new, realised
