"""Portfolio accounting against hand calculations: average price, realised P&L, flips, futures, marks."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from tradebook.errors import OrderError
from tradebook.model.instruments import BUNDLED_INSTRUMENTS, AssetClass, Side
from tradebook.model.orders import Fill
from tradebook.portfolio import Portfolio

SPY = BUNDLED_INSTRUMENTS["SPY.ARCX"]
ES = BUNDLED_INSTRUMENTS["ESU4.GLBX"]
BTC = BUNDLED_INSTRUMENTS["BTCUSDT.BINANCE"]
MIN = 60 * 1_000_000_000


def fill(n: int, instrument, side: str, qty: str, price: str, fee: str = "0", ts: int | None = None) -> Fill:
    ts = n * 1_000_000_000 if ts is None else ts
    return Fill(f"f{n}", f"c{n}", instrument.instrument_id, Side(side), D(qty), D(price), D(fee), "taker", ts, ts)


def test_average_price_and_realised_pnl_minus_fees():
    p = Portfolio(D("10000"))
    p.apply_fill(fill(1, SPY, "buy", "2", "100", "0.10"), SPY, "acct", "s1")
    p.apply_fill(fill(2, SPY, "buy", "1", "103", "0.05"), SPY, "acct", "s1")
    pos = p.position("acct", "s1", "SPY.ARCX")
    assert pos.quantity == D(3) and pos.avg_price == D(101)
    p.apply_fill(fill(3, SPY, "sell", "2", "105", "0.10"), SPY, "acct", "s1")
    pos = p.position("acct", "s1", "SPY.ARCX")
    # sold 2 at 105 against an average of 101: 8 gross, minus all fees paid (0.25)
    assert pos.quantity == D(1) and pos.avg_price == D(101)
    assert pos.gross_realised_pnl == D(8) and pos.fees == D("0.25") and pos.realised_pnl == D("7.75")
    assert p.realised_pnl == D("7.75")
    # cash: 10000 - 200 - 103 + 210 - 0.25
    assert p.cash == D("9906.75")
    # last price is the last fill (105): unrealised (105 - 101) x 1
    assert p.unrealised_pnl == D(4)
    assert p.equity == D("9906.75") + D(105)
    assert p.equity == D(10000) + p.realised_pnl + p.unrealised_pnl


def test_mark_to_market_and_older_marks_ignored():
    p = Portfolio(D("1000"))
    p.apply_fill(fill(1, SPY, "buy", "3", "100"), SPY, "acct", "s1")
    p.mark("SPY.ARCX", D("98.5"), 10_000_000_000)
    assert p.unrealised_pnl == D("-4.5")
    p.mark("SPY.ARCX", D("200"), 5_000_000_000)  # older than the last mark: ignored
    assert p.last_price("SPY.ARCX") == D("98.5")
    frame = p.positions_frame()
    row = frame.iloc[0]
    assert row["quantity"] == D(3) and row["mark_price"] == D("98.5") and row["market_value"] == D("295.5")
    assert row["unrealised_pnl"] == D("-4.5")
    assert p.equity == D(700) + D("295.5")
    assert p.exposure_by_asset_class() == {AssetClass.EQUITY: D("295.5")}
    assert p.gross_exposure == D("295.5")


def test_short_and_flip():
    p = Portfolio(D("10000"))
    p.apply_fill(fill(1, SPY, "sell", "2", "50"), SPY, "acct", "s1")
    pos = p.position("acct", "s1", "SPY.ARCX")
    assert pos.quantity == D(-2) and pos.avg_price == D(50)
    p.apply_fill(fill(2, SPY, "sell", "2", "54"), SPY, "acct", "s1")
    assert p.position("acct", "s1", "SPY.ARCX").avg_price == D(52)
    # buy 6 at 49: closes 4 short at avg 52 (+12), opens 2 long at 49
    p.apply_fill(fill(3, SPY, "buy", "6", "49", "1"), SPY, "acct", "s1")
    pos = p.position("acct", "s1", "SPY.ARCX")
    assert pos.quantity == D(2) and pos.avg_price == D(49)
    assert pos.gross_realised_pnl == D(12) and pos.realised_pnl == D(11)
    # cash: +100 +108 -294 -1
    assert p.cash == D(10000) + D(100) + D(108) - D(294) - D(1)
    # flip back down through zero: sell 3 at 47 closes 2 (-4), opens 1 short at 47
    p.apply_fill(fill(4, SPY, "sell", "3", "47"), SPY, "acct", "s1")
    pos = p.position("acct", "s1", "SPY.ARCX")
    assert pos.quantity == D(-1) and pos.avg_price == D(47) and pos.gross_realised_pnl == D(8)
    p.apply_fill(fill(5, SPY, "buy", "1", "45"), SPY, "acct", "s1")
    pos = p.position("acct", "s1", "SPY.ARCX")
    assert pos.quantity == 0 and pos.avg_price is None and pos.gross_realised_pnl == D(10)
    assert p.equity == D(10000) + D(10) - D(1) == p.cash


def test_es_future_uses_multiplier_and_moves_no_notional():
    p = Portfolio(D("50000"))
    p.apply_fill(fill(1, ES, "buy", "2", "5000.25", "2.50"), ES, "acct", "fut")
    assert p.cash == D("49997.50")  # only the fee: a future's notional does not change hands
    p.mark("ESU4.GLBX", D("5010.00"), 10 * 1_000_000_000)
    # (5010 - 5000.25) x 2 x 50
    assert p.unrealised_pnl == D("975.00")
    assert p.equity == D("49997.50") + D("975.00")
    assert p.exposure_by_asset_class() == {AssetClass.FUTURE: D("501000.00")}
    p.apply_fill(fill(2, ES, "sell", "1", "5012.50", "1.25", ts=20 * 1_000_000_000), ES, "acct", "fut")
    pos = p.position("acct", "fut", "ESU4.GLBX")
    # (5012.50 - 5000.25) x 1 x 50 = 612.50 realised, cash gets it as variation margin
    assert pos.gross_realised_pnl == D("612.50") and pos.realised_pnl == D("612.50") - D("3.75")
    assert p.cash == D("50000") - D("3.75") + D("612.50")
    assert p.unrealised_pnl == D("612.50")  # the remaining contract at the last price 5012.50


def test_strategies_net_per_instrument_and_accounts_stay_apart():
    p = Portfolio(D("100000"))
    p.apply_fill(fill(1, SPY, "buy", "5", "100"), SPY, "acct", "trend")
    p.apply_fill(fill(2, SPY, "sell", "2", "100"), SPY, "acct", "meanrev")
    p.apply_fill(fill(3, SPY, "buy", "7", "100"), SPY, "other", "trend")
    assert p.net_position("acct", "SPY.ARCX") == D(3)
    assert p.net_position("other", "SPY.ARCX") == D(7)
    assert p.net_positions("acct") == {("acct", "SPY.ARCX"): D(3)}
    assert len(p.positions_frame()) == 3
    # exposure is on net positions: 3 + 7 at 100
    assert p.gross_exposure == D(1000)


def test_duplicate_fill_id_is_ignored():
    p = Portfolio(D("1000"))
    f = fill(1, BTC, "buy", "0.01", "60000", "0.6")
    assert p.apply_fill(f, BTC, "acct", "s") is True
    assert p.apply_fill(f, BTC, "acct", "s") is False
    assert p.position("acct", "s", "BTCUSDT.BINANCE").quantity == D("0.01")
    assert p.cash == D(1000) - D(600) - D("0.6")


def test_daily_pnl_since_a_grid_instant():
    p = Portfolio(D("10000"))
    day = 1_700_000_000 // 60 * 60 * 1_000_000_000  # on the minute grid
    p.apply_fill(fill(1, SPY, "buy", "10", "100", ts=day - 5 * MIN), SPY, "acct", "s")
    p.mark("SPY.ARCX", D("101"), day - MIN)  # yesterday's close: +10
    p.mark("SPY.ARCX", D("99"), day + 3 * MIN)  # today: -20 so far
    p.apply_fill(fill(2, SPY, "sell", "5", "98", "1", ts=day + 4 * MIN), SPY, "acct", "s")
    # since day start: position went 101 -> 98 on 10 shares... 5 sold at 98 (-15), 5 held at 98 (-15), fee 1
    assert p.daily_pnl(day) == D(-31)
    assert p.equity_at(day) == D(10000) + D(10)
    assert p.daily_pnl(day - 10 * MIN) == p.equity - D(10000)
    assert p.daily_pnl(day + 10 * MIN) == 0  # nothing changed since


@pytest.mark.parametrize("bad", [D("NaN"), D("-1"), D(0)])
def test_bad_fill_quantity_refused_and_nothing_booked(bad):
    p = Portfolio(D("1000"))
    f = Fill("x", "c", "SPY.ARCX", Side.BUY, bad, D(100), D(0), "taker", 1, 1)
    with pytest.raises(OrderError, match="quantity"):
        p.apply_fill(f, SPY, "acct", "s")
    assert p.positions() == [] and p.cash == D(1000)


def test_fill_for_another_instrument_refused():
    p = Portfolio(D("1000"))
    with pytest.raises(OrderError, match="booked against"):
        p.apply_fill(fill(1, SPY, "buy", "1", "10"), ES, "acct", "s")
    with pytest.raises(OrderError, match="finite Decimal"):
        p.mark("SPY.ARCX", 100.0, 1)  # type: ignore[arg-type]
    with pytest.raises(OrderError, match="starting_cash"):
        Portfolio(1000)  # type: ignore[arg-type]


def test_equity_and_net_positions_follow_every_fill_and_mark():
    p = Portfolio(D("10000"))
    assert p.equity == D(10000) and p.net_positions() == {}
    p.apply_fill(fill(1, SPY, "buy", "3", "100", "0.10"), SPY, "acct", "s1")
    assert p.equity == D("9999.90") and p.net_positions("acct") == {("acct", "SPY.ARCX"): D(3)}
    p.mark("SPY.ARCX", D("101"), 2_000_000_000)
    assert p.equity == D("10002.90")
    p.apply_fill(fill(3, SPY, "sell", "1", "102"), SPY, "acct", "s2")  # another strategy, newest price
    assert p.net_positions("acct") == {("acct", "SPY.ARCX"): D(2)} == p.net_positions()
    assert p.equity == D("9801.90") + 2 * D(102)
    mine = p.net_positions("acct")
    mine.clear()  # the caller's copy
    assert p.net_positions("acct") == {("acct", "SPY.ARCX"): D(2)}
    assert p.net_positions("other") == {}
