"""A running paper session with something to show: a filled position and a resting limit order, flushed to the store.

Built on a copy of the calibrated 2024 BTCUSDT store (tests/conftest.py), driven one 1 s
batch at a time with ``Session.step`` so what it holds is known exactly.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from tradebook.data import load_bundled
from tradebook.data.feeds import FeedBatch, ReplayFeed
from tradebook.model.instruments import Side
from tradebook.model.orders import OrderIntent, OrderType, Signal, TimeInForce
from tradebook.session import Session
from tradebook.tca import update_tca

BTC = "BTCUSDT.BINANCE"
FILES = "binance_spot_btcusdt_20240808T2354-20240809T0005_"
BOUGHT = Decimal("0.01")
RESTING_ID = "nb:resting"


@pytest.fixture(scope="session")
def btc_batches() -> list[FeedBatch]:
    """The recorded BTCUSDT quotes and trades in 1 s batches."""
    quotes, trades = load_bundled(FILES + "l1_quotes.csv.gz"), load_bundled(FILES + "trades.csv.gz")
    return list(ReplayFeed({BTC: quotes.frame}, {BTC: trades.frame}).batches())


def last_bid(batches: list[FeedBatch]) -> Decimal:
    """The bid in force at the end of the batches."""
    quote = next(q for b in reversed(batches) if (q := b.last_quote(BTC)) is not None)
    return Decimal(repr(float(quote[1])))


def trading_session(store, state_dir: Path, batches: list[FeedBatch]) -> Session:
    """A started session holding 0.01 BTC bought at market and one resting limit buy 1% under the bid, flushed to the
    store with their TCA rows."""
    session = Session(store, calibrations=[BTC], state_dir=state_dir).start()
    for batch in batches[:3]:
        session.step(batch)
    session.submit(Signal("nb", "long", BTC, Side.BUY, None, strength=0.95, quantity=BOUGHT))
    for batch in batches[3:5]:
        session.step(batch)
    now = batches[4].end_ns - 1
    limit = (last_bid(batches[:5]) * Decimal("0.99")).quantize(Decimal("0.01"))
    session.submit(OrderIntent(RESTING_ID, "nb", session.account_id, BTC, Side.BUY, Decimal("0.01"), OrderType.LIMIT,
                               TimeInForce.GTC, now, limit_price=limit))
    session.step(batches[5])
    session.oms.flush()
    # the session's own TCA update follows flushes on its bus's thread, at most once a second: run it here so
    # the TCA rows of both orders are there when a test reads
    update_tca(session.store, recorder=session.tca)
    return session


@pytest.fixture
def running_session(calibrated_btc_store, tmp_path, btc_batches):
    """:func:`trading_session` on this test's copy of the calibrated store; stopped at the end."""
    session = trading_session(calibrated_btc_store, tmp_path / "state", btc_batches)
    yield session
    session.stop()
