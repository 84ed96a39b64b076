"""The quote the order path prices against: best bid and offer at a time, checked when built.

:class:`QuoteSnapshot` is the one quote type of the order path: the session builds it from its
feed's last quote, the router prices orders and algo slices against it, retries re-price
against it, and pre-trade risk reads the same Decimals (``ReferenceQuote.from_snapshot``).
Prices and sizes are Decimal (exact tick arithmetic); a size of 0 means "not known".
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from math import isfinite

from tradebook.errors import ConformanceError, DataError
from tradebook.model.instruments import cached_value, to_decimal
from tradebook.model.time import MAX_PLAUSIBLE_NS, MIN_PLAUSIBLE_NS, check_ns_range

BPS = Decimal(10_000)
_NO_SIZE = Decimal(0)


@dataclass(frozen=True, init=False)
class QuoteSnapshot:
    """Best bid and offer at ``ts_ns``. Refuses crossed, locked, non-positive or non-finite quotes."""

    instrument_id: str
    ts_ns: int
    bid: Decimal
    ask: Decimal
    bid_sz: Decimal = _NO_SIZE
    ask_sz: Decimal = _NO_SIZE

    def __init__(self, instrument_id: str, ts_ns: int, bid: Decimal, ask: Decimal, bid_sz: Decimal = _NO_SIZE,
                 ask_sz: Decimal = _NO_SIZE) -> None:
        # built once per order: straight into __dict__ (a frozen dataclass's own __init__ pays one
        # object.__setattr__ per field), then the same checks; the mid is kept once they pass
        state = self.__dict__
        state["instrument_id"] = instrument_id
        state["ts_ns"] = ts_ns
        state["bid"] = bid
        state["ask"] = ask
        state["bid_sz"] = bid_sz
        state["ask_sz"] = ask_sz
        self._check()
        state["mid"] = (bid + ask) / 2

    def _check(self) -> None:
        # the checks test the usual case first and format messages only to raise
        ts = self.ts_ns
        if ts.__class__ is not int and (isinstance(ts, bool) or not isinstance(ts, int)):
            raise DataError(f"{self._where}: ts_ns must be int UTC nanoseconds, got {type(ts).__name__}")
        if not MIN_PLAUSIBLE_NS <= ts < MAX_PLAUSIBLE_NS:
            check_ns_range(ts, f"{self._where}: ts_ns")  # raises, naming the plausible range
        bid, ask, bid_sz, ask_sz = self.bid, self.ask, self.bid_sz, self.ask_sz
        if not (bid.__class__ is Decimal and ask.__class__ is Decimal and bid_sz.__class__ is Decimal
                and ask_sz.__class__ is Decimal and bid.is_finite() and ask.is_finite() and bid_sz.is_finite()
                and ask_sz.is_finite()):
            self._check_numbers()
        if bid <= 0 or ask <= 0:
            raise DataError(f"{self._where}: bid and ask must be positive, got bid {bid} ask {ask}")
        if bid_sz < 0 or ask_sz < 0:
            raise DataError(f"{self._where}: sizes must not be negative, got {bid_sz} x {ask_sz}")
        if bid >= ask:
            kind = "locked" if bid == ask else "crossed"
            raise DataError(f"{self._where}: {kind} quote (bid {bid} >= ask {ask}); "
                            "a reference quote needs bid < ask")

    @property
    def _where(self) -> str:
        return f"quote for {self.instrument_id} at {self.ts_ns}"

    def _check_numbers(self) -> None:
        """Each price and size is a finite Decimal (a subclass passes); DataError naming the first that is not."""
        for name in ("bid", "ask", "bid_sz", "ask_sz"):
            value = getattr(self, name)
            if not isinstance(value, Decimal):
                raise DataError(f"{self._where}: {name} must be a Decimal (use QuoteSnapshot.from_quote to convert), "
                                f"got {type(value).__name__}")
            if not value.is_finite():
                raise DataError(f"{self._where}: {name} must be finite, got {value}")

    @classmethod
    def from_quote(cls, instrument_id: str, ts_ns: int, bid: Decimal | float | str, ask: Decimal | float | str,
                   bid_sz: Decimal | float | str = 0, ask_sz: Decimal | float | str = 0) -> QuoteSnapshot:
        """Build a snapshot from numbers of any kind (e.g. a row of a quotes frame: floats go through repr)."""
        global _last_from_floats
        if (bid.__class__ is float and ask.__class__ is float and bid_sz.__class__ is float
                and ask_sz.__class__ is float and ts_ns.__class__ is int and isfinite(bid) and isfinite(ask)
                and isfinite(bid_sz) and isfinite(ask_sz)):
            # the feed's usual row: finite plain floats, what to_decimal turns into Decimal(repr(x)).
            # Several signals are often priced against one quote: the last snapshot built this way
            # is reused for an equal row (a snapshot is immutable). Only non-zero sizes make a key:
            # 0.0 == -0.0, but their Decimals differ.
            key = (instrument_id, ts_ns, bid, ask, bid_sz, ask_sz)
            last_key, last = _last_from_floats
            if key == last_key and cls is QuoteSnapshot:
                return last
            snapshot = cls(instrument_id, ts_ns, Decimal(repr(bid)), Decimal(repr(ask)), Decimal(repr(bid_sz)),
                           Decimal(repr(ask_sz)))
            if bid_sz and ask_sz and cls is QuoteSnapshot:
                _last_from_floats = (key, snapshot)  # one tuple: a reader sees the pair whole
            return snapshot
        try:
            values = (_quote_number(bid, "bid"), _quote_number(ask, "ask"), _quote_number(bid_sz, "bid_sz"),
                      _quote_number(ask_sz, "ask_sz"))
        except ConformanceError as exc:
            raise DataError(f"quote for {instrument_id} at {ts_ns}: {exc}") from exc
        if ts_ns.__class__ is int:
            ts = ts_ns
        else:
            if isinstance(ts_ns, bool):
                raise DataError(f"quote for {instrument_id}: ts_ns must be int nanoseconds, got {ts_ns!r}")
            try:
                ts = int(ts_ns)  # numpy int64 from a frame row
            except (TypeError, ValueError) as exc:
                raise DataError(f"quote for {instrument_id}: ts_ns must be int nanoseconds, got {ts_ns!r}") from exc
            if ts != ts_ns:
                raise DataError(f"quote for {instrument_id}: ts_ns must be whole nanoseconds, got {ts_ns!r}")
        return cls(instrument_id, ts, *values)

    @cached_value
    def mid(self) -> Decimal:
        """(bid + ask) / 2; computed by the constructor once the quote has passed its checks."""
        return (self.bid + self.ask) / 2

    @property
    def spread_bps(self) -> Decimal:
        return (self.ask - self.bid) / self.mid * BPS


# (row, snapshot) of the last QuoteSnapshot.from_quote of plain floats with non-zero sizes
_last_from_floats: tuple[tuple | None, QuoteSnapshot | None] = (None, None)


def _quote_number(value: Decimal | float | str, name: str) -> Decimal:
    if value.__class__ is float:  # a plain float (the usual case): to_decimal reads its repr
        return to_decimal(value, name)
    # float(v): numpy's float64 is a float whose repr ('np.float64(1.5)') Decimal cannot read
    return to_decimal(float(value) if isinstance(value, float) else value, name)
