"""The order path's quote: exact Decimals from a real row, and what it refuses to be."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from tradebook.data import load_bundled
from tradebook.errors import DataError
from tradebook.model.quotes import QuoteSnapshot

S = 1_000_000_000
# spy_20131007_quote: the first second bar, 2013-10-07 04:00 ET, pre-open: 167.27 x 168.00 (43.6 bps)
SPY_WIDE = QuoteSnapshot.from_quote("SPY.ARCX", 1381132800 * S, "167.27", "168.00", 100, 600)
# spy_20131007_quote row 5000: 167.66 x 167.67, one cent
SPY_TIGHT = QuoteSnapshot.from_quote("SPY.ARCX", 1381155300 * S, "167.66", "167.67", 8700, 3300)


def test_quote_snapshot_from_a_real_row_has_exact_mid_and_spread():
    row = load_bundled("binance_spot_btcusdt_20240808T2354-20240809T0005_l1_quotes.csv.gz").frame.iloc[48]
    q = QuoteSnapshot.from_quote("BTCUSDT.BINANCE", row.ts_ns, row.bid_px, row.ask_px, row.bid_sz, row.ask_sz)
    assert (q.bid, q.ask, q.bid_sz) == (D("61836.01"), D("61837.32"), D("0.00009"))
    assert q.mid == D("61836.665")
    assert q.spread_bps == (D("1.31") / D("61836.665") * 10_000)
    assert SPY_WIDE.spread_bps > 43 and SPY_TIGHT.spread_bps < 1


@pytest.mark.parametrize("bid, ask, words", [
    ("100.02", "100.01", "crossed"),
    ("100.01", "100.01", "locked"),
    (float("nan"), "100.01", "finite"),
    ("100.00", float("inf"), "finite"),
    ("-1", "100.01", "positive"),
])
def test_quote_snapshot_refuses_crossed_locked_and_non_finite(bid, ask, words):
    with pytest.raises(DataError, match=words):
        QuoteSnapshot.from_quote("SPY.ARCX", 1381155300 * S, bid, ask, 100, 100)


def test_quote_snapshot_refuses_floats_and_negative_sizes():
    with pytest.raises(DataError, match="bid must be a Decimal"):
        QuoteSnapshot("SPY.ARCX", 1381155300 * S, 167.66, D("167.67"))  # type: ignore[arg-type]
    with pytest.raises(DataError, match="sizes must not be negative"):
        QuoteSnapshot.from_quote("SPY.ARCX", 1381155300 * S, "167.66", "167.67", -5, 100)


def test_equal_float_rows_share_one_snapshot_and_the_router_prices_the_same_type():
    from tradebook.execution import router

    first = QuoteSnapshot.from_quote("SPY.ARCX", 1381155300 * S, 167.66, 167.67, 8700.0, 3300.0)
    again = QuoteSnapshot.from_quote("SPY.ARCX", 1381155300 * S, 167.66, 167.67, 8700.0, 3300.0)
    assert again is first and first.mid == D("167.665")
    assert router.QuoteSnapshot is QuoteSnapshot  # callers that import it from the router keep working
