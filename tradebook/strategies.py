"""Example strategies for sessions: small, deterministic, and only as clever as a demo needs.

A strategy is any callable ``strategy(batch, view) -> iterable of Signal`` (see
:class:`tradebook.session.Session`). It reads the session's view (time, last quotes,
positions, equity) and says what it wants; sizing, routing, risk and the order manager
decide what is sent. Signal ids must be unique per strategy and the same on a re-run
(the client order id derives from them): here they come from session time.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal

import numpy as np

from tradebook.data.feeds import FeedBatch
from tradebook.errors import ConfigError
from tradebook.model.instruments import Side
from tradebook.model.orders import Signal


@dataclass
class MovingAverageCross:
    """Buy ``quantity`` when the fast average of the mid crosses above the slow one; sell what is held when
    it crosses below.

    The averages are over the mids at the end of the last ``fast`` and ``slow`` batches
    (seconds, with 1 s batches). Signals go with ``strength`` (above 0.9: market orders),
    only at a cross: a refused signal (the kill switch, risk) is not repeated every second.
    """

    strategy_id: str
    instrument_id: str
    quantity: Decimal
    fast: int = 10
    slow: int = 60
    strength: float = 0.95
    _mids: deque = field(init=False, repr=False)
    _long: bool | None = field(init=False, default=None, repr=False)  # the side of the last cross seen

    def __post_init__(self) -> None:
        if not isinstance(self.quantity, Decimal) or not self.quantity.is_finite() or self.quantity <= 0:
            raise ConfigError(f"quantity is {self.quantity!r}; expected a positive Decimal")
        if not 0 < self.fast < self.slow:
            raise ConfigError(f"fast = {self.fast}, slow = {self.slow}: expected 0 < fast < slow")
        self._mids = deque(maxlen=self.slow)

    def __call__(self, batch: FeedBatch, view) -> list[Signal]:
        quote = view.quotes.get(self.instrument_id)
        if quote is None or not 0 < quote[1] < quote[2]:
            return []
        self._mids.append((quote[1] + quote[2]) / 2)
        if len(self._mids) < self.slow:
            return []
        mids = np.asarray(self._mids)
        want_long = bool(mids[-self.fast:].mean() > mids.mean())
        crossed, self._long = self._long is not None and want_long != self._long, want_long
        held = view.positions.get(self.instrument_id, Decimal(0))
        if not crossed or view.working_orders:
            return []
        if want_long and held <= 0:
            side, quantity = Side.BUY, self.quantity
        elif not want_long and held > 0:
            side, quantity = Side.SELL, held
        else:
            return []
        return [Signal(self.strategy_id, f"{side}-{view.now_ns}", self.instrument_id, side, view.now_ns,
                       strength=self.strength, quantity=quantity)]


__all__ = ["MovingAverageCross"]
