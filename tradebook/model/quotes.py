"""The quote the order path prices against: best bid and offer at a time, as exact Decimals.

:class:`QuoteSnapshot` is the order path's quote, checked when built (never crossed, locked
or non-positive): the session builds it from its feed's last quote, the router prices orders
and algo slices against it, retries re-price against it; a size of 0 means "not known".
:class:`ReferenceQuote` is the same quote as pre-trade risk reads it, not checked when built
(judging a crossed, locked or stale quote is the risk check's job; sizes None when unknown);
:meth:`ReferenceQuote.from_snapshot` takes a snapshot's Decimals and mid without converting.
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


@dataclass(frozen=True, init=False)
class ReferenceQuote:
    """The last quote of the intent's instrument; sizes None when unknown (quotes made from bars)."""

    bid: Decimal
    ask: Decimal
    bid_sz: Decimal | None
    ask_sz: Decimal | None
    ts_ns: int

    def __init__(self, bid: Decimal, ask: Decimal, bid_sz: Decimal | None, ask_sz: Decimal | None,
                 ts_ns: int) -> None:
        # one per order: straight into __dict__ (a frozen dataclass's own __init__ sets field by field)
        state = self.__dict__
        state["bid"] = bid
        state["ask"] = ask
        state["bid_sz"] = bid_sz
        state["ask_sz"] = ask_sz
        state["ts_ns"] = ts_ns

    @classmethod
    def from_snapshot(cls, snapshot: QuoteSnapshot) -> ReferenceQuote:
        """The router's snapshot of the same quote, for the risk checks without converting it again.

        The same Decimals and mid; a size of 0 (``QuoteSnapshot``'s "not known") becomes None,
        as a session's reference quote has it (sizes must be positive to be known).
        """
        global _last_from_snapshot
        last_snapshot, last = _last_from_snapshot
        if snapshot is last_snapshot and cls is ReferenceQuote:
            return last  # several orders priced against one snapshot share its (immutable) reference
        bid_sz, ask_sz = snapshot.bid_sz, snapshot.ask_sz
        reference = cls(snapshot.bid, snapshot.ask, bid_sz if bid_sz > 0 else None, ask_sz if ask_sz > 0 else None,
                        snapshot.ts_ns)
        reference.__dict__["mid"] = snapshot.mid  # (bid + ask) / 2 of the same two Decimals
        if cls is ReferenceQuote:
            _last_from_snapshot = (snapshot, reference)  # one tuple: a reader sees the pair whole
        return reference

    @cached_value
    def mid(self) -> Decimal:
        """(bid + ask) / 2, computed on first read."""
        return (self.bid + self.ask) / 2

    # what the quote and spread checks compute from the quote alone, kept on first read (a quote
    # is frozen, and several orders are usually checked against one)
    @cached_value
    def prices_valid(self) -> bool:
        """Bid and ask finite and positive, bid below ask."""
        bid, ask = self.bid, self.ask
        return bid.is_finite() and ask.is_finite() and 0 < bid < ask

    @cached_value
    def spread_bps(self) -> Decimal:
        """(ask - bid) / mid in basis points."""
        return (self.ask - self.bid) / self.mid * BPS


_last_from_snapshot: tuple[object, ReferenceQuote | None] = (None, None)  # see ReferenceQuote.from_snapshot
